//! `ServerFrame` parsing (every frame type), as `chat` runs it on each line from the server.
//! Properties: no panic; decode(encode(x)) == x.
#![no_main]

#[path = "common/mod.rs"]
mod common;

use chatd_proto::ServerFrame;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = common::round_trip::<ServerFrame>(data);
});
