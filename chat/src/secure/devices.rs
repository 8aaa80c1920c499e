//! The device keys the server announces: checked against their fingerprints, pinned, and
//! whether each may be sealed to and believed.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use chatd_proto::Fingerprint;
use chatd_proto::e2e::DevicePublicKey;

use super::{Event, KnownDevice, Notice, Refusal, Secure, Warning, pins_not_saved};
use crate::peers::{KeyStatus, Seen};

impl Secure {
    /// A device came online (or was registered): check its key against its fingerprint and
    /// pin it.
    pub fn device_online(&mut self, user: &str, fingerprint: Fingerprint, key: &str) -> Vec<Event> {
        self.device_known(user, fingerprint, key, true)
    }

    pub(super) fn device_known(
        &mut self,
        user: &str,
        fingerprint: Fingerprint,
        key: &str,
        online: bool,
    ) -> Vec<Event> {
        if fingerprint == self.device {
            return Vec::new();
        }
        let parsed = BASE64
            .decode(key.trim())
            .ok()
            .and_then(|der| DevicePublicKey::from_spki_der(&der).ok());
        let Some(public) = parsed.filter(|k| k.fingerprint() == fingerprint) else {
            return vec![Event::Warning(Warning::KeyMismatch {
                user: user.to_string(),
                fingerprint,
            })];
        };
        let mut events = Vec::new();
        match self.peers.observe(user, fingerprint, key.trim()) {
            Ok(Seen::FirstForUser) => events.push(Event::Notice(Notice::Pinned {
                user: user.to_string(),
                fingerprint,
            })),
            Ok(Seen::Known(KeyStatus::Pending)) => {
                events.push(Event::Warning(Warning::StillPending {
                    user: user.to_string(),
                    fingerprint,
                }));
            }
            Ok(Seen::Known(_)) => {}
            Ok(Seen::NewForKnownUser) => events.push(Event::Warning(Warning::NewKey {
                user: user.to_string(),
                fingerprint,
            })),
            Err(e) => events.push(Event::Warning(pins_not_saved(&e))),
        }
        self.devices.insert(
            fingerprint,
            KnownDevice {
                user: user.to_string(),
                key: public,
                online,
            },
        );
        events
    }

    /// A device went offline: it still gets every message, stored by the server.
    pub fn device_offline(&mut self, fingerprint: &Fingerprint) {
        if let Some(d) = self.devices.get_mut(fingerprint) {
            d.online = false;
        }
    }

    /// A device was revoked (or its account deleted): nothing more is encrypted to it, and
    /// chains it held are replaced before the next message.
    pub fn device_removed(&mut self, fingerprint: &Fingerprint) {
        self.devices.remove(fingerprint);
        for out in self.senders.values_mut() {
            if out.given.contains(fingerprint) {
                out.stale = true;
            }
        }
    }

    pub(super) fn usable(&self, user: &str, fingerprint: &Fingerprint) -> Option<KeyStatus> {
        self.peers.status(user, fingerprint).filter(|s| s.usable())
    }

    /// The pinned, accepted key of `user`'s device `device`.
    pub(super) fn sender_key(&self, user: &str, device: &Fingerprint) -> Option<&DevicePublicKey> {
        self.usable(user, device)?;
        self.devices
            .get(device)
            .filter(|d| d.user == user)
            .map(|d| &d.key)
    }

    pub(super) fn unusable_reason(&self, user: &str, device: &Fingerprint) -> Refusal {
        match self.peers.status(user, device) {
            Some(KeyStatus::Pending) => Refusal::Unaccepted {
                user: user.to_string(),
                device: *device,
            },
            _ => Refusal::Unannounced { device: *device },
        }
    }
}
