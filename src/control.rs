//! The local-only control endpoint behind `promgate status` and
//! `promgate peer list`. It listens on loopback (validated in config),
//! never on the cluster network or in the tunnel: peer names and endpoints
//! are not for everyone in the cluster.

use crate::keys::encode_key;
use crate::telemetry::PeerView;
use axum::Router;
use axum::extract::State;
use axum::routing::get;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
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

pub(crate) fn router(peers: PeerView) -> Router {
    Router::new()
        .route("/status", get(status))
        .with_state(peers)
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

/// Fetches the status from a running gateway's control endpoint.
pub(crate) async fn fetch(addr: SocketAddr) -> Result<Vec<PeerStatus>, ControlError> {
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
    let req = http::Request::get("/status")
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
