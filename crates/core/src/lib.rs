//! promgate's data path, with no I/O and no runtime: bytes and time in,
//! bytes and TCP streams out. The main crate's tokio shell owns the UDP
//! socket and the clock, and drives a [`gateway::Gateway`].
//!
//! ```text
//! UDP datagram -> peer (boringtun: authenticate, decrypt)
//!              -> route (AllowedIPs, destination, port)
//!              -> netstack (smoltcp TCP) -> pipe -> (shell) HTTP proxy
//! ```
//!
//! What the core is given, already validated by the main crate's config:
//! [`keys`], [`peer_config`] (AllowedIPs, [`role`], [`scope`]) and the
//! gateway [`gateway::Settings`]. What it hands out with each connection:
//! the peer's [`access`] rules, shared and swapped on reload. Counters live
//! in [`stats`], the longest-prefix match in `allowed_ips`.
//!
//! Clock-free, with one exception: the vendored boringtun reads
//! `Instant::now()` inside `Tunn`'s timers, its cookie rate limiter and the
//! handshake's replay check (PATCHES.md). Everything written here takes the
//! time from its caller.

pub mod access;
pub(crate) mod allowed_ips;
pub mod budget;
pub mod gateway;
pub mod ingress;
pub mod keys;
pub mod netstack;
pub mod peer;
pub mod peer_config;
pub mod pipe;
pub mod role;
pub(crate) mod route;
pub mod scope;
pub mod stats;
/// Inner packets for tests: one builder shared by the unit tests here and
/// the main crate's in-process tests and benches.
#[cfg(any(test, feature = "testing"))]
pub mod test_packets;
pub(crate) mod token_bucket;
