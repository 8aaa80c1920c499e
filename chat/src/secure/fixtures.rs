//! Test keys and listings shared by the end-to-end layer's unit tests.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use chatd_proto::e2e::DeviceKey;
use chatd_proto::frame::{DeviceInfo, RoomState};

/// Fixed device keys: alice's, bob's, carol's, and two more (dave's, erin's).
const PEMS: [&str; 5] = [
    include_str!("../../../proto/src/e2e/testdata/alice.pem"),
    include_str!("../../../proto/src/e2e/testdata/bob.pem"),
    include_str!("../../../proto/src/e2e/testdata/carol.pem"),
    include_str!("testdata/dave.pem"),
    include_str!("testdata/erin.pem"),
];

/// Fixed key number `i`.
pub(super) fn fixed_key(i: usize) -> DeviceKey {
    DeviceKey::from_pkcs8_pem(PEMS[i]).unwrap()
}

/// A `login_ok.devices[]` entry: key `i` as `user`'s, online, without vouches.
pub(super) fn device_info(user: &str, i: usize) -> DeviceInfo {
    let k = fixed_key(i);
    DeviceInfo {
        user: user.into(),
        fingerprint: k.fingerprint(),
        key: BASE64.encode(k.public().to_spki_der()),
        online: true,
        vouches: Vec::new(),
    }
}

/// A public room `name` with `members`.
pub(super) fn room_state(name: &str, members: &[&str]) -> RoomState {
    RoomState {
        name: name.into(),
        topic: String::new(),
        members: members.iter().map(|m| m.to_string()).collect(),
        invite_only: false,
        owner: None,
    }
}
