//! Bad input gets its documented error code (or is dropped), and a call
//! already running in the same server keeps flowing throughout.

mod common;

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::{eventually, server, token, wait_event, ws_url};
use teleconsult_loadtest::{Participant, SignalingClient};
use teleconsult_protocol::{ClientMessage, ErrorCode, PROTOCOL_VERSION, Role, ServerMessage};
use teleconsult_signaling::join_token::{TokenKeys, unix_now};
use tokio::sync::mpsc::UnboundedReceiver;

/// Waits for the next `error` event (errors without an id come as events).
async fn next_error(events: &mut UnboundedReceiver<ServerMessage>) -> Option<ErrorCode> {
    match wait_event(events, Duration::from_secs(5), |m| matches!(m, ServerMessage::Error { .. })).await? {
        ServerMessage::Error { code, .. } => Some(code),
        _ => None,
    }
}

async fn connected(url: &str) -> (SignalingClient, UnboundedReceiver<ServerMessage>) {
    let (c, e) = SignalingClient::connect(url).await.expect("connects");
    c.hello().await.expect("hello");
    (c, e)
}

async fn join_error(url: &str, token: String) -> Option<ErrorCode> {
    let (c, _e) = connected(url).await;
    c.request(ClientMessage::Join { id: None, token }).await.err().and_then(|e| e.code())
}

/// Asserts the running call between `a` and `b` keeps flowing, both ways.
async fn still_flowing(a: &Participant, b: &Participant) {
    let (ab, ba) = (a.packets_from(&b.participant_id), b.packets_from(&a.participant_id));
    assert!(
        eventually(Duration::from_secs(3), || async {
            a.packets_from(&b.participant_id) > ab + 20 && b.packets_from(&a.participant_id) > ba + 20
        })
        .await,
        "the running call keeps flowing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_never_hurts_a_running_call() {
    let server = server().await;
    let url = ws_url(&server);
    let room = "room-hostile";
    let a = common::media_participant(&server, room, Role::Clinician, "A").await;
    let b = common::media_participant(&server, room, Role::Patient, "B").await;
    assert!(
        eventually(Duration::from_secs(15), || async {
            a.packets_from(&b.participant_id) > 0 && b.packets_from(&a.participant_id) > 0
        })
        .await
    );

    // --- WebSocket frames ---
    let (c, mut events) = SignalingClient::connect(&url).await.unwrap();
    c.send(&ClientMessage::Join { id: None, token: "x".into() }).unwrap();
    assert_eq!(next_error(&mut events).await, Some(ErrorCode::HelloRequired));
    c.hello().await.unwrap();
    c.send_raw("{this is not json").unwrap();
    assert_eq!(next_error(&mut events).await, Some(ErrorCode::BadJson));
    c.send_raw(r#"{"type":"teleport","to":"mars"}"#).unwrap();
    assert_eq!(next_error(&mut events).await, Some(ErrorCode::UnknownType));
    c.send_raw(r#"{"type":"mute","kind":"smell","muted":"yes"}"#).unwrap();
    assert_eq!(next_error(&mut events).await, Some(ErrorCode::BadMessage));
    c.send_binary(vec![0, 159, 146, 150]).unwrap();
    assert_eq!(next_error(&mut events).await, Some(ErrorCode::BinaryNotSupported));
    let err = c.request(ClientMessage::PublishOffer { id: None, sdp: "v=0".into() }).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::NotJoined));
    let err = c.request(ClientMessage::Hello { id: None, protocol: 99 }).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::UnsupportedVersion));

    // An SDP that doesn't parse, from a seated participant.
    let (c, _e) = connected(&url).await;
    c.request(ClientMessage::Join { id: None, token: token(&server, room, Role::Guest, "G") }).await.unwrap();
    for sdp in ["", "v=0\r\nthis is not sdp", &"a=".repeat(10_000)] {
        let err = c.request(ClientMessage::PublishOffer { id: None, sdp: sdp.into() }).await.unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::InvalidSdp), "sdp {:?}", &sdp[..sdp.len().min(20)]);
    }
    let err = c.request(ClientMessage::SubscribeAnswer { id: None, sdp: "v=0".into() }).await.unwrap_err();
    assert!(matches!(err.code(), Some(ErrorCode::InvalidSdp | ErrorCode::NoPendingOffer)));
    c.request(ClientMessage::Leave { id: None }).await.unwrap();

    // A message larger than the protocol limit: error, then the socket closes.
    let (c, mut events) = connected(&url).await;
    c.send_raw(format!(r#"{{"type":"ping","pad":"{}"}}"#, "x".repeat(100_000))).unwrap();
    assert_eq!(next_error(&mut events).await, Some(ErrorCode::MessageTooLarge));
    assert!(c.request(ClientMessage::Ping { id: None }).await.is_err(), "socket closed after an oversized message");
    // Larger than the transport limit: dropped with the connection.
    let (c, _e) = connected(&url).await;
    c.send_raw("x".repeat(2 << 20)).unwrap();
    assert!(c.request(ClientMessage::Ping { id: None }).await.is_err());

    still_flowing(&a, &b).await;

    // --- Tokens ---
    let now = unix_now();
    let expired = server.app.keys.mint_join(room, Role::Patient, "P", "s", now - 7200, 60, true).unwrap();
    assert_eq!(join_error(&url, expired).await, Some(ErrorCode::TokenExpired));
    let good = token(&server, room, Role::Patient, "P");
    let payload = good.split('.').nth(1).unwrap().to_string();
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT","kid":"k1"}"#);
    assert_eq!(join_error(&url, format!("{header}.{payload}.")).await, Some(ErrorCode::InvalidToken));
    let wrong_key = TokenKeys::from_secret("k1", b"somebody else's secret, 32+ bytes").unwrap();
    let forged = wrong_key.mint_join(room, Role::Clinician, "Mallory", "s", now, 600, true).unwrap();
    assert_eq!(join_error(&url, forged).await, Some(ErrorCode::InvalidToken));
    assert_eq!(join_error(&url, "not.a.jwt".into()).await, Some(ErrorCode::InvalidToken));

    // --- A seventh participant in a full room ---
    let mut seats = Vec::new();
    for i in 0..4 {
        let (c, e) = connected(&url).await;
        c.request(ClientMessage::Join { id: None, token: token(&server, room, Role::Guest, &format!("G{i}")) })
            .await
            .expect("seats 3 to 6 are free");
        seats.push((c, e));
    }
    assert_eq!(join_error(&url, token(&server, room, Role::Guest, "G7")).await, Some(ErrorCode::RoomFull));

    // --- Random bytes to the media port ---
    let port = server.media_ports()[0];
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for i in 0..2000u32 {
        let len = 1 + (i as usize * 7919) % 1400;
        let junk: Vec<u8> = (0..len).map(|j| (j as u32).wrapping_mul(2654435761).wrapping_add(i) as u8).collect();
        let _ = socket.send_to(&junk, ("127.0.0.1", port)).await;
        // Also shapes that pass the first-byte demux: RTP-, DTLS- and STUN-looking.
        let mut shaped = junk.clone();
        shaped[0] = [0x80, 0x16, 0x00][i as usize % 3];
        let _ = socket.send_to(&shaped, ("127.0.0.1", port)).await;
    }
    assert!(
        eventually(Duration::from_secs(2), || async { server.app.sfu.worker_stats()[0].datagrams_dropped >= 3000 })
            .await,
        "junk datagrams are counted and dropped"
    );

    still_flowing(&a, &b).await;
    // And a clean window: still at least 95% delivery.
    let (s_a, s_b) = (a.sent_seq(true), b.sent_seq(true));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (e_a, e_b) = (a.sent_seq(true), b.sent_seq(true));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(b.received_in(&a.participant_id, true, s_a, e_a) * 100 >= u64::from(e_a - s_a) * 95);
    assert!(a.received_in(&b.participant_id, true, s_b, e_b) * 100 >= u64::from(e_b - s_b) * 95);

    drop(seats);
    a.leave().await;
    b.leave().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_version_is_checked() {
    let server = server().await;
    let (c, _e) = SignalingClient::connect(&ws_url(&server)).await.unwrap();
    let err = c.request(ClientMessage::Hello { id: None, protocol: PROTOCOL_VERSION + 1 }).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::UnsupportedVersion));
    server.shutdown().await;
}
