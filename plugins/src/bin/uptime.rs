//! `/uptime`: how long the machine running chatd has been up.

use chatd_plugins::{Reply, describe_uptime, serve};

fn main() -> std::process::ExitCode {
    serve(|_req| {
        match std::fs::read_to_string("/proc/uptime")
            .map_err(|e| format!("cannot read /proc/uptime: {e}"))
            .and_then(|s| describe_uptime(&s))
        {
            Ok(text) => Reply::caller(text),
            Err(e) => Reply::caller(e),
        }
    })
}
