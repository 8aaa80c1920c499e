//! Device keys: made by `chat` on first login, registered by chatd, listed and revoked with
//! `chatctl key`, limited per account.

use std::os::unix::fs::PermissionsExt;

use serde_json::json;

use crate::harness::{Chat, ClientHome, Closed, Mode, Raw, Server, key_b64, run_chat, test_key};

#[test]
fn keys_are_listed_and_a_revoked_key_is_shut_out() {
    let server = Server::start();
    server.add_user("alice", "pw-a");
    server.add_user("bob", "pw-b");
    let mut alice = Raw::login(&server, "alice", "pw-a");
    let mut bob = Raw::login(&server, "bob", "pw-b");
    alice.skip_devices = false;
    alice.recv_type("presence");
    assert_eq!(alice.recv_type("device")["event"], "online");
    let bob_fp = test_key("bob").fingerprint().to_string();

    let keys = server.ctl(&["--json", "key", "list"], None).json();
    let rows = keys["keys"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{keys}");
    assert_eq!(rows[1]["user"], "bob");
    assert_eq!(rows[1]["fingerprint"], bob_fp);
    assert_eq!(rows[1]["bits"], 2048);
    assert_eq!(rows[1]["sessions"], 1);
    assert!(rows[1].get("revoked").is_none(), "{keys}");
    let table = server.ctl(&["key", "list", "bob"], None);
    table.assert_ok();
    assert!(table.stdout.contains(&bob_fp) && table.stdout.contains("active"));
    assert_eq!(table.stdout.lines().count(), 2, "{}", table.stdout);

    // Revoking ends bob's session; the others see the device and then the user go.
    let out = server.ctl(&["key", "revoke", "bob", &bob_fp], None);
    out.assert_ok();
    assert_eq!(
        out.stdout,
        format!("key {bob_fp} of bob revoked (1 session(s) ended)\n")
    );
    bob.expect_bye("device key revoked");
    assert_eq!(bob.expect_closed(), Closed::Clean);
    // Removed at once (encrypt nothing more to it), then offline as its session ends.
    assert_eq!(
        alice.recv(),
        json!({"type":"device","user":"bob","fingerprint":bob_fp,"event":"removed"})
    );
    assert_eq!(
        alice.recv(),
        json!({"type":"device","user":"bob","fingerprint":bob_fp,"event":"offline"})
    );
    assert_eq!(alice.recv()["event"], "leave");

    // The revoked key cannot log in again, even with the right password...
    let mut again = Raw::connect(&server);
    again.hello();
    let refused = again.try_login("bob", "pw-b");
    assert_eq!(refused["code"], "key_revoked", "{refused}");
    // ...but a new device key can, and is announced.
    let mut fresh = Raw::connect(&server);
    fresh.key = Some(test_key("bob-new-device"));
    fresh.hello();
    assert_eq!(fresh.try_login("bob", "pw-b")["type"], "login_ok");
    assert_eq!(alice.recv_type("presence")["event"], "join");
    let announced = alice.recv_type("device");
    assert_eq!(announced["key"], key_b64(&test_key("bob-new-device")));

    let listed = server.ctl(&["--json", "key", "list", "bob"], None).json();
    let rows = listed["keys"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert!(
        rows.iter()
            .any(|r| r["fingerprint"] == bob_fp && r["revoked"].is_u64())
    );

    // Mistakes are clear errors.
    let out = server.ctl(&["key", "revoke", "alice", &bob_fp], None);
    assert!(
        out.stderr.contains("alice has no device key"),
        "{}",
        out.stderr
    );
    let out = server.ctl(&["key", "list", "zed"], None);
    assert!(!out.status.success());
    let out = server.ctl(&["key", "revoke", "bob", "SHA256:abc"], None);
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
}

#[test]
fn device_keys_per_account_are_limited_and_bad_keys_refused() {
    let dir = tempfile::tempdir().unwrap();
    let control = dir.path().join("ctl.sock");
    let file = dir.path().join("chatd.toml");
    std::fs::write(
        &file,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nstate_dir = {:?}\ncontrol_socket = {control:?}\n\
             [limits]\nmax_devices_per_user = 2\n",
            dir.path().join("state")
        ),
    )
    .unwrap();
    let server = Server::try_start(Mode::Config {
        file: &file,
        control: &control,
    })
    .unwrap_or_else(|f| panic!("chatd failed to start: {}", f.stderr));
    server.add_user("alice", "pw");
    let login_with = |label: &str| {
        let mut raw = Raw::connect(&server);
        raw.key = Some(test_key(label));
        raw.hello();
        raw.try_login("alice", "pw")
    };
    // At the limit: two keys register, the third is refused, the known ones still work.
    assert_eq!(login_with("alice")["type"], "login_ok");
    assert_eq!(login_with("alice-2")["type"], "login_ok");
    let third = login_with("alice-3");
    assert_eq!(third["code"], "too_many_devices", "{third}");
    assert!(
        third["message"]
            .as_str()
            .unwrap()
            .contains("chatctl key revoke")
    );
    assert_eq!(login_with("alice")["type"], "login_ok");
    // A revoked key frees its place.
    let fp2 = test_key("alice-2").fingerprint().to_string();
    server
        .ctl(&["key", "revoke", "alice", &fp2], None)
        .assert_ok();
    assert_eq!(login_with("alice-3")["type"], "login_ok");

    // Not base64, not a key, not RSA of an allowed size: refused before the password counts.
    for bad in [
        "%%%",
        "AAAA",
        "MCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=",
    ] {
        let mut raw = Raw::connect(&server);
        raw.hello();
        raw.send(json!({"type":"login","user":"alice","password":"pw","device_key":bad}));
        let msg = raw.expect_error("bad_device_key");
        assert!(msg.contains("RSA 2048, 3072 or 4096"), "{msg}");
    }
}

#[test]
fn chat_makes_its_key_on_first_login_and_guards_it() {
    let server = Server::start();
    server.add_user("alice", "pw");
    let home = ClientHome::generating();
    let accept = ["--accept-fingerprint", server.fingerprint.as_str()];
    let args = [&accept[..], &["--key-bits", "2048"]].concat();
    let addr = server.server_arg();

    let exit = run_chat(&addr, "alice", "pw\n/fingerprint\n", &home, &args);
    assert!(exit.status.success(), "{:?}", exit.stderr);
    let key_file = home
        .xdg_data()
        .join("chat")
        .join("keys")
        .join(format!("alice@{}.pem", server.fingerprint));
    let created = exit
        .stderr
        .iter()
        .find(|l| l.starts_with("chat: created device key SHA256:"))
        .unwrap_or_else(|| panic!("{:?}", exit.stderr));
    assert!(created.ends_with(&format!("(RSA 2048 bits) in {}", key_file.display())));
    let mode = std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    // /fingerprint shows the key chatd registered.
    let listed = server.ctl(&["--json", "key", "list", "alice"], None).json();
    let fp = listed["keys"][0]["fingerprint"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(created.contains(&fp), "{created} vs {fp}");
    assert!(
        exit.stdout
            .iter()
            .any(|l| l.contains(&format!("your device key: {fp} (RSA 2048 bits)"))),
        "{:?}",
        exit.stdout
    );

    // The second run uses the same key and says nothing about it.
    let exit = run_chat(&addr, "alice", "pw\n", &home, &accept);
    assert!(exit.status.success(), "{:?}", exit.stderr);
    assert!(!exit.stderr.iter().any(|l| l.contains("created device key")));
    let listed = server.ctl(&["--json", "key", "list", "alice"], None).json();
    assert_eq!(listed["keys"].as_array().unwrap().len(), 1);

    // A key file others can read is refused, before anything is sent.
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let exit = run_chat(&addr, "alice", "pw\n", &home, &accept);
    assert_eq!(exit.status.code(), Some(1));
    assert!(
        exit.stderr
            .iter()
            .any(|l| l.contains("mode 644") && l.contains("chmod 600")),
        "{:?}",
        exit.stderr
    );
}

#[test]
fn a_passphrase_protects_the_key_file() {
    let server = Server::start();
    server.add_user("bob", "pw");
    let home = ClientHome::generating();
    let args = [
        "--accept-fingerprint",
        server.fingerprint.as_str(),
        "--key-bits",
        "2048",
        "--key-passphrase-stdin",
    ];
    let addr = server.server_arg();
    // Password line, then passphrase line.
    let exit = run_chat(&addr, "bob", "pw\nsesame\n", &home, &args);
    assert!(exit.status.success(), "{:?}", exit.stderr);
    let key_file = home
        .xdg_data()
        .join("chat")
        .join("keys")
        .join(format!("bob@{}.pem", server.fingerprint));
    let pem = std::fs::read_to_string(&key_file).unwrap();
    assert!(
        pem.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----"),
        "{pem}"
    );

    let exit = run_chat(&addr, "bob", "pw\nsesame\n", &home, &args);
    assert!(exit.status.success(), "{:?}", exit.stderr);
    let exit = run_chat(&addr, "bob", "pw\nwrong\n", &home, &args);
    assert_eq!(exit.status.code(), Some(1));
    assert!(
        exit.stderr.iter().any(|l| l.contains("wrong passphrase")),
        "{:?}",
        exit.stderr
    );
    // Without a way to ask, the protected key cannot be used.
    let exit = run_chat(&addr, "bob", "pw\n", &home, &args[..4]);
    assert_eq!(exit.status.code(), Some(1));
    assert!(
        exit.stderr
            .iter()
            .any(|l| l.contains("--key-passphrase-stdin")),
        "{:?}",
        exit.stderr
    );
}

#[test]
fn verify_marks_a_peer_verified_and_spots_a_wrong_fingerprint() {
    let server = Server::start();
    server.add_user("alice", "pw-a");
    server.add_user("bob", "pw-b");
    let (ha, hb) = (ClientHome::new(), ClientHome::new());
    let mut alice = Chat::login(&server, "alice", "pw-a", &ha);
    let mut bob = Chat::login(&server, "bob", "pw-b", &hb);
    alice.out.expect_contains("pinned bob's device key");
    let bob_fp = test_key("bob").fingerprint().to_string();
    alice.send("/verify bob");
    alice.out.expect_contains(&format!(
        "  {bob_fp} (trusted on first use, not verified, online)"
    ));
    let wrong = test_key("carol").fingerprint().to_string();
    alice.send(&format!("/verify bob {wrong}"));
    alice
        .out
        .expect_contains("it does NOT match any key the server showed for bob");
    alice.send(&format!("/verify bob {bob_fp}"));
    alice
        .out
        .expect_contains(&format!("bob's device key {bob_fp} is now verified"));
    alice.send("/verify bob");
    alice
        .out
        .expect_contains(&format!("  {bob_fp} (verified, online)"));
    bob.send("/quit");
    drop(bob.wait());
    // The pin survives a restart of the client.
    let exit = run_chat(
        &server.server_arg(),
        "alice",
        "pw-a\n/verify bob\n",
        &ha,
        &[],
    );
    assert!(
        exit.stdout
            .iter()
            .any(|l| l.ends_with(&format!("  {bob_fp} (verified)"))),
        "{:?}",
        exit.stdout
    );
}
