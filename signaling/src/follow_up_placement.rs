//! Where a follow-up goes: the first free slot of a clinician's weekly
//! availability, within a tolerance window around the due date, that does
//! not overlap anything already booked. Pure, so it is tested on fixed
//! times; the caller serialises placement so two bookings never race.

use serde::{Deserialize, Serialize};

/// One weekly working period, in the clinician's local time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WeeklyPeriod {
    /// 0 = Monday … 6 = Sunday.
    pub weekday: u8,
    /// Minutes after local midnight.
    pub start_minute: u16,
    /// Minutes after local midnight (exclusive).
    pub end_minute: u16,
}

/// A clinician's availability.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "StoredAvailability")]
pub struct Availability {
    /// Length of a bookable slot, minutes.
    pub slot_minutes: u16,
    /// The clinician's IANA time zone (`Europe/Paris`): periods and days
    /// off are wall-clock times there.
    pub time_zone: String,
    /// Working periods.
    pub weekly: Vec<WeeklyPeriod>,
    /// Days off (`YYYY-MM-DD`, local).
    pub days_off: Vec<String>,
}

/// Availability as stored: saved before zones were named, it has
/// `tz_offset_minutes` instead of `time_zone` (see
/// [`crate::zones::zone_for_legacy_offset`]); it is rewritten on its next save.
#[derive(Deserialize)]
struct StoredAvailability {
    slot_minutes: u16,
    #[serde(default)]
    time_zone: Option<String>,
    #[serde(default)]
    tz_offset_minutes: Option<i16>,
    weekly: Vec<WeeklyPeriod>,
    #[serde(default)]
    days_off: Vec<String>,
}

impl From<StoredAvailability> for Availability {
    fn from(s: StoredAvailability) -> Self {
        let time_zone = s.time_zone.unwrap_or_else(|| match s.tz_offset_minutes {
            Some(m) => crate::zones::zone_for_legacy_offset(m),
            None => crate::zones::DEFAULT_ZONE.to_string(),
        });
        Availability { slot_minutes: s.slot_minutes, time_zone, weekly: s.weekly, days_off: s.days_off }
    }
}

impl Availability {
    /// The zone (UTC if the stored name is unknown to this binary).
    pub fn zone(&self) -> jiff::tz::TimeZone {
        crate::zones::zone_or_utc(&self.time_zone)
    }
}

/// The first start time (Unix seconds) in `[earliest, latest]` where a visit
/// of `duration_minutes` fits inside a working period on a working day, on
/// the slot grid (in local wall-clock minutes), overlapping none of `busy`
/// (`[start, end)` intervals).
pub fn first_free_slot(
    availability: &Availability,
    busy: &[(i64, i64)],
    earliest: i64,
    latest: i64,
    duration_minutes: i64,
) -> Option<i64> {
    let tz = availability.zone();
    let slot = availability.slot_minutes.max(5);
    let length = duration_minutes * 60;
    let last_day = crate::zones::local_date(latest, &tz);
    let mut day = crate::zones::local_date(earliest, &tz);
    while day <= last_day {
        let date = day.to_string();
        if !availability.days_off.contains(&date) {
            let mut periods: Vec<&WeeklyPeriod> =
                availability.weekly.iter().filter(|p| p.weekday == crate::zones::weekday(day)).collect();
            periods.sort_by_key(|p| p.start_minute);
            for period in periods {
                let Some(period_end) = crate::zones::at_local(day, period.end_minute, &tz) else { continue };
                let mut minute = period.start_minute;
                while minute < period.end_minute {
                    let Some(start) = crate::zones::at_local(day, minute, &tz) else { break };
                    let end = start + length;
                    if end > period_end || start > latest {
                        break;
                    }
                    let free = busy.iter().all(|(b_start, b_end)| end <= *b_start || start >= *b_end);
                    if start >= earliest && free {
                        return Some(start);
                    }
                    minute += slot;
                }
            }
        }
        day = day.tomorrow().ok()?;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    // 2027-01-18 is a Monday.
    const MONDAY: i64 = 1_800_230_400; // 2027-01-18T00:00:00Z

    fn weekdays_9_to_12() -> Availability {
        Availability {
            slot_minutes: 20,
            time_zone: "UTC".into(),
            weekly: (0..5).map(|d| WeeklyPeriod { weekday: d, start_minute: 9 * 60, end_minute: 12 * 60 }).collect(),
            days_off: vec![],
        }
    }

    #[test]
    fn first_slot_inside_availability() {
        let a = weekdays_9_to_12();
        let got = first_free_slot(&a, &[], MONDAY, MONDAY + 7 * 86_400, 20).unwrap();
        assert_eq!(got, MONDAY + 9 * 3600);
    }

    #[test]
    fn busy_slots_are_skipped_and_never_overlapped() {
        let a = weekdays_9_to_12();
        let busy = [(MONDAY + 9 * 3600, MONDAY + 9 * 3600 + 1800)]; // 9:00–9:30
        let got = first_free_slot(&a, &busy, MONDAY, MONDAY + 86_400, 20).unwrap();
        assert_eq!(got, MONDAY + 9 * 3600 + 40 * 60, "9:40, the first grid slot after 9:30");
    }

    #[test]
    fn weekends_days_off_and_the_window_are_honoured() {
        let mut a = weekdays_9_to_12();
        a.days_off = vec!["2027-01-18".into()];
        let got = first_free_slot(&a, &[], MONDAY, MONDAY + 7 * 86_400, 20).unwrap();
        assert_eq!(got, MONDAY + 86_400 + 9 * 3600, "Tuesday, Monday is off");
        // A window over the weekend only: nothing.
        let saturday = MONDAY + 5 * 86_400;
        assert_eq!(first_free_slot(&a, &[], saturday, saturday + 2 * 86_400 - 1, 20), None);
        // A visit longer than any period: nothing.
        assert_eq!(first_free_slot(&a, &[], MONDAY, MONDAY + 7 * 86_400, 240), None);
    }

    #[test]
    fn local_time_zone_shifts_the_periods() {
        let mut a = weekdays_9_to_12();
        a.time_zone = "Europe/Paris".into(); // in winter 9:00 local is 8:00 UTC
        let got = first_free_slot(&a, &[], MONDAY, MONDAY + 86_400, 20).unwrap();
        assert_eq!(got, MONDAY + 8 * 3600);
    }

    #[test]
    fn slots_keep_their_wall_time_across_the_dst_change() {
        let mut a = weekdays_9_to_12();
        a.time_zone = "Europe/Paris".into();
        // Monday 2027-03-29, the day after the change: 9:00 Paris is 7:00 UTC.
        let monday = crate::timefmt::parse_rfc3339("2027-03-29T00:00:00Z").unwrap();
        let got = first_free_slot(&a, &[], monday - 86_400, monday + 86_400, 20).unwrap();
        assert_eq!(crate::timefmt::rfc3339(got), "2027-03-29T07:00:00Z");
    }

    #[test]
    fn legacy_offset_availability_still_reads() {
        let old = r#"{"slot_minutes":20,"tz_offset_minutes":60,"weekly":[],"days_off":[]}"#;
        let a: Availability = serde_json::from_str(old).unwrap();
        assert_eq!(a.time_zone, "Europe/Paris");
        let saved = serde_json::to_string(&a).unwrap();
        assert!(saved.contains("\"time_zone\":\"Europe/Paris\"") && !saved.contains("tz_offset"), "{saved}");
    }

    #[test]
    fn full_calendar_places_nothing() {
        let a = weekdays_9_to_12();
        let busy: Vec<(i64, i64)> =
            (0..5).map(|d| (MONDAY + d * 86_400 + 9 * 3600, MONDAY + d * 86_400 + 12 * 3600)).collect();
        assert_eq!(first_free_slot(&a, &busy, MONDAY, MONDAY + 5 * 86_400, 20), None);
    }
}
