//! The gateway's own telemetry: logging setup (`logging`), Prometheus
//! metrics (`metrics`, with the process metrics of `process`), and the
//! admin router (`admin`: `/metrics`, `/healthz`, `/readyz`).
//!
//! The admin server listens on the cluster network, never inside the
//! tunnel. It exposes counts only; peer names appear in per-peer series,
//! whose cardinality is bounded by the configured peer set, while the
//! request histogram carries no peer label at all.

mod admin;
mod encode;
mod logging;
mod metrics;
mod process;

pub(crate) use self::logging::{LogFormat, init_logging};
pub use self::metrics::HttpMetrics;

use self::metrics::GatewayCollector;
use crate::ops::health::Health;
use prometheus_client::registry::Registry;
use promgate_core::gateway::PeerSnapshot;
use promgate_core::stats::Stats;
use std::sync::{Arc, RwLock};
use std::time::Instant;

/// The peer list telemetry sees; replaced (not mutated) on each reload.
pub type PeerView = Arc<RwLock<Vec<PeerSnapshot>>>;

/// Everything the admin server needs.
#[derive(Clone)]
pub struct Telemetry {
    registry: Arc<Registry>,
    pub http: Arc<HttpMetrics>,
    pub(crate) health: Arc<Health>,
}

impl Telemetry {
    /// Registers the request histogram and the scrape-time collector.
    pub fn new(stats: Arc<Stats>, peers: PeerView, health: Arc<Health>) -> Self {
        let mut registry = Registry::default();
        let http = Arc::new(HttpMetrics::new());
        registry.register(
            "promgate_http_request_duration_seconds",
            "Time from request to the end of the response body, by method, status and role.",
            http.duration.clone(),
        );
        registry.register(
            "promgate_audit_lines_suppressed",
            "Audit lines of refused requests not written: each peer may log 10 refusals a second (bursts of 20).",
            http.audit_lines_suppressed.clone(),
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
    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::metrics::openmetrics_to_text;
    use super::*;
    use promgate_core::role::Role;
    use std::time::Duration;

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

    /// Issue 28: one `promgate_upstream_up` series per probed upstream,
    /// named by its `upstream` label; an upstream not yet probed has none.
    #[test]
    fn each_probed_upstream_has_its_up_series() {
        use crate::config::UpstreamConfig;
        let url: http::Uri = "http://x".parse().unwrap();
        let health = Arc::new(Health::for_upstreams(
            &UpstreamConfig::one_of_each_kind(&url),
            None,
        ));
        let t = Telemetry::new(
            Arc::new(Stats::default()),
            Default::default(),
            health.clone(),
        );
        health.record_probe(0, std::time::Instant::now(), true);
        health.record_probe(1, std::time::Instant::now(), false);
        let text = openmetrics_to_text(&t.render());
        assert!(
            text.contains("promgate_upstream_up{upstream=\"prometheus\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("promgate_upstream_up{upstream=\"alertmanager\"} 0"),
            "{text}"
        );
        assert!(!text.contains("upstream=\"wiki\""), "{text}");
        assert_eq!(
            text.matches("# TYPE promgate_upstream_up gauge").count(),
            1,
            "{text}"
        );
    }
}
