//! Shared protocol crate for chatd, chatctl and chat.
//!
//! Two wire formats live here, both "one JSON object per line" (the client one also has
//! binary frames for envelopes, negotiated in `hello`):
//!
//! ```text
//! client <-TLS-> chatd      frame::{ClientFrame, ServerFrame}   codec::WireCodec (capped lines,
//!                                                               binary envelope frames)
//! chatctl <-unix-> chatd    control::{ControlRequest, ControlResponse}
//! ```
//!
//! Every object carries a `"type"` tag; docs/PROTOCOL.md is the normative description.
//!
//! [`plugin`] holds the one JSON object each way between chatd and an external plugin command
//! (stdin, stdout; docs/PLUGINS.md).
//!
//! [`e2e`] holds the end-to-end crypto (device keys, sender chains, envelopes); its byte layout is
//! described in docs/E2E-ENVELOPE.md.
#![warn(missing_docs)]

pub mod codec;
pub mod control;
pub mod conversation;
#[cfg(feature = "docgen")]
pub mod docgen;
pub mod e2e;
pub mod fingerprint;
pub mod frame;
pub mod names;
pub mod plugin;
pub mod time;

pub use codec::{LineCodec, LineError, Wire, WireCodec};
pub use fingerprint::Fingerprint;
pub use frame::{ClientFrame, ErrorCode, PROTOCOL_VERSION, ServerFrame};
