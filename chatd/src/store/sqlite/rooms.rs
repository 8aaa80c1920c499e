//! SQLite: rooms, memberships and invitations.

use rusqlite::{Connection, OptionalExtension, params};

use crate::store::error::StoreError;
use crate::store::time::now_secs;
use crate::store::types::RoomRow;

/// Every room with its members.
pub fn all(c: &Connection) -> Result<Vec<RoomRow>, StoreError> {
    let mut stmt = c.prepare("SELECT name, topic, invite_only, owner FROM rooms ORDER BY name")?;
    let mut rooms: Vec<RoomRow> = stmt
        .query_map([], |r| {
            Ok(RoomRow {
                name: r.get(0)?,
                topic: r.get(1)?,
                invite_only: r.get(2)?,
                owner: r.get(3)?,
                members: Vec::new(),
            })
        })?
        .collect::<Result<_, _>>()?;
    let mut stmt = c.prepare("SELECT room, user FROM room_members ORDER BY room, user")?;
    let pairs = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
    for pair in pairs {
        let (room, user) = pair?;
        if let Some(row) = rooms.iter_mut().find(|r| r.name == room) {
            row.members.push(user);
        }
    }
    Ok(rooms)
}

/// Creates the room unless it exists; true if created.
pub fn create(
    c: &Connection,
    name: &str,
    owner: Option<&str>,
    invite_only: bool,
) -> Result<bool, StoreError> {
    Ok(c.execute(
        "INSERT OR IGNORE INTO rooms (name, invite_only, owner, created_at) VALUES (?1, ?2, ?3, ?4)",
        params![name, invite_only, owner, now_secs()],
    )? > 0)
}

/// Adds a member (and uses up an invitation); false if already a member.
pub fn join(c: &Connection, room: &str, user: &str) -> Result<bool, StoreError> {
    let tx = c.unchecked_transaction()?;
    let n = tx.execute(
        "INSERT OR IGNORE INTO room_members (room, user, joined_at) VALUES (?1, ?2, ?3)",
        params![room, user, now_secs()],
    )?;
    tx.execute(
        "DELETE FROM room_invites WHERE room = ?1 AND user = ?2",
        params![room, user],
    )?;
    tx.commit()?;
    Ok(n > 0)
}

/// Removes a member; a room left empty is deleted unless it is `keep` (the default room).
/// Returns whether `user` was a member.
pub fn part(c: &Connection, room: &str, user: &str, keep: &str) -> Result<bool, StoreError> {
    let tx = c.unchecked_transaction()?;
    let n = tx.execute(
        "DELETE FROM room_members WHERE room = ?1 AND user = ?2",
        params![room, user],
    )?;
    if room != keep {
        tx.execute(
            "DELETE FROM rooms WHERE name = ?1 AND NOT EXISTS
             (SELECT 1 FROM room_members WHERE room = ?1)",
            [room],
        )?;
    }
    tx.commit()?;
    Ok(n > 0)
}

/// Sets the topic.
pub fn set_topic(c: &Connection, room: &str, topic: &str) -> Result<(), StoreError> {
    c.execute(
        "UPDATE rooms SET topic = ?2 WHERE name = ?1",
        params![room, topic],
    )?;
    Ok(())
}

/// Records an invitation of `user` to `room`.
pub fn invite(c: &Connection, room: &str, user: &str) -> Result<(), StoreError> {
    c.execute(
        "INSERT OR IGNORE INTO room_invites (room, user) VALUES (?1, ?2)",
        params![room, user],
    )?;
    Ok(())
}

/// Whether `user` holds an invitation to `room`.
pub fn invited(c: &Connection, room: &str, user: &str) -> Result<bool, StoreError> {
    Ok(c.query_row(
        "SELECT 1 FROM room_invites WHERE room = ?1 AND user = ?2",
        params![room, user],
        |_| Ok(()),
    )
    .optional()?
    .is_some())
}

/// Deletes rooms without members, except `keep` (the default room).
pub fn drop_empty(c: &Connection, keep: &str) -> Result<usize, StoreError> {
    Ok(c.execute(
        "DELETE FROM rooms WHERE name != ?1 AND NOT EXISTS
         (SELECT 1 FROM room_members m WHERE m.room = rooms.name)",
        [keep],
    )?)
}

/// Every user's membership of the default room (each login also joins it).
pub fn join_all_users(c: &Connection, room: &str) -> Result<(), StoreError> {
    c.execute(
        "INSERT OR IGNORE INTO room_members (room, user, joined_at)
         SELECT ?1, name, ?2 FROM users",
        params![room, now_secs()],
    )?;
    Ok(())
}
