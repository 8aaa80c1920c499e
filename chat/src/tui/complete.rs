//! Tab completion of commands and user names, cycling through candidates on repeated Tab.

/// The state of a completion in progress (so a second Tab picks the next candidate).
#[derive(Debug, Default)]
pub struct Completer {
    cycle: Option<Cycle>,
}

#[derive(Debug)]
struct Cycle {
    /// Text before the word being completed, and after the cursor.
    before: String,
    after: String,
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
        let cursor = cursor.min(text.len());
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
        let mut candidates: Vec<String> = if first && word.starts_with('/') {
            let prefix = &word[1..];
            commands
                .iter()
                .filter(|c| starts_with_ci(c, prefix))
                .map(|c| format!("/{c} "))
                .collect()
        } else {
            let suffix = if first { ": " } else { " " };
            users
                .iter()
                .filter(|u| starts_with_ci(u, word))
                .map(|u| format!("{u}{suffix}"))
                .collect()
        };
        candidates.sort_by_key(|c| c.to_lowercase());
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

fn assemble(before: &str, word: &str, after: &str) -> (String, usize) {
    // Two spaces would appear if the text after the cursor already starts with one.
    let word = if after.starts_with(' ') {
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

    #[test]
    fn commands_and_names() {
        let cmds = v(&["whisper", "who", "help"]);
        let users = v(&["bob", "Bea", "carol", "émile"]);
        let mut c = Completer::new();
        assert_eq!(
            c.complete("/he", 3, &cmds, &users),
            Some(("/help ".to_string(), 6))
        );
        c.reset();
        assert_eq!(
            c.complete("/whisper ca", 11, &cmds, &users),
            Some(("/whisper carol ".to_string(), 15))
        );
        c.reset();
        // First word of a message: addressed IRC-style.
        assert_eq!(
            c.complete("ca", 2, &cmds, &users),
            Some(("carol: ".to_string(), 7))
        );
        c.reset();
        assert_eq!(
            c.complete("hi É", 5, &cmds, &users),
            Some(("hi émile ".to_string(), 10))
        );
        c.reset();
        assert_eq!(c.complete("hi ", 3, &cmds, &users), None);
        assert_eq!(c.complete("hi zed", 6, &cmds, &users), None);
        // A slash word that is not first is a name, not a command.
        assert_eq!(c.complete("x /he", 5, &cmds, &users), None);
    }

    #[test]
    fn repeated_tab_cycles_and_wraps() {
        let users = v(&["bob", "Bea", "bert"]);
        let mut c = Completer::new();
        let (t1, c1) = c.complete("hi b", 4, &[], &users).unwrap();
        assert_eq!(t1, "hi Bea ");
        let (t2, c2) = c.complete(&t1, c1, &[], &users).unwrap();
        assert_eq!(t2, "hi bert ");
        let (t3, c3) = c.complete(&t2, c2, &[], &users).unwrap();
        assert_eq!(t3, "hi bob ");
        let (t4, _) = c.complete(&t3, c3, &[], &users).unwrap();
        assert_eq!(t4, "hi Bea ");
        // After reset, the same text starts over: an empty word completes nothing.
        c.reset();
        assert_eq!(c.complete(&t3, c3, &[], &users), None);
    }

    #[test]
    fn text_after_the_cursor_stays() {
        let users = v(&["bob"]);
        let mut c = Completer::new();
        assert_eq!(
            c.complete("hi bo and more", 5, &[], &users),
            Some(("hi bob and more".to_string(), 6))
        );
    }
}
