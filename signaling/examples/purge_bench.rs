//! The retention purge of 100 000 expired visits, beside visit starts.
//!
//! Fills a database with `--visits` patients, each with one visit that
//! ended 200 days ago (a questionnaire and a link each), then runs the
//! worker's purge passes until nothing is left, while another task books
//! and starts a visit every 20 ms. Prints the purge's time, its longest
//! write transaction, and the slowest visit start meanwhile. Bounded: it
//! stops when the purge is done.
//!
//! ```text
//! cargo run --release -p teleconsult-signaling --example purge_bench -- --visits 100000
//! cargo run --release -p teleconsult-signaling --example purge_bench -- --visits 100000 \
//!     --db postgres://postgres@127.0.0.1:5432/tc_bench
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use teleconsult_signaling::store::{
    AuditEvent, NewVisit, Patient, RetentionPolicy, StaffRole, Store, VisitKind, VisitStatus,
};

const NOW: i64 = 1_800_230_400;
const DAY: i64 = 86_400;
const CLINICIANS: usize = 50;

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let visits: usize = arg("--visits").map(|v| v.parse()).transpose()?.unwrap_or(100_000);
    let db = arg("--db").unwrap_or_else(|| {
        std::env::temp_dir().join(format!("tc-purge-bench-{}.db", std::process::id())).display().to_string()
    });
    let store = Store::open(&db).await?;
    // Fifty clinicians, so that 100 000 twenty-minute visits fit in a month.
    let mut clinicians = Vec::new();
    for c in 0..CLINICIANS {
        let account = teleconsult_signaling::accounts::create_clinician(
            &store,
            &format!("bench-{}-{c}@h.fr", std::process::id()),
            "Dr Bench",
            teleconsult_signaling::store::Specialty::Oncologist,
            StaffRole::Clinician,
            "a long enough password",
            NOW,
        )
        .await?;
        clinicians.push(account.id);
    }
    let clinician = clinicians[0].clone();

    // The expired visits: one patient each, 200 days ago, one after another.
    let filled = Instant::now();
    let start0 = NOW - 200 * DAY;
    for chunk in (0..visits).collect::<Vec<_>>().chunks(2000) {
        let mut tx = store.begin_write().await?;
        for &i in chunk {
            let patient = Patient {
                id: format!("pt-b{i:08}"),
                display_name: format!("Patient {i}"),
                hospital_id: Some(format!("IPP-{i:08}")),
                contact: Some(format!("+33 6 {i:08}")),
                created_at: start0 - DAY,
            };
            let visit = NewVisit {
                id: format!("v-b{i:08}"),
                patient_id: patient.id.clone(),
                clinician_id: clinicians[i % CLINICIANS].clone(),
                scheduled_start: start0 + (i / CLINICIANS) as i64 * 1200,
                duration_minutes: 20,
                kind: VisitKind::FollowUp,
            };
            tx.insert_patient(&patient).await?;
            tx.insert_visit(&visit, start0 - DAY).await?;
            let (link, _) = teleconsult_signaling::visits::make_link(
                &visit.id,
                (visit.scheduled_start, visit.scheduled_start + 1200),
                (1800, 7200),
                teleconsult_signaling::store::LinkRole::Patient,
                None,
                start0 - DAY,
            );
            tx.insert_link(&link).await?;
        }
        tx.commit().await?;
    }
    // Every visit happened: completed, with answers (straight in the
    // database: this is set-up, not what is measured).
    sqlx::any::install_default_drivers();
    let url = if db.starts_with("postgres") { db.clone() } else { format!("sqlite://{db}") };
    let raw = sqlx::any::AnyPoolOptions::new().max_connections(1).connect(&url).await?;
    let answers = r#"{"fever":false,"cough":true,"breathlessness":false,"pain":3,"fatigue":false}"#;
    sqlx::query(
        "UPDATE visits SET status = 'completed', started_at = scheduled_start, \
         ended_at = scheduled_start + 1200, questionnaire = $1 WHERE id LIKE 'v-b%'",
    )
    .bind(answers)
    .execute(&raw)
    .await?;
    raw.close().await;
    println!(
        "filled {visits} expired visits in {:.1} s ({})",
        filled.elapsed().as_secs_f64(),
        store.backend().as_str()
    );

    // Visit starts meanwhile: book one and start it, every 20 ms.
    let stop = Arc::new(AtomicBool::new(false));
    let starter = {
        let (store, stop, clinician) = (store.clone(), stop.clone(), clinician.clone());
        tokio::spawn(async move {
            let mut slowest = Duration::ZERO;
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let id = format!("v-live{n:06}");
                let began = Instant::now();
                let visit = NewVisit {
                    id: id.clone(),
                    patient_id: "pt-b00000000".into(),
                    clinician_id: clinician.clone(),
                    scheduled_start: NOW + DAY + n as i64 * 1200,
                    duration_minutes: 20,
                    kind: VisitKind::FollowUp,
                };
                let booked = store
                    .retrying(|| async {
                        let mut tx = store.begin_write().await?;
                        tx.insert_visit(&visit, NOW).await?;
                        tx.commit().await
                    })
                    .await;
                let audit = AuditEvent {
                    at: NOW,
                    actor: "bench".into(),
                    action: "started".into(),
                    visit_id: Some(id.clone()),
                    detail: None,
                };
                let started =
                    store.transition_visit(&id, &[VisitStatus::Scheduled], VisitStatus::InProgress, NOW, &audit).await;
                if booked.is_ok() && started.is_ok() {
                    slowest = slowest.max(began.elapsed());
                    n += 1;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (n, slowest)
        })
    };

    let policy = RetentionPolicy { patient_secs: 90 * DAY, audit_secs: 1095 * DAY };
    let purge = Instant::now();
    let mut total = teleconsult_signaling::store::PurgeCounts::default();
    let mut passes = 0;
    loop {
        let pass = store.purge_pass(policy, NOW, teleconsult_signaling::scheduler_worker::PURGE_BATCH).await?;
        if pass.is_empty() {
            break;
        }
        total.add(&pass);
        passes += 1;
    }
    let purge_time = purge.elapsed();
    let vacuum = Instant::now();
    store.reclaim_space(1_000_000).await?;
    let vacuum_time = vacuum.elapsed();
    stop.store(true, Ordering::Relaxed);
    let (starts, slowest_start) = starter.await?;
    println!(
        "purged {} patients, {} questionnaires, {} links in {passes} passes: {:.1} s; longest write transaction {:.1} ms; \
         space reclaimed in {:.1} s",
        total.patients,
        total.questionnaires,
        total.links,
        purge_time.as_secs_f64(),
        total.longest_write_micros as f64 / 1000.0,
        vacuum_time.as_secs_f64()
    );
    println!("{starts} visit starts meanwhile; the slowest took {:.1} ms", slowest_start.as_secs_f64() * 1000.0);
    store.close().await;
    Ok(())
}
