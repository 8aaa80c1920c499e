//! Device vouches: a usable key of a user vouching for another of that user's keys makes it
//! usable here; a vouch for this device carrying its code makes this device trust the voucher.
//! And our side of it: the approval code of a new device, `/devices`, `/devices approve` and
//! `/devices revoke`.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use chatd_proto::e2e::{DevicePublicKey, Vouch};
use chatd_proto::{ClientFrame, Fingerprint};

use super::prefix::{self, PrefixError, hex_of};
use super::{Event, Notice, Secure, VouchRefusal, Warning, now_ms, pins_not_saved};
use crate::peers::KeyStatus;

/// Vouches kept per user (the latest per voucher and vouched key; the oldest go first).
const MAX_VOUCHES_PER_USER: usize = 256;
/// Characters of the link secret (base32: 50 bits).
const SECRET_CHARS: usize = 10;
/// Hex digits of the fingerprint in an approval code: the fewest accepted as a prefix.
const CODE_HEX: usize = prefix::MIN_HEX;
/// RFC 4648 base32 alphabet.
const BASE32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

impl Secure {
    /// A `vouch` frame: `user`'s device vouched for another of `user`'s keys.
    pub fn on_vouch(&mut self, user: &str, data: &str) -> Vec<Event> {
        let mut events = self.store_vouch(user, data);
        events.extend(self.settle(user));
        if user == self.me {
            events.extend(self.own_state());
        }
        events
    }

    /// Keeps a vouch (base64) named by the server as `user`'s, for [`Secure::settle`].
    pub(super) fn store_vouch(&mut self, user: &str, data: &str) -> Vec<Event> {
        let refused = |why| {
            vec![Event::Warning(Warning::VouchRefused {
                user: user.to_string(),
                why,
            })]
        };
        let vouch = match Vouch::from_base64(data) {
            Ok(v) => v,
            Err(e) => return refused(VouchRefusal::Unreadable(e)),
        };
        if vouch.body().user != user {
            return refused(VouchRefusal::OtherUser {
                signed_user: vouch.body().user.clone(),
            });
        }
        // Only users already met have keys a vouch could make usable (a user met for the first
        // time has every listed key trusted anyway), so nobody else's are kept.
        if user != self.me && !self.peers.knows(user) {
            return Vec::new();
        }
        let kept = self.vouches.entry(user.to_string()).or_default();
        let (by, of) = (vouch.body().voucher, vouch.body().vouched);
        kept.retain(|v| !(v.body().voucher == by && v.body().vouched == of));
        if kept.len() >= MAX_VOUCHES_PER_USER {
            kept.remove(0);
        }
        kept.push(vouch);
        Vec::new()
    }

    /// Applies the vouches kept for `user` until nothing changes: a pending key vouched for
    /// by a usable key of the same user becomes vouched (and what it sent while pending is
    /// shown); a vouch for this device carrying its code makes the voucher vouched. A vouch
    /// whose signature does not verify under the voucher key pinned here is refused and
    /// forgotten.
    pub(super) fn settle(&mut self, user: &str) -> Vec<Event> {
        let mut events = Vec::new();
        loop {
            let mut changed = false;
            let kept = self.vouches.get(user).cloned().unwrap_or_default();
            for vouch in kept {
                let body = vouch.body();
                let for_me = user == self.me && body.vouched == self.device;
                let voucher = self.peers.status(user, &body.voucher);
                let applies = if for_me {
                    self.pending.link_secret.is_some() && voucher == Some(KeyStatus::Pending)
                } else {
                    voucher.is_some_and(KeyStatus::usable)
                        && self.peers.status(user, &body.vouched) == Some(KeyStatus::Pending)
                };
                if !applies {
                    continue;
                }
                let verified = self
                    .pinned_key(user, &body.voucher)
                    .map(|key| vouch.verify(&key));
                match verified {
                    Some(Ok(())) => {}
                    Some(Err(e)) => {
                        self.forget_vouch(user, &vouch);
                        events.push(Event::Warning(Warning::VouchRefused {
                            user: user.to_string(),
                            why: VouchRefusal::BadSignature(e),
                        }));
                        continue;
                    }
                    None => continue,
                }
                if for_me {
                    let matches = self
                        .pending
                        .link_secret
                        .as_deref()
                        .is_some_and(|s| vouch.code_matches(s.as_bytes()));
                    if matches {
                        events.extend(self.mark_vouched(user, body.voucher));
                        events.extend(self.set_link_secret(None));
                        events.push(Event::Notice(Notice::Approved { by: body.voucher }));
                        changed = true;
                    } else if body.code_mac.is_some() {
                        self.forget_vouch(user, &vouch);
                        events.push(Event::Warning(Warning::VouchRefused {
                            user: user.to_string(),
                            why: VouchRefusal::WrongCode,
                        }));
                    }
                    continue;
                }
                events.push(Event::Notice(Notice::KeyVouched {
                    user: user.to_string(),
                    fingerprint: body.vouched,
                    by: body.voucher,
                }));
                events.extend(self.mark_vouched(user, body.vouched));
                changed = true;
            }
            if !changed {
                return events;
            }
        }
    }

    fn forget_vouch(&mut self, user: &str, vouch: &Vouch) {
        if let Some(kept) = self.vouches.get_mut(user) {
            kept.retain(|v| v != vouch);
        }
    }

    /// The key pinned for `user` as `fingerprint`.
    fn pinned_key(&self, user: &str, fingerprint: &Fingerprint) -> Option<DevicePublicKey> {
        let pinned = self.peers.pinned(user, fingerprint)?;
        let der = BASE64.decode(pinned.key.trim()).ok()?;
        DevicePublicKey::from_spki_der(&der).ok()
    }

    /// Pins `user`'s key as vouched and shows what it sent while pending.
    fn mark_vouched(&mut self, user: &str, fingerprint: Fingerprint) -> Vec<Event> {
        let mut events = Vec::new();
        match self
            .peers
            .set_status(user, &fingerprint, KeyStatus::Vouched)
        {
            Ok(_) => {}
            Err(e) => events.push(Event::Warning(pins_not_saved(&e))),
        }
        events.extend(self.release(user, fingerprint));
        events
    }

    /// The code this device shows while it waits for approval: `HEX16-SECRET`.
    pub(super) fn approval_code(&self) -> Option<String> {
        let secret = self.pending.link_secret.as_ref()?;
        let hex = hex_of(&self.device);
        Some(format!("{}-{secret}", &hex[..CODE_HEX]))
    }

    /// Makes and keeps a new link secret (this device is new to its account); the notice
    /// with the code follows from [`Secure::own_state`].
    pub(super) fn new_link_secret(&mut self) -> Vec<Event> {
        let mut raw = [0u8; SECRET_CHARS];
        if getrandom::fill(&mut raw).is_err() {
            return vec![Event::Warning(Warning::VouchNotMade {
                error: chatd_proto::e2e::E2eError::Random,
            })];
        }
        let secret: String = raw
            .iter()
            .map(|b| char::from(BASE32[usize::from(*b) % BASE32.len()]))
            .collect();
        self.set_link_secret(Some(secret))
    }

    /// `/devices`: our account's keys with their status, this one marked.
    pub fn list_devices(&self) -> Vec<Event> {
        let mut out = vec![Event::Notice(Notice::DevicesOf {
            me: self.me.clone(),
        })];
        for k in self.peers.keys(&self.me) {
            out.push(Event::Notice(Notice::OwnDevice {
                fingerprint: k.fingerprint,
                status: k.status,
                online: k.fingerprint == self.device
                    || self.devices.get(&k.fingerprint).is_some_and(|d| d.online),
                this: k.fingerprint == self.device,
            }));
        }
        if let Some(code) = self.approval_code() {
            out.push(Event::Notice(Notice::NotApproved { code }));
        }
        out
    }

    /// The one key of our account (not this device, not revoked) that `given` names: a
    /// unique prefix of at least 16 hex digits of its fingerprint (the rule of
    /// [`super::prefix`]), or an approval code (whose secret is returned too).
    fn own_device(&self, given: &str) -> Result<(Fingerprint, Option<String>), Warning> {
        let given = given.trim();
        let (typed, secret) = match given.split_once('-') {
            Some((hex, secret)) => (hex, Some(secret.to_ascii_uppercase())),
            None => (given, None),
        };
        let bad = || Warning::NoSuchDevice {
            given: given.to_string(),
            ambiguous: false,
        };
        if secret.as_ref().is_some_and(|s| s.len() != SECRET_CHARS) {
            return Err(bad());
        }
        let mine = self.peers.keys(&self.me);
        let candidates = mine
            .iter()
            .filter(|k| k.status != KeyStatus::Revoked)
            .map(|k| k.fingerprint);
        match prefix::resolve(typed, candidates) {
            Ok(fp) if fp == self.device => Err(Warning::ThisDevice),
            Ok(fp) => Ok((fp, secret)),
            Err(PrefixError::NoMatch) => Err(bad()),
            Err(PrefixError::Ambiguous(_)) => Err(Warning::NoSuchDevice {
                given: given.to_string(),
                ambiguous: true,
            }),
            Err(why) => Err(Warning::BadPrefix {
                given: given.to_string(),
                whose: "your devices".to_string(),
                why,
            }),
        }
    }

    /// `/devices approve CODE|FINGERPRINT`: signs a vouch for that device of ours (carrying
    /// the code's MAC when given a code), marks it usable here, and returns the `vouch` frame.
    pub fn approve_device(&mut self, given: &str) -> (Vec<Event>, Option<ClientFrame>) {
        if !self.vouch_supported {
            return (vec![Event::Warning(Warning::ServerTooOld)], None);
        }
        let (fingerprint, secret) = match self.own_device(given) {
            Ok(found) => found,
            Err(w) => return (vec![Event::Warning(w)], None),
        };
        let vouch = Vouch::sign(
            &self.key,
            &self.me,
            fingerprint,
            now_ms(),
            secret.as_deref().map(str::as_bytes),
        )
        .and_then(|v| v.to_base64());
        let data = match vouch {
            Ok(data) => data,
            Err(error) => return (vec![Event::Warning(Warning::VouchNotMade { error })], None),
        };
        let me = self.me.clone();
        let mut events = vec![Event::Notice(Notice::DeviceApproved { fingerprint })];
        events.extend(self.mark_vouched(&me, fingerprint));
        // Approving another device shows this one is established: it shows no code any more.
        events.extend(self.set_link_secret(None));
        events.extend(self.settle(&me));
        (events, Some(ClientFrame::Vouch { data }))
    }

    /// `/devices revoke FINGERPRINT`: the `revoke` command for that device of ours.
    pub fn revoke_device(&mut self, given: &str) -> (Vec<Event>, Option<ClientFrame>) {
        match self.own_device(given) {
            Ok((fingerprint, _)) => (
                vec![Event::Notice(Notice::RevokeAsked { fingerprint })],
                Some(ClientFrame::Command {
                    name: "revoke".into(),
                    args: fingerprint.to_string(),
                    room: None,
                }),
            ),
            Err(w) => (vec![Event::Warning(w)], None),
        }
    }
}
