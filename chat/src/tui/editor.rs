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
    /// Submitted lines, oldest first.
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

    /// Replaces the text (Tab completion); the cursor is moved back to a boundary.
    pub fn set(&mut self, text: String, cursor: usize) {
        self.text = text;
        self.cursor = self.floor(cursor);
    }

    /// Inserts text at the cursor; control characters (newlines included) are dropped.
    pub fn insert_str(&mut self, s: &str) {
        let clean: String = s.chars().filter(|c| !c.is_control()).collect();
        self.text.insert_str(self.cursor, &clean);
        // A combining mark typed before one, or half a flag before the other half, joins the
        // cluster after it: the cursor goes past the whole cluster.
        self.cursor = self.ceil(self.cursor + clean.len());
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
                let excess = self.history.len() - self.history_cap;
                self.history.drain(..excess);
            }
        }
        line
    }

    /// The last grapheme boundary at or before `at`.
    fn floor(&self, at: usize) -> usize {
        if at >= self.text.len() {
            return self.text.len();
        }
        self.text
            .grapheme_indices(true)
            .map(|(i, _)| i)
            .take_while(|i| *i <= at)
            .last()
            .unwrap_or(0)
    }

    /// The first grapheme boundary at or after `at`.
    fn ceil(&self, at: usize) -> usize {
        self.text
            .grapheme_indices(true)
            .map(|(i, _)| i)
            .find(|i| *i >= at)
            .unwrap_or(self.text.len())
    }

    /// The boundary one grapheme before `at` (itself a boundary).
    fn prev(&self, at: usize) -> usize {
        self.text[..at]
            .grapheme_indices(true)
            .next_back()
            .map_or(0, |(i, _)| i)
    }

    /// The boundary one grapheme after `at` (itself a boundary).
    fn next(&self, at: usize) -> usize {
        self.text[at..]
            .graphemes(true)
            .next()
            .map_or(at, |g| at + g.len())
    }

    /// Start of the word before `at` (skipping whitespace first), like readline's Ctrl-W.
    fn word_start(&self, at: usize) -> usize {
        let start = self.text[..at]
            .trim_end()
            .char_indices()
            .rev()
            .find(|(_, c)| c.is_whitespace())
            .map_or(0, |(i, c)| i + c.len_utf8());
        // A space can carry a combining mark; never stop inside that cluster.
        self.floor(start)
    }

    /// End of the word after `at` (skipping whitespace first), like readline's Alt-F.
    fn word_end(&self, at: usize) -> usize {
        let after = &self.text[at..];
        let skip = after.len() - after.trim_start().len();
        let rest = &after[skip..];
        let word = rest.find(char::is_whitespace).unwrap_or(rest.len());
        self.ceil(at + skip + word)
    }

    /// Removes `from..to` (both boundaries) into the kill buffer.
    fn kill(&mut self, from: usize, to: usize) {
        if from < to {
            self.killed = self.text[from..to].to_string();
            self.delete(from, to);
        }
    }

    /// Removes `from..to` (both boundaries) and leaves the cursor at `from`.
    fn delete(&mut self, from: usize, to: usize) {
        self.text.replace_range(from..to, "");
        // Joining what was on either side can merge clusters (two halves of a flag).
        self.cursor = self.floor(from);
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
        if !matches!(key.kind, KeyEventKind::Press | KeyEventKind::Repeat) {
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
            KeyCode::Char(_) if ctrl && alt => return false,
            KeyCode::Char('a') if ctrl => self.cursor = 0,
            KeyCode::Char('e') if ctrl => self.cursor = self.text.len(),
            KeyCode::Char('b') if ctrl => self.cursor = self.prev(at),
            KeyCode::Char('f') if ctrl => self.cursor = self.next(at),
            // Some terminals send Backspace as Ctrl-H.
            KeyCode::Char('h') if ctrl => self.delete(self.prev(at), at),
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
            KeyCode::Backspace => self.delete(self.prev(at), at),
            KeyCode::Delete if alt || ctrl => self.kill(at, self.word_end(at)),
            KeyCode::Delete => self.delete(at, self.next(at)),
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
        let mut total = 0;
        let mut cursor_col = None;
        for (i, g) in self.text.grapheme_indices(true) {
            if i == self.cursor {
                cursor_col = Some(total);
            }
            let w = g.width();
            cols.push((total, w, g));
            total += w;
        }
        let cursor_col = cursor_col.unwrap_or(total);
        // The cursor needs its own column even at the end, and the whole of a wide character.
        let cursor_w = self.text[self.cursor..]
            .graphemes(true)
            .next()
            .map_or(1, |g| g.width().max(1));
        // Context on both sides of the cursor, when the line is wide enough to afford it.
        let margin = if width > 8 { 2 } else { 0 };
        if cursor_col < *scroll + margin {
            *scroll = cursor_col.saturating_sub(margin);
        } else if cursor_col + cursor_w + margin > *scroll + width {
            *scroll = (cursor_col + cursor_w + margin - width).min(cursor_col);
        }
        // No blank columns after the text beyond the one the cursor needs at its end.
        *scroll = (*scroll).min((total + 1).saturating_sub(width));
        // A wide grapheme straddling the left edge cannot be drawn by half: start after it.
        if let Some((start, w, _)) = cols
            .iter()
            .find(|(c, w, _)| *c < *scroll && c + w > *scroll)
        {
            *scroll = start + w;
        }
        let mut out = String::new();
        for (c, w, g) in &cols {
            if *c < *scroll {
                continue;
            }
            if c + w > *scroll + width {
                break;
            }
            out.push_str(g);
        }
        let rel = cursor_col.saturating_sub(*scroll).min(width - 1);
        (out, u16::try_from(rel).unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crossterm::event::KeyEventState;

    fn k(code: KeyCode) -> KeyEvent {
        KeyEvent::new(code, KeyModifiers::NONE)
    }
    fn ctrl(c: char) -> KeyEvent {
        KeyEvent::new(KeyCode::Char(c), KeyModifiers::CONTROL)
    }
    fn ctrl_key(code: KeyCode) -> KeyEvent {
        KeyEvent::new(code, KeyModifiers::CONTROL)
    }
    fn alt(code: KeyCode) -> KeyEvent {
        KeyEvent::new(code, KeyModifiers::ALT)
    }
    fn typed(s: &str) -> Editor {
        let mut e = Editor::new(10);
        e.insert_str(s);
        e
    }
    /// Presses each key, asserting it was consumed.
    fn press(e: &mut Editor, keys: &[KeyEvent]) {
        for key in keys {
            assert!(e.handle_key(key), "{key:?} not consumed");
        }
    }
    fn state(e: &Editor) -> (&str, usize) {
        (e.text(), e.cursor())
    }

    #[test]
    fn printable_keys_insert_and_chords_do_not() {
        let mut e = Editor::new(5);
        assert!(e.is_empty());
        press(&mut e, &[k(KeyCode::Char('a'))]);
        press(
            &mut e,
            &[KeyEvent::new(KeyCode::Char('B'), KeyModifiers::SHIFT)],
        );
        assert_eq!(state(&e), ("aB", 2));
        // Chords with no binding are left to the caller and never type their letter.
        for key in [
            ctrl('x'),
            ctrl('c'),
            ctrl('d'),
            alt(KeyCode::Char('x')),
            KeyEvent::new(
                KeyCode::Char('a'),
                KeyModifiers::CONTROL | KeyModifiers::ALT,
            ),
            k(KeyCode::Enter),
            k(KeyCode::Tab),
            k(KeyCode::Esc),
            k(KeyCode::F(2)),
        ] {
            assert!(!e.handle_key(&key), "{key:?} consumed");
        }
        // Bound chords do not type either.
        press(&mut e, &[ctrl('b'), ctrl('f'), alt(KeyCode::Char('b'))]);
        assert_eq!(e.text(), "aB");
        assert!(!e.is_empty());
    }

    #[test]
    fn only_press_and_repeat_count() {
        let mut e = Editor::new(5);
        let release = KeyEvent::new_with_kind(
            KeyCode::Char('x'),
            KeyModifiers::NONE,
            KeyEventKind::Release,
        );
        assert!(!e.handle_key(&release));
        let repeat = KeyEvent::new_with_kind_and_state(
            KeyCode::Char('y'),
            KeyModifiers::NONE,
            KeyEventKind::Repeat,
            KeyEventState::NONE,
        );
        assert!(e.handle_key(&repeat));
        assert!(e.handle_key(&repeat));
        assert_eq!(e.text(), "yy");
    }

    #[test]
    fn cursor_keys_and_their_control_twins() {
        let mut e = typed("abc");
        press(&mut e, &[k(KeyCode::Left)]);
        assert_eq!(e.cursor(), 2);
        press(&mut e, &[ctrl('b')]);
        assert_eq!(e.cursor(), 1);
        press(&mut e, &[k(KeyCode::Right)]);
        assert_eq!(e.cursor(), 2);
        press(&mut e, &[ctrl('f')]);
        assert_eq!(e.cursor(), 3);
        press(&mut e, &[k(KeyCode::Right), ctrl('f')]);
        assert_eq!(e.cursor(), 3, "stops at the end");
        press(&mut e, &[k(KeyCode::Home)]);
        assert_eq!(e.cursor(), 0);
        press(&mut e, &[k(KeyCode::Left), ctrl('b')]);
        assert_eq!(e.cursor(), 0, "stops at the start");
        press(&mut e, &[k(KeyCode::End)]);
        assert_eq!(e.cursor(), 3);
        press(&mut e, &[ctrl('a')]);
        assert_eq!(e.cursor(), 0);
        press(&mut e, &[ctrl('e')]);
        assert_eq!(e.cursor(), 3);
    }

    #[test]
    fn backspace_and_delete() {
        let mut e = typed("abc");
        press(&mut e, &[k(KeyCode::Backspace)]);
        assert_eq!(state(&e), ("ab", 2));
        press(&mut e, &[k(KeyCode::Home), k(KeyCode::Delete)]);
        assert_eq!(state(&e), ("b", 0));
        press(&mut e, &[k(KeyCode::Backspace)]);
        assert_eq!(state(&e), ("b", 0), "nothing before the cursor");
        press(&mut e, &[k(KeyCode::End), k(KeyCode::Delete)]);
        assert_eq!(state(&e), ("b", 1), "nothing after the cursor");
        press(&mut e, &[ctrl('h')]);
        assert_eq!(state(&e), ("", 0), "Ctrl-H is Backspace");
    }

    #[test]
    fn moves_and_deletes_whole_graphemes() {
        let thumbs = "👍🏽";
        let family = "👨\u{200d}👩\u{200d}👧";
        let text = format!("é|e\u{301}|漢字|{thumbs}|{family}|");
        let mut e = typed(&text);
        // Walk left: each step lands on the start of one grapheme.
        let mut stops = vec![e.cursor()];
        while e.cursor() > 0 {
            press(&mut e, &[k(KeyCode::Left)]);
            stops.push(e.cursor());
        }
        let mut expected: Vec<usize> = text.grapheme_indices(true).map(|(i, _)| i).collect();
        expected.push(text.len());
        expected.reverse();
        assert_eq!(stops, expected);
        assert_eq!(stops.len(), 12, "11 graphemes");
        // And right again, by the same stops.
        let mut forward = vec![0];
        while e.cursor() < text.len() {
            press(&mut e, &[k(KeyCode::Right)]);
            forward.push(e.cursor());
        }
        expected.reverse();
        assert_eq!(forward, expected);

        // Backspace removes the whole cluster, never a code point of it.
        let mut e = typed(&format!("a{family}"));
        press(&mut e, &[k(KeyCode::Backspace)]);
        assert_eq!(state(&e), ("a", 1));
        let mut e = typed(&format!("a{thumbs}b"));
        press(&mut e, &[k(KeyCode::Left), k(KeyCode::Backspace)]);
        assert_eq!(state(&e), ("ab", 1));
        let mut e = typed("xe\u{301}y");
        press(
            &mut e,
            &[k(KeyCode::Home), k(KeyCode::Right), k(KeyCode::Delete)],
        );
        assert_eq!(state(&e), ("xy", 1));
        let mut e = typed("漢字");
        press(&mut e, &[k(KeyCode::Backspace)]);
        assert_eq!(state(&e), ("漢", 3));
        let mut e = typed("é");
        press(&mut e, &[k(KeyCode::Backspace)]);
        assert_eq!(state(&e), ("", 0));
    }

    #[test]
    fn edits_that_merge_clusters_keep_the_cursor_on_a_boundary() {
        // A combining mark typed at the start of "e" is its own cluster; typed after it joins.
        let mut e = typed("e");
        e.insert_str("\u{301}");
        assert_eq!(state(&e), ("e\u{301}", 3));
        // Typing the first half of a flag before the second: the cursor goes past the flag.
        let mut e = typed("\u{1f1f8}");
        press(&mut e, &[k(KeyCode::Home), k(KeyCode::Char('\u{1f1fa}'))]);
        assert_eq!(state(&e), ("\u{1f1fa}\u{1f1f8}", 8));
        // Deleting what separated two halves of a flag joins them; the cursor stays outside.
        let mut e = typed("\u{1f1fa}x\u{1f1f8}");
        press(&mut e, &[k(KeyCode::Left), k(KeyCode::Backspace)]);
        assert_eq!(e.text(), "\u{1f1fa}\u{1f1f8}");
        assert_eq!(e.cursor(), 0);
    }

    #[test]
    fn ctrl_w_rubs_out_whitespace_delimited_words() {
        let mut e = typed("hello  world  ");
        press(&mut e, &[ctrl('w')]);
        assert_eq!(state(&e), ("hello  ", 7));
        press(&mut e, &[ctrl('w')]);
        assert_eq!(state(&e), ("", 0));
        press(&mut e, &[ctrl('w')]);
        assert_eq!(state(&e), ("", 0));
        // Punctuation is part of the word, as in bash.
        let mut e = typed("see http://x.org/a-b");
        press(&mut e, &[ctrl('w')]);
        assert_eq!(e.text(), "see ");
        // In the middle of a word: only the part before the cursor goes.
        let mut e = typed("foo barbaz");
        press(
            &mut e,
            &[k(KeyCode::Left), k(KeyCode::Left), k(KeyCode::Left)],
        );
        press(&mut e, &[ctrl('w')]);
        assert_eq!(state(&e), ("foo baz", 4));
        // Alt-Backspace (and Ctrl-Backspace) are the same.
        let mut e = typed("漢字 👍🏽x  ");
        press(&mut e, &[alt(KeyCode::Backspace)]);
        assert_eq!(e.text(), "漢字 ");
        press(&mut e, &[ctrl_key(KeyCode::Backspace)]);
        assert_eq!(e.text(), "");
    }

    #[test]
    fn word_motion() {
        let text = "one two  three";
        let lefts = [
            ctrl_key(KeyCode::Left),
            alt(KeyCode::Left),
            alt(KeyCode::Char('b')),
        ];
        for key in lefts {
            let mut e = typed(text);
            let mut stops = Vec::new();
            for _ in 0..4 {
                press(&mut e, &[key]);
                stops.push(e.cursor());
            }
            assert_eq!(stops, [9, 4, 0, 0], "{key:?}");
        }
        let rights = [
            ctrl_key(KeyCode::Right),
            alt(KeyCode::Right),
            alt(KeyCode::Char('f')),
        ];
        for key in rights {
            let mut e = typed(text);
            press(&mut e, &[k(KeyCode::Home)]);
            let mut stops = Vec::new();
            for _ in 0..4 {
                press(&mut e, &[key]);
                stops.push(e.cursor());
            }
            assert_eq!(stops, [3, 7, 14, 14], "{key:?}");
        }
        // Multi-byte words.
        let mut e = typed("漢字 👍🏽é");
        press(&mut e, &[alt(KeyCode::Char('b'))]);
        assert_eq!(e.cursor(), "漢字 ".len());
        press(&mut e, &[alt(KeyCode::Char('b'))]);
        assert_eq!(e.cursor(), 0);
        press(&mut e, &[alt(KeyCode::Char('f'))]);
        assert_eq!(e.cursor(), "漢字".len());
    }

    #[test]
    fn alt_d_deletes_the_next_word() {
        let mut e = typed("one two three");
        press(&mut e, &[k(KeyCode::Home), alt(KeyCode::Char('d'))]);
        assert_eq!(state(&e), (" two three", 0));
        press(&mut e, &[alt(KeyCode::Char('d'))]);
        assert_eq!(state(&e), (" three", 0));
        press(&mut e, &[ctrl_key(KeyCode::Delete)]);
        assert_eq!(state(&e), ("", 0));
        press(&mut e, &[alt(KeyCode::Char('d'))]);
        assert_eq!(state(&e), ("", 0));
    }

    #[test]
    fn kills_and_yank() {
        // Ctrl-K, then Ctrl-Y puts it back (twice: the kill buffer is kept).
        let mut e = typed("hello world");
        press(&mut e, &[ctrl('a'), alt(KeyCode::Char('f')), ctrl('k')]);
        assert_eq!(state(&e), ("hello", 5));
        press(&mut e, &[ctrl('y')]);
        assert_eq!(state(&e), ("hello world", 11));
        press(&mut e, &[ctrl('y')]);
        assert_eq!(e.text(), "hello world world");
        // Ctrl-U kills to the start.
        let mut e = typed("abc def");
        press(&mut e, &[k(KeyCode::Left), k(KeyCode::Left), ctrl('u')]);
        assert_eq!(state(&e), ("ef", 0));
        press(&mut e, &[ctrl('e'), ctrl('y')]);
        assert_eq!(state(&e), ("efabc d", 7));
        // Ctrl-W and Alt-D feed the kill buffer too.
        let mut e = typed("say 漢字");
        press(&mut e, &[ctrl('w')]);
        press(&mut e, &[ctrl('a'), ctrl('y')]);
        assert_eq!(state(&e), ("漢字say ", 6));
        press(&mut e, &[ctrl('a'), alt(KeyCode::Char('d'))]);
        assert_eq!(e.text(), " ");
        press(&mut e, &[ctrl('e'), ctrl('y')]);
        assert_eq!(e.text(), " 漢字say");
        // An empty kill does not clobber the buffer; nothing killed yields nothing.
        press(&mut e, &[ctrl('e'), ctrl('k'), ctrl('y')]);
        assert_eq!(e.text(), " 漢字say漢字say");
        let mut e = typed("x");
        press(&mut e, &[ctrl('y')]);
        assert_eq!(state(&e), ("x", 1));
    }

    #[test]
    fn history_keeps_the_draft_and_its_cap() {
        let mut e = Editor::new(2);
        for l in ["one", "two", "two", "three", "  "] {
            e.insert_str(l);
            assert_eq!(e.submit(), l);
            assert_eq!(state(&e), ("", 0));
        }
        // Down on the live line does nothing.
        press(&mut e, &[k(KeyCode::Down)]);
        e.insert_str("draft");
        press(&mut e, &[k(KeyCode::Left), k(KeyCode::Up)]);
        assert_eq!(state(&e), ("three", 5));
        press(&mut e, &[k(KeyCode::Up)]);
        assert_eq!(e.text(), "two");
        press(&mut e, &[k(KeyCode::Up)]);
        assert_eq!(e.text(), "two", "capped at 2, \"one\" was dropped");
        // Editing a recalled entry edits a copy.
        press(&mut e, &[k(KeyCode::Char('!'))]);
        assert_eq!(e.text(), "two!");
        press(&mut e, &[k(KeyCode::Down)]);
        assert_eq!(e.text(), "three");
        press(&mut e, &[k(KeyCode::Down)]);
        assert_eq!(state(&e), ("draft", 5), "draft back, cursor at its end");
        press(&mut e, &[k(KeyCode::Down)]);
        assert_eq!(e.text(), "draft");
        press(&mut e, &[ctrl('p'), ctrl('p')]);
        assert_eq!(e.text(), "two", "history unchanged by the edit");
        press(&mut e, &[ctrl('n')]);
        assert_eq!(e.text(), "three");
        // Submitting a recalled entry ends browsing and skips the duplicate.
        assert_eq!(e.submit(), "three");
        press(&mut e, &[k(KeyCode::Up)]);
        assert_eq!(e.text(), "three");
        press(&mut e, &[k(KeyCode::Up)]);
        assert_eq!(e.text(), "two");
        press(&mut e, &[ctrl('n'), ctrl('n')]);
        assert_eq!(e.text(), "", "the draft at submit time was empty");
    }

    #[test]
    fn history_without_entries_or_capacity() {
        let mut e = Editor::new(0);
        e.insert_str("x");
        assert_eq!(e.submit(), "x");
        e.insert_str("live");
        press(&mut e, &[k(KeyCode::Up)]);
        assert_eq!(state(&e), ("live", 4));
    }

    #[test]
    fn set_clamps_to_a_boundary_and_paste_drops_controls() {
        let mut e = Editor::new(5);
        e.set("漢x".into(), 1);
        assert_eq!(e.cursor(), 0);
        e.set("e\u{301}x".into(), 2);
        assert_eq!(e.cursor(), 0);
        e.set("ab".into(), 99);
        assert_eq!(e.cursor(), 2);
        e.set("漢x".into(), 0);
        e.insert_str("a\nb\tc\u{1b}\r\u{7f}");
        assert_eq!(state(&e), ("abc漢x", 3));
    }

    #[test]
    fn view_scrolls_both_ways_with_a_margin() {
        let mut e = typed("abcdefghijklmnopqrstuvwxyz");
        let mut scroll = 0;
        // At the end: the last 9 characters and the cursor in the 10th column.
        assert_eq!(e.view(10, &mut scroll), ("rstuvwxyz".into(), 9));
        assert_eq!(scroll, 17);
        // Moving left inside the view does not scroll...
        for _ in 0..4 {
            press(&mut e, &[k(KeyCode::Left)]);
        }
        assert_eq!(e.view(10, &mut scroll), ("rstuvwxyz".into(), 5));
        press(
            &mut e,
            &[k(KeyCode::Left), k(KeyCode::Left), k(KeyCode::Left)],
        );
        assert_eq!(e.view(10, &mut scroll), ("rstuvwxyz".into(), 2));
        // ...until two columns of context are left.
        press(&mut e, &[k(KeyCode::Left)]);
        assert_eq!(e.view(10, &mut scroll), ("qrstuvwxyz".into(), 2));
        assert_eq!(scroll, 16);
        press(&mut e, &[k(KeyCode::Home)]);
        assert_eq!(e.view(10, &mut scroll), ("abcdefghij".into(), 0));
        assert_eq!(scroll, 0);
        // Rightwards: scrolls once the cursor is within two columns of the edge.
        for _ in 0..7 {
            press(&mut e, &[k(KeyCode::Right)]);
        }
        assert_eq!(e.view(10, &mut scroll), ("abcdefghij".into(), 7));
        press(&mut e, &[k(KeyCode::Right)]);
        assert_eq!(e.view(10, &mut scroll), ("bcdefghijk".into(), 7));
        // A shorter line (after submit) is shown from its start again.
        e.submit();
        e.insert_str("hi");
        assert_eq!(e.view(10, &mut scroll), ("hi".into(), 2));
        assert_eq!(scroll, 0);
        assert_eq!(Editor::new(1).view(10, &mut scroll), (String::new(), 0));
        assert_eq!(typed("x").view(0, &mut scroll), (String::new(), 0));
    }

    #[test]
    fn view_never_splits_wide_characters() {
        let mut e = typed("漢字漢字漢字漢字");
        let mut scroll = 0;
        press(&mut e, &[k(KeyCode::Home)]);
        // Five columns hold two wide characters; the third is not cut in half.
        assert_eq!(e.view(5, &mut scroll), ("漢字".into(), 0));
        // The cursor's own wide character is shown whole, with the one straddling the left
        // edge skipped.
        press(&mut e, &[k(KeyCode::Right), k(KeyCode::Right)]);
        assert_eq!(e.view(5, &mut scroll), ("字漢".into(), 2));
        assert_eq!(scroll, 2);
        press(&mut e, &[k(KeyCode::End)]);
        assert_eq!(e.view(5, &mut scroll), ("漢字".into(), 4));
        assert_eq!(scroll, 12);
        press(&mut e, &[k(KeyCode::Left)]);
        assert_eq!(e.view(5, &mut scroll), ("漢字".into(), 2));
        // A persisted scroll inside a wide character starts after it.
        let mut scroll = 3;
        press(
            &mut e,
            &[k(KeyCode::Home), k(KeyCode::Right), k(KeyCode::Right)],
        );
        press(&mut e, &[k(KeyCode::Right)]);
        assert_eq!(e.view(6, &mut scroll), ("漢字漢".into(), 2));
        assert_eq!(scroll, 4);
        // A wide character at the right edge is left out rather than cut.
        let mut e = typed("abcd漢");
        press(&mut e, &[k(KeyCode::Home)]);
        assert_eq!(e.view(5, &mut 0), ("abcd".into(), 0));
        // Too narrow for the character at all: nothing drawn, no panic.
        assert_eq!(e.view(1, &mut 0), ("a".into(), 0));
        press(&mut e, &[k(KeyCode::End), k(KeyCode::Left)]);
        assert_eq!(e.view(1, &mut 0), (String::new(), 0));
    }

    #[test]
    fn view_keeps_combining_marks_and_emoji_whole() {
        let mut e = typed("e\u{301}x");
        let mut scroll = 0;
        assert_eq!(e.view(10, &mut scroll), ("e\u{301}x".into(), 2));
        press(&mut e, &[k(KeyCode::Left)]);
        assert_eq!(e.view(10, &mut scroll), ("e\u{301}x".into(), 1));
        let family = "👨\u{200d}👩\u{200d}👧";
        let text = format!("{family}👍🏽abcdefgh");
        let e = typed(&text);
        let (shown, col) = e.view(6, &mut scroll);
        assert!(text.ends_with(&shown), "{shown}");
        assert_eq!(usize::from(col), shown.width());
        assert!(shown.width() < 6);
        for g in shown.graphemes(true) {
            assert!(text.graphemes(true).any(|t| t == g), "split cluster {g:?}");
        }
    }
}
