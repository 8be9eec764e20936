//! A token bucket in whole nanoseconds of allowance, with no clock of its
//! own: the caller passes the time, so tests drive it with made-up
//! instants. One type serves the per-source handshake limit and the
//! per-peer limit on refusal audit lines.

use std::time::Instant;

/// How fast a bucket refills and how much it holds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rate {
    /// Nanoseconds of allowance one token costs.
    nanos_per_token: u64,
    /// Allowance of a full bucket.
    full: u64,
}

impl Rate {
    /// `per_second` tokens a second, at most `burst` at once.
    pub(crate) const fn per_second(per_second: u64, burst: u64) -> Self {
        let nanos_per_token = 1_000_000_000 / per_second;
        Rate {
            nanos_per_token,
            full: burst * nanos_per_token,
        }
    }
}

/// One bucket. It does not store its [`Rate`]: a table of many buckets
/// with one rate keeps it once.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TokenBucket {
    allowance: u64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub(crate) fn full(rate: Rate, now: Instant) -> Self {
        TokenBucket {
            allowance: rate.full,
            last: now,
        }
    }

    /// Refills for the time since the last call, then takes one token;
    /// false (and nothing taken) when there is none.
    pub(crate) fn take(&mut self, rate: Rate, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_nanos();
        self.allowance = (u128::from(self.allowance) + elapsed).min(u128::from(rate.full)) as u64;
        self.last = now;
        match self.allowance.checked_sub(rate.nanos_per_token) {
            Some(left) => {
                self.allowance = left;
                true
            }
            None => false,
        }
    }

    /// Whether it would be full by `now`: a table may then forget it, as a
    /// new full bucket is the same.
    pub(crate) fn full_by(&self, rate: Rate, now: Instant) -> bool {
        u128::from(self.allowance) + now.saturating_duration_since(self.last).as_nanos()
            >= u128::from(rate.full)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_burst_then_the_rate() {
        let rate = Rate::per_second(10, 20);
        let t0 = Instant::now();
        let mut b = TokenBucket::full(rate, t0);
        assert_eq!((0..50).filter(|_| b.take(rate, t0)).count(), 20);
        assert!(!b.full_by(rate, t0 + Duration::from_millis(1999)));
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!((0..50).filter(|_| b.take(rate, t1)).count(), 10);
        // A clock that goes back refills nothing.
        assert!(!b.take(rate, t0));
        assert!(b.full_by(rate, t1 + Duration::from_secs(2)));
    }
}
