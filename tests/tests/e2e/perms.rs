//! Who may administer chatd: a local user outside the admin group is refused by the control
//! socket's file mode and, should the mode be loosened, by chatd's own credential check;
//! members of the admin group (primary or supplementary) are served. (A chat user trying an
//! admin-only command such as `/kick` is covered by `commands`.)
//!
//! The control socket test needs root and `setpriv` (to run chatctl as `nobody`); without them
//! it says why and returns.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use crate::harness::{CtlOutput, Mode, Server, ctl_as, write_config};

/// uid of `nobody` and gid of `nogroup` on Debian; the admin group of these tests.
const NOBODY: u32 = 65534;
const NOGROUP: u32 = 65534;
/// A group nobody is in.
const STRANGER_GID: u32 = 54321;

fn no_setpriv() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("not root".into());
    }
    match nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(NOGROUP)) {
        Ok(Some(g)) if g.name == "nogroup" => {}
        other => return Some(format!("no group nogroup with gid {NOGROUP}: {other:?}")),
    }
    match Command::new("setpriv").arg("--version").output() {
        Ok(o) if o.status.success() => None,
        Ok(o) => Some(format!("setpriv --version failed ({})", o.status)),
        Err(e) => Some(format!("cannot run setpriv: {e}")),
    }
}

/// chatctl as uid `nobody` with primary group `gid` and exactly the supplementary `groups`.
fn ctl_as_nobody(
    gid: u32,
    groups: &[u32],
    socket: &Path,
    args: &[&str],
    stdin: Option<&str>,
) -> CtlOutput {
    let reuid = format!("--reuid={NOBODY}");
    let regid = format!("--regid={gid}");
    let list: Vec<String> = groups.iter().map(u32::to_string).collect();
    let groups = if list.is_empty() {
        "--clear-groups".to_string()
    } else {
        format!("--groups={}", list.join(","))
    };
    ctl_as(&["setpriv", &reuid, &regid, &groups], socket, args, stdin)
}

#[test]
fn control_socket_refuses_local_users_outside_the_admin_group() {
    if let Some(why) = no_setpriv() {
        eprintln!("SKIPPED control socket permission test: {why}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // nobody must reach the socket's directory to be refused by the socket itself.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let (file, control) = write_config(dir.path(), "admin_group = \"nogroup\"\n");
    let mut server = Server::try_start(Mode::Config {
        file: &file,
        control: &control,
    })
    .unwrap_or_else(|f| panic!("chatd failed to start ({}):\n{}", f.status, f.stderr));
    let meta = std::fs::metadata(&control).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o660, "socket mode");
    assert_eq!(
        std::os::unix::fs::MetadataExt::gid(&meta),
        NOGROUP,
        "socket group"
    );
    let add = ["user", "add", "mallory", "--admin", "--password-stdin"];

    // Outside the group: the file mode already says no.
    let out = ctl_as_nobody(STRANGER_GID, &[], &control, &add, Some("pw\n"));
    let err = out.assert_code(1);
    assert!(
        err.starts_with(&format!(
            "chatctl: cannot connect to {}: ",
            control.display()
        )) && err.contains("Permission denied"),
        "{err}"
    );

    // Mode loosened by mistake: chatd's own check (SO_PEERCRED) still says no, and logs it.
    std::fs::set_permissions(&control, std::fs::Permissions::from_mode(0o666)).unwrap();
    let out = ctl_as_nobody(STRANGER_GID, &[], &control, &add, Some("pw\n"));
    let err = out.assert_code(1);
    assert!(
        err.starts_with("chatctl: permission denied: the control socket is for root, ")
            && err.contains("usermod -aG"),
        "the refusal says who may: {err}"
    );
    let out = ctl_as_nobody(STRANGER_GID, &[], &control, &["--json", "status"], None);
    out.assert_code(1);
    assert!(
        out.stdout.contains(r#""code":"permission_denied""#),
        "{}",
        out.stdout
    );
    server
        .log
        .expect_contains(&format!("control socket: permission denied uid={NOBODY}"));
    // Nothing happened.
    let list = server.ctl(&["--json", "user", "list"], None).json();
    assert_eq!(list["users"], serde_json::json!([]), "{list}");

    // The admin group, as primary or as supplementary group, is served (so the refusals above
    // are about the group, not about anyone who is not root).
    let out = ctl_as_nobody(NOGROUP, &[], &control, &["--json", "status"], None);
    assert_eq!(out.json()["type"], "status");
    let out = ctl_as_nobody(STRANGER_GID, &[NOGROUP], &control, &add, Some("pw\n"));
    out.assert_ok();
    assert_eq!(out.stdout, "user mallory added (admin)\n");
}
