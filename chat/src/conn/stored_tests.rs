//! The stored stretch of a connection: which envelopes came from the server's replay of what
//! was kept for this device while it was offline, and the server's offline TTL.

use chatd_proto::codec::binary_envelope;
use chatd_proto::{ClientFrame, Fingerprint, PROTOCOL_VERSION, ServerFrame};

use super::tests::{fake_server_raw, json};
use super::{Connection, Incoming};

/// Envelopes between `login_ok` and the last `backlog` marker are flagged as stored; a
/// binary envelope or a frame that is never stored ends that stretch too. The server's
/// TTL comes from its hello (7 days from an older server that does not say).
#[tokio::test]
async fn stored_envelopes_are_flagged_until_the_replay_ends() {
    let device = Fingerprint::of(b"BOB");
    let envelope = move |ts| {
        json(&ServerFrame::Envelope {
            from: "bob".into(),
            device,
            data: "AAAA".into(),
            ts,
        })
    };
    let backlog = |more| {
        json(&ServerFrame::Backlog {
            upto: 1,
            count: 1,
            more,
        })
    };
    let pong = json(&ServerFrame::Pong { nonce: 1 });
    let notice = json(&ServerFrame::Notice {
        text: "message of the day".into(),
    });
    let cases = [
        (
            Some(86_400),
            vec![
                envelope(1),
                backlog(true),
                pong.clone(),
                envelope(2),
                backlog(false),
                envelope(3),
            ],
            vec![(1, true), (2, true), (3, false)],
        ),
        (
            None,
            vec![
                envelope(1),
                binary_envelope(2, b"live"),
                envelope(3),
                backlog(true),
                envelope(4),
            ],
            vec![(1, true), (2, false), (3, false), (4, false)],
        ),
        // Nothing stored, so no marker: the first live frame ends it.
        (None, vec![notice, envelope(1)], vec![(1, false)]),
    ];
    for (ttl, after_login, expected) in cases {
        let (client, server) = tokio::io::duplex(1 << 16);
        let mut after_login = Some(after_login);
        tokio::spawn(fake_server_raw(server, move |got| match got {
            Ok(ClientFrame::Hello { .. }) => vec![json(&ServerFrame::Hello {
                version: PROTOCOL_VERSION,
                server: "chatd/test".into(),
                max_line_bytes: 65536,
                max_text_bytes: 100,
                idle_timeout_secs: 0,
                binary: true,
                offline_ttl_secs: ttl,
                features: Vec::new(),
                challenge: None,
            })],
            Ok(ClientFrame::Login { user, .. }) => {
                let mut out = vec![json(&ServerFrame::LoginOk {
                    user,
                    session: 1,
                    device: Fingerprint::of(b"KEY"),
                    online: vec![],
                    devices: vec![],
                    room: "lobby".into(),
                    rooms: vec![],
                })];
                out.extend(after_login.take().unwrap_or_default());
                out
            }
            _ => vec![],
        }));
        let mut c = Connection::new(client);
        let info = c.hello().await.unwrap();
        assert_eq!(info.offline_ttl_secs, ttl.unwrap_or(604_800));
        c.login("alice", "pw", "S0VZ").await.unwrap();
        let mut got = Vec::new();
        while got.len() < expected.len() {
            if let Some(Incoming::Envelope(d)) = c.recv().await.unwrap() {
                got.push((d.ts, d.stored));
            }
        }
        assert_eq!(got, expected);
    }
}
