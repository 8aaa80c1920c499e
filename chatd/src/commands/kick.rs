//! `/kick USER [REASON]`: ends every session of a user (admins only; like `chatctl kick`).

use chatd_proto::frame::ServerFrame;

use super::{Command, CommandError, CommandFuture, Ctx, Role};

/// Ends a user's sessions.
pub struct Kick;

/// The `bye` reason of a kick, the same from chat and from chatctl: "kicked by
/// administrator", with the admin's reason (control characters removed, at most 200
/// characters) when there is one, since it is shown on users' terminals.
pub fn kick_reason(reason: Option<&str>) -> String {
    match reason.map(str::trim).filter(|r| !r.is_empty()) {
        Some(r) => format!(
            "kicked by administrator: {}",
            r.chars()
                .filter(|c| !c.is_control())
                .take(200)
                .collect::<String>()
        ),
        None => "kicked by administrator".to_string(),
    }
}

impl Command for Kick {
    fn name(&self) -> &'static str {
        "kick"
    }
    fn usage(&self) -> &'static str {
        "USER [REASON]"
    }
    fn help(&self) -> &'static str {
        "end every session of a user (admins only)"
    }
    fn role(&self) -> Role {
        Role::Admin
    }
    fn run<'a>(&'a self, ctx: &'a Ctx<'a>, args: &'a str) -> CommandFuture<'a> {
        Box::pin(async move {
            let (user, reason) = match args.split_once(char::is_whitespace) {
                Some((user, reason)) => (user, Some(reason)),
                None => (args, None),
            };
            if user.is_empty() || chatd_proto::names::validate_username(user).is_err() {
                return Err(CommandError::BadArguments {
                    name: "kick",
                    usage: self.usage(),
                });
            }
            match ctx.hub.close_user(user, &kick_reason(reason)) {
                0 => Err(CommandError::NotOnline(user.to_string())),
                n => {
                    tracing::info!(admin = %ctx.user, %user, sessions = n, "kicked from chat");
                    Ok(Some(ServerFrame::Notice {
                        text: format!("kicked {user} ({n} session(s))"),
                    }))
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::Fixture;
    use super::*;
    use chatd_proto::ErrorCode;

    #[tokio::test]
    async fn only_admins_kick_and_only_who_is_online() {
        let f = Fixture::new();
        let (a, _ra) = f.login("alice");
        let (_b, _rb) = f.login("bob");
        let err = f
            .registry
            .dispatch(&f.ctx(a, "alice"), "kick", "bob")
            .await
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::Forbidden);
        assert_eq!(err.to_string(), "/kick is for administrators");
        assert_eq!(f.hub.session_count("bob"), 1);
        let mut admin = f.ctx(a, "alice");
        admin.role = Role::Admin;
        let reply = f.registry.dispatch(&admin, "kick", "bob spam").await;
        assert_eq!(
            reply,
            Ok(Some(ServerFrame::Notice {
                text: "kicked bob (1 session(s))".into()
            }))
        );
        let err = f.registry.dispatch(&admin, "kick", "carol").await;
        assert_eq!(err.unwrap_err().code(), ErrorCode::UserOffline);
        let err = f.registry.dispatch(&admin, "kick", "").await;
        assert_eq!(err.unwrap_err().code(), ErrorCode::BadArguments);
    }

    #[test]
    fn reasons_are_cleaned() {
        assert_eq!(kick_reason(None), "kicked by administrator");
        assert_eq!(kick_reason(Some("  ")), "kicked by administrator");
        assert_eq!(
            kick_reason(Some("spam\u{1b}[2J")),
            "kicked by administrator: spam[2J"
        );
        assert_eq!(kick_reason(Some(&"x".repeat(300))).len(), 25 + 200);
    }
}
