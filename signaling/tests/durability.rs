//! Visits and links survive a SIGKILL: the real binary, a real SQLite file.

mod common;

use std::io::Write;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{HttpResponse, http_to, temp_db};
use serde_json::json;

const SECRET: &str = "durability-test-secret-0123456789abcdef";
const BIN: &str = env!("CARGO_BIN_EXE_teleconsult");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

async fn spawn_server(db: &std::path::Path, port: u16) -> Child {
    let child = Command::new(BIN)
        .args(["serve", "--http-addr", &format!("127.0.0.1:{port}"), "--media-port", "0", "--media-ips", "127.0.0.1"])
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
    let r = http_to(addr, "POST", "/api/auth/login", &[], Some(r#"{"email":"onco@h.fr","password":"a long enough password"}"#)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    format!("Bearer {}", r.json()["access_token"].as_str().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn visits_and_links_survive_sigkill() {
    let db = temp_db();
    // The admin CLI reads the password from standard input, never argv.
    let mut create = Command::new(BIN)
        .args(["admin", "create-clinician", "--email", "onco@h.fr", "--name", "Dr Onco", "--specialty", "oncologist"])
        .arg("--db")
        .arg(&db)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    create.stdin.take().unwrap().write_all(b"a long enough password\n").unwrap();
    assert!(create.wait().unwrap().success());

    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut server = spawn_server(&db, port).await;
    let bearer = login(addr).await;
    let mut created = Vec::new();
    for i in 0..20 {
        let start = teleconsult_signaling::timefmt::rfc3339(teleconsult_signaling::join_token::unix_now() as i64 + 60 * i);
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

    let mut server = spawn_server(&db, port).await;
    let bearer = login(addr).await;
    for (visit, token) in &created {
        let r: HttpResponse = http_to(addr, "GET", &format!("/api/visits/{visit}"), &[("Authorization", &bearer)], None).await;
        assert_eq!(r.status, 200, "visit {visit} survived: {}", r.body);
        let x = http_to(addr, "POST", &format!("/api/join/{token}"), &[], None).await;
        assert_eq!(x.status, 200, "link of {visit} still works: {}", x.body);
        assert_eq!(x.json()["visit"]["id"], visit.as_str());
    }
    let day = teleconsult_signaling::timefmt::rfc3339(teleconsult_signaling::join_token::unix_now() as i64)[..10].to_string();
    let list = http_to(addr, "GET", &format!("/api/visits?date={day}"), &[("Authorization", &bearer)], None).await;
    let n = list.json()["visits"].as_array().map(|a| a.len()).unwrap_or(0);
    assert!(n >= 1 && n <= 20, "today's list is intact ({n})");
    server.kill().unwrap();
    let _ = server.wait();
}
