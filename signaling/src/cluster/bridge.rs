//! A WebSocket bridged to the node that holds its room.
//!
//! The client's socket stays on the node it reached; that node opens a
//! WebSocket of its own to the room's node, replays the client's `join` or
//! `resume`, and then relays text frames both ways unchanged. The room's
//! node runs an ordinary session, so the protocol, the ordering (one TCP
//! stream each way) and the back-pressure are those of a local session.
//! The media does not pass here: the room's node answers the SDP, so its
//! ICE candidates reach the browser directly.
//!
//! Why a node-to-node WebSocket and not Redis pub/sub: a pub/sub channel
//! drops what arrives while a subscriber reconnects and adds a Redis hop
//! to every message; a WebSocket gives ordering, back-pressure and a clear
//! end (its close, or its failure) for free. Redis tells the entry node
//! where to connect.

use std::net::IpAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use teleconsult_protocol::PROTOCOL_VERSION;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::Cluster;

/// Header carrying the proof that a WebSocket comes from a node of the cluster.
pub const PROOF_HEADER: &str = "x-teleconsult-bridge";
/// Header carrying the client's address, believed only with a valid proof.
pub const CLIENT_HEADER: &str = "x-teleconsult-client";
/// How long connecting to the room's node (and its `welcome`) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// The entry node's socket to the room's node.
pub type Upstream = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Why the room's node could not be reached.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BridgeError {
    /// The node's URL is not a usable `http://` or `ws://` URL.
    #[error("bad node url")]
    BadUrl,
    /// TCP or the WebSocket handshake failed, or it took too long.
    #[error("cannot reach the room's node: {0}")]
    Unreachable(String),
    /// The node answered `hello` with something other than `welcome`.
    #[error("the room's node refused the session")]
    Refused,
}

/// Opens a session on the room's node at `node_url` for `client`, and says
/// hello. The caller then sends the client's `join` or `resume`.
pub async fn connect(cluster: &Cluster, node_url: &str, client: IpAddr) -> Result<Upstream, BridgeError> {
    let url = if let Some(rest) = node_url.strip_prefix("http://") {
        format!("ws://{rest}/ws")
    } else if node_url.starts_with("ws://") {
        format!("{node_url}/ws")
    } else {
        return Err(BridgeError::BadUrl);
    };
    let mut request = url.into_client_request().map_err(|_| BridgeError::BadUrl)?;
    let headers = request.headers_mut();
    headers.insert(PROOF_HEADER, cluster.bridge_proof().parse().map_err(|_| BridgeError::BadUrl)?);
    headers.insert(CLIENT_HEADER, client.to_string().parse().map_err(|_| BridgeError::BadUrl)?);
    let handshake = async {
        let (mut upstream, _) =
            tokio_tungstenite::connect_async(request).await.map_err(|e| BridgeError::Unreachable(e.to_string()))?;
        let hello = serde_json::json!({ "type": "hello", "protocol": PROTOCOL_VERSION }).to_string();
        upstream.send(Message::text(hello)).await.map_err(|e| BridgeError::Unreachable(e.to_string()))?;
        // The client already had its welcome from the entry node.
        loop {
            match upstream.next().await {
                Some(Ok(Message::Text(text))) if text.as_str().contains("\"welcome\"") => return Ok(upstream),
                Some(Ok(Message::Text(_))) | Some(Ok(Message::Close(_))) => return Err(BridgeError::Refused),
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(BridgeError::Unreachable(e.to_string())),
                None => return Err(BridgeError::Unreachable("closed".into())),
            }
        }
    };
    tokio::time::timeout(CONNECT_TIMEOUT, handshake).await.map_err(|_| BridgeError::Unreachable("timed out".into()))?
}
