//! Messages between chatd and an external plugin command (`[[plugins]]`, docs/PLUGINS.md).
//!
//! chatd runs the program once per call, writes one request object on its stdin, then end
//! of file, and reads one reply object from its stdout. chatd and the example plugins
//! (`plugins/`) both use these types, so the two sides cannot drift apart.
//!
//! ```text
//! > {"version":1,"command":"dice","args":"2d6","user":"alice","role":"user","room":"dev","server":"chatd/0.1.0"}
//! < {"text":"alice rolls 2d6: 3 + 5 = 8","to":"room"}
//! ```

use serde::{Deserialize, Serialize};

/// Version of the request/reply format, sent in every request.
pub const PLUGIN_PROTOCOL_VERSION: u32 = 1;

/// What chatd writes on a plugin's stdin: one call of its command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginRequest {
    /// Format version, [`PLUGIN_PROTOCOL_VERSION`]; a plugin refuses what it does not know.
    pub version: u32,
    /// The command name as configured (one program can serve several names).
    pub command: String,
    /// Everything the user typed after the command, trimmed. Data, never code.
    #[serde(default)]
    pub args: String,
    /// The caller's account name.
    pub user: String,
    /// The caller's role. chatd always sends it; a plugin reading a request without it
    /// takes the lesser role.
    #[serde(default)]
    pub role: PluginRole,
    /// The caller's current room (without `#`), checked to be one they are in; `null` when
    /// unknown.
    #[serde(default)]
    pub room: Option<String>,
    /// chatd's name and version (`chatd/0.1.0`); chatd always sends it.
    #[serde(default)]
    pub server: String,
}

/// The caller's role, as a plugin sees it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PluginRole {
    /// Any logged-in user.
    #[default]
    User,
    /// An account with the admin flag.
    Admin,
    /// A role this library does not know (a newer chatd's): read, so that such a request is
    /// still answered, and never sent.
    #[serde(other, skip_serializing)]
    Unknown,
}

/// What a plugin writes on stdout. Unknown fields are an error, to catch typos.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginReply {
    /// What to show, as a notice.
    pub text: String,
    /// Who sees it; the caller when absent.
    #[serde(default)]
    pub to: ReplyTo,
}

impl PluginReply {
    /// A reply for the caller only.
    pub fn caller(text: impl Into<String>) -> Self {
        PluginReply {
            text: text.into(),
            to: ReplyTo::Caller,
        }
    }

    /// A reply for the caller's current room (if the server allows it for this plugin).
    pub fn room(text: impl Into<String>) -> Self {
        PluginReply {
            text: text.into(),
            to: ReplyTo::Room,
        }
    }
}

/// Where a reply goes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplyTo {
    /// Only the caller (the default).
    #[default]
    Caller,
    /// The members of the caller's current room, if the plugin's config allows it and the
    /// room is known; otherwise the caller alone.
    Room,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(v: &impl Serialize) -> String {
        serde_json::to_string(v).unwrap()
    }

    #[test]
    fn request_json_is_pinned() {
        // The example in docs/PLUGINS.md, byte for byte.
        let mut r = PluginRequest {
            version: PLUGIN_PROTOCOL_VERSION,
            command: "weather".into(),
            args: "Paris; rm -rf /".into(),
            user: "alice".into(),
            role: PluginRole::User,
            room: Some("dev".into()),
            server: "chatd/0.1.0".into(),
        };
        let doc = r#"{"version":1,"command":"weather","args":"Paris; rm -rf /","user":"alice","role":"user","room":"dev","server":"chatd/0.1.0"}"#;
        assert_eq!(json(&r), doc);
        assert_eq!(serde_json::from_str::<PluginRequest>(doc).unwrap(), r);
        // An unknown room is sent as null, not left out.
        (r.role, r.room) = (PluginRole::Admin, None);
        assert_eq!(
            json(&r),
            r#"{"version":1,"command":"weather","args":"Paris; rm -rf /","user":"alice","role":"admin","room":null,"server":"chatd/0.1.0"}"#
        );
    }

    #[test]
    fn request_parsing_is_lenient() {
        // What a plugin needs is all it requires; fields it does not know are ignored.
        let r: PluginRequest =
            serde_json::from_str(r#"{"version":1,"command":"dice","user":"bob","new":true}"#)
                .unwrap();
        assert_eq!(
            r,
            PluginRequest {
                version: 1,
                command: "dice".into(),
                args: String::new(),
                user: "bob".into(),
                role: PluginRole::User,
                room: None,
                server: String::new(),
            }
        );
        // A role a newer chatd may send is read, not refused.
        let r: PluginRequest = serde_json::from_str(
            r#"{"version":1,"command":"dice","user":"bob","role":"room_owner"}"#,
        )
        .unwrap();
        assert_eq!(r.role, PluginRole::Unknown);
    }

    #[test]
    fn reply_json_is_pinned() {
        assert_eq!(
            json(&PluginReply::caller("Paris: 18 °C")),
            r#"{"text":"Paris: 18 °C","to":"caller"}"#
        );
        assert_eq!(
            json(&PluginReply::room("alice rolls 1d6: 4")),
            r#"{"text":"alice rolls 1d6: 4","to":"room"}"#
        );
        let parse = serde_json::from_str::<PluginReply>;
        assert_eq!(
            parse(r#"{"text":"pong from a plugin"}"#).unwrap(),
            PluginReply::caller("pong from a plugin")
        );
        assert_eq!(
            parse(r#"{"text":"x","to":"room"}"#).unwrap(),
            PluginReply::room("x")
        );
        for bad in [
            r#"{"text":"x","to":"everyone"}"#,
            r#"{"text":"x","too":"room"}"#,
            r#"{"to":"room"}"#,
            r#"{"text":1}"#,
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
