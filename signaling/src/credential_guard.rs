//! Closes seats whose credential was withdrawn somewhere this node did not
//! see: an account disabled from the admin command line, a link revoked or
//! denied through another node. Joins are checked when they happen (see
//! `ws_session`); this catches the seats already taken, within seconds.

use std::sync::Arc;
use std::time::Duration;

use teleconsult_protocol::ErrorCode;

use crate::app::App;
use crate::security_log::SecurityEvent;
use crate::ws_session::withdraw_seats;

/// How often held seats are checked.
pub const CHECK_EVERY: Duration = Duration::from_secs(2);

/// Checks every held seat's credential once; returns how many seats were closed.
pub async fn check_once(app: &App) -> usize {
    let subjects = app.rooms.subjects();
    let clinicians: Vec<&str> = subjects.iter().filter_map(|s| s.strip_prefix("clinician:")).collect();
    let links: Vec<&str> = subjects.iter().filter_map(|s| s.strip_prefix("link:")).collect();
    let mut closed = 0;
    match app.store.inactive_clinicians(&clinicians).await {
        Ok(inactive) => {
            for id in inactive {
                let subject = format!("clinician:{id}");
                let n = withdraw_seats(app, &subject, ErrorCode::AccountDisabled, "this account is disabled").await;
                if n > 0 {
                    app.security.record(
                        app.clock.now(),
                        SecurityEvent::DisabledAccountUsed,
                        None,
                        serde_json::json!({ "subject": subject, "seats_closed": n }),
                    );
                }
                closed += n;
            }
        }
        Err(e) => tracing::warn!(error = %e, "credential check failed; retried"),
    }
    match app.store.withdrawn_links(&links).await {
        Ok(withdrawn) => {
            for id in withdrawn {
                closed +=
                    withdraw_seats(app, &format!("link:{id}"), ErrorCode::LinkRevoked, "this link has been withdrawn")
                        .await;
            }
        }
        Err(e) => tracing::warn!(error = %e, "link check failed; retried"),
    }
    closed
}

/// Runs [`check_once`] every [`CHECK_EVERY`] until shutdown.
pub fn spawn(app: Arc<App>) {
    tokio::spawn(async move {
        let mut shutdown = app.shutdown.clone();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(CHECK_EVERY) => {}
                _ = shutdown.changed() => break,
            }
            check_once(&app).await;
        }
    });
}
