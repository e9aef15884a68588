//! `mover volsync`, VolSync's restic mover entry point, run as VolSync runs its
//! `/mover-restic/entry.sh`: with its arguments and environment, judged by the log lines
//! VolSync's controller keeps and by the real restic (0.14 and 0.18, what VolSync ships)
//! reading what it wrote and writing what it restores.

use crate::support::compare::{CompareOptions, compare_trees};
use crate::support::history::{HistoryShape, assert_is_version, switch_to_version};
use crate::support::s3::S3Server;
use crate::support::tree_gen::{GenOptions, generate_tree_with_summary};
use crate::support::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// The patterns VolSync's controller keeps from a mover's log (its `logfilter.go`).
const VOLSYNC_LOG_FILTER: &[&str] = &[
    r"^\s*[pP]rocessed\s.+[fF]iles",
    r"^\s*[sS]napshot\s.+[sS]aved",
    r"^\s*No eligible",
    r"No data",
    r"Directory is empty",
    r"^\s*[cC]reated",
    r"^\s*[rR]epository\s.+[oO]pened",
    r"^\s*[rR]estoring",
    r"^\s*[nN]o parent snapshot",
    r"^\s*[uU]sing parent snapshot",
    r"^\s*[aA]dded to the repository",
    r"^\s*[sS]uccessfully",
    r"RESTORE_OPTIONS",
    r"[iI]nitialize [dD]ir",
    r"^\s*[fF]atal",
    r"^\s*ERROR",
    r"^\s*[rR]estic completed in",
];

/// The mover binary with the environment VolSync gives its restic mover Job.
fn volsync(repo: &str, data: &Path, cache: &Path) -> Command {
    let mut c = mover();
    for var in [
        "FORGET_OPTIONS",
        "RESTORE_AS_OF",
        "SELECT_PREVIOUS",
        "RESTORE_OPTIONS",
        "CUSTOM_CA",
        "DEBUG_MOVER",
        "RESTIC_CACERT",
    ] {
        c.env_remove(var);
    }
    c.arg("volsync")
        .env("PRIVILEGED_MOVER", "0")
        .env("RESTIC_CACHE_DIR", cache)
        .env("RESTIC_REPOSITORY", repo)
        .env("DATA_DIR", data);
    c
}

/// stdout and stderr, as the pod log has them (line order within each stream kept).
fn log_of(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .chain(String::from_utf8_lossy(&out.stderr).lines())
        .map(str::to_string)
        .collect()
}

fn run_volsync(cmd: &mut Command, code: i32) -> Vec<String> {
    let out = run(cmd);
    let log = log_of(&out);
    assert_eq!(
        out.status.code(),
        Some(code),
        "expected exit code {code} from {cmd:?}; log:\n{}",
        log.join("\n")
    );
    log
}

/// The lines VolSync would keep, in the status it writes.
fn kept(log: &[String]) -> Vec<String> {
    log.iter()
        .filter(|l| VOLSYNC_LOG_FILTER.iter().any(|p| matches(p, l)))
        .cloned()
        .collect()
}

fn keeps(kept: &[String], pattern: &str) -> bool {
    kept.iter().any(|l| matches(pattern, l))
}

fn assert_keeps(kept: &[String], patterns: &[&str]) {
    for p in patterns {
        assert!(
            keeps(kept, p),
            "no kept log line matches {p:?}; kept:\n{}",
            kept.join("\n")
        );
    }
}

/// The id in the kept `snapshot 1a2b3c4d saved` line (the only place VolSync shows it).
fn saved_id(kept: &[String]) -> String {
    kept.iter()
        .find_map(|l| {
            l.trim()
                .strip_prefix("snapshot ")
                .and_then(|r| r.strip_suffix(" saved"))
        })
        .unwrap_or_else(|| panic!("no `snapshot ... saved` line in:\n{}", kept.join("\n")))
        .to_string()
}

/// A matcher for the regular expressions of [`VOLSYNC_LOG_FILTER`]: `^`, `\s`, `.`, `[..]`
/// classes of single characters, `*` and `+`, and literal characters.
fn matches(pattern: &str, line: &str) -> bool {
    #[derive(Clone, Debug)]
    enum Atom {
        Char(char),
        Set(Vec<char>),
        Space,
        Any,
    }
    let mut chars = pattern.chars().peekable();
    let anchored = chars.next_if_eq(&'^').is_some();
    let mut atoms: Vec<(Atom, char)> = Vec::new();
    while let Some(c) = chars.next() {
        let atom = match c {
            '\\' => match chars.next() {
                Some('s') => Atom::Space,
                Some(other) => Atom::Char(other),
                None => panic!("bad pattern {pattern}"),
            },
            '.' => Atom::Any,
            '[' => Atom::Set(chars.by_ref().take_while(|c| *c != ']').collect()),
            c => Atom::Char(c),
        };
        let quant = chars.next_if(|c| *c == '*' || *c == '+').unwrap_or('1');
        atoms.push((atom, quant));
    }
    fn one(atom: &Atom, c: char) -> bool {
        match atom {
            Atom::Char(a) => *a == c,
            Atom::Set(s) => s.contains(&c),
            Atom::Space => c.is_whitespace(),
            Atom::Any => true,
        }
    }
    fn here(atoms: &[(Atom, char)], text: &[char]) -> bool {
        let Some(((atom, quant), rest)) = atoms.split_first() else {
            return true;
        };
        match quant {
            '1' => !text.is_empty() && one(atom, text[0]) && here(rest, &text[1..]),
            q => {
                let min = usize::from(*q == '+');
                let max = text.iter().take_while(|c| one(atom, **c)).count();
                (min..=max).rev().any(|n| here(rest, &text[n..]))
            }
        }
    }
    let text: Vec<char> = line.chars().collect();
    if anchored {
        here(&atoms, &text)
    } else {
        (0..=text.len()).any(|i| here(&atoms, &text[i..]))
    }
}

#[test]
fn the_log_matcher_reads_volsyncs_patterns() {
    assert!(matches(
        r"^\s*[sS]napshot\s.+[sS]aved",
        "snapshot 1a2b3c4d saved"
    ));
    assert!(!matches(
        r"^\s*[sS]napshot\s.+[sS]aved",
        "a snapshot x saved"
    ));
    assert!(matches(r"[iI]nitialize [dD]ir", "=== Initialize Dir ==="));
    assert!(matches(
        r"^\s*[rR]epository\s.+[oO]pened",
        "repository 1a2b3c4d opened (version 2, compression level auto)"
    ));
    assert!(!matches(r"^\s*[pP]rocessed\s.+[fF]iles", "processed files"));
}

fn snapshots_json(cmd: Command, repo: &str) -> Vec<serde_json::Value> {
    let mut cmd = cmd;
    let out = ok(cmd.args(["-r", repo, "snapshots", "--json"]));
    serde_json::from_str::<serde_json::Value>(&out)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn volsync_backups_with_mover_are_restics_snapshots() {
    let tmp = tempdir();
    // Snapshots are selected by a path holding `/data`, as VolSync's volumes are mounted.
    let data = tmp.path().join("data");
    let cache = tmp.path().join("cache");
    let repo_dir = tmp.path().join("repo");
    let repo = repo_dir.to_str().unwrap();
    let summary = generate_tree_with_summary(
        &data,
        &GenOptions {
            seed: 77,
            ..Default::default()
        },
    )
    .unwrap();
    std::fs::create_dir_all(data.join("lost+found")).unwrap();
    std::fs::write(data.join("lost+found/#1234"), "orphan").unwrap();

    // First sync: no repository yet, so the probe creates it.
    let log = run_volsync(
        volsync(repo, &data, &cache)
            .env("FORGET_OPTIONS", "--keep-last 1")
            .args(["unlock", "backup", "prune"]),
        0,
    );
    let first = kept(&log);
    assert_keeps(
        &first,
        &[
            r"[iI]nitialize [dD]ir",
            r"^\s*[cC]reated",
            r"^\s*[rR]epository\s.+[oO]pened",
            r"^\s*[nN]o parent snapshot",
            r"^\s*[aA]dded to the repository",
            r"^\s*[pP]rocessed\s.+[fF]iles",
            r"^\s*[sS]napshot\s.+[sS]aved",
            r"^\s*[rR]estic completed in",
        ],
    );
    assert!(log.iter().any(|l| l == "=== Done ==="), "{log:?}");
    assert!(
        !keeps(&first, r"^\s*ERROR") && !keeps(&first, r"^\s*[fF]atal"),
        "{first:?}"
    );
    let first_id = saved_id(&first);

    // Second sync, through the image's entry script, after the volume changed.
    std::fs::write(data.join("changed.txt"), "a new file\n").unwrap();
    std::fs::write(data.join("large.bin"), vec![7u8; 300_000]).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/image/mover-restic/entry.sh");
    let mut second = volsync(repo, &data, &cache);
    second
        .env("FORGET_OPTIONS", "--keep-last 1")
        .env("MOVER", env!("CARGO_BIN_EXE_mover"));
    let second = Command::new("sh")
        .arg(&script)
        .args(["unlock", "backup", "prune"])
        .envs(second.get_envs().filter_map(|(k, v)| v.map(|v| (k, v))))
        .env("RESTIC_PASSWORD", PASSWORD)
        .output()
        .unwrap();
    let log = log_of(&second);
    assert_eq!(second.status.code(), Some(0), "{}", log.join("\n"));
    let second = kept(&log);
    assert!(
        keeps(
            &second,
            &format!(r"^\s*[uU]sing parent snapshot {first_id}")
        ),
        "{second:?}"
    );
    assert!(!keeps(&second, r"[iI]nitialize [dD]ir"), "{second:?}");
    assert!(
        log.iter().any(|l| l.contains("successfully removed")),
        "{log:?}"
    );
    let id = saved_id(&second);

    // FORGET_OPTIONS kept the newest snapshot only; host and path are VolSync's.
    for (name, restic) in [
        ("restic", restic as fn() -> Command),
        ("restic-0.18", restic_018),
    ] {
        let snaps = snapshots_json(restic(), repo);
        assert_eq!(snaps.len(), 1, "{name}: {snaps:?}");
        assert_eq!(snaps[0]["hostname"], "volsync", "{name}");
        assert_eq!(
            snaps[0]["paths"],
            serde_json::json!([std::fs::canonicalize(&data).unwrap()]),
            "{name}"
        );
        assert_eq!(snaps[0]["short_id"], id.as_str(), "{name}");
        ok(restic().args(["-r", repo, "check", "--read-data"]));
    }

    // lost+found was left out, as the script's --exclude does.
    std::fs::remove_dir_all(data.join("lost+found")).unwrap();
    for (name, restic, lossy) in [
        ("restic", restic as fn() -> Command, true),
        ("restic-0.18", restic_018, false),
    ] {
        let target = tmp.path().join(format!("by-{name}"));
        ok(restic()
            .args(["-r", repo, "restore", "latest", "--target"])
            .arg(&target));
        let opts = CompareOptions {
            owner: is_root(),
            xattrs: summary.xattrs,
            skip_sockets: true,
            lossy_symlink_targets: lossy,
            root_metadata: false,
            ..CompareOptions::default()
        };
        compare_trees(&data, &target, &opts)
            .unwrap_or_else(|e| panic!("{name} restores a different tree:\n{e}"));
    }
}

/// Three snapshots of one volume, taken by restic 0.18 as VolSync's own mover takes them
/// (`cd /data && restic backup --host volsync .`), at least a second apart.
fn restic_018_history(tmp: &Path, repo: &str, shape: HistoryShape) -> Vec<String> {
    let data = tmp.join("source/data");
    ok(restic_018().args(["-r", repo, "init"]));
    for n in 1..=3u64 {
        switch_to_version(&data, n, shape);
        if n == 3 {
            let _ = xattr::set(data.join("version.txt"), "user.volsync", b"three");
        }
        ok(restic_018()
            .current_dir(&data)
            .args(["-r", repo, "backup", "--host", "volsync", "."]));
        if n < 3 {
            std::thread::sleep(Duration::from_millis(1100));
        }
    }
    let snaps = snapshots_json(restic_018(), repo);
    assert_eq!(snaps.len(), 3);
    snaps
        .iter()
        .map(|s| s["time"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn volsync_restores_of_restic_018_snapshots_select_as_volsync_does() {
    let tmp = tempdir();
    let cache = tmp.path().join("cache");
    let repo_dir = tmp.path().join("repo");
    let repo = repo_dir.to_str().unwrap();
    let shape = HistoryShape {
        shared_files: 4,
        own_files: 2,
        file_bytes: 64 * 1024,
    };
    let times = restic_018_history(tmp.path(), repo, shape);
    let scratch = tmp.path().join("scratch");
    let mut n = 0;
    let mut restore = |env: &[(&str, &str)]| -> (PathBuf, Vec<String>) {
        n += 1;
        let dest = tmp.path().join(format!("dest-{n}"));
        std::fs::create_dir_all(dest.join("lost+found")).unwrap();
        let log = run_volsync(
            volsync(repo, &dest, &cache)
                .envs(env.iter().copied())
                .arg("restore"),
            0,
        );
        (dest, kept(&log))
    };
    let version = |dest: &Path| crate::support::history::version_of_snapshot(dest);

    let (dest, log) = restore(&[]);
    assert_eq!(version(&dest), 3);
    assert_keeps(
        &log,
        &[
            r"^\s*[rR]epository\s.+[oO]pened",
            r"^\s*[rR]estoring",
            r"^\s*[rR]estic completed in",
        ],
    );
    let (dest, _) = restore(&[("SELECT_PREVIOUS", "1")]);
    assert_eq!(version(&dest), 2);
    let (dest, _) = restore(&[("RESTORE_AS_OF", &times[1])]);
    assert_eq!(version(&dest), 2);
    let (dest, _) = restore(&[("RESTORE_AS_OF", &times[1]), ("SELECT_PREVIOUS", "1")]);
    assert_eq!(version(&dest), 1);
    let (dest, _) = restore(&[("RESTORE_AS_OF", &times[2]), ("SELECT_PREVIOUS", "2")]);
    assert_eq!(version(&dest), 1);
    let (dest, log) = restore(&[("RESTORE_AS_OF", "2001-01-01T00:00:00Z")]);
    assert_keeps(&log, &[r"^\s*No eligible", r"No data"]);
    assert!(!dest.join("version.txt").exists());
    let (dest, log) = restore(&[("SELECT_PREVIOUS", "3")]);
    assert_keeps(&log, &[r"^\s*No eligible"]);
    assert!(!dest.join("version.txt").exists());

    // Onto a volume holding version 1 and a stray file: without RESTORE_OPTIONS both stay,
    // with `--delete` the volume becomes version 3 exactly.
    let (dest, _) = restore(&[("SELECT_PREVIOUS", "2")]);
    std::fs::write(dest.join("stray"), "not in any snapshot").unwrap();
    let log = run_volsync(volsync(repo, &dest, &cache).arg("restore"), 0);
    assert_eq!(version(&dest), 3);
    assert!(
        dest.join("stray").exists() && dest.join("v1").exists(),
        "{log:?}"
    );
    let log = run_volsync(
        volsync(repo, &dest, &cache)
            .env("RESTORE_OPTIONS", "--delete")
            .arg("restore"),
        0,
    );
    assert_keeps(&kept(&log), &["RESTORE_OPTIONS"]);
    assert!(!dest.join("stray").exists() && !dest.join("v1").exists());
    // The snapshot has no lost+found, so --delete removes it, as restic's does.
    assert_is_version(&dest, 3, shape, &scratch);

    // user.* extended attributes come back (where the file system keeps them).
    let source = tmp.path().join("source/data/version.txt");
    if xattr::get(&source, "user.volsync").ok().flatten().is_some() {
        assert_eq!(
            xattr::get(dest.join("version.txt"), "user.volsync").unwrap(),
            Some(b"three".to_vec())
        );
    }
}

#[test]
fn volsync_exit_codes_and_messages_are_the_scripts() {
    let tmp = tempdir();
    let cache = tmp.path().join("cache");
    let repo_dir = tmp.path().join("repo");
    let repo = repo_dir.to_str().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir_all(data.join("lost+found")).unwrap();

    // A volume with nothing but lost+found: no repository, no snapshot, success.
    let log = run_volsync(volsync(repo, &data, &cache).args(["backup", "prune"]), 0);
    assert_keeps(&kept(&log), &["Directory is empty"]);
    assert!(
        !repo_dir.exists(),
        "no repository is made for an empty volume"
    );

    // Missing mandatory variables: 1, naming the variable.
    for var in [
        "RESTIC_PASSWORD",
        "DATA_DIR",
        "PRIVILEGED_MOVER",
        "RESTIC_CACHE_DIR",
    ] {
        let log = run_volsync(
            volsync(repo, &data, &cache).env_remove(var).arg("backup"),
            1,
        );
        assert!(
            kept(&log).contains(&format!("ERROR: {var} must be defined")),
            "{log:?}"
        );
    }

    // An unknown operation: 2.
    let log = run_volsync(volsync(repo, &data, &cache).arg("snapshot"), 2);
    assert!(
        kept(&log).contains(&"ERROR: unknown operation: snapshot".to_string()),
        "{log:?}"
    );

    // A restore from a repository that does not exist restores nothing and succeeds.
    let dest = tmp.path().join("dest");
    std::fs::create_dir_all(&dest).unwrap();
    let log = run_volsync(volsync(repo, &dest, &cache).arg("restore"), 0);
    assert_keeps(&kept(&log), &[r"^\s*No eligible"]);

    std::fs::write(data.join("file"), "content").unwrap();
    run_volsync(volsync(repo, &data, &cache).arg("backup"), 0);

    // A wrong password: 3, with one line saying so.
    let log = run_volsync(
        volsync(repo, &data, &cache)
            .env("RESTIC_PASSWORD", "not the password")
            .arg("backup"),
        3,
    );
    let errors = kept(&log)
        .into_iter()
        .filter(|l| matches(r"^\s*ERROR", l) || matches(r"^\s*[fF]atal", l))
        .collect::<Vec<_>>();
    assert_eq!(errors.len(), 1, "{log:?}");
    assert!(errors[0].contains("incorrect password"), "{errors:?}");
    let log = run_volsync(
        volsync(repo, &dest, &cache)
            .env("RESTIC_PASSWORD", "not the password")
            .arg("restore"),
        3,
    );
    assert!(
        log.iter()
            .any(|l| l.starts_with("ERROR: ") && l.contains("incorrect password")),
        "{log:?}"
    );

    let log = run_volsync(
        volsync(repo, &data, &cache)
            .env("RESTIC_PASSWORD", "not the password")
            .arg("unlock"),
        3,
    );
    assert!(
        log.iter()
            .any(|l| l.starts_with("ERROR: failure unlocking repository")),
        "{log:?}"
    );

    // A live exclusive lock (a prune elsewhere): 3, "failure locking repository".
    write_foreign_lock(&repo_dir, std::process::id(), &mover::host::hostname(), 0);
    let log = run_volsync(volsync(repo, &data, &cache).arg("backup"), 3);
    assert!(
        log.iter()
            .any(|l| l.starts_with("ERROR: failure locking repository")),
        "{log:?}"
    );

    // Bad FORGET_OPTIONS stop the run before anything is written.
    let log = run_volsync(
        volsync(repo, &data, &cache)
            .env("FORGET_OPTIONS", "--keep-lots 3")
            .arg("backup"),
        1,
    );
    assert!(
        log.iter()
            .any(|l| l.starts_with("Fatal: ") && l.contains("FORGET_OPTIONS")),
        "{log:?}"
    );
}

#[test]
fn volsync_debug_mover_waits_for_its_file() {
    let tmp = tempdir();
    let end = Path::new("/tmp/exit-debug-if-removed");
    let _ = std::fs::remove_file(end);
    let mut child = volsync("unused", tmp.path(), tmp.path())
        .env("DEBUG_MOVER", "1")
        .arg("backup")
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !end.exists() {
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            end.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        child.try_wait().unwrap().is_none(),
        "exited while the file exists"
    );
    std::fs::remove_file(end).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "still waiting after the file went"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "{status}");
}

#[test]
fn volsync_backup_to_a_missing_s3_bucket_creates_it() {
    let server = S3Server::shared();
    let tmp = tempdir();
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("file"), "on a fresh store").unwrap();
    // Not made beforehand: the probe finds no repository, and init makes the bucket.
    let bucket = format!("volsync-missing-{}", std::process::id());
    let url = server.repo_url(&bucket, "ns/app");
    let log = run_volsync(
        volsync(&url, &data, tmp.path())
            .envs(server.env())
            .args(["backup"]),
        0,
    );
    let kept = kept(&log);
    assert_keeps(
        &kept,
        &[r"[iI]nitialize [dD]ir", r"^\s*[sS]napshot\s.+[sS]aved"],
    );
    let mut restic = restic_018();
    restic.envs(server.env());
    let snaps = snapshots_json(restic, &url);
    assert_eq!(snaps.len(), 1);
    assert_eq!(snaps[0]["short_id"], saved_id(&kept).as_str());
}

#[test]
fn mover_init_creates_a_missing_bucket_in_its_region_and_names_it_when_it_cannot() {
    let server = S3Server::shared();
    let bucket = format!("init-missing-eu-{}", std::process::id());
    let url = server.repo_url(&bucket, "repo");
    ok(mover()
        .envs(server.env())
        .env("AWS_DEFAULT_REGION", "eu-west-1")
        .args(["-r", &url, "init"]));
    ok(restic_018()
        .envs(server.env())
        .env("AWS_DEFAULT_REGION", "eu-west-1")
        .args(["-r", &url, "cat", "config"]));
    // A second repository in the bucket that now exists.
    let other = server.repo_url(&bucket, "other");
    ok(mover()
        .envs(server.env())
        .env("AWS_DEFAULT_REGION", "eu-west-1")
        .args(["-r", &other, "init"]));

    // A store that refuses to create buckets: the error says which bucket and why.
    let endpoint = refusing_s3_endpoint();
    let url = format!("s3:{endpoint}/not-allowed/repo");
    let out = run(mover().envs(server.env()).args(["-r", &url, "init"]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("cannot create bucket not-allowed")
            && stderr.contains("403")
            && stderr.contains("AccessDenied: creating buckets is not allowed"),
        "the error names the bucket and the cause: {stderr}"
    );
}

/// An S3 endpoint on 127.0.0.1 that knows no object or bucket (404 to every HEAD and GET)
/// and refuses every PUT with S3's AccessDenied.
fn refusing_s3_endpoint() -> String {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut request = String::new();
            let _ = reader.read_line(&mut request);
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                line.clear();
            }
            let (status, body) = if request.starts_with("PUT ") {
                (
                    "403 Forbidden",
                    "<Error><Code>AccessDenied</Code>\
                     <Message>creating buckets is not allowed</Message></Error>",
                )
            } else {
                (
                    "404 Not Found",
                    "<Error><Code>NoSuchBucket</Code><Message>none</Message></Error>",
                )
            };
            let body = if request.starts_with("HEAD ") {
                ""
            } else {
                body
            };
            let _ = write!(
                conn,
                "HTTP/1.1 {status}\r\nContent-Type: application/xml\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    format!("http://127.0.0.1:{port}")
}
