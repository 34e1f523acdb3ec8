//! Twice-daily symptom monitoring between visits, as one cancer center ran
//! it: a clinician enrols a patient from a visit for some days; the patient
//! receives a link (through the gateway) that opens a short questionnaire on
//! a phone, with no account, each morning (00:00–12:00) and evening
//! (12:00–24:00) in the enrolment's time zone. Answers are kept and shown to
//! the clinician as a trend; missed check-ins in a row (`missed_after`) are
//! flagged in the clinician's inbox; a red flag books an urgent follow-up
//! ([`crate::urgent::raise_red_flags`]).
//!
//! The link follows the visit links' rules: a 256-bit token stored hashed
//! (and sealed, for the gateway), revocable, and dead when the enrolment
//! ends. One live enrolment per patient: a new one revokes the old.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use jiff::tz::TimeZone;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api_extract::{ApiJson, Staff};
use crate::app::App;
use crate::http_error::ApiError;
use crate::questionnaire::Answers;
use crate::staff_auth::token_hash;
use crate::store::{CheckIn, Enrolment, NewOutboxEntry, StoreError};
use crate::timefmt::rfc3339;
use crate::visit_rooms::audit_event;
use crate::visits::{actor, visit_for};

/// Longest enrolment, days.
pub const MAX_DAYS: i64 = 90;

/// A half-day check-in slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    /// Start (Unix seconds): local midnight or noon.
    pub start: i64,
    /// End (exclusive).
    pub end: i64,
    /// `morning` or `evening`.
    pub name: &'static str,
}

/// The slot containing `t` in `tz`.
pub fn slot_at(t: i64, tz: &TimeZone) -> Slot {
    let day = crate::zones::local_date(t, tz);
    let at = |minute| crate::zones::at_local(day, minute, tz).unwrap_or(t);
    let (midnight, noon, next) = (at(0), at(12 * 60), at(24 * 60));
    if t < noon {
        Slot { start: midnight, end: noon, name: "morning" }
    } else {
        Slot { start: noon, end: next, name: "evening" }
    }
}

/// The slots an enrolment expects an answer in that have ended by `now`:
/// those wholly after its start and before its end.
pub fn ended_slots(e: &Enrolment, now: i64) -> Vec<Slot> {
    let tz = crate::zones::zone_or_utc(&e.time_zone);
    let until = now.min(e.ends_at);
    let mut out = Vec::new();
    let mut slot = slot_at(e.starts_at, &tz);
    if slot.start < e.starts_at {
        slot = slot_at(slot.end, &tz);
    }
    while slot.end <= until && out.len() < (2 * MAX_DAYS + 2) as usize {
        out.push(slot);
        slot = slot_at(slot.end, &tz);
    }
    out
}

/// Ended slots without a check-in, and the trailing run of them.
pub fn missed(e: &Enrolment, check_ins: &[CheckIn], now: i64) -> (Vec<Slot>, usize) {
    let answered = |s: &Slot| check_ins.iter().any(|c| c.slot_start >= s.start && c.slot_start < s.end);
    let ended = ended_slots(e, now);
    let missed: Vec<Slot> = ended.iter().filter(|s| !answered(s)).copied().collect();
    let run = ended.iter().rev().take_while(|s| !answered(s)).count();
    (missed, run)
}

/// The URL of an enrolment's link while it is live (its token sealed at
/// enrolment), for the gateway.
pub async fn link_url_of(app: &App, enrolment_id: &str, now: i64) -> Result<Option<String>, ApiError> {
    let Some(e) = app.store.enrolment_by_id(enrolment_id).await? else { return Ok(None) };
    if e.revoked_at.is_some() || e.ends_at <= now {
        return Ok(None);
    }
    let token = e.sealed_token.as_deref().and_then(|s| app.link_sealer.open(&seal_context(&e.id), s));
    Ok(token.and_then(|t| String::from_utf8(t).ok()).map(|t| monitor_url(app, &t)))
}

fn seal_context(enrolment_id: &str) -> String {
    format!("monitoring:{enrolment_id}")
}

fn monitor_url(app: &App, token: &str) -> String {
    format!("{}/monitor/{token}", app.public_url)
}

/// The scheduler's step: tells each live enrolment's clinician, once per
/// run, when `missed_after` check-ins in a row have been missed. Returns
/// how many were told.
pub async fn flag_missed_check_ins(app: &App, now: i64) -> Result<usize, ApiError> {
    let mut told = 0;
    for e in app.store.live_enrolments(now - 86_400, now).await? {
        let check_ins = app.store.check_ins_of(&e.id).await?;
        let (missed, run) = missed(&e, &check_ins, now);
        if run == 0 || (run as i64) < e.missed_after {
            continue;
        }
        let Some(last) = missed.last() else { continue };
        if app.store.mark_missed_flagged(&e.id, last.start).await? {
            crate::urgent::notify(app, &[&e.clinician_id], "missed_check_ins", &e.visit_id, None, &run.to_string())
                .await?;
            app.store
                .audit(&audit_event(app, "system", "monitoring_missed", &e.visit_id, Some(format!("{} {run}", e.id))))
                .await?;
            told += 1;
        }
    }
    Ok(told)
}

// ----- staff -----

/// `POST /api/visits/{id}/monitoring` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Enrol {
    /// How many days (1 to 90), today included.
    pub days: i64,
    /// Missed check-ins in a row before the clinician is told (default: the server's setting).
    pub missed_after: Option<i64>,
    /// `fr` (default) or `en`: the questionnaire's language.
    pub language: Option<String>,
}

/// The staff view of an enrolment, with its check-ins and missed slots.
pub fn enrolment_json(e: &Enrolment, check_ins: &[CheckIn], now: i64) -> Value {
    let tz = crate::zones::zone_or_utc(&e.time_zone);
    let (missed, run) = missed(e, check_ins, now);
    let trend: Vec<Value> = check_ins
        .iter()
        .map(|c| {
            json!({
                "slot": slot_at(c.slot_start, &tz).name,
                "slot_start": crate::zones::rfc3339_in(c.slot_start, &tz),
                "answered_at": rfc3339(c.answered_at),
                "answers": c.answers,
                "pain": c.answers["pain"],
                "red_flags": c.red_flags.split(',').filter(|f| !f.is_empty()).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({
        "id": e.id,
        "visit_id": e.visit_id,
        "clinician_id": e.clinician_id,
        "time_zone": e.time_zone,
        "language": e.language,
        "starts_at": rfc3339(e.starts_at),
        "ends_at": rfc3339(e.ends_at),
        "missed_after": e.missed_after,
        "revoked_at": e.revoked_at.map(rfc3339),
        "active": e.revoked_at.is_none() && e.ends_at > now,
        "check_ins": trend,
        "missed": missed.iter().map(|s| json!({"slot": s.name, "slot_start": crate::zones::rfc3339_in(s.start, &tz)})).collect::<Vec<_>>(),
        "missed_in_a_row": run,
    })
}

/// `POST /api/visits/{id}/monitoring`: enrols the visit's patient; the link
/// is sent through the gateway (when one is set) and shown once here.
pub async fn enrol(
    State(app): State<Arc<App>>,
    staff: Staff,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<Enrol>,
) -> Result<Response, ApiError> {
    let visit = visit_for(&app, &staff, &id).await?;
    if !(1..=MAX_DAYS).contains(&body.days) {
        return Err(ApiError::invalid("days", "must be between 1 and 90"));
    }
    let missed_after = body.missed_after.unwrap_or(i64::from(app.config.monitoring_missed_after));
    if !(1..=28).contains(&missed_after) {
        return Err(ApiError::invalid("missed_after", "must be between 1 and 28"));
    }
    let language = body.language.clone().unwrap_or_else(|| "fr".into());
    if !["fr", "en"].contains(&language.as_str()) {
        return Err(ApiError::invalid("language", "must be fr or en"));
    }
    let now = app.clock.now();
    let availability = app.store.availability_of(&visit.clinician_id).await?;
    let time_zone = match &availability {
        Some(a) => a.time_zone.clone(),
        None => app.config.clinic_time_zone.clone(),
    };
    let tz = crate::zones::zone_or_utc(&time_zone);
    let last_day = crate::zones::add_days(crate::zones::local_date(now, &tz), body.days - 1)
        .ok_or_else(|| ApiError::invalid("days", "out of range"))?;
    let ends_at =
        crate::zones::at_local(last_day, 24 * 60, &tz).ok_or_else(|| ApiError::invalid("days", "out of range"))?;
    let token = crate::secret::random_token();
    let enrolment_id = crate::secret::random_id("m");
    let e = Enrolment {
        id: enrolment_id.clone(),
        patient_id: visit.patient_id.clone(),
        visit_id: visit.id.clone(),
        clinician_id: visit.clinician_id.clone(),
        time_zone,
        language,
        starts_at: now,
        ends_at,
        missed_after,
        token_hash: token_hash(&token),
        sealed_token: Some(app.link_sealer.seal(&seal_context(&enrolment_id), token.as_bytes())),
        revoked_at: None,
        missed_flagged_through: None,
        created_at: now,
    };
    let (e_ref, app_ref, actor) = (&e, &app, actor(&staff));
    let actor = actor.as_str();
    app.store
        .retrying(|| async move {
            let mut tx = app_ref.store.begin_write().await?;
            tx.insert_enrolment(e_ref).await?;
            if app_ref.config.reminder_webhook.is_some() {
                let key = format!("monitoring:{}", e_ref.id);
                let payload = json!({ "enrolment_id": e_ref.id }).to_string();
                let entry = NewOutboxEntry {
                    key: &key,
                    visit_id: &e_ref.visit_id,
                    kind: "monitoring_link",
                    scheduled_start: None,
                    payload: Some(&payload),
                };
                tx.enqueue(&entry, now).await?;
            }
            tx.insert_audit(&audit_event(
                app_ref,
                actor,
                "monitoring_enrolled",
                &e_ref.visit_id,
                Some(format!("{} {} days", e_ref.id, body.days)),
            ))
            .await?;
            tx.commit().await
        })
        .await?;
    let body = json!({ "enrolment": enrolment_json(&e, &[], now), "link": { "url": monitor_url(&app, &token) } });
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// `GET /api/visits/{id}/monitoring`: the visit's patient's enrolments, newest
/// first, each with its check-ins (the trend) and missed slots.
pub async fn of_visit(
    State(app): State<Arc<App>>,
    staff: Staff,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let visit = visit_for(&app, &staff, &id).await?;
    let now = app.clock.now();
    let mut out = Vec::new();
    for e in app.store.enrolments_of_patient(&visit.patient_id).await? {
        let check_ins = app.store.check_ins_of(&e.id).await?;
        out.push(enrolment_json(&e, &check_ins, now));
    }
    Ok(Json(json!({ "enrolments": out })))
}

/// `POST /api/monitoring/{id}/revoke`: the link stops working at once.
pub async fn revoke(
    State(app): State<Arc<App>>,
    staff: Staff,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let e = app.store.enrolment_by_id(&id).await?.ok_or_else(ApiError::not_found)?;
    visit_for(&app, &staff, &e.visit_id).await?;
    let now = app.clock.now();
    if app.store.revoke_enrolment(&id, now).await? {
        app.store
            .audit(&audit_event(&app, &actor(&staff), "monitoring_revoked", &e.visit_id, Some(id.clone())))
            .await?;
    }
    let e = app.store.enrolment_by_id(&id).await?.ok_or_else(ApiError::not_found)?;
    let check_ins = app.store.check_ins_of(&e.id).await?;
    Ok(Json(json!({ "enrolment": enrolment_json(&e, &check_ins, now) })))
}

// ----- the patient -----

/// Resolves a monitoring link: unknown (404), revoked or ended (410).
async fn resolve(app: &App, token: &str) -> Result<Enrolment, ApiError> {
    let unknown = || ApiError::new(StatusCode::NOT_FOUND, "link_unknown", "this link is not known");
    if token.len() != 43 || !token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        return Err(unknown());
    }
    let e = app.store.enrolment_by_token_hash(&token_hash(token)).await?.ok_or_else(unknown)?;
    if e.revoked_at.is_some() {
        return Err(ApiError::new(StatusCode::GONE, "link_revoked", "this link has been withdrawn"));
    }
    if app.clock.now() >= e.ends_at {
        return Err(ApiError::new(StatusCode::GONE, "link_expired", "this monitoring has ended"));
    }
    Ok(e)
}

fn patient_view(app: &App, e: &Enrolment, answered: bool, clinician: Option<String>) -> Value {
    let tz = crate::zones::zone_or_utc(&e.time_zone);
    let slot = slot_at(app.clock.now(), &tz);
    json!({
        "language": e.language,
        "time_zone": e.time_zone,
        "ends_at": crate::zones::rfc3339_in(e.ends_at, &tz),
        "clinician": clinician,
        "slot": {
            "name": slot.name,
            "start": crate::zones::rfc3339_in(slot.start, &tz),
            "end": crate::zones::rfc3339_in(slot.end, &tz),
            "answered": answered,
        },
    })
}

/// `GET /api/monitor/{token}`: what the patient's page needs (the current
/// slot and whether it is answered). No patient data.
pub async fn status(State(app): State<Arc<App>>, Path(token): Path<String>) -> Result<Json<Value>, ApiError> {
    let e = resolve(&app, &token).await?;
    let tz = crate::zones::zone_or_utc(&e.time_zone);
    let slot = slot_at(app.clock.now(), &tz);
    let answered = app.store.check_ins_of(&e.id).await?.iter().any(|c| c.slot_start == slot.start);
    let clinician = app.store.clinician_by_id(&e.clinician_id).await?.map(|c| c.display_name);
    Ok(Json(patient_view(&app, &e, answered, clinician)))
}

/// `POST /api/monitor/{token}/check-ins`: this half-day's answers. 409
/// `already_answered` for a second answer in the same slot. A red flag
/// books an urgent follow-up and tells the clinician.
pub async fn check_in(
    State(app): State<Arc<App>>,
    Path(token): Path<String>,
    ApiJson(answers): ApiJson<Answers>,
) -> Result<Response, ApiError> {
    let e = resolve(&app, &token).await?;
    answers.validate().map_err(|why| ApiError::invalid("answers", why))?;
    let now = app.clock.now();
    let tz = crate::zones::zone_or_utc(&e.time_zone);
    let slot = slot_at(now, &tz);
    let flags = answers.red_flags(&app.config.red_flags);
    let check_in = CheckIn {
        enrolment_id: e.id.clone(),
        slot_start: slot.start,
        answered_at: now,
        answers: serde_json::to_value(&answers).map_err(ApiError::internal)?,
        red_flags: flags.join(","),
    };
    match app.store.insert_check_in(&check_in).await {
        Ok(()) => {}
        Err(StoreError::Conflict) => {
            return Err(ApiError::conflict("already_answered", "this morning's or evening's answers are already in"));
        }
        Err(e) => return Err(e.into()),
    }
    app.store
        .audit(&audit_event(&app, &format!("monitoring:{}", e.id), "check_in", &e.visit_id, Some(flags.join(","))))
        .await?;
    if !flags.is_empty() {
        let visit = app.store.visit_by_id(&e.visit_id).await?.ok_or_else(ApiError::not_found)?;
        crate::urgent::raise_red_flags(&app, &e.patient_id, &e.visit_id, Some(&visit), &flags).await?;
    }
    let body = json!({ "stored": true, "slot": slot.name, "red_flags": flags });
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// The patient's monitoring page (it reads its token from the path).
pub async fn page() -> Response {
    crate::web_assets::asset_response("monitor.html").unwrap_or_else(|| ApiError::not_found().into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_local_half_days() {
        let paris = crate::zones::zone("Europe/Paris").unwrap();
        let t = crate::timefmt::parse_rfc3339("2027-01-18T08:00:00Z").unwrap(); // 09:00 Paris
        let s = slot_at(t, &paris);
        assert_eq!(
            (s.name, rfc3339(s.start), rfc3339(s.end)),
            ("morning", "2027-01-17T23:00:00Z".into(), "2027-01-18T11:00:00Z".into())
        );
        let e = slot_at(s.end, &paris);
        assert_eq!((e.name, rfc3339(e.end)), ("evening", "2027-01-18T23:00:00Z".into()));
        let enrolment = Enrolment {
            id: "m-1".into(),
            patient_id: "p".into(),
            visit_id: "v".into(),
            clinician_id: "c".into(),
            time_zone: "Europe/Paris".into(),
            language: "fr".into(),
            starts_at: t,
            ends_at: e.end + 86_400,
            missed_after: 2,
            token_hash: String::new(),
            sealed_token: None,
            revoked_at: None,
            missed_flagged_through: None,
            created_at: t,
        };
        // Enrolled mid-morning: the first expected slot is that evening.
        assert_eq!(ended_slots(&enrolment, e.end).iter().map(|s| s.name).collect::<Vec<_>>(), ["evening"]);
        assert_eq!(ended_slots(&enrolment, e.end + 2 * 86_400).len(), 3, "until the enrolment's end");
    }
}
