//! Who may do what: access decisions on HTTP requests, by peer role.
//!
//! Decisions are made on a normalized path (percent-decoded, `.`/`..`
//! resolved, repeated and trailing slashes removed, lower-cased), so that
//! `//api/v1/admin`, `%2e%2e`, `/API/V1/ADMIN/` and friends all meet the same
//! rule. The proxy forwards only paths that are already in canonical form
//! (see [`is_canonical`]), so what the upstream sees is what was decided on.
//!
//! Everything is default-deny: a viewer may use only the read endpoints
//! and UI routes listed here, which are the ones Prometheus 2.x and 3.x
//! register (`web/web.go`); anything else, `/debug/pprof` included, needs
//! the admin role or a per-peer `allow_paths` entry.

use http::Method;
pub use promgate_core::access::{AccessRules, PeerAccess};
use promgate_core::role::Role;

/// Why a request was refused, for the 403 page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Deny(String),
}

/// Read API endpoints a viewer may call. POST is allowed on these because
/// Prometheus's UI sends long queries by POST.
const VIEWER_API: &[&str] = &[
    "/api/v1/query",
    "/api/v1/query_range",
    "/api/v1/query_exemplars",
    "/api/v1/format_query",
    "/api/v1/parse_query",
    "/api/v1/series",
    "/api/v1/labels",
    "/api/v1/label",
    "/api/v1/metadata",
    "/api/v1/targets",
    "/api/v1/scrape_pools",
    "/api/v1/rules",
    "/api/v1/alerts",
    "/api/v1/alertmanagers",
    "/api/v1/status",
    "/api/v1/notifications",
];

/// Read endpoints that Prometheus serves by POST only, matched exactly.
/// Remote read hands a viewer the same raw samples `/federate` does (issue
/// 28), so it is open to viewers as `/federate` is. A scoped peer is
/// refused it by [`crate::web::scope::request`], which does not rewrite
/// its protobuf matchers.
const VIEWER_POST: &[&str] = &["/api/v1/read"];

/// Read endpoints and UI routes outside `/api/` (GET/HEAD only): the
/// routes of Prometheus 3's UI and of the 2.x UIs, their static assets,
/// and the plain read endpoints. `/` itself is matched exactly.
const VIEWER_GET: &[&str] = &[
    "/federate",
    "/-/ready",
    "/-/healthy",
    "/metrics",
    "/version",
    // UI routes (3.x and 2.x).
    "/query",
    "/graph",
    "/alerts",
    "/rules",
    "/targets",
    "/service-discovery",
    "/alertmanager-discovery",
    "/status",
    "/tsdb-status",
    "/flags",
    "/config",
    "/agent",
    "/consoles",
    "/classic",
    "/new",
    // UI assets.
    "/assets",
    "/static",
    "/user",
    "/favicon.ico",
    "/favicon.svg",
    "/manifest.json",
];

/// What only admins may use, where the upstream enables it. `/debug` is
/// Go's pprof: goroutine dumps and heap profiles of the upstream.
const ADMIN_ONLY: &[&str] = &[
    "/api/v1/admin",
    "/api/v2/admin",
    "/-/reload",
    "/-/quit",
    "/debug",
];

/// Path normalization failure: the request is refused with 400.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathError {
    BadEncoding,
    EscapesRoot,
}

/// Normalizes a request path for policy decisions.
pub fn normalize(raw: &str) -> Result<String, PathError> {
    let decoded = percent_decode(raw)?;
    let mut segments: Vec<&str> = Vec::new();
    for seg in decoded.split(['/', '\\']) {
        match seg {
            "" | "." => {}
            ".." => {
                if segments.pop().is_none() {
                    return Err(PathError::EscapesRoot);
                }
            }
            s => segments.push(s),
        }
    }
    let mut out = String::with_capacity(decoded.len() + 1);
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    if out.is_empty() {
        out.push('/');
    }
    Ok(out.to_ascii_lowercase())
}

/// True when forwarding `raw` unchanged is safe: no encoded characters that
/// could hide a separator or dot, no empty, `.` or `..` segments, no
/// backslash. Trailing slashes and case are left to the upstream.
pub fn is_canonical(raw: &str) -> bool {
    if !raw.starts_with('/') || raw.contains('\\') {
        return false;
    }
    let lower = raw.to_ascii_lowercase();
    if lower.contains("%2e")
        || lower.contains("%2f")
        || lower.contains("%5c")
        || lower.contains("%25")
    {
        return false;
    }
    let trimmed = raw.strip_suffix('/').unwrap_or(raw);
    trimmed.is_empty()
        || trimmed[1..]
            .split('/')
            .all(|s| !s.is_empty() && s != "." && s != "..")
}

/// The path a request is decided on, or `None` when the request must be
/// refused (400): `raw` must normalize and be canonical, so the upstream
/// receives `raw` unchanged and reads it as the same path.
pub fn decision_path(raw: &str) -> Option<String> {
    match normalize(raw) {
        Ok(p) if is_canonical(raw) => Some(p),
        _ => None,
    }
}

fn percent_decode(raw: &str) -> Result<String, PathError> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).ok_or(PathError::BadEncoding)?;
            let s = std::str::from_utf8(hex).map_err(|_| PathError::BadEncoding)?;
            out.push(u8::from_str_radix(s, 16).map_err(|_| PathError::BadEncoding)?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| PathError::BadEncoding)
}

fn under(path: &str, prefix: &str) -> bool {
    let prefix = prefix.strip_suffix('/').unwrap_or(prefix);
    prefix.is_empty()
        || path == prefix
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/'))
}

fn is_read(method: &Method) -> bool {
    method == Method::GET || method == Method::HEAD
}

/// Decides on a request. `path` must come from [`normalize`]; the per-peer
/// prefixes are normalized here the same way.
pub fn decide(
    role: Role,
    allow_paths: &[String],
    deny_paths: &[String],
    method: &Method,
    path: &str,
) -> Decision {
    let norm = |p: &String| normalize(p).unwrap_or_else(|_| p.to_ascii_lowercase());
    if let Some(p) = deny_paths.iter().find(|p| under(path, &norm(p))) {
        return Decision::Deny(format!("the peer's deny_paths entry \"{p}\""));
    }
    if let Some(p) = ADMIN_ONLY.iter().find(|p| under(path, p)) {
        return match role {
            Role::Admin => Decision::Allow,
            Role::Viewer => Decision::Deny(format!("{p} is for the admin role")),
        };
    }
    if allow_paths.iter().any(|p| under(path, &norm(p))) {
        return Decision::Allow;
    }
    if VIEWER_API.iter().any(|p| under(path, p)) {
        return if is_read(method) || method == Method::POST {
            Decision::Allow
        } else {
            Decision::Deny(format!("{method} is not allowed on the read API"))
        };
    }
    if VIEWER_POST.contains(&path) {
        return if method == Method::POST {
            Decision::Allow
        } else {
            Decision::Deny(format!("{path} takes only POST"))
        };
    }
    if path == "/" || VIEWER_GET.iter().any(|p| under(path, p)) {
        return if is_read(method) {
            Decision::Allow
        } else {
            Decision::Deny(format!("only GET and HEAD are allowed on {path}"))
        };
    }
    Decision::Deny(format!(
        "{path} is not on the list of read endpoints and UI routes"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalization_table() {
        let cases = [
            ("/", Ok("/")),
            ("", Ok("/")),
            ("//api/v1/admin", Ok("/api/v1/admin")),
            ("/api/v1/ADMIN/", Ok("/api/v1/admin")),
            ("/api/v1/query/../admin/tsdb", Ok("/api/v1/admin/tsdb")),
            ("/api/v1/%61dmin", Ok("/api/v1/admin")),
            ("/api/v1/query/%2e%2e/admin", Ok("/api/v1/admin")),
            ("/api/v1/query%2f..%2fadmin", Ok("/api/v1/admin")),
            ("/api\\v1\\admin", Ok("/api/v1/admin")),
            ("/./-/quit", Ok("/-/quit")),
            ("/..", Err(PathError::EscapesRoot)),
            ("/%zz", Err(PathError::BadEncoding)),
            ("/%", Err(PathError::BadEncoding)),
            ("/%ff", Err(PathError::BadEncoding)),
        ];
        for (raw, want) in cases {
            assert_eq!(normalize(raw), want.map(String::from), "{raw}");
        }
    }

    #[test]
    fn canonical_paths() {
        for ok in [
            "/",
            "/graph",
            "/api/v1/query",
            "/classic/graph/",
            "/api/v1/label/job/values",
        ] {
            assert!(is_canonical(ok), "{ok}");
        }
        for bad in [
            "//api",
            "/a/./b",
            "/a/../b",
            "/%2e%2e/x",
            "/a%2fb",
            "/a\\b",
            "x",
            "/a//b",
            "/%252e",
        ] {
            assert!(!is_canonical(bad), "{bad}");
        }
    }

    #[test]
    fn decision_table() {
        use Role::*;
        let get = Method::GET;
        let post = Method::POST;
        let put = Method::PUT;
        let del = Method::DELETE;
        let cases: &[(Role, &Method, &str, bool)] = &[
            (Viewer, &get, "/", true),
            (Viewer, &get, "/graph", true),
            (Viewer, &get, "/classic/static/js/graph.js", true),
            (Viewer, &get, "/api/v1/query", true),
            (Viewer, &post, "/api/v1/query", true),
            (Viewer, &post, "/api/v1/query_range", true),
            (Viewer, &get, "/api/v1/query_exemplars", true),
            (Viewer, &get, "/api/v1/format_query", true),
            (Viewer, &get, "/api/v1/series", true),
            (Viewer, &post, "/api/v1/series", true),
            (Viewer, &del, "/api/v1/series", false),
            (Viewer, &get, "/api/v1/labels", true),
            (Viewer, &get, "/api/v1/label/job/values", true),
            (Viewer, &get, "/api/v1/metadata", true),
            (Viewer, &get, "/api/v1/targets", true),
            (Viewer, &get, "/api/v1/targets/metadata", true),
            (Viewer, &get, "/api/v1/rules", true),
            (Viewer, &get, "/api/v1/alerts", true),
            (Viewer, &get, "/api/v1/alertmanagers", true),
            (Viewer, &get, "/api/v1/status/config", true),
            (Viewer, &get, "/federate", true),
            (Viewer, &post, "/federate", false),
            (Viewer, &get, "/-/ready", true),
            (Viewer, &post, "/api/v1/admin/tsdb/snapshot", false),
            (Viewer, &put, "/api/v1/admin/tsdb/delete_series", false),
            (Viewer, &post, "/-/quit", false),
            (Viewer, &post, "/-/reload", false),
            (Viewer, &get, "/-/quit", false),
            (Viewer, &post, "/api/v1/write", false),
            // Remote read: POST only, as Prometheus registers it; exactly
            // that path.
            (Viewer, &post, "/api/v1/read", true),
            (Viewer, &get, "/api/v1/read", false),
            (Viewer, &Method::HEAD, "/api/v1/read", false),
            (Viewer, &put, "/api/v1/read", false),
            (Viewer, &post, "/api/v1/read/x", false),
            (Viewer, &post, "/api/v1/reader", false),
            (Viewer, &post, "/api/v1/otlp/v1/metrics", false),
            (Viewer, &get, "/api/v1/query_evil", false),
            (Viewer, &post, "/graph", false),
            // Prometheus 3 UI routes and assets.
            (Viewer, &get, "/query", true),
            (Viewer, &get, "/assets/index-abc123.js", true),
            (Viewer, &get, "/favicon.svg", true),
            (Viewer, &get, "/tsdb-status", true),
            // Go's pprof on the upstream, and routes nobody listed.
            (Viewer, &get, "/debug/pprof/goroutine", false),
            (Viewer, &get, "/debug/pprof/heap", false),
            (Viewer, &get, "/DEBUG/pprof/", false),
            (Viewer, &get, "/something-new", false),
            (Viewer, &get, "/api/v2/admin/tsdb/snapshot", false),
            (Admin, &get, "/debug/pprof/heap", true),
            (Admin, &post, "/api/v1/admin/tsdb/snapshot", true),
            (Admin, &post, "/-/quit", true),
            (Admin, &post, "/-/reload", true),
            (Admin, &get, "/api/v1/query", true),
            (Admin, &post, "/api/v1/write", false),
            (Admin, &post, "/api/v1/read", true),
            (Admin, &get, "/api/v1/read", false),
        ];
        for (role, method, raw, allowed) in cases {
            let path = normalize(raw).unwrap();
            let d = decide(*role, &[], &[], method, &path);
            assert_eq!(
                d == Decision::Allow,
                *allowed,
                "{role:?} {method} {raw}: {d:?}"
            );
        }
    }

    #[test]
    fn remote_read_is_post_only_and_deny_paths_still_close_it() {
        let path = normalize("/api/v1/read").unwrap();
        assert_eq!(
            decide(Role::Viewer, &[], &[], &Method::GET, &path),
            Decision::Deny("/api/v1/read takes only POST".into())
        );
        let deny = vec!["/api/v1/read".to_string()];
        assert!(matches!(
            decide(Role::Viewer, &[], &deny, &Method::POST, &path),
            Decision::Deny(_)
        ));
    }

    #[test]
    fn path_tricks_cannot_reach_admin() {
        for raw in [
            "//api/v1/admin/tsdb/snapshot",
            "/api/v1/admin/tsdb/snapshot/",
            "/API/V1/ADMIN/tsdb/snapshot",
            "/api/v1/query/../admin/tsdb/snapshot",
            "/api/v1/query/%2e%2e/admin/tsdb/snapshot",
            "/api/v1/%61dmin/tsdb/snapshot",
            "/api/v1/./admin/tsdb/snapshot",
            "/-/QUIT",
            "//-/quit/",
        ] {
            let path = normalize(raw).unwrap();
            assert_ne!(
                decide(Role::Viewer, &[], &[], &Method::POST, &path),
                Decision::Allow,
                "{raw}"
            );
        }
    }

    #[test]
    fn per_peer_prefixes() {
        let deny = vec!["/api/v1/series".to_string()];
        let allow = vec![
            "/api/v1/admin/tsdb/snapshot".to_string(),
            "/api/v1/write".to_string(),
        ];
        let path = normalize("/api/v1/series").unwrap();
        assert!(matches!(
            decide(Role::Admin, &[], &deny, &Method::GET, &path),
            Decision::Deny(_)
        ));
        let path = normalize("/api/v1/write").unwrap();
        assert_eq!(
            decide(Role::Viewer, &allow, &[], &Method::POST, &path),
            Decision::Allow
        );
        // allow_paths never lifts the admin-only rule for a viewer.
        let path = normalize("/api/v1/admin/tsdb/snapshot").unwrap();
        assert!(matches!(
            decide(Role::Viewer, &allow, &[], &Method::POST, &path),
            Decision::Deny(_)
        ));
    }
}
