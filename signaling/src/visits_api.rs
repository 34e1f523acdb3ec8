//! `/api/visits*`: HTTP handlers for creating, listing, reading,
//! rescheduling, cancelling, starting and ending visits; guest links; the
//! clinician's join token; the audit trail; the CSV import. Each handler
//! checks its input's shape and hands the rules to [`crate::visits`].

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use teleconsult_protocol::Role;

use crate::api_extract::{ApiQuery, IdempotentJson, Staff};
use crate::app::App;
use crate::http_error::ApiError;
use crate::idempotency::{Idempotency, RequestFingerprint};
use crate::store::StaffRole;
use crate::timefmt::{day_range, rfc3339};
use crate::visits::{self, CreateVisit, STAFF_WHO_RUN_VISITS, actor, link_json, visit_for, visit_json};

/// `PATCH /api/visits/{id}` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reschedule {
    /// New start, RFC 3339.
    pub scheduled_start: Option<String>,
    /// New length.
    pub duration_minutes: Option<i64>,
}

/// `GET /api/visits` query.
#[derive(Debug, Deserialize)]
pub struct ListQuery {
    /// `YYYY-MM-DD`; default today.
    pub date: Option<String>,
    /// The caller's time zone, minutes east of UTC (e.g. 60 for Paris in winter).
    #[serde(default)]
    pub tz_offset_minutes: i64,
    /// Admins: another clinician's day.
    pub clinician_id: Option<String>,
}

/// `POST /api/visits/{id}/guest-links` body.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuestLinkInput {
    /// What the guest is ("interpreter", "daughter"); shown as their name.
    pub label: Option<String>,
}

/// `POST /api/visits` (idempotent with `Idempotency-Key`).
pub async fn create(
    State(app): State<Arc<App>>,
    staff: Staff,
    IdempotentJson(body, fingerprint): IdempotentJson<CreateVisit>,
) -> Result<Response, ApiError> {
    let idempotency = Idempotency::new(fingerprint, &actor(&staff));
    Ok(visits::create(&app, &staff, &body, &idempotency).await?.into_response())
}

/// `GET /api/visits?date=…`
pub async fn list(
    State(app): State<Arc<App>>,
    staff: Staff,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    staff.require(STAFF_WHO_RUN_VISITS)?;
    let clinician_id = q.clinician_id.clone().unwrap_or_else(|| staff.0.id.clone());
    if !staff.may_act_on(&clinician_id) {
        return Err(ApiError::forbidden());
    }
    if !(-14 * 60..=14 * 60).contains(&q.tz_offset_minutes) {
        return Err(ApiError::invalid("tz_offset_minutes", "must be between -840 and 840"));
    }
    let date = match &q.date {
        Some(d) => d.clone(),
        None => rfc3339(app.clock.now() + q.tz_offset_minutes * 60)[..10].to_string(),
    };
    let (from, to) =
        day_range(&date, q.tz_offset_minutes).ok_or_else(|| ApiError::invalid("date", "must be YYYY-MM-DD"))?;
    let visits = app.store.visits_of_clinician(&clinician_id, from, to).await?;
    let clinician = app.store.clinician_by_id(&clinician_id).await?;
    let mut out = Vec::with_capacity(visits.len());
    for v in &visits {
        let patient = app.store.patient_by_id(&v.patient_id).await?;
        out.push(visits::visit_view(&app, v, patient.as_ref(), clinician.as_ref()));
    }
    Ok(Json(json!({ "date": date, "visits": out })))
}

/// `GET /api/visits/{id}`
pub async fn get(State(app): State<Arc<App>>, staff: Staff, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let visit = visit_for(&app, &staff, &id).await?;
    let links: Vec<Value> = app.store.links_of_visit(&id).await?.iter().map(|l| link_json(&app, l, None)).collect();
    let mut body = visit_json(&app, &visit).await?;
    body["links"] = json!(links);
    Ok(Json(json!({ "visit": body })))
}

/// `PATCH /api/visits/{id}`: reschedule; the links' windows move with it.
pub async fn reschedule(
    State(app): State<Arc<App>>,
    staff: Staff,
    Path(id): Path<String>,
    crate::api_extract::ApiJson(body): crate::api_extract::ApiJson<Reschedule>,
) -> Result<Json<Value>, ApiError> {
    let visit = visits::reschedule(&app, &staff, &id, body.scheduled_start.as_deref(), body.duration_minutes).await?;
    Ok(Json(json!({ "visit": visit_json(&app, &visit).await? })))
}

/// `POST /api/visits/{id}/cancel`: revokes its links and closes any live room.
pub async fn cancel(
    State(app): State<Arc<App>>,
    staff: Staff,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let visit = visits::cancel(&app, &staff, &id).await?;
    Ok(Json(json!({ "visit": visit_json(&app, &visit).await? })))
}

/// `POST /api/visits/{id}/start`: creates the media room (idempotent).
pub async fn start(State(app): State<Arc<App>>, staff: Staff, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let visit = visits::start(&app, &staff, &id).await?;
    Ok(Json(json!({ "visit": visit_json(&app, &visit).await? })))
}

/// `POST /api/visits/{id}/end`: ends the visit for everyone.
pub async fn end(State(app): State<Arc<App>>, staff: Staff, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    visit_for(&app, &staff, &id).await?;
    let visit = visits::end(&app, &staff.0.id, &id).await?;
    Ok(Json(json!({ "visit": visit_json(&app, &visit).await? })))
}

/// `POST /api/visits/{id}/guest-links`
pub async fn guest_link(
    State(app): State<Arc<App>>,
    staff: Staff,
    Path(id): Path<String>,
    body: Result<axum::body::Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body =
        body.map_err(|_| ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", "the body is too large"))?;
    // The body is optional: none, `{}` and `{"label": …}` all work.
    let input: GuestLinkInput = if body.iter().all(|b| b.is_ascii_whitespace()) {
        GuestLinkInput::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::bad_request("invalid_body", e.to_string()))?
    };
    let (link, token) = visits::issue_guest_link(&app, &staff, &id, input.label).await?;
    Ok((StatusCode::CREATED, Json(json!({ "link": link_json(&app, &link, Some(&token)) }))).into_response())
}

/// `POST /api/visits/{id}/links/{link_id}/revoke`: withdraws a guest link.
pub async fn revoke_link(
    State(app): State<Arc<App>>,
    staff: Staff,
    Path((id, link_id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let link = visits::revoke_guest_link(&app, &staff, &id, &link_id).await?;
    Ok(Json(json!({ "link": link_json(&app, &link, None) })))
}

/// `POST /api/visits/{id}/links/{link_id}/allow`: lets a denied link back in.
pub async fn allow_link(
    State(app): State<Arc<App>>,
    staff: Staff,
    Path((id, link_id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let link = visits::allow_link(&app, &staff, &id, &link_id).await?;
    Ok(Json(json!({ "link": link_json(&app, &link, None) })))
}

/// `POST /api/visits/{id}/join-token`: the caller's join token for the visit's room.
pub async fn join_token(
    State(app): State<Arc<App>>,
    staff: Staff,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let visit = visit_for(&app, &staff, &id).await?;
    if !visit.status.is_live() {
        return Err(ApiError::conflict("visit_closed", "the visit is over or cancelled"));
    }
    let ttl = 15 * 60;
    let token = app
        .keys
        .mint_join(
            &id,
            Role::Clinician,
            &staff.0.display_name,
            &actor(&staff),
            crate::join_token::unix_now(),
            ttl,
            false,
        )
        .map_err(ApiError::internal)?;
    Ok(Json(json!({ "join_token": token, "expires_in": ttl, "room_id": id })))
}

/// `GET /api/visits/{id}/audit`
pub async fn audit(State(app): State<Arc<App>>, staff: Staff, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    visit_for(&app, &staff, &id).await?;
    let events: Vec<Value> = app
        .store
        .audit_of_visit(&id)
        .await?
        .into_iter()
        .map(|e| json!({"at": rfc3339(e.at), "actor": e.actor, "action": e.action, "detail": e.detail}))
        .collect();
    Ok(Json(json!({ "visit_id": id, "events": events })))
}

/// `POST /api/visits/import` query.
#[derive(Debug, Deserialize)]
pub struct ImportQuery {
    /// Import the good rows even if others are bad.
    #[serde(default)]
    pub partial: bool,
    /// Check and place every row, then roll back: a preview.
    #[serde(default)]
    pub dry_run: bool,
}

/// `POST /api/visits/import` (admins): the CSV is the body. Idempotent with
/// `Idempotency-Key`.
pub async fn import(
    State(app): State<Arc<App>>,
    staff: Staff,
    ApiQuery(q): ApiQuery<ImportQuery>,
    headers: HeaderMap,
    uri: axum::http::Uri,
    body: Result<axum::body::Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    staff.require(&[StaffRole::Admin])?;
    let body = body.map_err(|_| {
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", "the file is larger than 16 MiB")
    })?;
    let path_and_query = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/api/visits/import");
    let fingerprint = RequestFingerprint::new(&headers, "POST", path_and_query, &body)?;
    let idempotency = Idempotency::new(fingerprint, &actor(&staff));
    let importer = crate::visit_import::Importer {
        store: &app.store,
        now: app.clock.now(),
        public_url: &app.public_url,
        links: app.link_settings(),
        actor: actor(&staff),
        clinic_zone: crate::zones::zone_or_utc(&app.config.clinic_time_zone),
    };
    let report = importer.import(&body, q.partial, q.dry_run, Some((&idempotency, &app.sealer))).await?;
    Ok(report.into_response())
}
