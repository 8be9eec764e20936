//! The proxy side of label scoping: requests from a scoped peer.
//!
//! The decisions are all in [`crate::web::scope`]; this is the I/O around them.
//! Endpoints that take PromQL or selectors have their form body collected
//! (bounded) and are forwarded as the core rebuilt them, never as sent.
//! Rule and alert lists are fetched uncompressed, collected (bounded),
//! filtered and re-serialized. Closed endpoints get a 403 naming the scope.

use super::{Audit, Proxy, ProxyBody, Upstream, error_page, strip_hop_by_hop};
use crate::web::scope::Scope;
use crate::web::scope::filter::{self, ListKind};
use crate::web::scope::request::{self, Endpoint, ParamRequest, RequestError, Rewritten};
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use promgate_core::gateway::ConnInfo;
use std::convert::Infallible;
use std::time::Duration;
use tokio::sync::{Semaphore, SemaphorePermit};

/// Largest form body read from a scoped peer. The Prometheus UI posts long
/// queries this way; 1 MiB is far above any real query (the PromQL itself
/// is capped at [`crate::web::scope::promql::MAX_QUERY_BYTES`]) and bounds what
/// one request can make the gateway hold.
pub(super) const MAX_FORM_BODY: usize = 1024 * 1024;
/// Largest rules or alerts response filtered. It is held whole while being
/// filtered; 32 MiB covers thousands of rules with their active alerts.
pub(super) const MAX_LIST_RESPONSE: usize = 32 * 1024 * 1024;
/// How long a scoped peer may take to send its form body, as for request
/// heads: a body trickled a byte at a time must not hold its 1 MiB buffer
/// for the 300 s no-progress timeout.
pub(super) const FORM_BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// Scope rewrites running at once, all peers together (each also holds one
/// of its peer's [`crate::web::policy::SCOPED_WORK_PER_PEER`] permits). One rewrite costs at
/// most a few MiB and milliseconds (`tests/scope_cost.rs`), so this bounds
/// their total, and a peer that loops on heavy queries can hold only its own
/// two of these.
static REWRITES: Semaphore = Semaphore::const_new(4);
/// Rules or alerts lists held and filtered at once, all peers together: each
/// can be [`MAX_LIST_RESPONSE`] of JSON and several times that parsed.
pub(super) static FILTERS: Semaphore = Semaphore::const_new(1);

/// Takes a permit from the peer's share, then one from the global pool: a
/// peer waiting for its own share holds none of the global one (so it holds
/// at most its share of the global queue; tokio's semaphores are FIFO).
/// Used for scoped work and for upstream requests alike. The peer's share
/// lives in the I/O-free core, hence a runtime-free semaphore there.
pub(super) async fn permits<'a>(
    peer: &'a async_lock::Semaphore,
    global: &'a Semaphore,
) -> Option<(async_lock::SemaphoreGuard<'a>, SemaphorePermit<'a>)> {
    let mine = peer.acquire().await;
    let all = global.acquire().await.ok()?;
    Some((mine, all))
}

impl Proxy {
    /// Handles a scoped peer's request. `Err` gives the request back when
    /// the endpoint exposes no data, to be forwarded the ordinary way. The
    /// peer's name is the one `audit` records.
    pub(super) async fn handle_scoped(
        &self,
        info: &ConnInfo,
        scope: &Scope,
        normalized: &str,
        upstream: &Upstream,
        req: Request<Incoming>,
        audit: &mut Audit,
    ) -> Result<Response<ProxyBody>, Request<Incoming>> {
        let peer_name = audit.peer.clone();
        let (method, path) = (req.method().clone(), req.uri().path().to_string());
        let refuse = |e: RequestError| {
            let title = e.status().canonical_reason().unwrap_or("Refused");
            let body =
                format!("Peer \"{peer_name}\" (scope {scope}) may not {method} {path}: {e}.");
            error_page(e.status(), title, &body)
        };
        let scoped = Scoped {
            info,
            scope,
            peer_name: &peer_name,
            upstream,
        };
        Ok(match request::classify(normalized) {
            Endpoint::Open => return Err(req),
            Endpoint::Closed => refuse(RequestError::closed(normalized, path.clone())),
            endpoint @ (Endpoint::Query | Endpoint::Match) => {
                match self.forward_rewritten(&scoped, endpoint, req, audit).await {
                    Ok(resp) | Err(Stop::Page(resp)) => resp,
                    Err(Stop::Refused(e)) => refuse(e),
                }
            }
            Endpoint::List(_) if req.method() != Method::GET => {
                refuse(RequestError::Method(req.method().clone()))
            }
            Endpoint::List(kind) => self.forward_filtered(&scoped, kind, req, audit).await,
        })
    }

    /// A query or selector endpoint: the form body is read (bounded), the
    /// scope rewrites the request off the driver's thread, and the rebuilt
    /// request goes upstream.
    async fn forward_rewritten(
        &self,
        scoped: &Scoped<'_>,
        endpoint: Endpoint,
        req: Request<Incoming>,
        audit: &mut Audit,
    ) -> Result<Response<ProxyBody>, Stop> {
        let (parts, body) = req.into_parts();
        let body = read_form_body(body).await.map_err(Stop::Page)?;
        let rewritten = rewrite_off_thread(scoped, endpoint, &parts, body).await?;
        tracing::debug!(peer = %scoped.peer_name, scope = %scoped.scope, to = %rewritten.path_and_query, "scoped request rewritten");
        let req = rebuilt_request(parts, rewritten).map_err(Stop::Refused)?;
        Ok(
            match self
                .send_rebuilt(scoped.info, scoped.peer_name, scoped.upstream, req, audit)
                .await
            {
                Ok(mut resp) => {
                    strip_hop_by_hop(resp.headers_mut());
                    resp.map(|b| b.boxed())
                }
                Err(page) => page,
            },
        )
    }

    /// A rules or alerts list: fetched uncompressed, then filtered to the
    /// scope.
    async fn forward_filtered(
        &self,
        scoped: &Scoped<'_>,
        kind: ListKind,
        req: Request<Incoming>,
        audit: &mut Audit,
    ) -> Response<ProxyBody> {
        // A GET body means nothing to Prometheus; it is not forwarded.
        let (mut parts, _) = req.into_parts();
        // The response is filtered as JSON, so it must come plain.
        parts.headers.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("identity"),
        );
        let req = Request::from_parts(parts, Full::new(Bytes::new()));
        // Held from before the request until the filtered list is
        // built: the upstream's answer is collected whole.
        let Some(_permits) = permits(scoped.info.access.scoped_work(), &FILTERS).await else {
            return busy();
        };
        match self
            .send_rebuilt(scoped.info, scoped.peer_name, scoped.upstream, req, audit)
            .await
        {
            Ok(resp) => filtered(scoped.scope, kind, resp).await,
            Err(page) => page,
        }
    }

    /// Sends a rebuilt request, whose body is in memory, upstream.
    async fn send_rebuilt(
        &self,
        info: &ConnInfo,
        peer_name: &str,
        upstream: &Upstream,
        req: Request<Full<Bytes>>,
        audit: &mut Audit,
    ) -> Result<Response<Incoming>, Response<ProxyBody>> {
        let req = req.map(|b| b.map_err(|never: Infallible| match never {}).boxed());
        self.forward(info, peer_name, upstream, req, audit).await
    }
}

/// Who a scoped request is for, and the connection it goes upstream on.
struct Scoped<'a> {
    info: &'a ConnInfo,
    scope: &'a Scope,
    peer_name: &'a str,
    upstream: &'a Upstream,
}

/// Why a scoped request ends before it goes upstream: a page already made,
/// or a refusal that names the peer and its scope.
enum Stop {
    Page(Response<ProxyBody>),
    Refused(RequestError),
}

/// Reads a scoped peer's form body, within [`MAX_FORM_BODY`] and
/// [`FORM_BODY_TIMEOUT`]; the page for the peer if it cannot.
pub(super) async fn read_form_body(body: Incoming) -> Result<Bytes, Response<ProxyBody>> {
    let read = Limited::new(body, MAX_FORM_BODY).collect();
    let Ok(read) = tokio::time::timeout(FORM_BODY_TIMEOUT, read).await else {
        return Err(error_page(
            StatusCode::REQUEST_TIMEOUT,
            "Request timeout",
            &format!(
                "The form body did not arrive within {} s.",
                FORM_BODY_TIMEOUT.as_secs()
            ),
        ));
    };
    match read {
        Ok(b) => Ok(b.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(error_page(
            StatusCode::PAYLOAD_TOO_LARGE,
            "Payload too large",
            &format!("A form body is limited to {MAX_FORM_BODY} bytes."),
        )),
        Err(_) => Err(error_page(
            StatusCode::BAD_REQUEST,
            "Bad request",
            "The request body could not be read.",
        )),
    }
}

/// Runs the scope's rewrite of a request under a [`REWRITES`] permit.
/// Parsing and printing PromQL is CPU work of up to tens of milliseconds
/// for the largest accepted queries (and regex compilation); it runs off
/// the driver's thread, which carries every tunnel.
async fn rewrite_off_thread(
    scoped: &Scoped<'_>,
    endpoint: Endpoint,
    parts: &http::request::Parts,
    body: Bytes,
) -> Result<Rewritten, Stop> {
    let header = |name| {
        parts
            .headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
            .map(str::to_string)
    };
    let scope = scoped.scope.clone();
    let (method, uri) = (parts.method.clone(), parts.uri.clone());
    let (ct, ce) = (
        header(header::CONTENT_TYPE),
        header(header::CONTENT_ENCODING),
    );
    // Held for the rewrite only, not while the upstream answers.
    let Some(held) = permits(scoped.info.access.scoped_work(), &REWRITES).await else {
        return Err(Stop::Page(busy()));
    };
    let rewritten = tokio::task::spawn_blocking(move || {
        request::rewrite(
            &scope,
            &endpoint,
            &ParamRequest {
                method: &method,
                path: uri.path(),
                query: uri.query(),
                content_type: ct.as_deref(),
                content_encoding: ce.as_deref(),
                body: &body,
            },
        )
    })
    .await;
    drop(held);
    match rewritten {
        Ok(Ok(r)) => Ok(r),
        Ok(Err(e)) => Err(Stop::Refused(e)),
        Err(_) => Err(Stop::Page(error_page(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Internal error",
            "The scope rewrite did not complete.",
        ))),
    }
}

/// The request sent upstream in place of the peer's: the rewritten target,
/// and the rewritten form body (or none) with headers that describe it.
fn rebuilt_request(
    mut parts: http::request::Parts,
    rewritten: Rewritten,
) -> Result<Request<Full<Bytes>>, RequestError> {
    parts.uri = Uri::try_from(rewritten.path_and_query.as_str())
        .map_err(|_| RequestError::Encoding("rewritten URL"))?;
    let h = &mut parts.headers;
    h.remove(header::CONTENT_ENCODING);
    let body = match rewritten.form_body {
        Some(form) => {
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/x-www-form-urlencoded"),
            );
            h.insert(header::CONTENT_LENGTH, HeaderValue::from(form.len()));
            Bytes::from(form)
        }
        None => {
            h.remove(header::CONTENT_TYPE);
            h.remove(header::CONTENT_LENGTH);
            Bytes::new()
        }
    };
    Ok(Request::from_parts(parts, Full::new(body)))
}

/// The semaphores are never closed; should one be, say so rather than hang.
pub(super) fn busy() -> Response<ProxyBody> {
    error_page(
        StatusCode::SERVICE_UNAVAILABLE,
        "Service unavailable",
        "promgate is shutting down.",
    )
}

/// Filters a rules or alerts response. Non-success statuses carry no list
/// and pass as they are; anything unreadable becomes a 502, never the
/// unfiltered body.
async fn filtered(scope: &Scope, kind: ListKind, resp: Response<Incoming>) -> Response<ProxyBody> {
    let bad = |why: String| {
        tracing::warn!(list = ?kind, error = %why, "cannot filter the upstream's list for a scoped peer");
        error_page(
            StatusCode::BAD_GATEWAY,
            "Bad gateway",
            &format!(
                "promgate could not filter the upstream's answer for the peer's scope: {why}."
            ),
        )
    };
    let (mut parts, body) = resp.into_parts();
    if !parts.status.is_success() {
        strip_hop_by_hop(&mut parts.headers);
        return Response::from_parts(parts, body.boxed());
    }
    let bytes = match collect_plain(&parts, body, MAX_LIST_RESPONSE, "it").await {
        Ok(bytes) => bytes,
        Err(why) => return bad(why),
    };
    // Parsing and re-serializing up to MAX_LIST_RESPONSE of JSON takes
    // milliseconds to seconds: off the driver's thread, which carries every
    // tunnel.
    let scope2 = scope.clone();
    let out =
        match tokio::task::spawn_blocking(move || filter::filter_response(&scope2, kind, &bytes))
            .await
        {
            Ok(Ok(out)) => out,
            Ok(Err(e)) => return bad(e.to_string()),
            Err(e) => return bad(format!("the filter did not finish: {e}")),
        };
    rebuilt_answer(parts, out)
}

/// Collects an upstream answer's body, which must be uncompressed (identity
/// was asked for) and within `limit`. The error says why, naming `what`.
pub(super) async fn collect_plain(
    parts: &http::response::Parts,
    body: Incoming,
    limit: usize,
    what: &str,
) -> Result<Bytes, String> {
    if parts
        .headers
        .get(header::CONTENT_ENCODING)
        .is_some_and(|v| v.as_bytes() != b"identity")
    {
        return Err(format!(
            "{what} came compressed although identity was asked for"
        ));
    }
    match Limited::new(body, limit).collect().await {
        Ok(b) => Ok(b.to_bytes()),
        Err(e) => Err(format!(
            "reading {what} failed or it exceeds {limit} bytes: {e}"
        )),
    }
}

/// A filtered or checked answer: the upstream's status and headers with the
/// new body's length.
pub(super) fn rebuilt_answer(
    mut parts: http::response::Parts,
    out: Vec<u8>,
) -> Response<ProxyBody> {
    strip_hop_by_hop(&mut parts.headers);
    parts.headers.remove(header::CONTENT_ENCODING);
    parts
        .headers
        .insert(header::CONTENT_LENGTH, HeaderValue::from(out.len()));
    let body = Full::new(Bytes::from(out))
        .map_err(|never: Infallible| match never {})
        .boxed();
    Response::from_parts(parts, body)
}
