//! A client's TCP socket as the TLS layer sees it.
//!
//! rustls hands its queued records to the socket as a vectored write, and a vectored write
//! on a socket is `writev`, which goes through the file layer (the file position lock,
//! the iovec import) before it reaches TCP. When there is only one buffer (one record, as
//! when a room message reaches a quiet member) this type makes it a plain write, which is
//! `send`: straight to the socket layer. That path was ~6% of chatd's CPU in the paced
//! 500-member run (docs/PERFORMANCE.md, "Why it is fast").

use std::io::IoSlice;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A TCP stream whose single-buffer vectored writes are plain writes.
#[derive(Debug)]
pub struct Socket(pub TcpStream);

impl AsyncRead for Socket {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Socket {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let mut filled = bufs.iter().filter(|b| !b.is_empty());
        match (filled.next(), filled.next()) {
            (Some(only), None) => Pin::new(&mut self.0).poll_write(cx, only),
            _ => Pin::new(&mut self.0).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn vectored_writes_of_one_or_many_buffers_arrive_whole_and_in_order() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let mut w = Socket(client.unwrap());
        let mut r = Socket(accepted.unwrap().0);
        let writes: [&[&[u8]]; 4] = [
            &[b"one"],
            &[b"", b"two", b""],
            &[b"three", b"four"],
            &[b"", b""],
        ];
        let mut expected = Vec::new();
        for bufs in writes {
            let slices: Vec<IoSlice<'_>> = bufs.iter().map(|b| IoSlice::new(b)).collect();
            let total: usize = bufs.iter().map(|b| b.len()).sum();
            let n = w.write_vectored(&slices).await.unwrap();
            assert_eq!(n, total, "loopback takes a few bytes whole");
            expected.extend(bufs.concat());
        }
        w.shutdown().await.unwrap();
        let mut got = Vec::new();
        r.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, expected);
        assert_eq!(got, b"onetwothreefour");
    }
}
