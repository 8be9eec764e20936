//! The active readiness probe of the upstream: the tokio side of
//! [`crate::ops::health`].
//!
//! Every [`PROBE_INTERVAL`] it asks the upstream's `/-/ready` (Prometheus
//! answers 200 once it can serve queries, 503 while it starts) with a
//! [`PROBE_TIMEOUT`], and records the outcome. It needs no tunnel traffic,
//! so a gateway that went unready while Prometheus restarted becomes ready
//! again by itself within one interval of Prometheus coming back.

use crate::ops::health::Health;
use crate::web::proxy::upstream::{Connector, UpstreamError};
use crate::web::proxy::{TargetError, upstream_host, upstream_uri};
use http::{Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Empty};
use std::convert::Infallible;
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

/// Why a probe failed, for the log.
#[derive(Debug, thiserror::Error)]
enum ProbeFailure {
    #[error("answered {0}")]
    Answered(StatusCode),
    #[error("request failed: {0}")]
    Failed(#[source] UpstreamError),
    #[error("no answer within {PROBE_TIMEOUT:?}")]
    NoAnswer,
}

/// The probe's request target for an upstream URL (which may have a path
/// prefix), built as the proxy builds its own.
fn probe_target(upstream: &Uri) -> Result<Uri, TargetError> {
    upstream_uri(upstream, &Uri::from_static(PROBE_PATH))
}

/// Probes until `shutdown`.
pub async fn run(upstream: Uri, health: Arc<Health>, shutdown: CancellationToken) {
    let target = match probe_target(&upstream) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(%upstream, error = %e, "cannot build the upstream probe URL; readiness will not follow the upstream");
            return;
        }
    };
    let connector = Connector::new(upstream.clone(), PROBE_TIMEOUT);
    let mut interval = tokio::time::interval(PROBE_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut was_ok = None;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = interval.tick() => {}
        }
        let outcome = probe_once(&connector, &upstream, &target).await;
        let ok = outcome.is_ok();
        health.record_probe(Instant::now(), ok);
        if was_ok != Some(ok) {
            match &outcome {
                Ok(()) => tracing::info!(%upstream, probe = %target, "upstream is ready"),
                Err(why) => {
                    tracing::warn!(%upstream, probe = %target, %why, "upstream readiness probe failed")
                }
            }
            was_ok = Some(ok);
        }
    }
}

/// One probe, on a fresh connection as a client's would be.
async fn probe_once(
    connector: &Connector,
    upstream: &Uri,
    target: &Uri,
) -> Result<(), ProbeFailure> {
    let mut req = Request::new(
        Empty::new()
            .map_err(|never: Infallible| match never {})
            .boxed(),
    );
    *req.uri_mut() = target.clone();
    if let Some(host) = upstream_host(upstream) {
        req.headers_mut().insert(header::HOST, host);
    }
    match tokio::time::timeout(PROBE_TIMEOUT, connector.send_once(req)).await {
        Ok(Ok(resp)) if resp.status().is_success() => Ok(()),
        Ok(Ok(resp)) => Err(ProbeFailure::Answered(resp.status())),
        Ok(Err(e)) => Err(ProbeFailure::Failed(e)),
        Err(_) => Err(ProbeFailure::NoAnswer),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_target_keeps_the_upstream_path_prefix() {
        let u: Uri = "http://prometheus.default.svc.cluster.local"
            .parse()
            .unwrap();
        assert_eq!(probe_target(&u).unwrap().to_string(), "/-/ready");
        let u: Uri = "http://10.0.0.1:9090/prom/".parse().unwrap();
        assert_eq!(probe_target(&u).unwrap().to_string(), "/prom/-/ready");
    }
}
