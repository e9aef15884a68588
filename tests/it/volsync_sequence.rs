//! The commands VolSync's restic mover runs, with mover in place of restic, in a shell as
//! its script runs them: `unlock; backup; forget --keep-last 1; prune` for a few syncs, then
//! `restore --delete --include-xattr "user.*"` into a volume that already holds other data.
//! restic then checks and restores what mover left.

use crate::support::compare::{CompareOptions, compare_trees};
use crate::support::*;
use std::path::Path;
use std::process::Command;

fn sh(script: &str, mover_bin: &Path, repo: &Path) -> String {
    ok(Command::new("sh")
        .arg("-ec")
        .arg(script)
        .env("RESTIC", mover_bin)
        .env("RESTIC_REPOSITORY", repo)
        .env("RESTIC_PASSWORD", PASSWORD)
        .env_remove("RESTIC_HOST"))
}

#[test]
fn volsyncs_restic_steps_run_with_mover_as_restic() {
    let tmp = tempdir();
    let data = tmp.path().join("data");
    let repo = tmp.path().join("repo");
    let bin = Path::new(env!("CARGO_BIN_EXE_mover"));
    std::fs::create_dir_all(data.join("lost+found")).unwrap();
    std::fs::create_dir_all(data.join("app/logs")).unwrap();
    let xattrs = xattr::set(data.join("app"), "user.volsync", b"1").is_ok();
    let sync = format!(
        r#"cd {data}
"$RESTIC" unlock || true
"$RESTIC" cat config >/dev/null 2>&1 || rc=$?
if [ "${{rc:-0}}" = 10 ]; then "$RESTIC" init; fi
"$RESTIC" backup --host volsync --exclude=lost+found .
"$RESTIC" forget --host volsync --keep-last 1
"$RESTIC" prune
"#,
        data = data.display()
    );
    for round in 0..3u8 {
        std::fs::write(
            data.join("app/db"),
            vec![round; 200_000 + usize::from(round)],
        )
        .unwrap();
        std::fs::write(
            data.join(format!("app/logs/{round}.log")),
            format!("round {round}\n"),
        )
        .unwrap();
        let out = sh(&sync, bin, &repo);
        assert!(out.contains("snapshot ") && out.contains(" saved"), "{out}");
    }
    let snaps = ok(restic().arg("-r").arg(&repo).args(["snapshots", "--json"]));
    let snaps: serde_json::Value = serde_json::from_str(&snaps).unwrap();
    let snaps = snaps.as_array().unwrap();
    assert_eq!(snaps.len(), 1, "forget --keep-last 1 keeps one");
    assert_eq!(snaps[0]["hostname"], "volsync");
    assert_eq!(snaps[0]["paths"][0], data.to_str().unwrap());
    let id = snaps[0]["id"].as_str().unwrap().to_string();
    ok(restic().arg("-r").arg(&repo).args(["check", "--read-data"]));

    // The destination volume already holds data: some stale, some to be kept.
    let dest = tmp.path().join("dest");
    std::fs::create_dir_all(dest.join("app/logs")).unwrap();
    std::fs::create_dir_all(dest.join("lost+found")).unwrap();
    std::fs::write(dest.join("app/db"), vec![9u8; 10]).unwrap();
    std::fs::write(dest.join("app/logs/old.log"), "stale").unwrap();
    std::fs::write(dest.join("stray"), "stray").unwrap();
    let restore = format!(
        r#"cd {dest}
"$RESTIC" restore {id} -t . --host volsync --include-xattr "user.*" --delete
sync -f {dest}
"#,
        dest = dest.display()
    );
    sh(&restore, bin, &repo);
    assert!(!dest.join("stray").exists() && !dest.join("app/logs/old.log").exists());
    let opts = CompareOptions {
        owner: is_root(),
        xattrs,
        root_metadata: false,
        ..CompareOptions::default()
    };
    // lost+found was excluded from the backup, so --delete removes it, as restic does.
    std::fs::remove_dir(data.join("lost+found")).unwrap();
    compare_trees(&data, &dest, &opts).unwrap_or_else(|e| panic!("restore differs:\n{e}"));

    // restic restores the same snapshot identically.
    let by_restic = tmp.path().join("by-restic");
    ok(restic()
        .arg("-r")
        .arg(&repo)
        .args(["restore", &id, "--target"])
        .arg(&by_restic));
    compare_trees(&data, &by_restic, &opts)
        .unwrap_or_else(|e| panic!("restic's restore differs:\n{e}"));
}
