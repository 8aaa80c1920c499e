//! `chatd --check-config`: what start-up would refuse, or accept but run without, found
//! without starting anything (no state dir, socket or certificate is created).

use std::os::unix::fs::PermissionsExt;

use chatd_proto::Fingerprint;

use crate::config::Config;
use crate::tls::TlsError;

/// What start-up would refuse about the TLS identity: the configured certificate and key (or
/// the ones chatd made in the state dir) must be readable, parseable and belong together.
/// Returns the certificate's fingerprint, or None when chatd will make one on first start.
pub fn identity(config: &Config) -> Result<Option<Fingerprint>, TlsError> {
    crate::tls::check_identity(
        config.tls.cert.as_deref(),
        config.tls.key.as_deref(),
        &config.server.state_dir,
    )
}

/// What start-up accepts but runs without, one sentence each: plugins whose program is
/// missing or not executable (their calls would fail), a missing admin group.
pub fn warnings(config: &Config) -> Vec<String> {
    let mut out = plugin_problems(config);
    match nix::unistd::Group::from_name(&config.server.admin_group) {
        Ok(Some(_)) => {}
        Ok(None) => out.push(format!(
            "server.admin_group: group {:?} does not exist; only root and chatd's own user \
             will be able to use chatctl",
            config.server.admin_group
        )),
        Err(e) => out.push(format!(
            "server.admin_group: cannot look up group {:?}: {e}",
            config.server.admin_group
        )),
    }
    out
}

/// `[[plugins]]` whose program is missing, not a file, or not executable (by the user
/// running this check).
pub fn plugin_problems(config: &Config) -> Vec<String> {
    let mut out = Vec::new();
    for plugin in &config.plugins {
        let exec = &plugin.exec;
        let problem = match std::fs::metadata(exec) {
            Err(e) => Some(format!("{}: {e}", exec.display())),
            Ok(m) if !m.is_file() => Some(format!("{} is not a file", exec.display())),
            Ok(m) if m.permissions().mode() & 0o111 == 0 => {
                Some(format!("{} is not executable", exec.display()))
            }
            Ok(_) => nix::unistd::access(exec, nix::unistd::AccessFlags::X_OK)
                .err()
                .map(|e| format!("{}: cannot execute: {e}", exec.display())),
        };
        if let Some(problem) = problem {
            out.push(format!(
                "plugin {:?}: {problem}; /{} would fail",
                plugin.name, plugin.name
            ));
        }
    }
    out
}
