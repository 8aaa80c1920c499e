//! Newline-delimited framing with a hard cap on line length, and the binary frames that
//! carry envelopes between clients and chatd once `hello` agreed on them.
//!
//! Unlike `tokio_util::codec::LinesCodec`, a line that is too long or not UTF-8 is
//! reported as an item (`Err(LineError)`) rather than a stream error, so the reader
//! can answer with an error frame and keep the connection; only I/O errors end it.
//!
//! A binary frame (docs/PROTOCOL.md, "Binary envelope frames") starts where a line would,
//! with a byte no JSON line starts with:
//!
//! ```text
//! 0x00  u8 kind  u32 length (big-endian)  [length] payload
//!       'S' send:     payload = the envelope bytes (client to server)
//!       'E' envelope: payload = u64 server time (ms) || the envelope bytes (server to client)
//! ```

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

/// Default cap on one line, in bytes, excluding the newline.
pub const DEFAULT_MAX_LINE: usize = 64 * 1024;

/// A recoverable problem with one line; the stream continues after it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    /// The line exceeded the cap; its bytes up to the next newline are discarded.
    #[error("line longer than {max} bytes")]
    TooLong {
        /// The cap in force.
        max: usize,
    },
    /// The line is not valid UTF-8.
    #[error("line is not valid UTF-8")]
    NotUtf8,
    /// A binary frame of a kind this side does not know; its bytes were skipped.
    #[error("unknown binary frame kind 0x{kind:02x}")]
    UnknownBinary {
        /// The frame's kind byte.
        kind: u8,
    },
    /// A binary `envelope` frame too short to hold its timestamp.
    #[error("binary envelope frame shorter than its 8-byte timestamp")]
    ShortBinary,
}

/// First byte of a binary frame; a JSON line never starts with it.
pub const BINARY_MARKER: u8 = 0x00;
/// Binary frame kind of a client's `send`.
pub const BINARY_SEND: u8 = b'S';
/// Binary frame kind of the server's `envelope`.
pub const BINARY_ENVELOPE: u8 = b'E';
/// Marker, kind and the u32 length.
const BINARY_HEADER: usize = 6;
/// The `envelope` frame's timestamp.
const BINARY_TS: usize = 8;

/// One item read off the wire: a text line or a binary envelope frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wire {
    /// A line, without its newline (a JSON frame, or blank).
    Line(String),
    /// A binary `send`: the envelope bytes, exactly as sealed.
    Send(Bytes),
    /// A binary `envelope`: the server's receive time and the envelope bytes. The sender's
    /// user and device are the envelope header's, which the server checked against the
    /// sending session.
    Envelope {
        /// Server receive time, milliseconds since the Unix epoch.
        ts: u64,
        /// The envelope bytes, exactly as sent.
        data: Bytes,
    },
}

/// A binary `send` frame carrying `envelope`.
pub fn binary_send(envelope: &[u8]) -> Bytes {
    binary_frame(BINARY_SEND, &[], envelope)
}

/// A binary `envelope` frame carrying `envelope`, received by the server at `ts`.
pub fn binary_envelope(ts: u64, envelope: &[u8]) -> Bytes {
    binary_frame(BINARY_ENVELOPE, &ts.to_be_bytes(), envelope)
}

fn binary_frame(kind: u8, prefix: &[u8], body: &[u8]) -> Bytes {
    let len = prefix.len() + body.len();
    let mut out = BytesMut::with_capacity(BINARY_HEADER + len);
    out.put_u8(BINARY_MARKER);
    out.put_u8(kind);
    // Envelopes are capped far below 4 GiB (docs/E2E-ENVELOPE.md); saturate rather than wrap
    // so an impossible size is refused by the peer's cap instead of misframing the stream.
    out.put_u32(u32::try_from(len).unwrap_or(u32::MAX));
    out.put_slice(prefix);
    out.put_slice(body);
    out.freeze()
}

/// Splits a byte stream into UTF-8 lines of at most `max` bytes.
#[derive(Debug, Clone)]
pub struct LineCodec {
    max: usize,
    /// Bytes already scanned for a newline, so a slow trickle is not rescanned.
    scanned: usize,
    /// True while skipping the remainder of an overlong line.
    discarding: bool,
}

impl LineCodec {
    /// A codec that accepts lines of up to `max` bytes (newline excluded).
    pub fn new(max: usize) -> Self {
        LineCodec {
            max,
            scanned: 0,
            discarding: false,
        }
    }

    /// The cap in force.
    pub fn max_len(&self) -> usize {
        self.max
    }

    /// True between lines: nothing of a partial line has been seen.
    fn at_boundary(&self) -> bool {
        self.scanned == 0 && !self.discarding
    }

    /// Drops what is left of an overlong line (already reported) up to and including its
    /// newline. True when no such line is pending any more; false when all of `buf` was
    /// dropped and the newline is still to come. Stopping right after the newline lets
    /// [`WireCodec`] see a binary frame that follows it.
    fn skip_discarded(&mut self, buf: &mut BytesMut) -> bool {
        if !self.discarding {
            return true;
        }
        // While discarding, `scanned` is 0: nothing of the line is kept.
        match buf.iter().position(|b| *b == b'\n') {
            Some(i) => {
                buf.advance(i + 1);
                self.discarding = false;
                true
            }
            None => {
                buf.clear();
                false
            }
        }
    }
}

impl Default for LineCodec {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_LINE)
    }
}

impl Decoder for LineCodec {
    type Item = Result<String, LineError>;
    type Error = std::io::Error;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Self::Item>, Self::Error> {
        if !self.skip_discarded(buf) {
            return Ok(None);
        }
        let newline = buf[self.scanned..].iter().position(|b| *b == b'\n');
        match newline {
            Some(i) => {
                let end = self.scanned + i;
                self.scanned = 0;
                if end > self.max {
                    buf.advance(end + 1);
                    return Ok(Some(Err(LineError::TooLong { max: self.max })));
                }
                let line = buf.split_to(end + 1);
                let mut line = &line[..end];
                if let Some(stripped) = line.strip_suffix(b"\r") {
                    line = stripped;
                }
                Ok(Some(
                    String::from_utf8(line.to_vec()).map_err(|_| LineError::NotUtf8),
                ))
            }
            None => {
                if buf.len() > self.max {
                    // Report once, then drop bytes until the next newline.
                    self.discarding = true;
                    buf.clear();
                    self.scanned = 0;
                    return Ok(Some(Err(LineError::TooLong { max: self.max })));
                }
                self.scanned = buf.len();
                Ok(None)
            }
        }
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Self::Item>, Self::Error> {
        match self.decode(buf)? {
            Some(item) => Ok(Some(item)),
            // A final unterminated fragment is dropped: a frame is only complete with its newline.
            None => {
                buf.clear();
                self.scanned = 0;
                Ok(None)
            }
        }
    }
}

/// [`LineCodec`] plus binary envelope frames: what clients and chatd read from each other.
/// A binary frame's payload is capped like a line, at [`WireCodec::max_len`].
#[derive(Debug, Clone, Default)]
pub struct WireCodec {
    lines: LineCodec,
    /// Bytes still to drop of an overlong binary frame (already reported).
    skip: usize,
}

impl WireCodec {
    /// A codec that accepts lines and binary payloads of up to `max` bytes.
    pub fn new(max: usize) -> Self {
        WireCodec {
            lines: LineCodec::new(max),
            skip: 0,
        }
    }

    /// The cap in force.
    pub fn max_len(&self) -> usize {
        self.lines.max
    }
}

impl Decoder for WireCodec {
    type Item = Result<Wire, LineError>;
    type Error = std::io::Error;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Self::Item>, Self::Error> {
        if self.skip > 0 {
            let n = self.skip.min(buf.len());
            buf.advance(n);
            self.skip -= n;
            if self.skip > 0 {
                return Ok(None);
            }
        }
        if !self.lines.skip_discarded(buf) {
            return Ok(None);
        }
        if !self.lines.at_boundary() || buf.first() != Some(&BINARY_MARKER) {
            return Ok(self.lines.decode(buf)?.map(|item| item.map(Wire::Line)));
        }
        let Some(header) = buf.get(..BINARY_HEADER) else {
            return Ok(None);
        };
        let kind = header[1];
        let len = u32::from_be_bytes([header[2], header[3], header[4], header[5]]);
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        let max = self.lines.max;
        if len > max {
            buf.advance(BINARY_HEADER);
            self.skip = len;
            return Ok(Some(Err(LineError::TooLong { max })));
        }
        if buf.len() < BINARY_HEADER + len {
            buf.reserve(BINARY_HEADER + len - buf.len());
            return Ok(None);
        }
        buf.advance(BINARY_HEADER);
        let payload = buf.split_to(len).freeze();
        Ok(Some(match kind {
            BINARY_SEND => Ok(Wire::Send(payload)),
            BINARY_ENVELOPE => match payload.get(..BINARY_TS) {
                Some(ts) => {
                    let mut be = [0u8; BINARY_TS];
                    be.copy_from_slice(ts);
                    Ok(Wire::Envelope {
                        ts: u64::from_be_bytes(be),
                        data: payload.slice(BINARY_TS..),
                    })
                }
                None => Err(LineError::ShortBinary),
            },
            kind => Err(LineError::UnknownBinary { kind }),
        }))
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Self::Item>, Self::Error> {
        match self.decode(buf)? {
            Some(item) => Ok(Some(item)),
            // As with lines: a frame cut off by the end of the stream is dropped.
            None => {
                buf.clear();
                self.skip = 0;
                self.lines = LineCodec::new(self.lines.max);
                Ok(None)
            }
        }
    }
}

impl Encoder<Bytes> for LineCodec {
    type Error = std::io::Error;

    /// Writes an already serialized line; it must end with `\n` (see [`crate::frame::encode`]).
    fn encode(&mut self, line: Bytes, dst: &mut BytesMut) -> Result<(), Self::Error> {
        dst.reserve(line.len());
        dst.put(line);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all<D: Decoder<Error = std::io::Error>>(codec: &mut D, input: &[u8]) -> Vec<D::Item> {
        let mut buf = BytesMut::from(input);
        let mut out = Vec::new();
        while let Some(item) = codec.decode(&mut buf).unwrap() {
            out.push(item);
        }
        out
    }

    #[test]
    fn splits_lines_and_strips_cr() {
        let mut c = LineCodec::new(16);
        let got = decode_all(&mut c, b"one\ntwo\r\nthr");
        assert_eq!(got, vec![Ok("one".into()), Ok("two".into())]);
    }

    #[test]
    fn line_at_limit_passes_one_over_fails() {
        let mut c = LineCodec::new(4);
        assert_eq!(decode_all(&mut c, b"abcd\n"), vec![Ok("abcd".into())]);
        let got = decode_all(&mut c, b"abcde\nok\n");
        assert_eq!(
            got,
            vec![Err(LineError::TooLong { max: 4 }), Ok("ok".into())]
        );
    }

    #[test]
    fn overlong_without_newline_is_discarded_until_newline() {
        let mut c = LineCodec::new(4);
        let mut buf = BytesMut::from(&b"abcdefgh"[..]);
        assert_eq!(
            c.decode(&mut buf).unwrap(),
            Some(Err(LineError::TooLong { max: 4 }))
        );
        buf.extend_from_slice(b"ijkl\nnext\n");
        assert_eq!(c.decode(&mut buf).unwrap(), Some(Ok("next".into())));
    }

    #[test]
    fn invalid_utf8_is_an_item_not_an_end() {
        let mut c = LineCodec::new(16);
        let got = decode_all(&mut c, b"\xff\xfe\nfine\n");
        assert_eq!(got, vec![Err(LineError::NotUtf8), Ok("fine".into())]);
    }

    #[test]
    fn binary_frames_between_lines_round_trip() {
        let mut stream = b"{\"a\":1}\n".to_vec();
        stream.extend_from_slice(&binary_send(b"env\nwith newline"));
        stream.extend_from_slice(b"\n");
        stream.extend_from_slice(&binary_envelope(1764327600000, b"\x00\x01"));
        stream.extend_from_slice(b"last\n");
        let got = decode_all(&mut WireCodec::new(64), &stream);
        assert_eq!(
            got,
            vec![
                Ok(Wire::Line("{\"a\":1}".into())),
                Ok(Wire::Send(Bytes::from_static(b"env\nwith newline"))),
                Ok(Wire::Line(String::new())),
                Ok(Wire::Envelope {
                    ts: 1764327600000,
                    data: Bytes::from_static(b"\x00\x01")
                }),
                Ok(Wire::Line("last".into())),
            ]
        );
    }

    #[test]
    fn binary_payload_at_cap_passes_one_over_is_skipped() {
        let mut stream = binary_send(&[7; 16]).to_vec();
        stream.extend_from_slice(&binary_send(&[7; 17]));
        stream.extend_from_slice(b"ok\n");
        let mut c = WireCodec::new(16);
        // Fed a byte at a time, as a slow socket would: the skip spans many reads.
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for b in &stream {
            buf.put_u8(*b);
            while let Some(item) = c.decode(&mut buf).unwrap() {
                got.push(item);
            }
            assert!(buf.len() <= 16 + BINARY_HEADER);
        }
        assert_eq!(
            got,
            vec![
                Ok(Wire::Send(Bytes::from(vec![7; 16]))),
                Err(LineError::TooLong { max: 16 }),
                Ok(Wire::Line("ok".into())),
            ]
        );
    }

    #[test]
    fn unknown_or_short_binary_frames_are_items_and_skipped() {
        let mut stream = vec![BINARY_MARKER, b'Z', 0, 0, 0, 2, 1, 2];
        stream.extend_from_slice(&[BINARY_MARKER, BINARY_ENVELOPE, 0, 0, 0, 3, 1, 2, 3]);
        stream.extend_from_slice(b"ok\n");
        let got = decode_all(&mut WireCodec::new(16), &stream);
        assert_eq!(
            got,
            vec![
                Err(LineError::UnknownBinary { kind: b'Z' }),
                Err(LineError::ShortBinary),
                Ok(Wire::Line("ok".into())),
            ]
        );
    }

    #[test]
    fn a_marker_inside_a_line_is_just_a_byte() {
        let got = decode_all(&mut WireCodec::new(16), b"ab\x00cd\n");
        assert_eq!(got, vec![Ok(Wire::Line("ab\u{0}cd".into()))]);
    }

    #[test]
    fn a_binary_frame_right_after_a_discarded_line_is_still_a_frame() {
        let mut c = WireCodec::new(4);
        let mut buf = BytesMut::from(&b"abcdefgh"[..]);
        assert_eq!(
            c.decode(&mut buf).unwrap(),
            Some(Err(LineError::TooLong { max: 4 }))
        );
        // The overlong line's newline and the next frame arrive in one read.
        buf.extend_from_slice(b"ij\n");
        buf.extend_from_slice(&binary_send(b"ab"));
        buf.extend_from_slice(b"ok\n");
        let mut got = Vec::new();
        while let Some(item) = c.decode(&mut buf).unwrap() {
            got.push(item);
        }
        assert_eq!(
            got,
            vec![
                Ok(Wire::Send(Bytes::from_static(b"ab"))),
                Ok(Wire::Line("ok".into()))
            ]
        );
    }

    #[test]
    fn a_cut_off_binary_frame_is_dropped_at_eof() {
        let mut c = WireCodec::new(16);
        let mut buf = BytesMut::from(&binary_send(b"abc")[..5]);
        assert_eq!(c.decode_eof(&mut buf).unwrap(), None);
        assert!(buf.is_empty());
    }

    #[test]
    fn trickled_bytes_assemble() {
        let mut c = LineCodec::new(16);
        let mut buf = BytesMut::new();
        for b in b"hel" {
            buf.put_u8(*b);
            assert_eq!(c.decode(&mut buf).unwrap(), None);
        }
        buf.extend_from_slice(b"lo\n");
        assert_eq!(c.decode(&mut buf).unwrap(), Some(Ok("hello".into())));
    }
}
