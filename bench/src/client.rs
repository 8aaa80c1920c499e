//! Bench clients: TLS with a pinned certificate, login with a device key, a fast reader and a
//! sender of pre-sealed envelopes.
//!
//! Readers must never fall behind (chatd disconnects a client whose outbound queue fills), so
//! each client is read continuously (by its own task here, or by a receiver thread,
//! [`crate::receivers`], through the same [`Receiver`]) and parsed only as far as needed: a
//! binary `envelope` frame, or a line starting `{"type":"envelope"`, is identified by the
//! sender and chain index in its envelope header ([`EnvelopeReader`]), and its send instant is
//! looked up in [`Run::sent_ns`], which the senders fill in as they write. Other frames are
//! skipped unless they are a `bye` or an `error`, which are recorded.
//!
//! With `--wire json` the stream is JSON lines only and is split in place ([`Lines`]); with
//! `--wire binary` it is split by proto's [`WireCodec`], since binary frames may hold any byte.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::Poll;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::BytesMut;
use chatd_proto::frame::{ClientFrame, ServerFrame};
use chatd_proto::{Fingerprint, PROTOCOL_VERSION, Wire, WireCodec};
use hdrhistogram::Histogram;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, WriteHalf};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_util::codec::Decoder;
use tokio_util::sync::CancellationToken;

use crate::cli::WireMode;
use crate::e2e::{Delivered, EnvelopeReader};

/// A logged-in client's TLS stream.
pub type Tls = TlsStream<TcpStream>;

/// Longest wait for one connection + login.
const LOGIN_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest wait for the server's `bye` after a `quit`.
const QUIT_TIMEOUT: Duration = Duration::from_secs(10);
/// Initial read buffer per client: chatd batches up to 64 KiB per write, and envelope lines are
/// several hundred bytes, so fewer, larger reads.
const READ_BUFFER: usize = 64 * 1024;
/// Latencies are recorded in microseconds up to this (5 minutes); larger ones saturate.
const MAX_LATENCY_US: u64 = 300_000_000;
/// A receiver keeps this many latencies before it adds them to its histograms: one record
/// per frame touched the histogram's cold cache lines once per delivery (4 % of chat-bench's
/// CPU in the paced 500-member run); a batch touches them once per batch.
const LATENCY_BATCH: usize = 256;
/// Marks a batched latency as the storm phase's ([`MAX_LATENCY_US`] is below it).
const STORM_BIT: u32 = 1 << 31;
/// Longest server line or binary frame the binary-mode reader takes, as the chat client: a
/// `login_ok` lists every registered device and can be megabytes long.
const MAX_SERVER_FRAME: usize = 32 << 20;

// ---------------------------------------------------------------------------------------------
// TLS
// ---------------------------------------------------------------------------------------------

/// Accepts the server certificate only if its SHA-256 fingerprint is the pinned one.
#[derive(Debug)]
struct PinnedVerifier {
    expected: Fingerprint,
    algorithms: rustls::crypto::WebPkiSupportedAlgorithms,
}

impl rustls::client::danger::ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        if Fingerprint::of(end_entity.as_ref()) == self.expected {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// A TLS connector (ring provider) that pins `fingerprint`.
pub fn connector(fingerprint: Fingerprint) -> anyhow::Result<TlsConnector> {
    connector_with(fingerprint, true)
}

/// [`connector`] that never resumes a session: every connection is a full handshake
/// (certificate, signature, key exchange), as a fresh client's is.
pub fn full_handshake_connector(fingerprint: Fingerprint) -> anyhow::Result<TlsConnector> {
    connector_with(fingerprint, false)
}

fn connector_with(fingerprint: Fingerprint, resume: bool) -> anyhow::Result<TlsConnector> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(PinnedVerifier {
        expected: fingerprint,
        algorithms: provider.signature_verification_algorithms,
    });
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS configuration")?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    let mut config = config;
    if !resume {
        config.resumption = rustls::client::Resumption::disabled();
    }
    Ok(TlsConnector::from(Arc::new(config)))
}

// ---------------------------------------------------------------------------------------------
// Line buffer
// ---------------------------------------------------------------------------------------------

/// Bytes read but not yet consumed, split into `\n`-terminated lines without copying.
pub struct Lines {
    buf: Vec<u8>,
    filled: usize,
    consumed: usize,
}

impl Lines {
    fn new() -> Lines {
        Lines {
            buf: vec![0; READ_BUFFER],
            filled: 0,
            consumed: 0,
        }
    }

    /// The next complete line in the buffer (range into it, `\n` excluded).
    fn take(&mut self) -> Option<Range<usize>> {
        let pending = &self.buf[self.consumed..self.filled];
        // memchr: lines are several hundred bytes and this runs for every delivery.
        let len = memchr::memchr(b'\n', pending)?;
        let line = self.consumed..self.consumed + len;
        self.consumed += len + 1;
        Some(line)
    }

    fn get(&self, range: Range<usize>) -> &[u8] {
        &self.buf[range]
    }

    /// Reads more; Ok(0) at end of stream. Cancel-safe.
    async fn fill<R: AsyncRead + Unpin>(&mut self, rd: &mut R) -> std::io::Result<usize> {
        let n = rd.read(self.room(1)).await?;
        self.filled += n;
        Ok(n)
    }

    /// Appends `bytes`.
    fn extend(&mut self, bytes: &[u8]) {
        self.room(bytes.len())[..bytes.len()].copy_from_slice(bytes);
        self.filled += bytes.len();
    }

    /// The free end of the buffer, at least `need` bytes: moves the unconsumed bytes to the
    /// front, and grows the buffer if that is not enough.
    fn room(&mut self, need: usize) -> &mut [u8] {
        if self.consumed > 0 {
            self.buf.copy_within(self.consumed..self.filled, 0);
            self.filled -= self.consumed;
            self.consumed = 0;
        }
        if self.buf.len() - self.filled < need {
            let bigger = (self.buf.len() * 2).max(self.filled + need);
            self.buf.resize(bigger, 0);
        }
        &mut self.buf[self.filled..]
    }
}

/// One item a client reads from chatd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A JSON line, newline excluded.
    Line(&'a [u8]),
    /// The envelope bytes of a binary `envelope` frame.
    Envelope(&'a [u8]),
    /// What the binary-mode codec refused (a binary frame of an unknown kind, too short or
    /// too long; a line too long or not UTF-8), or a binary `send`, which chatd never sends.
    Unreadable,
}

/// Bytes read from chatd and not yet used, split as the wire mode says.
pub enum Incoming {
    /// `--wire json`: JSON lines only, split in place without copying.
    Lines(Lines),
    /// `--wire binary`: lines and binary frames, split by proto's codec.
    Wire {
        /// Bytes not yet decoded.
        buf: BytesMut,
        /// Tracks where the next frame starts (and what an overlong one still needs skipped).
        codec: WireCodec,
    },
}

impl Incoming {
    /// Continues what login read with `lines` (anything past `login_ok` included).
    fn after_login(lines: Lines, wire: WireMode) -> Incoming {
        match wire {
            WireMode::Json => Incoming::Lines(lines),
            WireMode::Binary => {
                let mut buf = BytesMut::with_capacity(READ_BUFFER);
                buf.extend_from_slice(&lines.buf[lines.consumed..lines.filled]);
                Incoming::Wire {
                    buf,
                    codec: WireCodec::new(MAX_SERVER_FRAME),
                }
            }
        }
    }

    /// Hands each complete item in the buffer, with the bytes it took on the wire, to `f`
    /// until `f` returns true; Ok(true) if it did. An error is the codec's, and ends the
    /// stream as a read error would.
    fn drain(&mut self, mut f: impl FnMut(Frame<'_>, usize) -> bool) -> std::io::Result<bool> {
        match self {
            Incoming::Lines(lines) => {
                while let Some(range) = lines.take() {
                    let len = range.len();
                    if f(Frame::Line(lines.get(range)), len + 1) {
                        return Ok(true);
                    }
                }
            }
            Incoming::Wire { buf, codec } => loop {
                let before = buf.len();
                let Some(item) = codec.decode(buf)? else {
                    break;
                };
                let wire_len = before - buf.len();
                let stop = match &item {
                    Ok(Wire::Line(line)) => f(Frame::Line(line.as_bytes()), wire_len),
                    Ok(Wire::Envelope { data, .. }) => f(Frame::Envelope(data), wire_len),
                    Ok(Wire::Send(_)) | Err(_) => f(Frame::Unreadable, wire_len),
                };
                if stop {
                    return Ok(true);
                }
            },
        }
        Ok(false)
    }

    /// Reads more; Ok(0) at end of stream. Cancel-safe.
    async fn fill<R: AsyncRead + Unpin>(&mut self, rd: &mut R) -> std::io::Result<usize> {
        match self {
            Incoming::Lines(lines) => lines.fill(rd).await,
            Incoming::Wire { buf, .. } => {
                // Room for one large read; reclaims the space of frames already used.
                buf.reserve(READ_BUFFER);
                rd.read_buf(buf).await
            }
        }
    }

    /// Appends bytes read elsewhere (the receiver threads' TLS plaintext).
    pub(crate) fn extend(&mut self, bytes: &[u8]) {
        match self {
            Incoming::Lines(lines) => lines.extend(bytes),
            Incoming::Wire { buf, .. } => buf.extend_from_slice(bytes),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Login
// ---------------------------------------------------------------------------------------------

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
    tokio::time::timeout(
        LOGIN_TIMEOUT,
        login_inner(addr, connector, user, password, device_key, wire),
    )
    .await
    .with_context(|| format!("login of {user} timed out"))?
}

async fn login_inner(
    addr: SocketAddr,
    connector: &TlsConnector,
    user: &str,
    password: &str,
    device_key: &str,
    wire: WireMode,
) -> anyhow::Result<(Tls, Incoming)> {
    let mut tls = connect(addr, connector).await?;
    let login = ClientFrame::Login {
        user: user.into(),
        password: password.into(),
        device_key: device_key.into(),
    };
    write_frames(&mut tls, &[hello_frame(wire), login]).await?;
    // Lines are safe up to `login_ok`: chatd sends envelopes, binary or not, only after it.
    let mut lines = Lines::new();
    loop {
        while let Some(range) = lines.take() {
            let line = lines.get(range);
            if line.starts_with(br#"{"type":"hello""#) {
                check_hello(line, wire)?;
            }
            if line.starts_with(br#"{"type":"login_ok""#) {
                return Ok((tls, Incoming::after_login(lines, wire)));
            }
            if line.starts_with(br#"{"type":"error""#) || line.starts_with(br#"{"type":"bye""#) {
                bail!(
                    "login of {user} refused: {}",
                    String::from_utf8_lossy(line).trim()
                );
            }
        }
        if lines.fill(&mut tls).await? == 0 {
            bail!("server closed the connection during login of {user}");
        }
    }
}

/// TCP (no Nagle) and a TLS handshake with the pinned certificate.
async fn connect(addr: SocketAddr, connector: &TlsConnector) -> anyhow::Result<Tls> {
    let tcp = TcpStream::connect(addr)
        .await
        .with_context(|| format!("cannot connect to {addr}"))?;
    tcp.set_nodelay(true)?;
    connector
        .connect(ServerName::IpAddress(addr.ip().into()), tcp)
        .await
        .context("TLS handshake failed")
}

/// Says `quit` on a logged-in connection and reads (skipping whatever else arrives) until the
/// server's `bye` or the end of the stream, then closes our side. Waiting for the `bye` means
/// the server has ended the session before the caller connects again.
pub async fn quit(mut tls: Tls, mut incoming: Incoming) -> anyhow::Result<()> {
    let bye = async {
        write_frames(&mut tls, &[ClientFrame::Quit]).await?;
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

/// Sends `frames` as protocol lines in one write.
async fn write_frames(tls: &mut Tls, frames: &[ClientFrame]) -> anyhow::Result<()> {
    let mut out = Vec::new();
    for frame in frames {
        out.extend_from_slice(&chatd_proto::frame::encode(frame)?);
    }
    tls.write_all(&out).await?;
    tls.flush().await?;
    Ok(())
}

/// The bench's `hello`, asking for binary frames when `wire` says so.
fn hello_frame(wire: WireMode) -> ClientFrame {
    ClientFrame::Hello {
        version: PROTOCOL_VERSION,
        client: format!("chat-bench/{}", env!("CARGO_PKG_VERSION")),
        binary: wire.binary(),
    }
}

/// Checks the server's `hello` line agreed to what `wire` asked for. A server that answers a
/// binary request with JSON only is an error rather than a quiet fallback: the run would measure
/// the other wire format under this one's name.
fn check_hello(line: &[u8], wire: WireMode) -> anyhow::Result<()> {
    if !wire.binary() {
        return Ok(());
    }
    let text = std::str::from_utf8(line).context("server hello is not UTF-8")?;
    match chatd_proto::frame::decode::<ServerFrame>(text) {
        Ok(ServerFrame::Hello { binary: true, .. }) => Ok(()),
        Ok(ServerFrame::Hello { server, .. }) => bail!(
            "the server ({server}) did not agree to binary envelope frames in its hello; \
             run with --wire json"
        ),
        _ => bail!("unreadable server hello: {}", text.trim()),
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
        let mut tls = connect(addr, connector).await?;
        write_frames(&mut tls, &[hello_frame(wire)]).await?;
        let mut lines = Lines::new();
        loop {
            if let Some(range) = lines.take() {
                let line = lines.get(range);
                if !line.starts_with(br#"{"type":"hello""#) {
                    bail!(
                        "expected hello, got {}",
                        String::from_utf8_lossy(line).trim()
                    );
                }
                check_hello(line, wire)?;
                break;
            }
            if lines.fill(&mut tls).await? == 0 {
                bail!("server closed the connection before its hello");
            }
        }
        let _ = tls.shutdown().await;
        Ok(())
    };
    tokio::time::timeout(LOGIN_TIMEOUT, setup)
        .await
        .context("connection setup timed out")?
}

// ---------------------------------------------------------------------------------------------
// Fan-out run
// ---------------------------------------------------------------------------------------------

/// State every client task of one run shares.
pub struct Run {
    /// Origin of every timestamp in [`Run::sent_ns`].
    pub origin: Instant,
    /// Messages each receiver should get.
    pub expected: u64,
    /// Number of senders (sender ids are `0..senders`).
    pub senders: usize,
    /// Receivers that got everything.
    pub complete: AtomicUsize,
    /// Receivers that stopped early (bye, error, end of stream).
    pub ended: AtomicUsize,
    /// Nanoseconds since `origin` when the last receiver completed.
    pub last_complete_ns: AtomicU64,
    /// Receivers (every logged-in client).
    pub receivers: usize,
    /// Per sender, a ring of per-sequence-number delivery counts (slot `seq % len`); empty
    /// without a send window.
    pub acks: Vec<Vec<AtomicUsize>>,
    /// Per sender: every message up to this sequence number reached every receiver.
    pub delivered_through: Vec<AtomicU64>,
    /// Per sender: woken when `delivered_through` moves or a receiver ends.
    pub progress: Vec<Notify>,
    /// Per sender and chain index: when it was written, nanoseconds since `origin` (0: not
    /// yet). The send time cannot travel in the message any more (it is encrypted), so the
    /// in-process senders publish it here for the receivers.
    pub sent_ns: Vec<Vec<AtomicU64>>,
    /// Login-storm mode: messages from this chain index on were sent during the storm, and
    /// their latency goes to [`ReadStats::storm_latency_us`]. None: one phase.
    pub storm_from: Option<u32>,
    /// Tells readers and senders to stop; private, so that only [`Run::finish`] cancels it
    /// (receivers read [`Run::stopping`], which it sets first).
    stop: CancellationToken,
    /// Set by [`Run::finish`] just before `stop` is cancelled: receivers read this, not the
    /// token, on every read.
    stopping: AtomicBool,
}

impl Run {
    /// Shared state for `receivers` clients each expecting `expected` messages from `senders`
    /// senders of `messages` messages; a send window needs a ring of `window + 1` counters.
    /// With `storm_from`, latency is kept per phase (see [`Run::storm_from`]).
    pub fn new(
        expected: u64,
        senders: usize,
        messages: usize,
        receivers: usize,
        window: Option<u64>,
        storm_from: Option<u32>,
    ) -> Arc<Run> {
        let ring = window.map_or(0, |w| usize::try_from(w).unwrap_or(usize::MAX - 1) + 1);
        Arc::new(Run {
            origin: Instant::now(),
            expected,
            senders,
            complete: AtomicUsize::new(0),
            ended: AtomicUsize::new(0),
            last_complete_ns: AtomicU64::new(0),
            receivers,
            acks: (0..senders)
                .map(|_| (0..ring).map(|_| AtomicUsize::new(0)).collect())
                .collect(),
            delivered_through: (0..senders).map(|_| AtomicU64::new(0)).collect(),
            progress: (0..senders).map(|_| Notify::new()).collect(),
            sent_ns: (0..senders)
                .map(|_| (0..messages).map(|_| AtomicU64::new(0)).collect())
                .collect(),
            storm_from,
            stop: CancellationToken::new(),
            stopping: AtomicBool::new(false),
        })
    }

    /// Stops the run: readers return their stats, senders and window waits end.
    pub fn finish(&self) {
        self.stopping.store(true, Ordering::Release);
        self.stop.cancel();
    }

    /// Whether [`Run::finish`] was called.
    pub(crate) fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// Counts `count` deliveries of `seq` from `sender` for the send window.
    fn ack(&self, sender: usize, seq: u64, count: usize) {
        let Some(ring) = self.acks.get(sender).filter(|r| !r.is_empty()) else {
            return;
        };
        let slot = usize::try_from(seq % ring.len() as u64).unwrap_or(0);
        let before = ring[slot].fetch_add(count, Ordering::AcqRel);
        if before < self.receivers && before + count >= self.receivers {
            // Every session gets one sender's messages in order, so sequence numbers
            // complete in order too.
            if let (Some(through), Some(p)) = (
                self.delivered_through.get(sender),
                self.progress.get(sender),
            ) {
                through.fetch_max(seq, Ordering::AcqRel);
                p.notify_one();
            }
        }
    }

    /// Waits until `sender` may send `seq` under `window`: every message up to `seq - window`
    /// reached every receiver (or some receiver ended, which ends flow control).
    async fn wait_window(&self, sender: usize, seq: u64, window: u64) {
        let (Some(ring), Some(through), Some(progress)) = (
            self.acks.get(sender),
            self.delivered_through.get(sender),
            self.progress.get(sender),
        ) else {
            return;
        };
        loop {
            let notified = progress.notified();
            if seq <= through.load(Ordering::Acquire) + window
                || self.ended.load(Ordering::Acquire) > 0
            {
                break;
            }
            tokio::select! {
                () = notified => {}
                () = self.stop.cancelled() => return,
            }
        }
        // The slot last held seq - len <= seq - window, which every receiver has counted.
        if !ring.is_empty() {
            let slot = usize::try_from(seq % ring.len() as u64).unwrap_or(0);
            ring[slot].store(0, Ordering::Release);
        }
    }

    /// Tells the run that a receiver stopped reading before the end (a `bye`, an error, the
    /// end of the stream): the run stops waiting for it, and so do senders in a send window.
    pub(crate) fn receiver_ended(&self) {
        self.ended.fetch_add(1, Ordering::AcqRel);
        for p in &self.progress {
            p.notify_one();
        }
    }

    /// Nanoseconds since `origin`.
    pub fn now_ns(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

/// What one receiver saw.
pub struct ReadStats {
    /// `envelope` frames of this run's messages.
    pub received: u64,
    /// Bytes of those `envelope` frames on the wire (inside TLS): binary frames whole, lines
    /// with their newline.
    pub bytes: u64,
    /// Latency in microseconds; with a login storm, of the quiet phase's messages only.
    /// Complete once [`ReadStats::flush_latencies`] has run ([`read_loop`] runs it).
    pub latency_us: Histogram<u64>,
    /// Latency of the storm phase's messages (None without a login storm).
    pub storm_latency_us: Option<Histogram<u64>>,
    /// Latencies not yet in the histograms: microseconds, [`STORM_BIT`] set for the storm's.
    pending_us: Vec<u32>,
    /// Messages whose chain index was not the previous one plus one for that sender
    /// (a gap or a reordering).
    pub out_of_order: u64,
    /// `envelope` frames that could not be read (cut short, bad base64, not an envelope) or
    /// that name a message this run did not send, and frames the binary-mode codec refused.
    pub corrupt: u64,
    /// `error` frames from the server, by code and message.
    pub server_errors: BTreeMap<String, usize>,
    /// The `bye` reason, if the server said goodbye.
    pub bye: Option<String>,
    /// Read error or premature end of stream.
    pub error: Option<String>,
}

impl ReadStats {
    /// Empty stats recording into `latency_us`, and into an empty copy of it for the storm
    /// phase when `run` has one.
    fn new(latency_us: Histogram<u64>, run: &Run) -> ReadStats {
        ReadStats {
            received: 0,
            bytes: 0,
            storm_latency_us: run.storm_from.map(|_| latency_us.clone()),
            latency_us,
            pending_us: Vec::with_capacity(LATENCY_BATCH),
            out_of_order: 0,
            corrupt: 0,
            server_errors: BTreeMap::new(),
            bye: None,
            error: None,
        }
    }

    /// Keeps one latency for the histograms (`storm`: sent during the storm phase).
    fn record_latency(&mut self, us: u64, storm: bool) {
        let us = u32::try_from(us.clamp(1, MAX_LATENCY_US)).unwrap_or(u32::MAX >> 1);
        self.pending_us
            .push(if storm { us | STORM_BIT } else { us });
        if self.pending_us.len() >= LATENCY_BATCH {
            self.flush_latencies();
        }
    }

    /// Adds the kept latencies to the histograms.
    pub fn flush_latencies(&mut self) {
        for &v in &self.pending_us {
            let histogram = match &mut self.storm_latency_us {
                Some(h) if v & STORM_BIT != 0 => h,
                _ => &mut self.latency_us,
            };
            histogram.saturating_record(u64::from(v & !STORM_BIT));
        }
        self.pending_us.clear();
    }
}

/// Reads until told to stop, counting `envelope` frames and their latency into `latency_us`.
pub async fn read_loop<R: AsyncRead + Unpin>(
    mut rd: R,
    incoming: Incoming,
    run: Arc<Run>,
    latency_us: Histogram<u64>,
) -> ReadStats {
    let mut receiver = Receiver::new(incoming, &run, latency_us);
    read_frames(&mut rd, &mut receiver, &run).await;
    receiver.into_stats()
}

/// [`read_loop`]'s loop: returns at the stop signal, a `bye`, an error or the end of the stream.
async fn read_frames<R: AsyncRead + Unpin>(rd: &mut R, receiver: &mut Receiver, run: &Run) {
    // The stop future is polled once, so that cancelling wakes this task; after that the loop
    // reads `Run::stopping`, a plain load. Polling the future on every read locked its token's
    // node each time (`is_cancelled`: 3 % of chat-bench's CPU in the paced run).
    let stopped = run.stop.child_token().cancelled_owned();
    tokio::pin!(stopped);
    if std::future::poll_fn(|cx| Poll::Ready(stopped.as_mut().poll(cx).is_ready())).await {
        return;
    }
    let mut acks = Acks::default();
    loop {
        let more = receiver.frames(run, &mut acks);
        acks.flush(run);
        if !more {
            break;
        }
        if run.stopping() {
            return;
        }
        let filled = {
            let fill = receiver.incoming.fill(rd);
            tokio::pin!(fill);
            std::future::poll_fn(|cx| match fill.as_mut().poll(cx) {
                Poll::Ready(n) => Poll::Ready(Some(n)),
                // Woken by the stop signal (registered above), or by the socket.
                Poll::Pending if run.stopping() => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            })
            .await
        };
        match filled {
            None => return,
            Some(Ok(0)) => {
                receiver.stats.error = Some(CLOSED.into());
                break;
            }
            Some(Ok(_)) => receiver.arrived(run),
            Some(Err(e)) => {
                receiver.stats.error = Some(e.to_string());
                break;
            }
        }
    }
    run.receiver_ended();
}

/// Deliveries counted for the send window ([`Run::acks`]) but not yet added there. Every
/// receiver adding its own delivery at once made the ring slot a cache line that the cores
/// passed to each other 500 times per message (the hottest instruction in the receiver
/// threads); a receiver thread adds what one epoll wake-up read, per message, at once.
#[derive(Default)]
pub(crate) struct Acks(Vec<(usize, u64, usize)>);

impl Acks {
    /// More distinct messages than this are added at once (an unpaced fan-out's reads).
    const MAX: usize = 16;

    /// Counts one delivery of `seq` from `sender`.
    fn count(&mut self, sender: usize, seq: u64, run: &Run) {
        if let Some(e) = self.0.iter_mut().find(|e| e.0 == sender && e.1 == seq) {
            e.2 += 1;
            return;
        }
        if self.0.len() >= Acks::MAX {
            self.flush(run);
        }
        self.0.push((sender, seq, 1));
    }

    /// Adds what was counted to the run.
    pub(crate) fn flush(&mut self, run: &Run) {
        for (sender, seq, count) in self.0.drain(..) {
            run.ack(sender, seq, count);
        }
    }
}

/// A receiver's error when chatd ends the stream without a `bye`.
pub(crate) const CLOSED: &str = "server closed the connection";

/// One receiver's state between reads: the bytes not yet split into frames, what it has seen
/// of each sender, and its figures. [`read_loop`] and the receiver threads
/// ([`crate::receivers`]) both read through it.
pub(crate) struct Receiver {
    incoming: Incoming,
    seen: Seen,
    /// The figures so far.
    pub(crate) stats: ReadStats,
}

impl Receiver {
    /// A receiver that continues with what login read (`incoming`), recording latency into
    /// `latency_us`.
    pub(crate) fn new(incoming: Incoming, run: &Run, latency_us: Histogram<u64>) -> Receiver {
        Receiver {
            incoming,
            seen: Seen::new(run),
            stats: ReadStats::new(latency_us, run),
        }
    }

    /// The bytes read since the last [`Receiver::frames`] arrived now: one clock read per
    /// read, not per frame (it was 7 % of chat-bench's CPU in the fan-out).
    pub(crate) fn arrived(&mut self, run: &Run) {
        self.seen.arrived_ns = run.now_ns();
    }

    /// Appends bytes read from the stream.
    pub(crate) fn extend(&mut self, bytes: &[u8]) {
        self.incoming.extend(bytes);
    }

    /// Counts every complete frame read so far; false when the stream is to end here: a
    /// `bye` ([`ReadStats::bye`]), or bytes the codec cannot get past ([`ReadStats::error`]).
    /// The deliveries go to `acks`, which the caller flushes.
    pub(crate) fn frames(&mut self, run: &Run, acks: &mut Acks) -> bool {
        let (seen, stats) = (&mut self.seen, &mut self.stats);
        match self
            .incoming
            .drain(|frame, wire_len| seen.frame(frame, wire_len, run, stats, acks))
        {
            Ok(bye) => !bye,
            Err(e) => {
                self.stats.error = Some(e.to_string());
                false
            }
        }
    }

    /// The figures, with every latency in the histograms.
    pub(crate) fn into_stats(mut self) -> ReadStats {
        self.stats.flush_latencies();
        self.stats
    }
}

/// A receiver's per-line state.
struct Seen {
    reader: EnvelopeReader,
    /// Per sender, the last sequence number (chain index + 1; 0 for none yet).
    last_seq: Vec<u64>,
    /// When the bytes being drained were read ([`Run::now_ns`]).
    arrived_ns: u64,
}

impl Seen {
    fn new(run: &Run) -> Seen {
        Seen {
            reader: EnvelopeReader::default(),
            last_seq: vec![0; run.senders],
            arrived_ns: run.now_ns(),
        }
    }

    /// Counts one frame that took `wire_len` bytes on the wire; true when it was a `bye`.
    fn frame(
        &mut self,
        frame: Frame<'_>,
        wire_len: usize,
        run: &Run,
        stats: &mut ReadStats,
        acks: &mut Acks,
    ) -> bool {
        let delivered = match frame {
            Frame::Envelope(data) => self.reader.read_binary(data, run.senders),
            Frame::Line(line) if line.starts_with(br#"{"type":"envelope""#) => {
                self.reader.read(line, run.senders)
            }
            Frame::Line(line) => {
                if line.starts_with(br#"{"type":"error""#) {
                    *stats.server_errors.entry(error_text(line)).or_default() += 1;
                } else if line.starts_with(br#"{"type":"bye""#) {
                    stats.bye = Some(bye_reason(line));
                    return true;
                }
                return false;
            }
            Frame::Unreadable => None,
        };
        self.envelope(delivered, wire_len, run, stats, acks);
        false
    }

    /// Counts one `envelope` frame: `delivered` is what its header says, None if unreadable.
    fn envelope(
        &mut self,
        delivered: Option<Delivered>,
        wire_len: usize,
        run: &Run,
        stats: &mut ReadStats,
        acks: &mut Acks,
    ) {
        let found = delivered.and_then(|d| {
            let slot = run
                .sent_ns
                .get(d.sender)?
                .get(usize::try_from(d.index).ok()?)?;
            Some((d, slot.load(Ordering::Acquire))).filter(|(_, sent)| *sent > 0)
        });
        let Some((d, sent)) = found else {
            stats.corrupt += 1;
            return;
        };
        let now = self.arrived_ns;
        let us = now.saturating_sub(sent) / 1000;
        let storm = run.storm_from.is_some_and(|from| d.index >= from);
        stats.record_latency(us, storm);
        let seq = u64::from(d.index) + 1;
        if let Some(last) = self.last_seq.get_mut(d.sender) {
            if *last + 1 != seq {
                stats.out_of_order += 1;
            }
            *last = seq;
        }
        acks.count(d.sender, seq, run);
        stats.received += 1;
        stats.bytes += wire_len as u64;
        if stats.received == run.expected {
            run.last_complete_ns.fetch_max(now, Ordering::AcqRel);
            run.complete.fetch_add(1, Ordering::AcqRel);
        }
    }
}

/// An empty latency histogram (microseconds, 2 significant digits).
pub fn new_histogram() -> anyhow::Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 2).context("cannot create a latency histogram")
}

fn bye_reason(line: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(line)
        .ok()
        .and_then(|v| v.get("reason")?.as_str().map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(line).into_owned())
}

/// `code: message` of an `error` line (or the line itself if it does not parse).
fn error_text(line: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(line)
        .ok()
        .and_then(|v| {
            let code = v.get("code")?.as_str()?;
            let message = v.get("message").and_then(|m| m.as_str()).unwrap_or("");
            Some(format!("{code}: {message}"))
        })
        .unwrap_or_else(|| String::from_utf8_lossy(line).into_owned())
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
pub(crate) mod tests {
    use super::*;
    use chatd_proto::codec::{BINARY_MARKER, binary_envelope};

    impl Seen {
        /// Counts one JSON line, as the JSON-mode reader hands it over.
        fn line(&mut self, line: &[u8], run: &Run, stats: &mut ReadStats) -> bool {
            let mut acks = Acks::default();
            let bye = self.frame(Frame::Line(line), line.len() + 1, run, stats, &mut acks);
            acks.flush(run);
            bye
        }
    }

    /// A receiver's buffer as login leaves it, holding `bytes` read past `login_ok`.
    pub(crate) fn incoming_with(bytes: &[u8], wire: WireMode) -> Incoming {
        let mut incoming = Incoming::after_login(Lines::new(), wire);
        incoming.extend(bytes);
        incoming
    }

    /// The envelope bytes of a binary `send` frame.
    pub(crate) fn send_payload(frame: &[u8]) -> Vec<u8> {
        let mut buf = BytesMut::from(frame);
        match WireCodec::default().decode(&mut buf).unwrap() {
            Some(Ok(Wire::Send(data))) => data.to_vec(),
            other => panic!("not a binary send frame: {other:?}"),
        }
    }

    /// Everything `incoming` hands over for `stream` fed `chunk` bytes at a time, as
    /// (frame, wire bytes) with the frame's bytes copied out.
    fn feed(incoming: &mut Incoming, stream: &[u8], chunk: usize) -> Vec<(String, usize)> {
        let mut got = Vec::new();
        for part in stream.chunks(chunk) {
            match incoming {
                Incoming::Wire { buf, .. } => buf.extend_from_slice(part),
                Incoming::Lines(_) => panic!("binary mode only"),
            }
            let stop = incoming
                .drain(|frame, len| {
                    let text = match frame {
                        Frame::Line(l) => format!("line {}", String::from_utf8_lossy(l)),
                        Frame::Envelope(d) => format!("envelope {}", d.len()),
                        Frame::Unreadable => "unreadable".into(),
                    };
                    got.push((text, len));
                    false
                })
                .unwrap();
            assert!(!stop);
        }
        got
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

    #[test]
    fn binary_mode_keeps_what_login_read_past_login_ok() {
        let envelope = binary_envelope(7, b"\x02E\nsome envelope");
        let mut lines = Lines::new();
        let mut read = b"{\"type\":\"login_ok\"}\n".to_vec();
        read.extend_from_slice(&envelope[..10]);
        lines.buf[..read.len()].copy_from_slice(&read);
        lines.filled = read.len();
        let login_ok = lines.take().map(|r| lines.get(r).to_vec());
        assert_eq!(login_ok.as_deref(), Some(&br#"{"type":"login_ok"}"#[..]));
        let mut incoming = Incoming::after_login(lines, WireMode::Binary);
        let got = feed(&mut incoming, &envelope[10..], 3);
        assert_eq!(got, vec![("envelope 16".to_string(), envelope.len())]);
    }

    #[test]
    fn binary_mode_reads_frames_and_lines_in_any_chunking() {
        let mut stream = binary_envelope(1, b"abc").to_vec();
        stream.extend_from_slice(b"{\"type\":\"presence\"}\r\n");
        // An unknown kind and an envelope frame too short for its timestamp: refused, skipped.
        stream.extend_from_slice(&[BINARY_MARKER, b'Z', 0, 0, 0, 1, 9]);
        stream.extend_from_slice(&[BINARY_MARKER, b'E', 0, 0, 0, 2, 1, 2]);
        stream.extend_from_slice(&binary_envelope(2, b""));
        stream.extend_from_slice(b"{\"type\":\"bye\"}\n");
        let want = vec![
            ("envelope 3".to_string(), 6 + 8 + 3),
            ("line {\"type\":\"presence\"}".to_string(), 21),
            ("unreadable".to_string(), 7),
            ("unreadable".to_string(), 8),
            ("envelope 0".to_string(), 6 + 8),
            ("line {\"type\":\"bye\"}".to_string(), 15),
        ];
        for chunk in [1, 2, 5, 64, stream.len()] {
            let mut incoming = Incoming::after_login(Lines::new(), WireMode::Binary);
            assert_eq!(feed(&mut incoming, &stream, chunk), want, "chunk {chunk}");
        }
    }

    #[test]
    fn binary_envelopes_count_as_deliveries_with_their_frame_bytes() {
        let keys = crate::e2e::Keys::load(2048).unwrap();
        let sealed = crate::e2e::seal_all(&keys, 2, 2, 20, WireMode::Binary).unwrap();
        let run = Run::new(4, 2, 2, 1, Some(10), None);
        let mut seen = Seen::new(&run);
        let mut stats = ReadStats::new(new_histogram().unwrap(), &run);
        let mut stream = Vec::new();
        for index in 0..2 {
            for id in 0..2 {
                run.sent_ns[id][index].store(1, Ordering::Release);
                stream.extend_from_slice(&binary_envelope(
                    1,
                    &send_payload(&sealed.frames[id][index]),
                ));
            }
        }
        let frame_bytes = stream.len() as u64;
        // A JSON envelope line (as chatd sends stored messages) of a message not sent: corrupt.
        stream.extend_from_slice(b"{\"type\":\"envelope\",\"data\":\"AAAA\"}\n");
        // A binary envelope whose header is cut short, and a binary send: corrupt too.
        stream.extend_from_slice(&binary_envelope(1, b"\x02E"));
        stream.extend_from_slice(&chatd_proto::codec::binary_send(b"x"));
        stream.extend_from_slice(b"{\"type\":\"bye\",\"reason\":\"quit\"}\n");
        let mut incoming = Incoming::after_login(Lines::new(), WireMode::Binary);
        let Incoming::Wire { buf, .. } = &mut incoming else {
            panic!("binary mode");
        };
        buf.extend_from_slice(&stream);
        let mut acks = Acks::default();
        let bye = incoming
            .drain(|frame, len| seen.frame(frame, len, &run, &mut stats, &mut acks))
            .unwrap();
        acks.flush(&run);
        assert!(bye);
        assert_eq!(stats.received, 4);
        assert_eq!(stats.bytes, frame_bytes);
        assert_eq!(stats.out_of_order, 0);
        assert_eq!(stats.corrupt, 3);
        assert_eq!(stats.bye.as_deref(), Some("quit"));
        assert_eq!(run.complete.load(Ordering::Acquire), 1);
    }

    #[test]
    fn lines_split_without_copying() {
        let mut lines = Lines::new();
        lines.buf[..7].copy_from_slice(b"ab\ncd\ne");
        lines.filled = 7;
        let a = lines.take().map(|r| lines.get(r).to_vec());
        let b = lines.take().map(|r| lines.get(r).to_vec());
        assert_eq!(a.as_deref(), Some(&b"ab"[..]));
        assert_eq!(b.as_deref(), Some(&b"cd"[..]));
        assert!(lines.take().is_none());
    }

    /// The `envelope` line chatd would send for sender `id`'s message `index` of `sealed`.
    fn delivered_line(sealed: &crate::e2e::Sealed, id: usize, index: usize) -> Vec<u8> {
        let send = std::str::from_utf8(&sealed.frames[id][index]).unwrap();
        let Ok(ClientFrame::Send { data }) = chatd_proto::frame::decode(send.trim_end()) else {
            panic!("not a send line: {send}");
        };
        let mut line = chatd_proto::frame::encode(&chatd_proto::ServerFrame::Envelope {
            from: crate::control::user_name(id),
            device: Fingerprint::of(b""),
            data,
            ts: 1,
        })
        .unwrap()
        .to_vec();
        line.pop();
        line
    }

    #[test]
    fn receivers_count_latency_order_and_strays() {
        let keys = crate::e2e::Keys::load(2048).unwrap();
        let sealed = crate::e2e::seal_all(&keys, 2, 3, 20, WireMode::Json).unwrap();
        let run = Run::new(6, 2, 3, 1, Some(10), None);
        let mut seen = Seen::new(&run);
        let mut stats = ReadStats::new(new_histogram().unwrap(), &run);
        // Not sent yet (no send instant): a stray, not a delivery.
        assert!(!seen.line(&delivered_line(&sealed, 0, 0), &run, &mut stats));
        assert_eq!((stats.received, stats.corrupt), (0, 1));
        for (id, index) in [(0, 0), (1, 0), (0, 1), (0, 2), (1, 2)] {
            run.sent_ns[id][index].store(1, Ordering::Release);
            let line = delivered_line(&sealed, id, index);
            assert!(!seen.line(&line, &run, &mut stats));
        }
        assert_eq!(stats.received, 5);
        assert_eq!(stats.out_of_order, 1, "sender 1 skipped index 1");
        assert_eq!(stats.latency_us.len(), 0, "kept until a flush");
        stats.flush_latencies();
        assert_eq!(stats.latency_us.len(), 5);
        assert!(stats.storm_latency_us.is_none());
        assert!(stats.bytes > 5 * 300);
        assert_eq!(run.delivered_through[0].load(Ordering::Acquire), 3);
        let line = delivered_line(&sealed, 1, 1);
        assert!(!seen.line(&line[..line.len() / 2], &run, &mut stats));
        assert_eq!(stats.corrupt, 2);
        assert!(!seen.line(
            br#"{"type":"error","code":"bad_text","message":"too long"}"#,
            &run,
            &mut stats
        ));
        assert_eq!(stats.server_errors.get("bad_text: too long"), Some(&1));
        assert!(!seen.line(br#"{"type":"device","user":"x"}"#, &run, &mut stats));
        assert!(seen.line(br#"{"type":"bye","reason":"quit"}"#, &run, &mut stats));
        assert_eq!(stats.bye.as_deref(), Some("quit"));
        assert_eq!(run.complete.load(Ordering::Acquire), 0);
        run.sent_ns[1][1].store(1, Ordering::Release);
        assert!(!seen.line(&line, &run, &mut stats));
        assert_eq!(run.complete.load(Ordering::Acquire), 1);
    }

    #[test]
    fn a_storm_splits_latency_by_chain_index() {
        let keys = crate::e2e::Keys::load(2048).unwrap();
        let sealed = crate::e2e::seal_all(&keys, 1, 4, 20, WireMode::Json).unwrap();
        let run = Run::new(4, 1, 4, 1, None, Some(2));
        let mut seen = Seen::new(&run);
        let mut stats = ReadStats::new(new_histogram().unwrap(), &run);
        for index in 0..4 {
            run.sent_ns[0][index].store(1, Ordering::Release);
            assert!(!seen.line(&delivered_line(&sealed, 0, index), &run, &mut stats));
        }
        assert_eq!(stats.received, 4);
        stats.flush_latencies();
        assert_eq!(stats.latency_us.len(), 2, "indexes 0 and 1: quiet");
        assert_eq!(stats.storm_latency_us.map(|h| h.len()), Some(2));
    }

    #[test]
    fn latencies_wait_for_a_full_batch_or_a_flush_and_keep_their_phase() {
        let run = Run::new(1, 1, 1, 1, None, Some(0));
        let mut stats = ReadStats::new(new_histogram().unwrap(), &run);
        for i in 0..LATENCY_BATCH as u64 - 1 {
            stats.record_latency(100 + i, i % 2 == 0);
        }
        assert_eq!(stats.latency_us.len(), 0);
        stats.record_latency(MAX_LATENCY_US + 1, false);
        let storm = stats.storm_latency_us.as_ref().map(Histogram::len);
        assert_eq!((stats.latency_us.len(), storm), (128, Some(128)));
        assert_eq!(
            stats.latency_us.max(),
            stats.latency_us.highest_equivalent(MAX_LATENCY_US)
        );
        stats.record_latency(0, true);
        stats.flush_latencies();
        let storm = stats.storm_latency_us.as_ref().map(|h| (h.len(), h.min()));
        assert_eq!(
            storm,
            Some((129, 1)),
            "0 is recorded as 1 µs, in the storm phase"
        );
    }

    #[tokio::test]
    async fn a_waiting_reader_returns_at_the_stop() {
        let run = Run::new(1, 1, 1, 1, None, None);
        let (rd, mut wr) = tokio::io::duplex(1024);
        let reader = tokio::spawn(read_loop(
            rd,
            Incoming::after_login(Lines::new(), WireMode::Json),
            Arc::clone(&run),
            new_histogram().unwrap(),
        ));
        wr.write_all(b"{\"type\":\"device\"}\n").await.unwrap();
        tokio::task::yield_now().await;
        run.finish();
        let stats = tokio::time::timeout(Duration::from_secs(10), reader)
            .await
            .expect("the reader stopped")
            .unwrap();
        assert_eq!((stats.received, stats.error), (0, None));
        assert_eq!(
            run.ended.load(Ordering::Acquire),
            0,
            "a stop is not an early end"
        );
        // Open until here: an end of stream would have ended the reader too.
        drop(wr);
    }

    #[test]
    fn error_text_is_code_and_message() {
        assert_eq!(
            error_text(br#"{"type":"error","code":"bad_envelope","message":"envelope: x"}"#),
            "bad_envelope: envelope: x"
        );
        assert_eq!(error_text(b"{\"type\":\"error\""), "{\"type\":\"error\"");
    }

    #[test]
    fn bye_reason_is_read() {
        assert_eq!(
            bye_reason(br#"{"type":"bye","reason":"too slow: outbound queue full"}"#),
            "too slow: outbound queue full"
        );
    }
}
