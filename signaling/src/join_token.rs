//! Join tokens: short-lived JWTs that grant one seat in one room.
//!
//! They are HS256 only (the algorithm is pinned: `alg: none`, RS* and any
//! other header are rejected before the signature is even looked at), carry a
//! `kid` so the signing key can rotate, and are checked for `exp`, `nbf`,
//! `iss` and `aud`.

use std::collections::HashMap;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind};
use serde::{Deserialize, Serialize};
use teleconsult_protocol::Role;

/// The `iss` claim of every token this server mints.
pub const ISSUER: &str = "teleconsult";
/// The `aud` claim of join tokens.
pub const JOIN_AUDIENCE: &str = "teleconsult/join";

/// Longest display name accepted in a token, in characters.
pub const MAX_DISPLAY_NAME_CHARS: usize = 200;

/// Claims of a join token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JoinClaims {
    /// Issuer; always [`ISSUER`].
    pub iss: String,
    /// Audience; always [`JOIN_AUDIENCE`].
    pub aud: String,
    /// Opaque subject the token was minted for (a clinician id or a link id);
    /// used for audit, never shown.
    pub sub: String,
    /// The room the token opens.
    pub room: String,
    /// The role it grants.
    pub role: Role,
    /// The name other participants see.
    pub name: String,
    /// Issued at (Unix seconds).
    pub iat: u64,
    /// Not before (Unix seconds).
    pub nbf: u64,
    /// Expires at (Unix seconds).
    pub exp: u64,
    /// Skips the waiting room. Set only by `admin mint-token --admitted` and
    /// the demo's test links; links never set it.
    #[serde(default)]
    pub admitted: bool,
}

/// Why a token was refused. Each maps to a protocol error code.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenError {
    /// The token has expired.
    #[error("the token has expired")]
    Expired,
    /// The token is not valid yet (`nbf` in the future).
    #[error("the token is not valid yet")]
    NotYetValid,
    /// Anything else: bad shape, wrong algorithm, unknown `kid`, bad signature,
    /// wrong issuer or audience, bad claims.
    #[error("the token is invalid")]
    Invalid,
    /// The claims are well-signed but unacceptable (e.g. an empty room).
    #[error("the token's claims are invalid: {0}")]
    BadClaims(&'static str),
    /// Signing failed (a server-side fault).
    #[error("could not sign the token")]
    Signing,
    /// The key material is unusable (empty).
    #[error("the signing key is unusable")]
    BadKey,
}

/// A set of HS256 keys by `kid`: one signs, all verify.
#[derive(Clone)]
pub struct TokenKeys {
    signing_kid: String,
    encoding: EncodingKey,
    decoding: HashMap<String, DecodingKey>,
    /// Allowed clock skew in seconds.
    leeway_secs: u64,
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("TokenKeys").field("signing_kid", &self.signing_kid).finish_non_exhaustive()
    }
}

impl TokenKeys {
    /// Keys from one secret, used to sign and verify under `kid`.
    pub fn from_secret(kid: &str, secret: &[u8]) -> Result<Self, TokenError> {
        let mut decoding = HashMap::new();
        decoding.insert(kid.to_string(), DecodingKey::from_secret(secret).map_err(|_| TokenError::BadKey)?);
        Ok(TokenKeys {
            signing_kid: kid.to_string(),
            encoding: EncodingKey::from_secret(secret).map_err(|_| TokenError::BadKey)?,
            decoding,
            leeway_secs: 5,
        })
    }

    /// Also accept tokens signed by an older key, so rotation does not
    /// invalidate tokens already handed out.
    pub fn with_verify_only(mut self, kid: &str, secret: &[u8]) -> Result<Self, TokenError> {
        self.decoding.insert(kid.to_string(), DecodingKey::from_secret(secret).map_err(|_| TokenError::BadKey)?);
        Ok(self)
    }

    /// Fresh random keys (32 bytes), for a server without a configured secret.
    pub fn random() -> Self {
        let secret: [u8; 32] = rand::random();
        Self::from_secret("k1", &secret).expect("a 32-byte secret is never empty")
    }

    /// Signs claims with the current key.
    pub fn sign<T: Serialize>(&self, claims: &T) -> Result<String, TokenError> {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(self.signing_kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding).map_err(|_| TokenError::Signing)
    }

    /// Mints a join token valid from now for `ttl_secs`. `admitted` tokens
    /// skip the waiting room.
    #[allow(clippy::too_many_arguments)]
    pub fn mint_join(
        &self,
        room: &str,
        role: Role,
        name: &str,
        sub: &str,
        now_unix: u64,
        ttl_secs: u64,
        admitted: bool,
    ) -> Result<String, TokenError> {
        self.sign(&JoinClaims {
            iss: ISSUER.into(),
            aud: JOIN_AUDIENCE.into(),
            sub: sub.into(),
            room: room.into(),
            role,
            name: name.into(),
            iat: now_unix,
            nbf: now_unix,
            exp: now_unix + ttl_secs,
            admitted,
        })
    }

    /// Verifies a join token and returns its claims.
    pub fn verify_join(&self, token: &str) -> Result<JoinClaims, TokenError> {
        let claims: JoinClaims = self.verify(token, JOIN_AUDIENCE)?;
        if claims.room.is_empty() || claims.room.len() > 128 {
            return Err(TokenError::BadClaims("room"));
        }
        if claims.name.trim().is_empty() || claims.name.chars().count() > MAX_DISPLAY_NAME_CHARS {
            return Err(TokenError::BadClaims("name"));
        }
        Ok(claims)
    }

    /// Verifies signature, algorithm, `kid`, `exp`, `nbf`, `iss` and `aud`.
    pub fn verify<T: for<'de> Deserialize<'de>>(&self, token: &str, audience: &str) -> Result<T, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Invalid)?;
        // Pin the algorithm before choosing a key: this is what defeats
        // `alg: none` and HS/RS confusion.
        if header.alg != Algorithm::HS256 {
            return Err(TokenError::Invalid);
        }
        let key = header.kid.as_deref().and_then(|kid| self.decoding.get(kid)).ok_or(TokenError::Invalid)?;
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = self.leeway_secs;
        validation.validate_nbf = true;
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        match jsonwebtoken::decode::<T>(token, key, &validation) {
            Ok(data) => Ok(data.claims),
            Err(e) => Err(match e.kind() {
                ErrorKind::ExpiredSignature => TokenError::Expired,
                ErrorKind::ImmatureSignature => TokenError::NotYetValid,
                _ => TokenError::Invalid,
            }),
        }
    }
}

/// Seconds since the Unix epoch, from the system clock.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    fn keys() -> TokenKeys {
        TokenKeys::from_secret("k1", b"0123456789abcdef0123456789abcdef").unwrap()
    }

    #[test]
    fn round_trip() {
        let now = unix_now();
        let t = keys().mint_join("room-1", Role::Patient, "P", "link:1", now, 60, false).unwrap();
        let c = keys().verify_join(&t).unwrap();
        assert_eq!(c.room, "room-1");
        assert_eq!(c.role, Role::Patient);
    }

    #[test]
    fn expired_and_not_yet_valid_are_told_apart() {
        let now = unix_now();
        let t = keys().mint_join("r", Role::Guest, "G", "s", now - 3600, 60, false).unwrap();
        assert_eq!(keys().verify_join(&t), Err(TokenError::Expired));
        let mut c = keys().verify_join(&keys().mint_join("r", Role::Guest, "G", "s", now, 60, false).unwrap()).unwrap();
        c.nbf = now + 3600;
        c.exp = now + 7200;
        let t = keys().sign(&c).unwrap();
        assert_eq!(keys().verify_join(&t), Err(TokenError::NotYetValid));
    }

    #[test]
    fn alg_none_and_wrong_key_and_unknown_kid_are_invalid() {
        let now = unix_now();
        let good = keys().mint_join("r", Role::Clinician, "C", "s", now, 60, false).unwrap();
        let parts: Vec<&str> = good.split('.').collect();
        let none_header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT","kid":"k1"}"#);
        assert_eq!(keys().verify_join(&format!("{none_header}.{}.", parts[1])), Err(TokenError::Invalid));
        let rs_header = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","typ":"JWT","kid":"k1"}"#);
        assert_eq!(keys().verify_join(&format!("{rs_header}.{}.{}", parts[1], parts[2])), Err(TokenError::Invalid));
        let other = TokenKeys::from_secret("k1", b"another secret another secret!!!").unwrap();
        assert_eq!(other.verify_join(&good), Err(TokenError::Invalid));
        let other_kid = TokenKeys::from_secret("k2", b"0123456789abcdef0123456789abcdef").unwrap();
        assert_eq!(other_kid.verify_join(&good), Err(TokenError::Invalid));
        assert_eq!(keys().verify_join("garbage"), Err(TokenError::Invalid));
    }

    #[test]
    fn rotated_key_still_verifies() {
        let old = TokenKeys::from_secret("k1", b"old secret old secret old secret").unwrap();
        let t = old.mint_join("r", Role::Guest, "G", "s", unix_now(), 60, false).unwrap();
        let new = TokenKeys::from_secret("k2", b"new secret new secret new secret")
            .unwrap()
            .with_verify_only("k1", b"old secret old secret old secret")
            .unwrap();
        assert!(new.verify_join(&t).is_ok());
    }
}
