//! One client connection: TLS handshake, hello and login under timeouts, then the chat loop.
//!
//! The reader runs in this task; a separate writer task drains the session's bounded queue
//! of pre-serialized lines (see [`crate::hub`]), so replies and broadcasts share one order.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use chatd_proto::frame::{self, ClientFrame, ServerFrame};
use chatd_proto::{ErrorCode, LineCodec, LineError, PROTOCOL_VERSION};
use futures_util::StreamExt;
use tokio::io::{AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::codec::FramedRead;
use tracing::Instrument;

use crate::commands::{self, Ctx, Role};
use crate::hub::Closer;
use crate::server::Shared;
use crate::store::users;

/// How long a closing session waits for its last frames to reach the client.
const FLUSH_GRACE: Duration = Duration::from_secs(2);

/// Serves one accepted TCP connection to the end.
pub async fn serve(stream: TcpStream, peer: SocketAddr, shared: Arc<Shared>) {
    let span = tracing::info_span!("session", %peer, user = tracing::field::Empty);
    async move {
        let acceptor = shared.acceptor();
        let handshake = tokio::time::timeout(
            shared.config.limits.handshake_timeout(),
            acceptor.accept(stream),
        );
        let tls = tokio::select! {
            result = handshake => match result {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!("TLS handshake timed out");
                    return;
                }
            },
            // A peer that never finishes TLS must not hold up shutdown.
            _ = shared.shutdown.cancelled() => return,
        };
        let (r, w) = tokio::io::split(tls);
        let mut session = Session::new(r, w, peer, shared);
        session.run().await;
        session.finish().await;
    }
    .instrument(span)
    .await
}

/// Why the connection is ending, for the peer's `bye` and the presence notice.
struct Ending {
    /// Sent to the client in `bye`, if the client is still there to read it.
    bye: Option<String>,
    /// Shown to others in the leave notice.
    presence: String,
}

impl Ending {
    fn both(reason: &str) -> Self {
        Ending {
            bye: Some(reason.to_string()),
            presence: reason.to_string(),
        }
    }
    fn gone(reason: &str) -> Self {
        Ending {
            bye: None,
            presence: reason.to_string(),
        }
    }
}

struct LoggedIn {
    user: String,
    role: Role,
}

type Tls = tokio_rustls::server::TlsStream<TcpStream>;

struct Session {
    frames: FramedRead<ReadHalf<Tls>, LineCodec>,
    tx: mpsc::Sender<Bytes>,
    writer: tokio::task::JoinHandle<()>,
    closer: Closer,
    peer: SocketAddr,
    shared: Arc<Shared>,
    protocol_errors: u32,
    login_failures: u32,
    hello_done: bool,
    id: Option<u64>,
    ending: Option<Ending>,
}

impl Session {
    fn new(r: ReadHalf<Tls>, w: WriteHalf<Tls>, peer: SocketAddr, shared: Arc<Shared>) -> Self {
        let limits = &shared.config.limits;
        let frames = FramedRead::new(r, LineCodec::new(limits.max_line_bytes.get()));
        let (tx, rx) = mpsc::channel(limits.outbound_queue.get());
        let writer = tokio::spawn(write_loop(w, rx).in_current_span());
        Session {
            frames,
            tx,
            writer,
            closer: Closer::default(),
            peer,
            shared,
            protocol_errors: 0,
            login_failures: 0,
            hello_done: false,
            id: None,
            ending: None,
        }
    }

    /// Queues a frame for this client; a full queue ends the session as too slow.
    fn send(&self, frame: &ServerFrame) {
        match frame::encode(frame) {
            Ok(line) => {
                if let Err(mpsc::error::TrySendError::Full(_)) = self.tx.try_send(line) {
                    self.closer.close("too slow: outbound queue full");
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot serialize frame"),
        }
    }

    fn error(&self, code: ErrorCode, message: impl Into<String>) {
        self.send(&ServerFrame::error(code, message));
    }

    /// Counts a protocol violation; true when the connection must close.
    fn violation(&mut self, code: ErrorCode, message: String) -> bool {
        self.protocol_errors += 1;
        tracing::debug!(?code, count = self.protocol_errors, "protocol violation");
        self.error(code, message);
        if self.protocol_errors >= self.shared.config.limits.max_protocol_errors.get() {
            self.ending = Some(Ending::both("too many protocol errors"));
            return true;
        }
        false
    }

    /// Reads the next frame; None when the connection must end (`self.ending` says why).
    async fn next_frame(&mut self) -> Option<ClientFrame> {
        loop {
            let item = tokio::select! {
                item = self.frames.next() => item,
                _ = self.closer.closed() => {
                    let reason = self.closer.reason().unwrap_or_else(|| "closed".into());
                    self.ending = Some(Ending::both(&reason));
                    return None;
                }
                _ = self.shared.shutdown.cancelled() => {
                    self.ending = Some(Ending::both("server shutting down"));
                    return None;
                }
            };
            let line = match item {
                None => {
                    self.ending = Some(Ending::gone("disconnected"));
                    return None;
                }
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "read failed");
                    self.ending = Some(Ending::gone("disconnected"));
                    return None;
                }
                Some(Ok(Err(LineError::TooLong { max }))) => {
                    if self.violation(
                        ErrorCode::FrameTooLong,
                        format!("line longer than {max} bytes"),
                    ) {
                        return None;
                    }
                    continue;
                }
                Some(Ok(Err(LineError::NotUtf8))) => {
                    if self.violation(ErrorCode::NotUtf8, "line is not valid UTF-8".into()) {
                        return None;
                    }
                    continue;
                }
                Some(Ok(Ok(line))) => line,
            };
            if line.trim().is_empty() {
                continue; // blank lines are keepalives for hand-typed sessions
            }
            match frame::decode::<ClientFrame>(&line) {
                Ok(f) => return Some(f),
                Err(e) => {
                    // serde's message may quote a fragment of the line; only its sender sees it.
                    if self.violation(ErrorCode::BadFrame, format!("bad frame: {e}")) {
                        return None;
                    }
                }
            }
        }
    }

    async fn run(&mut self) {
        let login_timeout = self.shared.config.limits.login_timeout();
        let login = match tokio::time::timeout(login_timeout, self.login_phase()).await {
            Ok(Some(login)) => login,
            Ok(None) => return,
            Err(_) => {
                tracing::info!("login timed out");
                self.ending = Some(Ending::both("login timed out"));
                return;
            }
        };
        let reg = match self.shared.hub.register(
            &login.user,
            self.peer,
            self.tx.clone(),
            self.closer.clone(),
        ) {
            Ok(reg) => reg,
            Err(e) => {
                self.error(ErrorCode::TooManySessions, e.to_string());
                self.ending = Some(Ending::both("too many sessions"));
                return;
            }
        };
        self.id = Some(reg.id);
        tracing::Span::current().record("user", login.user.as_str());
        tracing::info!(session = reg.id, "logged in");
        self.send(&ServerFrame::LoginOk {
            user: login.user.clone(),
            session: reg.id,
            online: reg.online,
        });
        self.chat_loop(reg.id, &login).await;
    }

    /// `hello` then `login`; returns the account on success.
    async fn login_phase(&mut self) -> Option<LoggedIn> {
        loop {
            let frame = self.next_frame().await?;
            match frame {
                ClientFrame::Hello { version, client } => {
                    if self.hello_done {
                        self.error(ErrorCode::AlreadyLoggedIn, "hello was already sent");
                        continue;
                    }
                    if version != PROTOCOL_VERSION {
                        self.error(
                            ErrorCode::UnsupportedVersion,
                            format!("this server speaks protocol version {PROTOCOL_VERSION}, not {version}"),
                        );
                        self.ending = Some(Ending::both("unsupported protocol version"));
                        return None;
                    }
                    // Escaped like the login name: an unauthenticated peer must not forge log lines.
                    let shown: String = client.chars().take(64).collect();
                    tracing::debug!(client = %shown.escape_debug(), "hello");
                    self.hello_done = true;
                    let limits = &self.shared.config.limits;
                    self.send(&ServerFrame::Hello {
                        version: PROTOCOL_VERSION,
                        server: format!("chatd/{}", env!("CARGO_PKG_VERSION")),
                        max_line_bytes: limits.max_line_bytes.get(),
                        max_text_bytes: limits.max_text_bytes.get(),
                    });
                }
                ClientFrame::Login { user, password } => {
                    if !self.hello_done {
                        if self.violation(ErrorCode::NotLoggedIn, "send hello first".into()) {
                            return None;
                        }
                        continue;
                    }
                    if let Some(login) = self.check_login(user, password).await {
                        return Some(login);
                    }
                    if self.login_failures >= self.shared.config.limits.max_login_failures.get() {
                        self.ending = Some(Ending::both("too many failed logins"));
                        return None;
                    }
                }
                ClientFrame::Ping { nonce } => self.send(&ServerFrame::Pong { nonce }),
                ClientFrame::Quit => {
                    self.ending = Some(Ending::both("quit"));
                    return None;
                }
                other => {
                    let msg = format!("log in before sending {}", other.kind());
                    if self.violation(ErrorCode::NotLoggedIn, msg) {
                        return None;
                    }
                }
            }
        }
    }

    /// Verifies a password; unknown, locked and wrong all look the same to the client.
    async fn check_login(&mut self, user: String, password: String) -> Option<LoggedIn> {
        let valid_name = chatd_proto::names::validate_username(&user).is_ok();
        let creds = if valid_name {
            let name = user.clone();
            match self
                .shared
                .store
                .run(move |c| users::credentials(c, &name))
                .await
            {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(error = %e, "login: database error");
                    self.error(
                        ErrorCode::Internal,
                        "the server could not check your login; try again later",
                    );
                    return None;
                }
            }
        } else {
            None
        };
        // Always run argon2 so that timing does not reveal which accounts exist.
        let hash = creds.as_ref().map_or_else(
            || crate::password::DUMMY_HASH.to_string(),
            |c| c.password_hash.clone(),
        );
        let matches = crate::password::verify(password, hash).await;
        let shown: String = user.chars().take(40).collect();
        match creds {
            Some(c) if matches && !c.locked => Some(LoggedIn {
                user,
                role: if c.admin { Role::Admin } else { Role::User },
            }),
            other => {
                self.login_failures += 1;
                let why = match other {
                    None => "unknown user",
                    Some(c) if c.locked => "account locked",
                    Some(_) => "wrong password",
                };
                tracing::warn!(peer = %self.peer, user = %shown.escape_debug(), why, "login failed");
                self.error(ErrorCode::InvalidCredentials, "invalid credentials");
                None
            }
        }
    }

    async fn chat_loop(&mut self, id: u64, login: &LoggedIn) {
        while let Some(frame) = self.next_frame().await {
            match frame {
                ClientFrame::Say { text } => {
                    if let Err(e) = commands::check_text(&text, &self.shared.config.limits) {
                        self.send(&e.to_frame());
                        continue;
                    }
                    let msg = ServerFrame::Message {
                        from: login.user.clone(),
                        to: None,
                        text,
                        ts: commands::now_millis(),
                        action: false,
                    };
                    // Echoed to the sender too: the echo confirms delivery, carries the
                    // server's timestamp, and reaches the user's other sessions.
                    self.shared.hub.broadcast(&msg, None);
                }
                ClientFrame::Command { name, args } => {
                    let ctx = Ctx {
                        hub: &self.shared.hub,
                        store: &self.shared.store,
                        registry: &self.shared.registry,
                        limits: &self.shared.config.limits,
                        session: id,
                        user: &login.user,
                        role: login.role,
                    };
                    let result = self.shared.registry.dispatch(&ctx, &name, &args).await;
                    match result {
                        Ok(Some(reply)) => self.send(&reply),
                        Ok(None) => {}
                        Err(e) => self.send(&e.to_frame()),
                    }
                }
                ClientFrame::Ping { nonce } => self.send(&ServerFrame::Pong { nonce }),
                ClientFrame::Quit => {
                    self.ending = Some(Ending::both("quit"));
                    return;
                }
                ClientFrame::Hello { .. } | ClientFrame::Login { .. } => {
                    self.error(ErrorCode::AlreadyLoggedIn, "already logged in");
                }
            }
        }
    }

    /// Leaves the hub, says goodbye if the client can still hear it, and flushes.
    async fn finish(self) {
        let ending = self.ending.unwrap_or_else(|| Ending::gone("disconnected"));
        if let Some(id) = self.id {
            self.shared.hub.unregister(id, &ending.presence);
            tracing::info!(session = id, reason = %ending.presence, "session ended");
        }
        if let Some(reason) = &ending.bye {
            // try_send: a full queue means the client is not reading anyway.
            if let Ok(line) = frame::encode(&ServerFrame::Bye {
                reason: reason.clone(),
            }) {
                let _ = self.tx.try_send(line);
            }
        }
        drop(self.tx);
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

/// Writes queued lines, batching whatever is already waiting into one TLS write.
async fn write_loop(mut w: WriteHalf<Tls>, mut rx: mpsc::Receiver<Bytes>) {
    let mut buf = BytesMut::new();
    while let Some(first) = rx.recv().await {
        buf.extend_from_slice(&first);
        while buf.len() < 64 * 1024 {
            match rx.try_recv() {
                Ok(more) => buf.extend_from_slice(&more),
                Err(_) => break,
            }
        }
        if let Err(e) = w.write_all(&buf).await {
            tracing::debug!(error = %e, "write failed");
            return;
        }
        buf.clear();
        if let Err(e) = w.flush().await {
            tracing::debug!(error = %e, "flush failed");
            return;
        }
    }
    // Every sender is gone: send TLS close_notify so the client sees a clean end.
    let _ = w.shutdown().await;
}
