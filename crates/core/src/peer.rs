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
//!   with cookie replies. Under load, a handshake that carries a valid
//!   cookie (MAC2) still passes a per-source token bucket
//!   ([`HandshakeBuckets`]) before any Diffie-Hellman: a cookie proves only
//!   that the source can receive, so without the bucket one cookie would lift
//!   the limit for two minutes.
//! - A peer's endpoint is only updated from a datagram that was decrypted
//!   with a session key or that completed a handshake. Never from a cookie
//!   reply: its two inputs (the receiver index and the last MAC1) travel in
//!   clear in the gateway's own handshake response, so anyone who saw one
//!   can forge it.
//! - A peer's `Tunn` is created only once an initiation authenticated
//!   completely (timestamp included), so a forged initiation built from
//!   public keys alone allocates nothing.
//! - A reload that keeps a peer's key keeps its `Tunn`, and with it the last
//!   initiation timestamp that replay protection needs; changed AllowedIPs,
//!   pre-shared key or keepalive are applied in place, as `wg set` does.
//! - Slots are reused after a peer is removed. A stale receiver index that
//!   lands on a new occupant fails authentication and is dropped.

use crate::access::{AccessRules, PeerAccess, UpstreamShares};
use crate::allowed_ips::AllowedIps;
use crate::keys::PrivateKey;
use crate::peer_config::PeerConfig;

use crate::stats::{DropReason, PeerStats};
use crate::token_bucket::{Rate, TokenBucket};
use boringtun::noise::handshake::parse_handshake_anon_full;
use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::noise::{Packet, Tunn, TunnResult};
use boringtun::x25519::PublicKey;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Index of a peer's slot in the table.
pub(crate) type PeerId = u32;

/// boringtun keeps the index in 24 bits.
const MAX_SLOTS: usize = 1 << 24;

/// A configured peer and its live tunnel state.
pub(crate) struct Peer {
    pub(crate) config: PeerConfig,
    /// Shared with telemetry and the proxy; cheap to clone.
    pub(crate) name: Arc<str>,
    /// Shared with every open connection of this peer, updated on reload.
    pub(crate) access: Arc<PeerAccess>,
    /// Created on the peer's first authenticated handshake: an idle peer
    /// costs no Diffie-Hellman at load time and no session memory.
    tunn: Option<Box<Tunn>>,
    /// Where to send this peer's datagrams: its latest authenticated source.
    pub(crate) endpoint: Option<SocketAddr>,
    pub(crate) stats: Arc<PeerStats>,
}

/// What an incoming datagram turned into.
#[derive(Debug)]
pub(crate) enum Decapsulated<'a> {
    /// Send these bytes back to the datagram's source: the handshake
    /// response to an initiation, or the keepalive that confirms a
    /// handshake the gateway started. Then call [`PeerTable::flush_queued`].
    Reply(PeerId, &'a [u8]),
    /// An authenticated inner IP packet from `PeerId`, not yet checked
    /// against AllowedIPs.
    Inner(PeerId, &'a [u8]),
    /// Under load: the handshake is refused and this cookie reply goes back
    /// to the source, which retries with the cookie (WireGuard's DoS defence).
    CookieReply(&'a [u8]),
    /// Authenticated, nothing to do (keepalive, cookie stored).
    Nothing,
    Dropped(DropReason),
}

/// What became of an outgoing inner packet.
#[derive(Debug)]
pub(crate) enum Encapsulated<'a> {
    /// Send these bytes to this endpoint, counted as the peer's tx bytes:
    /// the encrypted packet or, when there is no session, the handshake
    /// initiation boringtun starts instead (the packet waits in its queue).
    Datagram(SocketAddr, &'a [u8]),
    /// No session and a handshake already under way: boringtun queued the
    /// packet and sends it once a handshake completes. Not a drop.
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
    /// Kept peers whose AllowedIPs, pre-shared key or keepalive changed:
    /// their connections were reset, their session and replay state kept.
    pub retuned: Vec<String>,
    /// Kept peers that lost their scope or some of their deny_paths: a
    /// reload that widens what a peer may read deserves a warning.
    pub loosened: Vec<String>,
}

pub(crate) struct PeerTable {
    private_key: PrivateKey,
    public_key: PublicKey,
    slots: Vec<Option<Peer>>,
    free: Vec<PeerId>,
    by_key: HashMap<[u8; 32], PeerId>,
    routes: AllowedIps<PeerId>,
    rate_limiter: Arc<RateLimiter>,
    session_limiter: Arc<RateLimiter>,
    last_reset: Option<Instant>,
    /// Handshakes that passed MAC1 since `last_reset`: the same count the
    /// shared `RateLimiter` keeps to decide it is under load, which it does
    /// not expose.
    handshakes_this_second: u64,
    handshakes_per_second: u64,
    buckets: HandshakeBuckets,
    /// Each peer's share of each upstream's concurrency.
    upstream_shares: UpstreamShares,
}

/// Why [`PeerTable::check_macs`] stopped a datagram.
enum PreCheck {
    /// Under load without a valid cookie: a cookie reply of this many bytes
    /// is in the buffer, for the source.
    CookieReply(usize),
    Dropped(DropReason),
}

/// Per-source token buckets for handshakes under load, as wireguard-go and
/// the kernel keep them: [`HANDSHAKE_RATE`] per second with a burst of
/// [`HANDSHAKE_BURST`], keyed by the source address the gateway sees (an
/// IPv6 source by its /64, which one host can hold whole).
#[derive(Debug, Default)]
struct HandshakeBuckets {
    buckets: HashMap<IpAddr, TokenBucket>,
}

/// Handshakes per second one source may start under load (wireguard-go's
/// figure). A legitimate client sends one every two minutes.
pub(crate) const HANDSHAKE_RATE: u64 = 20;
/// Handshakes one source may send at once under load.
pub(crate) const HANDSHAKE_BURST: u64 = 5;
const HANDSHAKES: Rate = Rate::per_second(HANDSHAKE_RATE, HANDSHAKE_BURST);
/// Sources tracked at once. Each must have read a cookie sent to it, so a
/// spoofed flood adds none; beyond this, new sources are refused until the
/// tick drops the buckets that have refilled.
const MAX_BUCKETS: usize = 65_536;

impl HandshakeBuckets {
    fn key(addr: IpAddr) -> IpAddr {
        match addr {
            IpAddr::V4(_) => addr,
            IpAddr::V6(v6) => {
                let mut o = v6.octets();
                o[8..].fill(0);
                IpAddr::V6(o.into())
            }
        }
    }

    /// Takes one handshake's worth from `addr`'s bucket; false if empty.
    fn allow(&mut self, now: Instant, addr: IpAddr) -> bool {
        let key = Self::key(addr);
        if !self.buckets.contains_key(&key) && self.buckets.len() >= MAX_BUCKETS {
            return false;
        }
        self.buckets
            .entry(key)
            .or_insert_with(|| TokenBucket::full(HANDSHAKES, now))
            .take(HANDSHAKES, now)
    }

    /// Forgets the buckets that would be full by now.
    fn expire(&mut self, now: Instant) {
        self.buckets.retain(|_, b| !b.full_by(HANDSHAKES, now));
    }
}

impl PeerTable {
    /// `handshakes_per_second` is the load threshold for cookie replies;
    /// `upstream_shares` bounds each peer's requests in flight upstream.
    pub(crate) fn new(
        private_key: PrivateKey,
        peers: &[PeerConfig],
        handshakes_per_second: u64,
        upstream_shares: UpstreamShares,
    ) -> Self {
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
            handshakes_this_second: 0,
            handshakes_per_second,
            buckets: HandshakeBuckets::default(),
            upstream_shares,
        };
        for p in peers {
            table.insert(p.clone());
        }
        table
    }

    pub(crate) fn get(&self, id: PeerId) -> Option<&Peer> {
        self.slots.get(id as usize).and_then(|s| s.as_ref())
    }

    pub(crate) fn get_mut(&mut self, id: PeerId) -> Option<&mut Peer> {
        self.slots.get_mut(id as usize).and_then(|s| s.as_mut())
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (PeerId, &Peer)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.as_ref().map(|p| (i as PeerId, p)))
    }

    /// The peer whose AllowedIPs contain `addr` (cryptokey routing).
    pub(crate) fn route(&self, addr: IpAddr) -> Option<PeerId> {
        self.routes.lookup(addr)
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
            access: Arc::new(PeerAccess::with_upstream_shares(
                access_rules(&config),
                self.upstream_shares,
            )),
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
    pub(crate) fn removals_for(&self, peers: &[PeerConfig]) -> Vec<PeerId> {
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

    /// Replaces the peer set. Every peer whose key stays keeps its slot and
    /// its `Tunn` (session and replay state); its name, role and paths are
    /// updated in place, and so are changed AllowedIPs, pre-shared key and
    /// keepalive (`retuned`; the gateway resets its connections first, see
    /// [`Self::removals_for`]). A peer whose key is gone is removed.
    pub(crate) fn apply(&mut self, peers: &[PeerConfig]) -> PeerDiff {
        let mut diff = PeerDiff::default();
        let wanted: HashMap<[u8; 32], &PeerConfig> =
            peers.iter().map(|p| (p.public_key, p)).collect();
        let existing: Vec<PeerId> = self.iter().map(|(id, _)| id).collect();
        for id in existing {
            let Some(peer) = self.slots.get_mut(id as usize).and_then(|s| s.as_mut()) else {
                continue;
            };
            match wanted.get(&peer.config.public_key) {
                Some(new) => {
                    if !new.same_tunnel(&peer.config) {
                        if let Some(tunn) = peer.tunn.as_mut() {
                            tunn.set_peer_parameters(new.preshared_key, new.persistent_keepalive);
                        }
                        if new.allowed_ips != peer.config.allowed_ips {
                            self.routes.remove_value(id);
                            for net in &new.allowed_ips {
                                self.routes.insert(*net, id);
                            }
                        }
                        diff.retuned.push(new.name.clone());
                    }
                    let Some(peer) = self.slots.get_mut(id as usize).and_then(|s| s.as_mut())
                    else {
                        continue;
                    };
                    if peer.config.name != new.name {
                        peer.name = Arc::from(new.name.as_str());
                    }
                    let old = &peer.config;
                    if (old.scope.is_some() && new.scope.is_none())
                        || old.deny_paths.iter().any(|d| !new.deny_paths.contains(d))
                    {
                        diff.loosened.push(new.name.clone());
                    }
                    let rules = access_rules(new);
                    if *peer.access.current() != rules {
                        peer.access.replace(rules);
                        diff.changed.push(new.name.clone());
                    }
                    peer.config = (*new).clone();
                    diff.kept += 1;
                }
                None => {
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

    /// Authenticates one datagram and decrypts it into `buf`. `now` drives
    /// the per-source handshake buckets, `unix_now` the handshake times
    /// shown in `status`.
    pub(crate) fn decapsulate<'a>(
        &mut self,
        now: Instant,
        src: SocketAddr,
        datagram: &[u8],
        unix_now: Duration,
        buf: &'a mut [u8],
    ) -> Decapsulated<'a> {
        let packet = match self.check_macs(now, src, datagram, buf) {
            Ok(p) => p,
            Err(PreCheck::CookieReply(n)) => return Decapsulated::CookieReply(&buf[..n]),
            Err(PreCheck::Dropped(reason)) => return Decapsulated::Dropped(reason),
        };
        // A handshake response or a data packet names its session; an
        // initiation names its sender only inside, behind one Diffie-Hellman
        // that is also the first step of the answer (the `Tunn` continues
        // from it).
        let id = match packet {
            Packet::HandshakeInit(ref init) => {
                let parsed = match parse_handshake_anon_full(
                    self.private_key.secret(),
                    &self.public_key,
                    init,
                ) {
                    Ok(parsed) => parsed,
                    Err(_) => return Decapsulated::Dropped(DropReason::Unauthenticated),
                };
                let Some(&id) = self.by_key.get(parsed.peer_static_public()) else {
                    return Decapsulated::Dropped(DropReason::UnknownPeer);
                };
                return self.answer_initiation(id, parsed, src, unix_now, buf);
            }
            Packet::HandshakeResponse(ref p) => p.receiver_idx >> 8,
            Packet::PacketCookieReply(ref p) => p.receiver_idx >> 8,
            Packet::PacketData(ref p) => p.receiver_idx >> 8,
        };
        self.decapsulate_in_session(id, &packet, src, datagram, unix_now, buf)
    }

    /// Hands a handshake response, cookie reply or data packet to the
    /// `Tunn` of the peer whose slot its receiver index names.
    fn decapsulate_in_session<'a>(
        &mut self,
        id: PeerId,
        packet: &Packet<'_>,
        src: SocketAddr,
        datagram: &[u8],
        unix_now: Duration,
        buf: &'a mut [u8],
    ) -> Decapsulated<'a> {
        let Some(peer) = self.slots.get_mut(id as usize).and_then(|s| s.as_mut()) else {
            return Decapsulated::Dropped(DropReason::Unauthenticated);
        };
        let Some(tunn) = peer.tunn.as_mut() else {
            return Decapsulated::Dropped(DropReason::Unauthenticated);
        };
        match tunn.decapsulate(Some(src.ip()), datagram, buf) {
            TunnResult::Done => {
                // A cookie reply (boringtun stored the cookie), which proves
                // nothing about who sent it, or an empty data packet (a
                // keepalive): the endpoint stays where it is.
                Decapsulated::Nothing
            }
            TunnResult::Err(_) => Decapsulated::Dropped(DropReason::Unauthenticated),
            TunnResult::WriteToNetwork(out) => {
                // A handshake response completed a handshake the gateway
                // started; boringtun answers with a keepalive.
                peer.authenticated_from(src);
                if matches!(packet, Packet::HandshakeResponse(_)) {
                    peer.count_handshake(unix_now);
                }
                Decapsulated::Reply(id, out)
            }
            TunnResult::WriteToTunnelV4(out, _) | TunnResult::WriteToTunnelV6(out, _) => {
                peer.authenticated_from(src);
                peer.stats.add_rx(datagram.len());
                if out.is_empty() {
                    Decapsulated::Nothing
                } else {
                    Decapsulated::Inner(id, out)
                }
            }
        }
    }

    /// The checks before any Diffie-Hellman: parse, MAC1, and under load the
    /// cookie (MAC2) and the source's token bucket.
    fn check_macs<'d>(
        &mut self,
        now: Instant,
        src: SocketAddr,
        datagram: &'d [u8],
        buf: &mut [u8],
    ) -> Result<Packet<'d>, PreCheck> {
        let mut cookie = [0u8; 64];
        let packet = match self
            .rate_limiter
            .verify_packet(Some(src.ip()), datagram, &mut cookie)
        {
            Ok(p) => p,
            Err(TunnResult::WriteToNetwork(reply)) => {
                let n = reply.len();
                buf[..n].copy_from_slice(reply);
                self.handshakes_this_second += 1;
                return Err(PreCheck::CookieReply(n));
            }
            Err(TunnResult::Err(boringtun::noise::errors::WireGuardError::InvalidMac)) => {
                return Err(PreCheck::Dropped(DropReason::Unauthenticated));
            }
            Err(_) => {
                return Err(PreCheck::Dropped(DropReason::Malformed));
            }
        };
        if matches!(
            packet,
            Packet::HandshakeInit(_) | Packet::HandshakeResponse(_)
        ) {
            // MAC1 passed (and MAC2 too, if the limiter is under load: it
            // counts exactly these packets to decide that).
            self.handshakes_this_second += 1;
            if self.handshakes_this_second > self.handshakes_per_second
                && !self.buckets.allow(now, src.ip())
            {
                return Err(PreCheck::Dropped(DropReason::HandshakeRateLimited));
            }
        }
        Ok(packet)
    }

    /// Answers an initiation whose sender is peer `id`. The peer's `Tunn`
    /// is created for it only if the answer succeeds: the static key inside
    /// an initiation is protected by public keys alone, so until the
    /// timestamp decrypts and is newer than the last one, nothing about the
    /// initiation is proven and it must cost no allocation.
    fn answer_initiation<'a>(
        &mut self,
        id: PeerId,
        parsed: boringtun::noise::handshake::ParsedInitiation<'_>,
        src: SocketAddr,
        unix_now: Duration,
        buf: &'a mut [u8],
    ) -> Decapsulated<'a> {
        let private_key = &self.private_key;
        let rate_limiter = &self.session_limiter;
        let Some(peer) = self.slots.get_mut(id as usize).and_then(|s| s.as_mut()) else {
            return Decapsulated::Dropped(DropReason::Unauthenticated);
        };
        let mut fresh = None;
        let tunn = match peer.tunn.as_mut() {
            Some(t) => t,
            None => fresh.insert(Box::new(Tunn::new(
                private_key.secret().clone(),
                PublicKey::from(peer.config.public_key),
                peer.config.preshared_key,
                peer.config.persistent_keepalive,
                id,
                Some(rate_limiter.clone()),
            ))),
        };
        // Refused there unless the key is this peer's and the timestamp is
        // newer than the last one (replay protection).
        match tunn.decapsulate_initiation(parsed, buf) {
            TunnResult::WriteToNetwork(out) => {
                if let Some(t) = fresh {
                    peer.tunn = Some(t);
                }
                peer.authenticated_from(src);
                peer.count_handshake(unix_now);
                Decapsulated::Reply(id, out)
            }
            _ => Decapsulated::Dropped(DropReason::Unauthenticated),
        }
    }

    /// After a `Reply`, boringtun may hold packets queued while there was no
    /// session. Call until it returns `None`; each `Some` goes to the endpoint.
    pub(crate) fn flush_queued<'a>(
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
    pub(crate) fn encapsulate<'a>(
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
    pub(crate) fn tick(
        &mut self,
        now: Instant,
        buf: &mut [u8],
        mut send: impl FnMut(SocketAddr, &[u8]),
    ) {
        // The limit is per second, so reset once a second, not every tick.
        if self
            .last_reset
            .is_none_or(|t| now.saturating_duration_since(t) >= Duration::from_secs(1))
        {
            self.rate_limiter.reset_count();
            self.handshakes_this_second = 0;
            self.buckets.expire(now);
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
    use crate::peer_config::Origin;
    use crate::role::Role;
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
        let mut table = PeerTable::new(
            key.clone(),
            &[peer_config(&secret)],
            u64::MAX / 4,
            UpstreamShares::one_upstream(8),
        );
        let mut client = Tunn::new(secret, key.public_key(), None, None, 1, None);
        let mut buf = vec![0u8; 2048];
        let init = match client.format_handshake_initiation(&mut buf, false) {
            TunnResult::WriteToNetwork(d) => d.to_vec(),
            r => panic!("no initiation: {r:?}"),
        };
        let a: SocketAddr = "192.0.2.1:1000".parse().unwrap();
        let b: SocketAddr = "198.51.100.7:2000".parse().unwrap();
        let now = Duration::from_secs(1_700_000_000);
        let t0 = Instant::now();

        let response = match table.decapsulate(t0, a, &init, now, &mut buf) {
            Decapsulated::Reply(0, r) => r.to_vec(),
            d => panic!("no response: {d:?}"),
        };
        assert!(matches!(
            table.decapsulate(t0, b, &init, now, &mut buf),
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
            table.decapsulate(t0, a, &keepalive, now, &mut buf),
            Decapsulated::Nothing
        ));
    }

    fn initiation(client: &mut Tunn, buf: &mut [u8]) -> Vec<u8> {
        match client.format_handshake_initiation(buf, true) {
            TunnResult::WriteToNetwork(d) => d.to_vec(),
            r => panic!("no initiation: {r:?}"),
        }
    }

    const UNIX_NOW: Duration = Duration::from_secs(1_700_000_000);

    /// Issue 23, item 6: a cookie reply can be built by anyone who saw the
    /// gateway's handshake response and knows the peer's public key. It must
    /// not move the peer's endpoint.
    #[test]
    fn a_forged_cookie_reply_moves_no_endpoint() {
        let key = PrivateKey::generate();
        let secret = StaticSecret::random();
        let client_pub = PublicKey::from(&secret);
        let mut table = PeerTable::new(
            key.clone(),
            &[peer_config(&secret)],
            u64::MAX / 4,
            UpstreamShares::one_upstream(8),
        );
        let mut client = Tunn::new(secret, key.public_key(), None, None, 1, None);
        let mut buf = vec![0u8; 2048];
        let init = initiation(&mut client, &mut buf);
        let a: SocketAddr = "192.0.2.1:1000".parse().unwrap();
        let b: SocketAddr = "198.51.100.7:2000".parse().unwrap();
        let t0 = Instant::now();
        let response = match table.decapsulate(t0, a, &init, UNIX_NOW, &mut buf) {
            Decapsulated::Reply(0, r) => r.to_vec(),
            d => panic!("no response: {d:?}"),
        };

        // The forger needs only the client's public key and the response.
        let mut forged = vec![0u8; 128];
        let cookie_reply = match RateLimiter::new(&client_pub, 0).verify_packet(
            Some(b.ip()),
            &response,
            &mut forged,
        ) {
            Err(TunnResult::WriteToNetwork(c)) => c.to_vec(),
            _ => panic!("the forger's limiter built no cookie reply"),
        };
        for _ in 0..2 {
            let d = table.decapsulate(t0, b, &cookie_reply, UNIX_NOW, &mut buf);
            assert!(
                matches!(d, Decapsulated::Nothing | Decapsulated::Dropped(_)),
                "{d:?}"
            );
            assert_eq!(table.get(0).unwrap().endpoint, Some(a));
        }
        // The session still belongs to `a`: the client's keepalive confirms
        // it, and the gateway's traffic goes there.
        let mut client_buf = vec![0u8; 2048];
        let keepalive = match client.decapsulate(None, &response, &mut client_buf) {
            TunnResult::WriteToNetwork(k) => k.to_vec(),
            r => panic!("no keepalive: {r:?}"),
        };
        assert!(matches!(
            table.decapsulate(t0, a, &keepalive, UNIX_NOW, &mut buf),
            Decapsulated::Nothing
        ));
        let d = table.decapsulate(t0, b, &cookie_reply, UNIX_NOW, &mut buf);
        assert!(!matches!(
            d,
            Decapsulated::Reply(..) | Decapsulated::Inner(..)
        ));
        let mut out = vec![0u8; 2048];
        match table.encapsulate(0, &[0x45; 40], &mut out) {
            Encapsulated::Datagram(to, _) => assert_eq!(to, a),
            e => panic!("{e:?}"),
        }
    }

    /// Issue 23, item 7: an initiation built from public keys alone passes
    /// the key lookup, but its timestamp does not decrypt. It must leave no
    /// `Tunn` behind.
    #[test]
    fn an_initiation_with_a_garbage_timestamp_allocates_no_tunnel() {
        use blake2::digest::{Digest, Mac};
        let key = PrivateKey::generate();
        let secret = StaticSecret::random();
        let mut table = PeerTable::new(
            key.clone(),
            &[peer_config(&secret)],
            u64::MAX / 4,
            UpstreamShares::one_upstream(8),
        );
        let mut client = Tunn::new(secret, key.public_key(), None, None, 1, None);
        let mut buf = vec![0u8; 2048];
        let mut init = initiation(&mut client, &mut buf);
        assert_eq!(init.len(), 148);
        // type, sender, ephemeral, encrypted static: the timestamp's AEAD
        // box is bytes 88..116; MAC1 over 0..116 is keyed by public data.
        init[90] ^= 0xff;
        let mac1_key = blake2::Blake2s256::new()
            .chain_update(b"mac1----")
            .chain_update(key.public_key().as_bytes())
            .finalize();
        let mut mac = blake2::Blake2sMac::<blake2::digest::consts::U16>::new_from_slice(&mac1_key)
            .expect("a 32-byte key");
        mac.update(&init[..116]);
        init[116..132].copy_from_slice(&mac.finalize().into_bytes());

        let a: SocketAddr = "192.0.2.1:1000".parse().unwrap();
        let d = table.decapsulate(Instant::now(), a, &init, UNIX_NOW, &mut buf);
        assert!(
            matches!(d, Decapsulated::Dropped(DropReason::Unauthenticated)),
            "{d:?}"
        );
        let peer = table.get(0).unwrap();
        assert!(
            peer.tunn.is_none(),
            "a Tunn was built for a forged initiation"
        );
        assert_eq!(peer.endpoint, None);

        // The untouched initiation still works: the MAC1 recomputation above
        // is right, so the drop was the timestamp's.
        let good = initiation(&mut client, &mut buf);
        let d = table.decapsulate(Instant::now(), a, &good, UNIX_NOW, &mut buf);
        assert!(matches!(d, Decapsulated::Reply(0, _)), "{d:?}");
        assert!(table.get(0).unwrap().tunn.is_some());
    }

    /// Issue 23, item 8: a reload that changes a peer's AllowedIPs,
    /// pre-shared key or keepalive keeps its replay protection.
    #[test]
    fn a_replay_across_a_reload_is_refused() {
        let key = PrivateKey::generate();
        let secret = StaticSecret::random();
        let config = peer_config(&secret);
        let mut table = PeerTable::new(
            key.clone(),
            std::slice::from_ref(&config),
            u64::MAX / 4,
            UpstreamShares::one_upstream(8),
        );
        let mut client = Tunn::new(secret, key.public_key(), None, None, 1, None);
        let mut buf = vec![0u8; 2048];
        let init = initiation(&mut client, &mut buf);
        let a: SocketAddr = "192.0.2.1:1000".parse().unwrap();
        let b: SocketAddr = "198.51.100.7:2000".parse().unwrap();
        let t0 = Instant::now();
        assert!(matches!(
            table.decapsulate(t0, a, &init, UNIX_NOW, &mut buf),
            Decapsulated::Reply(0, _)
        ));

        let mut changed = config.clone();
        changed.allowed_ips = vec!["10.13.0.9/32".parse().unwrap()];
        changed.persistent_keepalive = Some(25);
        let diff = table.apply(std::slice::from_ref(&changed));
        assert_eq!(diff.retuned, vec!["a".to_string()]);
        assert_eq!(diff.kept, 1);
        assert!(diff.removed.is_empty() && diff.added.is_empty());
        assert_eq!(table.route("10.13.0.9".parse().unwrap()), Some(0));
        assert_eq!(table.route("10.13.0.2".parse().unwrap()), None);

        let d = table.decapsulate(t0, b, &init, UNIX_NOW, &mut buf);
        assert!(
            matches!(d, Decapsulated::Dropped(DropReason::Unauthenticated)),
            "{d:?}"
        );
        assert_eq!(table.get(0).unwrap().endpoint, Some(a));

        // A pre-shared key change applies in place too: the next handshake
        // uses it, and the old replay is still refused.
        let mut psk = changed.clone();
        psk.preshared_key = Some([7; 32]);
        let diff = table.apply(std::slice::from_ref(&psk));
        assert_eq!(diff.retuned, vec!["a".to_string()]);
        let d = table.decapsulate(t0, b, &init, UNIX_NOW, &mut buf);
        assert!(matches!(d, Decapsulated::Dropped(_)), "{d:?}");
    }

    /// Issue 23, item 2: under load, a source that holds a valid cookie
    /// still gets no more Diffie-Hellman work than its token bucket allows.
    #[test]
    fn a_cookie_holder_flooding_from_one_address_gets_only_its_bucket() {
        let key = PrivateKey::generate();
        let known = StaticSecret::random();
        let limit = 1;
        let mut table = PeerTable::new(
            key.clone(),
            &[peer_config(&known)],
            limit,
            UpstreamShares::one_upstream(8),
        );
        // A key the gateway does not know: every initiation that reaches
        // the Diffie-Hellman ends as `UnknownPeer`.
        let mut flooder = Tunn::new(
            StaticSecret::random(),
            key.public_key(),
            None,
            None,
            9,
            None,
        );
        let mut buf = vec![0u8; 2048];
        let mut fbuf = vec![0u8; 2048];
        let src: SocketAddr = "203.0.113.5:4000".parse().unwrap();
        let t0 = Instant::now();
        table.tick(t0, &mut buf, |_, _| {});

        // Drive the limiter under load and collect a cookie.
        let mut with_cookie = None;
        for _ in 0..4 {
            let init = initiation(&mut flooder, &mut fbuf);
            if let Decapsulated::CookieReply(c) =
                table.decapsulate(t0, src, &init, UNIX_NOW, &mut buf)
            {
                let c = c.to_vec();
                let _ = flooder.decapsulate(Some(src.ip()), &c, &mut fbuf);
                with_cookie = Some(initiation(&mut flooder, &mut fbuf));
                break;
            }
        }
        let flood = with_cookie.expect("the limiter never answered with a cookie");

        // 2,000 copies of that one datagram over 2 simulated seconds.
        let (mut reached_dh, mut limited, mut cookies) = (0u64, 0u64, 0u64);
        let step = Duration::from_millis(1);
        let mut now = t0;
        for i in 0..2_000u32 {
            now += step;
            if i % 1000 == 0 {
                table.tick(now, &mut buf, |_, _| {});
            }
            match table.decapsulate(now, src, &flood, UNIX_NOW, &mut buf) {
                Decapsulated::Dropped(DropReason::UnknownPeer) => reached_dh += 1,
                Decapsulated::Dropped(DropReason::HandshakeRateLimited) => limited += 1,
                Decapsulated::CookieReply(_) => cookies += 1,
                d => panic!("{d:?}"),
            }
        }
        let secs = 2;
        let allowed = HANDSHAKE_BURST + HANDSHAKE_RATE * secs + limit * secs;
        assert!(
            reached_dh <= allowed,
            "{reached_dh} initiations reached the Diffie-Hellman, the bucket allows {allowed}"
        );
        assert!(
            reached_dh >= HANDSHAKE_BURST,
            "the bucket let nothing through"
        );
        assert_eq!(reached_dh + limited + cookies, 2_000);

        // Another source is not starved by the flooder's empty bucket: the
        // known peer, after its own cookie, is answered.
        let mut client = Tunn::new(known, key.public_key(), None, None, 1, None);
        let other: SocketAddr = "192.0.2.1:1000".parse().unwrap();
        let mut answered = false;
        for _ in 0..3 {
            let init = initiation(&mut client, &mut fbuf);
            match table.decapsulate(now, other, &init, UNIX_NOW, &mut buf) {
                Decapsulated::CookieReply(c) => {
                    let c = c.to_vec();
                    let _ = client.decapsulate(Some(other.ip()), &c, &mut fbuf);
                }
                Decapsulated::Reply(0, _) => {
                    answered = true;
                    break;
                }
                d => panic!("{d:?}"),
            }
        }
        assert!(
            answered,
            "a legitimate peer was starved by another source's flood"
        );
    }

    /// Issue 23, item 4: a reload that drops a peer's scope or deny_paths
    /// is reported, so that the watcher can warn.
    #[test]
    fn a_reload_that_drops_scope_or_deny_paths_is_reported() {
        let key = PrivateKey::generate();
        let secret = StaticSecret::random();
        let mut strict = peer_config(&secret);
        strict.deny_paths = vec!["/api/v1/admin".into(), "/federate".into()];
        strict.scope =
            Some(crate::scope::Scope::new([("namespace", &["team-a"][..])]).expect("a scope"));
        let mut table = PeerTable::new(
            key,
            std::slice::from_ref(&strict),
            u64::MAX / 4,
            UpstreamShares::one_upstream(8),
        );

        let mut fewer = strict.clone();
        fewer.deny_paths.pop();
        assert_eq!(
            table.apply(std::slice::from_ref(&fewer)).loosened,
            vec!["a"]
        );
        let mut more = fewer.clone();
        more.deny_paths.push("/api/v1/status".into());
        assert!(table.apply(std::slice::from_ref(&more)).loosened.is_empty());
        let mut unscoped = more.clone();
        unscoped.scope = None;
        assert_eq!(
            table.apply(std::slice::from_ref(&unscoped)).loosened,
            vec!["a"]
        );
    }
}
