//! `backup`: a tree, a block device, an image or stdin into the repository (created when
//! missing, as a mover Job's first run needs).

use super::output::{human_bytes, human_duration, short};
use super::{Cx, compression, pack_size_bytes, status};
use crate::cli;
use mover::error::{Error, Result};
use mover::ops;
use mover::progress::{Progress, Totals, scan_totals};
use mover::repo::{Opened, Repository};
use std::sync::Arc;

/// Exit code of a backup that saved a snapshot but could not read some files (restic: 3).
const EXIT_PARTIAL_BACKUP: u8 = 3;

pub(super) fn split_tags(tags: &[String]) -> Vec<String> {
    tags.iter()
        .flat_map(|t| t.split(','))
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
        .collect()
}

pub async fn backup(cx: &Cx<'_>, args: &cli::BackupArgs) -> Result<u8> {
    // Checked before the repository is opened (or created).
    let changed_ranges = changed_ranges(args)?;
    let storage = cx.storage(!args.no_direct_io)?;
    let pw = cx.password()?;
    let location = storage.display().to_string();
    // A mover Job's first run finds an empty bucket: create the repository then.
    let (repo, opened) = Repository::open_or_init(storage, &pw, true).await?;
    if opened == Opened::Created {
        if cx.g.json {
            super::output::print_initialized_json(&repo.config().id, &location);
        } else if !cx.g.quiet {
            println!(
                "repository {location} did not exist: created restic repository {}",
                short(&repo.config().id)
            );
        }
    }
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
        lock: cx.lock_options(),
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
    opts.pipeline.compression = compression(cx.g)?;
    opts.pipeline.pack_size_bytes = pack_size_bytes(cx.g)?;
    opts.pipeline.upload_concurrency = repo.storage().upload_concurrency();

    let progress = Arc::new(Progress::default());
    let source = volume_source(args)?;
    // The scan beside the backup stops with it.
    let scan_stop = mover::Cancel::new();
    let totals = source_totals(args, source.as_ref().map(|(s, _)| s), &scan_stop);
    let reporter = status::Reporter::start(Arc::clone(&progress), totals, cx.g.json, cx.g.quiet);
    let result = match source {
        Some((source, name)) => {
            let vopts = ops::block::VolumeBackupOptions {
                name,
                host: opts.host.clone(),
                tags: opts.tags.clone(),
                parent: opts.parent.clone(),
                pipeline: opts.pipeline.clone(),
                chunker: opts.chunker,
                lock: opts.lock.clone(),
                changed_ranges,
            };
            ops::block::backup_volume(&repo, &vopts, source, Arc::clone(&progress)).await
        }
        None => ops::backup::backup(&repo, &opts, Arc::clone(&progress)).await,
    };
    reporter.stop();
    scan_stop.cancel("the backup ended");
    let summary = result?;
    for e in &summary.errors {
        eprintln!("error: {e}");
    }
    if cx.g.json {
        super::output::print_json_summary(&summary)?;
    } else if !cx.g.quiet {
        match &summary.parent {
            Some(p) => println!("using parent snapshot {}", p.short()),
            None if !args.force => println!("no parent snapshot found, will read all files"),
            None => {}
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

/// `--changed-ranges`, read and checked: it needs `--parent` (the snapshot the ranges were
/// taken against) and a block device or `--image` to read by offset.
fn changed_ranges(args: &cli::BackupArgs) -> Result<Option<Vec<std::ops::Range<u64>>>> {
    let Some(file) = &args.changed_ranges else {
        return Ok(None);
    };
    if args.parent.is_none() || args.force {
        return Err(Error::InvalidInput(
            "--changed-ranges needs --parent SNAPSHOT: the ranges say what changed since that \
             snapshot"
                .into(),
        ));
    }
    if args.stdin || volume_source(args)?.is_none() {
        return Err(Error::InvalidInput(
            "--changed-ranges needs a block device or --image IMAGE to read by offset".into(),
        ));
    }
    let (text, what) = if file.as_os_str() == "-" {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin().lock(), &mut text)
            .map_err(|e| Error::io("reading changed ranges from stdin", e))?;
        (text, "changed ranges on stdin".to_string())
    } else {
        let text = std::fs::read_to_string(file)
            .map_err(|e| Error::io(format!("reading changed ranges {}", file.display()), e))?;
        (text, format!("changed ranges {}", file.display()))
    };
    ops::block::changed::parse_changed_ranges(&text, &what).map(Some)
}

/// The source's totals for the status: a volume's size, or a scan of the paths beside the
/// backup (as restic's); unknown for stdin.
fn source_totals(
    args: &cli::BackupArgs,
    volume: Option<&ops::block::VolumeSource>,
    cancel: &mover::Cancel,
) -> Arc<Totals> {
    match volume {
        Some(ops::block::VolumeSource::Path(p)) => {
            let size = std::fs::File::open(p)
                .and_then(|mut f| mover::fs::block::volume_size(&mut f))
                .ok();
            Arc::new(size.map_or_else(Totals::default, |s| Totals::known(1, s)))
        }
        Some(_) => Arc::new(Totals::default()),
        None => {
            let totals = Arc::new(Totals::default());
            let (found, roots, cancel) = (Arc::clone(&totals), args.paths.clone(), cancel.clone());
            tokio::task::spawn_blocking(move || scan_totals(&roots, &found, &cancel));
            totals
        }
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
