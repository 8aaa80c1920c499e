//! chatd's configuration parser and validation on an arbitrary TOML text.
//! Property: no panic; any error names the (fake) file. Accepted configs must give
//! sane derived values (the timeouts chatd computes from them).
#![no_main]

use std::path::Path;

use chatd::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::parse(text, Path::new("fuzz.toml")) {
        Ok(config) => {
            let _ = config.limits.handshake_timeout();
            let _ = config.limits.login_timeout();
            let _ = config.limits.idle_timeout();
            let _ = config.limits.shutdown_grace();
        }
        Err(e) => assert!(e.to_string().contains("fuzz.toml"), "{e}"),
    }
});
