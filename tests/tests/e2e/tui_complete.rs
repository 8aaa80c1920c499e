//! Tab completion of command arguments in the full-screen `chat` (tmux, see [`crate::tmux`])
//! against a real chatd: a room seen in `/rooms`, and a user's pinned fingerprint.

use crate::harness::{Chat, ClientHome, Server, exactly, input_row, start_tui, unstamped};
use crate::tmux;
#[test]
fn a_room_seen_in_rooms_completes() {
    if !tmux::available() {
        return;
    }
    let server = Server::start();
    server.add_user("alice", "alice-pw");
    server.add_user("bob", "bob-pw");
    let (alice_home, bob_home) = (ClientHome::new(), ClientHome::new());
    let mut bob = Chat::login(&server, "bob", "bob-pw", &bob_home);
    bob.send("/join design");
    bob.out.expect_contains("#design");
    let alice = start_tui(&server, "alice", "alice-pw", &alice_home, 140, 30);
    // Not known yet: nothing to complete.
    alice.type_text("/join de");
    alice.send_keys(&["Tab"]);
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(input_row(&alice.capture()), "> /join de");
    alice.send_keys(&["C-u"]);
    alice.type_text("/rooms");
    alice.send_keys(&["Enter"]);
    alice.wait_for_text("#design");
    alice.type_text("/join de");
    alice.send_keys(&["Tab"]);
    alice.wait_for("/join de completed to the room", |s| {
        input_row(s) == "> /join design"
    });
    alice.send_keys(&["Enter"]);
    bob.out.expect("alice joined #design", |l| {
        unstamped(l).is_some_and(|t| t.contains("alice joined #design"))
    });
    // Joined: `/part` completes it too, `#` kept when typed.
    alice.type_text("/part #d");
    alice.send_keys(&["Tab"]);
    alice.wait_for("/part #d completed", |s| input_row(s) == "> /part #design");
}

#[test]
fn verify_completes_a_pinned_fingerprint() {
    if !tmux::available() {
        return;
    }
    let server = Server::start();
    server.add_user("alice", "alice-pw");
    server.add_user("bob", "bob-pw");
    let (alice_home, bob_home) = (ClientHome::new(), ClientHome::new());
    let alice = start_tui(&server, "alice", "alice-pw", &alice_home, 140, 30);
    let mut bob = Chat::login(&server, "bob", "bob-pw", &bob_home);
    bob.out.expect_contains("pinned alice's device key SHA256:");
    bob.send("/fingerprint");
    let line = bob.out.expect_contains("-- your device key: SHA256:");
    let at = line.find("SHA256:").unwrap();
    let bob_fp = line[at..at + 7 + 64].to_string();
    bob.send("here");
    bob.out.expect("bob's echo", exactly("<bob> here"));
    // Shown after bob's key was pinned.
    alice.wait_for_text("<bob> here");

    alice.type_text("/verify b");
    alice.send_keys(&["Tab"]);
    alice.wait_for("the user", |s| input_row(s) == "> /verify bob");
    alice.send_keys(&["Tab"]);
    let want = format!("> /verify bob {bob_fp}");
    alice.wait_for("bob's fingerprint", |s| input_row(s) == want);
    alice.send_keys(&["Enter"]);
    alice.wait_for_text("is now verified");
}
