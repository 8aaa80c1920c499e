//! chat's server trust: pinning on first use, refusing unknown and changed keys, and --ca.

use std::time::Instant;

use crate::harness::{ClientHome, Mode, Server, TIMEOUT, run_chat};

/// The whole known_servers file (empty if it does not exist).
fn known(home: &ClientHome) -> String {
    std::fs::read_to_string(home.known_servers()).unwrap_or_default()
}

#[test]
fn unknown_server_needs_accept_fingerprint_then_stays_pinned() {
    let server = Server::start();
    server.add_user("alice", "pw");
    let home = ClientHome::new();
    let addr = server.server_arg();

    // Nothing pinned, no flag: refused with advice, nothing sent, nothing pinned.
    let exit = run_chat(&addr, "alice", "pw\nhello\n", &home, &[]);
    assert_eq!(exit.status.code(), Some(1), "{:?}", exit.stderr);
    assert!(exit.stdout.is_empty(), "{:?}", exit.stdout);
    let err = exit.stderr.join("\n");
    assert!(
        err.contains(&format!("--accept-fingerprint {}", server.fingerprint)),
        "{err}"
    );
    assert!(!home.known_servers().exists());

    // A flag naming another certificate is refused too.
    let other = format!("SHA256:{}", "ab".repeat(32));
    let exit = run_chat(
        &addr,
        "alice",
        "pw\n",
        &home,
        &["--accept-fingerprint", &other],
    );
    assert_eq!(exit.status.code(), Some(1));
    let err = exit.stderr.join("\n");
    assert!(err.contains("does not match --accept-fingerprint"), "{err}");
    assert!(
        err.contains(&server.fingerprint) && err.contains(&other),
        "{err}"
    );
    assert!(!home.known_servers().exists());
    assert!(
        !server.log.dump().contains("logged in"),
        "no login happened"
    );

    // The right flag pins the certificate and logs in.
    let exit = run_chat(
        &addr,
        "alice",
        "pw\nfirst\n",
        &home,
        &["--accept-fingerprint", &server.fingerprint],
    );
    assert_eq!(exit.status.code(), Some(0), "{:?}", exit.stderr);
    assert_eq!(exit.stdout[0], "-- logged in as alice; online: alice");
    assert_eq!(
        exit.stderr,
        [format!(
            "chat: pinned {} for {addr} in {}",
            server.fingerprint,
            home.known_servers().display()
        )]
    );
    assert_eq!(known(&home), format!("{addr} {}\n", server.fingerprint));

    // From now on no flag is needed, and nothing more is printed about trust.
    let exit = run_chat(&addr, "alice", "pw\nsecond\n", &home, &[]);
    assert_eq!(exit.status.code(), Some(0), "{:?}", exit.stderr);
    assert!(exit.stderr.is_empty(), "{:?}", exit.stderr);
    assert_eq!(exit.stdout[0], "-- logged in as alice; online: alice");
    assert!(exit.stdout.iter().any(|l| l.ends_with("] <alice> second")));
    assert_eq!(known(&home), format!("{addr} {}\n", server.fingerprint));
}

/// Starts a fresh chatd (new data dir, so a new certificate) on a given address, retrying
/// while the port is briefly taken by something else.
fn start_on(data: &std::path::Path, addr: std::net::SocketAddr) -> Server {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        match Server::try_start(Mode::Dev {
            data_dir: data,
            listen: addr,
        }) {
            Ok(server) => return server,
            Err(f) if f.stderr.contains("cannot listen") && Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
            Err(f) => panic!("chatd did not start on {addr} ({}): {}", f.status, f.stderr),
        }
    }
}

#[test]
fn changed_certificate_is_refused_with_a_warning() {
    let mut old = Server::start();
    old.add_user("alice", "pw");
    let home = ClientHome::new();
    let addr = old.server_arg();
    let exit = run_chat(
        &addr,
        "alice",
        "pw\n",
        &home,
        &["--accept-fingerprint", &old.fingerprint],
    );
    assert_eq!(exit.status.code(), Some(0), "{:?}", exit.stderr);
    let pinned = known(&home);
    assert_eq!(pinned, format!("{addr} {}\n", old.fingerprint));
    assert_eq!(old.stop_sigterm().code(), Some(0));

    // Same address, new state dir: a different certificate.
    let new_data = tempfile::tempdir().unwrap();
    let new = start_on(new_data.path(), old.addr);
    assert_ne!(new.fingerprint, old.fingerprint);
    new.add_user("alice", "pw");

    let refused = |extra: &[&str]| {
        let exit = run_chat(&addr, "alice", "pw\nhello\n", &home, extra);
        assert_eq!(exit.status.code(), Some(1), "{:?}", exit.stderr);
        assert!(exit.stdout.is_empty(), "{:?}", exit.stdout);
        let err = exit.stderr.join("\n");
        assert!(
            err.contains(&format!("WARNING: THE CERTIFICATE OF {addr} HAS CHANGED!")),
            "{err}"
        );
        assert!(
            err.contains(&format!("pinned fingerprint:    {}", old.fingerprint)),
            "{err}"
        );
        assert!(
            err.contains(&format!("presented fingerprint: {}", new.fingerprint)),
            "{err}"
        );
        assert!(err.contains("line 1 of"), "{err}");
        // Its lines are lines, not glued together with replacement characters.
        assert!(!err.contains('\u{fffd}'), "{err}");
        assert!(
            exit.stderr
                .iter()
                .any(|l| l.trim_start().starts_with("pinned fingerprint:")),
            "{err}"
        );
        assert_eq!(known(&home), pinned, "the pin is untouched");
    };
    refused(&[]);
    // Re-accepting the old fingerprint does not help.
    refused(&["--accept-fingerprint", &old.fingerprint]);
    assert!(!new.log.dump().contains("logged in"), "nobody logged in");

    // Accepting the new fingerprint explicitly replaces the pin, loudly.
    let exit = run_chat(
        &addr,
        "alice",
        "pw\n",
        &home,
        &["--accept-fingerprint", &new.fingerprint],
    );
    assert_eq!(exit.status.code(), Some(0), "{:?}", exit.stderr);
    let err = exit.stderr.join("\n");
    assert!(err.contains("HAS CHANGED!"), "{err}");
    assert!(err.contains("replacing the pinned fingerprint"), "{err}");
    // The server keeps its identity (its first fingerprint), so its key and pins stay.
    assert_eq!(
        known(&home),
        format!("{addr} {} id={}\n", new.fingerprint, old.fingerprint)
    );
}

#[test]
fn ca_file_trusts_only_that_ca_and_never_pins() {
    // chatd's self-signed certificate names 127.0.0.1, so it can serve as its own CA.
    let data = tempfile::tempdir().unwrap();
    let server = Server::start_in(data.path(), crate::harness::loopback0());
    server.add_user("alice", "pw");
    let other = Server::start();
    let home = ClientHome::new();
    let addr = server.server_arg();
    let own_ca = data.path().join("cert.pem");

    let exit = run_chat(
        &addr,
        "alice",
        "pw\n",
        &home,
        &["--ca", own_ca.to_str().unwrap()],
    );
    assert_eq!(exit.status.code(), Some(0), "{:?}", exit.stderr);
    assert_eq!(exit.stdout[0], "-- logged in as alice; online: alice");
    assert!(exit.stderr.is_empty(), "{:?}", exit.stderr);
    assert!(!home.known_servers().exists(), "--ca never pins");

    // Another server's certificate is not signed by that CA: refused, no pinning fallback,
    // even though its fingerprint would be accepted on the command line without --ca.
    let exit = run_chat(
        &other.server_arg(),
        "alice",
        "pw\n",
        &home,
        &["--ca", own_ca.to_str().unwrap()],
    );
    assert_eq!(exit.status.code(), Some(1));
    let err = exit.stderr.join("\n");
    assert!(err.contains("invalid peer certificate"), "{err}");
    assert!(!home.known_servers().exists());

    // --ca and --accept-fingerprint exclude each other (a usage error).
    let exit = run_chat(
        &addr,
        "alice",
        "pw\n",
        &home,
        &[
            "--ca",
            own_ca.to_str().unwrap(),
            "--accept-fingerprint",
            &server.fingerprint,
        ],
    );
    assert_eq!(exit.status.code(), Some(2));
}
