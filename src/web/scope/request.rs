//! What a scoped peer's request becomes: rewritten, filtered, forwarded as
//! is, or refused.
//!
//! [`classify`] decides from the normalized path alone, before any body is
//! read; it is default-deny, so an endpoint added to Prometheus later is
//! closed to scoped peers until it is listed here. For the endpoints that
//! take PromQL or series selectors, [`rewrite`] reads every parameter once,
//! from the query string and a form body, refuses what is ambiguous, and
//! rebuilds the request from the decoded parameters: GET and HEAD carry
//! them in a fresh query string, POST in a fresh form body with no query
//! string. Prometheus (Go's `ParseForm`) therefore sees exactly the
//! parameters that were checked, whatever encoding tricks the original used.

use super::Scope;
use super::filter::ListKind;
use super::promql::{self, PromqlError};
use http::{Method, StatusCode};

/// How the scope applies to one endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// PromQL in `query` (query, query_range, query_exemplars).
    Query,
    /// Series selectors in `match[]` (series, labels, label values, federate).
    Match,
    /// A list whose response is filtered by labels (rules, alerts).
    List(ListKind),
    /// Exposes no series data (build info, query parsing, UI assets).
    Open,
    /// Exposes data that no selector constrains: refused with 403.
    Closed,
}

/// Read endpoints with nothing to scope: they expose no series data.
const OPEN_API: &[&str] = &[
    "/api/v1/status/buildinfo",
    "/api/v1/parse_query",
    "/api/v1/format_query",
    // Server notices (config reload failures, shutdown); the UI polls them.
    "/api/v1/notifications",
    "/api/v1/notifications/live",
    "/-/ready",
    "/-/healthy",
];

/// UI pages and assets a scoped peer may load (prefixes). These are the
/// single-page app shell and its static files; the data they show comes from
/// the API above. Everything else outside `/api` is closed: console
/// templates (`/consoles`) run unscoped queries on the server, `/metrics`
/// and `/debug` describe the whole server, and the classic UI's other pages
/// (`/classic/alerts`, `/classic/targets`, `/classic/status`, ...) are
/// rendered on the server with everyone's data. Only its graph page, which
/// is a shell around API calls, stays open (Debian's build ships this UI).
const OPEN_UI: &[&str] = &[
    "/classic/graph",
    "/classic/static",
    "/graph",
    "/query",
    "/alerts",
    "/rules",
    "/static",
    "/assets",
    "/favicon.ico",
    "/favicon.svg",
    "/manifest.json",
];

fn under(path: &str, prefix: &str) -> bool {
    path == prefix
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// Classifies a request path, already normalized by [`crate::web::policy::normalize`].
pub fn classify(path: &str) -> Endpoint {
    match path {
        "/api/v1/query" | "/api/v1/query_range" | "/api/v1/query_exemplars" => Endpoint::Query,
        "/api/v1/series" | "/api/v1/labels" | "/federate" => Endpoint::Match,
        "/api/v1/rules" => Endpoint::List(ListKind::Rules),
        "/api/v1/alerts" => Endpoint::List(ListKind::Alerts),
        "/" => Endpoint::Open,
        p if is_label_values(p) => Endpoint::Match,
        p if OPEN_API.contains(&p) => Endpoint::Open,
        p if OPEN_UI.iter().any(|u| under(p, u)) => Endpoint::Open,
        _ => Endpoint::Closed,
    }
}

/// `/api/v1/label/<name>/values`, with exactly one name segment.
fn is_label_values(path: &str) -> bool {
    path.strip_prefix("/api/v1/label/")
        .and_then(|rest| rest.strip_suffix("/values"))
        .is_some_and(|name| !name.is_empty() && !name.contains('/'))
}

/// Why a scoped request was not forwarded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error(
        "{0} exposes data that no series selector constrains, so it is closed to a peer with a scope"
    )]
    Closed(String),
    #[error(
        "remote read is not available to a peer with a scope: its protobuf matchers are not \
         rewritten; use /federate with match[], which is scoped"
    )]
    RemoteRead,
    #[error("{0} is not allowed here for a peer with a scope (use GET or POST)")]
    Method(Method),
    #[error("a {0} request must not carry a body")]
    BodyOnRead(Method),
    #[error("the body must be application/x-www-form-urlencoded, not {0:?}")]
    ContentType(String),
    #[error("a compressed request body ({0}) is not accepted")]
    ContentEncoding(String),
    #[error("the {0} is not valid percent-encoded UTF-8")]
    Encoding(&'static str),
    #[error("`{0}` is given more than once (in the URL and the body, or repeated); send it once")]
    Repeated(&'static str),
    #[error("`{0}` is missing")]
    Missing(&'static str),
    #[error(transparent)]
    Promql(#[from] PromqlError),
}

/// The normalized path of Prometheus's remote read endpoint.
const REMOTE_READ: &str = "/api/v1/read";

impl RequestError {
    /// The refusal of an [`Endpoint::Closed`] path: remote read gets its own
    /// rule (issue 28: it is open to unscoped viewers, so a scoped one needs
    /// to know why it is not), every other path the general one. `shown` is
    /// the path as the peer sent it, for the message.
    pub fn closed(normalized: &str, shown: String) -> RequestError {
        if normalized == REMOTE_READ {
            RequestError::RemoteRead
        } else {
            RequestError::Closed(shown)
        }
    }

    /// The HTTP status the peer gets.
    pub fn status(&self) -> StatusCode {
        match self {
            RequestError::Closed(_) | RequestError::RemoteRead => StatusCode::FORBIDDEN,
            RequestError::Method(_) => StatusCode::METHOD_NOT_ALLOWED,
            RequestError::ContentType(_) | RequestError::ContentEncoding(_) => {
                StatusCode::UNSUPPORTED_MEDIA_TYPE
            }
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

/// The parts of a request that [`rewrite`] reads.
#[derive(Debug, Clone, Copy)]
pub struct ParamRequest<'a> {
    pub method: &'a Method,
    /// The path as the peer sent it (already checked canonical by the proxy).
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub content_type: Option<&'a str>,
    pub content_encoding: Option<&'a str>,
    pub body: &'a [u8],
}

/// The request to forward instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewritten {
    pub path_and_query: String,
    /// For POST: the new `application/x-www-form-urlencoded` body.
    pub form_body: Option<String>,
}

const QUERY: &str = "query";
const MATCH: &str = "match[]";

/// Rewrites a [`Endpoint::Query`] or [`Endpoint::Match`] request so that
/// every PromQL expression and selector in it carries `scope`.
pub fn rewrite(
    scope: &Scope,
    endpoint: &Endpoint,
    req: &ParamRequest<'_>,
) -> Result<Rewritten, RequestError> {
    let (mut params, post) = params_of(req)?;
    scope_params(scope, endpoint, req.path, &mut params)?;
    let encoded = encode_form(&params);
    Ok(if post {
        Rewritten {
            path_and_query: req.path.to_string(),
            form_body: Some(encoded),
        }
    } else if encoded.is_empty() {
        Rewritten {
            path_and_query: req.path.to_string(),
            form_body: None,
        }
    } else {
        Rewritten {
            path_and_query: format!("{}?{encoded}", req.path),
            form_body: None,
        }
    })
}

/// The request's parameters in the order Prometheus (Go's `r.Form`) reads
/// them: a POST's form body first, then the query string. True for a POST,
/// whose parameters go back in a body. Refuses a body on a read, an encoded
/// or non-form body, and any other method.
fn params_of(req: &ParamRequest<'_>) -> Result<(Vec<(String, String)>, bool), RequestError> {
    let mut params = Vec::new();
    let post = if req.method == Method::GET || req.method == Method::HEAD {
        if !req.body.is_empty() {
            return Err(RequestError::BodyOnRead(req.method.clone()));
        }
        false
    } else if req.method == Method::POST {
        if let Some(ce) = req
            .content_encoding
            .filter(|c| !c.eq_ignore_ascii_case("identity"))
        {
            return Err(RequestError::ContentEncoding(ce.to_string()));
        }
        match req.content_type {
            Some(ct) if is_form(ct) => {}
            None if req.body.is_empty() => {}
            other => {
                return Err(RequestError::ContentType(
                    other.unwrap_or("(none)").to_string(),
                ));
            }
        }
        parse_form(req.body, "body", &mut params)?;
        true
    } else {
        return Err(RequestError::Method(req.method.clone()));
    };
    if let Some(q) = req.query {
        parse_form(q.as_bytes(), "query string", &mut params)?;
    }
    Ok((params, post))
}

/// Puts `scope` into the parameters that carry PromQL: the one `query`
/// (exactly one, or refused), or every `match[]` (one scope selector is
/// added when there is none, so that no selector means the scope's series).
fn scope_params(
    scope: &Scope,
    endpoint: &Endpoint,
    path: &str,
    params: &mut Vec<(String, String)>,
) -> Result<(), RequestError> {
    match endpoint {
        Endpoint::Query => {
            let mut found = false;
            for (name, value) in params.iter_mut() {
                if name == QUERY {
                    if found {
                        return Err(RequestError::Repeated(QUERY));
                    }
                    found = true;
                    *value = promql::enforce_query(scope, value)?;
                }
            }
            if !found {
                return Err(RequestError::Missing(QUERY));
            }
        }
        Endpoint::Match => {
            let mut found = false;
            for (name, value) in params.iter_mut() {
                if name == MATCH {
                    found = true;
                    *value = promql::enforce_selector(scope, value)?;
                }
            }
            if !found {
                params.push((MATCH.to_string(), promql::scope_selector(scope)));
            }
        }
        Endpoint::List(_) | Endpoint::Open | Endpoint::Closed => {
            return Err(RequestError::Closed(path.to_string()));
        }
    }
    Ok(())
}

fn is_form(content_type: &str) -> bool {
    content_type.split(';').next().is_some_and(|t| {
        t.trim()
            .eq_ignore_ascii_case("application/x-www-form-urlencoded")
    })
}

/// Parses `a=b&c=d` the way Go's `url.ParseQuery` does (`+` is a space,
/// empty segments are skipped, a segment without `=` has an empty value),
/// but refuses bad escapes instead of silently skipping them.
fn parse_form(
    raw: &[u8],
    location: &'static str,
    out: &mut Vec<(String, String)>,
) -> Result<(), RequestError> {
    for segment in raw.split(|b| *b == b'&') {
        if segment.is_empty() {
            continue;
        }
        let (k, v) = match segment.iter().position(|b| *b == b'=') {
            Some(i) => (&segment[..i], &segment[i + 1..]),
            None => (segment, &b""[..]),
        };
        let decode = |s: &[u8]| decode_component(s).ok_or(RequestError::Encoding(location));
        out.push((decode(k)?, decode(v)?));
    }
    Ok(())
}

fn decode_component(s: &[u8]) -> Option<String> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = s.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// Encodes parameters canonically: only unreserved bytes stay literal.
pub fn encode_form(params: &[(String, String)]) -> String {
    let mut out = String::new();
    for (i, (k, v)) in params.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        encode_component(k, &mut out);
        out.push('=');
        encode_component(v, &mut out);
    }
    out
}

fn encode_component(s: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            b => {
                out.push('%');
                out.push(HEX[(b >> 4) as usize] as char);
                out.push(HEX[(b & 15) as usize] as char);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn team_a() -> Scope {
        Scope::new([("namespace", &["team-a"][..])]).unwrap()
    }

    fn get<'a>(path: &'a str, query: Option<&'a str>) -> ParamRequest<'a> {
        ParamRequest {
            method: &Method::GET,
            path,
            query,
            content_type: None,
            content_encoding: None,
            body: b"",
        }
    }

    fn post<'a>(path: &'a str, query: Option<&'a str>, body: &'a [u8]) -> ParamRequest<'a> {
        ParamRequest {
            method: &Method::POST,
            path,
            query,
            content_type: Some("application/x-www-form-urlencoded; charset=UTF-8"),
            content_encoding: None,
            body,
        }
    }

    fn decoded(r: &Rewritten) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let raw = match &r.form_body {
            Some(b) => b.clone(),
            None => r
                .path_and_query
                .split_once('?')
                .map(|(_, q)| q.to_string())
                .unwrap_or_default(),
        };
        parse_form(raw.as_bytes(), "test", &mut out).unwrap();
        out
    }

    #[test]
    fn classification_table() {
        use Endpoint::*;
        let cases = [
            ("/api/v1/query", Query),
            ("/api/v1/query_range", Query),
            ("/api/v1/query_exemplars", Query),
            ("/api/v1/series", Match),
            ("/api/v1/labels", Match),
            ("/api/v1/label/__name__/values", Match),
            ("/api/v1/label/namespace/values", Match),
            ("/federate", Match),
            ("/api/v1/rules", List(ListKind::Rules)),
            ("/api/v1/alerts", List(ListKind::Alerts)),
            ("/api/v1/status/buildinfo", Open),
            ("/api/v1/parse_query", Open),
            ("/api/v1/format_query", Open),
            ("/", Open),
            ("/graph", Open),
            ("/query", Open),
            ("/static/js/main.js", Open),
            ("/assets/index.js", Open),
            ("/-/ready", Open),
            ("/api/v1/metadata", Closed),
            ("/api/v1/targets", Closed),
            ("/api/v1/targets/metadata", Closed),
            ("/api/v1/status/tsdb", Closed),
            ("/api/v1/status/config", Closed),
            ("/api/v1/status/flags", Closed),
            ("/api/v1/status/runtimeinfo", Closed),
            ("/api/v1/scrape_pools", Closed),
            ("/api/v1/alertmanagers", Closed),
            ("/api/v1/read", Closed),
            ("/api/v1/write", Closed),
            ("/api/v1/admin/tsdb/snapshot", Closed),
            ("/api/v1/admin/tsdb/delete_series", Closed),
            ("/api/v1/label/a/b/values", Closed),
            ("/api/v1/label//values", Closed),
            ("/api/v1/querys", Closed),
            ("/consoles/node.html", Closed),
            ("/metrics", Closed),
            ("/debug/pprof", Closed),
            ("/graphs", Closed),
            ("/classic/graph", Open),
            ("/classic/static/js/graph/index.js", Open),
            ("/classic/alerts", Closed),
            ("/classic/targets", Closed),
            ("/classic/rules", Closed),
            ("/classic/status", Closed),
            ("/classic/config", Closed),
        ];
        for (path, want) in cases {
            assert_eq!(classify(path), want, "{path}");
        }
    }

    /// Issue 28: remote read is open to unscoped viewers; a scoped peer is
    /// refused it by a rule that names remote read and what to use instead.
    #[test]
    fn remote_read_is_refused_to_a_scoped_peer_by_its_own_rule() {
        assert_eq!(classify("/api/v1/read"), Endpoint::Closed);
        let e = RequestError::closed("/api/v1/read", "/api/v1/read".into());
        assert_eq!(e, RequestError::RemoteRead);
        assert_eq!(e.status(), StatusCode::FORBIDDEN);
        let msg = e.to_string();
        assert!(msg.contains("remote read is not available to a peer with a scope"));
        assert!(msg.contains("/federate with match[]"));
        let e = RequestError::closed("/api/v1/targets", "/api/v1/Targets".into());
        assert_eq!(e, RequestError::Closed("/api/v1/Targets".into()));
    }

    #[test]
    fn get_query_is_rebuilt_scoped() {
        let s = team_a();
        let r = rewrite(
            &s,
            &Endpoint::Query,
            &get(
                "/api/v1/query",
                Some("query=up%7Bnamespace%3D%22b%22%7D&time=1"),
            ),
        )
        .unwrap();
        assert_eq!(r.form_body, None);
        assert_eq!(
            decoded(&r),
            vec![
                ("query".into(), r#"up{namespace="team-a"}"#.into()),
                ("time".into(), "1".into())
            ]
        );
        assert!(r.path_and_query.starts_with("/api/v1/query?query=up%7B"));
    }

    #[test]
    fn post_moves_every_parameter_into_one_body() {
        let s = team_a();
        let r = rewrite(
            &s,
            &Endpoint::Query,
            &post(
                "/api/v1/query_range",
                Some("step=15"),
                b"query=rate(x[5m])&start=1&end=2",
            ),
        )
        .unwrap();
        assert_eq!(r.path_and_query, "/api/v1/query_range");
        assert_eq!(
            decoded(&r),
            vec![
                ("query".into(), r#"rate(x{namespace="team-a"}[5m])"#.into()),
                ("start".into(), "1".into()),
                ("end".into(), "2".into()),
                ("step".into(), "15".into()),
            ]
        );
    }

    #[test]
    fn ambiguous_or_odd_requests_are_refused() {
        let s = team_a();
        let q = &Endpoint::Query;
        let cases: Vec<(ParamRequest<'_>, StatusCode)> = vec![
            (
                get("/api/v1/query", Some("query=up&query=down")),
                StatusCode::BAD_REQUEST,
            ),
            (
                get("/api/v1/query", Some("query=up&%71uery=down")),
                StatusCode::BAD_REQUEST,
            ),
            (
                post("/api/v1/query", Some("query=up"), b"query=down"),
                StatusCode::BAD_REQUEST,
            ),
            (
                get("/api/v1/query", Some("time=1")),
                StatusCode::BAD_REQUEST,
            ),
            (
                get("/api/v1/query", Some("query=%zz")),
                StatusCode::BAD_REQUEST,
            ),
            (
                get("/api/v1/query", Some("query=%ff")),
                StatusCode::BAD_REQUEST,
            ),
            (
                get("/api/v1/query", Some("query=up{")),
                StatusCode::BAD_REQUEST,
            ),
            (
                get("/api/v1/query", Some("query=info(up)")),
                StatusCode::BAD_REQUEST,
            ),
            (
                ParamRequest {
                    content_type: Some("multipart/form-data; boundary=x"),
                    ..post("/api/v1/query", None, b"--x\r\n")
                },
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ),
            (
                ParamRequest {
                    content_type: Some("application/json"),
                    ..post("/api/v1/query", None, b"{}")
                },
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ),
            (
                ParamRequest {
                    content_type: None,
                    ..post("/api/v1/query", Some("query=up"), b"query=down")
                },
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ),
            (
                ParamRequest {
                    content_encoding: Some("gzip"),
                    ..post("/api/v1/query", None, b"x")
                },
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ),
            (
                ParamRequest {
                    body: b"query=up",
                    ..get("/api/v1/query", None)
                },
                StatusCode::BAD_REQUEST,
            ),
            (
                ParamRequest {
                    method: &Method::PUT,
                    ..get("/api/v1/query", Some("query=up"))
                },
                StatusCode::METHOD_NOT_ALLOWED,
            ),
        ];
        for (req, status) in cases {
            let got = rewrite(&s, q, &req);
            assert_eq!(
                got.as_ref().map_err(RequestError::status),
                Err(status),
                "{req:?}: {got:?}"
            );
        }
    }

    #[test]
    fn match_parameters_all_get_the_scope() {
        let s = team_a();
        let m = &Endpoint::Match;
        let r = rewrite(
            &s,
            m,
            &get(
                "/api/v1/series",
                Some("match[]=up&match%5B%5D=down&start=1"),
            ),
        )
        .unwrap();
        assert_eq!(
            decoded(&r),
            vec![
                ("match[]".into(), r#"up{namespace="team-a"}"#.into()),
                ("match[]".into(), r#"down{namespace="team-a"}"#.into()),
                ("start".into(), "1".into()),
            ]
        );
        // URL and body both count, and both are scoped.
        let r = rewrite(
            &s,
            m,
            &post("/api/v1/labels", Some("match[]=a"), b"match[]=b"),
        )
        .unwrap();
        assert_eq!(
            decoded(&r),
            vec![
                ("match[]".into(), r#"b{namespace="team-a"}"#.into()),
                ("match[]".into(), r#"a{namespace="team-a"}"#.into()),
            ]
        );
        // None given: the scope is the selector.
        let r = rewrite(&s, m, &get("/api/v1/label/__name__/values", None)).unwrap();
        assert_eq!(
            decoded(&r),
            vec![("match[]".into(), r#"{namespace="team-a"}"#.into())]
        );
        assert!(rewrite(&s, m, &get("/federate", Some("match[]=rate(x[1m])"))).is_err());
        assert!(
            rewrite(
                &s,
                m,
                &get("/federate", Some("match[]={a=\"b\"+or+c=\"d\"}"))
            )
            .is_err()
        );
    }

    #[test]
    fn encoding_round_trips() {
        let params = vec![
            ("match[]".to_string(), "a b&c=d+e%f;g\"h\\i".to_string()),
            ("ünï".to_string(), String::new()),
        ];
        let enc = encode_form(&params);
        let mut back = Vec::new();
        parse_form(enc.as_bytes(), "test", &mut back).unwrap();
        assert_eq!(back, params);
        assert!(!enc.contains(';'));
    }
}
