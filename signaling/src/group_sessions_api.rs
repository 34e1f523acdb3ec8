//! `/api/group-sessions*`: HTTP handlers for recurring classes (create,
//! list, read, enrol, withdraw). The rules are in [`crate::group_sessions`].

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use crate::api_extract::{ApiJson, IdempotentJson, Staff};
use crate::app::App;
use crate::group_sessions::{self, CreateSession, Enrol};
use crate::http_error::ApiError;
use crate::idempotency::Idempotency;

/// `POST /api/group-sessions`: 201 with the session and its occurrences.
pub async fn create(
    State(app): State<Arc<App>>,
    staff: Staff,
    ApiJson(body): ApiJson<CreateSession>,
) -> Result<Response, ApiError> {
    let view = group_sessions::create(&app, &staff, &body).await?;
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

/// `GET /api/group-sessions`
pub async fn list(State(app): State<Arc<App>>, staff: Staff) -> Result<Json<Value>, ApiError> {
    Ok(Json(group_sessions::list(&app, &staff).await?))
}

/// `GET /api/group-sessions/{id}`
pub async fn get(State(app): State<Arc<App>>, staff: Staff, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let session = group_sessions::session_for(&app, &staff, &id).await?;
    Ok(Json(group_sessions::session_json(&app, &session).await?))
}

/// `POST /api/group-sessions/{id}/enrolments`: 201 with the patient's links
/// (idempotent with `Idempotency-Key`).
pub async fn enrol(
    State(app): State<Arc<App>>,
    staff: Staff,
    Path(id): Path<String>,
    IdempotentJson(body, fingerprint): IdempotentJson<Enrol>,
) -> Result<Response, ApiError> {
    let idempotency = Idempotency::new(fingerprint, &crate::visits::actor(&staff));
    Ok(group_sessions::enrol(&app, &staff, &id, &body, &idempotency).await?.into_response())
}

/// `DELETE /api/group-sessions/{id}/enrolments/{patient_id}`: 204.
pub async fn withdraw(
    State(app): State<Arc<App>>,
    staff: Staff,
    Path((id, patient_id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    group_sessions::withdraw(&app, &staff, &id, &patient_id).await?;
    Ok(StatusCode::NO_CONTENT)
}
