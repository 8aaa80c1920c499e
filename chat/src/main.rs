//! `chat`: terminal client for chatd.
//!
//! Connects over TLS (trusting a `--ca` file, the system roots, or a pinned
//! fingerprint), logs in, then runs the plain line mode: stdin lines are sent,
//! server frames are printed one per line.
//!
//! Exit status: 0 after `/quit` or end of stdin, 1 for connection, TLS, trust and other
//! errors (or when the server ends the session), 2 for usage errors (clap), 3 when the
//! login is refused.

mod conn;
mod format;
mod input;
mod plain;
mod stdin;
mod trust;

#[cfg(test)]
mod tls_tests;

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use chatd_proto::Fingerprint;
use clap::Parser;

use crate::conn::{AskTrust, Connection, LoginFailed, NoAsk, ServerAddr, Trust};
use crate::stdin::LineReader;

/// Terminal client for chatd.
#[derive(Debug, Parser)]
#[command(name = "chat", version, about)]
struct Cli {
    /// Server address.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:8443", value_parser = parse_server)]
    server: ServerAddr,

    /// User name to log in as.
    #[arg(long, value_name = "NAME", value_parser = parse_user)]
    user: String,

    /// Read the password from the first line of stdin (further lines are messages).
    #[arg(long)]
    password_stdin: bool,

    /// Plain line mode: one line per message, for scripts and simple terminals.
    #[arg(long)]
    plain: bool,

    /// Trust only the CA certificates in this PEM file (no pinning).
    #[arg(long, value_name = "FILE", conflicts_with = "accept_fingerprint")]
    ca: Option<PathBuf>,

    /// Pin this server certificate fingerprint if the server presents it.
    #[arg(long, value_name = "SHA256:...")]
    accept_fingerprint: Option<Fingerprint>,
}

fn parse_server(s: &str) -> Result<ServerAddr, String> {
    ServerAddr::parse(s).map_err(|e| e.to_string())
}

fn parse_user(s: &str) -> Result<String, String> {
    chatd_proto::names::validate_username(s)
        .map(|()| s.to_string())
        .map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let code = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => match runtime.block_on(run(cli)) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("chat: {e:#}");
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

async fn run(cli: Cli) -> Result<u8> {
    let stdin_tty = std::io::stdin().is_terminal();
    if !cli.password_stdin && !stdin_tty {
        bail!(
            "stdin is not a terminal, so there is nobody to ask for the password; use --password-stdin"
        );
    }
    // Only the plain mode exists so far; later --plain will choose it over the full-screen UI.
    let _ = cli.plain;
    let mut input = LineReader::stdin().context("cannot read stdin")?;

    let trust = match &cli.ca {
        Some(path) => Trust::CaFile(path.clone()),
        None => Trust::Pinning {
            roots: trust::system_roots(),
            known_servers: trust::default_known_servers()?,
            accept: cli.accept_fingerprint,
        },
    };
    // Ask about an unknown certificate only when a person is typing on stdin.
    let stream = if stdin_tty && !cli.password_stdin {
        conn::connect_tls(&cli.server, &trust, Some(&mut StdinAsker(&mut input))).await?
    } else {
        conn::connect_tls::<NoAsk>(&cli.server, &trust, None).await?
    };

    let mut conn = Connection::new(stream);
    let info = conn.hello().await?;
    let password = if cli.password_stdin {
        input
            .next_line()
            .await
            .context("cannot read the password from stdin")?
            .context("stdin ended before the password line")?
    } else {
        let prompt = format!("Password for {}@{}: ", cli.user, cli.server);
        tokio::task::spawn_blocking(move || rpassword::prompt_password(prompt))
            .await
            .context("password prompt")?
            .context("cannot read the password")?
    };
    let logged_in = match conn.login(&cli.user, &password).await {
        Ok(l) => l,
        Err(e) if e.downcast_ref::<LoginFailed>().is_some() => {
            // Be polite so the server does not count a protocol error; errors are moot.
            let _ = conn.send(&chatd_proto::ClientFrame::Quit).await;
            return Err(e);
        }
        Err(e) => return Err(e),
    };
    drop(password);

    let mut out = std::io::stdout();
    writeln!(
        out,
        "{}",
        format::logged_in(&logged_in.user, &logged_in.online)
    )
    .and_then(|()| out.flush())
    .context("cannot write to stdout")?;
    plain::run(&mut conn, &logged_in.user, &info, &mut input, &mut out).await
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
