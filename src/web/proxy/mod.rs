//! The HTTP reverse proxy that serves tunnel connections from the upstreams.
//!
//! Each tunnel TCP connection is one future running hyper's HTTP/1.1
//! server, polled by the driver's task together with its own upstream
//! connection (`upstream.rs`; no task of its own). The upstream is the one
//! served on the tunnel port the connection was accepted on, fixed for the
//! connection's life. Requests are checked against [`crate::web::policy`]
//! under that upstream's kind, get their identity headers (client copies
//! stripped first), and go to the upstream on that connection, which
//! comes from a small idle list when one is free. Bodies stream in both
//! directions; a large response is never buffered whole. An unreachable
//! upstream gives a 502 page, a slow one a 504 page, never a hang.

use crate::config::{UpstreamConfig, UpstreamKind};
use crate::ops::telemetry::HttpMetrics;
use crate::web::host_check::{HostCheck, Refusal};
use crate::web::policy::{self, Decision};
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::BodyExt;
use http_body_util::combinators::BoxBody;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use promgate_core::access::AccessRules;
use promgate_core::gateway::ConnInfo;
use promgate_core::stats::Stats;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

mod scoped;
mod scoped_alertmanager;
pub(crate) mod upstream;

use upstream::{ServedUpstream, Upstream, UpstreamBody, UpstreamError, WithUpstream};

type ProxyBody = BoxBody<Bytes, hyper::Error>;

/// Largest request head accepted from a peer (hyper's read buffer).
const MAX_REQUEST_HEAD: usize = 64 * 1024;
/// A peer must send a complete request head within this time.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Connect timeout to the upstream.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Headers that describe one hop, never forwarded (RFC 9110 section 7.6.1).
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Shared by every tunnel connection's future.
pub struct Proxy {
    /// In the config's order; each on its own tunnel ports.
    upstreams: Vec<Arc<ServedUpstream>>,
    identity_header: HeaderName,
    timeout: Duration,
    metrics: Arc<HttpMetrics>,
    stats: Arc<Stats>,
    /// The hosts and origins served (DNS rebinding, cross-site requests);
    /// each upstream narrows it to its own origins.
    hosts: HostCheck,
}

/// How long a request may wait for a place among the upstream requests in
/// flight (its peer's share, then the total) before it gets a 503.
pub const UPSTREAM_QUEUE_TIMEOUT: Duration = Duration::from_secs(30);

impl Proxy {
    /// A proxy for one Prometheus on the default port (80).
    pub fn new(
        upstream: Uri,
        identity_header: HeaderName,
        timeout: Duration,
        metrics: Arc<HttpMetrics>,
        stats: Arc<Stats>,
        hosts: HostCheck,
    ) -> Self {
        Self::with_upstreams(
            &[UpstreamConfig::single_prometheus(
                upstream,
                crate::config::defaults::DEFAULT_HTTP_PORTS.to_vec(),
            )],
            identity_header,
            timeout,
            metrics,
            stats,
            hosts,
        )
    }

    /// A proxy for `upstreams` (validated: no port twice).
    pub fn with_upstreams(
        upstreams: &[UpstreamConfig],
        identity_header: HeaderName,
        timeout: Duration,
        metrics: Arc<HttpMetrics>,
        stats: Arc<Stats>,
        hosts: HostCheck,
    ) -> Self {
        Proxy {
            upstreams: served_upstreams(
                upstreams,
                crate::config::defaults::DEFAULT_MAX_UPSTREAM_REQUESTS,
                &hosts,
            ),
            identity_header,
            timeout,
            metrics,
            stats,
            hosts,
        }
    }

    /// Sets the limit on requests in flight to each upstream, all peers
    /// together (`gateway.max_upstream_requests`). Call before serving.
    pub fn with_upstream_limit(mut self, requests: usize) -> Self {
        let configs: Vec<UpstreamConfig> = self
            .upstreams
            .iter()
            .map(|u| UpstreamConfig {
                name: u.name.to_string(),
                url: u.url.clone(),
                ports: u.ports.clone(),
                kind: u.kind,
            })
            .collect();
        self.upstreams = served_upstreams(&configs, requests, &self.hosts);
        self
    }

    /// The upstream served on tunnel port `port`.
    fn served_on(&self, port: u16) -> Option<&Arc<ServedUpstream>> {
        self.upstreams.iter().find(|u| u.ports.contains(&port))
    }

    /// Serves one tunnel connection until it closes or `shutdown` fires
    /// (then the in-flight request completes and the connection closes).
    /// `stream` is a [`crate::shell::stream::TunnelStream`] in the gateway; tests
    /// use an in-memory duplex.
    pub fn serve_connection<S>(
        self: Arc<Self>,
        info: ConnInfo,
        stream: S,
        shutdown: CancellationToken,
    ) -> impl Future<Output = ()> + Send + 'static
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
    {
        use futures_util::future::Either;
        use tracing::Instrument as _;
        let Some(served) = self.served_on(info.local_port).cloned() else {
            // The core accepts connections only on the served ports, so
            // this is a port the proxy was not told about: close it.
            tracing::warn!(
                port = info.local_port,
                "a tunnel connection on a port no upstream is served on; closed"
            );
            return Either::Left(std::future::ready(()));
        };
        let info = Arc::new(info);
        let span = tracing::debug_span!("conn", peer = %info.access.current().name, remote = %info.remote, upstream = %served.name);
        let upstream = Upstream::new(served);
        Either::Right(WithUpstream {
            serve: Box::pin(
                self.serve_inner(info, stream, shutdown, upstream.clone())
                    .instrument(span),
            ),
            upstream,
        })
    }

    async fn serve_inner<S>(
        self: Arc<Self>,
        info: Arc<ConnInfo>,
        stream: S,
        shutdown: CancellationToken,
        upstream: Arc<Upstream>,
    ) where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
    {
        let proxy = self.clone();
        let service = hyper::service::service_fn(move |req| {
            let proxy = proxy.clone();
            let info = info.clone();
            let upstream = upstream.clone();
            async move { Ok::<_, Infallible>(proxy.handle(&info, &upstream, req).await) }
        });
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .max_buf_size(MAX_REQUEST_HEAD)
            .keep_alive(true)
            .serve_connection(TokioIo::new(stream), service);
        let mut conn = std::pin::pin!(conn);
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "tunnel connection ended with an error");
                }
            }
            _ = shutdown.cancelled() => {
                conn.as_mut().graceful_shutdown();
                let _ = conn.await;
            }
        }
    }

    async fn handle(
        &self,
        info: &ConnInfo,
        upstream: &Upstream,
        req: Request<Incoming>,
    ) -> Response<ProxyBody> {
        // Prometheus answers `Access-Control-Allow-Origin: *` by default, so
        // a page of any origin could read what a read-only request returns
        // through the peer's browser. Only the gateway's own origins (and
        // the allowed hosts') keep the CORS headers.
        let foreign_origin = upstream.served().hosts.has_foreign_origin(req.headers());
        let mut resp = self.handle_checked(info, upstream, req).await;
        if foreign_origin {
            strip_cors(resp.headers_mut());
        }
        resp
    }

    async fn handle_checked(
        &self,
        info: &ConnInfo,
        upstream: &Upstream,
        mut req: Request<Incoming>,
    ) -> Response<ProxyBody> {
        let start = Instant::now();
        // Each request is decided on the peer's rules as they are now, so a
        // reload that demotes a peer reaches its open connections.
        let rules = info.access.current();
        let method = req.method().clone();
        let raw_path = req.uri().path().to_string();
        let served = upstream.served();
        let mut audit = Audit {
            upstream: served.name.clone(),
            peer: rules.name.clone(),
            scope: rules.scope.clone(),
            addr: info.remote.ip(),
            method: method.clone(),
            path: raw_path.clone(),
            role: rules.role,
            start,
            upstream_latency: None,
            metrics: self.metrics.clone(),
            access: info.access.clone(),
        };

        let normalized = match self.admit(info, served, &rules, &req) {
            Ok(normalized) => normalized,
            Err(page) => return audit.finish(*page),
        };
        if let Some(scope) = &rules.scope {
            match served.kind {
                UpstreamKind::Prometheus => match self
                    .handle_scoped(info, scope, &normalized, upstream, req, &mut audit)
                    .await
                {
                    Ok(resp) => return audit.finish(resp),
                    Err(open) => req = open,
                },
                UpstreamKind::Alertmanager => {
                    let resp = self
                        .handle_scoped_alertmanager(
                            info,
                            scope,
                            &normalized,
                            upstream,
                            req,
                            &mut audit,
                        )
                        .await;
                    return audit.finish(resp);
                }
                // No scope can be enforced on an arbitrary HTTP service;
                // a scoped peer reaches it only where its own allow_paths
                // entries for it say (the policy allowed nothing else),
                // and what they open is opened whole.
                UpstreamKind::Http => {}
            }
        }

        match self
            .forward(
                info,
                &rules.name,
                upstream,
                req.map(|b| b.boxed()),
                &mut audit,
            )
            .await
        {
            Ok(mut resp) => {
                strip_hop_by_hop(resp.headers_mut());
                audit.finish(resp.map(|b| b.boxed()))
            }
            Err(page) => audit.finish(page),
        }
    }

    /// The gateway's own checks, in order: the host and origin, a path in
    /// canonical form, then the peer's role and paths. Gives the path the
    /// policy decided on, or the page that refuses the request.
    fn admit(
        &self,
        info: &ConnInfo,
        served: &ServedUpstream,
        rules: &AccessRules,
        req: &Request<Incoming>,
    ) -> Result<String, Box<Response<ProxyBody>>> {
        let method = req.method();
        let raw_path = req.uri().path();
        // Before anything else: a request a web page forged through the
        // peer's browser must not reach the policy, let alone the upstream.
        if let Err(refusal) = served
            .hosts
            .check(method, req.version(), req.uri(), req.headers())
        {
            tracing::info!(peer = %rules.name, addr = %info.remote.ip(), %method, path = %raw_path, reason = ?refusal, "refused a request for another host or from another origin");
            return Err(Box::new(refusal_page(&rules.name, method, refusal)));
        }
        let Some(normalized) = policy::decision_path(raw_path) else {
            return Err(Box::new(error_page(
                StatusCode::BAD_REQUEST,
                "Bad request",
                &format!(
                    "The path {raw_path:?} is not in canonical form (no //, ., .., encoded dots, slashes or backslashes)."
                ),
            )));
        };
        let target = policy::Target {
            name: &served.name,
            kind: served.kind,
        };
        if let Decision::Deny(rule) = policy::decide_for(
            target,
            rules.role,
            &rules.allow_paths,
            &rules.deny_paths,
            method,
            &normalized,
        ) {
            let body = format!(
                "Peer \"{}\" (role {}) may not {} {} on {} \"{}\": {}.",
                rules.name,
                rules.role.as_str(),
                method,
                raw_path,
                served.kind.as_str(),
                served.name,
                rule
            );
            return Err(Box::new(error_page(
                StatusCode::FORBIDDEN,
                "Forbidden",
                &body,
            )));
        }
        Ok(normalized)
    }

    /// Sends a request upstream on the tunnel connection's own upstream
    /// connection, with the identity headers, the timeout and the error
    /// pages; used by the ordinary and the scoped path alike.
    async fn forward(
        &self,
        info: &ConnInfo,
        peer_name: &str,
        upstream: &Upstream,
        req: Request<UpstreamBody>,
        audit: &mut Audit,
    ) -> Result<Response<Incoming>, Response<ProxyBody>> {
        let served = upstream.served();
        let req = self
            .upstream_request(info, served, peer_name, req)
            .map_err(|e| error_page(StatusCode::BAD_REQUEST, "Bad request", &e.to_string()))?;
        // A peer's share exists for every upstream the proxy serves (both
        // come from the same config); fail closed if it ever does not.
        let Some(peer_slots) = info.access.upstream_slots(served.number) else {
            tracing::error!(peer = %peer_name, upstream = %served.name, "the peer has no share of this upstream's concurrency");
            return Err(error_page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Service unavailable",
                "promgate has no place for this request; try again shortly.",
            ));
        };
        // A place among the requests in flight: the peer's own share first,
        // so that a peer with many waiting holds at most its share of the
        // total's queue (tokio's semaphores are first come, first served).
        // Held until the response head arrives: that is when Prometheus has
        // evaluated the query.
        let slots = scoped::permits(peer_slots, &served.slots);
        let Ok(Some(_held)) = tokio::time::timeout(UPSTREAM_QUEUE_TIMEOUT, slots).await else {
            self.stats.upstream_queue_timeouts.fetch_add(1, Relaxed);
            tracing::warn!(peer = %peer_name, upstream = %served.name, "a request waited {}s for a place among the upstream requests in flight", UPSTREAM_QUEUE_TIMEOUT.as_secs());
            return Err(error_page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Service unavailable",
                &format!(
                    "Too many requests are waiting for {} (this peer's, or all peers'); this one waited {} s. Try again shortly.",
                    served.kind.display_name(),
                    UPSTREAM_QUEUE_TIMEOUT.as_secs()
                ),
            ));
        };
        let sent = Instant::now();
        let result = upstream.send(req, self.timeout).await;
        audit.upstream_latency = Some(sent.elapsed());
        // Request outcomes never touch readiness: a peer can abort its own
        // body or reset its connection, and that is not the upstream's
        // health. Readiness follows the active probe (`upstream_probe`).
        result.map_err(|e| self.upstream_failed(served, &e))
    }

    /// Counts and logs a failed upstream request and gives the page for it:
    /// 504 when the upstream did not answer within `upstream_timeout`, 502
    /// when it could not be reached or broke off. The two differ for the
    /// peer: a 504 says retrying may work once Prometheus is less busy, a
    /// 502 that it is not there. The pages say what failed, never where
    /// the upstream lives; the log keeps that.
    fn upstream_failed(
        &self,
        served: &ServedUpstream,
        error: &UpstreamError,
    ) -> Response<ProxyBody> {
        self.stats.upstream_errors.fetch_add(1, Relaxed);
        let what = served.kind.display_name();
        match error {
            UpstreamError::TimedOut(timeout) => {
                tracing::warn!(upstream = %served.name, url = %served.url, ?timeout, "upstream timed out");
                error_page(
                    StatusCode::GATEWAY_TIMEOUT,
                    "Gateway timeout",
                    &format!("{what} did not answer within {}s.", timeout.as_secs()),
                )
            }
            e => {
                tracing::warn!(error = %e, upstream = %served.name, url = %served.url, "upstream request failed");
                error_page(
                    StatusCode::BAD_GATEWAY,
                    "Bad gateway",
                    &format!("promgate could not get an answer from {what}."),
                )
            }
        }
    }

    fn upstream_request<B>(
        &self,
        info: &ConnInfo,
        served: &ServedUpstream,
        peer_name: &str,
        req: Request<B>,
    ) -> Result<Request<B>, TargetError> {
        let (mut parts, body) = req.into_parts();
        parts.uri = upstream_uri(&served.url, &parts.uri)?;
        parts.version = http::Version::HTTP_11;
        let h = &mut parts.headers;
        strip_hop_by_hop(h);
        for name in [
            "x-forwarded-for",
            "x-forwarded-host",
            "x-forwarded-proto",
            "x-real-ip",
            "forwarded",
        ] {
            h.remove(name);
        }
        h.remove(&self.identity_header);
        if let Some(host) = upstream_host(&served.url) {
            h.insert(header::HOST, host);
        }
        if let Ok(v) = HeaderValue::from_str(&info.remote.ip().to_string()) {
            h.insert("x-forwarded-for", v);
        }
        if let Ok(v) = HeaderValue::from_str(peer_name) {
            h.insert(self.identity_header.clone(), v);
        }
        Ok(Request::from_parts(parts, body))
    }
}

/// The proxy's view of `upstreams`, numbered in order, each allowing
/// `max_requests` in flight from all peers together and taking the
/// gateway's `hosts` with its own ports as its only tunnel origins.
fn served_upstreams(
    upstreams: &[UpstreamConfig],
    max_requests: usize,
    hosts: &HostCheck,
) -> Vec<Arc<ServedUpstream>> {
    upstreams
        .iter()
        .enumerate()
        .map(|(number, u)| {
            Arc::new(ServedUpstream::new(
                number,
                u,
                CONNECT_TIMEOUT,
                max_requests,
                hosts,
            ))
        })
        .collect()
}

/// The request target sent upstream for `requested`, in origin form (the
/// authority goes in Host): the upstream's base path, then the request's
/// path and query unchanged (byte for byte: the path the policy decided on
/// is the path forwarded).
pub fn upstream_uri(upstream: &Uri, requested: &Uri) -> Result<Uri, TargetError> {
    let base = upstream.path().trim_end_matches('/');
    // `path()`, not the raw path-and-query: an absolute-form target with an
    // empty path ("http://h?q") has path "/" and raw text "?q", and the
    // policy decided on "/".
    let path = requested.path();
    let pq = match requested.query() {
        Some(q) => format!("{base}{path}?{q}"),
        None => format!("{base}{path}"),
    };
    Ok(Uri::try_from(pq)?)
}

/// The request target for the upstream could not be built.
#[derive(Debug, thiserror::Error)]
#[error("cannot build the upstream request target: {0}")]
pub struct TargetError(#[from] http::uri::InvalidUri);

/// The Host header sent upstream: the upstream URL's authority as written.
pub(crate) fn upstream_host(upstream: &Uri) -> Option<HeaderValue> {
    HeaderValue::from_str(upstream.authority()?.as_str()).ok()
}

fn strip_hop_by_hop(h: &mut HeaderMap) {
    // Headers named in Connection are hop-by-hop too.
    let listed: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in listed {
        h.remove(n);
    }
    for n in HOP_BY_HOP {
        h.remove(*n);
    }
}

/// Removes the response headers that let a browser hand the answer to a
/// page of another origin.
fn strip_cors(headers: &mut http::HeaderMap) {
    for name in [
        "access-control-allow-origin",
        "access-control-allow-credentials",
        "access-control-allow-headers",
        "access-control-allow-methods",
        "access-control-expose-headers",
        "access-control-max-age",
    ] {
        headers.remove(name);
    }
}

/// The page for a request refused by [`HostCheck`]: what was refused and
/// how an operator allows a legitimate name.
fn refusal_page(peer: &str, method: &http::Method, refusal: Refusal) -> Response<ProxyBody> {
    match refusal {
        Refusal::MissingHost => error_page(
            StatusCode::BAD_REQUEST,
            "Bad request",
            "An HTTP/1.1 request needs a Host header.",
        ),
        Refusal::MalformedHost(host) => error_page(
            StatusCode::BAD_REQUEST,
            "Bad request",
            &format!("The Host {host:?} is not a host name or address with an optional port."),
        ),
        Refusal::ForeignHost(host) => error_page(
            StatusCode::MISDIRECTED_REQUEST,
            "Misdirected request",
            &format!(
                "promgate does not answer to the host {host:?}: only to its tunnel addresses and the names listed in gateway.allowed_hosts, so that a web page cannot rebind its own name to the gateway. To reach Prometheus by this name, add it to gateway.allowed_hosts in the gateway's config."
            ),
        ),
        Refusal::ForeignOrigin(origin) => error_page(
            StatusCode::FORBIDDEN,
            "Forbidden",
            &format!(
                "A {method} from a page of another origin ({origin:?}) is refused: a web page must not act with peer \"{peer}\"'s rights. Only the gateway's own origin and the names in gateway.allowed_hosts may send it; tools that send no Origin header are not affected."
            ),
        ),
        Refusal::CrossSite(site) => error_page(
            StatusCode::FORBIDDEN,
            "Forbidden",
            &format!(
                "A {method} that the browser marked Sec-Fetch-Site: {site} is refused: a web page of another site must not act with peer \"{peer}\"'s rights."
            ),
        ),
    }
}

fn error_page(status: StatusCode, title: &str, detail: &str) -> Response<ProxyBody> {
    let esc = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
    };
    let html = format!(
        "<!doctype html><html><head><title>{code} {title}</title></head><body><h1>{code} {title}</h1><p>{detail}</p><hr><p>promgate</p></body></html>\n",
        code = status.as_u16(),
        title = esc(title),
        detail = esc(detail)
    );
    let body = http_body_util::Full::new(Bytes::from(html))
        .map_err(|never: Infallible| match never {})
        .boxed();
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// One request's audit record; written when its response body ends.
struct Audit {
    /// The name of the upstream the request was for.
    upstream: Arc<str>,
    peer: Arc<str>,
    scope: Option<crate::web::scope::Scope>,
    addr: std::net::IpAddr,
    method: http::Method,
    path: String,
    role: crate::config::Role,
    start: Instant,
    upstream_latency: Option<Duration>,
    metrics: Arc<HttpMetrics>,
    /// For the rate limit on refusal lines.
    access: Arc<crate::web::policy::PeerAccess>,
}

impl Audit {
    fn finish(self, resp: Response<ProxyBody>) -> Response<ProxyBody> {
        let status = resp.status().as_u16();
        resp.map(|inner| {
            AuditedBody {
                inner,
                bytes: 0,
                status,
                audit: Some(self),
            }
            .boxed()
        })
    }
}

/// Counts response bytes and logs the audit line when the body is done
/// (or dropped, when the client went away mid-stream).
struct AuditedBody {
    inner: ProxyBody,
    bytes: u64,
    status: u16,
    audit: Option<Audit>,
}

impl AuditedBody {
    fn log(&mut self) {
        if let Some(a) = self.audit.take() {
            let elapsed = a.start.elapsed();
            a.metrics.observe(&a.method, self.status, a.role, elapsed);
            // Refused by the gateway itself (never reached the upstream):
            // rate-limited per peer, so a loop of refusals cannot fill the log.
            let refused = a.upstream_latency.is_none() && (400..500).contains(&self.status);
            let mut left_out = None;
            if refused {
                match a.access.refusal_line(Instant::now()) {
                    Some(0) => {}
                    Some(n) => left_out = Some(n),
                    None => {
                        a.metrics.audit_line_suppressed();
                        return;
                    }
                }
            }
            tracing::info!(
                target: "promgate::audit",
                upstream = %a.upstream,
                peer = %a.peer,
                addr = %a.addr,
                role = a.role.as_str(),
                scope = a.scope.as_ref().map(tracing::field::display),
                method = %a.method,
                path = %a.path,
                status = self.status,
                bytes = self.bytes,
                duration_ms = millis(elapsed),
                upstream_ms = a.upstream_latency.map(millis),
                refusals_not_logged = left_out,
                "request"
            );
        }
    }
}

/// Milliseconds with microsecond resolution, without float noise in logs.
fn millis(d: Duration) -> f64 {
    (d.as_micros() as f64) / 1000.0
}

impl Body for AuditedBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let r = Pin::new(&mut self.inner).poll_frame(cx);
        match &r {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    self.bytes += d.len() as u64;
                }
            }
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => self.log(),
            Poll::Pending => {}
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for AuditedBody {
    fn drop(&mut self) {
        self.log();
    }
}

/// The driver's connections are served by the proxy.
impl crate::shell::connections::ConnectionHandler for Proxy {
    fn serve(
        self: Arc<Self>,
        info: ConnInfo,
        stream: crate::shell::stream::TunnelStream,
        shutdown: CancellationToken,
    ) -> crate::shell::connections::ConnFuture {
        Box::pin(self.serve_connection(info, stream, shutdown))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the policy fuzz target: with an upstream base path, an
    /// absolute-form target with an empty path was decided as "/" and
    /// forwarded as "/prom" rather than "/prom/".
    #[test]
    fn the_forwarded_path_is_the_decided_path_after_the_base() {
        let upstream: Uri = "http://prometheus:9090/prom/".parse().unwrap();
        for (target, want) in [
            ("http://h?q=1", "/prom/"),
            ("http://h", "/prom/"),
            ("/api/v1/query?query=up", "/prom/api/v1/query"),
            ("/", "/prom/"),
        ] {
            let requested: Uri = target.parse().unwrap();
            let got = upstream_uri(&upstream, &requested).unwrap();
            assert_eq!(got.path(), want, "{target}");
            assert_eq!(got.path(), format!("/prom{}", requested.path()));
            assert_eq!(got.query(), requested.query(), "{target}");
        }
    }

    use crate::web::policy::{AccessRules, PeerAccess};
    use promgate_core::role::Role;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn metrics() -> Arc<HttpMetrics> {
        crate::ops::telemetry::Telemetry::new(
            Arc::new(Stats::default()),
            Default::default(),
            Arc::new(crate::ops::health::Health::new(None)),
        )
        .http
    }

    fn info() -> ConnInfo {
        info_as(Role::Viewer)
    }

    fn info_as(role: Role) -> ConnInfo {
        ConnInfo {
            access: Arc::new(PeerAccess::new(AccessRules {
                name: Arc::from("alice"),
                role,
                allow_paths: Arc::from([]),
                deny_paths: Arc::from([]),
                scope: None,
            })),
            remote: "10.13.13.2:40000".parse().unwrap(),
            local_port: 80,
        }
    }

    /// A request over an in-memory stream; returns the whole response.
    async fn exchange(proxy: Arc<Proxy>, request: &str) -> String {
        exchange_as(proxy, info(), request).await
    }

    async fn exchange_as(proxy: Arc<Proxy>, info: ConnInfo, request: &str) -> String {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let stop = CancellationToken::new();
        tokio::spawn(proxy.serve_connection(info, server, stop));
        client.write_all(request.as_bytes()).await.unwrap();
        let mut out = String::new();
        client.read_to_string(&mut out).await.unwrap();
        out
    }

    /// An upstream that answers only after `delay` (in tokio time).
    async fn slow_upstream(delay: Duration) -> Uri {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new().route(
            "/api/v1/query",
            axum::routing::get(move || async move {
                tokio::time::sleep(delay).await;
                "late"
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}").parse().unwrap()
    }

    /// An upstream that counts the TCP connections it accepted and answers
    /// every request with its path; with `keep_alive` false it closes each
    /// connection after one answer.
    async fn counting_upstream(keep_alive: bool) -> (Uri, Arc<std::sync::atomic::AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                count.fetch_add(1, Relaxed);
                let service = hyper::service::service_fn(|req: Request<Incoming>| async move {
                    let body = format!("path={}", req.uri());
                    // As Prometheus answers by default (--web.cors.origin).
                    let mut resp = Response::new(http_body_util::Full::new(Bytes::from(body)));
                    resp.headers_mut().insert(
                        "access-control-allow-origin",
                        http::HeaderValue::from_static("*"),
                    );
                    Ok::<_, Infallible>(resp)
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .keep_alive(keep_alive)
                        .serve_connection(TokioIo::new(tcp), service),
                );
            }
        });
        (format!("http://{addr}").parse().unwrap(), accepted)
    }

    /// The gateway at 10.13.13.1 and fd13::1 on port 80, reachable by the
    /// name prom.vpn.example too.
    fn hosts() -> HostCheck {
        let mut c = crate::config::GatewayConfig::with_defaults(
            promgate_core::keys::PrivateKey::generate(),
            "10.13.13.1/24".parse().unwrap(),
            "http://prometheus:9090".parse().unwrap(),
        );
        c.addresses.push("fd13::1/64".parse().unwrap());
        c.allowed_hosts = vec!["prom.vpn.example".into()];
        HostCheck::new(&c)
    }

    fn proxy_to(upstream: Uri) -> Arc<Proxy> {
        Arc::new(Proxy::new(
            upstream,
            HeaderName::from_static("x-promgate-peer"),
            Duration::from_secs(5),
            metrics(),
            Arc::new(Stats::default()),
            hosts(),
        ))
    }

    /// Sends `n` keep-alive requests on one tunnel connection, the last
    /// with `Connection: close`; returns the whole output.
    async fn keep_alive_exchange(proxy: Arc<Proxy>, n: usize) -> String {
        let mut requests = String::new();
        for i in 0..n {
            let close = if i + 1 == n {
                "Connection: close\r\n"
            } else {
                ""
            };
            requests.push_str(&format!(
                "GET /api/v1/query?query=r{i} HTTP/1.1\r\nHost: 10.13.13.1\r\n{close}\r\n"
            ));
        }
        exchange(proxy, &requests).await
    }

    #[tokio::test]
    async fn one_upstream_connection_serves_a_tunnel_connection_and_the_next() {
        let (upstream, accepted) = counting_upstream(true).await;
        let proxy = proxy_to(upstream);
        let out = keep_alive_exchange(proxy.clone(), 3).await;
        assert_eq!(out.matches("HTTP/1.1 200").count(), 3, "{out}");
        for i in 0..3 {
            // Origin form on the wire, the request's own path and query.
            assert!(
                out.contains(&format!("path=/api/v1/query?query=r{i}")),
                "{out}"
            );
        }
        // The next tunnel connection takes the idle upstream connection over.
        let out = keep_alive_exchange(proxy, 2).await;
        assert_eq!(out.matches("HTTP/1.1 200").count(), 2, "{out}");
        assert_eq!(accepted.load(Relaxed), 1);
    }

    #[tokio::test]
    async fn an_upstream_that_closes_connections_is_reconnected_to() {
        let (upstream, accepted) = counting_upstream(false).await;
        let proxy = proxy_to(upstream);
        let out = keep_alive_exchange(proxy.clone(), 3).await;
        assert_eq!(out.matches("HTTP/1.1 200").count(), 3, "{out}");
        let out = keep_alive_exchange(proxy, 1).await;
        assert_eq!(out.matches("HTTP/1.1 200").count(), 1, "{out}");
        assert_eq!(accepted.load(Relaxed), 4);
    }

    /// Issue 23, item 5: a scoped peer's form body that does not arrive in
    /// 30 s gets a 408; it cannot hold its buffer for the 300 s idle timeout.
    #[tokio::test(start_paused = true)]
    async fn a_trickled_scoped_form_body_gets_a_408_after_30_s() {
        let (upstream, accepted) = counting_upstream(true).await;
        let proxy = proxy_to(upstream);
        let info = ConnInfo {
            access: Arc::new(PeerAccess::new(AccessRules {
                name: Arc::from("team-a"),
                role: Role::Viewer,
                allow_paths: Arc::from([]),
                deny_paths: Arc::from([]),
                scope: Some(
                    crate::web::scope::Scope::new([("namespace", &["team-a"][..])]).unwrap(),
                ),
            })),
            remote: "10.13.13.2:40000".parse().unwrap(),
            local_port: 80,
        };
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        tokio::spawn(proxy.serve_connection(info, server, CancellationToken::new()));
        let started = tokio::time::Instant::now();
        client
            .write_all(b"POST /api/v1/query HTTP/1.1\r\nHost: 10.13.13.1\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\nquery=up")
            .await
            .unwrap();
        let mut out = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(120), client.read(&mut out))
            .await
            .expect("no answer within 120 s: the body read has no deadline")
            .unwrap();
        let out = String::from_utf8_lossy(&out[..n]);
        assert!(out.starts_with("HTTP/1.1 408"), "{out}");
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_secs(30) && waited < Duration::from_secs(40),
            "{waited:?}"
        );
        assert_eq!(accepted.load(Relaxed), 0, "nothing reached the upstream");
    }

    /// Issue 24, item 7: a peer looping on refused requests writes at most
    /// its burst of audit lines; the rest are counted, not logged.
    #[tokio::test]
    async fn refusal_audit_lines_are_rate_limited_per_peer() {
        let (upstream, _) = counting_upstream(true).await;
        let metrics = metrics();
        let proxy = Arc::new(Proxy::new(
            upstream,
            HeaderName::from_static("x-promgate-peer"),
            Duration::from_secs(5),
            metrics.clone(),
            Arc::new(Stats::default()),
            hosts(),
        ));
        let mut requests = String::new();
        for _ in 0..50 {
            requests
                .push_str("GET /api/v1/admin/tsdb/snapshot HTTP/1.1\r\nHost: 10.13.13.1\r\n\r\n");
        }
        requests.push_str("GET /api/v1/admin/tsdb/snapshot HTTP/1.1\r\nHost: 10.13.13.1\r\nConnection: close\r\n\r\n");
        let out = exchange_as(proxy, info_as(Role::Viewer), &requests).await;
        assert_eq!(out.matches("HTTP/1.1 403").count(), 51, "{out}");
        // 20 written (the burst; little time passes), 31 counted.
        let suppressed = metrics.audit_lines_suppressed();
        assert!((29..=31).contains(&suppressed), "{suppressed}");
    }

    /// An upstream that answers after `delay` and records, per peer (its
    /// identity header) and in total, the most requests it held at once.
    async fn counting_slow_upstream(
        delay: Duration,
    ) -> (
        Uri,
        Arc<std::sync::Mutex<std::collections::HashMap<String, (usize, usize)>>>,
    ) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // peer -> (now, most); "" is the total.
        let seen: Arc<std::sync::Mutex<std::collections::HashMap<String, (usize, usize)>>> =
            Arc::default();
        let state = seen.clone();
        let app = axum::Router::new().route(
            "/api/v1/query",
            axum::routing::get(move |h: http::HeaderMap| {
                let seen = state.clone();
                async move {
                    let peer = h
                        .get("x-promgate-peer")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("?")
                        .to_string();
                    let bump = |d: isize| {
                        let mut m = seen.lock().unwrap();
                        for k in [peer.clone(), String::new()] {
                            let e = m.entry(k).or_default();
                            e.0 = (e.0 as isize + d) as usize;
                            e.1 = e.1.max(e.0);
                        }
                    };
                    bump(1);
                    tokio::time::sleep(delay).await;
                    bump(-1);
                    "done"
                }
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
        (format!("http://{addr}").parse().unwrap(), seen)
    }

    fn info_named(name: &str, ip: &str, upstream_requests: usize) -> ConnInfo {
        ConnInfo {
            access: Arc::new(PeerAccess::with_upstream_limit(
                AccessRules {
                    name: Arc::from(name),
                    role: Role::Viewer,
                    allow_paths: Arc::from([]),
                    deny_paths: Arc::from([]),
                    scope: None,
                },
                upstream_requests,
            )),
            remote: format!("{ip}:40000").parse().unwrap(),
            local_port: 80,
        }
    }

    const QUERY: &str =
        "GET /api/v1/query?query=up HTTP/1.1\r\nHost: 10.13.13.1\r\nConnection: close\r\n\r\n";

    /// Issue 24: one peer cannot take the upstream's concurrency; its
    /// requests beyond its share wait, and another peer is served at once.
    #[tokio::test(start_paused = true)]
    async fn a_peer_gets_only_its_share_of_the_upstream() {
        let (upstream, seen) = counting_slow_upstream(Duration::from_secs(10)).await;
        let proxy = Arc::new(
            Proxy::new(
                upstream,
                HeaderName::from_static("x-promgate-peer"),
                Duration::from_secs(200),
                metrics(),
                Arc::new(Stats::default()),
                hosts(),
            )
            .with_upstream_limit(3),
        );
        let alice = info_named("alice", "10.13.13.2", 2);
        let mut busy = Vec::new();
        for _ in 0..5 {
            busy.push(tokio::spawn(exchange_as(
                proxy.clone(),
                alice.clone(),
                QUERY,
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let started = tokio::time::Instant::now();
        let bob = exchange_as(proxy.clone(), info_named("bob", "10.13.13.3", 2), QUERY).await;
        assert!(bob.starts_with("HTTP/1.1 200"), "{bob}");
        let waited = started.elapsed();
        assert!(waited < Duration::from_secs(11), "bob waited {waited:?}");
        for b in busy {
            let out = b.await.unwrap();
            assert!(out.starts_with("HTTP/1.1 200"), "{out}");
        }
        let m = seen.lock().unwrap();
        assert_eq!(m["alice"].1, 2, "{m:?}");
        assert!(m[""].1 <= 3, "{m:?}");
    }

    /// A request that cannot get a place within the queue timeout gets a
    /// 503 that says why, and is counted.
    #[tokio::test(start_paused = true)]
    async fn a_request_that_waits_too_long_for_the_upstream_gets_a_503() {
        let (upstream, _) = counting_slow_upstream(Duration::from_secs(100)).await;
        let stats = Arc::new(Stats::default());
        let proxy = Arc::new(Proxy::new(
            upstream,
            HeaderName::from_static("x-promgate-peer"),
            Duration::from_secs(200),
            metrics(),
            stats.clone(),
            hosts(),
        ));
        let alice = info_named("alice", "10.13.13.2", 1);
        let first = tokio::spawn(exchange_as(proxy.clone(), alice.clone(), QUERY));
        tokio::time::sleep(Duration::from_millis(100)).await;
        let out = exchange_as(proxy, alice, QUERY).await;
        assert!(out.starts_with("HTTP/1.1 503"), "{out}");
        assert!(out.contains("waited 30 s"), "{out}");
        assert_eq!(stats.upstream_queue_timeouts.load(Relaxed), 1);
        assert!(first.await.unwrap().starts_with("HTTP/1.1 200"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_upstream_gets_a_504_that_does_not_name_it() {
        let upstream = slow_upstream(Duration::from_secs(120)).await;
        let stats = Arc::new(Stats::default());
        let proxy = Arc::new(Proxy::new(
            upstream.clone(),
            HeaderName::from_static("x-promgate-peer"),
            Duration::from_secs(30),
            metrics(),
            stats.clone(),
            hosts(),
        ));
        let started = tokio::time::Instant::now();
        let resp = exchange(
            proxy,
            "GET /api/v1/query?query=up HTTP/1.1\r\nHost: 10.13.13.1\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(resp.starts_with("HTTP/1.1 504"), "{resp}");
        assert!(resp.contains("within 30s"), "{resp}");
        let authority = upstream.authority().unwrap().to_string();
        assert!(!resp.contains(&authority), "{resp}");
        // Virtual time: the timeout, not the upstream's two minutes.
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_secs(30) && waited < Duration::from_secs(60),
            "{waited:?}"
        );
        assert_eq!(stats.upstream_errors.load(Relaxed), 1);
    }

    #[tokio::test]
    async fn an_unreachable_upstream_gets_a_502_that_does_not_name_it() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = closed.local_addr().unwrap();
        drop(closed);
        let proxy = Arc::new(Proxy::new(
            format!("http://{addr}").parse().unwrap(),
            HeaderName::from_static("x-promgate-peer"),
            Duration::from_secs(5),
            metrics(),
            Arc::new(Stats::default()),
            hosts(),
        ));
        let resp = exchange(
            proxy,
            "GET /api/v1/query?query=up HTTP/1.1\r\nHost: 10.13.13.1\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(resp.starts_with("HTTP/1.1 502"), "{resp}");
        assert!(!resp.contains(&addr.to_string()), "{resp}");
    }

    /// Sends one request to a counting upstream that echoes the target;
    /// returns the response and whether the upstream saw the request.
    async fn via(role: Role, request: &str) -> (String, bool) {
        let (upstream, accepted) = counting_upstream(true).await;
        let out = exchange_as(proxy_to(upstream), info_as(role), request).await;
        (out, accepted.load(Relaxed) > 0)
    }

    #[tokio::test]
    async fn a_request_for_another_host_gets_a_421_naming_the_fix() {
        for host in [
            "attacker.example",
            "10.13.13.1.attacker.example",
            "10.13.13.1:9090",
        ] {
            let (out, forwarded) = via(
                Role::Viewer,
                &format!("GET /api/v1/query?query=up HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
            )
            .await;
            assert!(out.starts_with("HTTP/1.1 421"), "{out}");
            assert!(out.contains(&format!("&quot;{host}&quot;")), "{out}");
            assert!(out.contains("gateway.allowed_hosts"), "{out}");
            assert!(!forwarded, "{host}");
        }
        // Absolute form: the target's authority is the host.
        let (out, forwarded) = via(
            Role::Viewer,
            "GET http://attacker.example/api/v1/query HTTP/1.1\r\nHost: 10.13.13.1\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(out.starts_with("HTTP/1.1 421"), "{out}");
        assert!(!forwarded);
        let (out, forwarded) = via(
            Role::Viewer,
            "GET /api/v1/query HTTP/1.1\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(out.starts_with("HTTP/1.1 400"), "{out}");
        assert!(out.contains("needs a Host header"), "{out}");
        assert!(!forwarded);
    }

    #[tokio::test]
    async fn the_tunnel_address_with_or_without_port_and_allowed_names_pass() {
        for host in [
            "10.13.13.1",
            "10.13.13.1:80",
            "[fd13::1]",
            "[fd13::1]:80",
            "prom.vpn.example",
            "Prom.VPN.example:8443",
        ] {
            let (out, forwarded) = via(
                Role::Viewer,
                &format!("GET /api/v1/query?query=up HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
            )
            .await;
            assert!(out.starts_with("HTTP/1.1 200"), "{host}: {out}");
            assert!(out.contains("path=/api/v1/query?query=up"), "{out}");
            assert!(forwarded, "{host}");
        }
    }

    const DELETE_SERIES: &str = "POST /api/v1/admin/tsdb/delete_series?match[]=up HTTP/1.1\r\nHost: 10.13.13.1\r\nContent-Length: 0\r\nConnection: close\r\n";

    #[tokio::test]
    async fn a_cross_site_post_is_refused_and_never_reaches_the_upstream() {
        for extra in [
            "Origin: https://attacker.example\r\nSec-Fetch-Site: cross-site\r\n",
            "Origin: https://attacker.example\r\n",
            "Origin: null\r\n",
            "Sec-Fetch-Site: same-site\r\n",
        ] {
            let (out, forwarded) = via(Role::Admin, &format!("{DELETE_SERIES}{extra}\r\n")).await;
            assert!(out.starts_with("HTTP/1.1 403"), "{extra}: {out}");
            assert!(out.contains("alice"), "{out}");
            assert!(!forwarded, "{extra}");
        }
    }

    #[tokio::test]
    async fn a_post_from_a_tool_or_the_gateways_own_page_is_forwarded() {
        for extra in [
            "",
            "Origin: http://10.13.13.1\r\nSec-Fetch-Site: same-origin\r\n",
            "Origin: https://prom.vpn.example\r\n",
        ] {
            let (out, forwarded) = via(Role::Admin, &format!("{DELETE_SERIES}{extra}\r\n")).await;
            assert!(out.starts_with("HTTP/1.1 200"), "{extra}: {out}");
            assert!(
                out.contains("path=/api/v1/admin/tsdb/delete_series"),
                "{out}"
            );
            assert!(forwarded, "{extra}");
        }
    }

    /// A read with a foreign Origin is served (a link or an image may
    /// send one), but without the upstream's CORS headers: the browser
    /// then keeps the answer from the page that asked.
    #[tokio::test]
    async fn a_read_with_a_foreign_origin_passes_but_the_page_cannot_read_it() {
        for origin in ["https://attacker.example", "null"] {
            let (out, forwarded) = via(
                Role::Viewer,
                &format!("GET /api/v1/query?query=up HTTP/1.1\r\nHost: 10.13.13.1\r\nOrigin: {origin}\r\nSec-Fetch-Site: cross-site\r\nConnection: close\r\n\r\n"),
            )
            .await;
            assert!(out.starts_with("HTTP/1.1 200"), "{out}");
            assert!(forwarded);
            assert!(
                !out.to_ascii_lowercase()
                    .contains("access-control-allow-origin"),
                "{origin}: {out}"
            );
        }
        // The gateway's own pages, and tools, keep them.
        for origin in ["Origin: http://10.13.13.1\r\n", ""] {
            let (out, _) = via(
                Role::Viewer,
                &format!("GET /api/v1/query?query=up HTTP/1.1\r\nHost: 10.13.13.1\r\n{origin}Connection: close\r\n\r\n"),
            )
            .await;
            assert!(
                out.to_ascii_lowercase()
                    .contains("access-control-allow-origin: *"),
                "{origin}: {out}"
            );
        }
    }

    /// Prometheus on 80, Alertmanager on 9093, at most `max` requests in
    /// flight to each.
    fn two_upstreams(prom: Uri, am: Uri, max: usize) -> Arc<Proxy> {
        Arc::new(
            Proxy::with_upstreams(
                &[
                    UpstreamConfig::on_port("prometheus", prom, 80, UpstreamKind::Prometheus),
                    UpstreamConfig::on_port("alertmanager", am, 9093, UpstreamKind::Alertmanager),
                ],
                HeaderName::from_static("x-promgate-peer"),
                Duration::from_secs(200),
                metrics(),
                Arc::new(Stats::default()),
                hosts(),
            )
            .with_upstream_limit(max),
        )
    }

    fn info_on(port: u16, role: Role, scope: Option<&str>, per_upstream: usize) -> ConnInfo {
        let scope = scope.map(|s| {
            let raw: crate::web::scope::RawScope = toml::from_str::<
                std::collections::HashMap<String, crate::web::scope::RawScope>,
            >(&format!("s = {s}"))
            .unwrap()
            .remove("s")
            .unwrap();
            crate::web::scope::validate_peer_scope(raw, role).unwrap()
        });
        ConnInfo {
            access: Arc::new(PeerAccess::with_upstream_shares(
                AccessRules {
                    name: Arc::from("alice"),
                    role,
                    allow_paths: Arc::from([]),
                    deny_paths: Arc::from([]),
                    scope,
                },
                promgate_core::access::UpstreamShares {
                    per_peer: per_upstream,
                    upstreams: 2,
                },
            )),
            remote: "10.13.13.2:40000".parse().unwrap(),
            local_port: port,
        }
    }

    /// Issue 28: the tunnel port picks the upstream, and the upstream's
    /// kind picks the rules.
    #[tokio::test]
    async fn the_tunnel_port_picks_the_upstream_and_its_rules() {
        let (prom, prom_seen) = counting_upstream(true).await;
        let (am, am_seen) = counting_upstream(true).await;
        let proxy = two_upstreams(prom, am, 16);
        let req = |path: &str| {
            format!("GET {path} HTTP/1.1\r\nHost: 10.13.13.1\r\nConnection: close\r\n\r\n")
        };
        let out = exchange_as(
            proxy.clone(),
            info_on(9093, Role::Viewer, None, 8),
            &req("/api/v2/alerts"),
        )
        .await;
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
        assert!(out.contains("path=/api/v2/alerts"), "{out}");
        assert_eq!((prom_seen.load(Relaxed), am_seen.load(Relaxed)), (0, 1));
        // Prometheus's routes are not open on Alertmanager's port...
        let out = exchange_as(
            proxy.clone(),
            info_on(9093, Role::Viewer, None, 8),
            &req("/graph"),
        )
        .await;
        assert!(out.starts_with("HTTP/1.1 403"), "{out}");
        assert!(
            out.contains("alertmanager &quot;alertmanager&quot;"),
            "{out}"
        );
        // ...and Alertmanager's are not on Prometheus's.
        let out = exchange_as(
            proxy.clone(),
            info_on(80, Role::Viewer, None, 8),
            &req("/api/v2/alerts"),
        )
        .await;
        assert!(out.starts_with("HTTP/1.1 403"), "{out}");
        let out = exchange_as(
            proxy.clone(),
            info_on(80, Role::Viewer, None, 8),
            &req("/api/v1/query?query=up"),
        )
        .await;
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
        assert_eq!((prom_seen.load(Relaxed), am_seen.load(Relaxed)), (1, 1));
        // A port no upstream is on is closed without an answer.
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        proxy
            .serve_connection(
                info_on(81, Role::Viewer, None, 8),
                server,
                CancellationToken::new(),
            )
            .await;
        let _ = client.write_all(req("/").as_bytes()).await;
        let mut out = String::new();
        let _ = client.read_to_string(&mut out).await;
        assert_eq!(out, "");
    }

    /// A stand-in for Alertmanager's API v2 with one alert and one silence
    /// per team; it records every request it gets as "METHOD path".
    async fn fake_alertmanager() -> (Uri, Arc<std::sync::Mutex<Vec<String>>>) {
        const A: &str = "aaaaaaaa-0000-4000-8000-000000000001";
        const B: &str = "bbbbbbbb-0000-4000-8000-000000000002";
        let silence = |id: &str, team: &str| {
            format!(
                r#"{{"id":"{id}","matchers":[{{"name":"namespace","value":"{team}","isRegex":false,"isEqual":true}}],"startsAt":"2026-12-07T00:00:00Z","endsAt":"2026-12-08T00:00:00Z","createdBy":"x","comment":"y","status":{{"state":"active"}},"updatedAt":"2026-12-07T00:00:00Z"}}"#
            )
        };
        let alert = |team: &str| {
            format!(
                r#"{{"labels":{{"alertname":"Down","namespace":"{team}"}},"annotations":{{}},"startsAt":"2026-12-07T00:00:00Z","endsAt":"2026-12-08T00:00:00Z","updatedAt":"2026-12-07T00:00:00Z","fingerprint":"f{team}","receivers":[{{"name":"r"}}],"status":{{"state":"active","silencedBy":[],"inhibitedBy":[]}}}}"#
            )
        };
        let (sa, sb) = (silence(A, "team-a"), silence(B, "team-b"));
        let alerts = format!("[{},{}]", alert("team-a"), alert("team-b"));
        let silences = format!("[{sa},{sb}]");
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = seen.clone();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (log, alerts, silences, sa, sb) = (
                    log.clone(),
                    alerts.clone(),
                    silences.clone(),
                    sa.clone(),
                    sb.clone(),
                );
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let line = format!("{} {}", req.method(), req.uri().path());
                    log.lock().unwrap().push(line.clone());
                    let body = match line.as_str() {
                        "GET /api/v2/alerts" => alerts.clone(),
                        "GET /api/v2/silences" => silences.clone(),
                        l if l == format!("GET /api/v2/silence/{A}") => sa.clone(),
                        l if l == format!("GET /api/v2/silence/{B}") => sb.clone(),
                        "POST /api/v2/silences" => {
                            r#"{"silenceID":"cccccccc-0000-4000-8000-000000000003"}"#.into()
                        }
                        _ => String::new(),
                    };
                    async move {
                        Ok::<_, Infallible>(Response::new(http_body_util::Full::new(Bytes::from(
                            body,
                        ))))
                    }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), service),
                );
            }
        });
        (format!("http://{addr}").parse().unwrap(), seen)
    }

    /// Issue 28, part 3, through the proxy: a scoped responder on
    /// Alertmanager sees its team's alerts and silences only, creates a
    /// silence only with its team's matcher, expires only its team's
    /// silence (fetched and checked first), and never reaches the status
    /// API; the UI's page passes.
    #[tokio::test]
    async fn a_scoped_peer_on_alertmanager_gets_its_scope_only() {
        const A: &str = "aaaaaaaa-0000-4000-8000-000000000001";
        const B: &str = "bbbbbbbb-0000-4000-8000-000000000002";
        let (prom, _) = counting_upstream(true).await;
        let (am, seen) = fake_alertmanager().await;
        let proxy = two_upstreams(prom, am, 16);
        let alice = || info_on(9093, Role::Responder, Some("{ namespace = \"team-a\" }"), 8);
        let ask = |method: &str, path: &str, body: &str| {
            format!(
                "{method} {path} HTTP/1.1\r\nHost: 10.13.13.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
        };
        let new = |team: &str| {
            format!(
                r#"{{"matchers":[{{"name":"namespace","value":"{team}","isRegex":false,"isEqual":true}}],"startsAt":"2026-12-07T00:00:00Z","endsAt":"2026-12-08T00:00:00Z","createdBy":"alice","comment":"on it"}}"#
            )
        };
        // (method, path, body, status, the answer contains, and does not).
        type Case<'a> = (
            &'a str,
            String,
            String,
            &'a str,
            &'a [&'a str],
            &'a [&'a str],
        );
        #[rustfmt::skip]
        let cases: [Case; 9] = [
            ("GET", "/api/v2/alerts".into(), String::new(), "200", &["team-a"], &["team-b"]),
            ("GET", "/api/v2/silences".into(), String::new(), "200", &[A], &[B]),
            ("GET", format!("/api/v2/silence/{B}"), String::new(), "403", &[], &[]),
            ("POST", "/api/v2/silences".into(), new("team-b"), "403", &[], &[]),
            ("POST", "/api/v2/silences".into(), new("team-a"), "200", &[], &[]),
            ("DELETE", format!("/api/v2/silence/{B}"), String::new(), "403", &[], &[]),
            ("DELETE", format!("/api/v2/silence/{A}"), String::new(), "200", &[], &[]),
            // The refusal page names the scope.
            ("GET", "/api/v2/status".into(), String::new(), "403", &["team-a"], &[]),
            ("GET", "/".into(), String::new(), "200", &[], &[]),
        ];
        for (method, path, body, status, has, has_not) in &cases {
            let out = exchange_as(proxy.clone(), alice(), &ask(method, path, body)).await;
            assert!(
                out.starts_with(&format!("HTTP/1.1 {status}")),
                "{method} {path}: {out}"
            );
            for s in *has {
                assert!(out.contains(s), "{method} {path}: no {s} in {out}");
            }
            for s in *has_not {
                assert!(!out.contains(s), "{method} {path}: {s} in {out}");
            }
        }
        // What reached Alertmanager: the refused silence and status never
        // did, and team-b's silence was only read, never deleted.
        let seen = seen.lock().unwrap().clone();
        assert_eq!(
            seen,
            vec![
                "GET /api/v2/alerts".to_string(),
                "GET /api/v2/silences".into(),
                format!("GET /api/v2/silence/{B}"),
                "POST /api/v2/silences".into(),
                format!("GET /api/v2/silence/{B}"),
                format!("GET /api/v2/silence/{A}"),
                format!("DELETE /api/v2/silence/{A}"),
                "GET /".into(),
            ]
        );
    }

    /// Each upstream has its own concurrency limits: a peer whose
    /// Prometheus share is taken by slow queries still reaches its
    /// Alertmanager at once.
    #[tokio::test(start_paused = true)]
    async fn each_upstream_has_its_own_share() {
        let (prom, seen) = counting_slow_upstream(Duration::from_secs(10)).await;
        let (am, _) = counting_upstream(true).await;
        let proxy = two_upstreams(prom, am, 1);
        let alice = info_on(80, Role::Viewer, None, 1);
        let busy = tokio::spawn(exchange_as(proxy.clone(), alice.clone(), QUERY));
        tokio::time::sleep(Duration::from_millis(100)).await;
        let started = tokio::time::Instant::now();
        // The same peer (its PeerAccess), on Alertmanager's port.
        let on_am = ConnInfo {
            local_port: 9093,
            ..alice.clone()
        };
        let out = exchange_as(
            proxy.clone(),
            on_am,
            "GET /api/v2/alerts HTTP/1.1\r\nHost: 10.13.13.1\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
        assert!(busy.await.unwrap().starts_with("HTTP/1.1 200"));
        assert_eq!(seen.lock().unwrap()["alice"].1, 1);
    }
}
