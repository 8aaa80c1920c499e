//! Whether to trust the server's certificate.
//!
//! Two modes:
//! - `--ca FILE`: only the CAs in FILE, ordinary WebPKI verification including the host
//!   name; nothing else is accepted.
//! - otherwise: the system's roots first; if the chain does not verify (chatd's
//!   self-signed certificate never does), the end-entity certificate must match the
//!   fingerprint pinned for this `host:port` in the known-servers file, the way ssh's
//!   known_hosts works. [`PinningVerifier`] records what it was shown so that, after a
//!   refused handshake, [`decide`] can say whether to pin, ask, or refuse. A host with no pin
//!   whose certificate is pinned for another name is that server under another name: it is
//!   accepted and recorded as an alias (same id, see [`crate::identity`]) without a question.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use anyhow::{Context, Result, bail};
use chatd_proto::Fingerprint;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// The crypto provider used for every connection (ring only).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client config with TLS 1.3 and 1.2, the ring provider and the given verifier.
pub fn client_config(verifier: Arc<dyn ServerCertVerifier>) -> Result<ClientConfig> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .context("TLS configuration")?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    // A resumed session skips certificate verification; every connection must verify (or pin).
    config.resumption = rustls::client::Resumption::disabled();
    Ok(config)
}

/// A WebPKI verifier (chain + host name) over `roots`; `None` when there are no roots.
pub fn webpki_verifier(roots: RootCertStore) -> Result<Option<Arc<WebPkiServerVerifier>>> {
    if roots.is_empty() {
        return Ok(None);
    }
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .context("building the certificate verifier")?;
    Ok(Some(verifier))
}

/// The CA certificates in a PEM file, for `--ca`.
pub fn load_ca_file(path: &Path) -> Result<RootCertStore> {
    let display = path.display();
    let mut roots = RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("cannot read CA file {display}"))?;
    for cert in certs {
        let cert = cert.with_context(|| format!("cannot read CA file {display}"))?;
        roots
            .add(cert)
            .with_context(|| format!("bad CA certificate in {display}"))?;
    }
    if roots.is_empty() {
        bail!("no certificates found in CA file {display}");
    }
    Ok(roots)
}

/// The operating system's trusted roots; unreadable or unparsable ones are skipped.
pub fn system_roots() -> RootCertStore {
    let mut roots = RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(found.certs);
    roots
}

/// The default known-servers file: `$XDG_DATA_HOME/chat/known_servers`.
pub fn default_known_servers() -> Result<PathBuf> {
    let dir = dirs::data_dir().context(
        "cannot find a data directory for the known-servers file (set HOME or XDG_DATA_HOME)",
    )?;
    Ok(dir.join("chat").join("known_servers"))
}

/// A fingerprint pinned in the known-servers file, with where it is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pin {
    /// The pinned certificate fingerprint.
    pub fingerprint: Fingerprint,
    /// 1-based line number in the file, for the "certificate changed" advice.
    pub line: usize,
    /// The server's identity: the fingerprint it was first pinned with (`id=`), else this pin.
    pub id: Fingerprint,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum KnownLine {
    Entry {
        server: String,
        fingerprint: Fingerprint,
        /// `id=SHA256:...`, written once the pin differs from the server's first one (a
        /// rotation) or for an alias.
        id: Option<Fingerprint>,
    },
    /// Comments, blank or unreadable lines: kept verbatim when the file is rewritten.
    Other(String),
}

/// The known-servers file: one `host:port SHA256:... [id=SHA256:...]` line per pinned host.
///
/// Lines with the same id are one server reached under several names (aliases, or the hosts
/// of one deployment); without `id=` a line's id is its own fingerprint.
#[derive(Debug, Clone)]
pub struct KnownServers {
    path: PathBuf,
    lines: Vec<KnownLine>,
}

impl KnownServers {
    /// Reads `path`; a missing file is an empty list.
    pub fn load(path: &Path) -> Result<Self> {
        let text = match fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
            Err(e) => {
                return Err(e).with_context(|| format!("cannot read {}", path.display()));
            }
        };
        Ok(Self::parse(path, &text))
    }

    /// Parses file contents; lines that are not `host:port fingerprint [id=fingerprint]` are
    /// kept but ignored.
    pub fn parse(path: &Path, text: &str) -> Self {
        let lines = text
            .lines()
            .map(|line| {
                let mut fields = line.split_whitespace();
                let entry = match (fields.next(), fields.next(), fields.next(), fields.next()) {
                    (Some(server), Some(fp), id, None) if !server.starts_with('#') => {
                        let id = match id {
                            None => Some(None),
                            Some(id) => id
                                .strip_prefix("id=")
                                .and_then(|id| id.parse::<Fingerprint>().ok())
                                .map(Some),
                        };
                        fp.parse::<Fingerprint>()
                            .ok()
                            .zip(id)
                            .map(|(fingerprint, id)| KnownLine::Entry {
                                server: server.to_string(),
                                fingerprint,
                                id,
                            })
                    }
                    _ => None,
                };
                entry.unwrap_or_else(|| KnownLine::Other(line.to_string()))
            })
            .collect();
        KnownServers {
            path: path.to_path_buf(),
            lines,
        }
    }

    /// Where the file lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn pins(&self) -> impl Iterator<Item = (&str, Pin)> {
        self.lines
            .iter()
            .enumerate()
            .filter_map(|(i, line)| match line {
                KnownLine::Entry {
                    server,
                    fingerprint,
                    id,
                } => Some((
                    server.as_str(),
                    Pin {
                        fingerprint: *fingerprint,
                        line: i + 1,
                        id: id.unwrap_or(*fingerprint),
                    },
                )),
                KnownLine::Other(_) => None,
            })
    }

    /// The pin for `server` (`host:port`), if any; the first line wins.
    pub fn lookup(&self, server: &str) -> Option<Pin> {
        self.pins().find(|(s, _)| *s == server).map(|(_, pin)| pin)
    }

    /// The first pin of any host whose certificate is `fingerprint`: the server another name
    /// presenting it is an alias of.
    pub fn by_fingerprint(&self, fingerprint: &Fingerprint) -> Option<Pin> {
        self.pins()
            .find(|(_, pin)| pin.fingerprint == *fingerprint)
            .map(|(_, pin)| pin)
    }

    /// Every pinned fingerprint, for recognising an alias.
    pub fn fingerprints(&self) -> Vec<Fingerprint> {
        self.pins().map(|(_, pin)| pin.fingerprint).collect()
    }

    /// Pins `fingerprint` for `server`, replacing (in place) any earlier pin for it. A
    /// replaced pin keeps the server's id (its first fingerprint), so a rotation the user
    /// accepted does not make it another server.
    pub fn set(&mut self, server: &str, fingerprint: Fingerprint) {
        self.set_with_id(server, fingerprint, None);
    }

    /// Pins `fingerprint` for `server` as another name of the server `id`.
    pub fn set_alias(&mut self, server: &str, fingerprint: Fingerprint, id: Fingerprint) {
        self.set_with_id(server, fingerprint, Some(id));
    }

    fn set_with_id(&mut self, server: &str, fingerprint: Fingerprint, new_id: Option<Fingerprint>) {
        let mut replaced = false;
        self.lines.retain_mut(|line| match line {
            KnownLine::Entry {
                server: s,
                fingerprint: fp,
                id,
            } if s == server => {
                if replaced {
                    return false;
                }
                let kept = new_id.unwrap_or_else(|| id.unwrap_or(*fp));
                *id = (kept != fingerprint).then_some(kept);
                *fp = fingerprint;
                replaced = true;
                true
            }
            _ => true,
        });
        if !replaced {
            self.lines.push(KnownLine::Entry {
                server: server.to_string(),
                fingerprint,
                id: new_id.filter(|id| *id != fingerprint),
            });
        }
    }

    /// The file's contents.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for line in &self.lines {
            match line {
                KnownLine::Entry {
                    server,
                    fingerprint,
                    id,
                } => {
                    out.push_str(&format!("{server} {fingerprint}"));
                    if let Some(id) = id {
                        out.push_str(&format!(" id={id}"));
                    }
                }
                KnownLine::Other(text) => out.push_str(text),
            }
            out.push('\n');
        }
        out
    }

    /// Writes the file atomically (temp file + rename); directory 0700, file 0600.
    pub fn save(&self) -> Result<()> {
        crate::files::write_private(&self.path, self.render().as_bytes())
    }
}

/// Why [`PinningVerifier`] refused a certificate.
#[derive(Debug, Clone)]
pub struct Rejection {
    /// Fingerprint of the end-entity certificate the server presented.
    pub presented: Fingerprint,
}

/// How [`PinningVerifier`] accepted a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepted {
    /// The chain verified against the trusted roots, for this host name.
    Ca,
    /// It matched this host's pin.
    Pin,
    /// This host has no pin, and the certificate is one pinned for another name: the same
    /// server under another name.
    Alias(Fingerprint),
}

/// Accepts a certificate that verifies against the roots, or else one matching the pin, or
/// (for a host with no pin) one pinned for another name.
#[derive(Debug)]
pub struct PinningVerifier {
    ca: Option<Arc<WebPkiServerVerifier>>,
    pinned: Option<Fingerprint>,
    others: Vec<Fingerprint>,
    algorithms: WebPkiSupportedAlgorithms,
    rejection: Mutex<Option<Rejection>>,
    accepted: Mutex<Option<Accepted>>,
}

impl PinningVerifier {
    /// `ca` verifies against trusted roots (if any); `pinned` is this server's pin (if any).
    pub fn new(ca: Option<Arc<WebPkiServerVerifier>>, pinned: Option<Fingerprint>) -> Self {
        PinningVerifier {
            ca,
            pinned,
            others: Vec::new(),
            algorithms: provider().signature_verification_algorithms,
            rejection: Mutex::new(None),
            accepted: Mutex::new(None),
        }
    }

    /// Also accepts these fingerprints (pinned for other names) when this host has no pin.
    /// The handshake still checks the server holds the certificate's key.
    pub fn with_aliases(mut self, others: Vec<Fingerprint>) -> Self {
        self.others = others;
        self
    }

    /// How the last handshake's certificate was accepted.
    pub fn accepted(&self) -> Option<Accepted> {
        *lock(&self.accepted)
    }

    /// What was refused in the last handshake, if the refusal was about trust.
    pub fn take_rejection(&self) -> Option<Rejection> {
        lock(&self.rejection).take()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The data is a plain Option; a panic elsewhere cannot leave it inconsistent.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl ServerCertVerifier for PinningVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let ca_error = match &self.ca {
            Some(ca) => match ca.verify_server_cert(
                end_entity,
                intermediates,
                server_name,
                ocsp_response,
                now,
            ) {
                Ok(ok) => {
                    *lock(&self.accepted) = Some(Accepted::Ca);
                    return Ok(ok);
                }
                Err(e) => Some(e),
            },
            None => None,
        };
        let presented = Fingerprint::of(end_entity.as_ref());
        if self.pinned == Some(presented) {
            *lock(&self.accepted) = Some(Accepted::Pin);
            return Ok(ServerCertVerified::assertion());
        }
        if self.pinned.is_none() && self.others.contains(&presented) {
            *lock(&self.accepted) = Some(Accepted::Alias(presented));
            return Ok(ServerCertVerified::assertion());
        }
        *lock(&self.rejection) = Some(Rejection { presented });
        // Report the CA check's own complaint when there was one; it becomes the TLS alert.
        Err(ca_error.unwrap_or(rustls::Error::InvalidCertificate(
            rustls::CertificateError::UnknownIssuer,
        )))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// What to do after the server's certificate was refused for lack of a (matching) pin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Nothing pinned and `--accept-fingerprint` matches: pin it and reconnect.
    Pin,
    /// Nothing pinned, and a person at the terminal can be asked.
    Ask,
    /// Nothing pinned and no way to decide: refuse with advice.
    RefuseUnknown,
    /// Nothing pinned and `--accept-fingerprint` names a different certificate.
    RefuseMismatch,
    /// A different certificate is pinned: refuse loudly.
    RefuseChanged,
    /// A different certificate is pinned but `--accept-fingerprint` names the new one:
    /// warn, replace the pin and reconnect.
    Replace,
}

/// Decides what to do about a refused certificate (never called when the pin matched).
pub fn decide(
    pinned: Option<Fingerprint>,
    presented: Fingerprint,
    accept: Option<Fingerprint>,
    can_ask: bool,
) -> Decision {
    match (pinned, accept) {
        (None, Some(a)) if a == presented => Decision::Pin,
        (None, Some(_)) => Decision::RefuseMismatch,
        (None, None) if can_ask => Decision::Ask,
        (None, None) => Decision::RefuseUnknown,
        (Some(_), Some(a)) if a == presented => Decision::Replace,
        (Some(_), _) => Decision::RefuseChanged,
    }
}

/// The error for [`Decision::RefuseUnknown`].
pub fn unknown_message(presented: &Fingerprint) -> String {
    format!(
        "the server's certificate is not signed by a trusted CA and is not pinned. \
         Its fingerprint is {presented}; if that matches the one chatd printed (chatctl status), \
         run again with --accept-fingerprint {presented}"
    )
}

/// The error for [`Decision::RefuseMismatch`].
pub fn mismatch_message(server: &str, presented: &Fingerprint, accept: &Fingerprint) -> String {
    format!(
        "the certificate of {server} does not match --accept-fingerprint: \
         the server presented {presented}, you asked for {accept}; refusing to connect"
    )
}

/// The multi-line warning for a changed certificate (without the `chat: ` prefix).
pub fn changed_warning(
    server: &str,
    old: &Fingerprint,
    new: &Fingerprint,
    known_servers: &Path,
    line: usize,
) -> String {
    format!(
        "WARNING: THE CERTIFICATE OF {server} HAS CHANGED!\n\
         \x20 pinned fingerprint:    {old}\n\
         \x20 presented fingerprint: {new}\n\
         Someone may be intercepting the connection (a man-in-the-middle attack), or the\n\
         server's certificate was replaced (e.g. chatd's state directory was recreated).\n\
         Ask the server's administrator for the fingerprint (chatctl status). If {new} is right,\n\
         remove or edit line {line} of {path}, or run again with --accept-fingerprint {new}.",
        path = known_servers.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn fp(b: u8) -> Fingerprint {
        Fingerprint::of(&[b])
    }

    #[test]
    fn decisions() {
        let (a, b) = (fp(1), fp(2));
        assert_eq!(decide(None, a, Some(a), false), Decision::Pin);
        assert_eq!(decide(None, a, Some(a), true), Decision::Pin);
        assert_eq!(decide(None, a, Some(b), true), Decision::RefuseMismatch);
        assert_eq!(decide(None, a, None, true), Decision::Ask);
        assert_eq!(decide(None, a, None, false), Decision::RefuseUnknown);
        assert_eq!(decide(Some(b), a, None, true), Decision::RefuseChanged);
        assert_eq!(decide(Some(b), a, Some(b), false), Decision::RefuseChanged);
        assert_eq!(decide(Some(b), a, Some(a), false), Decision::Replace);
    }

    #[test]
    fn messages_name_the_fingerprints() {
        let (a, b) = (fp(1), fp(2));
        let m = unknown_message(&a);
        assert!(m.contains(&format!("Its fingerprint is {a};")));
        assert!(m.ends_with(&format!("run again with --accept-fingerprint {a}")));
        let w = changed_warning("h:1", &a, &b, Path::new("/x/known_servers"), 3);
        assert!(w.starts_with("WARNING: THE CERTIFICATE OF h:1 HAS CHANGED!\n"));
        assert!(w.contains(&a.to_string()) && w.contains(&b.to_string()));
        assert!(w.contains("line 3 of /x/known_servers"));
        assert!(mismatch_message("h:1", &a, &b).contains(&b.to_string()));
    }

    #[test]
    fn known_servers_parse_lookup_set_render() {
        let (a, b, c) = (fp(1), fp(2), fp(3));
        let text = format!("# comment\nhost:1 {a}\ngarbage line here\n\nother:2 {b}\nhost:1 {c}\n");
        let mut k = KnownServers::parse(Path::new("/k"), &text);
        assert_eq!(
            k.lookup("host:1"),
            Some(Pin {
                fingerprint: a,
                line: 2,
                id: a,
            })
        );
        assert_eq!(k.lookup("other:2").map(|p| p.line), Some(5));
        assert_eq!(k.lookup("nope:3"), None);
        // Replacing keeps the position (and the server's id) and drops duplicates; comments
        // survive.
        k.set("host:1", c);
        assert_eq!(
            k.render(),
            format!("# comment\nhost:1 {c} id={a}\ngarbage line here\n\nother:2 {b}\n")
        );
        k.set("new:4", a);
        assert!(k.render().ends_with(&format!("other:2 {b}\nnew:4 {a}\n")));
        // Upper-case fingerprints are read; they are written back in lower case.
        let upper = format!("h:1 SHA256:{}", a.to_string()[7..].to_uppercase());
        let k = KnownServers::parse(Path::new("/k"), &upper);
        assert_eq!(k.lookup("h:1").map(|p| p.fingerprint), Some(a));
    }

    #[test]
    fn a_rotation_keeps_the_id_and_aliases_share_it() {
        let (a, b, c) = (fp(1), fp(2), fp(3));
        let mut k = KnownServers::parse(Path::new("/k"), &format!("h:1 {a}\n"));
        assert_eq!(k.lookup("h:1").map(|p| p.id), Some(a));
        // An accepted rotation: the line names the first fingerprint as the id.
        k.set("h:1", b);
        assert_eq!(k.render(), format!("h:1 {b} id={a}\n"));
        k.set("h:1", c);
        assert_eq!(k.render(), format!("h:1 {c} id={a}\n"));
        // Another name presenting the same certificate: an alias with the same id.
        let pin = k.by_fingerprint(&c).unwrap();
        k.set_alias("localhost:1", c, pin.id);
        let k = KnownServers::parse(Path::new("/k"), &k.render());
        assert_eq!(k.lookup("localhost:1").map(|p| p.id), Some(a));
        assert_eq!(k.lookup("localhost:1").map(|p| p.fingerprint), Some(c));
        assert_eq!(k.fingerprints(), vec![c, c]);
        // A bad id makes the line unreadable (kept verbatim), not a pin.
        let bad = KnownServers::parse(Path::new("/k"), &format!("h:1 {a} id=nope\n"));
        assert_eq!(bad.lookup("h:1"), None);
        assert_eq!(bad.render(), format!("h:1 {a} id=nope\n"));
    }

    #[test]
    fn known_servers_save_is_private_and_atomic() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("data/chat/known_servers");
        let mut k = KnownServers::load(&path).unwrap();
        assert_eq!(k.lookup("h:1"), None);
        k.set("h:1", fp(1));
        k.save().unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        let k2 = KnownServers::load(&path).unwrap();
        assert_eq!(k2.lookup("h:1").map(|p| p.fingerprint), Some(fp(1)));
        let mut k2 = k2;
        k2.set("h:1", fp(2));
        k2.save().unwrap();
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            format!("h:1 {} id={}\n", fp(2), fp(1))
        );
        assert_eq!(mode(&path), 0o600);
        // No temp files left behind.
        assert_eq!(fs::read_dir(path.parent().unwrap()).unwrap().count(), 1);
    }

    #[test]
    fn ca_file_errors() {
        let tmp = tempfile::tempdir().unwrap();
        let empty = tmp.path().join("empty.pem");
        fs::write(&empty, "not a certificate\n").unwrap();
        assert!(load_ca_file(&empty).is_err());
        assert!(load_ca_file(&tmp.path().join("missing.pem")).is_err());
    }
}
