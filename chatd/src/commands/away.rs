//! `/away [TEXT]`: set an away message (shown in `/list`, `/whois` and to whisperers), or
//! clear it with no text.

use chatd_proto::frame::ServerFrame;

use super::{Command, CommandError, CommandFuture, Ctx};

/// Longest away message, in characters.
pub const MAX_AWAY_CHARS: usize = 200;

/// Sets or clears the caller's away message.
pub struct Away;

impl Command for Away {
    fn name(&self) -> &str {
        "away"
    }
    fn usage(&self) -> &str {
        "[TEXT]"
    }
    fn help(&self) -> &str {
        "mark yourself away with a message; /away alone marks you back"
    }
    fn run<'a>(&'a self, ctx: &'a Ctx<'a>, args: &'a str) -> CommandFuture<'a> {
        Box::pin(async move {
            // Control characters never reach other users' terminals.
            let text: String = args.chars().filter(|c| !c.is_control()).collect();
            let text = text.trim();
            if text.chars().count() > MAX_AWAY_CHARS {
                return Err(CommandError::usage(self));
            }
            let (away, reply) = if text.is_empty() {
                (None, "you are back".to_string())
            } else {
                (Some(text.to_string()), format!("you are away: {text}"))
            };
            if !ctx.hub.set_away(ctx.user, away) {
                return Err(CommandError::Internal);
            }
            Ok(Some(ServerFrame::Notice { text: reply }))
        })
    }
}
