//! The active readiness probe of each upstream: the tokio side of
//! [`crate::ops::health`].
//!
//! Every [`PROBE_INTERVAL`] it asks the upstream's `/-/ready` (Prometheus
//! and Alertmanager answer 200 once they can serve, 503 while they start)
//! with a [`PROBE_TIMEOUT`], and records the outcome. A plain `http`
//! upstream has no such endpoint: its `/` is asked, and any HTTP answer,
//! a 404 or a 401 included, counts as up. It needs no tunnel traffic, so a
//! gateway that went unready while Prometheus restarted becomes ready
//! again by itself within one interval of Prometheus coming back.

use crate::config::{UpstreamConfig, UpstreamKind};
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
fn probe_target(upstream: &Uri, kind: UpstreamKind) -> Result<Uri, TargetError> {
    upstream_uri(upstream, &Uri::from_static(kind.probe_path()))
}

/// Probes upstream number `number` (config order) until `shutdown`.
pub async fn run(
    number: usize,
    config: UpstreamConfig,
    health: Arc<Health>,
    shutdown: CancellationToken,
) {
    let upstream = config.url;
    let name = config.name;
    let kind = config.kind;
    let target = match probe_target(&upstream, kind) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(upstream = %name, url = %upstream, error = %e, "cannot build the upstream probe URL; its state will not be followed");
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
        let outcome = probe_once(&connector, &upstream, &target, kind).await;
        let ok = outcome.is_ok();
        health.record_probe(number, Instant::now(), ok);
        if was_ok != Some(ok) {
            match &outcome {
                Ok(()) => {
                    tracing::info!(upstream = %name, url = %upstream, probe = %target, "upstream is ready")
                }
                Err(why) => {
                    tracing::warn!(upstream = %name, url = %upstream, probe = %target, %why, "upstream readiness probe failed")
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
    kind: UpstreamKind,
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
        // A plain HTTP service answered: it is there, whatever it thinks
        // of a bare `/`.
        Ok(Ok(_)) if kind == UpstreamKind::Http => Ok(()),
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
        assert_eq!(
            probe_target(&u, UpstreamKind::Prometheus)
                .unwrap()
                .to_string(),
            "/-/ready"
        );
        let u: Uri = "http://10.0.0.1:9090/prom/".parse().unwrap();
        assert_eq!(
            probe_target(&u, UpstreamKind::Prometheus)
                .unwrap()
                .to_string(),
            "/prom/-/ready"
        );
        let u: Uri = "http://10.0.0.1:9093/am".parse().unwrap();
        assert_eq!(
            probe_target(&u, UpstreamKind::Alertmanager)
                .unwrap()
                .to_string(),
            "/am/-/ready"
        );
        assert_eq!(
            probe_target(&u, UpstreamKind::Http).unwrap().to_string(),
            "/am/"
        );
    }
}
