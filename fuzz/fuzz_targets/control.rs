//! Control-socket messages: `ControlRequest` (parsed by chatd) and `ControlResponse` (parsed
//! by chatctl), each input tried as both. Properties: no panic; decode(encode(x)) == x.
#![no_main]

#[path = "common/mod.rs"]
mod common;

use chatd_proto::control::{ControlRequest, ControlResponse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some((request, _)) = common::round_trip::<ControlRequest>(data) {
        // chatd validates this name first; Debug hides passwords. Neither may panic.
        let _ = request.user();
        let _ = format!("{request:?}");
    }
    let _ = common::round_trip::<ControlResponse>(data);
});
