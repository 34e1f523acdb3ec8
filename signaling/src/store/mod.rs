//! The durable store: one API over SQLite (one node, the default) or
//! PostgreSQL (several nodes).
//!
//! Every query in the product goes through this module. It is built on
//! sqlx's `Any` driver: the backend is chosen at run time from `--db`, and
//! one body of SQL serves both, because the dialect the product needs
//! (`$n` placeholders, `BIGINT` seconds, `TEXT` ids, `ON CONFLICT`,
//! `RETURNING`) is common to SQLite 3.35+ and PostgreSQL. Where the two must
//! differ, the difference is in the migrations (one folder per backend) or
//! behind [`Backend`] in a named method, never spread through callers.
//!
//! ## The rules live in the database
//! - **No overlapping visits.** On PostgreSQL an exclusion constraint over
//!   (clinician, time range); on SQLite a trigger. Every booking path gets
//!   [`StoreError::Overlap`] from the database itself.
//! - **Read-then-write happens under the write lock.** Multi-statement
//!   writes run in a [`WriteTx`], which on SQLite begins `IMMEDIATE` (the
//!   write lock is taken before the first read, so it never has to be
//!   upgraded) and on PostgreSQL takes per-clinician advisory locks where
//!   a calendar is read and then written. Single changes are one
//!   conditional statement (`UPDATE … WHERE … RETURNING`).
//! - **Busy is not broken.** A busy database (SQLite lock timeout,
//!   PostgreSQL serialization failure or deadlock, an exhausted pool) is
//!   retried with a bounded backoff by [`with_retries`]; only then is it
//!   reported, as [`StoreError::Busy`], which the API answers with 503 and
//!   `Retry-After`, never 500.
//!
//! The store is split by group of tables: [`accounts`](self) (staff,
//! sessions, calendar tokens), visits and links, follow-ups and
//! availability, the scheduler's outbox, the audit trail, reports, and
//! idempotency keys.

use std::future::Future;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions, AnyRow};
use sqlx::{Any, AnyPool, Row};

mod accounts;
mod audit;
mod follow_ups;
mod group_sessions;
mod idempotency;
mod migrations;
mod monitoring;
mod notifications;
mod outbox;
mod reports;
mod retention;
pub mod test_databases;
mod visits;

pub use accounts::{Clinician, RefreshToken, Rotation, Specialty, StaffRole};
pub use audit::AuditEvent;
pub use follow_ups::{FollowUp, FollowUpStatus, Priority};
pub use group_sessions::{ClassEnrolment, GroupSession};
pub use idempotency::{IdempotencyClaim, IdempotencyKey};
pub use migrations::LATEST_VERSION;
pub use monitoring::{CheckIn, Enrolment};
pub use notifications::Notification;
pub use outbox::{NewOutboxEntry, OutboxEntry};
pub use retention::{PurgeCounts, RetentionPolicy};
pub use visits::{Link, LinkRole, NewVisit, Patient, Visit, VisitKind, VisitStatus};

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The row does not exist.
    #[error("not found")]
    NotFound,
    /// A uniqueness rule was violated (e.g. an email already in use), or a
    /// conditional change found the row in another state.
    #[error("already exists, or changed meanwhile")]
    Conflict,
    /// The change would give a clinician two live visits at once.
    #[error("the clinician already has a visit at that time")]
    Overlap,
    /// The group session already holds its capacity of enrolled patients.
    #[error("the class is full")]
    ClassFull,
    /// The database stayed busy (locked, or a serialization failure) through
    /// every retry; try again shortly.
    #[error("the database is busy")]
    Busy,
    /// The database cannot be reached.
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    /// The database's schema is newer than this binary knows.
    #[error(
        "the database is at schema version {found}, newer than this binary supports ({supported}); \
         run a newer teleconsult, or restore a backup taken before the upgrade"
    )]
    SchemaTooNew {
        /// The version found.
        found: i64,
        /// The newest version this binary knows.
        supported: i64,
    },
    /// The `--db` setting is not a usable location.
    #[error("invalid database location: {0}")]
    BadLocation(String),
    /// A stored value did not decode (a bug or a hand-edited database).
    #[error("corrupt value in column {0}")]
    Corrupt(&'static str),
    /// The database failed in a way a retry will not mend.
    #[error("database error: {0}")]
    Database(String),
}

/// An error that a retry may mend (a busy database, not a broken one).
pub trait Transient {
    /// Whether a retry may succeed.
    fn is_transient(&self) -> bool;
}

impl Transient for StoreError {
    fn is_transient(&self) -> bool {
        matches!(self, StoreError::Busy)
    }
}

/// Set on every SQLite connection.
const SQLITE_PRAGMAS: &[&str] = &[
    "PRAGMA journal_mode = WAL",
    "PRAGMA synchronous = FULL",
    "PRAGMA foreign_keys = ON",
    "PRAGMA busy_timeout = 5000",
];

/// How many times [`with_retries`] tries a busy operation.
const RETRY_ATTEMPTS: u32 = 6;

/// Runs `op` until it succeeds, fails for good, or stays busy through
/// [`RETRY_ATTEMPTS`] tries with a growing, jittered backoff (about a
/// second and a half in all). `op` must be safe to run again: a
/// transaction that failed was rolled back.
pub async fn with_retries<T, E, F, Fut>(mut op: F) -> Result<T, E>
where
    E: Transient,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut delay = Duration::from_millis(10);
    let mut attempt = 1;
    loop {
        match op().await {
            Err(e) if e.is_transient() && attempt < RETRY_ATTEMPTS => {
                let jitter = Duration::from_millis(rand::random::<u64>() % (delay.as_millis() as u64 + 1));
                tokio::time::sleep(delay + jitter).await;
                delay = (delay * 3).min(Duration::from_millis(600));
                attempt += 1;
            }
            other => return other,
        }
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::RowNotFound => StoreError::NotFound,
            sqlx::Error::PoolTimedOut => StoreError::Busy,
            sqlx::Error::Io(io) => StoreError::Unavailable(io.to_string()),
            sqlx::Error::Tls(tls) => StoreError::Unavailable(tls.to_string()),
            sqlx::Error::PoolClosed => StoreError::Unavailable("the pool is closed".into()),
            sqlx::Error::Database(db) => {
                let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
                classify_database_error(&code, db.message(), db.is_unique_violation())
            }
            other => StoreError::Database(other.to_string()),
        }
    }
}

/// Sorts a database error by its code. SQLite reports extended result codes
/// as numbers; PostgreSQL reports SQLSTATEs.
fn classify_database_error(code: &str, message: &str, unique: bool) -> StoreError {
    if message.contains("visit_overlap") || code == "23P01" {
        return StoreError::Overlap;
    }
    if message.contains("class_full") {
        return StoreError::ClassFull;
    }
    if unique {
        return StoreError::Conflict;
    }
    let sqlite_primary = code.parse::<i32>().ok().map(|c| c & 0xff);
    // SQLITE_BUSY (5), SQLITE_LOCKED (6); PostgreSQL serialization failure,
    // deadlock, lock not available, too many connections.
    if matches!(sqlite_primary, Some(5 | 6)) || matches!(code, "40001" | "40P01" | "55P03" | "53300") {
        return StoreError::Busy;
    }
    // PostgreSQL connection exceptions and operator intervention (restart).
    if code.starts_with("08") || code.starts_with("57P") {
        return StoreError::Unavailable(message.to_string());
    }
    StoreError::Database(format!("{message} ({code})"))
}

/// Result of a store call.
pub type StoreResult<T> = Result<T, StoreError>;

/// Which database a store runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Backend {
    /// One file, one node.
    Sqlite,
    /// A server, shared by several nodes.
    Postgres,
}

impl Backend {
    /// `sqlite` or `postgres`.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// Connection-pool settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolSettings {
    /// Most open connections. `None`: 8 for SQLite, 16 for PostgreSQL.
    pub max_connections: Option<u32>,
    /// How long a request waits for a free connection before the store
    /// reports [`StoreError::Busy`].
    pub acquire_timeout: Duration,
}

impl Default for PoolSettings {
    fn default() -> Self {
        PoolSettings { max_connections: None, acquire_timeout: Duration::from_secs(10) }
    }
}

/// The store. Cheap to clone (the pool is shared).
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
}

/// Where `--db` points: a `postgres://` URL, a `sqlite:` URL, or a file path.
pub fn backend_of(location: &str) -> Backend {
    if location.starts_with("postgres://") || location.starts_with("postgresql://") {
        Backend::Postgres
    } else {
        Backend::Sqlite
    }
}

/// The location with any password removed, for logs and errors.
pub fn redacted(location: &str) -> String {
    match (backend_of(location), location.split_once("://")) {
        (Backend::Postgres, Some((scheme, rest))) => match rest.split_once('@') {
            Some((userinfo, host)) => {
                let user = userinfo.split(':').next().unwrap_or("");
                format!("{scheme}://{user}@{host}")
            }
            None => location.to_string(),
        },
        _ => location.to_string(),
    }
}

/// A SQLite URL for a file path (percent-encoding what a URL would misread).
fn sqlite_url(location: &str) -> String {
    if location.starts_with("sqlite:") {
        return location.to_string();
    }
    let mut encoded = String::with_capacity(location.len());
    for b in location.bytes() {
        match b {
            b'%' | b'?' | b'#' | b' ' => encoded.push_str(&format!("%{b:02X}")),
            _ => encoded.push(b as char),
        }
    }
    format!("sqlite://{encoded}?mode=rwc")
}

impl Store {
    /// Opens the database at `location` (see [`backend_of`]) with default
    /// pool settings, creating a SQLite file if needed, and migrates it.
    pub async fn open(location: &str) -> StoreResult<Store> {
        Store::open_with(location, PoolSettings::default()).await
    }

    /// Opens with the given pool settings.
    pub async fn open_with(location: &str, settings: PoolSettings) -> StoreResult<Store> {
        sqlx::any::install_default_drivers();
        let backend = backend_of(location);
        let url = match backend {
            Backend::Sqlite => sqlite_url(location),
            Backend::Postgres => location.to_string(),
        };
        let options: AnyConnectOptions =
            url.parse().map_err(|e: sqlx::Error| StoreError::BadLocation(format!("{}: {e}", redacted(location))))?;
        let max = settings.max_connections.unwrap_or(match backend {
            Backend::Sqlite => 8,
            Backend::Postgres => 16,
        });
        let pool = AnyPoolOptions::new()
            .max_connections(max.max(1))
            .acquire_timeout(settings.acquire_timeout)
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // WAL: readers never wait for the writer. FULL: a committed
                        // visit survives power loss. The busy timeout makes a writer
                        // wait for the lock instead of failing at once.
                        for pragma in SQLITE_PRAGMAS {
                            sqlx::Executor::execute(&mut *conn, *pragma).await?;
                        }
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await
            .map_err(|e| match StoreError::from(e) {
                StoreError::Database(m) => StoreError::Unavailable(m),
                other => other,
            })?;
        let store = Store { pool, backend };
        if backend == Backend::Sqlite {
            store.use_incremental_vacuum().await?;
        }
        store.retrying(|| migrations::migrate(&store)).await?;
        Ok(store)
    }

    /// Puts a SQLite file in incremental auto-vacuum mode (once: a file
    /// made before needs one full `VACUUM` to switch), so the retention
    /// purge can give freed pages back with `PRAGMA incremental_vacuum`.
    async fn use_incremental_vacuum(&self) -> StoreResult<()> {
        let mut conn = self.pool.acquire().await?;
        let mode: i64 = sqlx::query("PRAGMA auto_vacuum").fetch_one(&mut *conn).await?.try_get(0).unwrap_or(0);
        if mode != 2 {
            sqlx::Executor::execute(&mut *conn, "PRAGMA auto_vacuum = INCREMENTAL").await?;
            sqlx::Executor::execute(&mut *conn, "VACUUM").await?;
        }
        Ok(())
    }

    /// The backend in use.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Closes every connection (tests and shutdown).
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Whether the database answers (for readiness checks).
    pub async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1 AS one").fetch_one(&self.pool).await?;
        Ok(())
    }

    /// [`with_retries`] for a store operation.
    pub async fn retrying<T, F, Fut>(&self, op: F) -> StoreResult<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = StoreResult<T>>,
    {
        with_retries(op).await
    }

    /// [`with_retries`] for one sqlx query.
    async fn retrying_query<T, F, Fut>(&self, mut op: F) -> StoreResult<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, sqlx::Error>>,
    {
        with_retries(|| {
            let attempt = op();
            async move { attempt.await.map_err(StoreError::from) }
        })
        .await
    }

    /// Begins a write transaction. On SQLite it takes the write lock at
    /// once (`BEGIN IMMEDIATE`), so whatever it reads stays true until it
    /// commits; on PostgreSQL it is `READ COMMITTED`, and callers that read
    /// a calendar before writing it take [`WriteTx::lock_calendars`].
    pub async fn begin_write(&self) -> StoreResult<WriteTx> {
        let tx = match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.pool.begin().await?,
        };
        Ok(WriteTx { tx, backend: self.backend })
    }

    fn pool(&self) -> &AnyPool {
        &self.pool
    }
}

/// A write transaction (see [`Store::begin_write`]). Dropped without
/// [`commit`](WriteTx::commit), it rolls back.
pub struct WriteTx {
    tx: sqlx::Transaction<'static, Any>,
    backend: Backend,
}

impl std::fmt::Debug for WriteTx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteTx").field("backend", &self.backend).finish()
    }
}

impl WriteTx {
    /// Commits.
    pub async fn commit(self) -> StoreResult<()> {
        self.tx.commit().await?;
        Ok(())
    }

    /// Serialises calendar changes of these clinicians until commit. SQLite
    /// holds the database's write lock already; PostgreSQL takes one
    /// transaction-scoped advisory lock per clinician, in a fixed order so
    /// that two transactions never wait on each other. The exclusion
    /// constraint stays the guarantee; the lock only spares losers a retry.
    pub async fn lock_calendars(&mut self, clinician_ids: &[&str]) -> StoreResult<()> {
        self.advisory_locks(clinician_ids, 7).await
    }

    /// Serialises the creation of patients with these hospital numbers
    /// until commit (one patient per number), as
    /// [`lock_calendars`](WriteTx::lock_calendars) does for calendars.
    /// Taken after any calendar locks.
    pub async fn lock_hospital_numbers(&mut self, numbers: &[&str]) -> StoreResult<()> {
        self.advisory_locks(numbers, 11).await
    }

    /// PostgreSQL transaction-scoped advisory locks on `keys` hashed with
    /// `seed` (one seed per kind of key), in sorted order; nothing on SQLite.
    async fn advisory_locks(&mut self, keys: &[&str], seed: i64) -> StoreResult<()> {
        if self.backend != Backend::Postgres {
            return Ok(());
        }
        let mut keys: Vec<&str> = keys.to_vec();
        keys.sort_unstable();
        keys.dedup();
        for key in keys {
            sqlx::query("SELECT 1 AS locked FROM pg_advisory_xact_lock(hashtextextended($1, $2))")
                .bind(key)
                .bind(seed)
                .fetch_one(&mut *self.tx)
                .await?;
        }
        Ok(())
    }

    /// Marks a savepoint. A failed step can be undone alone with
    /// [`rollback_to`](WriteTx::rollback_to) and the transaction goes on (a
    /// partial import's bad row). Names come from callers' literals.
    pub async fn savepoint(&mut self, name: &'static str) -> StoreResult<()> {
        sqlx::query(&format!("SAVEPOINT {name}")).execute(&mut *self.tx).await?;
        Ok(())
    }

    /// Undoes everything since the savepoint `name`, keeping it.
    pub async fn rollback_to(&mut self, name: &'static str) -> StoreResult<()> {
        sqlx::query(&format!("ROLLBACK TO SAVEPOINT {name}")).execute(&mut *self.tx).await?;
        Ok(())
    }

    /// Forgets the savepoint `name`, keeping its changes.
    pub async fn release(&mut self, name: &'static str) -> StoreResult<()> {
        sqlx::query(&format!("RELEASE SAVEPOINT {name}")).execute(&mut *self.tx).await?;
        Ok(())
    }

    fn conn(&mut self) -> &mut sqlx::AnyConnection {
        &mut self.tx
    }
}

// ----- row decoding -----

fn opt_text(row: &AnyRow, col: &'static str) -> StoreResult<Option<String>> {
    row.try_get::<Option<String>, _>(col).map_err(|_| StoreError::Corrupt(col))
}

fn text(row: &AnyRow, col: &'static str) -> StoreResult<String> {
    row.try_get::<String, _>(col).map_err(|_| StoreError::Corrupt(col))
}

fn int(row: &AnyRow, col: &'static str) -> StoreResult<i64> {
    row.try_get::<i64, _>(col).map_err(|_| StoreError::Corrupt(col))
}

fn opt_int(row: &AnyRow, col: &'static str) -> StoreResult<Option<i64>> {
    row.try_get::<Option<i64>, _>(col).map_err(|_| StoreError::Corrupt(col))
}

fn parsed<T: std::str::FromStr>(row: &AnyRow, col: &'static str) -> StoreResult<T> {
    text(row, col)?.parse().map_err(|_| StoreError::Corrupt(col))
}

/// Defines a status-like enum stored as text: its wire and stored form,
/// parsing, and the list of every value.
macro_rules! text_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $text)] $variant),+
        }
        impl $name {
            /// The stored and wire form.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
            /// Every value.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
        }
        impl std::str::FromStr for $name {
            type Err = ();
            fn from_str(s: &str) -> Result<Self, ()> {
                match s { $($text => Ok($name::$variant),)+ _ => Err(()) }
            }
        }
    };
}
pub(crate) use text_enum;

#[cfg(test)]
mod tests;
