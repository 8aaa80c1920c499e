//! Man pages and shell completions for a binary, from its clap definition, so they never
//! drift from `--help`. Each binary answers `BIN --generate-docs DIR` (not in its `--help`:
//! a build step, see packaging/build-debs).
//!
//! The main page is clap's (with a synopsis that shows option values) plus the sections the
//! binary adds ([`Manual`]: FILES, SIGNALS, ENVIRONMENT, EXIT STATUS, SEE ALSO, ...); every
//! subcommand gets its own page (`chatctl-user(8)`, `chatctl-user-add(8)`), so each page the
//! SUBCOMMANDS list names exists; and a binary may add whole pages, such as chatd.toml(5)
//! made from the annotated default configuration ([`toml::page`]).

mod roffs;
pub mod toml;

use std::path::Path;

pub use roffs::{Item, Page, Section};

/// The hidden first argument that asks for generation.
pub const FLAG: &str = "--generate-docs";

/// Docs could not be written.
#[derive(Debug, thiserror::Error)]
#[error("cannot write {path}: {source}")]
pub struct DocgenError {
    path: String,
    source: std::io::Error,
}

/// What a binary adds to what clap knows about it.
#[derive(Debug, Clone, Default)]
pub struct Manual {
    /// Sections after clap's own on the main page, in order.
    pub sections: Vec<Section>,
    /// Further pages written beside the main one.
    pub pages: Vec<Page>,
}

/// If the command line is `BIN --generate-docs DIR`, writes `DIR/man/BIN.SECTION` (and a
/// page per subcommand, and `manual`'s pages) and `DIR/completions/{BIN,_BIN,BIN.fish}`
/// (bash, zsh, fish), and returns the exit status for `main` to return; otherwise None.
pub fn generate_if_asked(
    command: impl FnOnce() -> clap::Command,
    section: &str,
    manual: impl FnOnce() -> Manual,
) -> Option<std::process::ExitCode> {
    let mut args = std::env::args_os().skip(1);
    if args.next()?.to_str()? != FLAG {
        return None;
    }
    let dir = std::path::PathBuf::from(args.next()?);
    let command = command();
    let name = command.get_name().to_string();
    Some(match write_all(command, section, &manual(), &dir) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: {e}");
            std::process::ExitCode::FAILURE
        }
    })
}

fn write_all(
    command: clap::Command,
    section: &str,
    manual: &Manual,
    dir: &Path,
) -> Result<(), DocgenError> {
    use clap_complete::Shell;
    let name = command.get_name().to_string();
    let err = |path: &Path| {
        let path = path.display().to_string();
        move |source| DocgenError { path, source }
    };
    let man_dir = dir.join("man");
    let comp_dir = dir.join("completions");
    for d in [&man_dir, &comp_dir] {
        std::fs::create_dir_all(d).map_err(err(d))?;
    }
    for (file, text) in pages(command.clone(), section, manual) {
        let path = man_dir.join(file);
        std::fs::write(&path, text).map_err(err(&path))?;
    }
    for (shell, file) in [
        (Shell::Bash, name.clone()),
        (Shell::Zsh, format!("_{name}")),
        (Shell::Fish, format!("{name}.fish")),
    ] {
        let mut out = Vec::new();
        clap_complete::generate(shell, &mut command.clone(), &name, &mut out);
        let path = comp_dir.join(file);
        std::fs::write(&path, out).map_err(err(&path))?;
    }
    Ok(())
}

/// Every page as (file name, roff text): the main one, one per subcommand, `manual`'s.
pub fn pages(command: clap::Command, section: &str, manual: &Manual) -> Vec<(String, String)> {
    // `help` is clap's, and has no page of its own.
    let mut command = command.disable_help_subcommand(true);
    command.build();
    let mut out = Vec::new();
    let name = command.get_name().to_string();
    // The footer of every page, subcommands' too: `chatctl 0.1.0`.
    let source = format!("{name} {}", command.get_version().unwrap_or_default());
    out.push((
        format!("{name}.{section}"),
        roffs::command_page(&command, section, &source, &manual.sections),
    ));
    subcommand_pages(&command, section, &source, &mut out);
    for page in &manual.pages {
        out.push((format!("{}.{}", page.name, page.section), page.render()));
    }
    out
}

/// A page per subcommand, depth first, each pointing back at its parent's.
fn subcommand_pages(
    parent: &clap::Command,
    section: &str,
    source: &str,
    out: &mut Vec<(String, String)>,
) {
    let parent_name = parent.get_display_name().unwrap_or(parent.get_name());
    for sub in parent.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = sub.get_display_name().unwrap_or(sub.get_name()).to_string();
        let see_also = Section::new("SEE ALSO").para(format!("{parent_name}({section})"));
        out.push((
            format!("{name}.{section}"),
            roffs::command_page(sub, section, source, &[see_also]),
        ));
        subcommand_pages(sub, section, source, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Arg, Command};

    fn cli() -> Command {
        Command::new("tool")
            .version("1.0")
            .about("Does things")
            .arg(Arg::new("socket").long("socket").value_name("PATH"))
            .subcommand(
                Command::new("user")
                    .about("Manage users")
                    .subcommand(Command::new("add").about("Add one").arg(Arg::new("NAME"))),
            )
    }

    #[test]
    fn every_subcommand_has_a_page_and_no_help_page() {
        let manual = Manual {
            sections: vec![Section::new("FILES").term("/etc/tool", "Its file.")],
            pages: vec![],
        };
        let pages = pages(cli(), "8", &manual);
        let names: Vec<&str> = pages.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["tool.8", "tool-user.8", "tool-user-add.8"]);
        let main = &pages[0].1;
        assert!(main.contains("tool\\-user(8)"), "{main}");
        assert!(!main.contains("help("), "{main}");
        assert!(main.contains(".SH FILES"), "{main}");
        // The synopsis shows what an option takes.
        assert!(main.contains("\\fB\\-\\-socket\\fR \\fIPATH\\fR"), "{main}");
        let add = &pages[2].1;
        assert!(add.contains("tool\\-user(8)"), "{add}");
        assert!(add.contains("tool user add"), "{add}");
        assert!(add.contains("tool 1.0"), "{add}");
    }
}
