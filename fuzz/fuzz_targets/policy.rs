//! Arbitrary methods and request targets into path normalization and the
//! role decision, the way the proxy uses them.
//!
//! Invariants: no panic; for every request the proxy would forward, the
//! upstream URL carries the request's path byte for byte (after the
//! upstream's base path), and the path the upstream will route on (percent
//! decoded, trailing slash and case aside) is the path the decision was made
//! on; and no admin-only path is ever allowed to a viewer, whatever its
//! allow_paths and deny_paths say.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use promgate::config::Role;
use promgate::web::policy::{self, Decision};
use promgate_fuzz::ADMIN_ONLY;

#[derive(Debug, Arbitrary)]
struct Input {
    method: String,
    target: String,
    admin: bool,
    allow_paths: Vec<String>,
    deny_paths: Vec<String>,
    base: bool,
}

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

    let role = if input.admin {
        Role::Admin
    } else {
        Role::Viewer
    };
    let allow: Vec<String> = input.allow_paths.into_iter().take(8).collect();
    let deny: Vec<String> = input.deny_paths.into_iter().take(8).collect();
    let decision = policy::decide(role, &allow, &deny, &method, &decided);
    if role == Role::Viewer && decision == Decision::Allow {
        let lower = seen.to_ascii_lowercase();
        for p in ADMIN_ONLY {
            assert!(
                !under(&lower, p),
                "a viewer was allowed {method} {raw_path:?} (under {p})"
            );
        }
    }
    // A deny entry always wins for the path itself.
    if deny
        .iter()
        .any(|d| policy::normalize(d).ok().as_deref() == Some(decided.as_str()))
    {
        assert_ne!(decision, Decision::Allow, "a deny_paths entry was ignored");
    }
});
