//! `/help`: the commands this user may run.

use chatd_proto::frame::ServerFrame;

use super::{Command, CommandFuture, Ctx};

/// Lists commands.
pub struct Help;

impl Command for Help {
    fn name(&self) -> &'static str {
        "help"
    }
    fn usage(&self) -> &'static str {
        ""
    }
    fn help(&self) -> &'static str {
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
        assert_eq!(names, ["help", "list"]);
        assert_eq!(commands[1].aliases, ["who"]);
    }
}
