//! `/uptime`: how long the machine running chatd has been up.

use chatd_plugins::{PluginReply, describe_uptime, serve};

fn main() -> std::process::ExitCode {
    serve(|_req| {
        match std::fs::read_to_string("/proc/uptime")
            .map_err(|e| format!("cannot read /proc/uptime: {e}"))
            .and_then(|s| describe_uptime(&s))
        {
            Ok(text) => PluginReply::caller(text),
            Err(e) => PluginReply::caller(e),
        }
    })
}
