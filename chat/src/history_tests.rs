//! Unit tests of the history file: round trip, wrong key, damage, bounds, file mode.

use std::os::unix::fs::PermissionsExt;

use super::*;

fn key(i: usize) -> DeviceKey {
    let pems = [
        include_str!("../../proto/src/e2e/testdata/alice.pem"),
        include_str!("../../proto/src/e2e/testdata/bob.pem"),
    ];
    DeviceKey::from_pkcs8_pem(pems[i]).unwrap()
}

fn on(lines: usize) -> HistoryConfig {
    HistoryConfig {
        enabled: true,
        lines,
        days: 0,
        show: 1000,
    }
}

fn msg(from: &str, room: Option<&str>, text: &str, ts: u64) -> ChatMessage {
    ChatMessage {
        from: from.into(),
        to: None,
        room: room.map(str::to_string),
        text: text.into(),
        action: false,
        ts,
        verified: false,
        late: false,
        server_ts: None,
    }
}

fn texts(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Message(m) => Some(m.text.clone()),
            _ => None,
        })
        .collect()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

const T0: u64 = 1_764_000_000_000;

#[test]
fn lines_round_trip_private_and_encrypted_and_are_shown_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys").join("alice@h:1.history");
    let mut h = History::open(&path, &key(0), on(100)).unwrap();
    assert!(h.intro().is_empty(), "no file, nothing to show");
    let mut whisper = msg("bob", None, "psst only for alice", T0 + 2);
    whisper.to = Some("alice".into());
    let events = vec![
        Event::Message(msg("bob", None, "hello lobby", T0)),
        Event::Notice(Notice::HistoryEnd),
        Event::Message(msg("alice", Some("ops"), "ops line", T0 + 1)),
        Event::Message(whisper.clone()),
    ];
    assert_eq!(h.pass(events.clone()), events, "everything is still shown");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let dmode = std::fs::metadata(path.parent().unwrap())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(dmode, 0o700);
    let bytes = std::fs::read(&path).unwrap();
    assert!(bytes.starts_with(b"CHATHIST\x01"));
    for clear in ["hello lobby", "ops line", "psst", "bob"] {
        assert!(!contains(&bytes, clear.as_bytes()), "{clear} is encrypted");
    }

    let mut again = History::open(&path, &key(0), on(100)).unwrap();
    let intro = again.intro();
    assert!(matches!(
        intro.first(),
        Some(Event::Notice(Notice::HistoryStart {
            lines: 3,
            since: T0
        }))
    ));
    assert_eq!(intro.last(), Some(&Event::Notice(Notice::HistoryEnd)));
    assert_eq!(
        texts(&intro),
        ["hello lobby", "ops line", "psst only for alice"]
    );
    assert_eq!(intro[3], Event::Message(whisper.clone()));
    assert!(again.intro().is_empty(), "handed out once");
    // The server delivering one of them again: shown once, from the history.
    let replayed = again.pass(vec![
        Event::Message(msg("bob", None, "hello lobby", T0)),
        Event::Message(msg("bob", None, "new one", T0 + 5)),
    ]);
    assert_eq!(texts(&replayed), ["new one"]);
    let third = History::open(&path, &key(0), on(100)).unwrap().intro();
    assert_eq!(
        texts(&third).len(),
        4,
        "the new line was kept, the replay was not"
    );
}

#[test]
fn another_device_key_is_said_and_the_file_is_never_touched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.history");
    let mut h = History::open(&path, &key(0), on(100)).unwrap();
    h.pass(vec![Event::Message(msg("bob", None, "x", T0))]);
    let before = std::fs::read(&path).unwrap();
    let mut other = History::open(&path, &key(1), on(100)).unwrap();
    let intro = other.intro();
    match intro.as_slice() {
        [Event::Warning(Warning::HistoryUnusable { error, .. })] => {
            assert!(error.contains("another device key"), "{error}");
        }
        other => panic!("{other:?}"),
    }
    let out = other.pass(vec![Event::Message(msg("bob", None, "y", T0 + 1))]);
    assert_eq!(texts(&out), ["y"], "still shown");
    assert_eq!(std::fs::read(&path).unwrap(), before, "not written");
    assert!(matches!(
        other.status().as_slice(),
        [Event::Notice(Notice::HistoryStatus { enabled: false, .. })]
    ));
    // Not a history file at all, or too loose a mode: also left alone.
    std::fs::write(
        &path,
        b"something else entirely, long enough to be a header",
    )
    .unwrap();
    let mut junk = History::open(&path, &key(0), on(100)).unwrap();
    assert!(matches!(
        junk.intro().as_slice(),
        [Event::Warning(Warning::HistoryUnusable { .. })]
    ));
    std::fs::write(&path, &before).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut loose = History::open(&path, &key(0), on(100)).unwrap();
    match loose.intro().as_slice() {
        [Event::Warning(Warning::HistoryUnusable { error, .. })] => {
            assert!(error.contains("chmod 600"), "{error}");
        }
        other => panic!("{other:?}"),
    }
    // /history clear deletes it, and lines are kept again afterwards.
    assert!(matches!(
        other.clear().as_slice(),
        [Event::Notice(Notice::HistoryCleared { .. })]
    ));
    assert!(!path.exists());
    other.pass(vec![Event::Message(msg("bob", None, "z", T0 + 2))]);
    let fresh = History::open(&path, &key(1), on(100)).unwrap().intro();
    assert_eq!(texts(&fresh), ["z"]);
}

#[test]
fn a_cut_off_or_damaged_record_loses_only_itself() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.history");
    let mut h = History::open(&path, &key(0), on(100)).unwrap();
    for (i, t) in ["one", "two", "three"].iter().enumerate() {
        h.pass(vec![Event::Message(msg("bob", None, t, T0 + i as u64))]);
    }
    let good = std::fs::read(&path).unwrap();
    // A crash in the middle of the last append.
    std::fs::write(&path, &good[..good.len() - 5]).unwrap();
    let mut cut = History::open(&path, &key(0), on(100)).unwrap();
    let intro = cut.intro();
    assert!(matches!(
        intro.first(),
        Some(Event::Warning(Warning::HistoryDamaged { records: 1, .. }))
    ));
    assert_eq!(texts(&intro), ["one", "two"]);
    // The damage was cut away, so what is appended now reads back.
    cut.pass(vec![Event::Message(msg("bob", None, "four", T0 + 9))]);
    let intro = History::open(&path, &key(0), on(100)).unwrap().intro();
    assert!(
        !intro
            .iter()
            .any(|e| matches!(e, Event::Warning(Warning::HistoryDamaged { .. }))),
        "said once"
    );
    assert_eq!(texts(&intro), ["one", "two", "four"]);
    // A flipped bit in the middle record: the others stay.
    let mut flipped = good.clone();
    let first_len = u32::from_be_bytes(
        good[HEADER_BYTES + CHECK_BYTES..HEADER_BYTES + CHECK_BYTES + 4]
            .try_into()
            .unwrap(),
    ) as usize;
    let second = HEADER_BYTES + CHECK_BYTES + 4 + first_len;
    flipped[second + 10] ^= 1;
    std::fs::write(&path, &flipped).unwrap();
    let intro = History::open(&path, &key(0), on(100)).unwrap().intro();
    assert!(matches!(
        intro.first(),
        Some(Event::Warning(Warning::HistoryDamaged { records: 1, .. }))
    ));
    assert_eq!(texts(&intro), ["one", "three"]);
}

#[test]
fn each_conversation_is_bounded_and_compacted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.history");
    let mut h = History::open(&path, &key(0), on(10)).unwrap();
    for i in 0..40u64 {
        h.pass(vec![Event::Message(msg(
            "bob",
            None,
            &format!("lobby {i}"),
            T0 + i,
        ))]);
    }
    h.pass(vec![Event::Message(msg(
        "bob",
        Some("ops"),
        "ops 0",
        T0 + 50,
    ))]);
    // Compaction keeps the file near the bound: at most lines + a quarter per conversation.
    let read = h.read().unwrap().unwrap();
    let lobby = read.lines.iter().filter(|l| l.room.is_none()).count();
    assert!((10..=12).contains(&lobby), "{lobby}");
    let intro = History::open(&path, &key(0), on(10)).unwrap().intro();
    let shown = texts(&intro);
    assert_eq!(shown.len(), 11, "{shown:?}");
    assert_eq!(shown[0], "lobby 30", "the newest ten of the lobby");
    assert_eq!(shown[10], "ops 0", "another conversation keeps its own");
    // `show` limits what is shown, not what is kept.
    let mut few = on(10);
    few.show = 3;
    let intro = History::open(&path, &key(0), few).unwrap().intro();
    assert_eq!(texts(&intro), ["lobby 38", "lobby 39", "ops 0"]);
    // `days`: older lines are dropped at start.
    let mut recent = on(10);
    recent.days = 1;
    let mut h = History::open(&path, &key(0), recent.clone()).unwrap();
    assert!(texts(&h.intro()).is_empty(), "all of them are too old");
    h.pass(vec![Event::Message(msg("bob", None, "today", now_ms()))]);
    let intro = History::open(&path, &key(0), recent).unwrap().intro();
    assert_eq!(texts(&intro), ["today"]);
}

#[test]
fn off_means_no_file_and_the_path_sits_beside_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.history");
    std::fs::write(&path, b"left from before").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut off = History::open(&path, &key(0), HistoryConfig::default()).unwrap();
    assert!(off.intro().is_empty(), "not even read");
    let events = vec![Event::Message(msg("bob", None, "x", T0))];
    assert_eq!(off.pass(events.clone()), events);
    assert_eq!(std::fs::read(&path).unwrap(), b"left from before");
    off.clear();
    assert!(!path.exists(), "/history clear works while off");
    off.pass(events);
    assert!(!path.exists(), "off writes nothing");

    assert_eq!(
        path_for(Path::new("/d/keys/alice@127.0.0.1:8443.pem")),
        Path::new("/d/keys/alice@127.0.0.1:8443.history")
    );
    assert_eq!(
        path_for(Path::new("/d/alice@127.0.0.1:8443")),
        Path::new("/d/alice@127.0.0.1:8443.history")
    );
}
