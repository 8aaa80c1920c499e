//! `/invite USER ROOM` (the room's owner, or an admin): lets USER join an invite-only room.

use chatd_proto::frame::ServerFrame;
use chatd_proto::names::validate_username;

use super::{Command, CommandError, CommandFuture, Ctx, Role, room_arg, store_failed};
use crate::store::{rooms, users};

/// Invites a user to a room.
pub struct Invite;

fn split(args: &str) -> Option<(&str, String)> {
    let mut words = args.split_whitespace();
    let (user, room) = (words.next()?, room_arg(words.next()?)?);
    if words.next().is_some() || validate_username(user).is_err() {
        return None;
    }
    Some((user, room))
}

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
        split(args).map(|(_, room)| room)
    }
    fn run<'a>(&'a self, ctx: &'a Ctx<'a>, args: &'a str) -> CommandFuture<'a> {
        Box::pin(async move {
            let (user, room) = split(args).ok_or_else(|| CommandError::usage(self))?;
            let Some(r) = ctx.hub.room(&room) else {
                return Err(CommandError::NotInRoom(format!("there is no room #{room}")));
            };
            if r.members.contains(user) {
                return Err(CommandError::Refused(format!(
                    "{user} is already in #{room}"
                )));
            }
            let (rm, u) = (room.clone(), user.to_string());
            let exists = ctx
                .store
                .run(move |c| {
                    if !users::exists(c, &u)? {
                        return Ok(false);
                    }
                    rooms::invite(c, &rm, &u)?;
                    Ok(true)
                })
                .await
                .map_err(store_failed)?;
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
