//! `WireCodec` (lines and binary envelope frames) fed arbitrary bytes in arbitrary chunkings.
//!
//! Input: `[max_hi, max_lo, chunk_seed, shape, rest...]`. The cap is the first two bytes
//! (big-endian); `chunk_seed` drives how the stream is cut into reads, as a socket would. With
//! an even `shape` the stream is `rest` as it is; with an odd one `rest` is a list of pieces
//! (lines, binary frames whose length fields fit their payloads, overlong frames, raw bytes)
//! from which the stream is built, so frames and lines interleave far more often than random
//! bytes would make them.
//!
//! Properties: no panic; whatever the chunking, the items equal those of a simple model that
//! sees the whole stream at once; no line or binary payload longer than the cap comes out; and
//! the buffer never holds more than one frame's worth (cap plus binary header) once the decoder
//! has nothing more to say.
#![no_main]

use bytes::BytesMut;
use chatd_proto::codec::{BINARY_ENVELOPE, BINARY_MARKER, BINARY_SEND};
use chatd_proto::{LineError, Wire, WireCodec};
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::Decoder;

type Item = Result<Wire, LineError>;

/// Marker, kind and the u32 length in front of every binary payload.
const HEADER: usize = 6;
/// The `envelope` frame's u64 timestamp, at the start of its payload.
const TS: usize = 8;
/// Largest stream the piece list builds, so one input stays quick.
const MAX_BUILT: usize = 1 << 20;

/// The specification (docs/PROTOCOL.md, "Binary envelope frames"), over the whole stream:
/// where an item starts, a 0x00 byte starts a binary frame and anything else a line. A frame
/// whose length is over the cap is one `TooLong` as soon as its header is there, and its
/// payload is skipped; otherwise it is an item once its payload is complete (`Send`,
/// `Envelope`, or `ShortBinary` / `UnknownBinary`). Lines are as in `line_codec`. Anything cut
/// off by the end of the stream is dropped, except an overlong line, which is one `TooLong`.
fn model(max: usize, mut s: &[u8]) -> Vec<Item> {
    let mut out = Vec::new();
    while let Some(&first) = s.first() {
        if first == BINARY_MARKER {
            let Some(header) = s.get(..HEADER) else {
                break;
            };
            let kind = header[1];
            let len = u32::from_be_bytes([header[2], header[3], header[4], header[5]]) as usize;
            if len > max {
                out.push(Err(LineError::TooLong { max }));
                s = s.get(HEADER + len..).unwrap_or_default();
                continue;
            }
            let Some(payload) = s.get(HEADER..HEADER + len) else {
                break;
            };
            out.push(match kind {
                BINARY_SEND => Ok(Wire::Send(payload.to_vec().into())),
                BINARY_ENVELOPE => match payload.split_first_chunk::<TS>() {
                    Some((ts, data)) => Ok(Wire::Envelope {
                        ts: u64::from_be_bytes(*ts),
                        data: data.to_vec().into(),
                    }),
                    None => Err(LineError::ShortBinary),
                },
                kind => Err(LineError::UnknownBinary { kind }),
            });
            s = &s[HEADER + len..];
            continue;
        }
        let Some(newline) = s.iter().position(|b| *b == b'\n') else {
            if s.len() > max {
                out.push(Err(LineError::TooLong { max }));
            }
            break;
        };
        let line = &s[..newline];
        s = &s[newline + 1..];
        if line.len() > max {
            out.push(Err(LineError::TooLong { max }));
            continue;
        }
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        out.push(
            String::from_utf8(line.to_vec())
                .map(Wire::Line)
                .map_err(|_| LineError::NotUtf8),
        );
    }
    out
}

/// Takes `n` bytes off the front of `rest` (fewer if it is shorter).
fn take<'a>(rest: &mut &'a [u8], n: usize) -> &'a [u8] {
    let (head, tail) = rest.split_at(n.min(rest.len()));
    *rest = tail;
    head
}

/// One byte off the front of `rest`, 0 once it is empty.
fn byte(rest: &mut &[u8]) -> u8 {
    take(rest, 1).first().copied().unwrap_or(0)
}

/// The kind of a binary frame piece: `send` or `envelope` by the op's high part, or else the
/// next input byte.
fn kind(op: u8, rest: &mut &[u8]) -> u8 {
    match op / 5 % 3 {
        0 => BINARY_SEND,
        1 => BINARY_ENVELOPE,
        _ => byte(rest),
    }
}

/// A binary frame header: `len` is what the frame says, whatever follows.
fn header(out: &mut Vec<u8>, kind: u8, len: usize) {
    out.push(BINARY_MARKER);
    out.push(kind);
    out.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes());
}

/// Builds a stream from a list of pieces, each an op byte (the piece is `op % 5`) and its
/// operands.
fn build(max: usize, mut rest: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while !rest.is_empty() && out.len() < MAX_BUILT {
        let op = byte(&mut rest);
        match op % 5 {
            // A line of up to 255 bytes of input (its own newlines and markers included).
            0 => {
                let n = usize::from(byte(&mut rest));
                out.extend_from_slice(take(&mut rest, n));
                out.push(b'\n');
            }
            // A binary frame of a known or arbitrary kind whose length fits its payload.
            1 => {
                let kind = kind(op, &mut rest);
                let n = usize::from(byte(&mut rest));
                let payload = take(&mut rest, n);
                header(&mut out, kind, payload.len());
                out.extend_from_slice(payload);
            }
            // A frame over the cap by 1 to 256 bytes, its payload one repeated byte (a newline
            // or a marker makes a skip that ends early visible), possibly cut short.
            2 => {
                let kind = kind(op, &mut rest);
                let len = max + 1 + usize::from(byte(&mut rest));
                let fill = byte(&mut rest);
                let cut = byte(&mut rest) % 4 == 0;
                header(&mut out, kind, len);
                let have = if cut { len / 2 } else { len };
                out.resize(out.len() + have.min(MAX_BUILT), fill);
            }
            // A line as long as the cap, plus up to 3 bytes (the first with a `\r`).
            3 => {
                let extra = usize::from(op / 5) % 4;
                out.resize(out.len() + max + extra, b'a');
                if extra == 1 {
                    if let Some(last) = out.last_mut() {
                        *last = b'\r';
                    }
                }
                out.push(b'\n');
            }
            // Raw bytes: partial headers, stray markers, garbage.
            _ => {
                let n = usize::from(byte(&mut rest)) % 16;
                out.extend_from_slice(take(&mut rest, n));
            }
        }
    }
    out
}

/// Drains the decoder the way `FramedRead` does: decode until it says `None`.
fn drain(codec: &mut WireCodec, buf: &mut BytesMut, eof: bool, out: &mut Vec<Item>) {
    loop {
        let step = if eof {
            codec.decode_eof(buf)
        } else {
            codec.decode(buf)
        };
        match step {
            Ok(Some(item)) => out.push(item),
            Ok(None) => break,
            Err(e) => panic!("WireCodec returned an I/O error on plain bytes: {e}"),
        }
    }
    assert!(
        buf.len() <= codec.max_len() + HEADER,
        "{} bytes buffered with a cap of {}",
        buf.len(),
        codec.max_len()
    );
}

fuzz_target!(|data: &[u8]| {
    let [hi, lo, seed, shape, rest @ ..] = data else {
        return;
    };
    let max = usize::from(u16::from_be_bytes([*hi, *lo]));
    let built;
    let stream = if shape % 2 == 0 {
        rest
    } else {
        built = build(max, rest);
        &built[..]
    };
    let mut codec = WireCodec::new(max);
    let mut buf = BytesMut::new();
    let mut got = Vec::new();
    // xorshift from the seed: mostly reads of 1..=64 bytes, now and then up to 4 KiB, so a
    // large frame does not take thousands of reads; reproducible from the input alone.
    let mut state = u32::from(*seed) | 0x100;
    let mut left = stream;
    while !left.is_empty() {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let n = if state % 8 == 0 {
            (state >> 3) % 4096 + 1
        } else {
            state % 64 + 1
        } as usize;
        buf.extend_from_slice(take(&mut left, n));
        drain(&mut codec, &mut buf, false, &mut got);
    }
    drain(&mut codec, &mut buf, true, &mut got);
    assert!(buf.is_empty(), "bytes left after EOF");

    for item in got.iter().flatten() {
        let len = match item {
            Wire::Line(line) => line.len(),
            Wire::Send(data) => data.len(),
            Wire::Envelope { data, .. } => data.len() + TS,
        };
        assert!(len <= max, "a {len}-byte item passed a cap of {max}");
    }
    assert_eq!(got, model(max, stream));
});
