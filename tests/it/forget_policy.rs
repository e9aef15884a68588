//! `forget` decides exactly as restic 0.18 does: random snapshot histories (times, hosts,
//! tags, paths) and random policies, fed to both `forget --dry-run --json`, must give the
//! same groups, the same keep and remove sets and the same reasons. Then a real forget by
//! mover leaves a repository restic checks clean.

use crate::support::*;
use mover::format::snapshot::SnapshotFile;
use mover::format::{Id, TreeId};
use mover::repo::{InitOptions, Repository};
use mover::storage::{Storage, StorageOptions};
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

#[derive(Debug, Clone)]
struct Snap {
    /// Seconds after the start of 2023, distinct within a history.
    secs: i64,
    /// Minutes east of UTC.
    offset_minutes: i32,
    host: &'static str,
    tags: Vec<&'static str>,
    paths: Vec<&'static str>,
}

fn snap_strategy() -> impl Strategy<Value = Snap> {
    (
        0i64..(3 * 365 * 86_400),
        prop::sample::select(vec![0, 120, -300]),
        prop::sample::select(vec!["a", "b"]),
        prop::sample::subsequence(vec!["x", "y"], 0..=2),
        prop::sample::select(vec![vec!["/data"], vec!["/srv"], vec!["/srv", "/data"]]),
    )
        .prop_map(|(secs, offset_minutes, host, tags, paths)| Snap {
            secs,
            offset_minutes,
            host,
            tags,
            paths,
        })
}

fn count() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        3 => Just(None),
        4 => (0u32..5).prop_map(|n| Some(n.to_string())),
        1 => Just(Some("unlimited".to_string())),
    ]
}

fn within() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        4 => Just(None),
        1 => prop::sample::select(vec!["12h", "3d", "2m", "1y", "1y2m3d4h", "40d"])
            .prop_map(|s| Some(s.to_string())),
    ]
}

/// Policy flags as both binaries take them.
fn policy_strategy() -> impl Strategy<Value = Vec<String>> {
    let counts = prop::collection::vec(count(), 6);
    let withins = prop::collection::vec(within(), 6);
    let tag = prop_oneof![
        4 => Just(None),
        1 => prop::sample::select(vec!["x", "x,y", "z"]).prop_map(|s| Some(s.to_string())),
    ];
    let group = prop::sample::select(vec!["host,paths", "host", "", "tags", "host,tags,paths"]);
    (counts, withins, tag, group).prop_map(|(counts, withins, tag, group)| {
        let mut flags = Vec::new();
        let names = ["last", "hourly", "daily", "weekly", "monthly", "yearly"];
        for (name, c) in names.iter().zip(counts) {
            if let Some(c) = c {
                flags.push(format!("--keep-{name}={c}"));
            }
        }
        let within_names = ["within", "within-hourly", "within-daily", "within-weekly"];
        let within_names = within_names
            .iter()
            .chain(["within-monthly", "within-yearly"].iter());
        for (name, w) in within_names.zip(withins) {
            if let Some(w) = w {
                flags.push(format!("--keep-{name}={w}"));
            }
        }
        if let Some(t) = tag {
            flags.push(format!("--keep-tag={t}"));
        }
        flags.push(format!("--group-by={group}"));
        flags
    })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// A repository holding just these snapshot files (forget reads nothing else).
fn write_history(rt: &tokio::runtime::Runtime, dir: &Path, snaps: &[Snap]) {
    rt.block_on(async {
        let storage = Storage::open(dir.to_str().unwrap(), &StorageOptions::default()).unwrap();
        let init = InitOptions {
            kdf: mover::crypto::KdfParams {
                n: 1024,
                r: 8,
                p: 1,
            },
            ..InitOptions::default()
        };
        let repo = Repository::init(storage, PASSWORD, &init).await.unwrap();
        let base = chrono::DateTime::parse_from_rfc3339("2023-01-01T00:00:00Z").unwrap();
        for s in snaps {
            let offset = chrono::FixedOffset::east_opt(s.offset_minutes * 60).unwrap();
            let file = SnapshotFile {
                time: (base + chrono::Duration::seconds(s.secs)).with_timezone(&offset),
                tree: TreeId(Id([7; 32])),
                paths: s.paths.iter().map(|p| p.to_string()).collect(),
                hostname: s.host.to_string(),
                username: "u".into(),
                tags: s.tags.iter().map(|t| t.to_string()).collect(),
                ..SnapshotFile::default()
            };
            repo.save_snapshot(&file).await.unwrap();
        }
    });
}

/// One group's decisions: keep and remove sets and the reasons per kept snapshot.
type Decisions = BTreeMap<
    String,
    (
        BTreeSet<String>,
        BTreeSet<String>,
        BTreeMap<String, Vec<String>>,
    ),
>;

fn decisions(json: &str) -> Decisions {
    let v: serde_json::Value = serde_json::from_str(json.trim()).unwrap_or_else(|e| {
        panic!("forget --json output is not JSON ({e}): {json}");
    });
    let mut out = Decisions::new();
    for g in v.as_array().expect("an array of groups") {
        let key = format!("{}|{}|{}", g["host"], g["paths"], g["tags"]);
        let ids = |list: &serde_json::Value| -> BTreeSet<String> {
            list.as_array()
                .map(|a| {
                    a.iter()
                        .map(|s| s["id"].as_str().unwrap().to_string())
                        .collect()
                })
                .unwrap_or_default()
        };
        let mut reasons = BTreeMap::new();
        for r in g["reasons"].as_array().into_iter().flatten() {
            let matches: Vec<String> = r["matches"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m.as_str().unwrap().to_string())
                .collect();
            reasons.insert(r["snapshot"]["id"].as_str().unwrap().to_string(), matches);
        }
        out.insert(key, (ids(&g["keep"]), ids(&g["remove"]), reasons));
    }
    out
}

fn distinct(mut snaps: Vec<Snap>) -> Vec<Snap> {
    snaps.sort_by_key(|s| s.secs);
    snaps.dedup_by_key(|s| s.secs);
    snaps
}

#[test]
fn forget_decides_as_restic_018_on_random_histories() {
    let rt = runtime();
    let config = ProptestConfig {
        cases: 48,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    proptest!(config, |(snaps in prop::collection::vec(snap_strategy(), 1..25).prop_map(distinct),
                        flags in policy_strategy())| {
        let tmp = tempdir();
        let repo = tmp.path().join("repo");
        write_history(&rt, &repo, &snaps);
        let restic_out = run(restic_018().arg("-r").arg(&repo)
            .args(["forget", "--dry-run", "--json"]).args(&flags));
        let mover_out = run(mover().arg("-r").arg(&repo)
            .args(["forget", "--dry-run", "--json"]).args(&flags));
        let (rs, ms) = (restic_out.status.success(), mover_out.status.success());
        prop_assert_eq!(rs, ms, "exit status differs for {:?}\nrestic: {}\nmover: {}", flags,
            String::from_utf8_lossy(&restic_out.stderr), String::from_utf8_lossy(&mover_out.stderr));
        if rs {
            let r = decisions(&String::from_utf8_lossy(&restic_out.stdout));
            let m = decisions(&String::from_utf8_lossy(&mover_out.stdout));
            prop_assert_eq!(r, m, "decisions differ for {:?}", flags);
        }
    });
}

#[test]
fn forget_refusals_match_restic() {
    let rt = runtime();
    let tmp = tempdir();
    let repo = tmp.path().join("repo");
    let snaps = vec![
        Snap {
            secs: 10,
            offset_minutes: 0,
            host: "a",
            tags: vec![],
            paths: vec!["/data"],
        },
        Snap {
            secs: 20,
            offset_minutes: 0,
            host: "a",
            tags: vec!["x"],
            paths: vec!["/data"],
        },
    ];
    write_history(&rt, &repo, &snaps);
    for flags in [
        vec![],
        vec!["--keep-last", "-1"],
        vec!["--keep-within", "-1d"],
        vec!["--keep-tag", "nothing"],
        vec!["--unsafe-allow-remove-all"],
        vec!["--group-by", "color", "--keep-last", "1"],
    ] {
        let r = run(restic_018()
            .arg("-r")
            .arg(&repo)
            .args(["forget", "--dry-run"])
            .args(&flags));
        let m = run(mover()
            .arg("-r")
            .arg(&repo)
            .args(["forget", "--dry-run"])
            .args(&flags));
        assert!(!r.status.success(), "restic accepted {flags:?}");
        let stderr = String::from_utf8_lossy(&m.stderr);
        assert!(!m.status.success(), "mover accepted {flags:?}");
        assert_eq!(
            stderr.trim().lines().count(),
            1,
            "one-line error for {flags:?}: {stderr}"
        );
    }
    // Nothing was removed by any of those.
    let left = ok(restic_018()
        .arg("-r")
        .arg(&repo)
        .args(["snapshots", "--json"]));
    let left: serde_json::Value = serde_json::from_str(&left).unwrap();
    assert_eq!(left.as_array().map(Vec::len), Some(2));
    // A filter makes --unsafe-allow-remove-all acceptable: it removes that host's snapshots.
    ok(mover()
        .arg("-r")
        .arg(&repo)
        .args(["forget", "--unsafe-allow-remove-all", "--host", "a"]));
    let left = ok(restic_018()
        .arg("-r")
        .arg(&repo)
        .args(["snapshots", "--json"]));
    assert_eq!(left.trim(), "[]");
}

#[test]
fn forget_removes_what_it_said_and_restic_checks_clean() {
    let tmp = tempdir();
    let repo = tmp.path().join("repo");
    let src = tmp.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    ok(mover().arg("-r").arg(&repo).arg("init"));
    for i in 0..4 {
        std::fs::write(src.join(format!("f{i}")), vec![i as u8; 50_000]).unwrap();
        ok(mover()
            .arg("-r")
            .arg(&repo)
            .args(["backup", "--host", "h"])
            .arg(&src));
    }
    let planned = ok(mover().arg("-r").arg(&repo).args([
        "forget",
        "--keep-last",
        "2",
        "--dry-run",
        "--json",
    ]));
    let planned = decisions(&planned);
    let (keep, remove, _) = planned.values().next().unwrap().clone();
    assert_eq!((keep.len(), remove.len()), (2, 2));
    let out = ok(mover()
        .arg("-r")
        .arg(&repo)
        .args(["forget", "--keep-last", "2"]));
    assert!(
        out.contains("keep 2 snapshots") && out.contains("remove 2 snapshots"),
        "{out}"
    );
    let left = ok(restic().arg("-r").arg(&repo).args(["snapshots", "--json"]));
    let left: serde_json::Value = serde_json::from_str(&left).unwrap();
    let ids: BTreeSet<String> = left
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, keep);
    ok(restic().arg("-r").arg(&repo).args(["check", "--read-data"]));
}
