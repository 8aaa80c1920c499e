//! The line mode against the scripted server: lines typed after `/join` wait for its
//! answer and go to the joined room (or nowhere, if refused), and hostile server text
//! reaches stdout sanitized.

use super::*;

/// The conversation of each envelope the client sent, in order.
fn conversations(seen: &[Got]) -> Vec<String> {
    seen.iter()
        .filter_map(|g| match g {
            Got::Json(ClientFrame::Send { data }) => Some(Envelope::from_base64(data).unwrap()),
            Got::Binary(data) => Some(Envelope::decode(data).unwrap()),
            Got::Json(_) => None,
        })
        .map(|e| e.header().conversation.clone())
        .collect()
}

#[tokio::test]
async fn lines_after_join_wait_for_the_answer_and_go_to_the_joined_room() {
    let ops = RoomState {
        name: "ops".into(),
        topic: String::new(),
        members: vec!["bob".into()],
        invite_only: false,
        owner: None,
    };
    let fake = Fake {
        bye_on_quit: true,
        devices: vec![device_info("bob", &bob_key())],
        joinable: vec![ops],
        ..Fake::default()
    };
    // Both lines after each `/join` are read long before its answer; the refused
    // join's lines are never sent, the whisper among them included.
    let stdin = "before\n/join ops\nfor ops\n/me waves\n/join secret\nsecret 1\n/w bob secret 2\nsecret 3\n";
    let (code, out, seen) = session(stdin, fake).await;
    assert_eq!(code, 0);
    assert_eq!(conversations(&seen), ["#lobby", "#ops", "#ops"]);
    let pings: Vec<u64> = seen
        .iter()
        .filter_map(|g| match g {
            Got::Json(ClientFrame::Ping { nonce }) => Some(*nonce),
            _ => None,
        })
        .collect();
    assert_eq!(pings.len(), 2, "{seen:?}");
    // Each ping follows its join at once, before anything typed after it.
    let kinds: Vec<String> = seen[2..]
        .iter()
        .map(|g| match g {
            Got::Json(ClientFrame::Command { name, args, .. }) => format!("/{name} {args}"),
            Got::Json(ClientFrame::Ping { .. }) => "ping".into(),
            Got::Json(ClientFrame::Chain { .. }) => "chain".into(),
            Got::Json(ClientFrame::Send { .. }) | Got::Binary(_) => "send".into(),
            Got::Json(other) => format!("{other:?}"),
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "chain",
            "send",
            "/join ops",
            "ping",
            "chain",
            "send",
            "send",
            "/join secret",
            "ping",
            "Quit"
        ]
    );
    assert_eq!(
        out,
        [
            "<alice> before",
            "-- now talking in #ops (plain text goes there; /join lobby switches back)",
            "-- #ops: alice, bob",
            "[#ops] <alice> for ops",
            "[#ops] * alice waves",
            "!! #secret is invite-only; ask its owner to /invite you",
            "!! not in #secret: 3 lines typed after /join not sent (text is not sent until you /join a room you are in)",
            "-- end of input: leaving",
        ]
    );
}

#[tokio::test]
async fn hostile_server_text_reaches_stdout_sanitized() {
    let evil = "\u{1b}[2J\u{1b}]0;pwned\u{7}\u{9b}31m\u{202e}gnp.exe";
    let raw = |frame: ServerFrame| encode(&frame).unwrap();
    let fake = Fake {
        bye_on_quit: true,
        after_login: vec![
            raw(ServerFrame::error(ErrorCode::Refused, evil)),
            raw(ServerFrame::Notice { text: evil.into() }),
            // A name with a zero-width space: refused whole, shown escaped.
            raw(ServerFrame::Presence {
                user: "bob\u{200b}".into(),
                event: chatd_proto::frame::PresenceEvent::Join,
                reason: None,
            }),
            // A forged roster putting alice in a room she never asked to join.
            raw(ServerFrame::Members {
                room: RoomState {
                    name: "lobby-".into(),
                    topic: String::new(),
                    members: vec!["alice".into(), "bob".into()],
                    invite_only: true,
                    owner: None,
                },
            }),
        ],
        ..Fake::default()
    };
    let (code, out, seen) = session("hi\n", fake).await;
    assert_eq!(code, 0);
    for line in &out {
        assert!(!line.chars().any(char::is_control), "{line:?}");
        assert!(!line.contains('\u{202e}'), "{line:?}");
    }
    assert!(
        out.contains(
            &"!! \u{fffd}[2J\u{fffd}]0;pwned\u{fffd}\u{fffd}31m\u{fffd}gnp.exe".to_string()
        ),
        "{out:?}"
    );
    assert!(
        out.iter().any(|l| l
            .starts_with("!! ignored a presence frame from the server: it names \"bob\\u{200b}\"")),
        "{out:?}"
    );
    assert!(
        out.contains(&"!! ignored a member list that puts you in or out of #lobby- without your /join or /part".to_string()),
        "{out:?}"
    );
    // The line still went to the lobby.
    assert_eq!(conversations(&seen), ["#lobby"]);
}
