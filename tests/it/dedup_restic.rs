//! Deduplication parity with restic: with restic's Rabin chunker and restic's tree encoding,
//! mover and restic backing up the same tree into one repository store it once.

use crate::support::tree_gen::{GenOptions, generate_tree_with_summary};
use crate::support::*;
use std::path::Path;

// Both tools are given the target as a relative path, so the root tree holds just `src`:
// an absolute path would also store /tmp, whose mtime other tests keep changing.
fn relative(src: &Path) -> (&Path, &std::ffi::OsStr) {
    (src.parent().unwrap(), src.file_name().unwrap())
}

fn mover_backup_json(repo: &Path, src: &Path, extra: &[&str]) -> serde_json::Value {
    let (cwd, name) = relative(src);
    let out = ok(mover()
        .current_dir(cwd)
        .arg("-r")
        .arg(repo)
        .args(["--json", "backup", "--host", "parity"])
        .args(extra)
        .arg(name));
    let last = out
        .lines()
        .rev()
        .find(|l| l.contains("\"summary\""))
        .unwrap_or_else(|| panic!("no summary in {out}"));
    serde_json::from_str(last).unwrap()
}

fn restic_backup_json(repo: &Path, src: &Path) -> serde_json::Value {
    let (cwd, name) = relative(src);
    let out = ok(restic()
        .current_dir(cwd)
        .arg("-r")
        .arg(repo)
        .args(["backup", "--json", "--host", "parity"])
        .arg(name));
    let last = out
        .lines()
        .rev()
        .find(|l| l.contains("\"summary\""))
        .unwrap_or_else(|| panic!("no restic summary in {out}"));
    serde_json::from_str(last).unwrap()
}

fn tree() -> (tempfile::TempDir, std::path::PathBuf) {
    let tmp = tempdir();
    let src = tmp.path().join("src");
    generate_tree_with_summary(
        &src,
        &GenOptions {
            seed: 81,
            large_file_bytes: 5 * 1024 * 1024,
            ..GenOptions::default()
        },
    )
    .unwrap();
    // Two nodes where mover keeps more than restic 0.14 does: restic 0.14 stores no
    // sockets, and stores a non-UTF-8 symlink target lossily without `linktarget_raw`
    // (restic 0.16+ writes that field as mover does). Trees holding them cannot match 0.14.
    std::fs::remove_file(src.join("special/socket")).unwrap();
    std::fs::remove_file(src.join("links/non-utf8-target")).unwrap();
    (tmp, src)
}

#[test]
fn mover_adds_nothing_after_restic_and_trees_match() {
    let (tmp, src) = tree();
    let repo = tmp.path().join("repo");
    ok(restic().arg("-r").arg(&repo).arg("init"));
    restic_backup_json(&repo, &src);
    let snaps: serde_json::Value = serde_json::from_str(&ok(restic()
        .arg("-r")
        .arg(&repo)
        .args(["snapshots", "--json"])))
    .unwrap();
    let restic_tree = snaps[0]["tree"].as_str().unwrap().to_string();

    // --force: every file is read and chunked again (Rabin, the repository's polynomial)
    // and every tree encoded again; nothing is new.
    let forced = mover_backup_json(&repo, &src, &["--force"]);
    assert_eq!(forced["tree"], restic_tree.as_str(), "root tree ids differ");
    assert_eq!(forced["data_blobs"], 0, "{forced}");
    assert_eq!(forced["tree_blobs"], 0, "{forced}");
    assert!(forced["files_new"].as_u64().unwrap() > 10);

    // With restic's snapshot as parent, nothing is read at all.
    let incremental = mover_backup_json(&repo, &src, &[]);
    assert_eq!(incremental["tree"], restic_tree.as_str());
    assert_eq!(incremental["bytes_read"], 0);
    assert_eq!(incremental["data_blobs"], 0);
    ok(restic().arg("-r").arg(&repo).args(["check", "--read-data"]));
}

#[test]
fn restic_adds_nothing_after_mover_in_rabin_mode() {
    let (tmp, src) = tree();
    let repo = tmp.path().join("repo");
    ok(restic().arg("-r").arg(&repo).arg("init"));
    let ours = mover_backup_json(&repo, &src, &[]);
    assert!(ours["data_blobs"].as_u64().unwrap() > 3);
    let theirs = restic_backup_json(&repo, &src);
    assert_eq!(theirs["data_added"], 0, "restic added data: {theirs}");
    assert_eq!(theirs["tree_blobs"], 0, "restic added trees: {theirs}");
    assert_eq!(theirs["data_blobs"], 0, "restic added blobs: {theirs}");
    let snaps: serde_json::Value = serde_json::from_str(&ok(restic()
        .arg("-r")
        .arg(&repo)
        .args(["snapshots", "--json"])))
    .unwrap();
    assert_eq!(snaps[0]["tree"], snaps[1]["tree"]);
}

#[test]
fn chunker_is_a_repository_property() {
    let (tmp, src) = tree();
    // A repository mover creates records FastCDC; restic still opens and checks it.
    let repo = tmp.path().join("mover-repo");
    ok(mover().arg("-r").arg(&repo).arg("init"));
    let cfg: serde_json::Value =
        serde_json::from_str(&ok(mover().arg("-r").arg(&repo).args(["cat", "config"]))).unwrap();
    assert_eq!(cfg["mover_chunker"], "fastcdc");
    let restic_cfg: serde_json::Value =
        serde_json::from_str(&ok(restic().arg("-r").arg(&repo).args(["cat", "config"]))).unwrap();
    assert_eq!(restic_cfg["id"], cfg["id"]);
    mover_backup_json(&repo, &src, &[]);
    ok(restic().arg("-r").arg(&repo).args(["check", "--read-data"]));

    // --chunker rabin on that repository for one run: same content, cut differently, so
    // new data blobs appear; a FastCDC run afterwards adds none.
    let rabin = mover_backup_json(&repo, &src, &["--force", "--chunker", "rabin"]);
    assert!(rabin["data_blobs"].as_u64().unwrap() > 0, "{rabin}");
    let fast = mover_backup_json(&repo, &src, &["--force"]);
    assert_eq!(fast["data_blobs"], 0, "{fast}");
    let err = fails_with(
        mover()
            .arg("-r")
            .arg(&repo)
            .args(["backup", "--chunker", "bogus"])
            .arg(&src),
        1,
    );
    assert!(err.contains("unknown chunker"), "{err}");
}
