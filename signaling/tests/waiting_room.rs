//! The waiting room end to end: a clinician and a patient on webrtc-rs
//! clients, through a real visit, link and WebSocket.

mod common;

use std::time::Duration;

use common::{create_staff, create_visit, eventually, http, login, server, wait_event, ws_url};
use teleconsult_loadtest::{Participant, ParticipantOptions, SignalingClient};
use teleconsult_protocol::{ClientMessage, ErrorCode, ServerMessage};
use teleconsult_signaling::store::StaffRole;

/// A minimal SDP: a waiting participant is refused before any SDP is read.
fn some_offer() -> String {
    "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n".to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admit_deny_and_reconnect() {
    let server = server().await;
    let url = ws_url(&server);
    create_staff(&server, "onco@h.fr", StaffRole::Clinician).await;
    let s = login(&server, "onco@h.fr").await;
    let bearer = s.bearer();
    let auth = [("Authorization", bearer.as_str())];
    let (visit, link) = create_visit(&server, &s, 0).await;
    assert_eq!(http(&server, "POST", &format!("/api/visits/{visit}/start"), &auth, None).await.status, 200);

    // The clinician joins and publishes.
    let jt = http(&server, "POST", &format!("/api/visits/{visit}/join-token"), &auth, None).await.json();
    let clinician = Participant::connect(&ParticipantOptions::new(url.clone(), jt["join_token"].as_str().unwrap()))
        .await
        .expect("clinician connects");

    // The patient exchanges the link and joins: into the waiting room.
    let px = http(&server, "POST", &format!("/api/join/{link}"), &[], None).await.json();
    let patient_opts = ParticipantOptions::new(url.clone(), px["join_token"].as_str().unwrap());
    let (mut patient, mut patient_events) = Participant::join(&patient_opts).await.expect("patient joins");
    assert!(
        eventually(Duration::from_secs(5), || async {
            clinician.events().iter().any(|e| matches!(e, ServerMessage::ParticipantWaiting { participant, .. } if participant.participant_id == patient.participant_id))
        })
        .await,
        "the clinician sees the patient waiting"
    );

    // Before admission: no media either way.
    let err = patient.signaling.request(ClientMessage::PublishOffer { id: None, sdp: some_offer() }).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::NotAdmitted));
    let err = patient
        .signaling
        .request(ClientMessage::Admit { id: None, participant_id: patient.participant_id.clone() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::Forbidden), "a patient never admits anyone");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(clinician.packets_from(&patient.participant_id), 0);
    assert!(patient.reception().tracks.is_empty(), "the patient received no media");

    // The clinician asks the patient to wait, then admits.
    clinician
        .signaling
        .request(ClientMessage::AskToWait {
            id: None,
            participant_id: patient.participant_id.clone(),
            message: "5 minutes".into(),
        })
        .await
        .unwrap();
    let note =
        wait_event(&mut patient_events, Duration::from_secs(5), |m| matches!(m, ServerMessage::WaitMessage { .. }))
            .await;
    assert!(matches!(note, Some(ServerMessage::WaitMessage { message }) if message == "5 minutes"));
    clinician
        .signaling
        .request(ClientMessage::Admit { id: None, participant_id: patient.participant_id.clone() })
        .await
        .unwrap();
    let admitted =
        wait_event(&mut patient_events, Duration::from_secs(5), |m| matches!(m, ServerMessage::Admitted { .. })).await;
    let Some(ServerMessage::Admitted { participants, .. }) = admitted else { panic!("no admitted") };
    assert!(participants.iter().any(|p| p.participant_id == clinician.participant_id));

    // After admission: media both ways.
    patient.start_media(&patient_opts, patient_events).await.expect("patient media");
    assert!(
        eventually(Duration::from_secs(15), || async {
            clinician.packets_from(&patient.participant_id) > 20 && patient.packets_from(&clinician.participant_id) > 20
        })
        .await,
        "both receive media after the admit"
    );

    // The patient's socket drops and comes back within the grace period: still admitted.
    patient.signaling.close();
    let (again, _events) = SignalingClient::connect(&url).await.unwrap();
    again.hello().await.unwrap();
    let reply =
        again.request(ClientMessage::Resume { id: None, resume_token: patient.resume_token.clone() }).await.unwrap();
    assert!(matches!(reply, ServerMessage::Resumed { admitted: true, .. }), "{reply:?}");
    let before = clinician.packets_from(&patient.participant_id);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(clinician.packets_from(&patient.participant_id) > before, "media kept flowing");

    // A guest is denied: a clear message, then the socket closes.
    let g = http(&server, "POST", &format!("/api/visits/{visit}/guest-links"), &auth, Some(r#"{"label":"cousin"}"#))
        .await
        .json();
    let guest_link = g["link"]["url"].as_str().unwrap().rsplit('/').next().unwrap().to_string();
    let gx = http(&server, "POST", &format!("/api/join/{guest_link}"), &[], None).await.json();
    let (guest, mut guest_events) =
        Participant::join(&ParticipantOptions::new(url.clone(), gx["join_token"].as_str().unwrap())).await.unwrap();
    let err = guest.signaling.request(ClientMessage::EndVisit { id: None }).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::Forbidden));
    clinician
        .signaling
        .request(ClientMessage::Deny {
            id: None,
            participant_id: guest.participant_id.clone(),
            message: Some("Not today".into()),
        })
        .await
        .unwrap();
    let denied =
        wait_event(&mut guest_events, Duration::from_secs(5), |m| matches!(m, ServerMessage::Denied { .. })).await;
    assert!(matches!(denied, Some(ServerMessage::Denied { message: Some(m) }) if m == "Not today"));
    assert!(
        eventually(Duration::from_secs(3), || async { guest.signaling.is_closed() }).await,
        "socket closed after a deny"
    );
    // Denying someone already in the call is refused.
    let err = clinician
        .signaling
        .request(ClientMessage::Deny { id: None, participant_id: patient.participant_id.clone(), message: None })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::NotWaiting));

    // The clinician ends the visit for everyone.
    clinician.signaling.send(&ClientMessage::EndVisit { id: None }).unwrap();
    assert!(
        eventually(Duration::from_secs(5), || async {
            patient
                .events()
                .iter()
                .any(|e| matches!(e, ServerMessage::RoomClosed { reason } if reason == "visit_ended"))
                || again.is_closed()
        })
        .await
    );
    let v = http(&server, "GET", &format!("/api/visits/{visit}"), &auth, None).await.json();
    assert_eq!(v["visit"]["status"], "completed");

    let audit = http(&server, "GET", &format!("/api/visits/{visit}/audit"), &auth, None).await.json();
    let actions: Vec<&str> =
        audit["events"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    for wanted in ["link_used", "joined", "admitted", "denied", "ended"] {
        assert!(actions.contains(&wanted), "audit has {wanted}: {actions:?}");
    }
    patient.shutdown().await;
    server.shutdown().await;
}

/// Books a visit of `kind` starting now, with its patient link and
/// `guests` guest links; returns (visit id, link tokens).
async fn visit_with_links(
    server: &teleconsult_signaling::server::RunningServer,
    bearer: &str,
    kind: &str,
    guests: usize,
) -> (String, Vec<String>) {
    let auth = [("Authorization", bearer)];
    let start = teleconsult_signaling::timefmt::rfc3339(server.app.clock.now());
    let body = serde_json::json!({"patient": {"display_name": "Class"}, "scheduled_start": start, "duration_minutes": 60, "kind": kind});
    let r = http(server, "POST", "/api/visits", &auth, Some(&body.to_string())).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let visit = r.json()["visit"]["id"].as_str().unwrap().to_string();
    let token_of = |url: &str| url.rsplit('/').next().unwrap().to_string();
    let mut links = vec![token_of(r.json()["patient_link"]["url"].as_str().unwrap())];
    for _ in 0..guests {
        let g = http(server, "POST", &format!("/api/visits/{visit}/guest-links"), &auth, Some("{}")).await;
        assert_eq!(g.status, 201, "{}", g.body);
        links.push(token_of(g.json()["link"]["url"].as_str().unwrap()));
    }
    assert_eq!(http(server, "POST", &format!("/api/visits/{visit}/start"), &auth, None).await.status, 200);
    (visit, links)
}

/// Twelve people through links wait at once and are admitted one by one;
/// returns how many the call took before `room_full`.
async fn admit_all(
    server: &teleconsult_signaling::server::RunningServer,
    bearer: &str,
    visit: &str,
    links: &[String],
) -> usize {
    let url = ws_url(server);
    let auth = [("Authorization", bearer)];
    let jt = http(server, "POST", &format!("/api/visits/{visit}/join-token"), &auth, None).await.json();
    let (leader, _leader_events, ..) = common::join_ws(&url, jt["join_token"].as_str().unwrap().to_string()).await;
    let mut waiting = Vec::new();
    for link in links {
        let x = http(server, "POST", &format!("/api/join/{link}"), &[], None).await.json();
        let (client, events, participant, _, admitted) =
            common::join_ws(&url, x["join_token"].as_str().unwrap().to_string()).await;
        assert!(!admitted, "a class's patients wait to be let in");
        waiting.push((client, events, participant));
    }
    let mut in_call = 1;
    for (_, _, participant) in &waiting {
        match leader.request(ClientMessage::Admit { id: None, participant_id: participant.clone() }).await {
            Ok(_) => in_call += 1,
            Err(e) => {
                assert_eq!(e.code(), Some(ErrorCode::RoomFull), "{e}");
                break;
            }
        }
    }
    in_call
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_session_holds_a_class_of_twelve_and_a_consultation_keeps_its_limit() {
    let server = server().await;
    create_staff(&server, "apa@h.fr", StaffRole::Clinician).await;
    let s = login(&server, "apa@h.fr").await;
    let bearer = s.bearer();

    let (class, links) = visit_with_links(&server, &bearer, "group", 11).await;
    assert_eq!(admit_all(&server, &bearer, &class, &links).await, 13, "the leader and all twelve are in the class");

    // A consultation keeps the configured limit (6 in the call, 8 waiting).
    create_staff(&server, "onco@h.fr", StaffRole::Clinician).await;
    let s = login(&server, "onco@h.fr").await;
    let (visit, links) = visit_with_links(&server, &s.bearer(), "follow_up", 7).await;
    assert_eq!(admit_all(&server, &s.bearer(), &visit, &links).await, 6, "a consultation's call stops at six");
}
