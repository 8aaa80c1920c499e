//! A small tmux driver: runs one program in a terminal of a chosen size on a private tmux
//! server, types into it and reads its screen, as a person at a real terminal would.
//!
//! Every [`Tmux`] has its own server (`tmux -L chatd-test-<pid>-<n> -f /dev/null`, so no user
//! configuration is read), with one detached session, no tmux status line (the pane is the
//! whole terminal) and `remain-on-exit` (a program that exits or crashes leaves its last
//! screen and its exit status to look at). The server is killed on drop.

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::harness::TIMEOUT;

/// The one session (and its one pane) every driver command targets.
const TARGET: &str = "main";

/// How often [`Tmux::wait_for`] looks at the screen again.
const POLL: Duration = Duration::from_millis(50);

/// Whether tmux can be run. Without it the TUI tests skip (an eprintln, not a failure), unless
/// `CI` is set: `.ci/run` installs tmux, so there its absence is a broken setup.
pub fn available() -> bool {
    let found = Command::new("tmux")
        .arg("-V")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "tmux is not installed but CI is set (.ci/run installs it)"
        );
        eprintln!("tmux is not installed: skipping this terminal test (CI runs it)");
    }
    found
}

/// Quotes `arg` for a POSIX shell (single quotes; a single quote becomes `'\''`).
pub fn shell_quote(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:=@%+,".contains(&b));
    if plain {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

/// `argv` as one shell command line.
pub fn shell_command(argv: &[String]) -> String {
    argv.iter()
        .map(|a| shell_quote(a))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A program running in a tmux pane on a private tmux server.
pub struct Tmux {
    socket: String,
}

impl Tmux {
    /// Runs `argv` (program first) with `env` added to the environment in a `cols` x `rows`
    /// terminal. Returns once tmux has started it; the program may not have drawn anything yet.
    pub fn start(cols: u16, rows: u16, env: &[(String, String)], argv: &[String]) -> Tmux {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        assert!(!argv.is_empty(), "nothing to run");
        let tmux = Tmux {
            socket: format!(
                "chatd-test-{}-{}",
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::Relaxed)
            ),
        };
        let (cols, rows) = (cols.to_string(), rows.to_string());
        // The options go in before the session exists, so they hold from the program's first
        // byte. `env` makes the command at least two words: tmux then runs it directly
        // (execvp), with no shell reinterpreting the arguments.
        let mut args: Vec<String> = [
            "start-server",
            ";",
            "set-option",
            "-g",
            "status",
            "off",
            ";",
            "set-option",
            "-g",
            "remain-on-exit",
            "on",
            ";",
            "set-option",
            "-g",
            "history-limit",
            "0",
            ";",
            "new-session",
            "-d",
            "-s",
            TARGET,
            "-x",
            &cols,
            "-y",
            &rows,
            "--",
            "env",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(env.iter().map(|(k, v)| {
            assert!(
                !k.is_empty() && !k.contains('='),
                "bad environment variable name {k:?}"
            );
            format!("{k}={v}")
        }));
        args.extend(argv.iter().cloned());
        let out = tmux.run(&args);
        assert!(
            out.status.success(),
            "tmux could not start {argv:?} ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        tmux
    }

    /// Runs `tmux -L SOCKET -f /dev/null args...` and returns its output.
    fn run<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> std::process::Output {
        Command::new("tmux")
            .args(["-L", &self.socket, "-f", "/dev/null"])
            .args(args)
            // Not nested in whatever tmux may run the tests.
            .env_remove("TMUX")
            .stdin(Stdio::null())
            .output()
            .expect("cannot run tmux")
    }

    /// Runs a tmux command that must succeed; returns its stdout.
    fn cmd(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "tmux {args:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Presses keys, by tmux key name: `"Enter"`, `"Tab"`, `"C-c"`, `"PageUp"`, `"F2"`, ...
    pub fn send_keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", TARGET];
        args.extend_from_slice(keys);
        self.cmd(&args);
    }

    /// Types `text` literally (no key names).
    pub fn type_text(&self, text: &str) {
        self.cmd(&["send-keys", "-t", TARGET, "-l", "--", text]);
    }

    /// Pastes `text` as a terminal does (bracketed when the program asked for it; newlines
    /// arrive as carriage returns), all in one write.
    pub fn paste(&self, text: &str) {
        self.cmd(&["set-buffer", "-b", "test-paste", "--", text]);
        self.cmd(&["paste-buffer", "-p", "-d", "-b", "test-paste", "-t", TARGET]);
    }

    /// A tmux format string about the pane, e.g. `#{pane_width}`.
    pub fn query(&self, format: &str) -> String {
        self.cmd(&["display-message", "-p", "-t", TARGET, format])
            .trim_end_matches('\n')
            .to_string()
    }

    /// The pane's size (columns, rows).
    pub fn size(&self) -> (usize, usize) {
        let size = self.query("#{pane_width} #{pane_height}");
        let mut it = size.split(' ').map(|n| n.parse::<usize>().ok());
        match (it.next().flatten(), it.next().flatten()) {
            (Some(c), Some(r)) => (c, r),
            _ => panic!("tmux gave no pane size: {size:?}"),
        }
    }

    /// The screen as it is: one line per terminal row (see [`rows`]), trailing spaces kept.
    pub fn capture(&self) -> String {
        let (_, rows) = self.size();
        let text = self.cmd(&["capture-pane", "-p", "-N", "-t", TARGET]);
        let mut lines: Vec<&str> = text.lines().collect();
        lines.resize(rows.max(lines.len()), "");
        lines.join("\n")
    }

    /// The screen with wrapped lines joined (for reading a long line a program printed).
    pub fn capture_joined(&self) -> String {
        let text = self.cmd(&["capture-pane", "-p", "-J", "-t", TARGET]);
        text.strip_suffix('\n').unwrap_or(&text).to_string()
    }

    /// Polls the screen until `pred` holds and returns that screen; panics with the last
    /// screen after [`TIMEOUT`].
    pub fn wait_for(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        self.wait_for_with(what, || self.capture(), pred)
    }

    /// [`Tmux::wait_for`] of a screen containing `needle`.
    pub fn wait_for_text(&self, needle: &str) -> String {
        self.wait_for(&format!("a screen containing {needle:?}"), |s| {
            s.contains(needle)
        })
    }

    /// [`Tmux::wait_for`] on [`Tmux::capture_joined`] screens.
    pub fn wait_for_joined(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        self.wait_for_with(what, || self.capture_joined(), pred)
    }

    fn wait_for_with(
        &self,
        what: &str,
        capture: impl Fn() -> String,
        pred: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let screen = capture();
            if pred(&screen) {
                return screen;
            }
            if Instant::now() >= deadline {
                panic!(
                    "no {what} within {TIMEOUT:?}; {}; the last screen:\n{}",
                    self.describe(),
                    frame(&screen)
                );
            }
            std::thread::sleep(POLL);
        }
    }

    /// Size, cursor and process state, for failure messages.
    pub fn describe(&self) -> String {
        self.query(
            "pane #{pane_width}x#{pane_height}, cursor #{cursor_x},#{cursor_y}, \
             alternate screen #{alternate_on}, dead #{pane_dead} (status #{pane_dead_status})",
        )
    }

    /// Resizes the terminal; the program gets SIGWINCH.
    pub fn resize(&self, cols: u16, rows: u16) {
        self.cmd(&[
            "resize-window",
            "-t",
            TARGET,
            "-x",
            &cols.to_string(),
            "-y",
            &rows.to_string(),
        ]);
    }

    /// The cursor position (column, row), both from 0.
    pub fn cursor(&self) -> (usize, usize) {
        let pos = self.query("#{cursor_x} #{cursor_y}");
        let mut it = pos.split(' ').map(|n| n.parse::<usize>().ok());
        match (it.next().flatten(), it.next().flatten()) {
            (Some(x), Some(y)) => (x, y),
            _ => panic!("tmux gave no cursor position: {pos:?}"),
        }
    }

    /// Whether the program shows the alternate screen (full-screen programs do).
    pub fn alternate_screen(&self) -> bool {
        self.query("#{alternate_on}") == "1"
    }

    /// Whether the program has exited. (tmux's `pane_dead_status` is not used: under load it
    /// sometimes never records the status of a program that did exit.)
    pub fn exited(&self) -> bool {
        self.query("#{pane_dead}") == "1"
    }

    /// Waits for the program to exit.
    pub fn wait_exit(&self) {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if self.exited() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the program did not exit within {TIMEOUT:?}; {}; the last screen:\n{}",
                self.describe(),
                frame(&self.capture())
            );
            std::thread::sleep(POLL);
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let out = self.run(&["capture-pane", "-p", "-N", "-t", TARGET]);
            eprintln!(
                "---- terminal {} ----\n{}",
                self.socket,
                frame(String::from_utf8_lossy(&out.stdout).trim_end_matches('\n'))
            );
        }
        // tmux leaves its socket file behind after kill-server.
        let socket = self.run(&["display-message", "-p", "#{socket_path}"]);
        let socket = String::from_utf8_lossy(&socket.stdout).trim().to_string();
        let _ = self.run(&["kill-server"]);
        if socket.ends_with(&self.socket) {
            let _ = std::fs::remove_file(&socket);
        }
    }
}

/// A screen with its rows numbered and their ends marked, for failure messages.
pub fn frame(screen: &str) -> String {
    rows(screen)
        .iter()
        .enumerate()
        .map(|(i, l)| format!("{i:3}|{l}|"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The rows of a captured screen.
pub fn rows(screen: &str) -> Vec<&str> {
    // Not `lines()`: a last empty row is still a row.
    screen.split('\n').collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(args: &[&str]) -> Vec<String> {
        args.iter().map(|a| a.to_string()).collect()
    }

    #[test]
    fn runs_a_program_with_env_and_awkward_arguments() {
        if !available() {
            return;
        }
        let t = Tmux::start(
            40,
            8,
            &[("GREETING".to_string(), "hello there".to_string())],
            &s(&[
                "sh",
                "-c",
                r#"printf '%s|%s|' "$GREETING" "$1"; stty size; sleep 5"#,
                "sh",
                "a b'c $HOME",
            ]),
        );
        let screen = t.wait_for_text("hello there|a b'c $HOME|8 40");
        assert_eq!(rows(&screen).len(), 8, "{}", frame(&screen));
        assert_eq!(t.size(), (40, 8));
        // stty printed its line: the cursor is at the start of the next one.
        assert_eq!(t.cursor(), (0, 1), "{}", frame(&screen));
        assert!(!t.exited());
    }

    #[test]
    fn types_keys_resizes_and_sees_the_exit() {
        if !available() {
            return;
        }
        // A line-reading loop in cooked mode: typed text echoes, Enter hands a line over.
        let script = r#"while read -r line; do
            case "$line" in
              size) stty size ;;
              quit) exit 7 ;;
              *) echo "got<$line>" ;;
            esac
          done"#;
        let t = Tmux::start(30, 6, &[], &s(&["sh", "-c", script]));
        t.type_text("-l 'x' Enter");
        t.send_keys(&["Enter"]);
        t.wait_for_text("got<-l 'x' Enter>");
        t.resize(50, 10);
        assert_eq!(t.size(), (50, 10));
        t.type_text("size");
        t.send_keys(&["Enter"]);
        let screen = t.wait_for_text("10 50");
        assert_eq!(rows(&screen).len(), 10, "{}", frame(&screen));
        assert!(!t.alternate_screen());
        t.type_text("quit");
        t.send_keys(&["Enter"]);
        t.wait_exit();
    }

    #[test]
    fn quotes_for_the_shell() {
        assert_eq!(shell_quote("/usr/bin/chat"), "/usr/bin/chat");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(
            shell_command(&s(&["echo", "$HOME", "x"])),
            r"echo '$HOME' x"
        );
    }
}
