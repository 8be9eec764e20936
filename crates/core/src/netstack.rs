//! The userspace TCP/IP stack: smoltcp terminating the tunnel's TCP.
//!
//! One smoltcp `Interface` holds the gateway's tunnel addresses. Inner
//! packets that passed [`crate::route::check_inbound`] are fed to it one at a
//! time, straight from the decryption buffer (no copy). Packets it emits are
//! queued in reusable buffers for the gateway to encrypt and send.
//!
//! smoltcp has no listen backlog: a listening socket becomes the connection.
//! So a fresh listening socket is created for each new SYN just before the
//! SYN is processed, which means concurrent SYNs from a browser are all
//! accepted, never reset.
//!
//! Identity invariant: between two calls into this module no socket is in
//! `Listen`. A listening socket matches any remote address, so a leftover
//! one would take the next peer's SYN while carrying the previous peer's
//! identity. A listener that did not take its SYN (SYN|FIN dropped by the
//! parser, a SYN then RST that sent the socket back to `Listen`) is removed
//! right after the segment that left it so. A connection is also handed out
//! only when its actual remote endpoint is the tuple it was opened for; the
//! gateway then derives the peer from that address (AllowedIPs), never from
//! which SYN created which socket.
//!
//! Bounds: connections per peer and in total (config), unfinished
//! handshakes per peer ([`MAX_HALF_OPEN_PER_PEER`]) and their lifetime
//! ([`HANDSHAKE_TIMEOUT`]), socket buffers (below), the transmit queue
//! ([`MAX_TX_QUEUE`]), an idle timeout, and a stall timeout
//! ([`STALL_TIMEOUT`]): while the gateway has data outstanding, only the
//! peer's acknowledgment of new data counts as progress, so a reader that
//! never reads cannot pin buffers by trickling bytes the other way.

use crate::budget::BufferBudget;
use crate::peer::PeerId;
use crate::pipe::{PIPE_MAX, PIPE_MIN, Pipe, PipeState, PumpRequests};
use crate::route::Admitted;
use crate::stats::DropReason;
use smoltcp::iface::{Config as IfaceConfig, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{Checksum, ChecksumCapabilities, Device, DeviceCapabilities, Medium};
use smoltcp::socket::tcp::{self, CongestionControl, State};
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Receive buffer per connection: requests are small, and the pump moves
/// what arrives to the pipe on every poll. Small, so that a thousand
/// connections cost little (issue 24).
const TCP_RX_BUFFER: usize = 8 * 1024;
/// Send buffer a connection starts with; it grows while it limits the
/// flight (see `Netstack::tune_buffers`).
const MIN_SEND_BUFFER: usize = 8 * 1024;
/// How long an ACK for a small segment waits for data to ride on. Short
/// next to the 200 ms minimum retransmission timeout of every client, and
/// far shorter than kernel TCP's 40 ms: a client that sends one request in
/// two small segments with Nagle on waits for this ACK once.
const ACK_DELAY: smoltcp::time::Duration = smoltcp::time::Duration::from_millis(5);
/// Packets waiting for encryption. Beyond this, smoltcp sees a full device
/// and holds back (TCP retransmits; nothing is lost silently).
pub(crate) const MAX_TX_QUEUE: usize = 1024;
/// Packets one peer's connections may emit in one poll before the other
/// peers' turn: egress goes round-robin by peer, so a peer with 128 busy
/// downloads gets the same share of a turn as a peer with one request, and
/// what is left of its share waits for the next poll, which comes at once
/// (after the driver has read what arrived meanwhile).
pub(crate) const EGRESS_PER_PEER_TURN: usize = 128;
/// How often every connection is visited, work or not: timeouts, and
/// grown buffers that have been idle. Between sweeps a poll visits only the
/// connections with work (see `Netstack::poll`).
const SWEEP_EVERY: Duration = Duration::from_millis(250);
/// A send buffer counts as full of data in flight (so it, not the
/// congestion window, limits the flight) when less than this is unsent.
const BUFFER_LIMITED_SLACK: usize = 2 * 1460;
/// How long a connection may stay half-open (SYN received, handshake not
/// completed). smoltcp has no such timeout, so without it one SYN that the
/// peer never follows up held a slot for the whole idle timeout.
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Unfinished handshakes one peer may have at once. A browser opens six or
/// so connections to a host at a time; a SYN flood is stopped here, before
/// it fills the peer's share of the connection limits.
pub(crate) const MAX_HALF_OPEN_PER_PEER: usize = 16;
/// Unfinished handshakes all peers together may have. Each holds its
/// smoltcp socket buffers (128 KiB at the defaults; its pipe buffers come
/// only with the completed handshake), so many peers' floods together stop
/// here: 128 of them hold 16 MiB at most.
pub(crate) const MAX_HALF_OPEN: usize = 128;
/// How long data the gateway sent may wait for the peer's acknowledgment of
/// anything new before the connection is reset. A slow download keeps
/// acknowledging and is never cut; a reader that stopped reading (a zero
/// window) is, whatever else it sends.
pub(crate) const STALL_TIMEOUT: Duration = Duration::from_secs(60);

/// A connection's minimum buffers: smoltcp's receive and send buffers and
/// the pipe's two, as it starts (32 KiB), whatever the limits.
pub const CONNECTION_BUFFERS: usize = TCP_RX_BUFFER + MIN_SEND_BUFFER + 2 * PIPE_MIN;

/// Limits on tunnel TCP state.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Bytes of send buffer per connection (the in-flight ceiling).
    pub send_buffer: usize,
    pub per_peer: usize,
    pub total: usize,
    pub idle_timeout: Duration,
    /// Which TCP sender the connections use.
    pub sender: TcpSender,
    /// Bytes all connections' buffers may take together (see [`crate::budget`]).
    pub memory_budget: usize,
    /// Largest send buffer one connection may grow to (WAN sender).
    pub max_send_buffer: usize,
}

impl Limits {
    /// A connection's minimum buffers ([`CONNECTION_BUFFERS`]).
    pub fn connection_buffers(&self) -> usize {
        CONNECTION_BUFFERS
    }

    /// Connections whose minimum buffers fit in half the budget (the other
    /// half is for growth), at most `total`: the effective total cap.
    pub fn budgeted_total(&self) -> usize {
        let fit = (self.memory_budget / 2) / self.connection_buffers().max(1);
        self.total.min(fit)
    }
}

/// How long grown buffers stay grown with nothing to send: a keep-alive
/// connection between two large responses keeps its window.
pub const BUFFER_IDLE_SHRINK: Duration = Duration::from_secs(1);

/// The TCP sender of tunnel connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TcpSender {
    /// smoltcp's own sender: CUBIC, duplicate-ACK fast retransmit, a 1 s
    /// minimum RTO and go-back-N after it.
    #[default]
    Classic,
    /// The vendored smoltcp's WAN mode (PATCHES.md): µs RTT and a 200 ms
    /// minimum RTO, an initial window of 10, a SACK scoreboard, RACK-TLP,
    /// an RTO that resends only what was lost, pacing, and BBR v1 with a
    /// delivery-rate sampler: loss is not its signal, so random loss on an
    /// internet path does not collapse the rate.
    Wan,
    /// WAN mode with CUBIC instead of BBR, for comparison.
    WanCubic,
}

/// Loss recovery of the connections that closed since the last
/// [`Netstack::take_recovery`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RecoveryTotals {
    pub retransmitted_segments: u64,
    pub rtos: u64,
    pub fast_recoveries: u64,
    pub tail_loss_probes: u64,
}

/// A connection that completed its handshake, for the HTTP side to serve.
pub(crate) struct NewConnection {
    pub(crate) peer: PeerId,
    pub(crate) remote: SocketAddr,
    pub(crate) local_port: u16,
    /// The connection's buffers; the shell wraps them in a stream.
    pub(crate) pipe: Arc<Pipe>,
}

struct Conn {
    peer: PeerId,
    tuple: (IpAddr, u16, u16),
    pipe: Arc<Pipe>,
    /// The handshake completed and the connection went to `established`,
    /// the list the gateway takes, checks and hands out as accepted.
    established: bool,
    progress: Progress,
    /// Budget this connection holds: its minimum buffers, and its send
    /// buffer's growth beyond the minimum.
    reserved: usize,
    grown: usize,
    /// Since when a grown send buffer has had nothing to send.
    drained_since: Option<Instant>,
    /// When smoltcp next needs this socket polled (a timer), as of the
    /// last visit; `None` while it waits for a packet or the application.
    poll_at: Option<Instant>,
    /// On `Netstack::queued`, for the next poll.
    queued: bool,
    /// On the work list of the poll being built (each connection is
    /// visited once per poll, whatever put it there).
    in_work: bool,
    /// The time of this connection's entry in `Netstack::timers`, if it
    /// has one: a timer that did not move is not pushed again.
    timer_entry: Option<Instant>,
}

/// What a connection's handshake, idle and stall timeouts count from.
struct Progress {
    /// When the SYN arrived.
    opened: Instant,
    /// Last time the peer sent data or acknowledged new data.
    last_progress: Instant,
    /// Since when the gateway has had data outstanding without the peer
    /// acknowledging anything new; `None` while nothing is outstanding.
    waiting_for_ack: Option<Instant>,
    /// `send_queue()` after the last pump: a smaller value later means
    /// the peer acknowledged bytes in between.
    unacked_after_pump: usize,
}

/// Outgoing packets, in buffers that are reused.
struct TxQueue {
    ready: VecDeque<Vec<u8>>,
    spare: Vec<Vec<u8>>,
}

impl TxQueue {
    fn take_buffer(&mut self, len: usize) -> Vec<u8> {
        let mut b = self.spare.pop().unwrap_or_default();
        b.clear();
        b.resize(len, 0);
        b
    }
}

/// The device smoltcp sees: at most one received packet, and the tx queue.
struct TunnelDevice<'a> {
    rx: Option<&'a [u8]>,
    tx: &'a mut TxQueue,
    mtu: usize,
}

struct RxOne<'a>(&'a [u8]);
struct TxOne<'a>(&'a mut TxQueue);

impl smoltcp::phy::RxToken for RxOne<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(self.0)
    }
}

impl smoltcp::phy::TxToken for TxOne<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut buf = self.0.take_buffer(len);
        let r = f(&mut buf);
        self.0.ready.push_back(buf);
        r
    }
}

impl Device for TunnelDevice<'_> {
    type RxToken<'b>
        = RxOne<'b>
    where
        Self: 'b;
    type TxToken<'b>
        = TxOne<'b>
    where
        Self: 'b;

    fn receive(&mut self, _: smoltcp::time::Instant) -> Option<(RxOne<'_>, TxOne<'_>)> {
        let p = self.rx.take()?;
        Some((RxOne(p), TxOne(self.tx)))
    }

    fn transmit(&mut self, _: smoltcp::time::Instant) -> Option<TxOne<'_>> {
        if self.tx.ready.len() >= MAX_TX_QUEUE {
            return None;
        }
        Some(TxOne(self.tx))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ip;
        caps.max_transmission_unit = self.mtu;
        // WireGuard's AEAD already authenticated every byte of an inbound
        // packet, so verifying TCP/IP checksums again buys nothing.
        let mut checksum = ChecksumCapabilities::default();
        checksum.ipv4 = Checksum::Tx;
        checksum.tcp = Checksum::Tx;
        checksum.icmpv4 = Checksum::Tx;
        checksum.icmpv6 = Checksum::Tx;
        caps.checksum = checksum;
        caps
    }
}

pub(crate) struct Netstack {
    iface: Interface,
    sockets: SocketSet<'static>,
    tx: TxQueue,
    mtu: usize,
    conns: HashMap<SocketHandle, Conn>,
    by_tuple: HashMap<(IpAddr, u16, u16), SocketHandle>,
    per_peer: HashMap<PeerId, usize>,
    /// Connections per peer whose handshake has not completed.
    half_open: HashMap<PeerId, usize>,
    established: Vec<NewConnection>,
    removals: Vec<SocketHandle>,
    /// Loss recovery of closed connections, not yet taken.
    recovery: RecoveryTotals,
    budget: BufferBudget,
    limits: Limits,
    poll_request: std::task::Waker,
    epoch: Instant,
    /// Connections with work for the next poll: a segment arrived for
    /// them, they were reset, or egress left them unfinished (their peer's
    /// share of the turn ran out, or the transmit queue filled). Not empty
    /// after a poll, it means poll again at once.
    queued: Vec<SocketHandle>,
    /// Connections whose application asked for a poll (see `Pipe`).
    pump_requests: PumpRequests,
    /// Connections' smoltcp timers, earliest first. An entry is current
    /// while its connection's `poll_at` still equals it; the others are
    /// skipped when they come up, and the heap is rebuilt when they
    /// outnumber the connections.
    timers: BinaryHeap<Reverse<(Instant, SocketHandle)>>,
    /// The work list, kept between polls for its allocation.
    work: Vec<SocketHandle>,
    last_sweep: Option<Instant>,
    /// Rotates which peer goes first in egress.
    turn: usize,
    /// Egress's grouping of the work list by peer, kept between polls so
    /// that a poll allocates nothing once the groups have grown.
    egress_groups: EgressGroups,
    /// Connections the last poll visited (tests).
    pub(crate) last_visited: usize,
    /// Connections and timer entries the last poll looked at to build its
    /// work list (tests): with no sweep, about the work it found.
    pub(crate) last_examined: usize,
}

/// A poll's work list grouped by peer for egress, in the order each peer
/// first appears: `groups[..used]` are this poll's, each with its handles
/// and the packets it sent. The vectors are reused from poll to poll.
#[derive(Default)]
struct EgressGroups {
    groups: Vec<(PeerId, Vec<SocketHandle>, usize)>,
    used: usize,
    /// Where each peer's group is in `groups`, for this poll.
    index: HashMap<PeerId, usize>,
    /// Sockets that still had something to send when their share ran out.
    unfinished: Vec<SocketHandle>,
}

impl EgressGroups {
    fn regroup(&mut self, work: impl Iterator<Item = (PeerId, SocketHandle)>) {
        self.index.clear();
        self.used = 0;
        for (peer, h) in work {
            let i = match self.index.get(&peer) {
                Some(&i) => i,
                None => {
                    let i = self.used;
                    if i == self.groups.len() {
                        self.groups.push((peer, Vec::new(), 0));
                    } else {
                        let group = &mut self.groups[i];
                        group.0 = peer;
                        group.1.clear();
                        group.2 = 0;
                    }
                    self.used += 1;
                    self.index.insert(peer, i);
                    i
                }
            };
            self.groups[i].1.push(h);
        }
    }
}

impl Netstack {
    /// `poll_request` is woken by a connection's application side when it
    /// needs the netstack polled (data to send, room freed).
    pub(crate) fn new(
        addresses: &[ipnet::IpNet],
        mtu: usize,
        limits: Limits,
        seed: u64,
        poll_request: std::task::Waker,
        now: Instant,
    ) -> Self {
        let mut tx = TxQueue {
            ready: VecDeque::with_capacity(MAX_TX_QUEUE),
            spare: Vec::new(),
        };
        let mut config = IfaceConfig::new(HardwareAddress::Ip);
        config.random_seed = seed;
        let mut device = TunnelDevice {
            rx: None,
            tx: &mut tx,
            mtu,
        };
        let mut iface = Interface::new(config, &mut device, smoltcp::time::Instant::from_micros(0));
        iface.update_ip_addrs(|addrs| {
            for net in addresses {
                let _ = addrs.push(IpCidr::new(IpAddress::from(net.addr()), net.prefix_len()));
            }
        });
        // Replies go to any peer address, even outside the gateway's own
        // prefix; with no link layer the "router" is just a formality.
        for net in addresses {
            match net.addr() {
                IpAddr::V4(a) => {
                    let _ = iface.routes_mut().add_default_ipv4_route(a);
                }
                IpAddr::V6(a) => {
                    let _ = iface.routes_mut().add_default_ipv6_route(a);
                }
            }
        }
        Netstack {
            iface,
            sockets: SocketSet::new(Vec::new()),
            tx,
            mtu,
            conns: HashMap::new(),
            by_tuple: HashMap::new(),
            per_peer: HashMap::new(),
            half_open: HashMap::new(),
            established: Vec::new(),
            removals: Vec::new(),
            recovery: RecoveryTotals::default(),
            budget: BufferBudget::new(limits.memory_budget),
            limits,
            poll_request,
            epoch: now,
            queued: Vec::new(),
            pump_requests: PumpRequests::default(),
            timers: BinaryHeap::new(),
            work: Vec::new(),
            last_sweep: None,
            turn: 0,
            egress_groups: EgressGroups::default(),
            last_visited: 0,
            last_examined: 0,
        }
    }

    fn timestamp(&self, now: Instant) -> smoltcp::time::Instant {
        smoltcp::time::Instant::from_micros(
            now.saturating_duration_since(self.epoch).as_micros() as i64
        )
    }

    /// Open connections, including ones still in their handshake.
    pub(crate) fn connection_count(&self) -> usize {
        self.conns.len()
    }

    pub(crate) fn connections_of(&self, peer: PeerId) -> usize {
        self.per_peer.get(&peer).copied().unwrap_or(0)
    }

    /// Processes one inner packet that passed the route check.
    pub(crate) fn receive(
        &mut self,
        now: Instant,
        peer: PeerId,
        packet: &[u8],
        kind: Admitted,
    ) -> Result<(), DropReason> {
        if let Admitted::Tcp {
            src,
            src_port,
            dst_port,
            syn: true,
        } = kind
        {
            let tuple = (src, src_port, dst_port);
            if !self.by_tuple.contains_key(&tuple) {
                if self.conns.len() >= self.limits.budgeted_total()
                    || self.connections_of(peer) >= self.limits.per_peer
                {
                    // Dropping (not resetting) lets the client's SYN retry
                    // succeed once a slot frees up.
                    return Err(DropReason::ConnectionLimit);
                }
                if self.half_open.get(&peer).copied().unwrap_or(0) >= MAX_HALF_OPEN_PER_PEER
                    || self.half_open.values().sum::<usize>() >= MAX_HALF_OPEN
                {
                    return Err(DropReason::HalfOpenLimit);
                }
                if self.over_fair_share(peer) {
                    return Err(DropReason::FairShare);
                }
                // A backstop: within the budgeted total, minimums always fit.
                if !self.budget.reserve(self.limits.connection_buffers()) {
                    return Err(DropReason::MemoryBudget);
                }
                self.open_listener(now, peer, tuple);
            }
        }
        let ts = self.timestamp(now);
        let mut device = TunnelDevice {
            rx: Some(packet),
            tx: &mut self.tx,
            mtu: self.mtu,
        };
        self.iface
            .poll_ingress_single(ts, &mut device, &mut self.sockets);
        if let Admitted::Tcp {
            src,
            src_port,
            dst_port,
            ..
        } = kind
        {
            // The segment went either to its own connection or to the one
            // listener made for it just above: that socket is the only one
            // that can be in Listen now. Remove it before anything else
            // arrives, so it cannot take another peer's SYN.
            self.remove_if_listening((src, src_port, dst_port));
            if let Some(&h) = self.by_tuple.get(&(src, src_port, dst_port)) {
                self.enqueue_work(h);
            }
        }
        Ok(())
    }

    /// Once 90% of the total is in use, a peer that holds more than an
    /// equal share of it (the total over the peers holding connections)
    /// gets no new one: the last slots go to the others.
    fn over_fair_share(&self, peer: PeerId) -> bool {
        let total = self.limits.budgeted_total();
        if self.conns.len() * 10 < total * 9 {
            return false;
        }
        let holders = self.per_peer.len() + usize::from(!self.per_peer.contains_key(&peer));
        self.connections_of(peer) >= total / holders.max(1)
    }

    fn remove_if_listening(&mut self, tuple: (IpAddr, u16, u16)) {
        if let Some(&h) = self.by_tuple.get(&tuple)
            && self.sockets.get::<tcp::Socket>(h).state() == State::Listen
        {
            self.removals.push(h);
            self.remove_pending();
        }
    }

    fn open_listener(&mut self, now: Instant, peer: PeerId, tuple: (IpAddr, u16, u16)) {
        let mut socket = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0u8; TCP_RX_BUFFER]),
            tcp::SocketBuffer::new(vec![0u8; MIN_SEND_BUFFER]),
        );
        let (congestion, wan) = match self.limits.sender {
            TcpSender::Classic => (CongestionControl::Cubic, false),
            TcpSender::Wan => (CongestionControl::Bbr, true),
            TcpSender::WanCubic => (CongestionControl::Cubic, true),
        };
        socket.set_congestion_control(congestion);
        socket.set_wan_mode(wan);
        // Delayed ACKs, as kernel TCP does: the answer to a request nearly
        // always leaves within the delay and carries the ACK, which saves a
        // datagram (an encryption and a send here, a wake-up and a
        // decryption at the client) per request. smoltcp still ACKs at
        // once for every full segment received, so uploads are not slowed.
        socket.set_ack_delay(Some(ACK_DELAY));
        // hyper writes whole responses; Nagle would only delay the last segment.
        socket.set_nagle_enabled(false);
        // Clients that vanish without FIN are found by keep-alive probes.
        socket.set_keep_alive(Some(smoltcp::time::Duration::from_secs(60)));
        if socket.listen(tuple.2).is_err() {
            self.budget.release(self.limits.connection_buffers());
            return;
        }
        let handle = self.sockets.add(socket);
        self.conns.insert(
            handle,
            Conn {
                peer,
                tuple,
                pipe: Pipe::new(
                    self.poll_request.clone(),
                    handle,
                    self.pump_requests.clone(),
                ),
                established: false,
                progress: Progress {
                    opened: now,
                    last_progress: now,
                    waiting_for_ack: None,
                    unacked_after_pump: 0,
                },
                reserved: self.limits.connection_buffers(),
                grown: 0,
                drained_since: None,
                poll_at: None,
                queued: false,
                in_work: false,
                timer_entry: None,
            },
        );
        self.by_tuple.insert(tuple, handle);
        *self.per_peer.entry(peer).or_insert(0) += 1;
        *self.half_open.entry(peer).or_insert(0) += 1;
    }

    /// Puts a connection on the next poll's work list.
    fn enqueue_work(&mut self, h: SocketHandle) {
        if let Some(conn) = self.conns.get_mut(&h)
            && !std::mem::replace(&mut conn.queued, true)
        {
            self.queued.push(h);
        }
    }

    /// The connections this poll visits, into `work`: those queued (a
    /// segment, a reset, unfinished egress), those whose application
    /// asked, and those whose timer is due; every connection on a sweep.
    /// Without a sweep it looks only at those three lists, never at the
    /// idle connections.
    fn collect_work(&mut self, now: Instant, work: &mut Vec<SocketHandle>) {
        let sweep = self
            .last_sweep
            .is_none_or(|t| now.saturating_duration_since(t) >= SWEEP_EVERY);
        if sweep {
            self.last_sweep = Some(now);
        }
        work.clear();
        let mut examined = 0;
        // The requests are taken before the flags are cleared: a request
        // made in between stays for the next poll, so none is lost. A
        // connection whose flag is cleared here is visited in this poll,
        // after the clear, and sees what the application did.
        let asked =
            std::mem::take(&mut *self.pump_requests.lock().unwrap_or_else(|e| e.into_inner()));
        let queued = std::mem::take(&mut self.queued);
        let visit = |conns: &mut HashMap<SocketHandle, Conn>,
                     work: &mut Vec<SocketHandle>,
                     h: SocketHandle| {
            if let Some(conn) = conns.get_mut(&h)
                && !std::mem::replace(&mut conn.in_work, true)
            {
                work.push(h);
            }
        };
        if sweep {
            for (h, conn) in self.conns.iter_mut() {
                conn.pipe.take_needs_pump();
                conn.queued = false;
                conn.in_work = true;
                work.push(*h);
            }
            examined += self.conns.len();
        } else {
            for &h in asked.iter() {
                if let Some(conn) = self.conns.get(&h) {
                    conn.pipe.take_needs_pump();
                }
                visit(&mut self.conns, work, h);
            }
            for &h in queued.iter() {
                if let Some(conn) = self.conns.get_mut(&h) {
                    conn.queued = false;
                }
                visit(&mut self.conns, work, h);
            }
            examined += asked.len() + queued.len();
        }
        // Due timers; on a sweep they are visited anyway, and only leave.
        while let Some(&Reverse((t, h))) = self.timers.peek() {
            if t > now {
                break;
            }
            self.pop_timer();
            examined += 1;
            if !sweep && self.conns.get(&h).is_some_and(|c| c.poll_at == Some(t)) {
                visit(&mut self.conns, work, h);
            }
        }
        for &h in work.iter() {
            if let Some(conn) = self.conns.get_mut(&h) {
                conn.in_work = false;
            }
        }
        // The vectors go back for their allocations (no request can have
        // been lost: the ones made meanwhile are in the shared list).
        let (mut asked, mut queued) = (asked, queued);
        asked.clear();
        queued.clear();
        let mut requests = self.pump_requests.lock().unwrap_or_else(|e| e.into_inner());
        if requests.is_empty() {
            *requests = asked;
        }
        drop(requests);
        self.queued = queued;
        self.last_examined = examined;
    }

    /// Records a visited connection's next timer.
    fn set_timer(&mut self, h: SocketHandle, at: Option<Instant>) {
        let Some(conn) = self.conns.get_mut(&h) else {
            return;
        };
        conn.poll_at = at;
        if let Some(t) = at
            && conn.timer_entry != Some(t)
        {
            conn.timer_entry = Some(t);
            self.timers.push(Reverse((t, h)));
        }
        // Stale entries are dropped once they outnumber the connections,
        // so the heap stays O(connections) however often timers move.
        if self.timers.len() > 2 * self.conns.len() + 64 {
            let mut timers = std::mem::take(&mut self.timers).into_vec();
            timers.clear();
            for (h, c) in self.conns.iter_mut() {
                c.timer_entry = c.poll_at;
                if let Some(t) = c.poll_at {
                    timers.push(Reverse((t, *h)));
                }
            }
            self.timers = BinaryHeap::from(timers);
        }
    }

    /// Takes the earliest entry off `timers`.
    fn pop_timer(&mut self) {
        if let Some(Reverse((t, h))) = self.timers.pop()
            && let Some(conn) = self.conns.get_mut(&h)
            && conn.timer_entry == Some(t)
        {
            conn.timer_entry = None;
        }
    }

    /// Moves bytes between the sockets and pipes of the connections with
    /// work, lets smoltcp transmit for them round-robin by peer, then tunes
    /// their buffers and frees the finished ones.
    pub(crate) fn poll(&mut self, now: Instant) {
        let mut work = std::mem::take(&mut self.work);
        self.collect_work(now, &mut work);
        self.last_visited = work.len();
        self.pump(now, &work);
        let ts = self.timestamp(now);
        self.iface.poll_maintenance(ts);
        self.egress(ts, &work);
        // After egress: what is in flight now shows whether the buffer
        // limited it.
        self.tune_buffers(now, &work);
        for &h in &work {
            let at = self.iface.socket_poll_at(ts, &self.sockets, h);
            let at = at.map(|t| self.epoch + Duration::from_micros(t.total_micros() as u64));
            self.set_timer(h, at);
        }
        self.reap(&work);
        self.work = work;
    }

    /// Transmits for the connections in `work`, one segment per socket per
    /// round (as smoltcp's own egress does), with the peers taken in turn
    /// and each limited to [`EGRESS_PER_PEER_TURN`] packets per poll. A
    /// socket leaves the round once it has nothing to send; one that still
    /// had something when its peer's share or the transmit queue ran out
    /// goes on the next poll's work list.
    fn egress(&mut self, ts: smoltcp::time::Instant, work: &[SocketHandle]) {
        let mut groups = std::mem::take(&mut self.egress_groups);
        groups.regroup(
            work.iter()
                .filter_map(|h| Some((self.conns.get(h)?.peer, *h))),
        );
        if groups.used == 0 {
            self.egress_groups = groups;
            return;
        }
        self.turn = self.turn.wrapping_add(1);
        let used = groups.used;
        let first = self.turn % used;
        let by_peer = &mut groups.groups[..used];
        by_peer.rotate_left(first);
        let mut device = TunnelDevice {
            rx: None,
            tx: &mut self.tx,
            mtu: self.mtu,
        };
        let unfinished = &mut groups.unfinished;
        'rounds: loop {
            let mut sent_any = false;
            for (_, handles, sent) in by_peer.iter_mut() {
                let mut i = 0;
                while i < handles.len() {
                    if *sent >= EGRESS_PER_PEER_TURN {
                        // This peer's share is used up: the rest wait.
                        unfinished.append(handles);
                        break;
                    }
                    if device.tx.ready.len() >= MAX_TX_QUEUE {
                        for (_, rest, _) in by_peer.iter_mut() {
                            unfinished.append(rest);
                        }
                        break 'rounds;
                    }
                    let h = handles[i];
                    let r = self
                        .iface
                        .poll_egress_socket(ts, &mut device, &mut self.sockets, h);
                    if r == smoltcp::iface::PollResult::SocketStateChanged {
                        *sent += 1;
                        sent_any = true;
                        i += 1;
                    } else {
                        handles.swap_remove(i);
                    }
                }
            }
            if !sent_any {
                break;
            }
        }
        let unfinished = std::mem::take(&mut groups.unfinished);
        for h in &unfinished {
            self.enqueue_work(*h);
        }
        groups.unfinished = unfinished;
        groups.unfinished.clear();
        self.egress_groups = groups;
    }

    /// Frees finished connections. Runs after egress, so that the final ACK
    /// of a close has been emitted; TIME-WAIT is not kept (its only use is
    /// re-ACKing a lost final FIN, and it would hold connection slots).
    fn reap(&mut self, work: &[SocketHandle]) {
        for h in work {
            let Some(conn) = self.conns.get(h) else {
                continue;
            };
            let sock = self.sockets.get::<tcp::Socket>(*h);
            if matches!(sock.state(), State::Closed | State::TimeWait)
                && (!conn.established || conn.pipe.lock().app_dropped)
            {
                self.removals.push(*h);
            }
        }
        self.remove_pending();
    }

    fn remove_pending(&mut self) {
        for h in std::mem::take(&mut self.removals) {
            if let Some(conn) = self.conns.remove(&h) {
                self.by_tuple.remove(&conn.tuple);
                decrement(&mut self.per_peer, conn.peer);
                if !conn.established {
                    decrement(&mut self.half_open, conn.peer);
                }
                self.budget.release(conn.reserved);
                self.budget.shrink(conn.grown);
            }
            let r = self.sockets.get::<tcp::Socket>(h).recovery_stats();
            self.recovery.retransmitted_segments += u64::from(r.retransmitted_segments);
            self.recovery.rtos += u64::from(r.rtos);
            self.recovery.fast_recoveries += u64::from(r.fast_recoveries);
            self.recovery.tail_loss_probes += u64::from(r.tail_loss_probes);
            self.sockets.remove(h);
        }
    }

    /// Grows the sending buffers of connections that need more, and
    /// shrinks them back once idle a while. Every connection starts with
    /// small minimums (issue 24: a thousand stalled connections must cost
    /// little); growth comes from the budget's growth half, doubling at a
    /// time, and a buffer that cannot grow keeps what it has.
    /// - The smoltcp send buffer grows while all of it is in flight and the
    ///   application has more: the buffer, not the window, limits the flight.
    ///   Up to `send_buffer` for the classic sender, `max_send_buffer` for
    ///   the WAN sender (the path's bandwidth-delay product).
    /// - The pipe's sending side grows while the application found it full
    ///   and the socket still had room for more than the pipe holds.
    ///
    /// A reader that stopped reading closes its window, so neither grows for
    /// it. Runs after egress, when what is in flight is known.
    fn tune_buffers(&mut self, now: Instant, work: &[SocketHandle]) {
        let max_send = match self.limits.sender {
            TcpSender::Classic => self.limits.send_buffer,
            TcpSender::Wan | TcpSender::WanCubic => self.limits.max_send_buffer,
        };
        for h in work {
            let Some(conn) = self.conns.get_mut(h) else {
                continue;
            };
            if !conn.established {
                continue;
            }
            let sock = self.sockets.get_mut::<tcp::Socket>(*h);
            let mut pipe = conn.pipe.lock();
            let cap = sock.send_capacity();
            let app_waiting = !pipe.tx.is_empty() || pipe.tx_blocked;
            let limited = sock.send_in_flight() + BUFFER_LIMITED_SLACK >= cap;
            let mut grew = false;
            if limited && app_waiting && cap < max_send {
                let new_cap = (cap * 2).min(max_send);
                if self.budget.grow(new_cap - cap) {
                    match sock.replace_send_buffer(tcp::SocketBuffer::new(vec![0u8; new_cap])) {
                        Ok(_) => conn.grown += new_cap - cap,
                        Err(_) => self.budget.shrink(new_cap - cap),
                    }
                }
                grew = true;
            }
            let room = sock.send_capacity() - sock.send_queue();
            let pipe_cap = pipe.tx.capacity();
            if std::mem::take(&mut pipe.tx_blocked) && room > pipe_cap && pipe_cap < PIPE_MAX {
                let new_cap = (pipe_cap * 2).min(PIPE_MAX);
                if self.budget.grow(new_cap - pipe_cap) {
                    pipe.resize_tx(new_cap);
                    conn.grown += new_cap - pipe_cap;
                    // The application may write again.
                    pipe.wake_writer();
                }
                grew = true;
            }
            if grew || conn.grown == 0 {
                conn.drained_since = None;
                continue;
            }
            if sock.send_queue() > 0 || !pipe.tx.is_empty() {
                conn.drained_since = None;
                continue;
            }
            let since = *conn.drained_since.get_or_insert(now);
            if now.saturating_duration_since(since) < BUFFER_IDLE_SHRINK {
                continue;
            }
            if sock
                .replace_send_buffer(tcp::SocketBuffer::new(vec![0u8; MIN_SEND_BUFFER]))
                .is_ok()
            {
                pipe.resize_tx(PIPE_MIN);
                self.budget.shrink(conn.grown);
                conn.grown = 0;
                conn.drained_since = None;
            }
        }
    }

    /// Buffer bytes in use (minimums and growth) and growth alone.
    pub(crate) fn buffer_use(&self) -> (usize, usize) {
        (self.budget.in_use(), self.budget.grown())
    }

    /// The loss recovery of connections that closed since the last call.
    pub(crate) fn take_recovery(&mut self) -> RecoveryTotals {
        std::mem::take(&mut self.recovery)
    }

    /// When smoltcp next needs a poll (retransmit, keep-alive), if ever.
    pub(crate) fn poll_at(&mut self, now: Instant) -> Option<Instant> {
        if !self.queued.is_empty() {
            return Some(now);
        }
        // The earliest current timer; stale entries on top leave.
        while let Some(&Reverse((t, h))) = self.timers.peek() {
            if self.conns.get(&h).is_some_and(|c| c.poll_at == Some(t)) {
                return Some(t);
            }
            self.pop_timer();
        }
        None
    }

    /// Connections that completed their handshake since the last call.
    pub(crate) fn take_established(&mut self) -> std::vec::Drain<'_, NewConnection> {
        self.established.drain(..)
    }

    /// Hands each queued outgoing packet to `send`, and recycles its buffer.
    pub(crate) fn drain_transmit(&mut self, mut send: impl FnMut(&[u8])) {
        while let Some(buf) = self.tx.ready.pop_front() {
            send(&buf);
            if self.tx.spare.len() < MAX_TX_QUEUE {
                self.tx.spare.push(buf);
            }
        }
    }

    /// Resets every connection of a removed peer at once.
    pub(crate) fn abort_peer(&mut self, peer: PeerId) {
        self.abort_where(|c| c.peer == peer);
    }

    /// Resets one connection, by its remote endpoint and local port.
    pub(crate) fn abort_connection(&mut self, remote: SocketAddr, local_port: u16) {
        let tuple = (remote.ip(), remote.port(), local_port);
        self.abort_where(|c| c.tuple == tuple);
    }

    /// Resets every connection (shutdown after the grace period).
    pub(crate) fn abort_all(&mut self) {
        self.abort_where(|_| true);
    }

    fn abort_where(&mut self, select: impl Fn(&Conn) -> bool) {
        let mut aborted = Vec::new();
        for (h, conn) in self.conns.iter_mut().filter(|(_, c)| select(c)) {
            self.sockets.get_mut::<tcp::Socket>(*h).abort();
            let mut s = conn.pipe.lock();
            s.reset = true;
            s.wake_reader();
            s.wake_writer();
            aborted.push(*h);
        }
        // The resets go out on the next poll.
        for h in aborted {
            self.enqueue_work(h);
        }
    }

    /// Moves bytes between every connection's socket and pipe, hands out
    /// the connections that completed their handshake, and resets the ones
    /// that are idle, late or stalled.
    fn pump(&mut self, now: Instant, work: &[SocketHandle]) {
        let mut removals = std::mem::take(&mut self.removals);
        let half_open = &mut self.half_open;
        for h in work {
            let Some(conn) = self.conns.get_mut(h) else {
                continue;
            };
            let sock = self.sockets.get_mut::<tcp::Socket>(*h);
            let state = sock.state();
            if state == State::Listen {
                // Cannot happen (see `receive`); removed for safety.
                removals.push(*h);
                continue;
            }
            let mut s = conn.pipe.lock();
            let handshake_done =
                !conn.established && matches!(state, State::Established | State::CloseWait);
            if handshake_done {
                // Buffers only once the handshake completed (see `Pipe::new`).
                s.allocate();
            }
            // Progress: the peer sent bytes or acknowledged new ones.
            let acked = sock.send_queue() < conn.progress.unacked_after_pump;
            let received = socket_to_pipe(sock, &mut s);
            if handshake_done {
                conn.established = true;
                decrement(half_open, conn.peer);
                self.established.extend(conn.hand_out(sock, &mut s));
            }
            if conn.established && !sock.may_recv() && !sock.can_recv() && !s.rx_eof {
                s.rx_eof = true;
                s.wake_reader();
            }
            pipe_to_socket(sock, &mut s);
            let progressed = acked || received || handshake_done;
            conn.progress
                .update(now, progressed, acked, sock.send_queue());
            if conn
                .progress
                .timed_out(now, conn.established, self.limits.idle_timeout)
            {
                sock.abort();
                s.reset = true;
                s.wake_reader();
                s.wake_writer();
            }
            if matches!(sock.state(), State::Closed | State::TimeWait) {
                if !s.rx_eof && !s.reset {
                    s.reset = true;
                }
                s.wake_reader();
                s.wake_writer();
            }
        }
        self.removals = removals;
        self.remove_pending();
    }
}

impl Conn {
    /// The connection to hand out now that its handshake completed, if its
    /// socket serves the tuple it was made for; else it is reset.
    fn hand_out(&self, sock: &mut tcp::Socket<'_>, s: &mut PipeState) -> Option<NewConnection> {
        let remote = sock
            .remote_endpoint()
            .map(|r| SocketAddr::new(r.addr.into(), r.port));
        let local_port = sock.local_endpoint().map(|l| l.port);
        let (src, src_port, dst_port) = self.tuple;
        if remote == Some(SocketAddr::new(src, src_port)) && local_port == Some(dst_port) {
            Some(NewConnection {
                peer: self.peer,
                remote: SocketAddr::new(src, src_port),
                local_port: dst_port,
                pipe: self.pipe.clone(),
            })
        } else {
            // A socket serving another tuple than it was made for:
            // never hand it out.
            sock.abort();
            s.reset = true;
            None
        }
    }
}

impl Progress {
    /// Records this pump's progress (bytes received, new data
    /// acknowledged, the handshake completed) and the data outstanding.
    fn update(&mut self, now: Instant, progressed: bool, acked: bool, unacked: usize) {
        if progressed {
            self.last_progress = now;
        }
        self.waiting_for_ack = match (unacked, self.waiting_for_ack) {
            (0, _) => None,
            (_, Some(since)) if !acked => Some(since),
            _ => Some(now),
        };
        self.unacked_after_pump = unacked;
    }

    /// A connection whose peer neither sends nor acknowledges anything for
    /// the idle timeout, whose handshake does not complete in time, or
    /// whose outstanding data sees no new acknowledgment for the stall
    /// timeout is reset. Its stream then fails with ConnectionReset, which
    /// ends the HTTP side's connection future and drops its upstream
    /// request with it.
    fn timed_out(&self, now: Instant, established: bool, idle_timeout: Duration) -> bool {
        let idle = now.saturating_duration_since(self.last_progress) > idle_timeout;
        let handshake_late =
            !established && now.saturating_duration_since(self.opened) > HANDSHAKE_TIMEOUT;
        let stalled = self
            .waiting_for_ack
            .is_some_and(|t| now.saturating_duration_since(t) > STALL_TIMEOUT);
        idle || handshake_late || stalled
    }
}

/// Socket -> application (or the void, if the application is gone).
/// True if any bytes arrived.
fn socket_to_pipe(sock: &mut tcp::Socket<'_>, s: &mut PipeState) -> bool {
    let mut received = false;
    while sock.can_recv() {
        let discard = s.app_dropped;
        let n = sock
            .recv(|buf| {
                let n = if discard {
                    buf.len()
                } else {
                    s.rx.enqueue_slice(buf)
                };
                (n, n)
            })
            .unwrap_or(0);
        if n == 0 {
            break;
        }
        received = true;
    }
    if received {
        s.wake_reader();
    }
    received
}

/// Application -> socket, and a FIN once the application is done and
/// everything it wrote is in the socket.
fn pipe_to_socket(sock: &mut tcp::Socket<'_>, s: &mut PipeState) {
    let mut sent = false;
    while sock.can_send() && !s.tx.is_empty() {
        let n = sock
            .send(|buf| {
                let n = s.tx.dequeue_slice(buf);
                (n, n)
            })
            .unwrap_or(0);
        if n == 0 {
            break;
        }
        sent = true;
    }
    if sent {
        s.wake_writer();
    }
    if (s.tx_shutdown || s.app_dropped) && s.tx.is_empty() && sock.may_send() {
        sock.close();
    }
}

fn decrement(counts: &mut HashMap<PeerId, usize>, peer: PeerId) {
    if let Some(n) = counts.get_mut(&peer) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            counts.remove(&peer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use smoltcp::wire::{Ipv4Address, Ipv4Packet, TcpControl, TcpPacket, TcpRepr, TcpSeqNumber};

    const GW: Ipv4Address = Ipv4Address::new(10, 13, 13, 1);
    const PEER: Ipv4Address = Ipv4Address::new(10, 13, 13, 2);

    fn stack(per_peer: usize, total: usize, idle: Duration, now: Instant) -> Netstack {
        let limits = Limits {
            send_buffer: 64 * 1024,
            sender: TcpSender::Classic,
            memory_budget: usize::MAX,
            max_send_buffer: 64 * 1024,
            per_peer,
            total,
            idle_timeout: idle,
        };
        let addrs = ["10.13.13.1/24".parse().unwrap()];
        Netstack::new(
            &addrs,
            1420,
            limits,
            1,
            std::task::Waker::noop().clone(),
            now,
        )
    }

    /// A segment from PEER:`port` to GW:80, and what the route check says of it.
    fn segment(port: u16, control: TcpControl, seq: u32, ack: Option<u32>) -> (Vec<u8>, Admitted) {
        segment_from(PEER, port, control, seq, ack)
    }

    fn segment_from(
        src: Ipv4Address,
        port: u16,
        control: TcpControl,
        seq: u32,
        ack: Option<u32>,
    ) -> (Vec<u8>, Admitted) {
        let tcp = TcpRepr {
            src_port: port,
            dst_port: 80,
            control,
            seq_number: TcpSeqNumber(seq as i32),
            ack_number: ack.map(|a| TcpSeqNumber(a as i32)),
            window_len: 64000,
            window_scale: None,
            max_seg_size: None,
            sack_permitted: false,
            sack_ranges: [None; 3],
            timestamp: None,
            payload: &[],
        };
        let buf = crate::test_packets::ipv4_tcp(src, GW, &tcp);
        let kind = Admitted::Tcp {
            src: IpAddr::V4(src),
            src_port: port,
            dst_port: 80,
            syn: control == TcpControl::Syn && ack.is_none(),
        };
        (buf, kind)
    }

    fn syn(ns: &mut Netstack, now: Instant, port: u16) -> Result<(), DropReason> {
        let (p, k) = segment(port, TcpControl::Syn, 1000, None);
        ns.receive(now, 1, &p, k)
    }

    /// Every segment the stack queued, as (flags, destination port).
    fn sent(ns: &mut Netstack) -> Vec<(bool, bool, u16)> {
        let mut out = Vec::new();
        ns.drain_transmit(|p| {
            let ip = Ipv4Packet::new_checked(p).unwrap();
            let t = TcpPacket::new_checked(ip.payload()).unwrap();
            out.push((t.syn(), t.rst(), t.dst_port()));
        });
        out
    }

    #[test]
    fn connections_past_the_per_peer_and_total_limits_are_dropped_not_reset() {
        let now = Instant::now();
        let mut ns = stack(2, 3, Duration::from_secs(60), now);
        assert_eq!(syn(&mut ns, now, 40001), Ok(()));
        assert_eq!(syn(&mut ns, now, 40002), Ok(()));
        assert_eq!(syn(&mut ns, now, 40003), Err(DropReason::ConnectionLimit));
        assert_eq!(ns.connections_of(1), 2);
        ns.poll(now);
        // Two SYN-ACKs, and nothing (no RST) for the third.
        let out = sent(&mut ns);
        assert_eq!(out.len(), 2, "{out:?}");
        assert!(out.iter().all(|(syn, rst, _)| *syn && !*rst));
        // The total limit counts every peer: peer 2 gets one, then none.
        let other = Ipv4Address::new(10, 13, 13, 3);
        let (p, k) = segment_from(other, 40001, TcpControl::Syn, 1000, None);
        assert_eq!(ns.receive(now, 2, &p, k), Ok(()));
        let (p, k) = segment_from(other, 40002, TcpControl::Syn, 1000, None);
        assert_eq!(ns.receive(now, 2, &p, k), Err(DropReason::ConnectionLimit));
        assert_eq!(ns.connection_count(), 3);
    }

    /// Issue 24/27: with 1,000 SYNs from 100 peers, the connections held
    /// never take more than the memory budget, and closing them gives all
    /// of it back.
    #[test]
    fn the_memory_budget_holds_with_a_thousand_connection_attempts() {
        let now = Instant::now();
        let mut ns = stack(1000, 1000, Duration::from_secs(60), now);
        let per_conn = ns.limits.connection_buffers();
        ns.limits.memory_budget = 20 * per_conn;
        ns.budget = BufferBudget::new(ns.limits.memory_budget);
        assert_eq!(ns.limits.budgeted_total(), 10);
        let mut accepted = 0;
        for i in 0..1000u32 {
            let peer = i % 100;
            let src = Ipv4Address::new(10, 13, 14, peer as u8);
            let (p, k) = segment_from(src, 40000 + (i / 100) as u16, TcpControl::Syn, 1000, None);
            match ns.receive(now, peer, &p, k) {
                Ok(()) => accepted += 1,
                Err(r) => assert!(
                    matches!(r, DropReason::ConnectionLimit | DropReason::FairShare),
                    "{r:?}"
                ),
            }
            assert!(ns.buffer_use().0 <= ns.limits.memory_budget);
        }
        assert_eq!(accepted, 10);
        assert_eq!(ns.buffer_use(), (10 * per_conn, 0));
        ns.abort_all();
        ns.poll(now);
        assert_eq!(ns.connection_count(), 0);
        assert_eq!(
            ns.buffer_use(),
            (0, 0),
            "closed connections gave back their budget"
        );
    }

    #[test]
    fn a_half_open_connection_is_reaped_after_the_idle_timeout_in_virtual_time() {
        let t0 = Instant::now();
        let mut ns = stack(8, 8, Duration::from_secs(5), t0);
        syn(&mut ns, t0, 40001).unwrap();
        ns.poll(t0);
        assert_eq!(ns.connection_count(), 1);
        ns.poll(t0 + Duration::from_secs(4));
        assert_eq!(ns.connection_count(), 1, "reaped before the timeout");
        ns.poll(t0 + Duration::from_secs(6));
        ns.poll(t0 + Duration::from_secs(6));
        assert_eq!(ns.connection_count(), 0, "not reaped after the timeout");
        assert_eq!(ns.connections_of(1), 0);
    }

    #[test]
    fn a_stray_segment_leaves_no_listener_behind() {
        let now = Instant::now();
        let mut ns = stack(8, 8, Duration::from_secs(60), now);
        // SYN then RST: the socket goes back to Listen and must go at once.
        syn(&mut ns, now, 40001).unwrap();
        let (rst, k) = segment(40001, TcpControl::Rst, 1001, None);
        ns.receive(now, 1, &rst, k).unwrap();
        assert_eq!(ns.connection_count(), 0);
        assert!(ns.sockets.iter().all(|(_, s)| match s {
            smoltcp::socket::Socket::Tcp(t) => t.state() != State::Listen,
            #[allow(unreachable_patterns)]
            _ => true,
        }));
    }

    #[test]
    fn abort_all_resets_every_connection_at_shutdown() {
        let now = Instant::now();
        let mut ns = stack(8, 8, Duration::from_secs(60), now);
        syn(&mut ns, now, 40001).unwrap();
        syn(&mut ns, now, 40002).unwrap();
        ns.poll(now);
        let _ = sent(&mut ns);
        ns.abort_all();
        ns.poll(now);
        let out = sent(&mut ns);
        let resets: Vec<u16> = out.iter().filter(|(_, rst, _)| *rst).map(|o| o.2).collect();
        assert_eq!(resets.len(), 2, "{out:?}");
        assert_eq!(ns.connection_count(), 0);
    }

    /// Every segment queued, as (seq, ack, rst, payload length).
    fn sent_seq(ns: &mut Netstack) -> Vec<(u32, u32, bool, usize)> {
        let mut out = Vec::new();
        ns.drain_transmit(|p| {
            let ip = Ipv4Packet::new_checked(p).unwrap();
            let t = TcpPacket::new_checked(ip.payload()).unwrap();
            out.push((
                t.seq_number().0 as u32,
                t.ack_number().0 as u32,
                t.rst(),
                t.payload().len(),
            ));
        });
        out
    }

    fn data(port: u16, seq: u32, ack: u32, payload: &[u8]) -> (Vec<u8>, Admitted) {
        let tcp = TcpRepr {
            src_port: port,
            dst_port: 80,
            control: TcpControl::Psh,
            seq_number: TcpSeqNumber(seq as i32),
            ack_number: Some(TcpSeqNumber(ack as i32)),
            window_len: 64000,
            window_scale: None,
            max_seg_size: None,
            sack_permitted: false,
            sack_ranges: [None; 3],
            timestamp: None,
            payload,
        };
        let buf = crate::test_packets::ipv4_tcp(PEER, GW, &tcp);
        let kind = Admitted::Tcp {
            src: IpAddr::V4(PEER),
            src_port: port,
            dst_port: 80,
            syn: false,
        };
        (buf, kind)
    }

    /// What the application side does: write through the pipe, which
    /// asks for a poll.
    fn app_writes(pipe: &Pipe, data: &[u8]) {
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        assert!(pipe.poll_write(&mut cx, data).is_ready());
    }

    /// Completes a handshake on `port`; returns the gateway's next sequence
    /// number and the connection's pipe.
    fn establish(ns: &mut Netstack, now: Instant, port: u16) -> (u32, Arc<Pipe>) {
        establish_from(ns, now, PEER, 1, port)
    }

    fn establish_from(
        ns: &mut Netstack,
        now: Instant,
        src: Ipv4Address,
        peer: PeerId,
        port: u16,
    ) -> (u32, Arc<Pipe>) {
        let (p, k) = segment_from(src, port, TcpControl::Syn, 1000, None);
        ns.receive(now, peer, &p, k).unwrap();
        ns.poll(now);
        let synack = sent_seq(ns)[0];
        let (ack, k) = segment_from(
            src,
            port,
            TcpControl::None,
            1001,
            Some(synack.0.wrapping_add(1)),
        );
        ns.receive(now, peer, &ack, k).unwrap();
        ns.poll(now);
        let conn = ns.take_established().next().expect("established");
        (synack.0.wrapping_add(1), conn.pipe)
    }

    /// Issue 24: egress goes round-robin by peer with a share per poll. A
    /// peer with 60 connections that all have data to send gets at most
    /// EGRESS_PER_PEER_TURN packets out of a poll, another peer's one reply
    /// leaves in the first round, and the rest follows on the next poll,
    /// which `poll_at` asks for at once.
    #[test]
    fn egress_is_shared_round_robin_by_peer() {
        let t0 = Instant::now();
        let mut ns = stack(128, 1024, Duration::from_secs(300), t0);
        let busy = Ipv4Address::new(10, 13, 13, 2);
        let quiet = Ipv4Address::new(10, 13, 13, 3);
        let mut pipes = Vec::new();
        for port in 0..60 {
            pipes.push(establish_from(&mut ns, t0, busy, 1, 41000 + port).1);
        }
        let (_, quiet_pipe) = establish_from(&mut ns, t0, quiet, 2, 42000);
        for p in &pipes {
            app_writes(p, &[b'x'; 4000]);
        }
        app_writes(&quiet_pipe, b"HTTP/1.1 200 OK\r\n\r\n");
        let dst_of = |p: &[u8]| Ipv4Packet::new_checked(p).unwrap().dst_addr();
        let mut first = Vec::new();
        ns.poll(t0);
        ns.drain_transmit(|p| first.push(dst_of(p)));
        let busy_first = first.iter().filter(|a| **a == busy).count();
        let quiet_at = first.iter().position(|a| *a == quiet);
        assert_eq!(
            busy_first, EGRESS_PER_PEER_TURN,
            "busy peer's share of one poll"
        );
        assert!(
            quiet_at.is_some_and(|i| i <= 60),
            "the quiet peer's reply waited behind {quiet_at:?} packets"
        );
        // The busy peer's rest goes out on the next polls, asked for at once.
        assert_eq!(ns.poll_at(t0), Some(t0));
        let mut rest = 0;
        for _ in 0..10 {
            ns.poll(t0);
            ns.drain_transmit(|p| {
                assert_eq!(dst_of(p), busy);
                rest += 1;
            });
        }
        assert!(rest > 0, "the busy peer's remaining segments never left");
        let unsent: usize = pipes.iter().map(|p| p.lock().tx.len()).sum();
        assert_eq!(unsent, 0, "data left in the pipes");
    }

    /// Issue 24: a poll visits only connections with work. A thousand idle
    /// connections cost a flag check each, not a smoltcp call; one that
    /// the application wrote to is visited and sends.
    #[test]
    fn a_poll_visits_only_connections_with_work() {
        let t0 = Instant::now();
        let mut ns = stack(2000, 2000, Duration::from_secs(300), t0);
        let mut pipes = Vec::new();
        for port in 0..1000u16 {
            let src = Ipv4Address::new(10, 13, 14, (port % 200) as u8);
            pipes.push(establish_from(&mut ns, t0, src, u32::from(port % 200), 30000 + port).1);
        }
        // Between sweeps, an idle poll visits nothing, and does not even
        // look at the idle connections.
        let t1 = t0 + Duration::from_millis(1);
        ns.poll(t1);
        assert_eq!((ns.last_visited, ns.last_examined), (0, 0));
        app_writes(&pipes[7], b"hello");
        ns.poll(t1);
        assert_eq!(ns.last_visited, 1);
        assert!(ns.last_examined <= 2, "{}", ns.last_examined);
        let mut out = 0;
        ns.drain_transmit(|_| out += 1);
        assert_eq!(out, 1);
        // A sweep visits all of them.
        ns.poll(t0 + SWEEP_EVERY + Duration::from_millis(1));
        assert_eq!(ns.last_visited, 1000);
        // The timer heap answers what a scan of every connection would,
        // and stays bounded however often the timers move.
        let mut t = t0 + SWEEP_EVERY + Duration::from_millis(2);
        for i in 0..400usize {
            app_writes(&pipes[(i * 37) % 1000], b"more");
            ns.poll(t);
            ns.drain_transmit(|_| {});
            let scan = ns.conns.values().filter_map(|c| c.poll_at).min();
            assert_eq!(ns.poll_at(t), scan, "poll {i}");
            assert!(ns.timers.len() <= 2 * ns.conns.len() + 64);
            t += Duration::from_millis(3);
        }
    }

    /// Issue 24: a half-open connection holds no pipe buffers; they come
    /// with the completed handshake.
    #[test]
    fn pipe_buffers_come_with_the_completed_handshake() {
        let t0 = Instant::now();
        let mut ns = stack(128, 1024, Duration::from_secs(300), t0);
        syn(&mut ns, t0, 40002).unwrap();
        ns.poll(t0);
        let half_open: Vec<usize> = ns
            .conns
            .values()
            .map(|c| c.pipe.lock().rx.capacity())
            .collect();
        assert_eq!(half_open, [0]);
        let _ = sent_seq(&mut ns);
        let (_, pipe) = establish(&mut ns, t0, 40001);
        let s = pipe.lock();
        assert_eq!(
            (s.rx.capacity(), s.tx.capacity()),
            (crate::pipe::PIPE_MIN, crate::pipe::PIPE_MIN)
        );
    }

    /// Issue 24: many peers' half-open connections together stop at
    /// MAX_HALF_OPEN, so a flood from many peers cannot hold every slot's
    /// buffers.
    #[test]
    fn half_open_connections_in_total_are_capped() {
        let t0 = Instant::now();
        let mut ns = stack(128, 1024, Duration::from_secs(300), t0);
        let peers = MAX_HALF_OPEN / MAX_HALF_OPEN_PER_PEER;
        for p in 0..peers {
            let src = Ipv4Address::new(10, 13, 14, p as u8 + 1);
            for i in 0..MAX_HALF_OPEN_PER_PEER as u16 {
                let (pk, k) = segment_from(src, 40000 + i, TcpControl::Syn, 1000, None);
                assert_eq!(ns.receive(t0, p as PeerId + 10, &pk, k), Ok(()));
            }
        }
        let (pk, k) = segment_from(
            Ipv4Address::new(10, 13, 15, 1),
            40000,
            TcpControl::Syn,
            1000,
            None,
        );
        assert_eq!(ns.receive(t0, 99, &pk, k), Err(DropReason::HalfOpenLimit));
        assert_eq!(ns.connection_count(), MAX_HALF_OPEN);
    }

    /// Issue 24: near the total limit, a peer holding more than its equal
    /// share gets no new connection, so the last slots go to the others.
    #[test]
    fn near_the_total_a_peer_over_its_fair_share_gets_no_new_slot() {
        let t0 = Instant::now();
        // 20 in total, 16 per peer: peer 1 takes 16 (80%), peer 2 two more.
        let mut ns = stack(16, 20, Duration::from_secs(300), t0);
        for i in 0..16u16 {
            let _ = establish(&mut ns, t0, 41000 + i);
        }
        let other = Ipv4Address::new(10, 13, 13, 3);
        for i in 0..2u16 {
            let (p, k) = segment_from(other, 42000 + i, TcpControl::Syn, 1000, None);
            assert_eq!(ns.receive(t0, 2, &p, k), Ok(()));
        }
        // 18 of 20 in use (90%): two holders, so an equal share is 10.
        // Raise the per-peer cap so that only the fair-share rule is tested.
        ns.limits.per_peer = 17;
        assert_eq!(syn(&mut ns, t0, 43000), Err(DropReason::FairShare));
        // Peer 2, under its share, still gets one; and so does a newcomer.
        let (p, k) = segment_from(other, 42002, TcpControl::Syn, 1000, None);
        assert_eq!(ns.receive(t0, 2, &p, k), Ok(()));
        let third = Ipv4Address::new(10, 13, 13, 4);
        let (p, k) = segment_from(third, 44000, TcpControl::Syn, 1000, None);
        assert_eq!(ns.receive(t0, 3, &p, k), Ok(()));
    }

    /// Issue 24: one SYN the peer never follows up no longer holds a slot
    /// for the whole idle timeout.
    #[test]
    fn a_half_open_connection_is_reaped_after_the_handshake_timeout() {
        let t0 = Instant::now();
        let mut ns = stack(128, 1024, Duration::from_secs(300), t0);
        syn(&mut ns, t0, 40001).unwrap();
        ns.poll(t0 + HANDSHAKE_TIMEOUT - Duration::from_secs(1));
        assert_eq!(ns.connection_count(), 1);
        ns.poll(t0 + HANDSHAKE_TIMEOUT + Duration::from_secs(1));
        ns.poll(t0 + HANDSHAKE_TIMEOUT + Duration::from_secs(1));
        assert_eq!(ns.connection_count(), 0);
        assert!(ns.half_open.is_empty(), "{:?}", ns.half_open);
    }

    /// Issue 24: a SYN flood from one peer stops at its half-open cap; a
    /// completed handshake frees its place.
    #[test]
    fn half_open_connections_per_peer_are_capped() {
        let t0 = Instant::now();
        let mut ns = stack(128, 1024, Duration::from_secs(300), t0);
        let (_, _pipe) = establish(&mut ns, t0, 39999);
        for i in 0..MAX_HALF_OPEN_PER_PEER as u16 {
            assert_eq!(syn(&mut ns, t0, 40000 + i), Ok(()));
        }
        assert_eq!(syn(&mut ns, t0, 41000), Err(DropReason::HalfOpenLimit));
        // Another peer is not affected by this peer's cap (only by the
        // total's, tested below).
        let other = Ipv4Address::new(10, 13, 13, 3);
        let (p, k) = segment_from(other, 40001, TcpControl::Syn, 1000, None);
        assert_eq!(ns.receive(t0, 2, &p, k), Ok(()));
        // Once they time out, the peer can connect again.
        let later = t0 + HANDSHAKE_TIMEOUT + Duration::from_secs(1);
        ns.poll(later);
        ns.poll(later);
        assert_eq!(ns.connections_of(1), 1, "the established one stays");
        assert_eq!(syn(&mut ns, later, 41000), Ok(()));
    }

    /// Issue 24: while the gateway has data outstanding, bytes trickled by
    /// the peer do not count as progress; only acknowledgments do.
    #[test]
    fn a_reader_that_never_acknowledges_is_reset_even_if_it_trickles_bytes() {
        let t0 = Instant::now();
        let mut ns = stack(128, 1024, Duration::from_secs(300), t0);
        let (gw_seq, pipe) = establish(&mut ns, t0, 40001);
        app_writes(&pipe, &[b'x'; 4000]);
        ns.poll(t0);
        let _ = sent_seq(&mut ns);
        let mut t = t0;
        for seq in 1001u32..1005 {
            t += Duration::from_secs(20);
            // One byte, acknowledging nothing of the 4000.
            let (p, k) = data(40001, seq, gw_seq, b"z");
            ns.receive(t, 1, &p, k).unwrap();
            ns.poll(t);
        }
        let out = sent_seq(&mut ns);
        assert!(out.iter().any(|o| o.2), "no reset after 80 s: {out:?}");
        assert!(pipe.lock().reset);
    }

    /// The other side of the rule: a slow download that keeps acknowledging
    /// is never cut, however long it takes.
    #[test]
    fn a_slow_reader_that_keeps_acknowledging_is_not_cut() {
        let t0 = Instant::now();
        let mut ns = stack(128, 1024, Duration::from_secs(300), t0);
        let (gw_seq, pipe) = establish(&mut ns, t0, 40001);
        app_writes(&pipe, &[b'x'; 4000]);
        ns.poll(t0);
        // Offsets from the first byte the gateway sent, so that sequence
        // numbers wrapping around do not matter.
        let (mut acked, mut highest) = (0u32, 0u32);
        let mut t = t0;
        for _ in 0..20 {
            t += Duration::from_secs(40);
            let sent = sent_seq(&mut ns);
            assert!(!sent.iter().any(|o| o.2), "reset at {:?}", t - t0);
            for o in &sent {
                highest = highest.max(o.0.wrapping_sub(gw_seq) + o.3 as u32);
            }
            // Acknowledge 100 more bytes of what was sent.
            acked = (acked + 100).min(highest);
            let (p, k) = data(40001, 1001, gw_seq.wrapping_add(acked), b"");
            ns.receive(t, 1, &p, k).unwrap();
            ns.poll(t);
            if pipe.lock().tx.is_empty() {
                app_writes(&pipe, &[b'y'; 1000]);
            }
        }
        assert!(!pipe.lock().reset, "a moving download was cut");
        assert_eq!(ns.connection_count(), 1);
    }
}
