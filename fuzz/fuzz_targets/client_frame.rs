//! `ClientFrame` parsing (every frame type), as chatd runs it on each line from a client.
//! Properties: no panic; decode(encode(x)) == x; the `type` tag written is `kind()`.
#![no_main]

#[path = "common/mod.rs"]
mod common;

use chatd_proto::ClientFrame;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some((frame, line)) = common::round_trip::<ClientFrame>(data) {
        let tag = format!("{{\"type\":\"{}\"", frame.kind());
        assert!(line.starts_with(&tag), "{line} does not start with {tag}");
        // Debug is hand-written to hide secrets; it must not panic on any frame either.
        let _ = format!("{frame:?}");
    }
});
