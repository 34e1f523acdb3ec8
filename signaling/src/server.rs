//! The running server: shared state, the router, start and graceful shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{State, WebSocketUpgrade};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use teleconsult_sfu::{SfuConfig, SfuHandle};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower_http::set_header::SetResponseHeaderLayer;
use tracing::info;

use crate::app::App;
use crate::client_addr::ClientAddr;
use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::join_token::TokenKeys;
use crate::metrics::Metrics;
use crate::room_registry::RoomRegistry;
use crate::secret::Sealer;
use crate::security_log::{SecurityEvent, SecurityLog};
use crate::staff_auth::{LoginThrottle, PasswordChecks};
use crate::store::Store;
use crate::{auth_api, follow_ups_api, group_sessions_api, join_api, ops_dashboard, visits_api};
use sha2::Digest;

/// Largest WebSocket frame the transport accepts. Frames between
/// `MAX_MESSAGE_BYTES` and this get a `message_too_large` error; larger
/// ones are refused by the transport, which closes the socket (1009).
const WS_TRANSPORT_LIMIT: usize = 1 << 20;

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
    /// The database could not be opened or migrated.
    #[error("database {location}: {source}")]
    Store {
        /// Where (without any password).
        location: String,
        /// Why.
        source: crate::store::StoreError,
    },
    /// The security log file could not be opened.
    #[error("security log {path}: {source}")]
    SecurityLog {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Redis could not be reached, or the node could not register.
    #[error("cluster: {0}")]
    Cluster(crate::cluster::ClusterError),
    /// The HTTP listener could not bind.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// Address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// Starts signaling and the embedded sfu, on the system clock.
pub async fn start(config: Config) -> Result<RunningServer, StartError> {
    start_with_clock(config, Arc::new(SystemClock)).await
}

/// Starts with a given clock (tests use a manual one).
pub async fn start_with_clock(config: Config, clock: Arc<dyn Clock>) -> Result<RunningServer, StartError> {
    let store = Store::open_with(&config.db, config.db_pool)
        .await
        .map_err(|source| StartError::Store { location: crate::store::redacted(&config.db), source })?;
    // Pay for the dummy password hash now, not on the first unknown email.
    tokio::task::spawn_blocking(crate::staff_auth::warm_up).await.ok();
    let (keys, sealer, link_sealer) = match &config.token_secret {
        Some(secret) => (
            TokenKeys::from_secret("k1", secret.as_bytes()).map_err(|_| StartError::BadSecret)?,
            Sealer::from_secret(secret.as_bytes(), "answers"),
            Sealer::from_secret(secret.as_bytes(), "links"),
        ),
        None => (TokenKeys::random(), Sealer::random(), Sealer::random()),
    };
    let relay_ips = match &config.turn {
        Some(turn) => turn.addresses().await,
        None => Vec::new(),
    };
    let sfu = SfuHandle::start(SfuConfig {
        media_ips: config.media_ips.clone(),
        public_ips: config.media_public_ips.clone(),
        relay_ips,
        ice_tcp_port: config.ice_tcp_port,
        port: config.media_port,
        workers: config.media_workers,
        max_participants: config.max_participants,
        peer_timeout: config.peer_timeout,
        ..SfuConfig::default()
    })?;
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let listener = TcpListener::bind(config.http_addr)
        .await
        .map_err(|source| StartError::Listen { addr: config.http_addr, source })?;
    let http_addr = listener.local_addr().map_err(|source| StartError::Listen { addr: config.http_addr, source })?;
    let public_url = config.public_url.clone().unwrap_or_else(|| default_public_url(http_addr));
    let (snapshots_tx, ops_snapshots) = watch::channel(None);
    // The security log's hashes are keyed by the token secret (or a random
    // key), so its pseudonyms mean nothing outside this deployment.
    let security_key: [u8; 32] = match &config.token_secret {
        Some(secret) => {
            sha2::Sha256::digest([b"teleconsult/security-log\0".as_slice(), secret.as_bytes()].concat()).into()
        }
        None => rand::random(),
    };
    let cluster = match &config.cluster {
        Some(settings) => {
            let secret = config.token_secret.as_deref().unwrap_or_default();
            let cluster = crate::cluster::Cluster::join(settings, http_addr, secret, clock.now())
                .await
                .map_err(StartError::Cluster)?;
            Some(Arc::new(cluster))
        }
        None => None,
    };
    let security = SecurityLog::open(config.security_log.as_deref(), security_key)
        .map_err(|source| StartError::SecurityLog { path: config.security_log.clone().unwrap_or_default(), source })?;
    let app = Arc::new(App {
        config: config.clone(),
        keys,
        sealer,
        link_sealer,
        sfu,
        rooms: RoomRegistry::default(),
        metrics: Metrics::default(),
        store,
        clock,
        login_throttle: LoginThrottle::default(),
        password_checks: PasswordChecks::new(config.password_hash_concurrency),
        security,
        ws_per_address: Default::default(),
        allowed_origins: crate::ws_limits::allowed_origins(
            config.allowed_origins.as_deref(),
            &public_url,
            config.public_url.is_some(),
        ),
        same_host_origin: config.allowed_origins.is_none() && config.public_url.is_none(),
        public_url,
        ops_snapshots,
        shutdown: shutdown_rx.clone(),
        cluster: cluster.clone(),
    });
    if let Some(cluster) = cluster {
        // Registered before the listener answers, so that placement can
        // choose this node as soon as it takes connections.
        let status = crate::cluster::status_now(&app, &cluster, 0.0);
        cluster.write_status(&status).await.map_err(StartError::Cluster)?;
        crate::cluster::spawn(app.clone(), cluster.clone());
        info!(node = %cluster.node_id, url = %cluster.node_url, "joined the cluster");
    }
    crate::ops_dashboard::start_sampler(app.clone(), snapshots_tx);
    crate::scheduler_worker::spawn(app.clone());
    crate::credential_guard::spawn(app.clone());
    let router = router(app.clone());
    let mut shutdown_signal = shutdown_rx;
    let serve_task = tokio::spawn(async move {
        let result = axum::serve(listener, router.into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown(async move {
                let _ = shutdown_signal.wait_for(|v| *v).await;
            })
            .await;
        if let Err(e) = result {
            tracing::error!(error = %e, "http server stopped");
        }
    });
    if let Some(addr) = config.metrics_addr {
        let listener = TcpListener::bind(addr).await.map_err(|source| StartError::Listen { addr, source })?;
        // The bound address, not the configured one: port 0 picks a free port.
        let addr = listener.local_addr().map_err(|source| StartError::Listen { addr, source })?;
        let metrics_app = app.clone();
        let router = Router::new().route(
            "/metrics",
            get(move || {
                let app = metrics_app.clone();
                async move { metrics_text(&app).await }
            }),
        );
        let mut stop = app.shutdown.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    let _ = stop.wait_for(|v| *v).await;
                })
                .await;
        });
        info!(%addr, "metrics listening");
    }
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
    /// In a cluster: stops taking rooms, tells everyone in this node's
    /// rooms (and every WebSocket bridged through it) to move, and waits up
    /// to `drain_timeout` for their sockets to close. One node: nothing.
    pub async fn drain(&self) {
        let app = &self.app;
        let Some(cluster) = &app.cluster else { return };
        let deadline = tokio::time::Instant::now() + app.config.drain_timeout;
        cluster.start_draining(crate::cluster::status_now(app, cluster, 0.0)).await;
        let rooms = app.rooms.room_sizes();
        info!(rooms = rooms.len(), "draining: moving this node's calls");
        for (room, _) in rooms {
            crate::visit_rooms::move_room(app, &room, "node_draining").await;
        }
        while tokio::time::Instant::now() < deadline
            && (app.metrics.ws_open() > 0 || !app.rooms.room_sizes().is_empty())
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        info!(sockets_left = app.metrics.ws_open(), "drained");
    }

    /// Stops: closes every session and the media server, and leaves the cluster.
    pub async fn shutdown(self) {
        let _ = self.shutdown_tx.send(true);
        if let Some(cluster) = &self.app.cluster {
            cluster.leave().await;
        }
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
        .route("/readyz", get(crate::readiness::readyz))
        .route("/metrics", get(metrics))
        .route("/ws", get(ws))
        .route("/api/openapi.json", get(openapi))
        .route("/api/auth/login", post(auth_api::login))
        .route("/api/auth/refresh", post(auth_api::refresh))
        .route("/api/auth/logout", post(auth_api::logout))
        .route("/api/auth/me", get(auth_api::me))
        .route("/api/visits", get(visits_api::list).post(visits_api::create))
        .route("/api/visits/{id}", get(visits_api::get).patch(visits_api::reschedule))
        .route("/api/visits/{id}/cancel", post(visits_api::cancel))
        .route("/api/visits/{id}/start", post(visits_api::start))
        .route("/api/visits/{id}/end", post(visits_api::end))
        .route("/api/visits/{id}/guest-links", post(visits_api::guest_link))
        .route("/api/visits/{id}/join-token", post(visits_api::join_token))
        .route("/api/visits/{id}/links/{link_id}/revoke", post(visits_api::revoke_link))
        .route("/api/visits/{id}/links/{link_id}/allow", post(visits_api::allow_link))
        .route("/api/visits/{id}/audit", get(visits_api::audit))
        .route("/api/join/{token}", post(join_api::exchange))
        .route("/api/join/{token}/questionnaire", post(join_api::questionnaire))
        .route("/api/visits/{id}/follow-ups", post(follow_ups_api::book))
        .route("/api/follow-ups", get(follow_ups_api::queue))
        .route("/api/group-sessions", get(group_sessions_api::list).post(group_sessions_api::create))
        .route("/api/group-sessions/{id}", get(group_sessions_api::get))
        .route("/api/group-sessions/{id}/enrolments", post(group_sessions_api::enrol))
        .route("/api/group-sessions/{id}/enrolments/{patient_id}", axum::routing::delete(group_sessions_api::withdraw))
        .route("/api/follow-ups/{id}/assign", post(follow_ups_api::assign))
        .route("/api/follow-ups/{id}/cancel", post(follow_ups_api::cancel))
        .route("/api/follow-ups/{id}/book-sooner", post(follow_ups_api::book_sooner))
        .route("/api/notifications", get(follow_ups_api::inbox))
        .route("/api/notifications/{id}/read", post(follow_ups_api::mark_read))
        .route("/api/visits/{id}/monitoring", get(crate::monitoring::of_visit).post(crate::monitoring::enrol))
        .route("/api/monitoring/{id}/revoke", post(crate::monitoring::revoke))
        .route("/api/monitor/{token}", get(crate::monitoring::status))
        .route("/api/monitor/{token}/check-ins", post(crate::monitoring::check_in))
        .route("/monitor/{token}", get(crate::monitoring::page))
        .route("/schedule", get(schedule_page))
        .route(
            "/api/visits/import",
            post(visits_api::import).layer(axum::extract::DefaultBodyLimit::max(crate::visit_import::MAX_IMPORT_BYTES)),
        )
        .route("/api/calendar-token", post(crate::calendar_feed::issue).delete(crate::calendar_feed::revoke))
        .route("/calendar/{file}", get(crate::calendar_feed::feed))
        .route(
            "/api/clinicians/{id}/availability",
            get(follow_ups_api::get_availability).put(follow_ups_api::set_availability),
        )
        .route("/api/ops/stream", get(ops_dashboard::stream))
        .route("/api/ops/weekly", get(ops_dashboard::weekly))
        .route("/api/ops/weekly.csv", get(ops_dashboard::weekly_csv))
        .route("/api/ops/consultation-totals", axum::routing::put(ops_dashboard::set_consultation_total))
        .route("/join/{token}", get(join_page))
        .route("/ops", get(ops_page))
        .route("/api/{*rest}", axum::routing::any(api_not_found))
        .fallback(crate::web_assets::serve)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(app.clone(), crate::response_policy::apply))
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

/// The OpenAPI document (hand-written; a test checks it names every route).
pub const OPENAPI: &str = include_str!("../../docs/openapi.json");

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

async fn method_not_allowed() -> Response {
    crate::http_error::ApiError::new(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this path does not take that method",
    )
    .into_response()
}

async fn api_not_found() -> Response {
    crate::http_error::ApiError::not_found().into_response()
}

/// The patient's join page. The token stays in the path and never leaves
/// the page: `Referrer-Policy: no-referrer` is on every response.
async fn join_page() -> Response {
    let mut page = crate::web_assets::asset_response("join.html")
        .unwrap_or_else(|| crate::http_error::ApiError::not_found().into_response());
    // The token is in this page's address: nothing may keep a copy.
    page.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    page
}

/// The staff scheduling page (availability, follow-ups, import, calendar feed, inbox).
async fn schedule_page() -> Response {
    crate::web_assets::asset_response("schedule.html")
        .unwrap_or_else(|| crate::http_error::ApiError::not_found().into_response())
}

/// The operations dashboard page (it signs in and streams on its own).
async fn ops_page() -> Response {
    crate::web_assets::asset_response("ops.html")
        .unwrap_or_else(|| crate::http_error::ApiError::not_found().into_response())
}

/// Liveness: the process answers; `degraded` while a media worker is down
/// (it is being restarted), `stopping` during shutdown.
async fn healthz(State(app): State<Arc<App>>) -> Response {
    let workers = app.sfu.worker_health();
    let status = if *app.shutdown.borrow() {
        "stopping"
    } else if workers.iter().any(|w| !w.alive) {
        "degraded"
    } else {
        "ok"
    };
    let media: Vec<serde_json::Value> = workers
        .iter()
        .map(|w| serde_json::json!({ "worker": w.worker, "alive": w.alive, "restarts": w.restarts }))
        .collect();
    axum::Json(serde_json::json!({ "status": status, "version": env!("CARGO_PKG_VERSION"), "media_workers": media }))
        .into_response()
}

/// `/metrics` on the main listener: open unless a metrics token is set,
/// in which case `Authorization: Bearer <token>` is required.
async fn metrics(State(app): State<Arc<App>>, headers: axum::http::HeaderMap) -> Response {
    if let Some(token) = &app.config.metrics_token {
        let given =
            headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
        let ok = given.is_some_and(|g| crate::secret::constant_time_eq(g.trim().as_bytes(), token.as_bytes()));
        if !ok {
            return crate::http_error::ApiError::new(
                axum::http::StatusCode::UNAUTHORIZED,
                "unauthorized",
                "a metrics token is required",
            )
            .into_response();
        }
    }
    metrics_text(&app).await
}

/// The metrics page itself (also served, without a token, on `--metrics-addr`).
pub async fn metrics_text(app: &App) -> Response {
    let finished = app.store.finished_visit_counts().await.unwrap_or_default();
    let mut paths = std::collections::BTreeMap::new();
    for s in app.sfu.participant_stats().await {
        if let Some(path) = s.path {
            *paths.entry(path.as_str()).or_insert(0u64) += 1;
        }
    }
    let text = app.metrics.render(&app.rooms.figures(), &finished, &app.sfu.worker_stats(), &paths);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response()
}

/// Links on a server with no public URL: its bound address, with a
/// wildcard (`0.0.0.0`, `::`) read as loopback, which a browser can open.
fn default_public_url(http_addr: std::net::SocketAddr) -> String {
    let mut addr = http_addr;
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    format!("http://{addr}")
}

/// `/ws`: browsers only from an allowed origin, and at most
/// `ws_max_per_address` sockets per client address.
async fn ws(
    State(app): State<Arc<App>>,
    ClientAddr(client): ClientAddr,
    headers: axum::http::HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    // A WebSocket bridged from another node speaks for its client's address.
    let client = app.cluster.as_ref().and_then(|c| c.bridged_client(&headers)).unwrap_or(client);
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let same_host = app.same_host_origin && crate::ws_limits::origin_is_host(origin, host);
    if !same_host && !crate::ws_limits::origin_allowed(origin, &app.allowed_origins) {
        app.security.record(
            app.clock.now(),
            SecurityEvent::WebSocketRefused,
            Some(client),
            serde_json::json!({ "reason": "origin_not_allowed" }),
        );
        return crate::http_error::ApiError::new(
            axum::http::StatusCode::FORBIDDEN,
            "origin_not_allowed",
            "this page may not open a connection to this server",
        )
        .into_response();
    }
    let Some(slot) = app.ws_per_address.acquire(client, app.config.ws_max_per_address) else {
        app.security.record(
            app.clock.now(),
            SecurityEvent::WebSocketRefused,
            Some(client),
            serde_json::json!({ "reason": "too_many_connections" }),
        );
        return crate::http_error::ApiError::new(
            axum::http::StatusCode::TOO_MANY_REQUESTS,
            "too_many_connections",
            "too many connections from this address",
        )
        .retry_after(5)
        .into_response();
    };
    upgrade.max_message_size(WS_TRANSPORT_LIMIT).max_frame_size(WS_TRANSPORT_LIMIT).on_upgrade(
        move |socket| async move {
            let _slot = slot;
            crate::ws_session::run(socket, app, client).await
        },
    )
}

#[cfg(test)]
mod tests {
    /// Every `/api` route in `router` is documented in the OpenAPI document,
    /// and every documented path is a real route: the document cannot drift.
    #[test]
    fn openapi_documents_every_api_route() {
        let doc: serde_json::Value = serde_json::from_str(super::OPENAPI).expect("openapi.json is JSON");
        let documented: Vec<&str> = doc["paths"].as_object().expect("paths").keys().map(String::as_str).collect();
        let source = include_str!("server.rs");
        let routes: Vec<&str> = source
            .split(".route(")
            .skip(1)
            .filter_map(|rest| rest.trim_start().strip_prefix('"'))
            .filter_map(|rest| rest.split('"').next())
            .filter(|path| path.starts_with("/api/") && !path.contains('*'))
            .collect();
        assert!(routes.len() >= 15, "found the routes ({routes:?})");
        for route in &routes {
            assert!(documented.contains(route), "{route} is missing from docs/openapi.json");
        }
        for path in documented.iter().filter(|p| p.starts_with("/api/")) {
            assert!(routes.contains(path), "docs/openapi.json documents {path}, which is not a route");
        }
    }
}
