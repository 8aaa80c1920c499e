//! End-to-end tests: the real `chatd`, `chatctl` and `chat` binaries over real TLS.
//!
//! The binaries are built once per run (see [`harness::bins`]); every test starts its own
//! chatd on 127.0.0.1:0 in its own temporary directory, so tests run in parallel.
//!
//! - `abuse_chains`: chain budgets at their edges; junk chains at online and offline users; a
//!   chain flood against chatd's memory, log and logins; the real `chat` inside the budgets;
//!   a full offline-writer queue refusing, losing nothing acknowledged
//! - `abuse_logins`: guesses at an account from many addresses against a device that proves
//!   itself; unfinished handshakes at the connection cap against the real `chat` (issue 26)
//! - `abuse_logs`: refused logins summarised in the log; `chatctl kick --ban` (issue 26)
//! - `abuse_memory`: sessions replaying a backlog without reading: memory bounded by the
//!   outbound queue's bytes, one copy of each stored line, RSS back after; the byte limit's edge
//! - `activation`: systemd: socket activation (LISTEN_FDS), LoadCredential, sd_notify
//! - `admin`: chatctl against a running chatd
//! - `binary`: binary envelope frames beside JSON lines: negotiation, mixed rooms, edges
//! - `client`: the `chat` binary in plain mode
//! - `client_commands`: `chat`'s own commands in plain mode: /help CMD, /ping, /ignore, prefixes
//! - `client_history`: `chat`'s optional encrypted local history across restarts
//! - `client_identity`: chat's key and pins named by the server's identity, nothing written before
//!   a login succeeds, password tries, `$USER`, the reconnect message (issue 29)
//! - `client_servers`: `chat --server A,B`: a node down at start, a node that dies while the
//!   full-screen chat runs, a node whose certificate is not the list's
//! - `cluster_failures`: three nodes and the failures: a node killed, a node paused past the
//!   timeout (fenced, rejoined), the bus and PostgreSQL restarted, logins racing with sends;
//!   no message text on the bus or in the database
//! - `cluster_routing`: three nodes on a real PostgreSQL and nats-server: room lines and
//!   whispers across nodes, once each; lines stored through one node replayed at another;
//!   who is online everywhere; a lock on one node ending a session on another
//! - `cluster_store`: chatd on PostgreSQL (`[cluster] database`): restarts of chatd and of
//!   PostgreSQL, `storage_unavailable` and recovery, no text in the database, refused settings
//! - `commands`: server built-ins (away, whois, motd, ping, announce, disconnect) and plugins
//! - `crash`: `kill -9` during a stream of writes loses nothing acknowledged
//! - `devices`: devices vouched for by devices: chatd's checks, `/revoke`, the new-laptop story
//! - `diskfull`: disk full (private tmpfs) and a locked database: clear errors, no corruption
//! - `perms`: who may use the control socket (file mode, SO_PEERCRED, admin group)
//! - `protocol`: raw JSON-lines frames over TLS
//! - `rooms`: rooms, their commands, limits and persistence; room messages between chat clients
//! - `hostile`: garbage, old TLS, silent crowds, huge lines, lookalike names
//! - `keys`: device keys: made by chat, registered, listed, revoked, limited
//! - `limits`: abuse limits at their edges (rate limit)
//! - `offline`: messages stored for offline devices: order, restarts, kill -9, cap, TTL
//! - `lifecycle`: configuration, restarts, second instances, SIGTERM
//! - `slow`: a client that stops reading is dropped at the outbound queue's edge; nobody else loses a message
//! - `tofu`: chat's certificate pinning
//! - `logs`: what chatd logs and never logs
//! - `manpages`: the generated man pages: complete, rendered without warnings, no dangling references
//! - `reload`: SIGHUP / `chatctl reload` with new limits, bad files and new certificates
//! - `metrics`: the OpenMetrics endpoint and `chatctl metrics` after a scripted workload
//! - `malicious`: a scripted hostile server against a real `chat`
//! - `proxy_attacks`, `proxy_roster`: the real chatd turned malicious by a proxy holding its
//!   certificate and key, against real `chat` clients (issue 25)
//! - `replay`: stored messages after a long absence (clock moved with faketime) and replays to a
//!   restarted `chat`: each shown once
//! - `rekey`: a chain the server dropped is asked for again and its messages shown
//! - `secrecy`: end-to-end encryption through a real chatd (markers, multi-device)
//! - `tui`: the full-screen `chat` in a real terminal (tmux; see `tmux` for the driver)
//! - `tui_buffers`: its buffers per room and whisper, activity bar, highlights, nick list
//! - `tui_complete`: Tab completion of rooms and fingerprints in the full-screen `chat`
//! - `tui_view`: its drawing in tmux: word wrap with an indent at 60 columns, mouse capture on
//!   and off (`[ui] mouse`, Alt-m)

// `cfg(test)` is always set in a test target; it marks every module as test code for
// clippy, whose `allow-unwrap-in-tests` & co. (clippy.toml) otherwise cover only `#[test]` fns.
#[cfg(test)]
mod harness;

#[cfg(test)]
mod abuse_chains;
#[cfg(test)]
mod abuse_logins;
#[cfg(test)]
mod abuse_logs;
#[cfg(test)]
mod abuse_memory;
#[cfg(test)]
mod activation;
#[cfg(test)]
mod admin;
#[cfg(test)]
mod binary;
#[cfg(test)]
mod client;
#[cfg(test)]
mod client_commands;
#[cfg(test)]
mod client_history;
#[cfg(test)]
mod client_identity;
#[cfg(test)]
mod client_servers;
#[cfg(test)]
mod cluster_failures;
#[cfg(test)]
mod cluster_routing;
#[cfg(test)]
mod cluster_store;
#[cfg(test)]
mod cluster_throttle;
#[cfg(test)]
mod commands;
#[cfg(test)]
mod crash;
#[cfg(test)]
mod devices;
#[cfg(test)]
mod diskfull;
#[cfg(test)]
mod hostile;
#[cfg(test)]
mod keys;
#[cfg(test)]
mod lifecycle;
#[cfg(test)]
mod limits;
#[cfg(test)]
mod logs;
#[cfg(test)]
mod malicious;
#[cfg(test)]
mod manpages;
#[cfg(test)]
mod metrics;
#[cfg(test)]
mod offline;
#[cfg(test)]
mod perms;
#[cfg(test)]
mod protocol;
#[cfg(test)]
mod proxy_attacks;
#[cfg(test)]
mod proxy_roster;
#[cfg(test)]
mod rekey;
#[cfg(test)]
mod reload;
#[cfg(test)]
mod replay;
#[cfg(test)]
mod rooms;
#[cfg(test)]
mod secrecy;
#[cfg(test)]
mod slow;
#[cfg(test)]
mod tmux;
#[cfg(test)]
mod tofu;
#[cfg(test)]
mod tui;
#[cfg(test)]
mod tui_buffers;
#[cfg(test)]
mod tui_complete;
#[cfg(test)]
mod tui_view;
