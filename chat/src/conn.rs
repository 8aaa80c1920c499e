//! Connecting to chatd: TCP + TLS with the trust rules of [`crate::trust`], then the
//! `hello` / `login` exchange, leaving a [`Connection`] that sends and receives frames.
//!
//! `hello` asks for binary envelope frames (proto's `codec`); a server that agrees sends
//! live envelopes as binary frames and takes our `send`s as binary frames too. Both kinds of
//! envelope reach the rest of the client as one [`Incoming::Envelope`].
//!
//! Nothing here prints to stdout, so any UI (plain lines now, a TUI later) can use it;
//! trust warnings go to stderr and questions go through [`AskTrust`].

use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use chatd_proto::frame::{DeviceInfo, FEATURE_REKEY, FEATURE_VOUCH, RoomState};
use chatd_proto::{
    ClientFrame, Fingerprint, LineError, PROTOCOL_VERSION, ServerFrame, Wire, WireCodec,
};
use futures_util::StreamExt;
use rustls::RootCertStore;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_util::codec::FramedRead;

use crate::secure::Delivered;
use crate::text::sanitize;
use crate::trust::{self, Decision, KnownServers, PinningVerifier};

/// How long the TCP connect and the TLS handshake may each take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
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

/// Opens a TLS connection to `addr`, applying `trust` (which may pin or ask and reconnect).
///
/// `asker` is `None` when nobody can be asked (no terminal, or stdin carries the password).
pub async fn connect_tls<A: AskTrust>(
    addr: &ServerAddr,
    trust: &Trust,
    mut asker: Option<&mut A>,
) -> Result<TlsStream<TcpStream>> {
    let server_name = ServerName::try_from(addr.host.clone())
        .with_context(|| format!("bad server name {:?}", addr.host))?;
    match trust {
        Trust::CaFile(path) => {
            let roots = trust::load_ca_file(path)?;
            let verifier = trust::webpki_verifier(roots)?
                .ok_or_else(|| anyhow!("no certificates in {}", path.display()))?;
            handshake(addr, server_name, trust::client_config(verifier)?).await
        }
        Trust::Pinning {
            roots,
            known_servers,
            accept,
        } => {
            let ca = trust::webpki_verifier(roots.clone())?;
            let key = addr.to_string();
            // Two pin changes at most: the first connect, then one reconnect after pinning.
            for _ in 0..3 {
                let mut known = KnownServers::load(known_servers)?;
                let pin = known.lookup(&key);
                let verifier =
                    Arc::new(PinningVerifier::new(ca.clone(), pin.map(|p| p.fingerprint)));
                let config = trust::client_config(verifier.clone())?;
                let err = match handshake(addr, server_name.clone(), config).await {
                    Ok(stream) => return Ok(stream),
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
                known.save()?;
                eprintln!(
                    "chat: pinned {presented} for {key} in {}",
                    known.path().display()
                );
            }
            bail!("{key} keeps presenting different certificates; giving up")
        }
    }
}

/// TCP connect and TLS handshake, each with a timeout.
async fn handshake(
    addr: &ServerAddr,
    server_name: ServerName<'static>,
    config: rustls::ClientConfig,
) -> Result<TlsStream<TcpStream>> {
    let tcp = tokio::time::timeout(
        CONNECT_TIMEOUT,
        TcpStream::connect((addr.host.as_str(), addr.port)),
    )
    .await
    .map_err(|_| anyhow!("cannot connect to {addr}: timed out"))?
    .with_context(|| format!("cannot connect to {addr}"))?;
    let _ = tcp.set_nodelay(true);
    let connector = TlsConnector::from(Arc::new(config));
    tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(server_name, tcp))
        .await
        .map_err(|_| anyhow!("TLS handshake with {addr} timed out"))?
        .with_context(|| format!("TLS handshake with {addr} failed"))
}

/// The server refused the login; main exits with status 3.
#[derive(Debug, thiserror::Error)]
#[error("login failed: {0}")]
pub struct LoginFailed(pub String);

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
        }
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
        self.send(&ClientFrame::Hello {
            version: PROTOCOL_VERSION,
            client: format!("chat/{}", env!("CARGO_PKG_VERSION")),
            binary: true,
            features: vec![FEATURE_VOUCH.to_string(), FEATURE_REKEY.to_string()],
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
        self.send(&ClientFrame::Login {
            user: user.to_string(),
            password: password.to_string(),
            device_key: device_key.to_string(),
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
                ServerFrame::Error { message, .. } => {
                    return Err(LoginFailed(sanitize(&message)).into());
                }
                other => unexpected_or_bye(other)?,
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
mod tests {
    use super::*;
    use crate::secure::SentBy;
    use base64::Engine;
    use bytes::Bytes;
    use chatd_proto::ErrorCode;
    use chatd_proto::codec::{BINARY_ENVELOPE, BINARY_MARKER, binary_envelope, binary_send};
    use chatd_proto::frame::{decode, encode};
    use tokio::io::DuplexStream;

    #[test]
    fn an_unreadable_frame_is_reported_without_its_escapes() {
        // serde quotes an unknown type as it came: ESC, OSC, BEL, bidi override.
        let line = r#"{"type":"\u001b]0;pwned\u0007\u001b[2J\u202e"}"#;
        let e = decode::<ServerFrame>(line).unwrap_err();
        assert!(e.to_string().contains('\u{1b}'), "{e}");
        let note = ignored("an unreadable frame", &e);
        assert!(note.starts_with("ignoring an unreadable frame from the server: "));
        assert!(!note.chars().any(char::is_control), "{note:?}");
        assert!(!note.contains('\u{202e}'), "{note:?}");
        assert!(
            note.contains("\u{fffd}]0;pwned\u{fffd}\u{fffd}[2J\u{fffd}"),
            "{note:?}"
        );
    }

    #[test]
    fn parses_server_addresses() {
        let a = ServerAddr::parse("127.0.0.1:8443").unwrap();
        assert_eq!((a.host.as_str(), a.port), ("127.0.0.1", 8443));
        assert_eq!(a.to_string(), "127.0.0.1:8443");
        assert_eq!(
            ServerAddr::parse("Chat.Example.org:9000")
                .unwrap()
                .to_string(),
            "chat.example.org:9000"
        );
        assert_eq!(ServerAddr::parse("example.org").unwrap().port, 8443);
        let v6 = ServerAddr::parse("[::1]:7000").unwrap();
        assert_eq!((v6.host.as_str(), v6.port), ("::1", 7000));
        assert_eq!(v6.to_string(), "[::1]:7000");
        assert_eq!(ServerAddr::parse("::1").unwrap().to_string(), "[::1]:8443");
        for bad in ["", ":80", "host:", "host:0", "host:99999", "[::1", "[::1]x"] {
            assert!(ServerAddr::parse(bad).is_err(), "{bad}");
        }
    }

    /// A fake server on the other end of a pipe: answers each client frame from `script`
    /// with raw bytes (JSON lines, binary frames or junk). It reads like chatd, lines and
    /// binary frames; a binary `send` reaches the script as `Err(bytes)`.
    pub(super) async fn fake_server_raw(
        stream: DuplexStream,
        mut script: impl FnMut(Result<ClientFrame, Bytes>) -> Vec<Bytes>,
    ) {
        let (r, mut w) = tokio::io::split(stream);
        let mut frames = FramedRead::new(r, WireCodec::new(1 << 20));
        while let Some(Ok(Ok(wire))) = frames.next().await {
            let got = match wire {
                Wire::Line(line) => Ok(decode(&line).unwrap()),
                Wire::Send(data) => Err(data),
                Wire::Envelope { .. } => panic!("the client sent a binary envelope"),
            };
            for reply in script(got) {
                w.write_all(&reply).await.unwrap();
            }
        }
    }

    /// [`fake_server_raw`] for a server speaking JSON only, like one older than binary frames.
    async fn fake_server(
        stream: DuplexStream,
        mut script: impl FnMut(ClientFrame) -> Vec<ServerFrame>,
    ) {
        fake_server_raw(stream, move |got| match got {
            Ok(frame) => script(frame).iter().map(json).collect(),
            Err(_) => panic!("a binary send to a server that did not agree to them"),
        })
        .await
    }

    pub(super) fn json(frame: &ServerFrame) -> Bytes {
        encode(frame).unwrap()
    }

    /// A `hello` from a server agreeing to binary frames or (false) knowing nothing of them.
    fn hello_binary(binary: bool) -> ServerFrame {
        ServerFrame::Hello {
            version: PROTOCOL_VERSION,
            server: "chatd/test".into(),
            max_line_bytes: 65536,
            max_text_bytes: 100,
            idle_timeout_secs: 0,
            binary,
            offline_ttl_secs: None,
            features: Vec::new(),
        }
    }

    fn server_hello() -> ServerFrame {
        hello_binary(false)
    }

    #[tokio::test]
    async fn binary_frames_are_asked_for_and_used_only_if_the_server_agrees() {
        for agree in [false, true] {
            let (client, server) = tokio::io::duplex(4096);
            tokio::spawn(fake_server(server, move |f| match f {
                ClientFrame::Hello { binary, .. } => {
                    assert!(binary, "the client asks for binary frames");
                    vec![hello_binary(agree)]
                }
                _ => vec![],
            }));
            let mut c = Connection::new(client);
            assert!(!c.binary(), "nothing is negotiated before hello");
            c.hello().await.unwrap();
            assert_eq!(c.binary(), agree);
        }
        // An old server's hello has no `binary` field at all.
        let line = encode(&hello_binary(false)).unwrap();
        assert!(!String::from_utf8_lossy(&line).contains("binary"));
    }

    #[tokio::test]
    async fn binary_and_json_envelopes_arrive_alike() {
        let (client, server) = tokio::io::duplex(1 << 16);
        let device = Fingerprint::of(b"BOB");
        tokio::spawn(fake_server_raw(server, move |got| match got {
            Ok(ClientFrame::Hello { .. }) => vec![
                json(&hello_binary(true)),
                binary_envelope(1_764_300_000_001, b"live bytes"),
                // Stored while offline: replayed as JSON even on a binary session.
                json(&ServerFrame::Envelope {
                    from: "bob".into(),
                    device,
                    data: base64::engine::general_purpose::STANDARD.encode(b"stored bytes"),
                    ts: 1_764_300_000_002,
                }),
                json(&ServerFrame::Envelope {
                    from: "bob".into(),
                    device,
                    data: "not base64!".into(),
                    ts: 3,
                }),
            ],
            _ => vec![],
        }));
        let mut c = Connection::new(client);
        c.hello().await.unwrap();
        assert!(c.binary());
        let mut next = async || match c.recv().await.unwrap() {
            Some(Incoming::Envelope(d)) => d,
            other => panic!("{other:?}"),
        };
        let live = next().await;
        assert_eq!(live.sent_by, SentBy::Header);
        assert_eq!(live.data, Ok(Bytes::from_static(b"live bytes")));
        assert_eq!(live.ts, 1_764_300_000_001);
        let stored = next().await;
        let bob = SentBy::Named {
            user: "bob".into(),
            device,
        };
        assert_eq!(stored.sent_by, bob);
        assert_eq!(stored.data, Ok(Bytes::from_static(b"stored bytes")));
        assert_eq!(stored.ts, 1_764_300_000_002);
        // Bad base64 still arrives, so that it is reported as an unreadable message.
        let bad = next().await;
        assert_eq!(bad.sent_by, bob);
        assert!(bad.data.is_err());
    }

    #[tokio::test]
    async fn bad_binary_frames_are_skipped_and_the_session_continues() {
        let (client, server) = tokio::io::duplex(1 << 16);
        tokio::spawn(fake_server_raw(server, move |got| match got {
            Ok(ClientFrame::Hello { .. }) => vec![
                // Over the 64 KiB cap in force before hello: skipped without being buffered.
                binary_envelope(1, &vec![b'x'; 64 << 10]),
                json(&hello_binary(true)),
                // Unknown kind, envelope too short for its time stamp, a client's frame kind.
                Bytes::from_static(&[BINARY_MARKER, b'Z', 0, 0, 0, 2, b'{', b'\n']),
                Bytes::from_static(&[BINARY_MARKER, BINARY_ENVELOPE, 0, 0, 0, 3, 1, 2, 3]),
                binary_send(b"not for clients"),
                // Longer than the first cap: hello raised it for binary frames too.
                binary_envelope(2, &vec![b'y'; 100 << 10]),
                json(&ServerFrame::Pong { nonce: 7 }),
            ],
            _ => vec![],
        }));
        let mut c = Connection::new(client);
        c.hello().await.unwrap();
        match c.recv().await.unwrap() {
            Some(Incoming::Envelope(d)) => {
                assert_eq!((d.ts, d.data.map(|b| b.len())), (2, Ok(100 << 10)));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            c.recv().await.unwrap(),
            Some(Incoming::Frame(ServerFrame::Pong { nonce: 7 }))
        ));
    }

    #[tokio::test]
    async fn hello_and_login() {
        let (client, server) = tokio::io::duplex(4096);
        tokio::spawn(fake_server(server, |f| match f {
            ClientFrame::Hello {
                version, client, ..
            } => {
                assert_eq!(version, PROTOCOL_VERSION);
                assert!(client.starts_with("chat/"));
                vec![ServerFrame::Pong { nonce: 0 }, server_hello()]
            }
            ClientFrame::Login {
                user,
                password,
                device_key,
            } if password == "pw" => {
                assert_eq!(device_key, "S0VZ");
                vec![ServerFrame::LoginOk {
                    user,
                    session: 7,
                    device: Fingerprint::of(b"KEY"),
                    online: vec!["alice".into(), "bob".into()],
                    devices: vec![],
                    room: "lobby".into(),
                    rooms: vec![],
                }]
            }
            _ => vec![ServerFrame::error(
                ErrorCode::InvalidCredentials,
                "invalid credentials",
            )],
        }));
        let mut c = Connection::new(client);
        let info = c.hello().await.unwrap();
        assert_eq!(info.max_text_bytes, 100);
        let err = c.login("alice", "wrong", "S0VZ").await.unwrap_err();
        assert_eq!(
            err.downcast_ref::<LoginFailed>().unwrap().to_string(),
            "login failed: invalid credentials"
        );
        let ok = c.login("alice", "pw", "S0VZ").await.unwrap();
        assert_eq!(ok.device, Fingerprint::of(b"KEY"));
        assert_eq!(ok.session, 7);
        assert_eq!(ok.online, vec!["alice", "bob"]);
    }

    /// A server with a thousand registered devices sends a login_ok of ~0.5 MB.
    #[tokio::test]
    async fn a_login_ok_listing_many_devices_is_read() {
        let (client, server) = tokio::io::duplex(1 << 16);
        let devices: Vec<DeviceInfo> = (0..1000)
            .map(|i| DeviceInfo {
                user: format!("user{i}"),
                fingerprint: Fingerprint::of(format!("{i}").as_bytes()),
                key: "K".repeat(400),
                online: false,
                vouches: Vec::new(),
            })
            .collect();
        tokio::spawn(fake_server(server, move |f| match f {
            ClientFrame::Hello { .. } => vec![server_hello()],
            ClientFrame::Login { user, .. } => vec![ServerFrame::LoginOk {
                user,
                session: 1,
                device: Fingerprint::of(b"KEY"),
                online: vec![],
                devices: devices.clone(),
                room: "lobby".into(),
                rooms: vec![],
            }],
            _ => vec![],
        }));
        let mut c = Connection::new(client);
        c.hello().await.unwrap();
        let ok = c.login("alice", "pw", "S0VZ").await.unwrap();
        assert_eq!(ok.devices.len(), 1000);
    }

    #[tokio::test]
    async fn refused_hello_and_early_close() {
        let (client, server) = tokio::io::duplex(4096);
        tokio::spawn(fake_server(server, |_| {
            vec![
                ServerFrame::error(ErrorCode::UnsupportedVersion, "unsupported version"),
                ServerFrame::Bye {
                    reason: "bad".into(),
                },
            ]
        }));
        let err = Connection::new(client).hello().await.unwrap_err();
        assert!(err.to_string().contains("unsupported version"), "{err}");

        let (client, server) = tokio::io::duplex(4096);
        drop(server);
        let err = Connection::new(client).hello().await.unwrap_err();
        assert!(err.downcast_ref::<LoginFailed>().is_none());
    }
}
