//! Idempotent requests. A client sends `Idempotency-Key: <key>` with a
//! booking; a retry with the same key books nothing new and gets the first
//! answer back (with `Idempotent-Replayed: true`); the same key with a
//! different request is refused with 422 `idempotency_key_reused`.
//!
//! The key is claimed inside the transaction that does the work, and the
//! answer recorded before it commits, so the work and its answer stand or
//! fall together: no crash can leave a booking without its answer, or an
//! answer without its booking. Answers are kept 24 hours, sealed with the
//! server's key because they can carry a patient link.

use axum::Json;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::http_error::ApiError;
use crate::secret::Sealer;
use crate::store::{IdempotencyClaim, IdempotencyKey, WriteTx};

/// How long an answer is kept.
pub const KEEP_SECS: i64 = 24 * 3600;
/// The request header.
pub const HEADER: &str = "idempotency-key";
/// Longest key accepted.
pub const MAX_KEY_LEN: usize = 255;

/// An answer to a request that changed something: a status and a JSON body.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// HTTP status.
    pub status: StatusCode,
    /// JSON body.
    pub body: Value,
    /// Whether this repeats an earlier answer.
    pub replayed: bool,
}

impl Answer {
    /// A 201 answer.
    pub fn created(body: Value) -> Answer {
        Answer { status: StatusCode::CREATED, body, replayed: false }
    }

    /// A 200 answer.
    pub fn ok(body: Value) -> Answer {
        Answer { status: StatusCode::OK, body, replayed: false }
    }
}

impl IntoResponse for Answer {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body)).into_response();
        if self.replayed {
            response.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
        }
        response
    }
}

/// What identifies a request, before knowing who sent it: the client's key
/// (if any) and a hash of the method, path and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestFingerprint {
    key: Option<String>,
    route: String,
    hash: String,
}

impl RequestFingerprint {
    /// Reads the key header and hashes the request. A malformed key is a 400.
    pub fn new(headers: &HeaderMap, method: &str, path: &str, body: &[u8]) -> Result<Self, ApiError> {
        let key = match headers.get(HEADER) {
            None => None,
            Some(v) => {
                let text = v
                    .to_str()
                    .ok()
                    .filter(|t| !t.is_empty() && t.len() <= MAX_KEY_LEN && t.bytes().all(|b| b.is_ascii_graphic()));
                let Some(text) = text else {
                    return Err(ApiError::bad_request(
                        "invalid_idempotency_key",
                        "Idempotency-Key must be 1 to 255 visible ASCII characters",
                    ));
                };
                Some(text.to_string())
            }
        };
        let route = format!("{method} {path}");
        let mut hasher = Sha256::new();
        hasher.update(route.as_bytes());
        hasher.update(b"\n");
        hasher.update(body);
        let hash = hasher.finalize().iter().map(|b| format!("{b:02x}")).collect();
        Ok(RequestFingerprint { key, route, hash })
    }

    /// No key: every request is new.
    pub fn none() -> Self {
        RequestFingerprint { key: None, route: String::new(), hash: String::new() }
    }
}

/// A request's idempotency, bound to who sent it.
#[derive(Debug, Clone)]
pub struct Idempotency(Option<IdempotencyKey>);

impl Idempotency {
    /// `fingerprint` as sent by `actor` (keys are per actor: two clinicians
    /// may use the same key without meeting).
    pub fn new(fingerprint: RequestFingerprint, actor: &str) -> Idempotency {
        Idempotency(fingerprint.key.map(|key| IdempotencyKey {
            scope: format!("{actor} {}", fingerprint.route),
            key,
            request_hash: fingerprint.hash,
        }))
    }

    /// No key.
    pub fn none() -> Idempotency {
        Idempotency(None)
    }

    /// Claims the key in `tx`. `None`: go on and [`record`](Self::record)
    /// the answer. `Some`: the first answer, to return as it is.
    pub async fn claim(&self, tx: &mut WriteTx, sealer: &Sealer, now: i64) -> Result<Option<Answer>, ApiError> {
        let Some(key) = &self.0 else { return Ok(None) };
        match tx.claim_idempotency(key, now, now - KEEP_SECS).await? {
            IdempotencyClaim::New => Ok(None),
            IdempotencyClaim::Mismatch => Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                "this Idempotency-Key was used for a different request",
            )),
            IdempotencyClaim::Answered { status, sealed } => {
                let body = sealer
                    .open(&seal_context(key), &sealed)
                    .and_then(|plain| serde_json::from_slice::<Value>(&plain).ok())
                    .ok_or_else(|| {
                        ApiError::conflict(
                            "idempotent_answer_unavailable",
                            "this request was carried out already, but its answer can no longer be shown; \
                             look the result up instead",
                        )
                    })?;
                let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
                Ok(Some(Answer { status, body, replayed: true }))
            }
        }
    }

    /// Records `answer` for the key, in the same transaction as the work.
    pub async fn record(&self, tx: &mut WriteTx, sealer: &Sealer, answer: &Answer) -> Result<(), ApiError> {
        let Some(key) = &self.0 else { return Ok(()) };
        let plain = serde_json::to_vec(&answer.body).map_err(ApiError::internal)?;
        let sealed = sealer.seal(&seal_context(key), &plain);
        tx.record_answer(key, answer.status.as_u16(), &sealed).await?;
        Ok(())
    }
}

fn seal_context(key: &IdempotencyKey) -> String {
    format!("idempotency\0{}\0{}", key.scope, key.key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_checked_and_requests_fingerprinted() {
        let mut headers = HeaderMap::new();
        let none = RequestFingerprint::new(&headers, "POST", "/api/visits", b"{}").unwrap();
        assert_eq!(none.key, None);
        headers.insert(HEADER, HeaderValue::from_static("book-42"));
        let a = RequestFingerprint::new(&headers, "POST", "/api/visits", b"{\"a\":1}").unwrap();
        let b = RequestFingerprint::new(&headers, "POST", "/api/visits", b"{\"a\":2}").unwrap();
        assert_eq!(a.key.as_deref(), Some("book-42"));
        assert_ne!(a.hash, b.hash, "another body, another fingerprint");
        headers.insert(HEADER, HeaderValue::from_static("has space"));
        let bad = RequestFingerprint::new(&headers, "POST", "/api/visits", b"{}").unwrap_err();
        assert_eq!(bad.code, "invalid_idempotency_key");
        let long = "k".repeat(MAX_KEY_LEN + 1);
        headers.insert(HEADER, HeaderValue::from_str(&long).unwrap());
        assert!(RequestFingerprint::new(&headers, "POST", "/x", b"").is_err());
    }
}
