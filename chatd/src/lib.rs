//! chatd: a TLS chat daemon with an admin control socket.
//!
//! ```text
//! main ─ config ─ server ─┬─ session (one task per client) ─ commands/ (registry + one file per command)
//!                         ├─ hub (who is online, routing, slow-consumer policy) · outbox (per-session queue)
//!                         ├─ offline (stores lines for offline devices, in routing order)
//!                         ├─ control (Unix socket for chatctl)
//!                         ├─ store (SQLite) · password (argon2id)
//!                         ├─ tls (rustls identity, self-signed on first start) · socket (TCP under TLS)
//!                         ├─ reload (SIGHUP / chatctl reload: config and certificate, live)
//!                         └─ systemd (sd_notify, watchdog, socket activation, journal detection)
//! ```

pub mod commands;
pub mod config;
pub mod control;
pub mod hub;
pub mod live;
pub mod mailbox;
pub mod offline;
pub mod outbox;
pub mod password;
pub mod peerlimit;
pub mod ratelimit;
pub mod reload;
pub mod server;
pub mod session;
pub mod shared;
pub mod socket;
pub mod store;
pub mod systemd;
pub mod throttle;
pub mod tls;
pub mod writer;
