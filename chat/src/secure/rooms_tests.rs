//! Rosters against a hostile server: forged and unsolicited `members` frames, unannounced
//! members, forged removals, and names that only look right.

use super::*;
use crate::secure::fixtures::{device_info, fixed_key};
use chatd_proto::ClientFrame;
use chatd_proto::Fingerprint;
use chatd_proto::e2e::{DeviceKey, WrappedChain};

use crate::peers::Peers;
use crate::secure::{Body, NotSent};

const NAMES: [&str; 3] = ["alice", "bob", "carol"];

fn key(i: usize) -> DeviceKey {
    fixed_key(i)
}

fn info(i: usize, user: &str) -> DeviceInfo {
    device_info(user, i)
}

fn state(name: &str, members: &[&str], invite_only: bool) -> RoomState {
    RoomState {
        name: name.into(),
        topic: String::new(),
        members: members.iter().map(|m| m.to_string()).collect(),
        invite_only,
        owner: None,
    }
}

/// Alice, logged in, knowing bob and carol, in #lobby and #ops (with bob).
fn alice() -> Secure {
    let mut s = Secure::new("alice", key(0), Peers::in_memory(), 60_000, 4096);
    let devices: Vec<DeviceInfo> = (0..3).map(|i| info(i, NAMES[i])).collect();
    s.on_login(
        &devices,
        "lobby",
        &[
            state("lobby", &NAMES, false),
            state("ops", &["alice", "bob"], false),
        ],
    );
    s
}

/// The users whose devices get our chain when we next talk in `room`.
fn sealed_to(s: &mut Secure, room: &str) -> Result<Vec<&'static str>, NotSent> {
    let body = Body {
        text: "secret".into(),
        action: false,
    };
    let sealed = s.seal(&Conversation::Room(room.into()), body)?;
    let mut to: Vec<&str> = sealed
        .chains
        .iter()
        .map(|c| {
            let ClientFrame::Chain { data } = c else {
                panic!("{c:?}")
            };
            let fp: Fingerprint = WrappedChain::from_base64(data)
                .unwrap()
                .header()
                .recipient_device;
            NAMES[(0..3).find(|i| key(*i).fingerprint() == fp).unwrap()]
        })
        .collect();
    to.sort_unstable();
    Ok(to)
}

fn warning(events: &[Event]) -> &Warning {
    match events {
        [Event::Warning(w)] => w,
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_forged_members_frame_neither_adds_us_nor_switches_the_room() {
    let mut s = alice();
    // An invite-only room alice never asked to join, claiming she is in it with carol.
    let forged = state("secret", &["alice", "carol"], true);
    assert_eq!(
        warning(&s.room_state(&forged)),
        &Warning::RosterNotAsked {
            room: "secret".into()
        }
    );
    assert!(!s.in_room("secret"));
    assert_eq!(s.current_room(), "lobby");
    assert_eq!(
        sealed_to(&mut s, "secret").unwrap_err(),
        NotSent::NotInRoom {
            room: "secret".into()
        }
    );
    // A room alice is in, sent again unasked: no switch, no notice.
    assert_eq!(
        s.room_state(&state("ops", &["alice", "bob"], false)),
        vec![]
    );
    assert_eq!(s.current_room(), "lobby");
    // The look-alike of the default room is not a room name at all.
    let look_alike = state("lobby\u{200b}", &["alice", "carol"], false);
    assert_eq!(
        warning(&s.room_state(&look_alike)),
        &Warning::BadName {
            frame: "members",
            name: "lobby\u{200b}".into()
        }
    );
    assert_eq!(s.current_room(), "lobby");
    // A /members answer for a room alice is not in (she is not listed): shown, no change.
    assert_eq!(s.room_state(&state("dev", &["bob"], false)), vec![]);
    assert!(!s.in_room("dev"));
}

#[test]
fn only_announced_joins_add_recipients() {
    let mut s = alice();
    assert_eq!(sealed_to(&mut s, "ops").unwrap(), ["bob"]);
    // The server slips carol into #ops's roster without a join event.
    let forged = state("ops", &["alice", "bob", "carol"], false);
    assert_eq!(
        warning(&s.room_state(&forged)),
        &Warning::UnannouncedMembers {
            room: "ops".into(),
            users: vec!["carol".into()]
        }
    );
    // Said once per change, not per frame.
    assert_eq!(s.room_state(&forged), vec![]);
    assert_eq!(s.room_state(&forged), vec![]);
    s.switch_room("ops");
    assert_eq!(sealed_to(&mut s, "ops").unwrap(), Vec::<&str>::new());
    // A join the user is shown (`-- carol joined #ops`) does add her.
    s.room_event("ops", "carol", true);
    assert_eq!(sealed_to(&mut s, "ops").unwrap(), ["carol"]);
    assert_eq!(s.room_state(&forged), vec![]);
    // A roster may drop a member (the server can always hide one): a new chain follows.
    assert_eq!(
        s.room_state(&state("ops", &["alice", "carol"], false)),
        vec![]
    );
    let again = sealed_to(&mut s, "ops").unwrap();
    assert_eq!(again, ["carol"]);
}

#[test]
fn our_join_is_the_only_way_in() {
    let mut s = alice();
    s.asking_to_join("dev");
    // The answer for another room is not it.
    assert!(matches!(
        warning(&s.room_state(&state("secret", &["alice"], true))),
        Warning::RosterNotAsked { .. }
    ));
    let events = s.room_state(&state("dev", &["alice", "bob"], false));
    assert_eq!(
        events,
        vec![Event::Notice(Notice::Joined {
            room: "dev".into(),
            default_room: "lobby".into()
        })]
    );
    assert_eq!(s.current_room(), "dev");
    // Once answered, the same frame again is just a roster.
    assert_eq!(
        s.room_state(&state("dev", &["alice", "bob"], false)),
        vec![]
    );
    // Asking again for a room we are in does not open its roster to the answer.
    s.asking_to_join("dev");
    assert!(matches!(
        warning(&s.room_state(&state("dev", &["alice", "bob", "carol"], false))),
        Warning::UnannouncedMembers { .. }
    ));
    s.join_unanswered("dev");
    assert_eq!(sealed_to(&mut s, "dev").unwrap(), ["bob"]);
    // A join refused (no members frame came) is forgotten; the room stays the current one,
    // where text is refused, until the user picks another.
    s.asking_to_join("secret");
    s.join_unanswered("secret");
    assert!(matches!(
        warning(&s.room_state(&state("secret", &["alice", "carol"], true))),
        Warning::RosterNotAsked { .. }
    ));
    assert_eq!(s.current_room(), "secret");
    assert!(!s.in_room("secret"));
}

#[test]
fn a_removal_we_did_not_ask_for_does_not_redirect_our_text() {
    let mut s = alice();
    s.switch_room("ops");
    // Kicked (or a forged kick): out of #ops, but plain text does not go to #lobby.
    s.room_event("ops", "alice", false);
    assert_eq!(s.current_room(), "ops");
    assert_eq!(
        sealed_to(&mut s, "ops").unwrap_err(),
        NotSent::NotInRoom { room: "ops".into() }
    );
    // Our own /part goes back to the default room.
    let mut s = alice();
    s.switch_room("ops");
    s.asking_to_part("ops");
    s.room_event("ops", "alice", false);
    assert_eq!(s.current_room(), "lobby");
    // A forged join of us to a room we are not in does nothing.
    s.room_event("secret", "alice", true);
    assert!(!s.in_room("secret"));
    // Nor does a forged removal from the default room, which nobody can leave.
    s.asking_to_part("lobby");
    s.room_event("lobby", "alice", false);
    assert_eq!(sealed_to(&mut s, "lobby").unwrap(), ["bob", "carol"]);
}

#[test]
fn login_refuses_invalid_names() {
    let mut s = Secure::new("alice", key(0), Peers::in_memory(), 60_000, 4096);
    let events = s.on_login(
        &[info(0, "alice"), info(1, "bob\u{200b}")],
        "lobby",
        &[
            state("lobby", &["alice"], false),
            state("0ps\u{200d}", &["alice"], false),
        ],
    );
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e, Event::Warning(Warning::BadName { .. })))
            .count(),
        2,
        "{events:?}"
    );
    assert!(!s.in_room("0ps\u{200d}"));
    // Nothing is sealed to the key listed under the bad name.
    assert_eq!(sealed_to(&mut s, "lobby").unwrap(), Vec::<&str>::new());
}

#[test]
fn a_look_alike_default_room_gets_no_text() {
    let mut s = Secure::new("alice", key(0), Peers::in_memory(), 60_000, 4096);
    let events = s.on_login(
        &[info(0, "alice"), info(1, "bob")],
        "lobby\u{200b}",
        &[state("lobby\u{200b}", &["alice", "bob"], false)],
    );
    let bad = events
        .iter()
        .filter(|e| matches!(e, Event::Warning(Warning::BadName { .. })))
        .count();
    assert_eq!(bad, 2, "{events:?}");
    assert_eq!(s.current_room(), "");
    assert!(matches!(
        sealed_to(&mut s, "lobby\u{200b}"),
        Err(NotSent::NotInRoom { .. })
    ));
}
