//! A section-5 page made from an annotated TOML file (comments above each key, every key at
//! its default), so the page says exactly what the shipped file says.
//!
//! The comments before the first table are the DESCRIPTION; each `[table]` is a section;
//! each `key = value` line is a term described by the comment lines above it. Comment lines
//! that are code (indented, or a commented-out `key = value`) keep their own line.

use super::roffs::{Item, Page, Section};

/// The page `name(section)` for the annotated TOML `text`.
pub fn page(name: &str, section: &str, summary: &str, text: &str) -> Page {
    let mut sections = vec![Section::new("DESCRIPTION")];
    let mut comment = Comment::default();
    for line in text.lines() {
        let line = line.trim_end();
        if let Some(c) = line.strip_prefix('#') {
            comment.add(c);
        } else if line.starts_with('[') {
            flush(&mut sections, &mut comment);
            sections.push(Section::new(line));
        } else if line.trim().is_empty() {
            // A blank line ends a comment that belongs to nothing below it.
            flush(&mut sections, &mut comment);
        } else if let Some(last) = sections.last_mut() {
            last.items
                .push(Item::Term(line.trim().to_string(), comment.take()));
        }
    }
    flush(&mut sections, &mut comment);
    sections.retain(|s| !s.items.is_empty());
    Page {
        name: name.to_string(),
        section: section.to_string(),
        summary: summary.to_string(),
        sections,
    }
}

/// Left-over comment text becomes a paragraph of the current section.
fn flush(sections: &mut [Section], comment: &mut Comment) {
    let text = comment.take();
    if let (false, Some(last)) = (text.is_empty(), sections.last_mut()) {
        last.items.push(Item::Para(text));
    }
}

/// Comment lines gathered into text: prose joined by spaces, code lines on their own
/// (`\n` is a line break when rendered).
#[derive(Default)]
struct Comment {
    text: String,
}

impl Comment {
    fn add(&mut self, line: &str) {
        let body = line.strip_prefix(' ').unwrap_or(line);
        let code = body.starts_with("  ") || is_key_line(body);
        let body = body.trim();
        if body.is_empty() {
            return;
        }
        if !self.text.is_empty() && !self.text.ends_with('\n') {
            self.text.push(if code { '\n' } else { ' ' });
        }
        self.text.push_str(body);
        if code {
            self.text.push('\n');
        }
    }

    fn take(&mut self) -> String {
        std::mem::take(&mut self.text).trim_end().to_string()
    }
}

/// `cert = "/etc/..."`: a key line, commented out.
fn is_key_line(s: &str) -> bool {
    let Some((key, _)) = s.split_once(" = ") else {
        return false;
    };
    !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '.')
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "\
# The file.
# More about it,
# on two lines.
#     tool --check FILE

[server]
# Where to listen.
listen = \"0.0.0.0:1\"
# Unset by default.
# cert = \"/x\"
# Both or neither.

[limits]
max = 3
";

    #[test]
    fn tables_are_sections_and_keys_are_terms() {
        let page = page("tool.toml", "5", "tool configuration", FILE);
        let titles: Vec<&str> = page.sections.iter().map(|s| s.title.as_str()).collect();
        assert_eq!(titles, ["DESCRIPTION", "[server]", "[limits]"]);
        assert_eq!(
            page.sections[0].items,
            [Item::Para(
                "The file. More about it, on two lines.\ntool --check FILE".into()
            )]
        );
        assert_eq!(
            page.sections[1].items,
            [
                Item::Term("listen = \"0.0.0.0:1\"".into(), "Where to listen.".into()),
                Item::Para("Unset by default.\ncert = \"/x\"\nBoth or neither.".into()),
            ]
        );
        assert_eq!(
            page.sections[2].items,
            [Item::Term("max = 3".into(), String::new())]
        );
        let roff = page.render();
        assert!(roff.starts_with(".ie"), "{roff}");
        assert!(roff.contains(".TH TOOL.TOML 5"), "{roff}");
        assert!(roff.contains(".SH [server]"), "{roff}");
    }
}
