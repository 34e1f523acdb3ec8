//! Bulk import of scheduled teleconsultations from the hospital's
//! information system, as CSV. Every row is validated and reported; nothing
//! is imported unless every row is good, or the caller asks for a partial
//! import. Shared by `POST /api/visits/import` and `teleconsult admin import-visits`.
//!
//! Columns (by header name, any order): `clinician_email`, `patient_name`,
//! `start` (RFC 3339), `duration_minutes`, and optionally `hospital_id`,
//! `contact`, `kind` (`follow_up`, `first`, `group`).

use std::collections::HashMap;

use serde::Serialize;

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::api_extract::{ApiQuery, Staff};
use crate::http_error::ApiError;
use crate::server::App;
use crate::store::{AuditEvent, LinkRole, NewVisit, Patient, StaffRole, Store, VisitKind};
use crate::timefmt::parse_rfc3339;

/// What an import needs besides the file: where to store, the time, and
/// how links are made. Built from the app (API) or the settings (CLI).
#[derive(Debug, Clone)]
pub struct ImportContext<'a> {
    /// The store.
    pub store: &'a Store,
    /// Now (Unix seconds).
    pub now: i64,
    /// Base of patient links.
    pub public_url: String,
    /// (opens before the start, closes after the end), seconds.
    pub link_margins: (i64, i64),
    /// Who imports, for the audit trail.
    pub actor: String,
}

/// Largest accepted file.
pub const MAX_IMPORT_BYTES: usize = 16 << 20;

/// One problem with one row.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RowError {
    /// Line in the file (the header is line 1).
    pub line: usize,
    /// The column, or `row`.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

/// The outcome of an import.
#[derive(Debug, Clone, Serialize)]
pub struct ImportReport {
    /// Data rows read.
    pub rows: usize,
    /// Visits created.
    pub imported: usize,
    /// Whether a partial import was asked for.
    pub partial: bool,
    /// Every problem, by line.
    pub errors: Vec<RowError>,
    /// The created visits and their patient links (shown once).
    pub visits: Vec<serde_json::Value>,
}

/// Why the file as a whole was refused.
#[derive(Debug, thiserror::Error, PartialEq)]
#[non_exhaustive]
pub enum ImportError {
    /// Not UTF-8 (the byte offset of the first bad byte).
    #[error("the file is not UTF-8 (first bad byte at offset {0}); export it as UTF-8")]
    NotUtf8(usize),
    /// No header, or no data rows.
    #[error("the file has no rows")]
    Empty,
    /// A required column is missing from the header.
    #[error("the header lacks the column {0}")]
    MissingColumn(&'static str),
    /// Larger than [`MAX_IMPORT_BYTES`].
    #[error("the file is larger than 16 MiB")]
    TooLarge,
}

/// Splits CSV text into records (RFC 4180: quotes, doubled quotes, CRLF).
pub fn parse_csv(text: &str) -> Vec<(usize, Vec<String>)> {
    let mut records = Vec::new();
    let (mut field, mut record) = (String::new(), Vec::new());
    let (mut quoted, mut line, mut record_line) = (false, 1usize, 1usize);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (false, '"') if field.is_empty() => quoted = true,
            (false, ',') => record.push(std::mem::take(&mut field)),
            (false, '\r') if chars.peek() == Some(&'\n') => {}
            (false, '\n') => {
                record.push(std::mem::take(&mut field));
                if !(record.len() == 1 && record[0].is_empty()) {
                    records.push((record_line, std::mem::take(&mut record)));
                }
                record.clear();
                line += 1;
                record_line = line;
            }
            (_, '\n') => {
                field.push('\n');
                line += 1;
            }
            (_, c) => field.push(c),
        }
    }
    if !field.is_empty() || !record.is_empty() {
        record.push(field);
        records.push((record_line, record));
    }
    records
}

/// Validates and (unless refused) imports.
pub async fn import(ctx: &ImportContext<'_>, bytes: &[u8], partial: bool) -> Result<ImportReport, ImportError> {
    let store = ctx.store;
    if bytes.len() > MAX_IMPORT_BYTES {
        return Err(ImportError::TooLarge);
    }
    let text = std::str::from_utf8(bytes).map_err(|e| ImportError::NotUtf8(e.valid_up_to()))?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let records = parse_csv(text);
    let Some(((_, header), rows)) = records.split_first() else { return Err(ImportError::Empty) };
    if rows.is_empty() {
        return Err(ImportError::Empty);
    }
    let column = |name: &str| header.iter().position(|h| h.trim().eq_ignore_ascii_case(name));
    let need = |name: &'static str| column(name).ok_or(ImportError::MissingColumn(name));
    let (c_email, c_name, c_start, c_duration) =
        (need("clinician_email")?, need("patient_name")?, need("start")?, need("duration_minutes")?);
    let (c_hospital, c_contact, c_kind) = (column("hospital_id"), column("contact"), column("kind"));

    let now = ctx.now;
    let mut errors = Vec::new();
    let mut good: Vec<(usize, Patient, NewVisit)> = Vec::new();
    let mut clinicians: HashMap<String, Option<String>> = HashMap::new();
    let mut booked: HashMap<String, Vec<(i64, i64, usize)>> = HashMap::new();
    for (line, row) in rows {
        let line = *line;
        let get = |i: usize| row.get(i).map(|s| s.trim()).unwrap_or("");
        let opt = |i: Option<usize>| i.map(&get).filter(|s| !s.is_empty()).map(str::to_owned);
        let mut bad = |field: &str, message: String| errors.push(RowError { line, field: field.into(), message });
        if row.len() != header.len() {
            bad("row", format!("has {} fields, the header has {}", row.len(), header.len()));
            continue;
        }
        let email = get(c_email).to_lowercase();
        if !clinicians.contains_key(&email) {
            let id = store
                .clinician_by_email(&email)
                .await
                .ok()
                .flatten()
                .filter(|c| c.active && c.role != StaffRole::Ops)
                .map(|c| c.id);
            clinicians.insert(email.clone(), id);
        }
        let Some(clinician_id) = clinicians.get(&email).cloned().flatten() else {
            bad("clinician_email", format!("no active clinician {email:?}"));
            continue;
        };
        let name = get(c_name);
        if name.is_empty() || name.chars().count() > 200 || name.chars().any(char::is_control) {
            bad("patient_name", "must have 1 to 200 characters".into());
            continue;
        }
        let Some(start) = parse_rfc3339(get(c_start)) else {
            bad(
                "start",
                format!(
                    "{:?} is not an RFC 3339 time (e.g. 2027-01-18T09:30:00+01:00)",
                    get(c_start).chars().take(40).collect::<String>()
                ),
            );
            continue;
        };
        if start < now - 86_400 || start > now + 2 * 366 * 86_400 {
            bad("start", "must be between yesterday and two years ahead".into());
            continue;
        }
        let Ok(duration) = get(c_duration).parse::<i64>() else {
            bad("duration_minutes", "must be a whole number of minutes".into());
            continue;
        };
        if !(5..=240).contains(&duration) {
            bad("duration_minutes", "must be between 5 and 240".into());
            continue;
        }
        let kind = match opt(c_kind) {
            None => VisitKind::FollowUp,
            Some(k) => match k.parse::<VisitKind>() {
                Ok(k) => k,
                Err(()) => {
                    bad("kind", "must be follow_up, first or group".into());
                    continue;
                }
            },
        };
        let (hospital_id, contact) = (opt(c_hospital), opt(c_contact));
        if hospital_id.as_ref().is_some_and(|h| h.chars().count() > 64)
            || contact.as_ref().is_some_and(|c| c.chars().count() > 200)
        {
            bad("row", "hospital_id (64) or contact (200) is too long".into());
            continue;
        }
        // No overlap with the clinician's calendar, nor with earlier rows.
        let end = start + duration * 60;
        if !booked.contains_key(&clinician_id) {
            let busy =
                store.busy_intervals(&clinician_id, now - 86_400, now + 3 * 366 * 86_400).await.unwrap_or_default();
            booked.insert(clinician_id.clone(), busy.into_iter().map(|(s, e)| (s, e, 0)).collect());
        }
        let calendar = booked.get_mut(&clinician_id).expect("inserted above");
        if let Some((_, _, other)) = calendar.iter().find(|(s, e, _)| start < *e && end > *s) {
            let with = if *other == 0 { "an existing visit".to_string() } else { format!("line {other}") };
            bad("start", format!("overlaps {with} of the same clinician"));
            continue;
        }
        calendar.push((start, end, line));
        let patient = Patient {
            id: crate::secret::random_id("pt"),
            display_name: name.to_string(),
            hospital_id,
            contact,
            created_at: now,
        };
        let visit = NewVisit {
            id: crate::secret::random_id("v"),
            patient_id: patient.id.clone(),
            clinician_id,
            scheduled_start: start,
            duration_minutes: duration,
            kind,
        };
        good.push((line, patient, visit));
    }

    let mut report = ImportReport { rows: rows.len(), imported: 0, partial, errors, visits: Vec::new() };
    if !report.errors.is_empty() && !partial {
        return Ok(report);
    }
    let mut batch = Vec::new();
    for (line, patient, visit) in good {
        let window = (visit.scheduled_start, visit.scheduled_start + visit.duration_minutes * 60);
        let (link, token) =
            crate::visits_api::make_link(&visit.id, window, ctx.link_margins, LinkRole::Patient, None, now);
        let audit = AuditEvent {
            at: now,
            actor: ctx.actor.clone(),
            action: "created".into(),
            visit_id: Some(visit.id.clone()),
            detail: Some(format!("import line {line}")),
        };
        report.visits.push(serde_json::json!({ "line": line, "visit_id": visit.id, "patient_link": format!("{}/join/{token}", ctx.public_url) }));
        batch.push((patient, visit, link, audit));
    }
    match store.create_visits(&batch, now).await {
        Ok(()) => report.imported = batch.len(),
        Err(e) => {
            report.visits.clear();
            report.errors.push(RowError { line: 0, field: "file".into(), message: format!("nothing imported: {e}") });
        }
    }
    Ok(report)
}

/// `POST /api/visits/import` query.
#[derive(Debug, Deserialize)]
pub struct ImportQuery {
    /// Import the good rows even if others are bad.
    #[serde(default)]
    pub partial: bool,
}

/// `POST /api/visits/import` (admins): the CSV is the body.
pub async fn handler(
    State(app): State<Arc<App>>,
    staff: Staff,
    ApiQuery(q): ApiQuery<ImportQuery>,
    body: Result<axum::body::Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    staff.require(&[StaffRole::Admin])?;
    let body = body.map_err(|_| {
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", "the file is larger than 16 MiB")
    })?;
    let ctx = ImportContext {
        store: &app.store,
        now: app.clock.now(),
        public_url: app.public_url.clone(),
        link_margins: (app.config.link_opens_before, app.config.link_closes_after),
        actor: format!("clinician:{}", staff.0.id),
    };
    let report = import(&ctx, &body, q.partial).await.map_err(|e| {
        let code = match e {
            ImportError::NotUtf8(_) => "not_utf8",
            ImportError::Empty => "empty_file",
            ImportError::MissingColumn(_) => "missing_column",
            ImportError::TooLarge => "payload_too_large",
        };
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, e.to_string())
    })?;
    let status = if !report.errors.is_empty() && !report.partial {
        StatusCode::UNPROCESSABLE_ENTITY
    } else if report.imported > 0 {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(serde_json::json!({ "import": report }))).into_response())
}

#[cfg(test)]
mod tests {
    use super::parse_csv;

    #[test]
    fn csv_quotes_and_line_numbers() {
        let text = "a,b,c\r\n1,\"x, y\",\"say \"\"hi\"\"\"\n\n2,\"multi\nline\",z\n3,,";
        let r = parse_csv(text);
        assert_eq!(r[0], (1, vec!["a".into(), "b".into(), "c".into()]));
        assert_eq!(r[1], (2, vec!["1".into(), "x, y".into(), "say \"hi\"".into()]));
        assert_eq!(r[2], (4, vec!["2".into(), "multi\nline".into(), "z".into()]));
        assert_eq!(r[3], (6, vec!["3".into(), "".into(), "".into()]));
    }
}
