//! Patients, visits and their join links.

use serde::Serialize;
use sqlx::any::AnyRow;

use super::{AuditEvent, Store, StoreError, StoreResult, WriteTx, int, opt_int, opt_text, parsed, text, text_enum};

text_enum!(
    /// Kind of visit.
    VisitKind {
        /// A follow-up consultation.
        FollowUp = "follow_up",
        /// A first consultation.
        First = "first",
        /// A group session (e.g. adapted physical activity).
        Group = "group",
    }
);

text_enum!(
    /// Where a visit is in its life.
    VisitStatus {
        /// Booked, not started.
        Scheduled = "scheduled",
        /// Started by its clinician; the room exists.
        InProgress = "in_progress",
        /// Ended.
        Completed = "completed",
        /// Cancelled; its links are revoked.
        Cancelled = "cancelled",
        /// The patient did not come.
        NoShow = "no_show",
    }
);

impl VisitStatus {
    /// Whether the visit still holds its slot on the clinician's calendar.
    pub fn is_live(self) -> bool {
        matches!(self, VisitStatus::Scheduled | VisitStatus::InProgress)
    }
}

text_enum!(
    /// Who a link admits.
    LinkRole {
        /// The patient the visit is for.
        Patient = "patient",
        /// A family member or an interpreter.
        Guest = "guest",
    }
);

/// A patient: as little personal data as the visit needs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Patient {
    /// Id (`pt-…`).
    pub id: String,
    /// Name shown to the clinician.
    pub display_name: String,
    /// The hospital's own patient number, if given.
    pub hospital_id: Option<String>,
    /// Phone or email for reminders, if given.
    pub contact: Option<String>,
    /// Creation time.
    pub created_at: i64,
}

/// A visit.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Visit {
    /// Id (`v-…`); also the id of its media room.
    pub id: String,
    /// The patient.
    pub patient_id: String,
    /// The clinician.
    pub clinician_id: String,
    /// Scheduled start (Unix seconds).
    pub scheduled_start: i64,
    /// Planned length.
    pub duration_minutes: i64,
    /// Kind.
    pub kind: VisitKind,
    /// Status.
    pub status: VisitStatus,
    /// The patient's symptom questionnaire (JSON), if answered.
    pub questionnaire: Option<serde_json::Value>,
    /// Creation time.
    pub created_at: i64,
    /// When the clinician started it.
    pub started_at: Option<i64>,
    /// When it ended.
    pub ended_at: Option<i64>,
    /// When it was cancelled.
    pub cancelled_at: Option<i64>,
}

impl Visit {
    /// Scheduled end (Unix seconds).
    pub fn scheduled_end(&self) -> i64 {
        self.scheduled_start + self.duration_minutes * 60
    }

    /// A visit just booked, as the store will hold it.
    pub fn booked(new: &NewVisit, now: i64) -> Visit {
        Visit {
            id: new.id.clone(),
            patient_id: new.patient_id.clone(),
            clinician_id: new.clinician_id.clone(),
            scheduled_start: new.scheduled_start,
            duration_minutes: new.duration_minutes,
            kind: new.kind,
            status: VisitStatus::Scheduled,
            questionnaire: None,
            created_at: now,
            started_at: None,
            ended_at: None,
            cancelled_at: None,
        }
    }
}

/// A join link (the token itself is never stored, only its hash).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Link {
    /// Id (`l-…`).
    pub id: String,
    /// The visit it opens.
    pub visit_id: String,
    /// Patient or guest.
    pub role: LinkRole,
    /// Free label for guests ("interpreter").
    pub label: Option<String>,
    /// SHA-256 of the token, hex; never serialised.
    #[serde(skip)]
    pub token_hash: String,
    /// Valid from (Unix seconds).
    pub valid_from: i64,
    /// Valid until.
    pub valid_until: i64,
    /// When revoked, if it was.
    pub revoked_at: Option<i64>,
    /// When a clinician turned it away, if one did and has not let it back in.
    pub denied_at: Option<i64>,
    /// Creation time.
    pub created_at: i64,
    /// A patient link's token sealed (AES-256-GCM) under the server's key,
    /// so reminders can send the same link again; never serialised.
    #[serde(skip)]
    pub sealed_token: Option<String>,
    /// The enrolled patient a group session's link is for (`None` for a
    /// visit's own patient and guest links).
    pub patient_id: Option<String>,
}

/// What a new visit needs.
#[derive(Debug, Clone)]
pub struct NewVisit {
    /// Visit id.
    pub id: String,
    /// Patient id (existing, or created in the same transaction).
    pub patient_id: String,
    /// Clinician id.
    pub clinician_id: String,
    /// Start.
    pub scheduled_start: i64,
    /// Length.
    pub duration_minutes: i64,
    /// Kind.
    pub kind: VisitKind,
}

const VISIT_COLUMNS: &str = "id, patient_id, clinician_id, scheduled_start, duration_minutes, kind, status, \
     questionnaire, created_at, started_at, ended_at, cancelled_at";
/// [`VISIT_COLUMNS`] of a query that names the visits table `v`.
pub(super) const VISIT_COLUMNS_OF_V: &str = "v.id, v.patient_id, v.clinician_id, v.scheduled_start, \
     v.duration_minutes, v.kind, v.status, v.questionnaire, v.created_at, v.started_at, v.ended_at, v.cancelled_at";

pub(super) fn patient_from(row: &AnyRow) -> StoreResult<Patient> {
    Ok(Patient {
        id: text(row, "id")?,
        display_name: text(row, "display_name")?,
        hospital_id: opt_text(row, "hospital_id")?,
        contact: opt_text(row, "contact")?,
        created_at: int(row, "created_at")?,
    })
}

pub(super) fn visit_from(row: &AnyRow) -> StoreResult<Visit> {
    let questionnaire = match opt_text(row, "questionnaire")? {
        Some(q) => Some(serde_json::from_str(&q).map_err(|_| StoreError::Corrupt("questionnaire"))?),
        None => None,
    };
    Ok(Visit {
        id: text(row, "id")?,
        patient_id: text(row, "patient_id")?,
        clinician_id: text(row, "clinician_id")?,
        scheduled_start: int(row, "scheduled_start")?,
        duration_minutes: int(row, "duration_minutes")?,
        kind: parsed(row, "kind")?,
        status: parsed(row, "status")?,
        questionnaire,
        created_at: int(row, "created_at")?,
        started_at: opt_int(row, "started_at")?,
        ended_at: opt_int(row, "ended_at")?,
        cancelled_at: opt_int(row, "cancelled_at")?,
    })
}

fn link_from(row: &AnyRow) -> StoreResult<Link> {
    Ok(Link {
        id: text(row, "id")?,
        visit_id: text(row, "visit_id")?,
        role: parsed(row, "role")?,
        label: opt_text(row, "label")?,
        token_hash: text(row, "token_hash")?,
        valid_from: int(row, "valid_from")?,
        valid_until: int(row, "valid_until")?,
        revoked_at: opt_int(row, "revoked_at")?,
        denied_at: opt_int(row, "denied_at")?,
        created_at: int(row, "created_at")?,
        sealed_token: opt_text(row, "sealed_token")?,
        patient_id: opt_text(row, "patient_id")?,
    })
}

fn intervals_from(rows: &[AnyRow]) -> StoreResult<Vec<(i64, i64)>> {
    rows.iter()
        .map(|r| {
            let s = int(r, "scheduled_start")?;
            Ok((s, s + int(r, "duration_minutes")? * 60))
        })
        .collect()
}

const BUSY_SQL: &str = "SELECT scheduled_start, duration_minutes FROM visits WHERE clinician_id = $1 \
     AND status IN ('scheduled', 'in_progress') AND scheduled_start < $2 AND scheduled_start + duration_minutes * 60 > $3";

impl Store {
    /// A patient by id.
    pub async fn patient_by_id(&self, id: &str) -> StoreResult<Option<Patient>> {
        let row = self
            .retrying_query(|| sqlx::query("SELECT * FROM patients WHERE id = $1").bind(id).fetch_optional(self.pool()))
            .await?;
        row.as_ref().map(patient_from).transpose()
    }

    /// Whether `clinician_id` has (had) a visit with `patient_id`.
    pub async fn patient_seen_by(&self, patient_id: &str, clinician_id: &str) -> StoreResult<bool> {
        let row = self
            .retrying_query(|| {
                sqlx::query("SELECT COUNT(*) AS n FROM visits WHERE patient_id = $1 AND clinician_id = $2")
                    .bind(patient_id)
                    .bind(clinician_id)
                    .fetch_one(self.pool())
            })
            .await?;
        Ok(int(&row, "n")? > 0)
    }

    /// A visit by id.
    pub async fn visit_by_id(&self, id: &str) -> StoreResult<Option<Visit>> {
        let sql = format!("SELECT {VISIT_COLUMNS} FROM visits WHERE id = $1");
        let sql = sql.as_str();
        let row = self.retrying_query(|| sqlx::query(sql).bind(id).fetch_optional(self.pool())).await?;
        row.as_ref().map(visit_from).transpose()
    }

    /// A clinician's visits starting in `[from, to)`, by start time.
    pub async fn visits_of_clinician(&self, clinician_id: &str, from: i64, to: i64) -> StoreResult<Vec<Visit>> {
        let sql = format!(
            "SELECT {VISIT_COLUMNS} FROM visits WHERE clinician_id = $1 AND scheduled_start >= $2 \
             AND scheduled_start < $3 ORDER BY scheduled_start, id"
        );
        let sql = sql.as_str();
        let rows = self
            .retrying_query(|| sqlx::query(sql).bind(clinician_id).bind(from).bind(to).fetch_all(self.pool()))
            .await?;
        rows.iter().map(visit_from).collect()
    }

    /// Visits in `status` whose start lies in `[from, to)`.
    pub async fn visits_starting(&self, status: VisitStatus, from: i64, to: i64) -> StoreResult<Vec<Visit>> {
        let sql = format!(
            "SELECT {VISIT_COLUMNS} FROM visits WHERE status = $1 AND scheduled_start >= $2 \
             AND scheduled_start < $3 ORDER BY scheduled_start, id"
        );
        let sql = sql.as_str();
        let rows = self
            .retrying_query(|| sqlx::query(sql).bind(status.as_str()).bind(from).bind(to).fetch_all(self.pool()))
            .await?;
        rows.iter().map(visit_from).collect()
    }

    /// `[start, end)` of a clinician's live visits (scheduled or in
    /// progress) that overlap `[from, to)`.
    pub async fn busy_intervals(&self, clinician_id: &str, from: i64, to: i64) -> StoreResult<Vec<(i64, i64)>> {
        let rows = self
            .retrying_query(|| sqlx::query(BUSY_SQL).bind(clinician_id).bind(to).bind(from).fetch_all(self.pool()))
            .await?;
        intervals_from(&rows)
    }

    /// Stores the questionnaire answers (JSON) of a visit.
    pub async fn set_questionnaire(&self, visit_id: &str, answers: &serde_json::Value) -> StoreResult<()> {
        let answers = answers.to_string();
        let answers = answers.as_str();
        let done = self
            .retrying_query(|| {
                sqlx::query("UPDATE visits SET questionnaire = $1 WHERE id = $2")
                    .bind(answers)
                    .bind(visit_id)
                    .execute(self.pool())
            })
            .await?;
        if done.rows_affected() == 0 { Err(StoreError::NotFound) } else { Ok(()) }
    }

    /// Moves a visit from one of `from` statuses to `to`, stamping the
    /// matching time column, with an audit event, in one transaction. The
    /// status test and the change are one conditional `UPDATE`, so two
    /// racing transitions cannot both apply. Cancelling also revokes the
    /// visit's links. `NotFound` if there is no such visit; `Conflict` if it
    /// is not in one of `from`.
    pub async fn transition_visit(
        &self,
        id: &str,
        from: &[VisitStatus],
        to: VisitStatus,
        now: i64,
        audit: &AuditEvent,
    ) -> StoreResult<Visit> {
        let stamp = match to {
            VisitStatus::InProgress => "started_at",
            VisitStatus::Completed | VisitStatus::NoShow => "ended_at",
            VisitStatus::Cancelled => "cancelled_at",
            VisitStatus::Scheduled => "created_at",
        };
        // The stamp column and the status list come from fixed sets above,
        // never from input.
        let allowed: Vec<String> = from.iter().map(|s| format!("'{}'", s.as_str())).collect();
        let sql = format!(
            "UPDATE visits SET status = $1, {stamp} = COALESCE({stamp}, $2) WHERE id = $3 AND status IN ({}) \
             RETURNING {VISIT_COLUMNS}",
            allowed.join(", ")
        );
        let sql = sql.as_str();
        self.retrying(|| async move {
            let mut tx = self.begin_write().await?;
            let row = sqlx::query(sql).bind(to.as_str()).bind(now).bind(id).fetch_optional(tx.conn()).await?;
            let Some(row) = row else {
                let exists =
                    sqlx::query("SELECT id FROM visits WHERE id = $1").bind(id).fetch_optional(tx.conn()).await?;
                return Err(if exists.is_some() { StoreError::Conflict } else { StoreError::NotFound });
            };
            if to == VisitStatus::Cancelled {
                tx.revoke_links_of(id, now).await?;
                tx.tell_visit_cancelled(id, int(&row, "scheduled_start")?, now).await?;
            }
            tx.insert_audit(audit).await?;
            tx.commit().await?;
            visit_from(&row)
        })
        .await
    }

    /// Moves a scheduled visit and every unrevoked link's window with it,
    /// atomically; a patient already reminded of the old time is sent a
    /// `moved` message (queued in the same transaction). `Overlap` if the new time collides with another live
    /// visit of the clinician; `Conflict` if the visit is not scheduled.
    pub async fn reschedule_visit(
        &self,
        id: &str,
        scheduled_start: i64,
        duration_minutes: i64,
        link_window: (i64, i64),
        audit: &AuditEvent,
    ) -> StoreResult<Visit> {
        let sql = format!(
            "UPDATE visits SET scheduled_start = $1, duration_minutes = $2 WHERE id = $3 AND status = 'scheduled' \
             RETURNING {VISIT_COLUMNS}"
        );
        let sql = sql.as_str();
        self.retrying(|| async move {
            let mut tx = self.begin_write().await?;
            let moved = sqlx::query("SELECT scheduled_start FROM visits WHERE id = $1")
                .bind(id)
                .fetch_optional(tx.conn())
                .await?
                .map(|r| int(&r, "scheduled_start"))
                .transpose()?
                .is_some_and(|before| before != scheduled_start);
            let row = sqlx::query(sql)
                .bind(scheduled_start)
                .bind(duration_minutes)
                .bind(id)
                .fetch_optional(tx.conn())
                .await?
                .ok_or(StoreError::Conflict)?;
            sqlx::query(
                "UPDATE links SET valid_from = $1, valid_until = $2 WHERE visit_id = $3 AND revoked_at IS NULL",
            )
            .bind(link_window.0)
            .bind(link_window.1)
            .bind(id)
            .execute(tx.conn())
            .await?;
            if moved {
                tx.tell_visit_moved(id, scheduled_start, audit.at).await?;
            }
            tx.insert_audit(audit).await?;
            tx.commit().await?;
            visit_from(&row)
        })
        .await
    }

    /// Adds a link (e.g. a guest link), with an audit event.
    pub async fn insert_link(&self, link: &Link, audit: &AuditEvent) -> StoreResult<()> {
        self.retrying(|| async move {
            let mut tx = self.begin_write().await?;
            tx.insert_link(link).await?;
            tx.insert_audit(audit).await?;
            tx.commit().await
        })
        .await
    }

    /// A link by its token hash.
    pub async fn link_by_token_hash(&self, hash: &str) -> StoreResult<Option<Link>> {
        let row = self
            .retrying_query(|| {
                sqlx::query("SELECT * FROM links WHERE token_hash = $1").bind(hash).fetch_optional(self.pool())
            })
            .await?;
        row.as_ref().map(link_from).transpose()
    }

    /// A link by id.
    pub async fn link_by_id(&self, id: &str) -> StoreResult<Option<Link>> {
        let row = self
            .retrying_query(|| sqlx::query("SELECT * FROM links WHERE id = $1").bind(id).fetch_optional(self.pool()))
            .await?;
        row.as_ref().map(link_from).transpose()
    }

    /// Marks a link denied (`Some(now)`) or lets it back in (`None`).
    pub async fn set_link_denied(&self, id: &str, denied_at: Option<i64>) -> StoreResult<()> {
        let done = self
            .retrying_query(|| {
                sqlx::query("UPDATE links SET denied_at = $1 WHERE id = $2")
                    .bind(denied_at)
                    .bind(id)
                    .execute(self.pool())
            })
            .await?;
        if done.rows_affected() == 0 { Err(StoreError::NotFound) } else { Ok(()) }
    }

    /// Revokes one link (a guest link no longer wanted), with an audit event.
    /// `Conflict` if it was revoked already.
    pub async fn revoke_link(&self, id: &str, now: i64, audit: &AuditEvent) -> StoreResult<()> {
        self.retrying(|| async move {
            let mut tx = self.begin_write().await?;
            let done = sqlx::query("UPDATE links SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
                .bind(now)
                .bind(id)
                .execute(tx.conn())
                .await?;
            if done.rows_affected() == 0 {
                return Err(StoreError::Conflict);
            }
            tx.insert_audit(audit).await?;
            tx.commit().await
        })
        .await
    }

    /// Of these links, those revoked or denied.
    pub async fn withdrawn_links(&self, ids: &[&str]) -> StoreResult<Vec<String>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let placeholders: Vec<String> = (1..=ids.len()).map(|i| format!("${i}")).collect();
        let sql = format!(
            "SELECT id FROM links WHERE (revoked_at IS NOT NULL OR denied_at IS NOT NULL) AND id IN ({})",
            placeholders.join(", ")
        );
        let sql = sql.as_str();
        let rows = self
            .retrying_query(|| {
                let mut q = sqlx::query(sql);
                for id in ids {
                    q = q.bind(*id);
                }
                q.fetch_all(self.pool())
            })
            .await?;
        rows.iter().map(|r| text(r, "id")).collect()
    }

    /// The links of a visit.
    pub async fn links_of_visit(&self, visit_id: &str) -> StoreResult<Vec<Link>> {
        let rows = self
            .retrying_query(|| {
                sqlx::query("SELECT * FROM links WHERE visit_id = $1 ORDER BY created_at, id")
                    .bind(visit_id)
                    .fetch_all(self.pool())
            })
            .await?;
        rows.iter().map(link_from).collect()
    }

    /// Scheduled visits starting before `until` (and not yet over at `now`)
    /// whose room is not provisioned.
    pub async fn visits_to_provision(&self, now: i64, until: i64) -> StoreResult<Vec<String>> {
        let rows = self
            .retrying_query(|| {
                sqlx::query(
                    "SELECT id FROM visits WHERE status = 'scheduled' AND provisioned_at IS NULL \
                     AND scheduled_start < $1 AND scheduled_start + duration_minutes * 60 > $2",
                )
                .bind(until)
                .bind(now)
                .fetch_all(self.pool())
            })
            .await?;
        rows.iter().map(|r| text(r, "id")).collect()
    }

    /// Marks a visit's room provisioned, with an audit event.
    pub async fn mark_provisioned(&self, visit_id: &str, now: i64, audit: &AuditEvent) -> StoreResult<()> {
        self.retrying(|| async move {
            let mut tx = self.begin_write().await?;
            let done = sqlx::query("UPDATE visits SET provisioned_at = $1 WHERE id = $2 AND provisioned_at IS NULL")
                .bind(now)
                .bind(visit_id)
                .execute(tx.conn())
                .await?;
            if done.rows_affected() > 0 {
                tx.insert_audit(audit).await?;
            }
            tx.commit().await
        })
        .await
    }

    /// Whether the patient of a visit ever joined it (from the audit trail).
    pub async fn patient_joined(&self, visit_id: &str) -> StoreResult<bool> {
        let rows = self
            .retrying_query(|| {
                sqlx::query("SELECT detail FROM audit_events WHERE visit_id = $1 AND action = 'joined'")
                    .bind(visit_id)
                    .fetch_all(self.pool())
            })
            .await?;
        for r in &rows {
            if opt_text(r, "detail")?.is_some_and(|d| d.ends_with(" patient")) {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

impl WriteTx {
    /// Inserts a patient.
    pub async fn insert_patient(&mut self, p: &Patient) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO patients (id, display_name, hospital_id, contact, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&p.id)
        .bind(&p.display_name)
        .bind(&p.hospital_id)
        .bind(&p.contact)
        .bind(p.created_at)
        .execute(self.conn())
        .await?;
        Ok(())
    }

    /// Inserts a scheduled visit. `Overlap` if the clinician already has a
    /// live visit at that time (the database's rule).
    pub async fn insert_visit(&mut self, visit: &NewVisit, now: i64) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO visits (id, patient_id, clinician_id, scheduled_start, duration_minutes, kind, status, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, 'scheduled', $7)",
        )
        .bind(&visit.id)
        .bind(&visit.patient_id)
        .bind(&visit.clinician_id)
        .bind(visit.scheduled_start)
        .bind(visit.duration_minutes)
        .bind(visit.kind.as_str())
        .bind(now)
        .execute(self.conn())
        .await?;
        Ok(())
    }

    /// Inserts a link.
    pub async fn insert_link(&mut self, link: &Link) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO links (id, visit_id, role, label, token_hash, valid_from, valid_until, created_at, sealed_token, \
             patient_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(&link.id)
        .bind(&link.visit_id)
        .bind(link.role.as_str())
        .bind(&link.label)
        .bind(&link.token_hash)
        .bind(link.valid_from)
        .bind(link.valid_until)
        .bind(link.created_at)
        .bind(&link.sealed_token)
        .bind(&link.patient_id)
        .execute(self.conn())
        .await?;
        Ok(())
    }

    /// The patient with this hospital number, read inside the transaction
    /// (the oldest, should a database from before the one-patient rule hold two).
    pub async fn patient_by_hospital_id(&mut self, number: &str) -> StoreResult<Option<Patient>> {
        let row = sqlx::query("SELECT * FROM patients WHERE hospital_id = $1 ORDER BY created_at, id LIMIT 1")
            .bind(number)
            .fetch_optional(self.conn())
            .await?;
        row.as_ref().map(patient_from).transpose()
    }

    /// A patient by id, read inside the transaction.
    pub async fn patient_by_id(&mut self, id: &str) -> StoreResult<Option<Patient>> {
        let row = sqlx::query("SELECT * FROM patients WHERE id = $1").bind(id).fetch_optional(self.conn()).await?;
        row.as_ref().map(patient_from).transpose()
    }

    /// A visit by id, read inside the transaction.
    pub async fn visit_by_id(&mut self, id: &str) -> StoreResult<Option<Visit>> {
        let sql = format!("SELECT {VISIT_COLUMNS} FROM visits WHERE id = $1");
        let row = sqlx::query(&sql).bind(id).fetch_optional(self.conn()).await?;
        row.as_ref().map(visit_from).transpose()
    }

    /// [`Store::busy_intervals`], inside the transaction (and so under its locks).
    pub async fn busy_intervals(&mut self, clinician_id: &str, from: i64, to: i64) -> StoreResult<Vec<(i64, i64)>> {
        let rows = sqlx::query(BUSY_SQL).bind(clinician_id).bind(to).bind(from).fetch_all(self.conn()).await?;
        intervals_from(&rows)
    }

    /// Cancels a scheduled visit (if it still is) and revokes its links; a
    /// patient already reminded of it is sent a `cancelled` message.
    pub async fn cancel_scheduled_visit(&mut self, visit_id: &str, now: i64) -> StoreResult<()> {
        let cancelled = sqlx::query(
            "UPDATE visits SET status = 'cancelled', cancelled_at = $1 WHERE id = $2 AND status = 'scheduled' \
             RETURNING scheduled_start",
        )
        .bind(now)
        .bind(visit_id)
        .fetch_optional(self.conn())
        .await?;
        if let Some(row) = cancelled {
            self.tell_visit_cancelled(visit_id, int(&row, "scheduled_start")?, now).await?;
        }
        self.revoke_links_of(visit_id, now).await
    }

    /// Revokes every live link of a visit.
    pub async fn revoke_links_of(&mut self, visit_id: &str, now: i64) -> StoreResult<()> {
        sqlx::query("UPDATE links SET revoked_at = $1 WHERE visit_id = $2 AND revoked_at IS NULL")
            .bind(now)
            .bind(visit_id)
            .execute(self.conn())
            .await?;
        Ok(())
    }
}
