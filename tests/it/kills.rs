//! SIGKILL at random moments of backup, forget and prune, on a repository restic wrote and
//! on one mover wrote. After each kill the next mover backup runs without manual steps,
//! `restic check --read-data` passes after `restic unlock`, and every snapshot still there
//! restores byte for byte; the only snapshots allowed to be gone are those the killed
//! forget or prune was asked to remove.

use crate::support::history::{
    HistoryShape, assert_is_version, switch_to_version, version_of_snapshot,
};
use crate::support::tree_gen::SplitMix64;
use crate::support::*;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const SHAPE: HistoryShape = HistoryShape {
    shared_files: 8,
    own_files: 4,
    file_bytes: 512 * 1024,
};
const KILLS: u64 = 20;

fn snapshots(repo: &Path) -> BTreeSet<String> {
    // --no-lock: a killed forget or prune leaves an exclusive lock restic would wait on.
    let out = ok(restic()
        .arg("-r")
        .arg(repo)
        .args(["--no-lock", "snapshots", "--json"]));
    let v: serde_json::Value = serde_json::from_str(&out).expect("snapshots json");
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect()
}

/// What `forget --keep-last 2` would remove now.
fn doomed_by_forget(repo: &Path) -> BTreeSet<String> {
    let out =
        ok(mover()
            .arg("-r")
            .arg(repo)
            .args(["forget", "--keep-last", "2", "--dry-run", "--json"]));
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["remove"].as_array().cloned().unwrap_or_default())
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect()
}

struct Subject {
    name: &'static str,
    repo: std::path::PathBuf,
    src: std::path::PathBuf,
    /// The version each snapshot holds.
    versions: BTreeMap<String, u64>,
    next_version: u64,
}

impl Subject {
    fn new(tmp: &Path, name: &'static str, writer: fn() -> Command) -> Subject {
        let repo = tmp.join(format!("repo-{name}"));
        let src = tmp.join(format!("src-{name}"));
        ok(writer().arg("-r").arg(&repo).arg("init"));
        let mut s = Subject {
            name,
            repo,
            src,
            versions: BTreeMap::new(),
            next_version: 0,
        };
        for _ in 0..3 {
            s.back_up(writer);
        }
        s
    }

    fn back_up(&mut self, tool: fn() -> Command) {
        let n = self.next_version;
        self.next_version += 1;
        switch_to_version(&self.src, n, SHAPE);
        let before = snapshots(&self.repo);
        ok(tool()
            .arg("-r")
            .arg(&self.repo)
            .args(["backup", "--host", "h"])
            .arg(&self.src));
        for id in snapshots(&self.repo).difference(&before) {
            self.versions.insert(id.clone(), n);
        }
    }
}

#[test]
fn twenty_sigkills_at_random_moments_leave_repositories_restic_accepts() {
    let tmp = tempdir();
    let mut subjects = [
        Subject::new(tmp.path(), "restic", restic),
        Subject::new(tmp.path(), "mover", mover),
    ];
    let mut rng = SplitMix64(0x6b696c6c);
    for round in 0..KILLS {
        let s = &mut subjects[(round % 2) as usize];
        let op = ["backup", "forget", "prune"][(round / 2 % 3) as usize];
        let before = snapshots(&s.repo);
        let may_vanish = match op {
            "forget" => doomed_by_forget(&s.repo),
            _ => BTreeSet::new(),
        };
        let mut cmd = mover();
        cmd.arg("-r").arg(&s.repo).args(["--pack-size", "4"]);
        let mut new_version = None;
        match op {
            "backup" => {
                let n = s.next_version;
                s.next_version += 1;
                switch_to_version(&s.src, n, SHAPE);
                new_version = Some(n);
                cmd.args(["backup", "--host", "h"]).arg(&s.src);
            }
            "forget" => {
                cmd.args(["forget", "--keep-last", "2"]);
            }
            _ => {
                cmd.arg("prune");
            }
        }
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let delay = Duration::from_millis(rng.below(400));
        std::thread::sleep(delay);
        child.kill().unwrap();
        let status = child.wait().unwrap();
        eprintln!(
            "round {round}: {op} on {}'s repository killed after {delay:?} ({})",
            s.name,
            if status.success() {
                "it had finished"
            } else {
                "mid-run"
            }
        );

        let after = snapshots(&s.repo);
        let lost: Vec<_> = before
            .difference(&after)
            .filter(|id| !may_vanish.contains(*id))
            .collect();
        assert!(lost.is_empty(), "round {round}: snapshots lost: {lost:?}");
        if let Some(n) = new_version {
            for id in after.difference(&before) {
                s.versions.insert(id.clone(), n);
            }
        }
        s.versions.retain(|id, _| after.contains(id));

        // The next mover backup needs no manual step.
        s.back_up(mover);
        ok(restic().arg("-r").arg(&s.repo).arg("unlock"));
        ok(restic()
            .arg("-r")
            .arg(&s.repo)
            .args(["check", "--read-data"]));
        for (id, n) in &s.versions {
            let target = tmp.path().join("restore");
            let _ = std::fs::remove_dir_all(&target);
            ok(mover()
                .arg("-r")
                .arg(&s.repo)
                .args(["restore", id, "--target"])
                .arg(&target));
            let restored = restored_path(&target, &s.src);
            assert_eq!(version_of_snapshot(&restored), *n, "snapshot {id}");
            assert_is_version(&restored, *n, SHAPE, tmp.path());
        }
        // Keep the histories short: older snapshots go from time to time.
        if s.versions.len() > 5 {
            ok(mover()
                .arg("-r")
                .arg(&s.repo)
                .args(["forget", "--keep-last", "3", "--prune"]));
            let left = snapshots(&s.repo);
            s.versions.retain(|id, _| left.contains(id));
        }
    }
    for s in &subjects {
        ok(mover()
            .arg("-r")
            .arg(&s.repo)
            .args(["check", "--read-data"]));
        ok(restic_018()
            .arg("-r")
            .arg(&s.repo)
            .args(["check", "--read-data"]));
    }
}
