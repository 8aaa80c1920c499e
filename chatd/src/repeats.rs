//! Repeated log lines summarised with a count: the first `repeat_burst` lines of one kind in a
//! `repeat_window_secs` window are written, the rest only counted, and when the window is over
//! one line says `<message> … and 2,981 more like this in the last 10 s`.
//!
//! A tracing layer ([`Summarise`]) that vetoes events in `event_enabled`, so every INFO and
//! WARN call site is covered in one place and the vetoed line reaches no output (stderr or
//! journald). A kind is a call site (`file:line`), never a field's value: an attacker who
//! varies the login name, or anything else they send, is still one kind. A vetoed line costs a
//! lock and a hash of the call site's address; nothing is allocated or formatted. Lines only an
//! administrator causes (the control socket's requests, reloads, start-up in main) and the
//! audit trail (logins and session ends, target [`AUDIT`]) are always written, and so are
//! ERROR and the debug levels (asked for on purpose).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tracing::callsite::Identifier;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

/// Modules whose lines are never summarised: what they log, an administrator caused.
const EXEMPT: [&str; 2] = ["chatd::control", "chatd::reload"];

/// The target of lines that are the audit trail and so never summarised: a session that
/// logged in and its end. Only someone who knows a password causes them, and `journalctl
/// USER=bob` must show each one.
pub const AUDIT: &str = "chatd::audit";

/// The one summariser of the process (logging is process-wide too).
pub static REPEATS: LazyLock<Repeats> = LazyLock::new(|| Repeats::new(10, 5));

/// The layer to put in chatd's subscriber, before its outputs.
pub fn layer() -> Summarise {
    Summarise(&REPEATS)
}

/// Counts lines per call site and says which are written.
pub struct Repeats {
    /// Window length in milliseconds; 0 writes every line.
    window_ms: AtomicU64,
    burst: AtomicU32,
    kinds: Mutex<HashMap<Identifier, Kind>>,
}

/// One call site's window.
struct Kind {
    /// Never summarised (see [`EXEMPT`]).
    exempt: bool,
    level: Level,
    /// The message of the first line written from this call site, for its summaries.
    message: Option<String>,
    window: Window,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Window {
    start: Instant,
    written: u32,
    counted: u64,
}

impl Window {
    fn new(start: Instant) -> Window {
        Window {
            start,
            written: 0,
            counted: 0,
        }
    }

    /// Whether a line at `now` is written. A window that is over and counted nothing starts
    /// again here; one that counted lines goes on counting until [`Window::close`] reports it,
    /// so its summary comes before the next window's lines.
    fn admit(&mut self, now: Instant, window: Duration, burst: u32) -> bool {
        if self.counted == 0 && now.saturating_duration_since(self.start) >= window {
            *self = Window::new(now);
        }
        if self.written < burst {
            self.written += 1;
            true
        } else {
            self.counted += 1;
            false
        }
    }

    /// The lines counted and the seconds they span, once the window is over (or `force`d,
    /// at exit); the next window starts at `now`.
    fn close(&mut self, now: Instant, window: Duration, force: bool) -> Option<(u64, u64)> {
        let span = now.saturating_duration_since(self.start);
        if self.counted == 0 || (span < window && !force) {
            return None;
        }
        let counted = self.counted;
        *self = Window::new(now);
        Some((counted, span.as_secs().max(1)))
    }
}

/// A window's lines that were counted, not written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// The level of the lines (and of the summary).
    pub level: Level,
    /// The message of the kind's first line.
    pub message: String,
    /// Lines counted.
    pub more: u64,
    /// Seconds the window spanned.
    pub secs: u64,
}

impl Summary {
    /// The summary's text: `login failed … and 2,981 more like this in the last 10 s`.
    pub fn text(&self) -> String {
        format!(
            "{} … and {} more like this in the last {} s",
            self.message,
            thousands(self.more),
            self.secs
        )
    }

    /// Logs the summary at the lines' own level (this module is exempt, so it is written).
    pub fn log(&self) {
        let text = self.text();
        let (kind, more, secs) = (self.message.as_str(), self.more, self.secs);
        match self.level {
            Level::WARN => tracing::warn!(kind, more, secs, "{text}"),
            _ => tracing::info!(kind, more, secs, "{text}"),
        }
    }
}

/// `2981` as `2,981`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

impl Repeats {
    /// A summariser writing `burst` lines of a kind per `window_secs` (0: all lines).
    pub fn new(window_secs: u64, burst: u32) -> Repeats {
        let repeats = Repeats {
            window_ms: AtomicU64::new(0),
            burst: AtomicU32::new(0),
            kinds: Mutex::new(HashMap::new()),
        };
        repeats.configure(window_secs, burst);
        repeats
    }

    /// Sets the window and burst (at start and at each reload); windows under way keep going.
    pub fn configure(&self, window_secs: u64, burst: u32) {
        self.window_ms
            .store(window_secs.saturating_mul(1000), Ordering::Relaxed);
        self.burst.store(burst, Ordering::Relaxed);
    }

    fn window(&self) -> Duration {
        Duration::from_millis(self.window_ms.load(Ordering::Relaxed))
    }

    /// Whether a line from `meta` at `now` is written; `message` is asked for the line's text
    /// only when the call site has none yet.
    pub fn admit(
        &self,
        meta: &'static Metadata<'static>,
        now: Instant,
        message: impl FnOnce() -> Option<String>,
    ) -> bool {
        let window = self.window();
        if window.is_zero() {
            return true;
        }
        let burst = self.burst.load(Ordering::Relaxed);
        let mut kinds = self.kinds.lock().unwrap_or_else(PoisonError::into_inner);
        let kind = kinds.entry(meta.callsite()).or_insert_with(|| Kind {
            exempt: exempt(meta),
            level: *meta.level(),
            message: None,
            window: Window::new(now),
        });
        if kind.exempt {
            return true;
        }
        let written = kind.window.admit(now, window, burst);
        if written && kind.message.is_none() {
            kind.message = message();
        }
        written
    }

    /// The summaries of windows that are over at `now` (all that counted anything if `force`,
    /// at exit). Call [`Summary::log`] on each, with no lock held.
    pub fn due(&self, now: Instant, force: bool) -> Vec<Summary> {
        let window = self.window();
        let mut kinds = self.kinds.lock().unwrap_or_else(PoisonError::into_inner);
        kinds
            .values_mut()
            .filter_map(|kind| {
                let (more, secs) = kind.window.close(now, window, force)?;
                Some(Summary {
                    level: kind.level,
                    message: kind.message.clone().unwrap_or_default(),
                    more,
                    secs,
                })
            })
            .collect()
    }

    /// Logs the summaries due at `now`.
    pub fn flush(&self, now: Instant, force: bool) {
        for summary in self.due(now, force) {
            summary.log();
        }
    }
}

/// INFO and WARN lines are summarised, except those of the [`EXEMPT`] modules, of the binary
/// itself (start-up and signals) and the summaries.
fn exempt(meta: &Metadata<'_>) -> bool {
    let level = *meta.level();
    if level != Level::INFO && level != Level::WARN {
        return true;
    }
    if meta.target() == AUDIT {
        return true;
    }
    match meta.module_path() {
        Some("chatd") | Some("chatd::repeats") | None => true,
        Some(path) => EXEMPT.iter().any(|m| {
            path.strip_prefix(m)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
        }),
    }
}

/// Takes an event's `message` field as text.
struct MessageText(Option<String>);

impl Visit for MessageText {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0 = Some(value.to_string());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = Some(format!("{value:?}"));
        }
    }
}

/// The layer: vetoes the lines [`Repeats`] counts instead of writing.
pub struct Summarise(&'static Repeats);

impl<S: Subscriber> Layer<S> for Summarise {
    fn event_enabled(&self, event: &Event<'_>, _ctx: Context<'_, S>) -> bool {
        self.0.admit(event.metadata(), Instant::now(), || {
            let mut text = MessageText(None);
            event.record(&mut text);
            text.0
        })
    }
}

/// Logs the summaries that are due, every second, until the process ends.
pub async fn run_flusher() {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        REPEATS.flush(Instant::now(), false);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    const W: Duration = Duration::from_secs(10);

    #[test]
    fn a_window_writes_its_burst_then_counts() {
        let t0 = Instant::now();
        let mut w = Window::new(t0);
        let written: Vec<bool> = (0..8).map(|_| w.admit(t0, W, 5)).collect();
        assert_eq!(written, [true, true, true, true, true, false, false, false]);
        // Not over yet: nothing to report.
        assert_eq!(w.close(t0 + Duration::from_secs(9), W, false), None);
        // Over, but no flush yet: still counted in the same window.
        assert!(!w.admit(t0 + Duration::from_secs(10), W, 5));
        assert_eq!(
            w.close(t0 + Duration::from_secs(10), W, false),
            Some((4, 10))
        );
        // The next window starts with a fresh burst.
        assert!(w.admit(t0 + Duration::from_secs(11), W, 5));
        assert_eq!(w.close(t0 + Duration::from_secs(30), W, false), None);
    }

    #[test]
    fn a_quiet_window_restarts_at_the_next_line() {
        let t0 = Instant::now();
        let mut w = Window::new(t0);
        for _ in 0..5 {
            assert!(w.admit(t0, W, 5));
        }
        // Nothing was counted, so the next line after the window is the first of a new one.
        let later = t0 + Duration::from_secs(10);
        assert!(w.admit(later, W, 5));
        assert_eq!(
            w,
            Window {
                start: later,
                written: 1,
                counted: 0
            }
        );
    }

    #[test]
    fn force_reports_a_window_early_and_burst_zero_counts_everything() {
        let t0 = Instant::now();
        let mut w = Window::new(t0);
        assert!(!w.admit(t0, W, 0));
        assert_eq!(w.close(t0, W, false), None);
        assert_eq!(w.close(t0, W, true), Some((1, 1)));
    }

    #[test]
    fn summary_text_has_the_count_with_separators() {
        let s = Summary {
            level: Level::WARN,
            message: "login failed".into(),
            more: 2981,
            secs: 10,
        };
        assert_eq!(
            s.text(),
            "login failed … and 2,981 more like this in the last 10 s"
        );
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }

    /// Each event's message, as written.
    #[derive(Clone, Default)]
    struct Written(Arc<Mutex<Vec<String>>>);

    impl<S: Subscriber> Layer<S> for Written {
        fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
            let mut text = MessageText(None);
            event.record(&mut text);
            self.0.lock().unwrap().push(text.0.unwrap_or_default());
        }
    }

    /// Runs `f` under a subscriber with `repeats` before a [`Written`]; then logs what is due
    /// (all of it) and returns every message written.
    fn run(repeats: &'static Repeats, f: impl FnOnce()) -> Vec<String> {
        let written = Written::default();
        let subscriber = tracing_subscriber::registry()
            .with(Summarise(repeats))
            .with(written.clone());
        tracing::subscriber::with_default(subscriber, f);
        let mut summaries = repeats.due(Instant::now(), true);
        summaries.sort_by(|a, b| a.message.cmp(&b.message));
        tracing::subscriber::with_default(
            tracing_subscriber::registry().with(written.clone()),
            || summaries.iter().for_each(Summary::log),
        );
        written.0.lock().unwrap().clone()
    }

    #[test]
    fn one_kind_per_call_site_whatever_its_values() {
        let repeats: &'static Repeats = Box::leak(Box::new(Repeats::new(10, 2)));
        let lines = run(repeats, || {
            for i in 0..100 {
                // Varying values (as an attacker's login names would) are one kind.
                tracing::warn!(user = ?format!("name{i}"), "login failed");
            }
            for _ in 0..3 {
                tracing::info!("another kind");
            }
            for _ in 0..3 {
                tracing::error!("errors are always written");
            }
        });
        assert_eq!(
            lines,
            [
                "login failed",
                "login failed",
                "another kind",
                "another kind",
                "errors are always written",
                "errors are always written",
                "errors are always written",
                "another kind … and 1 more like this in the last 1 s",
                "login failed … and 98 more like this in the last 1 s",
            ]
        );
    }

    #[test]
    fn window_zero_writes_everything() {
        let repeats: &'static Repeats = Box::leak(Box::new(Repeats::new(0, 1)));
        let lines = run(repeats, || {
            for _ in 0..10 {
                tracing::warn!("again");
            }
        });
        assert_eq!(lines.len(), 10, "{lines:?}");
    }
}
