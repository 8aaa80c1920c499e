//! Opening: wrapped chains and envelopes are believed only after every check passes.
//!
//! A chain already held is never replaced (replay.rs keeps them across restarts), a message is
//! shown at most once, a gap in a sender's chain is reported when a later index arrives, and
//! the time shown is the signed one.

use chatd_proto::Fingerprint;
use chatd_proto::conversation::Conversation;
use chatd_proto::e2e::{E2eError, Envelope, WrappedChain, unwrap_chain};

use super::{
    Body, CHAINS_PER_DEVICE, ChatMessage, Delivered, Event, Notice, Refusal, Secure, SentBy,
    Warning, now_ms,
};
use crate::peers::KeyStatus;

impl Secure {
    /// A wrapped chain from `from`'s device `device`; quiet on success.
    pub fn on_chain(&mut self, from: &str, device: Fingerprint, data: &str) -> Vec<Event> {
        let warn = |why: Refusal| {
            vec![Event::Warning(Warning::KeyRejected {
                from: from.to_string(),
                why,
            })]
        };
        let wrapped = match WrappedChain::from_base64(data) {
            Ok(w) => w,
            Err(e) => return warn(Refusal::Unreadable(e)),
        };
        let h = wrapped.header();
        if h.sender_user != from || h.sender_device != device {
            return warn(Refusal::SignedAs {
                signer: h.sender_user.clone(),
            });
        }
        match Conversation::parse(&h.conversation) {
            Ok(c) if c.includes(&self.me, |r| self.member(r, &self.me)) => {}
            _ => {
                return warn(Refusal::ChainNotForUs {
                    conversation: h.conversation.clone(),
                });
            }
        }
        let Some(sender) = self.sender_key(from, &device) else {
            return warn(self.unusable_reason(from, &device));
        };
        match unwrap_chain(&wrapped, sender, &self.key) {
            Ok(chain) => {
                let slot = (device, chain.chain_id());
                // Never replaced: a new copy would forget which messages were shown.
                if let Some(held) = self.receivers.get(&slot) {
                    if held.same_chain(&chain) {
                        return Vec::new();
                    }
                    return vec![Event::Warning(Warning::ChainConflict {
                        from: from.to_string(),
                    })];
                }
                if self.retired.contains(&slot) {
                    return Vec::new();
                }
                self.receivers.insert(slot, chain);
                self.receiver_order.push_back(slot);
                self.trim_receivers(device);
                let mut events = self.save_state();
                // What came before it, asked for again, opens now.
                for waiting in self.rekeys.arrived(&slot) {
                    events.extend(self.on_delivered(&waiting));
                }
                events
            }
            Err(error) => warn(Refusal::Check {
                error,
                max_skew_ms: self.max_skew_ms,
            }),
        }
    }

    pub(super) fn trim_receivers(&mut self, device: Fingerprint) {
        let of_device = self
            .receiver_order
            .iter()
            .filter(|(d, _)| *d == device)
            .count();
        if of_device > CHAINS_PER_DEVICE {
            if let Some(pos) = self.receiver_order.iter().position(|(d, _)| *d == device) {
                if let Some(old) = self.receiver_order.remove(pos) {
                    self.receivers.remove(&old);
                    self.retire(old);
                }
            }
        }
    }

    /// An envelope's outcome alone: the message or the warning, without a gap reported
    /// before it (tests; an already shown stored message has none: use `on_delivered`).
    #[cfg(test)]
    pub fn on_envelope(&mut self, delivered: &Delivered) -> Event {
        self.on_delivered(delivered)
            .into_iter()
            .rfind(|e| !matches!(e, Event::Warning(Warning::StateNotSaved { .. })))
            .expect("an envelope gives an event")
    }

    /// An envelope, from the sender the server names (JSON) or the header's (binary): the
    /// message (after a warning about messages missing before it, if any) or why it was
    /// dropped; nothing for a stored message already shown.
    pub fn on_delivered(&mut self, delivered: &Delivered) -> Vec<Event> {
        match self.open_delivered(delivered) {
            Opened::Shown { missing, message } => {
                let mut out = missing.into_iter().collect::<Vec<_>>();
                out.push(message);
                out.extend(self.save_state());
                out
            }
            Opened::Echo(message) => vec![message],
            Opened::AlreadyShown => {
                self.already_shown = self.already_shown.saturating_add(1);
                Vec::new()
            }
            Opened::Refused(event) => vec![event],
            Opened::Waiting(said) => said.into_iter().collect(),
        }
    }

    fn open_delivered(&mut self, delivered: &Delivered) -> Opened {
        let envelope = match &delivered.data {
            Ok(bytes) => Envelope::decode(bytes),
            Err(e) => Err(e.clone()),
        };
        let envelope = match envelope {
            Ok(e) => e,
            Err(error) => {
                let from = match &delivered.sent_by {
                    SentBy::Named { user, .. } => Some(user.clone()),
                    SentBy::Header => None,
                };
                return Opened::Refused(Event::Warning(Warning::Unreadable { from, error }));
            }
        };
        let h = envelope.header();
        let (from, device) = match &delivered.sent_by {
            SentBy::Named { user, device } => (user.as_str(), *device),
            SentBy::Header => (h.sender_user.as_str(), h.sender_device),
        };
        let ts = delivered.ts;
        let warn = |why: Refusal| {
            Opened::Refused(Event::Warning(Warning::Dropped {
                from: from.to_string(),
                why,
            }))
        };
        // Only a JSON frame can disagree: a binary one's sender is the header's.
        if h.sender_user != from || h.sender_device != device {
            return warn(Refusal::SignedAs {
                signer: h.sender_user.clone(),
            });
        }
        if device == self.device {
            // Our own message, echoed: show it only if this client sealed it just now.
            return match self.pending_own.remove(&h.message_id) {
                Some(p) => Opened::Echo(Event::Message(ChatMessage {
                    from: self.me.clone(),
                    to: p.conversation.peer_of(&self.me).map(str::to_string),
                    room: self.shown_room(&p.conversation),
                    text: p.body.text,
                    action: p.body.action,
                    ts,
                    verified: true,
                    late: false,
                    server_ts: None,
                })),
                None => warn(Refusal::NotSentHere),
            };
        }
        let conversation = match Conversation::parse(&h.conversation) {
            Ok(c) if c.includes(&self.me, |r| self.member(r, &self.me)) => c,
            _ => {
                return warn(Refusal::NotForUs {
                    conversation: h.conversation.clone(),
                });
            }
        };
        let Some(status) = self.usable(from, &device) else {
            return warn(self.unusable_reason(from, &device));
        };
        let Some(sender) = self.sender_key(from, &device).cloned() else {
            return warn(self.unusable_reason(from, &device));
        };
        let now = now_ms();
        let window = self.window(delivered.stored, now);
        let slot = (device, h.chain_id);
        // No chain (never came, or the server dropped it): held, and the sending device is
        // asked for it once; shown when it comes. A chain dropped for the bound is not taken
        // again, so nothing waits for it.
        if !self.receivers.contains_key(&slot)
            && self.rekeys.enabled
            && !self.retired.contains(&slot)
        {
            if !self.rekeys.wait_for(slot, delivered) {
                return Opened::Waiting(None);
            }
            self.ask_for_chain(slot, &h.conversation, h.chain_index);
            return Opened::Waiting(Some(Event::Notice(Notice::AskedForKey {
                user: from.to_string(),
                fingerprint: device,
                conversation: h.conversation.clone(),
            })));
        }
        let Some(chain) = self.receivers.get_mut(&slot) else {
            return warn(Refusal::NoChain);
        };
        let expected = chain.next_index();
        let late = chain.is_skipped(h.chain_index);
        let opened = match chatd_proto::e2e::open_within(&envelope, &sender, chain, window) {
            Ok(o) => o,
            // The server delivers a stored line again when it was not acknowledged (this
            // client stopped first): shown once already, so skipped without a word.
            Err(E2eError::Replay) if delivered.stored && chain.seen_id(&h.message_id) => {
                return Opened::AlreadyShown;
            }
            Err(error) => {
                return warn(Refusal::Check {
                    error,
                    max_skew_ms: self.max_skew_ms,
                });
            }
        };
        let missing = (h.chain_index > expected).then(|| {
            Event::Warning(Warning::Missing {
                from: from.to_string(),
                conversation: h.conversation.clone(),
                count: h.chain_index - expected,
            })
        });
        let body: Body = match serde_json::from_str(&opened.text) {
            Ok(b) => b,
            // Opened all the same: its index is used, and a gap before it was one.
            Err(_) => {
                return Opened::Shown {
                    missing,
                    message: Event::Warning(Warning::Dropped {
                        from: from.to_string(),
                        why: Refusal::NotAMessage,
                    }),
                };
            }
        };
        let signed = opened.header.timestamp_ms;
        Opened::Shown {
            missing,
            message: Event::Message(ChatMessage {
                from: from.to_string(),
                to: conversation.peer_of(from).map(str::to_string),
                room: self.shown_room(&conversation),
                text: body.text,
                action: body.action,
                ts: signed,
                verified: status == KeyStatus::Verified,
                late,
                server_ts: (signed.abs_diff(ts) > self.max_skew_ms).then_some(ts),
            }),
        }
    }
}

/// What became of one envelope.
enum Opened {
    /// It opened (the receiver chain moved on): a message to show, or why its content is
    /// refused, after a warning about messages missing before it.
    Shown {
        missing: Option<Event>,
        message: Event,
    },
    /// Our own message, echoed (no receiver chain changed).
    Echo(Event),
    /// A stored message this device showed before.
    AlreadyShown,
    /// Held until its chain comes (asked for); said once per chain.
    Waiting(Option<Event>),
    /// Dropped, with a warning.
    Refused(Event),
}
