//! `promgate peer add | remove | list`: edit the peer set on disk and hand
//! out client configs.
//!
//! Edits are validated as a whole config before anything is written, and
//! written atomically (`atomic_write`), so the watching gateway never reads
//! a half-written file. With `peers_dir` each peer is its own file;
//! otherwise the `[[peer]]` table is appended to or removed from the main
//! config with `toml_edit`, which keeps comments and layout. The client
//! config handed out is rendered and checked in `client`.

use crate::config::{self, Config, ConfigErrors, EndpointError, Role};
use ipnet::IpNet;
use promgate_core::keys::{KeyError, PrivateKey, decode_key, encode_key};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

mod atomic_write;
mod client;
#[cfg(test)]
mod tests;

pub use self::atomic_write::FileError;
pub(crate) use self::atomic_write::io;
use self::atomic_write::write_atomically;
pub(crate) use self::client::{PRIVATE_KEY_PLACEHOLDER, client_config, qr_png, qr_terminal};

/// Why `peer add`, `peer remove` or `peer list` changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum OnboardingError {
    #[error("peer name \"{}\": use 1 to 64 letters, digits, '.', '_' or '-', not starting with '.'", .name.escape_debug())]
    InvalidName { name: String },
    /// `flag` is where the endpoint came from: `--endpoint`, or `endpoint`.
    #[error("{flag}: {reason}")]
    Endpoint {
        flag: &'static str,
        reason: EndpointError,
    },
    #[error("--public-key: the key {0}")]
    PublicKey(KeyError),
    /// The config as it is on disk does not validate.
    #[error("{} is not valid:\n{errors}", .path.display())]
    InvalidConfig { path: PathBuf, errors: ConfigErrors },
    /// The config as it would be after the edit does not validate.
    #[error("{0}")]
    EditRefused(ConfigErrors),
    #[error("a peer named \"{name}\" already exists")]
    PeerExists { name: String },
    #[error("no peer named \"{name}\"")]
    NoSuchPeer { name: String },
    #[error("the gateway has no tunnel address")]
    NoGatewayAddress,
    #[error("no free address left in the gateway's prefix; pass --ip")]
    NoFreeAddress,
    #[error("no endpoint: set `endpoint = \"host:port\"` in [gateway] or pass --endpoint")]
    NoEndpoint,
    #[error("{} already exists", .path.display())]
    FileExists { path: PathBuf },
    #[error("parsing {}", .path.display())]
    Unparsable {
        path: PathBuf,
        #[source]
        source: toml_edit::TomlError,
    },
    #[error("{}: no [[peer]] tables", .path.display())]
    NoPeerTables { path: PathBuf },
    #[error(transparent)]
    File(#[from] FileError),
    #[error("renaming {} to {}", .from.display(), .to.display())]
    Rename {
        from: PathBuf,
        to: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the {what} holds characters that cannot go into a client config")]
    UnsafeClientConfig { what: &'static str },
    #[error("the client config does not fit in a QR code")]
    QrTooLarge(#[source] qrcode::types::QrError),
    #[error("encoding the QR code")]
    QrEncoding(#[source] image::ImageError),
}

type Result<T, E = OnboardingError> = std::result::Result<T, E>;

/// What `peer add` needs.
pub struct AddPeer {
    pub name: String,
    pub public_key: Option<String>,
    pub ip: Option<IpAddr>,
    pub endpoint: Option<String>,
    pub role: Role,
}

/// The result of `peer add`: the client config and where the peer went.
pub struct Added {
    pub client_config: String,
    pub written: PathBuf,
}

/// Adds a peer and returns the client config to hand to its owner.
pub fn add_peer(config_path: &Path, req: &AddPeer) -> Result<Added> {
    // A leading '.' would make a hidden file in peers_dir, which the
    // gateway skips: the peer would be reported added and never apply.
    if !config::valid_peer_name(&req.name) || req.name.starts_with('.') {
        return Err(OnboardingError::InvalidName {
            name: req.name.clone(),
        });
    }
    if let Some(e) = &req.endpoint {
        config::check_endpoint(e).map_err(|reason| OnboardingError::Endpoint {
            flag: "--endpoint",
            reason,
        })?;
    }
    let cfg = load(config_path)?;
    if cfg.peers.iter().any(|p| p.name == req.name) {
        return Err(OnboardingError::PeerExists {
            name: req.name.clone(),
        });
    }
    let (client_key, public_key) = client_keys(req.public_key.as_deref())?;
    let gateway_net = *cfg
        .gateway
        .addresses
        .first()
        .ok_or(OnboardingError::NoGatewayAddress)?;
    let ip = match req.ip {
        Some(ip) => ip,
        None => next_free_address(&cfg, gateway_net).ok_or(OnboardingError::NoFreeAddress)?,
    };
    let host = IpNet::from(ip);
    let endpoint = req
        .endpoint
        .clone()
        .or_else(|| cfg.gateway.endpoint.clone())
        .ok_or(OnboardingError::NoEndpoint)?;

    let entry = peer_toml(&req.name, &public_key, host, req.role);
    let written = write_peer_entry(config_path, &cfg, &req.name, &entry)?;

    let gateway_public = encode_key(cfg.gateway.private_key.public_key().as_bytes());
    let private = client_key
        .map(|k| k.to_base64())
        .unwrap_or_else(|| PRIVATE_KEY_PLACEHOLDER.to_string());
    let gateway_hosts: Vec<IpNet> = cfg
        .gateway
        .addresses
        .iter()
        .map(|n| IpNet::from(n.addr()))
        .collect();
    let client_config = client_config(&private, host, &gateway_public, &endpoint, &gateway_hosts)?;
    Ok(Added {
        client_config,
        written,
    })
}

/// The client's key pair when promgate makes it, or only the public key
/// the client gave (`--public-key`): then promgate never sees the private one.
fn client_keys(given: Option<&str>) -> Result<(Option<PrivateKey>, String)> {
    match given {
        Some(k) => {
            let bytes = decode_key(k).map_err(OnboardingError::PublicKey)?;
            Ok((None, encode_key(&bytes)))
        }
        None => {
            let k = PrivateKey::generate();
            let public = encode_key(k.public_key().as_bytes());
            Ok((Some(k), public))
        }
    }
}

/// Writes the new `[[peer]]` table: as its own file in `peers_dir`, or
/// appended to the main config. Returns the file written.
fn write_peer_entry(config_path: &Path, cfg: &Config, name: &str, entry: &str) -> Result<PathBuf> {
    match &cfg.gateway.peers_dir {
        Some(dir) => {
            let file = dir.join(format!("{name}.toml"));
            if file.exists() {
                return Err(OnboardingError::FileExists { path: file });
            }
            validate_with(config_path, Some((&file, entry)), None)?;
            write_atomically(&file, entry)?;
            Ok(file)
        }
        None => {
            let mut new =
                std::fs::read_to_string(config_path).map_err(io("reading", config_path))?;
            if !new.ends_with('\n') {
                new.push('\n');
            }
            new.push('\n');
            new.push_str(entry);
            validate_with(config_path, None, Some(&new))?;
            write_atomically(config_path, &new)?;
            Ok(config_path.to_path_buf())
        }
    }
}

/// A `[[peer]]` table as `peer add` and the quickstart write it. `name`
/// must pass [`config::valid_peer_name`] and `public_key` be base64, so
/// neither needs escaping between quotes.
pub(crate) fn peer_toml(name: &str, public_key: &str, address: IpNet, role: Role) -> String {
    format!(
        "[[peer]]\nname = \"{name}\"\npublic_key = \"{public_key}\"\nallowed_ips = [\"{address}\"]\nrole = \"{}\"\n",
        role.as_str()
    )
}

/// Removes a peer by name from the peers directory or the main config.
pub(crate) fn remove_peer(config_path: &Path, name: &str) -> Result<PathBuf> {
    let cfg = load(config_path)?;
    let Some(peer) = cfg.peers.iter().find(|p| p.name == name) else {
        return Err(OnboardingError::NoSuchPeer { name: name.into() });
    };
    let file = peer.origin.file.clone();
    let text = std::fs::read_to_string(&file).map_err(io("reading", &file))?;
    let mut doc: toml_edit::DocumentMut =
        text.parse().map_err(|source| OnboardingError::Unparsable {
            path: file.clone(),
            source,
        })?;
    let remaining = {
        let Some(peers) = doc.get_mut("peer").and_then(|p| p.as_array_of_tables_mut()) else {
            return Err(OnboardingError::NoPeerTables { path: file });
        };
        peers.retain(|t| t.get("name").and_then(|n| n.as_str()) != Some(name));
        peers.len()
    };
    if remaining == 0 && file != config_path {
        // The peer's own file in peers_dir: remove it rather than leave it empty.
        std::fs::remove_file(&file).map_err(io("removing", &file))?;
    } else {
        write_atomically(&file, &doc.to_string())?;
    }
    Ok(file)
}

/// One `peer list` row: name, addresses, role, scope (selector form).
pub(crate) type PeerListRow = (String, String, Role, Option<String>);

/// Names, addresses, roles and scopes from the config, for `peer list`.
pub(crate) fn list_peers(config_path: &Path) -> Result<Vec<PeerListRow>> {
    let cfg = load(config_path)?;
    Ok(cfg
        .peers
        .iter()
        .map(|p| {
            (
                p.name.clone(),
                p.allowed_ips
                    .iter()
                    .map(|n| n.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                p.role,
                p.scope.as_ref().map(ToString::to_string),
            )
        })
        .collect())
}

fn load(path: &Path) -> Result<Config> {
    config::load(path).map_err(|errors| OnboardingError::InvalidConfig {
        path: path.to_path_buf(),
        errors,
    })
}

/// Validates the config as it would be after the edit, without touching disk.
fn validate_with(
    config_path: &Path,
    extra_file: Option<(&Path, &str)>,
    new_main: Option<&str>,
) -> Result<()> {
    let main = match new_main {
        Some(t) => t.to_string(),
        None => std::fs::read_to_string(config_path).map_err(io("reading", config_path))?,
    };
    let cfg = config::parse(config_path, &main).map_err(OnboardingError::EditRefused)?;
    if let Some((file, text)) = extra_file {
        let more = config::parse_peers_text(file, text).map_err(OnboardingError::EditRefused)?;
        let mut all = cfg.peers.clone();
        all.extend(more);
        let errors = config::cross_check_peers(&all, &cfg.gateway);
        if !errors.is_empty() {
            return Err(OnboardingError::EditRefused(ConfigErrors(errors)));
        }
    }
    Ok(())
}

/// The first host address in the gateway's prefix that no peer owns.
fn next_free_address(cfg: &Config, net: IpNet) -> Option<IpAddr> {
    let taken = |ip: IpAddr| {
        ip == net.addr()
            || cfg
                .peers
                .iter()
                .any(|p| p.allowed_ips.iter().any(|n| n.contains(&ip)))
    };
    // IPv6 prefixes are huge; 65,536 candidates are more than any gateway needs.
    net.hosts().take(65_536).find(|ip| !taken(*ip))
}
