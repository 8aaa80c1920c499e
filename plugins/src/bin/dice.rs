//! `/dice [NdM]`: rolls dice for the caller and shows the result to the caller's room (when
//! the server's `allow_room_reply` is on for it; otherwise to the caller).

use chatd_plugins::{PluginReply, describe_roll, parse_roll, roll, serve};

fn random_u32() -> u32 {
    let mut b = [0u8; 4];
    // Without randomness there is no fair roll; a failed call leaves zeros, which the
    // caller sees as a run of ones rather than an unfair result passing as fair.
    let _ = getrandom::fill(&mut b);
    u32::from_le_bytes(b)
}

fn main() -> std::process::ExitCode {
    serve(|req| match parse_roll(&req.args) {
        Ok(r) => PluginReply::room(describe_roll(&req.user, r, &roll(r, random_u32))),
        Err(usage) => PluginReply::caller(usage),
    })
}
