//! chatd-testkit: the protocol client that chat-bench and the end-to-end tests share, as far as
//! login.
//!
//! ```text
//! tls       TCP (no Nagle) and TLS that trusts one certificate, by its SHA-256 fingerprint
//! login     the `hello` and `login` frames, and the exchange up to the server's `login_ok`
//! postgres  a throwaway PostgreSQL server (initdb in a temporary directory) for the store's tests
//! nats      a throwaway nats-server on a loopback port, which can be stopped and restarted
//! ```
//!
//! Dev-only and never packaged: it trusts the fingerprint chatd printed, which is what a test or
//! a benchmark has, where the `chat` client asks its user. Past `login_ok` each user reads in
//! its own way (chat-bench must never fall behind; the tests turn every frame into JSON), so the
//! exchange hands back whatever it read beyond that line.

pub mod login;
pub mod nats;
pub mod postgres;
pub mod tls;

pub use login::{
    check_hello, encode, greet, hello, hello_with_features, log_in, login, write_frames,
};
pub use tls::{Tls, connect, connect_from, connector, full_handshake_connector, tcp_from};

use std::net::SocketAddr;

/// What can go wrong before a client is logged in. Each message carries its cause, so that
/// `{}` alone tells the whole story (the tests print it in a panic, chat-bench in its figures).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// rustls refused the client configuration.
    #[error("TLS configuration: {0}")]
    Config(rustls::Error),
    /// The TCP connection failed.
    #[error("cannot connect to {addr}: {error}")]
    Connect {
        /// Where to.
        addr: SocketAddr,
        /// Why.
        error: std::io::Error,
    },
    /// The TLS handshake failed (a certificate with another fingerprint, say).
    #[error("TLS handshake failed: {0}")]
    Handshake(std::io::Error),
    /// A frame did not serialize.
    #[error("cannot encode a frame: {0}")]
    Encode(serde_json::Error),
    /// Reading or writing the stream failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The stream ended before the server's `hello`.
    #[error("server closed the connection before its hello")]
    ClosedBeforeHello,
    /// The stream ended before `login_ok`.
    #[error("server closed the connection during login")]
    ClosedDuringLogin,
    /// The server's first line was not its `hello` (the line).
    #[error("expected hello, got {0}")]
    NotHello(String),
    /// The server answered the login with an `error` or a `bye` (the line).
    #[error("refused: {0}")]
    Refused(String),
    /// Binary frames were asked for and the server's `hello` did not agree.
    #[error("the server ({server}) did not agree to binary envelope frames in its hello")]
    NoBinary {
        /// The server's name and version, from its `hello`.
        server: String,
    },
    /// The server's `hello` did not parse (the line).
    #[error("unreadable server hello: {0}")]
    BadHello(String),
}
