//! The active readiness probe of the upstream: the tokio side of
//! [`crate::ops::health`].
//!
//! Every [`PROBE_INTERVAL`] it asks the upstream's `/-/ready` (Prometheus
//! answers 200 once it can serve queries, 503 while it starts) with a
//! [`PROBE_TIMEOUT`], and records the outcome. It needs no tunnel traffic,
//! so a gateway that went unready while Prometheus restarted becomes ready
//! again by itself within one interval of Prometheus coming back.

use crate::ops::health::Health;
use http::Uri;
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// How often the upstream is probed: short enough to recover within a
/// few seconds, long enough to cost Prometheus nothing.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(2);
/// A probe that takes longer than this counts as failed.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Prometheus's readiness endpoint, relative to the upstream URL's path.
pub const PROBE_PATH: &str = "/-/ready";

/// The probe URL for an upstream URL (which may have a path prefix).
pub fn probe_uri(upstream: &Uri) -> Option<Uri> {
    let base = upstream.path().trim_end_matches('/');
    Uri::builder()
        .scheme("http")
        .authority(upstream.authority()?.as_str())
        .path_and_query(format!("{base}{PROBE_PATH}"))
        .build()
        .ok()
}

/// Probes until `shutdown`.
pub async fn run(upstream: Uri, health: Arc<Health>, shutdown: CancellationToken) {
    let Some(uri) = probe_uri(&upstream) else {
        tracing::error!(%upstream, "cannot build the upstream probe URL; readiness will not follow the upstream");
        return;
    };
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(PROBE_TIMEOUT));
    // No pooling: each probe is a fresh connection, as a client's would be.
    let client: Client<_, Empty<bytes::Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build(connector);
    let mut interval = tokio::time::interval(PROBE_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut was_ok = None;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = interval.tick() => {}
        }
        let req = http::Request::get(uri.clone()).body(Empty::new());
        let outcome = match req {
            Ok(req) => match tokio::time::timeout(PROBE_TIMEOUT, client.request(req)).await {
                Ok(Ok(resp)) if resp.status().is_success() => Ok(()),
                Ok(Ok(resp)) => Err(format!("answered {}", resp.status())),
                Ok(Err(e)) => Err(format!("request failed: {e}")),
                Err(_) => Err(format!("no answer within {PROBE_TIMEOUT:?}")),
            },
            Err(e) => Err(format!("cannot build the request: {e}")),
        };
        let ok = outcome.is_ok();
        health.record_probe(Instant::now(), ok);
        if was_ok != Some(ok) {
            match &outcome {
                Ok(()) => tracing::info!(probe = %uri, "upstream is ready"),
                Err(why) => tracing::warn!(probe = %uri, %why, "upstream readiness probe failed"),
            }
            was_ok = Some(ok);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_uri_keeps_the_upstream_path_prefix() {
        let u: Uri = "http://prometheus.default.svc.cluster.local"
            .parse()
            .unwrap();
        assert_eq!(
            probe_uri(&u).unwrap().to_string(),
            "http://prometheus.default.svc.cluster.local/-/ready"
        );
        let u: Uri = "http://10.0.0.1:9090/prom/".parse().unwrap();
        assert_eq!(
            probe_uri(&u).unwrap().to_string(),
            "http://10.0.0.1:9090/prom/-/ready"
        );
    }
}
