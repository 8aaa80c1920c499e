//! The device-key directory: every registered, unrevoked key, each with its `login_ok` entry
//! serialized once; the `login_ok` line built from a snapshot; `/whois`; forgetting revoked
//! keys and deleted accounts.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use chatd_proto::Fingerprint;
use chatd_proto::frame::{DeviceEvent, DeviceInfo, RoomState, ServerFrame, WhoisDevice};
use serde::Serialize;
use serde_json::value::RawValue;

use super::outgoing::serialize;
use super::{Hub, Inner, SessionId};

/// A registered, unrevoked device key.
pub(super) struct Known {
    pub(super) fingerprint: Fingerprint,
    /// This key's entry in `login_ok`, serialized once: offline, then online. None if it
    /// could not be (a session that would list it is closed instead, see [`LoginSnapshot`]).
    listed: Option<Listed>,
}

/// A device key's `login_ok` entry ([`DeviceInfo`]) as JSON, offline and online.
type Listed = Arc<[Box<RawValue>; 2]>;

impl Known {
    /// `user`'s key `key` (base64 SPKI DER), whose SHA-256 is `fingerprint`.
    pub(super) fn new(user: &str, fingerprint: Fingerprint, key: &str) -> Known {
        let info = |online| DeviceInfo {
            user: user.to_string(),
            fingerprint,
            key: key.to_string(),
            online,
        };
        let listed = serde_json::value::to_raw_value(&info(false))
            .and_then(|offline| Ok([offline, serde_json::value::to_raw_value(&info(true))?]));
        let listed = match listed {
            Ok(both) => Some(Arc::new(both)),
            Err(e) => {
                tracing::error!(error = %e, %user, "cannot serialize a device key");
                None
            }
        };
        Known {
            fingerprint,
            listed,
        }
    }
}

/// Every registered device key, by user (in registration order).
#[derive(Default)]
pub(super) struct Directory {
    pub(super) known: BTreeMap<String, Vec<Known>>,
    /// Registered devices with no session, as of the last change to sessions or keys; only
    /// trusted after a delivery that every session accepted (then none is closing).
    pub(super) everyone_offline: Option<Vec<(String, Fingerprint)>>,
}

/// A serialized `device` frame.
pub(super) fn device_line(
    user: &str,
    fingerprint: Fingerprint,
    key: Option<&str>,
    event: DeviceEvent,
) -> Option<Bytes> {
    serialize(&ServerFrame::Device {
        user: user.to_string(),
        fingerprint,
        key: key.map(str::to_string),
        event,
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
        let Some(devices) = &self.devices else {
            tracing::error!(user = %self.user, "login_ok lacks a device key's entry");
            return None;
        };
        serialize(&LoginOkLine {
            user: &self.user,
            session: self.id,
            device: self.device,
            online: &self.online,
            devices: devices
                .iter()
                .map(|(listed, online)| &*listed[usize::from(*online)])
                .collect(),
            room: &self.room,
            rooms: &self.rooms,
        })
    }
}

impl Inner {
    /// What `login_ok` tells session `id` of `user`, copied under the lock and serialized
    /// after it: every registered device key (by user, then registration) with whether it
    /// is online.
    pub(super) fn login_snapshot(
        &self,
        user: String,
        id: SessionId,
        device: Fingerprint,
    ) -> LoginSnapshot {
        let rooms = self
            .rooms
            .map
            .iter()
            .filter(|(_, r)| r.members.contains(&user))
            .map(|(name, r)| r.state(name))
            .collect();
        let by_device = &self.sessions.by_device;
        LoginSnapshot {
            online: self.sessions.by_user.keys().cloned().collect(),
            devices: self
                .directory
                .known
                .values()
                .flatten()
                .map(|k| {
                    let online = by_device.contains_key(&k.fingerprint);
                    Some((Arc::clone(k.listed.as_ref()?), online))
                })
                .collect(),
            room: self.rooms.default.clone(),
            rooms,
            user,
            id,
            device,
        }
    }

    /// Tells every session about a device event.
    fn announce_device(&mut self, user: &str, fingerprint: Fingerprint, event: DeviceEvent) {
        if let Some(line) = device_line(user, fingerprint, None, event) {
            self.sessions.deliver_all(&line, None);
        }
    }
}

impl Hub {
    /// Sets the registered device keys (at startup): (user, fingerprint, base64 SPKI DER).
    pub fn set_known(&self, keys: impl IntoIterator<Item = (String, Fingerprint, String)>) {
        let mut inner = self.lock();
        let directory = &mut inner.directory;
        directory.everyone_offline = None;
        directory.known.clear();
        for (user, fingerprint, key) in keys {
            let known = Known::new(&user, fingerprint, &key);
            directory.known.entry(user).or_default().push(known);
        }
    }

    /// True when `user` has at least one registered, unrevoked device key.
    pub fn has_devices(&self, user: &str) -> bool {
        self.lock().directory.has_devices(user)
    }

    /// Forgets a revoked device key and tells everyone to encrypt nothing more to it.
    pub fn forget_device(&self, user: &str, device: &Fingerprint) {
        let mut inner = self.lock();
        inner.directory.everyone_offline = None;
        let Some(keys) = inner.directory.known.get_mut(user) else {
            return;
        };
        let before = keys.len();
        keys.retain(|k| k.fingerprint != *device);
        if keys.len() != before {
            inner.announce_device(user, *device, DeviceEvent::Removed);
        }
    }

    /// Forgets every device key and room membership of a deleted account, telling everyone.
    pub fn forget_user(&self, user: &str) {
        for room in self.rooms_of(user) {
            self.room_parted(&room, user, None);
        }
        let mut inner = self.lock();
        inner.directory.everyone_offline = None;
        let keys = inner.directory.known.remove(user).unwrap_or_default();
        for k in keys {
            inner.announce_device(user, k.fingerprint, DeviceEvent::Removed);
        }
    }

    /// What `/whois` shows of `user`: sessions, away message, device keys with their state.
    /// `rooms` are those `user` is in that `asker` may see (not invite-only, or shared).
    pub fn whois(&self, user: &str, asker: &str) -> Whois {
        let inner = self.lock();
        let sessions = &inner.sessions;
        let devices = inner
            .directory
            .known
            .get(user)
            .into_iter()
            .flatten()
            .map(|k| WhoisDevice {
                fingerprint: k.fingerprint,
                online: sessions.by_device.contains_key(&k.fingerprint),
            })
            .collect();
        let rooms = inner
            .rooms
            .map
            .iter()
            .filter(|(_, r)| r.members.contains(user))
            .filter(|(_, r)| !r.invite_only || r.members.contains(asker))
            .map(|(name, _)| name.clone())
            .collect();
        Whois {
            sessions: sessions.by_user.get(user).map_or(0, Vec::len) as u32,
            away: sessions.away.get(user).cloned(),
            devices,
            rooms,
        }
    }
}

impl Directory {
    /// True when `user` has at least one registered, unrevoked device key.
    pub(super) fn has_devices(&self, user: &str) -> bool {
        self.known.get(user).is_some_and(|k| !k.is_empty())
    }
}
