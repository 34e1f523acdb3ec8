//! Twice-daily symptom monitoring on simulated time: a clinician enrols a
//! patient, the gateway gets the link, the patient checks in morning and
//! evening, a run of missed check-ins reaches the clinician's inbox once, a
//! red flag books an urgent follow-up, and the link dies when revoked.

mod common;

use common::{config, create_staff, create_visit, http, login, server_at_with, webhook_receiver};
use serde_json::{Value, json};
use teleconsult_signaling::clock::Clock;
use teleconsult_signaling::scheduler_worker::SchedulerWorker;
use teleconsult_signaling::store::StaffRole;

const T0: i64 = 1_800_230_400 + 8 * 3600; // Monday 2027-01-18 08:00 UTC, 09:00 in Paris
const HOUR: i64 = 3600;

fn calm() -> Value {
    json!({"fever": false, "cough": false, "breathlessness": false, "pain": 2, "fatigue": false})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrol_check_in_twice_a_day_flag_missed_and_red_flags() {
    let gateway = webhook_receiver(0).await;
    let mut cfg = config();
    cfg.reminder_webhook = Some(gateway.url.clone());
    let (server, clock) = server_at_with(T0, cfg).await;
    create_staff(&server, "onco@h.fr", StaffRole::Clinician).await;
    let onco = login(&server, "onco@h.fr").await;
    let bearer = onco.bearer();
    let auth = [("Authorization", bearer.as_str())];
    let weekly: Vec<Value> = (0..5).map(|d| json!({"weekday": d, "start": "09:00", "end": "17:00"})).collect();
    let r = http(
        &server,
        "PUT",
        &format!("/api/clinicians/{}/availability", onco.clinician_id),
        &auth,
        Some(&json!({"slot_minutes": 20, "time_zone": "Europe/Paris", "weekly": weekly}).to_string()),
    )
    .await;
    assert_eq!(r.status, 200);
    let (visit, _) = create_visit(&server, &onco, HOUR).await;
    let mut worker = SchedulerWorker::default();

    // Enrolled for three days, told after two missed check-ins in a row.
    let r = http(
        &server,
        "POST",
        &format!("/api/visits/{visit}/monitoring"),
        &auth,
        Some(r#"{"days": 3, "missed_after": 2, "language": "en"}"#),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let enrolment = r.json()["enrolment"]["id"].as_str().unwrap().to_string();
    let url = r.json()["link"]["url"].as_str().unwrap().to_string();
    let token = url.rsplit('/').next().unwrap().to_string();
    assert_eq!(r.json()["enrolment"]["ends_at"], "2027-01-20T23:00:00Z", "the end of the third day in Paris");
    for bad in [r#"{"days": 0}"#, r#"{"days": 3, "language": "de"}"#, r#"{"days": 3, "missed_after": 99}"#] {
        let r = http(&server, "POST", &format!("/api/visits/{visit}/monitoring"), &auth, Some(bad)).await;
        assert_eq!(r.code().as_deref(), Some("validation_failed"), "{bad}");
    }
    // The gateway receives the link for the patient.
    worker.tick_and_settle(&server.app, clock.now()).await;
    let sent = gateway.bodies.lock().unwrap().iter().find(|b| b["kind"] == "monitoring_link").cloned().expect("sent");
    assert_eq!(sent["link"].as_str(), Some(url.as_str()));
    assert_eq!(sent["idempotency_key"], format!("monitoring:{enrolment}").as_str());
    // The page is served without an account.
    let page = http(&server, "GET", &format!("/monitor/{token}"), &[], None).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("monitor.js"));

    let check_in = |body: Value| {
        let addr = server.http_addr;
        let path = format!("/api/monitor/{token}/check-ins");
        async move { common::http_to(addr, "POST", &path, &[], Some(&body.to_string())).await }
    };
    // Monday morning and evening.
    let status = http(&server, "GET", &format!("/api/monitor/{token}"), &[], None).await.json();
    assert_eq!((status["slot"]["name"].as_str(), status["slot"]["answered"].as_bool()), (Some("morning"), Some(false)));
    assert_eq!(status["language"], "en");
    assert_eq!(check_in(calm()).await.status, 201);
    let again = check_in(calm()).await;
    assert_eq!((again.status, again.code().as_deref()), (409, Some("already_answered")));
    let status = http(&server, "GET", &format!("/api/monitor/{token}"), &[], None).await.json();
    assert_eq!(status["slot"]["answered"], true);
    clock.set(T0 + 10 * HOUR); // 19:00 Paris
    assert_eq!(check_in(calm()).await.status, 201);
    let bad =
        check_in(json!({"fever": false, "cough": false, "breathlessness": false, "pain": 12, "fatigue": false})).await;
    assert_eq!(bad.status, 422);
    // Tuesday morning answered; Tuesday evening and Wednesday morning missed.
    clock.set(T0 + 24 * HOUR);
    assert_eq!(check_in(calm()).await.status, 201);
    clock.set(T0 + 34 * HOUR); // Tuesday 19:00: nothing missed in a row yet
    assert_eq!(worker.tick_and_settle(&server.app, clock.now()).await.missed_check_ins_flagged, 0);
    clock.set(T0 + 48 * HOUR + 4 * HOUR); // Wednesday 13:00 Paris
    let r = worker.tick_and_settle(&server.app, clock.now()).await;
    assert_eq!(r.missed_check_ins_flagged, 1, "two in a row");
    assert_eq!(worker.tick_and_settle(&server.app, clock.now()).await.missed_check_ins_flagged, 0, "told once");
    let inbox = http(&server, "GET", "/api/notifications", &auth, None).await.json();
    assert_eq!(inbox["notifications"][0]["kind"], "missed_check_ins");
    assert_eq!(inbox["notifications"][0]["detail"], "2");

    // Wednesday evening: fever. An urgent follow-up is placed within the horizon.
    let r = check_in(json!({"fever": true, "cough": false, "breathlessness": false, "pain": 3, "fatigue": true, "new_symptoms": "frissons"})).await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.json()["red_flags"], json!(["fever"]));
    let now = clock.now();
    let q = http(&server, "GET", "/api/follow-ups", &auth, None).await.json();
    let first = &q["follow_ups"][0];
    assert_eq!((first["priority"].as_str(), first["status"].as_str()), (Some("urgent"), Some("placed")), "{q}");
    let start = teleconsult_signaling::timefmt::parse_rfc3339(first["scheduled_start"].as_str().unwrap()).unwrap();
    assert!(start > now && start <= now + 72 * HOUR);
    let inbox = http(&server, "GET", "/api/notifications", &auth, None).await.json();
    let kinds: Vec<&str> =
        inbox["notifications"].as_array().unwrap().iter().map(|n| n["kind"].as_str().unwrap()).collect();
    assert!(kinds.contains(&"red_flags") && kinds.contains(&"booked_sooner"), "{kinds:?}");

    // The clinician's trend: four check-ins, two missed, pain over time.
    let trend = http(&server, "GET", &format!("/api/visits/{visit}/monitoring"), &auth, None).await.json();
    let e = &trend["enrolments"][0];
    assert_eq!(e["check_ins"].as_array().unwrap().len(), 4);
    let pains: Vec<i64> = e["check_ins"].as_array().unwrap().iter().map(|c| c["pain"].as_i64().unwrap()).collect();
    assert_eq!(pains, [2, 2, 2, 3]);
    assert_eq!(e["check_ins"][3]["red_flags"], json!(["fever"]));
    assert_eq!(e["missed"].as_array().unwrap().len(), 2);

    // Revoked: the link is dead at once.
    let r = http(&server, "POST", &format!("/api/monitoring/{enrolment}/revoke"), &auth, None).await;
    assert_eq!((r.status, r.json()["enrolment"]["active"].as_bool()), (200, Some(false)));
    let dead = http(&server, "GET", &format!("/api/monitor/{token}"), &[], None).await;
    assert_eq!((dead.status, dead.code().as_deref()), (410, Some("link_revoked")));
    let unknown = http(&server, "GET", &format!("/api/monitor/{}", "x".repeat(43)), &[], None).await;
    assert_eq!((unknown.status, unknown.code().as_deref()), (404, Some("link_unknown")));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_monitoring_link_expires_with_its_enrolment_and_is_not_anyones() {
    let (server, clock) = common::server_at(T0).await;
    create_staff(&server, "onco@h.fr", StaffRole::Clinician).await;
    create_staff(&server, "other@h.fr", StaffRole::Clinician).await;
    let onco = login(&server, "onco@h.fr").await;
    let other = login(&server, "other@h.fr").await;
    let (visit, _) = create_visit(&server, &onco, HOUR).await;
    let r = http(
        &server,
        "POST",
        &format!("/api/visits/{visit}/monitoring"),
        &[("Authorization", &other.bearer())],
        Some(r#"{"days": 1}"#),
    )
    .await;
    assert_eq!(r.status, 403, "only the visit's clinician (or an admin) enrols");
    let r = http(
        &server,
        "POST",
        &format!("/api/visits/{visit}/monitoring"),
        &[("Authorization", &onco.bearer())],
        Some(r#"{"days": 1}"#),
    )
    .await;
    assert_eq!(r.status, 201);
    let token = r.json()["link"]["url"].as_str().unwrap().rsplit('/').next().unwrap().to_string();
    let id = r.json()["enrolment"]["id"].as_str().unwrap().to_string();
    assert_eq!(
        http(&server, "GET", &format!("/api/visits/{visit}/monitoring"), &[("Authorization", &other.bearer())], None)
            .await
            .status,
        403
    );
    assert_eq!(
        http(&server, "POST", &format!("/api/monitoring/{id}/revoke"), &[("Authorization", &other.bearer())], None)
            .await
            .status,
        403
    );
    assert_eq!(http(&server, "GET", &format!("/api/monitor/{token}"), &[], None).await.status, 200);
    clock.set(T0 + 16 * HOUR); // Tuesday 01:00 in Paris: the one day is over
    let r = http(&server, "GET", &format!("/api/monitor/{token}"), &[], None).await;
    assert_eq!((r.status, r.code().as_deref()), (410, Some("link_expired")));
    server.shutdown().await;
}
