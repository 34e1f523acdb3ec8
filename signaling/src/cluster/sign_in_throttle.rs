//! The sign-in throttle shared by every node of a cluster, in Redis, so
//! that guesses spread over the nodes (a load balancer's round robin) are
//! counted together.
//!
//! The rule is the one-node rule ([`LoginThrottle::delay_for`]): free
//! failures per key, then a doubling delay from the last failure. Counts
//! live under keyed hashes of the email or address (no personal data in
//! Redis), with the last failure in Unix milliseconds (nodes share wall
//! time, not `Instant`s), and lapse after an hour without a failure.

use std::time::Duration;

use crate::staff_auth::LoginThrottle;

use super::{Cluster, ClusterError};

/// A key quiet this long starts again from zero.
const FORGET_AFTER_SECS: i64 = 3600;

/// Count a failure: `KEYS[1]` the key, `ARGV[1]` now (ms), `ARGV[2]` TTL (s).
const FAILED_SCRIPT: &str = r"
redis.call('HINCRBY', KEYS[1], 'count', 1)
redis.call('HSET', KEYS[1], 'last', ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 1";

/// Take one failure back; the key goes at zero.
const FORGIVE_SCRIPT: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local n = redis.call('HINCRBY', KEYS[1], 'count', -1)
if n <= 0 then redis.call('DEL', KEYS[1]) end
return n";

impl Cluster {
    fn throttle_key(&self, key: &str) -> String {
        use sha2::Digest;
        let digest = sha2::Sha256::digest([self.bridge_key.as_bytes(), b"\0sign-in\0", key.as_bytes()].concat());
        self.key(&["signin", &super::hex(&digest[..16])])
    }

    /// How long the caller must still wait before trying `keys` (each with
    /// its free allowance), or `None` if it may try now.
    pub async fn sign_in_wait(&self, keys: &[(&str, u32)], now_ms: i64) -> Result<Option<Duration>, ClusterError> {
        let mut conn = self.conn();
        let mut wait: Option<Duration> = None;
        for (key, free) in keys {
            let (count, last): (Option<u32>, Option<i64>) =
                redis::cmd("HMGET").arg(self.throttle_key(key)).arg("count").arg("last").query_async(&mut conn).await?;
            let (Some(count), Some(last)) = (count, last) else { continue };
            let until = last + LoginThrottle::delay_for(count, *free).as_millis() as i64;
            if until > now_ms {
                let left = Duration::from_millis((until - now_ms) as u64);
                wait = Some(wait.map_or(left, |w| w.max(left)));
            }
        }
        Ok(wait)
    }

    /// Records a failure against every key.
    pub async fn sign_in_failed(&self, keys: &[(&str, u32)], now_ms: i64) -> Result<(), ClusterError> {
        let mut conn = self.conn();
        for (key, _) in keys {
            let _: i64 = redis::Script::new(FAILED_SCRIPT)
                .key(self.throttle_key(key))
                .arg(now_ms)
                .arg(FORGET_AFTER_SECS)
                .invoke_async(&mut conn)
                .await?;
        }
        Ok(())
    }

    /// Clears a key after a successful sign-in.
    pub async fn sign_in_succeeded(&self, key: &str) -> Result<(), ClusterError> {
        let mut conn = self.conn();
        redis::cmd("DEL").arg(self.throttle_key(key)).query_async::<()>(&mut conn).await?;
        Ok(())
    }

    /// Takes back one failure counted against `key`.
    pub async fn sign_in_forgive(&self, key: &str) -> Result<(), ClusterError> {
        let mut conn = self.conn();
        let _: i64 = redis::Script::new(FORGIVE_SCRIPT).key(self.throttle_key(key)).invoke_async(&mut conn).await?;
        Ok(())
    }
}
