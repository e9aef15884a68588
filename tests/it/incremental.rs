//! Incremental backups: unchanged files on a cloned volume (new inodes and ctimes, same
//! mtimes) are not read again; files changed in place are, and only those.

use crate::support::tree_gen::{GenOptions, generate_tree_with_summary, set_time};
use crate::support::*;
use std::path::Path;

/// Back up `src` with `--json` and return the summary object.
fn backup_json(repo: &Path, src: &Path, extra: &[&str]) -> serde_json::Value {
    let out = ok(mover()
        .arg("-r")
        .arg(repo)
        .args(["--json", "backup"])
        .args(extra)
        .arg(src));
    let last = out
        .lines()
        .rev()
        .find(|l| l.contains("\"summary\""))
        .unwrap_or_else(|| panic!("no summary line in:\n{out}"));
    serde_json::from_str(last).expect("summary json")
}

fn total_file_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let md = e.path().symlink_metadata().unwrap();
        if md.is_dir() {
            total += total_file_bytes(&e.path());
        } else if md.is_file() {
            total += md.len();
        }
    }
    total
}

fn clone_tree(tmp: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let src = tmp.join("vol");
    generate_tree_with_summary(
        &src,
        &GenOptions {
            seed: 71,
            small_files: 200,
            large_file_bytes: 6 * 1024 * 1024,
            ..GenOptions::default()
        },
    )
    .unwrap();
    (src, tmp.join("repo"))
}

/// Replace `src` by a `cp -a` copy of itself: new inodes and ctimes, same mtimes.
fn reclone(src: &Path) {
    let old = src.with_extension("old");
    std::fs::rename(src, &old).unwrap();
    ok(std::process::Command::new("cp")
        .arg("-a")
        .arg(&old)
        .arg(src));
    std::fs::remove_dir_all(&old).unwrap();
}

#[test]
fn cloned_volume_is_not_read_again() {
    let tmp = tempdir();
    let (src, repo) = clone_tree(tmp.path());
    let first = backup_json(&repo, &src, &[]);
    let files = first["files_new"].as_u64().unwrap();
    assert!(files > 200);
    assert_eq!(first["parent"], serde_json::Value::Null);

    let inode_before = std::fs::metadata(src.join("large.bin")).unwrap();
    reclone(&src);
    let inode_after = std::fs::metadata(src.join("large.bin")).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_ne!(
        inode_before.ino(),
        inode_after.ino(),
        "the clone has new inodes"
    );

    let second = backup_json(&repo, &src, &[]);
    assert_eq!(second["parent"], first["snapshot_id"]);
    assert_eq!(second["files_unmodified"].as_u64().unwrap(), files);
    assert_eq!(second["files_new"], 0);
    assert_eq!(second["files_changed"], 0);
    assert_eq!(second["data_blobs"], 0);
    let read = second["bytes_read"].as_u64().unwrap();
    let size = total_file_bytes(&src);
    assert!(read * 100 < size, "read {read} of {size} bytes");
    // Every directory below the target is unchanged, so its tree is reused.
    assert_eq!(second["dirs_new"], 0);

    // restic's stricter rule (inode and ctime) reads everything again.
    reclone(&src);
    let strict = backup_json(&repo, &src, &["--strict-change-detection"]);
    assert_eq!(strict["files_unmodified"], 0);
    assert_eq!(strict["files_changed"].as_u64().unwrap(), files);
    assert_eq!(
        strict["data_blobs"], 0,
        "the content is deduplicated anyway"
    );

    // --force ignores the parent.
    let forced = backup_json(&repo, &src, &["--force"]);
    assert_eq!(forced["files_new"].as_u64().unwrap(), files);
    assert_eq!(forced["parent"], serde_json::Value::Null);

    ok(restic().arg("-r").arg(&repo).args(["check", "--read-data"]));
    let target = tmp.path().join("restore");
    ok(mover()
        .arg("-r")
        .arg(&repo)
        .args(["restore", "latest", "--target"])
        .arg(&target));
    crate::support::compare::compare_trees(
        &src,
        &restored_path(&target, &src),
        &crate::support::compare::CompareOptions {
            owner: is_root(),
            ..Default::default()
        },
    )
    .unwrap();
}

#[test]
fn files_changed_in_place_are_read_and_only_those() {
    let tmp = tempdir();
    let (src, repo) = clone_tree(tmp.path());
    let first = backup_json(&repo, &src, &[]);
    let files = first["files_new"].as_u64().unwrap();

    // 1: appended; 2: same size, new content and new mtime; 3: only the mtime moves.
    let appended = src.join("files/hello.txt");
    let mut data = std::fs::read(&appended).unwrap();
    data.extend_from_slice(b"more\n");
    std::fs::write(&appended, &data).unwrap();
    let same_size = src.join("files/compressible.txt");
    let mut data = std::fs::read(&same_size).unwrap();
    data[0] ^= 1;
    std::fs::write(&same_size, &data).unwrap();
    let touched = src.join("large.bin");
    set_time(&touched, 1_700_000_000, 5).unwrap();
    let expected_read: u64 = [&appended, &same_size, &touched]
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();

    let second = backup_json(&repo, &src, &[]);
    assert_eq!(second["files_changed"], 3, "{second}");
    assert_eq!(second["files_new"], 0);
    assert_eq!(second["files_unmodified"].as_u64().unwrap(), files - 3);
    assert_eq!(second["bytes_read"].as_u64().unwrap(), expected_read);
    // The touched file's content is unchanged: only the two edited files add data.
    assert!(second["data_blobs"].as_u64().unwrap() <= 2, "{second}");
    assert!(second["dirs_changed"].as_u64().unwrap() >= 2);

    let target = tmp.path().join("restore");
    ok(mover()
        .arg("-r")
        .arg(&repo)
        .args(["restore", "latest", "--target"])
        .arg(&target));
    let restored = restored_path(&target, &src);
    for p in [&appended, &same_size, &touched] {
        let rel = p.strip_prefix(&src).unwrap();
        assert_eq!(
            std::fs::read(restored.join(rel)).unwrap(),
            std::fs::read(p).unwrap()
        );
    }
    ok(restic().arg("-r").arg(&repo).args(["check", "--read-data"]));
}
