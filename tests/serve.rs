//! `serve::run` driven by a test: sockets bound here on loopback, a real
//! upstream, and a shutdown future the test completes. No signals, no root.

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
        if metrics.contains("promgate_upstream_up 1") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(metrics.contains("promgate_upstream_up 1"), "{metrics}");
    let ready = get(admin_addr, "/readyz").await;
    assert!(ready.starts_with("HTTP/1.1 200"), "{ready}");

    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(5), gateway)
        .await
        .expect("run did not return after its shutdown future completed")
        .unwrap()
        .expect("run ended with an error");
}
