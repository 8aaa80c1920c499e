//! `/invite USER ROOM` (the room's owner, or an admin): lets USER join an invite-only room.

use chatd_proto::frame::ServerFrame;

use super::{Command, CommandError, CommandFuture, Ctx, Role, store_failed, user_and_room};

/// Invites a user to a room.
pub struct Invite;

impl Command for Invite {
    fn name(&self) -> &str {
        "invite"
    }
    fn usage(&self) -> &str {
        "USER ROOM"
    }
    fn help(&self) -> &str {
        "let USER join ROOM (room owners and administrators)"
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
            let Some(r) = ctx.hub.room(&room) else {
                return Err(CommandError::NotInRoom(format!("there is no room #{room}")));
            };
            if r.members.contains(user) {
                return Err(CommandError::Refused(format!(
                    "{user} is already in #{room}"
                )));
            }
            let exists = ctx.store.invite(&room, user).await.map_err(store_failed)?;
            if !exists {
                return Err(CommandError::NoSuchUser(user.to_string()));
            }
            ctx.hub.send_to_user(
                user,
                &ServerFrame::Notice {
                    text: format!("{} invited you to #{room}: /join {room}", ctx.user),
                },
            );
            Ok(Some(ServerFrame::Notice {
                text: format!("invited {user} to #{room}"),
            }))
        })
    }
}
