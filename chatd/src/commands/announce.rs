//! `/announce TEXT` (admins): a notice to everyone online. Server-generated and not
//! end-to-end encrypted, like `chatctl say`; the sender is named.

use chatd_proto::frame::ServerFrame;

use super::{Command, CommandError, CommandFuture, Ctx, Role};

/// Broadcasts an announcement.
pub struct Announce;

/// The notice everyone gets; `by` is the announcing admin, or None for `chatctl say`.
pub fn announcement(by: Option<&str>, text: &str) -> ServerFrame {
    let text: String = text.chars().filter(|c| !c.is_control()).collect();
    ServerFrame::Notice {
        text: match by {
            Some(user) => format!("announcement from {user}: {}", text.trim()),
            None => format!("announcement: {}", text.trim()),
        },
    }
}

impl Command for Announce {
    fn name(&self) -> &str {
        "announce"
    }
    fn usage(&self) -> &str {
        "TEXT"
    }
    fn help(&self) -> &str {
        "send a notice to everyone online (not end-to-end encrypted)"
    }
    fn role(&self) -> Role {
        Role::Admin
    }
    fn run<'a>(&'a self, ctx: &'a Ctx<'a>, args: &'a str) -> CommandFuture<'a> {
        Box::pin(async move {
            if args.trim().is_empty() || args.len() > ctx.limits.max_text_bytes.get() {
                return Err(CommandError::usage(self));
            }
            let n = ctx.hub.broadcast(&announcement(Some(ctx.user), args), None);
            tracing::info!(user = ctx.user, sessions = n, "announcement sent");
            Ok(None)
        })
    }
}
