//! `/help [COMMAND]`: the commands this user may run, or just the one named.

use chatd_proto::frame::ServerFrame;

use super::{Command, CommandError, CommandFuture, Ctx};

/// Lists commands.
pub struct Help;

impl Command for Help {
    fn name(&self) -> &str {
        "help"
    }
    fn usage(&self) -> &str {
        "[COMMAND]"
    }
    fn help(&self) -> &str {
        "list the server's commands, or show how to use one"
    }
    fn run<'a>(&'a self, ctx: &'a Ctx<'a>, args: &'a str) -> CommandFuture<'a> {
        Box::pin(async move {
            let mut commands = ctx.registry.list_for(ctx.role);
            let words: Vec<&str> = args.split_whitespace().collect();
            match words.as_slice() {
                [] => {}
                [name] => {
                    // By name or alias; one this role may not run is as unknown as a missing one.
                    let name = name.strip_prefix('/').unwrap_or(name);
                    commands.retain(|c| c.name == name || c.aliases.iter().any(|a| a == name));
                    if commands.is_empty() {
                        return Err(CommandError::Unknown(name.to_string()));
                    }
                }
                _ => return Err(CommandError::usage(self)),
            }
            Ok(Some(ServerFrame::Help { commands }))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::Fixture;
    use super::*;

    #[tokio::test]
    async fn lists_builtins_with_aliases() {
        let f = Fixture::new();
        let (id, _rx) = f.login("alice");
        let reply = f
            .registry
            .dispatch(&f.ctx(id, "alice"), "help", "")
            .await
            .unwrap();
        let Some(ServerFrame::Help { commands }) = reply else {
            panic!("{reply:?}")
        };
        let names: Vec<_> = commands.iter().map(|c| c.name.as_str()).collect();
        // Admin-only commands (announce, disconnect) are not listed for a user.
        assert_eq!(
            names,
            [
                "away", "help", "invite", "join", "kick", "list", "members", "motd", "part",
                "ping", "revoke", "rooms", "topic", "whois"
            ]
        );
        assert_eq!(commands[5].aliases, ["who"]);
        let mut ctx = f.ctx(id, "alice");
        ctx.role = crate::commands::Role::Admin;
        let reply = f.registry.dispatch(&ctx, "help", "").await.unwrap();
        let Some(ServerFrame::Help { commands }) = reply else {
            panic!("{reply:?}")
        };
        assert!(commands.iter().any(|c| c.name == "disconnect"));
    }

    #[tokio::test]
    async fn one_command_by_name_or_alias() {
        let f = Fixture::new();
        let (id, _rx) = f.login("alice");
        let ctx = f.ctx(id, "alice");
        for asked in ["join", "/join"] {
            let reply = f.registry.dispatch(&ctx, "help", asked).await.unwrap();
            let Some(ServerFrame::Help { commands }) = reply else {
                panic!("{reply:?}")
            };
            assert_eq!(commands.len(), 1);
            assert_eq!(commands[0].name, "join");
            assert_eq!(commands[0].usage, "ROOM [private]");
        }
        let reply = f.registry.dispatch(&ctx, "help", "who").await.unwrap();
        let Some(ServerFrame::Help { commands }) = reply else {
            panic!("{reply:?}")
        };
        assert_eq!(commands[0].name, "list");
        // Unknown, and admin-only for a user: the same answer.
        for asked in ["nope", "disconnect"] {
            let err = f.registry.dispatch(&ctx, "help", asked).await.unwrap_err();
            assert_eq!(err, CommandError::Unknown(asked.to_string()));
        }
        let err = f
            .registry
            .dispatch(&ctx, "help", "join part")
            .await
            .unwrap_err();
        assert!(matches!(err, CommandError::BadArguments { .. }), "{err:?}");
    }
}
