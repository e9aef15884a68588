//! Leader election with a `coordination.k8s.io/v1` Lease, so two controller replicas never
//! both act. A replica acts only while it holds the Lease; it renews every
//! [`RENEW_EVERY`], and one that cannot renew within the lease duration stops (the
//! Deployment restarts it as a standby).

use crate::error::{Error, Result};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Client;
use kube::api::Api;
use std::time::Duration;

pub const LEASE_SECONDS: i32 = 15;
pub const RENEW_EVERY: Duration = Duration::from_secs(5);

pub struct LeaderElection {
    api: Api<Lease>,
    name: String,
    identity: String,
}

/// Whether `spec` lets `identity` take or keep the Lease at `now`.
pub fn may_hold(spec: &LeaseSpec, identity: &str, now: jiff::Timestamp) -> bool {
    let holder = spec.holder_identity.as_deref().unwrap_or("");
    if holder.is_empty() || holder == identity {
        return true;
    }
    let Some(renewed) = &spec.renew_time else {
        return true;
    };
    let duration = i64::from(spec.lease_duration_seconds.unwrap_or(LEASE_SECONDS));
    now.duration_since(renewed.0).as_secs() > duration
}

impl LeaderElection {
    pub fn new(client: Client, namespace: &str, name: &str, identity: &str) -> LeaderElection {
        LeaderElection {
            api: Api::namespaced(client, namespace),
            name: name.to_string(),
            identity: identity.to_string(),
        }
    }

    /// Takes or renews the Lease; `Ok(false)` when another live replica holds it.
    pub async fn try_acquire(&self) -> Result<bool> {
        let now = jiff::Timestamp::now();
        let what = format!("taking Lease {}", self.name);
        let existing = self
            .api
            .get_opt(&self.name)
            .await
            .map_err(|e| Error::kube(&what, e))?;
        let Some(mut lease) = existing else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(LEASE_SECONDS),
                    acquire_time: Some(MicroTime(now)),
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            return match self
                .api
                .create(&crate::controller::apply::post_params(), &lease)
                .await
            {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(Error::kube(&what, e)),
            };
        };
        let mut spec = lease.spec.clone().unwrap_or_default();
        if !may_hold(&spec, &self.identity, now) {
            return Ok(false);
        }
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            spec.holder_identity = Some(self.identity.clone());
            spec.acquire_time = Some(MicroTime(now));
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        spec.renew_time = Some(MicroTime(now));
        spec.lease_duration_seconds = Some(LEASE_SECONDS);
        lease.spec = Some(spec);
        // The resourceVersion in `lease` makes the replace fail if another replica wrote
        // the Lease since we read it.
        match self
            .api
            .replace(&self.name, &crate::controller::apply::post_params(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(Error::kube(&what, e)),
        }
    }

    /// Gives the Lease up when this replica holds it (a stopping controller), so that a
    /// standby takes over at once instead of after [`LEASE_SECONDS`]. A Lease another
    /// replica holds, or one that cannot be read, is left alone.
    pub async fn release(&self) -> Result<bool> {
        let what = format!("releasing Lease {}", self.name);
        let Some(mut lease) = self
            .api
            .get_opt(&self.name)
            .await
            .map_err(|e| Error::kube(&what, e))?
        else {
            return Ok(false);
        };
        let mut spec = lease.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(false);
        }
        spec.holder_identity = None;
        spec.renew_time = None;
        lease.spec = Some(spec);
        match self
            .api
            .replace(&self.name, &crate::controller::apply::post_params(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(Error::kube(&what, e)),
        }
    }

    /// Waits until this replica holds the Lease.
    pub async fn acquire(&self) {
        loop {
            match self.try_acquire().await {
                Ok(true) => return,
                Ok(false) => {}
                Err(e) => tracing::warn!("leader election: {}", e.chain_string()),
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }

    /// Renews the Lease until it cannot: returns when leadership is lost.
    pub async fn keep(&self) {
        let mut last_ok = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(RENEW_EVERY).await;
            match self.try_acquire().await {
                Ok(true) => last_ok = tokio::time::Instant::now(),
                Ok(false) => return,
                Err(e) => {
                    tracing::warn!("renewing the Lease: {}", e.chain_string());
                    if last_ok.elapsed() >= Duration::from_secs(LEASE_SECONDS as u64) {
                        return;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_live_holder_keeps_the_lease_and_a_stale_one_loses_it() {
        let t0: jiff::Timestamp = "2026-12-01T00:00:00Z".parse().unwrap();
        let spec = LeaseSpec {
            holder_identity: Some("a".into()),
            renew_time: Some(MicroTime(t0)),
            lease_duration_seconds: Some(15),
            ..Default::default()
        };
        let at = |s: i64| t0.checked_add(jiff::SignedDuration::from_secs(s)).unwrap();
        assert!(may_hold(&spec, "a", at(1)));
        assert!(!may_hold(&spec, "b", at(10)));
        assert!(may_hold(&spec, "b", at(16)));
        assert!(may_hold(&LeaseSpec::default(), "b", at(0)));
    }
}
