//! Prometheus metrics in the text exposition format, at `/metrics`.
//!
//! Counters are plain atomics updated on the hot path; the media workers'
//! counters and the process figures are read when scraped.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};

use teleconsult_sfu::WorkerStats;

/// Signaling-side counters.
#[derive(Debug, Default)]
pub struct Metrics {
    ws_connections: AtomicI64,
    ws_messages: Mutex<BTreeMap<&'static str, u64>>,
    ws_errors: Mutex<BTreeMap<&'static str, u64>>,
}

impl Metrics {
    /// A WebSocket opened (+1) or closed (-1).
    pub fn ws_connections(&self, delta: i64) {
        self.ws_connections.fetch_add(delta, Ordering::Relaxed);
    }

    /// One client message of a known type.
    pub fn ws_message(&self, kind: &'static str) {
        if let Ok(mut m) = self.ws_messages.lock() {
            *m.entry(kind).or_default() += 1;
        }
    }

    /// One error sent, by code.
    pub fn ws_error(&self, code: &'static str) {
        if let Ok(mut m) = self.ws_errors.lock() {
            *m.entry(code).or_default() += 1;
        }
    }

    /// Renders everything in the Prometheus text format.
    pub fn render(&self, rooms: &[(String, usize)], workers: &[WorkerStats]) -> String {
        let mut out = String::new();
        gauge(&mut out, "teleconsult_ws_connections", "Open WebSocket connections.", self.ws_connections.load(Ordering::Relaxed) as f64);
        let _ = writeln!(out, "# HELP teleconsult_ws_messages_total Client messages received, by type.");
        let _ = writeln!(out, "# TYPE teleconsult_ws_messages_total counter");
        if let Ok(m) = self.ws_messages.lock() {
            for (kind, n) in m.iter() {
                let _ = writeln!(out, "teleconsult_ws_messages_total{{type=\"{kind}\"}} {n}");
            }
        }
        let _ = writeln!(out, "# HELP teleconsult_ws_errors_total Protocol errors sent, by code.");
        let _ = writeln!(out, "# TYPE teleconsult_ws_errors_total counter");
        if let Ok(m) = self.ws_errors.lock() {
            for (code, n) in m.iter() {
                let _ = writeln!(out, "teleconsult_ws_errors_total{{code=\"{code}\"}} {n}");
            }
        }
        gauge(&mut out, "teleconsult_rooms_active", "Rooms with at least one seat.", rooms.len() as f64);
        gauge(
            &mut out,
            "teleconsult_participants",
            "Seats held across all rooms.",
            rooms.iter().map(|(_, n)| *n).sum::<usize>() as f64,
        );

        type Field = fn(&WorkerStats) -> u64;
        let worker_metrics: [(&str, &str, &str, Field); 9] = [
            ("teleconsult_sfu_rooms", "gauge", "Rooms on the media worker.", |w| w.rooms),
            ("teleconsult_sfu_participants", "gauge", "Participants on the media worker.", |w| w.participants),
            ("teleconsult_sfu_datagrams_received_total", "counter", "UDP datagrams received.", |w| w.datagrams_in),
            ("teleconsult_sfu_datagrams_dropped_total", "counter", "UDP datagrams dropped (unparseable or no peer).", |w| w.datagrams_dropped),
            ("teleconsult_sfu_packets_forwarded_total", "counter", "RTP packets forwarded to subscribers.", |w| w.packets_forwarded),
            ("teleconsult_sfu_bytes_forwarded_total", "counter", "RTP payload bytes forwarded to subscribers.", |w| w.bytes_forwarded),
            ("teleconsult_sfu_keyframe_requests_total", "counter", "Keyframe requests (PLI) sent to publishers.", |w| w.keyframe_requests),
            ("teleconsult_sfu_udp_send_errors_total", "counter", "UDP sends that failed.", |w| w.send_errors),
            ("teleconsult_sfu_peer_faults_total", "counter", "Peers dropped after an internal fault.", |w| w.peer_faults),
        ];
        for (name, kind, help, field) in worker_metrics {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for w in workers {
                let _ = writeln!(out, "{name}{{worker=\"{}\"}} {}", w.worker, field(w));
            }
        }

        let name = "teleconsult_sfu_batch_turnaround_seconds";
        let _ = writeln!(out, "# HELP {name} Time from reading a batch of datagrams to having sent everything it produced (the SFU's added latency).");
        let _ = writeln!(out, "# TYPE {name} histogram");
        for w in workers {
            let mut cumulative = 0;
            for (i, bound) in teleconsult_sfu::TURNAROUND_BUCKETS_SECS.iter().enumerate() {
                cumulative += w.turnaround_buckets.get(i).copied().unwrap_or(0);
                let _ = writeln!(out, "{name}_bucket{{worker=\"{}\",le=\"{bound}\"}} {cumulative}", w.worker);
            }
            cumulative += w.turnaround_buckets.last().copied().unwrap_or(0);
            let _ = writeln!(out, "{name}_bucket{{worker=\"{}\",le=\"+Inf\"}} {cumulative}", w.worker);
            let _ = writeln!(out, "{name}_sum{{worker=\"{}\"}} {}", w.worker, w.turnaround_sum_micros as f64 / 1e6);
            let _ = writeln!(out, "{name}_count{{worker=\"{}\"}} {cumulative}", w.worker);
        }

        if let Some((cpu, rss)) = process_figures() {
            let _ = writeln!(out, "# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.");
            let _ = writeln!(out, "# TYPE process_cpu_seconds_total counter");
            let _ = writeln!(out, "process_cpu_seconds_total {cpu}");
            gauge(&mut out, "process_resident_memory_bytes", "Resident memory size in bytes.", rss as f64);
        }
        let _ = writeln!(out, "# HELP teleconsult_build_info Build information.");
        let _ = writeln!(out, "# TYPE teleconsult_build_info gauge");
        let _ = writeln!(out, "teleconsult_build_info{{version=\"{}\"}} 1", env!("CARGO_PKG_VERSION"));
        out
    }
}

fn gauge(out: &mut String, name: &str, help: &str, value: f64) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} gauge");
    let _ = writeln!(out, "{name} {value}");
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
    fn renders_counters_and_process_figures() {
        let m = Metrics::default();
        m.ws_connections(2);
        m.ws_message("join");
        m.ws_error("room_full");
        let text = m.render(&[("r".into(), 2)], &[WorkerStats { packets_forwarded: 7, ..Default::default() }]);
        assert!(text.contains("teleconsult_ws_connections 2"));
        assert!(text.contains("teleconsult_ws_errors_total{code=\"room_full\"} 1"));
        assert!(text.contains("teleconsult_sfu_packets_forwarded_total{worker=\"0\"} 7"));
        assert!(text.contains("teleconsult_participants 2"));
        assert!(text.contains("process_resident_memory_bytes"));
    }
}
