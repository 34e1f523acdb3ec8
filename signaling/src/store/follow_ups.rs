//! Follow-ups (the next visits a clinician asked for) and clinicians'
//! weekly availability.

use serde::Serialize;
use sqlx::any::AnyRow;

use super::{
    AuditEvent, Specialty, Store, StoreError, StoreResult, Visit, WriteTx, int, opt_text, parsed, text, text_enum,
};
use crate::follow_up_placement::Availability;

text_enum!(
    /// Where a follow-up is.
    FollowUpStatus {
        /// A visit is booked for it.
        Placed = "placed",
        /// Waiting in the queue for a slot.
        Unplaced = "unplaced",
        /// No longer wanted.
        Cancelled = "cancelled",
    }
);

text_enum!(
    /// How soon a follow-up should happen.
    Priority {
        /// In its normal course.
        Routine = "routine",
        /// Sooner than usual.
        Soon = "soon",
        /// As soon as possible (a red flag raises follow-ups to this).
        Urgent = "urgent",
    }
);

impl Priority {
    /// Sort rank: urgent first.
    pub fn rank(self) -> u8 {
        match self {
            Priority::Urgent => 0,
            Priority::Soon => 1,
            Priority::Routine => 2,
        }
    }
}

/// A follow-up booked from a visit.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FollowUp {
    /// Id (`f-…`).
    pub id: String,
    /// The patient.
    pub patient_id: String,
    /// The visit it was booked from.
    pub from_visit_id: String,
    /// Who will see the patient.
    pub clinician_id: String,
    /// When it is due (Unix seconds).
    pub due_at: i64,
    /// Planned length.
    pub duration_minutes: i64,
    /// Why (free text for the care team; never logged).
    pub reason: String,
    /// How soon.
    pub priority: Priority,
    /// Placed, unplaced or cancelled.
    pub status: FollowUpStatus,
    /// The booked visit, when placed.
    pub visit_id: Option<String>,
}

fn follow_up_from(r: &AnyRow) -> StoreResult<FollowUp> {
    Ok(FollowUp {
        id: text(r, "id")?,
        patient_id: text(r, "patient_id")?,
        from_visit_id: text(r, "from_visit_id")?,
        clinician_id: text(r, "clinician_id")?,
        due_at: int(r, "due_at")?,
        duration_minutes: int(r, "duration_minutes")?,
        reason: text(r, "reason")?,
        priority: parsed(r, "priority")?,
        status: parsed(r, "status")?,
        visit_id: opt_text(r, "visit_id")?,
    })
}

const FOLLOW_UP_COLUMNS: &str = "f.id, f.patient_id, f.from_visit_id, f.clinician_id, f.due_at, f.duration_minutes, f.reason, f.priority, \
     f.status, f.visit_id";

/// Open follow-ups: not cancelled, and either waiting or placed on a visit
/// that has not happened yet. Ordered urgent first, then by due date.
const OPEN_QUEUE: &str = "FROM follow_ups f LEFT JOIN visits v ON v.id = f.visit_id \
     WHERE f.status <> 'cancelled' AND (f.visit_id IS NULL OR v.status IN ('scheduled', 'in_progress'))";
const QUEUE_ORDER: &str = "ORDER BY CASE f.priority WHEN 'urgent' THEN 0 WHEN 'soon' THEN 1 ELSE 2 END, f.due_at, f.id";

impl Store {
    /// A clinician's availability, if set.
    pub async fn availability_of(&self, clinician_id: &str) -> StoreResult<Option<Availability>> {
        let row = self
            .retrying_query(|| {
                sqlx::query("SELECT settings FROM availability WHERE clinician_id = $1")
                    .bind(clinician_id)
                    .fetch_optional(self.pool())
            })
            .await?;
        match row {
            Some(r) => {
                Ok(Some(serde_json::from_str(&text(&r, "settings")?).map_err(|_| StoreError::Corrupt("settings"))?))
            }
            None => Ok(None),
        }
    }

    /// Sets (replaces) a clinician's availability.
    pub async fn set_availability(&self, clinician_id: &str, a: &Availability) -> StoreResult<()> {
        let json = serde_json::to_string(a).map_err(|e| StoreError::Database(e.to_string()))?;
        let json = json.as_str();
        self.retrying_query(|| {
            sqlx::query(
                "INSERT INTO availability (clinician_id, settings) VALUES ($1, $2) \
                 ON CONFLICT (clinician_id) DO UPDATE SET settings = excluded.settings",
            )
            .bind(clinician_id)
            .bind(json)
            .execute(self.pool())
        })
        .await?;
        Ok(())
    }

    /// A clinician's open follow-ups.
    pub async fn follow_up_queue(&self, clinician_id: &str) -> StoreResult<Vec<FollowUp>> {
        let sql = format!("SELECT {FOLLOW_UP_COLUMNS} {OPEN_QUEUE} AND f.clinician_id = $1 {QUEUE_ORDER}");
        let sql = sql.as_str();
        let rows = self.retrying_query(|| sqlx::query(sql).bind(clinician_id).fetch_all(self.pool())).await?;
        rows.iter().map(follow_up_from).collect()
    }

    /// The open follow-ups of every clinician of a specialty (a service).
    pub async fn follow_up_queue_of_specialty(&self, specialty: Specialty) -> StoreResult<Vec<FollowUp>> {
        let sql = format!(
            "SELECT {FOLLOW_UP_COLUMNS} {OPEN_QUEUE} AND f.clinician_id IN \
             (SELECT id FROM clinicians WHERE specialty = $1) {QUEUE_ORDER}"
        );
        let sql = sql.as_str();
        let rows = self.retrying_query(|| sqlx::query(sql).bind(specialty.as_str()).fetch_all(self.pool())).await?;
        rows.iter().map(follow_up_from).collect()
    }

    /// A follow-up by id.
    pub async fn follow_up_by_id(&self, id: &str) -> StoreResult<Option<FollowUp>> {
        let sql = format!("SELECT {FOLLOW_UP_COLUMNS} FROM follow_ups f WHERE f.id = $1");
        let sql = sql.as_str();
        let row = self.retrying_query(|| sqlx::query(sql).bind(id).fetch_optional(self.pool())).await?;
        row.as_ref().map(follow_up_from).transpose()
    }

    /// Cancels a follow-up and, if it was placed, its visit (revoking the
    /// links), in one transaction. `Conflict` if it was cancelled already.
    pub async fn cancel_follow_up(&self, id: &str, audit: &AuditEvent, now: i64) -> StoreResult<()> {
        self.retrying(|| async move {
            let mut tx = self.begin_write().await?;
            let visit = tx.cancel_follow_up(id).await?;
            if let Some(visit) = visit {
                tx.cancel_scheduled_visit(&visit, now).await?;
            }
            tx.insert_audit(audit).await?;
            tx.commit().await
        })
        .await
    }

    /// After a no-show: the visit becomes `no_show`; the follow-up that
    /// booked it goes back to the queue as unplaced, or, for a visit booked
    /// otherwise, a new unplaced follow-up is queued. One transaction; a
    /// visit no longer scheduled is left alone. Returns whether it applied.
    pub async fn mark_no_show(&self, visit: &Visit, now: i64, audit: &AuditEvent) -> StoreResult<bool> {
        self.retrying(|| async move {
            let mut tx = self.begin_write().await?;
            let done = sqlx::query(
                "UPDATE visits SET status = 'no_show', ended_at = $1 WHERE id = $2 AND status = 'scheduled'",
            )
            .bind(now)
            .bind(&visit.id)
            .execute(tx.conn())
            .await?;
            if done.rows_affected() == 0 {
                return Ok(false);
            }
            let requeued =
                sqlx::query("UPDATE follow_ups SET status = 'unplaced', visit_id = NULL WHERE visit_id = $1")
                    .bind(&visit.id)
                    .execute(tx.conn())
                    .await?;
            if requeued.rows_affected() == 0 {
                tx.insert_follow_up(
                    &FollowUp {
                        id: crate::secret::random_id("f"),
                        patient_id: visit.patient_id.clone(),
                        from_visit_id: visit.id.clone(),
                        clinician_id: visit.clinician_id.clone(),
                        due_at: now,
                        duration_minutes: visit.duration_minutes,
                        reason: "missed visit".into(),
                        priority: Priority::Soon,
                        status: FollowUpStatus::Unplaced,
                        visit_id: None,
                    },
                    now,
                )
                .await?;
            }
            tx.insert_audit(audit).await?;
            tx.commit().await?;
            Ok(true)
        })
        .await
    }

    /// A patient's open follow-ups, urgent first.
    pub async fn open_follow_ups_of_patient(&self, patient_id: &str) -> StoreResult<Vec<FollowUp>> {
        let sql = format!("SELECT {FOLLOW_UP_COLUMNS} {OPEN_QUEUE} AND f.patient_id = $1 {QUEUE_ORDER}");
        let sql = sql.as_str();
        let rows = self.retrying_query(|| sqlx::query(sql).bind(patient_id).fetch_all(self.pool())).await?;
        rows.iter().map(follow_up_from).collect()
    }
}

impl WriteTx {
    /// Records a follow-up.
    pub async fn insert_follow_up(&mut self, f: &FollowUp, now: i64) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO follow_ups (id, patient_id, from_visit_id, clinician_id, due_at, duration_minutes, reason, \
             priority, status, visit_id, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(&f.id)
        .bind(&f.patient_id)
        .bind(&f.from_visit_id)
        .bind(&f.clinician_id)
        .bind(f.due_at)
        .bind(f.duration_minutes)
        .bind(&f.reason)
        .bind(f.priority.as_str())
        .bind(f.status.as_str())
        .bind(&f.visit_id)
        .bind(now)
        .execute(self.conn())
        .await?;
        Ok(())
    }

    /// A follow-up by id, read inside the transaction.
    pub async fn follow_up_by_id(&mut self, id: &str) -> StoreResult<Option<FollowUp>> {
        let sql = format!("SELECT {FOLLOW_UP_COLUMNS} FROM follow_ups f WHERE f.id = $1");
        let row = sqlx::query(&sql).bind(id).fetch_optional(self.conn()).await?;
        row.as_ref().map(follow_up_from).transpose()
    }

    /// Sets a follow-up's priority.
    pub async fn set_follow_up_priority(&mut self, id: &str, priority: Priority) -> StoreResult<()> {
        sqlx::query("UPDATE follow_ups SET priority = $1 WHERE id = $2")
            .bind(priority.as_str())
            .bind(id)
            .execute(self.conn())
            .await?;
        Ok(())
    }

    /// Points a follow-up at a clinician and (if placed) a visit.
    pub async fn place_follow_up(&mut self, id: &str, clinician_id: &str, visit_id: Option<&str>) -> StoreResult<()> {
        let status = if visit_id.is_some() { FollowUpStatus::Placed } else { FollowUpStatus::Unplaced };
        sqlx::query(
            "UPDATE follow_ups SET clinician_id = $1, status = $2, visit_id = $3 WHERE id = $4 AND status <> 'cancelled'",
        )
        .bind(clinician_id)
        .bind(status.as_str())
        .bind(visit_id)
        .bind(id)
        .execute(self.conn())
        .await?;
        Ok(())
    }

    /// Cancels a follow-up unless it is cancelled already; returns the visit
    /// it had placed (the caller cancels it). `Conflict` if it was cancelled
    /// already; `NotFound` if there is no such follow-up.
    pub async fn cancel_follow_up(&mut self, id: &str) -> StoreResult<Option<String>> {
        let row = sqlx::query(
            "UPDATE follow_ups SET status = 'cancelled' WHERE id = $1 AND status <> 'cancelled' RETURNING visit_id",
        )
        .bind(id)
        .fetch_optional(self.conn())
        .await?;
        match row {
            Some(r) => opt_text(&r, "visit_id"),
            None => match self.follow_up_by_id(id).await? {
                Some(_) => Err(StoreError::Conflict),
                None => Err(StoreError::NotFound),
            },
        }
    }
}
