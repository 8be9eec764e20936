//! The tokio shell around the I/O-free core: it owns the UDP socket and the
//! clock, turns pipes into streams, and runs everything until shutdown.

pub mod connections;
pub mod driver;
pub mod serve;
pub mod stream;
