//! restic and mover read each other's local repositories: every node kind, both directions.

use crate::support::compare::{CompareOptions, compare_trees};
use crate::support::tree_gen::{GenOptions, generate_tree_with_summary};
use crate::support::*;
use std::path::Path;

fn compare_opts(sockets_restored: bool, xattrs: bool, restic_involved: bool) -> CompareOptions {
    CompareOptions {
        skip_sockets: !sockets_restored,
        owner: is_root(),
        xattrs,
        // restic 0.14 stores a non-UTF-8 symlink target with U+FFFD (it has no
        // linktarget_raw), so only mover-to-mover round trips keep those bytes.
        lossy_symlink_targets: restic_involved,
        ..CompareOptions::default()
    }
}

fn make_tree(root: &Path, seed: u64) -> bool {
    let opts = GenOptions {
        seed,
        ..GenOptions::default()
    };
    generate_tree_with_summary(root, &opts)
        .expect("generate test tree")
        .xattrs
}

#[test]
fn restic_checks_and_restores_what_mover_wrote() {
    let tmp = tempdir();
    let src = tmp.path().join("src");
    let xattrs = make_tree(&src, 11);
    let repo = tmp.path().join("repo");

    ok(mover().arg("-r").arg(&repo).arg("init"));
    let out = ok(mover()
        .arg("-r")
        .arg(&repo)
        .args(["backup", "--host", "testhost", "--tag", "a,b"])
        .arg(&src));
    assert!(out.contains("snapshot "), "backup output: {out}");

    ok(restic().arg("-r").arg(&repo).args(["check", "--read-data"]));
    let snaps = ok(restic().arg("-r").arg(&repo).args(["snapshots", "--json"]));
    let snaps: serde_json::Value = serde_json::from_str(&snaps).expect("restic snapshots json");
    assert_eq!(snaps.as_array().map(|a| a.len()), Some(1));
    assert_eq!(snaps[0]["hostname"], "testhost");
    assert_eq!(snaps[0]["tags"], serde_json::json!(["a", "b"]));
    assert_eq!(snaps[0]["paths"][0], src.to_str().unwrap());

    let target = tmp.path().join("restic-restore");
    ok(restic()
        .arg("-r")
        .arg(&repo)
        .args(["restore", "latest", "--target"])
        .arg(&target));
    // restic 0.14 does not recreate sockets.
    compare_trees(
        &src,
        &restored_path(&target, &src),
        &compare_opts(false, xattrs, true),
    )
    .unwrap_or_else(|e| panic!("restic restore of mover's snapshot differs:\n{e}"));

    // restic dump of a file equals the source file.
    let large = src.join("large.bin");
    let dumped = run(restic()
        .arg("-r")
        .arg(&repo)
        .args(["dump", "latest"])
        .arg(&large));
    assert!(dumped.status.success(), "restic dump failed");
    assert_eq!(dumped.stdout, std::fs::read(&large).unwrap());

    // mover reads its own snapshot back, sockets included.
    let target2 = tmp.path().join("mover-restore");
    ok(mover()
        .arg("-r")
        .arg(&repo)
        .args(["restore", "latest", "--target"])
        .arg(&target2));
    compare_trees(
        &src,
        &restored_path(&target2, &src),
        &compare_opts(true, xattrs, false),
    )
    .unwrap_or_else(|e| panic!("mover restore of mover's snapshot differs:\n{e}"));
}

fn restic_backup_then_mover_restore(version: &str, compression: &str, seed: u64) {
    let tmp = tempdir();
    let src = tmp.path().join("src");
    let xattrs = make_tree(&src, seed);
    let repo = tmp.path().join("repo");
    ok(restic()
        .arg("-r")
        .arg(&repo)
        .args(["init", "--repository-version", version]));
    ok(restic()
        .arg("-r")
        .arg(&repo)
        .args(["backup", "--compression", compression])
        .arg(&src));
    let target = tmp.path().join("restore");
    ok(mover()
        .arg("-r")
        .arg(&repo)
        .args(["restore", "latest", "--target"])
        .arg(&target));
    // restic 0.14 does not store sockets at all, so there is none to restore.
    compare_trees(
        &src,
        &restored_path(&target, &src),
        &compare_opts(false, xattrs, true),
    )
    .unwrap_or_else(|e| panic!("mover restore of restic's v{version} snapshot differs:\n{e}"));

    // dump agrees with restic's own dump.
    let large = src.join("large.bin");
    let ours = run(mover()
        .arg("-r")
        .arg(&repo)
        .args(["dump", "latest"])
        .arg(&large));
    assert!(
        ours.status.success(),
        "mover dump failed: {}",
        String::from_utf8_lossy(&ours.stderr)
    );
    assert_eq!(ours.stdout, std::fs::read(&large).unwrap());
}

#[test]
fn mover_restores_restic_v2_compressed() {
    restic_backup_then_mover_restore("2", "auto", 21);
}

#[test]
fn mover_restores_restic_v2_uncompressed() {
    restic_backup_then_mover_restore("2", "off", 22);
}

#[test]
fn mover_restores_restic_v1() {
    restic_backup_then_mover_restore("1", "auto", 23);
}

#[test]
fn restic_reads_mover_v1_repository() {
    let tmp = tempdir();
    let src = tmp.path().join("src");
    let xattrs = make_tree(&src, 31);
    let repo = tmp.path().join("repo");
    ok(mover()
        .arg("-r")
        .arg(&repo)
        .args(["init", "--repository-version", "1"]));
    ok(mover().arg("-r").arg(&repo).arg("backup").arg(&src));
    ok(restic().arg("-r").arg(&repo).args(["check", "--read-data"]));
    let target = tmp.path().join("restore");
    ok(restic()
        .arg("-r")
        .arg(&repo)
        .args(["restore", "latest", "--target"])
        .arg(&target));
    compare_trees(
        &src,
        &restored_path(&target, &src),
        &compare_opts(false, xattrs, true),
    )
    .unwrap_or_else(|e| panic!("restic restore of mover's v1 snapshot differs:\n{e}"));
}

#[test]
fn backup_creates_missing_repository_and_mixes_with_restic_snapshots() {
    let tmp = tempdir();
    let src = tmp.path().join("src");
    make_tree(&src, 41);
    let repo = tmp.path().join("repo");
    let out = ok(mover().arg("-r").arg(&repo).arg("backup").arg(&src));
    assert!(
        out.contains("did not exist"),
        "backup should say it created the repository: {out}"
    );
    // restic adds a snapshot to mover's repository; both tools list both snapshots.
    ok(restic().arg("-r").arg(&repo).arg("backup").arg(&src));
    let ours: serde_json::Value = serde_json::from_str(&ok(mover()
        .arg("-r")
        .arg(&repo)
        .args(["snapshots", "--json"])))
    .expect("mover snapshots --json");
    let theirs: serde_json::Value = serde_json::from_str(&ok(restic()
        .arg("-r")
        .arg(&repo)
        .args(["snapshots", "--json"])))
    .expect("restic snapshots --json");
    let ids = |v: &serde_json::Value| -> Vec<String> {
        let mut ids: Vec<String> = v
            .as_array()
            .expect("array")
            .iter()
            .map(|s| s["id"].as_str().expect("id").to_string())
            .collect();
        ids.sort();
        ids
    };
    assert_eq!(ids(&ours), ids(&theirs));
    assert_eq!(ids(&ours).len(), 2);
    for key in ["time", "tree", "paths", "hostname", "username", "short_id"] {
        for (a, b) in ours
            .as_array()
            .unwrap()
            .iter()
            .zip(theirs.as_array().unwrap())
        {
            if a["id"] == b["id"] {
                assert_eq!(a[key], b[key], "field {key} differs");
            }
        }
    }
    ok(restic().arg("-r").arg(&repo).args(["check", "--read-data"]));
}

#[test]
fn restore_filters_and_ls() {
    let tmp = tempdir();
    let src = tmp.path().join("src");
    make_tree(&src, 51);
    let repo = tmp.path().join("repo");
    ok(mover()
        .arg("-r")
        .arg(&repo)
        .arg("backup")
        .arg(&src)
        .args(["--exclude", "*.bin"]));
    let ls = ok(mover().arg("-r").arg(&repo).args(["ls", "latest"]));
    assert!(!ls.contains("large.bin"), "excluded file listed:\n{ls}");
    let restic_ls = ok(restic().arg("-r").arg(&repo).args(["ls", "latest"]));
    let body = |s: &str| -> Vec<String> {
        s.lines()
            .filter(|l| l.starts_with('/'))
            .map(str::to_string)
            .collect()
    };
    assert_eq!(body(&ls), body(&restic_ls), "mover ls and restic ls differ");

    let target = tmp.path().join("restore");
    let include = src.join("files");
    ok(mover()
        .arg("-r")
        .arg(&repo)
        .args(["restore", "latest", "--target"])
        .arg(&target)
        .arg("--include")
        .arg(&include));
    let restored = restored_path(&target, &src);
    assert!(
        restored.join("files/hello.txt").exists(),
        "included dir missing"
    );
    let top: Vec<_> = std::fs::read_dir(&restored)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        top,
        vec![std::ffi::OsString::from("files")],
        "only the include lands"
    );
}

#[test]
fn restore_over_an_existing_tree_replaces_what_is_there() {
    let tmp = tempdir();
    let src = tmp.path().join("src");
    let xattrs = make_tree(&src, 23);
    let repo = tmp.path().join("repo");
    ok(mover().arg("-r").arg(&repo).arg("init"));
    ok(mover().arg("-r").arg(&repo).arg("backup").arg(&src));

    // The target already holds the tree, with every file longer than and different from
    // the snapshot's.
    let target = tmp.path().join("restore");
    ok(mover()
        .arg("-r")
        .arg(&repo)
        .args(["restore", "latest", "--target"])
        .arg(&target));
    let restored = restored_path(&target, &src);
    let mut files = Vec::new();
    let mut stack = vec![restored.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let kind = entry.file_type().unwrap();
            if kind.is_dir() {
                stack.push(entry.path());
            } else if kind.is_file() {
                files.push(entry.path());
            }
        }
    }
    assert!(files.len() > 10, "test tree has files");
    for path in &files {
        let mut perms = std::fs::metadata(path).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o600);
        std::fs::set_permissions(path, perms).unwrap();
        let mut old = std::fs::read(path).unwrap();
        for b in old.iter_mut() {
            *b = !*b;
        }
        old.extend_from_slice(&[0x5a; 9000]);
        std::fs::write(path, &old).unwrap();
    }

    ok(mover()
        .arg("-r")
        .arg(&repo)
        .args(["restore", "latest", "--target"])
        .arg(&target));
    compare_trees(&src, &restored, &compare_opts(true, xattrs, false))
        .unwrap_or_else(|e| panic!("restore over an existing tree differs:\n{e}"));
}
