//! What survives a restart, and the time rules: receiver chains are kept in the state file
//! ([`crate::state`]) after every accepted chain and message and before every `backlog_ack`;
//! stored messages are accepted for the server's whole offline TTL, live ones within the skew.

use std::ops::RangeInclusive;

use anyhow::{Context, Result};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use chatd_proto::Fingerprint;
use chatd_proto::e2e::ReceiverChain;

use super::{Event, Notice, Secure, Warning};
use crate::state::{Saved, StateFile};

/// Chains remembered after they were dropped for the bound, so a copy sent again is not new.
const RETIRED: usize = 1024;

fn slot_text((device, chain): &(Fingerprint, [u8; 16])) -> String {
    let hex: String = chain.iter().map(|b| format!("{b:02x}")).collect();
    format!("{device}/{hex}")
}

fn parse_slot(text: &str) -> Option<(Fingerprint, [u8; 16])> {
    let (device, hex) = text.split_once('/')?;
    let device = device.parse().ok()?;
    if hex.len() != 32 || !hex.is_ascii() {
        return None;
    }
    let mut chain = [0u8; 16];
    for (i, b) in chain.iter_mut().enumerate() {
        *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some((device, chain))
}

impl Secure {
    /// Keeps receiver chains in `file` from now on, starting with the ones it holds. A file
    /// that does not decode is an error (never silently reset).
    pub fn use_state(&mut self, file: StateFile) -> Result<()> {
        let saved = file.load()?;
        for (i, text) in saved.chains.iter().enumerate() {
            let bytes = zeroize::Zeroizing::new(
                BASE64
                    .decode(text)
                    .with_context(|| format!("state file: chain {i} is not base64"))?,
            );
            let chain = ReceiverChain::import(&bytes)
                .with_context(|| format!("state file: chain {i} does not decode"))?;
            let slot = (chain.sender_device(), chain.chain_id());
            if self.receivers.insert(slot, chain).is_none() {
                self.receiver_order.push_back(slot);
                self.trim_receivers(slot.0);
            }
        }
        for (i, text) in saved.retired.iter().enumerate() {
            let slot = parse_slot(text)
                .with_context(|| format!("state file: retired chain {i} does not decode"))?;
            self.retire(slot);
        }
        self.state = Some(file);
        Ok(())
    }

    /// How long the server keeps stored lines (its `hello`'s `offline_ttl_secs`).
    pub fn set_offline_ttl_secs(&mut self, secs: u64) {
        self.offline_ttl_ms = secs.saturating_mul(1000);
    }

    /// The signed timestamps accepted at `now`: within the skew for a live message; for one
    /// stored while this device was offline, as old as the server keeps them.
    pub(super) fn window(&self, stored: bool, now: u64) -> RangeInclusive<u64> {
        let back = if stored {
            self.offline_ttl_ms.saturating_add(self.max_skew_ms)
        } else {
            self.max_skew_ms
        };
        now.saturating_sub(back)..=now.saturating_add(self.max_skew_ms)
    }

    /// Remembers a dropped chain, bounded.
    pub(super) fn retire(&mut self, slot: (Fingerprint, [u8; 16])) {
        if !self.retired.contains(&slot) {
            self.retired.push_back(slot);
            if self.retired.len() > RETIRED {
                self.retired.pop_front();
            }
        }
    }

    /// A `backlog` marker: everything before it is saved (the `backlog_ack` that follows lets
    /// the server delete it); after the last one, how many stored messages were skipped
    /// because this device had shown them already, said once.
    pub fn backlog_end(&mut self, more: bool) -> Vec<Event> {
        let mut out = self.save_state();
        if !more && self.already_shown > 0 {
            out.push(Event::Notice(Notice::AlreadyShown {
                count: std::mem::take(&mut self.already_shown),
            }));
        }
        out
    }

    /// Writes the receiver chains to the state file; a failure is told once until a write
    /// succeeds again.
    pub(super) fn save_state(&mut self) -> Vec<Event> {
        let result = self.write_state();
        match result {
            Ok(()) => {
                self.state_warned = false;
                Vec::new()
            }
            Err(_) if self.state_warned => Vec::new(),
            Err(e) => {
                self.state_warned = true;
                vec![Event::Warning(Warning::StateNotSaved {
                    error: format!("{e:#}"),
                })]
            }
        }
    }

    fn write_state(&self) -> Result<()> {
        let Some(file) = &self.state else {
            return Ok(());
        };
        let mut saved = Saved::default();
        for slot in &self.receiver_order {
            if let Some(chain) = self.receivers.get(slot) {
                let bytes = chain.export().context("encoding a receiver chain")?;
                saved.chains.push(BASE64.encode(&*bytes));
            }
        }
        saved.retired = self.retired.iter().map(slot_text).collect();
        file.save(&saved)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_round_trip_and_junk_is_refused() {
        let slot = (Fingerprint::of(b"k"), [0xab; 16]);
        assert_eq!(parse_slot(&slot_text(&slot)), Some(slot));
        assert_eq!(parse_slot("SHA256:00/ab"), None);
        assert_eq!(parse_slot("nonsense"), None);
        let text = slot_text(&slot);
        let bad = format!("{}é", &text[..text.len() - 2]);
        assert_eq!(parse_slot(&bad), None);
    }
}
