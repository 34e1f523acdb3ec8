//! What junk costs: datagrams from sources nobody negotiated (random
//! bytes, and shapes that pass the first-byte demux as STUN, DTLS or RTP)
//! sent to the media port during a live two-person call. The server's CPU
//! in a window with junk is compared with a quiet window of the same
//! length, and the call's delivery is checked in both.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::server_process::ServerProcess;
use crate::{Participant, ParticipantOptions};

/// The figures of one run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct JunkReport {
    /// Junk datagrams sent in the junk window.
    pub datagrams: u32,
    /// Length of each window, in seconds.
    pub window_secs: f64,
    /// Server CPU seconds in the quiet window (the call alone).
    pub quiet_cpu_secs: f64,
    /// Server CPU seconds in the junk window (the call plus the junk).
    pub junk_cpu_secs: f64,
    /// Datagrams the SFU counted as dropped during the junk window.
    pub dropped: f64,
    /// Share of the call's packets delivered in the quiet window, both ways.
    pub quiet_delivery: f64,
    /// The same in the junk window.
    pub junk_delivery: f64,
}

impl JunkReport {
    /// Extra server CPU per junk datagram, in microseconds.
    pub fn extra_us_per_datagram(&self) -> f64 {
        (self.junk_cpu_secs - self.quiet_cpu_secs).max(0.0) * 1e6 / f64::from(self.datagrams.max(1))
    }
}

/// Datagram `i` of the junk stream, from a xorshift state `x`.
fn junk(i: u32, x: u64) -> Vec<u8> {
    let noise: Vec<u8> = (0..(1 + (x % 1200) as usize)).map(|j| (x >> (j % 56)) as u8 ^ j as u8).collect();
    match i % 4 {
        // A STUN binding request naming a ufrag nobody has.
        0 => {
            let mut stun = vec![0x00, 0x01, 0x00, 0x10, 0x21, 0x12, 0xa4, 0x42];
            stun.extend_from_slice(&x.to_be_bytes()[..4]);
            stun.extend_from_slice(&[0u8; 8]);
            stun.extend_from_slice(&[0x00, 0x06, 0x00, 0x09]);
            stun.extend_from_slice(b"nobody:xy\0\0\0");
            stun
        }
        1 => [&[0x80u8, 0x60][..], &noise].concat(),
        2 => [&[22u8, 0xfe, 0xfd][..], &noise].concat(),
        _ => noise,
    }
}

/// Delivery of `a`'s and `b`'s audio and video to each other between two
/// snapshots of their send counters.
fn delivery(a: &Participant, b: &Participant, from: [(u32, u32); 2], to: [(u32, u32); 2]) -> f64 {
    let (mut expected, mut received) = (0u64, 0u64);
    for (sender, receiver, start, end) in [(a, b, from[0], to[0]), (b, a, from[1], to[1])] {
        for (video, s, e) in [(false, start.0, end.0), (true, start.1, end.1)] {
            expected += u64::from(e.wrapping_sub(s));
            received += receiver.received_in(&sender.participant_id, video, s, e);
        }
    }
    if expected == 0 { 0.0 } else { received as f64 / expected as f64 }
}

/// Starts a server on `binary`, holds a two-person call on it, and sends
/// `datagrams` junk datagrams from 16 loopback sockets spread over
/// `window` (after a quiet window of the same length).
pub async fn run(binary: &Path, datagrams: u32, window: Duration) -> anyhow::Result<JunkReport> {
    let media_port = std::net::UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port();
    let server = ServerProcess::start_with_media_port(binary, media_port, &[]).await?;
    let url = server.ws_url();
    let a = Participant::connect(&ParticipantOptions::new(url.clone(), server.mint_token("junk", "clinician", "A")?))
        .await
        .context("first participant")?;
    let b = Participant::connect(&ParticipantOptions::new(url, server.mint_token("junk", "patient", "B")?))
        .await
        .context("second participant")?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while a.track_reception(&b.participant_id, true).is_none() || b.track_reception(&a.participant_id, true).is_none() {
        anyhow::ensure!(Instant::now() < deadline, "the call did not carry video within 30 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let seqs = || [(a.sent_seq(false), a.sent_seq(true)), (b.sent_seq(false), b.sent_seq(true))];

    // The call alone.
    let (cpu0, s0) = (server.cpu_seconds().context("server cpu")?, seqs());
    tokio::time::sleep(window).await;
    let (cpu1, s1) = (server.cpu_seconds().context("server cpu")?, seqs());
    let dropped0 = server.metric("teleconsult_sfu_datagrams_dropped_total").await?;

    // The call plus junk, paced evenly over the window.
    let mut sockets = Vec::new();
    for _ in 0..16 {
        sockets.push(tokio::net::UdpSocket::bind("127.0.0.1:0").await?);
    }
    let started = Instant::now();
    let cpu2 = server.cpu_seconds().context("server cpu")?;
    let s2 = seqs();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in 0..datagrams {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let due = window.mul_f64(f64::from(i) / f64::from(datagrams.max(1)));
        if let Some(wait) = due.checked_sub(started.elapsed()) {
            tokio::time::sleep(wait).await;
        }
        let socket = &sockets[i as usize % sockets.len()];
        let _ = socket.send_to(&junk(i, x), ("127.0.0.1", media_port)).await;
    }
    if let Some(rest) = window.checked_sub(started.elapsed()) {
        tokio::time::sleep(rest).await;
    }
    let (cpu3, s3) = (server.cpu_seconds().context("server cpu")?, seqs());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let dropped1 = server.metric("teleconsult_sfu_datagrams_dropped_total").await?;
    let report = JunkReport {
        datagrams,
        window_secs: window.as_secs_f64(),
        quiet_cpu_secs: cpu1 - cpu0,
        junk_cpu_secs: cpu3 - cpu2,
        dropped: dropped1 - dropped0,
        quiet_delivery: delivery(&a, &b, s0, s1),
        junk_delivery: delivery(&a, &b, s2, s3),
    };
    a.leave().await;
    b.leave().await;
    server.stop()?;
    Ok(report)
}
