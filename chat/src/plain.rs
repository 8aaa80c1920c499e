//! Plain line mode: stdin lines go to the server, frames from the server are printed
//! one per line (flushed each line), for scripts, pipes and simple terminals.

use std::io::Write;
use std::time::Duration;

use anyhow::{Context, Result};
use chatd_proto::{ClientFrame, ServerFrame, frame};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;

use crate::conn::{Connection, ServerInfo};
use crate::format;
use crate::input::{self, Input};
use crate::stdin::LineReader;

/// How long to wait for `bye` after sending `quit`.
const QUIT_WAIT: Duration = Duration::from_secs(5);

/// Runs the chat until `/quit`, end of input or the server closes; returns the exit status.
///
/// 0 after our own quit (or stdin EOF), 1 when the server ended the session or the
/// connection was lost.
pub async fn run<S, W>(
    conn: &mut Connection<S>,
    me: &str,
    limits: &ServerInfo,
    input: &mut LineReader,
    out: &mut W,
) -> Result<u8>
where
    S: AsyncRead + AsyncWrite,
    W: Write,
{
    // Set once `quit` is sent: the deadline for the server's `bye`.
    let mut quitting: Option<Instant> = None;
    loop {
        let deadline = async {
            match quitting {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            frame = conn.recv() => {
                let frame = match frame {
                    Ok(Some(frame)) => frame,
                    Ok(None) | Err(_) => return Ok(lost(quitting.is_some())),
                };
                let stamp = format::local_stamp(format::frame_time(&frame));
                print_lines(out, &format::render(&frame, me, &stamp))?;
                if let ServerFrame::Bye { .. } = frame {
                    return Ok(if quitting.is_some() { 0 } else { 1 });
                }
            }
            () = deadline => return Ok(0),
            line = input.next_line(), if quitting.is_none() => {
                let line = match line {
                    Ok(Some(line)) => line,
                    Ok(None) => {
                        quitting = Some(quit(conn).await);
                        continue;
                    }
                    Err(e) => {
                        eprintln!("chat: cannot read stdin: {e}");
                        quitting = Some(quit(conn).await);
                        continue;
                    }
                };
                let parsed = input::parse(&line);
                let frame = match parsed {
                    Input::Empty => continue,
                    Input::Invalid(why) => {
                        eprintln!("chat: {why}");
                        continue;
                    }
                    Input::Quit => {
                        quitting = Some(quit(conn).await);
                        continue;
                    }
                    Input::Say { ref text } if text.len() > limits.max_text_bytes => {
                        eprintln!(
                            "chat: message not sent: it is {} bytes long, the server accepts at most {}",
                            text.len(),
                            limits.max_text_bytes
                        );
                        continue;
                    }
                    Input::Help { args } => {
                        print_lines(out, &format::client_help(&format::local_stamp(None)))?;
                        ClientFrame::Command { name: "help".into(), args }
                    }
                    Input::Say { text } => ClientFrame::Say { text },
                    Input::Command { name, args } => ClientFrame::Command { name, args },
                };
                // Commands carry their own text (a whisper's message), which the server checks;
                // here we only keep a line the server would count as a protocol error off the wire.
                // Encoded once: the length check and the write use the same bytes.
                let line = frame::encode(&frame).context("encoding a frame")?;
                if line.len().saturating_sub(1) > limits.max_line_bytes {
                    eprintln!(
                        "chat: line not sent: longer than the server's limit of {} bytes",
                        limits.max_line_bytes
                    );
                    continue;
                }
                if conn.send_line(&line).await.is_err() {
                    return Ok(lost(false));
                }
            }
        }
    }
}

/// Sends `quit` and returns the deadline for the answer.
async fn quit<S: AsyncRead + AsyncWrite>(conn: &mut Connection<S>) -> Instant {
    // A failure shows up as a closed connection, which is fine while quitting.
    let _ = conn.send(&ClientFrame::Quit).await;
    Instant::now() + QUIT_WAIT
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

fn print_lines(out: &mut impl Write, lines: &[String]) -> Result<()> {
    for line in lines {
        writeln!(out, "{line}").context("cannot write to stdout")?;
        out.flush().context("cannot write to stdout")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chatd_proto::frame::{decode, encode};
    use chatd_proto::{ErrorCode, PROTOCOL_VERSION};
    use std::io::Cursor;
    use std::sync::{Arc, Mutex};
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, DuplexStream};

    /// Records what the client sent and answers like a tiny chatd; `bye_on_quit` false
    /// means the server just closes on quit.
    async fn fake_server(
        stream: DuplexStream,
        seen: Arc<Mutex<Vec<ClientFrame>>>,
        bye_on_quit: bool,
    ) {
        let (r, mut w) = tokio::io::split(stream);
        let mut lines = BufReader::new(r).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let frame: ClientFrame = decode(&line).unwrap();
            seen.lock().unwrap().push(frame.clone());
            let replies = match frame {
                ClientFrame::Hello { .. } => vec![ServerFrame::Hello {
                    version: PROTOCOL_VERSION,
                    server: "chatd/test".into(),
                    max_line_bytes: 65536,
                    max_text_bytes: 10,
                }],
                ClientFrame::Login { user, .. } => vec![ServerFrame::LoginOk {
                    user,
                    session: 1,
                    online: vec!["alice".into()],
                }],
                ClientFrame::Say { text } => vec![ServerFrame::Message {
                    from: "bob".into(),
                    to: None,
                    text: format!("echo {text}"),
                    ts: 1_764_300_000_000,
                    action: false,
                }],
                ClientFrame::Command { name, .. } if name == "help" => {
                    vec![ServerFrame::Help { commands: vec![] }]
                }
                ClientFrame::Command { .. } => {
                    vec![ServerFrame::error(
                        ErrorCode::UnknownCommand,
                        "unknown command",
                    )]
                }
                ClientFrame::Quit if bye_on_quit => vec![ServerFrame::Bye {
                    reason: "quit".into(),
                }],
                ClientFrame::Quit => return,
                ClientFrame::Ping { .. } => vec![],
            };
            for reply in replies {
                w.write_all(&encode(&reply).unwrap()).await.unwrap();
            }
        }
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
        }
    }

    async fn session(stdin: &str, bye_on_quit: bool) -> (u8, Vec<String>, Vec<ClientFrame>) {
        let (client, server) = tokio::io::duplex(1 << 16);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn(fake_server(server, seen.clone(), bye_on_quit));
        let mut conn = Connection::new(client);
        let info = conn.hello().await.unwrap();
        conn.login("alice", "pw").await.unwrap();
        let mut input = LineReader::from_reader(Cursor::new(stdin.as_bytes().to_vec())).unwrap();
        let mut out = Vec::new();
        let code = run(&mut conn, "alice", &info, &mut input, &mut out)
            .await
            .unwrap();
        drop(conn);
        task.await.unwrap();
        let seen = seen.lock().unwrap().clone();
        (code, strip_stamps(&out), seen)
    }

    #[tokio::test]
    async fn lines_become_frames_and_quit_exits_zero() {
        let stdin = "hi\n\n//slash\n/nope args-longer-than-max-text\n/help\nthis line is too long\n/quit\nnot sent\n";
        let (code, out, seen) = session(stdin, true).await;
        assert_eq!(code, 0);
        // Replies race with the locally printed help, so check the two streams separately.
        let client_help = [
            "-- client commands:",
            "  /quit - leave the chat",
            "  /help - show this help and the server's commands",
            "  //text - send a message that starts with a slash",
        ];
        let start = out.iter().position(|l| l == client_help[0]).unwrap();
        assert_eq!(out[start..start + 4], client_help);
        let mut from_server = out.clone();
        from_server.drain(start..start + 4);
        assert_eq!(
            from_server,
            vec![
                "<bob> echo hi",
                "<bob> echo /slash",
                "!! unknown command",
                "-- server commands:",
                "-- server closed the connection: quit",
            ]
        );
        assert_eq!(
            seen[2..],
            [
                ClientFrame::Say { text: "hi".into() },
                ClientFrame::Say {
                    text: "/slash".into()
                },
                ClientFrame::Command {
                    // The server, not the client, judges a command's text.
                    name: "nope".into(),
                    args: "args-longer-than-max-text".into()
                },
                ClientFrame::Command {
                    name: "help".into(),
                    args: String::new()
                },
                ClientFrame::Quit,
            ]
        );
    }

    #[tokio::test]
    async fn eof_quits_and_close_after_quit_is_fine() {
        let (code, out, seen) = session("hi\n", false).await;
        assert_eq!(code, 0);
        assert_eq!(out, vec!["<bob> echo hi"]);
        assert_eq!(seen.last(), Some(&ClientFrame::Quit));
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
        let code = run(&mut conn, "alice", &limits(100), &mut input, &mut out)
            .await
            .unwrap();
        assert_eq!(code, 1);
        assert_eq!(
            strip_stamps(&out),
            vec!["-- server closed the connection: kicked by administrator: x"]
        );

        // The connection simply drops.
        let (client, server) = tokio::io::duplex(4096);
        drop(server);
        let mut conn = Connection::new(client);
        let (_stdin_w, stdin_r) = std::os::unix::net::UnixStream::pair().unwrap();
        let mut input = LineReader::from_reader(std::io::BufReader::new(stdin_r)).unwrap();
        let code = run(
            &mut conn,
            "alice",
            &limits(100),
            &mut input,
            &mut Vec::new(),
        )
        .await
        .unwrap();
        assert_eq!(code, 1);
    }
}
