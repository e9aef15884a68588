//! Snapshot lists as restic prints them: grouping (`--group-by`), `--latest N`, the table of
//! restic 0.17+ (with `Reasons` for forget and `Size` when snapshots carry a summary) and
//! the `--json` shapes. Formatting only; listing and filtering is the repository's job.

use crate::format::SnapshotId;
use crate::format::gojson;
use crate::format::snapshot::SnapshotFile;
use chrono::Local;
use serde_json::Value;
use std::collections::BTreeMap;

/// restic's snapshot time format in tables (local time).
pub const TIME_FORMAT: &str = "%Y-%m-%d %H:%M:%S";

/// restic's table cell separator.
const CELL_SEPARATOR: &str = "  ";

/// Display width of a cell line (restic counts terminal cells; chars are close enough for
/// the names and paths seen here).
fn width(s: &str) -> usize {
    s.chars().count()
}

/// restic's `ui/table`: a header, a dashed line, rows (a cell may span several lines), a
/// dashed line, then footers. Trailing spaces of every line are trimmed.
pub fn render_table(
    headers: &[&str],
    rows: &[Vec<String>],
    footers: &[String],
    blank_between_rows: bool,
) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| width(h)).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            for line in cell.split('\n') {
                widths[i] = widths[i].max(width(line));
            }
        }
    }
    let total =
        widths.iter().sum::<usize>() + (widths.len().saturating_sub(1)) * CELL_SEPARATOR.len();
    let mut out = String::new();
    let print_row = |cells: &[&str], out: &mut String| {
        let split: Vec<Vec<&str>> = cells.iter().map(|c| c.split('\n').collect()).collect();
        let lines = split.iter().map(Vec::len).max().unwrap_or(1);
        for i in 0..lines {
            let mut line = String::new();
            for (col, parts) in split.iter().enumerate() {
                if col > 0 {
                    line.push_str(CELL_SEPARATOR);
                }
                let v = parts.get(i).copied().unwrap_or("");
                line.push_str(v);
                line.extend(std::iter::repeat_n(
                    ' ',
                    widths[col].saturating_sub(width(v)),
                ));
            }
            out.push_str(line.trim_end_matches(' '));
            out.push('\n');
        }
    };
    print_row(headers, &mut out);
    let dashes = "-".repeat(total);
    out.push_str(&dashes);
    out.push('\n');
    for (i, row) in rows.iter().enumerate() {
        if blank_between_rows && i > 0 {
            out.push('\n');
        }
        let cells: Vec<&str> = row.iter().map(String::as_str).collect();
        print_row(&cells, &mut out);
    }
    out.push_str(&dashes);
    out.push('\n');
    for f in footers {
        out.push_str(f);
        out.push('\n');
    }
    out
}

/// restic's `ui.FormatBytes`: `512 B`, `1.500 KiB`, `2.000 GiB`.
pub fn format_bytes(n: u64) -> String {
    const UNITS: [(u64, &str); 4] = [
        (1 << 40, "TiB"),
        (1 << 30, "GiB"),
        (1 << 20, "MiB"),
        (1 << 10, "KiB"),
    ];
    for (size, unit) in UNITS {
        if n >= size {
            return format!("{:.3} {unit}", n as f64 / size as f64);
        }
    }
    format!("{n} B")
}

/// What snapshots are grouped by (`--group-by host,paths,tags`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GroupBy {
    pub host: bool,
    pub paths: bool,
    pub tags: bool,
}

impl GroupBy {
    /// restic's `host,paths` default of forget.
    pub const HOST_AND_PATHS: GroupBy = GroupBy {
        host: true,
        paths: true,
        tags: false,
    };

    pub fn is_grouped(&self) -> bool {
        self.host || self.paths || self.tags
    }
}

impl std::str::FromStr for GroupBy {
    type Err = String;

    fn from_str(s: &str) -> Result<GroupBy, String> {
        let mut g = GroupBy::default();
        for part in s.split(',') {
            match part {
                "host" | "hosts" => g.host = true,
                "path" | "paths" => g.paths = true,
                "tag" | "tags" => g.tags = true,
                "" => {}
                other => return Err(format!("unknown grouping option: {other:?}")),
            }
        }
        Ok(g)
    }
}

/// A group's key: the host, sorted paths and sorted tags it was grouped by (`None` for what
/// it was not grouped by, which restic's JSON shows as `null`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct GroupKey {
    pub hostname: String,
    pub paths: Option<Vec<String>>,
    pub tags: Option<Vec<String>>,
}

impl GroupKey {
    /// `{"hostname":..,"paths":..,"tags":..}` as restic's `SnapshotGroupKey`.
    pub fn to_json(&self) -> Value {
        serde_json::json!({"hostname": self.hostname, "paths": self.paths, "tags": self.tags})
    }

    /// restic's `snapshots for (host [h], tags [a, b], paths [/x]):` line, or `None` when
    /// nothing was grouped.
    pub fn header(&self) -> Option<String> {
        let mut parts = Vec::new();
        if !self.hostname.is_empty() {
            parts.push(format!("host [{}]", self.hostname));
        }
        if let Some(tags) = &self.tags {
            parts.push(format!("tags [{}]", tags.join(", ")));
        }
        if let Some(paths) = &self.paths {
            parts.push(format!("paths [{}]", paths.join(", ")));
        }
        if parts.is_empty() {
            return None;
        }
        Some(format!("snapshots for ({}):", parts.join(", ")))
    }
}

/// Groups `snaps` (in their order) as restic's `GroupSnapshots` does; the groups come sorted
/// by key. Each snapshot's paths are sorted, and its tags too when grouping by tags (restic
/// sorts them in place, so its listings show them sorted).
pub fn group_snapshots(
    snaps: Vec<(SnapshotId, SnapshotFile)>,
    by: GroupBy,
) -> Vec<(GroupKey, Vec<(SnapshotId, SnapshotFile)>)> {
    let mut groups: BTreeMap<GroupKey, Vec<(SnapshotId, SnapshotFile)>> = BTreeMap::new();
    for (id, mut s) in snaps {
        s.paths.sort();
        if by.tags {
            s.tags.sort();
        }
        let key = GroupKey {
            hostname: if by.host {
                s.hostname.clone()
            } else {
                String::new()
            },
            // An empty list is Go's nil slice: `null` in JSON, left out of headers.
            paths: by.paths.then(|| s.paths.clone()).filter(|p| !p.is_empty()),
            tags: by.tags.then(|| s.tags.clone()).filter(|t| !t.is_empty()),
        };
        groups.entry(key).or_default().push((id, s));
    }
    groups.into_iter().collect()
}

/// restic's `FilterLatestSnapshots`: the newest `limit` snapshots of each host and path set,
/// newest first.
pub fn latest_per_host_and_paths(
    mut snaps: Vec<(SnapshotId, SnapshotFile)>,
    limit: usize,
) -> Vec<(SnapshotId, SnapshotFile)> {
    snaps.sort_by_key(|s| std::cmp::Reverse(s.1.time));
    let mut seen: BTreeMap<(String, Vec<String>), usize> = BTreeMap::new();
    snaps
        .into_iter()
        .filter(|(_, s)| {
            let mut paths = s.paths.clone();
            paths.sort();
            let n = seen.entry((s.hostname.clone(), paths)).or_default();
            *n += 1;
            *n <= limit
        })
        .collect()
}

/// How [`format_table`] lays a list out.
#[derive(Debug, Clone, Copy, Default)]
pub struct TableOptions<'a> {
    /// forget's keep reasons, one list per snapshot (in the order given).
    pub reasons: Option<&'a [Vec<String>]>,
    /// `--compact`: ID, Time, Host, Tags one per line (and Size).
    pub compact: bool,
}

/// restic's `PrintSnapshots`: oldest first; ID, Time (local), Host, Tags, [Reasons], Paths
/// one per line, [Size of what the backup processed]; a blank line between snapshots when
/// any has several paths; then `N snapshots`.
pub fn format_table(snaps: &[(SnapshotId, SnapshotFile)], opts: TableOptions<'_>) -> String {
    let mut order: Vec<usize> = (0..snaps.len()).collect();
    order.sort_by(|&a, &b| snaps[a].1.time.cmp(&snaps[b].1.time));
    let has_size = snaps.iter().any(|(_, s)| s.summary.is_some());
    let reasons = opts.reasons.filter(|r| !r.is_empty());
    let mut headers = vec!["ID", "Time"];
    if opts.compact {
        headers.extend(["Host", "Tags  "]);
    } else {
        headers.extend(["Host      ", "Tags      "]);
        if reasons.is_some() {
            headers.push("Reasons");
        }
        headers.push("Paths");
    }
    if has_size {
        headers.push("Size");
    }
    let mut multiline = false;
    let rows: Vec<Vec<String>> = order
        .iter()
        .map(|&i| {
            let (id, s) = &snaps[i];
            let mut row = vec![
                id.short(),
                s.time.with_timezone(&Local).format(TIME_FORMAT).to_string(),
                s.hostname.clone(),
            ];
            if opts.compact {
                row.push(s.tags.join("\n"));
            } else {
                row.push(s.tags.join(","));
                if let Some(r) = reasons {
                    row.push(r.get(i).map(|r| r.join("\n")).unwrap_or_default());
                }
                multiline |= s.paths.len() > 1;
                row.push(s.paths.join("\n"));
            }
            if has_size {
                row.push(
                    s.summary
                        .as_ref()
                        .map(|sum| format_bytes(sum.total_bytes_processed))
                        .unwrap_or_default(),
                );
            }
            row
        })
        .collect();
    render_table(
        &headers,
        &rows,
        &[format!("{} snapshots", snaps.len())],
        multiline,
    )
}

/// One snapshot as restic's JSON listings show it: its fields, then `id` and `short_id`.
pub fn snapshot_json(id: &SnapshotId, s: &SnapshotFile) -> Value {
    s.to_listing_json(id)
}

/// `restic snapshots --json` grouped: `[{"group_key": {...}, "snapshots": [...]}]`.
pub fn groups_to_json(groups: &[(GroupKey, Vec<(SnapshotId, SnapshotFile)>)]) -> String {
    let v: Vec<Value> = groups
        .iter()
        .map(|(key, snaps)| {
            let list: Vec<Value> = snaps.iter().map(|(id, s)| snapshot_json(id, s)).collect();
            serde_json::json!({"group_key": key.to_json(), "snapshots": if list.is_empty() { Value::Null } else { Value::Array(list) }})
        })
        .collect();
    let mut out = Vec::new();
    gojson::write_value(&mut out, &Value::Array(v));
    String::from_utf8_lossy(&out).into_owned()
}

/// `restic snapshots --json`: one compact JSON array with `id` and `short_id` per snapshot.
/// Go's `json.Encoder` follows it with a newline, which is left to the printer.
pub fn to_json(snaps: &[(SnapshotId, SnapshotFile)]) -> String {
    let mut out = Vec::with_capacity(256 * snaps.len() + 3);
    out.push(b'[');
    for (i, (id, s)) in snaps.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        gojson::write_value(&mut out, &s.to_listing_json(id));
    }
    out.push(b']');
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{Id, TreeId};
    use chrono::{DateTime, FixedOffset, TimeZone};

    fn snap(paths: &[&str], tags: &[&str], host: &str) -> SnapshotFile {
        let json = format!(
            r#"{{"time":"2022-08-25T17:55:00.5Z","tree":"{}","paths":{},"hostname":"{host}","tags":{}}}"#,
            TreeId(Id([0xab; 32])).to_hex(),
            serde_json::to_string(paths).unwrap(),
            serde_json::to_string(tags).unwrap(),
        );
        SnapshotFile::decode(json.as_bytes()).unwrap()
    }

    fn local_time(s: &SnapshotFile) -> String {
        let t: DateTime<FixedOffset> = s.time;
        Local
            .from_utc_datetime(&t.naive_utc())
            .format("%Y-%m-%d %H:%M:%S")
            .to_string()
    }

    #[test]
    fn table_matches_restic_layout() {
        let a = snap(&["/data.txt"], &["a", "b"], "tinyhost");
        let b = snap(&["/one", "/two/longer"], &[], "h");
        let t = local_time(&a);
        let ida = SnapshotId(Id([0x4b; 32]));
        let idb = SnapshotId(Id([0x01; 32]));
        let out = format_table(&[(ida, a), (idb, b)], TableOptions::default());
        let dashes = "-".repeat(66);
        // restic 0.17+: padded Host and Tags headers, a blank line between snapshots when one
        // has several paths.
        let expected = format!(
            "ID        Time                 Host        Tags        Paths\n{dashes}\n\
             4b4b4b4b  {t}  tinyhost    a,b         /data.txt\n\n\
             01010101  {t}  h{}/one\n{}/two/longer\n{dashes}\n2 snapshots\n",
            " ".repeat(23),
            " ".repeat(55),
        );
        assert_eq!(out, expected);
    }

    #[test]
    fn empty_table_still_has_header_and_count() {
        let out = format_table(&[], TableOptions::default());
        assert_eq!(
            out,
            format!(
                "ID  Time  Host        Tags        Paths\n{0}\n{0}\n0 snapshots\n",
                "-".repeat(39)
            )
        );
    }

    #[test]
    fn json_is_an_array_with_ids() {
        let a = snap(&["/x"], &[], "h");
        let id = SnapshotId(Id([0x12; 32]));
        let out = to_json(&[(id, a)]);
        assert!(out.starts_with("[{") && out.ends_with("}]"), "{out}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v[0]["id"], id.to_hex());
        assert_eq!(v[0]["short_id"], "12121212");
        assert_eq!(v[0]["hostname"], "h");
        assert_eq!(v[0]["paths"][0], "/x");
        assert_eq!(to_json(&[]), "[]");
    }

    #[test]
    fn groups_sizes_and_latest() {
        let a = snap(&["/b", "/a"], &["y", "x"], "h1");
        let b = snap(&["/a", "/b"], &["x", "y"], "h1");
        let c = snap(&["/a"], &[], "h2");
        let ids = [1u8, 2, 3].map(|n| SnapshotId(Id([n; 32])));
        let list = vec![(ids[0], a), (ids[1], b), (ids[2], c)];
        let groups = group_snapshots(list.clone(), GroupBy::HOST_AND_PATHS);
        assert_eq!(groups.len(), 2);
        assert_eq!(
            groups[0].0.header().unwrap(),
            "snapshots for (host [h1], paths [/a, /b]):"
        );
        assert_eq!(groups[0].1.len(), 2);
        assert_eq!(groups[0].1[0].1.paths, vec!["/a", "/b"]);
        let by_tags = group_snapshots(list.clone(), "tags".parse().unwrap());
        assert_eq!(by_tags.len(), 2);
        assert_eq!(by_tags[1].0.tags, Some(vec!["x".into(), "y".into()]));
        assert_eq!(by_tags[1].0.to_json()["paths"], Value::Null);
        assert!("hosts,bogus".parse::<GroupBy>().is_err());
        assert!(!"".parse::<GroupBy>().unwrap().is_grouped());
        assert_eq!(latest_per_host_and_paths(list, 1).len(), 2);
        assert_eq!(format_bytes(512), "512 B");
        assert_eq!(format_bytes(1536), "1.500 KiB");
        assert_eq!(format_bytes(3 << 30), "3.000 GiB");
    }
}
