//! A scripted chatd stand-in for tests of the client alone: a TLS listener (a fresh
//! self-signed certificate) that takes one `chat` connection after another (a restarted client
//! reconnects to it), handing the test every line the client sends and writing the lines the
//! test gives it. Nothing is checked or answered unless the test does it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::mpsc;

use chatd_proto::{Fingerprint, LineCodec};
use futures_util::StreamExt;
use serde_json::Value;
use tokio::io::AsyncWriteExt;

use super::process::TIMEOUT;

/// A scripted server that takes one `chat` connection after another (a client restarted
/// reconnects to it); lines in and out over channels.
pub struct FakeServer {
    pub addr: SocketAddr,
    pub fingerprint: Fingerprint,
    to_client: tokio::sync::mpsc::UnboundedSender<String>,
    from_client: mpsc::Receiver<Value>,
}

impl FakeServer {
    pub fn start() -> FakeServer {
        let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
        let cert = ck.cert.der().clone();
        let fingerprint = Fingerprint::of(cert.as_ref());
        let key = rustls::pki_types::PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der());
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key.into())
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let (to_client, mut outgoing) = tokio::sync::mpsc::unbounded_channel::<String>();
        let (incoming, from_client) = mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                loop {
                    let Ok((tcp, _)) = listener.accept().await else {
                        return;
                    };
                    // A handshake that only learns the fingerprint fails here: next one.
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        continue;
                    };
                    let (r, mut w) = tokio::io::split(tls);
                    let mut lines = tokio_util::codec::FramedRead::new(r, LineCodec::new(1 << 20));
                    loop {
                        tokio::select! {
                            line = lines.next() => match line {
                                Some(Ok(Ok(line))) => {
                                    let v: Value = serde_json::from_str(&line).unwrap();
                                    if incoming.send(v).is_err() {
                                        return;
                                    }
                                }
                                // This client is gone: wait for the next.
                                _ => break,
                            },
                            out = outgoing.recv() => match out {
                                Some(line) => {
                                    let line = format!("{line}\n");
                                    if w.write_all(line.as_bytes()).await.is_err() {
                                        break;
                                    }
                                    let _ = w.flush().await;
                                }
                                None => return,
                            },
                        }
                    }
                }
            });
        });
        FakeServer {
            addr,
            fingerprint,
            to_client,
            from_client,
        }
    }

    /// Writes `frame` as a line to the connected client.
    pub fn send(&self, frame: Value) {
        self.to_client.send(frame.to_string()).unwrap();
    }

    /// The next line the client sent, as JSON.
    pub fn recv(&self) -> Value {
        self.from_client
            .recv_timeout(TIMEOUT)
            .expect("no frame from chat")
    }

    /// The next line the client sent, which must have `"type": ty`.
    pub fn recv_type(&self, ty: &str) -> Value {
        let f = self.recv();
        assert_eq!(f["type"], ty, "{f}");
        f
    }
}
