//! Readiness (`GET /readyz`): whether this node should be sent new work.
//!
//! Liveness (`/healthz`) answers "is the process serving HTTP?" and stays 200
//! while the database is down, so an orchestrator does not restart a healthy
//! process for an outage it cannot fix. Readiness answers "may a load
//! balancer send this node new visitors?": 200 only when every check
//! passes, 503 otherwise, with the checks in the body either way:
//!
//! ```json
//! {"status":"ready","checks":{"database":"ok","lifecycle":"running"}}
//! ```

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::app::App;

/// How long the database may take to answer a readiness ping. Orchestrators
/// time probes out after a second or a few; a slow answer is a failed check.
const DATABASE_PING_TIMEOUT: Duration = Duration::from_secs(2);

/// Where the process is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Lifecycle {
    /// Serving normally.
    Running,
    /// In a cluster: moving this node's calls to other nodes before exit.
    Draining,
    /// Shutting down (SIGTERM or Ctrl-C received).
    Stopping,
}

impl Lifecycle {
    fn as_str(self) -> &'static str {
        match self {
            Lifecycle::Running => "running",
            Lifecycle::Draining => "draining",
            Lifecycle::Stopping => "stopping",
        }
    }
}

/// The outcome of every readiness check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readiness {
    /// The store answered a ping in time.
    pub database: bool,
    /// Redis answered a ping in time (`None`: no cluster).
    pub redis: Option<bool>,
    /// Where the process is in its life.
    pub lifecycle: Lifecycle,
}

impl Readiness {
    /// Whether the node should receive new work.
    pub fn is_ready(&self) -> bool {
        self.database && self.redis != Some(false) && self.lifecycle == Lifecycle::Running
    }

    /// The JSON body of `/readyz`.
    pub fn to_json(&self) -> serde_json::Value {
        let mut checks = serde_json::json!({
            "database": if self.database { "ok" } else { "unreachable" },
            "lifecycle": self.lifecycle.as_str(),
        });
        if let Some(redis) = self.redis {
            checks["redis"] = serde_json::json!(if redis { "ok" } else { "unreachable" });
        }
        serde_json::json!({
            "status": if self.is_ready() { "ready" } else { "not_ready" },
            "checks": checks,
        })
    }
}

/// Runs every check against the live application.
/// In a cluster, Redis must answer too, and a draining node is not ready.
pub async fn assess(app: &App) -> Readiness {
    let database = matches!(tokio::time::timeout(DATABASE_PING_TIMEOUT, app.store.ping()).await, Ok(Ok(())));
    let redis = match &app.cluster {
        Some(cluster) => Some(matches!(tokio::time::timeout(DATABASE_PING_TIMEOUT, cluster.ping()).await, Ok(true))),
        None => None,
    };
    let lifecycle = if *app.shutdown.borrow() {
        Lifecycle::Stopping
    } else if app.cluster.as_ref().is_some_and(|c| c.is_draining()) {
        Lifecycle::Draining
    } else {
        Lifecycle::Running
    };
    Readiness { database, redis, lifecycle }
}

/// `GET /readyz`: 200 when ready, 503 when not; the checks in the body.
pub async fn readyz(State(app): State<Arc<App>>) -> Response {
    let readiness = assess(&app).await;
    let status = if readiness.is_ready() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, axum::Json(readiness.to_json())).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_every_check_passes() {
        let running = Readiness { database: true, redis: None, lifecycle: Lifecycle::Running };
        assert!(running.is_ready());
        assert_eq!(running.to_json()["status"], "ready");

        let no_database = Readiness { database: false, ..running.clone() };
        assert!(!no_database.is_ready());
        assert_eq!(no_database.to_json()["checks"]["database"], "unreachable");

        let no_redis = Readiness { redis: Some(false), ..running.clone() };
        assert!(!no_redis.is_ready());
        assert_eq!(no_redis.to_json()["checks"]["redis"], "unreachable");
        assert!(running.to_json()["checks"].get("redis").is_none());

        let draining = Readiness { lifecycle: Lifecycle::Draining, ..running.clone() };
        assert!(!draining.is_ready());

        let stopping = Readiness { lifecycle: Lifecycle::Stopping, ..running };
        assert!(!stopping.is_ready());
        assert_eq!(stopping.to_json()["status"], "not_ready");
        assert_eq!(stopping.to_json()["checks"]["lifecycle"], "stopping");
    }
}
