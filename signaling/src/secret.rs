//! Random secrets and ids, and sealing: authenticated encryption of
//! secrets the server must keep for a while (an idempotent answer that
//! carries a patient link) under a key that is not in the database.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use sha2::{Digest, Sha256};

/// A 256-bit random secret, base64url without padding (43 characters).
pub fn random_token() -> String {
    let bytes: [u8; 32] = rand::random();
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A short random id with a prefix, e.g. `p-3f9a1c2b7d4e`: 48 bits, enough
/// to be unique within a room, and no secret.
pub fn random_id(prefix: &str) -> String {
    let bytes: [u8; 6] = rand::random();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{prefix}-{hex}")
}

/// Seals and opens small secrets with AES-256-GCM. The key derives from the
/// server's token secret, so every node of a cluster shares it and a copy
/// of the database alone reveals nothing sealed. Without a configured
/// secret the key is random per process: what was sealed before a restart
/// no longer opens, and callers treat that as "not available".
pub struct Sealer {
    key: LessSafeKey,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(..)")
    }
}

impl Sealer {
    /// A sealer whose key derives from `secret` (and `purpose`, so one
    /// secret never keys two uses).
    pub fn from_secret(secret: &[u8], purpose: &str) -> Sealer {
        let mut hasher = Sha256::new();
        hasher.update(b"teleconsult/seal/v1\0");
        hasher.update(purpose.as_bytes());
        hasher.update(b"\0");
        hasher.update(secret);
        Sealer::from_key(hasher.finalize().into())
    }

    /// A sealer with a random key.
    pub fn random() -> Sealer {
        Sealer::from_key(rand::random())
    }

    fn from_key(key: [u8; 32]) -> Sealer {
        // A 32-byte key always fits AES-256.
        let unbound = UnboundKey::new(&AES_256_GCM, &key).unwrap_or_else(|_| unreachable!("AES-256 takes 32 bytes"));
        Sealer { key: LessSafeKey::new(unbound) }
    }

    /// Seals `plain`, bound to `context` (which must be given again to
    /// open it): base64 of nonce and ciphertext.
    pub fn seal(&self, context: &str, plain: &[u8]) -> String {
        let nonce_bytes: [u8; NONCE_LEN] = rand::random();
        let mut data = plain.to_vec();
        // Sealing into a Vec with a valid key cannot fail.
        let _ = self.key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce_bytes),
            Aad::from(context.as_bytes()),
            &mut data,
        );
        let mut out = nonce_bytes.to_vec();
        out.extend_from_slice(&data);
        STANDARD_NO_PAD.encode(out)
    }

    /// Opens what [`seal`](Sealer::seal) made with the same key and context.
    pub fn open(&self, context: &str, sealed: &str) -> Option<Vec<u8>> {
        let bytes = STANDARD_NO_PAD.decode(sealed).ok()?;
        if bytes.len() < NONCE_LEN {
            return None;
        }
        let (nonce, rest) = bytes.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut data = rest.to_vec();
        let plain = self.key.open_in_place(nonce, Aad::from(context.as_bytes()), &mut data).ok()?;
        Some(plain.to_vec())
    }
}

/// Compares two secrets in time that depends on their length only.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_long_and_distinct() {
        let a = random_token();
        assert_eq!(a.len(), 43);
        assert_ne!(a, random_token());
        assert!(random_id("p").starts_with("p-"));
    }

    #[test]
    fn sealed_secrets_open_only_with_the_same_key_and_context() {
        let sealer = Sealer::from_secret(b"a secret of at least thirty-two bytes!", "test");
        let sealed = sealer.seal("ctx", b"patient link");
        assert_ne!(sealer.seal("ctx", b"patient link"), sealed, "fresh nonce each time");
        assert_eq!(sealer.open("ctx", &sealed).as_deref(), Some(&b"patient link"[..]));
        assert_eq!(sealer.open("other", &sealed), None, "bound to its context");
        let same_secret = Sealer::from_secret(b"a secret of at least thirty-two bytes!", "test");
        assert!(same_secret.open("ctx", &sealed).is_some(), "another node with the same secret opens it");
        assert_eq!(Sealer::from_secret(b"a secret of at least thirty-two bytes!", "other").open("ctx", &sealed), None);
        assert_eq!(Sealer::random().open("ctx", &sealed), None);
        assert_eq!(sealer.open("ctx", "not base64!"), None);
        assert_eq!(sealer.open("ctx", ""), None);
    }
}
