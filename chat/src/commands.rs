//! The one table of slash commands the client knows: its own (with their `/help` lines) and
//! the server's that take names, with what each argument is, for `/help`, `/help CMD` and Tab
//! completion. A new command is one line here.

/// What an argument of a command is, for completion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arg {
    /// A user name.
    User,
    /// A room name (`#` optional).
    Room,
    /// A pinned key fingerprint of the user named by the argument before it.
    Fingerprint,
    /// A device key of this account.
    OwnDevice,
    /// One of these words.
    Word(&'static [&'static str]),
    /// A command name.
    Command,
    /// Free text: nothing to complete, and it takes the rest of the line.
    Text,
}

/// One command.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    /// Name, without the slash.
    pub name: &'static str,
    /// Other names.
    pub aliases: &'static [&'static str],
    /// Argument synopsis.
    pub usage: &'static str,
    /// One line of help (empty: a server command, which the server describes).
    pub help: &'static str,
    /// Its arguments, in order.
    pub args: &'static [Arg],
}

impl Spec {
    /// Handled (or wrapped) by the client: described by it, and left out of the server's list.
    pub fn client(&self) -> bool {
        !self.help.is_empty()
    }

    /// The `/help` line: `  /whisper USER MESSAGE - ... (aliases: w, msg)`.
    pub fn help_line(&self) -> String {
        let mut s = format!("  /{}", self.name);
        if !self.usage.is_empty() {
            s.push(' ');
            s.push_str(self.usage);
        }
        s.push_str(" - ");
        s.push_str(self.help);
        if !self.aliases.is_empty() {
            s.push_str(&format!(" (aliases: {})", self.aliases.join(", ")));
        }
        s
    }
}

use Arg::{Command, Fingerprint, OwnDevice, Room, Text, User, Word};

const fn spec(
    name: &'static str,
    aliases: &'static [&'static str],
    usage: &'static str,
    help: &'static str,
    args: &'static [Arg],
) -> Spec {
    Spec {
        name,
        aliases,
        usage,
        help,
        args,
    }
}

/// Every command, client ones first in `/help` order, then server ones that take names:
/// one line each (so kept out of rustfmt's way).
#[rustfmt::skip]
pub const COMMANDS: &[Spec] = &[
    spec("help", &[], "[COMMAND]", "list the commands, or show how to use one", &[Command]),
    spec("quit", &[], "", "leave the chat", &[]),
    spec("whisper", &["w", "msg"], "USER MESSAGE", "private message, end-to-end encrypted", &[User, Text]),
    spec("me", &[], "ACTION", "an action in the current room (* you waves)", &[Text]),
    spec("join", &[], "ROOM", "switch to a room you are in, or join it; plain text goes to the current room", &[Room]),
    spec("part", &[], "[#ROOM]", "leave the current room (or ROOM)", &[Room]),
    spec("members", &[], "[#ROOM]", "list the members of the current room (or ROOM)", &[Room]),
    spec("topic", &[], "[#ROOM] [TEXT|-]", "show or set the topic of the current room (or ROOM); - clears it", &[Room, Text]),
    spec("kick", &[], "USER [#ROOM]", "remove USER from the current room (or ROOM); for its owner", &[User, Room]),
    spec("ping", &[], "", "show the round trip to the server", &[]),
    spec("ignore", &[], "[USER]", "hide USER's messages, whispers and presence lines (client-side, kept); alone: list", &[User]),
    spec("unignore", &[], "USER", "show USER's lines again", &[User]),
    spec("fingerprint", &[], "", "show this device's key fingerprint", &[]),
    spec("verify", &[], "USER [FINGERPRINT]", "show USER's keys, or mark the one USER read out as verified (16 hex digits will do)", &[User, Fingerprint]),
    spec("trust", &[], "USER", "accept USER's new device keys", &[User]),
    spec("devices", &[], "[approve CODE|FINGERPRINT | revoke FINGERPRINT]", "list your account's device keys, approve a new one of yours, or revoke one", &[Word(&["approve", "list", "revoke"]), OwnDevice]),
    spec("history", &[], "[clear]", "whether this device keeps the conversation ([history] in config.toml); clear deletes it", &[Word(&["clear"])]),
    spec("clear", &[], "", "clear the message view (full-screen interface)", &[]),
    spec("window", &[], "[N]", "show buffer N (Alt-N); alone, list the buffers (full-screen interface)", &[]),
    spec("close", &[], "", "close this buffer (a room's: part it first; the server buffer stays)", &[]),
    spec("mentions", &[], "", "list recent lines that named you or a highlight word", &[]),
    spec("search", &[], "[TEXT]", "show only this buffer's lines containing TEXT; alone, show all again", &[Text]),
    // The server's, for completion (their help comes from the server).
    spec("whois", &[], "USER", "", &[User]),
    spec("invite", &[], "USER ROOM", "", &[User, Room]),
    spec("revoke", &[], "FINGERPRINT", "", &[OwnDevice]),
    spec("disconnect", &[], "USER [REASON]", "", &[User, Text]),
];

/// The command called `name` (or by that alias).
pub fn find(name: &str) -> Option<&'static Spec> {
    let name = name.strip_prefix('/').unwrap_or(name);
    COMMANDS
        .iter()
        .find(|c| c.name == name || c.aliases.contains(&name))
}

/// Whether the client describes `name` itself (so the server's line for it is not shown).
pub fn is_client(name: &str) -> bool {
    find(name).is_some_and(Spec::client)
}

/// What the word at `index` (0: the first after the command) of a `/name` line is.
pub fn arg_kind(name: &str, index: usize, words_before: &[&str]) -> Option<Arg> {
    let spec = find(name)?;
    // `/topic TEXT` names no room: only a word with `#` is one.
    let mut args = spec.args.iter().copied();
    let kind = if let Some(Text) = spec.args.last().copied() {
        let fixed = spec.args.len() - 1;
        if index < fixed {
            args.nth(index)
        } else {
            Some(Text)
        }
    } else {
        args.nth(index)
    };
    // `/devices approve|revoke FP`: the second word only after those two.
    if kind == Some(OwnDevice) && spec.name == "devices" {
        return match words_before.first() {
            Some(&"approve" | &"revoke") => Some(OwnDevice),
            _ => None,
        };
    }
    kind
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_aliases_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for c in COMMANDS {
            for n in std::iter::once(&c.name).chain(c.aliases) {
                assert!(seen.insert(*n), "{n} twice");
            }
        }
    }

    #[test]
    fn which_argument_is_what() {
        assert_eq!(arg_kind("whisper", 0, &[]), Some(User));
        assert_eq!(arg_kind("msg", 0, &[]), Some(User));
        assert_eq!(arg_kind("w", 1, &["bob"]), Some(Text));
        assert_eq!(arg_kind("w", 5, &["bob"]), Some(Text));
        assert_eq!(arg_kind("verify", 0, &[]), Some(User));
        assert_eq!(arg_kind("verify", 1, &["bob"]), Some(Fingerprint));
        assert_eq!(arg_kind("verify", 2, &["bob", "x"]), None);
        assert_eq!(arg_kind("invite", 1, &["bob"]), Some(Room));
        assert_eq!(arg_kind("/join", 0, &[]), Some(Room));
        assert_eq!(arg_kind("kick", 1, &["bob"]), Some(Room));
        assert_eq!(arg_kind("devices", 1, &["approve"]), Some(OwnDevice));
        assert_eq!(arg_kind("devices", 1, &["list"]), None);
        assert_eq!(arg_kind("revoke", 0, &[]), Some(OwnDevice));
        assert_eq!(arg_kind("help", 0, &[]), Some(Command));
        assert_eq!(arg_kind("nosuch", 0, &[]), None);
        for c in ["whois", "kick", "ignore", "unignore", "trust", "invite"] {
            assert_eq!(arg_kind(c, 0, &[]), Some(User), "{c}");
        }
    }

    #[test]
    fn client_commands_describe_themselves() {
        assert!(is_client("join") && is_client("help") && is_client("msg"));
        assert!(!is_client("whois") && !is_client("list"));
        assert_eq!(
            find("w").map(Spec::help_line).as_deref(),
            Some(
                "  /whisper USER MESSAGE - private message, end-to-end encrypted (aliases: w, msg)"
            )
        );
    }
}
