//! `/metrics` under a real call: it parses as Prometheus text, and its
//! figures move as the call does. Access is token-protected when configured.

mod common;

use std::time::Duration;

use common::{config, create_staff, create_visit, eventually, http, login, server_with, wait_event, ws_url};
use prometheus_parse::{Scrape, Value};
use teleconsult_loadtest::{Participant, ParticipantOptions};
use teleconsult_protocol::{ClientMessage, ServerMessage};
use teleconsult_signaling::store::StaffRole;

const TOKEN: &str = "metrics-token-for-tests";

async fn scrape(server: &teleconsult_signaling::server::RunningServer) -> Scrape {
    let bearer = format!("Bearer {TOKEN}");
    let r = http(server, "GET", "/metrics", &[("Authorization", &bearer)], None).await;
    assert_eq!(r.status, 200);
    Scrape::parse(r.body.lines().map(|l| Ok(l.to_string()))).expect("valid Prometheus text format")
}

/// Sum of a metric's samples matching every `label=value` given.
fn value(s: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    s.samples
        .iter()
        .filter(|x| x.metric == name && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .map(|x| match &x.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
            Value::Histogram(h) => h.iter().map(|c| c.count).fold(0.0, f64::max),
            Value::Summary(_) => 0.0,
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_follow_a_real_call() {
    let mut cfg = config();
    cfg.metrics_token = Some(TOKEN.into());
    let server = server_with(cfg).await;
    let url = ws_url(&server);

    // The token is required.
    assert_eq!(http(&server, "GET", "/metrics", &[], None).await.status, 401);
    assert_eq!(http(&server, "GET", "/metrics", &[("Authorization", "Bearer wrong")], None).await.status, 401);

    let before = scrape(&server).await;
    assert_eq!(value(&before, "teleconsult_rooms_active", &[]), 0.0);
    for name in ["process_cpu_seconds_total", "process_resident_memory_bytes", "teleconsult_build_info"] {
        assert!(before.samples.iter().any(|s| s.metric == name), "{name} present");
    }

    create_staff(&server, "onco@h.fr", StaffRole::Clinician).await;
    let s = login(&server, "onco@h.fr").await;
    let bearer = s.bearer();
    let auth = [("Authorization", bearer.as_str())];
    let (visit, link) = create_visit(&server, &s, 0).await;
    let jt = http(&server, "POST", &format!("/api/visits/{visit}/join-token"), &auth, None).await.json();
    let clinician =
        Participant::connect(&ParticipantOptions::new(url.clone(), jt["join_token"].as_str().unwrap())).await.unwrap();
    let px = http(&server, "POST", &format!("/api/join/{link}"), &[], None).await.json();
    let opts = ParticipantOptions::new(url.clone(), px["join_token"].as_str().unwrap());
    let (mut patient, mut events) = Participant::join(&opts).await.unwrap();

    let waiting = scrape(&server).await;
    assert_eq!(value(&waiting, "teleconsult_rooms_active", &[]), 1.0);
    assert_eq!(value(&waiting, "teleconsult_waiting_room_participants", &[]), 1.0);
    assert_eq!(value(&waiting, "teleconsult_participants", &[("role", "clinician")]), 1.0);
    assert_eq!(value(&waiting, "teleconsult_participants", &[("role", "patient")]), 0.0);

    tokio::time::sleep(Duration::from_millis(300)).await;
    clinician
        .signaling
        .request(ClientMessage::Admit { id: None, participant_id: patient.participant_id.clone() })
        .await
        .unwrap();
    wait_event(&mut events, Duration::from_secs(5), |m| matches!(m, ServerMessage::Admitted { .. }))
        .await
        .expect("admitted");
    patient.start_media(&opts, events).await.unwrap();
    assert!(
        eventually(Duration::from_secs(15), || async {
            clinician.packets_from(&patient.participant_id) > 50 && patient.packets_from(&clinician.participant_id) > 50
        })
        .await
    );

    let during = scrape(&server).await;
    assert_eq!(value(&during, "teleconsult_waiting_room_participants", &[]), 0.0);
    assert_eq!(value(&during, "teleconsult_participants", &[("role", "patient")]), 1.0);
    assert_eq!(value(&during, "teleconsult_wait_seconds", &[]), 1.0, "the wait was recorded on admit");
    assert_eq!(value(&during, "teleconsult_join_seconds", &[]), 1.0, "the patient's join time was recorded");
    assert!(value(&during, "teleconsult_ws_messages_total", &[("type", "admit")]) >= 1.0);
    // Worker counters are published every 250 ms: wait for them rather than race them.
    assert!(
        eventually(Duration::from_secs(3), || async {
            value(&scrape(&server).await, "teleconsult_sfu_packets_forwarded_total", &[]) > 100.0
        })
        .await,
        "packets forwarded are counted"
    );
    let forwarded = value(&scrape(&server).await, "teleconsult_sfu_packets_forwarded_total", &[]);
    // Counters refresh every 250 ms; the call goes on.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let later = scrape(&server).await;
    assert!(
        value(&later, "teleconsult_sfu_packets_forwarded_total", &[]) > forwarded + 100.0,
        "packets forwarded grow"
    );
    assert!(value(&later, "teleconsult_sfu_batch_turnaround_seconds", &[]) > 0.0);
    assert!(
        value(&later, "teleconsult_sfu_rtt_seconds", &[]) > 0.0
            || value(&later, "teleconsult_sfu_loss_ratio", &[]) > 0.0,
        "stats reports observed"
    );

    // Ending the visit: the room goes, the visit counts as completed.
    assert_eq!(http(&server, "POST", &format!("/api/visits/{visit}/end"), &auth, None).await.status, 200);
    assert!(
        eventually(Duration::from_secs(3), || async {
            let s = scrape(&server).await;
            value(&s, "teleconsult_rooms_active", &[]) == 0.0
                && value(&s, "teleconsult_visits_finished_total", &[("status", "completed")]) == 1.0
        })
        .await,
        "rooms down, visit completed"
    );
    clinician.leave().await;
    patient.shutdown().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_separate_metrics_listener_needs_no_token() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut cfg = config();
    cfg.metrics_token = Some(TOKEN.into());
    cfg.metrics_addr = Some(format!("127.0.0.1:{port}").parse().unwrap());
    let server = server_with(cfg).await;
    let r = common::http_to(format!("127.0.0.1:{port}").parse().unwrap(), "GET", "/metrics", &[], None).await;
    assert_eq!(r.status, 200);
    assert!(r.body.contains("teleconsult_rooms_active"));
    assert_eq!(
        http(&server, "GET", "/metrics", &[], None).await.status,
        401,
        "the main listener still wants the token"
    );
    server.shutdown().await;
}
