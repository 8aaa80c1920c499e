//! A session's writer task: takes everything queued in its [`Outbox`] at each wake-up and
//! writes it in as few TLS records and writes as it fills, straight from the shared line
//! buffers; at trace level it is also the wire capture of everything chatd says.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::outbox::Outbox;

/// Most lines handed to one vectored TLS write (about 50 KB of room messages).
const WRITE_SLICES: usize = 64;

/// Writes queued lines: everything queued at a wake-up goes out in as few TLS records and
/// writes as it fills, straight from the shared line buffers (no copy into a staging buffer).
///
/// `span` is entered only to log: entering it on every poll cost ~2% of chatd's CPU when each
/// room message wakes hundreds of writers.
pub async fn write_loop<W: AsyncWrite + Unpin>(mut w: W, outbox: Arc<Outbox>, span: tracing::Span) {
    // However this task ends (an error, or aborted after the flush grace), nothing more is
    // taken in: the hub sees `Closed` and stores lines for the device instead.
    struct Abandon(Arc<Outbox>);
    impl Drop for Abandon {
        fn drop(&mut self) {
            self.0.abandon();
        }
    }
    let guard = Abandon(outbox);
    let mut batch = Vec::new();
    while guard.0.take(&mut batch).await {
        // Everything the server says, in clear before TLS: at trace level this is a full
        // capture, which is how the tests prove that no message text ever passes through.
        if tracing::enabled!(target: "chatd::wire", tracing::Level::TRACE) {
            let all: String = batch.iter().map(|entry| wire_text(entry)).collect();
            span.in_scope(|| {
                tracing::trace!(target: "chatd::wire", out = %all, "wire write");
            });
        }
        if let Err(e) = write_lines(&mut w, &batch).await {
            span.in_scope(|| tracing::debug!(error = %e, "write failed"));
            return;
        }
        batch.clear();
        if let Err(e) = w.flush().await {
            span.in_scope(|| tracing::debug!(error = %e, "flush failed"));
            return;
        }
    }
    // The session finished and everything queued is written: send TLS close_notify so the
    // client sees a clean end.
    let _ = w.shutdown().await;
}

/// A queue entry as the wire capture shows it: lines as text, each binary frame as its kind,
/// size and base64 payload on a line of its own (raw bytes would garble the log). An entry
/// may hold several frames (a run of envelopes, presence and device notices together).
fn wire_text(entry: &[u8]) -> std::borrow::Cow<'_, str> {
    let mut rest = entry;
    let mut text = String::new();
    while !rest.is_empty() {
        let (shown, len) = match rest {
            [chatd_proto::codec::BINARY_MARKER, kind, header @ ..] if header.len() >= 4 => {
                // The hub only queues frames it built, so the u32 length is exact; a short
                // one would show what is there.
                let size = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
                let size = usize::try_from(size).unwrap_or(usize::MAX);
                let payload = &header[4..][..size.min(header.len() - 4)];
                let b64 = STANDARD.encode(payload);
                let kind = char::from(*kind).escape_default();
                let shown = format!("<binary frame '{kind}', {} bytes> {b64}\n", payload.len());
                (std::borrow::Cow::Owned(shown), 6 + payload.len())
            }
            _ => {
                let len = rest
                    .iter()
                    .position(|b| *b == b'\n')
                    .map_or(rest.len(), |i| i + 1);
                (String::from_utf8_lossy(&rest[..len]), len)
            }
        };
        if len == rest.len() && text.is_empty() {
            return shown;
        }
        text.push_str(&shown);
        rest = &rest[len..];
    }
    text.into()
}

/// Writes all of `lines`, up to [`WRITE_SLICES`] of them per vectored write.
async fn write_lines<W: AsyncWrite + Unpin>(w: &mut W, lines: &[Bytes]) -> std::io::Result<()> {
    let (mut next, mut offset) = (0, 0);
    while next < lines.len() {
        // The slice array is built on each poll's stack, so it is never part of the future:
        // an idle writer task stays small and a write allocates nothing (boxing this future
        // instead cost a malloc and free per delivery).
        let mut written = std::future::poll_fn(|cx| {
            let mut slices = [std::io::IoSlice::new(&[]); WRITE_SLICES];
            let mut n = 0;
            for (slot, line) in slices.iter_mut().zip(&lines[next..]) {
                *slot = std::io::IoSlice::new(if n == 0 { &line[offset..] } else { line });
                n += 1;
            }
            AsyncWrite::poll_write_vectored(std::pin::Pin::new(&mut *w), cx, &slices[..n])
        })
        .await?;
        if written == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        // Step over what went out: whole lines, then part of one.
        while written > 0 {
            let left = lines[next].len() - offset;
            if written >= left {
                written -= left;
                next += 1;
                offset = 0;
            } else {
                offset += written;
                written = 0;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wire_capture_shows_binary_frames_as_text() {
        let frame = chatd_proto::codec::binary_envelope(1, b"\x00\n\xff");
        assert_eq!(
            wire_text(&frame),
            "<binary frame 'E', 11 bytes> AAAAAAAAAAEACv8=\n"
        );
        assert_eq!(wire_text(b"{\"type\":\"pong\"}\n"), "{\"type\":\"pong\"}\n");
        // A run of envelopes, or notices joined into one queue entry: each frame on its own.
        let other = chatd_proto::codec::binary_envelope(2, b"x");
        let entry = [&frame[..], b"{\"a\":1}\n{\"b\":2}\n", &other[..]].concat();
        assert_eq!(
            wire_text(&entry),
            "<binary frame 'E', 11 bytes> AAAAAAAAAAEACv8=\n{\"a\":1}\n{\"b\":2}\n\
             <binary frame 'E', 9 bytes> AAAAAAAAAAJ4\n"
        );
    }
}
