//! Answers to requests sent with an `Idempotency-Key`. A key is claimed
//! inside the very transaction that does the work, so the work and the
//! record of its answer commit together or not at all.

use super::{Store, StoreResult, WriteTx, int, text};

/// A request's idempotency key, scoped to who sent it and to what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey {
    /// Who and where, e.g. `clinician:c-1 POST /api/visits`.
    pub scope: String,
    /// The client's key.
    pub key: String,
    /// A hash of the request (method, path, body), to catch a key reused
    /// for another request.
    pub request_hash: String,
}

/// What claiming a key found.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum IdempotencyClaim {
    /// First use: go on, and record the answer before committing.
    New,
    /// Answered before: the stored status and sealed body.
    Answered {
        /// HTTP status of the first answer.
        status: u16,
        /// The first answer's body, sealed.
        sealed: String,
    },
    /// The key was used before for a different request.
    Mismatch,
}

impl WriteTx {
    /// Claims `key`. Two transactions claiming the same key serialise on it
    /// (SQLite's write lock; PostgreSQL's unique index waits for the first
    /// to commit), so the second always sees the first's answer. Keys older
    /// than `expired_before` are forgotten first.
    pub async fn claim_idempotency(
        &mut self,
        key: &IdempotencyKey,
        now: i64,
        expired_before: i64,
    ) -> StoreResult<IdempotencyClaim> {
        sqlx::query("DELETE FROM idempotency_keys WHERE scope = $1 AND idempotency_key = $2 AND created_at < $3")
            .bind(&key.scope)
            .bind(&key.key)
            .bind(expired_before)
            .execute(self.conn())
            .await?;
        let inserted = sqlx::query(
            "INSERT INTO idempotency_keys (scope, idempotency_key, request_hash, status_code, sealed_response, created_at) \
             VALUES ($1, $2, $3, 0, '', $4) ON CONFLICT (scope, idempotency_key) DO NOTHING",
        )
        .bind(&key.scope)
        .bind(&key.key)
        .bind(&key.request_hash)
        .bind(now)
        .execute(self.conn())
        .await?;
        if inserted.rows_affected() == 1 {
            return Ok(IdempotencyClaim::New);
        }
        let row = sqlx::query(
            "SELECT request_hash, status_code, sealed_response FROM idempotency_keys \
             WHERE scope = $1 AND idempotency_key = $2",
        )
        .bind(&key.scope)
        .bind(&key.key)
        .fetch_one(self.conn())
        .await?;
        if text(&row, "request_hash")? != key.request_hash {
            return Ok(IdempotencyClaim::Mismatch);
        }
        Ok(IdempotencyClaim::Answered {
            status: u16::try_from(int(&row, "status_code")?).unwrap_or(500),
            sealed: text(&row, "sealed_response")?,
        })
    }

    /// Records the answer to a key claimed in this transaction.
    pub async fn record_answer(&mut self, key: &IdempotencyKey, status: u16, sealed: &str) -> StoreResult<()> {
        sqlx::query(
            "UPDATE idempotency_keys SET status_code = $1, sealed_response = $2 WHERE scope = $3 AND idempotency_key = $4",
        )
        .bind(i64::from(status))
        .bind(sealed)
        .bind(&key.scope)
        .bind(&key.key)
        .execute(self.conn())
        .await?;
        Ok(())
    }
}

impl Store {
    /// Forgets answers recorded before `before`; returns how many.
    pub async fn forget_idempotency_keys(&self, before: i64) -> StoreResult<u64> {
        let done = self
            .retrying_query(|| {
                sqlx::query("DELETE FROM idempotency_keys WHERE created_at < $1").bind(before).execute(self.pool())
            })
            .await?;
        Ok(done.rows_affected())
    }
}
