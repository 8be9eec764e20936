//! `serve::run` driven by a test: sockets bound here on loopback, a real
//! upstream, and a shutdown future the test completes. No signals, no root.

mod common;

use promgate::shell::serve::{Sockets, run};
use promgate_core::keys::PrivateKey;
use std::path::Path;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

async fn get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_serves_health_and_readiness_on_given_sockets_and_stops_on_the_shutdown_future() {
    // The upstream: ready.
    let up = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up_addr = up.local_addr().unwrap();
    let app = axum::Router::new().route("/-/ready", axum::routing::get(|| async { "ready" }));
    tokio::spawn(async move { axum::serve(up, app).await });

    let key = PrivateKey::generate();
    let text = format!(
        "[gateway]\nprivate_key = \"{}\"\naddress = \"10.13.13.1/24\"\nupstream = \"http://{up_addr}\"\n",
        key.to_base64()
    );
    let config = promgate::config::parse(Path::new("test.toml"), &text).unwrap();
    let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin_addr = admin.local_addr().unwrap();
    let sockets = Sockets {
        udp: UdpSocket::bind("127.0.0.1:0").await.unwrap(),
        admin: Some(admin),
        control: None,
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let gateway = tokio::spawn(run(config, sockets, Duration::from_secs(1), async {
        let _ = stopped.await;
    }));

    assert!(
        get(admin_addr, "/healthz")
            .await
            .starts_with("HTTP/1.1 200")
    );
    // The first probe of the upstream runs at once.
    let mut metrics = String::new();
    for _ in 0..50 {
        metrics = get(admin_addr, "/metrics").await;
        if metrics.contains("promgate_upstream_up{upstream=\"prometheus\"} 1") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        metrics.contains("promgate_upstream_up{upstream=\"prometheus\"} 1"),
        "{metrics}"
    );
    let ready = get(admin_addr, "/readyz").await;
    assert!(ready.starts_with("HTTP/1.1 200"), "{ready}");

    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(5), gateway)
        .await
        .expect("run did not return after its shutdown future completed")
        .unwrap()
        .expect("run ended with an error");
}

/// The whole shell: a peer's WireGuard datagrams cross real loopback UDP to
/// `run`'s socket, the driver's thread decrypts them, and the peer gets its
/// answer from the upstream. Wall-clock, like any test of real sockets; every
/// wait is bounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_is_served_over_real_udp_datagrams() {
    use common::{GW, TestPeer, body_of, peer_config, start_upstream, status_of};
    use promgate::config::Role;
    use std::net::Ipv4Addr;

    let upstream = start_upstream().await;
    let key = PrivateKey::generate();
    let text = format!(
        "[gateway]\nprivate_key = \"{}\"\naddress = \"10.13.13.1/24\"\nupstream = \"http://{upstream}\"\n",
        key.to_base64()
    );
    let mut config = promgate::config::parse(Path::new("test.toml"), &text).unwrap();
    let alice_key = boringtun::x25519::StaticSecret::random();
    let alice_ip = Ipv4Addr::new(10, 13, 13, 2);
    config.peers = vec![peer_config("alice", &alice_key, alice_ip, Role::Viewer)];
    let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let gateway_addr = udp.local_addr().unwrap();
    let sockets = Sockets {
        udp,
        admin: None,
        control: None,
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let gateway = tokio::spawn(run(config, sockets, Duration::from_secs(1), async {
        let _ = stopped.await;
    }));

    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let port = client.local_addr().unwrap().port();
    let mut alice = TestPeer::new(&alice_key, key.public_key(), alice_ip, port);
    let h = alice.connect(GW, 80, &common::get("/hello"));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut buf = vec![0u8; 65536];
    let mut sent = 0;
    let response = loop {
        for d in alice.outgoing() {
            client.send_to(&d, gateway_addr).await.unwrap();
            sent += 1;
        }
        if let Some(r) = alice.response(h) {
            break r;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no answer over UDP within 10 s ({sent} datagrams sent)"
        );
        if let Ok(Ok((n, from))) =
            tokio::time::timeout(Duration::from_millis(20), client.recv_from(&mut buf)).await
        {
            assert_eq!(from, gateway_addr);
            for back in alice.incoming(&buf[..n]) {
                client.send_to(&back, gateway_addr).await.unwrap();
            }
        }
    };
    assert_eq!(status_of(&response), 200, "{response}");
    assert_eq!(body_of(&response), "hello from upstream");

    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(5), gateway)
        .await
        .expect("run did not return after its shutdown future completed")
        .unwrap()
        .expect("run ended with an error");
}
