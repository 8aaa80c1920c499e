//! Sealing: one sender chain per conversation, wrapped for each member device that lacks it.

use std::collections::HashSet;

use bytes::Bytes;
use chatd_proto::ClientFrame;
use chatd_proto::conversation::Conversation;
use chatd_proto::e2e::{SenderChain, seal, wrap_chain};

use super::{
    Body, KnownDevice, MAX_PENDING_OWN, NotSent, Outgoing, PendingOwn, ROTATE_AT_INDEX, Sealed,
    Secure, now_ms,
};
use chatd_proto::Fingerprint;

impl Secure {
    /// Seals `body` for `conversation`: wrapped chains for members that lack ours, then the
    /// envelope. Err is a reason for the user; nothing was sent.
    pub fn seal(&mut self, conversation: &Conversation, body: Body) -> Result<Sealed, NotSent> {
        let plain = serde_json::to_string(&body).map_err(|e| NotSent::Body(e.to_string()))?;
        if plain.len() > self.max_text_bytes {
            return Err(NotSent::TooLong {
                bytes: plain.len(),
                max: self.max_text_bytes,
            });
        }
        let mut events = Vec::new();
        if let Some(room) = conversation.room() {
            if !self.rooms.contains_key(room) {
                return Err(NotSent::NotInRoom {
                    room: room.to_string(),
                });
            }
        }
        // A pending key is said once, the first time it matters, not at every message.
        let unusable: Vec<(String, Fingerprint)> = self
            .devices
            .iter()
            .filter(|(fp, d)| {
                conversation.includes(&d.user, |r| self.member(r, &d.user))
                    && self.usable(&d.user, fp).is_none()
            })
            .map(|(fp, d)| (d.user.clone(), *fp))
            .collect();
        for (user, fp) in unusable {
            events.extend(self.warn_pending(&user, fp));
        }
        let mut recipients: Vec<(Fingerprint, &KnownDevice)> = Vec::new();
        for (fp, d) in &self.devices {
            if !conversation.includes(&d.user, |r| self.member(r, &d.user)) {
                continue;
            }
            if self.usable(&d.user, fp).is_some() {
                recipients.push((*fp, d));
            }
        }
        if let Some(peer) = conversation.peer_of(&self.me) {
            if peer != self.me && !recipients.iter().any(|(_, d)| d.user == peer) {
                let known = self.devices.values().any(|d| d.user == peer);
                let user = peer.to_string();
                return Err(if known {
                    NotSent::NoAcceptedKey { user }
                } else {
                    NotSent::NoKey { user }
                });
            }
        }
        let name = conversation.name();
        let rotate = self
            .senders
            .get(&name)
            .is_none_or(|o| o.stale || o.chain.index() >= ROTATE_AT_INDEX);
        if rotate {
            let chain = SenderChain::new().map_err(NotSent::Chain)?;
            self.rekeys.started(&name, &chain);
            self.senders.insert(
                name.clone(),
                Outgoing {
                    chain,
                    given: HashSet::new(),
                    stale: false,
                },
            );
        }
        let Some(out) = self.senders.get_mut(&name) else {
            return Err(NotSent::NoChain);
        };
        let mut chains = Vec::new();
        for (fp, d) in recipients {
            if out.given.contains(&fp) {
                continue;
            }
            let wrapped = wrap_chain(&out.chain, &self.key, &self.me, &name, &d.key)
                .and_then(|w| w.to_base64())
                .map_err(|error| NotSent::Wrap {
                    user: d.user.clone(),
                    error,
                })?;
            chains.push(ClientFrame::Chain { data: wrapped });
            out.given.insert(fp);
        }
        let envelope = seal(&self.key, &self.me, &name, &mut out.chain, &plain, now_ms())
            .map_err(NotSent::Seal)?;
        let id = envelope.header().message_id;
        let envelope = Bytes::from(envelope.encode().map_err(NotSent::Encode)?);
        if self.pending_order.len() >= MAX_PENDING_OWN {
            if let Some(old) = self.pending_order.pop_front() {
                self.pending_own.remove(&old);
            }
        }
        self.pending_order.push_back(id);
        self.pending_own.insert(
            id,
            PendingOwn {
                conversation: conversation.clone(),
                body,
            },
        );
        Ok(Sealed {
            chains,
            envelope,
            events,
        })
    }
}
