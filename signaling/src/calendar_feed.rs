//! Each clinician's teleconsultations as an iCalendar (`.ics`) feed behind a
//! revocable token, so visits show up in the calendar they already use.
//! Events carry no patient names: a hospital does not control where a
//! subscribed calendar ends up.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::api_extract::Staff;
use crate::app::App;
use crate::http_error::ApiError;
use crate::staff_auth::token_hash;
use crate::store::{StaffRole, Visit, VisitStatus};

/// `POST /api/calendar-token`: a new feed URL (any previous one stops working).
pub async fn issue(State(app): State<Arc<App>>, staff: Staff) -> Result<Json<serde_json::Value>, ApiError> {
    staff.require(&[StaffRole::Clinician, StaffRole::Admin])?;
    let token = crate::secret::random_token();
    app.store.set_calendar_token(&staff.0.id, Some(&token_hash(&token)), app.clock.now()).await?;
    Ok(Json(json!({ "url": format!("{}/calendar/{token}.ics", app.public_url) })))
}

/// `DELETE /api/calendar-token`: the feed stops working.
pub async fn revoke(State(app): State<Arc<App>>, staff: Staff) -> Result<StatusCode, ApiError> {
    staff.require(&[StaffRole::Clinician, StaffRole::Admin])?;
    app.store.set_calendar_token(&staff.0.id, None, app.clock.now()).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /calendar/{token}.ics`
pub async fn feed(State(app): State<Arc<App>>, Path(file): Path<String>) -> Result<Response, ApiError> {
    let token = file.strip_suffix(".ics").ok_or_else(ApiError::not_found)?;
    let clinician_id = app.store.calendar_owner(&token_hash(token)).await?.ok_or_else(ApiError::not_found)?;
    let now = app.clock.now();
    let visits = app.store.visits_of_clinician(&clinician_id, now - 30 * 86_400, now + 366 * 86_400).await?;
    let body = render(&app.public_url, &visits, now);
    Ok(([(header::CONTENT_TYPE, "text/calendar; charset=utf-8"), (header::CACHE_CONTROL, "no-store")], body)
        .into_response())
}

fn ics_time(unix: i64) -> String {
    let t = crate::timefmt::rfc3339(unix); // 2027-01-18T09:30:00Z
    t.replace(['-', ':'], "")
}

/// Folds a content line at 75 octets (RFC 5545 §3.1).
fn fold(line: &str) -> String {
    let mut out = String::new();
    let mut count = 0;
    for c in line.chars() {
        if count + c.len_utf8() > 75 {
            out.push_str("\r\n ");
            count = 1;
        }
        out.push(c);
        count += c.len_utf8();
    }
    out.push_str("\r\n");
    out
}

/// The calendar text.
pub fn render(public_url: &str, visits: &[Visit], now: i64) -> String {
    let mut out = String::new();
    for line in [
        "BEGIN:VCALENDAR",
        "VERSION:2.0",
        "PRODID:-//Teleconsult//Teleconsultations//EN",
        "CALSCALE:GREGORIAN",
        "X-WR-CALNAME:Teleconsultations",
    ] {
        out.push_str(&fold(line));
    }
    for v in visits {
        let status = match v.status {
            VisitStatus::Cancelled => "CANCELLED",
            _ => "CONFIRMED",
        };
        for line in [
            "BEGIN:VEVENT".to_string(),
            format!("UID:{}@teleconsult", v.id),
            format!("DTSTAMP:{}", ics_time(now)),
            format!("DTSTART:{}", ics_time(v.scheduled_start)),
            format!("DTEND:{}", ics_time(v.scheduled_end())),
            format!("SUMMARY:Teleconsultation ({})", v.kind.as_str().replace('_', "-")),
            format!("DESCRIPTION:Visit {} - open the clinician console: {public_url}/", v.id),
            format!("URL:{public_url}/"),
            format!("STATUS:{status}"),
            "END:VEVENT".to_string(),
        ] {
            out.push_str(&fold(&line));
        }
    }
    out.push_str(&fold("END:VCALENDAR"));
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn folds_long_lines() {
        let long = "DESCRIPTION:".to_string() + &"é".repeat(60);
        let folded = super::fold(&long);
        assert!(folded.split("\r\n").all(|l| l.len() <= 75));
        assert_eq!(folded.replace("\r\n ", "").trim_end(), long);
    }
}
