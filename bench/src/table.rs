//! The text form of the figures: one row per figure, its label in a column of its own.

use std::fmt::{Display, Write};

/// Width of the label column, a space included: the longest label (`RSS per connection`) and
/// one space.
const LABEL_WIDTH: usize = 19;

/// Rows of figures for people, written one after another.
#[derive(Default)]
pub struct Table(String);

impl Table {
    /// A row: `label`, padded to the value column, then `value`.
    pub fn row(&mut self, label: &str, value: impl Display) {
        let _ = writeln!(self.0, "{label:<LABEL_WIDTH$}{value}");
    }

    /// A line outside the columns: a heading, or a detail under the row before.
    pub fn line(&mut self, text: impl Display) {
        let _ = writeln!(self.0, "{text}");
    }

    /// The rows written so far.
    pub fn finish(self) -> String {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_make_a_column() {
        let mut t = Table::default();
        t.line("== heading");
        t.row("clients", 500);
        t.row("RSS per connection", "1.0 KiB");
        t.line("  a detail");
        assert_eq!(
            t.finish(),
            "== heading\n\
             clients            500\n\
             RSS per connection 1.0 KiB\n  \
             a detail\n"
        );
    }
}
