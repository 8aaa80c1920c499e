//! Routing what a logged-in client sends: sealed envelopes by their clear headers (checked
//! against the session and the conversation, serialized once per wire form, routed in runs),
//! and wrapped sender chains to the device they name. The text stays sealed throughout.

use std::ops::ControlFlow;

use base64::Engine;
use bytes::Bytes;
use chatd_proto::codec::binary_envelope;
use chatd_proto::conversation::Conversation;
use chatd_proto::e2e::{Envelope, WrappedChain};
use chatd_proto::frame::{self, ServerFrame};
use chatd_proto::{ErrorCode, Fingerprint};

use super::connection::{Connection, Ending};
use super::login::LoggedIn;
use super::rate::Rate;
use crate::commands::Role;
use crate::config::Limits;
use crate::hub::{EnvelopeLines, Hub, Notify, Routed, SendRefused, Sender, SessionId};

/// Bytes of AEAD tag in every envelope's ciphertext.
const AEAD_TAG_BYTES: usize = 16;

/// Most envelopes routed as one run (about 15 KB of 100-byte messages: one TLS record).
const MAX_RUN: usize = 32;

/// An envelope as a `send` carried it.
pub(super) enum EnvelopeData {
    /// A binary `send` frame's payload.
    Bytes(Bytes),
    /// A JSON `send` frame's `data`.
    Base64(String),
}

/// Envelopes to one conversation, in the order they were read, routed together.
#[derive(Default)]
struct Run {
    to: Option<Conversation>,
    each: Vec<(EnvelopeLines, Notify)>,
}

/// Why an envelope is not routed: what its sender is told, and whether it counts as a
/// protocol violation (a well-behaved client never sends it) or is a plain error.
struct Refused {
    code: ErrorCode,
    message: String,
    violation: bool,
}

impl Refused {
    fn violation(code: ErrorCode, message: String) -> Self {
        Refused {
            code,
            message,
            violation: true,
        }
    }

    fn error(code: ErrorCode, message: String) -> Self {
        Refused {
            code,
            message,
            violation: false,
        }
    }
}

/// What routing a session's frames needs.
pub(super) struct Router<'a> {
    pub(super) hub: &'a Hub,
    pub(super) limits: &'a Limits,
    pub(super) id: SessionId,
    pub(super) login: &'a LoggedIn,
}

impl Router<'_> {
    /// Routes a sealed envelope by its header (its text stays sealed), together with the
    /// binary `send` frames already read behind it: a run of envelopes to one conversation
    /// reaches each member's queue as one entry ([`Hub::route_envelopes`]). Only frames
    /// already here join a run, so nothing waits for one. Replies to the sender keep the
    /// order of its frames: a refused envelope first lets the run before it go.
    pub(super) fn envelopes(
        &self,
        conn: &mut Connection,
        rate: &mut Rate,
        data: EnvelopeData,
    ) -> ControlFlow<Ending> {
        let mut run = Run::default();
        let mut next = Some(data);
        while let Some(data) = next.take() {
            match self.prepare(data) {
                Ok((to, lines, note)) => {
                    if run.to.as_ref().is_some_and(|c| *c != to) || run.each.len() >= MAX_RUN {
                        self.route_run(conn, std::mem::take(&mut run));
                    }
                    run.to = Some(to);
                    run.each.push((lines, note));
                }
                Err(refused) => {
                    self.route_run(conn, std::mem::take(&mut run));
                    refuse(conn, refused)?;
                }
            }
            next = conn.buffered_send(|| rate.take()).map(EnvelopeData::Bytes);
        }
        self.route_run(conn, run);
        ControlFlow::Continue(())
    }

    /// Routes a run of envelopes (see [`Router::envelopes`]); tells the sender when the
    /// hub refuses them (each envelope on its own), or once per envelope that a whisper's
    /// other side is away.
    fn route_run(&self, conn: &Connection, run: Run) {
        let Some(to) = run.to else {
            return;
        };
        let count = run.each.len();
        match self.hub.route_envelopes(&self.login.user, &to, run.each) {
            Ok(sent) => {
                if let Some((peer, away)) = sent.away {
                    for _ in 0..count {
                        conn.send(&ServerFrame::Notice {
                            text: format!("{peer} is away: {away}"),
                        });
                    }
                }
            }
            Err(refused) => {
                // Not a violation: a kick can cross a message in flight.
                let (code, message) = match refused {
                    SendRefused::NotInRoom(room) => (
                        ErrorCode::NotInRoom,
                        format!("you are not in #{room}; /join {room} first"),
                    ),
                    // Same answer for no such user: a whisper does not probe for accounts.
                    SendRefused::NoDevices(other) => (
                        ErrorCode::UserOffline,
                        format!("{other} has no device key (no such user, or never logged in)"),
                    ),
                };
                for _ in 0..count {
                    conn.error(code, message.clone());
                }
            }
        }
    }

    /// Checks a sealed envelope's header against this session and the conversation it names,
    /// and serializes it once per wire form; what to route, or why not. What the hub knows
    /// (membership, device keys) is checked when the run is routed.
    fn prepare(
        &self,
        data: EnvelopeData,
    ) -> Result<(Conversation, EnvelopeLines, Notify), Refused> {
        let login = self.login;
        // A JSON send's text is kept: its `envelope` line carries it exactly as sent.
        let (raw, text) = match data {
            EnvelopeData::Bytes(b) => (b, None),
            EnvelopeData::Base64(text) => {
                match base64::engine::general_purpose::STANDARD.decode(text.trim()) {
                    Ok(b) => (Bytes::from(b), Some(text)),
                    Err(_) => {
                        let e = chatd_proto::e2e::E2eError::Malformed("base64");
                        return Err(Refused::violation(
                            ErrorCode::BadEnvelope,
                            format!("envelope: {e}"),
                        ));
                    }
                }
            }
        };
        let envelope = Envelope::decode(&raw)
            .map_err(|e| Refused::violation(ErrorCode::BadEnvelope, format!("envelope: {e}")))?;
        let h = envelope.header();
        if h.sender_user != login.user || h.sender_device != login.device {
            return Err(Refused::violation(
                ErrorCode::BadEnvelope,
                "the envelope's sender is not this session's user and device key".into(),
            ));
        }
        let conversation = Conversation::parse(&h.conversation)
            .map_err(|e| Refused::violation(ErrorCode::BadEnvelope, e.to_string()))?;
        match &conversation {
            Conversation::All if login.role != Role::Admin => {
                return Err(Refused::error(
                    ErrorCode::Forbidden,
                    "only administrators can send to everyone; talk in a room".into(),
                ));
            }
            Conversation::Pair(..) if !conversation.includes(&login.user, |_| false) => {
                return Err(Refused::violation(
                    ErrorCode::BadEnvelope,
                    "you are not part of that conversation".into(),
                ));
            }
            Conversation::All | Conversation::Pair(..) | Conversation::Room(_) => {}
        }
        let body = envelope.ciphertext().len().saturating_sub(AEAD_TAG_BYTES);
        let max = self.limits.max_text_bytes.get();
        if body > max {
            return Err(Refused::error(
                ErrorCode::BadText,
                format!("message is {body} bytes sealed; the limit is {max}"),
            ));
        }
        // Serialized once per wire form; every member's session takes one of the two.
        let ts = crate::commands::now_millis();
        let frame = ServerFrame::Envelope {
            from: login.user.clone(),
            device: login.device,
            data: text.unwrap_or_else(|| base64::engine::general_purpose::STANDARD.encode(&raw)),
            ts,
        };
        let lines = match frame::encode(&frame) {
            Ok(json) => EnvelopeLines {
                json,
                binary: binary_envelope(ts, &raw),
            },
            Err(e) => {
                tracing::error!(error = %e, "cannot serialize frame");
                return Err(Refused::error(
                    ErrorCode::Internal,
                    "cannot route that envelope".into(),
                ));
            }
        };
        // Echoed to the sender too: the echo confirms delivery, carries the server's
        // timestamp, and reaches the user's other sessions. Members' offline devices get it
        // at their next login; `held` tells this session once that is durable.
        let note = Notify {
            session: self.id,
            message: h.message_id.iter().map(|b| format!("{b:02x}")).collect(),
            conversation: conversation.name(),
        };
        Ok((conversation, lines, note))
    }

    /// Who this session is, as a sender of lines that may be stored for offline devices.
    fn sender(&self) -> Sender {
        Sender {
            user: self.login.user.clone(),
            session: self.id,
        }
    }

    /// Routes a wrapped sender chain to the device its header names, within the chain
    /// budgets (per session, per account, per recipient device).
    pub(super) fn chain(
        &self,
        conn: &mut Connection,
        rate: &mut Rate,
        data: String,
    ) -> ControlFlow<Ending> {
        let login = self.login;
        let wrapped = match WrappedChain::from_base64(&data) {
            Ok(w) => w,
            Err(e) => return conn.violation(ErrorCode::BadEnvelope, format!("chain: {e}")),
        };
        let h = wrapped.header();
        if h.sender_user != login.user || h.sender_device != login.device {
            return conn.violation(
                ErrorCode::BadEnvelope,
                "the chain's sender is not this session's user and device key".into(),
            );
        }
        if let Err(e) = Conversation::parse(&h.conversation) {
            return conn.violation(ErrorCode::BadEnvelope, e.to_string());
        }
        let to = h.recipient_device;
        if !rate.admit_chain(conn, self.limits, &to)? {
            return ControlFlow::Continue(());
        }
        let frame = ServerFrame::Chain {
            from: login.user.clone(),
            device: login.device,
            data,
        };
        match frame::encode(&frame) {
            Ok(line) => {
                // Offline devices get it at their next login, before the envelopes that
                // need it. Unknown: revoked meanwhile; the sender learns that from `device`.
                // Refused for lack of room: the hub or the offline writer tells the sender.
                if self.hub.route_to_device(&to, &line, Some(&self.sender())) == Routed::Unknown {
                    tracing::debug!(device = %to, "chain for a device that is not registered");
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot serialize frame"),
        }
        ControlFlow::Continue(())
    }
}

/// A request for a chain again (`rekey`), as a client sent it.
pub(super) struct RekeyRequest {
    /// The device asked.
    pub(super) device: Fingerprint,
    /// The conversation of the envelope that could not be opened.
    pub(super) conversation: String,
    /// Its chain id, 32 lowercase hex digits.
    pub(super) chain: String,
    /// The first index that could not be opened.
    pub(super) index: u32,
}

impl Router<'_> {
    /// Routes a `rekey` to the device it names (stored if that device is offline, so its
    /// user learns at the next login that a message of theirs could not be opened). The
    /// asker must be in the conversation; the server cannot check more, and need not: the
    /// asked client re-wraps only for a device it trusts and counts as a member.
    pub(super) fn rekey(&self, conn: &mut Connection, req: RekeyRequest) -> ControlFlow<Ending> {
        let login = self.login;
        let hex_id = req.chain.len() == 32
            && req
                .chain
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !hex_id {
            return conn.violation(
                ErrorCode::BadFrame,
                "rekey: chain must be 32 lowercase hex digits".into(),
            );
        }
        let member = match Conversation::parse(&req.conversation) {
            Ok(c) => c.includes(&login.user, |room| self.hub.is_member(room, &login.user)),
            Err(e) => return conn.violation(ErrorCode::BadFrame, format!("rekey: {e}")),
        };
        if !member {
            conn.error(
                ErrorCode::NotInRoom,
                format!("rekey: you are not in {}", req.conversation),
            );
            return ControlFlow::Continue(());
        }
        let frame = ServerFrame::Rekey {
            from: login.user.clone(),
            device: login.device,
            conversation: req.conversation,
            chain: req.chain,
            index: req.index,
        };
        match frame::encode(&frame) {
            Ok(line) => {
                if self
                    .hub
                    .route_rekey(&req.device, &line, Some(&self.sender()))
                    == Routed::Unknown
                {
                    tracing::debug!(device = %req.device, "rekey for a device that is not registered");
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot serialize frame"),
        }
        ControlFlow::Continue(())
    }
}

/// Tells the sender why an envelope was not routed; a violation counts toward closing.
fn refuse(conn: &mut Connection, refused: Refused) -> ControlFlow<Ending> {
    if refused.violation {
        conn.violation(refused.code, refused.message)
    } else {
        conn.error(refused.code, refused.message);
        ControlFlow::Continue(())
    }
}
