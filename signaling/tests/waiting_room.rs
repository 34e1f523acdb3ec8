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

/// A class of a leader and three patients (one still waiting): hands go up
/// and down for everyone in the call, only the leader lowers another's
/// hand or asks all to mute, and the waiting patient takes no part.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hands_and_mute_all_in_a_class() {
    let server = server().await;
    create_staff(&server, "apa@h.fr", StaffRole::Clinician).await;
    let s = login(&server, "apa@h.fr").await;
    let bearer = s.bearer();
    let (visit, links) = visit_with_links(&server, &bearer, "group", 2).await;
    let url = ws_url(&server);
    let auth = [("Authorization", bearer.as_str())];
    let jt = http(&server, "POST", &format!("/api/visits/{visit}/join-token"), &auth, None).await.json();
    let (leader, mut leader_events, leader_id, ..) =
        common::join_ws(&url, jt["join_token"].as_str().unwrap().to_string()).await;
    let mut people = Vec::new();
    for link in &links {
        let x = http(&server, "POST", &format!("/api/join/{link}"), &[], None).await.json();
        people.push(common::join_ws(&url, x["join_token"].as_str().unwrap().to_string()).await);
    }
    for (_, _, participant, _, _) in &people[..2] {
        leader.request(ClientMessage::Admit { id: None, participant_id: participant.clone() }).await.expect("admit");
    }
    let [(a, mut a_events, a_id, ..), (b, mut b_events, b_id, ..), (waiting, mut waiting_events, ..)] =
        <[_; 3]>::try_from(people).ok().unwrap();
    let hand = |who: &str, up: bool| {
        let who = who.to_string();
        move |m: &ServerMessage| matches!(m, ServerMessage::HandChanged { participant_id, raised } if *participant_id == who && *raised == up)
    };
    let limit = Duration::from_secs(5);

    // A raises a hand: the leader and B see it.
    a.request(ClientMessage::RaiseHand { id: None, raised: true }).await.expect("raise");
    assert!(wait_event(&mut leader_events, limit, hand(&a_id, true)).await.is_some(), "the leader sees the hand");
    assert!(wait_event(&mut b_events, limit, hand(&a_id, true)).await.is_some(), "B sees the hand");
    // B may not lower A's hand, nor ask all to mute: forbidden, echoing the id.
    for m in [
        ClientMessage::LowerHand { id: Some("x1".into()), participant_id: a_id.clone() },
        ClientMessage::MuteAll { id: Some("x2".into()) },
    ] {
        let e = b.request(m).await.expect_err("forbidden");
        assert_eq!(e.code(), Some(ErrorCode::Forbidden), "{e}");
    }
    // The waiting patient has no hand to raise.
    let e = waiting.request(ClientMessage::RaiseHand { id: None, raised: true }).await.expect_err("not admitted");
    assert_eq!(e.code(), Some(ErrorCode::NotAdmitted), "{e}");
    // The leader lowers it: A and B are told.
    leader.request(ClientMessage::LowerHand { id: None, participant_id: a_id.clone() }).await.expect("lower");
    assert!(wait_event(&mut a_events, limit, hand(&a_id, false)).await.is_some(), "A is told");
    assert!(wait_event(&mut b_events, limit, hand(&a_id, false)).await.is_some(), "B is told");
    let e =
        leader.request(ClientMessage::LowerHand { id: None, participant_id: "nobody".into() }).await.expect_err("404");
    assert_eq!(e.code(), Some(ErrorCode::ParticipantNotFound), "{e}");
    // Mute all: everyone in the call but the leader is asked; not the waiting room.
    leader.request(ClientMessage::MuteAll { id: None }).await.expect("mute all");
    for events in [&mut a_events, &mut b_events] {
        assert!(wait_event(events, limit, |m| matches!(m, ServerMessage::MuteRequested)).await.is_some());
    }
    assert!(
        wait_event(&mut waiting_events, Duration::from_millis(500), |m| matches!(
            m,
            ServerMessage::MuteRequested | ServerMessage::HandChanged { .. }
        ))
        .await
        .is_none(),
        "the waiting room hears nothing of the call"
    );
    assert!(
        wait_event(&mut leader_events, Duration::from_millis(300), |m| matches!(m, ServerMessage::MuteRequested))
            .await
            .is_none(),
        "the leader is not asked to mute"
    );
    // B raises a hand and A reloads (a new connection for the same link):
    // the admitted seat's info carries the raised hand.
    b.request(ClientMessage::RaiseHand { id: None, raised: true }).await.expect("raise");
    assert!(wait_event(&mut leader_events, limit, hand(&b_id, true)).await.is_some());
    let x = http(&server, "POST", &format!("/api/join/{}", links[0]), &[], None).await.json();
    let (a2, _a2_events) = SignalingClient::connect(&url).await.expect("connects");
    a2.hello().await.expect("hello");
    let joined = a2
        .request(ClientMessage::Join { id: None, token: x["join_token"].as_str().unwrap().to_string() })
        .await
        .expect("joins again");
    let ServerMessage::Joined { admitted, participants, .. } = joined else { panic!("{joined:?}") };
    assert!(admitted, "a reload keeps the admission");
    let hands: Vec<(bool, bool)> = participants
        .iter()
        .filter(|p| p.participant_id == b_id || p.participant_id == leader_id)
        .map(|p| (p.participant_id == b_id, p.hand_raised))
        .collect();
    assert!(hands.contains(&(true, true)), "the page after a reload shows B's raised hand: {participants:?}");
    assert!(hands.contains(&(false, false)), "and the leader's is down");
    drop(a);
}
