//! Counters shared between the packet path and the telemetry exporter.
//!
//! Counters are plain atomics: the packet path bumps them without locks or
//! allocation, and `telemetry` reads them when `/metrics` is scraped. The
//! one exception is a peer's endpoint, a `Mutex` that the packet path
//! locks only when the endpoint changes (first contact, roaming), not per
//! packet.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Why a packet was dropped. Each reason is one label value of
/// `promgate_packets_dropped_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Not a WireGuard message, or truncated.
    Malformed,
    /// A handshake initiation from a key that is not a configured peer.
    UnknownPeer,
    /// Failed MAC, AEAD tag, replay or timestamp checks, or unknown receiver index.
    Unauthenticated,
    /// Handshake refused under load without a valid cookie (a cookie reply was sent).
    UnderLoad,
    /// Handshake with a valid cookie, under load, beyond its source's token
    /// bucket ([`crate::peer::HANDSHAKE_RATE`] per second).
    HandshakeRateLimited,
    /// Decrypted, but the inner source is outside the peer's AllowedIPs.
    SpoofedSource,
    /// Addressed to something other than the gateway's own tunnel address.
    WrongDestination,
    /// Not TCP to a served port and not ICMP echo.
    ForbiddenProtocol,
    /// TCP to a port that is not served.
    ForbiddenPort,
    /// A new connection beyond the per-peer or total limit.
    ConnectionLimit,
    /// A new connection while the peer already has
    /// [`crate::netstack::MAX_HALF_OPEN_PER_PEER`] handshakes unfinished.
    HalfOpenLimit,
    /// A new connection refused because 90% of the total is in use and the
    /// peer holds more than an equal share of it.
    FairShare,
    /// A new connection whose minimum buffers do not fit in the memory
    /// budget (`gateway.tcp_memory_budget`).
    MemoryBudget,
    /// A SYN announcing an MSS below 536 bytes: served, it would cost up to
    /// 30 times the datagrams (and CPU) per byte.
    TinyMss,
    /// The inner IP packet does not parse (or is a fragment).
    MalformedInner,
    /// An outgoing packet whose destination belongs to no peer.
    NoRoute,
    /// The UDP socket could not take the datagram (send buffer full).
    SendFailed,
    /// A data datagram over its session's share of a turn
    /// ([`crate::ingress::PER_SESSION_TURN`]) when the queue of datagrams
    /// put aside for the next turn was full.
    IngressShare,
}

impl DropReason {
    pub const ALL: [DropReason; 18] = [
        DropReason::Malformed,
        DropReason::UnknownPeer,
        DropReason::Unauthenticated,
        DropReason::UnderLoad,
        DropReason::HandshakeRateLimited,
        DropReason::SpoofedSource,
        DropReason::WrongDestination,
        DropReason::ForbiddenProtocol,
        DropReason::ForbiddenPort,
        DropReason::ConnectionLimit,
        DropReason::HalfOpenLimit,
        DropReason::FairShare,
        DropReason::MemoryBudget,
        DropReason::TinyMss,
        DropReason::MalformedInner,
        DropReason::NoRoute,
        DropReason::SendFailed,
        DropReason::IngressShare,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Malformed => "malformed",
            DropReason::UnknownPeer => "unknown_peer",
            DropReason::Unauthenticated => "unauthenticated",
            DropReason::UnderLoad => "under_load",
            DropReason::HandshakeRateLimited => "handshake_rate_limited",
            DropReason::SpoofedSource => "spoofed_source",
            DropReason::WrongDestination => "wrong_destination",
            DropReason::ForbiddenProtocol => "forbidden_protocol",
            DropReason::ForbiddenPort => "forbidden_port",
            DropReason::ConnectionLimit => "connection_limit",
            DropReason::HalfOpenLimit => "half_open_limit",
            DropReason::FairShare => "fair_share",
            DropReason::MemoryBudget => "memory_budget",
            DropReason::TinyMss => "tiny_mss",
            DropReason::MalformedInner => "malformed_inner",
            DropReason::NoRoute => "no_route",
            DropReason::SendFailed => "send_failed",
            DropReason::IngressShare => "ingress_share",
        }
    }
}

/// Gateway-wide counters.
#[derive(Debug, Default)]
pub struct Stats {
    drops: [AtomicU64; DropReason::ALL.len()],
    pub cookie_replies: AtomicU64,
    pub reloads_refused: AtomicU64,
    pub reloads_applied: AtomicU64,
    pub upstream_errors: AtomicU64,
    /// Requests answered 503 after waiting for a place among the upstream
    /// requests in flight.
    pub upstream_queue_timeouts: AtomicU64,
    pub tcp_connections_accepted: AtomicU64,
    pub tcp_connections_open: AtomicU64,
    /// Loss recovery of tunnel TCP connections, added when each closes.
    pub tcp_retransmitted_segments: AtomicU64,
    pub tcp_rtos: AtomicU64,
    pub tcp_fast_recoveries: AtomicU64,
    pub tcp_tail_loss_probes: AtomicU64,
    /// Bytes of tunnel TCP buffers in use (minimums and growth), growth
    /// alone, and the budget (a gauge each).
    pub tcp_buffer_bytes: AtomicU64,
    pub tcp_buffer_growth_bytes: AtomicU64,
    pub tcp_buffer_budget_bytes: AtomicU64,
}

impl Stats {
    pub fn drop_packet(&self, reason: DropReason) {
        self.drops[reason as usize].fetch_add(1, Relaxed);
    }

    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.drops[reason as usize].load(Relaxed)
    }
}

/// Per-peer counters; the `Arc` outlives the peer's removal so a scrape in
/// flight never sees a dangling peer.
#[derive(Debug, Default)]
pub struct PeerStats {
    pub rx_bytes: AtomicU64,
    pub tx_bytes: AtomicU64,
    pub handshakes: AtomicU64,
    /// Unix time in seconds of the last completed handshake, 0 if none.
    pub last_handshake_unix: AtomicU64,
    /// Latest authenticated endpoint, for `promgate status`. Behind a lock
    /// because a socket address is not one atomic word; written only when it
    /// changes.
    pub endpoint: std::sync::Mutex<Option<std::net::SocketAddr>>,
}

impl PeerStats {
    pub(crate) fn add_rx(&self, n: usize) {
        self.rx_bytes.fetch_add(n as u64, Relaxed);
    }
    pub(crate) fn add_tx(&self, n: usize) {
        self.tx_bytes.fetch_add(n as u64, Relaxed);
    }
}
