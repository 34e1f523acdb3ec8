//! The patient data lifecycle: the retention purge (bounded batches), a
//! patient's export and erasure, and a search of every text column (the
//! proof that a name, contact or hospital number is gone).
//!
//! Purging keeps the rows that figures count (visits, with their status and
//! times; the patient row, with only its random id left as a pseudonym) and
//! removes what identifies or describes the person: name, contact, hospital
//! number, questionnaire and monitoring answers, follow-up reasons, links
//! and their sealed tokens.

use serde_json::{Map, Value, json};
use sqlx::any::AnyRow;
use sqlx::{Column, Row};

use super::{Backend, Store, StoreResult, WriteTx, int, text};

/// How long an expired link is kept: a patient who opens it a few days
/// late is told it expired (and to contact the care team), not that it is
/// unknown. It holds no personal data of its own (ids, the token's hash
/// and its sealed copy).
pub const EXPIRED_LINK_KEPT_SECS: i64 = 30 * 86_400;

/// How long each kind of data lives (see docs/privacy.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// A patient's identifying data and answers live this long (seconds)
    /// after their last visit ends or their last monitoring day.
    pub patient_secs: i64,
    /// Audit events live this long (seconds).
    pub audit_secs: i64,
}

/// What one purge pass removed, by kind.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PurgeCounts {
    /// Patients whose identifying data was removed.
    pub patients: u64,
    /// Their visits whose questionnaire answers were removed.
    pub questionnaires: u64,
    /// Monitoring check-ins deleted.
    pub check_ins: u64,
    /// Links deleted (expired, or of a purged patient).
    pub links: u64,
    /// Expired staff refresh tokens deleted.
    pub refresh_tokens: u64,
    /// Audit events past their retention deleted.
    pub audit_events: u64,
    /// Delivered outbox entries past the patient retention deleted.
    pub outbox: u64,
    /// Read notifications past the patient retention deleted.
    pub notifications: u64,
    /// The longest of the pass's write transactions, microseconds (how
    /// long it held SQLite's write lock or its rows' locks).
    pub longest_write_micros: u64,
}

impl PurgeCounts {
    /// Adds another pass's counts.
    pub fn add(&mut self, o: &PurgeCounts) {
        self.patients += o.patients;
        self.questionnaires += o.questionnaires;
        self.check_ins += o.check_ins;
        self.links += o.links;
        self.refresh_tokens += o.refresh_tokens;
        self.audit_events += o.audit_events;
        self.outbox += o.outbox;
        self.notifications += o.notifications;
        self.longest_write_micros = self.longest_write_micros.max(o.longest_write_micros);
    }

    /// Whether nothing was removed.
    pub fn is_empty(&self) -> bool {
        self.by_kind().iter().all(|(_, n)| *n == 0)
    }

    /// (kind, count) pairs, for the audit trail and metrics.
    pub fn by_kind(&self) -> [(&'static str, u64); 8] {
        [
            ("patients", self.patients),
            ("questionnaires", self.questionnaires),
            ("check_ins", self.check_ins),
            ("links", self.links),
            ("refresh_tokens", self.refresh_tokens),
            ("audit_events", self.audit_events),
            ("outbox", self.outbox),
            ("notifications", self.notifications),
        ]
    }
}

/// `$first, $first+1, …` for `n` bound values.
fn placeholders(first: usize, n: usize) -> String {
    (first..first + n).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ")
}

/// A patient is due for purging when nothing of theirs is live (no visit
/// to come, no follow-up waiting for a slot) and their last visit ended,
/// their last class attended, the last occurrence of any class they are
/// enrolled in, and their last monitoring day passed, before `$1`.
const DUE_PATIENTS: &str = "SELECT p.id FROM patients p WHERE p.purged_at IS NULL AND p.created_at < $1 \
     AND NOT EXISTS (SELECT 1 FROM visits v WHERE v.patient_id = p.id AND (v.status IN ('scheduled', 'in_progress') \
         OR COALESCE(v.ended_at, v.cancelled_at, v.scheduled_start + v.duration_minutes * 60) >= $1)) \
     AND NOT EXISTS (SELECT 1 FROM monitoring_enrolments e WHERE e.patient_id = p.id \
         AND COALESCE(e.revoked_at, e.ends_at) >= $1) \
     AND NOT EXISTS (SELECT 1 FROM follow_ups f WHERE f.patient_id = p.id AND f.status = 'unplaced') \
     AND NOT EXISTS (SELECT 1 FROM group_attendance a WHERE a.patient_id = p.id AND a.admitted_at >= $1) \
     AND NOT EXISTS (SELECT 1 FROM group_enrolments e JOIN group_occurrences o ON o.session_id = e.session_id \
         JOIN visits v ON v.id = o.visit_id WHERE e.patient_id = p.id AND e.withdrawn_at IS NULL \
         AND v.status IN ('scheduled', 'in_progress') AND v.scheduled_start + v.duration_minutes * 60 >= $1) \
     ORDER BY p.id LIMIT $2";

impl Store {
    /// One bounded pass of the retention purge at `now`: at most `batch`
    /// rows of each kind, each kind in its own short write transaction, so
    /// no lock is held long, with `pause` after each so that writers
    /// waiting for the lock (a visit start) get it first. Call again while
    /// it removes anything.
    pub async fn purge_pass(
        &self,
        policy: RetentionPolicy,
        now: i64,
        batch: i64,
        pause: std::time::Duration,
    ) -> StoreResult<PurgeCounts> {
        let mut counts = PurgeCounts::default();
        let patient_cutoff = now - policy.patient_secs;
        // Patients past their retention.
        let due: Vec<String> = {
            let rows = self
                .retrying_query(|| sqlx::query(DUE_PATIENTS).bind(patient_cutoff).bind(batch).fetch_all(self.pool()))
                .await?;
            rows.iter().map(|r| text(r, "id")).collect::<StoreResult<_>>()?
        };
        if !due.is_empty() {
            let due = &due;
            let c = self
                .retrying(|| async move {
                    let mut tx = self.begin_write().await?;
                    let began = std::time::Instant::now();
                    let mut c = tx.pseudonymise_patients(due, now).await?;
                    tx.commit().await?;
                    c.longest_write_micros = began.elapsed().as_micros() as u64;
                    Ok(c)
                })
                .await?;
            counts.add(&c);
            tokio::time::sleep(pause).await;
        }
        // Expired links and refresh tokens, old audit events, delivered
        // outbox entries and read notifications.
        let deletions: [(&str, i64); 5] = [
            (
                "DELETE FROM links WHERE id IN (SELECT id FROM links WHERE valid_until < $1 ORDER BY valid_until LIMIT $2)",
                now - EXPIRED_LINK_KEPT_SECS,
            ),
            (
                "DELETE FROM refresh_tokens WHERE id IN \
                 (SELECT id FROM refresh_tokens WHERE expires_at < $1 ORDER BY expires_at LIMIT $2)",
                now,
            ),
            (
                "DELETE FROM audit_events WHERE id IN (SELECT id FROM audit_events WHERE at < $1 ORDER BY at LIMIT $2)",
                now - policy.audit_secs,
            ),
            (
                "DELETE FROM outbox WHERE idempotency_key IN (SELECT idempotency_key FROM outbox \
                 WHERE delivered_at IS NOT NULL AND delivered_at < $1 LIMIT $2)",
                patient_cutoff,
            ),
            (
                "DELETE FROM notifications WHERE id IN (SELECT id FROM notifications \
                 WHERE read_at IS NOT NULL AND read_at < $1 LIMIT $2)",
                patient_cutoff,
            ),
        ];
        for (i, (sql, cutoff)) in deletions.iter().enumerate() {
            let began = std::time::Instant::now();
            let done = self
                .retrying_query(|| sqlx::query(sql).bind(*cutoff).bind(batch).execute(self.pool()))
                .await?
                .rows_affected();
            counts.longest_write_micros = counts.longest_write_micros.max(began.elapsed().as_micros() as u64);
            if done > 0 {
                tokio::time::sleep(pause).await;
            }
            match i {
                0 => counts.links += done,
                1 => counts.refresh_tokens += done,
                2 => counts.audit_events += done,
                3 => counts.outbox += done,
                _ => counts.notifications += done,
            }
        }
        Ok(counts)
    }

    /// Gives freed pages back to the file system (SQLite, whose file is in
    /// incremental auto-vacuum mode; PostgreSQL's autovacuum does this).
    pub async fn reclaim_space(&self, pages: i64) -> StoreResult<()> {
        if self.backend == Backend::Sqlite {
            let sql = format!("PRAGMA incremental_vacuum({})", pages.max(1));
            self.retrying_query(|| sqlx::query(&sql).execute(self.pool())).await?;
        }
        Ok(())
    }

    /// The ids of the patients with this hospital number (one, unless a
    /// database from before the one-patient rule holds several).
    pub async fn patients_with_hospital_id(&self, number: &str) -> StoreResult<Vec<String>> {
        let rows = self
            .retrying_query(|| {
                sqlx::query("SELECT id FROM patients WHERE hospital_id = $1 ORDER BY created_at, id")
                    .bind(number)
                    .fetch_all(self.pool())
            })
            .await?;
        rows.iter().map(|r| text(r, "id")).collect()
    }

    /// Everything held about a patient, table by table, as JSON: their
    /// row, visits, links, follow-ups, monitoring enrolments and check-ins,
    /// notifications and outbox entries about their visits, and the audit
    /// events of their visits, links and enrolments. Secrets that are no
    /// personal data (token hashes, sealed tokens) are left out.
    pub async fn patient_record(&self, patient_id: &str) -> StoreResult<Value> {
        let visits = "(SELECT id FROM visits WHERE patient_id = $1)";
        let enrolments = "(SELECT id FROM monitoring_enrolments WHERE patient_id = $1)";
        let queries: Vec<(&str, String)> = vec![
            ("patients", "SELECT * FROM patients WHERE id = $1".into()),
            ("visits", "SELECT * FROM visits WHERE patient_id = $1 ORDER BY scheduled_start, id".into()),
            (
                "links",
                format!("SELECT * FROM links WHERE visit_id IN {visits} OR patient_id = $1 ORDER BY created_at, id"),
            ),
            (
                "group_enrolments",
                "SELECT * FROM group_enrolments WHERE patient_id = $1 ORDER BY enrolled_at, session_id".into(),
            ),
            (
                "group_attendance",
                "SELECT * FROM group_attendance WHERE patient_id = $1 ORDER BY admitted_at, visit_id".into(),
            ),
            ("follow_ups", "SELECT * FROM follow_ups WHERE patient_id = $1 ORDER BY created_at, id".into()),
            (
                "monitoring_enrolments",
                "SELECT * FROM monitoring_enrolments WHERE patient_id = $1 ORDER BY created_at, id".into(),
            ),
            (
                "monitoring_check_ins",
                format!("SELECT * FROM monitoring_check_ins WHERE enrolment_id IN {enrolments} ORDER BY slot_start"),
            ),
            (
                "notifications",
                format!("SELECT * FROM notifications WHERE visit_id IN {visits} ORDER BY created_at, id"),
            ),
            ("outbox", format!("SELECT * FROM outbox WHERE visit_id IN {visits} ORDER BY created_at, idempotency_key")),
            (
                "audit_events",
                format!(
                    "SELECT * FROM audit_events WHERE visit_id IN {visits} \
                     OR actor IN (SELECT 'link:' || id FROM links WHERE visit_id IN {visits} OR patient_id = $1) \
                     OR actor IN (SELECT 'monitoring:' || id FROM monitoring_enrolments WHERE patient_id = $1) \
                     ORDER BY id"
                ),
            ),
        ];
        let mut out = Map::new();
        for (table, sql) in &queries {
            let sql = sql.as_str();
            let rows = self.retrying_query(|| sqlx::query(sql).bind(patient_id).fetch_all(self.pool())).await?;
            let rows: Vec<Value> = rows.iter().map(|r| row_json(r, &["token_hash", "sealed_token"])).collect();
            out.insert(table.to_string(), Value::Array(rows));
        }
        Ok(Value::Object(out))
    }

    /// Erases a patient now (an erasure request): live visits are
    /// cancelled, then everything identifying is removed as the purge does,
    /// in one transaction, audited as `patient_erased` by `actor` with the
    /// pseudonymous id only.
    pub async fn erase_patient(&self, patient_id: &str, actor: &str, now: i64) -> StoreResult<PurgeCounts> {
        self.retrying(|| async move {
            let mut tx = self.begin_write().await?;
            sqlx::query(
                "UPDATE visits SET status = 'cancelled', cancelled_at = $1 WHERE patient_id = $2 \
                 AND status IN ('scheduled', 'in_progress')",
            )
            .bind(now)
            .bind(patient_id)
            .execute(tx.conn())
            .await?;
            sqlx::query("UPDATE follow_ups SET status = 'cancelled' WHERE patient_id = $1 AND status <> 'cancelled'")
                .bind(patient_id)
                .execute(tx.conn())
                .await?;
            sqlx::query(
                "UPDATE monitoring_enrolments SET revoked_at = $1 WHERE patient_id = $2 AND revoked_at IS NULL",
            )
            .bind(now)
            .bind(patient_id)
            .execute(tx.conn())
            .await?;
            sqlx::query("UPDATE group_enrolments SET withdrawn_at = $1 WHERE patient_id = $2 AND withdrawn_at IS NULL")
                .bind(now)
                .bind(patient_id)
                .execute(tx.conn())
                .await?;
            let counts = tx.pseudonymise_patients(&[patient_id.to_string()], now).await?;
            tx.insert_audit(&super::AuditEvent {
                at: now,
                actor: actor.to_string(),
                action: "patient_erased".into(),
                visit_id: None,
                detail: Some(patient_id.to_string()),
            })
            .await?;
            tx.commit().await?;
            Ok(counts)
        })
        .await
    }

    /// Every (table, text column, rows) where `needle` occurs (without
    /// regard to case): the search behind "nothing of this patient is left".
    pub async fn text_columns_containing(&self, needle: &str) -> StoreResult<Vec<(String, String, i64)>> {
        let columns: Vec<(String, String)> = match self.backend {
            Backend::Sqlite => {
                let tables = self
                    .retrying_query(|| {
                        sqlx::query(
                            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name",
                        )
                        .fetch_all(self.pool())
                    })
                    .await?;
                let mut out = Vec::new();
                for t in &tables {
                    let table = text(t, "name")?;
                    let sql = format!("SELECT name, type FROM pragma_table_info('{table}')");
                    let cols = self.retrying_query(|| sqlx::query(&sql).fetch_all(self.pool())).await?;
                    for c in &cols {
                        if text(c, "type")?.to_uppercase().contains("TEXT") {
                            out.push((table.clone(), text(c, "name")?));
                        }
                    }
                }
                out
            }
            Backend::Postgres => {
                let rows = self
                    .retrying_query(|| {
                        sqlx::query(
                            "SELECT table_name::text AS t, column_name::text AS c FROM information_schema.columns \
                             WHERE table_schema = current_schema() AND data_type IN ('text', 'character varying') \
                             ORDER BY table_name, column_name",
                        )
                        .fetch_all(self.pool())
                    })
                    .await?;
                rows.iter().map(|r| Ok((text(r, "t")?, text(r, "c")?))).collect::<StoreResult<_>>()?
            }
        };
        let pattern = format!("%{}%", needle.to_lowercase());
        let mut hits = Vec::new();
        for (table, column) in columns {
            // Names come from the database's own catalogue, never from input.
            let sql = format!("SELECT COUNT(*) AS n FROM \"{table}\" WHERE LOWER(\"{column}\") LIKE $1");
            let row = self.retrying_query(|| sqlx::query(&sql).bind(&pattern).fetch_one(self.pool())).await?;
            let n = int(&row, "n")?;
            if n > 0 {
                hits.push((table, column, n));
            }
        }
        Ok(hits)
    }
}

impl WriteTx {
    /// Removes what identifies or describes these patients (see the module
    /// docs), keeping their rows under their random ids.
    async fn pseudonymise_patients(&mut self, ids: &[String], now: i64) -> StoreResult<PurgeCounts> {
        let mut counts = PurgeCounts::default();
        // Statements that need `now` bind it as $1 and the ids after it.
        let (after_now, alone) = (placeholders(2, ids.len()), placeholders(1, ids.len()));
        let steps: [(bool, String); 6] = [
            (
                true,
                format!(
                    "UPDATE patients SET display_name = '', hospital_id = NULL, contact = NULL, \
                     purged_at = COALESCE(purged_at, $1) WHERE id IN ({after_now})"
                ),
            ),
            (
                false,
                format!(
                    "UPDATE visits SET questionnaire = NULL WHERE patient_id IN ({alone}) AND questionnaire IS NOT NULL"
                ),
            ),
            (false, format!("UPDATE follow_ups SET reason = '' WHERE patient_id IN ({alone})")),
            (
                false,
                format!(
                    "DELETE FROM monitoring_check_ins WHERE enrolment_id IN \
                     (SELECT id FROM monitoring_enrolments WHERE patient_id IN ({alone}))"
                ),
            ),
            (
                false,
                format!(
                    "UPDATE monitoring_enrolments SET token_hash = 'purged:' || id, sealed_token = NULL \
                     WHERE patient_id IN ({alone})"
                ),
            ),
            (
                false,
                // Their visits' links, and their own class links (named after them).
                format!(
                    "DELETE FROM links WHERE visit_id IN (SELECT id FROM visits WHERE patient_id IN ({alone})) \
                     OR patient_id IN ({alone})"
                ),
            ),
        ];
        for (step, (with_now, sql)) in steps.iter().enumerate() {
            let mut q = sqlx::query(sql);
            if *with_now {
                q = q.bind(now);
            }
            for id in ids {
                q = q.bind(id);
            }
            let done = q.execute(self.conn()).await?.rows_affected();
            match step {
                0 => counts.patients += done,
                1 => counts.questionnaires += done,
                3 => counts.check_ins += done,
                5 => counts.links += done,
                _ => {}
            }
        }
        for id in ids {
            self.insert_audit(&super::AuditEvent {
                at: now,
                actor: "system".into(),
                action: "patient_purged".into(),
                visit_id: None,
                detail: Some(id.clone()),
            })
            .await?;
        }
        Ok(counts)
    }
}

/// A row as a JSON object, leaving out `skip` columns. Integers, text and
/// NULL are what the schema holds; anything else is shown as null.
fn row_json(row: &AnyRow, skip: &[&str]) -> Value {
    let mut out = Map::new();
    for column in row.columns() {
        let name = column.name();
        if skip.contains(&name) {
            continue;
        }
        let value = if let Ok(v) = row.try_get::<Option<i64>, _>(name) {
            json!(v)
        } else if let Ok(v) = row.try_get::<Option<String>, _>(name) {
            json!(v)
        } else if let Ok(v) = row.try_get::<Option<bool>, _>(name) {
            json!(v)
        } else if let Ok(v) = row.try_get::<Option<f64>, _>(name) {
            json!(v)
        } else {
            Value::Null
        };
        out.insert(name.to_string(), value);
    }
    Value::Object(out)
}
