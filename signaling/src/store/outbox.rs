//! The scheduler's durable outbox: messages waiting to be delivered to the
//! hospital's gateway (visit reminders, "moved" and "cancelled" notices,
//! staff notices, monitoring links), each under an idempotency key.
//!
//! Delivery is claimed, not just read: a claim pushes the entry's next
//! attempt past a lease in one conditional statement, so two workers (or a
//! worker and the delivery it already has in flight) never send one entry
//! at once, and an entry whose sender died is retried when the lease ends.

use super::{Store, StoreResult, WriteTx, int, opt_int, opt_text, text};

/// One outbox entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEntry {
    /// The idempotency key, sent to the gateway: `reminder:<visit>:<kind>:<start>`,
    /// `reminder:<visit>:moved:<start>:<at>`, `reminder:<visit>:cancelled`, `notice:<id>`, `monitoring:<id>`.
    pub key: String,
    /// The visit it is about.
    pub visit_id: String,
    /// `24h`, `15min`, `moved`, `cancelled`, `staff_notice`, `monitoring_link`.
    pub kind: String,
    /// The visit start a reminder speaks of (stale once the visit moved).
    pub scheduled_start: Option<i64>,
    /// Ids and codes for messages that are not visit reminders (JSON).
    pub payload: Option<String>,
    /// Attempts so far.
    pub attempts: i64,
    /// Whether it was delivered (or dropped as stale).
    pub delivered: bool,
    /// The last failure, or why it was dropped.
    pub last_error: Option<String>,
}

/// A message to queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOutboxEntry<'a> {
    /// Idempotency key (a second entry with the same key is not queued).
    pub key: &'a str,
    /// The visit it is about.
    pub visit_id: &'a str,
    /// Kind (see [`OutboxEntry::kind`]).
    pub kind: &'a str,
    /// The visit start it speaks of.
    pub scheduled_start: Option<i64>,
    /// Ids and codes (JSON).
    pub payload: Option<&'a str>,
}

/// Visit reminders whose delivery means the patient knows the visit's
/// time, so that a later change must be told.
const TOLD_KINDS: &str = "('24h', '15min', 'moved')";

const ENTRY_COLUMNS: &str =
    "idempotency_key, visit_id, kind, scheduled_start, payload, attempts, delivered_at, last_error";

const INSERT_ENTRY: &str = "INSERT INTO outbox (idempotency_key, visit_id, kind, scheduled_start, payload, created_at, \
     next_attempt_at, attempts) VALUES ($1, $2, $3, $4, $5, $6, $6, 0) ON CONFLICT (idempotency_key) DO NOTHING";

impl Store {
    /// Queues a message once: a second call with the same key does nothing.
    /// Returns whether it was queued now. One statement, so two workers
    /// cannot both queue it.
    pub async fn enqueue(&self, entry: &NewOutboxEntry<'_>, now: i64) -> StoreResult<bool> {
        let done = self
            .retrying_query(|| {
                sqlx::query(INSERT_ENTRY)
                    .bind(entry.key)
                    .bind(entry.visit_id)
                    .bind(entry.kind)
                    .bind(entry.scheduled_start)
                    .bind(entry.payload)
                    .bind(now)
                    .execute(self.pool())
            })
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Undelivered entries due at `now`, oldest first (without claiming them).
    pub async fn due_outbox(&self, now: i64, limit: i64) -> StoreResult<Vec<OutboxEntry>> {
        let sql = format!(
            "SELECT {ENTRY_COLUMNS} FROM outbox WHERE delivered_at IS NULL AND next_attempt_at <= $1 \
             ORDER BY next_attempt_at, idempotency_key LIMIT $2"
        );
        let sql = sql.as_str();
        let rows = self.retrying_query(|| sqlx::query(sql).bind(now).bind(limit).fetch_all(self.pool())).await?;
        rows.iter().map(entry_from).collect()
    }

    /// Claims up to `limit` undelivered entries due at `now`, oldest first:
    /// their next attempt moves to `lease_until`, in the statement that
    /// selects them, so no other claim takes them before then.
    pub async fn claim_outbox(&self, now: i64, lease_until: i64, limit: i64) -> StoreResult<Vec<OutboxEntry>> {
        let sql = format!(
            "UPDATE outbox SET next_attempt_at = $1 WHERE idempotency_key IN (SELECT idempotency_key FROM outbox \
             WHERE delivered_at IS NULL AND next_attempt_at <= $2 ORDER BY next_attempt_at, idempotency_key LIMIT $3) \
             AND delivered_at IS NULL AND next_attempt_at <= $2 RETURNING {ENTRY_COLUMNS}"
        );
        let sql = sql.as_str();
        let rows = self
            .retrying_query(|| sqlx::query(sql).bind(lease_until).bind(now).bind(limit).fetch_all(self.pool()))
            .await?;
        let mut entries: Vec<OutboxEntry> = rows.iter().map(entry_from).collect::<StoreResult<_>>()?;
        entries.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(entries)
    }

    /// Records a delivery attempt: delivered (or dropped, `Ok(Some(why))`),
    /// or failed and retried at `retry_at`.
    pub async fn outbox_attempted(
        &self,
        key: &str,
        now: i64,
        outcome: Result<Option<String>, (String, i64)>,
    ) -> StoreResult<()> {
        match &outcome {
            Ok(note) => {
                self.retrying_query(|| {
                    sqlx::query(
                        "UPDATE outbox SET delivered_at = $1, attempts = attempts + 1, last_error = $2 \
                         WHERE idempotency_key = $3",
                    )
                    .bind(now)
                    .bind(note.as_deref())
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
        let sql = format!("SELECT {ENTRY_COLUMNS} FROM outbox ORDER BY idempotency_key");
        let sql = sql.as_str();
        let rows = self.retrying_query(|| sqlx::query(sql).fetch_all(self.pool())).await?;
        rows.iter().map(entry_from).collect()
    }
}

impl WriteTx {
    /// Queues a message as part of the transaction (once per key).
    pub async fn enqueue(&mut self, entry: &NewOutboxEntry<'_>, now: i64) -> StoreResult<bool> {
        let done = sqlx::query(INSERT_ENTRY)
            .bind(entry.key)
            .bind(entry.visit_id)
            .bind(entry.kind)
            .bind(entry.scheduled_start)
            .bind(entry.payload)
            .bind(now)
            .execute(self.conn())
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// After a visit moved to `new_start`: if the patient was already told
    /// its time (a reminder was delivered), queues a `moved` message under a
    /// new key. Returns whether one was queued.
    pub async fn tell_visit_moved(&mut self, visit_id: &str, new_start: i64, now: i64) -> StoreResult<bool> {
        if !self.patient_was_told(visit_id).await? {
            return Ok(false);
        }
        self.tell_rebooked(visit_id, new_start, now).await
    }

    /// After a visit was cancelled: if the patient was already told its
    /// time, queues a `cancelled` message (once per visit).
    pub async fn tell_visit_cancelled(&mut self, visit_id: &str, start: i64, now: i64) -> StoreResult<bool> {
        if !self.patient_was_told(visit_id).await? {
            return Ok(false);
        }
        let key = format!("reminder:{visit_id}:cancelled");
        let entry =
            NewOutboxEntry { key: &key, visit_id, kind: "cancelled", scheduled_start: Some(start), payload: None };
        self.enqueue(&entry, now).await
    }

    /// Takes a scheduled visit off the calendar to book its follow-up
    /// elsewhere: cancelled and its links revoked, without a `cancelled`
    /// message. Returns whether the patient had been told its time (then
    /// the caller tells them the new one with [`tell_rebooked`](WriteTx::tell_rebooked)).
    pub async fn withdraw_scheduled_visit(&mut self, visit_id: &str, now: i64) -> StoreResult<bool> {
        let told = self.patient_was_told(visit_id).await?;
        sqlx::query("UPDATE visits SET status = 'cancelled', cancelled_at = $1 WHERE id = $2 AND status = 'scheduled'")
            .bind(now)
            .bind(visit_id)
            .execute(self.conn())
            .await?;
        self.revoke_links_of(visit_id, now).await?;
        Ok(told)
    }

    /// Queues a `moved` message for a visit at `new_start` (one that moved,
    /// or replaces one the patient had been told of), under a new key.
    pub async fn tell_rebooked(&mut self, new_visit_id: &str, new_start: i64, now: i64) -> StoreResult<bool> {
        let key = format!("reminder:{new_visit_id}:moved:{new_start}:{now}");
        let entry = NewOutboxEntry {
            key: &key,
            visit_id: new_visit_id,
            kind: "moved",
            scheduled_start: Some(new_start),
            payload: None,
        };
        self.enqueue(&entry, now).await
    }

    async fn patient_was_told(&mut self, visit_id: &str) -> StoreResult<bool> {
        let sql = format!(
            "SELECT COUNT(*) AS n FROM outbox WHERE visit_id = $1 AND delivered_at IS NOT NULL \
             AND last_error IS NULL AND kind IN {TOLD_KINDS}"
        );
        let row = sqlx::query(&sql).bind(visit_id).fetch_one(self.conn()).await?;
        Ok(int(&row, "n")? > 0)
    }
}

fn entry_from(r: &sqlx::any::AnyRow) -> StoreResult<OutboxEntry> {
    Ok(OutboxEntry {
        key: text(r, "idempotency_key")?,
        visit_id: text(r, "visit_id")?,
        kind: text(r, "kind")?,
        scheduled_start: opt_int(r, "scheduled_start")?,
        payload: opt_text(r, "payload")?,
        attempts: int(r, "attempts")?,
        delivered: opt_int(r, "delivered_at")?.is_some(),
        last_error: opt_text(r, "last_error")?,
    })
}
