//! What `/metrics` exports: the request histogram the proxy records into,
//! and a collector that reads the gateway's counters, the per-peer counters
//! and the process metrics at scrape time.
//!
//! Cardinality is bounded: per-peer series are as many as configured peers,
//! the request histogram has no peer label, and unknown HTTP methods share
//! one label value. Scraping takes no lock the packet path holds: counters
//! are atomics, and the peer list is a snapshot replaced on reload.

use super::PeerView;
use super::encode::{counter, gauge};
use super::process::encode_process_metrics;
use crate::ops::health::Health;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use promgate_core::gateway::PeerSnapshot;
use promgate_core::role::Role;
use promgate_core::stats::{DropReason, Stats};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant, SystemTime};

/// Request latency buckets in seconds, 1 ms to 30 s; a slower request
/// (up to the upstream timeout) lands in `+Inf`.
const DURATION_BUCKETS: [f64; 13] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// A peer counts as connected for this long after its last handshake:
/// WireGuard's REJECT_AFTER_TIME, after which the session is unusable.
const CONNECTED_WITHIN_SECS: u64 = 180;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct HttpLabels {
    method: String,
    status: String,
    role: String,
}

/// Metrics the HTTP proxy records.
#[derive(Debug)]
pub struct HttpMetrics {
    pub(super) duration: Family<HttpLabels, Histogram>,
    /// Audit lines of refused requests not written (per-peer rate limit).
    pub(super) audit_lines_suppressed: prometheus_client::metrics::counter::Counter,
}

impl HttpMetrics {
    pub(super) fn new() -> Self {
        HttpMetrics {
            duration: Family::new_with_constructor(|| Histogram::new(DURATION_BUCKETS)),
            audit_lines_suppressed: Default::default(),
        }
    }

    /// Audit lines of refused requests not written so far.
    #[cfg(test)]
    pub(crate) fn audit_lines_suppressed(&self) -> u64 {
        self.audit_lines_suppressed.get()
    }

    /// Counts one refused request whose audit line was not written.
    pub(crate) fn audit_line_suppressed(&self) {
        self.audit_lines_suppressed.inc();
    }

    /// Records one request, from its arrival to the end of the response body.
    pub(crate) fn observe(
        &self,
        method: &http::Method,
        status: u16,
        role: Role,
        elapsed: Duration,
    ) {
        // Unknown methods collapse into one label value to bound cardinality.
        let method = match *method {
            http::Method::GET
            | http::Method::POST
            | http::Method::HEAD
            | http::Method::PUT
            | http::Method::DELETE
            | http::Method::OPTIONS => method.as_str(),
            _ => "other",
        };
        self.duration
            .get_or_create(&HttpLabels {
                method: method.to_string(),
                status: status.to_string(),
                role: role.as_str().to_string(),
            })
            .observe(elapsed.as_secs_f64());
    }
}

/// Exports gateway counters, per-peer counters and process metrics on scrape.
#[derive(Debug)]
pub(super) struct GatewayCollector {
    pub(super) stats: Arc<Stats>,
    pub(super) health: Arc<Health>,
    pub(super) peers: PeerView,
    pub(super) started: Instant,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PeerLabel {
    peer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamLabel {
    upstream: String,
}

/// `promgate_upstream_up{upstream}`: each probed upstream's last probe (an
/// upstream not yet probed has no series, as before).
fn encode_upstreams_up(
    enc: &mut DescriptorEncoder,
    health: &Health,
) -> Result<(), std::fmt::Error> {
    let probed: Vec<_> = health
        .upstreams_up()
        .into_iter()
        .filter_map(|u| Some((u.name, u.up?)))
        .collect();
    if probed.is_empty() {
        return Ok(());
    }
    let mut m = enc.encode_descriptor(
        "promgate_upstream_up",
        "1 when the last readiness probe of the upstream (/-/ready; / for kind http) succeeded.",
        None,
        MetricType::Gauge,
    )?;
    for (name, up) in probed {
        let labels = UpstreamLabel {
            upstream: name.to_string(),
        };
        ConstGauge::new(if up { 1.0 } else { 0.0 }).encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

impl Collector for GatewayCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        encode_gateway_counters(&mut enc, &self.stats)?;
        encode_upstreams_up(&mut enc, &self.health)?;
        let peers = self.peers.read().map(|p| p.clone()).unwrap_or_default();
        encode_peer_counts(&mut enc, &peers)?;
        encode_per_peer(&mut enc, &peers)?;
        encode_process_metrics(&mut enc, self.started)
    }
}

/// Drops by reason, and the gateway-wide counters of [`Stats`].
fn encode_gateway_counters(enc: &mut DescriptorEncoder, s: &Stats) -> Result<(), std::fmt::Error> {
    {
        let mut m = enc.encode_descriptor(
            "promgate_packets_dropped",
            "Packets dropped, by reason.",
            None,
            MetricType::Counter,
        )?;
        for r in DropReason::ALL {
            ConstCounter::new(s.dropped(r))
                .encode(m.encode_family(&ReasonLabel { reason: r.as_str() })?)?;
        }
    }
    for (name, help, v) in GATEWAY_COUNTERS {
        counter(enc, name, help, v(s).load(Relaxed))?;
    }
    for (name, help, v) in GATEWAY_GAUGES {
        gauge(enc, name, help, v(s).load(Relaxed) as f64)?;
    }
    Ok(())
}

/// A gateway-wide figure: its name, its help, and where it is kept.
type Figure = (&'static str, &'static str, fn(&Stats) -> &AtomicU64);

const GATEWAY_COUNTERS: &[Figure] = &[
    (
        "promgate_handshake_cookie_replies",
        "Handshakes answered with a cookie reply because the gateway was under load.",
        |s| &s.cookie_replies,
    ),
    (
        "promgate_config_reloads_refused",
        "Config reloads refused because the new config did not parse or validate.",
        |s| &s.reloads_refused,
    ),
    (
        "promgate_config_reloads_applied",
        "Config reloads applied.",
        |s| &s.reloads_applied,
    ),
    (
        "promgate_upstream_errors",
        "Requests that failed because the upstream was unreachable or too slow.",
        |s| &s.upstream_errors,
    ),
    (
        "promgate_upstream_queue_timeouts",
        "Requests answered 503 after waiting 30 s for a place among the upstream requests in flight.",
        |s| &s.upstream_queue_timeouts,
    ),
    (
        "promgate_tunnel_tcp_connections_accepted",
        "TCP connections accepted inside the tunnel.",
        |s| &s.tcp_connections_accepted,
    ),
    // Loss recovery, added when each connection closes. The classic sender
    // counts only RTOs and fast retransmits.
    (
        "promgate_tunnel_tcp_retransmitted_segments",
        "Data segments sent again by tunnel TCP connections (WAN sender; counted when a connection closes).",
        |s| &s.tcp_retransmitted_segments,
    ),
    (
        "promgate_tunnel_tcp_rtos",
        "Retransmission timeouts of tunnel TCP connections (counted when a connection closes).",
        |s| &s.tcp_rtos,
    ),
    (
        "promgate_tunnel_tcp_fast_recoveries",
        "Loss recoveries entered without a timeout: fast retransmits, or RACK/SACK loss detection (counted when a connection closes).",
        |s| &s.tcp_fast_recoveries,
    ),
    (
        "promgate_tunnel_tcp_tail_loss_probes",
        "Tail loss probes sent (WAN sender; counted when a connection closes).",
        |s| &s.tcp_tail_loss_probes,
    ),
];

const GATEWAY_GAUGES: &[Figure] = &[
    (
        "promgate_tunnel_tcp_connections",
        "TCP connections open inside the tunnel.",
        |s| &s.tcp_connections_open,
    ),
    (
        "promgate_tunnel_tcp_buffer_bytes",
        "Bytes of tunnel TCP buffers in use: every connection's starting buffers plus grown ones.",
        |s| &s.tcp_buffer_bytes,
    ),
    (
        "promgate_tunnel_tcp_buffer_growth_bytes",
        "Bytes of buffer growth beyond the starting buffers (at most half the budget).",
        |s| &s.tcp_buffer_growth_bytes,
    ),
    (
        "promgate_tunnel_tcp_buffer_budget_bytes",
        "The configured budget of tunnel TCP buffers (gateway.tcp_memory_budget).",
        |s| &s.tcp_buffer_budget_bytes,
    ),
];

/// Peers configured, and peers with a recent handshake.
fn encode_peer_counts(
    enc: &mut DescriptorEncoder,
    peers: &[PeerSnapshot],
) -> Result<(), std::fmt::Error> {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let connected = peers
        .iter()
        .filter(|p| {
            let t = p.stats.last_handshake_unix.load(Relaxed);
            t != 0 && now.saturating_sub(t) < CONNECTED_WITHIN_SECS
        })
        .count();
    gauge(
        enc,
        "promgate_peers_connected",
        "Peers with a handshake in the last 180 seconds.",
        connected as f64,
    )?;
    gauge(
        enc,
        "promgate_peers_configured",
        "Peers in the active configuration.",
        peers.len() as f64,
    )
}

/// One series per peer for each of its counters, labelled with its name.
fn encode_per_peer(
    enc: &mut DescriptorEncoder,
    peers: &[PeerSnapshot],
) -> Result<(), std::fmt::Error> {
    type Get = fn(&PeerSnapshot) -> u64;
    let per_peer: [(&str, &str, MetricType, Get); 4] = [
        (
            "promgate_peer_received_bytes",
            "Bytes received from the peer (WireGuard datagrams).",
            MetricType::Counter,
            |p| p.stats.rx_bytes.load(Relaxed),
        ),
        (
            "promgate_peer_sent_bytes",
            "Bytes sent to the peer (WireGuard datagrams).",
            MetricType::Counter,
            |p| p.stats.tx_bytes.load(Relaxed),
        ),
        (
            "promgate_peer_handshakes",
            "Handshakes completed with the peer.",
            MetricType::Counter,
            |p| p.stats.handshakes.load(Relaxed),
        ),
        (
            "promgate_peer_last_handshake_timestamp_seconds",
            "Unix time of the last handshake with the peer, 0 if none.",
            MetricType::Gauge,
            |p| p.stats.last_handshake_unix.load(Relaxed),
        ),
    ];
    for (name, help, kind, get) in per_peer {
        let mut m = enc.encode_descriptor(name, help, None, kind)?;
        for p in peers {
            let labels = PeerLabel {
                peer: p.name.to_string(),
            };
            if kind == MetricType::Counter {
                ConstCounter::new(get(p)).encode(m.encode_family(&labels)?)?;
            } else {
                ConstGauge::new(get(p) as f64).encode(m.encode_family(&labels)?)?;
            }
        }
    }
    Ok(())
}

/// Converts prometheus-client's OpenMetrics output to text format 0.0.4: a
/// counter family `x` becomes `x_total` in HELP and TYPE, `# UNIT` and
/// `# EOF` go. Sample lines are the same in both formats.
pub(super) fn openmetrics_to_text(om: &str) -> String {
    let counters: std::collections::HashSet<&str> = om
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(om.len());
    for line in om.lines() {
        if line.starts_with("# EOF") || line.starts_with("# UNIT ") {
            continue;
        }
        let rewritten = ["# HELP ", "# TYPE "].iter().find_map(|p| {
            let rest = line.strip_prefix(p)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{p}{name}_total {tail}"))
        });
        out.push_str(rewritten.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}
