//! The slash-command registry: one file per built-in, one list of them in [`builtin`].
//!
//! Which commands are enabled and their aliases come from the config. Role checks live in
//! [`Registry::dispatch`], never in handlers; handler errors map to stable error codes.

mod help;
mod list;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use chatd_proto::ErrorCode;
use chatd_proto::frame::{CommandInfo, ServerFrame};

use crate::config::{CommandsConfig, Limits};
use crate::hub::{Hub, SessionId};
use crate::store::Store;

/// Names of every built-in, for config validation.
///
/// Whispers and `/me` are not here: their text is end-to-end encrypted, so the client seals
/// them and the server only routes the envelopes (see `crate::session`).
pub const BUILTIN_NAMES: &[&str] = &["help", "list"];

/// Every built-in command, in one place.
pub fn builtin() -> Vec<Arc<dyn Command>> {
    vec![Arc::new(help::Help), Arc::new(list::List)]
}

/// Who may run a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Any logged-in user.
    User,
    /// Accounts with the admin flag.
    Admin,
}

/// The future a handler returns.
pub type CommandFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Option<ServerFrame>, CommandError>> + Send + 'a>>;

/// A slash command.
pub trait Command: Send + Sync {
    /// Canonical name, without the slash.
    fn name(&self) -> &'static str;
    /// Argument synopsis.
    fn usage(&self) -> &'static str;
    /// One line of help.
    fn help(&self) -> &'static str;
    /// Least role allowed to run it.
    fn role(&self) -> Role {
        Role::User
    }
    /// Runs the command; the returned frame (if any) goes back to the caller.
    fn run<'a>(&'a self, ctx: &'a Ctx<'a>, args: &'a str) -> CommandFuture<'a>;
}

/// What a handler may use.
pub struct Ctx<'a> {
    /// Routing.
    pub hub: &'a Hub,
    /// Persistent state.
    pub store: &'a Store,
    /// The registry itself (for help).
    pub registry: &'a Registry,
    /// Limits in force.
    pub limits: &'a Limits,
    /// The calling session.
    pub session: SessionId,
    /// The calling user.
    pub user: &'a str,
    /// The calling user's role.
    pub role: Role,
}

/// A command failed; becomes an error frame.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CommandError {
    /// No such command, or disabled.
    #[error("unknown command /{0}; try /help")]
    Unknown(String),
    /// The caller's role is too low.
    #[error("/{0} is for administrators")]
    Forbidden(String),
    /// Wrong arguments; carries the usage line.
    #[error("usage: /{name} {usage}")]
    BadArguments {
        /// Command name.
        name: &'static str,
        /// Its usage.
        usage: &'static str,
    },
    /// Something failed inside the server (logged there, not sent).
    #[error("internal error")]
    Internal,
}

impl CommandError {
    /// The wire code for this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            CommandError::Unknown(_) => ErrorCode::UnknownCommand,
            CommandError::Forbidden(_) => ErrorCode::Forbidden,
            CommandError::BadArguments { .. } => ErrorCode::BadArguments,
            CommandError::Internal => ErrorCode::Internal,
        }
    }

    /// The error frame sent to the caller.
    pub fn to_frame(&self) -> ServerFrame {
        ServerFrame::error(self.code(), self.to_string())
    }
}

/// A configuration error in `[commands]`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RegistryError {
    /// Two commands or aliases claim one name.
    #[error("command name {0:?} is used twice")]
    Duplicate(String),
    /// An alias points at a command that is not enabled.
    #[error("alias {alias:?} points at {target:?}, which is not an enabled command")]
    DanglingAlias {
        /// The alias.
        alias: String,
        /// Its target.
        target: String,
    },
}

/// Enabled commands by name and alias.
pub struct Registry {
    by_name: BTreeMap<String, Arc<dyn Command>>,
    aliases: BTreeMap<String, String>,
}

impl Registry {
    /// Builds the registry from the built-ins and the `[commands]` config.
    pub fn new(config: &CommandsConfig) -> Result<Registry, RegistryError> {
        let mut by_name = BTreeMap::new();
        for cmd in builtin() {
            if config.disabled.iter().any(|d| d == cmd.name()) {
                continue;
            }
            if by_name.insert(cmd.name().to_string(), cmd).is_some() {
                // Only reachable if builtin() lists a name twice.
                return Err(RegistryError::Duplicate("builtin".into()));
            }
        }
        let mut aliases = BTreeMap::new();
        for (alias, target) in &config.aliases {
            if by_name.contains_key(alias) || aliases.contains_key(alias) {
                return Err(RegistryError::Duplicate(alias.clone()));
            }
            if !by_name.contains_key(target) {
                // An alias for a disabled command simply goes away with it.
                if config.disabled.iter().any(|d| d == target) {
                    continue;
                }
                return Err(RegistryError::DanglingAlias {
                    alias: alias.clone(),
                    target: target.clone(),
                });
            }
            aliases.insert(alias.clone(), target.clone());
        }
        Ok(Registry { by_name, aliases })
    }

    /// Finds a command by name or alias.
    pub fn lookup(&self, name: &str) -> Option<&Arc<dyn Command>> {
        let name = self.aliases.get(name).map_or(name, String::as_str);
        self.by_name.get(name)
    }

    /// Commands a caller with `role` may run, sorted by name.
    pub fn list_for(&self, role: Role) -> Vec<CommandInfo> {
        self.by_name
            .values()
            .filter(|c| c.role() <= role)
            .map(|c| CommandInfo {
                name: c.name().to_string(),
                aliases: self
                    .aliases
                    .iter()
                    .filter(|(_, t)| t.as_str() == c.name())
                    .map(|(a, _)| a.clone())
                    .collect(),
                usage: c.usage().to_string(),
                help: c.help().to_string(),
            })
            .collect()
    }

    /// Looks up, checks the role, and runs a command.
    pub async fn dispatch(
        &self,
        ctx: &Ctx<'_>,
        name: &str,
        args: &str,
    ) -> Result<Option<ServerFrame>, CommandError> {
        let cmd = self
            .lookup(name)
            .ok_or_else(|| CommandError::Unknown(name.chars().take(64).collect()))?;
        if ctx.role < cmd.role() {
            return Err(CommandError::Forbidden(cmd.name().to_string()));
        }
        cmd.run(ctx, args.trim()).await
    }
}

/// Milliseconds since the Unix epoch, for message timestamps.
pub fn now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
pub(crate) mod testing {
    //! A fake context for handler tests: a real hub and in-memory store, no sockets.
    use super::*;
    use crate::hub::Closer;
    use bytes::Bytes;
    use tokio::sync::mpsc;

    pub struct Fixture {
        pub hub: Hub,
        pub store: Store,
        pub registry: Registry,
        pub limits: Limits,
    }

    impl Fixture {
        pub fn new() -> Self {
            let store = Store::open_in_memory().unwrap();
            Fixture {
                hub: Hub::new(4),
                store,
                registry: Registry::new(&CommandsConfig::default()).unwrap(),
                limits: Limits::default(),
            }
        }

        /// Logs `user` in; returns its session id and queue.
        pub fn login(&self, user: &str) -> (SessionId, mpsc::Receiver<Bytes>) {
            self.store
                .run_sync(|c| match crate::store::users::add(c, user, "x", false) {
                    Ok(()) | Err(crate::store::StoreError::UserExists(_)) => Ok(()),
                    Err(e) => Err(e),
                })
                .unwrap();
            let (tx, rx) = mpsc::channel(64);
            let id = self
                .hub
                .register(crate::hub::NewSession {
                    user: user.to_string(),
                    device: chatd_proto::Fingerprint::of(user.as_bytes()),
                    key: std::sync::Arc::from("key"),
                    peer: "127.0.0.1:9".parse().unwrap(),
                    tx,
                    closer: Closer::default(),
                })
                .unwrap();
            (id, rx)
        }

        pub fn ctx<'a>(&'a self, session: SessionId, user: &'a str) -> Ctx<'a> {
            Ctx {
                hub: &self.hub,
                store: &self.store,
                registry: &self.registry,
                limits: &self.limits,
                session,
                user,
                role: Role::User,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::Fixture;
    use super::*;

    #[test]
    fn aliases_disable_and_duplicates() {
        let mut cfg = CommandsConfig::default();
        let r = Registry::new(&cfg).unwrap();
        assert_eq!(r.lookup("who").unwrap().name(), "list");
        cfg.disabled.push("list".into());
        let r = Registry::new(&cfg).unwrap();
        assert!(r.lookup("list").is_none() && r.lookup("who").is_none());
        let mut cfg = CommandsConfig::default();
        cfg.aliases.insert("help".into(), "list".into());
        assert_eq!(
            Registry::new(&cfg).err(),
            Some(RegistryError::Duplicate("help".into()))
        );
    }

    #[tokio::test]
    async fn unknown_and_forbidden() {
        let f = Fixture::new();
        let (id, _rx) = f.login("alice");
        let ctx = f.ctx(id, "alice");
        let err = f.registry.dispatch(&ctx, "nope", "").await.unwrap_err();
        assert_eq!(err.code(), ErrorCode::UnknownCommand);
    }
}
