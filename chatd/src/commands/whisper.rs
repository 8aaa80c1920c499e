//! `/whisper <user> <message>`: a private message to every session of one user.
//!
//! The sender's own sessions get a copy too: it confirms delivery and keeps a
//! user's other devices in step.

use chatd_proto::frame::ServerFrame;

use super::{Command, CommandError, CommandFuture, Ctx, check_text, now_millis};
use crate::store::users;

/// Sends a private message.
pub struct Whisper;

impl Command for Whisper {
    fn name(&self) -> &'static str {
        "whisper"
    }
    fn usage(&self) -> &'static str {
        "<user> <message>"
    }
    fn help(&self) -> &'static str {
        "send a private message to one user"
    }
    fn run<'a>(&'a self, ctx: &'a Ctx<'a>, args: &'a str) -> CommandFuture<'a> {
        Box::pin(async move {
            let usage = || CommandError::BadArguments {
                name: self.name(),
                usage: self.usage(),
            };
            let (target, text) = args.split_once(char::is_whitespace).ok_or_else(usage)?;
            let text = text.trim_start();
            if text.is_empty() {
                return Err(usage());
            }
            check_text(text, ctx.limits)?;
            if !ctx.hub.is_online(target) {
                let name = target.to_string();
                let exists = chatd_proto::names::validate_username(target).is_ok()
                    && ctx
                        .store
                        .run(move |c| users::exists(c, &name))
                        .await
                        .map_err(|e| {
                            tracing::error!(error = %e, "whisper: user lookup failed");
                            CommandError::Internal
                        })?;
                let shown: String = target.chars().take(64).collect();
                return Err(if exists {
                    CommandError::UserOffline(shown)
                } else {
                    CommandError::NoSuchUser(shown)
                });
            }
            let frame = ServerFrame::Message {
                from: ctx.user.to_string(),
                to: Some(target.to_string()),
                text: text.to_string(),
                ts: now_millis(),
                action: false,
            };
            ctx.hub.send_to_users(&[target, ctx.user], &frame);
            Ok(None)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{Fixture, drain};
    use super::*;
    use chatd_proto::ErrorCode;

    #[tokio::test]
    async fn reaches_target_and_sender_only() {
        let f = Fixture::new();
        let (a, mut ra) = f.login("alice");
        let (_b, mut rb) = f.login("bob");
        let (_c, mut rc) = f.login("carol");
        drain(&mut ra);
        drain(&mut rb);
        let ctx = f.ctx(a, "alice");
        f.registry
            .dispatch(&ctx, "w", "bob  psst hi")
            .await
            .unwrap();
        let got = drain(&mut rb);
        assert!(
            matches!(&got[..], [ServerFrame::Message { from, to: Some(to), text, .. }]
            if from == "alice" && to == "bob" && text == "psst hi")
        );
        assert_eq!(drain(&mut ra).len(), 1, "sender gets a confirmation");
        assert!(drain(&mut rc).is_empty(), "nobody else sees it");
    }

    #[tokio::test]
    async fn offline_unknown_and_usage() {
        let f = Fixture::new();
        let (a, _ra) = f.login("alice");
        let (d, _rd) = f.login("dave");
        f.hub.unregister(d, "quit");
        let ctx = f.ctx(a, "alice");
        let code = |r: Result<_, CommandError>| r.unwrap_err().code();
        assert_eq!(
            code(f.registry.dispatch(&ctx, "whisper", "dave hi").await),
            ErrorCode::UserOffline
        );
        assert_eq!(
            code(f.registry.dispatch(&ctx, "whisper", "zed hi").await),
            ErrorCode::NoSuchUser
        );
        assert_eq!(
            code(f.registry.dispatch(&ctx, "whisper", "NOT/A/NAME hi").await),
            ErrorCode::NoSuchUser
        );
        assert_eq!(
            code(f.registry.dispatch(&ctx, "whisper", "dave").await),
            ErrorCode::BadArguments
        );
        assert_eq!(
            code(f.registry.dispatch(&ctx, "whisper", "").await),
            ErrorCode::BadArguments
        );
    }
}
