//! `/api/visits*`: create, list, read, reschedule, cancel, start and end
//! visits; guest links; the clinician's join token; the audit trail.
//!
//! Every handler checks access first: clinicians act on their own visits,
//! admins on any, ops on none.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use teleconsult_protocol::Role;
use teleconsult_sfu::{RoomId, RoomOptions};

use crate::api_extract::{ApiJson, ApiQuery, Staff};
use crate::http_error::ApiError;
use crate::server::App;
use crate::staff_auth::token_hash;
use crate::store::{Link, LinkRole, NewVisit, Patient, StaffRole, Visit, VisitKind, VisitStatus};
use crate::timefmt::{day_range, parse_rfc3339, rfc3339};
use crate::visit_rooms::{audit_event, close_room};

const STAFF_WHO_RUN_VISITS: &[StaffRole] = &[StaffRole::Clinician, StaffRole::Admin];

/// Checks a free-text field: length bounds and no control characters. The
/// value is stored exactly as given.
pub fn check_text(field: &str, value: &str, min: usize, max: usize) -> Result<(), ApiError> {
    let n = value.chars().count();
    if n < min || value.trim().chars().count() < min {
        return Err(ApiError::invalid(field, "is required"));
    }
    if n > max {
        return Err(ApiError::invalid(field, &format!("must be at most {max} characters")));
    }
    if value.chars().any(|c| c.is_control()) {
        return Err(ApiError::invalid(field, "must not contain control characters"));
    }
    Ok(())
}

/// The patient part of a new visit: an existing patient's id, or a new
/// patient's details.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatientInput {
    /// An existing patient.
    pub id: Option<String>,
    /// A new patient's name.
    pub display_name: Option<String>,
    /// The hospital's patient number.
    pub hospital_id: Option<String>,
    /// Phone or email for reminders.
    pub contact: Option<String>,
}

/// `POST /api/visits` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateVisit {
    /// Who the visit is for.
    pub patient: PatientInput,
    /// Whose visit (admins only; default: the caller).
    pub clinician_id: Option<String>,
    /// RFC 3339.
    pub scheduled_start: String,
    /// 5 to 240.
    pub duration_minutes: i64,
    /// Default `follow_up`.
    pub kind: Option<VisitKind>,
}

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

fn check_duration(minutes: i64) -> Result<(), ApiError> {
    if !(5..=240).contains(&minutes) {
        return Err(ApiError::invalid("duration_minutes", "must be between 5 and 240"));
    }
    Ok(())
}

fn parse_start(text: &str, now: i64) -> Result<i64, ApiError> {
    let t = parse_rfc3339(text).ok_or_else(|| ApiError::invalid("scheduled_start", "must be an RFC 3339 time"))?;
    if t < now - 7 * 86_400 || t > now + 2 * 366 * 86_400 {
        return Err(ApiError::invalid("scheduled_start", "must be within a week ago and two years ahead"));
    }
    Ok(t)
}

/// A new link for a visit scheduled over `[start, end)`, valid around that
/// time. Returns the record and the token (shown once, never stored).
pub fn new_link(
    app: &App,
    visit_id: &str,
    window: (i64, i64),
    role: LinkRole,
    label: Option<String>,
) -> (Link, String) {
    let margins = (app.config.link_opens_before, app.config.link_closes_after);
    make_link(visit_id, window, margins, role, label, app.clock.now())
}

/// A link valid from `opens_before` seconds before `start` until
/// `closes_after` seconds after `end`, created at `now`.
pub fn make_link(
    visit_id: &str,
    (start, end): (i64, i64),
    (opens_before, closes_after): (i64, i64),
    role: LinkRole,
    label: Option<String>,
    now: i64,
) -> (Link, String) {
    let token = crate::secret::random_token();
    let (valid_from, valid_until) = (start - opens_before, end + closes_after);
    let link = Link {
        id: crate::secret::random_id("l"),
        visit_id: visit_id.to_string(),
        role,
        label,
        token_hash: token_hash(&token),
        valid_from,
        valid_until,
        revoked_at: None,
        created_at: now,
    };
    (link, token)
}

fn link_window(app: &App, start: i64, end: i64) -> (i64, i64) {
    (start - app.config.link_opens_before, end + app.config.link_closes_after)
}

fn link_json(app: &App, link: &Link, token: Option<&str>) -> Value {
    let mut v = json!({
        "id": link.id,
        "role": link.role,
        "label": link.label,
        "valid_from": rfc3339(link.valid_from),
        "valid_until": rfc3339(link.valid_until),
        "revoked_at": link.revoked_at.map(rfc3339),
    });
    if let Some(token) = token {
        v["url"] = json!(format!("{}/join/{token}", app.public_url));
    }
    v
}

/// The API form of a visit, with its patient and clinician.
pub async fn visit_json(app: &App, visit: &Visit) -> Result<Value, ApiError> {
    let patient = app.store.patient_by_id(&visit.patient_id).await?;
    let clinician = app.store.clinician_by_id(&visit.clinician_id).await?;
    let red_flags: Vec<&str> = visit
        .questionnaire
        .as_ref()
        .and_then(|q| serde_json::from_value::<crate::questionnaire::Answers>(q.clone()).ok())
        .map(|a| a.red_flags(&app.config.red_flags))
        .unwrap_or_default();
    Ok(json!({
        "id": visit.id,
        "status": visit.status,
        "kind": visit.kind,
        "scheduled_start": rfc3339(visit.scheduled_start),
        "scheduled_end": rfc3339(visit.scheduled_end()),
        "duration_minutes": visit.duration_minutes,
        "patient": patient.map(|p| json!({"id": p.id, "display_name": p.display_name, "hospital_id": p.hospital_id, "contact": p.contact})),
        "clinician": clinician.map(|c| json!({"id": c.id, "display_name": c.display_name, "specialty": c.specialty})),
        "questionnaire": visit.questionnaire,
        "red_flags": red_flags,
        "started_at": visit.started_at.map(rfc3339),
        "ended_at": visit.ended_at.map(rfc3339),
        "cancelled_at": visit.cancelled_at.map(rfc3339),
    }))
}

/// Loads a visit the caller may act on: 404 if it does not exist, 403 if it is not theirs.
async fn visit_for(app: &App, staff: &Staff, id: &str) -> Result<Visit, ApiError> {
    staff.require(STAFF_WHO_RUN_VISITS)?;
    let visit = app.store.visit_by_id(id).await?.ok_or_else(ApiError::not_found)?;
    if !staff.may_act_on(&visit.clinician_id) {
        return Err(ApiError::forbidden());
    }
    Ok(visit)
}

fn actor(staff: &Staff) -> String {
    format!("clinician:{}", staff.0.id)
}

/// `POST /api/visits`
pub async fn create(
    State(app): State<Arc<App>>,
    staff: Staff,
    ApiJson(body): ApiJson<CreateVisit>,
) -> Result<Response, ApiError> {
    staff.require(STAFF_WHO_RUN_VISITS)?;
    let now = app.clock.now();
    let clinician_id = body.clinician_id.clone().unwrap_or_else(|| staff.0.id.clone());
    if !staff.may_act_on(&clinician_id) {
        return Err(ApiError::forbidden());
    }
    let clinician = app
        .store
        .clinician_by_id(&clinician_id)
        .await?
        .filter(|c| c.active && c.role != StaffRole::Ops)
        .ok_or_else(|| ApiError::invalid("clinician_id", "no such active clinician"))?;
    let scheduled_start = parse_start(&body.scheduled_start, now)?;
    check_duration(body.duration_minutes)?;
    let (patient_id, new_patient) = match (&body.patient.id, &body.patient.display_name) {
        (Some(id), None) => {
            app.store.patient_by_id(id).await?.ok_or_else(|| ApiError::invalid("patient.id", "no such patient"))?;
            // A clinician books existing patients they have seen; admins any.
            if staff.0.role != StaffRole::Admin && !app.store.patient_seen_by(id, &staff.0.id).await? {
                return Err(ApiError::forbidden());
            }
            if body.patient.hospital_id.is_some() || body.patient.contact.is_some() {
                return Err(ApiError::invalid("patient", "give only the id of an existing patient"));
            }
            (id.clone(), None)
        }
        (None, Some(name)) => {
            check_text("patient.display_name", name, 1, 200)?;
            if let Some(h) = &body.patient.hospital_id {
                check_text("patient.hospital_id", h, 1, 64)?;
            }
            if let Some(c) = &body.patient.contact {
                check_text("patient.contact", c, 1, 200)?;
            }
            let p = Patient {
                id: crate::secret::random_id("pt"),
                display_name: name.clone(),
                hospital_id: body.patient.hospital_id.clone(),
                contact: body.patient.contact.clone(),
                created_at: now,
            };
            (p.id.clone(), Some(p))
        }
        _ => return Err(ApiError::invalid("patient", "give either id or display_name")),
    };
    let new_visit = NewVisit {
        id: crate::secret::random_id("v"),
        patient_id,
        clinician_id: clinician.id.clone(),
        scheduled_start,
        duration_minutes: body.duration_minutes,
        kind: body.kind.unwrap_or(VisitKind::FollowUp),
    };
    let (visit, link, token) = book(&app, &actor(&staff), new_patient.as_ref(), &new_visit).await?;
    let body =
        json!({ "visit": visit_json(&app, &visit).await?, "patient_link": link_json(&app, &link, Some(&token)) });
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// Stores a new visit (and its patient, if new) with its patient link and
/// an audit event, in one transaction. Returns the visit, the link and the
/// link's token.
pub async fn book(
    app: &App,
    actor: &str,
    new_patient: Option<&Patient>,
    new_visit: &NewVisit,
) -> Result<(Visit, Link, String), ApiError> {
    let window = (new_visit.scheduled_start, new_visit.scheduled_start + new_visit.duration_minutes * 60);
    let (link, token) = new_link(app, &new_visit.id, window, LinkRole::Patient, None);
    let audit = audit_event(app, actor, "created", &new_visit.id, None);
    let visit = app.store.create_visit(new_patient, new_visit, &link, &audit, app.clock.now()).await?;
    Ok((visit, link, token))
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
    let mut out = Vec::with_capacity(visits.len());
    for v in &visits {
        out.push(visit_json(&app, v).await?);
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
    ApiJson(body): ApiJson<Reschedule>,
) -> Result<Json<Value>, ApiError> {
    let visit = visit_for(&app, &staff, &id).await?;
    if visit.status != VisitStatus::Scheduled {
        return Err(ApiError::conflict("visit_not_scheduled", "only a scheduled visit can be rescheduled"));
    }
    let now = app.clock.now();
    let start = match &body.scheduled_start {
        Some(s) => parse_start(s, now)?,
        None => visit.scheduled_start,
    };
    let duration = body.duration_minutes.unwrap_or(visit.duration_minutes);
    check_duration(duration)?;
    let window = link_window(&app, start, start + duration * 60);
    let audit = audit_event(&app, &actor(&staff), "rescheduled", &id, None);
    let visit = app.store.reschedule_visit(&id, start, duration, window, &audit).await?;
    Ok(Json(json!({ "visit": visit_json(&app, &visit).await? })))
}

async fn transition(
    app: &App,
    staff: &Staff,
    id: &str,
    from: &[VisitStatus],
    to: VisitStatus,
    action: &str,
) -> Result<Visit, ApiError> {
    let visit = visit_for(app, staff, id).await?;
    let audit = audit_event(app, &actor(staff), action, id, None);
    match app.store.transition_visit(&visit.id, from, to, app.clock.now(), &audit).await {
        Ok(v) => Ok(v),
        Err(crate::store::StoreError::Conflict) => Err(ApiError::conflict(
            "invalid_transition",
            format!("a {} visit cannot be {action}", visit.status.as_str()),
        )),
        Err(e) => Err(e.into()),
    }
}

/// `POST /api/visits/{id}/cancel`: revokes its links and closes any live room.
pub async fn cancel(
    State(app): State<Arc<App>>,
    staff: Staff,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let visit = transition(
        &app,
        &staff,
        &id,
        &[VisitStatus::Scheduled, VisitStatus::InProgress],
        VisitStatus::Cancelled,
        "cancelled",
    )
    .await?;
    close_room(&app, &id, "visit_cancelled").await;
    Ok(Json(json!({ "visit": visit_json(&app, &visit).await? })))
}

/// `POST /api/visits/{id}/start`: creates the media room (idempotent).
pub async fn start(State(app): State<Arc<App>>, staff: Staff, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let current = visit_for(&app, &staff, &id).await?;
    // Starting twice is harmless, and audited once.
    let visit = if current.status == VisitStatus::InProgress {
        current
    } else {
        transition(&app, &staff, &id, &[VisitStatus::Scheduled], VisitStatus::InProgress, "started").await?
    };
    let options = RoomOptions { max_participants: Some(app.config.max_participants) };
    app.sfu.create_room(RoomId(id.clone()), options).await.map_err(ApiError::internal)?;
    Ok(Json(json!({ "visit": visit_json(&app, &visit).await? })))
}

/// `POST /api/visits/{id}/end`: ends the visit for everyone.
pub async fn end(State(app): State<Arc<App>>, staff: Staff, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let visit = end_visit(&app, &staff.0.id, Some(&staff), &id).await?;
    Ok(Json(json!({ "visit": visit_json(&app, &visit).await? })))
}

/// Ends a visit (HTTP or WebSocket): completed in the store, room closed.
/// `staff` is checked when given (HTTP); the WebSocket path has checked its seat.
pub async fn end_visit(app: &App, clinician_id: &str, staff: Option<&Staff>, id: &str) -> Result<Visit, ApiError> {
    if let Some(staff) = staff {
        visit_for(app, staff, id).await?;
    }
    let audit = audit_event(app, &format!("clinician:{clinician_id}"), "ended", id, None);
    let visit = match app
        .store
        .transition_visit(
            id,
            &[VisitStatus::Scheduled, VisitStatus::InProgress],
            VisitStatus::Completed,
            app.clock.now(),
            &audit,
        )
        .await
    {
        Ok(v) => v,
        Err(crate::store::StoreError::Conflict) => {
            return Err(ApiError::conflict("invalid_transition", "the visit is already over"));
        }
        Err(e) => return Err(e.into()),
    };
    close_room(app, id, "visit_ended").await;
    Ok(visit)
}

/// `POST /api/visits/{id}/guest-links`
pub async fn guest_link(
    State(app): State<Arc<App>>,
    staff: Staff,
    Path(id): Path<String>,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    let body =
        body.map_err(|_| ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", "the body is too large"))?;
    // The body is optional: none, `{}` and `{"label": …}` all work.
    let input: GuestLinkInput = if body.iter().all(|b| b.is_ascii_whitespace()) {
        GuestLinkInput::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::bad_request("invalid_body", e.to_string()))?
    };
    let visit = visit_for(&app, &staff, &id).await?;
    if !matches!(visit.status, VisitStatus::Scheduled | VisitStatus::InProgress) {
        return Err(ApiError::conflict("visit_closed", "the visit is over or cancelled"));
    }
    let label = input.label;
    if let Some(l) = &label {
        check_text("label", l, 1, 80)?;
    }
    let (link, token) =
        new_link(&app, &visit.id, (visit.scheduled_start, visit.scheduled_end()), LinkRole::Guest, label);
    let audit = audit_event(&app, &actor(&staff), "guest_link_created", &id, Some(link.id.clone()));
    app.store.insert_link(&link, &audit).await?;
    Ok((StatusCode::CREATED, Json(json!({ "link": link_json(&app, &link, Some(&token)) }))).into_response())
}

/// `POST /api/visits/{id}/join-token`: the caller's join token for the visit's room.
pub async fn join_token(
    State(app): State<Arc<App>>,
    staff: Staff,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let visit = visit_for(&app, &staff, &id).await?;
    if !matches!(visit.status, VisitStatus::Scheduled | VisitStatus::InProgress) {
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
