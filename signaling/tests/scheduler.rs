//! The scheduler on simulated time: room pre-provisioning, both reminders
//! through the outbox (with a gateway that fails first), no-show and
//! re-queue, auto-complete; red flags; CSV import; the calendar feed.

mod common;

use std::time::Duration;

use common::{config, create_staff, create_visit, http, login, webhook_receiver};
use serde_json::json;
use teleconsult_signaling::clock::{Clock, ManualClock};
use teleconsult_signaling::scheduler_worker::SchedulerWorker;
use teleconsult_signaling::server::start_with_clock;
use teleconsult_signaling::store::StaffRole;

const T0: i64 = 1_800_230_400 + 8 * 3600; // Monday 2027-01-18 08:00 UTC

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_transitions_on_simulated_time() {
    common::init_logs();
    let gateway = webhook_receiver(2).await;
    let clock = std::sync::Arc::new(ManualClock::new(T0));
    let mut cfg = config();
    cfg.reminder_webhook = Some(gateway.url.clone());
    let server = start_with_clock(cfg, clock.clone()).await.unwrap();
    create_staff(&server, "onco@h.fr", StaffRole::Clinician).await;
    let s = login(&server, "onco@h.fr").await;
    let bearer = s.bearer();
    let auth = [("Authorization", bearer.as_str())];
    let mut worker = SchedulerWorker::default();

    // A visit in 30 hours, one in 40 minutes that will be cancelled.
    let (visit, _) = create_visit(&server, &s, 30 * 3600).await;
    let (cancelled, _) = create_visit(&server, &s, 40 * 60).await;
    assert_eq!(
        worker.tick(&server.app, clock.now()).await.reminders_queued,
        1,
        "the 24h reminder of the 40-minute visit"
    );
    assert_eq!(http(&server, "POST", &format!("/api/visits/{cancelled}/cancel"), &auth, None).await.status, 200);

    // Six hours on, the 30-hour visit is 24 hours away: its reminder is queued.
    clock.advance(6 * 3600 + 1);
    let r = worker.tick(&server.app, clock.now()).await;
    assert_eq!(r.reminders_queued, 1);
    // The gateway refused the first two attempts; retries back off and then succeed.
    let mut delivered = r.delivered;
    for _ in 0..20 {
        clock.advance(60);
        delivered += worker.tick(&server.app, clock.now()).await.delivered;
    }
    assert_eq!(delivered, 2, "both queued reminders were delivered once");
    assert!(gateway.attempts.load(std::sync::atomic::Ordering::SeqCst) >= 3, "after failures");
    let keys = gateway.received.lock().unwrap().clone();
    assert_eq!(
        keys,
        vec![format!("reminder:{visit}:24h")],
        "the cancelled visit's reminder was not sent; the other arrived once"
    );

    // Fifteen minutes before the start: the room is provisioned and the 15min reminder goes.
    clock.set(T0 + 30 * 3600 - 14 * 60);
    let r = worker.tick(&server.app, clock.now()).await;
    assert_eq!((r.provisioned, r.reminders_queued, r.delivered), (1, 1, 1));
    assert_eq!(gateway.received.lock().unwrap().last().unwrap(), &format!("reminder:{visit}:15min"));
    // Ticking again sends nothing twice.
    let r = worker.tick(&server.app, clock.now()).await;
    assert_eq!((r.provisioned, r.reminders_queued, r.delivered), (0, 0, 0));

    // Sixteen minutes after the start, the patient never came: no-show, follow-up re-queued.
    clock.set(T0 + 30 * 3600 + 16 * 60);
    assert_eq!(worker.tick(&server.app, clock.now()).await.no_shows, 1);
    let v = http(&server, "GET", &format!("/api/visits/{visit}"), &auth, None).await.json();
    assert_eq!(v["visit"]["status"], "no_show");
    let q = http(&server, "GET", "/api/follow-ups", &auth, None).await.json();
    let requeued: Vec<&serde_json::Value> =
        q["follow_ups"].as_array().unwrap().iter().filter(|f| f["from_visit_id"] == visit.as_str()).collect();
    assert_eq!(requeued.len(), 1);
    assert_eq!(requeued[0]["status"], "unplaced");

    // A visit started and left with nobody in its room is completed after 30 minutes.
    let (running, _) = create_visit(&server, &s, 3600).await;
    assert_eq!(http(&server, "POST", &format!("/api/visits/{running}/start"), &auth, None).await.status, 200);
    assert_eq!(worker.tick(&server.app, clock.now()).await.auto_completed, 0);
    clock.advance(29 * 60);
    assert_eq!(worker.tick(&server.app, clock.now()).await.auto_completed, 0);
    clock.advance(2 * 60);
    assert_eq!(worker.tick(&server.app, clock.now()).await.auto_completed, 1);
    let v = http(&server, "GET", &format!("/api/visits/{running}"), &auth, None).await.json();
    assert_eq!(v["visit"]["status"], "completed");

    let audit = http(&server, "GET", &format!("/api/visits/{visit}/audit"), &auth, None).await.json();
    let actions: Vec<&str> =
        audit["events"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    for wanted in ["room_provisioned", "reminder_link_issued", "no_show"] {
        assert!(actions.contains(&wanted), "{wanted} in {actions:?}");
    }
    let outbox = server.app.store.outbox_entries().await.unwrap();
    assert!(outbox.iter().all(|e| e.delivered), "the outbox is drained: {outbox:?}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn red_flags_raise_the_next_follow_up_and_notify() {
    let (server, _clock) = common::server_at(T0).await;
    create_staff(&server, "onco@h.fr", StaffRole::Clinician).await;
    let s = login(&server, "onco@h.fr").await;
    let bearer = s.bearer();
    let auth = [("Authorization", bearer.as_str())];
    let (visit, link) = create_visit(&server, &s, 600).await;
    let booked = http(
        &server,
        "POST",
        &format!("/api/visits/{visit}/follow-ups"),
        &auth,
        Some(r#"{"due_in":{"weeks":4},"duration_minutes":20,"reason":"routine check"}"#),
    )
    .await;
    assert_eq!(booked.json()["follow_up"]["priority"], "routine");
    // The clinician is connected.
    let jt = http(&server, "POST", &format!("/api/visits/{visit}/join-token"), &auth, None).await.json();
    let (_clinician, mut events, ..) =
        common::join_ws(&common::ws_url(&server), jt["join_token"].as_str().unwrap().into()).await;

    let answers = json!({"fever": false, "cough": true, "breathlessness": true, "pain": 3, "fatigue": false});
    assert_eq!(
        http(&server, "POST", &format!("/api/join/{link}/questionnaire"), &[], Some(&answers.to_string())).await.status,
        200
    );
    let q = http(&server, "GET", "/api/follow-ups", &auth, None).await.json();
    assert_eq!(q["follow_ups"][0]["priority"], "urgent", "red flags raise the priority");
    let notice = common::wait_event(&mut events, Duration::from_secs(5), |m| {
        matches!(m, teleconsult_protocol::ServerMessage::Notice { .. })
    })
    .await;
    assert!(
        matches!(notice, Some(teleconsult_protocol::ServerMessage::Notice { kind, detail, .. }) if kind == "red_flags" && detail == "breathlessness")
    );
    server.shutdown().await;
}

fn csv_row(email: &str, name: &str, start: &str, minutes: &str) -> String {
    format!("{email},{name},H-1,,{start},{minutes},follow_up\n")
}

const HEADER: &str = "clinician_email,patient_name,hospital_id,contact,start,duration_minutes,kind\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_import_reports_every_row() {
    let (server, _clock) = common::server_at(T0).await;
    create_staff(&server, "admin@h.fr", StaffRole::Admin).await;
    create_staff(&server, "onco@h.fr", StaffRole::Clinician).await;
    let admin = login(&server, "admin@h.fr").await;
    let onco = login(&server, "onco@h.fr").await;
    let ab = admin.bearer();
    let post = |body: Vec<u8>, query: &'static str| {
        let ab = ab.clone();
        let addr = server.http_addr;
        async move {
            let text = String::from_utf8_lossy(&body).to_string();
            common::http_to(
                addr,
                "POST",
                &format!("/api/visits/import{query}"),
                &[("Authorization", &ab), ("Content-Type", "text/csv")],
                Some(&text),
            )
            .await
        }
    };

    // Good rows import, with their links.
    let good = format!(
        "{HEADER}{}{}",
        csv_row("onco@h.fr", "\"Dupont, Jeanne\"", "2027-01-19T09:00:00+01:00", "20"),
        csv_row("ONCO@h.fr", "Paul Martin", "2027-01-19T09:20:00+01:00", "20")
    );
    let r = post(good.into_bytes(), "").await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.json()["import"]["imported"], 2);
    assert!(r.json()["import"]["visits"][0]["patient_link"].as_str().unwrap().contains("/join/"));

    // Bad rows: nothing imported, each reported by line and field.
    let bad = format!(
        "{HEADER}{}{}{}{}",
        csv_row("onco@h.fr", "A", "next tuesday", "20"),
        csv_row("nobody@h.fr", "B", "2027-01-20T09:00:00Z", "20"),
        csv_row("onco@h.fr", "C", "2027-01-19T08:10:00Z", "20"), // overlaps 09:00+01:00 = 08:00Z for 20 min
        csv_row("onco@h.fr", "D", "2027-01-21T09:00:00Z", "20"),
    );
    let r = post(bad.clone().into_bytes(), "").await;
    assert_eq!(r.status, 422);
    let report = &r.json()["import"];
    assert_eq!(report["imported"], 0);
    let errors: Vec<(u64, String)> = report["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["line"].as_u64().unwrap(), e["field"].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(errors, vec![(2, "start".into()), (3, "clinician_email".into()), (4, "start".into())]);
    // The same file, partially: only line 5 goes in.
    let r = post(bad.into_bytes(), "?partial=true").await;
    assert_eq!((r.status, r.json()["import"]["imported"].as_u64()), (201, Some(1)));

    // An empty file, a header alone, and a non-UTF-8 file.
    assert_eq!(post(Vec::new(), "").await.code().as_deref(), Some("empty_file"));
    assert_eq!(post(HEADER.as_bytes().to_vec(), "").await.code().as_deref(), Some("empty_file"));
    let mut latin1 = HEADER.as_bytes().to_vec();
    latin1.extend_from_slice(b"onco@h.fr,Ren\xe9,H,,2027-01-22T09:00:00Z,20,follow_up\n");
    let r = common::http_to(
        server.http_addr,
        "POST",
        "/api/visits/import",
        &[("Authorization", &ab), ("Content-Type", "text/csv")],
        None,
    )
    .await;
    assert_eq!(r.code().as_deref(), Some("empty_file"), "no body is an empty file");
    let r = raw_post(server.http_addr, &ab, &latin1).await;
    assert!(r.contains("not_utf8"), "{r}");

    // A 5 MB file: every row checked and reported, nothing half-imported.
    let mut big = String::from(HEADER);
    let mut n = 0;
    while big.len() < 5 << 20 {
        big.push_str(&csv_row(
            "ghost@h.fr",
            &format!("Patient {n} with a rather long name to fill the file"),
            "2027-02-01T09:00:00Z",
            "20",
        ));
        n += 1;
    }
    let r = post(big.into_bytes(), "").await;
    assert_eq!(r.status, 422);
    assert_eq!(r.json()["import"]["errors"].as_array().unwrap().len(), n);
    assert_eq!(r.json()["import"]["imported"], 0);

    // Only admins import.
    let r = common::http_to(
        server.http_addr,
        "POST",
        "/api/visits/import",
        &[("Authorization", &onco.bearer()), ("Content-Type", "text/csv")],
        Some(HEADER),
    )
    .await;
    assert_eq!(r.status, 403);
    server.shutdown().await;
}

/// A POST with arbitrary bytes (the shared helper takes text).
async fn raw_post(addr: std::net::SocketAddr, bearer: &str, body: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /api/visits/import HTTP/1.1\r\nHost: {addr}\r\nAuthorization: {bearer}\r\nContent-Type: text/csv\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut out = Vec::new();
    stream.read_to_end(&mut out).await.unwrap();
    String::from_utf8_lossy(&out).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calendar_feed_parses_and_can_be_revoked() {
    let (server, _clock) = common::server_at(T0).await;
    create_staff(&server, "onco@h.fr", StaffRole::Clinician).await;
    let s = login(&server, "onco@h.fr").await;
    let bearer = s.bearer();
    let auth = [("Authorization", bearer.as_str())];
    let (v1, _) = create_visit(&server, &s, 3600).await;
    let (v2, _) = create_visit(&server, &s, 2 * 86_400).await;
    let url =
        http(&server, "POST", "/api/calendar-token", &auth, None).await.json()["url"].as_str().unwrap().to_string();
    let path = url.split_once("://").unwrap().1.split_once('/').unwrap().1;
    let feed = http(&server, "GET", &format!("/{path}"), &[], None).await;
    assert_eq!(feed.status, 200);
    assert!(feed.header("content-type").unwrap().starts_with("text/calendar"));
    let mut parser = ical::IcalParser::new(std::io::BufReader::new(feed.body.as_bytes()));
    let calendar = parser.next().expect("one calendar").expect("valid iCalendar");
    let uids: Vec<String> = calendar
        .events
        .iter()
        .filter_map(|e| e.properties.iter().find(|p| p.name == "UID").and_then(|p| p.value.clone()))
        .collect();
    assert_eq!(uids, vec![format!("{v1}@teleconsult"), format!("{v2}@teleconsult")]);
    assert!(!feed.body.contains("Jeanne"), "no patient names in the feed");
    // Revoked: the same URL is gone.
    assert_eq!(http(&server, "DELETE", "/api/calendar-token", &auth, None).await.status, 204);
    assert_eq!(http(&server, "GET", &format!("/{path}"), &[], None).await.status, 404);
    server.shutdown().await;
}
