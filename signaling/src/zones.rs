//! Clinic time: availability, clinic days, due dates and the local times of
//! a hospital's CSV are wall-clock times in an IANA zone (`Europe/Paris`),
//! turned into Unix seconds with the bundled time-zone database (jiff), so
//! a 09:00 slot stays 09:00 across daylight-saving changes. The API keeps
//! RFC 3339 times with offsets; the store keeps Unix seconds and zone names,
//! never fixed offsets.

use jiff::Timestamp;
use jiff::civil::{Date, DateTime};
use jiff::tz::TimeZone;

/// The zone used when a clinician has set none (and the default of
/// `--clinic-time-zone`).
pub const DEFAULT_ZONE: &str = "Europe/Paris";

/// The zone named `name` (an IANA name such as `Europe/Paris`, or `UTC`).
pub fn zone(name: &str) -> Option<TimeZone> {
    if name.is_empty() || name.len() > 64 {
        return None;
    }
    TimeZone::get(name).ok()
}

/// The zone named `name`, or UTC for a name the database does not know (a
/// stored value from a newer database; never from the API, which checks).
pub fn zone_or_utc(name: &str) -> TimeZone {
    zone(name).unwrap_or(TimeZone::UTC)
}

/// The IANA zone that stands for a legacy fixed offset (availability saved
/// before zones were named, as `tz_offset_minutes`). Paris's two offsets
/// map to Paris, whose hospitals this offset almost always meant; another
/// whole-hour offset maps to `Etc/GMT±h` (whose sign is inverted, by IANA
/// convention); anything else to the nearest whole hour.
pub fn zone_for_legacy_offset(minutes: i16) -> String {
    match minutes {
        60 | 120 => DEFAULT_ZONE.to_string(),
        0 => "UTC".to_string(),
        m => {
            let hours = (f64::from(m) / 60.0).round() as i32;
            match hours {
                0 => "UTC".to_string(),
                h if h > 0 => format!("Etc/GMT-{}", h.min(14)),
                h => format!("Etc/GMT+{}", (-h).min(12)),
            }
        }
    }
}

/// The local calendar date of a Unix time.
pub fn local_date(unix: i64, tz: &TimeZone) -> Date {
    Timestamp::from_second(unix).unwrap_or(Timestamp::UNIX_EPOCH).to_zoned(tz.clone()).date()
}

/// Unix seconds of `minute` minutes after local midnight of `day` (1440 is
/// the next midnight). A wall time skipped by a DST change resolves forward
/// and a repeated one to its first occurrence (the "compatible" rule).
pub fn at_local(day: Date, minute: u16, tz: &TimeZone) -> Option<i64> {
    let (day, minute) = if minute >= 24 * 60 { (day.tomorrow().ok()?, minute - 24 * 60) } else { (day, minute) };
    let dt = day.at((minute / 60) as i8, (minute % 60) as i8, 0, 0);
    Some(tz.to_ambiguous_zoned(dt).compatible().ok()?.timestamp().as_second())
}

/// Parses `YYYY-MM-DD`.
pub fn parse_date(text: &str) -> Option<Date> {
    if text.len() != 10 {
        return None;
    }
    text.parse::<Date>().ok()
}

/// `[start, end)` in Unix seconds of the local days `first..=last` (a day
/// is 23 or 25 hours long when the clocks change).
pub fn local_days_range(first: Date, last: Date, tz: &TimeZone) -> Option<(i64, i64)> {
    Some((at_local(first, 0, tz)?, at_local(last, 24 * 60, tz)?))
}

/// The day `days` after (or before, when negative) `day`.
pub fn add_days(day: Date, days: i64) -> Option<Date> {
    day.checked_add(jiff::Span::new().try_days(days).ok()?).ok()
}

/// Weekday of a date, 0 = Monday … 6 = Sunday.
pub fn weekday(day: Date) -> u8 {
    day.weekday().to_monday_zero_offset() as u8
}

/// Parses a local time as hospitals write it, `dd/mm/yyyy HH:MM` (or with
/// `:SS`, or `-` or `.` between the date's parts), in `tz`.
pub fn parse_local_day_first(text: &str, tz: &TimeZone) -> Option<i64> {
    let text = text.trim();
    let (date, time) = text.split_once([' ', 'T'])?;
    let parts: Vec<&str> = date.split(['/', '-', '.']).collect();
    let [d, m, y] = parts.as_slice() else { return None };
    let (d, m, y): (i8, i8, i16) = (d.parse().ok()?, m.parse().ok()?, y.parse().ok()?);
    if !(1000..=9999).contains(&y) {
        return None;
    }
    let t: Vec<&str> = time.trim().split(':').collect();
    let (h, min, s): (i8, i8, i8) = match t.as_slice() {
        [h, m] => (h.parse().ok()?, m.parse().ok()?, 0),
        [h, m, s] => (h.parse().ok()?, m.parse().ok()?, s.parse().ok()?),
        _ => return None,
    };
    let dt = DateTime::new(y, m, d, h, min, s, 0).ok()?;
    Some(tz.to_ambiguous_zoned(dt).compatible().ok()?.timestamp().as_second())
}

/// RFC 3339 with the zone's offset at that instant (`2027-03-29T09:00:00+02:00`).
pub fn rfc3339_in(unix: i64, tz: &TimeZone) -> String {
    let zoned = Timestamp::from_second(unix).unwrap_or(Timestamp::UNIX_EPOCH).to_zoned(tz.clone());
    zoned.strftime("%Y-%m-%dT%H:%M:%S%:z").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paris_keeps_wall_time_across_the_spring_change() {
        let paris = zone("Europe/Paris").unwrap();
        // Monday 2027-03-22 (winter, +01:00) and Monday 2027-03-29 (summer, +02:00).
        let before = at_local(Date::new(2027, 3, 22).unwrap(), 9 * 60, &paris).unwrap();
        let after = at_local(Date::new(2027, 3, 29).unwrap(), 9 * 60, &paris).unwrap();
        assert_eq!(rfc3339_in(before, &paris), "2027-03-22T09:00:00+01:00");
        assert_eq!(rfc3339_in(after, &paris), "2027-03-29T09:00:00+02:00");
        assert_eq!(after - before, 7 * 86_400 - 3600, "a week less the hour the clocks skipped");
        // The change day itself is 23 hours long.
        let day = Date::new(2027, 3, 28).unwrap();
        let (s, e) = local_days_range(day, day, &paris).unwrap();
        assert_eq!(e - s, 23 * 3600);
        // 02:30 does not exist that night: it resolves to 03:30 summer time.
        assert_eq!(rfc3339_in(at_local(day, 150, &paris).unwrap(), &paris), "2027-03-28T03:30:00+02:00");
    }

    #[test]
    fn legacy_offsets_and_day_first_times() {
        assert_eq!(zone_for_legacy_offset(60), "Europe/Paris");
        assert_eq!(zone_for_legacy_offset(0), "UTC");
        assert_eq!(zone_for_legacy_offset(-300), "Etc/GMT+5");
        assert!(zone(&zone_for_legacy_offset(-300)).is_some());
        assert!(zone("Mars/Olympus").is_none());
        let paris = zone("Europe/Paris").unwrap();
        let t = parse_local_day_first("29/03/2027 09:30", &paris).unwrap();
        assert_eq!(crate::timefmt::rfc3339(t), "2027-03-29T07:30:00Z");
        assert_eq!(parse_local_day_first("18.01.2027 09:30:15", &paris), Some(1_800_261_015));
        assert_eq!(parse_local_day_first("31/02/2027 09:30", &paris), None);
        assert_eq!(parse_local_day_first("2027-01-18T09:30:00Z", &paris), None);
        assert_eq!(weekday(Date::new(2027, 1, 18).unwrap()), 0);
    }
}
