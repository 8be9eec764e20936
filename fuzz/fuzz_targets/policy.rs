//! Arbitrary methods and request targets into path normalization and the
//! role decision, the way the proxy uses them, for each kind of upstream
//! (Prometheus, Alertmanager, plain HTTP; chosen by an input byte).
//!
//! Invariants: no panic; for every request the proxy would forward, the
//! upstream URL carries the request's path byte for byte (after the
//! upstream's base path), and the path the upstream will route on (percent
//! decoded, trailing slash and case aside) is the path the decision was made
//! on; no admin-only path is ever allowed to a viewer or a responder,
//! whatever its allow_paths and deny_paths say; on Alertmanager, neither
//! may send alerts, and a viewer creates or expires a silence only through
//! an allow_paths entry naming that Alertmanager; a plain HTTP upstream
//! allows nothing without an allow_paths entry naming it; and a matching
//! deny_paths entry always wins.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use promgate::config::{Role, UpstreamKind};
use promgate::web::policy::{self, Decision, Target};
use promgate_fuzz::{ADMIN_ONLY, ALERTMANAGER_ADMIN_ONLY};

#[derive(Debug, Arbitrary)]
struct Input {
    method: String,
    target: String,
    /// 0 viewer, 1 responder, else admin.
    role: u8,
    /// 0 Prometheus, 1 Alertmanager, else plain HTTP.
    kind: u8,
    allow_paths: Vec<String>,
    deny_paths: Vec<String>,
    base: bool,
}

/// The upstreams of the target's config; entries name them ("am:/x").
const PROMETHEUS: Target<'static> = Target {
    name: "prometheus",
    kind: UpstreamKind::Prometheus,
};
const ALERTMANAGER: Target<'static> = Target {
    name: "am",
    kind: UpstreamKind::Alertmanager,
};
const WIKI: Target<'static> = Target {
    name: "wiki",
    kind: UpstreamKind::Http,
};

fn percent_decode(raw: &str) -> Option<String> {
    let b = raw.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let h = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(h, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn under(path: &str, prefix: &str) -> bool {
    path == prefix
        || path
            .strip_prefix(prefix)
            .is_some_and(|r| r.starts_with('/'))
}

fuzz_target!(|input: Input| {
    // What hyper would parse from the request line.
    let Ok(method) = http::Method::from_bytes(input.method.as_bytes()) else {
        return;
    };
    let Ok(uri) = input.target.parse::<http::Uri>() else {
        return;
    };
    let raw_path = uri.path();
    let Some(decided) = policy::decision_path(raw_path) else {
        return; // refused with 400
    };

    // The upstream sees the same bytes.
    let upstream: http::Uri = if input.base {
        "http://prometheus:9090/prom/".parse().expect("literal")
    } else {
        "http://prometheus:9090".parse().expect("literal")
    };
    let forwarded = promgate::web::proxy::upstream_uri(&upstream, &uri)
        .unwrap_or_else(|e| panic!("a decided request could not be forwarded: {e}"));
    let base = if input.base { "/prom" } else { "" };
    assert_eq!(
        forwarded.path(),
        format!("{base}{raw_path}"),
        "the forwarded path differs from the decided one"
    );
    assert_eq!(
        forwarded.query(),
        uri.query(),
        "the query changed on the way"
    );

    // And reads it as the same path.
    let seen = percent_decode(raw_path).expect("a decided path decodes");
    let seen = seen
        .strip_suffix('/')
        .filter(|s| !s.is_empty())
        .unwrap_or(&seen);
    assert_eq!(
        seen.to_ascii_lowercase(),
        decided,
        "the upstream would route {raw_path:?} differently from the decision"
    );

    let role = match input.role {
        0 => Role::Viewer,
        1 => Role::Responder,
        _ => Role::Admin,
    };
    let target = match input.kind {
        0 => PROMETHEUS,
        1 => ALERTMANAGER,
        _ => WIKI,
    };
    let allow: Vec<String> = input.allow_paths.into_iter().take(8).collect();
    let deny: Vec<String> = input.deny_paths.into_iter().take(8).collect();
    let decision = policy::decide_for(target, role, &allow, &deny, &method, &decided);
    if target == PROMETHEUS {
        // The older entry point decides the same for the one Prometheus.
        assert_eq!(
            decision,
            policy::decide(role, &allow, &deny, &method, &decided),
            "decide and decide_for differ on Prometheus"
        );
    }
    let lower = seen.to_ascii_lowercase();
    let allowed = decision == Decision::Allow;
    let names = |name: &str| {
        allow
            .iter()
            .any(|a| a.strip_prefix(name).is_some_and(|r| r.starts_with(':')))
    };
    if allowed && role != Role::Admin {
        let admin_only = match target.kind {
            UpstreamKind::Prometheus => ADMIN_ONLY,
            UpstreamKind::Alertmanager => ALERTMANAGER_ADMIN_ONLY,
            UpstreamKind::Http => &[],
        };
        for p in admin_only {
            assert!(
                !under(&lower, p),
                "{role:?} was allowed {method} {raw_path:?} on {} (under {p})",
                target.name
            );
        }
        if target.kind == UpstreamKind::Alertmanager {
            let reads = method == http::Method::GET || method == http::Method::HEAD;
            assert!(
                !(lower == "/api/v2/alerts" && !reads),
                "{role:?} was allowed to send alerts: {method} {raw_path:?}"
            );
        }
    }
    if allowed && role == Role::Viewer && target.kind == UpstreamKind::Alertmanager {
        let writes_silence = (lower == "/api/v2/silences" && method == http::Method::POST)
            || (lower.starts_with("/api/v2/silence/") && method == http::Method::DELETE);
        assert!(
            !writes_silence || names("am"),
            "a viewer was allowed {method} {raw_path:?} without an entry naming the Alertmanager"
        );
    }
    if allowed && target.kind == UpstreamKind::Http {
        assert!(
            names("wiki"),
            "{role:?} was allowed {method} {raw_path:?} on a plain HTTP upstream without an entry naming it"
        );
    }
    // A deny entry always wins for the path itself: a bare one on every
    // upstream, one naming an upstream on that one.
    if deny.iter().any(|d| {
        let (name, path) = policy::split_entry(d);
        name.is_none_or(|n| n == target.name)
            && policy::normalize(path).ok().as_deref() == Some(decided.as_str())
    }) {
        assert_ne!(decision, Decision::Allow, "a deny_paths entry was ignored");
    }
});
