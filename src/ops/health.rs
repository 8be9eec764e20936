//! Liveness and readiness state, with time passed in.
//!
//! Readiness follows the upstream's real state, as seen by an active probe
//! ([`crate::ops::upstream_probe`]) and nothing else: request outcomes never
//! count, because a peer can abort its own request body or reset its own
//! connection, and because an unready pod gets no tunnel traffic that could
//! ever clear a failure. The gateway goes unready once every probe for
//! `unready_after` has failed, and ready again with the first probe that
//! succeeds.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// State the admin server's `/readyz` reads.
#[derive(Debug)]
pub struct Health {
    upstream: Mutex<UpstreamState>,
    /// `None`: the upstream's state never makes the gateway unready.
    unready_after: Option<Duration>,
}

#[derive(Debug, Default, Clone, Copy)]
struct UpstreamState {
    /// The first failed probe since the last good one.
    failing_since: Option<Instant>,
    /// The last probe's outcome, if any ran yet.
    last_ok: Option<bool>,
}

impl Health {
    pub fn new(unready_after: Option<Duration>) -> Self {
        Health {
            upstream: Mutex::new(UpstreamState::default()),
            unready_after,
        }
    }

    /// Records one probe of the upstream.
    pub fn record_probe(&self, now: Instant, ok: bool) {
        let mut s = self.upstream.lock().unwrap_or_else(|e| e.into_inner());
        s.last_ok = Some(ok);
        if ok {
            s.failing_since = None;
        } else if s.failing_since.is_none() {
            s.failing_since = Some(now);
        }
    }

    /// The last probe's outcome: `Some(true)` when the upstream answered ready.
    pub fn upstream_up(&self) -> Option<bool> {
        self.upstream
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .last_ok
    }

    /// Ready: the upstream has not been failing for longer than
    /// `unready_after`. (The admin server that asks starts after the UDP
    /// socket is bound and the config validated, so those need no check.)
    pub fn ready(&self, now: Instant) -> Result<(), NotReady> {
        if let Some(limit) = self.unready_after {
            let since = self
                .upstream
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .failing_since;
            if let Some(since) = since
                && now.saturating_duration_since(since) >= limit
            {
                return Err(NotReady::UpstreamFailing(limit));
            }
        }
        Ok(())
    }
}

/// Why the gateway is not ready; `/readyz` answers with it.
#[derive(Debug, thiserror::Error)]
pub enum NotReady {
    /// Every probe for at least `unready_after` failed.
    #[error("the upstream has failed its readiness probe for more than {}s", .0.as_secs())]
    UpstreamFailing(Duration),
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
        h.record_probe(t0, false);
        h.record_probe(t0 + Duration::from_secs(5), false);
        assert!(h.ready(t0 + Duration::from_secs(9)).is_ok());
        let err = h
            .ready(t0 + Duration::from_secs(10))
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "the upstream has failed its readiness probe for more than 10s"
        );
        // No tunnel traffic at all: the probe alone brings it back.
        h.record_probe(t0 + Duration::from_secs(60), true);
        assert!(h.ready(t0 + Duration::from_secs(60)).is_ok());
        assert_eq!(h.upstream_up(), Some(true));
    }

    #[test]
    fn a_single_good_probe_restarts_the_failure_clock() {
        let h = up();
        let t0 = Instant::now();
        h.record_probe(t0, false);
        h.record_probe(t0 + Duration::from_secs(8), true);
        h.record_probe(t0 + Duration::from_secs(9), false);
        assert!(h.ready(t0 + Duration::from_secs(15)).is_ok());
        assert!(h.ready(t0 + Duration::from_secs(19)).is_err());
    }

    #[test]
    fn without_a_limit_the_upstream_never_makes_it_unready() {
        let h = Health::new(None);
        let t0 = Instant::now();
        h.record_probe(t0, false);
        assert!(h.ready(t0 + Duration::from_secs(3600)).is_ok());
    }
}
