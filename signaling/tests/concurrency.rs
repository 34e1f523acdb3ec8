//! Ordinary hospital concurrency, on each backend (SQLite and PostgreSQL):
//! sixteen clinicians clicking at once, eight tabs refreshing one session,
//! a double-click on Book, and every booking path racing for the same six
//! slots. Never a 5xx, never two visits in one slot (checked by a query).

mod common;

use std::sync::Arc;

use common::{HttpResponse, Session, create_staff, create_visit, http, login};
use serde_json::json;
use teleconsult_signaling::server::RunningServer;
use teleconsult_signaling::store::StaffRole;

const MONDAY_8H: i64 = 1_800_230_400 + 8 * 3600; // 2027-01-18T08:00:00Z, a Monday
const TUESDAY_9H: i64 = MONDAY_8H + 25 * 3600; // 2027-01-19T09:00:00Z

async fn server_on(db: String) -> RunningServer {
    let mut config = common::config();
    config.db = db;
    common::server_at_with(MONDAY_8H, config).await.0
}

/// A request in flight, labelled with what it is.
type Labelled = std::pin::Pin<Box<dyn std::future::Future<Output = (String, HttpResponse)> + Send>>;

fn no_5xx(what: &str, responses: &[HttpResponse]) {
    for r in responses {
        assert!(r.status < 500 && r.status != 0, "{what}: {} {}", r.status, r.body);
    }
}

/// `session`'s clinician works Tuesdays 09:00–11:00 UTC in 20-minute slots.
async fn tuesday_mornings(server: &RunningServer, session: &Session) {
    let availability =
        json!({"slot_minutes": 20, "time_zone": "UTC", "weekly": [{"weekday": 1, "start": "09:00", "end": "11:00"}]});
    let r = http(
        server,
        "PUT",
        &format!("/api/clinicians/{}/availability", session.clinician_id),
        &[("Authorization", &session.bearer())],
        Some(&availability.to_string()),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
}

async fn all<F: std::future::Future<Output = HttpResponse> + Send + 'static>(futures: Vec<F>) -> Vec<HttpResponse> {
    let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.expect("request task"));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_starts_and_ends_at_once_on_sqlite() {
    starts_and_ends(common::temp_db()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_starts_and_ends_at_once_on_postgres() {
    starts_and_ends(common::temp_postgres().await).await;
}

/// 16 visits started at the same instant, then ended at the same instant;
/// and one visit started 16 times at once (a double-clicking clinician).
async fn starts_and_ends(db: String) {
    let server = Arc::new(server_on(db).await);
    create_staff(&server, "onco@h.fr", StaffRole::Clinician).await;
    let s = login(&server, "onco@h.fr").await;
    let mut visits = Vec::new();
    for _ in 0..16 {
        visits.push(create_visit(&server, &s, 3600).await.0);
    }
    for (action, want) in [("start", "in_progress"), ("end", "completed")] {
        let requests = visits
            .iter()
            .map(|v| {
                let (server, bearer, path) = (server.clone(), s.bearer(), format!("/api/visits/{v}/{action}"));
                async move { http(&server, "POST", &path, &[("Authorization", &bearer)], None).await }
            })
            .collect();
        let responses = all(requests).await;
        no_5xx(action, &responses);
        for r in &responses {
            assert_eq!(r.status, 200, "{action}: {}", r.body);
            assert_eq!(r.json()["visit"]["status"], want);
        }
    }
    let (visit, _) = create_visit(&server, &s, 3600).await;
    let requests = (0..16)
        .map(|_| {
            let (server, bearer, path) = (server.clone(), s.bearer(), format!("/api/visits/{visit}/start"));
            async move { http(&server, "POST", &path, &[("Authorization", &bearer)], None).await }
        })
        .collect();
    let responses = all(requests).await;
    no_5xx("repeated start", &responses);
    assert!(responses.iter().all(|r| r.status == 200), "starting twice is harmless");
    let audit = server.app.store.audit_of_visit(&visit).await.unwrap();
    assert_eq!(audit.iter().filter(|e| e.action == "started").count(), 1, "and audited once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_refreshes_with_one_cookie_on_sqlite() {
    refreshes(common::temp_db()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_refreshes_with_one_cookie_on_postgres() {
    refreshes(common::temp_postgres().await).await;
}

/// Eight tabs refresh one session at once: exactly one wins; the others
/// present a token that is now used, which is what a thief would do, so
/// the whole family is revoked, the winner's new token included.
async fn refreshes(db: String) {
    let server = Arc::new(server_on(db).await);
    create_staff(&server, "onco@h.fr", StaffRole::Clinician).await;
    let s = login(&server, "onco@h.fr").await;
    let requests = (0..8)
        .map(|_| {
            let (server, cookie) = (server.clone(), s.refresh_cookie.clone());
            async move { http(&server, "POST", "/api/auth/refresh", &[("Cookie", &cookie)], None).await }
        })
        .collect();
    let responses = all(requests).await;
    no_5xx("refresh", &responses);
    let winners: Vec<&HttpResponse> = responses.iter().filter(|r| r.status == 200).collect();
    assert_eq!(
        winners.len(),
        1,
        "exactly one refresh wins: {:?}",
        responses.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    assert!(responses.iter().filter(|r| r.status != 200).all(|r| r.code().as_deref() == Some("invalid_refresh")));
    let new_cookie = winners[0].header("set-cookie").unwrap().split(';').next().unwrap().to_string();
    let r = http(&server, "POST", "/api/auth/refresh", &[("Cookie", &new_cookie)], None).await;
    assert_eq!(r.status, 401, "the family is revoked after the replay: {}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_booking_path_races_for_six_slots_on_sqlite() {
    booking_race(common::temp_db()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_booking_path_races_for_six_slots_on_postgres() {
    booking_race(common::temp_postgres().await).await;
}

/// The oncologist works Tuesdays 09:00–11:00 in 20-minute slots: six
/// slots. At the same instant: a CSV import of six visits into those slots
/// (partial), six follow-up bookings due that day, a visit created at
/// 09:40, and a reschedule of another visit onto 10:00. However the race
/// falls, no slot holds two visits, and nobody gets a 5xx.
async fn booking_race(db: String) {
    let server = Arc::new(server_on(db).await);
    create_staff(&server, "onco@h.fr", StaffRole::Clinician).await;
    create_staff(&server, "admin@h.fr", StaffRole::Admin).await;
    let onco = login(&server, "onco@h.fr").await;
    let admin = login(&server, "admin@h.fr").await;
    tuesday_mornings(&server, &onco).await;
    // Today's visit the follow-ups are booked from, and a Wednesday visit to move.
    let (from, _) = create_visit(&server, &onco, 3600).await;
    let (wednesday, _) = create_visit(&server, &onco, 2 * 86_400).await;

    let at = |secs: i64| teleconsult_signaling::timefmt::rfc3339(secs);
    let mut csv = String::from("clinician_email,patient_name,start,duration_minutes\n");
    for i in 0..6 {
        csv.push_str(&format!("onco@h.fr,Imported {i},{},20\n", at(TUESDAY_9H + i * 20 * 60)));
    }

    let mut requests: Vec<Labelled> = Vec::new();
    {
        let (server, bearer) = (server.clone(), admin.bearer());
        requests.push(Box::pin(async move {
            let headers = [("Authorization", bearer.as_str()), ("Content-Type", "text/csv")];
            ("import".into(), http(&server, "POST", "/api/visits/import?partial=true", &headers, Some(&csv)).await)
        }));
    }
    for i in 0..6 {
        let (server, bearer, from) = (server.clone(), onco.bearer(), from.clone());
        requests.push(Box::pin(async move {
            let body = json!({"due_date": "2027-01-19", "duration_minutes": 20, "reason": format!("check {i}"), "tolerance_days": 1});
            let path = format!("/api/visits/{from}/follow-ups");
            ("follow-up".into(), http(&server, "POST", &path, &[("Authorization", &bearer)], Some(&body.to_string())).await)
        }));
    }
    {
        let (server, bearer) = (server.clone(), onco.bearer());
        let body = json!({"patient": {"display_name": "Walk-in"}, "scheduled_start": at(TUESDAY_9H + 40 * 60), "duration_minutes": 20});
        requests.push(Box::pin(async move {
            (
                "create".into(),
                http(&server, "POST", "/api/visits", &[("Authorization", &bearer)], Some(&body.to_string())).await,
            )
        }));
    }
    {
        let (server, bearer) = (server.clone(), onco.bearer());
        let body = json!({"scheduled_start": at(TUESDAY_9H + 60 * 60)});
        let path = format!("/api/visits/{wednesday}");
        requests.push(Box::pin(async move {
            (
                "reschedule".into(),
                http(&server, "PATCH", &path, &[("Authorization", &bearer)], Some(&body.to_string())).await,
            )
        }));
    }
    let handles: Vec<_> = requests.into_iter().map(tokio::spawn).collect();
    let mut results = Vec::new();
    for h in handles {
        results.push(h.await.unwrap());
    }
    for (what, r) in &results {
        assert!(r.status < 500 && r.status != 0, "{what}: {} {}", r.status, r.body);
        match what.as_str() {
            "create" | "reschedule" => assert!(
                [200, 201].contains(&r.status) || r.code().as_deref() == Some("slot_taken"),
                "{what}: {} {}",
                r.status,
                r.body
            ),
            "follow-up" => assert_eq!(r.status, 201, "{}", r.body),
            _ => assert!([200, 201].contains(&r.status), "{what}: {} {}", r.status, r.body),
        }
    }
    assert_eq!(server.app.store.overlapping_live_visits().await.unwrap(), 0, "no two live visits overlap");
    let tuesday = server.app.store.busy_intervals(&onco.clinician_id, TUESDAY_9H, TUESDAY_9H + 2 * 3600).await.unwrap();
    assert_eq!(tuesday.len(), 6, "the six slots are all taken, once each: {tuesday:?}");
    let placed =
        results.iter().filter(|(w, r)| w == "follow-up" && r.json()["follow_up"]["status"] == "placed").count();
    let imported = results
        .iter()
        .find(|(w, _)| w == "import")
        .map(|(_, r)| r.json()["import"]["imported"].as_u64().unwrap())
        .unwrap();
    let others = results.iter().filter(|(w, r)| (w == "create" || w == "reschedule") && r.status < 300).count();
    assert_eq!(placed + imported as usize + others, 6, "every slot went to exactly one booking");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_double_click_books_once_on_sqlite() {
    double_click(common::temp_db()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_double_click_books_once_on_postgres() {
    double_click(common::temp_postgres().await).await;
}

/// Book pressed twice (the same Idempotency-Key, at once), then retried
/// after a lost answer: one follow-up, one visit, the first answer each
/// time; the key reused for another booking is refused.
async fn double_click(db: String) {
    let server = Arc::new(server_on(db).await);
    create_staff(&server, "onco@h.fr", StaffRole::Clinician).await;
    let onco = login(&server, "onco@h.fr").await;
    tuesday_mornings(&server, &onco).await;
    let (from, _) = create_visit(&server, &onco, 3600).await;
    let body =
        json!({"due_date": "2027-01-19", "duration_minutes": 20, "reason": "control", "tolerance_days": 1}).to_string();
    let book = |server: Arc<RunningServer>, s: &Session, key: &'static str, body: String| {
        let (bearer, path) = (s.bearer(), format!("/api/visits/{from}/follow-ups"));
        async move {
            http(&server, "POST", &path, &[("Authorization", &bearer), ("Idempotency-Key", key)], Some(&body)).await
        }
    };
    let responses = all(vec![
        book(server.clone(), &onco, "book-1", body.clone()),
        book(server.clone(), &onco, "book-1", body.clone()),
    ])
    .await;
    no_5xx("double click", &responses);
    assert!(responses.iter().all(|r| r.status == 201), "{:?}", responses.iter().map(|r| &r.body).collect::<Vec<_>>());
    assert_eq!(responses[0].json(), responses[1].json(), "the same answer twice");
    assert_eq!(responses.iter().filter(|r| r.header("idempotent-replayed") == Some("true")).count(), 1);
    let again = book(server.clone(), &onco, "book-1", body.clone()).await;
    assert_eq!(again.json(), responses[0].json(), "a retry gets the first answer");
    let visit = responses[0].json()["visit"]["id"].as_str().unwrap().to_string();
    let link = responses[0].json()["patient_link"]["url"].as_str().unwrap().rsplit('/').next().unwrap().to_string();
    assert_eq!(
        server.app.store.busy_intervals(&onco.clinician_id, TUESDAY_9H, TUESDAY_9H + 2 * 3600).await.unwrap().len(),
        1
    );
    let queue = http(&server, "GET", "/api/follow-ups", &[("Authorization", &onco.bearer())], None).await.json();
    assert_eq!(queue["follow_ups"].as_array().unwrap().len(), 1, "one follow-up booked");
    // The replayed link is the real one.
    server.app.store.visit_by_id(&visit).await.unwrap().expect("the visit exists");
    let hash = teleconsult_signaling::staff_auth::token_hash(&link);
    assert!(server.app.store.link_by_token_hash(&hash).await.unwrap().is_some());
    // The same key for another booking is refused.
    let other =
        json!({"due_date": "2027-01-19", "duration_minutes": 20, "reason": "other", "tolerance_days": 1}).to_string();
    let r = book(server.clone(), &onco, "book-1", other).await;
    assert_eq!((r.status, r.code().as_deref()), (422, Some("idempotency_key_reused")), "{}", r.body);
    // A malformed key is a 400.
    let r = http(
        &server,
        "POST",
        "/api/visits",
        &[("Authorization", &onco.bearer()), ("Idempotency-Key", "")],
        Some(&json!({"patient": {"display_name": "X"}, "scheduled_start": teleconsult_signaling::timefmt::rfc3339(TUESDAY_9H + 86_400), "duration_minutes": 20}).to_string()),
    )
    .await;
    assert_eq!(r.code().as_deref(), Some("invalid_idempotency_key"), "{}", r.body);
}
