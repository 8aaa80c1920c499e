//! Rendering server frames and end-to-end events as plain text lines.
//!
//! Everything here is a pure function of its inputs (the clock is passed in as a
//! ready-made stamp), so the exact output formats are unit-tested. Every string that
//! came from the network goes through [`sanitize`] first, so a peer cannot inject
//! terminal escape sequences or fake extra lines.

use chatd_proto::ServerFrame;
use chatd_proto::frame::{
    CommandInfo, OnlineUser, PresenceEvent, RoomEvent, RoomState, RoomSummary, WhoisDevice,
};
use chrono::{Local, TimeZone};

use crate::secure::{ChatMessage, Event};
use crate::text::{sanitize, sanitize_lines};

mod e2e;

pub use e2e::{not_sent, notice, warning};

/// `HH:MM:SS` in local time for a server timestamp (ms since the epoch), or for now.
pub fn local_stamp(ts_ms: Option<u64>) -> String {
    local_time(ts_ms, "%H:%M:%S")
}

/// `YYYY-MM-DD HH:MM:SS` in local time, like [`local_stamp`].
pub fn local_date_stamp(ts_ms: Option<u64>) -> String {
    local_time(ts_ms, "%Y-%m-%d %H:%M:%S")
}

fn local_time(ts_ms: Option<u64>, format: &str) -> String {
    let when = ts_ms
        .and_then(|ms| i64::try_from(ms).ok())
        .filter(|ms| *ms > 0)
        .and_then(|ms| Local.timestamp_millis_opt(ms).single())
        .unwrap_or_else(Local::now);
    when.format(format).to_string()
}

/// The time a frame should be shown with: a message's own timestamp, else `None` (now).
pub fn frame_time(frame: &ServerFrame) -> Option<u64> {
    match frame {
        ServerFrame::Envelope { ts, .. } => Some(*ts),
        _ => None,
    }
}

/// The line printed after a successful login (no time stamp).
pub fn logged_in(user: &str, online: &[String]) -> String {
    format!(
        "-- logged in as {}; online: {}",
        sanitize(user),
        join_names(online.iter().map(String::as_str))
    )
}

/// One verified message: `<bob> hi`, `*bob* psst` (whisper to us), `-> *bob* psst` (ours),
/// `* bob waves` (action).
pub fn message(m: &ChatMessage, me: &str, stamp: &str) -> String {
    format!("[{stamp}] {}", message_body(m, me))
}

/// [`message`] without its time stamp (with its marks: late, times that disagree).
pub fn message_body(m: &ChatMessage, me: &str) -> String {
    body_marked(m, me, sanitize, true)
}

/// [`message_body`] for the full-screen view: the text's line breaks kept (it draws each
/// later line indented under the first, so none can pass for a line of its own), and no
/// `[#room]` prefix (a room's messages go to that room's buffer, which names it).
pub fn message_lines(m: &ChatMessage, me: &str) -> String {
    body_marked(m, me, sanitize_lines, false)
}

fn body_marked(m: &ChatMessage, me: &str, clean: fn(&str) -> String, room_prefix: bool) -> String {
    let body = match &m.room {
        Some(room) if room_prefix => format!("[#{}] {}", sanitize(room), body_with(m, me, clean)),
        _ => body_with(m, me, clean),
    };
    format!("{body}{}", e2e::message_marks(m))
}

/// The body with the text cleaned by `clean`.
fn body_with(m: &ChatMessage, me: &str, clean: fn(&str) -> String) -> String {
    let (from_s, text_s) = (sanitize(&m.from), clean(&m.text));
    if m.action {
        match &m.to {
            Some(to) if m.from == me => format!("-> *{}* * {from_s} {text_s}", sanitize(to)),
            Some(_) => format!("*{from_s}* * {from_s} {text_s}"),
            None => format!("* {from_s} {text_s}"),
        }
    } else {
        match &m.to {
            None => format!("<{from_s}> {text_s}"),
            Some(to) if m.from == me => format!("-> *{}* {text_s}", sanitize(to)),
            Some(_) => format!("*{from_s}* {text_s}"),
        }
    }
}

/// An end-to-end event as one line; messages use their server time, the rest `now_stamp`.
pub fn event(e: &Event, me: &str, now_stamp: &str) -> String {
    match e {
        Event::Message(m) => message(m, me, &local_stamp(Some(m.ts))),
        Event::Notice(n) => format!("[{now_stamp}] -- {}", notice(n)),
        Event::Warning(w) => format!("[{now_stamp}] !! {}", warning(w)),
    }
}

/// Renders one frame as zero or more lines; `stamp` is `HH:MM:SS`.
///
/// `pong` and the end-to-end frames (handled by [`crate::secure`]) render as nothing;
/// `hello`/`login_ok` after login are unexpected and shown as notices.
pub fn render(frame: &ServerFrame, stamp: &str) -> Vec<String> {
    let mut lines = render_bodies(frame);
    if let Some(first) = lines.first_mut() {
        *first = format!("[{stamp}] {first}");
    }
    lines
}

/// [`render`] without the time stamp on the first line.
pub fn render_bodies(frame: &ServerFrame) -> Vec<String> {
    let line = |body: String| body;
    match frame {
        ServerFrame::Envelope { .. }
        | ServerFrame::Chain { .. }
        | ServerFrame::Device { .. }
        | ServerFrame::Rekey { .. }
        | ServerFrame::Vouch { .. } => Vec::new(),
        ServerFrame::Presence {
            user,
            event,
            reason,
        } => {
            let user = sanitize(user);
            let body = match (event, reason) {
                (PresenceEvent::Join, _) => format!("-- {user} joined"),
                (PresenceEvent::Leave, Some(r)) if !r.is_empty() => {
                    format!("-- {user} left ({})", sanitize(r))
                }
                (PresenceEvent::Leave, _) => format!("-- {user} left"),
            };
            vec![line(body)]
        }
        ServerFrame::Users { users } => vec![line(users_line(users))],
        ServerFrame::Room {
            room,
            user,
            event,
            by,
        } => {
            let (room, user) = (sanitize(room), sanitize(user));
            vec![line(match (event, by) {
                (RoomEvent::Join, _) => format!("-- {user} joined #{room}"),
                (RoomEvent::Part, _) => format!("-- {user} left #{room}"),
                (RoomEvent::Kick, Some(by)) => {
                    format!("-- {user} was removed from #{room} by {}", sanitize(by))
                }
                (RoomEvent::Kick, None) => format!("-- {user} was removed from #{room}"),
            })]
        }
        ServerFrame::Members { room } => vec![line(members_line(room))],
        ServerFrame::Topic { room, topic, by } => vec![line(if topic.is_empty() {
            format!(
                "-- {} cleared the topic of #{}",
                sanitize(by),
                sanitize(room)
            )
        } else {
            format!(
                "-- {} set the topic of #{}: {}",
                sanitize(by),
                sanitize(room),
                sanitize(topic)
            )
        })],
        ServerFrame::Rooms { rooms } => vec![line(rooms_line(rooms))],
        ServerFrame::Whois {
            user,
            sessions,
            away,
            admin,
            devices,
            rooms,
        } => vec![line(whois_line(
            user,
            *sessions,
            away.as_deref(),
            *admin,
            devices,
            rooms,
        ))],
        // One command: the answer to `/help CMD`.
        ServerFrame::Help { commands } if commands.len() == 1 => {
            vec![line(format!("-- {}", help_line(&commands[0]).trim_start()))]
        }
        // The client's own commands (and the server's it wraps) were listed by the client.
        ServerFrame::Help { commands } => {
            let mut out = vec![line("-- server commands:".to_string())];
            out.extend(
                commands
                    .iter()
                    .filter(|c| !crate::commands::is_client(&c.name))
                    .map(help_line),
            );
            out
        }
        ServerFrame::Notice { text } => vec![line(format!("-- {}", sanitize(text)))],
        ServerFrame::Error { message, .. } => vec![line(format!("!! {}", sanitize(message)))],
        ServerFrame::Pong { .. } => Vec::new(),
        // A broadcast almost always has someone offline: saying so each time is noise.
        ServerFrame::Held {
            conversation,
            users,
            ..
        } if conversation != chatd_proto::conversation::ALL => {
            let users: Vec<String> = users.iter().map(|u| sanitize(u)).collect();
            vec![line(format!(
                "-- stored for {} (offline): delivered at the next login",
                users.join(", ")
            ))]
        }
        ServerFrame::Held { .. } => Vec::new(),
        ServerFrame::Backlog { count, more, .. } if !*more && *count > 0 => {
            vec![line(
                "-- end of what was stored while you were offline".into(),
            )]
        }
        ServerFrame::Backlog { .. } => Vec::new(),
        ServerFrame::Bye { reason } => vec![line(format!(
            "-- server closed the connection: {}",
            sanitize(reason)
        ))],
        ServerFrame::Hello { server, .. } => {
            vec![line(format!(
                "-- unexpected hello from {}",
                sanitize(server)
            ))]
        }
        ServerFrame::LoginOk { user, .. } => {
            vec![line(format!(
                "-- unexpected login_ok for {}",
                sanitize(user)
            ))]
        }
    }
}

/// `lines` with a time stamp on the first (a block that belongs together).
pub fn stamp_first(mut lines: Vec<String>, stamp: &str) -> Vec<String> {
    if let Some(first) = lines.first_mut() {
        *first = format!("[{stamp}] {first}");
    }
    lines
}

/// The `/help` lines (without a time stamp): every command the client describes itself.
pub fn client_help_bodies() -> Vec<String> {
    let mut lines = vec!["-- client commands:".to_string()];
    lines.extend(
        crate::commands::COMMANDS
            .iter()
            .filter(|c| c.client())
            .map(crate::commands::Spec::help_line),
    );
    lines.push("  //text - send a message that starts with a slash".to_string());
    lines
}

/// `-- online: alice, bob (2 sessions)`.
fn users_line(users: &[OnlineUser]) -> String {
    let sessions: u64 = users.iter().map(|u| u64::from(u.sessions)).sum();
    let plural = if sessions == 1 { "" } else { "s" };
    let mut line = format!(
        "-- online: {} ({sessions} session{plural})",
        join_names(users.iter().map(|u| u.user.as_str()))
    );
    let away: Vec<String> = users
        .iter()
        .filter_map(|u| {
            let text = u.away.as_deref()?;
            Some(format!("{} ({})", sanitize(&u.user), sanitize(text)))
        })
        .collect();
    if !away.is_empty() {
        line.push_str(&format!("; away: {}", away.join(", ")));
    }
    line
}

/// `-- #dev (invite-only, owner alice; topic: ...): alice, bob`.
fn members_line(room: &RoomState) -> String {
    let mut about = Vec::new();
    if room.invite_only {
        about.push("invite-only".to_string());
    }
    if let Some(owner) = &room.owner {
        about.push(format!("owner {}", sanitize(owner)));
    }
    if !room.topic.is_empty() {
        about.push(format!("topic: {}", sanitize(&room.topic)));
    }
    let about = if about.is_empty() {
        String::new()
    } else {
        format!(" ({})", about.join("; "))
    };
    format!(
        "-- #{}{about}: {}",
        sanitize(&room.name),
        join_names(room.members.iter().map(String::as_str))
    )
}

/// `-- rooms: #dev* (2, topic: ...), #lobby* (5)`; `*` marks the caller's.
fn rooms_line(rooms: &[RoomSummary]) -> String {
    if rooms.is_empty() {
        return "-- rooms: none".to_string();
    }
    let parts: Vec<String> = rooms
        .iter()
        .map(|r| {
            let mine = if r.joined { "*" } else { "" };
            let lock = if r.invite_only { ", invite-only" } else { "" };
            let topic = if r.topic.is_empty() {
                String::new()
            } else {
                format!(", topic: {}", sanitize(&r.topic))
            };
            format!("#{}{mine} ({}{lock}{topic})", sanitize(&r.name), r.members)
        })
        .collect();
    format!("-- rooms (* = yours): {}", parts.join(", "))
}

/// `-- bob: online (2 sessions), away (lunch), admin; device keys: SHA256:... (online), ...`.
fn whois_line(
    user: &str,
    sessions: u32,
    away: Option<&str>,
    admin: bool,
    devices: &[WhoisDevice],
    rooms: &[String],
) -> String {
    let mut line = format!("-- {}: ", sanitize(user));
    match sessions {
        0 => line.push_str("offline"),
        1 => line.push_str("online (1 session)"),
        n => line.push_str(&format!("online ({n} sessions)")),
    }
    if let Some(text) = away {
        line.push_str(&format!(", away ({})", sanitize(text)));
    }
    if admin {
        line.push_str(", admin");
    }
    if !rooms.is_empty() {
        let rooms: Vec<String> = rooms.iter().map(|r| format!("#{}", sanitize(r))).collect();
        line.push_str(&format!("; in {}", rooms.join(" ")));
    }
    if devices.is_empty() {
        line.push_str("; no device key yet");
    } else {
        let keys: Vec<String> = devices
            .iter()
            .map(|d| {
                let state = if d.online { " (online)" } else { "" };
                format!("{}{state}", d.fingerprint)
            })
            .collect();
        line.push_str(&format!("; device keys: {}", keys.join(", ")));
    }
    line
}

/// `  /whisper <user> <message> - help (aliases: w, msg)`.
fn help_line(cmd: &CommandInfo) -> String {
    let mut s = format!("  /{}", sanitize(&cmd.name));
    if !cmd.usage.is_empty() {
        s.push(' ');
        s.push_str(&sanitize(&cmd.usage));
    }
    s.push_str(" - ");
    s.push_str(&sanitize(&cmd.help));
    if !cmd.aliases.is_empty() {
        let aliases: Vec<String> = cmd.aliases.iter().map(|a| sanitize(a)).collect();
        s.push_str(&format!(" (aliases: {})", aliases.join(", ")));
    }
    s
}

fn join_names<'a>(names: impl Iterator<Item = &'a str>) -> String {
    let names: Vec<String> = names.map(sanitize).collect();
    if names.is_empty() {
        "nobody".to_string()
    } else {
        names.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secure::{Notice, Warning};
    use chatd_proto::ErrorCode;

    fn msg(from: &str, to: Option<&str>, text: &str, action: bool) -> ChatMessage {
        ChatMessage {
            from: from.into(),
            to: to.map(Into::into),
            room: None,
            text: text.into(),
            action,
            ts: 1,
            verified: false,
            late: false,
            server_ts: None,
        }
    }

    fn one(frame: &ServerFrame) -> String {
        let lines = render(frame, "12:00:00");
        assert_eq!(lines.len(), 1, "{lines:?}");
        lines.into_iter().next().unwrap()
    }

    fn show(m: &ChatMessage) -> String {
        message(m, "alice", "12:00:00")
    }

    #[test]
    fn messages() {
        assert_eq!(
            show(&msg("bob", None, "hi all", false)),
            "[12:00:00] <bob> hi all"
        );
        assert_eq!(
            show(&msg("bob", Some("alice"), "psst", false)),
            "[12:00:00] *bob* psst"
        );
        assert_eq!(
            show(&msg("alice", Some("bob"), "psst", false)),
            "[12:00:00] -> *bob* psst"
        );
        assert_eq!(
            show(&msg("alice", None, "waves", true)),
            "[12:00:00] * alice waves"
        );
        assert_eq!(
            show(&msg("alice", Some("bob"), "waves", true)),
            "[12:00:00] -> *bob* * alice waves"
        );
        assert_eq!(
            show(&msg("bob", Some("alice"), "waves", true)),
            "[12:00:00] *bob* * bob waves"
        );
        assert_eq!(
            event(
                &Event::Warning(Warning::NotAFingerprint),
                "alice",
                "12:00:00"
            ),
            "[12:00:00] !! a fingerprint is written SHA256: followed by 64 hex digits (at least the first 16 will do)"
        );
        assert_eq!(
            event(
                &Event::Notice(Notice::Switched { room: "dev".into() }),
                "alice",
                "12:00:00"
            ),
            "[12:00:00] -- now talking in #dev"
        );
        // Our own broadcast from another device is shown like anyone's.
        assert_eq!(
            show(&msg("alice", None, "from phone", false)),
            "[12:00:00] <alice> from phone"
        );
    }

    #[test]
    fn presence_users_notice_error_bye() {
        let join = ServerFrame::Presence {
            user: "bob".into(),
            event: PresenceEvent::Join,
            reason: None,
        };
        assert_eq!(one(&join), "[12:00:00] -- bob joined");
        let leave = ServerFrame::Presence {
            user: "bob".into(),
            event: PresenceEvent::Leave,
            reason: Some("disconnected".into()),
        };
        assert_eq!(one(&leave), "[12:00:00] -- bob left (disconnected)");
        let leave_plain = ServerFrame::Presence {
            user: "bob".into(),
            event: PresenceEvent::Leave,
            reason: None,
        };
        assert_eq!(one(&leave_plain), "[12:00:00] -- bob left");

        let users = ServerFrame::Users {
            users: vec![
                OnlineUser {
                    user: "alice".into(),
                    sessions: 1,
                    away: None,
                },
                OnlineUser {
                    user: "bob".into(),
                    sessions: 1,
                    away: Some("lunch\x1b[2J".into()),
                },
            ],
        };
        assert_eq!(
            one(&users),
            "[12:00:00] -- online: alice, bob (2 sessions); away: bob (lunch\u{fffd}[2J)"
        );
        let single = ServerFrame::Users {
            users: vec![OnlineUser {
                user: "alice".into(),
                sessions: 1,
                away: None,
            }],
        };
        let whois = ServerFrame::Whois {
            user: "bob".into(),
            sessions: 2,
            away: Some("lunch".into()),
            admin: true,
            devices: vec![WhoisDevice {
                fingerprint: chatd_proto::Fingerprint::from_bytes([0; 32]),
                online: true,
            }],
            rooms: vec!["dev".into(), "lobby".into()],
        };
        assert_eq!(
            one(&whois),
            format!(
                "[12:00:00] -- bob: online (2 sessions), away (lunch), admin; in #dev #lobby; device keys: {} (online)",
                chatd_proto::Fingerprint::from_bytes([0; 32])
            )
        );
        assert_eq!(one(&single), "[12:00:00] -- online: alice (1 session)");

        assert_eq!(
            one(&ServerFrame::Notice {
                text: "server restarts soon".into()
            }),
            "[12:00:00] -- server restarts soon"
        );
        assert_eq!(
            one(&ServerFrame::error(
                ErrorCode::UserOffline,
                "bob is not online"
            )),
            "[12:00:00] !! bob is not online"
        );
        assert_eq!(
            one(&ServerFrame::Bye {
                reason: "kicked by administrator: spam".into()
            }),
            "[12:00:00] -- server closed the connection: kicked by administrator: spam"
        );
        assert!(render(&ServerFrame::Pong { nonce: 1 }, "12:00:00").is_empty());
    }

    #[test]
    fn help() {
        let frame = ServerFrame::Help {
            commands: vec![
                CommandInfo {
                    name: "list".into(),
                    aliases: vec![],
                    usage: String::new(),
                    help: "who is online".into(),
                },
                CommandInfo {
                    name: "join".into(),
                    aliases: vec![],
                    usage: "ROOM".into(),
                    help: "join a room".into(),
                },
                CommandInfo {
                    name: "whois".into(),
                    aliases: vec!["wi".into()],
                    usage: "<user>".into(),
                    help: "about a user".into(),
                },
            ],
        };
        assert_eq!(
            render(&frame, "12:00:00"),
            vec![
                "[12:00:00] -- server commands:",
                "  /list - who is online",
                // join is the client's: listed once, by the client.
                "  /whois <user> - about a user (aliases: wi)",
            ]
        );
        let client = stamp_first(client_help_bodies(), "12:00:00");
        assert_eq!(client[0], "[12:00:00] -- client commands:");
        assert!(client.contains(&"  /quit - leave the chat".to_string()));
        // One command asked about: one line.
        let one = ServerFrame::Help {
            commands: vec![CommandInfo {
                name: "whois".into(),
                aliases: vec![],
                usage: "USER".into(),
                help: "about a user".into(),
            }],
        };
        assert_eq!(
            render(&one, "12:00:00"),
            ["[12:00:00] -- /whois USER - about a user"]
        );
    }

    #[test]
    fn network_text_cannot_inject_escapes_or_lines() {
        let evil = msg(
            "bob\u{1b}[31m",
            None,
            "hi\n[12:00:01] <admin> fake\u{7}\u{9b}2J\u{202e}x\ty",
            false,
        );
        let line = show(&evil);
        assert!(!line.chars().any(char::is_control), "{line:?}");
        assert!(!line.contains('\u{202e}'));
        assert_eq!(
            line,
            "[12:00:00] <bob\u{fffd}[31m> hi\u{fffd}[12:00:01] <admin> fake\u{fffd}\u{fffd}2J\u{fffd}x y"
        );
        assert_eq!(sanitize("plain ünïcödé ✓"), "plain ünïcödé ✓");
        assert_eq!(
            logged_in("alice", &["alice".into(), "b\u{1b}b".into()]),
            "-- logged in as alice; online: alice, b\u{fffd}b"
        );
    }

    #[test]
    fn server_text_with_escapes_and_bidi_is_sanitized_in_every_frame() {
        // CSI, OSC with BEL, a C1 CSI, a newline, bidi override and isolate, zero-width space.
        let evil = "x\u{1b}[2J\u{1b}]0;pwned\u{7}\u{9b}1m\nfake\u{202e}\u{2066}\u{200b}y";
        let frames = [
            ServerFrame::error(chatd_proto::ErrorCode::Refused, evil),
            ServerFrame::Bye {
                reason: evil.into(),
            },
            ServerFrame::Notice { text: evil.into() },
            ServerFrame::Topic {
                room: "dev".into(),
                topic: evil.into(),
                by: "bob".into(),
            },
            ServerFrame::Presence {
                user: "bob".into(),
                event: PresenceEvent::Leave,
                reason: Some(evil.into()),
            },
            ServerFrame::Hello {
                version: 2,
                server: evil.into(),
                max_line_bytes: 1,
                max_text_bytes: 1,
                idle_timeout_secs: 0,
                binary: false,
                offline_ttl_secs: None,
                features: Vec::new(),
                challenge: None,
            },
        ];
        for frame in &frames {
            for line in render(frame, "12:00:00") {
                assert!(!line.chars().any(char::is_control), "{line:?}");
                assert!(!line.contains(['\u{202e}', '\u{2066}']), "{line:?}");
                assert!(line.contains("x\u{fffd}[2J\u{fffd}]0;pwned"), "{line:?}");
            }
        }
        // Errors of the end-to-end layer that carry text from a key the server sent.
        let warnings = [
            Warning::Unreadable {
                from: Some("bob".into()),
                error: chatd_proto::e2e::E2eError::KeyEncoding(evil.into()),
            },
            Warning::Dropped {
                from: "bob".into(),
                why: crate::secure::Refusal::Unreadable(chatd_proto::e2e::E2eError::Rsa(
                    evil.into(),
                )),
            },
            Warning::Dropped {
                from: "bob".into(),
                why: crate::secure::Refusal::Check {
                    error: chatd_proto::e2e::E2eError::KeyEncoding(evil.into()),
                    max_skew_ms: 1,
                },
            },
        ];
        for w in &warnings {
            let line = event(&Event::Warning(w.clone()), "alice", "12:00:00");
            assert!(!line.chars().any(char::is_control), "{line:?}");
            assert!(!line.contains('\u{202e}'), "{line:?}");
        }
        // A refused name is shown escaped, so the invisible character is seen.
        let bad = Warning::BadName {
            frame: "members",
            name: "lobby\u{200b}".into(),
        };
        assert!(
            warning(&bad).contains("\"lobby\\u{200b}\""),
            "{}",
            warning(&bad)
        );
    }

    #[test]
    fn stamps() {
        let env = ServerFrame::Envelope {
            from: "a".into(),
            device: chatd_proto::Fingerprint::from_bytes([0; 32]),
            data: String::new(),
            ts: 1,
        };
        assert_eq!(frame_time(&env), Some(1));
        assert_eq!(frame_time(&ServerFrame::Pong { nonce: 0 }), None);
        let s = local_stamp(Some(1_764_300_000_000));
        assert_eq!(s.len(), 8);
        assert_eq!(s.as_bytes()[2], b':');
        assert_eq!(local_stamp(None).len(), 8);
        assert_eq!(local_stamp(Some(u64::MAX)).len(), 8);
    }
}
