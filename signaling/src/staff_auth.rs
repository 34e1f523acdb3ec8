//! Staff sign-in: argon2id passwords, short-lived access JWTs, rotating
//! refresh tokens in an HttpOnly cookie, and login throttling.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::store::StaffRole;

/// `aud` of staff access tokens.
pub const API_AUDIENCE: &str = "teleconsult/api";
/// Access token lifetime.
pub const ACCESS_TTL_SECS: u64 = 15 * 60;
/// Refresh token lifetime: a working day.
pub const REFRESH_TTL_SECS: i64 = 12 * 3600;
/// Name of the refresh cookie.
pub const REFRESH_COOKIE: &str = "tc_refresh";

/// Claims of a staff access token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccessClaims {
    /// Always `teleconsult`.
    pub iss: String,
    /// Always [`API_AUDIENCE`].
    pub aud: String,
    /// Clinician id.
    pub sub: String,
    /// Role at issue time (the account is re-checked on every request).
    pub role: StaffRole,
    /// Issued at.
    pub iat: u64,
    /// Not before.
    pub nbf: u64,
    /// Expiry.
    pub exp: u64,
}

/// Hashes a password with argon2id and a random salt.
pub fn hash_password(password: &str) -> Result<String, argon2::password_hash::Error> {
    let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>())?;
    Ok(Argon2::default().hash_password(password.as_bytes(), &salt)?.to_string())
}

/// Checks a password against a stored hash. A malformed hash fails.
pub fn verify_password(hash: &str, password: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|parsed| Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
}

/// A hash of a random password, verified against when the email is
/// unknown, so that an unknown email costs the same time as a wrong password.
static DUMMY_HASH: LazyLock<String> =
    LazyLock::new(|| hash_password(&crate::secret::random_token()).unwrap_or_default());

/// Spends the time of one password check, for unknown accounts.
pub fn verify_dummy(password: &str) {
    let _ = verify_password(&DUMMY_HASH, password);
}

/// Warms the dummy hash, so the first unknown-email login is not slower.
pub fn warm_up() {
    LazyLock::force(&DUMMY_HASH);
}

/// SHA-256 of a secret, hex. Link and refresh tokens are stored only this way.
pub fn token_hash(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Password policy: at least 10 characters, at most 200.
pub fn password_acceptable(password: &str) -> Result<(), &'static str> {
    let n = password.chars().count();
    if n < 10 {
        return Err("the password must have at least 10 characters");
    }
    if n > 200 {
        return Err("the password must have at most 200 characters");
    }
    Ok(())
}

/// Password checks run a few at a time, on the blocking pool.
///
/// argon2id takes a core for tens of milliseconds by design; unbounded, a
/// flood of sign-ins would take every core from the media threads. Callers
/// queue for a slot; when the queue is already long, they are told at once
/// to come back later (503) instead of waiting.
#[derive(Debug)]
pub struct PasswordChecks {
    slots: Arc<Semaphore>,
    queued: AtomicUsize,
    max_queued: usize,
}

impl PasswordChecks {
    /// `concurrency` checks at a time; up to eight times as many may queue.
    pub fn new(concurrency: usize) -> Self {
        let concurrency = concurrency.max(1);
        PasswordChecks {
            slots: Arc::new(Semaphore::new(concurrency)),
            queued: AtomicUsize::new(0),
            max_queued: 8 * concurrency,
        }
    }

    /// Runs `check` when a slot is free. `None` when too many checks are
    /// queued already, or the wait passes two seconds.
    pub async fn run<T: Send + 'static>(&self, check: impl FnOnce() -> T + Send + 'static) -> Option<T> {
        if self.queued.fetch_add(1, Ordering::SeqCst) >= self.max_queued {
            self.queued.fetch_sub(1, Ordering::SeqCst);
            return None;
        }
        let permit = tokio::time::timeout(Duration::from_secs(2), self.slots.clone().acquire_owned()).await;
        self.queued.fetch_sub(1, Ordering::SeqCst);
        let permit = permit.ok()?.ok()?;
        let result = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            check()
        })
        .await;
        result.ok()
    }
}

/// Slows repeated failed logins, per account and per client address.
///
/// After `free` failures, each further attempt must wait 1 s, then 2 s,
/// 4 s… (at most 5 minutes) after the last failure. An attempt counts as a
/// failure from the moment it starts, so parallel guesses meet the throttle
/// at once; a success takes its count back. Keys live in memory only, for
/// an hour, and at most [`MAX_THROTTLE_KEYS`] of them (the oldest go first).
#[derive(Debug, Default)]
pub struct LoginThrottle {
    failures: Mutex<HashMap<String, Failures>>,
}

/// Most keys the throttle remembers.
pub const MAX_THROTTLE_KEYS: usize = 100_000;

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
}

/// Free failures per account before delays start.
pub const ACCOUNT_FREE_FAILURES: u32 = 3;
/// Free failures per client address (clinics share addresses behind NAT).
pub const ADDRESS_FREE_FAILURES: u32 = 10;
const MAX_DELAY: Duration = Duration::from_secs(300);
const FORGET_AFTER: Duration = Duration::from_secs(3600);

impl LoginThrottle {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Failures>> {
        self.failures.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The delay after `count` failures with `free` allowed.
    pub fn delay_for(count: u32, free: u32) -> Duration {
        if count < free {
            return Duration::ZERO;
        }
        let exp = (count - free).min(16);
        Duration::from_secs(1u64 << exp).min(MAX_DELAY)
    }

    /// How long the caller must still wait before trying `keys` (each with
    /// its free allowance), or `None` if it may try now.
    pub fn retry_after(&self, keys: &[(&str, u32)], now: Instant) -> Option<Duration> {
        let map = self.lock();
        keys.iter()
            .filter_map(|(key, free)| {
                let f = map.get(*key)?;
                let until = f.last + Self::delay_for(f.count, *free);
                (until > now).then(|| until - now)
            })
            .max()
    }

    /// Records a failure against every key.
    pub fn failed(&self, keys: &[(&str, u32)], now: Instant) {
        let mut map = self.lock();
        // Pruning scans every key, so it runs only when the map is full
        // (amortised: a scan per tens of thousands of new keys, not one per
        // failure, which made a flood of distinct keys quadratic).
        if map.len() + keys.len() > MAX_THROTTLE_KEYS {
            map.retain(|_, f| now.saturating_duration_since(f.last) < FORGET_AFTER);
        }
        if map.len() + keys.len() > MAX_THROTTLE_KEYS {
            // Under a flood of distinct keys, forget the oldest half.
            let mut ages: Vec<Instant> = map.values().map(|f| f.last).collect();
            ages.sort_unstable();
            let cut = ages[ages.len() / 2];
            map.retain(|_, f| f.last > cut);
        }
        for (key, _) in keys {
            let f = map.entry((*key).to_string()).or_insert(Failures { count: 0, last: now });
            // A key quiet for an hour starts again (it may not have been pruned yet).
            if now.saturating_duration_since(f.last) >= FORGET_AFTER {
                f.count = 0;
            }
            f.count += 1;
            f.last = now;
        }
    }

    /// Clears a key after a successful login.
    pub fn succeeded(&self, key: &str) {
        self.lock().remove(key);
    }

    /// Takes back one failure counted against `key` (an attempt counted
    /// when it began, that turned out not to be a failure).
    pub fn forgive(&self, key: &str) {
        let mut map = self.lock();
        if let Some(f) = map.get_mut(key) {
            f.count = f.count.saturating_sub(1);
            if f.count == 0 {
                map.remove(key);
            }
        }
    }

    /// How many keys are remembered.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no key is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_and_differ() {
        let h1 = hash_password("correct horse battery").unwrap();
        let h2 = hash_password("correct horse battery").unwrap();
        assert_ne!(h1, h2, "salted");
        assert!(h1.starts_with("$argon2id$"));
        assert!(verify_password(&h1, "correct horse battery"));
        assert!(!verify_password(&h1, "wrong"));
        assert!(!verify_password("not a hash", "x"));
    }

    #[test]
    fn throttle_grows_after_the_free_failures() {
        let t0 = Instant::now();
        let throttle = LoginThrottle::default();
        let keys = [("email:a", 3)];
        for i in 0..3 {
            assert_eq!(throttle.retry_after(&keys, t0), None, "attempt {i} is free");
            throttle.failed(&keys, t0);
        }
        assert_eq!(throttle.retry_after(&keys, t0), Some(Duration::from_secs(1)));
        throttle.failed(&keys, t0);
        assert_eq!(throttle.retry_after(&keys, t0), Some(Duration::from_secs(2)));
        assert_eq!(throttle.retry_after(&keys, t0 + Duration::from_secs(2)), None);
        throttle.succeeded("email:a");
        assert_eq!(throttle.retry_after(&keys, t0), None);
        assert_eq!(LoginThrottle::delay_for(100, 3), MAX_DELAY);
    }

    #[test]
    fn throttle_memory_is_bounded_and_forgiving() {
        let t0 = Instant::now();
        let throttle = LoginThrottle::default();
        for i in 0..(MAX_THROTTLE_KEYS + 10) {
            throttle.failed(&[(&format!("ip:{i}"), 10)], t0 + Duration::from_micros(i as u64));
        }
        assert!(throttle.len() <= MAX_THROTTLE_KEYS);
        let keys = [("email:b", 3)];
        throttle.failed(&keys, t0);
        throttle.forgive("email:b");
        assert_eq!(throttle.retry_after(&keys, t0), None);
        // Failures an hour old are forgotten: the count starts again.
        let keys = [("email:c", 3)];
        for _ in 0..5 {
            throttle.failed(&keys, t0);
        }
        assert!(throttle.retry_after(&keys, t0).is_some());
        let later = t0 + FORGET_AFTER;
        throttle.failed(&keys, later);
        assert_eq!(throttle.retry_after(&keys, later), None, "one fresh failure, within the free three");
    }

    #[tokio::test]
    async fn password_checks_queue_then_refuse() {
        let checks = Arc::new(PasswordChecks::new(1));
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let wait = Arc::new(Mutex::new(wait));
        let mut running = Vec::new();
        // One runs, eight queue.
        for _ in 0..9 {
            let (checks, wait) = (checks.clone(), wait.clone());
            running.push(tokio::spawn(async move {
                checks
                    .run(move || {
                        let _ = wait.lock().unwrap().recv_timeout(Duration::from_secs(5));
                    })
                    .await
            }));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(checks.run(|| ()).await.is_none(), "a tenth caller is refused at once");
        for _ in 0..9 {
            let _ = release.send(());
        }
        for r in running {
            assert!(r.await.unwrap().is_some());
        }
    }

    #[test]
    fn token_hash_is_sha256_hex() {
        assert_eq!(token_hash("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}
