//! The running server: shared state, the router, start and graceful shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{State, WebSocketUpgrade};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use teleconsult_protocol::ErrorCode;
use teleconsult_sfu::{SfuConfig, SfuHandle};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower_http::set_header::SetResponseHeaderLayer;
use tracing::info;

use crate::config::Config;
use crate::join_token::TokenKeys;
use crate::metrics::Metrics;
use crate::room_registry::RoomRegistry;

/// Largest WebSocket frame the transport accepts. Frames between
/// `MAX_MESSAGE_BYTES` and this get a `message_too_large` error; larger
/// ones are refused by the transport, which closes the socket (1009).
const WS_TRANSPORT_LIMIT: usize = 1 << 20;

/// Everything the handlers share.
pub struct App {
    /// Resolved settings.
    pub config: Config,
    /// Token keys.
    pub keys: TokenKeys,
    /// The media plane.
    pub sfu: SfuHandle,
    /// Live rooms and seats.
    pub rooms: RoomRegistry,
    /// Counters.
    pub metrics: Metrics,
    /// Flips to true when the server shuts down.
    pub shutdown: watch::Receiver<bool>,
}

impl App {
    pub(crate) fn metrics_ws_connections(&self, delta: i64) {
        self.metrics.ws_connections(delta);
    }
    pub(crate) fn metrics_ws_error(&self, code: ErrorCode) {
        self.metrics.ws_error(code.as_str());
    }
    pub(crate) fn metrics_ws_message(&self, kind: &'static str) {
        self.metrics.ws_message(kind);
    }
}

/// A started server.
pub struct RunningServer {
    /// The shared state.
    pub app: Arc<App>,
    /// The bound HTTP address.
    pub http_addr: SocketAddr,
    shutdown_tx: watch::Sender<bool>,
    serve_task: tokio::task::JoinHandle<()>,
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The media plane could not start.
    #[error("media server: {0}")]
    Sfu(#[from] teleconsult_sfu::SfuError),
    /// The token secret is unusable.
    #[error("the token secret is unusable")]
    BadSecret,
    /// The HTTP listener could not bind.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// Address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// Starts signaling and the embedded sfu.
pub async fn start(config: Config) -> Result<RunningServer, StartError> {
    let keys = match &config.token_secret {
        Some(secret) => TokenKeys::from_secret("k1", secret.as_bytes()).map_err(|_| StartError::BadSecret)?,
        None => TokenKeys::random(),
    };
    let sfu = SfuHandle::start(SfuConfig {
        media_ips: config.media_ips.clone(),
        port: config.media_port,
        workers: config.media_workers,
        max_participants: config.max_participants,
        peer_timeout: config.peer_timeout,
        ..SfuConfig::default()
    })?;
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let app = Arc::new(App {
        config: config.clone(),
        keys,
        sfu,
        rooms: RoomRegistry::default(),
        metrics: Metrics::default(),
        shutdown: shutdown_rx.clone(),
    });
    let listener = TcpListener::bind(config.http_addr)
        .await
        .map_err(|source| StartError::Listen { addr: config.http_addr, source })?;
    let http_addr = listener.local_addr().map_err(|source| StartError::Listen { addr: config.http_addr, source })?;
    let router = router(app.clone());
    let mut shutdown_signal = shutdown_rx;
    let serve_task = tokio::spawn(async move {
        let result = axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                let _ = shutdown_signal.wait_for(|v| *v).await;
            })
            .await;
        if let Err(e) = result {
            tracing::error!(error = %e, "http server stopped");
        }
    });
    info!(%http_addr, media_ports = ?app.sfu.ports(), "teleconsult listening");
    Ok(RunningServer { app, http_addr, shutdown_tx, serve_task })
}

impl RunningServer {
    /// The UDP media ports.
    pub fn media_ports(&self) -> Vec<u16> {
        self.app.sfu.ports()
    }

    /// Graceful shutdown: every session is told `room_closed` and closed,
    /// HTTP stops accepting, media workers stop.
    pub async fn shutdown(self) {
        let _ = self.shutdown_tx.send(true);
        // Sessions close their sockets on the flag; give them a moment.
        let _ = tokio::time::timeout(Duration::from_secs(5), self.serve_task).await;
        self.app.sfu.shutdown().await;
        info!("teleconsult stopped");
    }
}

/// The HTTP routes.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/ws", get(ws))
        .fallback(crate::web_assets::serve)
        .with_state(app)
        .layer(SetResponseHeaderLayer::overriding(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(
                "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                 media-src 'self' blob: mediastream:; connect-src 'self'; frame-ancestors 'none'; \
                 base-uri 'none'; form-action 'self'",
            ),
        ))
        .layer(SetResponseHeaderLayer::overriding(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")))
        .layer(SetResponseHeaderLayer::overriding(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer")))
}

async fn healthz(State(app): State<Arc<App>>) -> Response {
    let status = if *app.shutdown.borrow() { "stopping" } else { "ok" };
    axum::Json(serde_json::json!({ "status": status, "version": env!("CARGO_PKG_VERSION") })).into_response()
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    let text = app.metrics.render(&app.rooms.room_sizes(), &app.sfu.worker_stats());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response()
}

async fn ws(State(app): State<Arc<App>>, upgrade: WebSocketUpgrade) -> Response {
    upgrade
        .max_message_size(WS_TRANSPORT_LIMIT)
        .max_frame_size(WS_TRANSPORT_LIMIT)
        .on_upgrade(move |socket| crate::ws_session::run(socket, app))
}
