//! The OpenMetrics listener (`[metrics] listen`): `GET /metrics` and nothing else.
//!
//! HTTP/1.1 by hyper (server and http1 features only): a hand-written parser would be one
//! more thing facing the network to get right. The listener runs as a task of its own; a
//! scrape reads atomics and formats a few kilobytes in memory, then writes them at the
//! scraper's pace on its own connection task, so a slow or stuck scraper holds nothing chat
//! traffic needs. Requests are bounded: headers fit in hyper's smallest buffer (8 KiB),
//! bodies are never read, one request per connection, a few connections at once, and each
//! connection is dropped after [`CONNECTION_TIMEOUT`].

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// Connections served at once; more are closed at once (a scraper retries next interval).
const MAX_CONNECTIONS: usize = 4;
/// The longest a connection may take, from accept to the last byte of the answer.
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);
/// hyper's smallest read buffer: a request whose headers do not fit is refused.
const MAX_REQUEST_BYTES: usize = 8192;

/// The answer to one request: the metrics for `GET /metrics`, 404 for anything else.
pub fn respond(method: &Method, path: &str) -> Response<Full<Bytes>> {
    let mut response = if method == Method::GET && path == "/metrics" {
        let mut r = Response::new(Full::new(Bytes::from(super::get().encode())));
        r.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static(super::CONTENT_TYPE));
        r
    } else {
        let mut r = Response::new(Full::new(Bytes::from_static(b"not found\n")));
        *r.status_mut() = StatusCode::NOT_FOUND;
        r.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        r
    };
    // Hard to guess, but a scrape must never be served from a cache.
    response.headers_mut().insert(
        hyper::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    response
}

async fn handle(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(respond(request.method(), request.uri().path()))
}

/// Serves scrapes on `listener` until `shutdown` fires.
pub async fn serve(listener: TcpListener, shutdown: CancellationToken) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let stream = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors, most likely: wait rather than spin.
                    tracing::warn!(error = %e, "metrics listener: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
            tracing::debug!("metrics listener: too many connections; one closed");
            continue;
        };
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let connection = hyper::server::conn::http1::Builder::new()
                .keep_alive(false)
                .max_buf_size(MAX_REQUEST_BYTES)
                .serve_connection(TokioIo::new(stream), hyper::service::service_fn(handle));
            tokio::select! {
                _ = shutdown.cancelled() => {}
                done = tokio::time::timeout(CONNECTION_TIMEOUT, connection) => match done {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::debug!(error = %e, "metrics request failed"),
                    Err(_) => tracing::debug!("metrics connection timed out"),
                },
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_get_metrics_is_served() {
        let ok = respond(&Method::GET, "/metrics");
        assert_eq!(ok.status(), StatusCode::OK);
        assert_eq!(ok.headers()[CONTENT_TYPE], super::super::CONTENT_TYPE);
        for (method, path) in [
            (Method::GET, "/"),
            (Method::GET, "/metrics/x"),
            (Method::POST, "/metrics"),
            (Method::HEAD, "/metrics"),
        ] {
            assert_eq!(respond(&method, path).status(), StatusCode::NOT_FOUND);
        }
    }
}
