//! The full-screen `chat` in a terminal (tmux, see [`crate::tmux`]) for the tests that drive
//! it: starting it logged in, typing a line, and reading its status and input rows.

use crate::harness::{ClientHome, Server, bins};
use crate::tmux::{Tmux, rows};

/// `chat --server ADDR --user USER --accept-fingerprint FP --key FILE`: no --plain and no
/// --password-stdin, so on a terminal it asks for the password and goes full screen.
pub fn tui_argv(server: &Server, user: &str, home: &ClientHome) -> Vec<String> {
    let mut argv = vec![
        bins().chat.display().to_string(),
        "--server".to_string(),
        server.server_arg(),
        "--user".to_string(),
        user.to_string(),
        "--accept-fingerprint".to_string(),
        server.fingerprint.clone(),
    ];
    argv.extend(home.key_args(user));
    argv
}

/// Writes `text` as chat's config.toml in `home` (the XDG_CONFIG_HOME its terminal gets).
pub fn write_chat_config(home: &ClientHome, text: &str) {
    let (_, config) = home
        .env()
        .into_iter()
        .find(|(k, _)| k == "XDG_CONFIG_HOME")
        .expect("the home sets XDG_CONFIG_HOME");
    let dir = std::path::Path::new(&config).join("chat");
    std::fs::create_dir_all(&dir).expect("config dir");
    std::fs::write(dir.join("config.toml"), text).expect("config.toml");
}

/// Answers chat's password prompt and waits for the full-screen UI to report the login.
pub fn log_in(t: &Tmux, server: &Server, user: &str, password: &str) {
    t.wait_for_text(&format!("Password for {user}@{}:", server.server_arg()));
    t.type_text(password);
    t.send_keys(&["Enter"]);
    // Only the login notice and the input line here: each test checks what it is about (the
    // status bar in particular), so one mismatch does not hide the rest.
    t.wait_for("the full-screen UI after the login", |s| {
        s.contains(&format!("logged in as {user}")) && is_input_line(input_row(s))
    });
}

/// chat for `user` full screen in a `cols` x `rows` terminal, logged in.
pub fn start_tui(
    server: &Server,
    user: &str,
    password: &str,
    home: &ClientHome,
    cols: u16,
    rows: u16,
) -> Tmux {
    let t = Tmux::start(cols, rows, &home.env(), &tui_argv(server, user, home));
    log_in(&t, server, user, password);
    t
}

/// Types `line` and presses Enter.
pub fn type_line(t: &Tmux, line: &str) {
    t.type_text(line);
    t.send_keys(&["Enter"]);
}

/// The status bar: the second-to-last row.
pub fn status_row(screen: &str) -> &str {
    let rows = rows(screen);
    rows.get(rows.len().wrapping_sub(2)).copied().unwrap_or("")
}

/// The input line: the last row.
pub fn input_row(screen: &str) -> &str {
    rows(screen).last().copied().unwrap_or("")
}

/// Whether `row` is the input line: `> ` and what is typed. Empty, it reads as `>`: tmux
/// keeps apart cells never written and written spaces, and a terminal UI need not write the
/// blank after the prompt onto a fresh (blank) screen.
pub fn is_input_line(row: &str) -> bool {
    let row = row.trim_end();
    row == ">" || row.starts_with("> ")
}
