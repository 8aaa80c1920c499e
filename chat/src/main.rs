//! `chat`: terminal client for chatd.
//!
//! Connects over TLS (trusting a `--ca` file, the system roots, or a pinned
//! fingerprint), logs in with this device's RSA key (made at the first login, kept once it
//! succeeded; see [`login`]), then runs the
//! full-screen interface on a terminal (`tui`), or the plain line mode (`--plain`, pipes):
//! stdin lines are sealed end to end and sent, what arrives is verified, decrypted and
//! printed one per line.
//!
//! Exit status: 0 after `/quit` or end of stdin, 1 for connection, TLS, trust and other
//! errors (or when the server ends the session), 2 for usage errors (clap), 3 when the
//! login is refused.

mod approve;
mod commands;
mod config;
mod conn;
mod dispatch;
mod files;
mod format;
mod history;
mod identity;
mod ignore;
mod input;
mod joining;
mod keystore;
mod login;
mod manual;
mod peers;
mod pinging;
mod plain;
mod screen;
mod sealed;
mod secure;
mod servers;
mod state;
mod stdin;
mod text;
mod trust;
mod tui;

#[cfg(test)]
mod tls_tests;

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use base64::Engine;
use chatd_proto::Fingerprint;
use chatd_proto::e2e::{ALLOWED_KEY_BITS, DEFAULT_KEY_BITS};
use clap::Parser;
use zeroize::Zeroizing;

use crate::conn::{LoginFailed, Trust};
use crate::servers::ServerList;
use crate::stdin::LineReader;

/// Terminal client for chatd.
#[derive(Debug, Parser)]
#[command(name = "chat", version, about)]
struct Cli {
    /// Server address, or the nodes of one deployment as `HOST:PORT,HOST:PORT,...` (tried in
    /// order; see SERVER LISTS) [default: `server` in the config file, else 127.0.0.1:8443].
    #[arg(short, long, value_name = "HOST:PORT[,...]", value_parser = parse_server)]
    server: Option<ServerList>,

    /// User name to log in as [default: `user` in the config file, else $USER].
    #[arg(short, long, value_name = "NAME", value_parser = parse_user)]
    user: Option<String>,

    /// Client config file [default: $XDG_CONFIG_HOME/chat/config.toml, if it exists].
    #[arg(short, long, value_name = "FILE")]
    config: Option<PathBuf>,

    /// Read the password from the first line of stdin (further lines are messages).
    #[arg(long)]
    password_stdin: bool,

    /// Plain line mode: one line per message, for scripts and simple terminals.
    #[arg(short, long)]
    plain: bool,

    /// Trust only the CA certificates in this PEM file (no pinning).
    #[arg(long, value_name = "FILE", conflicts_with = "accept_fingerprint")]
    ca: Option<PathBuf>,

    /// Pin this server certificate fingerprint if the server presents it.
    #[arg(long, value_name = "SHA256:...")]
    accept_fingerprint: Option<Fingerprint>,

    /// This device's private key file [default: $XDG_DATA_HOME/chat/keys/USER@SERVER-ID.pem].
    #[arg(short, long, value_name = "FILE")]
    key: Option<PathBuf>,

    /// RSA size of a key created on first login.
    #[arg(long, value_name = "BITS", default_value_t = DEFAULT_KEY_BITS, value_parser = parse_bits)]
    key_bits: usize,

    /// Read the device key's passphrase from the next line of stdin (after the password line
    /// with --password-stdin); a new key is then protected with it.
    #[arg(long)]
    key_passphrase_stdin: bool,

    /// Drop live messages whose sender clock differs from ours by more than this many
    /// seconds (messages stored while offline may be as old as the server keeps them).
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    max_clock_skew: u64,

    /// Log in, approve the new device of this account that shows CODE (as /devices approve
    /// does), and exit: 0 once the server has the approval, 1 if CODE matches no device.
    #[arg(long, value_name = "CODE")]
    approve_device: Option<String>,
}

fn parse_bits(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(b) if ALLOWED_KEY_BITS.contains(&b) => Ok(b),
        _ => Err(format!("must be one of {ALLOWED_KEY_BITS:?}")),
    }
}

fn parse_server(s: &str) -> Result<ServerList, String> {
    ServerList::parse(s).map_err(|e| e.to_string())
}

fn parse_user(s: &str) -> Result<String, String> {
    chatd_proto::names::validate_username(s)
        .map(|()| s.to_string())
        .map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    // A build step (packaging/build-debs), not a user-facing option.
    if let Some(code) = chatd_proto::docgen::generate_if_asked(
        <Cli as clap::CommandFactory>::command,
        "1",
        manual::manual,
    ) {
        return code;
    }
    let cli = Cli::parse();
    let code = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => match runtime.block_on(run(cli)) {
            Ok(code) => code,
            Err(e) => {
                // Errors can quote the server (TLS names, refusals): one clean line.
                eprintln!("chat: {}", text::sanitize_lines(&format!("{e:#}")));
                if e.downcast_ref::<LoginFailed>().is_some() {
                    3
                } else {
                    1
                }
            }
        },
        Err(e) => {
            eprintln!("chat: cannot start the async runtime: {e}");
            1
        }
    };
    let _ = std::io::stdout().flush();
    // Exit right away: the stdin reader thread may be blocked in a read that cannot be cancelled.
    std::process::exit(i32::from(code))
}

/// What the command line and the config file settle together.
struct Settings {
    server: ServerList,
    user: String,
    key: Option<PathBuf>,
    password_tries: u32,
    reconnect_max: std::time::Duration,
    ui: config::UiConfig,
    history: config::HistoryConfig,
}

fn settings(cli: &Cli) -> Result<Settings> {
    let file = match &cli.config {
        Some(path) => config::ClientConfig::load(path, true)?,
        None => match config::ClientConfig::default_path() {
            Some(path) => config::ClientConfig::load(&path, false)?,
            None => config::ClientConfig::default(),
        },
    };
    let server = match (&cli.server, &file.server) {
        (Some(s), _) => s.clone(),
        (None, Some(s)) => {
            ServerList::parse(s).with_context(|| format!("bad server {s:?} in the config file"))?
        }
        (None, None) => ServerList::parse("127.0.0.1:8443")?,
    };
    let user = match (&cli.user, &file.user) {
        (Some(u), _) => u.clone(),
        (None, Some(u)) => {
            parse_user(u).map_err(|e| anyhow::anyhow!("bad user {u:?} in the config file: {e}"))?
        }
        (None, None) => match std::env::var("USER") {
            Ok(u) if !u.is_empty() => parse_user(&u).map_err(|e| {
                anyhow::anyhow!("$USER ({u:?}) is no valid user name ({e}); give --user NAME")
            })?,
            _ => bail!("no user: give --user NAME, or set user in the config file"),
        },
    };
    Ok(Settings {
        server,
        user,
        key: cli.key.clone().or(file.key),
        password_tries: file
            .password_tries
            .unwrap_or(config::DEFAULT_PASSWORD_TRIES),
        reconnect_max: std::time::Duration::from_secs(
            file.reconnect_max_secs
                .unwrap_or(config::DEFAULT_RECONNECT_MAX_SECS),
        ),
        ui: file.ui,
        history: file.history,
    })
}

async fn run(cli: Cli) -> Result<u8> {
    let settings = settings(&cli)?;
    let stdin_tty = std::io::stdin().is_terminal();
    // The full-screen interface needs a person at a terminal; scripts get the line mode.
    let tui = !cli.plain
        && stdin_tty
        && std::io::stdout().is_terminal()
        && !cli.password_stdin
        && cli.approve_device.is_none();
    if !cli.password_stdin && !stdin_tty {
        bail!(
            "stdin is not a terminal, so there is nobody to ask for the password; use --password-stdin"
        );
    }
    let mut input = LineReader::stdin().context("cannot read stdin")?;
    // Scripts give the password on the first line (and the key passphrase on the next).
    let stdin_password = if cli.password_stdin {
        let line = input
            .next_line()
            .await
            .context("cannot read the password from stdin")?
            .context("stdin ended before the password line")?;
        Some(Zeroizing::new(line))
    } else {
        None
    };
    let trust = match &cli.ca {
        Some(path) => Trust::CaFile(path.clone()),
        None => Trust::Pinning {
            roots: trust::system_roots(),
            known_servers: trust::default_known_servers()?,
            accept: cli.accept_fingerprint,
            learned: None,
        },
    };
    let started = login::run(
        login::Options {
            servers: settings.server.clone(),
            user: settings.user.clone(),
            key_file: settings.key.clone(),
            bits: cli.key_bits,
            trust: trust.clone(),
            // Ask about a certificate, a password or a passphrase only when a person types.
            ask_tty: stdin_tty && !cli.password_stdin,
            password: stdin_password,
            password_tries: settings.password_tries,
            passphrase_stdin: cli.key_passphrase_stdin,
        },
        &mut input,
    )
    .await?;
    let login::Started {
        mut conn,
        info,
        logged_in,
        tls,
        key: device_key,
        layout,
        password,
        node: started_node,
        id: started_id,
    } = started;
    let public =
        base64::engine::general_purpose::STANDARD.encode(device_key.public().to_spki_der());
    let peers = peers::Peers::load(&layout.peers())?;
    // Beside a key given with --key (another device of the same account may share the data
    // directory), else in the data directory's state/.
    let state_path = match &settings.key {
        Some(p) => identity::with_suffix(p, ".state"),
        None => layout.state(),
    };
    let state_file = state::StateFile::new(&state_path, &device_key)?;
    // Read now: a damaged file stops chat before it goes on.
    let saved = state_file.load()?;
    drop(saved);
    // Kept for the full-screen client's reconnects, which sign a login proof again.
    let key = device_key.clone();
    let mut secure = secure::Secure::new(
        &logged_in.user,
        device_key,
        peers,
        cli.max_clock_skew.saturating_mul(1000),
        info.max_text_bytes,
    )
    .with_pending_file(&layout.pending())?;
    secure.set_vouch_supported(info.vouch);
    secure.enable_rekey(info.rekey);
    secure.set_offline_ttl_secs(info.offline_ttl_secs);
    secure.use_state(state_file)?;
    secure.set_ignored(ignore::Ignored::load(
        &identity::with_suffix(&state_path, ".ignored"),
        settings.ui.ignore_max,
    )?);
    // Beside the key file, which its key is derived from.
    let key_path = match &settings.key {
        Some(p) => p.clone(),
        None => layout.key(),
    };
    secure.use_history(history::History::open(
        &history::path_for(&key_path),
        &key,
        settings.history.clone(),
    )?);
    if tui {
        let session = tui::Session {
            conn,
            info,
            logged_in,
            tls,
        };
        let again = tui::Reconnect {
            servers: settings.server.clone(),
            node: started_node,
            id: started_id,
            round_max: settings.reconnect_max,
            trust,
            user: settings.user.clone(),
            password,
            device_key: public,
            key,
        };
        return tui::run(session, secure, again, settings.ui).await;
    }
    drop(password);
    let mut out = std::io::stdout();
    let stamp = format::local_stamp(None);
    let mut lines = vec![format::logged_in(&logged_in.user, &logged_in.online)];
    lines.extend(
        secure
            .on_login(&logged_in.devices, &logged_in.room, &logged_in.rooms)
            .iter()
            .map(|e| format::event(e, &logged_in.user, &stamp)),
    );
    for line in lines {
        writeln!(out, "{line}")
            .and_then(|()| out.flush())
            .context("cannot write to stdout")?;
    }
    if let Some(code) = &cli.approve_device {
        return approve::run(&mut conn, &mut secure, code, &mut out).await;
    }
    plain::run(&mut conn, &mut secure, &info, &mut input, &mut out).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings_with(config: &str, args: &[&str]) -> Result<Settings> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("config.toml");
        std::fs::write(&path, config)?;
        let path = path.display().to_string();
        let mut argv = vec!["chat", "--config", path.as_str(), "--user", "alice"];
        argv.extend(args);
        settings(&Cli::try_parse_from(argv)?)
    }

    #[test]
    fn a_server_list_comes_from_the_config_or_the_command_line() {
        let s = settings_with("server = \"a.example:1, b.example:2\"\n", &[]).unwrap();
        assert_eq!(s.server.to_string(), "a.example:1,b.example:2");
        let s =
            settings_with("server = \"a.example:1,b.example:2\"\n", &["-s", "c:3,d:4"]).unwrap();
        assert_eq!(s.server.to_string(), "c:3,d:4");
        let e = settings_with("server = \"a.example:1,b.example:99999\"\n", &[])
            .err()
            .map(|e| format!("{e:#}"))
            .unwrap_or_default();
        assert!(
            e.contains("in the config file") && e.contains("b.example:99999"),
            "{e}"
        );
        // One string, not a TOML array: an array is refused with the file's name.
        let e = settings_with("server = [\"a:1\", \"b:2\"]\n", &[])
            .err()
            .map(|e| format!("{e:#}"))
            .unwrap_or_default();
        assert!(e.contains("config.toml") && e.contains("server"), "{e}");
        let e = Cli::try_parse_from(["chat", "-s", "a:1,,b:2"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("empty entry"), "{e}");
    }
}
