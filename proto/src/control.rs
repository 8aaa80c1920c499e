//! Messages on chatd's Unix control socket, spoken by `chatctl`.
//!
//! One request line, one response line, then either side may send another request
//! on the same connection. Requests and responses are JSON objects tagged by `"type"`.
//!
//! ```text
//! > {"type":"user_add","user":"alice","password":"...","admin":false}
//! < {"type":"done","message":"user alice added"}
//! > {"type":"who"}
//! < {"type":"sessions","sessions":[{"id":3,"user":"alice","peer":"127.0.0.1:5000","since":1764300000}]}
//! ```

use serde::{Deserialize, Serialize};

use crate::fingerprint::Fingerprint;

/// The longest ban `kick` takes (`ban_secs`): 3650 days.
pub const MAX_BAN_SECS: u64 = 3_650 * 86_400;

/// Longest control line either side accepts.
pub const MAX_CONTROL_LINE: usize = 64 * 1024;

/// A request from chatctl.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ControlRequest {
    /// Server version, uptime, listener, certificate fingerprint, session count.
    Status,
    /// Create an account.
    UserAdd {
        /// New user name.
        user: String,
        /// Initial password (hashed by chatd with argon2id).
        password: String,
        /// Give the account the admin role.
        #[serde(default)]
        admin: bool,
    },
    /// Delete an account and end its sessions.
    UserDel {
        /// Account to delete.
        user: String,
    },
    /// Set a new password.
    UserPasswd {
        /// Account.
        user: String,
        /// New password.
        password: String,
    },
    /// Refuse further logins and end current sessions.
    UserLock {
        /// Account.
        user: String,
    },
    /// Allow logins again.
    UserUnlock {
        /// Account.
        user: String,
    },
    /// List accounts.
    UserList,
    /// List sessions online.
    Who,
    /// End every session of a user; with `ban_secs`, also refuse the account's logins for
    /// that long (stored: a restart keeps it).
    Kick {
        /// Account whose sessions to end.
        user: String,
        /// Shown to the user and to others.
        #[serde(default)]
        reason: Option<String>,
        /// Refuse logins for this many seconds (at least 1).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ban_secs: Option<u64>,
    },
    /// Lift a ban (`kick` with `ban_secs`) before it expires.
    Unban {
        /// Account.
        user: String,
    },
    /// A notice to everyone online.
    Say {
        /// The announcement.
        text: String,
    },
    /// List registered device keys, of one user or of all.
    KeyList {
        /// Only this account's keys.
        #[serde(default)]
        user: Option<String>,
    },
    /// Revoke a device key: its sessions end and it can no longer log in.
    KeyRevoke {
        /// Owner of the key.
        user: String,
        /// The key's fingerprint.
        fingerprint: Fingerprint,
    },
    /// Re-read the configuration file and the TLS certificate and key (like SIGHUP).
    Reload,
    /// The metrics as OpenMetrics text, as `[metrics] listen` serves them (which need not be
    /// on).
    Metrics,
}

impl ControlRequest {
    /// The account a request is about, if any; chatd validates it before anything else.
    pub fn user(&self) -> Option<&str> {
        match self {
            ControlRequest::UserAdd { user, .. }
            | ControlRequest::UserDel { user }
            | ControlRequest::UserPasswd { user, .. }
            | ControlRequest::UserLock { user }
            | ControlRequest::UserUnlock { user }
            | ControlRequest::Kick { user, .. }
            | ControlRequest::Unban { user }
            | ControlRequest::KeyRevoke { user, .. } => Some(user),
            ControlRequest::KeyList { user } => user.as_deref(),
            ControlRequest::Status
            | ControlRequest::UserList
            | ControlRequest::Who
            | ControlRequest::Say { .. }
            | ControlRequest::Reload
            | ControlRequest::Metrics => None,
        }
    }
}

impl std::fmt::Debug for ControlRequest {
    // Hand-written so passwords never reach a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ControlRequest::UserAdd { user, admin, .. } => f
                .debug_struct("UserAdd")
                .field("user", user)
                .field("admin", admin)
                .finish_non_exhaustive(),
            ControlRequest::UserPasswd { user, .. } => f
                .debug_struct("UserPasswd")
                .field("user", user)
                .finish_non_exhaustive(),
            ControlRequest::UserDel { user } => write!(f, "UserDel({user:?})"),
            ControlRequest::UserLock { user } => write!(f, "UserLock({user:?})"),
            ControlRequest::UserUnlock { user } => write!(f, "UserUnlock({user:?})"),
            ControlRequest::Kick {
                user,
                reason,
                ban_secs,
            } => f
                .debug_struct("Kick")
                .field("user", user)
                .field("reason", reason)
                .field("ban_secs", ban_secs)
                .finish(),
            ControlRequest::Unban { user } => write!(f, "Unban({user:?})"),
            ControlRequest::KeyList { user } => write!(f, "KeyList({user:?})"),
            ControlRequest::Say { text } => f
                .debug_struct("Say")
                .field("text_bytes", &text.len())
                .finish(),
            ControlRequest::KeyRevoke { user, fingerprint } => f
                .debug_struct("KeyRevoke")
                .field("user", user)
                .field("fingerprint", fingerprint)
                .finish(),
            ControlRequest::Status => f.write_str("Status"),
            ControlRequest::UserList => f.write_str("UserList"),
            ControlRequest::Who => f.write_str("Who"),
            ControlRequest::Reload => f.write_str("Reload"),
            ControlRequest::Metrics => f.write_str("Metrics"),
        }
    }
}

/// The server's answer to one request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ControlResponse {
    /// The change is made (and durable).
    Done {
        /// What was done, for people.
        message: String,
    },
    /// Answer to `status`.
    Status(StatusInfo),
    /// Answer to `user_list`.
    Users {
        /// Every account, sorted by name.
        users: Vec<UserInfo>,
    },
    /// Answer to `who`.
    Sessions {
        /// Every session, oldest first (in a cluster: this node's, then each other's).
        sessions: Vec<SessionInfo>,
        /// Nodes of the cluster that did not answer in time (their sessions are missing).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        unanswered: Vec<String>,
    },
    /// Answer to `key_list`.
    Keys {
        /// Matching keys, by user then registration time.
        keys: Vec<KeyInfo>,
    },
    /// Answer to `metrics`.
    Metrics {
        /// OpenMetrics text, ending in `# EOF`.
        text: String,
    },
    /// The request failed.
    Error {
        /// Stable code.
        code: ControlErrorCode,
        /// For people.
        message: String,
    },
}

/// Stable control error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ControlErrorCode {
    /// The peer is neither root nor in the admin group.
    PermissionDenied,
    /// The request was not understood.
    BadRequest,
    /// A user name or password was refused.
    InvalidArgument,
    /// No such user.
    NoSuchUser,
    /// The user already exists.
    UserExists,
    /// The user has no device key with that fingerprint.
    NoSuchKey,
    /// A reload was refused (the new configuration or certificate is invalid); the old stays.
    ReloadFailed,
    /// The server failed (see its log).
    Internal,
    /// The database cannot take the change now (disk full, or locked by another process);
    /// nothing was changed, and the same request may succeed later.
    StorageUnavailable,
}

/// Server state, as shown by `chatctl status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusInfo {
    /// chatd version.
    pub version: String,
    /// Seconds since start.
    pub uptime_secs: u64,
    /// Address the TLS listener is bound to.
    pub listen: String,
    /// The TLS certificate's fingerprint.
    pub cert_fingerprint: Fingerprint,
    /// Sessions logged in.
    pub sessions: usize,
    /// Distinct users online.
    pub users_online: usize,
    /// Accounts in the database.
    pub accounts: usize,
    /// Messages (and keys) stored for offline devices, each counted once.
    #[serde(default)]
    pub offline_stored: u64,
    /// Deliveries waiting: one per stored message and device it is for.
    #[serde(default)]
    pub offline_queued: u64,
    /// Which store holds the state (`sqlite path=…`, `postgresql node=… database=…`, never a
    /// password); empty from a chatd older than this field.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub store: String,
    /// The cluster's nodes this node hears, itself first (`[cluster] nats`); empty on one
    /// node and from a chatd older than this field.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<NodeInfo>,
}

/// A node of a cluster in `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// `[cluster] node`.
    pub name: String,
    /// Milliseconds since it was last heard (0: the node answering).
    pub heard_ms: u64,
}

/// One account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserInfo {
    /// Name.
    pub user: String,
    /// Has the admin role.
    pub admin: bool,
    /// Logins refused.
    pub locked: bool,
    /// Creation time, seconds since the Unix epoch.
    pub created: u64,
    /// Sessions online now.
    pub sessions: usize,
    /// Logins refused until then (`kick` with `ban_secs`), seconds since the Unix epoch;
    /// absent when there is no ban in force.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub banned_until: Option<u64>,
}

/// One registered device key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyInfo {
    /// Owner.
    pub user: String,
    /// SHA-256 of the SPKI DER.
    pub fingerprint: Fingerprint,
    /// RSA modulus size.
    pub bits: u32,
    /// First login with this key, seconds since the Unix epoch.
    pub created: u64,
    /// Latest login with this key, seconds since the Unix epoch.
    pub last_seen: u64,
    /// When it was revoked, if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked: Option<u64>,
    /// Sessions online with this key now.
    pub sessions: usize,
}

/// One logged-in session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionInfo {
    /// Session id.
    pub id: u64,
    /// Account.
    pub user: String,
    /// Remote address.
    pub peer: String,
    /// The session's device key fingerprint.
    pub device: Fingerprint,
    /// Login time, seconds since the Unix epoch.
    pub since: u64,
    /// The node it is on, in a cluster (`[cluster] node`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{decode, encode};

    #[test]
    fn requests_round_trip_and_hide_passwords() {
        let r = ControlRequest::UserAdd {
            user: "alice".into(),
            password: "pw-secret".into(),
            admin: false,
        };
        let line = encode(&r).unwrap();
        let text = std::str::from_utf8(&line).unwrap().trim_end();
        assert_eq!(decode::<ControlRequest>(text).unwrap(), r);
        assert!(!format!("{r:?}").contains("pw-secret"));
        assert_eq!(
            decode::<ControlRequest>(r#"{"type":"who"}"#).unwrap(),
            ControlRequest::Who
        );
    }
}
