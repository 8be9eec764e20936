//! The command line: `serve`, `check`, `status`, `peer`, `genkey`, `pubkey`.
//! Peer onboarding ([`onboarding`]) and the quick start that `serve` runs
//! without a config ([`quickstart`]) live here too.

pub mod onboarding;
pub mod quickstart;

use crate::config::{self, DEFAULT_CONFIG_PATH};
use crate::ops::telemetry::{LogFormat, init_logging};
use anyhow::Context as _;
use clap::{Parser, Subcommand};
use promgate_core::keys::{PrivateKey, encode_key};
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "promgate",
    version,
    about = "Userspace WireGuard gateway to a cluster-internal Prometheus"
)]
pub(crate) struct Cli {
    /// Log format: human-readable text, or one JSON object per line.
    #[arg(
        long,
        global = true,
        env = "PROMGATE_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway. With no config anywhere, runs a quickstart in ./promgate-data.
    Serve {
        /// Config file [default: $PROMGATE_CONFIG or /etc/promgate/promgate.toml].
        #[arg(long, env = "PROMGATE_CONFIG")]
        config: Option<PathBuf>,
        /// Time open connections get to finish after SIGTERM.
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        grace: Duration,
        /// Where the quickstart keeps its key and configs.
        #[arg(long, default_value = "promgate-data")]
        data_dir: PathBuf,
        /// Worker threads for the admin server, the upstream probe and
        /// reloads. The tunnel's data path runs on a thread of its own.
        #[arg(long, env = "PROMGATE_THREADS", default_value_t = 1)]
        threads: usize,
    },
    /// Validate a config and its peers; print every problem; exit 1 on error.
    Check {
        #[arg(long, env = "PROMGATE_CONFIG", default_value = DEFAULT_CONFIG_PATH)]
        config: PathBuf,
    },
    /// Show peers, endpoints, handshakes and transfer of the running gateway.
    Status {
        #[arg(long, env = "PROMGATE_CONFIG", default_value = DEFAULT_CONFIG_PATH)]
        config: PathBuf,
    },
    /// Add, remove or list peers.
    #[command(subcommand)]
    Peer(PeerCommand),
    /// Print a new private key (like `wg genkey`).
    Genkey,
    /// Read a private key on stdin, print its public key (like `wg pubkey`).
    Pubkey,
}

#[derive(Subcommand)]
enum PeerCommand {
    /// Add a peer, print its client config (wg-quick format) and a QR code.
    Add {
        name: String,
        /// The client's public key. Recommended: the client keeps its private
        /// key, and the printed config has a placeholder for it.
        #[arg(long)]
        public_key: Option<String>,
        /// The peer's tunnel address [default: the next free one].
        #[arg(long)]
        ip: Option<std::net::IpAddr>,
        /// host:port clients connect to [default: `endpoint` in the config].
        #[arg(long)]
        endpoint: Option<String>,
        #[arg(long, value_enum, default_value = "viewer")]
        role: RoleArg,
        /// Write the QR code to this PNG file instead of the terminal.
        #[arg(long)]
        qr_png: Option<PathBuf>,
        /// Print no QR code.
        #[arg(long)]
        no_qr: bool,
        #[arg(long, env = "PROMGATE_CONFIG", default_value = DEFAULT_CONFIG_PATH)]
        config: PathBuf,
    },
    /// Remove a peer; a running gateway cuts it off on reload.
    Remove {
        name: String,
        #[arg(long, env = "PROMGATE_CONFIG", default_value = DEFAULT_CONFIG_PATH)]
        config: PathBuf,
    },
    /// List peers, with last handshake and transfer from the running gateway.
    List {
        #[arg(long, env = "PROMGATE_CONFIG", default_value = DEFAULT_CONFIG_PATH)]
        config: PathBuf,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum RoleArg {
    Viewer,
    /// A viewer who may also create and expire Alertmanager silences.
    Responder,
    Admin,
}

/// Entry point for `main`; returns the process exit code.
pub fn main() -> anyhow::Result<std::process::ExitCode> {
    let cli = Cli::parse();
    // Written out when main returns, early or not.
    let _logs = init_logging(cli.log_format);
    match cli.command {
        Command::Peer(cmd) => peer_command(cmd)?,
        Command::Genkey => {
            println!("{}", PrivateKey::generate().to_base64());
        }
        Command::Pubkey => print_public_key()?,
        Command::Check { config } => {
            if !check(&config) {
                return Ok(std::process::ExitCode::FAILURE);
            }
        }
        Command::Status { config } => print_status(&config)?,
        Command::Serve {
            config,
            grace,
            data_dir,
            threads,
        } => serve(config, grace, &data_dir, threads)?,
    }
    std::io::stdout().flush().ok();
    Ok(std::process::ExitCode::SUCCESS)
}

/// `pubkey`: the public key of the private key on stdin.
fn print_public_key() -> anyhow::Result<()> {
    let mut input = String::new();
    std::io::stdin()
        .read_to_string(&mut input)
        .context("reading stdin")?;
    let key = PrivateKey::from_base64(&input)
        .map_err(|e| anyhow::anyhow!("stdin: the private key {e}"))?;
    println!("{}", encode_key(key.public_key().as_bytes()));
    Ok(())
}

/// `check`: validates a config and prints every problem; false if any.
fn check(config: &Path) -> bool {
    match config::load(config) {
        Ok(cfg) => {
            println!("{}: OK ({} peers)", config.display(), cfg.peers.len());
            true
        }
        Err(errors) => {
            for e in &errors.0 {
                eprintln!("{e}");
            }
            eprintln!("{}: {} problem(s)", config.display(), errors.0.len());
            false
        }
    }
}

/// `status`: what the running gateway's control endpoint reports.
fn print_status(config: &Path) -> anyhow::Result<()> {
    let addr = config::load(config)
        .ok()
        .and_then(|c| c.admin.control_listen)
        .unwrap_or(config::DEFAULT_CONTROL_LISTEN);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let peers = rt.block_on(crate::ops::control::fetch(addr))?;
    // A gateway older than the upstreams list has no `/upstreams`: show
    // the peers all the same.
    let upstreams = rt
        .block_on(crate::ops::control::fetch_upstreams(addr))
        .unwrap_or_default();
    print!("{}", format_upstreams(&upstreams));
    print!("{}", format_status(&peers));
    Ok(())
}

/// `serve`: loads the config (or prepares the quick start's when there
/// is none) and runs the gateway until it is told to stop.
fn serve(
    config: Option<PathBuf>,
    grace: Duration,
    data_dir: &Path,
    threads: usize,
) -> anyhow::Result<()> {
    let path = match config {
        Some(p) => p,
        None if Path::new(DEFAULT_CONFIG_PATH).exists() => PathBuf::from(DEFAULT_CONFIG_PATH),
        None => crate::cli::quickstart::prepare(data_dir)?,
    };
    let cfg = match config::load(&path) {
        Ok(c) => c,
        Err(errors) => {
            for e in &errors.0 {
                eprintln!("{e}");
            }
            anyhow::bail!(
                "{}: {} problem(s); nothing was started",
                path.display(),
                errors.0.len()
            );
        }
    };
    let rt = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()?
    };
    rt.block_on(crate::shell::serve::serve(cfg, grace))?;
    Ok(())
}

fn peer_command(cmd: PeerCommand) -> anyhow::Result<()> {
    match cmd {
        PeerCommand::Add {
            name,
            public_key,
            ip,
            endpoint,
            role,
            qr_png,
            no_qr,
            config,
        } => {
            let role = match role {
                RoleArg::Viewer => crate::config::Role::Viewer,
                RoleArg::Responder => crate::config::Role::Responder,
                RoleArg::Admin => crate::config::Role::Admin,
            };
            let peer = onboarding::AddPeer {
                name,
                public_key,
                ip,
                endpoint,
                role,
            };
            add_peer(&config, &peer, qr_png.as_deref(), no_qr)
        }
        PeerCommand::Remove { name, config } => {
            let file = onboarding::remove_peer(&config, &name)?;
            eprintln!("promgate: removed peer \"{name}\" from {}", file.display());
            Ok(())
        }
        PeerCommand::List { config } => list_peers(&config),
    }
}

/// `peer add`: adds the peer, prints its client config, and shows the
/// config as a QR code in the terminal or writes it to `qr_png`.
fn add_peer(
    config: &Path,
    peer: &onboarding::AddPeer,
    qr_png: Option<&Path>,
    no_qr: bool,
) -> anyhow::Result<()> {
    let added = onboarding::add_peer(config, peer)?;
    print!("{}", added.client_config);
    eprintln!(
        "promgate: added peer \"{}\" to {}; a running gateway picks it up within a second",
        peer.name,
        added.written.display()
    );
    if let Some(png) = qr_png {
        onboarding::qr_png(&added.client_config, png)?;
        eprintln!("promgate: QR code written to {}", png.display());
    } else if !no_qr && let Some(qr) = onboarding::qr_terminal(&added.client_config) {
        eprintln!("{qr}");
    }
    Ok(())
}

/// `peer list`: the config's peers, with the running gateway's figures
/// when its control endpoint answers.
fn list_peers(config: &Path) -> anyhow::Result<()> {
    let peers = onboarding::list_peers(config)?;
    let live = live_status(config)?;
    let now = unix_now_secs();
    println!(
        "{:<24} {:<20} {:<7} {:>16} {:>12} {:>12}  SCOPE",
        "NAME", "ADDRESS", "ROLE", "LAST HANDSHAKE", "RECEIVED", "SENT"
    );
    for (name, addrs, role, scope) in peers {
        let status = live
            .as_ref()
            .and_then(|l| l.iter().find(|p| p.name == name));
        let (hs, rx, tx) = match status {
            Some(s) if s.last_handshake_unix > 0 => (
                format!("{}s ago", now.saturating_sub(s.last_handshake_unix)),
                human_bytes(s.rx_bytes),
                human_bytes(s.tx_bytes),
            ),
            Some(s) => (
                "never".into(),
                human_bytes(s.rx_bytes),
                human_bytes(s.tx_bytes),
            ),
            None => ("-".into(), "-".into(), "-".into()),
        };
        println!(
            "{name:<24} {addrs:<20} {:<7} {hs:>16} {rx:>12} {tx:>12}  {}",
            role.as_str(),
            scope.as_deref().unwrap_or("-")
        );
    }
    if live.is_none() {
        eprintln!(
            "promgate: the gateway is not running here (or its control endpoint is off): no live figures"
        );
    }
    Ok(())
}

/// The running gateway's view of its peers, if its control endpoint is
/// configured and answers.
fn live_status(config: &Path) -> anyhow::Result<Option<Vec<crate::ops::control::PeerStatus>>> {
    let addr = config::load(config)
        .ok()
        .and_then(|c| c.admin.control_listen);
    Ok(match addr {
        Some(a) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(crate::ops::control::fetch(a))
            .ok(),
        None => None,
    })
}

/// Seconds since the Unix epoch, for "handshake n s ago".
fn unix_now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// One line per upstream: its name, kind, URL and last probe.
fn format_upstreams(upstreams: &[crate::ops::control::UpstreamStatus]) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    for u in upstreams {
        let state = match u.up {
            Some(true) => "up",
            Some(false) => "down",
            None => "not probed yet",
        };
        let _ = writeln!(out, "upstream: {} ({}, {}): {state}", u.name, u.kind, u.url);
    }
    if !upstreams.is_empty() {
        out.push('\n');
    }
    out
}

fn format_status(peers: &[crate::ops::control::PeerStatus]) -> String {
    use std::fmt::Write as _;
    let now = unix_now_secs();
    let mut out = String::new();
    for p in peers {
        let _ = writeln!(out, "peer: {} ({})", p.public_key, p.name);
        if let Some(e) = &p.endpoint {
            let _ = writeln!(out, "  endpoint: {e}");
        }
        let _ = writeln!(out, "  allowed ips: {}", p.allowed_ips.join(", "));
        let _ = writeln!(out, "  role: {}", p.role);
        if let Some(scope) = &p.scope {
            let _ = writeln!(out, "  scope: {scope}");
        }
        if p.last_handshake_unix > 0 {
            let _ = writeln!(
                out,
                "  latest handshake: {} seconds ago",
                now.saturating_sub(p.last_handshake_unix)
            );
        }
        let _ = writeln!(
            out,
            "  transfer: {} received, {} sent\n",
            human_bytes(p.rx_bytes),
            human_bytes(p.tx_bytes)
        );
    }
    out
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i < UNITS.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.2} {}", UNITS[i])
    }
}
