//! Arbitrary datagrams into `Gateway::handle_datagram`, from arbitrary
//! sources, interleaved with `poll` at arbitrary (virtual) times and with
//! real handshakes and data from configured peers and an unknown key.
//!
//! Invariants: no panic; every datagram the gateway emits goes to an
//! address that sent it an authenticated message (a configured peer's
//! handshake or data, or a replay of a handshake message), except cookie
//! replies, which go only to an address that sent an initiation with a
//! valid MAC1 (WireGuard's DoS defence). Raw bytes and replayed data
//! messages never earn a reply.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use promgate_core::gateway::Gateway;
use promgate_fuzz::*;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

#[derive(Debug, Arbitrary)]
enum Op {
    /// Arbitrary bytes from an address of the pool.
    Raw {
        src: u8,
        bytes: Vec<u8>,
    },
    /// Arbitrary bytes with a valid WireGuard message type and length
    /// prefix, to reach deeper than the type check.
    Typed {
        src: u8,
        kind: u8,
        bytes: Vec<u8>,
    },
    /// A configured peer's handshake initiation.
    Handshake {
        peer: u8,
        src: u8,
    },
    /// A configured peer encrypts the fuzzer's bytes (an initiation if it
    /// has no session yet).
    Data {
        peer: u8,
        src: u8,
        payload: Vec<u8>,
    },
    /// An initiation from a key the gateway does not know.
    Stranger {
        src: u8,
    },
    /// A datagram sent earlier, sent again from any address.
    Replay {
        index: u8,
        src: u8,
    },
    /// Time passes, then the gateway polls.
    Poll {
        millis: u16,
    },
    TakeAccepted,
}

#[derive(Debug, Arbitrary)]
struct Input {
    /// A low handshake budget reaches the cookie path.
    rate_limit: u8,
    ops: Vec<Op>,
}

struct World {
    gw: Gateway,
    peers: Vec<HarnessPeer>,
    /// Where each harness peer currently sends from.
    endpoint: Vec<Option<SocketAddr>>,
    authenticated: HashSet<SocketAddr>,
    mac1_valid: HashSet<SocketAddr>,
    sent: Vec<Vec<u8>>,
    now: Instant,
}

impl World {
    fn deliver(&mut self, src: SocketAddr, d: &[u8]) {
        let mut out = Vec::new();
        self.gw.handle_datagram(self.now, src, d, &mut out);
        self.route(out);
    }

    /// Checks where each gateway datagram goes, and hands it to the harness
    /// peer at that address (whose answers go back in, a bounded number of
    /// rounds).
    fn route(&mut self, mut out: Vec<(SocketAddr, Vec<u8>)>) {
        for _round in 0..4 {
            let mut back = Vec::new();
            for (dst, d) in out.drain(..) {
                let cookie = d.first() == Some(&3) && d.len() == 64;
                assert!(
                    self.authenticated.contains(&dst) || (cookie && self.mac1_valid.contains(&dst)),
                    "a {}-byte datagram (type {:?}) went to {dst}, which never authenticated",
                    d.len(),
                    d.first()
                );
                for (i, p) in self.peers.iter_mut().enumerate() {
                    if self.endpoint[i] == Some(dst) {
                        let (replies, _inner) = p.open(&d);
                        for r in replies {
                            back.push((dst, r));
                        }
                    }
                }
            }
            if back.is_empty() {
                return;
            }
            for (src, d) in back {
                self.authenticated.insert(src);
                self.gw.handle_datagram(self.now, src, &d, &mut out);
            }
        }
    }

    fn send_crafted(&mut self, peer: usize, src: SocketAddr, d: Vec<u8>) {
        // A genuine message from a configured peer: its source is
        // authenticated from now on (WireGuard roams to it).
        self.authenticated.insert(src);
        self.mac1_valid.insert(src);
        self.endpoint[peer] = Some(src);
        self.sent.push(d.clone());
        self.deliver(src, &d);
    }
}

fuzz_target!(|input: Input| {
    let now = Instant::now();
    let rate = u64::from(input.rate_limit % 16) + 1;
    let mut w = World {
        gw: gateway(rate, 1, now),
        peers: keys()
            .peers
            .iter()
            .enumerate()
            .map(|(i, s)| HarnessPeer::new(s, i as u32))
            .collect(),
        endpoint: vec![None; PEERS],
        authenticated: HashSet::new(),
        mac1_valid: HashSet::new(),
        sent: Vec::new(),
        now,
    };
    for op in input.ops.into_iter().take(64) {
        match op {
            Op::Raw { src, bytes } => w.deliver(endpoint(src), &bytes),
            Op::Typed {
                src,
                kind,
                mut bytes,
            } => {
                let (t, len) = [
                    (1u8, 148usize),
                    (2, 92),
                    (3, 64),
                    (4, 32 + (bytes.len() & !15)),
                ][usize::from(kind % 4)];
                bytes.resize(len, 0);
                bytes[..4].copy_from_slice(&[t, 0, 0, 0]);
                w.deliver(endpoint(src), &bytes);
            }
            Op::Handshake { peer, src } => {
                let i = usize::from(peer) % PEERS;
                if let Some(d) = w.peers[i].initiation() {
                    w.send_crafted(i, endpoint(src), d);
                }
            }
            Op::Data { peer, src, payload } => {
                let i = usize::from(peer) % PEERS;
                if let Some(d) = w.peers[i].seal(&payload) {
                    w.send_crafted(i, endpoint(src), d);
                }
            }
            Op::Stranger { src } => {
                let mut t = HarnessPeer::new(&keys().stranger, 99);
                if let Some(d) = t.initiation() {
                    let src = endpoint(src);
                    w.mac1_valid.insert(src);
                    w.sent.push(d.clone());
                    w.deliver(src, &d);
                }
            }
            Op::Replay { index, src } => {
                if !w.sent.is_empty() {
                    let d = w.sent[usize::from(index) % w.sent.len()].clone();
                    let src = endpoint(src);
                    // A replayed handshake message is still a genuine one:
                    // if the gateway never processed the original (it was
                    // answered with a cookie), WireGuard accepts it and
                    // answers its source, as the protocol says. A replayed
                    // data message must never move the peer's endpoint.
                    if matches!(d.first(), Some(1 | 2)) {
                        w.authenticated.insert(src);
                        w.mac1_valid.insert(src);
                    }
                    w.deliver(src, &d);
                }
            }
            Op::Poll { millis } => {
                w.now += Duration::from_millis(u64::from(millis));
                let mut out = Vec::new();
                w.gw.poll(w.now, &mut out);
                w.route(out);
            }
            Op::TakeAccepted => drop(w.gw.take_accepted()),
        }
    }
    let mut out = Vec::new();
    w.gw.poll(w.now + Duration::from_secs(1), &mut out);
    w.route(out);
});
