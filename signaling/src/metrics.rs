//! Prometheus metrics in the text exposition format, at `/metrics`.
//!
//! Hot-path counters are atomics or short-held mutexes; media workers'
//! counters, live room figures, visit totals and process figures are read
//! when scraped. Names and units are listed in docs/operations.md.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use teleconsult_protocol::Role;
use teleconsult_sfu::{Histogram, LOSS_BUCKETS, RTT_BUCKETS_SECS, TURNAROUND_BUCKETS_SECS, WorkerStats};

/// Upper bounds (seconds) of the waiting-room histogram.
pub const WAIT_BUCKETS_SECS: [f64; 10] = [15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1200.0, 1800.0, 3600.0];
/// Upper bounds (seconds) of the join-time histogram.
pub const JOIN_BUCKETS_SECS: [f64; 10] = [0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0];

/// Live figures of the rooms, taken when scraped.
#[derive(Debug, Default, Clone)]
pub struct RoomFigures {
    /// Rooms with at least one seat.
    pub rooms: usize,
    /// Seats in the call, by role.
    pub in_call: BTreeMap<&'static str, usize>,
    /// Seats in waiting rooms.
    pub waiting: usize,
}

/// Signaling-side counters.
#[derive(Debug, Default)]
pub struct Metrics {
    ws_connections: AtomicI64,
    ws_messages: Mutex<BTreeMap<&'static str, u64>>,
    ws_errors: Mutex<BTreeMap<&'static str, u64>>,
    wait: Mutex<Histogram>,
    join: Mutex<Histogram>,
    /// Link id → when its link was exchanged, until its media connects.
    link_opened: Mutex<HashMap<String, Instant>>,
    ws_bridged: AtomicI64,
    room_moves: Mutex<BTreeMap<&'static str, u64>>,
    /// The cluster's nodes as of the last heartbeat (empty: one node).
    cluster_nodes: Mutex<Vec<crate::cluster::NodeStatus>>,
}

fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Metrics {
    /// A WebSocket opened (+1) or closed (-1).
    pub fn ws_connections(&self, delta: i64) {
        self.ws_connections.fetch_add(delta, Ordering::Relaxed);
    }

    /// Open WebSocket connections now.
    pub fn ws_open(&self) -> i64 {
        self.ws_connections.load(Ordering::Relaxed)
    }

    /// A WebSocket bridged to another node opened (+1) or closed (-1).
    pub fn ws_bridged(&self, delta: i64) {
        self.ws_bridged.fetch_add(delta, Ordering::Relaxed);
    }

    /// A room's people were told to move (`node_draining`, `node_lost`).
    pub fn room_moved(&self, reason: &'static str) {
        *locked(&self.room_moves).entry(reason).or_default() += 1;
    }

    /// The cluster's nodes, as the last heartbeat read them.
    pub fn set_cluster_nodes(&self, nodes: &[crate::cluster::NodeStatus]) {
        *locked(&self.cluster_nodes) = nodes.to_vec();
    }

    /// One client message of a known type.
    pub fn ws_message(&self, kind: &'static str) {
        *locked(&self.ws_messages).entry(kind).or_default() += 1;
    }

    /// One error sent, by code.
    pub fn ws_error(&self, code: &'static str) {
        *locked(&self.ws_errors).entry(code).or_default() += 1;
    }

    /// A participant was admitted after waiting this long.
    pub fn admitted_after(&self, waited: Duration) {
        locked(&self.wait).observe(&WAIT_BUCKETS_SECS, waited.as_secs_f64());
    }

    /// A link was exchanged: its join-time clock starts.
    pub fn link_opened(&self, link_id: &str) {
        let mut map = locked(&self.link_opened);
        let now = Instant::now();
        // Links whose media never connected are forgotten after an hour.
        map.retain(|_, t| now.duration_since(*t) < Duration::from_secs(3600));
        map.insert(link_id.to_string(), now);
    }

    /// The media of a seat opened through `link_id` connected: its join
    /// time (link opened → first remote media) is recorded once.
    pub fn media_connected(&self, link_id: &str) {
        if let Some(opened) = locked(&self.link_opened).remove(link_id) {
            locked(&self.join).observe(&JOIN_BUCKETS_SECS, opened.elapsed().as_secs_f64());
        }
    }

    /// Renders everything in the Prometheus text format.
    pub fn render(
        &self,
        rooms: &RoomFigures,
        visits_finished: &[(crate::store::VisitStatus, i64)],
        workers: &[WorkerStats],
        paths: &std::collections::BTreeMap<&'static str, u64>,
    ) -> String {
        let mut out = String::new();
        metric(&mut out, "teleconsult_ws_connections", "gauge", "Open WebSocket connections.");
        let _ = writeln!(out, "teleconsult_ws_connections {}", self.ws_connections.load(Ordering::Relaxed));
        metric(&mut out, "teleconsult_ws_bridged", "gauge", "WebSockets bridged to the node that holds their room.");
        let _ = writeln!(out, "teleconsult_ws_bridged {}", self.ws_bridged.load(Ordering::Relaxed));
        metric(&mut out, "teleconsult_room_moves_total", "counter", "Rooms whose people were told to move, by reason.");
        for (reason, n) in locked(&self.room_moves).iter() {
            let _ = writeln!(out, "teleconsult_room_moves_total{{reason=\"{reason}\"}} {n}");
        }
        let nodes = locked(&self.cluster_nodes).clone();
        if !nodes.is_empty() {
            metric(
                &mut out,
                "teleconsult_cluster_node_up",
                "gauge",
                "Live nodes of the cluster, by state (1 per node).",
            );
            for n in &nodes {
                let state = match n.state {
                    crate::cluster::NodeState::Active => "active",
                    crate::cluster::NodeState::Draining => "draining",
                };
                let _ = writeln!(out, "teleconsult_cluster_node_up{{node=\"{}\",state=\"{state}\"}} 1", n.id);
            }
            metric(&mut out, "teleconsult_cluster_node_rooms", "gauge", "Rooms each node holds.");
            for n in &nodes {
                let _ = writeln!(out, "teleconsult_cluster_node_rooms{{node=\"{}\"}} {}", n.id, n.rooms);
            }
            metric(&mut out, "teleconsult_cluster_node_participants", "gauge", "Seats in each node's rooms.");
            for n in &nodes {
                let _ = writeln!(out, "teleconsult_cluster_node_participants{{node=\"{}\"}} {}", n.id, n.participants);
            }
            metric(
                &mut out,
                "teleconsult_cluster_node_cpu_percent",
                "gauge",
                "Each node's CPU use, percent of one core.",
            );
            for n in &nodes {
                let _ = writeln!(out, "teleconsult_cluster_node_cpu_percent{{node=\"{}\"}} {}", n.id, n.cpu_percent);
            }
        }
        metric(&mut out, "teleconsult_ws_messages_total", "counter", "Client messages received, by type.");
        for (kind, n) in locked(&self.ws_messages).iter() {
            let _ = writeln!(out, "teleconsult_ws_messages_total{{type=\"{kind}\"}} {n}");
        }
        metric(&mut out, "teleconsult_ws_errors_total", "counter", "Protocol errors sent, by code.");
        for (code, n) in locked(&self.ws_errors).iter() {
            let _ = writeln!(out, "teleconsult_ws_errors_total{{code=\"{code}\"}} {n}");
        }

        metric(&mut out, "teleconsult_rooms_active", "gauge", "Rooms with at least one seat.");
        let _ = writeln!(out, "teleconsult_rooms_active {}", rooms.rooms);
        metric(&mut out, "teleconsult_participants", "gauge", "Seats in calls, by role.");
        for role in [Role::Clinician, Role::Patient, Role::Guest] {
            let n = rooms.in_call.get(role.as_str()).copied().unwrap_or(0);
            let _ = writeln!(out, "teleconsult_participants{{role=\"{}\"}} {n}", role.as_str());
        }
        metric(
            &mut out,
            "teleconsult_media_connections",
            "gauge",
            "Participants whose media is connected, by path: udp (direct), tcp (direct, ICE-TCP), relay (TURN).",
        );
        for path in ["udp", "tcp", "relay"] {
            let n = paths.get(path).copied().unwrap_or(0);
            let _ = writeln!(out, "teleconsult_media_connections{{path=\"{path}\"}} {n}");
        }
        metric(
            &mut out,
            "teleconsult_waiting_room_participants",
            "gauge",
            "Patients and guests waiting to be admitted.",
        );
        let _ = writeln!(out, "teleconsult_waiting_room_participants {}", rooms.waiting);
        histogram(
            &mut out,
            "teleconsult_wait_seconds",
            "Time from arrival in the waiting room to admission.",
            &WAIT_BUCKETS_SECS,
            &[("", &locked(&self.wait))],
        );
        histogram(
            &mut out,
            "teleconsult_join_seconds",
            "Time from a link's exchange to its media connecting.",
            &JOIN_BUCKETS_SECS,
            &[("", &locked(&self.join))],
        );
        metric(&mut out, "teleconsult_visits_finished_total", "counter", "Visits by final status.");
        use crate::store::VisitStatus;
        for status in [VisitStatus::Completed, VisitStatus::NoShow, VisitStatus::Cancelled] {
            let n = visits_finished.iter().find(|(s, _)| *s == status).map(|(_, n)| *n).unwrap_or(0);
            let _ = writeln!(out, "teleconsult_visits_finished_total{{status=\"{}\"}} {n}", status.as_str());
        }

        type Field = fn(&WorkerStats) -> u64;
        let worker_metrics: [(&str, &str, &str, Field); 14] = [
            ("teleconsult_sfu_rooms", "gauge", "Rooms on the media worker.", |w| w.rooms),
            ("teleconsult_sfu_participants", "gauge", "Participants on the media worker.", |w| w.participants),
            ("teleconsult_sfu_datagrams_received_total", "counter", "UDP datagrams received.", |w| w.datagrams_in),
            (
                "teleconsult_sfu_datagrams_dropped_total",
                "counter",
                "UDP datagrams dropped (unparseable or no peer).",
                |w| w.datagrams_dropped,
            ),
            ("teleconsult_sfu_packets_forwarded_total", "counter", "RTP packets forwarded to subscribers.", |w| {
                w.packets_forwarded
            }),
            ("teleconsult_sfu_bytes_forwarded_total", "counter", "RTP payload bytes forwarded to subscribers.", |w| {
                w.bytes_forwarded
            }),
            ("teleconsult_sfu_nacks_received_total", "counter", "NACKs received from subscribers.", |w| {
                w.nacks_received
            }),
            (
                "teleconsult_sfu_plis_received_total",
                "counter",
                "Keyframe requests (PLI, FIR) received from subscribers.",
                |w| w.keyframe_requests_received,
            ),
            (
                "teleconsult_sfu_keyframe_requests_total",
                "counter",
                "Keyframe requests (PLI) sent to publishers.",
                |w| w.keyframe_requests,
            ),
            (
                "teleconsult_sfu_wakes_total",
                "counter",
                "Times the media worker woke (datagrams, timers, commands).",
                |w| w.wakes,
            ),
            (
                "teleconsult_sfu_peer_timeouts_total",
                "counter",
                "str0m timeouts handled, one per peer timer due.",
                |w| w.peer_timeouts,
            ),
            ("teleconsult_sfu_udp_send_errors_total", "counter", "UDP sends that failed.", |w| w.send_errors),
            ("teleconsult_sfu_peer_faults_total", "counter", "Peers dropped after an internal fault.", |w| {
                w.peer_faults
            }),
            (
                "teleconsult_sfu_worker_restarts_total",
                "counter",
                "Times the media worker died and was restarted.",
                |w| w.restarts,
            ),
        ];
        for (name, kind, help, field) in worker_metrics {
            metric(&mut out, name, kind, help);
            for w in workers {
                let _ = writeln!(out, "{name}{{worker=\"{}\"}} {}", w.worker, field(w));
            }
        }
        let labels: Vec<String> = workers.iter().map(|w| format!("worker=\"{}\"", w.worker)).collect();
        let per_worker = |pick: fn(&WorkerStats) -> &Histogram| -> Vec<(&str, &Histogram)> {
            workers.iter().zip(&labels).map(|(w, l)| (l.as_str(), pick(w))).collect()
        };
        histogram(
            &mut out,
            "teleconsult_sfu_batch_turnaround_seconds",
            "Time from reading a batch of datagrams to having sent everything it produced (the SFU's added latency).",
            &TURNAROUND_BUCKETS_SECS,
            &per_worker(|w| &w.turnaround),
        );
        histogram(
            &mut out,
            "teleconsult_sfu_loss_ratio",
            "Loss fraction per track and stats report (ingress seen by the SFU, egress reported by subscribers).",
            &LOSS_BUCKETS,
            &per_worker(|w| &w.loss),
        );
        histogram(
            &mut out,
            "teleconsult_sfu_rtt_seconds",
            "Round-trip time per peer and stats report.",
            &RTT_BUCKETS_SECS,
            &per_worker(|w| &w.rtt),
        );

        if let Some((cpu, rss)) = process_figures() {
            metric(
                &mut out,
                "process_cpu_seconds_total",
                "counter",
                "Total user and system CPU time spent in seconds.",
            );
            let _ = writeln!(out, "process_cpu_seconds_total {cpu}");
            metric(&mut out, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.");
            let _ = writeln!(out, "process_resident_memory_bytes {rss}");
        }
        metric(&mut out, "teleconsult_build_info", "gauge", "Build information.");
        let _ = writeln!(out, "teleconsult_build_info{{version=\"{}\"}} 1", env!("CARGO_PKG_VERSION"));
        out
    }
}

fn metric(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Writes a histogram family: one series per (labels, histogram).
fn histogram(out: &mut String, name: &str, help: &str, bounds: &[f64], series: &[(&str, &Histogram)]) {
    metric(out, name, "histogram", help);
    for (labels, h) in series {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (i, bound) in bounds.iter().enumerate() {
            cumulative += h.counts.get(i).copied().unwrap_or(0);
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {cumulative}");
        }
        cumulative += h.counts.get(bounds.len()).copied().unwrap_or(0);
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {cumulative}");
        let braces = |s: &str| if s.is_empty() { String::new() } else { format!("{{{s}}}") };
        let _ = writeln!(out, "{name}_sum{} {}", braces(labels), h.sum);
        let _ = writeln!(out, "{name}_count{} {cumulative}", braces(labels));
    }
}

/// (CPU seconds, resident bytes) of this process, from /proc on Linux.
pub fn process_figures() -> Option<(f64, u64)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line (11 and 12 here, 0-based).
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    let rss_pages: u64 = fields.get(21)?.parse().ok()?;
    // Linux reports in clock ticks (100 Hz on every mainstream configuration)
    // and pages (4 KiB on x86_64 and aarch64 defaults).
    Some(((utime + stime) / 100.0, rss_pages * 4096))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_histograms_and_process_figures() {
        let m = Metrics::default();
        m.ws_connections(2);
        m.ws_message("join");
        m.ws_error("room_full");
        m.admitted_after(Duration::from_secs(45));
        let mut figures = RoomFigures { rooms: 1, waiting: 1, ..Default::default() };
        figures.in_call.insert("clinician", 1);
        let mut w = WorkerStats { packets_forwarded: 7, wakes: 3, peer_timeouts: 5, ..Default::default() };
        w.turnaround.observe(&TURNAROUND_BUCKETS_SECS, 0.0003);
        let paths = std::collections::BTreeMap::from([("relay", 1)]);
        let text = m.render(&figures, &[(crate::store::VisitStatus::Completed, 4)], &[w], &paths);
        assert!(text.contains("teleconsult_ws_connections 2"));
        assert!(text.contains("teleconsult_ws_errors_total{code=\"room_full\"} 1"));
        assert!(text.contains("teleconsult_sfu_packets_forwarded_total{worker=\"0\"} 7"));
        assert!(text.contains("teleconsult_sfu_wakes_total{worker=\"0\"} 3"));
        assert!(text.contains("teleconsult_sfu_peer_timeouts_total{worker=\"0\"} 5"));
        assert!(text.contains("teleconsult_participants{role=\"clinician\"} 1"));
        assert!(text.contains("teleconsult_waiting_room_participants 1"));
        assert!(text.contains("teleconsult_media_connections{path=\"relay\"} 1"));
        assert!(text.contains("teleconsult_media_connections{path=\"udp\"} 0"));
        assert!(text.contains("teleconsult_wait_seconds_bucket{le=\"30\"} 0"));
        assert!(text.contains("teleconsult_wait_seconds_bucket{le=\"60\"} 1"));
        assert!(text.contains("teleconsult_wait_seconds_count 1"));
        assert!(text.contains("teleconsult_visits_finished_total{status=\"completed\"} 4"));
        assert!(text.contains("teleconsult_sfu_batch_turnaround_seconds_bucket{worker=\"0\",le=\"0.0005\"} 1"));
        assert!(text.contains("process_resident_memory_bytes"));
    }

    #[test]
    fn join_time_is_recorded_once_per_link() {
        let m = Metrics::default();
        m.link_opened("l-1");
        m.media_connected("l-1");
        m.media_connected("l-1");
        m.media_connected("l-unknown");
        assert_eq!(locked(&m.join).count(), 1);
    }
}
