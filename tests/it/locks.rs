//! Locks against live restic processes, concurrent writers, and SIGTERM: mover waits for or
//! refuses (exit 11) what a live lock forbids, never removes a live lock, runs beside other
//! backups, and stops on SIGTERM within seconds leaving no lock and a clean repository.

use crate::support::history::{HistoryShape, assert_is_version, switch_to_version};
use crate::support::*;
use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SHAPE: HistoryShape = HistoryShape {
    shared_files: 4,
    own_files: 2,
    file_bytes: 256 * 1024,
};

fn lock_count(repo: &Path) -> usize {
    std::fs::read_dir(repo.join("locks")).map_or(0, |d| d.count())
}

/// Waits until the repository holds at least `n` lock files.
fn wait_for_locks(repo: &Path, n: usize) {
    let started = Instant::now();
    while lock_count(repo) < n {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no lock appeared in {}",
            repo.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `restic backup --stdin` that holds its shared lock until `stdin` is written and closed.
fn restic_backup_waiting_on_stdin(repo: &Path) -> Child {
    restic_018()
        .arg("-r")
        .arg(repo)
        .args([
            "backup",
            "--stdin",
            "--stdin-filename",
            "from-restic.bin",
            "--host",
            "r",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start restic backup")
}

fn finish(mut child: Child, data: &[u8]) {
    {
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(data).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "restic failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn repo_with_a_snapshot(tmp: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let (repo, src) = (tmp.join("repo"), tmp.join("src"));
    ok(mover().arg("-r").arg(&repo).arg("init"));
    switch_to_version(&src, 0, SHAPE);
    ok(mover().arg("-r").arg(&repo).arg("backup").arg(&src));
    (repo, src)
}

#[test]
fn a_restic_backups_shared_lock_stops_prune_and_forget_but_not_backup() {
    let tmp = tempdir();
    let (repo, src) = repo_with_a_snapshot(tmp.path());
    let restic_backup = restic_backup_waiting_on_stdin(&repo);
    wait_for_locks(&repo, 1);
    // Exclusive operations wait out --retry-lock, then exit 11 naming the lock.
    let started = Instant::now();
    let err = fails_with(
        mover()
            .arg("-r")
            .arg(&repo)
            .args(["--retry-lock", "2s", "prune"]),
        11,
    );
    assert!(started.elapsed() >= Duration::from_secs(2), "did not wait");
    // restic's words for a shared lock: "already locked by PID" (no "exclusively").
    assert!(
        err.contains("repository is already locked by PID") && err.contains("storage ID"),
        "{err}"
    );
    fails_with(
        mover()
            .arg("-r")
            .arg(&repo)
            .args(["forget", "--keep-last", "1"]),
        11,
    );
    // Backups share the repository with it.
    switch_to_version(&src, 1, SHAPE);
    ok(mover().arg("-r").arg(&repo).arg("backup").arg(&src));
    // The live lock is still there: mover never removes it.
    assert_eq!(lock_count(&repo), 1);
    finish(restic_backup, &vec![7u8; 3 << 20]);
    assert_eq!(lock_count(&repo), 0);
    ok(mover().arg("-r").arg(&repo).arg("prune"));
    ok(restic().arg("-r").arg(&repo).args(["check", "--read-data"]));
}

#[test]
fn a_restic_exclusive_lock_stops_backup_with_exit_11() {
    let tmp = tempdir();
    let (repo, src) = repo_with_a_snapshot(tmp.path());
    // restic's `key passwd` takes its exclusive lock, then waits for the new password.
    let fifo = tmp.path().join("new-password");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
    let passwd = restic_018()
        .arg("-r")
        .arg(&repo)
        .args(["key", "passwd", "--new-password-file"])
        .arg(&fifo)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_locks(&repo, 1);
    let err = fails_with(mover().arg("-r").arg(&repo).arg("backup").arg(&src), 11);
    // restic 0.18's four lines: who holds it, since when, its storage ID, the way out.
    let lines: Vec<&str> = err.trim().lines().collect();
    assert_eq!(lines.len(), 4, "{err}");
    assert!(
        lines[0].starts_with(
            "Fatal: unable to create lock in backend: repository is already locked exclusively by PID"
        ),
        "{err}"
    );
    assert!(lines[1].starts_with("lock was created at "), "{err}");
    assert!(lines[2].starts_with("storage ID "), "{err}");
    assert_eq!(
        lines[3],
        "the `unlock` command can be used to remove stale locks"
    );
    let target = tmp.path().join("t");
    fails_with(
        mover()
            .arg("-r")
            .arg(&repo)
            .args(["restore", "latest", "--target"])
            .arg(&target),
        11,
    );
    // Once restic is done, mover goes on.
    std::fs::write(&fifo, format!("{PASSWORD}\n")).unwrap();
    let out = passwd.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    ok(mover().arg("-r").arg(&repo).arg("backup").arg(&src));
}

#[test]
fn prune_waits_for_a_restic_backup_and_keeps_what_it_wrote() {
    let tmp = tempdir();
    let (repo, _src) = repo_with_a_snapshot(tmp.path());
    ok(mover()
        .arg("-r")
        .arg(&repo)
        .args(["forget", "--keep-last", "1"]));
    let restic_backup = restic_backup_waiting_on_stdin(&repo);
    wait_for_locks(&repo, 1);
    let prune = mover()
        .arg("-r")
        .arg(&repo)
        .args(["--retry-lock", "2m", "prune"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let data: Vec<u8> = (0..(6u32 << 20))
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    finish(restic_backup, &data);
    let out = prune.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "prune: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("waiting up to"),
        "prune did not wait: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    ok(restic().arg("-r").arg(&repo).args(["check", "--read-data"]));
    let dumped = run(restic_018().arg("-r").arg(&repo).args([
        "dump",
        "latest",
        "/from-restic.bin",
        "--host",
        "r",
    ]));
    assert!(dumped.status.success());
    assert!(
        dumped.stdout == data,
        "restic's snapshot lost data to prune"
    );
}

#[test]
fn two_mover_backups_and_a_restic_backup_at_once_then_prune() {
    let tmp = tempdir();
    let repo = tmp.path().join("repo");
    ok(mover().arg("-r").arg(&repo).arg("init"));
    let srcs: Vec<_> = (0..3).map(|i| tmp.path().join(format!("src{i}"))).collect();
    for (i, s) in srcs.iter().enumerate() {
        switch_to_version(s, 10 + i as u64, SHAPE);
    }
    let spawn = |cmd: &mut Command| {
        cmd.stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let children = vec![
        spawn(
            mover()
                .arg("-r")
                .arg(&repo)
                .args(["backup", "--host", "m1"])
                .arg(&srcs[0]),
        ),
        spawn(
            mover()
                .arg("-r")
                .arg(&repo)
                .args(["backup", "--host", "m2"])
                .arg(&srcs[1]),
        ),
        spawn(
            restic()
                .arg("-r")
                .arg(&repo)
                .args(["backup", "--host", "r"])
                .arg(&srcs[2]),
        ),
    ];
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    ok(mover().arg("-r").arg(&repo).arg("prune"));
    ok(restic().arg("-r").arg(&repo).args(["check", "--read-data"]));
    for (i, (host, s)) in ["m1", "m2", "r"].iter().zip(&srcs).enumerate() {
        let target = tmp.path().join(format!("t{i}"));
        ok(restic()
            .arg("-r")
            .arg(&repo)
            .args(["restore", "latest", "--host", host, "--target"])
            .arg(&target));
        assert_is_version(&restored_path(&target, s), 10 + i as u64, SHAPE, tmp.path());
    }
}

/// Sends SIGTERM to `child` after `delay` and checks it stops with 130 within 10 s.
fn terminate(mut child: Child, delay: Duration, what: &str) -> String {
    std::thread::sleep(delay);
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let sent = Instant::now();
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            sent.elapsed() < Duration::from_secs(10),
            "{what} ignored SIGTERM for 10 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        std::io::Read::read_to_string(&mut e, &mut stderr).unwrap();
    }
    assert!(
        status.code() == Some(130) || status.success(),
        "{what} after SIGTERM: {status:?}\n{stderr}"
    );
    stderr
}

#[test]
fn sigterm_stops_backup_restore_and_prune_and_removes_the_lock() {
    let tmp = tempdir();
    let repo = tmp.path().join("repo");
    let src = tmp.path().join("big");
    ok(mover().arg("-r").arg(&repo).arg("init"));
    let big = HistoryShape {
        shared_files: 40,
        own_files: 10,
        file_bytes: 1 << 20,
    };
    switch_to_version(&src, 0, big);
    ok(mover().arg("-r").arg(&repo).arg("backup").arg(&src));
    switch_to_version(&src, 1, big);
    let mut stopped = 0;
    for (what, args) in [
        ("backup", vec!["--compression", "max", "backup"]),
        ("restore", vec!["restore", "latest", "--target"]),
        ("prune", vec!["prune"]),
    ] {
        let mut cmd = mover();
        cmd.arg("-r").arg(&repo).args(&args);
        match what {
            "backup" => {
                cmd.arg(&src);
            }
            "restore" => {
                cmd.arg(tmp.path().join("restore"));
            }
            _ => {
                ok(mover()
                    .arg("-r")
                    .arg(&repo)
                    .args(["forget", "--keep-last", "1"]));
            }
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        wait_for_locks(&repo, 1);
        let stderr = terminate(child, Duration::from_millis(150), what);
        if stderr.contains("SIGTERM") {
            stopped += 1;
            assert!(
                stderr.contains("Fatal: interrupted by SIGTERM"),
                "{what}: {stderr}"
            );
        }
        assert_eq!(lock_count(&repo), 0, "{what} left its lock");
        // restic needs no unlock and finds the repository intact.
        ok(restic().arg("-r").arg(&repo).args(["check", "--read-data"]));
    }
    assert!(
        stopped >= 2,
        "SIGTERM arrived after most operations had finished"
    );
    // The next runs work without manual steps.
    ok(mover().arg("-r").arg(&repo).arg("backup").arg(&src));
    ok(mover().arg("-r").arg(&repo).arg("prune"));
    ok(restic().arg("-r").arg(&repo).args(["check", "--read-data"]));
}

#[test]
fn sighup_from_restics_lock_probe_does_not_stop_a_backup() {
    let tmp = tempdir();
    let (repo, src) = repo_with_a_snapshot(tmp.path());
    let big = HistoryShape {
        shared_files: 30,
        own_files: 10,
        file_bytes: 1 << 20,
    };
    switch_to_version(&src, 3, big);
    let mut child = mover()
        .arg("-r")
        .arg(&repo)
        .args(["--compression", "max", "backup"])
        .arg(&src)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_locks(&repo, 1);
    // What `restic unlock` and `restic check` do to a lock holder on their host.
    ok(restic().arg("-r").arg(&repo).arg("unlock"));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the backup ended before the probe"
    );
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "backup stopped by SIGHUP: {status:?}");
    assert_eq!(lock_count(&repo), 0);
    ok(restic().arg("-r").arg(&repo).args(["check"]));
}
