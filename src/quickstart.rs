//! First run with no config: create a key, a config and a first peer in a
//! data directory, and tell the user what to do next.
//!
//! The quickstart forwards to a local Prometheus at 127.0.0.1:9090 and keeps
//! the admin server on loopback. On later runs it reuses what it created.

use crate::keys::{PrivateKey, encode_key};
use anyhow::Context as _;
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, UdpSocket};
use std::path::{Path, PathBuf};

const PORT: u16 = 51820;

/// Returns the config path in `dir`, creating everything on the first run.
pub fn prepare(dir: &Path) -> anyhow::Result<PathBuf> {
    let config = dir.join("promgate.toml");
    if config.exists() {
        eprintln!("promgate: using the quickstart config {}", config.display());
        return Ok(config);
    }
    std::fs::create_dir_all(dir.join("peers.d"))
        .with_context(|| format!("creating {}", dir.display()))?;
    let gateway_key = PrivateKey::generate();
    write_private(
        &dir.join("private.key"),
        &format!("{}\n", gateway_key.to_base64()),
    )?;

    let endpoint = format!("{}:{PORT}", local_address());
    std::fs::write(
        &config,
        format!(
            r#"# Created by the promgate quickstart. See config/promgate.example.toml for every field.
[gateway]
private_key_file = "private.key"
listen_port = {PORT}
address = "10.13.13.1/24"
upstream = "http://127.0.0.1:9090"
http_ports = [80]
endpoint = "{endpoint}"
peers_dir = "peers.d"

[admin]
listen = "127.0.0.1:9586"
"#
        ),
    )
    .with_context(|| format!("writing {}", config.display()))?;

    let client_key = PrivateKey::generate();
    std::fs::write(
        dir.join("peers.d/first-peer.toml"),
        format!(
            "[[peer]]\nname = \"first-peer\"\npublic_key = \"{}\"\nallowed_ips = [\"10.13.13.2/32\"]\nrole = \"admin\"\n",
            encode_key(client_key.public_key().as_bytes())
        ),
    )?;
    let client_conf = crate::onboarding::client_config(
        &client_key.to_base64(),
        "10.13.13.2/32".parse().expect("constant address"),
        &encode_key(gateway_key.public_key().as_bytes()),
        &endpoint,
        &["10.13.13.1/32".parse().expect("constant address")],
    )?;
    let client_path = dir.join("first-peer.conf");
    write_private(&client_path, &client_conf)?;

    eprintln!(
        "\npromgate quickstart: created {dir}/ with the gateway key, promgate.toml and a first peer.\n\
         \n  1. Start Prometheus on this host at 127.0.0.1:9090 (e.g. `apt install prometheus`).\n\
         \n  2. On the client, bring the tunnel up with {client}:\n       sudo wg-quick up {client}\n     (or scan the QR code below with the WireGuard app).\n\
         \n  3. ping 10.13.13.1, then open http://10.13.13.1/ in a browser.\n\
         \n  Add more peers as files in {dir}/peers.d/; they apply without a restart.\n",
        dir = dir.display(),
        client = client_path.display()
    );
    if let Some(qr) = crate::onboarding::qr_terminal(&client_conf) {
        eprintln!("{qr}\n");
    }
    Ok(config)
}

fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(contents.as_bytes())?;
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
