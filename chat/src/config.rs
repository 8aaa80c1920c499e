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
    /// Default server, `HOST:PORT`.
    pub server: Option<String>,
    /// Default user name.
    pub user: Option<String>,
    /// Device key file (instead of the per-server default in the data dir).
    pub key: Option<PathBuf>,
    /// Passwords typed at a terminal before giving up [default: [`DEFAULT_PASSWORD_TRIES`]].
    pub password_tries: Option<u32>,
    /// Full-screen interface settings.
    #[serde(default)]
    pub ui: UiConfig,
}

/// Passwords typed at a terminal before chat gives up, as ssh allows.
pub const DEFAULT_PASSWORD_TRIES: u32 = 3;

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
}

impl Default for UiConfig {
    fn default() -> Self {
        UiConfig {
            theme: Theme::Dark,
            time_format: "%H:%M:%S".to_string(),
            paste_max_lines: 5,
            scrollback: 5000,
            history: 500,
        }
    }
}

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
             [ui]\ntheme = \"mono\"\ntime_format = \"%H:%M\"\npaste_max_lines = 1\n",
        )
        .unwrap();
        assert_eq!(c.server.as_deref(), Some("chat.example.org:8443"));
        assert_eq!(c.ui.theme, Theme::Mono);
        assert_eq!(c.ui.time_format, "%H:%M");
        assert_eq!(c.ui.paste_max_lines, 1);
        assert_eq!(c.ui.scrollback, 5000);
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
    fn mistakes_are_reported() {
        for bad in [
            "sever = \"x\"",
            "[ui]\ntheme = \"pink\"",
            "[ui]\ntime_format = \"%Q\"",
            "[ui]\ntime_format = \"\"",
            "[ui]\npaste_max_lines = 0",
            "[ui]\npaste_max_lines = 1001",
            "[ui]\nscrollback = 99",
            "[ui]\ncolour = 1",
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
