//! `/revoke FINGERPRINT`: a user revokes one of their own device keys (a lost laptop) from
//! another device, with the same effect as `chatctl key revoke`.

use chatd_proto::Fingerprint;
use chatd_proto::frame::ServerFrame;

use super::{Command, CommandError, CommandFuture, Ctx};

/// Revokes one of the caller's own device keys, not the one of the session asking.
pub struct Revoke;

impl Command for Revoke {
    fn name(&self) -> &str {
        "revoke"
    }
    fn usage(&self) -> &str {
        "FINGERPRINT"
    }
    fn help(&self) -> &str {
        "revoke one of your own device keys (not this session's): its sessions end and it can no longer log in"
    }
    fn run<'a>(&'a self, ctx: &'a Ctx<'a>, args: &'a str) -> CommandFuture<'a> {
        Box::pin(async move {
            let Ok(fingerprint) = args.trim().parse::<Fingerprint>() else {
                return Err(CommandError::usage(self));
            };
            if ctx.hub.session_device(ctx.session) == Some(fingerprint) {
                return Err(CommandError::Refused(
                    "this session's own device key cannot be revoked from itself; do it from another device"
                        .into(),
                ));
            }
            if !ctx.hub.has_device(ctx.user, &fingerprint) {
                return Err(CommandError::Refused(format!(
                    "you have no device key {fingerprint}"
                )));
            }
            let revoked = ctx
                .store
                .revoke_key(ctx.user, fingerprint.as_bytes())
                .await
                .map_err(|e| {
                    tracing::error!(error = %e, "revoke: database error");
                    CommandError::Internal
                })?;
            if !revoked {
                return Err(CommandError::Refused(format!(
                    "you have no device key {fingerprint}"
                )));
            }
            let n = ctx
                .hub
                .close_device(ctx.user, &fingerprint, "device key revoked");
            ctx.hub.forget_device(ctx.user, &fingerprint);
            tracing::info!(user = %ctx.user, device = %fingerprint, sessions = n, "device key revoked by its owner");
            Ok(Some(ServerFrame::Notice {
                text: format!("device key {fingerprint} revoked ({n} session(s) ended)"),
            }))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::Fixture;
    use super::*;
    use crate::store::KeyCheck;

    fn register(f: &Fixture, user: &str, fp: &Fingerprint) {
        let check = f
            .sqlite
            .run_sync(|c| {
                crate::store::sqlite::keys::check_and_register(
                    c,
                    user,
                    fp.as_bytes(),
                    b"spki",
                    2048,
                    8,
                )
            })
            .unwrap();
        assert_eq!(check, KeyCheck::Registered);
    }

    #[tokio::test]
    async fn revokes_own_other_keys_only() {
        let f = Fixture::new();
        let (alice, _) = f.login("alice");
        let (_bob, _) = f.login("bob");
        let own = Fingerprint::of(b"alice");
        register(&f, "alice", &own);
        register(&f, "bob", &Fingerprint::of(b"bob"));
        // A second device of alice's, online in its own session.
        let laptop = Fingerprint::of(b"laptop");
        register(&f, "alice", &laptop);
        let (_, laptop_closer) = f.login_device("alice", laptop);
        let ctx = f.ctx(alice, "alice");
        let run = |args: &'static str| Revoke.run(&ctx, args);

        assert_eq!(run("nonsense").await, Err(CommandError::usage(&Revoke)));
        let err = Revoke.run(&ctx, &own.to_string()).await.unwrap_err();
        assert!(matches!(err, CommandError::Refused(ref m) if m.contains("own device key")));
        // Bob's key is not alice's to revoke.
        let bobs = Fingerprint::of(b"bob").to_string();
        let err = Revoke.run(&ctx, &bobs).await.unwrap_err();
        assert!(matches!(err, CommandError::Refused(ref m) if m.contains("no device key")));
        assert!(f.hub.has_device("bob", &Fingerprint::of(b"bob")));

        let reply = Revoke.run(&ctx, &laptop.to_string()).await.unwrap();
        assert!(
            matches!(reply, Some(ServerFrame::Notice { ref text }) if text.contains("revoked (1 session(s) ended)"))
        );
        assert!(!f.hub.has_device("alice", &laptop));
        assert_eq!(
            laptop_closer.reason().as_deref(),
            Some("device key revoked")
        );
        let rows = f.store.list_keys(Some("alice")).await.unwrap().unwrap();
        assert!(
            rows.iter()
                .any(|r| r.fingerprint == *laptop.as_bytes() && r.revoked_at.is_some())
        );
        // Twice: it is gone.
        let err = Revoke.run(&ctx, &laptop.to_string()).await.unwrap_err();
        assert!(matches!(err, CommandError::Refused(_)));
    }
}
