//! Chain distribution: a sender chain's state, RSA-OAEP-encrypted to one recipient device and
//! RSA-PSS-signed by the sender device.
//!
//! ```text
//! header
//!   u8 version=1 | u8 kind=0x57 'W' | u16+ sender user | [32] sender device fp
//!   | [32] recipient device fp | u16+ conversation | [16] chain id | u32 start index
//! u16+ wrapped      RSA-OAEP-SHA256(recipient, chain id [16] || start index u32 || chain key [32])
//! u16+ signature    RSA-PSS-SHA256 by the sender device over every byte before this field
//! ```

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use zeroize::Zeroizing;

use super::wire::{Reader, Writer};
use super::{
    ChainSnapshot, DeviceKey, DevicePublicKey, E2E_VERSION, E2eError, ReceiverChain, SenderChain,
};
use crate::Fingerprint;

/// Kind byte of a wrapped chain (ASCII `W`).
pub const KIND_WRAPPED_CHAIN: u8 = 0x57;
/// Length of the OAEP plaintext: chain id, index, chain key.
const PAYLOAD_LEN: usize = 16 + 4 + 32;
/// Largest RSA output accepted (RSA-4096).
const MAX_RSA_BYTES: usize = 512;

/// The signed, unencrypted part of a wrapped chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrappedHeader {
    /// The sending user, as the sender claims it.
    pub sender_user: String,
    /// Fingerprint of the signing (sender) device key.
    pub sender_device: Fingerprint,
    /// Fingerprint of the device key the chain is encrypted to.
    pub recipient_device: Fingerprint,
    /// The conversation the chain is for.
    pub conversation: String,
    /// The chain id.
    pub chain_id: [u8; 16],
    /// First index the recipient can decrypt.
    pub start_index: u32,
}

impl WrappedHeader {
    fn write(&self, w: &mut Writer) -> Result<(), E2eError> {
        w.u8(E2E_VERSION);
        w.u8(KIND_WRAPPED_CHAIN);
        w.bytes16(self.sender_user.as_bytes(), "sender user")?;
        w.raw(self.sender_device.as_bytes());
        w.raw(self.recipient_device.as_bytes());
        w.bytes16(self.conversation.as_bytes(), "conversation")?;
        w.raw(&self.chain_id);
        w.u32(self.start_index);
        Ok(())
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, E2eError> {
        let version = r.u8("version")?;
        if version != E2E_VERSION {
            return Err(E2eError::UnsupportedVersion(version));
        }
        if r.u8("kind")? != KIND_WRAPPED_CHAIN {
            return Err(E2eError::Malformed("not a wrapped chain"));
        }
        Ok(WrappedHeader {
            sender_user: r.string("sender user")?,
            sender_device: Fingerprint::from_bytes(r.array("sender device")?),
            recipient_device: Fingerprint::from_bytes(r.array("recipient device")?),
            conversation: r.string("conversation")?,
            chain_id: r.array("chain id")?,
            start_index: r.u32("start index")?,
        })
    }
}

/// A chain state addressed to one recipient device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrappedChain {
    header: WrappedHeader,
    wrapped: Vec<u8>,
    signature: Vec<u8>,
}

impl WrappedChain {
    /// The header.
    pub fn header(&self) -> &WrappedHeader {
        &self.header
    }

    fn signed_bytes(header: &WrappedHeader, wrapped: &[u8]) -> Result<Vec<u8>, E2eError> {
        let mut w = Writer::default();
        header.write(&mut w)?;
        w.bytes16(wrapped, "wrapped key")?;
        Ok(w.into_vec())
    }

    /// The canonical binary encoding.
    pub fn encode(&self) -> Result<Vec<u8>, E2eError> {
        let mut out = Self::signed_bytes(&self.header, &self.wrapped)?;
        let mut w = Writer::default();
        w.bytes16(&self.signature, "signature")?;
        out.extend_from_slice(&w.into_vec());
        Ok(out)
    }

    /// Parses the canonical encoding; trailing bytes are an error.
    pub fn decode(bytes: &[u8]) -> Result<Self, E2eError> {
        let mut r = Reader::new(bytes);
        let header = WrappedHeader::read(&mut r)?;
        let wrapped = r.bytes16("wrapped key")?.to_vec();
        let signature = r.bytes16("signature")?.to_vec();
        for field in [&wrapped, &signature] {
            if field.is_empty() || field.len() > MAX_RSA_BYTES {
                return Err(E2eError::Malformed("RSA field length"));
            }
        }
        r.finish()?;
        Ok(WrappedChain {
            header,
            wrapped,
            signature,
        })
    }

    /// Standard base64 (with padding) of [`WrappedChain::encode`].
    pub fn to_base64(&self) -> Result<String, E2eError> {
        Ok(BASE64.encode(self.encode()?))
    }

    /// Inverse of [`WrappedChain::to_base64`].
    pub fn from_base64(text: &str) -> Result<Self, E2eError> {
        let bytes = BASE64
            .decode(text.trim())
            .map_err(|_| E2eError::Malformed("base64"))?;
        Self::decode(&bytes)
    }
}

/// Wraps `chain`'s current state for `recipient`, signed by `sender`.
pub fn wrap_chain(
    chain: &SenderChain,
    sender: &DeviceKey,
    sender_user: &str,
    conversation: &str,
    recipient: &DevicePublicKey,
) -> Result<WrappedChain, E2eError> {
    let snap = chain.snapshot();
    let header = WrappedHeader {
        sender_user: sender_user.to_owned(),
        sender_device: sender.fingerprint(),
        recipient_device: recipient.fingerprint(),
        conversation: conversation.to_owned(),
        chain_id: snap.chain_id,
        start_index: snap.index,
    };
    let mut payload = Zeroizing::new(Vec::with_capacity(PAYLOAD_LEN));
    payload.extend_from_slice(&snap.chain_id);
    payload.extend_from_slice(&snap.index.to_be_bytes());
    payload.extend_from_slice(&snap.chain_key);
    let wrapped = recipient.oaep_encrypt(&payload)?;
    let signature = sender.sign(&WrappedChain::signed_bytes(&header, &wrapped)?)?;
    Ok(WrappedChain {
        header,
        wrapped,
        signature,
    })
}

/// Verifies and unwraps a chain addressed to `me`.
///
/// Order: signature under `pinned_sender`, the header's sender fingerprint against that key,
/// the recipient fingerprint against `me`, OAEP decryption, then the payload against the header.
pub fn unwrap_chain(
    wrapped: &WrappedChain,
    pinned_sender: &DevicePublicKey,
    me: &DeviceKey,
) -> Result<ReceiverChain, E2eError> {
    let h = &wrapped.header;
    pinned_sender.verify(
        &WrappedChain::signed_bytes(h, &wrapped.wrapped)?,
        &wrapped.signature,
    )?;
    if h.sender_device != pinned_sender.fingerprint() {
        return Err(E2eError::WrongSender);
    }
    if h.recipient_device != me.fingerprint() {
        return Err(E2eError::WrongRecipient);
    }
    let payload = me.oaep_decrypt(&wrapped.wrapped)?;
    let mut r = Reader::new(&payload);
    let snap = ChainSnapshot {
        chain_id: r.array("wrapped chain id")?,
        index: r.u32("wrapped index")?,
        chain_key: r.array("wrapped chain key")?,
    };
    r.finish()?;
    if snap.chain_id != h.chain_id || snap.index != h.start_index {
        return Err(E2eError::Malformed("wrapped state disagrees with header"));
    }
    Ok(ReceiverChain::new(
        h.sender_user.clone(),
        h.sender_device,
        h.conversation.clone(),
        &snap,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::e2e::testkeys::{alice, bob, carol};
    use crate::e2e::{open, seal};

    #[test]
    fn wrap_unwrap_then_messages_flow() {
        let mut tx = SenderChain::new().unwrap();
        tx.next_message_key().unwrap();
        let w = wrap_chain(&tx, alice(), "alice", "all", &bob().public()).unwrap();
        assert_eq!(w.header().start_index, 1);
        let w = WrappedChain::from_base64(&w.to_base64().unwrap()).unwrap();
        let mut rx = unwrap_chain(&w, &alice().public(), bob()).unwrap();
        assert_eq!(rx.sender_user(), "alice");
        assert_eq!(rx.conversation(), "all");
        assert_eq!(rx.next_index(), 1);
        let env = seal(alice(), "alice", "all", &mut tx, "hello", 5).unwrap();
        let opened = open(&env, &alice().public(), &mut rx, 5, 0).unwrap();
        assert_eq!(opened.text, "hello");
    }

    #[test]
    fn unwrap_failures_are_distinct() {
        let tx = SenderChain::new().unwrap();
        let w = wrap_chain(&tx, alice(), "alice", "all", &bob().public()).unwrap();
        assert_eq!(
            unwrap_chain(&w, &carol().public(), bob()).unwrap_err(),
            E2eError::BadSignature
        );
        assert_eq!(
            unwrap_chain(&w, &alice().public(), carol()).unwrap_err(),
            E2eError::WrongRecipient
        );

        // Carol signs a wrap whose header claims Alice's device.
        let mut forged = wrap_chain(&tx, carol(), "alice", "all", &bob().public()).unwrap();
        forged.header.sender_device = alice().fingerprint();
        forged.signature = carol()
            .sign(&WrappedChain::signed_bytes(&forged.header, &forged.wrapped).unwrap())
            .unwrap();
        assert_eq!(
            unwrap_chain(&forged, &carol().public(), bob()).unwrap_err(),
            E2eError::WrongSender
        );

        // Signed, addressed to Bob, but the OAEP blob was made for Carol.
        let mut misdirected = wrap_chain(&tx, alice(), "alice", "all", &carol().public()).unwrap();
        misdirected.header.recipient_device = bob().fingerprint();
        misdirected.signature = alice()
            .sign(&WrappedChain::signed_bytes(&misdirected.header, &misdirected.wrapped).unwrap())
            .unwrap();
        assert_eq!(
            unwrap_chain(&misdirected, &alice().public(), bob()).unwrap_err(),
            E2eError::Unwrap
        );

        // Header start index disagrees with the encrypted state.
        let mut shifted = w.clone();
        shifted.header.start_index = 9;
        shifted.signature = alice()
            .sign(&WrappedChain::signed_bytes(&shifted.header, &shifted.wrapped).unwrap())
            .unwrap();
        assert_eq!(
            unwrap_chain(&shifted, &alice().public(), bob()).unwrap_err(),
            E2eError::Malformed("wrapped state disagrees with header")
        );

        let mut bytes = w.encode().unwrap();
        bytes[1] = 0x45;
        assert_eq!(
            WrappedChain::decode(&bytes),
            Err(E2eError::Malformed("not a wrapped chain"))
        );
    }
}
