//! The in-process lab shared by the integration tests: a test peer built on
//! boringtun plus a client-side smoltcp stack, the gateway core stepped by
//! hand, and the real proxy in front of a real HTTP server on loopback.
//!
//! Time is virtual: tests run on tokio's paused clock
//! (`#[tokio::test(start_paused = true)]`), the lab reads its `now` from
//! that clock and, when nothing in the tunnel moves, sleeps until the
//! gateway's or a peer's next deadline, which tokio reaches at once when
//! nothing else is ready. A 60 s idle timeout takes milliseconds. The HTTP
//! side (proxy and upstream) runs through the driver's own
//! [`Connections`] on the same clock. One clock the lab does not steer:
//! boringtun's timers read the wall clock (see crates/core/src/lib.rs), so no
//! test waits for a WireGuard timer.
#![allow(dead_code, unreachable_pub)]

use boringtun::noise::{Tunn, TunnResult};
use boringtun::x25519::{PublicKey, StaticSecret};
use promgate::config::{GatewayConfig, Origin, PeerConfig, Role};
use promgate::ops::health::Health;
use promgate::ops::telemetry::Telemetry;
use promgate::shell::connections::Connections;
use promgate::shell::stream::poll_request_waker;
use promgate::web::proxy::Proxy;
use promgate_core::gateway::Gateway;
use promgate_core::keys::PrivateKey;
use promgate_core::stats::Stats;
#[allow(unused_imports)]
pub use promgate_core::test_packets as packets;
use smoltcp::iface::{Config as IfaceConfig, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{Device, DeviceCapabilities, Medium};
use smoltcp::socket::tcp;
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr};
use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;

pub const GW: Ipv4Addr = Ipv4Addr::new(10, 13, 13, 1);
pub const GW6: std::net::Ipv6Addr = std::net::Ipv6Addr::new(0xfd13, 0, 0, 0, 0, 0, 0, 1);

// ---------------------------------------------------------------------------
// A real HTTP upstream on loopback.

pub async fn echo_request(uri: axum::http::Uri, body: String) -> String {
    format!("uri={uri}\nbody={body}")
}

pub async fn start_upstream() -> SocketAddr {
    use axum::routing::get;
    let app = axum::Router::new()
        .route("/hello", get(|| async { "hello from upstream" }))
        .route(
            "/headers",
            get(|h: axum::http::HeaderMap| async move {
                let v = |n: &str| {
                    h.get(n)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("-")
                        .to_string()
                };
                format!(
                    "xff={} peer={} host={}",
                    v("x-forwarded-for"),
                    v("x-promgate-peer"),
                    v("host")
                )
            }),
        )
        .route("/big", get(|| async { vec![b'x'; 4 << 20] }))
        .route(
            "/-/ready",
            get(|| async { "Prometheus Server is Ready.\n" }),
        )
        .route(
            "/api/v1/admin/tsdb/snapshot",
            axum::routing::post(|| async { "snapshot" }),
        )
        // Echoes what a scoped request became, for the scope test.
        .route("/api/v1/query", get(echo_request).post(echo_request))
        .route("/api/v1/series", get(echo_request).post(echo_request))
        .route("/api/v1/targets", get(|| async { "all targets" }))
        .route(
            "/api/v1/alerts",
            get(|| async {
                r#"{"status":"success","data":{"alerts":[
                    {"labels":{"alertname":"TeamADown","namespace":"team-a"},"state":"firing"},
                    {"labels":{"alertname":"TeamBDown","namespace":"team-b"},"state":"firing"}]}}"#
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

// ---------------------------------------------------------------------------
// The test peer: boringtun + smoltcp.

#[derive(Default)]
pub struct Queues {
    pub rx: VecDeque<Vec<u8>>,
    pub tx: VecDeque<Vec<u8>>,
}

pub struct Rx(Vec<u8>);
pub struct Tx<'a>(&'a mut VecDeque<Vec<u8>>);

impl smoltcp::phy::RxToken for Rx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}
impl smoltcp::phy::TxToken for Tx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut b = vec![0; len];
        let r = f(&mut b);
        self.0.push_back(b);
        r
    }
}
impl Device for Queues {
    type RxToken<'a> = Rx;
    type TxToken<'a> = Tx<'a>;
    fn receive(&mut self, _: smoltcp::time::Instant) -> Option<(Rx, Tx<'_>)> {
        let p = self.rx.pop_front()?;
        Some((Rx(p), Tx(&mut self.tx)))
    }
    fn transmit(&mut self, _: smoltcp::time::Instant) -> Option<Tx<'_>> {
        Some(Tx(&mut self.tx))
    }
    fn capabilities(&self) -> DeviceCapabilities {
        let mut c = DeviceCapabilities::default();
        c.medium = Medium::Ip;
        c.max_transmission_unit = 1420;
        c
    }
}

pub struct TestPeer {
    pub tunn: Tunn,
    pub iface: Interface,
    pub sockets: SocketSet<'static>,
    pub dev: Queues,
    /// The peer's UDP endpoint as the gateway sees it.
    pub endpoint: SocketAddr,
    pub epoch: Instant,
    pub next_port: u16,
    pub received: usize,
    pub responses: std::collections::HashMap<SocketHandle, Vec<u8>>,
    pub pending: std::collections::HashMap<SocketHandle, Vec<u8>>,
    /// Handshake initiations started by hand, sent first.
    pub handshakes: Vec<Vec<u8>>,
}

impl TestPeer {
    pub fn new(
        secret: &StaticSecret,
        gateway_public: PublicKey,
        inner: Ipv4Addr,
        endpoint_port: u16,
    ) -> Self {
        let tunn = Tunn::new(
            secret.clone(),
            gateway_public,
            None,
            None,
            u32::from(endpoint_port),
            None,
        );
        let mut dev = Queues::default();
        let mut cfg = IfaceConfig::new(HardwareAddress::Ip);
        cfg.random_seed = u64::from(endpoint_port);
        let mut iface = Interface::new(cfg, &mut dev, smoltcp::time::Instant::from_millis(0));
        iface.update_ip_addrs(|a| {
            a.push(IpCidr::new(IpAddress::Ipv4(inner), 24)).unwrap();
        });
        iface.routes_mut().add_default_ipv4_route(GW).unwrap();
        TestPeer {
            tunn,
            iface,
            sockets: SocketSet::new(Vec::new()),
            dev,
            endpoint: SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10)), endpoint_port),
            epoch: now(),
            next_port: 40000,
            received: 0,
            responses: Default::default(),
            pending: Default::default(),
            handshakes: Vec::new(),
        }
    }

    /// The peer's smoltcp time: the lab's clock since the peer was made.
    pub fn ts(&self) -> smoltcp::time::Instant {
        smoltcp::time::Instant::from_micros(
            now().saturating_duration_since(self.epoch).as_micros() as i64
        )
    }

    /// When this peer's TCP next wants to run (a retransmission, a delayed
    /// ACK), as a lab instant.
    pub fn poll_at(&mut self) -> Option<Instant> {
        let ts = self.ts();
        self.iface
            .poll_at(ts, &self.sockets)
            .map(|t| self.epoch + Duration::from_micros(t.total_micros().max(0) as u64))
    }

    /// Gives the peer an IPv6 tunnel address too, routed via the gateway's.
    pub fn add_ipv6(&mut self, inner: std::net::Ipv6Addr) {
        self.iface.update_ip_addrs(|a| {
            a.push(IpCidr::new(IpAddress::Ipv6(inner), 64)).unwrap();
        });
        self.iface.routes_mut().add_default_ipv6_route(GW6).unwrap();
    }

    /// Opens a TCP connection to `dst:port` and queues `request` to send.
    pub fn connect(&mut self, dst: impl Into<IpAddr>, port: u16, request: &str) -> SocketHandle {
        let mut s = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; 1 << 20]),
            tcp::SocketBuffer::new(vec![0; 64 << 10]),
        );
        s.set_ack_delay(None);
        let local = self.next_port;
        self.next_port += 1;
        s.connect(
            self.iface.context(),
            (IpAddress::from(dst.into()), port),
            local,
        )
        .unwrap();
        let h = self.sockets.add(s);
        self.pending.insert(h, request.as_bytes().to_vec());
        h
    }

    /// Datagrams the peer wants to send to the gateway now.
    pub fn outgoing(&mut self) -> Vec<Vec<u8>> {
        let ts = self.ts();
        self.iface.poll(ts, &mut self.dev, &mut self.sockets);
        for (h, data) in self.pending.iter_mut() {
            let s = self.sockets.get_mut::<tcp::Socket>(*h);
            if s.may_send() && !data.is_empty() {
                let n = s.send_slice(data).unwrap_or(0);
                data.drain(..n);
            }
        }
        self.iface.poll(ts, &mut self.dev, &mut self.sockets);
        let mut out = std::mem::take(&mut self.handshakes);
        let mut buf = vec![0u8; 65536];
        while let Some(p) = self.dev.tx.pop_front() {
            if let TunnResult::WriteToNetwork(d) = self.tunn.encapsulate(&p, &mut buf) {
                out.push(d.to_vec());
            }
        }
        if let TunnResult::WriteToNetwork(d) = self.tunn.update_timers(&mut buf) {
            out.push(d.to_vec());
        }
        out
    }

    /// Starts a new handshake now, as the peer's timers would after a lost
    /// session (see the module doc: the lab does not steer boringtun's
    /// clock). The initiation goes out with the next [`Self::outgoing`].
    pub fn start_handshake(&mut self) {
        let mut buf = vec![0u8; 256];
        if let TunnResult::WriteToNetwork(d) = self.tunn.format_handshake_initiation(&mut buf, true)
        {
            self.handshakes.push(d.to_vec());
        }
    }

    /// Handles a datagram from the gateway; returns datagrams to send back.
    pub fn incoming(&mut self, datagram: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 65536];
        let mut input: &[u8] = datagram;
        loop {
            match self.tunn.decapsulate(None, input, &mut buf) {
                TunnResult::WriteToNetwork(d) => {
                    out.push(d.to_vec());
                    input = &[];
                }
                TunnResult::WriteToTunnelV4(p, _) | TunnResult::WriteToTunnelV6(p, _) => {
                    self.received += 1;
                    if std::env::var("TUNNEL_TRACE").is_ok() {
                        eprintln!(
                            "{} <- {:?}",
                            self.endpoint,
                            smoltcp::wire::Ipv4Packet::new_checked(&p[..]).map(|ip| {
                                smoltcp::wire::TcpPacket::new_checked(ip.payload()).map(|t| {
                                    format!(
                                        "{}->{} {}:{} syn={} ack={} fin={} rst={} len={}",
                                        ip.src_addr(),
                                        ip.dst_addr(),
                                        t.src_port(),
                                        t.dst_port(),
                                        t.syn(),
                                        t.ack(),
                                        t.fin(),
                                        t.rst(),
                                        t.payload().len()
                                    )
                                })
                            })
                        );
                    }
                    self.dev.rx.push_back(p.to_vec());
                    break;
                }
                _ => break,
            }
        }
        out
    }

    pub fn response(&mut self, h: SocketHandle) -> Option<String> {
        let s = self.sockets.get_mut::<tcp::Socket>(h);
        let mut data = Vec::new();
        while s.can_recv() {
            s.recv(|b| {
                data.extend_from_slice(b);
                (b.len(), ())
            })
            .unwrap();
        }
        let acc = self.responses.entry(h).or_default();
        acc.extend_from_slice(&data);
        let s = self.sockets.get_mut::<tcp::Socket>(h);
        if !s.may_recv() && !matches!(s.state(), tcp::State::SynSent | tcp::State::SynReceived) {
            // Like a real client: close our side once the server closed its.
            s.close();
            return Some(String::from_utf8_lossy(&self.responses[&h]).into_owned());
        }
        None
    }

    pub fn state(&self, h: SocketHandle) -> tcp::State {
        self.sockets.get::<tcp::Socket>(h).state()
    }
}

// ---------------------------------------------------------------------------
// The lab: gateway core + peers + proxy, stepped by hand.

pub struct Lab {
    pub gateway: Gateway,
    pub gateway_key: PrivateKey,
    pub stats: Arc<Stats>,
    pub proxy: Arc<Proxy>,
    /// The HTTP side of every open connection, run as the driver runs it.
    pub conns: Connections,
    /// Signalled when a connection asks for a netstack poll.
    pub notify: Arc<Notify>,
    pub config: GatewayConfig,
    /// Datagrams lost on the way, each direction (per mille), decided by a
    /// seeded generator so that a failure replays.
    pub loss_per_mille: u32,
    pub loss_rng: XorShift,
    pub lost: usize,
}

/// A small seeded generator (xorshift64), so that a failing run replays.
pub struct XorShift(pub u64);

impl XorShift {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The lab's clock: tokio's, which the tests pause.
pub fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// Bounds every wait loop in the lab, whatever the clock does.
const MAX_TURNS: usize = 200_000;

/// Unix time now, for the core, which reads no clock of its own.
pub fn unix_now() -> Duration {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
}

pub fn peer_config(name: &str, secret: &StaticSecret, ip: Ipv4Addr, role: Role) -> PeerConfig {
    PeerConfig {
        name: name.into(),
        public_key: PublicKey::from(secret).to_bytes(),
        allowed_ips: vec![format!("{ip}/32").parse().unwrap()],
        preshared_key: None,
        persistent_keepalive: None,
        role,
        // The test upstream's own routes are not Prometheus routes, so the
        // default-deny viewer list needs them named.
        allow_paths: ["/hello", "/headers", "/big"].map(String::from).to_vec(),
        deny_paths: vec![],
        scope: None,
        origin: Origin {
            file: "test".into(),
            line: 1,
        },
    }
}

impl Lab {
    pub async fn new(peers: &[PeerConfig]) -> Lab {
        Lab::with(peers, |_| {}).await
    }

    /// A lab with one peer, the viewer "alice" at 10.13.13.2, and her key.
    pub async fn with_alice() -> (Lab, StaticSecret) {
        let key = StaticSecret::random();
        let lab = Lab::new(&[peer_config(
            "alice",
            &key,
            Ipv4Addr::new(10, 13, 13, 2),
            Role::Viewer,
        )])
        .await;
        (lab, key)
    }

    /// A lab whose gateway config is first adjusted by `tweak`.
    pub async fn with(peers: &[PeerConfig], tweak: impl FnOnce(&mut GatewayConfig)) -> Lab {
        let upstream = start_upstream().await;
        let key = PrivateKey::generate();
        let mut config = GatewayConfig::with_defaults(
            key.clone(),
            "10.13.13.1/24".parse().unwrap(),
            format!("http://{upstream}").parse().unwrap(),
        );
        config.addresses.push("fd13::1/64".parse().unwrap());
        config.upstream_timeout = Duration::from_secs(5);
        config.max_connections_per_peer = 64;
        config.max_connections = 256;
        config.tcp_idle_timeout = Duration::from_secs(60);
        tweak(&mut config);
        let stats = Arc::new(Stats::default());
        let notify = Arc::new(Notify::new());
        let health = Arc::new(Health::new(None));
        let telemetry = Telemetry::new(stats.clone(), Default::default(), health.clone());
        let gateway = Gateway::new(
            &config.core_settings(),
            peers,
            stats.clone(),
            promgate_core::gateway::Clock {
                poll_request: poll_request_waker(notify.clone()),
                seed: 7,
                now: now(),
                unix_now: unix_now(),
            },
        );
        let proxy = Arc::new(Proxy::with_upstreams(
            &config.upstreams,
            config.identity_header.clone(),
            config.upstream_timeout,
            telemetry.http.clone(),
            stats.clone(),
            promgate::web::host_check::HostCheck::new(&config),
        ));
        Lab {
            gateway,
            gateway_key: key,
            stats,
            conns: Connections::new(proxy.clone()),
            proxy,
            notify,
            config,
            loss_per_mille: 0,
            loss_rng: XorShift(0x9E37_79B9_7F4A_7C15),
            lost: 0,
        }
    }

    pub fn public(&self) -> PublicKey {
        self.gateway_key.public_key()
    }

    /// Restarts the gateway core with the same key and peers: all sessions are lost.
    pub fn restart(&mut self, peers: &[PeerConfig]) {
        self.gateway = Gateway::new(
            &self.config.core_settings(),
            peers,
            self.stats.clone(),
            promgate_core::gateway::Clock {
                poll_request: poll_request_waker(self.notify.clone()),
                seed: 8,
                now: now(),
                unix_now: unix_now(),
            },
        );
    }

    /// The lab's clock.
    pub fn now(&self) -> Instant {
        now()
    }

    /// Whether the next datagram is lost.
    fn lose(&mut self) -> bool {
        if self.loss_per_mille == 0 {
            return false;
        }
        let lost = self.loss_rng.below(1000) < u64::from(self.loss_per_mille);
        self.lost += usize::from(lost);
        lost
    }

    /// One round trip of traffic between all peers and the gateway, with
    /// the connections' HTTP side run where the driver runs it. Returns how
    /// many datagrams moved.
    pub fn step(&mut self, peers: &mut [&mut TestPeer]) -> usize {
        let now = self.now();
        let mut to_gateway: Vec<(usize, Vec<u8>)> = Vec::new();
        for (i, p) in peers.iter_mut().enumerate() {
            for d in p.outgoing() {
                to_gateway.push((i, d));
            }
        }
        let mut out: Vec<(SocketAddr, Vec<u8>)> = Vec::new();
        let moved = to_gateway.len();
        for (i, d) in to_gateway {
            if self.lose() {
                continue;
            }
            self.gateway
                .handle_datagram(now, peers[i].endpoint, &d, &mut out);
        }
        self.conns.run_ready();
        self.gateway.poll(now, &mut out);
        self.conns.accept(&mut self.gateway);
        self.conns.run_ready();
        let moved = moved + out.len();
        for (dst, d) in out {
            if self.lose() {
                continue;
            }
            if let Some(p) = peers.iter_mut().find(|p| p.endpoint == dst) {
                for back in p.incoming(&d) {
                    let mut more = Vec::new();
                    self.gateway
                        .handle_datagram(now, p.endpoint, &back, &mut more);
                    for (dst2, d2) in more {
                        if dst2 == p.endpoint {
                            p.incoming(&d2);
                        }
                    }
                }
            }
        }
        moved
    }

    /// The earliest of the gateway's and the peers' next deadlines.
    fn next_deadline(&mut self, peers: &mut [&mut TestPeer]) -> Instant {
        let now = self.now();
        peers
            .iter_mut()
            .filter_map(|p| p.poll_at())
            .fold(self.gateway.poll_at(now), Instant::min)
    }

    /// Steps until `done` or until `timeout` of lab time has passed. When
    /// nothing moved, waits for the HTTP side (a connection asking for a
    /// poll, or ending) or for the next deadline; on the paused clock that
    /// wait takes no real time unless real I/O (the upstream) is pending.
    pub async fn run_until(
        &mut self,
        peers: &mut [&mut TestPeer],
        timeout: Duration,
        mut done: impl FnMut(&mut [&mut TestPeer]) -> bool,
    ) -> bool {
        let deadline = self.now() + timeout;
        for _ in 0..MAX_TURNS {
            let moved = self.step(peers);
            if done(peers) {
                return true;
            }
            if self.now() >= deadline {
                return false;
            }
            if moved > 0 {
                // Let the upstream and the proxy's I/O run.
                tokio::task::yield_now().await;
                continue;
            }
            let next = self.next_deadline(peers).min(deadline);
            tokio::select! {
                _ = self.notify.notified() => {}
                _ = self.conns.next_finished() => {}
                _ = tokio::time::sleep_until(next.into()) => {}
            }
        }
        panic!("the lab took {MAX_TURNS} turns without reaching its deadline");
    }
}

impl Lab {
    /// Steps until `peers[i]` has the whole response on connection `h`;
    /// panics with `what` after `timeout`.
    pub async fn response_of(
        &mut self,
        peers: &mut [&mut TestPeer],
        i: usize,
        h: SocketHandle,
        timeout: Duration,
        what: &str,
    ) -> String {
        let mut all = self.responses_of(peers, &[(i, h)], timeout, what).await;
        all.pop().unwrap_or_default()
    }

    /// Steps until every `(peer index, connection)` in `wanted` has its
    /// whole response; returns them in the same order. Panics with `what`
    /// after `timeout`.
    pub async fn responses_of(
        &mut self,
        peers: &mut [&mut TestPeer],
        wanted: &[(usize, SocketHandle)],
        timeout: Duration,
        what: &str,
    ) -> Vec<String> {
        let mut got: Vec<Option<String>> = vec![None; wanted.len()];
        let done = self
            .run_until(peers, timeout, |p| {
                for (slot, (i, h)) in got.iter_mut().zip(wanted) {
                    if slot.is_none() {
                        *slot = p[*i].response(*h);
                    }
                }
                got.iter().all(Option::is_some)
            })
            .await;
        assert!(done, "{what}: no response within {timeout:?}");
        got.into_iter().map(Option::unwrap_or_default).collect()
    }
}

pub fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: 10.13.13.1\r\nConnection: close\r\n\r\n")
}

pub fn status_of(resp: &str) -> u16 {
    resp.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

pub fn body_of(resp: &str) -> &str {
    resp.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("")
}
