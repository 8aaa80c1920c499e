//! In-process TLS tests of the trust rules: a tokio TLS server with rcgen certificates
//! that can be swapped between connections, and [`conn::connect_tls`] against it; and one
//! binary-frame session over real TLS.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use chatd_proto::codec::binary_envelope;
use chatd_proto::frame::{decode, encode};
use chatd_proto::{ClientFrame, Fingerprint, PROTOCOL_VERSION, ServerFrame, Wire, WireCodec};
use futures_util::StreamExt;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{RootCertStore, ServerConfig};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::codec::FramedRead;

use crate::conn::{self, AskTrust, Connection, Incoming, NoAsk, ServerAddr, Trust};
use crate::dispatch::{self, Outbound, Sent};

/// A certificate chain and key for the test server, plus the PEM of the CA (or itself).
struct Identity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    trust_pem: String,
}

impl Identity {
    fn fingerprint(&self) -> Fingerprint {
        Fingerprint::of(self.chain[0].as_ref())
    }

    /// Like chatd's: self-signed, for localhost and 127.0.0.1.
    fn self_signed() -> Self {
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
            .unwrap();
        Identity {
            chain: vec![ck.cert.der().clone()],
            key: PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der()).into(),
            trust_pem: ck.cert.pem(),
        }
    }

    /// A leaf for `names` signed by a fresh CA; `trust_pem` is the CA.
    fn ca_signed(names: &[&str]) -> Self {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "chat test CA");
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, &ca_key);
        let leaf_key = KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let leaf = CertificateParams::new(names)
            .unwrap()
            .signed_by(&leaf_key, &issuer)
            .unwrap();
        Identity {
            chain: vec![leaf.der().clone(), ca_cert.der().clone()],
            key: PrivatePkcs8KeyDer::from(leaf_key.serialize_der()).into(),
            trust_pem: ca_cert.pem(),
        }
    }

    fn roots(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        roots.add(self.chain.last().unwrap().clone()).unwrap();
        roots
    }
}

fn acceptor(id: &Identity, tls12_only: bool) -> TlsAcceptor {
    let versions: &[&rustls::SupportedProtocolVersion] = if tls12_only {
        &[&rustls::version::TLS12]
    } else {
        &[&rustls::version::TLS13, &rustls::version::TLS12]
    };
    let config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(versions)
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(id.chain.clone(), id.key.clone_key())
            .unwrap();
    TlsAcceptor::from(Arc::new(config))
}

/// A TLS server on 127.0.0.1 whose certificate can be swapped between connections.
struct TestServer {
    addr: ServerAddr,
    acceptor: Arc<Mutex<TlsAcceptor>>,
}

impl TestServer {
    async fn start(id: &Identity) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let acceptor = Arc::new(Mutex::new(acceptor(id, false)));
        let current = acceptor.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acc = current.lock().unwrap().clone();
                tokio::spawn(async move {
                    if let Ok(mut tls) = acc.accept(tcp).await {
                        let mut buf = [0u8; 64];
                        while matches!(tls.read(&mut buf).await, Ok(n) if n > 0) {}
                    }
                });
            }
        });
        TestServer {
            addr: ServerAddr::parse(&format!("127.0.0.1:{port}")).unwrap(),
            acceptor,
        }
    }

    fn swap(&self, id: &Identity, tls12_only: bool) {
        *self.acceptor.lock().unwrap() = acceptor(id, tls12_only);
    }
}

fn pinning(known: &Path, accept: Option<Fingerprint>) -> Trust {
    Trust::Pinning {
        roots: RootCertStore::empty(),
        known_servers: known.to_path_buf(),
        accept,
        learned: None,
    }
}

async fn connect(addr: &ServerAddr, trust: &Trust) -> anyhow::Result<()> {
    let mut connected = conn::connect_tls::<NoAsk>(addr, trust, None).await?;
    connected.keep_pins().map(drop)
}

struct Answer(bool, usize);

impl AskTrust for Answer {
    async fn ask(&mut self, _: &ServerAddr, _: &Fingerprint) -> anyhow::Result<bool> {
        self.1 += 1;
        Ok(self.0)
    }
}

fn known_path(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("chat").join("known_servers")
}

#[tokio::test]
async fn pin_on_first_use_then_refuse_a_changed_certificate() {
    let first = Identity::self_signed();
    let server = TestServer::start(&first).await;
    let dir = tempfile::tempdir().unwrap();
    let known = known_path(&dir);
    let key = server.addr.to_string();

    // Unknown and nobody to ask: refused with the fingerprint and the advice; nothing written.
    let err = connect(&server.addr, &pinning(&known, None))
        .await
        .unwrap_err()
        .to_string();
    let fp = first.fingerprint();
    assert!(err.starts_with("the server's certificate is not signed by a trusted CA and is not pinned. Its fingerprint is SHA256:"), "{err}");
    assert!(
        err.ends_with(&format!("run again with --accept-fingerprint {fp}")),
        "{err}"
    );
    assert!(!known.exists());

    // A wrong --accept-fingerprint is refused too.
    let other = Identity::self_signed().fingerprint();
    let err = connect(&server.addr, &pinning(&known, Some(other)))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("does not match --accept-fingerprint"), "{err}");
    assert!(!known.exists());

    // The right one pins and connects.
    connect(&server.addr, &pinning(&known, Some(fp)))
        .await
        .unwrap();
    assert_eq!(fs::read_to_string(&known).unwrap(), format!("{key} {fp}\n"));

    // Pinned: connects without any flag, also over TLS 1.2 (its signature check).
    connect(&server.addr, &pinning(&known, None)).await.unwrap();
    server.swap(&first, true);
    connect(&server.addr, &pinning(&known, None)).await.unwrap();

    // The server's certificate changes: refused loudly, pin untouched.
    let second = Identity::self_signed();
    server.swap(&second, false);
    let err = connect(&server.addr, &pinning(&known, None))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with(&format!("WARNING: THE CERTIFICATE OF {key} HAS CHANGED!")),
        "{err}"
    );
    assert!(err.contains(&fp.to_string()) && err.contains(&second.fingerprint().to_string()));
    assert!(
        err.contains(&format!("line 1 of {}", known.display())),
        "{err}"
    );
    assert_eq!(fs::read_to_string(&known).unwrap(), format!("{key} {fp}\n"));

    // Asking is not offered for a changed certificate either.
    let mut asker = Answer(true, 0);
    let trust = pinning(&known, None);
    assert!(
        conn::connect_tls(&server.addr, &trust, Some(&mut asker))
            .await
            .is_err()
    );
    assert_eq!(asker.1, 0);

    // --accept-fingerprint with the new one replaces the pin.
    connect(&server.addr, &pinning(&known, Some(second.fingerprint())))
        .await
        .unwrap();
    // The server keeps its identity (the first fingerprint) across the rotation.
    assert_eq!(
        fs::read_to_string(&known).unwrap(),
        format!("{key} {} id={fp}\n", second.fingerprint())
    );
    connect(&server.addr, &pinning(&known, None)).await.unwrap();
}

#[tokio::test]
async fn asking_pins_on_yes_and_refuses_on_no() {
    let id = Identity::self_signed();
    let server = TestServer::start(&id).await;
    let dir = tempfile::tempdir().unwrap();
    let known = known_path(&dir);
    let trust = pinning(&known, None);

    let mut no = Answer(false, 0);
    assert!(
        conn::connect_tls(&server.addr, &trust, Some(&mut no))
            .await
            .is_err()
    );
    assert_eq!(no.1, 1);
    assert!(!known.exists());

    let mut yes = Answer(true, 0);
    let mut connected = conn::connect_tls(&server.addr, &trust, Some(&mut yes))
        .await
        .unwrap();
    // Nothing is written before the caller keeps the pins (after its login).
    assert!(!known.exists());
    let notes = connected.keep_pins().unwrap();
    assert!(notes[0].starts_with("pinned SHA256:"), "{notes:?}");
    assert_eq!(yes.1, 1);
    assert!(
        fs::read_to_string(&known)
            .unwrap()
            .contains(&id.fingerprint().to_string())
    );

    // Pinned now: no more questions.
    let mut again = Answer(false, 0);
    conn::connect_tls(&server.addr, &trust, Some(&mut again))
        .await
        .unwrap();
    assert_eq!(again.1, 0);
}

#[tokio::test]
async fn ca_file_is_verified_with_host_name_and_never_pins() {
    let dir = tempfile::tempdir().unwrap();
    let id = Identity::ca_signed(&["localhost", "127.0.0.1"]);
    let server = TestServer::start(&id).await;
    let ca = dir.path().join("ca.pem");
    fs::write(&ca, &id.trust_pem).unwrap();
    connect(&server.addr, &Trust::CaFile(ca.clone()))
        .await
        .unwrap();
    let localhost = ServerAddr::parse(&format!("localhost:{}", server.addr.port)).unwrap();
    connect(&localhost, &Trust::CaFile(ca.clone()))
        .await
        .unwrap();

    // A different CA: refused, with the TLS error.
    let other = dir.path().join("other.pem");
    fs::write(&other, Identity::ca_signed(&["localhost"]).trust_pem).unwrap();
    let err = connect(&server.addr, &Trust::CaFile(other))
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("TLS handshake with"), "{err:#}");

    // The right CA but a certificate for another name: refused (no pinning fallback).
    let wrong_name = Identity::ca_signed(&["elsewhere.example"]);
    let wrong_ca = dir.path().join("wrong-name-ca.pem");
    fs::write(&wrong_ca, &wrong_name.trust_pem).unwrap();
    server.swap(&wrong_name, false);
    let err = connect(&server.addr, &Trust::CaFile(wrong_ca))
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("certificate"), "{err:#}");

    // chatd's own self-signed certificate works as its own --ca.
    let own = Identity::self_signed();
    let own_pem = dir.path().join("cert.pem");
    fs::write(&own_pem, &own.trust_pem).unwrap();
    server.swap(&own, false);
    connect(&server.addr, &Trust::CaFile(own_pem))
        .await
        .unwrap();
}

#[tokio::test]
async fn trusted_roots_need_no_pin() {
    let dir = tempfile::tempdir().unwrap();
    let known = known_path(&dir);
    let id = Identity::ca_signed(&["127.0.0.1"]);
    let server = TestServer::start(&id).await;
    let trust = Trust::Pinning {
        roots: id.roots(),
        known_servers: known.clone(),
        accept: None,
        learned: None,
    };
    connect(&server.addr, &trust).await.unwrap();
    assert!(!known.exists());
}

/// Binary frames far larger than a TLS record (16 KiB) arrive whole both ways.
#[tokio::test]
async fn binary_envelope_frames_over_tls() {
    let id = Identity::self_signed();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = ServerAddr::parse(&format!(
        "127.0.0.1:{}",
        listener.local_addr().unwrap().port()
    ))
    .unwrap();
    let acc = acceptor(&id, false);
    // Over the 64 KiB cap in force before hello, so hello's raised cap is what lets it in.
    let big = Bytes::from(vec![0x5a; 200 << 10]);
    let sent = big.clone();
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let (r, mut w) = tokio::io::split(acc.accept(tcp).await.unwrap());
        let mut frames = FramedRead::new(r, WireCodec::new(1 << 20));
        let Some(Ok(Ok(Wire::Line(hello)))) = frames.next().await else {
            panic!("no hello")
        };
        assert!(matches!(
            decode(&hello).unwrap(),
            ClientFrame::Hello { binary: true, .. }
        ));
        let hello = ServerFrame::Hello {
            version: PROTOCOL_VERSION,
            server: "chatd/test".into(),
            max_line_bytes: 65536,
            max_text_bytes: 100,
            idle_timeout_secs: 0,
            binary: true,
            offline_ttl_secs: None,
            features: Vec::new(),
            challenge: None,
        };
        w.write_all(&encode(&hello).unwrap()).await.unwrap();
        w.write_all(&binary_envelope(5, &sent)).await.unwrap();
        w.flush().await.unwrap();
        let Some(Ok(Ok(Wire::Send(data)))) = frames.next().await else {
            panic!("no binary send")
        };
        w.write_all(&binary_envelope(6, &data)).await.unwrap();
        w.flush().await.unwrap();
    });
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("cert.pem");
    fs::write(&ca, &id.trust_pem).unwrap();
    let connected = conn::connect_tls::<NoAsk>(&addr, &Trust::CaFile(ca), None)
        .await
        .unwrap();
    assert_eq!(connected.id.to_string(), addr.to_string());
    let mut c = Connection::new(connected.stream);
    let info = c.hello().await.unwrap();
    assert!(c.binary());
    assert_eq!(next_envelope(&mut c).await, (5, big));
    let mine = Bytes::from(vec![1; 40_000]);
    let out = [Outbound::Envelope(mine.clone())];
    assert_eq!(
        dispatch::send(&mut c, &info, &out).await.unwrap(),
        Sent::All
    );
    assert_eq!(next_envelope(&mut c).await, (6, mine));
    server.await.unwrap();
}

async fn next_envelope<S: AsyncRead + AsyncWrite>(c: &mut Connection<S>) -> (u64, Bytes) {
    match c.recv().await.unwrap() {
        Some(Incoming::Envelope(d)) => (d.ts, d.data.unwrap()),
        other => panic!("{other:?}"),
    }
}

/// `localhost` after `127.0.0.1` (same certificate): an alias with the same id, no question;
/// a rotation accepted under one name keeps the id.
#[tokio::test]
async fn another_name_with_a_pinned_certificate_is_the_same_server() {
    let first = Identity::self_signed();
    let server = TestServer::start(&first).await;
    let dir = tempfile::tempdir().unwrap();
    let known = known_path(&dir);
    let fp = first.fingerprint();
    let mut c = conn::connect_tls::<NoAsk>(&server.addr, &pinning(&known, Some(fp)), None)
        .await
        .unwrap();
    assert_eq!(c.id.to_string(), fp.to_string());
    c.keep_pins().unwrap();

    let local = ServerAddr::parse(&format!("localhost:{}", server.addr.port)).unwrap();
    let mut nobody = Answer(true, 0);
    let mut c = conn::connect_tls(&local, &pinning(&known, None), Some(&mut nobody))
        .await
        .unwrap();
    assert_eq!(nobody.1, 0, "asked about a certificate already pinned");
    assert_eq!(c.id.to_string(), fp.to_string());
    let notes = c.keep_pins().unwrap();
    assert!(
        notes[0].contains("the same server under another name"),
        "{notes:?}"
    );
    let text = fs::read_to_string(&known).unwrap();
    assert!(
        text.ends_with(&format!("localhost:{} {fp}\n", server.addr.port)),
        "{text}"
    );

    // A rotation accepted under the alias: same id; the other name now sees a changed
    // certificate, as it should (it was never told).
    let second = Identity::self_signed();
    server.swap(&second, false);
    let c = conn::connect_tls::<NoAsk>(&local, &pinning(&known, Some(second.fingerprint())), None)
        .await
        .unwrap();
    assert_eq!(c.id.to_string(), fp.to_string());
    let err = connect(&server.addr, &pinning(&known, None))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("HAS CHANGED"), "{err}");
}
