//! One IRC client of irc-bench: connect (plain TCP or TLS), register, join the channel, then
//! count, order-check and time every message that arrives; the first S clients also send.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use chatd_proto::Fingerprint;
use hdrhistogram::Histogram;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{Mutex, Notify, mpsc, watch};
use tokio_rustls::TlsConnector;

use crate::line::{self, Line};

/// Bytes read from the socket at a time: many deliveries per read system call.
const READ_BUF: usize = 64 * 1024;

/// Most messages a sender writes in one go when the window lets it write more: bounds the
/// batch when `--window 0` lifts the limit.
const MAX_BATCH: u64 = 256;

/// Highest latency the histograms hold, microseconds (a minute).
const MAX_LATENCY_US: u64 = 60_000_000;

/// Where a run is; clients watch it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Connecting, registering, joining.
    Setup,
    /// The timed phase: senders send.
    Go,
    /// Done: every client returns what it counted.
    Stop,
}

/// A byte stream to the server, plain or TLS.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// How to open a connection.
#[derive(Clone)]
pub enum Connector {
    Plain,
    Tls(TlsConnector),
}

impl Connector {
    /// TLS that accepts exactly the certificate in the PEM file `cert` (the server's
    /// self-signed one), pinned by its fingerprint as chat-bench and the tests pin chatd's.
    pub fn tls_pinned(cert: &Path) -> Result<Self> {
        let cert = CertificateDer::from_pem_file(cert)
            .with_context(|| format!("cannot read a certificate from {}", cert.display()))?;
        let tls = chatd_testkit::connector(Fingerprint::of(cert.as_ref()))
            .context("TLS configuration")?;
        Ok(Self::Tls(tls))
    }

    async fn connect(&self, addr: SocketAddr) -> Result<Box<dyn Stream>> {
        Ok(match self {
            Self::Plain => {
                let tcp = TcpStream::connect(addr)
                    .await
                    .with_context(|| format!("cannot connect to {addr}"))?;
                // Senders write a message and wait for nothing: Nagle would hold it back.
                tcp.set_nodelay(true).context("TCP_NODELAY")?;
                Box::new(tcp)
            }
            // Without Nagle too.
            Self::Tls(tls) => Box::new(chatd_testkit::connect(addr, tls).await?),
        })
    }
}

/// What every client of one run shares. Indexes: sender `s` < S, receiver `r` < N (senders
/// are receivers too: they get the other senders' messages), sequence `q` < M.
pub struct Shared {
    pub t0: Instant,
    pub target: SocketAddr,
    pub connector: Connector,
    pub run: usize,
    pub channel: String,
    pub clients: usize,
    pub senders: usize,
    pub messages: u64,
    pub text_bytes: usize,
    /// Most messages a sender may be ahead of the slowest receiver; 0 for no limit.
    pub window: u64,
    /// Total messages per second over all senders; `None` for as fast as the window allows.
    pub rate: Option<f64>,
    /// `[s * M + q]`: when message q of sender s was written, ns since `t0`. Kept in memory
    /// rather than in the text so that the clock is one process's monotonic one.
    pub send_ns: Vec<AtomicU64>,
    /// `[r * S + s]`: messages of sender s that receiver r has got (for the window).
    pub counts: Vec<AtomicU64>,
    /// `[s]`: the count every receiver must reach before sender s may go on, `u64::MAX` while
    /// it is not waiting. The receiver whose count reaches it exactly wakes the sender, so a
    /// blocked sender is woken once per lagging receiver instead of once per delivery.
    pub need: Vec<AtomicU64>,
    pub wake: Vec<Notify>,
    /// Deliveries so far over all receivers, and when the latest arrived (ns since `t0`).
    pub delivered: AtomicU64,
    pub last_ns: AtomicU64,
    /// Start of the timed phase, ns since `t0`.
    pub start_ns: AtomicU64,
}

impl Shared {
    fn now_ns(&self) -> u64 {
        u64::try_from(self.t0.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// The fewest messages of sender `s` that any receiver but `s` itself has got.
    fn slowest(&self, s: usize) -> u64 {
        (0..self.clients)
            .filter(|&r| r != s)
            .filter_map(|r| self.counts.get(r * self.senders + s))
            .map(|c| c.load(Ordering::SeqCst))
            .min()
            .unwrap_or(self.messages)
    }
}

/// What one client counted.
pub struct ClientStats {
    pub received: u64,
    pub out_of_order: u64,
    /// Delivery latency, microseconds.
    pub latency_us: Histogram<u64>,
    /// Why the client stopped early, if it did.
    pub error: Option<String>,
}

pub fn new_histogram() -> Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).context("cannot create a latency histogram")
}

/// Client `idx`: reports `Ok` or why not on `joined` once it is in the channel, sends if it is
/// one of the first S, and counts until the phase is `Stop`.
pub async fn client(
    idx: usize,
    shared: Arc<Shared>,
    setup: Arc<tokio::sync::Semaphore>,
    joined: mpsc::UnboundedSender<Result<(), String>>,
    phase: watch::Receiver<Phase>,
) -> Result<ClientStats> {
    let mut stats = ClientStats {
        received: 0,
        out_of_order: 0,
        latency_us: new_histogram()?,
        error: None,
    };
    if let Err(e) = client_inner(idx, &shared, &setup, &joined, phase, &mut stats).await {
        let msg = format!("client {idx}: {e:#}");
        // Only the first report counts for the setup; later errors are in the stats.
        let _ = joined.send(Err(msg.clone()));
        stats.error = Some(msg);
    }
    Ok(stats)
}

async fn client_inner(
    idx: usize,
    shared: &Arc<Shared>,
    setup: &tokio::sync::Semaphore,
    joined: &mpsc::UnboundedSender<Result<(), String>>,
    mut phase: watch::Receiver<Phase>,
    stats: &mut ClientStats,
) -> Result<()> {
    let is_sender = idx < shared.senders;
    let (mut reader, writer) = {
        // Bounded concurrent setups: a burst of 500 handshakes would only queue in the kernel.
        let _permit = setup.acquire().await.context("setup semaphore closed")?;
        let stream = shared.connector.connect(shared.target).await?;
        let (rd, wr) = tokio::io::split(stream);
        let mut reader = Reader::new(rd);
        let writer = Arc::new(Mutex::new(wr));
        let nick = line::nick(idx, is_sender, shared.run);
        let hello = format!("NICK {nick}\r\nUSER b 0 * :irc-bench\r\n");
        write(&writer, hello.as_bytes()).await?;
        reader
            .wait_numeric(1, &writer)
            .await
            .context("registering")?;
        write(&writer, format!("JOIN {}\r\n", shared.channel).as_bytes()).await?;
        // 366: end of the NAMES list, the last reply to our JOIN.
        reader.wait_numeric(366, &writer).await.context("joining")?;
        (reader, writer)
    };
    let _ = joined.send(Ok(()));

    let sender = if is_sender {
        let (shared, writer, phase) = (Arc::clone(shared), Arc::clone(&writer), phase.clone());
        Some(tokio::spawn(async move {
            send_loop(idx, &shared, &writer, phase).await
        }))
    } else {
        None
    };

    let s_count = shared.senders;
    let mut expected = vec![0u64; s_count];
    let mut got = vec![0u64; s_count];
    let mut pongs: Vec<Vec<u8>> = Vec::new();
    let mut closing: Option<String> = None;
    loop {
        tokio::select! {
            r = reader.fill() => r?,
            _ = phase.wait_for(|p| *p == Phase::Stop) => break,
        }
        // One clock read per read(): every line in it arrived by now.
        let now = shared.now_ns();
        let mut n = 0u64;
        reader.drain(|l| match line::parse(l) {
            Line::Message { sender: s, seq } if s < s_count && seq < shared.messages => {
                n += 1;
                if let (Some(exp), Some(c)) = (expected.get_mut(s), got.get_mut(s)) {
                    if seq != *exp {
                        stats.out_of_order += 1;
                    }
                    *exp = seq + 1;
                    *c += 1;
                    if let Some(slot) = shared.counts.get(idx * s_count + s) {
                        slot.store(*c, Ordering::SeqCst);
                    }
                    if shared
                        .need
                        .get(s)
                        .is_some_and(|need| need.load(Ordering::SeqCst) == *c)
                        && let Some(w) = shared.wake.get(s)
                    {
                        w.notify_one();
                    }
                }
                let slot = usize::try_from(seq)
                    .ok()
                    .and_then(|q| shared.send_ns.get(s * shared.messages as usize + q));
                if let Some(sent) = slot.map(|t| t.load(Ordering::Acquire)).filter(|&t| t > 0) {
                    stats
                        .latency_us
                        .saturating_record(now.saturating_sub(sent) / 1000);
                }
            }
            Line::Ping(token) => {
                let mut pong = b"PONG ".to_vec();
                pong.extend_from_slice(token);
                pong.extend_from_slice(b"\r\n");
                pongs.push(pong);
            }
            Line::Error(reason) => closing = Some(String::from_utf8_lossy(reason).into_owned()),
            _ => {}
        });
        if n > 0 {
            stats.received += n;
            shared.delivered.fetch_add(n, Ordering::Relaxed);
            shared.last_ns.fetch_max(now, Ordering::Relaxed);
        }
        for pong in pongs.drain(..) {
            write(&writer, &pong).await?;
        }
        if let Some(reason) = closing.take() {
            bail!("server closed the connection: {reason}");
        }
    }
    if let Some(sender) = sender {
        sender.await.context("sender task")??;
    }
    Ok(())
}

/// Sender `s`: M messages, each at most `window` ahead of the slowest receiver, paced at
/// `rate`/S per second when there is a rate.
async fn send_loop(
    s: usize,
    shared: &Shared,
    writer: &Mutex<WriteHalf<Box<dyn Stream>>>,
    mut phase: watch::Receiver<Phase>,
) -> Result<()> {
    let started = *phase
        .wait_for(|p| *p != Phase::Setup)
        .await
        .context("phase channel closed")?;
    if started == Phase::Stop {
        return Ok(());
    }
    let start = shared.t0 + Duration::from_nanos(shared.start_ns.load(Ordering::SeqCst));
    let m = shared.messages;
    let base = s * m as usize;
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut next = 0u64;
    while next < m {
        if let Some(rate) = shared.rate {
            // Interleaved: message q of sender s is due at (q*S + s) / rate seconds.
            let due = (next as f64 * shared.senders as f64 + s as f64) / rate;
            tokio::select! {
                _ = tokio::time::sleep_until((start + Duration::from_secs_f64(due)).into()) => {}
                _ = phase.wait_for(|p| *p == Phase::Stop) => return Ok(()),
            }
        }
        let allowed = if shared.window == 0 {
            m
        } else {
            let need = next + 1 - shared.window.min(next + 1);
            if need > 0 && shared.slowest(s) < need {
                // Publish what we wait for, then look again: a receiver that reached it
                // before it saw `need` shows up in this second look (both SeqCst).
                if let Some(n) = shared.need.get(s) {
                    n.store(need, Ordering::SeqCst);
                }
                if shared.slowest(s) < need {
                    if let Some(w) = shared.wake.get(s) {
                        tokio::select! {
                            _ = w.notified() => {}
                            _ = phase.wait_for(|p| *p == Phase::Stop) => return Ok(()),
                        }
                    }
                    continue;
                }
            }
            if let Some(n) = shared.need.get(s) {
                n.store(u64::MAX, Ordering::SeqCst);
            }
            (shared.slowest(s) + shared.window).min(m)
        };
        let upto = if shared.rate.is_some() {
            next + 1
        } else {
            allowed.min(next + MAX_BATCH)
        };
        buf.clear();
        for seq in next..upto {
            line::push_privmsg(&mut buf, &shared.channel, seq, shared.text_bytes);
        }
        let now = shared.now_ns().max(1);
        for seq in next..upto {
            if let Some(t) = shared.send_ns.get(base + seq as usize) {
                t.store(now, Ordering::Release);
            }
        }
        write(writer, &buf).await?;
        next = upto;
    }
    Ok(())
}

async fn write(writer: &Mutex<WriteHalf<Box<dyn Stream>>>, bytes: &[u8]) -> Result<()> {
    let mut w = writer.lock().await;
    w.write_all(bytes).await.context("write")?;
    // TLS holds written records until flushed; for TCP this does nothing.
    w.flush().await.context("flush")
}

/// Lines from the server, read a large buffer at a time.
struct Reader {
    rd: ReadHalf<Box<dyn Stream>>,
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl Reader {
    fn new(rd: ReadHalf<Box<dyn Stream>>) -> Self {
        Self {
            rd,
            buf: vec![0; READ_BUF],
            start: 0,
            end: 0,
        }
    }

    /// Reads more after what is buffered; an error when the server closed the connection.
    async fn fill(&mut self) -> Result<()> {
        if self.start > 0 {
            // Move the partial last line to the front.
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            bail!("a line longer than {READ_BUF} bytes");
        }
        let n = self
            .rd
            .read(&mut self.buf[self.end..])
            .await
            .context("read")?;
        if n == 0 {
            bail!("the server closed the connection");
        }
        self.end += n;
        Ok(())
    }

    /// Hands every complete buffered line (without its `\n`) to `f`.
    fn drain(&mut self, mut f: impl FnMut(&[u8])) {
        let data = &self.buf[self.start..self.end];
        let mut pos = 0;
        for nl in memchr::memchr_iter(b'\n', data) {
            f(&data[pos..nl]);
            pos = nl + 1;
        }
        self.start += pos;
    }

    /// Reads until numeric reply `want`, answering PINGs; refused nicks and `ERROR` are
    /// errors.
    async fn wait_numeric(
        &mut self,
        want: u16,
        writer: &Mutex<WriteHalf<Box<dyn Stream>>>,
    ) -> Result<()> {
        loop {
            self.fill().await?;
            let mut found = false;
            let mut problem: Option<String> = None;
            let mut pongs: Vec<Vec<u8>> = Vec::new();
            self.drain(|l| match line::parse(l) {
                Line::Numeric(n) if n == want => found = true,
                // 4xx/5xx: the server refused something (nick in use, channel full…); 422,
                // "no MOTD", is only news.
                Line::Numeric(n) if (400..600).contains(&n) && n != 422 => {
                    problem.get_or_insert_with(|| String::from_utf8_lossy(l).into_owned());
                }
                Line::Error(reason) => {
                    problem.get_or_insert_with(|| String::from_utf8_lossy(reason).into_owned());
                }
                Line::Ping(token) => {
                    let mut pong = b"PONG ".to_vec();
                    pong.extend_from_slice(token);
                    pong.extend_from_slice(b"\r\n");
                    pongs.push(pong);
                }
                _ => {}
            });
            for pong in &pongs {
                write(writer, pong).await?;
            }
            if let Some(problem) = problem {
                bail!("server said: {}", problem.trim_end());
            }
            if found {
                return Ok(());
            }
        }
    }
}
