//! What a client reads from chatd, split into frames as the wire mode says.
//!
//! With `--wire json` the stream is JSON lines only and is split in place ([`Lines`]); with
//! `--wire binary` it is split by proto's [`WireCodec`], since binary frames may hold any byte.
//! Either way each item comes with the bytes it took on the wire, for the per-delivery figures.

use std::ops::Range;

use bytes::BytesMut;
use chatd_proto::{Wire, WireCodec};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio_util::codec::Decoder;

use crate::cli::WireMode;

/// Initial read buffer per client: chatd batches up to 64 KiB per write, and envelope lines are
/// several hundred bytes, so fewer, larger reads.
const READ_BUFFER: usize = 64 * 1024;
/// Longest server line or binary frame the binary-mode reader takes, as the chat client: a
/// `login_ok` lists every registered device and can be megabytes long.
const MAX_SERVER_FRAME: usize = 32 << 20;

/// Bytes read but not yet consumed, split into `\n`-terminated lines without copying.
pub struct Lines {
    buf: Vec<u8>,
    filled: usize,
    consumed: usize,
}

impl Lines {
    fn new() -> Lines {
        Lines {
            buf: vec![0; READ_BUFFER],
            filled: 0,
            consumed: 0,
        }
    }

    /// The next complete line in the buffer (range into it, `\n` excluded).
    fn take(&mut self) -> Option<Range<usize>> {
        let pending = &self.buf[self.consumed..self.filled];
        // memchr: lines are several hundred bytes and this runs for every delivery.
        let len = memchr::memchr(b'\n', pending)?;
        let line = self.consumed..self.consumed + len;
        self.consumed += len + 1;
        Some(line)
    }

    fn get(&self, range: Range<usize>) -> &[u8] {
        &self.buf[range]
    }

    /// Reads more; Ok(0) at end of stream. Cancel-safe.
    async fn fill<R: AsyncRead + Unpin>(&mut self, rd: &mut R) -> std::io::Result<usize> {
        let n = rd.read(self.room(1)).await?;
        self.filled += n;
        Ok(n)
    }

    /// Appends `bytes`.
    fn extend(&mut self, bytes: &[u8]) {
        self.room(bytes.len())[..bytes.len()].copy_from_slice(bytes);
        self.filled += bytes.len();
    }

    /// The free end of the buffer, at least `need` bytes: moves the unconsumed bytes to the
    /// front, and grows the buffer if that is not enough.
    fn room(&mut self, need: usize) -> &mut [u8] {
        if self.consumed > 0 {
            self.buf.copy_within(self.consumed..self.filled, 0);
            self.filled -= self.consumed;
            self.consumed = 0;
        }
        if self.buf.len() - self.filled < need {
            let bigger = (self.buf.len() * 2).max(self.filled + need);
            self.buf.resize(bigger, 0);
        }
        &mut self.buf[self.filled..]
    }
}

/// One item a client reads from chatd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A JSON line, newline excluded.
    Line(&'a [u8]),
    /// The envelope bytes of a binary `envelope` frame.
    Envelope(&'a [u8]),
    /// What the binary-mode codec refused (a binary frame of an unknown kind, too short or
    /// too long; a line too long or not UTF-8), or a binary `send`, which chatd never sends.
    Unreadable,
}

/// Bytes read from chatd and not yet used, split as the wire mode says.
pub enum Incoming {
    /// `--wire json`: JSON lines only, split in place without copying.
    Lines(Lines),
    /// `--wire binary`: lines and binary frames, split by proto's codec.
    Wire {
        /// Bytes not yet decoded.
        buf: BytesMut,
        /// Tracks where the next frame starts (and what an overlong one still needs skipped).
        codec: WireCodec,
    },
}

impl Incoming {
    /// An empty buffer for `wire` holding `read`, the bytes login read past `login_ok`.
    pub(crate) fn after_login(read: &[u8], wire: WireMode) -> Incoming {
        let mut incoming = match wire {
            WireMode::Json => Incoming::Lines(Lines::new()),
            WireMode::Binary => Incoming::Wire {
                buf: BytesMut::with_capacity(READ_BUFFER),
                codec: WireCodec::new(MAX_SERVER_FRAME),
            },
        };
        incoming.extend(read);
        incoming
    }

    /// Hands each complete item in the buffer, with the bytes it took on the wire, to `f`
    /// until `f` returns true; Ok(true) if it did. An error is the codec's, and ends the
    /// stream as a read error would.
    pub(crate) fn drain(
        &mut self,
        mut f: impl FnMut(Frame<'_>, usize) -> bool,
    ) -> std::io::Result<bool> {
        match self {
            Incoming::Lines(lines) => {
                while let Some(range) = lines.take() {
                    let len = range.len();
                    if f(Frame::Line(lines.get(range)), len + 1) {
                        return Ok(true);
                    }
                }
            }
            Incoming::Wire { buf, codec } => loop {
                let before = buf.len();
                let Some(item) = codec.decode(buf)? else {
                    break;
                };
                let wire_len = before - buf.len();
                let stop = match &item {
                    Ok(Wire::Line(line)) => f(Frame::Line(line.as_bytes()), wire_len),
                    Ok(Wire::Envelope { data, .. }) => f(Frame::Envelope(data), wire_len),
                    Ok(Wire::Send(_)) | Err(_) => f(Frame::Unreadable, wire_len),
                };
                if stop {
                    return Ok(true);
                }
            },
        }
        Ok(false)
    }

    /// Reads more; Ok(0) at end of stream. Cancel-safe.
    pub(crate) async fn fill<R: AsyncRead + Unpin>(
        &mut self,
        rd: &mut R,
    ) -> std::io::Result<usize> {
        match self {
            Incoming::Lines(lines) => lines.fill(rd).await,
            Incoming::Wire { buf, .. } => {
                // Room for one large read; reclaims the space of frames already used.
                buf.reserve(READ_BUFFER);
                rd.read_buf(buf).await
            }
        }
    }

    /// Appends bytes read elsewhere (the receiver threads' TLS plaintext).
    pub(crate) fn extend(&mut self, bytes: &[u8]) {
        match self {
            Incoming::Lines(lines) => lines.extend(bytes),
            Incoming::Wire { buf, .. } => buf.extend_from_slice(bytes),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use chatd_proto::codec::{BINARY_MARKER, binary_envelope};

    /// The envelope bytes of a binary `send` frame.
    pub(crate) fn send_payload(frame: &[u8]) -> Vec<u8> {
        let mut buf = BytesMut::from(frame);
        match WireCodec::default().decode(&mut buf).unwrap() {
            Some(Ok(Wire::Send(data))) => data.to_vec(),
            other => panic!("not a binary send frame: {other:?}"),
        }
    }

    /// Everything `incoming` hands over for `stream` fed `chunk` bytes at a time, as
    /// (frame, wire bytes) with the frame's bytes copied out.
    fn feed(incoming: &mut Incoming, stream: &[u8], chunk: usize) -> Vec<(String, usize)> {
        let mut got = Vec::new();
        for part in stream.chunks(chunk) {
            match incoming {
                Incoming::Wire { buf, .. } => buf.extend_from_slice(part),
                Incoming::Lines(_) => panic!("binary mode only"),
            }
            let stop = incoming
                .drain(|frame, len| {
                    let text = match frame {
                        Frame::Line(l) => format!("line {}", String::from_utf8_lossy(l)),
                        Frame::Envelope(d) => format!("envelope {}", d.len()),
                        Frame::Unreadable => "unreadable".into(),
                    };
                    got.push((text, len));
                    false
                })
                .unwrap();
            assert!(!stop);
        }
        got
    }

    #[test]
    fn binary_mode_keeps_what_login_read_past_login_ok() {
        let envelope = binary_envelope(7, b"\x02E\nsome envelope");
        // Login read the first 10 bytes of the frame after `login_ok` (chatd-testkit's
        // exchange hands them over).
        let mut incoming = Incoming::after_login(&envelope[..10], WireMode::Binary);
        let got = feed(&mut incoming, &envelope[10..], 3);
        assert_eq!(got, vec![("envelope 16".to_string(), envelope.len())]);
    }

    #[test]
    fn binary_mode_reads_frames_and_lines_in_any_chunking() {
        let mut stream = binary_envelope(1, b"abc").to_vec();
        stream.extend_from_slice(b"{\"type\":\"presence\"}\r\n");
        // An unknown kind and an envelope frame too short for its timestamp: refused, skipped.
        stream.extend_from_slice(&[BINARY_MARKER, b'Z', 0, 0, 0, 1, 9]);
        stream.extend_from_slice(&[BINARY_MARKER, b'E', 0, 0, 0, 2, 1, 2]);
        stream.extend_from_slice(&binary_envelope(2, b""));
        stream.extend_from_slice(b"{\"type\":\"bye\"}\n");
        let want = vec![
            ("envelope 3".to_string(), 6 + 8 + 3),
            ("line {\"type\":\"presence\"}".to_string(), 21),
            ("unreadable".to_string(), 7),
            ("unreadable".to_string(), 8),
            ("envelope 0".to_string(), 6 + 8),
            ("line {\"type\":\"bye\"}".to_string(), 15),
        ];
        for chunk in [1, 2, 5, 64, stream.len()] {
            let mut incoming = Incoming::after_login(&[], WireMode::Binary);
            assert_eq!(feed(&mut incoming, &stream, chunk), want, "chunk {chunk}");
        }
    }

    #[test]
    fn lines_split_without_copying() {
        let mut lines = Lines::new();
        lines.buf[..7].copy_from_slice(b"ab\ncd\ne");
        lines.filled = 7;
        let a = lines.take().map(|r| lines.get(r).to_vec());
        let b = lines.take().map(|r| lines.get(r).to_vec());
        assert_eq!(a.as_deref(), Some(&b"ab"[..]));
        assert_eq!(b.as_deref(), Some(&b"cd"[..]));
        assert!(lines.take().is_none());
    }
}
