//! Who may do what: every role against every visits endpoint and every
//! clinician-only WebSocket action, with the exact status and code; and the
//! token attacks the issue lists.

mod common;

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::{create_staff, create_visit, http, login, server, wait_event, ws_url};
use serde_json::json;
use teleconsult_loadtest::SignalingClient;
use teleconsult_protocol::{ClientMessage, ErrorCode, Role, ServerMessage};
use teleconsult_signaling::join_token::{ISSUER, TokenKeys, unix_now};
use teleconsult_signaling::staff_auth::{API_AUDIENCE, AccessClaims};
use teleconsult_signaling::store::StaffRole;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Actor {
    Admin,
    Owner,
    OtherClinician,
    Ops,
    Anonymous,
    /// A patient presenting their join token as if it were a staff token.
    PatientToken,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_authorization_matrix() {
    let server = server().await;
    create_staff(&server, "admin@h.fr", StaffRole::Admin).await;
    create_staff(&server, "owner@h.fr", StaffRole::Clinician).await;
    create_staff(&server, "other@h.fr", StaffRole::Clinician).await;
    create_staff(&server, "ops@h.fr", StaffRole::Ops).await;
    let admin = login(&server, "admin@h.fr").await;
    let owner = login(&server, "owner@h.fr").await;
    let other = login(&server, "other@h.fr").await;
    let ops = login(&server, "ops@h.fr").await;
    let (probe_visit, probe_link) = create_visit(&server, &owner, 0).await;
    let px = http(&server, "POST", &format!("/api/join/{probe_link}"), &[], None).await.json();
    let patient_token = format!("Bearer {}", px["join_token"].as_str().unwrap());
    let _ = probe_visit;

    let bearer = |actor: Actor| -> Option<String> {
        match actor {
            Actor::Admin => Some(admin.bearer()),
            Actor::Owner => Some(owner.bearer()),
            Actor::OtherClinician => Some(other.bearer()),
            Actor::Ops => Some(ops.bearer()),
            Actor::Anonymous => None,
            Actor::PatientToken => Some(patient_token.clone()),
        }
    };
    // Each booking gets its own time (a clinician never has two visits at once).
    let create_for_owner = json!({"patient": {"display_name": "P"}, "scheduled_start": "__START__", "duration_minutes": 15, "clinician_id": owner.clinician_id}).to_string();

    let owner_day = format!("/api/visits?clinician_id={}", owner.clinician_id);
    // (method, path with {id}, body, expected status for each actor in order:
    //  admin, owner, other clinician, ops, anonymous, patient token)
    let endpoints: Vec<(&str, &str, Option<String>, [u16; 6])> = vec![
        ("GET", "/api/visits/{id}", None, [200, 200, 403, 403, 401, 401]),
        (
            "PATCH",
            "/api/visits/{id}",
            Some(json!({"duration_minutes": 25}).to_string()),
            [200, 200, 403, 403, 401, 401],
        ),
        ("POST", "/api/visits/{id}/start", None, [200, 200, 403, 403, 401, 401]),
        ("POST", "/api/visits/{id}/guest-links", Some("{}".into()), [201, 201, 403, 403, 401, 401]),
        ("POST", "/api/visits/{id}/join-token", None, [200, 200, 403, 403, 401, 401]),
        ("GET", "/api/visits/{id}/audit", None, [200, 200, 403, 403, 401, 401]),
        ("POST", "/api/visits/{id}/cancel", None, [200, 200, 403, 403, 401, 401]),
        ("POST", "/api/visits/{id}/end", None, [200, 200, 403, 403, 401, 401]),
        ("POST", "/api/visits", Some(create_for_owner.clone()), [201, 201, 403, 403, 401, 401]),
        ("GET", "/api/visits", None, [200, 200, 200, 403, 401, 401]),
        ("GET", &owner_day, None, [200, 200, 403, 403, 401, 401]),
        ("GET", "/api/auth/me", None, [200, 200, 200, 200, 401, 401]),
    ];
    let actors = [Actor::Admin, Actor::Owner, Actor::OtherClinician, Actor::Ops, Actor::Anonymous, Actor::PatientToken];
    let mut checked = 0;
    for (method, template, body, expected) in &endpoints {
        for (actor, want) in actors.iter().zip(expected) {
            // A fresh visit each time, so state-changing calls don't interfere.
            let (visit, _) = create_visit(&server, &owner, 3600).await;
            let path = template.replace("{id}", &visit);
            let auth = bearer(*actor);
            let headers: Vec<(&str, &str)> = auth.iter().map(|b| ("Authorization", b.as_str())).collect();
            let start =
                teleconsult_signaling::timefmt::rfc3339(server.app.clock.now() + 30 * 86_400 + checked as i64 * 3600);
            let body = body.as_ref().map(|b| b.replace("__START__", &start));
            let r = http(&server, method, &path, &headers, body.as_deref()).await;
            assert_eq!(r.status, *want, "{actor:?} {method} {path}: {}", r.body);
            let want_code = match want {
                401 => Some("unauthorized"),
                403 => Some("forbidden"),
                _ => None,
            };
            if want_code.is_some() {
                assert_eq!(r.code().as_deref(), want_code, "{actor:?} {method} {path}");
            }
            checked += 1;
        }
    }
    assert_eq!(checked, endpoints.len() * actors.len());
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_actions_by_role() {
    let server = server().await;
    let url = ws_url(&server);
    create_staff(&server, "owner@h.fr", StaffRole::Clinician).await;
    let owner = login(&server, "owner@h.fr").await;
    let bearer = owner.bearer();
    let auth = [("Authorization", bearer.as_str())];
    let (visit, link) = create_visit(&server, &owner, 0).await;
    let jt = http(&server, "POST", &format!("/api/visits/{visit}/join-token"), &auth, None).await.json();

    let connect = |token: String| common::join_ws(&url, token);
    let (clinician, mut clinician_events, clinician_id, _, clinician_admitted) =
        connect(jt["join_token"].as_str().unwrap().to_string()).await;
    assert!(clinician_admitted);
    let px = http(&server, "POST", &format!("/api/join/{link}"), &[], None).await.json();
    let (patient, _pe, patient_id, _, patient_admitted) = connect(px["join_token"].as_str().unwrap().to_string()).await;
    assert!(!patient_admitted, "patients start in the waiting room");
    let waiting = wait_event(&mut clinician_events, Duration::from_secs(5), |m| {
        matches!(m, ServerMessage::ParticipantWaiting { .. })
    })
    .await;
    assert!(
        matches!(waiting, Some(ServerMessage::ParticipantWaiting { participant, .. }) if participant.participant_id == patient_id)
    );

    let code = |r: Result<ServerMessage, teleconsult_loadtest::SignalingError>| r.err().and_then(|e| e.code());
    // A waiting patient: no media, no clinician actions.
    let admit_self = ClientMessage::Admit { id: None, participant_id: patient_id.clone() };
    assert_eq!(code(patient.request(admit_self.clone()).await), Some(ErrorCode::Forbidden));
    assert_eq!(
        code(
            patient
                .request(ClientMessage::Deny { id: None, participant_id: clinician_id.clone(), message: None })
                .await
        ),
        Some(ErrorCode::Forbidden)
    );
    assert_eq!(
        code(
            patient
                .request(ClientMessage::AskToWait {
                    id: None,
                    participant_id: clinician_id.clone(),
                    message: "x".into()
                })
                .await
        ),
        Some(ErrorCode::Forbidden)
    );
    assert_eq!(code(patient.request(ClientMessage::EndVisit { id: None }).await), Some(ErrorCode::Forbidden));
    assert_eq!(
        code(patient.request(ClientMessage::PublishOffer { id: None, sdp: "v=0".into() }).await),
        Some(ErrorCode::NotAdmitted)
    );
    assert_eq!(
        code(patient.request(ClientMessage::SubscribeRestart { id: None, new_connection: false }).await),
        Some(ErrorCode::NotAdmitted)
    );
    assert_eq!(
        code(
            patient
                .request(ClientMessage::Mute { id: None, kind: teleconsult_protocol::TrackKind::Audio, muted: true })
                .await
        ),
        Some(ErrorCode::NotAdmitted)
    );
    // A clinician's actions on people who are not there, or not waiting.
    assert_eq!(
        code(clinician.request(ClientMessage::Admit { id: None, participant_id: "p-nobody".into() }).await),
        Some(ErrorCode::ParticipantNotFound)
    );
    assert_eq!(
        code(clinician.request(ClientMessage::Admit { id: None, participant_id: clinician_id.clone() }).await),
        Some(ErrorCode::NotWaiting)
    );
    let long = "x".repeat(501);
    assert_eq!(
        code(
            clinician
                .request(ClientMessage::AskToWait { id: None, participant_id: patient_id.clone(), message: long })
                .await
        ),
        Some(ErrorCode::BadMessage)
    );
    // And the admit itself works.
    assert!(matches!(clinician.request(admit_self).await, Ok(ServerMessage::Ack { .. })));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_attacks_are_rejected() {
    let server = server().await;
    let url = ws_url(&server);
    create_staff(&server, "owner@h.fr", StaffRole::Clinician).await;
    create_staff(&server, "other@h.fr", StaffRole::Clinician).await;
    let owner = login(&server, "owner@h.fr").await;
    let other = login(&server, "other@h.fr").await;
    let (visit, link) = create_visit(&server, &owner, 0).await;
    let (other_visit, _) = create_visit(&server, &other, 0).await;
    let now = unix_now();
    let me = |bearer: &str| {
        let bearer = bearer.to_string();
        let server = &server;
        async move { http(server, "GET", "/api/auth/me", &[("Authorization", &bearer)], None).await }
    };
    let claims = |iat: u64, nbf: u64, exp: u64| AccessClaims {
        iss: ISSUER.into(),
        aud: API_AUDIENCE.into(),
        sub: owner.clinician_id.clone(),
        role: StaffRole::Admin,
        iat,
        nbf,
        exp,
    };
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims(now, now, now + 600)).unwrap());

    // alg: none
    let none = format!("{}.{payload}.", URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT","kid":"k1"}"#));
    assert_eq!(me(&format!("Bearer {none}")).await.code().as_deref(), Some("unauthorized"));
    // HS/RS confusion: an RS256 header over an HMAC signature made with the "public" material.
    let rs_header = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","typ":"JWT","kid":"k1"}"#);
    let forged = {
        let keys =
            TokenKeys::from_secret("k1", b"-----BEGIN PUBLIC KEY----- not really -----END PUBLIC KEY-----").unwrap();
        let signed = keys.sign(&claims(now, now, now + 600)).unwrap();
        format!("{rs_header}.{payload}.{}", signed.rsplit('.').next().unwrap())
    };
    assert_eq!(me(&format!("Bearer {forged}")).await.code().as_deref(), Some("unauthorized"));
    // The wrong key, even claiming admin.
    let wrong = TokenKeys::from_secret("k1", b"the wrong key, long enough to pass")
        .unwrap()
        .sign(&claims(now, now, now + 600))
        .unwrap();
    assert_eq!(me(&format!("Bearer {wrong}")).await.code().as_deref(), Some("unauthorized"));
    // Expired, and not yet valid, with the right key.
    let expired = server.app.keys.sign(&claims(now - 7200, now - 7200, now - 3600)).unwrap();
    assert_eq!(me(&format!("Bearer {expired}")).await.code().as_deref(), Some("token_expired"));
    let future = server.app.keys.sign(&claims(now, now + 3600, now + 7200)).unwrap();
    assert_eq!(me(&format!("Bearer {future}")).await.code().as_deref(), Some("unauthorized"));
    // The right token still works (the matrix is not vacuous).
    let good = server.app.keys.sign(&claims(now, now, now + 600)).unwrap();
    assert_eq!(me(&format!("Bearer {good}")).await.status, 200);

    // An access token is not a join token, and vice versa (audiences differ).
    let (c, _e) = SignalingClient::connect(&url).await.unwrap();
    c.hello().await.unwrap();
    let err = c.request(ClientMessage::Join { id: None, token: owner.access.clone() }).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::InvalidToken));
    // A not-yet-valid join token.
    let mut jc = server
        .app
        .keys
        .verify_join(&server.app.keys.mint_join(&visit, Role::Patient, "P", "s", now, 60, false).unwrap())
        .unwrap();
    jc.nbf = now + 3600;
    jc.exp = now + 7200;
    let err = c.request(ClientMessage::Join { id: None, token: server.app.keys.sign(&jc).unwrap() }).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::InvalidToken));

    // A token for another room: a clinician cannot get one for a visit not theirs,
    // and a patient's token seats them in their own visit only.
    let r = http(
        &server,
        "POST",
        &format!("/api/visits/{other_visit}/join-token"),
        &[("Authorization", &owner.bearer())],
        None,
    )
    .await;
    assert_eq!(r.status, 403);
    let px = http(&server, "POST", &format!("/api/join/{link}"), &[], None).await.json();
    let joined =
        c.request(ClientMessage::Join { id: None, token: px["join_token"].as_str().unwrap().into() }).await.unwrap();
    assert!(matches!(joined, ServerMessage::Joined { room_id, .. } if room_id == visit));
    server.shutdown().await;
}
