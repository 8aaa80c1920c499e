//! The status bar, fitted to the width: the current room (or whisper target) always stays;
//! the rest gives way in a fixed order when the bar is too long.
//!
//! What goes first is what a user needs least while chatting: the TLS version, then the
//! key's short form (both also shown by `/fingerprint`), then the server (the user name
//! stays), then the user, then the activity bar and the unread count, then the connection
//! state. The buffer shown (`3:#ops`) goes last: it says where a typed line will go.

use ratatui::style::Style;
use ratatui::text::{Line, Span};
use unicode_segmentation::UnicodeSegmentation;
use unicode_width::UnicodeWidthStr;

use crate::tui::theme::Styles;

/// Between two parts of the bar.
const SEP: &str = " │ ";

/// What the bar shows, each part with its style.
pub struct Status {
    /// Logged-in user.
    pub user: String,
    /// Server as typed.
    pub server: String,
    /// `connected`, `reconnecting in 3s`, ...
    pub state: (String, Style),
    /// TLS version.
    pub tls: String,
    /// `key SHA256:...` short form.
    pub key: String,
    /// The buffer shown (`3:#ops`) or `to bob: verified`, if any.
    pub place: Option<(String, Style)>,
    /// The activity bar (`act: 3:#ops(2)*`) and the search shown, as styled pieces of one
    /// part; empty: none.
    pub activity: Vec<(String, Style)>,
    /// Lines that arrived while scrolled up.
    pub unread: usize,
}

/// How much was left out to fit: each level drops one more part.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Level {
    All,
    NoTls,
    NoKey,
    NoServer,
    NoUser,
    NoUnread,
    PlaceOnly,
}

const LEVELS: [Level; 7] = [
    Level::All,
    Level::NoTls,
    Level::NoKey,
    Level::NoServer,
    Level::NoUser,
    Level::NoUnread,
    Level::PlaceOnly,
];

/// One part of the bar: styled pieces drawn side by side.
type Part = Vec<(String, Style)>;

/// The bar's parts at `level`.
fn parts(s: &Status, bar: Style, level: Level) -> Vec<Part> {
    let mut parts = Vec::new();
    if level < Level::NoServer {
        parts.push(vec![(format!("{}@{}", s.user, s.server), bar)]);
    } else if level < Level::NoUser {
        parts.push(vec![(s.user.clone(), bar)]);
    }
    if level < Level::PlaceOnly {
        parts.push(vec![(s.state.0.clone(), bar.patch(s.state.1))]);
    }
    if level < Level::NoTls && !s.tls.is_empty() {
        parts.push(vec![(s.tls.clone(), bar)]);
    }
    if level < Level::NoKey && !s.key.is_empty() {
        parts.push(vec![(s.key.clone(), bar)]);
    }
    if let Some((text, style)) = &s.place {
        parts.push(vec![(text.clone(), bar.patch(*style))]);
    }
    if level < Level::NoUnread && !s.activity.is_empty() {
        parts.push(
            s.activity
                .iter()
                .map(|(t, style)| (t.clone(), bar.patch(*style)))
                .collect(),
        );
    }
    if level < Level::NoUnread && s.unread > 0 {
        parts.push(vec![(format!("{} unread", s.unread), bar)]);
    }
    parts
}

fn width_of(parts: &[Part]) -> usize {
    // A leading blank, the parts and the separators between them.
    1 + parts
        .iter()
        .flatten()
        .map(|(t, _)| t.width())
        .sum::<usize>()
        + SEP.width() * parts.len().saturating_sub(1)
}

/// The bar for `width` columns: the fullest level that fits, the place cut to the width if
/// even it alone does not.
pub fn bar(s: &Status, styles: &Styles, width: usize) -> Line<'static> {
    let bar = styles.status();
    let chosen = LEVELS
        .iter()
        .map(|l| parts(s, bar, *l))
        .find(|p| width_of(p) <= width)
        .unwrap_or_else(|| parts(s, bar, Level::PlaceOnly));
    let mut spans = vec![Span::styled(" ", bar)];
    for (i, part) in chosen.into_iter().enumerate() {
        if i > 0 {
            spans.push(Span::styled(SEP, bar));
        }
        for (text, style) in part {
            spans.push(Span::styled(cut(&text, width.saturating_sub(1)), style));
        }
    }
    Line::from(spans)
}

/// `text` cut to at most `width` columns, by grapheme.
fn cut(text: &str, width: usize) -> String {
    let mut used = 0;
    text.graphemes(true)
        .take_while(|g| {
            used += g.width();
            used <= width
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Theme;

    fn status() -> Status {
        Status {
            user: "alice".into(),
            server: "chat.example.org:8443".into(),
            state: ("connected".into(), Style::default()),
            tls: "TLSv1.3".into(),
            key: "key SHA256:0123abcd".into(),
            place: Some(("3:#development".into(), Style::default())),
            activity: vec![("act: 4:bob(1)".into(), Style::default())],
            unread: 3,
        }
    }

    fn text(width: usize) -> String {
        let line = bar(&status(), &Styles::new(Theme::Dark), width);
        line.spans.iter().map(|s| s.content.to_string()).collect()
    }

    #[test]
    fn parts_give_way_in_order_and_the_room_stays() {
        let full = " alice@chat.example.org:8443 │ connected │ TLSv1.3 │ key SHA256:0123abcd │ \
                    3:#development │ act: 4:bob(1) │ 3 unread";
        assert_eq!(text(200), full);
        assert_eq!(text(full.width()), full);
        let steps = [
            " alice@chat.example.org:8443 │ connected │ key SHA256:0123abcd │ 3:#development │ act: 4:bob(1) │ 3 unread",
            " alice@chat.example.org:8443 │ connected │ 3:#development │ act: 4:bob(1) │ 3 unread",
            " alice │ connected │ 3:#development │ act: 4:bob(1) │ 3 unread",
            " connected │ 3:#development │ act: 4:bob(1) │ 3 unread",
            " connected │ 3:#development",
            " 3:#development",
        ];
        let mut width = full.width() - 1;
        for step in steps {
            assert_eq!(text(width), step, "at {width}");
            width = step.width() - 1;
        }
        // Narrower than the buffer's name itself: the name, cut.
        assert_eq!(text(8), " 3:#deve");
        assert_eq!(text(0), " ");
    }
}
