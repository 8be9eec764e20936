//! Validation of the `[gateway]` table: keys, addresses, limits, and (with
//! the `[[upstream]]` list, see `upstream`) the upstreams.
//!
//! Each field is checked on its own and falls back to its default when it
//! is bad, so one pass reports every problem; the gateway is only built
//! when the pass found none.

use super::GatewayConfig;
use super::defaults::{
    DEFAULT_HANDSHAKE_RATE_LIMIT, DEFAULT_IDENTITY_HEADER, DEFAULT_LISTEN_PORT,
    DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_CONNECTIONS_PER_PEER, DEFAULT_MAX_UPSTREAM_REQUESTS,
    DEFAULT_MAX_UPSTREAM_REQUESTS_PER_PEER, DEFAULT_MTU, DEFAULT_TCP_IDLE_TIMEOUT,
    DEFAULT_TCP_MEMORY_BUDGET, DEFAULT_TCP_SEND_BUFFER, DEFAULT_TCP_SENDER,
    DEFAULT_UPSTREAM_TIMEOUT, MTU_RANGE, TCP_MEMORY_BUDGET_RANGE, TCP_SEND_BUFFER_RANGE,
};
use super::endpoint::check_endpoint;
use super::private_key::resolve_private_key;
use super::problems::{Problems, parse_duration};
use super::raw::{OneOrMany, RawGateway, RawUpstream};
use super::upstream::{GatewayUpstreamKeys, validate_upstreams};
use ipnet::IpNet;
use promgate_core::gateway::TcpSender;
use promgate_core::netstack::CONNECTION_BUFFERS;
use std::ops::{Range, RangeInclusive};
use std::path::Path;
use toml::Spanned;

/// Validates `[gateway]` and the `[[upstream]]` list; `span` is the
/// table's, for fields that are missing. Relative paths (key file,
/// `peers_dir`) are relative to the config file.
pub(super) fn validate_gateway(
    problems: &mut Problems<'_>,
    path: &Path,
    span: Range<usize>,
    raw: RawGateway,
    upstream_list: Vec<Spanned<RawUpstream>>,
) -> Option<GatewayConfig> {
    let before = problems.count();
    let base_dir = path.parent().unwrap_or(Path::new("."));

    let private_key = resolve_private_key(problems, base_dir, span.clone(), &raw);
    let listen_port = raw
        .listen_port
        .map(|p| *p.get_ref())
        .unwrap_or(DEFAULT_LISTEN_PORT);
    let addresses = validate_addresses(problems, span.clone(), raw.address);
    let mtu = within(problems, "gateway.mtu", raw.mtu, MTU_RANGE, "", DEFAULT_MTU);
    let upstreams = validate_upstreams(
        problems,
        GatewayUpstreamKeys {
            upstream: raw.upstream,
            http_ports: raw.http_ports,
            table: span.clone(),
        },
        upstream_list,
    );
    let identity_header = validate_identity_header(problems, raw.identity_header);
    let endpoint = raw.endpoint.map(|e| {
        let text = e.get_ref().clone();
        if let Err(why) = check_endpoint(&text) {
            problems.push(e.span(), "gateway.endpoint", why.to_string());
        }
        text
    });
    let upstream_timeout = parse_duration(
        problems,
        "gateway.upstream_timeout",
        raw.upstream_timeout,
        DEFAULT_UPSTREAM_TIMEOUT,
    );
    let tcp_idle_timeout = parse_duration(
        problems,
        "gateway.tcp_idle_timeout",
        raw.tcp_idle_timeout,
        DEFAULT_TCP_IDLE_TIMEOUT,
    );
    let per_peer_span = raw.max_connections_per_peer.as_ref().map(|n| n.span());
    let total_span = raw.max_connections.as_ref().map(|n| n.span());
    let max_connections_per_peer = at_least_one(
        problems,
        "gateway.max_connections_per_peer",
        raw.max_connections_per_peer,
        DEFAULT_MAX_CONNECTIONS_PER_PEER,
    );
    let max_connections = at_least_one(
        problems,
        "gateway.max_connections",
        raw.max_connections,
        DEFAULT_MAX_CONNECTIONS,
    );
    if max_connections_per_peer > max_connections {
        // One peer could then fill the whole gateway, so it is a mistake
        // rather than a choice.
        problems.push(
            per_peer_span.unwrap_or_else(|| span.clone()),
            "gateway.max_connections_per_peer",
            format!(
                "{max_connections_per_peer} is more than gateway.max_connections ({max_connections})"
            ),
        );
    }
    let tcp_send_buffer = within(
        problems,
        "gateway.tcp_send_buffer",
        raw.tcp_send_buffer,
        TCP_SEND_BUFFER_RANGE,
        " bytes",
        DEFAULT_TCP_SEND_BUFFER,
    );
    let tcp_memory_budget = within(
        problems,
        "gateway.tcp_memory_budget",
        raw.tcp_memory_budget,
        TCP_MEMORY_BUDGET_RANGE,
        " bytes",
        DEFAULT_TCP_MEMORY_BUDGET,
    );
    // Half the budget must hold every connection's minimum buffers; the
    // other half is for send buffers that grow.
    let minimums = max_connections.saturating_mul(CONNECTION_BUFFERS);
    if minimums > tcp_memory_budget / 2 {
        problems.push(
            total_span.unwrap_or_else(|| span.clone()),
            "gateway.max_connections",
            format!(
                "{max_connections} connections hold {} MiB of minimum buffers ({} KiB each), more than half of gateway.tcp_memory_budget ({} MiB); lower the cap or raise the budget",
                minimums >> 20,
                CONNECTION_BUFFERS >> 10,
                tcp_memory_budget >> 20
            ),
        );
    }
    let tcp_sender = match raw.tcp_sender {
        None => DEFAULT_TCP_SENDER,
        Some(s) => match s.get_ref().as_str() {
            "classic" => TcpSender::Classic,
            "wan" => TcpSender::Wan,
            "wan-cubic" => TcpSender::WanCubic,
            other => {
                problems.push(
                    s.span(),
                    "gateway.tcp_sender",
                    format!(
                        "`{other}` is not a TCP sender: use \"wan\", \"wan-cubic\" or \"classic\""
                    ),
                );
                DEFAULT_TCP_SENDER
            }
        },
    };
    let upstream_per_peer_span = raw
        .max_upstream_requests_per_peer
        .as_ref()
        .map(|n| n.span());
    let max_upstream_requests_per_peer = at_least_one(
        problems,
        "gateway.max_upstream_requests_per_peer",
        raw.max_upstream_requests_per_peer,
        DEFAULT_MAX_UPSTREAM_REQUESTS_PER_PEER,
    );
    let max_upstream_requests = at_least_one(
        problems,
        "gateway.max_upstream_requests",
        raw.max_upstream_requests,
        DEFAULT_MAX_UPSTREAM_REQUESTS,
    );
    if max_upstream_requests_per_peer > max_upstream_requests {
        problems.push(
            upstream_per_peer_span.unwrap_or_else(|| span.clone()),
            "gateway.max_upstream_requests_per_peer",
            format!(
                "{max_upstream_requests_per_peer} is more than gateway.max_upstream_requests ({max_upstream_requests})"
            ),
        );
    }
    let handshake_rate_limit = at_least_one(
        problems,
        "gateway.handshake_rate_limit",
        raw.handshake_rate_limit,
        DEFAULT_HANDSHAKE_RATE_LIMIT,
    );
    let peers_dir = raw.peers_dir.map(|d| base_dir.join(d.get_ref()));
    let allowed_hosts = validate_allowed_hosts(problems, raw.allowed_hosts);

    if problems.count() > before {
        return None;
    }
    Some(GatewayConfig {
        private_key: private_key?,
        listen_port,
        addresses,
        mtu,
        upstreams,
        endpoint,
        peers_dir,
        identity_header,
        upstream_timeout,
        max_connections_per_peer,
        max_connections,
        max_upstream_requests_per_peer,
        max_upstream_requests,
        tcp_idle_timeout,
        tcp_send_buffer,
        tcp_sender,
        tcp_memory_budget,
        handshake_rate_limit,
        allowed_hosts,
    })
}

/// The gateway's tunnel addresses: required, at most one per IP family.
fn validate_addresses(
    problems: &mut Problems<'_>,
    table: Range<usize>,
    raw: Option<Spanned<OneOrMany>>,
) -> Vec<IpNet> {
    let mut addresses: Vec<IpNet> = Vec::new();
    let Some(a) = raw else {
        problems.push(
            table,
            "gateway.address",
            "missing: the gateway's tunnel address, e.g. \"10.13.13.1/24\"",
        );
        return addresses;
    };
    let span = a.span();
    for s in a.into_inner().into_vec() {
        match s.parse::<IpNet>() {
            Ok(net)
                if addresses
                    .iter()
                    .any(|n| n.addr().is_ipv4() == net.addr().is_ipv4()) =>
            {
                problems.push(
                    span.clone(),
                    "gateway.address",
                    "at most one address per IP family",
                );
            }
            Ok(net) => addresses.push(net),
            Err(_) => problems.push(
                span.clone(),
                "gateway.address",
                format!("`{s}` is not an address with prefix, e.g. \"10.13.13.1/24\""),
            ),
        }
    }
    addresses
}

/// A value that must lie in `range`; `unit` follows the bounds in the message.
fn within<T: Copy + PartialOrd + std::fmt::Display>(
    problems: &mut Problems<'_>,
    field: &str,
    raw: Option<Spanned<T>>,
    range: RangeInclusive<T>,
    unit: &str,
    default: T,
) -> T {
    match raw {
        None => default,
        Some(v) if range.contains(v.get_ref()) => *v.get_ref(),
        Some(v) => {
            problems.push(
                v.span(),
                field,
                format!(
                    "must be between {} and {}{unit}",
                    range.start(),
                    range.end()
                ),
            );
            default
        }
    }
}

fn validate_identity_header(
    problems: &mut Problems<'_>,
    raw: Option<Spanned<String>>,
) -> http::HeaderName {
    let default = http::HeaderName::from_static(DEFAULT_IDENTITY_HEADER);
    let Some(h) = raw else { return default };
    match http::HeaderName::from_bytes(h.get_ref().as_bytes()) {
        Ok(n) => n,
        Err(_) => {
            problems.push(
                h.span(),
                "gateway.identity_header",
                format!("`{}` is not a valid header name", h.get_ref()),
            );
            default
        }
    }
}

/// A count that must be positive (limits, rates).
fn at_least_one<T: Copy + Default + PartialOrd>(
    problems: &mut Problems<'_>,
    field: &str,
    raw: Option<Spanned<T>>,
    default: T,
) -> T {
    match raw {
        None => default,
        Some(n) if *n.get_ref() > T::default() => *n.get_ref(),
        Some(n) => {
            problems.push(n.span(), field, "must be at least 1");
            default
        }
    }
}

/// Names the tunnel proxy answers to besides its tunnel addresses: each a
/// DNS name or an IP literal, compared with `Host` and `Origin`.
fn validate_allowed_hosts(
    problems: &mut Problems<'_>,
    raw: Option<Vec<Spanned<String>>>,
) -> Vec<String> {
    let mut hosts = Vec::new();
    for h in raw.unwrap_or_default() {
        if crate::web::host_check::parse_allowed_host(h.get_ref()).is_some() {
            hosts.push(h.into_inner());
        } else {
            problems.push(
                h.span(),
                "gateway.allowed_hosts",
                format!(
                    "`{}` is not a host name or IP address: write the name alone, e.g. \"prometheus.vpn.example\" (no scheme, port, path or spaces; any port is accepted)",
                    h.get_ref()
                ),
            );
        }
    }
    hosts
}
