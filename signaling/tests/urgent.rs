//! Urgent means sooner: a red flag books the patient's follow-up into the
//! earliest free slot within the urgent horizon, ahead of routine ones, on
//! its clinician or another of the same specialty; the queue puts urgent
//! first; clinicians find it in their inbox.

mod common;

use common::{Session, create_staff, create_visit, http, login, server_at};
use serde_json::{Value, json};
use teleconsult_signaling::server::RunningServer;
use teleconsult_signaling::store::{Specialty, StaffRole};
use teleconsult_signaling::timefmt::parse_rfc3339;

const T0: i64 = 1_800_230_400 + 8 * 3600; // Monday 2027-01-18 08:00 UTC (09:00 in Paris)

async fn weekdays(server: &RunningServer, s: &Session, days: &[u8]) {
    let weekly: Vec<Value> = days.iter().map(|d| json!({"weekday": d, "start": "09:00", "end": "12:00"})).collect();
    let body = json!({"slot_minutes": 20, "time_zone": "Europe/Paris", "weekly": weekly});
    let r = http(
        server,
        "PUT",
        &format!("/api/clinicians/{}/availability", s.clinician_id),
        &[("Authorization", &s.bearer())],
        Some(&body.to_string()),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
}

async fn post(server: &RunningServer, s: &Session, path: &str, body: Value) -> Value {
    let r = http(server, "POST", path, &[("Authorization", &s.bearer())], Some(&body.to_string())).await;
    assert!(r.status == 200 || r.status == 201, "{path}: {} {}", r.status, r.body);
    r.json()
}

async fn get(server: &RunningServer, s: &Session, path: &str) -> Value {
    let r = http(server, "GET", path, &[("Authorization", &s.bearer())], None).await;
    assert_eq!(r.status, 200, "{path}: {}", r.body);
    r.json()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_red_flag_books_within_the_horizon_ahead_of_routine_follow_ups() {
    let (server, _clock) = server_at(T0).await;
    create_staff(&server, "onco@h.fr", StaffRole::Clinician).await;
    let onco = login(&server, "onco@h.fr").await;
    weekdays(&server, &onco, &[0, 1, 2, 3, 4]).await;

    // Two patients seen this morning. The first's routine follow-up is due
    // tomorrow; the second's in four weeks.
    let (flagged_visit, flagged_link) = create_visit(&server, &onco, 1800).await;
    let (routine_visit, _) = create_visit(&server, &onco, 3600).await;
    let routine = post(
        &server,
        &onco,
        &format!("/api/visits/{routine_visit}/follow-ups"),
        json!({"due_in": {"days": 1}, "duration_minutes": 20, "reason": "routine", "tolerance_days": 0}),
    )
    .await;
    let routine_start = parse_rfc3339(routine["visit"]["scheduled_start"].as_str().unwrap()).unwrap();
    let later = post(
        &server,
        &onco,
        &format!("/api/visits/{flagged_visit}/follow-ups"),
        json!({"due_in": {"weeks": 4}, "duration_minutes": 20, "reason": "check in a month"}),
    )
    .await;
    let later_id = later["follow_up"]["id"].as_str().unwrap().to_string();
    let old_visit = later["visit"]["id"].as_str().unwrap().to_string();
    assert!(parse_rfc3339(later["visit"]["scheduled_start"].as_str().unwrap()).unwrap() > T0 + 20 * 86_400);

    // The second patient reports fever and pain 8.
    let answers = json!({"fever": true, "cough": false, "breathlessness": false, "pain": 8, "fatigue": false});
    let r = http(&server, "POST", &format!("/api/join/{flagged_link}/questionnaire"), &[], Some(&answers.to_string()))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);

    // Booked within 72 hours, before the routine follow-up due tomorrow.
    let f = server.app.store.follow_up_by_id(&later_id).await.unwrap().unwrap();
    assert_eq!(f.priority.as_str(), "urgent");
    let new_visit = server.app.store.visit_by_id(f.visit_id.as_deref().unwrap()).await.unwrap().unwrap();
    assert!(new_visit.scheduled_start <= T0 + 72 * 3600, "within the horizon");
    assert!(new_visit.scheduled_start >= T0 + 3600, "not sooner than an hour from now");
    assert!(new_visit.scheduled_start < routine_start, "ahead of the routine follow-up");
    assert_eq!(new_visit.clinician_id, onco.clinician_id);
    let old = server.app.store.visit_by_id(&old_visit).await.unwrap().unwrap();
    assert_eq!(old.status.as_str(), "cancelled", "the month-away visit is withdrawn");
    assert!(server.app.store.links_of_visit(&old_visit).await.unwrap().iter().all(|l| l.revoked_at.is_some()));

    // The queue: urgent first.
    let q = get(&server, &onco, "/api/follow-ups").await;
    assert_eq!(q["follow_ups"][0]["id"], later_id.as_str());
    assert_eq!(q["follow_ups"][0]["priority"], "urgent");
    assert_eq!(q["follow_ups"][0]["patient"]["display_name"], "Jeanne Dupont");

    // The inbox keeps it, unread until read.
    let inbox = get(&server, &onco, "/api/notifications").await;
    let kinds: Vec<&str> =
        inbox["notifications"].as_array().unwrap().iter().map(|n| n["kind"].as_str().unwrap()).collect();
    assert!(kinds.contains(&"red_flags") && kinds.contains(&"booked_sooner"), "{inbox}");
    assert_eq!(inbox["unread"], 2);
    let red = inbox["notifications"].as_array().unwrap().iter().find(|n| n["kind"] == "red_flags").unwrap();
    assert_eq!(red["detail"], "fever,pain");
    let id = red["id"].as_str().unwrap();
    let r = http(&server, "POST", &format!("/api/notifications/{id}/read"), &[("Authorization", &onco.bearer())], None)
        .await;
    assert_eq!(r.status, 204);
    assert_eq!(get(&server, &onco, "/api/notifications?unread=true").await["unread"], 1);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn book_sooner_hands_over_within_the_specialty_or_waits_urgent() {
    let (server, _clock) = server_at(T0).await;
    create_staff(&server, "onco@h.fr", StaffRole::Clinician).await;
    create_staff(&server, "colleague@h.fr", StaffRole::Clinician).await;
    teleconsult_signaling::accounts::create_clinician(
        &server.app.store,
        "psy@h.fr",
        "Dr Psy",
        Specialty::Psychologist,
        StaffRole::Clinician,
        "a long enough password",
        T0,
    )
    .await
    .unwrap();
    let onco = login(&server, "onco@h.fr").await;
    let colleague = login(&server, "colleague@h.fr").await;
    let psy = login(&server, "psy@h.fr").await;
    // The oncologist works Fridays only (beyond 72 hours); a colleague every weekday.
    weekdays(&server, &onco, &[4]).await;
    weekdays(&server, &colleague, &[0, 1, 2, 3, 4]).await;
    let (visit, _) = create_visit(&server, &onco, 3600).await;
    let f = post(
        &server,
        &onco,
        &format!("/api/visits/{visit}/follow-ups"),
        json!({"due_in": {"weeks": 2}, "duration_minutes": 20, "reason": "check"}),
    )
    .await;
    let id = f["follow_up"]["id"].as_str().unwrap().to_string();

    // Another clinician's follow-up is not theirs to move.
    let r =
        http(&server, "POST", &format!("/api/follow-ups/{id}/book-sooner"), &[("Authorization", &psy.bearer())], None)
            .await;
    assert_eq!(r.status, 403);

    let r = post(&server, &onco, &format!("/api/follow-ups/{id}/book-sooner"), json!({})).await;
    assert_eq!(r["outcome"], "handed_over", "{r}");
    assert_eq!(r["visit"]["clinician"]["id"], colleague.clinician_id.as_str());
    assert_eq!(r["follow_up"]["clinician_id"], colleague.clinician_id.as_str(), "the follow-up moves with it");
    assert!(parse_rfc3339(r["visit"]["scheduled_start"].as_str().unwrap()).unwrap() <= T0 + 72 * 3600);
    assert!(r["patient_link"]["url"].as_str().unwrap().contains("/join/"));
    // Both are told: the colleague who now holds it, and the oncologist.
    for who in [&onco, &colleague] {
        let inbox = get(&server, who, "/api/notifications").await;
        assert_eq!(inbox["notifications"][0]["kind"], "follow_up_handed_over", "{inbox}");
        assert_eq!(inbox["notifications"][0]["follow_up_id"], id.as_str());
    }
    // Asked again: already within the horizon, nothing moves.
    let again = post(&server, &colleague, &format!("/api/follow-ups/{id}/book-sooner"), json!({})).await;
    assert_eq!(again["outcome"], "already_soon");
    assert_eq!(again["visit"]["id"], r["visit"]["id"]);

    // A psychologist with no availability and no colleague: urgent, in the queue.
    let (psy_visit, _) = create_visit(&server, &psy, 7200).await;
    let pf = post(
        &server,
        &psy,
        &format!("/api/visits/{psy_visit}/follow-ups"),
        json!({"due_in": {"weeks": 2}, "duration_minutes": 20, "reason": "check"}),
    )
    .await;
    let pid = pf["follow_up"]["id"].as_str().unwrap();
    let r = post(&server, &psy, &format!("/api/follow-ups/{pid}/book-sooner"), json!({})).await;
    assert_eq!((r["outcome"].as_str(), r["follow_up"]["priority"].as_str()), (Some("no_slot"), Some("urgent")));
    assert_eq!(r["follow_up"]["status"], "unplaced");
    server.shutdown().await;
}
