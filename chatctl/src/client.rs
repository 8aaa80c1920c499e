//! One request/response round trip over chatd's Unix control socket.
//!
//! The protocol is one JSON line each way (see `chatd_proto::control`). Blocking std
//! I/O is enough here: chatctl sends a single request and waits for its answer.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use chatd_proto::control::{ControlRequest, ControlResponse, MAX_CONTROL_LINE};
use chatd_proto::frame;

/// How long to wait for chatd to accept a request or answer it.
pub const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// A connection to chatd's control socket.
#[derive(Debug)]
pub struct Client {
    /// Buffered for line reads; writes go through `get_mut()` and are not buffered.
    stream: BufReader<UnixStream>,
    path: PathBuf,
}

/// chatd's answer: the line as received (for `--json`) and its parsed form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The response line, without its line ending.
    pub line: String,
    /// The parsed response.
    pub response: ControlResponse,
}

impl Client {
    /// Connects to the control socket at `path`, with [`IO_TIMEOUT`] on reads and writes.
    pub fn connect(path: &Path) -> Result<Self> {
        let stream = UnixStream::connect(path).map_err(|e| {
            anyhow!(
                "cannot connect to {}: {}{}",
                path.display(),
                describe_io_error(&e),
                connect_hint(&e)
            )
        })?;
        stream
            .set_read_timeout(Some(IO_TIMEOUT))
            .context("setting the socket read timeout")?;
        stream
            .set_write_timeout(Some(IO_TIMEOUT))
            .context("setting the socket write timeout")?;
        Ok(Client {
            stream: BufReader::new(stream),
            path: path.to_path_buf(),
        })
    }

    /// Sends `request` and waits for chatd's one-line answer.
    pub fn request(&mut self, request: &ControlRequest) -> Result<Reply> {
        let line = frame::encode(request).context("encoding the request")?;
        // The encoded line ends with '\n', which the server's cap does not count.
        if line.len() > MAX_CONTROL_LINE + 1 {
            bail!("request is longer than {MAX_CONTROL_LINE} bytes");
        }
        let path = self.path.display().to_string();
        let sock = self.stream.get_mut();
        if let Err(e) = sock.write_all(&line).and_then(|()| sock.flush()) {
            // chatd answers a refused peer (permission_denied) and closes without reading the
            // request, so the write may fail while its answer waits to be read: show that.
            return self
                .read_response()
                .map_err(|_| anyhow!("sending the request to {path}: {}", describe_io_error(&e)));
        }
        self.read_response()
    }

    fn read_response(&mut self) -> Result<Reply> {
        let mut buf = Vec::new();
        // One byte over the cap tells an overlong line from one exactly at the cap.
        let limit = MAX_CONTROL_LINE as u64 + 1;
        (&mut self.stream)
            .take(limit)
            .read_until(b'\n', &mut buf)
            .map_err(|e| match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                    anyhow!("no answer from chatd within {} s", IO_TIMEOUT.as_secs())
                }
                _ => anyhow!("reading the response: {}", describe_io_error(&e)),
            })?;
        match buf.last() {
            Some(b'\n') => {
                buf.pop();
                if buf.last() == Some(&b'\r') {
                    buf.pop();
                }
            }
            None => bail!("chatd closed the connection without answering"),
            Some(_) if buf.len() > MAX_CONTROL_LINE => {
                bail!("response from chatd is longer than {MAX_CONTROL_LINE} bytes")
            }
            Some(_) => bail!("chatd closed the connection in the middle of a response"),
        }
        let line = String::from_utf8(buf).context("response from chatd is not UTF-8")?;
        let response: ControlResponse = frame::decode(&line)
            .with_context(|| "cannot understand the response from chatd".to_string())?;
        Ok(Reply { line, response })
    }
}

/// An I/O error's text without the trailing " (os error N)".
fn describe_io_error(e: &io::Error) -> String {
    let text = e.to_string();
    match e.raw_os_error() {
        Some(code) => text
            .strip_suffix(&format!(" (os error {code})"))
            .map_or_else(|| text.clone(), str::to_string),
        None => text,
    }
}

/// What the user can probably do about a failed connect.
fn connect_hint(e: &io::Error) -> &'static str {
    match e.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => {
            " (is chatd running? use --socket PATH)"
        }
        io::ErrorKind::PermissionDenied => {
            " (run as root or as a member of chatd's admin group, default chatd-admin)"
        }
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chatd_proto::control::ControlErrorCode;
    use std::os::unix::net::UnixListener;
    use std::thread;

    #[test]
    fn an_answer_sent_before_the_request_was_read_is_shown() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let server = thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            s.write_all(
                b"{\"type\":\"error\",\"code\":\"permission_denied\",\"message\":\"permission denied\"}\n",
            )
            .unwrap();
        });
        let mut client = Client::connect(&path).unwrap();
        // Closed before the request is written: the write fails with EPIPE.
        server.join().unwrap();
        let reply = client.request(&ControlRequest::Status).unwrap();
        assert!(matches!(
            reply.response,
            ControlResponse::Error {
                code: ControlErrorCode::PermissionDenied,
                ..
            }
        ));
    }

    /// Serves one connection: reads a request line, hands it to `answer`, writes the bytes it returns.
    fn serve_once(
        answer: impl FnOnce(String) -> Vec<u8> + Send + 'static,
    ) -> (tempfile::TempDir, PathBuf, thread::JoinHandle<String>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let handle = thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream);
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let out = answer(line.clone());
            // The client may hang up early (oversized answer); that is fine.
            let _ = reader.get_mut().write_all(&out);
            line
        });
        (dir, path, handle)
    }

    #[test]
    fn sends_one_line_and_parses_the_answer() {
        let (_dir, path, server) =
            serve_once(|_| b"{\"type\":\"done\",\"message\":\"user alice added\"}\n".to_vec());
        let mut client = Client::connect(&path).unwrap();
        let reply = client
            .request(&ControlRequest::UserAdd {
                user: "alice".into(),
                password: "pw".into(),
                admin: true,
            })
            .unwrap();
        assert_eq!(
            reply.response,
            ControlResponse::Done {
                message: "user alice added".into()
            }
        );
        assert_eq!(
            reply.line,
            r#"{"type":"done","message":"user alice added"}"#
        );
        let sent = server.join().unwrap();
        assert_eq!(
            sent,
            "{\"type\":\"user_add\",\"user\":\"alice\",\"password\":\"pw\",\"admin\":true}\n"
        );
    }

    #[test]
    fn parses_error_responses_with_crlf() {
        let (_dir, path, server) = serve_once(|_| {
            b"{\"type\":\"error\",\"code\":\"no_such_user\",\"message\":\"no user bob\"}\r\n"
                .to_vec()
        });
        let reply = Client::connect(&path)
            .unwrap()
            .request(&ControlRequest::Who)
            .unwrap();
        assert_eq!(
            reply.response,
            ControlResponse::Error {
                code: ControlErrorCode::NoSuchUser,
                message: "no user bob".into()
            }
        );
        assert_eq!(server.join().unwrap(), "{\"type\":\"who\"}\n");
    }

    #[test]
    fn sends_key_revoke_and_parses_no_such_key() {
        let (_dir, path, server) = serve_once(|_| {
            b"{\"type\":\"error\",\"code\":\"no_such_key\",\"message\":\"no key\"}\n".to_vec()
        });
        let reply = Client::connect(&path)
            .unwrap()
            .request(&ControlRequest::KeyRevoke {
                user: "alice".into(),
                fingerprint: chatd_proto::Fingerprint::of(b""),
            })
            .unwrap();
        assert_eq!(
            reply.response,
            ControlResponse::Error {
                code: ControlErrorCode::NoSuchKey,
                message: "no key".into()
            }
        );
        assert_eq!(
            server.join().unwrap(),
            "{\"type\":\"key_revoke\",\"user\":\"alice\",\"fingerprint\":\
             \"SHA256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\"}\n"
        );
    }

    #[test]
    fn accepts_a_response_exactly_at_the_cap() {
        let (_dir, path, _server) = serve_once(|_| {
            let empty = r#"{"type":"done","message":""}"#.len();
            let msg = "x".repeat(MAX_CONTROL_LINE - empty);
            let mut out = format!(r#"{{"type":"done","message":"{msg}"}}"#).into_bytes();
            assert_eq!(out.len(), MAX_CONTROL_LINE);
            out.push(b'\n');
            out
        });
        let reply = Client::connect(&path)
            .unwrap()
            .request(&ControlRequest::Status)
            .unwrap();
        assert_eq!(reply.line.len(), MAX_CONTROL_LINE);
    }

    #[test]
    fn refuses_an_oversized_response() {
        let (_dir, path, _server) = serve_once(|_| {
            let msg = "x".repeat(MAX_CONTROL_LINE);
            format!("{{\"type\":\"done\",\"message\":\"{msg}\"}}\n").into_bytes()
        });
        let err = Client::connect(&path)
            .unwrap()
            .request(&ControlRequest::Status)
            .unwrap_err();
        assert_eq!(
            format!("{err:#}"),
            format!("response from chatd is longer than {MAX_CONTROL_LINE} bytes")
        );
    }

    #[test]
    fn a_closed_connection_is_an_error() {
        let (_dir, path, server) = serve_once(|_| Vec::new());
        let err = Client::connect(&path)
            .unwrap()
            .request(&ControlRequest::Status)
            .unwrap_err();
        assert_eq!(
            format!("{err:#}"),
            "chatd closed the connection without answering"
        );
        assert_eq!(server.join().unwrap(), "{\"type\":\"status\"}\n");
    }

    #[test]
    fn a_truncated_response_is_an_error() {
        let (_dir, path, _server) = serve_once(|_| b"{\"type\":\"do".to_vec());
        let err = Client::connect(&path)
            .unwrap()
            .request(&ControlRequest::Status)
            .unwrap_err();
        assert!(
            format!("{err:#}").contains("middle of a response"),
            "{err:#}"
        );
    }

    #[test]
    fn garbage_is_reported() {
        let (_dir, path, _server) = serve_once(|_| b"hello\n".to_vec());
        let err = Client::connect(&path)
            .unwrap()
            .request(&ControlRequest::Status)
            .unwrap_err();
        assert!(
            format!("{err:#}").starts_with("cannot understand the response from chatd: "),
            "{err:#}"
        );
    }

    #[test]
    fn a_missing_socket_names_the_path_and_a_hint() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nope.sock");
        let err = Client::connect(&path).unwrap_err();
        assert_eq!(
            format!("{err:#}"),
            format!(
                "cannot connect to {}: No such file or directory (is chatd running? use --socket PATH)",
                path.display()
            )
        );
    }
}
