//! `teleconsult-loadtest`: benchmarks and load tests through the public API.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand};
use teleconsult_loadtest::scenario::{self, LoadOptions, Report, Target};
use teleconsult_loadtest::server_process::ServerProcess;
use teleconsult_loadtest::synthetic_media::percentile;
use teleconsult_loadtest::{MediaStack, Participant, ParticipantOptions};

#[derive(Parser)]
#[command(name = "teleconsult-loadtest", about = "Synthetic webrtc-rs participants against a Teleconsult server")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Load presets (see BENCHMARKS.md).
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Preset {
    /// 50 rooms x 2, 1.5 Mbit/s video + audio: a clinic's busy hour.
    Consult,
    /// 5 rooms x 8, 500 kbit/s each: group sessions (APA, therapeutic education).
    Group,
    /// 50 rooms x 2 joining within 10 s: the Monday-morning rush.
    Burst,
    /// 5 rooms x 2 for 10 s: the CI smoke run.
    Smoke,
    /// 1 class of 13 (a leader and twelve patients), every camera in three
    /// simulcast layers (1.2 Mbit/s, 400 and 150 kbit/s): what each
    /// subscriber receives and loses.
    Class,
}

#[derive(Debug, Clone, clap::Args)]
struct RunArgs {
    /// Starting point for every setting below.
    #[arg(long, value_enum, default_value = "consult")]
    preset: Preset,
    #[arg(long)]
    rooms: Option<usize>,
    #[arg(long)]
    participants: Option<usize>,
    #[arg(long)]
    video_kbps: Option<u32>,
    #[arg(long)]
    fps: Option<u32>,
    /// Seconds between keyframes.
    #[arg(long)]
    keyframe_secs: Option<u64>,
    /// Publish video in three simulcast layers (the `class` preset does).
    #[arg(long)]
    simulcast: bool,
    /// The participants' WebRTC stack: str0m (light; what a capacity search
    /// should use) or webrtc-rs (independent of the server's stack).
    #[arg(long, value_enum, default_value = "webrtc")]
    stack: MediaStack,
    /// Seconds over which rooms are started.
    #[arg(long)]
    ramp_up: Option<u64>,
    /// Seconds of measurement.
    #[arg(long)]
    duration: Option<u64>,
    /// A running server (host:port) instead of starting one. Needs --email and --password.
    #[arg(long)]
    target: Option<std::net::SocketAddr>,
    /// With --target: every node of a cluster (host:port, comma-separated).
    /// Each room's people open their WebSockets on different nodes, and the
    /// server figures are summed over the nodes.
    #[arg(long, value_delimiter = ',')]
    nodes: Vec<std::net::SocketAddr>,
    #[arg(long, env = "LOADTEST_EMAIL")]
    email: Option<String>,
    #[arg(long, env = "LOADTEST_PASSWORD", hide_env_values = true)]
    password: Option<String>,
    /// The `teleconsult` binary to start (default: next to this one).
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// Write the report as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Fail if loss exceeds this percentage.
    #[arg(long)]
    max_loss_pct: Option<f64>,
    /// Fail if the SFU's added latency p99 exceeds this (ms).
    #[arg(long)]
    max_latency_p99_ms: Option<f64>,
    /// Fail if join time p95 exceeds this (ms).
    #[arg(long)]
    max_join_p95_ms: Option<f64>,
    /// Fail if server CPU exceeds this percentage of one core.
    #[arg(long)]
    max_cpu_pct: Option<f64>,
    /// Fail if server RSS exceeds this (MiB).
    #[arg(long)]
    max_rss_mib: Option<f64>,
}

#[derive(Subcommand)]
enum Command {
    /// A load run: full API flow per room, real WebRTC, measured end to end.
    Run(RunArgs),
    /// Raise the room count until loss exceeds 1% or latency p99 exceeds 50 ms;
    /// report the last good count and what limited it.
    Capacity {
        #[command(flatten)]
        run: RunArgs,
        /// First room count.
        #[arg(long, default_value_t = 10)]
        start: usize,
        /// Rooms added per step.
        #[arg(long, default_value_t = 10)]
        step: usize,
        /// Give up above this many rooms.
        #[arg(long, default_value_t = 200)]
        max_rooms: usize,
    },
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
        /// The publisher's and subscribers' WebRTC stack.
        #[arg(long, value_enum, default_value = "webrtc")]
        stack: MediaStack,
    },
    /// What junk costs: datagrams from unknown sources to the media port
    /// during a live call, CPU against a quiet window of the same length.
    Junk {
        /// Junk datagrams to send.
        #[arg(long, default_value_t = 10_000)]
        datagrams: u32,
        /// Each window (quiet, then junk) in seconds.
        #[arg(long, default_value_t = 5)]
        window: u64,
        /// Runs; the medians are reported.
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// The `teleconsult` binary to run.
        #[arg(long)]
        server_bin: Option<PathBuf>,
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
        Command::Run(args) => load_run(args).await,
        Command::Capacity { run, start, step, max_rooms } => capacity(run, start, step, max_rooms).await,
        Command::Forward { subscribers, duration, video_kbps, server_bin, json, stack } => {
            forward(subscribers, Duration::from_secs(duration.clamp(1, 600)), video_kbps, server_bin, json, stack).await
        }
        Command::Junk { datagrams, window, runs, server_bin } => {
            junk(datagrams, Duration::from_secs(window.clamp(1, 120)), runs.clamp(1, 20), server_bin).await
        }
    }
}

async fn junk(datagrams: u32, window: Duration, runs: usize, server_bin: Option<PathBuf>) -> anyhow::Result<()> {
    let binary = match server_bin {
        Some(b) => b,
        None => default_server_bin()?,
    };
    let mut extra_us = Vec::new();
    for run in 1..=runs {
        let r = teleconsult_loadtest::junk_datagrams::run(&binary, datagrams, window).await?;
        println!(
            "run {run}: {} junk datagrams in {:.0} s: server CPU {:.3} s (quiet window {:.3} s), +{:.2} us per datagram; \
             {:.0} counted as dropped; call delivery {:.2}% (quiet {:.2}%)",
            r.datagrams,
            r.window_secs,
            r.junk_cpu_secs,
            r.quiet_cpu_secs,
            r.extra_us_per_datagram(),
            r.dropped,
            r.junk_delivery * 100.0,
            r.quiet_delivery * 100.0
        );
        extra_us.push(r.extra_us_per_datagram());
    }
    extra_us.sort_by(f64::total_cmp);
    let median = extra_us[extra_us.len() / 2];
    println!(
        "median over {runs} runs: +{median:.2} us of server CPU per junk datagram ({:.1} ms per {datagrams})",
        median * f64::from(datagrams) / 1000.0
    );
    Ok(())
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
    stack: MediaStack,
) -> anyhow::Result<()> {
    let subscribers = subscribers.clamp(1, 49);
    // Baseline first, on a quiet machine: the same stream peer to peer.
    let mut direct =
        teleconsult_loadtest::baseline::direct_video_latency(video_kbps, window.min(Duration::from_secs(10)))
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
    publisher_opts.stack = stack;
    let publisher = Participant::connect(&publisher_opts).await.context("publisher")?;
    let mut viewers = Vec::new();
    for i in 0..subscribers {
        let mut o = ParticipantOptions::new(url.clone(), server.mint_token(room, "guest", &format!("Viewer {i}"))?);
        o.send_nothing = true;
        o.stack = stack;
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
    let own0 = scenario::own_cpu_seconds();
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
    let own = scenario::own_cpu_seconds() - own0;
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

    println!(
        "forward benchmark: 1 publisher ({video_kbps} kbit/s video + audio) -> {subscribers} subscribers, {elapsed:.1} s, \
         participants on {stack:?}"
    );
    println!("  packets forwarded        {forwarded:.0} ({:.0}/s)", forwarded / elapsed);
    println!("  server CPU               {cpu:.2} s ({:.1}% of one core)", 100.0 * cpu / elapsed);
    println!("  forwarded per CPU-second {per_cpu_second:.0} ({:.1} us each)", 1e6 / per_cpu_second);
    println!("  load generator CPU       {own:.2} s ({:.1}% of one core)", 100.0 * own / elapsed);
    let ms = |us: u32| f64::from(us) / 1000.0;
    println!(
        "  latency through the SFU  p50 {:.2} ms, p99 {:.2} ms (video, publisher send to subscriber receive)",
        ms(p50),
        ms(p99)
    );
    println!(
        "  latency direct (no SFU)  p50 {:.2} ms, p99 {:.2} ms (same stream, peer to peer)",
        ms(direct_p50),
        ms(direct_p99)
    );
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
            "stack": stack,
            "subscribers": subscribers,
            "video_kbps": video_kbps,
            "window_secs": elapsed,
            "packets_forwarded": forwarded,
            "server_cpu_secs": cpu,
            "forwarded_per_cpu_second": per_cpu_second,
            "loadtest_cpu_secs": own,
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

/// Settings and thresholds of a run, from a preset and the flags.
fn resolve(args: &RunArgs) -> (LoadOptions, Thresholds) {
    let (rooms, participants, kbps, ramp, duration, th) = match args.preset {
        Preset::Class => (
            1,
            13,
            1200,
            10,
            30,
            Thresholds {
                loss_pct: 1.0,
                latency_p99_ms: 100.0,
                join_p95_ms: 5000.0,
                cpu_pct: f64::INFINITY,
                rss_mib: 300.0,
                all_joins: true,
            },
        ),
        Preset::Consult => (
            50,
            2,
            1500,
            20,
            30,
            Thresholds {
                loss_pct: 0.5,
                latency_p99_ms: 20.0,
                join_p95_ms: 1500.0,
                cpu_pct: 50.0,
                rss_mib: 300.0,
                all_joins: true,
            },
        ),
        Preset::Group => (
            5,
            8,
            500,
            10,
            30,
            Thresholds {
                loss_pct: 0.5,
                latency_p99_ms: 50.0,
                join_p95_ms: 3000.0,
                cpu_pct: 100.0,
                rss_mib: 300.0,
                all_joins: true,
            },
        ),
        Preset::Burst => (
            50,
            2,
            500,
            10,
            10,
            Thresholds {
                loss_pct: 1.0,
                latency_p99_ms: f64::INFINITY,
                join_p95_ms: 3000.0,
                cpu_pct: f64::INFINITY,
                rss_mib: 300.0,
                all_joins: true,
            },
        ),
        Preset::Smoke => (
            5,
            2,
            300,
            2,
            10,
            Thresholds {
                loss_pct: 1.0,
                latency_p99_ms: f64::INFINITY,
                join_p95_ms: f64::INFINITY,
                cpu_pct: f64::INFINITY,
                rss_mib: f64::INFINITY,
                all_joins: true,
            },
        ),
    };
    let options = LoadOptions {
        rooms: args.rooms.unwrap_or(rooms).clamp(1, 500),
        participants_per_room: args.participants.unwrap_or(participants).clamp(2, 20),
        video_kbps: args.video_kbps.unwrap_or(kbps).clamp(50, 8000),
        fps: args.fps.unwrap_or(30).clamp(1, 60),
        keyframe_interval_secs: args.keyframe_secs.unwrap_or(3).clamp(1, 60),
        ramp_up_secs: args.ramp_up.unwrap_or(ramp).min(600),
        duration_secs: args.duration.unwrap_or(duration).clamp(1, 600),
        simulcast: args.simulcast || matches!(args.preset, Preset::Class),
        stack: args.stack,
    };
    let th = Thresholds {
        loss_pct: args.max_loss_pct.unwrap_or(th.loss_pct),
        latency_p99_ms: args.max_latency_p99_ms.unwrap_or(th.latency_p99_ms),
        join_p95_ms: args.max_join_p95_ms.unwrap_or(th.join_p95_ms),
        cpu_pct: args.max_cpu_pct.unwrap_or(th.cpu_pct),
        rss_mib: args.max_rss_mib.unwrap_or(th.rss_mib),
        all_joins: th.all_joins,
    };
    (options, th)
}

/// Limits a run must stay within; a breach makes the exit status non-zero.
#[derive(Debug, Clone, Copy)]
struct Thresholds {
    loss_pct: f64,
    latency_p99_ms: f64,
    join_p95_ms: f64,
    cpu_pct: f64,
    rss_mib: f64,
    all_joins: bool,
}

impl Thresholds {
    fn breaches(&self, r: &Report) -> Vec<String> {
        let mut out = Vec::new();
        if self.all_joins && r.joins_succeeded < r.joins_attempted {
            out.push(format!("joins {}/{}", r.joins_succeeded, r.joins_attempted));
        }
        if r.loss * 100.0 > self.loss_pct {
            out.push(format!("loss {:.3}% > {}%", r.loss * 100.0, self.loss_pct));
        }
        if r.sfu_turnaround_ms.p99 > self.latency_p99_ms {
            out.push(format!("SFU-added latency p99 {:.1} ms > {} ms", r.sfu_turnaround_ms.p99, self.latency_p99_ms));
        }
        if r.join_time_ms.p95 > self.join_p95_ms {
            out.push(format!("join p95 {:.0} ms > {} ms", r.join_time_ms.p95, self.join_p95_ms));
        }
        if r.server_cpu_pct > self.cpu_pct {
            out.push(format!("server CPU {:.1}% > {}%", r.server_cpu_pct, self.cpu_pct));
        }
        if r.server_rss_mib > self.rss_mib {
            out.push(format!("server RSS {:.0} MiB > {} MiB", r.server_rss_mib, self.rss_mib));
        }
        out
    }
}

/// The target from flags, or a server started for the run.
async fn target_for(args: &RunArgs) -> anyhow::Result<(Target, Option<ServerProcess>)> {
    if let Some(addr) = args.target {
        let (Some(email), Some(password)) = (args.email.clone(), args.password.clone()) else {
            anyhow::bail!("--target needs --email and --password (or LOADTEST_EMAIL and LOADTEST_PASSWORD)");
        };
        return Ok((Target { http: addr, email, password, nodes: args.nodes.clone() }, None));
    }
    let binary = match &args.server_bin {
        Some(b) => b.clone(),
        None => default_server_bin()?,
    };
    let server = ServerProcess::start(&binary, &["--max-participants", "20", "--ws-max-per-address", "1000"]).await?;
    let target = Target {
        http: server.http_addr(),
        email: teleconsult_loadtest::server_process::BENCH_EMAIL.into(),
        password: teleconsult_loadtest::server_process::BENCH_PASSWORD.into(),
        nodes: Vec::new(),
    };
    Ok((target, Some(server)))
}

async fn load_run(args: RunArgs) -> anyhow::Result<()> {
    let (options, thresholds) = resolve(&args);
    let (target, server) = target_for(&args).await?;
    // Every run is bounded: set-up, the window, and teardown.
    let limit = Duration::from_secs(options.ramp_up_secs + options.duration_secs + 180);
    let report = tokio::time::timeout(limit, scenario::run(&target, &options))
        .await
        .context("the run exceeded its time bound")??;
    if let Some(server) = server {
        server.stop()?;
    }
    println!("{}", report.table());
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)?;
    }
    let breaches = thresholds.breaches(&report);
    if breaches.is_empty() {
        println!("within thresholds");
        Ok(())
    } else {
        anyhow::bail!("thresholds breached: {}", breaches.join("; "))
    }
}

/// A capacity step holds with at most this much loss...
const MAX_LOSS: f64 = 0.01;
/// ...and at most this end-to-end p99 latency.
const MAX_P99_MS: f64 = 50.0;

/// Cores of this machine (the server and the generator share them).
fn machine_cores() -> f64 {
    std::thread::available_parallelism().map(|n| n.get() as f64).unwrap_or(1.0)
}

async fn capacity(args: RunArgs, start: usize, step: usize, max_rooms: usize) -> anyhow::Result<()> {
    let (base, _) = resolve(&args);
    let mut rooms = start.max(1);
    let mut last_good: Option<Report> = None;
    let mut first_bad: Option<Report> = None;
    while rooms <= max_rooms {
        let options = LoadOptions { rooms, ..base.clone() };
        let (target, server) = target_for(&args).await?;
        let limit = Duration::from_secs(options.ramp_up_secs + options.duration_secs + 180);
        let report = tokio::time::timeout(limit, scenario::run(&target, &options))
            .await
            .context("a step exceeded its time bound")??;
        if let Some(server) = server {
            server.stop()?;
        }
        eprintln!("{}", report.table());
        if !report.step_failures(MAX_LOSS, MAX_P99_MS).is_empty() {
            first_bad = Some(report);
            break;
        }
        last_good = Some(report);
        rooms += step.max(1);
    }
    match (&last_good, &first_bad) {
        (Some(good), bad) => {
            println!(
                "capacity: {} rooms x {} participants ({} kbit/s video) within loss <= 1% and p99 <= 50 ms",
                good.options.rooms, good.options.participants_per_room, good.options.video_kbps
            );
            println!(
                "  at that load: server CPU {:.0}% of one core, load generator CPU {:.0}%, p99 {:.1} ms, loss {:.3}%",
                good.server_cpu_pct,
                good.loadtest_cpu_pct,
                good.latency_ms.p99,
                good.loss * 100.0
            );
            if let Some(bad) = bad {
                println!(
                    "  next step ({} rooms) failed: {}",
                    bad.options.rooms,
                    bad.step_failures(MAX_LOSS, MAX_P99_MS).join("; ")
                );
                println!("  at that step: {}", bad.cpu_note(machine_cores()));
            } else {
                println!("  reached --max-rooms without a failure");
            }
        }
        (None, Some(bad)) => println!(
            "capacity: below {} rooms: {}; {}",
            bad.options.rooms,
            bad.step_failures(MAX_LOSS, MAX_P99_MS).join("; "),
            bad.cpu_note(machine_cores())
        ),
        (None, None) => println!("capacity: no step ran"),
    }
    if let Some(path) = &args.json {
        std::fs::write(
            path,
            serde_json::to_string_pretty(&serde_json::json!({"last_good": last_good, "first_bad": first_bad}))?,
        )?;
    }
    Ok(())
}
