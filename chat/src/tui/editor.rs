//! The input line: cursor movement, editing keys, history; graphemes and wide characters.
//!
//! The cursor is a byte offset that always sits on a grapheme-cluster boundary, so one key
//! moves over or deletes one user-perceived character (é, 漢, 👍🏽, a ZWJ family) at a time.

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use unicode_segmentation::UnicodeSegmentation;
use unicode_width::UnicodeWidthStr;

/// The line being typed, with kill buffer and history.
#[derive(Debug, Clone)]
pub struct Editor {
    text: String,
    cursor: usize,
    /// The last killed text, for Ctrl-Y.
    killed: String,
    history: Vec<String>,
    history_cap: usize,
    /// Position while browsing history (None: the live line).
    browsing: Option<usize>,
    /// The live line saved while browsing.
    draft: String,
}

impl Editor {
    /// An empty line keeping up to `history_cap` entries of history.
    pub fn new(history_cap: usize) -> Editor {
        Editor {
            text: String::new(),
            cursor: 0,
            killed: String::new(),
            history: Vec::new(),
            history_cap,
            browsing: None,
            draft: String::new(),
        }
    }

    /// The text.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The cursor, a byte offset into [`Editor::text`].
    pub fn cursor(&self) -> usize {
        self.cursor
    }

    /// True when nothing is typed.
    pub fn is_empty(&self) -> bool {
        self.text.is_empty()
    }

    /// Replaces the text (Tab completion); the cursor is moved to a boundary.
    pub fn set(&mut self, text: String, cursor: usize) {
        self.text = text;
        self.cursor = self.boundary_at_or_before(cursor.min(self.text.len()));
    }

    /// Inserts text at the cursor; control characters (newlines included) are dropped.
    pub fn insert_str(&mut self, s: &str) {
        let clean: String = s.chars().filter(|c| !c.is_control()).collect();
        self.text.insert_str(self.cursor, &clean);
        self.cursor += clean.len();
    }

    /// Takes the line (recording it in history) and leaves the editor empty.
    pub fn submit(&mut self) -> String {
        let line = std::mem::take(&mut self.text);
        self.cursor = 0;
        self.browsing = None;
        self.draft.clear();
        if !line.trim().is_empty() && self.history.last() != Some(&line) && self.history_cap > 0 {
            self.history.push(line.clone());
            if self.history.len() > self.history_cap {
                self.history.remove(0);
            }
        }
        line
    }

    fn boundary_at_or_before(&self, at: usize) -> usize {
        self.text
            .grapheme_indices(true)
            .map(|(i, _)| i)
            .take_while(|i| *i <= at)
            .last()
            .map_or(0, |i| if at >= self.text.len() { at } else { i })
    }

    fn prev(&self, at: usize) -> usize {
        self.text[..at]
            .grapheme_indices(true)
            .next_back()
            .map_or(0, |(i, _)| i)
    }

    fn next(&self, at: usize) -> usize {
        self.text[at..]
            .graphemes(true)
            .next()
            .map_or(at, |g| at + g.len())
    }

    /// Start of the word before `at` (skipping whitespace first), like readline's Alt-B.
    fn word_start(&self, at: usize) -> usize {
        let before = &self.text[..at];
        let trimmed = before.trim_end();
        trimmed
            .char_indices()
            .rev()
            .find(|(_, c)| c.is_whitespace())
            .map_or(0, |(i, c)| i + c.len_utf8())
    }

    /// End of the word after `at` (skipping whitespace first), like readline's Alt-F.
    fn word_end(&self, at: usize) -> usize {
        let after = &self.text[at..];
        let skip = after.len() - after.trim_start().len();
        let rest = &after[skip..];
        let word = rest.find(char::is_whitespace).unwrap_or(rest.len());
        at + skip + word
    }

    fn kill(&mut self, from: usize, to: usize) {
        if from < to {
            self.killed = self.text[from..to].to_string();
            self.text.replace_range(from..to, "");
            self.cursor = from;
        }
    }

    fn recall(&mut self, index: Option<usize>) {
        self.browsing = index;
        self.text = match index.and_then(|i| self.history.get(i)) {
            Some(entry) => entry.clone(),
            None => std::mem::take(&mut self.draft),
        };
        self.cursor = self.text.len();
    }

    fn history_up(&mut self) {
        let target = match self.browsing {
            None if self.history.is_empty() => return,
            None => {
                self.draft = std::mem::take(&mut self.text);
                self.history.len() - 1
            }
            Some(0) => return,
            Some(i) => i - 1,
        };
        self.recall(Some(target));
    }

    fn history_down(&mut self) {
        match self.browsing {
            None => {}
            Some(i) if i + 1 < self.history.len() => self.recall(Some(i + 1)),
            Some(_) => self.recall(None),
        }
    }

    /// Applies an editing key; false for keys the editor does not handle (Enter, Tab, ...).
    pub fn handle_key(&mut self, key: &KeyEvent) -> bool {
        if key.kind == KeyEventKind::Release {
            return false;
        }
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        let alt = key.modifiers.contains(KeyModifiers::ALT);
        let at = self.cursor;
        match key.code {
            KeyCode::Char(c) if !ctrl && !alt => {
                let mut buf = [0u8; 4];
                self.insert_str(c.encode_utf8(&mut buf));
            }
            KeyCode::Char('a') if ctrl => self.cursor = 0,
            KeyCode::Char('e') if ctrl => self.cursor = self.text.len(),
            KeyCode::Char('b') if ctrl => self.cursor = self.prev(at),
            KeyCode::Char('f') if ctrl => self.cursor = self.next(at),
            KeyCode::Char('u') if ctrl => self.kill(0, at),
            KeyCode::Char('k') if ctrl => self.kill(at, self.text.len()),
            KeyCode::Char('w') if ctrl => self.kill(self.word_start(at), at),
            KeyCode::Char('y') if ctrl => {
                let killed = self.killed.clone();
                self.insert_str(&killed);
            }
            KeyCode::Char('p') if ctrl => self.history_up(),
            KeyCode::Char('n') if ctrl => self.history_down(),
            KeyCode::Char('b') if alt => self.cursor = self.word_start(at),
            KeyCode::Char('f') if alt => self.cursor = self.word_end(at),
            KeyCode::Char('d') if alt => self.kill(at, self.word_end(at)),
            KeyCode::Backspace if alt || ctrl => self.kill(self.word_start(at), at),
            KeyCode::Backspace => {
                let from = self.prev(at);
                self.text.replace_range(from..at, "");
                self.cursor = from;
            }
            KeyCode::Delete => {
                let to = self.next(at);
                self.text.replace_range(at..to, "");
            }
            KeyCode::Left if ctrl || alt => self.cursor = self.word_start(at),
            KeyCode::Right if ctrl || alt => self.cursor = self.word_end(at),
            KeyCode::Left => self.cursor = self.prev(at),
            KeyCode::Right => self.cursor = self.next(at),
            KeyCode::Home => self.cursor = 0,
            KeyCode::End => self.cursor = self.text.len(),
            KeyCode::Up => self.history_up(),
            KeyCode::Down => self.history_down(),
            _ => return false,
        }
        true
    }

    /// The part of the line that fits in `width` columns and the cursor's column in it.
    ///
    /// `scroll` (the display column shown first) persists between frames; it moves only as
    /// far as needed to keep the cursor visible, and never splits a wide character.
    pub fn view(&self, width: u16, scroll: &mut usize) -> (String, u16) {
        let width = usize::from(width);
        if width == 0 {
            return (String::new(), 0);
        }
        // Start column of every grapheme.
        let mut cols = Vec::new();
        let mut col = 0;
        let mut cursor_col = None;
        for (i, g) in self.text.grapheme_indices(true) {
            if i == self.cursor {
                cursor_col = Some(col);
            }
            cols.push((col, g));
            col += g.width();
        }
        let cursor_col = cursor_col.unwrap_or(col);
        // The cursor needs its own column, even at the end of the line.
        let margin = if width > 8 { 2 } else { 0 };
        if cursor_col < *scroll + margin.min(cursor_col) {
            *scroll = cursor_col.saturating_sub(margin);
        } else if cursor_col + 1 + margin > *scroll + width {
            *scroll = (cursor_col + 1 + margin).saturating_sub(width);
        }
        // No empty space after the end of the text beyond the cursor's column.
        *scroll = (*scroll)
            .min(col.saturating_sub(width.saturating_sub(1)))
            .min(cursor_col);
        // Never start inside a wide grapheme: start after it.
        if let Some((start, g)) = cols
            .iter()
            .find(|(c, g)| *c < *scroll && c + g.width() > *scroll)
        {
            *scroll = start + g.width();
        }
        let mut out = String::new();
        let mut used = 0;
        for (c, g) in &cols {
            if *c < *scroll {
                continue;
            }
            let w = g.width();
            if used + w > width {
                break;
            }
            out.push_str(g);
            used += w;
        }
        let rel = cursor_col.saturating_sub(*scroll);
        (out, u16::try_from(rel.min(width - 1)).unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(code: KeyCode) -> KeyEvent {
        KeyEvent::new(code, KeyModifiers::NONE)
    }
    fn ctrl(c: char) -> KeyEvent {
        KeyEvent::new(KeyCode::Char(c), KeyModifiers::CONTROL)
    }
    fn alt(code: KeyCode) -> KeyEvent {
        KeyEvent::new(code, KeyModifiers::ALT)
    }
    fn typed(s: &str) -> Editor {
        let mut e = Editor::new(10);
        e.insert_str(s);
        e
    }

    #[test]
    fn typing_and_moving_by_graphemes() {
        let mut e = typed("ae\u{301}漢👍🏽");
        assert!(e.handle_key(&k(KeyCode::Backspace)));
        assert_eq!(e.text(), "ae\u{301}漢");
        e.handle_key(&k(KeyCode::Left));
        e.handle_key(&k(KeyCode::Left));
        assert_eq!(e.cursor(), 1);
        e.handle_key(&k(KeyCode::Delete));
        assert_eq!(e.text(), "a漢");
        e.handle_key(&k(KeyCode::Char('X')));
        assert_eq!(e.text(), "aX漢");
        let mut fam = typed("👨\u{200d}👩\u{200d}👧!");
        fam.handle_key(&k(KeyCode::Left));
        fam.handle_key(&k(KeyCode::Backspace));
        assert_eq!(fam.text(), "!");
    }

    #[test]
    fn control_keys_edit_like_a_shell() {
        let mut e = typed("hello big  world  ");
        assert!(e.handle_key(&ctrl('w')));
        assert_eq!(e.text(), "hello big  ");
        e.handle_key(&ctrl('a'));
        e.handle_key(&alt(KeyCode::Char('f')));
        assert_eq!(e.cursor(), 5);
        e.handle_key(&ctrl('k'));
        assert_eq!(e.text(), "hello");
        e.handle_key(&ctrl('y'));
        assert_eq!(e.text(), "hello big  ");
        e.handle_key(&KeyEvent::new(KeyCode::Left, KeyModifiers::CONTROL));
        assert_eq!(e.cursor(), 6);
        e.handle_key(&ctrl('u'));
        assert_eq!(e.text(), "big  ");
        e.handle_key(&ctrl('e'));
        e.handle_key(&alt(KeyCode::Backspace));
        assert_eq!(e.text(), "");
        let mut e = typed("one two");
        e.handle_key(&ctrl('a'));
        e.handle_key(&alt(KeyCode::Char('d')));
        assert_eq!(e.text(), " two");
        // A control chord never inserts its letter; Enter and Tab are the caller's.
        assert!(e.handle_key(&ctrl('b')) && e.text() == " two");
        assert!(!e.handle_key(&k(KeyCode::Enter)));
        assert!(!e.handle_key(&k(KeyCode::Tab)));
        assert!(!e.handle_key(&ctrl('x')));
        assert_eq!(e.text(), " two");
    }

    #[test]
    fn history_keeps_the_draft_and_its_cap() {
        let mut e = Editor::new(2);
        for l in ["one", "two", "two", "three", "  "] {
            e.insert_str(l);
            e.submit();
        }
        e.insert_str("draft");
        e.handle_key(&k(KeyCode::Up));
        assert_eq!(e.text(), "three");
        e.handle_key(&k(KeyCode::Up));
        assert_eq!(e.text(), "two");
        e.handle_key(&k(KeyCode::Up));
        assert_eq!(e.text(), "two", "capped at 2");
        e.handle_key(&k(KeyCode::Char('!')));
        e.handle_key(&k(KeyCode::Down));
        assert_eq!(e.text(), "three");
        e.handle_key(&k(KeyCode::Down));
        assert_eq!((e.text(), e.cursor()), ("draft", 5));
        e.handle_key(&ctrl('p'));
        e.handle_key(&ctrl('p'));
        assert_eq!(
            e.text(),
            "two",
            "the edit of a recalled line did not change history"
        );
    }

    #[test]
    fn view_scrolls_to_the_cursor_and_never_splits_wide_characters() {
        let e = typed("abcdefghijklmnopqrstuvwxyz");
        let mut scroll = 0;
        let (text, col) = e.view(10, &mut scroll);
        // At the end: the last 9 characters and the cursor in the 10th column.
        assert_eq!((text.as_str(), col), ("rstuvwxyz", 9));
        let mut e = e;
        e.handle_key(&k(KeyCode::Home));
        let (text, col) = e.view(10, &mut scroll);
        assert_eq!((text.as_str(), col, scroll), ("abcdefghij", 0, 0));
        let mut e = typed("漢字漢字漢字漢字");
        let mut scroll = 0;
        e.handle_key(&k(KeyCode::Home));
        let (text, col) = e.view(5, &mut scroll);
        assert_eq!((text.as_str(), col), ("漢字", 0));
        e.handle_key(&k(KeyCode::End));
        let (text, col) = e.view(5, &mut scroll);
        assert!(text.width() <= 5 && text.ends_with('字'), "{text}");
        assert_eq!(usize::from(col), text.width());
        // An odd scroll position inside a wide character starts after it.
        let mut scroll = 1;
        e.handle_key(&k(KeyCode::Home));
        e.handle_key(&k(KeyCode::Right));
        e.handle_key(&k(KeyCode::Right));
        let (text, _) = e.view(20, &mut scroll);
        assert!(text.starts_with('字') || text.starts_with('漢'), "{text}");
        assert_eq!(typed("x").view(0, &mut 0), (String::new(), 0));
    }

    #[test]
    fn set_clamps_to_a_boundary_and_paste_drops_controls() {
        let mut e = Editor::new(5);
        e.set("漢x".into(), 1);
        assert_eq!(e.cursor(), 0);
        e.insert_str("a\nb\tc\u{1b}");
        assert_eq!(e.text(), "abc漢x");
    }
}
