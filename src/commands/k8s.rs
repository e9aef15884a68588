//! `crds`, `controller` and the hidden `job`: thin maps from flags onto `mover::k8s`.

use super::Cx;
use crate::cli::{self, JobOp};
use mover::error::{Error, Result};
use mover::k8s;
use mover::k8s::job::runner::{self, Reporter, RunContext, Target, Volume};

pub fn crds() -> Result<u8> {
    let yaml = k8s::api::crds_yaml()
        .map_err(|e| Error::Internal(format!("rendering the CRDs as YAML: {e}")))?;
    print!("{yaml}");
    Ok(0)
}

/// Maps a Kubernetes-layer error onto the engine's, keeping its class for the exit code.
fn engine_error(e: k8s::Error) -> Error {
    match e {
        k8s::Error::Engine(e) => e,
        k8s::Error::Invalid(m) => Error::InvalidInput(m),
        other => Error::Service {
            class: other.class(),
            detail: other.chain_string(),
        },
    }
}

fn go_duration(flag: &str, value: &str) -> Result<std::time::Duration> {
    k8s::velero::parse_go_duration(value).ok_or_else(|| {
        Error::InvalidInput(format!(
            "{flag} {value:?} is not a duration such as 24h or 90m"
        ))
    })
}

pub async fn controller(cx: &Cx<'_>, args: &cli::ControllerArgs) -> Result<u8> {
    let gc = k8s::velero::gc::GcOptions {
        interval: go_duration("--velero-gc-interval", &args.velero_gc_interval)?,
        grace: go_duration("--velero-gc-grace", &args.velero_gc_grace)?,
    };
    let opts = k8s::controller::ControllerOptions {
        image: args.image.clone(),
        namespace: args.namespace.clone(),
        metrics_addr: args.metrics_addr.clone(),
        leader_election: args.leader_elect,
        lease_namespace: args.lease_namespace.clone(),
        lease_name: args.lease_name.clone(),
        watch_secrets: args.watch_secrets,
        velero: args
            .velero_namespace
            .clone()
            .map(|namespace| mover::k8s::velero::VeleroOptions {
                namespace,
                datamover: args.velero_datamover.clone(),
                password_secret: args.velero_password_secret.clone(),
                gc,
            }),
    };
    k8s::controller::run(opts, cx.cancel.clone())
        .await
        .map_err(engine_error)?;
    Ok(0)
}

fn volume(v: &cli::JobVolume) -> Result<Volume> {
    match (&v.dir, &v.device) {
        (Some(d), None) => Ok(Volume::Directory(d.clone())),
        (None, Some(d)) => Ok(Volume::Device(d.clone())),
        _ => Err(Error::InvalidInput(
            "give the volume as --dir PATH or --device PATH".into(),
        )),
    }
}

pub async fn job(cx: &Cx<'_>, args: &cli::JobArgs) -> Result<u8> {
    let target_of = |t: &str| -> Result<Target> { t.parse().map_err(Error::InvalidInput) };
    let run_cx = || -> Result<RunContext> {
        Ok(RunContext {
            storage: cx.storage(true)?,
            password: cx.password()?,
            cancel: cx.cancel.clone(),
            lock: cx.lock_options(),
            pack_size_bytes: super::pack_size_bytes(cx.g)?,
        })
    };
    let connect = |t: Target| async move { Reporter::connect(t).await.map_err(engine_error) };
    match &args.op {
        JobOp::Backup {
            host,
            volume: v,
            target,
        } => {
            let reporter = connect(target_of(target)?).await?;
            runner::backup(&reporter, run_cx()?, volume(v)?, host.clone())
                .await
                .map_err(engine_error)?;
        }
        JobOp::Resolve { target } => {
            let reporter = connect(target_of(target)?).await?;
            runner::resolve(&reporter, run_cx()?)
                .await
                .map_err(engine_error)?;
        }
        JobOp::Restore { volume: v, target } => {
            let reporter = connect(target_of(target)?).await?;
            runner::restore(&reporter, run_cx()?, volume(v)?)
                .await
                .map_err(engine_error)?;
        }
        JobOp::Probe { target } => {
            let reporter = connect(target_of(target)?).await?;
            let r = runner::probe(&reporter, run_cx()?)
                .await
                .map_err(engine_error)?;
            println!(
                "repository {} opened{}, {} snapshots",
                r.repository_id.unwrap_or_default(),
                if r.initialized { " (created)" } else { "" },
                r.snapshot_count.unwrap_or(0)
            );
        }
        JobOp::Forget { target } => {
            let reporter = connect(target_of(target)?).await?;
            match runner::forget_recorded(&reporter, run_cx()?)
                .await
                .map_err(engine_error)?
            {
                Some(id) => println!("removed snapshot {}", id.short()),
                None => println!("no snapshot to remove"),
            }
        }
        JobOp::VeleroGc {
            bsl,
            keep,
            only,
            grace,
        } => {
            let grace = go_duration("--grace", grace)?;
            let opts = k8s::velero::sweep::SweepOptions {
                keep: keep.iter().cloned().collect(),
                only: only.iter().cloned().collect(),
                grace,
                lock: cx.lock_options(),
            };
            let repo = match cx.open().await {
                Ok(r) => r,
                Err(Error::RepositoryNotFound { .. }) => {
                    println!("no repository yet: nothing to forget");
                    return Ok(0);
                }
                Err(e) => return Err(e),
            };
            let bsl = cx.storage_at(bsl, false)?;
            let s = k8s::velero::sweep::sweep(&repo, &bsl, &opts)
                .await
                .map_err(engine_error)?;
            for (backup, n) in &s.gone {
                println!("Velero backup {backup} is gone: forgetting its {n} snapshot(s)");
            }
            println!(
                "removed {} snapshot(s) of {} deleted Velero backup(s); {} backup(s) still in the BSL",
                s.removed.len(),
                s.gone.len(),
                s.present
            );
        }
    }
    Ok(0)
}
