//! Tab completion, cycling through candidates on repeated Tab: commands, and each command's
//! arguments by what [`crate::commands::arg_kind`] says they are (users, rooms, a user's
//! pinned fingerprints, this account's devices); elsewhere user names.

use std::collections::BTreeSet;

use crate::commands::{self, Arg};
use crate::secure::Secure;
use crate::secure::prefix::hex_of;

/// Room names seen in `/rooms` answers kept for completion.
const MAX_SEEN_ROOMS: usize = 1000;

/// What completion may offer besides commands and online users, kept fresh from the session.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// Rooms this user is in.
    pub rooms: Vec<String>,
    /// Rooms seen in `/rooms` answers.
    seen_rooms: BTreeSet<String>,
    /// Full fingerprints of the user the line names (`/verify USER ...`).
    pub fingerprints: Vec<String>,
    /// Full fingerprints of this account's other devices (`/devices approve ...`).
    pub devices: Vec<String>,
    /// Ignored users (for `/unignore`).
    pub ignored: Vec<String>,
}

impl Sources {
    /// Notes rooms from a `/rooms` answer.
    pub fn saw_rooms<'a>(&mut self, rooms: impl Iterator<Item = &'a str>) {
        for room in rooms {
            if self.seen_rooms.len() >= MAX_SEEN_ROOMS {
                break;
            }
            if chatd_proto::names::validate_room(room).is_ok() {
                self.seen_rooms.insert(room.to_string());
            }
        }
    }

    /// Refreshes from the session; fingerprints only when `text` (the input line) is a
    /// command that takes them, so a draw costs little.
    pub fn refresh(&mut self, secure: &Secure, text: &str) {
        self.rooms = secure.known_rooms();
        self.ignored = secure.ignored_users();
        self.fingerprints.clear();
        self.devices.clear();
        let mut words = text.split_whitespace();
        let Some(name) = words.next().and_then(|w| w.strip_prefix('/')) else {
            return;
        };
        let args: Vec<&str> = words.collect();
        if commands::arg_kind(name, 1, &args) == Some(Arg::Fingerprint) {
            if let Some(user) = args.first() {
                self.fingerprints = secure
                    .pinned_fingerprints(user)
                    .iter()
                    .map(ToString::to_string)
                    .collect();
            }
        }
        if (0..2).any(|i| commands::arg_kind(name, i, &args) == Some(Arg::OwnDevice)) {
            self.devices = secure
                .own_devices()
                .iter()
                .map(ToString::to_string)
                .collect();
        }
    }

    fn all_rooms(&self) -> impl Iterator<Item = &String> {
        self.rooms.iter().chain(&self.seen_rooms)
    }
}

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
    #[cfg(test)]
    pub fn complete(
        &mut self,
        text: &str,
        cursor: usize,
        commands: &[String],
        users: &[String],
    ) -> Option<(String, usize)> {
        self.complete_with(text, cursor, commands, users, &Sources::default())
    }

    /// [`Completer::complete`], with a command's arguments completed from `more` by kind.
    pub fn complete_with(
        &mut self,
        text: &str,
        cursor: usize,
        commands: &[String],
        users: &[String],
        more: &Sources,
    ) -> Option<(String, usize)> {
        if let Some(c) = self.cycle.as_mut() {
            // With one candidate there is nothing to cycle: Tab goes on to the next argument
            // (`/verify b` Tab Tab gives bob, then his fingerprint).
            if c.produced.0 == text && c.produced.1 == cursor && c.candidates.len() > 1 {
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
        let first = head[..start].trim().is_empty();
        let kind = argument(&head[..start]);
        if word.is_empty() && matches!(kind, None | Some(Arg::Text)) {
            return None;
        }
        let mut candidates: Vec<String> = match word.strip_prefix('/') {
            Some(prefix) if first => commands
                .iter()
                .filter(|c| !c.is_empty() && starts_with_ci(c, prefix))
                .map(|c| format!("/{c} "))
                .collect(),
            _ if matches!(kind, Some(k) if k != Arg::Text) => {
                arguments(kind, word, &head[..start], commands, users, more)
            }
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

/// What the word after `before` is, when `before` is a command and its earlier arguments.
fn argument(before: &str) -> Option<Arg> {
    let mut words = before.split_whitespace();
    let name = words.next()?.strip_prefix('/')?;
    let args: Vec<&str> = words.collect();
    commands::arg_kind(name, args.len(), &args)
}

/// Candidates for a command's argument of `kind`.
fn arguments(
    kind: Option<Arg>,
    word: &str,
    before: &str,
    commands: &[String],
    users: &[String],
    more: &Sources,
) -> Vec<String> {
    let with_space = |c: &String| format!("{c} ");
    match kind {
        Some(Arg::User) => {
            // `/unignore` is for the ignored, who may well be offline.
            let pool: Vec<&String> = if before.trim_start().starts_with("/unignore") {
                more.ignored.iter().collect()
            } else {
                users.iter().chain(&more.ignored).collect()
            };
            pool.into_iter()
                .filter(|u| !u.is_empty() && starts_with_ci(u, word))
                .map(with_space)
                .collect()
        }
        Some(Arg::Room) => {
            let hash = word.starts_with('#');
            // `/topic TEXT`: only a word with `#` names a room.
            if !hash && before.trim_start().starts_with("/topic") {
                return Vec::new();
            }
            let prefix = word.trim_start_matches('#');
            let mark = if hash { "#" } else { "" };
            more.all_rooms()
                .filter(|r| starts_with_ci(r, prefix))
                .map(|r| format!("{mark}{r} "))
                .collect()
        }
        Some(Arg::Fingerprint) => fingerprints(&more.fingerprints, word),
        Some(Arg::OwnDevice) => fingerprints(&more.devices, word),
        Some(Arg::Word(words)) => words
            .iter()
            .filter(|w| w.starts_with(word))
            .map(|w| format!("{w} "))
            .collect(),
        Some(Arg::Command) => {
            let word = word.trim_start_matches('/');
            commands
                .iter()
                .filter(|c| !c.is_empty() && starts_with_ci(c, word))
                .map(with_space)
                .collect()
        }
        Some(Arg::Text) | None => Vec::new(),
    }
}

/// The fingerprints (`SHA256:...`) that start with the hex digits typed so far (`SHA256:`
/// and `:` optional).
fn fingerprints(all: &[String], word: &str) -> Vec<String> {
    let typed = word
        .get(..7)
        .filter(|p| p.eq_ignore_ascii_case("SHA256:"))
        .map_or(word, |_| &word[7..]);
    let digits: String = typed.chars().filter(|c| *c != ':').collect();
    if !digits.chars().all(|c| c.is_ascii_hexdigit()) {
        return Vec::new();
    }
    let digits = digits.to_ascii_lowercase();
    all.iter()
        .filter(|fp| {
            fp.parse::<chatd_proto::Fingerprint>()
                .is_ok_and(|f| hex_of(&f).starts_with(&digits))
        })
        .map(|fp| format!("{fp} "))
        .collect()
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

    fn sources() -> Sources {
        let mut s = Sources {
            rooms: v(&["dev", "lobby"]),
            fingerprints: v(&[
                &format!("SHA256:{}", "ab".repeat(32)),
                &format!("SHA256:{}", "cd".repeat(32)),
            ]),
            devices: v(&[&format!("SHA256:{}", "ef".repeat(32))]),
            ignored: v(&["mallory"]),
            ..Sources::default()
        };
        s.saw_rooms(["design", "Bad Name"].into_iter());
        s
    }

    fn arg(text: &str) -> Option<String> {
        let cmds = v(&["join", "help", "whois"]);
        let users = v(&["bob", "carol"]);
        Completer::new()
            .complete_with(text, text.len(), &cmds, &users, &sources())
            .map(|(t, _)| t)
    }

    #[test]
    fn arguments_complete_by_what_they_are() {
        // Rooms: joined ones and ones seen in /rooms; `#` kept when typed.
        assert_eq!(arg("/join de").as_deref(), Some("/join design "));
        assert_eq!(arg("/join dev").as_deref(), Some("/join dev "));
        assert_eq!(arg("/join #l").as_deref(), Some("/join #lobby "));
        assert_eq!(arg("/part l").as_deref(), Some("/part lobby "));
        assert_eq!(arg("/invite bob d").as_deref(), Some("/invite bob design "));
        assert_eq!(arg("/topic #d").as_deref(), Some("/topic #design "));
        assert_eq!(arg("/topic d"), None, "topic text, not a room");
        assert_eq!(arg("/join B"), None, "invalid names seen are not kept");
        // Users in every command that takes one.
        for c in [
            "whisper", "msg", "w", "verify", "trust", "whois", "kick", "invite", "ignore",
        ] {
            assert_eq!(
                arg(&format!("/{c} ca")),
                Some(format!("/{c} carol ")),
                "{c}"
            );
        }
        assert_eq!(arg("/unignore ").as_deref(), Some("/unignore mallory "));
        assert_eq!(arg("/unignore b"), None, "only the ignored");
        // A whisper's text completes names as text does.
        assert_eq!(arg("/w bob hi ca").as_deref(), Some("/w bob hi carol "));
        // Fingerprints: the named user's, by prefix, with or without SHA256: and colons.
        let ab = format!("SHA256:{}", "ab".repeat(32));
        assert_eq!(arg("/verify bob "), Some(format!("/verify bob {ab} ")));
        assert_eq!(
            arg("/verify bob cd").map(|t| t.len()),
            Some(12 + 7 + 64 + 1)
        );
        assert_eq!(
            arg("/verify bob SHA256:ab:ab"),
            Some(format!("/verify bob {ab} "))
        );
        assert_eq!(arg("/verify bob zz"), None);
        // Own devices after approve/revoke; the subcommand itself.
        let ef = format!("SHA256:{}", "ef".repeat(32));
        assert_eq!(arg("/devices a").as_deref(), Some("/devices approve "));
        assert_eq!(
            arg("/devices revoke "),
            Some(format!("/devices revoke {ef} "))
        );
        assert_eq!(arg("/revoke e"), Some(format!("/revoke {ef} ")));
        assert_eq!(arg("/devices list "), None);
        // One candidate: Tab again moves on to the next argument.
        let cmds = v(&["verify"]);
        let users = v(&["bob"]);
        let mut c = Completer::new();
        let (t, at) = c
            .complete_with("/verify b", 9, &cmds, &users, &sources())
            .unwrap();
        assert_eq!(t, "/verify bob ");
        let (t, _) = c.complete_with(&t, at, &cmds, &users, &sources()).unwrap();
        assert_eq!(t, format!("/verify bob {ab} "));
        // Commands as /help's argument.
        assert_eq!(arg("/help wh").as_deref(), Some("/help whois "));
        // An empty word completes nothing in plain text.
        assert_eq!(arg("hello "), None);
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
