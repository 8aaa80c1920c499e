//! One client connection's framing: reading frames (and counting the protocol violations
//! the codec and the JSON decoder find), queueing frames for the writer task, the idle
//! timeout, and how a session ends ([`Ending`]), with the goodbye and the final flush.

use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use chatd_proto::frame::{self, ClientFrame, ServerFrame};
use chatd_proto::{ErrorCode, LineError, Wire, WireCodec};
use futures_util::{FutureExt, StreamExt};
use tokio::io::{ReadHalf, WriteHalf};
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::hub::{Hub, SessionId};
use crate::live::Live;
use crate::mailbox::{Closer, Mailbox};
use crate::outbox::Outbox;
use crate::socket::Socket;

/// Read buffer of a new connection, for `hello` and `login` (it doubles as a line needs more).
/// Between frames a connection holds none (docs/PERFORMANCE.md, idle memory).
const FIRST_READ_CAPACITY: usize = 256;

/// How long a closing session waits for its last frames to reach the client.
const FLUSH_GRACE: Duration = Duration::from_secs(2);

/// The TLS stream of a client connection.
pub(super) type Tls = tokio_rustls::server::TlsStream<Socket>;

/// Why the connection is ending, for the peer's `bye` and the presence notice.
pub(super) struct Ending {
    /// Sent to the client in `bye`, if the client is still there to read it.
    bye: Option<String>,
    /// Shown to others in the leave notice.
    presence: String,
}

impl Ending {
    /// The client is told (`bye`) and others see the same reason.
    pub(super) fn both(reason: &str) -> Self {
        Ending {
            bye: Some(reason.to_string()),
            presence: reason.to_string(),
        }
    }

    /// The client is gone: only others are told.
    pub(super) fn gone(reason: &str) -> Self {
        Ending {
            bye: None,
            presence: reason.to_string(),
        }
    }
}

/// What the reader hands on: a JSON frame, or a binary `send` (the envelope bytes).
pub(super) enum Incoming {
    Frame(ClientFrame),
    Envelope(Bytes),
}

/// What the frame reader yields: a frame or what the codec refused, a read error, or None at
/// the end of the stream.
type ReadItem = Option<Result<Result<Wire, LineError>, std::io::Error>>;

/// A client connection after the TLS handshake: the read half framed, the write half in a
/// writer task fed by the session's queue.
pub(super) struct Connection {
    frames: FramedRead<ReadHalf<Tls>, WireCodec>,
    mailbox: Mailbox,
    writer: tokio::task::JoinHandle<()>,
    peer: SocketAddr,
    config: Arc<Live<Config>>,
    shutdown: CancellationToken,
    protocol_errors: u32,
    /// A frame read ahead while gathering a run of envelopes, next for
    /// [`Connection::next_frame`] (boxed: every idle connection carries this field).
    peeked: Option<Box<ReadItem>>,
}

impl Connection {
    /// Frames `r` and starts the writer task on `w`.
    pub(super) fn new(
        r: ReadHalf<Tls>,
        w: WriteHalf<Tls>,
        peer: SocketAddr,
        config: Arc<Live<Config>>,
        shutdown: CancellationToken,
    ) -> Self {
        let limits = &config.limits;
        let frames = FramedRead::with_capacity(
            r,
            WireCodec::new(limits.max_line_bytes.get()),
            FIRST_READ_CAPACITY,
        );
        let outbox = Arc::new(Outbox::with_bytes(
            limits.outbound_queue.get(),
            limits.queue_bytes(),
        ));
        let writer = tokio::spawn(crate::writer::write_loop(
            w,
            Arc::clone(&outbox),
            tracing::Span::current(),
        ));
        Connection {
            frames,
            mailbox: Mailbox::new(outbox, Closer::default()),
            writer,
            peer,
            config,
            shutdown,
            protocol_errors: 0,
            peeked: None,
        }
    }

    /// The client's address.
    pub(super) fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// The queue the writer task drains.
    pub(super) fn outbox(&self) -> &Arc<Outbox> {
        self.mailbox.outbox()
    }

    /// How others end this session.
    pub(super) fn closer(&self) -> &Closer {
        self.mailbox.closer()
    }

    /// Queues a frame for this client; a full queue ends the session as too slow.
    pub(super) fn send(&self, frame: &ServerFrame) {
        match frame::encode(frame) {
            // A refused line closed the session; its reader sees that next.
            Ok(line) => drop(self.mailbox.push(line, 1)),
            Err(e) => tracing::error!(error = %e, "cannot serialize frame"),
        }
    }

    /// Queues an error frame.
    pub(super) fn error(&self, code: ErrorCode, message: impl Into<String>) {
        self.send(&ServerFrame::error(code, message));
    }

    /// Tells the client about a protocol violation and counts it; too many end the session.
    pub(super) fn violation(&mut self, code: ErrorCode, message: String) -> ControlFlow<Ending> {
        self.protocol_errors += 1;
        tracing::debug!(?code, count = self.protocol_errors, "protocol violation");
        self.error(code, message);
        if self.protocol_errors >= self.config.limits.max_protocol_errors.get() {
            return ControlFlow::Break(Ending::both("too many protocol errors"));
        }
        ControlFlow::Continue(())
    }

    /// Why the session must end now that its closer fired.
    fn closed(&self) -> Ending {
        let reason = self.closer().reason().unwrap_or_else(|| "closed".into());
        Ending::both(&reason)
    }

    /// Runs `work` unless the session is closed from elsewhere or the server shuts down first.
    pub(super) async fn unless_ended<T>(&self, work: impl Future<Output = T>) -> Result<T, Ending> {
        tokio::select! {
            out = work => Ok(out),
            _ = self.closer().closed() => Err(self.closed()),
            _ = self.shutdown.cancelled() => Err(Ending::both("server shutting down")),
        }
    }

    /// Frees the read buffer once nothing is left in it: a connection spends most of its life
    /// waiting for the next frame, and would hold the buffer (grown to its longest line) all
    /// that time. The next read starts small and doubles; a binary frame's header reserves
    /// the rest of the frame at once.
    fn release_read_buffer(&mut self) {
        let buf = self.frames.read_buffer_mut();
        if buf.is_empty() && buf.capacity() > 0 {
            *buf = BytesMut::new();
        }
    }

    /// Waits for what the frame reader yields next, unless the connection must end first
    /// (closed, shutting down, idle too long).
    async fn read_item(&mut self) -> Result<ReadItem, Ending> {
        tokio::select! {
            item = self.frames.next() => Ok(item),
            _ = self.mailbox.closer().closed() => Err(self.closed()),
            _ = self.shutdown.cancelled() => Err(Ending::both("server shutting down")),
            // Any line, even a blank one, restarts the clock.
            () = tokio::time::sleep(self.config.limits.idle_timeout()) => {
                tracing::info!(peer = %self.peer, "closing an idle connection");
                Err(Ending::both("idle timeout: nothing received"))
            }
        }
    }

    /// Reads the next frame, answering (and counting) what is not one.
    pub(super) async fn next_frame(&mut self) -> Result<Incoming, Ending> {
        loop {
            let item = match self.peeked.take() {
                Some(item) => *item,
                None => self.read_item().await?,
            };
            let refused = match item {
                None => return Err(Ending::gone("disconnected")),
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "read failed");
                    return Err(Ending::gone("disconnected"));
                }
                Some(Ok(Err(LineError::TooLong { max }))) => (
                    ErrorCode::FrameTooLong,
                    format!("line longer than {max} bytes"),
                ),
                Some(Ok(Err(LineError::NotUtf8))) => {
                    (ErrorCode::NotUtf8, "line is not valid UTF-8".into())
                }
                Some(Ok(Err(e @ (LineError::UnknownBinary { .. } | LineError::ShortBinary)))) => {
                    (ErrorCode::BadFrame, format!("bad frame: {e}"))
                }
                Some(Ok(Ok(Wire::Send(envelope)))) => {
                    self.release_read_buffer();
                    return Ok(Incoming::Envelope(envelope));
                }
                Some(Ok(Ok(Wire::Envelope { .. }))) => (
                    ErrorCode::BadFrame,
                    "bad frame: a binary envelope frame goes from server to client; send 'S' frames".into(),
                ),
                Some(Ok(Ok(Wire::Line(line)))) => {
                    self.release_read_buffer();
                    if line.trim().is_empty() {
                        continue; // blank lines are keepalives for hand-typed sessions
                    }
                    match frame::decode::<ClientFrame>(&line) {
                        Ok(f) => return Ok(Incoming::Frame(f)),
                        Err(e) => (ErrorCode::BadFrame, describe_bad_frame(&e)),
                    }
                }
            };
            if let ControlFlow::Break(ending) = self.violation(refused.0, refused.1) {
                return Err(ending);
            }
        }
    }

    /// The next frame if it is a binary `send` that was already read and `admit` lets it
    /// through (the rate limit); anything else already read is kept for
    /// [`Connection::next_frame`].
    pub(super) fn buffered_send(&mut self, admit: impl FnOnce() -> bool) -> Option<Bytes> {
        // Polled once: None when the next frame is not here yet (it may read what the socket
        // already holds, never waits for more).
        let item = self.frames.next().now_or_never()?;
        match item {
            Some(Ok(Ok(Wire::Send(envelope)))) if admit() => {
                self.release_read_buffer();
                Some(envelope)
            }
            other => {
                self.peeked = Some(Box::new(other));
                None
            }
        }
    }

    /// Leaves the hub (if `session` registered), says goodbye if the client can still hear
    /// it, and flushes.
    pub(super) async fn finish(self, hub: &Hub, session: Option<SessionId>, ending: Ending) {
        if let Some(id) = session {
            hub.unregister(id, &ending.presence);
            tracing::info!(target: crate::repeats::AUDIT, session = id, reason = ?ending.presence, "session ended");
        }
        if let Some(reason) = ending.bye {
            // Never waits: a full queue means the client is not reading anyway.
            if let Ok(line) = frame::encode(&ServerFrame::Bye { reason }) {
                let _ = self.outbox().push(line);
            }
        }
        self.outbox().finish();
        drop(self.frames);
        let mut writer = self.writer;
        if tokio::time::timeout(FLUSH_GRACE, &mut writer)
            .await
            .is_err()
        {
            writer.abort();
        }
    }
}

/// Says what is wrong with a frame without quoting the peer's values: serde's own message
/// may contain a fragment of the line (a password, a message), and error frames are logged in
/// the trace-level wire capture.
fn describe_bad_frame(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    let column = e.column();
    match e.classify() {
        Category::Syntax | Category::Eof | Category::Io => {
            format!("bad frame: not a JSON object (column {column})")
        }
        Category::Data => {
            let msg = e.to_string();
            let core = msg.split(" at line ").next().unwrap_or_default();
            if let Some(field) = core.strip_prefix("missing field ") {
                // The field name comes from our schema, not from the peer.
                format!("bad frame: missing field {field}")
            } else if core.starts_with("unknown variant") || core.contains("tag `type`") {
                "bad frame: unknown or missing frame type".to_string()
            } else {
                format!("bad frame: a field has the wrong type or value (column {column})")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn describe(line: &str) -> String {
        describe_bad_frame(&frame::decode::<ClientFrame>(line).unwrap_err())
    }

    #[test]
    fn bad_frame_messages_never_quote_the_peer() {
        assert_eq!(
            describe(r#"{"type":"send"}"#),
            "bad frame: missing field `data`"
        );
        assert_eq!(
            describe(r#"{"type":"teleport-SECRET"}"#),
            "bad frame: unknown or missing frame type"
        );
        assert_eq!(describe(r#"{"nope":1}"#), "bad frame: missing field `type`");
        let m = describe(r#"{"type":"ping","nonce":"nonce-SECRET"}"#);
        assert!(
            m.starts_with("bad frame: a field has the wrong type"),
            "{m}"
        );
        let m = describe(r#"{"type":"login","user":"a","password":"pw-SECRET""#);
        assert!(m.starts_with("bad frame: not a JSON object"), "{m}");
        for line in [r#"[1,"SECRET"]"#, r#"{"type":"say","text":"SECRET"}"#] {
            assert!(!describe(line).contains("SECRET"), "{line}");
        }
    }
}
