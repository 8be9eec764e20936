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

struct UdpSink<'a> {
    socket: &'a UdpSocket,
    stats: &'a Stats,
}

impl Transmit for UdpSink<'_> {
    fn send_datagram(&mut self, dst: SocketAddr, datagram: &[u8]) {
        if self.socket.try_send_to(datagram, dst).is_err() {
            self.stats.drop_packet(DropReason::SendFailed);
        }
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
        loop {
            let now = Instant::now();
            let deadline = self.gateway.poll_at(now);
            let sleep = tokio::time::sleep_until(deadline.max(now).into());
            tokio::select! {
                _ = shutdown.cancelled(), if drain_deadline.is_none() => {
                    tracing::info!(open = self.gateway.open_connections(), grace = ?self.grace, "shutting down: draining tunnel connections");
                    conn_shutdown.cancel();
                    drain_deadline = Some(Instant::now() + self.grace);
                }
                r = self.socket.readable() => {
                    if r.is_ok() {
                        let now = Instant::now();
                        let mut sink = UdpSink { socket: &self.socket, stats: &stats };
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
            };
            self.gateway.poll(now, &mut sink);
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
                    };
                    self.gateway.poll(now, &mut sink);
                    break;
                }
            }
        }
    }

    fn handle_command(&mut self, cmd: Command) {
        match cmd {
            Command::ApplyPeers(peers, reply) => {
                let stats = self.gateway.stats().clone();
                let mut sink = UdpSink {
                    socket: &self.socket,
                    stats: &stats,
                };
                let diff = self.gateway.apply_peers(Instant::now(), &peers, &mut sink);
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
