//! Checks shared by the JSON frame targets (included with `#[path]`, not a target itself).

use std::fmt::Debug;

use bytes::BytesMut;
use chatd_proto::LineCodec;
use chatd_proto::frame::{decode, encode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio_util::codec::Decoder;

/// Parses `data` as one line of `T`. When it parses, the frame must encode to exactly one
/// newline-terminated line that `LineCodec` hands back unchanged and that parses to the same
/// frame. Returns the frame and its encoded line (newline stripped).
pub fn round_trip<T>(data: &[u8]) -> Option<(T, String)>
where
    T: Serialize + DeserializeOwned + PartialEq + Debug,
{
    let text = std::str::from_utf8(data).ok()?;
    let frame: T = decode(text).ok()?;
    let line = match encode(&frame) {
        Ok(line) => line,
        Err(e) => panic!("a parsed frame failed to encode: {e}"),
    };
    assert_eq!(line.last(), Some(&b'\n'), "encoded frame lacks its newline");
    assert_eq!(
        line.iter().filter(|b| **b == b'\n').count(),
        1,
        "encoded frame spans several lines"
    );
    let mut codec = LineCodec::new(usize::MAX);
    let mut buf = BytesMut::from(&line[..]);
    let read = match codec.decode(&mut buf) {
        Ok(Some(Ok(read))) => read,
        other => panic!("LineCodec did not return the encoded line: {other:?}"),
    };
    assert!(buf.is_empty());
    let again: T = match decode(&read) {
        Ok(again) => again,
        Err(e) => panic!("re-parsing an encoded frame failed: {e}\n{read}"),
    };
    assert_eq!(again, frame, "decode(encode(x)) != x");
    Some((frame, read))
}
