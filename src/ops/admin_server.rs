//! Bounded serving of the admin and control routers over plain TCP.
//!
//! The admin server listens on the cluster network, so any neighbour can
//! connect. `axum::serve` gives hyper no timer, which turns hyper's
//! header-read timeout off: a neighbour could hold many connections, each
//! with a slowly growing head, until the gateway is OOM-killed and every
//! peer's tunnel goes with it. Here every connection has a header timeout,
//! a small head limit and a body limit, and the number of connections is
//! capped; past the cap new connections are closed at once.

use axum::Router;
use axum::extract::DefaultBodyLimit;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// A client must send a whole request head within this time; the same
/// timer closes idle keep-alive connections.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request head: the admin endpoints take no long URLs or headers.
pub const MAX_REQUEST_HEAD: usize = 16 * 1024;
/// Largest request body: every admin endpoint is a GET.
pub const MAX_REQUEST_BODY: usize = 16 * 1024;
/// Concurrent connections: a Prometheus scrape, kubelet probes and a few
/// humans need a handful; 64 bounds memory at about 64 × 16 KiB of heads.
pub const MAX_CONNECTIONS: usize = 64;
/// How long in-flight requests may take to finish at shutdown.
const DRAIN: Duration = Duration::from_secs(5);

/// Serves `router` on `listener` until `shutdown`.
pub async fn serve(listener: TcpListener, router: Router, shutdown: CancellationToken) {
    let router = router.layer(DefaultBodyLimit::max(MAX_REQUEST_BODY));
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let stream = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "admin server: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::debug!("admin server: connection cap reached, closing a new connection");
            drop(stream);
            continue;
        };
        let service = TowerToHyperService::new(router.clone());
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .max_buf_size(MAX_REQUEST_HEAD)
                .serve_connection(TokioIo::new(stream), service);
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(DRAIN, conn).await;
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn start() -> (std::net::SocketAddr, CancellationToken) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let router = Router::new().route("/healthz", get(|| async { "ok\n" }));
        tokio::spawn(serve(listener, router, stop.clone()));
        (addr, stop)
    }

    /// Reads until EOF or error; returns what arrived and whether it closed.
    async fn read_to_close(s: &mut tokio::net::TcpStream, within: Duration) -> (Vec<u8>, bool) {
        let mut got = Vec::new();
        let r = tokio::time::timeout(within, async {
            let mut buf = [0u8; 4096];
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
        })
        .await;
        (got, r.is_ok())
    }

    /// On tokio's paused clock: the 10 s header timer fires as soon as
    /// nothing else can run, so the test takes no real time.
    #[tokio::test(start_paused = true)]
    async fn a_connection_that_never_finishes_its_headers_is_closed() {
        let (addr, _stop) = start().await;
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: aaaa")
            .await
            .unwrap();
        let (_, closed) = read_to_close(&mut s, Duration::from_secs(15)).await;
        assert!(
            closed,
            "the server kept a connection with unfinished headers for 15 s"
        );
    }

    #[tokio::test]
    async fn an_oversized_head_is_refused() {
        let (addr, _stop) = start().await;
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let big = format!(
            "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
            "a".repeat(64 * 1024)
        );
        let _ = s.write_all(big.as_bytes()).await;
        let (got, closed) = read_to_close(&mut s, Duration::from_secs(5)).await;
        assert!(closed);
        assert!(!String::from_utf8_lossy(&got).contains(" 200 "));
    }

    #[tokio::test]
    async fn connections_past_the_cap_are_closed_and_the_rest_still_served() {
        let (addr, _stop) = start().await;
        let mut held = Vec::new();
        for _ in 0..MAX_CONNECTIONS {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
                .await
                .unwrap();
            held.push(s);
        }
        // Let the server accept them all.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut extra = tokio::net::TcpStream::connect(addr).await.unwrap();
        let _ = extra
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await;
        let (got, closed) = read_to_close(&mut extra, Duration::from_secs(5)).await;
        assert!(closed && got.is_empty(), "over the cap: {got:?}");
        drop(held);
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let (got, _) = read_to_close(&mut s, Duration::from_secs(5)).await;
        assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"));
    }
}
