//! What chatctl(8) says beyond `--help`: who may use it, its environment and exit status.

use chatd_proto::docgen::{Manual, Section};

/// chatctl(8)'s own sections (each subcommand's page comes from clap).
pub fn manual() -> Manual {
    let access = Section::new("ACCESS").para(
        "chatd accepts a control connection from root, from its own user and from members of \
         [server] admin_group (chatd-admin by default), checked by the socket's peer \
         credentials. A member of chatd-admin can run chatctl but not read chatd's journal \
         (journalctl -u chatd needs root or the systemd-journal or adm group).",
    );
    let files = Section::new("FILES").term(
        "/run/chatd/control.sock",
        "chatd's control socket ([server] control_socket in chatd.toml(5)).",
    );
    let environment = Section::new("ENVIRONMENT").term(
        "CHATD_SOCKET",
        "The control socket's path, if --socket is not given.",
    );
    let exit = Section::new("EXIT STATUS")
        .term("0", "Done.")
        .term(
            "1",
            "Refused or failed: a bad name, no connection to chatd, or an error answer.",
        )
        .term("2", "Command-line usage error.");
    let see_also =
        Section::new("SEE ALSO").para("chatd(8), chatd.toml(5), chat(1); docs/OPERATIONS.md.");
    Manual {
        sections: vec![access, files, environment, exit, see_also],
        pages: Vec::new(),
    }
}
