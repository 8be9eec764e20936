use crate::time::Instant;

use super::RttEstimator;

pub(super) mod no_control;

#[cfg(feature = "socket-tcp-cubic")]
pub(super) mod cubic;

#[cfg(feature = "socket-tcp-reno")]
pub(super) mod reno;

#[cfg(feature = "socket-tcp-bbr")]
pub(super) mod bbr;

/// promgate patch: what one ACK told the WAN-mode sender, for a model-based
/// controller (BBR). The delivery-rate part follows
/// draft-cheng-iccrg-delivery-rate-estimation: the rate is measured from the most
/// recently sent record that this ACK newly delivered.
#[derive(Debug, Clone, Copy, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub(super) struct RateSample {
    /// Bytes newly delivered (cumulatively ACKed or SACKed) by this ACK.
    pub acked: usize,
    /// Bytes newly marked lost while processing this ACK.
    pub lost: usize,
    /// The connection's delivered-bytes counter after this ACK.
    pub delivered_total: u64,
    /// The delivered counter when the sampled record was (last) sent; None when
    /// this ACK delivered nothing.
    pub prior_delivered: Option<u64>,
    /// Bytes delivered over the sample's interval, and that interval in µs:
    /// the longer of the send and ACK intervals. None when there is no valid
    /// sample (no record delivered, or an interval shorter than the min RTT).
    pub rate: Option<(u64, u64)>,
    /// The sampled record was sent while the sender was application-limited
    /// (including a send buffer full of unacknowledged data).
    pub app_limited: bool,
    /// RTT of the sampled record in µs, if it was sent only once (Karn).
    pub rtt_us: Option<u32>,
    /// Pipe (RFC 6675) before and after this ACK.
    pub prior_inflight: usize,
    pub inflight: usize,
    /// The sender is in loss recovery (fast recovery or after an RTO).
    pub in_recovery: bool,
}

#[allow(unused_variables)]
pub(super) trait Controller {
    /// Returns the number of bytes that can be sent.
    fn window(&self) -> usize;

    /// Set the remote window size.
    fn set_remote_window(&mut self, remote_window: usize) {}

    fn on_ack(&mut self, now: Instant, len: usize, in_flight: usize, rtt: &RttEstimator) {}

    /// Fired on each duplicate ack received, after `on_loss` has been called.
    fn on_dup_ack(&mut self, now: Instant, len: usize, in_flight: usize) {}

    /// Fired on a retransmission timeout.
    fn on_rto(&mut self, now: Instant, in_flight: usize) {}

    /// Fired after an inferred loss via three duplicate acks.
    fn on_loss(&mut self, now: Instant, in_flight: usize) {}

    fn pre_transmit(&mut self, now: Instant) {}

    fn post_transmit(&mut self, now: Instant, len: usize) {}

    /// Set the maximum segment size.
    fn set_mss(&mut self, mss: usize) {}

    /// promgate patch: WAN mode (see `Socket::set_wan_mode`). The socket then passes
    /// the effective MSS to `set_mss`, `len` in `on_ack` counts bytes delivered
    /// (cumulatively ACKed or newly SACKed), and `on_loss` is called once per
    /// recovery episode with the socket sending while its pipe is below `window()`.
    /// Controllers use it for an initial window of 10 segments (RFC 6928), slow
    /// start by bytes delivered up to 2 SMSS per ACK (RFC 3465), and no window
    /// inflation on entering recovery (RFC 6675 sets cwnd = ssthresh).
    fn set_wan_mode(&mut self, enabled: bool) {}

    /// promgate patch: whether cwnd is below ssthresh, for the pacer's gain.
    fn in_slow_start(&self) -> bool {
        false
    }

    /// promgate patch: WAN mode calls this once per acceptable ACK, after
    /// `on_ack` (which it skips during fast recovery). Loss-based controllers
    /// ignore it.
    fn on_rate_sample(&mut self, now: Instant, sample: &RateSample) {}

    /// promgate patch: the pacing rate in bytes/s if the controller sets one
    /// (BBR); otherwise WAN mode paces at a multiple of cwnd/SRTT.
    fn pacing_rate(&self) -> Option<u64> {
        None
    }
}

/// RFC 6928 initial window: min(10 MSS, max(2 MSS, 14600 bytes)).
#[cfg(any(
    feature = "socket-tcp-cubic",
    feature = "socket-tcp-reno",
    feature = "socket-tcp-bbr"
))]
pub(super) fn initial_window(mss: usize) -> usize {
    (10 * mss).min((2 * mss).max(14600))
}

// promgate patch: BBR's state (a 10-round bandwidth filter) is a few hundred
// bytes; boxing it would need `alloc`, and a socket carries more than that anyway.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub(super) enum AnyController {
    None(no_control::NoControl),

    #[cfg(feature = "socket-tcp-reno")]
    Reno(reno::Reno),

    #[cfg(feature = "socket-tcp-cubic")]
    Cubic(cubic::Cubic),

    #[cfg(feature = "socket-tcp-bbr")]
    Bbr(bbr::Bbr),
}

impl AnyController {
    /// Create a new congestion controller.
    /// `AnyController::new()` selects the best congestion controller based on the features.
    ///
    /// - If `socket-tcp-cubic` feature is enabled, it will use `Cubic`.
    /// - If `socket-tcp-reno` feature is enabled, it will use `Reno`.
    /// - If both `socket-tcp-cubic` and `socket-tcp-reno` features are enabled, it will use `Cubic`.
    ///    - `Cubic` is more efficient regarding throughput.
    ///    - `Reno` is more conservative and is suitable for low-power devices.
    /// - If no congestion controller is available, it will use `NoControl`.
    ///
    /// Users can also select a congestion controller manually by [`super::Socket::set_congestion_control()`]
    /// method at run-time.
    #[allow(unreachable_code)]
    #[inline]
    pub fn new() -> Self {
        #[cfg(feature = "socket-tcp-cubic")]
        {
            return AnyController::Cubic(cubic::Cubic::new());
        }

        #[cfg(feature = "socket-tcp-reno")]
        {
            return AnyController::Reno(reno::Reno::new());
        }

        AnyController::None(no_control::NoControl)
    }

    #[inline]
    pub fn inner_mut(&mut self) -> &mut dyn Controller {
        match self {
            AnyController::None(n) => n,

            #[cfg(feature = "socket-tcp-reno")]
            AnyController::Reno(r) => r,

            #[cfg(feature = "socket-tcp-cubic")]
            AnyController::Cubic(c) => c,

            #[cfg(feature = "socket-tcp-bbr")]
            AnyController::Bbr(b) => b,
        }
    }

    #[inline]
    pub fn inner(&self) -> &dyn Controller {
        match self {
            AnyController::None(n) => n,

            #[cfg(feature = "socket-tcp-reno")]
            AnyController::Reno(r) => r,

            #[cfg(feature = "socket-tcp-cubic")]
            AnyController::Cubic(c) => c,

            #[cfg(feature = "socket-tcp-bbr")]
            AnyController::Bbr(b) => b,
        }
    }
}
