//! Shared machinery: building and locating the real binaries, running `chatd`, `chatctl` and
//! `chat` as processes, and a raw TLS client that speaks the JSON-lines protocol directly
//! (connecting, `hello` and `login` through chatd-testkit, which chat-bench shares).
//!
//! Every wait has a generous deadline ([`TIMEOUT`]) and exists only so a broken build fails
//! instead of hanging; nothing here asserts that anything was fast. Each test gets its own
//! temporary directories and port 0, so tests run in parallel safely.
//!
//! `process` builds and finds the binaries and captures a child's lines; `chatd` starts servers
//! and runs chatctl; `chat` runs clients; `raw` is the protocol client and the fixed keys;
//! `proxy` is a malicious server made of the real one (chatd's own certificate and key, frames
//! rewritten between chatd and real `chat` clients); `attack` is what its tests share; `abuse` is what the hostile-client tests share (attackers'
//! source addresses, chatd's RSS, printed figures); `fullscreen` starts and reads the
//! full-screen `chat` in tmux.

mod abuse;
mod attack;
mod chat;
mod chatd;
mod cluster;
mod fake;
mod fullscreen;
mod process;
mod proxy;
mod raw;

pub use abuse::*;
pub use attack::*;
pub use chat::*;
pub use chatd::*;
pub use cluster::*;
pub use fake::*;
pub use fullscreen::*;
pub use process::*;
pub use proxy::*;
pub use raw::*;
