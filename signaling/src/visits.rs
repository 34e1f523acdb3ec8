//! Visits: the one booking path, their life (start, end, cancel,
//! reschedule), their links, and the view of a visit the API shows. The
//! HTTP API, the WebSocket sessions, the CSV import, follow-ups and the
//! scheduler all go through here.
//!
//! **One booking path.** However a visit reaches a clinician's calendar
//! (created, imported, placed as a follow-up, assigned), it goes through
//! [`place`] (or, for a class's occurrences, [`put_on_calendar`]), inside a write transaction that holds the clinician's
//! calendar lock; the database refuses any overlap (see [`crate::store`]),
//! which the API reports as 409 `slot_taken`.

use serde_json::{Value, json};

use crate::api_extract::Staff;
use crate::app::App;
use crate::follow_up_placement::{Availability, first_free_slot};
use crate::http_error::ApiError;
use crate::idempotency::{Answer, Idempotency};
use crate::input_checks::check_text;
use crate::staff_auth::token_hash;
use crate::store::{
    AuditEvent, Clinician, Link, LinkRole, NewVisit, Patient, StaffRole, StoreResult, Visit, VisitKind, VisitStatus,
    WriteTx, with_retries,
};
use crate::timefmt::{parse_rfc3339, rfc3339};
use crate::visit_rooms::{audit_event, close_room};

/// Staff roles that run visits.
pub const STAFF_WHO_RUN_VISITS: &[StaffRole] = &[StaffRole::Clinician, StaffRole::Admin];

/// The audit actor for a staff member.
pub fn actor(staff: &Staff) -> String {
    format!("clinician:{}", staff.0.id)
}

// ----- checks -----

/// A visit length: 5 to 240 minutes.
pub fn check_duration(minutes: i64) -> Result<(), ApiError> {
    if !(5..=240).contains(&minutes) {
        return Err(ApiError::invalid("duration_minutes", "must be between 5 and 240"));
    }
    Ok(())
}

/// A start time: RFC 3339, within a week ago and two years ahead.
pub fn parse_start(text: &str, now: i64) -> Result<i64, ApiError> {
    let t = parse_rfc3339(text).ok_or_else(|| ApiError::invalid("scheduled_start", "must be an RFC 3339 time"))?;
    if t < now - 7 * 86_400 || t > now + 2 * 366 * 86_400 {
        return Err(ApiError::invalid("scheduled_start", "must be within a week ago and two years ahead"));
    }
    Ok(t)
}

/// An active clinician (not an ops account) who can hold visits.
pub async fn bookable_clinician(app: &App, id: &str) -> Result<Clinician, ApiError> {
    app.store
        .clinician_by_id(id)
        .await?
        .filter(|c| c.active && c.role != StaffRole::Ops)
        .ok_or_else(|| ApiError::invalid("clinician_id", "no such active clinician"))
}

/// Loads a visit the caller may act on: 404 if it does not exist, 403 if
/// it is not theirs (clinicians act on their own visits, admins on any,
/// ops on none).
pub async fn visit_for(app: &App, staff: &Staff, id: &str) -> Result<Visit, ApiError> {
    staff.require(STAFF_WHO_RUN_VISITS)?;
    let visit = app.store.visit_by_id(id).await?.ok_or_else(ApiError::not_found)?;
    if !staff.may_act_on(&visit.clinician_id) {
        return Err(ApiError::forbidden());
    }
    Ok(visit)
}

// ----- links -----

/// A new link for a visit over `(start, end)`, valid from `opens_before`
/// seconds before the start until `closes_after` after the end. Returns the
/// record and the token (shown once; only its hash is stored).
pub fn make_link(
    visit_id: &str,
    (start, end): (i64, i64),
    (opens_before, closes_after): (i64, i64),
    role: LinkRole,
    label: Option<String>,
    now: i64,
) -> (Link, String) {
    let token = crate::secret::random_token();
    let link = Link {
        id: crate::secret::random_id("l"),
        visit_id: visit_id.to_string(),
        role,
        label,
        token_hash: token_hash(&token),
        valid_from: start - opens_before,
        valid_until: end + closes_after,
        revoked_at: None,
        denied_at: None,
        created_at: now,
        sealed_token: None,
        patient_id: None,
    };
    (link, token)
}

/// How a booking makes its patient link: the window's margins (opens
/// before the start, closes after the end, seconds) and the sealer that
/// keeps its token for reminders.
#[derive(Debug, Clone, Copy)]
pub struct LinkSettings<'a> {
    /// (opens before, closes after), seconds.
    pub margins: (i64, i64),
    /// Seals the token (purpose `links`).
    pub sealer: &'a crate::secret::Sealer,
}

/// The sealing context of a link's token: its id, so a sealed token moved
/// to another row does not open.
pub fn link_seal_context(link_id: &str) -> String {
    format!("link:{link_id}")
}

/// A link whose token is also kept sealed, so reminders (and the class
/// view) can give out the same link again: [`sealed_link_url`] opens it.
pub fn make_sealed_link(
    visit_id: &str,
    window: (i64, i64),
    links: LinkSettings<'_>,
    role: LinkRole,
    label: Option<String>,
    now: i64,
) -> (Link, String) {
    let (mut link, token) = make_link(visit_id, window, links.margins, role, label, now);
    link.sealed_token = Some(links.sealer.seal(&link_seal_context(&link.id), token.as_bytes()));
    (link, token)
}

/// A patient link for a visit, its token sealed for later reminders.
pub fn make_patient_link(visit_id: &str, window: (i64, i64), links: LinkSettings<'_>, now: i64) -> (Link, String) {
    make_sealed_link(visit_id, window, links, LinkRole::Patient, None, now)
}

/// The URL of a link whose token was sealed when it was made, if the
/// server's key still opens it.
pub fn sealed_link_url(app: &App, link: &Link) -> Option<String> {
    let sealed = link.sealed_token.as_ref()?;
    let token = app.link_sealer.open(&link_seal_context(&link.id), sealed)?;
    Some(app.link_url(&String::from_utf8(token).ok()?))
}

/// The API form of a link; with its URL when the token is at hand.
pub fn link_json(app: &App, link: &Link, token: Option<&str>) -> Value {
    let mut v = json!({
        "id": link.id,
        "role": link.role,
        "label": link.label,
        "valid_from": rfc3339(link.valid_from),
        "valid_until": rfc3339(link.valid_until),
        "revoked_at": link.revoked_at.map(rfc3339),
        "denied_at": link.denied_at.map(rfc3339),
    });
    if let Some(token) = token {
        v["url"] = json!(app.link_url(token));
    }
    v
}

// ----- views -----

/// The API form of a visit, with its patient and clinician as given.
pub fn visit_view(app: &App, visit: &Visit, patient: Option<&Patient>, clinician: Option<&Clinician>) -> Value {
    let red_flags: Vec<&str> = visit
        .questionnaire
        .as_ref()
        .and_then(|q| serde_json::from_value::<crate::questionnaire::Answers>(q.clone()).ok())
        .map(|a| a.red_flags(&app.config.red_flags))
        .unwrap_or_default();
    json!({
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
        // Live: who is in the call and who waits right now (in a cluster,
        // as of the room's node's last heartbeat).
        "room": app.presence(&visit.id),
    })
}

/// The API form of a visit, loading its patient and clinician.
pub async fn visit_json(app: &App, visit: &Visit) -> Result<Value, ApiError> {
    let patient = app.store.patient_by_id(&visit.patient_id).await?;
    let clinician = app.store.clinician_by_id(&visit.clinician_id).await?;
    Ok(visit_view(app, visit, patient.as_ref(), clinician.as_ref()))
}

// ----- the booking path -----

/// A visit just put on a calendar, with its patient link.
#[derive(Debug, Clone)]
pub struct Booked {
    /// The visit.
    pub visit: Visit,
    /// Its patient link.
    pub link: Link,
    /// The link's token (shown once).
    pub token: String,
}

/// Puts a visit on its clinician's calendar inside `tx`: the patient (when
/// new), the visit, its patient link and an audit event. The caller holds
/// the clinician's calendar lock ([`WriteTx::lock_calendars`]); the
/// database refuses an overlap with `StoreError::Overlap`.
pub async fn place(
    tx: &mut WriteTx,
    new_patient: Option<&Patient>,
    visit: &NewVisit,
    links: LinkSettings<'_>,
    audit: &AuditEvent,
    now: i64,
) -> StoreResult<Booked> {
    let visit = put_on_calendar(tx, new_patient, visit, audit, now).await?;
    let (link, token) = make_patient_link(&visit.id, (visit.scheduled_start, visit.scheduled_end()), links, now);
    tx.insert_link(&link).await?;
    Ok(Booked { visit, link, token })
}

/// [`place`] without the patient link: the patient (when new), the visit
/// and its audit event. A group session's occurrences are booked this way;
/// their enrolled patients get links of their own.
pub async fn put_on_calendar(
    tx: &mut WriteTx,
    new_patient: Option<&Patient>,
    visit: &NewVisit,
    audit: &AuditEvent,
    now: i64,
) -> StoreResult<Visit> {
    if let Some(p) = new_patient {
        tx.insert_patient(p).await?;
    }
    tx.insert_visit(visit, now).await?;
    tx.insert_audit(audit).await?;
    Ok(Visit::booked(visit, now))
}

/// The first free slot of `clinician_id` in `[earliest, latest]` for a
/// visit of `minutes`, read under the calendar lock inside `tx`, so that
/// [`place`] in the same transaction cannot lose it to another booking.
/// `None` without availability or without a free slot.
pub async fn first_free_slot_in(
    tx: &mut WriteTx,
    clinician_id: &str,
    availability: Option<&Availability>,
    (earliest, latest): (i64, i64),
    minutes: i64,
) -> StoreResult<Option<i64>> {
    let Some(availability) = availability else { return Ok(None) };
    tx.lock_calendars(&[clinician_id]).await?;
    let busy = tx.busy_intervals(clinician_id, earliest - 86_400, latest + 86_400).await?;
    Ok(first_free_slot(availability, &busy, earliest, latest, minutes))
}

/// Books a visit at an exact time (new patient or existing), retrying a
/// busy database. Used by `POST /api/visits` and the demo.
pub async fn book(
    app: &App,
    actor: &str,
    new_patient: Option<&Patient>,
    new_visit: &NewVisit,
    idempotency: &Idempotency,
    answer: impl Fn(&Booked) -> Answer,
) -> Result<Answer, ApiError> {
    let answer = &answer;
    with_retries(|| async move {
        let mut tx = app.store.begin_write().await?;
        if let Some(replay) = idempotency.claim(&mut tx, &app.sealer, app.clock.now()).await? {
            return Ok(replay);
        }
        tx.lock_calendars(&[&new_visit.clinician_id]).await?;
        let audit = audit_event(app, actor, "created", &new_visit.id, None);
        let booked = place(&mut tx, new_patient, new_visit, app.link_settings(), &audit, app.clock.now()).await?;
        let answer = answer(&booked);
        idempotency.record(&mut tx, &app.sealer, &answer).await?;
        tx.commit().await?;
        Ok(answer)
    })
    .await
}

/// Who a new visit is for: an existing patient's id, or a new patient's details.
#[derive(Debug, Clone, Default, serde::Deserialize)]
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

/// A visit to create.
#[derive(Debug, Clone, serde::Deserialize)]
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

/// The patient a booking or an enrolment is for: an existing patient the
/// caller has seen (in a visit or a class; admins any), or a new one from
/// checked details. Returns the patient and whether it is new (to insert).
pub async fn resolve_patient(
    app: &App,
    staff: &Staff,
    input: &PatientInput,
    now: i64,
) -> Result<(Patient, bool), ApiError> {
    match (&input.id, &input.display_name) {
        (Some(id), None) => {
            let p =
                app.store.patient_by_id(id).await?.ok_or_else(|| ApiError::invalid("patient.id", "no such patient"))?;
            if staff.0.role != StaffRole::Admin
                && !app.store.patient_seen_by(id, &staff.0.id).await?
                && !app.store.patient_enrolled_with(id, &staff.0.id).await?
            {
                return Err(ApiError::forbidden());
            }
            if input.hospital_id.is_some() || input.contact.is_some() {
                return Err(ApiError::invalid("patient", "give only the id of an existing patient"));
            }
            Ok((p, false))
        }
        (None, Some(name)) => {
            check_text("patient.display_name", name, 1, 200)?;
            if let Some(h) = &input.hospital_id {
                check_text("patient.hospital_id", h, 1, 64)?;
            }
            if let Some(c) = &input.contact {
                check_text("patient.contact", c, 1, 200)?;
            }
            let p = Patient {
                id: crate::secret::random_id("pt"),
                display_name: name.clone(),
                hospital_id: input.hospital_id.clone(),
                contact: input.contact.clone(),
                created_at: now,
            };
            Ok((p, true))
        }
        _ => Err(ApiError::invalid("patient", "give either id or display_name")),
    }
}

/// Creates a visit at an exact time: checks, then [`book`]. The answer is
/// the visit and its patient link (201), or the first answer again for a
/// repeated idempotency key.
pub async fn create(
    app: &App,
    staff: &Staff,
    input: &CreateVisit,
    idempotency: &Idempotency,
) -> Result<Answer, ApiError> {
    staff.require(STAFF_WHO_RUN_VISITS)?;
    let now = app.clock.now();
    let clinician_id = input.clinician_id.clone().unwrap_or_else(|| staff.0.id.clone());
    if !staff.may_act_on(&clinician_id) {
        return Err(ApiError::forbidden());
    }
    let clinician = bookable_clinician(app, &clinician_id).await?;
    let scheduled_start = parse_start(&input.scheduled_start, now)?;
    check_duration(input.duration_minutes)?;
    let (patient, is_new) = resolve_patient(app, staff, &input.patient, now).await?;
    let new_visit = NewVisit {
        id: crate::secret::random_id("v"),
        patient_id: patient.id.clone(),
        clinician_id: clinician.id.clone(),
        scheduled_start,
        duration_minutes: input.duration_minutes,
        kind: input.kind.unwrap_or(VisitKind::FollowUp),
    };
    book(app, &actor(staff), is_new.then_some(&patient), &new_visit, idempotency, |booked| {
        Answer::created(json!({
            "visit": visit_view(app, &booked.visit, Some(&patient), Some(&clinician)),
            "patient_link": link_json(app, &booked.link, Some(&booked.token)),
        }))
    })
    .await
}

// ----- life of a visit -----

/// Moves a scheduled visit; its links' windows move with it. 409
/// `slot_taken` if the clinician has another visit then.
pub async fn reschedule(
    app: &App,
    staff: &Staff,
    id: &str,
    start: Option<&str>,
    duration: Option<i64>,
) -> Result<Visit, ApiError> {
    let visit = visit_for(app, staff, id).await?;
    if visit.status != VisitStatus::Scheduled {
        return Err(ApiError::conflict("visit_not_scheduled", "only a scheduled visit can be rescheduled"));
    }
    let now = app.clock.now();
    let start = match start {
        Some(s) => parse_start(s, now)?,
        None => visit.scheduled_start,
    };
    let duration = duration.unwrap_or(visit.duration_minutes);
    check_duration(duration)?;
    let (opens_before, closes_after) = app.link_margins();
    let window = (start - opens_before, start + duration * 60 + closes_after);
    let audit = audit_event(app, &actor(staff), "rescheduled", id, None);
    match app.store.reschedule_visit(id, start, duration, window, &audit).await {
        Ok(v) => Ok(v),
        Err(crate::store::StoreError::Conflict) => {
            Err(ApiError::conflict("visit_not_scheduled", "only a scheduled visit can be rescheduled"))
        }
        Err(e) => Err(e.into()),
    }
}

async fn transition(
    app: &App,
    actor: &str,
    visit: &Visit,
    from: &[VisitStatus],
    to: VisitStatus,
    action: &str,
) -> Result<Visit, ApiError> {
    let audit = audit_event(app, actor, action, &visit.id, None);
    match app.store.transition_visit(&visit.id, from, to, app.clock.now(), &audit).await {
        Ok(v) => Ok(v),
        Err(crate::store::StoreError::Conflict) => {
            let now = app.store.visit_by_id(&visit.id).await?.map(|v| v.status).unwrap_or(visit.status);
            Err(ApiError::conflict("invalid_transition", format!("a {} visit cannot be {action}", now.as_str())))
        }
        Err(e) => Err(e.into()),
    }
}

/// Starts a visit and creates its media room. Starting twice is harmless
/// and audited once.
pub async fn start(app: &App, staff: &Staff, id: &str) -> Result<Visit, ApiError> {
    let current = visit_for(app, staff, id).await?;
    let visit = if current.status == VisitStatus::InProgress {
        current
    } else {
        match transition(app, &actor(staff), &current, &[VisitStatus::Scheduled], VisitStatus::InProgress, "started")
            .await
        {
            Ok(v) => v,
            // Another click started it meanwhile: that is what was asked.
            Err(e) if e.code == "invalid_transition" => match app.store.visit_by_id(id).await? {
                Some(v) if v.status == VisitStatus::InProgress => v,
                _ => return Err(e),
            },
            Err(e) => return Err(e),
        }
    };
    let profile = crate::visit_rooms::RoomProfile::for_kind(visit.kind);
    crate::visit_rooms::provision_media_room(app, id, profile).await.map_err(ApiError::internal)?;
    Ok(visit)
}

/// Ends a visit for everyone: completed in the store, room closed. Used by
/// the HTTP API (after its access check) and by the clinician's WebSocket
/// (whose seat is the check).
pub async fn end(app: &App, clinician_id: &str, id: &str) -> Result<Visit, ApiError> {
    let visit = app.store.visit_by_id(id).await?.ok_or_else(ApiError::not_found)?;
    let actor = format!("clinician:{clinician_id}");
    let visit = transition(
        app,
        &actor,
        &visit,
        &[VisitStatus::Scheduled, VisitStatus::InProgress],
        VisitStatus::Completed,
        "ended",
    )
    .await
    .map_err(|e| {
        if e.code == "invalid_transition" {
            ApiError::conflict("invalid_transition", "the visit is already over")
        } else {
            e
        }
    })?;
    close_room(app, id, "visit_ended").await;
    Ok(visit)
}

/// Cancels a visit: its links are revoked and any live room closed.
pub async fn cancel(app: &App, staff: &Staff, id: &str) -> Result<Visit, ApiError> {
    let visit = visit_for(app, staff, id).await?;
    let visit = transition(
        app,
        &actor(staff),
        &visit,
        &[VisitStatus::Scheduled, VisitStatus::InProgress],
        VisitStatus::Cancelled,
        "cancelled",
    )
    .await?;
    close_room(app, id, "visit_cancelled").await;
    Ok(visit)
}

/// Issues a guest link (family member, interpreter) for a live visit.
pub async fn issue_guest_link(
    app: &App,
    staff: &Staff,
    id: &str,
    label: Option<String>,
) -> Result<(Link, String), ApiError> {
    let visit = visit_for(app, staff, id).await?;
    if !visit.status.is_live() {
        return Err(ApiError::conflict("visit_closed", "the visit is over or cancelled"));
    }
    if let Some(l) = &label {
        check_text("label", l, 1, 80)?;
    }
    let (link, token) = make_link(
        &visit.id,
        (visit.scheduled_start, visit.scheduled_end()),
        app.link_margins(),
        LinkRole::Guest,
        label,
        app.clock.now(),
    );
    let audit = audit_event(app, &actor(staff), "guest_link_created", id, Some(link.id.clone()));
    app.store.insert_link(&link, &audit).await?;
    Ok((link, token))
}

/// Loads one link of a visit the caller may act on.
async fn link_of(app: &App, staff: &Staff, visit_id: &str, link_id: &str) -> Result<Link, ApiError> {
    visit_for(app, staff, visit_id).await?;
    let link =
        app.store.link_by_id(link_id).await?.filter(|l| l.visit_id == visit_id).ok_or_else(ApiError::not_found)?;
    Ok(link)
}

/// Revokes one guest link: it opens nothing any more, and whoever holds a
/// seat through it leaves the room at once. A patient's link goes only
/// with its visit (cancel or reschedule it instead).
pub async fn revoke_guest_link(app: &App, staff: &Staff, visit_id: &str, link_id: &str) -> Result<Link, ApiError> {
    let link = link_of(app, staff, visit_id, link_id).await?;
    if link.role != LinkRole::Guest {
        return Err(ApiError::conflict(
            "patient_link",
            "a patient's link goes with its visit: cancel or reschedule the visit instead",
        ));
    }
    let audit = audit_event(app, &actor(staff), "link_revoked", visit_id, Some(link.id.clone()));
    match app.store.revoke_link(&link.id, app.clock.now(), &audit).await {
        Ok(()) | Err(crate::store::StoreError::Conflict) => {}
        Err(e) => return Err(e.into()),
    }
    crate::ws_session::withdraw_seats(
        app,
        &format!("link:{}", link.id),
        teleconsult_protocol::ErrorCode::LinkRevoked,
        "this link has been withdrawn",
    )
    .await;
    app.store.link_by_id(&link.id).await?.ok_or_else(ApiError::not_found)
}

/// Lets a denied link back in.
pub async fn allow_link(app: &App, staff: &Staff, visit_id: &str, link_id: &str) -> Result<Link, ApiError> {
    let link = link_of(app, staff, visit_id, link_id).await?;
    app.store.set_link_denied(&link.id, None).await?;
    app.store.audit(&audit_event(app, &actor(staff), "link_allowed", visit_id, Some(link.id.clone()))).await?;
    app.store.link_by_id(&link.id).await?.ok_or_else(ApiError::not_found)
}
