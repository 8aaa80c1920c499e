//! What chat(1) says beyond `--help`: its slash commands (the same list `/help` shows),
//! keys, files, config keys and exit status.

use chatd_proto::docgen::{Manual, Section};

/// chat(1)'s own sections.
pub fn manual() -> Manual {
    let mut commands = Section::new("COMMANDS").para(
        "Lines typed are sealed end to end and sent to the current room. A line starting with \
         a slash is a command: these are the client's own, and /help also lists the server's \
         (/list, /rooms, /whois, /away, ...), which may differ per server.",
    );
    // `/help`'s own lines, so the page cannot drift from it.
    for line in crate::format::client_help_bodies().iter().skip(1) {
        let line = line.trim();
        match line.split_once(" - ") {
            Some((cmd, what)) => commands = commands.term(cmd, what),
            None => commands = commands.para(line),
        }
    }
    commands = commands
        .para(
            "Wherever a fingerprint is typed (/verify USER FINGERPRINT, /devices approve or \
             revoke), a prefix of at least 16 of its hex digits will do, with or without \
             SHA256: and colons, if exactly one of the keys meant starts with it; the answer \
             gives the whole fingerprint. Fewer digits, or a prefix two keys share, is refused \
             with the reason.",
        )
        .para(
            "/ignore is client-side: the server still delivers that user's messages and chat \
             still decrypts them (so its chains stay whole), but does not show them, nor that \
             user's whispers, joins and leaves; what came while ignored is not shown after \
             /unignore either. The list is kept across restarts.",
        );
    let keys = Section::new("KEYS")
        .para("In the full-screen interface:")
        .term("PageUp, PageDown, mouse wheel", "Scroll the message view.")
        .term("Ctrl-End", "Jump to the newest line.")
        .term(
            "Alt-1 ... Alt-9, Alt-0",
            "Show buffer 1 to 10: the server's, then one per room and whisper partner.",
        )
        .term(
            "Alt-Left, Alt-Right",
            "Show the previous or the next buffer.",
        )
        .term(
            "F2",
            "Show or hide the nick list (the people of the buffer shown).",
        )
        .term(
            "Alt-m",
            "Turn mouse capture off (the terminal selects and copies text as usual) or back \
             on (the wheel scrolls; with most terminals Shift+drag still selects).",
        )
        .term(
            "Tab",
            "Complete a command, or what its argument is: a user name, a room (joined or \
             seen in /rooms), a user's pinned fingerprint after /verify USER, one of your \
             devices after /devices approve or revoke. Tab again offers the next.",
        )
        .term("Up, Down", "Recall earlier input.")
        .term(
            "Ctrl-A, Ctrl-E, Ctrl-W, Ctrl-U, Ctrl-K",
            "Edit the input line as in emacs and readline.",
        )
        .term("Ctrl-C", "Quit.");
    let config = Section::new("CONFIGURATION")
        .para(
            "$XDG_CONFIG_HOME/chat/config.toml (usually ~/.config/chat/config.toml), optional; \
             command-line options win. Unknown keys are errors.",
        )
        .term(
            "server = \"HOST:PORT\"",
            "The server to connect to; the nodes of one deployment as one string, \
             \"HOST:PORT,HOST:PORT\" (see SERVER LISTS).",
        )
        .term("user = \"NAME\"", "The user to log in as (else $USER).")
        .term(
            "reconnect_max_secs = 30",
            "The longest wait between two rounds of reconnecting (2 to 3600; see SERVER LISTS).",
        )
        .term("key = \"FILE\"", "This device's key file.")
        .term(
            "password_tries = 3",
            "Passwords typed at a terminal before giving up (1 to 10); one given with \
             --password-stdin is tried once.",
        )
        .term(
            "[ui] theme = \"dark\"",
            "Colors: dark, light (for a light terminal background) or mono (no colors). \
             dark and light use the 256-color palette.",
        )
        .term(
            "[ui] time_format = \"%H:%M:%S\"",
            "strftime format of time stamps.",
        )
        .term(
            "[ui] paste_max_lines = 5",
            "Pasting more lines than this at once is refused.",
        )
        .term("[ui] scrollback = 5000", "Lines kept in the message view.")
        .term("[ui] history = 500", "Input lines kept for Up and Down.")
        .term(
            "[ui] mouse = true",
            "Capture the mouse at start (the wheel scrolls); false leaves it to the \
             terminal. Alt-m toggles it while running.",
        )
        .term(
            "[ui] highlight_words = []",
            "Words that highlight a line as your name does (whole words, any case; at most 32).",
        )
        .term(
            "[ui] bell = \"highlight\"",
            "Ring the terminal bell (BEL) for a highlight, for every message (all) or never \
             (off); tmux and most terminals turn it into an urgency hint.",
        )
        .term(
            "[ui] mentions_max = 100",
            "Highlights kept for /mentions (1 to 10000).",
        )
        .term(
            "[ui] away_refresh_secs = 60",
            "How often the nick list asks the server who is away (0: only at login; else 10 to 3600).",
        )
        .term(
            "[ui] ignore_max = 100",
            "Most users /ignore keeps (1 to 10000).",
        )
        .term(
            "[history] enabled = false",
            "Keep the conversation on this device (off unless set to true): the verified \
             lines shown (messages, actions, whispers, your own) are kept encrypted under a key \
             derived from the device key, and shown first at the next start, between \
             \"-- history: ...\" and \"-- end of history\"; a line the server delivers again is \
             shown once.",
        )
        .term(
            "[history] lines = 1000",
            "Lines kept per room or whisper partner (10 to 100000).",
        )
        .term(
            "[history] days = 0",
            "Lines older than this many days are dropped (0: no age limit; at most 3650).",
        )
        .term(
            "[history] show = 100",
            "Lines shown at start, the newest of all conversations (0 to 10000).",
        );
    let lists = Section::new("SERVER LISTS")
        .para(
            "--server a.example:8443,b.example:8443 names the nodes of one deployment. The first \
             login tries them in order: a node that cannot be reached (no TCP connection, or no \
             TLS answer in time) is said once and the next one is tried; anything else, a \
             refused certificate above all, stops there. The line mode stays on the node it \
             logged in on. The full-screen interface, when the connection drops, waits 0.5 to \
             1 s and tries the same node again, then after each failure the next node: right \
             away (0 to 0.5 s) until every node failed once in this round, then 1 to 2 s before \
             the next round, doubling per round up to half to all of reconnect_max_secs (30). \
             Each wait is drawn at random \
             from that range, so the clients of a node that died do not all come back at once. \
             The status bar shows the node (USER@HOST:PORT) and the node tried next.",
        )
        .para(
            "A list is one server: one device key, one set of pins. Give every node the same \
             certificate and key: the first node is pinned on first use, the others are then \
             recognised by that certificate without a question (aliases in known_servers). \
             Nodes with different certificates are different servers: chat refuses a list \
             whose nodes are pinned as two servers, and once the list's server is pinned it \
             refuses a node that presents another certificate, without asking. To join a node \
             with its own certificate to the server anyway, add HOST:PORT SHA256:ITS-PIN \
             id=SHA256:THE-LIST'S-ID to known_servers after checking it out of band.",
        );
    let files = Section::new("FILES")
        .para(
            "Files are named by the server's identity (SERVER-ID), not by the host name as \
             typed: for a server reached through a pinned certificate, the fingerprint it was \
             first pinned with (SHA256:...), which it keeps across a certificate change you \
             accepted; for one whose certificate a CA verified, the verified HOST:PORT. So \
             localhost:8443 and 127.0.0.1:8443 of one server share one key and one set of pins. \
             Files of earlier versions, named USER@HOST:PORT, are moved to their new names the \
             first time that server is reached. Nothing is written before the login succeeded.",
        )
        .term(
            "$XDG_DATA_HOME/chat/keys/USER@SERVER-ID.pem",
            "This device's private key (0600), made at the first login and kept once it \
             succeeded.",
        )
        .term(
            "$XDG_DATA_HOME/chat/known_servers",
            "Pinned server certificate fingerprints: HOST:PORT SHA256:... [id=SHA256:...], one \
             line per name; lines with the same id (written after a certificate change or for \
             another name of a known server) are one server.",
        )
        .term(
            "$XDG_DATA_HOME/chat/peers/SERVER-ID.json",
            "Other users' device keys pinned for that server, and their verified state.",
        )
        .term(
            "$XDG_DATA_HOME/chat/state/USER@SERVER-ID",
            "Encrypted receiver state (message chains, what was already shown), and \
             USER@SERVER-ID.pending.json, what is held from keys not yet accepted, and \
             USER@SERVER-ID.ignored, the /ignore list (one name a line, 0600).",
        )
        .term(
            "$XDG_DATA_HOME/chat/keys/USER@SERVER-ID.history",
            "The local history when [history] is enabled (0600, beside the key file it is \
             derived from: NAME.history beside NAME.pem). Delete it with \
             /history clear, or remove the file while chat is not running.",
        );
    let environment = Section::new("ENVIRONMENT")
        .term(
            "XDG_CONFIG_HOME, XDG_DATA_HOME, HOME",
            "Where the config file and the data files above live.",
        )
        .term(
            "USER",
            "The user name when neither --user nor the config file gives one.",
        );
    let exit = Section::new("EXIT STATUS")
        .term("0", "After /quit or the end of input.")
        .term(
            "1",
            "Connection, TLS, trust and other errors, or the server ended the session.",
        )
        .term("2", "Command-line usage error.")
        .term(
            "3",
            "The login was refused (after password_tries passwords typed at a terminal, or \
             the one given with --password-stdin).",
        );
    let see_also = Section::new("SEE ALSO").para("chatd(8), chatctl(8).");
    Manual {
        sections: vec![
            commands,
            keys,
            config,
            lists,
            files,
            environment,
            exit,
            see_also,
        ],
        pages: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use chatd_proto::docgen::Item;

    use crate::config::{ClientConfig, HistoryConfig, UiConfig};

    /// Every config key the page names is one chat accepts, at the default the page gives.
    #[test]
    fn the_configuration_section_names_real_keys_and_defaults() {
        let manual = super::manual();
        let section = manual
            .sections
            .iter()
            .find(|s| s.title == "CONFIGURATION")
            .expect("a CONFIGURATION section");
        let (mut top, mut ui) = (String::new(), String::from("[ui]\n"));
        let mut history = String::from("[history]\n");
        for item in &section.items {
            if let Item::Term(term, _) = item {
                if let Some(key) = term.strip_prefix("[ui] ") {
                    ui.push_str(&format!("{key}\n"));
                } else if let Some(key) = term.strip_prefix("[history] ") {
                    history.push_str(&format!("{key}\n"));
                } else {
                    top.push_str(&format!("{term}\n"));
                }
            }
        }
        let parsed: ClientConfig =
            toml::from_str(&format!("{top}{ui}{history}")).expect("keys parse");
        assert_eq!(parsed.ui, UiConfig::default());
        assert_eq!(parsed.history, HistoryConfig::default());
        assert!(parsed.server.is_some() && parsed.user.is_some() && parsed.key.is_some());
    }
}
