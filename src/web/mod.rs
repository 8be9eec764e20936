//! The HTTP side of a tunnel connection: the proxy to the upstream, who may
//! do what, label scoping, and the Host/Origin checks.

pub mod host_check;
pub mod policy;
pub mod proxy;
pub mod scope;
