//! `/join ROOM [private]`: enter a room, creating it (owned by the caller; `private` makes it
//! invite-only) when it does not exist and the config allows.

use chatd_proto::frame::ServerFrame;

use super::{Command, CommandError, CommandFuture, Ctx, Role, room_arg, store_failed};

/// Joins (or creates) a room.
pub struct Join;

impl Command for Join {
    fn name(&self) -> &str {
        "join"
    }
    fn usage(&self) -> &str {
        "ROOM [private]"
    }
    fn help(&self) -> &str {
        "enter ROOM; a new room is created, owned by you (private: by invitation only)"
    }
    fn run<'a>(&'a self, ctx: &'a Ctx<'a>, args: &'a str) -> CommandFuture<'a> {
        Box::pin(async move {
            let mut words = args.split_whitespace();
            let room = words
                .next()
                .and_then(room_arg)
                .ok_or_else(|| CommandError::usage(self))?;
            let private = match words.next() {
                None => false,
                Some("private") => true,
                Some(_) => return Err(CommandError::usage(self)),
            };
            if words.next().is_some() {
                return Err(CommandError::usage(self));
            }
            let admin = ctx.role == Role::Admin;
            let limit = |ctx: &Ctx<'_>| {
                let (_, mine) = ctx.hub.room_counts(ctx.user);
                let max = ctx.rooms.max_rooms_per_user.get();
                if mine >= max {
                    return Err(CommandError::Refused(format!(
                        "you are in {mine} rooms, the most allowed ({max}); /part one first"
                    )));
                }
                Ok(())
            };
            match ctx.hub.room(&room) {
                Some(r) if r.members.contains(ctx.user) => {
                    // Already in: the state again (the client switches to it).
                    return Ok(Some(ServerFrame::Members {
                        room: chatd_proto::frame::RoomState {
                            name: room.clone(),
                            topic: r.topic,
                            members: r.members.into_iter().collect(),
                            invite_only: r.invite_only,
                            owner: r.owner,
                        },
                    }));
                }
                Some(r) if r.invite_only && !admin => {
                    let invited = ctx
                        .store
                        .invited(&room, ctx.user)
                        .await
                        .map_err(store_failed)?;
                    if !invited {
                        return Err(CommandError::Refused(format!(
                            "#{room} is invite-only; ask its owner to /invite you"
                        )));
                    }
                }
                Some(_) => {}
                None => {
                    // Checked before creating, so a refused join leaves no empty room.
                    limit(ctx)?;
                    if !ctx.rooms.users_can_create && !admin {
                        return Err(CommandError::Refused(format!(
                            "there is no room #{room}, and only administrators can create rooms here"
                        )));
                    }
                    let (total, _) = ctx.hub.room_counts(ctx.user);
                    let max = ctx.rooms.max_rooms.get();
                    if total >= max {
                        return Err(CommandError::Refused(format!(
                            "the server has its maximum of {max} rooms"
                        )));
                    }
                    ctx.store
                        .create_room(&room, Some(ctx.user), private)
                        .await
                        .map_err(store_failed)?;
                    ctx.hub.room_created(&room, Some(ctx.user), private);
                    tracing::info!(user = ctx.user, room = ?room, private, "room created");
                }
            }
            limit(ctx)?;
            ctx.store
                .join_room(&room, ctx.user)
                .await
                .map_err(store_failed)?;
            // Members hear of it, and the caller gets the room's state, through the hub.
            ctx.hub.room_joined(&room, ctx.user);
            Ok(None)
        })
    }
}
