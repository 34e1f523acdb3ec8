//! Group sessions (recurring classes): occurrences at the right local times
//! across a daylight-saving change, a link per enrolled patient and
//! occurrence, the capacity under concurrent enrolments (on SQLite and
//! PostgreSQL), one reminder per enrolled patient with their own link,
//! attendance recorded at admission and counted in the weekly figures.

mod common;

use common::{both_databases, config, create_staff, http, login, server_at_with, webhook_receiver, ws_url};
use serde_json::{Value, json};
use teleconsult_protocol::ClientMessage;
use teleconsult_signaling::clock::Clock;
use teleconsult_signaling::scheduler_worker::SchedulerWorker;
use teleconsult_signaling::store::StaffRole;

/// Monday 15 March 2027, 08:00 UTC (09:00 in Paris). Clocks go forward in
/// Paris on Sunday 28 March.
const MONDAY: i64 = 1_805_097_600;

fn class(weeks: i64, capacity: i64) -> Value {
    json!({
        "title": "Activité physique adaptée",
        "time_zone": "Europe/Paris",
        "weekdays": ["tue", "fri"],
        "start_time": "10:00",
        "duration_minutes": 60,
        "first_day": "2027-03-16",
        "weeks": weeks,
        "capacity": capacity,
    })
}

fn token_of(url: &str) -> String {
    url.rsplit('/').next().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_class_across_the_spring_change_with_links_reminders_and_attendance() {
    assert_eq!(teleconsult_signaling::timefmt::rfc3339(MONDAY), "2027-03-15T08:00:00Z");
    let gateway = webhook_receiver(0).await;
    let mut cfg = config();
    cfg.reminder_webhook = Some(gateway.url.clone());
    let (server, clock) = server_at_with(MONDAY, cfg).await;
    create_staff(&server, "apa@h.fr", StaffRole::Clinician).await;
    create_staff(&server, "other@h.fr", StaffRole::Clinician).await;
    create_staff(&server, "ops@h.fr", StaffRole::Ops).await;
    let apa = login(&server, "apa@h.fr").await;
    let bearer = apa.bearer();
    let auth = [("Authorization", bearer.as_str())];

    // Tuesdays and Fridays at 10:00 in Paris for three weeks.
    let r = http(&server, "POST", "/api/group-sessions", &auth, Some(&class(3, 3).to_string())).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let session = r.json();
    let id = session["id"].as_str().unwrap().to_string();
    let starts: Vec<&str> =
        session["occurrences"].as_array().unwrap().iter().map(|o| o["scheduled_start"].as_str().unwrap()).collect();
    assert_eq!(
        starts,
        [
            "2027-03-16T10:00:00+01:00",
            "2027-03-19T10:00:00+01:00",
            "2027-03-23T10:00:00+01:00",
            "2027-03-26T10:00:00+01:00",
            "2027-03-30T10:00:00+02:00",
            "2027-04-02T10:00:00+02:00",
        ],
        "10:00 in Paris on both sides of the change"
    );
    let occurrences: Vec<String> = session["occurrences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["visit_id"].as_str().unwrap().to_string())
        .collect();
    // Each occurrence is a group visit on the leader's calendar.
    let first = http(&server, "GET", &format!("/api/visits/{}", occurrences[0]), &auth, None).await.json();
    assert_eq!(first["visit"]["kind"], "group");
    assert_eq!(first["visit"]["scheduled_start"], "2027-03-16T09:00:00Z");

    // Another series that clashes with one occurrence is refused whole.
    let mut clash = class(1, 12);
    clash["weekdays"] = json!(["fri"]);
    clash["start_time"] = json!("10:30");
    clash["first_day"] = json!("2027-03-26");
    let r = http(&server, "POST", "/api/group-sessions", &auth, Some(&clash.to_string())).await;
    assert_eq!((r.status, r.code().as_deref()), (409, Some("slot_taken")), "{}", r.body);
    assert_eq!(r.json()["error"]["details"]["scheduled_start"], "2027-03-26T10:30:00+01:00");
    let list = http(&server, "GET", "/api/group-sessions", &auth, None).await.json();
    assert_eq!(list["group_sessions"].as_array().unwrap().len(), 1, "nothing of the refused series was kept");

    // Bad input gets a clear error, not a 500.
    for (field, value) in [
        ("weekdays", json!([])),
        ("weekdays", json!(["mardi"])),
        ("start_time", json!("25:00")),
        ("time_zone", json!("Mars/Olympus")),
        ("capacity", json!(13)),
        ("weeks", json!(0)),
        ("first_day", json!("16/03/2027")),
    ] {
        let mut body = class(1, 12);
        body[field] = value;
        let r = http(&server, "POST", "/api/group-sessions", &auth, Some(&body.to_string())).await;
        assert_eq!((r.status, r.code().as_deref()), (422, Some("validation_failed")), "{field}: {}", r.body);
    }
    // Only the leader (or an admin) sees or changes the class.
    let other = login(&server, "other@h.fr").await;
    let ob = other.bearer();
    let r = http(&server, "GET", &format!("/api/group-sessions/{id}"), &[("Authorization", &ob)], None).await;
    assert_eq!(r.status, 403);

    // Three patients enrol; each gets a link to every occurrence. A fourth
    // finds the class full; the same patient twice is refused.
    let mut patients = Vec::new();
    let mut first_links = Vec::new();
    for name in ["Alice Martin", "Bruno Petit", "Chloé Durand"] {
        let body = json!({"patient": {"display_name": name, "contact": "+33600000000"}});
        let r = http(&server, "POST", &format!("/api/group-sessions/{id}/enrolments"), &auth, Some(&body.to_string()))
            .await;
        assert_eq!(r.status, 201, "{}", r.body);
        let e = r.json();
        let links = e["links"].as_array().unwrap();
        assert_eq!(links.len(), 6, "one link per occurrence");
        assert_eq!(links[4]["scheduled_start"], "2027-03-30T10:00:00+02:00");
        let mut distinct: Vec<&str> = links.iter().map(|l| l["url"].as_str().unwrap()).collect();
        distinct.dedup();
        assert_eq!(distinct.len(), 6, "each occurrence has its own link");
        first_links.push(links[0]["url"].as_str().unwrap().to_string());
        patients.push(e["patient"]["id"].as_str().unwrap().to_string());
    }
    let body = json!({"patient": {"display_name": "Denis Roux"}});
    let r =
        http(&server, "POST", &format!("/api/group-sessions/{id}/enrolments"), &auth, Some(&body.to_string())).await;
    assert_eq!((r.status, r.code().as_deref()), (409, Some("class_full")), "{}", r.body);
    let again = json!({"patient": {"id": patients[0]}});
    let r =
        http(&server, "POST", &format!("/api/group-sessions/{id}/enrolments"), &auth, Some(&again.to_string())).await;
    assert_eq!((r.status, r.code().as_deref()), (409, Some("already_enrolled")), "{}", r.body);

    // Reminders: the day before the first class, one per enrolled patient,
    // each with their own link; retried ticks send nothing twice.
    clock.set(MONDAY + 2 * 3600);
    let mut worker = SchedulerWorker::default();
    let r = worker.tick_and_settle(&server.app, clock.now()).await;
    assert_eq!((r.reminders_queued, r.delivered), (3, 3));
    let bodies = gateway.bodies.lock().unwrap().clone();
    for (patient, link) in patients.iter().zip(&first_links) {
        let b = bodies.iter().find(|b| b["link"] == link.as_str()).expect("a reminder with the patient's own link");
        assert_eq!(b["kind"], "24h");
        assert_eq!(b["group_session"]["title"], "Activité physique adaptée");
        assert!(b["idempotency_key"].as_str().unwrap().ends_with(patient.as_str()));
    }
    assert_eq!(worker.tick_and_settle(&server.app, clock.now()).await.delivered, 0);

    // Chloé withdraws: her links stop working and she gets no more reminders.
    let r = http(&server, "DELETE", &format!("/api/group-sessions/{id}/enrolments/{}", patients[2]), &auth, None).await;
    assert_eq!(r.status, 204, "{}", r.body);
    let r = http(&server, "DELETE", &format!("/api/group-sessions/{id}/enrolments/{}", patients[2]), &auth, None).await;
    assert_eq!(r.status, 404, "withdrawing twice");

    // The first class: the leader starts it, two patients come and are let in.
    clock.set(MONDAY + 86_400 + 3600 - 120);
    assert_eq!(http(&server, "POST", &format!("/api/visits/{}/start", occurrences[0]), &auth, None).await.status, 200);
    let gone = http(&server, "POST", &format!("/api/join/{}", token_of(&first_links[2])), &[], None).await;
    assert_eq!(gone.status, 410, "a withdrawn patient's link no longer opens: {}", gone.body);
    let url = ws_url(&server);
    let jt = http(&server, "POST", &format!("/api/visits/{}/join-token", occurrences[0]), &auth, None).await.json();
    let (leader, _leader_events, ..) = common::join_ws(&url, jt["join_token"].as_str().unwrap().to_string()).await;
    let mut seats = Vec::new();
    for link in &first_links[..2] {
        let x = http(&server, "POST", &format!("/api/join/{}", token_of(link)), &[], None).await;
        assert_eq!(x.status, 200, "{}", x.body);
        let x = x.json();
        assert_eq!(x["visit"]["kind"], "group");
        let (client, events, participant, _, admitted) =
            common::join_ws(&url, x["join_token"].as_str().unwrap().to_string()).await;
        assert!(!admitted, "class patients wait to be let in");
        leader.request(ClientMessage::Admit { id: None, participant_id: participant.clone() }).await.expect("admit");
        seats.push((client, events));
    }
    // A reload: the patient comes straight back into the class (the
    // admission holds) and is not counted twice.
    let (client, _events, participant, _, admitted) = common::join_ws(
        &url,
        http(&server, "POST", &format!("/api/join/{}", token_of(&first_links[0])), &[], None).await.json()["join_token"]
            .as_str()
            .unwrap()
            .to_string(),
    )
    .await;
    assert!(admitted, "back in the class without waiting");
    let _ = participant;
    drop(client);
    // Recording the same patient's attendance again changes nothing.
    let alice_link = first_links[0].clone();
    let link = server
        .app
        .store
        .link_by_token_hash(&teleconsult_signaling::staff_auth::token_hash(&token_of(&alice_link)))
        .await
        .unwrap()
        .unwrap();
    assert!(!server.app.store.record_attendance(&link.id, clock.now()).await.unwrap(), "one attendance per occurrence");
    assert_eq!(http(&server, "POST", &format!("/api/visits/{}/end", occurrences[0]), &auth, None).await.status, 200);

    let view = http(&server, "GET", &format!("/api/group-sessions/{id}"), &auth, None).await.json();
    assert_eq!(view["occurrences"][0]["attended"], 2);
    assert_eq!(view["occurrences"][0]["status"], "completed");
    assert_eq!(view["occurrences"][1]["attended"], 0);
    let enrolments = view["enrolments"].as_array().unwrap();
    assert_eq!(enrolments.iter().map(|e| e["attended"].as_i64().unwrap()).collect::<Vec<_>>(), [1, 1, 0]);
    assert!(enrolments[2]["withdrawn_at"].is_string());
    assert!(enrolments[2]["next_link"].is_null(), "a withdrawn patient has no next link");
    assert!(enrolments[0]["next_link"].as_str().unwrap().contains("/join/"), "the leader can resend the next link");
    assert_eq!(view["enrolled"], 2);

    // The weekly figures count the class and who came (no names).
    let ops = login(&server, "ops@h.fr").await;
    let w = http(
        &server,
        "GET",
        "/api/ops/weekly?start=2027-03-16&tz_offset_minutes=60",
        &[("Authorization", &ops.bearer())],
        None,
    )
    .await
    .json();
    assert_eq!((w["classes"].as_i64(), w["class_attendances"].as_i64()), (Some(1), Some(2)), "{w}");
    assert_eq!(w["days"][0]["class_attendances"], 2);
    assert!(!w.to_string().contains("Alice"));

    // The next reminders go to the two patients still enrolled.
    clock.set(MONDAY + 3 * 86_400 + 2 * 3600);
    let before = gateway.received.lock().unwrap().len();
    let r = worker.tick_and_settle(&server.app, clock.now()).await;
    assert_eq!(r.delivered, 2, "{r:?}");
    let keys = gateway.received.lock().unwrap()[before..].to_vec();
    assert!(keys.iter().all(|k| !k.ends_with(patients[2].as_str())), "{keys:?}");
    for (c, _) in seats {
        drop(c);
    }
    server.shutdown().await;
}

/// Sixteen enrolments at once into a class of twelve: exactly twelve get
/// in, four are told the class is full, none gets a 500; on both backends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_enrolments_never_pass_the_capacity() {
    for (backend, db) in both_databases().await {
        let mut cfg = config();
        cfg.db = db;
        let (server, _clock) = server_at_with(MONDAY, cfg).await;
        create_staff(&server, "apa@h.fr", StaffRole::Clinician).await;
        let bearer = login(&server, "apa@h.fr").await.bearer();
        let r = http(
            &server,
            "POST",
            "/api/group-sessions",
            &[("Authorization", &bearer)],
            Some(&class(2, 12).to_string()),
        )
        .await;
        assert_eq!(r.status, 201, "{backend}: {}", r.body);
        let id = r.json()["id"].as_str().unwrap().to_string();

        // The same class created four times at once (four clicks): one series.
        let mut again = class(2, 12);
        again["title"] = json!("Twice");
        again["start_time"] = json!("14:00");
        let creates: Vec<_> = (0..4)
            .map(|_| {
                let (addr, bearer, body) = (server.http_addr, bearer.clone(), again.to_string());
                tokio::spawn(async move {
                    common::http_to(addr, "POST", "/api/group-sessions", &[("Authorization", &bearer)], Some(&body))
                        .await
                        .status
                })
            })
            .collect();
        let mut statuses = Vec::new();
        for t in creates {
            statuses.push(t.await.unwrap());
        }
        statuses.sort_unstable();
        assert_eq!(statuses, [201, 409, 409, 409], "{backend}: one series, the others refused as overlapping");

        // A double click: the same enrolment twice at once, under one key: one patient, one place.
        let body = json!({"patient": {"display_name": "Double Click"}}).to_string();
        let twice: Vec<_> = (0..2)
            .map(|_| {
                let (addr, bearer, id, body) = (server.http_addr, bearer.clone(), id.clone(), body.clone());
                tokio::spawn(async move {
                    let r = common::http_to(
                        addr,
                        "POST",
                        &format!("/api/group-sessions/{id}/enrolments"),
                        &[("Authorization", &bearer), ("Idempotency-Key", "enrol-double-click")],
                        Some(&body),
                    )
                    .await;
                    (r.status, r.json()["patient"]["id"].as_str().map(str::to_owned))
                })
            })
            .collect();
        let mut answers = Vec::new();
        for t in twice {
            answers.push(t.await.unwrap());
        }
        assert_eq!(answers[0], answers[1], "{backend}: the same answer twice");
        assert_eq!(answers[0].0, 201, "{backend}");
        let view = http(&server, "GET", &format!("/api/group-sessions/{id}"), &[("Authorization", &bearer)], None)
            .await
            .json();
        assert_eq!(view["enrolled"], 1, "{backend}: one place taken");
        let withdraw = format!("/api/group-sessions/{id}/enrolments/{}", answers[0].1.as_deref().unwrap());
        assert_eq!(http(&server, "DELETE", &withdraw, &[("Authorization", &bearer)], None).await.status, 204);

        let tasks: Vec<_> = (0..16)
            .map(|i| {
                let (addr, bearer, id) = (server.http_addr, bearer.clone(), id.clone());
                tokio::spawn(async move {
                    let body = json!({"patient": {"display_name": format!("Patient {i}")}}).to_string();
                    let r = common::http_to(
                        addr,
                        "POST",
                        &format!("/api/group-sessions/{id}/enrolments"),
                        &[("Authorization", &bearer)],
                        Some(&body),
                    )
                    .await;
                    (r.status, r.code())
                })
            })
            .collect();
        let mut outcomes = Vec::new();
        for t in tasks {
            outcomes.push(t.await.unwrap());
        }
        let admitted = outcomes.iter().filter(|(s, _)| *s == 201).count();
        let full = outcomes.iter().filter(|(s, c)| *s == 409 && c.as_deref() == Some("class_full")).count();
        assert_eq!((admitted, full), (12, 4), "{backend}: {outcomes:?}");
        let view = http(&server, "GET", &format!("/api/group-sessions/{id}"), &[("Authorization", &bearer)], None)
            .await
            .json();
        assert_eq!(view["enrolled"], 12, "{backend}");
        server.shutdown().await;
    }
}
