//! Arbitrary inner IPv4/IPv6 packets from real peer sessions: the fuzzer
//! decides what each peer encrypts (optionally fixed up to parse, with its
//! own, another peer's or an arbitrary source address), when the gateway
//! polls, and when the peers complete the TCP handshakes they were offered.
//!
//! Invariants: no panic; every accepted connection carries the identity of
//! the peer that owns its source address; every datagram goes to a peer's
//! own endpoint, decrypts under that peer's session, and carries a packet
//! addressed to that peer (nothing reaches another peer).
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use promgate_core::gateway::Gateway;
use promgate_fuzz::*;
use smoltcp::wire::{IpProtocol, Ipv4Packet, Ipv6Packet, TcpPacket};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

#[derive(Debug, Arbitrary)]
enum Op {
    Send {
        peer: u8,
        v6: bool,
        src: Addr,
        /// Make it TCP to this port (80 is served) with a valid checksum.
        tcp_port: Option<u8>,
        fix: bool,
        bytes: Vec<u8>,
    },
    /// Every peer answers the SYN-ACKs it has received with an ACK that
    /// carries `request`.
    Complete {
        request: Vec<u8>,
    },
    Poll {
        millis: u16,
    },
    TakeAccepted,
}

struct World {
    gw: Gateway,
    peers: Vec<HarnessPeer>,
    /// SYN-ACKs received per peer: (v6, local port, their seq, our seq).
    offers: Vec<Vec<(bool, u16, u32, u32)>>,
    now: Instant,
}

fn endpoint_of(i: usize) -> SocketAddr {
    SocketAddr::from(([192, 0, 2, 10 + i as u8], 51000))
}

impl World {
    fn send(&mut self, i: usize, packet: &[u8]) {
        if let Some(d) = self.peers[i].seal(packet) {
            let mut out = Vec::new();
            self.gw
                .handle_datagram(self.now, endpoint_of(i), &d, &mut out);
            self.check(out);
        }
    }

    fn check(&mut self, out: Vec<(SocketAddr, Vec<u8>)>) {
        for (dst, d) in out {
            let Some(i) = (0..PEERS).find(|i| endpoint_of(*i) == dst) else {
                panic!("a datagram went to {dst}, which is no peer's endpoint");
            };
            let (replies, inner) = self.peers[i].open(&d);
            for r in replies {
                let mut more = Vec::new();
                self.gw.handle_datagram(self.now, dst, &r, &mut more);
                self.check(more);
            }
            for p in inner {
                let Some((_, to)) = inner_addrs(&p) else {
                    panic!("peer {i} got an unparsable inner packet {p:?}");
                };
                assert!(
                    to == IpAddr::V4(peer_ip4(i)) || to == IpAddr::V6(peer_ip6(i)),
                    "peer {i} was sent a packet addressed to {to}"
                );
                self.note_syn_ack(i, &p);
            }
        }
    }

    fn note_syn_ack(&mut self, i: usize, p: &[u8]) {
        let (v6, payload) = match p[0] >> 4 {
            4 => match Ipv4Packet::new_checked(p) {
                Ok(ip) if ip.next_header() == IpProtocol::Tcp => (false, ip.payload().to_vec()),
                _ => return,
            },
            _ => match Ipv6Packet::new_checked(p) {
                Ok(ip) if ip.next_header() == IpProtocol::Tcp => (true, ip.payload().to_vec()),
                _ => return,
            },
        };
        if let Ok(t) = TcpPacket::new_checked(&payload[..]) {
            if t.syn() && t.ack() && self.offers[i].len() < 32 {
                self.offers[i].push((
                    v6,
                    t.dst_port(),
                    (t.seq_number() + 1).0 as u32,
                    t.ack_number().0 as u32,
                ));
            }
        }
    }
}

/// A TCP segment with ACK (and PSH when it carries data) from peer `i`.
fn ack_segment(i: usize, v6: bool, port: u16, ack: u32, seq: u32, data: &[u8]) -> Vec<u8> {
    let hdr = if v6 { 40 } else { 20 };
    let mut p = vec![0u8; hdr + 20 + data.len()];
    {
        let seg = &mut p[hdr..];
        let mut t = TcpPacket::new_unchecked(seg);
        t.set_src_port(port);
        t.set_header_len(20);
        t.set_seq_number(smoltcp::wire::TcpSeqNumber(seq as i32));
        t.set_ack_number(smoltcp::wire::TcpSeqNumber(ack as i32));
        t.set_ack(true);
        t.set_psh(!data.is_empty());
        t.set_window_len(65535);
    }
    p[hdr + 20..].copy_from_slice(data);
    let src = if v6 {
        IpAddr::V6(peer_ip6(i))
    } else {
        IpAddr::V4(peer_ip4(i))
    };
    if !v6 {
        p[9] = 6;
    }
    fix_up(&mut p, v6, Some(src), Some(80));
    p
}

fuzz_target!(|ops: Vec<Op>| {
    let now = Instant::now();
    let mut w = World {
        gw: gateway(1000, 2, now),
        peers: keys()
            .peers
            .iter()
            .enumerate()
            .map(|(i, s)| HarnessPeer::new(s, i as u32))
            .collect(),
        offers: vec![Vec::new(); PEERS],
        now,
    };
    // Real sessions first: each peer's initiation, answered.
    for i in 0..PEERS {
        if let Some(init) = w.peers[i].initiation() {
            let mut out = Vec::new();
            w.gw.handle_datagram(now, endpoint_of(i), &init, &mut out);
            w.check(out);
        }
    }
    for op in ops.into_iter().take(64) {
        match op {
            Op::Send {
                peer,
                v6,
                src,
                tcp_port,
                fix,
                mut bytes,
            } => {
                let i = usize::from(peer) % PEERS;
                if fix {
                    let src = match src {
                        Addr::Own if v6 => Some(IpAddr::V6(peer_ip6(i))),
                        Addr::Own => Some(IpAddr::V4(peer_ip4(i))),
                        Addr::Other(o) if v6 => Some(IpAddr::V6(peer_ip6(usize::from(o) % PEERS))),
                        Addr::Other(o) => Some(IpAddr::V4(peer_ip4(usize::from(o) % PEERS))),
                        Addr::Gateway if v6 => Some(IpAddr::V6(GW6)),
                        Addr::Gateway => Some(IpAddr::V4(GW4)),
                        Addr::AsIs => None,
                    };
                    let port = tcp_port.map(|p| if p < 200 { 80 } else { u16::from(p) });
                    fix_up(&mut bytes, v6, src, port);
                }
                w.send(i, &bytes);
            }
            Op::Complete { request } => {
                let request = &request[..request.len().min(512)];
                for i in 0..PEERS {
                    for (v6, port, ack, seq) in std::mem::take(&mut w.offers[i]) {
                        let seg = ack_segment(i, v6, port, ack, seq, request);
                        w.send(i, &seg);
                    }
                }
            }
            Op::Poll { millis } => {
                w.now += Duration::from_millis(u64::from(millis));
                let mut out = Vec::new();
                w.gw.poll(w.now, &mut out);
                w.check(out);
            }
            Op::TakeAccepted => {
                for (info, _stream) in w.gw.take_accepted() {
                    let owner = (0..PEERS).find(|i| {
                        info.remote.ip() == IpAddr::V4(peer_ip4(*i))
                            || info.remote.ip() == IpAddr::V6(peer_ip6(*i))
                    });
                    let Some(owner) = owner else {
                        panic!(
                            "accepted a connection from {}, which no peer owns",
                            info.remote
                        );
                    };
                    assert_eq!(
                        &*info.access.current().name,
                        peer_name(owner),
                        "the connection from {} was given another peer's identity",
                        info.remote
                    );
                }
            }
        }
    }
    let mut out = Vec::new();
    w.gw.poll(w.now + Duration::from_millis(10), &mut out);
    w.check(out);
    drop(w.gw.take_accepted());
});
