//! The server's TLS identity: a configured certificate, or a self-signed one made on first start.
//!
//! rustls with the ring provider only; TLS 1.3 and 1.2, whose rustls suites are all AEAD.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chatd_proto::Fingerprint;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The certificate could not be loaded or made.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// A PEM file held nothing usable.
    #[error("{path}: {message}")]
    Pem {
        /// File.
        path: PathBuf,
        /// What was wrong.
        message: String,
    },
    /// Certificate generation failed.
    #[error("cannot generate a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// A `%d/` path was configured but systemd passed no credentials.
    #[error(
        "{0}: %d/ names a systemd credential, but CREDENTIALS_DIRECTORY is not set (LoadCredential= in the unit)"
    )]
    NoCredentials(PathBuf),
    /// rustls refused the certificate/key pair.
    #[error("unusable certificate or key: {0}")]
    Rustls(#[from] rustls::Error),
}

/// A loaded identity: the rustls config and the leaf certificate's fingerprint.
#[derive(Clone)]
pub struct Identity {
    /// Ready for `TlsAcceptor::from`.
    pub config: Arc<ServerConfig>,
    /// SHA-256 of the leaf certificate's DER.
    pub fingerprint: Fingerprint,
    /// Where the certificate came from.
    pub cert_path: PathBuf,
    /// True when chatd made it just now.
    pub generated: bool,
}

/// Loads `cert`/`key`, or when both are None uses (making if absent) `state_dir/cert.pem`
/// and `state_dir/key.pem`.
pub fn load_identity(
    cert: Option<&Path>,
    key: Option<&Path>,
    state_dir: &Path,
) -> Result<Identity, TlsError> {
    let (cert_path, key_path, generated) = match (cert, key) {
        (Some(c), Some(k)) => (credential(c)?, credential(k)?, false),
        _ => {
            let c = state_dir.join("cert.pem");
            let k = state_dir.join("key.pem");
            let generated = if c.exists() && k.exists() {
                false
            } else {
                generate_self_signed(&c, &k)?;
                true
            };
            (c, k, generated)
        }
    };
    let (config, fingerprint) = load_pair(&cert_path, &key_path)?;
    Ok(Identity {
        config,
        fingerprint,
        cert_path,
        generated,
    })
}

/// What [`load_identity`] would do, changing nothing: loads and checks the configured
/// certificate and key (readable, parseable, the key matching the certificate), or the ones
/// chatd made in `state_dir`. Returns the certificate's fingerprint, or None when there is
/// none yet (chatd makes one on first start).
pub fn check_identity(
    cert: Option<&Path>,
    key: Option<&Path>,
    state_dir: &Path,
) -> Result<Option<Fingerprint>, TlsError> {
    let (cert_path, key_path) = match (cert, key) {
        (Some(c), Some(k)) => (credential(c)?, credential(k)?),
        _ => {
            let c = state_dir.join("cert.pem");
            let k = state_dir.join("key.pem");
            if !(c.exists() && k.exists()) {
                return Ok(None);
            }
            (c, k)
        }
    };
    load_pair(&cert_path, &key_path).map(|(_, fingerprint)| Some(fingerprint))
}

/// The rustls config for a PEM certificate chain and key, and the leaf's fingerprint.
fn load_pair(
    cert_path: &Path,
    key_path: &Path,
) -> Result<(Arc<ServerConfig>, Fingerprint), TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_path)
        .map_err(|e| pem_error(cert_path, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| pem_error(cert_path, e))?;
    let leaf = certs.first().ok_or_else(|| TlsError::Pem {
        path: cert_path.to_path_buf(),
        message: "no certificate found".into(),
    })?;
    let fingerprint = Fingerprint::of(leaf);
    let key = PrivateKeyDer::from_pem_file(key_path).map_err(|e| pem_error(key_path, e))?;
    // rustls checks that the key is the certificate's (KeyMismatch otherwise).
    let config = server_config(certs, key)?;
    Ok((config, fingerprint))
}

/// `%d/NAME` is the credential NAME that systemd's `LoadCredential=` put in
/// `$CREDENTIALS_DIRECTORY` (readable by chatd even when the original file is root-only).
pub(crate) fn credential(path: &Path) -> Result<PathBuf, TlsError> {
    let Ok(name) = path.strip_prefix("%d") else {
        return Ok(path.to_path_buf());
    };
    match std::env::var_os("CREDENTIALS_DIRECTORY") {
        Some(dir) => Ok(Path::new(&dir).join(name)),
        None => Err(TlsError::NoCredentials(path.to_path_buf())),
    }
}

fn pem_error(path: &Path, e: rustls::pki_types::pem::Error) -> TlsError {
    match e {
        rustls::pki_types::pem::Error::Io(source) => TlsError::Io {
            path: path.to_path_buf(),
            source,
        },
        other => TlsError::Pem {
            path: path.to_path_buf(),
            message: format!("{other:?}"),
        },
    }
}

/// A rustls server config for TLS 1.3 and 1.2 with the ring provider.
pub fn server_config(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let mut provider = rustls::crypto::ring::default_provider();
    // AES-128-GCM first, and the server's order decides: 10 AES rounds instead of 14 per
    // block, and every byte a room message reaches is encrypted once per member
    // (docs/PERFORMANCE.md, "Why it is fast"). Every suite offered is an AEAD with forward secrecy.
    provider
        .cipher_suites
        .sort_by_key(|s| s.suite() != rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
    let mut config = ServerConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.ignore_client_order = true;
    Ok(Arc::new(config))
}

/// Makes an ECDSA P-256 self-signed certificate for this host and loopback.
fn generate_self_signed(cert_path: &Path, key_path: &Path) -> Result<(), TlsError> {
    let mut names = vec!["localhost".to_string(), "127.0.0.1".into(), "::1".into()];
    if let Ok(host) = nix::unistd::gethostname() {
        if let Some(h) = host.to_str().filter(|h| !h.is_empty() && *h != "localhost") {
            names.push(h.to_string());
        }
    }
    let certified = rcgen::generate_simple_self_signed(names)?;
    // Key first, created 0600, so a crash never leaves a certificate without its key.
    write_new(
        key_path,
        certified.signing_key.serialize_pem().as_bytes(),
        0o600,
    )?;
    write_new(cert_path, certified.cert.pem().as_bytes(), 0o644)?;
    Ok(())
}

fn write_new(path: &Path, data: &[u8], mode: u32) -> Result<(), TlsError> {
    let io = |source| TlsError::Io {
        path: path.to_path_buf(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io)?;
    f.write_all(data).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn generates_once_then_reuses() {
        let dir = tempfile::tempdir().unwrap();
        let a = load_identity(None, None, dir.path()).unwrap();
        assert!(a.generated);
        let mode = std::fs::metadata(dir.path().join("key.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let b = load_identity(None, None, dir.path()).unwrap();
        assert!(!b.generated);
        assert_eq!(a.fingerprint, b.fingerprint);
    }

    /// A client with rustls' defaults (AES-256 first, as chat's) still gets AES-128-GCM.
    #[test]
    fn the_server_picks_aes_128_gcm_over_the_clients_order() {
        let dir = tempfile::tempdir().unwrap();
        let id = load_identity(None, None, dir.path()).unwrap();
        let pem = std::fs::read(&id.cert_path).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(&pem).unwrap())
            .unwrap();
        let client_config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let name = "localhost".try_into().unwrap();
        let mut client = rustls::ClientConnection::new(Arc::new(client_config), name).unwrap();
        let mut server = rustls::ServerConnection::new(id.config).unwrap();
        // Shuttle records between the two in memory until both finish the handshake.
        for _ in 0..10 {
            let mut wire = Vec::new();
            client.write_tls(&mut wire).unwrap();
            server.read_tls(&mut wire.as_slice()).unwrap();
            server.process_new_packets().unwrap();
            let mut back = Vec::new();
            server.write_tls(&mut back).unwrap();
            client.read_tls(&mut back.as_slice()).unwrap();
            client.process_new_packets().unwrap();
        }
        assert!(!client.is_handshaking() && !server.is_handshaking());
        assert_eq!(
            server.negotiated_cipher_suite().unwrap().suite(),
            rustls::CipherSuite::TLS13_AES_128_GCM_SHA256
        );
    }

    #[test]
    fn missing_or_bad_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let c = dir.path().join("c.pem");
        let k = dir.path().join("k.pem");
        let err = load_identity(Some(&c), Some(&k), dir.path())
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("c.pem"), "{err}");
        std::fs::write(&c, "not pem").unwrap();
        let err = load_identity(Some(&c), Some(&k), dir.path())
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("c.pem") && err.contains("no certificate"),
            "{err}"
        );
    }
}
