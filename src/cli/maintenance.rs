//! Flags of the repository maintenance commands: forget, prune, check, unlock and key.
//! restic's names, short flags and value formats, so scripts written for restic run as they
//! are.

use clap::{Args, Subcommand};
use std::path::PathBuf;

/// A `--keep-*` count: a number or `unlimited` (restic 0.16+).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KeepCount(pub i64);

impl std::str::FromStr for KeepCount {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "unlimited" {
            return Ok(KeepCount(-1));
        }
        match s.parse::<i64>() {
            Ok(n) if n >= 0 => Ok(KeepCount(n)),
            Ok(_) => Err("negative values not allowed, use 'unlimited' instead".into()),
            Err(e) => Err(format!("{s:?} is not a number: {e}")),
        }
    }
}

#[derive(Debug, Args)]
pub struct ForgetArgs {
    /// Snapshots to remove (id prefixes); without them the policy decides
    pub snapshots: Vec<String>,
    /// Keep the last N snapshots ('unlimited' keeps all)
    #[arg(short = 'l', long = "keep-last", value_name = "N")]
    pub keep_last: Option<KeepCount>,
    /// Keep the last N hourly snapshots
    #[arg(short = 'H', long = "keep-hourly", value_name = "N")]
    pub keep_hourly: Option<KeepCount>,
    /// Keep the last N daily snapshots
    #[arg(short = 'd', long = "keep-daily", value_name = "N")]
    pub keep_daily: Option<KeepCount>,
    /// Keep the last N weekly snapshots
    #[arg(short = 'w', long = "keep-weekly", value_name = "N")]
    pub keep_weekly: Option<KeepCount>,
    /// Keep the last N monthly snapshots
    #[arg(short = 'm', long = "keep-monthly", value_name = "N")]
    pub keep_monthly: Option<KeepCount>,
    /// Keep the last N yearly snapshots
    #[arg(short = 'y', long = "keep-yearly", value_name = "N")]
    pub keep_yearly: Option<KeepCount>,
    /// Keep snapshots newer than DURATION (for example 1y5m7d2h) before the latest one
    #[arg(long = "keep-within", value_name = "DURATION")]
    pub keep_within: Option<String>,
    /// Keep hourly snapshots newer than DURATION before the latest one
    #[arg(long = "keep-within-hourly", value_name = "DURATION")]
    pub keep_within_hourly: Option<String>,
    /// Keep daily snapshots newer than DURATION before the latest one
    #[arg(long = "keep-within-daily", value_name = "DURATION")]
    pub keep_within_daily: Option<String>,
    /// Keep weekly snapshots newer than DURATION before the latest one
    #[arg(long = "keep-within-weekly", value_name = "DURATION")]
    pub keep_within_weekly: Option<String>,
    /// Keep monthly snapshots newer than DURATION before the latest one
    #[arg(long = "keep-within-monthly", value_name = "DURATION")]
    pub keep_within_monthly: Option<String>,
    /// Keep yearly snapshots newer than DURATION before the latest one
    #[arg(long = "keep-within-yearly", value_name = "DURATION")]
    pub keep_within_yearly: Option<String>,
    /// Keep snapshots with this comma-separated tag list (repeatable)
    #[arg(long = "keep-tag", value_name = "TAGLIST")]
    pub keep_tag: Vec<String>,
    /// Allow deleting all snapshots of a group (only together with a snapshot filter)
    #[arg(long = "unsafe-allow-remove-all")]
    pub unsafe_allow_remove_all: bool,
    /// Only consider snapshots of this host (repeatable; default $RESTIC_HOST)
    #[arg(long = "host", env = "RESTIC_HOST")]
    pub host: Vec<String>,
    /// Only consider snapshots with these comma-separated tags (repeatable)
    #[arg(long = "tag")]
    pub tag: Vec<String>,
    /// Only consider snapshots including this path (repeatable)
    #[arg(long = "path")]
    pub path: Vec<String>,
    /// Use a compact table
    #[arg(short = 'c', long)]
    pub compact: bool,
    /// Group snapshots by host, paths and/or tags, comma-separated ('' for no grouping)
    #[arg(short = 'g', long = "group-by", default_value = "host,paths")]
    pub group_by: String,
    /// Print what would be removed, remove nothing
    #[arg(short = 'n', long = "dry-run")]
    pub dry_run: bool,
    /// Run prune afterwards when snapshots were removed
    #[arg(long)]
    pub prune: bool,
    #[command(flatten)]
    pub prune_opts: PruneLimits,
}

/// prune's knobs, shared by `prune` and `forget --prune`.
#[derive(Debug, Args, Clone)]
pub struct PruneLimits {
    /// Tolerate this much unused space: a size (5G), a percentage of the used data (5%), or
    /// 'unlimited'
    #[arg(long = "max-unused", default_value = "5%")]
    pub max_unused: String,
    /// Repack at most this much data in one run (for example 20G)
    #[arg(long = "max-repack-size", value_name = "SIZE")]
    pub max_repack_size: Option<String>,
    /// Only repack packs that hold trees
    #[arg(long = "repack-cacheable-only")]
    pub repack_cacheable_only: bool,
    /// Also repack small packs (below 80 % of the pack size)
    #[arg(long = "repack-small")]
    pub repack_small: bool,
    /// Repack packs holding uncompressed data (repository format 2)
    #[arg(long = "repack-uncompressed")]
    pub repack_uncompressed: bool,
    /// Pack files below this size are repacked when there are at least 10 of them
    #[arg(long = "repack-smaller-than", value_name = "SIZE")]
    pub repack_smaller_than: Option<String>,
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Print what would be done, change nothing
    #[arg(short = 'n', long = "dry-run")]
    pub dry_run: bool,
    #[command(flatten)]
    pub limits: PruneLimits,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Read and verify every pack file
    #[arg(long = "read-data", conflicts_with = "read_data_subset")]
    pub read_data: bool,
    /// Read and verify a part of the packs: n/t (the n-th of t groups), x% or a size
    #[arg(long = "read-data-subset", value_name = "SUBSET")]
    pub read_data_subset: Option<String>,
    /// Accepted for restic compatibility; mover keeps no cache to check
    #[arg(long = "with-cache")]
    pub with_cache: bool,
}

#[derive(Debug, Args)]
pub struct UnlockArgs {
    /// Remove every lock, also live ones (only when no other process uses the repository)
    #[arg(long = "remove-all")]
    pub remove_all: bool,
}

#[derive(Debug, Args)]
pub struct KeyArgs {
    #[command(subcommand)]
    pub command: KeyCommand,
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// List the keys (key files) of the repository
    List,
    /// Add a key (password) to the repository
    Add(NewKeyArgs),
    /// Remove a key (not the one in use)
    Remove {
        /// Key id (prefix)
        id: String,
    },
    /// Replace the current key with one for a new password
    Passwd(NewKeyArgs),
}

#[derive(Debug, Args)]
pub struct NewKeyArgs {
    /// File holding the new password (otherwise it is asked for, or read from stdin)
    #[arg(long = "new-password-file")]
    pub new_password_file: Option<PathBuf>,
    /// Add an empty password (insecure)
    #[arg(
        long = "new-insecure-no-password",
        conflicts_with = "new_password_file"
    )]
    pub new_insecure_no_password: bool,
    /// User name recorded in the new key
    #[arg(long)]
    pub user: Option<String>,
    /// Host name recorded in the new key
    #[arg(long)]
    pub host: Option<String>,
}
