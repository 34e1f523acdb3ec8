//! The scheduler's background work, on the app's (injectable) clock:
//! pre-provision rooms, queue and deliver reminders through a durable
//! outbox, mark no-shows and put their follow-ups back in the queue, and
//! complete visits left running in an empty room.
//!
//! Every step reads its state from the store and writes one transaction per
//! change, so a crash at any point leaves nothing half-done, and the next
//! tick picks up where the last one stopped.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::json;
use teleconsult_sfu::{RoomId, RoomOptions};
use tracing::{info, warn};

use crate::app::App;
use crate::store::{LinkRole, VisitStatus};
use crate::timefmt::rfc3339;
use crate::visit_rooms::{audit_event, close_room};

/// Rooms are created this long before a visit starts.
pub const PROVISION_BEFORE_SECS: i64 = 15 * 60;
/// Reminders: (kind, how long before the start).
pub const REMINDERS: [(&str, i64); 2] = [("24h", 24 * 3600), ("15min", 15 * 60)];
/// A scheduled visit whose patient has not joined this long after its start is a no-show.
pub const NO_SHOW_AFTER_SECS: i64 = 15 * 60;
/// A visit left running in an empty room this long is completed.
pub const AUTO_COMPLETE_AFTER_SECS: i64 = 30 * 60;
/// Retry delays grow from this, doubling, up to an hour.
pub const RETRY_BASE_SECS: i64 = 30;

/// What one tick did (for tests and logs).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TickReport {
    /// Rooms created ahead of their visit.
    pub provisioned: usize,
    /// Reminders put in the outbox.
    pub reminders_queued: usize,
    /// Reminders delivered.
    pub delivered: usize,
    /// Deliveries that failed (retried later).
    pub failed: usize,
    /// Visits marked no-show.
    pub no_shows: usize,
    /// Visits completed because their room stayed empty.
    pub auto_completed: usize,
}

/// The worker's memory between ticks: when each running visit's room was
/// first seen empty (lost on restart, which only delays an auto-complete).
#[derive(Debug, Default)]
pub struct SchedulerWorker {
    empty_since: HashMap<String, i64>,
}

impl SchedulerWorker {
    /// One pass over everything due at `now`.
    pub async fn tick(&mut self, app: &App, now: i64) -> TickReport {
        let mut report = TickReport::default();
        if let Err(e) = self.run(app, now, &mut report).await {
            warn!(error = %e, "scheduler tick failed; retried next tick");
        }
        report
    }

    async fn run(&mut self, app: &App, now: i64, report: &mut TickReport) -> Result<(), crate::store::StoreError> {
        // 1. Rooms ready before the visit starts.
        for visit_id in app.store.visits_to_provision(now, now + PROVISION_BEFORE_SECS).await? {
            let options = RoomOptions { max_participants: Some(app.config.max_participants) };
            if app.sfu.create_room(RoomId(visit_id.clone()), options).await.is_ok() {
                app.store
                    .mark_provisioned(&visit_id, now, &audit_event(app, "system", "room_provisioned", &visit_id, None))
                    .await?;
                report.provisioned += 1;
            }
        }

        // 2. Reminders into the outbox, once per visit and kind.
        if app.config.reminder_webhook.is_some() {
            let mut lower = now;
            for (kind, before) in REMINDERS.iter().rev() {
                // 15min covers (now, now+15m]; 24h covers (now+15m, now+24h].
                for visit in app.store.visits_starting(VisitStatus::Scheduled, lower, now + before).await? {
                    if app
                        .store
                        .enqueue_reminder(&format!("reminder:{}:{kind}", visit.id), &visit.id, kind, now)
                        .await?
                    {
                        report.reminders_queued += 1;
                    }
                }
                lower = now + before;
            }
        }

        // 3. Deliver what is due.
        if let Some(url) = app.config.reminder_webhook.clone() {
            for entry in app.store.due_outbox(now, 50).await? {
                let outcome = deliver(app, &url, &entry.key, &entry.visit_id, &entry.kind, now).await;
                match &outcome {
                    Ok(()) => report.delivered += 1,
                    Err(_) => report.failed += 1,
                }
                let retry_at = now + (RETRY_BASE_SECS << entry.attempts.clamp(0, 7)).min(3600);
                app.store.outbox_attempted(&entry.key, now, outcome.map_err(|e| (e, retry_at))).await?;
            }
        }

        // 4. No-shows: the patient never came; the follow-up goes back to the queue.
        for visit in
            app.store.visits_starting(VisitStatus::Scheduled, now - 7 * 86_400, now - NO_SHOW_AFTER_SECS).await?
        {
            if !app.store.patient_joined(&visit.id).await?
                && app.store.mark_no_show(&visit, now, &audit_event(app, "system", "no_show", &visit.id, None)).await?
            {
                close_room(app, &visit.id, "visit_ended").await;
                report.no_shows += 1;
                info!(visit = %visit.id, "no-show; follow-up re-queued");
            }
        }

        // 5. Answers to idempotent requests older than a day.
        app.store.forget_idempotency_keys(now - crate::idempotency::KEEP_SECS).await?;

        // 6. Running visits whose room stayed empty.
        let occupied: Vec<String> = app.rooms.room_sizes().into_iter().map(|(room, _)| room).collect();
        let running = app.store.visits_starting(VisitStatus::InProgress, i64::MIN / 2, i64::MAX / 2).await?;
        self.empty_since.retain(|id, _| running.iter().any(|v| &v.id == id));
        for visit in running {
            if occupied.contains(&visit.id) {
                self.empty_since.remove(&visit.id);
                continue;
            }
            let since = *self.empty_since.entry(visit.id.clone()).or_insert(now);
            if now - since >= AUTO_COMPLETE_AFTER_SECS {
                let audit = audit_event(app, "system", "auto_completed", &visit.id, None);
                match app
                    .store
                    .transition_visit(&visit.id, &[VisitStatus::InProgress], VisitStatus::Completed, now, &audit)
                    .await
                {
                    Ok(_) => {
                        close_room(app, &visit.id, "visit_ended").await;
                        self.empty_since.remove(&visit.id);
                        report.auto_completed += 1;
                    }
                    Err(crate::store::StoreError::Conflict) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }
}

/// Builds and posts one reminder. The link in it is issued now: links are
/// stored only as hashes, so the outbox cannot keep one.
async fn deliver(app: &App, url: &str, key: &str, visit_id: &str, kind: &str, now: i64) -> Result<(), String> {
    let visit = app.store.visit_by_id(visit_id).await.map_err(|e| e.to_string())?.ok_or("visit gone")?;
    if visit.status != VisitStatus::Scheduled {
        // Cancelled or over since it was queued: nothing to remind of.
        return Ok(());
    }
    let patient = app.store.patient_by_id(&visit.patient_id).await.map_err(|e| e.to_string())?;
    let clinician = app.store.clinician_by_id(&visit.clinician_id).await.map_err(|e| e.to_string())?;
    let (link, token) = crate::visits::make_link(
        &visit.id,
        (visit.scheduled_start, visit.scheduled_end()),
        app.link_margins(),
        LinkRole::Patient,
        None,
        now,
    );
    app.store
        .insert_link(&link, &audit_event(app, "system", "reminder_link_issued", &visit.id, Some(key.to_string())))
        .await
        .map_err(|e| e.to_string())?;
    let body = json!({
        "idempotency_key": key,
        "kind": kind,
        "visit_id": visit.id,
        "scheduled_start": rfc3339(visit.scheduled_start),
        "patient": patient.map(|p| json!({"display_name": p.display_name, "hospital_id": p.hospital_id, "contact": p.contact})),
        "clinician": clinician.map(|c| json!({"display_name": c.display_name, "specialty": c.specialty})),
        "link": app.link_url(&token),
        "sent_at": rfc3339(now),
    });
    crate::webhook::post(url, key, &body.to_string()).await
}

/// Runs the worker every `scheduler_tick` until shutdown.
pub fn spawn(app: Arc<App>) {
    tokio::spawn(async move {
        let mut worker = SchedulerWorker::default();
        let mut shutdown = app.shutdown.clone();
        loop {
            worker.tick(&app, app.clock.now()).await;
            tokio::select! {
                _ = tokio::time::sleep(app.config.scheduler_tick) => {}
                _ = shutdown.changed() => break,
            }
        }
    });
}
