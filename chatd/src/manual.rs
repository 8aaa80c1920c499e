//! What chatd(8) says beyond `--help` (files, signals, environment, exit status), and
//! chatd.toml(5), made from the annotated default configuration that packages ship.

use chatd_proto::docgen::{Manual, Section, toml};

/// The shipped /etc/chatd/chatd.toml: every key at its default, with its comment.
const DEFAULT_TOML: &str = include_str!("../../config/chatd.toml");

/// chatd(8)'s own sections and the chatd.toml(5) page.
pub fn manual() -> Manual {
    let files = Section::new("FILES")
        .term(
            "/etc/chatd/chatd.toml",
            "The configuration; see chatd.toml(5). Check it with chatd --check-config.",
        )
        .term(
            "/var/lib/chatd/chatd.db",
            "The database (SQLite, with -wal and -shm files beside it): accounts, device keys, \
             rooms and the lines stored for offline devices (sealed; chatd cannot read them). \
             Not used when [cluster] database names a PostgreSQL database.",
        )
        .term(
            "/var/lib/chatd/cert.pem, /var/lib/chatd/key.pem",
            "The self-signed certificate and key chatd makes on first start when [tls] names \
             none. Clients pin its fingerprint.",
        )
        .term(
            "/run/chatd/control.sock",
            "The admin control socket chatctl(8) uses (mode 0660, group chatd-admin).",
        )
        .term(
            "/usr/lib/chatd/plugins/",
            "The example plugin commands; enabled only by a [[plugins]] entry.",
        )
        .term(
            "./chatd-dev/",
            "With --dev: state, certificate and control socket.",
        );
    let signals = Section::new("SIGNALS")
        .term(
            "SIGHUP",
            "Re-read the configuration file and the TLS certificate and key (as chatctl reload \
             and systemctl reload chatd do). Connections stay up; an invalid file is refused \
             with its reason in the log and the previous configuration stays in force.",
        )
        .term(
            "SIGTERM, SIGINT",
            "Stop cleanly: stop accepting, tell every session (bye), let writers finish within \
             [limits] shutdown_grace_secs, then exit 0. Signals sent before chatd is ready wait \
             until it is, so a reload or stop right after start is never lost.",
        );
    let environment = Section::new("ENVIRONMENT")
        .term(
            "RUST_LOG",
            "A tracing filter (e.g. chatd=debug) that overrides [log] level.",
        )
        .term(
            "LISTEN_FDS, LISTEN_PID",
            "Set by systemd socket activation (chatd.socket): chatd serves that socket instead \
             of binding [server] listen.",
        )
        .term(
            "NOTIFY_SOCKET, WATCHDOG_USEC",
            "Set by systemd for Type=notify: chatd sends READY=1, STATUS= lines, RELOADING=1 \
             and watchdog pings.",
        )
        .term(
            "CREDENTIALS_DIRECTORY",
            "Set by systemd's LoadCredential=: a [tls] or [cluster] path starting with %d/ is \
             read from it, and the database password from its database-password when \
             [cluster] database_password_file is unset.",
        )
        .term(
            "JOURNAL_STREAM",
            "Set by systemd when stderr is the journal: chatd then logs to journald with \
             priorities and fields.",
        );
    let exit = Section::new("EXIT STATUS")
        .term("0", "Stopped cleanly, or --check-config found no error.")
        .term(
            "1",
            "Could not start or keep running (configuration, TLS, database, socket), or \
             --check-config found an error.",
        )
        .term("2", "Command-line usage error.");
    let see_also = Section::new("SEE ALSO").para(
        "chatd.toml(5), chatctl(8), chat(1), systemctl(1), journalctl(1); docs/OPERATIONS.md \
         and docs/SECURITY.md in the source or /usr/share/doc/chatd.",
    );
    let mut config = toml::page(
        "chatd.toml",
        "5",
        "configuration of the chatd chat server",
        DEFAULT_TOML,
    );
    config
        .sections
        .insert(0, Section::new("SYNOPSIS").para("/etc/chatd/chatd.toml"));
    config
        .sections
        .push(Section::new("SEE ALSO").para("chatd(8), chatctl(8)"));
    Manual {
        sections: vec![files, signals, environment, exit, see_also],
        pages: vec![config],
    }
}
