//! Bench clients: TLS with a pinned certificate, login, a fast reader and a sender.
//!
//! Readers must never fall behind (chatd disconnects a client whose outbound queue fills), so
//! each client has its own task that reads continuously and parses only what it needs: a line
//! starting `{"type":"message"` has its `"text":"` field located by byte search, and the payload
//! `SENDER:SEQ:SEND_NS:xxxx…` is read from there. Other frames are skipped unless they are a
//! `bye`, which is recorded.

use std::net::SocketAddr;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chatd_proto::Fingerprint;
use hdrhistogram::Histogram;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_util::sync::CancellationToken;

/// A logged-in client's TLS stream.
pub type Tls = TlsStream<TcpStream>;

/// Longest wait for one connection + login.
const LOGIN_TIMEOUT: Duration = Duration::from_secs(120);
/// Initial read buffer per client (one TLS record's worth).
const READ_BUFFER: usize = 16 * 1024;
/// Latencies are recorded in microseconds up to this (5 minutes); larger ones saturate.
const MAX_LATENCY_US: u64 = 300_000_000;

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
        let len = pending.iter().position(|b| *b == b'\n')?;
        let line = self.consumed..self.consumed + len;
        self.consumed += len + 1;
        Some(line)
    }

    fn get(&self, range: Range<usize>) -> &[u8] {
        &self.buf[range]
    }

    /// Reads more; Ok(0) at end of stream. Cancel-safe.
    async fn fill<R: AsyncRead + Unpin>(&mut self, rd: &mut R) -> std::io::Result<usize> {
        if self.consumed > 0 {
            self.buf.copy_within(self.consumed..self.filled, 0);
            self.filled -= self.consumed;
            self.consumed = 0;
        }
        if self.filled == self.buf.len() {
            let bigger = self.buf.len() * 2;
            self.buf.resize(bigger, 0);
        }
        let n = rd.read(&mut self.buf[self.filled..]).await?;
        self.filled += n;
        Ok(n)
    }
}

// ---------------------------------------------------------------------------------------------
// Login
// ---------------------------------------------------------------------------------------------

/// Connects, says hello and logs in as `user`; returns the stream and anything read past
/// `login_ok`.
pub async fn login(
    addr: SocketAddr,
    connector: &TlsConnector,
    user: &str,
    password: &str,
) -> anyhow::Result<(Tls, Lines)> {
    tokio::time::timeout(LOGIN_TIMEOUT, login_inner(addr, connector, user, password))
        .await
        .with_context(|| format!("login of {user} timed out"))?
}

async fn login_inner(
    addr: SocketAddr,
    connector: &TlsConnector,
    user: &str,
    password: &str,
) -> anyhow::Result<(Tls, Lines)> {
    let tcp = TcpStream::connect(addr)
        .await
        .with_context(|| format!("cannot connect to {addr}"))?;
    tcp.set_nodelay(true)?;
    let mut tls = connector
        .connect(ServerName::IpAddress(addr.ip().into()), tcp)
        .await
        .context("TLS handshake failed")?;
    let hello = serde_json::json!({"type": "hello", "version": 1, "client": "chat-bench"});
    let login = serde_json::json!({"type": "login", "user": user, "password": password});
    let mut out = Vec::new();
    for frame in [hello, login] {
        serde_json::to_writer(&mut out, &frame)?;
        out.push(b'\n');
    }
    tls.write_all(&out).await?;
    tls.flush().await?;
    let mut lines = Lines::new();
    loop {
        while let Some(range) = lines.take() {
            let line = lines.get(range);
            if line.starts_with(br#"{"type":"login_ok""#) {
                return Ok((tls, lines));
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

// ---------------------------------------------------------------------------------------------
// Fan-out run
// ---------------------------------------------------------------------------------------------

/// State every client task of one run shares.
pub struct Run {
    /// Origin of every timestamp in payloads.
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
    /// Deliveries so far, all receivers.
    pub delivered: AtomicU64,
    /// Receivers (every logged-in client).
    pub receivers: usize,
    /// Per sender, a ring of per-sequence-number delivery counts (slot `seq % len`); empty
    /// without a send window.
    pub acks: Vec<Vec<AtomicUsize>>,
    /// Per sender: every message up to this sequence number reached every receiver.
    pub delivered_through: Vec<AtomicU64>,
    /// Per sender: woken when `delivered_through` moves or a receiver ends.
    pub progress: Vec<Notify>,
    /// Tells readers to stop.
    pub stop: CancellationToken,
}

impl Run {
    /// Counts one delivery of `seq` from `sender` for the send window.
    fn ack(&self, sender: usize, seq: u64) {
        let Some(ring) = self.acks.get(sender).filter(|r| !r.is_empty()) else {
            return;
        };
        let slot = usize::try_from(seq % ring.len() as u64).unwrap_or(0);
        if ring[slot].fetch_add(1, Ordering::AcqRel) + 1 == self.receivers {
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

    /// Nanoseconds since `origin`.
    pub fn now_ns(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

/// What one receiver saw.
pub struct ReadStats {
    /// `message` frames carrying a bench payload.
    pub received: u64,
    /// Latency in microseconds.
    pub latency_us: Histogram<u64>,
    /// Messages whose sequence number was not the previous one plus one for that sender
    /// (a gap or a reordering).
    pub out_of_order: u64,
    /// `message` frames whose payload could not be read.
    pub corrupt: u64,
    /// The `bye` reason, if the server said goodbye.
    pub bye: Option<String>,
    /// Read error or premature end of stream.
    pub error: Option<String>,
}

/// Reads until told to stop, counting `message` frames and their latency into `latency_us`.
pub async fn read_loop(
    mut rd: ReadHalf<Tls>,
    mut lines: Lines,
    run: Arc<Run>,
    latency_us: Histogram<u64>,
) -> ReadStats {
    let mut stats = ReadStats {
        received: 0,
        latency_us,
        out_of_order: 0,
        corrupt: 0,
        bye: None,
        error: None,
    };
    let mut last_seq = vec![0u64; run.senders];
    let expected = run.expected;
    'outer: loop {
        while let Some(range) = lines.take() {
            let line = lines.get(range);
            if line.starts_with(br#"{"type":"message""#) {
                match parse_message(line) {
                    Some(p) if p.sender < last_seq.len() => {
                        let now = run.now_ns();
                        let us = now.saturating_sub(p.sent_ns) / 1000;
                        stats
                            .latency_us
                            .saturating_record(us.clamp(1, MAX_LATENCY_US));
                        if last_seq[p.sender] + 1 != p.seq {
                            stats.out_of_order += 1;
                        }
                        last_seq[p.sender] = p.seq;
                        run.ack(p.sender, p.seq);
                        stats.received += 1;
                        run.delivered.fetch_add(1, Ordering::Relaxed);
                        if stats.received == expected {
                            run.last_complete_ns.fetch_max(now, Ordering::AcqRel);
                            run.complete.fetch_add(1, Ordering::AcqRel);
                        }
                    }
                    _ => stats.corrupt += 1,
                }
            } else if line.starts_with(br#"{"type":"bye""#) {
                stats.bye = Some(bye_reason(line));
                break 'outer;
            }
        }
        tokio::select! {
            biased;
            () = run.stop.cancelled() => return stats,
            n = lines.fill(&mut rd) => match n {
                Ok(0) => {
                    stats.error = Some("server closed the connection".into());
                    break;
                }
                Ok(_) => {}
                Err(e) => {
                    stats.error = Some(e.to_string());
                    break;
                }
            },
        }
    }
    run.ended.fetch_add(1, Ordering::AcqRel);
    // Senders waiting for this receiver must not wait forever.
    for p in &run.progress {
        p.notify_one();
    }
    stats
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

/// What a bench payload carries.
#[derive(Debug, PartialEq, Eq)]
pub struct Payload {
    /// Sender index.
    pub sender: usize,
    /// 1-based sequence number within the sender.
    pub seq: u64,
    /// Send time, nanoseconds since the run's origin.
    pub sent_ns: u64,
}

/// Writes the payload `SENDER:SEQ:SENT_NS:` padded with `x` to `bytes` bytes.
pub fn write_payload(out: &mut Vec<u8>, p: &Payload, bytes: usize) {
    use std::io::Write;
    let start = out.len();
    // Writing to a Vec cannot fail.
    let _ = write!(out, "{}:{}:{}:", p.sender, p.seq, p.sent_ns);
    let written = out.len() - start;
    out.resize(out.len() + bytes.saturating_sub(written), b'x');
}

/// Reads the payload of a `message` line; None if it is not a bench payload.
pub fn parse_message(line: &[u8]) -> Option<Payload> {
    const TEXT: &[u8] = br#""text":""#;
    let at = line.windows(TEXT.len()).position(|w| w == TEXT)? + TEXT.len();
    let mut fields = line[at..].splitn(4, |b| *b == b':');
    let mut number = || -> Option<u64> {
        let digits = fields.next()?;
        if digits.is_empty() || digits.len() > 20 {
            return None;
        }
        digits.iter().try_fold(0u64, |n, d| {
            d.is_ascii_digit()
                .then(|| n.checked_mul(10)?.checked_add(u64::from(d - b'0')))?
        })
    };
    let sender = usize::try_from(number()?).ok()?;
    let seq = number()?;
    let sent_ns = number()?;
    Some(Payload {
        sender,
        seq,
        sent_ns,
    })
}

/// Sends `messages` say frames of `bytes`-byte payloads as sender `id`, one every `interval`
/// (starting after `offset`), or as fast as the connection takes them; with a `window`, never
/// more than that many messages ahead of the last one every receiver has.
pub async fn send_loop(
    mut wr: WriteHalf<Tls>,
    id: usize,
    messages: u64,
    bytes: usize,
    pacing: Option<(Duration, Duration)>,
    window: Option<u64>,
    run: Arc<Run>,
) -> std::io::Result<()> {
    let mut frame = Vec::with_capacity(bytes + 64);
    let begin = tokio::time::Instant::now();
    for seq in 1..=messages {
        if let Some((interval, offset)) = pacing {
            let n = u32::try_from(seq - 1).unwrap_or(u32::MAX);
            tokio::time::sleep_until(begin + offset + interval.saturating_mul(n)).await;
        }
        if let Some(window) = window {
            run.wait_window(id, seq, window).await;
            if run.stop.is_cancelled() {
                return Ok(());
            }
        }
        frame.clear();
        frame.extend_from_slice(br#"{"type":"say","text":""#);
        let p = Payload {
            sender: id,
            seq,
            sent_ns: run.now_ns(),
        };
        write_payload(&mut frame, &p, bytes);
        frame.extend_from_slice(b"\"}\n");
        wr.write_all(&frame).await?;
        wr.flush().await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_round_trip() {
        let p = Payload {
            sender: 3,
            seq: 1999,
            sent_ns: 123_456_789,
        };
        let mut text = Vec::new();
        write_payload(&mut text, &p, 100);
        assert_eq!(text.len(), 100);
        let mut line = br#"{"type":"message","from":"bench3","text":""#.to_vec();
        line.extend_from_slice(&text);
        line.extend_from_slice(br#"","ts":1764327600000}"#);
        assert_eq!(parse_message(&line), Some(p));
    }

    #[test]
    fn short_payload_is_not_truncated() {
        let mut text = Vec::new();
        let p = Payload {
            sender: 0,
            seq: 1,
            sent_ns: 42,
        };
        write_payload(&mut text, &p, 2);
        assert_eq!(text, b"0:1:42:");
    }

    #[test]
    fn foreign_text_is_not_a_payload() {
        assert_eq!(
            parse_message(br#"{"type":"message","from":"a","text":"hi all","ts":1}"#),
            None
        );
        assert_eq!(parse_message(br#"{"type":"message","from":"a"}"#), None);
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

    #[test]
    fn bye_reason_is_read() {
        assert_eq!(
            bye_reason(br#"{"type":"bye","reason":"too slow: outbound queue full"}"#),
            "too slow: outbound queue full"
        );
    }
}
