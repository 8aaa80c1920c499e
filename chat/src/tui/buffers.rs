//! The full-screen interface's buffers: one for the server, one per room the user is in, one
//! per whisper partner. Each keeps its own lines, scroll position and unread counts; this
//! module decides which buffer a line belongs to, counts activity and highlights, and keeps
//! the bounded list of mentions. No I/O and no drawing here.

use std::collections::VecDeque;

use chatd_proto::ServerFrame;
use chatd_proto::frame::RoomEvent;
use chrono::{DateTime, Local};

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

/// One line of a buffer.
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
    /// The text as shown, sender included (`<bob> hi`, `-- bob joined`), sanitized; it may
    /// hold line breaks (each later line is drawn as a row of its own, indented).
    pub text: String,
    /// It names this user or one of `[ui] highlight_words`.
    pub highlight: bool,
}

/// Which conversation a buffer shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BufKind {
    /// Notices not about a conversation; always buffer 1, never closed.
    Server,
    /// A room (name without `#`).
    Room(String),
    /// Whispers with this user.
    Whisper(String),
}

impl BufKind {
    /// The name shown in the activity bar and by `/window`: `server`, `#room`, `user`.
    pub fn name(&self) -> String {
        match self {
            BufKind::Server => "server".to_string(),
            BufKind::Room(r) => format!("#{r}"),
            BufKind::Whisper(u) => u.clone(),
        }
    }
}

/// Where a line goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A line not about a conversation: the buffer being looked at, with a copy kept in the
    /// server buffer (the one place to find everything the server said).
    Current,
    /// The server buffer only (presence: who came online, who left the server).
    Server,
    /// A room's buffer, opened if needed.
    Room(String),
    /// A room's buffer if one is open, else the server buffer (a part or topic of a room
    /// whose buffer was closed does not open it again).
    RoomIfOpen(String),
    /// The whisper buffer with this user, opened if needed.
    Whisper(String),
}

/// One buffer.
#[derive(Debug, Clone)]
pub struct Buffer {
    /// What it shows.
    pub kind: BufKind,
    /// Lines, oldest first.
    pub entries: VecDeque<Entry>,
    /// How many shown entries the view is scrolled up from the newest (0: following).
    pub scroll: usize,
    /// Entries that arrived while scrolled up.
    pub unread: usize,
    /// Messages (not notices) that arrived while another buffer was shown.
    pub activity: usize,
    /// Of those, lines that highlight this user.
    pub highlights: usize,
    /// `/search TEXT`: only lines containing it (case-insensitively) are shown.
    pub search: Option<String>,
}

impl Buffer {
    fn new(kind: BufKind) -> Buffer {
        Buffer {
            kind,
            entries: VecDeque::new(),
            scroll: 0,
            unread: 0,
            activity: 0,
            highlights: 0,
            search: None,
        }
    }

    /// Whether `e` is shown under the current search (every entry when none).
    pub fn shows(&self, e: &Entry) -> bool {
        self.search
            .as_deref()
            .is_none_or(|s| e.text.to_lowercase().contains(&s.to_lowercase()))
    }

    /// The entries shown, oldest first (all, or those matching the search).
    pub fn shown(&self) -> Vec<&Entry> {
        self.entries.iter().filter(|e| self.shows(e)).collect()
    }
}

/// One line that highlighted this user, for `/mentions`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mention {
    /// The buffer's name when it came (`#ops`, `bob`).
    pub buffer: String,
    /// When.
    pub at: DateTime<Local>,
    /// The line as shown.
    pub text: String,
}

/// Why `/close` did not close.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Close {
    /// A whisper buffer: closed.
    Closed,
    /// A room buffer: part this room, then it is closed.
    Part(String),
    /// The server buffer stays.
    Refused(&'static str),
}

/// All buffers, in the order they opened (the server buffer first), and the one shown.
#[derive(Debug, Clone)]
pub struct Buffers {
    list: Vec<Buffer>,
    current: usize,
    /// Lines kept per buffer.
    scrollback: usize,
    /// Recent highlights, oldest first.
    mentions: VecDeque<Mention>,
    mentions_max: usize,
}

impl Buffers {
    /// Just the server buffer; each keeps `scrollback` lines, and `mentions_max` mentions
    /// are kept in all.
    pub fn new(scrollback: usize, mentions_max: usize) -> Buffers {
        Buffers {
            list: vec![Buffer::new(BufKind::Server)],
            current: 0,
            scrollback: scrollback.max(1),
            mentions: VecDeque::new(),
            mentions_max,
        }
    }

    /// Every buffer, in order (buffer N is `all()[N - 1]`).
    pub fn all(&self) -> &[Buffer] {
        &self.list
    }

    /// The buffer shown.
    pub fn current(&self) -> &Buffer {
        // `current` always indexes `list`, which always holds the server buffer.
        &self.list[self.current.min(self.list.len() - 1)]
    }

    /// The buffer shown, to change.
    pub fn current_mut(&mut self) -> &mut Buffer {
        let i = self.current.min(self.list.len() - 1);
        &mut self.list[i]
    }

    /// The number of the buffer shown (1-based, as Alt-N and `/window N` count).
    pub fn current_number(&self) -> usize {
        self.current + 1
    }

    /// The buffer showing `kind`, if open.
    pub fn find(&self, kind: &BufKind) -> Option<usize> {
        self.list.iter().position(|b| b.kind == *kind)
    }

    /// The buffer showing `kind`, opened (at the end) if needed.
    pub fn open(&mut self, kind: BufKind) -> usize {
        match self.find(&kind) {
            Some(i) => i,
            None => {
                self.list.push(Buffer::new(kind));
                self.list.len() - 1
            }
        }
    }

    /// Shows buffer `i` (0-based); its activity counts are read.
    fn show(&mut self, i: usize) {
        if let Some(b) = self.list.get_mut(i) {
            b.activity = 0;
            b.highlights = 0;
            self.current = i;
        }
    }

    /// Shows buffer `n` (1-based); false if there is none.
    pub fn switch(&mut self, n: usize) -> bool {
        if n == 0 || n > self.list.len() {
            return false;
        }
        self.show(n - 1);
        true
    }

    /// Shows the buffer of `kind`, opening it if needed.
    pub fn switch_to(&mut self, kind: BufKind) {
        let i = self.open(kind);
        self.show(i);
    }

    /// Shows the next buffer (after the last: the first).
    pub fn next(&mut self) {
        self.show((self.current + 1) % self.list.len());
    }

    /// Shows the previous buffer (before the first: the last).
    pub fn prev(&mut self) {
        self.show((self.current + self.list.len() - 1) % self.list.len());
    }

    /// `/close` of the buffer shown. A whisper buffer closes now; a room buffer closes
    /// once its part is sent ([`Buffers::close_room`]); the server buffer stays.
    pub fn close_current(&mut self) -> Close {
        match self.current().kind.clone() {
            BufKind::Server => Close::Refused(
                "the server buffer cannot be closed (/quit leaves chat; /window N or Alt-N shows another buffer)",
            ),
            BufKind::Room(room) => Close::Part(room),
            BufKind::Whisper(_) => {
                self.remove(self.current);
                Close::Closed
            }
        }
    }

    /// Closes `room`'s buffer, if open.
    pub fn close_room(&mut self, room: &str) {
        if let Some(i) = self.find(&BufKind::Room(room.to_string())) {
            self.remove(i);
        }
    }

    fn remove(&mut self, i: usize) {
        if i == 0 || i >= self.list.len() {
            return;
        }
        self.list.remove(i);
        // The one before takes its place, as in irssi.
        if self.current >= i {
            let to = self.current.saturating_sub(1).min(self.list.len() - 1);
            self.show(to);
        }
    }

    /// The buffer `target` names (opening it if needed); for [`Target::Current`], the
    /// buffer shown.
    pub fn resolve(&mut self, target: &Target) -> usize {
        match target {
            Target::Current => self.current,
            Target::Server => 0,
            Target::Room(r) => self.open(BufKind::Room(r.clone())),
            Target::RoomIfOpen(r) => self.find(&BufKind::Room(r.clone())).unwrap_or(0),
            Target::Whisper(u) => self.open(BufKind::Whisper(u.clone())),
        }
    }

    /// Adds `entry` where `target` says. A line for the buffer shown and not about a
    /// conversation is also kept in the server buffer; a warning for another buffer is
    /// copied into the buffer shown too, so it is seen now.
    pub fn push(&mut self, target: &Target, entry: Entry) {
        let i = self.resolve(target);
        if entry.highlight && !entry.own {
            self.mentions.push_back(Mention {
                buffer: self.list[i].kind.name(),
                at: entry.at,
                text: entry.text.clone(),
            });
            while self.mentions.len() > self.mentions_max {
                self.mentions.pop_front();
            }
        }
        let copy_to_server = *target == Target::Current && i != 0;
        let copy_to_current = entry.kind == Kind::Warning
            && i != self.current
            && matches!(target, Target::Server | Target::RoomIfOpen(_));
        if copy_to_server {
            self.push_at(0, entry.clone());
        }
        if copy_to_current {
            self.push_at(self.current, entry.clone());
        }
        self.push_at(i, entry);
    }

    fn push_at(&mut self, i: usize, entry: Entry) {
        let current = i == self.current;
        let scrollback = self.scrollback;
        let Some(b) = self.list.get_mut(i) else {
            return;
        };
        if current {
            if b.scroll > 0 && b.shows(&entry) {
                // Keep the view where the reader left it.
                b.scroll += 1;
                b.unread += 1;
            }
        } else if matches!(entry.kind, Kind::Message | Kind::Action | Kind::Whisper) && !entry.own {
            b.activity += 1;
            b.highlights += usize::from(entry.highlight);
        }
        b.entries.push_back(entry);
        while b.entries.len() > scrollback {
            b.entries.pop_front();
        }
        let shown = b.entries.iter().filter(|e| b.shows(e)).count();
        b.scroll = b.scroll.min(shown.saturating_sub(1));
    }

    /// Buffers with messages not seen yet: (number, name, messages, highlights), in order.
    pub fn activity(&self) -> Vec<(usize, String, usize, usize)> {
        self.list
            .iter()
            .enumerate()
            .filter(|(i, b)| *i != self.current && b.activity > 0)
            .map(|(i, b)| (i + 1, b.kind.name(), b.activity, b.highlights))
            .collect()
    }

    /// The recent highlights, oldest first.
    pub fn mentions(&self) -> &VecDeque<Mention> {
        &self.mentions
    }
}

/// Where the lines a server frame renders to go: a room's events, topic and member list
/// to its buffer (our own join opens it, as it comes before the room's first message);
/// presence (who is on the server) to the server buffer; answers to commands and
/// everything else to the buffer shown.
pub fn frame_target(frame: &ServerFrame, me: &str) -> Target {
    match frame {
        ServerFrame::Room {
            room,
            user,
            event: RoomEvent::Join,
            ..
        } if user == me => Target::Room(room.clone()),
        ServerFrame::Room { room, .. } | ServerFrame::Topic { room, .. } => {
            Target::RoomIfOpen(room.clone())
        }
        ServerFrame::Members { room } => Target::RoomIfOpen(room.name.clone()),
        ServerFrame::Held { conversation, .. } => match conversation.strip_prefix('#') {
            Some(room) => Target::RoomIfOpen(room.to_string()),
            None => Target::Current,
        },
        ServerFrame::Presence { .. } => Target::Server,
        _ => Target::Current,
    }
}

/// Whether `text` names `me` or one of `words` as a whole word, ignoring case. A word's
/// edges are characters that cannot be part of a name (not a letter, digit or `_`), so
/// `bob` matches in `bob: hi` and `@bob.` but not in `bobby`.
pub fn highlights(text: &str, me: &str, words: &[String]) -> bool {
    let text = text.to_lowercase();
    std::iter::once(me)
        .chain(words.iter().map(String::as_str))
        .filter(|w| !w.is_empty())
        .any(|w| whole_word(&text, &w.to_lowercase()))
}

fn whole_word(text: &str, word: &str) -> bool {
    let inner = |c: char| c.is_alphanumeric() || c == '_';
    text.match_indices(word).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + word.len()..].chars().next();
        !before.is_some_and(inner) && !after.is_some_and(inner)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(kind: Kind, text: &str, highlight: bool) -> Entry {
        Entry {
            at: Local::now(),
            kind,
            from: None,
            own: false,
            text: text.into(),
            highlight,
        }
    }

    fn texts(b: &Buffer) -> Vec<&str> {
        b.entries.iter().map(|e| e.text.as_str()).collect()
    }

    #[test]
    fn our_own_join_opens_the_room_and_others_events_do_not() {
        let event = |user: &str, event| ServerFrame::Room {
            room: "ops".into(),
            user: user.into(),
            event,
            by: None,
        };
        let ops = || Target::Room("ops".into());
        let if_open = || Target::RoomIfOpen("ops".into());
        assert_eq!(
            frame_target(&event("alice", RoomEvent::Join), "alice"),
            ops()
        );
        assert_eq!(
            frame_target(&event("bob", RoomEvent::Join), "alice"),
            if_open()
        );
        assert_eq!(
            frame_target(&event("alice", RoomEvent::Part), "alice"),
            if_open()
        );
    }

    #[test]
    fn lines_land_in_their_buffers_and_count_while_unseen() {
        let mut bs = Buffers::new(100, 10);
        bs.switch_to(BufKind::Room("lobby".into()));
        bs.push(
            &Target::Room("ops".into()),
            entry(Kind::Message, "<bob> hi", false),
        );
        bs.push(
            &Target::Whisper("bob".into()),
            entry(Kind::Whisper, "*bob* psst alice", true),
        );
        bs.push(&Target::Current, entry(Kind::Notice, "-- answer", false));
        bs.push(
            &Target::Server,
            entry(Kind::Notice, "-- carol is online", false),
        );
        let names: Vec<String> = bs.all().iter().map(|b| b.kind.name()).collect();
        assert_eq!(names, ["server", "#lobby", "#ops", "bob"]);
        assert_eq!(texts(&bs.all()[1]), ["-- answer"]);
        assert_eq!(texts(&bs.all()[0]), ["-- answer", "-- carol is online"]);
        assert_eq!(texts(&bs.all()[2]), ["<bob> hi"]);
        // Notices are not activity; messages are, highlights counted apart.
        assert_eq!(
            bs.activity(),
            [(3, "#ops".into(), 1, 0), (4, "bob".into(), 1, 1)]
        );
        assert_eq!(bs.mentions().len(), 1);
        assert_eq!(bs.mentions()[0].buffer, "bob");
        // Showing a buffer reads it.
        assert!(bs.switch(4));
        assert_eq!(bs.activity(), [(3, "#ops".into(), 1, 0)]);
        assert!(!bs.switch(5) && !bs.switch(0));
        assert_eq!(bs.current_number(), 4);
    }

    #[test]
    fn warnings_for_elsewhere_are_seen_here_too() {
        let mut bs = Buffers::new(100, 10);
        bs.switch_to(BufKind::Room("lobby".into()));
        bs.push(&Target::Server, entry(Kind::Warning, "!! new key", false));
        assert_eq!(texts(bs.current()), ["!! new key"]);
        assert_eq!(texts(&bs.all()[0]), ["!! new key"]);
        // A room whose buffer was closed: the server buffer, and a copy here.
        bs.push(
            &Target::RoomIfOpen("gone".into()),
            entry(Kind::Warning, "!! w", false),
        );
        assert_eq!(bs.all().len(), 2);
        assert_eq!(texts(bs.current()), ["!! new key", "!! w"]);
    }

    #[test]
    fn next_prev_wrap_and_close_rules() {
        let mut bs = Buffers::new(100, 10);
        bs.open(BufKind::Room("lobby".into()));
        bs.open(BufKind::Whisper("bob".into()));
        bs.prev();
        assert_eq!(bs.current_number(), 3);
        bs.next();
        assert_eq!(bs.current_number(), 1);
        assert!(matches!(bs.close_current(), Close::Refused(_)));
        bs.next();
        assert_eq!(bs.close_current(), Close::Part("lobby".into()));
        bs.close_room("lobby");
        assert_eq!(bs.current().kind, BufKind::Server);
        bs.switch(2);
        assert_eq!(bs.close_current(), Close::Closed);
        assert_eq!(bs.all().len(), 1);
        assert_eq!(bs.current_number(), 1);
    }

    #[test]
    fn scrollback_scroll_and_search_are_per_buffer() {
        let mut bs = Buffers::new(5, 2);
        for i in 0..8 {
            bs.push(
                &Target::Server,
                entry(Kind::Notice, &format!("n{i}"), false),
            );
        }
        assert_eq!(texts(bs.current()), ["n3", "n4", "n5", "n6", "n7"]);
        bs.current_mut().scroll = 2;
        bs.push(&Target::Server, entry(Kind::Notice, "n8", false));
        assert_eq!((bs.current().scroll, bs.current().unread), (3, 1));
        bs.current_mut().search = Some("N8".into());
        assert_eq!(bs.current().shown().len(), 1);
        // The other buffer's scroll is its own.
        bs.switch_to(BufKind::Room("ops".into()));
        assert_eq!(bs.current().scroll, 0);
        for i in 0..3 {
            bs.push(
                &Target::Current,
                entry(Kind::Message, &format!("x{i}"), true),
            );
        }
        assert_eq!(bs.mentions().len(), 2, "bounded");
        assert_eq!(bs.mentions()[0].text, "x1");
    }

    #[test]
    fn highlight_is_a_whole_word_in_any_case() {
        let words = vec!["deploy".to_string()];
        assert!(highlights("hi Alice!", "alice", &words));
        assert!(highlights("@alice: look", "alice", &words));
        assert!(highlights("ALICE", "alice", &[]));
        assert!(!highlights("alicea and malice", "alice", &words));
        assert!(highlights("time to Deploy.", "alice", &words));
        assert!(!highlights("redeployed", "alice", &words));
        assert!(highlights("bob.smith, hi", "bob.smith", &[]));
        assert!(!highlights("bob.smithy", "bob.smith", &[]));
        assert!(!highlights("", "alice", &[String::new()]));
    }
}
