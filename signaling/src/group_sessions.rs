//! Group sessions: a recurring class (adapted physical activity, a nurse
//! educator's workshop) led by one clinician for up to twelve enrolled
//! patients.
//!
//! - **Occurrences are visits.** Creating a session books every occurrence
//!   as a visit of kind `group` on the leader's calendar, through the one
//!   booking path ([`crate::visits::put_on_calendar`]), in one transaction:
//!   an occurrence that would overlap another visit refuses the whole
//!   series (409 `slot_taken`, naming the clashing start). The call, the
//!   waiting room (twelve waiting, thirteen in the call) and simulcast are
//!   those of any group visit.
//! - **Local time.** Occurrences fall on the given weekdays at the given
//!   wall-clock time in the session's zone, so a 10:00 class in Paris stays
//!   10:00 across a daylight-saving change (the UTC time moves).
//! - **Enrolment.** Each enrolled patient gets their own link to every
//!   occurrence not yet over (role guest, named after them, the link
//!   naming the patient), sealed so reminders can send it again. The
//!   capacity is the database's rule (`class_full`), however many enrol at once.
//! - **Attendance.** An enrolled patient's first admission to an occurrence
//!   is recorded ([`record_attendance`]); the weekly figures count them.

use jiff::civil::Date;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api_extract::Staff;
use crate::app::App;
use crate::http_error::ApiError;
use crate::idempotency::{Answer, Idempotency};
use crate::input_checks::check_text;
use crate::store::{
    ClassEnrolment, GroupSession, Link, LinkRole, NewVisit, Patient, StaffRole, StoreError, Visit, VisitKind,
    VisitStatus, with_retries,
};
use crate::timefmt::rfc3339;
use crate::visit_rooms::audit_event;
use crate::visits::{
    PatientInput, STAFF_WHO_RUN_VISITS, actor, bookable_clinician, check_duration, link_json, make_sealed_link,
    resolve_patient, sealed_link_url,
};
use crate::zones;

/// Most patients in a class: what the group room holds besides its leader.
pub const MAX_CAPACITY: i64 = 12;

/// Most weeks a session runs.
pub const MAX_WEEKS: i64 = 52;

const WEEKDAY_NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// The starts (Unix seconds) of a recurrence: every day from `first_day`
/// for `weeks` weeks whose ISO weekday (1 = Monday) is in `weekdays`, at
/// `local_minute` after local midnight in `tz`. A start skipped by a
/// daylight-saving change moves forward to the first valid time.
pub fn occurrence_starts(
    first_day: Date,
    weekdays: &[u8],
    local_minute: u16,
    weeks: i64,
    tz: &jiff::tz::TimeZone,
) -> Vec<i64> {
    (0..weeks * 7)
        .filter_map(|offset| zones::add_days(first_day, offset))
        .filter(|day| weekdays.contains(&(zones::weekday(*day) + 1)))
        .filter_map(|day| zones::at_local(day, local_minute, tz))
        .collect()
}

/// `POST /api/group-sessions` body.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateSession {
    /// "Adapted physical activity — gentle strength".
    pub title: String,
    /// Who leads it (admins only; default: the caller).
    pub leader_id: Option<String>,
    /// IANA zone; default the clinic's (`--clinic-time-zone`).
    pub time_zone: Option<String>,
    /// Days of the week: `mon` … `sun`.
    pub weekdays: Vec<String>,
    /// Local start, `HH:MM`.
    pub start_time: String,
    /// 5 to 240.
    pub duration_minutes: i64,
    /// First day of the recurrence, `YYYY-MM-DD` (local).
    pub first_day: String,
    /// 1 to 52.
    pub weeks: i64,
    /// 1 to 12; default 12.
    pub capacity: Option<i64>,
}

fn parse_weekdays(names: &[String]) -> Result<Vec<u8>, ApiError> {
    let mut days = Vec::new();
    for name in names {
        let i = WEEKDAY_NAMES
            .iter()
            .position(|d| d.eq_ignore_ascii_case(name))
            .ok_or_else(|| ApiError::invalid("weekdays", "each must be one of mon, tue, wed, thu, fri, sat, sun"))?;
        days.push(i as u8 + 1);
    }
    days.sort_unstable();
    days.dedup();
    if days.is_empty() {
        return Err(ApiError::invalid("weekdays", "give at least one day"));
    }
    Ok(days)
}

fn parse_clock(text: &str) -> Result<u16, ApiError> {
    let bad = || ApiError::invalid("start_time", "must be HH:MM, 00:00 to 23:59");
    let (h, m) = text.split_once(':').ok_or_else(bad)?;
    if h.len() != 2 || m.len() != 2 {
        return Err(bad());
    }
    let (h, m): (u16, u16) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if h > 23 || m > 59 {
        return Err(bad());
    }
    Ok(h * 60 + m)
}

/// Creates a session and books its occurrences on the leader's calendar,
/// all or none. 201 with the session's view.
pub async fn create(app: &App, staff: &Staff, input: &CreateSession) -> Result<Value, ApiError> {
    staff.require(STAFF_WHO_RUN_VISITS)?;
    let now = app.clock.now();
    let leader_id = input.leader_id.clone().unwrap_or_else(|| staff.0.id.clone());
    if !staff.may_act_on(&leader_id) {
        return Err(ApiError::forbidden());
    }
    let leader = bookable_clinician(app, &leader_id)
        .await
        .map_err(|_| ApiError::invalid("leader_id", "no such active clinician"))?;
    check_text("title", &input.title, 1, 200)?;
    let time_zone = input.time_zone.clone().unwrap_or_else(|| app.config.clinic_time_zone.clone());
    let tz = zones::zone(&time_zone)
        .ok_or_else(|| ApiError::invalid("time_zone", "must be an IANA zone such as Europe/Paris"))?;
    let weekdays = parse_weekdays(&input.weekdays)?;
    let local_minute = parse_clock(&input.start_time)?;
    check_duration(input.duration_minutes)?;
    let first_day =
        zones::parse_date(&input.first_day).ok_or_else(|| ApiError::invalid("first_day", "must be YYYY-MM-DD"))?;
    if !(1..=MAX_WEEKS).contains(&input.weeks) {
        return Err(ApiError::invalid("weeks", "must be between 1 and 52"));
    }
    let capacity = input.capacity.unwrap_or(MAX_CAPACITY);
    if !(1..=MAX_CAPACITY).contains(&capacity) {
        return Err(ApiError::invalid("capacity", "must be between 1 and 12"));
    }
    let starts = occurrence_starts(first_day, &weekdays, local_minute, input.weeks, &tz);
    if starts.first().is_none_or(|s| *s < now - 7 * 86_400)
        || starts.last().is_some_and(|s| *s > now + 2 * 366 * 86_400)
    {
        return Err(ApiError::invalid("first_day", "the occurrences must fall within a week ago and two years ahead"));
    }
    let session = GroupSession {
        id: crate::secret::random_id("gs"),
        leader_id: leader.id.clone(),
        roster_patient_id: crate::secret::random_id("pt"),
        title: input.title.clone(),
        time_zone,
        weekdays,
        local_minute,
        duration_minutes: input.duration_minutes,
        first_day: input.first_day.clone(),
        weeks: input.weeks,
        capacity,
        created_at: now,
    };
    let roster = Patient {
        id: session.roster_patient_id.clone(),
        display_name: session.title.clone(),
        hospital_id: None,
        contact: None,
        created_at: now,
    };
    let who = actor(staff);
    let (session_ref, roster_ref, starts_ref, who) = (&session, &roster, &starts, who.as_str());
    let clash = with_retries(|| async move {
        let mut tx = app.store.begin_write().await?;
        tx.lock_calendars(&[&session_ref.leader_id]).await?;
        tx.insert_patient(roster_ref).await?;
        tx.insert_group_session(session_ref).await?;
        for start in starts_ref {
            let visit = NewVisit {
                id: crate::secret::random_id("v"),
                patient_id: roster_ref.id.clone(),
                clinician_id: session_ref.leader_id.clone(),
                scheduled_start: *start,
                duration_minutes: session_ref.duration_minutes,
                kind: VisitKind::Group,
            };
            let audit = audit_event(app, who, "created", &visit.id, Some(format!("group_session {}", session_ref.id)));
            match crate::visits::put_on_calendar(&mut tx, None, &visit, &audit, now).await {
                Ok(_) => {}
                // The whole series is refused, naming the clashing start.
                Err(StoreError::Overlap) => return Ok(Some(*start)),
                Err(e) => return Err(e),
            }
            tx.insert_group_occurrence(&session_ref.id, &visit.id).await?;
        }
        tx.commit().await?;
        Ok(None)
    })
    .await?;
    if let Some(start) = clash {
        return Err(ApiError::slot_taken().with_details(json!({ "scheduled_start": zones::rfc3339_in(start, &tz) })));
    }
    session_json(app, &session).await
}

/// Loads a session the caller may act on: its leader, or an admin.
pub async fn session_for(app: &App, staff: &Staff, id: &str) -> Result<GroupSession, ApiError> {
    staff.require(STAFF_WHO_RUN_VISITS)?;
    let session = app.store.group_session_by_id(id).await?.ok_or_else(ApiError::not_found)?;
    if !staff.may_act_on(&session.leader_id) {
        return Err(ApiError::forbidden());
    }
    Ok(session)
}

/// The sessions the caller leads (admins: all).
pub async fn list(app: &App, staff: &Staff) -> Result<Value, ApiError> {
    staff.require(STAFF_WHO_RUN_VISITS)?;
    let leader = (staff.0.role != StaffRole::Admin).then_some(staff.0.id.as_str());
    let mut out = Vec::new();
    for s in app.store.group_sessions(leader).await? {
        let occurrences = app.store.group_occurrences(&s.id).await?;
        let enrolments = app.store.group_enrolments(&s.id).await?;
        out.push(summary_json(app, &s, &occurrences, &enrolments));
    }
    Ok(json!({ "group_sessions": out }))
}

/// Whether an occurrence is still to come (or running): what gets links
/// and counts as "next".
fn still_to_come(v: &Visit, now: i64) -> bool {
    v.scheduled_end() > now && matches!(v.status, VisitStatus::Scheduled | VisitStatus::InProgress)
}

fn summary_json(app: &App, s: &GroupSession, occurrences: &[Visit], enrolments: &[ClassEnrolment]) -> Value {
    let enrolled = enrolments.iter().filter(|e| e.withdrawn_at.is_none()).count();
    let now = app.clock.now();
    let next = occurrences.iter().find(|v| still_to_come(v, now));
    let tz = zones::zone_or_utc(&s.time_zone);
    json!({
        "id": s.id,
        "title": s.title,
        "leader_id": s.leader_id,
        "time_zone": s.time_zone,
        "weekdays": s.weekdays.iter().map(|d| WEEKDAY_NAMES[usize::from(d - 1)]).collect::<Vec<_>>(),
        "start_time": format!("{:02}:{:02}", s.local_minute / 60, s.local_minute % 60),
        "duration_minutes": s.duration_minutes,
        "first_day": s.first_day,
        "weeks": s.weeks,
        "capacity": s.capacity,
        "enrolled": enrolled,
        "occurrence_count": occurrences.len(),
        "next_occurrence": next.map(|v| json!({"visit_id": v.id, "scheduled_start": zones::rfc3339_in(v.scheduled_start, &tz)})),
    })
}

/// The full view of a session: occurrences (local times, status, who
/// came), enrolments (with each patient's link to the next occurrence).
pub async fn session_json(app: &App, s: &GroupSession) -> Result<Value, ApiError> {
    let occurrences = app.store.group_occurrences(&s.id).await?;
    let enrolments = app.store.group_enrolments(&s.id).await?;
    let attendance = app.store.group_attendance(&s.id).await?;
    let mut view = summary_json(app, s, &occurrences, &enrolments);
    let tz = zones::zone_or_utc(&s.time_zone);
    view["occurrences"] = occurrences
        .iter()
        .map(|v| {
            let came: Vec<&str> =
                attendance.iter().filter(|(visit, _)| *visit == v.id).map(|(_, p)| p.as_str()).collect();
            json!({
                "visit_id": v.id,
                "scheduled_start": zones::rfc3339_in(v.scheduled_start, &tz),
                "status": v.status,
                "attended": came.len(),
                "attendees": came,
            })
        })
        .collect();
    let now = app.clock.now();
    let next_links = match occurrences.iter().find(|v| still_to_come(v, now)) {
        Some(v) => app.store.links_of_visit(&v.id).await?,
        None => Vec::new(),
    };
    view["enrolments"] = enrolments
        .iter()
        .map(|e| {
            let attended = attendance.iter().filter(|(_, p)| *p == e.patient.id).count();
            let link = next_links
                .iter()
                .find(|l| l.patient_id.as_deref() == Some(&e.patient.id) && l.revoked_at.is_none())
                .and_then(|l| sealed_link_url(app, l));
            json!({
                "patient": {"id": e.patient.id, "display_name": e.patient.display_name, "hospital_id": e.patient.hospital_id},
                "enrolled_at": rfc3339(e.enrolled_at),
                "withdrawn_at": e.withdrawn_at.map(rfc3339),
                "attended": attended,
                "next_link": link,
            })
        })
        .collect();
    Ok(view)
}

/// `POST /api/group-sessions/{id}/enrolments` body.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Enrol {
    /// An existing patient's id, or a new patient's details.
    pub patient: PatientInput,
}

/// Enrols a patient: one link per occurrence not yet over, shown once
/// here (and kept sealed for reminders). 409 `class_full` at capacity,
/// 409 `already_enrolled`. With an `Idempotency-Key`, a repeat gets the
/// first answer (one patient, one enrolment).
pub async fn enrol(
    app: &App,
    staff: &Staff,
    session_id: &str,
    input: &Enrol,
    idempotency: &Idempotency,
) -> Result<Answer, ApiError> {
    let session = session_for(app, staff, session_id).await?;
    let now = app.clock.now();
    let (patient, is_new) = resolve_patient(app, staff, &input.patient, now).await?;
    if patient.id == session.roster_patient_id {
        return Err(ApiError::invalid("patient.id", "no such patient"));
    }
    let upcoming: Vec<_> =
        app.store.group_occurrences(&session.id).await?.into_iter().filter(|v| still_to_come(v, now)).collect();
    let links: Vec<(Link, String)> = upcoming
        .iter()
        .map(|v| class_link(app, &v.id, (v.scheduled_start, v.scheduled_end()), &patient, now))
        .collect();
    let tz = zones::zone_or_utc(&session.time_zone);
    // The answer is known before the write: it is recorded with it, so a
    // repeated request (a double click) gets the same patient and links.
    let answer = Answer::created(json!({
        "patient": {"id": patient.id, "display_name": patient.display_name, "hospital_id": patient.hospital_id},
        "links": links.iter().zip(&upcoming).map(|((link, token), v)| {
            let mut l = link_json(app, link, Some(token));
            l["visit_id"] = json!(v.id);
            l["scheduled_start"] = json!(zones::rfc3339_in(v.scheduled_start, &tz));
            l
        }).collect::<Vec<_>>(),
    }));
    let who = actor(staff);
    let (session_ref, patient_ref, links_ref, who, answer_ref) = (&session, &patient, &links, who.as_str(), &answer);
    with_retries(|| async move {
        let mut tx = app.store.begin_write().await?;
        if let Some(replay) = idempotency.claim(&mut tx, &app.sealer, now).await? {
            return Ok(replay);
        }
        if is_new {
            tx.insert_patient(patient_ref).await?;
        }
        tx.enrol(&session_ref.id, &patient_ref.id, now).await.map_err(|e| match e {
            StoreError::Conflict => {
                ApiError::conflict("already_enrolled", "this patient is already enrolled in the class")
            }
            e => e.into(),
        })?;
        for (link, _) in links_ref {
            tx.insert_link(link).await?;
            tx.insert_audit(&audit_event(app, who, "class_link_issued", &link.visit_id, Some(link.id.clone()))).await?;
        }
        idempotency.record(&mut tx, &app.sealer, answer_ref).await?;
        tx.commit().await?;
        Ok(answer_ref.clone())
    })
    .await
}

/// A class link: a guest link named after the patient, naming them for
/// attendance and reminders, its token sealed.
fn class_link(app: &App, visit_id: &str, window: (i64, i64), patient: &Patient, now: i64) -> (Link, String) {
    let name = Some(patient.display_name.clone());
    let (mut link, token) = make_sealed_link(visit_id, window, app.link_settings(), LinkRole::Guest, name, now);
    link.patient_id = Some(patient.id.clone());
    (link, token)
}

/// Withdraws an enrolled patient; their links to occurrences not yet over
/// stop working. 404 when not enrolled.
pub async fn withdraw(app: &App, staff: &Staff, session_id: &str, patient_id: &str) -> Result<(), ApiError> {
    let session = session_for(app, staff, session_id).await?;
    let now = app.clock.now();
    let (session_ref, who) = (&session, actor(staff));
    let who = who.as_str();
    with_retries(|| async move {
        let mut tx = app.store.begin_write().await?;
        tx.withdraw(&session_ref.id, patient_id, now).await?;
        tx.insert_audit(&crate::store::AuditEvent {
            at: now,
            actor: who.to_string(),
            action: "class_withdrawn".into(),
            visit_id: None,
            detail: Some(format!("group_session {} patient {patient_id}", session_ref.id)),
        })
        .await?;
        tx.commit().await
    })
    .await?;
    Ok(())
}

/// Records the attendance of the participant `subject` (`link:<id>`) just
/// admitted to `room`; nothing for a link that names no enrolled patient.
pub async fn record_attendance(app: &App, subject: &str) {
    let Some(link_id) = subject.strip_prefix("link:") else { return };
    if let Err(e) = app.store.record_attendance(link_id, app.clock.now()).await {
        tracing::warn!(error = %e, "attendance not recorded");
    }
}

/// The enrolled patients a class occurrence's reminders go to: `None` for
/// a visit that is not a class occurrence (only a visit of kind `group`
/// may be one, so others cost no query).
pub async fn reminder_recipients(app: &App, visit: &Visit) -> Result<Option<Vec<String>>, StoreError> {
    if visit.kind != VisitKind::Group {
        return Ok(None);
    }
    app.store.class_recipients(&visit.id).await
}

/// The URL of `patient_id`'s own link to a class occurrence, if they hold
/// one that still works.
pub async fn class_link_url(app: &App, visit_id: &str, patient_id: &str) -> Result<Option<String>, StoreError> {
    let links = app.store.links_of_visit(visit_id).await?;
    Ok(links
        .iter()
        .rev()
        .filter(|l| l.patient_id.as_deref() == Some(patient_id) && l.revoked_at.is_none())
        .find_map(|l| sealed_link_url(app, l)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paris() -> jiff::tz::TimeZone {
        zones::zone("Europe/Paris").unwrap()
    }

    #[test]
    fn tuesdays_and_fridays_at_ten_stay_at_ten_across_the_spring_change() {
        // Clocks go forward on Sunday 28 March 2027 in Paris.
        let first = zones::parse_date("2027-03-16").unwrap();
        let starts = occurrence_starts(first, &[2, 5], 10 * 60, 3, &paris());
        let local: Vec<String> = starts.iter().map(|s| zones::rfc3339_in(*s, &paris())).collect();
        assert_eq!(
            local,
            [
                "2027-03-16T10:00:00+01:00",
                "2027-03-19T10:00:00+01:00",
                "2027-03-23T10:00:00+01:00",
                "2027-03-26T10:00:00+01:00",
                "2027-03-30T10:00:00+02:00",
                "2027-04-02T10:00:00+02:00",
            ]
        );
        // In UTC the class moves an hour earlier after the change.
        assert_eq!(rfc3339(starts[3]), "2027-03-26T09:00:00Z");
        assert_eq!(rfc3339(starts[4]), "2027-03-30T08:00:00Z");
    }

    #[test]
    fn a_start_in_the_skipped_hour_moves_forward() {
        let sunday = zones::parse_date("2027-03-28").unwrap();
        let starts = occurrence_starts(sunday, &[7], 2 * 60 + 30, 1, &paris());
        assert_eq!(
            starts.iter().map(|s| zones::rfc3339_in(*s, &paris())).collect::<Vec<_>>(),
            ["2027-03-28T03:30:00+02:00"]
        );
    }

    #[test]
    fn weekdays_and_clock_times_are_checked() {
        assert_eq!(parse_weekdays(&["fri".into(), "Tue".into(), "fri".into()]).unwrap(), [2, 5]);
        assert!(parse_weekdays(&[]).is_err());
        assert!(parse_weekdays(&["mardi".into()]).is_err());
        assert_eq!(parse_clock("10:30").unwrap(), 630);
        for bad in ["24:00", "9:00", "10h00", "10:60", ""] {
            assert!(parse_clock(bad).is_err(), "{bad}");
        }
    }
}
