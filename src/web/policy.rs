//! Who may do what: access decisions on HTTP requests, by peer role and
//! the kind of upstream the request is for.
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
//!
//! Alertmanager has its own list (its UI and read API v2 for viewers,
//! silences for responders), and a plain `http` upstream has none: only
//! `allow_paths` entries that name it open it.
//!
//! A peer's `allow_paths` and `deny_paths` entries are either a path
//! prefix (`"/api/v1/write"`) or an upstream's name and a prefix
//! (`"wiki:/"`, see [`split_entry`]). A bare allow entry applies to
//! Prometheus upstreams only, as before there were others: it must not
//! open a service it was not written for. A bare deny entry applies to
//! every upstream: a deny that misses is the worse mistake.

use crate::config::UpstreamKind;
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

/// Alertmanager's UI (0.25 to 0.27): the page, its script and icon, and
/// the libraries under `/lib/`. Its views (`/#/alerts`, `/#/silences`)
/// are fragments, which a browser never sends.
const ALERTMANAGER_UI_EXACT: &[&str] =
    &["/", "/script.js", "/favicon.ico", "/-/ready", "/-/healthy"];
const ALERTMANAGER_UI_UNDER: &[&str] = &["/lib"];

/// Alertmanager's read API v2 (GET/HEAD), each path exact; a single
/// silence (`/api/v2/silence/{id}`) is matched in [`is_one_silence`].
const ALERTMANAGER_READ_API: &[&str] = &[
    "/api/v2/alerts",
    "/api/v2/alerts/groups",
    "/api/v2/silences",
    "/api/v2/status",
    "/api/v2/receivers",
];

/// What only admins may use on an Alertmanager. `/api/v1` is the API that
/// 0.25 still has and 0.27 removed: it creates and deletes silences and
/// posts alerts outside the v2 rules, so it is no one else's way in.
const ALERTMANAGER_ADMIN_ONLY: &[&str] = &["/-/reload", "/debug", "/metrics", "/api/v1"];

/// The upstream a request is for, as the policy sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target<'a> {
    pub name: &'a str,
    pub kind: UpstreamKind,
}

impl Target<'static> {
    /// The one Prometheus of a config without `[[upstream]]`.
    pub const PROMETHEUS: Target<'static> = Target {
        name: "prometheus",
        kind: UpstreamKind::Prometheus,
    };
}

/// Splits an `allow_paths` / `deny_paths` entry into the upstream it
/// names, if any, and its path prefix: `"/x"` is `(None, "/x")`,
/// `"wiki:/x"` is `(Some("wiki"), "/x")`. Paths start with `/`, so an
/// entry that does not names an upstream before its first `:`.
pub fn split_entry(entry: &str) -> (Option<&str>, &str) {
    if entry.starts_with('/') {
        return (None, entry);
    }
    match entry.split_once(':') {
        Some((name, path)) => (Some(name), path),
        None => (None, entry),
    }
}

/// The path prefix of `entry` when it applies to `target`; bare entries
/// apply where `bare_applies`.
fn entry_for<'e>(entry: &'e str, target: Target<'_>, bare_applies: bool) -> Option<&'e str> {
    match split_entry(entry) {
        (None, path) => bare_applies.then_some(path),
        (Some(name), path) => (name == target.name).then_some(path),
    }
}

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

/// Decides on a request to the one Prometheus of a config without
/// `[[upstream]]`; see [`decide_for`].
pub fn decide(
    role: Role,
    allow_paths: &[String],
    deny_paths: &[String],
    method: &Method,
    path: &str,
) -> Decision {
    decide_for(
        Target::PROMETHEUS,
        role,
        allow_paths,
        deny_paths,
        method,
        path,
    )
}

/// Decides on a request to `target`. `path` must come from [`normalize`];
/// the per-peer prefixes are normalized here the same way.
pub fn decide_for(
    target: Target<'_>,
    role: Role,
    allow_paths: &[String],
    deny_paths: &[String],
    method: &Method,
    path: &str,
) -> Decision {
    let norm = |p: &str| normalize(p).unwrap_or_else(|_| p.to_ascii_lowercase());
    if let Some(p) = deny_paths
        .iter()
        .find(|p| entry_for(p, target, true).is_some_and(|prefix| under(path, &norm(prefix))))
    {
        return Decision::Deny(format!("the peer's deny_paths entry \"{p}\""));
    }
    let allowed = || {
        allow_paths.iter().any(|p| {
            entry_for(p, target, target.kind == UpstreamKind::Prometheus)
                .is_some_and(|prefix| under(path, &norm(prefix)))
        })
    };
    match target.kind {
        UpstreamKind::Prometheus => decide_prometheus(role, allowed, method, path),
        UpstreamKind::Alertmanager => decide_alertmanager(role, allowed, method, path),
        UpstreamKind::Http if allowed() => Decision::Allow,
        UpstreamKind::Http => Decision::Deny(format!(
            "upstream \"{}\" has no built-in rules; only the peer's allow_paths entries \"{}:/...\" open it",
            target.name, target.name
        )),
    }
}

/// Prometheus's rules; `allowed` tells whether the peer's own entries
/// allow the path. A responder is a viewer here.
fn decide_prometheus(
    role: Role,
    allowed: impl Fn() -> bool,
    method: &Method,
    path: &str,
) -> Decision {
    if let Some(p) = ADMIN_ONLY.iter().find(|p| under(path, p)) {
        return match role {
            Role::Admin => Decision::Allow,
            Role::Viewer | Role::Responder => Decision::Deny(format!("{p} is for the admin role")),
        };
    }
    if allowed() {
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

/// `/api/v2/silence/{id}`: one silence, by a single path segment.
fn is_one_silence(path: &str) -> bool {
    path.strip_prefix("/api/v2/silence/")
        .is_some_and(|id| !id.is_empty() && !id.contains('/'))
}

/// Alertmanager's rules (API v2, 0.25 and later). Viewers read; creating
/// and expiring silences needs a responder or an admin; sending alerts,
/// the v1 API, reloads, pprof and metrics need an admin. `allowed` is the
/// peer's own entries for this upstream, which never lift the admin rules.
fn decide_alertmanager(
    role: Role,
    allowed: impl Fn() -> bool,
    method: &Method,
    path: &str,
) -> Decision {
    let admin_only = |what: &str| match role {
        Role::Admin => Decision::Allow,
        Role::Viewer | Role::Responder => Decision::Deny(format!("{what} is for the admin role")),
    };
    if let Some(p) = ALERTMANAGER_ADMIN_ONLY.iter().find(|p| under(path, p)) {
        return admin_only(p);
    }
    // Alerts come from Prometheus. A person who posts one pages whoever is
    // on call for it, so it is for admins (testing routes with amtool).
    if path == "/api/v2/alerts" && !is_read(method) {
        return admin_only(&format!("{method} /api/v2/alerts (sending alerts)"));
    }
    // The operator's own entries for this upstream may open the rest,
    // silences included (a viewer given "alertmanager:/api/v2/silences").
    if allowed() {
        return Decision::Allow;
    }
    let silence_write = (path == "/api/v2/silences" && method == Method::POST)
        || (is_one_silence(path) && method == Method::DELETE);
    if silence_write {
        return match role {
            Role::Admin | Role::Responder => Decision::Allow,
            Role::Viewer => Decision::Deny(
                "creating or expiring a silence needs the responder or admin role".into(),
            ),
        };
    }
    let listed = ALERTMANAGER_UI_EXACT.contains(&path)
        || ALERTMANAGER_UI_UNDER.iter().any(|p| under(path, p))
        || ALERTMANAGER_READ_API.contains(&path)
        || is_one_silence(path);
    match (listed, is_read(method)) {
        (true, true) => Decision::Allow,
        (true, false) => Decision::Deny(format!("only GET and HEAD are allowed on {path}")),
        (false, _) => Decision::Deny(format!(
            "{path} is not on Alertmanager's list of UI routes and read API v2 endpoints"
        )),
    }
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

    const AM: Target<'static> = Target {
        name: "alertmanager",
        kind: UpstreamKind::Alertmanager,
    };
    const WIKI: Target<'static> = Target {
        name: "wiki",
        kind: UpstreamKind::Http,
    };

    fn on(target: Target<'_>, role: Role, method: &Method, raw: &str) -> Decision {
        on_with(target, role, &[], &[], method, raw)
    }

    fn on_with(
        target: Target<'_>,
        role: Role,
        allow: &[&str],
        deny: &[&str],
        method: &Method,
        raw: &str,
    ) -> Decision {
        let allow: Vec<String> = allow.iter().map(|s| s.to_string()).collect();
        let deny: Vec<String> = deny.iter().map(|s| s.to_string()).collect();
        let path = normalize(raw).unwrap();
        decide_for(target, role, &allow, &deny, method, &path)
    }

    /// Issue 28, part 2: Alertmanager's rules, default-deny.
    #[test]
    fn alertmanager_decision_table() {
        use Role::*;
        let get = Method::GET;
        let head = Method::HEAD;
        let post = Method::POST;
        let put = Method::PUT;
        let del = Method::DELETE;
        let id = "/api/v2/silence/8d7c0b0e-3b6f-4a9e-9c61-2f1c7e0d5a11";
        let cases: &[(Role, &Method, &str, bool)] = &[
            // The UI and its assets.
            (Viewer, &get, "/", true),
            (Viewer, &head, "/", true),
            (Viewer, &get, "/script.js", true),
            (Viewer, &get, "/favicon.ico", true),
            (
                Viewer,
                &get,
                "/lib/bootstrap-4.0.0-alpha.6-dist/css/bootstrap.min.css",
                true,
            ),
            (
                Viewer,
                &get,
                "/lib/font-awesome-4.7.0/fonts/fontawesome-webfont.woff2",
                true,
            ),
            (Viewer, &get, "/-/ready", true),
            (Viewer, &get, "/-/healthy", true),
            (Viewer, &post, "/", false),
            (Viewer, &post, "/lib/x.js", false),
            // The read API v2.
            (Viewer, &get, "/api/v2/alerts", true),
            (Viewer, &get, "/api/v2/alerts/groups", true),
            (Viewer, &get, "/api/v2/silences", true),
            (Viewer, &get, id, true),
            (Viewer, &get, "/api/v2/status", true),
            (Viewer, &get, "/api/v2/receivers", true),
            (Viewer, &put, "/api/v2/status", false),
            (Viewer, &get, "/api/v2/silence", false),
            (Viewer, &get, "/api/v2/silence/a/b", false),
            (Viewer, &get, "/api/v2/alerts/groups/x", false),
            (Viewer, &get, "/api/v2/something-new", false),
            // Silences: responders and admins.
            (Viewer, &post, "/api/v2/silences", false),
            (Viewer, &del, id, false),
            (Responder, &post, "/api/v2/silences", true),
            (Responder, &del, id, true),
            (Admin, &post, "/api/v2/silences", true),
            (Admin, &del, id, true),
            (Responder, &del, "/api/v2/silences", false),
            (Responder, &post, id, false),
            (Responder, &put, "/api/v2/silences", false),
            (Responder, &del, "/api/v2/silence/a/b", false),
            (Responder, &get, "/api/v2/silences", true),
            // Sending alerts, the v1 API, reload, pprof, metrics: admins.
            (Viewer, &post, "/api/v2/alerts", false),
            (Responder, &post, "/api/v2/alerts", false),
            (Admin, &post, "/api/v2/alerts", true),
            (Viewer, &get, "/api/v1/alerts", false),
            (Responder, &post, "/api/v1/silences", false),
            (Responder, &del, "/api/v1/silence/x", false),
            (Viewer, &get, "/api/v1/status", false),
            (Admin, &get, "/api/v1/alerts", true),
            (Viewer, &post, "/-/reload", false),
            (Responder, &post, "/-/reload", false),
            (Admin, &post, "/-/reload", true),
            (Viewer, &get, "/debug/pprof/heap", false),
            (Responder, &get, "/debug/pprof/goroutine", false),
            (Admin, &get, "/debug/pprof/heap", true),
            (Viewer, &get, "/metrics", false),
            (Admin, &get, "/metrics", true),
            // Prometheus's routes are not Alertmanager's.
            (Viewer, &get, "/graph", false),
            (Viewer, &get, "/api/v1/query", false),
            (Admin, &post, "/api/v2/admin/tsdb/snapshot", false),
            (Admin, &get, "/-/quit", false),
            (Admin, &get, "/anything", false),
        ];
        for (role, method, raw, allowed) in cases {
            let d = on(AM, *role, method, raw);
            assert_eq!(
                d == Decision::Allow,
                *allowed,
                "{role:?} {method} {raw}: {d:?}"
            );
        }
    }

    /// Encoded, dotted, doubled and upper-case spellings meet the same
    /// rules: none lets a viewer silence, or a responder reach the admin
    /// endpoints.
    #[test]
    fn path_tricks_cannot_silence_or_reach_alertmanager_admin() {
        let viewer_writes = [
            (Method::POST, "//api/v2/silences"),
            (Method::POST, "/api/v2/silences/"),
            (Method::POST, "/API/V2/SILENCES"),
            (Method::POST, "/api/v2/alerts/../silences"),
            (Method::POST, "/api/v2/alerts/%2e%2e/silences"),
            (Method::POST, "/api/v2/%73ilences"),
            (Method::POST, "/api/v2/./silences"),
            (Method::DELETE, "/api/v2/silence/x/"),
            (Method::DELETE, "/API/v2/Silence/x"),
            (Method::DELETE, "/api/v2/silences/../silence/x"),
            (Method::POST, "/api/v2/alerts/"),
            (Method::POST, "/API/V2/ALERTS"),
        ];
        for (method, raw) in &viewer_writes {
            assert_ne!(
                on(AM, Role::Viewer, method, raw),
                Decision::Allow,
                "{method} {raw}"
            );
        }
        for raw in [
            "/-/RELOAD",
            "//-/reload/",
            "/api/v2/../../-/reload",
            "/lib/../-/reload",
            "/%2d/reload",
            "/API/V1/SILENCES",
            "/api/v2/../v1/silences",
            "/lib/%2e%2e/debug/pprof/heap",
            "/lib/../metrics",
        ] {
            let Ok(path) = normalize(raw) else { continue };
            for role in [Role::Viewer, Role::Responder] {
                for method in [Method::GET, Method::POST, Method::DELETE] {
                    let allow = vec!["alertmanager:/".to_string()];
                    assert_ne!(
                        decide_for(AM, role, &allow, &[], &method, &path),
                        Decision::Allow,
                        "{role:?} {method} {raw}"
                    );
                }
            }
        }
    }

    /// A plain `http` upstream opens only where an entry names it; bare
    /// allow entries stay Prometheus's, bare deny entries apply everywhere.
    #[test]
    fn plain_http_upstreams_open_only_by_named_allow_entries() {
        let get = Method::GET;
        for role in [Role::Viewer, Role::Responder, Role::Admin] {
            assert_ne!(on(WIKI, role, &get, "/"), Decision::Allow, "{role:?}");
            assert_ne!(
                on_with(WIKI, role, &["/"], &[], &get, "/page"),
                Decision::Allow,
                "{role:?}: a bare entry is Prometheus's"
            );
            assert_ne!(
                on_with(WIKI, role, &["alertmanager:/"], &[], &get, "/page"),
                Decision::Allow,
                "{role:?}: another upstream's entry"
            );
        }
        assert_eq!(
            on_with(WIKI, Role::Viewer, &["wiki:/"], &[], &Method::POST, "/edit"),
            Decision::Allow
        );
        assert_eq!(
            on_with(WIKI, Role::Viewer, &["wiki:/docs"], &[], &get, "/docs/a"),
            Decision::Allow
        );
        assert_ne!(
            on_with(
                WIKI,
                Role::Viewer,
                &["wiki:/docs"],
                &[],
                &get,
                "/docs-private"
            ),
            Decision::Allow
        );
        assert_ne!(
            on_with(
                WIKI,
                Role::Viewer,
                &["wiki:/docs"],
                &[],
                &get,
                "/docs/../admin"
            ),
            Decision::Allow
        );
        // Deny entries: a bare one everywhere, a named one only there.
        assert_ne!(
            on_with(
                WIKI,
                Role::Viewer,
                &["wiki:/"],
                &["/admin"],
                &get,
                "/admin/x"
            ),
            Decision::Allow
        );
        assert_ne!(
            on_with(
                WIKI,
                Role::Viewer,
                &["wiki:/"],
                &["wiki:/admin"],
                &get,
                "/admin"
            ),
            Decision::Allow
        );
        assert_eq!(
            on_with(
                WIKI,
                Role::Viewer,
                &["wiki:/"],
                &["alertmanager:/admin"],
                &get,
                "/admin"
            ),
            Decision::Allow
        );
        let d = on(WIKI, Role::Admin, &get, "/");
        assert!(
            matches!(&d, Decision::Deny(why) if why.contains("\"wiki:/...\"")),
            "{d:?}"
        );
    }

    /// Entries naming an upstream apply to it alone; a bare allow entry
    /// does not reach Alertmanager, a bare deny entry does.
    #[test]
    fn named_entries_apply_to_their_upstream_only() {
        let get = Method::GET;
        let post = Method::POST;
        // Prometheus: a bare entry and one naming it both allow.
        let prom = Target::PROMETHEUS;
        assert_eq!(
            on_with(
                prom,
                Role::Viewer,
                &["/api/v1/write"],
                &[],
                &post,
                "/api/v1/write"
            ),
            Decision::Allow
        );
        assert_eq!(
            on_with(
                prom,
                Role::Viewer,
                &["prometheus:/api/v1/write"],
                &[],
                &post,
                "/api/v1/write"
            ),
            Decision::Allow
        );
        assert_ne!(
            on_with(
                prom,
                Role::Viewer,
                &["alertmanager:/api/v1/write"],
                &[],
                &post,
                "/api/v1/write"
            ),
            Decision::Allow
        );
        // Alertmanager: a bare allow entry does not open it.
        assert_ne!(
            on_with(
                AM,
                Role::Viewer,
                &["/api/v2/silences"],
                &[],
                &post,
                "/api/v2/silences"
            ),
            Decision::Allow
        );
        assert_eq!(
            on_with(
                AM,
                Role::Viewer,
                &["alertmanager:/api/v2/silences"],
                &[],
                &post,
                "/api/v2/silences"
            ),
            Decision::Allow
        );
        // A bare deny entry closes it, as a named one does.
        assert_ne!(
            on_with(
                AM,
                Role::Admin,
                &[],
                &["/api/v2/alerts"],
                &get,
                "/api/v2/alerts"
            ),
            Decision::Allow
        );
        assert_ne!(
            on_with(
                AM,
                Role::Responder,
                &[],
                &["alertmanager:/api/v2/silences"],
                &post,
                "/api/v2/silences"
            ),
            Decision::Allow
        );
        assert_eq!(
            on_with(
                AM,
                Role::Responder,
                &[],
                &["prometheus:/api/v2/silences"],
                &post,
                "/api/v2/silences"
            ),
            Decision::Allow
        );
    }

    /// A responder is a viewer on Prometheus.
    #[test]
    fn a_responder_is_a_viewer_on_prometheus() {
        for (method, raw) in [
            (Method::GET, "/api/v1/query"),
            (Method::GET, "/graph"),
            (Method::POST, "/api/v1/admin/tsdb/delete_series"),
            (Method::POST, "/-/reload"),
            (Method::GET, "/debug/pprof/heap"),
            (Method::POST, "/api/v1/write"),
        ] {
            let path = normalize(raw).unwrap();
            assert_eq!(
                decide(Role::Responder, &[], &[], &method, &path),
                decide(Role::Viewer, &[], &[], &method, &path),
                "{method} {raw}"
            );
        }
    }

    #[test]
    fn entries_split_into_upstream_and_path() {
        assert_eq!(split_entry("/api/v1/write"), (None, "/api/v1/write"));
        assert_eq!(split_entry("wiki:/"), (Some("wiki"), "/"));
        assert_eq!(split_entry("am:/a:b"), (Some("am"), "/a:b"));
        assert_eq!(split_entry("/a:b"), (None, "/a:b"));
        assert_eq!(split_entry("api"), (None, "api"));
    }
}
