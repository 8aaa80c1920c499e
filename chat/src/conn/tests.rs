//! Tests of the connection: hello and login against scripted servers, binary and JSON
//! envelopes, bad frames, and addresses.

use super::*;
use crate::secure::SentBy;
use base64::Engine;
use bytes::Bytes;
use chatd_proto::ErrorCode;
use chatd_proto::codec::{BINARY_ENVELOPE, BINARY_MARKER, binary_envelope, binary_send};
use chatd_proto::frame::{decode, encode};
use tokio::io::DuplexStream;

#[test]
fn an_unreadable_frame_is_reported_without_its_escapes() {
    // serde quotes an unknown type as it came: ESC, OSC, BEL, bidi override.
    let line = r#"{"type":"\u001b]0;pwned\u0007\u001b[2J\u202e"}"#;
    let e = decode::<ServerFrame>(line).unwrap_err();
    assert!(e.to_string().contains('\u{1b}'), "{e}");
    let note = ignored("an unreadable frame", &e);
    assert!(note.starts_with("ignoring an unreadable frame from the server: "));
    assert!(!note.chars().any(char::is_control), "{note:?}");
    assert!(!note.contains('\u{202e}'), "{note:?}");
    assert!(
        note.contains("\u{fffd}]0;pwned\u{fffd}\u{fffd}[2J\u{fffd}"),
        "{note:?}"
    );
}

#[test]
fn parses_server_addresses() {
    let a = ServerAddr::parse("127.0.0.1:8443").unwrap();
    assert_eq!((a.host.as_str(), a.port), ("127.0.0.1", 8443));
    assert_eq!(a.to_string(), "127.0.0.1:8443");
    assert_eq!(
        ServerAddr::parse("Chat.Example.org:9000")
            .unwrap()
            .to_string(),
        "chat.example.org:9000"
    );
    assert_eq!(ServerAddr::parse("example.org").unwrap().port, 8443);
    let v6 = ServerAddr::parse("[::1]:7000").unwrap();
    assert_eq!((v6.host.as_str(), v6.port), ("::1", 7000));
    assert_eq!(v6.to_string(), "[::1]:7000");
    assert_eq!(ServerAddr::parse("::1").unwrap().to_string(), "[::1]:8443");
    for bad in ["", ":80", "host:", "host:0", "host:99999", "[::1", "[::1]x"] {
        assert!(ServerAddr::parse(bad).is_err(), "{bad}");
    }
}

/// A fake server on the other end of a pipe: answers each client frame from `script`
/// with raw bytes (JSON lines, binary frames or junk). It reads like chatd, lines and
/// binary frames; a binary `send` reaches the script as `Err(bytes)`.
pub(super) async fn fake_server_raw(
    stream: DuplexStream,
    mut script: impl FnMut(Result<ClientFrame, Bytes>) -> Vec<Bytes>,
) {
    let (r, mut w) = tokio::io::split(stream);
    let mut frames = FramedRead::new(r, WireCodec::new(1 << 20));
    while let Some(Ok(Ok(wire))) = frames.next().await {
        let got = match wire {
            Wire::Line(line) => Ok(decode(&line).unwrap()),
            Wire::Send(data) => Err(data),
            Wire::Envelope { .. } => panic!("the client sent a binary envelope"),
        };
        for reply in script(got) {
            w.write_all(&reply).await.unwrap();
        }
    }
}

/// [`fake_server_raw`] for a server speaking JSON only, like one older than binary frames.
async fn fake_server(
    stream: DuplexStream,
    mut script: impl FnMut(ClientFrame) -> Vec<ServerFrame>,
) {
    fake_server_raw(stream, move |got| match got {
        Ok(frame) => script(frame).iter().map(json).collect(),
        Err(_) => panic!("a binary send to a server that did not agree to them"),
    })
    .await
}

pub(super) fn json(frame: &ServerFrame) -> Bytes {
    encode(frame).unwrap()
}

/// A `hello` from a server agreeing to binary frames or (false) knowing nothing of them.
fn hello_binary(binary: bool) -> ServerFrame {
    ServerFrame::Hello {
        version: PROTOCOL_VERSION,
        server: "chatd/test".into(),
        max_line_bytes: 65536,
        max_text_bytes: 100,
        idle_timeout_secs: 0,
        binary,
        offline_ttl_secs: None,
        features: Vec::new(),
        challenge: None,
    }
}

fn server_hello() -> ServerFrame {
    hello_binary(false)
}

#[tokio::test]
async fn binary_frames_are_asked_for_and_used_only_if_the_server_agrees() {
    for agree in [false, true] {
        let (client, server) = tokio::io::duplex(4096);
        tokio::spawn(fake_server(server, move |f| match f {
            ClientFrame::Hello { binary, .. } => {
                assert!(binary, "the client asks for binary frames");
                vec![hello_binary(agree)]
            }
            _ => vec![],
        }));
        let mut c = Connection::new(client);
        assert!(!c.binary(), "nothing is negotiated before hello");
        c.hello().await.unwrap();
        assert_eq!(c.binary(), agree);
    }
    // An old server's hello has no `binary` field at all.
    let line = encode(&hello_binary(false)).unwrap();
    assert!(!String::from_utf8_lossy(&line).contains("binary"));
}

#[tokio::test]
async fn binary_and_json_envelopes_arrive_alike() {
    let (client, server) = tokio::io::duplex(1 << 16);
    let device = Fingerprint::of(b"BOB");
    tokio::spawn(fake_server_raw(server, move |got| match got {
        Ok(ClientFrame::Hello { .. }) => vec![
            json(&hello_binary(true)),
            binary_envelope(1_764_300_000_001, b"live bytes"),
            // Stored while offline: replayed as JSON even on a binary session.
            json(&ServerFrame::Envelope {
                from: "bob".into(),
                device,
                data: base64::engine::general_purpose::STANDARD.encode(b"stored bytes"),
                ts: 1_764_300_000_002,
            }),
            json(&ServerFrame::Envelope {
                from: "bob".into(),
                device,
                data: "not base64!".into(),
                ts: 3,
            }),
        ],
        _ => vec![],
    }));
    let mut c = Connection::new(client);
    c.hello().await.unwrap();
    assert!(c.binary());
    let mut next = async || match c.recv().await.unwrap() {
        Some(Incoming::Envelope(d)) => d,
        other => panic!("{other:?}"),
    };
    let live = next().await;
    assert_eq!(live.sent_by, SentBy::Header);
    assert_eq!(live.data, Ok(Bytes::from_static(b"live bytes")));
    assert_eq!(live.ts, 1_764_300_000_001);
    let stored = next().await;
    let bob = SentBy::Named {
        user: "bob".into(),
        device,
    };
    assert_eq!(stored.sent_by, bob);
    assert_eq!(stored.data, Ok(Bytes::from_static(b"stored bytes")));
    assert_eq!(stored.ts, 1_764_300_000_002);
    // Bad base64 still arrives, so that it is reported as an unreadable message.
    let bad = next().await;
    assert_eq!(bad.sent_by, bob);
    assert!(bad.data.is_err());
}

#[tokio::test]
async fn bad_binary_frames_are_skipped_and_the_session_continues() {
    let (client, server) = tokio::io::duplex(1 << 16);
    tokio::spawn(fake_server_raw(server, move |got| match got {
        Ok(ClientFrame::Hello { .. }) => vec![
            // Over the 64 KiB cap in force before hello: skipped without being buffered.
            binary_envelope(1, &vec![b'x'; 64 << 10]),
            json(&hello_binary(true)),
            // Unknown kind, envelope too short for its time stamp, a client's frame kind.
            Bytes::from_static(&[BINARY_MARKER, b'Z', 0, 0, 0, 2, b'{', b'\n']),
            Bytes::from_static(&[BINARY_MARKER, BINARY_ENVELOPE, 0, 0, 0, 3, 1, 2, 3]),
            binary_send(b"not for clients"),
            // Longer than the first cap: hello raised it for binary frames too.
            binary_envelope(2, &vec![b'y'; 100 << 10]),
            json(&ServerFrame::Pong { nonce: 7 }),
        ],
        _ => vec![],
    }));
    let mut c = Connection::new(client);
    c.hello().await.unwrap();
    match c.recv().await.unwrap() {
        Some(Incoming::Envelope(d)) => {
            assert_eq!((d.ts, d.data.map(|b| b.len())), (2, Ok(100 << 10)));
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        c.recv().await.unwrap(),
        Some(Incoming::Frame(ServerFrame::Pong { nonce: 7 }))
    ));
}

#[tokio::test]
async fn hello_and_login() {
    let (client, server) = tokio::io::duplex(4096);
    tokio::spawn(fake_server(server, |f| match f {
        ClientFrame::Hello {
            version, client, ..
        } => {
            assert_eq!(version, PROTOCOL_VERSION);
            assert!(client.starts_with("chat/"));
            vec![ServerFrame::Pong { nonce: 0 }, server_hello()]
        }
        ClientFrame::Login {
            user,
            password,
            device_key,
            ..
        } if password == "pw" => {
            assert_eq!(device_key, "S0VZ");
            vec![ServerFrame::LoginOk {
                user,
                session: 7,
                device: Fingerprint::of(b"KEY"),
                online: vec!["alice".into(), "bob".into()],
                devices: vec![],
                room: "lobby".into(),
                rooms: vec![],
            }]
        }
        _ => vec![ServerFrame::error(
            ErrorCode::InvalidCredentials,
            "invalid credentials",
        )],
    }));
    let mut c = Connection::new(client);
    let info = c.hello().await.unwrap();
    assert_eq!(info.max_text_bytes, 100);
    let err = c.login("alice", "wrong", "S0VZ").await.unwrap_err();
    assert_eq!(
        err.downcast_ref::<LoginFailed>().unwrap().to_string(),
        "login failed: invalid credentials"
    );
    let ok = c.login("alice", "pw", "S0VZ").await.unwrap();
    assert_eq!(ok.device, Fingerprint::of(b"KEY"));
    assert_eq!(ok.session, 7);
    assert_eq!(ok.online, vec!["alice", "bob"]);
}

/// Offered a challenge, the client signs it for the server's certificate; not offered one
/// (an older server), it logs in without a proof.
#[tokio::test]
async fn a_login_proof_is_sent_when_the_server_offers_one() {
    let key = DeviceKey::from_pkcs8_pem(include_str!("../../../proto/src/e2e/testdata/alice.pem"))
        .unwrap();
    let server_fp = Fingerprint::of(b"the server's certificate");
    let challenge = [7u8; CHALLENGE_BYTES];
    for offered in [true, false] {
        let (client, server) = tokio::io::duplex(1 << 16);
        let public = key.public();
        tokio::spawn(fake_server(server, move |f| match f {
            ClientFrame::Hello { features, .. } => {
                assert!(features.iter().any(|f| f == FEATURE_KEYPROOF));
                let mut hello = server_hello();
                if let ServerFrame::Hello {
                    features,
                    challenge: c,
                    ..
                } = &mut hello
                {
                    if offered {
                        features.push(FEATURE_KEYPROOF.into());
                        *c = Some(base64::engine::general_purpose::STANDARD.encode(challenge));
                    }
                }
                vec![hello]
            }
            ClientFrame::Login { user, proof, .. } => {
                match proof {
                    Some(proof) => {
                        assert!(offered, "a proof with no challenge");
                        let sig = base64::engine::general_purpose::STANDARD
                            .decode(proof)
                            .unwrap();
                        let signed = LoginChallenge {
                            challenge: &challenge,
                            user: &user,
                            server: &server_fp,
                        };
                        signed.verify(&public, &sig).unwrap();
                    }
                    None => assert!(!offered, "no proof though the server offered it"),
                }
                vec![ServerFrame::LoginOk {
                    user,
                    session: 1,
                    device: public.fingerprint(),
                    online: vec![],
                    devices: vec![],
                    room: "lobby".into(),
                    rooms: vec![],
                }]
            }
            other => panic!("{other:?}"),
        }));
        let mut c = Connection::new(client).with_proof(key.clone(), Some(server_fp));
        c.hello().await.unwrap();
        c.login("alice", "pw", "S0VZ").await.unwrap();
    }
}

/// A server with a thousand registered devices sends a login_ok of ~0.5 MB.
#[tokio::test]
async fn a_login_ok_listing_many_devices_is_read() {
    let (client, server) = tokio::io::duplex(1 << 16);
    let devices: Vec<DeviceInfo> = (0..1000)
        .map(|i| DeviceInfo {
            user: format!("user{i}"),
            fingerprint: Fingerprint::of(format!("{i}").as_bytes()),
            key: "K".repeat(400),
            online: false,
            vouches: Vec::new(),
        })
        .collect();
    tokio::spawn(fake_server(server, move |f| match f {
        ClientFrame::Hello { .. } => vec![server_hello()],
        ClientFrame::Login { user, .. } => vec![ServerFrame::LoginOk {
            user,
            session: 1,
            device: Fingerprint::of(b"KEY"),
            online: vec![],
            devices: devices.clone(),
            room: "lobby".into(),
            rooms: vec![],
        }],
        _ => vec![],
    }));
    let mut c = Connection::new(client);
    c.hello().await.unwrap();
    let ok = c.login("alice", "pw", "S0VZ").await.unwrap();
    assert_eq!(ok.devices.len(), 1000);
}

#[tokio::test]
async fn refused_hello_and_early_close() {
    let (client, server) = tokio::io::duplex(4096);
    tokio::spawn(fake_server(server, |_| {
        vec![
            ServerFrame::error(ErrorCode::UnsupportedVersion, "unsupported version"),
            ServerFrame::Bye {
                reason: "bad".into(),
            },
        ]
    }));
    let err = Connection::new(client).hello().await.unwrap_err();
    assert!(err.to_string().contains("unsupported version"), "{err}");

    let (client, server) = tokio::io::duplex(4096);
    drop(server);
    let err = Connection::new(client).hello().await.unwrap_err();
    assert!(err.downcast_ref::<LoginFailed>().is_none());
}
