//! Drawing the interface: message view, side panel, status bar, input line.

use ratatui::Frame;
use ratatui::layout::{Constraint, Direction, Layout, Position, Rect};
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph};
use unicode_segmentation::UnicodeSegmentation;
use unicode_width::UnicodeWidthStr;

use crate::tui::app::{App, ConnState, Entry, Kind};
use crate::tui::theme::Styles;

/// Terminals narrower than this get no side panel.
pub const PANEL_MIN_WIDTH: u16 = 60;
/// Width of the side panel, borders included.
const PANEL_WIDTH: u16 = 18;
/// The prompt before the input line.
const PROMPT: &str = "> ";

/// Draws the whole screen.
pub fn draw(f: &mut Frame<'_>, app: &mut App, styles: &Styles) {
    let area = f.area();
    let rows = Layout::default()
        .direction(Direction::Vertical)
        .constraints([
            Constraint::Min(1),
            Constraint::Length(1),
            Constraint::Length(1),
        ])
        .split(area);
    let (main, status, input) = (rows[0], rows[1], rows[2]);
    let (messages, panel) = if app.show_panel && area.width >= PANEL_MIN_WIDTH {
        let cols = Layout::default()
            .direction(Direction::Horizontal)
            .constraints([Constraint::Min(1), Constraint::Length(PANEL_WIDTH)])
            .split(main);
        (cols[0], Some(cols[1]))
    } else {
        (main, None)
    };
    draw_messages(f, app, styles, messages);
    if let Some(panel) = panel {
        draw_panel(f, app, styles, panel);
    }
    draw_status(f, app, styles, status);
    draw_input(f, app, input);
}

fn entry_spans(e: &Entry, app: &App, styles: &Styles) -> Vec<(String, Style)> {
    let mut spans = vec![(
        format!("{} ", e.at.format(&app.ui.time_format)),
        styles.stamp(),
    )];
    let base = match e.kind {
        Kind::Notice => styles.notice(),
        Kind::Warning => styles.warning(),
        Kind::Whisper => styles.whisper(),
        Kind::Message | Kind::Action if e.own => styles.own(),
        Kind::Message | Kind::Action => Style::default(),
    };
    // The sender's name in its own color, the rest in the line's style.
    match e
        .from
        .as_deref()
        .and_then(|n| e.text.find(n).map(|i| (n, i)))
    {
        Some((name, i)) if e.kind != Kind::Notice && e.kind != Kind::Warning => {
            let (before, rest) = e.text.split_at(i);
            let (name_part, after) = rest.split_at(name.len());
            spans.push((before.to_string(), base));
            spans.push((name_part.to_string(), styles.name(name)));
            spans.push((after.to_string(), base));
        }
        _ => spans.push((e.text.clone(), base)),
    }
    spans
}

/// Breaks styled text into rows of at most `width` columns (by grapheme, never splitting one).
fn wrap(spans: Vec<(String, Style)>, width: usize) -> Vec<Line<'static>> {
    let width = width.max(1);
    let mut rows: Vec<Line<'static>> = Vec::new();
    let mut row: Vec<Span<'static>> = Vec::new();
    let mut used = 0;
    for (text, style) in spans {
        let mut piece = String::new();
        for g in text.graphemes(true) {
            let w = g.width();
            if used + w > width && used > 0 {
                if !piece.is_empty() {
                    row.push(Span::styled(std::mem::take(&mut piece), style));
                }
                rows.push(Line::from(std::mem::take(&mut row)));
                used = 0;
            }
            piece.push_str(g);
            used += w;
        }
        if !piece.is_empty() {
            row.push(Span::styled(piece, style));
        }
    }
    if !row.is_empty() || rows.is_empty() {
        rows.push(Line::from(row));
    }
    rows
}

fn draw_messages(f: &mut Frame<'_>, app: &mut App, styles: &Styles, area: Rect) {
    let height = usize::from(area.height);
    app.page = height.saturating_sub(1).max(1);
    let marker = app.unread > 0 || app.scroll > 0;
    let room = if marker {
        height.saturating_sub(1)
    } else {
        height
    };
    let end = app.entries.len().saturating_sub(app.scroll);
    // Newest first until the view is full, then turned the right way round.
    let mut rows: Vec<Line<'static>> = Vec::new();
    for e in app.entries.range(..end).rev() {
        if rows.len() >= room {
            break;
        }
        let mut wrapped = wrap(entry_spans(e, app, styles), usize::from(area.width));
        wrapped.reverse();
        rows.extend(wrapped);
    }
    rows.truncate(room);
    rows.reverse();
    // Short histories sit at the bottom, next to the input, like every chat client.
    let mut lines: Vec<Line<'static>> = vec![Line::default(); room.saturating_sub(rows.len())];
    lines.extend(rows);
    if marker {
        let text = if app.unread > 0 {
            format!(" {} new below (PageDown, Ctrl-End) ", app.unread)
        } else {
            " scrolled up (PageDown, Ctrl-End) ".to_string()
        };
        lines.push(Line::from(Span::styled(text, styles.unread())));
    }
    f.render_widget(Paragraph::new(lines), area);
}

fn draw_panel(f: &mut Frame<'_>, app: &App, styles: &Styles, area: Rect) {
    let inner = usize::from(area.height.saturating_sub(2));
    let mut lines: Vec<Line<'static>> = app
        .online
        .iter()
        .take(inner)
        .map(|u| Line::from(Span::styled(u.clone(), styles.name(u))))
        .collect();
    if app.online.len() > inner && inner > 0 {
        lines.truncate(inner - 1);
        lines.push(Line::from(format!(
            "+{} more",
            app.online.len() - (inner - 1)
        )));
    }
    let block = Block::default()
        .borders(Borders::ALL)
        .title(format!(" online {} ", app.online.len()));
    f.render_widget(Paragraph::new(lines).block(block), area);
}

fn draw_status(f: &mut Frame<'_>, app: &App, styles: &Styles, area: Rect) {
    let bar = styles.status();
    let sep = Span::styled(" │ ", bar);
    let state = match &app.state {
        ConnState::Connected => Span::styled("connected", bar.patch(styles.good())),
        ConnState::Reconnecting(retry) => Span::styled(retry.to_string(), bar.patch(styles.bad())),
        ConnState::Disconnected => Span::styled("disconnected", bar.patch(styles.bad())),
    };
    let mut spans = vec![
        Span::styled(format!(" {}@{}", app.user, app.server), bar),
        sep.clone(),
        state,
        sep.clone(),
        Span::styled(app.tls.clone(), bar),
        sep.clone(),
        Span::styled(format!("key {}", app.key_short), bar),
    ];
    if app.target.is_none() && !app.room.is_empty() {
        spans.push(sep.clone());
        spans.push(Span::styled(format!("in #{}", app.room), bar));
    }
    if let Some((name, verified)) = &app.target {
        spans.push(sep.clone());
        spans.push(match verified {
            Some(true) => Span::styled(format!("to {name}: verified"), bar.patch(styles.good())),
            Some(false) => Span::styled(format!("to {name}: unverified"), bar.patch(styles.bad())),
            None => Span::styled(format!("to {name}: no key"), bar.patch(styles.bad())),
        });
    }
    if app.unread > 0 {
        spans.push(sep);
        spans.push(Span::styled(format!("{} unread", app.unread), bar));
    }
    f.render_widget(Paragraph::new(Line::from(spans)).style(bar), area);
}

fn draw_input(f: &mut Frame<'_>, app: &mut App, area: Rect) {
    let prompt_w = u16::try_from(PROMPT.width()).unwrap_or(2);
    let avail = area.width.saturating_sub(prompt_w);
    let (visible, col) = app.editor.view(avail, &mut app.input_scroll);
    f.render_widget(
        Paragraph::new(Line::from(vec![Span::raw(PROMPT), Span::raw(visible)])),
        area,
    );
    let x = area.x.saturating_add(prompt_w).saturating_add(col);
    f.set_cursor_position(Position::new(x.min(area.right().saturating_sub(1)), area.y));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Theme, UiConfig};
    use crate::secure::{ChatMessage, Event};
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;
    use ratatui::buffer::Buffer;

    fn app() -> App {
        let mut a = App::new(
            "h:8443",
            "alice",
            UiConfig {
                time_format: "%H:%M".into(),
                ..UiConfig::default()
            },
        );
        a.tls = "TLSv1.3".into();
        a.key_short = "SHA256:0123abcd".into();
        a.presence("alice", true);
        a.presence("bob", true);
        a
    }

    fn msg(from: &str, text: &str) -> Event {
        Event::Message(ChatMessage {
            from: from.into(),
            to: None,
            room: None,
            text: text.into(),
            action: false,
            ts: 1_764_300_000_000,
            verified: false,
            late: false,
            server_ts: None,
        })
    }

    fn screen(app: &mut App, w: u16, h: u16) -> (Vec<String>, Buffer) {
        let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
        let styles = Styles::new(Theme::Dark);
        t.draw(|f| draw(f, app, &styles)).unwrap();
        let buf = t.backend().buffer().clone();
        let rows = (0..h)
            .map(|y| {
                (0..w)
                    .map(|x| buf[(x, y)].symbol().to_string())
                    .collect::<String>()
            })
            .collect();
        (rows, buf)
    }

    #[test]
    fn layout_has_messages_panel_status_and_input() {
        let mut a = app();
        a.events(vec![msg("bob", "hello")]);
        a.editor.insert_str("draft");
        let (rows, _) = screen(&mut a, 70, 8);
        // Newest message right above the status bar, stamp first.
        assert!(rows[5].contains("<bob> hello"), "{rows:#?}");
        assert!(rows[0].ends_with("┌ online 2 ──────┐"), "{rows:#?}");
        assert!(rows[1].contains("│alice"), "{rows:#?}");
        assert!(rows[2].contains("│bob"), "{rows:#?}");
        assert!(rows[6].starts_with(" alice@h:8443 │ connected │ TLSv1.3 │ key SHA256:0123abcd"));
        assert_eq!(rows[7].trim_end(), "> draft");
    }

    #[test]
    fn narrow_terminals_hide_the_panel_and_long_lines_wrap() {
        let mut a = app();
        a.events(vec![msg("bob", &"x".repeat(60))]);
        let (rows, _) = screen(&mut a, 40, 6);
        assert!(rows.iter().all(|r| !r.contains("online")), "{rows:#?}");
        // "HH:MM <bob> " is 12 columns: 28 x's on the first row, 32 on the second.
        assert!(rows[2].ends_with(&"x".repeat(28)), "{rows:#?}");
        assert_eq!(rows[3].trim_end(), "x".repeat(32));
    }

    #[test]
    fn wide_characters_are_never_split_across_rows() {
        let rows = wrap(vec![("ab漢字漢".to_string(), Style::default())], 5);
        let text: Vec<String> = rows
            .iter()
            .map(|l| l.spans.iter().map(|s| s.content.to_string()).collect())
            .collect();
        assert_eq!(text, ["ab漢", "字漢"]);
    }

    #[test]
    fn scrolled_up_shows_the_unread_marker_and_older_lines() {
        let mut a = app();
        for i in 0..10 {
            a.notice(format!("line {i}"));
        }
        a.scroll_up(4);
        a.notice("fresh");
        let (rows, _) = screen(&mut a, 100, 6);
        assert!(rows[3].contains("1 new below"), "{rows:#?}");
        assert!(rows[2].contains("-- line 5"), "{rows:#?}");
        assert!(rows.iter().all(|r| !r.contains("fresh")));
        assert!(rows[4].contains("1 unread"));
    }

    #[test]
    fn names_keep_their_color_and_warnings_stand_out() {
        let mut a = app();
        a.events(vec![msg("bob", "one")]);
        a.warning("bad key");
        a.events(vec![msg("bob", "two")]);
        let (rows, buf) = screen(&mut a, 50, 6);
        let styles = Styles::new(Theme::Dark);
        let col = |row: usize, needle: &str| {
            let x = rows[row].find(needle).unwrap();
            // Columns equal byte offsets here: the rows are ASCII up to the needle.
            buf[(u16::try_from(x).unwrap(), u16::try_from(row).unwrap())].fg
        };
        assert_eq!(col(1, "bob"), styles.name("bob").fg.unwrap());
        assert_eq!(col(3, "bob"), styles.name("bob").fg.unwrap());
        assert_eq!(col(2, "!!"), styles.warning().fg.unwrap());
    }

    #[test]
    fn whisper_target_shows_its_verification() {
        let mut a = app();
        a.target = Some(("bob".into(), Some(false)));
        let (rows, _) = screen(&mut a, 100, 4);
        assert!(rows[2].contains("to bob: unverified"), "{rows:#?}");
        a.target = Some(("bob".into(), Some(true)));
        let (rows, _) = screen(&mut a, 100, 4);
        assert!(rows[2].contains("to bob: verified"), "{rows:#?}");
    }
}
