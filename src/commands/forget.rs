//! `forget`: map restic's `--keep-*` flags to a policy, print restic's tables or JSON, and
//! run prune afterwards with `--prune`.

use super::Cx;
use crate::cli;
use mover::error::{Error, Result};
use mover::ops;
use mover::ops::forget::policy::{KeepPolicy, KeepRequest};
use mover::repo::SnapshotFilter;

pub async fn forget(cx: &Cx<'_>, args: &cli::ForgetArgs) -> Result<u8> {
    let opts = options(cx, args)?;
    // Flag errors come before any repository access, as restic's do.
    let prune_opts = if args.prune {
        Some(super::prune::options(
            cx,
            &args.prune_opts,
            args.dry_run,
            Vec::new(),
        )?)
    } else {
        None
    };
    let repo = cx.open().await?;
    let summary = ops::forget::forget(&repo, &opts).await?;
    if cx.g.json {
        if !summary.groups.is_empty() {
            println!("{}", ops::forget::to_json(&summary.groups));
        }
    } else if !cx.g.quiet {
        if args.snapshots.is_empty() {
            println!("Applying Policy: {}", opts.policy);
        }
        for g in &summary.groups {
            if let Some(h) = g.key.header() {
                println!("{h}");
            }
            let table = |list: &[_], reasons: Option<&[Vec<String>]>| {
                ops::snapshots::format_table(
                    list,
                    ops::snapshots::TableOptions {
                        reasons,
                        compact: args.compact,
                    },
                )
            };
            if !g.keep.is_empty() {
                println!("keep {} snapshots:", g.keep.len());
                print!("{}", table(&g.keep, Some(&g.reasons)));
                println!();
            }
            if !g.remove.is_empty() {
                println!("remove {} snapshots:", g.remove.len());
                print!("{}", table(&g.remove, None));
                println!();
            }
        }
        if !summary.removed.is_empty() {
            let ids: Vec<String> = summary.removed.iter().map(|id| id.short()).collect();
            if summary.dry_run {
                println!(
                    "Would have removed the following snapshots:\n{{{}}}\n",
                    ids.join(" ")
                );
            } else {
                println!("removed {} snapshots: {}", ids.len(), ids.join(" "));
            }
        }
    }
    if let Some(mut prune_opts) = prune_opts {
        if summary.removed.is_empty() {
            return Ok(0);
        }
        if cx.verbose_output() {
            let verb = if summary.dry_run {
                "would be removed, running prune dry run"
            } else {
                "have been removed, running prune"
            };
            println!("{} snapshots {verb}", summary.removed.len());
        }
        if summary.dry_run {
            prune_opts.ignore_snapshots = summary.removed.clone();
        }
        return super::prune::run(cx, &repo, &prune_opts).await;
    }
    Ok(0)
}

fn options(cx: &Cx<'_>, args: &cli::ForgetArgs) -> Result<ops::forget::ForgetOptions> {
    let count = |c: Option<cli::KeepCount>| c.map(|c| c.0);
    let request = KeepRequest {
        last: count(args.keep_last),
        hourly: count(args.keep_hourly),
        daily: count(args.keep_daily),
        weekly: count(args.keep_weekly),
        monthly: count(args.keep_monthly),
        yearly: count(args.keep_yearly),
        within: args.keep_within.clone(),
        within_hourly: args.keep_within_hourly.clone(),
        within_daily: args.keep_within_daily.clone(),
        within_weekly: args.keep_within_weekly.clone(),
        within_monthly: args.keep_within_monthly.clone(),
        within_yearly: args.keep_within_yearly.clone(),
        tags: args.keep_tag.clone(),
    };
    let policy = KeepPolicy::try_from(&request).map_err(Error::InvalidInput)?;
    let group_by = args
        .group_by
        .parse()
        .map_err(|e: String| Error::InvalidInput(format!("--group-by: {e}")))?;
    Ok(ops::forget::ForgetOptions {
        ids: args.snapshots.clone(),
        policy,
        filter: SnapshotFilter {
            hosts: args.host.clone(),
            paths: args.path.clone(),
            tags: args.tag.clone(),
        },
        group_by,
        dry_run: args.dry_run,
        unsafe_allow_remove_all: args.unsafe_allow_remove_all,
        lock: cx.lock_options(),
    })
}
