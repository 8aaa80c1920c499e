//! `/me <action>`: an action line shown to everyone, the sender included.

use chatd_proto::frame::ServerFrame;

use super::{Command, CommandError, CommandFuture, Ctx, check_text, now_millis};

/// Sends an action.
pub struct Me;

impl Command for Me {
    fn name(&self) -> &'static str {
        "me"
    }
    fn usage(&self) -> &'static str {
        "<action>"
    }
    fn help(&self) -> &'static str {
        "describe what you are doing (\"* alice waves\")"
    }
    fn run<'a>(&'a self, ctx: &'a Ctx<'a>, args: &'a str) -> CommandFuture<'a> {
        Box::pin(async move {
            if args.is_empty() {
                return Err(CommandError::BadArguments {
                    name: self.name(),
                    usage: self.usage(),
                });
            }
            check_text(args, ctx.limits)?;
            let frame = ServerFrame::Message {
                from: ctx.user.to_string(),
                to: None,
                text: args.to_string(),
                ts: now_millis(),
                action: true,
            };
            ctx.hub.broadcast(&frame, None);
            Ok(None)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{Fixture, drain};
    use super::*;

    #[tokio::test]
    async fn everyone_sees_the_action() {
        let f = Fixture::new();
        let (a, mut ra) = f.login("alice");
        let (_b, mut rb) = f.login("bob");
        drain(&mut ra);
        let ctx = f.ctx(a, "alice");
        assert!(
            f.registry
                .dispatch(&ctx, "me", "waves")
                .await
                .unwrap()
                .is_none()
        );
        for rx in [&mut ra, &mut rb] {
            let frames = drain(rx);
            assert!(
                matches!(&frames[..], [ServerFrame::Message { action: true, text, .. }] if text == "waves")
            );
        }
        let err = f.registry.dispatch(&ctx, "me", "").await.unwrap_err();
        assert_eq!(err.to_string(), "usage: /me <action>");
    }
}
