//! `LineCodec` fed arbitrary bytes in arbitrary chunkings.
//!
//! Input: `[max_hi, max_lo, chunk_seed, stream...]`. The cap is the first two bytes
//! (big-endian); `chunk_seed` drives how the stream is cut into reads, as a socket would.
//! Properties: no panic; whatever the chunking, the items equal those of a simple model that
//! sees the whole stream at once; no line longer than the cap comes out; and the buffer never
//! holds more than the cap once the decoder has nothing more to say.
#![no_main]

use bytes::BytesMut;
use chatd_proto::{LineCodec, LineError};
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::Decoder;

type Item = Result<String, LineError>;

/// The specification: every newline-terminated line is an item; an overlong line (counted
/// with any `\r`) is one `TooLong`, as is an overlong unterminated tail; a short tail is dropped.
fn model(max: usize, stream: &[u8]) -> Vec<Item> {
    let mut out = Vec::new();
    let mut parts: Vec<&[u8]> = stream.split(|b| *b == b'\n').collect();
    let tail = parts.pop().unwrap_or_default();
    for line in parts {
        if line.len() > max {
            out.push(Err(LineError::TooLong { max }));
            continue;
        }
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        out.push(String::from_utf8(line.to_vec()).map_err(|_| LineError::NotUtf8));
    }
    if tail.len() > max {
        out.push(Err(LineError::TooLong { max }));
    }
    out
}

/// Drains the decoder the way `FramedRead` does: decode until it says `None`.
fn drain(codec: &mut LineCodec, buf: &mut BytesMut, eof: bool, out: &mut Vec<Item>) {
    loop {
        let step = if eof {
            codec.decode_eof(buf)
        } else {
            codec.decode(buf)
        };
        match step {
            Ok(Some(item)) => out.push(item),
            Ok(None) => break,
            Err(e) => panic!("LineCodec returned an I/O error on plain bytes: {e}"),
        }
    }
    assert!(
        buf.len() <= codec.max_len(),
        "{} bytes buffered with a cap of {}",
        buf.len(),
        codec.max_len()
    );
}

fuzz_target!(|data: &[u8]| {
    let [hi, lo, seed, stream @ ..] = data else {
        return;
    };
    let max = usize::from(u16::from_be_bytes([*hi, *lo]));
    let mut codec = LineCodec::new(max);
    let mut buf = BytesMut::new();
    let mut got = Vec::new();
    // xorshift from the seed: reads of 1..=64 bytes, reproducible from the input alone.
    let mut state = u32::from(*seed) | 0x100;
    let mut rest = stream;
    while !rest.is_empty() {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let n = (state % 64 + 1) as usize;
        let (chunk, tail) = rest.split_at(n.min(rest.len()));
        buf.extend_from_slice(chunk);
        drain(&mut codec, &mut buf, false, &mut got);
        rest = tail;
    }
    drain(&mut codec, &mut buf, true, &mut got);
    assert!(buf.is_empty(), "bytes left after EOF");

    for line in got.iter().flatten() {
        assert!(
            line.len() <= max,
            "a {}-byte line passed a cap of {max}",
            line.len()
        );
    }
    assert_eq!(got, model(max, stream));
});
