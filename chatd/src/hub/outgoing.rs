//! What the hub hands out: lines for sessions (one line for all, an envelope in both wire
//! forms, a run of envelopes as one entry, notices that may wait for a shared wake-up) and
//! jobs for the offline writer.

use bytes::Bytes;
use chatd_proto::Fingerprint;
use chatd_proto::frame;
use serde::Serialize;

/// Identifies a session while the server runs.
pub type SessionId = u64;

/// (user, device) of offline recipients, shared: the jobs of a run of messages to one room
/// (and the hub's cache of who is offline) hold one copy, so a full writer queue costs
/// little more than its lines.
pub type Targets = std::sync::Arc<[(String, Fingerprint)]>;

/// A line to store for devices that are offline, numbered in routing order.
#[derive(Debug)]
pub struct OfflineJob {
    /// 1, 2, 3, ... in the order the hub routed them.
    pub seq: u64,
    /// The serialized frame.
    pub line: Bytes,
    /// (user, device) of each offline recipient.
    pub targets: Targets,
    /// Who sent it (None: the server): its share of each queue is counted, and it is told
    /// when the line is refused.
    pub sender: Option<Sender>,
    /// Who to tell once it is stored.
    pub notify: Option<Notify>,
}

/// The sender of a line for offline devices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sender {
    /// Its account: `offline_queue_per_sender` counts per account.
    pub user: String,
    /// The sending session, told when the line is not stored.
    pub session: SessionId,
}

/// The sender of an envelope, to be told (`held`) once it is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notify {
    /// The sending session.
    pub session: SessionId,
    /// The envelope's message id, hex.
    pub message: String,
    /// The envelope's conversation name.
    pub conversation: String,
}

/// What the hub queues for sessions: one line for all, an envelope in both wire forms, or a
/// run of envelopes queued as one entry.
pub trait Outgoing {
    /// The bytes for a session that did (`true`) or did not negotiate binary envelope frames.
    fn for_session(&self, binary: bool) -> &Bytes;

    /// How many frames [`Outgoing::for_session`] holds (what it counts for in a queue).
    fn frames(&self) -> usize {
        1
    }

    /// Hands each frame of [`Outgoing::for_session`] to `f` on its own: what a replaying
    /// session holds back, one frame per slot.
    fn each_frame(&self, binary: bool, f: &mut dyn FnMut(&Bytes)) {
        f(self.for_session(binary));
    }

    /// May wait for a wake-up it can share (see `Hub::flush_quiet`).
    fn quiet(&self) -> bool {
        false
    }

    /// Both wire forms, for another node (which has sessions of both kinds).
    fn lines(&self) -> EnvelopeLines {
        EnvelopeLines {
            json: self.for_session(false).clone(),
            binary: self.for_session(true).clone(),
        }
    }
}

/// Notices that may wait a moment for a wake-up they can share (see `Hub::flush_quiet`).
pub(super) struct Quiet(pub(super) Bytes);

impl Outgoing for Quiet {
    fn for_session(&self, _binary: bool) -> &Bytes {
        &self.0
    }

    fn quiet(&self) -> bool {
        true
    }
}

impl Outgoing for Bytes {
    fn for_session(&self, _binary: bool) -> &Bytes {
        self
    }
}

/// An envelope serialized once per wire form, each shared by every session that takes it
/// (docs/PROTOCOL.md, binary envelope frames).
#[derive(Debug, Clone)]
pub struct EnvelopeLines {
    /// The JSON `envelope` line; also what is stored for offline devices.
    pub json: Bytes,
    /// The binary `envelope` frame.
    pub binary: Bytes,
}

impl Outgoing for EnvelopeLines {
    fn for_session(&self, binary: bool) -> &Bytes {
        if binary { &self.binary } else { &self.json }
    }
}

/// Envelopes of one conversation routed together: each member session gets them as one queue
/// entry (one lock, one wake-up and one slice of a TLS write for the run, instead of one per
/// envelope). A sender that pipelines its messages produces such runs; see
/// `Hub::route_envelopes`. A run crossing the bus from another node is rebuilt as one.
#[derive(Debug, Clone)]
pub struct EnvelopeRun {
    /// Every envelope's lines, joined, per wire form.
    joined: EnvelopeLines,
    /// The envelopes one by one, for replaying sessions and offline storage.
    pub(super) each: Vec<EnvelopeLines>,
}

impl EnvelopeRun {
    /// Joins `each` (at least two envelopes, in order) into one entry per wire form.
    pub fn new(each: Vec<EnvelopeLines>) -> Self {
        let join = |binary: bool| {
            let parts: Vec<&[u8]> = each.iter().map(|l| &l.for_session(binary)[..]).collect();
            Bytes::from(parts.concat())
        };
        let joined = EnvelopeLines {
            json: join(false),
            binary: join(true),
        };
        EnvelopeRun { joined, each }
    }

    /// The envelopes one by one.
    pub fn each(&self) -> &[EnvelopeLines] {
        &self.each
    }
}

impl Outgoing for EnvelopeRun {
    fn for_session(&self, binary: bool) -> &Bytes {
        self.joined.for_session(binary)
    }

    fn frames(&self) -> usize {
        self.each.len()
    }

    fn each_frame(&self, binary: bool, f: &mut dyn FnMut(&Bytes)) {
        for lines in &self.each {
            f(lines.for_session(binary));
        }
    }
}

/// Joins serialized lines into one queue entry: a login's or logout's `presence` and `device`
/// notices then cost each member one wake-up, TLS record and write instead of two.
pub(super) fn concat_lines(lines: impl IntoIterator<Item = Option<Bytes>>) -> Option<Bytes> {
    let lines: Vec<Bytes> = lines.into_iter().flatten().collect();
    match lines.len() {
        0 => None,
        1 => lines.into_iter().next(),
        _ => Some(Bytes::from(lines.concat())),
    }
}

/// A frame as one line; None (logged) if it cannot be serialized.
pub(super) fn serialize(frame: &impl Serialize) -> Option<Bytes> {
    match frame::encode(frame) {
        Ok(b) => Some(b),
        Err(e) => {
            tracing::error!(error = %e, "cannot serialize frame");
            None
        }
    }
}
