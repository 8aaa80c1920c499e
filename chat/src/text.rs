//! Making text from the network safe to put on a terminal line.
//!
//! A leaf (it imports nothing of the crate), so that anything that shows a peer's or the
//! server's words can clean them without depending on the renderer.

/// Replaces control characters (C0, DEL, C1) and bidirectional overrides with U+FFFD.
///
/// Tabs become a space; newlines are replaced too, so one frame is always one line.
pub fn sanitize(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '\t' => ' ',
            // Bidi embeddings/overrides/isolates can reorder what follows on the line.
            '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' => '\u{fffd}',
            c if c.is_control() => '\u{fffd}',
            c => c,
        })
        .collect()
}

/// [`sanitize`] for text of several lines (an error that explains itself over a few): each
/// line sanitized, the line breaks kept.
pub fn sanitize_lines(text: &str) -> String {
    text.lines().map(sanitize).collect::<Vec<_>>().join("\n")
}

/// Shows a name exactly: every character that is not printable ASCII is written as
/// `\u{...}`, so an invisible or look-alike character in a refused name can be seen.
pub fn escape(name: &str) -> String {
    name.chars()
        .map(|c| match c {
            '\\' => "\\\\".to_string(),
            c if c.is_ascii_graphic() || c == ' ' => c.to_string(),
            c => format!("\\u{{{:x}}}", u32::from(c)),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_shows_every_invisible_character() {
        assert_eq!(escape("bob\u{200b}"), "bob\\u{200b}");
        assert_eq!(escape("#lobby\u{200d}"), "#lobby\\u{200d}");
        assert_eq!(escape("\u{1b}[31mx\\"), "\\u{1b}[31mx\\\\");
        assert_eq!(escape("аlice"), "\\u{430}lice");
        assert!(
            !escape("\u{202e}\u{7}\n")
                .chars()
                .any(|c| !c.is_ascii_graphic())
        );
    }

    #[test]
    fn controls_and_bidi_overrides_become_replacement_characters() {
        assert_eq!(sanitize("a\tb"), "a b");
        assert_eq!(sanitize("a\nb\u{1b}[2J"), "a\u{fffd}b\u{fffd}[2J");
        assert_eq!(sanitize("x\u{202e}y\u{2066}z"), "x\u{fffd}y\u{fffd}z");
        assert_eq!(sanitize("plain ünïcödé ✓"), "plain ünïcödé ✓");
    }

    #[test]
    fn several_lines_keep_their_breaks_and_nothing_else() {
        assert_eq!(sanitize_lines("a\nb\u{1b}[2J\r\nc"), "a\nb\u{fffd}[2J\nc");
        assert_eq!(sanitize_lines("one"), "one");
    }
}
