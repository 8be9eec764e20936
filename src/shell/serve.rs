//! `promgate serve`: wires a validated config to sockets, tasks and signals.
//!
//! Order matters: the config is validated completely before anything binds;
//! the UDP socket is bound before readiness is reported; SIGTERM/SIGINT
//! stop accepting and drain within the grace period; SIGHUP or a change on
//! disk reloads the peer set, and a bad file is refused while the last good
//! set stays in force.

use crate::config::{self, Config};
use crate::ops::health::Health;
use crate::ops::telemetry::{PeerView, Telemetry};
use crate::shell::driver::{Command, Driver};
use crate::web::proxy::Proxy;
use promgate_core::keys::encode_key;
use promgate_core::stats::Stats;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// How often the config file and peers directory are checked for changes.
/// Polling (not inotify) sees Kubernetes' ConfigMap symlink swaps reliably.
pub const WATCH_INTERVAL: Duration = Duration::from_millis(500);

/// The sockets the gateway serves on, bound before [`run`] starts.
pub struct Sockets {
    pub udp: UdpSocket,
    pub admin: Option<TcpListener>,
    pub control: Option<TcpListener>,
}

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("binding {what} to {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("the tunnel driver stopped unexpectedly")]
    DriverStopped,
}

/// Binds every socket `config` asks for: the UDP port, the admin server
/// and the control endpoint.
pub async fn bind(config: &Config) -> Result<Sockets, ServeError> {
    let udp = bind_udp(config.gateway.listen_port).await?;
    let tcp = async |what, addr: Option<SocketAddr>| match addr {
        Some(addr) => TcpListener::bind(addr)
            .await
            .map(Some)
            .map_err(|source| ServeError::Bind { what, addr, source }),
        None => Ok(None),
    };
    Ok(Sockets {
        udp,
        admin: tcp("the admin server", config.admin.listen).await?,
        control: tcp("the control endpoint", config.admin.control_listen).await?,
    })
}

/// Binds, then runs the gateway until SIGTERM or SIGINT: the entry point of
/// `promgate serve`. `config` is already validated.
pub async fn serve(config: Config, grace: Duration) -> Result<(), ServeError> {
    let sockets = bind(&config).await?;
    run(config, sockets, grace, wait_for_stop_signal()).await
}

/// Runs the gateway on already bound sockets until `shutdown` completes,
/// then drains tunnel connections for at most `grace`. An error when the
/// tunnel driver stopped by itself (it could not use the socket, or it
/// panicked; its thread logged why).
pub async fn run(
    config: Config,
    sockets: Sockets,
    grace: Duration,
    shutdown_signal: impl std::future::Future<Output = ()>,
) -> Result<(), ServeError> {
    let stats = Arc::new(Stats::default());
    let health = Arc::new(Health::for_upstreams(
        &config.gateway.upstreams,
        config.admin.upstream_unready_after,
    ));
    let peer_view: PeerView = Arc::new(RwLock::new(Vec::new()));
    let telemetry = Telemetry::new(stats.clone(), peer_view.clone(), health.clone());
    let shutdown = CancellationToken::new();

    spawn_operations(
        &config,
        sockets.admin,
        sockets.control,
        &telemetry,
        &peer_view,
        &health,
        &shutdown,
    );
    // Deregistered here, registered again with the driver's runtime.
    let socket = sockets.udp.into_std().map_err(|source| ServeError::Bind {
        what: "the WireGuard UDP socket",
        addr: SocketAddr::from((Ipv4Addr::UNSPECIFIED, config.gateway.listen_port)),
        source,
    })?;
    let driver = Driver::new(
        &config.gateway.core_settings(),
        &config.peers,
        stats.clone(),
        proxy_for(&config, &telemetry, &stats),
        peer_view,
        grace,
    );
    log_start(&config);
    let (commands, command_rx) = mpsc::channel(8);
    let driver_done = spawn_driver_thread(driver, socket, command_rx, shutdown.clone());
    tokio::spawn(watch_and_reload(config, commands, stats, shutdown.clone()));
    wait_for_the_end(shutdown_signal, driver_done, shutdown).await
}

/// The admin server, the control endpoint and the upstream probe, on the
/// caller's runtime, until `shutdown`.
fn spawn_operations(
    config: &Config,
    admin: Option<TcpListener>,
    control: Option<TcpListener>,
    telemetry: &Telemetry,
    peer_view: &PeerView,
    health: &Arc<Health>,
    shutdown: &CancellationToken,
) {
    let control_addr = control
        .as_ref()
        .and_then(|l| l.local_addr().ok())
        .unwrap_or(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)));
    for (listener, router, what) in [
        (
            admin,
            telemetry.clone().router(),
            "admin server: /metrics /healthz /readyz",
        ),
        (
            control,
            crate::ops::control::router(peer_view.clone(), health.clone(), control_addr),
            "control endpoint",
        ),
    ] {
        if let Some(listener) = listener {
            if let Ok(addr) = listener.local_addr() {
                tracing::info!(%addr, "{what}");
            }
            tokio::spawn(crate::ops::admin_server::serve(
                listener,
                router,
                shutdown.clone(),
            ));
        }
    }
    for (number, upstream) in config.gateway.upstreams.iter().enumerate() {
        tokio::spawn(crate::ops::upstream_probe::run(
            number,
            upstream.clone(),
            health.clone(),
            shutdown.clone(),
        ));
    }
}

/// The HTTP proxy that serves every tunnel connection.
fn proxy_for(config: &Config, telemetry: &Telemetry, stats: &Arc<Stats>) -> Arc<Proxy> {
    Arc::new(
        Proxy::with_upstreams(
            &config.gateway.upstreams,
            config.gateway.identity_header.clone(),
            config.gateway.upstream_timeout,
            telemetry.http.clone(),
            stats.clone(),
            crate::web::host_check::HostCheck::new(&config.gateway),
        )
        .with_upstream_limit(config.gateway.max_upstream_requests),
    )
}

fn log_start(config: &Config) {
    tracing::info!(
        public_key = %encode_key(&config.gateway.private_key.public_key().to_bytes()),
        port = config.gateway.listen_port,
        addresses = ?config.gateway.addresses,
        peers = config.peers.len(),
        "promgate is up"
    );
    for u in &config.gateway.upstreams {
        tracing::info!(upstream = %u.name, kind = u.kind.as_str(), url = %u.url, tunnel_ports = ?u.ports, "serving upstream");
    }
}

/// Waits for the shutdown signal, then for the driver's drain. The driver
/// ending first is an error.
async fn wait_for_the_end(
    shutdown_signal: impl std::future::Future<Output = ()>,
    mut driver_done: oneshot::Receiver<()>,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    tokio::select! {
        _ = shutdown_signal => {}
        _ = &mut driver_done => {
            // The driver ended before shutdown: it could not use the UDP
            // socket, or it panicked (both logged by its thread). Exit so
            // that the orchestrator restarts the gateway rather than keep a
            // process that no longer serves the tunnel.
            tracing::error!("the tunnel driver stopped unexpectedly");
            shutdown.cancel();
            return Err(ServeError::DriverStopped);
        }
    }
    shutdown.cancel();
    let _ = driver_done.await;
    tracing::info!("stopped");
    Ok(())
}

/// Runs the driver on a thread of its own, under a single-threaded runtime:
/// the data path (datagrams, netstack, every connection's HTTP and upstream
/// I/O) then sleeps and wakes in one `epoll_wait` and never hands work to
/// another thread. The multi-threaded runtime's idle workers cost a futex
/// wake and a context switch per request, more than the request itself.
/// The admin server, the probe and reloads stay on the caller's runtime.
/// The receiver completes when the driver has stopped.
fn spawn_driver_thread(
    driver: Driver,
    socket: std::net::UdpSocket,
    commands: mpsc::Receiver<Command>,
    shutdown: CancellationToken,
) -> oneshot::Receiver<()> {
    let (done, done_rx) = oneshot::channel();
    let thread = std::thread::Builder::new()
        .name("promgate-driver".into())
        .spawn(move || {
            match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                // A spawned task, not block_on's own future: a task woken
                // from its own thread is queued in memory, while block_on's
                // future is woken through the reactor (a write and one more
                // epoll_wait per wake-up).
                Ok(rt) => match rt.block_on(rt.spawn(driver.run(socket, commands, shutdown))) {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::error!(error = %e, "the tunnel driver failed"),
                    Err(e) => tracing::error!(error = %e, "the tunnel driver panicked"),
                },
                Err(e) => tracing::error!(error = %e, "cannot start the driver's runtime"),
            }
            let _ = done.send(());
        });
    if let Err(e) = thread {
        tracing::error!(error = %e, "cannot start the driver thread");
    }
    done_rx
}

/// Socket buffers asked for: bursts of a few hundred datagrams must not
/// overflow them. The kernel caps this at net.core.{r,w}mem_max without
/// privileges; whatever it grants is fine, the driver backs off on a full
/// send buffer rather than dropping.
const UDP_SOCKET_BUFFER: usize = 4 << 20;

async fn bind_udp(port: u16) -> Result<UdpSocket, ServeError> {
    // Dual-stack first; fall back to IPv4 where IPv6 is disabled (common in pods).
    let socket = match UdpSocket::bind(SocketAddr::from((Ipv6Addr::UNSPECIFIED, port))).await {
        Ok(s) => s,
        Err(_) => {
            let addr = SocketAddr::from((Ipv4Addr::UNSPECIFIED, port));
            UdpSocket::bind(addr)
                .await
                .map_err(|source| ServeError::Bind {
                    what: "the WireGuard UDP port",
                    addr,
                    source,
                })?
        }
    };
    let sock = socket2::SockRef::from(&socket);
    let _ = sock.set_send_buffer_size(UDP_SOCKET_BUFFER);
    let _ = sock.set_recv_buffer_size(UDP_SOCKET_BUFFER);
    Ok(socket)
}

async fn wait_for_stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT"),
    }
}

/// A cheap summary of the files that make up the peer set: paths with their
/// modification time, size and inode, following symlinks.
fn fingerprint(
    config_path: &Path,
    peers_dir: Option<&Path>,
) -> Vec<(PathBuf, Option<SystemTime>, u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let mut files = vec![config_path.to_path_buf()];
    if let Some(dir) = peers_dir
        && let Ok(rd) = std::fs::read_dir(dir)
    {
        let mut more: Vec<PathBuf> = rd.filter_map(|e| e.ok()).map(|e| e.path()).collect();
        more.sort();
        files.extend(more);
    }
    files
        .into_iter()
        .map(|p| match std::fs::metadata(&p) {
            Ok(m) => (p, m.modified().ok(), m.len(), m.ino()),
            Err(_) => (p, None, 0, 0),
        })
        .collect()
}

/// Decides when the watcher applies a change: only once the files' state
/// has been seen unchanged on two polls in a row. An editor or `cat >` that
/// writes a file in place can leave it cut at a line boundary for a moment,
/// and such a cut can still parse (a peer file without its `scope` line is a
/// valid unscoped peer). A SIGHUP applies at once: whoever sends it says the
/// write is complete.
struct Settle<F> {
    applied: F,
    pending: Option<F>,
}

impl<F: PartialEq> Settle<F> {
    fn new(applied: F) -> Self {
        Settle {
            applied,
            pending: None,
        }
    }

    /// Feeds one poll's fingerprint; true if the reload should run now.
    fn observe(&mut self, now: F, forced: bool) -> bool {
        if forced {
            self.pending = None;
            self.applied = now;
            return true;
        }
        if now == self.applied {
            self.pending = None;
            return false;
        }
        if self.pending.as_ref() == Some(&now) {
            self.pending = None;
            self.applied = now;
            return true;
        }
        self.pending = Some(now);
        false
    }
}

async fn watch_and_reload(
    config: Config,
    commands: mpsc::Sender<Command>,
    stats: Arc<Stats>,
    shutdown: CancellationToken,
) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = signal(SignalKind::hangup()).ok();
    let peers_dir = config.gateway.peers_dir.clone();
    let mut settle = Settle::new(fingerprint(&config.path, peers_dir.as_deref()));
    let mut interval = tokio::time::interval(WATCH_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let forced = tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = interval.tick() => false,
            Some(_) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => true,
        };
        if !settle.observe(fingerprint(&config.path, peers_dir.as_deref()), forced) {
            continue;
        }
        match config::load_peers(&config.path, &config.gateway) {
            Ok(peers) => {
                let (tx, rx) = oneshot::channel();
                if commands.send(Command::ApplyPeers(peers, tx)).await.is_err() {
                    return;
                }
                if let Ok(diff) = rx.await {
                    stats.reloads_applied.fetch_add(1, Relaxed);
                    let removed: Vec<&str> = diff.removed.iter().map(|(_, n)| n.as_str()).collect();
                    tracing::info!(added = ?diff.added, removed = ?removed, rules_changed = ?diff.changed, tunnels_retuned = ?diff.retuned, sessions_kept = diff.kept, "peers reloaded");
                    for name in &diff.loosened {
                        tracing::warn!(peer = %name, "this reload removed the peer's scope or some of its deny_paths: it may now read more than before. If that was not meant, check its file (an editor that writes in place can leave it cut short)");
                    }
                }
            }
            Err(errors) => {
                stats.reloads_refused.fetch_add(1, Relaxed);
                tracing::error!(reason = %errors, "config reload refused; the last good peer set stays in force");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Settle;

    /// Issue 23, item 4: a file caught mid-write is not applied on the poll
    /// that first sees it; only a state that held for one more poll is.
    #[test]
    fn a_change_applies_only_once_it_holds_for_a_second_poll() {
        let mut s = Settle::new("v1");
        assert!(!s.observe("v1", false), "nothing changed");
        assert!(!s.observe("cut", false), "first sight of a change");
        assert!(
            !s.observe("v2", false),
            "it changed again: still being written"
        );
        assert!(s.observe("v2", false), "it held for a poll");
        assert!(!s.observe("v2", false), "applied once");
        // A change that reverts before it settles is never applied.
        assert!(!s.observe("cut", false));
        assert!(!s.observe("v2", false));
        assert!(!s.observe("v2", false));
        // SIGHUP applies at once.
        assert!(s.observe("v3", true));
        assert!(!s.observe("v3", false));
    }
}
