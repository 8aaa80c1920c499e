//! Styles of the full-screen interface: one per kind of line, and a stable color per name.

use ratatui::style::{Color, Modifier, Style};

use crate::config::Theme;

// The palette. Colors come from the xterm 256-color table (16-255), not the 16 ANSI colors:
// every terminal theme redefines those 16 (a "light blue" background and a "bright green"
// text can end up the same shade), while indices 16-255 have fixed RGB values everywhere, so
// the contrast of each pair below is known and tested (WCAG ratio, at least 4.5:1, see the
// tests). The message view draws on the terminal's own background: the dark theme's colors are
// checked against black, the light theme's against white. The status bar sets both colors.
// Terminals without 256 colors: `theme = "mono"` (bold, dim and reverse only).

/// Colors names are drawn from (dark background); none is used for notices or warnings.
const DARK_NAMES: [Color; 10] = [
    Color::Indexed(75),  // (95, 175, 255) blue
    Color::Indexed(114), // (135, 215, 135) green
    Color::Indexed(80),  // (95, 215, 215) cyan
    Color::Indexed(177), // (215, 135, 255) violet
    Color::Indexed(221), // (255, 215, 95) yellow
    Color::Indexed(215), // (255, 175, 95) orange
    Color::Indexed(147), // (175, 175, 255) lavender
    Color::Indexed(122), // (135, 255, 215) aquamarine
    Color::Indexed(212), // (255, 135, 215) pink
    Color::Indexed(186), // (215, 215, 135) khaki
];
/// Colors names are drawn from (light background).
const LIGHT_NAMES: [Color; 8] = [
    Color::Indexed(19),  // (0, 0, 175) blue
    Color::Indexed(22),  // (0, 95, 0) green
    Color::Indexed(24),  // (0, 95, 135) teal
    Color::Indexed(90),  // (135, 0, 135) purple
    Color::Indexed(130), // (175, 95, 0) brown
    Color::Indexed(25),  // (0, 95, 175) mid blue
    Color::Indexed(29),  // (0, 135, 95) sea green
    Color::Indexed(125), // (175, 0, 95) crimson
];

/// One theme's colors beyond the names (foreground on the terminal's background unless
/// said otherwise).
struct Palette {
    notice: Color,
    warning: Color,
    whisper: Color,
    /// The status bar's text and background.
    bar_fg: Color,
    bar_bg: Color,
    /// Good and bad news on the status bar's background.
    bar_good: Color,
    bar_bad: Color,
    /// The "new below" marker: text and background.
    marker_fg: Color,
    marker_bg: Color,
}

const DARK: Palette = Palette {
    notice: Color::Indexed(246),    // (148, 148, 148) gray
    warning: Color::Indexed(203),   // (255, 95, 95) light red
    whisper: Color::Indexed(213),   // (255, 135, 255) light magenta
    bar_fg: Color::Indexed(255),    // (238, 238, 238) near white
    bar_bg: Color::Indexed(24),     // (0, 95, 135) deep blue
    bar_good: Color::Indexed(157),  // (175, 255, 175) pale green
    bar_bad: Color::Indexed(222),   // (255, 215, 135) pale yellow
    marker_fg: Color::Indexed(16),  // black
    marker_bg: Color::Indexed(221), // (255, 215, 95) yellow
};

const LIGHT: Palette = Palette {
    notice: Color::Indexed(242),    // (108, 108, 108) gray
    warning: Color::Indexed(160),   // (215, 0, 0) red
    whisper: Color::Indexed(127),   // (175, 0, 175) magenta
    bar_fg: Color::Indexed(16),     // black
    bar_bg: Color::Indexed(153),    // (175, 215, 255) light blue
    bar_good: Color::Indexed(22),   // (0, 95, 0) dark green
    bar_bad: Color::Indexed(88),    // (135, 0, 0) dark red
    marker_fg: Color::Indexed(231), // white
    marker_bg: Color::Indexed(94),  // (135, 95, 0) dark amber
};

/// The styles for one theme.
#[derive(Debug, Clone, Copy)]
pub struct Styles {
    theme: Theme,
}

impl Styles {
    /// Styles of `theme`.
    pub fn new(theme: Theme) -> Styles {
        Styles { theme }
    }

    fn palette(&self) -> &'static Palette {
        match self.theme {
            Theme::Light => &LIGHT,
            _ => &DARK,
        }
    }

    fn fg(&self, c: Color) -> Style {
        match self.theme {
            Theme::Mono => Style::default(),
            _ => Style::default().fg(c),
        }
    }

    /// A stable color for `name`: the same name always gets the same color (FNV-1a hash).
    pub fn name(&self, name: &str) -> Style {
        let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        let pick = |palette: &[Color]| {
            let i = usize::try_from(hash % palette.len() as u64).unwrap_or(0);
            palette.get(i).copied().unwrap_or(Color::Reset)
        };
        let color = match self.theme {
            Theme::Dark => pick(&DARK_NAMES),
            Theme::Light => pick(&LIGHT_NAMES),
            Theme::Mono => Color::Reset,
        };
        self.fg(color).add_modifier(Modifier::BOLD)
    }

    /// Time stamps.
    pub fn stamp(&self) -> Style {
        Style::default().add_modifier(Modifier::DIM)
    }

    /// The `-- ...` lines.
    pub fn notice(&self) -> Style {
        self.fg(self.palette().notice)
            .add_modifier(Modifier::ITALIC)
    }

    /// The `-- Monday, 7 December 2026 --` lines between days.
    pub fn day(&self) -> Style {
        self.fg(self.palette().notice).add_modifier(Modifier::BOLD)
    }

    /// The `!! ...` lines: key warnings, errors.
    pub fn warning(&self) -> Style {
        self.fg(self.palette().warning).add_modifier(Modifier::BOLD)
    }

    /// Whispers, both ways.
    pub fn whisper(&self) -> Style {
        self.fg(self.palette().whisper)
            .add_modifier(Modifier::ITALIC)
    }

    /// Marks our own messages.
    pub fn own(&self) -> Style {
        Style::default().add_modifier(Modifier::BOLD)
    }

    /// The status bar.
    pub fn status(&self) -> Style {
        match self.theme {
            Theme::Mono => Style::default().add_modifier(Modifier::REVERSED),
            _ => Style::default()
                .fg(self.palette().bar_fg)
                .bg(self.palette().bar_bg),
        }
    }

    /// Something good in the status bar (connected, verified).
    pub fn good(&self) -> Style {
        self.fg(self.palette().bar_good)
            .add_modifier(Modifier::BOLD)
    }

    /// Something bad in the status bar (disconnected, unverified).
    pub fn bad(&self) -> Style {
        self.fg(self.palette().bar_bad).add_modifier(Modifier::BOLD)
    }

    /// A line naming this user (or a highlight word), and the activity bar's `*`.
    pub fn highlight(&self) -> Style {
        match self.theme {
            Theme::Mono => Style::default().add_modifier(Modifier::REVERSED | Modifier::BOLD),
            Theme::Dark => Style::default()
                .fg(Color::Black)
                .bg(Color::Yellow)
                .add_modifier(Modifier::BOLD),
            Theme::Light => Style::default()
                .fg(Color::White)
                .bg(Color::Red)
                .add_modifier(Modifier::BOLD),
        }
    }

    /// An away user in the nick list.
    pub fn away(&self) -> Style {
        self.fg(Color::DarkGray).add_modifier(Modifier::DIM)
    }

    /// The "new messages below" marker.
    pub fn unread(&self) -> Style {
        match self.theme {
            Theme::Mono => Style::default().add_modifier(Modifier::REVERSED),
            _ => Style::default()
                .fg(self.palette().marker_fg)
                .bg(self.palette().marker_bg),
        }
    }
}

/// The RGB value of a color of the xterm 256-color table (None for the 16 ANSI colors and
/// the terminal's default, whose values the user's terminal theme decides).
#[cfg(test)]
pub fn xterm_rgb(c: Color) -> Option<(u8, u8, u8)> {
    let Color::Indexed(i) = c else { return None };
    let level = |v: u8| if v == 0 { 0 } else { 55 + 40 * v };
    match i {
        16..=231 => {
            let i = i - 16;
            Some((level(i / 36), level(i / 6 % 6), level(i % 6)))
        }
        232..=255 => {
            let g = 8 + 10 * (i - 232);
            Some((g, g, g))
        }
        _ => None,
    }
}

/// The WCAG 2 contrast ratio of two colors (1 to 21).
#[cfg(test)]
pub fn contrast(a: (u8, u8, u8), b: (u8, u8, u8)) -> f64 {
    let lum = |(r, g, b): (u8, u8, u8)| {
        let ch = |v: u8| {
            let v = f64::from(v) / 255.0;
            if v <= 0.039_28 {
                v / 12.92
            } else {
                ((v + 0.055) / 1.055).powf(2.4)
            }
        };
        0.2126 * ch(r) + 0.7152 * ch(g) + 0.0722 * ch(b)
    };
    let (x, y) = (lum(a), lum(b));
    (x.max(y) + 0.05) / (x.min(y) + 0.05)
}

/// The contrast every pair of the palette keeps (WCAG AA for normal text).
#[cfg(test)]
pub const MIN_CONTRAST: f64 = 4.5;

#[cfg(test)]
mod tests {
    use super::*;

    fn ratio(fg: Color, bg: Color) -> f64 {
        contrast(xterm_rgb(fg).unwrap(), xterm_rgb(bg).unwrap())
    }

    #[test]
    fn every_color_pair_is_readable() {
        let (black, white) = (Color::Indexed(16), Color::Indexed(231));
        for (palette, names, page) in [
            (&DARK, &DARK_NAMES[..], black),
            (&LIGHT, &LIGHT_NAMES[..], white),
        ] {
            for fg in names
                .iter()
                .chain([&palette.notice, &palette.warning, &palette.whisper])
            {
                let r = ratio(*fg, page);
                assert!(r >= MIN_CONTRAST, "{fg:?} on {page:?}: {r:.2}");
            }
            for fg in [palette.bar_fg, palette.bar_good, palette.bar_bad] {
                let r = ratio(fg, palette.bar_bg);
                assert!(r >= MIN_CONTRAST, "{fg:?} on {:?}: {r:.2}", palette.bar_bg);
            }
            let r = ratio(palette.marker_fg, palette.marker_bg);
            assert!(r >= MIN_CONTRAST, "marker: {r:.2}");
        }
        // The formula itself: black on white is 21:1, a color on itself 1:1.
        assert!((ratio(black, white) - 21.0).abs() < 0.01);
        assert!((ratio(white, white) - 1.0).abs() < 0.01);
        assert_eq!(xterm_rgb(Color::Indexed(153)), Some((175, 215, 255)));
        assert_eq!(xterm_rgb(Color::Indexed(244)), Some((128, 128, 128)));
        assert_eq!(xterm_rgb(Color::Blue), None);
    }

    #[test]
    fn a_name_keeps_its_color_and_names_differ() {
        let s = Styles::new(Theme::Dark);
        assert_eq!(s.name("alice"), s.name("alice"));
        let distinct: std::collections::HashSet<_> = ["alice", "bob", "carol", "dave", "erin"]
            .iter()
            .map(|n| format!("{:?}", s.name(n).fg))
            .collect();
        assert!(distinct.len() >= 3, "{distinct:?}");
        assert_eq!(Styles::new(Theme::Mono).name("alice").fg, None);
    }
}
