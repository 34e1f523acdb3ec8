//! Figures for operations: visits by status, waiting times, and the
//! hospital's own weekly totals. Aggregates only; no names.

use super::{Store, StoreResult, VisitStatus, int, opt_text, parsed};

impl Store {
    /// (scheduled start, status) of every visit starting in `[from, to)`.
    pub async fn visit_times_and_statuses(&self, from: i64, to: i64) -> StoreResult<Vec<(i64, VisitStatus)>> {
        let rows = self
            .retrying_query(|| {
                sqlx::query(
                    "SELECT scheduled_start, status FROM visits WHERE scheduled_start >= $1 AND scheduled_start < $2",
                )
                .bind(from)
                .bind(to)
                .fetch_all(self.pool())
            })
            .await?;
        rows.iter().map(|r| Ok((int(r, "scheduled_start")?, parsed(r, "status")?))).collect()
    }

    /// Waiting-room times (seconds) of admissions in `[from, to)`, from the
    /// audit trail.
    pub async fn admission_waits(&self, from: i64, to: i64) -> StoreResult<Vec<i64>> {
        let rows = self
            .retrying_query(|| {
                sqlx::query("SELECT detail FROM audit_events WHERE action = 'admitted' AND at >= $1 AND at < $2")
                    .bind(from)
                    .bind(to)
                    .fetch_all(self.pool())
            })
            .await?;
        let mut waits = Vec::new();
        for r in &rows {
            if let Some(detail) = opt_text(r, "detail")?
                && let Some(secs) = detail
                    .split("waited_secs=")
                    .nth(1)
                    .and_then(|v| v.split_whitespace().next())
                    .and_then(|v| v.parse().ok())
            {
                waits.push(secs);
            }
        }
        Ok(waits)
    }

    /// The hospital's total of consultations for a week, if supplied.
    pub async fn consultation_total(&self, week_start: &str) -> StoreResult<Option<i64>> {
        let row = self
            .retrying_query(|| {
                sqlx::query("SELECT total FROM consultation_totals WHERE week_start = $1")
                    .bind(week_start)
                    .fetch_optional(self.pool())
            })
            .await?;
        row.as_ref().map(|r| int(r, "total")).transpose()
    }

    /// Records (or replaces) a week's total of consultations.
    pub async fn set_consultation_total(&self, week_start: &str, total: i64) -> StoreResult<()> {
        self.retrying_query(|| {
            sqlx::query(
                "INSERT INTO consultation_totals (week_start, total) VALUES ($1, $2) \
                 ON CONFLICT (week_start) DO UPDATE SET total = excluded.total",
            )
            .bind(week_start)
            .bind(total)
            .execute(self.pool())
        })
        .await?;
        Ok(())
    }

    /// Visits in each final status (completed, no_show, cancelled).
    pub async fn finished_visit_counts(&self) -> StoreResult<Vec<(VisitStatus, i64)>> {
        let rows = self
            .retrying_query(|| {
                sqlx::query(
                    "SELECT status, COUNT(*) AS n FROM visits WHERE status IN ('completed', 'no_show', 'cancelled') \
                     GROUP BY status",
                )
                .fetch_all(self.pool())
            })
            .await?;
        rows.iter().map(|r| Ok((parsed(r, "status")?, int(r, "n")?))).collect()
    }

    /// Pairs of live visits of one clinician that overlap. The database's
    /// rules keep this at zero; tests and health checks verify it.
    pub async fn overlapping_live_visits(&self) -> StoreResult<i64> {
        let row = self
            .retrying_query(|| {
                sqlx::query(
                    "SELECT COUNT(*) AS n FROM visits a JOIN visits b ON a.clinician_id = b.clinician_id AND a.id < b.id \
                     WHERE a.status IN ('scheduled', 'in_progress') AND b.status IN ('scheduled', 'in_progress') \
                     AND a.scheduled_start < b.scheduled_start + b.duration_minutes * 60 \
                     AND b.scheduled_start < a.scheduled_start + a.duration_minutes * 60",
                )
                .fetch_one(self.pool())
            })
            .await?;
        int(&row, "n")
    }
}
