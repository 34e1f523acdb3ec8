//! Three nodes of a cluster, as real processes on 127.0.0.1, sharing the
//! machine's Redis and a fresh PostgreSQL database: a call whose two
//! WebSockets land on two nodes while the room lives on the third; that
//! node killed (SIGKILL) or drained (SIGTERM); and a race for one room.

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use teleconsult_loadtest::{Participant, ParticipantOptions};
use teleconsult_protocol::{ClientMessage, Role, ServerMessage};
use teleconsult_signaling::join_token::{TokenKeys, unix_now};

const SECRET: &str = "cluster-test-secret-0123456789abcdef-0123";
const BIN: &str = env!("CARGO_BIN_EXE_teleconsult");

fn redis_url() -> String {
    std::env::var("TELECONSULT_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

struct Node {
    id: String,
    addr: SocketAddr,
    child: Child,
}

impl Node {
    fn ws(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Three nodes `n0`, `n1`, `n2` with a key prefix and database of their own.
/// With equal load, placement picks the first node by id: a new room lands
/// on `n0`.
async fn three_nodes() -> Vec<Node> {
    three_nodes_with(&common::temp_postgres().await, &["--scheduler-tick-ms", "500"]).await
}

/// [`three_nodes`] on database `db`, with `extra` serve flags.
async fn three_nodes_with(db: &str, extra: &[&str]) -> Vec<Node> {
    common::init_logs();
    let prefix = format!("tc-test-{}", rand::random::<u32>());
    let mut nodes = Vec::new();
    for i in 0..3 {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let id = format!("n{i}");
        let child = Command::new(BIN)
            .args(["serve", "--http-addr", &format!("127.0.0.1:{port}"), "--media-port", "0"])
            .args(["--media-ips", "127.0.0.1", "--node-id", &id, "--redis-prefix", &prefix])
            .args(["--drain-timeout-secs", "8"])
            .arg("--redis")
            .arg(redis_url())
            .args(extra)
            .arg("--db")
            .arg(db)
            .env("TELECONSULT_TOKEN_SECRET", SECRET)
            .env("TELECONSULT_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("node starts");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let node = Node { id, addr, child };
        let ready = common::eventually(Duration::from_secs(30), || async {
            let r = teleconsult_loadtest::http_client::request(addr, "GET", "/readyz", &[], None).await;
            r.status == 200
        })
        .await;
        assert!(ready, "node {} ready", node.id);
        nodes.push(node);
    }
    // Every node has seen the others' first heartbeat.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    nodes
}

fn token(room: &str, role: Role, subject: &str, admitted: bool) -> String {
    let keys = TokenKeys::from_secret("k1", SECRET.as_bytes()).unwrap();
    keys.mint_join(room, role, subject, subject, unix_now(), 3600, admitted).unwrap()
}

/// How many rooms a node holds, from its `/metrics`.
async fn rooms_on(node: &Node) -> f64 {
    let r = teleconsult_loadtest::http_client::request(node.addr, "GET", "/metrics", &[], None).await;
    teleconsult_loadtest::server_process::sum_metric(&r.body, "teleconsult_rooms_active")
}

/// A clinician (through `n1`) and a patient (through `n2`) in a call held
/// on `n0`; the patient waits and is admitted across nodes.
async fn call_across_nodes(nodes: &[Node], room: &str) -> (Participant, Participant) {
    let clinician_token = token(room, Role::Clinician, "test-clinician-1", true);
    let patient_token = token(room, Role::Patient, "test-patient-1", false);
    let clinician = Participant::connect(&ParticipantOptions::new(nodes[1].ws(), clinician_token))
        .await
        .expect("clinician joins through n1");
    let (mut patient, mut patient_events) =
        Participant::join(&ParticipantOptions::new(nodes[2].ws(), patient_token.clone())).await.expect("patient joins");
    assert_eq!(rooms_on(&nodes[0]).await, 1.0, "the room lives on n0");
    assert_eq!(rooms_on(&nodes[1]).await + rooms_on(&nodes[2]).await, 0.0, "and nowhere else");
    // The clinician, on n1, admits the patient, who waits through n2.
    let reply = clinician
        .signaling
        .request(ClientMessage::Admit { id: None, participant_id: patient.participant_id.clone() })
        .await
        .expect("admit");
    assert!(matches!(reply, ServerMessage::Ack { .. }), "{reply:?}");
    let admitted = common::wait_event(&mut patient_events, Duration::from_secs(5), |m| {
        matches!(m, ServerMessage::Admitted { .. })
    })
    .await;
    assert!(admitted.is_some(), "the patient is admitted across nodes");
    patient
        .start_media(&ParticipantOptions::new(nodes[2].ws(), patient_token), patient_events)
        .await
        .expect("patient media");
    assert!(media_flows(&clinician, &patient, Duration::from_secs(10)).await, "media flows both ways");
    (clinician, patient)
}

/// Whether each side receives new packets from the other within `limit`.
async fn media_flows(a: &Participant, b: &Participant, limit: Duration) -> bool {
    let (a_before, b_before) = (a.packets_from(&b.participant_id), b.packets_from(&a.participant_id));
    common::eventually(limit, || async {
        a.packets_from(&b.participant_id) > a_before + 20 && b.packets_from(&a.participant_id) > b_before + 20
    })
    .await
}

/// Waits for the `move` message, then joins again through the same node
/// with the same token, as the web client does. Returns the new participant.
async fn follow_move(old: &mut Participant, ws: String, token: String) -> Participant {
    let moved = common::eventually(Duration::from_secs(10), || async {
        old.events().iter().any(|m| matches!(m, ServerMessage::Move { .. }))
    })
    .await;
    assert!(moved, "told to move");
    old.shutdown().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match Participant::connect(&ParticipantOptions::new(ws.clone(), token.clone())).await {
            Ok(p) => return p,
            Err(e) if Instant::now() < deadline => {
                eprintln!("rejoin failed ({e}); again");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("could not rejoin: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_the_rooms_node_costs_seconds_not_the_call() {
    let mut nodes = three_nodes().await;
    let room = format!("visit-kill-{}", rand::random::<u32>());
    let (mut clinician, mut patient) = call_across_nodes(&nodes, &room).await;

    // SIGKILL the room's node: no drain, no goodbye.
    let killed_at = Instant::now();
    nodes[0].child.kill().unwrap();
    nodes[0].child.wait().unwrap();

    let clinician_token = token(&room, Role::Clinician, "test-clinician-1", true);
    // The patient's new token is *not* admitted: the admission must come from the cluster.
    let patient_token = token(&room, Role::Patient, "test-patient-1", false);
    let (clinician, patient) = tokio::join!(
        follow_move(&mut clinician, nodes[1].ws(), clinician_token),
        follow_move(&mut patient, nodes[2].ws(), patient_token),
    );
    assert!(media_flows(&clinician, &patient, Duration::from_secs(10)).await, "media flows again");
    let recovered = killed_at.elapsed();
    eprintln!("node lost: media back both ways {:.2} s after SIGKILL", recovered.as_secs_f64());
    assert!(recovered < Duration::from_secs(10), "media back within 10 s ({recovered:?})");
    // The room now lives on one of the two nodes left.
    assert_eq!(rooms_on(&nodes[1]).await + rooms_on(&nodes[2]).await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_the_rooms_node_moves_the_call_and_exits_in_time() {
    let mut nodes = three_nodes().await;
    let room = format!("visit-drain-{}", rand::random::<u32>());
    let (mut clinician, mut patient) = call_across_nodes(&nodes, &room).await;

    let drained_at = Instant::now();
    let pid = nodes[0].child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());

    let clinician_token = token(&room, Role::Clinician, "test-clinician-1", true);
    let patient_token = token(&room, Role::Patient, "test-patient-1", false);
    let (clinician, patient) = tokio::join!(
        follow_move(&mut clinician, nodes[1].ws(), clinician_token),
        follow_move(&mut patient, nodes[2].ws(), patient_token),
    );
    assert!(media_flows(&clinician, &patient, Duration::from_secs(5)).await, "media flows again");
    let recovered = drained_at.elapsed();
    eprintln!("drain: media back both ways {:.2} s after SIGTERM", recovered.as_secs_f64());
    assert!(recovered < Duration::from_secs(5), "media back within 5 s ({recovered:?})");

    // The drained node exits by itself, before its 8 s deadline.
    let exited = common::eventually(Duration::from_secs(8), || {
        let done = nodes[0].child.try_wait().ok().flatten().is_some();
        async move { done }
    })
    .await;
    assert!(exited, "the drained node exits before its deadline");
    eprintln!("drain: node exited {:.2} s after SIGTERM", drained_at.elapsed().as_secs_f64());
    assert_eq!(rooms_on(&nodes[1]).await + rooms_on(&nodes[2]).await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_racing_for_a_new_room_agree_on_one() {
    let nodes = three_nodes().await;
    for round in 0..4 {
        let room = format!("visit-race-{round}-{}", rand::random::<u32>());
        // Six clinicians join the same new room at once, two through each node.
        let joins = (0..6).map(|i| {
            let url = nodes[i % 3].ws();
            let token = token(&room, Role::Clinician, &format!("test-racer-{i}"), true);
            async move {
                let (client, events) = teleconsult_loadtest::SignalingClient::connect(&url).await.expect("connects");
                client.hello().await.expect("hello");
                let joined = client.request(ClientMessage::Join { id: None, token }).await.expect("joins");
                let ServerMessage::Joined { participants, .. } = joined else { panic!("{joined:?}") };
                (client, events, participants.len())
            }
        });
        let joined = futures_util::future::join_all(joins).await;
        // One room: everyone comes to see the five others (those there
        // before them in `joined`, the rest as they arrive).
        for (client, mut events, mut seen) in joined {
            let deadline = Instant::now() + Duration::from_secs(5);
            while seen < 5 && Instant::now() < deadline {
                let next = common::wait_event(&mut events, Duration::from_millis(200), |m| {
                    matches!(m, ServerMessage::ParticipantJoined { .. })
                })
                .await;
                seen += usize::from(next.is_some());
            }
            assert_eq!(seen, 5, "round {round}: everyone is in one room");
            client.close();
        }
        // And one room more in the whole cluster each round (seats outlive
        // their closed sockets for the resume grace): never one per node.
        let mut held = 0.0;
        for node in &nodes {
            held += rooms_on(node).await;
        }
        assert_eq!(held, (round + 1) as f64, "round {round}: one room on one node");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bookings_and_reminders_from_three_nodes_at_once() {
    let db = common::temp_postgres().await;
    let mut create = Command::new(BIN)
        .args(["admin", "create-clinician", "--email", "onco@h.fr", "--name", "Dr Onco", "--specialty", "oncologist"])
        .arg("--db")
        .arg(&db)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        create.stdin.take().unwrap().write_all(b"a long enough password\n").unwrap();
    }
    assert!(create.wait().unwrap().success());
    let gateway = common::webhook_receiver(0).await;
    let nodes =
        three_nodes_with(&db, &["--reminder-webhook", gateway.url.as_str(), "--scheduler-tick-ms", "200"]).await;
    let mut bearers = Vec::new();
    for node in &nodes {
        let r = common::http_to(
            node.addr,
            "POST",
            "/api/auth/login",
            &[],
            Some(r#"{"email":"onco@h.fr","password":"a long enough password"}"#),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.body);
        bearers.push(format!("Bearer {}", r.json()["access_token"].as_str().unwrap()));
    }
    // Twelve slots, each booked through all three nodes at once.
    let base = unix_now() as i64 + 3600;
    let attempts = (0..36).map(|i| {
        let (addr, bearer) = (nodes[i % 3].addr, bearers[i % 3].clone());
        let start = teleconsult_signaling::timefmt::rfc3339(base + 1800 * (i as i64 / 3));
        async move {
            let body = serde_json::json!({"patient": {"display_name": format!("Patient {i}")}, "scheduled_start": start, "duration_minutes": 20});
            common::http_to(addr, "POST", "/api/visits", &[("Authorization", &bearer)], Some(&body.to_string())).await.status
        }
    });
    let statuses = futures_util::future::join_all(attempts).await;
    let created = statuses.iter().filter(|s| **s == 201).count();
    let refused = statuses.iter().filter(|s| **s == 409).count();
    assert_eq!((created, refused), (12, 24), "one booking per slot, the others refused: {statuses:?}");

    // Every visit's reminder is delivered once, though all three nodes run the scheduler loop.
    let all_in =
        common::eventually(Duration::from_secs(20), || async { gateway.received.lock().unwrap().len() >= 12 }).await;
    assert!(all_in, "every reminder delivered");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let keys = gateway.received.lock().unwrap().clone();
    let distinct: std::collections::BTreeSet<&String> = keys.iter().collect();
    assert_eq!(distinct.len(), 12, "one reminder per visit: {keys:?}");
    assert_eq!(keys.len(), 12, "and each delivered once: {keys:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_sign_ins_spread_over_the_nodes_are_counted_together() {
    let nodes = three_nodes().await;
    let attempt = |addr: SocketAddr| async move {
        common::http_to(
            addr,
            "POST",
            "/api/auth/login",
            &[],
            Some(r#"{"email":"someone@h.fr","password":"a wrong guess"}"#),
        )
        .await
    };
    // The account's three free failures, one through each node.
    for node in &nodes {
        assert_eq!(attempt(node.addr).await.status, 401);
    }
    // A fourth, through any node, waits: each node alone saw one failure.
    let r = attempt(nodes[1].addr).await;
    assert_eq!(r.status, 429, "{}", r.body);
    assert_eq!(r.json()["error"]["code"], "too_many_attempts");
}
