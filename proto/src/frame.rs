//! Frames between `chat` (or any client) and `chatd`.
//!
//! Each frame is one JSON object on one line with a `"type"` tag:
//!
//! ```text
//! C: {"type":"hello","version":1,"client":"chat/0.1.0"}
//! S: {"type":"hello","version":1,"server":"chatd/0.1.0","max_line_bytes":65536,"max_text_bytes":16384}
//! C: {"type":"login","user":"alice","password":"..."}
//! S: {"type":"login_ok","user":"alice","session":7,"online":["alice","bob"]}
//! C: {"type":"say","text":"hi all"}
//! S: {"type":"message","from":"bob","text":"hello","ts":1764300000000}
//! ```
//!
//! Unknown fields are ignored, unknown `type`s are answered with `bad_frame`.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// The protocol version this crate speaks; a `hello` with another is refused.
pub const PROTOCOL_VERSION: u32 = 1;

/// A frame sent by a client.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientFrame {
    /// First frame: announces the protocol version.
    Hello {
        /// Must equal [`PROTOCOL_VERSION`].
        version: u32,
        /// Free-form client name and version, for logs.
        #[serde(default)]
        client: String,
    },
    /// Password login; only valid after `hello` and before any other request.
    Login {
        /// Account name.
        user: String,
        /// Password in clear; it travels only inside TLS.
        password: String,
    },
    /// A chat message for everyone online.
    Say {
        /// Message text.
        text: String,
    },
    /// A slash command run by the server's command registry (`/whisper bob hi`).
    Command {
        /// Command name or alias, without the slash.
        name: String,
        /// Everything after the name, verbatim (leading space removed).
        #[serde(default)]
        args: String,
    },
    /// Liveness check; answered with `pong`.
    Ping {
        /// Echoed back unchanged.
        #[serde(default)]
        nonce: u64,
    },
    /// Polite goodbye; the server answers `bye` and closes.
    Quit,
}

impl std::fmt::Debug for ClientFrame {
    // Hand-written so a password or message text can never reach a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientFrame::Hello { version, client } => f
                .debug_struct("Hello")
                .field("version", version)
                .field("client", client)
                .finish(),
            ClientFrame::Login { user, .. } => f
                .debug_struct("Login")
                .field("user", user)
                .field("password", &"<redacted>")
                .finish(),
            ClientFrame::Say { text } => f
                .debug_struct("Say")
                .field("text_bytes", &text.len())
                .finish(),
            ClientFrame::Command { name, args } => f
                .debug_struct("Command")
                .field("name", name)
                .field("args_bytes", &args.len())
                .finish(),
            ClientFrame::Ping { nonce } => f.debug_struct("Ping").field("nonce", nonce).finish(),
            ClientFrame::Quit => f.write_str("Quit"),
        }
    }
}

impl ClientFrame {
    /// The frame's `type` tag, for logs and error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            ClientFrame::Hello { .. } => "hello",
            ClientFrame::Login { .. } => "login",
            ClientFrame::Say { .. } => "say",
            ClientFrame::Command { .. } => "command",
            ClientFrame::Ping { .. } => "ping",
            ClientFrame::Quit => "quit",
        }
    }
}

/// One entry of the server's command list, as sent in `help`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandInfo {
    /// Canonical name, without the slash.
    pub name: String,
    /// Other names that run the same command.
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Argument synopsis, e.g. `<user> <message>`.
    pub usage: String,
    /// One line of help.
    pub help: String,
}

/// Someone online, as listed by `/list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OnlineUser {
    /// User name.
    pub user: String,
    /// Number of sessions (devices) that user has open.
    pub sessions: u32,
}

/// Why a user appeared or disappeared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PresenceEvent {
    /// The user's first session logged in.
    Join,
    /// The user's last session ended.
    Leave,
}

/// A frame sent by the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    /// Answer to the client's `hello`, with the limits the server enforces.
    Hello {
        /// Protocol version the server speaks.
        version: u32,
        /// Server software name and version.
        server: String,
        /// Longest line the server accepts, in bytes, newline excluded.
        max_line_bytes: usize,
        /// Longest message text the server accepts, in bytes.
        max_text_bytes: usize,
    },
    /// Login succeeded.
    LoginOk {
        /// The account now logged in.
        user: String,
        /// This session's id (unique while the server runs).
        session: u64,
        /// Users online now, this one included.
        online: Vec<String>,
    },
    /// A chat message (broadcast when `to` is absent, whisper when present).
    Message {
        /// Sender.
        from: String,
        /// Whisper target; absent for a broadcast.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        to: Option<String>,
        /// Message text.
        text: String,
        /// Server receive time, milliseconds since the Unix epoch.
        ts: u64,
        /// True for `/me` actions.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        action: bool,
    },
    /// A user joined or left.
    Presence {
        /// Who.
        user: String,
        /// What happened.
        event: PresenceEvent,
        /// For a leave: why, when known (quit, disconnected, kicked, ...).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// Answer to `/list`.
    Users {
        /// Everyone online, sorted by name.
        users: Vec<OnlineUser>,
    },
    /// Answer to `/help`.
    Help {
        /// Every command this user may run, sorted by name.
        commands: Vec<CommandInfo>,
    },
    /// Human-readable information from the server (command output, notices).
    Notice {
        /// The text to show.
        text: String,
    },
    /// Answer to `ping`.
    Pong {
        /// The ping's nonce.
        nonce: u64,
    },
    /// A request failed; `code` is stable, `message` is for people.
    Error {
        /// Machine-readable code.
        code: ErrorCode,
        /// Human-readable explanation.
        message: String,
    },
    /// The server is closing this connection; nothing follows.
    Bye {
        /// Why (quit, kicked, shutdown, protocol error).
        reason: String,
    },
}

impl ServerFrame {
    /// Shorthand for an error frame.
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        ServerFrame::Error {
            code,
            message: message.into(),
        }
    }
}

/// Stable error codes; new ones may be added, existing ones never change meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The line was not a JSON object of a known frame type.
    BadFrame,
    /// The line was longer than the server's `max_line_bytes`.
    FrameTooLong,
    /// The line was not UTF-8.
    NotUtf8,
    /// `hello` carried a version the server does not speak.
    UnsupportedVersion,
    /// The frame is not allowed in this state (e.g. `say` before login).
    NotLoggedIn,
    /// `hello` or `login` sent twice.
    AlreadyLoggedIn,
    /// Wrong user name or password, or the account is locked (deliberately indistinguishable).
    InvalidCredentials,
    /// The message text is longer than `max_text_bytes`, or empty.
    BadText,
    /// No such command (or it is disabled).
    UnknownCommand,
    /// The command's arguments are wrong; the message gives its usage.
    BadArguments,
    /// The user is not allowed to run this command.
    Forbidden,
    /// The named user does not exist.
    NoSuchUser,
    /// The named user exists but is not online.
    UserOffline,
    /// Too many sessions for this user.
    TooManySessions,
    /// The server failed; details are in its log, never in the frame.
    Internal,
}

/// Serializes a frame to one newline-terminated line, ready for [`crate::LineCodec`]'s encoder.
pub fn encode<T: Serialize>(frame: &T) -> Result<Bytes, serde_json::Error> {
    let mut out = serde_json::to_vec(frame)?;
    out.push(b'\n');
    Ok(Bytes::from(out))
}

/// Parses one line (without its newline) as a frame.
pub fn decode<'a, T: Deserialize<'a>>(line: &'a str) -> Result<T, serde_json::Error> {
    serde_json::from_str(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_frames_have_the_documented_shape() {
        let f: ClientFrame = decode(r#"{"type":"login","user":"a","password":"p"}"#).unwrap();
        assert_eq!(
            f,
            ClientFrame::Login {
                user: "a".into(),
                password: "p".into()
            }
        );
        let f: ClientFrame = decode(r#"{"type":"command","name":"list"}"#).unwrap();
        assert_eq!(
            f,
            ClientFrame::Command {
                name: "list".into(),
                args: String::new()
            }
        );
        assert_eq!(
            decode::<ClientFrame>(r#"{"type":"quit"}"#).unwrap(),
            ClientFrame::Quit
        );
        assert!(decode::<ClientFrame>(r#"{"type":"nope"}"#).is_err());
        assert!(decode::<ClientFrame>(r#"[1,2]"#).is_err());
    }

    #[test]
    fn debug_never_shows_secrets_or_text() {
        let f = ClientFrame::Login {
            user: "alice".into(),
            password: "hunter2".into(),
        };
        assert!(!format!("{f:?}").contains("hunter2"));
        let f = ClientFrame::Say {
            text: "secret plans".into(),
        };
        assert!(!format!("{f:?}").contains("secret"));
    }

    #[test]
    fn server_frames_encode_as_one_line() {
        let line = encode(&ServerFrame::error(
            ErrorCode::NoSuchUser,
            "no user \"x\"\nsecond",
        ))
        .unwrap();
        assert_eq!(line.iter().filter(|b| **b == b'\n').count(), 1);
        assert!(line.ends_with(b"\n"));
        let text = std::str::from_utf8(&line).unwrap();
        assert!(text.starts_with(r#"{"type":"error","code":"no_such_user""#));
        let back: ServerFrame = decode(text.trim_end()).unwrap();
        assert_eq!(
            back,
            ServerFrame::error(ErrorCode::NoSuchUser, "no user \"x\"\nsecond")
        );
    }
}
