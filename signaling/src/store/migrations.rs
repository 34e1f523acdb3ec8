//! Versioned schema migrations, one folder per backend, applied in order at
//! start-up inside one write transaction. Never edit one that has shipped;
//! add a new one to both folders with the same version number. Every
//! version not yet recorded is applied, in order (not only those above the
//! highest), so a version merged late still reaches every database.
//!
//! SQLite reached version 5 in five steps; PostgreSQL support began at 5,
//! so its first file creates the version-5 schema whole. A database newer
//! than this binary is refused rather than used.

use sqlx::Row;

use super::{Backend, Store, StoreError, StoreResult};

/// One migration.
struct Migration {
    version: i64,
    sql: &'static str,
}

const SQLITE: &[Migration] = &[
    Migration { version: 1, sql: include_str!("migrations/sqlite/0001_initial.sql") },
    Migration { version: 2, sql: include_str!("migrations/sqlite/0002_weekly_figures.sql") },
    Migration { version: 3, sql: include_str!("migrations/sqlite/0003_follow_ups.sql") },
    Migration { version: 4, sql: include_str!("migrations/sqlite/0004_scheduler_outbox.sql") },
    Migration { version: 5, sql: include_str!("migrations/sqlite/0005_booking_rules.sql") },
    Migration { version: 6, sql: include_str!("migrations/sqlite/0006_link_denials.sql") },
    Migration { version: 10, sql: include_str!("migrations/sqlite/0010_reminders_stay_true.sql") },
    Migration { version: 11, sql: include_str!("migrations/sqlite/0011_notifications.sql") },
    Migration { version: 12, sql: include_str!("migrations/sqlite/0012_symptom_monitoring.sql") },
    Migration { version: 13, sql: include_str!("migrations/sqlite/0013_retention.sql") },
    Migration { version: 14, sql: include_str!("migrations/sqlite/0014_group_sessions.sql") },
];

const POSTGRES: &[Migration] = &[
    Migration { version: 5, sql: include_str!("migrations/postgres/0005_initial.sql") },
    Migration { version: 6, sql: include_str!("migrations/postgres/0006_link_denials.sql") },
    Migration { version: 10, sql: include_str!("migrations/postgres/0010_reminders_stay_true.sql") },
    Migration { version: 11, sql: include_str!("migrations/postgres/0011_notifications.sql") },
    Migration { version: 12, sql: include_str!("migrations/postgres/0012_symptom_monitoring.sql") },
    Migration { version: 13, sql: include_str!("migrations/postgres/0013_retention.sql") },
    Migration { version: 14, sql: include_str!("migrations/postgres/0014_group_sessions.sql") },
];

/// The schema version this binary brings a database to.
pub const LATEST_VERSION: i64 = 14;

/// A fixed advisory-lock key, so that nodes starting together migrate one
/// at a time.
const MIGRATION_LOCK: i64 = 0x7465_6c65_636f_6e73;

pub(super) async fn migrate(store: &Store) -> StoreResult<()> {
    let migrations = match store.backend {
        Backend::Sqlite => SQLITE,
        Backend::Postgres => POSTGRES,
    };
    let mut tx = store.begin_write().await?;
    if store.backend == Backend::Postgres {
        sqlx::query("SELECT 1 AS locked FROM pg_advisory_xact_lock($1)")
            .bind(MIGRATION_LOCK)
            .fetch_one(tx.conn())
            .await?;
    }
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)",
    )
    .execute(tx.conn())
    .await?;
    let applied: Vec<i64> = sqlx::query("SELECT version FROM schema_migrations")
        .fetch_all(tx.conn())
        .await?
        .iter()
        .map(|r| r.try_get::<i64, _>("version"))
        .collect::<Result<_, _>>()
        .map_err(|_| StoreError::Corrupt("schema_migrations.version"))?;
    if let Some(&found) = applied.iter().max()
        && found > LATEST_VERSION
    {
        return Err(StoreError::SchemaTooNew { found, supported: LATEST_VERSION });
    }
    for m in migrations {
        if applied.contains(&m.version) {
            continue;
        }
        sqlx::raw_sql(m.sql).execute(tx.conn()).await?;
        sqlx::query("INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)")
            .bind(m.version)
            .bind(crate::join_token::unix_now() as i64)
            .execute(tx.conn())
            .await?;
    }
    tx.commit().await
}

impl Store {
    /// The schema version now in force.
    pub async fn schema_version(&self) -> StoreResult<i64> {
        let row = self
            .retrying_query(|| sqlx::query("SELECT MAX(version) AS v FROM schema_migrations").fetch_one(self.pool()))
            .await?;
        Ok(row.try_get::<Option<i64>, _>("v").map_err(|_| StoreError::Corrupt("version"))?.unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_backends_end_at_the_latest_version() {
        assert_eq!(SQLITE.last().map(|m| m.version), Some(LATEST_VERSION));
        assert_eq!(POSTGRES.last().map(|m| m.version), Some(LATEST_VERSION));
        for list in [SQLITE, POSTGRES] {
            assert!(list.windows(2).all(|w| w[0].version < w[1].version), "versions ascend");
        }
    }
}
