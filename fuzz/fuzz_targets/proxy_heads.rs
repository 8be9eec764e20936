//! Arbitrary request heads (and whatever follows them) through the real
//! proxy over an in-memory stream, to a recording upstream on loopback.
//!
//! Invariants: no panic; the connection ends once the client has sent
//! everything and closed its side; every request the upstream receives
//! carries exactly one identity header, naming the peer, and exactly one
//! X-Forwarded-For, naming the peer's tunnel address (a client's copies are
//! never passed on); no admin-only path reaches the upstream from a
//! viewer; and no unsafe method marked cross-site, or with a foreign
//! Origin, reaches it at all.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use promgate::config::Role;
use promgate_core::gateway::ConnInfo;
use promgate::web::policy::{AccessRules, PeerAccess};
use promgate::web::proxy::Proxy;
use promgate_core::stats::Stats;
use promgate_fuzz::ADMIN_ONLY;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::runtime::Runtime;

#[derive(Debug, Arbitrary)]
struct Input {
    admin: bool,
    bytes: Vec<u8>,
}

struct Lab {
    rt: Runtime,
    proxy: Arc<Proxy>,
    /// The heads the upstream received, raw.
    heads: Arc<Mutex<Vec<Vec<u8>>>>,
}

fn lab() -> &'static Lab {
    static LAB: OnceLock<Lab> = OnceLock::new();
    LAB.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let heads = Arc::new(Mutex::new(Vec::new()));
        let rec = heads.clone();
        let addr: SocketAddr = rt.block_on(async move {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let addr = l.local_addr().expect("addr");
            tokio::spawn(async move {
                while let Ok((mut s, _)) = l.accept().await {
                    let rec = rec.clone();
                    tokio::spawn(async move {
                        let mut head = Vec::new();
                        let mut buf = [0u8; 4096];
                        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 256 << 10 {
                            match s.read(&mut buf).await {
                                Ok(0) | Err(_) => break,
                                Ok(n) => head.extend_from_slice(&buf[..n]),
                            }
                        }
                        if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                            head.truncate(end + 4);
                        }
                        rec.lock().expect("lock").push(head);
                        let _ = s
                            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
                            .await;
                    });
                }
            });
            addr
        });
        let stats = Arc::new(Stats::default());
        let telemetry = promgate::ops::telemetry::Telemetry::new(
            stats.clone(),
            Default::default(),
            Arc::new(promgate::ops::health::Health::new(None)),
        );
        let proxy = Arc::new(Proxy::new(
            format!("http://{addr}").parse().expect("upstream uri"),
            http::HeaderName::from_static("x-promgate-peer"),
            Duration::from_secs(5),
            telemetry.http.clone(),
            stats,
            host_check(),
        ));
        Lab { rt, proxy, heads }
    })
}

/// The harness gateway's addresses, plus the seeds' `p` and `evil`, so
/// that mutations of the seeds still reach the policy and the upstream.
fn host_check() -> promgate::web::host_check::HostCheck {
    let mut config = promgate_fuzz::gateway_config(1000);
    config.allowed_hosts = vec!["p".into(), "evil".into()];
    promgate::web::host_check::HostCheck::new(&config)
}

/// The host of an Origin, lower case, without a trailing dot; an IPv6
/// literal keeps its brackets (only the gateway's own can pass).
fn origin_host(origin: &str) -> Option<String> {
    let (_, rest) = origin.split_once("://")?;
    let host = match rest.strip_prefix('[') {
        Some(v6) => format!("[{}]", v6.split(']').next()?),
        None => rest.split(':').next()?.to_string(),
    };
    Some(host.to_ascii_lowercase().trim_end_matches('.').to_string())
}

fn headers<'a>(head: &'a str, name: &str) -> Vec<&'a str> {
    head.split("\r\n")
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .filter(|(n, _)| n.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim())
        .collect()
}

fuzz_target!(|input: Input| {
    let lab = lab();
    lab.heads.lock().expect("lock").clear();
    let rules = AccessRules {
        name: Arc::from(if input.admin { "root" } else { "viewer-1" }),
        role: if input.admin {
            Role::Admin
        } else {
            Role::Viewer
        },
        allow_paths: Arc::from(Vec::new()),
        deny_paths: Arc::from(Vec::new()),
        scope: None,
    };
    let name = rules.name.clone();
    let info = ConnInfo {
        access: Arc::new(PeerAccess::new(rules)),
        remote: SocketAddr::from(([10, 13, 13, 3], 40000)),
        local_port: 80,
    };
    let proxy = lab.proxy.clone();
    let bytes = input.bytes;
    lab.rt.block_on(async move {
        let (mut client, server) = tokio::io::duplex(64 << 10);
        let shutdown = tokio_util::sync::CancellationToken::new();
        let task = tokio::spawn(proxy.serve_connection(info, server, shutdown));
        let io = async {
            client.write_all(&bytes).await?;
            client.shutdown().await?;
            let mut sink = Vec::new();
            client.read_to_end(&mut sink).await.map(|_| ())
        };
        let r = tokio::time::timeout(Duration::from_secs(10), io).await;
        assert!(
            r.is_ok(),
            "the connection did not end after the client closed"
        );
        let r = tokio::time::timeout(Duration::from_secs(10), task).await;
        assert!(r.is_ok(), "the connection task outlived its connection");
    });
    for head in lab.heads.lock().expect("lock").iter() {
        let head = String::from_utf8_lossy(head);
        assert_eq!(
            headers(&head, "x-promgate-peer"),
            vec![&*name],
            "identity at the upstream: {head:?}"
        );
        assert_eq!(
            headers(&head, "x-forwarded-for"),
            vec!["10.13.13.3"],
            "X-Forwarded-For at the upstream: {head:?}"
        );
        let method = head.split(' ').next().unwrap_or("");
        if !matches!(method, "GET" | "HEAD" | "OPTIONS") {
            for site in headers(&head, "sec-fetch-site") {
                let site = site.to_ascii_lowercase();
                assert!(
                    site != "cross-site" && site != "same-site",
                    "a cross-site {method} reached the upstream: {head:?}"
                );
            }
            for origin in headers(&head, "origin") {
                let host = origin_host(origin);
                assert!(
                    matches!(host.as_deref(), Some("10.13.13.1" | "p" | "evil"))
                        || host.is_some_and(|h| h.starts_with('[')),
                    "a {method} from origin {origin:?} reached the upstream: {head:?}"
                );
            }
        }
        if !input.admin {
            let path = head.split(' ').nth(1).unwrap_or("").to_ascii_lowercase();
            let path = path.split('?').next().unwrap_or("");
            for p in ADMIN_ONLY {
                assert!(
                    !(path == *p || path.starts_with(&format!("{p}/"))),
                    "a viewer's request reached the upstream at {path}"
                );
            }
        }
    }
});
