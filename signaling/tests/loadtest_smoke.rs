//! The CI smoke load: 5 rooms x 2 for 10 s through the full public flow
//! (sign-in, booking, link exchange, waiting room, admit, media), against a
//! server started here. Every join must succeed and loss stay under 1%.

mod common;

use common::{create_staff, server};
use teleconsult_loadtest::scenario::{LoadOptions, Target, run};
use teleconsult_signaling::store::StaffRole;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_rooms_of_two_for_ten_seconds() {
    let server = server().await;
    create_staff(&server, "load@h.fr", StaffRole::Clinician).await;
    let target = Target {
        http: server.http_addr,
        email: "load@h.fr".into(),
        password: "a long enough password".into(),
        nodes: Vec::new(),
    };
    let options = LoadOptions {
        rooms: 5,
        participants_per_room: 2,
        video_kbps: 300,
        fps: 30,
        keyframe_interval_secs: 3,
        ramp_up_secs: 2,
        duration_secs: 10,
    };
    let report = run(&target, &options).await.expect("the run completes");
    println!("{}", report.table());
    assert_eq!(report.joins_succeeded, 10, "every join succeeds: {:?}", report.join_errors);
    assert!(report.packets_expected > 5 * 2 * 10 * 50, "enough traffic to judge ({})", report.packets_expected);
    assert!(report.loss < 0.01, "loss {:.3}%", report.loss * 100.0);
    assert!(report.join_time_ms.count == 10 && report.latency_ms.count > 1000);
    server.shutdown().await;
}
