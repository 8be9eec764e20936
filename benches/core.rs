//! Micro-benchmarks of the hot paths, with baselines measured in the same run:
//! - one data packet in and out (decrypt, route, netstack, encrypt), beside
//!   the client-side encryption that the iteration also pays for;
//! - handshakes per second on one core;
//! - config load and peer-set reload for 10,000 peers, and the resident
//!   memory each idle peer costs;
//! - the scope rewrite of a PromQL query (parse, add the scope, print,
//!   re-parse and verify), beside parsing alone.
//!
//! Run: `cargo bench --bench core`.

// The one unsafe item in the project: a counting allocator, so that the
// memory each idle peer costs is measured in live heap bytes rather than in
// RSS, which the allocator's reuse of freed memory would blur.
#![allow(unsafe_code)]

use boringtun::noise::{Tunn, TunnResult};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

struct Counting;
static LIVE: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;
use boringtun::x25519::{PublicKey, StaticSecret};
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use promgate::config::{self, GatewayConfig, Origin, PeerConfig, Role};
use promgate_core::gateway::Gateway;
use promgate_core::keys::{PrivateKey, encode_key};
use promgate_core::stats::Stats;
use std::hint::black_box;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn gateway_config(key: &PrivateKey) -> GatewayConfig {
    let mut c = GatewayConfig::with_defaults(
        key.clone(),
        "10.13.0.1/16".parse().unwrap(),
        "http://127.0.0.1:9090".parse().unwrap(),
    );
    c.upstream_timeout = Duration::from_secs(5);
    c.max_connections_per_peer = 64;
    c.tcp_idle_timeout = Duration::from_secs(60);
    c
}

fn peer(i: u32, public: [u8; 32]) -> PeerConfig {
    let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 13, 0, 2)) + i);
    PeerConfig {
        name: format!("peer-{i}"),
        public_key: public,
        allowed_ips: vec![format!("{ip}/32").parse().unwrap()],
        preshared_key: None,
        persistent_keepalive: None,
        role: Role::Viewer,
        allow_paths: vec![],
        deny_paths: vec![],
        scope: None,
        origin: Origin {
            file: "bench".into(),
            line: 1,
        },
    }
}

/// An ICMP echo request from 10.13.0.2 to the gateway.
fn echo_request() -> Vec<u8> {
    let mut p = vec![
        0x45, 0, 0, 0, 0, 0, 0, 0, 64, 1, 0, 0, 10, 13, 0, 2, 10, 13, 0, 1, // IPv4
        8, 0, 0, 0, 0, 1, 0, 1, // ICMP echo
    ];
    p.extend_from_slice(&[0xab; 1024]);
    let len = p.len() as u16;
    p[2..4].copy_from_slice(&len.to_be_bytes());
    let csum = |d: &[u8]| {
        let mut s = 0u32;
        for c in d.chunks(2) {
            s += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
        }
        while s > 0xffff {
            s = (s & 0xffff) + (s >> 16);
        }
        !(s as u16)
    };
    let h = csum(&p[..20]);
    p[10..12].copy_from_slice(&h.to_be_bytes());
    let i = csum(&p[20..]);
    p[22..24].copy_from_slice(&i.to_be_bytes());
    p
}

fn data_path(c: &mut Criterion) {
    let key = PrivateKey::generate();
    let client_secret = StaticSecret::random();
    let stats = Arc::new(Stats::default());
    let mut gw = Gateway::new(
        &gateway_config(&key).core_settings(),
        &[peer(0, PublicKey::from(&client_secret).to_bytes())],
        stats,
        promgate_core::gateway::Clock {
            poll_request: std::task::Waker::noop().clone(),
            seed: 1,
            now: Instant::now(),
            unix_now: unix_now(),
        },
    );
    let mut client = Tunn::new(client_secret, key.public_key(), None, None, 1, None);
    let src: SocketAddr = "192.0.2.1:40000".parse().unwrap();
    let mut buf = vec![0u8; 65536];
    let mut out: Vec<(SocketAddr, Vec<u8>)> = Vec::new();
    // Handshake.
    if let TunnResult::WriteToNetwork(init) = client.format_handshake_initiation(&mut buf, false) {
        let init = init.to_vec();
        gw.handle_datagram(Instant::now(), src, &init, &mut out);
    }
    for (_, d) in out.drain(..) {
        let mut b2 = vec![0u8; 65536];
        let _ = client.decapsulate(None, &d, &mut b2);
    }
    let packet = echo_request();
    let mut group = c.benchmark_group("data_packet");
    group.bench_function("baseline: client encrypt only", |b| {
        b.iter(|| {
            let _ = black_box(client.encapsulate(&packet, &mut buf));
        })
    });
    group.bench_function("gateway: decrypt + route + netstack + encrypt reply", |b| {
        let mut sink = NullSink(0);
        b.iter(|| {
            let now = Instant::now();
            if let TunnResult::WriteToNetwork(d) = client.encapsulate(&packet, &mut buf) {
                gw.handle_datagram(now, src, d, &mut sink);
            }
            gw.poll(now, &mut sink);
        });
        assert!(sink.0 > 0, "the gateway answered no echo");
    });
    group.finish();
}

struct NullSink(usize);
impl promgate_core::gateway::Transmit for NullSink {
    fn send_datagram(&mut self, _: SocketAddr, d: &[u8]) {
        self.0 += black_box(d.len()).min(1);
    }
}

/// Records the message type of every datagram the gateway sends.
struct TypeSink(Vec<u8>);
impl promgate_core::gateway::Transmit for TypeSink {
    fn send_datagram(&mut self, _: SocketAddr, d: &[u8]) {
        self.0.push(d.first().copied().unwrap_or(0));
    }
}

/// Handshake cost on one core: (a) full handshakes, with the load threshold
/// out of the way, and (b) the cookie replies that replace them under load.
/// Every iteration checks which message it got back, so a run that measured
/// the wrong path fails instead of reporting a flattering number.
fn handshakes(c: &mut Criterion) {
    let key = PrivateKey::generate();
    const N: usize = 256;
    let secrets: Vec<StaticSecret> = (0..N).map(|_| StaticSecret::random()).collect();
    let peers: Vec<PeerConfig> = secrets
        .iter()
        .enumerate()
        .map(|(i, s)| peer(i as u32, PublicKey::from(s).to_bytes()))
        .collect();
    let mut group = c.benchmark_group("handshake");
    // The floor: a responder needs four X25519 operations per handshake: the
    // DH that decrypts the initiator's static key (which also finds the
    // peer), its ephemeral key pair, and two DH with that. Unpatched,
    // boringtun spent a fifth, repeating the first (see PATCHES.md).
    let a = StaticSecret::random();
    let b_pub = PublicKey::from(&StaticSecret::random());
    group.bench_function("baseline: one X25519 Diffie-Hellman", |b| {
        b.iter(|| black_box(a.diffie_hellman(black_box(&b_pub))))
    });
    for (label, limit, want_type) in [
        (
            "gateway: full handshake (initiation -> response)",
            u64::MAX / 4,
            2u8,
        ),
        ("gateway: under load (initiation -> cookie reply)", 1, 3u8),
    ] {
        let (mut gw, mut clients) = handshake_lab(&key, &secrets, &peers, limit);
        // Under load, the limiter first has to see a burst.
        for (i, c) in clients.iter_mut().enumerate().take(4) {
            let mut buf = vec![0u8; 256];
            if let TunnResult::WriteToNetwork(d) = c.format_handshake_initiation(&mut buf, true) {
                let d = d.to_vec();
                gw.handle_datagram(
                    Instant::now(),
                    SocketAddr::from(([192, 0, 2, 1], 1000 + i as u16)),
                    &d,
                    &mut TypeSink(Vec::new()),
                );
            }
        }
        let mut next = 0usize;
        let mut wrong = 0usize;
        group.bench_function(label, |b| {
            b.iter_batched(
                || {
                    let c = &mut clients[next % N];
                    next += 1;
                    let mut buf = vec![0u8; 256];
                    match c.format_handshake_initiation(&mut buf, true) {
                        TunnResult::WriteToNetwork(d) => d.to_vec(),
                        _ => Vec::new(),
                    }
                },
                |init| {
                    let mut sink = TypeSink(Vec::with_capacity(2));
                    gw.handle_datagram(
                        Instant::now(),
                        "192.0.2.1:1".parse().unwrap(),
                        &init,
                        &mut sink,
                    );
                    if sink.0.first() != Some(&want_type) {
                        wrong += 1;
                    }
                },
                BatchSize::SmallInput,
            )
        });
        assert_eq!(
            wrong, 0,
            "{label}: {wrong} initiations got another answer than type {want_type}"
        );
    }
    group.finish();
    handshake_ratio(&key, &secrets, &peers);
}

/// A gateway with `peers` and the load threshold `limit`, and one
/// initiating `Tunn` per peer secret.
fn handshake_lab(
    key: &PrivateKey,
    secrets: &[StaticSecret],
    peers: &[PeerConfig],
    limit: u64,
) -> (Gateway, Vec<Tunn>) {
    let mut config = gateway_config(key);
    config.handshake_rate_limit = limit;
    let gw = Gateway::new(
        &config.core_settings(),
        peers,
        Arc::new(Stats::default()),
        promgate_core::gateway::Clock {
            poll_request: std::task::Waker::noop().clone(),
            seed: 1,
            now: Instant::now(),
            unix_now: unix_now(),
        },
    );
    let clients = secrets
        .iter()
        .enumerate()
        .map(|(i, s)| Tunn::new(s.clone(), key.public_key(), None, None, i as u32, None))
        .collect();
    (gw, clients)
}

/// The handshake's cost in X25519 operations, both timed in the same
/// process and interleaved in rounds, so that load from elsewhere on the
/// machine weighs on both alike. Prints the median over the rounds.
fn handshake_ratio(key: &PrivateKey, secrets: &[StaticSecret], peers: &[PeerConfig]) {
    const ROUNDS: usize = 5;
    const PER_ROUND: usize = 400;
    let (mut gw, mut clients) = handshake_lab(key, secrets, peers, u64::MAX / 4);
    let src: SocketAddr = "192.0.2.1:1".parse().unwrap();
    let mut sink = TypeSink(Vec::with_capacity(2));
    let mut wrong = 0usize;
    // Initiations are made ahead (in the order they are sent, so each
    // peer's timestamps increase); the first round trip per peer creates
    // its `Tunn` and is not timed.
    let n_clients = clients.len();
    let mut initiations = |n: usize, next: &mut usize| -> Vec<Vec<u8>> {
        (0..n)
            .map(|_| {
                let c = &mut clients[*next % n_clients];
                *next += 1;
                let mut buf = vec![0u8; 256];
                match c.format_handshake_initiation(&mut buf, true) {
                    TunnResult::WriteToNetwork(d) => d.to_vec(),
                    _ => Vec::new(),
                }
            })
            .collect()
    };
    let mut next = 0usize;
    for init in initiations(secrets.len(), &mut next) {
        gw.handle_datagram(Instant::now(), src, &init, &mut sink);
        sink.0.clear();
    }
    let a = StaticSecret::random();
    let b_pub = PublicKey::from(&StaticSecret::random());
    let (mut dh, mut hs) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let batch = initiations(PER_ROUND, &mut next);
        let t = Instant::now();
        for _ in 0..PER_ROUND {
            black_box(a.diffie_hellman(black_box(&b_pub)));
        }
        dh.push(t.elapsed().as_secs_f64() / PER_ROUND as f64);
        let t = Instant::now();
        for init in &batch {
            gw.handle_datagram(Instant::now(), src, init, &mut sink);
            if sink.0.first() != Some(&2) {
                wrong += 1;
            }
            sink.0.clear();
        }
        hs.push(t.elapsed().as_secs_f64() / PER_ROUND as f64);
    }
    assert_eq!(wrong, 0, "{wrong} initiations got no handshake response");
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let ratios: Vec<f64> = hs.iter().zip(&dh).map(|(h, d)| h / d).collect();
    let ratio = median(&mut ratios.clone());
    let (dh, hs) = (median(&mut dh), median(&mut hs));
    println!(
        "\nhandshake/ratio ({ROUNDS} interleaved rounds of {PER_ROUND}, medians): full handshake {:.1} µs, one X25519 {:.1} µs: \
         {ratio:.2} X25519 per handshake; {:.0} handshakes/s per core = {:.0}% of the 4-X25519 floor ({:.0}/s)",
        hs * 1e6,
        dh * 1e6,
        1.0 / hs,
        400.0 / ratio,
        1.0 / (4.0 * dh),
    );
}

fn config_text(n: u32, dir: &std::path::Path) -> String {
    let key = PrivateKey::generate();
    std::fs::write(dir.join("private.key"), key.to_base64()).unwrap();
    let mut s = format!(
        "[gateway]\nprivate_key_file = \"{}/private.key\"\naddress = \"10.0.0.1/8\"\n",
        dir.display()
    );
    for i in 0..n {
        let public = PublicKey::from(&StaticSecret::random()).to_bytes();
        let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 1, 0, 0)) + i);
        s.push_str(&format!(
            "[[peer]]\nname = \"peer-{i}\"\npublic_key = \"{}\"\nallowed_ips = [\"{ip}/32\"]\n",
            encode_key(&public)
        ));
    }
    s
}

fn ten_thousand_peers(c: &mut Criterion) {
    let dir = std::env::temp_dir().join(format!("promgate-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let text = config_text(10_000, &dir);
    let path = dir.join("promgate.toml");
    let mut group = c.benchmark_group("10k_peers");
    group.sample_size(10);
    group.bench_function("config: parse and validate", |b| {
        b.iter(|| black_box(config::parse(&path, &text).unwrap()))
    });
    let cfg = config::parse(&path, &text).unwrap();
    group.bench_function("gateway: build peer table", |b| {
        b.iter(|| {
            black_box(Gateway::new(
                &cfg.gateway.core_settings(),
                &cfg.peers,
                Arc::new(Stats::default()),
                promgate_core::gateway::Clock {
                    poll_request: std::task::Waker::noop().clone(),
                    seed: 1,
                    now: Instant::now(),
                    unix_now: unix_now(),
                },
            ))
        })
    });
    let mut gw = Gateway::new(
        &cfg.gateway.core_settings(),
        &cfg.peers,
        Arc::new(Stats::default()),
        promgate_core::gateway::Clock {
            poll_request: std::task::Waker::noop().clone(),
            seed: 1,
            now: Instant::now(),
            unix_now: unix_now(),
        },
    );
    let mut changed = cfg.peers.clone();
    changed.pop();
    group.bench_function("gateway: reload (one peer removed, one re-added)", |b| {
        let mut sink = NullSink(0);
        b.iter(|| {
            gw.apply_peers(Instant::now(), &changed, &mut sink);
            gw.apply_peers(Instant::now(), &cfg.peers, &mut sink);
        })
    });
    group.finish();

    // Memory per idle peer: live heap bytes of the gateway's peer state,
    // beyond what an empty gateway costs. `cfg` is allocated already.
    let new_gateway = |peers: &[PeerConfig]| {
        Gateway::new(
            &cfg.gateway.core_settings(),
            peers,
            Arc::new(Stats::default()),
            promgate_core::gateway::Clock {
                poll_request: std::task::Waker::noop().clone(),
                seed: 1,
                now: Instant::now(),
                unix_now: unix_now(),
            },
        )
    };
    let before = LIVE.load(Ordering::Relaxed);
    let empty = new_gateway(&[]);
    let empty_cost = LIVE.load(Ordering::Relaxed) - before;
    drop(empty);
    let before = LIVE.load(Ordering::Relaxed);
    let gw = new_gateway(&cfg.peers);
    let full_cost = LIVE.load(Ordering::Relaxed) - before;
    let per_peer = full_cost.saturating_sub(empty_cost) as f64 / 10_000.0;
    println!(
        "\n10k_peers/memory: {:.0} KiB heap for 10,000 idle peers beyond an empty gateway ({:.0} KiB) = {:.0} bytes per peer (target < 2048)",
        full_cost.saturating_sub(empty_cost) as f64 / 1024.0,
        empty_cost as f64 / 1024.0,
        per_peer
    );
    drop(gw);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A typical dashboard panel query, and a large generated one (a 40-way
/// `or` of per-service error ratios, ~6 KiB, 80 selectors).
fn scope_rewrite(c: &mut Criterion) {
    use promgate::web::scope::Scope;
    use promgate::web::scope::promql::enforce_query;
    let scope = Scope::new([("namespace", &["team-a"][..])]).unwrap();
    let typical = r#"histogram_quantile(0.99, sum by (le, route) (rate(http_request_duration_seconds_bucket{job="api", route!~"/health.*"}[5m])))"#;
    let large = (0..40)
        .map(|i| {
            format!(
                r#"(sum by (instance) (rate(http_requests_total{{service="svc-{i}", code=~"5.."}}[5m])) / sum by (instance) (rate(http_requests_total{{service="svc-{i}"}}[5m])))"#
            )
        })
        .collect::<Vec<_>>()
        .join(" or ");
    let mut group = c.benchmark_group("scope_rewrite");
    group.bench_function("baseline: parse only (typical)", |b| {
        b.iter(|| promql_parser::parser::parse(black_box(typical)).unwrap())
    });
    group.bench_function("typical dashboard query", |b| {
        b.iter(|| enforce_query(&scope, black_box(typical)).unwrap())
    });
    group.bench_function("baseline: parse only (large)", |b| {
        b.iter(|| promql_parser::parser::parse(black_box(&large)).unwrap())
    });
    group.bench_function(format!("large query ({} bytes)", large.len()), |b| {
        b.iter(|| enforce_query(&scope, black_box(&large)).unwrap())
    });
    // Issue 23, item 1: regex-heavy queries. Before the patched parser, the
    // first took ~3.5 s (32 compilations of ~108 ms) and ~750 MiB.
    let hostile = |n: usize, pattern: &str| {
        let m: Vec<String> = (0..n).map(|i| format!("l{i}=~\"{pattern}\"")).collect();
        format!("up{{{}}}", m.join(","))
    };
    let issue = hostile(32, r"(?:\\w){200}");
    let worst = hostile(
        promgate::web::scope::promql::MAX_REGEX_MATCHERS - 1,
        ".{130}",
    );
    let refused = hostile(1, ".{300}");
    group.bench_function("hostile: issue 23's 32 x (?:\\w){200}", |b| {
        b.iter(|| enforce_query(&scope, black_box(&issue)).unwrap())
    });
    group.bench_function("hostile: 47 x .{130} (costliest accepted)", |b| {
        b.iter(|| enforce_query(&scope, black_box(&worst)).unwrap())
    });
    group.bench_function("hostile: .{300} (refused, too large)", |b| {
        b.iter(|| enforce_query(&scope, black_box(&refused)).unwrap_err())
    });
    group.finish();
}

criterion_group!(
    benches,
    data_path,
    handshakes,
    ten_thousand_peers,
    scope_rewrite
);
criterion_main!(benches);

/// Unix time now, for the core, which reads no clock of its own.
fn unix_now() -> std::time::Duration {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
}
