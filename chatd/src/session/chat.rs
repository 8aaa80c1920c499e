//! The logged-in session's loop: each frame the client sends, under its budgets, routed
//! ([`super::route`]), dispatched to a slash command, or answered.

use std::ops::ControlFlow;

use chatd_proto::ErrorCode;
use chatd_proto::frame::{ClientFrame, ServerFrame};

use super::connection::{Connection, Ending, Incoming};
use super::login::LoggedIn;
use super::rate::Rate;
use super::route::{EnvelopeData, RekeyRequest, Router};
use crate::commands::Ctx;
use crate::hub::SessionId;
use crate::shared::Shared;

/// Handles frames until the session ends; returns why.
pub(super) async fn run(
    conn: &mut Connection,
    shared: &Shared,
    id: SessionId,
    login: &LoggedIn,
) -> Ending {
    let limits = &shared.config.limits;
    // A chain burst always covers one chain per registered device: what a client sends when
    // it starts a chain in a room everyone is in.
    let devices = u32::try_from(shared.hub.device_count()).unwrap_or(u32::MAX);
    let account = shared.budgets.of(&login.user, limits, devices);
    let mut rate = Rate::new(limits, account, devices);
    loop {
        let incoming = match conn.next_frame().await {
            Ok(incoming) => incoming,
            Err(ending) => return ending,
        };
        if let ControlFlow::Break(ending) =
            handle(conn, shared, &mut rate, id, login, incoming).await
        {
            return ending;
        }
    }
}

/// Handles one frame.
async fn handle(
    conn: &mut Connection,
    shared: &Shared,
    rate: &mut Rate,
    id: SessionId,
    login: &LoggedIn,
    incoming: Incoming,
) -> ControlFlow<Ending> {
    // Read once per frame: a reload in between takes effect at the next one.
    let limits = &shared.config.limits;
    let router = Router {
        hub: &shared.hub,
        limits,
        id,
        login,
    };
    let frame = match incoming {
        Incoming::Envelope(raw) => {
            if rate.admit(conn, limits)? {
                router.envelopes(conn, rate, EnvelopeData::Bytes(raw))?;
            }
            return ControlFlow::Continue(());
        }
        Incoming::Frame(frame) => frame,
    };
    let limited = matches!(
        frame,
        ClientFrame::Send { .. }
            | ClientFrame::Command { .. }
            | ClientFrame::Rekey { .. }
            | ClientFrame::Vouch { .. }
            | ClientFrame::BacklogAck { .. }
            | ClientFrame::Ping { .. }
    );
    if limited && !rate.admit(conn, limits)? {
        return ControlFlow::Continue(());
    }
    match frame {
        ClientFrame::Send { data } => router.envelopes(conn, rate, EnvelopeData::Base64(data))?,
        ClientFrame::Chain { data } => router.chain(conn, rate, data)?,
        ClientFrame::Rekey {
            device,
            conversation,
            chain,
            index,
        } => router.rekey(
            conn,
            RekeyRequest {
                device,
                conversation,
                chain,
                index,
            },
        )?,
        ClientFrame::Vouch { data } => {
            Box::pin(super::vouch::vouch(conn, shared, login, data)).await?
        }
        ClientFrame::Command { name, args, room } => {
            // Only a room the caller is in is handed on (to plugins).
            let room = room.filter(|r| shared.hub.is_member(r, &login.user));
            let ctx = Ctx {
                hub: &shared.hub,
                store: &shared.store,
                registry: &shared.registry,
                limits,
                motd: &shared.config.server.motd,
                room: room.as_deref(),
                rooms: &shared.config.rooms,
                session: id,
                user: &login.user,
                role: login.role,
            };
            let result = Box::pin(shared.registry.dispatch(&ctx, &name, &args)).await;
            match result {
                Ok(Some(reply)) => conn.send(&reply),
                Ok(None) => {}
                Err(e) => conn.send(&e.to_frame()),
            }
        }
        ClientFrame::BacklogAck { upto } => Box::pin(ack_backlog(shared, login, upto)).await,
        ClientFrame::Ping { nonce } => conn.send(&ServerFrame::Pong { nonce }),
        ClientFrame::Quit => return ControlFlow::Break(Ending::both("quit")),
        ClientFrame::Hello { .. } | ClientFrame::Login { .. } => {
            conn.error(ErrorCode::AlreadyLoggedIn, "already logged in");
        }
    }
    ControlFlow::Continue(())
}

/// Deletes what this device acknowledged of its stored lines.
async fn ack_backlog(shared: &Shared, login: &LoggedIn, upto: u64) {
    let upto = i64::try_from(upto).unwrap_or(i64::MAX);
    let done = shared
        .store
        .ack(&login.user, login.device.as_bytes(), upto)
        .await;
    match done {
        Ok(n) => tracing::debug!(deleted = n, "stored lines acknowledged"),
        // They stay stored and come again at the next login.
        Err(e) => tracing::warn!(error = %e, "cannot delete acknowledged stored lines"),
    }
}
