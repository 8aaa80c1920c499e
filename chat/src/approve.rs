//! `chat --approve-device CODE`: log in, approve one of this account's devices by the code it
//! shows (a signed vouch, as `/devices approve` sends), wait until the server has it, and exit.

use std::io::Write;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use chatd_proto::{ClientFrame, ServerFrame};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::conn::{Connection, Incoming};
use crate::dispatch;
use crate::format;
use crate::secure::{Event, Secure};

/// How long to wait for the server to confirm the vouch.
const CONFIRM_WAIT: Duration = Duration::from_secs(30);

/// Approves the device `code` names; Ok(0) once the server stored the vouch. An error (exit
/// status 1) when the code names none of this account's devices or the server refuses it.
pub async fn run<S, W>(
    conn: &mut Connection<S>,
    secure: &mut Secure,
    code: &str,
    out: &mut W,
) -> Result<u8>
where
    S: AsyncRead + AsyncWrite,
    W: Write,
{
    let me = secure.me().to_string();
    let (events, frame) = secure.approve_device(code);
    let Some(frame) = frame else {
        let why: Vec<String> = events
            .iter()
            .map(|e| match e {
                Event::Warning(w) => format::warning(w),
                other => format::event(other, &me, ""),
            })
            .collect();
        let _ = conn.send(&ClientFrame::Quit).await;
        bail!("cannot approve {code:?}: {}", why.join("; "));
    };
    print(out, &events, &me)?;
    let ClientFrame::Vouch { data } = &frame else {
        bail!("internal error: approving made no vouch");
    };
    let data = data.clone();
    conn.send(&frame).await.context("sending the approval")?;
    let confirmed = tokio::time::timeout(CONFIRM_WAIT, async {
        loop {
            let incoming = match conn.recv().await {
                Ok(Some(incoming)) => incoming,
                Ok(None) | Err(_) => bail!("the connection was lost before the server confirmed"),
            };
            let events = dispatch::events(&incoming, secure);
            print(out, &events, &me)?;
            let Incoming::Frame(frame) = incoming else {
                continue;
            };
            if let Some(reply) = dispatch::reply(&frame) {
                conn.send(&reply).await.context("answering the server")?;
            }
            match frame {
                // The server sends each vouch it stored back to every session that asked.
                ServerFrame::Vouch { data: stored, .. } if stored == data => return Ok(()),
                ServerFrame::Error { message, .. } => {
                    bail!(
                        "the server refused the approval: {}",
                        crate::text::sanitize(&message)
                    )
                }
                ServerFrame::Bye { reason } => {
                    bail!(
                        "the server ended the session: {}",
                        crate::text::sanitize(&reason)
                    )
                }
                _ => {}
            }
        }
    })
    .await;
    match confirmed {
        Ok(Ok(())) => {
            let _ = conn.send(&ClientFrame::Quit).await;
            Ok(0)
        }
        Ok(Err(e)) => Err(e),
        Err(_) => bail!("the server did not confirm the approval within {CONFIRM_WAIT:?}"),
    }
}

fn print(out: &mut impl Write, events: &[Event], me: &str) -> Result<()> {
    let stamp = format::local_stamp(None);
    for e in events {
        writeln!(out, "{}", format::event(e, me, &stamp)).context("cannot write to stdout")?;
    }
    out.flush().context("cannot write to stdout")
}
