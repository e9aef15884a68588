//! The Kubernetes side: CRD types, the controller's plans and their apply steps, the in-Job
//! status reporter. The only layer that imports kube; it calls `ops` and never the reverse.
//!
//! Each kind has a pure plan (`backup`, `restore`, `repository`, `schedule`: observed objects in,
//! [`apply::Action`]s out) and shares one thin apply step (`apply`); Velero's DataUploads and
//! DataDownloads have theirs in `velero::plan`, applied by `velero`'s own thin step. `runner` is what runs
//! inside a mover Job; `controller` wires the watches, leader election and metrics.

pub mod api;
pub mod apply;
pub mod backup;
pub mod controller;
pub mod cron;
pub mod error;
pub mod jobspec;
pub mod leader;
pub mod metrics;
pub mod names;
pub mod repository;
pub mod restore;
pub mod run;
pub mod runner;
pub mod schedule;
pub mod triggers;
pub mod velero;

pub use error::{Error, Result};

/// Chooses rustls's crypto provider for the Kubernetes client: the build links two (ring for
/// kube, aws-lc for the storage SDKs), and rustls then refuses to guess. Idempotent.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A client from `KUBECONFIG` or the pod's in-cluster account.
pub async fn client() -> Result<kube::Client> {
    install_crypto_provider();
    kube::Client::try_default()
        .await
        .map_err(|e| Error::kube("connecting to the Kubernetes API", e))
}
