//! What a line typed by the user means: a message, a server command or a client command.
//!
//! Shared by every UI so `/quit`, `/help` and `//text` behave the same everywhere.

/// One parsed input line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// Blank line: nothing to do.
    Empty,
    /// `/quit`: leave politely.
    Quit,
    /// `/help [args]`: ask the server for its command list and show the client's own commands.
    Help {
        /// Anything after `/help`, passed on to the server.
        args: String,
    },
    /// A chat message (`//text` sends `/text`).
    Say {
        /// The text to send.
        text: String,
    },
    /// `/whisper USER TEXT` (also `/w`, `/msg`): an end-to-end encrypted private message.
    Whisper {
        /// Recipient.
        to: String,
        /// The text.
        text: String,
    },
    /// `/me TEXT`: an action, sealed like any message.
    Action {
        /// The text.
        text: String,
    },
    /// `/fingerprint`: show this device's key fingerprint.
    Fingerprint,
    /// `/verify USER [FINGERPRINT]`: list USER's pinned keys, or mark one verified.
    Verify {
        /// Whose keys.
        user: String,
        /// The fingerprint read out by USER, if given.
        fingerprint: Option<String>,
    },
    /// `/trust USER`: accept USER's new (pending) keys.
    Trust {
        /// Whose keys.
        user: String,
    },
    /// `/devices ...`: this account's devices.
    Devices(Devices),
    /// `/ping`: time a round trip to the server.
    Ping,
    /// `/ignore [USER]`: hide USER's lines, or (None) list who is ignored.
    Ignore(Option<String>),
    /// `/unignore USER`.
    Unignore(String),
    /// `/history [clear]`: the local history's state, or delete its file.
    History {
        /// `clear` was given.
        clear: bool,
    },
    /// `/name args`: a command run by the server.
    Command {
        /// Command name without the slash.
        name: String,
        /// Everything after the name, leading whitespace removed.
        args: String,
    },
    /// A line that cannot be sent (e.g. a lone `/`); the string says why.
    Invalid(String),
}

/// What `/devices` was asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Devices {
    /// `/devices`: list this account's device keys.
    List,
    /// `/devices approve CODE|FINGERPRINT`: vouch for one of them.
    Approve(String),
    /// `/devices revoke FINGERPRINT`: ask the server to revoke one of them.
    Revoke(String),
}

/// Parses one line (without its newline).
pub fn parse(line: &str) -> Input {
    if line.trim().is_empty() {
        return Input::Empty;
    }
    if let Some(text) = line.strip_prefix("//") {
        return Input::Say {
            text: format!("/{text}"),
        };
    }
    let Some(rest) = line.strip_prefix('/') else {
        return Input::Say {
            text: line.to_string(),
        };
    };
    let (name, args) = match rest.find(char::is_whitespace) {
        Some(i) => (&rest[..i], rest[i..].trim_start()),
        None => (rest, ""),
    };
    match name {
        "" => Input::Invalid(
            "missing command name after '/'; start the line with '//' to send a message beginning with '/'"
                .to_string(),
        ),
        "quit" => Input::Quit,
        "whisper" | "w" | "msg" => match args.split_once(char::is_whitespace) {
            Some((to, text)) if !text.trim().is_empty() => Input::Whisper {
                to: to.to_string(),
                text: text.trim_start().to_string(),
            },
            _ => Input::Invalid(format!("usage: /{name} USER MESSAGE")),
        },
        "me" if args.trim().is_empty() => Input::Invalid("usage: /me ACTION".to_string()),
        "me" => Input::Action {
            text: args.to_string(),
        },
        "fingerprint" => Input::Fingerprint,
        "history" => match args.trim() {
            "" => Input::History { clear: false },
            "clear" => Input::History { clear: true },
            _ => Input::Invalid("usage: /history [clear]".to_string()),
        },
        "verify" => {
            let mut words = args.split_whitespace();
            match (words.next(), words.next(), words.next()) {
                (Some(user), fingerprint, None) => Input::Verify {
                    user: user.to_string(),
                    fingerprint: fingerprint.map(str::to_string),
                },
                _ => Input::Invalid("usage: /verify USER [FINGERPRINT]".to_string()),
            }
        }
        "trust" => match args.split_whitespace().collect::<Vec<_>>()[..] {
            [user] => Input::Trust {
                user: user.to_string(),
            },
            _ => Input::Invalid("usage: /trust USER".to_string()),
        },
        "devices" => match args.split_whitespace().collect::<Vec<_>>()[..] {
            [] | ["list"] => Input::Devices(Devices::List),
            ["approve", which] => Input::Devices(Devices::Approve(which.to_string())),
            ["revoke", which] => Input::Devices(Devices::Revoke(which.to_string())),
            _ => Input::Invalid(
                "usage: /devices, /devices approve CODE|FINGERPRINT, /devices revoke FINGERPRINT"
                    .to_string(),
            ),
        },
        "ping" => Input::Ping,
        "ignore" => match args.split_whitespace().collect::<Vec<_>>()[..] {
            [] => Input::Ignore(None),
            [user] => Input::Ignore(Some(user.to_string())),
            _ => Input::Invalid("usage: /ignore [USER]".to_string()),
        },
        "unignore" => match args.split_whitespace().collect::<Vec<_>>()[..] {
            [user] => Input::Unignore(user.to_string()),
            _ => Input::Invalid("usage: /unignore USER".to_string()),
        },
        "help" => Input::Help {
            args: args.to_string(),
        },
        _ => Input::Command {
            name: name.to_string(),
            args: args.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn say(t: &str) -> Input {
        Input::Say { text: t.into() }
    }

    fn cmd(name: &str, args: &str) -> Input {
        Input::Command {
            name: name.into(),
            args: args.into(),
        }
    }

    #[test]
    fn parses_lines() {
        assert_eq!(parse(""), Input::Empty);
        assert_eq!(parse("   "), Input::Empty);
        assert_eq!(parse("hello"), say("hello"));
        assert_eq!(parse("  spaced  "), say("  spaced  "));
        assert_eq!(
            parse("//etc/passwd is a file"),
            say("/etc/passwd is a file")
        );
        assert_eq!(parse("//"), say("/"));
        assert_eq!(parse("/quit"), Input::Quit);
        assert_eq!(parse("/quit now"), Input::Quit);
        assert_eq!(
            parse("/help"),
            Input::Help {
                args: String::new()
            }
        );
        assert_eq!(
            parse("/help whisper"),
            Input::Help {
                args: "whisper".into()
            }
        );
        assert_eq!(parse("/list"), cmd("list", ""));
        assert_eq!(parse("/ping"), Input::Ping);
        assert_eq!(parse("/ignore"), Input::Ignore(None));
        assert_eq!(parse("/ignore  bob "), Input::Ignore(Some("bob".into())));
        assert!(matches!(parse("/ignore bob carol"), Input::Invalid(_)));
        assert_eq!(parse("/unignore bob"), Input::Unignore("bob".into()));
        assert!(matches!(parse("/unignore"), Input::Invalid(_)));
        let whisper = Input::Whisper {
            to: "bob".into(),
            text: "hi  there ".into(),
        };
        assert_eq!(parse("/w bob hi  there "), whisper);
        assert_eq!(parse("/whisper bob hi  there "), whisper);
        assert_eq!(parse("/msg bob\thi  there "), whisper);
        assert!(matches!(parse("/w bob"), Input::Invalid(_)));
        assert!(matches!(parse("/w bob   "), Input::Invalid(_)));
        let wave = Input::Action {
            text: "waves".into(),
        };
        assert_eq!(parse("/me   waves"), wave);
        assert_eq!(parse("/me\twaves"), wave);
        assert!(matches!(parse("/me"), Input::Invalid(_)));
        assert_eq!(parse("/fingerprint"), Input::Fingerprint);
        assert_eq!(
            parse("/verify bob"),
            Input::Verify {
                user: "bob".into(),
                fingerprint: None
            }
        );
        assert_eq!(
            parse("/verify bob SHA256:ab"),
            Input::Verify {
                user: "bob".into(),
                fingerprint: Some("SHA256:ab".into())
            }
        );
        assert!(matches!(parse("/verify"), Input::Invalid(_)));
        assert!(matches!(parse("/verify a b c"), Input::Invalid(_)));
        assert_eq!(parse("/trust bob"), Input::Trust { user: "bob".into() });
        assert!(matches!(parse("/trust"), Input::Invalid(_)));
        assert_eq!(parse("/devices"), Input::Devices(Devices::List));
        assert_eq!(parse("/devices list"), Input::Devices(Devices::List));
        assert_eq!(
            parse("/devices approve 0123456789abcdef-ABCDEFGHJK"),
            Input::Devices(Devices::Approve("0123456789abcdef-ABCDEFGHJK".into()))
        );
        assert_eq!(
            parse("/devices  revoke SHA256:ab"),
            Input::Devices(Devices::Revoke("SHA256:ab".into()))
        );
        assert!(matches!(parse("/devices approve"), Input::Invalid(_)));
        assert!(matches!(parse("/devices drop x"), Input::Invalid(_)));
        assert!(matches!(parse("/"), Input::Invalid(_)));
        assert!(matches!(parse("/ x"), Input::Invalid(_)));
        // Only a leading slash makes a command.
        assert_eq!(parse("a/b"), say("a/b"));
    }
}
