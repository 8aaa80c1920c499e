//! The store's tests, on a real SQLite file or an in-memory database.

use super::*;

#[test]
fn device_keys_register_limit_revoke_and_cascade() {
    let s = Store::open_in_memory().unwrap();
    s.run_sync(|c| {
        users::add(c, "alice", "h", false)?;
        let k = |i: u8| [i; 32];
        assert_eq!(
            keys::check_and_register(c, "alice", &k(1), b"spki1", 2048, 2)?,
            KeyCheck::Registered
        );
        assert_eq!(
            keys::check_and_register(c, "alice", &k(1), b"spki1", 2048, 2)?,
            KeyCheck::Known
        );
        assert_eq!(
            keys::check_and_register(c, "alice", &k(2), b"spki2", 3072, 2)?,
            KeyCheck::Registered
        );
        // At the limit of 2: a third key is refused, known ones still work.
        assert_eq!(
            keys::check_and_register(c, "alice", &k(3), b"spki3", 2048, 2)?,
            KeyCheck::TooMany
        );
        assert_eq!(
            keys::check_and_register(c, "alice", &k(2), b"spki2", 3072, 2)?,
            KeyCheck::Known
        );
        assert!(keys::revoke(c, "alice", &k(1))?);
        assert!(!keys::revoke(c, "alice", &k(9))?);
        assert!(!keys::revoke(c, "bob", &k(2))?);
        assert_eq!(
            keys::check_and_register(c, "alice", &k(1), b"spki1", 2048, 2)?,
            KeyCheck::Revoked
        );
        // A revoked key frees its slot.
        assert_eq!(
            keys::check_and_register(c, "alice", &k(3), b"spki3", 2048, 2)?,
            KeyCheck::Registered
        );
        let rows = keys::list(c, Some("alice"))?;
        assert_eq!(rows.len(), 3);
        assert!(
            rows.iter()
                .any(|r| r.fingerprint == k(1) && r.revoked_at.is_some())
        );
        assert_eq!(keys::list(c, None)?.len(), 3);
        assert!(users::delete(c, "alice")?);
        assert!(keys::list(c, None)?.is_empty());
        Ok(())
    })
    .unwrap();
}

#[test]
fn users_crud() {
    let s = Store::open_in_memory().unwrap();
    s.run_sync(|c| {
        users::add(c, "alice", "h1", false)?;
        assert!(matches!(
            users::add(c, "alice", "h2", false),
            Err(StoreError::UserExists(_))
        ));
        assert!(users::exists(c, "alice")?);
        assert!(users::set_locked(c, "alice", true)?);
        let cred = users::credentials(c, "alice")?.unwrap();
        assert!(cred.locked && cred.password_hash == "h1");
        assert_eq!(cred.banned_until, None);
        assert!(users::set_ban(c, "alice", Some(1_000))?);
        let cred = users::credentials(c, "alice")?.unwrap();
        assert_eq!(cred.ban_left(400), Some(600));
        assert_eq!(cred.ban_left(1_000), None, "a ban ends by itself");
        assert_eq!(users::list(c)?[0].banned_until, Some(1_000));
        assert!(users::set_ban(c, "alice", None)?);
        assert_eq!(users::credentials(c, "alice")?.unwrap().ban_left(400), None);
        assert!(!users::set_ban(c, "bob", Some(1_000))?);
        assert!(users::set_password(c, "alice", "h3")?);
        assert!(!users::set_password(c, "bob", "h3")?);
        assert_eq!(users::list(c)?.len(), 1);
        assert!(users::delete(c, "alice")?);
        assert!(!users::delete(c, "alice")?);
        assert_eq!(users::count(c)?, 0);
        Ok(())
    })
    .unwrap();
}

#[test]
fn reopen_keeps_data_and_schema_version() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("chatd.db");
    let s = Store::open(&path).unwrap();
    s.run_sync(|c| users::add(c, "bob", "h", true)).unwrap();
    drop(s);
    let s = Store::open(&path).unwrap();
    let v: i64 = s
        .run_sync(|c| Ok(c.pragma_query_value(None, "user_version", |r| r.get(0))?))
        .unwrap();
    assert_eq!(v, MIGRATIONS.len() as i64);
    assert!(
        s.run_sync(|c| users::credentials(c, "bob"))
            .unwrap()
            .unwrap()
            .admin
    );
}

#[test]
fn refuses_newer_schema() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("chatd.db");
    let c = Connection::open(&path).unwrap();
    c.pragma_update(None, "user_version", 99).unwrap();
    drop(c);
    assert!(matches!(
        Store::open(&path),
        Err(StoreError::TooNew { found: 99, .. })
    ));
}

fn caps(total: usize, per_sender: usize) -> offline::Caps {
    offline::Caps { total, per_sender }
}

#[test]
fn one_sender_has_a_share_of_each_queue_and_others_still_get_in() {
    let s = Store::open_in_memory().unwrap();
    s.run_sync(|c| {
        for u in ["alice", "bob", "mallory", "carol"] {
            users::add(c, u, "h", false)?;
        }
        let b = [2u8; 32];
        keys::check_and_register(c, "bob", &b, b"b", 2048, 4)?;
        let bob = [("bob".to_string(), b)];
        let line = |sender| OfflineLine {
            line: b"x\n",
            targets: &bob,
            sender,
        };
        // Share 2 of 4: mallory's third line is refused for her share, not for the total.
        let flood: Vec<_> = (0..3).map(|_| line(Some("mallory"))).collect();
        let out = offline::store(c, &flood, caps(4, 2), 1)?;
        assert_eq!(out[1].held, ["bob"]);
        assert_eq!(out[2].over_share, ["bob"]);
        assert!(out[2].full.is_empty() && out[2].held.is_empty());
        // Another sender still gets in, up to the total; the server's own lines have no share.
        let out = offline::store(
            c,
            &[line(Some("alice")), line(None), line(Some("carol"))],
            caps(4, 2),
            1,
        )?;
        assert_eq!(out[0].held, ["bob"]);
        assert_eq!(out[1].held, ["bob"]);
        assert_eq!(out[2].full, ["bob"]);
        assert!(out[2].over_share.is_empty());
        Ok(())
    })
    .unwrap();
}

#[test]
fn offline_queues_store_once_cap_order_ack_expire_and_cascade() {
    let s = Store::open_in_memory().unwrap();
    s.run_sync(|c| {
        for u in ["alice", "bob"] {
            users::add(c, u, "h", false)?;
        }
        let (a, b1, b2) = ([1u8; 32], [2u8; 32], [3u8; 32]);
        keys::check_and_register(c, "alice", &a, b"a", 2048, 4)?;
        keys::check_and_register(c, "bob", &b1, b"b1", 2048, 4)?;
        keys::check_and_register(c, "bob", &b2, b"b2", 2048, 4)?;
        let both = [("bob".to_string(), b1), ("bob".to_string(), b2)];
        let alice = [("alice".to_string(), a)];
        let lines: Vec<String> = (0..4).map(|i| format!("line{i}\n")).collect();
        let batch: Vec<OfflineLine<'_>> = lines
            .iter()
            .map(|l| OfflineLine {
                line: l.as_bytes(),
                targets: &both,
                sender: None,
            })
            .collect();
        // Cap 3 per device: the fourth line is refused for both of bob's devices.
        let out = offline::store(c, &batch, caps(3, 3), 1_000)?;
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
        assert_eq!(offline::counts(c)?, (3, 6));
        offline::store(
            c,
            &[OfflineLine {
                line: b"late\n",
                targets: &alice,
                sender: None,
            }],
            caps(3, 3),
            5_000,
        )?;
        let got = offline::load(c, "bob", &b1, 0, 2, 0)?;
        let texts: Vec<&[u8]> = got.iter().map(|(_, l)| l.as_slice()).collect();
        assert_eq!(texts, [b"line0\n".as_slice(), b"line1\n"]);
        let rest = offline::load(c, "bob", &b1, got[1].0, 10, 0)?;
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].1, b"line2\n");
        // Only bob's device 1 acknowledges: its entries go, the lines stay for device 2.
        assert_eq!(offline::ack(c, "bob", &b1, rest[0].0)?, 3);
        assert!(offline::load(c, "bob", &b1, 0, 10, 0)?.is_empty());
        assert_eq!(offline::counts(c)?, (4, 4));
        // Revoking device 2 drops its queue and the lines nobody needs any more.
        keys::revoke(c, "bob", &b2)?;
        assert_eq!(offline::counts(c)?, (1, 1));
        // Expired lines are neither loaded nor kept.
        assert!(offline::load(c, "alice", &a, 0, 10, 6_000)?.is_empty());
        assert_eq!(offline::load(c, "alice", &a, 0, 10, 5_000)?.len(), 1);
        assert_eq!(offline::expire(c, 6_000)?, 1);
        assert_eq!(offline::counts(c)?, (0, 0));
        // Deleting an account takes its queue along.
        offline::store(
            c,
            &[OfflineLine {
                line: b"x\n",
                targets: &alice,
                sender: None,
            }],
            caps(3, 3),
            7_000,
        )?;
        users::delete(c, "alice")?;
        assert_eq!(offline::counts(c)?, (0, 0));
        Ok(())
    })
    .unwrap();
}

#[test]
fn a_page_of_stored_lines_is_bounded_in_lines_and_bytes_and_reuses_known_lines() {
    use offline::{PageLine, PageSize};
    let s = Store::open_in_memory().unwrap();
    s.run_sync(|c| {
        users::add(c, "bob", "h", false)?;
        let b = [2u8; 32];
        keys::check_and_register(c, "bob", &b, b"b", 2048, 4)?;
        let bob = [("bob".to_string(), b)];
        let lines: Vec<Vec<u8>> = (0..5u8).map(|i| vec![b'a' + i; 100]).collect();
        let offline: Vec<OfflineLine<'_>> = lines
            .iter()
            .map(|l| OfflineLine {
                line: l,
                targets: &bob,
                sender: None,
            })
            .collect();
        offline::store(c, &offline, caps(10, 10), 1_000)?;
        let none = |_| None::<()>;
        // 250 bytes: the line that reaches them ends the page.
        let size = PageSize {
            lines: 10,
            bytes: 250,
        };
        let (page, more) = offline::load_page(c, "bob", &b, 0, size, 0, none)?;
        assert_eq!((page.len(), more), (3, true));
        // A count limit; and a line longer than the byte limit still makes a page.
        let size = PageSize {
            lines: 2,
            bytes: 10,
        };
        let (page, more) = offline::load_page(c, "bob", &b, page[2].0, size, 0, none)?;
        assert_eq!((page.len(), more), (1, true));
        let (last, more) = offline::load_page(c, "bob", &b, page[0].0, size, 0, none)?;
        assert_eq!((last.len(), more), (1, false));
        assert!(matches!(&last[0].2, PageLine::Read(l) if l == &lines[4]));
        // A line the caller has already is not read again.
        let mut asked = Vec::new();
        let size = PageSize {
            lines: 10,
            bytes: 1 << 20,
        };
        let (page, more) = offline::load_page(c, "bob", &b, 0, size, 0, |m| {
            asked.push(m);
            (m % 2 == 0).then_some(m)
        })?;
        assert_eq!((page.len(), more), (5, false));
        for (_, message, line) in &page {
            match line {
                PageLine::Reused(m) => assert_eq!(m, message),
                PageLine::Read(l) => assert_eq!(l.len(), 100),
            }
        }
        assert_eq!(asked.len(), 5);
        Ok(())
    })
    .unwrap();
}
