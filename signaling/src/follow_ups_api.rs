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

/// `GET /api/follow-ups`: the follow-up queue, urgent first, then by due
/// date; each with its patient (name and hospital number) for the staff
/// screen, and the start of its visit when placed.
pub async fn queue(
    State(app): State<Arc<App>>,
    staff: Staff,
    ApiQuery(q): ApiQuery<QueueQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let items = follow_ups::queue(&app, &staff, &q).await?;
    let now = app.clock.now();
    let mut out = Vec::with_capacity(items.len());
    for f in &items {
        let mut item = follow_up_json(f, now);
        if let Some(p) = app.store.patient_by_id(&f.patient_id).await? {
            item["patient"] = json!({"display_name": p.display_name, "hospital_id": p.hospital_id});
        }
        if let Some(v) = &f.visit_id
            && let Some(visit) = app.store.visit_by_id(v).await?
        {
            item["scheduled_start"] = json!(crate::timefmt::rfc3339(visit.scheduled_start));
        }
        out.push(item);
    }
    Ok(Json(json!({ "follow_ups": out })))
}

/// `POST /api/follow-ups/{id}/book-sooner`: the earliest free slot within
/// the urgent horizon, on the follow-up's clinician or another of the same
/// specialty (see [`crate::urgent`]). The follow-up becomes urgent either way.
pub async fn book_sooner(
    State(app): State<Arc<App>>,
    staff: Staff,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let f = follow_ups::follow_up_for(&app, &staff, &id).await?;
    let outcome = crate::urgent::book_sooner(&app, &actor(&staff), &f.id).await?;
    let (label, visit, link) = match &outcome {
        crate::urgent::Sooner::Booked { visit, token, handed_over } => {
            let label = if *handed_over { "handed_over" } else { "booked" };
            (label, Some(visit), Some(json!({ "url": app.link_url(token) })))
        }
        crate::urgent::Sooner::AlreadySoon(visit) => ("already_soon", Some(visit), None),
        crate::urgent::Sooner::NoSlot => ("no_slot", None, None),
    };
    if let crate::urgent::Sooner::Booked { visit, handed_over, .. } = &outcome {
        let kind = if *handed_over { "follow_up_handed_over" } else { "booked_sooner" };
        let who = [f.clinician_id.as_str(), visit.clinician_id.as_str()];
        let when = crate::timefmt::rfc3339(visit.scheduled_start);
        crate::urgent::notify(&app, &who, kind, &visit.id, Some(&f.id), &when).await?;
    }
    let updated = app.store.follow_up_by_id(&f.id).await?.ok_or_else(ApiError::not_found)?;
    let visit = match visit {
        Some(v) => Some(crate::visits::visit_json(&app, v).await?),
        None => None,
    };
    Ok(Json(json!({
        "outcome": label,
        "follow_up": follow_up_json(&updated, app.clock.now()),
        "visit": visit,
        "patient_link": link,
    })))
}

/// `GET /api/notifications` query.
#[derive(Debug, serde::Deserialize)]
pub struct InboxQuery {
    /// Only unread ones.
    #[serde(default)]
    pub unread: bool,
}

/// `GET /api/notifications`: the caller's inbox, newest first (at most 100),
/// with the count of unread ones.
pub async fn inbox(
    State(app): State<Arc<App>>,
    staff: Staff,
    ApiQuery(q): ApiQuery<InboxQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    staff.require(&[crate::store::StaffRole::Clinician, crate::store::StaffRole::Admin])?;
    let items = app.store.notifications_of(&staff.0.id, q.unread, 100).await?;
    let unread = app.store.unread_notifications(&staff.0.id).await?;
    let items: Vec<serde_json::Value> = items
        .iter()
        .map(|n| {
            json!({
                "id": n.id,
                "kind": n.kind,
                "visit_id": n.visit_id,
                "follow_up_id": n.follow_up_id,
                "detail": n.detail,
                "created_at": crate::timefmt::rfc3339(n.created_at),
                "read_at": n.read_at.map(crate::timefmt::rfc3339),
            })
        })
        .collect();
    Ok(Json(json!({ "notifications": items, "unread": unread })))
}

/// `POST /api/notifications/{id}/read`: 204; 404 if it is not the caller's.
pub async fn mark_read(
    State(app): State<Arc<App>>,
    staff: Staff,
    Path(id): Path<String>,
) -> Result<axum::http::StatusCode, ApiError> {
    staff.require(&[crate::store::StaffRole::Clinician, crate::store::StaffRole::Admin])?;
    if app.store.mark_notification_read(&id, &staff.0.id, app.clock.now()).await? {
        Ok(axum::http::StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found())
    }
}
