//! A client's `vouch` frame: one of its user's device keys signs for another. Checked (the
//! signer is this session's own key, the vouched key is another registered key of the same
//! user, the signature verifies), stored, then sent to every session that asked for vouches.

use std::ops::ControlFlow;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use chatd_proto::ErrorCode;
use chatd_proto::e2e::{DevicePublicKey, Vouch};

use super::connection::{Connection, Ending};
use super::login::LoggedIn;
use crate::shared::Shared;

/// Why a vouch is refused (each a `bad_envelope` violation: a correct client never sends it).
fn check(login: &LoggedIn, shared: &Shared, data: &str) -> Result<(Vouch, Vec<u8>), String> {
    let bytes = BASE64
        .decode(data.trim())
        .map_err(|_| "vouch: not base64".to_string())?;
    let vouch = Vouch::decode(&bytes).map_err(|e| format!("vouch: {e}"))?;
    let body = vouch.body();
    if body.user != login.user {
        return Err("the vouch names another user than this session's".into());
    }
    if body.voucher != login.device {
        return Err("the vouch is not signed by this session's device key".into());
    }
    if body.vouched == login.device {
        return Err("a device key cannot vouch for itself".into());
    }
    if !shared.hub.has_device(&login.user, &body.vouched) {
        return Err(format!(
            "{} is not a registered device key of {}",
            body.vouched, login.user
        ));
    }
    let der = BASE64
        .decode(login.key.as_bytes())
        .map_err(|_| "this session's key is unreadable".to_string())?;
    let key = DevicePublicKey::from_spki_der(&der).map_err(|e| e.to_string())?;
    vouch
        .verify(&key)
        .map_err(|e| format!("the vouch's signature: {e}"))?;
    Ok((vouch, bytes))
}

/// Checks, stores and announces a vouch.
pub(super) async fn vouch(
    conn: &mut Connection,
    shared: &Shared,
    login: &LoggedIn,
    data: String,
) -> ControlFlow<Ending> {
    let (vouch, bytes) = match check(login, shared, &data) {
        Ok(ok) => ok,
        Err(why) => return conn.violation(ErrorCode::BadEnvelope, why),
    };
    let data = BASE64.encode(&bytes);
    let stored = shared
        .store
        .put_vouch(
            &login.user,
            vouch.body().vouched.as_bytes(),
            login.device.as_bytes(),
            &bytes,
        )
        .await;
    match stored {
        Ok(true) => {
            if shared
                .hub
                .add_vouch(&login.user, &vouch.body().vouched, &login.device, data)
            {
                tracing::info!(vouched = ?vouch.body().vouched, "device vouch stored");
            }
        }
        // Revoked between the check and the write.
        Ok(false) => conn.error(
            ErrorCode::BadEnvelope,
            format!(
                "{} is not a registered device key of {}",
                vouch.body().vouched,
                login.user
            ),
        ),
        Err(e) => {
            tracing::error!(error = %e, "cannot store a device vouch");
            conn.error(ErrorCode::Internal, "the vouch could not be stored");
        }
    }
    ControlFlow::Continue(())
}
