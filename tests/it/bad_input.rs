//! Bad input gets a clear one-line error and a distinct exit code, never a panic, and never
//! damages the repository.

use crate::support::*;
use std::path::{Path, PathBuf};

fn small_tree(root: &Path) {
    std::fs::create_dir_all(root.join("sub")).unwrap();
    std::fs::write(root.join("a.txt"), b"alpha\n").unwrap();
    let big: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(root.join("sub/big.bin"), big).unwrap();
}

/// A repository with one snapshot of a small tree.
fn repo_with_snapshot(tmp: &Path) -> (PathBuf, PathBuf) {
    let src = tmp.join("src");
    small_tree(&src);
    let repo = tmp.join("repo");
    ok(mover().arg("-r").arg(&repo).arg("backup").arg(&src));
    (repo, src)
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in walk(dir) {
        if e.is_file() {
            out.push(e);
        }
    }
    out.sort();
    out
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

fn flip_byte(path: &Path, offset_from_start: usize) {
    let mut perms = std::fs::metadata(path).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perms.set_readonly(false);
    std::fs::set_permissions(path, perms).unwrap();
    let mut data = std::fs::read(path).unwrap();
    let i = offset_from_start.min(data.len() - 1);
    data[i] ^= 0x40;
    std::fs::write(path, data).unwrap();
}

fn truncate(path: &Path, keep: usize) {
    let data = std::fs::read(path).unwrap();
    std::fs::write(path, &data[..keep.min(data.len())]).unwrap();
}

fn one_line(stderr: &str) -> &str {
    let lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with("Fatal:")).collect();
    assert_eq!(
        lines.len(),
        1,
        "expected exactly one Fatal line in:\n{stderr}"
    );
    assert!(!stderr.contains("panicked"), "panic in:\n{stderr}");
    lines[0]
}

#[test]
fn wrong_password_exits_12() {
    let tmp = tempdir();
    let (repo, _) = repo_with_snapshot(tmp.path());
    let err = fails_with(
        mover()
            .env("RESTIC_PASSWORD", "not-the-password")
            .arg("-r")
            .arg(&repo)
            .arg("snapshots"),
        12,
    );
    assert!(one_line(&err).contains("wrong password"), "{err}");
    // restic agrees the repository is intact.
    ok(restic().arg("-r").arg(&repo).arg("check"));
}

#[test]
fn a_missing_repository_reads_as_restic_018_says_it() {
    let tmp = tempdir();
    let repo = tmp.path().join("nothing-here");
    for verb in ["snapshots", "unlock", "check"] {
        let ours = fails_with(mover().arg("-r").arg(&repo).arg(verb), 10);
        let theirs = fails_with(
            restic_018()
                .arg("-r")
                .arg(&repo)
                .env("RESTIC_PASSWORD", PASSWORD)
                .arg(verb),
            10,
        );
        let fatal = |s: &str| {
            s.lines()
                .skip_while(|l| !l.starts_with("Fatal:"))
                .map(str::to_string)
                .collect::<Vec<_>>()
        };
        assert_eq!(fatal(&ours), fatal(&theirs), "{verb}");
    }
}

#[test]
fn missing_repository_exits_10() {
    let tmp = tempdir();
    let repo = tmp.path().join("nothing-here");
    let err = fails_with(mover().arg("-r").arg(&repo).arg("snapshots"), 10);
    assert!(one_line(&err).contains("does not exist"), "{err}");
    assert!(
        !repo.exists(),
        "a read-only command must not create the repository"
    );
}

#[test]
fn exclusive_lock_exits_11_and_stale_lock_is_removed() {
    let tmp = tempdir();
    let (repo, src) = repo_with_snapshot(tmp.path());
    let write_lock = |pid: u32, age_minutes: i64| {
        write_foreign_lock(&repo, pid, &mover::host::hostname(), age_minutes)
    };
    // A live exclusive lock (this test process holds it) blocks backup and restore.
    let id = write_lock(std::process::id(), 0);
    let err = fails_with(mover().arg("-r").arg(&repo).arg("backup").arg(&src), 11);
    assert!(one_line(&err).contains("locked"), "{err}");
    let target = tmp.path().join("t");
    let err = fails_with(
        mover()
            .arg("-r")
            .arg(&repo)
            .args(["restore", "latest", "--target"])
            .arg(&target),
        11,
    );
    // restic 0.18's words, which scripts match.
    assert!(
        one_line(&err).contains(&format!(
            "unable to create lock in backend: repository is already locked exclusively by PID {}",
            std::process::id()
        )),
        "{err}"
    );
    let storage_id = format!("storage ID {}", id.short());
    for line in [
        "lock was created at ",
        storage_id.as_str(),
        "the `unlock` command can be used to remove stale locks",
    ] {
        assert!(
            err.lines().any(|l| l.starts_with(line)),
            "{line:?} in {err}"
        );
    }
    // `--no-lock` (restic's) reads anyway and writes no lock file; a backup still locks.
    let no_lock = |args: &[&str]| {
        let mut c = mover();
        c.arg("--no-lock").arg("-r").arg(&repo).args(args);
        c
    };
    ok(no_lock(&["restore", "latest", "--target"]).arg(&target));
    assert!(target.exists());
    ok(&mut no_lock(&["stats", "--json"]));
    ok(&mut no_lock(&["check"]));
    assert_eq!(std::fs::read_dir(repo.join("locks")).unwrap().count(), 1);
    fails_with(no_lock(&["backup"]).arg(&src), 11);
    std::fs::remove_file(repo.join("locks").join(id.to_hex())).unwrap();
    // A stale one (old, and its process is gone) does not block: it is removed, and said so.
    let stale = write_lock(u32::MAX - 7, 45);
    let out = run(mover().arg("-r").arg(&repo).arg("backup").arg(&src));
    assert!(out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("removed stale exclusive lock") && stderr.contains(&stale.short()),
        "{stderr}"
    );
    // Our own shared locks are gone after each command, and so is the stale one.
    let left = std::fs::read_dir(repo.join("locks")).unwrap().count();
    assert_eq!(left, 0, "no lock file remains");
}

#[test]
fn bit_flipped_pack_fails_restore_and_names_the_pack() {
    let tmp = tempdir();
    let (repo, _) = repo_with_snapshot(tmp.path());
    let packs = files_in(&repo.join("data"));
    // The biggest pack holds file data; flip a byte in its first blob.
    let pack = packs
        .iter()
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    flip_byte(pack, 100);
    let target = tmp.path().join("t");
    let out = run(mover()
        .arg("-r")
        .arg(&repo)
        .args(["restore", "latest", "--target"])
        .arg(&target));
    assert_ne!(out.status.code(), Some(0), "corrupt restore must fail");
    let err = String::from_utf8_lossy(&out.stderr);
    let line = one_line(&err);
    let name = pack.file_name().unwrap().to_str().unwrap();
    assert!(
        line.contains(&name[..8]),
        "error should name pack {name}: {line}"
    );
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("restored "),
        "no success report"
    );
}

#[test]
fn truncated_pack_fails_restore() {
    let tmp = tempdir();
    let (repo, _) = repo_with_snapshot(tmp.path());
    let packs = files_in(&repo.join("data"));
    let pack = packs
        .iter()
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    truncate(pack, 1000);
    let target = tmp.path().join("t");
    let out = run(mover()
        .arg("-r")
        .arg(&repo)
        .args(["restore", "latest", "--target"])
        .arg(&target));
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let line = one_line(&err);
    assert!(line.contains("pack"), "{line}");
}

#[test]
fn corrupt_index_snapshot_key_and_config_are_named() {
    let tmp = tempdir();
    let (repo, _) = repo_with_snapshot(tmp.path());

    let index = files_in(&repo.join("index")).remove(0);
    let saved = std::fs::read(&index).unwrap();
    truncate(&index, 20);
    let err = fails_with(mover().arg("-r").arg(&repo).args(["ls", "latest"]), 1);
    let line = one_line(&err);
    assert!(
        line.contains("index") && line.contains(&index.file_name().unwrap().to_str().unwrap()[..8]),
        "{line}"
    );
    std::fs::write(&index, saved).unwrap();

    let snap = files_in(&repo.join("snapshots")).remove(0);
    let saved = std::fs::read(&snap).unwrap();
    flip_byte(&snap, 40);
    let err = fails_with(mover().arg("-r").arg(&repo).arg("snapshots"), 1);
    let line = one_line(&err);
    assert!(line.contains("snapshot"), "{line}");
    std::fs::write(&snap, saved).unwrap();

    let config = repo.join("config");
    let saved = std::fs::read(&config).unwrap();
    flip_byte(&config, 20);
    let err = fails_with(mover().arg("-r").arg(&repo).arg("snapshots"), 1);
    assert!(one_line(&err).contains("config"), "{err}");
    std::fs::write(&config, saved).unwrap();

    let key = files_in(&repo.join("keys")).remove(0);
    truncate(&key, 30);
    let err = fails_with(mover().arg("-r").arg(&repo).arg("snapshots"), 1);
    assert!(one_line(&err).contains("key file"), "{err}");
}

#[test]
fn unknown_snapshot_and_missing_source_are_clear() {
    let tmp = tempdir();
    let (repo, _) = repo_with_snapshot(tmp.path());
    let err = fails_with(mover().arg("-r").arg(&repo).args(["ls", "deadbeef"]), 1);
    assert!(one_line(&err).contains("deadbeef"), "{err}");
    let err = fails_with(
        mover()
            .arg("-r")
            .arg(&repo)
            .arg("backup")
            .arg(tmp.path().join("no-such-dir")),
        1,
    );
    assert!(one_line(&err).contains("no-such-dir"), "{err}");
    let err = fails_with(mover().arg("-r").arg(&repo).arg("init"), 1);
    assert!(one_line(&err).contains("already"), "{err}");
}

#[test]
fn dead_s3_endpoint_fails_fast_with_one_line() {
    let started = std::time::Instant::now();
    let err = fails_with(
        mover()
            .env("AWS_ACCESS_KEY_ID", "x")
            .env("AWS_SECRET_ACCESS_KEY", "y")
            .args(["-r", "s3:http://127.0.0.1:1/bucket/prefix", "snapshots"]),
        1,
    );
    assert!(one_line(&err).contains("127.0.0.1:1"), "{err}");
    assert!(
        started.elapsed().as_secs() < 90,
        "took {:?}",
        started.elapsed()
    );
}
