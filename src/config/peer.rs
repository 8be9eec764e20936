//! Validation of one `[[peer]]` table: name, keys, addresses, role, paths
//! and label scope.
//!
//! A peer is checked on its own here; what needs the whole peer set
//! (duplicates, overlaps) is in `cross_check`. Field names in messages
//! carry the peer's name once it is known (`peer "alice".role`), so a
//! problem in a long file is easy to find.

use super::problems::{Problems, key_message};
use super::raw::{OneOrMany, RawPeer};
use super::{Origin, PeerConfig};
use ipnet::IpNet;
use promgate_core::keys::decode_key;
use promgate_core::role::Role;
use std::net::IpAddr;
use std::ops::Range;
use toml::Spanned;

/// Validates each peer; the bad ones are left out and reported in `problems`.
pub(super) fn validate_peers(
    problems: &mut Problems<'_>,
    raw: Vec<Spanned<RawPeer>>,
) -> Vec<PeerConfig> {
    raw.into_iter()
        .filter_map(|p| validate_peer(problems, p))
        .collect()
}

/// A peer name: 1 to 64 of `a-z A-Z 0-9 . _ -`. Names become file names
/// in `peers_dir` and metric label values, and go between quotes in TOML
/// without escaping, so nothing else is allowed.
pub(crate) fn valid_peer_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

fn validate_peer(problems: &mut Problems<'_>, raw: Spanned<RawPeer>) -> Option<PeerConfig> {
    let span = raw.span();
    let line = problems.line_of(span.start);
    let raw = raw.into_inner();
    let before = problems.count();

    let name = validate_name(problems, span.clone(), raw.name);
    let field = |f: &str| {
        if name.is_empty() {
            format!("peer.{f}")
        } else {
            format!("peer \"{name}\".{f}")
        }
    };
    let public_key = match raw.public_key {
        Some(k) => decode_key_field(problems, &field("public_key"), k),
        None => {
            problems.push(span.clone(), &field("public_key"), "missing");
            None
        }
    };
    let allowed_ips = validate_allowed_ips(
        problems,
        span.clone(),
        &field("allowed_ips"),
        raw.allowed_ips,
        before,
    );
    let preshared_key = raw
        .preshared_key
        .and_then(|k| decode_key_field(problems, &field("preshared_key"), k));
    let role = validate_role(problems, &field("role"), raw.role);
    check_paths(
        problems,
        span.clone(),
        &field("allow_paths"),
        &raw.allow_paths,
    );
    check_paths(problems, span, &field("deny_paths"), &raw.deny_paths);
    let scope = raw.scope.and_then(|s| {
        let s_span = s.span();
        crate::web::scope::validate_peer_scope(s.into_inner(), role)
            .map_err(|messages| {
                for m in messages {
                    problems.push(s_span.clone(), &field("scope"), m);
                }
            })
            .ok()
    });
    if problems.count() > before {
        return None;
    }
    Some(PeerConfig {
        name,
        public_key: public_key?,
        allowed_ips,
        preshared_key,
        persistent_keepalive: raw
            .persistent_keepalive
            .map(|k| *k.get_ref())
            .filter(|k| *k > 0),
        role,
        allow_paths: raw.allow_paths,
        deny_paths: raw.deny_paths,
        scope,
        origin: Origin {
            file: problems.file.to_path_buf(),
            line,
        },
    })
}

/// The name, or "" when it is missing or bad (and reported).
fn validate_name(
    problems: &mut Problems<'_>,
    table: Range<usize>,
    raw: Option<Spanned<String>>,
) -> String {
    match raw {
        Some(n) if valid_peer_name(n.get_ref()) => n.into_inner(),
        Some(n) => {
            problems.push(
                n.span(),
                "peer.name",
                format!(
                    "`{}` must be 1-64 characters of a-z, A-Z, 0-9, '.', '_' or '-'",
                    n.get_ref()
                ),
            );
            String::new()
        }
        None => {
            problems.push(table, "peer.name", "missing");
            String::new()
        }
    }
}

fn decode_key_field(
    problems: &mut Problems<'_>,
    field: &str,
    k: Spanned<String>,
) -> Option<[u8; 32]> {
    match decode_key(k.get_ref()) {
        Ok(k) => Some(k),
        Err(e) => {
            problems.push(k.span(), field, key_message(e));
            None
        }
    }
}

/// Addresses and networks, host bits cleared. An empty list is reported
/// only when the peer has no other problem so far (`before` is the problems's
/// count at the peer's start), so one mistake does not read as two.
fn validate_allowed_ips(
    problems: &mut Problems<'_>,
    table: Range<usize>,
    field: &str,
    raw: Option<Spanned<OneOrMany>>,
    before: usize,
) -> Vec<IpNet> {
    let mut allowed_ips = Vec::new();
    let Some(a) = raw else {
        problems.push(table, field, "missing");
        return allowed_ips;
    };
    let span = a.span();
    for s in a.into_inner().into_vec() {
        match s
            .parse::<IpNet>()
            .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
        {
            Ok(n) => allowed_ips.push(n.trunc()),
            Err(_) => problems.push(
                span.clone(),
                field,
                format!("`{s}` is not an address or network"),
            ),
        }
    }
    if allowed_ips.is_empty() && problems.count() == before {
        problems.push(span, field, "is empty: the peer could send nothing");
    }
    allowed_ips
}

fn validate_role(problems: &mut Problems<'_>, field: &str, raw: Option<Spanned<String>>) -> Role {
    let Some(r) = raw else { return Role::Viewer };
    match r.get_ref().as_str() {
        "viewer" => Role::Viewer,
        "responder" => Role::Responder,
        "admin" => Role::Admin,
        other => {
            problems.push(
                r.span(),
                field,
                format!("`{other}` is not a role; use \"viewer\", \"responder\" or \"admin\""),
            );
            Role::Viewer
        }
    }
}

/// Path prefixes (`allow_paths`, `deny_paths`) must be absolute, after
/// an upstream's name if they have one (`"wiki:/"`). Whether that upstream
/// exists is checked with the whole config (`cross_check`).
fn check_paths(problems: &mut Problems<'_>, table: Range<usize>, field: &str, paths: &[String]) {
    for p in paths {
        let (upstream, path) = crate::web::policy::split_entry(p);
        if upstream.is_some_and(|name| !super::upstream::valid_upstream_name(name)) {
            problems.push(
                table.clone(),
                field,
                format!("`{p}`: before the ':' must be an upstream's name (a-z, 0-9, '_', '-'), as in \"wiki:/\""),
            );
        } else if !path.starts_with('/') {
            problems.push(
                table.clone(),
                field,
                format!(
                    "`{p}` must start with '/', or with an upstream's name and ':/' (\"wiki:/\")"
                ),
            );
        }
    }
}
