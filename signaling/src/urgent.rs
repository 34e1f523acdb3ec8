//! Urgent means sooner. A red flag (the pre-visit questionnaire or a
//! monitoring check-in) books the patient's follow-up into the earliest
//! free slot within the urgent horizon (`--urgent-horizon-hours`, 72 by
//! default): on the follow-up's clinician, or failing that on another
//! clinician of the same specialty. Staff can ask the same of any
//! follow-up ("book sooner"). Every re-booking goes through the one
//! booking path ([`crate::visits::place`]) in one transaction with the old
//! visit's withdrawal, under both calendars' locks.
//!
//! Clinicians are told in their inbox (a persistent notification, also
//! sent to the gateway as a staff message), and live if they are connected.

use serde_json::json;
use teleconsult_protocol::ServerMessage;

use crate::app::App;
use crate::follow_ups::{EARLIEST_AFTER_SECS, follow_up_cancelled};
use crate::http_error::ApiError;
use crate::store::{
    Clinician, FollowUp, FollowUpStatus, NewOutboxEntry, Notification, Priority, StaffRole, StoreError, Visit,
    VisitStatus, with_retries,
};
use crate::timefmt::rfc3339;
use crate::visit_rooms::audit_event;
use crate::visits::{first_free_slot_in, place};

/// What "book sooner" did.
#[derive(Debug, Clone, PartialEq)]
pub enum Sooner {
    /// Already booked within the horizon: left alone.
    AlreadySoon(Visit),
    /// Re-booked into this visit (on this clinician).
    Booked {
        /// The new visit.
        visit: Visit,
        /// The patient link's token (shown once).
        token: String,
        /// Whether it moved to another clinician than the follow-up's.
        handed_over: bool,
    },
    /// No free slot within the horizon: marked urgent, left in the queue.
    NoSlot,
}

/// Who can take an urgent follow-up: its clinician first, then the active
/// clinicians (not ops) of the same specialty.
async fn candidates(app: &App, clinician_id: &str) -> Result<Vec<Clinician>, ApiError> {
    let own = app.store.clinician_by_id(clinician_id).await?.ok_or_else(ApiError::not_found)?;
    let mut out = vec![own.clone()];
    for c in app.store.list_clinicians().await? {
        if c.id != own.id && c.active && c.role != StaffRole::Ops && c.specialty == own.specialty {
            out.push(c);
        }
    }
    Ok(out)
}

/// Books follow-up `id` into the earliest free slot within the urgent
/// horizon (see the module docs) and marks it urgent. `actor` is audited.
pub async fn book_sooner(app: &App, actor: &str, id: &str) -> Result<Sooner, ApiError> {
    let now = app.clock.now();
    let f = app.store.follow_up_by_id(id).await?.ok_or_else(ApiError::not_found)?;
    if f.status == FollowUpStatus::Cancelled {
        return Err(follow_up_cancelled());
    }
    let window = (now + EARLIEST_AFTER_SECS, now + app.config.urgent_horizon);
    let people = candidates(app, &f.clinician_id).await?;
    let mut availability = Vec::new();
    for c in &people {
        availability.push(app.store.availability_of(&c.id).await?);
    }
    let (people, availability) = (&people, &availability);
    with_retries(|| async move {
        let mut tx = app.store.begin_write().await?;
        let f = tx.follow_up_by_id(id).await?.ok_or_else(ApiError::not_found)?;
        if f.status == FollowUpStatus::Cancelled {
            return Err(follow_up_cancelled());
        }
        tx.set_follow_up_priority(&f.id, Priority::Urgent).await?;
        let current = match &f.visit_id {
            Some(v) => tx.visit_by_id(v).await?.filter(|v| v.status == VisitStatus::Scheduled),
            None => None,
        };
        if let Some(visit) = current.as_ref().filter(|v| v.scheduled_start <= window.1) {
            tx.commit().await?;
            return Ok(Sooner::AlreadySoon(visit.clone()));
        }
        let ids: Vec<&str> = people.iter().map(|c| c.id.as_str()).collect();
        tx.lock_calendars(&ids).await?;
        // The follow-up's own clinician first; then whoever of the service is free soonest.
        let mut best: Option<(usize, i64)> = None;
        for (i, (c, a)) in people.iter().zip(availability.iter()).enumerate() {
            if let Some(start) = first_free_slot_in(&mut tx, &c.id, a.as_ref(), window, f.duration_minutes).await? {
                if i == 0 {
                    best = Some((0, start));
                    break;
                }
                if best.is_none_or(|(_, s)| start < s) {
                    best = Some((i, start));
                }
            }
        }
        let Some((who, start)) = best else {
            tx.insert_audit(&audit_event(app, actor, "follow_up_no_urgent_slot", &f.from_visit_id, Some(f.id.clone())))
                .await?;
            tx.commit().await?;
            return Ok(Sooner::NoSlot);
        };
        let clinician = &people[who];
        let told = match &current {
            Some(old) => tx.withdraw_scheduled_visit(&old.id, now).await?,
            None => false,
        };
        let visit = crate::follow_ups::follow_up_visit(&f.patient_id, &clinician.id, start, f.duration_minutes);
        let audit = audit_event(app, actor, "created", &visit.id, Some(format!("follow-up {} booked sooner", f.id)));
        let booked = place(&mut tx, None, &visit, app.link_settings(), &audit, now).await.map_err(|e| match e {
            // Found free under the lock: an overlap means a writer got past it; retried.
            StoreError::Overlap => ApiError::busy(),
            other => ApiError::from(other),
        })?;
        if told {
            tx.tell_rebooked(&booked.visit.id, start, now).await?;
        }
        tx.place_follow_up(&f.id, &clinician.id, Some(&booked.visit.id)).await?;
        tx.insert_audit(&audit_event(
            app,
            actor,
            "follow_up_booked_sooner",
            &f.from_visit_id,
            Some(format!("{} {}", f.id, booked.visit.id)),
        ))
        .await?;
        tx.commit().await?;
        Ok(Sooner::Booked { visit: booked.visit, token: booked.token, handed_over: who != 0 })
    })
    .await
}

/// Tells clinicians something in their inbox, on the gateway (when one is
/// set) and live. `kind` and `detail` are codes, never patient data.
pub async fn notify(
    app: &App,
    clinician_ids: &[&str],
    kind: &str,
    visit_id: &str,
    follow_up_id: Option<&str>,
    detail: &str,
) -> Result<(), ApiError> {
    let mut ids: Vec<&str> = clinician_ids.to_vec();
    ids.sort_unstable();
    ids.dedup();
    let now = app.clock.now();
    let notes: Vec<Notification> = ids
        .iter()
        .map(|id| Notification {
            id: crate::secret::random_id("n"),
            clinician_id: id.to_string(),
            kind: kind.to_string(),
            visit_id: Some(visit_id.to_string()),
            follow_up_id: follow_up_id.map(str::to_owned),
            detail: Some(detail.to_string()),
            created_at: now,
            read_at: None,
        })
        .collect();
    let notes = &notes;
    with_retries(|| async move {
        let mut tx = app.store.begin_write().await?;
        for n in notes {
            tx.insert_notification(n).await?;
            if app.config.reminder_webhook.is_some() {
                let key = format!("notice:{}", n.id);
                let payload = json!({
                    "notification_id": n.id, "clinician_id": n.clinician_id, "kind": n.kind, "detail": n.detail,
                })
                .to_string();
                let entry = NewOutboxEntry {
                    key: &key,
                    visit_id,
                    kind: "staff_notice",
                    scheduled_start: None,
                    payload: Some(&payload),
                };
                tx.enqueue(&entry, now).await?;
            }
        }
        tx.commit().await?;
        Ok::<_, StoreError>(())
    })
    .await?;
    for n in notes {
        app.tell_subject(
            &format!("clinician:{}", n.clinician_id),
            &ServerMessage::Notice {
                kind: kind.to_string(),
                visit_id: visit_id.to_string(),
                detail: detail.to_string(),
            },
        )
        .await;
    }
    Ok(())
}

/// What a red flag did to one follow-up, for the audit and the inbox.
#[derive(Debug, Clone, PartialEq)]
pub struct Raised {
    /// The follow-up.
    pub follow_up: FollowUp,
    /// What booking it sooner did.
    pub outcome: Sooner,
}

impl Raised {
    /// Who holds the follow-up's visit now, if it has one.
    pub fn holder(&self) -> Option<&str> {
        match &self.outcome {
            Sooner::Booked { visit, .. } | Sooner::AlreadySoon(visit) => Some(&visit.clinician_id),
            Sooner::NoSlot => None,
        }
    }
}

/// A red flag from a patient: every open follow-up of theirs is booked
/// sooner; when they have none and `from_visit` is given (monitoring), an
/// urgent one is created from that visit first. The clinician of
/// `visit_id` and whoever now holds each follow-up are notified.
pub async fn raise_red_flags(
    app: &App,
    patient_id: &str,
    visit_id: &str,
    from_visit: Option<&Visit>,
    flags: &[&str],
) -> Result<Vec<Raised>, ApiError> {
    let now = app.clock.now();
    let mut open = app.store.open_follow_ups_of_patient(patient_id).await?;
    if open.is_empty()
        && let Some(from) = from_visit
    {
        let f = FollowUp {
            id: crate::secret::random_id("f"),
            patient_id: patient_id.to_string(),
            from_visit_id: from.id.clone(),
            clinician_id: from.clinician_id.clone(),
            due_at: now,
            duration_minutes: from.duration_minutes,
            reason: "red flag in symptom monitoring".into(),
            priority: Priority::Urgent,
            status: FollowUpStatus::Unplaced,
            visit_id: None,
        };
        let f = &f;
        app.store
            .retrying(|| async move {
                let mut tx = app.store.begin_write().await?;
                tx.insert_follow_up(f, now).await?;
                tx.insert_audit(&audit_event(
                    app,
                    "system",
                    "follow_up_booked",
                    &f.from_visit_id,
                    Some(format!("{} red flag", f.id)),
                ))
                .await?;
                tx.commit().await
            })
            .await?;
        open.push(f.clone());
    }
    let visit_clinician = app.store.visit_by_id(visit_id).await?.map(|v| v.clinician_id);
    let mut raised = Vec::new();
    for f in open {
        let outcome = book_sooner(app, "system", &f.id).await?;
        raised.push(Raised { follow_up: f, outcome });
    }
    // Everyone concerned hears of the red flags…
    let mut who: Vec<String> = visit_clinician.into_iter().collect();
    for r in &raised {
        who.push(r.follow_up.clinician_id.clone());
        if let Some(holder) = r.holder() {
            who.push(holder.to_string());
        }
    }
    let who: Vec<&str> = who.iter().map(String::as_str).collect();
    notify(app, &who, "red_flags", visit_id, None, &flags.join(",")).await?;
    // …and the follow-up's clinician and its new holder of what became of it.
    for r in &raised {
        let (kind, detail) = match &r.outcome {
            Sooner::Booked { visit, handed_over: true, .. } => {
                ("follow_up_handed_over", rfc3339(visit.scheduled_start))
            }
            Sooner::Booked { visit, .. } => ("booked_sooner", rfc3339(visit.scheduled_start)),
            Sooner::AlreadySoon(_) => continue,
            Sooner::NoSlot => ("no_urgent_slot", String::new()),
        };
        let mut who = vec![r.follow_up.clinician_id.as_str()];
        who.extend(r.holder());
        let about = match &r.outcome {
            Sooner::Booked { visit, .. } => visit.id.as_str(),
            _ => visit_id,
        };
        notify(app, &who, kind, about, Some(&r.follow_up.id), &detail).await?;
    }
    Ok(raised)
}
