//! Roff for the parts of a page clap does not write: a synopsis that shows what each option
//! takes, the sections a binary adds, and whole pages of our own.

use clap::{ArgAction, Command};
use roff::{Inline, Roff, bold, italic, line_break, roman};

/// One entry of a section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// A paragraph.
    Para(String),
    /// A term in bold with its description indented below (roff `.TP`).
    Term(String, String),
}

/// A section (`.SH`) of a page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    /// Its heading, in capitals by convention (`FILES`).
    pub title: String,
    /// Its entries in order.
    pub items: Vec<Item>,
}

impl Section {
    /// An empty section headed `title`.
    pub fn new(title: impl Into<String>) -> Section {
        Section {
            title: title.into(),
            items: Vec::new(),
        }
    }

    /// Adds a paragraph.
    pub fn para(mut self, text: impl Into<String>) -> Section {
        self.items.push(Item::Para(text.into()));
        self
    }

    /// Adds a term and its description.
    pub fn term(mut self, term: impl Into<String>, text: impl Into<String>) -> Section {
        self.items.push(Item::Term(term.into(), text.into()));
        self
    }

    fn render_into(&self, roff: &mut Roff) {
        roff.control("SH", [self.title.as_str()]);
        for item in &self.items {
            match item {
                Item::Para(text) => {
                    roff.control("PP", []);
                    roff.text(lines(text));
                }
                Item::Term(term, text) => {
                    roff.control("TP", []);
                    roff.text([bold(term.as_str())]);
                    if !text.is_empty() {
                        roff.text(lines(text));
                    }
                }
            }
        }
    }
}

/// `text` with each `\n` a line break.
fn lines(text: &str) -> Vec<Inline> {
    let mut out = Vec::new();
    for (i, line) in text.split('\n').enumerate() {
        if i > 0 {
            out.push(line_break());
        }
        out.push(roman(line));
    }
    out
}

/// A page that is not a command's (e.g. a file format in section 5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// Its name (`chatd.toml`).
    pub name: String,
    /// Its manual section (`5`).
    pub section: String,
    /// The NAME line's description.
    pub summary: String,
    /// Its sections after NAME.
    pub sections: Vec<Section>,
}

impl Page {
    /// The page as roff.
    pub fn render(&self) -> String {
        let mut roff = Roff::new();
        roff.control(
            "TH",
            [self.name.to_uppercase().as_str(), self.section.as_str()],
        );
        roff.control("SH", ["NAME"]);
        roff.text([roman(format!("{} - {}", self.name, self.summary))]);
        for section in &self.sections {
            section.render_into(&mut roff);
        }
        roff.render()
    }
}

/// A command's page: clap_mangen's title, NAME, DESCRIPTION, OPTIONS and SUBCOMMANDS, our
/// SYNOPSIS, then `extra`. `command` must be built (`Command::build`).
pub fn command_page(command: &Command, section: &str, source: &str, extra: &[Section]) -> String {
    let man = clap_mangen::Man::new(command.clone())
        .section(section)
        .source(source);
    let mut roff = Roff::new();
    let mut out = String::new();
    // Writing into a Vec cannot fail; an error here would be clap_mangen's bug, and the page
    // would then come out without that part rather than not at all.
    let mut part = |render: &dyn Fn(&mut Vec<u8>) -> std::io::Result<()>| {
        let mut buf = Vec::new();
        if render(&mut buf).is_ok() {
            out.push_str(&String::from_utf8_lossy(&buf));
        }
    };
    part(&|w| man.render_title(w));
    part(&|w| man.render_name_section(w));
    synopsis_into(command, &mut roff);
    let synopsis = roff.render();
    part(&|w| {
        use std::io::Write;
        w.write_all(synopsis.as_bytes())
    });
    part(&|w| man.render_description_section(w));
    if command.get_arguments().any(|a| !a.is_hide_set()) {
        part(&|w| man.render_options_section(w));
    }
    if command.get_subcommands().any(|s| !s.is_hide_set()) {
        part(&|w| man.render_subcommands_section(w));
    }
    if command.get_after_long_help().is_some() || command.get_after_help().is_some() {
        part(&|w| man.render_extra_section(w));
    }
    let mut tail = Roff::new();
    for section in extra {
        section.render_into(&mut tail);
    }
    out.push_str(&tail.render());
    out
}

/// `SYNOPSIS` with each option's value (`--socket PATH`), which clap_mangen leaves out.
fn synopsis_into(command: &Command, roff: &mut Roff) {
    let name = command.get_bin_name().unwrap_or(command.get_name());
    let mut line: Vec<Inline> = vec![bold(name)];
    let args = command.get_arguments().filter(|a| !a.is_hide_set());
    let (positionals, options): (Vec<_>, Vec<_>) = args.partition(|a| a.is_positional());
    for arg in options {
        let Some(flag) = arg
            .get_long()
            .map(|l| format!("--{l}"))
            .or_else(|| arg.get_short().map(|s| format!("-{s}")))
        else {
            continue;
        };
        line.push(roman(" "));
        let optional = !arg.is_required_set();
        if optional {
            line.push(roman("["));
        }
        match (arg.get_short(), arg.get_long()) {
            (Some(s), Some(_)) => {
                line.push(bold(format!("-{s}")));
                line.push(roman("|"));
                line.push(bold(flag));
            }
            _ => line.push(bold(flag)),
        }
        if takes_value(arg.get_action()) {
            line.push(roman(" "));
            line.push(italic(value_name(arg)));
        }
        if optional {
            line.push(roman("]"));
        }
    }
    for arg in positionals {
        line.push(roman(" "));
        let name = value_name(arg);
        let many = matches!(arg.get_action(), ArgAction::Append);
        let dots = if many { "..." } else { "" };
        if arg.is_required_set() {
            line.push(italic(format!("{name}{dots}")));
        } else {
            line.push(roman("["));
            line.push(italic(format!("{name}{dots}")));
            line.push(roman("]"));
        }
    }
    if command.get_subcommands().any(|s| !s.is_hide_set()) {
        line.push(roman(" "));
        line.push(italic("COMMAND"));
    }
    roff.control("SH", ["SYNOPSIS"]);
    roff.text(line);
}

fn takes_value(action: &ArgAction) -> bool {
    matches!(action, ArgAction::Set | ArgAction::Append)
}

fn value_name(arg: &clap::Arg) -> String {
    arg.get_value_names()
        .and_then(|v| v.first())
        .map(|v| v.to_string())
        .unwrap_or_else(|| arg.get_id().as_str().to_uppercase())
}
