//! Frames between `chat` (or any client) and `chatd`.
//!
//! Each frame is one JSON object on one line with a `"type"` tag:
//!
//! ```text
//! C: {"type":"hello","version":2,"client":"chat/0.1.0"}
//! S: {"type":"hello","version":2,"server":"chatd/0.1.0","max_line_bytes":65536,"max_text_bytes":16384}
//! C: {"type":"login","user":"alice","password":"...","device_key":"MIIBojAN..."}
//! S: {"type":"login_ok","user":"alice","session":7,"device":"SHA256:...","online":["alice","bob"],"devices":[...]}
//! C: {"type":"chain","data":"AVcABWFsaWNl..."}        a wrapped sender chain for one device
//! C: {"type":"send","data":"AUUBAQEB..."}             an end-to-end envelope
//! S: {"type":"envelope","from":"alice","device":"SHA256:...","data":"AUUBAQEB...","ts":1764300000000}
//! ```
//!
//! Message text never appears in a frame: `send` and `envelope` carry sealed envelopes
//! (docs/E2E-ENVELOPE.md) that the server routes by their clear header.
//!
//! Unknown fields are ignored, unknown `type`s are answered with `bad_frame`. Once `hello`
//! agreed on them, `send` and `envelope` may travel as binary frames instead (codec.rs).

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::Fingerprint;

/// The protocol version this crate speaks; a `hello` with another is refused.
pub const PROTOCOL_VERSION: u32 = 2;

/// The `hello` feature for device vouches: `vouch` frames and `devices[].vouches`.
pub const FEATURE_VOUCH: &str = "vouch";

/// The `hello` feature for asking a device for its chain again: `rekey` frames both ways.
pub const FEATURE_REKEY: &str = "rekey";

/// The `hello` feature for login proofs: the server's `hello` carries a `challenge` and `login`
/// may carry a `proof` signed by the device key (e2e::LoginChallenge), which lets a device the
/// account already registered skip the per-account login wait.
pub const FEATURE_KEYPROOF: &str = "keyproof";

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
        /// Asks for binary envelope frames (codec.rs); used once the server's `hello` agrees.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        binary: bool,
        /// Optional features asked for (e.g. [`FEATURE_VOUCH`]); the server's `hello` lists
        /// those it supports.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        features: Vec<String>,
    },
    /// Password login; only valid after `hello` and before any other request.
    Login {
        /// Account name.
        user: String,
        /// Password in clear; it travels only inside TLS.
        password: String,
        /// This device's RSA public key: base64 of its SPKI DER. Registered on first use.
        device_key: String,
        /// With [`FEATURE_KEYPROOF`]: base64 of the device key's RSA-PSS signature over the
        /// server's `hello` challenge (e2e::LoginChallenge).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        proof: Option<String>,
    },
    /// An end-to-end envelope (base64), routed by its header's conversation.
    Send {
        /// Base64 of the envelope bytes.
        data: String,
    },
    /// A wrapped sender chain (base64), routed to the device its header names.
    Chain {
        /// Base64 of the wrapped-chain bytes.
        data: String,
    },
    /// Asks the device `device` to wrap its sender chain `chain` for this device again,
    /// from index `index`: an envelope on that chain arrived without (usable) chain.
    Rekey {
        /// The sending device whose chain is missing.
        device: Fingerprint,
        /// The envelope's conversation.
        conversation: String,
        /// The chain id, 32 lowercase hex digits.
        chain: String,
        /// The first index that could not be opened.
        index: u32,
    },
    /// A signed device vouch (base64, proto/src/e2e/vouch.rs) for another device of this user.
    Vouch {
        /// Base64 of the vouch bytes.
        data: String,
    },
    /// A slash command run by the server's command registry (`/whisper bob hi`).
    Command {
        /// Command name or alias, without the slash.
        name: String,
        /// Everything after the name, verbatim (leading space removed).
        #[serde(default)]
        args: String,
        /// The room the user is in when typing it (a client's current room, without `#`);
        /// handed to plugins, which may reply to that room.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        room: Option<String>,
    },
    /// Acknowledges the messages stored for this device up to the `backlog` marker `upto`:
    /// the server deletes them. Sent once the client has shown what came before the marker.
    BacklogAck {
        /// The marker's `upto`.
        upto: u64,
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
            ClientFrame::Hello {
                version,
                client,
                binary,
                features,
            } => f
                .debug_struct("Hello")
                .field("version", version)
                .field("client", client)
                .field("binary", binary)
                .field("features", features)
                .finish(),
            ClientFrame::Login { user, proof, .. } => f
                .debug_struct("Login")
                .field("user", user)
                .field("password", &"<redacted>")
                .field("proof", &proof.is_some())
                .finish(),
            ClientFrame::Send { data } => f
                .debug_struct("Send")
                .field("data_bytes", &data.len())
                .finish(),
            ClientFrame::Chain { data } => f
                .debug_struct("Chain")
                .field("data_bytes", &data.len())
                .finish(),
            ClientFrame::Rekey {
                device,
                conversation,
                chain,
                index,
            } => f
                .debug_struct("Rekey")
                .field("device", device)
                .field("conversation", conversation)
                .field("chain", chain)
                .field("index", index)
                .finish(),
            ClientFrame::Vouch { data } => f
                .debug_struct("Vouch")
                .field("data_bytes", &data.len())
                .finish(),
            ClientFrame::Command { name, args, room } => f
                .debug_struct("Command")
                .field("name", name)
                .field("room", room)
                .field("args_bytes", &args.len())
                .finish(),
            ClientFrame::BacklogAck { upto } => {
                f.debug_struct("BacklogAck").field("upto", upto).finish()
            }
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
            ClientFrame::Send { .. } => "send",
            ClientFrame::Chain { .. } => "chain",
            ClientFrame::Rekey { .. } => "rekey",
            ClientFrame::Vouch { .. } => "vouch",
            ClientFrame::Command { .. } => "command",
            ClientFrame::BacklogAck { .. } => "backlog_ack",
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
    /// Away message, when set with `/away`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub away: Option<String>,
}

/// One device key in a `whois` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WhoisDevice {
    /// SHA-256 of the key's SPKI DER.
    pub fingerprint: Fingerprint,
    /// A session with it is logged in now.
    pub online: bool,
}

/// A registered (unrevoked) device key; messages for it are stored while it is offline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceInfo {
    /// Owner.
    pub user: String,
    /// SHA-256 of the key's SPKI DER.
    pub fingerprint: Fingerprint,
    /// Base64 of the SPKI DER.
    pub key: String,
    /// A session with this key is logged in now.
    #[serde(default)]
    pub online: bool,
    /// Base64 device vouches FOR this key, by other keys of the same user (only to a client
    /// that asked for the `vouch` feature; omitted when empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vouches: Vec<String>,
}

/// What happened to a device key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceEvent {
    /// A session with this device key logged in (and no other one had it online).
    Online,
    /// The last session with this device key ended; messages for it are stored meanwhile.
    Offline,
    /// The key was revoked or its account deleted: encrypt nothing more to it.
    Removed,
}

/// A room as its members see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomState {
    /// Name, without the `#`.
    pub name: String,
    /// Topic (empty: none).
    #[serde(default)]
    pub topic: String,
    /// Members, sorted (online or not).
    pub members: Vec<String>,
    /// Joining needs an invitation.
    #[serde(default)]
    pub invite_only: bool,
    /// Who created it (None for the default room, or when that account is gone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

/// One room in `/rooms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomSummary {
    /// Name, without the `#`.
    pub name: String,
    /// Number of members.
    pub members: u32,
    /// Topic (empty: none).
    #[serde(default)]
    pub topic: String,
    /// Joining needs an invitation.
    #[serde(default)]
    pub invite_only: bool,
    /// The asking user is a member.
    #[serde(default)]
    pub joined: bool,
}

/// What happened to a room's membership.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RoomEvent {
    /// The user joined.
    Join,
    /// The user left.
    Part,
    /// The user was removed by the room's owner or an admin (`by`).
    Kick,
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
        /// Seconds of silence after which the server closes a connection (0: never); clients
        /// send `ping` well within it.
        #[serde(default)]
        idle_timeout_secs: u64,
        /// The client asked for binary envelope frames and gets them: from now on the server
        /// sends live envelopes as binary frames and accepts binary `send` frames.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        binary: bool,
        /// How long the server keeps a line stored for an offline device, in seconds (its
        /// `offline_ttl_secs`); absent from an older server, which keeps them 604800 s.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        offline_ttl_secs: Option<u64>,
        /// The features the client asked for that the server supports (absent from an old
        /// server).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        features: Vec<String>,
        /// With [`FEATURE_KEYPROOF`]: base64 of 32 random bytes, new for each connection, for
        /// the client's `login` `proof`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        challenge: Option<String>,
    },
    /// Login succeeded.
    LoginOk {
        /// The account now logged in.
        user: String,
        /// This session's id (unique while the server runs).
        session: u64,
        /// This session's device key fingerprint, as registered.
        device: Fingerprint,
        /// Users online now, this one included.
        online: Vec<String>,
        /// Every registered device key, online or not, this session's included.
        devices: Vec<DeviceInfo>,
        /// The default room (where a client's plain text goes first), without the `#`.
        #[serde(default)]
        room: String,
        /// The rooms this user is in, with their members.
        #[serde(default)]
        rooms: Vec<RoomState>,
    },
    /// Someone joined or left a room (sent to its members, and to that user).
    Room {
        /// The room, without the `#`.
        room: String,
        /// Who joined or left.
        user: String,
        /// What happened.
        event: RoomEvent,
        /// For a kick: who did it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<String>,
    },
    /// A room's full state: answer to `/members`, and sent to a user who joins.
    Members {
        /// The room.
        room: RoomState,
    },
    /// A room's topic changed (sent to its members).
    Topic {
        /// The room, without the `#`.
        room: String,
        /// The new topic (empty: cleared).
        topic: String,
        /// Who set it.
        by: String,
    },
    /// Answer to `/rooms`: public rooms and the caller's own, sorted by name.
    Rooms {
        /// The rooms.
        rooms: Vec<RoomSummary>,
    },
    /// Ends a batch of messages stored while this device was offline (sent after `login_ok`,
    /// before anything live). Answer with `backlog_ack {upto}` once they are shown.
    Backlog {
        /// Acknowledge with this value.
        upto: u64,
        /// Messages in this batch.
        count: u32,
        /// Another batch follows.
        more: bool,
    },
    /// The sender's message was stored durably for these members who are offline; it
    /// reaches them at their next login.
    Held {
        /// The envelope's message id, hex.
        message: String,
        /// The envelope's conversation (`all` or a sorted pair).
        conversation: String,
        /// Users whose devices (some or all) were offline.
        users: Vec<String>,
    },
    /// An end-to-end envelope from `from`'s device `device` (as the server authenticated it).
    Envelope {
        /// Sending user.
        from: String,
        /// Sending device's key fingerprint.
        device: Fingerprint,
        /// Base64 of the envelope bytes, exactly as sent.
        data: String,
        /// Server receive time, milliseconds since the Unix epoch.
        ts: u64,
    },
    /// A wrapped sender chain addressed to this device.
    Chain {
        /// Sending user.
        from: String,
        /// Sending device's key fingerprint.
        device: Fingerprint,
        /// Base64 of the wrapped-chain bytes, exactly as sent.
        data: String,
    },
    /// `from`'s device `device` could not open an envelope of this device's chain `chain`
    /// in `conversation` from `index` on, and asks for the chain again.
    Rekey {
        /// The asking user.
        from: String,
        /// The asking device's key fingerprint, as the server authenticated it.
        device: Fingerprint,
        /// The envelope's conversation.
        conversation: String,
        /// The chain id, 32 lowercase hex digits.
        chain: String,
        /// The first index that could not be opened.
        index: u32,
    },
    /// A device key came online, went offline or was removed.
    Device {
        /// Owner.
        user: String,
        /// The key's fingerprint.
        fingerprint: Fingerprint,
        /// Base64 SPKI DER; present when the device comes online.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        key: Option<String>,
        /// What happened.
        event: DeviceEvent,
        /// With `online`, to a client that asked for the `vouch` feature: the stored vouches
        /// for this key (base64; omitted when empty).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        vouches: Vec<String>,
    },
    /// A device vouch was stored (to clients that asked for the `vouch` feature).
    Vouch {
        /// The user both devices belong to, as the server checked it.
        user: String,
        /// Base64 of the vouch bytes, exactly as sent.
        data: String,
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
    /// Answer to `/whois USER`.
    Whois {
        /// The user asked about.
        user: String,
        /// Sessions logged in now (0: offline).
        sessions: u32,
        /// Away message, if set.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        away: Option<String>,
        /// Has the admin role.
        admin: bool,
        /// Registered, unrevoked device keys.
        devices: Vec<WhoisDevice>,
        /// Rooms the user is in that the asker may see (not invite-only, or shared), sorted.
        #[serde(default)]
        rooms: Vec<String>,
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
    /// An envelope or wrapped chain that does not decode, names another sender, or names an
    /// unknown conversation.
    BadEnvelope,
    /// The login's device key is not an acceptable RSA public key.
    BadDeviceKey,
    /// The login's device key was revoked by an administrator.
    KeyRevoked,
    /// The account already has `max_devices_per_user` device keys.
    TooManyDevices,
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
    /// More messages or commands per second than the server's rate limit; the frame was
    /// dropped. Persistent flooding ends the session.
    RateLimited,
    /// The server failed; details are in its log, never in the frame.
    Internal,
    /// A message or command for a room the user is not in (or that does not exist).
    NotInRoom,
    /// A command was refused for a reason the message gives (a limit, an invitation needed).
    Refused,
    /// An external plugin command failed (timed out, crashed, missing, bad reply).
    PluginFailed,
    /// A recipient's offline queue is full (`offline_queue_max`); the message was not stored
    /// for them.
    OfflineQueueFull,
}

/// The longest `send` line (newline excluded) for an envelope of `text_bytes` of plaintext:
/// a server's `max_line_bytes` must be at least this for its own `max_text_bytes`.
pub const fn max_send_line_bytes(text_bytes: usize) -> usize {
    let envelope = crate::e2e::max_envelope_bytes(text_bytes);
    4 * envelope.div_ceil(3) + r#"{"type":"send","data":""}"#.len()
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
        let f: ClientFrame =
            decode(r#"{"type":"login","user":"a","password":"p","device_key":"AAAA"}"#).unwrap();
        assert_eq!(
            f,
            ClientFrame::Login {
                user: "a".into(),
                password: "p".into(),
                device_key: "AAAA".into(),
                proof: None,
            }
        );
        let f: ClientFrame = decode(
            r#"{"type":"login","user":"a","password":"p","device_key":"AAAA","proof":"AQI="}"#,
        )
        .unwrap();
        assert!(matches!(f, ClientFrame::Login { proof: Some(p), .. } if p == "AQI="));
        // The old plaintext frame is gone: text only travels sealed.
        assert!(decode::<ClientFrame>(r#"{"type":"say","text":"hi"}"#).is_err());
        let f: ClientFrame = decode(r#"{"type":"command","name":"list"}"#).unwrap();
        assert_eq!(
            f,
            ClientFrame::Command {
                name: "list".into(),
                args: String::new(),
                room: None,
            }
        );
        assert_eq!(
            decode::<ClientFrame>(r#"{"type":"quit"}"#).unwrap(),
            ClientFrame::Quit
        );
        assert!(decode::<ClientFrame>(r#"{"type":"nope"}"#).is_err());
        let f: ClientFrame = decode(r#"{"type":"vouch","data":"AVY="}"#).unwrap();
        assert_eq!(f.kind(), "vouch");
        let f: ClientFrame =
            decode(r#"{"type":"hello","version":2,"features":["vouch","later"]}"#).unwrap();
        assert!(matches!(f, ClientFrame::Hello { features, .. } if features == ["vouch", "later"]));
        // An old client's hello has no features, and one without any writes none.
        let f: ClientFrame = decode(r#"{"type":"hello","version":2}"#).unwrap();
        assert!(
            !String::from_utf8(encode(&f).unwrap().to_vec())
                .unwrap()
                .contains("features")
        );
        assert!(decode::<ClientFrame>(r#"[1,2]"#).is_err());
    }

    #[test]
    fn debug_never_shows_secrets_or_text() {
        let f = ClientFrame::Login {
            user: "alice".into(),
            password: "hunter2".into(),
            device_key: "AAAA".into(),
            proof: Some("cHJvb2Y=".into()),
        };
        assert!(!format!("{f:?}").contains("cHJvb2Y="));
        assert!(!format!("{f:?}").contains("hunter2"));
        let f = ClientFrame::Send {
            data: "c2VjcmV0".into(),
        };
        assert!(!format!("{f:?}").contains("c2VjcmV0"));
    }

    #[test]
    fn the_send_line_bound_holds_for_the_largest_envelope() {
        use crate::e2e::{SenderChain, seal};
        // The bound is computed for RSA-4096; a 2048-bit signature is smaller, so check the
        // formula's parts against a real envelope with the sizes swapped in.
        let key = crate::e2e::testkeys::alice();
        let user = "u".repeat(32);
        let conv = format!("{user},{}", "v".repeat(32));
        let text = "t".repeat(1000);
        let mut chain = SenderChain::new().unwrap();
        let env = seal(key, &user, &conv, &mut chain, &text, 1).unwrap();
        let bytes = env.encode().unwrap().len();
        let sig_gap = crate::e2e::MAX_SIGNATURE_BYTES - key.bits() / 8;
        assert_eq!(bytes + sig_gap, crate::e2e::max_envelope_bytes(1000));
        let line = encode(&ClientFrame::Send {
            data: env.to_base64().unwrap(),
        })
        .unwrap();
        assert!(line.len() - 1 <= max_send_line_bytes(1000));
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
