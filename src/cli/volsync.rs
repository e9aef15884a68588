//! Flags of `mover volsync`: VolSync's restic mover entry point. Everything else comes from
//! the environment VolSync gives the mover Job, as its `entry.sh` reads it.

use clap::Args;

#[derive(Debug, Args)]
pub struct VolsyncArgs {
    /// Steps to run in order: `unlock`, `backup`, `prune` (source) or `restore`
    /// (destination). Configured by DATA_DIR, RESTIC_REPOSITORY, RESTIC_PASSWORD,
    /// FORGET_OPTIONS, RESTORE_AS_OF, SELECT_PREVIOUS, RESTORE_OPTIONS, CUSTOM_CA and the
    /// other variables VolSync sets
    #[arg(
        value_name = "OPERATION",
        num_args = 0..,
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    pub operations: Vec<String>,
}
