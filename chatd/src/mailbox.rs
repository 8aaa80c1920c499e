//! How a session is reached from outside its task: its outbound queue and its closer, and the
//! one rule for a queue that will not take a line (a full queue closes the session as too slow).
//!
//! The hub's fan-out and the session's own replies both queue through a [`Mailbox`], so a
//! slow client is treated the same whoever writes to it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use crate::outbox::{Outbox, PushError};

/// Why a session is closed when its queue is full (its `bye`, and others' leave notice).
pub const TOO_SLOW: &str = "too slow: outbound queue full";

/// How to end a session from outside its task, and why.
#[derive(Clone, Default)]
pub struct Closer(Arc<CloserState>);

#[derive(Default)]
struct CloserState {
    token: CancellationToken,
    /// Mirrors the token: fan-out checks it for every delivery, and the token's own check
    /// takes a lock.
    closed: AtomicBool,
    reason: Mutex<Option<String>>,
}

impl Closer {
    /// Asks the session to end; the first reason given wins.
    pub fn close(&self, reason: &str) {
        let mut r = self.0.reason.lock().unwrap_or_else(|p| p.into_inner());
        if r.is_none() {
            *r = Some(reason.to_string());
        }
        drop(r);
        self.0.closed.store(true, Ordering::Release);
        self.0.token.cancel();
    }

    /// Resolves once [`Closer::close`] was called.
    pub async fn closed(&self) {
        self.0.token.cancelled().await
    }

    /// True once [`Closer::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.0.closed.load(Ordering::Acquire)
    }

    /// The reason given to [`Closer::close`], if any.
    pub fn reason(&self) -> Option<String> {
        self.0
            .reason
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// Why a line was not queued: the session is closing from now on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Its queue was full: closed as too slow.
    TooSlow,
    /// Its writer is gone (the connection failed): closed as disconnected.
    Gone,
}

/// A session's outbound queue together with its closer.
#[derive(Clone)]
pub struct Mailbox {
    outbox: Arc<Outbox>,
    closer: Closer,
}

impl Mailbox {
    /// The mailbox of the session with this queue and closer.
    pub fn new(outbox: Arc<Outbox>, closer: Closer) -> Self {
        Mailbox { outbox, closer }
    }

    /// The queue.
    pub fn outbox(&self) -> &Arc<Outbox> {
        &self.outbox
    }

    /// The closer.
    pub fn closer(&self) -> &Closer {
        &self.closer
    }

    /// Queues `entry`, which holds `frames` frames; a queue that will not take it closes
    /// the session (see [`Refused`]).
    pub fn push(&self, entry: Bytes, frames: usize) -> Result<(), Refused> {
        self.outbox
            .push_frames(entry, frames)
            .map_err(|e| self.refused(e))
    }

    /// [`Mailbox::push`] without waking the writer (see [`Outbox::push_quiet`]): true when
    /// a later wake-up must cover it.
    pub fn push_quiet(&self, entry: Bytes, frames: usize) -> Result<bool, Refused> {
        self.outbox
            .push_quiet(entry, frames)
            .map_err(|e| self.refused(e))
    }

    /// Queues `entry` (`frames` frames) if there is room now: Ok(false), nothing queued and
    /// the session left open, when the queue is full. A closed queue closes the session.
    pub fn offer(&self, entry: Bytes, frames: usize) -> Result<bool, Refused> {
        self.outbox
            .push_if_room(entry, frames)
            .map_err(|e| self.refused(e))
    }

    /// Closes the session as too slow: lines for it piled up elsewhere (while it replayed).
    pub fn too_slow(&self) {
        if !self.closer.is_closed() {
            crate::metrics::get().slow_consumer();
        }
        self.closer.close(TOO_SLOW);
    }

    fn refused(&self, e: PushError) -> Refused {
        match e {
            PushError::Full => {
                self.too_slow();
                Refused::TooSlow
            }
            PushError::Closed => {
                // Unreachable from now on, so the hub stores lines for its device instead.
                self.closer.close("disconnected");
                Refused::Gone
            }
        }
    }
}
