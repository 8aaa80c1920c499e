//! `/ping`: the server answers, so the user sees the round trip works.

use chatd_proto::frame::ServerFrame;

use super::{Command, CommandFuture, Ctx};

/// Answers `pong`.
pub struct Ping;

impl Command for Ping {
    fn name(&self) -> &str {
        "ping"
    }
    fn usage(&self) -> &str {
        ""
    }
    fn help(&self) -> &str {
        "check that the server answers"
    }
    fn run<'a>(&'a self, _ctx: &'a Ctx<'a>, _args: &'a str) -> CommandFuture<'a> {
        Box::pin(async move {
            Ok(Some(ServerFrame::Notice {
                text: "pong".into(),
            }))
        })
    }
}
