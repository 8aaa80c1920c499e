//! Drawing the interface: message view, side panel, status bar, input line.

use ratatui::Frame;
use ratatui::layout::{Constraint, Direction, Layout, Position, Rect};
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph};
use unicode_width::UnicodeWidthStr;

use crate::tui::app::{App, ConnState};
use crate::tui::render::{self, Render};
use crate::tui::status::{self, Status};
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

fn draw_messages(f: &mut Frame<'_>, app: &mut App, styles: &Styles, area: Rect) {
    let height = usize::from(area.height);
    app.page = height.saturating_sub(1).max(1);
    let buffer = app.buffers.current();
    let shown = buffer.shown();
    let (scroll, unread) = (buffer.scroll, buffer.unread);
    let marker = unread > 0 || scroll > 0;
    let room = if marker {
        height.saturating_sub(1)
    } else {
        height
    };
    let end = shown.len().saturating_sub(scroll);
    let render = Render {
        width: usize::from(area.width),
        time_format: &app.ui.time_format,
        styles,
    };
    let rows = render::last_rows(shown[..end].iter().copied(), &render, room);
    // Short histories sit at the bottom, next to the input, like every chat client.
    let mut lines: Vec<Line<'static>> = vec![Line::default(); room.saturating_sub(rows.len())];
    lines.extend(rows);
    if marker {
        let text = if unread > 0 {
            format!(" {unread} new below (PageDown, Ctrl-End) ")
        } else {
            " scrolled up (PageDown, Ctrl-End) ".to_string()
        };
        lines.push(Line::from(Span::styled(text, styles.unread())));
    }
    f.render_widget(Paragraph::new(lines), area);
}

fn draw_panel(f: &mut Frame<'_>, app: &App, styles: &Styles, area: Rect) {
    let inner = usize::from(area.height.saturating_sub(2));
    // Away users are dimmed and marked in words, which the mono theme keeps.
    let mut lines: Vec<Line<'static>> = app
        .members
        .iter()
        .take(inner)
        .map(|u| {
            if app.away.contains(u) {
                Line::from(Span::styled(format!("{u} (away)"), styles.away()))
            } else {
                Line::from(Span::styled(u.clone(), styles.name(u)))
            }
        })
        .collect();
    if app.members.len() > inner && inner > 0 {
        lines.truncate(inner - 1);
        lines.push(Line::from(format!(
            "+{} more",
            app.members.len() - (inner - 1)
        )));
    }
    let block = Block::default()
        .borders(Borders::ALL)
        .title(format!(" {} ", app.members_title()));
    f.render_widget(Paragraph::new(lines).block(block), area);
}

fn draw_status(f: &mut Frame<'_>, app: &App, styles: &Styles, area: Rect) {
    let state = match &app.state {
        ConnState::Connected => ("connected".to_string(), styles.good()),
        ConnState::Reconnecting(retry) => (retry.to_string(), styles.bad()),
        ConnState::Disconnected => ("disconnected".to_string(), styles.bad()),
    };
    let place = match &app.target {
        Some((name, Some(true))) => Some((format!("to {name}: verified"), styles.good())),
        Some((name, Some(false))) => Some((format!("to {name}: unverified"), styles.bad())),
        Some((name, None)) => Some((format!("to {name}: no key"), styles.bad())),
        None => Some((
            format!(
                "{}:{}",
                app.buffers.current_number(),
                app.buffers.current().kind.name()
            ),
            Style::default(),
        )),
    };
    let info = Status {
        user: app.user.clone(),
        server: app.server.clone(),
        state,
        tls: app.tls.clone(),
        key: if app.key_short.is_empty() {
            String::new()
        } else {
            format!("key {}", app.key_short)
        },
        place,
        activity: activity(app, styles),
        unread: app.buffers.current().unread,
    };
    let line = status::bar(&info, styles, usize::from(area.width));
    f.render_widget(Paragraph::new(line).style(styles.status()), area);
}

/// The activity bar, weechat-like: `act: 3:#ops(2) 4:bob(1)*`, a `*` (in the highlight
/// style) where a line named this user; and the search being shown.
fn activity(app: &App, styles: &Styles) -> Vec<(String, Style)> {
    let mut pieces = Vec::new();
    let active = app.buffers.activity();
    if !active.is_empty() {
        pieces.push(("act:".to_string(), Style::default()));
        for (n, name, count, highlights) in active {
            pieces.push((format!(" {n}:{name}({count})"), Style::default()));
            if highlights > 0 {
                pieces.push(("*".to_string(), styles.highlight()));
            }
        }
    }
    if let Some(note) = app.search_note() {
        if !pieces.is_empty() {
            pieces.push(("  ".to_string(), Style::default()));
        }
        pieces.push((note, Style::default()));
    }
    pieces
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
#[path = "view_tests.rs"]
mod tests;
