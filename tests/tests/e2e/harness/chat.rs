//! `chat` as a process: a client home (config, keys, pins) and a running client whose
//! output lines a test waits on.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};

use tempfile::TempDir;

use super::chatd::Server;
use super::process::{Lines, bins, wait_child};
use super::raw::test_key;

// ---------------------------------------------------------------------------------------------
// chat
// ---------------------------------------------------------------------------------------------

/// A private $HOME / $XDG_DATA_HOME for chat, so known_servers never touches the real one.
///
/// Also one device: unless made with [`ClientHome::generating`], chat is started with
/// `--key` pointing at a ready key ([`test_key`] of the user, or of the device label), because
/// generating RSA keys for every client of every test would dominate the run.
pub struct ClientHome {
    dir: TempDir,
    device: Device,
    /// chat runs with its clock moved by this much (libfaketime's `faketime -f`, e.g. `+6d`).
    clock: Option<String>,
}

enum Device {
    /// The test key of the user chat logs in as.
    UserKey,
    /// The test key of this label (a second device of the same user).
    Labelled(String),
    /// No --key: chat makes its own on first login, as it does for real users.
    Generate,
}

impl ClientHome {
    pub fn new() -> ClientHome {
        ClientHome {
            dir: tempfile::tempdir().expect("tempdir"),
            device: Device::UserKey,
            clock: None,
        }
    }

    /// A home whose device key is [`test_key`]`(label)`: another device of the same user.
    pub fn device(label: &str) -> ClientHome {
        ClientHome {
            device: Device::Labelled(label.to_string()),
            ..ClientHome::new()
        }
    }

    /// A home where chat creates its key itself.
    pub fn generating() -> ClientHome {
        ClientHome {
            device: Device::Generate,
            ..ClientHome::new()
        }
    }

    /// From now on chat runs from this home with its clock moved by `offset` (`+10m`, `+6d`:
    /// libfaketime's syntax; the `faketime` command must be installed). Time is injected,
    /// never waited for.
    pub fn set_clock(&mut self, offset: &str) {
        self.clock = Some(offset.to_string());
    }

    /// The `--key FILE` arguments for `user` (writing the key file once), if any.
    pub fn key_args(&self, user: &str) -> Vec<String> {
        let label = match &self.device {
            Device::Generate => return Vec::new(),
            Device::UserKey => user,
            Device::Labelled(label) => label.as_str(),
        };
        let path = self.dir.path().join(format!("{label}.pem"));
        if !path.exists() {
            use std::os::unix::fs::OpenOptionsExt;
            let pem = test_key(label).to_pkcs8_pem().expect("pem");
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .and_then(|mut f| f.write_all(pem.as_bytes()))
                .expect("write the test key");
        }
        vec!["--key".to_string(), path.display().to_string()]
    }

    pub fn xdg_data(&self) -> PathBuf {
        self.dir.path().join("xdg-data")
    }

    pub fn known_servers(&self) -> PathBuf {
        self.xdg_data().join("chat").join("known_servers")
    }

    /// The environment of a chat started some other way than [`Command`] (in a terminal):
    /// HOME and XDG_DATA_HOME as for the plain clients, and XDG_CONFIG_HOME inside this home
    /// too, so no real config.toml is read.
    pub fn env(&self) -> Vec<(String, String)> {
        let home = self.dir.path();
        [
            ("HOME", home.to_path_buf()),
            ("XDG_DATA_HOME", self.xdg_data()),
            ("XDG_CONFIG_HOME", home.join("xdg-config")),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.display().to_string()))
        .collect()
    }

    fn apply(&self, cmd: &mut Command) {
        cmd.env("HOME", self.dir.path())
            .env("XDG_DATA_HOME", self.xdg_data())
            .env_remove("XDG_CONFIG_HOME");
    }
}

/// A running `chat` in plain mode with piped stdin/stdout/stderr.
pub struct Chat {
    child: Child,
    stdin: Option<ChildStdin>,
    pub out: Lines,
    pub err: Lines,
    name: String,
}

/// The finished chat process.
pub struct ChatExit {
    pub status: ExitStatus,
    pub stdout: Vec<String>,
    pub stderr: Vec<String>,
}

impl Chat {
    /// Spawns `chat --server ADDR --user USER --password-stdin [extra]` and writes the password line.
    pub fn spawn(
        server: &str,
        user: &str,
        password: &str,
        home: &ClientHome,
        extra: &[&str],
    ) -> Chat {
        let mut child = spawn_chat(server, user, home, extra);
        let stdin = child.stdin.take();
        let out = Lines::spawn(
            child.stdout.take().expect("stdout"),
            &format!("chat {user} stdout"),
        );
        let err = Lines::spawn(
            child.stderr.take().expect("stderr"),
            &format!("chat {user} stderr"),
        );
        let mut chat = Chat {
            child,
            stdin,
            out,
            err,
            name: user.to_string(),
        };
        chat.send(password);
        chat
    }

    /// Logs in to `server` (accepting its fingerprint) and waits for the logged-in line.
    pub fn login(server: &Server, user: &str, password: &str, home: &ClientHome) -> Chat {
        let mut chat = Chat::spawn(
            &server.server_arg(),
            user,
            password,
            home,
            &["--accept-fingerprint", &server.fingerprint],
        );
        chat.out
            .expect_contains(&format!("-- logged in as {user}; online: "));
        chat
    }

    /// Writes one line to chat's stdin.
    pub fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin already closed");
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .and_then(|()| stdin.flush())
            .unwrap_or_else(|e| panic!("cannot write to chat {}'s stdin: {e}", self.name));
    }

    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Closes stdin and waits for the process to end.
    pub fn wait(mut self) -> ChatExit {
        self.close_stdin();
        let status = wait_child(&mut self.child, &format!("chat {}", self.name));
        self.out.wait_eof();
        self.err.wait_eof();
        ChatExit {
            status,
            stdout: self.out.all(),
            stderr: self.err.all(),
        }
    }

    /// SIGKILL: the process vanishes without a word to the server.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Chat {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "---- chat {} stdout ----\n{}\n---- chat {} stderr ----\n{}\n----",
                self.name,
                self.out.dump(),
                self.name,
                self.err.dump()
            );
        }
    }
}

/// `chat --server SERVER --user USER --password-stdin [extra]` with piped stdio in `home`.
fn spawn_chat(server: &str, user: &str, home: &ClientHome, extra: &[&str]) -> Child {
    let mut cmd = match &home.clock {
        Some(offset) => {
            let mut faked = Command::new("faketime");
            // The monotonic clock stays true: only the wall clock is moved.
            faked
                .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
                .args(["-f", offset])
                .arg(&bins().chat);
            faked
        }
        None => Command::new(&bins().chat),
    };
    cmd.args(["--server", server, "--user", user, "--password-stdin"])
        .args(home.key_args(user))
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    home.apply(&mut cmd);
    cmd.spawn().expect("cannot spawn chat")
}

/// Runs chat to completion with all of `stdin` (password first) and returns what it did.
pub fn run_chat(
    server: &str,
    user: &str,
    stdin: &str,
    home: &ClientHome,
    extra: &[&str],
) -> ChatExit {
    let mut child = spawn_chat(server, user, home, extra);
    let mut out = Lines::spawn(child.stdout.take().expect("stdout"), "chat stdout");
    let mut err = Lines::spawn(child.stderr.take().expect("stderr"), "chat stderr");
    {
        let mut pipe = child.stdin.take().expect("stdin");
        // chat may exit before reading everything (refused certificate): ignore broken pipes.
        let _ = pipe.write_all(stdin.as_bytes());
    }
    let status = wait_child(&mut child, "chat");
    out.wait_eof();
    err.wait_eof();
    ChatExit {
        status,
        stdout: out.all(),
        stderr: err.all(),
    }
}

/// The line without the `[HH:MM:SS] ` stamp chat puts before server frames; None if unstamped.
pub fn unstamped(line: &str) -> Option<&str> {
    let b = line.as_bytes();
    let stamped = b.len() >= 11
        && b[0] == b'['
        && b[3] == b':'
        && b[6] == b':'
        && b[9] == b']'
        && b[10] == b' '
        && [1, 2, 4, 5, 7, 8].iter().all(|i| b[*i].is_ascii_digit());
    stamped.then(|| &line[11..])
}

/// Predicate: a stamped line whose text after the stamp is exactly `want`.
pub fn exactly(want: &str) -> impl Fn(&str) -> bool + '_ {
    move |line| unstamped(line) == Some(want)
}
