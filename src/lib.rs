//! promgate: a userspace WireGuard gateway to a cluster-internal Prometheus.
//!
//! The data path, module by module:
//! UDP datagram → [`peer`] (boringtun noise, per-peer sessions) →
//! [`route`] (AllowedIPs, destination and port checks) → [`netstack`]
//! (smoltcp TCP) → [`pipe`] → [`stream`] → [`proxy`] (hyper, [`policy`],
//! [`scope`]) → Prometheus.
//!
//! The core takes bytes and time in and knows no runtime: [`gateway`] ties
//! [`peer`], [`route`], [`netstack`] and [`pipe`] together, and asks for a
//! poll through a `std::task::Waker`. The tokio shell is thin: [`driver`]
//! owns the UDP socket and the [`gateway`], [`stream`] turns a pipe into an
//! `AsyncRead + AsyncWrite`, [`serve`] runs everything on bound sockets
//! until a shutdown future completes. Around them: [`config`] (validated
//! before anything binds), [`role`] (a leaf type), [`health`] and
//! [`upstream_probe`] (readiness), [`telemetry`] and [`admin_http`] (the
//! admin server), [`control`], [`onboarding`] and [`quickstart`] (the CLI's
//! peer management), and [`cli`].

#![forbid(unsafe_code)]

pub mod admin_http;
pub mod allowed_ips;
pub mod cli;
pub mod config;
pub mod control;
pub mod driver;
pub mod gateway;
pub mod health;
pub mod host_check;
pub mod keys;
pub mod netstack;
pub mod onboarding;
pub mod peer;
pub mod pipe;
pub mod policy;
pub mod proxy;
pub mod quickstart;
pub mod role;
pub mod route;
pub mod scope;
pub mod serve;
pub mod stats;
pub mod stream;
pub mod telemetry;
/// The packet builder the integration tests use too, kept in one file.
#[cfg(test)]
#[path = "../tests/common/packets.rs"]
mod test_packets;
pub mod upstream_probe;
