//! A load scenario: N consultation rooms, each driven through the full
//! public flow, measured end to end.
//!
//! For every room: the clinician (signed in once for the run) books a visit,
//! starts it, gets a join token and joins; the patient (and any guests)
//! exchange their links and join the waiting room; the clinician admits
//! them; everyone publishes synthetic audio and video. Payloads carry their
//! send time and sequence number, so the receivers measure true latency,
//! loss and jitter.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use teleconsult_protocol::{ClientMessage, ServerMessage};
use tokio::sync::Mutex;

use crate::http_client::request;
use crate::participant::{MediaStack, Participant, ParticipantOptions};
use crate::synthetic_media::{now_micros, percentile};

/// Where and as whom to run.
#[derive(Debug, Clone)]
pub struct Target {
    /// The server's HTTP address (loopback or a host the operator names).
    pub http: SocketAddr,
    /// A clinician account on it.
    pub email: String,
    /// Its password.
    pub password: String,
    /// The nodes of a cluster (HTTP addresses, `http` among them), to spread
    /// the WebSockets over: room r's i-th person connects to node (r + i)
    /// mod n, so a clinician and a patient land on different nodes. Empty:
    /// one server, at `http`.
    pub nodes: Vec<SocketAddr>,
}

impl Target {
    /// Every server the run measures.
    fn servers(&self) -> Vec<SocketAddr> {
        if self.nodes.is_empty() { vec![self.http] } else { self.nodes.clone() }
    }

    /// The WebSocket URL for room `room`'s `person`-th participant.
    fn ws_for(&self, room: usize, person: usize) -> String {
        let addr = if self.nodes.is_empty() { self.http } else { self.nodes[(room + person) % self.nodes.len()] };
        format!("ws://{addr}/ws")
    }
}

/// What to run.
#[derive(Debug, Clone, Serialize)]
pub struct LoadOptions {
    /// Consultation rooms.
    pub rooms: usize,
    /// People per room: a clinician, a patient, then guests.
    pub participants_per_room: usize,
    /// Video bitrate per participant, kbit/s.
    pub video_kbps: u32,
    /// Video frames per second.
    pub fps: u32,
    /// A keyframe at least this often, seconds.
    pub keyframe_interval_secs: u64,
    /// Rooms are started evenly over this many seconds.
    pub ramp_up_secs: u64,
    /// Measurement window after everyone is in, seconds.
    pub duration_secs: u64,
    /// Publishers send video in three simulcast layers; video loss is then
    /// counted on the RTP sequence each subscriber receives (one layer at
    /// a time, renumbered by the SFU).
    pub simulcast: bool,
    /// The WebRTC stack of the synthetic participants.
    pub stack: MediaStack,
}

/// Percentiles of one measure.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct Percentiles {
    /// Samples.
    pub count: usize,
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
}

impl Percentiles {
    /// From raw samples in a unit; the result is in `scale` of that unit.
    pub fn of(samples: &mut [u32], scale: f64) -> Self {
        Percentiles {
            count: samples.len(),
            p50: percentile(samples, 50.0).map(|v| f64::from(v) * scale).unwrap_or(0.0),
            p95: percentile(samples, 95.0).map(|v| f64::from(v) * scale).unwrap_or(0.0),
            p99: percentile(samples, 99.0).map(|v| f64::from(v) * scale).unwrap_or(0.0),
        }
    }
}

/// The outcome of a run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// What was run.
    pub options: LoadOptions,
    /// Participants that tried to join.
    pub joins_attempted: usize,
    /// Participants whose media flowed both ways.
    pub joins_succeeded: usize,
    /// Why the others failed (first few).
    pub join_errors: Vec<String>,
    /// Link exchange (or join-token fetch) to first remote packet, ms.
    pub join_time_ms: Percentiles,
    /// Send to receive, one way through the SFU, ms. Includes both client
    /// stacks, which share the machine's cores with the server.
    pub latency_ms: Percentiles,
    /// The same for audio alone (what a conversation feels first).
    pub audio_latency_ms: Percentiles,
    /// The SFU's own added latency: batch turnaround inside the media
    /// worker, from `/metrics` (bucket upper bounds), ms.
    pub sfu_turnaround_ms: Percentiles,
    /// Interarrival jitter per received track, ms.
    pub jitter_ms: Percentiles,
    /// Join start to the first keyframe of each remote video, ms.
    pub first_keyframe_ms: Percentiles,
    /// `ping` round trips during the window, ms.
    pub signaling_rtt_ms: Percentiles,
    /// Packets sent in the window that never arrived, fraction.
    pub loss: f64,
    /// Packets expected in the window.
    pub packets_expected: u64,
    /// Server CPU over the window, percent of one core (from `/metrics`).
    pub server_cpu_pct: f64,
    /// Server resident memory at the end, MiB (from `/metrics`).
    pub server_rss_mib: f64,
    /// This load generator's CPU over the window, percent of one core.
    pub loadtest_cpu_pct: f64,
    /// Wall time of the whole run, seconds.
    pub wall_secs: f64,
    /// On a cluster: WebSockets bridged to another node than the one they
    /// reached, at the start of the window (summed over the nodes).
    pub ws_bridged: f64,
    /// On a cluster: rooms on each node at the start of the window.
    pub rooms_per_node: Vec<f64>,
    /// What each participant received over the window, as a subscriber.
    pub subscribers: Vec<SubscriberFigures>,
}

/// What one participant received from everyone else over the window.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SubscriberFigures {
    /// Its room (index in the run).
    pub room: usize,
    /// Its role.
    pub role: String,
    /// Audio and video payload received, kbit/s.
    pub received_kbps: f64,
    /// Its share of the packets it should have received that never came.
    pub loss: f64,
    /// How many others' videos reached it during the window.
    pub videos_received: usize,
}

const TURNAROUND: &str = "teleconsult_sfu_batch_turnaround_seconds";

struct Room {
    people: Vec<Participant>,
    join_started_us: Vec<u64>,
}

/// Signs in the clinician; returns `Bearer …`.
pub async fn sign_in(target: &Target) -> anyhow::Result<String> {
    let body = serde_json::json!({"email": target.email, "password": target.password}).to_string();
    let r = request(target.http, "POST", "/api/auth/login", &[], Some(&body)).await;
    anyhow::ensure!(r.status == 200, "sign-in failed: {} {}", r.status, r.body);
    Ok(format!("Bearer {}", r.json()["access_token"].as_str().unwrap_or_default()))
}

async fn api(
    target: &Target,
    bearer: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
    want: u16,
) -> anyhow::Result<serde_json::Value> {
    let r = request(target.http, method, path, &[("Authorization", bearer)], body).await;
    anyhow::ensure!(r.status == want, "{method} {path}: {} {}", r.status, r.body.chars().take(200).collect::<String>());
    Ok(r.json())
}

fn link_token(url: &str) -> String {
    url.rsplit('/').next().unwrap_or_default().to_string()
}

/// Sets up one room through the public API and returns its people, with
/// media flowing.
async fn open_room(target: &Target, bearer: &str, options: &LoadOptions, index: usize) -> anyhow::Result<Room> {
    // One synthetic clinician holds every room, and a clinician never has
    // two visits at once: room i is booked for the hour after room i-1's.
    // The clinician starts each visit at once, which opens its links.
    let start = time_rfc3339_at((now_micros() / 1_000_000) as i64 + 3600 * index as i64);
    let body = serde_json::json!({
        "patient": {"display_name": format!("Load patient {index}")},
        "scheduled_start": start,
        "duration_minutes": 60,
        "kind": if options.participants_per_room > 2 { "group" } else { "follow_up" },
    })
    .to_string();
    let created = api(target, bearer, "POST", "/api/visits", Some(&body), 201).await?;
    let visit = created["visit"]["id"].as_str().unwrap_or_default().to_string();
    let mut links = vec![link_token(created["patient_link"]["url"].as_str().unwrap_or_default())];
    for g in 2..options.participants_per_room {
        let guest = api(
            target,
            bearer,
            "POST",
            &format!("/api/visits/{visit}/guest-links"),
            Some(&format!(r#"{{"label":"guest {g}"}}"#)),
            201,
        )
        .await?;
        links.push(link_token(guest["link"]["url"].as_str().unwrap_or_default()));
    }
    api(target, bearer, "POST", &format!("/api/visits/{visit}/start"), None, 200).await?;

    let media = |token: &str, person: usize| {
        let mut o = ParticipantOptions::new(target.ws_for(index, person), token);
        o.video_bitrate_bps = options.video_kbps * 1000;
        o.fps = options.fps;
        o.keyframe_interval = Duration::from_secs(options.keyframe_interval_secs.max(1));
        o.simulcast = options.simulcast;
        o.stack = options.stack;
        o
    };
    let mut join_started_us = vec![now_micros()];
    let jt = api(target, bearer, "POST", &format!("/api/visits/{visit}/join-token"), None, 200).await?;
    let clinician = Participant::connect(&media(jt["join_token"].as_str().unwrap_or_default(), 0)).await?;
    let mut people = vec![clinician];
    for (person, link) in links.into_iter().enumerate() {
        let t0 = now_micros();
        let x = request(target.http, "POST", &format!("/api/join/{link}"), &[], None).await;
        anyhow::ensure!(x.status == 200, "link exchange: {} {}", x.status, x.body);
        let opts = media(x.json()["join_token"].as_str().unwrap_or_default(), person + 1);
        let (mut p, mut events) = Participant::join(&opts).await?;
        people[0]
            .signaling
            .request(ClientMessage::Admit { id: None, participant_id: p.participant_id.clone() })
            .await?;
        // The admit reaches the patient before it may publish.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            match tokio::time::timeout_at(deadline, events.recv()).await {
                Ok(Some(ServerMessage::Admitted { ice_servers, .. })) => {
                    // Fresher than the join's: the wait may have been long.
                    if !ice_servers.is_empty() {
                        p.ice_servers = ice_servers;
                    }
                    break;
                }
                Ok(Some(_)) => continue,
                _ => anyhow::bail!("not admitted within 10 s"),
            }
        }
        p.start_media(&opts, events).await?;
        join_started_us.push(t0);
        people.push(p);
    }
    Ok(Room { people, join_started_us })
}

/// Unix seconds formatted as RFC 3339 UTC, without a date crate.
fn time_rfc3339_at(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// CPU seconds of this process (the load generator).
pub fn own_cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else { return 0.0 };
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else { return 0.0 };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// Cumulative bucket counts of a histogram in `/metrics`, summed over label
/// sets, by upper bound.
async fn server_histogram(target: &Target, name: &str) -> Vec<(f64, f64)> {
    let mut text = String::new();
    for server in target.servers() {
        text.push_str(&request(server, "GET", "/metrics", &[], None).await.body);
        text.push('\n');
    }
    let mut buckets: Vec<(f64, f64)> = Vec::new();
    for line in text.lines().filter(|l| l.starts_with(&format!("{name}_bucket{{"))) {
        let Some(le) = line.split("le=\"").nth(1).and_then(|s| s.split('"').next()) else { continue };
        let bound = if le == "+Inf" { f64::INFINITY } else { le.parse().unwrap_or(f64::INFINITY) };
        let Some(value) = line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) else { continue };
        match buckets.iter_mut().find(|(b, _)| *b == bound) {
            Some(entry) => entry.1 += value,
            None => buckets.push((bound, value)),
        }
    }
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    buckets
}

/// Percentiles (ms) of the observations between two histogram snapshots,
/// as the upper bound of the bucket each quantile falls in.
fn histogram_percentiles(before: &[(f64, f64)], after: &[(f64, f64)]) -> Percentiles {
    let delta: Vec<(f64, f64)> = after
        .iter()
        .map(|(b, v)| (*b, v - before.iter().find(|(bb, _)| bb == b).map(|(_, x)| *x).unwrap_or(0.0)))
        .collect();
    let total = delta.last().map(|(_, v)| *v).unwrap_or(0.0);
    let q = |p: f64| {
        delta
            .iter()
            .find(|(_, c)| *c >= p * total)
            .map(|(b, _)| if b.is_finite() { b * 1000.0 } else { f64::INFINITY })
            .unwrap_or(0.0)
    };
    Percentiles { count: total as usize, p50: q(0.50), p95: q(0.95), p99: q(0.99) }
}

/// A metric summed over every server of the run.
async fn server_metric(target: &Target, name: &str) -> f64 {
    let mut sum = 0.0;
    for value in server_metric_each(target, name).await {
        sum += value;
    }
    sum
}

/// A metric on each server of the run.
async fn server_metric_each(target: &Target, name: &str) -> Vec<f64> {
    let mut values = Vec::new();
    for server in target.servers() {
        let r = request(server, "GET", "/metrics", &[], None).await;
        values.push(crate::server_process::sum_metric(&r.body, name));
    }
    values
}

/// Runs the scenario; prints progress to stderr every 5 s.
pub async fn run(target: &Target, options: &LoadOptions) -> anyhow::Result<Report> {
    let started = Instant::now();
    let bearer = sign_in(target).await?;
    let rooms: Arc<Mutex<Vec<Room>>> = Arc::new(Mutex::new(Vec::new()));
    let errors: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(Vec::new()));
    let spacing = if options.rooms > 1 {
        Duration::from_secs_f64(options.ramp_up_secs as f64 / options.rooms as f64)
    } else {
        Duration::ZERO
    };
    let mut tasks = Vec::new();
    for i in 0..options.rooms {
        let (target, bearer, options, rooms, errors) =
            (target.clone(), bearer.clone(), options.clone(), rooms.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(spacing * i as u32).await;
            match tokio::time::timeout(Duration::from_secs(60), open_room(&target, &bearer, &options, i)).await {
                Ok(Ok(room)) => rooms.lock().await.push(room),
                Ok(Err(e)) => errors.lock().await.push(format!("room {i}: {e:#}")),
                Err(_) => errors.lock().await.push(format!("room {i}: set-up took over 60 s")),
            }
        }));
    }
    let mut last_print = Instant::now();
    for t in tasks {
        while !t.is_finished() {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if last_print.elapsed() >= Duration::from_secs(5) {
                last_print = Instant::now();
                eprintln!(
                    "[{:>5.1}s] rooms up {:>3}/{}  failures {}",
                    started.elapsed().as_secs_f64(),
                    rooms.lock().await.len(),
                    options.rooms,
                    errors.lock().await.len()
                );
            }
        }
    }
    let rooms = Arc::try_unwrap(rooms).map_err(|_| anyhow::anyhow!("room tasks still running"))?.into_inner();
    let join_errors = errors.lock().await.clone();

    // Everyone in: wait (bounded) until each receives every other's video.
    let deadline = Instant::now() + Duration::from_secs(20);
    let all_flowing = |rooms: &Vec<Room>| {
        rooms.iter().all(|r| {
            r.people.iter().all(|a| {
                r.people.iter().all(|b| {
                    a.participant_id == b.participant_id || a.track_reception(&b.participant_id, true).is_some()
                })
            })
        })
    };
    while !all_flowing(&rooms) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let succeeded: usize = rooms
        .iter()
        .map(|r| {
            r.people
                .iter()
                .filter(|a| {
                    r.people
                        .iter()
                        .all(|b| a.participant_id == b.participant_id || a.packets_from(&b.participant_id) > 0)
                })
                .count()
        })
        .sum();
    tokio::time::sleep(Duration::from_secs(2)).await;

    // The measurement window.
    let ws_bridged = server_metric(target, "teleconsult_ws_bridged").await;
    let rooms_per_node =
        if target.nodes.is_empty() { Vec::new() } else { server_metric_each(target, "teleconsult_rooms_active").await };
    let cpu0 = server_metric(target, "process_cpu_seconds_total").await;
    let turnaround0 = server_histogram(target, TURNAROUND).await;
    let own0 = own_cpu_seconds();
    let window_start = Instant::now();
    let sent0: Vec<Vec<(u32, u32)>> =
        rooms.iter().map(|r| r.people.iter().map(|p| (p.sent_seq(false), p.sent_seq(true))).collect()).collect();
    let lat0: HashMap<(usize, usize, String), usize> = latency_marks(&rooms);
    let rtp0 = rtp_marks(&rooms);
    let mut rtts = Vec::new();
    let window = Duration::from_secs(options.duration_secs.max(1));
    while window_start.elapsed() < window {
        for r in &rooms {
            if let Some(p) = r.people.first()
                && let Ok(rtt) = p.ping().await
            {
                rtts.push(rtt.as_micros().min(u128::from(u32::MAX)) as u32);
            }
        }
        if last_print.elapsed() >= Duration::from_secs(5) {
            last_print = Instant::now();
            let rx: u64 = rooms
                .iter()
                .flat_map(|r| r.people.iter())
                .map(|p| p.reception().tracks.values().map(|t| t.packets).sum::<u64>())
                .sum();
            eprintln!(
                "[{:>5.1}s] measuring {:>4.1}/{}s  rooms {}  packets received {rx}",
                started.elapsed().as_secs_f64(),
                window_start.elapsed().as_secs_f64(),
                window.as_secs(),
                rooms.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(1000)).await;
    }
    let elapsed = window_start.elapsed().as_secs_f64();
    let cpu1 = server_metric(target, "process_cpu_seconds_total").await;
    let turnaround1 = server_histogram(target, TURNAROUND).await;
    let own1 = own_cpu_seconds();
    let rss = server_metric(target, "process_resident_memory_bytes").await;
    let sent1: Vec<Vec<(u32, u32)>> =
        rooms.iter().map(|r| r.people.iter().map(|p| (p.sent_seq(false), p.sent_seq(true))).collect()).collect();
    let rtp1 = rtp_marks(&rooms);
    tokio::time::sleep(Duration::from_millis(700)).await; // the tail of the window arrives

    let (mut expected, mut received) = (0u64, 0u64);
    let mut latencies = Vec::new();
    let mut audio_latencies = Vec::new();
    let mut jitters = Vec::new();
    let mut keyframes = Vec::new();
    let mut join_times = Vec::new();
    let mut subscribers = Vec::new();
    for (ri, r) in rooms.iter().enumerate() {
        for (ai, a) in r.people.iter().enumerate() {
            let reception = a.reception();
            let (mut own_expected, mut own_received, mut own_bytes, mut videos) = (0u64, 0u64, 0u64, 0usize);
            if let Some(first) = a.first_remote_packet_us() {
                join_times.push(((first.saturating_sub(r.join_started_us[ai])) / 1000).min(u64::from(u32::MAX)) as u32);
            }
            for (bi, b) in r.people.iter().enumerate() {
                if ai == bi {
                    continue;
                }
                for video in [false, true] {
                    let mark = |marks: &HashMap<_, (u64, u64, u64)>| {
                        marks.get(&(ri, ai, bi, video)).copied().unwrap_or_default()
                    };
                    let ((e0, d0, b0), (e1, d1, b1)) = (mark(&rtp0), mark(&rtp1));
                    own_bytes += b1.saturating_sub(b0);
                    if video && b1 > b0 {
                        videos += 1;
                    }
                    let (want, got) = if video && options.simulcast {
                        // One layer at a time, renumbered by the SFU: its sequence.
                        (e1.saturating_sub(e0), d1.saturating_sub(d0))
                    } else {
                        let (s, e) =
                            if video { (sent0[ri][bi].1, sent1[ri][bi].1) } else { (sent0[ri][bi].0, sent1[ri][bi].0) };
                        (u64::from(e.saturating_sub(s)), a.received_in(&b.participant_id, video, s, e))
                    };
                    expected += want;
                    received += got;
                    own_expected += want;
                    own_received += got.min(want);
                    let key = (b.participant_id.clone(), if video { "video" } else { "audio" });
                    if let Some(t) = reception.tracks.get(&key) {
                        let skip = lat0.get(&(ri, ai, format!("{}-{video}", b.participant_id))).copied().unwrap_or(0);
                        let window = &t.latencies_us[skip.min(t.latencies_us.len())..];
                        latencies.extend_from_slice(window);
                        if !video {
                            audio_latencies.extend_from_slice(window);
                        }
                        jitters.push(t.jitter_us.round() as u32);
                        if video && let Some(k) = t.first_keyframe_us {
                            keyframes.push(((k.saturating_sub(r.join_started_us[ai])) / 1000) as u32);
                        }
                    }
                }
            }
            subscribers.push(SubscriberFigures {
                room: ri,
                role: a.role.as_str().to_string(),
                received_kbps: own_bytes as f64 * 8.0 / 1000.0 / elapsed,
                loss: if own_expected > 0 { 1.0 - own_received as f64 / own_expected as f64 } else { 1.0 },
                videos_received: videos,
            });
        }
    }
    let report = Report {
        options: options.clone(),
        joins_attempted: options.rooms * options.participants_per_room,
        joins_succeeded: succeeded,
        join_errors: join_errors.into_iter().take(10).collect(),
        join_time_ms: Percentiles::of(&mut join_times, 1.0),
        latency_ms: Percentiles::of(&mut latencies, 0.001),
        audio_latency_ms: Percentiles::of(&mut audio_latencies, 0.001),
        sfu_turnaround_ms: histogram_percentiles(&turnaround0, &turnaround1),
        jitter_ms: Percentiles::of(&mut jitters, 0.001),
        first_keyframe_ms: Percentiles::of(&mut keyframes, 1.0),
        signaling_rtt_ms: Percentiles::of(&mut rtts, 0.001),
        loss: if expected > 0 { 1.0 - received as f64 / expected as f64 } else { 1.0 },
        packets_expected: expected,
        server_cpu_pct: 100.0 * (cpu1 - cpu0) / elapsed,
        server_rss_mib: rss / 1_048_576.0,
        loadtest_cpu_pct: 100.0 * (own1 - own0) / elapsed,
        wall_secs: started.elapsed().as_secs_f64(),
        ws_bridged,
        rooms_per_node,
        subscribers,
    };
    for r in rooms {
        for p in r.people {
            p.leave().await;
        }
    }
    Ok(report)
}

/// (room, subscriber, publisher, video) → the RTP mark of what the
/// subscriber received from that publisher (see `RtpReception::mark`).
type RtpMarks = HashMap<(usize, usize, usize, bool), (u64, u64, u64)>;

/// Every subscriber's [`RtpMarks`] now.
fn rtp_marks(rooms: &[Room]) -> RtpMarks {
    let mut marks = HashMap::new();
    for (ri, r) in rooms.iter().enumerate() {
        for (ai, a) in r.people.iter().enumerate() {
            for (bi, b) in r.people.iter().enumerate() {
                for video in [false, true] {
                    if let Some(t) = a.track_reception(&b.participant_id, video) {
                        marks.insert((ri, ai, bi, video), t.rtp.mark());
                    }
                }
            }
        }
    }
    marks
}

fn latency_marks(rooms: &[Room]) -> HashMap<(usize, usize, String), usize> {
    let mut marks = HashMap::new();
    for (ri, r) in rooms.iter().enumerate() {
        for (ai, a) in r.people.iter().enumerate() {
            for ((publisher, kind), t) in a.reception().tracks {
                marks.insert((ri, ai, format!("{publisher}-{}", kind == "video")), t.latencies_us.len());
            }
        }
    }
    marks
}

impl Report {
    /// Why this run fails a capacity step, one stated reason per limit it
    /// broke (empty: the step holds). Join failures come first, with the
    /// errors the server gave; CPU is reported beside them as a fact, never
    /// as a guess at the cause: a load generator near the machine's cores
    /// makes the latency figures its own.
    pub fn step_failures(&self, max_loss: f64, max_p99_ms: f64) -> Vec<String> {
        let mut reasons = Vec::new();
        if self.joins_succeeded < self.joins_attempted {
            let mut errors = self.join_errors.clone();
            errors.sort();
            errors.dedup();
            reasons.push(format!(
                "{} of {} joins failed ({})",
                self.joins_attempted - self.joins_succeeded,
                self.joins_attempted,
                if errors.is_empty() { "no error recorded".to_string() } else { errors.join("; ") }
            ));
        }
        if self.loss > max_loss {
            reasons.push(format!("loss {:.3}% above {:.1}%", self.loss * 100.0, max_loss * 100.0));
        }
        if self.latency_ms.p99 > max_p99_ms {
            reasons.push(format!("end-to-end p99 {:.1} ms above {max_p99_ms:.0} ms", self.latency_ms.p99));
        }
        reasons
    }

    /// What the CPU figures say about a run on one machine shared by the
    /// server and the load generator (`cores` of them).
    pub fn cpu_note(&self, cores: f64) -> String {
        let total = self.server_cpu_pct + self.loadtest_cpu_pct;
        let mut note = format!(
            "server CPU {:.0}% of one core, load generator {:.0}%, together {:.0}% of {:.0}%",
            self.server_cpu_pct,
            self.loadtest_cpu_pct,
            total,
            cores * 100.0
        );
        if total >= cores * 100.0 * 0.9 {
            note.push_str(
                ": the machine was saturated, so latency and loss measure the load generator as much as the server",
            );
        }
        note
    }

    /// A readable table.
    pub fn table(&self) -> String {
        let p = |name: &str, v: &Percentiles, unit: &str| {
            format!(
                "  {name:<26} p50 {:>8.2} {unit}  p95 {:>8.2} {unit}  p99 {:>8.2} {unit}  (n={})\n",
                v.p50, v.p95, v.p99, v.count
            )
        };
        let mut out = format!(
            "rooms {} x {} participants, video {} kbit/s @ {} fps, window {} s\n",
            self.options.rooms,
            self.options.participants_per_room,
            self.options.video_kbps,
            self.options.fps,
            self.options.duration_secs
        );
        out += &format!("  joins                      {}/{} succeeded\n", self.joins_succeeded, self.joins_attempted);
        out += &p("join time", &self.join_time_ms, "ms");
        out += &p("media latency (one way)", &self.latency_ms, "ms");
        out += &p("  of which audio", &self.audio_latency_ms, "ms");
        out += &p("SFU turnaround (added)", &self.sfu_turnaround_ms, "ms");
        out += &p("jitter per track", &self.jitter_ms, "ms");
        out += &p("first keyframe after join", &self.first_keyframe_ms, "ms");
        out += &p("signaling round trip", &self.signaling_rtt_ms, "ms");
        out +=
            &format!("  loss                       {:.3}% of {} packets\n", self.loss * 100.0, self.packets_expected);
        out += &format!(
            "  server CPU                 {:.1}% of one core, RSS {:.1} MiB\n",
            self.server_cpu_pct, self.server_rss_mib
        );
        out += &format!("  load generator CPU         {:.1}% of one core\n", self.loadtest_cpu_pct);
        if !self.subscribers.is_empty() {
            let mut kbps: Vec<f64> = self.subscribers.iter().map(|s| s.received_kbps).collect();
            kbps.sort_by(f64::total_cmp);
            let worst = self.subscribers.iter().map(|s| s.loss).fold(0.0, f64::max);
            let fewest = self.subscribers.iter().map(|s| s.videos_received).min().unwrap_or(0);
            out += &format!(
                "  received per subscriber    min {:.0}  median {:.0}  max {:.0} kbit/s, worst loss {:.3}%, \
                 fewest videos {fewest} of {}{}\n",
                kbps[0],
                kbps[kbps.len() / 2],
                kbps[kbps.len() - 1],
                worst * 100.0,
                self.options.participants_per_room.saturating_sub(1),
                if self.options.simulcast { " (simulcast publishers)" } else { "" }
            );
        }
        out += &format!("  wall time                  {:.1} s\n", self.wall_secs);
        if !self.rooms_per_node.is_empty() {
            let per_node: Vec<String> = self.rooms_per_node.iter().map(|n| format!("{n}")).collect();
            out += &format!(
                "  cluster                    rooms per node [{}], {} WebSockets bridged (server figures summed over nodes)\n",
                per_node.join(", "),
                self.ws_bridged
            );
        }
        for e in &self.join_errors {
            out += &format!("  error: {e}\n");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    fn report(attempted: usize, succeeded: usize, errors: &[&str], loss: f64, p99: f64) -> super::Report {
        super::Report {
            options: super::LoadOptions {
                rooms: 10,
                participants_per_room: 2,
                video_kbps: 1500,
                fps: 30,
                keyframe_interval_secs: 2,
                ramp_up_secs: 10,
                duration_secs: 15,
                simulcast: false,
                stack: crate::MediaStack::Webrtc,
            },
            joins_attempted: attempted,
            joins_succeeded: succeeded,
            join_errors: errors.iter().map(|e| e.to_string()).collect(),
            join_time_ms: Default::default(),
            latency_ms: super::Percentiles { p99, ..Default::default() },
            audio_latency_ms: Default::default(),
            sfu_turnaround_ms: Default::default(),
            jitter_ms: Default::default(),
            first_keyframe_ms: Default::default(),
            signaling_rtt_ms: Default::default(),
            loss,
            packets_expected: 1000,
            server_cpu_pct: 60.0,
            server_rss_mib: 100.0,
            loadtest_cpu_pct: 130.0,
            wall_secs: 30.0,
            ws_bridged: 0.0,
            rooms_per_node: Vec::new(),
            subscribers: Vec::new(),
        }
    }

    #[test]
    fn a_failed_step_states_each_broken_limit() {
        assert!(report(20, 20, &[], 0.0, 10.0).step_failures(0.01, 50.0).is_empty());
        let bad = report(20, 18, &["visit start: 503 service_busy", "visit start: 503 service_busy"], 0.02, 80.0);
        let reasons = bad.step_failures(0.01, 50.0);
        assert_eq!(reasons.len(), 3, "{reasons:?}");
        assert_eq!(reasons[0], "2 of 20 joins failed (visit start: 503 service_busy)");
        assert!(reasons[1].starts_with("loss 2.000%"));
        assert!(reasons[2].starts_with("end-to-end p99 80.0 ms"));
        assert!(bad.cpu_note(2.0).contains("saturated"), "190% of 200% is saturated");
        assert!(!report(20, 20, &[], 0.0, 10.0).cpu_note(4.0).contains("saturated"));
    }

    #[test]
    fn histogram_quantiles_are_bucket_bounds() {
        let before = [(0.001, 10.0), (0.01, 10.0), (f64::INFINITY, 10.0)];
        let after = [(0.001, 100.0), (0.01, 109.0), (f64::INFINITY, 110.0)];
        let p = super::histogram_percentiles(&before, &after);
        assert_eq!(p.count, 100);
        assert_eq!((p.p50, p.p95, p.p99), (1.0, 10.0, 10.0));
    }

    #[test]
    fn formats_rfc3339() {
        assert_eq!(super::time_rfc3339_at(1_800_230_400 + 9 * 3600 + 30 * 60), "2027-01-18T09:30:00Z");
        let s = super::time_rfc3339_at(0);
        assert_eq!(s, "1970-01-01T00:00:00Z");
        assert_eq!(s.len(), 20);
        assert!(s.ends_with('Z') && &s[4..5] == "-" && &s[10..11] == "T");
    }
}
