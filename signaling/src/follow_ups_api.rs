//! HTTP handlers for availability and follow-ups:
//! `PUT/GET /api/clinicians/{id}/availability`, `POST /api/visits/{id}/follow-ups`,
//! `GET /api/follow-ups`, and a follow-up's `assign` and `cancel`. The rules
//! are in [`crate::follow_ups`].

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::api_extract::{ApiJson, ApiQuery, IdempotentJson, Staff};
use crate::app::App;
use crate::follow_ups::{self, Assign, AvailabilityInput, BookFollowUp, QueueQuery, follow_up_json, may_manage};
use crate::http_error::ApiError;
use crate::idempotency::Idempotency;
use crate::visits::actor;

/// `PUT /api/clinicians/{id}/availability`
pub async fn set_availability(
    State(app): State<Arc<App>>,
    staff: Staff,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<AvailabilityInput>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let availability = follow_ups::set_availability(&app, &staff, &id, body).await?;
    Ok(Json(json!({ "availability": availability })))
}

/// `GET /api/clinicians/{id}/availability`
pub async fn get_availability(
    State(app): State<Arc<App>>,
    staff: Staff,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    may_manage(&staff, &id)?;
    Ok(Json(json!({ "availability": app.store.availability_of(&id).await? })))
}

/// `POST /api/visits/{id}/follow-ups` (idempotent with `Idempotency-Key`).
pub async fn book(
    State(app): State<Arc<App>>,
    staff: Staff,
    Path(id): Path<String>,
    IdempotentJson(body, fingerprint): IdempotentJson<BookFollowUp>,
) -> Result<Response, ApiError> {
    let idempotency = Idempotency::new(fingerprint, &actor(&staff));
    Ok(follow_ups::book(&app, &staff, &id, &body, &idempotency).await?.into_response())
}

/// `POST /api/follow-ups/{id}/assign` (idempotent with `Idempotency-Key`).
pub async fn assign(
    State(app): State<Arc<App>>,
    staff: Staff,
    Path(id): Path<String>,
    IdempotentJson(body, fingerprint): IdempotentJson<Assign>,
) -> Result<Response, ApiError> {
    let idempotency = Idempotency::new(fingerprint, &actor(&staff));
    Ok(follow_ups::assign(&app, &staff, &id, &body, &idempotency).await?.into_response())
}

/// `POST /api/follow-ups/{id}/cancel`
pub async fn cancel(
    State(app): State<Arc<App>>,
    staff: Staff,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let f = follow_ups::cancel(&app, &staff, &id).await?;
    Ok(Json(json!({ "follow_up": follow_up_json(&f, app.clock.now()) })))
}

/// `GET /api/follow-ups`: the follow-up queue, by due date then priority.
pub async fn queue(
    State(app): State<Arc<App>>,
    staff: Staff,
    ApiQuery(q): ApiQuery<QueueQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let items = follow_ups::queue(&app, &staff, &q).await?;
    let now = app.clock.now();
    Ok(Json(json!({ "follow_ups": items.iter().map(|f| follow_up_json(f, now)).collect::<Vec<_>>() })))
}
