//! The live operations view: a sampler that turns media stats into per-room,
//! per-participant health once a second, keeps an hour of history, and
//! pushes snapshots to `/api/ops/stream` (server-sent events). Also the
//! weekly figures and their CSV export.
//!
//! Nothing here carries a patient's name: rooms are visit ids, people are
//! participant ids and roles.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::Stream;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::watch;

use crate::api_extract::{ApiJson, ApiQuery, Staff};
use crate::app::App;
use crate::http_error::ApiError;
use crate::store::{StaffRole, VisitStatus};
use crate::timefmt::{day_range, rfc3339};

/// Who may see operations: ops and admins.
const OPS_ROLES: &[StaffRole] = &[StaffRole::Ops, StaffRole::Admin];
/// History kept for the charts.
const HISTORY: Duration = Duration::from_secs(3600);
/// One history point per this many seconds.
const HISTORY_STEP_SECS: u64 = 10;

/// One participant's media health.
#[derive(Debug, Clone, Serialize, Default)]
pub struct ParticipantHealth {
    /// Participant id.
    pub participant_id: String,
    /// `clinician`, `patient` or `guest` (empty if unknown).
    pub role: String,
    /// Media received from them, kbit/s.
    pub kbps_in: f64,
    /// Media sent to them, kbit/s.
    pub kbps_out: f64,
    /// Worst loss fraction seen on their tracks (0..1).
    pub loss: f64,
    /// Round-trip time, ms.
    pub rtt_ms: Option<f64>,
    /// Inbound jitter, ms (video clock).
    pub jitter_ms: Option<f64>,
    /// `good`, `fair` or `poor`.
    pub health: &'static str,
    /// How their media reaches the server: `udp`, `tcp` or `relay`
    /// (absent before it connects).
    pub path: Option<&'static str>,
}

/// One live room.
#[derive(Debug, Clone, Serialize)]
pub struct RoomHealth {
    /// Room id (the visit id for visits).
    pub room_id: String,
    /// The visit's clinician's specialty, when the room is a visit.
    pub specialty: Option<String>,
    /// Seconds since the visit started (or since the room was first seen).
    pub duration_secs: u64,
    /// Seats waiting to be admitted.
    pub waiting: usize,
    /// Media participants.
    pub participants: Vec<ParticipantHealth>,
}

/// One point of the last hour.
#[derive(Debug, Clone, Serialize)]
pub struct HistoryPoint {
    /// RFC 3339.
    pub at: String,
    /// Live rooms.
    pub rooms: usize,
    /// Media participants.
    pub participants: usize,
    /// Total media received, kbit/s.
    pub kbps: f64,
    /// Worst loss in any room.
    pub loss: f64,
}

/// What the dashboard shows, pushed once a second.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    /// RFC 3339.
    pub at: String,
    /// Node load.
    pub node: serde_json::Value,
    /// Live rooms.
    pub rooms: Vec<RoomHealth>,
    /// The cluster's nodes and the rooms each holds (empty: one node).
    pub cluster: Vec<serde_json::Value>,
    /// The last hour.
    pub history: Vec<HistoryPoint>,
}

/// Health from loss and RTT, the way the dashboard colours it.
pub fn health(loss: f64, rtt_ms: Option<f64>) -> &'static str {
    let rtt = rtt_ms.unwrap_or(0.0);
    if loss > 0.05 || rtt > 400.0 {
        "poor"
    } else if loss > 0.01 || rtt > 150.0 {
        "fair"
    } else {
        "good"
    }
}

/// The channel snapshots travel on.
pub type Snapshots = watch::Receiver<Option<Arc<Snapshot>>>;

/// Starts the sampler, which publishes on `tx` once a second until shutdown.
pub fn start_sampler(app: Arc<App>, tx: watch::Sender<Option<Arc<Snapshot>>>) {
    tokio::spawn(async move {
        let mut previous: HashMap<(String, String), (u64, u64, Instant)> = HashMap::new();
        let mut first_seen: HashMap<String, Instant> = HashMap::new();
        let mut specialties: HashMap<String, Option<(String, Option<i64>)>> = HashMap::new();
        let mut history: VecDeque<HistoryPoint> = VecDeque::new();
        let mut last_history = Instant::now() - Duration::from_secs(HISTORY_STEP_SECS);
        let mut cpu_before: Option<(f64, Instant)> = None;
        let mut shutdown = app.shutdown.clone();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = shutdown.changed() => break,
            }
            let now = Instant::now();
            let stats = app.sfu.participant_stats().await;
            let roles = app.rooms.roles();
            let waiting = app.rooms.waiting_counts();
            let mut rooms: HashMap<String, Vec<ParticipantHealth>> = HashMap::new();
            let mut seen = Vec::new();
            for s in stats {
                let (Some(room), Some(pid)) = (s.room, s.participant) else { continue };
                let key = (room.0.clone(), pid.0.clone());
                let (kbps_in, kbps_out) = match previous.get(&key) {
                    Some((bytes_in, bytes_out, at)) => {
                        let secs = now.duration_since(*at).as_secs_f64().max(0.001);
                        (
                            (s.bytes_in.saturating_sub(*bytes_in)) as f64 * 8.0 / 1000.0 / secs,
                            (s.bytes_out.saturating_sub(*bytes_out)) as f64 * 8.0 / 1000.0 / secs,
                        )
                    }
                    None => (0.0, 0.0),
                };
                previous.insert(key.clone(), (s.bytes_in, s.bytes_out, now));
                seen.push(key);
                let loss = f64::from(s.loss_in.unwrap_or(0.0).max(s.loss_out.unwrap_or(0.0)));
                let rtt_ms = s.rtt.map(|d| d.as_secs_f64() * 1000.0);
                rooms.entry(room.0.clone()).or_default().push(ParticipantHealth {
                    role: roles
                        .get(&(room.0.clone(), pid.0.clone()))
                        .map(|r| r.as_str().to_string())
                        .unwrap_or_default(),
                    participant_id: pid.0,
                    kbps_in,
                    kbps_out,
                    loss,
                    rtt_ms,
                    jitter_ms: s.jitter.map(|j| f64::from(j) / 90.0),
                    health: health(loss, rtt_ms),
                    path: s.path.map(|p| p.as_str()),
                });
            }
            previous.retain(|k, _| seen.contains(k));
            // Rooms with only waiting seats show too.
            for room in waiting.keys() {
                rooms.entry(room.clone()).or_default();
            }
            first_seen.retain(|room, _| rooms.contains_key(room));
            specialties.retain(|room, _| rooms.contains_key(room));
            let mut room_list = Vec::new();
            for (room_id, mut participants) in rooms {
                participants.sort_by(|a, b| a.role.cmp(&b.role).then(a.participant_id.cmp(&b.participant_id)));
                if !specialties.contains_key(&room_id) {
                    let visit = app.store.visit_by_id(&room_id).await.ok().flatten();
                    let entry = match visit {
                        Some(v) => {
                            let clinician = app.store.clinician_by_id(&v.clinician_id).await.ok().flatten();
                            clinician.map(|c| (c.specialty.as_str().to_string(), v.started_at))
                        }
                        None => None,
                    };
                    specialties.insert(room_id.clone(), entry);
                }
                let since = first_seen.entry(room_id.clone()).or_insert(now);
                let (specialty, started_at) =
                    specialties.get(&room_id).cloned().flatten().map(|(s, t)| (Some(s), t)).unwrap_or((None, None));
                let duration_secs = match started_at {
                    Some(t) => (app.clock.now() - t).max(0) as u64,
                    None => now.duration_since(*since).as_secs(),
                };
                room_list.push(RoomHealth {
                    waiting: waiting.get(&room_id).copied().unwrap_or(0),
                    room_id,
                    specialty,
                    duration_secs,
                    participants,
                });
            }
            room_list.sort_by(|a, b| b.duration_secs.cmp(&a.duration_secs).then(a.room_id.cmp(&b.room_id)));

            let process = crate::metrics::process_figures();
            let cpu_pct = match (process, cpu_before) {
                (Some((cpu, _)), Some((before, at))) => {
                    100.0 * (cpu - before) / now.duration_since(at).as_secs_f64().max(0.001)
                }
                _ => 0.0,
            };
            if let Some((cpu, _)) = process {
                cpu_before = Some((cpu, now));
            }
            let workers: Vec<serde_json::Value> = app
                .sfu
                .worker_stats()
                .iter()
                .map(|w| json!({"worker": w.worker, "port": w.port, "rooms": w.rooms, "participants": w.participants, "packets_forwarded": w.packets_forwarded}))
                .collect();
            let node = json!({
                "cpu_pct": cpu_pct,
                "rss_mib": process.map(|(_, rss)| rss as f64 / 1_048_576.0).unwrap_or(0.0),
                "ws_connections": app.metrics.ws_open(),
                "workers": workers,
            });
            if now.duration_since(last_history) >= Duration::from_secs(HISTORY_STEP_SECS) {
                last_history = now;
                history.push_back(HistoryPoint {
                    at: rfc3339(app.clock.now()),
                    rooms: room_list.len(),
                    participants: room_list.iter().map(|r| r.participants.len()).sum(),
                    kbps: room_list.iter().flat_map(|r| &r.participants).map(|p| p.kbps_in).sum(),
                    loss: room_list.iter().flat_map(|r| &r.participants).map(|p| p.loss).fold(0.0, f64::max),
                });
                while history.len() as u64 > HISTORY.as_secs() / HISTORY_STEP_SECS {
                    history.pop_front();
                }
            }
            let snapshot = Snapshot {
                at: rfc3339(app.clock.now()),
                node,
                rooms: room_list,
                cluster: cluster_view(&app),
                history: history.iter().cloned().collect(),
            };
            let _ = tx.send(Some(Arc::new(snapshot)));
        }
    });
}

/// Every node of the cluster as of the last heartbeat: its state, load and
/// the rooms it holds (room ids are visit ids: no personal data).
fn cluster_view(app: &App) -> Vec<serde_json::Value> {
    let Some(cluster) = &app.cluster else { return Vec::new() };
    cluster
        .peers()
        .into_iter()
        .map(|n| {
            let mut rooms: Vec<&String> = n.presence.keys().collect();
            rooms.sort();
            json!({
                "node_id": n.id,
                "this_node": n.id == cluster.node_id,
                "state": n.state,
                "rooms": rooms,
                "participants": n.participants,
                "cpu_pct": n.cpu_percent,
            })
        })
        .collect()
}

/// `GET /api/ops/stream`: snapshots as server-sent events, one a second.
pub async fn stream(
    State(app): State<Arc<App>>,
    staff: Staff,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    staff.require(OPS_ROLES)?;
    let mut rx = app.ops_snapshots.clone();
    let stream = async_stream(move |tx| async move {
        loop {
            let snapshot = rx.borrow_and_update().clone();
            if let Some(s) = snapshot
                && let Ok(data) = serde_json::to_string(&*s)
                && tx.send(Ok(Event::default().event("snapshot").data(data))).await.is_err()
            {
                break;
            }
            if rx.changed().await.is_err() {
                break;
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// A stream fed by a task (keeps this module free of extra stream crates).
fn async_stream<F, Fut>(body: F) -> impl Stream<Item = Result<Event, Infallible>>
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<Event, Infallible>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(body(tx));
    futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) })
}

/// `GET /api/ops/weekly` query.
#[derive(Debug, Deserialize)]
pub struct WeekQuery {
    /// First day, `YYYY-MM-DD`; default: six days ago.
    pub start: Option<String>,
    /// Time zone, minutes east of UTC.
    #[serde(default)]
    pub tz_offset_minutes: i64,
}

/// The weekly figures: visits per day by status, median wait, and the
/// teleconsultation share when the hospital supplied its total.
async fn weekly_figures(app: &App, q: &WeekQuery) -> Result<serde_json::Value, ApiError> {
    if !(-14 * 60..=14 * 60).contains(&q.tz_offset_minutes) {
        return Err(ApiError::invalid("tz_offset_minutes", "must be between -840 and 840"));
    }
    let start = match &q.start {
        Some(d) => d.clone(),
        None => rfc3339(app.clock.now() + q.tz_offset_minutes * 60 - 6 * 86_400)[..10].to_string(),
    };
    let (from, _) =
        day_range(&start, q.tz_offset_minutes).ok_or_else(|| ApiError::invalid("start", "must be YYYY-MM-DD"))?;
    let to = from + 7 * 86_400;
    let visits = app.store.visit_times_and_statuses(from, to).await?;
    let (classes_held, class_attendances) = app.store.class_times(from, to).await?;
    let in_day = |times: &[i64], (day_from, day_to): (i64, i64)| {
        times.iter().filter(|t| (day_from..day_to).contains(*t)).count()
    };
    let mut days = Vec::new();
    for d in 0..7 {
        let (day_from, day_to) = (from + d * 86_400, from + (d + 1) * 86_400);
        let mut counts: HashMap<VisitStatus, i64> = HashMap::new();
        for (start, status) in &visits {
            if (day_from..day_to).contains(start) {
                *counts.entry(*status).or_default() += 1;
            }
        }
        let count = |s: VisitStatus| counts.get(&s).copied().unwrap_or(0);
        let date = rfc3339(day_from + q.tz_offset_minutes * 60)[..10].to_string();
        days.push(json!({
            "date": date,
            "completed": count(VisitStatus::Completed),
            "no_show": count(VisitStatus::NoShow),
            "cancelled": count(VisitStatus::Cancelled),
            "scheduled": count(VisitStatus::Scheduled) + count(VisitStatus::InProgress),
            // Group sessions: occurrences held (completed, also counted
            // above) and the enrolled patients who came to them.
            "classes": in_day(&classes_held, (day_from, day_to)),
            "class_attendances": in_day(&class_attendances, (day_from, day_to)),
        }));
    }
    let mut waits = app.store.admission_waits(from, to).await?;
    waits.sort_unstable();
    let median_wait_secs = if waits.is_empty() { None } else { Some(waits[waits.len() / 2]) };
    let teleconsultations = visits.iter().filter(|(_, s)| *s == VisitStatus::Completed).count() as i64;
    let total = app.store.consultation_total(&start).await?;
    Ok(json!({
        "week_start": start,
        "days": days,
        "teleconsultations": teleconsultations,
        "median_wait_secs": median_wait_secs,
        "classes": classes_held.len(),
        "class_attendances": class_attendances.len(),
        "all_consultations": total,
        "teleconsultation_share": total.filter(|t| *t > 0).map(|t| teleconsultations as f64 / t as f64),
    }))
}

/// `GET /api/ops/weekly`
pub async fn weekly(
    State(app): State<Arc<App>>,
    staff: Staff,
    ApiQuery(q): ApiQuery<WeekQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    staff.require(OPS_ROLES)?;
    Ok(Json(weekly_figures(&app, &q).await?))
}

/// `GET /api/ops/weekly.csv`
pub async fn weekly_csv(
    State(app): State<Arc<App>>,
    staff: Staff,
    ApiQuery(q): ApiQuery<WeekQuery>,
) -> Result<Response, ApiError> {
    staff.require(OPS_ROLES)?;
    let w = weekly_figures(&app, &q).await?;
    let mut csv = String::from("date,completed,no_show,cancelled,scheduled,classes,class_attendances\n");
    for d in w["days"].as_array().into_iter().flatten() {
        csv.push_str(&format!(
            "{},{},{},{},{},{},{}\n",
            d["date"].as_str().unwrap_or(""),
            d["completed"],
            d["no_show"],
            d["cancelled"],
            d["scheduled"],
            d["classes"],
            d["class_attendances"]
        ));
    }
    csv.push_str(&format!(
        "# week {}: teleconsultations {}, all consultations {}, share {}, median wait {} s\n",
        w["week_start"].as_str().unwrap_or(""),
        w["teleconsultations"],
        w["all_consultations"],
        w["teleconsultation_share"],
        w["median_wait_secs"]
    ));
    let disposition =
        format!("attachment; filename=\"teleconsult-week-{}.csv\"", w["week_start"].as_str().unwrap_or("week"));
    Ok((
        [(header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()), (header::CONTENT_DISPOSITION, disposition)],
        csv,
    )
        .into_response())
}

/// `PUT /api/ops/consultation-totals` body: all consultations (video or not)
/// the hospital held in a week, for the teleconsultation share.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsultationTotal {
    /// First day of the week, `YYYY-MM-DD` (the same `start` as the weekly view).
    pub week_start: String,
    /// Consultations of every kind that week.
    pub total: i64,
}

/// `PUT /api/ops/consultation-totals`
pub async fn set_consultation_total(
    State(app): State<Arc<App>>,
    staff: Staff,
    ApiJson(body): ApiJson<ConsultationTotal>,
) -> Result<StatusCode, ApiError> {
    staff.require(OPS_ROLES)?;
    day_range(&body.week_start, 0).ok_or_else(|| ApiError::invalid("week_start", "must be YYYY-MM-DD"))?;
    if !(0..=10_000_000).contains(&body.total) {
        return Err(ApiError::invalid("total", "must be between 0 and 10000000"));
    }
    app.store.set_consultation_total(&body.week_start, body.total).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    #[test]
    fn health_thresholds() {
        assert_eq!(super::health(0.0, Some(20.0)), "good");
        assert_eq!(super::health(0.02, None), "fair");
        assert_eq!(super::health(0.0, Some(200.0)), "fair");
        assert_eq!(super::health(0.1, Some(20.0)), "poor");
    }
}
