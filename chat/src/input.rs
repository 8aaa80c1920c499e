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
        assert_eq!(parse("/w bob hi  there "), cmd("w", "bob hi  there "));
        assert_eq!(parse("/me   waves"), cmd("me", "waves"));
        assert_eq!(parse("/me\twaves"), cmd("me", "waves"));
        assert!(matches!(parse("/"), Input::Invalid(_)));
        assert!(matches!(parse("/ x"), Input::Invalid(_)));
        // Only a leading slash makes a command.
        assert_eq!(parse("a/b"), say("a/b"));
    }
}
