//! Command-line flags (clap derive). restic's verbs, flags and environment names, so an
//! existing restic Secret and habits keep working. Only parsing lives here.

mod everyday;
mod k8s;
mod maintenance;
mod volsync;

pub use everyday::*;
pub use k8s::*;
pub use maintenance::*;
pub use volsync::*;

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::time::Duration;

/// A Go duration flag value (`90s`, `5m`, `1h30m`).
fn go_duration(s: &str) -> Result<Duration, String> {
    mover::format::gotime::parse_duration(s).map_err(|e| e.to_string())
}

#[derive(Debug, Parser)]
#[command(
    name = "mover",
    version,
    about = "Back up and restore volumes into restic repositories, natively and fast",
    long_about = None
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalOptions,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Args)]
pub struct GlobalOptions {
    /// Repository location (a path, s3:..., gs:..., azure:...)
    #[arg(short = 'r', long = "repo", env = "RESTIC_REPOSITORY", global = true)]
    pub repo: Option<String>,
    /// File holding the repository location
    #[arg(
        long = "repository-file",
        env = "RESTIC_REPOSITORY_FILE",
        global = true
    )]
    pub repository_file: Option<PathBuf>,
    /// File holding the repository password (RESTIC_PASSWORD is read from the environment)
    #[arg(
        short = 'p',
        long = "password-file",
        env = "RESTIC_PASSWORD_FILE",
        global = true
    )]
    pub password_file: Option<PathBuf>,
    /// Command whose output is the repository password
    #[arg(
        long = "password-command",
        env = "RESTIC_PASSWORD_COMMAND",
        global = true
    )]
    pub password_command: Option<String>,
    /// PEM file with extra CA certificates for TLS to the storage endpoint
    #[arg(
        long = "cacert",
        env = "RESTIC_CACERT",
        global = true,
        value_delimiter = ','
    )]
    pub cacert: Vec<PathBuf>,
    /// Skip TLS certificate verification when connecting to the repository (insecure)
    #[arg(
        long = "insecure-tls",
        env = "MOVER_INSECURE_TLS",
        global = true,
        value_parser = clap::builder::BoolishValueParser::new(),
        default_value_t = false,
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true"
    )]
    pub insecure_tls: bool,
    /// Compression of data blobs: auto, off or max
    #[arg(
        long,
        env = "RESTIC_COMPRESSION",
        global = true,
        default_value = "auto"
    )]
    pub compression: String,
    /// Target pack size in MiB (4 to 128)
    #[arg(long = "pack-size", env = "RESTIC_PACK_SIZE", global = true)]
    pub pack_size: Option<u64>,
    /// Print machine-readable JSON
    #[arg(long, global = true)]
    pub json: bool,
    /// Log lines as `text` (default) or `json` (one object per line, for log collectors)
    #[arg(
        long,
        env = "MOVER_LOG_FORMAT",
        global = true,
        default_value = "text",
        value_parser = ["text", "json"]
    )]
    pub log_format: String,
    /// Print less
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Print more (repeat for debug logs)
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Limit uploads to the repository to this many KiB/s (0: no limit)
    #[arg(
        long = "limit-upload",
        env = "MOVER_LIMIT_UPLOAD",
        global = true,
        default_value_t = 0,
        value_name = "KIB_S"
    )]
    pub limit_upload: u64,
    /// Limit downloads from the repository to this many KiB/s (0: no limit)
    #[arg(
        long = "limit-download",
        env = "MOVER_LIMIT_DOWNLOAD",
        global = true,
        default_value_t = 0,
        value_name = "KIB_S"
    )]
    pub limit_download: u64,
    /// Concurrent storage operations (restic's default for S3 is 5)
    #[arg(long, global = true, default_value_t = 5)]
    pub connections: usize,
    /// Wait this long for a conflicting lock to go before failing with exit code 11 (for
    /// example 5m)
    #[arg(long = "retry-lock", global = true, value_name = "DURATION", value_parser = go_duration, default_value = "0")]
    pub retry_lock: Duration,
    /// Do not lock the repository: read-only commands (snapshots, ls, cat, dump, restore,
    /// stats, list, check) then work on a repository that cannot be written
    #[arg(long = "no-lock", global = true)]
    pub no_lock: bool,
    /// Accepted for restic compatibility: mover keeps no local cache (see README), so the
    /// directory is never written
    #[arg(
        long = "cache-dir",
        env = "RESTIC_CACHE_DIR",
        global = true,
        value_name = "DIR"
    )]
    pub cache_dir: Option<PathBuf>,
    /// Accepted for restic compatibility: mover keeps no local cache
    #[arg(long = "no-cache", global = true)]
    pub no_cache: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a new repository
    Init(InitArgs),
    /// Back up files and directories
    Backup(BackupArgs),
    /// Restore a snapshot into a directory
    Restore(RestoreArgs),
    /// List snapshots
    Snapshots(SnapshotsArgs),
    /// List files in a snapshot
    Ls(LsArgs),
    /// Print repository objects in plain text
    Cat(CatArgs),
    /// Write a file from a snapshot to standard output
    Dump(DumpArgs),
    /// Remove snapshots by policy or by id
    Forget(ForgetArgs),
    /// Remove unreferenced data, repack partly used packs, rewrite the index
    Prune(PruneArgs),
    /// Check the repository for errors
    Check(CheckArgs),
    /// Remove stale locks (or all with --remove-all)
    Unlock(UnlockArgs),
    /// Manage the repository's keys (passwords)
    Key(KeyArgs),
    /// Add, remove or replace the tags of snapshots
    Tag(TagArgs),
    /// List the ids of blobs, packs, index files, snapshots, keys or locks
    List(ListArgs),
    /// Write shell completion scripts and man pages
    Generate(GenerateArgs),
    /// Scan the repository and show basic statistics
    Stats(StatsArgs),
    /// Print version information
    Version,
    /// Print mover's CustomResourceDefinitions (YAML)
    Crds,
    /// Run the Kubernetes controller
    Controller(ControllerArgs),
    /// Run one step of a mover Job and report it into the resource's status
    #[command(hide = true)]
    Job(JobArgs),
    /// Run VolSync's restic mover steps (a drop-in for /mover-restic/entry.sh)
    Volsync(VolsyncArgs),
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Repository format version: 1, 2, latest or stable
    #[arg(long = "repository-version", default_value = "stable")]
    pub repository_version: String,
    /// Chunker recorded for the repository: fastcdc (default) or rabin (restic's)
    #[arg(long, default_value = "fastcdc")]
    pub chunker: String,
}

#[derive(Debug, Args, Default)]
pub struct FilterArgs {
    /// Only consider snapshots of this host (repeatable)
    #[arg(short = 'H', long = "host")]
    pub host: Vec<String>,
    /// Only consider snapshots including this path (repeatable)
    #[arg(long = "path")]
    pub path: Vec<String>,
    /// Only consider snapshots with these tags, comma-separated (repeatable)
    #[arg(long = "tag")]
    pub tag: Vec<String>,
}

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// Files and directories to back up, or one block device (stored as a single file)
    #[arg(required_unless_present = "stdin")]
    pub paths: Vec<PathBuf>,
    /// Read the data to back up from standard input
    #[arg(long, conflicts_with = "paths")]
    pub stdin: bool,
    /// File name for the data read from standard input
    #[arg(long = "stdin-filename", default_value = "stdin")]
    pub stdin_filename: String,
    /// Treat a regular file given as the path as a volume image (stored like a block
    /// device: one file, holes not read)
    #[arg(long)]
    pub image: bool,
    /// Host name recorded in the snapshot (default: this machine's)
    #[arg(short = 'H', long, env = "RESTIC_HOST")]
    pub host: Option<String>,
    /// Tags for the snapshot, comma-separated (repeatable)
    #[arg(long = "tag")]
    pub tag: Vec<String>,
    /// Exclude paths matching this pattern (repeatable)
    #[arg(short = 'e', long = "exclude")]
    pub exclude: Vec<String>,
    /// Read exclude patterns from a file (repeatable)
    #[arg(long = "exclude-file")]
    pub exclude_file: Vec<PathBuf>,
    /// Do not cross file system boundaries
    #[arg(short = 'x', long = "one-file-system")]
    pub one_file_system: bool,
    /// Store real access times instead of the modification time
    #[arg(long = "with-atime")]
    pub with_atime: bool,
    /// Chunker for this run: rabin (restic's, deduplicates with restic's data) or fastcdc
    /// (default: what the repository records; rabin for repositories restic created)
    #[arg(long)]
    pub chunker: Option<String>,
    /// Snapshot to compare against (default: the latest with the same host and paths)
    #[arg(long)]
    pub parent: Option<String>,
    /// Changed block tracking for a block device or --image: the byte ranges that changed
    /// since the --parent snapshot, one "OFFSET LENGTH" pair per line (from LVM's
    /// thin_delta, a CSI SnapshotMetadata stream, ...; "-" reads stdin). Only those ranges,
    /// and what chunking needs around them, are read
    #[arg(long = "changed-ranges", value_name = "FILE")]
    pub changed_ranges: Option<PathBuf>,
    /// Read every file again, ignoring the parent snapshot
    #[arg(short, long)]
    pub force: bool,
    /// Also require inode and ctime to match before skipping an unchanged file (restic's
    /// rule; off by default because cloned volumes get new inodes and ctimes)
    #[arg(long = "strict-change-detection")]
    pub strict_change_detection: bool,
    /// Files read concurrently (default: 8, or the number of CPUs if higher)
    #[arg(long = "read-concurrency", env = "RESTIC_READ_CONCURRENCY")]
    pub read_concurrency: Option<usize>,
    /// Read files and write local packs through the page cache instead of with O_DIRECT
    #[arg(
        long = "no-direct-io",
        env = "MOVER_NO_DIRECT_IO",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub no_direct_io: bool,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// Snapshot id (prefix) or "latest"
    pub snapshot: String,
    /// Directory to restore into
    #[arg(short, long, required_unless_present = "target_device")]
    pub target: Option<PathBuf>,
    /// Write the snapshot's single file (a volume) onto this block device or image file
    #[arg(long = "target-device", conflicts_with = "target")]
    pub target_device: Option<PathBuf>,
    /// With --target-device: the device already reads zeros, so zero regions are skipped
    #[arg(long = "zeroed-target", requires = "target_device")]
    pub zeroed_target: bool,
    /// Only restore paths matching this pattern (repeatable)
    #[arg(short = 'i', long = "include")]
    pub include: Vec<String>,
    /// Do not restore paths matching this pattern (repeatable)
    #[arg(short = 'e', long = "exclude")]
    pub exclude: Vec<String>,
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Re-read restored files and check their content
    #[arg(long)]
    pub verify: bool,
    /// Remove files and directories in the target that the snapshot does not have
    #[arg(long)]
    pub delete: bool,
    /// Only restore extended attributes matching this pattern (repeatable)
    #[arg(long = "include-xattr", value_name = "PATTERN")]
    pub include_xattr: Vec<String>,
    /// Do not restore extended attributes matching this pattern (repeatable)
    #[arg(long = "exclude-xattr", value_name = "PATTERN")]
    pub exclude_xattr: Vec<String>,
    /// What to do with files that exist: always (rewrite what differs), if-changed (skip
    /// files whose size and mtime match), if-newer, never
    #[arg(long, default_value = "always")]
    pub overwrite: String,
    /// With "latest": the latest snapshot taken at or before this time (RFC 3339)
    #[arg(long = "as-of", value_name = "TIME")]
    pub as_of: Option<String>,
    /// With "latest": step back this many snapshots more
    #[arg(long, default_value_t = 0)]
    pub previous: usize,
    /// Write files and read local packs through the page cache instead of with O_DIRECT
    #[arg(
        long = "no-direct-io",
        env = "MOVER_NO_DIRECT_IO",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub no_direct_io: bool,
}

#[derive(Debug, Args)]
pub struct SnapshotsArgs {
    /// Only these snapshots (id prefixes or "latest")
    pub ids: Vec<String>,
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Only the last N snapshots of each group
    #[arg(long, value_name = "N")]
    pub latest: Option<usize>,
    /// Group snapshots by host, paths and/or tags, comma-separated
    #[arg(short = 'g', long = "group-by", default_value = "")]
    pub group_by: String,
    /// Use a compact table
    #[arg(short = 'c', long)]
    pub compact: bool,
}

#[derive(Debug, Args)]
pub struct LsArgs {
    /// Snapshot id (prefix) or "latest"
    pub snapshot: String,
    /// Only list below this directory
    pub dir: Option<String>,
    /// Long listing (mode, owner, size, time)
    #[arg(short, long)]
    pub long: bool,
    #[command(flatten)]
    pub filter: FilterArgs,
}

#[derive(Debug, Args)]
pub struct CatArgs {
    /// config, masterkey, snapshot, index, key, lock, blob or pack
    pub object: String,
    /// Object id (prefix) where the object type needs one
    pub id: Option<String>,
}

#[derive(Debug, Args)]
pub struct DumpArgs {
    /// Snapshot id (prefix) or "latest"
    pub snapshot: String,
    /// Path of the file inside the snapshot
    pub file: String,
    #[command(flatten)]
    pub filter: FilterArgs,
}
