//! The memory budget of tunnel TCP buffers: every connection's smoltcp and
//! pipe buffers are drawn from one configured amount, so that the caps on
//! connections cannot add up to more memory than the pod has.
//!
//! A connection reserves its minimum buffers when its SYN arrives; a SYN
//! that does not fit is dropped (the client retries), as at the connection
//! limit. Send buffers may then grow toward what a long fat path needs
//! ([`BufferBudget::grow`]), but growth as a whole may use at most half of
//! the budget, so the minimum of a new connection always finds room while
//! the other half is free. A flow that cannot grow keeps its minimum and is
//! never failed. Pure accounting: the netstack allocates and frees.

/// Bytes reserved for buffers, against a limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BufferBudget {
    limit: usize,
    /// Minimum buffers of open connections.
    reserved: usize,
    /// Growth beyond those minimums.
    grown: usize,
}

impl BufferBudget {
    pub fn new(limit: usize) -> Self {
        BufferBudget {
            limit,
            reserved: 0,
            grown: 0,
        }
    }

    /// Takes a new connection's minimum buffers, if they fit.
    pub fn reserve(&mut self, bytes: usize) -> bool {
        if self.in_use().saturating_add(bytes) > self.limit {
            return false;
        }
        self.reserved += bytes;
        true
    }

    /// Gives back a closed connection's minimum buffers.
    pub fn release(&mut self, bytes: usize) {
        self.reserved = self.reserved.saturating_sub(bytes);
    }

    /// Takes `bytes` more for a growing buffer, if growth stays within half
    /// of the limit and the total within the limit.
    pub fn grow(&mut self, bytes: usize) -> bool {
        let growth_ok = self.grown.saturating_add(bytes) <= self.limit / 2;
        if !growth_ok || self.in_use().saturating_add(bytes) > self.limit {
            return false;
        }
        self.grown += bytes;
        true
    }

    /// Gives back growth (a buffer shrank, or its connection closed).
    pub fn shrink(&mut self, bytes: usize) {
        self.grown = self.grown.saturating_sub(bytes);
    }

    pub fn in_use(&self) -> usize {
        self.reserved + self.grown
    }

    pub fn grown(&self) -> usize {
        self.grown
    }

    pub fn limit(&self) -> usize {
        self.limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimums_fill_the_whole_budget_and_growth_only_half() {
        let mut b = BufferBudget::new(1000);
        assert!(b.grow(500));
        assert!(!b.grow(1), "growth past half the budget");
        assert!(b.reserve(500));
        assert!(!b.reserve(1), "a minimum past the limit");
        b.shrink(500);
        assert!(b.reserve(500), "freed growth is room for minimums");
        assert_eq!(b.in_use(), 1000);
        assert!(!b.grow(1), "growth past the limit");
        b.release(300);
        assert!(b.grow(300));
        assert_eq!((b.in_use(), b.grown()), (1000, 300));
    }

    #[test]
    fn giving_back_more_than_was_taken_never_wraps() {
        let mut b = BufferBudget::new(100);
        b.release(10);
        b.shrink(10);
        assert_eq!(b.in_use(), 0);
        assert!(b.reserve(100));
    }
}
