//! The hub's tests of the way to the offline writer: bounded, never awaited, its refusals
//! told to the sender; and chains finding their device through the fingerprint index.

use bytes::Bytes;
use chatd_proto::conversation::Conversation;
use tokio::sync::mpsc;

use super::tests::{device_of, drain, join, with_writer};
use super::*;

#[test]
fn a_full_writer_queue_refuses_the_line_tells_its_sender_and_numbers_nothing() {
    let hub = Hub::new(4, 8);
    let (tx, mut jobs) = mpsc::channel(2);
    hub.attach_offline(tx);
    hub.set_known([("bob".to_string(), device_of("bob", 1), "k".to_string())]);
    let (a, mut ra, _) = join(&hub, "alice", 8);
    let _ = drain(&mut ra);
    let sender = Sender {
        user: "alice".into(),
        session: a,
    };
    let line = Bytes::from_static(b"chain\n");
    let bob = device_of("bob", 1);
    assert_eq!(
        hub.route_to_device(&bob, &line, Some(&sender)),
        Routed::Stored
    );
    assert_eq!(
        hub.route_to_device(&bob, &line, Some(&sender)),
        Routed::Stored
    );
    // Two jobs wait: the third is refused at once, never awaited, and alice hears of it.
    assert_eq!(
        hub.route_to_device(&bob, &line, Some(&sender)),
        Routed::Refused
    );
    assert_eq!(hub.offline_seq(), 2);
    let told = drain(&mut ra);
    assert_eq!(told.len(), 1, "{told:?}");
    assert!(
        told[0].contains("offline_queue_full") && told[0].contains("busy"),
        "{told:?}"
    );
    // Once the writer takes one, there is room again; the numbers go on without a gap.
    let first = jobs.try_recv().unwrap();
    assert_eq!((first.seq, first.sender), (1, Some(sender.clone())));
    assert_eq!(
        hub.route_to_device(&bob, &line, Some(&sender)),
        Routed::Stored
    );
    assert_eq!(jobs.try_recv().unwrap().seq, 2);
    assert_eq!(jobs.try_recv().unwrap().seq, 3);
}

#[test]
fn a_chain_finds_its_device_by_index_after_keys_come_and_go() {
    let hub = Hub::new(4, 8);
    let mut jobs = with_writer(&hub);
    let shared = device_of("shared", 1);
    hub.set_known([
        ("bob".to_string(), shared, "k".to_string()),
        ("carol".to_string(), shared, "k".to_string()),
        ("carol".to_string(), device_of("carol", 2), "k".to_string()),
    ]);
    let line = Bytes::from_static(b"chain\n");
    assert_eq!(hub.route_to_device(&shared, &line, None), Routed::Stored);
    let users: Vec<String> = jobs
        .try_recv()
        .unwrap()
        .targets
        .iter()
        .map(|(u, _)| u.clone())
        .collect();
    assert_eq!(users, ["bob", "carol"]);
    hub.forget_device("bob", &shared);
    assert_eq!(hub.route_to_device(&shared, &line, None), Routed::Stored);
    let users: Vec<String> = jobs
        .try_recv()
        .unwrap()
        .targets
        .iter()
        .map(|(u, _)| u.clone())
        .collect();
    assert_eq!(users, ["carol"]);
    hub.forget_user("carol");
    assert_eq!(hub.route_to_device(&shared, &line, None), Routed::Unknown);
    assert_eq!(
        hub.route_to_device(&device_of("carol", 2), &line, None),
        Routed::Unknown
    );
    assert!(jobs.try_recv().is_err());
}

#[test]
fn jobs_for_the_same_offline_devices_share_one_list_of_them() {
    let hub = Hub::new(4, 8);
    let mut jobs = with_writer(&hub);
    hub.set_known((0..50u8).map(|n| (format!("u{n}"), device_of("u", n), "k".to_string())));
    let (_a, mut ra, _) = join(&hub, "alice", 8);
    let _ = drain(&mut ra);
    for _ in 0..3 {
        hub.route_conversation(&Conversation::All, &Bytes::from_static(b"x\n"), None);
    }
    let all: Vec<OfflineJob> = (0..3).map(|_| jobs.try_recv().unwrap()).collect();
    assert_eq!(all[0].targets.len(), 50);
    // One copy of the 50 devices, however many lines wait for the writer.
    assert!(std::sync::Arc::ptr_eq(&all[0].targets, &all[1].targets));
    assert!(std::sync::Arc::ptr_eq(&all[1].targets, &all[2].targets));
}
