//! The patient data lifecycle on both backends, on simulated time: the
//! retention purge removes what outlived its purpose (checked in the
//! database itself, not through the API) and keeps what is within it, the
//! audit trail stays with pseudonymous ids, weekly figures do not change;
//! a patient's export holds every table's rows for them and nothing of
//! another; an erasure leaves no text column holding their name, contact
//! or hospital number.

mod common;

use std::process::Command;

use common::{both_databases, config, create_staff, http, login, server_at_with};
use serde_json::{Value, json};
use sqlx::Row;
use teleconsult_signaling::clock::Clock;
use teleconsult_signaling::scheduler_worker::SchedulerWorker;
use teleconsult_signaling::server::RunningServer;
use teleconsult_signaling::store::StaffRole;
use teleconsult_signaling::timefmt::rfc3339;

const BIN: &str = env!("CARGO_BIN_EXE_teleconsult");
const T0: i64 = 1_800_230_400 + 8 * 3600; // Monday 2027-01-18 08:00 UTC
const DAY: i64 = 86_400;

/// A direct connection to the test database, to look at rows themselves.
async fn raw(db: &str) -> sqlx::AnyPool {
    sqlx::any::install_default_drivers();
    let url = if db.starts_with("postgres") { db.to_string() } else { format!("sqlite://{db}") };
    sqlx::any::AnyPoolOptions::new().max_connections(1).connect(&url).await.expect("raw connection")
}

async fn count(pool: &sqlx::AnyPool, sql: &str, id: &str) -> i64 {
    sqlx::query(sql).bind(id).fetch_one(pool).await.unwrap_or_else(|e| panic!("{sql}: {e}")).get::<i64, _>(0)
}

/// Books a visit at `start` for a new patient; returns (visit id, link token, patient id).
async fn visit_for(
    server: &RunningServer,
    bearer: &str,
    start: i64,
    name: &str,
    ipp: &str,
    contact: &str,
) -> (String, String, String) {
    let body = json!({
        "patient": {"display_name": name, "hospital_id": ipp, "contact": contact},
        "scheduled_start": rfc3339(start), "duration_minutes": 20,
    });
    let r = http(server, "POST", "/api/visits", &[("Authorization", bearer)], Some(&body.to_string())).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let v = r.json();
    let token = v["patient_link"]["url"].as_str().unwrap().rsplit('/').next().unwrap().to_string();
    (v["visit"]["id"].as_str().unwrap().to_string(), token, v["visit"]["patient"]["id"].as_str().unwrap().to_string())
}

/// A visit with a questionnaire, a monitoring enrolment with a check-in, a
/// follow-up, and an end: a patient's whole footprint.
async fn full_footprint(
    server: &RunningServer,
    bearer: &str,
    start: i64,
    name: &str,
    ipp: &str,
    contact: &str,
) -> (String, String) {
    let clock = server.app.clock.clone();
    let (visit, token, patient) = visit_for(server, bearer, start, name, ipp, contact).await;
    let auth = [("Authorization", bearer)];
    let answers = json!({"fever": false, "cough": true, "breathlessness": false, "pain": 8, "fatigue": false, "new_symptoms": format!("{name} has a rash")});
    let r = http(server, "POST", &format!("/api/join/{token}/questionnaire"), &[], Some(&answers.to_string())).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = http(
        server,
        "POST",
        &format!("/api/visits/{visit}/follow-ups"),
        &auth,
        Some(r#"{"due_in":{"weeks":2},"duration_minutes":20,"reason":"scan results"}"#),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let r = http(server, "POST", &format!("/api/visits/{visit}/monitoring"), &auth, Some(r#"{"days": 2}"#)).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let monitor = r.json()["link"]["url"].as_str().unwrap().rsplit('/').next().unwrap().to_string();
    let r = http(server, "POST", &format!("/api/monitor/{monitor}/check-ins"), &[], Some(&json!({"fever": false, "cough": false, "breathlessness": false, "pain": 1, "fatigue": false, "new_symptoms": format!("{name} feels fine")}).to_string())).await;
    assert_eq!(r.status, 201, "{}", r.body);
    // A class: enrolled, and at its first occurrence (attendance).
    let class = class_of(server, bearer).await;
    let body = json!({"patient": {"id": patient}}).to_string();
    let r = http(server, "POST", &format!("/api/group-sessions/{class}/enrolments"), &auth, Some(&body)).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let link = r.json()["links"][0]["id"].as_str().unwrap().to_string();
    assert!(server.app.store.record_attendance(&link, clock.now()).await.unwrap());
    (visit, patient)
}

/// A class of the clinician still to come (one occurrence, three days
/// from the server's now at 10:00 UTC), made when there is none.
async fn class_of(server: &RunningServer, bearer: &str) -> String {
    let auth = [("Authorization", bearer)];
    let list = http(server, "GET", "/api/group-sessions", &auth, None).await.json();
    let upcoming = list["group_sessions"].as_array().unwrap().iter().find(|s| !s["next_occurrence"].is_null());
    if let Some(id) = upcoming.and_then(|s| s["id"].as_str()) {
        return id.to_string();
    }
    let day = server.app.clock.now() + 3 * DAY;
    let first_day = &teleconsult_signaling::timefmt::rfc3339(day)[..10];
    // 1 January 1970 was a Thursday.
    let weekday = ["thu", "fri", "sat", "sun", "mon", "tue", "wed"][(day / DAY % 7) as usize];
    let body = json!({"title": "Gentle strength", "time_zone": "UTC", "weekdays": [weekday], "start_time": "10:00",
        "duration_minutes": 60, "first_day": first_day, "weeks": 1});
    let r = http(server, "POST", "/api/group-sessions", &auth, Some(&body.to_string())).await;
    assert_eq!(r.status, 201, "{}", r.body);
    r.json()["id"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_purge_removes_what_outlived_its_purpose_on_both_backends() {
    for (backend, db) in both_databases().await {
        let mut cfg = config();
        cfg.db = db.clone();
        let (server, clock) = server_at_with(T0, cfg).await;
        create_staff(&server, "onco@h.fr", StaffRole::Clinician).await;
        create_staff(&server, "ops@h.fr", StaffRole::Ops).await;
        let onco = login(&server, "onco@h.fr").await;
        let ops = login(&server, "ops@h.fr").await;
        let bearer = onco.bearer();
        let auth = [("Authorization", bearer.as_str())];
        let mut worker = SchedulerWorker::default();

        // Alice is seen today; her visit ends.
        let (alice_visit, alice) =
            full_footprint(&server, &bearer, T0 + 1200, "Alice Ancienne", "IPP-ALICE", "alice@example.org").await;
        assert_eq!(http(&server, "POST", &format!("/api/visits/{alice_visit}/start"), &auth, None).await.status, 200);
        assert_eq!(http(&server, "POST", &format!("/api/visits/{alice_visit}/end"), &auth, None).await.status, 200);
        // Her follow-up is cancelled (she will be seen elsewhere).
        let queue = http(&server, "GET", "/api/follow-ups", &auth, None).await.json();
        let f = queue["follow_ups"][0]["id"].as_str().unwrap().to_string();
        assert_eq!(http(&server, "POST", &format!("/api/follow-ups/{f}/cancel"), &auth, None).await.status, 200);
        let week = "2027-01-18";
        let weekly_path = format!("/api/ops/weekly?start={week}");
        let figures_before = http(&server, "GET", &weekly_path, &[("Authorization", &ops.bearer())], None).await.json();

        // Sixty days on, Bruno is seen.
        clock.set(T0 + 60 * DAY);
        let (bruno_visit, bruno) =
            full_footprint(&server, &bearer, T0 + 60 * DAY + 1200, "Bruno Récent", "IPP-BRUNO", "bruno@example.org")
                .await;
        assert_eq!(http(&server, "POST", &format!("/api/visits/{bruno_visit}/start"), &auth, None).await.status, 200);
        assert_eq!(http(&server, "POST", &format!("/api/visits/{bruno_visit}/end"), &auth, None).await.status, 200);
        let queue = http(&server, "GET", "/api/follow-ups", &auth, None).await.json();
        for f in queue["follow_ups"].as_array().unwrap() {
            let id = f["id"].as_str().unwrap();
            assert_eq!(http(&server, "POST", &format!("/api/follow-ups/{id}/cancel"), &auth, None).await.status, 200);
        }

        // Ninety-five days after Alice's visit: hers is past the 90 days, Bruno's is not.
        clock.set(T0 + 95 * DAY);
        let report = worker.tick_and_settle(&server.app, clock.now()).await;
        assert_eq!(report.purged.patients, 1, "{backend}: {:?}", report.purged);
        let pool = raw(&db).await;
        // Alice: no name, contact, hospital number, answers, links or check-ins; her visit row stays.
        let row = sqlx::query("SELECT display_name, hospital_id, contact, purged_at FROM patients WHERE id = $1")
            .bind(&alice)
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(row.get::<String, _>("display_name"), "", "{backend}");
        assert!(
            row.get::<Option<String>, _>("hospital_id").is_none() && row.get::<Option<String>, _>("contact").is_none()
        );
        assert_eq!(row.get::<Option<i64>, _>("purged_at"), Some(T0 + 95 * DAY));
        assert_eq!(
            count(&pool, "SELECT COUNT(*) FROM visits WHERE patient_id = $1", &alice).await,
            1,
            "the visit is kept"
        );
        assert_eq!(
            count(&pool, "SELECT COUNT(*) FROM visits WHERE patient_id = $1 AND questionnaire IS NOT NULL", &alice)
                .await,
            0
        );
        assert_eq!(count(&pool, "SELECT COUNT(*) FROM links WHERE visit_id = $1", &alice_visit).await, 0);
        assert_eq!(count(&pool, "SELECT COUNT(*) FROM monitoring_check_ins c JOIN monitoring_enrolments e ON e.id = c.enrolment_id WHERE e.patient_id = $1", &alice).await, 0);
        assert_eq!(
            count(&pool, "SELECT COUNT(*) FROM follow_ups WHERE patient_id = $1 AND reason <> ''", &alice).await,
            0
        );
        // Bruno, within his retention, is intact (his links expired and went).
        let row = sqlx::query("SELECT display_name, hospital_id, contact FROM patients WHERE id = $1")
            .bind(&bruno)
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(row.get::<String, _>("display_name"), "Bruno Récent");
        assert_eq!(row.get::<Option<String>, _>("contact").as_deref(), Some("bruno@example.org"));
        assert_eq!(
            count(&pool, "SELECT COUNT(*) FROM visits WHERE patient_id = $1 AND questionnaire IS NOT NULL", &bruno)
                .await,
            1
        );
        assert_eq!(count(&pool, "SELECT COUNT(*) FROM monitoring_check_ins c JOIN monitoring_enrolments e ON e.id = c.enrolment_id WHERE e.patient_id = $1", &bruno).await, 1);
        assert_eq!(
            count(&pool, "SELECT COUNT(*) FROM links WHERE visit_id = $1", &bruno_visit).await,
            0,
            "expired links go"
        );
        // Nothing of Alice in any text column; Bruno still there.
        for needle in ["Alice", "IPP-ALICE", "alice@example.org"] {
            let left = server.app.store.text_columns_containing(needle).await.unwrap();
            assert!(left.is_empty(), "{backend}: {needle} in {left:?}");
        }
        assert!(!server.app.store.text_columns_containing("Bruno").await.unwrap().is_empty());
        // The audit trail keeps Alice's visit under its ids, says what was purged, and counts each kind.
        let audit = server.app.store.audit_of_visit(&alice_visit).await.unwrap();
        for action in ["created", "started", "ended", "questionnaire_answered"] {
            assert!(audit.iter().any(|e| e.action == action), "{backend}: {action} kept");
        }
        assert_eq!(
            count(&pool, "SELECT COUNT(*) FROM audit_events WHERE action = 'patient_purged' AND detail = $1", &alice)
                .await,
            1
        );
        assert_eq!(
            count(
                &pool,
                "SELECT COUNT(*) FROM audit_events WHERE action = 'retention_purge' AND detail LIKE $1",
                "patients=%"
            )
            .await,
            1
        );
        // The weekly figures of Alice's week are unchanged.
        let figures_after = http(&server, "GET", &weekly_path, &[("Authorization", &ops.bearer())], None).await.json();
        assert_eq!(figures_before, figures_after, "{backend}");
        // A second pass finds nothing more.
        assert!(worker.tick_and_settle(&server.app, clock.now()).await.purged.is_empty());

        // Three years on, audit events past their retention go too; the purge's own remain.
        clock.set(T0 + 1100 * DAY);
        let report = worker.tick_and_settle(&server.app, clock.now()).await;
        assert!(report.purged.audit_events > 0, "{backend}: {:?}", report.purged);
        let cutoff = (T0 + 5 * DAY).to_string();
        assert_eq!(count(&pool, "SELECT COUNT(*) FROM audit_events WHERE at < CAST($1 AS BIGINT)", &cutoff).await, 0);
        assert!(count(&pool, "SELECT COUNT(*) FROM audit_events WHERE action = $1", "retention_purge").await > 0);
        assert_eq!(report.purged.patients, 1, "Bruno's turn");
        pool.close().await;
        server.shutdown().await;
    }
}

/// The tables that hold rows about a patient: those with a column naming a
/// patient, a visit or an enrolment (from the database's own catalogue, so
/// a table added later is covered or this test fails).
async fn patient_tables(pool: &sqlx::AnyPool, postgres: bool) -> Vec<String> {
    let sql = if postgres {
        "SELECT DISTINCT table_name::text AS t FROM information_schema.columns WHERE table_schema = current_schema() \
         AND column_name IN ('patient_id', 'visit_id', 'enrolment_id') ORDER BY 1"
    } else {
        "SELECT DISTINCT m.name AS t FROM sqlite_master m JOIN pragma_table_info(m.name) c \
         WHERE m.type = 'table' AND c.name IN ('patient_id', 'visit_id', 'enrolment_id') ORDER BY 1"
    };
    let mut tables: Vec<String> =
        sqlx::query(sql).fetch_all(pool).await.unwrap().iter().map(|r| r.get::<String, _>(0)).collect();
    // Which visit is which class's occurrence: no patient's data.
    tables.retain(|t| t != "group_occurrences");
    tables.push("patients".into());
    tables.sort();
    tables
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_holds_every_row_of_the_patient_and_erasure_leaves_nothing() {
    for (backend, db) in both_databases().await {
        let gateway = common::webhook_receiver(0).await;
        let mut cfg = config();
        cfg.db = db.clone();
        cfg.reminder_webhook = Some(gateway.url.clone());
        let (server, clock) = server_at_with(T0, cfg).await;
        create_staff(&server, "onco@h.fr", StaffRole::Clinician).await;
        let onco = login(&server, "onco@h.fr").await;
        let bearer = onco.bearer();
        let mut worker = SchedulerWorker::default();
        let (carla_visit, carla) =
            full_footprint(&server, &bearer, T0 + 600, "Carla Martin", "IPP-CARLA", "+33 6 11 22 33 44").await;
        let (denis_visit, denis) =
            full_footprint(&server, &bearer, T0 + 1800, "Denis Moreau", "IPP-DENIS", "+33 6 55 66 77 88").await;
        worker.tick_and_settle(&server.app, clock.now()).await; // reminders and notices into the outbox
        server.shutdown().await;

        // The export, from the command line, as an admin would run it.
        let out = std::env::temp_dir().join(format!("tc-export-{}-{backend}.json", std::process::id()));
        let status = Command::new(BIN)
            .args(["admin", "--db", &db, "patient-export", "--hospital-number", "IPP-CARLA", "--out"])
            .arg(&out)
            .status()
            .unwrap();
        assert!(status.success());
        let export: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
        let _ = std::fs::remove_file(&out);
        let record = &export["patients"][0];
        let pool = raw(&db).await;
        for table in patient_tables(&pool, backend == "postgres").await {
            let rows = record[&table].as_array().unwrap_or_else(|| panic!("{backend}: the export has no {table}"));
            let direct = match table.as_str() {
                "patients" => count(&pool, "SELECT COUNT(*) FROM patients WHERE id = $1", &carla).await,
                "monitoring_check_ins" => count(&pool, "SELECT COUNT(*) FROM monitoring_check_ins WHERE enrolment_id IN (SELECT id FROM monitoring_enrolments WHERE patient_id = $1)", &carla).await,
                "audit_events" => rows.len() as i64, // checked below
                "links" => count(&pool, "SELECT COUNT(*) FROM links WHERE patient_id = $1 OR visit_id IN (SELECT id FROM visits WHERE patient_id = $1)", &carla).await,
                t if ["visits", "follow_ups", "monitoring_enrolments", "group_enrolments", "group_attendance"].contains(&t) => {
                    count(&pool, &format!("SELECT COUNT(*) FROM {t} WHERE patient_id = $1"), &carla).await
                }
                t => count(&pool, &format!("SELECT COUNT(*) FROM {t} WHERE visit_id IN (SELECT id FROM visits WHERE patient_id = $1)"), &carla).await,
            };
            assert_eq!(rows.len() as i64, direct, "{backend}: {table}");
            assert!(direct > 0, "{backend}: the test gives Carla rows in {table}");
        }
        assert!(
            count(&pool, "SELECT COUNT(*) FROM audit_events WHERE visit_id = $1", &carla_visit).await
                <= record["audit_events"].as_array().unwrap().len() as i64
        );
        let text = record.to_string();
        assert!(
            text.contains("Carla Martin") && text.contains("IPP-CARLA") && text.contains("Carla Martin has a rash")
        );
        for other in [&denis, &denis_visit, &"Denis".to_string(), &"IPP-DENIS".to_string()] {
            assert!(!text.contains(other.as_str()), "{backend}: nothing of another patient ({other})");
        }
        assert!(!text.contains("token_hash") && !text.contains("sealed_token"), "no secrets");
        assert_eq!(
            count(&pool, "SELECT COUNT(*) FROM audit_events WHERE action = 'patient_exported' AND detail = $1", &carla)
                .await,
            1
        );

        // The erasure: refused without --yes, then done; nothing of Carla in any text column.
        let refused = Command::new(BIN)
            .args(["admin", "--db", &db, "patient-erase", "--hospital-number", "IPP-CARLA"])
            .output()
            .unwrap();
        assert!(!refused.status.success());
        let erased = Command::new(BIN)
            .args(["admin", "--db", &db, "patient-erase", "--hospital-number", "IPP-CARLA", "--yes"])
            .output()
            .unwrap();
        assert!(erased.status.success(), "{}", String::from_utf8_lossy(&erased.stderr));
        assert!(String::from_utf8_lossy(&erased.stderr).contains("no text column holds"));
        assert!(!String::from_utf8_lossy(&erased.stderr).contains("Carla"), "the CLI never prints the name");
        let store = teleconsult_signaling::store::Store::open(&db).await.unwrap();
        for needle in ["Carla", "Martin", "IPP-CARLA", "+33 6 11 22 33 44", "11 22 33"] {
            let left = store.text_columns_containing(needle).await.unwrap();
            assert!(left.is_empty(), "{backend}: {needle} left in {left:?}");
        }
        // Her visit stays, cancelled and pseudonymous; Denis is untouched.
        assert_eq!(
            count(&pool, "SELECT COUNT(*) FROM visits WHERE patient_id = $1 AND status = 'cancelled'", &carla).await,
            1
        );
        assert_eq!(
            count(&pool, "SELECT COUNT(*) FROM patients WHERE id = $1 AND display_name = 'Denis Moreau'", &denis).await,
            1
        );
        assert!(!store.text_columns_containing("IPP-DENIS").await.unwrap().is_empty());
        assert_eq!(
            count(&pool, "SELECT COUNT(*) FROM audit_events WHERE action = 'patient_erased' AND detail = $1", &carla)
                .await,
            1
        );
        pool.close().await;
        store.close().await;
    }
}
