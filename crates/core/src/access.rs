//! A peer's access rules as the data path carries them: every accepted
//! connection holds its peer's [`PeerAccess`], so a reload that changes the
//! rules reaches requests on connections that are already open.
//!
//! The decisions themselves (paths, methods, scopes) are made by the main
//! crate's HTTP layer; this is only the shared, swappable state and the
//! per-peer bounds on that layer's work. The semaphores are async-lock's,
//! which need no runtime.

use crate::role::Role;
use crate::scope::Scope;
use crate::token_bucket::{Rate, TokenBucket};
use async_lock::Semaphore;
use std::sync::{Arc, RwLock};

/// Requests one peer may have in flight to an upstream unless configured
/// (`gateway.max_upstream_requests_per_peer`).
pub const DEFAULT_UPSTREAM_REQUESTS_PER_PEER: usize = 8;

/// How the upstreams' concurrency is shared out to each peer: every peer
/// gets `per_peer` requests in flight to each of the `upstreams`, so that a
/// peer waiting on a slow Alertmanager does not hold its Prometheus share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpstreamShares {
    pub per_peer: usize,
    /// How many upstreams the gateway serves; they are numbered from 0 in
    /// the order of the config.
    pub upstreams: usize,
}

impl UpstreamShares {
    /// `per_peer` requests to a single upstream.
    pub fn one_upstream(per_peer: usize) -> Self {
        UpstreamShares {
            per_peer,
            upstreams: 1,
        }
    }
}

/// What a peer may do, as of the current configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessRules {
    pub name: Arc<str>,
    pub role: Role,
    pub allow_paths: Arc<[String]>,
    pub deny_paths: Arc<[String]>,
    /// The peer's label scope; `None` is unscoped.
    pub scope: Option<Scope>,
}

/// A peer's access rules, shared by the peer table and every open
/// connection of that peer. A reload replaces the rules in place, so the
/// next request on an already open keep-alive connection is decided on the
/// new rules (a demoted admin loses admin rights at once).
#[derive(Debug)]
pub struct PeerAccess {
    rules: RwLock<Arc<AccessRules>>,
    /// Bounds this peer's scope rewrites and list filters in flight (CPU
    /// and memory on the blocking pool), so that one peer's heavy requests
    /// queue behind each other instead of taking the gateway's share.
    scoped_work: Semaphore,
    /// Rate limit on this peer's audit lines for refused requests.
    refusal_lines: std::sync::Mutex<RefusalLines>,
    /// Bounds this peer's requests in flight to each upstream
    /// (`gateway.max_upstream_requests_per_peer`), indexed by upstream.
    upstream: Box<[Semaphore]>,
}

/// Audit lines of refused requests one peer may cause per second, and at
/// once: a peer looping on refused requests (2.6 µs each) must not fill the
/// log. The lines not written are counted, and the next line written says
/// how many were left out.
pub(crate) const REFUSAL_LINES_PER_SECOND: u64 = 10;
pub(crate) const REFUSAL_LINES_BURST: u64 = 20;
const REFUSAL_LINES: Rate = Rate::per_second(REFUSAL_LINES_PER_SECOND, REFUSAL_LINES_BURST);

#[derive(Debug)]
struct RefusalLines {
    /// `None` until the first refusal: a peer starts with a full bucket.
    bucket: Option<TokenBucket>,
    suppressed: u64,
}

/// Scope rewrites or list filters one peer may run at once.
pub const SCOPED_WORK_PER_PEER: usize = 2;

impl PeerAccess {
    /// With the default concurrency to one upstream; see [`Self::with_upstream_shares`].
    pub fn new(rules: AccessRules) -> Self {
        Self::with_upstream_limit(rules, DEFAULT_UPSTREAM_REQUESTS_PER_PEER)
    }

    /// `upstream_requests` in flight to a single upstream.
    pub fn with_upstream_limit(rules: AccessRules, upstream_requests: usize) -> Self {
        Self::with_upstream_shares(rules, UpstreamShares::one_upstream(upstream_requests))
    }

    pub fn with_upstream_shares(rules: AccessRules, shares: UpstreamShares) -> Self {
        PeerAccess {
            rules: RwLock::new(Arc::new(rules)),
            scoped_work: Semaphore::new(SCOPED_WORK_PER_PEER),
            upstream: (0..shares.upstreams)
                .map(|_| Semaphore::new(shares.per_peer))
                .collect(),
            refusal_lines: std::sync::Mutex::new(RefusalLines {
                bucket: None,
                suppressed: 0,
            }),
        }
    }

    /// Whether the audit line of one more refused request may be written
    /// now: `Some(n)` with the number suppressed since the last one
    /// written, or `None` when this one is suppressed too.
    pub fn refusal_line(&self, now: std::time::Instant) -> Option<u64> {
        let mut r = self.refusal_lines.lock().unwrap_or_else(|e| e.into_inner());
        let bucket = r
            .bucket
            .get_or_insert_with(|| TokenBucket::full(REFUSAL_LINES, now));
        if bucket.take(REFUSAL_LINES, now) {
            Some(std::mem::take(&mut r.suppressed))
        } else {
            r.suppressed += 1;
            None
        }
    }

    /// The rules in force now.
    pub fn current(&self) -> Arc<AccessRules> {
        self.rules.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn replace(&self, rules: AccessRules) {
        *self.rules.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(rules);
    }

    /// This peer's share of upstream number `upstream`'s concurrency;
    /// `None` for a number the gateway was not configured with.
    pub fn upstream_slots(&self, upstream: usize) -> Option<&Semaphore> {
        self.upstream.get(upstream)
    }

    /// This peer's share of scoped work (see [`SCOPED_WORK_PER_PEER`]).
    pub fn scoped_work(&self) -> &Semaphore {
        &self.scoped_work
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 24, item 7: refusal audit lines are rate-limited per peer, and
    /// the next line written says how many were left out.
    #[test]
    fn refusal_lines_are_rate_limited_and_the_gap_is_reported() {
        let access = PeerAccess::new(AccessRules {
            name: Arc::from("a"),
            role: Role::Viewer,
            allow_paths: Arc::from([]),
            deny_paths: Arc::from([]),
            scope: None,
        });
        let t0 = std::time::Instant::now();
        let allowed = (0..50)
            .filter(|_| access.refusal_line(t0).is_some())
            .count();
        assert_eq!(allowed, REFUSAL_LINES_BURST as usize);
        // A second later, 10 more; the first of them reports the 30 left out.
        let t1 = t0 + std::time::Duration::from_secs(1);
        assert_eq!(access.refusal_line(t1), Some(30));
        let more = (0..50)
            .filter(|_| access.refusal_line(t1).is_some())
            .count();
        assert_eq!(more, REFUSAL_LINES_PER_SECOND as usize - 1);
    }
}
