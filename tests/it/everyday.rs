//! The everyday commands beyond backup and restore, against the real restic: `tag` changes
//! tags as restic does (a new snapshot with `original`, the old one gone), `list` lists what
//! restic lists, `stats` counts what restic counts, and `generate` writes completions and man
//! pages.

use crate::support::*;
use std::path::Path;

fn lines_sorted(text: &str) -> Vec<String> {
    let mut v: Vec<String> = text.lines().map(str::to_string).collect();
    v.sort();
    v
}

fn snapshots(repo: &Path) -> serde_json::Value {
    serde_json::from_str(&ok(restic_018()
        .arg("-r")
        .arg(repo)
        .args(["snapshots", "--json"])))
    .unwrap()
}

#[test]
fn tag_changes_tags_as_restic_and_list_lists_what_restic_lists() {
    let tmp = tempdir();
    let repo = tmp.path().join("repo");
    let data = tmp.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("a.txt"), "alpha").unwrap();
    ok(mover().arg("-r").arg(&repo).arg("init"));
    ok(mover()
        .arg("-r")
        .arg(&repo)
        .args(["backup", "--host", "h", "--tag", "keep"])
        .arg(&data));
    std::fs::write(data.join("b.txt"), "beta").unwrap();
    ok(mover()
        .arg("-r")
        .arg(&repo)
        .args(["backup", "--host", "h"])
        .arg(&data));
    let before = snapshots(&repo);
    let latest = before[1]["id"].as_str().unwrap().to_string();

    let out = ok(mover()
        .arg("-r")
        .arg(&repo)
        .args(["tag", "--add", "x,y", "latest"]));
    assert_eq!(out.trim(), "modified 1 snapshots");
    let after = snapshots(&repo);
    assert_eq!(after.as_array().unwrap().len(), 2);
    let changed = after
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["original"].as_str() == Some(latest.as_str()))
        .expect("a snapshot whose original is the retagged one");
    assert_eq!(changed["tags"], serde_json::json!(["x", "y"]));
    assert!(
        !after
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["id"] == latest.as_str())
    );

    // --json: restic's messages; --remove with a filter; nothing changed says so.
    let out = ok(mover()
        .arg("-r")
        .arg(&repo)
        .args(["--json", "tag", "--remove", "x", "--tag", "x"]));
    let msgs: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(msgs[0]["message_type"], "changed");
    assert_eq!(msgs[0]["old_snapshot_id"].as_str().unwrap().len(), 64);
    assert_eq!(
        msgs[1],
        serde_json::json!({"message_type": "summary", "changed_snapshots": 1})
    );
    let out = ok(mover()
        .arg("-r")
        .arg(&repo)
        .args(["tag", "--add", "keep", "--tag", "keep"]));
    assert_eq!(out.trim(), "no snapshots were modified");
    // --set "" clears every tag of every snapshot.
    let out = ok(mover().arg("-r").arg(&repo).args(["tag", "--set", ""]));
    assert_eq!(out.trim(), "modified 2 snapshots");
    assert!(
        snapshots(&repo)
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["tags"].is_null())
    );
    for (args, says) in [
        (&["tag", "latest"][..], "nothing to do!"),
        (
            &["tag", "--set", "a", "--add", "b"][..],
            "cannot be given at the same time",
        ),
    ] {
        let out = run(mover().arg("-r").arg(&repo).args(args));
        assert!(!out.status.success());
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(says),
            "{args:?}"
        );
    }
    ok(restic_018().arg("-r").arg(&repo).arg("check"));

    for kind in ["blobs", "packs", "index", "snapshots", "keys"] {
        let ours = ok(mover().arg("-r").arg(&repo).args(["list", kind]));
        let theirs = ok(restic_018().arg("-r").arg(&repo).args(["list", kind]));
        assert_eq!(lines_sorted(&ours), lines_sorted(&theirs), "list {kind}");
        assert!(!ours.is_empty(), "list {kind}");
    }
    assert_eq!(ok(mover().arg("-r").arg(&repo).args(["list", "locks"])), "");
}

#[test]
fn generate_writes_completions_and_man_pages() {
    let tmp = tempdir();
    let bash = ok(mover().args(["generate", "--bash-completion", "-"]));
    assert!(
        bash.contains("_mover()") && bash.contains("--changed-ranges"),
        "{bash}"
    );
    let zsh = tmp.path().join("_mover");
    ok(mover().args(["generate", "--zsh-completion"]).arg(&zsh));
    assert!(
        std::fs::read_to_string(&zsh)
            .unwrap()
            .starts_with("#compdef mover")
    );
    let man = tmp.path().join("man");
    ok(mover().args(["generate", "--man"]).arg(&man));
    let page = std::fs::read_to_string(man.join("mover-backup.1")).unwrap();
    assert!(
        page.contains(".TH mover-backup") && page.contains("changed\\-ranges"),
        "{page}"
    );
    assert!(man.join("mover.1").exists() && man.join("mover-tag.1").exists());
    let out = run(mover().arg("generate"));
    assert!(!out.status.success());
}

/// restic's documented `status` message of `backup --json`: every field with its type.
fn check_status_schema(m: &serde_json::Value) {
    let o = m.as_object().unwrap();
    for key in ["seconds_elapsed", "files_done", "bytes_done", "error_count"] {
        assert!(o[key].is_u64(), "{key} in {m}");
    }
    let p = o["percent_done"].as_f64().unwrap();
    assert!((0.0..1.0).contains(&p), "{m}");
    for key in ["seconds_remaining", "total_files", "total_bytes"] {
        assert!(
            o.get(key).is_none_or(serde_json::Value::is_u64),
            "{key} in {m}"
        );
    }
    let known: Vec<&String> = o.keys().collect();
    for k in known {
        assert!(
            [
                "message_type",
                "seconds_elapsed",
                "seconds_remaining",
                "percent_done",
                "total_files",
                "files_done",
                "total_bytes",
                "bytes_done",
                "error_count",
                "current_files"
            ]
            .contains(&k.as_str()),
            "field {k} is not restic's"
        );
    }
}

#[test]
fn backup_json_streams_restic_status_messages_with_totals_while_it_runs() {
    let tmp = tempdir();
    let repo = tmp.path().join("repo");
    let data = tmp.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let mut rng = crate::support::tree_gen::SplitMix64(3);
    for i in 0..6 {
        let mut buf = vec![0u8; 512 * 1024];
        rng.fill(&mut buf);
        std::fs::write(data.join(format!("f{i}")), buf).unwrap();
    }
    ok(mover().arg("-r").arg(&repo).arg("init"));
    // 3 MiB at 1 MiB/s: a few seconds of status messages, ten a second.
    let out = ok(mover()
        .env("RESTIC_PROGRESS_FPS", "10")
        .arg("-r")
        .arg(&repo)
        .args(["--json", "--limit-upload", "1024", "backup"])
        .arg(&data));
    let msgs: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    let status: Vec<&serde_json::Value> = msgs
        .iter()
        .filter(|m| m["message_type"] == "status")
        .collect();
    assert!(status.len() >= 5, "{} status messages", status.len());
    status.iter().for_each(|m| check_status_schema(m));
    let with_totals = status
        .iter()
        .filter(|m| m["total_bytes"] == 3 * 1024 * 1024 && m["total_files"] == 6)
        .count();
    assert!(with_totals >= 3, "{status:?}");
    let mid = status
        .iter()
        .any(|m| m["percent_done"].as_f64().unwrap() > 0.0 && m.get("seconds_remaining").is_some());
    assert!(mid, "no status with progress and an ETA: {status:?}");
    assert_eq!(msgs.last().unwrap()["message_type"], "summary");
}

/// `stats` in every mode, over all snapshots and over `latest`, prints what restic 0.18
/// prints, in JSON and as text; on a mover repository and on restic's own (hard links,
/// duplicate files, a file changed between two snapshots, compressed and incompressible data).
#[test]
fn stats_counts_as_restic_in_every_mode() {
    let tmp = tempdir();
    let data = tmp.path().join("data");
    std::fs::create_dir_all(data.join("d")).unwrap();
    let random: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(data.join("a"), &random).unwrap();
    std::fs::write(data.join("d/a_copy"), &random).unwrap();
    std::fs::hard_link(data.join("a"), data.join("hard")).unwrap();
    std::fs::write(data.join("zeros"), vec![0u8; 200_000]).unwrap();
    std::fs::write(data.join("small"), "hi\n").unwrap();
    let by_mover = tmp.path().join("by-mover");
    let by_restic = tmp.path().join("by-restic");
    ok(mover().arg("-r").arg(&by_mover).arg("init"));
    ok(restic_018().arg("-r").arg(&by_restic).arg("init"));
    for round in 0..2 {
        if round == 1 {
            std::fs::write(data.join("small"), "hi again\n").unwrap();
        }
        ok(mover().arg("-r").arg(&by_mover).arg("backup").arg(&data));
        ok(restic_018()
            .arg("-r")
            .arg(&by_restic)
            .arg("backup")
            .arg(&data));
    }
    for repo in [&by_mover, &by_restic] {
        for mode in [
            "restore-size",
            "files-by-contents",
            "blobs-per-file",
            "raw-data",
        ] {
            for which in [None, Some("latest")] {
                let run = |mut c: std::process::Command, json: bool| {
                    c.arg("-r").arg(repo).args(["stats", "--mode", mode]);
                    c.args(which);
                    if json {
                        c.arg("--json");
                    }
                    ok(&mut c)
                };
                let ours = run(mover(), true);
                assert_eq!(ours, run(restic_018(), true), "{mode} {which:?} --json");
                let counted: serde_json::Value = serde_json::from_str(&ours).unwrap();
                assert!(counted["total_size"].as_u64().unwrap() > 0, "{ours}");
                assert_eq!(
                    run(mover(), false),
                    run(restic_018(), false),
                    "{mode} {which:?}"
                );
            }
        }
    }
    let bad = mover()
        .arg("-r")
        .arg(&by_mover)
        .args(["stats", "--mode", "bogus"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(1));
    let text = String::from_utf8_lossy(&bad.stderr);
    assert!(text.contains("unknown counting mode: bogus"), "{text}");
}
