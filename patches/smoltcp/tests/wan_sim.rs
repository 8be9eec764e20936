//! promgate patch: a bulk download from a smoltcp sender over a simulated WAN path,
//! in virtual time.
//!
//! The sender is a `tcp::Socket` behind an `Interface`, driven the way promgate's
//! event loop drives it: wake-ups rounded up to 1 ms, ingress in batches of up to
//! 32 packets under one timestamp, a device queue of at most 1024 packets. The
//! receiver is a model of a Linux client, not smoltcp: it ACKs every second segment
//! (every segment for the first 16), ACKs at once on out-of-order data, reports up
//! to 3 SACK blocks (most recent first), delays a lone ACK by 40 ms, and doubles its
//! window every RTT from 64 KB up to a cap. Between them: a one-way delay of RTT/2,
//! a bottleneck rate, seeded iid loss in each direction, optional reordering, and
//! the client's UDP receive queue (100 datagrams, drained at a CPU rate) whose
//! overflows are counted. Nothing sleeps: one run of many seconds takes a fraction
//! of a second.
//!
//! `WAN_SIM_PRINT=1 cargo test --release --test wan_sim print -- --nocapture`
//! prints the table of all cells with WAN mode off, on with CUBIC and on with BBR
//! (`WAN_SIM_BUFFERS=65536,4194304` for several send buffers);
//! `WAN_SIM_CELL=rtt_ms,loss,wan,buffer[,bbr[,rwnd_cap]]` prints one run in full
//! (`debug_cell`). The `wan_sim_regression_*` tests assert that each cell reaches a
//! fraction of the link's ideal goodput; with the fairness test they take about
//! 13 s in release and are skipped in debug builds, where they take minutes.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, VecDeque};

use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{self, ChecksumCapabilities, Device, DeviceCapabilities, Medium};
use smoltcp::socket::tcp;
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{
    HardwareAddress, IpAddress, IpCidr, IpProtocol, Ipv4Address, Ipv4Packet, Ipv4Repr, TcpControl,
    TcpPacket, TcpRepr, TcpSeqNumber,
};

const GATEWAY_IP: Ipv4Address = Ipv4Address::new(10, 0, 0, 1);
const CLIENT_IP: Ipv4Address = Ipv4Address::new(10, 0, 0, 2);
const SERVER_PORT: u16 = 80;
const CLIENT_PORT: u16 = 40000;
/// WireGuard's inner MTU; with 40 bytes of headers it gives promgate's MSS of 1380.
const IP_MTU: usize = 1420;
const MSS: usize = 1380;
/// promgate's `MAX_TX_QUEUE`.
const DEVICE_QUEUE: usize = 1024;
/// Packets read from the UDP socket per wake-up (promgate's `recvmmsg` batch).
const INGRESS_BATCH: usize = 32;
/// Linux's default UDP receive buffer holds about this many WireGuard datagrams.
const CLIENT_QUEUE: usize = 100;
const CLIENT_WSCALE: u8 = 7;
const CLIENT_DELACK_US: u64 = 40_000;
const CLIENT_QUICKACKS: u32 = 16;
const MIB: usize = 1 << 20;

/// One simulated path and sender configuration.
#[derive(Clone, Copy, Debug)]
struct Cell {
    rtt_us: u64,
    /// iid loss probability in each direction.
    loss: f64,
    /// Bottleneck rate of the forward path, bytes/s.
    bottleneck: f64,
    /// Rate at which the client drains its UDP queue, bytes/s.
    drain: f64,
    /// Probability that a forward packet is held back by `reorder_us`.
    reorder: f64,
    reorder_us: u64,
    /// The client's receive window cap (Linux autotuning reaches about 1.1 MB).
    rwnd_cap: u64,
    send_buffer: usize,
    wan: bool,
    /// BBR instead of CUBIC (WAN mode only).
    bbr: bool,
    seed: u64,
    /// Transmissions the forward path drops on top of the random loss: (stream
    /// offset of a segment, which transmission of it, from 1).
    drop_segments: &'static [(u64, u32)],
}

impl Cell {
    fn wan(rtt_ms: f64, loss: f64) -> Cell {
        Cell {
            rtt_us: (rtt_ms * 1000.0) as u64,
            loss,
            bottleneck: 100e6,
            drain: 60e6,
            reorder: 0.0,
            reorder_us: 0,
            rwnd_cap: 1_100_000,
            send_buffer: 64 * 1024,
            wan: false,
            bbr: false,
            seed: 1,
            drop_segments: &[],
        }
    }

    fn lan() -> Cell {
        Cell {
            drain: 125e6,
            bottleneck: 1e9,
            ..Cell::wan(0.2, 0.0)
        }
    }

    /// (1 − p)·min(rwnd cap / RTT, bottleneck, drain), bytes/s.
    fn ideal(&self) -> f64 {
        let window_rate = self.rwnd_cap as f64 / (self.rtt_us as f64 / 1e6);
        (1.0 - self.loss) * window_rate.min(self.bottleneck).min(self.drain)
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct Outcome {
    /// In-order bytes the client received.
    delivered: u64,
    /// Goodput over the whole run, handshake and ramp included, bytes/s.
    goodput: f64,
    /// Data segments sent again, counted on the wire.
    retransmits: u64,
    rtos: u32,
    client_drops: u64,
    /// Time from the client's SYN until `target` bytes arrived in order, µs.
    completion_us: Option<u64>,
    /// Segments whose payload did not match the stream (must stay 0).
    corrupt: u64,
    /// Segments the client already had (spurious retransmissions).
    duplicates: u64,
    /// Data segments the forward path lost.
    forward_losses: u64,
    /// Most data segments the gateway emitted in one wake-up (a burst that
    /// reaches the client back to back).
    max_burst: u64,
    /// Sender stats.
    stats: tcp::RecoveryStats,
}

/// splitmix64: small, seeded, good enough for loss decisions.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && ((self.next() >> 11) as f64 / (1u64 << 53) as f64) < p
    }
}

/// A data segment from the gateway, as the client sees it (stream offsets).
#[derive(Debug, Clone, Copy)]
struct Segment {
    /// Which flow (client port `CLIENT_PORT + flow`).
    flow: usize,
    syn: bool,
    /// Sender's sequence number of the SYN (valid when `syn`).
    isn: u32,
    offset: u64,
    len: u64,
}

/// An ACK (or the SYN) from the client.
#[derive(Debug, Clone, Copy)]
struct Ack {
    flow: usize,
    syn: bool,
    ack: Option<u32>,
    window: u16,
    sack: [Option<(u32, u32)>; 3],
}

#[derive(Debug)]
enum EventKind {
    /// A gateway packet reaches the client's UDP queue.
    ToClient(Segment),
    /// The client finished processing the head of its queue.
    ClientDrained,
    /// The client's delayed-ACK timer, valid if the generation still matches.
    ClientDelack(usize, u64),
    /// A flow's client sends its SYN.
    ClientStart(usize),
    /// A client packet reaches the gateway's UDP socket.
    ToGateway(Ack),
}

struct Event {
    at: u64,
    id: u64,
    kind: EventKind,
}

impl PartialEq for Event {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.id) == (other.at, other.id)
    }
}
impl Eq for Event {}
impl PartialOrd for Event {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Event {
    // Reversed: BinaryHeap pops the earliest event first.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.id).cmp(&(self.at, self.id))
    }
}

/// The gateway's device: packets in from the UDP socket, packets out to the tunnel.
struct SimDevice {
    rx: VecDeque<Vec<u8>>,
    tx: VecDeque<Vec<u8>>,
}

struct SimRxToken(Vec<u8>);
struct SimTxToken<'a>(&'a mut VecDeque<Vec<u8>>);

impl phy::RxToken for SimRxToken {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl phy::TxToken for SimTxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut buf = vec![0; len];
        let r = f(&mut buf);
        self.0.push_back(buf);
        r
    }
}

impl Device for SimDevice {
    type RxToken<'a> = SimRxToken;
    type TxToken<'a> = SimTxToken<'a>;

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ip;
        caps.max_transmission_unit = IP_MTU;
        caps.checksum = ChecksumCapabilities::ignored();
        caps
    }

    fn receive(&mut self, _: Instant) -> Option<(SimRxToken, SimTxToken<'_>)> {
        let packet = self.rx.pop_front()?;
        Some((SimRxToken(packet), SimTxToken(&mut self.tx)))
    }

    fn transmit(&mut self, _: Instant) -> Option<SimTxToken<'_>> {
        (self.tx.len() < DEVICE_QUEUE).then_some(SimTxToken(&mut self.tx))
    }
}

/// A Linux-like TCP receiver with an application that reads at once.
struct Receiver {
    flow: usize,
    isn: u32,
    /// Sender's ISN, once the SYN|ACK arrived.
    irs: Option<u32>,
    /// Next in-order stream offset expected (= bytes delivered).
    rcv_nxt: u64,
    /// Out-of-order ranges, most recently changed first (the SACK order).
    ooo: Vec<(u64, u64)>,
    unacked_segments: u32,
    quickacks: u32,
    delack_gen: u64,
    delack_armed: bool,
    rwnd: u64,
    rwnd_cap: u64,
    rwnd_grown_at: u64,
    rtt_us: u64,
    /// Highest right window edge advertised (it never moves left).
    edge: u64,
    /// Segments that brought nothing new: spurious retransmissions.
    duplicates: u64,
    /// A duplicate to report as a D-SACK in the next ACK.
    dsack: Option<(u64, u64)>,
}

impl Receiver {
    fn new(cell: &Cell, flow: usize) -> Receiver {
        Receiver {
            flow,
            isn: 0x1000_0000,
            irs: None,
            rcv_nxt: 0,
            ooo: Vec::new(),
            unacked_segments: 0,
            quickacks: CLIENT_QUICKACKS,
            delack_gen: 0,
            delack_armed: false,
            rwnd: 64 * 1024,
            rwnd_cap: cell.rwnd_cap,
            rwnd_grown_at: 0,
            rtt_us: cell.rtt_us,
            edge: 0,
            duplicates: 0,
            dsack: None,
        }
    }

    fn syn(&self) -> Ack {
        Ack {
            flow: self.flow,
            syn: true,
            ack: None,
            window: 64240,
            sack: [None; 3],
        }
    }

    fn ack(&mut self) -> Ack {
        self.unacked_segments = 0;
        self.delack_armed = false;
        self.delack_gen += 1;
        let irs = self.irs.unwrap_or(0);
        let wire = |offset: u64| irs.wrapping_add(1).wrapping_add(offset as u32);
        let mut sack = [None; 3];
        let blocks = self
            .dsack
            .take()
            .into_iter()
            .chain(self.ooo.iter().copied());
        for (slot, (start, end)) in sack.iter_mut().zip(blocks) {
            *slot = Some((wire(start), wire(end)));
        }
        self.edge = self.edge.max(self.rcv_nxt + self.rwnd);
        let window = ((self.edge - self.rcv_nxt) >> CLIENT_WSCALE).min(u16::MAX as u64) as u16;
        Ack {
            flow: self.flow,
            syn: false,
            ack: Some(wire(self.rcv_nxt)),
            window,
            sack,
        }
    }

    /// Process one segment; returns whether to ACK now, or to arm the delayed ACK.
    fn on_segment(&mut self, now: u64, seg: Segment) -> Reply {
        if seg.syn {
            self.irs = Some(seg.isn);
            self.rwnd_grown_at = now;
            return Reply::Now;
        }
        if self.irs.is_none() || seg.len == 0 {
            return Reply::None;
        }
        if now >= self.rwnd_grown_at + self.rtt_us {
            self.rwnd = (self.rwnd * 2).min(self.rwnd_cap);
            self.rwnd_grown_at = now;
        }
        let (start, end) = (seg.offset, seg.offset + seg.len);
        if end <= self.rcv_nxt || self.ooo.iter().any(|&(s, e)| s <= start && end <= e) {
            self.duplicates += 1;
            // RFC 2883: report the duplicate in the first SACK block of the ACK.
            self.dsack = Some((start, end));
            return Reply::Now;
        }
        if start > self.rcv_nxt {
            self.add_ooo(start, end);
            return Reply::Now;
        }
        let had_holes = !self.ooo.is_empty();
        self.rcv_nxt = end;
        // Pull in any out-of-order ranges the new data reached.
        while let Some(i) = self.ooo.iter().position(|&(s, _)| s <= self.rcv_nxt) {
            let (_, e) = self.ooo.remove(i);
            self.rcv_nxt = self.rcv_nxt.max(e);
        }
        if had_holes {
            return Reply::Now;
        }
        self.unacked_segments += 1;
        if self.quickacks > 0 {
            self.quickacks -= 1;
            return Reply::Now;
        }
        if self.unacked_segments >= 2 {
            Reply::Now
        } else if self.delack_armed {
            Reply::None
        } else {
            self.delack_armed = true;
            Reply::Delay(self.delack_gen)
        }
    }

    fn add_ooo(&mut self, mut start: u64, mut end: u64) {
        // Merge with every range it touches, then put the result first.
        self.ooo.retain(|&(s, e)| {
            if s <= end && start <= e {
                start = start.min(s);
                end = end.max(e);
                false
            } else {
                true
            }
        });
        self.ooo.insert(0, (start, end));
    }
}

enum Reply {
    None,
    Now,
    Delay(u64),
}

struct Sim {
    cell: Cell,
    now: u64,
    events: BinaryHeap<Event>,
    next_id: u64,
    rng_forward: Rng,
    rng_reverse: Rng,
    /// When the forward bottleneck finishes its current packet.
    link_free_at: u64,
    client_queue: VecDeque<Segment>,
    client_busy: bool,
    flows: Vec<Flow>,
    /// When flow i's client sends its SYN: i × this.
    stagger_us: u64,
    started: bool,
    // gateway
    iface: Interface,
    device: SimDevice,
    sockets: SocketSet<'static>,
    /// One listening socket per flow; the first one is the flow whose stats the
    /// outcome reports (the only flow in single-flow runs).
    handles: Vec<SocketHandle>,
    ingress: VecDeque<Ack>,
    busy_until: u64,
    /// How often each segment in `cell.drop_segments` was sent.
    sends_of_dropped: Vec<u32>,
    out: Outcome,
}

/// One connection: the client's receiver and the gateway application's state.
struct Flow {
    receiver: Receiver,
    /// Bytes the application still has to write (`u64::MAX`: endless).
    app_remaining: u64,
    app_offset: u64,
    sender_isn: Option<u32>,
    highest_sent: u64,
}

fn instant(us: u64) -> Instant {
    Instant::from_micros(us as i64)
}

impl Sim {
    fn new(cell: Cell, app_bytes: u64) -> Sim {
        Sim::with_flows(cell, app_bytes, 1, 0)
    }

    /// `flows` connections over the same path and client queue, the i-th
    /// starting at i × `stagger_us`.
    fn with_flows(cell: Cell, app_bytes: u64, flows: usize, stagger_us: u64) -> Sim {
        let mut device = SimDevice {
            rx: VecDeque::new(),
            tx: VecDeque::new(),
        };
        let mut config = Config::new(HardwareAddress::Ip);
        config.random_seed = cell.seed;
        let mut iface = Interface::new(config, &mut device, instant(0));
        iface.update_ip_addrs(|a| a.push(IpCidr::new(GATEWAY_IP.into(), 24)).unwrap());
        let mut sockets = SocketSet::new(Vec::new());
        let handles = (0..flows)
            .map(|_| sockets.add(Self::listener(&cell)))
            .collect();
        Sim {
            cell,
            now: 0,
            events: BinaryHeap::new(),
            next_id: 0,
            rng_forward: Rng(cell.seed.wrapping_mul(2)),
            rng_reverse: Rng(cell.seed.wrapping_mul(2) + 1),
            link_free_at: 0,
            client_queue: VecDeque::new(),
            client_busy: false,
            flows: (0..flows)
                .map(|i| Flow {
                    receiver: Receiver::new(&cell, i),
                    app_remaining: app_bytes,
                    app_offset: 0,
                    sender_isn: None,
                    highest_sent: 0,
                })
                .collect(),
            stagger_us,
            started: false,
            iface,
            device,
            sockets,
            handles,
            ingress: VecDeque::new(),
            busy_until: 0,
            sends_of_dropped: vec![0; cell.drop_segments.len()],
            out: Outcome::default(),
        }
    }

    fn listener(cell: &Cell) -> tcp::Socket<'static> {
        let mut socket = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; 64 * 1024]),
            tcp::SocketBuffer::new(vec![0; cell.send_buffer]),
        );
        // As promgate's netstack sets them.
        socket.set_congestion_control(if cell.bbr {
            tcp::CongestionControl::Bbr
        } else {
            tcp::CongestionControl::Cubic
        });
        socket.set_ack_delay(Some(Duration::from_millis(5)));
        socket.set_nagle_enabled(false);
        socket.set_wan_mode(cell.wan);
        socket.listen(SERVER_PORT).unwrap();
        socket
    }

    fn schedule(&mut self, at: u64, kind: EventKind) {
        self.next_id += 1;
        self.events.push(Event {
            at,
            id: self.next_id,
            kind,
        });
    }

    /// The reverse path: delay and loss, no rate limit.
    fn client_send(&mut self, ack: Ack) {
        if self.rng_reverse.chance(self.cell.loss) {
            return;
        }
        let at = self.now + self.cell.rtt_us / 2;
        self.schedule(at, EventKind::ToGateway(ack));
    }

    /// The forward path: bottleneck, delay, loss, reordering.
    fn gateway_send(&mut self, seg: Segment) {
        let wire_len = seg.len as f64 + 40.0;
        self.link_free_at =
            self.link_free_at.max(self.now) + (wire_len / self.cell.bottleneck * 1e6).ceil() as u64;
        let mut dropped = false;
        for (i, &(offset, nth)) in self.cell.drop_segments.iter().enumerate() {
            if seg.len > 0 && seg.offset == offset {
                self.sends_of_dropped[i] += 1;
                dropped |= self.sends_of_dropped[i] == nth;
            }
        }
        if self.rng_forward.chance(self.cell.loss) || dropped {
            self.out.forward_losses += u64::from(seg.len > 0);
            return;
        }
        let mut at = self.link_free_at + self.cell.rtt_us / 2;
        if self.rng_forward.chance(self.cell.reorder) {
            at += self.cell.reorder_us;
        }
        self.schedule(at, EventKind::ToClient(seg));
    }

    fn client_start_drain(&mut self) {
        if let Some(seg) = self.client_queue.front() {
            let service = ((seg.len as f64 + 40.0) / self.cell.drain * 1e6).ceil() as u64;
            self.client_busy = true;
            self.schedule(self.now + service.max(1), EventKind::ClientDrained);
        } else {
            self.client_busy = false;
        }
    }

    fn handle(&mut self, kind: EventKind) {
        match kind {
            EventKind::ToClient(seg) => {
                if self.client_queue.len() >= CLIENT_QUEUE {
                    self.out.client_drops += 1;
                } else {
                    self.client_queue.push_back(seg);
                    if !self.client_busy {
                        self.client_start_drain();
                    }
                }
            }
            EventKind::ClientDrained => {
                let Some(seg) = self.client_queue.pop_front() else {
                    return;
                };
                let receiver = &mut self.flows[seg.flow].receiver;
                match receiver.on_segment(self.now, seg) {
                    Reply::None => {}
                    Reply::Now => {
                        let ack = receiver.ack();
                        self.client_send(ack);
                    }
                    Reply::Delay(generation) => {
                        self.schedule(
                            self.now + CLIENT_DELACK_US,
                            EventKind::ClientDelack(seg.flow, generation),
                        );
                    }
                }
                self.client_start_drain();
            }
            EventKind::ClientDelack(flow, generation) => {
                let receiver = &mut self.flows[flow].receiver;
                if receiver.delack_armed && receiver.delack_gen == generation {
                    let ack = receiver.ack();
                    self.client_send(ack);
                }
            }
            EventKind::ClientStart(flow) => {
                let syn = self.flows[flow].receiver.syn();
                self.client_send(syn);
            }
            EventKind::ToGateway(ack) => self.ingress.push_back(ack),
        }
    }

    fn ack_packet(&self, ack: &Ack) -> Vec<u8> {
        let repr = TcpRepr {
            src_port: CLIENT_PORT + ack.flow as u16,
            dst_port: SERVER_PORT,
            control: if ack.syn {
                TcpControl::Syn
            } else {
                TcpControl::None
            },
            seq_number: TcpSeqNumber(
                self.flows[ack.flow]
                    .receiver
                    .isn
                    .wrapping_add(u32::from(!ack.syn)) as i32,
            ),
            ack_number: ack.ack.map(|a| TcpSeqNumber(a as i32)),
            window_len: ack.window,
            window_scale: ack.syn.then_some(CLIENT_WSCALE),
            max_seg_size: ack.syn.then_some(MSS as u16),
            sack_permitted: ack.syn,
            sack_ranges: ack.sack,
            timestamp: None,
            payload: &[],
        };
        let ip = Ipv4Repr {
            src_addr: CLIENT_IP,
            dst_addr: GATEWAY_IP,
            next_header: IpProtocol::Tcp,
            payload_len: repr.buffer_len(),
            hop_limit: 64,
        };
        let caps = ChecksumCapabilities::ignored();
        let mut buf = vec![0; ip.buffer_len() + repr.buffer_len()];
        let mut packet = Ipv4Packet::new_unchecked(&mut buf[..]);
        ip.emit(&mut packet, &caps);
        repr.emit(
            &mut TcpPacket::new_unchecked(packet.payload_mut()),
            &IpAddress::Ipv4(CLIENT_IP),
            &IpAddress::Ipv4(GATEWAY_IP),
            &caps,
        );
        buf
    }

    /// Turn a packet the gateway emitted into what the client will see.
    fn parse_egress(&mut self, buf: &[u8]) -> Option<Segment> {
        let ip = Ipv4Packet::new_checked(buf).ok()?;
        let tcp = TcpPacket::new_checked(ip.payload()).ok()?;
        let seq = tcp.seq_number().0 as u32;
        let flow = usize::from(tcp.dst_port().checked_sub(CLIENT_PORT)?);
        let state = self.flows.get_mut(flow)?;
        if tcp.syn() {
            state.sender_isn = Some(seq);
            return Some(Segment {
                flow,
                syn: true,
                isn: seq,
                offset: 0,
                len: 0,
            });
        }
        let isn = state.sender_isn?;
        let payload = tcp.payload();
        // Stream offsets stay below 2^32 in these runs, so no unwrapping is needed.
        let offset = seq.wrapping_sub(isn.wrapping_add(1)) as u64;
        if payload.is_empty() {
            return None; // pure ACKs and window updates carry nothing the client needs
        }
        if payload
            .iter()
            .enumerate()
            .any(|(i, &b)| b != pattern(offset + i as u64))
        {
            self.out.corrupt += 1;
        }
        let end = offset + payload.len() as u64;
        if offset < state.highest_sent {
            self.out.retransmits += 1;
        }
        state.highest_sent = state.highest_sent.max(end);
        Some(Segment {
            flow,
            syn: false,
            isn,
            offset,
            len: payload.len() as u64,
        })
    }

    /// One wake-up of the gateway loop: a batch of ingress, poll, app writes, poll.
    fn gateway_step(&mut self) {
        let batch = self.ingress.len().min(INGRESS_BATCH);
        for _ in 0..batch {
            let ack = self.ingress.pop_front().unwrap();
            let packet = self.ack_packet(&ack);
            self.device.rx.push_back(packet);
        }
        let now = instant(self.now);
        self.iface.poll(now, &mut self.device, &mut self.sockets);
        let mut wrote = false;
        for &handle in &self.handles {
            let socket = self.sockets.get_mut::<tcp::Socket>(handle);
            // Which flow this socket serves, once it is connected.
            let Some(flow) = socket
                .remote_endpoint()
                .and_then(|ep| ep.port.checked_sub(CLIENT_PORT))
                .and_then(|i| self.flows.get_mut(usize::from(i)))
            else {
                continue;
            };
            // Bounded: each turn fills some of the buffer or stops.
            while flow.app_remaining > 0 && socket.can_send() {
                let offset = flow.app_offset;
                let limit = flow.app_remaining;
                let n = socket
                    .send(|buf| {
                        let n = buf.len().min(limit as usize);
                        for (i, b) in buf[..n].iter_mut().enumerate() {
                            *b = pattern(offset + i as u64);
                        }
                        (n, n)
                    })
                    .unwrap();
                if n == 0 {
                    break;
                }
                flow.app_offset += n as u64;
                flow.app_remaining -= n as u64;
                wrote = true;
            }
        }
        if wrote {
            self.iface.poll(now, &mut self.device, &mut self.sockets);
        }
        let sent = self.device.tx.len();
        let mut data = 0;
        while let Some(packet) = self.device.tx.pop_front() {
            if let Some(seg) = self.parse_egress(&packet) {
                data += u64::from(seg.len > 0);
                self.gateway_send(seg);
            }
        }
        self.out.max_burst = self.out.max_burst.max(data);
        // About 1 µs of CPU per packet handled; at least 1 µs so time always advances.
        self.busy_until = self.now + (batch + sent).max(1) as u64;
    }

    /// When the gateway's timer would wake it: tokio rounds sleeps up to 1 ms.
    fn gateway_timer(&mut self) -> u64 {
        match self.iface.poll_at(instant(self.now), &self.sockets) {
            None => u64::MAX,
            Some(t) => {
                let t = t.total_micros().max(0) as u64;
                if t <= self.now {
                    self.now
                } else {
                    t.div_ceil(1000) * 1000
                }
            }
        }
    }

    /// Run until `end_us` of virtual time, or until `target` bytes arrived in order.
    fn run(&mut self, end_us: u64, target: u64) -> Outcome {
        if !self.started {
            self.started = true;
            for flow in 0..self.flows.len() {
                self.schedule(flow as u64 * self.stagger_us, EventKind::ClientStart(flow));
            }
        }
        let mut steps = 0u64;
        // Every step advances time by at least 1 µs or consumes an event; this caps
        // a runaway loop well above what any cell needs.
        let max_steps = 200_000_000u64;
        while self.now < end_us && steps < max_steps {
            steps += 1;
            let ingress_at = if self.ingress.is_empty() {
                u64::MAX
            } else {
                self.now
            };
            let wake = self.gateway_timer().min(ingress_at).max(self.busy_until);
            let event_at = self.events.peek().map_or(u64::MAX, |e| e.at);
            if event_at == u64::MAX && wake == u64::MAX {
                break;
            }
            if event_at <= wake {
                let event = self.events.pop().unwrap();
                self.now = self.now.max(event.at);
                self.handle(event.kind);
            } else {
                self.now = wake;
                self.gateway_step();
            }
            if self.out.completion_us.is_none() && self.flows[0].receiver.rcv_nxt >= target {
                self.out.completion_us = Some(self.now);
                break;
            }
        }
        assert!(steps < max_steps, "simulation did not converge");
        let socket = self.sockets.get::<tcp::Socket>(self.handles[0]);
        self.out.stats = socket.recovery_stats();
        self.out.rtos = self.out.stats.rtos;
        self.out.delivered = self.flows[0].receiver.rcv_nxt;
        self.out.duplicates = self.flows.iter().map(|f| f.receiver.duplicates).sum();
        self.out.goodput = self.out.delivered as f64 / (self.now.max(1) as f64 / 1e6);
        self.out
    }
}

fn pattern(offset: u64) -> u8 {
    (offset % 251) as u8
}

/// Bulk download for `secs` of virtual time.
fn bulk(cell: Cell, secs: f64) -> Outcome {
    Sim::new(cell, u64::MAX).run((secs * 1e6) as u64, u64::MAX)
}

/// Time to deliver 1 MiB on a fresh connection, from the client's SYN.
fn fetch_1mib(cell: Cell) -> Outcome {
    Sim::new(cell, MIB as u64).run(120_000_000, MIB as u64)
}

/// The cells of the WAN matrix and the LAN, with a label.
fn cells() -> Vec<(String, Cell)> {
    let mut cells = Vec::new();
    for rtt in [10.0, 50.0, 200.0] {
        for loss in [0.0, 0.001, 0.01] {
            cells.push((
                format!("{rtt:>4} ms {:>4}%", loss * 100.0),
                Cell::wan(rtt, loss),
            ));
        }
    }
    cells.push(("LAN 0.2 ms".to_string(), Cell::lan()));
    cells
}

/// Virtual seconds per bulk run: long enough for several loss events at 200 ms.
fn duration_for(cell: &Cell) -> f64 {
    if cell.rtt_us >= 200_000 { 20.0 } else { 10.0 }
}

fn row(out: &Outcome, fetch: &Outcome) -> String {
    format!(
        "{:>7.2} {:>6} {:>5} {:>4} {:>4} {:>6} {:>7}",
        out.goodput / 1e6,
        out.retransmits,
        out.duplicates,
        out.stats.tail_loss_probes,
        out.rtos,
        out.client_drops,
        fetch
            .completion_us
            .map_or("-".to_string(), |us| format!("{}", us / 1000)),
    )
}

fn print_table(send_buffer: usize) {
    println!(
        "send buffer {} KiB; MB/s, retransmitted segments, of them spurious, TLPs, RTOs, client queue drops, 1 MiB fetch ms",
        send_buffer / 1024
    );
    let head = format!(
        "{:>7} {:>6} {:>5} {:>4} {:>4} {:>6} {:>7}",
        "MB/s", "retx", "spur", "tlp", "rto", "drops", "1MiB"
    );
    println!(
        "{:<15} {:>7} | {:<52} | {:<52} | {:<52}",
        "", "", "WAN mode off", "WAN mode, CUBIC", "WAN mode, BBR"
    );
    println!("{:<15} {:>7} | {head} | {head} | {head}", "cell", "ideal");
    for (name, cell) in cells() {
        let secs = duration_for(&cell);
        let mut results = Vec::new();
        for (wan, bbr) in [(false, false), (true, false), (true, true)] {
            let cell = Cell {
                wan,
                bbr,
                send_buffer,
                ..cell
            };
            let out = bulk(cell, secs);
            let fetch = fetch_1mib(cell);
            assert_eq!(out.corrupt + fetch.corrupt, 0, "{name}: corrupt payload");
            results.push(row(&out, &fetch));
        }
        println!(
            "{name:<15} {:>7.2} | {} | {} | {}",
            cell.ideal() / 1e6,
            results[0],
            results[1],
            results[2]
        );
    }
}

/// `WAN_SIM_PRINT=1 cargo test --release --test wan_sim print -- --nocapture`
#[test]
fn print() {
    if std::env::var_os("WAN_SIM_PRINT").is_none() {
        return;
    }
    let buffers = std::env::var("WAN_SIM_BUFFERS").unwrap_or_else(|_| "65536".to_string());
    for buffer in buffers.split(',') {
        print_table(buffer.trim().parse().expect("WAN_SIM_BUFFERS: byte counts"));
    }
}

/// Per cell, the least fraction of the ideal goodput that WAN mode must reach,
/// in the order of `cells()`, with promgate's 64 KiB send buffer and with a
/// 4 MiB one (no LAN cell: without pacing it only measures burst losses). Set
/// a little under what the current code achieves (docs/wan.md in promgate has
/// the measured figures), so that a regression fails.
const MIN_FRACTION_64K: [f64; 10] = [
    0.095, 0.068, 0.02, // 10 ms: 0, 0.1, 1 %
    0.05, 0.04, 0.011, // 50 ms
    0.05, 0.043, 0.012, // 200 ms
    0.85,  // LAN
];
const MIN_FRACTION_4M: [f64; 9] = [
    0.75, 0.075, 0.02, // 10 ms
    0.85, 0.045, 0.011, // 50 ms
    0.8, 0.06, 0.012, // 200 ms
];

/// The same with BBR (WAN mode). The lossy 50 and 200 ms cells stay far below
/// the ideal with a 4 MiB buffer: there the client's 1.1 MB window is about one
/// BDP, and each hole holds its left edge for about an RTT until the resend
/// arrives, so any sender idles for part of each loss episode (with a 4 MB
/// window BBR passes the 1.1 MB "ideal" there; docs/wan.md).
const MIN_FRACTION_BBR_64K: [f64; 10] = [
    0.095, 0.095, 0.065, // 10 ms: 0, 0.1, 1 %
    0.052, 0.05, 0.04, // 50 ms
    0.05, 0.048, 0.037, // 200 ms
    0.85,  // LAN
];
const MIN_FRACTION_BBR_4M: [f64; 10] = [
    0.82, 0.75, 0.63, // 10 ms
    0.87, 0.6, 0.38, // 50 ms
    0.81, 0.57, 0.33, // 200 ms
    0.82, // LAN
];

fn check_cell(name: &str, cell: Cell, min_fraction: f64) {
    check_cell_for(name, cell, min_fraction, duration_for(&cell));
}

/// The BBR regression's run length: shorter for the fast cells (the LAN and
/// 10 ms ramp up within 0.1 s), to keep the suite's time down.
fn bbr_regression_secs(cell: &Cell) -> f64 {
    match cell.rtt_us {
        0..=1000 => 2.0,
        1001..=10_000 => 5.0,
        _ => duration_for(cell),
    }
}

fn check_cell_for(name: &str, cell: Cell, min_fraction: f64, secs: f64) {
    let out = bulk(cell, secs);
    let fraction = out.goodput / cell.ideal();
    if std::env::var_os("WAN_SIM_PRINT").is_some() {
        println!(
            "{name} buffer {} bbr {}: {fraction:.3} of the ideal",
            cell.send_buffer, cell.bbr
        );
    }
    assert_eq!(out.corrupt, 0, "{name}: corrupt payload");
    assert!(
        fraction >= min_fraction,
        "{name}, buffer {}: {:.2} MB/s {out:?} is {fraction:.3} of the ideal {:.2} MB/s, below {min_fraction}",
        cell.send_buffer,
        out.goodput / 1e6,
        cell.ideal() / 1e6,
    );
    if cell.loss == 0.0 && cell.send_buffer <= 64 * 1024 {
        assert_eq!(out.retransmits, 0, "{name}: retransmissions without loss");
        assert_eq!(out.rtos, 0, "{name}: RTOs without loss");
        assert_eq!(
            out.client_drops, 0,
            "{name}: client queue drops without loss"
        );
    }
    if cell.loss > 0.0 {
        assert_eq!(out.duplicates, 0, "{name}: spurious retransmissions");
    }
}

#[test]
#[cfg_attr(debug_assertions, ignore = "about 50 s in debug: run with --release")]
fn wan_sim_regression_64k() {
    for ((name, cell), min) in cells().into_iter().zip(MIN_FRACTION_64K) {
        check_cell(&name, Cell { wan: true, ..cell }, min);
    }
}

#[test]
#[cfg_attr(debug_assertions, ignore = "about 50 s in debug: run with --release")]
fn wan_sim_regression_4m() {
    for ((name, cell), min) in cells().into_iter().zip(MIN_FRACTION_4M) {
        let cell = Cell {
            wan: true,
            send_buffer: 4 << 20,
            ..cell
        };
        check_cell(&name, cell, min);
    }
}

#[test]
#[cfg_attr(debug_assertions, ignore = "about 50 s in debug: run with --release")]
fn wan_sim_regression_bbr_64k() {
    for ((name, cell), min) in cells().into_iter().zip(MIN_FRACTION_BBR_64K) {
        let cell = Cell {
            wan: true,
            bbr: true,
            ..cell
        };
        check_cell_for(&name, cell, min, bbr_regression_secs(&cell));
    }
}

#[test]
#[cfg_attr(debug_assertions, ignore = "about 50 s in debug: run with --release")]
fn wan_sim_regression_bbr_4m() {
    for ((name, cell), min) in cells().into_iter().zip(MIN_FRACTION_BBR_4M) {
        let cell = Cell {
            wan: true,
            bbr: true,
            send_buffer: 4 << 20,
            ..cell
        };
        check_cell_for(&name, cell, min, bbr_regression_secs(&cell));
    }
}

/// Two BBR flows over one path, the second starting `stagger_us` after the
/// first: each one's goodput over 5..10 s of simulated time (B/s), and the
/// client queue's drops.
fn two_bbr_flows(cell: Cell, stagger_us: u64) -> ([f64; 2], u64) {
    let cell = Cell {
        wan: true,
        bbr: true,
        send_buffer: 4 << 20,
        ..cell
    };
    let mut sim = Sim::with_flows(cell, u64::MAX, 2, stagger_us);
    sim.run(5_000_000, u64::MAX);
    let at_5s: Vec<u64> = sim.flows.iter().map(|f| f.receiver.rcv_nxt).collect();
    let out = sim.run(10_000_000, u64::MAX);
    assert_eq!(out.corrupt, 0);
    let rate = |i: usize| (sim.flows[i].receiver.rcv_nxt - at_5s[i]) as f64 / 5.0;
    ([rate(0), rate(1)], out.client_drops)
}

/// The deep-queue bottleneck of the fairness test: 10 MB/s with an unbounded
/// FIFO (BDP 500 KB at 50 ms, under each client window).
fn deep_bottleneck(rtt_ms: f64) -> Cell {
    Cell {
        bottleneck: 10e6,
        ..Cell::wan(rtt_ms, 0.0)
    }
}

/// The shallow-queue bottleneck: the client's 100-datagram queue drained at
/// 10 MB/s (about 14 ms of data).
fn shallow_bottleneck(rtt_ms: f64) -> Cell {
    Cell {
        bottleneck: 1e9,
        drain: 10e6,
        ..Cell::wan(rtt_ms, 0.0)
    }
}

/// `WAN_SIM_PRINT=1 cargo test --release --test wan_sim print_fairness -- --nocapture`:
/// two BBR flows through a deep and a shallow bottleneck queue, at several RTTs
/// and start offsets (not asserted: BBR v1 is not fair through a shallow queue).
#[test]
fn print_fairness() {
    if std::env::var_os("WAN_SIM_PRINT").is_none() {
        return;
    }
    println!("two BBR flows, MB/s over 5..10 s (client queue drops)");
    for (name, cell) in [
        ("deep", deep_bottleneck as fn(f64) -> Cell),
        ("shallow", shallow_bottleneck),
    ] {
        for rtt in [20.0, 50.0, 100.0] {
            let mut line = format!("{name:<8} {rtt:>4} ms:");
            for stagger in [0, 300_000, 1_000_000, 2_000_000] {
                let ([a, b], drops) = two_bbr_flows(cell(rtt), stagger);
                line += &format!(
                    "  +{:.1} s {:.2}/{:.2} ({drops})",
                    stagger as f64 / 1e6,
                    a / 1e6,
                    b / 1e6
                );
            }
            println!("{line}");
        }
    }
}

#[test]
#[cfg_attr(debug_assertions, ignore = "about 20 s in debug: run with --release")]
fn two_bbr_flows_share_the_bottleneck() {
    // Two BBR flows through a 10 MB/s bottleneck with a deep queue at 50 ms, the
    // second starting 1 s after the first. (Through the client's shallow queue
    // they are not within 2x: see `print_fairness` and docs/wan.md.)
    let (rates, _) = two_bbr_flows(deep_bottleneck(50.0), 1_000_000);
    let (lo, hi) = (rates[0].min(rates[1]), rates[0].max(rates[1]));
    assert!(hi <= 2.0 * lo, "unfair: {rates:?} B/s");
    // Together they keep the bottleneck busy (payload share of 10 MB/s: 0.97).
    assert!(lo + hi >= 0.9 * 10e6 * 0.97, "underused: {rates:?} B/s");
}

/// A lossless 50 ms path with the given transmissions dropped, WAN mode on.
fn drops(segments: &'static [(u64, u32)]) -> Outcome {
    let cell = Cell {
        wan: true,
        send_buffer: 1 << 20,
        drop_segments: segments,
        // No faster than the client drains: its queue never overflows.
        bottleneck: 60e6,
        ..Cell::wan(50.0, 0.0)
    };
    let out = fetch_1mib(cell);
    assert_eq!(out.corrupt, 0);
    assert!(out.completion_us.is_some(), "1 MiB not delivered: {out:?}");
    out
}

const SEG: u64 = MSS as u64;

#[test]
fn no_loss_no_retransmission() {
    let out = drops(&[]);
    assert_eq!(
        (out.retransmits, out.rtos, out.stats.tail_loss_probes),
        (0, 0, 0)
    );
}

#[test]
fn one_loss_one_retransmission() {
    let out = drops(&[(100 * SEG, 1)]);
    assert_eq!(out.retransmits, 1, "{out:?}");
    assert_eq!(out.duplicates, 0, "{out:?}");
    assert_eq!(out.rtos, 0, "{out:?}");
}

#[test]
fn two_losses_in_one_window_no_rto() {
    let out = drops(&[(100 * SEG, 1), (105 * SEG, 1)]);
    assert_eq!(out.retransmits, 2, "{out:?}");
    assert_eq!(out.duplicates, 0, "{out:?}");
    assert_eq!(out.rtos, 0, "{out:?}");
}

#[test]
fn lost_retransmission_recovered_without_rto() {
    // RACK notices a lost resend once data sent after it is delivered.
    let out = drops(&[(100 * SEG, 1), (100 * SEG, 2)]);
    assert_eq!(out.retransmits, 2, "{out:?}");
    assert_eq!(out.duplicates, 0, "{out:?}");
    assert_eq!(out.rtos, 0, "{out:?}");
}

#[test]
fn tail_loss_probe_recovers_the_last_segment() {
    // 1 MiB is 759 full segments and a 1096-byte runt; drop the runt.
    let out = drops(&[(759 * SEG, 1)]);
    assert_eq!(out.rtos, 0, "{out:?}");
    assert_eq!(out.stats.tail_loss_probes, 1, "{out:?}");
    assert_eq!(out.retransmits, 1, "{out:?}");
}

/// `WAN_SIM_CELL=200,0.01,1,65536[,1[,4000000]]`: one bulk run (RTT ms, loss, WAN
/// mode 0/1, send buffer, BBR 0/1, the client's window cap), printed in full.
#[test]
fn debug_cell() {
    let Ok(spec) = std::env::var("WAN_SIM_CELL") else {
        return;
    };
    let v: Vec<f64> = spec.split(',').map(|x| x.parse().unwrap()).collect();
    let cell = Cell {
        wan: v[2] != 0.0,
        send_buffer: v[3] as usize,
        bbr: v.get(4).is_some_and(|&b| b != 0.0),
        rwnd_cap: v.get(5).map_or(1_100_000, |&w| w as u64),
        ..Cell::wan(v[0], v[1])
    };
    println!("{:?}", bulk(cell, duration_for(&cell)));
}

#[test]
fn reordering_without_loss_costs_little() {
    // 1 % of data segments overtaken by 2 ms (about 40 later segments at 20 MB/s).
    // RACK's reordering window, opened once reordering is seen, must keep resends
    // of data that was only late rare.
    let cell = Cell {
        wan: true,
        send_buffer: 1 << 20,
        bottleneck: 60e6,
        reorder: 0.01,
        reorder_us: 2000,
        ..Cell::wan(50.0, 0.0)
    };
    let out = bulk(cell, 5.0);
    assert_eq!(out.corrupt, 0);
    let segments = out.delivered / MSS as u64;
    assert!(out.duplicates * 1000 <= segments, "{out:?}");
    assert_eq!(out.rtos, 0, "{out:?}");
}

#[test]
fn pacing_spreads_the_window() {
    // 50 ms, no loss, a 4 MiB buffer: about 1.1 MB in flight. Unpaced, slow
    // start releases back-to-back bursts that overflow the client's 100-datagram
    // queue (122 drops in this run); paced, none.
    let cell = Cell {
        wan: true,
        send_buffer: 4 << 20,
        ..Cell::wan(50.0, 0.0)
    };
    let out = bulk(cell, 5.0);
    assert_eq!(out.corrupt, 0);
    assert_eq!(out.client_drops, 0, "{out:?}");
    assert_eq!(out.retransmits, 0, "{out:?}");
    // The initial window (sent before there is an RTT to pace by) is the largest
    // burst; unpaced, slow start reaches 47 per wake-up here.
    assert!(out.max_burst <= 16, "{out:?}");
}
