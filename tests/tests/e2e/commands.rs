//! Server commands through a real chatd: the built-ins (away, whois, motd, ping, announce,
//! kick, chatctl say) with their denied and bad-argument paths, and external plugins,
//! including each way a plugin can fail.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::harness::{Chat, ClientHome, Raw, Server, bins, exactly, test_key};

fn notice(raw: &mut Raw) -> String {
    let frame = raw.recv_type("notice");
    frame["text"].as_str().unwrap_or_default().to_string()
}

fn add_admin(server: &Server, name: &str, password: &str) {
    server
        .ctl(
            &["user", "add", name, "--admin", "--password-stdin"],
            Some(&format!("{password}\n")),
        )
        .assert_ok();
}

#[test]
fn away_shows_in_list_whois_and_to_whisperers() {
    let server = Server::start();
    server.add_user("alice", "pw-a");
    server.add_user("bob", "pw-b");
    let mut alice = Raw::login(&server, "alice", "pw-a");
    let mut bob = Raw::login(&server, "bob", "pw-b");
    alice.recv_type("presence");

    alice.command("away", "at lunch \u{1b}[2J");
    assert_eq!(notice(&mut alice), "you are away: at lunch [2J");
    bob.command("list", "");
    assert_eq!(
        bob.recv(),
        json!({"type":"users","users":[
            {"user":"alice","sessions":1,"away":"at lunch [2J"},
            {"user":"bob","sessions":1}]})
    );
    // A whisper still goes through; the whisperer learns she is away.
    let psst = bob.whisper("alice", "psst");
    bob.expect_envelope("bob", &psst);
    assert_eq!(notice(&mut bob), "alice is away: at lunch [2J");
    alice.expect_envelope("bob", &psst);

    bob.command("whois", "alice");
    let fp = test_key("alice").fingerprint().to_string();
    assert_eq!(
        bob.recv(),
        json!({"type":"whois","user":"alice","sessions":1,"away":"at lunch [2J","admin":false,
               "devices":[{"fingerprint":fp,"online":true}],"rooms":["lobby"]})
    );
    // Over 200 characters is refused; /away alone clears it.
    alice.command("away", &"x".repeat(201));
    assert_eq!(alice.expect_error("bad_arguments"), "usage: /away [TEXT]");
    alice.command("away", "");
    assert_eq!(notice(&mut alice), "you are back");
    bob.command("list", "");
    assert_eq!(bob.recv()["users"][0], json!({"user":"alice","sessions":1}));
    // It ends with the session: a new login is not away.
    drop(alice);
    bob.recv_type("presence");
    let _alice = Raw::login(&server, "alice", "pw-a");
    bob.recv_type("presence");
    bob.command("whois", "alice");
    assert!(bob.recv_type("whois").get("away").is_none());
}

#[test]
fn whois_of_offline_unknown_and_bad_names() {
    let server = Server::start();
    server.add_user("alice", "pw-a");
    add_admin(&server, "root", "pw-r");
    server.add_user("never", "pw-n");
    let mut r = Raw::login(&server, "root", "pw-r");
    r.send(json!({"type":"quit"}));
    r.expect_bye("quit");
    let mut alice = Raw::login(&server, "alice", "pw-a");
    alice.command("whois", "root");
    let fp = test_key("root").fingerprint().to_string();
    assert_eq!(
        alice.recv(),
        json!({"type":"whois","user":"root","sessions":0,"admin":true,
               "devices":[{"fingerprint":fp,"online":false}],"rooms":["lobby"]})
    );
    alice.command("whois", "never");
    assert_eq!(alice.recv_type("whois")["devices"], json!([]));
    alice.command("whois", "zed");
    assert_eq!(alice.expect_error("no_such_user"), "no such user: zed");
    for bad in ["", "two names", "Bad!"] {
        alice.command("whois", bad);
        assert_eq!(alice.expect_error("bad_arguments"), "usage: /whois USER");
    }
}

#[test]
fn motd_ping_and_their_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::with_toml(dir.path(), "motd = \"welcome to the team\"", "");
    server.add_user("alice", "pw-a");
    // The message of the day follows login; /motd shows it again; /ping answers.
    let mut alice = Raw::login(&server, "alice", "pw-a");
    assert_eq!(
        notice(&mut alice),
        "message of the day: welcome to the team"
    );
    alice.command("motd", "");
    assert_eq!(
        notice(&mut alice),
        "message of the day: welcome to the team"
    );
    alice.command("ping", "");
    assert_eq!(notice(&mut alice), "pong");

    let plain = Server::start();
    plain.add_user("bob", "pw-b");
    let mut bob = Raw::login(&plain, "bob", "pw-b");
    bob.command("motd", "");
    assert_eq!(notice(&mut bob), "there is no message of the day");
}

#[test]
fn announce_and_disconnect_are_for_admins() {
    let server = Server::start();
    add_admin(&server, "root", "pw-r");
    server.add_user("alice", "pw-a");
    server.add_user("bob", "pw-b");
    let mut root = Raw::login(&server, "root", "pw-r");
    let mut alice = Raw::login(&server, "alice", "pw-a");
    let mut bob = Raw::login(&server, "bob", "pw-b");
    root.recv_type("presence");
    root.recv_type("presence");
    alice.recv_type("presence");

    // A user is refused, clearly, and nothing happens to anyone.
    alice.command("announce", "free pizza");
    assert_eq!(
        alice.expect_error("forbidden"),
        "/announce is for administrators"
    );
    alice.command("disconnect", "bob");
    assert_eq!(
        alice.expect_error("forbidden"),
        "/disconnect is for administrators"
    );
    bob.sync(1);

    root.command("announce", "");
    assert_eq!(root.expect_error("bad_arguments"), "usage: /announce TEXT");
    root.command("announce", "maintenance at 18:00");
    for c in [&mut root, &mut alice, &mut bob] {
        assert_eq!(notice(c), "announcement from root: maintenance at 18:00");
    }
    // chatctl say: the same, from the control socket.
    let out = server.ctl(&["say", "back", "online"], None);
    out.assert_ok();
    assert_eq!(out.stdout, "announced to 3 session(s)\n");
    for c in [&mut root, &mut alice, &mut bob] {
        assert_eq!(notice(c), "announcement: back online");
    }

    root.command("disconnect", "Bad!");
    assert_eq!(
        root.expect_error("bad_arguments"),
        "usage: /disconnect USER [REASON]"
    );
    root.command("disconnect", "zed");
    assert_eq!(notice(&mut root), "zed is not online");
    root.command("disconnect", "bob spamming the room");
    assert_eq!(notice(&mut root), "bob disconnected (1 session(s) ended)");
    bob.expect_bye("kicked by administrator: spamming the room");
    let leave = alice.recv_type("presence");
    assert_eq!(
        leave["reason"],
        "kicked by administrator: spamming the room"
    );
}

/// Writes an executable shell script `name` into `dir`.
fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn plugin(name: &str, exec: &Path, extra: &str) -> String {
    format!("[[plugins]]\nname = {name:?}\nexec = {exec:?}\nusage = \"ARGS\"\n{extra}\n")
}

#[test]
fn plugins_get_json_and_every_failure_is_clear() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    let seen = p.join("request.json");
    let env_seen = p.join("env.txt");
    let mask_seen = p.join("sigblk.txt");
    let mut config = String::new();
    config += &plugin(
        "echo",
        &script(
            p,
            "echo.sh",
            &format!(
                "cat > {seen:?}\nenv > {env_seen:?}\n\
                 while read -r k v; do [ \"$k\" = SigBlk: ] && printf '%s' \"$v\" > {mask_seen:?}; done < /proc/$$/status\n\
                 printf '%s' '{{\"text\":\"got it\"}}'"
            ),
        ),
        "",
    );
    config += &plugin(
        "slow",
        &script(p, "slow.sh", "sleep 30 & sleep 30"),
        "timeout_ms = 300",
    );
    config += &plugin("crash", &script(p, "crash.sh", "echo oops >&2; exit 3"), "");
    config += &plugin(
        "huge",
        &script(p, "huge.sh", "exec yes"),
        "max_output_bytes = 1000",
    );
    config += &plugin("junk", &script(p, "junk.sh", "echo 'not json'"), "");
    config += &plugin("gone", &p.join("no-such-program"), "");
    config += &plugin(
        "secret",
        &script(p, "secret.sh", "echo '{\"text\":\"s\"}'"),
        "admin_only = true",
    );
    config += &plugin("dice", &bins().plugin_dice, "allow_room_reply = true");
    config += &plugin(
        "uptime",
        &bins().plugin_uptime,
        "help = \"how long the machine has been up\"",
    );
    let mut server = Server::with_toml(p, "", &config);
    server.add_user("alice", "pw-a");
    server.add_user("bob", "pw-b");
    let mut alice = Raw::login(&server, "alice", "pw-a");
    let mut bob = Raw::login(&server, "bob", "pw-b");
    alice.recv_type("presence");

    // The request is JSON on stdin; arguments stay data, never a command line.
    alice.command("echo", "Paris; rm -rf / $(id)");
    assert_eq!(notice(&mut alice), "got it");
    let request: Value = serde_json::from_str(&std::fs::read_to_string(&seen).unwrap()).unwrap();
    assert_eq!(
        request,
        json!({"version":1,"command":"echo","args":"Paris; rm -rf / $(id)","user":"alice",
               "role":"user","room":null,"server":format!("chatd/{}", env!("CARGO_PKG_VERSION"))})
    );
    // A cleared environment: nothing of chatd's leaks (the test sets HOME and RUST_LOG).
    let env = std::fs::read_to_string(&env_seen).unwrap();
    assert!(env.contains("CHATD_PLUGIN=echo"), "{env}");
    assert!(!env.contains("HOME=") && !env.contains("RUST_LOG"), "{env}");
    // chatd's threads block SIGHUP, SIGTERM and SIGINT until its handlers exist; a plugin
    // inherits no blocked signal. (Read by the shell's builtins, not a child it forks: a
    // shell may block signals around a fork.)
    let mask = std::fs::read_to_string(&mask_seen).unwrap();
    assert_eq!(mask.trim(), "0000000000000000", "{mask:?}");

    let failures = [
        ("slow", "/slow: timed out after 300 ms"),
        ("crash", "/crash: failed (exit status 3)"),
        ("huge", "/huge: replied with more than 1000 bytes"),
        (
            "junk",
            "/junk: sent a reply that is not valid (see docs/PLUGINS.md)",
        ),
        ("gone", "/gone: is unavailable (it cannot be started)"),
    ];
    for (name, message) in failures {
        alice.command(name, "");
        assert_eq!(alice.expect_error("plugin_failed"), message);
    }
    // bob was never held up, and chatd logged each failure with its details.
    bob.sync(1);
    server.log.expect("the crash, logged with its stderr", |l| {
        l.contains("plugin failed") && l.contains("exit status 3") && l.contains("oops")
    });

    alice.command("secret", "");
    assert_eq!(
        alice.expect_error("forbidden"),
        "/secret is for administrators"
    );

    // The shipped examples: /dice goes to the caller's room (allowed here), /uptime to the
    // caller. chat names its current room in each command; a room one is not in is ignored.
    alice.send(json!({"type":"command","name":"dice","args":"2d6","room":"lobby"}));
    for c in [&mut alice, &mut bob] {
        let text = notice(c);
        assert!(
            text.starts_with("[#lobby] [/dice for alice] alice rolls 2d6: "),
            "{text}"
        );
    }
    alice.send(json!({"type":"command","name":"dice","args":"d20","room":"elsewhere"}));
    assert!(notice(&mut alice).starts_with("alice rolls 1d20: "));
    bob.sync(2);
    alice.command("dice", "99d6");
    assert!(notice(&mut alice).starts_with("usage: /dice [NdM]"));
    bob.command("uptime", "");
    assert!(notice(&mut bob).starts_with("system up "));
    bob.command("help", "");
    let help = bob.recv_type("help");
    let uptime = help["commands"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "uptime")
        .cloned();
    assert_eq!(
        uptime,
        Some(
            json!({"name":"uptime","aliases":[],"usage":"ARGS","help":"how long the machine has been up"})
        )
    );
}

#[test]
fn bad_plugin_configs_are_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("chatd.toml");
    for (config, needle) in [
        (
            plugin("list", Path::new("/bin/true"), ""),
            "command name \"list\" is used twice",
        ),
        (
            plugin("Bad", Path::new("/bin/true"), ""),
            "plugin name \"Bad\" must be",
        ),
        (
            plugin("rel", Path::new("bin/true"), ""),
            "exec must be an absolute path",
        ),
        (
            plugin("t", Path::new("/bin/true"), "timeout_ms = 0"),
            "timeout_ms",
        ),
        (
            plugin("t", Path::new("/bin/true"), "shell = true"),
            "unknown field `shell`",
        ),
    ] {
        std::fs::write(
            &file,
            format!(
                "[server]\nlisten = \"127.0.0.1:0\"\nstate_dir = {:?}\ncontrol_socket = {:?}\n{config}",
                dir.path().join("state"),
                dir.path().join("ctl.sock")
            ),
        )
        .unwrap();
        let (status, _out, err) =
            crate::harness::run_chatd(&[std::ffi::OsStr::new("--config"), file.as_os_str()]);
        assert!(!status.success(), "{config}");
        assert!(err.contains(needle), "{config}\n{err}");
    }
}

#[test]
fn chat_shows_whois_and_away_lines() {
    let server = Server::start();
    server.add_user("alice", "alice-pw");
    server.add_user("bob", "bob-pw");
    let mut alice = Chat::login(&server, "alice", "alice-pw", &ClientHome::new());
    let mut bob = Chat::login(&server, "bob", "bob-pw", &ClientHome::new());
    alice
        .out
        .expect_contains("-- pinned bob's device key SHA256:");
    bob.send("/away in a meeting");
    bob.out
        .expect("away notice", exactly("-- you are away: in a meeting"));
    alice.send("/list");
    alice.out.expect(
        "list with away",
        exactly("-- online: alice, bob (2 sessions); away: bob (in a meeting)"),
    );
    alice.send("/whois bob");
    alice.out.expect("whois line", |l| {
        l.contains(
            "] -- bob: online (1 session), away (in a meeting); in #lobby; device keys: SHA256:",
        ) && l.ends_with(" (online)")
    });
}

/// The names `/help` offers a user right now.
fn help_names(raw: &mut Raw) -> Vec<String> {
    raw.command("help", "");
    raw.recv_type("help")["commands"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["name"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn reload_applies_commands_and_plugins_and_help_follows() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    let hello = script(p, "hello.sh", "cat >/dev/null; echo '{\"text\":\"hello\"}'");
    let server = Server::with_config(p, "motd = \"old\"\n");
    server.add_user("alice", "pw-a");
    let mut alice = Raw::login(&server, "alice", "pw-a");
    notice(&mut alice);
    let before = help_names(&mut alice);
    assert!(before.contains(&"away".to_string()) && !before.contains(&"hello".to_string()));

    // A plugin added, a built-in switched off, an alias, a new motd: live after a reload.
    let (file, _) = crate::harness::write_config(
        p,
        &format!(
            "motd = \"new\"\n[commands]\ndisabled = [\"away\"]\n[commands.aliases]\nhi = \"help\"\n{}",
            plugin("hello", &hello, "")
        ),
    );
    assert!(file.exists());
    let out = server.ctl(&["reload"], None);
    out.assert_ok();
    assert!(
        out.stdout.contains("commands.disabled") && out.stdout.contains("plugins"),
        "{}",
        out.stdout
    );
    let after = help_names(&mut alice);
    assert!(
        after.contains(&"hello".to_string()) && !after.contains(&"away".to_string()),
        "{after:?}"
    );
    alice.command("hello", "");
    assert_eq!(notice(&mut alice), "hello");
    alice.command("away", "x");
    assert_eq!(
        alice.expect_error("unknown_command"),
        "unknown command /away; try /help"
    );
    alice.command("hi", "");
    alice.recv_type("help");
    alice.command("motd", "");
    assert_eq!(notice(&mut alice), "message of the day: new");

    // A config whose plugin is invalid is refused as a whole: nothing changes.
    crate::harness::write_config(p, &plugin("Bad", &hello, ""));
    let err = server.ctl(&["reload"], None).assert_code(1).to_string();
    assert!(err.contains("plugin name \"Bad\""), "{err}");
    assert_eq!(help_names(&mut alice), after);
}

#[test]
fn a_plugin_at_its_concurrency_limit_refuses_more_calls() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    let (started, release) = (p.join("started"), p.join("release"));
    // Runs until the test lets it go, so the second call certainly finds it busy.
    let body = format!(
        "cat >/dev/null; touch {started:?}; while [ ! -e {release:?} ]; do sleep 0.05; done; \
         echo '{{\"text\":\"done\"}}'"
    );
    let config = plugin(
        "hold",
        &script(p, "hold.sh", &body),
        "max_concurrent = 1\ntimeout_ms = 30000",
    );
    let server = Server::with_toml(p, "", &config);
    server.add_user("alice", "pw-a");
    server.add_user("bob", "pw-b");
    let mut alice = Raw::login(&server, "alice", "pw-a");
    let mut bob = Raw::login(&server, "bob", "pw-b");
    alice.recv_type("presence");
    alice.command("hold", "");
    let deadline = std::time::Instant::now() + crate::harness::TIMEOUT;
    while !started.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the plugin never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    bob.command("hold", "");
    assert_eq!(
        bob.expect_error("plugin_failed"),
        "/hold: is busy (1 running); try again in a moment"
    );
    std::fs::write(&release, "").unwrap();
    assert_eq!(notice(&mut alice), "done");
    // Free again.
    bob.command("hold", "");
    assert_eq!(notice(&mut bob), "done");
}
