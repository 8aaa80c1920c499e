//! Reconnecting, as the full-screen interface reports it: each new reason once (a multi-line
//! error as its lines), then only a count of tries in the status bar.

use std::fmt;

/// What the status bar shows while reconnecting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retry {
    /// Tries that failed since the connection was lost.
    pub tries: u32,
    /// Seconds until the next try.
    pub secs: u64,
    /// The last failure in a few words (empty before the first try).
    pub reason: String,
    /// The node to try next, when there are several.
    pub node: Option<String>,
}

impl fmt::Display for Retry {
    /// `reconnecting in 1 s`, then `reconnecting (try 4, next in 8 s): connection refused`;
    /// with several nodes, `reconnecting to b:8443 (try 4, ...`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("reconnecting")?;
        if let Some(node) = &self.node {
            write!(f, " to {node}")?;
        }
        if self.tries == 0 {
            return write!(f, " in {} s", self.secs);
        }
        write!(f, " (try {}, next in {} s)", self.tries + 1, self.secs)?;
        if !self.reason.is_empty() {
            write!(f, ": {}", self.reason)?;
        }
        Ok(())
    }
}

/// The tries since the connection was lost, and the last reason said.
#[derive(Debug, Default)]
pub struct Retries {
    tries: u32,
    said: Option<String>,
    short: String,
}

impl Retries {
    /// Connected again: the next loss starts over.
    pub fn reset(&mut self) {
        *self = Retries::default();
    }

    /// A try failed with `error`: the lines to show when its reason is new, else none.
    pub fn failed(&mut self, error: &anyhow::Error) -> Vec<String> {
        self.tries = self.tries.saturating_add(1);
        self.short = short_reason(error);
        let full = format!("{error:#}");
        if self.said.as_deref() == Some(full.as_str()) {
            return Vec::new();
        }
        let mut lines: Vec<String> = full.lines().map(str::to_string).collect();
        if let Some(first) = lines.first_mut() {
            *first = format!("reconnecting failed: {first}");
        }
        self.said = Some(full);
        lines
    }

    /// The status with `secs` to go, to `node` when there are several.
    pub fn status(&self, secs: u64, node: Option<String>) -> Retry {
        Retry {
            tries: self.tries,
            secs,
            reason: self.short.clone(),
            node,
        }
    }
}

/// The innermost cause's first line, without the `(os error N)` tail: `connection refused`.
pub fn short_reason(error: &anyhow::Error) -> String {
    let root = error.root_cause().to_string();
    let first = root.lines().next().unwrap_or_default().trim();
    let first = match first.rfind(" (os error ") {
        Some(at) if first.ends_with(')') => &first[..at],
        _ => first,
    };
    // "Connection refused" reads as the middle of a sentence; "TLS ..." keeps its capitals.
    let mut chars = first.chars();
    match (chars.next(), chars.next()) {
        (Some(a), Some(b)) if a.is_uppercase() && b.is_lowercase() => {
            a.to_lowercase().chain(first.chars().skip(1)).collect()
        }
        _ => first.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    fn refused() -> anyhow::Error {
        let io = std::io::Error::from_raw_os_error(111);
        Err::<(), _>(io)
            .context("cannot connect to 127.0.0.1:1")
            .unwrap_err()
    }

    #[test]
    fn a_reason_is_said_once_then_counted() {
        let mut r = Retries::default();
        assert_eq!(r.status(1, None).to_string(), "reconnecting in 1 s");
        let lines = r.failed(&refused());
        assert_eq!(lines.len(), 1);
        assert!(
            lines[0].starts_with("reconnecting failed: cannot connect to 127.0.0.1:1: "),
            "{lines:?}"
        );
        assert!(r.failed(&refused()).is_empty());
        assert!(r.failed(&refused()).is_empty());
        assert_eq!(
            r.status(8, None).to_string(),
            "reconnecting (try 4, next in 8 s): connection refused"
        );
        // A new reason, multi-line: said once, as lines.
        let changed = anyhow::anyhow!("WARNING: THE CERTIFICATE OF h:1 HAS CHANGED!\n  pinned x");
        let lines = r.failed(&changed);
        assert_eq!(
            lines,
            [
                "reconnecting failed: WARNING: THE CERTIFICATE OF h:1 HAS CHANGED!",
                "  pinned x"
            ]
        );
        assert!(r.failed(&changed).is_empty());
        assert_eq!(
            r.status(30, None).to_string(),
            "reconnecting (try 6, next in 30 s): WARNING: THE CERTIFICATE OF h:1 HAS CHANGED!"
        );
        // The old reason again is new again.
        assert_eq!(r.failed(&refused()).len(), 1);
        assert_eq!(
            r.status(2, Some("b:8443".into())).to_string(),
            "reconnecting to b:8443 (try 7, next in 2 s): connection refused"
        );
        r.reset();
        assert_eq!(r.status(1, None).to_string(), "reconnecting in 1 s");
        assert_eq!(
            r.status(1, Some("b:8443".into())).to_string(),
            "reconnecting to b:8443 in 1 s"
        );
    }
}
