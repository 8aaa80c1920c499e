//! Man page and shell completions for a binary, from its clap definition, so they never
//! drift from `--help`. Each binary answers `BIN --generate-docs DIR` (not in its `--help`:
//! a build step, see packaging/build-debs).

use std::path::Path;

/// The hidden first argument that asks for generation.
pub const FLAG: &str = "--generate-docs";

/// Docs could not be written.
#[derive(Debug, thiserror::Error)]
#[error("cannot write {path}: {source}")]
pub struct DocgenError {
    path: String,
    source: std::io::Error,
}

/// If the command line is `BIN --generate-docs DIR`, writes `DIR/man/BIN.SECTION` and
/// `DIR/completions/{BIN,_BIN,BIN.fish}` (bash, zsh, fish) and returns the exit status for
/// `main` to return; otherwise None.
pub fn generate_if_asked(
    command: impl FnOnce() -> clap::Command,
    section: &str,
) -> Option<std::process::ExitCode> {
    let mut args = std::env::args_os().skip(1);
    if args.next()?.to_str()? != FLAG {
        return None;
    }
    let dir = std::path::PathBuf::from(args.next()?);
    let command = command();
    let name = command.get_name().to_string();
    Some(match write_all(command, section, &dir) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: {e}");
            std::process::ExitCode::FAILURE
        }
    })
}

fn write_all(command: clap::Command, section: &str, dir: &Path) -> Result<(), DocgenError> {
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
    let mut page = Vec::new();
    let man = man_dir.join(format!("{name}.{section}"));
    clap_mangen::Man::new(command.clone())
        .section(section)
        .render(&mut page)
        .map_err(err(&man))?;
    std::fs::write(&man, page).map_err(err(&man))?;
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
