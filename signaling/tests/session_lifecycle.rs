//! Seats outlive WebSockets for the resume grace period; silent peers are
//! removed; shutdown tells everyone.

mod common;

use std::time::Duration;

use common::{config, eventually, server, server_with, token, wait_event, ws_url};
use teleconsult_loadtest::{Participant, ParticipantOptions, SignalingClient};
use teleconsult_protocol::{ClientMessage, ErrorCode, Role, ServerMessage};
use tokio::sync::mpsc::UnboundedReceiver;

async fn join(url: &str, token: String) -> (SignalingClient, UnboundedReceiver<ServerMessage>, String, String) {
    let (c, e, participant_id, resume_token, _) = common::join_ws(url, token).await;
    (c, e, participant_id, resume_token)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_within_grace_keeps_the_seat_and_the_media() {
    let server = server().await;
    let url = ws_url(&server);
    let room = "room-resume";
    let a = common::media_participant(&server, room, Role::Patient, "A").await;
    let b = common::media_participant(&server, room, Role::Clinician, "B").await;
    assert!(eventually(Duration::from_secs(15), || async { b.packets_from(&a.participant_id) > 0 }).await);

    // A's WebSocket drops; its media does not.
    a.signaling.close();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = b.packets_from(&a.participant_id);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(b.packets_from(&a.participant_id) > before + 20, "media flows while the socket is down");

    // A comes back with its resume token: same seat, new token.
    let (c, _e) = SignalingClient::connect(&url).await.unwrap();
    c.hello().await.unwrap();
    let reply = c.request(ClientMessage::Resume { id: None, resume_token: a.resume_token.clone() }).await.unwrap();
    let ServerMessage::Resumed { participant_id, resume_token, participants, tracks, media, .. } = reply else {
        panic!("{reply:?}")
    };
    assert_eq!(participant_id, a.participant_id);
    assert!(media, "the media server still holds A's media");
    assert_eq!(tracks.len(), 2, "B's audio and video are restated: {tracks:?}");
    assert_ne!(resume_token, a.resume_token, "the token rotates");
    assert!(participants.iter().any(|p| p.participant_id == b.participant_id));
    // Nobody was told A left.
    assert!(!b.events().iter().any(|e| matches!(e, ServerMessage::ParticipantLeft { .. })));
    // The spent token no longer works.
    let (d, _e) = SignalingClient::connect(&url).await.unwrap();
    d.hello().await.unwrap();
    let err = d.request(ClientMessage::Resume { id: None, resume_token: a.resume_token.clone() }).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::ResumeFailed));
    // The resumed session speaks for the seat.
    c.request(ClientMessage::Mute { id: None, kind: teleconsult_protocol::TrackKind::Audio, muted: true })
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(3), || async {
            b.events().iter().any(|e| matches!(e, ServerMessage::MuteChanged { participant_id, muted: true, .. } if *participant_id == a.participant_id))
        })
        .await
    );
    b.leave().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seat_is_freed_when_the_grace_period_ends() {
    let mut cfg = config();
    cfg.resume_grace = Duration::from_secs(1);
    let server = server_with(cfg).await;
    let url = ws_url(&server);
    let (_b, mut b_events, _, _) = join(&url, token(&server, "room-grace", Role::Clinician, "B")).await;
    let (a, _a_events, a_id, a_resume) = join(&url, token(&server, "room-grace", Role::Patient, "A")).await;
    a.close();
    let left =
        wait_event(&mut b_events, Duration::from_secs(5), |m| matches!(m, ServerMessage::ParticipantLeft { .. })).await;
    let Some(ServerMessage::ParticipantLeft { participant_id, reason }) = left else { panic!("no participant_left") };
    assert_eq!((participant_id.as_str(), reason.as_str()), (a_id.as_str(), "timeout"));
    let (c, _e) = SignalingClient::connect(&url).await.unwrap();
    c.hello().await.unwrap();
    let err = c.request(ClientMessage::Resume { id: None, resume_token: a_resume }).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::ResumeFailed));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_peer_is_removed_and_its_tracks_renegotiated_away() {
    let mut cfg = config();
    cfg.peer_timeout = Duration::from_secs(2);
    let server = server_with(cfg).await;
    let url = ws_url(&server);
    let room = "room-silent";
    let b = common::media_participant(&server, room, Role::Clinician, "B").await;
    // S runs on a runtime of its own; stopping that runtime silences it
    // mid-call with no goodbye of any kind, as a pulled network cable would.
    let s_options = ParticipantOptions::new(url.clone(), token(&server, room, Role::Patient, "S"));
    let (id_tx, id_rx) = tokio::sync::oneshot::channel();
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let s_thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let s = rt.block_on(Participant::connect(&s_options)).unwrap();
        let _ = id_tx.send(s.participant_id.clone());
        let _ = stop_rx.recv();
        std::mem::forget(s);
        rt.shutdown_background();
    });
    let s_id = id_rx.await.unwrap();
    assert!(eventually(Duration::from_secs(15), || async { b.packets_from(&s_id) > 0 }).await, "S's media reaches B");
    let _ = stop_tx.send(());
    s_thread.join().unwrap();
    assert!(
        eventually(Duration::from_secs(8), || async {
            b.events()
                .iter()
                .filter(|e| matches!(e, ServerMessage::TrackRemoved { track } if track.participant_id == s_id))
                .count()
                == 2
        })
        .await,
        "S's tracks leave B's subscription after the peer timeout"
    );
    let offer = b.last_subscribe_offer().unwrap_or_default();
    assert_eq!(common::live_sections_of(&offer, &s_id), 0);
    b.leave().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_tells_every_session() {
    let server = server().await;
    let url = ws_url(&server);
    let (_a, mut events, _, _) = join(&url, token(&server, "room-stop", Role::Patient, "A")).await;
    let stopping = tokio::spawn(server.shutdown());
    let closed =
        wait_event(&mut events, Duration::from_secs(5), |m| matches!(m, ServerMessage::RoomClosed { .. })).await;
    assert!(matches!(closed, Some(ServerMessage::RoomClosed { reason }) if reason == "server_shutdown"));
    tokio::time::timeout(Duration::from_secs(10), stopping).await.expect("shutdown completes").unwrap();
}
