//! Symptom-monitoring enrolments and their check-ins.

use serde::Serialize;

use super::{Store, StoreError, StoreResult, WriteTx, int, opt_int, opt_text, text};

/// A patient enrolled in twice-daily symptom monitoring.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Enrolment {
    /// Id (`m-…`).
    pub id: String,
    /// The patient.
    pub patient_id: String,
    /// The visit it was opened from.
    pub visit_id: String,
    /// The clinician who follows it.
    pub clinician_id: String,
    /// IANA zone of its mornings and evenings.
    pub time_zone: String,
    /// `fr` or `en`.
    pub language: String,
    /// When it began (Unix seconds).
    pub starts_at: i64,
    /// When it ends (its link with it).
    pub ends_at: i64,
    /// Missed check-ins in a row before the clinician is told.
    pub missed_after: i64,
    /// SHA-256 of the link token; never serialised.
    #[serde(skip)]
    pub token_hash: String,
    /// The token sealed for the gateway; never serialised.
    #[serde(skip)]
    pub sealed_token: Option<String>,
    /// When revoked.
    pub revoked_at: Option<i64>,
    /// The last missed slot the clinician was told of.
    pub missed_flagged_through: Option<i64>,
    /// Creation time.
    pub created_at: i64,
}

/// One answered check-in.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckIn {
    /// The enrolment.
    pub enrolment_id: String,
    /// Start of its half-day slot (Unix seconds).
    pub slot_start: i64,
    /// When answered.
    pub answered_at: i64,
    /// The answers (the questionnaire's JSON).
    pub answers: serde_json::Value,
    /// Red flags found (`fever,pain`), or empty.
    pub red_flags: String,
}

fn enrolment_from(r: &sqlx::any::AnyRow) -> StoreResult<Enrolment> {
    Ok(Enrolment {
        id: text(r, "id")?,
        patient_id: text(r, "patient_id")?,
        visit_id: text(r, "visit_id")?,
        clinician_id: text(r, "clinician_id")?,
        time_zone: text(r, "time_zone")?,
        language: text(r, "language")?,
        starts_at: int(r, "starts_at")?,
        ends_at: int(r, "ends_at")?,
        missed_after: int(r, "missed_after")?,
        token_hash: text(r, "token_hash")?,
        sealed_token: opt_text(r, "sealed_token")?,
        revoked_at: opt_int(r, "revoked_at")?,
        missed_flagged_through: opt_int(r, "missed_flagged_through")?,
        created_at: int(r, "created_at")?,
    })
}

fn check_in_from(r: &sqlx::any::AnyRow) -> StoreResult<CheckIn> {
    Ok(CheckIn {
        enrolment_id: text(r, "enrolment_id")?,
        slot_start: int(r, "slot_start")?,
        answered_at: int(r, "answered_at")?,
        answers: serde_json::from_str(&text(r, "answers")?).map_err(|_| StoreError::Corrupt("answers"))?,
        red_flags: text(r, "red_flags")?,
    })
}

impl Store {
    /// An enrolment by id.
    pub async fn enrolment_by_id(&self, id: &str) -> StoreResult<Option<Enrolment>> {
        let row = self
            .retrying_query(|| {
                sqlx::query("SELECT * FROM monitoring_enrolments WHERE id = $1").bind(id).fetch_optional(self.pool())
            })
            .await?;
        row.as_ref().map(enrolment_from).transpose()
    }

    /// An enrolment by its link's token hash.
    pub async fn enrolment_by_token_hash(&self, hash: &str) -> StoreResult<Option<Enrolment>> {
        let row = self
            .retrying_query(|| {
                sqlx::query("SELECT * FROM monitoring_enrolments WHERE token_hash = $1")
                    .bind(hash)
                    .fetch_optional(self.pool())
            })
            .await?;
        row.as_ref().map(enrolment_from).transpose()
    }

    /// A patient's enrolments, newest first.
    pub async fn enrolments_of_patient(&self, patient_id: &str) -> StoreResult<Vec<Enrolment>> {
        let rows = self
            .retrying_query(|| {
                sqlx::query("SELECT * FROM monitoring_enrolments WHERE patient_id = $1 ORDER BY created_at DESC, id")
                    .bind(patient_id)
                    .fetch_all(self.pool())
            })
            .await?;
        rows.iter().map(enrolment_from).collect()
    }

    /// Enrolments not revoked whose time overlaps `[from, to)`.
    pub async fn live_enrolments(&self, from: i64, to: i64) -> StoreResult<Vec<Enrolment>> {
        let rows = self
            .retrying_query(|| {
                sqlx::query(
                    "SELECT * FROM monitoring_enrolments WHERE revoked_at IS NULL AND starts_at < $1 AND ends_at > $2 \
                     ORDER BY id",
                )
                .bind(to)
                .bind(from)
                .fetch_all(self.pool())
            })
            .await?;
        rows.iter().map(enrolment_from).collect()
    }

    /// An enrolment's check-ins, oldest first.
    pub async fn check_ins_of(&self, enrolment_id: &str) -> StoreResult<Vec<CheckIn>> {
        let rows = self
            .retrying_query(|| {
                sqlx::query("SELECT * FROM monitoring_check_ins WHERE enrolment_id = $1 ORDER BY slot_start")
                    .bind(enrolment_id)
                    .fetch_all(self.pool())
            })
            .await?;
        rows.iter().map(check_in_from).collect()
    }

    /// Records a check-in; `Conflict` if its slot was answered already.
    pub async fn insert_check_in(&self, c: &CheckIn) -> StoreResult<()> {
        let answers = c.answers.to_string();
        let answers = answers.as_str();
        self.retrying_query(|| {
            sqlx::query(
                "INSERT INTO monitoring_check_ins (enrolment_id, slot_start, answered_at, answers, red_flags) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(&c.enrolment_id)
            .bind(c.slot_start)
            .bind(c.answered_at)
            .bind(answers)
            .bind(&c.red_flags)
            .execute(self.pool())
        })
        .await?;
        Ok(())
    }

    /// Revokes an enrolment (once); whether it was live.
    pub async fn revoke_enrolment(&self, id: &str, now: i64) -> StoreResult<bool> {
        let done = self
            .retrying_query(|| {
                sqlx::query("UPDATE monitoring_enrolments SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
                    .bind(now)
                    .bind(id)
                    .execute(self.pool())
            })
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Moves the "told of missed check-ins through" mark forward, once:
    /// whether this call moved it (so two workers do not both tell).
    pub async fn mark_missed_flagged(&self, id: &str, through: i64) -> StoreResult<bool> {
        let done = self
            .retrying_query(|| {
                sqlx::query(
                    "UPDATE monitoring_enrolments SET missed_flagged_through = $1 WHERE id = $2 \
                     AND (missed_flagged_through IS NULL OR missed_flagged_through < $1)",
                )
                .bind(through)
                .bind(id)
                .execute(self.pool())
            })
            .await?;
        Ok(done.rows_affected() == 1)
    }
}

impl WriteTx {
    /// Records an enrolment, revoking the patient's other live ones (one
    /// monitoring at a time).
    pub async fn insert_enrolment(&mut self, e: &Enrolment) -> StoreResult<()> {
        sqlx::query("UPDATE monitoring_enrolments SET revoked_at = $1 WHERE patient_id = $2 AND revoked_at IS NULL")
            .bind(e.created_at)
            .bind(&e.patient_id)
            .execute(self.conn())
            .await?;
        sqlx::query(
            "INSERT INTO monitoring_enrolments (id, patient_id, visit_id, clinician_id, time_zone, language, starts_at, \
             ends_at, missed_after, token_hash, sealed_token, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(&e.id)
        .bind(&e.patient_id)
        .bind(&e.visit_id)
        .bind(&e.clinician_id)
        .bind(&e.time_zone)
        .bind(&e.language)
        .bind(e.starts_at)
        .bind(e.ends_at)
        .bind(e.missed_after)
        .bind(&e.token_hash)
        .bind(&e.sealed_token)
        .bind(e.created_at)
        .execute(self.conn())
        .await?;
        Ok(())
    }
}
