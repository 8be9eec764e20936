//! Shared pieces of promgate's fuzz targets: a gateway with a few peers,
//! harness peers built on boringtun (the fuzzer chooses what they send, the
//! keys are real), and TCP/IP packet fix-ups so mutated inner packets get
//! past the checksum checks and reach the interesting code.

use boringtun::noise::{Tunn, TunnResult};
use boringtun::x25519::{PublicKey, StaticSecret};
use promgate::config::{GatewayConfig, Origin, PeerConfig, Role};
use promgate_core::keys::PrivateKey;
use smoltcp::wire::{IpAddress, IpProtocol, Ipv4Packet, Ipv6Packet, TcpPacket};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::OnceLock;
use std::time::Duration;

pub const GW4: Ipv4Addr = Ipv4Addr::new(10, 13, 13, 1);
pub const GW6: Ipv6Addr = Ipv6Addr::new(0xfd13, 0, 0, 0, 0, 0, 0, 1);
pub const PEERS: usize = 3;

/// Keys are made once per process: x25519 key generation is not what is
/// being fuzzed, and fixed keys keep a crash input replayable.
pub struct Keys {
    pub gateway: PrivateKey,
    pub peers: Vec<StaticSecret>,
    pub stranger: StaticSecret,
}

pub fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let secret = |b: u8| StaticSecret::from([b; 32]);
        Keys {
            gateway: PrivateKey::from_base64(&promgate_core::keys::encode_key(&[7u8; 32]))
                .expect("a fixed key"),
            peers: (0..PEERS as u8).map(|i| secret(0x20 + i)).collect(),
            stranger: secret(0x66),
        }
    })
}

pub fn peer_ip4(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 13, 13, 2 + i as u8)
}

pub fn peer_ip6(i: usize) -> Ipv6Addr {
    Ipv6Addr::new(0xfd13, 0, 0, 0, 0, 0, 0, 2 + i as u16)
}

pub fn peer_name(i: usize) -> String {
    format!("p{i}")
}

/// The configured peers: p0 admin, the others viewers; each owns one IPv4
/// and one IPv6 address.
pub fn peer_configs() -> Vec<PeerConfig> {
    keys()
        .peers
        .iter()
        .enumerate()
        .map(|(i, s)| PeerConfig {
            name: peer_name(i),
            public_key: PublicKey::from(s).to_bytes(),
            allowed_ips: vec![
                ipnet::IpNet::from(IpAddr::V4(peer_ip4(i))),
                ipnet::IpNet::from(IpAddr::V6(peer_ip6(i))),
            ],
            preshared_key: None,
            persistent_keepalive: None,
            role: if i == 0 { Role::Admin } else { Role::Viewer },
            allow_paths: vec![],
            deny_paths: vec![],
            scope: None,
            origin: Origin {
                file: "fuzz".into(),
                line: 1,
            },
        })
        .collect()
}

pub fn gateway_config(handshake_rate_limit: u64) -> GatewayConfig {
    let mut c = GatewayConfig::with_defaults(
        keys().gateway.clone(),
        "10.13.13.1/24".parse().expect("literal"),
        "http://127.0.0.1:9".parse().expect("literal"),
    );
    c.addresses.push("fd13::1/64".parse().expect("literal"));
    c.upstream_timeout = Duration::from_secs(5);
    c.max_connections_per_peer = 8;
    c.max_connections = 16;
    c.tcp_idle_timeout = Duration::from_secs(60);
    c.tcp_send_buffer = 16 * 1024;
    c.handshake_rate_limit = handshake_rate_limit;
    c
}

/// A gateway with the harness's peers: every gateway target starts here.
pub fn gateway(
    handshake_rate_limit: u64,
    seed: u64,
    now: std::time::Instant,
) -> promgate_core::gateway::Gateway {
    promgate_core::gateway::Gateway::new(
&gateway_config(handshake_rate_limit).core_settings(),
&peer_configs(),
std::sync::Arc::new(promgate_core::stats::Stats::default()),
promgate_core::gateway::Clock {
poll_request: std::task::Waker::noop().clone(),
seed: seed,
now: now,
unix_now: Duration::from_secs(1_800_000_000),
},
)
}

/// What only admins may use. Written out here rather than taken from
/// `policy`, so that the oracle does not share a mistake with the code
/// under test.
pub const ADMIN_ONLY: &[&str] = &[
    "/api/v1/admin",
    "/api/v2/admin",
    "/-/reload",
    "/-/quit",
    "/debug",
];

/// What only admins may use on an Alertmanager (written out here for the
/// same reason): its v1 API, reload, pprof and metrics.
pub const ALERTMANAGER_ADMIN_ONLY: &[&str] = &["/api/v1", "/-/reload", "/debug", "/metrics"];

/// A WireGuard peer driven by the fuzz input.
pub struct HarnessPeer {
    pub tunn: Tunn,
    buf: Vec<u8>,
}

impl HarnessPeer {
    pub fn new(secret: &StaticSecret, index: u32) -> Self {
        HarnessPeer {
            tunn: Tunn::new(
                secret.clone(),
                keys().gateway.public_key(),
                None,
                None,
                index,
                None,
            ),
            buf: vec![0u8; 65536],
        }
    }

    pub fn initiation(&mut self) -> Option<Vec<u8>> {
        match self.tunn.format_handshake_initiation(&mut self.buf, true) {
            TunnResult::WriteToNetwork(d) => Some(d.to_vec()),
            _ => None,
        }
    }

    /// Encrypts `packet`; without a session boringtun queues it and returns
    /// a handshake initiation instead.
    pub fn seal(&mut self, packet: &[u8]) -> Option<Vec<u8>> {
        match self.tunn.encapsulate(packet, &mut self.buf) {
            TunnResult::WriteToNetwork(d) => Some(d.to_vec()),
            _ => None,
        }
    }

    /// Handles a datagram from the gateway: returns the datagrams the peer
    /// sends back and the inner packets it decrypted.
    pub fn open(&mut self, datagram: &[u8]) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
        let mut replies = Vec::new();
        let mut inner = Vec::new();
        let mut input = datagram;
        loop {
            match self.tunn.decapsulate(None, input, &mut self.buf) {
                TunnResult::WriteToNetwork(d) => {
                    replies.push(d.to_vec());
                    input = &[];
                }
                TunnResult::WriteToTunnelV4(p, _) | TunnResult::WriteToTunnelV6(p, _) => {
                    inner.push(p.to_vec());
                    break;
                }
                _ => break,
            }
        }
        (replies, inner)
    }
}

/// Where an inner packet's addresses point, chosen by the fuzzer.
#[derive(Debug, Clone, Copy, arbitrary::Arbitrary)]
pub enum Addr {
    /// The sending peer's own address.
    Own,
    /// Another peer's address (spoofing).
    Other(u8),
    /// The gateway's address.
    Gateway,
    /// Whatever the bytes say.
    AsIs,
}

/// Makes `bytes` a well-formed-looking IPv4 or IPv6 packet from `src` to
/// the gateway (lengths and checksums fixed), keeping the rest as fuzzed.
pub fn fix_up(bytes: &mut Vec<u8>, v6: bool, src: Option<IpAddr>, tcp_to_port: Option<u16>) {
    if v6 {
        if bytes.len() < 40 {
            bytes.resize(40, 0);
        }
        let len = bytes.len().min(40 + 0xffff);
        bytes.truncate(len);
        let mut ip = Ipv6Packet::new_unchecked(&mut bytes[..]);
        ip.set_version(6);
        ip.set_payload_len((len - 40) as u16);
        if let Some(IpAddr::V6(s)) = src {
            ip.set_src_addr(s);
        }
        ip.set_dst_addr(GW6);
        if let Some(port) = tcp_to_port {
            ip.set_next_header(IpProtocol::Tcp);
            let (s, d) = (IpAddress::Ipv6(ip.src_addr()), IpAddress::Ipv6(GW6));
            tcp_fix(&mut bytes[40..], s, d, port);
        }
    } else {
        if bytes.len() < 20 {
            bytes.resize(20, 0);
        }
        let len = bytes.len().min(0xffff);
        bytes.truncate(len);
        let mut ip = Ipv4Packet::new_unchecked(&mut bytes[..]);
        ip.set_version(4);
        ip.set_header_len(20);
        ip.set_total_len(len as u16);
        ip.set_more_frags(false);
        ip.set_frag_offset(0);
        if let Some(IpAddr::V4(s)) = src {
            ip.set_src_addr(s);
        }
        ip.set_dst_addr(GW4);
        if tcp_to_port.is_some() {
            ip.set_next_header(IpProtocol::Tcp);
        }
        ip.fill_checksum();
        let (s, d) = (IpAddress::Ipv4(ip.src_addr()), IpAddress::Ipv4(GW4));
        if let Some(port) = tcp_to_port {
            tcp_fix(&mut bytes[20..], s, d, port);
        }
        Ipv4Packet::new_unchecked(&mut bytes[..]).fill_checksum();
    }
}

fn tcp_fix(seg: &mut [u8], src: IpAddress, dst: IpAddress, port: u16) {
    if seg.len() < 20 {
        return;
    }
    let mut t = TcpPacket::new_unchecked(seg);
    t.set_dst_port(port);
    // A data offset that fits, so the segment parses.
    let max_words = (t.as_ref().len() / 4).min(15) as u8;
    let words = (t.header_len() / 4).clamp(5, max_words.max(5));
    t.set_header_len(words * 4);
    t.fill_checksum(&src, &dst);
}

/// Source and destination of an inner packet, if it parses that far.
pub fn inner_addrs(p: &[u8]) -> Option<(IpAddr, IpAddr)> {
    match p.first()? >> 4 {
        4 => {
            let ip = Ipv4Packet::new_checked(p).ok()?;
            Some((ip.src_addr().into(), ip.dst_addr().into()))
        }
        6 => {
            let ip = Ipv6Packet::new_checked(p).ok()?;
            Some((ip.src_addr().into(), ip.dst_addr().into()))
        }
        _ => None,
    }
}

/// A UDP source from a small pool (48 addresses), so that the same
/// address is reused: peers roam between them and strangers share them.
pub fn endpoint(n: u8) -> SocketAddr {
    SocketAddr::from(([192, 0, 2, n % 16], 40000 + u16::from(n % 3)))
}
