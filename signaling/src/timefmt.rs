//! RFC 3339 times on the API, Unix seconds in the store.

use time::format_description::well_known::Rfc3339;
use time::{Date, OffsetDateTime};

/// Formats Unix seconds as RFC 3339 UTC (`2026-11-28T09:30:00Z`).
pub fn rfc3339(unix: i64) -> String {
    OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| unix.to_string())
}

/// Parses an RFC 3339 time with any offset into Unix seconds.
pub fn parse_rfc3339(text: &str) -> Option<i64> {
    OffsetDateTime::parse(text, &Rfc3339).ok().map(|t| t.unix_timestamp())
}

/// The Unix-second range `[start, end)` of a calendar day (`YYYY-MM-DD`) in
/// a time zone `offset_minutes` east of UTC.
pub fn day_range(date: &str, offset_minutes: i64) -> Option<(i64, i64)> {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    let day = Date::parse(date, &format).ok()?;
    let midnight_utc = day.midnight().assume_utc().unix_timestamp();
    let start = midnight_utc - offset_minutes * 60;
    Some((start, start + 86_400))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_offsets() {
        let t = parse_rfc3339("2026-11-28T10:30:00+01:00").unwrap();
        assert_eq!(rfc3339(t), "2026-11-28T09:30:00Z");
        assert_eq!(parse_rfc3339("yesterday"), None);
        let (s, e) = day_range("2026-11-28", 60).unwrap();
        assert_eq!(rfc3339(s), "2026-11-27T23:00:00Z");
        assert_eq!(e - s, 86_400);
        assert_eq!(day_range("2026-13-01", 0), None);
    }
}
