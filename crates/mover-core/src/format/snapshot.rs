//! Snapshot files (`snapshots/<id>`): the JSON document, written in Go's field order with
//! Go's omitempty rules, plus restic's snapshot filters and the `snapshots --json` shape.
//! Pure: no I/O, no encryption or compression (the repository layer does those).

use crate::format::{FormatError, SnapshotId, TreeId, gojson, gotime};
use chrono::{DateTime, FixedOffset};
use serde::Deserialize;
use serde_json::{Map, Value};

/// Totals restic 0.17+ stores with a snapshot.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SnapshotSummary {
    pub backup_start: DateTime<FixedOffset>,
    pub backup_end: DateTime<FixedOffset>,
    pub files_new: u64,
    pub files_changed: u64,
    pub files_unmodified: u64,
    pub dirs_new: u64,
    pub dirs_changed: u64,
    pub dirs_unmodified: u64,
    pub data_blobs: u64,
    pub tree_blobs: u64,
    pub data_added: u64,
    pub data_added_packed: u64,
    pub total_files_processed: u64,
    pub total_bytes_processed: u64,
}

/// One snapshot file's content.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SnapshotFile {
    pub time: DateTime<FixedOffset>,
    pub parent: Option<SnapshotId>,
    pub tree: TreeId,
    pub paths: Vec<String>,
    pub hostname: String,
    pub username: String,
    pub uid: u32,
    pub gid: u32,
    pub excludes: Vec<String>,
    pub tags: Vec<String>,
    pub original: Option<SnapshotId>,
    pub program_version: String,
    pub summary: Option<SnapshotSummary>,
}

/// A JSON value whose object keys keep the order given (Go struct field order).
enum Ordered {
    Plain(Value),
    Object(Vec<(&'static str, Ordered)>),
}

impl Ordered {
    fn write(&self, out: &mut Vec<u8>) {
        match self {
            Ordered::Plain(v) => gojson::write_value(out, v),
            Ordered::Object(fields) => {
                out.push(b'{');
                for (i, (k, v)) in fields.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    gojson::write_string(out, k.as_bytes());
                    out.push(b':');
                    v.write(out);
                }
                out.push(b'}');
            }
        }
    }

    fn into_value(self) -> Value {
        match self {
            Ordered::Plain(v) => v,
            Ordered::Object(fields) => Value::Object(
                fields
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v.into_value()))
                    .collect::<Map<String, Value>>(),
            ),
        }
    }
}

fn time_value(t: &DateTime<FixedOffset>) -> Ordered {
    Ordered::Plain(Value::String(gotime::format(t)))
}

fn uint(v: u64) -> Ordered {
    Ordered::Plain(Value::from(v))
}

fn strings(list: &[String]) -> Ordered {
    Ordered::Plain(Value::from(list.to_vec()))
}

impl SnapshotSummary {
    fn fields(&self) -> Ordered {
        Ordered::Object(vec![
            ("backup_start", time_value(&self.backup_start)),
            ("backup_end", time_value(&self.backup_end)),
            ("files_new", uint(self.files_new)),
            ("files_changed", uint(self.files_changed)),
            ("files_unmodified", uint(self.files_unmodified)),
            ("dirs_new", uint(self.dirs_new)),
            ("dirs_changed", uint(self.dirs_changed)),
            ("dirs_unmodified", uint(self.dirs_unmodified)),
            ("data_blobs", uint(self.data_blobs)),
            ("tree_blobs", uint(self.tree_blobs)),
            ("data_added", uint(self.data_added)),
            ("data_added_packed", uint(self.data_added_packed)),
            ("total_files_processed", uint(self.total_files_processed)),
            ("total_bytes_processed", uint(self.total_bytes_processed)),
        ])
    }
}

impl SnapshotFile {
    /// The fields restic's Go struct marshals, in its order, omitempty applied.
    fn fields(&self) -> Vec<(&'static str, Ordered)> {
        let mut f = vec![("time", time_value(&self.time))];
        if let Some(parent) = &self.parent {
            f.push(("parent", Ordered::Plain(Value::String(parent.to_hex()))));
        }
        f.push(("tree", Ordered::Plain(Value::String(self.tree.to_hex()))));
        f.push(("paths", strings(&self.paths)));
        let text = |s: &str| Ordered::Plain(Value::String(s.to_string()));
        if !self.hostname.is_empty() {
            f.push(("hostname", text(&self.hostname)));
        }
        if !self.username.is_empty() {
            f.push(("username", text(&self.username)));
        }
        if self.uid != 0 {
            f.push(("uid", uint(u64::from(self.uid))));
        }
        if self.gid != 0 {
            f.push(("gid", uint(u64::from(self.gid))));
        }
        if !self.excludes.is_empty() {
            f.push(("excludes", strings(&self.excludes)));
        }
        if !self.tags.is_empty() {
            f.push(("tags", strings(&self.tags)));
        }
        if let Some(original) = &self.original {
            f.push(("original", Ordered::Plain(Value::String(original.to_hex()))));
        }
        if !self.program_version.is_empty() {
            f.push(("program_version", text(&self.program_version)));
        }
        if let Some(summary) = &self.summary {
            f.push(("summary", summary.fields()));
        }
        f
    }

    /// The snapshot JSON as restic writes it (`json.Marshal`, no trailing newline).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        Ordered::Object(self.fields()).write(&mut out);
        out
    }

    /// Parses a snapshot file's JSON. Unknown fields (`supersedes`, rustic's extras) are
    /// ignored; a trailing newline (2015-era files) is fine.
    pub fn decode(bytes: &[u8]) -> Result<SnapshotFile, FormatError> {
        let raw: RawSnapshot =
            serde_json::from_slice(bytes).map_err(|source| FormatError::Json {
                what: "snapshot",
                source,
            })?;
        let time = |t: Option<String>| match t {
            Some(t) => gotime::parse(&t),
            None => Ok(gotime::zero()),
        };
        let summary = match raw.summary {
            None => None,
            Some(s) => Some(SnapshotSummary {
                backup_start: time(s.backup_start)?,
                backup_end: time(s.backup_end)?,
                files_new: s.files_new.unwrap_or_default(),
                files_changed: s.files_changed.unwrap_or_default(),
                files_unmodified: s.files_unmodified.unwrap_or_default(),
                dirs_new: s.dirs_new.unwrap_or_default(),
                dirs_changed: s.dirs_changed.unwrap_or_default(),
                dirs_unmodified: s.dirs_unmodified.unwrap_or_default(),
                data_blobs: s.data_blobs.unwrap_or_default(),
                tree_blobs: s.tree_blobs.unwrap_or_default(),
                data_added: s.data_added.unwrap_or_default(),
                data_added_packed: s.data_added_packed.unwrap_or_default(),
                total_files_processed: s.total_files_processed.unwrap_or_default(),
                total_bytes_processed: s.total_bytes_processed.unwrap_or_default(),
            }),
        };
        Ok(SnapshotFile {
            time: time(raw.time)?,
            parent: raw.parent,
            tree: raw
                .tree
                .ok_or_else(|| FormatError::invalid("snapshot", "no tree id"))?,
            paths: raw.paths.unwrap_or_default(),
            hostname: raw.hostname.unwrap_or_default(),
            username: raw.username.unwrap_or_default(),
            uid: raw.uid.unwrap_or_default(),
            gid: raw.gid.unwrap_or_default(),
            excludes: raw.excludes.unwrap_or_default(),
            tags: raw.tags.unwrap_or_default(),
            original: raw.original,
            program_version: raw.program_version.unwrap_or_default(),
            summary,
        })
    }

    /// The object restic's `snapshots --json` prints for this snapshot: its fields, then
    /// `id` and `short_id`.
    pub fn to_listing_json(&self, id: &SnapshotId) -> Value {
        let mut fields = self.fields();
        fields.push(("id", Ordered::Plain(Value::String(id.to_hex()))));
        fields.push(("short_id", Ordered::Plain(Value::String(id.short()))));
        Ordered::Object(fields).into_value()
    }

    /// restic's snapshot filter. Empty filters match everything. `hosts`: the hostname is
    /// one of them. `paths`: every given path is among the snapshot's paths. `tags`: each
    /// entry is a comma-separated list whose tags must all be present; any entry may match,
    /// and an empty tag matches a snapshot without tags.
    pub fn matches(&self, hosts: &[String], paths: &[String], tags: &[String]) -> bool {
        let host_ok = hosts.is_empty() || hosts.contains(&self.hostname);
        let paths_ok = paths.iter().all(|p| self.paths.contains(p));
        let tags_ok = tags.is_empty() || tags.iter().any(|list| self.has_tag_list(list));
        host_ok && paths_ok && tags_ok
    }

    fn has_tag_list(&self, list: &str) -> bool {
        for tag in list.split(',').map(str::trim) {
            if tag.is_empty() && self.tags.is_empty() {
                return true;
            }
            if !self.tags.iter().any(|t| t == tag) {
                return false;
            }
        }
        true
    }
}

#[derive(Deserialize)]
struct RawSnapshot {
    #[serde(default)]
    time: Option<String>,
    #[serde(default)]
    parent: Option<SnapshotId>,
    #[serde(default)]
    tree: Option<TreeId>,
    #[serde(default)]
    paths: Option<Vec<String>>,
    #[serde(default)]
    hostname: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    uid: Option<u32>,
    #[serde(default)]
    gid: Option<u32>,
    #[serde(default)]
    excludes: Option<Vec<String>>,
    #[serde(default)]
    tags: Option<Vec<String>>,
    #[serde(default)]
    original: Option<SnapshotId>,
    #[serde(default)]
    program_version: Option<String>,
    #[serde(default)]
    summary: Option<RawSummary>,
}

#[derive(Deserialize)]
struct RawSummary {
    #[serde(default)]
    backup_start: Option<String>,
    #[serde(default)]
    backup_end: Option<String>,
    #[serde(default)]
    files_new: Option<u64>,
    #[serde(default)]
    files_changed: Option<u64>,
    #[serde(default)]
    files_unmodified: Option<u64>,
    #[serde(default)]
    dirs_new: Option<u64>,
    #[serde(default)]
    dirs_changed: Option<u64>,
    #[serde(default)]
    dirs_unmodified: Option<u64>,
    #[serde(default)]
    data_blobs: Option<u64>,
    #[serde(default)]
    tree_blobs: Option<u64>,
    #[serde(default)]
    data_added: Option<u64>,
    #[serde(default)]
    data_added_packed: Option<u64>,
    #[serde(default)]
    total_files_processed: Option<u64>,
    #[serde(default)]
    total_bytes_processed: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::Id;
    use proptest::prelude::*;

    const TREE: &str = "49f0bd6eb9aad31e2676d73e839328cc09031c1109ae03f99f3e3831b42f9c50";

    fn example() -> SnapshotFile {
        SnapshotFile {
            time: gotime::parse("2026-11-21T13:28:03.625254101Z").unwrap(),
            tree: TREE.parse().unwrap(),
            paths: vec!["/data.txt".into()],
            hostname: "tinyhost".into(),
            username: "root".into(),
            tags: vec!["a".into(), "b".into()],
            ..SnapshotFile::default()
        }
    }

    const EXAMPLE: &str = r#"{"time":"2026-11-21T13:28:03.625254101Z","tree":"49f0bd6eb9aad31e2676d73e839328cc09031c1109ae03f99f3e3831b42f9c50","paths":["/data.txt"],"hostname":"tinyhost","username":"root","tags":["a","b"]}"#;

    #[test]
    fn encodes_the_spec_example() {
        assert_eq!(String::from_utf8(example().encode()).unwrap(), EXAMPLE);
        assert_eq!(SnapshotFile::decode(EXAMPLE.as_bytes()).unwrap(), example());
    }

    #[test]
    fn field_order_and_omitempty() {
        let sn = SnapshotFile {
            parent: Some(SnapshotId(Id([1; 32]))),
            uid: 1000,
            gid: 100,
            excludes: vec!["*.tmp".into()],
            original: Some(SnapshotId(Id([2; 32]))),
            program_version: "restic 0.16.0".into(),
            summary: Some(SnapshotSummary {
                backup_start: gotime::zero(),
                backup_end: gotime::parse("2024-01-02T03:04:05+02:00").unwrap(),
                files_new: 1,
                total_bytes_processed: u64::MAX,
                ..SnapshotSummary::default()
            }),
            ..example()
        };
        let text = String::from_utf8(sn.encode()).unwrap();
        let one = "01".repeat(32);
        let two = "02".repeat(32);
        assert_eq!(
            text,
            format!(
                r#"{{"time":"2026-11-21T13:28:03.625254101Z","parent":"{one}","tree":"{TREE}","paths":["/data.txt"],"hostname":"tinyhost","username":"root","uid":1000,"gid":100,"excludes":["*.tmp"],"tags":["a","b"],"original":"{two}","program_version":"restic 0.16.0","summary":{{"backup_start":"0001-01-01T00:00:00Z","backup_end":"2024-01-02T03:04:05+02:00","files_new":1,"files_changed":0,"files_unmodified":0,"dirs_new":0,"dirs_changed":0,"dirs_unmodified":0,"data_blobs":0,"tree_blobs":0,"data_added":0,"data_added_packed":0,"total_files_processed":0,"total_bytes_processed":18446744073709551615}}}}"#
            )
        );
        assert_eq!(SnapshotFile::decode(text.as_bytes()).unwrap(), sn);
    }

    #[test]
    fn decodes_old_and_foreign_files() {
        let old = br#"{"time":"2015-01-02T18:10:50.895208559+01:00","tree":"49F0BD6EB9AAD31E2676D73E839328CC09031C1109AE03F99F3E3831B42F9C50","paths":["/x"],"hostname":"h","supersedes":null,"label":"l","uid":0}
"#;
        let sn = SnapshotFile::decode(old).unwrap();
        assert_eq!(sn.tree.to_hex(), TREE);
        assert_eq!(
            gotime::format(&sn.time),
            "2015-01-02T18:10:50.895208559+01:00"
        );
        assert!(sn.tags.is_empty() && sn.summary.is_none());
        assert!(SnapshotFile::decode(br#"{"time":"2015-01-02T18:10:50Z"}"#).is_err());
        assert!(SnapshotFile::decode(b"[]").is_err());
        assert!(SnapshotFile::decode(br#"{"time":"x","tree":"49f0bd6eb9aad31e2676d73e839328cc09031c1109ae03f99f3e3831b42f9c50"}"#).is_err());
    }

    #[test]
    fn listing_json_adds_ids() {
        let id = SnapshotId(Id([0xab; 32]));
        let v = example().to_listing_json(&id);
        assert_eq!(v["id"], Value::String("ab".repeat(32)));
        assert_eq!(v["short_id"], Value::String("abababab".into()));
        assert_eq!(v["time"], "2026-11-21T13:28:03.625254101Z");
        assert_eq!(v["tags"], serde_json::json!(["a", "b"]));
        assert_eq!(v["paths"], serde_json::json!(["/data.txt"]));
        assert!(v.get("parent").is_none() && v.get("uid").is_none());
    }

    #[test]
    fn filters_like_restic() {
        let sn = example();
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert!(sn.matches(&[], &[], &[]));
        assert!(sn.matches(&s(&["other", "tinyhost"]), &[], &[]));
        assert!(!sn.matches(&s(&["other"]), &[], &[]));
        assert!(sn.matches(&[], &s(&["/data.txt"]), &[]));
        assert!(!sn.matches(&[], &s(&["/data.txt", "/other"]), &[]));
        assert!(sn.matches(&[], &[], &s(&["a,b"])));
        assert!(sn.matches(&[], &[], &s(&["a, b"])));
        assert!(!sn.matches(&[], &[], &s(&["a,c"])));
        assert!(sn.matches(&[], &[], &s(&["c", "b"])));
        assert!(!sn.matches(&[], &[], &s(&[""])));
        let untagged = SnapshotFile {
            tags: vec![],
            ..example()
        };
        assert!(untagged.matches(&[], &[], &s(&[""])));
        assert!(!untagged.matches(&[], &[], &s(&["a"])));
    }

    fn arb_time() -> impl Strategy<Value = DateTime<FixedOffset>> {
        (0i64..253_402_300_799, 0u32..1_000_000_000, -1439i32..1439).prop_map(
            |(secs, nanos, off)| {
                let offset = FixedOffset::east_opt(off * 60).unwrap();
                DateTime::from_timestamp(secs, nanos)
                    .unwrap()
                    .with_timezone(&offset)
            },
        )
    }

    fn arb_snapshot() -> impl Strategy<Value = SnapshotFile> {
        let strings = || proptest::collection::vec(any::<String>(), 0..3);
        let id = || proptest::option::of(any::<[u8; 32]>().prop_map(|b| SnapshotId(Id(b))));
        let summary = proptest::option::of(
            (
                arb_time(),
                arb_time(),
                proptest::array::uniform12(any::<u64>()),
            )
                .prop_map(|(backup_start, backup_end, n)| SnapshotSummary {
                    backup_start,
                    backup_end,
                    files_new: n[0],
                    files_changed: n[1],
                    files_unmodified: n[2],
                    dirs_new: n[3],
                    dirs_changed: n[4],
                    dirs_unmodified: n[5],
                    data_blobs: n[6],
                    tree_blobs: n[7],
                    data_added: n[8],
                    data_added_packed: n[9],
                    total_files_processed: n[10],
                    total_bytes_processed: n[11],
                }),
        );
        (
            (arb_time(), id(), any::<[u8; 32]>(), strings()),
            (any::<String>(), any::<String>(), any::<u32>(), any::<u32>()),
            (strings(), strings(), id(), any::<String>(), summary),
        )
            .prop_map(
                |(
                    (time, parent, tree, paths),
                    (hostname, username, uid, gid),
                    (excludes, tags, original, program_version, summary),
                )| SnapshotFile {
                    time,
                    parent,
                    tree: TreeId(Id(tree)),
                    paths,
                    hostname,
                    username,
                    uid,
                    gid,
                    excludes,
                    tags,
                    original,
                    program_version,
                    summary,
                },
            )
    }

    proptest! {
        #[test]
        fn encode_decode_roundtrip(sn in arb_snapshot()) {
            let bytes = sn.encode();
            let back = SnapshotFile::decode(&bytes).unwrap();
            prop_assert_eq!(back.encode(), bytes.clone());
            prop_assert_eq!(&back, &sn);
            // Go's escaping is still plain JSON that serde reads the same way.
            let v: Value = serde_json::from_slice(&bytes).unwrap();
            let listing = sn.to_listing_json(&SnapshotId(Id([7; 32])));
            for (k, val) in v.as_object().unwrap() {
                prop_assert_eq!(&listing[k], val);
            }
        }
    }
}
