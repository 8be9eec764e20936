//! The configuration as written in TOML: serde structs, no validation.
//!
//! Every field is optional here and keeps its byte span (`Spanned`), so
//! that validation can report a missing or bad field with its line.
//! Unknown fields are refused (`deny_unknown_fields`): a misspelt key must
//! not silently fall back to a default.

use serde::Deserialize;
use toml::Spanned;

/// A whole config file: `[gateway]`, `[admin]`, `[[upstream]]`s and
/// inline `[[peer]]`s.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFile {
    pub(super) gateway: Option<Spanned<RawGateway>>,
    pub(super) admin: Option<RawAdmin>,
    #[serde(default)]
    pub(super) upstream: Vec<Spanned<RawUpstream>>,
    #[serde(default)]
    pub(super) peer: Vec<Spanned<RawPeer>>,
}

/// A file of a `peers_dir`: `[[peer]]` tables only.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPeersFile {
    #[serde(default)]
    pub(super) peer: Vec<Spanned<RawPeer>>,
}

/// A string or a list of strings (`address`, `allowed_ips`).
#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub(super) fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawGateway {
    pub(super) private_key_file: Option<Spanned<String>>,
    pub(super) private_key_env: Option<Spanned<String>>,
    pub(super) private_key: Option<Spanned<String>>,
    pub(super) listen_port: Option<Spanned<u16>>,
    pub(super) address: Option<Spanned<OneOrMany>>,
    pub(super) mtu: Option<Spanned<u16>>,
    pub(super) upstream: Option<Spanned<String>>,
    pub(super) http_ports: Option<Spanned<Vec<u16>>>,
    pub(super) endpoint: Option<Spanned<String>>,
    pub(super) peers_dir: Option<Spanned<String>>,
    pub(super) identity_header: Option<Spanned<String>>,
    pub(super) upstream_timeout: Option<Spanned<String>>,
    pub(super) max_connections_per_peer: Option<Spanned<usize>>,
    pub(super) max_connections: Option<Spanned<usize>>,
    pub(super) max_upstream_requests_per_peer: Option<Spanned<usize>>,
    pub(super) max_upstream_requests: Option<Spanned<usize>>,
    pub(super) tcp_idle_timeout: Option<Spanned<String>>,
    pub(super) tcp_send_buffer: Option<Spanned<usize>>,
    pub(super) tcp_sender: Option<Spanned<String>>,
    pub(super) tcp_memory_budget: Option<Spanned<usize>>,
    pub(super) handshake_rate_limit: Option<Spanned<u64>>,
    pub(super) allowed_hosts: Option<Vec<Spanned<String>>>,
}

/// One `[[upstream]]` table.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUpstream {
    pub(super) name: Option<Spanned<String>>,
    pub(super) url: Option<Spanned<String>>,
    pub(super) port: Option<Spanned<u16>>,
    pub(super) kind: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAdmin {
    pub(super) listen: Option<Spanned<String>>,
    pub(super) control_listen: Option<Spanned<String>>,
    pub(super) upstream_unready_after: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPeer {
    pub(super) name: Option<Spanned<String>>,
    pub(super) public_key: Option<Spanned<String>>,
    pub(super) allowed_ips: Option<Spanned<OneOrMany>>,
    pub(super) preshared_key: Option<Spanned<String>>,
    pub(super) persistent_keepalive: Option<Spanned<u16>>,
    pub(super) role: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) allow_paths: Vec<String>,
    #[serde(default)]
    pub(super) deny_paths: Vec<String>,
    pub(super) scope: Option<Spanned<crate::web::scope::RawScope>>,
}
