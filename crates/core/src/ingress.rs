//! Each session's share of a turn, before decryption.
//!
//! The shell reads datagrams in batches (up to a few thousand per wake-up)
//! and hands them to the gateway one by one; the gateway polls the netstack
//! once the batch is in. Without a share, one peer that fills the batch
//! (a bulk upload, or a flood of well-formed traffic) decides how long
//! every other peer's request waits for that poll: all of its datagrams are
//! decrypted first. With one, a WireGuard data message beyond
//! [`PER_SESSION_TURN`] in a turn is put aside, undecrypted, for the next
//! turn, which begins as soon as this one's poll has sent what the others'
//! datagrams produced.
//!
//! A session is the message's receiver index (which names the peer's slot
//! in the peer table) and the datagram's source address, read from the
//! header without any crypto: that is the point, decryption is the cost.
//! Because the header is not authenticated, someone who can forge the
//! source address of a peer's datagrams can take that peer's share with
//! garbage; without the share such a flood would compete with every peer
//! instead. Handshake messages are not counted here: they have their own
//! rate limit and cookie.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;

/// Data datagrams one session may have decrypted per turn. A full turn of
/// the shell is 4,096 datagrams, so a busy peer still gets a large share
/// when it is alone, and others wait for at most this many of its
/// decryptions plus their own.
pub const PER_SESSION_TURN: usize = 256;

/// Datagrams put aside for the next turn, at most, and their bytes at
/// most: the header is read before any authentication, so anyone can send
/// datagrams of up to 64 KiB that look like data, and what they make the
/// gateway hold is bounded by bytes, not count (4 MiB: 2,048 datagrams at
/// the default MTU). Past either, the datagram is dropped and counted,
/// which the sender's TCP sees as loss.
pub const MAX_DEFERRED: usize = 2048;
pub const MAX_DEFERRED_BYTES: usize = 4 << 20;
/// Reused buffers larger than this are freed instead of kept: a legitimate
/// data message is at most the MTU plus 32 bytes.
const SPARE_CAPACITY: usize = 2048;

/// WireGuard's transport data message: type 4, three reserved zero bytes,
/// the receiver index, the counter, then at least the 16-byte tag.
const DATA_HEADER: [u8; 4] = [4, 0, 0, 0];
const MIN_DATA_LEN: usize = 32;

/// Which session a datagram counts against, if it is a data message.
fn session(src: SocketAddr, datagram: &[u8]) -> Option<(u32, SocketAddr)> {
    if datagram.len() < MIN_DATA_LEN || datagram[..4] != DATA_HEADER {
        return None;
    }
    let index = u32::from_le_bytes(datagram[4..8].try_into().ok()?);
    Some((index >> 8, src))
}

/// What to do with a datagram now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admit {
    Now,
    /// Copied aside; handled at the start of the next turn.
    Deferred,
    /// Over the share and no room to put it aside.
    Dropped,
}

/// The shares of the current turn and the datagrams put aside.
#[derive(Default)]
pub(crate) struct IngressShares {
    /// Datagrams handled this turn, and datagrams waiting, per session.
    handled: HashMap<(u32, SocketAddr), usize>,
    waiting: HashMap<(u32, SocketAddr), usize>,
    deferred: VecDeque<(SocketAddr, Vec<u8>)>,
    deferred_bytes: usize,
    spare: Vec<Vec<u8>>,
}

impl IngressShares {
    /// Decides for one datagram. A session that has datagrams waiting
    /// waits with this one too, so that its datagrams keep their order.
    pub(crate) fn admit(&mut self, src: SocketAddr, datagram: &[u8]) -> Admit {
        let Some(key) = session(src, datagram) else {
            return Admit::Now;
        };
        let handled = self.handled.entry(key).or_insert(0);
        if *handled < PER_SESSION_TURN && !self.waiting.contains_key(&key) {
            *handled += 1;
            return Admit::Now;
        }
        if self.deferred.len() >= MAX_DEFERRED
            || self.deferred_bytes + datagram.len() > MAX_DEFERRED_BYTES
        {
            return Admit::Dropped;
        }
        let mut buf = self.spare.pop().unwrap_or_default();
        buf.clear();
        buf.extend_from_slice(datagram);
        self.deferred_bytes += buf.len();
        self.deferred.push_back((src, buf));
        *self.waiting.entry(key).or_insert(0) += 1;
        Admit::Deferred
    }

    pub(crate) fn has_deferred(&self) -> bool {
        !self.deferred.is_empty()
    }

    /// Starts a turn: every share is fresh, and the datagrams put aside
    /// are handed to `handle` first, each session's within its new share;
    /// the rest wait again, in order.
    pub(crate) fn next_turn(&mut self, mut handle: impl FnMut(SocketAddr, &[u8])) {
        // Most turns have nothing put aside, and a clear of an empty map
        // still writes all of its control bytes.
        if !self.handled.is_empty() {
            self.handled.clear();
        }
        if self.deferred.is_empty() {
            return;
        }
        let waiting = std::mem::take(&mut self.deferred);
        self.deferred_bytes = 0;
        self.waiting.clear();
        for (src, buf) in waiting {
            match self.admit(src, &buf) {
                Admit::Now => handle(src, &buf),
                // Cannot overflow: it held this many a moment ago.
                Admit::Deferred | Admit::Dropped => {}
            }
            if self.spare.len() < MAX_DEFERRED && buf.capacity() <= SPARE_CAPACITY {
                self.spare.push(buf);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(slot: u32, n: u8) -> Vec<u8> {
        let mut d = vec![4, 0, 0, 0];
        d.extend_from_slice(&((slot << 8) | 1).to_le_bytes());
        d.extend_from_slice(&[n; 40]);
        d
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([192, 0, 2, 1], port))
    }

    #[test]
    fn a_session_past_its_share_waits_for_the_next_turn_in_order() {
        let mut s = IngressShares::default();
        for i in 0..PER_SESSION_TURN {
            assert_eq!(s.admit(addr(1), &data(1, i as u8)), Admit::Now);
        }
        assert_eq!(s.admit(addr(1), &data(1, 200)), Admit::Deferred);
        assert_eq!(s.admit(addr(1), &data(1, 201)), Admit::Deferred);
        // Another peer, and a handshake message, are not held back.
        assert_eq!(s.admit(addr(2), &data(2, 0)), Admit::Now);
        assert_eq!(s.admit(addr(1), &[1u8; 148]), Admit::Now);
        let mut seen = Vec::new();
        s.next_turn(|_, d| seen.push(d[8]));
        assert_eq!(seen, vec![200, 201]);
        assert!(!s.has_deferred());
    }

    #[test]
    fn the_same_slot_from_another_source_is_another_session() {
        let mut s = IngressShares::default();
        for _ in 0..PER_SESSION_TURN {
            s.admit(addr(1), &data(1, 0));
        }
        assert_eq!(s.admit(addr(1), &data(1, 0)), Admit::Deferred);
        assert_eq!(s.admit(addr(9), &data(1, 0)), Admit::Now);
    }

    #[test]
    fn waiting_datagrams_keep_their_order_across_turns_and_the_queue_is_bounded() {
        let mut s = IngressShares::default();
        let mut admitted = 0;
        let mut dropped = 0;
        for i in 0..(PER_SESSION_TURN + MAX_DEFERRED + 10) {
            match s.admit(addr(1), &data(1, (i % 251) as u8)) {
                Admit::Now => admitted += 1,
                Admit::Deferred => {}
                Admit::Dropped => dropped += 1,
            }
        }
        assert_eq!((admitted, dropped), (PER_SESSION_TURN, 10));
        // Each turn hands out one share, oldest first.
        let mut turns = 0;
        let mut expected = PER_SESSION_TURN;
        while s.has_deferred() {
            let mut seen = Vec::new();
            s.next_turn(|_, d| seen.push(d[8]));
            assert_eq!(
                seen.len(),
                PER_SESSION_TURN.min(MAX_DEFERRED - turns * PER_SESSION_TURN)
            );
            for (k, v) in seen.iter().enumerate() {
                assert_eq!(usize::from(*v), (expected + k) % 251);
            }
            expected += seen.len();
            turns += 1;
        }
        assert_eq!(turns, MAX_DEFERRED / PER_SESSION_TURN);
        // A datagram of the session that arrives while others wait queues behind them.
        let mut s = IngressShares::default();
        for _ in 0..=PER_SESSION_TURN {
            s.admit(addr(1), &data(1, 0));
        }
        s.next_turn(|_, _| {});
        assert!(!s.has_deferred());
    }

    /// The header is unauthenticated: large datagrams that look like data
    /// can make the gateway hold at most MAX_DEFERRED_BYTES, and their
    /// buffers are not kept for reuse.
    #[test]
    fn what_waits_is_bounded_in_bytes() {
        let mut s = IngressShares::default();
        let mut big = data(1, 0);
        big.resize(65000, 0);
        let mut held = 0;
        for _ in 0..(PER_SESSION_TURN + 200) {
            if s.admit(addr(1), &big) == Admit::Deferred {
                held += big.len();
            }
        }
        assert!(held <= MAX_DEFERRED_BYTES && held + big.len() > MAX_DEFERRED_BYTES);
        s.next_turn(|_, _| {});
        assert!(s.spare.iter().all(|b| b.capacity() <= SPARE_CAPACITY));
    }

    #[test]
    fn short_or_other_messages_are_not_sessions() {
        assert_eq!(session(addr(1), &[4, 0, 0, 0, 1, 0, 0]), None);
        assert_eq!(
            session(
                addr(1),
                &[
                    4, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                    0, 0, 0, 0, 0, 0
                ]
            ),
            None
        );
        assert_eq!(session(addr(1), &data(7, 0)), Some((7, addr(1))));
    }
}
