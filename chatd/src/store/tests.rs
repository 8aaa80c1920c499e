//! The store's tests: each runs on SQLite (in memory) and on a real PostgreSQL (a database of
//! its own on one server per test process; skipped if PostgreSQL is not installed, unless `CI`
//! is set), with the same assertions for both backends.

use std::sync::Arc;

use bytes::Bytes;

use super::*;
use crate::stored_lines::StoredLines;

/// For each name, an `async fn name(store: Store)` run as `name::sqlite` and `name::postgres`.
macro_rules! both {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test]
                async fn sqlite() {
                    super::$name(super::Store::open_in_memory().unwrap()).await
                }
                #[tokio::test]
                async fn postgres() {
                    if let Some(store) = super::postgres().await {
                        super::$name(store).await
                    }
                }
            }
        )*
    };
}

both!(
    device_keys_register_limit_revoke_and_cascade,
    users_crud_ban_and_unban,
    vouches_latest_wins_and_go_with_either_key,
    rooms_create_join_invite_part_and_prepare,
    one_sender_has_a_share_of_each_queue_and_others_still_get_in,
    offline_queues_store_once_cap_order_ack_expire_and_cascade,
    a_page_of_stored_lines_is_bounded_in_lines_and_bytes_and_shares_known_lines,
);

/// A PostgreSQL store on a fresh database, or None (and a note) if PostgreSQL is not
/// installed and `CI` is not set.
async fn postgres() -> Option<Store> {
    postgres::testing::store().await
}

fn k(n: u8) -> [u8; 32] {
    [n; 32]
}

async fn device_keys_register_limit_revoke_and_cascade(s: Store) {
    s.add_user("alice", "h", false).await.unwrap();
    let reg = |fp: u8, max| {
        let s = s.clone();
        async move {
            s.check_and_register("alice", &k(fp), b"spki", 2048, max)
                .await
                .unwrap()
        }
    };
    assert_eq!(reg(1, 2).await, KeyCheck::Registered);
    assert_eq!(reg(1, 2).await, KeyCheck::Known);
    assert_eq!(reg(2, 2).await, KeyCheck::Registered);
    // At the limit of 2: a third key is refused, known ones still work.
    assert_eq!(reg(3, 2).await, KeyCheck::TooMany);
    assert_eq!(reg(2, 2).await, KeyCheck::Known);
    assert!(s.revoke_key("alice", &k(1)).await.unwrap());
    assert!(!s.revoke_key("alice", &k(9)).await.unwrap());
    assert!(!s.revoke_key("bob", &k(2)).await.unwrap());
    assert_eq!(reg(1, 2).await, KeyCheck::Revoked);
    // A revoked key frees its slot.
    assert_eq!(reg(3, 2).await, KeyCheck::Registered);
    let rows = s.list_keys(Some("alice")).await.unwrap().unwrap();
    assert_eq!(rows.len(), 3);
    assert!(
        rows.iter()
            .any(|r| r.fingerprint == k(1) && r.revoked_at.is_some() && r.bits == 2048)
    );
    assert_eq!(s.active_keys().await.unwrap().len(), 2);
    assert_eq!(s.active_keys().await.unwrap()[0].2, b"spki");
    assert_eq!(s.list_keys(None).await.unwrap().unwrap().len(), 3);
    assert!(s.list_keys(Some("nobody")).await.unwrap().is_none());
    assert!(s.delete_user("alice").await.unwrap());
    assert!(s.list_keys(None).await.unwrap().unwrap().is_empty());
}

async fn users_crud_ban_and_unban(s: Store) {
    s.add_user("alice", "h1", false).await.unwrap();
    assert!(matches!(
        s.add_user("alice", "h2", false).await,
        Err(StoreError::UserExists(_))
    ));
    assert!(s.user_exists("alice").await.unwrap());
    assert!(!s.user_exists("bob").await.unwrap());
    assert!(s.set_locked("alice", true).await.unwrap());
    let cred = s.credentials("alice").await.unwrap().unwrap();
    assert!(cred.locked && !cred.admin && cred.password_hash == "h1");
    assert_eq!(cred.banned_until, None);
    assert!(s.set_ban("alice", Some(1_000)).await.unwrap());
    let cred = s.credentials("alice").await.unwrap().unwrap();
    assert_eq!(cred.ban_left(400), Some(600));
    assert_eq!(cred.ban_left(1_000), None, "a ban ends by itself");
    assert_eq!(s.list_users().await.unwrap()[0].banned_until, Some(1_000));
    assert_eq!(s.unban("alice").await.unwrap(), Some(Some(1_000)));
    assert_eq!(s.unban("alice").await.unwrap(), Some(None));
    assert_eq!(s.unban("bob").await.unwrap(), None);
    assert_eq!(
        s.credentials("alice").await.unwrap().unwrap().ban_left(400),
        None
    );
    assert!(!s.set_ban("bob", Some(1_000)).await.unwrap());
    assert!(s.set_password("alice", "h3").await.unwrap());
    assert!(!s.set_password("bob", "h3").await.unwrap());
    assert!(s.credentials("bob").await.unwrap().is_none());
    s.add_user("bob", "h", true).await.unwrap();
    let list = s.list_users().await.unwrap();
    assert_eq!(
        list.iter()
            .map(|u| (&u.name[..], u.admin, u.locked))
            .collect::<Vec<_>>(),
        [("alice", false, true), ("bob", true, false)]
    );
    assert!(list[0].created_at > 0);
    assert_eq!(s.counts().await.unwrap(), (2, 0, 0));
    assert!(s.delete_user("alice").await.unwrap());
    assert!(!s.delete_user("alice").await.unwrap());
    assert_eq!(s.counts().await.unwrap(), (1, 0, 0));
}

async fn vouches_latest_wins_and_go_with_either_key(s: Store) {
    for u in ["alice", "bob"] {
        s.add_user(u, "hash", false).await.unwrap();
    }
    for (u, n) in [("alice", 1), ("alice", 2), ("alice", 3), ("bob", 4)] {
        s.check_and_register(u, &k(n), b"spki", 2048, 10)
            .await
            .unwrap();
    }
    let put = |vouched: u8, voucher: u8, data: &'static [u8]| {
        let s = s.clone();
        async move {
            s.put_vouch("alice", &k(vouched), &k(voucher), data)
                .await
                .unwrap()
        }
    };
    assert!(put(2, 1, b"first").await);
    assert!(put(2, 1, b"second").await);
    assert!(put(3, 1, b"third").await);
    assert!(put(1, 3, b"back").await);
    // Another user's key, or one that does not exist: nothing stored.
    assert!(!put(4, 1, b"x").await);
    assert!(!put(9, 1, b"x").await);
    let rows = s.vouches().await.unwrap();
    assert_eq!(rows.len(), 3);
    assert!(rows.contains(&("alice".into(), k(2), k(1), b"second".to_vec())));

    // Revoking key 3 drops the vouch for it and the one it made.
    assert!(s.revoke_key("alice", &k(3)).await.unwrap());
    assert_eq!(
        s.vouches().await.unwrap(),
        vec![("alice".into(), k(2), k(1), b"second".to_vec())]
    );
    assert!(!put(3, 1, b"again").await);
    // Deleting the account drops the rest.
    s.delete_user("alice").await.unwrap();
    assert!(s.vouches().await.unwrap().is_empty());
}

async fn rooms_create_join_invite_part_and_prepare(s: Store) {
    for u in ["alice", "bob", "carol"] {
        s.add_user(u, "h", false).await.unwrap();
    }
    // At start the default room holds everyone; an empty room from before is gone.
    assert!(s.create_room("old", None, false).await.unwrap());
    let rooms = s.prepare_rooms("lobby").await.unwrap();
    assert_eq!(rooms.len(), 1);
    assert_eq!(rooms[0].name, "lobby");
    assert_eq!(rooms[0].members, ["alice", "bob", "carol"]);
    assert!(!s.join_room("lobby", "alice").await.unwrap());

    assert!(s.create_room("ops", Some("alice"), true).await.unwrap());
    assert!(!s.create_room("ops", Some("bob"), false).await.unwrap());
    assert!(s.join_room("ops", "alice").await.unwrap());
    assert!(!s.invited("ops", "bob").await.unwrap());
    assert!(s.invite("ops", "bob").await.unwrap());
    assert!(!s.invite("ops", "nobody").await.unwrap());
    assert!(s.invited("ops", "bob").await.unwrap());
    // Joining uses up the invitation.
    assert!(s.join_room("ops", "bob").await.unwrap());
    assert!(!s.invited("ops", "bob").await.unwrap());
    s.set_topic("ops", "on call").await.unwrap();
    let ops = s
        .rooms()
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.name == "ops");
    assert_eq!(
        ops,
        Some(RoomRow {
            name: "ops".into(),
            topic: "on call".into(),
            invite_only: true,
            owner: Some("alice".into()),
            members: vec!["alice".into(), "bob".into()],
        })
    );
    // The owner goes with the account; the room stays while it has members.
    s.delete_user("alice").await.unwrap();
    let ops = s
        .rooms()
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.name == "ops");
    assert_eq!(
        ops.map(|r| (r.owner, r.members)),
        Some((None, vec!["bob".into()]))
    );
    // The last member out deletes a room, but never the default one.
    assert!(s.part_room("ops", "bob", "lobby").await.unwrap());
    assert!(!s.part_room("ops", "bob", "lobby").await.unwrap());
    assert!(s.part_room("lobby", "bob", "lobby").await.unwrap());
    assert!(s.part_room("lobby", "carol", "lobby").await.unwrap());
    let names: Vec<String> = s
        .rooms()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(names, ["lobby"]);
}

fn caps(total: usize, per_sender: usize) -> Caps {
    Caps { total, per_sender }
}

fn line(text: &[u8], targets: &[DeviceTarget], sender: Option<&str>) -> OfflineLine {
    OfflineLine {
        line: Bytes::copy_from_slice(text),
        targets: targets.to_vec(),
        sender: sender.map(str::to_owned),
    }
}

/// The texts of one page of `user`'s `device` queue after `after`, at most `n` lines.
async fn page(
    s: &Store,
    user: &str,
    device: &[u8; 32],
    after: i64,
    n: usize,
    not_before_ms: i64,
) -> Vec<(i64, Bytes)> {
    let size = PageSize {
        lines: n,
        bytes: 1 << 20,
    };
    let lines = Arc::new(StoredLines::new());
    s.replay_page(user, device, after, size, not_before_ms, lines)
        .await
        .unwrap()
        .0
}

async fn one_sender_has_a_share_of_each_queue_and_others_still_get_in(s: Store) {
    for u in ["alice", "bob", "mallory", "carol"] {
        s.add_user(u, "h", false).await.unwrap();
    }
    let b = k(2);
    s.check_and_register("bob", &b, b"b", 2048, 4)
        .await
        .unwrap();
    let bob = [("bob".to_string(), b)];
    // Share 2 of 4: mallory's third line is refused for her share, not for the total.
    let flood: Vec<_> = (0..3)
        .map(|_| line(b"x\n", &bob, Some("mallory")))
        .collect();
    let out = s.store_offline(flood, caps(4, 2), 1).await.unwrap();
    assert_eq!(out[1].held, ["bob"]);
    assert_eq!(out[2].over_share, ["bob"]);
    assert!(out[2].full.is_empty() && out[2].held.is_empty());
    // Another sender still gets in, up to the total; the server's own lines have no share.
    let batch = vec![
        line(b"x\n", &bob, Some("alice")),
        line(b"x\n", &bob, None),
        line(b"x\n", &bob, Some("carol")),
    ];
    let out = s.store_offline(batch, caps(4, 2), 1).await.unwrap();
    assert_eq!(out[0].held, ["bob"]);
    assert_eq!(out[1].held, ["bob"]);
    assert_eq!(out[2].full, ["bob"]);
    assert!(out[2].over_share.is_empty());
}

async fn offline_queues_store_once_cap_order_ack_expire_and_cascade(s: Store) {
    for u in ["alice", "bob"] {
        s.add_user(u, "h", false).await.unwrap();
    }
    let (a, b1, b2) = (k(1), k(2), k(3));
    s.check_and_register("alice", &a, b"a", 2048, 4)
        .await
        .unwrap();
    s.check_and_register("bob", &b1, b"b1", 2048, 4)
        .await
        .unwrap();
    s.check_and_register("bob", &b2, b"b2", 2048, 4)
        .await
        .unwrap();
    let both = [("bob".to_string(), b1), ("bob".to_string(), b2)];
    let alice = [("alice".to_string(), a)];
    let batch: Vec<OfflineLine> = (0..4)
        .map(|i| line(format!("line{i}\n").as_bytes(), &both, None))
        .collect();
    // Cap 3 per device: the fourth line is refused for both of bob's devices.
    let out = s.store_offline(batch, caps(3, 3), 1_000).await.unwrap();
    assert_eq!(out[0].held, ["bob"]);
    assert!(out[2].full.is_empty());
    assert_eq!(
        out[3],
        Stored {
            held: vec![],
            full: vec!["bob".into()],
            over_share: vec![],
        }
    );
    // A line for two devices is stored once.
    assert_eq!(s.counts().await.unwrap(), (2, 3, 6));
    s.store_offline(vec![line(b"late\n", &alice, None)], caps(3, 3), 5_000)
        .await
        .unwrap();
    let got = page(&s, "bob", &b1, 0, 2, 0).await;
    let texts: Vec<&[u8]> = got.iter().map(|(_, l)| &l[..]).collect();
    assert_eq!(texts, [b"line0\n".as_slice(), b"line1\n"]);
    assert!(got[0].0 < got[1].0, "queue ids grow");
    let rest = page(&s, "bob", &b1, got[1].0, 10, 0).await;
    assert_eq!(rest.len(), 1);
    assert_eq!(&rest[0].1[..], b"line2\n");
    // Only bob's device 1 acknowledges: its entries go, the lines stay for device 2.
    assert_eq!(s.ack("bob", &b1, rest[0].0).await.unwrap(), 3);
    assert!(page(&s, "bob", &b1, 0, 10, 0).await.is_empty());
    assert_eq!(s.counts().await.unwrap(), (2, 4, 4));
    // Revoking device 2 drops its queue and the lines nobody needs any more.
    s.revoke_key("bob", &b2).await.unwrap();
    assert_eq!(s.counts().await.unwrap(), (2, 1, 1));
    // Expired lines are neither loaded nor kept.
    assert!(page(&s, "alice", &a, 0, 10, 6_000).await.is_empty());
    assert_eq!(page(&s, "alice", &a, 0, 10, 5_000).await.len(), 1);
    assert_eq!(s.expire(6_000).await.unwrap(), 1);
    assert_eq!(s.counts().await.unwrap(), (2, 0, 0));
    // Deleting an account takes its queue along.
    s.store_offline(vec![line(b"x\n", &alice, None)], caps(3, 3), 7_000)
        .await
        .unwrap();
    s.delete_user("alice").await.unwrap();
    assert_eq!(s.counts().await.unwrap(), (1, 0, 0));
}

async fn a_page_of_stored_lines_is_bounded_in_lines_and_bytes_and_shares_known_lines(s: Store) {
    s.add_user("bob", "h", false).await.unwrap();
    let b = k(2);
    s.check_and_register("bob", &b, b"b", 2048, 4)
        .await
        .unwrap();
    let bob = [("bob".to_string(), b)];
    let lines: Vec<Vec<u8>> = (0..5u8).map(|i| vec![b'a' + i; 100]).collect();
    let batch = lines.iter().map(|l| line(l, &bob, None)).collect();
    s.store_offline(batch, caps(10, 10), 1_000).await.unwrap();
    let shared = Arc::new(StoredLines::new());
    let read = |after, lines, bytes| {
        let (s, shared) = (s.clone(), Arc::clone(&shared));
        async move {
            s.replay_page("bob", &b, after, PageSize { lines, bytes }, 0, shared)
                .await
                .unwrap()
        }
    };
    // 250 bytes: the line that reaches them ends the page.
    let (first, more) = read(0, 10, 250).await;
    assert_eq!((first.len(), more), (3, true));
    // A count limit; and a line longer than the byte limit still makes a page.
    let (second, more) = read(first[2].0, 2, 10).await;
    assert_eq!((second.len(), more), (1, true));
    let (last, more) = read(second[0].0, 2, 10).await;
    assert_eq!((last.len(), more), (1, false));
    assert_eq!(&last[0].1[..], &lines[4][..]);
    // While a session holds a line, another reading it gets the same bytes, not a copy.
    let (all, more) = read(0, 10, 1 << 20).await;
    assert_eq!((all.len(), more), (5, false));
    for (held, again) in first.iter().zip(&all) {
        assert_eq!(held.0, again.0);
        assert_eq!(held.1.as_ptr(), again.1.as_ptr());
    }
    for (i, (_, l)) in all.iter().enumerate() {
        assert_eq!(&l[..], &lines[i][..]);
    }
}

#[test]
fn sqlite_reopen_keeps_data_and_schema_version() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("chatd.db");
    let busy = std::time::Duration::from_secs(5);
    let s = SqliteStore::open(&path, busy).unwrap();
    s.run_sync(|c| sqlite::users::add(c, "bob", "h", true))
        .unwrap();
    drop(s);
    let s = SqliteStore::open(&path, busy).unwrap();
    assert_eq!(s.schema_version().unwrap(), sqlite::MIGRATIONS.len() as i64);
    assert!(
        s.run_sync(|c| sqlite::users::credentials(c, "bob"))
            .unwrap()
            .unwrap()
            .admin
    );
}

#[test]
fn sqlite_refuses_newer_schema() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("chatd.db");
    let c = rusqlite::Connection::open(&path).unwrap();
    c.pragma_update(None, "user_version", 99).unwrap();
    drop(c);
    assert!(matches!(
        SqliteStore::open(&path, std::time::Duration::from_secs(5)),
        Err(StoreError::TooNew { found: 99, .. })
    ));
}
