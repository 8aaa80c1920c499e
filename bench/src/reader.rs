//! The receivers' side of a run: each client's stream is read continuously and parsed only as
//! far as needed.
//!
//! Readers must never fall behind (chatd disconnects a client whose outbound queue fills), so
//! each client is read continuously (by its own task, [`read_loop`], or by a receiver thread,
//! through the same [`Receiver`]) and parsed only as far as needed: a binary `envelope` frame,
//! or a line starting `{"type":"envelope"`, is identified by the sender and chain index in its
//! envelope header ([`EnvelopeReader`]), and its send instant is looked up in
//! [`Run::sent_ns`], which the senders fill in as they write. Other frames are skipped unless
//! they are a `bye` or an `error`, which are recorded.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::Poll;

use hdrhistogram::Histogram;
use tokio::io::AsyncRead;

use crate::e2e::{Delivered, EnvelopeReader};
use crate::incoming::{Frame, Incoming};
use crate::latency::MAX_LATENCY_US;
use crate::run::Run;

/// A receiver keeps this many latencies before it adds them to its histograms: one record
/// per frame touched the histogram's cold cache lines once per delivery (4 % of chat-bench's
/// CPU in the paced 500-member run); a batch touches them once per batch.
const LATENCY_BATCH: usize = 256;
/// Marks a batched latency as the storm phase's ([`MAX_LATENCY_US`] is below it).
const STORM_BIT: u32 = 1 << 31;

/// What one receiver saw.
pub struct ReadStats {
    /// `envelope` frames of this run's messages.
    pub received: u64,
    /// Bytes of those `envelope` frames on the wire (inside TLS): binary frames whole, lines
    /// with their newline.
    pub bytes: u64,
    /// Latency in microseconds; with a login storm, of the quiet phase's messages only.
    /// Complete once [`ReadStats::flush_latencies`] has run ([`read_loop`] runs it).
    pub latency_us: Histogram<u64>,
    /// Latency of the storm phase's messages (None without a login storm).
    pub storm_latency_us: Option<Histogram<u64>>,
    /// Latencies not yet in the histograms: microseconds, [`STORM_BIT`] set for the storm's.
    pending_us: Vec<u32>,
    /// Messages whose chain index was not the previous one plus one for that sender
    /// (a gap or a reordering).
    pub out_of_order: u64,
    /// `envelope` frames that could not be read (cut short, bad base64, not an envelope) or
    /// that name a message this run did not send, and frames the binary-mode codec refused.
    pub corrupt: u64,
    /// `error` frames from the server, by code and message.
    pub server_errors: BTreeMap<String, usize>,
    /// The `bye` reason, if the server said goodbye.
    pub bye: Option<String>,
    /// Read error or premature end of stream.
    pub error: Option<String>,
}

impl ReadStats {
    /// Empty stats recording into `latency_us`, and into an empty copy of it for the storm
    /// phase when `run` has one.
    fn new(latency_us: Histogram<u64>, run: &Run) -> ReadStats {
        ReadStats {
            received: 0,
            bytes: 0,
            storm_latency_us: run.storm_from.map(|_| latency_us.clone()),
            latency_us,
            pending_us: Vec::with_capacity(LATENCY_BATCH),
            out_of_order: 0,
            corrupt: 0,
            server_errors: BTreeMap::new(),
            bye: None,
            error: None,
        }
    }

    /// Keeps one latency for the histograms (`storm`: sent during the storm phase).
    fn record_latency(&mut self, us: u64, storm: bool) {
        let us = u32::try_from(us.clamp(1, MAX_LATENCY_US)).unwrap_or(u32::MAX >> 1);
        self.pending_us
            .push(if storm { us | STORM_BIT } else { us });
        if self.pending_us.len() >= LATENCY_BATCH {
            self.flush_latencies();
        }
    }

    /// Adds the kept latencies to the histograms.
    pub fn flush_latencies(&mut self) {
        for &v in &self.pending_us {
            let histogram = match &mut self.storm_latency_us {
                Some(h) if v & STORM_BIT != 0 => h,
                _ => &mut self.latency_us,
            };
            histogram.saturating_record(u64::from(v & !STORM_BIT));
        }
        self.pending_us.clear();
    }
}

/// Reads until told to stop, counting `envelope` frames and their latency into `latency_us`.
pub async fn read_loop<R: AsyncRead + Unpin>(
    mut rd: R,
    incoming: Incoming,
    run: Arc<Run>,
    latency_us: Histogram<u64>,
) -> ReadStats {
    let mut receiver = Receiver::new(incoming, &run, latency_us);
    read_frames(&mut rd, &mut receiver, &run).await;
    receiver.into_stats()
}

/// [`read_loop`]'s loop: returns at the stop signal, a `bye`, an error or the end of the stream.
async fn read_frames<R: AsyncRead + Unpin>(rd: &mut R, receiver: &mut Receiver, run: &Run) {
    // The stop future is polled once, so that cancelling wakes this task; after that the loop
    // reads `Run::stopping`, a plain load. Polling the future on every read locked its token's
    // node each time (`is_cancelled`: 3 % of chat-bench's CPU in the paced run).
    let stopped = run.stop_signal().cancelled_owned();
    tokio::pin!(stopped);
    if std::future::poll_fn(|cx| Poll::Ready(stopped.as_mut().poll(cx).is_ready())).await {
        return;
    }
    let mut acks = Acks::default();
    loop {
        let more = receiver.frames(run, &mut acks);
        acks.flush(run);
        if !more {
            break;
        }
        if run.stopping() {
            return;
        }
        let filled = {
            let fill = receiver.incoming.fill(rd);
            tokio::pin!(fill);
            std::future::poll_fn(|cx| match fill.as_mut().poll(cx) {
                Poll::Ready(n) => Poll::Ready(Some(n)),
                // Woken by the stop signal (registered above), or by the socket.
                Poll::Pending if run.stopping() => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            })
            .await
        };
        match filled {
            None => return,
            Some(Ok(0)) => {
                receiver.stats.error = Some(CLOSED.into());
                break;
            }
            Some(Ok(_)) => receiver.arrived(run),
            Some(Err(e)) => {
                receiver.stats.error = Some(e.to_string());
                break;
            }
        }
    }
    run.receiver_ended();
}

/// Deliveries counted for the send window ([`Run::acks`]) but not yet added there. Every
/// receiver adding its own delivery at once made the ring slot a cache line that the cores
/// passed to each other 500 times per message (the hottest instruction in the receiver
/// threads); a receiver thread adds what one epoll wake-up read, per message, at once.
#[derive(Default)]
pub(crate) struct Acks(Vec<(usize, u64, usize)>);

impl Acks {
    /// More distinct messages than this are added at once (an unpaced fan-out's reads).
    const MAX: usize = 16;

    /// Counts one delivery of `seq` from `sender`.
    fn count(&mut self, sender: usize, seq: u64, run: &Run) {
        if let Some(e) = self.0.iter_mut().find(|e| e.0 == sender && e.1 == seq) {
            e.2 += 1;
            return;
        }
        if self.0.len() >= Acks::MAX {
            self.flush(run);
        }
        self.0.push((sender, seq, 1));
    }

    /// Adds what was counted to the run.
    pub(crate) fn flush(&mut self, run: &Run) {
        for (sender, seq, count) in self.0.drain(..) {
            run.ack(sender, seq, count);
        }
    }
}

/// A receiver's error when chatd ends the stream without a `bye`.
pub(crate) const CLOSED: &str = "server closed the connection";

/// One receiver's state between reads: the bytes not yet split into frames, what it has seen
/// of each sender, and its figures. [`read_loop`] and the receiver threads (receivers.rs)
/// both read through it.
pub(crate) struct Receiver {
    incoming: Incoming,
    seen: Seen,
    /// The figures so far.
    pub(crate) stats: ReadStats,
}

impl Receiver {
    /// A receiver that continues with what login read (`incoming`), recording latency into
    /// `latency_us`.
    pub(crate) fn new(incoming: Incoming, run: &Run, latency_us: Histogram<u64>) -> Receiver {
        Receiver {
            incoming,
            seen: Seen::new(run),
            stats: ReadStats::new(latency_us, run),
        }
    }

    /// The bytes read since the last [`Receiver::frames`] arrived now: one clock read per
    /// read, not per frame (it was 7 % of chat-bench's CPU in the fan-out).
    pub(crate) fn arrived(&mut self, run: &Run) {
        self.seen.arrived_ns = run.now_ns();
    }

    /// Appends bytes read from the stream.
    pub(crate) fn extend(&mut self, bytes: &[u8]) {
        self.incoming.extend(bytes);
    }

    /// Counts every complete frame read so far; false when the stream is to end here: a
    /// `bye` ([`ReadStats::bye`]), or bytes the codec cannot get past ([`ReadStats::error`]).
    /// The deliveries go to `acks`, which the caller flushes.
    pub(crate) fn frames(&mut self, run: &Run, acks: &mut Acks) -> bool {
        let (seen, stats) = (&mut self.seen, &mut self.stats);
        match self
            .incoming
            .drain(|frame, wire_len| seen.frame(frame, wire_len, run, stats, acks))
        {
            Ok(bye) => !bye,
            Err(e) => {
                self.stats.error = Some(e.to_string());
                false
            }
        }
    }

    /// The figures, with every latency in the histograms.
    pub(crate) fn into_stats(mut self) -> ReadStats {
        self.stats.flush_latencies();
        self.stats
    }
}

/// A receiver's per-line state.
struct Seen {
    reader: EnvelopeReader,
    /// Per sender, the last sequence number (chain index + 1; 0 for none yet).
    last_seq: Vec<u64>,
    /// When the bytes being drained were read ([`Run::now_ns`]).
    arrived_ns: u64,
}

impl Seen {
    fn new(run: &Run) -> Seen {
        Seen {
            reader: EnvelopeReader::default(),
            last_seq: vec![0; run.senders],
            arrived_ns: run.now_ns(),
        }
    }

    /// Counts one frame that took `wire_len` bytes on the wire; true when it was a `bye`.
    fn frame(
        &mut self,
        frame: Frame<'_>,
        wire_len: usize,
        run: &Run,
        stats: &mut ReadStats,
        acks: &mut Acks,
    ) -> bool {
        let delivered = match frame {
            Frame::Envelope(data) => self.reader.read_binary(data, run.senders),
            Frame::Line(line) if line.starts_with(br#"{"type":"envelope""#) => {
                self.reader.read(line, run.senders)
            }
            Frame::Line(line) => {
                if line.starts_with(br#"{"type":"error""#) {
                    *stats.server_errors.entry(error_text(line)).or_default() += 1;
                } else if line.starts_with(br#"{"type":"bye""#) {
                    stats.bye = Some(bye_reason(line));
                    return true;
                }
                return false;
            }
            Frame::Unreadable => None,
        };
        self.envelope(delivered, wire_len, run, stats, acks);
        false
    }

    /// Counts one `envelope` frame: `delivered` is what its header says, None if unreadable.
    fn envelope(
        &mut self,
        delivered: Option<Delivered>,
        wire_len: usize,
        run: &Run,
        stats: &mut ReadStats,
        acks: &mut Acks,
    ) {
        let found = delivered.and_then(|d| {
            let slot = run
                .sent_ns
                .get(d.sender)?
                .get(usize::try_from(d.index).ok()?)?;
            Some((d, slot.load(Ordering::Acquire))).filter(|(_, sent)| *sent > 0)
        });
        let Some((d, sent)) = found else {
            stats.corrupt += 1;
            return;
        };
        let now = self.arrived_ns;
        let us = now.saturating_sub(sent) / 1000;
        let storm = run.storm_from.is_some_and(|from| d.index >= from);
        stats.record_latency(us, storm);
        let seq = u64::from(d.index) + 1;
        if let Some(last) = self.last_seq.get_mut(d.sender) {
            if *last + 1 != seq {
                stats.out_of_order += 1;
            }
            *last = seq;
        }
        acks.count(d.sender, seq, run);
        stats.received += 1;
        stats.bytes += wire_len as u64;
        if stats.received == run.expected {
            run.last_complete_ns.fetch_max(now, Ordering::AcqRel);
            run.complete.fetch_add(1, Ordering::AcqRel);
        }
    }
}

fn bye_reason(line: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(line)
        .ok()
        .and_then(|v| v.get("reason")?.as_str().map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(line).into_owned())
}

/// `code: message` of an `error` line (or the line itself if it does not parse).
fn error_text(line: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(line)
        .ok()
        .and_then(|v| {
            let code = v.get("code")?.as_str()?;
            let message = v.get("message").and_then(|m| m.as_str()).unwrap_or("");
            Some(format!("{code}: {message}"))
        })
        .unwrap_or_else(|| String::from_utf8_lossy(line).into_owned())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use chatd_proto::Fingerprint;
    use chatd_proto::codec::binary_envelope;
    use chatd_proto::frame::ClientFrame;
    use tokio::io::AsyncWriteExt;

    use super::*;
    use crate::cli::WireMode;
    use crate::incoming::tests::send_payload;
    use crate::latency::new_histogram;

    impl Seen {
        /// Counts one JSON line, as the JSON-mode reader hands it over.
        fn line(&mut self, line: &[u8], run: &Run, stats: &mut ReadStats) -> bool {
            let mut acks = Acks::default();
            let bye = self.frame(Frame::Line(line), line.len() + 1, run, stats, &mut acks);
            acks.flush(run);
            bye
        }
    }

    #[test]
    fn binary_envelopes_count_as_deliveries_with_their_frame_bytes() {
        let keys = crate::e2e::Keys::load(2048).unwrap();
        let sealed = crate::e2e::seal_all(&keys, 2, 2, 20, WireMode::Binary).unwrap();
        let run = Run::new(4, 2, 2, 1, Some(10), None);
        let mut seen = Seen::new(&run);
        let mut stats = ReadStats::new(new_histogram().unwrap(), &run);
        let mut stream = Vec::new();
        for index in 0..2 {
            for id in 0..2 {
                run.sent_ns[id][index].store(1, Ordering::Release);
                stream.extend_from_slice(&binary_envelope(
                    1,
                    &send_payload(&sealed.frames[id][index]),
                ));
            }
        }
        let frame_bytes = stream.len() as u64;
        // A JSON envelope line (as chatd sends stored messages) of a message not sent: corrupt.
        stream.extend_from_slice(b"{\"type\":\"envelope\",\"data\":\"AAAA\"}\n");
        // A binary envelope whose header is cut short, and a binary send: corrupt too.
        stream.extend_from_slice(&binary_envelope(1, b"\x02E"));
        stream.extend_from_slice(&chatd_proto::codec::binary_send(b"x"));
        stream.extend_from_slice(b"{\"type\":\"bye\",\"reason\":\"quit\"}\n");
        let mut incoming = Incoming::after_login(&stream, WireMode::Binary);
        let mut acks = Acks::default();
        let bye = incoming
            .drain(|frame, len| seen.frame(frame, len, &run, &mut stats, &mut acks))
            .unwrap();
        acks.flush(&run);
        assert!(bye);
        assert_eq!(stats.received, 4);
        assert_eq!(stats.bytes, frame_bytes);
        assert_eq!(stats.out_of_order, 0);
        assert_eq!(stats.corrupt, 3);
        assert_eq!(stats.bye.as_deref(), Some("quit"));
        assert_eq!(run.complete.load(Ordering::Acquire), 1);
    }

    /// The `envelope` line chatd would send for sender `id`'s message `index` of `sealed`.
    fn delivered_line(sealed: &crate::e2e::Sealed, id: usize, index: usize) -> Vec<u8> {
        let send = std::str::from_utf8(&sealed.frames[id][index]).unwrap();
        let Ok(ClientFrame::Send { data }) = chatd_proto::frame::decode(send.trim_end()) else {
            panic!("not a send line: {send}");
        };
        let mut line = chatd_proto::frame::encode(&chatd_proto::ServerFrame::Envelope {
            from: crate::control::user_name(id),
            device: Fingerprint::of(b""),
            data,
            ts: 1,
        })
        .unwrap()
        .to_vec();
        line.pop();
        line
    }

    #[test]
    fn receivers_count_latency_order_and_strays() {
        let keys = crate::e2e::Keys::load(2048).unwrap();
        let sealed = crate::e2e::seal_all(&keys, 2, 3, 20, WireMode::Json).unwrap();
        let run = Run::new(6, 2, 3, 1, Some(10), None);
        let mut seen = Seen::new(&run);
        let mut stats = ReadStats::new(new_histogram().unwrap(), &run);
        // Not sent yet (no send instant): a stray, not a delivery.
        assert!(!seen.line(&delivered_line(&sealed, 0, 0), &run, &mut stats));
        assert_eq!((stats.received, stats.corrupt), (0, 1));
        for (id, index) in [(0, 0), (1, 0), (0, 1), (0, 2), (1, 2)] {
            run.sent_ns[id][index].store(1, Ordering::Release);
            let line = delivered_line(&sealed, id, index);
            assert!(!seen.line(&line, &run, &mut stats));
        }
        assert_eq!(stats.received, 5);
        assert_eq!(stats.out_of_order, 1, "sender 1 skipped index 1");
        assert_eq!(stats.latency_us.len(), 0, "kept until a flush");
        stats.flush_latencies();
        assert_eq!(stats.latency_us.len(), 5);
        assert!(stats.storm_latency_us.is_none());
        assert!(stats.bytes > 5 * 300);
        assert_eq!(run.delivered_through[0].load(Ordering::Acquire), 3);
        let line = delivered_line(&sealed, 1, 1);
        assert!(!seen.line(&line[..line.len() / 2], &run, &mut stats));
        assert_eq!(stats.corrupt, 2);
        assert!(!seen.line(
            br#"{"type":"error","code":"bad_text","message":"too long"}"#,
            &run,
            &mut stats
        ));
        assert_eq!(stats.server_errors.get("bad_text: too long"), Some(&1));
        assert!(!seen.line(br#"{"type":"device","user":"x"}"#, &run, &mut stats));
        assert!(seen.line(br#"{"type":"bye","reason":"quit"}"#, &run, &mut stats));
        assert_eq!(stats.bye.as_deref(), Some("quit"));
        assert_eq!(run.complete.load(Ordering::Acquire), 0);
        run.sent_ns[1][1].store(1, Ordering::Release);
        assert!(!seen.line(&line, &run, &mut stats));
        assert_eq!(run.complete.load(Ordering::Acquire), 1);
    }

    #[test]
    fn a_storm_splits_latency_by_chain_index() {
        let keys = crate::e2e::Keys::load(2048).unwrap();
        let sealed = crate::e2e::seal_all(&keys, 1, 4, 20, WireMode::Json).unwrap();
        let run = Run::new(4, 1, 4, 1, None, Some(2));
        let mut seen = Seen::new(&run);
        let mut stats = ReadStats::new(new_histogram().unwrap(), &run);
        for index in 0..4 {
            run.sent_ns[0][index].store(1, Ordering::Release);
            assert!(!seen.line(&delivered_line(&sealed, 0, index), &run, &mut stats));
        }
        assert_eq!(stats.received, 4);
        stats.flush_latencies();
        assert_eq!(stats.latency_us.len(), 2, "indexes 0 and 1: quiet");
        assert_eq!(stats.storm_latency_us.map(|h| h.len()), Some(2));
    }

    #[test]
    fn latencies_wait_for_a_full_batch_or_a_flush_and_keep_their_phase() {
        let run = Run::new(1, 1, 1, 1, None, Some(0));
        let mut stats = ReadStats::new(new_histogram().unwrap(), &run);
        for i in 0..LATENCY_BATCH as u64 - 1 {
            stats.record_latency(100 + i, i % 2 == 0);
        }
        assert_eq!(stats.latency_us.len(), 0);
        stats.record_latency(MAX_LATENCY_US + 1, false);
        let storm = stats.storm_latency_us.as_ref().map(Histogram::len);
        assert_eq!((stats.latency_us.len(), storm), (128, Some(128)));
        assert_eq!(
            stats.latency_us.max(),
            stats.latency_us.highest_equivalent(MAX_LATENCY_US)
        );
        stats.record_latency(0, true);
        stats.flush_latencies();
        let storm = stats.storm_latency_us.as_ref().map(|h| (h.len(), h.min()));
        assert_eq!(
            storm,
            Some((129, 1)),
            "0 is recorded as 1 µs, in the storm phase"
        );
    }

    #[tokio::test]
    async fn a_waiting_reader_returns_at_the_stop() {
        let run = Run::new(1, 1, 1, 1, None, None);
        let (rd, mut wr) = tokio::io::duplex(1024);
        let reader = tokio::spawn(read_loop(
            rd,
            Incoming::after_login(&[], WireMode::Json),
            Arc::clone(&run),
            new_histogram().unwrap(),
        ));
        wr.write_all(b"{\"type\":\"device\"}\n").await.unwrap();
        tokio::task::yield_now().await;
        run.finish();
        let stats = tokio::time::timeout(Duration::from_secs(10), reader)
            .await
            .expect("the reader stopped")
            .unwrap();
        assert_eq!((stats.received, stats.error), (0, None));
        assert_eq!(
            run.ended.load(Ordering::Acquire),
            0,
            "a stop is not an early end"
        );
        // Open until here: an end of stream would have ended the reader too.
        drop(wr);
    }

    #[test]
    fn error_text_is_code_and_message() {
        assert_eq!(
            error_text(br#"{"type":"error","code":"bad_envelope","message":"envelope: x"}"#),
            "bad_envelope: envelope: x"
        );
        assert_eq!(error_text(b"{\"type\":\"error\""), "{\"type\":\"error\"");
    }

    #[test]
    fn bye_reason_is_read() {
        assert_eq!(
            bye_reason(br#"{"type":"bye","reason":"too slow: outbound queue full"}"#),
            "too slow: outbound queue full"
        );
    }
}
