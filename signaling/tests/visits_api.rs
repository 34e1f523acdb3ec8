//! Staff sign-in, the visits API, patient and guest links, and the audit
//! trail, over real HTTP against a real SQLite store.

mod common;

use common::{create_staff, create_visit, http, login, server, server_at};
use serde_json::json;
use teleconsult_signaling::store::StaffRole;

const NOW: i64 = 1_800_000_000; // 2027-01-15T08:00:00Z

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_refresh_rotation_replay_and_logout() {
    let server = server().await;
    create_staff(&server, "oncologist@h.fr", StaffRole::Clinician).await;

    // Wrong password and unknown email get the same answer.
    let wrong = http(
        &server,
        "POST",
        "/api/auth/login",
        &[],
        Some(r#"{"email":"oncologist@h.fr","password":"nope nope nope"}"#),
    )
    .await;
    let unknown =
        http(&server, "POST", "/api/auth/login", &[], Some(r#"{"email":"nobody@h.fr","password":"nope nope nope"}"#))
            .await;
    assert_eq!((wrong.status, unknown.status), (401, 401));
    assert_eq!(wrong.body, unknown.body);

    let s = login(&server, "OncoLogist@H.fr").await;
    let cookie = http(
        &server,
        "POST",
        "/api/auth/login",
        &[],
        Some(r#"{"email":"oncologist@h.fr","password":"a long enough password"}"#),
    )
    .await;
    let set_cookie = cookie.header("set-cookie").unwrap();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/api/auth", "Secure"] {
        assert!(set_cookie.contains(attr), "cookie has {attr}: {set_cookie}");
    }
    let me = http(&server, "GET", "/api/auth/me", &[("Authorization", &s.bearer())], None).await;
    assert_eq!(me.status, 200);
    assert!(me.json()["clinician"].get("password_hash").is_none(), "no hash on the wire");

    // Rotation: the old refresh token works once; replaying it kills the family.
    let r1 = http(&server, "POST", "/api/auth/refresh", &[("Cookie", &s.refresh_cookie)], None).await;
    assert_eq!(r1.status, 200, "{}", r1.body);
    let rotated = r1.header("set-cookie").unwrap().split(';').next().unwrap().to_string();
    assert_ne!(rotated, s.refresh_cookie);
    let replay = http(&server, "POST", "/api/auth/refresh", &[("Cookie", &s.refresh_cookie)], None).await;
    assert_eq!((replay.status, replay.code().as_deref()), (401, Some("invalid_refresh")));
    let after = http(&server, "POST", "/api/auth/refresh", &[("Cookie", &rotated)], None).await;
    assert_eq!(after.status, 401, "the replay revoked the rotated token too");

    // Logout revokes.
    let s2 = login(&server, "oncologist@h.fr").await;
    let out = http(&server, "POST", "/api/auth/logout", &[("Cookie", &s2.refresh_cookie)], None).await;
    assert_eq!(out.status, 204);
    let dead = http(&server, "POST", "/api/auth/refresh", &[("Cookie", &s2.refresh_cookie)], None).await;
    assert_eq!(dead.status, 401);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_are_slowed_per_account() {
    let server = server().await;
    create_staff(&server, "surgeon@h.fr", StaffRole::Clinician).await;
    let bad = r#"{"email":"surgeon@h.fr","password":"wrong password!"}"#;
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(http(&server, "POST", "/api/auth/login", &[], Some(bad)).await.status);
    }
    assert_eq!(statuses, [401, 401, 401, 429, 429]);
    let throttled = http(&server, "POST", "/api/auth/login", &[], Some(bad)).await;
    assert_eq!(throttled.code().as_deref(), Some("too_many_attempts"));
    assert!(throttled.header("retry-after").is_some());
    // Even the right password waits: the delay protects the account.
    let good = r#"{"email":"surgeon@h.fr","password":"a long enough password"}"#;
    assert_eq!(http(&server, "POST", "/api/auth/login", &[], Some(good)).await.status, 429);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(http(&server, "POST", "/api/auth/login", &[], Some(good)).await.status, 200);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn visit_lifecycle_links_and_audit() {
    let (server, clock) = server_at(NOW).await;
    create_staff(&server, "onco@h.fr", StaffRole::Clinician).await;
    let s = login(&server, "onco@h.fr").await;
    let auth = [("Authorization", s.bearer())];
    let auth: Vec<(&str, &str)> = auth.iter().map(|(k, v)| (*k, v.as_str())).collect();

    // A visit in two hours: its link is not valid yet.
    let (visit, link) = create_visit(&server, &s, 2 * 3600).await;
    let early = http(&server, "POST", &format!("/api/join/{link}"), &[], None).await;
    assert_eq!((early.status, early.code().as_deref()), (403, Some("link_not_yet_valid")));
    assert!(early.json()["error"]["details"]["valid_from"].is_string());

    // 29 minutes before the start, it opens.
    clock.set(NOW + 2 * 3600 - 29 * 60);
    let ok = http(&server, "POST", &format!("/api/join/{link}"), &[], None).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(ok.json()["role"], "patient");
    assert_eq!(ok.json()["visit"]["clinician"]["display_name"], "Dr onco@h.fr");

    // A tampered token and a random one are unknown.
    let mut tampered = link.clone().into_bytes();
    tampered[5] = if tampered[5] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    assert_eq!(
        http(&server, "POST", &format!("/api/join/{tampered}"), &[], None).await.code().as_deref(),
        Some("link_unknown")
    );
    assert_eq!(http(&server, "POST", "/api/join/short", &[], None).await.code().as_deref(), Some("link_unknown"));

    // Today's list has it.
    let day = teleconsult_signaling::timefmt::rfc3339(NOW)[..10].to_string();
    let list = http(&server, "GET", &format!("/api/visits?date={day}"), &auth, None).await;
    assert_eq!(list.status, 200);
    assert_eq!(list.json()["visits"].as_array().unwrap().len(), 1);
    assert_eq!(list.json()["visits"][0]["patient"]["display_name"], "Jeanne Dupont");

    // The questionnaire is stored with the visit and flagged.
    let answers = json!({"fever": true, "cough": false, "breathlessness": false, "pain": 8, "fatigue": true, "new_symptoms": "rash on the arm"});
    let q = http(&server, "POST", &format!("/api/join/{link}/questionnaire"), &[], Some(&answers.to_string())).await;
    assert_eq!(q.status, 200, "{}", q.body);
    let got = http(&server, "GET", &format!("/api/visits/{visit}"), &auth, None).await.json();
    assert_eq!(got["visit"]["questionnaire"], answers);
    assert_eq!(got["visit"]["red_flags"], json!(["fever", "pain"]));
    assert_eq!(got["visit"]["links"].as_array().unwrap().len(), 1);
    assert!(got["visit"]["links"][0].get("url").is_none(), "the token is shown only once");

    // Reschedule by a day: the link window moves with the visit.
    let later = teleconsult_signaling::timefmt::rfc3339(NOW + 26 * 3600);
    let r = http(
        &server,
        "PATCH",
        &format!("/api/visits/{visit}"),
        &auth,
        Some(&json!({"scheduled_start": later}).to_string()),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        http(&server, "POST", &format!("/api/join/{link}"), &[], None).await.code().as_deref(),
        Some("link_not_yet_valid")
    );

    // A guest link works alongside.
    clock.set(NOW + 26 * 3600);
    let g =
        http(&server, "POST", &format!("/api/visits/{visit}/guest-links"), &auth, Some(r#"{"label":"interpreter"}"#))
            .await;
    assert_eq!(g.status, 201, "{}", g.body);
    let guest = g.json()["link"]["url"].as_str().unwrap().rsplit('/').next().unwrap().to_string();
    let gx = http(&server, "POST", &format!("/api/join/{guest}"), &[], None).await;
    assert_eq!((gx.json()["role"].as_str(), gx.json()["display_name"].as_str()), (Some("guest"), Some("interpreter")));
    // A guest cannot answer the patient's questionnaire.
    assert_eq!(
        http(&server, "POST", &format!("/api/join/{guest}/questionnaire"), &[], Some(&answers.to_string()))
            .await
            .status,
        403
    );

    // Start, then end: completed, and the link now says the visit is over.
    assert_eq!(http(&server, "POST", &format!("/api/visits/{visit}/start"), &auth, None).await.status, 200);
    let jt = http(&server, "POST", &format!("/api/visits/{visit}/join-token"), &auth, None).await;
    assert!(jt.json()["join_token"].is_string());
    let end = http(&server, "POST", &format!("/api/visits/{visit}/end"), &auth, None).await;
    assert_eq!(end.json()["visit"]["status"], "completed");
    assert_eq!(
        http(&server, "POST", &format!("/api/join/{link}"), &[], None).await.code().as_deref(),
        Some("visit_ended")
    );
    let again = http(&server, "POST", &format!("/api/visits/{visit}/end"), &auth, None).await;
    assert_eq!((again.status, again.code().as_deref()), (409, Some("invalid_transition")));

    // Cancelling another visit revokes its link.
    let (v2, l2) = create_visit(&server, &s, 600).await;
    assert_eq!(http(&server, "POST", &format!("/api/visits/{v2}/cancel"), &auth, None).await.status, 200);
    assert_eq!(
        http(&server, "POST", &format!("/api/join/{l2}"), &[], None).await.code().as_deref(),
        Some("link_revoked")
    );

    // Long after the end, the first link has expired (3 hours after a 20 minute visit).
    let (v3, l3) = create_visit(&server, &s, 0).await;
    clock.advance(3 * 3600);
    assert_eq!(
        http(&server, "POST", &format!("/api/join/{l3}"), &[], None).await.code().as_deref(),
        Some("link_expired")
    );
    let _ = v3;

    // The audit trail, in order, with no names in it.
    let audit = http(&server, "GET", &format!("/api/visits/{visit}/audit"), &auth, None).await;
    let actions: Vec<String> =
        audit.json()["events"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap().to_string()).collect();
    assert_eq!(
        actions,
        [
            "created",
            "link_used",
            "questionnaire_answered",
            "red_flags_raised",
            "rescheduled",
            "guest_link_created",
            "link_used",
            "started",
            "ended"
        ]
    );
    assert!(!audit.body.contains("Jeanne") && !audit.body.contains("rash"), "no personal data in the audit trail");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_is_stored_intact_or_rejected_never_a_500() {
    let server = server().await;
    create_staff(&server, "psy@h.fr", StaffRole::Clinician).await;
    let s = login(&server, "psy@h.fr").await;
    let bearer = s.bearer();
    let auth = [("Authorization", bearer.as_str())];
    let start = teleconsult_signaling::timefmt::rfc3339(server.app.clock.now() + 3600);

    // SQL metacharacters and quotes survive the round trip untouched.
    let nasty = "Robert'); DROP TABLE visits;-- \"O'Brien\" \\ % _ ; 李 🩺";
    let body = json!({"patient": {"display_name": nasty, "hospital_id": "1' OR '1'='1"}, "scheduled_start": start, "duration_minutes": 30});
    let r = http(&server, "POST", "/api/visits", &auth, Some(&body.to_string())).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.json()["visit"]["id"].as_str().unwrap().to_string();
    let back = http(&server, "GET", &format!("/api/visits/{id}"), &auth, None).await.json();
    assert_eq!(back["visit"]["patient"]["display_name"], nasty);
    assert_eq!(back["visit"]["patient"]["hospital_id"], "1' OR '1'='1");

    // 10 kB strings are refused with a validation code.
    let long = "x".repeat(10_000);
    let body = json!({"patient": {"display_name": long}, "scheduled_start": start, "duration_minutes": 30});
    let r = http(&server, "POST", "/api/visits", &auth, Some(&body.to_string())).await;
    assert_eq!((r.status, r.code().as_deref()), (422, Some("validation_failed")));
    let r = http(
        &server,
        "POST",
        &format!("/api/visits/{id}/guest-links"),
        &auth,
        Some(&json!({"label": long}).to_string()),
    )
    .await;
    assert_eq!(r.code().as_deref(), Some("validation_failed"));

    // Malformed bodies: 4xx with a JSON code, never a 500.
    let cases: &[(&str, &str, &str)] = &[
        ("POST", "/api/visits", "{not json"),
        ("POST", "/api/visits", "[]"),
        ("POST", "/api/visits", r#"{"patient": 7}"#),
        (
            "POST",
            "/api/visits",
            r#"{"patient": {"display_name": "A"}, "scheduled_start": "tomorrow", "duration_minutes": 30}"#,
        ),
        (
            "POST",
            "/api/visits",
            r#"{"patient": {"display_name": "A"}, "scheduled_start": "2026-01-01T00:00:00Z", "duration_minutes": -5}"#,
        ),
        (
            "POST",
            "/api/visits",
            r#"{"patient": {"display_name": "A", "id": "pt-x"}, "scheduled_start": "2026-01-01T00:00:00Z", "duration_minutes": 30}"#,
        ),
        (
            "POST",
            "/api/visits",
            r#"{"patient": {"display_name": "A\u0000B"}, "scheduled_start": "2026-01-01T00:00:00Z", "duration_minutes": 30}"#,
        ),
        ("POST", "/api/visits", r#"{"surprise": true}"#),
        ("PATCH", "/api/visits/v-nope", r#"{"duration_minutes": 30}"#),
        ("POST", "/api/auth/login", r#"{"email": 1}"#),
        ("POST", "/api/auth/login", "\u{0}\u{1}garbage"),
        ("GET", "/api/visits?date=31/12/2026", ""),
        ("GET", "/api/visits?tz_offset_minutes=lots", ""),
        ("POST", "/api/join/x/questionnaire", r#"{"pain": "a lot"}"#),
    ];
    for (method, path, body) in cases {
        let r = http(&server, method, path, &auth, (!body.is_empty()).then_some(*body)).await;
        assert!((400..500).contains(&r.status), "{method} {path} {body}: {} {}", r.status, r.body);
        assert!(r.code().is_some(), "{method} {path}: JSON error code in {}", r.body);
    }
    let r = http(
        &server,
        "POST",
        "/api/visits",
        &[("Authorization", bearer.as_str()), ("Content-Type", "text/plain")],
        Some("{}"),
    )
    .await;
    assert_eq!((r.status, r.code().as_deref()), (415, Some("unsupported_media_type")));
    let r = http(&server, "GET", "/api/nothing-here", &[], None).await;
    assert_eq!((r.status, r.code().as_deref()), (404, Some("not_found")));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn existing_patients_early_starts_and_repeated_starts() {
    let (server, _clock) = server_at(NOW).await;
    create_staff(&server, "onco@h.fr", StaffRole::Clinician).await;
    create_staff(&server, "other@h.fr", StaffRole::Clinician).await;
    let s = login(&server, "onco@h.fr").await;
    let other = login(&server, "other@h.fr").await;
    let bearer = s.bearer();
    let auth = [("Authorization", bearer.as_str())];
    let (visit, link) = create_visit(&server, &s, 3 * 3600).await;
    let patient_id =
        http(&server, "GET", &format!("/api/visits/{visit}"), &auth, None).await.json()["visit"]["patient"]["id"]
            .as_str()
            .unwrap()
            .to_string();

    // Booking an existing patient: fine for their clinician, refused for a stranger.
    let start = teleconsult_signaling::timefmt::rfc3339(NOW + 86_400);
    let body = json!({"patient": {"id": patient_id}, "scheduled_start": start, "duration_minutes": 15}).to_string();
    assert_eq!(http(&server, "POST", "/api/visits", &auth, Some(&body)).await.status, 201);
    let r = http(&server, "POST", "/api/visits", &[("Authorization", &other.bearer())], Some(&body)).await;
    assert_eq!((r.status, r.code().as_deref()), (403, Some("forbidden")));

    // Started three hours early: the patient's link works at once.
    assert_eq!(
        http(&server, "POST", &format!("/api/join/{link}"), &[], None).await.code().as_deref(),
        Some("link_not_yet_valid")
    );
    for _ in 0..2 {
        assert_eq!(http(&server, "POST", &format!("/api/visits/{visit}/start"), &auth, None).await.status, 200);
    }
    assert_eq!(http(&server, "POST", &format!("/api/join/{link}"), &[], None).await.status, 200);
    let audit = http(&server, "GET", &format!("/api/visits/{visit}/audit"), &auth, None).await.json();
    let started = audit["events"].as_array().unwrap().iter().filter(|e| e["action"] == "started").count();
    assert_eq!(started, 1, "two starts, one audit event");

    // A wrong method is a JSON 405.
    let r = http(&server, "DELETE", &format!("/api/visits/{visit}"), &auth, None).await;
    assert_eq!((r.status, r.code().as_deref()), (405, Some("method_not_allowed")));
    server.shutdown().await;
}
