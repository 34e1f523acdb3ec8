//! deploy/observability is checked against the real thing: Prometheus's own
//! `promtool` validates the scrape config, the alert rules and every
//! dashboard query, and every metric they name must exist in a live
//! `/metrics`. The probes an orchestrator uses, `/healthz` and `/readyz`,
//! answer as docs/operations.md says, on both databases.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{both_databases, config, http, server, server_with};

fn observability_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/observability")
}

fn promtool(args: &[&str]) -> (bool, String) {
    let out = Command::new("promtool")
        .args(args)
        .output()
        .expect("promtool is installed (scripts/test.sh installs Debian's prometheus)");
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

/// Metric families named in a PromQL expression (ours and the process ones),
/// without histogram suffixes.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut word = String::new();
    for c in expr.chars().chain(std::iter::once(' ')) {
        if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
            word.push(c);
            continue;
        }
        if word.starts_with("teleconsult_") || word.starts_with("process_") {
            let family = ["_bucket", "_count", "_sum"]
                .iter()
                .fold(word.clone(), |w, s| w.strip_suffix(s).map(str::to_owned).unwrap_or(w));
            names.insert(family);
        }
        word.clear();
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configs_are_valid_and_name_only_real_metrics() {
    let dir = observability_dir();
    let (ok, out) = promtool(&["check", "config", dir.join("prometheus.yml").to_str().unwrap()]);
    assert!(ok, "prometheus.yml: {out}");
    let (ok, out) = promtool(&["check", "rules", dir.join("alerts.yml").to_str().unwrap()]);
    assert!(ok, "alerts.yml: {out}");

    // Every alert has a severity and a summary.
    let alerts = std::fs::read_to_string(dir.join("alerts.yml")).unwrap();
    assert_eq!(alerts.matches("- alert:").count(), alerts.matches("severity:").count());
    assert_eq!(alerts.matches("- alert:").count(), alerts.matches("summary:").count());
    for wanted in [
        "TeleconsultHighLoss",
        "TeleconsultPatientsWaitingLong",
        "TeleconsultSfuUnreachable",
        "TeleconsultErrorRateSpike",
        "TeleconsultMediaWorkerRestarted",
    ] {
        assert!(alerts.contains(wanted), "{wanted} rule exists");
    }

    // Dashboard queries: promtool checks each as a recording rule.
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("grafana-dashboard.json")).unwrap())
            .expect("dashboard is JSON");
    let exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| t["expr"].as_str().map(str::to_owned))
        .collect();
    assert!(exprs.len() >= 10, "the dashboard has its panels");
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, e) in exprs.iter().enumerate() {
        rules.push_str(&format!(
            "      - record: dashboard:query{i}\n        expr: {}\n",
            serde_json::to_string(e).unwrap()
        ));
    }
    let tmp = std::path::PathBuf::from(common::temp_db()).with_extension("rules.yml");
    std::fs::write(&tmp, rules).unwrap();
    let (ok, out) = promtool(&["check", "rules", tmp.to_str().unwrap()]);
    assert!(ok, "dashboard queries: {out}");
    let _ = std::fs::remove_file(&tmp);

    // Every metric they name exists in /metrics.
    let server = server().await;
    let text = http(&server, "GET", "/metrics", &[], None).await.body;
    let families: BTreeSet<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect();
    let mut named = BTreeSet::new();
    for e in exprs.iter().map(String::as_str).chain(std::iter::once(alerts.as_str())) {
        named.extend(metric_names(e));
    }
    assert!(named.len() >= 12, "the configs name our metrics ({named:?})");
    for name in &named {
        assert!(families.contains(name), "{name} is named in deploy/observability but missing from /metrics");
    }
    server.shutdown().await;
}

#[test]
fn finds_metric_names_in_promql() {
    let names = metric_names(
        "histogram_quantile(0.99, sum by (le) (rate(teleconsult_wait_seconds_bucket[5m]))) > process_cpu_seconds_total",
    );
    assert_eq!(names.into_iter().collect::<Vec<_>>(), ["process_cpu_seconds_total", "teleconsult_wait_seconds"]);
}

/// Readiness follows the database; liveness does not (an orchestrator must
/// not restart a process for a database outage it cannot fix).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_the_database_and_liveness_does_not() {
    for (backend, db) in both_databases().await {
        let server = server_with(teleconsult_signaling::config::Config { db, ..config() }).await;
        let ready = http(&server, "GET", "/readyz", &[], None).await;
        assert_eq!(ready.status, 200, "{backend}: {}", ready.body);
        assert_eq!(
            ready.json(),
            serde_json::json!({"status": "ready", "checks": {"database": "ok", "lifecycle": "running"}}),
            "{backend}"
        );

        server.app.store.close().await;
        let not_ready = http(&server, "GET", "/readyz", &[], None).await;
        assert_eq!(not_ready.status, 503, "{backend}: {}", not_ready.body);
        assert_eq!(not_ready.json()["status"], "not_ready", "{backend}");
        assert_eq!(not_ready.json()["checks"]["database"], "unreachable", "{backend}");
        let live = http(&server, "GET", "/healthz", &[], None).await;
        assert_eq!((live.status, live.json()["status"].as_str()), (200, Some("ok")), "{backend}: liveness stays up");
        server.shutdown().await;
    }
}
