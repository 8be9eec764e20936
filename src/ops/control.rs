//! The local-only control endpoint behind `promgate status` and
//! `promgate peer list`. It listens on loopback (validated in config),
//! never on the cluster network or in the tunnel: peer names and endpoints
//! are not for everyone in the cluster.

use crate::ops::health::Health;
use crate::ops::telemetry::PeerView;
use axum::Router;
use axum::extract::State;
use axum::routing::get;
use promgate_core::keys::encode_key;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

/// One peer as `status` shows it.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct PeerStatus {
    pub(crate) name: String,
    pub(crate) public_key: String,
    pub(crate) allowed_ips: Vec<String>,
    pub(crate) role: String,
    /// The label scope in selector form; absent for an unscoped peer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) scope: Option<String>,
    pub(crate) endpoint: Option<String>,
    pub(crate) last_handshake_unix: u64,
    pub(crate) rx_bytes: u64,
    pub(crate) tx_bytes: u64,
}

/// One upstream as `status` shows it.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct UpstreamStatus {
    pub(crate) name: String,
    /// Absent from gateways older than the field.
    #[serde(default)]
    pub(crate) url: String,
    pub(crate) kind: String,
    /// The last probe: `Some(true)` up, `None` not probed yet.
    pub(crate) up: Option<bool>,
}

/// The control router for a listener on `listen` (its Host check needs
/// the port). `/status` keeps its shape (a list of peers) for older
/// clients; the upstreams are at `/upstreams`.
pub(crate) fn router(peers: PeerView, health: Arc<Health>, listen: SocketAddr) -> Router {
    Router::new()
        .route("/status", get(status))
        .with_state(peers)
        .merge(
            Router::new()
                .route("/upstreams", get(upstreams))
                .with_state(health),
        )
        .layer(axum::middleware::from_fn_with_state(listen, loopback_host))
}

async fn upstreams(State(health): State<Arc<Health>>) -> axum::Json<Vec<UpstreamStatus>> {
    axum::Json(
        health
            .upstreams_up()
            .into_iter()
            .map(|u| UpstreamStatus {
                name: u.name.to_string(),
                url: u.url.to_string(),
                kind: u.kind.as_str().to_string(),
                up: u.up,
            })
            .collect(),
    )
}

/// Loopback is no protection from a browser on the same host: a page can
/// rebind its own name to 127.0.0.1 and read peer keys and endpoints. The
/// browser still sends that name in `Host`, so only loopback names pass.
async fn loopback_host(
    State(listen): State<SocketAddr>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let mut hosts = req.headers().get_all(http::header::HOST).iter();
    let ok = match (hosts.next(), hosts.next()) {
        (Some(h), None) => h
            .to_str()
            .is_ok_and(|h| crate::web::host_check::loopback_host_ok(h, listen)),
        _ => false,
    };
    if ok {
        return next.run(req).await;
    }
    tracing::info!(host = ?req.headers().get(http::header::HOST), "control endpoint: refused a request for another host");
    (
        http::StatusCode::MISDIRECTED_REQUEST,
        "The control endpoint answers only to Host localhost, 127.0.0.1 or [::1] (with or without its port).\n",
    )
        .into_response()
}

async fn status(State(peers): State<PeerView>) -> axum::Json<Vec<PeerStatus>> {
    let peers = peers.read().map(|p| p.clone()).unwrap_or_default();
    axum::Json(
        peers
            .iter()
            .map(|p| PeerStatus {
                name: p.name.to_string(),
                public_key: encode_key(&p.public_key),
                allowed_ips: p.allowed_ips.iter().map(|n| n.to_string()).collect(),
                role: p.role.as_str().to_string(),
                scope: p.scope.as_ref().map(ToString::to_string),
                endpoint: p
                    .stats
                    .endpoint
                    .lock()
                    .ok()
                    // The socket is dual-stack; show IPv4 peers as IPv4, like `wg show`.
                    .and_then(|e| {
                        e.map(|e| SocketAddr::new(e.ip().to_canonical(), e.port()).to_string())
                    }),
                last_handshake_unix: p.stats.last_handshake_unix.load(Relaxed),
                rx_bytes: p.stats.rx_bytes.load(Relaxed),
                tx_bytes: p.stats.tx_bytes.load(Relaxed),
            })
            .collect(),
    )
}

/// Why `promgate status` or `peer list` got no figures from the gateway.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ControlError {
    #[error(
        "cannot reach the gateway's control endpoint at {addr}: {reason} (is `promgate serve` running on this host?)"
    )]
    Unreachable {
        addr: SocketAddr,
        reason: std::io::Error,
    },
    #[error("the gateway's control endpoint at {addr} did not answer")]
    NoAnswer {
        addr: SocketAddr,
        #[source]
        source: hyper::Error,
    },
    #[error("building the request to the control endpoint at {addr}")]
    Request {
        addr: SocketAddr,
        #[source]
        source: http::Error,
    },
    #[error(
        "the gateway's control endpoint at {addr} answered with a status this promgate cannot read"
    )]
    UnreadableReply {
        addr: SocketAddr,
        #[source]
        source: serde_json::Error,
    },
}

/// Fetches the peers' status from a running gateway's control endpoint.
pub(crate) async fn fetch(addr: SocketAddr) -> Result<Vec<PeerStatus>, ControlError> {
    fetch_json(addr, "/status").await
}

/// Fetches the upstreams' state from a running gateway's control endpoint.
pub(crate) async fn fetch_upstreams(addr: SocketAddr) -> Result<Vec<UpstreamStatus>, ControlError> {
    fetch_json(addr, "/upstreams").await
}

async fn fetch_json<T: serde::de::DeserializeOwned>(
    addr: SocketAddr,
    path: &'static str,
) -> Result<T, ControlError> {
    use http_body_util::BodyExt;
    let no_answer = |source| ControlError::NoAnswer { addr, source };
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|reason| ControlError::Unreachable { addr, reason })?;
    let (mut send, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(no_answer)?;
    tokio::spawn(conn);
    let req = http::Request::get(path)
        .header("host", addr.to_string())
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .map_err(|source| ControlError::Request { addr, source })?;
    let resp = send.send_request(req).await.map_err(no_answer)?;
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(no_answer)?
        .to_bytes();
    serde_json::from_slice(&body).map_err(|source| ControlError::UnreadableReply { addr, source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get_status(addr: SocketAddr, host: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(
            format!("GET /status HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn the_control_endpoint_refuses_other_hosts_with_421() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = tokio_util::sync::CancellationToken::new();
        tokio::spawn(crate::ops::admin_server::serve(
            listener,
            router(PeerView::default(), Arc::new(Health::new(None)), addr),
            stop.clone(),
        ));
        for host in ["evil.example", "evil.example:9587", "127.0.0.1:1"] {
            let out = get_status(addr, host).await;
            assert!(out.starts_with("HTTP/1.1 421"), "{host}: {out}");
            assert!(!out.contains("[]"), "{out}");
        }
        let port = addr.port();
        for host in [
            format!("localhost:{port}"),
            "localhost".into(),
            addr.to_string(),
            format!("[::1]:{port}"),
        ] {
            let out = get_status(addr, &host).await;
            assert!(out.starts_with("HTTP/1.1 200"), "{host}: {out}");
            assert!(out.ends_with("[]"), "{out}");
        }
        // `promgate status` itself sends the listen address as Host.
        assert!(fetch(addr).await.unwrap().is_empty());
        let upstreams = fetch_upstreams(addr).await.unwrap();
        assert_eq!(upstreams.len(), 1);
        assert_eq!(
            (
                upstreams[0].name.as_str(),
                upstreams[0].kind.as_str(),
                upstreams[0].up
            ),
            ("prometheus", "prometheus", None)
        );
        stop.cancel();
    }
}
