//! The upstream side of one tunnel connection: an HTTP/1.1 connection to
//! its upstream (Prometheus, Alertmanager, ...) that is driven by the
//! tunnel connection's own future.
//!
//! hyper's pooled client runs every upstream connection as a task of its
//! own, so each request crossed two more task wake-ups (request in,
//! response out) on top of the tunnel connection's. Here the tunnel
//! connection's future polls its upstream connection itself
//! ([`WithUpstream`]), and the whole request path runs in one task: the
//! driver's. A connection the peer is done with goes to a small idle list
//! for the next tunnel connection to take over, as a pool would.

use bytes::Bytes;
use http::{Request, Response, Uri};
use http_body_util::combinators::BoxBody;
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// Why the upstream gave no response head. Every kind is a 502 for the
/// peer except [`UpstreamError::TimedOut`], a 504: retrying may work once
/// Prometheus is less busy.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UpstreamError {
    #[error("the upstream URL has no host")]
    NoHost,
    #[error("connect timed out after {0:?}")]
    ConnectTimedOut(Duration),
    #[error("connect: {0}")]
    Connect(#[source] std::io::Error),
    #[error("handshake: {0}")]
    Handshake(#[source] hyper::Error),
    /// The request failed on an open connection (it broke off, or the
    /// upstream sent no valid response).
    #[error("{0}")]
    Request(#[source] hyper::Error),
    #[error("no response within {0:?}")]
    TimedOut(Duration),
}

/// What a request body to the upstream is: the peer's streamed body, or
/// one rebuilt in memory (scoped requests).
pub(crate) type UpstreamBody = BoxBody<Bytes, hyper::Error>;

/// hyper's connection future: reads and writes the upstream socket.
type ConnIo = Pin<Box<dyn Future<Output = hyper::Result<()>> + Send>>;

/// Idle upstream connections kept for reuse, and for how long. Prometheus
/// closes idle connections after its read timeout (5 minutes by default).
const MAX_IDLE: usize = 64;
const IDLE_FOR: Duration = Duration::from_secs(60);

/// An upstream connection: the handle to send on and the I/O future.
struct Conn {
    sender: SendRequest<UpstreamBody>,
    io: ConnIo,
}

impl Conn {
    /// Runs the connection's I/O; false once it has ended.
    fn poll_io(&mut self, cx: &mut Context<'_>) -> bool {
        self.io.as_mut().poll(cx).is_pending()
    }

    /// Usable for a new request: not closed, nothing in flight, and the
    /// socket has not been closed by the upstream while idle.
    fn is_reusable(&mut self) -> bool {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        self.poll_io(&mut cx) && self.sender.is_ready()
    }
}

/// Where connections come from: the upstream's address, and the idle list
/// shared by every tunnel connection.
pub(crate) struct Connector {
    upstream: Uri,
    connect_timeout: Duration,
    idle: Mutex<Vec<(Conn, Instant)>>,
}

impl Connector {
    pub(crate) fn new(upstream: Uri, connect_timeout: Duration) -> Self {
        Connector {
            upstream,
            connect_timeout,
            idle: Mutex::new(Vec::new()),
        }
    }

    fn idle(&self) -> MutexGuard<'_, Vec<(Conn, Instant)>> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The most recently used idle connection that is still good.
    fn take_idle(&self) -> Option<Conn> {
        let mut idle = self.idle();
        while let Some((mut conn, since)) = idle.pop() {
            if since.elapsed() < IDLE_FOR && conn.is_reusable() {
                return Some(conn);
            }
        }
        None
    }

    fn put_idle(&self, mut conn: Conn) {
        if !conn.is_reusable() {
            return;
        }
        let mut idle = self.idle();
        idle.retain(|(_, since)| since.elapsed() < IDLE_FOR);
        if idle.len() >= MAX_IDLE {
            idle.remove(0);
        }
        idle.push((conn, Instant::now()));
    }

    /// Sends one request on a connection of its own, closed once the
    /// response head is in: for the readiness probe, which must ask as a
    /// new client would, not on a connection the peers' requests keep open.
    pub(crate) async fn send_once(
        &self,
        req: Request<UpstreamBody>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let Conn { mut sender, mut io } = self.connect().await?;
        let mut response = std::pin::pin!(sender.send_request(req));
        tokio::select! {
            r = &mut response => r.map_err(UpstreamError::Request),
            // The connection ended first: hyper fails the request with why.
            _ = &mut io => response.await.map_err(UpstreamError::Request),
        }
    }

    async fn connect(&self) -> Result<Conn, UpstreamError> {
        let authority = self.upstream.authority().ok_or(UpstreamError::NoHost)?;
        let port = authority.port_u16().unwrap_or(80);
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let tcp = tokio::time::timeout(
            self.connect_timeout,
            tokio::net::TcpStream::connect((host, port)),
        )
        .await
        .map_err(|_| UpstreamError::ConnectTimedOut(self.connect_timeout))?
        .map_err(UpstreamError::Connect)?;
        let _ = tcp.set_nodelay(true);
        let (sender, io) = http1::Builder::new()
            .max_buf_size(UPSTREAM_READ_BUFFER)
            .handshake(TokioIo::new(tcp))
            .await
            .map_err(UpstreamError::Handshake)?;
        Ok(Conn {
            sender,
            io: Box::pin(io),
        })
    }
}

/// Most bytes hyper buffers from one upstream connection (its default is
/// about 400 KiB). Every tunnel connection has its own upstream connection,
/// so this is paid up to `max_connections` times when readers are slow
/// (issue 24: 836 KiB per stalled connection with the default, 445 KiB
/// with this). Prometheus's response heads are far smaller.
pub(crate) const UPSTREAM_READ_BUFFER: usize = 16 * 1024;

/// One upstream as the proxy serves it: what it is, where it lives, its
/// idle connections, and the bound on requests in flight to it from all
/// peers together.
pub(crate) struct ServedUpstream {
    /// Its place in the config's order: the index of each peer's share
    /// (`PeerAccess::upstream_slots`).
    pub(crate) number: usize,
    pub(crate) name: Arc<str>,
    pub(crate) kind: crate::config::UpstreamKind,
    pub(crate) url: Uri,
    /// The tunnel ports it is served on.
    pub(crate) ports: Vec<u16>,
    pub(crate) connector: Arc<Connector>,
    /// Requests in flight to it, all peers together
    /// (`gateway.max_upstream_requests`).
    pub(crate) slots: tokio::sync::Semaphore,
    /// The hosts and origins its requests may come with: the gateway's,
    /// with this upstream's own ports as the only tunnel origins.
    pub(crate) hosts: crate::web::host_check::HostCheck,
}

impl ServedUpstream {
    pub(crate) fn new(
        number: usize,
        config: &crate::config::UpstreamConfig,
        connect_timeout: Duration,
        max_requests: usize,
        hosts: &crate::web::host_check::HostCheck,
    ) -> Self {
        ServedUpstream {
            number,
            name: Arc::from(config.name.as_str()),
            kind: config.kind,
            url: config.url.clone(),
            ports: config.ports.clone(),
            connector: Arc::new(Connector::new(config.url.clone(), connect_timeout)),
            slots: tokio::sync::Semaphore::new(max_requests),
            hosts: hosts.for_upstream(&config.ports),
        }
    }
}

/// One tunnel connection's upstream connection, opened on its first
/// request and replaced when the upstream closes it.
pub(crate) struct Upstream {
    served: Arc<ServedUpstream>,
    connector: Arc<Connector>,
    conn: Mutex<Option<Conn>>,
}

impl Upstream {
    pub(crate) fn new(served: Arc<ServedUpstream>) -> Arc<Self> {
        Arc::new(Upstream {
            connector: served.connector.clone(),
            served,
            conn: Mutex::new(None),
        })
    }

    /// The upstream this connection goes to.
    pub(crate) fn served(&self) -> &ServedUpstream {
        &self.served
    }

    fn conn(&self) -> MutexGuard<'_, Option<Conn>> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs the upstream connection's I/O on behalf of the request waiting
    /// for it. Called by [`WithUpstream`] on every poll.
    fn poll_io(&self, cx: &mut Context<'_>) {
        let mut slot = self.conn();
        if let Some(conn) = slot.as_mut()
            && !conn.poll_io(cx)
        {
            *slot = None;
        }
    }

    /// Sends one request (its target in origin form, the authority in
    /// Host) and waits up to `timeout` for the response head. An error or
    /// a timeout leaves no connection behind: its state is unknown.
    pub(crate) async fn send(
        &self,
        req: Request<UpstreamBody>,
        timeout: Duration,
    ) -> Result<Response<Incoming>, UpstreamError> {
        match tokio::time::timeout(timeout, self.send_untimed(req)).await {
            Ok(result) => result,
            Err(_) => {
                *self.conn() = None;
                Err(UpstreamError::TimedOut(timeout))
            }
        }
    }

    /// [`Upstream::send`] without its timeout. A request that never left
    /// a reused connection (the upstream had closed it) is sent once more,
    /// on the next good idle connection or else a fresh one.
    async fn send_untimed(
        &self,
        mut req: Request<UpstreamBody>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        self.previous_response_read().await;
        let mut resent = false;
        loop {
            let reused = self
                .conn()
                .take()
                .filter(|c| c.sender.is_ready())
                .or_else(|| self.connector.take_idle());
            let fresh = reused.is_none();
            let mut conn = match reused {
                Some(c) => c,
                None => self.connector.connect().await?,
            };
            let response = conn.sender.try_send_request(req);
            *self.conn() = Some(conn);
            match response.await {
                Ok(resp) => return Ok(resp),
                Err(mut e) => {
                    *self.conn() = None;
                    match e.take_message() {
                        Some(unsent) if !resent && !fresh => {
                            req = unsent;
                            resent = true;
                        }
                        _ => return Err(UpstreamError::Request(e.into_error())),
                    }
                }
            }
        }
    }

    /// Waits until this connection's last response body has been read to
    /// the end (or the connection is gone). hyper hands over the next
    /// request only after the last response went out, but be sure of it
    /// before the connection is reused.
    async fn previous_response_read(&self) {
        std::future::poll_fn(|cx| {
            let mut slot = self.conn();
            if let Some(c) = slot.as_mut()
                && let Poll::Ready(r) = c.sender.poll_ready(cx)
                && r.is_err()
            {
                *slot = None;
            }
            match slot.as_ref() {
                Some(c) if !c.sender.is_ready() && !c.sender.is_closed() => Poll::Pending,
                _ => Poll::Ready(()),
            }
        })
        .await;
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        if let Some(conn) = self.conn().take() {
            self.connector.put_idle(conn);
        }
    }
}

/// A tunnel connection's future together with its upstream connection's
/// I/O, polled as one.
pub(crate) struct WithUpstream<F> {
    pub(crate) serve: Pin<Box<F>>,
    pub(crate) upstream: Arc<Upstream>,
}

impl<F: Future<Output = ()>> Future for WithUpstream<F> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        // Upstream first: a response that arrived is handed over before
        // the tunnel side runs; again after it: a request it just sent is
        // written at once.
        self.upstream.poll_io(cx);
        if self.serve.as_mut().poll(cx).is_ready() {
            return Poll::Ready(());
        }
        self.upstream.poll_io(cx);
        Poll::Pending
    }
}
