//! `chatctl`: administer a running chatd over its Unix control socket.
//!
//! Each invocation sends one `ControlRequest` and prints the `ControlResponse`, either
//! for people (tables, `key: value` lines; times in UTC) or, with `--json`, as the raw
//! response line. With `--json` a failure chatctl finds itself (a bad name, no connection)
//! is an error object on stdout too.
//!
//! Exit status: 0 on success, 1 on any failure (bad user name, no connection, an
//! `error` response), 2 for command-line usage errors (from clap).

mod client;
mod manual;
mod output;
mod password;
mod textfile;

use std::path::PathBuf;
use std::process::ExitCode;
use std::str::FromStr;

use anyhow::{Result, bail};
use chatd_proto::Fingerprint;
use chatd_proto::control::{ControlRequest, ControlResponse, MAX_BAN_SECS};
use chatd_proto::names::validate_username;
use clap::{Parser, Subcommand};

use crate::client::Client;

/// Administer a running chatd over its Unix control socket.
#[derive(Debug, Parser)]
#[command(name = "chatctl", version, about)]
struct Cli {
    /// Path of chatd's control socket.
    #[arg(
        long,
        global = true,
        value_name = "PATH",
        env = "CHATD_SOCKET",
        default_value = "/run/chatd/control.sock"
    )]
    socket: PathBuf,

    /// Print the server's response object as JSON (one line) instead of text; a failure
    /// chatctl finds itself is an error object too (code invalid_argument or
    /// connection_failed).
    #[arg(long, global = true)]
    json: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Manage accounts.
    #[command(subcommand)]
    User(UserCommand),
    /// Manage device keys (the keys `chat` logs in with, one per device).
    #[command(subcommand)]
    Key(KeyCommand),
    /// List sessions online, with each session's device key.
    Who,
    /// End every session of a user (`chat` does not reconnect on its own); with --ban, also
    /// refuse the account's logins for a while.
    Kick {
        /// User whose sessions to end.
        user: String,
        /// Reason shown to the user and to others.
        #[arg(long, value_name = "TEXT")]
        reason: Option<String>,
        /// Refuse the account's logins for DURATION: a number and a unit, s, m, h or d
        /// (`30m`, `2h`, `1d`, `1h30m`). The ban is stored (a restart keeps it), ends by
        /// itself, and `chatctl unban USER` lifts it early; a login meanwhile is refused with
        /// the time left. Works for a user who is not online too.
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        ban: Option<u64>,
    },
    /// Lift a ban (`kick --ban`) before it ends.
    Unban {
        /// Account.
        user: String,
    },
    /// Show server version, uptime, listener, certificate fingerprint, counts and the store.
    Status,
    /// Send a notice to everyone online (server-generated, not end-to-end encrypted).
    Say {
        /// The announcement.
        #[arg(required = true, num_args = 1..)]
        text: Vec<String>,
    },
    /// Make chatd re-read its configuration file and TLS certificate and key (like
    /// `systemctl reload chatd`); connections stay up, an invalid file is refused.
    Reload,
    /// Print chatd's metrics as OpenMetrics text: what `[metrics] listen` serves, which need
    /// not be on.
    Metrics {
        /// Print the Prometheus text format (0.0.4) instead, which node_exporter's textfile
        /// collector reads.
        #[arg(long)]
        prometheus: bool,
    },
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Create an account.
    Add {
        /// New user name: 1-32 characters, a-z first, then a-z 0-9 _ . -
        name: String,
        /// Give the account the admin role.
        #[arg(long)]
        admin: bool,
        /// Read the password as one line from stdin instead of prompting.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Delete an account and end its sessions.
    Del {
        /// Account to delete.
        name: String,
    },
    /// Set a new password.
    Passwd {
        /// Account.
        name: String,
        /// Read the password as one line from stdin instead of prompting.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Refuse further logins and end current sessions.
    Lock {
        /// Account.
        name: String,
    },
    /// Allow logins again.
    Unlock {
        /// Account.
        name: String,
    },
    /// List accounts.
    List,
}

#[derive(Debug, Subcommand)]
enum KeyCommand {
    /// List registered device keys, of one user or of all.
    List {
        /// Only this account's keys.
        user: Option<String>,
    },
    /// Revoke a device key: its sessions end and it can no longer log in.
    Revoke {
        /// Owner of the key.
        user: String,
        /// The key's fingerprint, SHA256:<64 hex digits>, as `key list` shows it.
        // Parsed here so a mistyped fingerprint is a usage error, not a server round trip.
        #[arg(value_parser = Fingerprint::from_str)]
        fingerprint: Fingerprint,
    },
}

fn main() -> ExitCode {
    // A build step (packaging/build-debs), not a user-facing option.
    if let Some(code) = chatd_proto::docgen::generate_if_asked(
        <Cli as clap::CommandFactory>::command,
        "8",
        manual::manual,
    ) {
        return code;
    }
    // Usage errors exit 2 from inside parse().
    let cli = Cli::parse();
    // Everything checkable locally (names, password) is settled before connecting.
    let request = match build_request(&cli.command) {
        Ok(request) => request,
        Err(e) => return local_error(&cli, "invalid_argument", &e),
    };
    let reply = match Client::connect(&cli.socket).and_then(|mut c| c.request(&request)) {
        Ok(reply) => reply,
        Err(e) => return local_error(&cli, "connection_failed", &e),
    };
    show(&cli, &reply)
}

/// An error chatctl found itself: on stderr, and with `--json` also as an error object on
/// stdout shaped like chatd's (`code` is `invalid_argument` or `connection_failed`), so a
/// script reading stdout sees every failure the same way.
fn local_error(cli: &Cli, code: &str, e: &anyhow::Error) -> ExitCode {
    let message = format!("{e:#}");
    eprintln!("chatctl: {message}");
    if cli.json {
        let object = serde_json::json!({"type": "error", "code": code, "message": message});
        println!("{object}");
    }
    ExitCode::FAILURE
}

/// Prints chatd's answer; an `error` answer fails.
fn show(cli: &Cli, reply: &client::Reply) -> ExitCode {
    if cli.json {
        println!("{}", reply.line);
    }
    if let ControlResponse::Error { message, .. } = &reply.response {
        eprintln!("chatctl: {message}");
        return ExitCode::FAILURE;
    }
    if !cli.json {
        match (&cli.command, &reply.response) {
            (Command::Metrics { prometheus: true }, ControlResponse::Metrics { text }) => {
                print!("{}", textfile::prometheus(text));
            }
            (_, response) => print!("{}", output::render(response)),
        }
    }
    ExitCode::SUCCESS
}

/// Turns the command line into a request, validating names and reading any password.
fn build_request(command: &Command) -> Result<ControlRequest> {
    Ok(match command {
        Command::User(user) => match user {
            UserCommand::Add {
                name,
                admin,
                password_stdin,
            } => {
                check_name(name)?;
                ControlRequest::UserAdd {
                    user: name.clone(),
                    password: password::obtain(name, *password_stdin)?,
                    admin: *admin,
                }
            }
            UserCommand::Del { name } => {
                check_name(name)?;
                ControlRequest::UserDel { user: name.clone() }
            }
            UserCommand::Passwd {
                name,
                password_stdin,
            } => {
                check_name(name)?;
                ControlRequest::UserPasswd {
                    user: name.clone(),
                    password: password::obtain(name, *password_stdin)?,
                }
            }
            UserCommand::Lock { name } => {
                check_name(name)?;
                ControlRequest::UserLock { user: name.clone() }
            }
            UserCommand::Unlock { name } => {
                check_name(name)?;
                ControlRequest::UserUnlock { user: name.clone() }
            }
            UserCommand::List => ControlRequest::UserList,
        },
        Command::Key(key) => match key {
            KeyCommand::List { user } => {
                if let Some(name) = user {
                    check_name(name)?;
                }
                ControlRequest::KeyList { user: user.clone() }
            }
            KeyCommand::Revoke { user, fingerprint } => {
                check_name(user)?;
                ControlRequest::KeyRevoke {
                    user: user.clone(),
                    fingerprint: *fingerprint,
                }
            }
        },
        Command::Who => ControlRequest::Who,
        Command::Kick { user, reason, ban } => {
            check_name(user)?;
            ControlRequest::Kick {
                user: user.clone(),
                reason: reason.clone(),
                ban_secs: *ban,
            }
        }
        Command::Unban { user } => {
            check_name(user)?;
            ControlRequest::Unban { user: user.clone() }
        }
        Command::Status => ControlRequest::Status,
        Command::Say { text } => ControlRequest::Say {
            text: text.join(" "),
        },
        Command::Reload => ControlRequest::Reload,
        Command::Metrics { .. } => ControlRequest::Metrics,
    })
}

/// A ban's length in seconds: numbers each with a unit, s, m, h or d (`30m`, `2h`, `1d`,
/// `1h30m`); at least a second and at most [`MAX_BAN_SECS`].
fn parse_duration(text: &str) -> Result<u64, String> {
    const FORM: &str = "a duration is a number and a unit, s, m, h or d (30m, 2h, 1d, 1h30m)";
    let mut total: u64 = 0;
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(FORM.into());
    }
    while !rest.is_empty() {
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        let (number, tail) = rest.split_at(digits);
        let mut units = tail.chars();
        let unit = match units.next() {
            Some('s') => 1,
            Some('m') => 60,
            Some('h') => 3_600,
            Some('d') => 86_400,
            _ => return Err(FORM.into()),
        };
        let n: u64 = number.parse().map_err(|_| FORM.to_string())?;
        total = n
            .checked_mul(unit)
            .and_then(|secs| total.checked_add(secs))
            .ok_or_else(|| format!("{text:?} is too long"))?;
        rest = units.as_str();
    }
    if total == 0 {
        return Err("a ban must last at least 1 second".into());
    }
    if total > MAX_BAN_SECS {
        return Err(format!(
            "{text:?} is too long: a ban lasts at most {} days",
            MAX_BAN_SECS / 86_400
        ));
    }
    Ok(total)
}

/// Applies chatd's own user-name rule, so a bad name fails here with the rule spelled out.
fn check_name(name: &str) -> Result<()> {
    if let Err(rule) = validate_username(name) {
        bail!("invalid user name {name:?}: {rule}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn bad_names_name_the_rule() {
        assert_eq!(
            check_name("Bob").unwrap_err().to_string(),
            "invalid user name \"Bob\": user name must start with a lowercase letter a-z"
        );
        assert!(check_name("bob").is_ok());
    }

    #[test]
    fn parses_subcommands_and_global_options() {
        let cli = Cli::try_parse_from([
            "chatctl",
            "kick",
            "bob",
            "--reason",
            "spam",
            "--socket",
            "/tmp/x.sock",
            "--json",
        ])
        .unwrap();
        assert!(cli.json);
        assert_eq!(cli.socket, PathBuf::from("/tmp/x.sock"));
        assert_eq!(
            build_request(&cli.command).unwrap(),
            ControlRequest::Kick {
                user: "bob".into(),
                reason: Some("spam".into()),
                ban_secs: None,
            }
        );
        let cli = Cli::try_parse_from(["chatctl", "kick", "--ban", "2h", "bob"]).unwrap();
        assert_eq!(
            build_request(&cli.command).unwrap(),
            ControlRequest::Kick {
                user: "bob".into(),
                reason: None,
                ban_secs: Some(7_200),
            }
        );
        let cli = Cli::try_parse_from(["chatctl", "unban", "bob"]).unwrap();
        assert_eq!(
            build_request(&cli.command).unwrap(),
            ControlRequest::Unban { user: "bob".into() }
        );
        let cli = Cli::try_parse_from(["chatctl", "say", "back", "in 5"]).unwrap();
        assert_eq!(
            build_request(&cli.command).unwrap(),
            ControlRequest::Say {
                text: "back in 5".into()
            }
        );
        let cli = Cli::try_parse_from(["chatctl", "user", "list"]).unwrap();
        assert_eq!(
            build_request(&cli.command).unwrap(),
            ControlRequest::UserList
        );
        let err = Cli::try_parse_from(["chatctl", "user", "frobnicate"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
    }

    #[test]
    fn ban_durations_parse_or_say_the_form() {
        for (text, secs) in [
            ("2s", 2),
            ("30m", 1_800),
            ("2h", 7_200),
            ("1d", 86_400),
            ("1h30m", 5_400),
            ("3650d", MAX_BAN_SECS),
        ] {
            assert_eq!(parse_duration(text), Ok(secs), "{text}");
        }
        for bad in ["", "30", "m", "2w", "1.5h", "-1h", "2h x", "h2"] {
            let err = parse_duration(bad).unwrap_err();
            assert!(
                err.starts_with("a duration is a number and a unit"),
                "{bad:?}: {err}"
            );
        }
        assert_eq!(
            parse_duration("0m").unwrap_err(),
            "a ban must last at least 1 second"
        );
        assert!(
            parse_duration("3651d")
                .unwrap_err()
                .contains("at most 3650 days")
        );
        assert!(parse_duration("99999999999999999999d").is_err());
        // On the command line, a usage error (exit status 2).
        let err = Cli::try_parse_from(["chatctl", "kick", "--ban", "0s", "bob"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("at least 1 second"), "{err}");
    }

    const FP: &str = "SHA256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn parses_key_commands() {
        let cli = Cli::try_parse_from(["chatctl", "key", "list"]).unwrap();
        assert_eq!(
            build_request(&cli.command).unwrap(),
            ControlRequest::KeyList { user: None }
        );
        let cli = Cli::try_parse_from(["chatctl", "key", "list", "alice", "--json"]).unwrap();
        assert!(cli.json);
        assert_eq!(
            build_request(&cli.command).unwrap(),
            ControlRequest::KeyList {
                user: Some("alice".into())
            }
        );
        let cli = Cli::try_parse_from(["chatctl", "key", "revoke", "alice", FP]).unwrap();
        assert_eq!(
            build_request(&cli.command).unwrap(),
            ControlRequest::KeyRevoke {
                user: "alice".into(),
                fingerprint: Fingerprint::of(b""),
            }
        );
        // Both operands are required.
        let err = Cli::try_parse_from(["chatctl", "key", "revoke", "alice"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
    }

    #[test]
    fn a_bad_fingerprint_is_a_usage_error() {
        for bad in ["SHA256:abcd", "e3b0c442", "MD5:00", ""] {
            let err = Cli::try_parse_from(["chatctl", "key", "revoke", "alice", bad]).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{bad:?}");
            assert_eq!(
                err.kind(),
                clap::error::ErrorKind::ValueValidation,
                "{bad:?}"
            );
            let text = err.to_string();
            assert!(
                text.contains("fingerprint must be written SHA256: followed by 64 hex digits"),
                "{text}"
            );
        }
    }

    #[test]
    fn key_commands_check_user_names() {
        for args in [
            &["chatctl", "key", "list", "Alice"][..],
            &["chatctl", "key", "revoke", "Alice", FP][..],
        ] {
            let cli = Cli::try_parse_from(args).unwrap();
            let err = build_request(&cli.command).unwrap_err();
            assert!(
                err.to_string().starts_with("invalid user name \"Alice\""),
                "{err}"
            );
        }
    }

    #[test]
    fn names_are_checked_before_anything_else() {
        let cli =
            Cli::try_parse_from(["chatctl", "user", "add", "1x", "--password-stdin"]).unwrap();
        let err = build_request(&cli.command).unwrap_err();
        assert!(
            err.to_string().starts_with("invalid user name \"1x\""),
            "{err}"
        );
    }
}
