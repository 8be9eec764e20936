//! A peer's configuration, already validated (the main crate's `config`
//! module parses and checks it): its key, AllowedIPs, role, paths and scope.

use crate::keys::encode_key;
use crate::role::Role;
use crate::scope::Scope;
use ipnet::IpNet;
use std::fmt;
use std::path::PathBuf;

/// Where a peer was defined, for error messages about it later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub file: PathBuf,
    pub line: usize,
}

/// A validated peer.
#[derive(Clone, PartialEq, Eq)]
pub struct PeerConfig {
    pub name: String,
    pub public_key: [u8; 32],
    pub allowed_ips: Vec<IpNet>,
    pub preshared_key: Option<[u8; 32]>,
    pub persistent_keepalive: Option<u16>,
    pub role: Role,
    /// Extra path prefixes this peer may use beyond its role.
    pub allow_paths: Vec<String>,
    /// Path prefixes this peer may not use, whatever its role.
    pub deny_paths: Vec<String>,
    /// Label values this peer's data is limited to (issue 14); `None` is unscoped.
    pub scope: Option<Scope>,
    pub origin: Origin,
}

impl PeerConfig {
    /// True when the two describe the same tunnel, so a reload may keep its session.
    pub(crate) fn same_tunnel(&self, other: &PeerConfig) -> bool {
        self.public_key == other.public_key
            && self.allowed_ips == other.allowed_ips
            && self.preshared_key == other.preshared_key
            && self.persistent_keepalive == other.persistent_keepalive
    }
}

impl fmt::Debug for PeerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerConfig")
            .field("name", &self.name)
            .field("public_key", &encode_key(&self.public_key))
            .field("allowed_ips", &self.allowed_ips)
            .field("preshared_key", &self.preshared_key.map(|_| "<redacted>"))
            .field("persistent_keepalive", &self.persistent_keepalive)
            .field("role", &self.role)
            .field("scope", &self.scope.as_ref().map(|s| s.to_string()))
            .finish()
    }
}
