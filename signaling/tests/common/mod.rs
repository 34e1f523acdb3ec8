//! Shared set-up for integration tests: a real server on ephemeral loopback
//! ports, tokens, and polling helpers.

#![allow(dead_code)]

use std::future::Future;
use std::net::IpAddr;
use std::time::Duration;

use teleconsult_protocol::{Role, ServerMessage};
use teleconsult_signaling::config::{Config, LogFormat};
use teleconsult_signaling::join_token::unix_now;
use teleconsult_signaling::server::{RunningServer, start};
use tokio::sync::mpsc::UnboundedReceiver;

pub const SECRET: &str = "integration-test-secret-0123456789abcdef";

/// Settings for a test server: loopback, ephemeral ports, a fresh SQLite
/// file, a fixed token secret, and the scheduler's worker idle. Built with
/// the real settings resolver, so every other setting is its default.
pub fn config() -> Config {
    let args = teleconsult_signaling::config::ServeArgs {
        http_addr: Some("127.0.0.1:0".parse().unwrap()),
        media_port: Some(0),
        media_ips: Some(vec![IpAddr::from([127, 0, 0, 1])]),
        token_secret: Some(SECRET.into()),
        db: Some(temp_db()),
        scheduler_tick_ms: Some(3_600_000),
        ..Default::default()
    };
    let mut config = args.resolve().expect("test settings");
    config.log_format = LogFormat::Text;
    config
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed) ^ (u64::from(rand::random::<u32>()) << 20)
}

/// A fresh SQLite file under the system temp directory.
pub fn temp_db() -> String {
    teleconsult_signaling::store::test_databases::sqlite_file()
}

/// A fresh, empty PostgreSQL database (see `TELECONSULT_TEST_POSTGRES`).
pub async fn temp_postgres() -> String {
    teleconsult_signaling::store::test_databases::postgres().await.expect("a PostgreSQL server for tests")
}

/// Both backends, for tests that must hold on each: `("sqlite", location)`
/// and `("postgres", url)`.
pub async fn both_databases() -> Vec<(&'static str, String)> {
    vec![("sqlite", temp_db()), ("postgres", temp_postgres().await)]
}

pub fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,rtc=error,rtc_dtls=error,rtc_ice=error,rtc_srtp=error,webrtc=error".into()),
        )
        .with_test_writer()
        .try_init();
}

pub async fn server() -> RunningServer {
    server_with(config()).await
}

pub async fn server_with(config: Config) -> RunningServer {
    init_logs();
    start(config).await.expect("server starts")
}

pub fn ws_url(server: &RunningServer) -> String {
    format!("ws://{}/ws", server.http_addr)
}

/// A join token for an ad-hoc room that skips the waiting room. Each token
/// has its own subject (one seat per subject): a new person each time.
pub fn token(server: &RunningServer, room: &str, role: Role, name: &str) -> String {
    let subject = format!("test-{}", rand_suffix());
    server.app.keys.mint_join(room, role, name, &subject, unix_now(), 600, true).unwrap()
}

/// Polls `check` every 50 ms until it is true or `limit` passes.
pub async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The SDP media sections of `sdp` that are live (port not 0, not inactive)
/// and carry an msid of `participant`.
pub fn live_sections_of(sdp: &str, participant: &str) -> usize {
    sdp.split("\nm=")
        .skip(1)
        .filter(|section| {
            let port_zero = section.split_whitespace().nth(1) == Some("0");
            let inactive = section.lines().any(|l| l.trim() == "a=inactive");
            let ours = section.lines().any(|l| l.trim().starts_with(&format!("a=msid:{participant} ")));
            ours && !port_zero && !inactive
        })
        .count()
}

/// Reads events until `pred` matches one (returned), or `limit` passes.
pub async fn wait_event(
    events: &mut UnboundedReceiver<ServerMessage>,
    limit: Duration,
    pred: impl Fn(&ServerMessage) -> bool,
) -> Option<ServerMessage> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let m = tokio::time::timeout_at(deadline, events.recv()).await.ok()??;
        if pred(&m) {
            return Some(m);
        }
    }
}

pub use teleconsult_loadtest::http_client::HttpResponse;

/// An HTTP request to the test server.
pub async fn http(
    server: &RunningServer,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> HttpResponse {
    teleconsult_loadtest::http_client::request(server.http_addr, method, path, headers, body).await
}

/// The same, to any address.
pub async fn http_to(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> HttpResponse {
    teleconsult_loadtest::http_client::request(addr, method, path, headers, body).await
}

/// A signed-in staff member's bearer header value.
pub struct Session {
    pub access: String,
    pub refresh_cookie: String,
    pub clinician_id: String,
}

pub async fn create_staff(
    server: &RunningServer,
    email: &str,
    role: teleconsult_signaling::store::StaffRole,
) -> String {
    use teleconsult_signaling::store::Specialty;
    teleconsult_signaling::accounts::create_clinician(
        &server.app.store,
        email,
        &format!("Dr {email}"),
        Specialty::Oncologist,
        role,
        "a long enough password",
        server.app.clock.now(),
    )
    .await
    .expect("account")
    .id
}

pub async fn login(server: &RunningServer, email: &str) -> Session {
    let body = serde_json::json!({"email": email, "password": "a long enough password"}).to_string();
    let r = http(server, "POST", "/api/auth/login", &[], Some(&body)).await;
    assert_eq!(r.status, 200, "login {email}: {}", r.body);
    let cookie = r.header("set-cookie").expect("refresh cookie").split(';').next().unwrap().to_string();
    let v = r.json();
    Session {
        access: v["access_token"].as_str().unwrap().to_string(),
        refresh_cookie: cookie,
        clinician_id: v["clinician"]["id"].as_str().unwrap().to_string(),
    }
}

impl Session {
    pub fn bearer(&self) -> String {
        format!("Bearer {}", self.access)
    }
}

/// Creates a 20-minute visit for `session` starting `in_secs` from the
/// server's clock, or at the first free 20 minutes after that (a clinician
/// never has two visits at once); returns (visit id, patient link token).
pub async fn create_visit(server: &RunningServer, session: &Session, in_secs: i64) -> (String, String) {
    let mut at = server.app.clock.now() + in_secs;
    for _ in 0..200 {
        let start = teleconsult_signaling::timefmt::rfc3339(at);
        let body = serde_json::json!({
            "patient": {"display_name": "Jeanne Dupont", "hospital_id": "H-123"},
            "scheduled_start": start,
            "duration_minutes": 20,
            "kind": "follow_up"
        })
        .to_string();
        let r = http(server, "POST", "/api/visits", &[("Authorization", &session.bearer())], Some(&body)).await;
        if r.status == 409 && r.code().as_deref() == Some("slot_taken") {
            at += 20 * 60;
            continue;
        }
        assert_eq!(r.status, 201, "create visit: {}", r.body);
        let v = r.json();
        let url = v["patient_link"]["url"].as_str().unwrap();
        let token = url.rsplit('/').next().unwrap().to_string();
        return (v["visit"]["id"].as_str().unwrap().to_string(), token);
    }
    panic!("no free 20 minutes for a test visit");
}

/// A server on a manual clock set to `now`.
pub async fn server_at(now: i64) -> (RunningServer, std::sync::Arc<teleconsult_signaling::clock::ManualClock>) {
    server_at_with(now, config()).await
}

/// A server with `config` on a manual clock set to `now`.
pub async fn server_at_with(
    now: i64,
    config: Config,
) -> (RunningServer, std::sync::Arc<teleconsult_signaling::clock::ManualClock>) {
    init_logs();
    let clock = std::sync::Arc::new(teleconsult_signaling::clock::ManualClock::new(now));
    let server = teleconsult_signaling::server::start_with_clock(config, clock.clone()).await.expect("server starts");
    (server, clock)
}

/// A webhook receiver on loopback: fails the first `fail_first` calls with
/// 503, then records each delivery's `Idempotency-Key`.
pub struct WebhookReceiver {
    pub url: String,
    pub received: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    /// The bodies of the deliveries in `received`, in the same order.
    pub bodies: std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>>,
    pub attempts: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

pub async fn webhook_receiver(fail_first: usize) -> WebhookReceiver {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/reminders", listener.local_addr().unwrap());
    let received = Arc::new(std::sync::Mutex::new(Vec::new()));
    let bodies = Arc::new(std::sync::Mutex::new(Vec::new()));
    let attempts = Arc::new(AtomicUsize::new(0));
    let (r, b, a) = (received.clone(), bodies.clone(), attempts.clone());
    let app = axum::Router::new().route(
        "/reminders",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
            let (r, b, a) = (r.clone(), b.clone(), a.clone());
            async move {
                let n = a.fetch_add(1, Ordering::SeqCst);
                if n < fail_first {
                    return axum::http::StatusCode::SERVICE_UNAVAILABLE;
                }
                let key = headers.get("idempotency-key").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
                r.lock().unwrap().push(key);
                b.lock().unwrap().push(serde_json::from_str(&body).unwrap_or_default());
                axum::http::StatusCode::OK
            }
        }),
    );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    WebhookReceiver { url, received, bodies, attempts }
}

/// A webrtc-rs participant with a minted token for `room`, joined and
/// publishing audio and video.
pub async fn media_participant(
    server: &RunningServer,
    room: &str,
    role: Role,
    name: &str,
) -> teleconsult_loadtest::Participant {
    let options = teleconsult_loadtest::ParticipantOptions::new(ws_url(server), token(server, room, role, name));
    teleconsult_loadtest::Participant::connect(&options).await.expect("participant connects")
}

/// Opens a WebSocket, says hello and joins; returns the client, its events,
/// the participant id, the resume token and whether the seat is admitted.
pub async fn join_ws(
    url: &str,
    token: String,
) -> (teleconsult_loadtest::SignalingClient, UnboundedReceiver<ServerMessage>, String, String, bool) {
    let (c, e) = teleconsult_loadtest::SignalingClient::connect(url).await.expect("connects");
    c.hello().await.expect("hello");
    let joined = c.request(teleconsult_protocol::ClientMessage::Join { id: None, token }).await.expect("joins");
    let ServerMessage::Joined { participant_id, resume_token, admitted, .. } = joined else {
        panic!("expected joined: {joined:?}")
    };
    (c, e, participant_id, resume_token, admitted)
}

/// A gateway that accepts connections and never answers (held open).
pub async fn hung_gateway() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/reminders", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    url
}
