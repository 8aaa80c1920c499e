//! The commands only the full-screen interface has, about its buffers: `/window [N]`,
//! `/close`, `/mentions` and `/search [TEXT]`. The plain mode has one stream, so there
//! [`full_screen_only`] answers them instead of sending them to the server.

use crate::tui::app::App;
use crate::tui::buffers::{BufKind, Close};

/// The commands this module handles (without the slash).
pub const COMMANDS: [&str; 4] = ["window", "close", "mentions", "search"];

/// What a typed line was, for the event loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Local {
    /// Not one of these commands: dispatch it as usual.
    NotMine,
    /// Handled here.
    Done,
    /// `/close` of a room buffer: part the room, then close its buffer.
    Part(String),
}

/// The answer the plain mode gives for these commands; None for any other line.
pub fn full_screen_only(line: &str) -> Option<String> {
    let (name, _) = command_name(line)?;
    COMMANDS.contains(&name).then(|| {
        format!(
            "/{name} works in the full-screen interface only; here every conversation is one \
             stream (room lines start with [#room])"
        )
    })
}

/// The command name of `line` and its arguments (`/window 2` gives `window` and `2`), if
/// it is a command.
fn command_name(line: &str) -> Option<(&str, &str)> {
    let rest = line.trim_start().strip_prefix('/')?;
    let (name, args) = match rest.find(char::is_whitespace) {
        Some(i) => (&rest[..i], rest[i..].trim()),
        None => (rest, ""),
    };
    (!name.is_empty() && !name.starts_with('/')).then_some((name, args))
}

impl App {
    /// Handles `line` if it is one of [`COMMANDS`].
    pub fn local_command(&mut self, line: &str) -> Local {
        let Some((name, args)) = command_name(line) else {
            return Local::NotMine;
        };
        match name {
            "window" => self.window(args),
            "close" => return self.close(),
            "mentions" => self.list_mentions(),
            "search" => self.search(args),
            _ => return Local::NotMine,
        }
        Local::Done
    }

    fn window(&mut self, args: &str) {
        if args.is_empty() {
            let current = self.buffers.current_number();
            let lines: Vec<String> = self
                .buffers
                .all()
                .iter()
                .enumerate()
                .map(|(i, b)| {
                    let mark = if i + 1 == current { " (shown)" } else { "" };
                    let new = match (b.activity, b.highlights) {
                        (0, _) => String::new(),
                        (n, 0) => format!(", {n} new"),
                        (n, h) => format!(", {n} new, {h} naming you"),
                    };
                    format!("  {} {}{mark}{new}", i + 1, b.kind.name())
                })
                .collect();
            self.notice(format!("{} buffers:", lines.len()));
            self.frame_lines(lines);
            return;
        }
        match args.parse::<usize>() {
            Ok(n) if self.buffers.switch(n) => {}
            Ok(n) => {
                let count = self.buffers.all().len();
                self.warning(format!(
                    "no buffer {n}: there are {count} (/window lists them)"
                ));
            }
            Err(_) => self.warning("usage: /window [N]"),
        }
    }

    fn close(&mut self) -> Local {
        match self.buffers.close_current() {
            Close::Closed => Local::Done,
            Close::Refused(why) => {
                self.warning(why);
                Local::Done
            }
            Close::Part(room) if room == self.default_room => {
                self.warning(format!(
                    "#{room} cannot be left (everyone is in it), so its buffer stays"
                ));
                Local::Done
            }
            Close::Part(room) => Local::Part(room),
        }
    }

    fn list_mentions(&mut self) {
        let mentions = self.buffers.mentions().clone();
        if mentions.is_empty() {
            self.notice("no mentions yet");
            return;
        }
        self.notice(format!(
            "{} recent mentions (at most {}, [ui] mentions_max):",
            mentions.len(),
            self.ui.mentions_max
        ));
        let lines = mentions
            .iter()
            .map(|m| {
                format!(
                    "  {} {} {}",
                    m.buffer,
                    m.at.format(&self.ui.time_format),
                    m.text
                )
            })
            .collect();
        self.frame_lines(lines);
    }

    fn search(&mut self, text: &str) {
        let b = self.buffers.current_mut();
        b.scroll = 0;
        b.unread = 0;
        b.search = (!text.is_empty()).then(|| text.to_string());
    }

    /// The status bar's note on the buffer shown: `search "x": N lines (/search clears)`.
    pub fn search_note(&self) -> Option<String> {
        let b = self.buffers.current();
        let text = b.search.as_deref()?;
        Some(format!(
            "search \"{text}\": {} lines (/search clears)",
            b.shown().len()
        ))
    }

    /// Whom the nick list shows for the buffer shown: for a room other than the default
    /// one, `room_members` (what the end-to-end layer accepted); for a whisper, the two
    /// people; else everyone online.
    pub fn update_members(&mut self, room_members: impl FnOnce(&str) -> Option<Vec<String>>) {
        self.members = match &self.buffers.current().kind {
            BufKind::Whisper(peer) => {
                let mut two = vec![self.user.clone(), peer.clone()];
                two.sort_by_key(|u| u.to_lowercase());
                two
            }
            BufKind::Room(room) => room_members(room).unwrap_or_else(|| self.online.clone()),
            BufKind::Server => self.online.clone(),
        };
    }

    /// The nick list's title: `online N` for everyone, `#room N`, or the whisper partner.
    pub fn members_title(&self) -> String {
        match &self.buffers.current().kind {
            BufKind::Room(room) if *room != self.default_room => {
                format!("#{room} {}", self.members.len())
            }
            BufKind::Whisper(peer) => format!("with {peer}"),
            _ => format!("online {}", self.members.len()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Bell, UiConfig};
    use crate::secure::{ChatMessage, Event};
    use crate::tui::buffers::Target;

    fn app() -> App {
        let mut a = App::new("h:1", "alice", UiConfig::default());
        a.default_room = "lobby".into();
        a.buffers.switch_to(BufKind::Room("lobby".into()));
        a
    }

    fn msg(from: &str, room: Option<&str>, to: Option<&str>, text: &str) -> Event {
        Event::Message(ChatMessage {
            from: from.into(),
            to: to.map(Into::into),
            room: room.map(Into::into),
            text: text.into(),
            action: false,
            ts: 1_764_300_000_000,
            verified: false,
            late: false,
            server_ts: None,
        })
    }

    fn last(a: &App) -> String {
        a.buffers
            .current()
            .entries
            .back()
            .map(|e| e.text.clone())
            .unwrap_or_default()
    }

    #[test]
    fn messages_route_to_rooms_and_partners_and_ring_on_highlights() {
        let mut a = app();
        a.events(vec![
            msg("bob", None, None, "hi all"),
            msg("bob", Some("ops"), None, "alice: deploy?"),
            msg("bob", None, Some("alice"), "psst"),
        ]);
        let names: Vec<String> = a.buffers.all().iter().map(|b| b.kind.name()).collect();
        assert_eq!(names, ["server", "#lobby", "#ops", "bob"]);
        assert_eq!(last(&a), "<bob> hi all");
        assert_eq!(
            a.buffers.activity(),
            [(3, "#ops".into(), 1, 1), (4, "bob".into(), 1, 0)]
        );
        assert!(a.take_bell() && !a.take_bell());
        // Our own whisper, typed in the lobby: in bob's buffer and echoed here.
        a.events(vec![msg("alice", None, Some("bob"), "back")]);
        assert_eq!(last(&a), "-> *bob* back");
        assert!(!a.take_bell(), "our own lines never ring");
        a.buffers.switch(4);
        assert_eq!(last(&a), "-> *bob* back");
    }

    #[test]
    fn window_close_mentions_and_search() {
        let mut a = app();
        a.events(vec![
            msg("bob", Some("ops"), None, "ALICE look"),
            msg("bob", None, Some("alice"), "psst"),
        ]);
        assert_eq!(a.local_command("/window 3"), Local::Done);
        assert_eq!(a.buffers.current_number(), 3);
        assert_eq!(a.local_command("/window 9"), Local::Done);
        assert!(
            last(&a).contains("no buffer 9: there are 4"),
            "{}",
            last(&a)
        );
        assert_eq!(a.local_command("/window"), Local::Done);
        assert_eq!(last(&a), "  4 bob, 1 new");
        assert_eq!(a.local_command("/mentions"), Local::Done);
        assert!(last(&a).starts_with("  #ops ") && last(&a).ends_with("<bob> ALICE look"));
        assert_eq!(a.local_command("/close"), Local::Part("ops".into()));
        a.buffers.switch(4);
        assert_eq!(a.local_command("/close"), Local::Done);
        assert_eq!(a.buffers.all().len(), 3);
        a.buffers.switch(2);
        assert_eq!(a.local_command("/close"), Local::Done);
        assert!(last(&a).contains("cannot be left"));
        a.buffers.switch(1);
        a.local_command("/close");
        assert!(last(&a).contains("server buffer cannot be closed"));
        // Search shows only matching lines of this buffer; alone, it clears.
        a.buffers.switch(2);
        a.push_to(&Target::Current, a.buffers.current().entries[0].clone());
        a.local_command("/search LEFT");
        assert_eq!(a.buffers.current().shown().len(), 2);
        assert!(a.search_note().is_some_and(|n| n.contains(": 2 lines")));
        a.local_command("/search");
        assert!(a.search_note().is_none());
        assert_eq!(a.local_command("//window"), Local::NotMine);
        assert_eq!(a.local_command("/join x"), Local::NotMine);
    }

    #[test]
    fn nick_list_follows_the_buffer() {
        let mut a = app();
        a.online = vec!["alice".into(), "bob".into(), "carol".into()];
        let ops = |r: &str| (r == "ops").then(|| vec!["alice".to_string(), "bob".to_string()]);
        a.update_members(ops);
        assert_eq!((a.members.len(), a.members_title()), (3, "online 3".into()));
        a.buffers.switch_to(BufKind::Room("ops".into()));
        a.update_members(ops);
        assert_eq!(a.members, ["alice", "bob"]);
        assert_eq!(a.members_title(), "#ops 2");
        a.buffers.switch_to(BufKind::Whisper("carol".into()));
        a.update_members(ops);
        assert_eq!(a.members, ["alice", "carol"]);
    }

    /// Draws `a` on a `w` x `h` TestBackend in `theme`: the rows and the buffer.
    fn draw(
        a: &mut App,
        theme: crate::config::Theme,
        w: u16,
        h: u16,
    ) -> (Vec<String>, ratatui::buffer::Buffer) {
        let mut t = ratatui::Terminal::new(ratatui::backend::TestBackend::new(w, h)).unwrap();
        let styles = crate::tui::theme::Styles::new(theme);
        t.draw(|f| crate::tui::view::draw(f, a, &styles)).unwrap();
        let buf = t.backend().buffer().clone();
        let rows = (0..h)
            .map(|y| (0..w).map(|x| buf[(x, y)].symbol().to_string()).collect())
            .collect();
        (rows, buf)
    }

    #[test]
    fn the_bar_marks_activity_and_highlights_in_both_themes() {
        use crate::config::Theme;
        for theme in [Theme::Dark, Theme::Light] {
            let styles = crate::tui::theme::Styles::new(theme);
            let mut a = app();
            a.online = vec!["alice".into(), "bob".into()];
            a.away.insert("bob".into());
            a.events(vec![
                msg("bob", Some("ops"), None, "alice: look"),
                msg("bob", None, Some("alice"), "psst"),
            ]);
            a.update_members(|_| None);
            let (rows, buf) = draw(&mut a, theme, 160, 8);
            let status = &rows[6];
            assert!(
                status.contains("2:#lobby │ act: 3:#ops(1)* 4:bob(1)"),
                "{rows:#?}"
            );
            let star = status.find("(1)*").unwrap() + 3;
            let x = u16::try_from(status[..star].chars().count()).unwrap();
            assert_eq!(buf[(x, 6)].bg, styles.highlight().bg.unwrap(), "{theme:?}");
            assert!(rows[2].contains("│bob (away)"), "{rows:#?}");
            // In #ops the line naming alice is drawn in the highlight style.
            a.buffers.switch(3);
            a.update_members(|_| Some(vec!["alice".into(), "bob".into()]));
            let (rows, buf) = draw(&mut a, theme, 60, 8);
            let y = rows.iter().position(|r| r.contains("alice: look")).unwrap();
            let x = u16::try_from(rows[y].find("alice: look").unwrap()).unwrap();
            let y = u16::try_from(y).unwrap();
            assert_eq!(buf[(x, y)].bg, styles.highlight().bg.unwrap(), "{theme:?}");
            assert!(rows[0].contains("#ops 2"), "{rows:#?}");
        }
    }

    #[test]
    fn the_bell_follows_the_config() {
        for (bell, highlight, other) in [
            (Bell::Off, false, false),
            (Bell::Highlight, true, false),
            (Bell::All, true, true),
        ] {
            let mut a = app();
            a.ui.bell = bell;
            a.events(vec![msg("bob", None, None, "hi alice")]);
            assert_eq!(a.take_bell(), highlight, "{bell:?}");
            a.events(vec![msg("bob", None, None, "hi all")]);
            assert_eq!(a.take_bell(), other, "{bell:?}");
        }
    }

    #[test]
    fn plain_mode_answers_instead_of_asking_the_server() {
        for line in ["/window", "/window 2", "  /close", "/mentions", "/search x"] {
            assert!(
                full_screen_only(line).is_some_and(|w| w.contains("full-screen")),
                "{line}"
            );
        }
        for line in ["/join x", "//window", "window", "/windows"] {
            assert_eq!(full_screen_only(line), None, "{line}");
        }
    }
}
