//! `teleconsult-loadtest`: benchmarks and load tests through the public API.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand};
use teleconsult_loadtest::server_process::ServerProcess;
use teleconsult_loadtest::synthetic_media::percentile;
use teleconsult_loadtest::{Participant, ParticipantOptions};

#[derive(Parser)]
#[command(name = "teleconsult-loadtest", about = "Synthetic webrtc-rs participants against a Teleconsult server")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Forwarding benchmark: one publisher to N subscribers over loopback.
    /// Starts its own server (release build next to this binary by default).
    Forward {
        /// Subscribers.
        #[arg(long, default_value_t = 10)]
        subscribers: usize,
        /// Measurement window in seconds (after warm-up).
        #[arg(long, default_value_t = 20)]
        duration: u64,
        /// Publisher video bitrate, kbit/s.
        #[arg(long, default_value_t = 1500)]
        video_kbps: u32,
        /// The `teleconsult` binary to run.
        #[arg(long)]
        server_bin: Option<PathBuf>,
        /// Write the figures as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LOADTEST_LOG")
                .unwrap_or_else(|_| "warn,rtc=error,rtc_dtls=error,rtc_ice=error,rtc_srtp=error,webrtc=error".into()),
        )
        .with_writer(std::io::stderr)
        .try_init();
    match Cli::parse().command {
        Command::Forward { subscribers, duration, video_kbps, server_bin, json } => {
            forward(subscribers, Duration::from_secs(duration.clamp(1, 600)), video_kbps, server_bin, json).await
        }
    }
}

fn default_server_bin() -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe()?;
    Ok(me.with_file_name("teleconsult"))
}

async fn forward(
    subscribers: usize,
    window: Duration,
    video_kbps: u32,
    server_bin: Option<PathBuf>,
    json: Option<PathBuf>,
) -> anyhow::Result<()> {
    let subscribers = subscribers.clamp(1, 49);
    // Baseline first, on a quiet machine: the same stream peer to peer.
    let mut direct = teleconsult_loadtest::baseline::direct_video_latency(video_kbps, window.min(Duration::from_secs(10)))
        .await
        .context("direct baseline")?;
    let direct_p50 = percentile(&mut direct, 50.0).unwrap_or(0);
    let direct_p99 = percentile(&mut direct, 99.0).unwrap_or(0);
    let binary = match server_bin {
        Some(b) => b,
        None => default_server_bin()?,
    };
    let server = ServerProcess::start(&binary, &["--max-participants", "50"]).await?;
    let url = server.ws_url();
    let room = "bench-forward";

    let mut publisher_opts = ParticipantOptions::new(url.clone(), server.mint_token(room, "clinician", "Publisher")?);
    publisher_opts.video_bitrate_bps = video_kbps * 1000;
    let publisher = Participant::connect(&publisher_opts).await.context("publisher")?;
    let mut viewers = Vec::new();
    for i in 0..subscribers {
        let mut o = ParticipantOptions::new(url.clone(), server.mint_token(room, "guest", &format!("Viewer {i}"))?);
        o.send_nothing = true;
        viewers.push(Participant::connect(&o).await.with_context(|| format!("viewer {i}"))?);
    }
    // Warm-up: every viewer receives video.
    let deadline = Instant::now() + Duration::from_secs(30);
    while viewers.iter().any(|v| v.track_reception(&publisher.participant_id, true).is_none()) {
        anyhow::ensure!(Instant::now() < deadline, "viewers did not all receive video within 30 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;

    let cpu0 = server.cpu_seconds().context("server cpu")?;
    let fwd0 = server.metric("teleconsult_sfu_packets_forwarded_total").await?;
    let seq0 = (publisher.sent_seq(false), publisher.sent_seq(true));
    let lat0: Vec<usize> = viewers
        .iter()
        .map(|v| v.track_reception(&publisher.participant_id, true).map(|t| t.latencies_us.len()).unwrap_or(0))
        .collect();
    let started = Instant::now();
    tokio::time::sleep(window).await;
    let elapsed = started.elapsed().as_secs_f64();
    let cpu1 = server.cpu_seconds().context("server cpu")?;
    let fwd1 = server.metric("teleconsult_sfu_packets_forwarded_total").await?;
    let seq1 = (publisher.sent_seq(false), publisher.sent_seq(true));
    let rss = server.rss_bytes().unwrap_or(0);
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut latencies = Vec::new();
    let (mut expected, mut received) = (0u64, 0u64);
    for (v, skip) in viewers.iter().zip(lat0) {
        for (video, (s, e)) in [(false, (seq0.0, seq1.0)), (true, (seq0.1, seq1.1))] {
            expected += u64::from(e - s);
            received += v.received_in(&publisher.participant_id, video, s, e);
        }
        if let Some(t) = v.track_reception(&publisher.participant_id, true) {
            latencies.extend_from_slice(&t.latencies_us[skip.min(t.latencies_us.len())..]);
        }
    }
    let forwarded = fwd1 - fwd0;
    let cpu = cpu1 - cpu0;
    let p50 = percentile(&mut latencies, 50.0).unwrap_or(0);
    let p99 = percentile(&mut latencies, 99.0).unwrap_or(0);
    let loss = if expected > 0 { 1.0 - received as f64 / expected as f64 } else { 0.0 };
    let per_cpu_second = if cpu > 0.0 { forwarded / cpu } else { f64::NAN };

    println!("forward benchmark: 1 publisher ({video_kbps} kbit/s video + audio) -> {subscribers} subscribers, {elapsed:.1} s");
    println!("  packets forwarded        {forwarded:.0} ({:.0}/s)", forwarded / elapsed);
    println!("  server CPU               {cpu:.2} s ({:.1}% of one core)", 100.0 * cpu / elapsed);
    println!("  forwarded per CPU-second {per_cpu_second:.0}");
    let ms = |us: u32| f64::from(us) / 1000.0;
    println!("  latency through the SFU  p50 {:.2} ms, p99 {:.2} ms (video, publisher send to subscriber receive)", ms(p50), ms(p99));
    println!("  latency direct (no SFU)  p50 {:.2} ms, p99 {:.2} ms (same stream, peer to peer)", ms(direct_p50), ms(direct_p99));
    println!(
        "  added by the SFU         p50 {:.2} ms, p99 {:.2} ms",
        ms(p50.saturating_sub(direct_p50)),
        ms(p99.saturating_sub(direct_p99))
    );
    println!("  loss                     {:.3}%", loss * 100.0);
    println!("  server RSS               {:.1} MiB", rss as f64 / 1048576.0);
    if let Some(path) = json {
        let report = serde_json::json!({
            "benchmark": "forward",
            "subscribers": subscribers,
            "video_kbps": video_kbps,
            "window_secs": elapsed,
            "packets_forwarded": forwarded,
            "server_cpu_secs": cpu,
            "forwarded_per_cpu_second": per_cpu_second,
            "latency_p50_ms": ms(p50),
            "latency_p99_ms": ms(p99),
            "direct_latency_p50_ms": ms(direct_p50),
            "direct_latency_p99_ms": ms(direct_p99),
            "added_latency_p50_ms": ms(p50.saturating_sub(direct_p50)),
            "added_latency_p99_ms": ms(p99.saturating_sub(direct_p99)),
            "loss": loss,
            "server_rss_bytes": rss,
        });
        std::fs::write(&path, serde_json::to_string_pretty(&report)?)?;
    }

    publisher.leave().await;
    for v in viewers {
        v.leave().await;
    }
    server.stop()?;
    anyhow::ensure!(loss < 0.05, "loss {:.2}% is over 5%", loss * 100.0);
    Ok(())
}
