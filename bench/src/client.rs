//! Bench clients on the wire: connecting and logging in (through chatd-testkit, which the
//! end-to-end tests share), sending pre-sealed envelopes, and quitting; and the bare
//! connection setup the connect-rate mode times. Reading is reader.rs's.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, anyhow};
use chatd_proto::frame::ClientFrame;
use chatd_testkit::{Error, Tls};
use tokio::io::{AsyncWriteExt, WriteHalf};
use tokio_rustls::TlsConnector;

use crate::cli::WireMode;
use crate::incoming::{Frame, Incoming};
use crate::run::Run;

/// Longest wait for one connection + login.
const LOGIN_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest wait for the server's `bye` after a `quit`.
const QUIT_TIMEOUT: Duration = Duration::from_secs(10);

/// Connects, says hello (asking for binary frames when `wire` says so) and logs in as `user`
/// with `device_key` (base64 SPKI DER); returns the stream and anything read past `login_ok`.
pub async fn login(
    addr: SocketAddr,
    connector: &TlsConnector,
    user: &str,
    password: &str,
    device_key: &str,
    wire: WireMode,
) -> anyhow::Result<(Tls, Incoming)> {
    let login = async {
        let mut tls = chatd_testkit::connect(addr, connector).await?;
        let login = chatd_testkit::login(user, password, device_key);
        let read = chatd_testkit::log_in(&mut tls, hello_frame(wire), login)
            .await
            .map_err(|e| match e {
                Error::Refused(line) => anyhow!("login of {user} refused: {line}"),
                Error::ClosedDuringLogin => {
                    anyhow!("server closed the connection during login of {user}")
                }
                other => explained(other),
            })?;
        anyhow::Ok((tls, Incoming::after_login(&read, wire)))
    };
    tokio::time::timeout(LOGIN_TIMEOUT, login)
        .await
        .with_context(|| format!("login of {user} timed out"))?
}

/// Says `quit` on a logged-in connection and reads (skipping whatever else arrives) until the
/// server's `bye` or the end of the stream, then closes our side. Waiting for the `bye` means
/// the server has ended the session before the caller connects again.
pub async fn quit(mut tls: Tls, mut incoming: Incoming) -> anyhow::Result<()> {
    let bye = async {
        chatd_testkit::write_frames(&mut tls, &[ClientFrame::Quit]).await?;
        loop {
            let bye = incoming.drain(
                |frame, _| matches!(frame, Frame::Line(l) if l.starts_with(br#"{"type":"bye""#)),
            )?;
            if bye {
                return anyhow::Ok(());
            }
            if incoming.fill(&mut tls).await? == 0 {
                return Ok(());
            }
        }
    };
    tokio::time::timeout(QUIT_TIMEOUT, bye)
        .await
        .context("no bye within 10 s of quit")??;
    let _ = tls.shutdown().await;
    Ok(())
}

/// The bench's `hello`, asking for binary frames when `wire` says so.
fn hello_frame(wire: WireMode) -> ClientFrame {
    chatd_testkit::hello(
        &format!("chat-bench/{}", env!("CARGO_PKG_VERSION")),
        wire.binary(),
    )
}

/// A testkit error for the bench's user: a server that would not do binary frames can still be
/// measured with JSON lines.
fn explained(e: Error) -> anyhow::Error {
    match e {
        Error::NoBinary { .. } => anyhow!("{e}; run with --wire json"),
        other => other.into(),
    }
}

/// One full connection setup without login: TCP, TLS handshake (certificate pinned), `hello`
/// and the server's `hello` back (agreeing to binary frames if `wire` asks), then a clean close.
pub async fn handshake(
    addr: SocketAddr,
    connector: &TlsConnector,
    wire: WireMode,
) -> anyhow::Result<()> {
    let setup = async {
        let mut tls = chatd_testkit::connect(addr, connector).await?;
        chatd_testkit::greet(&mut tls, hello_frame(wire))
            .await
            .map_err(explained)?;
        let _ = tls.shutdown().await;
        Ok(())
    };
    tokio::time::timeout(LOGIN_TIMEOUT, setup)
        .await
        .context("connection setup timed out")?
}

/// Sends the pre-sealed `frames` (`send` frames, chain index 0, 1, ...) as sender `id`, one
/// every `interval` (starting after `offset`), or as fast as the connection takes them; with a
/// `window`, never more than that many messages ahead of the last one every receiver has.
/// Each message's send instant goes to [`Run::sent_ns`] just before it is written.
pub async fn send_loop(
    mut wr: WriteHalf<Tls>,
    id: usize,
    frames: Vec<Vec<u8>>,
    pacing: Option<(Duration, Duration)>,
    window: Option<u64>,
    run: Arc<Run>,
) -> std::io::Result<()> {
    let begin = tokio::time::Instant::now();
    let sent = run.sent_ns.get(id);
    for (index, frame) in frames.iter().enumerate() {
        let seq = index as u64 + 1;
        if let Some((interval, offset)) = pacing {
            let n = u32::try_from(index).unwrap_or(u32::MAX);
            tokio::time::sleep_until(begin + offset + interval.saturating_mul(n)).await;
        }
        if let Some(window) = window {
            run.wait_window(id, seq, window).await;
            if run.stopping() {
                return Ok(());
            }
        }
        if let Some(slot) = sent.and_then(|s| s.get(index)) {
            // 0 means "not sent"; a send at the very origin is recorded 1 ns late.
            slot.store(run.now_ns().max(1), Ordering::Release);
        }
        wr.write_all(frame).await?;
        wr.flush().await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the bench makes of the server's `hello` line when it asked as `wire` says.
    fn check_hello(line: &[u8], wire: WireMode) -> anyhow::Result<()> {
        chatd_testkit::check_hello(line, wire.binary()).map_err(explained)
    }

    #[test]
    fn hello_must_agree_to_binary_when_asked() {
        let agreed = br#"{"type":"hello","version":2,"server":"chatd/0","max_line_bytes":65536,"max_text_bytes":4096,"binary":true}"#;
        let refused = br#"{"type":"hello","version":2,"server":"chatd/0","max_line_bytes":65536,"max_text_bytes":4096}"#;
        assert!(check_hello(agreed, WireMode::Binary).is_ok());
        let e = check_hello(refused, WireMode::Binary)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("did not agree") && e.contains("--wire json"),
            "{e}"
        );
        assert!(check_hello(refused, WireMode::Json).is_ok());
        assert!(check_hello(b"{\"type\":\"hello\"", WireMode::Binary).is_err());
        assert!(matches!(
            hello_frame(WireMode::Binary),
            ClientFrame::Hello { binary: true, .. }
        ));
        assert!(matches!(
            hello_frame(WireMode::Json),
            ClientFrame::Hello { binary: false, .. }
        ));
    }
}
