//! `/whois USER`: online state, away message, role and device key fingerprints.

use chatd_proto::frame::ServerFrame;
use chatd_proto::names::validate_username;

use super::{Command, CommandError, CommandFuture, Ctx};

/// Describes a user.
pub struct Whois;

impl Command for Whois {
    fn name(&self) -> &str {
        "whois"
    }
    fn usage(&self) -> &str {
        "USER"
    }
    fn help(&self) -> &str {
        "show whether USER is online, their away message, rooms and device key fingerprints"
    }
    fn run<'a>(&'a self, ctx: &'a Ctx<'a>, args: &'a str) -> CommandFuture<'a> {
        Box::pin(async move {
            let user = args.trim();
            if user.contains(char::is_whitespace) || validate_username(user).is_err() {
                return Err(CommandError::usage(self));
            }
            let creds = ctx.store.credentials(user).await.map_err(|e| {
                tracing::error!(error = %e, "whois: database error");
                CommandError::Internal
            })?;
            let Some(creds) = creds else {
                return Err(CommandError::NoSuchUser(user.to_string()));
            };
            let w = ctx.hub.whois(user, ctx.user);
            Ok(Some(ServerFrame::Whois {
                user: user.to_string(),
                sessions: w.sessions,
                away: w.away,
                admin: creds.admin,
                devices: w.devices,
                rooms: w.rooms,
            }))
        })
    }
}
