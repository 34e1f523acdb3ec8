//! What a leaked link, a denied guest, a disabled account, a stuck or silent
//! socket and a hostile origin can and cannot do.

mod common;

use std::time::Duration;

use common::{create_staff, create_visit, eventually, http, login, server, server_with, wait_event, ws_url};
use futures_util::{SinkExt, StreamExt};
use teleconsult_loadtest::SignalingClient;
use teleconsult_protocol::{ClientMessage, ErrorCode, Role, ServerMessage};
use teleconsult_signaling::server::RunningServer;
use teleconsult_signaling::store::StaffRole;
use tokio_tungstenite::tungstenite::Message;

type RawSocket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Exchanges a link for a join token.
async fn join_token_of(server: &RunningServer, link: &str) -> common::HttpResponse {
    http(server, "POST", &format!("/api/join/{link}"), &[], None).await
}

/// Connects, says hello and joins with `token`; returns the client, its
/// events and the answer to `join` (`joined`, or the error).
async fn join(
    server: &RunningServer,
    token: &str,
) -> (SignalingClient, tokio::sync::mpsc::UnboundedReceiver<ServerMessage>, Result<ServerMessage, Option<ErrorCode>>) {
    let (c, e) = SignalingClient::connect(&ws_url(server)).await.expect("connects");
    c.hello().await.expect("hello");
    let answer = c.request(ClientMessage::Join { id: None, token: token.into() }).await.map_err(|e| e.code());
    (c, e, answer)
}

/// Reads a raw socket until the server closes it; returns the close code.
async fn close_code(socket: &mut RawSocket, limit: Duration) -> Option<u16> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, socket.next()).await {
            Ok(Some(Ok(Message::Close(frame)))) => return frame.map(|f| u16::from(f.code)),
            Ok(Some(Ok(_))) => continue,
            _ => return None,
        }
    }
}

async fn raw_socket(server: &RunningServer, origin: Option<&str>) -> Result<RawSocket, u16> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = ws_url(server).into_client_request().unwrap();
    if let Some(o) = origin {
        request.headers_mut().insert("origin", o.parse().unwrap());
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((s, _)) => Ok(s),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => Err(response.status().as_u16()),
        Err(e) => panic!("connect: {e}"),
    }
}

struct Visit {
    server: RunningServer,
    bearer: String,
    visit: String,
    link: String,
}

async fn a_started_visit(config: Option<teleconsult_signaling::config::Config>) -> Visit {
    let server = match config {
        Some(c) => server_with(c).await,
        None => server().await,
    };
    create_staff(&server, "onco@h.fr", StaffRole::Clinician).await;
    let s = login(&server, "onco@h.fr").await;
    let bearer = s.bearer();
    let (visit, link) = create_visit(&server, &s, 0).await;
    assert_eq!(
        http(&server, "POST", &format!("/api/visits/{visit}/start"), &[("Authorization", &bearer)], None).await.status,
        200
    );
    Visit { server, bearer, visit, link }
}

async fn clinician_token(v: &Visit) -> String {
    let r =
        http(&v.server, "POST", &format!("/api/visits/{}/join-token", v.visit), &[("Authorization", &v.bearer)], None)
            .await;
    r.json()["join_token"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_link_holds_one_seat_and_never_keeps_the_clinician_out() {
    let v = a_started_visit(None).await;
    // Seven joins through one patient link: each takes the seat over.
    let mut sessions = Vec::new();
    let mut ids = Vec::new();
    for _ in 0..7 {
        let token = join_token_of(&v.server, &v.link).await.json()["join_token"].as_str().unwrap().to_string();
        let (c, e, joined) = join(&v.server, &token).await;
        let Ok(ServerMessage::Joined { participant_id, admitted, .. }) = joined else { panic!("{joined:?}") };
        assert!(!admitted);
        ids.push(participant_id);
        sessions.push((c, e));
    }
    assert!(ids.windows(2).all(|w| w[0] == w[1]), "the same seat each time: {ids:?}");
    assert_eq!(v.server.app.rooms.waiting(&v.visit).len(), 1, "one seat, not seven");
    // The earlier connections were told, then closed.
    let (first, first_events) = &mut sessions[0];
    let told = wait_event(first_events, Duration::from_secs(5), |m| {
        matches!(m, ServerMessage::Error { code: ErrorCode::SeatReplaced, .. })
    })
    .await;
    assert!(told.is_some(), "the replaced connection hears why");
    assert!(eventually(Duration::from_secs(5), || async { first.is_closed() }).await);

    // Eight guests fill the waiting room; a ninth is turned away; the clinician still joins.
    for i in 0..8 {
        let r = http(
            &v.server,
            "POST",
            &format!("/api/visits/{}/guest-links", v.visit),
            &[("Authorization", &v.bearer)],
            Some(&format!(r#"{{"label": "guest {i}"}}"#)),
        )
        .await;
        let url = r.json()["link"]["url"].as_str().unwrap().to_string();
        let token = join_token_of(&v.server, url.rsplit('/').next().unwrap()).await.json()["join_token"]
            .as_str()
            .unwrap()
            .to_string();
        let (c, e, joined) = join(&v.server, &token).await;
        if i < 7 {
            assert!(matches!(joined, Ok(ServerMessage::Joined { .. })), "guest {i}: {joined:?}");
        } else {
            assert_eq!(joined.unwrap_err(), Some(ErrorCode::WaitingRoomFull), "the ninth waits outside");
        }
        sessions.push((c, e));
    }
    let (_c, _e, joined) = join(&v.server, &clinician_token(&v).await).await;
    assert!(matches!(joined, Ok(ServerMessage::Joined { admitted: true, .. })), "the clinician gets in: {joined:?}");
    v.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_link_stays_out_until_a_clinician_lets_it_back() {
    let v = a_started_visit(None).await;
    let (clinician, _ce, _) = join(&v.server, &clinician_token(&v).await).await;
    let x = join_token_of(&v.server, &v.link).await.json();
    let spare_token = join_token_of(&v.server, &v.link).await.json()["join_token"].as_str().unwrap().to_string();
    let link_id = v.server.app.store.links_of_visit(&v.visit).await.unwrap()[0].id.clone();
    assert_eq!(v.server.app.store.links_of_visit(&v.visit).await.unwrap().len(), 1, "only the patient's link");
    let (_p, _pe, joined) = join(&v.server, x["join_token"].as_str().unwrap()).await;
    let Ok(ServerMessage::Joined { participant_id, .. }) = joined else { panic!("{joined:?}") };
    clinician
        .request(ClientMessage::Deny { id: None, participant_id, message: Some("Wrong day".into()) })
        .await
        .expect("denied");
    // The link no longer opens, and a join token minted before is refused.
    let r = join_token_of(&v.server, &v.link).await;
    assert_eq!((r.status, r.code().as_deref()), (403, Some("link_denied")), "{}", r.body);
    let (_c, _e, again) = join(&v.server, &spare_token).await;
    assert_eq!(again.unwrap_err(), Some(ErrorCode::LinkDenied));
    // The clinician lets it back in.
    let r = http(
        &v.server,
        "POST",
        &format!("/api/visits/{}/links/{link_id}/allow", v.visit),
        &[("Authorization", &v.bearer)],
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(join_token_of(&v.server, &v.link).await.status, 200);
    v.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_guest_link_leaves_the_room_at_once() {
    let v = a_started_visit(None).await;
    let (clinician, _ce, _) = join(&v.server, &clinician_token(&v).await).await;
    let r = http(
        &v.server,
        "POST",
        &format!("/api/visits/{}/guest-links", v.visit),
        &[("Authorization", &v.bearer)],
        Some(r#"{"label": "interpreter"}"#),
    )
    .await;
    let link = r.json()["link"].clone();
    let (link_id, token) = (
        link["id"].as_str().unwrap().to_string(),
        link["url"].as_str().unwrap().rsplit('/').next().unwrap().to_string(),
    );
    let jt = join_token_of(&v.server, &token).await.json()["join_token"].as_str().unwrap().to_string();
    let (guest, mut guest_events, joined) = join(&v.server, &jt).await;
    let Ok(ServerMessage::Joined { participant_id, .. }) = joined else { panic!("{joined:?}") };
    clinician.request(ClientMessage::Admit { id: None, participant_id }).await.expect("admitted");
    // The patient's own link cannot be revoked alone.
    let patient_link = v
        .server
        .app
        .store
        .links_of_visit(&v.visit)
        .await
        .unwrap()
        .into_iter()
        .find(|l| l.role == teleconsult_signaling::store::LinkRole::Patient)
        .unwrap()
        .id;
    let r = http(
        &v.server,
        "POST",
        &format!("/api/visits/{}/links/{patient_link}/revoke", v.visit),
        &[("Authorization", &v.bearer)],
        None,
    )
    .await;
    assert_eq!(r.code().as_deref(), Some("patient_link"));
    let r = http(
        &v.server,
        "POST",
        &format!("/api/visits/{}/links/{link_id}/revoke", v.visit),
        &[("Authorization", &v.bearer)],
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.json()["link"]["revoked_at"].is_string());
    let told = wait_event(&mut guest_events, Duration::from_secs(5), |m| {
        matches!(m, ServerMessage::Error { code: ErrorCode::LinkRevoked, .. })
    })
    .await;
    assert!(told.is_some(), "the guest hears why");
    assert!(eventually(Duration::from_secs(5), || async { guest.is_closed() }).await, "and is disconnected");
    assert_eq!(join_token_of(&v.server, &token).await.code().as_deref(), Some("link_revoked"));
    v.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_account_is_refused_and_its_seats_closed() {
    let v = a_started_visit(None).await;
    let token = clinician_token(&v).await;
    let spare = clinician_token(&v).await;
    let (seated, _events, joined) = join(&v.server, &token).await;
    assert!(matches!(joined, Ok(ServerMessage::Joined { .. })));
    // Disabled from elsewhere (as the admin command line does, in the database).
    let clinician = v.server.app.store.clinician_by_email("onco@h.fr").await.unwrap().unwrap();
    v.server.app.store.set_calendar_token(&clinician.id, Some("feed-hash"), 1).await.unwrap();
    v.server.app.store.set_clinician_active(&clinician.id, false, v.server.app.clock.now()).await.unwrap();
    let (_c, _e, again) = join(&v.server, &spare).await;
    assert_eq!(again.unwrap_err(), Some(ErrorCode::AccountDisabled), "a token minted before is refused");
    assert!(
        eventually(Duration::from_secs(6), || async { seated.is_closed() }).await,
        "the seat already held is closed within seconds"
    );
    assert_eq!(v.server.app.store.calendar_owner("feed-hash").await.unwrap(), None, "the calendar feed goes too");
    let r = http(&v.server, "GET", "/api/auth/me", &[("Authorization", &v.bearer)], None).await;
    assert_eq!(r.code().as_deref(), Some("account_disabled"));
    v.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_slow_sockets_are_closed() {
    let mut config = common::config();
    config.ws_hello_timeout = Duration::from_secs(1);
    config.ws_idle_timeout = Duration::from_secs(3);
    let server = server_with(config).await;
    // No hello: closed with 4002.
    let mut quiet = raw_socket(&server, None).await.unwrap();
    let started = std::time::Instant::now();
    assert_eq!(close_code(&mut quiet, Duration::from_secs(5)).await, Some(4002));
    assert!(started.elapsed() < Duration::from_secs(3));

    // A half-open client (it stops reading, so it never answers pings):
    // closed after the idle timeout, its seat kept for a resume.
    let mut stuck = raw_socket(&server, None).await.unwrap();
    stuck.send(Message::text(r#"{"type":"hello","protocol":1}"#)).await.unwrap();
    let token = common::token(&server, "room-idle", Role::Guest, "Stuck");
    stuck.send(Message::text(format!(r#"{{"type":"join","token":"{token}"}}"#))).await.unwrap();
    let mut participant = None;
    while participant.is_none() {
        let Some(Ok(Message::Text(text))) = stuck.next().await else { panic!("joined") };
        if let Ok(ServerMessage::Joined { participant_id, .. }) = serde_json::from_str(text.as_str()) {
            participant = Some(participant_id);
        }
    }
    let participant = participant.unwrap();
    let detached =
        || server.app.rooms.with_seat("room-idle", &participant, |s| s.outbox.is_none() && s.detached_at.is_some());
    assert_eq!(detached(), Some(false));
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(detached(), Some(true), "the idle socket was closed and its seat waits for a resume");
    drop(stuck);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_origins_and_crowds_from_one_address_are_refused() {
    let mut config = common::config();
    config.ws_max_per_address = 5;
    let server = server_with(config).await;
    let own = format!("http://{}", server.http_addr);
    assert_eq!(raw_socket(&server, Some("https://evil.example")).await.err(), Some(403));
    let mut open = Vec::new();
    for _ in 0..5 {
        open.push(raw_socket(&server, Some(&own)).await.expect("the server's own page may connect"));
    }
    assert_eq!(raw_socket(&server, None).await.err(), Some(429), "a sixth socket from one address is refused");
    drop(open);
    assert!(
        eventually(Duration::from_secs(5), || async { raw_socket(&server, None).await.is_ok() }).await,
        "closed sockets give their slots back"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_answer_the_request_they_are_about() {
    let server = server().await;
    let (c, _e) = SignalingClient::connect(&ws_url(&server)).await.unwrap();
    c.hello().await.unwrap();
    for (raw, code) in [
        (r#"{"type":"teleport","id":"q1"}"#, ErrorCode::UnknownType),
        (r#"{"type":"join","id":"q2"}"#, ErrorCode::BadMessage),
        (r#"{"type":"subscribe_restart","id":"q3"}"#, ErrorCode::NotJoined),
    ] {
        let id = serde_json::from_str::<serde_json::Value>(raw).unwrap()["id"].as_str().unwrap().to_string();
        let reply = c.raw_request(raw, &id).await.expect("a reply to the request");
        assert!(
            matches!(&reply, ServerMessage::Error { id: Some(i), code: c, .. } if *i == id && *c == code),
            "{raw}: {reply:?}"
        );
    }
    // Too fast, or too large: the error still names its request.
    let mut limited = None;
    for n in 0..80 {
        let id = format!("flood{n}");
        let reply = c.raw_request(&format!(r#"{{"type":"ping","id":"{id}"}}"#), &id).await;
        if let Some(ServerMessage::Error { code: ErrorCode::RateLimited, id: Some(i), .. }) = reply {
            limited = Some(i);
            break;
        }
    }
    assert!(limited.is_some_and(|i| i.starts_with("flood")), "rate_limited echoes the id");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let big = format!(r#"{{"type":"chat","id":"big1","text":"{}"}}"#, "x".repeat(70_000));
    let reply = c.raw_request(&big, "big1").await;
    assert!(
        matches!(&reply, Some(ServerMessage::Error { code: ErrorCode::MessageTooLarge, id: Some(i), .. }) if i == "big1"),
        "{reply:?}"
    );
    let (c, _e) = SignalingClient::connect(&ws_url(&server)).await.unwrap();
    c.hello().await.unwrap();

    // Before anyone published, a subscribe restart is `media_not_started`.
    let token = common::token(&server, "room-early", Role::Guest, "Early");
    c.request(ClientMessage::Join { id: None, token }).await.unwrap();
    let err = c.request(ClientMessage::SubscribeRestart { id: None, new_connection: false }).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::MediaNotStarted));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preferred_size_is_checked_and_reaches_the_media_server() {
    let server = server().await;
    let room = "room-sizes";
    let a = common::media_participant(&server, room, Role::Clinician, "A").await;
    let b = common::media_participant(&server, room, Role::Patient, "B").await;
    assert!(eventually(Duration::from_secs(15), || async { b.packets_from(&a.participant_id) > 20 }).await);
    let size = |participant_id: &str, height: u32| ClientMessage::PreferredSize {
        id: None,
        participant_id: participant_id.to_string(),
        height,
        pinned: true,
    };
    let reply = b.signaling.request(size(&a.participant_id, 360)).await.unwrap();
    assert!(matches!(reply, ServerMessage::Ack { .. }), "{reply:?}");
    let err = b.signaling.request(size(&a.participant_id, 0)).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::InvalidSize));
    let err = b.signaling.request(size("p-nobody", 360)).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::ParticipantNotFound));
    // A single-layer video is sent as it comes, whatever size is asked.
    let before = b.packets_from(&a.participant_id);
    let reply = b.signaling.request(size(&a.participant_id, 1)).await.unwrap();
    assert!(matches!(reply, ServerMessage::Ack { .. }), "{reply:?}");
    assert!(eventually(Duration::from_secs(5), || async { b.packets_from(&a.participant_id) > before + 50 }).await);

    // Someone joined but without media yet is told so.
    let (c, _e) = SignalingClient::connect(&ws_url(&server)).await.unwrap();
    c.hello().await.unwrap();
    let token = common::token(&server, "room-sizes-early", Role::Guest, "Early");
    c.request(ClientMessage::Join { id: None, token }).await.unwrap();
    let err = c.request(size(&a.participant_id, 360)).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::MediaNotStarted));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sign_in_flood_never_starves_a_running_call() {
    let mut config = common::config();
    // Behind a proxy, so each guess can come from its own address and only
    // the bounded password checks stand between the flood and the cores.
    config.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
    let log = std::env::temp_dir().join(format!("tc-security-test-{}.log", rand::random::<u32>()));
    config.security_log = Some(log.clone());
    let server = server_with(config).await;
    let room = "room-flood";
    let a = common::media_participant(&server, room, Role::Clinician, "A").await;
    let b = common::media_participant(&server, room, Role::Patient, "B").await;
    assert!(eventually(Duration::from_secs(15), || async { b.packets_from(&a.participant_id) > 50 }).await);

    let latency_p95 = |window: &dyn Fn() -> Vec<u32>| {
        let mut samples = window();
        teleconsult_loadtest::synthetic_media::percentile(&mut samples, 95.0).unwrap_or(u32::MAX)
    };
    let samples_now =
        || -> Vec<u32> { b.reception().tracks.values().flat_map(|t| t.latencies_us.iter().copied()).collect() };
    // The baseline: two quiet seconds of the established call.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mark = samples_now().len();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = samples_now();
    let quiet: Vec<u32> = before[mark.min(before.len())..].to_vec();
    let baseline = latency_p95(&|| quiet.clone());

    let started = std::time::Instant::now();
    let mut guesses = Vec::new();
    for i in 0..200 {
        let addr = server.http_addr;
        guesses.push(tokio::spawn(async move {
            let body = format!(r#"{{"email":"nobody{i}@h.fr","password":"wrong password {i}"}}"#);
            let forwarded = format!("198.51.{}.{}", i / 250, i % 250 + 1);
            let t = std::time::Instant::now();
            let r =
                common::http_to(addr, "POST", "/api/auth/login", &[("X-Forwarded-For", &forwarded)], Some(&body)).await;
            (r.status, t.elapsed())
        }));
    }
    let mut statuses = std::collections::BTreeMap::new();
    let mut slowest = Duration::ZERO;
    for g in guesses {
        let (status, took) = g.await.unwrap();
        *statuses.entry(status).or_insert(0) += 1;
        slowest = slowest.max(took);
    }
    let flood = started.elapsed();
    let during: Vec<u32> = samples_now().into_iter().skip(before.len()).collect();
    let under_flood = latency_p95(&|| during.clone());
    assert!(statuses.keys().all(|s| [401, 429, 503].contains(s)), "only refusals: {statuses:?}");
    assert!(statuses.get(&503).copied().unwrap_or(0) > 100, "most are told to come back: {statuses:?}");
    assert!(slowest < Duration::from_secs(4), "every guess is answered quickly (slowest {slowest:?})");
    assert!(
        f64::from(under_flood) <= f64::from(baseline) * 3.0 + 20_000.0,
        "media latency p95 {under_flood} µs under the flood, {baseline} µs before"
    );
    println!(
        "sign-in flood: {statuses:?} in {flood:?}, slowest answer {slowest:?}; media p95 {baseline} µs before, {under_flood} µs during"
    );
    // Each refusal is a security event, without raw addresses or emails.
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.lines().any(|l| l.contains("\"sign_in_failed\"")));
    assert!(text.lines().any(|l| l.contains("\"sign_in_busy\"")));
    assert!(!text.contains("198.51.0.1\"") && !text.contains("nobody1@"), "no raw address, no email");
    let _ = std::fs::remove_file(log);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_with_tokens_or_patient_data_are_never_cached() {
    let v = a_started_visit(None).await;
    let r = http(&v.server, "GET", &format!("/api/visits/{}", v.visit), &[("Authorization", &v.bearer)], None).await;
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let r = join_token_of(&v.server, &v.link).await;
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let r = http(&v.server, "GET", &format!("/join/{}", v.link), &[], None).await;
    assert_eq!((r.status, r.header("cache-control")), (200, Some("no-store")));
    let r = http(&v.server, "GET", "/console.js", &[], None).await;
    assert_eq!(r.header("cache-control"), Some("no-cache"), "the client's own files may be revalidated");
    v.server.shutdown().await;
}

/// A raw WebSocket over a TCP socket with a tiny receive buffer, so that a
/// client that stops reading backs the server up quickly.
async fn raw_socket_small_buffer(server: &RunningServer) -> RawSocket {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(server.http_addr).await.unwrap();
    let (ws, _) = tokio_tungstenite::client_async(ws_url(server), tokio_tungstenite::MaybeTlsStream::Plain(stream))
        .await
        .expect("handshake");
    ws
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_closed_and_catches_up_on_resume() {
    let mut config = common::config();
    // Long enough that only the full queue, not silence, closes the socket.
    config.ws_idle_timeout = Duration::from_secs(300);
    config.max_participants = 16;
    let server = server_with(config).await;
    let room = "room-stuck";
    let mut stuck = raw_socket_small_buffer(&server).await;
    stuck.send(Message::text(r#"{"type":"hello","protocol":1}"#)).await.unwrap();
    let token = common::token(&server, room, Role::Clinician, "Stuck");
    stuck.send(Message::text(format!(r#"{{"type":"join","token":"{token}"}}"#))).await.unwrap();
    let (participant, resume_token) = loop {
        let Some(Ok(Message::Text(text))) = stuck.next().await else { panic!("joined") };
        if let Ok(ServerMessage::Joined { participant_id, resume_token, .. }) = serde_json::from_str(text.as_str()) {
            break (participant_id, resume_token);
        }
    };

    // It stops reading. Twelve others talk: long chat lines, each at the
    // rate it is allowed, until the stuck client's queue overflows (after
    // the kernel's socket buffers, a few megabytes on loopback, are full).
    let mut talkers = Vec::new();
    for i in 0..12 {
        let name = format!("Talker {i}");
        let (c, e, id, _, _) =
            common::join_ws(&ws_url(&server), common::token(&server, room, Role::Clinician, &name)).await;
        talkers.push((std::sync::Arc::new(c), e, id));
    }
    let closed = || server.app.rooms.with_seat(room, &participant, |s| s.outbox.is_none()) == Some(true);
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut chatter = Vec::new();
    for (c, _, _) in &talkers {
        let (c, sent, stop) = (c.clone(), sent.clone(), stop.clone());
        chatter.push(tokio::spawn(async move {
            let line = "x".repeat(1000);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if c.request(ClientMessage::Chat { id: None, text: line.clone() }).await.is_ok() {
                    sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(55)).await;
            }
        }));
    }
    assert!(eventually(Duration::from_secs(100), || async { closed() }).await, "the stuck client's session ended");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for task in chatter {
        task.await.unwrap();
    }
    let sent = sent.load(std::sync::atomic::Ordering::Relaxed);
    // The others were never disturbed.
    for (c, _, _) in &talkers {
        assert!(matches!(c.request(ClientMessage::Ping { id: None }).await, Ok(ServerMessage::Pong { .. })));
    }
    // What the stuck client finally reads ends with the resume close code,
    // or, when even that frame could not get through, with the connection
    // dropped; never with another code.
    let ending = close_code(&mut stuck, Duration::from_secs(30)).await;
    assert!(matches!(ending, Some(4008) | None), "{ending:?}");

    // Meanwhile someone new arrived; the resume tells of them.
    let (_late, _late_events, late_id, _, _) =
        common::join_ws(&ws_url(&server), common::token(&server, room, Role::Guest, "Late")).await;
    let (again, _events) = SignalingClient::connect(&ws_url(&server)).await.unwrap();
    again.hello().await.unwrap();
    let reply = again.request(ClientMessage::Resume { id: None, resume_token }).await.expect("resumes");
    let ServerMessage::Resumed { participant_id, participants, .. } = reply else { panic!("{reply:?}") };
    assert_eq!(participant_id, participant, "same seat");
    let mut present: Vec<&str> = participants.iter().map(|p| p.participant_id.as_str()).collect();
    present.sort();
    let mut expected: Vec<&str> = talkers.iter().map(|(_, _, id)| id.as_str()).chain([late_id.as_str()]).collect();
    expected.sort();
    assert!(expected.iter().all(|id| present.contains(id)), "resumed with everyone present: {present:?}");
    println!("stuck client closed after {sent} chat lines");
    server.shutdown().await;
}
