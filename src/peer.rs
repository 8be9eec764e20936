//! The peer table: one boringtun `Tunn` per configured peer, and the
//! dispatch of incoming datagrams to the right one.
//!
//! Invariants:
//! - A handshake initiation is matched to its peer by the static public key
//!   inside it (`parse_handshake_anon_full`, one Diffie-Hellman); the peer's
//!   `Tunn` continues from that state (`decapsulate_initiation`) instead of
//!   repeating it. Both come from the patched boringtun (PATCHES.md). Every
//!   other message is matched by its receiver index, whose upper 24 bits are
//!   the peer's slot.
//! - One `RateLimiter` is shared by all peers; its owner (the gateway's
//!   tick) resets it once a second, and under load it answers handshakes
//!   with cookie replies.
//! - A peer's endpoint is only updated from a datagram that authenticated,
//!   so a spoofed source address cannot steal a peer's replies.
//! - Slots are reused after a peer is removed. A stale receiver index that
//!   lands on a new occupant fails authentication and is dropped.

use crate::allowed_ips::AllowedIps;
use crate::config::PeerConfig;
use crate::keys::PrivateKey;
use crate::policy::{AccessRules, PeerAccess};
use crate::role::Role;
use crate::stats::{DropReason, PeerStats};
use boringtun::noise::handshake::parse_handshake_anon_full;
use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::noise::{Packet, Tunn, TunnResult};
use boringtun::x25519::PublicKey;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Index of a peer's slot in the table.
pub type PeerId = u32;

/// boringtun keeps the index in 24 bits.
const MAX_SLOTS: usize = 1 << 24;

/// A configured peer and its live tunnel state.
pub struct Peer {
    pub config: PeerConfig,
    /// Shared with telemetry and the proxy; cheap to clone.
    pub name: Arc<str>,
    /// Shared with every open connection of this peer, updated on reload.
    pub access: Arc<PeerAccess>,
    /// Created on the peer's first authenticated handshake: an idle peer
    /// costs no Diffie-Hellman at load time and no session memory.
    tunn: Option<Box<Tunn>>,
    /// Where to send this peer's datagrams: its latest authenticated source.
    pub endpoint: Option<SocketAddr>,
    pub stats: Arc<PeerStats>,
}

/// What an incoming datagram turned into.
#[derive(Debug)]
pub enum Decapsulated<'a> {
    /// Send these bytes back to the datagram's source (handshake response,
    /// cookie reply, keepalive). Then call [`PeerTable::flush_queued`].
    Reply(PeerId, &'a [u8]),
    /// An authenticated inner IP packet from `PeerId`, not yet checked
    /// against AllowedIPs.
    Inner(PeerId, &'a [u8]),
    /// Under load: the handshake is refused and this cookie reply goes back
    /// to the source, which retries with the cookie (WireGuard's DoS defence).
    CookieReply(&'a [u8]),
    /// Authenticated, nothing to do (keepalive, cookie stored).
    Nothing(Option<PeerId>),
    Dropped(DropReason),
}

/// What became of an outgoing inner packet.
#[derive(Debug)]
pub enum Encapsulated<'a> {
    /// Send these bytes to this endpoint.
    Datagram(SocketAddr, &'a [u8]),
    /// The session has expired: boringtun queued the packet and sends it
    /// once the peer handshakes again. Not a drop.
    Queued,
    /// The peer never completed a handshake, or is gone.
    NoSession,
}

/// Result of a reload: what changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PeerDiff {
    pub added: Vec<String>,
    pub removed: Vec<(PeerId, String)>,
    /// Peers that kept their session; `changed` names those among them
    /// whose name, role or paths changed (effective on their next request).
    pub kept: usize,
    pub changed: Vec<String>,
}

pub struct PeerTable {
    private_key: PrivateKey,
    public_key: PublicKey,
    slots: Vec<Option<Peer>>,
    free: Vec<PeerId>,
    by_key: HashMap<[u8; 32], PeerId>,
    routes: AllowedIps<PeerId>,
    rate_limiter: Arc<RateLimiter>,
    session_limiter: Arc<RateLimiter>,
    last_reset: Option<Instant>,
}

impl PeerTable {
    /// `handshakes_per_second` is the load threshold for cookie replies.
    pub fn new(private_key: PrivateKey, peers: &[PeerConfig], handshakes_per_second: u64) -> Self {
        let public_key = private_key.public_key();
        // One limiter decides on load, in the pre-check that every
        // handshake passes before any Diffie-Hellman, so each initiation
        // counts once, whether its key is known or not.
        let rate_limiter = Arc::new(RateLimiter::new(&public_key, handshakes_per_second));
        // `Tunn::decapsulate` (handshake responses, data) runs the limiter's
        // check again; give it one that is never under load, so the same
        // packet is not counted twice (its MAC1 is still verified; MAC2 was
        // checked in the pre-check). Initiations skip that second check:
        // `decapsulate_initiation` relies on the pre-check alone.
        let session_limiter = Arc::new(RateLimiter::new(&public_key, u64::MAX));
        let mut table = PeerTable {
            private_key,
            public_key,
            slots: Vec::with_capacity(peers.len()),
            free: Vec::new(),
            by_key: HashMap::with_capacity(peers.len()),
            routes: AllowedIps::new(),
            rate_limiter,
            session_limiter,
            last_reset: None,
        };
        for p in peers {
            table.insert(p.clone());
        }
        table
    }

    pub fn public_key(&self) -> &PublicKey {
        &self.public_key
    }

    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    pub fn get(&self, id: PeerId) -> Option<&Peer> {
        self.slots.get(id as usize).and_then(|s| s.as_ref())
    }

    pub fn get_mut(&mut self, id: PeerId) -> Option<&mut Peer> {
        self.slots.get_mut(id as usize).and_then(|s| s.as_mut())
    }

    pub fn iter(&self) -> impl Iterator<Item = (PeerId, &Peer)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.as_ref().map(|p| (i as PeerId, p)))
    }

    /// The peer whose AllowedIPs contain `addr` (cryptokey routing).
    pub fn route(&self, addr: IpAddr) -> Option<PeerId> {
        self.routes.lookup(addr)
    }

    pub fn peer_name(&self, id: PeerId) -> Option<Arc<str>> {
        self.get(id).map(|p| p.name.clone())
    }

    pub fn peer_role(&self, id: PeerId) -> Option<Role> {
        self.get(id).map(|p| p.config.role)
    }

    fn insert(&mut self, config: PeerConfig) -> PeerId {
        let id = match self.free.pop() {
            Some(id) => id,
            None => {
                let id = self.slots.len();
                assert!(id < MAX_SLOTS, "more than 2^24 peers");
                self.slots.push(None);
                id as PeerId
            }
        };
        for net in &config.allowed_ips {
            self.routes.insert(*net, id);
        }
        self.by_key.insert(config.public_key, id);
        self.slots[id as usize] = Some(Peer {
            name: Arc::from(config.name.as_str()),
            access: Arc::new(PeerAccess::new(access_rules(&config))),
            config,
            tunn: None,
            endpoint: None,
            stats: Arc::new(PeerStats::default()),
        });
        id
    }

    fn remove(&mut self, id: PeerId) -> Option<Peer> {
        let peer = self.slots.get_mut(id as usize)?.take()?;
        self.by_key.remove(&peer.config.public_key);
        self.routes.remove_value(id);
        self.free.push(id);
        Some(peer)
    }

    /// The peers that [`Self::apply`] would remove for this new set.
    pub fn removals_for(&self, peers: &[PeerConfig]) -> Vec<PeerId> {
        let wanted: HashMap<[u8; 32], &PeerConfig> =
            peers.iter().map(|p| (p.public_key, p)).collect();
        self.iter()
            .filter(|(_, p)| {
                !wanted
                    .get(&p.config.public_key)
                    .is_some_and(|n| n.same_tunnel(&p.config))
            })
            .map(|(id, _)| id)
            .collect()
    }

    /// Replaces the peer set. Peers whose tunnel parameters did not change
    /// keep their slot and session (their name, role and paths are updated in
    /// place); a peer whose key or AllowedIPs changed is removed and re-added.
    pub fn apply(&mut self, peers: &[PeerConfig]) -> PeerDiff {
        let mut diff = PeerDiff::default();
        let wanted: HashMap<[u8; 32], &PeerConfig> =
            peers.iter().map(|p| (p.public_key, p)).collect();
        let existing: Vec<PeerId> = self.iter().map(|(id, _)| id).collect();
        for id in existing {
            let Some(peer) = self.get_mut(id) else {
                continue;
            };
            match wanted.get(&peer.config.public_key) {
                Some(new) if new.same_tunnel(&peer.config) => {
                    if peer.config.name != new.name {
                        peer.name = Arc::from(new.name.as_str());
                    }
                    let rules = access_rules(new);
                    if *peer.access.current() != rules {
                        peer.access.replace(rules);
                        diff.changed.push(new.name.clone());
                    }
                    peer.config = (*new).clone();
                    diff.kept += 1;
                }
                _ => {
                    if let Some(p) = self.remove(id) {
                        diff.removed.push((id, p.config.name));
                    }
                }
            }
        }
        for p in peers {
            if !self.by_key.contains_key(&p.public_key) {
                self.insert(p.clone());
                diff.added.push(p.name.clone());
            }
        }
        diff
    }

    /// Authenticates one datagram and decrypts it into `buf`.
    pub fn decapsulate<'a>(
        &mut self,
        src: SocketAddr,
        datagram: &[u8],
        unix_now: Duration,
        buf: &'a mut [u8],
    ) -> Decapsulated<'a> {
        // Cheap checks first: parse, MAC1, and the load-dependent cookie check,
        // before any Diffie-Hellman is spent on the packet.
        let mut cookie = [0u8; 64];
        let packet = match self
            .rate_limiter
            .verify_packet(Some(src.ip()), datagram, &mut cookie)
        {
            Ok(p) => p,
            Err(TunnResult::WriteToNetwork(reply)) => {
                let n = reply.len();
                buf[..n].copy_from_slice(reply);
                return Decapsulated::CookieReply(&buf[..n]);
            }
            Err(TunnResult::Err(boringtun::noise::errors::WireGuardError::InvalidMac)) => {
                return Decapsulated::Dropped(DropReason::Unauthenticated);
            }
            Err(_) => return Decapsulated::Dropped(DropReason::Malformed),
        };
        let is_handshake = matches!(
            packet,
            Packet::HandshakeInit(_) | Packet::HandshakeResponse(_)
        );
        // An initiation is decrypted once: the Diffie-Hellman that reveals
        // the sender's key (to find the peer) is also the first step of the
        // answer, and the peer's `Tunn` continues from it.
        let (id, initiation) = match packet {
            Packet::HandshakeInit(ref init) => {
                match parse_handshake_anon_full(self.private_key.secret(), &self.public_key, init) {
                    Ok(parsed) => match self.by_key.get(parsed.peer_static_public()) {
                        Some(id) => (*id, Some(parsed)),
                        None => return Decapsulated::Dropped(DropReason::UnknownPeer),
                    },
                    Err(_) => return Decapsulated::Dropped(DropReason::Unauthenticated),
                }
            }
            Packet::HandshakeResponse(ref p) => (p.receiver_idx >> 8, None),
            Packet::PacketCookieReply(ref p) => (p.receiver_idx >> 8, None),
            Packet::PacketData(ref p) => (p.receiver_idx >> 8, None),
        };
        let private_key = &self.private_key;
        let rate_limiter = &self.session_limiter;
        let Some(peer) = self.slots.get_mut(id as usize).and_then(|s| s.as_mut()) else {
            return Decapsulated::Dropped(DropReason::Unauthenticated);
        };
        let tunn = match (&mut peer.tunn, &packet) {
            (Some(t), _) => t,
            // The initiation was decrypted with this peer's key above.
            (t @ None, Packet::HandshakeInit(_)) => t.insert(Box::new(Tunn::new(
                private_key.secret().clone(),
                PublicKey::from(peer.config.public_key),
                peer.config.preshared_key,
                peer.config.persistent_keepalive,
                id,
                Some(rate_limiter.clone()),
            ))),
            (None, _) => return Decapsulated::Dropped(DropReason::Unauthenticated),
        };
        let result = match initiation {
            // Refused there unless the key is this peer's and the timestamp
            // newer than the last one (replay protection).
            Some(parsed) => tunn.decapsulate_initiation(parsed, buf),
            None => tunn.decapsulate(Some(src.ip()), datagram, buf),
        };
        match result {
            TunnResult::Done => {
                peer.authenticated_from(src);
                if is_handshake {
                    peer.count_handshake(unix_now);
                }
                Decapsulated::Nothing(Some(id))
            }
            TunnResult::Err(_) => Decapsulated::Dropped(DropReason::Unauthenticated),
            TunnResult::WriteToNetwork(out) => {
                peer.authenticated_from(src);
                if is_handshake {
                    peer.count_handshake(unix_now);
                }
                Decapsulated::Reply(id, out)
            }
            TunnResult::WriteToTunnelV4(out, _) | TunnResult::WriteToTunnelV6(out, _) => {
                peer.authenticated_from(src);
                peer.stats.add_rx(datagram.len());
                if out.is_empty() {
                    Decapsulated::Nothing(Some(id))
                } else {
                    Decapsulated::Inner(id, out)
                }
            }
        }
    }

    /// After a `Reply`, boringtun may hold packets queued while there was no
    /// session. Call until it returns `None`; each `Some` goes to the endpoint.
    pub fn flush_queued<'a>(
        &mut self,
        id: PeerId,
        buf: &'a mut [u8],
    ) -> Option<(SocketAddr, &'a [u8])> {
        let peer = self.get_mut(id)?;
        let endpoint = peer.endpoint?;
        match peer.tunn.as_mut()?.decapsulate(None, &[], buf) {
            TunnResult::WriteToNetwork(out) => Some((endpoint, out)),
            _ => None,
        }
    }

    /// Encrypts an inner packet for peer `id`.
    pub fn encapsulate<'a>(
        &mut self,
        id: PeerId,
        packet: &[u8],
        buf: &'a mut [u8],
    ) -> Encapsulated<'a> {
        let Some(peer) = self.get_mut(id) else {
            return Encapsulated::NoSession;
        };
        let (Some(endpoint), Some(tunn)) = (peer.endpoint, peer.tunn.as_mut()) else {
            return Encapsulated::NoSession;
        };
        match tunn.encapsulate(packet, buf) {
            TunnResult::WriteToNetwork(out) => {
                peer.stats.add_tx(out.len());
                Encapsulated::Datagram(endpoint, out)
            }
            TunnResult::Done => Encapsulated::Queued,
            _ => Encapsulated::NoSession,
        }
    }

    /// Runs boringtun's timers for every peer that has ever been seen and
    /// resets the shared rate limiter. Calls `send` for each datagram to emit.
    pub fn tick(&mut self, now: Instant, buf: &mut [u8], mut send: impl FnMut(SocketAddr, &[u8])) {
        // The limit is per second, so reset once a second, not every tick.
        if self
            .last_reset
            .is_none_or(|t| now.saturating_duration_since(t) >= Duration::from_secs(1))
        {
            self.rate_limiter.reset_count();
            self.last_reset = Some(now);
        }
        for peer in self.slots.iter_mut().flatten() {
            let (Some(endpoint), Some(tunn)) = (peer.endpoint, peer.tunn.as_mut()) else {
                continue;
            };
            match tunn.update_timers(buf) {
                TunnResult::WriteToNetwork(out) => send(endpoint, out),
                TunnResult::Err(boringtun::noise::errors::WireGuardError::ConnectionExpired) => {
                    // Session and keys are gone after REJECT_AFTER_TIME * 3; we are
                    // the responder, so we wait for the peer to handshake again.
                }
                _ => {}
            }
        }
    }
}

/// The access rules a peer's config gives it.
fn access_rules(config: &PeerConfig) -> AccessRules {
    AccessRules {
        name: Arc::from(config.name.as_str()),
        role: config.role,
        allow_paths: config.allow_paths.clone().into(),
        deny_paths: config.deny_paths.clone().into(),
        scope: config.scope.clone(),
    }
}

impl Peer {
    fn authenticated_from(&mut self, src: SocketAddr) {
        if self.endpoint != Some(src) {
            self.endpoint = Some(src);
            if let Ok(mut e) = self.stats.endpoint.lock() {
                *e = Some(src);
            }
        }
    }

    /// Records a completed handshake (as responder: the initiation
    /// authenticated and we answered; as initiator: the response arrived).
    fn count_handshake(&mut self, unix_now: Duration) {
        use std::sync::atomic::Ordering::Relaxed;
        self.stats.handshakes.fetch_add(1, Relaxed);
        self.stats
            .last_handshake_unix
            .store(unix_now.as_secs(), Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Origin;
    use boringtun::x25519::StaticSecret;
    use std::sync::atomic::Ordering::Relaxed;

    fn peer_config(secret: &StaticSecret) -> PeerConfig {
        PeerConfig {
            name: "a".into(),
            public_key: PublicKey::from(secret).to_bytes(),
            allowed_ips: vec!["10.13.0.2/32".parse().unwrap()],
            preshared_key: None,
            persistent_keepalive: None,
            role: Role::Viewer,
            allow_paths: vec![],
            deny_paths: vec![],
            scope: None,
            origin: Origin {
                file: "test".into(),
                line: 1,
            },
        }
    }

    /// Initiations are answered by `decapsulate_initiation`, which skips
    /// `Tunn::decapsulate`: its timestamp check must still refuse a replay,
    /// before the endpoint moves to the replay's source.
    #[test]
    fn a_replayed_initiation_is_refused_and_moves_no_endpoint() {
        let key = PrivateKey::generate();
        let secret = StaticSecret::random();
        let mut table = PeerTable::new(key.clone(), &[peer_config(&secret)], u64::MAX / 4);
        let mut client = Tunn::new(secret, key.public_key(), None, None, 1, None);
        let mut buf = vec![0u8; 2048];
        let init = match client.format_handshake_initiation(&mut buf, false) {
            TunnResult::WriteToNetwork(d) => d.to_vec(),
            r => panic!("no initiation: {r:?}"),
        };
        let a: SocketAddr = "192.0.2.1:1000".parse().unwrap();
        let b: SocketAddr = "198.51.100.7:2000".parse().unwrap();
        let now = Duration::from_secs(1_700_000_000);

        let response = match table.decapsulate(a, &init, now, &mut buf) {
            Decapsulated::Reply(0, r) => r.to_vec(),
            d => panic!("no response: {d:?}"),
        };
        assert!(matches!(
            table.decapsulate(b, &init, now, &mut buf),
            Decapsulated::Dropped(DropReason::Unauthenticated)
        ));
        let peer = table.get(0).unwrap();
        assert_eq!(peer.endpoint, Some(a));
        assert_eq!(peer.stats.handshakes.load(Relaxed), 1);

        // The handshake that was answered works: the keepalive authenticates.
        let mut client_buf = vec![0u8; 2048];
        let keepalive = match client.decapsulate(None, &response, &mut client_buf) {
            TunnResult::WriteToNetwork(k) => k.to_vec(),
            r => panic!("no keepalive: {r:?}"),
        };
        assert!(matches!(
            table.decapsulate(a, &keepalive, now, &mut buf),
            Decapsulated::Nothing(Some(0))
        ));
    }
}
