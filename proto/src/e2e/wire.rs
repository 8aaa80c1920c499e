//! Canonical binary encoding helpers: fixed-width big-endian integers, raw fixed arrays, and
//! length-prefixed byte strings. Decoding is strict, so every value has exactly one encoding.

use super::E2eError;

/// Appends canonical fields to a buffer.
#[derive(Default)]
pub(crate) struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    /// An empty buffer that holds `n` bytes without moving (so secrets are not left behind
    /// in a freed, smaller allocation).
    pub fn with_capacity(n: usize) -> Self {
        Writer {
            buf: Vec::with_capacity(n),
        }
    }
    pub fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }
    pub fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }
    pub fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }
    pub fn raw(&mut self, v: &[u8]) {
        self.buf.extend_from_slice(v);
    }
    /// u16 length, then the bytes.
    pub fn bytes16(&mut self, v: &[u8], what: &'static str) -> Result<(), E2eError> {
        let len = u16::try_from(v.len()).map_err(|_| E2eError::TooLong(what))?;
        self.buf.extend_from_slice(&len.to_be_bytes());
        self.buf.extend_from_slice(v);
        Ok(())
    }
    /// u32 length, then the bytes.
    pub fn bytes32(&mut self, v: &[u8], what: &'static str) -> Result<(), E2eError> {
        let len = u32::try_from(v.len()).map_err(|_| E2eError::TooLong(what))?;
        self.buf.extend_from_slice(&len.to_be_bytes());
        self.buf.extend_from_slice(v);
        Ok(())
    }
    pub fn into_vec(self) -> Vec<u8> {
        self.buf
    }
}

/// Reads canonical fields; every shortfall is [`E2eError::Malformed`].
pub(crate) struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Reader { rest: bytes }
    }
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], E2eError> {
        if self.rest.len() < n {
            return Err(E2eError::Malformed(what));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }
    pub fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], E2eError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }
    pub fn u8(&mut self, what: &'static str) -> Result<u8, E2eError> {
        Ok(self.array::<1>(what)?[0])
    }
    pub fn u16(&mut self, what: &'static str) -> Result<u16, E2eError> {
        Ok(u16::from_be_bytes(self.array(what)?))
    }
    pub fn u32(&mut self, what: &'static str) -> Result<u32, E2eError> {
        Ok(u32::from_be_bytes(self.array(what)?))
    }
    pub fn u64(&mut self, what: &'static str) -> Result<u64, E2eError> {
        Ok(u64::from_be_bytes(self.array(what)?))
    }
    pub fn bytes16(&mut self, what: &'static str) -> Result<&'a [u8], E2eError> {
        let len = self.u16(what)?;
        self.take(usize::from(len), what)
    }
    /// A u32-prefixed byte string of at most `max` bytes.
    pub fn bytes32(&mut self, max: usize, what: &'static str) -> Result<&'a [u8], E2eError> {
        let len = usize::try_from(self.u32(what)?).map_err(|_| E2eError::Malformed(what))?;
        if len > max {
            return Err(E2eError::Malformed(what));
        }
        self.take(len, what)
    }
    /// A u16-prefixed UTF-8 string.
    pub fn string(&mut self, what: &'static str) -> Result<String, E2eError> {
        let raw = self.bytes16(what)?;
        String::from_utf8(raw.to_vec()).map_err(|_| E2eError::Malformed(what))
    }
    /// Fails unless every byte was consumed.
    pub fn finish(self) -> Result<(), E2eError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(E2eError::Malformed("trailing bytes"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_strictness() {
        let mut w = Writer::default();
        w.u8(7);
        w.u32(0x0102_0304);
        w.u64(5);
        w.bytes16(b"hi", "s").unwrap();
        w.bytes32(b"abc", "b").unwrap();
        let bytes = w.into_vec();
        assert_eq!(
            bytes,
            [
                7, 1, 2, 3, 4, 0, 0, 0, 0, 0, 0, 0, 5, 0, 2, b'h', b'i', 0, 0, 0, 3, b'a', b'b',
                b'c'
            ]
        );
        let mut r = Reader::new(&bytes);
        assert_eq!(r.u8("a").unwrap(), 7);
        assert_eq!(r.u32("a").unwrap(), 0x0102_0304);
        assert_eq!(r.u64("a").unwrap(), 5);
        assert_eq!(r.string("s").unwrap(), "hi");
        assert_eq!(r.bytes32(3, "b").unwrap(), b"abc");
        r.finish().unwrap();

        let mut r = Reader::new(&bytes[..bytes.len() - 1]);
        r.array::<17>("x").unwrap();
        assert_eq!(r.bytes32(3, "b"), Err(E2eError::Malformed("b")));
        let mut r = Reader::new(&[0, 0, 0, 4, 1, 2, 3, 4]);
        assert_eq!(r.bytes32(3, "cap"), Err(E2eError::Malformed("cap")));
        assert_eq!(
            Reader::new(&[1]).finish(),
            Err(E2eError::Malformed("trailing bytes"))
        );
        let mut w = Writer::default();
        assert_eq!(
            w.bytes16(&[0; 70_000], "long"),
            Err(E2eError::TooLong("long"))
        );
        assert!(w.into_vec().is_empty());
    }
}
