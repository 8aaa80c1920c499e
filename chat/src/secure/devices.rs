//! The device keys the server announces: checked against their fingerprints, pinned by the
//! trust rules of docs/PROTOCOL.md ("End-to-end messages"), and whether each may be sealed to
//! and believed.
//!
//! - Another user met for the first time: every key listed for them then is trusted (TOFU),
//!   and shown before anything is sealed to them.
//! - A later key of a known user, and any other key on our own account, is pending until a
//!   usable key of the same user vouches for it (`vouches.rs`), or we accept it.
//! - A revoked key stays revoked, whatever the server announces later.

use std::collections::{BTreeMap, HashSet};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use chatd_proto::Fingerprint;
use chatd_proto::e2e::DevicePublicKey;
use chatd_proto::frame::DeviceInfo;

use super::{Event, KnownDevice, Notice, Refusal, Secure, Warning, pins_not_saved};
use crate::peers::KeyStatus;

impl Secure {
    /// The device keys `login_ok` lists (online or not): our own pin first, then every key
    /// with its vouches; users met for the first time are shown, our own account's state said.
    pub(super) fn devices_listed(&mut self, devices: &[DeviceInfo]) -> Vec<Event> {
        let mut events = Vec::new();
        let first_time = self.peers.own(&self.me) != Some(self.device);
        let own_key = BASE64.encode(self.key.public().to_spki_der());
        if let Err(e) = self.peers.set_own(&self.me, self.device, &own_key) {
            events.push(Event::Warning(pins_not_saved(&e)));
        }
        let new_users: HashSet<&str> = devices
            .iter()
            .map(|d| d.user.as_str())
            .filter(|u| *u != self.me && !self.peers.knows(u))
            .collect();
        let mut met: BTreeMap<String, Vec<Fingerprint>> = BTreeMap::new();
        for d in devices {
            let first = new_users.contains(d.user.as_str());
            let (seen, pinned) =
                self.device_known(&d.user, d.fingerprint, &d.key, d.online, &d.vouches, first);
            events.extend(seen);
            if first && pinned {
                met.entry(d.user.clone()).or_default().push(d.fingerprint);
            }
        }
        for (user, fingerprints) in met {
            events.push(self.new_user(user, fingerprints));
        }
        // A device that logs in for the first time to an account that has others is new:
        // it shows a code until one of them approves it.
        let others = self
            .devices
            .iter()
            .any(|(fp, d)| d.user == self.me && *fp != self.device);
        if first_time && others && self.pending.link_secret.is_none() {
            events.extend(self.new_link_secret());
        }
        let users: Vec<String> = devices.iter().map(|d| d.user.clone()).collect();
        let mut settled = HashSet::new();
        for user in users {
            if settled.insert(user.clone()) {
                events.extend(self.settle(&user));
            }
        }
        events.extend(self.own_state());
        events
    }

    /// A device came online (or was registered): check its key against its fingerprint, pin
    /// it, and apply the vouches listed with it.
    pub fn device_online(
        &mut self,
        user: &str,
        fingerprint: Fingerprint,
        key: &str,
        vouches: &[String],
    ) -> Vec<Event> {
        let first = user != self.me && !self.peers.knows(user);
        let (mut events, pinned) = self.device_known(user, fingerprint, key, true, vouches, first);
        if first && pinned {
            events.push(self.new_user(user.to_string(), vec![fingerprint]));
        }
        events.extend(self.settle(user));
        if user == self.me {
            events.extend(self.own_state());
        }
        events
    }

    /// Checks and pins one announced key (trusted when `first_contact`, else pending if new);
    /// true in the second value when it is known and may be listed now.
    fn device_known(
        &mut self,
        user: &str,
        fingerprint: Fingerprint,
        key: &str,
        online: bool,
        vouches: &[String],
        first_contact: bool,
    ) -> (Vec<Event>, bool) {
        let mut events = Vec::new();
        for v in vouches {
            events.extend(self.store_vouch(user, v));
        }
        if fingerprint == self.device {
            if let Some(d) = self.devices.get_mut(&fingerprint) {
                d.online = online;
            }
            return (events, false);
        }
        let parsed = BASE64
            .decode(key.trim())
            .ok()
            .and_then(|der| DevicePublicKey::from_spki_der(&der).ok());
        let Some(public) = parsed.filter(|k| k.fingerprint() == fingerprint) else {
            events.push(Event::Warning(Warning::KeyMismatch {
                user: user.to_string(),
                fingerprint,
            }));
            return (events, false);
        };
        match self.peers.status(user, &fingerprint) {
            Some(KeyStatus::Revoked) => {
                if self.warned.insert(fingerprint) {
                    events.push(Event::Warning(Warning::RevokedKeyAnnounced {
                        user: user.to_string(),
                        fingerprint,
                    }));
                }
                return (events, false);
            }
            Some(_) => {}
            None => {
                let status = if first_contact {
                    KeyStatus::Trusted
                } else {
                    KeyStatus::Pending
                };
                if let Err(e) = self.peers.pin(user, fingerprint, key.trim(), status) {
                    events.push(Event::Warning(pins_not_saved(&e)));
                }
            }
        }
        self.devices.insert(
            fingerprint,
            KnownDevice {
                user: user.to_string(),
                key: public,
                online,
            },
        );
        (events, true)
    }

    /// The notice for a user met for the first time.
    fn new_user(&self, user: String, fingerprints: Vec<Fingerprint>) -> Event {
        Event::Notice(Notice::NewUser {
            user,
            fingerprints,
            room: self.default_room.clone(),
        })
    }

    /// What our own account's keys need said: the code while this device is not approved,
    /// else once per key the loud warning about a device none of ours approved.
    pub(super) fn own_state(&mut self) -> Vec<Event> {
        let mut events = Vec::new();
        if let Some(code) = self.approval_code() {
            if self.warned.insert(self.device) {
                events.push(Event::Notice(Notice::NotApproved { code }));
            }
        }
        let pending: Vec<Fingerprint> = self
            .devices
            .iter()
            .filter(|(fp, d)| {
                d.user == self.me && self.peers.status(&self.me, fp) == Some(KeyStatus::Pending)
            })
            .map(|(fp, _)| *fp)
            .collect();
        let me = self.me.clone();
        events.extend(
            pending
                .into_iter()
                .filter_map(|fp| self.warn_pending(&me, fp)),
        );
        events
    }

    /// The warning for a pending key, the first time it matters in this session; None after
    /// that. Our own account's are loud: a key there that this device did not approve is
    /// another device of ours or someone else's (while this device waits for approval itself,
    /// it cannot tell which, and says so).
    pub(super) fn warn_pending(&mut self, user: &str, fingerprint: Fingerprint) -> Option<Event> {
        if !self.warned.insert(fingerprint) {
            return None;
        }
        Some(Event::Warning(
            if user == self.me && self.pending.link_secret.is_some() {
                Warning::OtherOwnDevice { fingerprint }
            } else if user == self.me {
                Warning::UnapprovedOwnDevice { fingerprint }
            } else {
                Warning::PendingKey {
                    user: user.to_string(),
                    fingerprint,
                }
            },
        ))
    }

    /// A device went offline: it still gets every message, stored by the server.
    pub fn device_offline(&mut self, fingerprint: &Fingerprint) {
        if let Some(d) = self.devices.get_mut(fingerprint) {
            d.online = false;
        }
    }

    /// A device was revoked (or its account deleted): pinned as revoked for good, nothing
    /// more is encrypted to it, what it sent and we held is dropped, and chains it held are
    /// replaced before the next message.
    pub fn device_removed(&mut self, user: &str, fingerprint: &Fingerprint) -> Vec<Event> {
        let mut events = Vec::new();
        if let Err(e) = self.peers.set_status(user, fingerprint, KeyStatus::Revoked) {
            events.push(Event::Warning(pins_not_saved(&e)));
        }
        self.devices.remove(fingerprint);
        events.extend(self.discard_held(fingerprint));
        for out in self.senders.values_mut() {
            if out.given.contains(fingerprint) {
                out.stale = true;
            }
        }
        events
    }

    /// The status of `user`'s key `fingerprint` if it may be used.
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
            Some(KeyStatus::Revoked) => Refusal::Revoked { device: *device },
            _ => Refusal::Unannounced { device: *device },
        }
    }
}
