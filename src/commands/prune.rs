//! `prune`: map restic's flags to [`ops::prune::PruneOptions`] and print restic's statistics.

use super::output::human_bytes;
use super::{Cx, compression, pack_size_bytes};
use crate::cli;
use mover::error::{Error, Result};
use mover::ops;
use mover::ops::prune::plan::{MaxUnused, PruneStats, parse_size};

pub async fn prune(cx: &Cx<'_>, args: &cli::PruneArgs) -> Result<u8> {
    let repo = cx.open().await?;
    let opts = options(cx, &args.limits, args.dry_run, Vec::new())?;
    run(cx, &repo, &opts).await
}

/// [`ops::prune::PruneOptions`] from the flags `prune` and `forget --prune` share.
pub fn options(
    cx: &Cx<'_>,
    limits: &cli::PruneLimits,
    dry_run: bool,
    ignore_snapshots: Vec<mover::format::SnapshotId>,
) -> Result<ops::prune::PruneOptions> {
    let size = |flag: &str, v: &Option<String>| -> Result<Option<u64>> {
        v.as_deref()
            .map(|s| parse_size(s).map_err(|e| Error::InvalidInput(format!("{flag}: {e}"))))
            .transpose()
    };
    Ok(ops::prune::PruneOptions {
        max_unused: MaxUnused::parse(&limits.max_unused).map_err(Error::InvalidInput)?,
        max_repack_bytes: size("--max-repack-size", &limits.max_repack_size)?,
        repack_cacheable_only: limits.repack_cacheable_only,
        repack_small: limits.repack_small,
        repack_uncompressed: limits.repack_uncompressed,
        repack_smaller_than: size("--repack-smaller-than", &limits.repack_smaller_than)?,
        pack_size_bytes: pack_size_bytes(cx.g)?,
        compression: compression(cx.g)?,
        dry_run,
        ignore_snapshots,
        lock: cx.lock_options(),
    })
}

pub async fn run(
    cx: &Cx<'_>,
    repo: &mover::repo::Repository,
    opts: &ops::prune::PruneOptions,
) -> Result<u8> {
    if cx.verbose_output() {
        println!("loading indexes...\nloading all snapshots...\nfinding data that is still in use");
    }
    let summary = ops::prune::prune(repo, opts).await?;
    if cx.g.json {
        super::output::print_json_summary(&summary)?;
    } else if !cx.g.quiet {
        print!("{}", stats_text(&summary.stats, cx.g.verbose > 0));
        if summary.dry_run {
            println!("dry run: nothing was changed");
        } else {
            println!(
                "wrote {} packs and {} index files, removed {} index files and {} packs\ndone",
                summary.packs_written,
                summary.index_files_written,
                summary.index_files_removed,
                summary.packs_deleted
            );
        }
    }
    Ok(0)
}

/// restic's `printPruneStats` (the verbose part with `-v`).
fn stats_text(s: &PruneStats, verbose: bool) -> String {
    let pct = |part: u64, total: u64| {
        if total == 0 {
            "0.00%".to_string()
        } else {
            format!("{:.2}%", part as f64 * 100.0 / total as f64)
        }
    };
    let mut out = String::new();
    let total_blobs = s.blobs_used + s.blobs_unused + s.blobs_duplicate;
    let total_size = s.size_used + s.size_duplicate + s.size_unused + s.size_unreferenced;
    let unused_size = s.size_duplicate + s.size_unused;
    if verbose {
        out += &format!(
            "\nused:         {:>10} blobs / {}\n",
            s.blobs_used,
            human_bytes(s.size_used)
        );
        if s.blobs_duplicate > 0 {
            out += &format!(
                "duplicates:   {:>10} blobs / {}\n",
                s.blobs_duplicate,
                human_bytes(s.size_duplicate)
            );
        }
        out += &format!(
            "unused:       {:>10} blobs / {}\n",
            s.blobs_unused,
            human_bytes(s.size_unused)
        );
        if s.size_unreferenced > 0 {
            out += &format!(
                "unreferenced:                    {}\n",
                human_bytes(s.size_unreferenced)
            );
        }
        out += &format!(
            "total:        {:>10} blobs / {}\n",
            total_blobs,
            human_bytes(total_size)
        );
        out += &format!(
            "unused size: {} of total size\n",
            pct(unused_size, total_size)
        );
    }
    let prune_size = s.size_remove + s.size_repack_remove + s.size_unreferenced;
    out += &format!(
        "\nto repack:    {:>10} blobs / {}\n",
        s.blobs_repack,
        human_bytes(s.size_repack)
    );
    out += &format!(
        "this removes: {:>10} blobs / {}\n",
        s.blobs_repack_remove,
        human_bytes(s.size_repack_remove)
    );
    out += &format!(
        "to delete:    {:>10} blobs / {}\n",
        s.blobs_remove,
        human_bytes(s.size_remove + s.size_unreferenced)
    );
    out += &format!(
        "total prune:  {:>10} blobs / {}\n",
        s.blobs_remove + s.blobs_repack_remove,
        human_bytes(prune_size)
    );
    if s.size_uncompressed > 0 {
        out += &format!(
            "not yet compressed:              {}\n",
            human_bytes(s.size_uncompressed)
        );
    }
    let remaining_blobs = total_blobs.saturating_sub(s.blobs_remove + s.blobs_repack_remove);
    let remaining = total_size.saturating_sub(prune_size);
    out += &format!(
        "remaining:    {:>10} blobs / {}\n",
        remaining_blobs,
        human_bytes(remaining)
    );
    let unused_after = unused_size.saturating_sub(s.size_remove + s.size_repack_remove);
    out += &format!(
        "unused size after prune: {} ({} of remaining size)\n\n",
        human_bytes(unused_after),
        pct(unused_after, remaining)
    );
    if verbose {
        out += &format!("totally used packs: {:>10}\n", s.packs_used);
        out += &format!("partly used packs:  {:>10}\n", s.packs_partly_used);
        out += &format!("unused packs:       {:>10}\n\n", s.packs_unused);
        out += &format!("to keep:      {:>10} packs\n", s.packs_keep);
        out += &format!("to repack:    {:>10} packs\n", s.packs_repack);
        out += &format!("to delete:    {:>10} packs\n", s.packs_remove);
        if s.packs_unreferenced > 0 {
            out += &format!(
                "to delete:    {:>10} unreferenced packs\n\n",
                s.packs_unreferenced
            );
        }
    }
    out
}
