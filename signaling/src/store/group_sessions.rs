//! Group sessions (recurring classes), their occurrences, enrolments and
//! attendance. The capacity rule is the database's (a trigger per backend:
//! `class_full`, reported as [`StoreError::ClassFull`](super::StoreError)).

use sqlx::any::AnyRow;

use super::{Patient, Store, StoreResult, Visit, WriteTx, int, opt_int, opt_text, text};

/// A recurring class led by one clinician.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSession {
    /// Id (`gs-…`).
    pub id: String,
    /// The clinician who leads it; every occurrence is on their calendar.
    pub leader_id: String,
    /// The class's roster record: the patients row its occurrence visits
    /// belong to (named after the class, never given a link).
    pub roster_patient_id: String,
    /// Shown to the leader and in reminders.
    pub title: String,
    /// IANA zone of the recurrence.
    pub time_zone: String,
    /// ISO weekdays, 1 = Monday, ascending.
    pub weekdays: Vec<u8>,
    /// Local start, minutes after midnight.
    pub local_minute: u16,
    /// Length of each occurrence.
    pub duration_minutes: i64,
    /// First day of the recurrence, `YYYY-MM-DD`.
    pub first_day: String,
    /// How many weeks it runs.
    pub weeks: i64,
    /// Most enrolled patients (1 to 12).
    pub capacity: i64,
    /// Creation time.
    pub created_at: i64,
}

/// An enrolled (or withdrawn) patient.
#[derive(Debug, Clone)]
pub struct ClassEnrolment {
    /// The patient.
    pub patient: Patient,
    /// When enrolled.
    pub enrolled_at: i64,
    /// When withdrawn, if so.
    pub withdrawn_at: Option<i64>,
}

fn session_from(row: &AnyRow) -> StoreResult<GroupSession> {
    let weekdays = text(row, "weekdays")?
        .split(',')
        .map(|d| d.parse::<u8>().map_err(|_| super::StoreError::Corrupt("group_sessions.weekdays")))
        .collect::<StoreResult<Vec<u8>>>()?;
    Ok(GroupSession {
        id: text(row, "id")?,
        leader_id: text(row, "leader_id")?,
        roster_patient_id: text(row, "roster_patient_id")?,
        title: text(row, "title")?,
        time_zone: text(row, "time_zone")?,
        weekdays,
        local_minute: u16::try_from(int(row, "local_minute")?)
            .map_err(|_| super::StoreError::Corrupt("group_sessions.local_minute"))?,
        duration_minutes: int(row, "duration_minutes")?,
        first_day: text(row, "first_day")?,
        weeks: int(row, "weeks")?,
        capacity: int(row, "capacity")?,
        created_at: int(row, "created_at")?,
    })
}

impl Store {
    /// A group session by id.
    pub async fn group_session_by_id(&self, id: &str) -> StoreResult<Option<GroupSession>> {
        let row = self
            .retrying_query(|| {
                sqlx::query("SELECT * FROM group_sessions WHERE id = $1").bind(id).fetch_optional(self.pool())
            })
            .await?;
        row.as_ref().map(session_from).transpose()
    }

    /// The group session an occurrence visit belongs to, if it is one.
    pub async fn group_session_of_visit(&self, visit_id: &str) -> StoreResult<Option<GroupSession>> {
        let row = self
            .retrying_query(|| {
                sqlx::query(
                    "SELECT s.* FROM group_sessions s JOIN group_occurrences o ON o.session_id = s.id \
                     WHERE o.visit_id = $1",
                )
                .bind(visit_id)
                .fetch_optional(self.pool())
            })
            .await?;
        row.as_ref().map(session_from).transpose()
    }

    /// Group sessions led by `leader_id`, or every one when `None`, newest first.
    pub async fn group_sessions(&self, leader_id: Option<&str>) -> StoreResult<Vec<GroupSession>> {
        let rows = self
            .retrying_query(|| {
                sqlx::query(
                    "SELECT * FROM group_sessions WHERE $1 IS NULL OR leader_id = $1 ORDER BY created_at DESC, id",
                )
                .bind(leader_id)
                .fetch_all(self.pool())
            })
            .await?;
        rows.iter().map(session_from).collect()
    }

    /// The occurrence visits of a session, by start.
    pub async fn group_occurrences(&self, session_id: &str) -> StoreResult<Vec<Visit>> {
        let sql = format!(
            "SELECT {} FROM visits v JOIN group_occurrences o ON o.visit_id = v.id \
             WHERE o.session_id = $1 ORDER BY v.scheduled_start",
            super::visits::VISIT_COLUMNS_OF_V
        );
        let rows = self.retrying_query(|| sqlx::query(&sql).bind(session_id).fetch_all(self.pool())).await?;
        rows.iter().map(super::visits::visit_from).collect()
    }

    /// The session's enrolments (withdrawn ones too), by name (the roster's order).
    pub async fn group_enrolments(&self, session_id: &str) -> StoreResult<Vec<ClassEnrolment>> {
        let rows = self
            .retrying_query(|| {
                sqlx::query(
                    "SELECT p.id, p.display_name, p.hospital_id, p.contact, p.created_at, \
                     e.enrolled_at, e.withdrawn_at FROM group_enrolments e JOIN patients p ON p.id = e.patient_id \
                     WHERE e.session_id = $1 ORDER BY p.display_name, p.id",
                )
                .bind(session_id)
                .fetch_all(self.pool())
            })
            .await?;
        rows.iter()
            .map(|r| {
                Ok(ClassEnrolment {
                    patient: super::visits::patient_from(r)?,
                    enrolled_at: int(r, "enrolled_at")?,
                    withdrawn_at: opt_int(r, "withdrawn_at")?,
                })
            })
            .collect()
    }

    /// Whether a patient is (or was) enrolled in a class `leader_id` leads.
    pub async fn patient_enrolled_with(&self, patient_id: &str, leader_id: &str) -> StoreResult<bool> {
        let row = self
            .retrying_query(|| {
                sqlx::query(
                    "SELECT 1 AS one FROM group_enrolments e JOIN group_sessions s ON s.id = e.session_id \
                     WHERE e.patient_id = $1 AND s.leader_id = $2 LIMIT 1",
                )
                .bind(patient_id)
                .bind(leader_id)
                .fetch_optional(self.pool())
            })
            .await?;
        Ok(row.is_some())
    }

    /// The patients enrolled (not withdrawn) in the class `visit_id` is an
    /// occurrence of; `None` when it is no class's occurrence. One query.
    pub async fn class_recipients(&self, visit_id: &str) -> StoreResult<Option<Vec<String>>> {
        let rows = self
            .retrying_query(|| {
                sqlx::query(
                    "SELECT e.patient_id FROM group_occurrences o LEFT JOIN group_enrolments e \
                     ON e.session_id = o.session_id AND e.withdrawn_at IS NULL WHERE o.visit_id = $1 \
                     ORDER BY e.patient_id",
                )
                .bind(visit_id)
                .fetch_all(self.pool())
            })
            .await?;
        if rows.is_empty() {
            return Ok(None);
        }
        Ok(Some(rows.iter().filter_map(|r| opt_text(r, "patient_id").transpose()).collect::<StoreResult<_>>()?))
    }

    /// (occurrence visit id, patient id) of every attendance in a session.
    pub async fn group_attendance(&self, session_id: &str) -> StoreResult<Vec<(String, String)>> {
        let rows = self
            .retrying_query(|| {
                sqlx::query(
                    "SELECT a.visit_id, a.patient_id FROM group_attendance a \
                     JOIN group_occurrences o ON o.visit_id = a.visit_id WHERE o.session_id = $1",
                )
                .bind(session_id)
                .fetch_all(self.pool())
            })
            .await?;
        rows.iter().map(|r| Ok((text(r, "visit_id")?, text(r, "patient_id")?))).collect()
    }

    /// Records that the patient a class link names was admitted to its
    /// occurrence (once per patient and occurrence). `false` when the link
    /// names no patient or the attendance was already recorded.
    pub async fn record_attendance(&self, link_id: &str, now: i64) -> StoreResult<bool> {
        let done = self
            .retrying(|| async move {
                sqlx::query(
                    "INSERT INTO group_attendance (visit_id, patient_id, admitted_at) \
                     SELECT visit_id, patient_id, $2 FROM links WHERE id = $1 AND patient_id IS NOT NULL \
                     ON CONFLICT (visit_id, patient_id) DO NOTHING",
                )
                .bind(link_id)
                .bind(now)
                .execute(self.pool())
                .await
                .map_err(Into::into)
            })
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// The scheduled starts of the class occurrences, and of the
    /// attendances, in `[from, to)` (for the weekly figures; no names).
    pub async fn class_times(&self, from: i64, to: i64) -> StoreResult<(Vec<i64>, Vec<i64>)> {
        let held = self
            .retrying_query(|| {
                sqlx::query(
                    "SELECT v.scheduled_start FROM visits v JOIN group_occurrences o ON o.visit_id = v.id \
                     WHERE v.status = 'completed' AND v.scheduled_start >= $1 AND v.scheduled_start < $2",
                )
                .bind(from)
                .bind(to)
                .fetch_all(self.pool())
            })
            .await?;
        let came = self
            .retrying_query(|| {
                sqlx::query(
                    "SELECT v.scheduled_start FROM group_attendance a JOIN visits v ON v.id = a.visit_id \
                     WHERE v.scheduled_start >= $1 AND v.scheduled_start < $2",
                )
                .bind(from)
                .bind(to)
                .fetch_all(self.pool())
            })
            .await?;
        let starts = |rows: &[AnyRow]| rows.iter().map(|r| int(r, "scheduled_start")).collect::<StoreResult<Vec<_>>>();
        Ok((starts(&held)?, starts(&came)?))
    }
}

impl WriteTx {
    /// Inserts a session (its roster patient must exist).
    pub async fn insert_group_session(&mut self, s: &GroupSession) -> StoreResult<()> {
        let weekdays = s.weekdays.iter().map(u8::to_string).collect::<Vec<_>>().join(",");
        sqlx::query(
            "INSERT INTO group_sessions (id, leader_id, roster_patient_id, title, time_zone, weekdays, local_minute, \
             duration_minutes, first_day, weeks, capacity, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(&s.id)
        .bind(&s.leader_id)
        .bind(&s.roster_patient_id)
        .bind(&s.title)
        .bind(&s.time_zone)
        .bind(weekdays)
        .bind(i64::from(s.local_minute))
        .bind(s.duration_minutes)
        .bind(&s.first_day)
        .bind(s.weeks)
        .bind(s.capacity)
        .bind(s.created_at)
        .execute(self.conn())
        .await?;
        Ok(())
    }

    /// Ties an occurrence visit to its session.
    pub async fn insert_group_occurrence(&mut self, session_id: &str, visit_id: &str) -> StoreResult<()> {
        sqlx::query("INSERT INTO group_occurrences (visit_id, session_id) VALUES ($1, $2)")
            .bind(visit_id)
            .bind(session_id)
            .execute(self.conn())
            .await?;
        Ok(())
    }

    /// Enrols a patient, or enrols again one who had withdrawn. `ClassFull`
    /// past the capacity (the database's rule); `Conflict` when already enrolled.
    pub async fn enrol(&mut self, session_id: &str, patient_id: &str, now: i64) -> StoreResult<()> {
        let withdrawn: Option<Option<i64>> =
            sqlx::query("SELECT withdrawn_at FROM group_enrolments WHERE session_id = $1 AND patient_id = $2")
                .bind(session_id)
                .bind(patient_id)
                .fetch_optional(self.conn())
                .await?
                .map(|r| opt_int(&r, "withdrawn_at"))
                .transpose()?;
        match withdrawn {
            Some(None) => Err(super::StoreError::Conflict),
            Some(Some(_)) => {
                sqlx::query(
                    "UPDATE group_enrolments SET withdrawn_at = NULL, enrolled_at = $3 \
                     WHERE session_id = $1 AND patient_id = $2",
                )
                .bind(session_id)
                .bind(patient_id)
                .bind(now)
                .execute(self.conn())
                .await?;
                Ok(())
            }
            None => {
                sqlx::query("INSERT INTO group_enrolments (session_id, patient_id, enrolled_at) VALUES ($1, $2, $3)")
                    .bind(session_id)
                    .bind(patient_id)
                    .bind(now)
                    .execute(self.conn())
                    .await?;
                Ok(())
            }
        }
    }

    /// Withdraws an enrolled patient and revokes their links to occurrences
    /// not yet over. `NotFound` when not enrolled.
    pub async fn withdraw(&mut self, session_id: &str, patient_id: &str, now: i64) -> StoreResult<()> {
        let done = sqlx::query(
            "UPDATE group_enrolments SET withdrawn_at = $3 \
             WHERE session_id = $1 AND patient_id = $2 AND withdrawn_at IS NULL",
        )
        .bind(session_id)
        .bind(patient_id)
        .bind(now)
        .execute(self.conn())
        .await?;
        if done.rows_affected() == 0 {
            return Err(super::StoreError::NotFound);
        }
        sqlx::query(
            "UPDATE links SET revoked_at = $3 WHERE patient_id = $2 AND revoked_at IS NULL AND valid_until > $3 \
             AND visit_id IN (SELECT visit_id FROM group_occurrences WHERE session_id = $1)",
        )
        .bind(session_id)
        .bind(patient_id)
        .bind(now)
        .execute(self.conn())
        .await?;
        Ok(())
    }
}
