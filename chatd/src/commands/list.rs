//! `/list`: who is online now (not who has an account).

use chatd_proto::frame::ServerFrame;

use super::{Command, CommandFuture, Ctx};

/// Lists online users.
pub struct List;

impl Command for List {
    fn name(&self) -> &str {
        "list"
    }
    fn usage(&self) -> &str {
        ""
    }
    fn help(&self) -> &str {
        "show who is online"
    }
    fn run<'a>(&'a self, ctx: &'a Ctx<'a>, _args: &'a str) -> CommandFuture<'a> {
        Box::pin(async move {
            Ok(Some(ServerFrame::Users {
                users: ctx.hub.online(),
            }))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::Fixture;
    use super::*;

    #[tokio::test]
    async fn lists_online_sessions_per_user() {
        let f = Fixture::new();
        let (a, _ra) = f.login("alice");
        let (_b1, _rb1) = f.login("bob");
        let (_b2, _rb2) = f.login("bob");
        let reply = f
            .registry
            .dispatch(&f.ctx(a, "alice"), "list", "")
            .await
            .unwrap();
        let Some(ServerFrame::Users { users }) = reply else {
            panic!("{reply:?}")
        };
        let got: Vec<_> = users
            .iter()
            .map(|u| (u.user.as_str(), u.sessions))
            .collect();
        assert_eq!(got, [("alice", 1), ("bob", 2)]);
    }
}
