//! TLS to chatd with its certificate pinned by fingerprint: no certificate authority and no
//! name check, since the certificate is chatd's own self-signed one and its SHA-256
//! fingerprint is what chatd prints at startup.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use chatd_proto::Fingerprint;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::Error;

/// A client's TLS stream to chatd.
pub type Tls = TlsStream<TcpStream>;

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
pub fn connector(fingerprint: Fingerprint) -> Result<TlsConnector, Error> {
    connector_with(fingerprint, true)
}

/// [`connector`] that never resumes a session: every connection is a full handshake
/// (certificate, signature, key exchange), as a fresh client's is.
pub fn full_handshake_connector(fingerprint: Fingerprint) -> Result<TlsConnector, Error> {
    connector_with(fingerprint, false)
}

fn connector_with(fingerprint: Fingerprint, resume: bool) -> Result<TlsConnector, Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(PinnedVerifier {
        expected: fingerprint,
        algorithms: provider.signature_verification_algorithms,
    });
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(Error::Config)?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    if !resume {
        config.resumption = rustls::client::Resumption::disabled();
    }
    Ok(TlsConnector::from(Arc::new(config)))
}

/// TCP (no Nagle: a client's frames are small and each one waits for an answer) and a TLS
/// handshake with the pinned certificate. No deadline: callers set their own.
pub async fn connect(addr: SocketAddr, connector: &TlsConnector) -> Result<Tls, Error> {
    connect_from(addr, None, connector).await
}

/// [`connect`] from the local address `source` (e.g. 127.0.0.7, so that tests can stand for
/// several attackers on loopback), or from any address if `None`.
pub async fn connect_from(
    addr: SocketAddr,
    source: Option<IpAddr>,
    connector: &TlsConnector,
) -> Result<Tls, Error> {
    let tcp = tcp_from(addr, source)
        .await
        .map_err(|error| Error::Connect { addr, error })?;
    tcp.set_nodelay(true)?;
    connector
        .connect(ServerName::IpAddress(addr.ip().into()), tcp)
        .await
        .map_err(Error::Handshake)
}

/// A TCP connection to `addr`, bound first to `source` if given.
pub async fn tcp_from(addr: SocketAddr, source: Option<IpAddr>) -> std::io::Result<TcpStream> {
    let Some(ip) = source else {
        return TcpStream::connect(addr).await;
    };
    let socket = if ip.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.bind(SocketAddr::new(ip, 0))?;
    socket.connect(addr).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::PrivatePkcs8KeyDer;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A TLS server on 127.0.0.1 with a fresh self-signed certificate that answers every
    /// connection with `ok`: its address and the certificate's fingerprint.
    async fn server() -> (SocketAddr, Fingerprint) {
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let der = certified.cert.der().clone();
        let key = PrivatePkcs8KeyDer::from(certified.signing_key.serialize_der());
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![der.clone()], key.into())
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                if let Ok(mut tls) = acceptor.accept(tcp).await {
                    let _ = tls.write_all(b"ok").await;
                    let _ = tls.shutdown().await;
                }
            }
        });
        (addr, Fingerprint::of(&der))
    }

    #[tokio::test]
    async fn only_the_pinned_certificate_is_accepted() {
        let (addr, fingerprint) = server().await;
        for connector in [
            connector(fingerprint),
            full_handshake_connector(fingerprint),
        ] {
            let mut tls = connect(addr, &connector.unwrap()).await.unwrap();
            assert!(tls.get_ref().0.nodelay().unwrap());
            let mut got = Vec::new();
            tls.read_to_end(&mut got).await.unwrap();
            assert_eq!(got, b"ok");
        }
        let other = Fingerprint::of(b"another certificate");
        let e = connect(addr, &connector(other).unwrap()).await.unwrap_err();
        assert!(matches!(e, Error::Handshake(_)), "{e}");
        assert!(e.to_string().starts_with("TLS handshake failed: "), "{e}");
    }

    #[tokio::test]
    async fn a_refused_connection_names_the_address() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let e = connect(addr, &connector(Fingerprint::of(b"x")).unwrap())
            .await
            .unwrap_err();
        assert!(
            e.to_string()
                .starts_with(&format!("cannot connect to {addr}: ")),
            "{e}"
        );
    }
}
