//! The audit trail: who did what to which visit, and when. Ids and codes
//! only, never names or free text from people.

use serde::Serialize;

use super::{Store, StoreResult, WriteTx, int, opt_text, text};

/// One audit event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditEvent {
    /// When (Unix seconds).
    pub at: i64,
    /// Who: `clinician:<id>` (admins too), `link:<id>`, or `system`.
    pub actor: String,
    /// What: `created`, `link_used`, `joined`, `admitted`, `denied`, `left`, `started`, `ended`, `cancelled`, …
    pub action: String,
    /// Which visit.
    pub visit_id: Option<String>,
    /// Ids and codes only; never names or free text from people.
    pub detail: Option<String>,
}

/// Ids sort by time (microseconds) then a random tail, so `ORDER BY id` is
/// the order of events, on any node.
fn new_audit_id() -> String {
    let micros =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0);
    format!("{micros:016x}{:08x}", rand::random::<u32>())
}

const INSERT_AUDIT: &str =
    "INSERT INTO audit_events (id, at, actor, action, visit_id, detail) VALUES ($1, $2, $3, $4, $5, $6)";

impl Store {
    /// Records an audit event.
    pub async fn audit(&self, event: &AuditEvent) -> StoreResult<()> {
        let id = new_audit_id();
        let id = id.as_str();
        self.retrying_query(|| {
            sqlx::query(INSERT_AUDIT)
                .bind(id)
                .bind(event.at)
                .bind(&event.actor)
                .bind(&event.action)
                .bind(&event.visit_id)
                .bind(&event.detail)
                .execute(self.pool())
        })
        .await?;
        Ok(())
    }

    /// A visit's audit trail, oldest first.
    pub async fn audit_of_visit(&self, visit_id: &str) -> StoreResult<Vec<AuditEvent>> {
        let rows = self
            .retrying_query(|| {
                sqlx::query(
                    "SELECT at, actor, action, visit_id, detail FROM audit_events WHERE visit_id = $1 ORDER BY id",
                )
                .bind(visit_id)
                .fetch_all(self.pool())
            })
            .await?;
        rows.iter()
            .map(|r| {
                Ok(AuditEvent {
                    at: int(r, "at")?,
                    actor: text(r, "actor")?,
                    action: text(r, "action")?,
                    visit_id: opt_text(r, "visit_id")?,
                    detail: opt_text(r, "detail")?,
                })
            })
            .collect()
    }
}

impl WriteTx {
    /// Records an audit event as part of the transaction.
    pub async fn insert_audit(&mut self, event: &AuditEvent) -> StoreResult<()> {
        sqlx::query(INSERT_AUDIT)
            .bind(new_audit_id())
            .bind(event.at)
            .bind(&event.actor)
            .bind(&event.action)
            .bind(&event.visit_id)
            .bind(&event.detail)
            .execute(self.conn())
            .await?;
        Ok(())
    }
}
