//! Getting logged in at start: connect (to the first node of the server list that answers,
//! see [`crate::servers`]), learn which server answered, find or make this
//! device's key for it, and log in, with up to `password_tries` passwords typed at a terminal
//! (config; 3 by default, as ssh allows).
//!
//! Nothing is written before the login succeeded: a new key lives in memory until then (its
//! passphrase is asked only once it will be kept), and pins learned on the way are written
//! with it. So a mistyped server, user name or password leaves no key, pin or state behind.
//! Files an earlier version named by the host string move to their server-id names here
//! ([`crate::identity`]).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use base64::Engine;
use chatd_proto::Fingerprint;
use chatd_proto::e2e::DeviceKey;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use zeroize::Zeroizing;

use crate::conn::{
    self, AskTrust, Connected, Connection, Learned, LoggedIn, LoginFailed, NoAsk, Refusal,
    ServerAddr, ServerInfo, Trust,
};
use crate::identity::{Layout, ServerId};
use crate::keystore::{self, Need};
use crate::servers::ServerList;
use crate::stdin::LineReader;
use crate::trust::KnownServers;

/// A key unlocked after connecting that took longer than this (a passphrase typed) is used on
/// a fresh connection: the server allows only so long between handshake and login.
const SLOW_KEY: Duration = Duration::from_secs(5);

/// What the login needs.
pub struct Options {
    /// The server's nodes as typed (usually one).
    pub servers: ServerList,
    /// Account.
    pub user: String,
    /// `--key FILE`, else the key follows the server's id.
    pub key_file: Option<PathBuf>,
    /// RSA size of a new key.
    pub bits: usize,
    /// How to check the certificate.
    pub trust: Trust,
    /// A person types at the terminal: questions, prompts and retries.
    pub ask_tty: bool,
    /// The password from stdin (tried once), else it is asked.
    pub password: Option<Zeroizing<String>>,
    /// Passwords asked at the terminal before giving up.
    pub password_tries: u32,
    /// `--key-passphrase-stdin`.
    pub passphrase_stdin: bool,
}

/// Logged in.
pub struct Started {
    /// The connection, after `login_ok`.
    pub conn: Connection<TlsStream<TcpStream>>,
    /// The server's `hello`.
    pub info: ServerInfo,
    /// The server's `login_ok`.
    pub logged_in: LoggedIn,
    /// Negotiated TLS version.
    pub tls: String,
    /// This device's key (on disk now).
    pub key: DeviceKey,
    /// Where this user's files on this server live.
    pub layout: Layout,
    /// The password that worked (kept for reconnecting).
    pub password: Zeroizing<String>,
    /// Index in the list of the node logged in on.
    pub node: usize,
    /// The list's server identity (every node must be it).
    pub id: ServerId,
}

/// The key as far as it is known: from which file, and whether it was just made.
struct Held {
    key: DeviceKey,
    path: PathBuf,
    created: bool,
}

/// Connects and logs in; see the module docs.
pub async fn run(mut opts: Options, input: &mut LineReader) -> Result<Started> {
    let tries = if opts.ask_tty && opts.password.is_none() {
        opts.password_tries.max(1)
    } else {
        1
    };
    // The list's identity as its pins say (an error if they name two servers).
    let pinned = match &opts.trust {
        Trust::Pinning { known_servers, .. } => opts
            .servers
            .pinned_id(&KnownServers::load(known_servers)?)?,
        Trust::CaFile(_) => None,
    };
    // Predicted from the pins, so that unlocking the key usually happens before connecting.
    let first = opts.servers.first().clone();
    let mut held = match predict(&opts, pinned) {
        Some(id) => load_for(&opts, &first, &id, input)?,
        None => None,
    };
    let mut learned: Option<Learned> = None;
    let mut password = opts.password.take();
    let mut attempt = 1;
    let mut from = 0;
    loop {
        let trust = with_learned(&opts.trust, learned.take());
        let (index, mut connected) = connect_first(&opts, &trust, pinned, from, input).await?;
        from = index;
        let node = opts.servers.nodes().get(index).unwrap_or(&first).clone();
        let id = opts.servers.list_id(connected.id.clone());
        if let Some(pinned) = pinned {
            opts.servers
                .check_same(&node, &ServerId::Pinned(pinned), &connected.id)?;
        }
        let layout = Layout::new(&opts.user, &id)?;
        let key_path = opts.key_file.clone().unwrap_or_else(|| layout.key());
        if held.as_ref().is_none_or(|h| h.path != key_path) {
            let started = Instant::now();
            held = load_for(&opts, &node, &id, input)?;
            if held.is_some() && started.elapsed() > SLOW_KEY {
                learned = connected.learned.take();
                continue;
            }
        }
        let tls = crate::tui::tls_version(&connected.stream);
        let server_fp = conn::server_fingerprint(&connected.stream);
        let pins = connected.learned.take();
        let mut conn = Connection::new(connected.stream).will_prove(server_fp);
        let info = conn.hello().await?;
        // Made only now that a chatd answered; written only once the login succeeds.
        let now = match held.take() {
            Some(h) => h,
            None => {
                let bits = opts.bits;
                let key = tokio::task::spawn_blocking(move || keystore::generate(bits))
                    .await
                    .context("key generation")??;
                Held {
                    key,
                    path: key_path.clone(),
                    created: true,
                }
            }
        };
        conn.set_key(now.key.clone());
        let typed = match password.take() {
            Some(p) => p,
            None => prompt_password(&opts.user, &node).await?,
        };
        let public =
            base64::engine::general_purpose::STANDARD.encode(now.key.public().to_spki_der());
        match conn.login(&opts.user, &typed, &public).await {
            Ok(logged_in) => {
                for note in pins.map_or(Ok(Vec::new()), Learned::keep)? {
                    eprintln!("chat: {note}");
                }
                if now.created {
                    save_new(&opts, &now, input)?;
                }
                return Ok(Started {
                    conn,
                    info,
                    logged_in,
                    tls,
                    key: now.key,
                    layout,
                    password: typed,
                    node: index,
                    id,
                });
            }
            Err(e) => {
                let Some(LoginFailed(why, refusal)) = e.downcast_ref::<LoginFailed>() else {
                    return Err(e);
                };
                // Be polite so the server does not count a protocol error; errors are moot.
                let _ = conn.send(&chatd_proto::ClientFrame::Quit).await;
                if tries == 1 {
                    return Err(e);
                }
                let failed = LoginFailed(format!("{why} (try {attempt} of {tries})"), *refusal);
                if attempt >= tries || *refusal != Refusal::Credentials {
                    return Err(failed.into());
                }
                eprintln!("chat: {failed}");
                attempt += 1;
                held = Some(now);
                learned = pins;
                // Asked before reconnecting, so the server's login timeout does not run meanwhile.
                password = Some(prompt_password(&opts.user, &node).await?);
            }
        }
    }
}

/// The server's id as the pins say before connecting: `--ca` names it by the list's first
/// host, pinned hosts by their pins' id (`pinned`); None when only the connection can tell
/// (no pin yet, or the system roots).
fn predict(opts: &Options, pinned: Option<Fingerprint>) -> Option<ServerId> {
    match &opts.trust {
        Trust::CaFile(_) => Some(ServerId::Named(opts.servers.first().clone())),
        Trust::Pinning { .. } => pinned.map(ServerId::Pinned),
    }
}

/// Connects to the first node, from index `from` on, that can be reached; an unreachable node
/// is said once and the next one tried. Anything else (a refused certificate above all) stops
/// here. Once the list's identity is pinned (`pinned`), nobody is asked about a certificate:
/// a node must present that server's.
async fn connect_first(
    opts: &Options,
    trust: &Trust,
    pinned: Option<Fingerprint>,
    from: usize,
    input: &mut LineReader,
) -> Result<(usize, Connected)> {
    let nodes = opts.servers.nodes();
    let mut index = from;
    while let Some(node) = nodes.get(index) {
        let result = if opts.ask_tty && (pinned.is_none() || !opts.servers.is_many()) {
            conn::connect_tls(node, trust, Some(&mut StdinAsker(input))).await
        } else {
            conn::connect_tls::<NoAsk>(node, trust, None).await
        };
        match (result, nodes.get(index + 1)) {
            (Ok(connected), _) => return Ok((index, connected)),
            (Err(e), Some(next)) if conn::unreachable(&e) => {
                eprintln!(
                    "chat: {}; trying {next}",
                    crate::text::sanitize_lines(&format!("{e:#}"))
                );
                index += 1;
            }
            (Err(e), _) => {
                return match pinned {
                    Some(id) if opts.servers.is_many() && !conn::unreachable(&e) => {
                        Err(e.context(format!("{node} is not accepted as this list's server {id}")))
                    }
                    _ => Err(e),
                };
            }
        }
    }
    anyhow::bail!("no node to connect to in {}", opts.servers)
}

/// The key for the server `id`: `--key`, else its id's file (moving an earlier version's
/// files named by `node`'s host string there first). None when there is none yet.
fn load_for(
    opts: &Options,
    node: &ServerAddr,
    id: &ServerId,
    input: &mut LineReader,
) -> Result<Option<Held>> {
    let layout = Layout::new(&opts.user, id)?;
    let old = Layout::new(&opts.user, &ServerId::Named(node.clone()))?;
    for (from, to) in layout.migrate_from(&old)? {
        eprintln!(
            "chat: moved {} to {} (files are now named by the server's identity)",
            from.display(),
            to.display()
        );
    }
    let path = opts.key_file.clone().unwrap_or_else(|| layout.key());
    let key = tokio::task::block_in_place(|| {
        let mut passphrase = |need: Need| read_passphrase(need, opts, &path, input);
        keystore::load(&path, &mut passphrase)
    })?;
    Ok(key.map(|key| Held {
        key,
        path,
        created: false,
    }))
}

/// Writes a key made for this login (asking for its passphrase now) and says so.
fn save_new(opts: &Options, held: &Held, input: &mut LineReader) -> Result<()> {
    tokio::task::block_in_place(|| {
        let mut passphrase = |need: Need| read_passphrase(need, opts, &held.path, input);
        keystore::save(&held.path, &held.key, &mut passphrase)
    })?;
    eprintln!(
        "chat: created device key {} (RSA {} bits) in {}",
        held.key.fingerprint(),
        held.key.bits(),
        held.path.display()
    );
    Ok(())
}

fn with_learned(trust: &Trust, learned: Option<Learned>) -> Trust {
    match trust {
        Trust::Pinning {
            roots,
            known_servers,
            accept,
            ..
        } => Trust::Pinning {
            roots: roots.clone(),
            known_servers: known_servers.clone(),
            accept: *accept,
            learned,
        },
        other => other.clone(),
    }
}

async fn prompt_password(user: &str, addr: &ServerAddr) -> Result<Zeroizing<String>> {
    let prompt = format!("Password for {user}@{addr}: ");
    Ok(Zeroizing::new(
        tokio::task::spawn_blocking(move || rpassword::prompt_password(prompt))
            .await
            .context("password prompt")?
            .context("cannot read the password")?,
    ))
}

/// A passphrase for the device key: from stdin with --key-passphrase-stdin, else asked on
/// the terminal, else none.
fn read_passphrase(
    need: Need,
    opts: &Options,
    path: &Path,
    input: &mut LineReader,
) -> Result<Option<Zeroizing<String>>> {
    if opts.passphrase_stdin {
        let line = tokio::runtime::Handle::current()
            .block_on(input.next_line())
            .context("cannot read the key passphrase from stdin")?
            .context("stdin ended before the key passphrase line")?;
        return Ok(Some(Zeroizing::new(line)));
    }
    if !opts.ask_tty {
        return Ok(None);
    }
    match need {
        Need::Unlock => {
            let p = rpassword::prompt_password(format!("Passphrase for {}: ", path.display()))
                .context("cannot read the passphrase")?;
            Ok(Some(Zeroizing::new(p)))
        }
        Need::Protect => loop {
            let p = Zeroizing::new(
                rpassword::prompt_password(
                    "New device key: passphrase to protect it (Enter for none): ",
                )
                .context("cannot read the passphrase")?,
            );
            if p.is_empty() {
                return Ok(None);
            }
            let again = Zeroizing::new(
                rpassword::prompt_password("Same passphrase again: ")
                    .context("cannot read the passphrase")?,
            );
            if *again == *p {
                return Ok(Some(p));
            }
            eprintln!("chat: the passphrases differ; try again");
        },
    }
}

/// Asks on the terminal (stderr for the question, stdin for the answer).
struct StdinAsker<'a>(&'a mut LineReader);

impl AskTrust for StdinAsker<'_> {
    async fn ask(&mut self, server: &ServerAddr, fingerprint: &Fingerprint) -> Result<bool> {
        eprintln!(
            "chat: the certificate of {server} is not signed by a trusted CA and is not pinned."
        );
        eprintln!("chat: its fingerprint is {fingerprint}");
        eprintln!("chat: compare it with the one chatd printed (chatctl status).");
        loop {
            eprint!("Trust this server and remember it? [yes/no] ");
            let _ = std::io::stderr().flush();
            let Some(answer) = self.0.next_line().await? else {
                eprintln!();
                return Ok(false);
            };
            match answer.trim().to_ascii_lowercase().as_str() {
                "yes" => return Ok(true),
                "no" => return Ok(false),
                _ => eprintln!("Please type 'yes' or 'no'."),
            }
        }
    }
}
