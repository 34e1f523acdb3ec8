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
//! Files come as hospitals export them: UTF-8 with or without a BOM,
//! UTF-16 with a BOM, or Windows-1252 (Excel's "CSV" in French Windows);
//! `,` `;` or tab between fields (found from the header line); CRLF or LF.
//! Columns (by header name, any order, English or French, accents and case
//! ignored; see [`COLUMNS`]): the clinician's email, the patient's name,
//! the start (RFC 3339, or `dd/mm/yyyy HH:MM` in the clinic's time zone),
//! the length in minutes, and optionally the hospital number, a contact
//! and the kind of visit. One patient per hospital number: a number seen
//! before (in the database or earlier in the file) reuses that patient, and
//! a different name there is reported as a warning on the row.
//!
//! `dry_run` checks and places every row inside the transaction and then
//! rolls it back: the report is what a real import would do (a preview).

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
    /// How patient links are made.
    pub links: crate::visits::LinkSettings<'a>,
    /// Who imports, for the audit trail.
    pub actor: String,
    /// The clinic's zone, for local times (`dd/mm/yyyy HH:MM`).
    pub clinic_zone: jiff::tz::TimeZone,
}

/// Largest accepted file.
pub const MAX_IMPORT_BYTES: usize = 16 << 20;

/// The columns, each with the header names it goes by (compared without
/// case, accents, spaces or punctuation): (column, required, names).
pub const COLUMNS: &[(&str, bool, &[&str])] = &[
    (
        "clinician_email",
        true,
        &["clinician_email", "email_clinicien", "email_medecin", "medecin_email", "email_praticien", "praticien"],
    ),
    ("patient_name", true, &["patient_name", "nom_patient", "nom_du_patient", "patient", "nom_prenom", "nom"]),
    ("start", true, &["start", "debut", "date_heure", "date_et_heure", "date_rdv", "rendez_vous", "rdv", "date"]),
    ("duration_minutes", true, &["duration_minutes", "duration", "duree", "duree_minutes", "duree_min"]),
    ("hospital_id", false, &["hospital_id", "hospital_number", "ipp", "numero_patient", "n_patient", "nip"]),
    ("contact", false, &["contact", "telephone", "tel", "portable", "mobile", "email_patient"]),
    ("kind", false, &["kind", "type", "type_visite", "type_consultation", "motif"]),
];

/// One problem with one row.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RowError {
    /// Line in the file (the header is line 1).
    pub line: usize,
    /// The column, or `row`.
    pub field: String,
    /// What is wrong, in plain words.
    pub message: String,
}

/// The outcome of an import.
#[derive(Debug, Clone, Serialize)]
pub struct ImportReport {
    /// Data rows read.
    pub rows: usize,
    /// Visits created (or, in a dry run, that would be).
    pub imported: usize,
    /// Whether a partial import was asked for.
    pub partial: bool,
    /// Whether this was a preview (nothing kept).
    pub dry_run: bool,
    /// The separator found: `,`, `;` or `tab`.
    pub separator: String,
    /// The encoding the file was read as.
    pub encoding: String,
    /// Every problem, by line.
    pub errors: Vec<RowError>,
    /// Rows imported with something to check (a hospital number already
    /// held under another name).
    pub warnings: Vec<RowError>,
    /// The created visits and their patient links (shown once; none in a dry run).
    pub visits: Vec<serde_json::Value>,
}

impl ImportReport {
    /// 422 when rows were refused and nothing imported (not partial, not a
    /// dry run), 201 when visits were created, 200 otherwise.
    pub fn status(&self) -> StatusCode {
        if self.dry_run {
            StatusCode::OK
        } else if !self.errors.is_empty() && !self.partial {
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
    /// No header, or no data rows.
    #[error("the file has no rows")]
    Empty,
    /// The header fits no known layout: which separator was found, which
    /// columns were read, and which required ones are missing.
    #[error(
        "the header fits no known layout: read with the separator {separator}, it has the columns {seen:?}; \
         missing {missing:?} (see the accepted names in the scheduler documentation)"
    )]
    UnknownLayout {
        /// `,`, `;` or `tab`.
        separator: String,
        /// The header's columns as read.
        seen: Vec<String>,
        /// Required columns not found.
        missing: Vec<&'static str>,
    },
    /// Larger than [`MAX_IMPORT_BYTES`].
    #[error("the file is larger than 16 MiB")]
    TooLarge,
}

impl From<ImportError> for ApiError {
    fn from(e: ImportError) -> Self {
        let code = match e {
            ImportError::Empty => "empty_file",
            ImportError::UnknownLayout { .. } => "missing_column",
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

/// The file as text: the encoding found (a BOM, else UTF-8 if it is
/// valid, else Windows-1252) and the decoded text without its BOM.
pub fn decode(bytes: &[u8]) -> (&'static str, String) {
    if let Some((encoding, bom)) = encoding_rs::Encoding::for_bom(bytes) {
        let (text, _) = encoding.decode_without_bom_handling(&bytes[bom..]);
        return (encoding.name(), text.into_owned());
    }
    match std::str::from_utf8(bytes) {
        Ok(text) => ("UTF-8", text.to_string()),
        Err(_) => {
            let (text, _) = encoding_rs::WINDOWS_1252.decode_without_bom_handling(bytes);
            ("windows-1252", text.into_owned())
        }
    }
}

/// The separator of the header line: whichever of `;`, `,` and tab occurs
/// most outside quotes (`;` on a tie: a French export's `,` is a decimal).
pub fn detect_separator(text: &str) -> u8 {
    let header = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    let mut counts = [(b';', 0usize), (b',', 0), (b'\t', 0)];
    let mut quoted = false;
    for c in header.bytes() {
        if c == b'"' {
            quoted = !quoted;
        } else if !quoted && let Some(entry) = counts.iter_mut().find(|(sep, _)| *sep == c) {
            entry.1 += 1;
        }
    }
    counts.iter().max_by_key(|(sep, n)| (*n, *sep == b';')).map(|(sep, _)| *sep).unwrap_or(b',')
}

fn separator_name(sep: u8) -> &'static str {
    match sep {
        b';' => ";",
        b'\t' => "tab",
        _ => ",",
    }
}

/// A header name compared loosely: lower case, French accents folded,
/// anything but letters and digits as `_`, trimmed of `_`.
pub fn normalise_header(name: &str) -> String {
    let folded: String = name
        .trim()
        .to_lowercase()
        .chars()
        .map(|c| match c {
            'à' | 'â' | 'ä' => 'a',
            'é' | 'è' | 'ê' | 'ë' => 'e',
            'î' | 'ï' => 'i',
            'ô' | 'ö' => 'o',
            'ù' | 'û' | 'ü' => 'u',
            'ç' => 'c',
            c if c.is_alphanumeric() => c,
            _ => '_',
        })
        .collect();
    let mut out = String::new();
    for part in folded.split('_').filter(|p| !p.is_empty()) {
        if !out.is_empty() {
            out.push('_');
        }
        out.push_str(part);
    }
    out
}

/// Splits CSV text into records with their first line numbers.
pub fn parse_csv(text: &str, separator: u8) -> Vec<(usize, Vec<String>)> {
    // Line ends as LF only: the reader counts a CRLF's LF in the next
    // record's line otherwise.
    let text = text.replace("\r\n", "\n");
    let mut reader =
        csv::ReaderBuilder::new().delimiter(separator).has_headers(false).flexible(true).from_reader(text.as_bytes());
    let mut records = Vec::new();
    let mut record = csv::StringRecord::new();
    // The reader's position is where it began reading, before any line
    // ends it skipped; a record's own first line is counted here instead.
    let bytes = text.as_bytes();
    let (mut scanned, mut line) = (0usize, 1usize);
    loop {
        match reader.read_record(&mut record) {
            Ok(true) => {
                let mut start = record.position().map(|p| p.byte() as usize).unwrap_or(0).min(bytes.len());
                while start < bytes.len() && bytes[start] == b'\n' {
                    start += 1;
                }
                line += bytes[scanned.min(start)..start].iter().filter(|b| **b == b'\n').count();
                scanned = scanned.max(start);
                if record.len() == 1 && record[0].trim().is_empty() {
                    continue;
                }
                records.push((line, record.iter().map(str::to_owned).collect()));
            }
            Ok(false) => break,
            // Text from `decode` is UTF-8; a read error only ends the file.
            Err(_) => break,
        }
    }
    records
}

/// A start time: RFC 3339, or day-first local time in `tz`.
fn parse_start(text: &str, tz: &jiff::tz::TimeZone) -> Option<i64> {
    parse_rfc3339(text).or_else(|| crate::zones::parse_local_day_first(text, tz))
}

/// A kind of visit, in English or French.
fn parse_kind(text: &str) -> Option<VisitKind> {
    match normalise_header(text).as_str() {
        "follow_up" | "followup" | "suivi" | "consultation_de_suivi" => Some(VisitKind::FollowUp),
        "first" | "premiere" | "premiere_consultation" | "nouveau" => Some(VisitKind::First),
        "group" | "groupe" | "collectif" => Some(VisitKind::Group),
        _ => None,
    }
}

/// What checking the file found: the good rows and the row errors.
struct Checked {
    rows: usize,
    separator: &'static str,
    encoding: &'static str,
    good: Vec<GoodRow>,
    errors: Vec<RowError>,
}

impl Importer<'_> {
    /// Checks and (unless refused, or a dry run) imports `bytes`. With an
    /// idempotency key, a repeated request gets the first answer and
    /// imports nothing new.
    pub async fn import(
        &self,
        bytes: &[u8],
        partial: bool,
        dry_run: bool,
        idempotency: Option<(&Idempotency, &Sealer)>,
    ) -> Result<Answer, ApiError> {
        let checked = self.check(bytes).await?;
        let none = Idempotency::none();
        let (idempotency, sealer) = match idempotency {
            Some((i, s)) if !dry_run => (i, Some(s)),
            _ => (&none, None),
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
                dry_run,
                separator: checked.separator.to_string(),
                encoding: checked.encoding.to_string(),
                errors: checked.errors.clone(),
                warnings: Vec::new(),
                visits: Vec::new(),
            };
            let clinicians: Vec<&str> = checked.good.iter().map(|r| r.visit.clinician_id.as_str()).collect();
            tx.lock_calendars(&clinicians).await?;
            let numbers: Vec<&str> = checked.good.iter().filter_map(|r| r.patient.hospital_id.as_deref()).collect();
            tx.lock_hospital_numbers(&numbers).await?;
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
                // One patient per hospital number: earlier rows of this file
                // are visible here too, inside the transaction.
                let existing = match &row.patient.hospital_id {
                    Some(number) => tx.patient_by_hospital_id(number).await?,
                    None => None,
                };
                let mut visit = row.visit.clone();
                let new_patient = match &existing {
                    Some(p) => {
                        visit.patient_id = p.id.clone();
                        None
                    }
                    None => Some(&row.patient),
                };
                match crate::visits::place(&mut tx, new_patient, &visit, self.links, &audit, self.now).await {
                    Ok(booked) => {
                        tx.release("import_row").await?;
                        if let Some(p) = &existing
                            && normalise_header(&p.display_name) != normalise_header(&row.patient.display_name)
                        {
                            report.warnings.push(RowError {
                                line: row.line,
                                field: "patient_name".into(),
                                message: "this hospital number belongs to a patient recorded under another \
                                          name; the visit was booked for that patient: check the number"
                                    .into(),
                            });
                        }
                        placed.entry(row.visit.clinician_id.as_str()).or_default().push((start, end, row.line));
                        let mut item = json!({
                            "line": row.line,
                            "visit_id": booked.visit.id,
                            "scheduled_start": crate::timefmt::rfc3339(start),
                            "patient_reused": existing.is_some(),
                        });
                        if !dry_run {
                            item["patient_link"] = json!(format!("{}/join/{}", self.public_url, booked.token));
                        }
                        report.visits.push(item);
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
            if dry_run {
                // A preview: the transaction is dropped, rolled back.
                return Ok(Answer { status: report.status(), body: json!({ "import": report }), replayed: false });
            }
            if !report.errors.is_empty() && !partial {
                // Nothing is imported: the transaction is dropped, rolled back.
                report.imported = 0;
                report.visits.clear();
                report.warnings.clear();
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
        let (encoding, text) = decode(bytes);
        let separator = detect_separator(&text);
        let records = parse_csv(&text, separator);
        let Some(((_, header), rows)) = records.split_first() else { return Err(ImportError::Empty) };
        let names: Vec<String> = header.iter().map(|h| normalise_header(h)).collect();
        let column = |name: &str| {
            let aliases = COLUMNS.iter().find(|(c, _, _)| *c == name).map(|(_, _, a)| *a).unwrap_or(&[]);
            // The first alias found wins, so `patient_name` beats a looser `nom`.
            aliases.iter().find_map(|alias| names.iter().position(|n| n == alias))
        };
        let missing: Vec<&'static str> = COLUMNS
            .iter()
            .filter(|(name, required, _)| *required && column(name).is_none())
            .map(|(n, _, _)| *n)
            .collect();
        if !missing.is_empty() {
            return Err(ImportError::UnknownLayout {
                separator: separator_name(separator).to_string(),
                seen: header.iter().map(|h| h.trim().chars().take(40).collect()).collect(),
                missing,
            });
        }
        if rows.is_empty() {
            return Err(ImportError::Empty);
        }
        let need = |name: &str| column(name).unwrap_or(usize::MAX);
        let (c_email, c_name, c_start, c_duration) =
            (need("clinician_email"), need("patient_name"), need("start"), need("duration_minutes"));
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
                bad(
                    "row",
                    format!(
                        "has {} fields where the header has {} (separator {})",
                        row.len(),
                        header.len(),
                        separator_name(separator)
                    ),
                );
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
                bad("clinician_email", format!("no active clinician has the email {email:?}"));
                continue;
            };
            let name = get(c_name);
            if name.is_empty() || name.chars().count() > 200 || name.chars().any(char::is_control) {
                bad("patient_name", "the patient's name must have 1 to 200 characters".into());
                continue;
            }
            let Some(start) = parse_start(get(c_start), &self.clinic_zone) else {
                bad(
                    "start",
                    format!(
                        "{:?} is not a date and time: write 18/01/2027 09:30 (clinic time) or \
                         2027-01-18T09:30:00+01:00",
                        get(c_start).chars().take(40).collect::<String>()
                    ),
                );
                continue;
            };
            if start < now - 86_400 || start > now + 2 * 366 * 86_400 {
                bad("start", "the visit must be between yesterday and two years ahead".into());
                continue;
            }
            let duration_text = get(c_duration);
            let duration_text = duration_text.strip_suffix("min").unwrap_or(duration_text).trim();
            let Ok(duration) = duration_text.parse::<i64>() else {
                bad("duration_minutes", format!("{duration_text:?} is not a whole number of minutes"));
                continue;
            };
            if !(5..=240).contains(&duration) {
                bad("duration_minutes", "a visit lasts 5 to 240 minutes".into());
                continue;
            }
            let kind = match opt(c_kind) {
                None => VisitKind::FollowUp,
                Some(k) => match parse_kind(&k) {
                    Some(k) => k,
                    None => {
                        bad("kind", format!("{k:?} is not a kind of visit: follow_up (suivi), first or group"));
                        continue;
                    }
                },
            };
            let (hospital_id, contact) = (opt(c_hospital), opt(c_contact));
            if hospital_id.as_ref().is_some_and(|h| h.chars().count() > 64) {
                bad("hospital_id", "the hospital number is longer than 64 characters".into());
                continue;
            }
            if contact.as_ref().is_some_and(|c| c.chars().count() > 200) {
                bad("contact", "the contact is longer than 200 characters".into());
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
        Ok(Checked { rows: rows.len(), separator: separator_name(separator), encoding, good, errors })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_and_line_numbers() {
        let text = "a,b,c\r\n1,\"x, y\",\"say \"\"hi\"\"\"\n\n2,\"multi\nline\",z\n3,,";
        let r = parse_csv(text, b',');
        assert_eq!(r[0], (1, vec!["a".into(), "b".into(), "c".into()]));
        assert_eq!(r[1], (2, vec!["1".into(), "x, y".into(), "say \"hi\"".into()]));
        assert_eq!(r[2], (4, vec!["2".into(), "multi\nline".into(), "z".into()]));
        assert_eq!(r[3], (6, vec!["3".into(), "".into(), "".into()]));
    }

    #[test]
    fn encodings_separators_and_headers() {
        assert_eq!(decode(b"\xef\xbb\xbfa;b").1, "a;b");
        assert_eq!(decode(b"\xef\xbb\xbfa;b").0, "UTF-8");
        assert_eq!(decode(b"Ren\xe9").1, "René");
        assert_eq!(decode(b"Ren\xe9").0, "windows-1252");
        assert_eq!(decode(b"\xff\xfea\x00;\x00b\x00").1, "a;b");
        assert_eq!(detect_separator("nom;date;durée\r\n"), b';');
        assert_eq!(detect_separator("\"a;b\",c,d\n"), b',');
        assert_eq!(detect_separator("a\tb\tc"), b'\t');
        assert_eq!(normalise_header(" Email médecin "), "email_medecin");
        assert_eq!(normalise_header("Durée (min)"), "duree_min");
        assert_eq!(parse_kind("Suivi"), Some(VisitKind::FollowUp));
        assert_eq!(parse_kind("visite"), None);
    }

    /// Whatever bytes a hospital's export holds, reading them never panics,
    /// every record keeps a line number within the file, in order, and a
    /// start time that parses is a real instant. `PROPTEST_CASES` raises
    /// the count for a longer run (BENCHMARKS.md).
    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// Bytes shaped like a CSV export: separators, quotes, line ends,
        /// accents in UTF-8 and Windows-1252, BOMs, digits and slashes.
        fn csv_bytes() -> impl Strategy<Value = Vec<u8>> {
            let pieces = prop_oneof![
                Just(b";".to_vec()),
                Just(b",".to_vec()),
                Just(b"\t".to_vec()),
                Just(b"\"".to_vec()),
                Just(b"\r\n".to_vec()),
                Just(b"\n".to_vec()),
                Just(b"\xef\xbb\xbf".to_vec()),
                Just(b"\xff\xfe".to_vec()),
                Just("é".as_bytes().to_vec()),
                Just(b"\xe9".to_vec()),
                Just(b"31/03/2027 09:00".to_vec()),
                Just(b"2027-03-28T02:30:00+01:00".to_vec()),
                "[a-z0-9 /:.-]{0,12}".prop_map(String::into_bytes),
                proptest::collection::vec(any::<u8>(), 0..8),
            ];
            proptest::collection::vec(pieces, 0..60).prop_map(|p| p.concat())
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            #[test]
            fn any_export_reads_without_panic(bytes in csv_bytes()) {
                let (_, text) = decode(&bytes);
                let separator = detect_separator(&text);
                let records = parse_csv(&text, separator);
                let lines = text.replace("\r\n", "\n").matches('\n').count() + 1;
                let mut previous = 0;
                for (line, fields) in &records {
                    prop_assert!(*line >= 1 && *line <= lines, "line {line} of {lines}");
                    prop_assert!(*line >= previous, "lines in order");
                    previous = *line;
                    for field in fields {
                        let _ = normalise_header(field);
                        let _ = parse_kind(field);
                        if let Some(t) = parse_start(field, &jiff::tz::TimeZone::get("Europe/Paris").unwrap()) {
                            prop_assert!(jiff::Timestamp::from_second(t).is_ok(), "{field:?} -> {t}");
                        }
                    }
                }
            }
        }
    }
}
