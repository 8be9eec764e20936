//! Configuration: TOML on disk, a validated [`Config`] in memory.
//!
//! Parsing happens in two steps. Serde reads the file into the structs of
//! `raw`, whose fields keep their byte spans; validation (`gateway`,
//! `admin`, `peer`, then `cross_check` over the whole peer set) turns them
//! into plain domain types (decoded keys, parsed networks, `Duration`s).
//! Every problem is reported as a [`ConfigError`] naming the file, the line
//! and the field, and validation collects all of them instead of stopping
//! at the first, so that `promgate check` shows the whole list at once.
//! Every default value is named in [`defaults`].
//!
//! Peers may live inline (`[[peer]]`), and in `*.toml` files of a
//! `peers_dir` (one file per peer suits GitOps and ConfigMap mounts). The
//! peer set is re-read on reload with [`load_peers`]; the gateway section
//! and the upstreams are only read at start.

mod admin;
mod cross_check;
pub mod defaults;
mod endpoint;
mod gateway;
mod peer;
mod private_key;
mod problems;
mod raw;
#[cfg(test)]
mod tests;
mod upstream;

pub(crate) use self::cross_check::cross_check_peers;
pub use self::defaults::*;
pub use self::endpoint::EndpointError;
pub(crate) use self::endpoint::check_endpoint;
pub(crate) use self::peer::valid_peer_name;
pub use self::upstream::{UpstreamConfig, UpstreamKind};
pub use promgate_core::peer_config::{Origin, PeerConfig};
pub use promgate_core::role::Role;

use self::peer::validate_peers;
use self::problems::{Problems, io_error, toml_error};
use self::raw::{RawFile, RawPeersFile};
use ipnet::IpNet;
use promgate_core::keys::PrivateKey;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// One problem in one place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    /// 1-based; 0 when the problem has no single line (a missing file).
    pub line: usize,
    pub field: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line > 0 {
            write!(f, "{}:{}: ", self.file.display(), self.line)?;
        } else {
            write!(f, "{}: ", self.file.display())?;
        }
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        f.write_str(&self.message)
    }
}

/// Every problem found in one validation pass.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// The `[gateway]` table, validated.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub private_key: PrivateKey,
    pub listen_port: u16,
    /// The gateway's own tunnel addresses with their prefixes (one per family at most).
    pub addresses: Vec<IpNet>,
    pub mtu: u16,
    /// What the tunnel serves, each upstream on its own ports (never
    /// empty, no port twice): `[[upstream]]`, or the one Prometheus of
    /// `upstream` and `http_ports`.
    pub upstreams: Vec<UpstreamConfig>,
    /// Public `host:port` written into client configs.
    pub endpoint: Option<String>,
    pub peers_dir: Option<PathBuf>,
    pub identity_header: http::HeaderName,
    /// Time to wait for the upstream's response headers before answering 504.
    pub upstream_timeout: Duration,
    /// TCP connections allowed per peer and in total inside the tunnel.
    pub max_connections_per_peer: usize,
    pub max_connections: usize,
    /// Requests in flight to each upstream per peer and in total; more wait
    /// (in order), and one that waits 30 s gets a 503.
    pub max_upstream_requests_per_peer: usize,
    pub max_upstream_requests: usize,
    /// A tunnel TCP connection with no traffic for this long is closed.
    pub tcp_idle_timeout: Duration,
    /// Send buffer per tunnel TCP connection in bytes: the most it has in flight.
    pub tcp_send_buffer: usize,
    /// `tcp_sender`: which TCP sender tunnel connections use.
    pub tcp_sender: promgate_core::gateway::TcpSender,
    /// `tcp_memory_budget`: bytes all tunnel TCP buffers may take together.
    pub tcp_memory_budget: usize,
    /// Handshakes per second, all peers together, before cookies are demanded.
    pub handshake_rate_limit: u64,
    /// Host names (or IP literals) the tunnel proxy answers to besides its
    /// tunnel addresses, as written; checked against `Host` and `Origin`.
    pub allowed_hosts: Vec<String>,
}

impl GatewayConfig {
    /// Every tunnel port served, all upstreams together, in config order.
    pub fn served_ports(&self) -> Vec<u16> {
        self.upstreams
            .iter()
            .flat_map(|u| u.ports.iter().copied())
            .collect()
    }

    /// The upstream named `name`, and its number.
    pub fn upstream_named(&self, name: &str) -> Option<(usize, &UpstreamConfig)> {
        self.upstreams
            .iter()
            .enumerate()
            .find(|(_, u)| u.name == name)
    }

    /// What the I/O-free core needs of this table.
    pub fn core_settings(&self) -> promgate_core::gateway::Settings {
        promgate_core::gateway::Settings {
            private_key: self.private_key.clone(),
            addresses: self.addresses.clone(),
            mtu: self.mtu,
            http_ports: self.served_ports(),
            limits: promgate_core::gateway::Limits {
                send_buffer: self.tcp_send_buffer,
                per_peer: self.max_connections_per_peer,
                total: self.max_connections,
                idle_timeout: self.tcp_idle_timeout,
                sender: self.tcp_sender,
                memory_budget: self.tcp_memory_budget,
                max_send_buffer: defaults::MAX_SEND_BUFFER.max(self.tcp_send_buffer),
            },
            handshake_rate_limit: self.handshake_rate_limit,
            upstream_shares: promgate_core::access::UpstreamShares {
                per_peer: self.max_upstream_requests_per_peer,
                upstreams: self.upstreams.len(),
            },
        }
    }

    /// A gateway config with every optional field at its default, as a
    /// file that names only these three would give (the upstream is one
    /// Prometheus on the default port): for tests, benches and embedding.
    /// Adjust fields afterwards as needed.
    pub fn with_defaults(private_key: PrivateKey, address: IpNet, upstream: http::Uri) -> Self {
        GatewayConfig {
            private_key,
            listen_port: defaults::DEFAULT_LISTEN_PORT,
            addresses: vec![address],
            mtu: defaults::DEFAULT_MTU,
            upstreams: vec![UpstreamConfig::single_prometheus(
                upstream,
                defaults::DEFAULT_HTTP_PORTS.to_vec(),
            )],
            endpoint: None,
            peers_dir: None,
            identity_header: http::HeaderName::from_static(defaults::DEFAULT_IDENTITY_HEADER),
            upstream_timeout: defaults::DEFAULT_UPSTREAM_TIMEOUT,
            max_connections_per_peer: defaults::DEFAULT_MAX_CONNECTIONS_PER_PEER,
            max_connections: defaults::DEFAULT_MAX_CONNECTIONS,
            max_upstream_requests_per_peer: defaults::DEFAULT_MAX_UPSTREAM_REQUESTS_PER_PEER,
            max_upstream_requests: defaults::DEFAULT_MAX_UPSTREAM_REQUESTS,
            tcp_idle_timeout: defaults::DEFAULT_TCP_IDLE_TIMEOUT,
            tcp_send_buffer: defaults::DEFAULT_TCP_SEND_BUFFER,
            tcp_sender: defaults::DEFAULT_TCP_SENDER,
            tcp_memory_budget: defaults::DEFAULT_TCP_MEMORY_BUDGET,
            handshake_rate_limit: defaults::DEFAULT_HANDSHAKE_RATE_LIMIT,
            allowed_hosts: Vec::new(),
        }
    }
}

/// The `[admin]` table, validated.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    pub listen: Option<SocketAddr>,
    /// Local-only control endpoint for `promgate status` and `peer list`.
    pub control_listen: Option<SocketAddr>,
    /// `/readyz` fails once the upstream has been unreachable this long; `None` disables it.
    pub upstream_unready_after: Option<Duration>,
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub path: PathBuf,
    pub gateway: GatewayConfig,
    pub admin: AdminConfig,
    pub peers: Vec<PeerConfig>,
}

// ---------------------------------------------------------------------------
// Loading.

/// Reads and validates the whole config: gateway, admin and every peer.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let text =
        std::fs::read_to_string(path).map_err(|e| ConfigErrors(vec![io_error(path, "", e)]))?;
    parse(path, &text)
}

/// Validates config text as if it were read from `path` (peers_dir is read from disk).
pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigErrors> {
    let raw: RawFile =
        toml::from_str(text).map_err(|e| ConfigErrors(vec![toml_error(path, text, e)]))?;
    let mut problems = Problems::new(path, text);

    let Some(gw) = raw.gateway else {
        problems.errors.push(ConfigError {
            file: path.to_path_buf(),
            line: 0,
            field: "gateway".into(),
            message: "missing [gateway] table".into(),
        });
        return Err(ConfigErrors(problems.errors));
    };
    let gw_span = gw.span();
    let gateway =
        gateway::validate_gateway(&mut problems, path, gw_span, gw.into_inner(), raw.upstream);
    let admin = admin::validate_admin(&mut problems, raw.admin);

    let inline = validate_peers(&mut problems, raw.peer);
    let Some(gateway) = gateway else {
        return Err(ConfigErrors(problems.errors));
    };
    let peers = complete_peer_set(inline, problems.errors, &gateway)?;
    Ok(Config {
        path: path.to_path_buf(),
        gateway,
        admin,
        peers,
    })
}

/// Re-reads only the peer set (inline peers plus `peers_dir`), for hot reload.
/// The gateway section of the running config is kept as it is.
pub(crate) fn load_peers(
    path: &Path,
    gateway: &GatewayConfig,
) -> Result<Vec<PeerConfig>, ConfigErrors> {
    let text =
        std::fs::read_to_string(path).map_err(|e| ConfigErrors(vec![io_error(path, "", e)]))?;
    let raw: RawFile =
        toml::from_str(&text).map_err(|e| ConfigErrors(vec![toml_error(path, &text, e)]))?;
    let mut problems = Problems::new(path, &text);
    let inline = validate_peers(&mut problems, raw.peer);
    complete_peer_set(inline, problems.errors, gateway)
}

/// Adds the peers of `peers_dir` to the inline ones and checks the whole
/// set; `errors` are the problems found so far. Shared by start and reload,
/// so a reload refuses exactly what a start would.
fn complete_peer_set(
    mut peers: Vec<PeerConfig>,
    mut errors: Vec<ConfigError>,
    gateway: &GatewayConfig,
) -> Result<Vec<PeerConfig>, ConfigErrors> {
    if let Some(dir) = &gateway.peers_dir {
        match load_peers_dir(dir) {
            Ok(more) => peers.extend(more),
            Err(ConfigErrors(e)) => errors.extend(e),
        }
    }
    errors.extend(cross_check_peers(&peers, gateway));
    if errors.is_empty() {
        Ok(peers)
    } else {
        Err(ConfigErrors(errors))
    }
}

/// Validates the text of one peers file (`[[peer]]` tables only).
pub fn parse_peers_text(file: &Path, text: &str) -> Result<Vec<PeerConfig>, ConfigErrors> {
    let raw: RawPeersFile =
        toml::from_str(text).map_err(|e| ConfigErrors(vec![toml_error(file, text, e)]))?;
    let mut problems = Problems::new(file, text);
    let peers = validate_peers(&mut problems, raw.peer);
    problems.finish(peers)
}

/// Reads every `*.toml` file of a peers directory, in name order. Hidden
/// entries are skipped: Kubernetes keeps its ConfigMap versions in `..data`
/// style directories and exposes the files through symlinks. Directories,
/// FIFOs and sockets are skipped (a FIFO would block the read), but an
/// entry that cannot be inspected at all (a symlink loop, a dangling link)
/// is an error: skipping it would silently remove the peers it held.
pub(crate) fn load_peers_dir(dir: &Path) -> Result<Vec<PeerConfig>, ConfigErrors> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| ConfigErrors(vec![io_error(dir, "peers_dir", e)]))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            !name.starts_with('.')
                && name.ends_with(".toml")
                && match std::fs::metadata(p) {
                    Ok(m) => m.is_file(),
                    Err(_) => true,
                }
        })
        .collect();
    files.sort();
    let mut peers = Vec::new();
    let mut errors = Vec::new();
    for file in files {
        let text = match std::fs::read_to_string(&file) {
            Ok(t) => t,
            Err(e) => {
                errors.push(io_error(&file, "", e));
                continue;
            }
        };
        match parse_peers_text(&file, &text) {
            Ok(more) => peers.extend(more),
            Err(ConfigErrors(e)) => errors.extend(e),
        }
    }
    if errors.is_empty() {
        Ok(peers)
    } else {
        Err(ConfigErrors(errors))
    }
}
