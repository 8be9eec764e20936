//! Arbitrary TOML into the config parser and validation, and `peer add`
//! edits of arbitrary existing config and peers files.
//!
//! Invariants: parsing returns errors, never panics; when a file parses,
//! `peer add` either refuses and leaves it byte for byte as it was, or
//! writes a file that parses again and holds the new peer.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use promgate::config::{self, Role};
use promgate::cli::onboarding::{AddPeer, add_peer};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

#[derive(Debug, Arbitrary)]
struct Input {
    /// 0: the text alone; 1: after a valid [gateway] table; 2: as a
    /// peers_dir file next to a valid main config.
    mode: u8,
    text: String,
    name: String,
    ip: Option<[u8; 4]>,
}

/// One scratch directory per process; every file the target reads or
/// writes is inside it.
fn scratch() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("promgate-fuzz-config-{}", std::process::id()));
        std::fs::create_dir_all(d.join("peers.d")).expect("scratch dir");
        std::fs::write(
            d.join("private.key"),
            format!("{}\n", promgate_core::keys::encode_key(&[7; 32])),
        )
        .expect("key file");
        d
    })
}

fn head(dir: &Path, peers_dir: bool) -> String {
    let mut s = format!(
        "[gateway]\nprivate_key_file = \"{}/private.key\"\naddress = \"10.13.13.1/24\"\n\
         upstream = \"http://127.0.0.1:9090\"\nendpoint = \"vpn.example.com:51820\"\n",
        dir.display()
    );
    if peers_dir {
        s.push_str(&format!("peers_dir = \"{}/peers.d\"\n", dir.display()));
    }
    s
}

/// Paths in fuzzed text could name any file (`/dev/zero`, a FIFO, a
/// directory of the machine): only text whose file references stay in the
/// scratch directory is handed to the parser.
fn stays_inside(text: &str, dir: &Path) -> bool {
    let Ok(value) = text.parse::<toml::Table>() else {
        return true; // the parser refuses it before touching any file
    };
    let Some(gw) = value.get("gateway").and_then(|g| g.as_table()) else {
        return true;
    };
    ["private_key_file", "peers_dir"]
        .iter()
        .all(|k| match gw.get(*k) {
            None => true,
            Some(toml::Value::String(p)) => {
                let p = Path::new(p);
                p.is_absolute()
                    && p.starts_with(dir)
                    && !p
                        .components()
                        .any(|c| matches!(c, std::path::Component::ParentDir))
            }
            Some(_) => true, // a type error, refused before any read
        })
}

fuzz_target!(|input: Input| {
    let dir = scratch();
    let peers_d = dir.join("peers.d");
    for e in std::fs::read_dir(&peers_d).into_iter().flatten().flatten() {
        let _ = std::fs::remove_file(e.path());
    }
    let main = dir.join("promgate.toml");
    let text = match input.mode % 3 {
        0 => input.text.clone(),
        1 => format!("{}{}", head(dir, false), input.text),
        _ => head(dir, true),
    };
    if !stays_inside(&text, dir) {
        return;
    }
    let mut peer_file = None;
    if input.mode % 3 == 2 {
        let _ = config::parse_peers_text(Path::new("fuzz.toml"), &input.text);
        let f = peers_d.join("existing.toml");
        std::fs::write(&f, &input.text).expect("write peers file");
        peer_file = Some(f);
    }
    std::fs::write(&main, &text).expect("write config");
    let Ok(before) = config::parse(&main, &text) else {
        return;
    };

    let req = AddPeer {
        name: input.name.chars().take(70).collect(),
        public_key: Some(promgate_core::keys::encode_key(&[0x42; 32])),
        ip: input.ip.map(|b| std::net::IpAddr::from(b)),
        endpoint: None,
        role: Role::Viewer,
    };
    let files_before: Vec<(PathBuf, Vec<u8>)> = [Some(main.clone()), peer_file.clone()]
        .into_iter()
        .flatten()
        .map(|f| {
            let b = std::fs::read(&f).expect("read back");
            (f, b)
        })
        .collect();
    match add_peer(&main, &req) {
        Ok(added) => {
            let after = config::load(&main).unwrap_or_else(|e| {
                panic!(
                    "peer add wrote {} that no longer parses: {e}",
                    added.written.display()
                )
            });
            assert_eq!(
                after.peers.len(),
                before.peers.len() + 1,
                "peer add lost or duplicated peers"
            );
            assert!(
                after.peers.iter().any(|p| p.name == req.name),
                "the new peer is missing"
            );
            for (f, b) in &files_before {
                if *f != added.written {
                    assert_eq!(
                        &std::fs::read(f).expect("read back"),
                        b,
                        "peer add changed {}",
                        f.display()
                    );
                }
            }
        }
        Err(_) => {
            for (f, b) in &files_before {
                assert_eq!(
                    &std::fs::read(f).expect("read back"),
                    b,
                    "a refused peer add changed {}",
                    f.display()
                );
            }
        }
    }
});
