//! The device-key directory: every registered, unrevoked key, each with its `login_ok` entry
//! serialized once; the `login_ok` line built from a snapshot; `/whois`; forgetting revoked
//! keys and deleted accounts.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use bytes::Bytes;
use chatd_proto::Fingerprint;
use chatd_proto::frame::{DeviceEvent, DeviceInfo, RoomState, ServerFrame, WhoisDevice};
use serde::Serialize;
use serde_json::value::RawValue;

use super::outgoing::{SessionId, serialize};
use super::remote::Remote;
use super::rooms::Rooms;
use super::sessions::Sessions;
use super::tables::Tables;

/// A registered, unrevoked device key.
pub(super) struct Known {
    fingerprint: Fingerprint,
    /// Base64 SPKI DER.
    key: Arc<str>,
    /// The stored vouches for this key (voucher, base64), oldest first, one per voucher.
    vouches: Vec<(Fingerprint, String)>,
    /// This key's entry in `login_ok`, serialized once: offline, online, then (only when it
    /// has vouches) the same two with them, for sessions that asked. None if it could not be
    /// (a session that would list it is closed instead, see [`LoginSnapshot`]).
    listed: Option<Listed>,
}

/// A device key's `login_ok` entries ([`DeviceInfo`]) as JSON: offline and online, then with
/// its vouches, if any (see [`entry`]).
type Listed = Arc<[Box<RawValue>]>;

/// The entry of `listed` for a key `online` or not, with its vouches if `vouch` (and it has any).
fn entry(listed: &Listed, online: bool, vouch: bool) -> Option<&RawValue> {
    let plain = usize::from(online);
    let with_vouches = if vouch { listed.get(plain + 2) } else { None };
    with_vouches.or_else(|| listed.get(plain)).map(|raw| &**raw)
}

impl Known {
    /// `user`'s key `key` (base64 SPKI DER), whose SHA-256 is `fingerprint`.
    fn new(user: &str, fingerprint: Fingerprint, key: &str) -> Known {
        let mut known = Known {
            fingerprint,
            key: Arc::from(key),
            vouches: Vec::new(),
            listed: None,
        };
        known.relist(user);
        known
    }

    /// Serializes the key's `login_ok` entries anew (after its vouches changed).
    fn relist(&mut self, user: &str) {
        let info = |online, vouches: bool| DeviceInfo {
            user: user.to_string(),
            fingerprint: self.fingerprint,
            key: self.key.to_string(),
            online,
            vouches: if vouches {
                self.vouches.iter().map(|(_, v)| v.clone()).collect()
            } else {
                Vec::new()
            },
        };
        let mut forms = vec![(false, false), (true, false)];
        if !self.vouches.is_empty() {
            forms.extend([(false, true), (true, true)]);
        }
        let listed: Result<Vec<Box<RawValue>>, serde_json::Error> = forms
            .into_iter()
            .map(|(online, vouches)| serde_json::value::to_raw_value(&info(online, vouches)))
            .collect();
        self.listed = match listed {
            Ok(all) => Some(Arc::from(all)),
            Err(e) => {
                tracing::error!(error = %e, user = ?user, "cannot serialize a device key");
                None
            }
        };
    }

    /// The stored vouches for this key, base64.
    pub(super) fn vouches(&self) -> Vec<String> {
        self.vouches.iter().map(|(_, v)| v.clone()).collect()
    }
}

/// Every registered device key, by user (in registration order), and by fingerprint.
#[derive(Default)]
pub(super) struct Directory {
    pub(super) known: BTreeMap<String, Vec<Known>>,
    /// The users holding each registered key (normally one): a chain routed to a device
    /// finds its owners here, not by scanning every key under the hub's lock.
    owners: HashMap<Fingerprint, Vec<String>>,
}

/// A serialized `device` frame.
pub(super) fn device_line(
    user: &str,
    fingerprint: Fingerprint,
    key: Option<&str>,
    event: DeviceEvent,
) -> Option<Bytes> {
    device_line_vouched(user, fingerprint, key, event, Vec::new())
}

/// A serialized `device` frame carrying the key's `vouches` (for sessions that asked).
pub(super) fn device_line_vouched(
    user: &str,
    fingerprint: Fingerprint,
    key: Option<&str>,
    event: DeviceEvent,
    vouches: Vec<String>,
) -> Option<Bytes> {
    serialize(&ServerFrame::Device {
        user: user.to_string(),
        fingerprint,
        key: key.map(str::to_string),
        event,
        vouches,
    })
}

/// What `/whois` shows of a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Whois {
    /// Sessions logged in now.
    pub sessions: u32,
    /// Away message, if set.
    pub away: Option<String>,
    /// Registered device keys and whether each is online.
    pub devices: Vec<WhoisDevice>,
    /// Rooms the asker may see the user in.
    pub rooms: Vec<String>,
}

/// The state a `login_ok` reports, copied under the hub lock; the device keys' entries are
/// shared, serialized once per key ([`Known::listed`]).
pub(super) struct LoginSnapshot {
    user: String,
    id: SessionId,
    device: Fingerprint,
    online: Vec<String>,
    /// Every device key's entry and whether it is online; None if one has no entry.
    devices: Option<Vec<(Listed, bool)>>,
    /// The session asked for vouches: entries carry them.
    vouch: bool,
    room: String,
    rooms: Vec<RoomState>,
}

/// [`ServerFrame::LoginOk`] as it serializes, with the device entries written as they are:
/// `login_ok` lists every registered key (~260 KB with 500 users), and serializing that
/// anew for each login (JSON escaping, a copy of every key) was most of a login's work on
/// the tokio workers. A test holds the two byte for byte.
#[derive(Serialize)]
#[serde(tag = "type", rename = "login_ok")]
struct LoginOkLine<'a> {
    user: &'a str,
    session: SessionId,
    device: Fingerprint,
    online: &'a [String],
    devices: Vec<&'a RawValue>,
    room: &'a str,
    rooms: &'a [RoomState],
}

impl LoginSnapshot {
    /// The `login_ok` line; None (logged) if it cannot be serialized.
    pub(super) fn line(mut self) -> Option<Bytes> {
        self.online.sort();
        let devices: Option<Vec<&RawValue>> = self.devices.as_ref().and_then(|devices| {
            devices
                .iter()
                .map(|(listed, online)| entry(listed, *online, self.vouch))
                .collect()
        });
        let Some(devices) = devices else {
            tracing::error!(user = ?self.user, "login_ok lacks a device key's entry");
            return None;
        };
        serialize(&LoginOkLine {
            user: &self.user,
            session: self.id,
            device: self.device,
            online: &self.online,
            devices,
            room: &self.room,
            rooms: &self.rooms,
        })
    }
}

impl Known {
    /// Base64 SPKI DER.
    pub(super) fn key(&self) -> &str {
        &self.key
    }

    /// The key's fingerprint.
    pub(super) fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }
}

impl Directory {
    /// Sets the registered device keys (at startup): (user, fingerprint, base64 SPKI DER).
    pub(super) fn set(&mut self, keys: impl IntoIterator<Item = (String, Fingerprint, String)>) {
        self.known.clear();
        self.owners.clear();
        for (user, fingerprint, key) in keys {
            self.add(&user, fingerprint, &key);
        }
    }

    /// Records `user`'s key `key` (base64 SPKI DER) unless it is known already.
    pub(super) fn add(&mut self, user: &str, fingerprint: Fingerprint, key: &str) {
        let keys = self.known.entry(user.to_string()).or_default();
        if !keys.iter().any(|k| k.fingerprint == fingerprint) {
            keys.push(Known::new(user, fingerprint, key));
            self.owners
                .entry(fingerprint)
                .or_default()
                .push(user.to_string());
        }
    }

    /// Drops `user` from the owners of `fingerprint`.
    fn disown(&mut self, user: &str, fingerprint: &Fingerprint) {
        if let Some(users) = self.owners.get_mut(fingerprint) {
            users.retain(|u| u != user);
            if users.is_empty() {
                self.owners.remove(fingerprint);
            }
        }
    }

    /// True when `user` has at least one registered, unrevoked device key.
    pub(super) fn has_devices(&self, user: &str) -> bool {
        self.known.get(user).is_some_and(|k| !k.is_empty())
    }

    /// Forgets `user`'s key `device`, and the vouches it made; true if it was known.
    pub(super) fn remove_device(&mut self, user: &str, device: &Fingerprint) -> bool {
        let Some(keys) = self.known.get_mut(user) else {
            return false;
        };
        let before = keys.len();
        keys.retain(|k| k.fingerprint != *device);
        for k in keys.iter_mut() {
            let had = k.vouches.len();
            k.vouches.retain(|(by, _)| by != device);
            if k.vouches.len() != had {
                k.relist(user);
            }
        }
        let removed = keys.len() != before;
        if removed {
            self.disown(user, device);
        }
        removed
    }

    /// `user`'s key `fingerprint`, if registered.
    pub(super) fn get(&self, user: &str, fingerprint: &Fingerprint) -> Option<&Known> {
        self.known
            .get(user)?
            .iter()
            .find(|k| k.fingerprint == *fingerprint)
    }

    /// Records `user`'s vouch (base64 `data`) by `voucher` for `vouched`, replacing one by the
    /// same voucher; false (nothing recorded) unless both keys are registered.
    pub(super) fn add_vouch(
        &mut self,
        user: &str,
        vouched: &Fingerprint,
        voucher: &Fingerprint,
        data: String,
    ) -> bool {
        let Some(keys) = self.known.get_mut(user) else {
            return false;
        };
        if vouched == voucher || !keys.iter().any(|k| k.fingerprint == *voucher) {
            return false;
        }
        let Some(known) = keys.iter_mut().find(|k| k.fingerprint == *vouched) else {
            return false;
        };
        known.vouches.retain(|(by, _)| by != voucher);
        known.vouches.push((*voucher, data));
        known.relist(user);
        true
    }

    /// Forgets every key of `user`; returns their fingerprints.
    pub(super) fn remove_user(&mut self, user: &str) -> Vec<Fingerprint> {
        let keys = self.known.remove(user).unwrap_or_default();
        let fingerprints: Vec<Fingerprint> = keys.into_iter().map(|k| k.fingerprint).collect();
        for fp in &fingerprints {
            self.disown(user, fp);
        }
        fingerprints
    }

    /// Distinct registered device keys.
    pub(super) fn device_count(&self) -> usize {
        self.owners.len()
    }

    /// Every user with a registered key of that fingerprint (normally one), in name order.
    pub(super) fn owners_of(&self, device: &Fingerprint) -> Vec<(String, Fingerprint)> {
        let mut users: Vec<&String> = self.owners.get(device).into_iter().flatten().collect();
        users.sort();
        users.into_iter().map(|u| (u.clone(), *device)).collect()
    }

    /// What `/whois` shows of `user` to `asker` (see `Hub::whois`).
    pub(super) fn whois(
        &self,
        user: &str,
        asker: &str,
        sessions: &Sessions,
        rooms: &Rooms,
        remote: &Remote,
    ) -> Whois {
        let devices = self
            .known
            .get(user)
            .into_iter()
            .flatten()
            .map(|k| WhoisDevice {
                fingerprint: k.fingerprint,
                online: sessions.device_online(&k.fingerprint)
                    || remote.device_online(&k.fingerprint),
            })
            .collect();
        let rooms = rooms
            .of(user)
            .filter(|(_, r)| !r.invite_only || r.members.contains(asker))
            .map(|(name, _)| name.clone())
            .collect();
        Whois {
            sessions: sessions.count(user) as u32 + remote.user_sessions(user),
            away: sessions
                .away
                .get(user)
                .or_else(|| remote.away(user))
                .cloned(),
            devices,
            rooms,
        }
    }
}

impl Tables {
    /// What `login_ok` tells session `id` of `user`, copied under the hub's lock and
    /// serialized after it: every registered device key (by user, then registration) with
    /// whether it is online on any node.
    pub(super) fn snapshot(
        &self,
        user: String,
        id: SessionId,
        device: Fingerprint,
        vouch: bool,
    ) -> LoginSnapshot {
        let Tables {
            sessions,
            rooms,
            remote,
            directory,
            ..
        } = self;
        let mut online: Vec<String> = sessions.by_user.keys().cloned().collect();
        online.extend(
            remote
                .users()
                .filter(|(u, _)| !sessions.by_user.contains_key(*u))
                .map(|(u, _)| u.clone()),
        );
        LoginSnapshot {
            vouch,
            online,
            devices: directory
                .known
                .values()
                .flatten()
                .map(|k| {
                    let online = sessions.device_online(&k.fingerprint)
                        || remote.device_online(&k.fingerprint);
                    Some((Arc::clone(k.listed.as_ref()?), online))
                })
                .collect(),
            room: rooms.default.clone(),
            rooms: rooms.states_of(&user),
            user,
            id,
            device,
        }
    }
}
