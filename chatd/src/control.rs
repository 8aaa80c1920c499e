//! The admin control socket: JSON lines over a Unix socket, for `chatctl`.
//!
//! The first act on each connection is an SO_PEERCRED check: root, chatd's own user, or a
//! member of the admin group. Every change is committed (WAL, synchronous=FULL) before
//! the answer is written, so "done" means durable.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chatd_proto::control::{
    ControlErrorCode, ControlRequest, ControlResponse, KeyInfo, MAX_BAN_SECS, MAX_CONTROL_LINE,
    NodeInfo, StatusInfo, UserInfo,
};
use chatd_proto::{Fingerprint, LineCodec, LineError, frame};
use futures_util::StreamExt;
use nix::unistd::{Gid, Uid};
use tokio::io::AsyncWriteExt;
use tokio::net::{UnixListener, UnixStream};
use tracing::Instrument;

use crate::password::{self, PasswordError};
use crate::shared::Shared;
use crate::store::{StoreError, Unavailable};

/// An idle control connection is closed after this long.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// The control socket could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// Another process answers on the socket path.
    #[error("another chatd is already listening on the control socket {0}")]
    InUse(PathBuf),
    /// Binding or preparing the socket failed.
    #[error("cannot create control socket {path}: {source}")]
    Io {
        /// Socket path.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
}

/// A bound control socket; removes its file when dropped (unless systemd made it).
pub struct ControlListener {
    listener: UnixListener,
    path: PathBuf,
    /// False for a socket from socket activation: systemd owns the file.
    owned: bool,
}

impl Drop for ControlListener {
    fn drop(&mut self) {
        if self.owned {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

impl ControlListener {
    /// Binds `path` (mode 0660, group `admin_gid` when possible), replacing a stale socket file.
    pub fn bind(path: &Path, admin_gid: Option<Gid>) -> Result<Self, ControlError> {
        use std::os::unix::fs::{FileTypeExt, PermissionsExt};
        let io = |source| ControlError::Io {
            path: path.to_path_buf(),
            source,
        };
        if let Ok(meta) = std::fs::symlink_metadata(path) {
            if !meta.file_type().is_socket() {
                return Err(io(std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    "a file that is not a socket is in the way",
                )));
            }
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(ControlError::InUse(path.to_path_buf()));
            }
            std::fs::remove_file(path).map_err(io)?;
        }
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        let listener = UnixListener::bind(path).map_err(io)?;
        let this = ControlListener {
            listener,
            path: path.to_path_buf(),
            owned: true,
        };
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(io)?;
        give_to_admins(path, admin_gid);
        Ok(this)
    }

    /// Serves a socket systemd bound (`chatd.socket`); its mode is the socket unit's
    /// (`SocketMode=`). Its group is set to `admin_gid` again, since starting the service chowns
    /// everything in `RuntimeDirectory=` to chatd's own group. `configured` is only compared,
    /// for a warning.
    pub fn activated(
        listener: std::os::unix::net::UnixListener,
        configured: &Path,
        admin_gid: Option<Gid>,
    ) -> Result<Self, ControlError> {
        let io = |source| ControlError::Io {
            path: configured.to_path_buf(),
            source,
        };
        let path = listener
            .local_addr()
            .ok()
            .and_then(|a| a.as_pathname().map(Path::to_path_buf))
            .unwrap_or_else(|| configured.to_path_buf());
        if path != configured {
            tracing::warn!(
                passed = %path.display(),
                configured = %configured.display(),
                "the control socket systemd passed is not server.control_socket; chatctl needs --socket"
            );
        }
        give_to_admins(&path, admin_gid);
        listener.set_nonblocking(true).map_err(io)?;
        let listener = UnixListener::from_std(listener).map_err(io)?;
        Ok(ControlListener {
            listener,
            path,
            owned: false,
        })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Accepts connections until shutdown.
    pub async fn run(self, shared: Arc<Shared>) {
        loop {
            tokio::select! {
                res = self.listener.accept() => match res {
                    Ok((stream, _)) => {
                        // Looked at per connection: a socket file whose mode was loosened
                        // after start no longer proves membership, so chatd checks again.
                        let kernel_checked = admins_only(&self.path, shared.admin_gid);
                        let shared = Arc::clone(&shared);
                        shared.tracker.clone().spawn(
                            handle_connection(stream, shared, kernel_checked).instrument(tracing::info_span!("control")),
                        );
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "control socket accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                _ = shared.shutdown.cancelled() => break,
            }
        }
    }
}

fn give_to_admins(path: &Path, admin_gid: Option<Gid>) {
    if let Some(gid) = admin_gid {
        if let Err(e) = nix::unistd::chown(path, None, Some(gid)) {
            tracing::warn!(error = %e, "cannot give the control socket to the admin group; only root and chatd's user can use it");
        }
    }
}

/// True when the socket file lets only its owner (chatd) and the admin group connect: then
/// connect() itself proved membership, supplementary groups included. That matters under
/// systemd's ProtectProc=invisible, which hides other users' /proc entries from chatd.
fn admins_only(path: &Path, admin_gid: Option<Gid>) -> bool {
    use std::os::unix::fs::MetadataExt;
    let (Some(admin), Ok(meta)) = (admin_gid, std::fs::metadata(path)) else {
        return false;
    };
    meta.gid() == admin.as_raw() && meta.mode() & 0o007 == 0
}

/// True if the peer may administer chatd.
fn authorized(uid: u32, gid: u32, pid: Option<i32>, admin_gid: Option<Gid>) -> bool {
    if uid == 0 || Uid::from_raw(uid) == nix::unistd::geteuid() {
        return true;
    }
    let Some(admin) = admin_gid else { return false };
    if gid == admin.as_raw() {
        return true;
    }
    // SO_PEERCRED carries only the primary group; supplementary groups come from /proc.
    pid.and_then(|pid| std::fs::read_to_string(format!("/proc/{pid}/status")).ok())
        .is_some_and(|status| supplementary_groups(&status).contains(&admin.as_raw()))
}

fn supplementary_groups(status: &str) -> Vec<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Groups:"))
        .map(|g| {
            g.split_whitespace()
                .filter_map(|n| n.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

async fn write_response(stream: &mut UnixStream, resp: &ControlResponse) -> bool {
    match frame::encode(resp) {
        Ok(line) => stream.write_all(&line).await.is_ok(),
        Err(e) => {
            tracing::error!(error = %e, "cannot serialize control response");
            false
        }
    }
}

fn error(code: ControlErrorCode, message: impl Into<String>) -> ControlResponse {
    ControlResponse::Error {
        code,
        message: message.into(),
    }
}

async fn handle_connection(mut stream: UnixStream, shared: Arc<Shared>, kernel_checked: bool) {
    let cred = match stream.peer_cred() {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read control peer credentials");
            return;
        }
    };
    if !kernel_checked && !authorized(cred.uid(), cred.gid(), cred.pid(), shared.admin_gid) {
        tracing::warn!(uid = cred.uid(), pid = ?cred.pid(), "control socket: permission denied");
        // Say who may, so the admin who reads it knows what to change (not why this peer is
        // not among them: the peer learns nothing it could not read from the group file).
        let group = &shared.config.get().server.admin_group;
        let message = format!(
            "permission denied: the control socket is for root, chatd's own user and \
             members of the group {group:?} (sudo usermod -aG {group} USER, then log in again)"
        );
        let _ = write_response(
            &mut stream,
            &error(ControlErrorCode::PermissionDenied, message),
        )
        .await;
        return;
    }
    let (r, mut w) = stream.into_split();
    let mut lines = tokio_util::codec::FramedRead::new(r, LineCodec::new(MAX_CONTROL_LINE));
    loop {
        let item = tokio::select! {
            item = tokio::time::timeout(IDLE_TIMEOUT, lines.next()) => item,
            _ = shared.shutdown.cancelled() => return,
        };
        let resp = match item {
            Err(_) | Ok(None) | Ok(Some(Err(_))) => return,
            Ok(Some(Ok(Err(LineError::TooLong { max })))) => error(
                ControlErrorCode::BadRequest,
                format!("request longer than {max} bytes"),
            ),
            Ok(Some(Ok(Err(LineError::NotUtf8)))) => {
                error(ControlErrorCode::BadRequest, "request is not UTF-8")
            }
            // LineCodec has no binary frames; listed so a new error kind is decided here.
            Ok(Some(Ok(Err(e @ (LineError::UnknownBinary { .. } | LineError::ShortBinary))))) => {
                error(ControlErrorCode::BadRequest, e.to_string())
            }
            Ok(Some(Ok(Ok(line)))) => match frame::decode::<ControlRequest>(&line) {
                Ok(req) => {
                    // Debug quotes and escapes names, so a request cannot forge log lines.
                    tracing::info!(uid = cred.uid(), request = ?req, "control request");
                    handle(req, &shared).await
                }
                Err(e) => error(ControlErrorCode::BadRequest, format!("bad request: {e}")),
            },
        };
        let Ok(line) = frame::encode(&resp) else {
            return;
        };
        if w.write_all(&line).await.is_err() {
            return;
        }
    }
}

fn store_error(e: StoreError) -> ControlResponse {
    match e {
        StoreError::UserExists(u) => error(
            ControlErrorCode::UserExists,
            format!("user {u} already exists"),
        ),
        other if other.unavailable().is_some() => storage_unavailable(&other),
        other => {
            tracing::error!(error = %other, "control: database error");
            error(
                ControlErrorCode::Internal,
                format!("database error: {other}"),
            )
        }
    }
}

/// Disk full or database locked: a clear, retryable answer instead of `internal`.
fn storage_unavailable(e: &StoreError) -> ControlResponse {
    let message = match e.unavailable() {
        Some(Unavailable::DiskFull) => {
            "disk full: the change was not saved; free space in chatd's state directory and retry"
        }
        Some(Unavailable::Down) => {
            "database server unreachable: the change was not saved; retry when it is back"
        }
        _ => {
            "database locked by another process: the change was not saved; retry when it is released"
        }
    };
    tracing::error!(error = %e, "control: storage unavailable, change not saved");
    error(ControlErrorCode::StorageUnavailable, message)
}

fn no_such_user(user: &str) -> ControlResponse {
    error(
        ControlErrorCode::NoSuchUser,
        format!("no such user: {user}"),
    )
}

async fn hash_password(password: String) -> Result<String, ControlResponse> {
    password::hash(password).await.map_err(|e| match e {
        PasswordError::BadLength => error(ControlErrorCode::InvalidArgument, e.to_string()),
        other => {
            tracing::error!(error = %other, "password hashing failed");
            error(ControlErrorCode::Internal, "password hashing failed")
        }
    })
}

/// Every session: this node's, and in a cluster every other node's, naming those that did
/// not answer.
async fn who(shared: &Shared) -> ControlResponse {
    let mut sessions = shared.hub.sessions();
    let Some(cluster) = &shared.cluster else {
        return ControlResponse::Sessions {
            sessions,
            unanswered: Vec::new(),
        };
    };
    let me = cluster.me().name;
    for s in &mut sessions {
        s.node = Some(me.clone());
    }
    let (elsewhere, unanswered) = cluster.sessions_elsewhere().await;
    sessions.extend(elsewhere);
    ControlResponse::Sessions {
        sessions,
        unanswered,
    }
}

/// Runs one request.
pub async fn handle(req: ControlRequest, shared: &Shared) -> ControlResponse {
    // One name rule for every request, so no handler sees (or logs) a malformed name.
    if let Some(Err(e)) = req.user().map(chatd_proto::names::validate_username) {
        return error(
            ControlErrorCode::InvalidArgument,
            format!("invalid user name: {e}"),
        );
    }
    let done = |message: String| ControlResponse::Done { message };
    match req {
        ControlRequest::Status => {
            let (sessions, users_online) = shared.hub.counts();
            let counts = shared.store.counts().await;
            let (accounts, offline_stored, offline_queued) = match counts {
                Ok(n) => n,
                Err(e) => return store_error(e),
            };
            ControlResponse::Status(StatusInfo {
                version: env!("CARGO_PKG_VERSION").to_string(),
                uptime_secs: shared.started.elapsed().as_secs(),
                listen: shared.listen_addr.to_string(),
                cert_fingerprint: shared.identity.fingerprint,
                sessions,
                users_online,
                accounts,
                offline_stored,
                offline_queued,
                store: shared.store_info.clone(),
                nodes: shared
                    .cluster
                    .as_ref()
                    .map(|c| {
                        c.nodes()
                            .into_iter()
                            .map(|n| NodeInfo {
                                name: n.name,
                                heard_ms: n.heard_ms,
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
            })
        }
        ControlRequest::UserAdd {
            user,
            password,
            admin,
        } => {
            let hash = match hash_password(password).await {
                Ok(h) => h,
                Err(resp) => return resp,
            };
            match shared.store.add_user(&user, &hash, admin).await {
                Ok(()) => done(format!(
                    "user {user} added{}",
                    if admin { " (admin)" } else { "" }
                )),
                Err(e) => store_error(e),
            }
        }
        ControlRequest::UserDel { user } => match shared.store.delete_user(&user).await {
            Ok(true) => {
                let n = shared.hub.close_user(&user, "account deleted");
                shared.hub.forget_user(&user);
                done(format!("user {user} deleted ({n} session(s) ended)"))
            }
            Ok(false) => no_such_user(&user),
            Err(e) => store_error(e),
        },
        ControlRequest::UserPasswd { user, password } => {
            let hash = match hash_password(password).await {
                Ok(h) => h,
                Err(resp) => return resp,
            };
            match shared.store.set_password(&user, &hash).await {
                Ok(true) => done(format!("password of {user} changed")),
                Ok(false) => no_such_user(&user),
                Err(e) => store_error(e),
            }
        }
        ControlRequest::UserLock { user } => set_locked(shared, user, true).await,
        ControlRequest::UserUnlock { user } => set_locked(shared, user, false).await,
        ControlRequest::UserList => {
            let now = crate::store::now_secs();
            let rows = match shared.store.list_users().await {
                Ok(rows) => rows,
                Err(e) => return store_error(e),
            };
            ControlResponse::Users {
                users: rows
                    .into_iter()
                    .map(|r| UserInfo {
                        sessions: shared.hub.session_count(&r.name),
                        user: r.name,
                        admin: r.admin,
                        locked: r.locked,
                        created: r.created_at,
                        banned_until: crate::store::ban_left(r.banned_until, now)
                            .and(r.banned_until)
                            .map(|t| t.max(0) as u64),
                    })
                    .collect(),
            }
        }
        ControlRequest::Who => who(shared).await,
        ControlRequest::Kick {
            user,
            reason,
            ban_secs: None,
        } => {
            let reason = crate::commands::kick_reason(reason.as_deref().unwrap_or(""));
            match shared.hub.close_user(&user, &reason) {
                0 => error(
                    ControlErrorCode::NoSuchUser,
                    format!("{user} is not online"),
                ),
                n => done(format!("kicked {user} ({n} session(s))")),
            }
        }
        ControlRequest::Kick {
            user,
            reason,
            ban_secs: Some(secs),
        } => ban(shared, user, reason.as_deref().unwrap_or(""), secs).await,
        ControlRequest::Unban { user } => {
            let now = crate::store::now_secs();
            let lifted = shared
                .store
                .unban(&user)
                .await
                .map(|was| was.map(|until| crate::store::ban_left(until, now).is_some()));
            match lifted {
                Ok(Some(true)) => done(format!("{user} unbanned: logins are allowed again")),
                Ok(Some(false)) => done(format!("{user} was not banned")),
                Ok(None) => no_such_user(&user),
                Err(e) => store_error(e),
            }
        }
        ControlRequest::Say { text } => {
            if text.trim().is_empty() || text.len() > shared.config.limits.max_text_bytes.get() {
                return error(
                    ControlErrorCode::InvalidArgument,
                    format!(
                        "the announcement must be 1 to {} bytes",
                        shared.config.limits.max_text_bytes.get()
                    ),
                );
            }
            let n = shared
                .hub
                .broadcast(&crate::commands::announcement(None, &text), None);
            tracing::info!(sessions = n, "announcement sent from the control socket");
            done(format!("announced to {n} session(s)"))
        }
        ControlRequest::Metrics => ControlResponse::Metrics {
            text: crate::metrics::get().encode(),
        },
        ControlRequest::Reload => match shared.reload("chatctl reload") {
            Ok(summary) => done(summary),
            Err(reason) => error(ControlErrorCode::ReloadFailed, reason),
        },
        ControlRequest::KeyList { user } => key_list(shared, user).await,
        ControlRequest::KeyRevoke { user, fingerprint } => {
            match shared.store.revoke_key(&user, fingerprint.as_bytes()).await {
                Ok(true) => {
                    let n = shared
                        .hub
                        .close_device(&user, &fingerprint, "device key revoked");
                    shared.hub.forget_device(&user, &fingerprint);
                    tracing::info!(user = ?user, device = %fingerprint, sessions = n, "device key revoked");
                    done(format!(
                        "key {fingerprint} of {user} revoked ({n} session(s) ended)"
                    ))
                }
                Ok(false) => error(
                    ControlErrorCode::NoSuchKey,
                    format!("{user} has no device key {fingerprint} (see chatctl key list {user})"),
                ),
                Err(e) => store_error(e),
            }
        }
    }
}

async fn key_list(shared: &Shared, user: Option<String>) -> ControlResponse {
    let rows = match shared.store.list_keys(user.as_deref()).await {
        Ok(Some(rows)) => rows,
        Ok(None) => return no_such_user(user.as_deref().unwrap_or_default()),
        Err(e) => return store_error(e),
    };
    let online = shared.hub.device_sessions();
    ControlResponse::Keys {
        keys: rows
            .into_iter()
            .map(|r| {
                let fingerprint = Fingerprint::from_bytes(r.fingerprint);
                KeyInfo {
                    sessions: online
                        .get(&(r.user.clone(), fingerprint))
                        .copied()
                        .unwrap_or(0),
                    user: r.user,
                    fingerprint,
                    bits: r.bits,
                    created: r.created_at,
                    last_seen: r.last_seen,
                    revoked: r.revoked_at,
                }
            })
            .collect(),
    }
}

/// `kick --ban`: stores the ban first (so the sessions it ends cannot log in again), then
/// ends the account's sessions with a `bye` that says until when.
async fn ban(shared: &Shared, user: String, reason: &str, secs: u64) -> ControlResponse {
    if !(1..=MAX_BAN_SECS).contains(&secs) {
        return error(
            ControlErrorCode::InvalidArgument,
            format!("a ban lasts 1 second to {} days", MAX_BAN_SECS / 86_400),
        );
    }
    // From the next whole second: the stored end is in seconds, and a ban never lasts less
    // than asked.
    let until = crate::store::now_secs()
        .saturating_add(1)
        .saturating_add(secs as i64);
    match shared.store.set_ban(&user, Some(until)).await {
        Ok(true) => {}
        Ok(false) => return no_such_user(&user),
        Err(e) => return store_error(e),
    }
    let n = shared
        .hub
        .close_user(&user, &crate::commands::ban_reason(reason, until));
    ControlResponse::Done {
        message: format!(
            "kicked {user} ({n} session(s)); logins refused for {} (banned until {} UTC)",
            chatd_proto::time::format_uptime(secs),
            chatd_proto::time::format_utc(until.max(0) as u64)
        ),
    }
}

async fn set_locked(shared: &Shared, user: String, locked: bool) -> ControlResponse {
    match shared.store.set_locked(&user, locked).await {
        Ok(true) if locked => {
            let n = shared.hub.close_user(&user, "account locked");
            ControlResponse::Done {
                message: format!("user {user} locked ({n} session(s) ended)"),
            }
        }
        Ok(true) => ControlResponse::Done {
            message: format!("user {user} unlocked"),
        },
        Ok(false) => no_such_user(&user),
        Err(e) => store_error(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bans_bye_starts_as_a_kick_whatever_the_reason() {
        // 2026-12-06 08:00:00 UTC.
        let until = 1_796_544_000;
        for (reason, bye) in [
            (
                "",
                "kicked by administrator: banned until 2026-12-06 08:00:00 UTC",
            ),
            // Nothing left once control characters are dropped: as if none was given.
            (
                " \u{7}\n",
                "kicked by administrator: banned until 2026-12-06 08:00:00 UTC",
            ),
            (
                "spam",
                "kicked by administrator: spam (banned until 2026-12-06 08:00:00 UTC)",
            ),
        ] {
            assert_eq!(
                crate::commands::ban_reason(reason, until),
                bye,
                "{reason:?}"
            );
        }
    }

    #[test]
    fn reads_supplementary_groups() {
        let status = "Name:\tbash\nGroups:\t4 24 1001 \nNgid:\t0\n";
        assert_eq!(supplementary_groups(status), vec![4, 24, 1001]);
        assert!(supplementary_groups("Name: x\n").is_empty());
    }

    #[test]
    fn root_and_self_are_admins_strangers_are_not() {
        assert!(authorized(0, 0, None, None));
        assert!(authorized(
            nix::unistd::geteuid().as_raw(),
            12345,
            None,
            None
        ));
        let stranger = nix::unistd::geteuid().as_raw().wrapping_add(4242).max(1);
        assert!(!authorized(stranger, 4242, None, None));
        assert!(authorized(stranger, 4242, None, Some(Gid::from_raw(4242))));
        assert!(!authorized(stranger, 4243, None, Some(Gid::from_raw(4242))));
    }
}
