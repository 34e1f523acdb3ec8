//! Staff accounts: creation with validation, shared by the admin CLI, the
//! demo and tests.

use crate::staff_auth::{hash_password, password_acceptable};
use crate::store::{Clinician, Specialty, StaffRole, Store, StoreError};

/// Why an account could not be created or changed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AccountError {
    /// The email is not plausible.
    #[error("invalid email")]
    InvalidEmail,
    /// The display name is empty or too long.
    #[error("the name must have 1 to 120 characters")]
    InvalidName,
    /// The password does not meet the policy.
    #[error("{0}")]
    WeakPassword(&'static str),
    /// The email is already in use.
    #[error("an account with this email exists")]
    EmailTaken,
    /// No account with this email.
    #[error("no such account")]
    NotFound,
    /// Hashing or storage failed.
    #[error("{0}")]
    Internal(String),
}

impl From<StoreError> for AccountError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict => AccountError::EmailTaken,
            StoreError::NotFound => AccountError::NotFound,
            other => AccountError::Internal(other.to_string()),
        }
    }
}

/// Normalises an email (trim, lower-case) and checks its shape.
pub fn normalise_email(email: &str) -> Result<String, AccountError> {
    let email = email.trim().to_lowercase();
    let ok = email.len() <= 320
        && email
            .split_once('@')
            .is_some_and(|(local, domain)| !local.is_empty() && domain.contains('.') && !domain.starts_with('.'))
        && !email.chars().any(|c| c.is_whitespace() || c.is_control());
    if ok { Ok(email) } else { Err(AccountError::InvalidEmail) }
}

/// Creates an account.
pub async fn create_clinician(
    store: &Store,
    email: &str,
    display_name: &str,
    specialty: Specialty,
    role: StaffRole,
    password: &str,
    now: i64,
) -> Result<Clinician, AccountError> {
    let email = normalise_email(email)?;
    let name_len = display_name.trim().chars().count();
    if name_len == 0 || display_name.chars().count() > 120 || display_name.chars().any(|c| c.is_control()) {
        return Err(AccountError::InvalidName);
    }
    password_acceptable(password).map_err(AccountError::WeakPassword)?;
    let password = password.to_string();
    let hash = tokio::task::spawn_blocking(move || hash_password(&password))
        .await
        .map_err(|e| AccountError::Internal(e.to_string()))?
        .map_err(|e| AccountError::Internal(e.to_string()))?;
    let clinician = Clinician {
        id: crate::secret::random_id("c"),
        email,
        display_name: display_name.to_string(),
        specialty,
        role,
        password_hash: hash,
        active: true,
        created_at: now,
    };
    store.insert_clinician(&clinician).await?;
    Ok(clinician)
}

/// Sets a new password (and signs the account out everywhere).
pub async fn reset_password(store: &Store, email: &str, password: &str, now: i64) -> Result<(), AccountError> {
    let email = normalise_email(email)?;
    password_acceptable(password).map_err(AccountError::WeakPassword)?;
    let account = store.clinician_by_email(&email).await?.ok_or(AccountError::NotFound)?;
    let password = password.to_string();
    let hash = tokio::task::spawn_blocking(move || hash_password(&password))
        .await
        .map_err(|e| AccountError::Internal(e.to_string()))?
        .map_err(|e| AccountError::Internal(e.to_string()))?;
    store.set_password_hash(&account.id, &hash, now).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_normalised_and_checked() {
        assert_eq!(normalise_email("  Dr.Martin@Hopital.FR ").unwrap(), "dr.martin@hopital.fr");
        for bad in ["", "no-at", "@x.fr", "a@nodot", "a b@x.fr", "a@.fr"] {
            assert!(normalise_email(bad).is_err(), "{bad}");
        }
    }
}
