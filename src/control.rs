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
use std::sync::atomic::Ordering::Relaxed;

/// One peer as `status` shows it.
#[derive(Debug, Serialize, Deserialize)]
pub struct PeerStatus {
    pub name: String,
    pub public_key: String,
    pub allowed_ips: Vec<String>,
    pub role: String,
    /// The label scope in selector form; absent for an unscoped peer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    pub endpoint: Option<String>,
    pub last_handshake_unix: u64,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
}

pub fn router(peers: PeerView) -> Router {
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
                        e.map(|e| {
                            std::net::SocketAddr::new(e.ip().to_canonical(), e.port()).to_string()
                        })
                    }),
                last_handshake_unix: p.stats.last_handshake_unix.load(Relaxed),
                rx_bytes: p.stats.rx_bytes.load(Relaxed),
                tx_bytes: p.stats.tx_bytes.load(Relaxed),
            })
            .collect(),
    )
}

/// Fetches the status from a running gateway's control endpoint.
pub async fn fetch(addr: std::net::SocketAddr) -> anyhow::Result<Vec<PeerStatus>> {
    use http_body_util::BodyExt;
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach the gateway's control endpoint at {addr}: {e} (is `promgate serve` running on this host?)"))?;
    let (mut send, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let req = http::Request::get("/status")
        .header("host", addr.to_string())
        .body(http_body_util::Empty::<bytes::Bytes>::new())?;
    let resp = send.send_request(req).await?;
    let body = resp.into_body().collect().await?.to_bytes();
    Ok(serde_json::from_slice(&body)?)
}
