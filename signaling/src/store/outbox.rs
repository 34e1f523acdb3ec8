//! The scheduler's durable outbox: reminders waiting to be delivered to the
//! hospital's gateway, each under an idempotency key.

use super::{Store, StoreResult, int, opt_int, text};

/// One outbox entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEntry {
    /// The idempotency key (`reminder:<visit>:<kind>`), sent to the gateway.
    pub key: String,
    /// The visit it is about.
    pub visit_id: String,
    /// `24h`, `15min`, …
    pub kind: String,
    /// Attempts so far.
    pub attempts: i64,
    /// Whether it was delivered.
    pub delivered: bool,
}

impl Store {
    /// Queues a reminder once: a second call with the same key does nothing.
    /// Returns whether it was queued now. One statement, so two workers
    /// cannot both queue it.
    pub async fn enqueue_reminder(&self, key: &str, visit_id: &str, kind: &str, now: i64) -> StoreResult<bool> {
        let done = self
            .retrying_query(|| {
                sqlx::query(
                    "INSERT INTO outbox (idempotency_key, visit_id, kind, created_at, next_attempt_at, attempts) \
                     VALUES ($1, $2, $3, $4, $4, 0) ON CONFLICT (idempotency_key) DO NOTHING",
                )
                .bind(key)
                .bind(visit_id)
                .bind(kind)
                .bind(now)
                .execute(self.pool())
            })
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Undelivered entries due at `now`, oldest first.
    pub async fn due_outbox(&self, now: i64, limit: i64) -> StoreResult<Vec<OutboxEntry>> {
        let rows = self
            .retrying_query(|| {
                sqlx::query(
                    "SELECT idempotency_key, visit_id, kind, attempts, delivered_at FROM outbox \
                     WHERE delivered_at IS NULL AND next_attempt_at <= $1 ORDER BY next_attempt_at LIMIT $2",
                )
                .bind(now)
                .bind(limit)
                .fetch_all(self.pool())
            })
            .await?;
        rows.iter().map(entry_from).collect()
    }

    /// Records a delivery attempt: delivered, or failed and retried at `retry_at`.
    pub async fn outbox_attempted(&self, key: &str, now: i64, outcome: Result<(), (String, i64)>) -> StoreResult<()> {
        match &outcome {
            Ok(()) => {
                self.retrying_query(|| {
                    sqlx::query(
                        "UPDATE outbox SET delivered_at = $1, attempts = attempts + 1, last_error = NULL \
                         WHERE idempotency_key = $2",
                    )
                    .bind(now)
                    .bind(key)
                    .execute(self.pool())
                })
                .await?;
            }
            Err((error, retry_at)) => {
                self.retrying_query(|| {
                    sqlx::query(
                        "UPDATE outbox SET attempts = attempts + 1, last_error = $1, next_attempt_at = $2 \
                         WHERE idempotency_key = $3",
                    )
                    .bind(error.as_str())
                    .bind(*retry_at)
                    .bind(key)
                    .execute(self.pool())
                })
                .await?;
            }
        }
        Ok(())
    }

    /// Every outbox entry, by key (for tests and operators).
    pub async fn outbox_entries(&self) -> StoreResult<Vec<OutboxEntry>> {
        let rows = self
            .retrying_query(|| {
                sqlx::query(
                    "SELECT idempotency_key, visit_id, kind, attempts, delivered_at FROM outbox ORDER BY idempotency_key",
                )
                .fetch_all(self.pool())
            })
            .await?;
        rows.iter().map(entry_from).collect()
    }
}

fn entry_from(r: &sqlx::any::AnyRow) -> StoreResult<OutboxEntry> {
    Ok(OutboxEntry {
        key: text(r, "idempotency_key")?,
        visit_id: text(r, "visit_id")?,
        kind: text(r, "kind")?,
        attempts: int(r, "attempts")?,
        delivered: opt_int(r, "delivered_at")?.is_some(),
    })
}
