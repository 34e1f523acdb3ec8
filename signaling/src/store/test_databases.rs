//! Throw-away databases, for tests and the load generator: a fresh SQLite
//! file, or a fresh database on the PostgreSQL server named by
//! `TELECONSULT_TEST_POSTGRES` (default `postgres://postgres@127.0.0.1:5432/postgres`).
//! Every name starts with `tc_test_`, so a test run can drop leftovers.

use sqlx::Connection;

use super::{StoreError, StoreResult};

/// The server-level URL test databases are created through.
pub fn postgres_admin_url() -> String {
    std::env::var("TELECONSULT_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_string())
}

fn unique_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!("{}_{}_{}", std::process::id(), rand::random::<u32>(), NEXT.fetch_add(1, Ordering::Relaxed))
}

/// A new SQLite file path under the system temp directory.
pub fn sqlite_file() -> String {
    std::env::temp_dir().join(format!("teleconsult-test-{}.db", unique_suffix())).to_string_lossy().into_owned()
}

/// Creates an empty PostgreSQL database and returns its URL.
pub async fn postgres() -> StoreResult<String> {
    sqlx::any::install_default_drivers();
    let admin = postgres_admin_url();
    let name = format!("tc_test_{}", unique_suffix());
    let mut conn = sqlx::AnyConnection::connect(&admin).await.map_err(|e| {
        StoreError::Unavailable(format!("cannot reach the test PostgreSQL at {}: {e}", super::redacted(&admin)))
    })?;
    // The name is ours (digits and underscores), never input.
    sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut conn).await?;
    let _ = conn.close().await;
    Ok(with_database(&admin, &name))
}

/// `url` with its database name replaced by `name`.
pub fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let authority_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let host_part = match base[authority_end..].find('/') {
        Some(i) => &base[..authority_end + i],
        None => base,
    };
    match query {
        Some(q) => format!("{host_part}/{name}?{q}"),
        None => format!("{host_part}/{name}"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn database_name_is_replaced() {
        assert_eq!(super::with_database("postgres://u@h:5432/postgres", "x"), "postgres://u@h:5432/x");
        assert_eq!(
            super::with_database("postgres://u:p@h/postgres?sslmode=disable", "x"),
            "postgres://u:p@h/x?sslmode=disable"
        );
        assert_eq!(super::with_database("postgres://h", "x"), "postgres://h/x");
    }
}
