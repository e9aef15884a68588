//! Flags of the Kubernetes commands: `crds`, `controller`, and the hidden `job` that runs
//! inside a mover Job.

use clap::{Args, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct ControllerArgs {
    /// Image of the mover Jobs (normally the controller's own)
    #[arg(
        long,
        env = "MOVER_IMAGE",
        default_value = "ghcr.io/mover-dev/mover:latest"
    )]
    pub image: String,
    /// Watch only this namespace (all namespaces when unset)
    #[arg(long, env = "MOVER_WATCH_NAMESPACE")]
    pub namespace: Option<String>,
    /// Address of /metrics, /healthz and /readyz
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub metrics_addr: String,
    /// Act only while holding the leader Lease (off: this replica always acts)
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_elect: bool,
    /// Namespace of the leader Lease (the pod's namespace by default)
    #[arg(long, env = "POD_NAMESPACE", default_value = "mover-system")]
    pub lease_namespace: String,
    #[arg(long, default_value = "mover-controller")]
    pub lease_name: String,
    /// Watch the metadata of the Secrets that Repositories name, so a fixed password is
    /// probed at once (needs list and watch on Secrets: deploy/controller-secrets.yaml);
    /// without it a Failed Repository is probed again on a backoff of 30 s up to 10 minutes
    #[arg(long, env = "MOVER_WATCH_SECRETS")]
    pub watch_secrets: bool,
    /// Also act as Velero's data mover for DataUploads and DataDownloads in this namespace
    /// (Velero's own, normally `velero`); off when unset
    #[arg(long, env = "MOVER_VELERO_NAMESPACE")]
    pub velero_namespace: Option<String>,
    /// The `spec.datamover` of the Velero operations this controller carries out
    #[arg(long, default_value = "mover")]
    pub velero_datamover: String,
    /// Secret in Velero's namespace whose RESTIC_PASSWORD encrypts the repositories
    #[arg(long, default_value = "mover-velero-repository")]
    pub velero_password_secret: String,
    /// How often all Repositories of BSLs are swept for snapshots of deleted Velero backups
    /// (a Go duration; deletions Velero requests are swept at once)
    #[arg(long, default_value = "1h")]
    pub velero_gc_interval: String,
    /// The periodic sweep keeps snapshots younger than this (a Go duration)
    #[arg(long, default_value = "24h")]
    pub velero_gc_grace: String,
}

#[derive(Debug, Args)]
pub struct JobArgs {
    #[command(subcommand)]
    pub op: JobOp,
}

/// Where a Job's volume is.
#[derive(Debug, Args, Clone)]
pub struct JobVolume {
    /// The volume's mount point (a file system claim)
    #[arg(long, conflicts_with = "device")]
    pub dir: Option<PathBuf>,
    /// The volume's device (a block claim)
    #[arg(long)]
    pub device: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum JobOp {
    /// Back the volume up and report to a VolumeBackup
    Backup {
        /// restic host of the snapshot
        #[arg(long)]
        host: String,
        #[command(flatten)]
        volume: JobVolume,
        /// volumebackup/NAME
        target: String,
    },
    /// Pick the snapshot a VolumeRestore restores
    Resolve {
        /// volumerestore/NAME
        target: String,
    },
    /// Restore the snapshot a VolumeRestore selects onto the volume
    Restore {
        #[command(flatten)]
        volume: JobVolume,
        /// volumerestore/NAME
        target: String,
    },
    /// Open (or create) a Repository's repository and report
    Probe {
        /// repository/NAME
        target: String,
    },
    /// Forget the snapshot a VolumeBackup recorded
    Forget {
        /// volumebackup/NAME
        target: String,
    },
    /// Forget the snapshots of Velero backups whose metadata is gone from their BSL
    VeleroGc {
        /// The BSL's prefix as a repository location (`s3:host/bucket/prefix`)
        #[arg(long)]
        bsl: String,
        /// A backup Velero is still writing: never forgotten (repeatable)
        #[arg(long = "keep", value_name = "BACKUP")]
        keep: Vec<String>,
        /// Look only at this backup (repeatable; all when absent)
        #[arg(long = "only", value_name = "BACKUP")]
        only: Vec<String>,
        /// Keep snapshots younger than this (Go duration: 24h, 90m, 0s)
        #[arg(long, default_value = "24h")]
        grace: String,
    },
}
