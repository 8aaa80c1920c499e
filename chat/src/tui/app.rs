//! The state of the full-screen interface and what keys do to it. No I/O here: the event
//! loop (`tui::run`) feeds keys and server events in and carries out the returned actions.

use std::collections::VecDeque;

use chrono::{DateTime, Local, TimeZone};
use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers, MouseEventKind};

use crate::config::UiConfig;
use crate::format;
use crate::secure::{ChatMessage, Event};
use crate::text::sanitize;
use crate::tui::complete::Completer;
use crate::tui::editor::Editor;

/// What kind of line an entry is; decides its style.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A room message (`<bob> hi`).
    Message,
    /// A `/me` action.
    Action,
    /// A whisper to or from us.
    Whisper,
    /// Information (`-- ...`).
    Notice,
    /// Needs attention (`!! ...`).
    Warning,
}

/// One line of the message view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// When (a message's server time, else when it was shown).
    pub at: DateTime<Local>,
    /// Its kind.
    pub kind: Kind,
    /// The sender, for messages, actions and whispers (colored by name).
    pub from: Option<String>,
    /// Sent by us.
    pub own: bool,
    /// The text as shown, sender included (`<bob> hi`, `-- bob joined`), sanitized.
    pub text: String,
}

/// Connection state shown in the status bar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnState {
    /// Logged in.
    Connected,
    /// Lost; when the next try is due, and how the last ones went.
    Reconnecting(super::retry::Retry),
    /// Given up (the login was refused); only /quit is left.
    Disconnected,
}

/// What the event loop must do after a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Nothing beyond redrawing.
    None,
    /// Handle this typed line (a message or a command).
    Line(String),
    /// Leave.
    Quit,
    /// Clear and redraw the whole terminal.
    Redraw,
}

/// The interface's state.
pub struct App {
    /// Lines of the message view, oldest first.
    pub entries: VecDeque<Entry>,
    /// How many entries the view is scrolled up from the newest (0: following).
    pub scroll: usize,
    /// Entries that arrived while scrolled up.
    pub unread: usize,
    /// Users online.
    pub online: Vec<String>,
    /// The side panel is wanted (it still hides on narrow terminals).
    pub show_panel: bool,
    /// The input line.
    pub editor: Editor,
    /// Horizontal scroll of the input line, in columns.
    pub input_scroll: usize,
    completer: Completer,
    /// Command names for Tab completion (without the slash).
    pub commands: Vec<String>,
    /// `server` as typed (`host:port`).
    pub server: String,
    /// Logged-in user.
    pub user: String,
    /// Connection state.
    pub state: ConnState,
    /// Negotiated TLS version (`TLSv1.3`).
    pub tls: String,
    /// Our device key fingerprint, short form.
    pub key_short: String,
    /// Settings from the config file.
    pub ui: UiConfig,
    /// Rows of the message view at the last draw (PageUp scrolls by this).
    pub page: usize,
    /// The whisper target being typed and whether its keys are verified (None: no key pinned).
    pub target: Option<(String, Option<bool>)>,
    /// Where plain text goes (a room, without `#`; empty before login).
    pub room: String,
}

/// Commands the client handles itself, for Tab completion.
pub const CLIENT_COMMANDS: [&str; 10] = [
    "quit",
    "help",
    "clear",
    "whisper",
    "me",
    "fingerprint",
    "verify",
    "trust",
    "devices",
    "msg",
];

impl App {
    /// A fresh interface for `user` on `server`.
    pub fn new(server: &str, user: &str, ui: UiConfig) -> App {
        App {
            entries: VecDeque::new(),
            scroll: 0,
            unread: 0,
            online: Vec::new(),
            show_panel: true,
            editor: Editor::new(ui.history),
            input_scroll: 0,
            completer: Completer::new(),
            commands: CLIENT_COMMANDS.iter().map(|c| (*c).to_string()).collect(),
            server: server.to_string(),
            user: user.to_string(),
            state: ConnState::Connected,
            tls: String::new(),
            key_short: String::new(),
            ui,
            page: 10,
            target: None,
            room: String::new(),
        }
    }

    /// Appends an entry, dropping the oldest beyond the scrollback limit.
    pub fn push(&mut self, entry: Entry) {
        self.entries.push_back(entry);
        if self.scroll > 0 {
            // Keep the view where the reader left it.
            self.scroll += 1;
            self.unread += 1;
        }
        while self.entries.len() > self.ui.scrollback {
            self.entries.pop_front();
        }
        self.scroll = self.scroll.min(self.entries.len().saturating_sub(1));
    }

    /// A `-- text` line, now.
    pub fn notice(&mut self, text: impl Into<String>) {
        self.line(Kind::Notice, format!("-- {}", text.into()));
    }

    /// A `!! text` line, now.
    pub fn warning(&mut self, text: impl Into<String>) {
        self.line(Kind::Warning, format!("!! {}", text.into()));
    }

    /// Sanitized here, the last step before the screen: warnings quote errors, and those
    /// can quote the server.
    fn line(&mut self, kind: Kind, text: String) {
        let text = sanitize(&text);
        self.push(Entry {
            at: Local::now(),
            kind,
            from: None,
            own: false,
            text,
        });
    }

    /// Lines rendered by [`format::render_bodies`] (frames other than messages).
    pub fn frame_lines(&mut self, lines: Vec<String>) {
        for text in lines {
            let kind = if text.starts_with("!! ") {
                Kind::Warning
            } else {
                Kind::Notice
            };
            self.line(kind, text);
        }
    }

    /// End-to-end events: verified messages and the secure layer's notices and warnings.
    pub fn events(&mut self, events: Vec<Event>) {
        for e in events {
            match e {
                Event::Message(m) => self.message(&m),
                Event::Notice(n) => self.notice(format::notice(&n)),
                Event::Warning(w) => self.warning(format::warning(&w)),
            }
        }
    }

    fn message(&mut self, m: &ChatMessage) {
        let at = i64::try_from(m.ts)
            .ok()
            .and_then(|ms| Local.timestamp_millis_opt(ms).single())
            .unwrap_or_else(Local::now);
        let kind = match (&m.to, m.action) {
            (Some(_), _) => Kind::Whisper,
            (None, true) => Kind::Action,
            (None, false) => Kind::Message,
        };
        self.push(Entry {
            at,
            kind,
            from: Some(sanitize(&m.from)),
            own: m.from == self.user,
            text: format::message_body(m, &self.user),
        });
    }

    /// The online list changed: `user` joined (`true`) or left.
    pub fn presence(&mut self, user: &str, online: bool) {
        let present = self.online.iter().any(|u| u == user);
        if online && !present {
            self.online.push(user.to_string());
            self.online.sort_by_key(|u| u.to_lowercase());
        } else if !online && present {
            self.online.retain(|u| u != user);
        }
    }

    /// The user typed `/clear`.
    pub fn clear(&mut self) {
        self.entries.clear();
        self.scroll = 0;
        self.unread = 0;
    }

    /// The whisper target of the line being typed (`/whisper NAME ...`, `/w NAME`, `/msg NAME`).
    pub fn whisper_target(&self) -> Option<&str> {
        let mut words = self.editor.text().split_whitespace();
        let cmd = words.next()?;
        if !matches!(cmd, "/whisper" | "/w" | "/msg") {
            return None;
        }
        let name = words.next()?;
        // Only once the name is complete (followed by a space).
        let after = self.editor.text().split_once(name)?.1;
        after.starts_with(' ').then_some(name)
    }

    /// Scrolls the view up (older) by `n` entries.
    pub fn scroll_up(&mut self, n: usize) {
        self.scroll = (self.scroll + n).min(self.entries.len().saturating_sub(1));
    }

    /// Scrolls the view down (newer) by `n` entries; at the bottom the unread count resets.
    pub fn scroll_down(&mut self, n: usize) {
        self.scroll = self.scroll.saturating_sub(n);
        self.unread = self.unread.min(self.scroll);
    }

    /// A key press.
    pub fn key(&mut self, key: &KeyEvent) -> Action {
        if key.kind == KeyEventKind::Release {
            return Action::None;
        }
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        if key.code != KeyCode::Tab {
            self.completer.reset();
        }
        match key.code {
            KeyCode::Char('c' | 'd') if ctrl => {
                // Ctrl-D only on an empty line, like a shell.
                if key.code == KeyCode::Char('c') || self.editor.is_empty() {
                    return Action::Quit;
                }
            }
            KeyCode::Char('l') if ctrl => return Action::Redraw,
            KeyCode::Enter => return Action::Line(self.editor.submit()),
            KeyCode::Tab => self.complete(),
            KeyCode::PageUp => self.scroll_up(self.page.max(1)),
            KeyCode::PageDown => self.scroll_down(self.page.max(1)),
            KeyCode::End if ctrl => self.scroll_down(usize::MAX),
            KeyCode::Home if ctrl => self.scroll_up(usize::MAX),
            KeyCode::F(2) => self.show_panel = !self.show_panel,
            _ => {
                self.editor.handle_key(key);
            }
        }
        Action::None
    }

    /// A mouse event: the wheel scrolls.
    pub fn mouse(&mut self, kind: MouseEventKind) {
        match kind {
            MouseEventKind::ScrollUp => self.scroll_up(3),
            MouseEventKind::ScrollDown => self.scroll_down(3),
            _ => {}
        }
    }

    fn complete(&mut self) {
        let mut users = self.online.clone();
        users.retain(|u| u != &self.user);
        if let Some((text, cursor)) = self.completer.complete(
            self.editor.text(),
            self.editor.cursor(),
            &self.commands,
            &users,
        ) {
            self.editor.set(text, cursor);
        }
    }

    /// Pasted text: one line goes into the input line; several become messages, unless there
    /// are more than `paste_max_lines` (then nothing is sent and the user is told).
    pub fn paste(&mut self, text: &str) -> Vec<String> {
        let normalized = text.replace("\r\n", "\n").replace('\r', "\n");
        let lines: Vec<&str> = normalized.trim_end_matches('\n').split('\n').collect();
        if lines.len() <= 1 {
            self.editor.insert_str(&normalized.replace('\n', ""));
            return Vec::new();
        }
        if lines.len() > self.ui.paste_max_lines {
            self.warning(format!(
                "paste of {} lines not sent: the limit is {} (paste_max_lines in ~/.config/chat/config.toml)",
                lines.len(),
                self.ui.paste_max_lines
            ));
            return Vec::new();
        }
        // What was already typed starts the first line.
        let mut out = Vec::new();
        let mut first = self.editor.submit();
        first.push_str(lines.first().copied().unwrap_or_default());
        out.push(first);
        out.extend(lines.iter().skip(1).map(|l| (*l).to_string()));
        out.retain(|l| !l.trim().is_empty());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secure::Warning;

    fn key(code: KeyCode) -> KeyEvent {
        KeyEvent::new(code, KeyModifiers::NONE)
    }

    fn ctrl(c: char) -> KeyEvent {
        KeyEvent::new(KeyCode::Char(c), KeyModifiers::CONTROL)
    }

    fn app() -> App {
        App::new("host:1", "alice", UiConfig::default())
    }

    fn type_str(a: &mut App, s: &str) {
        for c in s.chars() {
            a.key(&key(KeyCode::Char(c)));
        }
    }

    #[test]
    fn enter_submits_and_ctrl_c_quits() {
        let mut a = app();
        type_str(&mut a, "hi there");
        assert_eq!(a.key(&key(KeyCode::Enter)), Action::Line("hi there".into()));
        assert!(a.editor.is_empty());
        type_str(&mut a, "x");
        // Ctrl-D quits only on an empty line.
        assert_eq!(a.key(&ctrl('d')), Action::None);
        assert_eq!(a.key(&ctrl('c')), Action::Quit);
    }

    #[test]
    fn tab_completes_commands_and_online_names_but_not_me() {
        let mut a = app();
        a.presence("bob", true);
        a.presence("alice", true);
        type_str(&mut a, "/w");
        a.key(&key(KeyCode::Tab));
        assert_eq!(a.editor.text(), "/whisper ");
        type_str(&mut a, "b");
        a.key(&key(KeyCode::Tab));
        assert_eq!(a.editor.text(), "/whisper bob ");
        assert_eq!(a.whisper_target(), Some("bob"));
        a.editor.set("a".into(), 1);
        a.key(&key(KeyCode::Tab));
        assert_eq!(a.editor.text(), "a", "our own name is not offered");
    }

    #[test]
    fn scrolling_up_counts_unread_and_end_catches_up() {
        let mut a = app();
        for i in 0..20 {
            a.notice(format!("n{i}"));
        }
        a.page = 5;
        a.key(&key(KeyCode::PageUp));
        assert_eq!(a.scroll, 5);
        a.notice("new");
        a.notice("newer");
        assert_eq!((a.scroll, a.unread), (7, 2));
        a.key(&KeyEvent::new(KeyCode::End, KeyModifiers::CONTROL));
        assert_eq!((a.scroll, a.unread), (0, 0));
        a.mouse(MouseEventKind::ScrollUp);
        assert_eq!(a.scroll, 3);
    }

    #[test]
    fn scrollback_is_capped() {
        let mut a = App::new(
            "h:1",
            "alice",
            UiConfig {
                scrollback: 100,
                ..UiConfig::default()
            },
        );
        for i in 0..150 {
            a.notice(format!("{i}"));
        }
        assert_eq!(a.entries.len(), 100);
        assert_eq!(a.entries.front().map(|e| e.text.as_str()), Some("-- 50"));
    }

    #[test]
    fn paste_sends_lines_or_refuses_above_the_limit() {
        let mut a = app();
        assert!(a.paste("one line").is_empty());
        assert_eq!(a.editor.text(), "one line");
        let sent = a.paste(" and more\nsecond\r\n\nthird\n");
        assert_eq!(sent, ["one line and more", "second", "third"]);
        assert!(a.editor.is_empty());
        let many = "x\n".repeat(6);
        assert!(a.paste(&many).is_empty());
        assert!(
            a.entries
                .back()
                .is_some_and(|e| e.kind == Kind::Warning && e.text.contains("6 lines"))
        );
    }

    #[test]
    fn messages_get_kinds_and_owners() {
        let mut a = app();
        let m = |from: &str, to: Option<&str>, action: bool| ChatMessage {
            from: from.into(),
            to: to.map(Into::into),
            room: None,
            text: "hi".into(),
            action,
            ts: 1_764_300_000_000,
            verified: false,
            late: false,
            server_ts: None,
        };
        a.events(vec![
            Event::Message(m("bob", None, false)),
            Event::Message(m("alice", Some("bob"), false)),
            Event::Message(m("bob", None, true)),
            Event::Warning(Warning::PinsNotSaved {
                error: "bad".into(),
            }),
        ]);
        let got: Vec<(Kind, bool, &str)> = a
            .entries
            .iter()
            .map(|e| (e.kind, e.own, e.text.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                (Kind::Message, false, "<bob> hi"),
                (Kind::Whisper, true, "-> *bob* hi"),
                (Kind::Action, false, "* bob hi"),
                (Kind::Warning, false, "!! cannot save the pinned keys: bad"),
            ]
        );
    }

    #[test]
    fn every_line_is_sanitized_on_its_way_in() {
        let mut a = app();
        // An error that quotes the server (a TLS name, a refusal) with CSI, OSC and bidi.
        a.warning("reconnecting failed: bad \u{1b}[2J\u{1b}]0;pwned\u{7}name\u{202e}x");
        a.frame_lines(vec!["-- \u{9b}31m\u{2067}y".into()]);
        for e in &a.entries {
            assert!(!e.text.chars().any(char::is_control), "{:?}", e.text);
            assert!(!e.text.contains(['\u{202e}', '\u{2067}']), "{:?}", e.text);
        }
        assert_eq!(
            a.entries[0].text,
            "!! reconnecting failed: bad \u{fffd}[2J\u{fffd}]0;pwned\u{fffd}name\u{fffd}x"
        );
    }
}
