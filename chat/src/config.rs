//! The client's own config file, `$XDG_CONFIG_HOME/chat/config.toml`: the usual server and
//! user, so `chat` alone connects, and the look of the full-screen interface.
//!
//! Every key is optional; command-line flags win over the file. Unknown keys are errors, so
//! a typo is reported instead of silently ignored.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Deserialize;

/// Contents of config.toml.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    /// Default server, `HOST:PORT`, or the nodes of one deployment as one string
    /// `HOST:PORT,HOST:PORT` (as `--server` takes them; checked by [`crate::servers`]).
    pub server: Option<String>,
    /// Default user name.
    pub user: Option<String>,
    /// Device key file (instead of the per-server default in the data dir).
    pub key: Option<PathBuf>,
    /// Passwords typed at a terminal before giving up [default: [`DEFAULT_PASSWORD_TRIES`]].
    pub password_tries: Option<u32>,
    /// Longest wait between two rounds of reconnecting, in seconds
    /// [default: [`DEFAULT_RECONNECT_MAX_SECS`]].
    pub reconnect_max_secs: Option<u64>,
    /// Full-screen interface settings.
    #[serde(default)]
    pub ui: UiConfig,
    /// Local history (opt-in).
    #[serde(default)]
    pub history: HistoryConfig,
}

/// The `[history]` table: the recent conversation kept on this device, encrypted, so a
/// restart shows it again.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HistoryConfig {
    /// Keep it at all (off unless asked for).
    pub enabled: bool,
    /// Lines kept per conversation (room or whisper partner); older ones are dropped.
    pub lines: usize,
    /// Lines older than this many days are dropped (0: no age limit).
    pub days: u32,
    /// Lines shown at start, the newest of all conversations.
    pub show: usize,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        HistoryConfig {
            enabled: false,
            lines: 1000,
            days: 0,
            show: 100,
        }
    }
}

/// Passwords typed at a terminal before chat gives up, as ssh allows.
pub const DEFAULT_PASSWORD_TRIES: u32 = 3;
/// The longest wait between two rounds of reconnecting (see [`crate::servers`]).
pub const DEFAULT_RECONNECT_MAX_SECS: u64 = 30;
/// The bounds of `reconnect_max_secs`: at least one doubling of the first wait, at most an hour.
pub const RECONNECT_MAX_SECS: std::ops::RangeInclusive<u64> = 2..=3600;

/// The `[ui]` table.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UiConfig {
    /// Color theme.
    pub theme: Theme,
    /// strftime format of message time stamps.
    pub time_format: String,
    /// Pasting more lines than this at once is refused (each line would be one message).
    pub paste_max_lines: usize,
    /// Lines kept in the message view.
    pub scrollback: usize,
    /// Input lines kept for Up/Down.
    pub history: usize,
    /// Capture the mouse (the wheel scrolls; selecting text needs Shift). Alt-m toggles it.
    pub mouse: bool,
    /// Words that highlight a line like one's own name does (whole words, any case).
    pub highlight_words: Vec<String>,
    /// When to ring the terminal bell.
    pub bell: Bell,
    /// Highlights kept for `/mentions`.
    pub mentions_max: usize,
    /// Seconds between asks for the online list (who is away) for the nick list; 0: only
    /// at login.
    pub away_refresh_secs: u64,
    /// Most users `/ignore` keeps.
    pub ignore_max: usize,
}

impl Default for UiConfig {
    fn default() -> Self {
        UiConfig {
            theme: Theme::Dark,
            time_format: "%H:%M:%S".to_string(),
            paste_max_lines: 5,
            scrollback: 5000,
            history: 500,
            mouse: true,
            highlight_words: Vec::new(),
            bell: Bell::Highlight,
            mentions_max: 100,
            away_refresh_secs: 60,
            ignore_max: crate::ignore::DEFAULT_MAX,
        }
    }
}

/// When the full-screen interface rings the terminal bell (BEL; tmux and most terminals
/// turn it into an urgency hint or a flag on the window).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Bell {
    /// Never.
    Off,
    /// For a line that names the user or one of `highlight_words`.
    Highlight,
    /// For every message from someone else.
    All,
}

/// Most `[ui] highlight_words`.
pub const HIGHLIGHT_WORDS_MAX: usize = 32;
/// Longest highlight word, in characters.
pub const HIGHLIGHT_WORD_MAX_CHARS: usize = 64;

/// Color theme of the full-screen interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Theme {
    /// Colors for a dark background.
    Dark,
    /// Colors for a light background.
    Light,
    /// No colors: bold, dim and reverse only.
    Mono,
}

impl ClientConfig {
    /// The default location, if a config directory is known.
    pub fn default_path() -> Option<PathBuf> {
        dirs::config_dir().map(|d| d.join("chat").join("config.toml"))
    }

    /// Reads `path`; a missing file is an empty config unless `required`.
    pub fn load(path: &Path, required: bool) -> Result<ClientConfig> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
                return Ok(ClientConfig::default());
            }
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        Self::parse(&text).with_context(|| format!("in {}", path.display()))
    }

    /// Parses and checks the file's text.
    pub fn parse(text: &str) -> Result<ClientConfig> {
        let config: ClientConfig = toml::from_str(text)?;
        if config
            .password_tries
            .is_some_and(|n| !(1..=10).contains(&n))
        {
            bail!("password_tries must be between 1 and 10");
        }
        if config
            .reconnect_max_secs
            .is_some_and(|n| !RECONNECT_MAX_SECS.contains(&n))
        {
            bail!(
                "reconnect_max_secs must be between {} and {}",
                RECONNECT_MAX_SECS.start(),
                RECONNECT_MAX_SECS.end()
            );
        }
        let ui = &config.ui;
        if ui.time_format.is_empty() || ui.time_format.len() > 64 {
            bail!("ui.time_format must be 1 to 64 characters");
        }
        // chrono panics on a bad format only when displaying; check it here instead.
        let items = chrono::format::StrftimeItems::new(&ui.time_format);
        if items
            .into_iter()
            .any(|i| matches!(i, chrono::format::Item::Error))
        {
            bail!(
                "ui.time_format {:?} is not a valid strftime format",
                ui.time_format
            );
        }
        if ui.paste_max_lines == 0 || ui.paste_max_lines > 1000 {
            bail!("ui.paste_max_lines must be between 1 and 1000");
        }
        if ui.scrollback < 100 || ui.scrollback > 1_000_000 {
            bail!("ui.scrollback must be between 100 and 1000000");
        }
        if ui.history > 100_000 {
            bail!("ui.history must be at most 100000");
        }
        if ui.highlight_words.len() > HIGHLIGHT_WORDS_MAX {
            bail!("ui.highlight_words may list at most {HIGHLIGHT_WORDS_MAX} words");
        }
        for w in &ui.highlight_words {
            let n = w.chars().count();
            if n == 0 || n > HIGHLIGHT_WORD_MAX_CHARS || w.chars().any(char::is_whitespace) {
                bail!(
                    "ui.highlight_words: {w:?} must be one word of 1 to {HIGHLIGHT_WORD_MAX_CHARS} characters, without spaces"
                );
            }
        }
        if ui.mentions_max == 0 || ui.mentions_max > 10_000 {
            bail!("ui.mentions_max must be between 1 and 10000");
        }
        if ui.away_refresh_secs != 0 && !(10..=3600).contains(&ui.away_refresh_secs) {
            bail!("ui.away_refresh_secs must be 0 (only at login) or between 10 and 3600");
        }
        if ui.ignore_max == 0 || ui.ignore_max > 10_000 {
            bail!("ui.ignore_max must be between 1 and 10000");
        }
        let history = &config.history;
        if history.lines < 10 || history.lines > 100_000 {
            bail!("history.lines must be between 10 and 100000");
        }
        if history.days > 3650 {
            bail!("history.days must be at most 3650 (0: no age limit)");
        }
        if history.show > 10_000 {
            bail!("history.show must be at most 10000");
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_defaults() {
        assert_eq!(ClientConfig::parse("").unwrap(), ClientConfig::default());
    }

    #[test]
    fn full_file_parses() {
        let c = ClientConfig::parse(
            "server = \"chat.example.org:8443\"\nuser = \"alice\"\nkey = \"/k.pem\"\n\
             [ui]\ntheme = \"mono\"\ntime_format = \"%H:%M\"\npaste_max_lines = 1\n\
             mouse = false\n",
        )
        .unwrap();
        assert_eq!(c.server.as_deref(), Some("chat.example.org:8443"));
        assert_eq!(c.ui.theme, Theme::Mono);
        assert_eq!(c.ui.time_format, "%H:%M");
        assert_eq!(c.ui.paste_max_lines, 1);
        assert!(!c.ui.mouse);
        assert_eq!(c.ui.scrollback, 5000);
        assert!(!c.history.enabled, "history is opt-in");
        // The edges of ignore_max are accepted.
        for edge in [1, 10_000] {
            let c = ClientConfig::parse(&format!("[ui]\nignore_max = {edge}")).unwrap();
            assert_eq!(c.ui.ignore_max, edge);
        }
    }

    #[test]
    fn buffer_keys_parse_at_their_edges() {
        let c = ClientConfig::parse(
            "[ui]\nbell = \"all\"\nhighlight_words = [\"deploy\", \"Ops\"]\n\
             mentions_max = 10000\naway_refresh_secs = 0\n",
        )
        .unwrap();
        assert_eq!(c.ui.bell, Bell::All);
        assert_eq!(c.ui.highlight_words, ["deploy", "Ops"]);
        assert_eq!(c.ui.mentions_max, 10_000);
        assert_eq!(c.ui.away_refresh_secs, 0);
        for ok in [
            "[ui]\nmentions_max = 1\naway_refresh_secs = 10",
            "[ui]\naway_refresh_secs = 3600\nbell = \"off\"",
        ] {
            assert!(ClientConfig::parse(ok).is_ok(), "{ok}");
        }
        let words = |n: usize, len: usize| {
            let list: Vec<String> = (0..n).map(|_| format!("\"{}\"", "w".repeat(len))).collect();
            format!("[ui]\nhighlight_words = [{}]", list.join(", "))
        };
        assert!(ClientConfig::parse(&words(32, 64)).is_ok());
        assert!(ClientConfig::parse(&words(33, 1)).is_err());
        assert!(ClientConfig::parse(&words(1, 65)).is_err());
    }

    #[test]
    fn history_bounds_are_checked_at_the_edges() {
        let c = ClientConfig::parse(
            "[history]\nenabled = true\nlines = 10\ndays = 3650\nshow = 10000\n",
        )
        .unwrap();
        assert!(c.history.enabled);
        assert_eq!(
            (c.history.lines, c.history.days, c.history.show),
            (10, 3650, 10000)
        );
        let c = ClientConfig::parse("[history]\nlines = 100000\nshow = 0\n").unwrap();
        assert_eq!((c.history.lines, c.history.show), (100_000, 0));
        for bad in [
            "[history]\nlines = 9",
            "[history]\nlines = 100001",
            "[history]\ndays = 3651",
            "[history]\nshow = 10001",
            "[history]\nenable = true",
        ] {
            assert!(ClientConfig::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn password_tries_at_its_edges() {
        for ok in [1, 10] {
            let c = ClientConfig::parse(&format!("password_tries = {ok}")).unwrap();
            assert_eq!(c.password_tries, Some(ok));
        }
        assert_eq!(ClientConfig::parse("").unwrap().password_tries, None);
    }

    #[test]
    fn reconnect_max_secs_at_its_edges() {
        for ok in [2, 3600] {
            let c = ClientConfig::parse(&format!("reconnect_max_secs = {ok}")).unwrap();
            assert_eq!(c.reconnect_max_secs, Some(ok));
        }
        for bad in [1, 3601] {
            let e = ClientConfig::parse(&format!("reconnect_max_secs = {bad}"))
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("reconnect_max_secs must be between 2 and 3600"),
                "{e}"
            );
        }
    }

    #[test]
    fn mistakes_are_reported() {
        for bad in [
            "sever = \"x\"",
            "[ui]\ntheme = \"pink\"",
            "[ui]\ntime_format = \"%Q\"",
            "[ui]\ntime_format = \"\"",
            "[ui]\npaste_max_lines = 0",
            "[ui]\npaste_max_lines = 1001",
            "[ui]\nscrollback = 99",
            "[ui]\nignore_max = 0",
            "[ui]\nignore_max = 10001",
            "[ui]\ncolour = 1",
            "[ui]\nmouse = \"off\"",
            "[ui]\nbell = \"sometimes\"",
            "[ui]\nhighlight_words = [\"\"]",
            "[ui]\nhighlight_words = [\"two words\"]",
            "[ui]\nmentions_max = 0",
            "[ui]\nmentions_max = 10001",
            "[ui]\naway_refresh_secs = 9",
            "[ui]\naway_refresh_secs = 3601",
            "password_tries = 0",
            "password_tries = 11",
        ] {
            assert!(ClientConfig::parse(bad).is_err(), "{bad}");
        }
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("none.toml");
        assert_eq!(
            ClientConfig::load(&missing, false).unwrap(),
            ClientConfig::default()
        );
        assert!(ClientConfig::load(&missing, true).is_err());
    }
}
