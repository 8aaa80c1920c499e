//! `/part ROOM`: leave a room (not the default one, which everyone is in).

use super::{Command, CommandError, CommandFuture, Ctx, room_arg, store_failed};

/// Leaves a room.
pub struct Part;

impl Command for Part {
    fn name(&self) -> &str {
        "part"
    }
    fn usage(&self) -> &str {
        "ROOM"
    }
    fn help(&self) -> &str {
        "leave ROOM (chat: the current room when none is named)"
    }
    fn run<'a>(&'a self, ctx: &'a Ctx<'a>, args: &'a str) -> CommandFuture<'a> {
        Box::pin(async move {
            let room = room_arg(args).ok_or_else(|| CommandError::usage(self))?;
            if room == ctx.rooms.default {
                return Err(CommandError::Refused(format!(
                    "everyone is in #{room}; it cannot be left"
                )));
            }
            if !ctx.hub.is_member(&room, ctx.user) {
                return Err(CommandError::NotInRoom(format!("you are not in #{room}")));
            }
            ctx.store
                .part_room(&room, ctx.user, &ctx.rooms.default)
                .await
                .map_err(store_failed)?;
            ctx.hub.room_parted(&room, ctx.user, None);
            Ok(None)
        })
    }
}
