//! `backup`: a tree, a block device, an image or stdin into the repository (created when
//! missing, as a mover Job's first run needs).

use super::output::{human_bytes, human_duration, short};
use super::{Cx, compression, status};
use crate::cli;
use mover::error::{Error, Result};
use mover::ops;
use mover::ops::backup::{BackupPlan, BackupRequest};
use mover::progress::{Progress, Totals, scan_totals};
use mover::repo::{Opened, Repository};
use std::sync::Arc;

/// Exit code of a backup that saved a snapshot but could not read some files (restic: 3).
const EXIT_PARTIAL_BACKUP: u8 = 3;

pub async fn backup(cx: &Cx<'_>, args: &cli::BackupArgs) -> Result<u8> {
    // Refused before the repository is opened (or created).
    let mut request = request(cx, args)?;
    request.check()?;
    request.changed_ranges = changed_ranges(args)?;
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
    let plan = request.plan(repo.storage().upload_concurrency())?;

    let progress = Arc::new(Progress::default());
    // The scan beside the backup stops with it.
    let scan_stop = mover::Cancel::new();
    let totals = source_totals(&plan, &scan_stop);
    let reporter = status::Reporter::start(Arc::clone(&progress), totals, cx.g.json, cx.g.quiet);
    let result = match plan {
        BackupPlan::Volume { source, options } => {
            ops::block::backup_volume(&repo, &options, source, Arc::clone(&progress)).await
        }
        BackupPlan::Tree(options) => {
            ops::backup::backup(&repo, &options, Arc::clone(&progress)).await
        }
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

/// The `--changed-ranges` file (or stdin), read once the request passed its checks.
fn changed_ranges(args: &cli::BackupArgs) -> Result<Option<Vec<std::ops::Range<u64>>>> {
    let Some(file) = &args.changed_ranges else {
        return Ok(None);
    };
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

/// The flags of `backup`, as the library's request.
fn request(cx: &Cx<'_>, args: &cli::BackupArgs) -> Result<BackupRequest> {
    let mut excludes = args.exclude.clone();
    excludes.extend(
        mover::fs::exclude::ExcludeMatcher::from_files(&args.exclude_file)
            .map_err(|e| Error::io("reading exclude file", e))?,
    );
    Ok(BackupRequest {
        paths: args.paths.clone(),
        stdin_filename: args.stdin.then(|| args.stdin_filename.clone()),
        image: args.image,
        volume_name: None,
        host: args.host.clone(),
        tags: args.tag.clone(),
        parent: args.parent.clone(),
        force: args.force,
        excludes,
        one_file_system: args.one_file_system,
        with_atime: args.with_atime,
        strict_change_detection: args.strict_change_detection,
        chunker: args.chunker.clone(),
        read_concurrency: args.read_concurrency,
        direct_io: !args.no_direct_io,
        compression: compression(cx.g)?,
        pack_size_mib: cx.g.pack_size,
        // Only whether it was given: the file is read once the request passed its checks.
        changed_ranges: args.changed_ranges.as_ref().map(|_| Vec::new()),
        lock: cx.lock_options(),
    })
}

/// The source's totals for the status: a volume's size, or a scan of the paths beside the
/// backup (as restic's); unknown for stdin.
fn source_totals(plan: &BackupPlan, cancel: &mover::Cancel) -> Arc<Totals> {
    match plan {
        BackupPlan::Volume {
            source: ops::block::VolumeSource::Path(p),
            ..
        } => {
            let size = std::fs::File::open(p)
                .and_then(|mut f| mover::fs::block::volume_size(&mut f))
                .ok();
            Arc::new(size.map_or_else(Totals::default, |s| Totals::known(1, s)))
        }
        BackupPlan::Volume { .. } => Arc::new(Totals::default()),
        BackupPlan::Tree(options) => {
            let totals = Arc::new(Totals::default());
            let (found, roots, cancel) =
                (Arc::clone(&totals), options.paths.clone(), cancel.clone());
            tokio::task::spawn_blocking(move || scan_totals(&roots, &found, &cancel));
            totals
        }
    }
}
