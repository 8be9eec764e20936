//! Configuration: TOML on disk, a validated [`Config`] in memory.
//!
//! Parsing happens in two steps. Serde reads the file into `Raw*` structs
//! whose fields keep their byte spans; validation then turns them into plain
//! domain types (decoded keys, parsed networks, `Duration`s). Every problem is
//! reported as a [`ConfigError`] naming the file, the line and the field, and
//! validation collects all of them instead of stopping at the first, so that
//! `promgate check` shows the whole list at once.
//!
//! Peers may live inline (`[[peer]]`), and in `*.toml` files of a
//! `peers_dir` (one file per peer suits GitOps and ConfigMap mounts). The
//! peer set is re-read on reload with [`load_peers`]; the gateway section is
//! only read at start.

use crate::keys::{KeyError, PrivateKey, decode_key, encode_key};
pub use crate::role::Role;

/// Default send buffer per connection, which is also the most a connection
/// has in flight. smoltcp has no SACK, so a burst that overruns the client
/// (a wireguard-go client's UDP socket buffer, in the benchmark) costs a
/// retransmission timeout. Measured on the 2-core lab (MB/s, client drops):
/// 32 KiB 40/0, 64 KiB 50/0, 96 KiB 52/2, 128 KiB 19/38, 512 KiB 13/258.
/// Throughput is at most buffer / RTT, so high-latency links want more
/// (`tcp_send_buffer`).
pub const DEFAULT_TCP_SEND_BUFFER: usize = 64 * 1024;

/// Handshakes per second (all peers together) above which cookies are
/// demanded, unless the config says otherwise. A responder handshake costs
/// about 0.37 ms of CPU on the development VM (`cargo bench`, README), so
/// 1,000 per second caps what an initiation flood can take at about 40% of
/// one core; a flood beyond it costs only cookie replies (µs each).
pub const DEFAULT_HANDSHAKE_RATE_LIMIT: u64 = 1000;
use ipnet::IpNet;
use serde::Deserialize;
use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::Spanned;

/// Where the config lives when neither `--config` nor `$PROMGATE_CONFIG` says.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/promgate/promgate.toml";
pub const DEFAULT_UPSTREAM: &str = "http://prometheus.default.svc.cluster.local";
pub const DEFAULT_LISTEN_PORT: u16 = 51820;
/// 1420 is wg-quick's default: 1500 minus the 80 bytes of IPv6+UDP+WireGuard.
pub const DEFAULT_MTU: u16 = 1420;
pub const DEFAULT_ADMIN_LISTEN: &str = "0.0.0.0:9586";
pub const DEFAULT_IDENTITY_HEADER: &str = "X-Promgate-Peer";

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
    pub scope: Option<crate::scope::Scope>,
    pub origin: Origin,
}

impl PeerConfig {
    /// True when the two describe the same tunnel, so a reload may keep its session.
    pub fn same_tunnel(&self, other: &PeerConfig) -> bool {
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

/// The `[gateway]` table, validated.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub private_key: PrivateKey,
    pub listen_port: u16,
    /// The gateway's own tunnel addresses with their prefixes (one per family at most).
    pub addresses: Vec<IpNet>,
    pub mtu: u16,
    pub upstream: http::Uri,
    pub http_ports: Vec<u16>,
    /// Public `host:port` written into client configs.
    pub endpoint: Option<String>,
    pub peers_dir: Option<PathBuf>,
    pub identity_header: http::HeaderName,
    /// Time to wait for the upstream's response headers before answering 504.
    pub upstream_timeout: Duration,
    /// TCP connections allowed per peer and in total inside the tunnel.
    pub max_connections_per_peer: usize,
    pub max_connections: usize,
    /// A tunnel TCP connection with no traffic for this long is closed.
    pub tcp_idle_timeout: Duration,
    /// Send buffer per tunnel TCP connection in bytes: the most it has in flight.
    pub tcp_send_buffer: usize,
    /// Handshakes per second, all peers together, before cookies are demanded.
    pub handshake_rate_limit: u64,
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
// Raw, as written in TOML.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    gateway: Option<Spanned<RawGateway>>,
    admin: Option<RawAdmin>,
    #[serde(default)]
    peer: Vec<Spanned<RawPeer>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPeersFile {
    #[serde(default)]
    peer: Vec<Spanned<RawPeer>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGateway {
    private_key_file: Option<Spanned<String>>,
    private_key_env: Option<Spanned<String>>,
    private_key: Option<Spanned<String>>,
    listen_port: Option<Spanned<u16>>,
    address: Option<Spanned<OneOrMany>>,
    mtu: Option<Spanned<u16>>,
    upstream: Option<Spanned<String>>,
    http_ports: Option<Spanned<Vec<u16>>>,
    endpoint: Option<Spanned<String>>,
    peers_dir: Option<Spanned<String>>,
    identity_header: Option<Spanned<String>>,
    upstream_timeout: Option<Spanned<String>>,
    max_connections_per_peer: Option<Spanned<usize>>,
    max_connections: Option<Spanned<usize>>,
    tcp_idle_timeout: Option<Spanned<String>>,
    tcp_send_buffer: Option<Spanned<usize>>,
    handshake_rate_limit: Option<Spanned<u64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    listen: Option<Spanned<String>>,
    control_listen: Option<Spanned<String>>,
    upstream_unready_after: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPeer {
    name: Option<Spanned<String>>,
    public_key: Option<Spanned<String>>,
    allowed_ips: Option<Spanned<OneOrMany>>,
    preshared_key: Option<Spanned<String>>,
    persistent_keepalive: Option<Spanned<u16>>,
    role: Option<Spanned<String>>,
    #[serde(default)]
    allow_paths: Vec<String>,
    #[serde(default)]
    deny_paths: Vec<String>,
    scope: Option<Spanned<crate::scope::RawScope>>,
}

// ---------------------------------------------------------------------------
// Error collection with line numbers.

struct Sink<'a> {
    file: &'a Path,
    /// Byte offsets of each newline, to turn spans into line numbers in
    /// O(log n): counting from the start each time is quadratic at 10,000 peers.
    newlines: Vec<usize>,
    errors: Vec<ConfigError>,
}

impl<'a> Sink<'a> {
    fn new(file: &'a Path, text: &'a str) -> Self {
        Sink {
            file,
            newlines: text
                .bytes()
                .enumerate()
                .filter(|(_, b)| *b == b'\n')
                .map(|(i, _)| i)
                .collect(),
            errors: Vec::new(),
        }
    }

    fn line_of(&self, offset: usize) -> usize {
        self.newlines.partition_point(|&nl| nl < offset) + 1
    }

    fn push(&mut self, span: std::ops::Range<usize>, field: &str, message: impl Into<String>) {
        let line = self.line_of(span.start);
        self.errors.push(ConfigError {
            file: self.file.to_path_buf(),
            line,
            field: field.to_string(),
            message: message.into(),
        });
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

fn toml_error(file: &Path, text: &str, err: toml::de::Error) -> ConfigError {
    let line = err.span().map(|s| line_of(text, s.start)).unwrap_or(0);
    ConfigError {
        file: file.to_path_buf(),
        line,
        field: String::new(),
        message: err.message().trim().to_string(),
    }
}

fn io_error(file: &Path, field: &str, err: std::io::Error) -> ConfigError {
    ConfigError {
        file: file.to_path_buf(),
        line: 0,
        field: field.to_string(),
        message: format!("cannot read: {err}"),
    }
}

fn parse_duration(
    sink: &mut Sink<'_>,
    field: &str,
    v: Option<Spanned<String>>,
    default: Duration,
) -> Duration {
    match v {
        None => default,
        Some(s) => match humantime::parse_duration(s.get_ref()) {
            Ok(d) => d,
            Err(e) => {
                sink.push(
                    s.span(),
                    field,
                    format!("`{}` is not a duration like \"30s\": {e}", s.get_ref()),
                );
                default
            }
        },
    }
}

fn key_message(e: KeyError) -> String {
    format!("key {e}")
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
    let mut sink = Sink::new(path, text);

    let Some(gw) = raw.gateway else {
        sink.errors.push(ConfigError {
            file: path.to_path_buf(),
            line: 0,
            field: "gateway".into(),
            message: "missing [gateway] table".into(),
        });
        return Err(ConfigErrors(sink.errors));
    };
    let gw_span = gw.span();
    let gateway = validate_gateway(&mut sink, path, gw_span, gw.into_inner());
    let admin = validate_admin(&mut sink, raw.admin);

    let inline = validate_peers(&mut sink, raw.peer);
    let Some(gateway) = gateway else {
        return Err(ConfigErrors(sink.errors));
    };
    let peers = complete_peer_set(inline, sink.errors, &gateway)?;
    Ok(Config {
        path: path.to_path_buf(),
        gateway,
        admin,
        peers,
    })
}

/// Re-reads only the peer set (inline peers plus `peers_dir`), for hot reload.
/// The gateway section of the running config is kept as it is.
pub fn load_peers(path: &Path, gateway: &GatewayConfig) -> Result<Vec<PeerConfig>, ConfigErrors> {
    let text =
        std::fs::read_to_string(path).map_err(|e| ConfigErrors(vec![io_error(path, "", e)]))?;
    let raw: RawFile =
        toml::from_str(&text).map_err(|e| ConfigErrors(vec![toml_error(path, &text, e)]))?;
    let mut sink = Sink::new(path, &text);
    let inline = validate_peers(&mut sink, raw.peer);
    complete_peer_set(inline, sink.errors, gateway)
}

fn validate_peers(sink: &mut Sink<'_>, raw: Vec<Spanned<RawPeer>>) -> Vec<PeerConfig> {
    raw.into_iter()
        .filter_map(|p| validate_peer(sink, p))
        .collect()
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
    let mut sink = Sink::new(file, text);
    let peers = validate_peers(&mut sink, raw.peer);
    if sink.errors.is_empty() {
        Ok(peers)
    } else {
        Err(ConfigErrors(sink.errors))
    }
}

/// Reads every `*.toml` file of a peers directory, in name order. Hidden
/// entries are skipped: Kubernetes keeps its ConfigMap versions in `..data`
/// style directories and exposes the files through symlinks. Directories,
/// FIFOs and sockets are skipped (a FIFO would block the read), but an
/// entry that cannot be inspected at all (a symlink loop, a dangling link)
/// is an error: skipping it would silently remove the peers it held.
pub fn load_peers_dir(dir: &Path) -> Result<Vec<PeerConfig>, ConfigErrors> {
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

fn validate_gateway(
    sink: &mut Sink<'_>,
    path: &Path,
    span: std::ops::Range<usize>,
    raw: RawGateway,
) -> Option<GatewayConfig> {
    let before = sink.errors.len();
    let base_dir = path.parent().unwrap_or(Path::new("."));

    let private_key = resolve_private_key(sink, base_dir, span.clone(), &raw);

    let listen_port = raw
        .listen_port
        .map(|p| *p.get_ref())
        .unwrap_or(DEFAULT_LISTEN_PORT);

    let mut addresses = Vec::new();
    match raw.address {
        None => sink.push(
            span.clone(),
            "gateway.address",
            "missing: the gateway's tunnel address, e.g. \"10.13.13.1/24\"",
        ),
        Some(a) => {
            let a_span = a.span();
            for s in a.into_inner().into_vec() {
                match s.parse::<IpNet>() {
                    Ok(net) => {
                        if addresses
                            .iter()
                            .any(|n: &IpNet| n.addr().is_ipv4() == net.addr().is_ipv4())
                        {
                            sink.push(
                                a_span.clone(),
                                "gateway.address",
                                "at most one address per IP family",
                            );
                        } else {
                            addresses.push(net);
                        }
                    }
                    Err(_) => sink.push(
                        a_span.clone(),
                        "gateway.address",
                        format!("`{s}` is not an address with prefix, e.g. \"10.13.13.1/24\""),
                    ),
                }
            }
        }
    }

    let mtu = match raw.mtu {
        None => DEFAULT_MTU,
        Some(m) if (1280..=9000).contains(m.get_ref()) => *m.get_ref(),
        Some(m) => {
            sink.push(m.span(), "gateway.mtu", "must be between 1280 and 9000");
            DEFAULT_MTU
        }
    };

    let upstream_text = raw
        .upstream
        .as_ref()
        .map(|u| u.get_ref().clone())
        .unwrap_or_else(|| DEFAULT_UPSTREAM.to_string());
    let upstream_span = raw
        .upstream
        .as_ref()
        .map(|u| u.span())
        .unwrap_or(span.clone());
    let upstream = match upstream_text.parse::<http::Uri>() {
        Ok(u) if u.scheme_str() == Some("http") && u.authority().is_some() => Some(u),
        Ok(_) => {
            sink.push(
                upstream_span,
                "gateway.upstream",
                format!("`{upstream_text}` must be an http:// URL with a host"),
            );
            None
        }
        Err(e) => {
            sink.push(
                upstream_span,
                "gateway.upstream",
                format!("`{upstream_text}` is not a URL: {e}"),
            );
            None
        }
    };

    let http_ports = match raw.http_ports {
        None => vec![80],
        Some(p) => {
            let ports = p.get_ref().clone();
            if ports.is_empty() || ports.contains(&0) {
                sink.push(
                    p.span(),
                    "gateway.http_ports",
                    "list at least one port, none of them 0",
                );
            }
            ports
        }
    };

    let identity_header = match raw.identity_header {
        None => http::HeaderName::from_static("x-promgate-peer"),
        Some(h) => match http::HeaderName::from_bytes(h.get_ref().as_bytes()) {
            Ok(n) => n,
            Err(_) => {
                sink.push(
                    h.span(),
                    "gateway.identity_header",
                    format!("`{}` is not a valid header name", h.get_ref()),
                );
                http::HeaderName::from_static("x-promgate-peer")
            }
        },
    };

    let endpoint = raw.endpoint.map(|e| {
        let text = e.get_ref().clone();
        if let Err(why) = check_endpoint(&text) {
            sink.push(e.span(), "gateway.endpoint", why);
        }
        text
    });

    let upstream_timeout = parse_duration(
        sink,
        "gateway.upstream_timeout",
        raw.upstream_timeout,
        Duration::from_secs(120),
    );
    let tcp_idle_timeout = parse_duration(
        sink,
        "gateway.tcp_idle_timeout",
        raw.tcp_idle_timeout,
        Duration::from_secs(300),
    );
    let positive =
        |sink: &mut Sink<'_>, field: &str, v: Option<Spanned<usize>>, default: usize| match v {
            None => default,
            Some(n) if *n.get_ref() > 0 => *n.get_ref(),
            Some(n) => {
                sink.push(n.span(), field, "must be at least 1");
                default
            }
        };
    let max_connections_per_peer = positive(
        sink,
        "gateway.max_connections_per_peer",
        raw.max_connections_per_peer,
        128,
    );
    let max_connections = positive(sink, "gateway.max_connections", raw.max_connections, 1024);

    let tcp_send_buffer = match raw.tcp_send_buffer {
        None => DEFAULT_TCP_SEND_BUFFER,
        Some(b) if (16 * 1024..=16 * 1024 * 1024).contains(b.get_ref()) => *b.get_ref(),
        Some(b) => {
            sink.push(
                b.span(),
                "gateway.tcp_send_buffer",
                "must be between 16384 and 16777216 bytes",
            );
            DEFAULT_TCP_SEND_BUFFER
        }
    };
    let handshake_rate_limit = match raw.handshake_rate_limit {
        None => DEFAULT_HANDSHAKE_RATE_LIMIT,
        Some(n) if *n.get_ref() > 0 => *n.get_ref(),
        Some(n) => {
            sink.push(
                n.span(),
                "gateway.handshake_rate_limit",
                "must be at least 1",
            );
            DEFAULT_HANDSHAKE_RATE_LIMIT
        }
    };
    let peers_dir = raw.peers_dir.map(|d| base_dir.join(d.get_ref()));

    if sink.errors.len() > before {
        return None;
    }
    Some(GatewayConfig {
        private_key: private_key?,
        listen_port,
        addresses,
        mtu,
        upstream: upstream?,
        http_ports,
        endpoint,
        peers_dir,
        identity_header,
        upstream_timeout,
        max_connections_per_peer,
        max_connections,
        tcp_idle_timeout,
        tcp_send_buffer,
        handshake_rate_limit,
    })
}

fn resolve_private_key(
    sink: &mut Sink<'_>,
    base_dir: &Path,
    span: std::ops::Range<usize>,
    raw: &RawGateway,
) -> Option<PrivateKey> {
    let given = [
        raw.private_key_file.is_some(),
        raw.private_key_env.is_some(),
        raw.private_key.is_some(),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    if given != 1 {
        sink.push(
            span,
            "gateway.private_key_file",
            "set exactly one of private_key_file, private_key_env or private_key",
        );
        return None;
    }
    if let Some(f) = &raw.private_key_file {
        let file = base_dir.join(f.get_ref());
        match std::fs::read_to_string(&file) {
            Ok(text) => match PrivateKey::from_base64(&text) {
                Ok(k) => {
                    warn_if_key_file_readable_by_others(&file);
                    Some(k)
                }
                Err(e) => {
                    sink.push(
                        f.span(),
                        "gateway.private_key_file",
                        format!("{}: {}", file.display(), key_message(e)),
                    );
                    None
                }
            },
            Err(e) => {
                sink.push(
                    f.span(),
                    "gateway.private_key_file",
                    format!("cannot read {}: {e}", file.display()),
                );
                None
            }
        }
    } else if let Some(var) = &raw.private_key_env {
        match std::env::var(var.get_ref()) {
            Ok(text) => match PrivateKey::from_base64(&text) {
                Ok(k) => Some(k),
                Err(e) => {
                    sink.push(
                        var.span(),
                        "gateway.private_key_env",
                        format!("${}: {}", var.get_ref(), key_message(e)),
                    );
                    None
                }
            },
            Err(_) => {
                sink.push(
                    var.span(),
                    "gateway.private_key_env",
                    format!("environment variable {} is not set", var.get_ref()),
                );
                None
            }
        }
    } else if let Some(inline) = &raw.private_key {
        match PrivateKey::from_base64(inline.get_ref()) {
            Ok(k) => {
                tracing::warn!(
                    file = %sink.file.display(),
                    line = sink.line_of(inline.span().start),
                    "the private key is inline in the config; prefer private_key_file with a mode 0600 file or a Secret"
                );
                Some(k)
            }
            Err(e) => {
                sink.push(inline.span(), "gateway.private_key", key_message(e));
                None
            }
        }
    } else {
        None
    }
}

#[cfg(unix)]
fn warn_if_key_file_readable_by_others(file: &Path) {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let Ok(meta) = std::fs::metadata(file) else {
        return;
    };
    let mode = meta.permissions().mode();
    // Group access is only a risk when the group is not our own: Kubernetes
    // gives Secret files to the pod's fsGroup, which is the gateway itself.
    let group_is_ours = own_gid() == Some(meta.gid());
    if mode & 0o007 != 0 || (mode & 0o070 != 0 && !group_is_ours) {
        tracing::warn!(
            file = %file.display(),
            mode = format!("{:o}", mode & 0o777),
            "the private key file can be read by group or others; chmod 600 it"
        );
    }
}

/// The process's effective group id, from /proc (no unsafe libc call).
#[cfg(unix)]
fn own_gid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Gid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

#[cfg(not(unix))]
fn warn_if_key_file_readable_by_others(_file: &Path) {}

fn validate_admin(sink: &mut Sink<'_>, raw: Option<RawAdmin>) -> AdminConfig {
    let mut admin = AdminConfig {
        listen: DEFAULT_ADMIN_LISTEN.parse().ok(),
        control_listen: "127.0.0.1:9587".parse().ok(),
        upstream_unready_after: Some(Duration::from_secs(60)),
    };
    let Some(raw) = raw else { return admin };
    let addr = |sink: &mut Sink<'_>, field: &str, v: Spanned<String>| -> Option<SocketAddr> {
        if v.get_ref().is_empty() || v.get_ref() == "off" {
            return None;
        }
        match v.get_ref().parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                sink.push(
                    v.span(),
                    field,
                    format!(
                        "`{}` is not ip:port, e.g. \"0.0.0.0:9586\"; \"off\" disables it",
                        v.get_ref()
                    ),
                );
                None
            }
        }
    };
    if let Some(l) = raw.listen {
        admin.listen = addr(sink, "admin.listen", l);
    }
    if let Some(l) = raw.control_listen {
        let span = l.span();
        admin.control_listen = addr(sink, "admin.control_listen", l);
        if let Some(a) = admin.control_listen
            && !a.ip().is_loopback()
        {
            sink.push(span, "admin.control_listen", "must be a loopback address: peer names and endpoints are not for the cluster network");
        }
    }
    if let Some(d) = raw.upstream_unready_after {
        if d.get_ref() == "off" {
            admin.upstream_unready_after = None;
        } else {
            admin.upstream_unready_after = Some(parse_duration(
                sink,
                "admin.upstream_unready_after",
                Some(d),
                Duration::from_secs(60),
            ));
        }
    }
    admin
}

fn validate_peer(sink: &mut Sink<'_>, raw: Spanned<RawPeer>) -> Option<PeerConfig> {
    let span = raw.span();
    let line = sink.line_of(span.start);
    let raw = raw.into_inner();
    let before = sink.errors.len();

    let name = match raw.name {
        Some(n) if valid_peer_name(n.get_ref()) => n.into_inner(),
        Some(n) => {
            sink.push(
                n.span(),
                "peer.name",
                format!(
                    "`{}` must be 1-64 characters of a-z, A-Z, 0-9, '.', '_' or '-'",
                    n.get_ref()
                ),
            );
            String::new()
        }
        None => {
            sink.push(span.clone(), "peer.name", "missing");
            String::new()
        }
    };
    let field = |f: &str| {
        if name.is_empty() {
            format!("peer.{f}")
        } else {
            format!("peer \"{name}\".{f}")
        }
    };
    let public_key = match raw.public_key {
        Some(k) => match decode_key(k.get_ref()) {
            Ok(k) => Some(k),
            Err(e) => {
                sink.push(k.span(), &field("public_key"), key_message(e));
                None
            }
        },
        None => {
            sink.push(span.clone(), &field("public_key"), "missing");
            None
        }
    };
    let mut allowed_ips = Vec::new();
    match raw.allowed_ips {
        Some(a) => {
            let a_span = a.span();
            for s in a.into_inner().into_vec() {
                match s
                    .parse::<IpNet>()
                    .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                {
                    Ok(n) => allowed_ips.push(n.trunc()),
                    Err(_) => sink.push(
                        a_span.clone(),
                        &field("allowed_ips"),
                        format!("`{s}` is not an address or network"),
                    ),
                }
            }
            if allowed_ips.is_empty() && sink.errors.len() == before {
                sink.push(
                    a_span,
                    &field("allowed_ips"),
                    "is empty: the peer could send nothing",
                );
            }
        }
        None => sink.push(span.clone(), &field("allowed_ips"), "missing"),
    }
    let preshared_key = match raw.preshared_key {
        Some(k) => match decode_key(k.get_ref()) {
            Ok(k) => Some(k),
            Err(e) => {
                sink.push(k.span(), &field("preshared_key"), key_message(e));
                None
            }
        },
        None => None,
    };
    let role = match raw.role {
        None => Role::Viewer,
        Some(r) => match r.get_ref().as_str() {
            "viewer" => Role::Viewer,
            "admin" => Role::Admin,
            other => {
                sink.push(
                    r.span(),
                    &field("role"),
                    format!("`{other}` is not a role; use \"viewer\" or \"admin\""),
                );
                Role::Viewer
            }
        },
    };
    for p in raw.allow_paths.iter().chain(raw.deny_paths.iter()) {
        if !p.starts_with('/') {
            sink.push(
                span.clone(),
                &field("allow_paths"),
                format!("`{p}` must start with '/'"),
            );
        }
    }
    let scope = raw.scope.and_then(|s| {
        let s_span = s.span();
        crate::scope::validate_peer_scope(s.into_inner(), role)
            .map_err(|messages| {
                for m in messages {
                    sink.push(s_span.clone(), &field("scope"), m);
                }
            })
            .ok()
    });
    if sink.errors.len() > before {
        return None;
    }
    Some(PeerConfig {
        name,
        public_key: public_key?,
        allowed_ips,
        preshared_key,
        persistent_keepalive: raw
            .persistent_keepalive
            .map(|k| *k.get_ref())
            .filter(|k| *k > 0),
        role,
        allow_paths: raw.allow_paths,
        deny_paths: raw.deny_paths,
        scope,
        origin: Origin {
            file: sink.file.to_path_buf(),
            line,
        },
    })
}

/// Checks an `endpoint` (`host:port`, `[v6]:port`) before it is written
/// into client configs: a DNS name or IP literal and a port, nothing else.
/// A line break here would let a config line such as `PostUp` reach the
/// client, where wg-quick runs it as root.
pub fn check_endpoint(text: &str) -> Result<(), String> {
    let shown = text.escape_debug();
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err(format!(
            "`{shown}` needs a port, e.g. \"vpn.example.com:51820\""
        ));
    };
    if !matches!(port.parse::<u16>(), Ok(p) if p != 0) {
        return Err(format!(
            "`{shown}`: `{}` is not a port (1-65535)",
            port.escape_debug()
        ));
    }
    let host_ok = if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        v6.parse::<std::net::Ipv6Addr>().is_ok()
    } else {
        !host.is_empty()
            && host.len() <= 253
            && host.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            })
    };
    if !host_ok {
        return Err(format!(
            "`{shown}`: the host must be a DNS name, an IPv4 address or [an IPv6 address]"
        ));
    }
    Ok(())
}

pub fn valid_peer_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

/// Checks that need the whole peer set: duplicates, overlaps, our own key.
pub fn cross_check_peers(peers: &[PeerConfig], gateway: &GatewayConfig) -> Vec<ConfigError> {
    let mut errors = Vec::new();
    let err = |p: &PeerConfig, field: &str, message: String| ConfigError {
        file: p.origin.file.clone(),
        line: p.origin.line,
        field: format!("peer \"{}\".{field}", p.name),
        message,
    };
    let own = gateway.private_key.public_key();
    let mut names: HashMap<&str, &PeerConfig> = HashMap::new();
    let mut keys: HashMap<[u8; 32], &PeerConfig> = HashMap::new();
    for p in peers {
        if let Some(first) = names.insert(&p.name, p) {
            errors.push(err(
                p,
                "name",
                format!(
                    "duplicate name, also at {}:{}",
                    first.origin.file.display(),
                    first.origin.line
                ),
            ));
        }
        if let Some(first) = keys.insert(p.public_key, p) {
            errors.push(err(
                p,
                "public_key",
                format!(
                    "same key as peer \"{}\" at {}:{}",
                    first.name,
                    first.origin.file.display(),
                    first.origin.line
                ),
            ));
        }
        if &p.public_key == own.as_bytes() {
            errors.push(err(
                p,
                "public_key",
                "is the gateway's own public key".into(),
            ));
        }
        for net in &p.allowed_ips {
            if gateway.addresses.iter().any(|g| net.contains(&g.addr())) {
                errors.push(err(
                    p,
                    "allowed_ips",
                    format!("{net} contains the gateway's own address"),
                ));
            }
        }
    }
    // Overlap check: sort all networks by start address, compare neighbours
    // within a family. O(n log n), fine for 10,000 peers.
    let mut nets: Vec<(&IpNet, &PeerConfig)> = peers
        .iter()
        .flat_map(|p| p.allowed_ips.iter().map(move |n| (n, p)))
        .collect();
    nets.sort_by_key(|(n, _)| (n.network(), n.prefix_len()));
    let mut widest: Option<(&IpNet, &PeerConfig)> = None;
    for (net, p) in nets {
        if let Some((w, wp)) = widest
            && w.addr().is_ipv4() == net.addr().is_ipv4()
            && w.contains(&net.network())
        {
            if !std::ptr::eq(wp, p) || w == net {
                errors.push(err(
                    p,
                    "allowed_ips",
                    format!(
                        "{net} overlaps {w} of peer \"{}\" ({}:{})",
                        wp.name,
                        wp.origin.file.display(),
                        wp.origin.line
                    ),
                ));
            }
            if w.broadcast() >= net.broadcast() {
                continue;
            }
        }
        widest = Some((net, p));
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_key(dir: &Path) -> PrivateKey {
        let k = PrivateKey::generate();
        std::fs::write(dir.join("private.key"), k.to_base64()).unwrap();
        k
    }

    fn tempdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("promgate-config-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn peer_key() -> String {
        encode_key(PrivateKey::generate().public_key().as_bytes())
    }

    #[test]
    fn the_minimal_file_from_the_issue_works_as_written() {
        let dir = tempdir("minimal");
        write_key(&dir);
        let text = format!(
            r#"[gateway]
private_key_file = "{}/private.key"
listen_port = 51820
address = "10.13.13.1/24"     # the gateway's address inside the tunnel
upstream = "http://prometheus.default.svc.cluster.local"
http_ports = [80]             # TCP ports served inside the tunnel

[[peer]]
name = "alice"
public_key = "{}"
allowed_ips = ["10.13.13.2/32"]
"#,
            dir.display(),
            peer_key()
        );
        let cfg = parse(&dir.join("promgate.toml"), &text).unwrap();
        assert_eq!(cfg.gateway.listen_port, 51820);
        assert_eq!(cfg.gateway.http_ports, vec![80]);
        assert_eq!(cfg.peers.len(), 1);
        assert_eq!(cfg.peers[0].role, Role::Viewer);
        assert_eq!(cfg.peers[0].origin.line, 8);
    }

    #[test]
    fn a_peers_file_replaced_by_a_symlink_loop_is_refused_not_skipped() {
        let dir = tempdir("symlink-loop");
        write_key(&dir);
        let peers = dir.join("peers.d");
        std::fs::create_dir_all(&peers).unwrap();
        std::os::unix::fs::symlink("bob.toml", peers.join("bob.toml")).unwrap();
        let err = load_peers_dir(&peers).unwrap_err().to_string();
        assert!(err.contains("bob.toml"), "{err}");
        std::fs::remove_file(peers.join("bob.toml")).unwrap();
        std::os::unix::fs::symlink("missing", peers.join("gone.toml")).unwrap();
        assert!(
            load_peers_dir(&peers).is_err(),
            "a dangling link was skipped"
        );
        std::fs::remove_file(peers.join("gone.toml")).unwrap();
        std::fs::create_dir(peers.join("dir.toml")).unwrap();
        assert_eq!(load_peers_dir(&peers).unwrap().len(), 0);
    }

    fn base(dir: &Path) -> String {
        format!(
            "[gateway]\nprivate_key_file = \"{}/private.key\"\naddress = \"10.13.13.1/24\"\n",
            dir.display()
        )
    }

    fn errors_of(text: &str, dir: &Path) -> Vec<ConfigError> {
        parse(&dir.join("p.toml"), text).unwrap_err().0
    }

    #[test]
    fn errors_name_file_line_and_field() {
        let dir = tempdir("errors");
        let own = write_key(&dir);
        let k = peer_key();
        let text = format!(
            "{}\n[[peer]]\nname = \"a\"\npublic_key = \"{k}\"\nallowed_ips = [\"10.13.13.2/32\"]\n\n[[peer]]\nname = \"a\"\npublic_key = \"{k}\"\nallowed_ips = [\"10.13.13.2/31\"]\n\n[[peer]]\nname = \"bad\"\npublic_key = \"xyz\"\nallowed_ips = [\"10.13.13.9/32\"]\n\n[[peer]]\nname = \"me\"\npublic_key = \"{}\"\nallowed_ips = []\n",
            base(&dir),
            encode_key(own.public_key().as_bytes())
        );
        let errs = errors_of(&text, &dir);
        let shown: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        let all = shown.join("\n");
        assert!(
            all.contains("p.toml:17: peer \"bad\".public_key: key is not valid base64"),
            "{all}"
        );
        assert!(all.contains("peer \"me\".allowed_ips: is empty"), "{all}");
        assert!(all.contains("peer \"a\".name: duplicate name"), "{all}");
        assert!(all.contains("same key as peer \"a\""), "{all}");
        assert!(
            all.contains("10.13.13.2/32 overlaps 10.13.13.2/31"),
            "{all}"
        );
    }

    #[test]
    fn own_key_as_peer_is_refused() {
        let dir = tempdir("own");
        let own = write_key(&dir);
        let text = format!(
            "{}[[peer]]\nname = \"me\"\npublic_key = \"{}\"\nallowed_ips = \"10.13.13.5/32\"\n",
            base(&dir),
            encode_key(own.public_key().as_bytes())
        );
        let all = errors_of(&text, &dir)
            .iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("\n");
        assert!(all.contains("is the gateway's own public key"), "{all}");
    }

    #[test]
    fn syntax_errors_carry_a_line() {
        let dir = tempdir("syntax");
        write_key(&dir);
        let text = format!("{}listen_port = \"x\"\n", base(&dir));
        let errs = errors_of(&text, &dir);
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].line, 4, "{}", errs[0]);
    }

    #[test]
    fn unknown_fields_are_refused() {
        let dir = tempdir("unknown");
        write_key(&dir);
        let text = format!("{}lisen_port = 1\n", base(&dir));
        let errs = errors_of(&text, &dir);
        assert!(errs[0].to_string().contains("lisen_port"), "{}", errs[0]);
    }

    #[test]
    fn missing_key_file_is_named() {
        let dir = tempdir("nokey");
        let text =
            "[gateway]\nprivate_key_file = \"/nonexistent/k\"\naddress = \"10.13.13.1/24\"\n";
        let errs = errors_of(text, &dir);
        assert!(
            errs[0]
                .to_string()
                .contains(":2: gateway.private_key_file: cannot read /nonexistent/k"),
            "{}",
            errs[0]
        );
    }

    #[test]
    fn scope_is_read_inline_and_from_peers_dir() {
        let dir = tempdir("scope");
        write_key(&dir);
        std::fs::create_dir_all(dir.join("peers.d")).unwrap();
        std::fs::write(
            dir.join("peers.d/bob.toml"),
            format!("[[peer]]\nname = \"bob\"\npublic_key = \"{}\"\nallowed_ips = [\"10.13.13.3/32\"]\nscope = {{ namespace = [\"team-b\", \"team-c\"], cluster = \"prod\" }}\n", peer_key()),
        )
        .unwrap();
        let text = format!(
            "{}peers_dir = \"peers.d\"\n[[peer]]\nname = \"alice\"\npublic_key = \"{}\"\nallowed_ips = [\"10.13.13.2/32\"]\nscope = {{ namespace = \"team-a\" }}\n",
            base(&dir),
            peer_key()
        );
        let cfg = parse(&dir.join("p.toml"), &text).unwrap();
        let scope_of = |name: &str| {
            cfg.peers
                .iter()
                .find(|p| p.name == name)
                .and_then(|p| p.scope.as_ref())
                .map(|s| s.to_string())
        };
        assert_eq!(scope_of("alice").as_deref(), Some(r#"namespace="team-a""#));
        assert_eq!(
            scope_of("bob").as_deref(),
            Some(r#"cluster="prod",namespace=~"team-b|team-c""#)
        );
    }

    #[test]
    fn bad_scopes_are_refused_with_file_line_and_field() {
        let dir = tempdir("badscope");
        write_key(&dir);
        let peer = |extra: &str| {
            format!(
                "{}[[peer]]\nname = \"alice\"\npublic_key = \"{}\"\nallowed_ips = [\"10.13.13.2/32\"]\n{extra}\n",
                base(&dir),
                peer_key()
            )
        };
        let cases = [
            (r#"scope = { namespace = "" }"#, "empty value"),
            (
                r#"scope = { "team.name" = "a" }"#,
                "not a valid Prometheus label name",
            ),
            (r#"scope = {}"#, "is empty"),
            (
                "role = \"admin\"\nscope = { namespace = \"team-a\" }",
                "admin peer cannot be scoped",
            ),
        ];
        for (extra, want) in cases {
            let errs = errors_of(&peer(extra), &dir);
            assert_eq!(errs.len(), 1, "{extra}: {errs:?}");
            let e = errs[0].to_string();
            assert!(e.contains("peer \"alice\".scope: "), "{e}");
            assert!(e.contains(want), "{extra}: {e}");
            assert!(
                e.starts_with(&format!("{}:", dir.join("p.toml").display())),
                "{e}"
            );
            assert!(errs[0].line >= 4, "{e}");
        }
    }

    #[test]
    fn peers_dir_is_merged_and_its_errors_name_its_files() {
        let dir = tempdir("peersdir");
        write_key(&dir);
        std::fs::create_dir_all(dir.join("peers.d")).unwrap();
        std::fs::write(
            dir.join("peers.d/bob.toml"),
            format!("[[peer]]\nname = \"bob\"\npublic_key = \"{}\"\nallowed_ips = [\"10.13.13.3/32\"]\nrole = \"admin\"\n", peer_key()),
        )
        .unwrap();
        let text = format!("{}peers_dir = \"peers.d\"\n", base(&dir));
        let cfg = parse(&dir.join("p.toml"), &text).unwrap();
        assert_eq!(cfg.peers.len(), 1);
        assert_eq!(cfg.peers[0].role, Role::Admin);

        std::fs::write(
            dir.join("peers.d/carol.toml"),
            "[[peer]]\nname = \"carol\"\nrole = \"root\"\n",
        )
        .unwrap();
        let all = errors_of(&text, &dir)
            .iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("\n");
        assert!(all.contains("carol.toml:"), "{all}");
        assert!(
            all.contains("\"root\" is not a role") || all.contains("`root` is not a role"),
            "{all}"
        );
    }

    #[test]
    fn nested_networks_of_different_peers_overlap() {
        let dir = tempdir("nested");
        write_key(&dir);
        let text = format!(
            "{}[[peer]]\nname = \"a\"\npublic_key = \"{}\"\nallowed_ips = [\"10.13.13.16/28\"]\n[[peer]]\nname = \"b\"\npublic_key = \"{}\"\nallowed_ips = [\"10.13.13.20/32\"]\n[[peer]]\nname = \"c\"\npublic_key = \"{}\"\nallowed_ips = [\"10.13.13.40/32\"]\n",
            base(&dir),
            peer_key(),
            peer_key(),
            peer_key()
        );
        let errs = errors_of(&text, &dir);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(
            errs[0]
                .to_string()
                .contains("peer \"b\".allowed_ips: 10.13.13.20/32 overlaps 10.13.13.16/28"),
            "{}",
            errs[0]
        );
    }

    #[test]
    fn the_shipped_example_config_validates() {
        let dir = tempdir("example");
        write_key(&dir);
        let text = include_str!("../config/promgate.example.toml")
            .replace(
                "/etc/promgate/key/private.key",
                &dir.join("private.key").display().to_string(),
            )
            .replace("peers_dir = \"/etc/promgate/peers.d\"", "");
        let cfg = parse(&dir.join("promgate.toml"), &text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cfg.peers.len(), 3);
        let scopes: Vec<_> = cfg
            .peers
            .iter()
            .map(|p| p.scope.as_ref().map(|s| s.to_string()))
            .collect();
        assert_eq!(
            scopes,
            [
                None,
                Some(r#"namespace="team-a""#.to_string()),
                Some(r#"cluster="prod",namespace=~"team-b|team-b-batch""#.to_string())
            ]
        );
        assert_eq!(cfg.gateway.upstream_timeout, Duration::from_secs(120));
        assert_eq!(
            cfg.admin.upstream_unready_after,
            Some(Duration::from_secs(60))
        );
    }
}
