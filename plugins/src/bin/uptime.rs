//! `/uptime`: how long the machine running chatd has been up.
//!
//! Read from the boot-time clock, not /proc/uptime: the shipped unit's `ProcSubset=pid` hides
//! /proc's system files from chatd and the plugins it runs.

use chatd_plugins::{PluginReply, describe_uptime, serve};
use rustix::time::{ClockId, clock_gettime};

fn main() -> std::process::ExitCode {
    serve(|_req| {
        // CLOCK_BOOTTIME counts from boot, suspend included, as /proc/uptime does.
        let since_boot = clock_gettime(ClockId::Boottime);
        PluginReply::caller(describe_uptime(since_boot.tv_sec.max(0) as u64))
    })
}
