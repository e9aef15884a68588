//! `restore`: a snapshot into a directory, or a volume snapshot onto a device.

use super::output::human_bytes;
use super::{Cx, filter};
use crate::cli;
use mover::error::{Error, Result};
use mover::ops;
use mover::progress::Progress;
use mover::repo::lock::{self, LockMode};
use std::sync::Arc;

pub async fn restore(cx: &Cx<'_>, args: &cli::RestoreArgs) -> Result<u8> {
    if let Some(device) = &args.target_device {
        return restore_volume(cx, args, device).await;
    }
    let target = args
        .target
        .clone()
        .ok_or_else(|| Error::InvalidInput("restore needs --target or --target-device".into()))?;
    let repo = cx.open_with(!args.no_direct_io).await?;
    let work = async {
        let (id, snap) = repo
            .find_snapshot(&args.snapshot, &filter(&args.filter))
            .await?;
        if cx.verbose_output() {
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
    let summary =
        lock::while_locked_loading_index(&repo, LockMode::Shared, &cx.lock_options(), work).await?;
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
pub async fn restore_volume(
    cx: &Cx<'_>,
    args: &cli::RestoreArgs,
    device: &std::path::Path,
) -> Result<u8> {
    let repo = cx.open_with(!args.no_direct_io).await?;
    let work = async {
        let (id, snap) = repo
            .find_snapshot(&args.snapshot, &filter(&args.filter))
            .await?;
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
            ..Default::default()
        };
        ops::block::restore_volume(&repo, &snap, &opts, Arc::new(Progress::default())).await
    };
    let summary =
        lock::while_locked_loading_index(&repo, LockMode::Shared, &cx.lock_options(), work).await?;
    if cx.g.json {
        let mut v = serde_json::to_value(&summary).map_err(|e| Error::Other(e.to_string()))?;
        if let Some(o) = v.as_object_mut() {
            o.insert("message_type".into(), "summary".into());
        }
        println!("{v}");
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
