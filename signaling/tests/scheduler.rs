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
        worker.tick_and_settle(&server.app, clock.now()).await.reminders_queued,
        1,
        "the 24h reminder of the 40-minute visit"
    );
    assert_eq!(http(&server, "POST", &format!("/api/visits/{cancelled}/cancel"), &auth, None).await.status, 200);

    // Six hours on, the 30-hour visit is 24 hours away: its reminder is queued.
    clock.advance(6 * 3600 + 1);
    let r = worker.tick_and_settle(&server.app, clock.now()).await;
    assert_eq!(r.reminders_queued, 1);
    // The gateway refused the first two attempts; retries back off and then succeed.
    let (mut delivered, mut dropped) = (r.delivered, r.dropped);
    for _ in 0..20 {
        clock.advance(60);
        let r = worker.tick_and_settle(&server.app, clock.now()).await;
        (delivered, dropped) = (delivered + r.delivered, dropped + r.dropped);
    }
    assert_eq!((delivered, dropped), (1, 1), "one delivered once; the cancelled visit's reminder dropped");
    assert!(gateway.attempts.load(std::sync::atomic::Ordering::SeqCst) >= 3, "after failures");
    let keys = gateway.received.lock().unwrap().clone();
    let start = server.app.store.visit_by_id(&visit).await.unwrap().unwrap().scheduled_start;
    assert_eq!(
        keys,
        vec![format!("reminder:{visit}:24h:{start}")],
        "the cancelled visit's reminder was not sent; the other arrived once"
    );

    // Fifteen minutes before the start: the room is provisioned and the 15min reminder goes.
    clock.set(T0 + 30 * 3600 - 14 * 60);
    let r = worker.tick_and_settle(&server.app, clock.now()).await;
    assert_eq!((r.provisioned, r.reminders_queued, r.delivered), (1, 1, 1));
    assert_eq!(gateway.received.lock().unwrap().last().unwrap(), &format!("reminder:{visit}:15min:{start}"));
    // Ticking again sends nothing twice.
    let r = worker.tick_and_settle(&server.app, clock.now()).await;
    assert_eq!((r.provisioned, r.reminders_queued, r.delivered), (0, 0, 0));

    // Sixteen minutes after the start, the patient never came: no-show, follow-up re-queued.
    clock.set(T0 + 30 * 3600 + 16 * 60);
    assert_eq!(worker.tick_and_settle(&server.app, clock.now()).await.no_shows, 1);
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
    assert_eq!(worker.tick_and_settle(&server.app, clock.now()).await.auto_completed, 0);
    clock.advance(29 * 60);
    assert_eq!(worker.tick_and_settle(&server.app, clock.now()).await.auto_completed, 0);
    clock.advance(2 * 60);
    assert_eq!(worker.tick_and_settle(&server.app, clock.now()).await.auto_completed, 1);
    let v = http(&server, "GET", &format!("/api/visits/{running}"), &auth, None).await.json();
    assert_eq!(v["visit"]["status"], "completed");

    let audit = http(&server, "GET", &format!("/api/visits/{visit}/audit"), &auth, None).await.json();
    let actions: Vec<&str> =
        audit["events"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    for wanted in ["room_provisioned", "no_show"] {
        assert!(actions.contains(&wanted), "{wanted} in {actions:?}");
    }
    assert!(!actions.contains(&"reminder_link_issued"), "reminders reuse the visit's link: {actions:?}");
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
    assert!(r.contains("\"encoding\":\"windows-1252\"") && r.contains("\"imported\":1"), "read as Windows-1252: {r}");

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
    raw_post_to(addr, "/api/visits/import", bearer, body).await
}

async fn raw_post_to(addr: std::net::SocketAddr, path: &str, bearer: &str, body: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: {bearer}\r\nContent-Type: text/csv\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
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

/// The JSON body of a raw HTTP response, and its status.
fn raw_json(response: &str) -> (u16, serde_json::Value) {
    let status = response.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (status, serde_json::from_str(body).unwrap_or(serde_json::Value::Null))
}

/// A French hospital's export, as Excel writes it: `;`, a BOM, CRLF,
/// French column names, `dd/mm/yyyy HH:MM` in Paris time, accents, a
/// hospital number seen before under another spelling, one bad row.
const FRENCH_EXPORT: &str = "Email médecin;Nom du patient;IPP;Téléphone;Date et heure;Durée;Type\r\n\
onco@h.fr;Jeanne Dupond;IPP-001;06 01 02 03 04;19/01/2027 09:00;20;Suivi\r\n\
onco@h.fr;Élodie Bérard;IPP-002;;19/01/2027 09:30;20;Première\r\n\
onco@h.fr;Élodie Bérard;IPP-002;;20/01/2027 09:30;20;suivi\r\n\
onco@h.fr;Paul Martin;IPP-003;;31/02/2027 09:00;20;suivi\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_french_excel_export_imports_its_good_rows_with_a_report() {
    let (server, _clock) = common::server_at(T0).await;
    create_staff(&server, "admin@h.fr", StaffRole::Admin).await;
    create_staff(&server, "onco@h.fr", StaffRole::Clinician).await;
    let admin = login(&server, "admin@h.fr").await;
    let onco = login(&server, "onco@h.fr").await;
    let ab = admin.bearer();
    let ob = onco.bearer();
    // Jeanne Dupont (IPP-001) is already a patient.
    let (existing, _) = create_visit(&server, &onco, 3600).await;
    let jeanne = http(&server, "GET", &format!("/api/visits/{existing}"), &[("Authorization", &ob)], None).await.json()
        ["visit"]["patient"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let visit = server.app.store.visit_by_id(&existing).await.unwrap().unwrap();
    assert_eq!(
        server.app.store.patient_by_id(&visit.patient_id).await.unwrap().unwrap().hospital_id.as_deref(),
        Some("H-123")
    );
    // Give her the hospital number of the export.
    let r = raw_post_to(
        server.http_addr,
        "/api/visits/import",
        &ab,
        b"clinician_email,patient_name,start,duration_minutes,hospital_id\nonco@h.fr,Jeanne Dupont,2027-01-25T09:00:00+01:00,20,IPP-001\n",
    )
    .await;
    assert_eq!(raw_json(&r).0, 201, "{r}");
    let mut utf8 = b"\xef\xbb\xbf".to_vec();
    utf8.extend_from_slice(FRENCH_EXPORT.as_bytes());

    // The preview: every row checked and placed, nothing kept.
    let (status, preview) =
        raw_json(&raw_post_to(server.http_addr, "/api/visits/import?dry_run=true", &ab, &utf8).await);
    assert_eq!(status, 200, "{preview}");
    let report = &preview["import"];
    assert_eq!((report["separator"].as_str(), report["encoding"].as_str()), (Some(";"), Some("UTF-8")));
    assert_eq!((report["rows"].as_u64(), report["imported"].as_u64()), (Some(4), Some(3)));
    assert!(
        report["visits"].as_array().unwrap().iter().all(|v| v.get("patient_link").is_none()),
        "no links in a preview"
    );
    let after_preview = server.app.store.visits_of_clinician(&onco.clinician_id, 0, i64::MAX).await.unwrap();
    assert_eq!(after_preview.len(), 2, "the preview imported nothing");

    // The real import, good rows only.
    let (status, body) = raw_json(&raw_post_to(server.http_addr, "/api/visits/import?partial=true", &ab, &utf8).await);
    assert_eq!(status, 201, "{body}");
    let report = &body["import"];
    assert_eq!(report["imported"], 3);
    let errors = report["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{report}");
    assert_eq!((errors[0]["line"].as_u64(), errors[0]["field"].as_str()), (Some(5), Some("start")));
    assert!(errors[0]["message"].as_str().unwrap().contains("31/02/2027 09:00"), "{}", errors[0]);
    // IPP-001 is Jeanne, whose name is spelt differently: reused, with a warning.
    let warnings = report["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 1, "{report}");
    assert_eq!((warnings[0]["line"].as_u64(), warnings[0]["field"].as_str()), (Some(2), Some("patient_name")));
    let visits = report["visits"].as_array().unwrap();
    let patient_of = |i: usize| {
        let id = visits[i]["visit_id"].as_str().unwrap().to_string();
        let store = server.app.store.clone();
        async move { store.visit_by_id(&id).await.unwrap().unwrap() }
    };
    let (v2, v3, v4) = (patient_of(0).await, patient_of(1).await, patient_of(2).await);
    let jeanne_ipp = server.app.store.patient_by_id(&v2.patient_id).await.unwrap().unwrap();
    assert_eq!(jeanne_ipp.display_name, "Jeanne Dupont", "the existing patient, not a second one");
    assert_ne!(jeanne_ipp.id, jeanne, "IPP-001 was the imported Jeanne, H-123 another record");
    assert_eq!(v3.patient_id, v4.patient_id, "one patient per hospital number within the file");
    let elodie = server.app.store.patient_by_id(&v3.patient_id).await.unwrap().unwrap();
    assert_eq!(elodie.display_name, "Élodie Bérard");
    // 19/01/2027 09:00 in Paris is 08:00 UTC.
    assert_eq!(teleconsult_signaling::timefmt::rfc3339(v2.scheduled_start), "2027-01-19T08:00:00Z");
    assert_eq!(v3.kind, teleconsult_signaling::store::VisitKind::First);

    // The same export from a Windows code page (cp1252, no BOM): read alike.
    let later = FRENCH_EXPORT.replace("2027 09", "2027 10");
    let (cp1252, _, unmappable) = encoding_rs::WINDOWS_1252.encode(&later);
    assert!(!unmappable);
    let (status, body) =
        raw_json(&raw_post_to(server.http_addr, "/api/visits/import?dry_run=true", &ab, &cp1252).await);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["import"]["encoding"], "windows-1252");
    assert_eq!(body["import"]["imported"], 3, "{body}");
    assert_eq!(body["import"]["errors"][0]["line"], 5);

    // Commas, but French dates: imported.
    let r = raw_post_to(
        server.http_addr,
        "/api/visits/import",
        &ab,
        b"clinician_email,patient_name,start,duration_minutes\r\nonco@h.fr,Luc Petit,21/01/2027 10:00,20\r\n",
    )
    .await;
    assert_eq!(raw_json(&r).0, 201, "{r}");

    // A header that fits no layout says what was read.
    let (status, body) =
        raw_json(&raw_post_to(server.http_addr, "/api/visits/import", &ab, b"Docteur;Malade;Quand\r\na;b;c\r\n").await);
    assert_eq!(status, 422);
    assert_eq!(body["error"]["code"], "missing_column");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("separator ;") && message.contains("Docteur") && message.contains("clinician_email"),
        "{message}"
    );
    server.shutdown().await;
}
