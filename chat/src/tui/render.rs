//! Entries to screen rows: word wrap with a hanging indent, lines of several lines, and the
//! day-change lines between entries of different dates.
//!
//! Everything here works on a slice or iterator of [`Entry`] plus a width and the styles, so
//! it does not care which conversation (buffer) the entries belong to.

use chrono::NaiveDate;
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use unicode_segmentation::UnicodeSegmentation;
use unicode_width::UnicodeWidthStr;

use crate::tui::app::{Entry, Kind};
use crate::tui::theme::Styles;

/// A continuation row is indented at most this fraction of the width (1/2): on a narrow
/// terminal a long name would otherwise leave no room for the text.
const MAX_INDENT_DIVISOR: usize = 2;

/// How entries are drawn: the view's width, the stamp format and the styles.
#[derive(Clone, Copy)]
pub struct Render<'a> {
    /// Columns available.
    pub width: usize,
    /// strftime format of the stamps.
    pub time_format: &'a str,
    /// Styles of the theme.
    pub styles: &'a Styles,
}

/// The `-- Monday, 7 December 2026 --` line drawn between entries of different dates.
pub fn day_text(date: NaiveDate) -> String {
    format!("-- {} --", date.format("%A, %-d %B %Y"))
}

/// The last `max` rows of `entries` (given oldest first), oldest row first, with a day line
/// wherever two consecutive entries fall on different local dates.
pub fn last_rows<'e, I>(entries: I, r: &Render<'_>, max: usize) -> Vec<Line<'static>>
where
    I: DoubleEndedIterator<Item = &'e Entry>,
{
    // Newest first until the view is full, then turned the right way round.
    let mut rows: Vec<Line<'static>> = Vec::new();
    let mut newer: Option<NaiveDate> = None;
    for e in entries.rev() {
        if rows.len() >= max {
            break;
        }
        let date = e.at.date_naive();
        if let Some(later) = newer.filter(|d| *d != date) {
            rows.push(Line::from(Span::styled(day_text(later), r.styles.day())));
        }
        newer = Some(date);
        let mut wrapped = entry_rows(e, r);
        wrapped.reverse();
        rows.extend(wrapped);
    }
    rows.truncate(max);
    rows.reverse();
    rows
}

/// One entry as rows of at most `r.width` columns: the stamp and the text, each of the
/// text's lines wrapped at word boundaries, every row after the first indented under the
/// text (past the stamp and `<nick> `).
pub fn entry_rows(e: &Entry, r: &Render<'_>) -> Vec<Line<'static>> {
    let stamp = format!("{} ", e.at.format(r.time_format));
    let base = match e.kind {
        Kind::Notice => r.styles.notice(),
        Kind::Warning => r.styles.warning(),
        Kind::Whisper => r.styles.whisper(),
        _ if e.highlight => r.styles.highlight(),
        Kind::Message | Kind::Action if e.own => r.styles.own(),
        Kind::Message | Kind::Action => Style::default(),
    };
    let (first, rest) = match e.text.split_once('\n') {
        Some((first, rest)) => (first, Some(rest)),
        None => (e.text.as_str(), None),
    };
    let mut spans = vec![(stamp.clone(), r.styles.stamp())];
    // The sender's name in its own color, the rest in the line's style.
    let named = e
        .from
        .as_deref()
        .filter(|_| !matches!(e.kind, Kind::Notice | Kind::Warning))
        .and_then(|n| first.find(n).map(|i| (n, i)));
    let head = match named {
        Some((name, i)) => {
            let (before, tail) = first.split_at(i);
            let (name_part, after) = tail.split_at(name.len());
            spans.push((before.to_string(), base));
            spans.push((name_part.to_string(), r.styles.name(name)));
            spans.push((after.to_string(), base));
            // `<bob> `, `* bob `, `*bob* `: up to the first space after the name.
            let close = after.find(' ').map_or(after.len(), |s| s + 1);
            format!("{before}{name_part}{}", &after[..close])
        }
        None => {
            spans.push((first.to_string(), base));
            match (e.kind, first.find("* ")) {
                // Our whisper, `-> *bob* `: up to the closing star.
                (Kind::Whisper, Some(end)) => first[..end + 2].to_string(),
                // `-- `, `!! `: the mark and its space.
                _ => first
                    .split_once(' ')
                    .map(|(mark, _)| format!("{mark} "))
                    .unwrap_or_default(),
            }
        }
    };
    let width = r.width.max(1);
    let mut indent = stamp.width() + head.width();
    if indent > width / MAX_INDENT_DIVISOR {
        indent = stamp.width().min(width / MAX_INDENT_DIVISOR);
    }
    let mut rows = wrap(spans, width, 0, indent);
    // Further lines of a multi-line text: each starts a row of its own, under the text.
    for more in rest.into_iter().flat_map(|r| r.split('\n')) {
        rows.append(&mut wrap(
            vec![(more.to_string(), base)],
            width,
            indent,
            indent,
        ));
    }
    rows
}

/// One grapheme with its width and style.
struct Cell {
    g: String,
    width: usize,
    style: Style,
    space: bool,
}

/// Breaks styled text into rows of at most `width` columns at word boundaries; the first row
/// starts with `lead` blanks, the others with `indent`. A word longer than a row is broken by grapheme
/// (a wide character is never split). Spaces where a row breaks are dropped.
pub fn wrap(
    spans: Vec<(String, Style)>,
    width: usize,
    lead: usize,
    indent: usize,
) -> Vec<Line<'static>> {
    let width = width.max(1);
    let indent = indent.min(width.saturating_sub(1));
    let lead = lead.min(width.saturating_sub(1));
    let cells: Vec<Cell> = spans
        .iter()
        .flat_map(|(text, style)| {
            text.graphemes(true).map(|g| Cell {
                g: g.to_string(),
                width: g.width(),
                style: *style,
                space: g.chars().all(char::is_whitespace),
            })
        })
        .collect();
    let mut rows = Vec::new();
    let mut start = 0;
    let mut first = true;
    while start < cells.len() || first {
        let pad = if first { lead } else { indent };
        let room = width - pad;
        // The longest run from `start` that fits.
        let mut used = 0;
        let mut end = start;
        while end < cells.len() && used + cells[end].width <= room {
            used += cells[end].width;
            end += 1;
        }
        if end == start && end < cells.len() {
            // A grapheme wider than the whole row: it goes alone.
            end += 1;
        }
        let mut cut = end;
        let mut next = end;
        if end < cells.len() && !cells[end].space {
            // Mid-word: go back to the last space, if the row has one after its start.
            if let Some(s) = (start + 1..end).rev().find(|&i| cells[i].space) {
                cut = s;
                next = s;
            }
        }
        while cut > start && cells[cut - 1].space && cut < cells.len() {
            cut -= 1;
        }
        while next < cells.len() && cells[next].space {
            next += 1;
        }
        rows.push(line(&cells[start..cut], pad));
        first = false;
        start = next;
    }
    rows
}

/// A row from cells, consecutive cells of one style merged into one span.
fn line(cells: &[Cell], indent: usize) -> Line<'static> {
    let mut spans: Vec<Span<'static>> = Vec::new();
    if indent > 0 {
        spans.push(Span::raw(" ".repeat(indent)));
    }
    let mut text = String::new();
    let mut style = None;
    for c in cells {
        if style.is_some_and(|s| s != c.style) {
            spans.push(Span::styled(
                std::mem::take(&mut text),
                style.unwrap_or_default(),
            ));
        }
        style = Some(c.style);
        text.push_str(&c.g);
    }
    if !text.is_empty() {
        spans.push(Span::styled(text, style.unwrap_or_default()));
    }
    Line::from(spans)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Theme;
    use chrono::{Local, TimeZone};

    fn texts(rows: &[Line<'_>]) -> Vec<String> {
        rows.iter()
            .map(|l| l.spans.iter().map(|s| s.content.to_string()).collect())
            .collect()
    }

    fn plain(text: &str, width: usize, indent: usize) -> Vec<String> {
        texts(&wrap(
            vec![(text.to_string(), Style::default())],
            width,
            0,
            indent,
        ))
    }

    #[test]
    fn words_move_to_the_next_row_under_the_indent() {
        assert_eq!(
            plain("<bob> one two three four", 14, 6),
            ["<bob> one two", "      three", "      four"]
        );
        // Several spaces at the break vanish; inside a row they stay.
        assert_eq!(plain("ab  cd   ef", 6, 0), ["ab  cd", "ef"]);
    }

    #[test]
    fn long_words_break_by_grapheme_and_wide_characters_stay_whole() {
        assert_eq!(plain("ab漢字漢", 5, 0), ["ab漢", "字漢"]);
        assert_eq!(plain("x abcdefgh", 5, 2), ["x", "  abc", "  def", "  gh"]);
        // e + combining acute is one grapheme.
        assert_eq!(
            plain("e\u{301}e\u{301}e\u{301}", 2, 0),
            ["e\u{301}e\u{301}", "e\u{301}"]
        );
        // A wide character in a one-column view still goes somewhere, alone.
        assert_eq!(plain("漢字", 1, 0), ["漢", "字"]);
        assert_eq!(plain("", 10, 4), [""]);
    }

    fn entry(text: &str, kind: Kind, at: chrono::DateTime<Local>) -> Entry {
        Entry {
            at,
            kind,
            from: (kind == Kind::Message).then(|| "bob".to_string()),
            own: false,
            text: text.to_string(),
            highlight: false,
        }
    }

    #[test]
    fn messages_indent_past_stamp_and_nick_and_keep_their_line_breaks() {
        let styles = Styles::new(Theme::Dark);
        let r = Render {
            width: 24,
            time_format: "%H:%M",
            styles: &styles,
        };
        let at = Local
            .with_ymd_and_hms(2026, 12, 7, 9, 5, 0)
            .single()
            .unwrap();
        let e = entry("<bob> the quick brown fox\nsecond line", Kind::Message, at);
        assert_eq!(
            texts(&entry_rows(&e, &r)),
            [
                "09:05 <bob> the quick",
                "            brown fox",
                "            second line"
            ]
        );
        let mut ours = entry("-> *bob* see you tomorrow", Kind::Whisper, at);
        (ours.from, ours.own) = (Some("alice".into()), true);
        let wider = Render { width: 30, ..r };
        assert_eq!(
            texts(&entry_rows(&ours, &wider)),
            ["09:05 -> *bob* see you", "               tomorrow"]
        );
        // Too long a head for the width: the indent falls back to the stamp.
        assert_eq!(
            texts(&entry_rows(&ours, &r)),
            ["09:05 -> *bob* see you", "      tomorrow"]
        );
        let w = entry("!! certificate changed:\nold A\nnew B", Kind::Warning, at);
        assert_eq!(
            texts(&entry_rows(&w, &r)),
            [
                "09:05 !! certificate",
                "         changed:",
                "         old A",
                "         new B"
            ]
        );
    }

    #[test]
    fn a_day_line_separates_entries_of_different_dates() {
        let styles = Styles::new(Theme::Dark);
        let r = Render {
            width: 60,
            time_format: "%H:%M",
            styles: &styles,
        };
        let day = |d, h| {
            Local
                .with_ymd_and_hms(2026, 12, d, h, 0, 0)
                .single()
                .unwrap()
        };
        let entries = [
            entry("-- a", Kind::Notice, day(6, 23)),
            entry("-- b", Kind::Notice, day(7, 1)),
            entry("-- c", Kind::Notice, day(7, 2)),
        ];
        assert_eq!(
            texts(&last_rows(entries.iter(), &r, 10)),
            [
                "23:00 -- a",
                "-- Monday, 7 December 2026 --",
                "01:00 -- b",
                "02:00 -- c"
            ]
        );
        // Cut to the newest rows, oldest first.
        assert_eq!(
            texts(&last_rows(entries.iter(), &r, 2)),
            ["01:00 -- b", "02:00 -- c"]
        );
    }
}
