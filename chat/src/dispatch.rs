//! What to do with one line the user typed: shared by the plain mode and the TUI, so every
//! command behaves the same in both.

use anyhow::{Context, Result};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use chatd_proto::codec::binary_send;
use chatd_proto::conversation::Conversation;
use chatd_proto::frame::{DeviceEvent, RoomEvent};
use chatd_proto::{ClientFrame, ServerFrame, frame};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::conn::{Connection, Incoming, ServerInfo};
use crate::format;
use crate::input::{self, Devices, Input};
use crate::secure::{Body, Event, Notice, RekeyRequest, Secure};

/// One frame for the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outbound {
    /// A JSON frame.
    Frame(ClientFrame),
    /// A sealed envelope's bytes: a binary `send` frame if the connection negotiated them,
    /// else a JSON one.
    Envelope(Bytes),
}

/// The outcome of one typed line.
#[derive(Debug)]
pub enum Step {
    /// Nothing to do (a blank line).
    Nothing,
    /// Leave: send `quit` and wait for `bye`.
    Quit,
    /// `/help [CMD]`: show `lines` (the client's own commands, or the one asked about), then
    /// send `ask` (the server's `help`) if the server has more to say.
    Help {
        /// Lines to show (bodies, without a time stamp).
        lines: Vec<String>,
        /// The `help` command for the server.
        ask: Option<ClientFrame>,
    },
    /// Show `events` (if any), then send `frames` in order.
    Send {
        /// Local notices (new chains, warnings) to show first.
        events: Vec<Event>,
        /// Frames for the server.
        frames: Vec<Outbound>,
    },
    /// `/join ROOM` of a room this user is not in: send `frames`, then the `ping` that
    /// [`crate::joining::Joins::start`] gives; lines typed until the answer wait.
    Join {
        /// The room (without `#`).
        room: String,
        /// The `join` command.
        frames: Vec<Outbound>,
    },
    /// Show these; nothing goes to the server.
    Show(Vec<Event>),
    /// Not sent; the reason, for the user.
    Refused(String),
}

/// Interprets `line`; text is sealed here, so nothing readable ever reaches a frame.
pub fn line(line: &str, secure: &mut Secure) -> Step {
    let step = match interpret(line, secure) {
        // Messages released by `/trust` and the like go to the history too.
        Step::Show(events) => Step::Show(secure.shown(events)),
        Step::Send { events, frames } => Step::Send {
            events: secure.shown(events),
            frames,
        },
        other => other,
    };
    // Accepting a key (`/trust`, `/verify`, `/devices approve`) can answer requests for our
    // chains held until then: those frames go first. (Other steps leave them owed; they go
    // after the next frame from the server.)
    let mut owed = || secure.take_frames().into_iter().map(Outbound::Frame);
    match step {
        Step::Show(events) => {
            let frames: Vec<Outbound> = owed().collect();
            if frames.is_empty() {
                Step::Show(events)
            } else {
                Step::Send { events, frames }
            }
        }
        Step::Send { events, frames } => Step::Send {
            events,
            frames: owed().chain(frames).collect(),
        },
        Step::Join { room, frames } => Step::Join {
            room,
            frames: owed().chain(frames).collect(),
        },
        other => other,
    }
}

/// [`line`] before the frames the end-to-end layer owes are added.
fn interpret(line: &str, secure: &mut Secure) -> Step {
    let me = secure.me().to_string();
    let (conversation, body) = match input::parse(line) {
        Input::Empty => return Step::Nothing,
        Input::Invalid(why) => return Step::Refused(why),
        Input::Quit => return Step::Quit,
        Input::Help { args } => return help(&args),
        Input::Ping => {
            return Step::Send {
                events: Vec::new(),
                frames: vec![Outbound::Frame(ClientFrame::Ping {
                    nonce: secure.ping_nonce(),
                })],
            };
        }
        Input::Ignore(user) => return Step::Show(secure.ignore(user.as_deref())),
        Input::Unignore(user) => return Step::Show(secure.unignore(&user)),
        Input::Command { name, args } => return room_command(name, args, secure),
        Input::Fingerprint => return Step::Show(secure.show_fingerprint()),
        Input::Verify { user, fingerprint } => {
            return Step::Show(secure.verify(&user, fingerprint.as_deref()));
        }
        Input::Trust { user } => return Step::Show(secure.trust(&user)),
        Input::Devices(action) => return devices(action, secure),
        Input::History { clear } => return Step::Show(secure.history_command(clear)),
        Input::Say { text } => (
            Conversation::Room(secure.current_room().to_string()),
            Body {
                text,
                action: false,
            },
        ),
        Input::Action { text } => (
            Conversation::Room(secure.current_room().to_string()),
            Body { text, action: true },
        ),
        Input::Whisper { to, text } => {
            if let Err(e) = chatd_proto::names::validate_username(&to) {
                return Step::Refused(format!("not sent: {e}"));
            }
            (
                Conversation::pair(&me, &to),
                Body {
                    text,
                    action: false,
                },
            )
        }
    };
    match secure.seal(&conversation, body) {
        Ok(sealed) => Step::Send {
            events: sealed.events,
            frames: sealed
                .chains
                .into_iter()
                .map(Outbound::Frame)
                .chain([Outbound::Envelope(sealed.envelope)])
                .collect(),
        },
        Err(why) => Step::Refused(format::not_sent(&why)),
    }
}

/// `/help`: the client's commands, then the server's (which leaves out the client's);
/// `/help CMD`: the client's line for one of its own, else the server's answer.
fn help(args: &str) -> Step {
    let ask = |args: &str| ClientFrame::Command {
        name: "help".into(),
        args: args.to_string(),
        room: None,
    };
    let words: Vec<&str> = args.split_whitespace().collect();
    match words.as_slice() {
        [] => Step::Help {
            lines: format::client_help_bodies(),
            ask: Some(ask("")),
        },
        [name] => match crate::commands::find(name).filter(|c| c.client()) {
            Some(spec) => Step::Help {
                lines: vec![format!("-- {}", spec.help_line().trim_start())],
                ask: None,
            },
            None => Step::Help {
                lines: Vec::new(),
                ask: Some(ask(name)),
            },
        },
        _ => Step::Refused("usage: /help [COMMAND]".to_string()),
    }
}

/// Whether `frame` is about an ignored user and is not shown: their presence and room
/// lines (their messages are dropped from [`events`]).
pub fn hidden(frame: &ServerFrame, secure: &Secure) -> bool {
    match frame {
        ServerFrame::Presence { user, .. } | ServerFrame::Room { user, .. } => {
            secure.is_ignored(user)
        }
        _ => false,
    }
}

/// `/devices`, `/devices approve CODE|FP`, `/devices revoke FP`.
fn devices(action: Devices, secure: &mut Secure) -> Step {
    let (events, frame) = match action {
        Devices::List => return Step::Show(secure.list_devices()),
        Devices::Approve(given) => secure.approve_device(&given),
        Devices::Revoke(given) => secure.revoke_device(&given),
    };
    match frame {
        Some(frame) => Step::Send {
            events,
            frames: vec![Outbound::Frame(frame)],
        },
        None => Step::Show(events),
    }
}

/// A server command, with the current room filled in where the user left it out:
/// `/part`, `/members`, `/topic [TEXT]`, `/kick USER`. `/join` of a room one is already in
/// just switches to it, without asking the server; of another room, it is a [`Step::Join`].
/// The rooms we ask to join or part are noted: only their answers may move us.
fn room_command(name: String, args: String, secure: &mut Secure) -> Step {
    let current = format!("#{}", secure.current_room());
    let words: Vec<&str> = args.split_whitespace().collect();
    let mut join = None;
    let args = match (name.as_str(), words.as_slice()) {
        ("part" | "members", []) => current,
        ("topic", [first, ..]) if first.starts_with('#') => args,
        ("topic", _) => format!("{current} {args}").trim_end().to_string(),
        ("kick", [_user]) => format!("{args} {current}"),
        ("join", [room, ..]) => {
            let room = room.strip_prefix('#').unwrap_or(room);
            if secure.switch_room(room) {
                return Step::Show(vec![Event::Notice(Notice::Switched {
                    room: room.to_string(),
                })]);
            }
            // An invalid name is the server's to refuse (`bad_arguments`): nothing to wait for.
            if chatd_proto::names::validate_room(room).is_ok() {
                join = Some(room.to_string());
            }
            args
        }
        _ => args,
    };
    if name == "part" {
        if let Some(room) = args.split_whitespace().next() {
            secure.asking_to_part(room.strip_prefix('#').unwrap_or(room));
        }
    }
    let frames = vec![Outbound::Frame(ClientFrame::Command {
        name,
        args,
        room: Some(secure.current_room().to_string()),
    })];
    match join {
        Some(room) => Step::Join { room, frames },
        None => Step::Send {
            events: Vec::new(),
            frames,
        },
    }
}

/// How [`send`] went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// Every frame was written.
    All,
    /// A frame was longer than the server's line limit (for a binary frame: its payload);
    /// it and the rest were not sent.
    TooLong,
    /// The connection is gone.
    Lost,
}

/// Encodes and sends `frames` in order, stopping at one over the server's line limit.
pub async fn send<S: AsyncRead + AsyncWrite>(
    conn: &mut Connection<S>,
    limits: &ServerInfo,
    frames: &[Outbound],
) -> Result<Sent> {
    for f in frames {
        // Encoded once: the length check and the write use the same bytes.
        let (encoded, len) = match f {
            Outbound::Frame(f) => json_line(f)?,
            // The envelope as sealed: no base64, and the server's cap is on the payload.
            Outbound::Envelope(envelope) if conn.binary() => {
                (binary_send(envelope), envelope.len())
            }
            Outbound::Envelope(envelope) => json_line(&ClientFrame::Send {
                data: BASE64.encode(envelope),
            })?,
        };
        if len > limits.max_line_bytes {
            return Ok(Sent::TooLong);
        }
        if conn.send_encoded(&encoded).await.is_err() {
            return Ok(Sent::Lost);
        }
    }
    Ok(Sent::All)
}

/// `frame` as a line, and its length without the newline (what the server's cap counts).
fn json_line(frame: &ClientFrame) -> Result<(Bytes, usize)> {
    let line = frame::encode(frame).context("encoding a frame")?;
    let len = line.len().saturating_sub(1);
    Ok((line, len))
}

/// What an end-to-end frame from the server means (verified messages, key notices and
/// warnings); other frames give nothing here.
pub fn events(incoming: &Incoming, secure: &mut Secure) -> Vec<Event> {
    let events = match incoming {
        Incoming::Envelope(delivered) => secure.receive_envelope(delivered),
        Incoming::Frame(frame) => frame_events(frame, secure),
    };
    let events = secure.drop_ignored(events);
    secure.shown(events)
}

/// [`events`] for one JSON frame (never an `envelope`: [`Incoming`] turns those into
/// [`Incoming::Envelope`]).
fn frame_events(frame: &ServerFrame, secure: &mut Secure) -> Vec<Event> {
    match frame {
        ServerFrame::Chain { from, device, data } => secure.receive_chain(from, *device, data),
        // Saved before the `backlog_ack` that `reply` makes of it is sent.
        ServerFrame::Backlog { more, .. } => secure.backlog_end(*more),
        ServerFrame::Rekey {
            from,
            device,
            conversation,
            chain,
            index,
        } => secure.on_rekey(RekeyRequest {
            from: from.clone(),
            device: *device,
            conversation: conversation.clone(),
            chain: chain.clone(),
            index: *index,
        }),
        ServerFrame::Device {
            user,
            fingerprint,
            key,
            event,
            vouches,
        } => match (event, key) {
            (DeviceEvent::Online, Some(key)) => {
                secure.device_online(user, *fingerprint, key, vouches)
            }
            (DeviceEvent::Online, None) => Vec::new(),
            (DeviceEvent::Offline, _) => {
                secure.device_offline(fingerprint);
                Vec::new()
            }
            (DeviceEvent::Removed, _) => secure.device_removed(user, fingerprint),
        },
        ServerFrame::Vouch { user, data } => secure.on_vouch(user, data),
        ServerFrame::Room {
            room, user, event, ..
        } => {
            secure.room_event(room, user, *event == RoomEvent::Join);
            Vec::new()
        }
        ServerFrame::Members { room } => secure.room_state(room),
        ServerFrame::Pong { nonce } => secure.pong(*nonce),
        _ => Vec::new(),
    }
}

/// The frame the client owes the server after handling `frame`, if any: stored messages
/// are acknowledged once shown (the server then deletes them).
pub fn reply(frame: &ServerFrame) -> Option<ClientFrame> {
    match frame {
        ServerFrame::Backlog { upto, .. } => Some(ClientFrame::BacklogAck { upto: *upto }),
        _ => None,
    }
}

/// What chat says, after the server's `bye`, when an administrator ended the session.
pub const ENDED_ON_PURPOSE: &str = "an administrator ended this session; chat does not reconnect on its own: run chat again to come back";

/// Whether a `bye` reason means an administrator ended the session on purpose (a kick, a
/// locked or deleted account, a revoked device key): reconnecting at once would undo it.
pub fn ended_on_purpose(reason: &str) -> bool {
    const REASONS: [&str; 4] = [
        "kicked by administrator",
        "account locked",
        "account deleted",
        "device key revoked",
    ];
    REASONS.iter().any(|r| {
        reason
            .strip_prefix(r)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with(':'))
    })
}

#[cfg(test)]
mod tests {
    use super::ended_on_purpose;

    #[test]
    fn only_an_administrators_reasons_end_for_good() {
        for reason in [
            "kicked by administrator",
            "kicked by administrator: spamming #ops",
            // chatctl kick --ban: the ban's end follows.
            "kicked by administrator: banned until 2026-12-06 08:00:00 UTC",
            "kicked by administrator: spam (banned until 2026-12-06 08:00:00 UTC)",
            "account locked",
            "account deleted",
            "device key revoked",
        ] {
            assert!(ended_on_purpose(reason), "{reason}");
        }
        for reason in [
            "server shutting down",
            "too slow: outbound queue full",
            "too many messages: rate limit exceeded repeatedly",
            "idle timeout",
            "kicked by administratorx",
            "Account locked",
            "",
        ] {
            assert!(!ended_on_purpose(reason), "{reason}");
        }
    }
}
