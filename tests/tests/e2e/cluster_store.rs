//! chatd on PostgreSQL (`[cluster] database`): the real chatd, chatctl and `chat` against a
//! real PostgreSQL server (Debian's, started in a temporary directory by testkit): accounts,
//! logins, room messages and stored lines kept across restarts of chatd and of PostgreSQL,
//! `storage_unavailable` while PostgreSQL is down and recovery without restarting chatd, no
//! SQLite file, no message text in the database; the password from a systemd credential,
//! and the configurations and databases start-up refuses, with clear errors.

use std::ffi::OsStr;
use std::path::Path;
use std::process::Command;

use chatd_testkit::postgres::TempPostgres;

use crate::harness::{Chat, ClientHome, Mode, Raw, Server, bins, exactly, run_chatd, write_config};

/// The password of the role chatd logs in as (scram-sha-256 on the socket).
const ROLE_PASSWORD: &str = "role-pw-7Qx";

/// Runs PostgreSQL's `program` (psql, pg_dump) as the trusted superuser on `db`; its stdout.
fn pg_tool(pg: &TempPostgres, program: &str, db: &str, args: &[&str]) -> String {
    let out = pg
        .tool(program)
        .args(["-h", &pg.socket_dir().to_string_lossy(), "-p", "5432"])
        .args(["-U", "postgres", "-d", db])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `[cluster]` naming `url`, and `extra` lines.
fn cluster(url: &str, extra: &str) -> String {
    format!("[cluster]\nnode = \"node-a\"\ndatabase = {url:?}\n{extra}\n")
}

/// `chatd --check-config --config FILE`: exit status, stdout, stderr.
fn check_config(file: &Path) -> (std::process::ExitStatus, String, String) {
    run_chatd(&[
        OsStr::new("--check-config"),
        OsStr::new("--config"),
        file.as_os_str(),
    ])
}

/// A PostgreSQL server of this test's own (it is restarted), with a database owned by the
/// role `chatd`, which must give a password on the socket; returns the server and chatd's
/// URL (which holds no password).
fn server_with_role() -> Option<(TempPostgres, String)> {
    if !chatd_testkit::postgres::available() {
        return None;
    }
    let mut pg = TempPostgres::start().unwrap();
    let db = pg.create_database().unwrap();
    pg_tool(
        &pg,
        "psql",
        &db,
        &[
            "-c",
            &format!("CREATE ROLE chatd LOGIN PASSWORD '{ROLE_PASSWORD}'"),
            "-c",
            &format!("ALTER DATABASE {db} OWNER TO chatd"),
        ],
    );
    // Like a Debian install: the superuser by peer (here: trusted), everyone else by password.
    let hba = pg.socket_dir().join("data").join("pg_hba.conf");
    std::fs::write(
        &hba,
        "local all postgres trust\nlocal all all scram-sha-256\n",
    )
    .unwrap();
    pg.restart().unwrap();
    let url = format!(
        "postgresql://chatd@/{db}?host={}&port=5432",
        pg.socket_dir().display()
    );
    Some((pg, url))
}

/// Starts chatd with `config_file`, the password handed over as the systemd credential
/// `database-password` in `creds`.
fn start(file: &Path, control: &Path, creds: &Path) -> Server {
    Server::try_start_env(
        Mode::Config { file, control },
        &[("CREDENTIALS_DIRECTORY", &creds.to_string_lossy())],
    )
    .unwrap_or_else(|f| panic!("chatd failed to start ({}):\n{}", f.status, f.stderr))
}

/// Index of the first line of `out` containing `needle`.
fn position(out: &[String], needle: &str) -> usize {
    out.iter()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no line with {needle:?} in {out:#?}"))
}

#[test]
fn chatd_on_postgresql_keeps_everything_across_restarts_of_chatd_and_of_postgresql() {
    let Some((mut pg, url)) = server_with_role() else {
        return;
    };
    let db = url
        .trim_start_matches("postgresql://chatd@/")
        .split('?')
        .next()
        .unwrap()
        .to_string();
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().join("credentials");
    std::fs::create_dir(&creds).unwrap();

    // A wrong password in the password file: --check-config says so and starts nothing.
    let wrong = dir.path().join("wrong-password");
    std::fs::write(&wrong, "not-the-password\n").unwrap();
    let extra = format!("database_password_file = {wrong:?}");
    let (file, _) = write_config(dir.path(), &cluster(&url, &extra));
    let (status, _, err) = check_config(&file);
    assert!(!status.success());
    assert!(
        err.contains(&format!("chatd: error: database {url}: "))
            && err.contains("password authentication failed for user \"chatd\""),
        "{err}"
    );
    assert!(!err.contains("not-the-password"), "{err}");

    // The right one as the systemd credential: the check connects and finds an empty database.
    std::fs::write(
        creds.join("database-password"),
        format!("{ROLE_PASSWORD}\n"),
    )
    .unwrap();
    let (file, control) = write_config(dir.path(), &cluster(&url, ""));
    let (status, out, err) = run_chatd_env(&file, &creds);
    assert!(status.success(), "{out}\n{err}");
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            format!(
                "store: postgresql node=node-a database={url} pool=16 (empty, start-up creates the schema)"
            ),
            format!("{}: configuration is valid", file.display()),
        ],
        "{out}"
    );

    // Start-up says which store it uses, without the password.
    let mut server = start(&file, &control, &creds);
    let log = server.log.all().join("\n");
    assert!(
        log.contains(&format!(
            "store: postgresql node=node-a database={url} pool=16"
        )),
        "{log}"
    );
    assert!(!log.contains(ROLE_PASSWORD), "{log}");
    // chatctl status names the store too.
    let status = server.ctl(&["status"], None);
    status.assert_ok();
    assert!(
        status.stdout.contains(&format!(
            "store:                   postgresql node=node-a database={url} pool=16"
        )),
        "{}",
        status.stdout
    );
    for (user, pw) in [("alice", "pw-a"), ("bob", "pw-b"), ("carol", "pw-c")] {
        server.add_user(user, pw);
    }
    let (home_a, home_b, home_c) = (ClientHome::new(), ClientHome::new(), ClientHome::new());
    let mut alice = Chat::login(&server, "alice", "pw-a", &home_a);
    let bob = Chat::login(&server, "bob", "pw-b", &home_b);
    alice.out.expect_contains("pinned bob's device key");
    alice.send("LIVE-TEXT-one");
    alice
        .out
        .expect("the echo", exactly("<alice> LIVE-TEXT-one"));
    let run = bob.wait();
    assert!(run.status.success(), "{:?}", run.stderr);
    assert!(
        run.stdout
            .iter()
            .any(|l| l.ends_with("<alice> LIVE-TEXT-one")),
        "{:?}",
        run.stdout
    );
    alice.out.expect_contains("-- bob left");

    // bob is away: each line is stored in PostgreSQL for his device, and alice is told
    // (once: chat says it again only when who is offline changes).
    for i in 1..=3 {
        let text = format!("STORED-TEXT-{i}");
        alice.send(&text);
        alice
            .out
            .expect("the echo", exactly(&format!("<alice> {text}")));
        if i == 1 {
            alice.out.expect_contains("-- stored for bob (offline)");
        }
    }
    let run = alice.wait();
    assert!(run.status.success(), "{:?}", run.stderr);

    // chatd restarts: the accounts, keys and stored lines are still there.
    assert!(server.stop_sigterm().success());
    let mut server = start(&file, &control, &creds);
    assert!(
        !dir.path().join("state").join("chatd.db").exists(),
        "chatd made a SQLite file although [cluster] database is set"
    );
    let users = server.ctl(&["--json", "user", "list"], None).json();
    assert_eq!(users["users"].as_array().map(Vec::len), Some(3), "{users}");
    let mut alice = Chat::login(&server, "alice", "pw-a", &home_a);
    let mut carol = Chat::login(&server, "carol", "pw-c", &home_c);
    alice.out.expect_contains("pinned carol's device key");

    // PostgreSQL goes down: what needs it is refused, clearly; routing goes on.
    pg.stop();
    let out = server.ctl(&["user", "add", "dave", "--password-stdin"], Some("pw-d\n"));
    assert_eq!(
        out.assert_code(1),
        "chatctl: database server unreachable: the change was not saved; retry when it is back\n"
    );
    let out = server.ctl(&["--json", "user", "lock", "carol"], None);
    let answer: serde_json::Value = serde_json::from_str(out.stdout.trim()).unwrap();
    assert_eq!(answer["code"], "storage_unavailable", "{answer}");
    alice.send("WHILE-DOWN-TEXT");
    carol
        .out
        .expect("routed while down", exactly("<alice> WHILE-DOWN-TEXT"));
    alice
        .out
        .expect_contains("the server could not store your message for members who are offline");
    // A login needs the account: refused, saying to try again.
    let mut late = Raw::connect(&server);
    late.hello();
    let refused = late.try_login("carol", "pw-c");
    assert_eq!(refused["code"], "internal", "{refused}");
    assert!(
        refused["message"]
            .as_str()
            .is_some_and(|m| m.contains("could not check your login; try again later")),
        "{refused}"
    );

    // PostgreSQL is back: chatd reconnects by itself.
    pg.restart().unwrap();
    server
        .ctl(&["user", "add", "dave", "--password-stdin"], Some("pw-d\n"))
        .assert_ok();
    alice.send("AFTER-TEXT");
    alice.out.expect("stored again", |l| {
        l.contains("-- stored for bob (offline)")
    });
    let metrics = server.ctl(&["metrics"], None).stdout;
    assert!(
        metrics.lines().any(
            |l| l.starts_with("chatd_storage_unavailable_total{reason=\"down\"} ")
                && !l.ends_with(" 0")
        ),
        "{metrics}"
    );

    // bob comes back: what was stored, in order, each once; the line sent while down is not.
    // (The chain alice's new process sealed its lines with may have been sent to bob while
    // PostgreSQL was down, and lost: bob then asks alice's device for it, and shows the line
    // once it comes.)
    let mut bob = Chat::login(&server, "bob", "pw-b", &home_b);
    bob.out
        .expect_contains("-- end of what was stored while you were offline");
    bob.out.expect("the line stored after recovery", |l| {
        l.ends_with("<alice> AFTER-TEXT")
    });
    bob.send("/quit");
    let run = bob.wait();
    let out = run.stdout;
    let at: Vec<usize> = [
        "STORED-TEXT-1",
        "STORED-TEXT-2",
        "STORED-TEXT-3",
        "AFTER-TEXT",
    ]
    .iter()
    .map(|t| position(&out, &format!("<alice> {t}")))
    .collect();
    assert!(at.windows(2).all(|w| w[0] < w[1]), "{out:#?}");
    for t in ["STORED-TEXT-1", "AFTER-TEXT"] {
        assert_eq!(out.iter().filter(|l| l.contains(t)).count(), 1, "{out:#?}");
    }
    assert!(
        !out.iter().any(|l| l.contains("WHILE-DOWN-TEXT")),
        "{out:#?}"
    );
    drop((alice, carol));

    // The database holds the accounts, keys and queue, but no message text: lines are sealed.
    let dump = pg_tool(&pg, "pg_dump", &db, &[]);
    assert!(
        dump.contains("offline_queue") && dump.contains("dave"),
        "{dump}"
    );
    for text in [
        "LIVE-TEXT",
        "STORED-TEXT",
        "AFTER-TEXT",
        "WHILE-DOWN-TEXT",
        ROLE_PASSWORD,
    ] {
        assert!(!dump.contains(text), "{text} is in the database");
    }
    assert!(server.stop_sigterm().success());
    assert!(!dir.path().join("state").join("chatd.db").exists());

    // A newer chatd's schema: refused by the check and by start-up, with the versions.
    pg_tool(
        &pg,
        "psql",
        &db,
        &["-c", "UPDATE chatd_schema SET version = 99"],
    );
    let (status, _, err) = run_chatd_env(&file, &creds);
    assert!(!status.success());
    assert!(
        err.contains("database schema version 99 is newer than this chatd understands"),
        "{err}"
    );
    let refused = Server::try_start_env(
        Mode::Config {
            file: &file,
            control: &control,
        },
        &[("CREDENTIALS_DIRECTORY", &creds.to_string_lossy())],
    )
    .err()
    .expect("chatd started on a newer schema");
    assert!(
        refused
            .stderr
            .contains("is newer than this chatd understands"),
        "{}",
        refused.stderr
    );
}

/// `chatd --check-config` with `CREDENTIALS_DIRECTORY=creds`.
fn run_chatd_env(file: &Path, creds: &Path) -> (std::process::ExitStatus, String, String) {
    let out = Command::new(&bins().chatd)
        .args([OsStr::new("--check-config"), OsStr::new("--config")])
        .arg(file)
        .env_remove("RUST_LOG")
        .env("CREDENTIALS_DIRECTORY", creds)
        .output()
        .expect("cannot run chatd");
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_cluster_settings_are_refused_with_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let refused = |tables: &str| {
        let (file, _) = write_config(dir.path(), tables);
        let (status, out, err) = check_config(&file);
        assert!(!status.success(), "{out}");
        err
    };
    // A password in the URL is refused, and not repeated.
    let err = refused(&cluster("postgresql://chatd:hunter2@localhost/chatd", ""));
    assert!(
        err.contains("cluster.database: the URL holds a password"),
        "{err}"
    );
    assert!(!err.contains("hunter2"), "{err}");
    // A pool of no connections, and one past the bound.
    let err = refused("[cluster]\ndatabase_pool = 0\n");
    assert!(
        err.contains("database_pool must be between 1 and 1000, got 0"),
        "{err}"
    );
    assert!(refused("[cluster]\ndatabase_pool = 1001\n").contains("got 1001"));
    // Keys that do not exist are errors, as everywhere; a bus needs the database.
    assert!(refused("[cluster]\nnatz = \"nats://127.0.0.1\"\n").contains("unknown field"));
    let err = refused("[cluster]\nnats = \"nats://127.0.0.1\"\n");
    assert!(
        err.contains("cluster.nats is set but cluster.database is not"),
        "{err}"
    );
    // A %d/ password file without systemd's credentials.
    let url = "postgresql:///chatd?host=/nonexistent";
    let err = refused(&cluster(
        url,
        "database_password_file = \"%d/database-password\"",
    ));
    assert!(err.contains("CREDENTIALS_DIRECTORY is not set"), "{err}");

    // Nobody listens: the check says so, and start-up fails the same way, making no SQLite file.
    let empty = tempfile::tempdir().unwrap();
    let url = format!("postgresql://chatd@/chatd?host={}", empty.path().display());
    let (file, control) = write_config(dir.path(), &cluster(&url, ""));
    let (status, _, err) = check_config(&file);
    assert!(!status.success());
    assert!(
        err.contains(&format!(
            "chatd: error: database {url}: database error: error connecting to server"
        )),
        "{err}"
    );
    let failed = Server::try_start(Mode::Config {
        file: &file,
        control: &control,
    })
    .err()
    .expect("chatd started without its database");
    assert!(
        failed.stderr.contains(&format!("database {url}: ")),
        "{}",
        failed.stderr
    );
    assert!(!dir.path().join("state").join("chatd.db").exists());
}
