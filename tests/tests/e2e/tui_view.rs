//! How the full-screen `chat` draws, in a real terminal (tmux) against a real chatd: a long
//! message wraps at words with continuation rows indented under its text, the status bar keeps
//! the room at 60 columns, and mouse capture follows `[ui] mouse` and the Alt-m key (read from
//! tmux's own view of the pane's mouse mode).

use crate::harness::{Chat, ClientHome, Server, start_tui, status_row, write_chat_config};
use crate::tmux::{self, Tmux, frame, rows};

/// `HH:MM:SS <bob> `: where bob's text starts, and where its continuation rows start.
const INDENT: usize = "12:34:56 <bob> ".len();
/// The pane's mouse mode as tmux sees it: "1" once the program asked for any-motion
/// reporting (crossterm's EnableMouseCapture), "0" with mouse reporting off.
fn mouse_flag(t: &Tmux) -> String {
    t.query("#{mouse_any_flag}")
}

fn wait_mouse(t: &Tmux, want: &str) {
    let deadline = std::time::Instant::now() + crate::harness::TIMEOUT;
    while mouse_flag(t) != want {
        assert!(
            std::time::Instant::now() < deadline,
            "the mouse flag stays {} (want {want}); {}\n{}",
            mouse_flag(t),
            t.describe(),
            frame(&t.capture())
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn a_long_message_wraps_at_words_under_its_text_at_60_columns() {
    if !tmux::available() {
        return;
    }
    let server = Server::start();
    server.add_user("alice", "alice-pw");
    server.add_user("bob", "bob-pw");
    let (alice_home, bob_home) = (ClientHome::new(), ClientHome::new());
    let alice = start_tui(&server, "alice", "alice-pw", &alice_home, 60, 20);
    let mut bob = Chat::login(&server, "bob", "bob-pw", &bob_home);
    bob.out.expect_contains("pinned alice's device key SHA256:");
    let long = "wrapping should happen between words and never inside them, \
                with every later row starting under the text";
    bob.send(long);
    // "text" is the message's last word and nowhere else on the screen.
    let screen = alice.wait_for("bob's whole message", |s| {
        s.contains("<bob> wrapping") && s.contains("text")
    });
    let grid = rows(&screen);
    let first = grid
        .iter()
        .position(|r| r.contains("<bob> wrapping"))
        .expect("bob's first row");
    assert_eq!(
        grid[first].find("<bob>"),
        Some("12:34:56 ".len()),
        "{}",
        frame(&screen)
    );
    // At 60 columns the online panel (18 columns) is on the right: the text is left of it.
    let view = |r: &str| -> String { r.chars().take(60 - 18).collect() };
    let mut words: Vec<String> = view(grid[first])[INDENT..]
        .split_whitespace()
        .map(String::from)
        .collect();
    let mut continued = 0;
    for r in &grid[first + 1..grid.len() - 2] {
        let r = view(r);
        if r.trim().is_empty() {
            break;
        }
        // Indented by exactly the stamp and the nick.
        assert!(
            r.starts_with(&" ".repeat(INDENT)) && !r[INDENT..].starts_with(' '),
            "row {r:?} is not indented under the text:\n{}",
            frame(&screen)
        );
        words.extend(r.split_whitespace().map(String::from));
        continued += 1;
    }
    assert!(continued >= 2, "no wrapping:\n{}", frame(&screen));
    // Every word whole, in order: no word was cut at a row's end.
    assert_eq!(
        words,
        long.split_whitespace().collect::<Vec<_>>(),
        "{}",
        frame(&screen)
    );
    // The room stays on the status bar at this width, and the server gave way first.
    let status = status_row(&screen);
    assert!(status.contains("2:#lobby"), "{}", frame(&screen));
    assert!(!status.contains("TLSv1.3"), "{}", frame(&screen));
}

#[test]
fn mouse_false_starts_without_capture_and_alt_m_toggles_it() {
    if !tmux::available() {
        return;
    }
    let server = Server::start();
    server.add_user("alice", "alice-pw");
    server.add_user("carol", "carol-pw");
    // Default: captured, as before the setting existed.
    let home = ClientHome::new();
    let t = start_tui(&server, "alice", "alice-pw", &home, 100, 20);
    wait_mouse(&t, "1");

    let home = ClientHome::new();
    write_chat_config(&home, "[ui]\nmouse = false\n");
    let t = start_tui(&server, "carol", "carol-pw", &home, 100, 20);
    assert_eq!(mouse_flag(&t), "0", "{}", frame(&t.capture()));
    assert_eq!(t.query("#{mouse_standard_flag}#{mouse_button_flag}"), "00");
    t.send_keys(&["M-m"]);
    t.wait_for_text("-- mouse on");
    wait_mouse(&t, "1");
    t.send_keys(&["M-m"]);
    t.wait_for_text("-- mouse off");
    wait_mouse(&t, "0");
    // Alt-m is not typed into the input line.
    let screen = t.capture();
    assert_eq!(
        rows(&screen).last().map(|r| r.trim_end()),
        Some(">"),
        "{}",
        frame(&screen)
    );
}
