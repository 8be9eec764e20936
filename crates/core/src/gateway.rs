//! The gateway core: datagram in, datagrams and TCP streams out.
//!
//! This is the whole data path without any I/O: the async shell (the main
//! crate's driver) hands it datagrams with the time, and it answers
//! through a [`Transmit`] sink. In-process tests drive it the same way.
//!
//! ```text
//! UDP datagram -> peer::PeerTable (boringtun: authenticate, decrypt)
//!              -> route::check_inbound (AllowedIPs, destination, port)
//!              -> netstack::Netstack (smoltcp TCP) -> pipe::Pipe -> (shell) proxy
//! ```

use crate::access::PeerAccess;
use crate::ingress::{Admit, IngressShares};
use crate::keys::PrivateKey;
use crate::netstack::{Netstack, NewConnection, RecoveryTotals};
use crate::peer::{Decapsulated, Encapsulated, PeerDiff, PeerTable};
use crate::peer_config::PeerConfig;
use crate::pipe::Pipe;
use crate::role::Role;
use crate::route::{self, Destinations};
use crate::scope::Scope;
use crate::stats::{DropReason, PeerStats, Stats};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::task::Waker;
use std::time::{Duration, Instant};

pub use crate::netstack::{Limits, TcpSender};

/// How often boringtun's timers run and the rate limiter is reset.
/// 250 ms is what boringtun's own device uses.
pub(crate) const TICK: Duration = Duration::from_millis(250);

/// Largest datagram we handle: a jumbo inner packet plus WireGuard overhead.
pub const MAX_DATAGRAM: usize = 65535;

/// Where the core sends datagrams. The shell writes them to the UDP socket.
pub trait Transmit {
    fn send_datagram(&mut self, dst: SocketAddr, datagram: &[u8]);
}

impl Transmit for Vec<(SocketAddr, Vec<u8>)> {
    fn send_datagram(&mut self, dst: SocketAddr, datagram: &[u8]) {
        self.push((dst, datagram.to_vec()));
    }
}

/// Who is on the other end of an accepted tunnel connection.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// The peer's rules, read afresh for every request on the connection.
    pub access: Arc<PeerAccess>,
    /// The peer's tunnel address and port.
    pub remote: SocketAddr,
    pub local_port: u16,
}

/// A snapshot of one peer for `status` and metrics.
#[derive(Debug, Clone)]
pub struct PeerSnapshot {
    pub name: Arc<str>,
    pub public_key: [u8; 32],
    pub allowed_ips: Vec<ipnet::IpNet>,
    pub role: Role,
    pub scope: Option<Scope>,
    pub stats: Arc<PeerStats>,
}

/// What the core needs of the `[gateway]` table, already validated.
#[derive(Debug, Clone)]
pub struct Settings {
    pub private_key: PrivateKey,
    /// The gateway's tunnel addresses with their prefixes.
    pub addresses: Vec<ipnet::IpNet>,
    pub mtu: u16,
    /// Tunnel ports on which TCP is accepted: every upstream's.
    pub http_ports: Vec<u16>,
    pub limits: Limits,
    /// Handshakes per second before cookie replies start.
    pub handshake_rate_limit: u64,
    /// Each peer's share of each upstream's concurrency, carried in its
    /// [`PeerAccess`].
    pub upstream_shares: crate::access::UpstreamShares,
}

/// The shell's clock and wake-up, handed in once: the core reads no clock
/// of its own and asks for a poll through `poll_request`.
#[derive(Debug, Clone)]
pub struct Clock {
    pub poll_request: Waker,
    /// Seeds the TCP initial sequence numbers.
    pub seed: u64,
    /// A monotonic instant and the Unix time at that instant.
    pub now: Instant,
    pub unix_now: Duration,
}

pub struct Gateway {
    peers: PeerTable,
    netstack: Netstack,
    gateway_addrs: Vec<IpAddr>,
    http_ports: Vec<u16>,
    stats: Arc<Stats>,
    /// Decryption and encryption scratch space, reused for every packet.
    rx_buf: Box<[u8]>,
    tx_buf: Box<[u8]>,
    last_tick: Option<Instant>,
    /// Each session's share of a turn before decryption (see [`crate::ingress`]).
    ingress: IngressShares,
    /// A monotonic instant and the Unix time at that instant, both from
    /// the caller: the core reads no clock of its own.
    clock_base: (Instant, Duration),
}

impl Gateway {
    pub fn new(settings: &Settings, peers: &[PeerConfig], stats: Arc<Stats>, clock: Clock) -> Self {
        stats
            .tcp_buffer_budget_bytes
            .store(settings.limits.memory_budget as u64, Relaxed);
        Gateway {
            peers: PeerTable::new(
                settings.private_key.clone(),
                peers,
                settings.handshake_rate_limit,
                settings.upstream_shares,
            ),
            netstack: Netstack::new(
                &settings.addresses,
                usize::from(settings.mtu),
                settings.limits,
                clock.seed,
                clock.poll_request,
                clock.now,
            ),
            clock_base: (clock.now, clock.unix_now),
            gateway_addrs: settings.addresses.iter().map(|n| n.addr()).collect(),
            http_ports: settings.http_ports.clone(),
            stats,
            rx_buf: vec![0u8; MAX_DATAGRAM].into_boxed_slice(),
            tx_buf: vec![0u8; MAX_DATAGRAM].into_boxed_slice(),
            last_tick: None,
            ingress: IngressShares::default(),
        }
    }

    /// Unix time at `now`, from the caller's clock base.
    fn unix_time(&self, now: Instant) -> Duration {
        let (base, unix) = self.clock_base;
        unix + now.saturating_duration_since(base)
    }

    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    /// Handles one UDP datagram from `src`, or puts it aside for the next
    /// turn (the next [`Self::poll`]) when its session has had its share of
    /// this one.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        src: SocketAddr,
        datagram: &[u8],
        out: &mut impl Transmit,
    ) {
        match self.ingress.admit(src, datagram) {
            Admit::Now => self.process_datagram(now, src, datagram, out),
            Admit::Deferred => {}
            Admit::Dropped => self.stats.drop_packet(DropReason::IngressShare),
        }
    }

    fn process_datagram(
        &mut self,
        now: Instant,
        src: SocketAddr,
        datagram: &[u8],
        out: &mut impl Transmit,
    ) {
        let unix = self.unix_time(now);
        match self
            .peers
            .decapsulate(now, src, datagram, unix, &mut self.rx_buf)
        {
            Decapsulated::Dropped(reason) => self.stats.drop_packet(reason),
            Decapsulated::CookieReply(reply) => {
                self.stats.cookie_replies.fetch_add(1, Relaxed);
                self.stats.drop_packet(DropReason::UnderLoad);
                out.send_datagram(src, reply);
            }
            Decapsulated::Nothing => {}
            Decapsulated::Reply(id, reply) => {
                out.send_datagram(src, reply);
                while let Some((dst, queued)) = self.peers.flush_queued(id, &mut self.rx_buf) {
                    out.send_datagram(dst, queued);
                }
            }
            Decapsulated::Inner(id, packet) => {
                let destinations = Destinations {
                    gateway_addrs: &self.gateway_addrs,
                    http_ports: &self.http_ports,
                };
                let peers = &self.peers;
                let verdict = route::check_inbound(&destinations, id, packet, |a| peers.route(a));
                match verdict {
                    Ok(kind) => {
                        if let Err(reason) = self.netstack.receive(now, id, packet, kind) {
                            self.stats.drop_packet(reason);
                        }
                    }
                    Err(reason) => self.stats.drop_packet(reason),
                }
            }
        }
    }

    /// Runs the netstack and sends what it produced. Call after a batch of
    /// datagrams, when a stream signalled, and when [`Self::poll_at`] is due.
    pub fn poll(&mut self, now: Instant, out: &mut impl Transmit) {
        // A new turn: what was put aside in the last one goes first.
        if self.ingress.has_deferred() {
            let mut shares = std::mem::take(&mut self.ingress);
            shares.next_turn(|src, d| self.process_datagram(now, src, d, out));
            self.ingress = shares;
        } else {
            self.ingress.next_turn(|_, _| {});
        }
        if self
            .last_tick
            .is_none_or(|t| now.saturating_duration_since(t) >= TICK)
        {
            self.last_tick = Some(now);
            self.peers
                .tick(now, &mut self.tx_buf, |dst, d| out.send_datagram(dst, d));
        }
        self.netstack.poll(now);
        let (in_use, grown) = self.netstack.buffer_use();
        self.stats.tcp_buffer_bytes.store(in_use as u64, Relaxed);
        self.stats
            .tcp_buffer_growth_bytes
            .store(grown as u64, Relaxed);
        let r = self.netstack.take_recovery();
        if r != RecoveryTotals::default() {
            let s = &self.stats;
            s.tcp_retransmitted_segments
                .fetch_add(r.retransmitted_segments, Relaxed);
            s.tcp_rtos.fetch_add(r.rtos, Relaxed);
            s.tcp_fast_recoveries.fetch_add(r.fast_recoveries, Relaxed);
            s.tcp_tail_loss_probes
                .fetch_add(r.tail_loss_probes, Relaxed);
        }
        let peers = &mut self.peers;
        let stats = &self.stats;
        let tx_buf = &mut self.tx_buf;
        self.netstack.drain_transmit(|packet| {
            let Some(dst) = inner_destination(packet) else {
                stats.drop_packet(DropReason::NoRoute);
                return;
            };
            let Some(id) = peers.route(dst) else {
                stats.drop_packet(DropReason::NoRoute);
                return;
            };
            match peers.encapsulate(id, packet, tx_buf) {
                Encapsulated::Datagram(endpoint, datagram) => out.send_datagram(endpoint, datagram),
                Encapsulated::Queued => {}
                Encapsulated::NoSession => stats.drop_packet(DropReason::NoRoute),
            }
        });
    }

    /// When [`Self::poll`] must run next at the latest.
    pub fn poll_at(&mut self, now: Instant) -> Instant {
        if self.ingress.has_deferred() {
            return now;
        }
        let tick = self.last_tick.map_or(now, |t| t + TICK);
        match self.netstack.poll_at(now) {
            Some(t) => t.min(tick),
            None => tick,
        }
    }

    /// Connections ready to be served, with who is behind them: the
    /// netstack's newly established ones whose source still routes to the
    /// peer that opened them. Only these count as accepted.
    pub fn take_accepted(&mut self) -> Vec<(ConnInfo, Arc<Pipe>)> {
        let peers = &self.peers;
        let established: Vec<NewConnection> = self.netstack.take_established().collect();
        let mut ready = Vec::with_capacity(established.len());
        let mut refused = Vec::new();
        for c in established {
            // Identity comes from the connection's actual source address,
            // routed through AllowedIPs; it must also be the peer whose
            // tunnel carried the handshake.
            let owner = peers.route(c.remote.ip());
            let Some(peer) = owner.filter(|o| *o == c.peer).and_then(|o| peers.get(o)) else {
                self.stats.drop_packet(DropReason::SpoofedSource);
                refused.push((c.remote, c.local_port));
                continue;
            };
            self.stats.tcp_connections_accepted.fetch_add(1, Relaxed);
            ready.push((
                ConnInfo {
                    access: peer.access.clone(),
                    remote: c.remote,
                    local_port: c.local_port,
                },
                c.pipe,
            ));
        }
        for (remote, port) in refused {
            self.netstack.abort_connection(remote, port);
        }
        self.stats
            .tcp_connections_open
            .store(self.netstack.connection_count() as u64, Relaxed);
        ready
    }

    /// Replaces the peer set. Removed peers lose their connections at once:
    /// each gets a TCP reset through its tunnel while it can still be
    /// routed, then its session is dropped.
    pub fn apply_peers(
        &mut self,
        now: Instant,
        peers: &[PeerConfig],
        out: &mut impl Transmit,
    ) -> PeerDiff {
        let leaving = self.peers.removals_for(peers);
        if !leaving.is_empty() {
            for id in &leaving {
                self.netstack.abort_peer(*id);
            }
            self.poll(now, out);
        }
        self.peers.apply(peers)
    }

    /// Resets every tunnel connection (end of the shutdown grace period).
    pub fn abort_connections(&mut self) {
        self.netstack.abort_all();
    }

    pub fn open_connections(&self) -> usize {
        self.netstack.connection_count()
    }

    pub fn snapshot(&self) -> Vec<PeerSnapshot> {
        self.peers
            .iter()
            .map(|(_, p)| PeerSnapshot {
                name: p.name.clone(),
                public_key: p.config.public_key,
                allowed_ips: p.config.allowed_ips.clone(),
                role: p.config.role,
                scope: p.config.scope.clone(),
                stats: p.stats.clone(),
            })
            .collect()
    }
}

fn inner_destination(packet: &[u8]) -> Option<IpAddr> {
    match packet.first()? >> 4 {
        4 if packet.len() >= 20 => Some(IpAddr::from(<[u8; 4]>::try_from(&packet[16..20]).ok()?)),
        6 if packet.len() >= 40 => Some(IpAddr::from(<[u8; 16]>::try_from(&packet[24..40]).ok()?)),
        _ => None,
    }
}
