//! Human-readable rendering of control responses: key/value blocks, aligned tables,
//! durations and UTC timestamps.
//!
//! Everything returns a `String` (each line ending in `\n`) so it can be tested
//! without capturing stdout. Durations and dates come from `chatd_proto::time` (chatd words
//! a ban's end the same way).

use chatd_proto::Fingerprint;
use chatd_proto::control::{ControlResponse, KeyInfo, SessionInfo, StatusInfo, UserInfo};
pub use chatd_proto::time::{format_uptime, format_utc};

/// Spaces between table columns.
const GAP: &str = "  ";

/// Hex digits of a fingerprint shown in the `who` table: enough to tell devices apart
/// and to find the key in `key list`, short enough to keep the table narrow.
const SHORT_FINGERPRINT_HEX: usize = 16;

/// Renders a successful response for people. An `error` response yields its message;
/// the caller is expected to send that to stderr instead.
pub fn render(response: &ControlResponse) -> String {
    match response {
        ControlResponse::Done { message } => format!("{message}\n"),
        ControlResponse::Status(info) => status(info),
        ControlResponse::Users { users: list } => users(list),
        ControlResponse::Sessions {
            sessions: list,
            unanswered,
        } => sessions(list, unanswered),
        ControlResponse::Keys { keys: list } => keys(list),
        // Already text, and what a textfile collector reads: printed as it is.
        ControlResponse::Metrics { text } => text.clone(),
        ControlResponse::Error { message, .. } => format!("{message}\n"),
    }
}

/// `status` as aligned `key: value` lines.
pub fn status(info: &StatusInfo) -> String {
    let mut rows = vec![
        ("version", info.version.clone()),
        ("uptime", format_uptime(info.uptime_secs)),
        ("listen", info.listen.clone()),
        ("certificate fingerprint", info.cert_fingerprint.to_string()),
        ("sessions", info.sessions.to_string()),
        ("users online", info.users_online.to_string()),
        ("accounts", info.accounts.to_string()),
        (
            "stored offline",
            format!(
                "{} message(s), {} delivery(ies) waiting",
                info.offline_stored, info.offline_queued
            ),
        ),
    ];
    if !info.store.is_empty() {
        rows.push(("store", info.store.clone()));
    }
    if !info.nodes.is_empty() {
        let nodes: Vec<String> = info
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| match i {
                0 => format!("{} (this node)", n.name),
                _ => format!("{} (heard {} ms ago)", n.name, n.heard_ms),
            })
            .collect();
        rows.push(("nodes", format!("{}: {}", nodes.len(), nodes.join(", "))));
    }
    key_values(&rows)
}

/// The account table, or its header and `(no users)`. A `BANNED UNTIL (UTC)` column is added when
/// an account is banned (`kick --ban`).
pub fn users(users: &[UserInfo]) -> String {
    let banned = users.iter().any(|u| u.banned_until.is_some());
    let rows: Vec<Vec<String>> = users
        .iter()
        .map(|u| {
            let mut row = vec![
                u.user.clone(),
                yes_no(u.admin).to_string(),
                yes_no(u.locked).to_string(),
                u.sessions.to_string(),
                format_utc(u.created),
            ];
            if banned {
                row.push(u.banned_until.map_or("-".into(), format_utc));
            }
            row
        })
        .collect();
    let mut headers = vec!["USER", "ADMIN", "LOCKED", "SESSIONS", "CREATED (UTC)"];
    if banned {
        headers.push("BANNED UNTIL (UTC)");
    }
    table(&headers, &rows, "(no users)")
}

/// The session table, or its header and `(no sessions)`; in a cluster with a NODE column
/// last, and a line for each node that did not answer.
///
/// DEVICE comes after the first columns so they keep their positions for anyone who was
/// splitting the old table on whitespace.
pub fn sessions(sessions: &[SessionInfo], unanswered: &[String]) -> String {
    let cluster = sessions.iter().any(|s| s.node.is_some());
    let rows: Vec<Vec<String>> = sessions
        .iter()
        .map(|s| {
            let mut row = vec![
                s.id.to_string(),
                s.user.clone(),
                s.peer.clone(),
                format_utc(s.since),
                short_fingerprint(&s.device),
            ];
            if cluster {
                row.push(s.node.clone().unwrap_or_default());
            }
            row
        })
        .collect();
    let mut headers = vec!["ID", "USER", "PEER", "SINCE (UTC)", "DEVICE"];
    if cluster {
        headers.push("NODE");
    }
    let mut out = table(&headers, &rows, "(no sessions)");
    for node in unanswered {
        out.push_str(&format!(
            "node {node} did not answer: its sessions are not listed\n"
        ));
    }
    out
}

/// The device key table, or its header and `(no device keys)`.
///
/// Fingerprints are printed in full: that is the form `key revoke` takes.
pub fn keys(keys: &[KeyInfo]) -> String {
    let rows: Vec<Vec<String>> = keys
        .iter()
        .map(|k| {
            vec![
                k.user.clone(),
                k.fingerprint.to_string(),
                k.bits.to_string(),
                k.sessions.to_string(),
                format_utc(k.created),
                format_utc(k.last_seen),
                match k.revoked {
                    Some(at) => format!("revoked {}", format_utc(at)),
                    None => "active".to_string(),
                },
            ]
        })
        .collect();
    table(
        &[
            "USER",
            "FINGERPRINT",
            "BITS",
            "SESSIONS",
            "CREATED (UTC)",
            "LAST SEEN (UTC)",
            "STATUS",
        ],
        &rows,
        "(no device keys)",
    )
}

/// `SHA256:` and the first [`SHORT_FINGERPRINT_HEX`] hex digits, then `…`.
pub fn short_fingerprint(fp: &Fingerprint) -> String {
    let mut out = String::from("SHA256:");
    for b in fp.as_bytes().iter().take(SHORT_FINGERPRINT_HEX / 2) {
        out.push_str(&format!("{b:02x}"));
    }
    out.push('…');
    out
}

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

/// `key: value` lines with the values lined up in one column.
pub fn key_values(pairs: &[(&str, String)]) -> String {
    let width = pairs
        .iter()
        .map(|(k, _)| k.chars().count() + 1)
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    for (key, value) in pairs {
        let label = format!("{key}:");
        out.push_str(&format!("{label:<width$} {value}\n"));
    }
    out
}

/// A left-aligned table: every column as wide as its widest cell, two spaces between
/// columns, no trailing spaces. With no rows, the header is followed by `empty`.
pub fn table(headers: &[&str], rows: &[Vec<String>], empty: &str) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = headers.iter().map(|h| (*h).to_string()).collect();
    push_row(&mut out, &header, &widths);
    if rows.is_empty() {
        out.push_str(empty);
        out.push('\n');
    }
    for row in rows {
        push_row(&mut out, row, &widths);
    }
    out
}

fn push_row(out: &mut String, cells: &[String], widths: &[usize]) {
    let mut line = String::new();
    for (i, (cell, width)) in cells.iter().zip(widths).enumerate() {
        if i > 0 {
            line.push_str(GAP);
        }
        line.push_str(&format!("{cell:<width$}"));
    }
    out.push_str(line.trim_end());
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;
    use chatd_proto::Fingerprint;

    #[test]
    fn status_is_aligned() {
        let info = StatusInfo {
            version: "0.1.0".into(),
            uptime_secs: 3_723,
            listen: "127.0.0.1:8443".into(),
            cert_fingerprint: Fingerprint::of(b""),
            sessions: 3,
            users_online: 2,
            accounts: 5,
            offline_stored: 7,
            offline_queued: 9,
            store: String::new(),
            nodes: Vec::new(),
        };
        // A chatd older than the store field: no store line.
        assert!(!status(&info).contains("store:"));
        let info = StatusInfo {
            store: "postgresql node=chat-1 database=postgresql:///chatd pool=16".into(),
            ..info
        };
        assert_eq!(
            status(&info),
            "\
version:                 0.1.0
uptime:                  1h 2m 3s
listen:                  127.0.0.1:8443
certificate fingerprint: SHA256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
sessions:                3
users online:            2
accounts:                5
stored offline:          7 message(s), 9 delivery(ies) waiting
store:                   postgresql node=chat-1 database=postgresql:///chatd pool=16
"
        );
    }

    #[test]
    fn user_table_pads_columns() {
        let list = vec![
            UserInfo {
                user: "alice".into(),
                admin: true,
                locked: false,
                created: 0,
                sessions: 2,
                banned_until: None,
            },
            UserInfo {
                user: "bartholomew".into(),
                admin: false,
                locked: true,
                created: 1_764_300_000,
                sessions: 0,
                banned_until: None,
            },
        ];
        assert_eq!(
            users(&list),
            "\
USER         ADMIN  LOCKED  SESSIONS  CREATED (UTC)
alice        yes    no      2         1970-01-01 00:00:00
bartholomew  no     yes     0         2025-11-28 03:20:00
"
        );
    }

    #[test]
    fn session_table_pads_columns() {
        let list = vec![
            SessionInfo {
                id: 3,
                user: "alice".into(),
                peer: "127.0.0.1:5000".into(),
                device: Fingerprint::of(b""),
                since: 1_764_300_000,
                node: None,
            },
            SessionInfo {
                id: 12345,
                user: "bo".into(),
                peer: "[::1]:40000".into(),
                device: Fingerprint::of(b"bo's laptop"),
                since: 0,
                node: None,
            },
        ];
        assert_eq!(
            sessions(&list, &[]),
            "\
ID     USER   PEER            SINCE (UTC)          DEVICE
3      alice  127.0.0.1:5000  2025-11-28 03:20:00  SHA256:e3b0c44298fc1c14…
12345  bo     [::1]:40000     1970-01-01 00:00:00  SHA256:862edee86ce2a24b…
"
        );
    }

    #[test]
    fn a_cluster_adds_the_node_column_and_says_who_did_not_answer() {
        let list = vec![SessionInfo {
            id: 3,
            user: "alice".into(),
            peer: "127.0.0.1:5000".into(),
            device: Fingerprint::of(b""),
            since: 0,
            node: Some("n2".into()),
        }];
        assert_eq!(
            sessions(&list, &["n3".to_string()]),
            "\
ID  USER   PEER            SINCE (UTC)          DEVICE                    NODE
3   alice  127.0.0.1:5000  1970-01-01 00:00:00  SHA256:e3b0c44298fc1c14…  n2
node n3 did not answer: its sessions are not listed
"
        );
    }

    #[test]
    fn short_fingerprint_is_a_prefix_of_the_full_one() {
        let fp = Fingerprint::of(b"");
        let short = short_fingerprint(&fp);
        assert_eq!(short, "SHA256:e3b0c44298fc1c14…");
        let prefix = short.trim_end_matches('…');
        assert_eq!(prefix.len(), "SHA256:".len() + SHORT_FINGERPRINT_HEX);
        assert!(fp.to_string().starts_with(prefix));
    }

    #[test]
    fn key_table_pads_columns_and_shows_status() {
        let list = vec![
            KeyInfo {
                user: "alice".into(),
                fingerprint: Fingerprint::of(b""),
                bits: 3072,
                created: 0,
                last_seen: 1_764_300_000,
                revoked: None,
                sessions: 2,
            },
            KeyInfo {
                user: "bartholomew".into(),
                fingerprint: Fingerprint::of(b"bo's laptop"),
                bits: 4096,
                created: 951_782_400,
                last_seen: 1_735_689_599,
                revoked: Some(1_764_300_000),
                sessions: 0,
            },
        ];
        let text = keys(&list);
        assert_eq!(
            text,
            "\
USER         FINGERPRINT                                                              BITS  SESSIONS  CREATED (UTC)        LAST SEEN (UTC)      STATUS
alice        SHA256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855  3072  2         1970-01-01 00:00:00  2025-11-28 03:20:00  active
bartholomew  SHA256:862edee86ce2a24b7937aeaa8280f87e6aec6fec84fdda270b8a5adf41dbe988  4096  0         2000-02-29 00:00:00  2024-12-31 23:59:59  revoked 2025-11-28 03:20:00
"
        );
        assert_eq!(render(&ControlResponse::Keys { keys: list }), text);
    }

    #[test]
    fn a_ban_adds_its_column() {
        let mut list = vec![UserInfo {
            user: "bob".into(),
            admin: false,
            locked: false,
            created: 0,
            sessions: 0,
            banned_until: Some(1_764_300_000),
        }];
        list.push(UserInfo {
            user: "carol".into(),
            banned_until: None,
            ..list[0].clone()
        });
        assert_eq!(
            users(&list),
            "\
USER   ADMIN  LOCKED  SESSIONS  CREATED (UTC)        BANNED UNTIL (UTC)
bob    no     no      0         1970-01-01 00:00:00  2025-11-28 03:20:00
carol  no     no      0         1970-01-01 00:00:00  -
"
        );
    }

    #[test]
    fn empty_tables_say_so() {
        assert_eq!(
            users(&[]),
            "USER  ADMIN  LOCKED  SESSIONS  CREATED (UTC)\n(no users)\n"
        );
        assert_eq!(
            sessions(&[], &[]),
            "ID  USER  PEER  SINCE (UTC)  DEVICE\n(no sessions)\n"
        );
        assert_eq!(
            keys(&[]),
            "USER  FINGERPRINT  BITS  SESSIONS  CREATED (UTC)  LAST SEEN (UTC)  STATUS\n(no device keys)\n"
        );
    }

    #[test]
    fn done_prints_its_message() {
        let r = ControlResponse::Done {
            message: "user alice added".into(),
        };
        assert_eq!(render(&r), "user alice added\n");
    }
}
