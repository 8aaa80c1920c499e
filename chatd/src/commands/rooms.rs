//! `/rooms`: every room that is not invite-only, and the caller's own, with member counts
//! and topics.

use chatd_proto::frame::ServerFrame;

use super::{Command, CommandFuture, Ctx};

/// Lists rooms.
pub struct Rooms;

impl Command for Rooms {
    fn name(&self) -> &str {
        "rooms"
    }
    fn usage(&self) -> &str {
        ""
    }
    fn help(&self) -> &str {
        "list the rooms (name, members, topic)"
    }
    fn run<'a>(&'a self, ctx: &'a Ctx<'a>, _args: &'a str) -> CommandFuture<'a> {
        Box::pin(async move {
            Ok(Some(ServerFrame::Rooms {
                rooms: ctx.hub.room_list(ctx.user),
            }))
        })
    }
}
