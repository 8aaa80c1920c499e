//! Newline-delimited framing with a hard cap on line length.
//!
//! Unlike `tokio_util::codec::LinesCodec`, a line that is too long or not UTF-8 is
//! reported as an item (`Err(LineError)`) rather than a stream error, so the reader
//! can answer with an error frame and keep the connection; only I/O errors end it.

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
        loop {
            let newline = buf[self.scanned..].iter().position(|b| *b == b'\n');
            match (self.discarding, newline) {
                (true, Some(i)) => {
                    buf.advance(self.scanned + i + 1);
                    self.scanned = 0;
                    self.discarding = false;
                    // The error was already reported when discarding began.
                    continue;
                }
                (true, None) => {
                    buf.clear();
                    self.scanned = 0;
                    return Ok(None);
                }
                (false, Some(i)) => {
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
                    return Ok(Some(
                        String::from_utf8(line.to_vec()).map_err(|_| LineError::NotUtf8),
                    ));
                }
                (false, None) => {
                    if buf.len() > self.max {
                        // Report once, then drop bytes until the next newline.
                        self.discarding = true;
                        buf.clear();
                        self.scanned = 0;
                        return Ok(Some(Err(LineError::TooLong { max: self.max })));
                    }
                    self.scanned = buf.len();
                    return Ok(None);
                }
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

    fn decode_all(codec: &mut LineCodec, input: &[u8]) -> Vec<Result<String, LineError>> {
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
