//! `volsync`: VolSync's restic mover (`/mover-restic/entry.sh [unlock] backup [prune]` or
//! `restore`) done in-process, with the script's environment, steps, exit codes (1 missing
//! variable, 2 unknown operation, 3 repository probe failures) and log lines, so that
//! VolSync's log filter finds the lines it keeps. Each step reuses the subcommand of the same
//! name (its flags parsed from FORGET_OPTIONS and RESTORE_OPTIONS by the same clap
//! definitions); the only logic of its own is the probe and the snapshot selection.

use super::Cx;
use super::output::short;
use crate::cli;
use chrono::{DateTime, FixedOffset};
use mover::error::{Error, ErrorClass, Result};
use mover::format::SnapshotId;
use mover::format::snapshot::SnapshotFile;
use mover::ops::select;
use mover::repo::lock;
use mover::repo::{Opened, Repository};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Host name of every snapshot VolSync's mover makes and selects.
const HOST: &str = "volsync";
/// Variables the script refuses to run without, in its order.
const REQUIRED: &[&str] = &[
    "PRIVILEGED_MOVER",
    "RESTIC_CACHE_DIR",
    "RESTIC_PASSWORD",
    "RESTIC_REPOSITORY",
    "DATA_DIR",
];
/// The script gives its `restic cat config` probe this long.
const PROBE_TIMEOUT: Duration = Duration::from_secs(60);
/// `DEBUG_MOVER=1` waits until this file is gone.
const DEBUG_END_FILE: &str = "/tmp/exit-debug-if-removed";
/// Snapshots of the volume: the script keeps the lines of `restic snapshots` holding this.
const DATA_PATH_MARK: &str = "/data";

/// A step's outcome: go on, or end the run with this exit code.
type Step<T = ()> = ControlFlow<u8, T>;

pub async fn volsync(outer: &Cx<'_>, args: &cli::VolsyncArgs) -> Result<u8> {
    println!("Starting container");
    println!(
        "mover {} (restic repository format v1/v2) on {}/{}",
        env!("CARGO_PKG_VERSION"),
        std::env::consts::OS,
        std::env::consts::ARCH
    );
    println!("{}", args.operations.join(" "));
    if var("DEBUG_MOVER").is_some_and(|v| v.trim().parse::<i64>() == Ok(1)) {
        return debug_wait(outer, &args.operations).await;
    }
    let mut global = outer.g.clone();
    if let Some(ca) = var("CUSTOM_CA") {
        println!("Using custom CA.");
        global.cacert.push(PathBuf::from(ca));
    }
    let cx = Cx {
        g: &global,
        cancel: outer.cancel.clone(),
    };
    println!("Testing mandatory env variables");
    if let Some(missing) = REQUIRED.iter().find(|v| var(v).is_none()) {
        return Ok(error_line(1, format!("{missing} must be defined")));
    }
    let data_dir = PathBuf::from(var("DATA_DIR").unwrap_or_default());
    // Flags are checked before any step runs, so a typo cannot leave a snapshot behind and
    // then fail the Job (which VolSync retries, each time with one more snapshot).
    let ops = &args.operations;
    let wants = |op: &str| ops.iter().any(|o| o == op);
    let forget = match var("FORGET_OPTIONS").filter(|_| wants("backup")) {
        Some(opts) => Some(sub_args::<cli::ForgetArgs>(
            "forget",
            ["--host", HOST],
            "FORGET_OPTIONS",
            &opts,
        )?),
        None => None,
    };
    let selection = if wants("restore") {
        Some(Selection::from_env()?)
    } else {
        None
    };
    let started = Instant::now();
    for op in ops {
        let step = match (op.as_str(), &selection) {
            ("unlock", _) => unlock(&cx).await,
            ("backup", _) => backup(&cx, &data_dir, forget.as_ref()).await?,
            ("prune", _) => prune(&cx).await?,
            ("restore", Some(selection)) => restore(&cx, &data_dir, selection).await?,
            (other, _) => fail(2, format!("unknown operation: {other}")),
        };
        if let ControlFlow::Break(code) = step {
            return Ok(code);
        }
    }
    println!("Restic completed in {}s", started.elapsed().as_secs());
    println!("=== Done ===");
    Ok(0)
}

/// The script's `error RC "message"`: one `ERROR:` line; returns the exit code.
fn error_line(code: u8, message: String) -> u8 {
    println!("ERROR: {message}");
    code
}

/// [`error_line`] as the end of the run.
fn fail<T>(code: u8, message: String) -> Step<T> {
    ControlFlow::Break(error_line(code, message))
}

/// A set, non-empty variable (the script's `[[ -z ${!VAR} ]]` test).
fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

async fn debug_wait(cx: &Cx<'_>, ops: &[String]) -> Result<u8> {
    let end = Path::new(DEBUG_END_FILE);
    std::fs::File::create(end).map_err(|e| Error::io(format!("creating {DEBUG_END_FILE}"), e))?;
    println!("\n##################################################################");
    println!("DEBUG_MOVER is enabled, this pod will sleep indefinitely.\n");
    println!("To debug, run the mover by hand (DEBUG_MOVER unset) with:");
    println!("DEBUG_MOVER=0 mover volsync {}\n", ops.join(" "));
    println!("If you wish to exit this pod after debugging, delete the");
    println!("file {DEBUG_END_FILE} from the system.");
    println!("##################################################################");
    while end.exists() {
        cx.cancel.sleep(Duration::from_secs(1)).await?;
    }
    println!("\n##################################################################");
    println!("Debug done, exiting.");
    println!("##################################################################");
    Ok(0)
}

/// `unlock`: stale locks only. A missing repository is nothing to unlock.
async fn unlock(cx: &Cx<'_>) -> Step {
    println!("=== Starting unlock ===");
    match super::unlock::unlock(cx, &cli::UnlockArgs { remove_all: false }).await {
        Ok(_) => ControlFlow::Continue(()),
        Err(Error::RepositoryNotFound { location, .. }) => {
            println!("repository {location} does not exist yet");
            println!("No repo, ignoring unlock error");
            ControlFlow::Continue(())
        }
        Err(e) => fail(
            3,
            format!("failure unlocking repository: {}", e.chain_string()),
        ),
    }
}

async fn backup(cx: &Cx<'_>, data_dir: &Path, forget: Option<&cli::ForgetArgs>) -> Result<Step> {
    println!("== Checking directory for content ===");
    if holds_nothing(data_dir)? {
        // The script ends the whole run here, successfully.
        println!("== Directory is empty skipping backup ===");
        return Ok(ControlFlow::Break(0));
    }
    if let ControlFlow::Break(code) = ensure_initialized(cx).await? {
        return Ok(ControlFlow::Break(code));
    }
    println!("=== Starting backup ===");
    let args = sub_args::<cli::BackupArgs>(
        "backup",
        ["--host", HOST, "--exclude=lost+found", "."],
        "",
        "",
    )?;
    // `cd $DATA_DIR && restic backup .`: the snapshot records the volume's mount point.
    let code = in_dir(data_dir, super::backup::backup(cx, &args)).await?;
    if code != 0 {
        // Some files could not be read (restic's 3); the script stops there.
        return Ok(ControlFlow::Break(code));
    }
    println!("=== Starting forget ===");
    if let Some(args) = forget {
        super::forget::forget(cx, args).await?;
    }
    Ok(ControlFlow::Continue(()))
}

async fn prune(cx: &Cx<'_>) -> Result<Step> {
    println!("=== Starting prune ===");
    let args = sub_args::<cli::PruneArgs>("prune", [], "", "")?;
    super::prune::prune(cx, &args).await?;
    Ok(ControlFlow::Continue(()))
}

async fn restore(cx: &Cx<'_>, data_dir: &Path, selection: &Selection) -> Result<Step> {
    let repo = match ensure_initialized(cx).await? {
        ControlFlow::Continue(repo) => repo,
        ControlFlow::Break(code) => return Ok(ControlFlow::Break(code)),
    };
    println!("=== Starting restore ===");
    let snapshots = match repo.list_snapshots().await {
        Ok(s) => s,
        Err(e) => {
            return Ok(fail(
                3,
                format!(
                    "failure getting list of snapshots from repository: {}",
                    e.chain_string()
                ),
            ));
        }
    };
    let Some(id) = selection.pick(&snapshots) else {
        println!("No eligible snapshots found");
        println!("=== No data will be restored ===");
        sync_volume(data_dir);
        return Ok(ControlFlow::Continue(()));
    };
    let options = var("RESTORE_OPTIONS").unwrap_or_default();
    if !options.is_empty() {
        println!("RESTORE_OPTIONS: {options}");
    }
    println!("Selected restic snapshot with id: {}", id.short());
    let hex = id.to_hex();
    let args = sub_args::<cli::RestoreArgs>(
        "restore",
        [
            hex.as_str(),
            "-t",
            ".",
            "--host",
            HOST,
            "--include-xattr",
            "user.*",
        ],
        "RESTORE_OPTIONS",
        &options,
    )?;
    in_dir(data_dir, super::restore::restore(cx, &args)).await?;
    // `sync -f $DATA_DIR`: the volume is flushed before the pod ends.
    sync_volume(data_dir);
    Ok(ControlFlow::Continue(()))
}

/// The script's `restic cat config` probe: open the repository (creating it when it does
/// not exist), and fail with exit code 3 on a wrong password, a live exclusive lock or
/// anything else.
async fn ensure_initialized(cx: &Cx<'_>) -> Result<Step<Repository>> {
    println!("=== Check for dir initialized ===");
    // A bad location or password fails the probe like any other error (exit code 3).
    let probe = async {
        let storage = cx.storage(true)?;
        let location = storage.display().to_string();
        let password = cx.password()?;
        let (repo, opened) = Repository::open_or_init(storage, &password, true).await?;
        Ok::<_, Error>((repo, opened, location))
    };
    let opened = match tokio::time::timeout(PROBE_TIMEOUT, probe).await {
        Ok(r) => r,
        Err(_) => {
            return Ok(fail(
                3,
                format!(
                    "failure checking existence of repository: no answer within {} s",
                    PROBE_TIMEOUT.as_secs()
                ),
            ));
        }
    };
    let repo = match opened {
        Ok((repo, Opened::Existing, _)) => {
            if let Some(holder) = live_exclusive_lock(&repo).await {
                return Ok(fail(3, format!("failure locking repository: {holder}")));
            }
            println!("dir is initialized");
            repo
        }
        Ok((repo, Opened::Created, location)) => {
            println!("=== Initialize Dir ===");
            println!(
                "created restic repository {} at {location}",
                short(&repo.config().id)
            );
            repo
        }
        Err(e) if e.class() == ErrorClass::WrongPassword => {
            return Ok(fail(
                3,
                format!(
                    "failure connecting to repository, incorrect password: {}",
                    e.chain_string()
                ),
            ));
        }
        Err(e) => {
            return Ok(fail(
                3,
                format!(
                    "failure checking existence of repository: {}",
                    e.chain_string()
                ),
            ));
        }
    };
    print_opened(cx, &repo);
    Ok(ControlFlow::Continue(repo))
}

/// restic's line after opening a repository (VolSync keeps it).
fn print_opened(cx: &Cx<'_>, repo: &Repository) {
    let id = short(&repo.config().id);
    if repo.version() >= 2 {
        println!(
            "repository {id} opened (version {}, compression level {})",
            repo.version(),
            cx.g.compression
        );
    } else {
        println!("repository {id} opened (version {})", repo.version());
    }
}

/// A live exclusive lock (a forget or prune running elsewhere), which makes restic's probe
/// fail with exit code 11. Read-only: this writes no lock of its own.
async fn live_exclusive_lock(repo: &Repository) -> Option<String> {
    let locks = lock::list_locks(repo).await.ok()?;
    let now = mover::format::gotime::now_local();
    let host = mover::host::hostname();
    locks
        .iter()
        .find(|l| {
            l.lock.as_ref().is_ok_and(|f| f.exclusive) && l.stale_reason(now, &host).is_none()
        })
        .map(lock::FoundLock::describe)
}

/// Whether `dir` holds nothing but `lost+found` (the script's `ls -A --ignore=lost+found`).
fn holds_nothing(dir: &Path) -> Result<bool> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| Error::io(format!("reading DATA_DIR {}", dir.display()), e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(format!("reading {}", dir.display()), e))?;
        if entry.file_name() != "lost+found" {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Runs `work` with `dir` as the working directory (the script's `pushd`/`popd`).
async fn in_dir<T>(dir: &Path, work: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    let before = std::env::current_dir().ok();
    std::env::set_current_dir(dir)
        .map_err(|e| Error::io(format!("entering DATA_DIR {}", dir.display()), e))?;
    let result = work.await;
    if let Some(before) = before {
        let _ = std::env::set_current_dir(before);
    }
    result
}

fn sync_volume(dir: &Path) {
    if let Ok(f) = std::fs::File::open(dir) {
        let _ = nix::unistd::syncfs(&f);
    }
}

/// A subcommand's flags: `fixed`, then the words of the variable `name` (value `extra`),
/// parsed by the subcommand's own clap definition.
fn sub_args<'a, T: clap::Args + clap::FromArgMatches>(
    command: &'static str,
    fixed: impl IntoIterator<Item = &'a str>,
    name: &str,
    extra: &str,
) -> Result<T> {
    let bad = |detail: String| {
        let origin = if name.is_empty() {
            String::new()
        } else {
            format!(" (from {name}={extra:?})")
        };
        Error::InvalidInput(format!("{command} flags{origin}: {detail}"))
    };
    let mut argv = vec![command.to_string()];
    argv.extend(fixed.into_iter().map(str::to_string));
    argv.extend(split_words(extra).map_err(|e| bad(e.into()))?);
    let clap_error = |e: clap::Error| {
        let text = e.to_string();
        let first = text
            .lines()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("invalid flags")
            .trim_start_matches("error: ")
            .to_string();
        bad(first)
    };
    let matches = T::augment_args(clap::Command::new(command))
        .try_get_matches_from(argv)
        .map_err(clap_error)?;
    T::from_arg_matches(&matches).map_err(clap_error)
}

/// Splits a flag string into words as a shell does: at unquoted whitespace, with `'...'`,
/// `"..."` and backslash escapes. (The script expands the variable unquoted, which splits
/// at whitespace only; the two agree on every string without quotes or backslashes.)
fn split_words(s: &str) -> std::result::Result<Vec<String>, &'static str> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err("unterminated single quote"),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => word.push(c),
                            Some(c) => {
                                word.push('\\');
                                word.push(c);
                            }
                            None => return Err("unterminated double quote"),
                        },
                        Some(c) => word.push(c),
                        None => return Err("unterminated double quote"),
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some(c) => word.push(c),
                    None => return Err("trailing backslash"),
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

/// Which snapshot `restore` takes: RESTORE_AS_OF and SELECT_PREVIOUS, chosen by the
/// library's one selection rule among snapshots of a path holding `/data`.
#[derive(Debug, Default)]
struct Selection(select::Selection);

impl Selection {
    fn from_env() -> Result<Selection> {
        let as_of = var("RESTORE_AS_OF")
            .map(|t| {
                parse_time(t.trim()).ok_or_else(|| {
                    Error::InvalidInput(format!("RESTORE_AS_OF {t:?} is not an RFC 3339 time"))
                })
            })
            .transpose()?;
        let previous = var("SELECT_PREVIOUS")
            .map(|n| {
                n.trim().parse::<usize>().map_err(|_| {
                    Error::InvalidInput(format!("SELECT_PREVIOUS {n:?} is not a count"))
                })
            })
            .transpose()?
            .unwrap_or(0);
        Ok(Selection(select::Selection { as_of, previous }))
    }

    fn pick(&self, snapshots: &[(SnapshotId, SnapshotFile)]) -> Option<SnapshotId> {
        let data = |s: &SnapshotFile| s.paths.iter().any(|p| p.contains(DATA_PATH_MARK));
        select::select_snapshot(snapshots, data, &self.0).map(|(id, _)| *id)
    }
}

/// RFC 3339, or `YYYY-MM-DD[ T]HH:MM:SS` in local time (what the script's `date` also takes).
fn parse_time(s: &str) -> Option<DateTime<FixedOffset>> {
    if let Ok(t) = mover::format::gotime::parse(s) {
        return Some(t);
    }
    ["%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S"]
        .iter()
        .find_map(|f| chrono::NaiveDateTime::parse_from_str(s, f).ok())
        .and_then(|naive| naive.and_local_timezone(chrono::Local).earliest())
        .map(|t| t.fixed_offset())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_split_like_a_shell() {
        assert_eq!(
            split_words("  --keep-hourly 6\t--keep-daily 5 ").unwrap(),
            ["--keep-hourly", "6", "--keep-daily", "5"]
        );
        assert_eq!(
            split_words(r#"--keep-tag "a b" --x='c d' e\ f "" "q\"q""#).unwrap(),
            ["--keep-tag", "a b", "--x=c d", "e f", "", "q\"q"]
        );
        assert!(split_words("").unwrap().is_empty());
        assert!(split_words("'open").is_err());
        assert!(split_words("\"open").is_err());
    }

    fn snap(path: &str, time: &str) -> SnapshotFile {
        let json = serde_json::json!({
            "time": time,
            "tree": "ab".repeat(32),
            "paths": [path],
            "hostname": HOST,
        });
        SnapshotFile::decode(json.to_string().as_bytes()).unwrap()
    }

    fn id(n: u8) -> SnapshotId {
        SnapshotId(mover::format::Id([n; 32]))
    }

    #[test]
    fn selection_follows_as_of_and_previous() {
        let snaps = vec![
            (id(1), snap("/data", "2026-01-01T10:00:00.700Z")),
            (id(2), snap("/data", "2026-01-02T10:00:00Z")),
            (id(9), snap("/other", "2026-01-05T10:00:00Z")),
            (id(3), snap("/data", "2026-01-03T10:00:00Z")),
        ];
        let pick = |as_of: Option<&str>, previous| {
            Selection(select::Selection {
                as_of: as_of.map(|t| parse_time(t).unwrap()),
                previous,
            })
            .pick(&snaps)
        };
        assert_eq!(pick(None, 0), Some(id(3)));
        assert_eq!(pick(None, 2), Some(id(1)));
        assert_eq!(pick(None, 3), None);
        assert_eq!(pick(Some("2026-01-02T12:00:00Z"), 0), Some(id(2)));
        assert_eq!(pick(Some("2026-01-02T12:00:00Z"), 1), Some(id(1)));
        // Whole seconds, as the script compares epochs.
        assert_eq!(pick(Some("2026-01-01T10:00:00Z"), 0), Some(id(1)));
        assert_eq!(pick(Some("2025-12-31T00:00:00Z"), 0), None);
        assert_eq!(pick(Some("2026-01-02T12:00:00+02:00"), 0), Some(id(2)));
    }

    #[test]
    fn times_parse_as_rfc3339_or_local() {
        assert!(parse_time("2026-01-02T12:00:00Z").is_some());
        assert!(parse_time("2026-01-02 12:00:00").is_some());
        assert!(parse_time("yesterday").is_none());
    }

    #[test]
    fn forget_options_map_to_forget_flags() {
        let args: cli::ForgetArgs = sub_args(
            "forget",
            ["--host", HOST],
            "FORGET_OPTIONS",
            "--keep-hourly 6 --keep-daily 5 --keep-within 1y",
        )
        .unwrap();
        assert_eq!(args.host, [HOST]);
        assert_eq!(args.keep_hourly, Some(cli::KeepCount(6)));
        assert_eq!(args.keep_daily, Some(cli::KeepCount(5)));
        assert_eq!(args.keep_within.as_deref(), Some("1y"));
        let bad = sub_args::<cli::ForgetArgs>("forget", [], "FORGET_OPTIONS", "--keep-soon 1")
            .unwrap_err()
            .to_string();
        assert!(
            bad.contains("FORGET_OPTIONS") && bad.contains("--keep-soon"),
            "{bad}"
        );
    }

    #[test]
    fn restore_options_map_to_restore_flags() {
        let args: cli::RestoreArgs = sub_args(
            "restore",
            ["abcd", "-t", ".", "--include-xattr", "user.*"],
            "RESTORE_OPTIONS",
            "--delete",
        )
        .unwrap();
        assert!(args.delete);
        assert_eq!(args.include_xattr, ["user.*"]);
        assert_eq!(args.target.as_deref(), Some(Path::new(".")));
    }
}
