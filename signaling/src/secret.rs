//! Random secrets and ids.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

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

#[cfg(test)]
mod tests {
    #[test]
    fn tokens_are_long_and_distinct() {
        let a = super::random_token();
        assert_eq!(a.len(), 43);
        assert_ne!(a, super::random_token());
        assert!(super::random_id("p").starts_with("p-"));
    }
}
