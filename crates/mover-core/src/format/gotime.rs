//! Timestamps as Go's `time.Time` writes them in JSON (RFC 3339 with nanoseconds, trailing
//! zeros trimmed), and parsing of any RFC 3339 time. Reading the clock and the local zone is
//! the only outside state touched here; no other I/O.

use crate::format::FormatError;
use chrono::{DateTime, Datelike, FixedOffset, Local, NaiveDate, TimeZone, Timelike, Utc};
use std::fmt::Write;

/// Go's zero `time.Time`: `0001-01-01T00:00:00Z`.
pub fn zero() -> DateTime<FixedOffset> {
    // Fixed in-range date and time: construction cannot fail.
    let naive = NaiveDate::from_ymd_opt(1, 1, 1)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .unwrap_or_default();
    Utc.from_utc_datetime(&naive).fixed_offset()
}

/// The current time in the machine's local zone, as restic stamps snapshots and locks.
pub fn now_local() -> DateTime<FixedOffset> {
    Local::now().fixed_offset()
}

/// A Unix timestamp shown in the local zone of that instant (restic writes node times in
/// the machine's local zone, and the offset is part of the tree bytes).
pub fn from_unix(secs: i64, nanos: u32) -> DateTime<FixedOffset> {
    match DateTime::<Utc>::from_timestamp(secs, nanos) {
        Some(utc) => utc.with_timezone(&Local).fixed_offset(),
        None => zero(),
    }
}

/// restic's `fixTime`: years outside 0..=9999 cannot be written by Go's JSON encoder, so
/// restic moves them into range with `AddDate`, which turns Feb 29 into Mar 1 when the
/// target year is not a leap year.
fn clamp_year(t: &DateTime<FixedOffset>) -> DateTime<FixedOffset> {
    let year = t.year();
    let target = year.clamp(0, 9999);
    if target == year {
        return *t;
    }
    let local = t.naive_local();
    let date = NaiveDate::from_ymd_opt(target, local.month(), local.day())
        .or_else(|| NaiveDate::from_ymd_opt(target, 3, 1))
        .unwrap_or_default();
    let naive = date.and_time(local.time());
    t.offset()
        .from_local_datetime(&naive)
        .single()
        .unwrap_or(*t)
}

/// Go's `time.Time.String()`: "2006-01-02 15:04:05.999999999 -0700 MST", the fraction
/// without trailing zeros (none when whole), `UTC` as the zone name of offset zero and the
/// offset again for others (a fixed offset has no name).
pub fn go_string(t: &DateTime<FixedOffset>) -> String {
    let t = clamp_year(t);
    let mut out = format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        t.year(),
        t.month(),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    );
    let nanos = t.nanosecond() % 1_000_000_000;
    if nanos != 0 {
        let frac = format!("{nanos:09}");
        out.push('.');
        out.push_str(frac.trim_end_matches('0'));
    }
    let secs = t.offset().local_minus_utc();
    let sign = if secs < 0 { '-' } else { '+' };
    let offset = format!("{sign}{:02}{:02}", secs.abs() / 3600, secs.abs() / 60 % 60);
    let zone = if secs == 0 {
        "UTC".to_string()
    } else {
        offset.clone()
    };
    let _ = write!(out, " {offset} {zone}");
    out
}

/// Go `time.Time.MarshalJSON` text without the quotes (RFC3339Nano layout).
pub fn format(t: &DateTime<FixedOffset>) -> String {
    let t = clamp_year(t);
    let mut out = String::with_capacity(35);
    // Writing into a String cannot fail.
    let _ = write!(
        out,
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        t.year(),
        t.month(),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    );
    // chrono keeps leap seconds as nanos >= 1e9; Go has no leap seconds, so cap them.
    let nanos = t.nanosecond().min(999_999_999);
    if nanos != 0 {
        let digits = format!("{nanos:09}");
        out.push('.');
        out.push_str(digits.trim_end_matches('0'));
    }
    let offset_secs = t.offset().local_minus_utc();
    if offset_secs == 0 {
        out.push('Z');
    } else {
        // Go truncates the offset to whole minutes.
        let zone = offset_secs / 60;
        let sign = if zone < 0 { '-' } else { '+' };
        let zone = zone.abs();
        let _ = write!(out, "{sign}{:02}:{:02}", zone / 60, zone % 60);
    }
    out
}

/// Parses an RFC 3339 timestamp (any precision, `Z` or numeric offset).
pub fn parse(s: &str) -> Result<DateTime<FixedOffset>, FormatError> {
    let t = DateTime::parse_from_rfc3339(s)
        .map_err(|e| FormatError::invalid("timestamp", format!("{s:?}: {e}")))?;
    // chrono represents second 60 as a nanosecond overflow; Go's time.Parse rejects it, and
    // accepting it would re-encode as :59.999999999 and change tree ids.
    if chrono::Timelike::nanosecond(&t) >= 1_000_000_000 {
        return Err(FormatError::invalid(
            "timestamp",
            format!("{s:?}: second out of range"),
        ));
    }
    Ok(t)
}

/// Parses a duration as Go's `time.ParseDuration` does (`90s`, `1h30m`, `1.5h`, `300ms`),
/// for restic's duration flags such as `--retry-lock`. Negative durations are refused.
pub fn parse_duration(text: &str) -> Result<std::time::Duration, FormatError> {
    let bad = |why: &str| FormatError::invalid("duration", format!("{text:?}: {why}"));
    let s = text.trim();
    let s = s.strip_prefix('+').unwrap_or(s);
    if s.starts_with('-') {
        return Err(bad("negative durations are not allowed"));
    }
    if s == "0" {
        return Ok(std::time::Duration::ZERO);
    }
    if s.is_empty() {
        return Err(bad("empty"));
    }
    let mut rest = s;
    let mut total = 0f64;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| bad("missing unit"))?;
        let value: f64 = rest[..num_len].parse().map_err(|_| bad("bad number"))?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let seconds = match unit {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "" => return Err(bad("missing unit")),
            _ => return Err(bad("unknown unit (use ns, us, ms, s, m or h)")),
        };
        total += value * seconds;
    }
    if !total.is_finite() || total > 1e12 {
        return Err(bad("too large"));
    }
    Ok(std::time::Duration::from_secs_f64(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_string_is_go_time_string() {
        let t = parse("2026-12-07T14:33:07.519211380Z").unwrap();
        assert_eq!(go_string(&t), "2026-12-07 14:33:07.51921138 +0000 UTC");
        let t = parse("2026-12-07T15:00:00+01:00").unwrap();
        assert_eq!(go_string(&t), "2026-12-07 15:00:00 +0100 +0100");
    }
    use chrono::Offset;
    use proptest::prelude::*;

    fn at(s: &str) -> DateTime<FixedOffset> {
        parse(s).unwrap()
    }

    #[test]
    fn rejects_leap_second_like_go() {
        assert!(parse("2016-12-31T23:59:60Z").is_err());
        assert!(parse("2024-05-01T12:00:60.5+02:00").is_err());
    }

    #[test]
    fn formats_like_go() {
        assert_eq!(format(&zero()), "0001-01-01T00:00:00Z");
        assert_eq!(
            format(&at("2015-01-02T18:10:50.895208559+01:00")),
            "2015-01-02T18:10:50.895208559+01:00"
        );
        assert_eq!(
            format(&at("2026-11-21T13:28:03.610100000Z")),
            "2026-11-21T13:28:03.6101Z"
        );
        assert_eq!(
            format(&at("2022-08-25T17:55:00.000+00:00")),
            "2022-08-25T17:55:00Z"
        );
        assert_eq!(
            format(&at("2022-08-25T17:55:00.5-09:30")),
            "2022-08-25T17:55:00.5-09:30"
        );
    }

    #[test]
    fn parses_zero_time_and_rejects_garbage() {
        assert_eq!(at("0001-01-01T00:00:00Z"), zero());
        assert!(parse("yesterday").is_err());
    }

    #[test]
    fn clamps_years_like_restic() {
        let big = Utc
            .with_ymd_and_hms(12000, 2, 29, 1, 2, 3)
            .unwrap()
            .fixed_offset();
        assert_eq!(format(&big), "9999-03-01T01:02:03Z");
        let neg = Utc
            .with_ymd_and_hms(-5, 6, 7, 8, 9, 10)
            .unwrap()
            .fixed_offset();
        assert_eq!(format(&neg), "0000-06-07T08:09:10Z");
    }

    #[test]
    fn from_unix_keeps_the_instant() {
        let t = from_unix(1_661_450_100, 123_456_789);
        assert_eq!(t.timestamp(), 1_661_450_100);
        assert_eq!(t.nanosecond(), 123_456_789);
        let expected = Local
            .timestamp_opt(1_661_450_100, 0)
            .unwrap()
            .offset()
            .fix();
        assert_eq!(*t.offset(), expected);
    }

    proptest! {
        #[test]
        fn format_parse_roundtrip(
            secs in -62_135_596_800i64..253_402_300_799,
            nanos in 0u32..1_000_000_000,
            offset_min in -(23 * 60 + 59)..(23 * 60 + 59),
        ) {
            let offset = FixedOffset::east_opt(offset_min * 60).unwrap();
            let t = DateTime::<Utc>::from_timestamp(secs, nanos).unwrap().with_timezone(&offset);
            prop_assume!((0..=9999).contains(&t.year()));
            let text = format(&t);
            let back = parse(&text).unwrap();
            prop_assert_eq!(back, t);
            prop_assert_eq!(back.offset(), t.offset());
            prop_assert_eq!(format(&back), text);
        }
    }

    #[test]
    fn go_durations() {
        use std::time::Duration;
        let d = |s: &str| parse_duration(s).unwrap();
        assert_eq!(d("0"), Duration::ZERO);
        assert_eq!(d("90s"), Duration::from_secs(90));
        assert_eq!(d("1h30m"), Duration::from_secs(5400));
        assert_eq!(d("1.5h"), Duration::from_secs(5400));
        assert_eq!(d("300ms"), Duration::from_millis(300));
        assert_eq!(d("2m3s"), Duration::from_secs(123));
        for bad in ["", "5", "-1s", "1d", "s", "1.2.3s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
