//! Device vouches: one device of a user signs that another device key of the same user is theirs.
//!
//! ```text
//! u8 version=1 | u8 kind=0x56 'V' | u16+ user | [32] voucher device fp | [32] vouched device fp
//! | u64 timestamp ms | u8 has_code (0/1) [| [32] code MAC]
//! u16+ signature    RSA-PSS-SHA256 by the voucher device over every byte before this field
//! ```
//!
//! The code MAC is HMAC-SHA256 keyed with the new device's link secret (the part of the code it
//! shows its owner) over `"chatd link v1" || user || voucher fp || vouched fp`: it proves to the
//! new device that the voucher saw its code, so the new device can trust the voucher in return.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use super::wire::{Reader, Writer};
use super::{DeviceKey, DevicePublicKey, E2E_VERSION, E2eError};
use crate::Fingerprint;

/// Kind byte of a device vouch (ASCII `V`).
pub const KIND_VOUCH: u8 = 0x56;
/// Domain separation for the code MAC.
const LINK_LABEL: &[u8] = b"chatd link v1";
/// Largest RSA signature accepted (RSA-4096).
const MAX_SIGNATURE_BYTES: usize = 512;

/// The signed statement of a vouch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VouchBody {
    /// The user both devices belong to.
    pub user: String,
    /// The signing device.
    pub voucher: Fingerprint,
    /// The device vouched for.
    pub vouched: Fingerprint,
    /// When the voucher signed it, ms since the Unix epoch (voucher's clock).
    pub timestamp_ms: u64,
    /// HMAC of the vouched device's link secret (see [`code_mac`]), when the voucher had the code.
    pub code_mac: Option<[u8; 32]>,
}

impl VouchBody {
    fn write(&self, w: &mut Writer) -> Result<(), E2eError> {
        w.u8(E2E_VERSION);
        w.u8(KIND_VOUCH);
        w.bytes16(self.user.as_bytes(), "user")?;
        w.raw(self.voucher.as_bytes());
        w.raw(self.vouched.as_bytes());
        w.u64(self.timestamp_ms);
        match &self.code_mac {
            None => w.u8(0),
            Some(mac) => {
                w.u8(1);
                w.raw(mac);
            }
        }
        Ok(())
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, E2eError> {
        let version = r.u8("version")?;
        if version != E2E_VERSION {
            return Err(E2eError::UnsupportedVersion(version));
        }
        if r.u8("kind")? != KIND_VOUCH {
            return Err(E2eError::Malformed("not a device vouch"));
        }
        let user = r.string("user")?;
        let voucher = Fingerprint::from_bytes(r.array("voucher device")?);
        let vouched = Fingerprint::from_bytes(r.array("vouched device")?);
        let timestamp_ms = r.u64("timestamp")?;
        let code_mac = match r.u8("has_code")? {
            0 => None,
            1 => Some(r.array("code MAC")?),
            _ => return Err(E2eError::Malformed("has_code")),
        };
        Ok(VouchBody {
            user,
            voucher,
            vouched,
            timestamp_ms,
            code_mac,
        })
    }

    fn signed_bytes(&self) -> Result<Vec<u8>, E2eError> {
        let mut w = Writer::default();
        self.write(&mut w)?;
        Ok(w.into_vec())
    }
}

/// A signed device vouch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vouch {
    body: VouchBody,
    signature: Vec<u8>,
}

/// HMAC-SHA256(key = link secret, msg = "chatd link v1" || user || voucher fp || vouched fp).
pub fn code_mac(
    link_secret: &[u8],
    user: &str,
    voucher: &Fingerprint,
    vouched: &Fingerprint,
) -> Result<[u8; 32], E2eError> {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(link_secret)
        .map_err(|_| E2eError::Malformed("link secret"))?;
    mac.update(LINK_LABEL);
    mac.update(user.as_bytes());
    mac.update(voucher.as_bytes());
    mac.update(vouched.as_bytes());
    Ok(mac.finalize().into_bytes().into())
}

impl Vouch {
    /// `voucher` signs that `vouched` is a device of `user`; with `link_secret` (from the code
    /// the vouched device showed) the vouch carries the code MAC.
    pub fn sign(
        voucher: &DeviceKey,
        user: &str,
        vouched: Fingerprint,
        timestamp_ms: u64,
        link_secret: Option<&[u8]>,
    ) -> Result<Self, E2eError> {
        let voucher_fp = voucher.fingerprint();
        let code_mac = match link_secret {
            Some(secret) => Some(code_mac(secret, user, &voucher_fp, &vouched)?),
            None => None,
        };
        let body = VouchBody {
            user: user.to_owned(),
            voucher: voucher_fp,
            vouched,
            timestamp_ms,
            code_mac,
        };
        let signature = voucher.sign(&body.signed_bytes()?)?;
        Ok(Vouch { body, signature })
    }

    /// The signed statement (not yet verified: see [`Vouch::verify`]).
    pub fn body(&self) -> &VouchBody {
        &self.body
    }

    /// Checks the signature under `voucher_key` and that the body names that key as voucher.
    /// The caller still checks the user and the vouched device against what it expects.
    pub fn verify(&self, voucher_key: &DevicePublicKey) -> Result<(), E2eError> {
        voucher_key.verify(&self.body.signed_bytes()?, &self.signature)?;
        if self.body.voucher != voucher_key.fingerprint() {
            return Err(E2eError::WrongSender);
        }
        Ok(())
    }

    /// Whether the vouch carries a code MAC made with `link_secret` (constant-time compare).
    pub fn code_matches(&self, link_secret: &[u8]) -> bool {
        let Some(mac) = &self.body.code_mac else {
            return false;
        };
        let Ok(mut check) = <Hmac<Sha256> as KeyInit>::new_from_slice(link_secret) else {
            return false;
        };
        check.update(LINK_LABEL);
        check.update(self.body.user.as_bytes());
        check.update(self.body.voucher.as_bytes());
        check.update(self.body.vouched.as_bytes());
        check.verify_slice(mac).is_ok()
    }

    /// The canonical binary encoding.
    pub fn encode(&self) -> Result<Vec<u8>, E2eError> {
        let mut w = Writer::default();
        self.body.write(&mut w)?;
        w.bytes16(&self.signature, "signature")?;
        Ok(w.into_vec())
    }

    /// Parses the canonical encoding; trailing bytes are an error.
    pub fn decode(bytes: &[u8]) -> Result<Self, E2eError> {
        let mut r = Reader::new(bytes);
        let body = VouchBody::read(&mut r)?;
        let signature = r.bytes16("signature")?.to_vec();
        if signature.is_empty() || signature.len() > MAX_SIGNATURE_BYTES {
            return Err(E2eError::Malformed("RSA field length"));
        }
        r.finish()?;
        Ok(Vouch { body, signature })
    }

    /// Standard base64 (with padding) of [`Vouch::encode`].
    pub fn to_base64(&self) -> Result<String, E2eError> {
        Ok(BASE64.encode(self.encode()?))
    }

    /// Inverse of [`Vouch::to_base64`].
    pub fn from_base64(text: &str) -> Result<Self, E2eError> {
        let bytes = BASE64
            .decode(text.trim())
            .map_err(|_| E2eError::Malformed("base64"))?;
        Self::decode(&bytes)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::e2e::testkeys::{alice, bob, carol};

    const SECRET: &[u8] = b"ABCDEFGHJK";

    fn resign(v: &mut Vouch, key: &DeviceKey) {
        v.signature = key.sign(&v.body.signed_bytes().unwrap()).unwrap();
    }

    #[test]
    fn sign_encode_decode_verify() {
        let v = Vouch::sign(alice(), "alice", bob().fingerprint(), 7, Some(SECRET)).unwrap();
        let back = Vouch::from_base64(&v.to_base64().unwrap()).unwrap();
        assert_eq!(back, v);
        back.verify(&alice().public()).unwrap();
        assert_eq!(back.body().user, "alice");
        assert_eq!(back.body().voucher, alice().fingerprint());
        assert_eq!(back.body().vouched, bob().fingerprint());
        assert_eq!(back.body().timestamp_ms, 7);
        assert!(back.code_matches(SECRET));
        assert!(!back.code_matches(b"ABCDEFGHJL"));

        let plain = Vouch::sign(alice(), "alice", bob().fingerprint(), 7, None).unwrap();
        assert!(!plain.code_matches(SECRET));
        assert_eq!(plain.encode().unwrap()[2 + 2 + 5 + 64 + 8], 0);
    }

    #[test]
    fn forgeries_are_refused() {
        let v = Vouch::sign(alice(), "alice", bob().fingerprint(), 7, None).unwrap();
        // Wrong key.
        assert_eq!(v.verify(&carol().public()), Err(E2eError::BadSignature));
        // Carol signs a vouch that claims Alice's device as voucher.
        let mut forged = v.clone();
        resign(&mut forged, carol());
        assert_eq!(forged.verify(&carol().public()), Err(E2eError::WrongSender));
        // Any change to the signed body breaks the signature: user, vouched device, time, code.
        let mut other_user = v.clone();
        other_user.body.user = "mallory".into();
        assert_eq!(
            other_user.verify(&alice().public()),
            Err(E2eError::BadSignature)
        );
        let mut replayed = v.clone();
        replayed.body.vouched = carol().fingerprint();
        assert_eq!(
            replayed.verify(&alice().public()),
            Err(E2eError::BadSignature)
        );
        let mut with_code = v.clone();
        with_code.body.code_mac = Some([0; 32]);
        assert_eq!(
            with_code.verify(&alice().public()),
            Err(E2eError::BadSignature)
        );
        // A MAC made for one device does not match a vouch for another.
        let mut moved =
            Vouch::sign(alice(), "alice", bob().fingerprint(), 7, Some(SECRET)).unwrap();
        moved.body.vouched = carol().fingerprint();
        resign(&mut moved, alice());
        moved.verify(&alice().public()).unwrap();
        assert!(!moved.code_matches(SECRET));
    }

    #[test]
    fn decoding_is_strict() {
        let v = Vouch::sign(alice(), "alice", bob().fingerprint(), 7, Some(SECRET)).unwrap();
        let bytes = v.encode().unwrap();
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert_eq!(
            Vouch::decode(&trailing),
            Err(E2eError::Malformed("trailing bytes"))
        );
        let mut kind = bytes.clone();
        kind[1] = 0x57;
        assert_eq!(
            Vouch::decode(&kind),
            Err(E2eError::Malformed("not a device vouch"))
        );
        let mut version = bytes.clone();
        version[0] = 2;
        assert_eq!(
            Vouch::decode(&version),
            Err(E2eError::UnsupportedVersion(2))
        );
        let mut flag = bytes.clone();
        flag[2 + 2 + 5 + 64 + 8] = 2;
        assert_eq!(Vouch::decode(&flag), Err(E2eError::Malformed("has_code")));
        for cut in 0..bytes.len() {
            assert!(Vouch::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        assert!(Vouch::from_base64("not base64!").is_err());
    }

    #[test]
    fn code_mac_vector() {
        // HMAC-SHA256 over the documented message; pinned so an independent client can check.
        let voucher = Fingerprint::from_bytes([1; 32]);
        let vouched = Fingerprint::from_bytes([2; 32]);
        let mac = code_mac(SECRET, "bob", &voucher, &vouched).unwrap();
        // python3: hmac.new(b"ABCDEFGHJK", b"chatd link v1bob" + bytes([1]*32) + bytes([2]*32),
        //                   hashlib.sha256).hexdigest()
        let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "fe443ff9dd5f3979c0cb70ff9b8223b0f8887ee84371236dd43fbe14bf1a3a9d"
        );
    }

    #[test]
    fn signed_bytes_vector() {
        // The layout of E2E-ENVELOPE.md ("Device vouch"), pinned: user bob, voucher 01 x 32,
        // vouched 02 x 32, timestamp 1764327600000, with and without the code MAC above.
        let mut body = VouchBody {
            user: "bob".into(),
            voucher: Fingerprint::from_bytes([1; 32]),
            vouched: Fingerprint::from_bytes([2; 32]),
            timestamp_ms: 1_764_327_600_000,
            code_mac: None,
        };
        let hex = |b: Vec<u8>| -> String { b.iter().map(|b| format!("{b:02x}")).collect() };
        let head = format!(
            "01560003626f62{}{}0000019aca1eaf80",
            "01".repeat(32),
            "02".repeat(32)
        );
        assert_eq!(hex(body.signed_bytes().unwrap()), format!("{head}00"));
        body.code_mac = Some(code_mac(SECRET, "bob", &body.voucher, &body.vouched).unwrap());
        assert_eq!(
            hex(body.signed_bytes().unwrap()),
            format!("{head}01fe443ff9dd5f3979c0cb70ff9b8223b0f8887ee84371236dd43fbe14bf1a3a9d")
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = Vouch::decode(&bytes);
        }

        #[test]
        fn bodies_round_trip(user in "[a-z]{1,32}", ts in any::<u64>(), code in any::<Option<[u8; 32]>>()) {
            let v = Vouch {
                body: VouchBody {
                    user,
                    voucher: Fingerprint::from_bytes([3; 32]),
                    vouched: Fingerprint::from_bytes([4; 32]),
                    timestamp_ms: ts,
                    code_mac: code,
                },
                signature: vec![9; 256],
            };
            prop_assert_eq!(Vouch::decode(&v.encode().unwrap()).unwrap(), v);
        }
    }
}
