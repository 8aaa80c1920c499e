//! Sessions, device keys and accounts coming and going: registering a session (with the
//! snapshot its `login_ok` is built from), unregistering it, forgetting revoked keys and
//! deleted accounts, and the presence and device notices that tell everyone.

use chatd_proto::Fingerprint;
use chatd_proto::frame::{DeviceEvent, PresenceEvent, ServerFrame};

use super::directory::{LoginSnapshot, device_line, device_line_vouched};
use super::outgoing::{Quiet, SessionId, concat_lines, serialize};
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
        let first_of_device = self.sessions.insert(id, new);
        self.directory.add(&user, device, &key);
        let join = (count == 0)
            .then(|| {
                serialize(&ServerFrame::Presence {
                    user: user.clone(),
                    event: PresenceEvent::Join,
                    reason: None,
                })
            })
            .flatten();
        let online = first_of_device
            .then(|| device_line(&user, device, Some(&key), DeviceEvent::Online))
            .flatten();
        // Sessions that asked for vouches get the key's vouches with it, when it has any.
        let vouches = self
            .directory
            .get(&user, &device)
            .map(|k| k.vouches())
            .unwrap_or_default();
        let vouched_online = (first_of_device && !vouches.is_empty())
            .then(|| device_line_vouched(&user, device, Some(&key), DeviceEvent::Online, vouches))
            .flatten();
        match vouched_online {
            Some(vouched_online) => {
                let plain = concat_lines([join.clone(), online]);
                let rich = concat_lines([join, Some(vouched_online)]);
                if let (Some(plain), Some(rich)) = (plain, rich) {
                    self.sessions
                        .deliver_all_split(&Quiet(plain), &Quiet(rich), Some(id));
                }
            }
            None => {
                if let Some(lines) = concat_lines([join, online]) {
                    self.sessions.deliver_all(&Quiet(lines), Some(id));
                }
            }
        }
        let snapshot =
            self.directory
                .snapshot(user, id, device, vouch, &self.sessions, &self.rooms);
        (snapshot, self.offline.seq)
    }

    /// Removes a session; tells everyone (quietly) when its device key or its user goes
    /// offline.
    pub(super) fn unregister(&mut self, id: SessionId, reason: &str) {
        let Some((user, device, last_of_device, last_of_user)) = self.sessions.remove(id) else {
            return;
        };
        self.offline.changed();
        let offline = last_of_device
            .then(|| device_line(&user, device, None, DeviceEvent::Offline))
            .flatten();
        let leave = last_of_user
            .then(|| {
                serialize(&ServerFrame::Presence {
                    user,
                    event: PresenceEvent::Leave,
                    reason: Some(reason.to_string()),
                })
            })
            .flatten();
        if let Some(lines) = concat_lines([offline, leave]) {
            self.sessions.deliver_all(&Quiet(lines), None);
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
