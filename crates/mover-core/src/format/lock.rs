//! Lock files (`locks/<id>`): the JSON document and the staleness rules. Pure: the caller
//! supplies the current time, the local hostname and a process probe; writing, refreshing
//! and removing locks belong to the repository layer.
//!
//! restic's rule: a lock is stale after 30 minutes, or at once when it was made on this host
//! by a process that is gone. mover's locks also carry `mover_stale_after_seconds`, the age
//! after which the process that wrote it promises it has either refreshed it or stopped;
//! restic ignores the field (Go's JSON decoder skips unknown keys).

use crate::format::{FormatError, gojson, gotime};
use chrono::{DateTime, FixedOffset, TimeDelta};
use serde::Deserialize;

/// A lock older than this is stale whatever its host (restic's `staleTimeout`).
pub const STALE_AFTER: TimeDelta = TimeDelta::minutes(30);

/// One lock file's content.
#[derive(Debug, Clone, PartialEq)]
pub struct LockFile {
    pub time: DateTime<FixedOffset>,
    pub exclusive: bool,
    pub hostname: String,
    pub username: String,
    pub pid: u32,
    pub uid: u32,
    pub gid: u32,
    /// mover's promise: this lock is refreshed (or its process has stopped) before it is
    /// this old. `None` for restic's locks.
    pub stale_after_seconds: Option<u32>,
}

#[derive(Deserialize)]
struct RawLock {
    #[serde(default)]
    time: Option<String>,
    #[serde(default)]
    exclusive: Option<bool>,
    #[serde(default)]
    hostname: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    pid: Option<u32>,
    #[serde(default)]
    uid: Option<u32>,
    #[serde(default)]
    gid: Option<u32>,
    #[serde(default)]
    mover_stale_after_seconds: Option<u32>,
}

impl LockFile {
    /// The lock JSON as restic writes it (`json.Marshal`, no trailing newline).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(160);
        out.extend_from_slice(b"{\"time\":");
        gojson::write_string(&mut out, gotime::format(&self.time).as_bytes());
        out.extend_from_slice(b",\"exclusive\":");
        out.extend_from_slice(if self.exclusive { b"true" } else { b"false" });
        out.extend_from_slice(b",\"hostname\":");
        gojson::write_string(&mut out, self.hostname.as_bytes());
        out.extend_from_slice(b",\"username\":");
        gojson::write_string(&mut out, self.username.as_bytes());
        out.extend_from_slice(b",\"pid\":");
        out.extend_from_slice(self.pid.to_string().as_bytes());
        if self.uid != 0 {
            out.extend_from_slice(b",\"uid\":");
            out.extend_from_slice(self.uid.to_string().as_bytes());
        }
        if self.gid != 0 {
            out.extend_from_slice(b",\"gid\":");
            out.extend_from_slice(self.gid.to_string().as_bytes());
        }
        if let Some(s) = self.stale_after_seconds {
            out.extend_from_slice(b",\"mover_stale_after_seconds\":");
            out.extend_from_slice(s.to_string().as_bytes());
        }
        out.push(b'}');
        out
    }

    /// Parses a lock file's JSON; missing fields take Go's zero values.
    pub fn decode(bytes: &[u8]) -> Result<LockFile, FormatError> {
        let raw: RawLock = serde_json::from_slice(bytes).map_err(|source| FormatError::Json {
            what: "lock",
            source,
        })?;
        let time = match raw.time {
            Some(t) => gotime::parse(&t)?,
            None => gotime::zero(),
        };
        Ok(LockFile {
            time,
            exclusive: raw.exclusive.unwrap_or_default(),
            hostname: raw.hostname.unwrap_or_default(),
            username: raw.username.unwrap_or_default(),
            pid: raw.pid.unwrap_or_default(),
            uid: raw.uid.unwrap_or_default(),
            gid: raw.gid.unwrap_or_default(),
            stale_after_seconds: raw.mover_stale_after_seconds,
        })
    }

    /// Stale when older than 30 minutes (restic), older than the age its writer promised to
    /// refresh it by (mover's locks), or made on this host by a process that no longer
    /// exists. Otherwise locks from other hosts are trusted.
    pub fn is_stale(
        &self,
        now: DateTime<FixedOffset>,
        local_hostname: &str,
        pid_exists: impl Fn(u32) -> bool,
    ) -> bool {
        self.stale_reason(now, local_hostname, pid_exists).is_some()
    }

    /// Why [`LockFile::is_stale`] holds, in words for a log line; `None` for a live lock.
    pub fn stale_reason(
        &self,
        now: DateTime<FixedOffset>,
        local_hostname: &str,
        pid_exists: impl Fn(u32) -> bool,
    ) -> Option<String> {
        let age = now.signed_duration_since(self.time);
        if age > STALE_AFTER {
            return Some(format!(
                "not refreshed for {} minutes (restic's limit is 30)",
                age.num_minutes()
            ));
        }
        if let Some(limit) = self.stale_after_seconds {
            if age > TimeDelta::seconds(i64::from(limit)) {
                return Some(format!(
                    "not refreshed for {} s, past the {limit} s its writer refreshes within",
                    age.num_seconds()
                ));
            }
        }
        if self.hostname == local_hostname && !pid_exists(self.pid) {
            return Some(format!(
                "process {} on this host ({}) no longer exists",
                self.pid, self.hostname
            ));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const EXAMPLE: &str = r#"{"time":"2026-11-21T13:26:01.166702705Z","exclusive":false,"hostname":"vm","username":"root","pid":15486}"#;

    fn example() -> LockFile {
        LockFile {
            time: gotime::parse("2026-11-21T13:26:01.166702705Z").unwrap(),
            exclusive: false,
            hostname: "vm".into(),
            username: "root".into(),
            pid: 15486,
            uid: 0,
            gid: 0,
            stale_after_seconds: None,
        }
    }

    #[test]
    fn encodes_the_spec_example() {
        assert_eq!(String::from_utf8(example().encode()).unwrap(), EXAMPLE);
        assert_eq!(LockFile::decode(EXAMPLE.as_bytes()).unwrap(), example());
        let user = LockFile {
            exclusive: true,
            uid: 1000,
            gid: 1001,
            ..example()
        };
        assert_eq!(
            String::from_utf8(user.encode()).unwrap(),
            r#"{"time":"2026-11-21T13:26:01.166702705Z","exclusive":true,"hostname":"vm","username":"root","pid":15486,"uid":1000,"gid":1001}"#
        );
    }

    #[test]
    fn decode_errors_name_the_lock() {
        let err = LockFile::decode(b"{").unwrap_err();
        assert!(err.to_string().contains("lock"), "{err}");
        assert!(LockFile::decode(br#"{"time":"soon"}"#).is_err());
        assert_eq!(
            LockFile::decode(b"{\"x\":1}\n").unwrap().time,
            gotime::zero()
        );
    }

    #[test]
    fn staleness() {
        let lock = example();
        let t = |s: &str| gotime::parse(s).unwrap();
        let alive = |_| true;
        let dead = |_| false;
        let soon = t("2026-11-21T13:50:00Z");
        assert!(!lock.is_stale(soon, "vm", alive));
        assert!(lock.is_stale(soon, "vm", dead));
        assert!(!lock.is_stale(soon, "other", dead));
        let late = t("2026-11-21T13:56:01.166702706Z");
        assert!(lock.is_stale(late, "other", alive));
        // Exactly 30 minutes is not yet stale; offsets do not matter.
        assert!(!lock.is_stale(t("2026-11-21T14:56:01.166702705+01:00"), "x", alive));
        let probed = std::cell::Cell::new(0);
        lock.is_stale(soon, "vm", |pid| {
            probed.set(pid);
            true
        });
        assert_eq!(probed.get(), 15486);
    }

    #[test]
    fn movers_promise_makes_a_lock_stale_sooner_on_any_host() {
        let t = |s: &str| gotime::parse(s).unwrap();
        let lock = LockFile {
            stale_after_seconds: Some(900),
            hostname: "pod-a".into(),
            ..example()
        };
        let json = String::from_utf8(lock.encode()).unwrap();
        assert!(
            json.ends_with(r#","mover_stale_after_seconds":900}"#),
            "{json}"
        );
        assert_eq!(LockFile::decode(json.as_bytes()).unwrap(), lock);
        let alive = |_| true;
        // 14 minutes old: live; 16: stale, whatever host reads it.
        assert!(!lock.is_stale(t("2026-11-21T13:40:01Z"), "pod-b", alive));
        let reason = lock
            .stale_reason(t("2026-11-21T13:42:02Z"), "pod-b", alive)
            .expect("stale");
        assert!(reason.contains("900 s"), "{reason}");
        // restic's locks keep restic's 30 minutes.
        assert!(!example().is_stale(t("2026-11-21T13:42:02Z"), "pod-b", alive));
    }

    proptest! {
        #[test]
        fn encode_decode_roundtrip(
            secs in 0i64..253_402_300_799,
            nanos in 0u32..1_000_000_000,
            exclusive in any::<bool>(),
            hostname in any::<String>(),
            username in any::<String>(),
            (pid, uid, gid) in any::<(u32, u32, u32)>(),
        ) {
            let lock = LockFile {
                time: DateTime::from_timestamp(secs, nanos).unwrap().fixed_offset(),
                exclusive, hostname, username, pid, uid, gid,
                stale_after_seconds: pid.checked_rem(3).filter(|r| *r == 0).map(|_| uid),
            };
            let bytes = lock.encode();
            let back = LockFile::decode(&bytes).unwrap();
            prop_assert_eq!(back.encode(), bytes);
            prop_assert_eq!(back, lock);
        }
    }
}
