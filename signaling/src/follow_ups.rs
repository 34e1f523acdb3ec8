//! Follow-ups: the next visit a clinician asks for at the end of a visit,
//! placed in the first free slot of the clinician's availability near its
//! due date, or queued as unplaced; the queue, assignment and cancelling;
//! and clinicians' weekly availability.
//!
//! Placement reads the calendar and writes the visit in one transaction
//! under the clinician's calendar lock, through the one booking path
//! ([`crate::visits::place`]), so twenty racing bookings can never take
//! one slot twice, on one node or several.

use serde::Deserialize;
use serde_json::{Value, json};

use crate::api_extract::Staff;
use crate::app::App;
use crate::follow_up_placement::{Availability, WeeklyPeriod};
use crate::http_error::ApiError;
use crate::idempotency::{Answer, Idempotency};
use crate::input_checks::check_text;
use crate::store::{
    FollowUp, FollowUpStatus, NewVisit, Priority, Specialty, StaffRole, StoreError, VisitKind, with_retries,
};
use crate::timefmt::rfc3339;
use crate::visit_rooms::audit_event;
use crate::visits::{Booked, actor, bookable_clinician, check_duration, first_free_slot_in, place, visit_view};

/// Staff roles that book and manage follow-ups.
const STAFF_WHO_BOOK: &[StaffRole] = &[StaffRole::Clinician, StaffRole::Admin];

/// A follow-up is never placed sooner than this after now.
pub const EARLIEST_AFTER_SECS: i64 = 3600;

// ----- availability -----

/// A clinician's weekly availability, as the API takes it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AvailabilityInput {
    /// Slot length, minutes (5 to 120).
    pub slot_minutes: u16,
    /// The clinician's IANA time zone (default: the clinic's).
    #[serde(default)]
    pub time_zone: Option<String>,
    /// Before zones were named: minutes east of UTC, mapped to a zone
    /// (see [`crate::zones::zone_for_legacy_offset`]). Ignored when
    /// `time_zone` is given.
    #[serde(default)]
    pub tz_offset_minutes: Option<i16>,
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

/// 403 unless `staff` may manage `clinician_id`'s calendar (themself, or an admin).
pub fn may_manage(staff: &Staff, clinician_id: &str) -> Result<(), ApiError> {
    staff.require(STAFF_WHO_BOOK)?;
    if staff.may_act_on(clinician_id) { Ok(()) } else { Err(ApiError::forbidden()) }
}

/// Checks and stores a clinician's availability.
pub async fn set_availability(
    app: &App,
    staff: &Staff,
    clinician_id: &str,
    input: AvailabilityInput,
) -> Result<Availability, ApiError> {
    may_manage(staff, clinician_id)?;
    app.store.clinician_by_id(clinician_id).await?.ok_or_else(ApiError::not_found)?;
    if !(5..=120).contains(&input.slot_minutes) {
        return Err(ApiError::invalid("slot_minutes", "must be between 5 and 120"));
    }
    if input.tz_offset_minutes.is_some_and(|m| !(-14 * 60..=14 * 60).contains(&m))
        || input.weekly.len() > 50
        || input.days_off.len() > 400
    {
        return Err(ApiError::invalid("availability", "out of range"));
    }
    let time_zone = match (&input.time_zone, input.tz_offset_minutes) {
        (Some(name), _) => {
            crate::zones::zone(name)
                .ok_or_else(|| ApiError::invalid("time_zone", "must be an IANA time zone such as Europe/Paris"))?;
            name.clone()
        }
        (None, Some(minutes)) => crate::zones::zone_for_legacy_offset(minutes),
        (None, None) => app.config.clinic_time_zone.clone(),
    };
    let mut weekly = Vec::new();
    for p in &input.weekly {
        let (start, end) = (minutes("weekly.start", &p.start)?, minutes("weekly.end", &p.end)?);
        if p.weekday > 6 || start >= end {
            return Err(ApiError::invalid("weekly", "weekday 0 to 6, start before end"));
        }
        weekly.push(WeeklyPeriod { weekday: p.weekday, start_minute: start, end_minute: end });
    }
    for d in &input.days_off {
        crate::zones::parse_date(d).ok_or_else(|| ApiError::invalid("days_off", "must be YYYY-MM-DD"))?;
    }
    let availability = Availability { slot_minutes: input.slot_minutes, time_zone, weekly, days_off: input.days_off };
    app.store.set_availability(clinician_id, &availability).await?;
    Ok(availability)
}

// ----- booking -----

/// The zone of a clinician's calendar: their availability's, else the clinic's.
pub fn clinic_zone(app: &App, availability: Option<&Availability>) -> jiff::tz::TimeZone {
    match availability {
        Some(a) => a.zone(),
        None => crate::zones::zone_or_utc(&app.config.clinic_time_zone),
    }
}

/// Where a follow-up due at `due_at` may be placed: from the start of the
/// local day `tolerance_days` before its due day to the end of the local
/// day as many days after (tolerance 0 is the due day itself, in the
/// clinician's zone), never sooner than an hour from `now`. Inclusive.
pub fn due_window(due_at: i64, tolerance_days: i64, tz: &jiff::tz::TimeZone, now: i64) -> Option<(i64, i64)> {
    let due_day = crate::zones::local_date(due_at, tz);
    let (first, last) =
        (crate::zones::add_days(due_day, -tolerance_days)?, crate::zones::add_days(due_day, tolerance_days)?);
    let (start, end) = crate::zones::local_days_range(first, last, tz)?;
    Some((start.max(now + EARLIEST_AFTER_SECS), end - 1))
}

/// When a follow-up is due: in some days, weeks or months.
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

/// A follow-up to book from a visit.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BookFollowUp {
    /// Relative due date…
    pub due_in: Option<DueIn>,
    /// …or an exact one (`YYYY-MM-DD`, a day in the clinician's zone).
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

/// The API form of a follow-up.
pub fn follow_up_json(f: &FollowUp, now: i64) -> Value {
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
        "overdue": f.status == FollowUpStatus::Unplaced && f.due_at < now,
    })
}

/// Books the next visit from visit `from_id` in the first free slot near
/// its due date, or queues it unplaced. The answer (201) is the follow-up,
/// its visit and the patient's link when placed.
pub async fn book(
    app: &App,
    staff: &Staff,
    from_id: &str,
    input: &BookFollowUp,
    idempotency: &Idempotency,
) -> Result<Answer, ApiError> {
    staff.require(STAFF_WHO_BOOK)?;
    let from = app.store.visit_by_id(from_id).await?.ok_or_else(ApiError::not_found)?;
    if !staff.may_act_on(&from.clinician_id) {
        return Err(ApiError::forbidden());
    }
    let now = app.clock.now();
    check_duration(input.duration_minutes)?;
    check_text("reason", &input.reason, 1, 500)?;
    let priority = match &input.priority {
        None => Priority::Routine,
        Some(p) => p.parse().map_err(|_| ApiError::invalid("priority", "must be routine, soon or urgent"))?,
    };
    let tolerance = input.tolerance_days.unwrap_or(7);
    if !(0..=60).contains(&tolerance) {
        return Err(ApiError::invalid("tolerance_days", "must be between 0 and 60"));
    }
    let clinician_id = input.clinician_id.clone().unwrap_or_else(|| from.clinician_id.clone());
    let clinician = bookable_clinician(app, &clinician_id).await?;
    let patient = app.store.patient_by_id(&from.patient_id).await?;
    let availability = app.store.availability_of(&clinician.id).await?;
    let tz = clinic_zone(app, availability.as_ref());
    let due_at = match (&input.due_in, &input.due_date) {
        (Some(d), None) => {
            let days = d.days.unwrap_or(0) + 7 * d.weeks.unwrap_or(0) + 30 * d.months.unwrap_or(0);
            if !(0..=2 * 366).contains(&days) {
                return Err(ApiError::invalid("due_in", "must be within two years"));
            }
            now + days * 86_400
        }
        (None, Some(date)) => {
            let day =
                crate::zones::parse_date(date).ok_or_else(|| ApiError::invalid("due_date", "must be YYYY-MM-DD"))?;
            crate::zones::at_local(day, 0, &tz).ok_or_else(|| ApiError::invalid("due_date", "out of range"))?
        }
        _ => return Err(ApiError::invalid("due", "give either due_in or due_date")),
    };
    let window = due_window(due_at, tolerance, &tz, now).ok_or_else(|| ApiError::invalid("due", "out of range"))?;
    let actor = actor(staff);
    let (from, clinician, patient, availability) = (&from, &clinician, &patient, &availability);
    let actor = actor.as_str();

    with_retries(|| async move {
        let mut tx = app.store.begin_write().await?;
        if let Some(replay) = idempotency.claim(&mut tx, &app.sealer, now).await? {
            return Ok(replay);
        }
        let slot =
            first_free_slot_in(&mut tx, &clinician.id, availability.as_ref(), window, input.duration_minutes).await?;
        let follow_up_id = crate::secret::random_id("f");
        let booked = match slot {
            Some(start) => Some(
                place_follow_up_visit(
                    app,
                    &mut tx,
                    actor,
                    &from.id,
                    &from.patient_id,
                    &clinician.id,
                    start,
                    input.duration_minutes,
                    &follow_up_id,
                )
                .await?,
            ),
            None => None,
        };
        let follow_up = FollowUp {
            id: follow_up_id,
            patient_id: from.patient_id.clone(),
            from_visit_id: from.id.clone(),
            clinician_id: clinician.id.clone(),
            due_at,
            duration_minutes: input.duration_minutes,
            reason: input.reason.clone(),
            priority,
            status: if booked.is_some() { FollowUpStatus::Placed } else { FollowUpStatus::Unplaced },
            visit_id: booked.as_ref().map(|b| b.visit.id.clone()),
        };
        tx.insert_follow_up(&follow_up, now).await?;
        tx.insert_audit(&audit_event(
            app,
            actor,
            "follow_up_booked",
            &from.id,
            Some(format!("{} {}", follow_up.id, follow_up.status.as_str())),
        ))
        .await?;
        let answer = Answer::created(json!({
            "follow_up": follow_up_json(&follow_up, now),
            "visit": booked.as_ref().map(|b| visit_view(app, &b.visit, patient.as_ref(), Some(clinician))),
            "patient_link": booked.as_ref().map(|b| json!({ "url": app.link_url(&b.token) })),
        }));
        idempotency.record(&mut tx, &app.sealer, &answer).await?;
        tx.commit().await?;
        Ok(answer)
    })
    .await
}

/// Places a follow-up's visit at `start` through the booking path. The
/// slot was found free under the calendar lock; an overlap now means a
/// writer got past the lock, so the whole placement is tried again.
#[allow(clippy::too_many_arguments)]
async fn place_follow_up_visit(
    app: &App,
    tx: &mut crate::store::WriteTx,
    actor: &str,
    from_visit_id: &str,
    patient_id: &str,
    clinician_id: &str,
    start: i64,
    duration_minutes: i64,
    follow_up_id: &str,
) -> Result<Booked, ApiError> {
    let visit = follow_up_visit(patient_id, clinician_id, start, duration_minutes);
    let audit =
        audit_event(app, actor, "created", &visit.id, Some(format!("follow-up {follow_up_id} of {from_visit_id}")));
    match place(tx, None, &visit, app.link_settings(), &audit, app.clock.now()).await {
        Ok(booked) => Ok(booked),
        Err(StoreError::Overlap) => Err(ApiError::busy()),
        Err(e) => Err(e.into()),
    }
}

/// A new follow-up visit of `patient_id` with `clinician_id` at `start`.
pub fn follow_up_visit(patient_id: &str, clinician_id: &str, start: i64, duration_minutes: i64) -> NewVisit {
    NewVisit {
        id: crate::secret::random_id("v"),
        patient_id: patient_id.to_string(),
        clinician_id: clinician_id.to_string(),
        scheduled_start: start,
        duration_minutes,
        kind: VisitKind::FollowUp,
    }
}

// ----- the queue -----

/// Loads a follow-up the caller may act on (its clinician's, or that of
/// the visit it came from; admins any). 409 if it was cancelled.
pub async fn follow_up_for(app: &App, staff: &Staff, id: &str) -> Result<FollowUp, ApiError> {
    staff.require(STAFF_WHO_BOOK)?;
    let f = app.store.follow_up_by_id(id).await?.ok_or_else(ApiError::not_found)?;
    let from = app.store.visit_by_id(&f.from_visit_id).await?;
    if !staff.may_act_on(&f.clinician_id) && !from.is_some_and(|v| staff.may_act_on(&v.clinician_id)) {
        return Err(ApiError::forbidden());
    }
    if f.status == FollowUpStatus::Cancelled {
        return Err(follow_up_cancelled());
    }
    Ok(f)
}

/// 409 `follow_up_cancelled`.
pub fn follow_up_cancelled() -> ApiError {
    ApiError::conflict("follow_up_cancelled", "this follow-up was cancelled")
}

/// Where to (re)book a follow-up: a clinician, a slot, or both.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Assign {
    /// Move it to this clinician (default: keep).
    pub clinician_id: Option<String>,
    /// Book exactly this start (RFC 3339); without it, the first free slot
    /// within a week of the due date.
    pub scheduled_start: Option<String>,
}

/// (Re)books a follow-up to a slot or a clinician. Its previous visit, if
/// any, is cancelled and its link revoked, in the same transaction as the
/// new booking: if the new slot is taken (409 `slot_taken`), nothing changes.
pub async fn assign(
    app: &App,
    staff: &Staff,
    id: &str,
    input: &Assign,
    idempotency: &Idempotency,
) -> Result<Answer, ApiError> {
    let f = follow_up_for(app, staff, id).await?;
    let clinician_id = input.clinician_id.clone().unwrap_or_else(|| f.clinician_id.clone());
    let clinician = bookable_clinician(app, &clinician_id).await?;
    let now = app.clock.now();
    let exact = match &input.scheduled_start {
        Some(text) => {
            let start = crate::timefmt::parse_rfc3339(text)
                .ok_or_else(|| ApiError::invalid("scheduled_start", "must be an RFC 3339 time"))?;
            if start < now {
                return Err(ApiError::invalid("scheduled_start", "must be in the future"));
            }
            Some(start)
        }
        None => None,
    };
    let availability = app.store.availability_of(&clinician.id).await?;
    let actor = actor(staff);
    let (clinician, availability, actor) = (&clinician, &availability, actor.as_str());

    with_retries(|| async move {
        let mut tx = app.store.begin_write().await?;
        if let Some(replay) = idempotency.claim(&mut tx, &app.sealer, now).await? {
            return Ok(replay);
        }
        let f = tx.follow_up_by_id(id).await?.ok_or_else(ApiError::not_found)?;
        if f.status == FollowUpStatus::Cancelled {
            return Err(follow_up_cancelled());
        }
        tx.lock_calendars(&[&clinician.id, &f.clinician_id]).await?;
        let mut told = false;
        if let Some(old) = &f.visit_id {
            told = tx.withdraw_scheduled_visit(old, now).await?;
        }
        let start = match exact {
            Some(start) => Some(start),
            None => {
                let tz = clinic_zone(app, availability.as_ref());
                let window =
                    due_window(f.due_at, 7, &tz, now).ok_or_else(|| ApiError::invalid("due", "out of range"))?;
                first_free_slot_in(&mut tx, &clinician.id, availability.as_ref(), window, f.duration_minutes).await?
            }
        };
        let booked = match start {
            Some(start) => {
                let visit = follow_up_visit(&f.patient_id, &clinician.id, start, f.duration_minutes);
                let audit = audit_event(app, actor, "created", &visit.id, Some(format!("follow-up {}", f.id)));
                // An exact slot that is taken is the caller's to know (409);
                // the first free slot was found under the lock.
                Some(place(&mut tx, None, &visit, app.link_settings(), &audit, now).await.map_err(|e| match e {
                    StoreError::Overlap if exact.is_none() => ApiError::busy(),
                    other => ApiError::from(other),
                })?)
            }
            None => None,
        };
        match &booked {
            Some(b) if told => {
                tx.tell_rebooked(&b.visit.id, b.visit.scheduled_start, now).await?;
            }
            None if told => {
                if let Some(old) = &f.visit_id
                    && let Some(visit) = tx.visit_by_id(old).await?
                {
                    tx.tell_visit_cancelled(old, visit.scheduled_start, now).await?;
                }
            }
            _ => {}
        }
        tx.place_follow_up(&f.id, &clinician.id, booked.as_ref().map(|b| b.visit.id.as_str())).await?;
        tx.insert_audit(&audit_event(app, actor, "follow_up_assigned", &f.from_visit_id, Some(f.id.clone()))).await?;
        let updated = tx.follow_up_by_id(&f.id).await?.ok_or_else(ApiError::not_found)?;
        let answer = Answer::ok(json!({
            "follow_up": follow_up_json(&updated, now),
            "patient_link": booked.as_ref().map(|b| json!({ "url": app.link_url(&b.token) })),
        }));
        idempotency.record(&mut tx, &app.sealer, &answer).await?;
        tx.commit().await?;
        Ok(answer)
    })
    .await
}

/// Cancels a follow-up; its visit, if booked, is cancelled and its link revoked.
pub async fn cancel(app: &App, staff: &Staff, id: &str) -> Result<FollowUp, ApiError> {
    let f = follow_up_for(app, staff, id).await?;
    let audit = audit_event(app, &actor(staff), "follow_up_cancelled", &f.from_visit_id, Some(f.id.clone()));
    match app.store.cancel_follow_up(&f.id, &audit, app.clock.now()).await {
        Ok(()) => {}
        Err(StoreError::Conflict) => return Err(follow_up_cancelled()),
        Err(e) => return Err(e.into()),
    }
    app.store.follow_up_by_id(&f.id).await?.ok_or_else(ApiError::not_found)
}

/// Which queue to show.
#[derive(Debug, Deserialize)]
pub struct QueueQuery {
    /// Admins: another clinician's queue.
    pub clinician_id: Option<String>,
    /// A service's queue: every clinician of this specialty (admins, or
    /// clinicians of that specialty).
    pub specialty: Option<String>,
}

/// The open follow-ups of a clinician or a service, by due date then
/// priority.
pub async fn queue(app: &App, staff: &Staff, q: &QueueQuery) -> Result<Vec<FollowUp>, ApiError> {
    match &q.specialty {
        Some(specialty) => {
            let specialty: Specialty =
                specialty.parse().map_err(|_| ApiError::invalid("specialty", "unknown specialty"))?;
            staff.require(STAFF_WHO_BOOK)?;
            if staff.0.role != StaffRole::Admin && staff.0.specialty != specialty {
                return Err(ApiError::forbidden());
            }
            Ok(app.store.follow_up_queue_of_specialty(specialty).await?)
        }
        None => {
            let clinician_id = q.clinician_id.clone().unwrap_or_else(|| staff.0.id.clone());
            may_manage(staff, &clinician_id)?;
            Ok(app.store.follow_up_queue(&clinician_id).await?)
        }
    }
}
