//! The tokio shell around the gateway core: one task that owns the UDP
//! socket and the [`Gateway`], and polls every tunnel connection's future
//! ([`Connections`]; what a connection does is its handler's business).
//!
//! The loop waits on one of: datagrams, a stream asking for a poll, a
//! connection's HTTP future, the next timer deadline (boringtun tick or
//! smoltcp retransmit), a command (peer reload), or shutdown. No spin, no
//! lock held across an await.
//!
//! Connections are polled here, in the driver's own task, not spawned: a
//! request that arrives in a datagram is parsed, forwarded and answered
//! without a wake-up crossing to another task or thread, and the answer is
//! in the netstack for the very next poll. On a small request that hop was
//! most of the gateway's latency.

use crate::config::PeerConfig;
use crate::ops::telemetry::PeerView;
use crate::shell::connections::{ConnectionHandler, Connections};
use crate::shell::stream::poll_request_waker;
use promgate_core::gateway::{Clock, Gateway, MAX_DATAGRAM, PeerSnapshot, Settings, Transmit};
use promgate_core::peer::PeerDiff;
use promgate_core::stats::{DropReason, Stats};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::net::UdpSocket;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// Receive calls per wake-up, each of up to RECV_BUFS datagrams (or GRO
/// trains), before the netstack runs, so one busy peer cannot starve timers
/// and streams.
const RECV_ROUNDS: usize = 4;
const RECV_BUFS: usize = 16;

/// Requests to the driver from the rest of the process.
pub enum Command {
    /// Replace the peer set; answers with what changed.
    ApplyPeers(Vec<PeerConfig>, oneshot::Sender<PeerDiff>),
}

/// Datagrams waiting for room in the socket's send buffer. When the kernel
/// says "would block" we keep the datagram and stop pulling from the
/// netstack until the socket is writable again: dropping it instead turns a
/// full send buffer into TCP loss, which smoltcp (no SACK) recovers from
/// slowly. 2048 datagrams is ~3 MB, a few milliseconds at line rate.
const MAX_PENDING: usize = 2048;

/// Largest GSO batch in bytes (the kernel's limit is 64 KiB per send).
const MAX_BATCH_BYTES: usize = 60 * 1024;

/// The sending half of the UDP socket: consecutive datagrams to the same
/// endpoint with the same size go out as one UDP GSO send (one syscall for
/// up to 64 datagrams) where the kernel supports it; a full send buffer
/// queues instead of dropping.
struct UdpOut {
    stats: Arc<Stats>,
    max_segments: usize,
    batch: Vec<u8>,
    batch_dst: Option<SocketAddr>,
    batch_segment: usize,
    batch_count: usize,
    pending: VecDeque<(SocketAddr, Vec<u8>)>,
    spare: Vec<Vec<u8>>,
}

/// What the send path needs from a UDP socket: the real one (through
/// quinn-udp) in the driver, a fake in tests.
trait SendDatagrams {
    /// Sends `transmit`: one datagram, or a GSO batch of `segment_size`
    /// pieces. `WouldBlock` when the socket's send buffer is full.
    fn try_send_batch(&self, transmit: &quinn_udp::Transmit<'_>) -> std::io::Result<()>;
    /// Sends one datagram.
    fn try_send_one(&self, datagram: &[u8], dst: SocketAddr) -> std::io::Result<()>;
}

/// The driver's socket with quinn-udp's state for GSO.
struct QuinnSend<'a> {
    socket: &'a UdpSocket,
    state: &'a quinn_udp::UdpSocketState,
}

impl SendDatagrams for QuinnSend<'_> {
    fn try_send_batch(&self, transmit: &quinn_udp::Transmit<'_>) -> std::io::Result<()> {
        // try_io keeps tokio's readiness in step: a WouldBlock here makes
        // the next writable() really wait.
        self.socket.try_io(tokio::io::Interest::WRITABLE, || {
            self.state
                .try_send(quinn_udp::UdpSockRef::from(self.socket), transmit)
        })
    }

    fn try_send_one(&self, datagram: &[u8], dst: SocketAddr) -> std::io::Result<()> {
        self.socket.try_send_to(datagram, dst).map(|_| ())
    }
}

/// `UdpOut` bound to its socket for one round of sends.
struct UdpSink<'a, S: SendDatagrams> {
    socket: S,
    out: &'a mut UdpOut,
}

impl UdpOut {
    /// `max_segments`: the most datagrams one GSO send may carry.
    fn new(max_segments: usize, stats: Arc<Stats>) -> Self {
        let max_segments = max_segments.clamp(1, 64);
        UdpOut {
            stats,
            max_segments,
            batch: Vec::with_capacity(MAX_BATCH_BYTES + MAX_DATAGRAM),
            batch_dst: None,
            batch_segment: 0,
            batch_count: 0,
            pending: VecDeque::new(),
            spare: Vec::new(),
        }
    }

    fn sink<S: SendDatagrams>(&mut self, socket: S) -> UdpSink<'_, S> {
        UdpSink { socket, out: self }
    }

    fn is_blocked(&self) -> bool {
        !self.pending.is_empty()
    }

    fn queue(&mut self, dst: SocketAddr, datagram: &[u8]) {
        if self.pending.len() >= MAX_PENDING {
            self.stats.drop_packet(DropReason::SendFailed);
            return;
        }
        let mut buf = self.spare.pop().unwrap_or_default();
        buf.clear();
        buf.extend_from_slice(datagram);
        self.pending.push_back((dst, buf));
    }
}

impl<S: SendDatagrams> Transmit for UdpSink<'_, S> {
    fn send_datagram(&mut self, dst: SocketAddr, datagram: &[u8]) {
        let out = &mut *self.out;
        if out.is_blocked() {
            out.queue(dst, datagram);
            return;
        }
        let fits = out.batch_dst == Some(dst)
            && datagram.len() <= out.batch_segment
            // A short segment ends a GSO batch; nothing may follow it.
            && out.batch.len().is_multiple_of(out.batch_segment)
            && out.batch_count < out.max_segments
            && out.batch.len() + datagram.len() <= MAX_BATCH_BYTES;
        if !fits {
            self.send_batch();
            let out = &mut *self.out;
            out.batch_dst = Some(dst);
            out.batch_segment = datagram.len().max(1);
        }
        let out = &mut *self.out;
        out.batch.extend_from_slice(datagram);
        out.batch_count += 1;
    }
}

impl<S: SendDatagrams> UdpSink<'_, S> {
    /// Sends the current GSO batch; on a full buffer its datagrams are queued.
    fn send_batch(&mut self) {
        let out = &mut *self.out;
        let Some(dst) = out.batch_dst.take() else {
            return;
        };
        if out.batch.is_empty() {
            return;
        }
        let transmit = quinn_udp::Transmit {
            destination: dst,
            ecn: None,
            contents: &out.batch,
            segment_size: (out.batch_count > 1).then_some(out.batch_segment),
            src_ip: None,
        };
        match self.socket.try_send_batch(&transmit) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                let batch = std::mem::take(&mut out.batch);
                for d in batch.chunks(out.batch_segment) {
                    out.queue(dst, d);
                }
                out.batch = batch;
            }
            Err(_) => {
                for _ in 0..out.batch_count {
                    out.stats.drop_packet(DropReason::SendFailed);
                }
            }
        }
        out.batch.clear();
        out.batch_count = 0;
    }

    /// Sends the batch, then queued datagrams until the socket would block.
    /// True when nothing is left waiting.
    fn flush(&mut self) -> bool {
        self.send_batch();
        let out = &mut *self.out;
        while let Some((dst, buf)) = out.pending.front() {
            match self.socket.try_send_one(buf, *dst) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
                Err(_) => out.stats.drop_packet(DropReason::SendFailed),
                Ok(()) => {}
            }
            if let Some((_, buf)) = out.pending.pop_front() {
                out.spare.push(buf);
            }
        }
        true
    }
}

/// Why the driver could not run.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("cannot register the UDP socket with the runtime: {0}")]
    Register(#[source] std::io::Error),
    #[error("cannot set up the UDP socket for segmented sends: {0}")]
    SocketState(#[source] std::io::Error),
}

/// The gateway core, the connections it accepted, and how to reach the
/// rest of the process.
pub struct Driver {
    gateway: Gateway,
    /// Signalled through the core's poll-request waker.
    notify: Arc<Notify>,
    conns: Connections,
    peer_view: PeerView,
    /// How long open connections may take to finish after shutdown.
    grace: Duration,
}

impl Driver {
    /// Builds the gateway core with its poll-request waker wired to this
    /// driver, seeded and clocked from this machine.
    pub fn new(
        settings: &Settings,
        peers: &[PeerConfig],
        stats: Arc<Stats>,
        handler: Arc<dyn ConnectionHandler>,
        peer_view: PeerView,
        grace: Duration,
    ) -> Self {
        let notify = Arc::new(Notify::new());
        let clock = Clock {
            poll_request: poll_request_waker(notify.clone()),
            seed: rand_core::RngCore::next_u64(&mut rand_core::OsRng),
            now: Instant::now(),
            unix_now: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default(),
        };
        Driver {
            gateway: Gateway::new(settings, peers, stats, clock),
            notify,
            conns: Connections::new(handler),
            peer_view,
            grace,
        }
    }

    /// Serves until `shutdown` and the drain after it. `socket` is the
    /// gateway's UDP socket, non-blocking; it is registered with the
    /// runtime this future runs on.
    pub async fn run(
        mut self,
        socket: std::net::UdpSocket,
        mut commands: mpsc::Receiver<Command>,
        shutdown: CancellationToken,
    ) -> Result<(), DriverError> {
        let mut io = UdpIo::new(socket, self.gateway.stats().clone())?;
        self.publish_peers();
        let mut timer = Timer::new();
        let mut drain_deadline: Option<Instant> = None;
        loop {
            timer.arm(self.gateway.poll_at(Instant::now()));
            tokio::select! {
                _ = shutdown.cancelled(), if drain_deadline.is_none() => {
                    drain_deadline = Some(self.start_drain());
                }
                r = io.udp.writable(), if io.out.is_blocked() => {
                    if r.is_ok() {
                        io.sink().flush();
                    }
                }
                r = io.udp.readable() => {
                    if r.is_ok() {
                        io.receive(&mut self.gateway);
                    }
                }
                _ = self.notify.notified() => {}
                _ = self.conns.next_finished() => {}
                _ = timer.fired() => {}
                Some(cmd) = commands.recv() => self.command(cmd, &mut io),
            }
            let now = Instant::now();
            self.poll_gateway(now, &mut io);
            if let Some(deadline) = drain_deadline
                && self.drained(now, deadline, &mut io)
            {
                return Ok(());
            }
        }
    }

    /// Runs what the wake-up made ready: the connections it woke (so that
    /// what they write goes out in this poll), the netstack, then the
    /// connections it accepted.
    fn poll_gateway(&mut self, now: Instant, io: &mut UdpIo) {
        self.conns.run_ready();
        let mut sink = io.sink();
        // Pull more from the netstack only once the socket has taken
        // everything queued; its TCP sees the delay as a slower link.
        if sink.flush() {
            self.gateway.poll(now, &mut sink);
            sink.flush();
        }
        self.conns.accept(&mut self.gateway);
    }

    fn command(&mut self, cmd: Command, io: &mut UdpIo) {
        match cmd {
            Command::ApplyPeers(peers, reply) => {
                let mut sink = io.sink();
                let diff = self.gateway.apply_peers(Instant::now(), &peers, &mut sink);
                sink.flush();
                self.publish_peers();
                let _ = reply.send(diff);
            }
        }
    }

    /// Shutdown: connections finish what is in flight; new ones are closed.
    /// Returns when the grace period ends.
    fn start_drain(&mut self) -> Instant {
        tracing::info!(open = self.gateway.open_connections(), grace = ?self.grace, "shutting down: draining tunnel connections");
        self.conns.start_drain();
        Instant::now() + self.grace
    }

    /// True when the drain is over: every connection closed, or the grace
    /// period ended and what remained was reset.
    fn drained(&mut self, now: Instant, deadline: Instant, io: &mut UdpIo) -> bool {
        if self.gateway.open_connections() == 0 {
            return true;
        }
        if now < deadline {
            return false;
        }
        tracing::warn!(
            open = self.gateway.open_connections(),
            "grace period over: resetting remaining connections"
        );
        self.gateway.abort_connections();
        let mut sink = io.sink();
        self.gateway.poll(now, &mut sink);
        sink.flush();
        true
    }

    fn publish_peers(&self) {
        let snapshot: Vec<PeerSnapshot> = self.gateway.snapshot();
        if let Ok(mut v) = self.peer_view.write() {
            *v = snapshot;
        }
    }
}

/// The core's next deadline as a tokio timer.
struct Timer {
    sleep: Pin<Box<tokio::time::Sleep>>,
    at: Instant,
}

impl Timer {
    fn new() -> Self {
        let now = Instant::now();
        Timer {
            sleep: Box::pin(tokio::time::sleep_until(now.into())),
            at: now,
        }
    }

    /// Re-arms only when the deadline moved earlier or the timer fired; a
    /// later deadline just costs one early, empty turn. Moving a tokio
    /// timer earlier writes to the reactor's eventfd (one more syscall and
    /// epoll_wait), and each request arms a delayed ACK, so re-arming on
    /// every turn cost that per request.
    fn arm(&mut self, deadline: Instant) {
        let deadline = deadline.max(Instant::now());
        if deadline < self.at || self.sleep.is_elapsed() {
            self.sleep.as_mut().reset(deadline.into());
            self.at = deadline;
        }
    }

    async fn fired(&mut self) {
        (&mut self.sleep).await;
    }
}

/// The UDP socket with its receive buffers and its send path.
struct UdpIo {
    udp: UdpSocket,
    state: quinn_udp::UdpSocketState,
    /// Allocated once: each holds one datagram, or a GRO train of
    /// same-sized datagrams from one source.
    rx_bufs: [Vec<u8>; RECV_BUFS],
    rx_meta: [quinn_udp::RecvMeta; RECV_BUFS],
    out: UdpOut,
}

impl UdpIo {
    fn new(socket: std::net::UdpSocket, stats: Arc<Stats>) -> Result<Self, DriverError> {
        let udp = UdpSocket::from_std(socket).map_err(DriverError::Register)?;
        let state = quinn_udp::UdpSocketState::new(quinn_udp::UdpSockRef::from(&udp))
            .map_err(DriverError::SocketState)?;
        let out = UdpOut::new(state.max_gso_segments(), stats);
        Ok(UdpIo {
            udp,
            state,
            rx_bufs: std::array::from_fn(|_| vec![0u8; 64 * 1024]),
            rx_meta: [quinn_udp::RecvMeta::default(); RECV_BUFS],
            out,
        })
    }

    fn sink(&mut self) -> UdpSink<'_, QuinnSend<'_>> {
        self.out.sink(QuinnSend {
            socket: &self.udp,
            state: &self.state,
        })
    }

    /// Hands what the socket holds to the gateway: up to RECV_ROUNDS
    /// recvmmsg calls (GRO where the kernel coalesces), all under one
    /// timestamp.
    fn receive(&mut self, gateway: &mut Gateway) {
        let now = Instant::now();
        for _ in 0..RECV_ROUNDS {
            let mut slices = self
                .rx_bufs
                .each_mut()
                .map(|b| std::io::IoSliceMut::new(&mut b[..]));
            let (udp, state, meta) = (&self.udp, &self.state, &mut self.rx_meta);
            let got = udp.try_io(tokio::io::Interest::READABLE, || {
                state.recv(quinn_udp::UdpSockRef::from(udp), &mut slices, meta)
            });
            let Ok(n) = got else { break };
            let mut sink = self.out.sink(QuinnSend {
                socket: &self.udp,
                state: &self.state,
            });
            for (buf, meta) in self.rx_bufs.iter().zip(self.rx_meta.iter()).take(n) {
                let data = &buf[..meta.len.min(buf.len())];
                for datagram in data.chunks(meta.stride.max(1)) {
                    gateway.handle_datagram(now, meta.addr, datagram, &mut sink);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::{Cell, RefCell};

    /// One recorded batch send: destination, bytes, GSO segment size.
    type Batch = (SocketAddr, Vec<u8>, Option<usize>);

    /// A socket that records sends and refuses them while `full` is set.
    #[derive(Default)]
    struct FakeSocket {
        full: Cell<bool>,
        /// (destination, bytes, GSO segment size) per batch send.
        batches: RefCell<Vec<Batch>>,
        singles: RefCell<Vec<(SocketAddr, Vec<u8>)>>,
    }

    impl SendDatagrams for &FakeSocket {
        fn try_send_batch(&self, t: &quinn_udp::Transmit<'_>) -> std::io::Result<()> {
            if self.full.get() {
                return Err(std::io::ErrorKind::WouldBlock.into());
            }
            self.batches
                .borrow_mut()
                .push((t.destination, t.contents.to_vec(), t.segment_size));
            Ok(())
        }
        fn try_send_one(&self, d: &[u8], dst: SocketAddr) -> std::io::Result<()> {
            if self.full.get() {
                return Err(std::io::ErrorKind::WouldBlock.into());
            }
            self.singles.borrow_mut().push((dst, d.to_vec()));
            Ok(())
        }
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([192, 0, 2, 1], port))
    }

    #[test]
    fn same_size_datagrams_to_one_endpoint_go_out_as_one_gso_send() {
        let sock = FakeSocket::default();
        let mut out = UdpOut::new(64, Arc::new(Stats::default()));
        let mut sink = out.sink(&sock);
        for i in 0..5u8 {
            sink.send_datagram(addr(1), &[i; 100]);
        }
        // A shorter datagram may end a batch; one to another endpoint starts a new one.
        sink.send_datagram(addr(1), &[9; 40]);
        sink.send_datagram(addr(2), &[7; 100]);
        assert!(sink.flush());
        let b = sock.batches.borrow();
        assert_eq!(
            b.len(),
            2,
            "{:?}",
            b.iter().map(|x| (x.0, x.1.len(), x.2)).collect::<Vec<_>>()
        );
        assert_eq!((b[0].0, b[0].1.len(), b[0].2), (addr(1), 540, Some(100)));
        assert_eq!((b[1].0, b[1].1.len(), b[1].2), (addr(2), 100, None));
    }

    #[test]
    fn a_batch_never_exceeds_the_segment_limit() {
        let sock = FakeSocket::default();
        let mut out = UdpOut::new(4, Arc::new(Stats::default()));
        let mut sink = out.sink(&sock);
        for _ in 0..10 {
            sink.send_datagram(addr(1), &[1; 100]);
        }
        sink.flush();
        let sizes: Vec<usize> = sock
            .batches
            .borrow()
            .iter()
            .map(|b| b.1.len() / 100)
            .collect();
        assert_eq!(sizes, vec![4, 4, 2]);
    }

    #[test]
    fn a_full_socket_queues_in_order_and_flush_sends_the_queue_later() {
        let sock = FakeSocket::default();
        let stats = Arc::new(Stats::default());
        let mut out = UdpOut::new(64, stats.clone());
        sock.full.set(true);
        {
            let mut sink = out.sink(&sock);
            for i in 0..3u8 {
                sink.send_datagram(addr(1), &[i; 100]);
            }
            assert!(!sink.flush(), "flush claimed success on a full socket");
            // While blocked, new datagrams queue behind the old ones.
            sink.send_datagram(addr(2), &[3; 50]);
        }
        assert!(out.is_blocked());
        assert_eq!(out.pending.len(), 4);
        sock.full.set(false);
        assert!(out.sink(&sock).flush());
        assert!(!out.is_blocked());
        let sent: Vec<(SocketAddr, u8)> = sock
            .singles
            .borrow()
            .iter()
            .map(|(a, d)| (*a, d[0]))
            .collect();
        assert_eq!(
            sent,
            vec![(addr(1), 0), (addr(1), 1), (addr(1), 2), (addr(2), 3)]
        );
        assert_eq!(
            stats.dropped(DropReason::SendFailed),
            0,
            "nothing may be lost"
        );
    }
}
