//! An independent WebRTC stack (aiortc, in Python) written from
//! docs/protocol.md alone: as a receive-only participant that does not bundle
//! (one transport per media section, reading each section's candidates), it
//! receives every track of two publishers.
//!
//! The interpreter is `TELECONSULT_AIORTC_PYTHON` (the test command makes a
//! virtualenv with aiortc), or `python3`.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::{eventually, server, token, ws_url};
use teleconsult_protocol::Role;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_bundling_receive_only_client_gets_every_track() {
    let server = server().await;
    let room = "room-aiortc";
    let a = common::media_participant(&server, room, Role::Clinician, "A").await;
    let b = common::media_participant(&server, room, Role::Patient, "B").await;
    assert!(eventually(Duration::from_secs(15), || async { a.packets_from(&b.participant_id) > 0 }).await);

    let python = std::env::var("TELECONSULT_AIORTC_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../loadtest/aiortc/receive_only.py");
    let output = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(&python)
            .arg(script)
            .args([
                "--ws",
                &ws_url(&server),
                "--token",
                &token(&server, room, Role::Guest, "Listener"),
                "--seconds",
                "6",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output(),
    )
    .await
    .expect("the aiortc client finishes")
    .expect("the aiortc client runs (is aiortc installed?)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let report: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap_or("{}")).unwrap_or_default();
    let stderr = String::from_utf8_lossy(&output.stderr);
    let mut start = stderr.len().saturating_sub(2000);
    while !stderr.is_char_boundary(start) {
        start += 1;
    }
    let tail = &stderr[start..];
    assert!(output.status.success(), "aiortc client failed: {stdout} {tail}");
    let tracks = report["tracks"].as_array().cloned().unwrap_or_default();
    println!("aiortc received: {tracks:?}");
    assert_eq!(tracks.len(), 4, "two publishers' audio and video: {report}");
    for t in &tracks {
        assert!(t["packets"].as_u64().unwrap_or(0) > 50, "every track carries media: {report}");
    }
    assert_eq!(report["errors"], serde_json::json!([]), "no protocol errors: {report}");
    server.shutdown().await;
}
