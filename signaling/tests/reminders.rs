//! Reminders that stay true, on simulated time: a visit moved after its
//! reminder went out gets a "moved" message under a new key with the same
//! link; a cancelled one gets a "cancelled" message; stale reminders are
//! dropped; and a gateway that hangs delays no room set-up and no no-show.

mod common;

use std::time::{Duration, Instant};

use common::{config, create_staff, create_visit, http, login, server_at_with, webhook_receiver};
use serde_json::json;
use teleconsult_signaling::clock::Clock;
use teleconsult_signaling::scheduler_worker::SchedulerWorker;
use teleconsult_signaling::store::{LinkRole, StaffRole};
use teleconsult_signaling::timefmt::rfc3339;

const T0: i64 = 1_800_230_400 + 8 * 3600; // Monday 2027-01-18 08:00 UTC

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moved_visit_is_told_with_a_new_key_and_the_same_link() {
    let gateway = webhook_receiver(0).await;
    let mut cfg = config();
    cfg.reminder_webhook = Some(gateway.url.clone());
    let (server, clock) = server_at_with(T0, cfg).await;
    create_staff(&server, "onco@h.fr", StaffRole::Clinician).await;
    let s = login(&server, "onco@h.fr").await;
    let bearer = s.bearer();
    let auth = [("Authorization", bearer.as_str())];
    let mut worker = SchedulerWorker::default();

    // A visit tomorrow morning: its 24h reminder goes out now.
    let (visit, token) = create_visit(&server, &s, 20 * 3600).await;
    let booked_url = server.app.link_url(&token);
    let r = worker.tick_and_settle(&server.app, clock.now()).await;
    assert_eq!((r.reminders_queued, r.delivered), (1, 1));
    let first = gateway.bodies.lock().unwrap()[0].clone();
    assert_eq!(first["kind"], "24h");
    assert_eq!(first["link"], booked_url.as_str(), "the reminder sends the link made at booking");

    // Retried ticks send nothing twice.
    clock.advance(60);
    assert_eq!(worker.tick_and_settle(&server.app, clock.now()).await.delivered, 0);

    // Moved to the day after: the patient is told the new time, under a new key.
    let new_start = T0 + 44 * 3600;
    let r = http(
        &server,
        "PATCH",
        &format!("/api/visits/{visit}"),
        &auth,
        Some(&json!({"scheduled_start": rfc3339(new_start)}).to_string()),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let moved_at = clock.now();
    let r = worker.tick_and_settle(&server.app, clock.now()).await;
    assert_eq!(r.delivered, 1);
    let keys = gateway.received.lock().unwrap().clone();
    assert_eq!(keys[1], format!("reminder:{visit}:moved:{new_start}:{moved_at}"));
    assert_ne!(keys[1], keys[0]);
    let moved = gateway.bodies.lock().unwrap()[1].clone();
    assert_eq!(
        (moved["kind"].as_str(), moved["scheduled_start"].as_str()),
        (Some("moved"), Some(rfc3339(new_start).as_str()))
    );
    assert_eq!(moved["link"], booked_url.as_str(), "the same link, its window moved with the visit");
    let patient_links = |links: Vec<teleconsult_signaling::store::Link>| {
        links.into_iter().filter(|l| l.role == LinkRole::Patient).count()
    };
    assert_eq!(patient_links(server.app.store.links_of_visit(&visit).await.unwrap()), 1, "no extra link");

    // A day before the new time, a new 24h reminder (the new start is in its key).
    clock.set(new_start - 23 * 3600);
    let r = worker.tick_and_settle(&server.app, clock.now()).await;
    assert_eq!((r.reminders_queued, r.delivered), (1, 1));
    assert_eq!(gateway.received.lock().unwrap()[2], format!("reminder:{visit}:24h:{new_start}"));

    // Cancelled: the patient is told, once, without a link.
    assert_eq!(http(&server, "POST", &format!("/api/visits/{visit}/cancel"), &auth, None).await.status, 200);
    let r = worker.tick_and_settle(&server.app, clock.now()).await;
    assert_eq!(r.delivered, 1);
    let cancelled = gateway.bodies.lock().unwrap()[3].clone();
    assert_eq!(gateway.received.lock().unwrap()[3], format!("reminder:{visit}:cancelled"));
    assert_eq!(cancelled["kind"], "cancelled");
    assert!(cancelled.get("link").is_none());
    assert_eq!(patient_links(server.app.store.links_of_visit(&visit).await.unwrap()), 1, "still one link");

    // A visit never reminded is moved and cancelled silently.
    let (quiet, _) = create_visit(&server, &s, 5 * 86_400).await;
    let r = http(
        &server,
        "PATCH",
        &format!("/api/visits/{quiet}"),
        &auth,
        Some(&json!({"scheduled_start": rfc3339(T0 + 6 * 86_400)}).to_string()),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(http(&server, "POST", &format!("/api/visits/{quiet}/cancel"), &auth, None).await.status, 200);
    assert_eq!(worker.tick_and_settle(&server.app, clock.now()).await.delivered, 0);
    assert_eq!(gateway.received.lock().unwrap().len(), 4);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reminder_queued_before_a_move_is_dropped_not_sent() {
    let gateway = webhook_receiver(1).await;
    let mut cfg = config();
    cfg.reminder_webhook = Some(gateway.url.clone());
    let (server, clock) = server_at_with(T0, cfg).await;
    create_staff(&server, "onco@h.fr", StaffRole::Clinician).await;
    let s = login(&server, "onco@h.fr").await;
    let bearer = s.bearer();
    let mut worker = SchedulerWorker::default();
    let (visit, _) = create_visit(&server, &s, 20 * 3600).await;
    // The gateway refuses the first attempt: the 24h reminder waits for a retry.
    let r = worker.tick_and_settle(&server.app, clock.now()).await;
    assert_eq!((r.reminders_queued, r.failed), (1, 1));
    // Meanwhile the visit moves a week on.
    let r = http(
        &server,
        "PATCH",
        &format!("/api/visits/{visit}"),
        &[("Authorization", &bearer)],
        Some(&json!({"scheduled_start": rfc3339(T0 + 7 * 86_400)}).to_string()),
    )
    .await;
    assert_eq!(r.status, 200);
    clock.advance(3600);
    let r = worker.tick_and_settle(&server.app, clock.now()).await;
    assert_eq!((r.delivered, r.dropped), (0, 1), "the old time is never sent");
    assert!(gateway.received.lock().unwrap().is_empty());
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_gateway_delays_no_room_and_no_no_show() {
    let mut cfg = config();
    cfg.reminder_webhook = Some(common::hung_gateway().await);
    // The gateway hangs longer than any tick: a 60 s limit per delivery.
    cfg.reminder_timeout = Duration::from_secs(60);
    cfg.reminder_concurrency = 2;
    let (server, clock) = server_at_with(T0, cfg).await;
    create_staff(&server, "onco@h.fr", StaffRole::Clinician).await;
    let s = login(&server, "onco@h.fr").await;
    let mut worker = SchedulerWorker::default();
    // Three visits: tomorrow, in 2 minutes (the patient will not come), in 30 minutes.
    create_visit(&server, &s, 20 * 3600).await;
    let (missed, _) = create_visit(&server, &s, 2 * 60).await;
    let (soon, _) = create_visit(&server, &s, 30 * 60).await;

    let started = Instant::now();
    let r = worker.tick(&server.app, clock.now()).await;
    assert!(started.elapsed() < Duration::from_secs(1), "the tick does not wait for the gateway");
    assert_eq!(r.reminders_queued, 3);
    assert_eq!((r.dispatched, worker.deliveries_in_flight()), (2, 2), "at most two deliveries in flight");

    // Eighteen minutes on, with both deliveries still hanging: the missed
    // visit is a no-show and the next one's room is ready, on this tick.
    clock.advance(18 * 60);
    let started = Instant::now();
    let r = worker.tick(&server.app, clock.now()).await;
    assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());
    assert_eq!((r.no_shows, r.provisioned), (1, 1), "{r:?}");
    assert_eq!(r.dispatched, 0, "no room for a third delivery while two hang");
    assert_eq!(worker.deliveries_in_flight(), 2);
    let missed = server.app.store.visit_by_id(&missed).await.unwrap().unwrap();
    assert_eq!(missed.status.as_str(), "no_show");
    let audit = server.app.store.audit_of_visit(&soon).await.unwrap();
    assert!(audit.iter().any(|e| e.action == "room_provisioned"), "the room of the visit in 12 minutes is ready");
    server.shutdown().await;
}

#[tokio::test]
async fn a_delivery_that_hangs_ends_at_its_time_limit() {
    let url = common::hung_gateway().await;
    let started = Instant::now();
    let outcome = teleconsult_signaling::webhook::post(&url, "k", "{}", Duration::from_millis(300)).await;
    assert_eq!(outcome, Err("timed out".to_string()));
    assert!(started.elapsed() < Duration::from_secs(2));
}
