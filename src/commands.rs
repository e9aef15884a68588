//! One function per subcommand: resolve the repository and password, call the library
//! operation, print its result the way restic does.

use crate::cli::{self, Cli, Command, FilterArgs};
use mover::compress::CompressionMode;
use mover::error::{Error, Result};
use mover::ops;
use mover::progress::Progress;
use mover::repo::{InitOptions, Repository, SnapshotFilter, lock};
use mover::storage::{Storage, StorageOptions};
use std::io::Write;
use std::sync::Arc;

/// Exit code of a backup that saved a snapshot but could not read some files (restic: 3).
const EXIT_PARTIAL_BACKUP: u8 = 3;

pub async fn run(cli: Cli) -> Result<u8> {
    let g = &cli.global;
    match &cli.command {
        Command::Version => {
            println!(
                "mover {} (restic repository format v1/v2) on {}/{}",
                env!("CARGO_PKG_VERSION"),
                std::env::consts::OS,
                std::env::consts::ARCH
            );
            Ok(0)
        }
        Command::Init(args) => init(g, args).await,
        Command::Backup(args) => backup(g, args).await,
        Command::Restore(args) => restore(g, args).await,
        Command::Snapshots(args) => snapshots(g, args).await,
        Command::Ls(args) => ls(g, args).await,
        Command::Cat(args) => cat(g, args).await,
        Command::Dump(args) => dump(g, args).await,
    }
}

fn repository_location(g: &cli::GlobalOptions) -> Result<String> {
    if let Some(r) = &g.repo {
        if !r.is_empty() {
            return Ok(r.clone());
        }
    }
    if let Some(f) = &g.repository_file {
        let s = std::fs::read_to_string(f)
            .map_err(|e| Error::io(format!("reading repository file {}", f.display()), e))?;
        let s = s.trim().to_string();
        if !s.is_empty() {
            return Ok(s);
        }
    }
    Err(Error::InvalidInput(
        "no repository given: use -r/--repo or set RESTIC_REPOSITORY or RESTIC_REPOSITORY_FILE"
            .into(),
    ))
}

/// The password, from (in restic's order) a command, a file, `RESTIC_PASSWORD`, or stdin.
fn password(g: &cli::GlobalOptions) -> Result<String> {
    if let Some(cmd) = &g.password_command {
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(cmd)
            .stderr(std::process::Stdio::inherit())
            .output()
            .map_err(|e| Error::io("running the password command", e))?;
        if !out.status.success() {
            return Err(Error::InvalidInput(format!(
                "password command failed with {}",
                out.status
            )));
        }
        return Ok(String::from_utf8_lossy(&out.stdout).trim().to_string());
    }
    if let Some(f) = &g.password_file {
        let raw = std::fs::read(f)
            .map_err(|e| Error::io(format!("reading password file {}", f.display()), e))?;
        let text = String::from_utf8_lossy(&raw);
        let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
        return Ok(text.trim().to_string());
    }
    if let Ok(p) = std::env::var("RESTIC_PASSWORD") {
        return Ok(p);
    }
    let mut line = String::new();
    if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        eprint!("enter password for repository: ");
        let _ = std::io::stderr().flush();
    }
    std::io::stdin()
        .read_line(&mut line)
        .map_err(|e| Error::io("reading password from stdin", e))?;
    let line = line.trim_end_matches(['\r', '\n']).to_string();
    if line.is_empty() {
        return Err(Error::InvalidInput(
            "no password given: set RESTIC_PASSWORD, RESTIC_PASSWORD_FILE or RESTIC_PASSWORD_COMMAND"
                .into(),
        ));
    }
    Ok(line)
}

/// The repository's storage; `direct_io` lets local pack files bypass the page cache.
fn storage(g: &cli::GlobalOptions, direct_io: bool) -> Result<Storage> {
    let location = repository_location(g)?;
    let opts = StorageOptions {
        cacert: g.cacert.clone(),
        connections: g.connections.max(1),
        direct_io,
    };
    Ok(Storage::open(&location, &opts)?)
}

async fn open(g: &cli::GlobalOptions) -> Result<Repository> {
    open_with(g, true).await
}

async fn open_with(g: &cli::GlobalOptions, direct_io: bool) -> Result<Repository> {
    let storage = storage(g, direct_io)?;
    let pw = password(g)?;
    Repository::open(storage, &pw).await
}

fn filter(f: &FilterArgs) -> SnapshotFilter {
    SnapshotFilter {
        hosts: f.host.clone(),
        paths: f.path.clone(),
        tags: f.tag.clone(),
    }
}

fn compression(g: &cli::GlobalOptions) -> Result<CompressionMode> {
    g.compression
        .parse::<CompressionMode>()
        .map_err(|e| Error::InvalidInput(format!("--compression: {e}")))
}

fn pack_size_bytes(g: &cli::GlobalOptions) -> Result<u64> {
    match g.pack_size {
        None => Ok(ops::pipeline::DEFAULT_PACK_SIZE_BYTES),
        Some(mib) if (4..=128).contains(&mib) => Ok(mib * 1024 * 1024),
        Some(mib) => Err(Error::InvalidInput(format!(
            "pack size {mib} MiB is outside the allowed range of 4 to 128 MiB"
        ))),
    }
}

fn parse_version(v: &str) -> Result<u32> {
    match v {
        "1" => Ok(1),
        "2" | "latest" | "stable" => Ok(2),
        other => Err(Error::InvalidInput(format!(
            "unknown repository version {other:?}: use 1, 2, latest or stable"
        ))),
    }
}

async fn init(g: &cli::GlobalOptions, args: &cli::InitArgs) -> Result<u8> {
    let storage = storage(g, true)?;
    let pw = password(g)?;
    let chunker: ops::backup::ChunkerKind = args
        .chunker
        .parse()
        .map_err(|e: String| Error::InvalidInput(format!("--chunker: {e}")))?;
    let opts = InitOptions {
        version: parse_version(&args.repository_version)?,
        chunker: Some(
            match chunker {
                ops::backup::ChunkerKind::FastCdc => "fastcdc",
                ops::backup::ChunkerKind::Rabin => "rabin",
            }
            .to_string(),
        ),
        ..InitOptions::default()
    };
    let location = storage.display().to_string();
    let repo = Repository::init(storage, &pw, &opts).await?;
    if g.json {
        println!(
            "{}",
            serde_json::json!({"message_type": "initialized", "id": repo.config().id, "repository": location})
        );
    } else if !g.quiet {
        println!(
            "created restic repository {} at {}",
            short(&repo.config().id),
            location
        );
        println!(
            "\nPlease note that knowledge of your password is required to access\nthe repository. Losing your password means that your data is\nirrecoverably lost."
        );
    }
    Ok(0)
}

fn short(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}

fn split_tags(tags: &[String]) -> Vec<String> {
    tags.iter()
        .flat_map(|t| t.split(','))
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
        .collect()
}

async fn backup(g: &cli::GlobalOptions, args: &cli::BackupArgs) -> Result<u8> {
    let storage = storage(g, !args.no_direct_io)?;
    let pw = password(g)?;
    let location = storage.display().to_string();
    // A mover Job's first run finds an empty bucket: create the repository then.
    let repo = match Repository::open(storage.clone(), &pw).await {
        Ok(r) => r,
        Err(Error::RepositoryNotFound { .. }) => {
            let repo = Repository::init(storage, &pw, &InitOptions::default()).await?;
            if g.json {
                println!(
                    "{}",
                    serde_json::json!({"message_type": "initialized", "id": repo.config().id, "repository": location})
                );
            } else if !g.quiet {
                println!(
                    "repository {location} did not exist: created restic repository {}",
                    short(&repo.config().id)
                );
            }
            repo
        }
        Err(e) => return Err(e),
    };
    let mut excludes = args.exclude.clone();
    excludes.extend(
        mover::fs::exclude::ExcludeMatcher::from_files(&args.exclude_file)
            .map_err(|e| Error::io("reading exclude file", e))?,
    );
    let mut opts = ops::backup::BackupOptions {
        paths: args.paths.clone(),
        tags: split_tags(&args.tag),
        excludes,
        one_file_system: args.one_file_system,
        with_atime: args.with_atime,
        ..Default::default()
    };
    if let Some(h) = &args.host {
        opts.host = h.clone();
    }
    opts.parent = match (&args.parent, args.force) {
        (_, true) => ops::backup::ParentChoice::None,
        (Some(p), false) => ops::backup::ParentChoice::Snapshot(p.clone()),
        (None, false) => ops::backup::ParentChoice::Latest,
    };
    opts.strict_change_detection = args.strict_change_detection;
    if let Some(c) = &args.chunker {
        opts.chunker = Some(
            c.parse()
                .map_err(|e: String| Error::InvalidInput(format!("--chunker: {e}")))?,
        );
    }
    if let Some(n) = args.read_concurrency {
        opts.read_threads = n.max(1);
    }
    opts.direct_io = !args.no_direct_io;
    opts.pipeline.compression = compression(g)?;
    opts.pipeline.pack_size_bytes = pack_size_bytes(g)?;
    // A local disk gains nothing from many packs in flight; each one holds a pack in memory.
    opts.pipeline.upload_concurrency = if repo.storage().is_local() {
        g.connections.clamp(1, 2)
    } else {
        g.connections.max(1)
    };

    let progress = Arc::new(Progress::default());
    let reporter = spawn_reporter(Arc::clone(&progress), g.json, g.quiet);
    let result = match volume_source(args)? {
        Some((source, name)) => {
            let vopts = ops::block::VolumeBackupOptions {
                name,
                host: opts.host.clone(),
                tags: opts.tags.clone(),
                parent: opts.parent.clone(),
                pipeline: opts.pipeline.clone(),
                chunker: opts.chunker,
            };
            ops::block::backup_volume(&repo, &vopts, source, Arc::clone(&progress)).await
        }
        None => ops::backup::backup(&repo, &opts, Arc::clone(&progress)).await,
    };
    reporter.abort();
    let summary = result?;
    for e in &summary.errors {
        eprintln!("error: {e}");
    }
    if g.json {
        let mut v = serde_json::to_value(&summary).map_err(|e| Error::Other(e.to_string()))?;
        if let Some(o) = v.as_object_mut() {
            o.insert("message_type".into(), "summary".into());
        }
        println!("{v}");
    } else if !g.quiet {
        if let Some(p) = &summary.parent {
            println!("using parent snapshot {}", p.short());
        }
        println!(
            "\nFiles:       {:>5} new, {:>5} changed, {:>5} unmodified",
            summary.files_new, summary.files_changed, summary.files_unmodified
        );
        println!(
            "Dirs:        {:>5} new, {:>5} changed, {:>5} unmodified",
            summary.dirs_new, summary.dirs_changed, summary.dirs_unmodified
        );
        println!(
            "Added to the repository: {} ({} stored)",
            human_bytes(summary.data_added),
            human_bytes(summary.data_added_packed)
        );
        println!(
            "Read from files:         {}",
            human_bytes(summary.bytes_read)
        );
        println!(
            "\nprocessed {} files, {} in {}",
            summary.total_files_processed,
            human_bytes(summary.total_bytes_processed),
            human_duration(summary.total_duration_seconds)
        );
        println!("snapshot {} saved", summary.snapshot_id.short());
    }
    if summary.errors.is_empty() {
        Ok(0)
    } else {
        eprintln!("Warning: at least one source file could not be read");
        Ok(EXIT_PARTIAL_BACKUP)
    }
}

/// A volume to back up as one file (stdin, a block device, or an image with `--image`), or
/// `None` for a tree backup.
fn volume_source(
    args: &cli::BackupArgs,
) -> Result<Option<(ops::block::VolumeSource, Option<String>)>> {
    use mover::fs::block::{VolumeKind, volume_kind};
    if args.stdin {
        return Ok(Some((
            ops::block::VolumeSource::Stdin,
            Some(args.stdin_filename.clone()),
        )));
    }
    let kinds = args
        .paths
        .iter()
        .map(|p| volume_kind(p).unwrap_or(VolumeKind::Other))
        .collect::<Vec<_>>();
    let volume = |k: &VolumeKind| {
        *k == VolumeKind::BlockDevice || (args.image && *k == VolumeKind::RegularFile)
    };
    match (args.paths.as_slice(), kinds.as_slice()) {
        ([path], [kind]) if volume(kind) => {
            Ok(Some((ops::block::VolumeSource::Path(path.clone()), None)))
        }
        (_, kinds) if args.image || kinds.iter().any(volume) => Err(Error::InvalidInput(
            "a block device or --image backs up exactly one volume: give a single path".into(),
        )),
        _ => Ok(None),
    }
}

/// Print a progress line every few seconds: on stderr for people, as JSON status on stdout.
fn spawn_reporter(progress: Arc<Progress>, json: bool, quiet: bool) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if quiet {
            return;
        }
        let interactive = std::io::IsTerminal::is_terminal(&std::io::stderr());
        let every = if interactive { 1 } else { 10 };
        let started = std::time::Instant::now();
        let mut ticker = tokio::time::interval(std::time::Duration::from_secs(every));
        ticker.tick().await;
        loop {
            ticker.tick().await;
            let s = progress.snapshot();
            if json {
                println!(
                    "{}",
                    serde_json::json!({
                        "message_type": "status",
                        "seconds_elapsed": started.elapsed().as_secs(),
                        "files_done": s.files_done,
                        "bytes_done": s.bytes_done,
                        "error_count": s.errors,
                    })
                );
            } else {
                eprintln!(
                    "[{}] {} files, {} processed, {} errors",
                    human_duration(started.elapsed().as_secs_f64()),
                    s.files_done,
                    human_bytes(s.bytes_done),
                    s.errors
                );
            }
        }
    })
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.3} {}", UNITS[u])
    }
}

fn human_duration(secs: f64) -> String {
    let s = secs.round() as u64;
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, (s / 60) % 60, s % 60)
    } else {
        format!("{}:{:02}", s / 60, s % 60)
    }
}

async fn restore(g: &cli::GlobalOptions, args: &cli::RestoreArgs) -> Result<u8> {
    if let Some(device) = &args.target_device {
        return restore_volume(g, args, device).await;
    }
    let target = args
        .target
        .clone()
        .ok_or_else(|| Error::InvalidInput("restore needs --target or --target-device".into()))?;
    let repo = open_with(g, !args.no_direct_io).await?;
    let work = async {
        let (id, snap) = repo
            .find_snapshot(&args.snapshot, &filter(&args.filter))
            .await?;
        if !g.quiet && !g.json {
            println!(
                "restoring snapshot {} of {:?} at {} to {}",
                id.short(),
                snap.paths,
                snap.time,
                target.display()
            );
        }
        let opts = ops::restore::RestoreOptions {
            target: target.clone(),
            includes: args.include.clone(),
            excludes: args.exclude.clone(),
            verify: args.verify,
            direct_io: !args.no_direct_io,
            ..Default::default()
        };
        let progress = Arc::new(Progress::default());
        ops::restore::restore(&repo, &snap, &opts, progress).await
    };
    let summary = lock::while_locked_loading_index(&repo, false, work).await?;
    for e in &summary.errors {
        eprintln!("error: {e}");
    }
    if g.json {
        println!(
            "{}",
            serde_json::json!({
                "message_type": "summary",
                "files_restored": summary.files_restored,
                "dirs_restored": summary.dirs_restored,
                "bytes_restored": summary.bytes_restored,
                "errors": summary.errors,
            })
        );
    } else if !g.quiet {
        println!(
            "restored {} files, {} directories, {}",
            summary.files_restored,
            summary.dirs_restored,
            human_bytes(summary.bytes_restored)
        );
    }
    if summary.errors.is_empty() {
        Ok(0)
    } else {
        Err(Error::Other(format!(
            "restore finished with {} errors",
            summary.errors.len()
        )))
    }
}

/// `restore --target-device`: the snapshot's single file onto a device or image file.
async fn restore_volume(
    g: &cli::GlobalOptions,
    args: &cli::RestoreArgs,
    device: &std::path::Path,
) -> Result<u8> {
    let repo = open_with(g, !args.no_direct_io).await?;
    let work = async {
        let (id, snap) = repo
            .find_snapshot(&args.snapshot, &filter(&args.filter))
            .await?;
        if !g.quiet && !g.json {
            println!(
                "restoring volume {:?} of snapshot {} at {} to {}",
                snap.paths,
                id.short(),
                snap.time,
                device.display()
            );
        }
        let opts = ops::block::VolumeRestoreOptions {
            target: device.to_path_buf(),
            zeroed_target: args.zeroed_target,
            verify: args.verify,
            ..Default::default()
        };
        ops::block::restore_volume(&repo, &snap, &opts, Arc::new(Progress::default())).await
    };
    let summary = lock::while_locked_loading_index(&repo, false, work).await?;
    if g.json {
        let mut v = serde_json::to_value(&summary).map_err(|e| Error::Other(e.to_string()))?;
        if let Some(o) = v.as_object_mut() {
            o.insert("message_type".into(), "summary".into());
        }
        println!("{v}");
    } else if !g.quiet {
        println!(
            "restored {} to {} ({} of zero regions left as holes or unwritten){}",
            human_bytes(summary.size),
            device.display(),
            human_bytes(summary.zero_bytes_skipped),
            if summary.verified { ", verified" } else { "" }
        );
    }
    Ok(0)
}

async fn snapshots(g: &cli::GlobalOptions, args: &cli::SnapshotsArgs) -> Result<u8> {
    let repo = open(g).await?;
    let f = filter(&args.filter);
    let mut snaps: Vec<_> = repo
        .list_snapshots()
        .await?
        .into_iter()
        .filter(|(_, s)| s.matches(&f.hosts, &f.paths, &f.tags))
        .collect();
    if !args.ids.is_empty() {
        let mut picked = Vec::new();
        for spec in &args.ids {
            let found = repo.find_snapshot(spec, &f).await?;
            if !picked
                .iter()
                .any(|(id, _): &(mover::format::SnapshotId, _)| *id == found.0)
            {
                picked.push(found);
            }
        }
        snaps = picked;
    }
    if g.json {
        println!("{}", ops::snapshots::to_json(&snaps));
    } else {
        print!("{}", ops::snapshots::format_table(&snaps));
    }
    Ok(0)
}

async fn ls(g: &cli::GlobalOptions, args: &cli::LsArgs) -> Result<u8> {
    let repo = open(g).await?;
    let (id, snap) = repo
        .find_snapshot(&args.snapshot, &filter(&args.filter))
        .await?;
    let index = repo.load_index().await?;
    let entries = ops::ls::ls(&repo, &index, snap.tree, args.dir.as_deref(), true).await?;
    let mut out = std::io::stdout().lock();
    if g.json {
        let _ = writeln!(
            out,
            "{}",
            serde_json::json!({
                "struct_type": "snapshot", "time": mover::format::gotime::format(&snap.time),
                "tree": snap.tree.to_hex(), "paths": snap.paths, "hostname": snap.hostname,
                "id": id.to_hex(), "short_id": id.short(),
            })
        );
        for (path, node) in &entries {
            let _ = writeln!(
                out,
                "{}",
                serde_json::json!({
                    "name": String::from_utf8_lossy(&node.name), "type": node.node_type.as_str(),
                    "path": path, "uid": node.uid, "gid": node.gid, "size": node.size,
                    "mode": node.mode, "mtime": mover::format::gotime::format(&node.mtime),
                    "struct_type": "node",
                })
            );
        }
    } else {
        if !g.quiet {
            let _ = writeln!(
                out,
                "snapshot {} of {:?} at {}:",
                id.short(),
                snap.paths,
                snap.time
            );
        }
        for (path, node) in &entries {
            let line = if args.long {
                ops::ls::format_long(node, path)
            } else {
                path.clone()
            };
            let _ = writeln!(out, "{line}");
        }
    }
    Ok(0)
}

async fn cat(g: &cli::GlobalOptions, args: &cli::CatArgs) -> Result<u8> {
    let repo = open(g).await?;
    let bytes = ops::cat::cat(&repo, &args.object, args.id.as_deref()).await?;
    let mut out = std::io::stdout().lock();
    out.write_all(&bytes)
        .and_then(|_| out.flush())
        .map_err(|e| Error::io("writing to stdout", e))?;
    Ok(0)
}

async fn dump(g: &cli::GlobalOptions, args: &cli::DumpArgs) -> Result<u8> {
    let repo = open(g).await?;
    let work = async {
        let (_, snap) = repo
            .find_snapshot(&args.snapshot, &filter(&args.filter))
            .await?;
        let index = repo.load_index().await?;
        let mut out = std::io::BufWriter::with_capacity(1 << 20, std::io::stdout());
        let n = ops::dump::dump_file(&repo, &index, snap.tree, &args.file, &mut out).await?;
        out.flush().map_err(|e| Error::io("writing to stdout", e))?;
        Ok::<u64, Error>(n)
    };
    lock::while_locked_loading_index(&repo, false, work).await?;
    Ok(0)
}
