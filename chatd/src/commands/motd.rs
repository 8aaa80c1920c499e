//! `/motd`: the message of the day from the config (`[server] motd`).

use chatd_proto::frame::ServerFrame;

use super::{Command, CommandFuture, Ctx};

/// Shows the message of the day.
pub struct Motd;

impl Command for Motd {
    fn name(&self) -> &str {
        "motd"
    }
    fn usage(&self) -> &str {
        ""
    }
    fn help(&self) -> &str {
        "show the message of the day"
    }
    fn run<'a>(&'a self, ctx: &'a Ctx<'a>, _args: &'a str) -> CommandFuture<'a> {
        Box::pin(async move {
            let text = if ctx.motd.trim().is_empty() {
                "there is no message of the day".to_string()
            } else {
                format!("message of the day: {}", ctx.motd.trim())
            };
            Ok(Some(ServerFrame::Notice { text }))
        })
    }
}
