//! `snapshots`: render a snapshot list as restic 0.14 prints it (table or `--json`).
//! Formatting only; listing and filtering snapshots is the repository's job.

use crate::format::SnapshotId;
use crate::format::gojson;
use crate::format::snapshot::SnapshotFile;
use chrono::Local;

/// restic's table cell separator.
const CELL_SEPARATOR: &str = "  ";

/// Display width of a cell line (restic counts terminal cells; chars are close enough for
/// the names and paths seen here).
fn width(s: &str) -> usize {
    s.chars().count()
}

/// restic's `ui/table`: a header, a dashed line, rows (a cell may span several lines), a
/// dashed line, then footers. Trailing spaces of every line are trimmed.
fn render_table(headers: &[&str], rows: &[Vec<String>], footers: &[String]) -> String {
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
    for row in rows {
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

/// The `restic snapshots` table: ID (short), Time (local), Host, Tags, Paths (one per line),
/// then `N snapshots`.
pub fn format_table(snaps: &[(SnapshotId, SnapshotFile)]) -> String {
    let rows: Vec<Vec<String>> = snaps
        .iter()
        .map(|(id, s)| {
            vec![
                id.short(),
                s.time
                    .with_timezone(&Local)
                    .format("%Y-%m-%d %H:%M:%S")
                    .to_string(),
                s.hostname.clone(),
                s.tags.join(","),
                s.paths.join("\n"),
            ]
        })
        .collect();
    render_table(
        &["ID", "Time", "Host", "Tags", "Paths"],
        &rows,
        &[format!("{} snapshots", snaps.len())],
    )
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
        let out = format_table(&[(ida, a), (idb, b)]);
        let dashes = "-".repeat(58);
        let expected = format!(
            "ID        Time                 Host      Tags  Paths\n{dashes}\n\
             4b4b4b4b  {t}  tinyhost  a,b   /data.txt\n\
             01010101  {t}  h{}/one\n{}/two/longer\n{dashes}\n2 snapshots\n",
            " ".repeat(15),
            " ".repeat(47),
        );
        assert_eq!(out, expected);
    }

    #[test]
    fn empty_table_still_has_header_and_count() {
        let out = format_table(&[]);
        assert_eq!(
            out,
            format!(
                "ID  Time  Host  Tags  Paths\n{0}\n{0}\n0 snapshots\n",
                "-".repeat(27)
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
}
