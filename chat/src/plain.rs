//! Plain line mode: stdin lines go to the server, frames from the server are printed
//! one per line (flushed each line), for scripts, pipes and simple terminals.

use std::io::Write;
use std::time::Duration;

use anyhow::{Context, Result};
use chatd_proto::{ClientFrame, ServerFrame};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;

use crate::conn::{Connection, Incoming, ServerInfo};
use crate::dispatch::{self, Outbound, Sent, Step};
use crate::format;
use crate::joining::Joins;
use crate::screen::{Screen, Verdict};
use crate::secure::{Event, Secure};
use crate::stdin::LineReader;
use crate::text::sanitize;

/// How long to wait for `bye` after sending `quit`.
const QUIT_WAIT: Duration = Duration::from_secs(5);

/// Runs the chat until `/quit`, end of input or the server closes; returns the exit status.
///
/// 0 after our own quit (or stdin EOF), 1 when the server ended the session or the
/// connection was lost.
pub async fn run<S, W>(
    conn: &mut Connection<S>,
    secure: &mut Secure,
    limits: &ServerInfo,
    input: &mut LineReader,
    out: &mut W,
) -> Result<u8>
where
    S: AsyncRead + AsyncWrite,
    W: Write,
{
    let me = secure.me().to_string();
    // Set once `quit` is sent: the deadline for the server's `bye`.
    let mut quitting: Option<Instant> = None;
    // Stdin ended while lines wait for a join's answer: quit once they are handled.
    let mut eof = false;
    let mut joins = Joins::new();
    let mut screen = Screen::new();
    // What to say once the session is over after our own quit.
    let mut farewell: Option<&'static str> = None;
    // Pings keep the server's idle timeout from closing a quiet but live session.
    let mut keepalive = limits.keepalive().map(|every| {
        let mut i = tokio::time::interval_at(Instant::now() + every, every);
        i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        i
    });
    loop {
        let ping = async {
            match keepalive.as_mut() {
                Some(i) => {
                    i.tick().await;
                }
                None => std::future::pending().await,
            }
        };
        let deadline = async {
            match quitting {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            incoming = conn.recv() => {
                let incoming = match incoming {
                    Ok(Some(incoming)) => incoming,
                    Ok(None) | Err(_) if quitting.is_some() => return left(out, farewell),
                    Ok(None) | Err(_) => return Ok(lost(false)),
                };
                let verdict = match &incoming {
                    Incoming::Frame(frame) => screen.check(frame),
                    Incoming::Envelope(_) => Verdict::Show,
                };
                if let Verdict::Refused(warning) = verdict {
                    print_events(out, &[warning], &me)?;
                    continue;
                }
                let events = dispatch::events(&incoming, secure);
                print_events(out, &events, &me)?;
                // Chains asked for or given again by the end-to-end layer.
                for frame in secure.take_frames() {
                    if conn.send(&frame).await.is_err() {
                        return gone(out, quitting.is_some(), farewell);
                    }
                }
                // An envelope is all events; only other frames render, answer or end.
                let Incoming::Frame(frame) = incoming else {
                    continue;
                };
                // Our own quit's `bye` needs no line: leaving was said when it was sent. A
                // `bye` giving another reason (the server was stopping anyway) is still shown.
                let ours = quitting.is_some()
                    && matches!(&frame, ServerFrame::Bye { reason } if reason == "quit");
                if verdict == Verdict::Show && !ours && !dispatch::hidden(&frame, secure) {
                    let stamp = format::local_stamp(format::frame_time(&frame));
                    print_lines(out, &format::render(&frame, &stamp))?;
                }
                if let Some(reply) = dispatch::reply(&frame) {
                    // Printed first: stored messages are deleted only once shown.
                    if conn.send(&reply).await.is_err() {
                        return gone(out, quitting.is_some(), farewell);
                    }
                }
                if let ServerFrame::Bye { reason } = &frame {
                    if quitting.is_none() && dispatch::ended_on_purpose(reason) {
                        let stamp = format::local_stamp(format::frame_time(&frame));
                        let why = format!("[{stamp}] -- {}", dispatch::ENDED_ON_PURPOSE);
                        print_lines(out, &[why])?;
                    }
                    if quitting.is_some() {
                        return left(out, farewell);
                    }
                    return Ok(1);
                }
                if let Some(refused) = joins.answer(&frame, secure) {
                    print_events(out, &[refused], &me)?;
                }
                // The join was answered: what was typed meanwhile goes now, in order.
                while quitting.is_none() {
                    let Some(line) = joins.next_line() else { break };
                    match typed(&line, conn, secure, limits, &mut joins, out).await? {
                        After::Go => {}
                        After::Quit => quitting = Some(quit(conn, &mut farewell, LEAVING).await),
                        After::Lost => return Ok(lost(false)),
                    }
                }
                if eof && quitting.is_none() && !joins.busy() {
                    quitting = Some(quit(conn, &mut farewell, END_OF_INPUT).await);
                }
            }
            () = deadline => return left(out, farewell),
            () = ping => {
                if conn.send(&ClientFrame::Ping { nonce: 0 }).await.is_err() {
                    return gone(out, quitting.is_some(), farewell);
                }
            }
            line = input.next_line(), if quitting.is_none() && !eof && !joins.full() => {
                let line = match line {
                    Ok(Some(line)) => line,
                    Ok(None) if joins.busy() => {
                        eof = true;
                        continue;
                    }
                    Ok(None) => {
                        quitting = Some(quit(conn, &mut farewell, END_OF_INPUT).await);
                        continue;
                    }
                    Err(e) => {
                        eprintln!("chat: cannot read stdin: {e}");
                        quitting = Some(quit(conn, &mut farewell, LEAVING).await);
                        continue;
                    }
                };
                if joins.busy() {
                    // Said in the TUI; a script's lines need no running commentary.
                    let _ = joins.hold(line);
                    continue;
                }
                match typed(&line, conn, secure, limits, &mut joins, out).await? {
                    After::Go => {}
                    After::Quit => quitting = Some(quit(conn, &mut farewell, LEAVING).await),
                    After::Lost => return Ok(lost(false)),
                }
            }
        }
    }
}

/// What the loop does after a typed line.
enum After {
    /// Go on.
    Go,
    /// `/quit`.
    Quit,
    /// The connection is gone.
    Lost,
}

/// Handles one line the user typed (now, or held until a join's answer).
async fn typed<S, W>(
    line: &str,
    conn: &mut Connection<S>,
    secure: &mut Secure,
    limits: &ServerInfo,
    joins: &mut Joins,
    out: &mut W,
) -> Result<After>
where
    S: AsyncRead + AsyncWrite,
    W: Write,
{
    let me = secure.me().to_string();
    if let Some(why) = crate::tui::window::full_screen_only(line) {
        eprintln!("chat: {why}");
        return Ok(After::Go);
    }
    let frames = match dispatch::line(line, secure) {
        Step::Nothing => return Ok(After::Go),
        Step::Refused(why) => {
            eprintln!("chat: {why}");
            return Ok(After::Go);
        }
        Step::Quit => return Ok(After::Quit),
        Step::Show(events) => {
            print_events(out, &events, &me)?;
            return Ok(After::Go);
        }
        Step::Help { lines, ask } => {
            print_lines(out, &format::stamp_first(lines, &format::local_stamp(None)))?;
            ask.map(Outbound::Frame).into_iter().collect()
        }
        Step::Send { events, frames } => {
            print_events(out, &events, &me)?;
            frames
        }
        Step::Join { room, mut frames } => {
            frames.push(Outbound::Frame(joins.start(&room, secure)));
            frames
        }
    };
    Ok(if send_frames(conn, limits, &frames).await? {
        After::Go
    } else {
        After::Lost
    })
}

/// Sends `frames`; a line over the server's limit is not sent (and said so on stderr).
/// False when the connection is gone.
async fn send_frames<S: AsyncRead + AsyncWrite>(
    conn: &mut Connection<S>,
    limits: &ServerInfo,
    frames: &[Outbound],
) -> Result<bool> {
    match dispatch::send(conn, limits, frames).await? {
        Sent::All => Ok(true),
        Sent::TooLong => {
            eprintln!(
                "chat: line not sent: longer than the server's limit of {} bytes",
                limits.max_line_bytes
            );
            Ok(true)
        }
        Sent::Lost => Ok(false),
    }
}

fn print_events(out: &mut impl Write, events: &[Event], me: &str) -> Result<()> {
    let stamp = format::local_stamp(None);
    let lines: Vec<String> = events
        .iter()
        .map(|e| format::event(e, me, &stamp))
        .collect();
    print_lines(out, &lines)
}

/// What chat says when stdin ends.
const END_OF_INPUT: &str = "-- end of input: leaving";
/// What chat says after `/quit`.
const LEAVING: &str = "-- leaving";

/// Sends `quit`, notes what to say at the end (`why`), and returns the deadline for the
/// answer.
async fn quit<S: AsyncRead + AsyncWrite>(
    conn: &mut Connection<S>,
    farewell: &mut Option<&'static str>,
    why: &'static str,
) -> Instant {
    *farewell = Some(why);
    // A failure shows up as a closed connection, which is fine while quitting.
    let _ = conn.send(&ClientFrame::Quit).await;
    Instant::now() + QUIT_WAIT
}

/// The session is over after our own quit (`bye`, closed, or no answer): says why, status 0.
fn left(out: &mut impl Write, farewell: Option<&str>) -> Result<u8> {
    if let Some(why) = farewell {
        print_lines(out, &[format!("[{}] {why}", format::local_stamp(None))])?;
    }
    Ok(0)
}

/// The connection is gone: [`left`] after our quit, else [`lost`].
fn gone(out: &mut impl Write, quitting: bool, farewell: Option<&str>) -> Result<u8> {
    if quitting {
        left(out, farewell)
    } else {
        Ok(lost(false))
    }
}

/// The exit status for a connection that ended without `bye`.
fn lost(quitting: bool) -> u8 {
    if quitting {
        0
    } else {
        eprintln!("chat: connection lost");
        1
    }
}

/// Prints `lines`, one per line. Each piece from the network was sanitized where it was
/// worded; this is the last guard that no control character reaches the terminal.
fn print_lines(out: &mut impl Write, lines: &[String]) -> Result<()> {
    for line in lines {
        writeln!(out, "{}", sanitize(line)).context("cannot write to stdout")?;
        out.flush().context("cannot write to stdout")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peers::Peers;
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD as BASE64;
    use bytes::Bytes;
    use chatd_proto::codec::{BINARY_MARKER, binary_envelope};
    use chatd_proto::conversation::Conversation;
    use chatd_proto::e2e::{DeviceKey, Envelope};
    use chatd_proto::frame::{DeviceInfo, RoomState, decode, encode};
    use chatd_proto::{ErrorCode, PROTOCOL_VERSION, Wire, WireCodec};
    use futures_util::StreamExt;
    use std::io::Cursor;
    use std::sync::{Arc, Mutex};
    use tokio::io::{AsyncWriteExt, DuplexStream};
    use tokio_util::codec::FramedRead;

    /// How the fake chatd behaves.
    #[derive(Clone, Default)]
    struct Fake {
        /// Answers `quit` with `bye`; else it just closes.
        bye_on_quit: bool,
        /// Agrees to binary envelope frames; else it is a server older than them.
        binary: bool,
        /// Devices listed in `login_ok`.
        devices: Vec<DeviceInfo>,
        /// Raw frames sent right after `login_ok`.
        after_login: Vec<Bytes>,
        /// Rooms `/join` gets into (alice is added to the members); any other is refused.
        joinable: Vec<RoomState>,
    }

    /// What the fake server got: a JSON frame, or a binary `send`'s envelope bytes.
    #[derive(Debug, Clone, PartialEq)]
    enum Got {
        Json(ClientFrame),
        Binary(Bytes),
    }

    const ECHO_TS: u64 = 1_764_300_000_000;
    /// How long the fake server takes to answer `/join`.
    const JOIN_ANSWER_DELAY: Duration = Duration::from_millis(300);

    /// Records what the client sent and answers like a tiny chatd, reading lines and
    /// binary frames as chatd does.
    async fn fake_server(stream: DuplexStream, seen: Arc<Mutex<Vec<Got>>>, fake: Fake) {
        let (r, mut w) = tokio::io::split(stream);
        let mut frames = FramedRead::new(r, WireCodec::new(1 << 20));
        while let Some(Ok(Ok(wire))) = frames.next().await {
            let frame: ClientFrame = match wire {
                Wire::Line(line) => decode(&line).unwrap(),
                // Echoed like chatd does: the same bytes, as a binary frame.
                Wire::Send(data) => {
                    seen.lock().unwrap().push(Got::Binary(data.clone()));
                    w.write_all(&binary_envelope(ECHO_TS, &data)).await.unwrap();
                    continue;
                }
                Wire::Envelope { .. } => panic!("the client sent a binary envelope"),
            };
            seen.lock().unwrap().push(Got::Json(frame.clone()));
            let mut raw = Vec::new();
            let replies = match frame {
                ClientFrame::Hello { .. } => vec![ServerFrame::Hello {
                    version: PROTOCOL_VERSION,
                    server: "chatd/test".into(),
                    max_line_bytes: 65536,
                    max_text_bytes: 30,
                    idle_timeout_secs: 0,
                    binary: fake.binary,
                    offline_ttl_secs: None,
                    features: Vec::new(),
                    challenge: None,
                }],
                ClientFrame::Login { user, .. } => {
                    raw = fake.after_login.clone();
                    vec![ServerFrame::LoginOk {
                        user,
                        session: 1,
                        device: alice_key().fingerprint(),
                        online: vec!["alice".into()],
                        devices: fake.devices.clone(),
                        room: "lobby".into(),
                        rooms: vec![lobby()],
                    }]
                }
                // Echoed like chatd does: the same bytes, named by the session's login.
                ClientFrame::Send { data } => vec![ServerFrame::Envelope {
                    from: "alice".into(),
                    device: alice_key().fingerprint(),
                    data,
                    ts: ECHO_TS,
                }],
                ClientFrame::Chain { .. }
                | ClientFrame::Rekey { .. }
                | ClientFrame::Vouch { .. } => vec![],
                ClientFrame::Command { name, .. } if name == "help" => {
                    vec![ServerFrame::Help { commands: vec![] }]
                }
                ClientFrame::Command { name, args, .. } if name == "join" => {
                    // Slow, so that the lines after `/join` are read before its answer.
                    tokio::time::sleep(JOIN_ANSWER_DELAY).await;
                    let room = args.trim_start_matches('#');
                    match fake.joinable.iter().find(|r| r.name == room) {
                        Some(r) => {
                            let mut r = r.clone();
                            r.members.push("alice".into());
                            r.members.sort();
                            vec![ServerFrame::Members { room: r }]
                        }
                        None => vec![ServerFrame::error(
                            ErrorCode::Refused,
                            format!("#{room} is invite-only; ask its owner to /invite you"),
                        )],
                    }
                }
                ClientFrame::Command { .. } => {
                    vec![ServerFrame::error(
                        ErrorCode::UnknownCommand,
                        "unknown command",
                    )]
                }
                ClientFrame::Quit if fake.bye_on_quit => vec![ServerFrame::Bye {
                    reason: "quit".into(),
                }],
                ClientFrame::Quit => return,
                ClientFrame::Ping { nonce } => vec![ServerFrame::Pong { nonce }],
                ClientFrame::BacklogAck { .. } => vec![],
            };
            for reply in replies {
                w.write_all(&encode(&reply).unwrap()).await.unwrap();
            }
            for frame in raw {
                w.write_all(&frame).await.unwrap();
            }
        }
    }

    fn lobby() -> RoomState {
        RoomState {
            name: "lobby".into(),
            topic: String::new(),
            members: vec!["alice".into()],
            invite_only: false,
            owner: None,
        }
    }

    fn alice_key() -> DeviceKey {
        DeviceKey::from_pkcs8_pem(include_str!("../../proto/src/e2e/testdata/alice.pem")).unwrap()
    }

    fn alice() -> Secure {
        Secure::new("alice", alice_key(), Peers::in_memory(), 60_000, 30)
    }

    fn strip_stamps(out: &[u8]) -> Vec<String> {
        String::from_utf8(out.to_vec())
            .unwrap()
            .lines()
            .map(|l| match l.strip_prefix('[') {
                Some(rest) if rest.len() > 10 && &rest[8..10] == "] " => rest[10..].to_string(),
                _ => l.to_string(),
            })
            .collect()
    }

    fn limits(max_text_bytes: usize) -> ServerInfo {
        ServerInfo {
            server: "chatd/test".into(),
            max_line_bytes: 65536,
            max_text_bytes,
            idle_timeout_secs: 0,
            offline_ttl_secs: 604_800,
            vouch: false,
            rekey: false,
        }
    }

    async fn session(stdin: &str, fake: Fake) -> (u8, Vec<String>, Vec<Got>) {
        let (client, server) = tokio::io::duplex(1 << 16);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let binary = fake.binary;
        let task = tokio::spawn(fake_server(server, seen.clone(), fake));
        let mut conn = Connection::new(client);
        let info = conn.hello().await.unwrap();
        assert_eq!(conn.binary(), binary);
        let logged_in = conn.login("alice", "pw", "S0VZ").await.unwrap();
        let mut secure = alice();
        secure.on_login(&logged_in.devices, &logged_in.room, &logged_in.rooms);
        let mut input = LineReader::from_reader(Cursor::new(stdin.as_bytes().to_vec())).unwrap();
        let mut out = Vec::new();
        let code = run(&mut conn, &mut secure, &info, &mut input, &mut out)
            .await
            .unwrap();
        drop(conn);
        task.await.unwrap();
        let seen = seen.lock().unwrap().clone();
        (code, strip_stamps(&out), seen)
    }

    #[tokio::test]
    async fn lines_become_frames_and_quit_exits_zero() {
        // The same session against a server older than binary frames and one that agrees.
        for binary in [false, true] {
            let stdin = "hi\n\n//slash\n/nope args-longer-than-max-text\n/help\nthis line is too long\n/quit\nnot sent\n";
            let fake = Fake {
                bye_on_quit: true,
                binary,
                ..Fake::default()
            };
            let (code, out, seen) = session(stdin, fake).await;
            assert_eq!(code, 0);
            // Replies race with the locally printed help, so check the two streams separately.
            let client_help = format::stamp_first(format::client_help_bodies(), "x");
            let n = client_help.len();
            let start = out.iter().position(|l| l == "-- client commands:").unwrap();
            assert_eq!(out[start + 1..start + n], client_help[1..]);
            let mut from_server = out.clone();
            from_server.drain(start..start + n);
            assert_eq!(
                from_server,
                vec![
                    "<alice> hi",
                    "<alice> /slash",
                    "!! unknown command",
                    "-- server commands:",
                    "-- leaving",
                ]
            );
            // Text leaves only sealed, for the current room: two envelopes, binary exactly
            // when negotiated, then the commands.
            let texts: Vec<String> = seen[2..4]
                .iter()
                .map(|f| {
                    let env = match f {
                        Got::Json(ClientFrame::Send { data }) if !binary => {
                            Envelope::from_base64(data).unwrap()
                        }
                        Got::Binary(data) if binary => Envelope::decode(data).unwrap(),
                        other => panic!("binary {binary}: {other:?}"),
                    };
                    assert_eq!(env.header().conversation, "#lobby");
                    // The text travels only as AEAD ciphertext (tag included), never beside it.
                    // (A substring check on the base64 matched random ciphertext now and then.)
                    assert!(env.ciphertext().len() >= "hi".len() + 16);
                    env.header().sender_user.clone()
                })
                .collect();
            assert_eq!(texts, ["alice", "alice"]);
            assert_eq!(
                seen[4..],
                [
                    Got::Json(ClientFrame::Command {
                        // The server, not the client, judges a command's text.
                        name: "nope".into(),
                        args: "args-longer-than-max-text".into(),
                        room: Some("lobby".into()),
                    }),
                    Got::Json(ClientFrame::Command {
                        name: "help".into(),
                        args: String::new(),
                        room: None,
                    }),
                    Got::Json(ClientFrame::Quit),
                ]
            );
        }
    }

    #[tokio::test]
    async fn eof_quits_and_close_after_quit_is_fine() {
        let (code, out, seen) = session("hi\n", Fake::default()).await;
        assert_eq!(code, 0);
        // Said once the session is over, after what the server still sent.
        assert_eq!(out, vec!["<alice> hi", "-- end of input: leaving"]);
        assert_eq!(seen.last(), Some(&Got::Json(ClientFrame::Quit)));
    }

    fn bob_key() -> DeviceKey {
        DeviceKey::from_pkcs8_pem(include_str!("../../proto/src/e2e/testdata/bob.pem")).unwrap()
    }

    fn device_info(user: &str, key: &DeviceKey) -> DeviceInfo {
        DeviceInfo {
            user: user.into(),
            fingerprint: key.fingerprint(),
            key: BASE64.encode(key.public().to_spki_der()),
            online: true,
            vouches: Vec::new(),
        }
    }

    #[tokio::test]
    async fn a_binary_session_shows_binary_and_json_envelopes_and_survives_bad_frames() {
        // Bob, elsewhere, seals two messages for the lobby.
        let mut bob = Secure::new("bob", bob_key(), Peers::in_memory(), 60_000, 30);
        bob.on_login(&[device_info("alice", &alice_key())], "lobby", &[lobby()]);
        let lobby_conv = Conversation::Room("lobby".into());
        let say = |text: &str| crate::secure::Body {
            text: text.into(),
            action: false,
        };
        let stored = bob.seal(&lobby_conv, say("stored")).unwrap();
        let live = bob.seal(&lobby_conv, say("live")).unwrap();
        let [ClientFrame::Chain { data: chain }] = &stored.chains[..] else {
            panic!("{:?}", stored.chains)
        };
        let from_bob = |frame: ServerFrame| encode(&frame).unwrap();
        // The server's time agrees with the signed one: no mark on the line.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let fake = Fake {
            bye_on_quit: true,
            binary: true,
            devices: vec![device_info("bob", &bob_key())],
            after_login: vec![
                from_bob(ServerFrame::Chain {
                    from: "bob".into(),
                    device: bob_key().fingerprint(),
                    data: chain.clone(),
                }),
                // Stored while alice was offline: replayed as JSON on a binary session too.
                from_bob(ServerFrame::Envelope {
                    from: "bob".into(),
                    device: bob_key().fingerprint(),
                    data: BASE64.encode(&stored.envelope),
                    ts: now,
                }),
                // Junk in a well-formed frame, then frames that are not well formed.
                binary_envelope(now, b"junk"),
                Bytes::from_static(&[BINARY_MARKER, b'Z', 0, 0, 0, 1, b'\n']),
                Bytes::from_static(&[BINARY_MARKER, b'E', 0, 0, 0, 2, 0, 0]),
                binary_envelope(now, &live.envelope),
            ],
            ..Fake::default()
        };
        let (code, out, seen) = session("", fake).await;
        assert_eq!(code, 0);
        assert_eq!(out.len(), 4, "{out:?}");
        assert_eq!(out[0], "<bob> stored");
        assert!(
            out[1].starts_with("!! dropped a message: it cannot be read ("),
            "{out:?}"
        );
        assert_eq!(out[2..], ["<bob> live", "-- end of input: leaving"]);
        assert!(seen.iter().all(|g| matches!(g, Got::Json(_))), "{seen:?}");
    }

    #[tokio::test]
    async fn an_envelope_is_sent_binary_only_when_negotiated_and_within_the_limit() {
        for binary in [false, true] {
            let (client, server) = tokio::io::duplex(1 << 16);
            let seen = Arc::new(Mutex::new(Vec::new()));
            let fake = Fake {
                binary,
                ..Fake::default()
            };
            let task = tokio::spawn(fake_server(server, seen.clone(), fake));
            let mut conn = Connection::new(client);
            let info = conn.hello().await.unwrap();
            // Under the 65536-byte limit as binary; not once base64 and JSON are added.
            let big = Outbound::Envelope(Bytes::from(vec![7; 50_000]));
            let sent = dispatch::send(&mut conn, &info, std::slice::from_ref(&big)).await;
            let want = if binary { Sent::All } else { Sent::TooLong };
            assert_eq!(sent.unwrap(), want);
            let over = Outbound::Envelope(Bytes::from(vec![7; 65_537]));
            let sent = dispatch::send(&mut conn, &info, &[over]).await;
            assert_eq!(sent.unwrap(), Sent::TooLong);
            let small = Outbound::Envelope(Bytes::from_static(b"tiny"));
            let sent = dispatch::send(&mut conn, &info, &[small]).await;
            assert_eq!(sent.unwrap(), Sent::All);
            conn.send(&ClientFrame::Quit).await.unwrap();
            task.await.unwrap();
            let sends: Vec<Got> = seen.lock().unwrap()[1..].to_vec();
            let tiny = Bytes::from_static(b"tiny");
            let want = if binary {
                vec![Got::Binary(Bytes::from(vec![7; 50_000])), Got::Binary(tiny)]
            } else {
                vec![Got::Json(ClientFrame::Send {
                    data: BASE64.encode(&tiny),
                })]
            };
            assert_eq!(sends[..sends.len() - 1], want);
        }
    }

    #[tokio::test]
    async fn server_bye_or_drop_exits_one() {
        // The server kicks us while we are idle.
        let (client, server) = tokio::io::duplex(4096);
        let mut conn = Connection::new(client);
        let (_r, mut w) = tokio::io::split(server);
        w.write_all(
            &encode(&ServerFrame::Bye {
                reason: "kicked by administrator: x".into(),
            })
            .unwrap(),
        )
        .await
        .unwrap();
        let (_stdin_w, stdin_r) = std::os::unix::net::UnixStream::pair().unwrap();
        let mut input = LineReader::from_reader(std::io::BufReader::new(stdin_r)).unwrap();
        let mut out = Vec::new();
        let code = run(&mut conn, &mut alice(), &limits(100), &mut input, &mut out)
            .await
            .unwrap();
        assert_eq!(code, 1);
        assert_eq!(
            strip_stamps(&out),
            vec![
                "-- server closed the connection: kicked by administrator: x",
                "-- an administrator ended this session; chat does not reconnect on its own: run chat again to come back",
            ]
        );

        // The connection simply drops.
        let (client, server) = tokio::io::duplex(4096);
        drop(server);
        let mut conn = Connection::new(client);
        let (_stdin_w, stdin_r) = std::os::unix::net::UnixStream::pair().unwrap();
        let mut input = LineReader::from_reader(std::io::BufReader::new(stdin_r)).unwrap();
        let code = run(
            &mut conn,
            &mut alice(),
            &limits(100),
            &mut input,
            &mut Vec::new(),
        )
        .await
        .unwrap();
        assert_eq!(code, 1);
    }

    /// `/join` then lines, and what a hostile server's text looks like on stdout.
    mod join;
}
