//! The durable store: clinicians, patients, visits, links, refresh tokens
//! and the audit trail.
//!
//! Every query in the product goes through this module. The SQL is kept
//! portable (`$n` placeholders, `BIGINT` Unix seconds, `TEXT` ids, no
//! `AUTOINCREMENT`, no upsert dialects) so that PostgreSQL can replace
//! SQLite for multi-node set-ups without touching callers. SQLite runs in
//! WAL mode with foreign keys on; migrations are versioned and applied at
//! start-up inside a transaction.

use std::path::Path;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous};
use sqlx::{Row, SqlitePool};

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The row does not exist.
    #[error("not found")]
    NotFound,
    /// A uniqueness rule was violated (e.g. an email already in use).
    #[error("already exists")]
    Conflict,
    /// A stored value did not decode (a bug or a hand-edited database).
    #[error("corrupt value in column {0}")]
    Corrupt(&'static str),
    /// The database failed.
    #[error("database error: {0}")]
    Database(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::RowNotFound => StoreError::NotFound,
            sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict,
            _ => StoreError::Database(e.to_string()),
        }
    }
}

/// Result of a store call.
pub type StoreResult<T> = Result<T, StoreError>;

/// Versioned schema migrations, applied in order. Never edit one that has
/// shipped; add a new one.
const MIGRATIONS: &[(i64, &str)] = &[
    (
        1,
        r#"
CREATE TABLE clinicians (
    id TEXT PRIMARY KEY,
    email TEXT NOT NULL UNIQUE,
    display_name TEXT NOT NULL,
    specialty TEXT NOT NULL,
    role TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    active BOOLEAN NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE TABLE patients (
    id TEXT PRIMARY KEY,
    display_name TEXT NOT NULL,
    hospital_id TEXT,
    contact TEXT,
    created_at BIGINT NOT NULL
);
CREATE TABLE visits (
    id TEXT PRIMARY KEY,
    patient_id TEXT NOT NULL REFERENCES patients(id),
    clinician_id TEXT NOT NULL REFERENCES clinicians(id),
    scheduled_start BIGINT NOT NULL,
    duration_minutes INTEGER NOT NULL,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    questionnaire TEXT,
    created_at BIGINT NOT NULL,
    started_at BIGINT,
    ended_at BIGINT,
    cancelled_at BIGINT
);
CREATE INDEX visits_by_clinician_and_start ON visits (clinician_id, scheduled_start);
CREATE TABLE links (
    id TEXT PRIMARY KEY,
    visit_id TEXT NOT NULL REFERENCES visits(id),
    role TEXT NOT NULL,
    label TEXT,
    token_hash TEXT NOT NULL UNIQUE,
    valid_from BIGINT NOT NULL,
    valid_until BIGINT NOT NULL,
    revoked_at BIGINT,
    created_at BIGINT NOT NULL
);
CREATE INDEX links_by_visit ON links (visit_id);
CREATE TABLE refresh_tokens (
    id TEXT PRIMARY KEY,
    clinician_id TEXT NOT NULL REFERENCES clinicians(id),
    family_id TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    expires_at BIGINT NOT NULL,
    used_at BIGINT,
    revoked_at BIGINT,
    created_at BIGINT NOT NULL
);
CREATE INDEX refresh_tokens_by_family ON refresh_tokens (family_id);
CREATE TABLE audit_events (
    id TEXT PRIMARY KEY,
    at BIGINT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    visit_id TEXT,
    detail TEXT
);
CREATE INDEX audit_events_by_visit ON audit_events (visit_id, at);
"#,
    ),
    (
        2,
        r#"
CREATE TABLE consultation_totals (
    week_start TEXT PRIMARY KEY,
    total BIGINT NOT NULL
);
CREATE INDEX audit_events_by_action ON audit_events (action, at);
CREATE INDEX visits_by_start ON visits (scheduled_start);
"#,
    ),
    (
        3,
        r#"
CREATE TABLE availability (
    clinician_id TEXT PRIMARY KEY REFERENCES clinicians(id),
    settings TEXT NOT NULL
);
CREATE TABLE follow_ups (
    id TEXT PRIMARY KEY,
    patient_id TEXT NOT NULL REFERENCES patients(id),
    from_visit_id TEXT NOT NULL REFERENCES visits(id),
    clinician_id TEXT NOT NULL REFERENCES clinicians(id),
    due_at BIGINT NOT NULL,
    duration_minutes INTEGER NOT NULL,
    reason TEXT NOT NULL,
    priority TEXT NOT NULL,
    status TEXT NOT NULL,
    visit_id TEXT REFERENCES visits(id),
    created_at BIGINT NOT NULL
);
CREATE INDEX follow_ups_by_clinician ON follow_ups (clinician_id, status, due_at);
"#,
    ),
    (
        4,
        r#"
ALTER TABLE visits ADD COLUMN provisioned_at BIGINT;
CREATE TABLE outbox (
    idempotency_key TEXT PRIMARY KEY,
    visit_id TEXT NOT NULL REFERENCES visits(id),
    kind TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    next_attempt_at BIGINT NOT NULL,
    attempts INTEGER NOT NULL,
    delivered_at BIGINT,
    last_error TEXT
);
CREATE INDEX outbox_due ON outbox (delivered_at, next_attempt_at);
CREATE TABLE calendar_tokens (
    clinician_id TEXT PRIMARY KEY REFERENCES clinicians(id),
    token_hash TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL
);
"#,
    ),
];

macro_rules! text_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
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
        impl FromStr for $name {
            type Err = ();
            fn from_str(s: &str) -> Result<Self, ()> {
                match s { $($text => Ok($name::$variant),)+ _ => Err(()) }
            }
        }
    };
}

text_enum!(
    /// What a clinician account may do.
    StaffRole {
        /// Sees and runs their own visits.
        Clinician = "clinician",
        /// Runs any visit and manages accounts.
        Admin = "admin",
        /// Sees metrics and the ops dashboard; no patient data.
        Ops = "ops",
    }
);

text_enum!(
    /// A clinician's specialty.
    Specialty {
        /// Medical oncologist.
        Oncologist = "oncologist",
        /// Surgeon.
        Surgeon = "surgeon",
        /// Radiotherapist.
        Radiotherapist = "radiotherapist",
        /// Psychologist.
        Psychologist = "psychologist",
        /// Social worker.
        SocialWorker = "social_worker",
        /// Nurse.
        Nurse = "nurse",
        /// Adapted-physical-activity teacher.
        ApaTeacher = "apa_teacher",
        /// Dietitian.
        Dietitian = "dietitian",
        /// Physician of another specialty.
        Physician = "physician",
        /// Anything else (including ops staff).
        Other = "other",
    }
);

text_enum!(
    /// Kind of visit.
    VisitKind {
        /// A follow-up consultation.
        FollowUp = "follow_up",
        /// A first consultation.
        First = "first",
        /// A group session (e.g. adapted physical activity).
        Group = "group",
    }
);

text_enum!(
    /// Where a visit is in its life.
    VisitStatus {
        /// Booked, not started.
        Scheduled = "scheduled",
        /// Started by its clinician; the room exists.
        InProgress = "in_progress",
        /// Ended.
        Completed = "completed",
        /// Cancelled; its links are revoked.
        Cancelled = "cancelled",
        /// The patient did not come.
        NoShow = "no_show",
    }
);

text_enum!(
    /// Who a link admits.
    LinkRole {
        /// The patient the visit is for.
        Patient = "patient",
        /// A family member or an interpreter.
        Guest = "guest",
    }
);

/// A staff account.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Clinician {
    /// Id (`c-…`).
    pub id: String,
    /// Login email (lower-case).
    pub email: String,
    /// Name shown to patients.
    pub display_name: String,
    /// Specialty.
    pub specialty: Specialty,
    /// Role.
    pub role: StaffRole,
    /// argon2id PHC string; never serialised.
    #[serde(skip)]
    pub password_hash: String,
    /// Whether the account may sign in.
    pub active: bool,
    /// Creation time (Unix seconds).
    pub created_at: i64,
}

/// A patient: as little personal data as the visit needs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Patient {
    /// Id (`pt-…`).
    pub id: String,
    /// Name shown to the clinician.
    pub display_name: String,
    /// The hospital's own patient number, if given.
    pub hospital_id: Option<String>,
    /// Phone or email for reminders, if given.
    pub contact: Option<String>,
    /// Creation time.
    pub created_at: i64,
}

/// A visit.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Visit {
    /// Id (`v-…`); also the id of its media room.
    pub id: String,
    /// The patient.
    pub patient_id: String,
    /// The clinician.
    pub clinician_id: String,
    /// Scheduled start (Unix seconds).
    pub scheduled_start: i64,
    /// Planned length.
    pub duration_minutes: i64,
    /// Kind.
    pub kind: VisitKind,
    /// Status.
    pub status: VisitStatus,
    /// The patient's symptom questionnaire (JSON), if answered.
    pub questionnaire: Option<serde_json::Value>,
    /// Creation time.
    pub created_at: i64,
    /// When the clinician started it.
    pub started_at: Option<i64>,
    /// When it ended.
    pub ended_at: Option<i64>,
    /// When it was cancelled.
    pub cancelled_at: Option<i64>,
}

impl Visit {
    /// Scheduled end (Unix seconds).
    pub fn scheduled_end(&self) -> i64 {
        self.scheduled_start + self.duration_minutes * 60
    }
}

/// A join link (the token itself is never stored, only its hash).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Link {
    /// Id (`l-…`).
    pub id: String,
    /// The visit it opens.
    pub visit_id: String,
    /// Patient or guest.
    pub role: LinkRole,
    /// Free label for guests ("interpreter").
    pub label: Option<String>,
    /// SHA-256 of the token, hex; never serialised.
    #[serde(skip)]
    pub token_hash: String,
    /// Valid from (Unix seconds).
    pub valid_from: i64,
    /// Valid until.
    pub valid_until: i64,
    /// When revoked, if it was.
    pub revoked_at: Option<i64>,
    /// Creation time.
    pub created_at: i64,
}

/// A refresh token record.
#[derive(Debug, Clone, PartialEq)]
pub struct RefreshToken {
    /// Id.
    pub id: String,
    /// Whose.
    pub clinician_id: String,
    /// Rotation family: every token rotated from one login.
    pub family_id: String,
    /// Expiry.
    pub expires_at: i64,
    /// When it was rotated (used), if it was.
    pub used_at: Option<i64>,
    /// When it was revoked, if it was.
    pub revoked_at: Option<i64>,
}

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

/// A follow-up booked from a visit.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FollowUp {
    /// Id (`f-…`).
    pub id: String,
    /// The patient.
    pub patient_id: String,
    /// The visit it was booked from.
    pub from_visit_id: String,
    /// Who will see the patient.
    pub clinician_id: String,
    /// When it is due (Unix seconds).
    pub due_at: i64,
    /// Planned length.
    pub duration_minutes: i64,
    /// Why (free text for the care team; never logged).
    pub reason: String,
    /// `routine`, `soon` or `urgent`.
    pub priority: String,
    /// `placed` (a visit was booked) or `unplaced` (waiting in the queue).
    pub status: String,
    /// The booked visit, when placed.
    pub visit_id: Option<String>,
}

/// What a new visit needs.
#[derive(Debug, Clone)]
pub struct NewVisit {
    /// Visit id.
    pub id: String,
    /// Patient id (existing, or created in the same transaction).
    pub patient_id: String,
    /// Clinician id.
    pub clinician_id: String,
    /// Start.
    pub scheduled_start: i64,
    /// Length.
    pub duration_minutes: i64,
    /// Kind.
    pub kind: VisitKind,
}

/// The store.
#[derive(Debug, Clone)]
pub struct Store {
    pool: SqlitePool,
}

fn opt_text(row: &SqliteRow, col: &'static str) -> StoreResult<Option<String>> {
    row.try_get::<Option<String>, _>(col).map_err(|_| StoreError::Corrupt(col))
}

fn text(row: &SqliteRow, col: &'static str) -> StoreResult<String> {
    row.try_get::<String, _>(col).map_err(|_| StoreError::Corrupt(col))
}

fn int(row: &SqliteRow, col: &'static str) -> StoreResult<i64> {
    row.try_get::<i64, _>(col).map_err(|_| StoreError::Corrupt(col))
}

fn opt_int(row: &SqliteRow, col: &'static str) -> StoreResult<Option<i64>> {
    row.try_get::<Option<i64>, _>(col).map_err(|_| StoreError::Corrupt(col))
}

fn parsed<T: FromStr>(row: &SqliteRow, col: &'static str) -> StoreResult<T> {
    text(row, col)?.parse().map_err(|_| StoreError::Corrupt(col))
}

fn clinician_from(row: &SqliteRow) -> StoreResult<Clinician> {
    Ok(Clinician {
        id: text(row, "id")?,
        email: text(row, "email")?,
        display_name: text(row, "display_name")?,
        specialty: parsed(row, "specialty")?,
        role: parsed(row, "role")?,
        password_hash: text(row, "password_hash")?,
        active: row.try_get::<bool, _>("active").map_err(|_| StoreError::Corrupt("active"))?,
        created_at: int(row, "created_at")?,
    })
}

fn patient_from(row: &SqliteRow) -> StoreResult<Patient> {
    Ok(Patient {
        id: text(row, "id")?,
        display_name: text(row, "display_name")?,
        hospital_id: opt_text(row, "hospital_id")?,
        contact: opt_text(row, "contact")?,
        created_at: int(row, "created_at")?,
    })
}

fn visit_from(row: &SqliteRow) -> StoreResult<Visit> {
    let questionnaire = match opt_text(row, "questionnaire")? {
        Some(q) => Some(serde_json::from_str(&q).map_err(|_| StoreError::Corrupt("questionnaire"))?),
        None => None,
    };
    Ok(Visit {
        id: text(row, "id")?,
        patient_id: text(row, "patient_id")?,
        clinician_id: text(row, "clinician_id")?,
        scheduled_start: int(row, "scheduled_start")?,
        duration_minutes: int(row, "duration_minutes")?,
        kind: parsed(row, "kind")?,
        status: parsed(row, "status")?,
        questionnaire,
        created_at: int(row, "created_at")?,
        started_at: opt_int(row, "started_at")?,
        ended_at: opt_int(row, "ended_at")?,
        cancelled_at: opt_int(row, "cancelled_at")?,
    })
}

fn follow_up_from(r: &SqliteRow) -> StoreResult<FollowUp> {
    Ok(FollowUp {
        id: text(r, "id")?,
        patient_id: text(r, "patient_id")?,
        from_visit_id: text(r, "from_visit_id")?,
        clinician_id: text(r, "clinician_id")?,
        due_at: int(r, "due_at")?,
        duration_minutes: int(r, "duration_minutes")?,
        reason: text(r, "reason")?,
        priority: text(r, "priority")?,
        status: text(r, "status")?,
        visit_id: opt_text(r, "visit_id")?,
    })
}

/// Cancels the visit a follow-up placed, if any, revoking its links.
async fn cancel_follow_up_visit(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    follow_up_id: &str,
    now: i64,
) -> StoreResult<()> {
    let visit: Option<String> = sqlx::query("SELECT visit_id FROM follow_ups WHERE id = $1")
        .bind(follow_up_id)
        .fetch_optional(&mut **tx)
        .await?
        .ok_or(StoreError::NotFound)?
        .try_get("visit_id")
        .map_err(|_| StoreError::Corrupt("visit_id"))?;
    if let Some(visit) = visit {
        sqlx::query("UPDATE visits SET status = $1, cancelled_at = $2 WHERE id = $3 AND status = $4")
            .bind(VisitStatus::Cancelled.as_str())
            .bind(now)
            .bind(&visit)
            .bind(VisitStatus::Scheduled.as_str())
            .execute(&mut **tx)
            .await?;
        sqlx::query("UPDATE links SET revoked_at = $1 WHERE visit_id = $2 AND revoked_at IS NULL")
            .bind(now)
            .bind(&visit)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

fn link_from(row: &SqliteRow) -> StoreResult<Link> {
    Ok(Link {
        id: text(row, "id")?,
        visit_id: text(row, "visit_id")?,
        role: parsed(row, "role")?,
        label: opt_text(row, "label")?,
        token_hash: text(row, "token_hash")?,
        valid_from: int(row, "valid_from")?,
        valid_until: int(row, "valid_until")?,
        revoked_at: opt_int(row, "revoked_at")?,
        created_at: int(row, "created_at")?,
    })
}

const VISIT_COLUMNS: &str = "id, patient_id, clinician_id, scheduled_start, duration_minutes, kind, status, \
     questionnaire, created_at, started_at, ended_at, cancelled_at";

impl Store {
    /// Opens (creating if needed) the SQLite file at `path` and migrates it.
    pub async fn open(path: &Path) -> StoreResult<Store> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: a committed visit survives power loss, not just a crash.
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(std::time::Duration::from_secs(5));
        let pool = SqlitePoolOptions::new().max_connections(4).connect_with(options).await?;
        let store = Store { pool };
        store.migrate().await?;
        Ok(store)
    }

    async fn migrate(&self) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)",
        )
        .execute(&mut *tx)
        .await?;
        let current: Option<i64> = sqlx::query("SELECT MAX(version) AS v FROM schema_migrations")
            .fetch_one(&mut *tx)
            .await?
            .try_get("v")
            .map_err(|_| StoreError::Corrupt("version"))?;
        for (version, sql) in MIGRATIONS {
            if current.is_some_and(|c| c >= *version) {
                continue;
            }
            sqlx::raw_sql(sql).execute(&mut *tx).await?;
            sqlx::query("INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)")
                .bind(version)
                .bind(crate::join_token::unix_now() as i64)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The schema version now in force.
    pub async fn schema_version(&self) -> StoreResult<i64> {
        let row = sqlx::query("SELECT MAX(version) AS v FROM schema_migrations").fetch_one(&self.pool).await?;
        Ok(row.try_get::<Option<i64>, _>("v").map_err(|_| StoreError::Corrupt("version"))?.unwrap_or(0))
    }

    // ----- clinicians -----

    /// Inserts a clinician. `Conflict` if the email is taken.
    pub async fn insert_clinician(&self, c: &Clinician) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO clinicians (id, email, display_name, specialty, role, password_hash, active, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&c.id)
        .bind(&c.email)
        .bind(&c.display_name)
        .bind(c.specialty.as_str())
        .bind(c.role.as_str())
        .bind(&c.password_hash)
        .bind(c.active)
        .bind(c.created_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A clinician by email (already lower-cased by the caller).
    pub async fn clinician_by_email(&self, email: &str) -> StoreResult<Option<Clinician>> {
        let row =
            sqlx::query("SELECT * FROM clinicians WHERE email = $1").bind(email).fetch_optional(&self.pool).await?;
        row.as_ref().map(clinician_from).transpose()
    }

    /// A clinician by id.
    pub async fn clinician_by_id(&self, id: &str) -> StoreResult<Option<Clinician>> {
        let row = sqlx::query("SELECT * FROM clinicians WHERE id = $1").bind(id).fetch_optional(&self.pool).await?;
        row.as_ref().map(clinician_from).transpose()
    }

    /// Every clinician, by email.
    pub async fn list_clinicians(&self) -> StoreResult<Vec<Clinician>> {
        let rows = sqlx::query("SELECT * FROM clinicians ORDER BY email").fetch_all(&self.pool).await?;
        rows.iter().map(clinician_from).collect()
    }

    /// Enables or disables an account. Disabling also revokes its refresh tokens.
    pub async fn set_clinician_active(&self, id: &str, active: bool, now: i64) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query("UPDATE clinicians SET active = $1 WHERE id = $2")
            .bind(active)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        if !active {
            sqlx::query("UPDATE refresh_tokens SET revoked_at = $1 WHERE clinician_id = $2 AND revoked_at IS NULL")
                .bind(now)
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Replaces a password hash and revokes every refresh token of the account.
    pub async fn set_password_hash(&self, id: &str, hash: &str, now: i64) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query("UPDATE clinicians SET password_hash = $1 WHERE id = $2")
            .bind(hash)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        sqlx::query("UPDATE refresh_tokens SET revoked_at = $1 WHERE clinician_id = $2 AND revoked_at IS NULL")
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    // ----- patients -----

    /// A patient by id.
    pub async fn patient_by_id(&self, id: &str) -> StoreResult<Option<Patient>> {
        let row = sqlx::query("SELECT * FROM patients WHERE id = $1").bind(id).fetch_optional(&self.pool).await?;
        row.as_ref().map(patient_from).transpose()
    }

    /// Whether `clinician_id` has (had) a visit with `patient_id`.
    pub async fn patient_seen_by(&self, patient_id: &str, clinician_id: &str) -> StoreResult<bool> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM visits WHERE patient_id = $1 AND clinician_id = $2")
            .bind(patient_id)
            .bind(clinician_id)
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get::<i64, _>("n").map_err(|_| StoreError::Corrupt("n"))? > 0)
    }

    /// (scheduled start, status) of every visit starting in `[from, to)`.
    pub async fn visit_times_and_statuses(&self, from: i64, to: i64) -> StoreResult<Vec<(i64, String)>> {
        let rows = sqlx::query(
            "SELECT scheduled_start, status FROM visits WHERE scheduled_start >= $1 AND scheduled_start < $2",
        )
        .bind(from)
        .bind(to)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok((int(r, "scheduled_start")?, text(r, "status")?))).collect()
    }

    /// Waiting-room times (seconds) of admissions in `[from, to)`, from the
    /// audit trail.
    pub async fn admission_waits(&self, from: i64, to: i64) -> StoreResult<Vec<i64>> {
        let rows = sqlx::query("SELECT detail FROM audit_events WHERE action = $1 AND at >= $2 AND at < $3")
            .bind("admitted")
            .bind(from)
            .bind(to)
            .fetch_all(&self.pool)
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
        let row = sqlx::query("SELECT total FROM consultation_totals WHERE week_start = $1")
            .bind(week_start)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(|r| int(r, "total")).transpose()
    }

    /// Records (or replaces) a week's total of consultations.
    pub async fn set_consultation_total(&self, week_start: &str, total: i64) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM consultation_totals WHERE week_start = $1").bind(week_start).execute(&mut *tx).await?;
        sqlx::query("INSERT INTO consultation_totals (week_start, total) VALUES ($1, $2)")
            .bind(week_start)
            .bind(total)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Visits in each final status (completed, no_show, cancelled).
    pub async fn finished_visit_counts(&self) -> StoreResult<Vec<(String, i64)>> {
        let rows = sqlx::query("SELECT status, COUNT(*) AS n FROM visits WHERE status IN ($1, $2, $3) GROUP BY status")
            .bind(VisitStatus::Completed.as_str())
            .bind(VisitStatus::NoShow.as_str())
            .bind(VisitStatus::Cancelled.as_str())
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| Ok((text(r, "status")?, int(r, "n")?))).collect()
    }

    // ----- the scheduler's background work -----

    /// Visits in `status` whose start lies in `[from, to)`.
    pub async fn visits_starting(&self, status: VisitStatus, from: i64, to: i64) -> StoreResult<Vec<Visit>> {
        let rows = sqlx::query(&format!(
            "SELECT {VISIT_COLUMNS} FROM visits WHERE status = $1 AND scheduled_start >= $2 AND scheduled_start < $3 ORDER BY scheduled_start, id"
        ))
        .bind(status.as_str())
        .bind(from)
        .bind(to)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(visit_from).collect()
    }

    /// Scheduled visits starting before `until` whose room is not provisioned.
    pub async fn visits_to_provision(&self, now: i64, until: i64) -> StoreResult<Vec<String>> {
        let rows = sqlx::query(
            "SELECT id FROM visits WHERE status = $1 AND provisioned_at IS NULL AND scheduled_start < $2 \
             AND scheduled_start + duration_minutes * 60 > $3",
        )
        .bind(VisitStatus::Scheduled.as_str())
        .bind(until)
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| text(r, "id")).collect()
    }

    /// Marks a visit's room provisioned, with an audit event.
    pub async fn mark_provisioned(&self, visit_id: &str, now: i64, audit: &AuditEvent) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE visits SET provisioned_at = $1 WHERE id = $2 AND provisioned_at IS NULL")
            .bind(now)
            .bind(visit_id)
            .execute(&mut *tx)
            .await?;
        insert_audit(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Queues a reminder once: a second call with the same key does nothing.
    /// Returns whether it was queued now.
    pub async fn enqueue_reminder(&self, key: &str, visit_id: &str, kind: &str, now: i64) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await?;
        let exists = sqlx::query("SELECT 1 AS one FROM outbox WHERE idempotency_key = $1")
            .bind(key)
            .fetch_optional(&mut *tx)
            .await?
            .is_some();
        if !exists {
            sqlx::query(
                "INSERT INTO outbox (idempotency_key, visit_id, kind, created_at, next_attempt_at, attempts) VALUES ($1, $2, $3, $4, $4, 0)",
            )
            .bind(key)
            .bind(visit_id)
            .bind(kind)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(!exists)
    }

    /// Undelivered outbox entries due at `now`: (key, visit id, kind, attempts).
    pub async fn due_outbox(&self, now: i64, limit: i64) -> StoreResult<Vec<(String, String, String, i64)>> {
        let rows = sqlx::query(
            "SELECT idempotency_key, visit_id, kind, attempts FROM outbox WHERE delivered_at IS NULL AND next_attempt_at <= $1 \
             ORDER BY next_attempt_at LIMIT $2",
        )
        .bind(now)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((text(r, "idempotency_key")?, text(r, "visit_id")?, text(r, "kind")?, int(r, "attempts")?)))
            .collect()
    }

    /// Records a delivery attempt: delivered, or failed and retried at `retry_at`.
    pub async fn outbox_attempted(&self, key: &str, now: i64, outcome: Result<(), (String, i64)>) -> StoreResult<()> {
        match outcome {
            Ok(()) => {
                sqlx::query("UPDATE outbox SET delivered_at = $1, attempts = attempts + 1, last_error = NULL WHERE idempotency_key = $2")
                    .bind(now)
                    .bind(key)
                    .execute(&self.pool)
                    .await?;
            }
            Err((error, retry_at)) => {
                sqlx::query("UPDATE outbox SET attempts = attempts + 1, last_error = $1, next_attempt_at = $2 WHERE idempotency_key = $3")
                    .bind(error)
                    .bind(retry_at)
                    .bind(key)
                    .execute(&self.pool)
                    .await?;
            }
        }
        Ok(())
    }

    /// Outbox entries: (key, delivered?, attempts), for tests and operators.
    pub async fn outbox_entries(&self) -> StoreResult<Vec<(String, bool, i64)>> {
        let rows = sqlx::query("SELECT idempotency_key, delivered_at, attempts FROM outbox ORDER BY idempotency_key")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok((text(r, "idempotency_key")?, opt_int(r, "delivered_at")?.is_some(), int(r, "attempts")?)))
            .collect()
    }

    /// Whether the patient of a visit ever joined it (from the audit trail).
    pub async fn patient_joined(&self, visit_id: &str) -> StoreResult<bool> {
        let rows = sqlx::query("SELECT detail FROM audit_events WHERE visit_id = $1 AND action = $2")
            .bind(visit_id)
            .bind("joined")
            .fetch_all(&self.pool)
            .await?;
        let mut joined = false;
        for r in &rows {
            if opt_text(r, "detail")?.is_some_and(|d| d.ends_with(" patient")) {
                joined = true;
            }
        }
        Ok(joined)
    }

    /// After a no-show: the follow-up that booked the visit goes back to the
    /// queue as unplaced; a visit booked otherwise gets a new unplaced
    /// follow-up. One transaction with the status change.
    pub async fn mark_no_show(&self, visit: &Visit, now: i64, audit: &AuditEvent) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query("UPDATE visits SET status = $1, ended_at = $2 WHERE id = $3 AND status = $4")
            .bind(VisitStatus::NoShow.as_str())
            .bind(now)
            .bind(&visit.id)
            .bind(VisitStatus::Scheduled.as_str())
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Ok(());
        }
        let requeued = sqlx::query("UPDATE follow_ups SET status = $1, visit_id = NULL WHERE visit_id = $2")
            .bind("unplaced")
            .bind(&visit.id)
            .execute(&mut *tx)
            .await?;
        if requeued.rows_affected() == 0 {
            sqlx::query(
                "INSERT INTO follow_ups (id, patient_id, from_visit_id, clinician_id, due_at, duration_minutes, reason, priority, status, visit_id, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, NULL, $10)",
            )
            .bind(crate::secret::random_id("f"))
            .bind(&visit.patient_id)
            .bind(&visit.id)
            .bind(&visit.clinician_id)
            .bind(now)
            .bind(visit.duration_minutes)
            .bind("missed visit")
            .bind("soon")
            .bind("unplaced")
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        insert_audit(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Raises every open follow-up of a patient to `urgent`; returns how many.
    pub async fn prioritise_follow_ups(&self, patient_id: &str) -> StoreResult<u64> {
        let done = sqlx::query(
            "UPDATE follow_ups SET priority = $1 WHERE patient_id = $2 AND status <> $3 AND priority <> $1",
        )
        .bind("urgent")
        .bind(patient_id)
        .bind("cancelled")
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// Sets (replacing) a clinician's calendar-feed token hash; `None` revokes.
    pub async fn set_calendar_token(&self, clinician_id: &str, token_hash: Option<&str>, now: i64) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM calendar_tokens WHERE clinician_id = $1").bind(clinician_id).execute(&mut *tx).await?;
        if let Some(hash) = token_hash {
            sqlx::query("INSERT INTO calendar_tokens (clinician_id, token_hash, created_at) VALUES ($1, $2, $3)")
                .bind(clinician_id)
                .bind(hash)
                .bind(now)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The clinician a calendar token belongs to.
    pub async fn calendar_owner(&self, token_hash: &str) -> StoreResult<Option<String>> {
        let row = sqlx::query("SELECT clinician_id FROM calendar_tokens WHERE token_hash = $1")
            .bind(token_hash)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(|r| text(r, "clinician_id")).transpose()
    }

    // ----- availability and follow-ups -----

    /// A clinician's availability, if set.
    pub async fn availability_of(
        &self,
        clinician_id: &str,
    ) -> StoreResult<Option<crate::follow_up_placement::Availability>> {
        let row = sqlx::query("SELECT settings FROM availability WHERE clinician_id = $1")
            .bind(clinician_id)
            .fetch_optional(&self.pool)
            .await?;
        match row {
            Some(r) => {
                Ok(Some(serde_json::from_str(&text(&r, "settings")?).map_err(|_| StoreError::Corrupt("settings"))?))
            }
            None => Ok(None),
        }
    }

    /// Sets (replaces) a clinician's availability.
    pub async fn set_availability(
        &self,
        clinician_id: &str,
        a: &crate::follow_up_placement::Availability,
    ) -> StoreResult<()> {
        let json = serde_json::to_string(a).map_err(|e| StoreError::Database(e.to_string()))?;
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM availability WHERE clinician_id = $1").bind(clinician_id).execute(&mut *tx).await?;
        sqlx::query("INSERT INTO availability (clinician_id, settings) VALUES ($1, $2)")
            .bind(clinician_id)
            .bind(json)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// `[start, end)` of a clinician's live visits (scheduled or in progress)
    /// that overlap `[from, to)`.
    pub async fn busy_intervals(&self, clinician_id: &str, from: i64, to: i64) -> StoreResult<Vec<(i64, i64)>> {
        let rows = sqlx::query(
            "SELECT scheduled_start, duration_minutes FROM visits WHERE clinician_id = $1 AND status IN ($2, $3) \
             AND scheduled_start < $4 AND scheduled_start + duration_minutes * 60 > $5",
        )
        .bind(clinician_id)
        .bind(VisitStatus::Scheduled.as_str())
        .bind(VisitStatus::InProgress.as_str())
        .bind(to)
        .bind(from)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let s = int(r, "scheduled_start")?;
                Ok((s, s + int(r, "duration_minutes")? * 60))
            })
            .collect()
    }

    /// Records a follow-up, with its visit and link when it was placed, in
    /// one transaction.
    pub async fn create_follow_up(
        &self,
        f: &FollowUp,
        placed: Option<(&NewVisit, &Link)>,
        audit: &AuditEvent,
        now: i64,
    ) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        if let Some((visit, link)) = placed {
            insert_visit_row(&mut tx, visit, now).await?;
            insert_link(&mut tx, link).await?;
        }
        sqlx::query(
            "INSERT INTO follow_ups (id, patient_id, from_visit_id, clinician_id, due_at, duration_minutes, reason, priority, status, visit_id, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(&f.id)
        .bind(&f.patient_id)
        .bind(&f.from_visit_id)
        .bind(&f.clinician_id)
        .bind(f.due_at)
        .bind(f.duration_minutes)
        .bind(&f.reason)
        .bind(&f.priority)
        .bind(&f.status)
        .bind(&f.visit_id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        insert_audit(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    /// A clinician's open follow-ups (unplaced, or placed and still ahead).
    pub async fn follow_up_queue(&self, clinician_id: &str) -> StoreResult<Vec<FollowUp>> {
        let rows = sqlx::query("SELECT * FROM follow_ups WHERE clinician_id = $1 AND status <> $2 ORDER BY due_at, id")
            .bind(clinician_id)
            .bind("cancelled")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(follow_up_from).collect()
    }

    /// The open follow-ups of every clinician of a specialty (a service).
    pub async fn follow_up_queue_of_specialty(&self, specialty: Specialty) -> StoreResult<Vec<FollowUp>> {
        let rows = sqlx::query(
            "SELECT f.* FROM follow_ups f JOIN clinicians c ON c.id = f.clinician_id WHERE c.specialty = $1 AND f.status <> $2 \
             ORDER BY f.due_at, f.id",
        )
        .bind(specialty.as_str())
        .bind("cancelled")
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(follow_up_from).collect()
    }

    /// A follow-up by id.
    pub async fn follow_up_by_id(&self, id: &str) -> StoreResult<Option<FollowUp>> {
        let row = sqlx::query("SELECT * FROM follow_ups WHERE id = $1").bind(id).fetch_optional(&self.pool).await?;
        row.as_ref().map(follow_up_from).transpose()
    }

    /// Re-assigns a follow-up, in one transaction: its old visit (if any) is
    /// cancelled with its links revoked, and the new visit (if placed) and
    /// link are created.
    pub async fn reassign_follow_up(
        &self,
        id: &str,
        clinician_id: &str,
        placed: Option<(&NewVisit, &Link)>,
        audit: &AuditEvent,
        now: i64,
    ) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        cancel_follow_up_visit(&mut tx, id, now).await?;
        if let Some((visit, link)) = placed {
            insert_visit_row(&mut tx, visit, now).await?;
            insert_link(&mut tx, link).await?;
        }
        sqlx::query("UPDATE follow_ups SET clinician_id = $1, status = $2, visit_id = $3 WHERE id = $4")
            .bind(clinician_id)
            .bind(if placed.is_some() { "placed" } else { "unplaced" })
            .bind(placed.map(|(v, _)| v.id.clone()))
            .bind(id)
            .execute(&mut *tx)
            .await?;
        insert_audit(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Cancels a follow-up and, if it was placed, its visit (revoking the links).
    pub async fn cancel_follow_up(&self, id: &str, audit: &AuditEvent, now: i64) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        cancel_follow_up_visit(&mut tx, id, now).await?;
        sqlx::query("UPDATE follow_ups SET status = $1 WHERE id = $2")
            .bind("cancelled")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        insert_audit(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    // ----- visits and links -----

    /// Creates a visit, its patient link, and (when `new_patient` is given)
    /// the patient, in one transaction, with an audit event.
    pub async fn create_visit(
        &self,
        new_patient: Option<&Patient>,
        visit: &NewVisit,
        link: &Link,
        audit: &AuditEvent,
        now: i64,
    ) -> StoreResult<Visit> {
        let mut tx = self.pool.begin().await?;
        insert_visit_rows(&mut tx, new_patient, visit, link, audit, now).await?;
        tx.commit().await?;
        self.visit_by_id(&visit.id).await?.ok_or(StoreError::NotFound)
    }

    /// Creates many visits (each with a new patient, a link and an audit
    /// event) in one transaction: all or nothing.
    pub async fn create_visits(&self, batch: &[(Patient, NewVisit, Link, AuditEvent)], now: i64) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        for (patient, visit, link, audit) in batch {
            insert_visit_rows(&mut tx, Some(patient), visit, link, audit, now).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// A visit by id.
    pub async fn visit_by_id(&self, id: &str) -> StoreResult<Option<Visit>> {
        let row = sqlx::query(&format!("SELECT {VISIT_COLUMNS} FROM visits WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(visit_from).transpose()
    }

    /// A clinician's visits starting in `[from, to)`, by start time.
    pub async fn visits_of_clinician(&self, clinician_id: &str, from: i64, to: i64) -> StoreResult<Vec<Visit>> {
        let rows = sqlx::query(&format!(
            "SELECT {VISIT_COLUMNS} FROM visits WHERE clinician_id = $1 AND scheduled_start >= $2 AND scheduled_start < $3 \
             ORDER BY scheduled_start, id"
        ))
        .bind(clinician_id)
        .bind(from)
        .bind(to)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(visit_from).collect()
    }

    /// Moves a visit and every unrevoked link's window with it, atomically.
    pub async fn reschedule_visit(
        &self,
        id: &str,
        scheduled_start: i64,
        duration_minutes: i64,
        link_window: (i64, i64),
        audit: &AuditEvent,
    ) -> StoreResult<Visit> {
        let mut tx = self.pool.begin().await?;
        let done =
            sqlx::query("UPDATE visits SET scheduled_start = $1, duration_minutes = $2 WHERE id = $3 AND status = $4")
                .bind(scheduled_start)
                .bind(duration_minutes)
                .bind(id)
                .bind(VisitStatus::Scheduled.as_str())
                .execute(&mut *tx)
                .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        sqlx::query("UPDATE links SET valid_from = $1, valid_until = $2 WHERE visit_id = $3 AND revoked_at IS NULL")
            .bind(link_window.0)
            .bind(link_window.1)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        insert_audit(&mut tx, audit).await?;
        tx.commit().await?;
        self.visit_by_id(id).await?.ok_or(StoreError::NotFound)
    }

    /// Moves a visit from one of `from` statuses to `to`, stamping the
    /// matching time column, with an audit event. Cancelling also revokes
    /// the visit's links. `NotFound` if the visit is not in one of `from`.
    pub async fn transition_visit(
        &self,
        id: &str,
        from: &[VisitStatus],
        to: VisitStatus,
        now: i64,
        audit: &AuditEvent,
    ) -> StoreResult<Visit> {
        let stamp = match to {
            VisitStatus::InProgress => "started_at",
            VisitStatus::Completed | VisitStatus::NoShow => "ended_at",
            VisitStatus::Cancelled => "cancelled_at",
            VisitStatus::Scheduled => "created_at",
        };
        let mut tx = self.pool.begin().await?;
        let current: Option<String> = sqlx::query("SELECT status FROM visits WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?
            .map(|r| r.try_get("status"))
            .transpose()
            .map_err(|_| StoreError::Corrupt("status"))?;
        let current: VisitStatus =
            current.ok_or(StoreError::NotFound)?.parse().map_err(|_| StoreError::Corrupt("status"))?;
        if !from.contains(&current) {
            return Err(StoreError::Conflict);
        }
        // The stamp column is chosen from a fixed set above, never from input.
        let sql = if to == VisitStatus::InProgress {
            format!("UPDATE visits SET status = $1, {stamp} = COALESCE({stamp}, $2) WHERE id = $3")
        } else {
            format!("UPDATE visits SET status = $1, {stamp} = $2 WHERE id = $3")
        };
        sqlx::query(&sql).bind(to.as_str()).bind(now).bind(id).execute(&mut *tx).await?;
        if to == VisitStatus::Cancelled {
            sqlx::query("UPDATE links SET revoked_at = $1 WHERE visit_id = $2 AND revoked_at IS NULL")
                .bind(now)
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        insert_audit(&mut tx, audit).await?;
        tx.commit().await?;
        self.visit_by_id(id).await?.ok_or(StoreError::NotFound)
    }

    /// Stores the questionnaire answers (JSON) of a visit.
    pub async fn set_questionnaire(&self, visit_id: &str, answers: &serde_json::Value) -> StoreResult<()> {
        let done = sqlx::query("UPDATE visits SET questionnaire = $1 WHERE id = $2")
            .bind(answers.to_string())
            .bind(visit_id)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 { Err(StoreError::NotFound) } else { Ok(()) }
    }

    /// Adds a link (e.g. a guest link), with an audit event.
    pub async fn insert_link(&self, link: &Link, audit: &AuditEvent) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        insert_link(&mut tx, link).await?;
        insert_audit(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    /// A link by its token hash.
    pub async fn link_by_token_hash(&self, hash: &str) -> StoreResult<Option<Link>> {
        let row =
            sqlx::query("SELECT * FROM links WHERE token_hash = $1").bind(hash).fetch_optional(&self.pool).await?;
        row.as_ref().map(link_from).transpose()
    }

    /// The links of a visit.
    pub async fn links_of_visit(&self, visit_id: &str) -> StoreResult<Vec<Link>> {
        let rows = sqlx::query("SELECT * FROM links WHERE visit_id = $1 ORDER BY created_at, id")
            .bind(visit_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(link_from).collect()
    }

    // ----- refresh tokens -----

    /// Stores a new refresh token.
    pub async fn insert_refresh_token(&self, t: &RefreshToken, token_hash: &str, now: i64) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO refresh_tokens (id, clinician_id, family_id, token_hash, expires_at, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&t.id)
        .bind(&t.clinician_id)
        .bind(&t.family_id)
        .bind(token_hash)
        .bind(t.expires_at)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Rotates a refresh token: marks it used and stores its successor, in
    /// one transaction, only if it was unused and unrevoked. Returns the old
    /// record; `Conflict` if it had already been used or revoked (a replay),
    /// in which case the whole family is revoked.
    pub async fn rotate_refresh_token(
        &self,
        old_hash: &str,
        new: &RefreshToken,
        new_hash: &str,
        now: i64,
    ) -> StoreResult<RefreshToken> {
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query("SELECT * FROM refresh_tokens WHERE token_hash = $1")
            .bind(old_hash)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(StoreError::NotFound)?;
        let old = RefreshToken {
            id: text(&row, "id")?,
            clinician_id: text(&row, "clinician_id")?,
            family_id: text(&row, "family_id")?,
            expires_at: int(&row, "expires_at")?,
            used_at: opt_int(&row, "used_at")?,
            revoked_at: opt_int(&row, "revoked_at")?,
        };
        if old.used_at.is_some() || old.revoked_at.is_some() {
            // Reuse of a rotated token means it leaked: end the whole family.
            sqlx::query("UPDATE refresh_tokens SET revoked_at = $1 WHERE family_id = $2 AND revoked_at IS NULL")
                .bind(now)
                .bind(&old.family_id)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            return Err(StoreError::Conflict);
        }
        if old.expires_at <= now {
            return Err(StoreError::NotFound);
        }
        sqlx::query("UPDATE refresh_tokens SET used_at = $1 WHERE id = $2")
            .bind(now)
            .bind(&old.id)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO refresh_tokens (id, clinician_id, family_id, token_hash, expires_at, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&new.id)
        .bind(&old.clinician_id)
        .bind(&old.family_id)
        .bind(new_hash)
        .bind(new.expires_at)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(old)
    }

    /// Revokes the family of the refresh token with this hash (logout).
    pub async fn revoke_refresh_family(&self, token_hash: &str, now: i64) -> StoreResult<()> {
        sqlx::query(
            "UPDATE refresh_tokens SET revoked_at = $1 WHERE revoked_at IS NULL AND family_id IN \
             (SELECT family_id FROM refresh_tokens WHERE token_hash = $2)",
        )
        .bind(now)
        .bind(token_hash)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    // ----- audit -----

    /// Records an audit event.
    pub async fn audit(&self, event: &AuditEvent) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        insert_audit(&mut tx, event).await?;
        tx.commit().await?;
        Ok(())
    }

    /// A visit's audit trail, oldest first.
    pub async fn audit_of_visit(&self, visit_id: &str) -> StoreResult<Vec<AuditEvent>> {
        let rows =
            sqlx::query("SELECT at, actor, action, visit_id, detail FROM audit_events WHERE visit_id = $1 ORDER BY id")
                .bind(visit_id)
                .fetch_all(&self.pool)
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

async fn insert_visit_rows(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    new_patient: Option<&Patient>,
    visit: &NewVisit,
    link: &Link,
    audit: &AuditEvent,
    now: i64,
) -> StoreResult<()> {
    if let Some(p) = new_patient {
        sqlx::query(
            "INSERT INTO patients (id, display_name, hospital_id, contact, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&p.id)
        .bind(&p.display_name)
        .bind(&p.hospital_id)
        .bind(&p.contact)
        .bind(p.created_at)
        .execute(&mut **tx)
        .await?;
    }
    insert_visit_row(tx, visit, now).await?;
    insert_link(tx, link).await?;
    insert_audit(tx, audit).await
}

async fn insert_visit_row(tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>, visit: &NewVisit, now: i64) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO visits (id, patient_id, clinician_id, scheduled_start, duration_minutes, kind, status, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(&visit.id)
    .bind(&visit.patient_id)
    .bind(&visit.clinician_id)
    .bind(visit.scheduled_start)
    .bind(visit.duration_minutes)
    .bind(visit.kind.as_str())
    .bind(VisitStatus::Scheduled.as_str())
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn insert_link(tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>, link: &Link) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO links (id, visit_id, role, label, token_hash, valid_from, valid_until, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(&link.id)
    .bind(&link.visit_id)
    .bind(link.role.as_str())
    .bind(&link.label)
    .bind(&link.token_hash)
    .bind(link.valid_from)
    .bind(link.valid_until)
    .bind(link.created_at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn insert_audit(tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>, event: &AuditEvent) -> StoreResult<()> {
    // Ids sort by time (microseconds) then a random tail, so ORDER BY id is
    // the order of events.
    let micros =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0);
    let id = format!("{micros:016x}{:08x}", rand::random::<u32>());
    sqlx::query("INSERT INTO audit_events (id, at, actor, action, visit_id, detail) VALUES ($1, $2, $3, $4, $5, $6)")
        .bind(id)
        .bind(event.at)
        .bind(&event.actor)
        .bind(&event.action)
        .bind(&event.visit_id)
        .bind(&event.detail)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn temp_store() -> (Store, std::path::PathBuf) {
        let path = std::env::temp_dir().join(format!("tc-store-{}-{}.db", std::process::id(), rand::random::<u32>()));
        (Store::open(&path).await.unwrap(), path)
    }

    fn clinician(id: &str, email: &str) -> Clinician {
        Clinician {
            id: id.into(),
            email: email.into(),
            display_name: "Dr X".into(),
            specialty: Specialty::Oncologist,
            role: StaffRole::Clinician,
            password_hash: "h".into(),
            active: true,
            created_at: 1,
        }
    }

    fn audit(action: &str, visit: &str) -> AuditEvent {
        AuditEvent { at: 10, actor: "system".into(), action: action.into(), visit_id: Some(visit.into()), detail: None }
    }

    #[tokio::test]
    async fn migrations_are_idempotent_and_versioned() {
        let (store, path) = temp_store().await;
        assert_eq!(store.schema_version().await.unwrap(), MIGRATIONS.len() as i64);
        drop(store);
        let again = Store::open(&path).await.unwrap();
        assert_eq!(again.schema_version().await.unwrap(), MIGRATIONS.len() as i64);
    }

    #[tokio::test]
    async fn duplicate_email_is_a_conflict() {
        let (store, _) = temp_store().await;
        store.insert_clinician(&clinician("c-1", "a@x")).await.unwrap();
        assert!(matches!(store.insert_clinician(&clinician("c-2", "a@x")).await, Err(StoreError::Conflict)));
    }

    #[tokio::test]
    async fn visit_lifecycle_and_cancel_revokes_links() {
        let (store, _) = temp_store().await;
        store.insert_clinician(&clinician("c-1", "a@x")).await.unwrap();
        let patient = Patient {
            id: "pt-1".into(),
            display_name: "O'Brien; DROP TABLE visits;--".into(),
            hospital_id: None,
            contact: None,
            created_at: 1,
        };
        let nv = NewVisit {
            id: "v-1".into(),
            patient_id: "pt-1".into(),
            clinician_id: "c-1".into(),
            scheduled_start: 1000,
            duration_minutes: 20,
            kind: VisitKind::FollowUp,
        };
        let link = Link {
            id: "l-1".into(),
            visit_id: "v-1".into(),
            role: LinkRole::Patient,
            label: None,
            token_hash: "abc".into(),
            valid_from: 0,
            valid_until: 9999,
            revoked_at: None,
            created_at: 1,
        };
        let v = store.create_visit(Some(&patient), &nv, &link, &audit("created", "v-1"), 5).await.unwrap();
        assert_eq!(v.status, VisitStatus::Scheduled);
        assert_eq!(store.patient_by_id("pt-1").await.unwrap().unwrap().display_name, patient.display_name);
        let v = store.reschedule_visit("v-1", 2000, 30, (100, 200), &audit("rescheduled", "v-1")).await.unwrap();
        assert_eq!((v.scheduled_start, v.duration_minutes), (2000, 30));
        assert_eq!(store.link_by_token_hash("abc").await.unwrap().unwrap().valid_from, 100);
        let v = store
            .transition_visit("v-1", &[VisitStatus::Scheduled], VisitStatus::Cancelled, 50, &audit("cancelled", "v-1"))
            .await
            .unwrap();
        assert_eq!(v.cancelled_at, Some(50));
        assert_eq!(store.link_by_token_hash("abc").await.unwrap().unwrap().revoked_at, Some(50));
        // No way back from cancelled.
        assert!(matches!(
            store
                .transition_visit(
                    "v-1",
                    &[VisitStatus::Scheduled],
                    VisitStatus::InProgress,
                    60,
                    &audit("started", "v-1")
                )
                .await,
            Err(StoreError::Conflict)
        ));
        let trail: Vec<String> = store.audit_of_visit("v-1").await.unwrap().into_iter().map(|e| e.action).collect();
        assert_eq!(trail, ["created", "rescheduled", "cancelled"]);
    }

    #[tokio::test]
    async fn refresh_rotation_detects_replay_and_revokes_the_family() {
        let (store, _) = temp_store().await;
        store.insert_clinician(&clinician("c-1", "a@x")).await.unwrap();
        let t = |id: &str| RefreshToken {
            id: id.into(),
            clinician_id: "c-1".into(),
            family_id: "f".into(),
            expires_at: 1000,
            used_at: None,
            revoked_at: None,
        };
        store.insert_refresh_token(&t("r1"), "h1", 1).await.unwrap();
        store.rotate_refresh_token("h1", &t("r2"), "h2", 2).await.unwrap();
        // Replaying h1 fails and kills h2 too.
        assert!(matches!(store.rotate_refresh_token("h1", &t("r3"), "h3", 3).await, Err(StoreError::Conflict)));
        assert!(matches!(store.rotate_refresh_token("h2", &t("r4"), "h4", 4).await, Err(StoreError::Conflict)));
    }
}
