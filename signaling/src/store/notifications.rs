//! Clinicians' notifications (the inbox): what needs their eye, kept until
//! read. Ids and codes only.

use serde::Serialize;

use super::{Store, StoreResult, WriteTx, int, opt_int, opt_text, text};

/// One notification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Notification {
    /// Id (`n-…`).
    pub id: String,
    /// Whose inbox.
    pub clinician_id: String,
    /// `red_flags`, `booked_sooner`, `follow_up_handed_over`, `no_urgent_slot`, `missed_check_ins`.
    pub kind: String,
    /// The visit it is about.
    pub visit_id: Option<String>,
    /// The follow-up it is about.
    pub follow_up_id: Option<String>,
    /// Codes (e.g. the red flags, `fever,pain`).
    pub detail: Option<String>,
    /// When (Unix seconds).
    pub created_at: i64,
    /// When read.
    pub read_at: Option<i64>,
}

fn notification_from(r: &sqlx::any::AnyRow) -> StoreResult<Notification> {
    Ok(Notification {
        id: text(r, "id")?,
        clinician_id: text(r, "clinician_id")?,
        kind: text(r, "kind")?,
        visit_id: opt_text(r, "visit_id")?,
        follow_up_id: opt_text(r, "follow_up_id")?,
        detail: opt_text(r, "detail")?,
        created_at: int(r, "created_at")?,
        read_at: opt_int(r, "read_at")?,
    })
}

impl Store {
    /// A clinician's notifications, newest first (unread ones only, if asked).
    pub async fn notifications_of(
        &self,
        clinician_id: &str,
        unread_only: bool,
        limit: i64,
    ) -> StoreResult<Vec<Notification>> {
        let sql = if unread_only {
            "SELECT * FROM notifications WHERE clinician_id = $1 AND read_at IS NULL \
             ORDER BY created_at DESC, id DESC LIMIT $2"
        } else {
            "SELECT * FROM notifications WHERE clinician_id = $1 ORDER BY created_at DESC, id DESC LIMIT $2"
        };
        let rows =
            self.retrying_query(|| sqlx::query(sql).bind(clinician_id).bind(limit).fetch_all(self.pool())).await?;
        rows.iter().map(notification_from).collect()
    }

    /// How many of a clinician's notifications are unread.
    pub async fn unread_notifications(&self, clinician_id: &str) -> StoreResult<i64> {
        let row = self
            .retrying_query(|| {
                sqlx::query("SELECT COUNT(*) AS n FROM notifications WHERE clinician_id = $1 AND read_at IS NULL")
                    .bind(clinician_id)
                    .fetch_one(self.pool())
            })
            .await?;
        int(&row, "n")
    }

    /// Marks a clinician's notification read (once); whether it is theirs.
    pub async fn mark_notification_read(&self, id: &str, clinician_id: &str, now: i64) -> StoreResult<bool> {
        self.retrying_query(|| {
            sqlx::query("UPDATE notifications SET read_at = COALESCE(read_at, $1) WHERE id = $2 AND clinician_id = $3")
                .bind(now)
                .bind(id)
                .bind(clinician_id)
                .execute(self.pool())
        })
        .await
        .map(|done| done.rows_affected() == 1)
    }
}

impl WriteTx {
    /// Records a notification as part of the transaction.
    pub async fn insert_notification(&mut self, n: &Notification) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO notifications (id, clinician_id, kind, visit_id, follow_up_id, detail, created_at, read_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&n.id)
        .bind(&n.clinician_id)
        .bind(&n.kind)
        .bind(&n.visit_id)
        .bind(&n.follow_up_id)
        .bind(&n.detail)
        .bind(n.created_at)
        .bind(n.read_at)
        .execute(self.conn())
        .await?;
        Ok(())
    }
}
