//! Sessions, device keys and accounts coming and going: registering a session (with the
//! snapshot its `login_ok` is built from), unregistering it, forgetting revoked keys and
//! deleted accounts, and the presence and device notices that tell everyone.

use chatd_proto::Fingerprint;
use chatd_proto::frame::{DeviceEvent, PresenceEvent, ServerFrame};

use super::directory::{LoginSnapshot, device_line, device_line_vouched};
use super::outgoing::{Quiet, SessionId, concat_lines, serialize};
use super::remote::DeviceOnNode;
use super::sessions::NewSession;
use super::tables::Tables;

impl Tables {
    /// Adds session `id` of `new.user`, which has `count` sessions already, and tells everyone
    /// else about a new user and a new device key (quietly); the snapshot for its `login_ok`
    /// and the number of the last offline job (see `Hub::register`).
    pub(super) fn register(
        &mut self,
        id: SessionId,
        count: usize,
        new: NewSession,
    ) -> (LoginSnapshot, u64) {
        self.offline.changed();
        let (user, device, key, vouch) = (
            new.user.clone(),
            new.device,
            std::sync::Arc::clone(&new.key),
            new.vouch,
        );
        let remote_sessions = self.remote.user_sessions(&user);
        let remote_device = self.remote.device_online(&device);
        let first_of_device = self.sessions.insert(id, new);
        self.directory.add(&user, device, &key);
        self.announce_online(
            &user,
            device,
            &key,
            count == 0 && remote_sessions == 0,
            first_of_device && !remote_device,
            Some(id),
        );
        self.tell_bus(&user, device, &key);
        let snapshot = self.snapshot(user, id, device, vouch);
        (snapshot, self.offline.seq)
    }

    /// Tells every session but `except` (quietly) that `user` came online (`join`) and that
    /// their device key `device` did (`online`).
    pub(super) fn announce_online(
        &mut self,
        user: &str,
        device: Fingerprint,
        key: &str,
        join: bool,
        online: bool,
        except: Option<SessionId>,
    ) {
        let join = join
            .then(|| {
                serialize(&ServerFrame::Presence {
                    user: user.to_string(),
                    event: PresenceEvent::Join,
                    reason: None,
                })
            })
            .flatten();
        let online_line = online
            .then(|| device_line(user, device, Some(key), DeviceEvent::Online))
            .flatten();
        // Sessions that asked for vouches get the key's vouches with it, when it has any.
        let vouches = self
            .directory
            .get(user, &device)
            .map(|k| k.vouches())
            .unwrap_or_default();
        let vouched_online = (online && !vouches.is_empty())
            .then(|| device_line_vouched(user, device, Some(key), DeviceEvent::Online, vouches))
            .flatten();
        match vouched_online {
            Some(vouched_online) => {
                let plain = concat_lines([join.clone(), online_line]);
                let rich = concat_lines([join, Some(vouched_online)]);
                if let (Some(plain), Some(rich)) = (plain, rich) {
                    self.sessions
                        .deliver_all_split(&Quiet(plain), &Quiet(rich), except);
                }
            }
            None => {
                if let Some(lines) = concat_lines([join, online_line]) {
                    self.sessions.deliver_all(&Quiet(lines), except);
                }
            }
        }
    }

    /// Tells every session (quietly) that `user`'s device key `device` went offline
    /// (`offline`) and that `user` did (`leave`, for `reason`).
    pub(super) fn announce_offline(
        &mut self,
        user: &str,
        device: Fingerprint,
        offline: bool,
        leave: bool,
        reason: &str,
    ) {
        let offline = offline
            .then(|| device_line(user, device, None, DeviceEvent::Offline))
            .flatten();
        let leave = leave
            .then(|| {
                serialize(&ServerFrame::Presence {
                    user: user.to_string(),
                    event: PresenceEvent::Leave,
                    reason: Some(reason.to_string()),
                })
            })
            .flatten();
        if let Some(lines) = concat_lines([offline, leave]) {
            self.sessions.deliver_all(&Quiet(lines), None);
        }
    }

    /// Hands the bus (if any) the number of sessions `device` has here now.
    fn tell_bus(&mut self, user: &str, device: Fingerprint, key: &str) {
        if self.remote.bus.is_none() {
            return;
        }
        let sessions = self
            .sessions
            .by_device
            .get(&device)
            .map_or(0, |ids| ids.len() as u32);
        let handle = self.remote.handle(user, device);
        self.remote.presence(DeviceOnNode {
            user: user.to_string(),
            device,
            key: key.to_string(),
            handle,
            sessions,
        });
    }

    /// Removes a session; tells everyone (quietly) when its device key or its user goes
    /// offline.
    pub(super) fn unregister(&mut self, id: SessionId, reason: &str) {
        let Some((user, device, last_of_device, last_of_user)) = self.sessions.remove(id) else {
            return;
        };
        self.offline.changed();
        let offline = last_of_device && !self.remote.device_online(&device);
        let leave = last_of_user && self.remote.user_sessions(&user) == 0;
        self.announce_offline(&user, device, offline, leave, reason);
        let key = self
            .directory
            .get(&user, &device)
            .map(|k| k.key().to_string())
            .unwrap_or_default();
        self.tell_bus(&user, device, &key);
    }

    /// What another node says of one of its devices: applied, and this node's sessions told
    /// when the device or its user came or went as far as the whole cluster goes.
    pub(super) fn remote_device(&mut self, node: &str, d: &DeviceOnNode, reason: &str) {
        self.offline.changed();
        if d.sessions > 0 && !d.key.is_empty() && self.directory.get(&d.user, &d.device).is_none() {
            // Registered on that node since this one read the store.
            self.directory.add(&d.user, d.device, &d.key);
        }
        let local_device = self.sessions.device_online(&d.device);
        let local_user = self.sessions.count(&d.user) > 0;
        let (was, is, before, after) = self.remote.apply(node, d);
        if !local_device && !was && is {
            let join = !local_user && before == 0;
            self.announce_online(&d.user, d.device, &d.key, join, true, None);
        } else if !local_user && before == 0 && after > 0 {
            self.announce_online(&d.user, d.device, &d.key, true, false, None);
        }
        let offline = !local_device && was && !is;
        let leave = !local_user && before > 0 && after == 0;
        if offline || leave {
            self.announce_offline(&d.user, d.device, offline, leave, reason);
        }
    }

    /// Forgets a revoked device key and tells everyone to encrypt nothing more to it.
    pub(super) fn forget_device(&mut self, user: &str, device: &Fingerprint) {
        self.offline.changed();
        if self.directory.remove_device(user, device) {
            self.removed(user, *device);
        }
    }

    /// Forgets every device key and room membership of a deleted account, telling everyone.
    pub(super) fn forget_user(&mut self, user: &str) {
        let rooms: Vec<String> = self.rooms.of(user).map(|(name, _)| name.clone()).collect();
        for room in rooms {
            self.rooms.parted(&room, user, None, &mut self.sessions);
        }
        self.offline.changed();
        for device in self.directory.remove_user(user) {
            self.removed(user, device);
        }
    }

    /// Records `user`'s vouch by `voucher` for `vouched` (base64 `data`) and sends it to the
    /// sessions that asked for vouches; false when either key is no longer registered.
    pub(super) fn add_vouch(
        &mut self,
        user: &str,
        vouched: &Fingerprint,
        voucher: &Fingerprint,
        data: String,
    ) -> bool {
        if !self
            .directory
            .add_vouch(user, vouched, voucher, data.clone())
        {
            return false;
        }
        if let Some(line) = serialize(&ServerFrame::Vouch {
            user: user.to_string(),
            data,
        }) {
            self.sessions.deliver_vouchers(&line);
        }
        true
    }

    /// Tells every session that `user`'s key `device` is gone.
    fn removed(&mut self, user: &str, device: Fingerprint) {
        if let Some(line) = device_line(user, device, None, DeviceEvent::Removed) {
            self.sessions.deliver_all(&line, None);
        }
    }
}
