//! Availability and follow-up booking: `PUT/GET /api/clinicians/{id}/availability`,
//! `POST /api/visits/{id}/follow-ups` and `GET /api/follow-ups`.
//!
//! Placement is serialised through one lock, so concurrent bookings can
//! never take the same slot (one node; a cluster will take a database lock).

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use crate::api_extract::{ApiJson, ApiQuery, Staff};
use crate::follow_up_placement::{Availability, WeeklyPeriod, first_free_slot};
use crate::http_error::ApiError;
use crate::server::App;
use crate::store::{FollowUp, LinkRole, NewVisit, StaffRole, VisitKind, VisitStatus};
use crate::timefmt::rfc3339;
use crate::visit_rooms::audit_event;
use crate::visits_api::{check_text, new_link};

/// `PUT /api/clinicians/{id}/availability` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AvailabilityInput {
    /// Slot length, minutes (5 to 120).
    pub slot_minutes: u16,
    /// The clinician's time zone, minutes east of UTC.
    #[serde(default)]
    pub tz_offset_minutes: i16,
    /// Working periods: weekday 0 (Monday) to 6, `HH:MM` to `HH:MM`.
    pub weekly: Vec<PeriodInput>,
    /// Days off, `YYYY-MM-DD`.
    #[serde(default)]
    pub days_off: Vec<String>,
}

/// One working period.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeriodInput {
    /// 0 = Monday … 6 = Sunday.
    pub weekday: u8,
    /// `HH:MM`.
    pub start: String,
    /// `HH:MM`.
    pub end: String,
}

fn minutes(field: &str, hhmm: &str) -> Result<u16, ApiError> {
    let (h, m) = hhmm.split_once(':').ok_or_else(|| ApiError::invalid(field, "must be HH:MM"))?;
    let (h, m): (u16, u16) = (
        h.parse().map_err(|_| ApiError::invalid(field, "must be HH:MM"))?,
        m.parse().map_err(|_| ApiError::invalid(field, "must be HH:MM"))?,
    );
    if h > 24 || m > 59 || h * 60 + m > 24 * 60 {
        return Err(ApiError::invalid(field, "must be a time of day"));
    }
    Ok(h * 60 + m)
}

fn may_manage(staff: &Staff, clinician_id: &str) -> Result<(), ApiError> {
    staff.require(&[StaffRole::Clinician, StaffRole::Admin])?;
    if staff.may_act_on(clinician_id) { Ok(()) } else { Err(ApiError::forbidden()) }
}

/// `PUT /api/clinicians/{id}/availability`
pub async fn set_availability(
    State(app): State<Arc<App>>,
    staff: Staff,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<AvailabilityInput>,
) -> Result<Json<serde_json::Value>, ApiError> {
    may_manage(&staff, &id)?;
    app.store.clinician_by_id(&id).await?.ok_or_else(ApiError::not_found)?;
    if !(5..=120).contains(&body.slot_minutes) {
        return Err(ApiError::invalid("slot_minutes", "must be between 5 and 120"));
    }
    if !(-14 * 60..=14 * 60).contains(&body.tz_offset_minutes) || body.weekly.len() > 50 || body.days_off.len() > 400 {
        return Err(ApiError::invalid("availability", "out of range"));
    }
    let mut weekly = Vec::new();
    for p in &body.weekly {
        let (start, end) = (minutes("weekly.start", &p.start)?, minutes("weekly.end", &p.end)?);
        if p.weekday > 6 || start >= end {
            return Err(ApiError::invalid("weekly", "weekday 0 to 6, start before end"));
        }
        weekly.push(WeeklyPeriod { weekday: p.weekday, start_minute: start, end_minute: end });
    }
    for d in &body.days_off {
        crate::timefmt::day_range(d, 0).ok_or_else(|| ApiError::invalid("days_off", "must be YYYY-MM-DD"))?;
    }
    let availability = Availability {
        slot_minutes: body.slot_minutes,
        tz_offset_minutes: body.tz_offset_minutes,
        weekly,
        days_off: body.days_off,
    };
    app.store.set_availability(&id, &availability).await?;
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

/// When a follow-up is due: in some days, weeks or months, or on a date.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DueIn {
    /// Days from now.
    pub days: Option<i64>,
    /// Weeks from now.
    pub weeks: Option<i64>,
    /// Months (30 days) from now.
    pub months: Option<i64>,
}

/// `POST /api/visits/{id}/follow-ups` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BookFollowUp {
    /// Relative due date…
    pub due_in: Option<DueIn>,
    /// …or an exact one (`YYYY-MM-DD`, UTC day start).
    pub due_date: Option<String>,
    /// Who sees the patient (default: the visit's clinician).
    pub clinician_id: Option<String>,
    /// 5 to 240.
    pub duration_minutes: i64,
    /// Why, for the care team (at most 500 characters).
    pub reason: String,
    /// `routine` (default), `soon` or `urgent`.
    pub priority: Option<String>,
    /// Days either side of the due date a slot may be in (default 7, at most 60).
    pub tolerance_days: Option<i64>,
}

/// `POST /api/visits/{id}/follow-ups`: books the next visit in the first
/// free slot near its due date, or queues it as `unplaced`.
pub async fn book(
    State(app): State<Arc<App>>,
    staff: Staff,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<BookFollowUp>,
) -> Result<Response, ApiError> {
    staff.require(&[StaffRole::Clinician, StaffRole::Admin])?;
    let from = app.store.visit_by_id(&id).await?.ok_or_else(ApiError::not_found)?;
    if !staff.may_act_on(&from.clinician_id) {
        return Err(ApiError::forbidden());
    }
    let now = app.clock.now();
    let due_at = match (&body.due_in, &body.due_date) {
        (Some(d), None) => {
            let days = d.days.unwrap_or(0) + 7 * d.weeks.unwrap_or(0) + 30 * d.months.unwrap_or(0);
            if !(0..=2 * 366).contains(&days) {
                return Err(ApiError::invalid("due_in", "must be within two years"));
            }
            now + days * 86_400
        }
        (None, Some(date)) => {
            crate::timefmt::day_range(date, 0).ok_or_else(|| ApiError::invalid("due_date", "must be YYYY-MM-DD"))?.0
        }
        _ => return Err(ApiError::invalid("due", "give either due_in or due_date")),
    };
    if !(5..=240).contains(&body.duration_minutes) {
        return Err(ApiError::invalid("duration_minutes", "must be between 5 and 240"));
    }
    check_text("reason", &body.reason, 1, 500)?;
    let priority = body.priority.clone().unwrap_or_else(|| "routine".into());
    if !["routine", "soon", "urgent"].contains(&priority.as_str()) {
        return Err(ApiError::invalid("priority", "must be routine, soon or urgent"));
    }
    let tolerance = body.tolerance_days.unwrap_or(7);
    if !(0..=60).contains(&tolerance) {
        return Err(ApiError::invalid("tolerance_days", "must be between 0 and 60"));
    }
    let clinician_id = body.clinician_id.clone().unwrap_or_else(|| from.clinician_id.clone());
    app.store
        .clinician_by_id(&clinician_id)
        .await?
        .filter(|c| c.active && c.role != StaffRole::Ops)
        .ok_or_else(|| ApiError::invalid("clinician_id", "no such active clinician"))?;

    // One placement at a time: read the calendar, pick, write — no race.
    let _placing = app.placement_lock.lock().await;
    let earliest = (due_at - tolerance * 86_400).max(now + 3600);
    let latest = due_at + tolerance * 86_400;
    let slot = free_slot(&app, &clinician_id, earliest, latest, body.duration_minutes).await?;
    let follow_up_id = crate::secret::random_id("f");
    let actor = format!("clinician:{}", staff.0.id);
    let (placed, link_token) = match slot {
        Some(start) => {
            let visit = NewVisit {
                id: crate::secret::random_id("v"),
                patient_id: from.patient_id.clone(),
                clinician_id: clinician_id.clone(),
                scheduled_start: start,
                duration_minutes: body.duration_minutes,
                kind: VisitKind::FollowUp,
            };
            let (link, token) =
                new_link(&app, &visit.id, (start, start + body.duration_minutes * 60), LinkRole::Patient, None);
            (Some((visit, link)), Some(token))
        }
        None => (None, None),
    };
    let follow_up = FollowUp {
        id: follow_up_id,
        patient_id: from.patient_id.clone(),
        from_visit_id: from.id.clone(),
        clinician_id,
        due_at,
        duration_minutes: body.duration_minutes,
        reason: body.reason.clone(),
        priority,
        status: if placed.is_some() { "placed".into() } else { "unplaced".into() },
        visit_id: placed.as_ref().map(|(v, _)| v.id.clone()),
    };
    let audit =
        audit_event(&app, &actor, "follow_up_booked", &from.id, Some(format!("{} {}", follow_up.id, follow_up.status)));
    app.store.create_follow_up(&follow_up, placed.as_ref().map(|(v, l)| (v, l)), &audit, now).await?;
    drop(_placing);

    let visit = match &follow_up.visit_id {
        Some(v) => match app.store.visit_by_id(v).await? {
            Some(v) => Some(crate::visits_api::visit_json(&app, &v).await?),
            None => None,
        },
        None => None,
    };
    let body = json!({
        "follow_up": follow_up_json(&follow_up, now),
        "visit": visit,
        "patient_link": link_token.map(|t| json!({ "url": format!("{}/join/{t}", app.public_url) })),
    });
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// The first free slot of a clinician in `[earliest, latest]` (None without availability).
async fn free_slot(
    app: &App,
    clinician_id: &str,
    earliest: i64,
    latest: i64,
    minutes: i64,
) -> Result<Option<i64>, ApiError> {
    Ok(match app.store.availability_of(clinician_id).await? {
        Some(availability) => {
            let busy = app.store.busy_intervals(clinician_id, earliest - 86_400, latest + 86_400).await?;
            first_free_slot(&availability, &busy, earliest, latest, minutes)
        }
        None => None,
    })
}

/// `POST /api/follow-ups/{id}/assign` body: a clinician, a slot, or both.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Assign {
    /// Move it to this clinician (default: keep).
    pub clinician_id: Option<String>,
    /// Book exactly this start (RFC 3339); without it, the first free slot
    /// within a week of the due date.
    pub scheduled_start: Option<String>,
}

/// Loads a follow-up the caller may act on.
async fn follow_up_for(app: &App, staff: &Staff, id: &str) -> Result<FollowUp, ApiError> {
    staff.require(&[StaffRole::Clinician, StaffRole::Admin])?;
    let f = app.store.follow_up_by_id(id).await?.ok_or_else(ApiError::not_found)?;
    let from = app.store.visit_by_id(&f.from_visit_id).await?;
    if !staff.may_act_on(&f.clinician_id) && !from.is_some_and(|v| staff.may_act_on(&v.clinician_id)) {
        return Err(ApiError::forbidden());
    }
    if f.status == "cancelled" {
        return Err(ApiError::conflict("follow_up_cancelled", "this follow-up was cancelled"));
    }
    Ok(f)
}

/// `POST /api/follow-ups/{id}/assign`: (re)book a follow-up to a slot or a
/// clinician. A previously booked visit is cancelled and its link revoked.
pub async fn assign(
    State(app): State<Arc<App>>,
    staff: Staff,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<Assign>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let f = follow_up_for(&app, &staff, &id).await?;
    let clinician_id = body.clinician_id.clone().unwrap_or_else(|| f.clinician_id.clone());
    app.store
        .clinician_by_id(&clinician_id)
        .await?
        .filter(|c| c.active && c.role != StaffRole::Ops)
        .ok_or_else(|| ApiError::invalid("clinician_id", "no such active clinician"))?;
    let now = app.clock.now();
    let _placing = app.placement_lock.lock().await;
    let start = match &body.scheduled_start {
        Some(text) => {
            let start = crate::timefmt::parse_rfc3339(text)
                .ok_or_else(|| ApiError::invalid("scheduled_start", "must be an RFC 3339 time"))?;
            if start < now {
                return Err(ApiError::invalid("scheduled_start", "must be in the future"));
            }
            let end = start + f.duration_minutes * 60;
            let own = f.visit_id.clone();
            let busy = app.store.busy_intervals(&clinician_id, start - 86_400, end + 86_400).await?;
            // The follow-up's own current visit is about to be cancelled: it does not count.
            let own_interval = match &own {
                Some(v) => app.store.visit_by_id(v).await?.map(|v| (v.scheduled_start, v.scheduled_end())),
                None => None,
            };
            if busy.iter().any(|b| Some(*b) != own_interval && start < b.1 && end > b.0) {
                return Err(ApiError::conflict("slot_taken", "the clinician already has a visit then"));
            }
            Some(start)
        }
        None => {
            free_slot(
                &app,
                &clinician_id,
                (f.due_at - 7 * 86_400).max(now + 3600),
                f.due_at + 7 * 86_400,
                f.duration_minutes,
            )
            .await?
        }
    };
    let placed = start.map(|start| {
        let visit = NewVisit {
            id: crate::secret::random_id("v"),
            patient_id: f.patient_id.clone(),
            clinician_id: clinician_id.clone(),
            scheduled_start: start,
            duration_minutes: f.duration_minutes,
            kind: VisitKind::FollowUp,
        };
        let (link, token) =
            new_link(&app, &visit.id, (start, start + f.duration_minutes * 60), LinkRole::Patient, None);
        (visit, link, token)
    });
    let audit = audit_event(
        &app,
        &format!("clinician:{}", staff.0.id),
        "follow_up_assigned",
        &f.from_visit_id,
        Some(f.id.clone()),
    );
    app.store.reassign_follow_up(&f.id, &clinician_id, placed.as_ref().map(|(v, l, _)| (v, l)), &audit, now).await?;
    drop(_placing);
    let updated = app.store.follow_up_by_id(&f.id).await?.ok_or_else(ApiError::not_found)?;
    Ok(Json(json!({
        "follow_up": follow_up_json(&updated, now),
        "patient_link": placed.map(|(_, _, t)| json!({ "url": format!("{}/join/{t}", app.public_url) })),
    })))
}

/// `POST /api/follow-ups/{id}/cancel`: its visit, if booked, is cancelled and its link revoked.
pub async fn cancel(
    State(app): State<Arc<App>>,
    staff: Staff,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let f = follow_up_for(&app, &staff, &id).await?;
    let now = app.clock.now();
    let audit = audit_event(
        &app,
        &format!("clinician:{}", staff.0.id),
        "follow_up_cancelled",
        &f.from_visit_id,
        Some(f.id.clone()),
    );
    app.store.cancel_follow_up(&f.id, &audit, now).await?;
    let updated = app.store.follow_up_by_id(&f.id).await?.ok_or_else(ApiError::not_found)?;
    Ok(Json(json!({ "follow_up": follow_up_json(&updated, now) })))
}

fn follow_up_json(f: &FollowUp, now: i64) -> serde_json::Value {
    json!({
        "id": f.id,
        "patient_id": f.patient_id,
        "from_visit_id": f.from_visit_id,
        "clinician_id": f.clinician_id,
        "due": rfc3339(f.due_at),
        "duration_minutes": f.duration_minutes,
        "reason": f.reason,
        "priority": f.priority,
        "status": f.status,
        "visit_id": f.visit_id,
        "overdue": f.status == "unplaced" && f.due_at < now,
    })
}

/// `GET /api/follow-ups` query.
#[derive(Debug, Deserialize)]
pub struct QueueQuery {
    /// Admins: another clinician's queue.
    pub clinician_id: Option<String>,
    /// A service's queue: every clinician of this specialty (admins, or
    /// clinicians of that specialty).
    pub specialty: Option<String>,
}

/// `GET /api/follow-ups`: the follow-up queue, by due date then priority.
pub async fn queue(
    State(app): State<Arc<App>>,
    staff: Staff,
    ApiQuery(q): ApiQuery<QueueQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let now = app.clock.now();
    let mut items = match &q.specialty {
        Some(specialty) => {
            let specialty: crate::store::Specialty =
                specialty.parse().map_err(|_| ApiError::invalid("specialty", "unknown specialty"))?;
            staff.require(&[StaffRole::Clinician, StaffRole::Admin])?;
            if staff.0.role != StaffRole::Admin && staff.0.specialty != specialty {
                return Err(ApiError::forbidden());
            }
            app.store.follow_up_queue_of_specialty(specialty).await?
        }
        None => {
            let clinician_id = q.clinician_id.unwrap_or_else(|| staff.0.id.clone());
            may_manage(&staff, &clinician_id)?;
            app.store.follow_up_queue(&clinician_id).await?
        }
    };
    let rank = |p: &str| match p {
        "urgent" => 0,
        "soon" => 1,
        _ => 2,
    };
    // Placed follow-ups whose visit is over drop out of the queue.
    let mut open = Vec::new();
    for f in items.drain(..) {
        let done = match &f.visit_id {
            Some(v) => app
                .store
                .visit_by_id(v)
                .await?
                .is_some_and(|v| !matches!(v.status, VisitStatus::Scheduled | VisitStatus::InProgress)),
            None => false,
        };
        if !done {
            open.push(f);
        }
    }
    open.sort_by(|a, b| a.due_at.cmp(&b.due_at).then(rank(&a.priority).cmp(&rank(&b.priority))));
    Ok(Json(json!({ "follow_ups": open.iter().map(|f| follow_up_json(f, now)).collect::<Vec<_>>() })))
}
