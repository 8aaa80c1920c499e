//! What the end-to-end layer has to show the user, as typed values: verified messages,
//! notices and warnings about keys and rooms, and why something was refused.
//!
//! Names are kept as they came from the network; whoever renders these sanitizes them.

use chatd_proto::Fingerprint;
use chatd_proto::e2e::E2eError;

use crate::peers::KeyStatus;

/// Something to show the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A message that verified and decrypted (or our own, confirmed by the server's echo).
    Message(ChatMessage),
    /// Information (`-- ...`).
    Notice(Notice),
    /// Something is wrong or needs the user's attention (`!! ...`).
    Warning(Warning),
}

/// Information about keys and rooms. Names are as they came (unsanitized).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// A user met for the first time: the keys listed for them were pinned (trust on first
    /// use), before anything is sealed to them.
    NewUser {
        /// Who.
        user: String,
        /// Their keys as listed.
        fingerprints: Vec<Fingerprint>,
        /// The default room, now also encrypted to them.
        room: String,
    },
    /// A new key of `user` was vouched for by `by`, one of theirs we already trust: used now.
    KeyVouched {
        /// Its owner.
        user: String,
        /// The key.
        fingerprint: Fingerprint,
        /// The device that vouched for it.
        by: Fingerprint,
    },
    /// This device is not approved by the account's other devices yet: the code to approve it.
    NotApproved {
        /// `FIRST16HEX-SECRET`.
        code: String,
    },
    /// One of our devices approved this one (with its code): we trust it in return.
    Approved {
        /// The device that approved this one.
        by: Fingerprint,
    },
    /// `/devices approve`: our device `fingerprint` is approved here and a vouch was sent.
    DeviceApproved {
        /// The device approved.
        fingerprint: Fingerprint,
    },
    /// `/devices revoke`: the server was asked to revoke our device `fingerprint`.
    RevokeAsked {
        /// The device.
        fingerprint: Fingerprint,
    },
    /// `/devices`: the heading of the list of our account's keys.
    DevicesOf {
        /// The logged-in user.
        me: String,
    },
    /// `/devices`: one of our account's keys.
    OwnDevice {
        /// The key.
        fingerprint: Fingerprint,
        /// How far it is trusted here.
        status: KeyStatus,
        /// A session with it is logged in now.
        online: bool,
        /// It is this device.
        this: bool,
    },
    /// `/fingerprint`: this device's key.
    OwnKey {
        /// The logged-in user.
        me: String,
        /// This device's key.
        fingerprint: Fingerprint,
        /// Its RSA size.
        bits: usize,
    },
    /// `/verify USER`: no key of theirs is pinned.
    NonePinned {
        /// Who was asked about.
        user: String,
    },
    /// `/verify USER`: the heading of the list of their keys.
    KeysOf {
        /// Whose keys follow.
        user: String,
    },
    /// `/verify USER`: one of their pinned keys.
    Key {
        /// The key.
        fingerprint: Fingerprint,
        /// How far it is trusted.
        status: KeyStatus,
        /// A session with it is logged in now.
        online: bool,
    },
    /// `/verify USER FINGERPRINT` matched one of their keys: it is now verified.
    Verified {
        /// Its owner.
        user: String,
        /// The key.
        fingerprint: Fingerprint,
    },
    /// The answer to our `/ping`, after this long (µs).
    Pong {
        /// Round trip in microseconds.
        micros: u64,
    },
    /// `/ignore` alone: who is ignored.
    Ignoring {
        /// The names, sorted.
        users: Vec<String>,
    },
    /// `/ignore USER` or `/unignore USER` done (or there was nothing to do).
    IgnoreChanged {
        /// Who.
        user: String,
        /// Ignored now.
        ignored: bool,
        /// The list changed.
        changed: bool,
    },
    /// `/trust USER` with no key of theirs pending.
    NonePending {
        /// Who was asked about.
        user: String,
    },
    /// `/trust USER` accepted this key.
    Accepted {
        /// Its owner.
        user: String,
        /// The key.
        fingerprint: Fingerprint,
    },
    /// `/join` of a room this user is already in: plain text goes there now.
    Switched {
        /// The room (without `#`).
        room: String,
    },
    /// This user joined `room`, which became the current room.
    Joined {
        /// The room (without `#`).
        room: String,
        /// Where `/join` goes back to.
        default_room: String,
    },
    /// `user`'s device could not open our messages in `conversation`; it was given our
    /// chain again (said once per device and chain).
    KeyGivenAgain {
        /// The asking user.
        user: String,
        /// Their device.
        fingerprint: Fingerprint,
        /// Where.
        conversation: String,
    },
    /// `user`'s device could not open a message of ours whose chain this client no longer
    /// holds (it was restarted, or the chain is long replaced).
    KeyGone {
        /// The asking user.
        user: String,
        /// Their device.
        fingerprint: Fingerprint,
        /// Where.
        conversation: String,
    },
    /// A message from `user` came before its chain; their device was asked for it, and the
    /// message is shown when it comes (said once per chain).
    AskedForKey {
        /// The sender.
        user: String,
        /// The sending device.
        fingerprint: Fingerprint,
        /// Where.
        conversation: String,
    },
    /// Lines typed after `/join` wait for its answer (said once per join).
    JoinWaiting {
        /// The room asked for (without `#`).
        room: String,
    },
    /// Stored messages delivered again that this device had shown already were skipped.
    AlreadyShown {
        /// How many.
        count: u32,
    },
    /// The lines that follow come from the local history file, not from the server.
    HistoryStart {
        /// How many.
        lines: usize,
        /// The time of the first, ms since the Unix epoch.
        since: u64,
    },
    /// The lines from the local history file end here.
    HistoryEnd,
    /// `/history`: whether lines are kept, where, and how many are.
    HistoryStatus {
        /// Lines are kept.
        enabled: bool,
        /// The file.
        path: String,
        /// Lines in it.
        lines: usize,
    },
    /// `/history clear` deleted the file.
    HistoryCleared {
        /// The file.
        path: String,
    },
}

/// Something wrong, or a key that needs the user's decision. Names are as they came.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Warning {
    /// The server announced a key that does not hash to its fingerprint; it was ignored.
    KeyMismatch {
        /// Whose it was said to be.
        user: String,
        /// The fingerprint announced with it.
        fingerprint: Fingerprint,
    },
    /// A key of another user that no trusted key of theirs vouched for, first met or first
    /// mattering: nothing is sealed to it, what it sends is held. Said once per key.
    PendingKey {
        /// Its owner.
        user: String,
        /// The key.
        fingerprint: Fingerprint,
    },
    /// A key on our own account that none of our devices approved: never sealed to.
    UnapprovedOwnDevice {
        /// The key.
        fingerprint: Fingerprint,
    },
    /// This device is new (not approved yet) and the server lists another key on our account:
    /// our other device, or one that is not ours. Never sealed to.
    OtherOwnDevice {
        /// The key.
        fingerprint: Fingerprint,
    },
    /// The server announced a key that was revoked: it stays revoked.
    RevokedKeyAnnounced {
        /// Its owner.
        user: String,
        /// The key.
        fingerprint: Fingerprint,
    },
    /// A device vouch was refused.
    VouchRefused {
        /// The user the server named.
        user: String,
        /// Why.
        why: VouchRefusal,
    },
    /// Too much is held from pending keys: this frame from `user` was dropped.
    HeldFull {
        /// The sender.
        user: String,
    },
    /// The file of held frames and the link secret could not be written.
    PendingNotSaved {
        /// The error with its causes (`{:#}`).
        error: String,
    },
    /// `/devices approve|revoke` named no device of ours, or several.
    NoSuchDevice {
        /// What was given.
        given: String,
        /// More than one device matched.
        ambiguous: bool,
    },
    /// `/devices approve|revoke` named this device.
    ThisDevice,
    /// `/trust` of one's own name: own devices are approved with `/devices approve`.
    TrustOwn,
    /// `/devices approve` with a server that does not take device vouches.
    ServerTooOld,
    /// `/devices approve`: the vouch could not be made.
    VouchNotMade {
        /// What failed.
        error: E2eError,
    },
    /// The pin file could not be written.
    PinsNotSaved {
        /// The error with its causes (`{:#}`), as text so that events stay comparable.
        error: String,
    },
    /// A wrapped chain was refused.
    KeyRejected {
        /// The sender the server named.
        from: String,
        /// Why.
        why: Refusal,
    },
    /// An envelope that does not even parse.
    Unreadable {
        /// The sender the server named; None for a binary frame, which names nobody.
        from: Option<String>,
        /// What is wrong with the bytes.
        error: E2eError,
    },
    /// An envelope was refused.
    Dropped {
        /// The sender (the server's, or for a binary frame the header's).
        from: String,
        /// Why.
        why: Refusal,
    },
    /// `/verify USER FINGERPRINT` with something that is not a fingerprint.
    NotAFingerprint,
    /// `/ignore` or `/unignore` did not take (or was not saved).
    Ignore {
        /// Why.
        why: String,
    },
    /// A typed fingerprint (prefix) that names no single key of `whose`.
    BadPrefix {
        /// What was typed.
        given: String,
        /// Whose keys it was matched against (`bob`, or `your devices`).
        whose: String,
        /// Why it names none.
        why: super::prefix::PrefixError,
    },
    /// Messages of a sender's chain never arrived before a later one (reported once per gap;
    /// one that comes after all is marked late).
    Missing {
        /// The sender.
        from: String,
        /// The signed conversation (`all`, a pair, or a room name).
        conversation: String,
        /// How many indexes were skipped.
        count: u32,
    },
    /// A chain under an id already held from that device, but not the same chain: ignored.
    ChainConflict {
        /// The sender the server named.
        from: String,
    },
    /// The state file could not be written: messages shown since may be shown again after a
    /// restart.
    StateNotSaved {
        /// The error with its causes (`{:#}`).
        error: String,
    },
    /// The history file cannot be read (another device key, not a history file, loose
    /// mode): it is neither read nor written this session.
    HistoryUnusable {
        /// The file.
        path: String,
        /// Why (`{:#}`).
        error: String,
    },
    /// Records of the history file did not open (damage, a cut-off end): they were dropped.
    HistoryDamaged {
        /// The file.
        path: String,
        /// How many records (a cut-off end counts as one).
        records: usize,
    },
    /// A line could not be added to the history file (said once until a write succeeds).
    HistoryNotSaved {
        /// The error with its causes (`{:#}`).
        error: String,
    },
    /// `/history clear` could not delete the file.
    HistoryNotCleared {
        /// The error.
        error: String,
    },
    /// `/verify USER FINGERPRINT` matched none of their keys.
    NoSuchKey {
        /// Who was asked about.
        user: String,
        /// The fingerprint given.
        fingerprint: Fingerprint,
    },
    /// A server frame names a user or room with a name no account or room can have (an
    /// invisible or look-alike character, say): the whole frame was ignored.
    BadName {
        /// The frame's type.
        frame: &'static str,
        /// The name as it came.
        name: String,
    },
    /// A `members` frame says we are in (or no longer in) a room without our asking: ignored.
    RosterNotAsked {
        /// The room (without `#`).
        room: String,
    },
    /// A `members` frame lists members of a room we are in that no `room` join announced:
    /// they were not added, and nothing is encrypted to them.
    UnannouncedMembers {
        /// The room (without `#`).
        room: String,
        /// Who (sorted).
        users: Vec<String>,
    },
    /// The server did not let us into `room`: the lines typed after `/join` were not sent.
    JoinRefused {
        /// The room asked for (without `#`).
        room: String,
        /// How many lines were dropped.
        dropped: usize,
    },
}

/// Why a received chain or envelope was not used; its sender is named beside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The chain does not parse.
    Unreadable(E2eError),
    /// The signed header names `signer`, not the sender the server named.
    SignedAs {
        /// The header's user.
        signer: String,
    },
    /// A chain for a conversation that does not include this user.
    ChainNotForUs {
        /// The header's conversation.
        conversation: String,
    },
    /// An envelope sent to a conversation that does not include this user.
    NotForUs {
        /// The header's conversation.
        conversation: String,
    },
    /// From a pinned key the user has not accepted.
    Unaccepted {
        /// The sender.
        user: String,
        /// The key.
        device: Fingerprint,
    },
    /// From a key that was revoked.
    Revoked {
        /// The key.
        device: Fingerprint,
    },
    /// From a key the server did not announce for the sender.
    Unannounced {
        /// The key.
        device: Fingerprint,
    },
    /// It claims to come from this device, which did not send it.
    NotSentHere,
    /// This device holds no receiver chain for it.
    NoChain,
    /// A cryptographic check failed.
    Check {
        /// Which.
        error: E2eError,
        /// The clock-skew window, for a stale timestamp.
        max_skew_ms: u64,
    },
    /// It opened, but its content is not a message body this client understands.
    NotAMessage,
}

/// Why a device vouch was not believed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VouchRefusal {
    /// It does not parse.
    Unreadable(E2eError),
    /// It is signed for `signed_user`, not the user the server named.
    OtherUser {
        /// The user in the signed vouch.
        signed_user: String,
    },
    /// The signature does not verify under the voucher key pinned for that user.
    BadSignature(E2eError),
    /// It vouches for this device with a code MAC that does not match this device's code.
    WrongCode,
}

/// Why sealing a message sent nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotSent {
    /// The body does not encode as JSON (the error's text).
    Body(String),
    /// Encoded, the body is over the server's limit.
    TooLong {
        /// Its encoded size.
        bytes: usize,
        /// The server's limit.
        max: usize,
    },
    /// A room this user is not in.
    NotInRoom {
        /// The room (without `#`).
        room: String,
    },
    /// The whisper's peer has keys, but none accepted.
    NoAcceptedKey {
        /// The peer.
        user: String,
    },
    /// The whisper's peer has no key at all.
    NoKey {
        /// The peer.
        user: String,
    },
    /// A new sender chain could not be made.
    Chain(E2eError),
    /// The sender chain just made is missing (cannot happen).
    NoChain,
    /// Our chain could not be wrapped for one of `user`'s devices.
    Wrap {
        /// The member.
        user: String,
        /// What failed.
        error: E2eError,
    },
    /// The envelope could not be sealed.
    Seal(E2eError),
    /// The envelope could not be encoded.
    Encode(E2eError),
}

/// A verified message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatMessage {
    /// Sender.
    pub from: String,
    /// For a whisper, the other member (from the sender's point of view: its peer).
    pub to: Option<String>,
    /// For a room other than the default one, its name (without `#`).
    pub room: Option<String>,
    /// Text.
    pub text: String,
    /// `/me` action.
    pub action: bool,
    /// When it was sent, ms since the Unix epoch: the sender's signed time (for our own
    /// echo, the server's).
    pub ts: u64,
    /// The sender's key was verified with `/verify`.
    pub verified: bool,
    /// It arrived after a later message of the same chain (reported missing before).
    pub late: bool,
    /// The server's time for it, when it disagrees with the signed one by more than the
    /// allowed clock skew.
    pub server_ts: Option<u64>,
}
