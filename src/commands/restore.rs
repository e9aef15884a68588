//! `restore`: a snapshot into a directory, or a volume snapshot onto a device.

use super::output::human_bytes;
use super::{Cx, filter};
use crate::cli;
use mover::error::{Error, Result};
use mover::ops;
use mover::progress::Progress;
use std::sync::Arc;

pub async fn restore(cx: &Cx<'_>, args: &cli::RestoreArgs) -> Result<u8> {
    if let Some(device) = &args.target_device {
        return restore_volume(cx, args, device).await;
    }
    let target = args
        .target
        .clone()
        .ok_or_else(|| Error::InvalidInput("restore needs --target or --target-device".into()))?;
    let overwrite: ops::restore::Overwrite = args.overwrite.parse().map_err(Error::InvalidInput)?;
    let as_of = selection_time(args)?;
    let repo = cx.open_with(!args.no_direct_io).await?;
    let summary = {
        let (id, snap) = select(&repo, args, as_of).await?;
        if cx.verbose_output() {
            // restic's line, which VolSync keeps in its status.
            println!(
                "restoring snapshot {} of [{}] at {} by {}@{} to {}",
                id.short(),
                snap.paths.join(" "),
                mover::format::gotime::go_string(&snap.time),
                snap.username,
                snap.hostname,
                target.display()
            );
        }
        let opts = ops::restore::RestoreOptions {
            target: target.clone(),
            includes: args.include.clone(),
            excludes: args.exclude.clone(),
            verify: args.verify,
            direct_io: !args.no_direct_io,
            overwrite,
            delete: args.delete,
            include_xattrs: args.include_xattr.clone(),
            exclude_xattrs: args.exclude_xattr.clone(),
            lock: cx.read_lock_options(),
            ..Default::default()
        };
        let progress = Arc::new(Progress::default());
        ops::restore::restore(&repo, &snap, &opts, progress).await?
    };
    for e in &summary.errors {
        eprintln!("error: {e}");
    }
    if cx.g.json {
        println!(
            "{}",
            serde_json::json!({
                "message_type": "summary",
                "files_restored": summary.files_restored,
                "dirs_restored": summary.dirs_restored,
                "bytes_restored": summary.bytes_restored,
                "files_skipped": summary.files_skipped,
                "files_deleted": summary.files_deleted,
                "errors": summary.errors,
            })
        );
    } else if !cx.g.quiet {
        println!(
            "restored {} files, {} directories, {}",
            summary.files_restored,
            summary.dirs_restored,
            human_bytes(summary.bytes_restored)
        );
        if summary.files_skipped > 0 || summary.files_deleted > 0 {
            println!(
                "skipped {} existing files, deleted {} entries",
                summary.files_skipped, summary.files_deleted
            );
        }
    }
    if summary.errors.is_empty() {
        Ok(0)
    } else {
        Err(Error::Incomplete {
            what: "restore".into(),
            count: summary.errors.len(),
            first: summary.errors[0].to_string(),
        })
    }
}

/// `restore --target-device`: the snapshot's single file onto a device or image file.
pub async fn restore_volume(
    cx: &Cx<'_>,
    args: &cli::RestoreArgs,
    device: &std::path::Path,
) -> Result<u8> {
    let repo = cx.open_with(!args.no_direct_io).await?;
    let summary = {
        let (id, snap) = select(&repo, args, selection_time(args)?).await?;
        if cx.verbose_output() {
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
            lock: cx.read_lock_options(),
            ..Default::default()
        };
        ops::block::restore_volume(&repo, &snap, &opts, Arc::new(Progress::default())).await?
    };
    if cx.g.json {
        super::output::print_json_summary(&summary)?;
    } else if !cx.g.quiet {
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

/// `--as-of` as a time.
fn selection_time(
    args: &cli::RestoreArgs,
) -> Result<Option<chrono::DateTime<chrono::FixedOffset>>> {
    args.as_of
        .as_deref()
        .map(|t| {
            mover::format::gotime::parse(t).map_err(|e| {
                Error::InvalidInput(format!("--as-of {t:?} is not an RFC 3339 time: {e}"))
            })
        })
        .transpose()
}

/// The snapshot to restore: by id, or `latest` (at or before `--as-of`, `--previous` more
/// back), narrowed by `--host`, `--tag` and `--path`.
async fn select(
    repo: &mover::repo::Repository,
    args: &cli::RestoreArgs,
    as_of: Option<chrono::DateTime<chrono::FixedOffset>>,
) -> Result<(
    mover::format::SnapshotId,
    mover::format::snapshot::SnapshotFile,
)> {
    let f = filter(&args.filter);
    if as_of.is_none() && args.previous == 0 {
        return repo.find_snapshot(&args.snapshot, &f).await;
    }
    if args.snapshot != "latest" {
        return Err(Error::InvalidInput(
            "--as-of and --previous select from \"latest\", not from a snapshot id".into(),
        ));
    }
    repo.find_latest_as_of(&f, as_of, args.previous).await
}
