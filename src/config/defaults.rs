//! Every default value of the configuration, named, in one place.
//!
//! Validation, the command line, the quickstart and `peer add` read their
//! defaults from here, so a default changes in one line. Bounds that a
//! configured value must stay within live here too, beside the default they
//! bound.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::ops::RangeInclusive;
use std::time::Duration;

/// Where the config lives when neither `--config` nor `$PROMGATE_CONFIG` says.
pub(crate) const DEFAULT_CONFIG_PATH: &str = "/etc/promgate/promgate.toml";

/// The Prometheus a gateway in Kubernetes most likely fronts.
pub(crate) const DEFAULT_UPSTREAM: &str = "http://prometheus.default.svc.cluster.local";

/// WireGuard's customary UDP port, the one wg-quick users expect.
pub(crate) const DEFAULT_LISTEN_PORT: u16 = 51820;

/// 1420 is wg-quick's default: 1500 minus the 80 bytes of IPv6+UDP+WireGuard.
pub(crate) const DEFAULT_MTU: u16 = 1420;

/// The MTUs accepted: IPv6 needs at least 1280, and 9000 is a jumbo frame.
pub(crate) const MTU_RANGE: RangeInclusive<u16> = 1280..=9000;

/// TCP ports served inside the tunnel: plain HTTP, so a browser needs no port.
pub(crate) const DEFAULT_HTTP_PORTS: [u16; 1] = [80];

/// The request header that carries the authenticated peer's name upstream
/// (lowercase, as `http::HeaderName::from_static` requires).
pub(crate) const DEFAULT_IDENTITY_HEADER: &str = "x-promgate-peer";

/// Time to wait for the upstream's response headers before answering 504,
/// so a hung upstream does not hold a tunnel connection forever.
pub(crate) const DEFAULT_UPSTREAM_TIMEOUT: Duration = Duration::from_secs(120);

/// A tunnel TCP connection with no traffic for this long is closed, so
/// clients that vanish without a FIN do not hold connection slots forever.
pub(crate) const DEFAULT_TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// TCP connections one peer may hold inside the tunnel: an eighth of the
/// total, so one peer cannot take the whole budget from the others.
pub(crate) const DEFAULT_MAX_CONNECTIONS_PER_PEER: usize = 128;

/// TCP connections inside the tunnel, all peers together. Each starts with
/// 32 KiB of buffers, so 1,024 of them fill half of the default memory
/// budget (`check` refuses a total whose minimums need more than half).
pub(crate) const DEFAULT_MAX_CONNECTIONS: usize = 1024;

/// Bytes all tunnel TCP buffers may take together: connections' minimum
/// buffers, and the send buffers that grow toward a long path's
/// bandwidth-delay product (at most half of it). 64 MiB leaves the rest
/// of the shipped 128 Mi pod limit to the process.
pub const DEFAULT_TCP_MEMORY_BUDGET: usize = 64 * 1024 * 1024;
/// The budgets accepted: at least one connection's minimum buffers twice.
pub(crate) const TCP_MEMORY_BUDGET_RANGE: RangeInclusive<usize> =
    1024 * 1024..=16 * 1024 * 1024 * 1024;
/// Largest send buffer one connection may grow to (the WAN sender).
pub const MAX_SEND_BUFFER: usize = 4 * 1024 * 1024;
/// Requests one peer may have waiting on the upstream at once: a browser's
/// dashboard sends a handful together; one peer cannot take the upstream's
/// whole query concurrency.
pub const DEFAULT_MAX_UPSTREAM_REQUESTS_PER_PEER: usize =
    promgate_core::access::DEFAULT_UPSTREAM_REQUESTS_PER_PEER;
/// Requests all peers together may have waiting on the upstream: below
/// Prometheus's own `--query.max-concurrency` (20), so that its queue, which
/// serves nobody fairly, stays empty.
pub const DEFAULT_MAX_UPSTREAM_REQUESTS: usize = 16;

/// Default send buffer per connection, which is also the most a connection
/// has in flight. smoltcp has no SACK, so a burst that overruns the client
/// (a wireguard-go client's UDP socket buffer, in the benchmark) costs a
/// retransmission timeout. Measured on the 2-core lab (MB/s, client drops):
/// 32 KiB 40/0, 64 KiB 50/0, 96 KiB 52/2, 128 KiB 19/38, 512 KiB 13/258.
/// Throughput is at most buffer / RTT, yet a larger buffer does not help on
/// an internet path either (4 MiB: 0.89 MB/s at RTT 50 ms, 64 KiB: 0.93),
/// for the same reason: bursts, drops, and recovery without SACK.
pub const DEFAULT_TCP_SEND_BUFFER: usize = 64 * 1024;
/// smoltcp's own sender until the WAN sender (SACK, RACK-TLP, pacing, BBR)
/// is measured ahead of it on every path (docs/wan.md).
pub const DEFAULT_TCP_SENDER: promgate_core::gateway::TcpSender =
    promgate_core::gateway::TcpSender::Classic;

/// The send buffers accepted: below 16 KiB a connection crawls; above
/// 16 MiB a thousand connections would hold gigabytes.
pub(crate) const TCP_SEND_BUFFER_RANGE: RangeInclusive<usize> = 16 * 1024..=16 * 1024 * 1024;

/// Handshakes per second (all peers together) above which cookies are
/// demanded, unless the config says otherwise. A responder handshake costs
/// about 0.37 ms of CPU on the development VM (`cargo bench`, README), so
/// 1,000 per second caps what an initiation flood can take at about 40% of
/// one core; a flood beyond it costs only cookie replies (µs each).
pub const DEFAULT_HANDSHAKE_RATE_LIMIT: u64 = 1000;

/// The admin server's port (`/metrics`, `/healthz`, `/readyz`).
pub(crate) const DEFAULT_ADMIN_PORT: u16 = 9586;

/// The admin server listens on every interface by default: Prometheus and
/// the kubelet reach it over the cluster network.
pub(crate) const DEFAULT_ADMIN_LISTEN: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), DEFAULT_ADMIN_PORT);

/// The control endpoint behind `promgate status` and `peer list`: loopback
/// only, because peer names and endpoints are not for the cluster network.
pub(crate) const DEFAULT_CONTROL_LISTEN: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9587);

/// `/readyz` fails once the upstream's readiness probe has failed for this
/// long; a shorter outage does not take the gateway out of its Service.
pub(crate) const DEFAULT_UPSTREAM_UNREADY_AFTER: Duration = Duration::from_secs(60);
