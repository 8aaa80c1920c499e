//! What crosses the bus, byte by byte: a routed line in a compact binary form (it is the hot
//! path: one per node per message), everything else as JSON.
//!
//! ```text
//! routed   'R' NODE INCARNATION(u64) COUNT(u32) HANDLE(u32)*COUNT KIND(u8) BODY
//!            KIND 0 envelopes: N(u32) then N times JSON-LEN(u32) JSON BIN-LEN(u32) BIN
//!            KIND 1 a line for devices, KIND 2 a rekey line: LEN(u32) LINE
//! control  'J' JSON of [`Control`]
//! ```
//!
//! NODE is a length (u8) and the name. Integers are big-endian. Nothing in a message is
//! trusted beyond its shape: a message that does not parse is counted and dropped.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use crate::hub::{DeviceOnNode, EnvelopeLines, Event, Payload};

/// The version of what crosses the bus; nodes speaking another do not count each other as
/// peers (each says so in its log), so a mixed cluster fails loudly, not with garbage.
pub const BUS_VERSION: u32 = 1;

/// A node as the bus knows it: its name and the incarnation it runs as (new at every start
/// and after every fence).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NodeId {
    /// `cluster.node`.
    pub name: String,
    /// Random, new at every start and rejoin.
    pub incarnation: u64,
}

/// A message that is not a routed line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Control {
    /// On the hello subject, every `heartbeat_ms`: alive. `sent_ms` is the sender's own
    /// monotonic clock, so it can tell a fresh echo of its own from one that waited.
    Heartbeat {
        /// Who.
        from: NodeId,
        /// When, on the sender's monotonic clock.
        sent_ms: u64,
        /// [`BUS_VERSION`] of the sender.
        #[serde(default)]
        version: u32,
    },
    /// Devices with sessions on `from` changed (`whole`: these are all it has).
    Presence {
        /// Who.
        from: NodeId,
        /// All of them, or changes.
        whole: bool,
        /// The number of the last change included; acknowledged with [`Control::Ack`].
        seq: u64,
        /// The devices.
        devices: Vec<DeviceOnNode>,
        /// Away messages set there (with `whole`).
        #[serde(default)]
        away: Vec<(String, String)>,
    },
    /// `from` knows the presence up to `seq`, and stored every line it routed before.
    Ack {
        /// Who.
        from: NodeId,
        /// The presence change acknowledged.
        seq: u64,
    },
    /// A state change made on `from`.
    Event {
        /// Who.
        from: NodeId,
        /// What.
        event: Event,
    },
}

/// A routed line: from which node, for which of the receiver's devices, and what.
#[derive(Debug, Clone)]
pub struct Routed {
    /// The sending node.
    pub from: NodeId,
    /// The receiver's handles of the devices.
    pub handles: Vec<u32>,
    /// The line.
    pub payload: Payload,
}

/// A message off the bus.
#[derive(Debug, Clone)]
pub enum Message {
    /// A routed line.
    Routed(Routed),
    /// Anything else.
    Control(Control),
}

/// Why a message could not be read.
#[derive(Debug, thiserror::Error)]
#[error("malformed bus message: {0}")]
pub struct Malformed(&'static str);

/// A routed line's bytes.
pub fn encode_routed(from: &NodeId, handles: &[u32], payload: &Payload) -> Bytes {
    let body_len = match payload {
        Payload::Envelopes(each) => each
            .iter()
            .map(|l| 8 + l.json.len() + l.binary.len())
            .sum::<usize>(),
        Payload::Device(line) | Payload::Rekey(line) => line.len(),
    };
    let mut b = BytesMut::with_capacity(32 + from.name.len() + 4 * handles.len() + body_len);
    b.put_u8(b'R');
    put_name(&mut b, &from.name);
    b.put_u64(from.incarnation);
    b.put_u32(handles.len() as u32);
    for h in handles {
        b.put_u32(*h);
    }
    match payload {
        Payload::Envelopes(each) => {
            b.put_u8(0);
            b.put_u32(each.len() as u32);
            for l in each {
                put_bytes(&mut b, &l.json);
                put_bytes(&mut b, &l.binary);
            }
        }
        Payload::Device(line) => {
            b.put_u8(1);
            put_bytes(&mut b, line);
        }
        Payload::Rekey(line) => {
            b.put_u8(2);
            put_bytes(&mut b, line);
        }
    }
    b.freeze()
}

/// A control message's bytes.
pub fn encode_control(c: &Control) -> Option<Bytes> {
    let mut b = BytesMut::new();
    b.put_u8(b'J');
    let json = serde_json::to_vec(c).ok()?;
    b.extend_from_slice(&json);
    Some(b.freeze())
}

/// Reads a message; `payload` is shared, not copied, by the lines it holds.
pub fn decode(mut payload: Bytes) -> Result<Message, Malformed> {
    if payload.is_empty() {
        return Err(Malformed("empty"));
    }
    match payload.get_u8() {
        b'J' => serde_json::from_slice(&payload)
            .map(Message::Control)
            .map_err(|_| Malformed("control JSON")),
        b'R' => decode_routed(payload).map(Message::Routed),
        _ => Err(Malformed("unknown kind")),
    }
}

fn decode_routed(mut b: Bytes) -> Result<Routed, Malformed> {
    let name_len = usize::from(get_u8(&mut b)?);
    let name = take(&mut b, name_len)?;
    let name = String::from_utf8(name.to_vec()).map_err(|_| Malformed("node name"))?;
    let incarnation = get_u64(&mut b)?;
    let count = get_u32(&mut b)? as usize;
    if count > b.remaining() / 4 {
        return Err(Malformed("handle count"));
    }
    let handles = (0..count).map(|_| b.get_u32()).collect();
    let payload = match get_u8(&mut b)? {
        0 => {
            let n = get_u32(&mut b)? as usize;
            if n > b.remaining() / 8 {
                return Err(Malformed("envelope count"));
            }
            let mut each = Vec::with_capacity(n);
            for _ in 0..n {
                let json = get_bytes(&mut b)?;
                let binary = get_bytes(&mut b)?;
                each.push(EnvelopeLines { json, binary });
            }
            Payload::Envelopes(each)
        }
        1 => Payload::Device(get_bytes(&mut b)?),
        2 => Payload::Rekey(get_bytes(&mut b)?),
        _ => return Err(Malformed("payload kind")),
    };
    if b.has_remaining() {
        return Err(Malformed("trailing bytes"));
    }
    Ok(Routed {
        from: NodeId { name, incarnation },
        handles,
        payload,
    })
}

fn put_name(b: &mut BytesMut, name: &str) {
    // Node names are at most 64 bytes (config::cluster checks).
    let bytes = &name.as_bytes()[..name.len().min(255)];
    b.put_u8(bytes.len() as u8);
    b.extend_from_slice(bytes);
}

fn put_bytes(b: &mut BytesMut, data: &[u8]) {
    b.put_u32(data.len() as u32);
    b.extend_from_slice(data);
}

fn get_u8(b: &mut Bytes) -> Result<u8, Malformed> {
    b.try_get_u8().map_err(|_| Malformed("truncated"))
}

fn get_u32(b: &mut Bytes) -> Result<u32, Malformed> {
    b.try_get_u32().map_err(|_| Malformed("truncated"))
}

fn get_u64(b: &mut Bytes) -> Result<u64, Malformed> {
    b.try_get_u64().map_err(|_| Malformed("truncated"))
}

fn take(b: &mut Bytes, n: usize) -> Result<Bytes, Malformed> {
    if b.remaining() < n {
        return Err(Malformed("truncated"));
    }
    Ok(b.split_to(n))
}

fn get_bytes(b: &mut Bytes) -> Result<Bytes, Malformed> {
    let n = get_u32(b)? as usize;
    take(b, n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chatd_proto::Fingerprint;

    fn node() -> NodeId {
        NodeId {
            name: "node-1".into(),
            incarnation: 0x0123_4567_89ab_cdef,
        }
    }

    #[test]
    fn routed_envelopes_round_trip() {
        let each = vec![
            EnvelopeLines {
                json: Bytes::from_static(b"{\"type\":\"envelope\"}\n"),
                binary: Bytes::from_static(&[0, 1, 2, 255]),
            },
            EnvelopeLines {
                json: Bytes::from_static(b"{}\n"),
                binary: Bytes::new(),
            },
        ];
        let bytes = encode_routed(
            &node(),
            &[1, 7, u32::MAX],
            &Payload::Envelopes(each.clone()),
        );
        let Message::Routed(r) = decode(bytes).unwrap() else {
            panic!("not routed");
        };
        assert_eq!(r.from, node());
        assert_eq!(r.handles, vec![1, 7, u32::MAX]);
        let Payload::Envelopes(got) = r.payload else {
            panic!("not envelopes");
        };
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].json, each[0].json);
        assert_eq!(got[0].binary, each[0].binary);
        assert_eq!(got[1].binary, Bytes::new());
    }

    #[test]
    fn device_and_rekey_lines_round_trip() {
        for payload in [
            Payload::Device(Bytes::from_static(b"chain\n")),
            Payload::Rekey(Bytes::from_static(b"rekey\n")),
        ] {
            let bytes = encode_routed(&node(), &[3], &payload);
            let Message::Routed(r) = decode(bytes).unwrap() else {
                panic!("not routed");
            };
            match (payload, r.payload) {
                (Payload::Device(a), Payload::Device(b))
                | (Payload::Rekey(a), Payload::Rekey(b)) => {
                    assert_eq!(a, b)
                }
                _ => panic!("kind changed"),
            }
        }
    }

    #[test]
    fn control_round_trips() {
        let c = Control::Presence {
            from: node(),
            whole: true,
            seq: 9,
            devices: vec![DeviceOnNode {
                user: "alice".into(),
                device: Fingerprint::from_bytes([7; 32]),
                key: "AAAA".into(),
                handle: 4,
                sessions: 2,
            }],
            away: vec![("alice".into(), "lunch".into())],
        };
        let Message::Control(back) = decode(encode_control(&c).unwrap()).unwrap() else {
            panic!("not control");
        };
        assert_eq!(back, c);
    }

    /// Every prefix of a valid message, and junk, is refused without a panic.
    #[test]
    fn truncated_and_hostile_messages_are_refused() {
        let each = vec![EnvelopeLines {
            json: Bytes::from_static(b"{}\n"),
            binary: Bytes::from_static(b"xy"),
        }];
        let bytes = encode_routed(&node(), &[1, 2], &Payload::Envelopes(each));
        for n in 0..bytes.len() {
            assert!(decode(bytes.slice(..n)).is_err(), "prefix of {n} bytes");
        }
        let mut long = bytes.to_vec();
        long.push(0);
        assert!(decode(Bytes::from(long)).is_err());
        // A handle count far past the message's length.
        let mut huge = BytesMut::new();
        huge.put_u8(b'R');
        huge.put_u8(1);
        huge.put_u8(b'a');
        huge.put_u64(1);
        huge.put_u32(u32::MAX);
        assert!(decode(huge.freeze()).is_err());
        assert!(decode(Bytes::from_static(b"Jnot json")).is_err());
        assert!(decode(Bytes::from_static(b"X")).is_err());
    }
}
