//! The frames a client opens with (`hello`, then `login`) and the exchange up to `login_ok`.
//!
//! Both frames go out in one write: chatd reads them in order, and a login then costs one
//! round trip instead of two. Until `login_ok` chatd sends only JSON lines (binary frames, when
//! agreed, start after it), so the exchange splits lines and nothing else, and hands back the
//! bytes it read past `login_ok` for the caller's own reader.

use bytes::BytesMut;
use chatd_proto::PROTOCOL_VERSION;
use chatd_proto::frame::{ClientFrame, ServerFrame};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::Error;

/// Bytes asked of the stream at once while logging in.
const READ: usize = 64 * 1024;

/// A client's `hello`: this protocol version, `client` for chatd's logs, and a request for
/// binary envelope frames if `binary`.
pub fn hello(client: &str, binary: bool) -> ClientFrame {
    hello_with_features(client, binary, &[])
}

/// [`hello`] asking for optional `features` too (e.g. `vouch`).
pub fn hello_with_features(client: &str, binary: bool, features: &[&str]) -> ClientFrame {
    ClientFrame::Hello {
        version: PROTOCOL_VERSION,
        client: client.to_string(),
        binary,
        features: features.iter().map(|f| f.to_string()).collect(),
    }
}

/// A `login` as `user` presenting `device_key` (base64 SPKI DER).
pub fn login(user: &str, password: &str, device_key: &str) -> ClientFrame {
    ClientFrame::Login {
        user: user.into(),
        password: password.into(),
        device_key: device_key.into(),
        proof: None,
    }
}

/// `frames` as protocol lines, one after the other.
pub fn encode(frames: &[ClientFrame]) -> Result<Vec<u8>, Error> {
    let mut out = Vec::new();
    for frame in frames {
        out.extend_from_slice(&chatd_proto::frame::encode(frame).map_err(Error::Encode)?);
    }
    Ok(out)
}

/// Sends `frames` as protocol lines in one write.
pub async fn write_frames<W: AsyncWrite + Unpin>(
    wr: &mut W,
    frames: &[ClientFrame],
) -> Result<(), Error> {
    wr.write_all(&encode(frames)?).await?;
    wr.flush().await?;
    Ok(())
}

/// Checks that the server's `hello` line agreed to what the client asked for. A server that
/// answers a request for binary frames with JSON only is an error rather than a quiet fallback:
/// the caller would be measuring or testing the other wire format.
pub fn check_hello(line: &[u8], binary: bool) -> Result<(), Error> {
    if !binary {
        return Ok(());
    }
    let lossy = || String::from_utf8_lossy(line).trim().to_string();
    let text = std::str::from_utf8(line).map_err(|_| Error::BadHello(lossy()))?;
    match chatd_proto::frame::decode::<ServerFrame>(text) {
        Ok(ServerFrame::Hello { binary: true, .. }) => Ok(()),
        Ok(ServerFrame::Hello { server, .. }) => Err(Error::NoBinary { server }),
        _ => Err(Error::BadHello(lossy())),
    }
}

/// Says `hello` and reads the server's, which must be its first line and agree to what `hello`
/// asked for. Logs nobody in.
pub async fn greet<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    hello: ClientFrame,
) -> Result<(), Error> {
    let binary = asks_binary(&hello);
    write_frames(stream, &[hello]).await?;
    let mut lines = Lines::default();
    let Some(line) = lines.next(stream).await? else {
        return Err(Error::ClosedBeforeHello);
    };
    if !line.starts_with(br#"{"type":"hello""#) {
        return Err(Error::NotHello(
            String::from_utf8_lossy(&line).trim().to_string(),
        ));
    }
    check_hello(&line, binary)
}

/// Says `hello` and `login` and reads until `login_ok`, checking on the way that the server's
/// `hello` agreed to what `hello` asked for. Returns the bytes read past `login_ok`.
pub async fn log_in<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    hello: ClientFrame,
    login: ClientFrame,
) -> Result<BytesMut, Error> {
    let binary = asks_binary(&hello);
    write_frames(stream, &[hello, login]).await?;
    let mut lines = Lines::default();
    while let Some(line) = lines.next(stream).await? {
        if line.starts_with(br#"{"type":"hello""#) {
            check_hello(&line, binary)?;
        } else if line.starts_with(br#"{"type":"login_ok""#) {
            return Ok(lines.buf);
        } else if line.starts_with(br#"{"type":"error""#) || line.starts_with(br#"{"type":"bye""#) {
            return Err(Error::Refused(
                String::from_utf8_lossy(&line).trim().to_string(),
            ));
        }
    }
    Err(Error::ClosedDuringLogin)
}

fn asks_binary(hello: &ClientFrame) -> bool {
    matches!(hello, ClientFrame::Hello { binary: true, .. })
}

/// The server's lines before `login_ok`.
#[derive(Default)]
struct Lines {
    /// Read and not yet taken.
    buf: BytesMut,
    /// How far `buf` is known to hold no newline: a `login_ok` listing every device can take
    /// many reads, and each read is searched once.
    scanned: usize,
}

impl Lines {
    /// The next line, newline excluded, reading more as needed; None at the end of the stream.
    async fn next<R: AsyncRead + Unpin>(&mut self, rd: &mut R) -> Result<Option<BytesMut>, Error> {
        loop {
            if let Some(len) = memchr::memchr(b'\n', &self.buf[self.scanned..]) {
                let mut line = self.buf.split_to(self.scanned + len + 1);
                line.truncate(line.len() - 1);
                self.scanned = 0;
                return Ok(Some(line));
            }
            self.scanned = self.buf.len();
            self.buf.reserve(READ);
            if rd.read_buf(&mut self.buf).await? == 0 {
                return Ok(None);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::DuplexStream;

    const AGREED: &str = r#"{"type":"hello","version":2,"server":"chatd/0","max_line_bytes":65536,"max_text_bytes":4096,"binary":true}"#;
    const JSON_ONLY: &str = r#"{"type":"hello","version":2,"server":"chatd/0","max_line_bytes":65536,"max_text_bytes":4096}"#;

    /// A client end, and a server end that has already written `script` in `chunk`-byte
    /// pieces, and then ended its side of the stream if `end`.
    async fn scripted(script: &[u8], chunk: usize, end: bool) -> (DuplexStream, DuplexStream) {
        let (client, mut server) = tokio::io::duplex(1 << 20);
        for part in script.chunks(chunk) {
            server.write_all(part).await.unwrap();
        }
        if end {
            server.shutdown().await.unwrap();
        }
        (client, server)
    }

    /// What the server end read from the client.
    async fn sent(server: &mut DuplexStream, len: usize) -> String {
        let mut buf = vec![0; len];
        server.read_exact(&mut buf).await.unwrap();
        String::from_utf8(buf).unwrap()
    }

    #[test]
    fn hello_asks_for_binary_only_when_told() {
        let line = encode(&[hello("e2e", false)]).unwrap();
        let line = std::str::from_utf8(&line).unwrap();
        assert!(!line.contains("binary"), "{line}");
        assert!(matches!(
            hello("x", true),
            ClientFrame::Hello { binary: true, .. }
        ));
    }

    #[test]
    fn a_hello_must_agree_to_binary_when_asked() {
        assert!(check_hello(AGREED.as_bytes(), true).is_ok());
        assert!(check_hello(JSON_ONLY.as_bytes(), false).is_ok());
        let e = check_hello(JSON_ONLY.as_bytes(), true).unwrap_err();
        assert!(
            matches!(&e, Error::NoBinary { server } if server == "chatd/0"),
            "{e}"
        );
        assert!(matches!(
            check_hello(b"{\"type\":\"hello\"", true),
            Err(Error::BadHello(_))
        ));
        assert!(matches!(
            check_hello(b"\xff", true),
            Err(Error::BadHello(_))
        ));
    }

    #[tokio::test]
    async fn login_sends_both_frames_and_keeps_what_follows_login_ok() {
        let mut script = format!("{JSON_ONLY}\n{{\"type\":\"login_ok\",\"user\":\"a\"}}\n");
        script.push_str("{\"type\":\"presence\"}\npartial");
        for chunk in [1, 7, script.len()] {
            let (mut client, mut server) = scripted(script.as_bytes(), chunk, false).await;
            let rest = log_in(&mut client, hello("t", false), login("a", "pw", "KEY"))
                .await
                .unwrap();
            assert_eq!(
                &rest[..],
                b"{\"type\":\"presence\"}\npartial",
                "chunk {chunk}"
            );
            let want = encode(&[hello("t", false), login("a", "pw", "KEY")]).unwrap();
            assert_eq!(sent(&mut server, want.len()).await.as_bytes(), &want[..]);
        }
    }

    #[tokio::test]
    async fn login_fails_on_a_refusal_an_end_or_a_disagreeing_hello() {
        let refused = format!("{JSON_ONLY}\n{{\"type\":\"error\",\"code\":\"auth\"}}\n");
        let (mut client, _server) = scripted(refused.as_bytes(), 5, false).await;
        let e = log_in(&mut client, hello("t", false), login("a", "b", "c"))
            .await
            .unwrap_err();
        assert_eq!(e.to_string(), r#"refused: {"type":"error","code":"auth"}"#);

        let (mut client, _server) = scripted(JSON_ONLY.as_bytes(), 5, true).await;
        let e = log_in(&mut client, hello("t", false), login("a", "b", "c"))
            .await
            .unwrap_err();
        assert!(matches!(e, Error::ClosedDuringLogin), "{e}");

        let json_only = format!("{JSON_ONLY}\n{{\"type\":\"login_ok\"}}\n");
        let (mut client, _server) = scripted(json_only.as_bytes(), 64, false).await;
        let e = log_in(&mut client, hello("t", true), login("a", "b", "c"))
            .await
            .unwrap_err();
        assert!(matches!(e, Error::NoBinary { .. }), "{e}");
    }

    #[tokio::test]
    async fn greeting_reads_the_servers_hello_first() {
        let (mut client, _server) = scripted(format!("{AGREED}\n").as_bytes(), 3, false).await;
        greet(&mut client, hello("t", true)).await.unwrap();

        let (mut client, _server) = scripted(b"{\"type\":\"bye\"}\n", 64, false).await;
        let e = greet(&mut client, hello("t", false)).await.unwrap_err();
        assert_eq!(e.to_string(), r#"expected hello, got {"type":"bye"}"#);

        let (mut client, _server) = scripted(b"{\"type\":\"hel", 64, true).await;
        let e = greet(&mut client, hello("t", false)).await.unwrap_err();
        assert!(matches!(e, Error::ClosedBeforeHello), "{e}");
    }
}
