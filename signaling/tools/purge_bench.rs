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
//! cargo run --release -p teleconsult-signaling --features bench --bin purge-bench -- --visits 100000
//! cargo run --release -p teleconsult-signaling --features bench --bin purge-bench -- --visits 100000 \
//!     --db postgres://postgres@127.0.0.1:5432/tc_bench
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use teleconsult_signaling::scheduler_worker::{PURGE_BATCH, PURGE_PAUSE};
use teleconsult_signaling::store::{AuditEvent, NewVisit, RetentionPolicy, StaffRole, Store, VisitKind, VisitStatus};

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

    // The expired visits: one patient each, 200 days ago, each with a
    // questionnaire and a link, written straight to the database in
    // multi-row statements (this is set-up, not what is measured).
    let filled = Instant::now();
    let start0 = NOW - 200 * DAY;
    sqlx::any::install_default_drivers();
    let url = if db.starts_with("postgres") { db.clone() } else { format!("sqlite://{db}") };
    let raw = sqlx::any::AnyPoolOptions::new().max_connections(1).connect(&url).await?;
    let answers = r#"{"fever":false,"cough":true,"breathlessness":false,"pain":3,"fatigue":false}"#;
    for chunk in (0..visits).collect::<Vec<_>>().chunks(500) {
        let (mut patients, mut rows, mut links) = (Vec::new(), Vec::new(), Vec::new());
        for &i in chunk {
            let start = start0 + (i / CLINICIANS) as i64 * 1200;
            patients.push(format!("('pt-b{i:08}', 'Patient {i}', 'IPP-{i:08}', '+33 6 {i:08}', {})", start0 - DAY));
            rows.push(format!(
                "('v-b{i:08}', 'pt-b{i:08}', '{}', {start}, 20, 'follow_up', 'completed', '{answers}', {}, {start}, {})",
                clinicians[i % CLINICIANS],
                start0 - DAY,
                start + 1200
            ));
            links.push(format!(
                "('l-b{i:08}', 'v-b{i:08}', 'patient', 'bench-hash-{i:08}', {}, {}, {})",
                start - 1800,
                start + 1200 + 7200,
                start0 - DAY
            ));
        }
        let mut tx = raw.begin().await?;
        let statements = [
            format!(
                "INSERT INTO patients (id, display_name, hospital_id, contact, created_at) VALUES {}",
                patients.join(", ")
            ),
            format!(
                "INSERT INTO visits (id, patient_id, clinician_id, scheduled_start, duration_minutes, kind, status, \
                 questionnaire, created_at, started_at, ended_at) VALUES {}",
                rows.join(", ")
            ),
            format!(
                "INSERT INTO links (id, visit_id, role, token_hash, valid_from, valid_until, created_at) VALUES {}",
                links.join(", ")
            ),
        ];
        for sql in &statements {
            sqlx::query(sql).execute(&mut *tx).await?;
        }
        tx.commit().await?;
    }
    // A database in service has its statistics (autovacuum's ANALYZE).
    if db.starts_with("postgres") {
        sqlx::query("ANALYZE").execute(&raw).await?;
    }
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
            let mut times: Vec<(Instant, Duration)> = Vec::new();
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
                    times.push((began, began.elapsed()));
                }
                n += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            times
        })
    };
    // Starts alone first, for comparison.
    let baseline_from = Instant::now();
    tokio::time::sleep(Duration::from_secs(10)).await;

    let policy = RetentionPolicy { patient_secs: 90 * DAY, audit_secs: 1095 * DAY };
    let purge = Instant::now();
    let mut total = teleconsult_signaling::store::PurgeCounts::default();
    let mut passes = 0;
    loop {
        let pass = store.purge_pass(policy, NOW, PURGE_BATCH, PURGE_PAUSE).await?;
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
    let times = starter.await?;
    let stats = |from: Instant, to: Instant| {
        let mut d: Vec<f64> =
            times.iter().filter(|(at, _)| *at >= from && *at < to).map(|(_, d)| d.as_secs_f64() * 1000.0).collect();
        d.sort_by(f64::total_cmp);
        let q = |p: f64| d.get(((d.len() as f64 - 1.0) * p).round() as usize).copied().unwrap_or(0.0);
        (d.len(), q(0.5), q(0.99), d.last().copied().unwrap_or(0.0))
    };
    let (n0, p50_0, p99_0, max0) = stats(baseline_from, purge);
    let (n1, p50_1, p99_1, max1) = stats(purge, purge + purge_time);
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
    println!("visit starts (book + start) alone: {n0}, p50 {p50_0:.1} ms, p99 {p99_0:.1} ms, max {max0:.1} ms");
    println!("visit starts during the purge: {n1}, p50 {p50_1:.1} ms, p99 {p99_1:.1} ms, max {max1:.1} ms");
    store.close().await;
    Ok(())
}
