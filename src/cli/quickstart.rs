//! First run with no config: create a key, a config and a first peer in a
//! data directory, and tell the user what to do next.
//!
//! The quickstart forwards to a local Prometheus at 127.0.0.1:9090 and keeps
//! the admin server on loopback. On later runs it reuses what it created.

use crate::cli::onboarding::{FileError, client_config, io, peer_toml, qr_terminal};
use crate::config::defaults::{DEFAULT_ADMIN_PORT, DEFAULT_LISTEN_PORT};
use ipnet::IpNet;
use promgate_core::keys::{PrivateKey, encode_key};
use promgate_core::role::Role;
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, UdpSocket};
use std::path::{Path, PathBuf};

/// Why the quickstart could not set up its data directory.
#[derive(Debug, thiserror::Error)]
pub(crate) enum QuickstartError {
    #[error(transparent)]
    File(#[from] FileError),
    #[error("the first peer's client config: {0}")]
    ClientConfig(#[from] crate::cli::onboarding::OnboardingError),
}

/// The gateway's tunnel address, with the prefix peers are allocated from.
const GATEWAY_ADDRESS: &str = "10.13.13.1/24";
/// The first peer's tunnel address, the first one after the gateway's.
const FIRST_PEER_ADDRESS: &str = "10.13.13.2/32";
const FIRST_PEER_NAME: &str = "first-peer";
/// A Prometheus on this host, at its own default port.
const UPSTREAM: &str = "http://127.0.0.1:9090";

/// Returns the config path in `dir`, creating everything on the first run.
pub(crate) fn prepare(dir: &Path) -> Result<PathBuf, QuickstartError> {
    let config = dir.join("promgate.toml");
    if config.exists() {
        eprintln!("promgate: using the quickstart config {}", config.display());
        return Ok(config);
    }
    std::fs::create_dir_all(dir.join("peers.d")).map_err(io("creating", dir))?;
    let gateway_key = PrivateKey::generate();
    write_private(
        &dir.join("private.key"),
        &format!("{}\n", gateway_key.to_base64()),
    )?;

    let endpoint = format!("{}:{DEFAULT_LISTEN_PORT}", local_address());
    std::fs::write(
        &config,
        format!(
            r#"# Created by the promgate quickstart. See config/promgate.example.toml for every field.
[gateway]
private_key_file = "private.key"
listen_port = {DEFAULT_LISTEN_PORT}
address = "{GATEWAY_ADDRESS}"
upstream = "{UPSTREAM}"
http_ports = [80]
endpoint = "{endpoint}"
peers_dir = "peers.d"

[admin]
listen = "127.0.0.1:{DEFAULT_ADMIN_PORT}"
"#
        ),
    )
    .map_err(io("writing", &config))?;

    let gateway_net: IpNet = GATEWAY_ADDRESS.parse().expect("constant address");
    let peer_address: IpNet = FIRST_PEER_ADDRESS.parse().expect("constant address");
    let client_key = PrivateKey::generate();
    let peer_file = dir.join(format!("peers.d/{FIRST_PEER_NAME}.toml"));
    std::fs::write(
        &peer_file,
        peer_toml(
            FIRST_PEER_NAME,
            &encode_key(client_key.public_key().as_bytes()),
            peer_address,
            Role::Admin,
        ),
    )
    .map_err(io("writing", &peer_file))?;
    let client_conf = client_config(
        &client_key.to_base64(),
        peer_address,
        &encode_key(gateway_key.public_key().as_bytes()),
        &endpoint,
        &[IpNet::from(gateway_net.addr())],
    )?;
    let client_path = dir.join(format!("{FIRST_PEER_NAME}.conf"));
    write_private(&client_path, &client_conf)?;

    eprintln!(
        "\npromgate quickstart: created {dir}/ with the gateway key, promgate.toml and a first peer.\n\
         \n  1. Start Prometheus on this host at 127.0.0.1:9090 (e.g. `apt install prometheus`).\n\
         \n  2. On the client, bring the tunnel up with {client}:\n       sudo wg-quick up {client}\n     (or scan the QR code below with the WireGuard app).\n\
         \n  3. ping {gateway}, then open http://{gateway}/ in a browser.\n\
         \n  Add more peers as files in {dir}/peers.d/; they apply without a restart.\n",
        dir = dir.display(),
        client = client_path.display(),
        gateway = gateway_net.addr(),
    );
    if let Some(qr) = qr_terminal(&client_conf) {
        eprintln!("{qr}\n");
    }
    Ok(config)
}

fn write_private(path: &Path, contents: &str) -> Result<(), QuickstartError> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io("creating", path))?;
    f.write_all(contents.as_bytes())
        .map_err(io("writing", path))?;
    Ok(())
}

/// The address other hosts most likely reach us at: the source address the
/// kernel would pick for a public destination. `connect` on UDP sends nothing.
fn local_address() -> IpAddr {
    UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| {
            s.connect("192.0.2.1:9")?;
            s.local_addr()
        })
        .map(|a| a.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_quickstart_writes_a_valid_config_with_one_admin_peer_and_reuses_it() {
        let dir = std::env::temp_dir().join(format!("promgate-quickstart-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = prepare(&dir).unwrap();
        let cfg = crate::config::load(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cfg.gateway.listen_port, DEFAULT_LISTEN_PORT);
        assert_eq!(cfg.peers.len(), 1);
        assert_eq!(cfg.peers[0].name, FIRST_PEER_NAME);
        assert_eq!(cfg.peers[0].role, Role::Admin);
        let client = std::fs::read_to_string(dir.join("first-peer.conf")).unwrap();
        assert!(client.contains("Address = 10.13.13.2/32"), "{client}");
        assert!(client.contains("AllowedIPs = 10.13.13.1/32"), "{client}");
        // A second run keeps what the first created.
        let key = std::fs::read(dir.join("private.key")).unwrap();
        assert_eq!(prepare(&dir).unwrap(), path);
        assert_eq!(std::fs::read(dir.join("private.key")).unwrap(), key);
    }
}
