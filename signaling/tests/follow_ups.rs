//! Booking follow-ups: availability respected, the tolerance window
//! honoured, `unplaced` when full, and no double booking even when twenty
//! bookings race for the same slot.

mod common;

use common::{create_staff, create_visit, http, login, server_at};
use serde_json::json;
use teleconsult_signaling::server::RunningServer;
use teleconsult_signaling::store::StaffRole;

const MONDAY_8H: i64 = 1_800_230_400 + 8 * 3600; // 2027-01-18T08:00:00Z, a Monday

/// Books a follow-up from `visit` with the clinician's bearer token.
async fn book(server: &RunningServer, bearer: &str, visit: &str, body: &str) -> common::HttpResponse {
    http(server, "POST", &format!("/api/visits/{visit}/follow-ups"), &[("Authorization", bearer)], Some(body)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn placement_window_queue_and_no_double_booking() {
    let (server, _clock) = server_at(MONDAY_8H).await;
    create_staff(&server, "onco@h.fr", StaffRole::Clinician).await;
    create_staff(&server, "psy@h.fr", StaffRole::Clinician).await;
    let onco = login(&server, "onco@h.fr").await;
    let psy = login(&server, "psy@h.fr").await;
    let (ob, pb) = (onco.bearer(), psy.bearer());

    // The psychologist works Tuesdays 9:00-10:00 in 20-minute slots: 3 slots a week.
    let availability = json!({"slot_minutes": 20, "time_zone": "UTC", "weekly": [{"weekday": 1, "start": "09:00", "end": "10:00"}], "days_off": ["2027-01-26"]});
    let r = http(
        &server,
        "PUT",
        &format!("/api/clinicians/{}/availability", psy.clinician_id),
        &[("Authorization", &pb)],
        Some(&availability.to_string()),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    // Nobody else may set it.
    let r = http(
        &server,
        "PUT",
        &format!("/api/clinicians/{}/availability", psy.clinician_id),
        &[("Authorization", &ob)],
        Some(&availability.to_string()),
    )
    .await;
    assert_eq!(r.status, 403);
    let bad = json!({"slot_minutes": 20, "weekly": [{"weekday": 9, "start": "10:00", "end": "09:00"}]});
    let r = http(
        &server,
        "PUT",
        &format!("/api/clinicians/{}/availability", psy.clinician_id),
        &[("Authorization", &pb)],
        Some(&bad.to_string()),
    )
    .await;
    assert_eq!(r.code().as_deref(), Some("validation_failed"));

    // The oncologist books a follow-up with the psychologist from a visit, due in a week ± 3 days.
    let (visit, _) = create_visit(&server, &onco, 3600).await;
    let body = json!({"due_in": {"weeks": 1}, "clinician_id": psy.clinician_id, "duration_minutes": 20, "reason": "Anxiety follow-up", "priority": "soon", "tolerance_days": 3});
    let r = book(&server, &ob, &visit, &body.to_string()).await;
    assert_eq!(r.status, 201, "{}", r.body);
    // Due Monday the 25th ± 3 days: the only Tuesday in the window, the 26th, is a
    // day off, so the follow-up waits in the queue.
    let v = r.json();
    assert_eq!(v["follow_up"]["status"], "unplaced", "{v}");
    assert!(v["visit"].is_null() && v["patient_link"].is_null());

    // Twenty bookings race for Tuesday the 19th (due in one day, ± 1 day), which has
    // three slots: exactly three are placed, in three different slots.
    let mut tasks = Vec::new();
    for i in 0..20 {
        let (visit, ob) = (visit.clone(), ob.clone());
        let addr = server.http_addr;
        let psy_id = psy.clinician_id.clone();
        tasks.push(tokio::spawn(async move {
            let body = json!({"due_in": {"days": 1}, "clinician_id": psy_id, "duration_minutes": 20, "reason": format!("race {i}"), "tolerance_days": 1});
            common::http_to(addr, "POST", &format!("/api/visits/{visit}/follow-ups"), &[("Authorization", &ob)], Some(&body.to_string())).await.json()
        }));
    }
    let mut starts = Vec::new();
    let mut unplaced = 0;
    for t in tasks {
        let v = t.await.unwrap();
        match v["follow_up"]["status"].as_str() {
            Some("placed") => starts.push(v["visit"]["scheduled_start"].as_str().unwrap().to_string()),
            Some("unplaced") => unplaced += 1,
            other => panic!("unexpected {other:?}: {v}"),
        }
    }
    let distinct: std::collections::BTreeSet<&String> = starts.iter().collect();
    assert_eq!(distinct.len(), starts.len(), "no two follow-ups share a slot: {starts:?}");
    assert_eq!(starts.len(), 3, "exactly the three Tuesday slots were filled: {starts:?}");
    assert_eq!(unplaced, 17);
    for s in &starts {
        assert!(s.starts_with("2027-01-19T09:"), "inside Tuesday 9:00-10:00: {s}");
    }

    // The queue: placed and unplaced, soonest first; unplaced ones are not overdue yet.
    let q = http(&server, "GET", "/api/follow-ups", &[("Authorization", &pb)], None).await.json();
    let items = q["follow_ups"].as_array().unwrap();
    assert_eq!(items.len(), 21);
    let rank = |f: &serde_json::Value| match f["priority"].as_str() {
        Some("urgent") => 0,
        Some("soon") => 1,
        _ => 2,
    };
    assert!(
        items.windows(2).all(|w| (rank(&w[0]), w[0]["due"].as_str()) <= (rank(&w[1]), w[1]["due"].as_str())),
        "urgent first, then by due date"
    );
    assert_eq!(items.iter().filter(|f| f["status"] == "unplaced").count(), 18);

    // An exact date outside any availability: unplaced (a Sunday, tolerance 0).
    let body = json!({"due_date": "2027-01-24", "clinician_id": psy.clinician_id, "duration_minutes": 20, "reason": "x", "tolerance_days": 0});
    let r = book(&server, &ob, &visit, &body.to_string()).await;
    assert_eq!(r.json()["follow_up"]["status"], "unplaced");
    // Bad input is refused.
    for body in [
        json!({"duration_minutes": 20, "reason": "x"}),
        json!({"due_in": {"days": 1}, "duration_minutes": 20, "reason": "x", "priority": "asap"}),
    ] {
        let r = book(&server, &ob, &visit, &body.to_string()).await;
        assert_eq!(r.code().as_deref(), Some("validation_failed"), "{body}");
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_actions_assign_cancel_and_service_view() {
    let (server, _clock) = server_at(MONDAY_8H).await;
    create_staff(&server, "onco@h.fr", StaffRole::Clinician).await;
    create_staff(&server, "onco2@h.fr", StaffRole::Clinician).await;
    let onco = login(&server, "onco@h.fr").await;
    let onco2 = login(&server, "onco2@h.fr").await;
    let ob = onco.bearer();
    let (visit, _) = create_visit(&server, &onco, 3600).await;
    // No availability set: the follow-up is unplaced.
    let r = book(&server, &ob, &visit, r#"{"due_in":{"days":2},"duration_minutes":20,"reason":"labs"}"#).await;
    let f = r.json()["follow_up"]["id"].as_str().unwrap().to_string();
    assert_eq!(r.json()["follow_up"]["status"], "unplaced");

    // Assign to an exact slot: placed, with a link.
    let slot = json!({"scheduled_start": "2027-01-20T10:00:00Z"}).to_string();
    let r = http(&server, "POST", &format!("/api/follow-ups/{f}/assign"), &[("Authorization", &ob)], Some(&slot)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["follow_up"]["status"], "placed");
    let first_visit = r.json()["follow_up"]["visit_id"].as_str().unwrap().to_string();
    let token = r.json()["patient_link"]["url"].as_str().unwrap().rsplit('/').next().unwrap().to_string();
    // A second follow-up cannot take the same slot.
    let r2 = book(&server, &ob, &visit, r#"{"due_in":{"days":2},"duration_minutes":20,"reason":"other"}"#).await;
    let f2 = r2.json()["follow_up"]["id"].as_str().unwrap().to_string();
    let r =
        http(&server, "POST", &format!("/api/follow-ups/{f2}/assign"), &[("Authorization", &ob)], Some(&slot)).await;
    assert_eq!((r.status, r.code().as_deref()), (409, Some("slot_taken")));

    // Re-assign the first to another oncologist: the old visit is cancelled and its link revoked.
    let move_it = json!({"clinician_id": onco2.clinician_id, "scheduled_start": "2027-01-20T11:00:00Z"}).to_string();
    let r =
        http(&server, "POST", &format!("/api/follow-ups/{f}/assign"), &[("Authorization", &ob)], Some(&move_it)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        http(&server, "GET", &format!("/api/visits/{first_visit}"), &[("Authorization", &ob)], None).await.json()["visit"]
            ["status"],
        "cancelled"
    );
    assert_eq!(
        http(&server, "POST", &format!("/api/join/{token}"), &[], None).await.code().as_deref(),
        Some("link_revoked")
    );

    // The service view (all oncologists) holds both follow-ups.
    let q = http(&server, "GET", "/api/follow-ups?specialty=oncologist", &[("Authorization", &onco2.bearer())], None)
        .await
        .json();
    assert_eq!(q["follow_ups"].as_array().unwrap().len(), 2);
    let r = http(&server, "GET", "/api/follow-ups?specialty=psychologist", &[("Authorization", &ob)], None).await;
    assert_eq!(r.status, 403, "another service's queue is not yours");

    // Cancel: gone from the queue, its visit cancelled.
    let r = http(&server, "POST", &format!("/api/follow-ups/{f}/cancel"), &[("Authorization", &ob)], None).await;
    assert_eq!(r.json()["follow_up"]["status"], "cancelled");
    let q = http(&server, "GET", "/api/follow-ups?specialty=oncologist", &[("Authorization", &ob)], None).await.json();
    assert_eq!(q["follow_ups"].as_array().unwrap().len(), 1);
    let r = http(&server, "POST", &format!("/api/follow-ups/{f}/assign"), &[("Authorization", &ob)], Some(&slot)).await;
    assert_eq!(r.code().as_deref(), Some("follow_up_cancelled"));
    server.shutdown().await;
}

/// Monday 2027-03-22 06:00 UTC (07:00 in Paris, winter time), the week
/// before the clocks change (Sunday 2027-03-28).
const MONDAY_BEFORE_DST: i64 = 1_805_695_200;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slots_keep_local_wall_time_across_dst_and_tolerance_zero_is_the_local_day() {
    assert_eq!(teleconsult_signaling::timefmt::rfc3339(MONDAY_BEFORE_DST), "2027-03-22T06:00:00Z");
    let (server, _clock) = server_at(MONDAY_BEFORE_DST).await;
    create_staff(&server, "onco@h.fr", StaffRole::Clinician).await;
    create_staff(&server, "ny@h.fr", StaffRole::Clinician).await;
    let onco = login(&server, "onco@h.fr").await;
    let ny = login(&server, "ny@h.fr").await;
    let (ob, nb) = (onco.bearer(), ny.bearer());
    let put = |who: &common::Session, bearer: &str, body: serde_json::Value| {
        let path = format!("/api/clinicians/{}/availability", who.clinician_id);
        let bearer = bearer.to_string();
        let addr = server.http_addr;
        async move { common::http_to(addr, "PUT", &path, &[("Authorization", &bearer)], Some(&body.to_string())).await }
    };
    // Mondays 09:00-11:00 in Paris; Mondays 20:00-22:00 in New York.
    let r = put(&onco, &ob, json!({"slot_minutes": 20, "time_zone": "Europe/Paris", "weekly": [{"weekday": 0, "start": "09:00", "end": "11:00"}]})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["availability"]["time_zone"], "Europe/Paris");
    let r = put(&ny, &nb, json!({"slot_minutes": 20, "time_zone": "America/New_York", "weekly": [{"weekday": 0, "start": "20:00", "end": "22:00"}]})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = put(&ny, &nb, json!({"slot_minutes": 20, "time_zone": "Mars/Olympus", "weekly": []})).await;
    assert_eq!((r.status, r.code().as_deref()), (422, Some("validation_failed")), "{}", r.body);

    let (visit, _) = create_visit(&server, &onco, 3600).await;
    // Due today and due next Monday (after the change), tolerance 0: both at 09:00 Paris.
    let mut starts = Vec::new();
    for due in ["2027-03-22", "2027-03-29"] {
        let body = json!({"due_date": due, "duration_minutes": 20, "reason": "check", "tolerance_days": 0});
        let r = book(&server, &ob, &visit, &body.to_string()).await;
        assert_eq!(r.status, 201, "{}", r.body);
        assert_eq!(r.json()["follow_up"]["status"], "placed", "{}", r.body);
        starts.push(r.json()["visit"]["scheduled_start"].as_str().unwrap().to_string());
    }
    // 09:00+01:00 (winter) then 09:00+02:00 (summer): 08:00 and 07:00 UTC.
    assert_eq!(starts, ["2027-03-22T08:00:00Z", "2027-03-29T07:00:00Z"]);

    // Tolerance 0 is the clinician's local day: Monday 20:00 in New York is
    // already Tuesday in UTC, and is found.
    let body = json!({"due_date": "2027-03-29", "clinician_id": ny.clinician_id, "duration_minutes": 20, "reason": "check", "tolerance_days": 0});
    let r = book(&server, &ob, &visit, &body.to_string()).await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.json()["visit"]["scheduled_start"], "2027-03-30T00:00:00Z", "20:00-04:00 on Monday the 29th");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn availability_saved_with_a_fixed_offset_still_works() {
    let (server, _clock) = server_at(MONDAY_BEFORE_DST).await;
    create_staff(&server, "onco@h.fr", StaffRole::Clinician).await;
    let onco = login(&server, "onco@h.fr").await;
    let ob = onco.bearer();
    // An older client still sends minutes east of UTC: Paris's offset becomes Paris.
    let body = json!({"slot_minutes": 20, "tz_offset_minutes": 60, "weekly": [{"weekday": 0, "start": "09:00", "end": "10:00"}]});
    let path = format!("/api/clinicians/{}/availability", onco.clinician_id);
    let r = http(&server, "PUT", &path, &[("Authorization", &ob)], Some(&body.to_string())).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["availability"]["time_zone"], "Europe/Paris");
    let r = http(&server, "GET", &path, &[("Authorization", &ob)], None).await;
    assert_eq!(r.json()["availability"]["time_zone"], "Europe/Paris");
    server.shutdown().await;
}
