//! Receiver threads: after login, a receiver's socket and TLS state leave tokio for one of a
//! few plain threads, each an epoll loop (mio) over its share of the receivers, driving rustls
//! directly.
//!
//! Why: chat-bench shares the two cores with chatd, so every microsecond a receiver spends on
//! a delivery is taken from chatd's fan-out and shows in the latency it measures. As tokio
//! tasks, the receivers spent about a fifth of chat-bench's CPU on the runtime (waking,
//! scheduling and polling a task per delivery) and on tokio-rustls's adapters around the same
//! rustls calls made here.
//!
//! Each read is one `recv` of up to 64 KiB into the thread's buffer, from which rustls takes
//! the records; a read shorter than the buffer emptied the socket, so the thread goes back to
//! epoll without the `recv` that would say so (epoll is edge-triggered: data that arrives
//! later is a new event). Senders keep their tokio reader, since they share the stream with
//! their writer.

use std::io::{BufRead, ErrorKind, Read};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::Context;
use hdrhistogram::Histogram;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token, Waker};
use rustls::ClientConnection;
use tokio::sync::oneshot;

use chatd_testkit::Tls;

use crate::incoming::Incoming;
use crate::reader::{Acks, CLOSED, ReadStats, Receiver};
use crate::run::Run;

/// The token of a thread's waker: new receivers are waiting in its channel.
const WAKE: Token = Token(usize::MAX);
/// Longest sleep in epoll: a thread looks at the stop flags at least this often, so a quiet
/// receiver set stops this long after [`Run::finish`] at most. Busy threads look after
/// every wake-up.
const STOP_CHECK: Duration = Duration::from_millis(50);
/// Events taken from epoll at once.
const EVENTS: usize = 1024;
/// Each thread's read buffer: chatd writes up to 64 KiB at once.
const READ: usize = 64 * 1024;

/// One thread: its channel and the waker that tells it to look there.
struct Thread {
    handoff: mpsc::Sender<Conn>,
    waker: Waker,
}

/// The receiver threads of one run. Dropping it stops them (the run's receivers then end
/// without figures).
pub struct Receivers {
    threads: Vec<Thread>,
    /// Round robin over `threads`.
    next: AtomicUsize,
    /// Set when this is dropped, for threads whose run never finishes (a setup error).
    dropped: Arc<AtomicBool>,
}

impl Receivers {
    /// Starts `count` threads (at least one) reading for `run`.
    pub fn start(count: usize, run: &Arc<Run>) -> anyhow::Result<Receivers> {
        let dropped = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::with_capacity(count.max(1));
        for i in 0..count.max(1) {
            let poll = Poll::new().context("cannot create an epoll instance")?;
            let waker = Waker::new(poll.registry(), WAKE).context("cannot create an eventfd")?;
            let (handoff, arrivals) = mpsc::channel();
            let (run, dropped) = (Arc::clone(run), Arc::clone(&dropped));
            std::thread::Builder::new()
                .name(format!("receiver-{i}"))
                .spawn(move || serve(poll, &arrivals, &run, &dropped))
                .context("cannot start a receiver thread")?;
            threads.push(Thread { handoff, waker });
        }
        Ok(Receivers {
            threads,
            next: AtomicUsize::new(0),
            dropped,
        })
    }

    /// Hands a logged-in client (`tls`, and what login read past `login_ok`) to a thread; its
    /// figures arrive on the returned channel once the run finishes or the stream ends.
    pub fn add(
        &self,
        tls: Tls,
        incoming: Incoming,
        run: &Run,
        latency_us: Histogram<u64>,
    ) -> anyhow::Result<oneshot::Receiver<ReadStats>> {
        let (tcp, tls) = tls.into_inner();
        // Still non-blocking, as tokio left it; deregistered from tokio's driver.
        let stream = TcpStream::from_std(tcp.into_std().context("cannot take the socket")?);
        let (done, stats) = oneshot::channel();
        let handoff = Conn {
            stream,
            tls,
            receiver: Receiver::new(incoming, run, latency_us),
            done,
        };
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.threads.len();
        let thread = &self.threads[i];
        thread
            .handoff
            .send(handoff)
            .ok()
            .context("a receiver thread has stopped")?;
        thread
            .waker
            .wake()
            .context("cannot wake a receiver thread")?;
        Ok(stats)
    }
}

impl Drop for Receivers {
    fn drop(&mut self) {
        self.dropped.store(true, Ordering::Release);
        for t in &self.threads {
            // A thread that cannot be woken still sees the flag within STOP_CHECK.
            let _ = t.waker.wake();
        }
    }
}

/// One receiver, handed to a thread.
struct Conn {
    stream: TcpStream,
    tls: ClientConnection,
    receiver: Receiver,
    done: oneshot::Sender<ReadStats>,
}

impl Conn {
    /// Reads what the socket holds, through the thread's buffer `buf`, and counts its frames;
    /// false when the stream ended (the receiver's figures say why). `to_the_end`: epoll saw
    /// the end of the stream (or an error) already, so a short read is no sign of an empty
    /// socket; read until it says so, since no later event will come.
    fn readable(&mut self, run: &Run, acks: &mut Acks, buf: &mut [u8], to_the_end: bool) -> bool {
        loop {
            let n = match self.stream.read(buf) {
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return self.fail(e.to_string()),
            };
            self.receiver.arrived(run);
            // rustls takes at most 4 KiB per read_tls; reading it from memory rather than
            // from the socket makes a 64 KiB write from chatd one `recv` instead of sixteen.
            let mut rest = &buf[..n];
            while !rest.is_empty() {
                match self.tls.read_tls(&mut rest) {
                    // Only after close_notify, which `plaintext` has reported.
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) => return self.fail(format!("TLS: {e}")),
                }
                if !self.plaintext(run, acks) {
                    return false;
                }
            }
            if n == 0 {
                // Frames complete before the end were counted above.
                return self.fail(CLOSED.into());
            }
            if n < buf.len() && !to_the_end {
                return true;
            }
        }
    }

    /// Decrypts what rustls holds and counts the complete frames; false when the stream ended.
    fn plaintext(&mut self, run: &Run, acks: &mut Acks) -> bool {
        if let Err(e) = self.tls.process_new_packets() {
            return self.fail(format!("TLS: {e}"));
        }
        // A key update, say, needs an answer; if the socket cannot take it now, the next
        // read's turn tries again.
        while self.tls.wants_write() {
            if self.tls.write_tls(&mut self.stream).is_err() {
                break;
            }
        }
        let mut reader = self.tls.reader();
        let closed = loop {
            match reader.fill_buf() {
                // The server's close_notify.
                Ok([]) => break true,
                Ok(chunk) => {
                    let n = chunk.len();
                    self.receiver.extend(chunk);
                    reader.consume(n);
                }
                // WouldBlock: nothing more yet. UnexpectedEof: the read saw the end of the
                // stream, which `readable` reports after these frames.
                Err(_) => break false,
            }
        };
        if !self.receiver.frames(run, acks) {
            return false;
        }
        if closed {
            return self.fail(CLOSED.into());
        }
        true
    }

    /// Ends this receiver's stream with `error`; false.
    fn fail(&mut self, error: String) -> bool {
        self.receiver.stats.error = Some(error);
        false
    }

    /// Sends the figures (nobody may be waiting any more: a setup error).
    fn finish(self) {
        let _ = self.done.send(self.receiver.into_stats());
    }
}

/// A thread's loop: takes handed-off receivers, reads them as epoll says, and sends each
/// receiver's figures when its stream ends or the run (or the [`Receivers`]) stops.
fn serve(poll: Poll, arrivals: &mpsc::Receiver<Conn>, run: &Run, dropped: &AtomicBool) {
    let mut thread = ThreadState {
        poll,
        conns: Vec::new(),
        acks: Acks::default(),
        buf: vec![0; READ].into_boxed_slice(),
    };
    let mut events = Events::with_capacity(EVENTS);
    while !run.stopping() && !dropped.load(Ordering::Acquire) {
        if let Err(e) = thread.poll.poll(&mut events, Some(STOP_CHECK)) {
            if e.kind() == ErrorKind::Interrupted {
                continue;
            }
            // Without epoll this thread cannot read: its receivers end with the error.
            for slot in 0..thread.conns.len() {
                if let Some(conn) = thread.conns[slot].as_mut() {
                    conn.fail(format!("epoll: {e}"));
                    thread.end(slot, run);
                }
            }
            return;
        }
        for event in &events {
            let slot = event.token().0;
            if event.token() == WAKE {
                while let Ok(conn) = arrivals.try_recv() {
                    thread.accept(conn, run);
                }
                continue;
            }
            let ThreadState {
                conns, acks, buf, ..
            } = &mut thread;
            let Some(conn) = conns.get_mut(slot).and_then(Option::as_mut) else {
                continue;
            };
            let to_the_end = event.is_read_closed() || event.is_error();
            if !conn.readable(run, acks, buf, to_the_end) {
                thread.end(slot, run);
            }
        }
        thread.acks.flush(run);
    }
    // Receivers handed over after the stop have read nothing; they still report.
    while let Ok(conn) = arrivals.try_recv() {
        thread.accept(conn, run);
    }
    thread.acks.flush(run);
    for conn in thread.conns.into_iter().flatten() {
        conn.finish();
    }
}

/// What one receiver thread keeps.
struct ThreadState {
    poll: Poll,
    /// By token; None once a stream ended.
    conns: Vec<Option<Conn>>,
    /// Deliveries read since this thread's last wake-up.
    acks: Acks,
    /// What a read takes from a socket, before rustls has it.
    buf: Box<[u8]>,
}

impl ThreadState {
    /// Registers a handed-off receiver, and counts what login already read and decrypted.
    fn accept(&mut self, mut conn: Conn, run: &Run) {
        let slot = self.conns.len();
        let registered =
            self.poll
                .registry()
                .register(&mut conn.stream, Token(slot), Interest::READABLE);
        // Frames already in rustls or in the buffer; the socket itself is reported by epoll,
        // which signals a registration that is already readable.
        let alive = match registered {
            Ok(()) => conn.plaintext(run, &mut self.acks),
            Err(e) => conn.fail(format!("epoll: {e}")),
        };
        self.conns.push(Some(conn));
        if !alive {
            self.end(slot, run);
        }
    }

    /// A receiver's stream ended: it stops reading, the run stops waiting for it, and its
    /// figures are sent.
    fn end(&mut self, slot: usize, run: &Run) {
        let Some(mut conn) = self.conns.get_mut(slot).and_then(Option::take) else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut conn.stream);
        run.receiver_ended();
        conn.finish();
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::net::TcpListener;

    use chatd_proto::Fingerprint;
    use chatd_proto::codec::binary_envelope;
    use rustls::pki_types::PrivatePkcs8KeyDer;

    use super::*;
    use crate::cli::WireMode;
    use crate::incoming::tests::send_payload;
    use crate::latency::new_histogram;

    /// What the test server does on a connection, in order.
    enum Step {
        /// Writes these bytes as one TLS record.
        Write(Vec<u8>),
        /// Sends TLS close_notify and closes.
        CloseNotify,
        /// Closes the TCP connection without close_notify.
        Drop,
        /// Keeps the connection open until the test says so.
        Hold(mpsc::Receiver<()>),
    }

    /// A TLS server on 127.0.0.1 with a fresh self-signed certificate: its address, the
    /// certificate's fingerprint, and its configuration.
    fn tls_server() -> (TcpListener, Fingerprint, Arc<rustls::ServerConfig>) {
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let der = certified.cert.der().clone();
        let key = PrivatePkcs8KeyDer::from(certified.signing_key.serialize_der());
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![der.clone()], key.into())
        .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        (listener, Fingerprint::of(&der), Arc::new(config))
    }

    /// Accepts one connection on a thread and plays `steps` on it.
    fn serve_one(
        listener: &TcpListener,
        config: &Arc<rustls::ServerConfig>,
        steps: Vec<Step>,
    ) -> std::thread::JoinHandle<()> {
        let listener = listener.try_clone().unwrap();
        let config = Arc::clone(config);
        std::thread::spawn(move || {
            let (tcp, _) = listener.accept().unwrap();
            let conn = rustls::ServerConnection::new(config).unwrap();
            let mut tls = rustls::StreamOwned::new(conn, tcp);
            // Before any step: the client waits for the handshake.
            while tls.conn.is_handshaking() {
                tls.conn.complete_io(&mut tls.sock).unwrap();
            }
            for step in steps {
                match step {
                    Step::Write(bytes) => {
                        tls.write_all(&bytes).unwrap();
                        tls.flush().unwrap();
                        // Apart, so the reader sees them in separate reads.
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    Step::CloseNotify => {
                        tls.conn.send_close_notify();
                        tls.flush().unwrap();
                        return;
                    }
                    Step::Drop => return,
                    Step::Hold(until) => {
                        let _ = until.recv();
                    }
                }
            }
        })
    }

    async fn connect(listener: &TcpListener, fingerprint: Fingerprint) -> Tls {
        let addr = listener.local_addr().unwrap();
        let connector = chatd_testkit::connector(fingerprint).unwrap();
        chatd_testkit::connect(addr, &connector).await.unwrap()
    }

    /// Three receivers on one thread: one ends with a `bye` and close_notify, one with the end
    /// of the TCP stream, one stays open until the run finishes. Frames read at login, in
    /// later records and in the last read before the end all count.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn receiver_threads_read_to_a_bye_an_end_or_the_stop() {
        let keys = crate::e2e::Keys::load(2048).unwrap();
        let sealed = crate::e2e::seal_all(&keys, 1, 3, 20, WireMode::Binary).unwrap();
        let frame = |i: usize| binary_envelope(1, &send_payload(&sealed.frames[0][i])).to_vec();
        let run = Run::new(3, 1, 3, 3, Some(10), None);
        for slot in &run.sent_ns[0] {
            slot.store(1, Ordering::Release);
        }
        let receivers = Receivers::start(1, &run).unwrap();
        let (listener, fingerprint, config) = tls_server();
        let (hold, held) = mpsc::channel();
        let mut bye = frame(2);
        bye.extend_from_slice(b"{\"type\":\"bye\",\"reason\":\"quit\"}\n");
        let scripts = [
            vec![Step::Write(frame(1)), Step::Write(bye), Step::CloseNotify],
            vec![Step::Write(frame(0)), Step::Write(frame(1)), Step::Drop],
            vec![Step::Hold(held)],
        ];
        let (mut stats, mut servers) = (Vec::new(), Vec::new());
        let read_at_login = [frame(0), vec![], frame(0)];
        for (i, (script, read_at_login)) in scripts.into_iter().zip(read_at_login).enumerate() {
            // One accepting thread at a time, so each script gets its connection.
            servers.push(serve_one(&listener, &config, script));
            let tls = connect(&listener, fingerprint).await;
            let incoming = Incoming::after_login(&read_at_login, WireMode::Binary);
            stats.push(
                receivers
                    .add(tls, incoming, &run, new_histogram().unwrap())
                    .unwrap(),
            );
            if i < 2 {
                // The first two end on their own, before the run does.
                let done = tokio::time::timeout(Duration::from_secs(10), stats.remove(0));
                let s = done
                    .await
                    .expect("the stream's end ends the receiver")
                    .unwrap();
                let expected = if i == 0 {
                    (3, Some("quit"), None)
                } else {
                    (2, None, Some(CLOSED))
                };
                assert_eq!((s.received, s.bye.as_deref(), s.error.as_deref()), expected);
                assert_eq!(s.latency_us.len(), s.received);
                assert_eq!(run.ended.load(Ordering::Acquire), i + 1);
            }
        }
        assert_eq!(
            run.complete.load(Ordering::Acquire),
            1,
            "the first has all 3"
        );
        run.finish();
        let s = tokio::time::timeout(Duration::from_secs(10), stats.remove(0))
            .await
            .expect("the stop ends the receiver")
            .unwrap();
        assert_eq!((s.received, s.bye, s.error), (1, None, None));
        assert_eq!(
            run.ended.load(Ordering::Acquire),
            2,
            "a stop is not an early end"
        );
        // Every receiver counted message 0 (the window's counters): through index 0 at least.
        assert!(run.delivered_through[0].load(Ordering::Acquire) >= 1);
        drop(hold);
        for s in servers {
            s.join().unwrap();
        }
    }
}
