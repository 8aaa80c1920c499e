//! The terminal itself: raw mode, the alternate screen, bracketed paste and mouse capture,
//! restored on every way out (return, error or panic); and the bell.

use std::io::Stdout;

use anyhow::{Context, Result};
use crossterm::event::{
    DisableBracketedPaste, DisableMouseCapture, EnableBracketedPaste, EnableMouseCapture,
};
use crossterm::execute;
use crossterm::terminal::{
    EnterAlternateScreen, LeaveAlternateScreen, disable_raw_mode, enable_raw_mode,
};
use ratatui::Terminal;
use ratatui::backend::CrosstermBackend;

/// Puts the terminal back however the interface ends (return, error or panic).
pub(super) struct TerminalGuard;

impl TerminalGuard {
    /// Raw mode, the alternate screen, bracketed paste, and mouse capture if `mouse`.
    pub(super) fn enter(mouse: bool) -> Result<TerminalGuard> {
        enable_raw_mode().context("cannot switch the terminal to raw mode")?;
        let guard = TerminalGuard;
        execute!(
            std::io::stdout(),
            EnterAlternateScreen,
            EnableBracketedPaste
        )
        .context("cannot set up the terminal")?;
        set_mouse(mouse)?;
        Ok(guard)
    }
}

/// Turns the terminal's mouse reporting on (the wheel scrolls; Shift selects) or off (the
/// terminal's own selection works).
pub(super) fn set_mouse(on: bool) -> Result<()> {
    if on {
        execute!(std::io::stdout(), EnableMouseCapture)
    } else {
        execute!(std::io::stdout(), DisableMouseCapture)
    }
    .context("cannot set the terminal's mouse mode")
}

/// Restores cooked mode and the main screen; safe to call twice.
pub(super) fn restore_terminal() {
    let _ = execute!(
        std::io::stdout(),
        DisableMouseCapture,
        DisableBracketedPaste,
        LeaveAlternateScreen,
        crossterm::cursor::Show
    );
    let _ = disable_raw_mode();
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        restore_terminal();
    }
}

/// Rings the terminal bell (BEL): terminals flash or beep, and tmux and most window
/// managers turn it into an urgency hint on the window.
pub(super) fn ring(terminal: &mut Terminal<CrosstermBackend<Stdout>>) -> Result<()> {
    use std::io::Write;
    let out = terminal.backend_mut();
    out.write_all(b"\x07")
        .and_then(|()| out.flush())
        .context("cannot ring the terminal bell")
}
