//! The tokio shell around the gateway core: one task that owns the UDP
//! socket and the [`Gateway`], and spawns an HTTP task per tunnel connection.
//!
//! The loop waits on one of: datagrams, a stream asking for a poll, the next
//! timer deadline (boringtun tick or smoltcp retransmit), a command (peer
//! reload, status), or shutdown. No spin, no lock held across an await.

use crate::config::PeerConfig;
use crate::gateway::{Gateway, MAX_DATAGRAM, PeerSnapshot, Transmit};
use crate::peer::PeerDiff;
use crate::proxy::Proxy;
use crate::stats::{DropReason, Stats};
use crate::telemetry::PeerView;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// Datagrams read per wake-up before the netstack runs, so one busy peer
/// cannot starve timers and streams.
const RECV_BATCH: usize = 64;

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

struct UdpSink<'a> {
    socket: &'a UdpSocket,
    stats: &'a Stats,
    pending: &'a mut std::collections::VecDeque<(SocketAddr, Vec<u8>)>,
    spare: &'a mut Vec<Vec<u8>>,
}

impl Transmit for UdpSink<'_> {
    fn send_datagram(&mut self, dst: SocketAddr, datagram: &[u8]) {
        if self.pending.is_empty() {
            match self.socket.try_send_to(datagram, dst) {
                Ok(_) => return,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => {
                    // Unreachable destination and the like: UDP is best effort.
                    self.stats.drop_packet(DropReason::SendFailed);
                    return;
                }
            }
        }
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

impl UdpSink<'_> {
    /// Sends queued datagrams until the socket would block. True when all went.
    fn flush(&mut self) -> bool {
        while let Some((dst, buf)) = self.pending.front() {
            match self.socket.try_send_to(buf, *dst) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
                Err(_) => self.stats.drop_packet(DropReason::SendFailed),
                Ok(_) => {}
            }
            if let Some((_, buf)) = self.pending.pop_front() {
                self.spare.push(buf);
            }
        }
        true
    }
}

pub struct Driver {
    pub gateway: Gateway,
    pub socket: UdpSocket,
    pub notify: Arc<Notify>,
    pub proxy: Arc<Proxy>,
    pub peer_view: PeerView,
    /// How long open connections may take to finish after shutdown.
    pub grace: Duration,
}

impl Driver {
    pub async fn run(mut self, mut commands: mpsc::Receiver<Command>, shutdown: CancellationToken) {
        let conn_shutdown = CancellationToken::new();
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let stats = self.gateway.stats().clone();
        self.publish_peers();
        let mut drain_deadline: Option<Instant> = None;
        let mut pending = std::collections::VecDeque::new();
        let mut spare: Vec<Vec<u8>> = Vec::new();
        loop {
            let blocked = !pending.is_empty();
            let now = Instant::now();
            let deadline = self.gateway.poll_at(now);
            let sleep = tokio::time::sleep_until(deadline.max(now).into());
            tokio::select! {
                _ = shutdown.cancelled(), if drain_deadline.is_none() => {
                    tracing::info!(open = self.gateway.open_connections(), grace = ?self.grace, "shutting down: draining tunnel connections");
                    conn_shutdown.cancel();
                    drain_deadline = Some(Instant::now() + self.grace);
                }
                r = self.socket.writable(), if blocked => {
                    if r.is_ok() {
                        UdpSink { socket: &self.socket, stats: &stats, pending: &mut pending, spare: &mut spare }.flush();
                    }
                }
                r = self.socket.readable() => {
                    if r.is_ok() {
                        let now = Instant::now();
                        let mut sink = UdpSink { socket: &self.socket, stats: &stats, pending: &mut pending, spare: &mut spare };
                        for _ in 0..RECV_BATCH {
                            match self.socket.try_recv_from(&mut buf) {
                                Ok((n, src)) => self.gateway.handle_datagram(now, src, &buf[..n], &mut sink),
                                Err(_) => break,
                            }
                        }
                    }
                }
                _ = self.notify.notified() => {}
                _ = sleep => {}
                Some(cmd) = commands.recv() => self.handle_command(cmd),
            }
            let now = Instant::now();
            let mut sink = UdpSink {
                socket: &self.socket,
                stats: &stats,
                pending: &mut pending,
                spare: &mut spare,
            };
            // Pull more from the netstack only once the socket has taken
            // everything queued; its TCP sees the delay as a slower link.
            if sink.flush() {
                self.gateway.poll(now, &mut sink);
            }
            for (info, stream) in self.gateway.take_accepted() {
                if drain_deadline.is_some() {
                    continue; // dropping the stream closes it
                }
                tokio::spawn(self.proxy.clone().serve_connection(
                    info,
                    stream,
                    conn_shutdown.clone(),
                ));
            }
            if let Some(d) = drain_deadline {
                if self.gateway.open_connections() == 0 {
                    break;
                }
                if now >= d {
                    tracing::warn!(
                        open = self.gateway.open_connections(),
                        "grace period over: resetting remaining connections"
                    );
                    self.gateway.abort_connections();
                    let mut sink = UdpSink {
                        socket: &self.socket,
                        stats: &stats,
                        pending: &mut pending,
                        spare: &mut spare,
                    };
                    self.gateway.poll(now, &mut sink);
                    sink.flush();
                    break;
                }
            }
        }
    }

    fn handle_command(&mut self, cmd: Command) {
        match cmd {
            Command::ApplyPeers(peers, reply) => {
                let stats = self.gateway.stats().clone();
                let (mut pending, mut spare) = (std::collections::VecDeque::new(), Vec::new());
                let mut sink = UdpSink {
                    socket: &self.socket,
                    stats: &stats,
                    pending: &mut pending,
                    spare: &mut spare,
                };
                let diff = self.gateway.apply_peers(Instant::now(), &peers, &mut sink);
                sink.flush();
                self.publish_peers();
                let _ = reply.send(diff);
            }
        }
    }

    fn publish_peers(&self) {
        let snapshot: Vec<PeerSnapshot> = self.gateway.snapshot();
        if let Ok(mut v) = self.peer_view.write() {
            *v = snapshot;
        }
    }
}
