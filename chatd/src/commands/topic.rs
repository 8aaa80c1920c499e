//! `/topic ROOM [TEXT]`: show a room's topic, or (members) set it; `-` clears it.

use chatd_proto::frame::ServerFrame;

use super::{Command, CommandError, CommandFuture, Ctx, room_arg, store_failed};

/// Shows or sets a topic.
pub struct Topic;

impl Command for Topic {
    fn name(&self) -> &str {
        "topic"
    }
    fn usage(&self) -> &str {
        "ROOM [TEXT|-]"
    }
    fn help(&self) -> &str {
        "show ROOM's topic, or set it (members; - clears it)"
    }
    fn run<'a>(&'a self, ctx: &'a Ctx<'a>, args: &'a str) -> CommandFuture<'a> {
        Box::pin(async move {
            let (room, text) = args.split_once(' ').unwrap_or((args, ""));
            let room = room_arg(room).ok_or_else(|| CommandError::usage(self))?;
            if !ctx.hub.is_member(&room, ctx.user) {
                return Err(CommandError::NotInRoom(format!("you are not in #{room}")));
            }
            // Control characters never reach other users' terminals.
            let text: String = text.chars().filter(|c| !c.is_control()).collect();
            let text = text.trim();
            if text.is_empty() {
                let topic = ctx.hub.room(&room).map(|r| r.topic).unwrap_or_default();
                let text = if topic.is_empty() {
                    format!("#{room} has no topic")
                } else {
                    format!("#{room} topic: {topic}")
                };
                return Ok(Some(ServerFrame::Notice { text }));
            }
            let topic = if text == "-" { "" } else { text };
            let max = ctx.rooms.max_topic_chars.get();
            if topic.chars().count() > max {
                return Err(CommandError::Refused(format!(
                    "a topic is at most {max} characters"
                )));
            }
            ctx.store
                .set_topic(&room, topic)
                .await
                .map_err(store_failed)?;
            ctx.hub.topic_set(&room, topic, ctx.user);
            Ok(None)
        })
    }
}
