//! Checks that need the whole peer set: duplicate names and keys, the
//! gateway's own key or address in a peer, and overlapping AllowedIPs.
//!
//! They run after every peer has been validated on its own, over the inline
//! peers and those of `peers_dir` together, at start and on every reload,
//! so a reload refuses exactly what a start would. Overlaps must be refused:
//! an inner source address must belong to exactly one peer.

use super::{ConfigError, GatewayConfig, PeerConfig};
use ipnet::IpNet;
use std::collections::HashMap;

/// Checks that need the whole peer set: duplicates, overlaps, our own key.
pub(crate) fn cross_check_peers(peers: &[PeerConfig], gateway: &GatewayConfig) -> Vec<ConfigError> {
    let mut errors = check_each_against_the_rest(peers, gateway);
    errors.extend(check_overlaps(peers));
    errors.extend(check_upstream_names(peers, gateway));
    errors
}

/// `allow_paths` and `deny_paths` entries that name an upstream
/// (`"wiki:/"`) must name one the gateway serves: an entry for a
/// misspelt name would silently open or close nothing.
fn check_upstream_names(peers: &[PeerConfig], gateway: &GatewayConfig) -> Vec<ConfigError> {
    let known = || {
        gateway
            .upstreams
            .iter()
            .map(|u| format!("\"{}\"", u.name))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut errors = Vec::new();
    for p in peers {
        for (field, entries) in [
            ("allow_paths", &p.allow_paths),
            ("deny_paths", &p.deny_paths),
        ] {
            for entry in entries {
                if let (Some(name), _) = crate::web::policy::split_entry(entry)
                    && gateway.upstream_named(name).is_none()
                {
                    errors.push(peer_error(
                        p,
                        field,
                        format!(
                            "`{entry}` names upstream \"{name}\", which is not configured (the upstreams are {})",
                            known()
                        ),
                    ));
                }
            }
        }
    }
    errors
}

/// A problem with one field of one peer, where the peer was defined.
fn peer_error(p: &PeerConfig, field: &str, message: String) -> ConfigError {
    ConfigError {
        file: p.origin.file.clone(),
        line: p.origin.line,
        field: format!("peer \"{}\".{field}", p.name),
        message,
    }
}

/// Duplicate names and keys (reported at the later peer), and peers that
/// hold the gateway's own key or address.
fn check_each_against_the_rest(peers: &[PeerConfig], gateway: &GatewayConfig) -> Vec<ConfigError> {
    let mut errors = Vec::new();
    let own = gateway.private_key.public_key();
    let mut names: HashMap<&str, &PeerConfig> = HashMap::new();
    let mut keys: HashMap<[u8; 32], &PeerConfig> = HashMap::new();
    for p in peers {
        if let Some(first) = names.insert(&p.name, p) {
            errors.push(peer_error(
                p,
                "name",
                format!(
                    "duplicate name, also at {}:{}",
                    first.origin.file.display(),
                    first.origin.line
                ),
            ));
        }
        if let Some(first) = keys.insert(p.public_key, p) {
            errors.push(peer_error(
                p,
                "public_key",
                format!(
                    "same key as peer \"{}\" at {}:{}",
                    first.name,
                    first.origin.file.display(),
                    first.origin.line
                ),
            ));
        }
        if &p.public_key == own.as_bytes() {
            errors.push(peer_error(
                p,
                "public_key",
                "is the gateway's own public key".into(),
            ));
        }
        for net in &p.allowed_ips {
            if gateway.addresses.iter().any(|g| net.contains(&g.addr())) {
                errors.push(peer_error(
                    p,
                    "allowed_ips",
                    format!("{net} contains the gateway's own address"),
                ));
            }
        }
    }
    errors
}

/// Networks that overlap, between peers or twice in one peer. Sorts all
/// networks by start address and compares each with the widest one before
/// it in its family: O(n log n), fine for 10,000 peers.
fn check_overlaps(peers: &[PeerConfig]) -> Vec<ConfigError> {
    let mut errors = Vec::new();
    let mut nets: Vec<(&IpNet, &PeerConfig)> = peers
        .iter()
        .flat_map(|p| p.allowed_ips.iter().map(move |n| (n, p)))
        .collect();
    nets.sort_by_key(|(n, _)| (n.network(), n.prefix_len()));
    let mut widest: Option<(&IpNet, &PeerConfig)> = None;
    for (net, p) in nets {
        if let Some((w, wp)) = widest
            && w.addr().is_ipv4() == net.addr().is_ipv4()
            && w.contains(&net.network())
        {
            if !std::ptr::eq(wp, p) || w == net {
                errors.push(peer_error(
                    p,
                    "allowed_ips",
                    format!(
                        "{net} overlaps {w} of peer \"{}\" ({}:{})",
                        wp.name,
                        wp.origin.file.display(),
                        wp.origin.line
                    ),
                ));
            }
            if w.broadcast() >= net.broadcast() {
                continue;
            }
        }
        widest = Some((net, p));
    }
    errors
}
