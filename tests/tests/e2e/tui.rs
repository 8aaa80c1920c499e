//! The full-screen `chat` in a real terminal (tmux, see [`crate::tmux`]) against a real chatd,
//! with plain-mode clients as the other users.
//!
//! The screen contract these tests read: messages at the top, one line per entry
//! (`HH:MM:SS <bob> hello`, `HH:MM:SS -- notice`, ...); at 60 columns and more a bordered box
//! titled `online` on the right listing who is online; the status bar on the second-to-last
//! row; the input line, starting with `> `, on the last row.

use crate::harness::{
    Chat, ClientHome, Server, exactly, input_row, is_input_line, log_in, loopback0, start_tui,
    status_row, test_key, tui_argv, type_line,
};
use crate::tmux::{self, Tmux, frame, rows, shell_command};

/// Below this width the online panel is hidden.
const PANEL_MIN_COLS: usize = 60;

// ---------------------------------------------------------------------------------------------
// Starting chat in a terminal
// ---------------------------------------------------------------------------------------------

/// Waits until the plain client `who` has pinned `peer`'s device key (so it encrypts to it).
fn wait_pinned(who: &mut Chat, peer: &str) {
    who.out
        .expect_contains(&format!("pinned {peer}'s device key SHA256:"));
}

// ---------------------------------------------------------------------------------------------
// Reading the screen
// ---------------------------------------------------------------------------------------------

/// Whether `word` is a whole word of `text` (so `connected` is not found in `disconnected`).
fn has_word(text: &str, word: &str) -> bool {
    text.split(|c: char| !c.is_alphanumeric())
        .any(|w| w == word)
}

/// `key SHA256:` and the first 8 hex digits of `user`'s test device key.
fn key_tag(user: &str) -> String {
    let fp = test_key(user).fingerprint().to_string();
    format!("key {}", &fp[.."SHA256:".len() + 8])
}

/// The status bar names the account, says `connected`, the TLS version and our key.
fn status_connected(screen: &str, server: &Server, user: &str) -> bool {
    let status = status_row(screen);
    status.contains(&format!("{user}@{}", server.server_arg()))
        && has_word(status, "connected")
        && status.contains("TLSv1.3")
        && status.contains(&key_tag(user))
}

/// Whether `row[..at]` ends with an `HH:MM:SS ` stamp.
fn stamped_before(row: &str, at: usize) -> bool {
    let b = row.as_bytes();
    at >= 9
        && at <= b.len()
        && b[at - 1] == b' '
        && b[at - 4] == b':'
        && b[at - 7] == b':'
        && [2, 3, 5, 6, 8, 9]
            .iter()
            .all(|i| b[at - i].is_ascii_digit())
}

/// How many rows show the entry `HH:MM:SS text`.
fn entry_count(screen: &str, text: &str) -> usize {
    rows(screen)
        .iter()
        .filter(|row| row.match_indices(text).any(|(i, _)| stamped_before(row, i)))
        .count()
}

/// A notice (`HH:MM:SS -- ...`) containing all of `words`; it may wrap onto the next row.
fn has_notice(screen: &str, words: &[&str]) -> bool {
    has_entry_line(screen, "-- ", words)
}

/// A notice or a warning (`HH:MM:SS !! ...`) containing all of `words`.
fn has_notice_or_warning(screen: &str, words: &[&str]) -> bool {
    has_entry_line(screen, "-- ", words) || has_entry_line(screen, "!! ", words)
}

/// An entry `HH:MM:SS {mark}...` containing all of `words`, wrapped onto the next row or not
/// (a next row that starts with a stamp is the next entry, not a continuation).
fn has_entry_line(screen: &str, mark: &str, words: &[&str]) -> bool {
    let rows = rows(screen);
    (0..rows.len()).any(|i| {
        let starts = rows[i]
            .match_indices(mark)
            .any(|(at, _)| stamped_before(rows[i], at));
        let next = rows.get(i + 1).copied().filter(|r| !stamped_before(r, 9));
        let text = format!("{} {}", rows[i], next.unwrap_or(""));
        starts && words.iter().all(|w| text.contains(w))
    })
}

const TOP_LEFT: [char; 4] = ['┌', '╭', '╔', '┏'];
const VERTICAL: [char; 3] = ['│', '║', '┃'];
const HORIZONTAL: [char; 3] = ['─', '═', '━'];

/// The online panel: its left border column and the lines listed in it.
struct Panel {
    left: usize,
    lines: Vec<String>,
}

impl Panel {
    /// Whether `name` is one of the listed lines (as a word: a status mark may go with it).
    fn lists(&self, name: &str) -> bool {
        self.lines
            .iter()
            .any(|l| l.split_whitespace().any(|w| w == name))
    }
}

/// Finds the bordered box titled `online`, if shown.
fn panel(screen: &str) -> Option<Panel> {
    let grid: Vec<Vec<char>> = rows(screen).iter().map(|r| r.chars().collect()).collect();
    for (y, row) in grid.iter().enumerate() {
        let text: String = row.iter().collect();
        let Some(byte) = text.rfind("online") else {
            continue;
        };
        let title = text[..byte].chars().count();
        // The top border: a corner, then border line (or the title's padding), then the title.
        let Some(left) = row[..title].iter().rposition(|c| TOP_LEFT.contains(c)) else {
            continue;
        };
        if !row[left + 1..title]
            .iter()
            .all(|c| HORIZONTAL.contains(c) || *c == ' ')
        {
            continue;
        }
        let mut lines = Vec::new();
        for r in &grid[y + 1..] {
            if !r.get(left).is_some_and(|c| VERTICAL.contains(c)) {
                break; // the bottom border
            }
            let inner: String = r[left + 1..]
                .iter()
                .take_while(|c| !VERTICAL.contains(c))
                .collect();
            if !inner.trim().is_empty() {
                lines.push(inner.trim().to_string());
            }
        }
        return Some(Panel { left, lines });
    }
    None
}

/// The whole layout at `cols` x `rows`: the right number of rows, the status bar on the
/// second-to-last row, the input line last, `entry` shown exactly once, and the panel listing
/// `online` on the right half exactly when the terminal is wide enough.
fn laid_out(screen: &str, cols: usize, rows: usize, user: &str, entry: &str, online: &str) -> bool {
    let grid = tmux::rows(screen);
    let panel = panel(screen);
    let panel_ok = if cols >= PANEL_MIN_COLS {
        panel.is_some_and(|p| p.left >= cols / 2 && p.lists(online))
    } else {
        panel.is_none()
    };
    grid.len() == rows
        && grid.iter().all(|r| r.chars().count() <= cols)
        && status_row(screen).contains(&format!("{user}@"))
        && is_input_line(input_row(screen))
        && entry_count(screen, entry) == 1
        && panel_ok
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[test]
fn tui_shows_a_message_from_a_plain_client() {
    if !tmux::available() {
        return;
    }
    let server = Server::start();
    server.add_user("alice", "alice-pw");
    server.add_user("bob", "bob-pw");
    let (alice_home, bob_home) = (ClientHome::new(), ClientHome::new());
    let alice = start_tui(&server, "alice", "alice-pw", &alice_home, 100, 30);
    assert!(
        alice.alternate_screen(),
        "the full-screen UI is not on the alternate screen; {}",
        alice.describe()
    );
    let mut bob = Chat::login(&server, "bob", "bob-pw", &bob_home);
    wait_pinned(&mut bob, "alice");

    bob.send("hello from bob");
    let screen = alice.wait_for("bob's message", |s| {
        entry_count(s, "<bob> hello from bob") == 1
    });
    assert!(
        status_connected(&screen, &server, "alice"),
        "status bar (row {}) lacks alice@{}, connected, TLSv1.3 or {}:\n{}",
        rows(&screen).len() - 2,
        server.server_arg(),
        key_tag("alice"),
        frame(&screen)
    );
    alice.wait_for("bob in the online panel on the right", |s| {
        panel(s).is_some_and(|p| p.left >= 50 && p.lists("bob") && p.lists("alice"))
    });

    // bob's message came after his device key, so alice encrypts to him by now.
    type_line(&alice, "reply");
    bob.out.expect("alice's reply", exactly("<alice> reply"));
    alice.wait_for("alice's own message", |s| {
        entry_count(s, "<alice> reply") == 1 && input_row(s).trim_end() == ">"
    });
}

#[test]
fn tab_completes_a_name_and_whispers() {
    if !tmux::available() {
        return;
    }
    let server = Server::start();
    for user in ["alice", "bob", "carol"] {
        server.add_user(user, &format!("{user}-pw"));
    }
    let homes = [ClientHome::new(), ClientHome::new(), ClientHome::new()];
    let alice = start_tui(&server, "alice", "alice-pw", &homes[0], 100, 30);
    let mut bob = Chat::login(&server, "bob", "bob-pw", &homes[1]);
    wait_pinned(&mut bob, "alice");
    let mut carol = Chat::login(&server, "carol", "carol-pw", &homes[2]);
    wait_pinned(&mut carol, "alice");
    // Each message comes after its sender's device key: once alice shows both, she has pinned
    // both and encrypts to them.
    bob.send("bob is here");
    carol.send("carol is here");
    alice.wait_for("bob's and carol's messages", |s| {
        entry_count(s, "<bob> bob is here") == 1 && entry_count(s, "<carol> carol is here") == 1
    });

    alice.type_text("/w");
    alice.send_keys(&["Tab"]);
    alice.wait_for("/w completed to /whisper", |s| {
        input_row(s).trim_end() == "> /whisper"
    });
    alice.type_text("bo");
    alice.send_keys(&["Tab"]);
    alice.wait_for("bo completed to bob", |s| {
        input_row(s).trim_end() == "> /whisper bob"
    });
    // The completion ends with a space: what is typed next is the message.
    alice.type_text("psst");
    let screen = alice.wait_for("the whisper typed after the completion", |s| {
        input_row(s).trim_end() == "> /whisper bob psst"
    });
    assert!(
        status_row(&screen).contains("to bob: unverified"),
        "the status bar does not say bob's key is unverified:\n{}",
        frame(&screen)
    );
    alice.send_keys(&["Enter"]);
    bob.out.expect("alice's whisper", exactly("*alice* psst"));
    alice.wait_for("alice's copy of the whisper", |s| {
        entry_count(s, "-> *bob* psst") == 1
    });

    // A broadcast after the whisper: once carol has it, she would have had the whisper too.
    type_line(&alice, "after the whisper");
    carol
        .out
        .expect("alice's broadcast", exactly("<alice> after the whisper"));
    assert!(
        !carol.out.all().iter().any(|l| l.contains("psst")),
        "carol saw alice's whisper to bob:\n{}",
        carol.out.dump()
    );
}

#[test]
fn resize_keeps_the_screen_intact() {
    if !tmux::available() {
        return;
    }
    let server = Server::start();
    server.add_user("alice", "alice-pw");
    server.add_user("bob", "bob-pw");
    let (alice_home, bob_home) = (ClientHome::new(), ClientHome::new());
    let alice = start_tui(&server, "alice", "alice-pw", &alice_home, 100, 30);
    let mut bob = Chat::login(&server, "bob", "bob-pw", &bob_home);
    wait_pinned(&mut bob, "alice");
    let entry = "<bob> hello from bob";
    bob.send("hello from bob");
    alice.wait_for("the 100x30 layout with bob's message", |s| {
        laid_out(s, 100, 30, "alice", entry, "bob")
    });

    for (cols, rows) in [(50u16, 15u16), (120, 40)] {
        alice.resize(cols, rows);
        let (c, r) = (usize::from(cols), usize::from(rows));
        alice.wait_for(&format!("the {cols}x{rows} layout"), |s| {
            laid_out(s, c, r, "alice", entry, "bob")
        });
    }
    // Wide again: the whole status bar is back.
    let screen = alice.capture();
    assert!(
        status_connected(&screen, &server, "alice"),
        "status bar after growing:\n{}",
        frame(&screen)
    );
}

/// How the user leaves.
#[derive(Debug, Clone, Copy)]
enum Leave {
    Quit,
    CtrlC,
}

#[test]
fn quit_restores_the_terminal() {
    if !tmux::available() {
        return;
    }
    let server = Server::start();
    server.add_user("alice", "alice-pw");
    let home = ClientHome::new();
    for how in [Leave::Quit, Leave::CtrlC] {
        // After chat: its exit status and the terminal modes it left behind.
        let script = format!(
            "{}; echo \"EXIT=$?\"; stty -a; echo END-OF-STTY; sleep 600",
            shell_command(&tui_argv(&server, "alice", &home))
        );
        let argv: Vec<String> = ["sh", "-c", &script].map(String::from).to_vec();
        let t = Tmux::start(100, 30, &home.env(), &argv);
        log_in(&t, &server, "alice", "alice-pw");
        assert!(
            t.alternate_screen(),
            "{how:?}: the full-screen UI is not on the alternate screen; {}",
            t.describe()
        );
        match how {
            Leave::Quit => type_line(&t, "/quit"),
            Leave::CtrlC => t.send_keys(&["C-c"]),
        }
        let screen = t.wait_for_joined(&format!("{how:?}: chat's exit and stty -a"), |s| {
            s.contains("END-OF-STTY")
        });
        let words: Vec<&str> = screen
            .split(|c: char| c.is_whitespace() || c == ';')
            .collect();
        assert!(
            words.contains(&"EXIT=0"),
            "{how:?}: chat did not exit with status 0:\n{}",
            frame(&screen)
        );
        for mode in ["icanon", "echo"] {
            assert!(
                words.contains(&mode) && !words.contains(&format!("-{mode}").as_str()),
                "{how:?}: chat left the terminal without {mode} (raw mode still on):\n{}",
                frame(&screen)
            );
        }
        assert!(
            !t.alternate_screen(),
            "{how:?}: chat left the terminal on the alternate screen:\n{}",
            frame(&screen)
        );
        assert!(
            !screen.contains("TLSv1.3") && !screen.contains("logged in as alice"),
            "{how:?}: the full-screen UI is still on the screen:\n{}",
            frame(&screen)
        );
    }
}

#[test]
fn reconnects_after_the_server_restarts_and_keeps_the_input() {
    if !tmux::available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start_in(dir.path(), loopback0());
    let addr = server.addr;
    server.add_user("alice", "alice-pw");
    server.add_user("bob", "bob-pw");
    let (alice_home, bob_home) = (ClientHome::new(), ClientHome::new());
    let alice = start_tui(&server, "alice", "alice-pw", &alice_home, 100, 30);

    alice.type_text("draft text");
    alice.wait_for("the draft in the input line", |s| {
        input_row(s).trim_end() == "> draft text"
    });
    assert!(server.stop_sigterm().success(), "chatd after SIGTERM");
    // The contract says a notice (`-- `); a warning (`!! `) is let through here so the rest
    // of the test still runs, and reported at the end.
    let lost = ["connection lost", "reconnecting"];
    let lost_screen = alice.wait_for("a connection lost ... reconnecting notice", |s| {
        has_notice_or_warning(s, &lost) && input_row(s).trim_end() == "> draft text"
    });

    // Same data dir, same port: the same server to chat.
    let server = Server::start_in(dir.path(), addr);
    let screen = alice.wait_for("a reconnected notice", |s| has_notice(s, &["reconnected"]));
    assert_eq!(
        input_row(&screen).trim_end(),
        "> draft text",
        "the input line lost the draft:\n{}",
        frame(&screen)
    );
    alice.wait_for("connected again in the status bar", |s| {
        status_connected(s, &server, "alice")
    });

    let mut bob = Chat::login(&server, "bob", "bob-pw", &bob_home);
    wait_pinned(&mut bob, "alice");
    // After bob's device key: once alice shows this, she encrypts to bob.
    bob.send("bob is back");
    alice.wait_for("bob's message", |s| {
        entry_count(s, "<bob> bob is back") == 1
    });
    alice.send_keys(&["Enter"]);
    bob.out
        .expect("alice's draft, sent", exactly("<alice> draft text"));
    assert!(
        has_notice(&lost_screen, &lost),
        "the connection loss was not shown as a notice (`HH:MM:SS -- ...connection lost... \
         reconnecting...`):\n{}",
        frame(&lost_screen)
    );
}

#[test]
fn a_kick_sticks_chat_says_why_and_does_not_log_in_again() {
    if !tmux::available() {
        return;
    }
    let server = Server::start();
    server.add_user("alice", "alice-pw");
    let home = ClientHome::new();
    // Wide enough for the explanation on one line.
    let alice = start_tui(&server, "alice", "alice-pw", &home, 180, 30);
    let sessions = || {
        let who = server.ctl(&["--json", "who"], None).json();
        who["sessions"].as_array().map_or(0, Vec::len)
    };
    assert_eq!(sessions(), 1);

    server
        .ctl(&["kick", "alice", "--reason", "spam"], None)
        .assert_ok();
    alice.wait_for_joined("why, and how to come back", |s| {
        s.contains("kicked by administrator: spam")
            && s.contains("does not reconnect on its own: run chat again to come back")
    });
    // chat's first reconnection try comes 1 s after a loss (then 2 s, 4 s, ...): polled over
    // four times that, alice's session never comes back.
    for _ in 0..16 {
        assert_eq!(sessions(), 0, "chat logged in again after a kick");
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    let screen = alice.capture();
    assert!(
        has_word(status_row(&screen), "disconnected")
            && !status_row(&screen).contains("reconnecting"),
        "the status bar should say disconnected:\n{}",
        frame(&screen)
    );
    assert_eq!(
        server
            .log
            .all()
            .iter()
            .filter(|l| l.contains("logged in"))
            .count(),
        1,
        "one login only"
    );
    alice.type_text("/quit");
    alice.send_keys(&["Enter"]);
    alice.wait_exit();
}

#[test]
fn a_ban_ends_the_session_says_until_when_and_chat_does_not_log_in_again() {
    if !tmux::available() {
        return;
    }
    let server = Server::start();
    server.add_user("alice", "alice-pw");
    let home = ClientHome::new();
    let alice = start_tui(&server, "alice", "alice-pw", &home, 180, 30);
    server
        .ctl(&["kick", "--ban", "1h", "alice"], None)
        .assert_ok();
    alice.wait_for_joined("the ban's end, and no reconnecting", |s| {
        s.contains("kicked by administrator: banned until ")
            && s.contains("does not reconnect on its own")
    });
    // chat's first reconnection try would come 1 s after the loss: none within 3 s.
    for _ in 0..12 {
        let who = server.ctl(&["--json", "who"], None).json();
        assert_eq!(
            who["sessions"].as_array().map_or(0, Vec::len),
            0,
            "chat logged in again after a ban"
        );
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    let screen = alice.capture();
    assert!(
        has_word(status_row(&screen), "disconnected"),
        "the status bar should say disconnected:\n{}",
        frame(&screen)
    );
    alice.type_text("/quit");
    alice.send_keys(&["Enter"]);
    alice.wait_exit();
}

/// The screen readers above, on a made-up screen in the contract's layout.
#[test]
fn screen_readers_read_the_contract_layout() {
    let screen = [
        "12:00:01 -- logged in as alice; online: alice  ┌online──────┐",
        "12:00:02 <bob> hello from bob                  │alice       │",
        "12:00:03 -- connection lost; reconnecting in   │● bob       │",
        "1s                                             └────────────┘",
        " alice@127.0.0.1:4000 connected TLSv1.3 key SHA256:0123abcd ",
        "> draft text",
    ]
    .join("\n");
    assert_eq!(status_row(&screen).trim(), rows(&screen)[4].trim());
    assert_eq!(input_row(&screen), "> draft text");
    assert!(is_input_line(input_row(&screen)) && is_input_line("> ") && is_input_line(">"));
    assert!(!is_input_line(">x") && !is_input_line(" alice@"));
    assert_eq!(entry_count(&screen, "<bob> hello from bob"), 1);
    assert_eq!(
        entry_count(&screen, "hello from bob"),
        0,
        "not after a stamp"
    );
    assert!(has_notice(&screen, &["connection lost", "reconnecting"]));
    assert!(!has_notice(&screen, &["reconnected"]));
    assert!(has_notice_or_warning(
        &screen.replace("12:00:03 --", "12:00:03 !!"),
        &["connection lost"]
    ));
    assert!(!has_notice(
        &screen.replace("12:00:03 --", "12:00:03 !!"),
        &["connection lost"]
    ));
    // A warning right after a notice is not that notice's continuation.
    let warned = screen
        .replace(
            "12:00:02 <bob> hello from bob  ",
            "12:00:02 -- something else   ",
        )
        .replace("12:00:03 --", "12:00:03 !!");
    assert!(has_notice(&warned, &["something else"]));
    assert!(!has_notice(&warned, &["connection lost"]));
    assert!(has_word(status_row(&screen), "connected"));
    assert!(!has_word("x disconnected y", "connected"));
    let p = panel(&screen).expect("the panel");
    assert_eq!(p.left, 47);
    assert!(p.lists("alice") && p.lists("bob") && !p.lists("carol"));
    assert!(panel(&rows(&screen)[..3].join("\n").replace('┌', " ")).is_none());
}

/// `/join ROOM` and a line pasted right behind it (one event, so the line is typed before any
/// answer can come): the line goes to the joined room, or, after a refused join, nowhere.
#[test]
fn lines_pasted_behind_join_wait_for_its_answer() {
    if !tmux::available() {
        return;
    }
    let server = Server::start();
    for user in ["alice", "bob", "carol"] {
        server.add_user(user, &format!("{user}-pw"));
    }
    let homes = [ClientHome::new(), ClientHome::new(), ClientHome::new()];
    let alice = start_tui(&server, "alice", "alice-pw", &homes[0], 100, 30);
    let mut bob = Chat::login(&server, "bob", "bob-pw", &homes[1]);
    wait_pinned(&mut bob, "alice");
    let mut carol = Chat::login(&server, "carol", "carol-pw", &homes[2]);
    wait_pinned(&mut carol, "alice");
    bob.send("/join ops");
    bob.out.expect_contains("-- now talking in #ops");
    bob.send("/join secret private");
    bob.out.expect_contains("-- now talking in #secret");
    // bob's line comes after his key: once alice shows it, she encrypts to him.
    bob.send("/join lobby\nbob is here");
    alice.wait_for("bob's message", |s| {
        entry_count(s, "<bob> bob is here") == 1
    });

    alice.paste("/join ops\nfor ops only\n");
    bob.out
        .expect("the line, in #ops", exactly("[#ops] <alice> for ops only"));
    alice.wait_for("the join and alice's own copy", |s| {
        has_notice(s, &["now", "talking", "#ops"]) && entry_count(s, "<alice> for ops only") == 1
    });

    alice.paste("/join secret\nnever sent\n");
    alice.wait_for("the wait, the refusal and what was dropped", |s| {
        has_notice(s, &["waiting", "/join", "#secret"])
            && has_notice_or_warning(s, &["#secret", "invite-only"])
            && has_notice_or_warning(s, &["not", "in", "#secret:", "1", "line", "not", "sent"])
    });
    type_line(&alice, "/join lobby");
    type_line(&alice, "to the lobby");
    carol
        .out
        .expect("the lobby line", exactly("<alice> to the lobby"));
    bob.out
        .expect("the lobby line", exactly("<alice> to the lobby"));
    for (who, out) in [("bob", bob.out.all()), ("carol", carol.out.all())] {
        assert!(
            !out.iter().any(|l| l.contains("never sent")),
            "{who} got the dropped line: {out:?}"
        );
    }
    assert!(
        !carol.out.all().iter().any(|l| l.contains("for ops only")),
        "carol is not in #ops:\n{}",
        carol.out.dump()
    );
}
