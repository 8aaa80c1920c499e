//! The state of the full-screen interface and what keys do to it. No I/O here: the event
//! loop (`tui::run`) feeds keys and server events in and carries out the returned actions.

use std::collections::BTreeSet;

use chrono::{Local, TimeZone};
use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers, MouseEventKind};

use crate::config::{Bell, UiConfig};
use crate::format;
use crate::secure::Notice;
use crate::secure::{ChatMessage, Event};
use crate::text::{sanitize, sanitize_lines};
use crate::tui::buffers::{BufKind, Buffers, Target, highlights};
use crate::tui::complete::{Completer, Sources};
use crate::tui::editor::Editor;

pub use crate::tui::buffers::{Entry, Kind};

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
    /// The buffers (server, rooms, whispers), each with its lines and scroll position.
    pub buffers: Buffers,
    /// Users online.
    pub online: Vec<String>,
    /// Who is in the buffer shown (the nick list), sorted.
    pub members: Vec<String>,
    /// Users the last online list said are away.
    pub away: BTreeSet<String>,
    /// The room everyone is in (its messages carry no room name); empty before login.
    pub default_room: String,
    /// A bell is due (written to the terminal after the next draw).
    pub bell: bool,
    /// The side panel is wanted (it still hides on narrow terminals).
    pub show_panel: bool,
    /// The input line.
    pub editor: Editor,
    /// Horizontal scroll of the input line, in columns.
    pub input_scroll: usize,
    completer: Completer,
    /// Rooms, fingerprints and devices for completing command arguments.
    pub complete_from: Sources,
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
    /// Mouse capture is wanted (the event loop turns the terminal's mouse mode to match).
    pub mouse: bool,
}

/// The commands of the client's table (by name: `/w` Tab gives `/whisper`), for Tab
/// completion.
fn client_commands() -> Vec<String> {
    crate::commands::COMMANDS
        .iter()
        .filter(|c| c.client())
        .map(|c| c.name.to_string())
        .collect()
}

impl App {
    /// A fresh interface for `user` on `server`.
    pub fn new(server: &str, user: &str, ui: UiConfig) -> App {
        let mouse = ui.mouse;
        App {
            buffers: Buffers::new(ui.scrollback, ui.mentions_max),
            online: Vec::new(),
            members: Vec::new(),
            away: BTreeSet::new(),
            default_room: String::new(),
            bell: false,
            show_panel: true,
            editor: Editor::new(ui.history),
            input_scroll: 0,
            completer: Completer::new(),
            complete_from: Sources::default(),
            commands: client_commands(),
            server: server.to_string(),
            user: user.to_string(),
            state: ConnState::Connected,
            tls: String::new(),
            key_short: String::new(),
            ui,
            page: 10,
            target: None,
            mouse,
        }
    }

    /// Appends an entry where `target` says; each buffer drops its oldest beyond the
    /// scrollback limit.
    pub fn push_to(&mut self, target: &Target, entry: Entry) {
        self.buffers.push(target, entry);
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
    /// can quote the server. Line breaks stay (an error may explain itself over a few lines).
    fn line(&mut self, kind: Kind, text: String) {
        self.line_to(&Target::Current, kind, text);
    }

    fn line_to(&mut self, target: &Target, kind: Kind, text: String) {
        let text = sanitize_lines(&text);
        self.push_to(
            target,
            Entry {
                at: Local::now(),
                kind,
                from: None,
                own: false,
                text,
                highlight: false,
            },
        );
    }

    /// Lines rendered by [`format::render_bodies`] (frames other than messages), for the
    /// buffer shown.
    pub fn frame_lines(&mut self, lines: Vec<String>) {
        self.frame_lines_to(&Target::Current, lines);
    }

    /// [`App::frame_lines`] for the buffer `target` names.
    pub fn frame_lines_to(&mut self, target: &Target, lines: Vec<String>) {
        for text in lines {
            let kind = if text.starts_with("!! ") {
                Kind::Warning
            } else {
                Kind::Notice
            };
            self.line_to(target, kind, text);
        }
    }

    /// End-to-end events: verified messages and the secure layer's notices and warnings.
    pub fn events(&mut self, events: Vec<Event>) {
        for e in events {
            match e {
                Event::Message(m) => self.message(&m),
                Event::Notice(n) => {
                    // Our own /join: its room's buffer opens and is shown.
                    if let Notice::Joined { room, .. } | Notice::Switched { room } = &n {
                        self.buffers.switch_to(BufKind::Room(room.clone()));
                    }
                    self.notice(format::notice(&n));
                }
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
        let own = m.from == self.user;
        let target = match (&m.to, &m.room) {
            // Our own copy names the peer in `to`; theirs names us.
            (Some(to), _) if own => Target::Whisper(to.clone()),
            (Some(_), _) => Target::Whisper(m.from.clone()),
            (None, Some(room)) => Target::Room(room.clone()),
            (None, None) if !self.default_room.is_empty() => {
                Target::Room(self.default_room.clone())
            }
            (None, None) => Target::Current,
        };
        let highlight = !own && highlights(&m.text, &self.user, &self.ui.highlight_words);
        self.bell |= !own
            && match self.ui.bell {
                Bell::Off => false,
                Bell::Highlight => highlight,
                Bell::All => true,
            };
        let entry = Entry {
            at,
            kind,
            from: Some(sanitize(&m.from)),
            own,
            text: format::message_lines(m, &self.user),
            highlight,
        };
        // A whisper we send from another buffer is echoed there too, as irssi does, so
        // what was typed is seen where it was typed.
        if own && kind == Kind::Whisper {
            let here = &self.buffers.current().kind;
            if !matches!(here, BufKind::Whisper(p) if Some(p) == m.to.as_ref()) {
                self.buffers.push(&Target::Current, entry.clone());
            }
        }
        self.push_to(&target, entry);
    }

    /// A bell is due; reading it clears it.
    pub fn take_bell(&mut self) -> bool {
        std::mem::take(&mut self.bell)
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

    /// The user typed `/clear`: the buffer shown is emptied.
    pub fn clear(&mut self) {
        let b = self.buffers.current_mut();
        b.entries.clear();
        b.scroll = 0;
        b.unread = 0;
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
        let b = self.buffers.current_mut();
        let shown = b.shown().len();
        b.scroll = b.scroll.saturating_add(n).min(shown.saturating_sub(1));
    }

    /// Scrolls the view down (newer) by `n` entries; at the bottom the unread count resets.
    pub fn scroll_down(&mut self, n: usize) {
        let b = self.buffers.current_mut();
        b.scroll = b.scroll.saturating_sub(n);
        b.unread = b.unread.min(b.scroll);
    }

    /// A key press.
    pub fn key(&mut self, key: &KeyEvent) -> Action {
        if key.kind == KeyEventKind::Release {
            return Action::None;
        }
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        let alt = key.modifiers.contains(KeyModifiers::ALT);
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
            // Alt-1 ... Alt-9: buffer N; Alt-0: buffer 10, as in irssi.
            KeyCode::Char(c @ '0'..='9') if alt => {
                let n = c.to_digit(10).map_or(0, |d| if d == 0 { 10 } else { d });
                self.buffers.switch(usize::try_from(n).unwrap_or(0));
            }
            KeyCode::Left if alt => self.buffers.prev(),
            KeyCode::Right if alt => self.buffers.next(),
            KeyCode::Enter => return Action::Line(self.editor.submit()),
            KeyCode::Tab => self.complete(),
            KeyCode::PageUp => self.scroll_up(self.page.max(1)),
            KeyCode::PageDown => self.scroll_down(self.page.max(1)),
            KeyCode::End if ctrl => self.scroll_down(usize::MAX),
            KeyCode::Home if ctrl => self.scroll_up(usize::MAX),
            KeyCode::F(2) => self.show_panel = !self.show_panel,
            KeyCode::Char('m') if key.modifiers == KeyModifiers::ALT => self.toggle_mouse(),
            _ => {
                self.editor.handle_key(key);
            }
        }
        Action::None
    }

    /// Alt-m: mouse capture off (the terminal selects text) or on (the wheel scrolls).
    pub fn toggle_mouse(&mut self) {
        self.mouse = !self.mouse;
        self.notice(if self.mouse {
            "mouse on: the wheel scrolls, Shift+drag selects text (Alt-m turns it off)"
        } else {
            "mouse off: the terminal selects text, PageUp/PageDown scroll (Alt-m turns it on)"
        });
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
        users.extend(
            self.members
                .iter()
                .filter(|m| !self.online.contains(m))
                .cloned(),
        );
        users.retain(|u| u != &self.user);
        if let Some((text, cursor)) = self.completer.complete_with(
            self.editor.text(),
            self.editor.cursor(),
            &self.commands,
            &users,
            &self.complete_from,
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
        assert_eq!(a.buffers.current().scroll, 5);
        a.notice("new");
        a.notice("newer");
        let at = |a: &App| (a.buffers.current().scroll, a.buffers.current().unread);
        assert_eq!(at(&a), (7, 2));
        a.key(&KeyEvent::new(KeyCode::End, KeyModifiers::CONTROL));
        assert_eq!(at(&a), (0, 0));
        a.mouse(MouseEventKind::ScrollUp);
        assert_eq!(a.buffers.current().scroll, 3);
    }

    #[test]
    fn alt_m_toggles_the_mouse_and_says_so() {
        let mut a = App::new(
            "h:1",
            "alice",
            UiConfig {
                mouse: false,
                ..UiConfig::default()
            },
        );
        assert!(!a.mouse);
        a.key(&KeyEvent::new(KeyCode::Char('m'), KeyModifiers::ALT));
        assert!(a.mouse);
        assert!(
            a.buffers
                .current()
                .entries
                .back()
                .is_some_and(|e| e.text.starts_with("-- mouse on"))
        );
        a.key(&KeyEvent::new(KeyCode::Char('m'), KeyModifiers::ALT));
        assert!(!a.mouse);
        assert!(
            a.buffers
                .current()
                .entries
                .back()
                .is_some_and(|e| e.text.starts_with("-- mouse off"))
        );
        // A plain m is typed.
        a.key(&key(KeyCode::Char('m')));
        assert_eq!((a.mouse, a.editor.text()), (false, "m"));
    }

    #[test]
    fn multi_line_texts_keep_their_breaks_and_nothing_else() {
        let mut a = app();
        a.warning("certificate changed\r\n  pinned: A\n  now:\u{1b}[2J B");
        let m = ChatMessage {
            from: "bob".into(),
            to: None,
            room: None,
            text: "one\ntwo\u{7}".into(),
            action: false,
            ts: 1_764_300_000_000,
            verified: false,
            late: false,
            server_ts: None,
        };
        a.events(vec![Event::Message(m)]);
        assert_eq!(
            a.buffers.current().entries[0].text,
            "!! certificate changed\n  pinned: A\n  now:\u{fffd}[2J B"
        );
        assert_eq!(
            a.buffers.current().entries[1].text,
            "<bob> one\ntwo\u{fffd}"
        );
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
        let entries = &a.buffers.current().entries;
        assert_eq!(entries.len(), 100);
        assert_eq!(entries.front().map(|e| e.text.as_str()), Some("-- 50"));
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
            a.buffers
                .current()
                .entries
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
            .buffers
            .current()
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
        for e in &a.buffers.current().entries {
            assert!(!e.text.chars().any(char::is_control), "{:?}", e.text);
            assert!(!e.text.contains(['\u{202e}', '\u{2067}']), "{:?}", e.text);
        }
        assert_eq!(
            a.buffers.current().entries[0].text,
            "!! reconnecting failed: bad \u{fffd}[2J\u{fffd}]0;pwned\u{fffd}name\u{fffd}x"
        );
    }
}
