//! The Kubernetes side: CRD types, the controller's plans and their apply steps, the in-Job
//! status reporter. The only layer that imports kube; it calls `ops` and never the reverse.
//!
//! - `api`: the CRD types (and Velero's and the snapshot API's, as far as mover reads them).
//! - `plans`: one pure plan per kind (`backup`, `restore`, `repository`, `schedule`:
//!   observed objects in, [`controller::apply::Action`]s out), and what they share.
//! - `controller`: the watches, leader election, metrics and the one thin apply step.
//! - `velero`: Velero's DataUploads and DataDownloads, as plans (`velero::plan`) applied by
//!   their own thin step, the BSL mapping and the snapshot sweep.
//! - `job`: what runs inside a mover Job.

pub mod api;
pub mod controller;
pub mod error;
pub mod job;
pub mod names;
pub mod plans;
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
