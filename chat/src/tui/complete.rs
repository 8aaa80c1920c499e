//! Tab completion of commands and user names, cycling through candidates on repeated Tab.

/// The state of a completion in progress (so a second Tab picks the next candidate).
#[derive(Debug, Clone, Default)]
pub struct Completer {
    cycle: Option<Cycle>,
}

#[derive(Debug, Clone)]
struct Cycle {
    /// Text before the word being completed, and after the cursor.
    before: String,
    after: String,
    /// Replacements for the word, suffix included, in the order Tab offers them.
    candidates: Vec<String>,
    index: usize,
    /// What the last completion produced; anything else means a new completion.
    produced: (String, usize),
}

impl Completer {
    /// No completion in progress.
    pub fn new() -> Completer {
        Completer::default()
    }

    /// Forgets the completion in progress (any key other than Tab).
    pub fn reset(&mut self) {
        self.cycle = None;
    }

    /// Completes the word ending at `cursor` (a byte offset): a command (given without its
    /// slash) when it is the first word and starts with `/`, else a user name (`name: ` as
    /// the first word of a message, `name ` elsewhere). Returns the new text and cursor.
    ///
    /// Called again with exactly what it returned, it offers the next candidate instead.
    pub fn complete(
        &mut self,
        text: &str,
        cursor: usize,
        commands: &[String],
        users: &[String],
    ) -> Option<(String, usize)> {
        if let Some(c) = self.cycle.as_mut() {
            if c.produced.0 == text && c.produced.1 == cursor {
                c.index = (c.index + 1) % c.candidates.len();
                let out = assemble(&c.before, &c.candidates[c.index], &c.after);
                c.produced = out.clone();
                return Some(out);
            }
        }
        self.cycle = None;
        let head = text.get(..cursor)?;
        let start = head
            .char_indices()
            .rev()
            .find(|(_, c)| c.is_whitespace())
            .map_or(0, |(i, c)| i + c.len_utf8());
        let word = &head[start..];
        if word.is_empty() {
            return None;
        }
        let first = head[..start].trim().is_empty();
        let mut candidates: Vec<String> = match word.strip_prefix('/') {
            Some(prefix) if first => commands
                .iter()
                .filter(|c| !c.is_empty() && starts_with_ci(c, prefix))
                .map(|c| format!("/{c} "))
                .collect(),
            _ => {
                // IRC-style addressing when the name opens a message.
                let suffix = if first { ": " } else { " " };
                users
                    .iter()
                    .filter(|u| !u.is_empty() && starts_with_ci(u, word))
                    .map(|u| format!("{u}{suffix}"))
                    .collect()
            }
        };
        // Exact spelling breaks ties so duplicates end up adjacent for dedup.
        candidates.sort_by_cached_key(|c| (c.to_lowercase(), c.clone()));
        candidates.dedup();
        if candidates.is_empty() {
            return None;
        }
        let before = head[..start].to_string();
        let after = text[cursor..].to_string();
        let out = assemble(&before, &candidates[0], &after);
        self.cycle = Some(Cycle {
            before,
            after,
            candidates,
            index: 0,
            produced: out.clone(),
        });
        Some(out)
    }
}

fn starts_with_ci(s: &str, prefix: &str) -> bool {
    s.to_lowercase().starts_with(&prefix.to_lowercase())
}

/// The text with `word` between `before` and `after`, and the cursor just after the word.
fn assemble(before: &str, word: &str, after: &str) -> (String, usize) {
    // Two spaces would appear if the text after the cursor already starts with one.
    let word = if after.starts_with(char::is_whitespace) {
        word.trim_end_matches(' ')
    } else {
        word
    };
    let cursor = before.len() + word.len();
    (format!("{before}{word}{after}"), cursor)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_string()).collect()
    }
    fn some(text: &str, cursor: usize) -> Option<(String, usize)> {
        Some((text.to_string(), cursor))
    }

    #[test]
    fn commands_complete_with_a_slash_and_a_space() {
        let cmds = v(&["whisper", "who", "help"]);
        let users = v(&["helen", "wanda"]);
        let mut c = Completer::new();
        assert_eq!(c.complete("/he", 3, &cmds, &users), some("/help ", 6));
        c.reset();
        assert_eq!(c.complete("/WHI", 4, &cmds, &users), some("/whisper ", 9));
        c.reset();
        assert_eq!(c.complete("  /hel", 6, &cmds, &users), some("  /help ", 8));
        c.reset();
        assert_eq!(c.complete("/x", 2, &cmds, &users), None);
        // A slash word that is not first is not a command (nor a name here).
        assert_eq!(c.complete("x /he", 5, &cmds, &users), None);
    }

    #[test]
    fn names_mid_line_and_as_the_first_word() {
        let cmds = v(&["whisper"]);
        let users = v(&["bob", "carol"]);
        let mut c = Completer::new();
        assert_eq!(
            c.complete("/whisper ca", 11, &cmds, &users),
            some("/whisper carol ", 15)
        );
        c.reset();
        assert_eq!(c.complete("hi bo", 5, &cmds, &users), some("hi bob ", 7));
        c.reset();
        // First word of a message: addressed IRC-style.
        assert_eq!(c.complete("ca", 2, &cmds, &users), some("carol: ", 7));
        c.reset();
        assert_eq!(c.complete(" ca", 3, &cmds, &users), some(" carol: ", 8));
    }

    #[test]
    fn case_insensitive_keeping_the_exact_spelling() {
        let users = v(&["BoB", "Émile", "ébène", "漢字", "Ölaf"]);
        let mut c = Completer::new();
        assert_eq!(c.complete("hi bo", 5, &[], &users), some("hi BoB ", 7));
        c.reset();
        assert_eq!(c.complete("hi É", 5, &[], &users), some("hi ébène ", 11));
        c.reset();
        assert_eq!(c.complete("ö", 2, &[], &users), some("Ölaf: ", 7));
        c.reset();
        assert_eq!(c.complete("hi 漢", 6, &[], &users), some("hi 漢字 ", 10));
    }

    #[test]
    fn nothing_to_complete() {
        let users = v(&["bob"]);
        let mut c = Completer::new();
        assert_eq!(c.complete("", 0, &[], &users), None);
        assert_eq!(c.complete("hi ", 3, &[], &users), None, "empty word");
        assert_eq!(c.complete("hi zed", 6, &[], &users), None);
        assert_eq!(c.complete("hi bo", 5, &[], &[]), None);
        assert_eq!(c.complete("/he", 3, &[], &users), None);
        // A cursor past the end or inside a character is refused, not a panic.
        assert_eq!(c.complete("bo", 9, &[], &users), None);
        assert_eq!(c.complete("é", 1, &[], &users), None);
    }

    #[test]
    fn repeated_tab_cycles_and_wraps() {
        let users = v(&["bob", "Bea", "bert", "bob", "carl"]);
        let mut c = Completer::new();
        let (t1, c1) = c.complete("hi b", 4, &[], &users).unwrap();
        assert_eq!((t1.as_str(), c1), ("hi Bea ", 7));
        let (t2, c2) = c.complete(&t1, c1, &[], &users).unwrap();
        assert_eq!((t2.as_str(), c2), ("hi bert ", 8));
        let (t3, c3) = c.complete(&t2, c2, &[], &users).unwrap();
        assert_eq!((t3.as_str(), c3), ("hi bob ", 7), "duplicates offered once");
        let (t4, _) = c.complete(&t3, c3, &[], &users).unwrap();
        assert_eq!(t4, "hi Bea ");
        // Commands cycle the same way.
        let cmds = v(&["who", "whisper", "whois"]);
        let mut c = Completer::new();
        let (t1, c1) = c.complete("/wh", 3, &cmds, &[]).unwrap();
        let (t2, c2) = c.complete(&t1, c1, &cmds, &[]).unwrap();
        let (t3, c3) = c.complete(&t2, c2, &cmds, &[]).unwrap();
        let (t4, _) = c.complete(&t3, c3, &cmds, &[]).unwrap();
        assert_eq!(
            [t1, t2, t3, t4],
            ["/whisper ", "/who ", "/whois ", "/whisper "]
        );
    }

    #[test]
    fn reset_or_other_text_starts_over() {
        let users = v(&["bob", "bea"]);
        let mut c = Completer::new();
        let (t1, c1) = c.complete("b", 1, &[], &users).unwrap();
        assert_eq!(t1, "bea: ");
        // After reset, the same text starts over: an empty word completes nothing.
        c.reset();
        assert_eq!(c.complete(&t1, c1, &[], &users), None);
        // Text that differs from what was produced is a new completion, not the next one.
        let (t1, c1) = c.complete("b", 1, &[], &users).unwrap();
        assert_eq!(c.complete("bea: b", 6, &[], &users), some("bea: bea ", 9));
        assert_eq!(c.complete(&t1, c1 - 1, &[], &users), None);
    }

    #[test]
    fn text_after_the_cursor_stays() {
        let users = v(&["bob", "bert"]);
        let mut c = Completer::new();
        let (t1, c1) = c.complete("hi bo and more", 5, &[], &users).unwrap();
        assert_eq!((t1.as_str(), c1), ("hi bob and more", 6));
        let mut c = Completer::new();
        let (t1, c1) = c.complete("hi b, and", 4, &[], &users).unwrap();
        assert_eq!((t1.as_str(), c1), ("hi bert , and", 8));
        let (t2, c2) = c.complete(&t1, c1, &[], &users).unwrap();
        assert_eq!((t2.as_str(), c2), ("hi bob , and", 7));
        let mut c = Completer::new();
        assert_eq!(c.complete("b x", 1, &[], &users), some("bert: x", 5));
    }
}
