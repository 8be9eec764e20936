//! In-process integration tests: a test peer built on boringtun plus a
//! client-side smoltcp stack talks to the gateway core with no sockets and
//! no root. Behind the gateway, the real proxy talks to a real HTTP server
//! on loopback. The lab itself is in `common`.

mod common;

use boringtun::noise::{Tunn, TunnResult};
use boringtun::x25519::StaticSecret;
use common::*;
use promgate::config::{PeerConfig, Role};
use promgate_core::gateway::Gateway;
use promgate_core::keys::PrivateKey;
use promgate_core::stats::{DropReason, Stats};
use smoltcp::socket::tcp;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};
// ---------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn many_concurrent_requests_all_succeed() {
    let alice_key = StaticSecret::random();
    let alice_cfg = peer_config(
        "alice",
        &alice_key,
        Ipv4Addr::new(10, 13, 13, 2),
        Role::Viewer,
    );
    let mut lab = Lab::new(&[alice_cfg]).await;
    let mut alice = TestPeer::new(
        &alice_key,
        lab.public(),
        Ipv4Addr::new(10, 13, 13, 2),
        50001,
    );
    // A browser-like burst: 24 connections opened at the same instant.
    let handles: Vec<_> = (0..24)
        .map(|_| alice.connect(GW, 80, &get("/hello")))
        .collect();
    let mut responses = vec![None; handles.len()];
    let ok = lab
        .run_until(&mut [&mut alice], Duration::from_secs(20), |p| {
            for (i, h) in handles.iter().enumerate() {
                if responses[i].is_none() {
                    responses[i] = p[0].response(*h);
                }
            }
            responses.iter().all(|r| r.is_some())
        })
        .await;
    assert!(
        ok,
        "not all responses arrived: {:?}",
        responses.iter().filter(|r| r.is_none()).count()
    );
    for r in responses.iter().flatten() {
        assert_eq!(status_of(r), 200, "{r}");
        assert_eq!(body_of(r), "hello from upstream");
    }
}

#[tokio::test(start_paused = true)]
async fn identity_headers_are_set_and_client_copies_stripped() {
    let (mut lab, alice_key) = Lab::with_alice().await;
    let mut alice = TestPeer::new(
        &alice_key,
        lab.public(),
        Ipv4Addr::new(10, 13, 13, 2),
        50002,
    );
    let req = "GET /headers HTTP/1.1\r\nHost: 10.13.13.1:80\r\nX-Promgate-Peer: bob\r\nX-Forwarded-For: 1.2.3.4\r\nConnection: close\r\n\r\n";
    let h = alice.connect(GW, 80, req);
    let resp = lab
        .response_of(
            &mut [&mut alice],
            0,
            h,
            Duration::from_secs(10),
            "identity headers",
        )
        .await;
    let body = body_of(&resp);
    assert!(
        body.starts_with("xff=10.13.13.2 peer=alice host=127.0.0.1:"),
        "{body}"
    );
}

#[tokio::test(start_paused = true)]
async fn large_download_streams_intact() {
    let (mut lab, alice_key) = Lab::with_alice().await;
    let mut alice = TestPeer::new(
        &alice_key,
        lab.public(),
        Ipv4Addr::new(10, 13, 13, 2),
        50003,
    );
    let h = alice.connect(GW, 80, &get("/big"));
    let resp = lab
        .response_of(
            &mut [&mut alice],
            0,
            h,
            Duration::from_secs(60),
            "4 MiB download",
        )
        .await;
    assert_eq!(status_of(&resp), 200);
    assert_eq!(body_of(&resp).len(), 4 << 20);
    assert!(body_of(&resp).bytes().all(|b| b == b'x'));
}

/// A 4 MiB download over a link that loses 2% of datagrams each way
/// arrives intact with either sender, and the WAN sender's resends are
/// counted once the connection closes.
#[tokio::test(start_paused = true)]
async fn a_download_over_a_lossy_link_arrives_intact_with_either_sender() {
    use promgate_core::gateway::TcpSender;
    for sender in [TcpSender::Classic, TcpSender::WanCubic, TcpSender::Wan] {
        let alice_key = StaticSecret::random();
        let ip = Ipv4Addr::new(10, 13, 13, 2);
        let mut lab = Lab::with(&[peer_config("alice", &alice_key, ip, Role::Viewer)], |c| {
            c.tcp_sender = sender;
        })
        .await;
        let mut alice = TestPeer::new(&alice_key, lab.public(), ip, 50013);
        // The handshake and the request go through before the loss starts.
        let warm = alice.connect(GW, 80, &get("/hello"));
        lab.response_of(
            &mut [&mut alice],
            0,
            warm,
            Duration::from_secs(10),
            "warm-up",
        )
        .await;
        lab.loss_per_mille = 20;
        let h = alice.connect(GW, 80, &get("/big"));
        let resp = lab
            .response_of(
                &mut [&mut alice],
                0,
                h,
                Duration::from_secs(600),
                &format!("4 MiB download at 2% loss, {sender:?} sender"),
            )
            .await;
        assert_eq!(status_of(&resp), 200, "{sender:?}");
        assert_eq!(body_of(&resp).len(), 4 << 20, "{sender:?}");
        assert!(body_of(&resp).bytes().all(|b| b == b'x'), "{sender:?}");
        assert!(
            lab.lost > 50,
            "{sender:?}: only {} datagrams lost",
            lab.lost
        );
        lab.loss_per_mille = 0;
        lab.run_until(&mut [&mut alice], Duration::from_secs(5), |_| false)
            .await;
        assert_eq!(lab.gateway.open_connections(), 0, "{sender:?}");
        let resent = lab.stats.tcp_retransmitted_segments.load(Relaxed);
        let recoveries =
            lab.stats.tcp_fast_recoveries.load(Relaxed) + lab.stats.tcp_rtos.load(Relaxed);
        assert!(recoveries > 0, "{sender:?}: no loss recovery counted");
        if sender != TcpSender::Classic {
            assert!(resent > 0, "the WAN sender counted no resent segment");
        }
    }
}

/// The WAN sender's send buffer grows while it limits the flight, within
/// the budget, and gives the growth back when the connection closes.
#[tokio::test(start_paused = true)]
async fn a_wan_send_buffer_grows_within_the_budget_and_is_given_back() {
    use promgate_core::gateway::TcpSender;
    let alice_key = StaticSecret::random();
    let ip = Ipv4Addr::new(10, 13, 13, 2);
    let mut lab = Lab::with(&[peer_config("alice", &alice_key, ip, Role::Viewer)], |c| {
        c.tcp_sender = TcpSender::Wan;
    })
    .await;
    let budget = lab.config.tcp_memory_budget as u64;
    let mut alice = TestPeer::new(&alice_key, lab.public(), ip, 50014);
    let h = alice.connect(GW, 80, &get("/big"));
    let mut peak_growth = 0;
    let mut resp = None;
    for _ in 0..2000 {
        lab.run_until(&mut [&mut alice], Duration::from_millis(5), |p| {
            resp = p[0].response(h);
            resp.is_some()
        })
        .await;
        let s = lab.gateway.stats();
        peak_growth = peak_growth.max(s.tcp_buffer_growth_bytes.load(Relaxed));
        assert!(s.tcp_buffer_bytes.load(Relaxed) <= budget);
        if resp.is_some() {
            break;
        }
    }
    let resp = resp.expect("the 4 MiB download did not finish");
    assert_eq!(body_of(&resp).len(), 4 << 20);
    assert!(peak_growth > 0, "the send buffer never grew");
    assert!(peak_growth <= budget / 2);
    lab.run_until(&mut [&mut alice], Duration::from_secs(3), |_| false)
        .await;
    assert_eq!(lab.gateway.open_connections(), 0);
    let s = lab.gateway.stats();
    assert_eq!(s.tcp_buffer_bytes.load(Relaxed), 0, "budget not given back");
    assert_eq!(s.tcp_buffer_growth_bytes.load(Relaxed), 0);
    assert_eq!(s.tcp_buffer_budget_bytes.load(Relaxed), budget);
}

#[tokio::test(start_paused = true)]
async fn roles_decide_admin_endpoints() {
    let v = StaticSecret::random();
    let a = StaticSecret::random();
    let mut lab = Lab::new(&[
        peer_config("viewer", &v, Ipv4Addr::new(10, 13, 13, 2), Role::Viewer),
        peer_config("admin", &a, Ipv4Addr::new(10, 13, 13, 3), Role::Admin),
    ])
    .await;
    let mut viewer = TestPeer::new(&v, lab.public(), Ipv4Addr::new(10, 13, 13, 2), 50004);
    let mut admin = TestPeer::new(&a, lab.public(), Ipv4Addr::new(10, 13, 13, 3), 50005);
    let post = "POST /api/v1/admin/tsdb/snapshot HTTP/1.1\r\nHost: 10.13.13.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    let tricky = "POST //api/v1/admin/tsdb/snapshot HTTP/1.1\r\nHost: 10.13.13.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    let hv = viewer.connect(GW, 80, post);
    let ht = viewer.connect(GW, 80, tricky);
    let ha = admin.connect(GW, 80, post);
    let r = lab
        .responses_of(
            &mut [&mut viewer, &mut admin],
            &[(0, hv), (0, ht), (1, ha)],
            Duration::from_secs(10),
            "roles",
        )
        .await;
    let (rv, rt, ra) = (&r[0], &r[1], &r[2]);
    assert_eq!(status_of(rv), 403, "{rv}");
    assert!(rv.contains("viewer") && rv.contains("admin role"), "{rv}");
    assert_ne!(status_of(rt), 200);
    assert_eq!(status_of(ra), 200, "{ra}");
    assert_eq!(body_of(ra), "snapshot");
}

#[tokio::test(start_paused = true)]
async fn spoofed_inner_source_is_dropped() {
    let (mut lab, alice_key) = Lab::with_alice().await;
    // Alice's key, but her stack claims 10.13.13.99.
    let mut alice = TestPeer::new(
        &alice_key,
        lab.public(),
        Ipv4Addr::new(10, 13, 13, 99),
        50006,
    );
    let h = alice.connect(GW, 80, &get("/hello"));
    let established = lab
        .run_until(&mut [&mut alice], Duration::from_secs(2), |p| {
            p[0].state(h) == tcp::State::Established
        })
        .await;
    assert!(!established);
    assert!(lab.stats.dropped(DropReason::SpoofedSource) > 0);
    assert_eq!(lab.gateway.open_connections(), 0);
}

#[tokio::test(start_paused = true)]
async fn unknown_key_gets_no_answer() {
    let (mut lab, _alice_key) = Lab::with_alice().await;
    let stranger_key = StaticSecret::random();
    let mut stranger = TestPeer::new(
        &stranger_key,
        lab.public(),
        Ipv4Addr::new(10, 13, 13, 2),
        50007,
    );
    stranger.connect(GW, 80, &get("/hello"));
    let now = lab.now();
    let mut answered = 0;
    for _ in 0..3 {
        for d in stranger.outgoing() {
            let mut out = Vec::new();
            lab.gateway
                .handle_datagram(now, stranger.endpoint, &d, &mut out);
            answered += out.len();
        }
    }
    assert_eq!(answered, 0, "the gateway answered an unknown key");
    assert!(lab.stats.dropped(DropReason::UnknownPeer) > 0);
    // Garbage and truncated messages are dropped and counted, never answered.
    let mut out = Vec::new();
    for junk in [
        &[][..],
        &[1u8][..],
        &[1, 0, 0, 0, 9, 9][..],
        &[4u8; 32][..],
        &[2u8; 92][..],
    ] {
        lab.gateway
            .handle_datagram(now, stranger.endpoint, junk, &mut out);
    }
    assert!(out.is_empty());
    assert!(
        lab.stats.dropped(DropReason::Malformed) + lab.stats.dropped(DropReason::Unauthenticated)
            >= 4
    );
}

#[tokio::test(start_paused = true)]
async fn wrong_destination_port_and_peer_to_peer_are_dropped() {
    let a = StaticSecret::random();
    let b = StaticSecret::random();
    let mut lab = Lab::new(&[
        peer_config("alice", &a, Ipv4Addr::new(10, 13, 13, 2), Role::Viewer),
        peer_config("bob", &b, Ipv4Addr::new(10, 13, 13, 3), Role::Viewer),
    ])
    .await;
    let mut alice = TestPeer::new(&a, lab.public(), Ipv4Addr::new(10, 13, 13, 2), 50008);
    let mut bob = TestPeer::new(&b, lab.public(), Ipv4Addr::new(10, 13, 13, 3), 50009);
    // Bob says hello first so that he has a session the gateway could (wrongly) use.
    let hb = bob.connect(GW, 80, &get("/hello"));
    assert!(
        lab.run_until(&mut [&mut alice, &mut bob], Duration::from_secs(10), |p| p
            [1]
        .response(hb)
        .is_some())
            .await
    );
    // Let bob's connection finish closing before counting what he receives.
    lab.run_until(
        &mut [&mut alice, &mut bob],
        Duration::from_millis(500),
        |_| false,
    )
    .await;
    let bob_received = bob.received;

    let to_port = alice.connect(GW, 9090, &get("/"));
    let to_bob = alice.connect(Ipv4Addr::new(10, 13, 13, 3), 80, &get("/"));
    let to_world = alice.connect(Ipv4Addr::new(1, 1, 1, 1), 80, &get("/"));
    lab.run_until(&mut [&mut alice, &mut bob], Duration::from_secs(2), |_| {
        false
    })
    .await;
    for h in [to_port, to_bob, to_world] {
        // Dropped, not reset: the client is still waiting for a SYN-ACK.
        assert_eq!(alice.state(h), tcp::State::SynSent);
    }
    assert!(lab.stats.dropped(DropReason::ForbiddenPort) > 0);
    assert!(lab.stats.dropped(DropReason::WrongDestination) >= 2);
    assert_eq!(
        bob.received, bob_received,
        "bob received something after alice tried to reach him"
    );
}

#[tokio::test(start_paused = true)]
async fn removed_peer_is_cut_off_and_unchanged_peer_keeps_its_session() {
    let a = StaticSecret::random();
    let b = StaticSecret::random();
    let alice_cfg = peer_config("alice", &a, Ipv4Addr::new(10, 13, 13, 2), Role::Viewer);
    let bob_cfg = peer_config("bob", &b, Ipv4Addr::new(10, 13, 13, 3), Role::Viewer);
    let mut lab = Lab::new(&[alice_cfg.clone(), bob_cfg]).await;
    let mut alice = TestPeer::new(&a, lab.public(), Ipv4Addr::new(10, 13, 13, 2), 50010);
    let mut bob = TestPeer::new(&b, lab.public(), Ipv4Addr::new(10, 13, 13, 3), 50011);
    let ha = alice.connect(GW, 80, &get("/hello"));
    let hb = bob.connect(GW, 80, &get("/hello"));
    let (mut ra, mut rb) = (None, None);
    assert!(
        lab.run_until(&mut [&mut alice, &mut bob], Duration::from_secs(10), |p| {
            ra = ra.take().or_else(|| p[0].response(ha));
            rb = rb.take().or_else(|| p[1].response(hb));
            ra.is_some() && rb.is_some()
        })
        .await
    );
    let handshakes = |lab: &Lab, name: &str| {
        lab.gateway
            .snapshot()
            .iter()
            .find(|p| &*p.name == name)
            .map(|p| p.stats.handshakes.load(Relaxed))
    };
    let alice_handshakes = handshakes(&lab, "alice");

    // A slow request from bob stays open while bob is removed.
    let long = bob.connect(GW, 80, "GET /hello HTTP/1.1\r\nHost: 10.13.13.1\r\n");
    lab.run_until(
        &mut [&mut alice, &mut bob],
        Duration::from_millis(300),
        |_| false,
    )
    .await;
    let mut out = Vec::new();
    let diff = lab.gateway.apply_peers(lab.now(), &[alice_cfg], &mut out);
    for (dst, d) in out {
        assert_eq!(dst, bob.endpoint, "the reset went to someone else");
        bob.incoming(&d);
    }
    assert_eq!(diff.removed.len(), 1);
    assert_eq!(diff.kept, 1);
    lab.run_until(
        &mut [&mut alice, &mut bob],
        Duration::from_millis(300),
        |_| false,
    )
    .await;
    assert_eq!(
        bob.state(long),
        tcp::State::Closed,
        "bob's connection survived his removal"
    );
    assert_eq!(lab.gateway.open_connections(), 0);

    let ha2 = alice.connect(GW, 80, &get("/hello"));
    let r = lab
        .response_of(
            &mut [&mut alice, &mut bob],
            0,
            ha2,
            Duration::from_secs(10),
            "alice after the reload",
        )
        .await;
    assert_eq!(status_of(&r), 200);
    assert_eq!(
        handshakes(&lab, "alice"),
        alice_handshakes,
        "alice handshook again after a reload that did not change her"
    );
}

#[tokio::test(start_paused = true)]
async fn client_handshakes_again_after_gateway_restart() {
    let a = StaticSecret::random();
    let alice_cfg = peer_config("alice", &a, Ipv4Addr::new(10, 13, 13, 2), Role::Viewer);
    let mut lab = Lab::new(std::slice::from_ref(&alice_cfg)).await;
    let mut alice = TestPeer::new(&a, lab.public(), Ipv4Addr::new(10, 13, 13, 2), 50012);
    let h = alice.connect(GW, 80, &get("/hello"));
    assert!(
        lab.run_until(&mut [&mut alice], Duration::from_secs(10), |p| p[0]
            .response(h)
            .is_some())
            .await
    );

    lab.restart(&[alice_cfg]);
    // The client keeps sending on its old session; the gateway cannot
    // decrypt it, so nothing is answered.
    let h2 = alice.connect(GW, 80, &get("/hello"));
    let answered = lab
        .run_until(&mut [&mut alice], Duration::from_secs(5), |p| {
            p[0].response(h2).is_some()
        })
        .await;
    assert!(
        !answered,
        "the restarted gateway answered on the old session"
    );
    assert!(
        lab.stats.dropped(DropReason::Unauthenticated) > 0,
        "the old session's datagrams were not counted as unauthenticated"
    );
    // WireGuard's client starts a new handshake after REKEY_TIMEOUT +
    // KEEPALIVE_TIMEOUT (15 s). boringtun's timers read the wall clock, not
    // the lab's, so the lab starts that handshake itself; wireguard-go
    // does it on its own in tests/e2e/test_fault_restart.sh.
    alice.start_handshake();
    let r = lab
        .response_of(
            &mut [&mut alice],
            0,
            h2,
            Duration::from_secs(40),
            "no response after the gateway restarted",
        )
        .await;
    assert_eq!(status_of(&r), 200);
}

#[tokio::test(start_paused = true)]
async fn ping_of_the_tunnel_address_is_answered() {
    let (mut lab, a) = Lab::with_alice().await;
    let mut alice = TestPeer::new(&a, lab.public(), Ipv4Addr::new(10, 13, 13, 2), 50013);
    // An ICMP echo request built with smoltcp's wire types.
    use smoltcp::phy::ChecksumCapabilities;
    use smoltcp::wire::{Icmpv4Packet, Icmpv4Repr, IpProtocol, Ipv4Packet, Ipv4Repr};
    let icmp = Icmpv4Repr::EchoRequest {
        ident: 7,
        seq_no: 1,
        data: b"promgate",
    };
    let ip = Ipv4Repr {
        src_addr: Ipv4Addr::new(10, 13, 13, 2),
        dst_addr: GW,
        next_header: IpProtocol::Icmp,
        payload_len: icmp.buffer_len(),
        hop_limit: 64,
    };
    let mut packet = vec![0u8; ip.buffer_len() + icmp.buffer_len()];
    let caps = ChecksumCapabilities::default();
    let mut p = Ipv4Packet::new_unchecked(&mut packet);
    ip.emit(&mut p, &caps);
    icmp.emit(&mut Icmpv4Packet::new_unchecked(p.payload_mut()), &caps);
    // Queue it on the peer's device as if its stack had sent it.
    alice.dev.tx.push_back(packet);
    let before = alice.received;
    assert!(
        lab.run_until(&mut [&mut alice], Duration::from_secs(5), |p| p[0].received
            > before)
            .await,
        "no echo reply"
    );
}

#[tokio::test]
async fn under_load_handshakes_get_cookie_replies_and_cookie_holders_get_through() {
    let key = PrivateKey::generate();
    let secrets: Vec<StaticSecret> = (0..6).map(|_| StaticSecret::random()).collect();
    let peers: Vec<PeerConfig> = secrets
        .iter()
        .enumerate()
        .map(|(i, s)| {
            peer_config(
                &format!("p{i}"),
                s,
                Ipv4Addr::new(10, 13, 13, 2 + i as u8),
                Role::Viewer,
            )
        })
        .collect();
    let lab = Lab::new(&[]).await;
    let mut config = lab.config.clone();
    config.private_key = key.clone();
    config.handshake_rate_limit = 1;
    let stats = Arc::new(Stats::default());
    let mut gw = Gateway::new(
        &config.core_settings(),
        &peers,
        stats.clone(),
        promgate_core::gateway::Clock {
            poll_request: std::task::Waker::noop().clone(),
            seed: 1,
            now: Instant::now(),
            unix_now: unix_now(),
        },
    );
    let mut buf = vec![0u8; 2048];
    let mut types = Vec::new();
    let mut cookie_for: Option<(usize, Vec<u8>)> = None;
    let mut clients: Vec<Tunn> = secrets
        .iter()
        .enumerate()
        .map(|(i, s)| Tunn::new(s.clone(), key.public_key(), None, None, i as u32, None))
        .collect();
    let src = |i: usize| SocketAddr::from(([192, 0, 2, 50], 2000 + i as u16));
    for (i, c) in clients.iter_mut().enumerate() {
        let TunnResult::WriteToNetwork(init) = c.format_handshake_initiation(&mut buf, true) else {
            panic!("no initiation")
        };
        let mut out = Vec::new();
        gw.handle_datagram(Instant::now(), src(i), init, &mut out);
        let (_, reply) = out.pop().expect("the gateway answered nothing");
        types.push(reply[0]);
        if reply[0] == 3 && cookie_for.is_none() {
            cookie_for = Some((i, reply));
        }
    }
    assert_eq!(
        types[0], 2,
        "the first handshake must be answered normally: {types:?}"
    );
    let (i, cookie) = cookie_for.unwrap_or_else(|| panic!("no cookie reply under load: {types:?}"));
    assert!(stats.cookie_replies.load(Relaxed) > 0);
    // The client stores the cookie; its next initiation carries a valid mac2
    // and is answered even though the gateway is still under load.
    let _ = clients[i].decapsulate(None, &cookie, &mut buf);
    let TunnResult::WriteToNetwork(init) = clients[i].format_handshake_initiation(&mut buf, true)
    else {
        panic!("no initiation")
    };
    let mut out = Vec::new();
    gw.handle_datagram(Instant::now(), src(i), init, &mut out);
    assert_eq!(
        out.first().map(|(_, d)| d[0]),
        Some(2),
        "a cookie holder was refused under load"
    );
}

#[tokio::test(start_paused = true)]
async fn inner_ipv6_is_served_and_checked_like_ipv4() {
    let a = StaticSecret::random();
    let mut cfg = peer_config("alice", &a, Ipv4Addr::new(10, 13, 13, 2), Role::Viewer);
    cfg.allowed_ips.push("fd13::2/128".parse().unwrap());
    let mut lab = Lab::new(&[cfg]).await;
    let mut alice = TestPeer::new(&a, lab.public(), Ipv4Addr::new(10, 13, 13, 2), 50014);
    alice.add_ipv6("fd13::2".parse().unwrap());
    let h = alice.connect(GW6, 80, &get("/headers"));
    let r = lab
        .response_of(
            &mut [&mut alice],
            0,
            h,
            Duration::from_secs(10),
            "no response over IPv6",
        )
        .await;
    assert_eq!(status_of(&r), 200, "{r}");
    assert!(body_of(&r).starts_with("xff=fd13::2 peer=alice"), "{r}");

    // An IPv6 source outside alice's AllowedIPs is dropped like an IPv4 one.
    let mut spoofer = TestPeer::new(&a, lab.public(), Ipv4Addr::new(10, 13, 13, 2), 50015);
    spoofer.add_ipv6("fd13::99".parse().unwrap());
    let before = lab.stats.dropped(DropReason::SpoofedSource);
    let hs = spoofer.connect(GW6, 80, &get("/hello"));
    lab.run_until(&mut [&mut spoofer], Duration::from_secs(2), |_| false)
        .await;
    assert_ne!(spoofer.state(hs), tcp::State::Established);
    assert!(lab.stats.dropped(DropReason::SpoofedSource) > before);
}

#[tokio::test(start_paused = true)]
async fn scoped_peer_requests_are_rewritten_filtered_or_refused() {
    let a = StaticSecret::random();
    let u = StaticSecret::random();
    let mut scoped_cfg = peer_config("team-a", &a, Ipv4Addr::new(10, 13, 13, 2), Role::Viewer);
    scoped_cfg.scope =
        Some(promgate::web::scope::Scope::new([("namespace", &["team-a"][..])]).unwrap());
    let mut lab = Lab::new(&[
        scoped_cfg,
        peer_config("all", &u, Ipv4Addr::new(10, 13, 13, 3), Role::Viewer),
    ])
    .await;
    let mut scoped = TestPeer::new(&a, lab.public(), Ipv4Addr::new(10, 13, 13, 2), 50006);
    let mut unscoped = TestPeer::new(&u, lab.public(), Ipv4Addr::new(10, 13, 13, 3), 50007);
    let post = |path: &str, body: &str| {
        format!(
            "POST {path} HTTP/1.1\r\nHost: 10.13.13.1\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    let t = Duration::from_secs(10);
    let ask = async |lab: &mut Lab, peers: &mut [&mut TestPeer], i: usize, req: String| {
        let h = peers[i].connect(GW, 80, &req);
        lab.response_of(peers, i, h, t, &req).await
    };
    let team_a = "namespace%3D%22team-a%22";
    let mut peers = [&mut scoped, &mut unscoped];

    // GET: the other team's matcher is replaced.
    let r = ask(
        &mut lab,
        &mut peers,
        0,
        get("/api/v1/query?query=up%7Bnamespace%3D%22team-b%22%7D&time=1"),
    )
    .await;
    assert_eq!(status_of(&r), 200, "{r}");
    assert!(body_of(&r).contains(team_a) && !r.contains("team-b"), "{r}");
    assert!(body_of(&r).contains("&time=1"), "{r}");

    // POST: the aggregation parameter is scoped too, and the whole request
    // moves into the body.
    let r = ask(
        &mut lab,
        &mut peers,
        0,
        post("/api/v1/query?time=2", "query=topk(scalar(z),up)"),
    )
    .await;
    assert_eq!(status_of(&r), 200, "{r}");
    let body = body_of(&r);
    assert!(body.starts_with("uri=/api/v1/query\n"), "{r}");
    assert_eq!(body.matches(team_a).count(), 2, "{r}");
    assert!(body.ends_with("&time=2"), "{r}");

    // A query in both the URL and the body is refused.
    let r = ask(
        &mut lab,
        &mut peers,
        0,
        post("/api/v1/query?query=up", "query=down"),
    )
    .await;
    assert_eq!(status_of(&r), 400, "{r}");

    // Series without match[]: the scope becomes the selector.
    let r = ask(&mut lab, &mut peers, 0, get("/api/v1/series")).await;
    assert!(
        body_of(&r).contains("match%5B%5D=%7Bnamespace%3D%22team-a%22%7D"),
        "{r}"
    );

    // Alerts are filtered to the team's.
    let r = ask(&mut lab, &mut peers, 0, get("/api/v1/alerts")).await;
    assert_eq!(status_of(&r), 200, "{r}");
    assert!(r.contains("TeamADown") && !r.contains("TeamBDown"), "{r}");

    // Targets expose everything: refused, naming the scope.
    let r = ask(&mut lab, &mut peers, 0, get("/api/v1/targets")).await;
    assert_eq!(status_of(&r), 403, "{r}");
    assert!(r.contains("scope namespace=&quot;team-a&quot;"), "{r}");

    // The unscoped peer is unchanged.
    let r = ask(&mut lab, &mut peers, 1, get("/api/v1/alerts")).await;
    assert!(r.contains("TeamADown") && r.contains("TeamBDown"), "{r}");
    let r = ask(&mut lab, &mut peers, 1, get("/api/v1/query?query=up")).await;
    assert!(body_of(&r).contains("uri=/api/v1/query?query=up\n"), "{r}");
}

/// Issue 28: a second upstream on its own tunnel port, through the real
/// core and proxy. The core accepts on both ports; the port picks the
/// upstream; a kind http upstream opens only where an entry names it.
#[tokio::test(start_paused = true)]
async fn a_second_upstream_is_served_on_its_own_port_with_its_own_rules() {
    use promgate::config::{UpstreamConfig, UpstreamKind};
    let a = StaticSecret::random();
    let ip = Ipv4Addr::new(10, 13, 13, 2);
    let mut alice_cfg = peer_config("alice", &a, ip, Role::Viewer);
    alice_cfg.allow_paths.push("wiki:/hello".into());
    let mut lab = Lab::with(&[alice_cfg], |c| {
        let url = c.upstreams[0].url.clone();
        c.upstreams.push(UpstreamConfig {
            name: "wiki".into(),
            url,
            ports: vec![8080],
            kind: UpstreamKind::Http,
        });
    })
    .await;
    let mut alice = TestPeer::new(&a, lab.public(), ip, 50021);
    let on_prometheus = alice.connect(GW, 80, &get("/headers"));
    let on_wiki = alice.connect(GW, 8080, &get("/hello"));
    // "/headers" is a bare allow entry: Prometheus's, not the wiki's.
    let not_named = alice.connect(GW, 8080, &get("/headers"));
    let r = lab
        .responses_of(
            &mut [&mut alice],
            &[(0, on_prometheus), (0, on_wiki), (0, not_named)],
            Duration::from_secs(10),
            "two upstreams",
        )
        .await;
    assert_eq!(status_of(&r[0]), 200, "{}", r[0]);
    assert_eq!(status_of(&r[1]), 200, "{}", r[1]);
    assert_eq!(body_of(&r[1]), "hello from upstream");
    assert_eq!(status_of(&r[2]), 403, "{}", r[2]);
    assert!(r[2].contains("wiki:/..."), "{}", r[2]);
}
