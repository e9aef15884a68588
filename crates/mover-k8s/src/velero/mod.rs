//! Velero's third-party data mover contract (`spec.datamover: mover`, ../shared/k8s/velero.md
//! in the design notes): DataUploads and DataDownloads in Velero's namespace whose `datamover`
//! is this controller's name are carried out with mover's own runs, and every other one is
//! never written.
//!
//! A DataUpload: New → Accepted (the BackupStorageLocation is Available and writable) →
//! the CSI snapshot Velero took is moved into Velero's namespace (its content kept, a static
//! content and VolumeSnapshot made there, the source pair deleted, as Velero's own mover
//! does) → Prepared (a VolumeBackup of that VolumeSnapshot into the Repository of
//! (BSL, source namespace)) → InProgress with the run's byte progress → Completed with
//! `snapshotID`, `progress.totalBytes` and `completionTimestamp` in one merge patch, after
//! the temporary objects went. A DataDownload: Accepted → a VolumeRestore of `snapshotID`
//! into a new claim → the claim's volume is handed to the target claim (reclaim policy
//! Retain, restore claim deleted, target's `volumeName` and the volume's `claimRef` set, the
//! target's selector labels copied) → Completed once the target is Bound.
//!
//! Velero's CRDs have no status subresource: status is written with merge patches of the
//! main resource that hold only `status`, so Velero's `spec.cancel` is never overwritten.
//! Cancel is honoured in every phase that is not final.

pub mod bsl;
pub mod gc;
pub mod plan;
mod reconcile;
pub mod sweep;

pub use plan::RECHECK;
pub use reconcile::{reconcile_download, reconcile_upload};

use crate::api::Repository;
use crate::names;
use bsl::{BslCa, BslRepository};
use serde_json::json;
use std::collections::BTreeMap;
use std::time::Duration;

/// How the Velero side is configured.
#[derive(Debug, Clone)]
pub struct VeleroOptions {
    /// Velero's namespace, where its DataUploads, DataDownloads and BSLs are.
    pub namespace: String,
    /// The `spec.datamover` this controller answers to.
    pub datamover: String,
    /// A Secret in Velero's namespace with the repositories' `RESTIC_PASSWORD`.
    pub password_secret: String,
    /// mover's retention of Velero's snapshots (`gc`).
    pub gc: gc::GcOptions,
}

/// Velero's duration strings (`10m0s`, `1h30m`, `45s`); `None` when unreadable.
pub fn parse_go_duration(s: &str) -> Option<Duration> {
    let mut total = 0f64;
    let mut num = String::new();
    let mut chars = s.trim().chars().peekable();
    if s.trim().is_empty() {
        return None;
    }
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() || c == '.' {
            num.push(c);
            continue;
        }
        let mut unit = c.to_string();
        if c == 'm' && chars.peek() == Some(&'s') {
            unit.push(chars.next()?);
        }
        let n: f64 = num.parse().ok()?;
        num.clear();
        total += n * match unit.as_str() {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 0.001,
            _ => return None,
        };
    }
    num.is_empty().then(|| Duration::from_secs_f64(total))
}

/// The name of the Repository that holds `source_namespace`'s volumes in BSL `bsl`.
pub fn repository_name(bsl: &str, source_namespace: &str) -> String {
    names::object_name("velero", &format!("{bsl}-{source_namespace}"))
}

/// The ConfigMap holding an inline `objectStorage.caCert` for Repository `repository`: a CA
/// certificate is public, and a ConfigMap is what a Job mounts it from.
pub fn ca_config_map_name(repository: &str) -> String {
    names::object_name("ca", repository)
}

/// The key of the CA PEM in [`ca_config_map_name`].
pub const CA_CONFIG_MAP_KEY: &str = "ca.crt";

/// The Repository for a mapped BSL: the password from `password_secret`, the location and
/// region as plain env, the BSL's credential Secret as the AWS credentials file, the CA from
/// the BSL's `caCertRef` Secret or from the ConfigMap [`ca_config_map_name`] that holds an
/// inline `caCert`.
pub fn repository_object(
    name: &str,
    bsl: &str,
    loc: &BslRepository,
    password_secret: &str,
) -> std::result::Result<Repository, String> {
    let mut env: BTreeMap<String, String> = loc.job_env().into_iter().collect();
    // The Job mounts the file itself (jobspec), at its own path.
    env.remove("AWS_SHARED_CREDENTIALS_FILE");
    let ca = match &loc.ca {
        None => None,
        Some(BslCa::SecretKey { name, key }) => Some(json!({"secretName": name, "key": key})),
        Some(BslCa::Inline(_)) => Some(json!({
            "configMapName": ca_config_map_name(name), "key": CA_CONFIG_MAP_KEY
        })),
    };
    let mut spec = json!({
        "secretRef": {"name": password_secret},
        "env": env,
        "credentialsFile": {"name": loc.credential.name, "key": loc.credential.key},
    });
    if let Some(ca) = ca {
        spec["customCa"] = ca;
    }
    serde_json::from_value(json!({
        "apiVersion": "mover.dev/v1alpha1", "kind": "Repository",
        "metadata": {"name": name, "namespace": loc.namespace,
            "labels": {names::MANAGED_BY: "mover", gc::BSL_LABEL: names::label_value(bsl)},
            "annotations": {gc::BSL_ROOT: loc.root}},
        "spec": spec,
    }))
    .map_err(|e| format!("building Repository {name}: {e}"))
}

/// Whether this controller carries out operations for `datamover`.
pub fn is_ours(datamover: Option<&str>, opts: &VeleroOptions) -> bool {
    datamover == Some(opts.datamover.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::ResourceExt;

    #[test]
    fn velero_durations_read_as_go_prints_them() {
        assert_eq!(parse_go_duration("10m0s"), Some(Duration::from_secs(600)));
        assert_eq!(
            parse_go_duration("4h0m0s"),
            Some(Duration::from_secs(4 * 3600))
        );
        assert_eq!(parse_go_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_go_duration("5s"), Some(Duration::from_secs(5)));
        assert_eq!(parse_go_duration("0s"), Some(Duration::ZERO));
        assert_eq!(parse_go_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_go_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_go_duration(""), None);
        assert_eq!(parse_go_duration("10"), None);
        assert_eq!(parse_go_duration("3d"), None);
    }

    fn opts() -> VeleroOptions {
        VeleroOptions {
            namespace: "velero".into(),
            datamover: "mover".into(),
            password_secret: "mover-velero".into(),
            gc: gc::GcOptions {
                interval: Duration::from_secs(3600),
                grace: Duration::from_secs(86_400),
            },
        }
    }

    #[test]
    fn only_operations_naming_this_mover_are_ours() {
        let o = opts();
        assert!(is_ours(Some("mover"), &o));
        for other in [
            None,
            Some(""),
            Some("velero"),
            Some("velero-fs"),
            Some("kubevirt"),
        ] {
            assert!(!is_ours(other, &o), "{other:?}");
        }
    }

    #[test]
    fn a_repository_gets_location_as_env_and_the_credential_as_a_file() {
        let loc = BslRepository {
            url: "s3:http://127.0.0.1:9000/bucket/velero/plugins/mover/app".into(),
            root: "s3:http://127.0.0.1:9000/bucket/velero".into(),
            region: Some("minio".into()),
            path_style: true,
            insecure_skip_tls_verify: false,
            ca: Some(BslCa::SecretKey {
                name: "ca".into(),
                key: "ca.crt".into(),
            }),
            credential: bsl::BslCredential {
                name: "cloud-credentials".into(),
                key: "cloud".into(),
            },
            profile: "default".into(),
            namespace: "velero".into(),
        };
        let repo =
            repository_object("velero-default-app", "default", &loc, "mover-velero").unwrap();
        assert_eq!(repo.spec.secret_ref.name, "mover-velero");
        assert_eq!(repo.annotations().get(gc::BSL_ROOT), Some(&loc.root));
        assert!(repo.labels().contains_key(gc::BSL_LABEL));
        assert_eq!(
            repo.spec.env.get("RESTIC_REPOSITORY").map(String::as_str),
            Some(loc.url.as_str())
        );
        assert_eq!(
            repo.spec.env.get("AWS_DEFAULT_REGION").map(String::as_str),
            Some("minio")
        );
        assert!(!repo.spec.env.contains_key("AWS_SHARED_CREDENTIALS_FILE"));
        let cred = repo.spec.credentials_file.unwrap();
        assert_eq!(
            (cred.name.as_str(), cred.key.as_str()),
            ("cloud-credentials", "cloud")
        );
        assert_eq!(
            repo.spec.custom_ca.unwrap().secret_name.as_deref(),
            Some("ca")
        );
        let inline = BslRepository {
            ca: Some(BslCa::Inline("-----BEGIN CERTIFICATE-----".into())),
            ..loc
        };
        let repo = repository_object("r", "default", &inline, "p").unwrap();
        let ca = repo.spec.custom_ca.unwrap();
        assert_eq!(ca.config_map_name, Some(ca_config_map_name("r")));
        assert_eq!((ca.secret_name, ca.key.as_str()), (None, CA_CONFIG_MAP_KEY));
        assert!(!repo.spec.env.contains_key("MOVER_INSECURE_TLS"));
        let insecure = BslRepository {
            insecure_skip_tls_verify: true,
            ..inline
        };
        let repo = repository_object("r", "default", &insecure, "p").unwrap();
        assert_eq!(
            repo.spec.env.get("MOVER_INSECURE_TLS").map(String::as_str),
            Some("true")
        );
    }
}
