//! The slash-command registry: one file per built-in, one list of them in [`builtin`].
//!
//! Which commands are enabled and their aliases come from the config. The role a command
//! declares is checked in [`Registry::dispatch`], never in its handler; a handler reads
//! `ctx.role` only for exceptions that depend on the named room or on `[rooms]`, which
//! dispatch cannot know (an admin may enter or list an invite-only room, or create a room
//! where users may not). Handler errors map to stable error codes.

mod announce;
mod away;
mod disconnect;
mod help;
mod invite;
mod join;
mod kick;
mod list;
mod members;
mod motd;
mod part;
mod ping;
pub mod plugin;
mod revoke;
mod rooms;
mod topic;
mod whois;

pub use announce::announcement;
pub use disconnect::{ban_reason, kick_reason};

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use chatd_proto::ErrorCode;
use chatd_proto::frame::{CommandInfo, ServerFrame};

use crate::config::{CommandsConfig, Limits, PluginConfig};
use crate::hub::{Hub, SessionId};
use crate::store::Store;

/// Every built-in command, in one place.
///
/// `config::BUILTIN_NAMES` repeats the names for config checks; a test below keeps the two
/// equal. Whispers and `/me` are not commands: their text is end-to-end encrypted, so the
/// client seals them and the server only routes the envelopes (see `crate::session`).
pub fn builtin() -> Vec<Arc<dyn Command>> {
    vec![
        Arc::new(announce::Announce),
        Arc::new(away::Away),
        Arc::new(disconnect::Disconnect),
        Arc::new(help::Help),
        Arc::new(invite::Invite),
        Arc::new(join::Join),
        Arc::new(kick::Kick),
        Arc::new(list::List),
        Arc::new(members::Members),
        Arc::new(motd::Motd),
        Arc::new(part::Part),
        Arc::new(ping::Ping),
        Arc::new(revoke::Revoke),
        Arc::new(rooms::Rooms),
        Arc::new(topic::Topic),
        Arc::new(whois::Whois),
    ]
}

/// Who may run a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Any logged-in user.
    User,
    /// The owner of the room the command names ([`Command::room_of`]), or an admin.
    RoomOwner,
    /// Accounts with the admin flag.
    Admin,
}

/// The future a handler returns.
pub type CommandFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Option<ServerFrame>, CommandError>> + Send + 'a>>;

/// A slash command.
pub trait Command: Send + Sync {
    /// Canonical name, without the slash.
    fn name(&self) -> &str;
    /// Argument synopsis.
    fn usage(&self) -> &str;
    /// One line of help.
    fn help(&self) -> &str;
    /// Least role allowed to run it.
    fn role(&self) -> Role {
        Role::User
    }
    /// For a [`Role::RoomOwner`] command: the room its arguments name (without `#`).
    fn room_of(&self, _args: &str) -> Option<String> {
        None
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
    /// The message of the day (`[server] motd`; empty: none).
    pub motd: &'a str,
    /// The caller's current room, as its client named it (checked: the caller is in it).
    pub room: Option<&'a str>,
    /// Room settings and limits.
    pub rooms: &'a crate::config::RoomsConfig,
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
    /// The caller does not own the room (and is not an admin).
    #[error("/{name} in #{room} is for its owner and administrators")]
    NotOwner {
        /// Command name.
        name: String,
        /// The room.
        room: String,
    },
    /// The caller is not in the room, or it does not exist.
    #[error("{0}")]
    NotInRoom(String),
    /// Refused for a reason given to the caller (a limit, an invitation needed, ...).
    #[error("{0}")]
    Refused(String),
    /// Wrong arguments; carries the usage line.
    #[error("usage: /{name} {usage}")]
    BadArguments {
        /// Command name.
        name: String,
        /// Its usage.
        usage: String,
    },
    /// The named user does not exist.
    #[error("no such user: {0}")]
    NoSuchUser(String),
    /// An external plugin command failed; the message says how (details in the log).
    #[error("/{name}: {why}")]
    Plugin {
        /// Command name.
        name: String,
        /// What went wrong, for the caller.
        why: String,
    },
    /// Something failed inside the server (logged there, not sent).
    #[error("internal error")]
    Internal,
}

impl CommandError {
    /// Wrong arguments for `cmd`.
    pub fn usage(cmd: &(impl Command + ?Sized)) -> CommandError {
        CommandError::BadArguments {
            name: cmd.name().to_string(),
            usage: cmd.usage().to_string(),
        }
    }

    /// The wire code for this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            CommandError::Unknown(_) => ErrorCode::UnknownCommand,
            CommandError::Forbidden(_) | CommandError::NotOwner { .. } => ErrorCode::Forbidden,
            CommandError::NotInRoom(_) => ErrorCode::NotInRoom,
            CommandError::Refused(_) => ErrorCode::Refused,
            CommandError::BadArguments { .. } => ErrorCode::BadArguments,
            CommandError::NoSuchUser(_) => ErrorCode::NoSuchUser,
            CommandError::Plugin { .. } => ErrorCode::PluginFailed,
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
    /// A plugin's name is not a valid command name.
    #[error("plugin name {0:?} must be 1-32 of a-z, 0-9, _ and -, starting with a letter")]
    BadPluginName(String),
    /// A plugin's `exec` is not an absolute path.
    #[error("plugin {name:?}: exec must be an absolute path, not {exec:?}")]
    RelativeExec {
        /// Plugin name.
        name: String,
        /// The configured path.
        exec: String,
    },
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
    /// Builds the registry from the built-ins, the `[commands]` config and `[[plugins]]`.
    pub fn new(
        config: &CommandsConfig,
        plugins: &[PluginConfig],
    ) -> Result<Registry, RegistryError> {
        let builtins = builtin();
        let mut by_name: BTreeMap<String, Arc<dyn Command>> = BTreeMap::new();
        for cmd in &builtins {
            if config.disabled.iter().any(|d| d == cmd.name()) {
                continue;
            }
            if by_name
                .insert(cmd.name().to_string(), Arc::clone(cmd))
                .is_some()
            {
                // Only reachable if builtin() lists a name twice.
                return Err(RegistryError::Duplicate("builtin".into()));
            }
        }
        for p in plugins {
            let cmd = plugin::Plugin::new(p)?;
            // A plugin may not shadow a built-in, even a disabled one: /help would lie.
            if builtins.iter().any(|b| b.name() == p.name) || by_name.contains_key(&p.name) {
                return Err(RegistryError::Duplicate(p.name.clone()));
            }
            by_name.insert(p.name.clone(), Arc::new(cmd));
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
            // Room-owner commands are offered to everyone: anyone may own a room.
            .filter(|c| c.role() == Role::RoomOwner || c.role() <= role)
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
        let cmd = self.lookup(name).ok_or_else(|| {
            CommandError::Unknown(name.chars().filter(|c| !c.is_control()).take(64).collect())
        })?;
        let args = args.trim();
        match cmd.role() {
            Role::Admin if ctx.role < Role::Admin => {
                return Err(CommandError::Forbidden(cmd.name().to_string()));
            }
            Role::RoomOwner if ctx.role < Role::Admin => {
                let room = cmd
                    .room_of(args)
                    .ok_or_else(|| CommandError::usage(cmd.as_ref()))?;
                let owner = ctx.hub.room(&room).and_then(|r| r.owner);
                if owner.as_deref() != Some(ctx.user) {
                    return Err(CommandError::NotOwner {
                        name: cmd.name().to_string(),
                        room,
                    });
                }
            }
            _ => {}
        }
        cmd.run(ctx, args).await
    }
}

/// A room argument: `dev` or `#dev`; None when it is not a valid room name.
pub fn room_arg(arg: &str) -> Option<String> {
    let name = arg.strip_prefix('#').unwrap_or(arg);
    chatd_proto::names::validate_room(name).ok()?;
    Some(name.to_string())
}

/// `USER ROOM` arguments (exactly two words, valid names).
pub fn user_and_room(args: &str) -> Option<(&str, String)> {
    let mut words = args.split_whitespace();
    let (user, room) = (words.next()?, room_arg(words.next()?)?);
    if words.next().is_some() || chatd_proto::names::validate_username(user).is_err() {
        return None;
    }
    Some((user, room))
}

/// Logs a store failure inside a command; the caller gets `internal`.
fn store_failed(e: crate::store::StoreError) -> CommandError {
    tracing::error!(error = %e, "command: database error");
    CommandError::Internal
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
    use crate::outbox::Outbox;
    use std::sync::Arc;

    pub struct Fixture {
        pub hub: Hub,
        pub store: Store,
        /// The same database as `store`, for synchronous set-up in tests.
        pub sqlite: crate::store::SqliteStore,
        pub registry: Registry,
        pub limits: Limits,
        pub rooms: crate::config::RoomsConfig,
    }

    impl Fixture {
        pub fn new() -> Self {
            let sqlite = crate::store::SqliteStore::open_in_memory().unwrap();
            Fixture {
                hub: Hub::new(4, 64),
                store: Store::Sqlite(sqlite.clone()),
                sqlite,
                registry: Registry::new(&CommandsConfig::default(), &[]).unwrap(),
                limits: Limits::default(),
                rooms: crate::config::RoomsConfig::default(),
            }
        }

        /// Logs `user` in; returns its session id and queue.
        pub fn login(&self, user: &str) -> (SessionId, Arc<Outbox>) {
            self.sqlite
                .run_sync(
                    |c| match crate::store::sqlite::users::add(c, user, "x", false) {
                        Ok(()) | Err(crate::store::StoreError::UserExists(_)) => Ok(()),
                        Err(e) => Err(e),
                    },
                )
                .unwrap();
            let outbox = Arc::new(Outbox::new(64));
            let id = self
                .hub
                .register(crate::hub::NewSession {
                    user: user.to_string(),
                    device: chatd_proto::Fingerprint::of(user.as_bytes()),
                    key: std::sync::Arc::from("key"),
                    peer: "127.0.0.1:9".parse().unwrap(),
                    outbox: Arc::clone(&outbox),
                    closer: Closer::default(),
                    replay: false,
                    binary: false,
                    vouch: false,
                    rekey: false,
                })
                .unwrap()
                .0;
            (id, outbox)
        }

        /// Logs `user` in with device key `device`; returns its session id and closer.
        pub fn login_device(
            &self,
            user: &str,
            device: chatd_proto::Fingerprint,
        ) -> (SessionId, Closer) {
            let closer = Closer::default();
            let id = self
                .hub
                .register(crate::hub::NewSession {
                    user: user.to_string(),
                    device,
                    key: std::sync::Arc::from("key"),
                    peer: "127.0.0.1:9".parse().unwrap(),
                    outbox: Arc::new(Outbox::new(64)),
                    closer: closer.clone(),
                    replay: false,
                    binary: false,
                    vouch: false,
                    rekey: false,
                })
                .unwrap()
                .0;
            (id, closer)
        }

        pub fn ctx<'a>(&'a self, session: SessionId, user: &'a str) -> Ctx<'a> {
            Ctx {
                hub: &self.hub,
                store: &self.store,
                registry: &self.registry,
                limits: &self.limits,
                motd: "",
                room: None,
                rooms: &self.rooms,
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
        let r = Registry::new(&cfg, &[]).unwrap();
        assert_eq!(r.lookup("who").unwrap().name(), "list");
        cfg.disabled.push("list".into());
        let r = Registry::new(&cfg, &[]).unwrap();
        assert!(r.lookup("list").is_none() && r.lookup("who").is_none());
        let mut cfg = CommandsConfig::default();
        cfg.aliases.insert("help".into(), "list".into());
        assert_eq!(
            Registry::new(&cfg, &[]).err(),
            Some(RegistryError::Duplicate("help".into()))
        );
    }

    #[test]
    fn config_lists_every_builtin_once() {
        let mut names: Vec<String> = builtin().iter().map(|c| c.name().to_string()).collect();
        names.sort();
        let mut listed = crate::config::BUILTIN_NAMES.to_vec();
        listed.sort();
        assert_eq!(
            names, listed,
            "builtin() and config::BUILTIN_NAMES must name the same commands"
        );
        names.dedup();
        assert_eq!(names.len(), listed.len(), "a built-in is listed twice");
    }

    #[test]
    fn plugins_may_not_shadow_builtins() {
        let plugin = |name: &str| -> PluginConfig {
            toml::from_str(&format!("name = \"{name}\"\nexec = \"/bin/true\"")).unwrap()
        };
        let mut cfg = CommandsConfig::default();
        cfg.disabled.push("ping".into());
        for taken in ["ping", "help", "who"] {
            assert_eq!(
                Registry::new(&cfg, &[plugin(taken)]).err(),
                Some(RegistryError::Duplicate(taken.into())),
                "{taken}"
            );
        }
        let r = Registry::new(&cfg, &[plugin("dice")]).unwrap();
        assert_eq!(r.lookup("dice").unwrap().name(), "dice");
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
