//! Unit tests of replay, loss and time: chains kept across restarts and never replaced,
//! stored messages accepted for the offline TTL and shown once, gaps and late arrivals, and
//! the signed time shown.

use std::path::{Path, PathBuf};

use chatd_proto::e2e::{ChainSnapshot, seal, wrap_chain};
use chatd_proto::frame::{DeviceInfo, RoomState};

use super::fixtures::{device_info, fixed_key, room_state};
use super::*;
use crate::state::StateFile;

const NAMES: [&str; 2] = ["alice", "bob"];
const SKEW: u64 = 60_000;
const DAY: u64 = 24 * 3600 * 1000;

fn key(i: usize) -> DeviceKey {
    fixed_key(i)
}

fn info(i: usize) -> DeviceInfo {
    device_info(NAMES[i], i)
}

fn lobby() -> RoomState {
    room_state("lobby", &NAMES)
}

/// Bob logged in, keeping his state in `state` (None: in memory).
fn bob(state: Option<&Path>) -> Secure {
    let mut s = Secure::new("bob", key(1), Peers::in_memory(), SKEW, 4096);
    s.on_login(&[info(0), info(1)], "lobby", &[lobby()]);
    if let Some(path) = state {
        s.use_state(StateFile::new(path, &key(1)).unwrap()).unwrap();
    }
    s
}

/// Alice's side, built from the primitives so that timestamps and chains can be chosen.
struct Alice {
    chain: SenderChain,
    conversation: String,
}

impl Alice {
    fn new(conversation: &str) -> Self {
        Alice {
            chain: SenderChain::new().unwrap(),
            conversation: conversation.into(),
        }
    }

    /// The `chain` frame's data for bob, at the chain's current index.
    fn wrapped(&self) -> String {
        wrap_chain(
            &self.chain,
            &key(0),
            "alice",
            &self.conversation,
            &key(1).public(),
        )
        .unwrap()
        .to_base64()
        .unwrap()
    }

    /// The next envelope, signed at `signed_ms`.
    fn say(&mut self, text: &str, signed_ms: u64) -> Bytes {
        let body = serde_json::to_string(&Body {
            text: text.into(),
            action: false,
        })
        .unwrap();
        let env = seal(
            &key(0),
            "alice",
            &self.conversation,
            &mut self.chain,
            &body,
            signed_ms,
        )
        .unwrap();
        Bytes::from(env.encode().unwrap())
    }
}

fn delivered(data: &Bytes, ts: u64, stored: bool) -> Delivered {
    Delivered {
        sent_by: SentBy::Named {
            user: "alice".into(),
            device: key(0).fingerprint(),
        },
        data: Ok(data.clone()),
        ts,
        stored,
    }
}

fn texts(events: &[Event]) -> Vec<&str> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Message(m) => Some(m.text.as_str()),
            _ => None,
        })
        .collect()
}

fn message(events: &[Event]) -> &ChatMessage {
    match events {
        [Event::Message(m)] => m,
        other => panic!("expected one message, got {other:?}"),
    }
}

fn refusal(events: &[Event]) -> &Refusal {
    match events {
        [Event::Warning(Warning::Dropped { why, .. })] => why,
        other => panic!("expected one dropped message, got {other:?}"),
    }
}

fn check(events: &[Event]) -> &E2eError {
    match refusal(events) {
        Refusal::Check { error, .. } => error,
        other => panic!("expected a failed check, got {other:?}"),
    }
}

fn state_path(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("state").join("bob@h:1")
}

#[test]
fn chains_and_shown_messages_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = state_path(&dir);
    let mut alice = Alice::new("alice,bob");
    let chain = alice.wrapped();
    let first = alice.say("first", now_ms());
    let second = alice.say("second", now_ms());

    let mut b = bob(Some(&path));
    assert!(b.on_chain("alice", key(0).fingerprint(), &chain).is_empty());
    assert_eq!(
        texts(&b.on_delivered(&delivered(&first, now_ms(), true))),
        ["first"]
    );
    assert!(b.backlog_end(false).is_empty(), "nothing skipped yet");
    drop(b);

    // Restarted before the server deleted the lines: they come again, with the chain.
    let mut b = bob(Some(&path));
    assert!(
        b.on_chain("alice", key(0).fingerprint(), &chain).is_empty(),
        "an identical chain sent again is ignored without a word"
    );
    assert!(
        b.on_delivered(&delivered(&first, now_ms(), true))
            .is_empty(),
        "a stored message shown before is skipped quietly"
    );
    assert_eq!(
        texts(&b.on_delivered(&delivered(&second, now_ms(), true))),
        ["second"]
    );
    assert!(
        b.backlog_end(true).is_empty(),
        "said once, after the last batch"
    );
    assert_eq!(
        b.backlog_end(false),
        [Event::Notice(Notice::AlreadyShown { count: 1 })]
    );
    assert!(b.backlog_end(false).is_empty(), "and only once");
    // The same line live is a replay by the server: warned.
    assert_eq!(
        check(&b.on_delivered(&delivered(&second, now_ms(), false))),
        &E2eError::Replay
    );
    drop(b);

    // Without the state file the same client would show it again: the file is what holds.
    let mut fresh = bob(None);
    fresh.on_chain("alice", key(0).fingerprint(), &chain);
    assert_eq!(
        texts(&fresh.on_delivered(&delivered(&first, now_ms(), true))),
        ["first"]
    );
}

#[test]
fn a_chain_already_held_is_never_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let path = state_path(&dir);
    let mut alice = Alice::new("#lobby");
    let chain = alice.wrapped();
    let one = alice.say("one", now_ms());
    let two = alice.say("two", now_ms());
    let mut b = bob(Some(&path));
    b.on_chain("alice", key(0).fingerprint(), &chain);
    assert_eq!(
        texts(&b.on_delivered(&delivered(&one, now_ms(), false))),
        ["one"]
    );

    // The honest chain sent again (live, or after a restart) resets nothing.
    assert!(b.on_chain("alice", key(0).fingerprint(), &chain).is_empty());
    assert_eq!(
        check(&b.on_delivered(&delivered(&one, now_ms(), false))),
        &E2eError::Replay
    );
    let mut b = bob(Some(&path));
    assert!(b.on_chain("alice", key(0).fingerprint(), &chain).is_empty());
    assert_eq!(
        check(&b.on_delivered(&delivered(&one, now_ms(), false))),
        &E2eError::Replay
    );

    // A later state of the same chain (the sender wrapping it again) is the same chain.
    assert!(
        b.on_chain("alice", key(0).fingerprint(), &alice.wrapped())
            .is_empty()
    );

    // A different chain under the same id is refused with a warning; the held one stays.
    let forged = Alice {
        chain: SenderChain::from_snapshot(&ChainSnapshot {
            chain_id: alice.chain.chain_id(),
            index: 0,
            chain_key: [9; 32],
        }),
        conversation: "#lobby".into(),
    };
    assert_eq!(
        b.on_chain("alice", key(0).fingerprint(), &forged.wrapped()),
        [Event::Warning(Warning::ChainConflict {
            from: "alice".into()
        })]
    );
    assert_eq!(
        texts(&b.on_delivered(&delivered(&two, now_ms(), false))),
        ["two"]
    );
}

#[test]
fn stored_messages_are_accepted_for_the_offline_ttl_live_ones_within_the_skew() {
    let now = now_ms();
    let mut alice = Alice::new("alice,bob");
    let chain = alice.wrapped();
    let six_days = alice.say("six days ago", now - 6 * DAY);
    let ten_minutes = alice.say("ten minutes ago", now - 10 * 60 * 1000);
    let eight_days = alice.say("eight days ago", now - 8 * DAY);
    let ahead = alice.say("from the future", now + 2 * SKEW);

    let mut b = bob(None);
    b.set_offline_ttl_secs(7 * 24 * 3600);
    b.on_chain("alice", key(0).fingerprint(), &chain);
    // Live, the old ones are refused (and not used up) ...
    for env in [&six_days, &ten_minutes, &eight_days] {
        assert_eq!(
            check(&b.on_delivered(&delivered(env, now, false))),
            &E2eError::StaleTimestamp
        );
    }
    // ... stored, those within the TTL open.
    assert_eq!(
        texts(&b.on_delivered(&delivered(&six_days, now - 6 * DAY, true))),
        ["six days ago"]
    );
    assert_eq!(
        texts(&b.on_delivered(&delivered(&ten_minutes, now - 600_000, true))),
        ["ten minutes ago"]
    );
    assert_eq!(
        check(&b.on_delivered(&delivered(&eight_days, now - 8 * DAY, true))),
        &E2eError::StaleTimestamp
    );
    // The future is no more acceptable stored than live.
    assert_eq!(
        check(&b.on_delivered(&delivered(&ahead, now, true))),
        &E2eError::StaleTimestamp
    );
    // A server keeping lines longer says so in its hello.
    b.set_offline_ttl_secs(10 * 24 * 3600);
    let shown = b.on_delivered(&delivered(&eight_days, now - 8 * DAY, true));
    // Index 2 arrives after index 3 was refused, not used: no gap, not late.
    assert_eq!(texts(&shown), ["eight days ago"]);
}

#[test]
fn a_gap_is_reported_once_and_a_late_message_marked() {
    let mut alice = Alice::new("#lobby");
    let chain = alice.wrapped();
    let envs: Vec<Bytes> = (0..6)
        .map(|i| alice.say(&format!("m{i}"), now_ms()))
        .collect();
    let mut b = bob(None);
    b.on_chain("alice", key(0).fingerprint(), &chain);
    assert!(!message(&b.on_delivered(&delivered(&envs[0], now_ms(), false))).late);
    let shown = b.on_delivered(&delivered(&envs[3], now_ms(), false));
    assert_eq!(
        shown[0],
        Event::Warning(Warning::Missing {
            from: "alice".into(),
            conversation: "#lobby".into(),
            count: 2,
        })
    );
    assert_eq!(texts(&shown[1..]), ["m3"]);
    assert_eq!(shown.len(), 2);
    let late = b.on_delivered(&delivered(&envs[1], now_ms(), false));
    assert!(message(&late).late, "reported missing, then arrived: late");
    assert!(!message(&b.on_delivered(&delivered(&envs[4], now_ms(), false))).late);
    let late = b.on_delivered(&delivered(&envs[2], now_ms(), false));
    assert!(message(&late).late);
    assert!(
        !message(&b.on_delivered(&delivered(&envs[5], now_ms(), false))).late,
        "no gap left: nothing more to say"
    );
}

#[test]
fn the_signed_time_is_shown_and_the_servers_only_when_they_disagree() {
    let now = now_ms();
    let mut alice = Alice::new("#lobby");
    let chain = alice.wrapped();
    let agree = alice.say("agree", now - 1000);
    let moved = alice.say("moved", now - 2000);
    let mut b = bob(None);
    b.on_chain("alice", key(0).fingerprint(), &chain);
    let m = message(&b.on_delivered(&delivered(&agree, now, false))).clone();
    assert_eq!((m.ts, m.server_ts), (now - 1000, None));
    // The server claims it was sent 19 hours earlier (stored, so within the TTL).
    let server = now - 19 * 3600 * 1000;
    let m = message(&b.on_delivered(&delivered(&moved, server, true))).clone();
    assert_eq!((m.ts, m.server_ts), (now - 2000, Some(server)));
}

#[test]
fn chains_dropped_for_the_bound_are_not_taken_again() {
    let dir = tempfile::tempdir().unwrap();
    let path = state_path(&dir);
    let mut b = bob(Some(&path));
    let mut first = Alice::new("#lobby");
    let first_chain = first.wrapped();
    let first_env = first.say("first", now_ms());
    b.on_chain("alice", key(0).fingerprint(), &first_chain);
    assert_eq!(
        texts(&b.on_delivered(&delivered(&first_env, now_ms(), true))),
        ["first"]
    );
    for _ in 0..CHAINS_PER_DEVICE {
        let other = Alice::new("#lobby");
        b.on_chain("alice", key(0).fingerprint(), &other.wrapped());
    }
    assert_eq!(b.receivers.len(), CHAINS_PER_DEVICE, "bounded per device");
    // Also after a restart: the bound and the retired list are in the file.
    let mut b = bob(Some(&path));
    assert_eq!(b.receivers.len(), CHAINS_PER_DEVICE);
    assert!(
        b.on_chain("alice", key(0).fingerprint(), &first_chain)
            .is_empty()
    );
    assert_eq!(
        refusal(&b.on_delivered(&delivered(&first_env, now_ms(), true))),
        &Refusal::NoChain,
        "the old chain was not taken as new, so its message is not shown twice"
    );
}

#[test]
fn a_damaged_state_file_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = state_path(&dir);
    let mut alice = Alice::new("#lobby");
    let mut b = bob(Some(&path));
    b.on_chain("alice", key(0).fingerprint(), &alice.wrapped());
    let env = alice.say("x", now_ms());
    b.on_delivered(&delivered(&env, now_ms(), false));
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x80;
    std::fs::write(&path, &bytes).unwrap();
    let mut again = Secure::new("bob", key(1), Peers::in_memory(), SKEW, 4096);
    let err = format!(
        "{:#}",
        again
            .use_state(StateFile::new(&path, &key(1)).unwrap())
            .unwrap_err()
    );
    assert!(err.contains("damaged"), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
}

#[test]
fn a_state_file_that_cannot_be_written_is_said_once() {
    let dir = tempfile::tempdir().unwrap();
    // A directory where the file should be: every write fails.
    let path = dir.path().join("taken");
    std::fs::create_dir(&path).unwrap();
    let mut b = Secure::new("bob", key(1), Peers::in_memory(), SKEW, 4096);
    b.on_login(&[info(0), info(1)], "lobby", &[lobby()]);
    b.state = Some(StateFile::new(&path, &key(1)).unwrap());
    let mut alice = Alice::new("#lobby");
    let warned = b.on_chain("alice", key(0).fingerprint(), &alice.wrapped());
    assert!(
        matches!(&warned[..], [Event::Warning(Warning::StateNotSaved { .. })]),
        "{warned:?}"
    );
    let env = alice.say("still shown", now_ms());
    assert_eq!(
        b.on_delivered(&delivered(&env, now_ms(), false)).len(),
        1,
        "the message, with no second warning"
    );
}
