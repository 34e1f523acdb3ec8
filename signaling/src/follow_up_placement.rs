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
pub struct Availability {
    /// Length of a bookable slot, minutes.
    pub slot_minutes: u16,
    /// Local time zone, minutes east of UTC.
    pub tz_offset_minutes: i16,
    /// Working periods.
    pub weekly: Vec<WeeklyPeriod>,
    /// Days off (`YYYY-MM-DD`, local).
    pub days_off: Vec<String>,
}

/// Weekday (0 = Monday) of a Unix day number (days since 1970-01-01, a Thursday).
fn weekday_of(day: i64) -> u8 {
    ((day + 3).rem_euclid(7)) as u8
}

/// `YYYY-MM-DD` of a Unix day number.
pub fn date_of(day: i64) -> String {
    crate::timefmt::rfc3339(day * 86_400)[..10].to_string()
}

/// The first start time (Unix seconds) in `[earliest, latest]` where a visit
/// of `duration_minutes` fits inside a working period on a working day, on
/// the slot grid, overlapping none of `busy` (`[start, end)` intervals).
pub fn first_free_slot(
    availability: &Availability,
    busy: &[(i64, i64)],
    earliest: i64,
    latest: i64,
    duration_minutes: i64,
) -> Option<i64> {
    let offset = i64::from(availability.tz_offset_minutes) * 60;
    let slot = i64::from(availability.slot_minutes.max(5)) * 60;
    let length = duration_minutes * 60;
    let first_day = (earliest + offset).div_euclid(86_400);
    let last_day = (latest + offset).div_euclid(86_400);
    for day in first_day..=last_day {
        if availability.days_off.contains(&date_of(day)) {
            continue;
        }
        let mut periods: Vec<&WeeklyPeriod> =
            availability.weekly.iter().filter(|p| p.weekday == weekday_of(day)).collect();
        periods.sort_by_key(|p| p.start_minute);
        for period in periods {
            let period_start = day * 86_400 + i64::from(period.start_minute) * 60 - offset;
            let period_end = day * 86_400 + i64::from(period.end_minute) * 60 - offset;
            let mut start = period_start;
            while start + length <= period_end {
                let end = start + length;
                let free = busy.iter().all(|(b_start, b_end)| end <= *b_start || start >= *b_end);
                if start >= earliest && start <= latest && free {
                    return Some(start);
                }
                start += slot;
            }
        }
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
            tz_offset_minutes: 0,
            weekly: (0..5).map(|d| WeeklyPeriod { weekday: d, start_minute: 9 * 60, end_minute: 12 * 60 }).collect(),
            days_off: vec![],
        }
    }

    #[test]
    fn monday_is_weekday_zero() {
        assert_eq!(weekday_of(MONDAY / 86_400), 0);
        assert_eq!(date_of(MONDAY / 86_400), "2027-01-18");
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
        a.tz_offset_minutes = 60; // Paris in winter: 9:00 local is 8:00 UTC
        let got = first_free_slot(&a, &[], MONDAY, MONDAY + 86_400, 20).unwrap();
        assert_eq!(got, MONDAY + 8 * 3600);
    }

    #[test]
    fn full_calendar_places_nothing() {
        let a = weekdays_9_to_12();
        let busy: Vec<(i64, i64)> =
            (0..5).map(|d| (MONDAY + d * 86_400 + 9 * 3600, MONDAY + d * 86_400 + 12 * 3600)).collect();
        assert_eq!(first_free_slot(&a, &busy, MONDAY, MONDAY + 5 * 86_400, 20), None);
    }
}
