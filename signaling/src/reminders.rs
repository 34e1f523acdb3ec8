//! What the gateway is sent for each outbox entry, and one delivery.
//!
//! - `24h`, `15min`: a reminder of the visit, with the patient's link. For
//!   a class occurrence, one per enrolled patient (the entry's payload
//!   names them), with their own link and the class's title. The
//!   link is the visit's own (its token sealed at booking, opened here), so
//!   retries and later reminders send the same link; a new one is issued
//!   (and sealed) only when none can be opened, e.g. after the server's
//!   secret changed.
//! - `moved`: the visit's new time, with the same link, sent when a patient
//!   who had been reminded is rescheduled. A reminder queued for an earlier
//!   start is dropped, never sent with a time that is no longer true.
//! - `cancelled`: the visit is off (no link), sent when a patient who had
//!   been reminded is cancelled.
//! - `staff_notice`: a clinician's notification (ids and codes, no patient data).
//! - `monitoring_link`: the patient's symptom-monitoring link.

use serde_json::{Value, json};

use crate::app::App;
use crate::store::{LinkRole, OutboxEntry, VisitKind, VisitStatus};
use crate::timefmt::rfc3339;
use crate::visit_rooms::audit_event;
use crate::visits::{make_patient_link, sealed_link_url};

/// What became of one delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// The gateway took it.
    Sent,
    /// Not sent, and never will be: the visit is over, cancelled or moved since.
    Dropped(&'static str),
    /// Failed; try again later.
    Failed(String),
}

/// Builds and posts one entry (see the module docs).
pub async fn deliver(app: &App, url: &str, entry: &OutboxEntry, now: i64) -> Delivery {
    match message(app, entry, now).await {
        Ok(Some(body)) => {
            match crate::webhook::post(url, &entry.key, &body.to_string(), app.config.reminder_timeout).await {
                Ok(()) => Delivery::Sent,
                Err(e) => Delivery::Failed(e),
            }
        }
        Ok(None) => Delivery::Dropped(drop_reason(entry)),
        Err(e) => Delivery::Failed(e),
    }
}

fn drop_reason(entry: &OutboxEntry) -> &'static str {
    match entry.kind.as_str() {
        "staff_notice" | "monitoring_link" => "dropped: no longer applies",
        _ => "dropped: the visit changed since",
    }
}

/// The message body, or `None` when it no longer applies.
async fn message(app: &App, entry: &OutboxEntry, now: i64) -> Result<Option<Value>, String> {
    let store = &app.store;
    let visit = store.visit_by_id(&entry.visit_id).await.map_err(|e| e.to_string())?.ok_or("visit gone")?;
    let base = |kind: &str| {
        json!({
            "idempotency_key": entry.key,
            "kind": kind,
            "visit_id": visit.id,
            "sent_at": rfc3339(now),
        })
    };
    match entry.kind.as_str() {
        "staff_notice" => {
            let payload: Value =
                entry.payload.as_deref().and_then(|p| serde_json::from_str(p).ok()).unwrap_or_default();
            let Some(clinician_id) = payload["clinician_id"].as_str() else { return Ok(None) };
            let Some(clinician) = store.clinician_by_id(clinician_id).await.map_err(|e| e.to_string())? else {
                return Ok(None);
            };
            let mut body = base("staff_notice");
            body["staff"] =
                json!({"id": clinician.id, "email": clinician.email, "display_name": clinician.display_name});
            body["notice"] = json!({
                "notification_id": payload["notification_id"],
                "kind": payload["kind"],
                "detail": payload["detail"],
                "url": format!("{}/schedule#inbox", app.public_url),
            });
            Ok(Some(body))
        }
        "monitoring_link" => {
            let payload: Value =
                entry.payload.as_deref().and_then(|p| serde_json::from_str(p).ok()).unwrap_or_default();
            let Some(enrolment_id) = payload["enrolment_id"].as_str() else { return Ok(None) };
            let Some(url) = crate::monitoring::link_url_of(app, enrolment_id, now).await.map_err(|e| e.message)? else {
                return Ok(None);
            };
            let mut body = base("monitoring_link");
            body["patient"] = patient_json(app, &visit.patient_id).await?;
            body["clinician"] = clinician_json(app, &visit.clinician_id).await?;
            body["link"] = json!(url);
            Ok(Some(body))
        }
        "cancelled" => {
            if visit.status != VisitStatus::Cancelled {
                return Ok(None);
            }
            // A class occurrence's roster record has no one to tell; its
            // enrolled patients are not yet told of a cancellation one by one.
            if visit.kind == VisitKind::Group
                && store.group_session_of_visit(&visit.id).await.map_err(|e| e.to_string())?.is_some()
            {
                return Ok(None);
            }
            let mut body = base("cancelled");
            body["scheduled_start"] = json!(rfc3339(entry.scheduled_start.unwrap_or(visit.scheduled_start)));
            body["patient"] = patient_json(app, &visit.patient_id).await?;
            body["clinician"] = clinician_json(app, &visit.clinician_id).await?;
            Ok(Some(body))
        }
        kind => {
            // 24h, 15min, moved: only for the visit's current time.
            if visit.status != VisitStatus::Scheduled
                || entry.scheduled_start.is_some_and(|s| s != visit.scheduled_start)
            {
                return Ok(None);
            }
            // Only a visit of kind `group` may be a class occurrence.
            let class = match visit.kind {
                VisitKind::Group => store.group_session_of_visit(&visit.id).await.map_err(|e| e.to_string())?,
                _ => None,
            };
            if let Some(class) = class {
                // A class occurrence: to one enrolled patient, with their
                // own link; none once they have withdrawn.
                let payload: Value =
                    entry.payload.as_deref().and_then(|p| serde_json::from_str(p).ok()).unwrap_or_default();
                let Some(patient_id) = payload["patient_id"].as_str() else { return Ok(None) };
                let Some(link) = crate::group_sessions::class_link_url(app, &visit.id, patient_id)
                    .await
                    .map_err(|e| e.to_string())?
                else {
                    return Ok(None);
                };
                let mut body = base(kind);
                body["scheduled_start"] = json!(rfc3339(visit.scheduled_start));
                body["patient"] = patient_json(app, patient_id).await?;
                body["clinician"] = clinician_json(app, &visit.clinician_id).await?;
                body["group_session"] = json!({"id": class.id, "title": class.title});
                body["link"] = json!(link);
                return Ok(Some(body));
            }
            let link = patient_link(app, &visit, &entry.key, now).await?;
            let mut body = base(kind);
            body["scheduled_start"] = json!(rfc3339(visit.scheduled_start));
            body["patient"] = patient_json(app, &visit.patient_id).await?;
            body["clinician"] = clinician_json(app, &visit.clinician_id).await?;
            body["link"] = json!(link);
            Ok(Some(body))
        }
    }
}

async fn patient_json(app: &App, id: &str) -> Result<Value, String> {
    let p = app.store.patient_by_id(id).await.map_err(|e| e.to_string())?;
    Ok(p.map(|p| json!({"display_name": p.display_name, "hospital_id": p.hospital_id, "contact": p.contact}))
        .unwrap_or(Value::Null))
}

async fn clinician_json(app: &App, id: &str) -> Result<Value, String> {
    let c = app.store.clinician_by_id(id).await.map_err(|e| e.to_string())?;
    Ok(c.map(|c| json!({"display_name": c.display_name, "specialty": c.specialty})).unwrap_or(Value::Null))
}

/// The visit's patient link URL: its live link's sealed token, or (none
/// opening) a new link, sealed and audited.
async fn patient_link(app: &App, visit: &crate::store::Visit, key: &str, now: i64) -> Result<String, String> {
    let links = app.store.links_of_visit(&visit.id).await.map_err(|e| e.to_string())?;
    let live = links.iter().rev().filter(|l| l.role == LinkRole::Patient && l.revoked_at.is_none());
    if let Some(url) = live.filter_map(|l| sealed_link_url(app, l)).next() {
        return Ok(url);
    }
    let (link, token) =
        make_patient_link(&visit.id, (visit.scheduled_start, visit.scheduled_end()), app.link_settings(), now);
    app.store
        .insert_link(&link, &audit_event(app, "system", "reminder_link_issued", &visit.id, Some(key.to_string())))
        .await
        .map_err(|e| e.to_string())?;
    Ok(app.link_url(&token))
}
