//! promgate: a userspace WireGuard gateway to a cluster-internal Prometheus.
//!
//! The data path, in the order a request travels it:
//!
//! ```text
//! UDP socket ─ shell::driver ─▶ promgate_core::gateway
//!     peer (boringtun: authenticate, decrypt) ─▶ route (AllowedIPs, port)
//!     ─▶ netstack (smoltcp TCP) ─▶ pipe
//! ─▶ shell::stream ─▶ web::proxy (hyper; web::policy, web::scope) ─▶ Prometheus
//! ```
//!
//! The folders say what each part is:
//! - `crates/core` ([`promgate_core`]): the data path with no I/O and no
//!   runtime; a crate of its own so that Cargo keeps tokio and hyper out.
//! - [`shell`]: the thin tokio shell around it: the UDP socket and the
//!   driver loop, the stream adapter, and [`shell::serve`], which runs
//!   everything on bound sockets and watches the peer files for reloads.
//! - [`web`]: the HTTP side: the proxy, who may do what ([`web::policy`]),
//!   label scoping ([`web::scope`]) and the Host/Origin checks.
//! - [`ops`]: operations: telemetry, health and the upstream probe, the
//!   admin server, and the control socket.
//! - [`cli`]: the command line, `quickstart`, and peer onboarding.
//! - [`config`]: the TOML files, validated before anything binds.

#![forbid(unsafe_code)]

pub mod cli;
pub mod config;
pub mod ops;
pub mod shell;
pub mod web;
