//! Connecting to chatd: TCP + TLS with the trust rules of [`crate::trust`], then the
//! `hello` / `login` exchange, leaving a [`Connection`] that sends and receives frames.
//!
//! `hello` asks for binary envelope frames (proto's `codec`); a server that agrees sends
//! live envelopes as binary frames and takes our `send`s as binary frames too. Both kinds of
//! envelope reach the rest of the client as one [`Incoming::Envelope`].
//!
//! When the connection knows the device key and the server's certificate
//! ([`Connection::with_proof`]), `hello` asks for `keyproof` and `login` signs the server's
//! challenge, so guesses at the account from elsewhere cannot hold this device's login up.
//!
//! Nothing here prints to stdout, so any UI (plain lines now, a TUI later) can use it;
//! trust warnings, and what a slow connect waits for, go to stderr and questions go through
//! [`AskTrust`].

use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use base64::Engine;
use chatd_proto::e2e::{CHALLENGE_BYTES, DeviceKey, LoginChallenge};
use chatd_proto::frame::{DeviceInfo, FEATURE_KEYPROOF, FEATURE_REKEY, FEATURE_VOUCH, RoomState};
use chatd_proto::{
    ClientFrame, ErrorCode, Fingerprint, LineError, PROTOCOL_VERSION, ServerFrame, Wire, WireCodec,
};
use futures_util::StreamExt;
use rustls::RootCertStore;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_util::codec::FramedRead;

use crate::identity::ServerId;
use crate::secure::Delivered;
use crate::text::sanitize;
use crate::trust::{self, Accepted, Decision, KnownServers, PinningVerifier};

/// How long the TCP connect and the TLS handshake may each take. Long enough to get through a
/// full server: it answers once a slot is free (or made free by closing a connection that never
/// finished its handshake), and a full listen backlog drops our SYNs, retried after 1, 3, 7, 15 s.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// After this long, say once what the connect waits for.
const SLOW_NOTICE: Duration = Duration::from_secs(2);
/// How long to wait for the server's answer to `hello` or `login`.
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// `host:port` of a chatd server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerAddr {
    /// Host name or IP address (IPv6 without brackets), lower case.
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl ServerAddr {
    /// Parses `HOST:PORT`, `[IPv6]:PORT` or a bare host (port 8443).
    pub fn parse(s: &str) -> Result<Self> {
        let s = s.trim();
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (host, after) = rest
                .split_once(']')
                .ok_or_else(|| anyhow!("bad server address {s:?}: missing ']'"))?;
            match after {
                "" => (host, None),
                _ => match after.strip_prefix(':') {
                    Some(port) => (host, Some(port)),
                    None => bail!("bad server address {s:?}"),
                },
            }
        } else if s.matches(':').count() > 1 {
            // A bare IPv6 address.
            (s, None)
        } else {
            match s.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (s, None),
            }
        };
        if host.is_empty() {
            bail!("bad server address {s:?}: empty host");
        }
        let port = match port {
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| anyhow!("bad server address {s:?}: bad port {p:?}"))?,
            None => 8443,
        };
        Ok(ServerAddr {
            host: host.to_ascii_lowercase(),
            port,
        })
    }
}

impl fmt::Display for ServerAddr {
    /// The `host:port` form used in messages and as the known-servers key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Which certificates to trust.
#[derive(Debug, Clone)]
pub enum Trust {
    /// `--ca FILE`: only these CAs, with host name verification; never pinning.
    CaFile(PathBuf),
    /// System roots, falling back to the pin in the known-servers file.
    Pinning {
        /// Trusted roots (the system's; may be empty).
        roots: RootCertStore,
        /// Path of the known-servers file.
        known_servers: PathBuf,
        /// `--accept-fingerprint`.
        accept: Option<Fingerprint>,
        /// Pins learned by an earlier try of this run and not written yet (a failed login
        /// keeps none); used instead of the file.
        learned: Option<Learned>,
    },
}

/// Asks a person whether to trust an unknown server certificate.
pub trait AskTrust {
    /// True to pin `fingerprint` for `server` and connect.
    fn ask(
        &mut self,
        server: &ServerAddr,
        fingerprint: &Fingerprint,
    ) -> impl Future<Output = Result<bool>>;
}

/// Never asks; for when there is nobody at a terminal.
pub struct NoAsk;

impl AskTrust for NoAsk {
    async fn ask(&mut self, _: &ServerAddr, _: &Fingerprint) -> Result<bool> {
        Ok(false)
    }
}

/// A TLS connection, and which server it reached.
pub struct Connected {
    /// The connection.
    pub stream: TlsStream<TcpStream>,
    /// The server's identity, under which its key, pins and state are kept.
    pub id: ServerId,
    /// Pins learned on the way (a new pin, an accepted rotation, another name of a known
    /// server), not written yet: [`Connected::keep_pins`] writes them once the login succeeded,
    /// so a mistyped server or user leaves no pin behind.
    pub learned: Option<Learned>,
}

/// Pins learned while connecting and not written yet.
#[derive(Debug, Clone)]
pub struct Learned {
    /// The known-servers file with them.
    pub known: KnownServers,
    /// What to say once they are written.
    pub notes: Vec<String>,
}

impl Learned {
    /// Writes the pins; returns what to say about them.
    pub fn keep(self) -> Result<Vec<String>> {
        self.known.save()?;
        Ok(self.notes)
    }
}

#[cfg(test)]
impl Connected {
    /// Writes the pins learned while connecting; returns what to say about them.
    pub fn keep_pins(&mut self) -> Result<Vec<String>> {
        self.learned.take().map_or(Ok(Vec::new()), Learned::keep)
    }
}

/// Opens a TLS connection to `addr`, applying `trust` (which may pin or ask and reconnect).
///
/// `asker` is `None` when nobody can be asked (no terminal, or stdin carries the password).
/// A slow connect says on stderr what it waits for.
pub async fn connect_tls<A: AskTrust>(
    addr: &ServerAddr,
    trust: &Trust,
    asker: Option<&mut A>,
) -> Result<Connected> {
    connect_tls_with(addr, trust, asker, true).await
}

/// [`connect_tls`]; `announce` false keeps stderr quiet (a full-screen UI is running).
pub async fn connect_tls_with<A: AskTrust>(
    addr: &ServerAddr,
    trust: &Trust,
    mut asker: Option<&mut A>,
    announce: bool,
) -> Result<Connected> {
    let server_name = ServerName::try_from(addr.host.clone())
        .with_context(|| format!("bad server name {:?}", addr.host))?;
    match trust {
        Trust::CaFile(path) => {
            let roots = trust::load_ca_file(path)?;
            let verifier = trust::webpki_verifier(roots)?
                .ok_or_else(|| anyhow!("no certificates in {}", path.display()))?;
            let stream =
                handshake(addr, server_name, trust::client_config(verifier)?, announce).await?;
            Ok(Connected {
                stream,
                id: ServerId::Named(addr.clone()),
                learned: None,
            })
        }
        Trust::Pinning {
            roots,
            known_servers,
            accept,
            learned,
        } => {
            let ca = trust::webpki_verifier(roots.clone())?;
            let key = addr.to_string();
            let (mut known, mut notes) = match learned {
                Some(l) => (l.known.clone(), l.notes.clone()),
                None => (KnownServers::load(known_servers)?, Vec::new()),
            };
            let mut changed = learned.is_some();
            // Two pin changes at most: the first connect, then one reconnect after pinning.
            for _ in 0..3 {
                let pin = known.lookup(&key);
                let verifier = Arc::new(
                    PinningVerifier::new(ca.clone(), pin.map(|p| p.fingerprint))
                        .with_aliases(known.fingerprints()),
                );
                let config = trust::client_config(verifier.clone())?;
                let err = match handshake(addr, server_name.clone(), config, announce).await {
                    Ok(stream) => {
                        let id = match verifier.accepted() {
                            Some(Accepted::Pin) => pin.map(|p| ServerId::Pinned(p.id)),
                            Some(Accepted::Alias(fp)) => known.by_fingerprint(&fp).map(|other| {
                                known.set_alias(&key, fp, other.id);
                                changed = true;
                                notes.push(format!(
                                    "{key} presents the certificate pinned on line {} of {}: the same server under another name, remembered as such",
                                    other.line,
                                    known.path().display()
                                ));
                                ServerId::Pinned(other.id)
                            }),
                            Some(Accepted::Ca) | None => None,
                        };
                        return Ok(Connected {
                            stream,
                            id: id.unwrap_or_else(|| ServerId::Named(addr.clone())),
                            learned: changed.then_some(Learned { known, notes }),
                        });
                    }
                    Err(e) => e,
                };
                let Some(rejection) = verifier.take_rejection() else {
                    return Err(err);
                };
                let presented = rejection.presented;
                match trust::decide(
                    pin.map(|p| p.fingerprint),
                    presented,
                    *accept,
                    asker.is_some(),
                ) {
                    Decision::Pin => {}
                    Decision::Ask => {
                        let yes = match asker.as_deref_mut() {
                            Some(a) => a.ask(addr, &presented).await?,
                            None => false,
                        };
                        if !yes {
                            bail!("not connecting to {key}: its certificate is not trusted");
                        }
                    }
                    Decision::RefuseUnknown => bail!(trust::unknown_message(&presented)),
                    Decision::RefuseMismatch => {
                        let accept = accept.unwrap_or(presented);
                        bail!(trust::mismatch_message(&key, &presented, &accept))
                    }
                    Decision::RefuseChanged | Decision::Replace => {
                        let (old, line) = pin
                            .map(|p| (p.fingerprint, p.line))
                            .ok_or_else(|| anyhow!("internal error: no pin"))?;
                        let warning =
                            trust::changed_warning(&key, &old, &presented, known.path(), line);
                        if trust::decide(Some(old), presented, *accept, false)
                            == Decision::RefuseChanged
                        {
                            bail!(warning);
                        }
                        eprintln!("chat: {warning}");
                        eprintln!(
                            "chat: replacing the pinned fingerprint, as --accept-fingerprint asks"
                        );
                    }
                }
                known.set(&key, presented);
                changed = true;
                notes.push(format!(
                    "pinned {presented} for {key} in {}",
                    known.path().display()
                ));
            }
            bail!("{key} keeps presenting different certificates; giving up")
        }
    }
}

/// The node could not be reached (no TCP connection, or no TLS answer in time): with a list
/// of servers, the next one is tried. A refused certificate is never this.
#[derive(Debug)]
pub struct Unreachable(pub ServerAddr);

impl fmt::Display for Unreachable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot connect to {}", self.0)
    }
}

/// Whether `error` says the node was unreachable (see [`Unreachable`]).
pub fn unreachable(error: &anyhow::Error) -> bool {
    error.downcast_ref::<Unreachable>().is_some()
}

/// TCP connect and TLS handshake, each with a timeout.
async fn handshake(
    addr: &ServerAddr,
    server_name: ServerName<'static>,
    config: rustls::ClientConfig,
    announce: bool,
) -> Result<TlsStream<TcpStream>> {
    let secs = CONNECT_TIMEOUT.as_secs();
    let connect = TcpStream::connect((addr.host.as_str(), addr.port));
    let tcp = waiting(addr, "TCP connect", announce, connect)
        .await
        .map_err(|_| {
            anyhow!("no answer in {secs} s (the server may be down, full or unreachable)")
                .context(Unreachable(addr.clone()))
        })?
        .map_err(|e| anyhow::Error::new(e).context(Unreachable(addr.clone())))?;
    let _ = tcp.set_nodelay(true);
    let connector = TlsConnector::from(Arc::new(config));
    let tls = connector.connect(server_name, tcp);
    waiting(addr, "TLS handshake", announce, tls)
        .await
        .map_err(|_| {
            anyhow!("TLS handshake with {addr} timed out after {secs} s (the server may be full or overloaded; try again later)")
                .context(Unreachable(addr.clone()))
        })?
        .with_context(|| format!("TLS handshake with {addr} failed"))
}

/// `step` under [`CONNECT_TIMEOUT`]; once it has taken [`SLOW_NOTICE`], says (if `announce`)
/// what it is waiting for, once.
async fn waiting<T>(
    addr: &ServerAddr,
    what: &str,
    announce: bool,
    step: impl Future<Output = T>,
) -> Result<T, tokio::time::error::Elapsed> {
    let step = tokio::time::timeout(CONNECT_TIMEOUT, step);
    tokio::pin!(step);
    tokio::select! {
        done = &mut step => return done,
        _ = tokio::time::sleep(SLOW_NOTICE) => {}
    }
    if announce {
        let secs = CONNECT_TIMEOUT.as_secs();
        eprintln!("chat: waiting for {addr} ({what}, up to {secs} s)…");
    }
    step.await
}

/// Fingerprint of the certificate `stream`'s server presented (its leaf), which a login proof
/// names.
pub fn server_fingerprint(stream: &TlsStream<TcpStream>) -> Option<Fingerprint> {
    let certs = stream.get_ref().1.peer_certificates()?;
    certs.first().map(|leaf| Fingerprint::of(leaf.as_ref()))
}

/// The server refused the login; main exits with status 3.
#[derive(Debug, thiserror::Error)]
#[error("login failed: {0}")]
pub struct LoginFailed(pub String, pub Refusal);

/// Why the server refused a login, as far as trying again goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Wrong user name or password: another password may do.
    Credentials,
    /// Anything else (a revoked key, a rate limit, ...): a new password would not help.
    Other,
}

/// What the server said in its `hello`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerInfo {
    /// Server software and version.
    pub server: String,
    /// Longest line the server accepts.
    pub max_line_bytes: usize,
    /// Longest message text the server accepts.
    pub max_text_bytes: usize,
    /// The server closes a connection silent this long (0: never).
    pub idle_timeout_secs: u64,
    /// How long the server keeps lines stored for an offline device, in seconds.
    pub offline_ttl_secs: u64,
    /// The server takes and sends device vouches (its `hello` listed the `vouch` feature).
    pub vouch: bool,
    /// The server routes `rekey` frames (its `hello` listed the `rekey` feature).
    pub rekey: bool,
}

impl ServerInfo {
    /// How often to ping so the server never sees us idle: a third of its timeout, so two
    /// pings may be lost or late; None when the server has no idle timeout.
    pub fn keepalive(&self) -> Option<std::time::Duration> {
        (self.idle_timeout_secs > 0).then(|| {
            std::time::Duration::from_millis(self.idle_timeout_secs.saturating_mul(1000) / 3)
        })
    }
}

/// What the server said in its `login_ok`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedIn {
    /// The account logged in.
    pub user: String,
    /// Session id.
    pub session: u64,
    /// This device's key fingerprint, as the server registered it.
    pub device: Fingerprint,
    /// Users online, this one included.
    pub online: Vec<String>,
    /// Every registered device key, this one included.
    pub devices: Vec<DeviceInfo>,
    /// The default room.
    pub room: String,
    /// The rooms this user is in.
    pub rooms: Vec<RoomState>,
}

/// One thing the server sent, as the rest of the client handles it.
#[derive(Debug)]
pub enum Incoming {
    /// An end-to-end envelope, from a JSON `envelope` line or a binary frame.
    Envelope(Delivered),
    /// Any other frame (build it with `From<ServerFrame>`, which routes envelopes to
    /// [`Incoming::Envelope`]).
    Frame(ServerFrame),
}

impl Incoming {
    /// The JSON frame, unless this is an envelope.
    pub fn frame(&self) -> Option<&ServerFrame> {
        match self {
            Incoming::Envelope(_) => None,
            Incoming::Frame(frame) => Some(frame),
        }
    }
}

impl From<ServerFrame> for Incoming {
    /// A JSON `envelope` becomes [`Incoming::Envelope`] (its base64 decoded, the only time).
    fn from(frame: ServerFrame) -> Self {
        match frame {
            ServerFrame::Envelope {
                from,
                device,
                data,
                ts,
            } => Incoming::Envelope(Delivered::json(from, device, &data, ts)),
            frame => Incoming::Frame(frame),
        }
    }
}

/// A framed connection: JSON lines and binary envelope frames in and out.
pub struct Connection<S> {
    reader: FramedRead<ReadHalf<S>, WireCodec>,
    writer: WriteHalf<S>,
    /// The server's `hello` agreed to binary envelope frames.
    binary: bool,
    /// Between `login_ok` and the last `backlog` marker: envelopes were stored while this
    /// device was offline (only the server says so; see [`Delivered::stored`]).
    replaying: bool,
    /// The server's certificate fingerprint, which a login proof names; `hello` asks for
    /// `keyproof` when it is known.
    proof_server: Option<Fingerprint>,
    /// The device key that signs the proof (may come after `hello`: see [`Self::set_key`]).
    proof_key: Option<DeviceKey>,
    /// The challenge of the server's `hello`, when it offered `keyproof`.
    challenge: Option<[u8; CHALLENGE_BYTES]>,
}

impl<S: AsyncRead + AsyncWrite> Connection<S> {
    /// Wraps a connected stream (TLS, or an in-memory pipe in tests).
    pub fn new(stream: S) -> Self {
        let (r, w) = tokio::io::split(stream);
        Connection {
            reader: FramedRead::new(r, WireCodec::default()),
            writer: w,
            binary: false,
            replaying: false,
            proof_server: None,
            proof_key: None,
            challenge: None,
        }
    }

    /// Signs a login proof with `key` for the server whose certificate is `server` (see
    /// [`server_fingerprint`]) when the server offers it.
    pub fn with_proof(mut self, key: DeviceKey, server: Option<Fingerprint>) -> Self {
        self.proof_server = server;
        self.proof_key = Some(key);
        self
    }

    /// Asks for `keyproof` in `hello` for the server whose certificate is `server`; the key
    /// that signs the proof is given later with [`Self::set_key`], before `login` (a new key is
    /// made only once the server has answered).
    pub fn will_prove(mut self, server: Option<Fingerprint>) -> Self {
        self.proof_server = server;
        self
    }

    /// The device key that signs the login proof.
    pub fn set_key(&mut self, key: DeviceKey) {
        self.proof_key = Some(key);
    }

    /// True once `hello` negotiated binary envelope frames: `send` frames then go binary.
    pub fn binary(&self) -> bool {
        self.binary
    }

    /// Sends one frame and flushes it.
    pub async fn send(&mut self, frame: &ClientFrame) -> Result<()> {
        let line = chatd_proto::frame::encode(frame).context("encoding a frame")?;
        self.send_encoded(&line).await
    }

    /// Sends one already encoded frame (a newline-terminated line or a binary frame) and
    /// flushes it.
    pub async fn send_encoded(&mut self, frame: &[u8]) -> Result<()> {
        self.writer.write_all(frame).await?;
        self.writer.flush().await?;
        Ok(())
    }

    /// The next frame, or `None` when the server closed the connection. Cancel-safe.
    ///
    /// Frames that cannot be read (too long, not UTF-8, an unknown or truncated binary
    /// frame, unknown frame type from a newer server) are skipped with a note on stderr.
    /// Binary envelopes are taken whether or not they were negotiated: they are
    /// unambiguous, and a server sends them only when asked.
    pub async fn recv(&mut self) -> Result<Option<Incoming>> {
        loop {
            let line = match self.reader.next().await {
                None => return Ok(None),
                Some(Err(e)) => return Err(e.into()),
                Some(Ok(Err(
                    e @ (LineError::TooLong { .. }
                    | LineError::NotUtf8
                    | LineError::UnknownBinary { .. }
                    | LineError::ShortBinary),
                ))) => {
                    eprintln!("chat: {}", ignored("a frame", &e));
                    continue;
                }
                Some(Ok(Ok(Wire::Envelope { ts, data }))) => {
                    // Only live envelopes come as binary frames: the stored ones are over.
                    self.replaying = false;
                    return Ok(Some(Incoming::Envelope(Delivered::binary(ts, data))));
                }
                Some(Ok(Ok(Wire::Send(_)))) => {
                    eprintln!("chat: ignoring a binary send frame from the server");
                    continue;
                }
                Some(Ok(Ok(Wire::Line(line)))) => line,
            };
            match chatd_proto::frame::decode::<ServerFrame>(&line) {
                Ok(frame) => return Ok(Some(self.mark_stored(frame.into()))),
                Err(e) => eprintln!("chat: {}", ignored("an unreadable frame", &e)),
            }
        }
    }

    /// Flags an envelope that came during the replay of stored lines. The last `backlog`
    /// marker (`more: false`) ends the replay, and so does any frame that is never stored
    /// (the server holds live lines back until the replay is over; with nothing stored there
    /// is no marker); a `pong` or `error` may answer us meanwhile.
    fn mark_stored(&mut self, incoming: Incoming) -> Incoming {
        match incoming {
            Incoming::Envelope(mut delivered) => {
                delivered.stored = self.replaying;
                Incoming::Envelope(delivered)
            }
            Incoming::Frame(frame) => {
                match &frame {
                    // A marker after the replay ended does not start another one.
                    ServerFrame::Backlog { more, .. } => self.replaying &= *more,
                    ServerFrame::Chain { .. }
                    | ServerFrame::Pong { .. }
                    | ServerFrame::Error { .. } => {}
                    _ => self.replaying = false,
                }
                Incoming::Frame(frame)
            }
        }
    }

    /// Sends `hello` (asking for binary envelope frames) and waits for the server's `hello`.
    pub async fn hello(&mut self) -> Result<ServerInfo> {
        let mut asked = vec![FEATURE_VOUCH.to_string(), FEATURE_REKEY.to_string()];
        if self.proof_server.is_some() {
            asked.push(FEATURE_KEYPROOF.to_string());
        }
        self.send(&ClientFrame::Hello {
            version: PROTOCOL_VERSION,
            client: format!("chat/{}", env!("CARGO_PKG_VERSION")),
            binary: true,
            features: asked,
        })
        .await
        .context("sending hello")?;
        loop {
            match self.reply("hello").await? {
                ServerFrame::Hello {
                    version,
                    server,
                    max_line_bytes,
                    max_text_bytes,
                    idle_timeout_secs,
                    binary,
                    offline_ttl_secs,
                    features,
                    challenge,
                } => {
                    if version != PROTOCOL_VERSION {
                        bail!(
                            "the server speaks protocol version {version}, this client speaks {PROTOCOL_VERSION}"
                        );
                    }
                    // The server may send lines longer than it accepts: JSON escapes a
                    // control character in 6 bytes, and login_ok lists every registered
                    // device key on the server (about 500-650 bytes each).
                    let max = max_line_bytes
                        .max(max_text_bytes.saturating_mul(6) + 4096)
                        .max(MAX_SERVER_LINE);
                    *self.reader.decoder_mut() = WireCodec::new(max);
                    // An old server leaves the field out: JSON frames only.
                    self.binary = binary;
                    // Anything but 32 bytes of base64 is no challenge: an ordinary login.
                    self.challenge = challenge
                        .filter(|_| features.iter().any(|f| f == FEATURE_KEYPROOF))
                        .and_then(|c| {
                            base64::engine::general_purpose::STANDARD
                                .decode(c.trim())
                                .ok()
                        })
                        .and_then(|c| c.try_into().ok());
                    return Ok(ServerInfo {
                        server: sanitize(&server),
                        max_line_bytes,
                        max_text_bytes,
                        idle_timeout_secs,
                        offline_ttl_secs: offline_ttl_secs.unwrap_or(DEFAULT_OFFLINE_TTL_SECS),
                        vouch: features.iter().any(|f| f == FEATURE_VOUCH),
                        rekey: features.iter().any(|f| f == FEATURE_REKEY),
                    });
                }
                ServerFrame::Error { message, .. } => {
                    bail!("the server refused hello: {}", sanitize(&message))
                }
                other => unexpected_or_bye(other)?,
            }
        }
    }

    /// Sends `login` and waits for `login_ok` (or an error: [`LoginFailed`]).
    pub async fn login(
        &mut self,
        user: &str,
        password: &str,
        device_key: &str,
    ) -> Result<LoggedIn> {
        let proof = self.proof(user);
        self.send(&ClientFrame::Login {
            user: user.to_string(),
            password: password.to_string(),
            device_key: device_key.to_string(),
            proof,
        })
        .await
        .context("sending login")?;
        loop {
            match self.reply("login").await? {
                ServerFrame::LoginOk {
                    user,
                    session,
                    device,
                    online,
                    devices,
                    room,
                    rooms,
                } => {
                    self.replaying = true;
                    return Ok(LoggedIn {
                        user,
                        session,
                        device,
                        online,
                        devices,
                        room,
                        rooms,
                    });
                }
                ServerFrame::Error { code, message } => {
                    let why = match code {
                        ErrorCode::InvalidCredentials => Refusal::Credentials,
                        _ => Refusal::Other,
                    };
                    return Err(LoginFailed(sanitize(&message), why).into());
                }
                other => unexpected_or_bye(other)?,
            }
        }
    }

    /// The `login` proof for `user`: the device key's signature over the server's challenge;
    /// None when there is no challenge or no key (the login is then an ordinary one).
    fn proof(&self, user: &str) -> Option<String> {
        let (key, server) = (self.proof_key.as_ref()?, self.proof_server.as_ref()?);
        let challenge = self.challenge.as_ref()?;
        let signed = LoginChallenge {
            challenge,
            user,
            server,
        };
        match signed.sign(key) {
            Ok(sig) => Some(base64::engine::general_purpose::STANDARD.encode(sig)),
            Err(e) => {
                eprintln!("chat: cannot sign the login proof ({e}); logging in without it");
                None
            }
        }
    }

    /// The next frame during the handshake, with a timeout; a closed connection is an error.
    /// An envelope cannot be for us before login, so it is skipped.
    async fn reply(&mut self, what: &str) -> Result<ServerFrame> {
        let deadline = tokio::time::Instant::now() + REPLY_TIMEOUT;
        loop {
            match tokio::time::timeout_at(deadline, self.recv()).await {
                Err(_) => bail!("the server did not answer {what} in time"),
                Ok(Err(e)) => {
                    return Err(e)
                        .context(format!("connection lost waiting for the answer to {what}"));
                }
                Ok(Ok(None)) => bail!("the server closed the connection during {what}"),
                Ok(Ok(Some(Incoming::Envelope(_)))) => {}
                Ok(Ok(Some(Incoming::Frame(frame)))) => return Ok(frame),
            }
        }
    }
}

/// The note for a frame skipped as unreadable. The error may quote what the server sent
/// (serde names an unknown type or field as it came), so it is sanitized.
fn ignored(what: &str, error: &dyn fmt::Display) -> String {
    sanitize(&format!("ignoring {what} from the server: {error}"))
}

/// During the handshake: `bye` ends it, `pong`/notices are skipped, anything else is odd but skipped.
fn unexpected_or_bye(frame: ServerFrame) -> Result<()> {
    match frame {
        ServerFrame::Bye { reason } => {
            bail!("server closed the connection: {}", sanitize(&reason))
        }
        _ => Ok(()),
    }
}

/// What an older server, whose `hello` does not say, keeps stored lines for (7 days).
pub const DEFAULT_OFFLINE_TTL_SECS: u64 = 604_800;

/// Longest line read from a server after hello: login_ok for a server with 40,000 device
/// keys; it only bounds what a hostile server can make this client buffer.
pub const MAX_SERVER_LINE: usize = 32 << 20;

#[cfg(test)]
mod stored_tests;
#[cfg(test)]
mod tests;
