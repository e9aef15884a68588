//! prune, check, unlock and key against the real restic (0.14 and 0.18) on the same
//! repositories: whatever one prunes the other checks and restores, check's verdict on
//! damaged repositories is restic's, and keys added by one open with the other.

use crate::support::history::{HistoryShape, assert_is_version, switch_to_version};
use crate::support::*;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

const SHAPE: HistoryShape = HistoryShape {
    shared_files: 6,
    own_files: 3,
    file_bytes: 300 * 1024,
};

/// Snapshot ids in the repository, oldest first (asked of restic 0.14).
fn snapshot_ids(repo: &Path) -> Vec<String> {
    let out = ok(restic().arg("-r").arg(repo).args(["snapshots", "--json"]));
    let v: serde_json::Value = serde_json::from_str(&out).expect("snapshots json");
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect()
}

/// Backs versions `versions` of one volume up with `tool` (a mover or restic command
/// maker); returns the version held by each snapshot id.
fn back_up_versions(
    tool: fn() -> Command,
    repo: &Path,
    src: &Path,
    versions: std::ops::Range<u64>,
) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    for n in versions {
        switch_to_version(src, n, SHAPE);
        let before: BTreeSet<String> = snapshot_ids(repo).into_iter().collect();
        ok(tool()
            .arg("-r")
            .arg(repo)
            .args(["backup", "--host", "h"])
            .arg(src));
        let new: Vec<String> = snapshot_ids(repo)
            .into_iter()
            .filter(|id| !before.contains(id))
            .collect();
        assert_eq!(new.len(), 1);
        out.push((new[0].clone(), n));
    }
    out
}

/// Restores every listed snapshot with `tool` and compares it with its version.
fn assert_restores(
    tool: fn() -> Command,
    repo: &Path,
    src: &Path,
    snaps: &[(String, u64)],
    scratch: &Path,
) {
    for (id, n) in snaps {
        let target = scratch.join(format!("restore-{id}"));
        let _ = std::fs::remove_dir_all(&target);
        ok(tool()
            .arg("-r")
            .arg(repo)
            .args(["restore", id, "--target"])
            .arg(&target));
        assert_is_version(&restored_path(&target, src), *n, SHAPE, scratch);
        std::fs::remove_dir_all(&target).unwrap();
    }
}

fn packs(repo: &Path) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    for sub in std::fs::read_dir(repo.join("data")).unwrap().flatten() {
        for f in std::fs::read_dir(sub.path()).unwrap().flatten() {
            // Staging files of writes in flight (`<id>#1`) are not packs.
            let name = f.file_name();
            if name.len() == 64
                && name
                    .to_string_lossy()
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit())
            {
                out.insert(f.path());
            }
        }
    }
    out
}

#[test]
fn prune_after_forget_keeps_what_the_kept_snapshots_need() {
    let tmp = tempdir();
    let (repo, src) = (tmp.path().join("repo"), tmp.path().join("src"));
    ok(mover().arg("-r").arg(&repo).arg("init"));
    let snaps = back_up_versions(mover, &repo, &src, 0..5);
    let before = packs(&repo);
    ok(mover()
        .arg("-r")
        .arg(&repo)
        .args(["forget", "--keep-last", "2"]));
    // A dry run changes nothing.
    let dry = ok(mover().arg("-r").arg(&repo).args(["prune", "--dry-run"]));
    assert!(
        dry.contains("to delete:") && dry.contains("dry run"),
        "{dry}"
    );
    assert_eq!(packs(&repo), before);
    let out = ok(mover().arg("-r").arg(&repo).args(["prune", "-v"]));
    assert!(out.contains("total prune:"), "{out}");
    let after = packs(&repo);
    assert!(after.len() < before.len(), "prune deleted no pack:\n{out}");
    ok(restic().arg("-r").arg(&repo).args(["check", "--read-data"]));
    ok(restic_018()
        .arg("-r")
        .arg(&repo)
        .args(["check", "--read-data"]));
    ok(mover().arg("-r").arg(&repo).args(["check", "--read-data"]));
    assert_restores(restic, &repo, &src, &snaps[3..], tmp.path());
    // A second prune finds nothing more to do.
    ok(mover().arg("-r").arg(&repo).arg("prune"));
    assert_eq!(packs(&repo), after);
}

#[test]
fn mover_prunes_restics_repositories_and_restic_prunes_movers() {
    for (name, writer) in [
        ("restic-0.14", restic as fn() -> Command),
        ("restic-0.18", restic_018),
    ] {
        let tmp = tempdir();
        let (repo, src) = (tmp.path().join("repo"), tmp.path().join("src"));
        ok(writer().arg("-r").arg(&repo).arg("init"));
        let snaps = back_up_versions(writer, &repo, &src, 0..4);
        ok(mover()
            .arg("-r")
            .arg(&repo)
            .args(["forget", "--keep-last", "2", "--prune"]));
        ok(writer().arg("-r").arg(&repo).args(["check", "--read-data"]));
        assert_restores(writer, &repo, &src, &snaps[2..], tmp.path());
        assert_restores(mover, &repo, &src, &snaps[2..], tmp.path());
        eprintln!("{name}: mover pruned its repository");
    }
    // restic prunes what mover wrote; both check it, both restore it.
    let tmp = tempdir();
    let (repo, src) = (tmp.path().join("repo"), tmp.path().join("src"));
    ok(mover().arg("-r").arg(&repo).arg("init"));
    let snaps = back_up_versions(mover, &repo, &src, 0..4);
    ok(restic_018()
        .arg("-r")
        .arg(&repo)
        .args(["forget", "--keep-last", "2", "--prune"]));
    ok(mover().arg("-r").arg(&repo).args(["check", "--read-data"]));
    ok(restic().arg("-r").arg(&repo).args(["check", "--read-data"]));
    assert_restores(mover, &repo, &src, &snaps[2..], tmp.path());
}

#[test]
fn repacking_with_a_size_limit_and_uncompressed_data() {
    let tmp = tempdir();
    let (repo, src) = (tmp.path().join("repo"), tmp.path().join("src"));
    ok(mover().arg("-r").arg(&repo).arg("init"));
    // Uncompressed data blobs, then everything repacked compressed.
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("text"), "compressible line\n".repeat(100_000)).unwrap();
    ok(mover()
        .arg("-r")
        .arg(&repo)
        .args(["--compression", "off", "backup"])
        .arg(&src));
    let target = tmp.path().join("t");
    let out = ok(mover()
        .arg("-r")
        .arg(&repo)
        .args(["prune", "--repack-uncompressed", "-v"]));
    assert!(out.contains("to repack:"), "{out}");
    ok(restic().arg("-r").arg(&repo).args(["check", "--read-data"]));
    let stats = ok(restic_018()
        .arg("-r")
        .arg(&repo)
        .args(["stats", "--mode", "raw-data", "--json"]));
    let stats: serde_json::Value = serde_json::from_str(&stats).unwrap();
    assert_eq!(
        stats["compression_progress"].as_f64(),
        Some(100.0),
        "{stats}"
    );
    ok(restic()
        .arg("-r")
        .arg(&repo)
        .args(["restore", "latest", "--target"])
        .arg(&target));
    assert_eq!(
        std::fs::read(restored_path(&target, &src).join("text")).unwrap(),
        std::fs::read(src.join("text")).unwrap()
    );
    // Bad limits are one-line errors, before anything is read.
    for bad in [
        vec!["--max-unused", "100%"],
        vec!["--max-unused", "lots"],
        vec!["--max-repack-size", "x"],
        vec!["--repack-smaller-than", "1T"],
    ] {
        let err = fails_with(mover().arg("-r").arg(&repo).arg("prune").args(&bad), 1);
        assert_eq!(err.trim().lines().count(), 1, "{bad:?}: {err}");
    }
}

#[test]
fn prune_deletes_the_packs_a_killed_backup_left() {
    let tmp = tempdir();
    let (repo, src) = (tmp.path().join("repo"), tmp.path().join("src"));
    ok(mover().arg("-r").arg(&repo).arg("init"));
    let snaps = back_up_versions(mover, &repo, &src, 0..1);
    let kept = packs(&repo);
    // A backup killed after its packs are uploaded but before its index: packs that no
    // index lists, and a lock of a dead process.
    switch_to_version(&src, 7, SHAPE);
    let mut child = mover()
        .arg("-r")
        .arg(&repo)
        .args(["--pack-size", "4", "backup", "--host", "h"])
        .arg(&src)
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while packs(&repo).len() <= kept.len() && started.elapsed().as_secs() < 30 {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let finished = snapshot_ids(&repo).len() > snaps.len();
    // Packs no index lists are a hint to check, not damage; packs an index lists but no
    // snapshot uses (killed between index and snapshot) are unused data.
    let out = ok(mover().arg("-r").arg(&repo).arg("check"));
    let orphans = packs(&repo).difference(&kept).count();
    eprintln!("killed with {orphans} packs of its own; check said:\n{out}");
    // prune removes the dead process's lock itself (it conflicts with an exclusive lock),
    // then the packs nothing uses.
    ok(mover().arg("-r").arg(&repo).arg("prune"));
    if finished {
        eprintln!("the backup finished before it was killed; its packs are in use");
    } else {
        assert_eq!(packs(&repo), kept, "prune left packs of the killed backup");
    }
    assert_eq!(std::fs::read_dir(repo.join("locks")).unwrap().count(), 0);
    ok(restic().arg("-r").arg(&repo).args(["check", "--read-data"]));
    assert_restores(mover, &repo, &src, &snaps, tmp.path());
}

/// Applies one kind of damage to a copy of a healthy repository.
fn damage(repo: &Path, kind: &str) {
    let biggest = || {
        packs(repo)
            .into_iter()
            .max_by_key(|p| std::fs::metadata(p).unwrap().len())
            .unwrap()
    };
    let smallest = || {
        packs(repo)
            .into_iter()
            .min_by_key(|p| std::fs::metadata(p).unwrap().len())
            .unwrap()
    };
    match kind {
        "missing data pack" => std::fs::remove_file(biggest()).unwrap(),
        "missing tree pack" => std::fs::remove_file(smallest()).unwrap(),
        "flipped byte in a data pack" => {
            let p = biggest();
            let mut bytes = std::fs::read(&p).unwrap();
            bytes[1000] ^= 0x40;
            std::fs::write(&p, bytes).unwrap();
        }
        "truncated pack" => {
            let p = biggest();
            let len = std::fs::metadata(&p).unwrap().len();
            std::fs::OpenOptions::new()
                .write(true)
                .open(&p)
                .unwrap()
                .set_len(len / 2)
                .unwrap();
        }
        "missing index" => {
            for f in std::fs::read_dir(repo.join("index")).unwrap().flatten() {
                std::fs::remove_file(f.path()).unwrap();
            }
        }
        "corrupt snapshot" => {
            let f = std::fs::read_dir(repo.join("snapshots"))
                .unwrap()
                .flatten()
                .next()
                .unwrap();
            let mut bytes = std::fs::read(f.path()).unwrap();
            let last = bytes.len() - 1;
            bytes[last] ^= 1;
            std::fs::write(f.path(), bytes).unwrap();
        }
        "extra unreferenced pack" => {
            let p = biggest();
            let copy = std::fs::read(&p).unwrap();
            let id = mover::format::Id::hash(&copy[..copy.len() / 2]).to_hex();
            let dir = repo.join("data").join(&id[..2]);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join(&id), &copy[..copy.len() / 2]).unwrap();
        }
        other => panic!("unknown damage {other}"),
    }
}

#[test]
fn check_verdicts_on_damaged_repositories_are_restics() {
    let tmp = tempdir();
    let (healthy, src) = (tmp.path().join("healthy"), tmp.path().join("src"));
    ok(mover().arg("-r").arg(&healthy).arg("init"));
    back_up_versions(mover, &healthy, &src, 0..2);
    ok(mover().arg("-r").arg(&healthy).arg("check"));
    let kinds = [
        "missing data pack",
        "missing tree pack",
        "flipped byte in a data pack",
        "truncated pack",
        "missing index",
        "corrupt snapshot",
        "extra unreferenced pack",
    ];
    for kind in kinds {
        for read_data in [false, true] {
            let repo = tmp.path().join("damaged");
            let _ = std::fs::remove_dir_all(&repo);
            ok(Command::new("cp").arg("-a").arg(&healthy).arg(&repo));
            damage(&repo, kind);
            let flags: &[&str] = if read_data {
                &["check", "--read-data"]
            } else {
                &["check"]
            };
            // restic 0.18 is the judge: 0.14 retries reads of a missing pack for minutes.
            let restic_out = run(restic_018().arg("-r").arg(&repo).args(flags));
            let mover_out = run(mover().arg("-r").arg(&repo).args(flags));
            let restic_ok = restic_out.status.success();
            assert_eq!(
                mover_out.status.success(),
                restic_ok,
                "{kind} (read data: {read_data}): restic says {}, mover exits {:?}\nrestic:\n{}\nmover:\n{}{}",
                if restic_ok { "clean" } else { "damaged" },
                mover_out.status.code(),
                String::from_utf8_lossy(&restic_out.stdout),
                String::from_utf8_lossy(&mover_out.stdout),
                String::from_utf8_lossy(&mover_out.stderr),
            );
            if kind == "extra unreferenced pack" {
                let out = String::from_utf8_lossy(&mover_out.stdout);
                assert!(out.contains("not referenced in any index"), "{out}");
            }
            if !restic_ok {
                assert_eq!(mover_out.status.code(), Some(1), "{kind}");
                let stderr = String::from_utf8_lossy(&mover_out.stderr);
                let named = stderr.lines().any(|l| {
                    l.starts_with("error: ")
                        && ["pack ", "blob ", "snapshot ", "index ", "tree "]
                            .iter()
                            .any(|w| l.contains(w))
                });
                assert!(
                    named,
                    "{kind}: no error names the damaged object:\n{stderr}"
                );
            }
        }
    }
}

#[test]
fn read_data_subsets() {
    let tmp = tempdir();
    let (repo, src) = (tmp.path().join("repo"), tmp.path().join("src"));
    ok(mover().arg("-r").arg(&repo).arg("init"));
    back_up_versions(mover, &repo, &src, 0..2);
    let mut read_total = 0;
    for n in 1..=3 {
        let out = ok(mover().arg("-r").arg(&repo).args([
            "--json",
            "check",
            "--read-data-subset",
            &format!("{n}/3"),
        ]));
        let summary: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
        read_total += summary["packs_read"].as_u64().unwrap();
    }
    assert_eq!(
        read_total as usize,
        packs(&repo).len(),
        "the three groups cover every pack once"
    );
    ok(mover()
        .arg("-r")
        .arg(&repo)
        .args(["check", "--read-data-subset", "50%"]));
    ok(mover()
        .arg("-r")
        .arg(&repo)
        .args(["check", "--read-data-subset", "1M"]));
    for bad in ["0/3", "4/3", "1/0", "0%", "101%", "x"] {
        let err = fails_with(
            mover()
                .arg("-r")
                .arg(&repo)
                .args(["check", "--read-data-subset", bad]),
            1,
        );
        assert_eq!(err.trim().lines().count(), 1, "{bad}: {err}");
    }
}

#[test]
fn unlock_removes_stale_locks_and_remove_all_removes_every_lock() {
    let tmp = tempdir();
    let (repo, src) = (tmp.path().join("repo"), tmp.path().join("src"));
    ok(mover().arg("-r").arg(&repo).arg("init"));
    back_up_versions(mover, &repo, &src, 0..1);
    let write_lock =
        |pid: u32, host: &str, minutes: i64| write_foreign_lock(&repo, pid, host, minutes);
    let locks = || std::fs::read_dir(repo.join("locks")).unwrap().count();
    // The live lock's process: restic probes it with SIGHUP, so it ignores that.
    let mut holder = Command::new("sh")
        .args(["-c", "trap '' HUP; sleep 300"])
        .spawn()
        .unwrap();
    let live = write_lock(holder.id(), &mover::host::hostname(), 0);
    write_lock(u32::MAX - 3, &mover::host::hostname(), 1);
    write_lock(1, "another-host", 45);
    assert_eq!(locks(), 3);
    let out = ok(mover().arg("-r").arg(&repo).arg("unlock"));
    assert!(out.contains("successfully removed 2 locks"), "{out}");
    assert_eq!(locks(), 1);
    assert!(
        repo.join("locks").join(live.to_hex()).exists(),
        "the live lock stays"
    );
    // restic's unlock agrees that nothing stale is left.
    ok(restic().arg("-r").arg(&repo).arg("unlock"));
    assert_eq!(locks(), 1);
    ok(mover()
        .arg("-r")
        .arg(&repo)
        .args(["unlock", "--remove-all"]));
    assert_eq!(locks(), 0);
    holder.kill().unwrap();
    holder.wait().unwrap();
}

#[test]
fn keys_added_by_either_open_with_the_other() {
    let tmp = tempdir();
    let (repo, src) = (tmp.path().join("repo"), tmp.path().join("src"));
    ok(mover().arg("-r").arg(&repo).arg("init"));
    back_up_versions(mover, &repo, &src, 0..1);
    let pw2 = tmp.path().join("pw2");
    std::fs::write(&pw2, "second password\n").unwrap();
    let out = ok(mover()
        .arg("-r")
        .arg(&repo)
        .args([
            "key",
            "add",
            "--user",
            "alice",
            "--host",
            "laptop",
            "--new-password-file",
        ])
        .arg(&pw2));
    assert!(out.contains("saved new key"), "{out}");
    // restic opens the repository with the key mover added.
    ok(restic()
        .arg("-r")
        .arg(&repo)
        .env("RESTIC_PASSWORD", "second password")
        .arg("snapshots"));
    let listed = ok(restic()
        .arg("-r")
        .arg(&repo)
        .args(["key", "list", "--json"]));
    let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["userName"] == "alice")
    );
    let mine = ok(mover().arg("-r").arg(&repo).args(["--json", "key", "list"]));
    let mine: serde_json::Value = serde_json::from_str(&mine).unwrap();
    assert_eq!(mine.as_array().map(Vec::len), Some(2));
    // A key restic added opens with mover.
    let pw3 = tmp.path().join("pw3");
    std::fs::write(&pw3, "third").unwrap();
    ok(restic()
        .arg("-r")
        .arg(&repo)
        .args(["key", "add", "--new-password-file"])
        .arg(&pw3));
    ok(mover()
        .arg("-r")
        .arg(&repo)
        .env("RESTIC_PASSWORD", "third")
        .arg("snapshots"));
    // passwd replaces the key in use; the old password stops working.
    let pw4 = tmp.path().join("pw4");
    std::fs::write(&pw4, "fourth").unwrap();
    ok(mover()
        .arg("-r")
        .arg(&repo)
        .env("RESTIC_PASSWORD", "third")
        .args(["key", "passwd", "--new-password-file"])
        .arg(&pw4));
    // restic 0.17+ exits 12 on a wrong password (0.14 exits 1).
    fails_with(
        restic_018()
            .arg("-r")
            .arg(&repo)
            .env("RESTIC_PASSWORD", "third")
            .arg("snapshots"),
        12,
    );
    ok(restic()
        .arg("-r")
        .arg(&repo)
        .env("RESTIC_PASSWORD", "fourth")
        .arg("snapshots"));
    // The key in use cannot be removed; another can.
    let current = mine
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["current"] == true)
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let err = fails_with(
        mover()
            .arg("-r")
            .arg(&repo)
            .args(["key", "remove", &current[..8]]),
        1,
    );
    assert!(err.contains("currently used"), "{err}");
    ok(mover()
        .arg("-r")
        .arg(&repo)
        .env("RESTIC_PASSWORD", "fourth")
        .args(["key", "remove", &current[..8]]));
    fails_with(mover().arg("-r").arg(&repo).arg("snapshots"), 12);
    ok(restic()
        .arg("-r")
        .arg(&repo)
        .env("RESTIC_PASSWORD", "fourth")
        .args(["check"]));
}

#[test]
fn cat_config_exit_codes_are_restics() {
    let tmp = tempdir();
    let repo = tmp.path().join("repo");
    fails_with(mover().arg("-r").arg(&repo).args(["cat", "config"]), 10);
    ok(mover().arg("-r").arg(&repo).arg("init"));
    ok(mover().arg("-r").arg(&repo).args(["cat", "config"]));
    fails_with(
        mover()
            .arg("-r")
            .arg(&repo)
            .env("RESTIC_PASSWORD", "wrong")
            .args(["cat", "config"]),
        12,
    );
}

#[test]
fn snapshots_tables_are_restic_018s_byte_for_byte() {
    let tmp = tempdir();
    let repo = tmp.path().join("repo");
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    std::fs::write(a.join("f"), "a").unwrap();
    std::fs::write(b.join("f"), "b").unwrap();
    ok(mover().arg("-r").arg(&repo).arg("init"));
    // With and without a summary (restic 0.14 writes none), several paths, tags, hosts.
    ok(mover()
        .arg("-r")
        .arg(&repo)
        .args(["backup", "--host", "one", "--tag", "x,longer-tag"])
        .arg(&a));
    ok(restic()
        .arg("-r")
        .arg(&repo)
        .args(["backup", "--host", "two"])
        .arg(&a)
        .arg(&b));
    ok(mover()
        .arg("-r")
        .arg(&repo)
        .args(["backup", "--host", "a-much-longer-host-name"])
        .arg(&b));
    for flags in [
        vec!["snapshots"],
        vec!["snapshots", "--compact"],
        vec!["snapshots", "--group-by", "host,tags"],
        vec!["snapshots", "--latest", "1", "--group-by", "paths"],
        vec!["snapshots", "--host", "one"],
    ] {
        let theirs = ok(restic_018().arg("-r").arg(&repo).args(&flags));
        let ours = ok(mover().arg("-r").arg(&repo).args(&flags));
        // restic prints groups in Go's random map order: compare them as a set.
        let groups = |text: &str| -> BTreeSet<String> {
            text.split("snapshots for ")
                .filter(|g| !g.is_empty())
                .map(str::to_string)
                .collect()
        };
        assert_eq!(groups(&ours), groups(&theirs), "{flags:?}");
        if !flags.contains(&"--group-by") {
            assert_eq!(ours, theirs, "{flags:?}");
        }
    }
}
