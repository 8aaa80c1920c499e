//! PostgreSQL: the interface's operations (see `Store` for what each does), with the same
//! results as SQLite's. Names sort by `COLLATE "C"` (bytes), as SQLite sorts them.

use std::sync::Arc;

use tokio_postgres::IsolationLevel;
use tokio_postgres::error::SqlState;

use super::PgStore;
use crate::store::error::StoreError;
use crate::store::time::now_secs;
use crate::store::types::*;
use crate::stored_lines::StoredLines;

/// Lines no queue refers to any more (all their devices acknowledged or were removed).
const DROP_ORPHANS: &str = "DELETE FROM offline_messages m WHERE NOT EXISTS
     (SELECT 1 FROM offline_queue q WHERE q.message = m.id)";

fn fingerprint(v: &[u8]) -> Option<[u8; 32]> {
    <[u8; 32]>::try_from(v).ok()
}

fn secs(t: i64) -> u64 {
    t.max(0) as u64
}

impl PgStore {
    pub(in crate::store) async fn add_user(
        &self,
        name: &str,
        hash: &str,
        admin: bool,
    ) -> Result<(), StoreError> {
        let client = self.client().await?;
        let now = now_secs();
        let res = client
            .execute(
                "INSERT INTO users (name, password_hash, admin, locked, created_at, updated_at)
                 VALUES ($1, $2, $3, FALSE, $4, $4)",
                &[&name, &hash, &admin, &now],
            )
            .await;
        match res {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                Err(StoreError::UserExists(name.to_string()))
            }
            Err(e) => Err(e.into()),
        }
    }

    pub(in crate::store) async fn delete_user(&self, name: &str) -> Result<bool, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let n = tx
            .execute("DELETE FROM users WHERE name = $1", &[&name])
            .await?;
        tx.execute(DROP_ORPHANS, &[]).await?;
        tx.commit().await?;
        Ok(n > 0)
    }

    async fn update_user(
        &self,
        sql: &str,
        name: &str,
        value: &(dyn tokio_postgres::types::ToSql + Sync),
    ) -> Result<bool, StoreError> {
        let client = self.client().await?;
        Ok(client.execute(sql, &[&name, value, &now_secs()]).await? > 0)
    }

    pub(in crate::store) async fn set_password(
        &self,
        name: &str,
        hash: &str,
    ) -> Result<bool, StoreError> {
        let sql = "UPDATE users SET password_hash = $2, updated_at = $3 WHERE name = $1";
        self.update_user(sql, name, &hash).await
    }

    pub(in crate::store) async fn set_locked(
        &self,
        name: &str,
        locked: bool,
    ) -> Result<bool, StoreError> {
        let sql = "UPDATE users SET locked = $2, updated_at = $3 WHERE name = $1";
        self.update_user(sql, name, &locked).await
    }

    pub(in crate::store) async fn set_ban(
        &self,
        name: &str,
        until: Option<i64>,
    ) -> Result<bool, StoreError> {
        let sql = "UPDATE users SET banned_until = $2, updated_at = $3 WHERE name = $1";
        self.update_user(sql, name, &until).await
    }

    pub(in crate::store) async fn unban(
        &self,
        name: &str,
    ) -> Result<Option<Option<i64>>, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let Some(row) = tx
            .query_opt(
                "SELECT banned_until FROM users WHERE name = $1 FOR UPDATE",
                &[&name],
            )
            .await?
        else {
            return Ok(None);
        };
        let was: Option<i64> = row.try_get(0)?;
        tx.execute(
            "UPDATE users SET banned_until = NULL, updated_at = $2 WHERE name = $1",
            &[&name, &now_secs()],
        )
        .await?;
        tx.commit().await?;
        Ok(Some(was))
    }

    pub(in crate::store) async fn credentials(
        &self,
        name: &str,
    ) -> Result<Option<Credentials>, StoreError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT password_hash, locked, admin, banned_until FROM users WHERE name = $1",
            )
            .await?;
        let Some(r) = client.query_opt(&stmt, &[&name]).await? else {
            return Ok(None);
        };
        Ok(Some(Credentials {
            password_hash: r.try_get(0)?,
            locked: r.try_get(1)?,
            admin: r.try_get(2)?,
            banned_until: r.try_get(3)?,
        }))
    }

    pub(in crate::store) async fn user_exists(&self, name: &str) -> Result<bool, StoreError> {
        let client = self.client().await?;
        Ok(client
            .query_opt("SELECT 1 FROM users WHERE name = $1", &[&name])
            .await?
            .is_some())
    }

    pub(in crate::store) async fn list_users(&self) -> Result<Vec<UserRow>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT name, admin, locked, created_at, banned_until FROM users
                 ORDER BY name COLLATE \"C\"",
                &[],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(UserRow {
                    name: r.try_get(0)?,
                    admin: r.try_get(1)?,
                    locked: r.try_get(2)?,
                    created_at: secs(r.try_get(3)?),
                    banned_until: r.try_get(4)?,
                })
            })
            .collect()
    }

    pub(in crate::store) async fn counts(&self) -> Result<(usize, u64, u64), StoreError> {
        let client = self.client().await?;
        let r = client
            .query_one(
                "SELECT (SELECT COUNT(*) FROM users), (SELECT COUNT(*) FROM offline_messages),
                        (SELECT COUNT(*) FROM offline_queue)",
                &[],
            )
            .await?;
        let (users, lines, queued): (i64, i64, i64) = (r.try_get(0)?, r.try_get(1)?, r.try_get(2)?);
        Ok((secs(users) as usize, secs(lines), secs(queued)))
    }

    pub(in crate::store) async fn check_and_register(
        &self,
        user: &str,
        fp: &[u8; 32],
        spki: &[u8],
        bits: u32,
        max_devices: usize,
    ) -> Result<KeyCheck, StoreError> {
        let mut client = self.client().await?;
        let now = now_secs();
        let known = client
            .prepare_cached(
                "SELECT revoked_at FROM device_keys WHERE user_name = $1 AND fingerprint = $2",
            )
            .await?;
        let fp = &fp[..];
        if let Some(row) = client.query_opt(&known, &[&user, &fp]).await? {
            if row.try_get::<_, Option<i64>>(0)?.is_some() {
                return Ok(KeyCheck::Revoked);
            }
            let seen = client
                .execute(
                    "UPDATE device_keys SET last_seen = $3 WHERE user_name = $1 AND fingerprint = $2",
                    &[&user, &fp, &now],
                )
                .await;
            match seen.map_err(StoreError::from) {
                Ok(_) => {}
                // As with SQLite: a stale last-seen time is not worth refusing a login.
                Err(e) if e.unavailable().is_some() => {
                    tracing::warn!(error = %e, user = ?user, "cannot update a device key's last-seen time");
                }
                Err(e) => return Err(e),
            }
            return Ok(KeyCheck::Known);
        }
        let tx = client.transaction().await?;
        // The account's row lock: two logins with new keys (on any node) count one after
        // the other, so the device limit holds.
        tx.execute("SELECT 1 FROM users WHERE name = $1 FOR UPDATE", &[&user])
            .await?;
        if let Some(row) = tx.query_opt(&known, &[&user, &fp]).await? {
            // Registered by a login that held the lock before us.
            let revoked = row.try_get::<_, Option<i64>>(0)?.is_some();
            return Ok(if revoked {
                KeyCheck::Revoked
            } else {
                KeyCheck::Known
            });
        }
        let active: i64 = tx
            .query_one(
                "SELECT COUNT(*) FROM device_keys WHERE user_name = $1 AND revoked_at IS NULL",
                &[&user],
            )
            .await?
            .try_get(0)?;
        if secs(active) as usize >= max_devices {
            return Ok(KeyCheck::TooMany);
        }
        tx.execute(
            "INSERT INTO device_keys (user_name, fingerprint, spki, bits, created_at, last_seen)
             VALUES ($1, $2, $3, $4, $5, $5)",
            &[&user, &fp, &spki, &(bits.min(i32::MAX as u32) as i32), &now],
        )
        .await?;
        tx.commit().await?;
        Ok(KeyCheck::Registered)
    }

    pub(in crate::store) async fn list_keys(
        &self,
        user: Option<&str>,
    ) -> Result<Option<Vec<KeyRow>>, StoreError> {
        if let Some(name) = user {
            if !self.user_exists(name).await? {
                return Ok(None);
            }
        }
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT user_name, fingerprint, bits, created_at, last_seen, revoked_at
                 FROM device_keys WHERE $1::TEXT IS NULL OR user_name = $1
                 ORDER BY user_name COLLATE \"C\", created_at, fingerprint",
                &[&user],
            )
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let fp: &[u8] = r.try_get(1)?;
            out.push(KeyRow {
                user: r.try_get(0)?,
                // Written only by check_and_register, always 32 bytes; a damaged row shows as
                // zeros.
                fingerprint: fingerprint(fp).unwrap_or([0; 32]),
                bits: r.try_get::<_, i32>(2)?.max(0) as u32,
                created_at: secs(r.try_get(3)?),
                last_seen: secs(r.try_get(4)?),
                revoked_at: r.try_get::<_, Option<i64>>(5)?.map(secs),
            });
        }
        Ok(Some(out))
    }

    pub(in crate::store) async fn revoke_key(
        &self,
        user: &str,
        fp: &[u8; 32],
    ) -> Result<bool, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let fp = &fp[..];
        let n = tx
            .execute(
                "UPDATE device_keys SET revoked_at = COALESCE(revoked_at, $3)
                 WHERE user_name = $1 AND fingerprint = $2",
                &[&user, &fp, &now_secs()],
            )
            .await?;
        tx.execute(
            "DELETE FROM offline_queue WHERE user_name = $1 AND device = $2",
            &[&user, &fp],
        )
        .await?;
        tx.execute(DROP_ORPHANS, &[]).await?;
        tx.execute(
            "DELETE FROM device_vouches WHERE user_name = $1 AND (vouched = $2 OR voucher = $2)",
            &[&user, &fp],
        )
        .await?;
        tx.commit().await?;
        Ok(n > 0)
    }

    pub(in crate::store) async fn active_keys(&self) -> Result<Vec<ActiveKey>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT user_name, fingerprint, spki FROM device_keys WHERE revoked_at IS NULL
                 ORDER BY user_name COLLATE \"C\", created_at, fingerprint",
                &[],
            )
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            // Written only by check_and_register, always 32 bytes; skip a damaged row.
            if let Some(fp) = fingerprint(r.try_get(1)?) {
                out.push((r.try_get(0)?, fp, r.try_get(2)?));
            }
        }
        Ok(out)
    }

    pub(in crate::store) async fn put_vouch(
        &self,
        user: &str,
        vouched: &[u8; 32],
        voucher: &[u8; 32],
        data: &[u8],
    ) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let n = client
            .execute(
                "INSERT INTO device_vouches (user_name, vouched, voucher, data, created_at)
                 SELECT $1::TEXT, $2::BYTEA, $3::BYTEA, $4::BYTEA, $5::BIGINT
                 WHERE (SELECT COUNT(*) FROM device_keys WHERE user_name = $1
                        AND revoked_at IS NULL AND fingerprint IN ($2, $3)) = 2
                 ON CONFLICT (user_name, vouched, voucher)
                 DO UPDATE SET data = EXCLUDED.data, created_at = EXCLUDED.created_at",
                &[&user, &&vouched[..], &&voucher[..], &data, &now_secs()],
            )
            .await?;
        Ok(n > 0)
    }

    pub(in crate::store) async fn vouches(&self) -> Result<Vec<VouchRow>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT user_name, vouched, voucher, data FROM device_vouches
                 ORDER BY created_at, id",
                &[],
            )
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            // Written only by put_vouch, always 32 bytes; skip a damaged row.
            if let (Some(vouched), Some(voucher)) =
                (fingerprint(r.try_get(1)?), fingerprint(r.try_get(2)?))
            {
                out.push((r.try_get(0)?, vouched, voucher, r.try_get(3)?));
            }
        }
        Ok(out)
    }

    pub(in crate::store) async fn prepare_rooms(
        &self,
        default: &str,
    ) -> Result<Vec<RoomRow>, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let now = now_secs();
        tx.execute(
            "INSERT INTO rooms (name, invite_only, created_at) VALUES ($1, FALSE, $2)
             ON CONFLICT DO NOTHING",
            &[&default, &now],
        )
        .await?;
        tx.execute(
            "INSERT INTO room_members (room, user_name, joined_at) SELECT $1, name, $2 FROM users
             ON CONFLICT DO NOTHING",
            &[&default, &now],
        )
        .await?;
        tx.execute(
            "DELETE FROM rooms WHERE name != $1 AND NOT EXISTS
             (SELECT 1 FROM room_members m WHERE m.room = rooms.name)",
            &[&default],
        )
        .await?;
        let rooms = all_rooms(&tx).await?;
        tx.commit().await?;
        Ok(rooms)
    }

    pub(in crate::store) async fn rooms(&self) -> Result<Vec<RoomRow>, StoreError> {
        let mut client = self.client().await?;
        // One snapshot: the members read belong to the rooms read.
        let tx = client
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await?;
        all_rooms(&tx).await
    }

    pub(in crate::store) async fn create_room(
        &self,
        room: &str,
        owner: Option<&str>,
        invite_only: bool,
    ) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let n = client
            .execute(
                "INSERT INTO rooms (name, invite_only, owner, created_at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT DO NOTHING",
                &[&room, &invite_only, &owner, &now_secs()],
            )
            .await?;
        Ok(n > 0)
    }

    pub(in crate::store) async fn join_room(
        &self,
        room: &str,
        user: &str,
    ) -> Result<bool, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let n = tx
            .execute(
                "INSERT INTO room_members (room, user_name, joined_at) VALUES ($1, $2, $3)
                 ON CONFLICT DO NOTHING",
                &[&room, &user, &now_secs()],
            )
            .await?;
        tx.execute(
            "DELETE FROM room_invites WHERE room = $1 AND user_name = $2",
            &[&room, &user],
        )
        .await?;
        tx.commit().await?;
        Ok(n > 0)
    }

    pub(in crate::store) async fn part_room(
        &self,
        room: &str,
        user: &str,
        keep: &str,
    ) -> Result<bool, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let n = tx
            .execute(
                "DELETE FROM room_members WHERE room = $1 AND user_name = $2",
                &[&room, &user],
            )
            .await?;
        if room != keep {
            tx.execute(
                "DELETE FROM rooms WHERE name = $1 AND NOT EXISTS
                 (SELECT 1 FROM room_members WHERE room = $1)",
                &[&room],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(n > 0)
    }

    pub(in crate::store) async fn set_topic(
        &self,
        room: &str,
        topic: &str,
    ) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .execute(
                "UPDATE rooms SET topic = $2 WHERE name = $1",
                &[&room, &topic],
            )
            .await?;
        Ok(())
    }

    pub(in crate::store) async fn invite(
        &self,
        room: &str,
        user: &str,
    ) -> Result<bool, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        // Shared lock: the account cannot be deleted before the invitation is in.
        let exists = tx
            .query_opt("SELECT 1 FROM users WHERE name = $1 FOR SHARE", &[&user])
            .await?
            .is_some();
        if !exists {
            return Ok(false);
        }
        tx.execute(
            "INSERT INTO room_invites (room, user_name) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            &[&room, &user],
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    pub(in crate::store) async fn invited(
        &self,
        room: &str,
        user: &str,
    ) -> Result<bool, StoreError> {
        let client = self.client().await?;
        Ok(client
            .query_opt(
                "SELECT 1 FROM room_invites WHERE room = $1 AND user_name = $2",
                &[&room, &user],
            )
            .await?
            .is_some())
    }

    pub(in crate::store) async fn store_offline(
        &self,
        lines: Vec<OfflineLine>,
        caps: Caps,
        now_ms: i64,
    ) -> Result<Vec<Stored>, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let lock = tx
            .prepare_cached(
                "SELECT 1 FROM device_keys WHERE user_name = $1 AND fingerprint = $2 FOR UPDATE",
            )
            .await?;
        let count = tx
            .prepare_cached(
                "SELECT COUNT(*) FROM offline_queue WHERE user_name = $1 AND device = $2",
            )
            .await?;
        let count_sender = tx
            .prepare_cached(
                "SELECT COUNT(*) FROM offline_queue
                 WHERE user_name = $1 AND device = $2 AND sender = $3",
            )
            .await?;
        let message = tx
            .prepare_cached(
                "INSERT INTO offline_messages (line, created_ms) VALUES ($1, $2) RETURNING id",
            )
            .await?;
        let queue = tx
            .prepare_cached(
                "INSERT INTO offline_queue (user_name, device, message, sender)
                 VALUES ($1, $2, $3, $4)",
            )
            .await?;
        // Every device's key row the batch writes to is locked first, before its queue is
        // counted: two writers (two nodes) to one queue take turns, so the caps hold and the
        // queue's ids grow in commit order. In one order (sorted), or two nodes' batches
        // naming the same devices in other orders deadlock, and PostgreSQL aborts one.
        let mut locked: Vec<&DeviceTarget> = lines.iter().flat_map(|l| l.targets.iter()).collect();
        locked.sort_unstable();
        locked.dedup();
        for target in locked {
            tx.query_opt(&lock, &[&target.0, &&target.1[..]]).await?;
        }
        let mut out = Vec::with_capacity(lines.len());
        for l in &lines {
            let mut result = Stored::default();
            let mut id: Option<i64> = None;
            for target in &l.targets {
                let (user, device) = (&target.0, &target.1[..]);
                // The total first: a full queue is full for everyone, whoever filled it.
                let n: i64 = tx.query_one(&count, &[user, &device]).await?.try_get(0)?;
                if secs(n) as usize >= caps.total {
                    Stored::push_once(&mut result.full, user);
                    continue;
                }
                if let Some(sender) = &l.sender {
                    let n: i64 = tx
                        .query_one(&count_sender, &[user, &device, sender])
                        .await?
                        .try_get(0)?;
                    if secs(n) as usize >= caps.per_sender {
                        Stored::push_once(&mut result.over_share, user);
                        continue;
                    }
                }
                let msg = match id {
                    Some(m) => m,
                    None => {
                        let line: &[u8] = &l.line;
                        let m: i64 = tx
                            .query_one(&message, &[&line, &now_ms])
                            .await?
                            .try_get(0)?;
                        id = Some(m);
                        m
                    }
                };
                tx.execute(&queue, &[user, &device, &msg, &l.sender])
                    .await?;
                Stored::push_once(&mut result.held, user);
            }
            out.push(result);
        }
        tx.commit().await?;
        Ok(out)
    }

    #[allow(clippy::too_many_arguments)]
    pub(in crate::store) async fn replay_page(
        &self,
        user: &str,
        device: &[u8; 32],
        after: i64,
        size: PageSize,
        not_before_ms: i64,
        lines: Arc<StoredLines>,
    ) -> Result<Page, StoreError> {
        let mut client = self.client().await?;
        // One snapshot for the page and its lines.
        let tx = client
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await?;
        let ids = tx
            .prepare_cached(
                "SELECT q.id, m.id, length(m.line) FROM offline_queue q
                 JOIN offline_messages m ON m.id = q.message
                 WHERE q.user_name = $1 AND q.device = $2 AND q.id > $3 AND m.created_ms >= $4
                 ORDER BY q.id LIMIT $5",
            )
            .await?;
        let max = size.lines.max(1);
        // One row past the page says whether more follow.
        let limit = i64::try_from(max).unwrap_or(i64::MAX - 1).saturating_add(1);
        let rows = tx
            .query(&ids, &[&user, &&device[..], &after, &not_before_ms, &limit])
            .await?;
        let (mut page, mut bytes, mut more) = (Vec::with_capacity(rows.len()), 0usize, false);
        let mut wanted: Vec<i64> = Vec::new();
        for row in &rows {
            if page.len() >= max || (!page.is_empty() && bytes >= size.bytes) {
                more = true;
                break;
            }
            let (queue_id, message, len): (i64, i64, i32) =
                (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
            bytes = bytes.saturating_add(usize::try_from(len).unwrap_or(0));
            let held = lines.get(message);
            if held.is_none() {
                wanted.push(message);
            }
            page.push((queue_id, message, held));
        }
        // Only the lines no session holds are read.
        let mut read = std::collections::HashMap::with_capacity(wanted.len());
        if !wanted.is_empty() {
            let stmt = tx
                .prepare_cached("SELECT id, line FROM offline_messages WHERE id = ANY($1)")
                .await?;
            for row in tx.query(&stmt, &[&wanted]).await? {
                read.insert(row.try_get::<_, i64>(0)?, row.try_get::<_, Vec<u8>>(1)?);
            }
        }
        let mut out = Vec::with_capacity(page.len());
        for (queue_id, message, held) in page {
            let line = match held {
                Some(b) => b,
                None => match read.remove(&message) {
                    Some(v) => lines.share(message, v),
                    // Same snapshot: always there. A message queued twice for one device
                    // (never done) would be read once and shared.
                    None => match lines.get(message) {
                        Some(b) => b,
                        None => continue,
                    },
                },
            };
            out.push((queue_id, line));
        }
        Ok((out, more))
    }

    pub(in crate::store) async fn ack(
        &self,
        user: &str,
        device: &[u8; 32],
        upto: i64,
    ) -> Result<usize, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let stmt = tx
            .prepare_cached(
                "DELETE FROM offline_queue WHERE user_name = $1 AND device = $2 AND id <= $3",
            )
            .await?;
        let n = tx.execute(&stmt, &[&user, &&device[..], &upto]).await?;
        tx.execute(DROP_ORPHANS, &[]).await?;
        tx.commit().await?;
        Ok(n as usize)
    }

    pub(in crate::store) async fn expire(&self, before_ms: i64) -> Result<usize, StoreError> {
        let client = self.client().await?;
        let n = client
            .execute(
                "DELETE FROM offline_messages WHERE created_ms < $1",
                &[&before_ms],
            )
            .await?;
        Ok(n as usize)
    }
}

/// Every room with its members, by name.
async fn all_rooms(tx: &deadpool_postgres::Transaction<'_>) -> Result<Vec<RoomRow>, StoreError> {
    let rows = tx
        .query(
            "SELECT name, topic, invite_only, owner FROM rooms ORDER BY name COLLATE \"C\"",
            &[],
        )
        .await?;
    let mut rooms = Vec::with_capacity(rows.len());
    for r in rows {
        rooms.push(RoomRow {
            name: r.try_get(0)?,
            topic: r.try_get(1)?,
            invite_only: r.try_get(2)?,
            owner: r.try_get(3)?,
            members: Vec::new(),
        });
    }
    let pairs = tx
        .query(
            "SELECT room, user_name FROM room_members
             ORDER BY room COLLATE \"C\", user_name COLLATE \"C\"",
            &[],
        )
        .await?;
    for pair in pairs {
        let (room, user): (&str, String) = (pair.try_get(0)?, pair.try_get(1)?);
        if let Ok(i) = rooms.binary_search_by(|r| r.name.as_bytes().cmp(room.as_bytes())) {
            rooms[i].members.push(user);
        }
    }
    Ok(rooms)
}
