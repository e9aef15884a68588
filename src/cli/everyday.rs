//! Flags of the everyday commands beyond backup and restore: tag, list, generate and stats, with
//! restic's names and value formats.

use super::FilterArgs;
use clap::{Args, ValueEnum};
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct TagArgs {
    /// Snapshots to change (id prefixes or `latest`); every snapshot the filters select
    /// when none is given
    pub snapshots: Vec<String>,
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Replace the tags with these, comma-separated (repeatable; `--set ""` removes all)
    #[arg(long = "set", value_name = "TAGS")]
    pub set: Vec<String>,
    /// Add these tags, comma-separated (repeatable)
    #[arg(long = "add", value_name = "TAGS")]
    pub add: Vec<String>,
    /// Remove these tags, comma-separated (repeatable)
    #[arg(long = "remove", value_name = "TAGS")]
    pub remove: Vec<String>,
}

/// What `list` lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ListKind {
    Blobs,
    Packs,
    Index,
    Snapshots,
    Keys,
    Locks,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// blobs, packs, index, snapshots, keys or locks
    pub kind: ListKind,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("what").required(true).multiple(true)))]
pub struct GenerateArgs {
    /// Write the bash completion script to this file (`-` for stdout)
    #[arg(long = "bash-completion", value_name = "FILE", group = "what")]
    pub bash_completion: Option<PathBuf>,
    /// Write the zsh completion script to this file (`-` for stdout)
    #[arg(long = "zsh-completion", value_name = "FILE", group = "what")]
    pub zsh_completion: Option<PathBuf>,
    /// Write the fish completion script to this file (`-` for stdout)
    #[arg(long = "fish-completion", value_name = "FILE", group = "what")]
    pub fish_completion: Option<PathBuf>,
    /// Write man pages (mover.1 and one per command) into this directory
    #[arg(long = "man", value_name = "DIR", group = "what")]
    pub man: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Snapshots to count (id prefixes or `latest`); every snapshot the filters select when
    /// none is given
    pub snapshots: Vec<String>,
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Counting mode: restore-size (default), files-by-contents, blobs-per-file or raw-data
    #[arg(long = "mode", value_name = "MODE", default_value = "restore-size")]
    pub mode: String,
}
