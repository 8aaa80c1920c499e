//! One client connection: TLS handshake, hello and login under timeouts, then the chat loop.
//!
//! The reader runs in this task; a separate writer task drains the session's bounded queue
//! of pre-serialized lines (see [`crate::hub`]), so replies and broadcasts share one order.
//!
//! Chat traffic is end-to-end encrypted: `send` carries a sealed envelope and `chain` a wrapped
//! sender chain. The session reads only their clear headers, checks that they name this
//! session's user and device key, and routes the bytes unchanged; it never sees message text.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use bytes::{Bytes, BytesMut};
use chatd_proto::codec::binary_envelope;
use chatd_proto::conversation::Conversation;
use chatd_proto::e2e::{DevicePublicKey, Envelope, WrappedChain};
use chatd_proto::frame::{self, ClientFrame, ServerFrame};
use chatd_proto::{ErrorCode, Fingerprint, LineError, PROTOCOL_VERSION, Wire, WireCodec};
use futures_util::{FutureExt, StreamExt};
use tokio::io::{AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio_util::codec::FramedRead;
use tracing::Instrument;

use crate::commands::{self, Ctx, Role};
use crate::hub::{Closer, EnvelopeLines, NewSession, Notify, Routed, SessionId};
use crate::outbox::{Outbox, PushError};
use crate::ratelimit::TokenBucket;
use crate::shared::Shared;
use crate::socket::Socket;
use crate::store::{KeyCheck, keys, offline, users};
use crate::throttle::Throttled;

/// Bytes of AEAD tag in every envelope's ciphertext.
const AEAD_TAG_BYTES: usize = 16;

/// Stored lines per `backlog` batch.
const REPLAY_BATCH: usize = 256;

/// Read buffer of a new connection, for `hello` and `login` (it doubles as a line needs more).
/// Between frames a connection holds none (docs/PERFORMANCE.md, idle memory).
const FIRST_READ_CAPACITY: usize = 256;

/// How long a closing session waits for its last frames to reach the client.
const FLUSH_GRACE: Duration = Duration::from_secs(2);

/// Serves one accepted TCP connection to the end.
pub async fn serve(stream: TcpStream, peer: SocketAddr, shared: Arc<Shared>) {
    let span = tracing::info_span!("session", %peer, user = tracing::field::Empty);
    async move {
        let acceptor = shared.acceptor();
        let handshake = tokio::time::timeout(
            shared.config.limits.handshake_timeout(),
            Box::pin(acceptor.accept(Socket(stream))),
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
        Box::pin(session.finish()).await;
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
    device: Fingerprint,
    /// Base64 SPKI DER, as the client sent it (and as peers will receive it).
    key: Arc<str>,
}

type Tls = tokio_rustls::server::TlsStream<Socket>;

/// An envelope as a `send` carried it.
enum EnvelopeData {
    /// A binary `send` frame's payload.
    Bytes(Bytes),
    /// A JSON `send` frame's `data`.
    Base64(String),
}

/// What the reader hands on: a JSON frame, or a binary `send` (the envelope bytes).
enum Incoming {
    Frame(ClientFrame),
    Envelope(Bytes),
}

/// What the frame reader yields: a frame or what the codec refused, a read error, or None at
/// the end of the stream.
type ReadItem = Option<Result<Result<Wire, LineError>, std::io::Error>>;

/// Most envelopes routed as one run (about 15 KB of 100-byte messages: one TLS record).
const MAX_RUN: usize = 32;

/// Envelopes to one conversation, in the order they were read, routed together.
#[derive(Default)]
struct Run {
    to: Option<Conversation>,
    each: Vec<(EnvelopeLines, Notify)>,
}

/// Why an envelope is not routed: what its sender is told, and whether it counts as a
/// protocol violation (a well-behaved client never sends it) or is a plain error.
struct Refused {
    code: ErrorCode,
    message: String,
    violation: bool,
}

impl Refused {
    fn violation(code: ErrorCode, message: String) -> Self {
        Refused {
            code,
            message,
            violation: true,
        }
    }

    fn error(code: ErrorCode, message: String) -> Self {
        Refused {
            code,
            message,
            violation: false,
        }
    }
}

struct Session {
    frames: FramedRead<ReadHalf<Tls>, WireCodec>,
    outbox: Arc<Outbox>,
    writer: tokio::task::JoinHandle<()>,
    closer: Closer,
    peer: SocketAddr,
    shared: Arc<Shared>,
    protocol_errors: u32,
    login_failures: u32,
    hello_done: bool,
    /// The client asked for binary envelope frames in its `hello` (and was told yes).
    binary: bool,
    id: Option<u64>,
    ending: Option<Ending>,
    /// Messages and commands after login.
    bucket: TokenBucket,
    /// Frames dropped by the rate limit since the last one let through.
    rate_violations: u32,
    /// A frame read ahead while gathering a run of envelopes, next for [`Session::next_frame`]
    /// (boxed: every idle connection carries this field).
    peeked: Option<Box<ReadItem>>,
}

impl Session {
    fn new(r: ReadHalf<Tls>, w: WriteHalf<Tls>, peer: SocketAddr, shared: Arc<Shared>) -> Self {
        let limits = &shared.config.limits;
        let frames = FramedRead::with_capacity(
            r,
            WireCodec::new(limits.max_line_bytes.get()),
            FIRST_READ_CAPACITY,
        );
        let outbox = Arc::new(Outbox::new(limits.outbound_queue.get()));
        let writer = tokio::spawn(write_loop(w, Arc::clone(&outbox), tracing::Span::current()));
        let bucket = TokenBucket::new(
            limits.messages_per_sec.get(),
            limits.message_burst.get(),
            std::time::Instant::now(),
        );
        Session {
            frames,
            outbox,
            writer,
            closer: Closer::default(),
            peer,
            shared,
            protocol_errors: 0,
            login_failures: 0,
            hello_done: false,
            binary: false,
            id: None,
            ending: None,
            bucket,
            rate_violations: 0,
            peeked: None,
        }
    }

    /// Queues a frame for this client; a full queue ends the session as too slow.
    fn send(&self, frame: &ServerFrame) {
        match frame::encode(frame) {
            Ok(line) => {
                if let Err(PushError::Full) = self.outbox.push(line) {
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

    /// Applies the rate limit to a message or command; false when it must be dropped (the
    /// client is told), and sets `ending` when the flooding goes on.
    fn within_rate(&mut self) -> bool {
        if self.take_token() {
            return true;
        }
        self.rate_violations += 1;
        let limits = &self.shared.config.limits;
        if self.rate_violations == 1 {
            // Once per episode: the log must not become the flood.
            tracing::info!(peer = %self.peer, "rate limit reached; dropping frames");
        }
        let (rate, burst) = (limits.messages_per_sec.get(), limits.message_burst.get());
        if self.rate_violations >= limits.max_rate_violations.get() {
            tracing::warn!(peer = %self.peer, dropped = self.rate_violations, "closing a flooding session");
            self.ending = Some(Ending::both(
                "too many messages: rate limit exceeded repeatedly",
            ));
        } else {
            self.error(
                ErrorCode::RateLimited,
                format!("slow down: not sent; the limit is {rate} messages per second (bursts of {burst})"),
            );
        }
        false
    }

    /// Takes a token from the rate limit's bucket if there is one; says nothing otherwise.
    fn take_token(&mut self) -> bool {
        if self.bucket.take(std::time::Instant::now()) {
            self.rate_violations = 0;
            return true;
        }
        false
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

    /// Waits for what the frame reader yields next; None when the connection must end first
    /// (closed, shutting down, idle too long: `self.ending` says why).
    async fn read_item(&mut self) -> Option<ReadItem> {
        tokio::select! {
            item = self.frames.next() => Some(item),
            _ = self.closer.closed() => {
                let reason = self.closer.reason().unwrap_or_else(|| "closed".into());
                self.ending = Some(Ending::both(&reason));
                None
            }
            _ = self.shared.shutdown.cancelled() => {
                self.ending = Some(Ending::both("server shutting down"));
                None
            }
            // Any line, even a blank one, restarts the clock.
            () = tokio::time::sleep(self.shared.config.limits.idle_timeout()) => {
                tracing::info!(peer = %self.peer, "closing an idle connection");
                self.ending = Some(Ending::both("idle timeout: nothing received"));
                None
            }
        }
    }

    /// Reads the next frame; None when the connection must end (`self.ending` says why).
    async fn next_frame(&mut self) -> Option<Incoming> {
        loop {
            let item = match self.peeked.take() {
                Some(item) => *item,
                None => self.read_item().await?,
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
                Some(Ok(Err(e @ (LineError::UnknownBinary { .. } | LineError::ShortBinary)))) => {
                    if self.violation(ErrorCode::BadFrame, format!("bad frame: {e}")) {
                        return None;
                    }
                    continue;
                }
                Some(Ok(Ok(Wire::Send(envelope)))) => {
                    self.release_read_buffer();
                    return Some(Incoming::Envelope(envelope));
                }
                Some(Ok(Ok(Wire::Envelope { .. }))) => {
                    let msg = "bad frame: a binary envelope frame goes from server to client; send 'S' frames";
                    if self.violation(ErrorCode::BadFrame, msg.into()) {
                        return None;
                    }
                    continue;
                }
                Some(Ok(Ok(Wire::Line(line)))) => line,
            };
            self.release_read_buffer();
            if line.trim().is_empty() {
                continue; // blank lines are keepalives for hand-typed sessions
            }
            match frame::decode::<ClientFrame>(&line) {
                Ok(f) => return Some(Incoming::Frame(f)),
                Err(e) => {
                    if self.violation(ErrorCode::BadFrame, describe_bad_frame(&e)) {
                        return None;
                    }
                }
            }
        }
    }

    async fn run(&mut self) {
        let login_timeout = self.shared.config.limits.login_timeout();
        let login = match tokio::time::timeout(login_timeout, Box::pin(self.login_phase())).await {
            Ok(Some(login)) => login,
            Ok(None) => return,
            Err(_) => {
                tracing::info!("login timed out");
                self.ending = Some(Ending::both("login timed out"));
                return;
            }
        };
        // Everyone is in the default room at login (so login_ok lists it).
        let lobby = self.shared.hub.default_room();
        let (who, room) = (login.user.clone(), lobby.clone());
        match self
            .shared
            .store
            .run(move |c| crate::store::rooms::join(c, &room, &who))
            .await
        {
            Ok(true) => self.shared.hub.room_joined(&lobby, &login.user),
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "cannot record the default room's membership"),
        }
        // The hub queues login_ok itself, so nothing routed to us can overtake it.
        let registered = self.shared.hub.register(NewSession {
            user: login.user.clone(),
            device: login.device,
            key: Arc::clone(&login.key),
            peer: self.peer,
            outbox: Arc::clone(&self.outbox),
            closer: self.closer.clone(),
            replay: true,
            binary: self.binary,
        });
        let (id, seq) = match registered {
            Ok(r) => r,
            Err(e) => {
                self.error(ErrorCode::TooManySessions, e.to_string());
                self.ending = Some(Ending::both("too many sessions"));
                return;
            }
        };
        self.id = Some(id);
        tracing::Span::current().record("user", login.user.as_str());
        tracing::info!(session = id, device = %login.device, "logged in");
        let replay = Box::pin(replay(
            Arc::clone(&self.shared),
            Arc::clone(&self.outbox),
            id,
            seq,
            login.user.clone(),
            login.device,
        ));
        tokio::select! {
            ok = replay => if !ok {
                self.ending = Some(Ending::gone("disconnected"));
                return;
            },
            _ = self.closer.closed() => {
                let reason = self.closer.reason().unwrap_or_else(|| "closed".into());
                self.ending = Some(Ending::both(&reason));
                return;
            }
            _ = self.shared.shutdown.cancelled() => {
                self.ending = Some(Ending::both("server shutting down"));
                return;
            }
        }
        let motd = self.shared.config.server.motd.trim();
        if !motd.is_empty() {
            self.send(&ServerFrame::Notice {
                text: format!("message of the day: {motd}"),
            });
        }
        self.chat_loop(id, &login).await;
    }

    /// `hello` then `login`; returns the account on success.
    async fn login_phase(&mut self) -> Option<LoggedIn> {
        loop {
            let frame = match self.next_frame().await? {
                Incoming::Frame(frame) => frame,
                Incoming::Envelope(_) => {
                    if self.violation(ErrorCode::NotLoggedIn, "log in before sending send".into()) {
                        return None;
                    }
                    continue;
                }
            };
            match frame {
                ClientFrame::Hello {
                    version,
                    client,
                    binary,
                } => {
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
                    self.binary = binary;
                    let limits = &self.shared.config.limits;
                    self.send(&ServerFrame::Hello {
                        version: PROTOCOL_VERSION,
                        server: format!("chatd/{}", env!("CARGO_PKG_VERSION")),
                        max_line_bytes: limits.max_line_bytes.get(),
                        max_text_bytes: limits.max_text_bytes.get(),
                        idle_timeout_secs: limits.idle_timeout_secs.get(),
                        binary,
                    });
                }
                ClientFrame::Login {
                    user,
                    password,
                    device_key,
                } => {
                    if !self.hello_done {
                        if self.violation(ErrorCode::NotLoggedIn, "send hello first".into()) {
                            return None;
                        }
                        continue;
                    }
                    let login = match self.parse_device_key(&device_key) {
                        Some(key) => self.check_login(user, password, key).await,
                        None => None,
                    };
                    if login.is_some() {
                        return login;
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

    /// Reads the login's device key; answers `bad_device_key` when it is not usable.
    fn parse_device_key(&mut self, b64: &str) -> Option<DevicePublicKey> {
        let parsed = base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .map_err(|_| "not base64".to_string())
            .and_then(|der| DevicePublicKey::from_spki_der(&der).map_err(|e| e.to_string()));
        match parsed {
            Ok(key) => Some(key),
            Err(why) => {
                self.login_failures += 1;
                self.error(
                    ErrorCode::BadDeviceKey,
                    format!("device_key must be base64 SPKI DER of an RSA 2048, 3072 or 4096-bit key: {why}"),
                );
                None
            }
        }
    }

    /// Verifies a password; unknown, locked and wrong all look the same to the client.
    /// Then registers the device key (or refuses a revoked one, or one too many).
    async fn check_login(
        &mut self,
        user: String,
        password: String,
        key: DevicePublicKey,
    ) -> Option<LoggedIn> {
        let valid_name = chatd_proto::names::validate_username(&user).is_ok();
        let shown: String = user.chars().take(40).collect();
        let ip = self.peer.ip();
        let account = valid_name.then_some(user.as_str());
        // Before any password work: a throttled guesser costs no argon2 time.
        if let Some(wait) = self
            .shared
            .throttle
            .check(ip, account, std::time::Instant::now())
        {
            self.login_failures += 1;
            let (whom, left) = match wait {
                Throttled::Address(d) => ("from your address", d),
                Throttled::Account(d) => ("for this account", d),
            };
            let secs = left.as_secs().max(1);
            tracing::warn!(peer = %self.peer, user = %shown.escape_debug(), wait_secs = secs, "login throttled {whom}");
            self.error(
                ErrorCode::RateLimited,
                format!("too many failed logins {whom}; try again in {secs} s"),
            );
            return None;
        }
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
        match creds {
            Some(c) if matches && !c.locked => {
                self.shared.throttle.succeeded(ip, &user);
                let role = if c.admin { Role::Admin } else { Role::User };
                self.register_key(user, role, key).await
            }
            other => {
                self.login_failures += 1;
                self.shared.throttle.failed(
                    ip,
                    valid_name.then_some(user.as_str()),
                    std::time::Instant::now(),
                );
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

    /// Records the device key for a user whose password was right.
    async fn register_key(
        &mut self,
        user: String,
        role: Role,
        key: DevicePublicKey,
    ) -> Option<LoggedIn> {
        let device = key.fingerprint();
        let max = self.shared.config.limits.max_devices_per_user.get();
        let (name, fp, der, bits) = (
            user.clone(),
            *device.as_bytes(),
            key.to_spki_der().to_vec(),
            key.bits() as u32,
        );
        let check = self
            .shared
            .store
            .run(move |c| keys::check_and_register(c, &name, &fp, &der, bits, max))
            .await;
        match check {
            Ok(KeyCheck::Known) => {}
            Ok(KeyCheck::Registered) => {
                tracing::info!(%user, %device, bits, "registered a new device key");
            }
            Ok(KeyCheck::Revoked) => {
                tracing::warn!(peer = %self.peer, %user, %device, "login with a revoked device key");
                self.login_failures += 1;
                self.error(
                    ErrorCode::KeyRevoked,
                    format!("device key {device} was revoked by an administrator; this device needs a new key"),
                );
                return None;
            }
            Ok(KeyCheck::TooMany) => {
                tracing::warn!(%user, %device, max, "device key refused: too many devices");
                self.error(
                    ErrorCode::TooManyDevices,
                    format!("{user} already has {max} device keys; an administrator must revoke one (chatctl key revoke)"),
                );
                return None;
            }
            Err(e) => {
                tracing::error!(error = %e, "login: cannot record the device key");
                let message = if e.unavailable().is_some() {
                    "the server's storage is full or busy: your device key could not be recorded; try again later"
                } else {
                    "the server could not record your device key; try again later"
                };
                self.error(ErrorCode::Internal, message);
                return None;
            }
        }
        // Re-encoded from the parsed key, so every peer gets the canonical DER.
        let key_b64 = base64::engine::general_purpose::STANDARD.encode(key.to_spki_der());
        Some(LoggedIn {
            user,
            role,
            device,
            key: Arc::from(key_b64),
        })
    }

    /// Routes a sealed envelope by its header (its text stays sealed), together with the
    /// binary `send` frames already read behind it: a run of envelopes to one conversation
    /// reaches each member's queue as one entry (crate::hub::Hub::route_batch). Only frames
    /// already here join a run, so nothing waits for one. Replies to the sender keep the
    /// order of its frames: a refused envelope first lets the run before it go.
    /// `data` is the envelope's bytes (a binary `send`) or its base64 (a JSON one).
    /// True when the connection must close (too many violations).
    fn route_envelopes(&mut self, id: SessionId, login: &LoggedIn, data: EnvelopeData) -> bool {
        let mut run = Run::default();
        let mut next = Some(data);
        while let Some(data) = next.take() {
            match self.prepare_envelope(id, login, data) {
                Ok((to, lines, note)) => {
                    if run.to.as_ref().is_some_and(|c| *c != to) || run.each.len() >= MAX_RUN {
                        self.route_run(login, std::mem::take(&mut run));
                    }
                    run.to = Some(to);
                    run.each.push((lines, note));
                }
                Err(refused) => {
                    self.route_run(login, std::mem::take(&mut run));
                    if self.refuse(refused) {
                        return true;
                    }
                }
            }
            next = self.buffered_send();
        }
        self.route_run(login, run);
        false
    }

    /// The next frame if it is a binary `send` that was already read and is within the rate
    /// limit; anything else already read is kept for [`Session::next_frame`].
    fn buffered_send(&mut self) -> Option<EnvelopeData> {
        // Polled once: None when the next frame is not here yet (it may read what the socket
        // already holds, never waits for more).
        let item = self.frames.next().now_or_never()?;
        match item {
            Some(Ok(Ok(Wire::Send(envelope)))) if self.take_token() => {
                self.release_read_buffer();
                Some(EnvelopeData::Bytes(envelope))
            }
            other => {
                self.peeked = Some(Box::new(other));
                None
            }
        }
    }

    /// Routes a run of envelopes (see [`Session::route_envelopes`]).
    fn route_run(&self, login: &LoggedIn, run: Run) {
        let Some(to) = run.to else {
            return;
        };
        let sent = run.each.len();
        self.shared.hub.route_batch(&to, run.each);
        if let Some(peer) = to.peer_of(&login.user) {
            if peer != login.user {
                if let Some(away) = self.shared.hub.away(peer) {
                    for _ in 0..sent {
                        self.send(&ServerFrame::Notice {
                            text: format!("{peer} is away: {away}"),
                        });
                    }
                }
            }
        }
    }

    /// Tells the sender why an envelope was not routed; true when the connection must close.
    fn refuse(&mut self, refused: Refused) -> bool {
        if refused.violation {
            self.violation(refused.code, refused.message)
        } else {
            self.error(refused.code, refused.message);
            false
        }
    }

    /// Checks a sealed envelope's header against this session and the conversation it names,
    /// and serializes it once per wire form; what to route, or why not.
    fn prepare_envelope(
        &self,
        id: SessionId,
        login: &LoggedIn,
        data: EnvelopeData,
    ) -> Result<(Conversation, EnvelopeLines, Notify), Refused> {
        // A JSON send's text is kept: its `envelope` line carries it exactly as sent.
        let (raw, text) = match data {
            EnvelopeData::Bytes(b) => (b, None),
            EnvelopeData::Base64(text) => {
                match base64::engine::general_purpose::STANDARD.decode(text.trim()) {
                    Ok(b) => (Bytes::from(b), Some(text)),
                    Err(_) => {
                        let e = chatd_proto::e2e::E2eError::Malformed("base64");
                        return Err(Refused::violation(
                            ErrorCode::BadEnvelope,
                            format!("envelope: {e}"),
                        ));
                    }
                }
            }
        };
        let envelope = Envelope::decode(&raw)
            .map_err(|e| Refused::violation(ErrorCode::BadEnvelope, format!("envelope: {e}")))?;
        let h = envelope.header();
        if h.sender_user != login.user || h.sender_device != login.device {
            return Err(Refused::violation(
                ErrorCode::BadEnvelope,
                "the envelope's sender is not this session's user and device key".into(),
            ));
        }
        let conversation = Conversation::parse(&h.conversation)
            .map_err(|e| Refused::violation(ErrorCode::BadEnvelope, e.to_string()))?;
        match &conversation {
            Conversation::All if login.role != Role::Admin => {
                return Err(Refused::error(
                    ErrorCode::Forbidden,
                    "only administrators can send to everyone; talk in a room".into(),
                ));
            }
            Conversation::All => {}
            Conversation::Pair(..) if !conversation.includes(&login.user, |_| false) => {
                return Err(Refused::violation(
                    ErrorCode::BadEnvelope,
                    "you are not part of that conversation".into(),
                ));
            }
            Conversation::Pair(..) => {}
            // Not a violation: a kick can cross a message in flight.
            Conversation::Room(room) => {
                if !self.shared.hub.is_member(room, &login.user) {
                    return Err(Refused::error(
                        ErrorCode::NotInRoom,
                        format!("you are not in #{room}; /join {room} first"),
                    ));
                }
            }
        }
        let body = envelope.ciphertext().len().saturating_sub(AEAD_TAG_BYTES);
        let max = self.shared.config.limits.max_text_bytes.get();
        if body > max {
            return Err(Refused::error(
                ErrorCode::BadText,
                format!("message is {body} bytes sealed; the limit is {max}"),
            ));
        }
        if let Conversation::Pair(a, _) = &conversation {
            let other = conversation.peer_of(&login.user).unwrap_or(a);
            if !self.shared.hub.has_devices(other) {
                // Same answer for no such user: a whisper does not probe for accounts.
                return Err(Refused::error(
                    ErrorCode::UserOffline,
                    format!("{other} has no device key (no such user, or never logged in)"),
                ));
            }
        }
        // Serialized once per wire form; every member's session takes one of the two.
        let ts = commands::now_millis();
        let frame = ServerFrame::Envelope {
            from: login.user.clone(),
            device: login.device,
            data: text.unwrap_or_else(|| base64::engine::general_purpose::STANDARD.encode(&raw)),
            ts,
        };
        let lines = match frame::encode(&frame) {
            Ok(json) => EnvelopeLines {
                json,
                binary: binary_envelope(ts, &raw),
            },
            Err(e) => {
                tracing::error!(error = %e, "cannot serialize frame");
                return Err(Refused::error(
                    ErrorCode::Internal,
                    "cannot route that envelope".into(),
                ));
            }
        };
        // Echoed to the sender too: the echo confirms delivery, carries the server's
        // timestamp, and reaches the user's other sessions. Members' offline devices get it
        // at their next login; `held` tells this session once that is durable.
        let note = Notify {
            session: id,
            message: h.message_id.iter().map(|b| format!("{b:02x}")).collect(),
            conversation: conversation.name(),
        };
        Ok((conversation, lines, note))
    }

    /// Routes a wrapped sender chain to the device its header names. True when the
    /// connection must close.
    fn route_chain(&mut self, login: &LoggedIn, data: String) -> bool {
        let wrapped = match WrappedChain::from_base64(&data) {
            Ok(w) => w,
            Err(e) => return self.violation(ErrorCode::BadEnvelope, format!("chain: {e}")),
        };
        let h = wrapped.header();
        if h.sender_user != login.user || h.sender_device != login.device {
            return self.violation(
                ErrorCode::BadEnvelope,
                "the chain's sender is not this session's user and device key".into(),
            );
        }
        if let Err(e) = Conversation::parse(&h.conversation) {
            return self.violation(ErrorCode::BadEnvelope, e.to_string());
        }
        let to = h.recipient_device;
        let frame = ServerFrame::Chain {
            from: login.user.clone(),
            device: login.device,
            data,
        };
        match frame::encode(&frame) {
            Ok(line) => {
                // Offline devices get it at their next login, before the envelopes that
                // need it. Unknown: revoked meanwhile; the sender learns that from `device`.
                if self.shared.hub.route_to_device(&to, &line) == Routed::Unknown {
                    tracing::debug!(device = %to, "chain for a device that is not registered");
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot serialize frame"),
        }
        false
    }

    async fn chat_loop(&mut self, id: u64, login: &LoggedIn) {
        while let Some(incoming) = self.next_frame().await {
            let frame = match incoming {
                Incoming::Envelope(_) if !self.within_rate() => {
                    if self.ending.is_some() {
                        return;
                    }
                    continue;
                }
                Incoming::Envelope(raw) => {
                    if self.route_envelopes(id, login, EnvelopeData::Bytes(raw)) {
                        return;
                    }
                    continue;
                }
                Incoming::Frame(frame) => frame,
            };
            match frame {
                ClientFrame::Send { .. } | ClientFrame::Command { .. } if !self.within_rate() => {
                    if self.ending.is_some() {
                        return;
                    }
                }
                ClientFrame::Send { data } => {
                    if self.route_envelopes(id, login, EnvelopeData::Base64(data)) {
                        return;
                    }
                }
                ClientFrame::Chain { data } => {
                    if self.route_chain(login, data) {
                        return;
                    }
                }
                ClientFrame::Command { name, args, room } => {
                    // Only a room the caller is in is handed on (to plugins).
                    let room = room.filter(|r| self.shared.hub.is_member(r, &login.user));
                    let ctx = Ctx {
                        hub: &self.shared.hub,
                        store: &self.shared.store,
                        registry: &self.shared.registry,
                        limits: &self.shared.config.limits,
                        motd: &self.shared.config.server.motd,
                        room: room.as_deref(),
                        rooms: &self.shared.config.rooms,
                        session: id,
                        user: &login.user,
                        role: login.role,
                    };
                    let result = Box::pin(self.shared.registry.dispatch(&ctx, &name, &args)).await;
                    match result {
                        Ok(Some(reply)) => self.send(&reply),
                        Ok(None) => {}
                        Err(e) => self.send(&e.to_frame()),
                    }
                }
                ClientFrame::BacklogAck { upto } => Box::pin(self.ack_backlog(login, upto)).await,
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

    /// Deletes what this device acknowledged of its stored lines.
    async fn ack_backlog(&self, login: &LoggedIn, upto: u64) {
        let (user, device) = (login.user.clone(), *login.device.as_bytes());
        let upto = i64::try_from(upto).unwrap_or(i64::MAX);
        let done = self
            .shared
            .store
            .run(move |c| offline::ack(c, &user, &device, upto))
            .await;
        match done {
            Ok(n) => tracing::debug!(deleted = n, "stored lines acknowledged"),
            // They stay stored and come again at the next login.
            Err(e) => tracing::warn!(error = %e, "cannot delete acknowledged stored lines"),
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
            // Never waits: a full queue means the client is not reading anyway.
            if let Ok(line) = frame::encode(&ServerFrame::Bye {
                reason: reason.clone(),
            }) {
                let _ = self.outbox.push(line);
            }
        }
        self.outbox.finish();
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

/// Sends what was stored for this device while it was offline, in batches each ended by a
/// `backlog` marker, then lets the live lines the hub held meanwhile through. False when the
/// connection is gone.
async fn replay(
    shared: Arc<Shared>,
    outbox: Arc<Outbox>,
    id: SessionId,
    seq: u64,
    user: String,
    device: Fingerprint,
) -> bool {
    // Lines routed before registration may still be on their way to the database.
    let mut committed = shared.offline_committed.clone();
    if committed.wait_for(|done| *done >= seq).await.is_err() {
        tracing::debug!("offline writer gone; replaying what is stored");
    }
    let ttl_ms = shared.config.limits.offline_ttl_secs.get() as i64 * 1000;
    let not_before = crate::offline::now_ms().saturating_sub(ttl_ms);
    let fp = *device.as_bytes();
    let mut after = 0i64;
    let mut total = 0usize;
    loop {
        let who = user.clone();
        let rows = shared
            .store
            .run(move |c| offline::load(c, &who, &fp, after, REPLAY_BATCH + 1, not_before))
            .await;
        let rows = match rows {
            Ok(rows) => rows,
            Err(e) => {
                tracing::error!(error = %e, "cannot read stored lines; they stay for the next login");
                let text =
                    "the server could not read the messages stored for you; they stay stored";
                if let Ok(line) = frame::encode(&ServerFrame::error(ErrorCode::Internal, text)) {
                    let _ = outbox.send(line).await;
                }
                break;
            }
        };
        // One more row than a batch was asked for: it says whether another batch follows.
        let more = rows.len() > REPLAY_BATCH;
        let count = rows.len().min(REPLAY_BATCH);
        if count == 0 {
            break;
        }
        for (qid, line) in rows.into_iter().take(REPLAY_BATCH) {
            after = qid;
            if outbox.send(Bytes::from(line)).await.is_err() {
                return false;
            }
        }
        total += count;
        let marker = ServerFrame::Backlog {
            upto: after.max(0) as u64,
            count: count as u32,
            more,
        };
        if let Ok(line) = frame::encode(&marker) {
            if outbox.send(line).await.is_err() {
                return false;
            }
        }
        if !more {
            break;
        }
    }
    if total > 0 {
        tracing::info!(lines = total, "delivered stored lines");
    }
    while !shared.hub.end_replay(id, outbox.free()) {
        // The queue is full of the backlog: wait until the writer frees a slot.
        if outbox.wait_space().await.is_err() {
            return false;
        }
    }
    true
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

/// Most lines handed to one vectored TLS write (about 50 KB of room messages).
const WRITE_SLICES: usize = 64;

/// Writes queued lines: everything queued at a wake-up goes out in as few TLS records and
/// writes as it fills, straight from the shared line buffers (no copy into a staging buffer).
///
/// `span` is entered only to log: entering it on every poll cost ~2% of chatd's CPU when each
/// room message wakes hundreds of writers.
async fn write_loop(mut w: WriteHalf<Tls>, outbox: Arc<Outbox>, span: tracing::Span) {
    // However this task ends (an error, or aborted after the flush grace), nothing more is
    // taken in: the hub sees `Closed` and stores lines for the device instead.
    struct Abandon(Arc<Outbox>);
    impl Drop for Abandon {
        fn drop(&mut self) {
            self.0.abandon();
        }
    }
    let guard = Abandon(outbox);
    let mut batch = Vec::new();
    while guard.0.take(&mut batch).await {
        // Everything the server says, in clear before TLS: at trace level this is a full
        // capture, which is how the tests prove that no message text ever passes through.
        if tracing::enabled!(target: "chatd::wire", tracing::Level::TRACE) {
            let all: String = batch.iter().map(|entry| wire_text(entry)).collect();
            span.in_scope(|| {
                tracing::trace!(target: "chatd::wire", out = %all, "wire write");
            });
        }
        if let Err(e) = write_lines(&mut w, &batch).await {
            span.in_scope(|| tracing::debug!(error = %e, "write failed"));
            return;
        }
        batch.clear();
        if let Err(e) = w.flush().await {
            span.in_scope(|| tracing::debug!(error = %e, "flush failed"));
            return;
        }
    }
    // The session finished and everything queued is written: send TLS close_notify so the
    // client sees a clean end.
    let _ = w.shutdown().await;
}

/// A queue entry as the wire capture shows it: lines as text, each binary frame as its kind,
/// size and base64 payload on a line of its own (raw bytes would garble the log). An entry
/// may hold several frames (a run of envelopes, presence and device notices together).
fn wire_text(entry: &[u8]) -> std::borrow::Cow<'_, str> {
    let mut rest = entry;
    let mut text = String::new();
    while !rest.is_empty() {
        let (shown, len) = match rest {
            [chatd_proto::codec::BINARY_MARKER, kind, header @ ..] if header.len() >= 4 => {
                // The hub only queues frames it built, so the u32 length is exact; a short
                // one would show what is there.
                let size = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
                let size = usize::try_from(size).unwrap_or(usize::MAX);
                let payload = &header[4..][..size.min(header.len() - 4)];
                let b64 = base64::engine::general_purpose::STANDARD.encode(payload);
                let kind = char::from(*kind).escape_default();
                let shown = format!("<binary frame '{kind}', {} bytes> {b64}\n", payload.len());
                (std::borrow::Cow::Owned(shown), 6 + payload.len())
            }
            _ => {
                let len = rest
                    .iter()
                    .position(|b| *b == b'\n')
                    .map_or(rest.len(), |i| i + 1);
                (String::from_utf8_lossy(&rest[..len]), len)
            }
        };
        if len == rest.len() && text.is_empty() {
            return shown;
        }
        text.push_str(&shown);
        rest = &rest[len..];
    }
    text.into()
}

/// Writes all of `lines`, up to [`WRITE_SLICES`] of them per vectored write.
async fn write_lines(w: &mut WriteHalf<Tls>, lines: &[Bytes]) -> std::io::Result<()> {
    let (mut next, mut offset) = (0, 0);
    while next < lines.len() {
        // The slice array is built on each poll's stack, so it is never part of the future:
        // an idle writer task stays small and a write allocates nothing (boxing this future
        // instead cost a malloc and free per delivery).
        let mut written = std::future::poll_fn(|cx| {
            let mut slices = [std::io::IoSlice::new(&[]); WRITE_SLICES];
            let mut n = 0;
            for (slot, line) in slices.iter_mut().zip(&lines[next..]) {
                *slot = std::io::IoSlice::new(if n == 0 { &line[offset..] } else { line });
                n += 1;
            }
            tokio::io::AsyncWrite::poll_write_vectored(
                std::pin::Pin::new(&mut *w),
                cx,
                &slices[..n],
            )
        })
        .await?;
        if written == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        // Step over what went out: whole lines, then part of one.
        while written > 0 {
            let left = lines[next].len() - offset;
            if written >= left {
                written -= left;
                next += 1;
                offset = 0;
            } else {
                offset += written;
                written = 0;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn describe(line: &str) -> String {
        describe_bad_frame(&frame::decode::<ClientFrame>(line).unwrap_err())
    }

    #[test]
    fn the_wire_capture_shows_binary_frames_as_text() {
        let frame = chatd_proto::codec::binary_envelope(1, b"\x00\n\xff");
        assert_eq!(
            wire_text(&frame),
            "<binary frame 'E', 11 bytes> AAAAAAAAAAEACv8=\n"
        );
        assert_eq!(wire_text(b"{\"type\":\"pong\"}\n"), "{\"type\":\"pong\"}\n");
        // A run of envelopes, or notices joined into one queue entry: each frame on its own.
        let other = chatd_proto::codec::binary_envelope(2, b"x");
        let entry = [&frame[..], b"{\"a\":1}\n{\"b\":2}\n", &other[..]].concat();
        assert_eq!(
            wire_text(&entry),
            "<binary frame 'E', 11 bytes> AAAAAAAAAAEACv8=\n{\"a\":1}\n{\"b\":2}\n\
             <binary frame 'E', 9 bytes> AAAAAAAAAAJ4\n"
        );
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
