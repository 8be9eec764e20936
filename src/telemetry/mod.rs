//! The gateway's own telemetry: logging setup, Prometheus metrics, and the
//! admin HTTP server (`/metrics`, `/healthz`, `/readyz`).
//!
//! The admin server listens on the cluster network, never inside the
//! tunnel. It exposes counts only; peer names appear in per-peer series,
//! whose cardinality is bounded by the configured peer set, while the
//! request histogram carries no peer label at all.

use crate::config::Role;
use crate::gateway::PeerSnapshot;
use crate::health::Health;
use crate::stats::{DropReason, Stats};
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Installs the global tracing subscriber. `RUST_LOG` overrides the level.
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal as _;
    // Colour only on a terminal: escape codes in `kubectl logs` or a file break grep.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub method: String,
    pub status: String,
    pub role: String,
}

/// Metrics the HTTP proxy records.
#[derive(Debug)]
pub struct HttpMetrics {
    pub duration: Family<HttpLabels, Histogram>,
}

impl HttpMetrics {
    pub fn observe(&self, method: &http::Method, status: u16, role: Role, elapsed: Duration) {
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

/// The peer list telemetry sees; replaced (not mutated) on each reload.
pub type PeerView = Arc<RwLock<Vec<PeerSnapshot>>>;

/// Exports gateway counters, per-peer counters and process metrics on scrape.
#[derive(Debug)]
struct GatewayCollector {
    stats: Arc<Stats>,
    health: Arc<Health>,
    peers: PeerView,
    started: Instant,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PeerLabel {
    peer: String,
}

fn counter(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    v: u64,
) -> Result<(), std::fmt::Error> {
    ConstCounter::new(v).encode(enc.encode_descriptor(name, help, None, MetricType::Counter)?)
}

fn gauge(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    v: f64,
) -> Result<(), std::fmt::Error> {
    ConstGauge::new(v).encode(enc.encode_descriptor(name, help, None, MetricType::Gauge)?)
}

impl Collector for GatewayCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = &self.stats;
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
        counter(
            &mut enc,
            "promgate_handshake_cookie_replies",
            "Handshakes answered with a cookie reply because the gateway was under load.",
            s.cookie_replies.load(Relaxed),
        )?;
        counter(
            &mut enc,
            "promgate_config_reloads_refused",
            "Config reloads refused because the new config did not parse or validate.",
            s.reloads_refused.load(Relaxed),
        )?;
        counter(
            &mut enc,
            "promgate_config_reloads_applied",
            "Config reloads applied.",
            s.reloads_applied.load(Relaxed),
        )?;
        counter(
            &mut enc,
            "promgate_upstream_errors",
            "Requests that failed because the upstream was unreachable or too slow.",
            s.upstream_errors.load(Relaxed),
        )?;
        counter(
            &mut enc,
            "promgate_tunnel_tcp_connections_accepted",
            "TCP connections accepted inside the tunnel.",
            s.tcp_connections_accepted.load(Relaxed),
        )?;
        gauge(
            &mut enc,
            "promgate_tunnel_tcp_connections",
            "TCP connections open inside the tunnel.",
            s.tcp_connections_open.load(Relaxed) as f64,
        )?;

        if let Some(up) = self.health.upstream_up() {
            gauge(
                &mut enc,
                "promgate_upstream_up",
                "1 when the last readiness probe of the upstream (its /-/ready) succeeded.",
                if up { 1.0 } else { 0.0 },
            )?;
        }

        let peers = self.peers.read().map(|p| p.clone()).unwrap_or_default();
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        // "Connected": a handshake within the last 180 s (WireGuard's REJECT_AFTER_TIME).
        let connected = peers
            .iter()
            .filter(|p| {
                let t = p.stats.last_handshake_unix.load(Relaxed);
                t != 0 && now.saturating_sub(t) < 180
            })
            .count();
        gauge(
            &mut enc,
            "promgate_peers_connected",
            "Peers with a handshake in the last 180 seconds.",
            connected as f64,
        )?;
        gauge(
            &mut enc,
            "promgate_peers_configured",
            "Peers in the active configuration.",
            peers.len() as f64,
        )?;
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
            for p in &peers {
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
        encode_process_metrics(&mut enc, self.started)
    }
}

/// The standard `process_*` metrics, from /proc, as client_golang names them.
fn encode_process_metrics(
    enc: &mut DescriptorEncoder,
    started: Instant,
) -> Result<(), std::fmt::Error> {
    let ticks = 100.0; // USER_HZ: 100 on every Linux architecture we ship for.
    let page = 4096.0;
    if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
        // Fields after the command name, which is parenthesised and may hold spaces.
        if let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) {
            let f: Vec<&str> = rest.split_whitespace().collect();
            let num = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
            // utime is field 14, stime 15, vsize 23, rss 24 (1-based); rest starts at 3.
            let cpu = (num(11) + num(12)) / ticks;
            ConstCounter::new(cpu).encode(enc.encode_descriptor(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds.",
                None,
                MetricType::Counter,
            )?)?;
            gauge(
                enc,
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes.",
                num(20),
            )?;
            gauge(
                enc,
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                num(21) * page,
            )?;
        }
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        gauge(
            enc,
            "process_open_fds",
            "Number of open file descriptors.",
            fds.count() as f64,
        )?;
    }
    let start = SystemTime::now()
        .checked_sub(started.elapsed())
        .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    gauge(
        enc,
        "process_start_time_seconds",
        "Start time of the process since unix epoch in seconds.",
        start,
    )?;
    Ok(())
}

/// Everything the admin server needs.
#[derive(Clone)]
pub struct Telemetry {
    registry: Arc<Registry>,
    pub http: Arc<HttpMetrics>,
    pub health: Arc<Health>,
}

impl Telemetry {
    pub fn new(stats: Arc<Stats>, peers: PeerView, health: Arc<Health>) -> Self {
        let mut registry = Registry::default();
        let http = Arc::new(HttpMetrics {
            duration: Family::new_with_constructor(|| {
                Histogram::new([
                    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                ])
            }),
        });
        registry.register(
            "promgate_http_request_duration_seconds",
            "Time from request to the end of the response body, by method, status and role.",
            http.duration.clone(),
        );
        registry.register_collector(Box::new(GatewayCollector {
            stats,
            health: health.clone(),
            peers,
            started: Instant::now(),
        }));
        Telemetry {
            registry: Arc::new(registry),
            http,
            health,
        }
    }

    /// Renders `/metrics`.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }

    pub fn router(self) -> Router {
        Router::new()
            .route("/metrics", get(metrics))
            .route("/healthz", get(|| async { "ok\n" }))
            .route("/readyz", get(readyz))
            .with_state(self)
    }
}

/// Serves OpenMetrics to clients that ask for it (Prometheus does), and the
/// classic text format 0.0.4 otherwise, so `curl` and `promtool check
/// metrics` see the format they expect.
async fn metrics(State(t): State<Telemetry>, headers: axum::http::HeaderMap) -> impl IntoResponse {
    let openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/openmetrics-text"));
    let body = t.render();
    if openmetrics {
        (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
    } else {
        (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            openmetrics_to_text(&body),
        )
    }
}

/// Converts prometheus-client's OpenMetrics output to text format 0.0.4: a
/// counter family `x` becomes `x_total` in HELP and TYPE, `# UNIT` and
/// `# EOF` go. Sample lines are the same in both formats.
fn openmetrics_to_text(om: &str) -> String {
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

async fn readyz(State(t): State<Telemetry>) -> impl IntoResponse {
    match t.health.ready(Instant::now()) {
        Ok(()) => (StatusCode::OK, "ready\n".to_string()),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_format_names_counters_with_their_total_suffix() {
        let om = "# HELP a_total_thing x.\n# TYPE req counter\n# HELP req Requests.\nreq_total 3\n# TYPE g gauge\ng 1.0\n# UNIT g seconds\n# EOF\n";
        let text = openmetrics_to_text(om);
        assert!(
            text.contains("# TYPE req_total counter\n# HELP req_total Requests.\nreq_total 3\n"),
            "{text}"
        );
        assert!(text.contains("# TYPE g gauge\ng 1.0\n"));
        assert!(!text.contains("# EOF") && !text.contains("# UNIT"));
    }

    #[test]
    fn rendered_metrics_include_the_team_s_queries() {
        let t = Telemetry::new(
            Arc::new(Stats::default()),
            Default::default(),
            Arc::new(Health::new(None)),
        );
        t.http.observe(
            &http::Method::GET,
            200,
            Role::Viewer,
            Duration::from_millis(3),
        );
        let text = openmetrics_to_text(&t.render());
        for needle in [
            "process_cpu_seconds_total ",
            "process_resident_memory_bytes ",
            "promgate_http_request_duration_seconds_count{method=\"GET\",status=\"200\",role=\"viewer\"} 1",
            "promgate_packets_dropped_total{reason=\"spoofed_source\"} 0",
            "# TYPE promgate_config_reloads_refused_total counter",
        ] {
            assert!(text.contains(needle), "missing {needle} in\n{text}");
        }
    }
}
