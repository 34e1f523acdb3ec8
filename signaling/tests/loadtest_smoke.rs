//! The CI smoke load: 5 rooms x 2 for 10 s through the full public flow
//! (sign-in, booking, link exchange, waiting room, admit, media), against a
//! server started here. Every join must succeed and loss stay under 1%.
//! Each scenario runs with both of the load generator's WebRTC stacks:
//! webrtc-rs and str0m.

mod common;

use common::{create_staff, server};
use teleconsult_loadtest::MediaStack;
use teleconsult_loadtest::scenario::{LoadOptions, Report, Target, run};
use teleconsult_signaling::store::StaffRole;

/// Runs `options` against a fresh server with one clinician, prints the
/// table and returns the report.
async fn smoke_run(options: LoadOptions) -> Report {
    let server = server().await;
    create_staff(&server, "load@h.fr", StaffRole::Clinician).await;
    let target = Target {
        http: server.http_addr,
        email: "load@h.fr".into(),
        password: "a long enough password".into(),
        nodes: Vec::new(),
    };
    let report = run(&target, &options).await.expect("the run completes");
    println!("{}", report.table());
    server.shutdown().await;
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_rooms_of_two_for_ten_seconds() {
    five_rooms_of_two(MediaStack::Webrtc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_rooms_of_two_for_ten_seconds_on_str0m() {
    five_rooms_of_two(MediaStack::Str0m).await;
}

async fn five_rooms_of_two(stack: MediaStack) {
    let options = LoadOptions {
        rooms: 5,
        participants_per_room: 2,
        video_kbps: 300,
        fps: 30,
        keyframe_interval_secs: 3,
        ramp_up_secs: 2,
        duration_secs: 10,
        simulcast: false,
        stack,
    };
    let report = smoke_run(options).await;
    assert_eq!(report.joins_succeeded, 10, "every join succeeds: {:?}", report.join_errors);
    assert!(report.packets_expected > 5 * 2 * 10 * 50, "enough traffic to judge ({})", report.packets_expected);
    assert!(report.loss < 0.01, "loss {:.3}%", report.loss * 100.0);
    assert!(report.join_time_ms.count == 10 && report.latency_ms.count > 1000);
}

/// A small class with every camera in three simulcast layers (webrtc-rs
/// publishers marking their layers as browsers do): every subscriber gets
/// every other's video through the SFU's layer choice, without loss on its
/// renumbered sequence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_class_of_four_on_simulcast() {
    class_of_four(MediaStack::Webrtc).await;
}

/// The same class with str0m publishers, whose layers str0m itself marks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_class_of_four_on_simulcast_on_str0m() {
    class_of_four(MediaStack::Str0m).await;
}

async fn class_of_four(stack: MediaStack) {
    let options = LoadOptions {
        rooms: 1,
        participants_per_room: 4,
        video_kbps: 400,
        fps: 15,
        keyframe_interval_secs: 2,
        ramp_up_secs: 0,
        duration_secs: 8,
        simulcast: true,
        stack,
    };
    let report = smoke_run(options).await;
    assert_eq!(report.joins_succeeded, 4, "every join succeeds: {:?}", report.join_errors);
    assert_eq!(report.subscribers.len(), 4);
    for s in &report.subscribers {
        assert_eq!(s.videos_received, 3, "each gets the three others' videos: {s:?}");
        assert!(s.loss < 0.02, "{s:?}");
    }
    assert!(report.loss < 0.01, "loss {:.3}%", report.loss * 100.0);
}
