//! Bulk import of scheduled teleconsultations from the hospital's
//! information system, as CSV. Every row is checked and reported; nothing
//! is imported unless every row is good, or the caller asks for a partial
//! import. Shared by `POST /api/visits/import` and `teleconsult admin
//! import-visits`.
//!
//! Rows reach the calendar through the one booking path
//! ([`crate::visits::place`]) inside one write transaction that holds every
//! named clinician's calendar lock. Each row is placed under a savepoint,
//! so the database's own overlap rule decides, and a refused row is undone
//! alone (partial import) or the whole file is (the default).
//!
//! Columns (by header name, any order): `clinician_email`, `patient_name`,
//! `start` (RFC 3339), `duration_minutes`, and optionally `hospital_id`,
//! `contact`, `kind` (`follow_up`, `first`, `group`).

use std::collections::HashMap;

use axum::http::StatusCode;
use serde::Serialize;
use serde_json::json;

use crate::http_error::ApiError;
use crate::idempotency::{Answer, Idempotency};
use crate::secret::Sealer;
use crate::store::{AuditEvent, NewVisit, Patient, StaffRole, Store, StoreError, VisitKind, with_retries};
use crate::timefmt::parse_rfc3339;

/// What an import needs besides the file: where to store, the time, how
/// links are made, and who imports. Built from the app (API) or the
/// settings (CLI).
#[derive(Debug, Clone)]
pub struct Importer<'a> {
    /// The store.
    pub store: &'a Store,
    /// Now (Unix seconds).
    pub now: i64,
    /// Base of patient links.
    pub public_url: &'a str,
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

impl ImportReport {
    /// 422 when rows were refused and nothing imported (not partial), 201
    /// when visits were created, 200 otherwise.
    pub fn status(&self) -> StatusCode {
        if !self.errors.is_empty() && !self.partial {
            StatusCode::UNPROCESSABLE_ENTITY
        } else if self.imported > 0 {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        }
    }
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

impl From<ImportError> for ApiError {
    fn from(e: ImportError) -> Self {
        let code = match e {
            ImportError::NotUtf8(_) => "not_utf8",
            ImportError::Empty => "empty_file",
            ImportError::MissingColumn(_) => "missing_column",
            ImportError::TooLarge => "payload_too_large",
        };
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, e.to_string())
    }
}

/// A row that passed the checks, ready to place.
struct GoodRow {
    line: usize,
    patient: Patient,
    visit: NewVisit,
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

/// What checking the file found: the good rows and the row errors.
struct Checked {
    rows: usize,
    good: Vec<GoodRow>,
    errors: Vec<RowError>,
}

impl Importer<'_> {
    /// Checks and (unless refused) imports `bytes`. With an idempotency key,
    /// a repeated request gets the first answer and imports nothing new.
    pub async fn import(
        &self,
        bytes: &[u8],
        partial: bool,
        idempotency: Option<(&Idempotency, &Sealer)>,
    ) -> Result<Answer, ApiError> {
        let checked = self.check(bytes).await?;
        let none = Idempotency::none();
        let (idempotency, sealer) = match idempotency {
            Some((i, s)) => (i, Some(s)),
            None => (&none, None),
        };
        let checked = &checked;
        with_retries(|| async move {
            let mut tx = self.store.begin_write().await?;
            if let Some(sealer) = sealer
                && let Some(replay) = idempotency.claim(&mut tx, sealer, self.now).await?
            {
                return Ok(replay);
            }
            let mut report = ImportReport {
                rows: checked.rows,
                imported: 0,
                partial,
                errors: checked.errors.clone(),
                visits: Vec::new(),
            };
            let clinicians: Vec<&str> = checked.good.iter().map(|r| r.visit.clinician_id.as_str()).collect();
            tx.lock_calendars(&clinicians).await?;
            // Earlier rows of this file, per clinician, to name the line an
            // overlap is with; the database decides either way.
            let mut placed: HashMap<&str, Vec<(i64, i64, usize)>> = HashMap::new();
            for row in &checked.good {
                let (start, end) =
                    (row.visit.scheduled_start, row.visit.scheduled_start + row.visit.duration_minutes * 60);
                let audit = AuditEvent {
                    at: self.now,
                    actor: self.actor.clone(),
                    action: "created".into(),
                    visit_id: Some(row.visit.id.clone()),
                    detail: Some(format!("import line {}", row.line)),
                };
                tx.savepoint("import_row").await?;
                match crate::visits::place(&mut tx, Some(&row.patient), &row.visit, self.link_margins, &audit, self.now)
                    .await
                {
                    Ok(booked) => {
                        tx.release("import_row").await?;
                        placed.entry(row.visit.clinician_id.as_str()).or_default().push((start, end, row.line));
                        report.visits.push(json!({
                            "line": row.line,
                            "visit_id": booked.visit.id,
                            "patient_link": format!("{}/join/{}", self.public_url, booked.token),
                        }));
                        report.imported += 1;
                    }
                    Err(StoreError::Overlap) => {
                        tx.rollback_to("import_row").await?;
                        tx.release("import_row").await?;
                        let earlier = placed
                            .get(row.visit.clinician_id.as_str())
                            .and_then(|rows| rows.iter().find(|(s, e, _)| start < *e && end > *s));
                        let with = match earlier {
                            Some((_, _, line)) => format!("line {line}"),
                            None => "an existing visit".to_string(),
                        };
                        report.errors.push(RowError {
                            line: row.line,
                            field: "start".into(),
                            message: format!("overlaps {with} of the same clinician"),
                        });
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            report.errors.sort_by_key(|e| e.line);
            if !report.errors.is_empty() && !partial {
                // Nothing is imported: the transaction is dropped, rolled back.
                report.imported = 0;
                report.visits.clear();
                return Ok(Answer { status: report.status(), body: json!({ "import": report }), replayed: false });
            }
            let answer = Answer { status: report.status(), body: json!({ "import": report }), replayed: false };
            if let Some(sealer) = sealer {
                idempotency.record(&mut tx, sealer, &answer).await?;
            }
            tx.commit().await?;
            Ok(answer)
        })
        .await
    }

    /// Reads the file and checks every row's contents (not yet the calendar).
    async fn check(&self, bytes: &[u8]) -> Result<Checked, ImportError> {
        let store = self.store;
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

        let now = self.now;
        let mut errors = Vec::new();
        let mut good = Vec::new();
        let mut clinicians: HashMap<String, Option<String>> = HashMap::new();
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
            good.push(GoodRow { line, patient, visit });
        }
        Ok(Checked { rows: rows.len(), good, errors })
    }
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
