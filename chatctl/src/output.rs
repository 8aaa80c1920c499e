//! Human-readable rendering of control responses: key/value blocks, aligned tables,
//! durations and UTC timestamps.
//!
//! Everything returns a `String` (each line ending in `\n`) so it can be tested
//! without capturing stdout. Dates are computed here rather than pulling in a
//! date crate: chatctl only ever needs "seconds since the epoch, in UTC".

use chatd_proto::Fingerprint;
use chatd_proto::control::{ControlResponse, KeyInfo, SessionInfo, StatusInfo, UserInfo};

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
        ControlResponse::Sessions { sessions: list } => sessions(list),
        ControlResponse::Keys { keys: list } => keys(list),
        ControlResponse::Error { message, .. } => format!("{message}\n"),
    }
}

/// `status` as aligned `key: value` lines.
pub fn status(info: &StatusInfo) -> String {
    key_values(&[
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
    ])
}

/// The account table, or its header and `(no users)`.
pub fn users(users: &[UserInfo]) -> String {
    let rows: Vec<Vec<String>> = users
        .iter()
        .map(|u| {
            vec![
                u.user.clone(),
                yes_no(u.admin).to_string(),
                yes_no(u.locked).to_string(),
                u.sessions.to_string(),
                format_utc(u.created),
            ]
        })
        .collect();
    table(
        &["USER", "ADMIN", "LOCKED", "SESSIONS", "CREATED (UTC)"],
        &rows,
        "(no users)",
    )
}

/// The session table, or its header and `(no sessions)`.
///
/// DEVICE comes last so the earlier columns keep their positions for anyone who
/// was splitting the old table on whitespace.
pub fn sessions(sessions: &[SessionInfo]) -> String {
    let rows: Vec<Vec<String>> = sessions
        .iter()
        .map(|s| {
            vec![
                s.id.to_string(),
                s.user.clone(),
                s.peer.clone(),
                format_utc(s.since),
                short_fingerprint(&s.device),
            ]
        })
        .collect();
    table(
        &["ID", "USER", "PEER", "SINCE (UTC)", "DEVICE"],
        &rows,
        "(no sessions)",
    )
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

/// A duration such as `1h 2m 3s`: the largest non-zero unit and every smaller one
/// (`59s`, `1m 0s`, `2d 0h 0m 5s`).
pub fn format_uptime(secs: u64) -> String {
    let (d, h, m, s) = (
        secs / 86_400,
        secs % 86_400 / 3_600,
        secs % 3_600 / 60,
        secs % 60,
    );
    if d > 0 {
        format!("{d}d {h}h {m}m {s}s")
    } else if h > 0 {
        format!("{h}h {m}m {s}s")
    } else if m > 0 {
        format!("{m}m {s}s")
    } else {
        format!("{s}s")
    }
}

/// Seconds since the Unix epoch as `YYYY-MM-DD HH:MM:SS` in UTC.
pub fn format_utc(epoch_secs: u64) -> String {
    let days = epoch_secs / 86_400;
    let rem = epoch_secs % 86_400;
    let (y, mo, d) = civil_from_days(days);
    format!(
        "{y:04}-{mo:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3_600,
        rem % 3_600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day).
///
/// Howard Hinnant's `civil_from_days`, restricted to non-negative days since the
/// input is unsigned.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097; // [0, 146096]
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11], March-based
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chatd_proto::Fingerprint;

    #[test]
    fn uptime_units() {
        assert_eq!(format_uptime(0), "0s");
        assert_eq!(format_uptime(59), "59s");
        assert_eq!(format_uptime(60), "1m 0s");
        assert_eq!(format_uptime(3_723), "1h 2m 3s");
        assert_eq!(format_uptime(3_600), "1h 0m 0s");
        assert_eq!(format_uptime(86_400 * 2 + 5), "2d 0h 0m 5s");
        assert_eq!(format_uptime(90_061), "1d 1h 1m 1s");
    }

    #[test]
    fn utc_dates() {
        assert_eq!(format_utc(0), "1970-01-01 00:00:00");
        assert_eq!(format_utc(1_764_300_000), "2025-11-28 03:20:00");
        // Leap day, and the last second of a leap year.
        assert_eq!(format_utc(951_782_400), "2000-02-29 00:00:00");
        assert_eq!(format_utc(1_735_689_599), "2024-12-31 23:59:59");
        assert_eq!(format_utc(4_107_542_400), "2100-03-01 00:00:00");
        assert_eq!(format_utc(253_402_300_799), "9999-12-31 23:59:59");
    }

    #[test]
    fn civil_matches_day_by_day_walk() {
        // Walk forward one day at a time and check the calendar advances correctly.
        let days_in = |y: u64, m: u64| match m {
            2 if (y.is_multiple_of(4) && !y.is_multiple_of(100)) || y.is_multiple_of(400) => 29,
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        };
        let (mut y, mut m, mut d) = (1970, 1, 1);
        for days in 0..200_000 {
            assert_eq!(civil_from_days(days), (y, m, d), "day {days}");
            d += 1;
            if d > days_in(y, m) {
                d = 1;
                m += 1;
                if m > 12 {
                    m = 1;
                    y += 1;
                }
            }
        }
    }

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
            },
            UserInfo {
                user: "bartholomew".into(),
                admin: false,
                locked: true,
                created: 1_764_300_000,
                sessions: 0,
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
            },
            SessionInfo {
                id: 12345,
                user: "bo".into(),
                peer: "[::1]:40000".into(),
                device: Fingerprint::of(b"bo's laptop"),
                since: 0,
            },
        ];
        assert_eq!(
            sessions(&list),
            "\
ID     USER   PEER            SINCE (UTC)          DEVICE
3      alice  127.0.0.1:5000  2025-11-28 03:20:00  SHA256:e3b0c44298fc1c14…
12345  bo     [::1]:40000     1970-01-01 00:00:00  SHA256:862edee86ce2a24b…
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
    fn empty_tables_say_so() {
        assert_eq!(
            users(&[]),
            "USER  ADMIN  LOCKED  SESSIONS  CREATED (UTC)\n(no users)\n"
        );
        assert_eq!(
            sessions(&[]),
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
