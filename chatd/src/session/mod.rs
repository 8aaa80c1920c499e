//! One client connection: TLS handshake, hello and login under timeouts, replay of what was
//! stored, then the chat loop; however it ends, one [`connection::Ending`] says why.
//!
//! The reader runs in this task; a separate writer task ([`crate::writer`]) drains the
//! session's bounded queue of pre-serialized lines, so replies and broadcasts share one order.
//!
//! Chat traffic is end-to-end encrypted: `send` carries a sealed envelope and `chain` a wrapped
//! sender chain. The session reads only their clear headers, checks that they name this
//! session's user and device key, and routes the bytes unchanged; it never sees message text.
//!
//! `connection` owns framing and the ending; `login` is the hello/login state machine;
//! `replay` sends stored lines; `chat` is the logged-in loop, with `route` (envelopes and
//! chains) and `rate` (the message rate limit).

mod chat;
mod connection;
mod login;
mod rate;
mod replay;
mod route;
mod vouch;

use std::net::SocketAddr;
use std::sync::Arc;

use chatd_proto::ErrorCode;
use chatd_proto::frame::ServerFrame;
use tokio::net::TcpStream;
use tracing::Instrument;

use crate::hub::{NewSession, SessionId};
use crate::shared::Shared;
use crate::slots::Claim;
use crate::socket::Socket;
use connection::{Connection, Ending};
use login::LoggedIn;

/// Serves one accepted TCP connection to the end. Until it has logged in, the connection
/// closes when `claim` is evicted to make room on a full server.
pub async fn serve(stream: TcpStream, peer: SocketAddr, shared: Arc<Shared>, claim: &Claim) {
    let span = tracing::info_span!("session", %peer, user = tracing::field::Empty);
    async move {
        let acceptor = shared.acceptor();
        let handshake = tokio::time::timeout(
            shared.config.limits.handshake_timeout(),
            Box::pin(acceptor.accept(Socket(stream))),
        );
        let tls = tokio::select! {
            result = handshake => match result {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!("TLS handshake timed out");
                    return;
                }
            },
            // A peer that never finishes TLS must not hold up shutdown.
            _ = shared.shutdown.cancelled() => return,
            _ = claim.evicted().cancelled() => {
                tracing::debug!("closed during the TLS handshake to make room");
                return;
            }
        };
        claim.handshake_done();
        let (r, w) = tokio::io::split(tls);
        let mut conn = Connection::new(
            r,
            w,
            peer,
            Arc::clone(&shared.config),
            shared.shutdown.clone(),
        );
        let (session, ending) = match Box::pin(enter(&mut conn, &shared, claim)).await {
            Ok((id, seq, login)) => {
                let _online = crate::metrics::get().session_online(login.binary);
                (
                    Some(id),
                    logged_in(&mut conn, &shared, id, seq, &login).await,
                )
            }
            Err(ending) => (None, ending),
        };
        Box::pin(conn.finish(&shared.hub, session, ending)).await;
    }
    .instrument(span)
    .await
}

/// Logs the client in (under the login timeout) and registers the session with the hub:
/// its id, the offline job it must see stored before replaying, and who it is.
async fn enter(
    conn: &mut Connection,
    shared: &Shared,
    claim: &Claim,
) -> Result<(SessionId, u64, LoggedIn), Ending> {
    let login_timeout = shared.config.limits.login_timeout();
    let evicted = claim.evicted().clone();
    let login = tokio::select! {
        login = tokio::time::timeout(login_timeout, login::login(conn, shared)) => match login {
            Ok(login) => login?,
            Err(_) => {
                tracing::info!("login timed out");
                return Err(Ending::both("login timed out"));
            }
        },
        // Only when every slot is taken and none is still in its TLS handshake.
        _ = evicted.cancelled() => {
            tracing::info!("closed before login to make room: the server is full");
            return Err(Ending::both("the server is full; log in again"));
        }
    };
    claim.logged_in();
    // Everyone is in the default room at login (so login_ok lists it).
    let lobby = shared.hub.default_room();
    match shared.store.join_room(&lobby, &login.user).await {
        Ok(true) => shared.hub.room_joined(&lobby, &login.user),
        Ok(false) => {}
        Err(e) => tracing::warn!(error = %e, "cannot record the default room's membership"),
    }
    // The hub queues login_ok itself, so nothing routed to us can overtake it.
    let registered = shared.hub.register(NewSession {
        user: login.user.clone(),
        device: login.device,
        key: Arc::clone(&login.key),
        peer: conn.peer(),
        outbox: Arc::clone(conn.outbox()),
        closer: conn.closer().clone(),
        replay: true,
        binary: login.binary,
        vouch: login.vouch,
        rekey: login.rekey,
    });
    let (id, seq) = match registered {
        Ok(r) => r,
        Err(e) => {
            conn.error(ErrorCode::TooManySessions, e.to_string());
            return Err(Ending::both("too many sessions"));
        }
    };
    tracing::Span::current().record("user", login.user.as_str());
    tracing::info!(target: crate::repeats::AUDIT, session = id, device = %login.device, "logged in");
    // A lock, ban or deletion that landed after this login's password check found no session
    // to end. Each is stored before its sessions are ended (control.rs), so reading the account
    // again now that the session is registered sees it, or the ending saw the session.
    if let Some(reason) = barred_now(shared, &login.user).await {
        tracing::info!(target: crate::repeats::AUDIT, session = id, reason, "ended at once: the account changed during the login");
        shared.hub.close_user(&login.user, &reason);
    }
    Ok((id, seq, login))
}

/// Why `user` may no longer be logged in (locked, banned, deleted), if so. A store that
/// cannot answer bars no one: the login already passed its checks.
async fn barred_now(shared: &Shared, user: &str) -> Option<String> {
    match shared.store.credentials(user).await {
        Ok(None) => Some("account deleted".to_string()),
        Ok(Some(c)) if c.locked => Some("account locked".to_string()),
        Ok(Some(c)) => c
            .ban_left(crate::store::now_secs())
            .map(|_| crate::commands::ban_reason("", c.banned_until.unwrap_or_default())),
        Err(_) => None,
    }
}

/// A registered session: replays what was stored, shows the message of the day, then runs
/// the chat loop.
async fn logged_in(
    conn: &mut Connection,
    shared: &Shared,
    id: SessionId,
    seq: u64,
    login: &LoggedIn,
) -> Ending {
    let replay = Box::pin(replay::replay(
        shared,
        conn.outbox(),
        id,
        seq,
        &login.user,
        login.device,
    ));
    match conn.unless_ended(replay).await {
        Ok(true) => {}
        Ok(false) => return Ending::gone("disconnected"),
        Err(ending) => return ending,
    }
    let motd = shared.config.server.motd.trim();
    if !motd.is_empty() {
        conn.send(&ServerFrame::Notice {
            text: format!("message of the day: {motd}"),
        });
    }
    chat::run(conn, shared, id, login).await
}
