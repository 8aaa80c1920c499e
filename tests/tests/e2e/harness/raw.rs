//! The raw protocol client: TLS and login through chatd-testkit, then frames sent and read
//! directly; fixed device keys so tests need not generate RSA keys.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Mutex, OnceLock};

use base64::Engine;
use bytes::BytesMut;
use chatd_proto::e2e::Envelope;
use chatd_proto::e2e::{DeviceKey, SenderChain, seal};
use chatd_proto::frame::ClientFrame;
use chatd_proto::{LineError, Wire, WireCodec};
use chatd_testkit::Tls;
use futures_util::StreamExt;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt, Chain, ReadHalf, WriteHalf};
use tokio_util::codec::FramedRead;

use super::chatd::Server;
use super::process::TIMEOUT;

// ---------------------------------------------------------------------------------------------
// Raw protocol client
// ---------------------------------------------------------------------------------------------

/// The raw client's `hello`, asking for binary envelope frames if `binary`.
fn e2e_hello(binary: bool) -> ClientFrame {
    chatd_testkit::hello("e2e", binary)
}

/// A raw client's own runtime.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// TLS to `addr`, verifying its certificate against the fingerprint chatd printed.
async fn connect_tls(addr: SocketAddr, fingerprint: &str) -> Tls {
    connect_tls_from(addr, None, fingerprint).await
}

/// [`connect_tls`] from the local address `source` (one of 127.0.0.0/8: one attacker each).
async fn connect_tls_from(addr: SocketAddr, source: Option<IpAddr>, fingerprint: &str) -> Tls {
    let fingerprint = fingerprint.parse().expect("fingerprint");
    let connector = chatd_testkit::connector(fingerprint).expect("TLS configuration");
    let connect = chatd_testkit::connect_from(addr, source, &connector);
    match tokio::time::timeout(TIMEOUT, connect).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => panic!("TLS connect to {addr} failed: {e}"),
        Err(_) => panic!("TLS connect to {addr} timed out"),
    }
}

/// How a connection ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Closed {
    /// TLS close_notify then EOF.
    Clean,
    /// Reset or EOF without close_notify.
    Abrupt(String),
}

// ---------------------------------------------------------------------------------------------
// Device keys
// ---------------------------------------------------------------------------------------------

/// The fixed 2048-bit test keys kept with the e2e library.
const FIXED_KEYS: [(&str, &str); 3] = [
    (
        "alice",
        include_str!("../../../../proto/src/e2e/testdata/alice.pem"),
    ),
    (
        "bob",
        include_str!("../../../../proto/src/e2e/testdata/bob.pem"),
    ),
    (
        "carol",
        include_str!("../../../../proto/src/e2e/testdata/carol.pem"),
    ),
];

/// A device key for `name`: alice, bob and carol have fixed ones; any other name gets one
/// generated once per test run (RSA generation is slow, so keys are reused).
pub fn test_key(name: &str) -> DeviceKey {
    static KEYS: OnceLock<Mutex<std::collections::HashMap<String, DeviceKey>>> = OnceLock::new();
    let keys = KEYS.get_or_init(Default::default);
    let mut keys = keys.lock().unwrap_or_else(|p| p.into_inner());
    keys.entry(name.to_string())
        .or_insert_with(|| match FIXED_KEYS.iter().find(|(n, _)| *n == name) {
            Some((_, pem)) => DeviceKey::from_pkcs8_pem(pem).expect("fixed test key"),
            None => DeviceKey::generate(2048).expect("generate a test key"),
        })
        .clone()
}

/// Base64 SPKI DER of a key, as `login` carries it.
pub fn key_b64(key: &DeviceKey) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(key.public().to_spki_der())
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A frame read off the wire as JSON; a binary `envelope` becomes the JSON frame it stands
/// for (sender from the envelope's header, `data` in base64) plus `"binary": true`.
fn as_json(wire: Wire) -> Value {
    match wire {
        Wire::Line(line) => serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("server sent non-JSON ({e}): {line:?}")),
        Wire::Envelope { ts, data } => {
            let env = Envelope::decode(&data)
                .unwrap_or_else(|e| panic!("server sent an undecodable binary envelope: {e}"));
            let h = env.header();
            serde_json::json!({
                "type": "envelope",
                "from": h.sender_user,
                "device": h.sender_device.to_string(),
                "data": base64::engine::general_purpose::STANDARD.encode(&data),
                "ts": ts,
                "binary": true,
            })
        }
        Wire::Send(_) => panic!("server sent a binary send frame"),
    }
}

/// What a raw client reads from: the bytes login read past `login_ok`, then the stream.
type Reader = FramedRead<Chain<std::io::Cursor<BytesMut>, ReadHalf<Tls>>, WireCodec>;

/// A raw protocol client over TLS, driven synchronously by its own small runtime.
pub struct Raw {
    rt: tokio::runtime::Runtime,
    reader: Reader,
    writer: WriteHalf<Tls>,
    /// Every frame received, for failure messages.
    seen: Vec<String>,
    /// The device key `login` presents (set by `try_login` from the user name unless chosen).
    pub key: Option<DeviceKey>,
    /// The user logged in as, for sealing envelopes.
    user: String,
    /// One sending chain per conversation; raw clients never hand them out, since the server
    /// routes envelopes without looking inside.
    chains: std::collections::HashMap<String, SenderChain>,
    /// When true (the default), [`Raw::recv`] skips `device` frames: most tests are about
    /// something else, and every login makes one.
    pub skip_devices: bool,
    /// This end's address (the `peer` chatd logs for the session).
    pub local: SocketAddr,
}

impl Raw {
    /// TLS-connects to `server`, verifying its certificate against the fingerprint it printed.
    pub fn connect(server: &Server) -> Raw {
        Raw::connect_to(server.addr, &server.fingerprint)
    }

    pub fn connect_to(addr: SocketAddr, fingerprint: &str) -> Raw {
        let rt = runtime();
        let tls = rt.block_on(connect_tls(addr, fingerprint));
        Raw::over(rt, tls, BytesMut::new())
    }

    /// A client reading `read` (what login read past `login_ok`), then the rest of `tls`.
    fn over(rt: tokio::runtime::Runtime, tls: Tls, read: BytesMut) -> Raw {
        let local = tls.get_ref().0.local_addr().expect("local address");
        let (r, w) = tokio::io::split(tls);
        let r = AsyncReadExt::chain(std::io::Cursor::new(read), r);
        Raw {
            rt,
            reader: FramedRead::new(r, WireCodec::new(1 << 20)),
            writer: w,
            seen: Vec::new(),
            key: None,
            user: String::new(),
            chains: Default::default(),
            skip_devices: true,
            local,
        }
    }

    /// [`Raw::connect`] from the local address `source` (e.g. [`attacker`]`(7)`).
    pub fn connect_from(server: &Server, source: IpAddr) -> Raw {
        Raw::connect_to_from(server.addr, source, &server.fingerprint)
    }

    /// [`Raw::connect_to`] from the local address `source`: for attacker threads, which cannot
    /// share a [`Server`].
    pub fn connect_to_from(addr: SocketAddr, source: IpAddr, fingerprint: &str) -> Raw {
        let rt = runtime();
        let tls = rt.block_on(connect_tls_from(addr, Some(source), fingerprint));
        Raw::over(rt, tls, BytesMut::new())
    }

    /// Connects, says hello and logs in with [`test_key`] of `user`; asserts `login_ok`.
    pub fn login(server: &Server, user: &str, password: &str) -> Raw {
        Raw::login_from(server, None, user, password)
    }

    /// [`Raw::login`] from the local address `source`, or any if `None`.
    pub fn login_from(server: &Server, source: Option<IpAddr>, user: &str, password: &str) -> Raw {
        let rt = runtime();
        let mut tls = rt.block_on(connect_tls_from(server.addr, source, &server.fingerprint));
        let key = test_key(user);
        let login = chatd_testkit::login(user, password, &key_b64(&key));
        let exchange = chatd_testkit::log_in(&mut tls, e2e_hello(false), login);
        let read = match rt.block_on(async { tokio::time::timeout(TIMEOUT, exchange).await }) {
            Ok(Ok(read)) => read,
            Ok(Err(e)) => panic!("login as {user}: {e}"),
            Err(_) => panic!("login as {user} did not finish within {TIMEOUT:?}"),
        };
        let mut raw = Raw::over(rt, tls, read);
        raw.key = Some(key);
        raw.user = user.to_string();
        raw
    }

    /// Sends `frames` as protocol lines in one write.
    fn send_frames(&mut self, frames: &[ClientFrame]) {
        let bytes = chatd_testkit::encode(frames).expect("frames encode");
        self.send_raw(&bytes);
    }

    /// Sends `bytes` as they are.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        let res = self.rt.block_on(async {
            tokio::time::timeout(TIMEOUT, async {
                self.writer.write_all(bytes).await?;
                self.writer.flush().await
            })
            .await
        });
        match res {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("write failed: {e}"),
            Err(_) => panic!("write did not finish within {TIMEOUT:?}"),
        }
    }

    /// Sends one line (a newline is added).
    pub fn send_line(&mut self, line: &str) {
        let mut bytes = line.as_bytes().to_vec();
        bytes.push(b'\n');
        self.send_raw(&bytes);
    }

    /// Sends a JSON value as one line.
    pub fn send(&mut self, frame: Value) {
        self.send_line(&frame.to_string());
    }

    fn next_item(&mut self) -> Option<Result<Result<Wire, LineError>, std::io::Error>> {
        let item = self
            .rt
            .block_on(async { tokio::time::timeout(TIMEOUT, self.reader.next()).await });
        match item {
            Ok(item) => item,
            Err(_) => panic!(
                "no frame from the server within {TIMEOUT:?}; seen so far: {:#?}",
                self.seen
            ),
        }
    }

    /// The next frame (skipping `device` frames while [`Raw::skip_devices`] is set); fails if
    /// the connection ends or nothing comes.
    pub fn recv(&mut self) -> Value {
        loop {
            let frame = self.recv_any();
            if !(self.skip_devices && frame["type"] == "device") {
                return frame;
            }
        }
    }

    /// The next frame of any type. A binary envelope frame comes back as the JSON frame it
    /// stands for, with `"binary": true` added.
    pub fn recv_any(&mut self) -> Value {
        match self.next_item() {
            Some(Ok(Ok(wire))) => {
                let frame = as_json(wire);
                self.seen.push(frame.to_string());
                frame
            }
            Some(Ok(Err(e))) => panic!("server sent an unreadable line: {e}"),
            Some(Err(e)) => panic!(
                "connection failed while waiting for a frame: {e}; seen so far: {:#?}",
                self.seen
            ),
            None => panic!(
                "connection closed while waiting for a frame; seen so far: {:#?}",
                self.seen
            ),
        }
    }

    /// The next frame (skipping `device` frames while [`Raw::skip_devices`] is set), or None
    /// when the connection ends; fails if nothing comes.
    pub fn try_recv(&mut self) -> Option<Value> {
        loop {
            let frame = match self.next_item() {
                Some(Ok(Ok(wire))) => as_json(wire),
                Some(Ok(Err(e))) => panic!("server sent an unreadable line: {e}"),
                Some(Err(_)) | None => return None,
            };
            self.seen.push(frame.to_string());
            if !(self.skip_devices && frame["type"] == "device") {
                return Some(frame);
            }
        }
    }

    /// The next frame, which must have `"type": ty`.
    pub fn recv_type(&mut self, ty: &str) -> Value {
        let frame = self.recv();
        assert_eq!(frame["type"], ty, "expected a {ty} frame, got {frame}");
        frame
    }

    /// The next frame, which must be an error with `code`; returns its message.
    pub fn expect_error(&mut self, code: &str) -> String {
        let frame = self.recv_type("error");
        assert_eq!(frame["code"], code, "{frame}");
        frame["message"]
            .as_str()
            .expect("error message")
            .to_string()
    }

    /// The next frame must be `bye` with this reason.
    pub fn expect_bye(&mut self, reason: &str) {
        let frame = self.recv_type("bye");
        assert_eq!(frame["reason"], reason, "{frame}");
    }

    /// Every frame until the connection ends, and how it ended.
    pub fn recv_until_closed(&mut self) -> (Vec<Value>, Closed) {
        let mut frames = Vec::new();
        loop {
            match self.next_item() {
                None => return (frames, Closed::Clean),
                Some(Err(e)) => return (frames, Closed::Abrupt(e.to_string())),
                Some(Ok(Err(e))) => panic!("server sent an unreadable line: {e}"),
                Some(Ok(Ok(wire))) => frames.push(as_json(wire)),
            }
        }
    }

    /// Waits for the end of the connection; any frame before it is a failure.
    pub fn expect_closed(&mut self) -> Closed {
        match self.next_item() {
            None => Closed::Clean,
            Some(Err(e)) => Closed::Abrupt(e.to_string()),
            Some(Ok(item)) => panic!("expected the connection to close, got {item:?}"),
        }
    }

    /// Connects and logs in as `user` with device key `key`, asking for `features` in
    /// `hello`; returns the client, the server's `hello` and the `login_ok`.
    pub fn login_device(
        server: &Server,
        user: &str,
        password: &str,
        key: DeviceKey,
        features: &[&str],
    ) -> (Raw, Value, Value) {
        let mut raw = Raw::connect(server);
        raw.send_frames(&[chatd_testkit::hello_with_features("e2e", false, features)]);
        let hello = raw.recv_type("hello");
        raw.key = Some(key);
        let login_ok = raw.try_login(user, password);
        assert_eq!(login_ok["type"], "login_ok", "{login_ok}");
        (raw, hello, login_ok)
    }

    /// Sends `hello` (the current version) and returns the server's hello.
    pub fn hello(&mut self) -> Value {
        self.send_frames(&[e2e_hello(false)]);
        self.recv_type("hello")
    }

    /// Sends `hello` asking for binary envelope frames; returns the server's hello.
    pub fn hello_binary(&mut self) -> Value {
        self.send_frames(&[e2e_hello(true)]);
        self.recv_type("hello")
    }

    /// Sends an envelope (base64, as [`Raw::seal`] returns it) as a binary `send` frame.
    pub fn send_envelope_binary(&mut self, data: &str) {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(data)
            .expect("base64 envelope");
        self.send_raw(&chatd_proto::codec::binary_send(&raw));
    }

    /// Sends `login` with this client's device key ([`test_key`] of `user` unless
    /// [`Raw::key`] was set) and returns the answer (login_ok or error).
    pub fn try_login(&mut self, user: &str, password: &str) -> Value {
        let key = self.key.get_or_insert_with(|| test_key(user)).clone();
        self.user = user.to_string();
        self.send_frames(&[chatd_testkit::login(user, password, &key_b64(&key))]);
        self.recv()
    }

    /// Seals `text` for `conversation` with this client's key; returns the base64 envelope.
    pub fn seal(&mut self, conversation: &str, text: &str) -> String {
        let key = self.key.clone().expect("log in before sealing");
        let chain = self
            .chains
            .entry(conversation.to_string())
            .or_insert_with(|| SenderChain::new().expect("chain"));
        seal(&key, &self.user, conversation, chain, text, now_ms())
            .expect("seal")
            .to_base64()
            .expect("base64")
    }

    /// Sends an envelope (base64) as a `send` frame.
    pub fn send_envelope(&mut self, data: &str) {
        self.send(serde_json::json!({"type":"send","data":data}));
    }

    /// Ping with `nonce`; the next frame must be the matching pong. A sync point: every frame
    /// queued for this session before the ping was answered arrives before the pong.
    pub fn sync(&mut self, nonce: u64) {
        self.send(serde_json::json!({"type":"ping","nonce":nonce}));
        let pong = self.recv();
        assert_eq!(
            pong,
            serde_json::json!({"type":"pong","nonce":nonce}),
            "expected only the pong"
        );
    }

    /// Seals `text` for the default room (#lobby, everyone is in it) and sends it; returns
    /// the envelope (base64).
    pub fn say(&mut self, text: &str) -> String {
        let data = self.seal("#lobby", text);
        self.send_envelope(&data);
        data
    }

    /// Seals `text` for the pair (this user, `to`) and sends it; returns the envelope.
    pub fn whisper(&mut self, to: &str, text: &str) -> String {
        let conv = chatd_proto::conversation::Conversation::pair(&self.user, to).name();
        let data = self.seal(&conv, text);
        self.send_envelope(&data);
        data
    }

    /// The next frame must be an envelope from `from` carrying exactly `data`.
    pub fn expect_envelope(&mut self, from: &str, data: &str) -> Value {
        let frame = self.recv_type("envelope");
        assert_eq!(frame["from"], from, "{frame}");
        assert_eq!(frame["data"], data, "{frame}");
        frame
    }

    pub fn command(&mut self, name: &str, args: &str) {
        self.send(serde_json::json!({"type":"command","name":name,"args":args}));
    }
}
