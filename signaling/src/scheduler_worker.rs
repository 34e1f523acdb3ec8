//! The scheduler's background work, on the app's (injectable) clock:
//! pre-provision rooms, queue reminders in a durable outbox and deliver
//! them, mark no-shows and put their follow-ups back in the queue, and
//! complete visits left running in an empty room.
//!
//! Every step reads its state from the store and writes one transaction per
//! change, so a crash at any point leaves nothing half-done, and the next
//! tick picks up where the last one stopped. Deliveries to the gateway run
//! apart from the tick: each tick claims what is due and spawns it, at most
//! `reminder_concurrency` in flight, each bounded by `reminder_timeout`, so
//! a gateway that hangs delays no room set-up and no no-show. The steps are
//! functions of the store and the app, so that a lease (one node of several)
//! can wrap the tick.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use tokio::task::JoinSet;
use tracing::{info, warn};

use crate::app::App;
use crate::reminders::Delivery;
use crate::store::{NewOutboxEntry, OutboxEntry, VisitStatus};
use crate::visit_rooms::{RoomProfile, audit_event, close_room, provision_media_room};

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
/// A claimed delivery is retried after this (plus its time limit) if its
/// sender died with it in flight. The delivery itself ends within its time
/// limit; this margin covers recording the outcome and nodes whose clocks
/// disagree by a few seconds, and is what a crash delays a reminder by.
pub const CLAIM_LEASE_SECS: i64 = 20;

/// What one tick did (for tests and logs).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TickReport {
    /// Rooms created ahead of their visit.
    pub provisioned: usize,
    /// Reminders put in the outbox.
    pub reminders_queued: usize,
    /// Deliveries started this tick.
    pub dispatched: usize,
    /// Deliveries that ended since the last tick: delivered.
    pub delivered: usize,
    /// …dropped as no longer true (the visit moved, ended or was cancelled).
    pub dropped: usize,
    /// …failed (retried later).
    pub failed: usize,
    /// Visits marked no-show.
    pub no_shows: usize,
    /// Visits completed because their room stayed empty.
    pub auto_completed: usize,
    /// Monitoring enrolments whose clinician was told of missed check-ins.
    pub missed_check_ins_flagged: usize,
    /// What the retention purge removed.
    pub purged: crate::store::PurgeCounts,
}

/// The worker's memory between ticks: when each running visit's room was
/// first seen empty (lost on restart, which only delays an auto-complete),
/// and the deliveries in flight.
#[derive(Debug, Default)]
pub struct SchedulerWorker {
    empty_since: HashMap<String, i64>,
    in_flight: JoinSet<(String, Delivery)>,
    in_flight_keys: HashSet<String>,
}

impl SchedulerWorker {
    /// One pass over everything due at `now`. Deliveries are started, not
    /// awaited: their outcomes are counted by a later tick (or [`settle`](Self::settle)).
    pub async fn tick(&mut self, app: &Arc<App>, now: i64) -> TickReport {
        let mut report = TickReport::default();
        self.collect_finished(&mut report);
        if let Err(e) = self.run(app, now, &mut report).await {
            warn!(error = %e, "scheduler tick failed; retried next tick");
        }
        report
    }

    /// A tick, then waits for every delivery in flight and counts it (tests
    /// on simulated time, and shutdown).
    pub async fn tick_and_settle(&mut self, app: &Arc<App>, now: i64) -> TickReport {
        let mut report = self.tick(app, now).await;
        self.settle(&mut report).await;
        report
    }

    /// Waits for every delivery in flight, counting them into `report`.
    pub async fn settle(&mut self, report: &mut TickReport) {
        while let Some(done) = self.in_flight.join_next().await {
            self.count(report, done);
        }
        self.in_flight_keys.clear();
    }

    /// Deliveries in flight now.
    pub fn deliveries_in_flight(&self) -> usize {
        self.in_flight.len()
    }

    fn collect_finished(&mut self, report: &mut TickReport) {
        while let Some(done) = self.in_flight.try_join_next() {
            self.count(report, done);
        }
        if self.in_flight.is_empty() {
            self.in_flight_keys.clear();
        }
    }

    /// Counts a finished delivery and forgets its key.
    fn count(&mut self, report: &mut TickReport, done: Result<(String, Delivery), tokio::task::JoinError>) {
        match done {
            Ok((key, outcome)) => {
                self.in_flight_keys.remove(&key);
                match outcome {
                    Delivery::Sent => report.delivered += 1,
                    Delivery::Dropped(_) => report.dropped += 1,
                    Delivery::Failed(_) => report.failed += 1,
                }
            }
            // A delivery task that panicked: its claim's lease ends and it is retried.
            Err(_) => report.failed += 1,
        }
    }

    /// Claims what is due and starts each delivery on its own task.
    async fn dispatch(&mut self, app: &Arc<App>, now: i64, report: &mut TickReport) -> crate::store::StoreResult<()> {
        let Some(url) = app.config.reminder_webhook.clone() else { return Ok(()) };
        let room = app.config.reminder_concurrency.saturating_sub(self.in_flight.len());
        if room == 0 {
            return Ok(());
        }
        let lease = now + CLAIM_LEASE_SECS + app.config.reminder_timeout.as_secs() as i64;
        for entry in app.store.claim_outbox(now, lease, room as i64).await? {
            if !self.in_flight_keys.insert(entry.key.clone()) {
                continue;
            }
            let (app, url) = (app.clone(), url.clone());
            self.in_flight.spawn(async move { deliver_and_record(&app, &url, entry, now).await });
            report.dispatched += 1;
        }
        Ok(())
    }

    async fn run(&mut self, app: &Arc<App>, now: i64, report: &mut TickReport) -> Result<(), crate::store::StoreError> {
        // 1. Rooms ready before the visit starts.
        for visit_id in app.store.visits_to_provision(now, now + PROVISION_BEFORE_SECS).await? {
            let profile = RoomProfile::of(app, &visit_id).await;
            if provision_media_room(app, &visit_id, profile).await.is_ok() {
                app.store
                    .mark_provisioned(&visit_id, now, &audit_event(app, "system", "room_provisioned", &visit_id, None))
                    .await?;
                report.provisioned += 1;
            }
        }

        // 2. Reminders into the outbox, once per visit, kind and start time
        //    (a visit that moves gets new reminders for its new time).
        if app.config.reminder_webhook.is_some() {
            let mut lower = now;
            for (kind, before) in REMINDERS.iter().rev() {
                // 15min covers (now, now+15m]; 24h covers (now+15m, now+24h].
                for visit in app.store.visits_starting(VisitStatus::Scheduled, lower, now + before).await? {
                    let key = format!("reminder:{}:{kind}:{}", visit.id, visit.scheduled_start);
                    // A class occurrence: one reminder per enrolled patient,
                    // each with their own link (keyed by patient).
                    let recipients = match crate::group_sessions::reminder_recipients(app, &visit).await? {
                        Some(patients) => patients
                            .into_iter()
                            .map(|p| (format!("{key}:{p}"), Some(serde_json::json!({ "patient_id": p }).to_string())))
                            .collect(),
                        None => vec![(key, None)],
                    };
                    for (key, payload) in recipients {
                        let entry = NewOutboxEntry {
                            key: &key,
                            visit_id: &visit.id,
                            kind,
                            scheduled_start: Some(visit.scheduled_start),
                            payload: payload.as_deref(),
                        };
                        if app.store.enqueue(&entry, now).await? {
                            report.reminders_queued += 1;
                        }
                    }
                }
                lower = now + before;
            }
        }

        // 3. Start the deliveries that are due (they run apart from the tick).
        self.dispatch(app, now, report).await?;

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

        // 6. Monitoring: missed check-ins in a row go to the clinician's inbox.
        match crate::monitoring::flag_missed_check_ins(app, now).await {
            Ok(n) => report.missed_check_ins_flagged += n,
            Err(e) => warn!(code = e.code, "monitoring check failed; retried next tick"),
        }

        // 7. Retention: what outlived its purpose, in bounded batches.
        report.purged = purge_expired(app, now).await?;

        // 8. Running visits whose room stayed empty.
        let occupied = app.occupied_rooms();
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

/// Delivers one claimed entry and records the outcome: delivered, dropped,
/// or failed and retried later with a growing delay.
async fn deliver_and_record(app: &App, url: &str, entry: OutboxEntry, now: i64) -> (String, Delivery) {
    let outcome = crate::reminders::deliver(app, url, &entry, now).await;
    let record = match &outcome {
        Delivery::Sent => Ok(None),
        Delivery::Dropped(why) => Ok(Some(why.to_string())),
        Delivery::Failed(e) => Err((e.clone(), now + (RETRY_BASE_SECS << entry.attempts.clamp(0, 7)).min(3600))),
    };
    if let Err(e) = app.store.outbox_attempted(&entry.key, now, record).await {
        // The claim's lease ends and the entry is tried again.
        warn!(error = %e, kind = %entry.kind, "recording a delivery failed");
    }
    (entry.key, outcome)
}

/// Rows of each kind one purge pass removes at most (one short write
/// transaction per kind).
pub const PURGE_BATCH: i64 = 500;
/// Passes one tick makes at most; the rest waits for the next tick.
pub const PURGE_PASSES_PER_TICK: usize = 20;
/// The purge's pause after each of its write transactions, so that a visit
/// start waiting for the write lock gets it before the next batch.
pub const PURGE_PAUSE: std::time::Duration = std::time::Duration::from_millis(25);

/// The retention purge's step: passes of [`PURGE_BATCH`] rows per kind
/// until nothing is left or [`PURGE_PASSES_PER_TICK`] passes ran, each kind
/// counted in the audit trail (`retention_purge`), then SQLite's freed
/// pages returned to the file system.
pub async fn purge_expired(app: &App, now: i64) -> crate::store::StoreResult<crate::store::PurgeCounts> {
    let mut total = crate::store::PurgeCounts::default();
    for _ in 0..PURGE_PASSES_PER_TICK {
        let pass = app.store.purge_pass(app.config.retention, now, PURGE_BATCH, PURGE_PAUSE).await?;
        if pass.is_empty() {
            break;
        }
        total.add(&pass);
    }
    if !total.is_empty() {
        for (kind, n) in total.by_kind() {
            if n > 0 {
                app.store
                    .audit(&crate::store::AuditEvent {
                        at: now,
                        actor: "system".into(),
                        action: "retention_purge".into(),
                        visit_id: None,
                        detail: Some(format!("{kind}={n}")),
                    })
                    .await?;
            }
        }
        app.store.reclaim_space(10_000).await?;
        info!(patients = total.patients, links = total.links, audit_events = total.audit_events, "retention purge");
    }
    Ok(total)
}

/// Runs the worker every `scheduler_tick` until shutdown.
pub fn spawn(app: Arc<App>) {
    tokio::spawn(async move {
        let mut worker = SchedulerWorker::default();
        let mut shutdown = app.shutdown.clone();
        // In a cluster one node at a time runs the ticks; its lease outlives
        // a few ticks, so a node that dies holding it is replaced within that.
        let lease = (app.config.scheduler_tick * 3).max(crate::cluster::NODE_TTL);
        loop {
            let holds = match &app.cluster {
                Some(cluster) => !cluster.is_draining() && cluster.hold_lease(SCHEDULER_LEASE, lease).await,
                None => true,
            };
            if holds {
                worker.tick(&app, app.clock.now()).await;
            }
            tokio::select! {
                _ = tokio::time::sleep(app.config.scheduler_tick) => {}
                _ = shutdown.changed() => break,
            }
        }
        if let Some(cluster) = &app.cluster {
            cluster.release_lease(SCHEDULER_LEASE).await;
        }
    });
}

/// The scheduler's lease in a cluster.
const SCHEDULER_LEASE: &str = "scheduler";
