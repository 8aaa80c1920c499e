//! The login state machine: `hello` (protocol version, binary frames, a login challenge), then
//! `login` with a password checked by argon2id behind the login throttle, and the device key
//! recorded. A `login` whose proof (a signature over the challenge) verifies under a device key
//! the account already registered skips the per-account wait and is hashed first, so guesses
//! at the account from elsewhere cannot keep its owner out.

use std::ops::ControlFlow;
use std::sync::Arc;

use base64::Engine;
use chatd_proto::Fingerprint;
use chatd_proto::e2e::{CHALLENGE_BYTES, DevicePublicKey, LoginChallenge};
use chatd_proto::frame::{
    ClientFrame, FEATURE_KEYPROOF, FEATURE_REKEY, FEATURE_VOUCH, ServerFrame,
};
use chatd_proto::{ErrorCode, PROTOCOL_VERSION};

use super::connection::{Connection, Ending, Incoming};
use crate::commands::Role;
use crate::metrics::LoginResult;
use crate::password::Lane;
use crate::shared::Shared;
use crate::store::KeyCheck;
use crate::throttle::Throttled;

/// Who a session logged in as.
pub(super) struct LoggedIn {
    pub(super) user: String,
    pub(super) role: Role,
    pub(super) device: Fingerprint,
    /// Base64 SPKI DER, as the client sent it (and as peers will receive it).
    pub(super) key: Arc<str>,
    /// The client asked for binary envelope frames in its `hello` (and was told yes).
    pub(super) binary: bool,
    /// The client asked for the `vouch` feature in its `hello` (and was told yes).
    pub(super) vouch: bool,
    /// The client asked for the `rekey` feature in its `hello` (and was told yes).
    pub(super) rekey: bool,
}

/// Where a connection is in `hello` then `login`.
struct Login<'a> {
    conn: &'a mut Connection,
    shared: &'a Shared,
    hello_done: bool,
    binary: bool,
    vouch: bool,
    rekey: bool,
    /// The random bytes of our `hello` when the client asked for `keyproof`; one per
    /// connection, so a proof cannot be replayed on another.
    challenge: Option<[u8; CHALLENGE_BYTES]>,
    failures: u32,
}

/// `hello` then `login`; the account on success, or how the connection ends.
pub(super) async fn login(conn: &mut Connection, shared: &Shared) -> Result<LoggedIn, Ending> {
    let mut login = Login {
        conn,
        shared,
        hello_done: false,
        binary: false,
        vouch: false,
        rekey: false,
        challenge: None,
        failures: 0,
    };
    loop {
        if let ControlFlow::Break(done) = login.step().await {
            return done;
        }
    }
}

impl Login<'_> {
    /// Handles the next frame; Break with the outcome once there is one.
    async fn step(&mut self) -> ControlFlow<Result<LoggedIn, Ending>> {
        let frame = match self.conn.next_frame().await {
            Ok(Incoming::Frame(frame)) => frame,
            Ok(Incoming::Envelope(_)) => {
                return self.violation("log in before sending send".into());
            }
            Err(ending) => return ControlFlow::Break(Err(ending)),
        };
        match frame {
            ClientFrame::Hello {
                version,
                client,
                binary,
                features,
            } => self.hello(version, &client, binary, &features),
            ClientFrame::Login {
                user,
                password,
                device_key,
                proof,
            } => {
                if !self.hello_done {
                    return self.violation("send hello first".into());
                }
                let started = std::time::Instant::now();
                let (login, result) = match self.parse_device_key(&device_key) {
                    Some(key) => {
                        let proven = self.proven(&user, &key, proof.as_deref());
                        self.check_login(user, password, key, proven).await
                    }
                    None => (None, LoginResult::BadDeviceKey),
                };
                crate::metrics::get().login(result, started);
                if let Some(login) = login {
                    return ControlFlow::Break(Ok(login));
                }
                if self.failures >= self.shared.config.limits.max_login_failures.get() {
                    return ControlFlow::Break(Err(Ending::both("too many failed logins")));
                }
                ControlFlow::Continue(())
            }
            ClientFrame::Ping { nonce } => {
                self.conn.send(&ServerFrame::Pong { nonce });
                ControlFlow::Continue(())
            }
            ClientFrame::Quit => ControlFlow::Break(Err(Ending::both("quit"))),
            other => self.violation(format!("log in before sending {}", other.kind())),
        }
    }

    /// A frame that needs a login first: counted as a protocol violation.
    fn violation(&mut self, message: String) -> ControlFlow<Result<LoggedIn, Ending>> {
        self.conn
            .violation(ErrorCode::NotLoggedIn, message)
            .map_break(Err)
    }

    /// Answers `hello`: the protocol version, the limits and whether binary frames are on.
    fn hello(
        &mut self,
        version: u32,
        client: &str,
        binary: bool,
        features: &[String],
    ) -> ControlFlow<Result<LoggedIn, Ending>> {
        if self.hello_done {
            self.conn
                .error(ErrorCode::AlreadyLoggedIn, "hello was already sent");
            return ControlFlow::Continue(());
        }
        if version != PROTOCOL_VERSION {
            self.conn.error(
                ErrorCode::UnsupportedVersion,
                format!("this server speaks protocol version {PROTOCOL_VERSION}, not {version}"),
            );
            return ControlFlow::Break(Err(Ending::both("unsupported protocol version")));
        }
        // Escaped like the login name: an unauthenticated peer must not forge log lines.
        let shown: String = client.chars().take(64).collect();
        tracing::debug!(client = ?shown, "hello");
        self.hello_done = true;
        self.binary = binary;
        // Of the features asked for, the ones this server has (unknown ones are ignored).
        self.vouch = features.iter().any(|f| f == FEATURE_VOUCH);
        self.rekey = features.iter().any(|f| f == FEATURE_REKEY);
        let keyproof = features.iter().any(|f| f == FEATURE_KEYPROOF);
        let mut challenge = [0u8; CHALLENGE_BYTES];
        // Without randomness there is no challenge: the client logs in as an old one would.
        self.challenge = (keyproof && getrandom::fill(&mut challenge).is_ok()).then_some(challenge);
        let features = [
            (self.vouch, FEATURE_VOUCH),
            (self.rekey, FEATURE_REKEY),
            (self.challenge.is_some(), FEATURE_KEYPROOF),
        ]
        .into_iter()
        .filter(|(asked, _)| *asked)
        .map(|(_, name)| name.to_string())
        .collect();
        let limits = &self.shared.config.limits;
        self.conn.send(&ServerFrame::Hello {
            version: PROTOCOL_VERSION,
            server: format!("chatd/{}", env!("CARGO_PKG_VERSION")),
            max_line_bytes: limits.max_line_bytes.get(),
            max_text_bytes: limits.max_text_bytes.get(),
            idle_timeout_secs: limits.idle_timeout_secs.get(),
            binary,
            offline_ttl_secs: Some(limits.offline_ttl_secs.get()),
            features,
            challenge: self
                .challenge
                .map(|c| base64::engine::general_purpose::STANDARD.encode(c)),
        });
        ControlFlow::Continue(())
    }

    /// Reads the login's device key; answers `bad_device_key` when it is not usable.
    fn parse_device_key(&mut self, b64: &str) -> Option<DevicePublicKey> {
        let parsed = base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .map_err(|_| "not base64".to_string())
            .and_then(|der| DevicePublicKey::from_spki_der(&der).map_err(|e| e.to_string()));
        match parsed {
            Ok(key) => Some(key),
            Err(why) => {
                self.failures += 1;
                self.conn.error(
                    ErrorCode::BadDeviceKey,
                    format!("device_key must be base64 SPKI DER of an RSA 2048, 3072 or 4096-bit key: {why}"),
                );
                None
            }
        }
    }

    /// Whether `proof` signs this connection's challenge for `user` and this server with `key`,
    /// and `key` is one of `user`'s registered, unrevoked device keys. Anything else (no
    /// challenge asked for, no proof, a bad one, an unknown key) is an ordinary login.
    fn proven(&self, user: &str, key: &DevicePublicKey, proof: Option<&str>) -> bool {
        let (Some(challenge), Some(proof)) = (self.challenge.as_ref(), proof) else {
            return false;
        };
        let Ok(signature) = base64::engine::general_purpose::STANDARD.decode(proof.trim()) else {
            tracing::debug!(peer = %self.conn.peer(), "login proof is not base64");
            return false;
        };
        // The certificate in force now: a reload between the handshake and this login makes
        // the proof fail, and the login is an ordinary one.
        let server = self.shared.identity.fingerprint;
        let signed = LoginChallenge {
            challenge,
            user,
            server: &server,
        };
        if signed.verify(key, &signature).is_err() {
            tracing::debug!(peer = %self.conn.peer(), device = %key.fingerprint(), "login proof does not verify");
            return false;
        }
        self.shared.hub.has_device(user, &key.fingerprint())
    }

    /// Verifies a password; unknown, locked and wrong all look the same to the client.
    /// Then registers the device key (or refuses a revoked one, or one too many). A `proven`
    /// login skips the account's wait (not the address's) and is hashed first.
    async fn check_login(
        &mut self,
        user: String,
        password: String,
        key: DevicePublicKey,
        proven: bool,
    ) -> (Option<LoggedIn>, LoginResult) {
        let valid_name = chatd_proto::names::validate_username(&user).is_ok();
        let shown: String = user.chars().take(40).collect();
        let ip = self.conn.peer().ip();
        let account = (valid_name && !proven).then_some(user.as_str());
        // Before any password work: a throttled guesser costs no argon2 time. With the counts
        // in PostgreSQL, a check the database cannot answer refuses the login (fail closed:
        // guesses are never let through uncounted), as reading the account would anyway.
        let throttled = match self.shared.throttle.check(ip, account).await {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(error = %e, "login: database error checking the login throttle");
                self.conn.error(
                    ErrorCode::Internal,
                    "the server could not check your login; try again later",
                );
                return (None, LoginResult::Error);
            }
        };
        if let Some(wait) = throttled {
            self.failures += 1;
            let (whom, left) = match wait {
                Throttled::Address(d) => ("from your address", d),
                Throttled::Account(d) => ("for this account", d),
            };
            let secs = left.as_secs().max(1);
            tracing::warn!(peer = %self.conn.peer(), user = ?shown, wait_secs = secs, "login throttled {whom}");
            self.conn.error(
                ErrorCode::RateLimited,
                format!("too many failed logins {whom}; try again in {secs} s"),
            );
            return (None, LoginResult::Throttled);
        }
        let creds = if valid_name {
            match self.shared.store.credentials(&user).await {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(error = %e, "login: database error");
                    self.conn.error(
                        ErrorCode::Internal,
                        "the server could not check your login; try again later",
                    );
                    return (None, LoginResult::Error);
                }
            }
        } else {
            None
        };
        // Always run argon2 so that timing does not reveal which accounts exist.
        let hash = creds.as_ref().map_or_else(
            || crate::password::DUMMY_HASH.to_string(),
            |c| c.password_hash.clone(),
        );
        let lane = if proven { Lane::First } else { Lane::Rest };
        let matches = crate::password::verify_in(lane, password, hash).await;
        match creds {
            Some(c) if matches && !c.locked => {
                let account = (!proven).then_some(user.as_str());
                if let Err(e) = self.shared.throttle.succeeded(ip, account).await {
                    // The counts stay until forgotten; only more failures would make them count.
                    tracing::warn!(error = %e, "login: cannot clear the login throttle's counts");
                }
                if proven {
                    tracing::debug!(device = %key.fingerprint(), "login proven by its device key");
                }
                if let Some(left) = c.ban_left(crate::store::now_secs()) {
                    self.banned(&shown, left, c.banned_until.unwrap_or_default());
                    return (None, LoginResult::Refused);
                }
                let role = if c.admin { Role::Admin } else { Role::User };
                self.register_key(user, role, key).await
            }
            other => {
                self.failures += 1;
                let counted = self
                    .shared
                    .throttle
                    .failed(ip, valid_name.then_some(user.as_str()))
                    .await;
                if let Err(e) = counted {
                    // This attempt is refused all the same, and the next one's check needs
                    // the database too, so guessing stops while it is unreachable.
                    tracing::error!(error = %e, "login: cannot count a failed login in the throttle");
                }
                let why = match other {
                    None => "unknown user",
                    Some(c) if c.locked => "account locked",
                    Some(_) => "wrong password",
                };
                tracing::warn!(peer = %self.conn.peer(), user = ?shown, why, "login failed");
                self.conn
                    .error(ErrorCode::InvalidCredentials, "invalid credentials");
                (None, LoginResult::BadCredentials)
            }
        }
    }

    /// Refuses a login with the right password to a banned account (`chatctl kick --ban`),
    /// saying until when: the password was right, so the time left reveals nothing.
    fn banned(&mut self, shown: &str, left: u64, until: i64) {
        self.failures += 1;
        tracing::warn!(peer = %self.conn.peer(), user = ?shown, left_secs = left, "login refused: account banned");
        self.conn.error(
            ErrorCode::Refused,
            format!(
                "this account is banned by an administrator until {} UTC ({} left)",
                chatd_proto::time::format_utc(until.max(0) as u64),
                chatd_proto::time::format_uptime(left)
            ),
        );
    }

    /// Records the device key for a user whose password was right.
    async fn register_key(
        &mut self,
        user: String,
        role: Role,
        key: DevicePublicKey,
    ) -> (Option<LoggedIn>, LoginResult) {
        let device = key.fingerprint();
        let max = self.shared.config.limits.max_devices_per_user.get();
        let (der, bits) = (key.to_spki_der(), key.bits() as u32);
        let check = self
            .shared
            .store
            .check_and_register(&user, device.as_bytes(), der, bits, max)
            .await;
        match check {
            Ok(KeyCheck::Known) => {}
            Ok(KeyCheck::Registered) => {
                tracing::info!(user = ?user, %device, bits, "registered a new device key");
            }
            Ok(KeyCheck::Revoked) => {
                tracing::warn!(peer = %self.conn.peer(), user = ?user, %device, "login with a revoked device key");
                self.failures += 1;
                self.conn.error(
                    ErrorCode::KeyRevoked,
                    format!("device key {device} was revoked by an administrator; this device needs a new key"),
                );
                return (None, LoginResult::BadDeviceKey);
            }
            Ok(KeyCheck::TooMany) => {
                tracing::warn!(user = ?user, %device, max, "device key refused: too many devices");
                self.conn.error(
                    ErrorCode::TooManyDevices,
                    format!("{user} already has {max} device keys; an administrator must revoke one (chatctl key revoke)"),
                );
                return (None, LoginResult::BadDeviceKey);
            }
            Err(e) => {
                tracing::error!(error = %e, "login: cannot record the device key");
                let message = if e.unavailable().is_some() {
                    "the server's storage is full or busy: your device key could not be recorded; try again later"
                } else {
                    "the server could not record your device key; try again later"
                };
                self.conn.error(ErrorCode::Internal, message);
                return (None, LoginResult::Error);
            }
        }
        // Re-encoded from the parsed key, so every peer gets the canonical DER.
        let key_b64 = base64::engine::general_purpose::STANDARD.encode(key.to_spki_der());
        let logged_in = LoggedIn {
            user,
            role,
            device,
            key: Arc::from(key_b64),
            binary: self.binary,
            vouch: self.vouch,
            rekey: self.rekey,
        };
        (Some(logged_in), LoginResult::Ok)
    }
}
