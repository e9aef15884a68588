//! Cron schedules as Kubernetes CronJobs read them: five fields (minute, hour, day of
//! month, month, day of week) with `*`, lists, ranges, steps and English names, or one of
//! `@yearly`, `@monthly`, `@weekly`, `@daily`, `@hourly`; times are wall-clock times of an
//! IANA time zone. Pure: no clock, no I/O.

use jiff::civil::{Date, DateTime, Time};
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};

/// A parsed schedule: the allowed values of each field as bit sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    minutes: u64,
    hours: u64,
    days: u64,
    months: u64,
    weekdays: u64,
    /// Both day fields restricted: a day matches when either does (cron's rule).
    day_or_weekday: bool,
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const WEEKDAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

struct Field {
    what: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
}

fn value(field: &Field, s: &str) -> Result<u32, String> {
    let lower = s.to_ascii_lowercase();
    if let Some(i) = field.names.iter().position(|n| *n == lower) {
        return Ok(i as u32 + field.min);
    }
    let v: u32 = s
        .parse()
        .map_err(|_| format!("{} {s:?} is not a number", field.what))?;
    // Day of week 7 is Sunday too.
    let max = if field.what == "day of week" {
        7
    } else {
        field.max
    };
    if v < field.min || v > max {
        return Err(format!(
            "{} {v} is out of range {}-{}",
            field.what, field.min, max
        ));
    }
    Ok(if field.what == "day of week" {
        v % 7
    } else {
        v
    })
}

/// The bits of one field; `true` with it when the field was `*` (unrestricted).
fn parse_field(field: &Field, text: &str) -> Result<(u64, bool), String> {
    let mut bits = 0u64;
    let mut star = false;
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => {
                let step: u32 =
                    s.parse().ok().filter(|s| *s > 0).ok_or_else(|| {
                        format!("{} step {s:?} is not a positive number", field.what)
                    })?;
                (r, step)
            }
            None => (part, 1),
        };
        let (lo, hi) = if range == "*" || range == "?" {
            star |= step == 1 && text == range;
            (field.min, field.max)
        } else if let Some((a, b)) = range.split_once('-') {
            let (a, b) = (value(field, a)?, value(field, b)?);
            // 5-7 (Friday to Sunday) wraps through the `% 7` of 7.
            let b = if field.what == "day of week" && b < a && b == 0 {
                7
            } else {
                b
            };
            if a > b {
                return Err(format!("{} range {range:?} runs backwards", field.what));
            }
            (a, b)
        } else {
            let v = value(field, range)?;
            (v, if step > 1 { field.max } else { v })
        };
        let mut v = lo;
        while v <= hi {
            bits |= 1 << (v % if field.what == "day of week" { 7 } else { 64 });
            v += step;
        }
    }
    if bits == 0 {
        return Err(format!("{} {text:?} allows no value", field.what));
    }
    Ok((bits, star))
}

impl Schedule {
    pub fn parse(text: &str) -> Result<Schedule, String> {
        let text = text.trim();
        let expanded = match text {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            other if other.starts_with('@') => {
                return Err(format!("unknown schedule {other:?}"));
            }
            other => other,
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(format!(
                "schedule {text:?} has {} fields; cron needs 5 (minute hour day-of-month month day-of-week)",
                fields.len()
            ));
        }
        let f = |what, min, max, names| Field {
            what,
            min,
            max,
            names,
        };
        let (minutes, _) = parse_field(&f("minute", 0, 59, &[]), fields[0])?;
        let (hours, _) = parse_field(&f("hour", 0, 23, &[]), fields[1])?;
        let (days, any_day) = parse_field(&f("day of month", 1, 31, &[]), fields[2])?;
        let (months, _) = parse_field(&f("month", 1, 12, &MONTHS), fields[3])?;
        let (weekdays, any_weekday) = parse_field(&f("day of week", 0, 6, &WEEKDAYS), fields[4])?;
        Ok(Schedule {
            minutes,
            hours,
            days,
            months,
            weekdays,
            day_or_weekday: !any_day && !any_weekday,
        })
    }

    fn day_matches(&self, d: Date) -> bool {
        let dom = self.days & (1 << d.day()) != 0;
        let dow = self.weekdays & (1 << d.weekday().to_sunday_zero_offset()) != 0;
        if self.day_or_weekday {
            dom || dow
        } else {
            dom && dow
        }
    }

    /// The first scheduled time strictly after `after`, in `tz`; `None` when none falls in
    /// the next five years (`0 0 30 2 *`).
    pub fn next_after(&self, after: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        let start = after.to_zoned(tz.clone()).datetime();
        // The next whole minute.
        let mut t = start
            .with()
            .second(0)
            .subsec_nanosecond(0)
            .build()
            .ok()?
            .checked_add(1.minute())
            .ok()?;
        let limit = start.checked_add(5.years()).ok()?;
        while t < limit {
            if self.months & (1 << t.month()) == 0 {
                t = first_of_next_month(t)?;
                continue;
            }
            if !self.day_matches(t.date()) {
                t = DateTime::from_parts(t.date().tomorrow().ok()?, Time::midnight());
                continue;
            }
            if self.hours & (1 << t.hour()) == 0 {
                t = t
                    .with()
                    .minute(0)
                    .build()
                    .ok()?
                    .checked_add(1.hour())
                    .ok()?;
                continue;
            }
            if self.minutes & (1 << t.minute()) == 0 {
                t = t.checked_add(1.minute()).ok()?;
                continue;
            }
            // A wall time skipped by a DST change runs at the first instant after the gap.
            let ts = tz.to_ambiguous_zoned(t).compatible().ok()?.timestamp();
            if ts > after {
                return Some(ts);
            }
            t = t.checked_add(1.minute()).ok()?;
        }
        None
    }

    /// The newest scheduled time in `(after, until]`, and whether an earlier one was passed
    /// over (missed while the controller was away).
    pub fn latest_between(
        &self,
        after: Timestamp,
        until: Timestamp,
        tz: &TimeZone,
    ) -> Option<(Timestamp, bool)> {
        let first = self.next_after(after, tz).filter(|n| *n <= until)?;
        // Search back from `until` in growing windows, so a long absence costs little.
        for hours in [1i64, 24, 24 * 32, 24 * 366, 24 * 366 * 5] {
            let from = until
                .checked_sub(hours.hours())
                .map_or(after, |f| f.max(after));
            let mut t = from;
            let mut latest = None;
            while let Some(n) = self.next_after(t, tz).filter(|n| *n <= until) {
                latest = Some(n);
                t = n;
            }
            if let Some(l) = latest {
                return Some((l, l != first));
            }
            if from == after {
                break;
            }
        }
        Some((first, false))
    }
}

fn first_of_next_month(t: DateTime) -> Option<DateTime> {
    let first = t.date().first_of_month().checked_add(1.month()).ok()?;
    Some(DateTime::from_parts(first, Time::midnight()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn next(expr: &str, after: &str, tz: &str) -> String {
        let tz = TimeZone::get(tz).unwrap();
        Schedule::parse(expr)
            .unwrap()
            .next_after(ts(after), &tz)
            .unwrap()
            .to_string()
    }

    #[test]
    fn every_minute_and_steps() {
        assert_eq!(
            next("* * * * *", "2026-12-03T10:00:30Z", "UTC"),
            "2026-12-03T10:01:00Z"
        );
        assert_eq!(
            next("*/15 * * * *", "2026-12-03T10:01:00Z", "UTC"),
            "2026-12-03T10:15:00Z"
        );
        assert_eq!(
            next("5-20/5 * * * *", "2026-12-03T10:20:00Z", "UTC"),
            "2026-12-03T11:05:00Z"
        );
        assert_eq!(
            next("0 3 * * *", "2026-12-03T03:00:00Z", "UTC"),
            "2026-12-04T03:00:00Z"
        );
    }

    #[test]
    fn names_macros_and_weekdays() {
        // 2026-12-03 is a Thursday.
        assert_eq!(
            next("0 0 * * sun", "2026-12-03T00:00:00Z", "UTC"),
            "2026-12-06T00:00:00Z"
        );
        assert_eq!(
            next("0 0 * * 7", "2026-12-03T00:00:00Z", "UTC"),
            "2026-12-06T00:00:00Z"
        );
        assert_eq!(
            next("30 2 1 jan *", "2026-12-03T00:00:00Z", "UTC"),
            "2027-01-01T02:30:00Z"
        );
        assert_eq!(
            next("@weekly", "2026-12-03T00:00:00Z", "UTC"),
            "2026-12-06T00:00:00Z"
        );
        assert_eq!(
            next("0 9 * * mon-fri", "2026-12-04T10:00:00Z", "UTC"),
            "2026-12-07T09:00:00Z"
        );
        // Day of month or day of week when both are given: the 15th, or any Monday.
        assert_eq!(
            next("0 0 15 * mon", "2026-12-03T00:00:00Z", "UTC"),
            "2026-12-07T00:00:00Z"
        );
    }

    #[test]
    fn time_zones_and_daylight_saving() {
        // 02:00 in Berlin in winter is 01:00 UTC.
        assert_eq!(
            next("0 2 * * *", "2026-12-03T12:00:00Z", "Europe/Berlin"),
            "2026-12-04T01:00:00Z"
        );
        // 2027-03-28 02:30 does not exist in Berlin: it runs at 03:30 CEST (01:30 UTC).
        assert_eq!(
            next("30 2 * * *", "2027-03-27T12:00:00Z", "Europe/Berlin"),
            "2027-03-28T01:30:00Z"
        );
    }

    #[test]
    fn impossible_and_invalid_schedules() {
        let s = Schedule::parse("0 0 30 2 *").unwrap();
        assert_eq!(
            s.next_after(ts("2026-01-01T00:00:00Z"), &TimeZone::UTC),
            None
        );
        for bad in [
            "* * * *",
            "61 * * * *",
            "* * * foo *",
            "*/0 * * * *",
            "@often",
            "5-1 * * * *",
        ] {
            let e = Schedule::parse(bad).unwrap_err();
            assert!(!e.is_empty(), "{bad}");
        }
    }

    #[test]
    fn the_newest_of_several_missed_times_is_the_one_to_run() {
        let s = Schedule::parse("*/10 * * * *").unwrap();
        let (t, missed) = s
            .latest_between(
                ts("2026-12-03T10:00:00Z"),
                ts("2026-12-03T10:35:00Z"),
                &TimeZone::UTC,
            )
            .unwrap();
        assert_eq!(t.to_string(), "2026-12-03T10:30:00Z");
        assert!(missed);
        let (t, missed) = s
            .latest_between(
                ts("2026-12-03T10:00:00Z"),
                ts("2026-12-03T10:12:00Z"),
                &TimeZone::UTC,
            )
            .unwrap();
        assert_eq!(t.to_string(), "2026-12-03T10:10:00Z");
        assert!(!missed);
        assert!(
            s.latest_between(
                ts("2026-12-03T10:00:00Z"),
                ts("2026-12-03T10:05:00Z"),
                &TimeZone::UTC
            )
            .is_none()
        );
    }
}
