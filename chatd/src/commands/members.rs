//! `/members ROOM`: who is in a room (any room that is not invite-only, or one's own).

use chatd_proto::frame::{RoomState, ServerFrame};

use super::{Command, CommandError, CommandFuture, Ctx, Role, room_arg};

/// Shows a room's members and topic.
pub struct Members;

impl Command for Members {
    fn name(&self) -> &str {
        "members"
    }
    fn usage(&self) -> &str {
        "ROOM"
    }
    fn help(&self) -> &str {
        "who is in ROOM (chat: the current room when none is named)"
    }
    fn run<'a>(&'a self, ctx: &'a Ctx<'a>, args: &'a str) -> CommandFuture<'a> {
        Box::pin(async move {
            let room = room_arg(args).ok_or_else(|| CommandError::usage(self))?;
            match ctx.hub.room(&room) {
                // An invite-only room's existence is not told to outsiders.
                Some(r)
                    if !r.invite_only
                        || r.members.contains(ctx.user)
                        || ctx.role == Role::Admin =>
                {
                    Ok(Some(ServerFrame::Members {
                        room: RoomState {
                            name: room,
                            topic: r.topic,
                            members: r.members.into_iter().collect(),
                            invite_only: r.invite_only,
                            owner: r.owner,
                        },
                    }))
                }
                _ => Err(CommandError::NotInRoom(format!("there is no room #{room}"))),
            }
        })
    }
}
