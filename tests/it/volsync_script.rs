//! VolSync's own `mover-restic/entry.sh` (v0.16.0, from the Go module scripts/build-peers.sh
//! downloads; never committed) run twice for each case: with restic 0.18 as `restic` on
//! PATH, and with mover as `restic`. The script decides from restic's exit codes and error
//! phrases (`Is there a repository at the following location?`, 10, 11, 12), so each case
//! must end with the same exit code and the same kept log lines (ids, sizes and times
//! aside) for both.

use crate::controller::volsync::peers_dir;
use crate::support::s3::S3Server;
use crate::support::*;
use std::path::{Path, PathBuf};
use std::process::Command;

/// What VolSync keeps of a mover log (its `logfilter.go`), as prefixes and words.
fn kept(log: &str) -> Vec<String> {
    log.lines()
        .map(str::trim)
        .filter(|l| {
            let lower = l.to_ascii_lowercase();
            lower.starts_with("fatal")
                || lower.starts_with("error")
                || lower.starts_with("no eligible")
                || lower.contains("no data")
                || lower.contains("directory is empty")
                || lower.contains("initialize dir")
                || lower.contains("is there a repository")
                || lower.contains("no repo, ignoring unlock error")
                || lower.starts_with("restoring")
                || (lower.starts_with("snapshot") && lower.ends_with("saved"))
        })
        .map(shape)
        .collect()
}

/// A line with what differs between two correct runs (ids, numbers, paths of the run's
/// scratch directory, restic's own wording after the phrase scripts match) taken out.
fn shape(line: &str) -> String {
    let line = line
        .split(" (")
        .next()
        .unwrap_or(line)
        .split(": unable to open config file")
        .next()
        .unwrap_or(line);
    let mut out = String::new();
    for word in line.split_whitespace() {
        let w = if word.chars().all(|c| c.is_ascii_hexdigit()) && word.len() >= 8 {
            "<id>"
        } else if word.contains('/') && word.len() > 1 {
            // Each program's run has its own scratch directory.
            "<path>"
        } else if word.chars().any(|c| c.is_ascii_digit()) {
            "<n>"
        } else {
            word
        };
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(w);
    }
    out
}

fn entry_script() -> PathBuf {
    let script = peers_dir().join("volsync/entry.sh");
    assert!(
        script.exists(),
        "{} is missing: scripts/build-peers.sh copies it from VolSync's module",
        script.display()
    );
    script
}

/// A directory whose `restic` is `program`.
fn shim(dir: &Path, program: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let link = dir.join("restic");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(program, &link).unwrap();
    dir.to_path_buf()
}

fn restic_018_path() -> PathBuf {
    let out = Command::new("sh")
        .args(["-c", "command -v restic-0.18"])
        .output()
        .unwrap();
    let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        !path.is_empty(),
        "restic-0.18 is not on PATH (bash .ci/run builds it)"
    );
    PathBuf::from(path)
}

fn mover_path() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_mover"))
}

struct Case<'a> {
    ops: &'a [&'a str],
    repo: String,
    password: &'a str,
    data: &'a Path,
    env: Vec<(String, String)>,
}

/// Runs the script for `case` with `bin` as `restic`: (exit code, kept lines, whole log).
fn run_script(bin_dir: &Path, case: &Case<'_>, cache: &Path) -> (i32, Vec<String>, String) {
    let path = std::env::var("PATH").unwrap_or_default();
    let mut cmd = Command::new("bash");
    cmd.arg(entry_script())
        .args(case.ops)
        .env_clear()
        .env("PATH", format!("{}:{path}", bin_dir.display()))
        .env("HOME", cache)
        .env("PRIVILEGED_MOVER", "0")
        .env("RESTIC_CACHE_DIR", cache)
        .env("RESTIC_PASSWORD", case.password)
        .env("RESTIC_REPOSITORY", &case.repo)
        .env("DATA_DIR", case.data)
        .envs(case.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let out = cmd.output().unwrap();
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), kept(&log), log)
}

/// Runs `case` with restic 0.18 and with mover, each against its own copy of the starting
/// state (`prepare` makes it), and asserts both end the same. Returns mover's log.
fn same_with_both(tmp: &Path, name: &str, case: impl Fn(&Path) -> Case<'static>) -> (i32, String) {
    let mut results = Vec::new();
    for (who, program) in [("restic", restic_018_path()), ("mover", mover_path())] {
        let root = tmp.join(format!("{name}-{who}"));
        let bin = shim(&root.join("bin"), &program);
        let c = case(&root);
        let cache = root.join("cache");
        std::fs::create_dir_all(&cache).unwrap();
        results.push((who, run_script(&bin, &c, &cache)));
    }
    let (_, (code_r, kept_r, log_r)) = &results[0];
    let (_, (code_m, kept_m, log_m)) = &results[1];
    assert_eq!(
        code_r, code_m,
        "{name}: exit codes differ\n--- restic 0.18:\n{log_r}\n--- mover:\n{log_m}"
    );
    // The same lines, each of mover's starting with restic's words (mover may add its own
    // detail after them, such as the location of a repository a password does not open).
    let same = kept_r.len() == kept_m.len()
        && kept_r
            .iter()
            .zip(kept_m)
            .all(|(r, m)| m.starts_with(r.as_str()));
    assert!(
        same,
        "{name}: kept log lines differ: {kept_r:?} against {kept_m:?}\n--- restic 0.18:\n{log_r}\n--- mover:\n{log_m}"
    );
    (*code_m, log_m.clone())
}

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

fn data_dir(root: &Path, version: &str) -> &'static Path {
    let data = root.join("data");
    std::fs::create_dir_all(data.join("lost+found")).unwrap();
    std::fs::write(data.join("file.txt"), version).unwrap();
    std::fs::write(data.join(format!("only-in-{version}")), version).unwrap();
    Box::leak(data.into_boxed_path())
}

#[test]
fn volsyncs_entry_script_ends_the_same_with_mover_as_with_restic_018() {
    let tmp = tempdir();
    let t = tmp.path();

    // unlock + backup on a repository that does not exist yet.
    let (code, log) = same_with_both(t, "first", |root| Case {
        ops: &["unlock", "backup"],
        repo: root.join("repo").display().to_string(),
        password: PASSWORD,
        data: data_dir(root, "v1"),
        env: vec![],
    });
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("No repo, ignoring unlock error"), "{log}");

    // A second backup and a prune; then a restore of the previous snapshot with --delete.
    for (name, ops, env) in [
        ("again", vec!["backup", "prune"], vec![]),
        (
            "restore",
            vec!["restore"],
            vec![
                ("SELECT_PREVIOUS".to_string(), "1".to_string()),
                ("RESTORE_OPTIONS".to_string(), "--delete".to_string()),
            ],
        ),
    ] {
        let ops: &'static [&'static str] = Box::leak(ops.into_boxed_slice());
        let env = env.clone();
        let (code, log) = same_with_both(t, name, |root| {
            // Each program continues its own repository of the first case.
            let who = root.file_name().unwrap().to_string_lossy().to_string();
            let who = who.rsplit('-').next().unwrap().to_string();
            let repo = t.join(format!("first-{who}")).join("repo");
            let data = if name == "restore" {
                let d = root.join("data");
                std::fs::create_dir_all(&d).unwrap();
                std::fs::write(d.join("stray"), "not in any snapshot").unwrap();
                Box::leak(d.into_boxed_path())
            } else {
                data_dir(root, "v2")
            };
            Case {
                ops,
                repo: repo.display().to_string(),
                password: PASSWORD,
                data,
                env: env.clone(),
            }
        });
        assert_eq!(code, 0, "{name}: {log}");
        if name == "restore" {
            // SELECT_PREVIOUS=1 picks the first backup; --delete removes what it lacks.
            let root = t.join("restore-mover").join("data");
            assert_eq!(
                std::fs::read_to_string(root.join("file.txt")).unwrap(),
                "v1"
            );
            assert!(root.join("only-in-v1").exists());
            assert!(!root.join("stray").exists(), "--delete left a stray file");
        }
    }

    // A wrong password: the script's "incorrect password" branch (exit 12 from restic).
    let (code, log) = same_with_both(t, "password", |root| {
        let who = root.file_name().unwrap().to_string_lossy().to_string();
        let who = who.rsplit('-').next().unwrap().to_string();
        Case {
            ops: &["backup"],
            repo: t
                .join(format!("first-{who}"))
                .join("repo")
                .display()
                .to_string(),
            password: "not-the-password",
            data: data_dir(root, "v3"),
            env: vec![],
        }
    });
    assert_eq!(code, 3, "{log}");
    assert!(log.contains("incorrect password"), "{log}");
}

#[test]
fn a_missing_bucket_is_created_by_the_script_with_mover_as_with_restic_018() {
    let s3 = S3Server::start();
    let tmp = tempdir();
    let env = s3.env();
    let (code, log) = same_with_both(tmp.path(), "bucket", |root| {
        let who = root.file_name().unwrap().to_string_lossy().to_string();
        let who = who.rsplit('-').next().unwrap().to_string();
        Case {
            ops: &["backup"],
            repo: leak(format!("s3:{}/missing-{who}/volsync", s3.endpoint)).to_string(),
            password: PASSWORD,
            data: data_dir(root, "v1"),
            env: env.clone(),
        }
    });
    assert_eq!(code, 0, "{log}");
}
