//! The values the store's interface takes and returns, the same for every backend.

use bytes::Bytes;

/// What login needs to know about an account.
#[derive(Debug, Clone)]
pub struct Credentials {
    /// PHC string (argon2id).
    pub password_hash: String,
    /// Logins refused.
    pub locked: bool,
    /// Has the admin role.
    pub admin: bool,
    /// Logins refused until then (seconds since the epoch), if ever banned.
    pub banned_until: Option<i64>,
}

impl Credentials {
    /// Seconds of the ban left at `now`, if one is in force.
    pub fn ban_left(&self, now: i64) -> Option<u64> {
        ban_left(self.banned_until, now)
    }
}

/// Seconds of a ban ending at `until` left at `now`, if any.
pub fn ban_left(until: Option<i64>, now: i64) -> Option<u64> {
    until
        .filter(|&t| t > now)
        .map(|t| t.saturating_sub(now) as u64)
}

/// One account, as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRow {
    /// Name.
    pub name: String,
    /// Has the admin role.
    pub admin: bool,
    /// Logins refused.
    pub locked: bool,
    /// Seconds since the epoch.
    pub created_at: u64,
    /// Logins refused until then (seconds since the epoch), if ever banned.
    pub banned_until: Option<i64>,
}

/// How a login's device key relates to what the account has registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyCheck {
    /// Known and not revoked; `last_seen` updated.
    Known,
    /// Newly registered.
    Registered,
    /// Revoked by an administrator.
    Revoked,
    /// The account is at its device limit.
    TooMany,
}

/// One registered device key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRow {
    /// Owner.
    pub user: String,
    /// SHA-256 of `spki`.
    pub fingerprint: [u8; 32],
    /// Modulus size.
    pub bits: u32,
    /// Seconds since the epoch.
    pub created_at: u64,
    /// Seconds since the epoch.
    pub last_seen: u64,
    /// Seconds since the epoch, if revoked.
    pub revoked_at: Option<u64>,
}

/// An unrevoked key: (user, fingerprint, SPKI DER).
pub type ActiveKey = (String, [u8; 32], Vec<u8>);

/// A stored vouch: (user, vouched fingerprint, voucher fingerprint, the vouch bytes).
pub type VouchRow = (String, [u8; 32], [u8; 32], Vec<u8>);

/// A room as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomRow {
    /// Name, without `#`.
    pub name: String,
    /// Topic (empty: none).
    pub topic: String,
    /// Joining needs an invitation.
    pub invite_only: bool,
    /// Creator, while that account exists.
    pub owner: Option<String>,
    /// Members, sorted.
    pub members: Vec<String>,
}

/// A device a stored line is for: (user, fingerprint).
pub type DeviceTarget = (String, [u8; 32]);

/// A line to store for devices that are offline.
#[derive(Debug, Clone)]
pub struct OfflineLine {
    /// The serialized frame, newline included, exactly as it will be delivered.
    pub line: Bytes,
    /// (user, device fingerprint) of each offline recipient.
    pub targets: Vec<DeviceTarget>,
    /// The sending account, whose share of each queue is capped (None: the server).
    pub sender: Option<String>,
}

/// What storing one [`OfflineLine`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Stored {
    /// Users for whom it was stored (each once, in target order).
    pub held: Vec<String>,
    /// Users with a device whose queue was full: not stored for that device.
    pub full: Vec<String>,
    /// Users with a device whose queue holds the sender's whole share: not stored for that
    /// device.
    pub over_share: Vec<String>,
}

impl Stored {
    /// Adds `user` to `list` unless it is there (a user's devices are counted once).
    pub(super) fn push_once(list: &mut Vec<String>, user: &str) {
        if !list.iter().any(|u| u == user) {
            list.push(user.to_string());
        }
    }
}

/// How many lines each offline queue may hold.
#[derive(Debug, Clone, Copy)]
pub struct Caps {
    /// Lines one device's queue holds at most.
    pub total: usize,
    /// Lines of one sender one device's queue holds at most.
    pub per_sender: usize,
}

/// How much one page of a replay reads at most.
#[derive(Debug, Clone, Copy)]
pub struct PageSize {
    /// Lines.
    pub lines: usize,
    /// Bytes of lines; a page holds at least one line however long.
    pub bytes: usize,
}

/// One page of stored lines: (queue id, line) each, oldest first, and whether more follow.
pub type Page = (Vec<(i64, Bytes)>, bool);
