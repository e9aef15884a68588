//! restic's keep policy (`forget --keep-*`), decision for decision: the same buckets, the
//! same "oldest" rule, the same reasons, the same calendar arithmetic. Pure: snapshot times
//! and tags in, keep or remove out; `now` is a parameter.
//!
//! The rules are restic 0.16+'s (what 0.18 and VolSync run): `unlimited` counts, and while a
//! bucket still has counts left the oldest snapshot of the group is kept too. restic 0.14
//! had neither; it also kept everything under an empty policy, which the caller refuses.

use chrono::{
    DateTime, Datelike, Duration as TimeDelta, FixedOffset, NaiveDate, TimeZone, Timelike,
};

/// restic's calendar duration for `--keep-within*` (`1y5m7d2h`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CalendarDuration {
    pub years: i32,
    pub months: i32,
    pub days: i32,
    pub hours: i32,
}

impl CalendarDuration {
    /// Parses restic's format: numbers each followed by `y`, `m`, `d` or `h`.
    pub fn parse(text: &str) -> Result<CalendarDuration, String> {
        let mut d = CalendarDuration::default();
        let mut rest = text.trim();
        while !rest.is_empty() {
            let (negative, body) = match rest.strip_prefix('-') {
                Some(b) => (true, b),
                None => (false, rest),
            };
            let digits = body
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(body.len());
            if digits == 0 {
                return Err(format!("invalid duration {text:?}: no number found"));
            }
            let mut n: i32 = body[..digits]
                .parse()
                .map_err(|_| format!("invalid duration {text:?}: number too large"))?;
            if negative {
                n = -n;
            }
            let unit = body[digits..].chars().next().ok_or_else(|| {
                format!("invalid duration {text:?}: no unit found after number {n}")
            })?;
            match unit {
                'y' => d.years = n,
                'm' => d.months = n,
                'd' => d.days = n,
                'h' => d.hours = n,
                other => {
                    return Err(format!(
                        "invalid duration {text:?}: invalid unit {other:?} found after number {n}"
                    ));
                }
            }
            rest = &body[digits + unit.len_utf8()..];
        }
        Ok(d)
    }

    pub fn is_zero(&self) -> bool {
        *self == CalendarDuration::default()
    }

    pub fn is_negative(&self) -> bool {
        self.years < 0 || self.months < 0 || self.days < 0 || self.hours < 0
    }

    /// `t` minus this duration, as Go's `t.AddDate(-y, -m, -d).Add(-h hours)`.
    fn before(&self, t: DateTime<FixedOffset>) -> DateTime<FixedOffset> {
        add_date(t, -self.years, -self.months, -self.days) - TimeDelta::hours(i64::from(self.hours))
    }
}

impl std::fmt::Display for CalendarDuration {
    /// restic's `Duration.String`: `1y2m3d4h`, zero parts left out.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (n, unit) in [
            (self.years, 'y'),
            (self.months, 'm'),
            (self.days, 'd'),
            (self.hours, 'h'),
        ] {
            if n != 0 {
                write!(f, "{n}{unit}")?;
            }
        }
        Ok(())
    }
}

/// Go's `AddDate`: add to year, month and day, then normalize (January 31 plus one month is
/// March 3 in a common year), keeping the time of day and the offset.
fn add_date(t: DateTime<FixedOffset>, years: i32, months: i32, days: i32) -> DateTime<FixedOffset> {
    let local = t.naive_local();
    let month0 = i64::from(local.month0()) + i64::from(months);
    let year = i64::from(local.year()) + i64::from(years) + month0.div_euclid(12);
    let month = (month0.rem_euclid(12) + 1) as u32;
    let day_offset = i64::from(local.day()) - 1 + i64::from(days);
    let date = i32::try_from(year)
        .ok()
        .and_then(|y| NaiveDate::from_ymd_opt(y, month, 1))
        .and_then(|first| first.checked_add_signed(TimeDelta::days(day_offset)));
    match date {
        Some(date) => t
            .offset()
            .from_local_datetime(&date.and_time(local.time()))
            .single()
            .unwrap_or(t),
        // Beyond chrono's range: no snapshot is that old, so nothing is within.
        None => t,
    }
}

/// The `--keep-*` options. A count of -1 is `unlimited`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KeepPolicy {
    pub last: i64,
    pub hourly: i64,
    pub daily: i64,
    pub weekly: i64,
    pub monthly: i64,
    pub yearly: i64,
    pub within: CalendarDuration,
    pub within_hourly: CalendarDuration,
    pub within_daily: CalendarDuration,
    pub within_weekly: CalendarDuration,
    pub within_monthly: CalendarDuration,
    pub within_yearly: CalendarDuration,
    /// `--keep-tag` lists: a snapshot with every tag of one list is kept.
    pub tags: Vec<Vec<String>>,
}

impl KeepPolicy {
    /// No `--keep-*` option given.
    pub fn is_empty(&self) -> bool {
        *self == KeepPolicy::default()
    }

    /// restic's refusal of negative values (other than `unlimited`).
    pub fn validate(&self) -> Result<(), String> {
        let counts = [
            self.last,
            self.hourly,
            self.daily,
            self.weekly,
            self.monthly,
            self.yearly,
        ];
        if counts.iter().any(|&c| c < -1) {
            return Err("negative values other than -1 are not allowed for --keep-*".into());
        }
        let durations = [
            self.within,
            self.within_hourly,
            self.within_daily,
            self.within_weekly,
            self.within_monthly,
            self.within_yearly,
        ];
        if durations.iter().any(CalendarDuration::is_negative) {
            return Err(
                "durations containing negative values are not allowed for --keep-within*".into(),
            );
        }
        Ok(())
    }
}

/// Retention as any front end states it (restic's `--keep-*` flags, a CRD's `retention`):
/// counts, `keep-within*` durations as text, and tag lists as comma-separated text. The one
/// way to a [`KeepPolicy`]: `KeepPolicy::try_from(&request)` parses and validates it, and
/// its errors name restic's flag.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeepRequest {
    pub last: Option<i64>,
    pub hourly: Option<i64>,
    pub daily: Option<i64>,
    pub weekly: Option<i64>,
    pub monthly: Option<i64>,
    pub yearly: Option<i64>,
    pub within: Option<String>,
    pub within_hourly: Option<String>,
    pub within_daily: Option<String>,
    pub within_weekly: Option<String>,
    pub within_monthly: Option<String>,
    pub within_yearly: Option<String>,
    /// Each a comma-separated list: a snapshot with every tag of one list is kept.
    pub tags: Vec<String>,
}

impl TryFrom<&KeepRequest> for KeepPolicy {
    type Error = String;

    fn try_from(r: &KeepRequest) -> Result<KeepPolicy, String> {
        let duration = |flag: &str, v: &Option<String>| match v {
            None => Ok(CalendarDuration::default()),
            Some(s) => CalendarDuration::parse(s).map_err(|e| format!("--{flag} {s:?}: {e}")),
        };
        let policy = KeepPolicy {
            last: r.last.unwrap_or(0),
            hourly: r.hourly.unwrap_or(0),
            daily: r.daily.unwrap_or(0),
            weekly: r.weekly.unwrap_or(0),
            monthly: r.monthly.unwrap_or(0),
            yearly: r.yearly.unwrap_or(0),
            within: duration("keep-within", &r.within)?,
            within_hourly: duration("keep-within-hourly", &r.within_hourly)?,
            within_daily: duration("keep-within-daily", &r.within_daily)?,
            within_weekly: duration("keep-within-weekly", &r.within_weekly)?,
            within_monthly: duration("keep-within-monthly", &r.within_monthly)?,
            within_yearly: duration("keep-within-yearly", &r.within_yearly)?,
            // restic's tag lists: split at commas, spaces trimmed, empty tags kept.
            tags: r
                .tags
                .iter()
                .map(|l| l.split(',').map(|t| t.trim().to_string()).collect())
                .collect(),
        };
        policy.validate()?;
        Ok(policy)
    }
}

impl std::fmt::Display for KeepPolicy {
    /// restic's `ExpirePolicy.String` ("keep 3 latest, 7 daily snapshots, ...").
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut counts = Vec::new();
        for (n, what) in [
            (self.last, "latest"),
            (self.hourly, "hourly"),
            (self.daily, "daily"),
            (self.weekly, "weekly"),
            (self.monthly, "monthly"),
            (self.yearly, "yearly"),
        ] {
            if n > 0 {
                counts.push(format!("{n} {what}"));
            } else if n == -1 {
                counts.push(format!("all {what}"));
            }
        }
        let mut within = Vec::new();
        for (d, what) in [
            (self.within_hourly, "hourly"),
            (self.within_daily, "daily"),
            (self.within_weekly, "weekly"),
            (self.within_monthly, "monthly"),
            (self.within_yearly, "yearly"),
        ] {
            if !d.is_zero() {
                within.push(format!("{what} snapshots within {d}"));
            }
        }
        let mut s = String::new();
        if !counts.is_empty() {
            s = format!("{} snapshots", counts.join(", "));
        }
        if !within.is_empty() {
            if !s.is_empty() {
                s.push_str(", ");
            }
            s.push_str(&within.join(", "));
        }
        if !self.tags.is_empty() {
            if !s.is_empty() {
                s.push_str(" and ");
            }
            let lists: Vec<String> = self.tags.iter().map(|l| tag_list(l)).collect();
            s.push_str(&format!("all snapshots with tags [{}]", lists.join(" ")));
        }
        if !self.within.is_zero() {
            if !s.is_empty() {
                s.push_str(" and ");
            }
            s.push_str(&format!(
                "all snapshots within {} of the newest",
                self.within
            ));
        }
        if s.is_empty() {
            write!(f, "remove")
        } else {
            write!(f, "keep {s}")
        }
    }
}

/// Go's `TagList.String`: `[a, b]`.
fn tag_list(tags: &[String]) -> String {
    format!("[{}]", tags.join(", "))
}

/// One snapshot as the policy sees it.
#[derive(Debug, Clone)]
pub struct PolicySnapshot<'a> {
    pub time: DateTime<FixedOffset>,
    pub tags: &'a [String],
}

/// The decision for one snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Position in the input list.
    pub index: usize,
    pub keep: bool,
    /// Why it is kept (restic's wording); empty when removed.
    pub reasons: Vec<String>,
}

/// restic's `HasTags`: every tag of `list` is present; an empty tag matches a snapshot
/// without tags.
pub fn has_tags(snapshot_tags: &[String], list: &[String]) -> bool {
    for tag in list {
        if tag.is_empty() && snapshot_tags.is_empty() {
            return true;
        }
        if !snapshot_tags.iter().any(|t| t == tag) {
            return false;
        }
    }
    true
}

fn ymdh(t: &DateTime<FixedOffset>) -> i64 {
    i64::from(t.year()) * 1_000_000
        + i64::from(t.month()) * 10_000
        + i64::from(t.day()) * 100
        + i64::from(t.hour())
}

fn ymd(t: &DateTime<FixedOffset>) -> i64 {
    i64::from(t.year()) * 10_000 + i64::from(t.month()) * 100 + i64::from(t.day())
}

fn yw(t: &DateTime<FixedOffset>) -> i64 {
    let w = t.iso_week();
    i64::from(w.year()) * 100 + i64::from(w.week())
}

fn ym(t: &DateTime<FixedOffset>) -> i64 {
    i64::from(t.year()) * 100 + i64::from(t.month())
}

fn y(t: &DateTime<FixedOffset>) -> i64 {
    i64::from(t.year())
}

type Bucker = fn(&DateTime<FixedOffset>) -> i64;

/// Applies `policy` to one group. Decisions come newest first (ties in input order), as
/// restic sorts the group; `now` decides which snapshots lie in the future (they do not
/// count as the newest for `--keep-within*`).
pub fn apply(
    snapshots: &[PolicySnapshot<'_>],
    policy: &KeepPolicy,
    now: DateTime<FixedOffset>,
) -> Vec<Decision> {
    let mut order: Vec<usize> = (0..snapshots.len()).collect();
    order.sort_by(|&a, &b| snapshots[b].time.cmp(&snapshots[a].time));
    if order.is_empty() {
        return Vec::new();
    }
    // The newest snapshot not in the future; Go's zero time when there is none.
    let latest = snapshots
        .iter()
        .map(|s| s.time)
        .filter(|t| *t < now)
        .max()
        .unwrap_or_else(crate::format::gotime::zero);

    struct Counted {
        count: i64,
        bucker: Option<Bucker>,
        last: Option<i64>,
        reason: &'static str,
    }
    let mut counted = [
        (policy.last, None, "last snapshot"),
        (policy.hourly, Some(ymdh as Bucker), "hourly snapshot"),
        (policy.daily, Some(ymd as Bucker), "daily snapshot"),
        (policy.weekly, Some(yw as Bucker), "weekly snapshot"),
        (policy.monthly, Some(ym as Bucker), "monthly snapshot"),
        (policy.yearly, Some(y as Bucker), "yearly snapshot"),
    ]
    .map(|(count, bucker, reason)| Counted {
        count,
        bucker,
        last: None,
        reason,
    });
    struct Within {
        within: CalendarDuration,
        bucker: Bucker,
        last: Option<i64>,
        reason: &'static str,
    }
    let mut within = [
        (policy.within_hourly, ymdh as Bucker, "hourly within"),
        (policy.within_daily, ymd as Bucker, "daily within"),
        (policy.within_weekly, yw as Bucker, "weekly within"),
        (policy.within_monthly, ym as Bucker, "monthly within"),
        (policy.within_yearly, y as Bucker, "yearly within"),
    ]
    .map(|(within, bucker, reason)| Within {
        within,
        bucker,
        last: None,
        reason,
    });

    let oldest = order.len() - 1;
    let mut out = Vec::with_capacity(order.len());
    for (nr, &index) in order.iter().enumerate() {
        let cur = &snapshots[index];
        let mut reasons = Vec::new();
        for list in &policy.tags {
            if has_tags(cur.tags, list) {
                reasons.push(format!("has tags {}", tag_list(list)));
            }
        }
        if !policy.within.is_zero() && cur.time > policy.within.before(latest) {
            reasons.push(format!("within {}", policy.within));
        }
        for b in &mut counted {
            if b.count > 0 || b.count == -1 {
                // "last" numbers the snapshots: every one is a bucket of its own.
                let val = b.bucker.map_or(nr as i64, |f| f(&cur.time));
                if b.last != Some(val) || nr == oldest {
                    let reason = if b.last == Some(val) {
                        format!("oldest {}", b.reason)
                    } else {
                        b.reason.to_string()
                    };
                    b.last = Some(val);
                    if b.count > 0 {
                        b.count -= 1;
                    }
                    reasons.push(reason);
                }
            }
        }
        for b in &mut within {
            if !b.within.is_zero() && cur.time > b.within.before(latest) {
                let val = (b.bucker)(&cur.time);
                if b.last != Some(val) || nr == oldest {
                    let reason = if b.last == Some(val) {
                        format!("oldest {}", b.reason)
                    } else {
                        b.reason.to_string()
                    };
                    b.last = Some(val);
                    reasons.push(format!("{reason} {}", b.within));
                }
            }
        }
        out.push(Decision {
            index,
            keep: !reasons.is_empty(),
            reasons,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::gotime;

    fn t(s: &str) -> DateTime<FixedOffset> {
        gotime::parse(s).unwrap()
    }

    fn kept(snaps: &[&str], policy: &KeepPolicy) -> Vec<(usize, Vec<String>)> {
        let snaps: Vec<PolicySnapshot> = snaps
            .iter()
            .map(|s| PolicySnapshot {
                time: t(s),
                tags: &[],
            })
            .collect();
        apply(&snaps, policy, t("2030-01-01T00:00:00Z"))
            .into_iter()
            .filter(|d| d.keep)
            .map(|d| (d.index, d.reasons))
            .collect()
    }

    #[test]
    fn durations_parse_and_print_as_restic() {
        let d = CalendarDuration::parse("1y2m3d4h").unwrap();
        assert_eq!((d.years, d.months, d.days, d.hours), (1, 2, 3, 4));
        assert_eq!(d.to_string(), "1y2m3d4h");
        assert_eq!(CalendarDuration::parse("36h").unwrap().to_string(), "36h");
        assert!(CalendarDuration::parse("-1d").unwrap().is_negative());
        for bad in ["d", "5", "1x", "1.5d"] {
            assert!(CalendarDuration::parse(bad).is_err(), "{bad}");
        }
        assert!(CalendarDuration::parse("").unwrap().is_zero());
    }

    #[test]
    fn add_date_normalizes_like_go() {
        // Go: time.Date(2021, 3, 31, ...).AddDate(0, -1, 0) is March 3 (February 31).
        assert_eq!(
            add_date(t("2021-03-31T10:00:00+02:00"), 0, -1, 0),
            t("2021-03-03T10:00:00+02:00")
        );
        assert_eq!(
            add_date(t("2024-02-29T00:00:00Z"), -1, 0, 0),
            t("2023-03-01T00:00:00Z")
        );
        assert_eq!(
            add_date(t("2024-01-01T05:00:00Z"), 0, 0, -1),
            t("2023-12-31T05:00:00Z")
        );
        assert_eq!(
            add_date(t("2024-01-15T05:00:00Z"), 0, -13, 0),
            t("2022-12-15T05:00:00Z")
        );
    }

    #[test]
    fn last_and_daily_with_the_oldest_rule() {
        let snaps = [
            "2026-11-20T10:00:00Z",
            "2026-11-21T09:00:00Z",
            "2026-11-21T18:00:00Z",
            "2026-11-22T08:00:00Z",
        ];
        let policy = KeepPolicy {
            last: 1,
            ..KeepPolicy::default()
        };
        assert_eq!(
            kept(&snaps, &policy),
            vec![(3, vec!["last snapshot".into()])]
        );
        // Five days asked, three days present: each day's newest, then the oldest too.
        let policy = KeepPolicy {
            daily: 5,
            ..KeepPolicy::default()
        };
        let got = kept(&snaps, &policy);
        assert_eq!(
            got.iter().map(|k| k.0).collect::<Vec<_>>(),
            vec![3, 2, 0],
            "{got:?}"
        );
        // Two days asked: no count is left for the oldest.
        let policy = KeepPolicy {
            daily: 2,
            ..KeepPolicy::default()
        };
        assert_eq!(
            kept(&snaps, &policy)
                .iter()
                .map(|k| k.0)
                .collect::<Vec<_>>(),
            vec![3, 2]
        );
        // Same day for all: the newest, and the oldest as "oldest daily snapshot".
        let same = [
            "2026-11-21T01:00:00Z",
            "2026-11-21T02:00:00Z",
            "2026-11-21T03:00:00Z",
        ];
        let got = kept(&same, &policy);
        assert_eq!(
            got,
            vec![
                (2, vec!["daily snapshot".to_string()]),
                (0, vec!["oldest daily snapshot".to_string()])
            ]
        );
    }

    #[test]
    fn within_counts_from_the_newest_snapshot_not_now() {
        let snaps = [
            "2020-01-01T00:00:00Z",
            "2020-01-02T00:00:00Z",
            "2020-01-03T12:00:00Z",
        ];
        let policy = KeepPolicy {
            within: CalendarDuration::parse("1d").unwrap(),
            ..KeepPolicy::default()
        };
        let got = kept(&snaps, &policy);
        assert_eq!(got, vec![(2, vec!["within 1d".to_string()])]);
        let policy = KeepPolicy {
            within_daily: CalendarDuration::parse("2d").unwrap(),
            ..KeepPolicy::default()
        };
        let got = kept(&snaps, &policy);
        assert_eq!(
            got,
            vec![
                (2, vec!["daily within 2d".to_string()]),
                (1, vec!["daily within 2d".to_string()])
            ]
        );
    }

    #[test]
    fn tags_weeks_and_unlimited() {
        let tagged = vec!["keep".to_string()];
        let none: Vec<String> = Vec::new();
        let snaps = [
            PolicySnapshot {
                time: t("2026-01-04T00:00:00Z"), // ISO week 2026-01 (Sunday)
                tags: &tagged,
            },
            PolicySnapshot {
                time: t("2026-01-05T00:00:00Z"), // ISO week 2026-02 (Monday)
                tags: &none,
            },
            PolicySnapshot {
                time: t("2026-01-06T00:00:00Z"),
                tags: &none,
            },
        ];
        let policy = KeepPolicy {
            weekly: -1,
            tags: vec![vec!["keep".into()]],
            ..KeepPolicy::default()
        };
        let got = apply(&snaps, &policy, t("2030-01-01T00:00:00Z"));
        let keep: Vec<(usize, bool)> = got.iter().map(|d| (d.index, d.keep)).collect();
        assert_eq!(keep, vec![(2, true), (1, false), (0, true)]);
        assert_eq!(
            got[2].reasons,
            vec!["has tags [keep]".to_string(), "weekly snapshot".to_string()]
        );
        assert_eq!(
            policy.to_string(),
            "keep all weekly snapshots and all snapshots with tags [[keep]]"
        );
        assert_eq!(KeepPolicy::default().to_string(), "remove");
    }

    #[test]
    fn future_snapshots_are_not_the_newest() {
        let snaps = [
            "2026-01-01T00:00:00Z",
            "2026-06-01T00:00:00Z",
            "2031-01-01T00:00:00Z",
        ];
        let policy = KeepPolicy {
            within: CalendarDuration::parse("1m").unwrap(),
            ..KeepPolicy::default()
        };
        // Relative to 2026-06-01 (now is 2030): the June snapshot and the future one.
        let got: Vec<usize> = kept(&snaps, &policy).iter().map(|k| k.0).collect();
        assert_eq!(got, vec![2, 1]);
    }
}
