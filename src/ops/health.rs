//! Liveness and readiness state, with time passed in.
//!
//! Readiness follows the Prometheus upstreams' real state, as seen by an
//! active probe of every upstream
//! ([`crate::ops::upstream_probe`]), and nothing else: request outcomes never
//! count, because a peer can abort its own request body or reset its own
//! connection, and because an unready pod gets no tunnel traffic that could
//! ever clear a failure. The gateway goes unready once every probe for
//! `unready_after` has failed, and ready again with the first probe that
//! succeeds.

use crate::config::{UpstreamConfig, UpstreamKind};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// State the admin server's `/readyz` reads.
#[derive(Debug)]
pub struct Health {
    /// One per upstream, in the config's order (the probe's numbering).
    upstreams: Vec<UpstreamHealth>,
    /// `None`: the upstreams' state never makes the gateway unready.
    unready_after: Option<Duration>,
}

#[derive(Debug)]
struct UpstreamHealth {
    name: Arc<str>,
    url: Arc<str>,
    kind: UpstreamKind,
    state: Mutex<UpstreamState>,
}

#[derive(Debug, Default, Clone, Copy)]
struct UpstreamState {
    /// The first failed probe since the last good one.
    failing_since: Option<Instant>,
    /// The last probe's outcome, if any ran yet.
    last_ok: Option<bool>,
}

/// One upstream's last probe, for metrics and `status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamUp {
    pub name: Arc<str>,
    pub url: Arc<str>,
    pub kind: UpstreamKind,
    /// `Some(true)` when the last probe succeeded; `None` before the first.
    pub up: Option<bool>,
}

impl Health {
    /// For one Prometheus named "prometheus" (tests, embedding).
    pub fn new(unready_after: Option<Duration>) -> Self {
        Self::for_upstreams(
            &[UpstreamConfig::single_prometheus(
                crate::config::defaults::DEFAULT_UPSTREAM
                    .parse()
                    .unwrap_or_default(),
                Vec::new(),
            )],
            unready_after,
        )
    }

    pub fn for_upstreams(upstreams: &[UpstreamConfig], unready_after: Option<Duration>) -> Self {
        Health {
            upstreams: upstreams
                .iter()
                .map(|u| UpstreamHealth {
                    name: Arc::from(u.name.as_str()),
                    url: Arc::from(u.url.to_string()),
                    kind: u.kind,
                    state: Mutex::new(UpstreamState::default()),
                })
                .collect(),
            unready_after,
        }
    }

    fn state(&self, upstream: usize) -> Option<std::sync::MutexGuard<'_, UpstreamState>> {
        let u = self.upstreams.get(upstream)?;
        Some(u.state.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Records one probe of upstream number `upstream` (config order).
    pub fn record_probe(&self, upstream: usize, now: Instant, ok: bool) {
        let Some(mut s) = self.state(upstream) else {
            return;
        };
        s.last_ok = Some(ok);
        if ok {
            s.failing_since = None;
        } else if s.failing_since.is_none() {
            s.failing_since = Some(now);
        }
    }

    /// Every upstream's last probe, in config order.
    pub fn upstreams_up(&self) -> Vec<UpstreamUp> {
        self.upstreams
            .iter()
            .map(|u| UpstreamUp {
                name: u.name.clone(),
                url: u.url.clone(),
                kind: u.kind,
                up: u.state.lock().unwrap_or_else(|e| e.into_inner()).last_ok,
            })
            .collect()
    }

    /// Ready: no Prometheus upstream has been failing for longer than
    /// `unready_after`. Other kinds never count: a down Alertmanager must
    /// not take the Prometheus UI away with the pod. (The admin server that
    /// asks starts after the UDP socket is bound and the config validated,
    /// so those need no check.)
    pub fn ready(&self, now: Instant) -> Result<(), NotReady> {
        let Some(limit) = self.unready_after else {
            return Ok(());
        };
        for u in self
            .upstreams
            .iter()
            .filter(|u| u.kind == UpstreamKind::Prometheus)
        {
            let since = u
                .state
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .failing_since;
            if let Some(since) = since
                && now.saturating_duration_since(since) >= limit
            {
                return Err(NotReady::UpstreamFailing {
                    upstream: u.name.clone(),
                    limit,
                });
            }
        }
        Ok(())
    }
}

/// Why the gateway is not ready; `/readyz` answers with it.
#[derive(Debug, thiserror::Error)]
pub enum NotReady {
    /// Every probe of a Prometheus upstream for at least `unready_after` failed.
    #[error("upstream \"{upstream}\" has failed its readiness probe for more than {}s", .limit.as_secs())]
    UpstreamFailing { upstream: Arc<str>, limit: Duration },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn up() -> Health {
        Health::new(Some(Duration::from_secs(10)))
    }

    #[test]
    fn unready_after_failing_for_the_limit_and_ready_again_on_the_first_good_probe() {
        let h = up();
        let t0 = Instant::now();
        assert!(h.ready(t0).is_ok());
        h.record_probe(0, t0, false);
        h.record_probe(0, t0 + Duration::from_secs(5), false);
        assert!(h.ready(t0 + Duration::from_secs(9)).is_ok());
        let err = h
            .ready(t0 + Duration::from_secs(10))
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "upstream \"prometheus\" has failed its readiness probe for more than 10s"
        );
        // No tunnel traffic at all: the probe alone brings it back.
        h.record_probe(0, t0 + Duration::from_secs(60), true);
        assert!(h.ready(t0 + Duration::from_secs(60)).is_ok());
        assert_eq!(h.upstreams_up()[0].up, Some(true));
    }

    #[test]
    fn a_single_good_probe_restarts_the_failure_clock() {
        let h = up();
        let t0 = Instant::now();
        h.record_probe(0, t0, false);
        h.record_probe(0, t0 + Duration::from_secs(8), true);
        h.record_probe(0, t0 + Duration::from_secs(9), false);
        assert!(h.ready(t0 + Duration::from_secs(15)).is_ok());
        assert!(h.ready(t0 + Duration::from_secs(19)).is_err());
    }

    /// Issue 28: a down Alertmanager (or plain HTTP upstream) must not take
    /// the Prometheus UI away; a down Prometheus does, and names itself.
    #[test]
    fn only_a_prometheus_upstream_makes_the_gateway_unready() {
        let url: http::Uri = "http://x".parse().unwrap();
        let h = Health::for_upstreams(
            &UpstreamConfig::one_of_each_kind(&url),
            Some(Duration::from_secs(10)),
        );
        let t0 = Instant::now();
        h.record_probe(0, t0, true);
        h.record_probe(1, t0, false);
        h.record_probe(2, t0, false);
        assert!(h.ready(t0 + Duration::from_secs(3600)).is_ok());
        h.record_probe(0, t0, false);
        let err = h
            .ready(t0 + Duration::from_secs(10))
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"prometheus\""), "{err}");
        let up: Vec<_> = h
            .upstreams_up()
            .into_iter()
            .map(|u| (u.name.to_string(), u.up))
            .collect();
        assert_eq!(
            up,
            [
                ("prometheus".to_string(), Some(false)),
                ("alertmanager".to_string(), Some(false)),
                ("wiki".to_string(), Some(false))
            ]
        );
    }

    #[test]
    fn without_a_limit_the_upstream_never_makes_it_unready() {
        let h = Health::new(None);
        let t0 = Instant::now();
        h.record_probe(0, t0, false);
        assert!(h.ready(t0 + Duration::from_secs(3600)).is_ok());
    }
}
