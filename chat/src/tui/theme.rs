//! Styles of the full-screen interface: one per kind of line, and a stable color per name.

use ratatui::style::{Color, Modifier, Style};

use crate::config::Theme;

/// Colors names are drawn from; none of them is used for notices or warnings.
const DARK_NAMES: [Color; 10] = [
    Color::LightBlue,
    Color::LightGreen,
    Color::LightCyan,
    Color::LightMagenta,
    Color::Yellow,
    Color::Rgb(255, 165, 80),
    Color::Rgb(150, 170, 255),
    Color::Rgb(120, 220, 170),
    Color::Rgb(230, 140, 220),
    Color::Rgb(200, 200, 120),
];
const LIGHT_NAMES: [Color; 8] = [
    Color::Blue,
    Color::Green,
    Color::Cyan,
    Color::Magenta,
    Color::Rgb(160, 90, 0),
    Color::Rgb(40, 60, 170),
    Color::Rgb(0, 120, 90),
    Color::Rgb(140, 30, 130),
];

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
        self.fg(Color::DarkGray).add_modifier(Modifier::ITALIC)
    }

    /// The `!! ...` lines: key warnings, errors.
    pub fn warning(&self) -> Style {
        self.fg(Color::LightRed).add_modifier(Modifier::BOLD)
    }

    /// Whispers, both ways.
    pub fn whisper(&self) -> Style {
        self.fg(match self.theme {
            Theme::Light => Color::Magenta,
            _ => Color::LightMagenta,
        })
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
            Theme::Dark => Style::default().fg(Color::White).bg(Color::Blue),
            Theme::Light => Style::default().fg(Color::Black).bg(Color::LightBlue),
        }
    }

    /// Something good in the status bar (connected, verified).
    pub fn good(&self) -> Style {
        self.fg(Color::LightGreen).add_modifier(Modifier::BOLD)
    }

    /// Something bad in the status bar (disconnected, unverified).
    pub fn bad(&self) -> Style {
        self.fg(Color::Yellow).add_modifier(Modifier::BOLD)
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
        self.fg(Color::Yellow).add_modifier(Modifier::REVERSED)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
