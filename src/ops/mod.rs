//! Operations: what an operator watches and steers the gateway through.

pub mod admin_server;
pub mod control;
pub mod health;
pub mod telemetry;
pub mod upstream_probe;
