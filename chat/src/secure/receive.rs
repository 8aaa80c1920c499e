//! Opening: wrapped chains and envelopes are believed only after every check passes.

use chatd_proto::Fingerprint;
use chatd_proto::conversation::Conversation;
use chatd_proto::e2e::{Envelope, WrappedChain, unwrap_chain};

use super::{
    Body, CHAINS_PER_DEVICE, ChatMessage, Delivered, Event, Refusal, Secure, SentBy, Warning,
    now_ms,
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
                if self.receivers.insert(slot, chain).is_none() {
                    self.receiver_order.push_back(slot);
                    self.trim_receivers(device);
                }
                Vec::new()
            }
            Err(error) => warn(Refusal::Check {
                error,
                max_skew_ms: self.max_skew_ms,
            }),
        }
    }

    fn trim_receivers(&mut self, device: Fingerprint) {
        let of_device = self
            .receiver_order
            .iter()
            .filter(|(d, _)| *d == device)
            .count();
        if of_device > CHAINS_PER_DEVICE {
            if let Some(pos) = self.receiver_order.iter().position(|(d, _)| *d == device) {
                if let Some(old) = self.receiver_order.remove(pos) {
                    self.receivers.remove(&old);
                }
            }
        }
    }

    /// An envelope, from the sender the server names (JSON) or the header's (binary).
    pub fn on_envelope(&mut self, delivered: &Delivered) -> Event {
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
                return Event::Warning(Warning::Unreadable { from, error });
            }
        };
        let h = envelope.header();
        let (from, device) = match &delivered.sent_by {
            SentBy::Named { user, device } => (user.as_str(), *device),
            SentBy::Header => (h.sender_user.as_str(), h.sender_device),
        };
        let ts = delivered.ts;
        let warn = |why: Refusal| {
            Event::Warning(Warning::Dropped {
                from: from.to_string(),
                why,
            })
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
                Some(p) => Event::Message(ChatMessage {
                    from: self.me.clone(),
                    to: p.conversation.peer_of(&self.me).map(str::to_string),
                    room: self.shown_room(&p.conversation),
                    text: p.body.text,
                    action: p.body.action,
                    ts,
                    verified: true,
                }),
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
        let Some(chain) = self.receivers.get_mut(&(device, h.chain_id)) else {
            return warn(Refusal::NoChain);
        };
        let opened =
            match chatd_proto::e2e::open(&envelope, &sender, chain, now_ms(), self.max_skew_ms) {
                Ok(o) => o,
                Err(error) => {
                    return warn(Refusal::Check {
                        error,
                        max_skew_ms: self.max_skew_ms,
                    });
                }
            };
        let body: Body = match serde_json::from_str(&opened.text) {
            Ok(b) => b,
            Err(_) => return warn(Refusal::NotAMessage),
        };
        Event::Message(ChatMessage {
            from: from.to_string(),
            to: conversation.peer_of(from).map(str::to_string),
            room: self.shown_room(&conversation),
            text: body.text,
            action: body.action,
            ts,
            verified: status == KeyStatus::Verified,
        })
    }
}
