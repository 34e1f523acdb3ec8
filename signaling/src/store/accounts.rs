//! Staff accounts, their refresh tokens (sign-in sessions) and calendar-feed
//! tokens.

use serde::Serialize;
use sqlx::any::AnyRow;

use super::{Store, StoreError, StoreResult, int, opt_int, parsed, text, text_enum};

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

/// Booleans are read as 0/1 so that one query decodes on both backends.
const CLINICIAN_COLUMNS: &str = "id, email, display_name, specialty, role, password_hash, \
     CASE WHEN active THEN 1 ELSE 0 END AS active, created_at";

fn clinician_from(row: &AnyRow) -> StoreResult<Clinician> {
    Ok(Clinician {
        id: text(row, "id")?,
        email: text(row, "email")?,
        display_name: text(row, "display_name")?,
        specialty: parsed(row, "specialty")?,
        role: parsed(row, "role")?,
        password_hash: text(row, "password_hash")?,
        active: int(row, "active")? != 0,
        created_at: int(row, "created_at")?,
    })
}

fn refresh_token_from(row: &AnyRow) -> StoreResult<RefreshToken> {
    Ok(RefreshToken {
        id: text(row, "id")?,
        clinician_id: text(row, "clinician_id")?,
        family_id: text(row, "family_id")?,
        expires_at: int(row, "expires_at")?,
        used_at: opt_int(row, "used_at")?,
        revoked_at: opt_int(row, "revoked_at")?,
    })
}

/// What a refresh attempt found.
#[derive(Debug, Clone, PartialEq)]
pub enum Rotation {
    /// The token was current: it is now used, and its successor stored.
    Rotated(RefreshToken),
    /// The token had been used or revoked already: its whole family is now
    /// revoked (a rotated token coming back means it leaked).
    Replayed,
    /// No such token, or it has expired.
    Unknown,
}

impl Store {
    /// Inserts a clinician. `Conflict` if the email is taken.
    pub async fn insert_clinician(&self, c: &Clinician) -> StoreResult<()> {
        self.retrying(|| async move {
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
            .execute(self.pool())
            .await?;
            Ok(())
        })
        .await
    }

    /// A clinician by email (already lower-cased by the caller).
    pub async fn clinician_by_email(&self, email: &str) -> StoreResult<Option<Clinician>> {
        let sql = format!("SELECT {CLINICIAN_COLUMNS} FROM clinicians WHERE email = $1");
        let row = self.retrying_query(|| sqlx::query(sql.as_str()).bind(email).fetch_optional(self.pool())).await?;
        row.as_ref().map(clinician_from).transpose()
    }

    /// A clinician by id.
    pub async fn clinician_by_id(&self, id: &str) -> StoreResult<Option<Clinician>> {
        let sql = format!("SELECT {CLINICIAN_COLUMNS} FROM clinicians WHERE id = $1");
        let row = self.retrying_query(|| sqlx::query(&sql).bind(id).fetch_optional(self.pool())).await?;
        row.as_ref().map(clinician_from).transpose()
    }

    /// Every clinician, by email.
    pub async fn list_clinicians(&self) -> StoreResult<Vec<Clinician>> {
        let sql = format!("SELECT {CLINICIAN_COLUMNS} FROM clinicians ORDER BY email");
        let rows = self.retrying_query(|| sqlx::query(&sql).fetch_all(self.pool())).await?;
        rows.iter().map(clinician_from).collect()
    }

    /// Enables or disables an account. Disabling also revokes its refresh
    /// tokens, in the same transaction.
    pub async fn set_clinician_active(&self, id: &str, active: bool, now: i64) -> StoreResult<()> {
        self.retrying(|| async move {
            let mut tx = self.begin_write().await?;
            let done = sqlx::query("UPDATE clinicians SET active = $1 WHERE id = $2")
                .bind(active)
                .bind(id)
                .execute(tx.conn())
                .await?;
            if done.rows_affected() == 0 {
                return Err(StoreError::NotFound);
            }
            if !active {
                revoke_sessions_of(&mut tx, id, now).await?;
                // The calendar feed speaks for the account too.
                sqlx::query("DELETE FROM calendar_tokens WHERE clinician_id = $1").bind(id).execute(tx.conn()).await?;
            }
            tx.commit().await
        })
        .await
    }

    /// Of these accounts, those disabled (or gone).
    pub async fn inactive_clinicians(&self, ids: &[&str]) -> StoreResult<Vec<String>> {
        let mut inactive = Vec::new();
        for id in ids {
            if !self.clinician_by_id(id).await?.is_some_and(|c| c.active) {
                inactive.push((*id).to_string());
            }
        }
        Ok(inactive)
    }

    /// Replaces a password hash and revokes every refresh token of the account.
    pub async fn set_password_hash(&self, id: &str, hash: &str, now: i64) -> StoreResult<()> {
        self.retrying(|| async move {
            let mut tx = self.begin_write().await?;
            let done = sqlx::query("UPDATE clinicians SET password_hash = $1 WHERE id = $2")
                .bind(hash)
                .bind(id)
                .execute(tx.conn())
                .await?;
            if done.rows_affected() == 0 {
                return Err(StoreError::NotFound);
            }
            revoke_sessions_of(&mut tx, id, now).await?;
            tx.commit().await
        })
        .await
    }

    // ----- refresh tokens -----

    /// Stores a new refresh token.
    pub async fn insert_refresh_token(&self, t: &RefreshToken, token_hash: &str, now: i64) -> StoreResult<()> {
        self.retrying(|| async move {
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
            .execute(self.pool())
            .await?;
            Ok(())
        })
        .await
    }

    /// Rotates a refresh token: if it is current, marks it used and stores
    /// its successor (same family), in one transaction. The "is it current"
    /// test and the marking are one conditional statement, so of several
    /// requests racing with one token exactly one wins; the others find it
    /// used and revoke the family.
    pub async fn rotate_refresh_token(
        &self,
        old_hash: &str,
        successor_id: &str,
        successor_hash: &str,
        successor_expires_at: i64,
        now: i64,
    ) -> StoreResult<Rotation> {
        self.retrying(|| async move {
            let mut tx = self.begin_write().await?;
            let won = sqlx::query(
                "UPDATE refresh_tokens SET used_at = $1 \
                 WHERE token_hash = $2 AND used_at IS NULL AND revoked_at IS NULL AND expires_at > $1 \
                 RETURNING id, clinician_id, family_id, expires_at, used_at, revoked_at",
            )
            .bind(now)
            .bind(old_hash)
            .fetch_optional(tx.conn())
            .await?;
            if let Some(row) = won {
                let old = refresh_token_from(&row)?;
                sqlx::query(
                    "INSERT INTO refresh_tokens (id, clinician_id, family_id, token_hash, expires_at, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(successor_id)
                .bind(&old.clinician_id)
                .bind(&old.family_id)
                .bind(successor_hash)
                .bind(successor_expires_at)
                .bind(now)
                .execute(tx.conn())
                .await?;
                tx.commit().await?;
                return Ok(Rotation::Rotated(old));
            }
            let found = sqlx::query(
                "SELECT id, clinician_id, family_id, expires_at, used_at, revoked_at FROM refresh_tokens \
                 WHERE token_hash = $1",
            )
            .bind(old_hash)
            .fetch_optional(tx.conn())
            .await?;
            let Some(row) = found else { return Ok(Rotation::Unknown) };
            let old = refresh_token_from(&row)?;
            if old.used_at.is_none() && old.revoked_at.is_none() {
                return Ok(Rotation::Unknown); // expired
            }
            sqlx::query("UPDATE refresh_tokens SET revoked_at = $1 WHERE family_id = $2 AND revoked_at IS NULL")
                .bind(now)
                .bind(&old.family_id)
                .execute(tx.conn())
                .await?;
            tx.commit().await?;
            Ok(Rotation::Replayed)
        })
        .await
    }

    /// Revokes the family of the refresh token with this hash (sign-out).
    pub async fn revoke_refresh_family(&self, token_hash: &str, now: i64) -> StoreResult<()> {
        self.retrying(|| async move {
            sqlx::query(
                "UPDATE refresh_tokens SET revoked_at = $1 WHERE revoked_at IS NULL AND family_id IN \
                 (SELECT family_id FROM refresh_tokens WHERE token_hash = $2)",
            )
            .bind(now)
            .bind(token_hash)
            .execute(self.pool())
            .await?;
            Ok(())
        })
        .await
    }

    // ----- calendar feed tokens -----

    /// Sets (replacing) a clinician's calendar-feed token hash; `None` revokes.
    pub async fn set_calendar_token(&self, clinician_id: &str, token_hash: Option<&str>, now: i64) -> StoreResult<()> {
        self.retrying(|| async move {
            match token_hash {
                Some(hash) => {
                    sqlx::query(
                        "INSERT INTO calendar_tokens (clinician_id, token_hash, created_at) VALUES ($1, $2, $3) \
                         ON CONFLICT (clinician_id) DO UPDATE SET token_hash = excluded.token_hash, \
                         created_at = excluded.created_at",
                    )
                    .bind(clinician_id)
                    .bind(hash)
                    .bind(now)
                    .execute(self.pool())
                    .await?;
                }
                None => {
                    sqlx::query("DELETE FROM calendar_tokens WHERE clinician_id = $1")
                        .bind(clinician_id)
                        .execute(self.pool())
                        .await?;
                }
            }
            Ok(())
        })
        .await
    }

    /// The clinician a calendar token belongs to.
    pub async fn calendar_owner(&self, token_hash: &str) -> StoreResult<Option<String>> {
        let row = self
            .retrying_query(|| {
                sqlx::query("SELECT clinician_id FROM calendar_tokens WHERE token_hash = $1")
                    .bind(token_hash)
                    .fetch_optional(self.pool())
            })
            .await?;
        row.as_ref().map(|r| text(r, "clinician_id")).transpose()
    }
}

async fn revoke_sessions_of(tx: &mut super::WriteTx, clinician_id: &str, now: i64) -> StoreResult<()> {
    sqlx::query("UPDATE refresh_tokens SET revoked_at = $1 WHERE clinician_id = $2 AND revoked_at IS NULL")
        .bind(now)
        .bind(clinician_id)
        .execute(tx.conn())
        .await?;
    Ok(())
}
