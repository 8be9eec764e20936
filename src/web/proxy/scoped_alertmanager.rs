//! The proxy side of a scoped peer on Alertmanager: the I/O around
//! [`crate::web::scope::alertmanager`], which decides everything (its
//! module doc is the contract followed here).
//!
//! Lists are fetched uncompressed, collected (bounded) and filtered off the
//! driver's thread. A silence a scoped peer creates is rebuilt from what
//! was checked. One it replaces, reads or expires is fetched and checked
//! first, and the DELETE goes to the path built from the checked ID, never
//! to the peer's raw path. Nothing unreadable is passed on: a peer's body
//! that cannot be read is refused, an upstream answer that cannot be read
//! becomes a 502.

use super::scoped::{
    FILTERS, MAX_LIST_RESPONSE, busy, collect_plain, permits, read_form_body, rebuilt_answer,
};
use super::{Audit, Proxy, ProxyBody, Upstream, error_page, strip_hop_by_hop};
use crate::web::scope::Scope;
use crate::web::scope::alertmanager::{self as am, NewSilence, Refusal, Route, SilenceId};
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use promgate_core::gateway::ConnInfo;
use std::convert::Infallible;

/// Largest single silence read from Alertmanager before it is checked.
const MAX_SILENCE: usize = 1024 * 1024;

/// Which list filter a GET's answer goes through.
#[derive(Debug, Clone, Copy)]
enum ListFilter {
    Alerts,
    AlertGroups,
    Silences,
    Receivers,
}

impl ListFilter {
    fn apply(self, scope: &Scope, body: &[u8]) -> Result<Vec<u8>, Refusal> {
        match self {
            ListFilter::Alerts => am::filter_alerts(scope, body),
            ListFilter::AlertGroups => am::filter_alert_groups(scope, body),
            ListFilter::Silences => am::filter_silences(scope, body),
            ListFilter::Receivers => am::receiver_names(body),
        }
    }
}

/// Why a step stopped: the page to answer with.
type Stop = Response<ProxyBody>;

/// The peer, its scope and its request line, for the pages that refuse it.
struct Who<'a> {
    info: &'a ConnInfo,
    scope: &'a Scope,
    upstream: &'a Upstream,
    peer: String,
    method: Method,
    path: String,
}

impl Who<'_> {
    fn refuse(&self, e: &Refusal) -> Response<ProxyBody> {
        let status = e.status();
        let title = status.canonical_reason().unwrap_or("Refused");
        error_page(
            status,
            title,
            &format!(
                "Peer \"{}\" (scope {}) may not {} {} on Alertmanager: {e}.",
                self.peer, self.scope, self.method, self.path
            ),
        )
    }
}

impl Proxy {
    /// Handles a scoped peer's request to an Alertmanager upstream, after
    /// the role policy allowed it.
    pub(super) async fn handle_scoped_alertmanager(
        &self,
        info: &ConnInfo,
        scope: &Scope,
        normalized: &str,
        upstream: &Upstream,
        req: Request<Incoming>,
        audit: &mut Audit,
    ) -> Response<ProxyBody> {
        let who = Who {
            info,
            scope,
            upstream,
            peer: audit.peer.to_string(),
            method: req.method().clone(),
            path: req.uri().path().to_string(),
        };
        let result = match am::scoped_alertmanager_request(req.method(), normalized) {
            Route::Refuse(e) => Err(who.refuse(&e)),
            Route::Open => self.pass_through(&who, req, audit).await,
            Route::Alerts => {
                self.get_filtered(&who, ListFilter::Alerts, req, audit)
                    .await
            }
            Route::AlertGroups => {
                self.get_filtered(&who, ListFilter::AlertGroups, req, audit)
                    .await
            }
            Route::Silences => {
                self.get_filtered(&who, ListFilter::Silences, req, audit)
                    .await
            }
            Route::Receivers => {
                self.get_filtered(&who, ListFilter::Receivers, req, audit)
                    .await
            }
            Route::Silence(id) => self.get_silence(&who, &id, audit).await,
            Route::NewSilence => self.new_silence(&who, req, audit).await,
            Route::ExpireSilence(id) => self.expire_silence(&who, &id, audit).await,
        };
        result.unwrap_or_else(|page| page)
    }

    /// The UI's assets and the health endpoints: forwarded as they are.
    async fn pass_through(
        &self,
        who: &Who<'_>,
        req: Request<Incoming>,
        audit: &mut Audit,
    ) -> Result<Response<ProxyBody>, Stop> {
        let mut resp = self
            .forward(
                who.info,
                &who.peer,
                who.upstream,
                req.map(|b| b.boxed()),
                audit,
            )
            .await?;
        strip_hop_by_hop(resp.headers_mut());
        Ok(resp.map(|b| b.boxed()))
    }

    /// A list: the GET goes upstream with its query (which only narrows
    /// what Alertmanager answers), the answer comes back plain, and a 2xx
    /// one is filtered to the scope.
    async fn get_filtered(
        &self,
        who: &Who<'_>,
        filter: ListFilter,
        req: Request<Incoming>,
        audit: &mut Audit,
    ) -> Result<Response<ProxyBody>, Stop> {
        let (mut parts, _) = req.into_parts();
        parts.headers.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("identity"),
        );
        parts.headers.remove(header::CONTENT_LENGTH);
        parts.headers.remove(header::CONTENT_TYPE);
        let req = Request::from_parts(parts, Full::new(Bytes::new()));
        // Held from before the request until the filtered list is built.
        let Some(_permits) = permits(who.info.access.scoped_work(), &FILTERS).await else {
            return Err(busy());
        };
        let resp = self.send(who, req, audit).await?;
        let (mut parts, body) = resp.into_parts();
        if !parts.status.is_success() {
            strip_hop_by_hop(&mut parts.headers);
            return Ok(Response::from_parts(parts, body.boxed()));
        }
        let bytes = collect(&parts, body, MAX_LIST_RESPONSE, "list").await?;
        let scope = who.scope.clone();
        let out = match tokio::task::spawn_blocking(move || filter.apply(&scope, &bytes)).await {
            Ok(Ok(out)) => out,
            Ok(Err(e)) => return Err(bad_gateway(&e.to_string())),
            Err(e) => return Err(bad_gateway(&format!("the filter did not finish: {e}"))),
        };
        Ok(rebuilt_answer(parts, out))
    }

    /// One silence: shown only when it pins the peer's scope.
    async fn get_silence(
        &self,
        who: &Who<'_>,
        id: &SilenceId,
        audit: &mut Audit,
    ) -> Result<Response<ProxyBody>, Stop> {
        let (parts, bytes) = self.fetch_checked_silence(who, id, audit).await?;
        Ok(rebuilt_answer(parts, bytes.to_vec()))
    }

    /// A new silence, or one that replaces another: checked, rebuilt, and
    /// POSTed; a replaced silence must pin the scope too.
    async fn new_silence(
        &self,
        who: &Who<'_>,
        req: Request<Incoming>,
        audit: &mut Audit,
    ) -> Result<Response<ProxyBody>, Stop> {
        let (parts, body) = req.into_parts();
        if parts
            .headers
            .get(header::CONTENT_ENCODING)
            .is_some_and(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"))
        {
            return Err(error_page(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "Unsupported media type",
                "A silence from a peer with a scope must be sent uncompressed.",
            ));
        }
        let body = read_form_body(body).await?;
        let checked = am::check_new_silence(who.scope, &body).map_err(|e| who.refuse(&e))?;
        let body = match checked {
            NewSilence::Create(body) => body,
            NewSilence::Replace { id, body } => {
                self.fetch_checked_silence(who, &id, audit).await?;
                body
            }
        };
        let req = own_request(Method::POST, "/api/v2/silences", Some(body))?;
        Ok(passed_on(self.send(who, req, audit).await?))
    }

    /// Expiring a silence: it is fetched and must pin the scope; the DELETE
    /// then goes to the checked ID's path.
    async fn expire_silence(
        &self,
        who: &Who<'_>,
        id: &SilenceId,
        audit: &mut Audit,
    ) -> Result<Response<ProxyBody>, Stop> {
        self.fetch_checked_silence(who, id, audit).await?;
        let req = own_request(Method::DELETE, &id.path(), None)?;
        Ok(passed_on(self.send(who, req, audit).await?))
    }

    /// GETs silence `id` and checks that it pins the scope. An answer that
    /// is not 2xx refuses the request (there is nothing to check), with
    /// Alertmanager's status when it is 404.
    async fn fetch_checked_silence(
        &self,
        who: &Who<'_>,
        id: &SilenceId,
        audit: &mut Audit,
    ) -> Result<(http::response::Parts, Bytes), Stop> {
        let req = own_request(Method::GET, &id.path(), None)?;
        let resp = self.send(who, req, audit).await?;
        let (parts, body) = resp.into_parts();
        if !parts.status.is_success() {
            let status = if parts.status == StatusCode::NOT_FOUND {
                StatusCode::NOT_FOUND
            } else {
                StatusCode::BAD_GATEWAY
            };
            return Err(error_page(
                status,
                status.canonical_reason().unwrap_or("Refused"),
                &format!(
                    "Silence {} could not be read from Alertmanager (status {}), so it cannot be checked against the peer's scope.",
                    id.as_str(),
                    parts.status.as_u16()
                ),
            ));
        }
        let bytes = collect(&parts, body, MAX_SILENCE, "silence").await?;
        am::check_existing_silence(who.scope, id, &bytes).map_err(|e| who.refuse(&e))?;
        Ok((parts, bytes))
    }

    /// Sends a request whose body is in memory to the peer's upstream.
    async fn send(
        &self,
        who: &Who<'_>,
        req: Request<Full<Bytes>>,
        audit: &mut Audit,
    ) -> Result<Response<Incoming>, Stop> {
        let req = req.map(|b| b.map_err(|never: Infallible| match never {}).boxed());
        self.forward(who.info, &who.peer, who.upstream, req, audit)
            .await
    }
}

/// A request promgate builds itself from checked parts: `method` on `uri`,
/// with a JSON body when there is one. Answers are asked for uncompressed,
/// so that a silence read back can be checked.
// Async functions here return the same `Stop`; clippy measures only this one.
#[allow(clippy::result_large_err)]
fn own_request(
    method: Method,
    uri: &str,
    json: Option<Vec<u8>>,
) -> Result<Request<Full<Bytes>>, Stop> {
    let mut req = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::ACCEPT_ENCODING, "identity");
    let body = match json {
        Some(body) => {
            req = req
                .header(header::CONTENT_TYPE, "application/json")
                .header(header::CONTENT_LENGTH, body.len());
            Bytes::from(body)
        }
        None => Bytes::new(),
    };
    req.body(Full::new(body))
        .map_err(|e| bad_gateway(&e.to_string()))
}

/// Alertmanager's answer as it is, less the hop-by-hop headers.
fn passed_on(mut resp: Response<Incoming>) -> Response<ProxyBody> {
    strip_hop_by_hop(resp.headers_mut());
    resp.map(|b| b.boxed())
}

/// Collects an upstream answer's body; see [`collect_plain`].
async fn collect(
    parts: &http::response::Parts,
    body: Incoming,
    limit: usize,
    what: &str,
) -> Result<Bytes, Stop> {
    collect_plain(parts, body, limit, &format!("the {what}"))
        .await
        .map_err(|why| bad_gateway(&why))
}

fn bad_gateway(why: &str) -> Response<ProxyBody> {
    tracing::warn!(error = %why, "cannot enforce a scope on Alertmanager's answer");
    error_page(
        StatusCode::BAD_GATEWAY,
        "Bad gateway",
        &format!("promgate could not enforce the peer's scope on Alertmanager's answer: {why}."),
    )
}
