//! The weekly figures the hospital reports: visits per day by status, the
//! teleconsultation share once the total is supplied, and the CSV export.

mod common;

use common::{create_staff, create_visit, http, login, server_at};
use serde_json::json;
use teleconsult_signaling::store::StaffRole;

const NOW: i64 = 1_800_000_000; // 2027-01-15T08:00:00Z

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weekly_figures_share_and_csv() {
    let (server, _clock) = server_at(NOW).await;
    create_staff(&server, "onco@h.fr", StaffRole::Clinician).await;
    create_staff(&server, "ops@h.fr", StaffRole::Ops).await;
    let clinician = login(&server, "onco@h.fr").await;
    let ops = login(&server, "ops@h.fr").await;
    let cb = clinician.bearer();
    let ob = ops.bearer();

    let (done, _) = create_visit(&server, &clinician, 600).await;
    let (cancelled, _) = create_visit(&server, &clinician, 1200).await;
    let (_open, _) = create_visit(&server, &clinician, 1800).await;
    assert_eq!(
        http(&server, "POST", &format!("/api/visits/{done}/end"), &[("Authorization", &cb)], None).await.status,
        200
    );
    assert_eq!(
        http(&server, "POST", &format!("/api/visits/{cancelled}/cancel"), &[("Authorization", &cb)], None).await.status,
        200
    );

    let start = "2027-01-15";
    // Clinicians do not see operations.
    assert_eq!(
        http(&server, "GET", &format!("/api/ops/weekly?start={start}"), &[("Authorization", &cb)], None).await.status,
        403
    );

    let w =
        http(&server, "GET", &format!("/api/ops/weekly?start={start}"), &[("Authorization", &ob)], None).await.json();
    assert_eq!(w["days"].as_array().unwrap().len(), 7);
    assert_eq!(
        w["days"][0],
        json!({"date": "2027-01-15", "completed": 1, "no_show": 0, "cancelled": 1, "scheduled": 1, "classes": 0, "class_attendances": 0})
    );
    assert_eq!(w["teleconsultations"], 1);
    assert!(w["teleconsultation_share"].is_null(), "no share without the hospital's total");
    assert!(w["median_wait_secs"].is_null(), "nobody was admitted");
    assert!(!w.to_string().contains("Jeanne"), "no names in the figures");

    let put = http(
        &server,
        "PUT",
        "/api/ops/consultation-totals",
        &[("Authorization", &ob)],
        Some(r#"{"week_start":"2027-01-15","total":4}"#),
    )
    .await;
    assert_eq!(put.status, 204);
    let w =
        http(&server, "GET", &format!("/api/ops/weekly?start={start}"), &[("Authorization", &ob)], None).await.json();
    assert_eq!(w["all_consultations"], 4);
    assert_eq!(w["teleconsultation_share"], 0.25);
    let bad = http(
        &server,
        "PUT",
        "/api/ops/consultation-totals",
        &[("Authorization", &ob)],
        Some(r#"{"week_start":"soon","total":4}"#),
    )
    .await;
    assert_eq!(bad.code().as_deref(), Some("validation_failed"));

    let csv =
        http(&server, "GET", &format!("/api/ops/weekly.csv?start={start}"), &[("Authorization", &ob)], None).await;
    assert_eq!(csv.status, 200);
    assert!(csv.header("content-type").unwrap().starts_with("text/csv"));
    let lines: Vec<&str> = csv.body.lines().collect();
    assert_eq!(lines[0], "date,completed,no_show,cancelled,scheduled,classes,class_attendances");
    assert_eq!(lines[1], "2027-01-15,1,0,1,1,0,0");
    assert_eq!(lines.len(), 9, "header, seven days, totals");
    assert!(lines[8].contains("share 0.25"));
    server.shutdown().await;
}
