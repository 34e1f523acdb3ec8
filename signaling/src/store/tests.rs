//! The store's tests, each run on both backends: SQLite in a temp file and
//! PostgreSQL in a fresh database (see [`super::test_databases`]).

use super::accounts::Rotation;
use super::*;

async fn stores() -> Vec<Store> {
    let sqlite = Store::open(&test_databases::sqlite_file()).await.expect("sqlite store");
    let url = test_databases::postgres().await.expect("a PostgreSQL server for the store tests");
    let postgres = Store::open(&url).await.expect("postgres store");
    vec![sqlite, postgres]
}

fn clinician(id: &str, email: &str) -> Clinician {
    Clinician {
        id: id.into(),
        email: email.into(),
        display_name: "Dr X".into(),
        specialty: Specialty::Oncologist,
        role: StaffRole::Clinician,
        password_hash: "h".into(),
        active: true,
        created_at: 1,
    }
}

fn audit(action: &str, visit: &str) -> AuditEvent {
    AuditEvent { at: 10, actor: "system".into(), action: action.into(), visit_id: Some(visit.into()), detail: None }
}

fn patient(id: &str) -> Patient {
    Patient {
        id: id.into(),
        display_name: "O'Brien; DROP TABLE visits;--".into(),
        hospital_id: None,
        contact: None,
        created_at: 1,
    }
}

fn new_visit(id: &str, start: i64, minutes: i64) -> NewVisit {
    NewVisit {
        id: id.into(),
        patient_id: "pt-1".into(),
        clinician_id: "c-1".into(),
        scheduled_start: start,
        duration_minutes: minutes,
        kind: VisitKind::FollowUp,
    }
}

fn link(id: &str, visit: &str, hash: &str) -> Link {
    Link {
        id: id.into(),
        visit_id: visit.into(),
        role: LinkRole::Patient,
        label: None,
        token_hash: hash.into(),
        valid_from: 0,
        valid_until: 9999,
        revoked_at: None,
        denied_at: None,
        created_at: 1,
        sealed_token: None,
        patient_id: None,
    }
}

/// A clinician `c-1` and a patient `pt-1`.
async fn seed(store: &Store) {
    store.insert_clinician(&clinician("c-1", "a@x")).await.unwrap();
    let mut tx = store.begin_write().await.unwrap();
    tx.insert_patient(&patient("pt-1")).await.unwrap();
    tx.commit().await.unwrap();
}

async fn book(store: &Store, id: &str, start: i64, minutes: i64) -> StoreResult<()> {
    let mut tx = store.begin_write().await?;
    tx.insert_visit(&new_visit(id, start, minutes), 5).await?;
    tx.insert_link(&link(&format!("l-{id}"), id, &format!("hash-{id}"))).await?;
    tx.commit().await
}

#[tokio::test]
async fn migrations_are_idempotent_and_versioned() {
    let path = test_databases::sqlite_file();
    let store = Store::open(&path).await.unwrap();
    assert_eq!(store.schema_version().await.unwrap(), LATEST_VERSION);
    store.close().await;
    let again = Store::open(&path).await.unwrap();
    assert_eq!(again.schema_version().await.unwrap(), LATEST_VERSION);
    for store in stores().await {
        assert_eq!(store.schema_version().await.unwrap(), LATEST_VERSION, "{:?}", store.backend());
    }
}

#[tokio::test]
async fn a_database_newer_than_the_binary_is_refused() {
    for url in [test_databases::sqlite_file(), test_databases::postgres().await.unwrap()] {
        let store = Store::open(&url).await.unwrap();
        sqlx::query("INSERT INTO schema_migrations (version, applied_at) VALUES ($1, 0)")
            .bind(LATEST_VERSION + 1)
            .execute(store.pool())
            .await
            .unwrap();
        store.close().await;
        match Store::open(&url).await {
            Err(StoreError::SchemaTooNew { found, supported }) => {
                assert_eq!((found, supported), (LATEST_VERSION + 1, LATEST_VERSION));
            }
            other => panic!("{}: expected SchemaTooNew, got {other:?}", redacted(&url)),
        }
    }
}

#[tokio::test]
async fn duplicate_email_is_a_conflict() {
    for store in stores().await {
        store.insert_clinician(&clinician("c-1", "a@x")).await.unwrap();
        assert!(matches!(store.insert_clinician(&clinician("c-2", "a@x")).await, Err(StoreError::Conflict)));
        let found = store.clinician_by_email("a@x").await.unwrap().unwrap();
        assert!(found.active, "booleans read back on {:?}", store.backend());
        store.set_clinician_active("c-1", false, 3).await.unwrap();
        assert!(!store.clinician_by_id("c-1").await.unwrap().unwrap().active);
    }
}

#[tokio::test]
async fn visit_lifecycle_and_cancel_revokes_links() {
    for store in stores().await {
        seed(&store).await;
        book(&store, "v-1", 1000, 20).await.unwrap();
        let v = store.visit_by_id("v-1").await.unwrap().unwrap();
        assert_eq!(v.status, VisitStatus::Scheduled);
        assert_eq!(store.patient_by_id("pt-1").await.unwrap().unwrap().display_name, patient("pt-1").display_name);
        let v = store.reschedule_visit("v-1", 2000, 30, (100, 200), &audit("rescheduled", "v-1")).await.unwrap();
        assert_eq!((v.scheduled_start, v.duration_minutes), (2000, 30));
        assert_eq!(store.link_by_token_hash("hash-v-1").await.unwrap().unwrap().valid_from, 100);
        let v = store
            .transition_visit("v-1", &[VisitStatus::Scheduled], VisitStatus::Cancelled, 50, &audit("cancelled", "v-1"))
            .await
            .unwrap();
        assert_eq!(v.cancelled_at, Some(50));
        assert_eq!(store.link_by_token_hash("hash-v-1").await.unwrap().unwrap().revoked_at, Some(50));
        // No way back from cancelled; an unknown visit is not found.
        let start = store
            .transition_visit("v-1", &[VisitStatus::Scheduled], VisitStatus::InProgress, 60, &audit("started", "v-1"))
            .await;
        assert!(matches!(start, Err(StoreError::Conflict)), "{start:?}");
        let missing = store
            .transition_visit("v-9", &[VisitStatus::Scheduled], VisitStatus::InProgress, 60, &audit("started", "v-9"))
            .await;
        assert!(matches!(missing, Err(StoreError::NotFound)), "{missing:?}");
        let trail: Vec<String> = store.audit_of_visit("v-1").await.unwrap().into_iter().map(|e| e.action).collect();
        assert_eq!(trail, ["rescheduled", "cancelled"]);
    }
}

#[tokio::test]
async fn the_database_refuses_overlapping_visits() {
    for store in stores().await {
        let backend = store.backend();
        seed(&store).await;
        book(&store, "v-1", 10_000, 20).await.unwrap();
        // Any overlap is refused, at either end or inside.
        for (id, start, minutes) in [("v-2", 10_000, 20), ("v-3", 9_500, 10), ("v-4", 11_100, 5), ("v-5", 9_000, 60)] {
            let r = book(&store, id, start, minutes).await;
            assert!(matches!(r, Err(StoreError::Overlap)), "{backend:?} {id}: {r:?}");
        }
        // Back to back is fine.
        book(&store, "v-6", 11_200, 20).await.unwrap();
        book(&store, "v-7", 9_400, 10).await.unwrap();
        // A reschedule onto another visit is refused too.
        let r = store.reschedule_visit("v-6", 10_100, 20, (0, 1), &audit("rescheduled", "v-6")).await;
        assert!(matches!(r, Err(StoreError::Overlap)), "{backend:?}: {r:?}");
        // A cancelled visit frees its slot.
        store
            .transition_visit("v-1", &[VisitStatus::Scheduled], VisitStatus::Cancelled, 50, &audit("cancelled", "v-1"))
            .await
            .unwrap();
        book(&store, "v-8", 10_000, 20).await.unwrap();
        // Ending a visit keeps working whatever is around it.
        store
            .transition_visit("v-8", &[VisitStatus::Scheduled], VisitStatus::InProgress, 60, &audit("started", "v-8"))
            .await
            .unwrap();
        store
            .transition_visit("v-8", &[VisitStatus::InProgress], VisitStatus::Completed, 70, &audit("ended", "v-8"))
            .await
            .unwrap();
        assert_eq!(store.busy_intervals("c-1", 0, 100_000).await.unwrap().len(), 2, "{backend:?}");
    }
}

#[tokio::test]
async fn concurrent_transitions_apply_once() {
    for store in stores().await {
        seed(&store).await;
        book(&store, "v-1", 1000, 20).await.unwrap();
        let mut tasks = Vec::new();
        for i in 0..16 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                store
                    .transition_visit(
                        "v-1",
                        &[VisitStatus::Scheduled],
                        VisitStatus::InProgress,
                        100 + i,
                        &audit("started", "v-1"),
                    )
                    .await
            }));
        }
        let mut won = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(_) => won += 1,
                Err(StoreError::Conflict) => {}
                Err(e) => panic!("{:?}: {e}", store.backend()),
            }
        }
        assert_eq!(won, 1, "{:?}", store.backend());
        assert_eq!(store.audit_of_visit("v-1").await.unwrap().len(), 1, "audited once");
    }
}

/// A clinician `c-1` with one refresh token, hash `h1`, family `f`.
async fn signed_in(store: &Store) {
    store.insert_clinician(&clinician("c-1", "a@x")).await.unwrap();
    let t = RefreshToken {
        id: "r1".into(),
        clinician_id: "c-1".into(),
        family_id: "f".into(),
        expires_at: 1000,
        used_at: None,
        revoked_at: None,
    };
    store.insert_refresh_token(&t, "h1", 1).await.unwrap();
}

#[tokio::test]
async fn refresh_rotation_detects_replay_and_revokes_the_family() {
    for store in stores().await {
        signed_in(&store).await;
        assert!(matches!(store.rotate_refresh_token("h1", "r2", "h2", 1000, 2).await.unwrap(), Rotation::Rotated(_)));
        // Replaying h1 fails and kills h2 too.
        assert_eq!(store.rotate_refresh_token("h1", "r3", "h3", 1000, 3).await.unwrap(), Rotation::Replayed);
        assert_eq!(store.rotate_refresh_token("h2", "r4", "h4", 1000, 4).await.unwrap(), Rotation::Replayed);
        assert_eq!(store.rotate_refresh_token("nope", "r5", "h5", 1000, 4).await.unwrap(), Rotation::Unknown);
    }
}

#[tokio::test]
async fn racing_refreshes_with_one_token_have_one_winner() {
    for store in stores().await {
        signed_in(&store).await;
        let mut tasks = Vec::new();
        for i in 0..8 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                store.rotate_refresh_token("h1", &format!("n{i}"), &format!("hn{i}"), 1000, 2).await
            }));
        }
        let mut rotated = 0;
        for t in tasks {
            if let Rotation::Rotated(_) = t.await.unwrap().unwrap() {
                rotated += 1;
            }
        }
        assert_eq!(rotated, 1, "{:?}", store.backend());
    }
}

#[tokio::test]
async fn an_idempotency_key_answers_once_and_refuses_another_body() {
    for store in stores().await {
        let key = IdempotencyKey { scope: "c-1 POST /x".into(), key: "k".into(), request_hash: "h".into() };
        let mut tx = store.begin_write().await.unwrap();
        assert_eq!(tx.claim_idempotency(&key, 100, 0).await.unwrap(), IdempotencyClaim::New);
        tx.record_answer(&key, 201, "sealed").await.unwrap();
        tx.commit().await.unwrap();
        let mut tx = store.begin_write().await.unwrap();
        assert_eq!(
            tx.claim_idempotency(&key, 101, 0).await.unwrap(),
            IdempotencyClaim::Answered { status: 201, sealed: "sealed".into() }
        );
        let other = IdempotencyKey { request_hash: "other".into(), ..key.clone() };
        assert_eq!(tx.claim_idempotency(&other, 101, 0).await.unwrap(), IdempotencyClaim::Mismatch);
        drop(tx);
        // An expired key is forgotten and may be used afresh.
        let mut tx = store.begin_write().await.unwrap();
        assert_eq!(tx.claim_idempotency(&other, 200_000, 150).await.unwrap(), IdempotencyClaim::New);
        drop(tx);
        // A claim rolled back leaves nothing behind.
        let fresh = IdempotencyKey { key: "k2".into(), ..key.clone() };
        let mut tx = store.begin_write().await.unwrap();
        assert_eq!(tx.claim_idempotency(&fresh, 100, 0).await.unwrap(), IdempotencyClaim::New);
        drop(tx);
        let mut tx = store.begin_write().await.unwrap();
        assert_eq!(tx.claim_idempotency(&fresh, 100, 0).await.unwrap(), IdempotencyClaim::New);
        drop(tx);
        assert_eq!(store.forget_idempotency_keys(1_000).await.unwrap(), 1);
    }
}

#[tokio::test]
async fn reminders_queue_once_and_upserts_replace() {
    for store in stores().await {
        seed(&store).await;
        book(&store, "v-1", 1000, 20).await.unwrap();
        let reminder = NewOutboxEntry {
            key: "reminder:v-1:24h:1000",
            visit_id: "v-1",
            kind: "24h",
            scheduled_start: Some(1000),
            payload: None,
        };
        assert!(store.enqueue(&reminder, 5).await.unwrap());
        assert!(!store.enqueue(&reminder, 6).await.unwrap());
        assert_eq!(store.due_outbox(10, 10).await.unwrap().len(), 1);
        store.outbox_attempted("reminder:v-1:24h:1000", 10, Ok(None)).await.unwrap();
        assert!(store.outbox_entries().await.unwrap()[0].delivered);
        store.set_consultation_total("2027-01-18", 10).await.unwrap();
        store.set_consultation_total("2027-01-18", 12).await.unwrap();
        assert_eq!(store.consultation_total("2027-01-18").await.unwrap(), Some(12));
        store.set_calendar_token("c-1", Some("t1"), 1).await.unwrap();
        store.set_calendar_token("c-1", Some("t2"), 2).await.unwrap();
        assert_eq!(store.calendar_owner("t1").await.unwrap(), None);
        assert_eq!(store.calendar_owner("t2").await.unwrap().as_deref(), Some("c-1"));
    }
}

#[test]
fn database_errors_are_sorted_by_kind() {
    assert!(matches!(classify_database_error("517", "database is locked", false), StoreError::Busy));
    assert!(matches!(classify_database_error("5", "database is locked", false), StoreError::Busy));
    assert!(matches!(classify_database_error("40001", "could not serialize", false), StoreError::Busy));
    assert!(matches!(classify_database_error("1811", "visit_overlap", false), StoreError::Overlap));
    assert!(matches!(classify_database_error("23P01", "conflicting key value", false), StoreError::Overlap));
    assert!(matches!(classify_database_error("2067", "UNIQUE constraint failed", true), StoreError::Conflict));
    assert!(matches!(classify_database_error("57P01", "terminating connection", false), StoreError::Unavailable(_)));
    assert!(matches!(classify_database_error("1", "syntax error", false), StoreError::Database(_)));
}

#[test]
fn locations_pick_the_backend_and_hide_passwords() {
    assert_eq!(backend_of("teleconsult.db"), Backend::Sqlite);
    assert_eq!(backend_of("sqlite:///var/lib/tc.db"), Backend::Sqlite);
    assert_eq!(backend_of("postgres://u:secret@db/tc"), Backend::Postgres);
    assert_eq!(redacted("postgres://u:secret@db/tc"), "postgres://u@db/tc");
    assert_eq!(sqlite_url("/tmp/a b?.db"), "sqlite:///tmp/a%20b%3F.db?mode=rwc");
}

#[tokio::test]
async fn outbox_claims_are_exclusive_and_changes_are_told_only_after_a_reminder() {
    for store in stores().await {
        seed(&store).await;
        book(&store, "v-1", 10_000, 20).await.unwrap();
        book(&store, "v-2", 20_000, 20).await.unwrap();
        for (key, visit) in [("reminder:v-1:24h:10000", "v-1"), ("reminder:v-2:24h:20000", "v-2")] {
            let e = NewOutboxEntry { key, visit_id: visit, kind: "24h", scheduled_start: None, payload: None };
            assert!(store.enqueue(&e, 5).await.unwrap());
        }
        // Two claims at once: each entry goes to exactly one.
        let (a, b) = tokio::join!(store.claim_outbox(10, 500, 10), store.claim_outbox(10, 500, 10));
        let (a, b) = (a.unwrap(), b.unwrap());
        assert_eq!(a.len() + b.len(), 2, "{:?}", store.backend());
        assert!(store.claim_outbox(100, 600, 10).await.unwrap().is_empty(), "leased until 500");
        assert_eq!(store.claim_outbox(500, 900, 10).await.unwrap().len(), 2, "the lease ended: retried");
        // v-1's reminder was delivered; v-2's failed.
        store.outbox_attempted("reminder:v-1:24h:10000", 20, Ok(None)).await.unwrap();
        store.outbox_attempted("reminder:v-2:24h:20000", 20, Err(("HTTP 503".into(), 80))).await.unwrap();
        // Moving v-1 tells the patient; moving v-2 (never told) does not.
        let audit =
            AuditEvent { at: 30, actor: "system".into(), action: "rescheduled".into(), visit_id: None, detail: None };
        store.reschedule_visit("v-1", 12_000, 20, (0, 99_999), &audit).await.unwrap();
        store.reschedule_visit("v-2", 22_000, 20, (0, 99_999), &audit).await.unwrap();
        // Cancelling v-1 tells the patient too.
        store.transition_visit("v-1", &[VisitStatus::Scheduled], VisitStatus::Cancelled, 40, &audit).await.unwrap();
        let mut keys: Vec<(String, String)> =
            store.outbox_entries().await.unwrap().into_iter().map(|e| (e.kind, e.key)).collect();
        keys.sort_by(|a, b| a.1.cmp(&b.1));
        assert_eq!(
            keys,
            vec![
                ("24h".to_string(), "reminder:v-1:24h:10000".to_string()),
                ("cancelled".into(), "reminder:v-1:cancelled".into()),
                ("moved".into(), "reminder:v-1:moved:12000:30".into()),
                ("24h".into(), "reminder:v-2:24h:20000".into()),
            ],
            "{:?}",
            store.backend()
        );
    }
}
