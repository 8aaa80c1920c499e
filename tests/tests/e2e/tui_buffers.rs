//! Buffers in the full-screen `chat` (a real chatd, `chat` in tmux, a plain client as the
//! other user): a buffer per room and whisper partner, Alt-N, `/window` and `/close`, the
//! activity bar with its highlight mark, the nick list of the buffer shown, `/mentions`
//! and `/search`.
//!
//! The screen contract read here, beyond the one in `tui`: the status bar names the buffer
//! shown as `N:name` (`2:#lobby`, `4:bob`) and lists buffers with unseen messages as
//! `act: N:name(COUNT)`, with a `*` right after the count when one of them named the user.

use crate::harness::{
    Chat, ClientHome, Server, start_tui, status_row, type_line, write_chat_config,
};
use crate::tmux::{self, Tmux, frame, rows};

/// chat for `user`, full screen, with `config` as its config.toml, logged in.
fn start(server: &Server, user: &str, home: &ClientHome, config: &str) -> Tmux {
    write_chat_config(home, config);
    start_tui(server, user, &format!("{user}-pw"), home, 120, 30)
}
/// The message view: every row above the status bar, left of the nick list.
fn view(screen: &str) -> String {
    let rows = rows(screen);
    rows[..rows.len().saturating_sub(2)]
        .iter()
        .map(|r| r.split(['│', '┌', '└']).next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The nick list's lines (inside its borders) and its title.
fn nick_list(screen: &str) -> (String, Vec<String>) {
    let mut title = String::new();
    let mut names = Vec::new();
    let rows = rows(screen);
    for row in &rows[..rows.len().saturating_sub(2)] {
        if let Some((_, rest)) = row.split_once('┌') {
            title = rest
                .trim_matches(|c| c == '─' || c == '┐' || c == ' ')
                .to_string();
        } else if let Some((_, rest)) = row.split_once('│') {
            let name = rest.trim_end_matches('│').trim();
            if !name.is_empty() {
                names.push(name.to_string());
            }
        }
    }
    (title, names)
}

#[test]
fn rooms_and_whispers_get_buffers_with_activity_highlights_and_mentions() {
    if !tmux::available() {
        return;
    }
    let server = Server::start();
    server.add_user("alice", "alice-pw");
    server.add_user("bob", "bob-pw");
    let (alice_home, bob_home) = (ClientHome::new(), ClientHome::new());
    let alice = start(
        &server,
        "alice",
        &alice_home,
        "[ui]\nhighlight_words = [\"deploy\"]\naway_refresh_secs = 10\n",
    );
    let mut bob = Chat::login(&server, "bob", "bob-pw", &bob_home);
    bob.out.expect_contains("pinned alice's device key SHA256:");

    // The login shows the default room's buffer, 2 (the server's is 1).
    bob.send("bob is here");
    let screen = alice.wait_for("bob's lobby line in the lobby buffer", |s| {
        view(s).contains("<bob> bob is here")
    });
    assert!(
        status_row(&screen).contains("2:#lobby"),
        "{}",
        frame(&screen)
    );

    // Joining opens the room's buffer, shown at once.
    bob.send("/join ops");
    bob.out.expect_contains("-- now talking in #ops");
    type_line(&alice, "/join ops");
    alice.wait_for("the #ops buffer, shown, listing its two members", |s| {
        let (title, names) = nick_list(s);
        status_row(s).contains("3:#ops") && title == "#ops 2" && names == ["alice", "bob"]
    });
    bob.out.expect_contains("alice joined #ops");
    type_line(&alice, "hello ops");
    bob.out.expect_contains("[#ops] <alice> hello ops");

    // Alt-2 back to the lobby; bob names alice in #ops and whispers: activity, not lines.
    alice.send_keys(&["M-2"]);
    alice.wait_for("the lobby buffer again", |s| {
        status_row(s).contains("2:#lobby") && view(s).contains("<bob> bob is here")
    });
    bob.send("ALICE, time to deploy?");
    let screen = alice.wait_for("#ops in the activity bar, highlighted", |s| {
        status_row(s).contains("act: 3:#ops(1)*")
    });
    assert!(
        !view(&screen).contains("time to deploy"),
        "a line of #ops shows in the lobby buffer:\n{}",
        frame(&screen)
    );
    bob.send("/w alice psst");
    let screen = alice.wait_for("bob's whisper buffer in the activity bar", |s| {
        status_row(s).contains("act: 3:#ops(1)* 4:bob(1)")
    });
    assert!(!view(&screen).contains("psst"), "{}", frame(&screen));
    bob.send("just talk");
    alice.wait_for("a second #ops line, no highlight", |s| {
        status_row(s).contains("3:#ops(2)*")
    });

    // Alt-3: #ops is shown, its lines there and its activity read.
    alice.send_keys(&["M-3"]);
    let screen = alice.wait_for("the #ops buffer with bob's lines", |s| {
        view(s).contains("<bob> ALICE, time to deploy?") && view(s).contains("<bob> just talk")
    });
    assert!(
        status_row(&screen).contains("act: 4:bob(1)") && !status_row(&screen).contains("3:#ops("),
        "{}",
        frame(&screen)
    );
    // Plain text goes to the buffer's room.
    type_line(&alice, "typed in the ops buffer");
    bob.out
        .expect_contains("[#ops] <alice> typed in the ops buffer");

    // /search shows only matching lines; alone, everything again.
    type_line(&alice, "/search DEPLOY");
    let screen = alice.wait_for("the search", |s| {
        status_row(s).contains("search \"DEPLOY\": 1 lines")
    });
    assert!(!view(&screen).contains("just talk"), "{}", frame(&screen));
    type_line(&alice, "/search");
    alice.wait_for("the search cleared", |s| {
        view(s).contains("just talk") && !status_row(s).contains("search")
    });

    // /window 4: the whisper buffer; text typed there is a whisper.
    type_line(&alice, "/window 4");
    alice.wait_for("bob's whisper buffer", |s| {
        let (title, names) = nick_list(s);
        status_row(s).contains("4:bob")
            && view(s).contains("*bob* psst")
            && title == "with bob"
            && names == ["alice", "bob"]
    });
    type_line(&alice, "back at you");
    bob.out.expect_contains("*alice* back at you");

    // /mentions lists the highlight, with its buffer.
    type_line(&alice, "/mentions");
    alice.wait_for("the mention", |s| {
        view(s).contains("1 recent mentions")
            && view(s).contains("#ops ")
            && view(s).contains("<bob> ALICE, time to deploy?")
    });

    // Away users are marked in the nick list (the online list is asked for again).
    bob.send("/away lunch");
    bob.out.expect_contains("you are away: lunch");
    alice.send_keys(&["M-2"]);
    alice.wait_for("bob marked away in the lobby's nick list", |s| {
        let (title, names) = nick_list(s);
        title == "online 2" && names.iter().any(|n| n == "bob (away)")
    });

    // /close: the server buffer stays; a whisper buffer closes; a room buffer parts.
    alice.send_keys(&["M-1"]);
    type_line(&alice, "/close");
    alice.wait_for("the server buffer refusing to close", |s| {
        view(s).contains("!! the server buffer cannot be closed")
    });
    type_line(&alice, "plain text here");
    alice.wait_for("plain text refused in the server buffer", |s| {
        view(s).contains("!! not sent: the server buffer is no conversation")
    });
    alice.send_keys(&["M-Left"]);
    alice.wait_for("Alt-Left wraps round to the last buffer", |s| {
        status_row(s).contains("4:bob")
    });
    type_line(&alice, "/close");
    alice.wait_for("the whisper buffer closed, #ops shown", |s| {
        status_row(s).contains("3:#ops")
    });
    type_line(&alice, "/close");
    bob.out.expect_contains("alice left #ops");
    alice.wait_for("#ops closed, the lobby shown", |s| {
        status_row(s).contains("2:#lobby")
    });
    type_line(&alice, "/window");
    let screen = alice.wait_for("the buffer list", |s| view(s).contains("2 buffers:"));
    assert!(
        view(&screen).contains("1 server") && view(&screen).contains("2 #lobby (shown)"),
        "{}",
        frame(&screen)
    );
}

#[test]
fn plain_mode_says_buffers_are_full_screen_only() {
    let server = Server::start();
    server.add_user("alice", "alice-pw");
    let home = ClientHome::new();
    let mut alice = Chat::login(&server, "alice", "alice-pw", &home);
    for line in ["/window 2", "/close", "/mentions", "/search x"] {
        alice.send(line);
        alice
            .err
            .expect_contains("works in the full-screen interface only");
    }
}
