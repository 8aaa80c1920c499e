//! chatd: a TLS chat daemon with an admin control socket.
//!
//! Modules in layers; each imports only from the layers below it:
//!
//! ```text
//! server          bind and run: accept loop, drain                     (main.rs above it)
//! session/  control   a client connection; the Unix socket for chatctl
//! shared          what sessions and the control socket read (config, hub, store, ...)
//! reload          SIGHUP / chatctl reload of config, certificate and commands, all or nothing
//! offline  commands/  the offline writer task; the command registry, one file per command
//! hub/            who is online, routing, rooms, device keys (one lock, four tables)
//! store           SQLite on the blocking pool
//! stored_lines    stored lines being replayed, one copy for every session
//! mailbox  writer  a session's queue + closer (the slow-consumer rule); its writer task
//! check           --check-config: what start-up would refuse or run without
//! journal         journald priorities; an event's error in its message text
//! repeats         repeated log lines summarised with a count (a tracing layer)
//! budget          what all sessions of one account may send together
//! memory          freed memory given back to the system after a burst (malloc_trim)
//! metrics         counters for OpenMetrics (`[metrics] listen`, `chatctl metrics`); imports nothing above
//! outbox  config  live  tls  socket  password  throttle  ratelimit  peerlimit  slots  systemd
//! ```

pub mod budget;
pub mod check;
pub mod cluster;
pub mod commands;
pub mod config;
pub mod control;
pub mod hub;
pub mod journal;
pub mod live;
pub mod mailbox;
pub mod memory;
pub mod metrics;
pub mod offline;
pub mod outbox;
pub mod password;
pub mod peerlimit;
pub mod ratelimit;
pub mod reload;
pub mod repeats;
pub mod server;
pub mod session;
pub mod shared;
pub mod slots;
pub mod socket;
pub mod store;
pub mod stored_lines;
pub mod systemd;
pub mod throttle;
pub mod tls;
pub mod writer;
