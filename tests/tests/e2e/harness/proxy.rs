//! A malicious server made of the real one: a TLS-terminating proxy that presents chatd's own
//! certificate and key (so `chat` pins the same fingerprint), relays every frame between the
//! real `chat` clients and the real chatd, and lets a test pass, drop, alter or inject frames
//! in either direction ([`Proxy::set_hook`], [`Proxy::inject`]). Every frame is recorded, so a
//! test can check what the honest clients actually wrote ([`Proxy::assert_no_chain_to`]).
//!
//! Binary envelope frames (docs/PROTOCOL.md, "Binary envelope frames") are decoded into the
//! JSON frame they stand for, marked [`Frame::binary`], and written back as binary frames
//! unless the hook made that impossible (a relabelled sender travels as a JSON line).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use chatd_proto::e2e::{Envelope, WrappedChain};
use chatd_proto::{Fingerprint, Wire, WireCodec};
use futures_util::StreamExt;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

use super::chatd::Server;
use super::process::TIMEOUT;

/// Which way a frame travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// From a `chat` client to chatd.
    Up,
    /// From chatd to a `chat` client.
    Down,
}

/// One frame as JSON. A binary `send` is `{"type":"send","data":B64}`, a binary `envelope`
/// `{"type":"envelope","from","device","data","ts"}` (sender from the envelope's header).
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    pub json: Value,
    /// It came (or is to go) as a binary frame.
    pub binary: bool,
}

impl Frame {
    /// A JSON-line frame.
    pub fn json(json: Value) -> Frame {
        Frame {
            json,
            binary: false,
        }
    }

    /// The frame's `type`.
    pub fn ty(&self) -> &str {
        self.json["type"].as_str().unwrap_or("")
    }

    /// The decoded `data` of an `envelope`/`send` frame.
    pub fn envelope(&self) -> Option<Envelope> {
        Envelope::from_base64(self.json["data"].as_str()?).ok()
    }

    /// The decoded `data` of a `chain` frame.
    pub fn chain(&self) -> Option<WrappedChain> {
        WrappedChain::from_base64(self.json["data"].as_str()?).ok()
    }

    /// The bytes of `data`, base64-decoded.
    pub fn data_bytes(&self) -> Vec<u8> {
        BASE64
            .decode(self.json["data"].as_str().expect("a data field"))
            .expect("base64 data")
    }

    /// Replaces `data` with `bytes` (base64-encoded).
    pub fn set_data(&mut self, bytes: &[u8]) {
        self.json["data"] = Value::String(BASE64.encode(bytes));
    }
}

/// One relayed connection as the hook sees it.
#[derive(Debug, Clone)]
pub struct Conn {
    /// Numbered from 1 in the order the proxy accepted them.
    pub id: usize,
    /// The user of the `login` frame, once the client sent it.
    pub user: Option<String>,
}

impl Conn {
    /// This connection logged in as `user`.
    pub fn is(&self, user: &str) -> bool {
        self.user.as_deref() == Some(user)
    }
}

/// Where a recorded frame was seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// As its origin (an honest client or chatd) wrote it, before the hook.
    Read,
    /// As the proxy wrote it on (after the hook, and injected frames).
    Written,
}

/// A frame the proxy saw.
#[derive(Debug, Clone)]
pub struct Record {
    pub conn: usize,
    pub user: Option<String>,
    pub dir: Dir,
    pub stage: Stage,
    pub frame: Frame,
}

/// The rewrite hook: called for every frame read, in either direction, with the connection it
/// travels on; what it returns is written on, in order (empty: dropped).
pub type Hook = Box<dyn FnMut(&Conn, Dir, Frame) -> Vec<Frame> + Send>;

/// What a connection's writer task is given.
enum Out {
    Bytes(Vec<u8>),
    Close,
}

/// A live connection's writers, for [`Proxy::inject`].
struct Live {
    conn: Conn,
    up: UnboundedSender<Out>,
    down: UnboundedSender<Out>,
}

/// State shared by the proxy's tasks and the test.
struct Shared {
    hook: Mutex<Hook>,
    records: Mutex<Vec<Record>>,
    changed: Condvar,
    live: Mutex<Vec<Live>>,
    next_id: AtomicUsize,
}

impl Shared {
    fn record(&self, conn: &Conn, dir: Dir, stage: Stage, frame: &Frame) {
        self.records.lock().unwrap().push(Record {
            conn: conn.id,
            user: conn.user.clone(),
            dir,
            stage,
            frame: frame.clone(),
        });
        self.changed.notify_all();
    }

    /// Hands `frame`'s bytes to the writer, then records it as written: a test that saw the
    /// record and injects a frame after it gets it written after it.
    fn write(&self, conn: &Conn, dir: Dir, frame: &Frame, to: &UnboundedSender<Out>) {
        let _ = to.send(Out::Bytes(encode(dir, frame)));
        self.record(conn, dir, Stage::Written, frame);
    }
}

/// The proxy: listening on its own 127.0.0.1 port, relaying to one chatd.
pub struct Proxy {
    pub addr: SocketAddr,
    /// chatd's fingerprint, which the proxy presents too.
    pub fingerprint: String,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Proxy {
    /// Starts a proxy for `server`, whose certificate and key are `cert.pem` and `key.pem` in
    /// `state_dir` (what chatd makes when none is configured).
    pub fn start(server: &Server, state_dir: &Path) -> Proxy {
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_file_iter(state_dir.join("cert.pem"))
                .expect("chatd's cert.pem")
                .collect::<Result<_, _>>()
                .expect("chatd's cert.pem");
        assert_eq!(
            Fingerprint::of(certs[0].as_ref()).to_string(),
            server.fingerprint,
            "cert.pem is not the certificate chatd serves"
        );
        let key = PrivateKeyDer::from_pem_file(state_dir.join("key.pem")).expect("chatd's key.pem");
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let connector =
            chatd_testkit::connector(server.fingerprint.parse().expect("fingerprint")).unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            hook: Mutex::new(Box::new(|_: &Conn, _: Dir, f: Frame| vec![f])),
            records: Mutex::new(Vec::new()),
            changed: Condvar::new(),
            live: Mutex::new(Vec::new()),
            next_id: AtomicUsize::new(1),
        });
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let upstream = server.addr;
        let shared2 = Arc::clone(&shared);
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let accept = async {
                    loop {
                        let Ok((tcp, _)) = listener.accept().await else {
                            continue;
                        };
                        let _ = tcp.set_nodelay(true);
                        let (acceptor, connector) = (acceptor.clone(), connector.clone());
                        let shared = Arc::clone(&shared2);
                        tokio::spawn(async move {
                            // chat's first handshake may only learn the fingerprint and abort.
                            let Ok(client) = acceptor.accept(tcp).await else {
                                return;
                            };
                            let Ok(server) = chatd_testkit::connect(upstream, &connector).await
                            else {
                                return;
                            };
                            relay(shared, client, server).await;
                        });
                    }
                };
                tokio::select! {
                    () = accept => {}
                    _ = stopped => {}
                }
            });
        });
        Proxy {
            addr,
            fingerprint: server.fingerprint.clone(),
            shared,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Replaces the rewrite hook (the default passes every frame on unchanged).
    pub fn set_hook(&self, hook: impl FnMut(&Conn, Dir, Frame) -> Vec<Frame> + Send + 'static) {
        *self.shared.hook.lock().unwrap() = Box::new(hook);
    }

    /// Writes `frame` on the newest live connection of `user`, in direction `dir`.
    pub fn inject(&self, user: &str, dir: Dir, frame: Frame) {
        let live = self.shared.live.lock().unwrap();
        let l = live
            .iter()
            .rev()
            .find(|l| l.conn.is(user))
            .unwrap_or_else(|| panic!("no live connection of {user} to inject into"));
        let to = match dir {
            Dir::Up => &l.up,
            Dir::Down => &l.down,
        };
        self.shared.write(&l.conn, dir, &frame, to);
    }

    /// Writes `bytes` as they are on the newest live connection of `user` (not recorded).
    pub fn inject_raw(&self, user: &str, dir: Dir, bytes: &[u8]) {
        let live = self.shared.live.lock().unwrap();
        let l = live
            .iter()
            .rev()
            .find(|l| l.conn.is(user))
            .unwrap_or_else(|| panic!("no live connection of {user} to inject into"));
        let to = match dir {
            Dir::Up => &l.up,
            Dir::Down => &l.down,
        };
        let _ = to.send(Out::Bytes(bytes.to_vec()));
    }

    /// Every frame seen so far.
    pub fn records(&self) -> Vec<Record> {
        self.shared.records.lock().unwrap().clone()
    }

    /// Waits for a recorded frame satisfying `pred` (searching from the first one).
    pub fn wait_for(&self, what: &str, pred: impl Fn(&Record) -> bool) -> Record {
        let deadline = Instant::now() + TIMEOUT;
        let mut records = self.shared.records.lock().unwrap();
        loop {
            if let Some(r) = records.iter().find(|r| pred(r)) {
                return r.clone();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "the proxy saw no frame {what} within {TIMEOUT:?}; it saw:\n{}",
                dump(&records)
            );
            records = self.shared.changed.wait_timeout(records, left).unwrap().0;
        }
    }

    /// Waits until `user`'s client has written a frame of type `ty` (read by the proxy).
    pub fn wait_sent(&self, user: &str, ty: &str) -> Record {
        self.wait_for(&format!("{ty} from {user}"), |r| {
            r.dir == Dir::Up && r.stage == Stage::Read && r.user.as_deref() == Some(user) && {
                r.frame.ty() == ty
            }
        })
    }

    /// A position in the record, for [`Proxy::assert_no_chain_to_since`].
    pub fn mark(&self) -> usize {
        self.shared.records.lock().unwrap().len()
    }

    /// The `chain` frames the honest clients wrote (as read by the proxy) from record `from`
    /// on, decoded, with the user who wrote each.
    pub fn chains_sent_since(&self, from: usize) -> Vec<(Option<String>, WrappedChain)> {
        let records = self.shared.records.lock().unwrap();
        records
            .get(from..)
            .unwrap_or_default()
            .iter()
            .filter(|r| r.dir == Dir::Up && r.stage == Stage::Read && r.frame.ty() == "chain")
            .map(|r| {
                let chain = r
                    .frame
                    .chain()
                    .unwrap_or_else(|| panic!("an honest client sent a bad chain: {:?}", r.frame));
                (r.user.clone(), chain)
            })
            .collect()
    }

    /// Asserts that no honest client wrapped a chain for the device `attacker`, i.e. that the
    /// attacker's key never received a sealed copy of anything; returns how many chains were
    /// checked.
    pub fn assert_no_chain_to(&self, attacker: &Fingerprint) -> usize {
        self.assert_no_chain_to_since(attacker, 0)
    }

    /// [`Proxy::assert_no_chain_to`] for the chains written from record `from` on.
    pub fn assert_no_chain_to_since(&self, attacker: &Fingerprint, from: usize) -> usize {
        let chains = self.chains_sent_since(from);
        for (user, chain) in &chains {
            let h = chain.header();
            assert!(
                h.recipient_device != *attacker,
                "{user:?} wrapped its chain for {:?} to the attacker's key {attacker}",
                h.conversation
            );
        }
        chains.len()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        if std::thread::panicking() {
            eprintln!(
                "---- proxy ({}) frames ----\n{}\n----",
                self.addr,
                dump(
                    &self
                        .shared
                        .records
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                )
            );
        }
    }
}

/// The records one a line, shortened, for failure messages.
fn dump(records: &[Record]) -> String {
    records
        .iter()
        .map(|r| {
            let mut text = r.frame.json.to_string();
            if text.len() > 300 {
                let mut cut = 300;
                while !text.is_char_boundary(cut) {
                    cut -= 1;
                }
                text.truncate(cut);
                text.push_str("...");
            }
            format!(
                "#{} {:?} {:?} {:?}{} {text}",
                r.conn,
                r.user,
                r.dir,
                r.stage,
                if r.frame.binary { " (binary)" } else { "" }
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Relays one client connection to its own chatd connection until either side ends.
async fn relay<C, S>(shared: Arc<Shared>, client: C, server: S)
where
    C: AsyncRead + AsyncWrite + Send + 'static,
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let id = shared.next_id.fetch_add(1, Ordering::SeqCst);
    let conn = Arc::new(Mutex::new(Conn { id, user: None }));
    let (client_r, client_w) = tokio::io::split(client);
    let (server_r, server_w) = tokio::io::split(server);
    let (up, up_rx) = unbounded_channel();
    let (down, down_rx) = unbounded_channel();
    shared.live.lock().unwrap().push(Live {
        conn: Conn { id, user: None },
        up: up.clone(),
        down: down.clone(),
    });
    tokio::spawn(writer(server_w, up_rx));
    tokio::spawn(writer(client_w, down_rx));
    let up_pump = pump(
        Arc::clone(&shared),
        Arc::clone(&conn),
        Dir::Up,
        client_r,
        up,
    );
    let down_pump = pump(Arc::clone(&shared), conn, Dir::Down, server_r, down);
    // Each direction ends on its own (a client's `quit` is answered by chatd's `bye`).
    tokio::join!(up_pump, down_pump);
    shared.live.lock().unwrap().retain(|l| l.conn.id != id);
}

/// Reads frames from `from`, runs them through the hook and hands them to the writer.
async fn pump<R: AsyncRead + Unpin>(
    shared: Arc<Shared>,
    conn: Arc<Mutex<Conn>>,
    dir: Dir,
    from: R,
    to: UnboundedSender<Out>,
) {
    let mut frames = tokio_util::codec::FramedRead::new(from, WireCodec::new(1 << 20));
    while let Some(item) = frames.next().await {
        let Ok(Ok(wire)) = item else {
            // Honest ends send nothing unreadable; a broken stream ends the relay.
            break;
        };
        let Some(frame) = decode(wire.clone()) else {
            // A blank line (keepalive) or bytes that are not a frame: passed on unchanged.
            let _ = to.send(Out::Bytes(raw_bytes(&wire)));
            continue;
        };
        let current = {
            let mut c = conn.lock().unwrap();
            if dir == Dir::Up && frame.ty() == "login" {
                c.user = frame.json["user"].as_str().map(str::to_string);
                let mut live = shared.live.lock().unwrap();
                if let Some(l) = live.iter_mut().find(|l| l.conn.id == c.id) {
                    l.conn.user.clone_from(&c.user);
                }
            }
            c.clone()
        };
        shared.record(&current, dir, Stage::Read, &frame);
        let out = (shared.hook.lock().unwrap())(&current, dir, frame);
        for f in out {
            shared.write(&current, dir, &f, &to);
        }
    }
    let _ = to.send(Out::Close);
}

/// Writes what it is given; on `Close`, ends the TLS stream (close_notify).
async fn writer<W: AsyncWrite>(w: W, mut rx: UnboundedReceiver<Out>) {
    let mut w = std::pin::pin!(w);
    while let Some(out) = rx.recv().await {
        match out {
            Out::Bytes(bytes) => {
                if w.write_all(&bytes).await.is_err() || w.flush().await.is_err() {
                    return;
                }
            }
            Out::Close => break,
        }
    }
    let _ = w.shutdown().await;
}

/// A wire item as a [`Frame`]; None for blank or non-JSON lines and undecodable envelopes.
fn decode(wire: Wire) -> Option<Frame> {
    match wire {
        Wire::Line(line) => {
            let json: Value = serde_json::from_str(&line).ok()?;
            json.is_object().then_some(Frame::json(json))
        }
        Wire::Send(data) => Some(Frame {
            json: json!({"type": "send", "data": BASE64.encode(&data)}),
            binary: true,
        }),
        Wire::Envelope { ts, data } => {
            let env = Envelope::decode(&data).ok()?;
            let h = env.header();
            Some(Frame {
                json: json!({
                    "type": "envelope",
                    "from": h.sender_user,
                    "device": h.sender_device.to_string(),
                    "data": BASE64.encode(&data),
                    "ts": ts,
                }),
                binary: true,
            })
        }
    }
}

/// The bytes of a wire item as it came.
fn raw_bytes(wire: &Wire) -> Vec<u8> {
    match wire {
        Wire::Line(line) => format!("{line}\n").into_bytes(),
        Wire::Send(data) => chatd_proto::codec::binary_send(data).to_vec(),
        Wire::Envelope { ts, data } => chatd_proto::codec::binary_envelope(*ts, data).to_vec(),
    }
}

/// A frame's bytes on the wire: binary when it is marked so and a binary frame can say the
/// same (an envelope's binary frame names no sender: its header's is implied), else a line.
fn encode(dir: Dir, frame: &Frame) -> Vec<u8> {
    if frame.binary {
        let data = frame.json["data"]
            .as_str()
            .and_then(|d| BASE64.decode(d).ok());
        match (dir, frame.ty(), data) {
            (Dir::Up, "send", Some(data)) => {
                return chatd_proto::codec::binary_send(&data).to_vec();
            }
            (Dir::Down, "envelope", Some(data)) => {
                let same_sender = Envelope::decode(&data).is_ok_and(|env| {
                    let h = env.header();
                    frame.json["from"] == h.sender_user.as_str()
                        && frame.json["device"] == h.sender_device.to_string().as_str()
                });
                if let (true, Some(ts)) = (same_sender, frame.json["ts"].as_u64()) {
                    return chatd_proto::codec::binary_envelope(ts, &data).to_vec();
                }
            }
            _ => {}
        }
    }
    let mut line = frame.json.to_string().into_bytes();
    line.push(b'\n');
    line
}
