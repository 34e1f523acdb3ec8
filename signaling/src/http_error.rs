//! Errors with a stable code: `{"error": {"code", "message"}}` with the
//! right status on HTTP, and the same code in a WebSocket `error`. Domain
//! modules return them, so the HTTP API and the WebSocket refuse the same
//! thing in the same words.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::store::{StoreError, Transient};

/// An API error with a stable code.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable snake_case code.
    pub code: &'static str,
    /// Human-readable explanation.
    pub message: String,
    /// Machine-readable extras (e.g. when a link opens).
    pub details: Option<serde_json::Value>,
    /// Seconds to wait before retrying (sent as `Retry-After`).
    pub retry_after_secs: Option<u64>,
}

impl ApiError {
    /// A new error.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into(), details: None, retry_after_secs: None }
    }

    /// Adds machine-readable details.
    pub fn with_details(mut self, details: serde_json::Value) -> Self {
        self.details = Some(details);
        self
    }

    /// Adds a `Retry-After`.
    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after_secs = Some(secs);
        self
    }

    /// 404 `not_found`.
    pub fn not_found() -> Self {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such resource")
    }

    /// 400 with a code.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 422 `validation_failed`, naming the field.
    pub fn invalid(field: &str, why: &str) -> Self {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed", format!("{field}: {why}"))
    }

    /// 403 `forbidden`.
    pub fn forbidden() -> Self {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", "you may not act on this")
    }

    /// 409 with a code.
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::CONFLICT, code, message)
    }

    /// 409 `slot_taken`: the clinician already has a visit then.
    pub fn slot_taken() -> Self {
        ApiError::conflict("slot_taken", "the clinician already has a visit at that time")
    }

    /// 503 `service_busy`, to be retried shortly.
    pub fn busy() -> Self {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "service_busy", "the server is busy; try again in a moment")
            .retry_after(1)
    }

    /// 500 `internal`, logging the cause (which never carries personal data).
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "something failed on the server")
    }
}

/// The error code of an answer, kept on the response for the middleware
/// that writes security events (see `response_policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorCodeTag(pub &'static str);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut error = json!({ "code": self.code, "message": self.message });
        if let Some(details) = self.details {
            error["details"] = details;
        }
        let mut response = (self.status, Json(json!({ "error": error }))).into_response();
        response.extensions_mut().insert(ErrorCodeTag(self.code));
        if let Some(secs) = self.retry_after_secs
            && let Ok(v) = HeaderValue::from_str(&secs.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
        response
    }
}

impl Transient for ApiError {
    fn is_transient(&self) -> bool {
        self.code == "service_busy"
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => ApiError::not_found(),
            StoreError::Conflict => ApiError::conflict("conflict", "that conflicts with what is stored"),
            StoreError::Overlap => ApiError::slot_taken(),
            StoreError::ClassFull => {
                ApiError::conflict("class_full", "the class already holds its capacity of patients")
            }
            StoreError::Busy => ApiError::busy(),
            StoreError::Unavailable(why) => {
                tracing::error!(error = %why, "database unavailable");
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "database_unavailable", "the database cannot be reached")
                    .retry_after(5)
            }
            other => ApiError::internal(other),
        }
    }
}
