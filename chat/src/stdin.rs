//! One buffered line reader over stdin, shared by the password, the trust prompt and the chat.
//!
//! A blocking thread does the reading, but only on demand: it reads the next line when
//! asked for it. Reading ahead would steal typing from `rpassword`, which reads the
//! same terminal through /dev/tty, and a second buffered reader would lose lines the
//! first had already buffered.

use std::io::{self, BufRead};
use std::sync::mpsc as std_mpsc;

use tokio::sync::mpsc;

/// Lines from stdin (or any reader, for tests), without their line endings.
pub struct LineReader {
    requests: std_mpsc::Sender<()>,
    lines: mpsc::Receiver<io::Result<Option<String>>>,
    /// A request was sent and its answer not yet received (a cancelled `next_line`).
    pending: bool,
    ended: bool,
}

impl LineReader {
    /// Reads the process's stdin.
    pub fn stdin() -> io::Result<Self> {
        // The lock is taken on the reading thread: a StdinLock cannot move between threads.
        Self::spawn(|| io::stdin().lock())
    }

    /// Reads `reader` on a background thread.
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn from_reader<R: BufRead + Send + 'static>(reader: R) -> io::Result<Self> {
        Self::spawn(move || reader)
    }

    fn spawn<R: BufRead>(make: impl FnOnce() -> R + Send + 'static) -> io::Result<Self> {
        let (req_tx, req_rx) = std_mpsc::channel::<()>();
        let (line_tx, line_rx) = mpsc::channel(1);
        std::thread::Builder::new()
            .name("stdin".into())
            .spawn(move || {
                let mut reader = make();
                // Ends when the LineReader is dropped (requests closed) or the receiver is gone.
                while req_rx.recv().is_ok() {
                    let item = read_line(&mut reader);
                    let done = !matches!(item, Ok(Some(_)));
                    if line_tx.blocking_send(item).is_err() || done {
                        break;
                    }
                }
            })?;
        Ok(LineReader {
            requests: req_tx,
            lines: line_rx,
            pending: false,
            ended: false,
        })
    }

    /// The next line, or `None` at end of input. Cancel-safe: a line is never lost.
    pub async fn next_line(&mut self) -> io::Result<Option<String>> {
        if self.ended {
            return Ok(None);
        }
        if !self.pending {
            if self.requests.send(()).is_err() {
                self.ended = true;
                return Ok(None);
            }
            self.pending = true;
        }
        let item = self.lines.recv().await;
        self.pending = false;
        match item {
            Some(Ok(Some(line))) => Ok(Some(line)),
            Some(Ok(None)) | None => {
                self.ended = true;
                Ok(None)
            }
            Some(Err(e)) => {
                self.ended = true;
                Err(e)
            }
        }
    }
}

/// One line without `\n` / `\r\n`; invalid UTF-8 is replaced rather than refused.
fn read_line(reader: &mut impl BufRead) -> io::Result<Option<String>> {
    let mut buf = Vec::new();
    if reader.read_until(b'\n', &mut buf)? == 0 {
        return Ok(None);
    }
    if buf.last() == Some(&b'\n') {
        buf.pop();
        if buf.last() == Some(&b'\r') {
            buf.pop();
        }
    }
    Ok(Some(String::from_utf8_lossy(&buf).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[tokio::test]
    async fn lines_then_eof_and_cancel_safety() {
        let mut r = LineReader::from_reader(Cursor::new(b"pw\r\nhello\n\nlast".to_vec())).unwrap();
        assert_eq!(r.next_line().await.unwrap().as_deref(), Some("pw"));
        // A read cancelled after its first poll must not lose its line.
        let mut got = None;
        tokio::select! {
            biased;
            line = r.next_line() => got = Some(line.unwrap()),
            () = std::future::ready(()) => {}
        }
        let line = match got {
            Some(line) => line,
            None => r.next_line().await.unwrap(),
        };
        assert_eq!(line.as_deref(), Some("hello"));
        assert_eq!(r.next_line().await.unwrap().as_deref(), Some(""));
        assert_eq!(r.next_line().await.unwrap().as_deref(), Some("last"));
        assert_eq!(r.next_line().await.unwrap(), None);
        assert_eq!(r.next_line().await.unwrap(), None);
    }

    #[tokio::test]
    async fn invalid_utf8_is_replaced() {
        let mut r = LineReader::from_reader(Cursor::new(b"a\xffb\n".to_vec())).unwrap();
        assert_eq!(r.next_line().await.unwrap().as_deref(), Some("a\u{fffd}b"));
    }
}
