//! promgate: a userspace WireGuard gateway to a cluster-internal Prometheus.
//!
//! The data path, module by module:
//! UDP datagram → [`peer`] (boringtun noise, per-peer sessions) →
//! [`route`] (AllowedIPs, destination and port checks) → [`netstack`]
//! (smoltcp TCP) → [`stream`] → [`proxy`] (hyper) → Prometheus.
//! [`gateway`] ties the I/O-free part together; [`driver`] is the thin tokio
//! shell around it; [`serve`] wires config, sockets, admin server and signals.

#![forbid(unsafe_code)]

pub mod admin_http;
pub mod allowed_ips;
pub mod cli;
pub mod config;
pub mod control;
pub mod driver;
pub mod gateway;
pub mod health;
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
pub mod upstream_probe;
