//! `/help`: the commands this user may run.

use chatd_proto::frame::ServerFrame;

use super::{Command, CommandFuture, Ctx};

/// Lists commands.
pub struct Help;

impl Command for Help {
    fn name(&self) -> &str {
        "help"
    }
    fn usage(&self) -> &str {
        ""
    }
    fn help(&self) -> &str {
        "list the server's commands"
    }
    fn run<'a>(&'a self, ctx: &'a Ctx<'a>, _args: &'a str) -> CommandFuture<'a> {
        Box::pin(async move {
            Ok(Some(ServerFrame::Help {
                commands: ctx.registry.list_for(ctx.role),
            }))
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
}
