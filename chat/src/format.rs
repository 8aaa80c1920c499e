//! Rendering server frames as plain text lines.
//!
//! Everything here is a pure function of its inputs (the clock is passed in as a
//! ready-made stamp), so the exact output formats are unit-tested. Every string that
//! came from the network goes through [`sanitize`] first, so a peer cannot inject
//! terminal escape sequences or fake extra lines.

use chatd_proto::ServerFrame;
use chatd_proto::frame::{CommandInfo, OnlineUser, PresenceEvent};
use chrono::{Local, TimeZone};

/// Replaces control characters (C0, DEL, C1) and bidirectional overrides with U+FFFD.
///
/// Tabs become a space; newlines are replaced too, so one frame is always one line.
pub fn sanitize(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '\t' => ' ',
            // Bidi embeddings/overrides/isolates can reorder what follows on the line.
            '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' => '\u{fffd}',
            c if c.is_control() => '\u{fffd}',
            c => c,
        })
        .collect()
}

/// `HH:MM:SS` in local time for a server timestamp (ms since the epoch), or for now.
pub fn local_stamp(ts_ms: Option<u64>) -> String {
    let when = ts_ms
        .and_then(|ms| i64::try_from(ms).ok())
        .filter(|ms| *ms > 0)
        .and_then(|ms| Local.timestamp_millis_opt(ms).single())
        .unwrap_or_else(Local::now);
    when.format("%H:%M:%S").to_string()
}

/// The time a frame should be shown with: a message's own timestamp, else `None` (now).
pub fn frame_time(frame: &ServerFrame) -> Option<u64> {
    match frame {
        ServerFrame::Message { ts, .. } => Some(*ts),
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

/// Renders one frame as zero or more lines; `me` is the logged-in user, `stamp` is `HH:MM:SS`.
///
/// `pong` renders as nothing; `hello`/`login_ok` after login are unexpected and shown as notices.
pub fn render(frame: &ServerFrame, me: &str, stamp: &str) -> Vec<String> {
    let line = |body: String| format!("[{stamp}] {body}");
    match frame {
        ServerFrame::Message {
            from,
            to,
            text,
            action,
            ..
        } => {
            let (from_s, text_s) = (sanitize(from), sanitize(text));
            let body = if *action {
                format!("* {from_s} {text_s}")
            } else {
                match to {
                    None => format!("<{from_s}> {text_s}"),
                    Some(to) if from == me => format!("-> *{}* {text_s}", sanitize(to)),
                    Some(to) if to == me => format!("*{from_s}* {text_s}"),
                    // Not for us and not from us: the server should not send this; show both ends.
                    Some(to) => format!("*{from_s}* -> *{}* {text_s}", sanitize(to)),
                }
            };
            vec![line(body)]
        }
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
        ServerFrame::Help { commands } => {
            let mut out = vec![line("-- server commands:".to_string())];
            out.extend(commands.iter().map(help_line));
            out
        }
        ServerFrame::Notice { text } => vec![line(format!("-- {}", sanitize(text)))],
        ServerFrame::Error { message, .. } => vec![line(format!("!! {}", sanitize(message)))],
        ServerFrame::Pong { .. } => Vec::new(),
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

/// Lines describing the commands handled by the client itself, for `/help`.
pub fn client_help(stamp: &str) -> Vec<String> {
    vec![
        format!("[{stamp}] -- client commands:"),
        "  /quit - leave the chat".to_string(),
        "  /help - show this help and the server's commands".to_string(),
        "  //text - send a message that starts with a slash".to_string(),
    ]
}

/// `-- online: alice, bob (2 sessions)`.
fn users_line(users: &[OnlineUser]) -> String {
    let sessions: u64 = users.iter().map(|u| u64::from(u.sessions)).sum();
    let plural = if sessions == 1 { "" } else { "s" };
    format!(
        "-- online: {} ({sessions} session{plural})",
        join_names(users.iter().map(|u| u.user.as_str()))
    )
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
    use chatd_proto::ErrorCode;

    fn msg(from: &str, to: Option<&str>, text: &str, action: bool) -> ServerFrame {
        ServerFrame::Message {
            from: from.into(),
            to: to.map(Into::into),
            text: text.into(),
            ts: 1,
            action,
        }
    }

    fn one(frame: &ServerFrame) -> String {
        let lines = render(frame, "alice", "12:00:00");
        assert_eq!(lines.len(), 1, "{lines:?}");
        lines.into_iter().next().unwrap()
    }

    #[test]
    fn messages() {
        assert_eq!(
            one(&msg("bob", None, "hi all", false)),
            "[12:00:00] <bob> hi all"
        );
        assert_eq!(
            one(&msg("bob", Some("alice"), "psst", false)),
            "[12:00:00] *bob* psst"
        );
        assert_eq!(
            one(&msg("alice", Some("bob"), "psst", false)),
            "[12:00:00] -> *bob* psst"
        );
        assert_eq!(
            one(&msg("alice", None, "waves", true)),
            "[12:00:00] * alice waves"
        );
        // Our own broadcast from another device is shown like anyone's.
        assert_eq!(
            one(&msg("alice", None, "from phone", false)),
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
                },
                OnlineUser {
                    user: "bob".into(),
                    sessions: 1,
                },
            ],
        };
        assert_eq!(one(&users), "[12:00:00] -- online: alice, bob (2 sessions)");
        let single = ServerFrame::Users {
            users: vec![OnlineUser {
                user: "alice".into(),
                sessions: 1,
            }],
        };
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
        assert!(render(&ServerFrame::Pong { nonce: 1 }, "alice", "12:00:00").is_empty());
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
                    name: "whisper".into(),
                    aliases: vec!["w".into(), "msg".into()],
                    usage: "<user> <message>".into(),
                    help: "private message".into(),
                },
            ],
        };
        assert_eq!(
            render(&frame, "alice", "12:00:00"),
            vec![
                "[12:00:00] -- server commands:",
                "  /list - who is online",
                "  /whisper <user> <message> - private message (aliases: w, msg)",
            ]
        );
        assert_eq!(client_help("12:00:00")[1], "  /quit - leave the chat");
    }

    #[test]
    fn network_text_cannot_inject_escapes_or_lines() {
        let evil = msg(
            "bob\u{1b}[31m",
            None,
            "hi\n[12:00:01] <admin> fake\u{7}\u{9b}2J\u{202e}x\ty",
            false,
        );
        let line = one(&evil);
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
    fn stamps() {
        assert_eq!(frame_time(&msg("a", None, "x", false)), Some(1));
        assert_eq!(frame_time(&ServerFrame::Pong { nonce: 0 }), None);
        let s = local_stamp(Some(1_764_300_000_000));
        assert_eq!(s.len(), 8);
        assert_eq!(s.as_bytes()[2], b':');
        assert_eq!(local_stamp(None).len(), 8);
        assert_eq!(local_stamp(Some(u64::MAX)).len(), 8);
    }
}
