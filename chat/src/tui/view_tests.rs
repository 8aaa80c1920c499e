//! Drawing tests on ratatui's `TestBackend`: layout, wrapping, day lines, the status bar at
//! 60, 80 and 160 columns in both themes, and the contrast of every status bar cell.

use super::*;
use crate::config::{Theme, UiConfig};
use crate::secure::{ChatMessage, Event};
use crate::tui::buffers::BufKind;
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
    // The event loop does this before each draw.
    a.update_members(|_| None);
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
    // "HH:MM <bob> " is 12 columns: 28 x's on the first row, 28 more under them, then 4.
    assert!(rows[1].ends_with(&"x".repeat(28)), "{rows:#?}");
    assert_eq!(rows[2], format!("{}{}", " ".repeat(12), "x".repeat(28)));
    assert_eq!(rows[3].trim_end(), format!("{}xxxx", " ".repeat(12)));
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
    // All on one day (the messages' day), so no day line comes between them.
    let day = a.buffers.current().entries[0].at;
    for e in &mut a.buffers.current_mut().entries {
        e.at = day;
    }
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

fn themed(app: &mut App, w: u16, h: u16, theme: Theme) -> (Vec<String>, Buffer) {
    let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
    let styles = Styles::new(theme);
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

fn msg_at(from: &str, text: &str, ts: u64) -> Event {
    let Event::Message(mut m) = msg(from, text) else {
        unreachable!()
    };
    m.ts = ts;
    Event::Message(m)
}

const DAY_MS: u64 = 24 * 3600 * 1000;

#[test]
fn both_themes_at_60_80_and_160_columns() {
    use crate::tui::theme::{MIN_CONTRAST, contrast, xterm_rgb};
    let long = "the quick brown fox jumps over the lazy dog and keeps running far away \
                across the wide green fields until the sun goes down behind the hills";
    for theme in [Theme::Dark, Theme::Light] {
        for w in [60_u16, 80, 160] {
            let mut a = app();
            a.default_room = "development".into();
            a.buffers.switch_to(BufKind::Room("development".into()));
            a.events(vec![
                msg_at("bob", "yesterday's line", 1_764_300_000_000),
                msg_at("bob", long, 1_764_300_000_000 + DAY_MS),
            ]);
            let h = 14;
            let (rows, buf) = themed(&mut a, w, h, theme);
            let ctx = format!("{theme:?} at {w}: {rows:#?}");
            // The room is on the status bar at every width.
            let status = &rows[usize::from(h) - 2];
            assert!(status.contains(":#development"), "{ctx}");
            if w >= 160 {
                assert!(
                    status.contains("TLSv1.3") && status.contains("alice@h:8443"),
                    "{ctx}"
                );
            }
            // The day line between the two days' messages.
            let day = render::day_text(a.buffers.current().entries[1].at.date_naive());
            let d = rows.iter().position(|r| r.contains(&day)).expect(&ctx);
            assert!(rows[d - 1].contains("<bob> yesterday's line"), "{ctx}");
            assert!(rows[d + 1].contains("<bob> the quick"), "{ctx}");
            // The long message wraps at words, indented under its text ("HH:MM <bob> ").
            let view = usize::from(w) - if w >= PANEL_MIN_WIDTH { 18 } else { 0 };
            let cropped: Vec<&str> = rows[d + 1..usize::from(h) - 2]
                .iter()
                .map(|r| &r[..r.char_indices().nth(view).map_or(r.len(), |(i, _)| i)])
                .collect();
            let (first, continued) = cropped.split_first().expect(&ctx);
            assert!(!continued.is_empty(), "{ctx}");
            let mut words = String::from(&first[12..]);
            for r in continued {
                assert!(r.starts_with(&" ".repeat(12)), "{ctx}");
                assert!(!r[12..].starts_with(' '), "{ctx}");
                words.push(' ');
                words.push_str(r.trim());
            }
            let words: Vec<&str> = words.split_whitespace().collect();
            assert_eq!(words, long.split_whitespace().collect::<Vec<_>>(), "{ctx}");
            // Every status bar cell is readable: colors from the fixed 256-color table, with
            // enough contrast.
            for x in 0..w {
                let cell = &buf[(x, h - 2)];
                let (fg, bg) = (xterm_rgb(cell.fg), xterm_rgb(cell.bg));
                let (Some(fg), Some(bg)) = (fg, bg) else {
                    panic!(
                        "cell {x} of the status bar: {:?} on {:?}; {ctx}",
                        cell.fg, cell.bg
                    );
                };
                assert!(contrast(fg, bg) >= MIN_CONTRAST, "cell {x}; {ctx}");
            }
        }
    }
}

#[test]
fn mono_reverses_the_status_bar_and_sets_no_colors() {
    use ratatui::style::{Color, Modifier};
    let mut a = app();
    a.default_room = "dev".into();
    a.buffers.switch_to(BufKind::Room("dev".into()));
    a.events(vec![msg("bob", "hi")]);
    let (rows, buf) = themed(&mut a, 60, 6, Theme::Mono);
    assert!(rows[4].contains(":#dev"), "{rows:#?}");
    for x in 0..60 {
        let cell = &buf[(x, 4)];
        assert!(cell.modifier.contains(Modifier::REVERSED));
        assert_eq!((cell.fg, cell.bg), (Color::Reset, Color::Reset));
    }
}

#[test]
fn a_multi_line_warning_is_drawn_as_indented_rows() {
    let mut a = app();
    a.warning("the server's certificate changed\n  pinned: SHA256:aaaa\n  now:    SHA256:bbbb");
    // 40 columns: "HH:MM !! the server's certificate" fills the first row.
    let (rows, _) = screen(&mut a, 40, 7);
    let at = rows
        .iter()
        .position(|r| r.contains("!! the server's"))
        .expect("the warning");
    // "HH:MM !! " is 9 columns; the text's own indent comes after it.
    assert!(
        rows[at].trim_end().ends_with("!! the server's certificate"),
        "{rows:#?}"
    );
    assert_eq!(rows[at + 1].trim_end(), format!("{}changed", " ".repeat(9)));
    assert_eq!(
        rows[at + 2].trim_end(),
        format!("{}  pinned: SHA256:aaaa", " ".repeat(9))
    );
    assert_eq!(
        rows[at + 3].trim_end(),
        format!("{}  now:    SHA256:bbbb", " ".repeat(9))
    );
    assert!(rows.iter().all(|r| !r.contains('\u{fffd}')), "{rows:#?}");
}
