//! In-process tests of the review's security findings (issue 10): identity
//! of tunnel connections under hostile segment orderings, reaping of
//! connections that stop making progress, role changes reaching open
//! connections, the handshake budget of unknown keys, and error pages that
//! do not reveal the upstream.

mod common;

use boringtun::noise::{Tunn, TunnResult};
use boringtun::x25519::StaticSecret;
use common::*;
use promgate::config::Role;
use promgate_core::gateway::Gateway;
use promgate_core::stats::{DropReason, Stats};
use smoltcp::socket::tcp;
use smoltcp::wire::{IpAddress, Ipv4Packet, TcpControl, TcpPacket, TcpRepr, TcpSeqNumber};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

const V_IP: Ipv4Addr = Ipv4Addr::new(10, 13, 13, 2);
const A_IP: Ipv4Addr = Ipv4Addr::new(10, 13, 13, 3);

const SNAPSHOT: &str = "POST /api/v1/admin/tsdb/snapshot HTTP/1.1\r\nHost: 10.13.13.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";

/// What a hand-made TCP segment carries.
#[derive(Debug, Clone, Copy)]
struct Seg {
    src: Ipv4Addr,
    src_port: u16,
    control: TcpControl,
    fin_too: bool,
    seq: u32,
    ack: Option<u32>,
    payload: &'static [u8],
}

/// An IPv4 TCP segment to the gateway's port 80, built with smoltcp's wire
/// types; `fin_too` also sets FIN on a SYN (which smoltcp's parser refuses).
fn segment(s: Seg) -> Vec<u8> {
    let tcp = TcpRepr {
        src_port: s.src_port,
        dst_port: 80,
        control: s.control,
        seq_number: TcpSeqNumber(s.seq as i32),
        ack_number: s.ack.map(|a| TcpSeqNumber(a as i32)),
        window_len: 64000,
        window_scale: None,
        max_seg_size: None,
        sack_permitted: false,
        sack_ranges: [None; 3],
        timestamp: None,
        payload: s.payload,
    };
    let mut buf = packets::ipv4_tcp(s.src, GW, &tcp);
    if s.fin_too {
        let (src, dst) = (IpAddress::Ipv4(s.src), IpAddress::Ipv4(GW));
        let mut ip = Ipv4Packet::new_unchecked(&mut buf[..]);
        let mut t = TcpPacket::new_unchecked(ip.payload_mut());
        t.set_fin(true);
        t.fill_checksum(&src, &dst);
    }
    buf
}

fn seal(tunn: &mut Tunn, packet: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; 65536];
    match tunn.encapsulate(packet, &mut buf) {
        TunnResult::WriteToNetwork(d) => d.to_vec(),
        _ => panic!("the test peer has no session"),
    }
}

fn raw(src: Ipv4Addr, src_port: u16, control: TcpControl, seq: u32) -> Seg {
    Seg {
        src,
        src_port,
        control,
        fin_too: false,
        seq,
        ack: None,
        payload: &[],
    }
}

/// Two peers, viewer V and admin A, each with a WireGuard session.
async fn viewer_and_admin() -> (Lab, TestPeer, TestPeer) {
    let v = StaticSecret::random();
    let a = StaticSecret::random();
    let mut lab = Lab::new(&[
        peer_config("viewer", &v, V_IP, Role::Viewer),
        peer_config("admin", &a, A_IP, Role::Admin),
    ])
    .await;
    let mut viewer = TestPeer::new(&v, lab.public(), V_IP, 51001);
    let mut admin = TestPeer::new(&a, lab.public(), A_IP, 51002);
    let hv = viewer.connect(GW, 80, &get("/hello"));
    let ha = admin.connect(GW, 80, &get("/hello"));
    lab.responses_of(
        &mut [&mut viewer, &mut admin],
        &[(0, hv), (1, ha)],
        Duration::from_secs(10),
        "the first requests",
    )
    .await;
    // Let both connections close completely.
    lab.run_until(
        &mut [&mut viewer, &mut admin],
        Duration::from_millis(300),
        |_| false,
    )
    .await;
    assert_eq!(lab.gateway.open_connections(), 0);
    (lab, viewer, admin)
}

/// Feeds `stray` (V's hand-made segments), then A's SYN, then V's SYN, all
/// in one receive batch (no poll in between, as the driver does with a
/// recvmmsg batch), then lets both requests complete. Returns the statuses
/// of V's and A's snapshot requests.
async fn batch_then_snapshot(stray: &[Seg]) -> (u16, u16) {
    let (mut lab, mut viewer, mut admin) = viewer_and_admin().await;
    let now = lab.now();
    let mut out = Vec::new();
    for s in stray {
        let d = seal(&mut viewer.tunn, &segment(*s));
        lab.gateway
            .handle_datagram(now, viewer.endpoint, &d, &mut out);
    }
    let ha = admin.connect(GW, 80, SNAPSHOT);
    let hv = viewer.connect(GW, 80, SNAPSHOT);
    for d in admin.outgoing() {
        lab.gateway
            .handle_datagram(now, admin.endpoint, &d, &mut out);
    }
    for d in viewer.outgoing() {
        lab.gateway
            .handle_datagram(now, viewer.endpoint, &d, &mut out);
    }
    lab.gateway.poll(now, &mut out);
    for (dst, d) in out {
        for p in [&mut viewer, &mut admin] {
            if p.endpoint == dst {
                p.incoming(&d);
            }
        }
    }
    let r = lab
        .responses_of(
            &mut [&mut viewer, &mut admin],
            &[(0, hv), (1, ha)],
            Duration::from_secs(10),
            "the snapshot requests",
        )
        .await;
    (status_of(&r[0]), status_of(&r[1]))
}

#[tokio::test(start_paused = true)]
async fn a_syn_fin_leftover_listener_cannot_swap_identities() {
    let mut s = raw(V_IP, 45000, TcpControl::Syn, 1000);
    s.fin_too = true;
    let (viewer, admin) = batch_then_snapshot(&[s]).await;
    assert_eq!(viewer, 403, "the viewer was served as the admin");
    assert_eq!(admin, 200, "the admin was served as the viewer");
}

#[tokio::test(start_paused = true)]
async fn a_syn_then_rst_leftover_listener_cannot_swap_identities() {
    let syn = raw(V_IP, 45001, TcpControl::Syn, 1000);
    let rst = raw(V_IP, 45001, TcpControl::Rst, 1001);
    let (viewer, admin) = batch_then_snapshot(&[syn, rst]).await;
    assert_eq!(viewer, 403, "the viewer was served as the admin");
    assert_eq!(admin, 200, "the admin was served as the viewer");
}

/// A peer that sends only hand-made segments.
struct RawPeer {
    tunn: Tunn,
    endpoint: SocketAddr,
    ip: Ipv4Addr,
    name: &'static str,
}

impl RawPeer {
    fn handshake(&mut self, gw: &mut Gateway, now: Instant) {
        let mut buf = vec![0u8; 2048];
        let TunnResult::WriteToNetwork(init) =
            self.tunn.format_handshake_initiation(&mut buf, true)
        else {
            panic!("no initiation")
        };
        let init = init.to_vec();
        let mut out = Vec::new();
        gw.handle_datagram(now, self.endpoint, &init, &mut out);
        for (_, d) in out {
            self.open(&d);
        }
    }

    /// Decrypts a datagram from the gateway into inner packets.
    fn open(&mut self, datagram: &[u8]) -> Vec<Vec<u8>> {
        let mut buf = vec![0u8; 65536];
        let mut inner = Vec::new();
        let mut input = datagram;
        loop {
            match self.tunn.decapsulate(None, input, &mut buf) {
                TunnResult::WriteToNetwork(_) => input = &[],
                TunnResult::WriteToTunnelV4(p, _) | TunnResult::WriteToTunnelV6(p, _) => {
                    inner.push(p.to_vec());
                    break;
                }
                _ => break,
            }
        }
        inner
    }
}

/// A small deterministic generator, so that a failing seed can be replayed.
/// Random interleavings of several peers' SYN, SYN|FIN, RST, ACK and data
/// segments in one batch. Afterwards every peer completes the handshake of
/// each SYN-ACK it received; every accepted connection must carry the
/// identity of the peer that owns its source address, and each completed
/// handshake must be accepted.
#[tokio::test(start_paused = true)]
async fn random_batches_never_give_a_connection_another_peer_s_identity() {
    let secrets: Vec<StaticSecret> = (0..3).map(|_| StaticSecret::random()).collect();
    let names = ["p0", "p1", "p2"];
    let configs: Vec<_> = secrets
        .iter()
        .enumerate()
        .map(|(i, s)| {
            peer_config(
                names[i],
                s,
                Ipv4Addr::new(10, 13, 13, 2 + i as u8),
                Role::Viewer,
            )
        })
        .collect();
    let lab = Lab::new(&configs).await;
    let gw_public = lab.public();
    for seed in 1..=60u64 {
        let mut rng = XorShift(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let mut gw = Gateway::new(
            &lab.config.core_settings(),
            &configs,
            Arc::new(Stats::default()),
            promgate_core::gateway::Clock {
                poll_request: std::task::Waker::noop().clone(),
                seed,
                now: now(),
                unix_now: unix_now(),
            },
        );
        let now = now();
        let mut peers: Vec<RawPeer> = secrets
            .iter()
            .enumerate()
            .map(|(i, s)| RawPeer {
                tunn: Tunn::new(s.clone(), gw_public, None, None, i as u32, None),
                endpoint: SocketAddr::from(([192, 0, 2, 20 + i as u8], 3000)),
                ip: Ipv4Addr::new(10, 13, 13, 2 + i as u8),
                name: names[i],
            })
            .collect();
        for p in peers.iter_mut() {
            p.handshake(&mut gw, now);
        }
        // The batch: up to 24 segments, each from a random peer and port.
        let mut batch: Vec<(usize, Seg)> = Vec::new();
        for _ in 0..(4 + rng.below(20)) {
            let who = rng.below(3) as usize;
            let port = 46000 + rng.below(4) as u16;
            let seq = 5000 + rng.below(3) as u32;
            let mut s = raw(peers[who].ip, port, TcpControl::Syn, seq);
            match rng.below(5) {
                0 => {}
                1 => s.fin_too = true,
                2 => s.control = TcpControl::Rst,
                3 => {
                    s.control = TcpControl::None;
                    s.ack = Some(rng.next() as u32);
                }
                _ => {
                    s.control = TcpControl::Psh;
                    s.ack = Some(rng.next() as u32);
                    s.payload = b"GET / HTTP/1.1\r\n\r\n";
                }
            }
            batch.push((who, s));
        }
        let mut out = Vec::new();
        for (who, s) in &batch {
            let d = seal(&mut peers[*who].tunn, &segment(*s));
            gw.handle_datagram(now, peers[*who].endpoint, &d, &mut out);
        }
        gw.poll(now, &mut out);
        // Each peer answers the SYN-ACKs it received with a valid ACK.
        let mut completed: Vec<(usize, u16)> = Vec::new();
        let mut acks = Vec::new();
        for (dst, d) in &out {
            let Some(who) = peers.iter().position(|p| p.endpoint == *dst) else {
                panic!("seed {seed}: a datagram went to an unknown address {dst}");
            };
            for inner in peers[who].open(d) {
                let ip = Ipv4Packet::new_checked(&inner[..]).unwrap();
                assert_eq!(
                    IpAddr::V4(ip.dst_addr()),
                    IpAddr::V4(peers[who].ip),
                    "seed {seed}: a reply to another peer's address"
                );
                let t = TcpPacket::new_checked(ip.payload()).unwrap();
                if t.syn() && t.ack() {
                    let mut s = raw(
                        peers[who].ip,
                        t.dst_port(),
                        TcpControl::None,
                        t.ack_number().0 as u32,
                    );
                    s.ack = Some((t.seq_number() + 1).0 as u32);
                    acks.push((who, s));
                    completed.push((who, t.dst_port()));
                }
            }
        }
        let mut out = Vec::new();
        for (who, s) in &acks {
            let d = seal(&mut peers[*who].tunn, &segment(*s));
            gw.handle_datagram(now, peers[*who].endpoint, &d, &mut out);
        }
        gw.poll(now, &mut out);
        let accepted = gw.take_accepted();
        let mut seen: HashMap<(usize, u16), ()> = HashMap::new();
        for (info, _stream) in &accepted {
            let owner = peers
                .iter()
                .position(|p| IpAddr::V4(p.ip) == info.remote.ip())
                .unwrap_or_else(|| {
                    panic!(
                        "seed {seed}: accepted from an unknown address {}",
                        info.remote
                    )
                });
            assert_eq!(
                &*info.access.current().name,
                peers[owner].name,
                "seed {seed}: {} was served as someone else; batch {batch:?}",
                info.remote
            );
            seen.insert((owner, info.remote.port()), ());
        }
        for c in &completed {
            assert!(
                seen.contains_key(c),
                "seed {seed}: peer {} port {} completed its handshake but was not accepted; batch {batch:?}",
                c.0,
                c.1
            );
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_reader_that_never_reads_is_reset_after_the_idle_timeout() {
    let a = StaticSecret::random();
    let mut lab = Lab::with(&[peer_config("alice", &a, V_IP, Role::Viewer)], |c| {
        c.tcp_idle_timeout = Duration::from_secs(2);
    })
    .await;
    let mut alice = TestPeer::new(&a, lab.public(), V_IP, 51003);
    // A tiny receive window that the client never drains: the 4 MiB answer
    // stalls with unsent data, which used to count as activity forever.
    let mut s = tcp::Socket::new(
        tcp::SocketBuffer::new(vec![0; 2048]),
        tcp::SocketBuffer::new(vec![0; 4096]),
    );
    s.connect(alice.iface.context(), (IpAddress::Ipv4(GW), 80), 47000)
        .unwrap();
    let h = alice.sockets.add(s);
    alice.pending.insert(h, get("/big").into_bytes());
    let started = lab.now();
    assert!(
        lab.run_until(&mut [&mut alice], Duration::from_secs(3), |p| {
            p[0].sockets.get::<tcp::Socket>(h).recv_queue() > 0
        })
        .await,
        "the download never started"
    );
    assert_eq!(lab.gateway.open_connections(), 1);
    let reaped = lab
        .run_until(&mut [&mut alice], Duration::from_secs(10), |_| false)
        .await;
    assert!(!reaped);
    assert_eq!(
        lab.gateway.open_connections(),
        0,
        "a stalled connection outlived the 2 s idle timeout by {:?}",
        lab.now().saturating_duration_since(started)
    );
    assert_eq!(lab.stats.tcp_connections_open.load(Relaxed), 0);
}

#[tokio::test(start_paused = true)]
async fn a_demoted_admin_loses_admin_rights_on_its_open_keep_alive_connection() {
    let a = StaticSecret::random();
    let admin_cfg = peer_config("alice", &a, A_IP, Role::Admin);
    let mut lab = Lab::new(std::slice::from_ref(&admin_cfg)).await;
    let mut alice = TestPeer::new(&a, lab.public(), A_IP, 51004);
    let keep_alive = "POST /api/v1/admin/tsdb/snapshot HTTP/1.1\r\nHost: 10.13.13.1\r\nContent-Length: 0\r\n\r\n";
    let h = alice.connect(GW, 80, keep_alive);
    let mut got = String::new();
    assert!(
        lab.run_until(&mut [&mut alice], Duration::from_secs(10), |p| {
            let _ = p[0].response(h);
            got = String::from_utf8_lossy(p[0].responses.get(&h).map(|v| &v[..]).unwrap_or(&[]))
                .into_owned();
            got.contains("snapshot")
        })
        .await,
        "no first answer: {got}"
    );
    assert_eq!(status_of(&got), 200, "{got}");

    let mut demoted = admin_cfg.clone();
    demoted.role = Role::Viewer;
    let mut out = Vec::new();
    let diff = lab.gateway.apply_peers(lab.now(), &[demoted], &mut out);
    assert_eq!(diff.kept, 1, "the session should be kept");
    assert_eq!(diff.changed, vec!["alice".to_string()]);

    // The same connection asks again.
    let before = got.len();
    alice.pending.insert(h, keep_alive.as_bytes().to_vec());
    assert!(
        lab.run_until(&mut [&mut alice], Duration::from_secs(10), |p| {
            let _ = p[0].response(h);
            got = String::from_utf8_lossy(p[0].responses.get(&h).map(|v| &v[..]).unwrap_or(&[]))
                .into_owned();
            got.len() > before && got[before..].contains("</html>")
        })
        .await,
        "no second answer: {got}"
    );
    let second = &got[before..];
    assert_eq!(
        status_of(second),
        403,
        "the demoted peer kept admin rights: {second}"
    );
    assert!(second.contains("viewer"), "{second}");
}

/// With a budget of 10 handshakes a second, the 11th initiation from an
/// unknown key gets a cookie reply: unknown keys are counted once, not
/// twice (the limiter is not doubled any more).
#[tokio::test]
async fn unknown_keys_get_the_handshake_budget_once() {
    let lab = Lab::with(&[], |c| c.handshake_rate_limit = 10).await;
    let stats = Arc::new(Stats::default());
    let mut gw = Gateway::new(
        &lab.config.core_settings(),
        &[],
        stats.clone(),
        promgate_core::gateway::Clock {
            poll_request: std::task::Waker::noop().clone(),
            seed: 1,
            now: Instant::now(),
            unix_now: unix_now(),
        },
    );
    let now = Instant::now();
    let mut buf = vec![0u8; 2048];
    for i in 0..15u16 {
        let mut t = Tunn::new(StaticSecret::random(), lab.public(), None, None, 0, None);
        let TunnResult::WriteToNetwork(init) = t.format_handshake_initiation(&mut buf, true) else {
            panic!("no initiation")
        };
        let mut out = Vec::new();
        gw.handle_datagram(
            now,
            SocketAddr::from(([192, 0, 2, 9], 4000 + i)),
            init,
            &mut out,
        );
    }
    assert_eq!(stats.dropped(DropReason::UnknownPeer), 10);
    assert_eq!(stats.cookie_replies.load(Relaxed), 5);
}

#[tokio::test(start_paused = true)]
async fn error_pages_do_not_reveal_the_upstream() {
    let a = StaticSecret::random();
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = closed.local_addr().unwrap();
    drop(closed);
    let mut lab = Lab::with(&[peer_config("alice", &a, V_IP, Role::Viewer)], |c| {
        c.upstreams[0].url = format!("http://{dead}").parse().unwrap();
    })
    .await;
    let mut alice = TestPeer::new(&a, lab.public(), V_IP, 51005);
    let h = alice.connect(GW, 80, &get("/hello"));
    let r = lab
        .response_of(&mut [&mut alice], 0, h, Duration::from_secs(10), "502")
        .await;
    assert_eq!(status_of(&r), 502, "{r}");
    assert!(
        !r.contains(&dead.to_string()) && !r.contains("127.0.0.1"),
        "{r}"
    );
    assert!(r.contains("could not get an answer"), "{r}");
}
