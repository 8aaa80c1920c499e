//! The man pages the binaries generate for the packages (`BIN --generate-docs DIR`): every
//! page another page names exists, `man` renders each without a warning, and each has the
//! sections a sysadmin looks for.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use crate::harness::bins;

/// Generates every binary's pages into `dir`/man; returns their file names.
fn generate(dir: &Path) -> BTreeSet<String> {
    let b = bins();
    for bin in [&b.chatd, &b.chatctl, &b.chat] {
        let out = Command::new(bin)
            .arg("--generate-docs")
            .arg(dir)
            .output()
            .expect("run --generate-docs");
        assert!(out.status.success(), "{bin:?}: {out:?}");
    }
    std::fs::read_dir(dir.join("man"))
        .expect("man dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect()
}

/// `man -l PAGE` as plain text, wide enough that no reference is hyphenated; and its stderr
/// (groff's warnings, with --warnings).
fn render(page: &Path) -> (String, String) {
    let out = Command::new("man")
        .args(["--warnings", "-E", "UTF-8", "-l"])
        .arg(page)
        .env("MANWIDTH", "250")
        .env("MAN_KEEP_FORMATTING", "")
        .env_remove("MANPAGER")
        .env_remove("PAGER")
        .output()
        .expect("man (Debian package man-db) must be installed");
    assert!(out.status.success(), "man -l {page:?}: {out:?}");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `chatctl-user(8)`-style references to our own pages in `text`.
fn references(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for (i, _) in text.match_indices('(') {
        let name: String = text[..i]
            .chars()
            .rev()
            .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        let section: String = text[i + 1..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        let closed = text[i + 1 + section.len()..].starts_with(')');
        if name.starts_with("chat") && !section.is_empty() && closed {
            found.insert(format!("{name}.{section}"));
        }
    }
    found
}

#[test]
fn every_page_renders_cleanly_and_every_reference_exists() {
    let dir = tempfile::tempdir().unwrap();
    let pages = generate(dir.path());
    for want in [
        "chatd.8",
        "chatd.toml.5",
        "chatctl.8",
        "chatctl-user-add.8",
        "chat.1",
    ] {
        assert!(pages.contains(want), "{want} missing from {pages:?}");
    }
    for page in &pages {
        let (text, warnings) = render(&dir.path().join("man").join(page));
        assert_eq!(warnings, "", "man warns about {page}");
        for r in references(&text) {
            assert!(
                pages.contains(&r),
                "{page} names {r}, which was not generated"
            );
        }
    }
}

#[test]
fn the_main_pages_have_what_a_sysadmin_looks_for() {
    let dir = tempfile::tempdir().unwrap();
    generate(dir.path());
    let man = dir.path().join("man");
    let text = |page: &str| render(&man.join(page)).0;
    let chatd = text("chatd.8");
    for section in ["FILES", "SIGNALS", "ENVIRONMENT", "EXIT STATUS", "SEE ALSO"] {
        assert!(
            chatd.contains(&format!("\n{section}\n")),
            "chatd(8) lacks {section}"
        );
    }
    assert!(
        chatd.contains("--config PATH"),
        "the synopsis shows option values"
    );
    let chatctl = text("chatctl.8");
    for needle in [
        "CHATD_SOCKET",
        "EXIT STATUS",
        "chatctl-user(8)",
        "chatd-admin",
    ] {
        assert!(chatctl.contains(needle), "chatctl(8) lacks {needle}");
    }
    assert!(
        !chatctl.contains("chatctl-help"),
        "no page for clap's help subcommand"
    );
    assert!(text("chatctl-user-passwd.8").contains("password"));
    // chatd.toml(5) is the shipped file: every key of it, with its comment.
    let toml = text("chatd.toml.5");
    for needle in [
        "[limits]",
        "max_connections = 1024",
        "offline_ttl_secs",
        "[log]",
    ] {
        assert!(toml.contains(needle), "chatd.toml(5) lacks {needle}");
    }
    let chat = text("chat.1");
    for needle in [
        "/whisper USER MESSAGE",
        "/devices",
        "Ctrl-End",
        "[ui] theme",
        "EXIT STATUS",
    ] {
        assert!(chat.contains(needle), "chat(1) lacks {needle}");
    }
}
