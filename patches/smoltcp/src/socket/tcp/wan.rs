//! promgate patch: WAN-mode loss recovery for the TCP sender.
use core::fmt;

/// The WAN-mode sender state of one connection.
pub(super) struct Recovery {}

impl Recovery {
    pub(super) fn new() -> Recovery {
        Recovery {}
    }
}

impl fmt::Debug for Recovery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Recovery").finish_non_exhaustive()
    }
}
