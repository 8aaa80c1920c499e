//! `/disconnect USER [REASON]` (admins): ends every session of USER, like `chatctl kick`.

use chatd_proto::frame::ServerFrame;
use chatd_proto::names::validate_username;

use super::{Command, CommandError, CommandFuture, Ctx, Role};

/// Longest kick reason, in characters.
const MAX_REASON_CHARS: usize = 200;

/// Disconnects a user.
pub struct Disconnect;

/// The `bye` reason a kicked session gets (shared with `chatctl kick`).
pub fn kick_reason(reason: &str) -> String {
    let reason: String = reason
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_REASON_CHARS)
        .collect();
    let reason = reason.trim();
    if reason.is_empty() {
        "kicked by administrator".to_string()
    } else {
        format!("kicked by administrator: {reason}")
    }
}

/// The `bye` reason of a ban (`chatctl kick --ban`) lasting until `until` (seconds since the
/// epoch): "kicked by administrator" first, so clients know not to reconnect (PROTOCOL.md),
/// then the reason if any, then the ban's end.
pub fn ban_reason(reason: &str, until: i64) -> String {
    let ends = format!(
        "banned until {} UTC",
        chatd_proto::time::format_utc(until.max(0) as u64)
    );
    let kicked = kick_reason(reason);
    if kicked == kick_reason("") {
        format!("{kicked}: {ends}")
    } else {
        format!("{kicked} ({ends})")
    }
}

impl Command for Disconnect {
    fn name(&self) -> &str {
        "disconnect"
    }
    fn usage(&self) -> &str {
        "USER [REASON]"
    }
    fn help(&self) -> &str {
        "disconnect every session of USER"
    }
    fn role(&self) -> Role {
        Role::Admin
    }
    fn run<'a>(&'a self, ctx: &'a Ctx<'a>, args: &'a str) -> CommandFuture<'a> {
        Box::pin(async move {
            let (user, reason) = args.split_once(' ').unwrap_or((args, ""));
            if validate_username(user).is_err() {
                return Err(CommandError::usage(self));
            }
            let n = ctx.hub.close_user(user, &kick_reason(reason));
            tracing::info!(by = ctx.user, user = ?user, sessions = n, "kicked");
            let text = if n == 0 {
                format!("{user} is not online")
            } else {
                format!("{user} disconnected ({n} session(s) ended)")
            };
            Ok(Some(ServerFrame::Notice { text }))
        })
    }
}
