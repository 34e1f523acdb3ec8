//! Visits and links survive a SIGKILL: the real binary, on a real SQLite
//! file and a real PostgreSQL database.

mod common;

use std::io::Write;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{HttpResponse, http_to, temp_db, temp_postgres};
use serde_json::json;

const SECRET: &str = "durability-test-secret-0123456789abcdef";
const BIN: &str = env!("CARGO_BIN_EXE_teleconsult");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[allow(clippy::zombie_processes)] // the caller owns the child and kills it
async fn spawn_server_with(db: &str, port: u16, extra: &[&str]) -> Child {
    let child = Command::new(BIN)
        .args(["serve", "--http-addr", &format!("127.0.0.1:{port}"), "--media-port", "0", "--media-ips", "127.0.0.1"])
        .args(extra)
        .arg("--db")
        .arg(db)
        .env("TELECONSULT_TOKEN_SECRET", SECRET)
        .env("TELECONSULT_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("server starts");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return child;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("server did not listen");
}

async fn login(addr: SocketAddr) -> String {
    let r = http_to(
        addr,
        "POST",
        "/api/auth/login",
        &[],
        Some(r#"{"email":"onco@h.fr","password":"a long enough password"}"#),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    format!("Bearer {}", r.json()["access_token"].as_str().unwrap())
}

fn create_clinician(db: &str) {
    // The admin CLI reads the password from standard input, never argv.
    let mut create = Command::new(BIN)
        .args(["admin", "create-clinician", "--email", "onco@h.fr", "--name", "Dr Onco", "--specialty", "oncologist"])
        .arg("--db")
        .arg(db)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    create.stdin.take().unwrap().write_all(b"a long enough password\n").unwrap();
    assert!(create.wait().unwrap().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn visits_and_links_survive_sigkill_on_sqlite() {
    visits_and_links_survive_sigkill(temp_db()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn visits_and_links_survive_sigkill_on_postgres() {
    visits_and_links_survive_sigkill(temp_postgres().await).await;
}

async fn visits_and_links_survive_sigkill(db: String) {
    create_clinician(&db);

    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    // Links open ten hours ahead, so every visit's link works at once.
    let opens = ["--link-opens-before-mins", "600"];
    let mut server = spawn_server_with(&db, port, &opens).await;
    let bearer = login(addr).await;
    let mut created = Vec::new();
    for i in 0..20 {
        let start =
            teleconsult_signaling::timefmt::rfc3339(teleconsult_signaling::join_token::unix_now() as i64 + 20 * 60 * i);
        let body = json!({"patient": {"display_name": format!("Patient {i}")}, "scheduled_start": start, "duration_minutes": 15});
        let r = http_to(addr, "POST", "/api/visits", &[("Authorization", &bearer)], Some(&body.to_string())).await;
        assert_eq!(r.status, 201, "{}", r.body);
        let v = r.json();
        let token = v["patient_link"]["url"].as_str().unwrap().rsplit('/').next().unwrap().to_string();
        created.push((v["visit"]["id"].as_str().unwrap().to_string(), token));
    }

    // SIGKILL: no shutdown, no flush, no goodbye.
    server.kill().unwrap();
    server.wait().unwrap();

    let mut server = spawn_server_with(&db, port, &opens).await;
    let bearer = login(addr).await;
    for (visit, token) in &created {
        let r: HttpResponse =
            http_to(addr, "GET", &format!("/api/visits/{visit}"), &[("Authorization", &bearer)], None).await;
        assert_eq!(r.status, 200, "visit {visit} survived: {}", r.body);
        let x = http_to(addr, "POST", &format!("/api/join/{token}"), &[], None).await;
        assert_eq!(x.status, 200, "link of {visit} still works: {}", x.body);
        assert_eq!(x.json()["visit"]["id"], visit.as_str());
    }
    let day =
        teleconsult_signaling::timefmt::rfc3339(teleconsult_signaling::join_token::unix_now() as i64)[..10].to_string();
    let list = http_to(addr, "GET", &format!("/api/visits?date={day}"), &[("Authorization", &bearer)], None).await;
    let n = list.json()["visits"].as_array().map(|a| a.len()).unwrap_or(0);
    assert!((1..=20).contains(&n), "today's list is intact ({n})");
    server.kill().unwrap();
    let _ = server.wait();
}

/// SIGKILL in the middle of a batch of bookings and reminder deliveries:
/// after a restart no acknowledged visit is lost, none is duplicated, and
/// every reminder reaches the gateway; a delivery cut between the gateway's
/// answer and the outbox update may arrive twice, with the same idempotency
/// key, so the gateway can drop it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bookings_and_reminders_survive_sigkill_on_sqlite() {
    bookings_and_reminders_survive_sigkill(temp_db()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bookings_and_reminders_survive_sigkill_on_postgres() {
    bookings_and_reminders_survive_sigkill(temp_postgres().await).await;
}

async fn bookings_and_reminders_survive_sigkill(db: String) {
    create_clinician(&db);
    let gateway = common::webhook_receiver(0).await;
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    // A short delivery time limit: deliveries the kill cut are retried when
    // their claims' leases end (the limit plus 20 s).
    let extra =
        ["--reminder-webhook", gateway.url.as_str(), "--scheduler-tick-ms", "100", "--reminder-timeout-secs", "2"];
    let book = |bearer: String, i: i64| async move {
        let start = teleconsult_signaling::timefmt::rfc3339(
            teleconsult_signaling::join_token::unix_now() as i64 + 3600 + 600 * i,
        );
        let body = json!({"patient": {"display_name": format!("Patient {i}")}, "scheduled_start": start, "duration_minutes": 10});
        let r = http_to(addr, "POST", "/api/visits", &[("Authorization", &bearer)], Some(&body.to_string())).await;
        (r.status == 201).then(|| r.json()["visit"]["id"].as_str().unwrap().to_string())
    };

    let mut server = spawn_server_with(&db, port, &extra).await;
    let bearer = login(addr).await;
    let mut acknowledged = Vec::new();
    for i in 0..15 {
        if let Some(id) = book(bearer.clone(), i).await {
            acknowledged.push(id);
        }
    }
    // Kill while the worker is delivering and a booking is in flight.
    let in_flight = tokio::spawn(book(bearer.clone(), 15));
    tokio::time::sleep(Duration::from_millis(30)).await;
    server.kill().unwrap();
    server.wait().unwrap();
    if let Ok(Some(id)) = in_flight.await {
        acknowledged.push(id);
    }

    let mut server = spawn_server_with(&db, port, &extra).await;
    let bearer = login(addr).await;
    for i in 16..25 {
        if let Some(id) = book(bearer.clone(), i).await {
            acknowledged.push(id);
        }
    }
    assert!(acknowledged.len() >= 24, "bookings succeed around the crash ({})", acknowledged.len());

    // Every acknowledged visit exists, once.
    let mut listed = std::collections::BTreeSet::new();
    let mut starts = std::collections::BTreeMap::new();
    for d in 0..2 {
        let day =
            teleconsult_signaling::timefmt::rfc3339(teleconsult_signaling::join_token::unix_now() as i64 + d * 86_400)
                [..10]
                .to_string();
        let list =
            http_to(addr, "GET", &format!("/api/visits?date={day}"), &[("Authorization", &bearer)], None).await.json();
        for v in list["visits"].as_array().unwrap() {
            assert!(listed.insert(v["id"].as_str().unwrap().to_string()), "no visit listed twice");
            let start = teleconsult_signaling::timefmt::parse_rfc3339(v["scheduled_start"].as_str().unwrap()).unwrap();
            starts.insert(v["id"].as_str().unwrap().to_string(), start);
        }
    }
    for id in &acknowledged {
        assert!(listed.contains(id), "acknowledged visit {id} survived");
    }
    assert!(listed.len() <= acknowledged.len() + 1, "at most the one booking cut by the kill is unacknowledged");

    // Every visit's reminder arrives; duplicates only from deliveries cut by the kill.
    // Reminder keys carry the start they speak of.
    let expected: std::collections::BTreeSet<String> =
        listed.iter().map(|v| format!("reminder:{v}:24h:{}", starts[v])).collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    loop {
        let got: std::collections::BTreeSet<String> = gateway.received.lock().unwrap().iter().cloned().collect();
        if expected.is_subset(&got) || tokio::time::Instant::now() > deadline {
            assert_eq!(got, expected, "exactly the expected reminder keys arrived");
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Repeats only for deliveries in flight at the kill: at most
    // `--reminder-concurrency` (8) of them, each with its idempotency key,
    // by which the gateway drops the repeat.
    let received = gateway.received.lock().unwrap().len();
    assert!(received <= expected.len() + 8, "{} deliveries for {} keys", received, expected.len());
    server.kill().unwrap();
    let _ = server.wait();
}
