//! A WebSocket client for protocol v1: requests with ids, and a stream of
//! everything else the server sends.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use teleconsult_protocol::{ClientMessage, ErrorCode, PROTOCOL_VERSION, ServerMessage};
use tokio::sync::{Mutex, mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;

/// Why a signaling call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SignalingError {
    /// The WebSocket could not be opened.
    #[error("cannot connect: {0}")]
    Connect(String),
    /// The server answered with an `error`.
    #[error("server error {code}: {message}")]
    Server {
        /// Stable code.
        code: ErrorCode,
        /// Explanation.
        message: String,
    },
    /// No reply in time.
    #[error("timed out waiting for a reply")]
    Timeout,
    /// The connection closed.
    #[error("connection closed")]
    Closed,
    /// The server answered with an unexpected message.
    #[error("unexpected reply: {0}")]
    Unexpected(String),
}

impl SignalingError {
    /// The server's error code, if this is a server error.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            SignalingError::Server { code, .. } => Some(*code),
            _ => None,
        }
    }
}

type Pending = Arc<Mutex<HashMap<String, oneshot::Sender<ServerMessage>>>>;

/// One signaling connection.
pub struct SignalingClient {
    out: mpsc::UnboundedSender<Message>,
    pending: Pending,
    closed: Arc<std::sync::atomic::AtomicBool>,
    next_id: AtomicU64,
    /// How long a request waits for its reply.
    pub timeout: Duration,
}

impl SignalingClient {
    /// Opens `ws_url` (e.g. `ws://127.0.0.1:8080/ws`). Returns the client and
    /// the stream of server messages that are not replies to a request
    /// (events, and errors without an id).
    pub async fn connect(ws_url: &str) -> Result<(Self, mpsc::UnboundedReceiver<ServerMessage>), SignalingError> {
        let (socket, _) =
            tokio_tungstenite::connect_async(ws_url).await.map_err(|e| SignalingError::Connect(e.to_string()))?;
        let (mut sink, mut stream) = socket.split();
        let (out, mut out_rx) = mpsc::unbounded_channel::<Message>();
        let (events_tx, events) = mpsc::unbounded_channel();
        let pending: Pending = Arc::new(Mutex::new(HashMap::new()));

        tokio::spawn(async move {
            while let Some(m) = out_rx.recv().await {
                let close = matches!(m, Message::Close(_));
                if sink.send(m).await.is_err() || close {
                    break;
                }
            }
            let _ = sink.close().await;
        });
        let pending_reader = pending.clone();
        let closed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let closed_reader = closed.clone();
        tokio::spawn(async move {
            while let Some(Ok(frame)) = stream.next().await {
                let Message::Text(text) = frame else {
                    if matches!(frame, Message::Close(_)) {
                        break;
                    }
                    continue;
                };
                let Ok(message) = serde_json::from_str::<ServerMessage>(text.as_str()) else { continue };
                let waiter = match reply_id(&message) {
                    Some(id) => pending_reader.lock().await.remove(id),
                    None => None,
                };
                match waiter {
                    Some(w) => {
                        let _ = w.send(message);
                    }
                    None => {
                        let _ = events_tx.send(message);
                    }
                }
            }
            // Wake every waiter: the connection is gone.
            closed_reader.store(true, Ordering::SeqCst);
            pending_reader.lock().await.clear();
        });
        Ok((
            SignalingClient { out, pending, closed, next_id: AtomicU64::new(1), timeout: Duration::from_secs(10) },
            events,
        ))
    }

    /// Whether the server closed the connection.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// Sends a raw text frame (for tests of bad input).
    pub fn send_raw(&self, text: impl Into<String>) -> Result<(), SignalingError> {
        self.out.send(Message::Text(text.into().into())).map_err(|_| SignalingError::Closed)
    }

    /// Sends a raw binary frame (for tests of bad input).
    pub fn send_binary(&self, bytes: Vec<u8>) -> Result<(), SignalingError> {
        self.out.send(Message::Binary(bytes.into())).map_err(|_| SignalingError::Closed)
    }

    /// Sends a message without waiting for a reply.
    pub fn send(&self, message: &ClientMessage) -> Result<(), SignalingError> {
        let text = serde_json::to_string(message).map_err(|e| SignalingError::Unexpected(e.to_string()))?;
        self.send_raw(text)
    }

    /// Closes the WebSocket (without `leave`: the seat is kept for resume).
    pub fn close(&self) {
        let _ = self.out.send(Message::Close(None));
    }

    /// Sends a request with a fresh id and waits for the reply carrying it.
    /// An `error` reply becomes [`SignalingError::Server`].
    pub async fn request(&self, message: ClientMessage) -> Result<ServerMessage, SignalingError> {
        let id = format!("r{}", self.next_id.fetch_add(1, Ordering::Relaxed));
        let message = with_id(message, id.clone());
        let (tx, rx) = oneshot::channel();
        self.pending.lock().await.insert(id.clone(), tx);
        if self.is_closed() {
            self.pending.lock().await.remove(&id);
            return Err(SignalingError::Closed);
        }
        self.send(&message)?;
        let reply = match tokio::time::timeout(self.timeout, rx).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(_)) => return Err(SignalingError::Closed),
            Err(_) => {
                self.pending.lock().await.remove(&id);
                return Err(SignalingError::Timeout);
            }
        };
        match reply {
            ServerMessage::Error { code, message, .. } => Err(SignalingError::Server { code, message }),
            other => Ok(other),
        }
    }

    /// Sends a raw text frame that carries `"id": id` and waits for the
    /// reply with that id, whatever it is (an `error` included). For tests
    /// of malformed requests, which no [`ClientMessage`] can express.
    pub async fn raw_request(&self, text: &str, id: &str) -> Option<ServerMessage> {
        let (tx, rx) = oneshot::channel();
        self.pending.lock().await.insert(id.to_string(), tx);
        self.send_raw(text).ok()?;
        match tokio::time::timeout(self.timeout, rx).await {
            Ok(Ok(reply)) => Some(reply),
            _ => {
                self.pending.lock().await.remove(id);
                None
            }
        }
    }

    /// `hello` with the current protocol version.
    pub async fn hello(&self) -> Result<(), SignalingError> {
        match self.request(ClientMessage::Hello { id: None, protocol: PROTOCOL_VERSION }).await? {
            ServerMessage::Welcome { .. } => Ok(()),
            other => Err(SignalingError::Unexpected(format!("{other:?}"))),
        }
    }
}

/// The id a reply carries, if any.
fn reply_id(message: &ServerMessage) -> Option<&str> {
    match message {
        ServerMessage::Welcome { id, .. }
        | ServerMessage::Joined { id, .. }
        | ServerMessage::Resumed { id, .. }
        | ServerMessage::PublishAnswer { id, .. }
        | ServerMessage::Pong { id }
        | ServerMessage::Ack { id }
        | ServerMessage::Error { id, .. } => id.as_deref(),
        _ => None,
    }
}

fn with_id(message: ClientMessage, new_id: String) -> ClientMessage {
    let id = Some(new_id);
    match message {
        ClientMessage::Hello { protocol, .. } => ClientMessage::Hello { id, protocol },
        ClientMessage::Join { token, .. } => ClientMessage::Join { id, token },
        ClientMessage::Resume { resume_token, .. } => ClientMessage::Resume { id, resume_token },
        ClientMessage::PublishOffer { sdp, .. } => ClientMessage::PublishOffer { id, sdp },
        ClientMessage::SubscribeAnswer { sdp, .. } => ClientMessage::SubscribeAnswer { id, sdp },
        ClientMessage::SubscribeRestart { new_connection, .. } => {
            ClientMessage::SubscribeRestart { id, new_connection }
        }
        ClientMessage::Trickle { connection, candidate, .. } => ClientMessage::Trickle { id, connection, candidate },
        ClientMessage::Mute { kind, muted, .. } => ClientMessage::Mute { id, kind, muted },
        ClientMessage::PreferredSize { participant_id, height, pinned, .. } => {
            ClientMessage::PreferredSize { id, participant_id, height, pinned }
        }
        ClientMessage::RaiseHand { raised, .. } => ClientMessage::RaiseHand { id, raised },
        ClientMessage::LowerHand { participant_id, .. } => ClientMessage::LowerHand { id, participant_id },
        ClientMessage::MuteAll { .. } => ClientMessage::MuteAll { id },
        ClientMessage::Chat { text, .. } => ClientMessage::Chat { id, text },
        ClientMessage::Admit { participant_id, .. } => ClientMessage::Admit { id, participant_id },
        ClientMessage::Deny { participant_id, message, .. } => ClientMessage::Deny { id, participant_id, message },
        ClientMessage::AskToWait { participant_id, message, .. } => {
            ClientMessage::AskToWait { id, participant_id, message }
        }
        ClientMessage::EndVisit { .. } => ClientMessage::EndVisit { id },
        ClientMessage::Leave { .. } => ClientMessage::Leave { id },
        ClientMessage::Ping { .. } => ClientMessage::Ping { id },
    }
}
