//! `/kick USER ROOM` (the room's owner, or an admin): removes USER from ROOM.

use super::{Command, CommandError, CommandFuture, Ctx, Role, store_failed, user_and_room};

/// Removes a member from a room.
pub struct Kick;

impl Command for Kick {
    fn name(&self) -> &str {
        "kick"
    }
    fn usage(&self) -> &str {
        "USER ROOM"
    }
    fn help(&self) -> &str {
        "remove USER from ROOM (room owners and administrators; chat: the current room when none is named)"
    }
    fn role(&self) -> Role {
        Role::RoomOwner
    }
    fn room_of(&self, args: &str) -> Option<String> {
        user_and_room(args).map(|(_, room)| room)
    }
    fn run<'a>(&'a self, ctx: &'a Ctx<'a>, args: &'a str) -> CommandFuture<'a> {
        Box::pin(async move {
            let (user, room) = user_and_room(args).ok_or_else(|| CommandError::usage(self))?;
            if room == ctx.rooms.default {
                return Err(CommandError::Refused(format!(
                    "everyone is in #{room}; /disconnect ends a user's sessions instead"
                )));
            }
            if !ctx.hub.is_member(&room, user) {
                return Err(CommandError::NotInRoom(format!("{user} is not in #{room}")));
            }
            ctx.store
                .part_room(&room, user, &ctx.rooms.default)
                .await
                .map_err(store_failed)?;
            tracing::info!(by = ctx.user, user = ?user, room = ?room, "kicked from room");
            ctx.hub.room_parted(&room, user, Some(ctx.user));
            Ok(None)
        })
    }
}
