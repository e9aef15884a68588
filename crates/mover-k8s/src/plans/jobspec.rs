//! The mover Job and its least-privilege ServiceAccount, built from plain parameters. Pure:
//! the plans of every kind call this; nothing here talks to the API server.
//!
//! The pod is hardened by default (non-root, read-only root filesystem, every capability
//! dropped, seccomp RuntimeDefault); `spec.mover.privileged` runs it as root with the
//! capabilities a restore of ownership needs. The repository Secret reaches the container
//! only by reference (`envFrom`), so no credential is copied into a spec.

use crate::api::common::MoverSpec;
use crate::names;
use k8s_openapi::api::batch::v1::{
    Job, JobSpec, PodFailurePolicy, PodFailurePolicyOnExitCodesRequirement, PodFailurePolicyRule,
};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapVolumeSource, Container, EmptyDirVolumeSource, EnvFromSource, EnvVar,
    EnvVarSource, ObjectFieldSelector, PersistentVolumeClaimVolumeSource, PodSecurityContext,
    PodSpec, PodTemplateSpec, SeccompProfile, SecretEnvSource, SecretVolumeSource, SecurityContext,
    ServiceAccount, Volume, VolumeDevice, VolumeMount,
};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use std::collections::BTreeMap;

/// Where the volume is mounted (filesystem) in the mover container.
pub const DATA_DIR: &str = "/data";
/// Where a block volume appears in the mover container.
pub const DATA_DEVICE: &str = "/dev/mover-data";
/// The unprivileged user the mover runs as by default (distroless's `nonroot`).
pub const NONROOT_UID: i64 = 65532;
/// The CA bundle of `Repository.spec.customCA`, mounted here.
const CA_DIR: &str = "/etc/mover/ca";
/// How long a mover waits for a conflicting repository lock (a prune holds an exclusive
/// one) before it fails, as `restic --retry-lock`.
const RETRY_LOCK: &str = "--retry-lock=10m";
/// Exit codes after which retrying the pod cannot help, as mover (and restic 0.17+) uses
/// them: no repository (10), wrong password (12), stopped (130). A general failure (1) and a
/// held lock (11) may pass, so the pod is retried once. A backup never fails after its
/// snapshot is saved (retention is a warning), so a retry never makes a second snapshot.
pub const TERMINAL_EXIT_CODES: [i32; 3] = [10, 12, 130];

/// How the volume is attached to the mover pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VolumeAttach {
    /// A filesystem claim mounted at [`DATA_DIR`].
    Filesystem { claim: String, read_only: bool },
    /// A block claim attached at [`DATA_DEVICE`].
    Block { claim: String },
    /// No volume (repository probe, forget).
    None,
}

/// A CA bundle key in a Secret or ConfigMap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaSource {
    Secret { name: String, key: String },
    ConfigMap { name: String, key: String },
}

/// How a Job reaches its repository.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepoAccess {
    /// The repository Secret (restic's environment keys), passed as `envFrom`.
    pub secret: String,
    pub ca: Option<CaSource>,
    /// Plain settings (the location, region, profile), set after the Secret's keys so they
    /// win over them.
    pub env: BTreeMap<String, String>,
    /// An AWS shared credentials file (Secret name, key), mounted at [`CREDENTIALS_DIR`]
    /// and named by `AWS_SHARED_CREDENTIALS_FILE`.
    pub credentials_file: Option<(String, String)>,
}

/// Where a Repository's credentials file is mounted.
pub const CREDENTIALS_DIR: &str = "/credentials";

/// Everything that varies between mover Jobs.
#[derive(Debug, Clone)]
pub struct JobParams {
    pub name: String,
    pub namespace: String,
    pub image: String,
    /// Arguments after `mover`.
    pub args: Vec<String>,
    pub repo: RepoAccess,
    pub volume: VolumeAttach,
    pub service_account: String,
    pub mover: MoverSpec,
    pub owner: OwnerReference,
    pub labels: BTreeMap<String, String>,
    /// Pin to this node (a ReadWriteOnce claim in use there).
    pub node_name: Option<String>,
    pub backoff_limit: i32,
}

fn env_field(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The container's security context. `privileged` runs as root with what reading every
/// file and restoring ownership needs, and only capabilities Pod Security `baseline` allows
/// (`DAC_OVERRIDE` reads and searches any file, so `DAC_READ_SEARCH` is not asked for).
fn hardened_container_context(privileged: bool, block: bool) -> SecurityContext {
    // A block device node keeps the host's owner (root, 0660) in the container, so only
    // root opens it; root with every capability dropped can do nothing else a non-root
    // process could not.
    let root = privileged || block;
    let add = privileged.then(|| {
        ["CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "MKNOD"]
            .map(String::from)
            .to_vec()
    });
    SecurityContext {
        run_as_user: root.then_some(0),
        run_as_non_root: Some(!root),
        read_only_root_filesystem: Some(true),
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            add,
        }),
        ..Default::default()
    }
}

fn hardened_pod_context(privileged: bool, block: bool) -> PodSecurityContext {
    let seccomp = Some(SeccompProfile {
        type_: "RuntimeDefault".into(),
        localhost_profile: None,
    });
    if privileged || block {
        return PodSecurityContext {
            run_as_user: Some(0),
            run_as_group: Some(0),
            seccomp_profile: seccomp,
            ..Default::default()
        };
    }
    PodSecurityContext {
        run_as_user: Some(NONROOT_UID),
        run_as_group: Some(NONROOT_UID),
        run_as_non_root: Some(true),
        fs_group: Some(NONROOT_UID),
        seccomp_profile: seccomp,
        ..Default::default()
    }
}

fn meta(p: &JobParams, name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: Some(p.namespace.clone()),
        labels: Some(p.labels.clone()),
        owner_references: Some(vec![p.owner.clone()]),
        ..Default::default()
    }
}

/// The mover Job.
pub fn job(p: &JobParams) -> Job {
    let mut env = vec![
        env_field("POD_NAME", "metadata.name"),
        env_field("POD_NAMESPACE", "metadata.namespace"),
        env_field("NODE_NAME", "spec.nodeName"),
        EnvVar {
            name: "HOME".into(),
            value: Some("/tmp".into()),
            ..Default::default()
        },
    ];
    let mut mounts = vec![VolumeMount {
        name: "tmp".into(),
        mount_path: "/tmp".into(),
        ..Default::default()
    }];
    let mut devices = Vec::new();
    let mut volumes = vec![Volume {
        name: "tmp".into(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Default::default()
    }];
    match &p.volume {
        VolumeAttach::Filesystem { claim, read_only } => {
            mounts.push(VolumeMount {
                name: "data".into(),
                mount_path: DATA_DIR.into(),
                read_only: Some(*read_only),
                ..Default::default()
            });
            volumes.push(claim_volume(claim, *read_only));
        }
        VolumeAttach::Block { claim } => {
            devices.push(VolumeDevice {
                name: "data".into(),
                device_path: DATA_DEVICE.into(),
            });
            volumes.push(claim_volume(claim, false));
        }
        VolumeAttach::None => {}
    }
    if let Some((secret, key)) = &p.repo.credentials_file {
        volumes.push(Volume {
            name: "credentials".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(secret.clone()),
                ..Default::default()
            }),
            ..Default::default()
        });
        mounts.push(VolumeMount {
            name: "credentials".into(),
            mount_path: CREDENTIALS_DIR.into(),
            read_only: Some(true),
            ..Default::default()
        });
        env.push(EnvVar {
            name: "AWS_SHARED_CREDENTIALS_FILE".into(),
            value: Some(format!("{CREDENTIALS_DIR}/{key}")),
            ..Default::default()
        });
    }
    for (name, value) in &p.repo.env {
        env.push(EnvVar {
            name: name.clone(),
            value: Some(value.clone()),
            ..Default::default()
        });
    }
    if let Some(ca) = &p.repo.ca {
        let (volume, key) = match ca {
            CaSource::Secret { name, key } => (
                Volume {
                    name: "ca".into(),
                    secret: Some(SecretVolumeSource {
                        secret_name: Some(name.clone()),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                key,
            ),
            CaSource::ConfigMap { name, key } => (
                Volume {
                    name: "ca".into(),
                    config_map: Some(ConfigMapVolumeSource {
                        name: name.clone(),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                key,
            ),
        };
        volumes.push(volume);
        mounts.push(VolumeMount {
            name: "ca".into(),
            mount_path: CA_DIR.into(),
            read_only: Some(true),
            ..Default::default()
        });
        env.push(EnvVar {
            name: "RESTIC_CACERT".into(),
            value: Some(format!("{CA_DIR}/{key}")),
            ..Default::default()
        });
    }
    let privileged = p.mover.privileged;
    let block = matches!(p.volume, VolumeAttach::Block { .. });
    let container = Container {
        name: "mover".into(),
        image: Some(p.image.clone()),
        command: Some(vec!["mover".into()]),
        args: Some(
            std::iter::once(RETRY_LOCK.to_string())
                .chain(p.args.iter().cloned())
                .collect(),
        ),
        env: Some(env),
        env_from: Some(vec![EnvFromSource {
            secret_ref: Some(SecretEnvSource {
                name: p.repo.secret.clone(),
                optional: Some(false),
            }),
            ..Default::default()
        }]),
        volume_mounts: Some(mounts),
        volume_devices: (!devices.is_empty()).then_some(devices),
        resources: p.mover.resources.clone(),
        security_context: Some(
            p.mover
                .security_context
                .clone()
                .unwrap_or_else(|| hardened_container_context(privileged, block)),
        ),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        ..Default::default()
    };
    let mut template_labels = p.labels.clone();
    template_labels.insert(names::MANAGED_BY.into(), "mover".into());
    Job {
        metadata: meta(p, &p.name),
        spec: Some(JobSpec {
            backoff_limit: Some(p.backoff_limit),
            active_deadline_seconds: p.mover.active_deadline_seconds,
            pod_failure_policy: Some(PodFailurePolicy {
                rules: vec![PodFailurePolicyRule {
                    action: "FailJob".into(),
                    on_exit_codes: Some(PodFailurePolicyOnExitCodesRequirement {
                        container_name: Some("mover".into()),
                        operator: "In".into(),
                        values: TERMINAL_EXIT_CODES.to_vec(),
                    }),
                    on_pod_conditions: None,
                }],
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(template_labels),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".into()),
                    service_account_name: Some(p.service_account.clone()),
                    automount_service_account_token: Some(true),
                    security_context: Some(
                        p.mover
                            .pod_security_context
                            .clone()
                            .unwrap_or_else(|| hardened_pod_context(privileged, block)),
                    ),
                    containers: vec![container],
                    volumes: Some(volumes),
                    node_selector: p.mover.node_selector.clone(),
                    tolerations: p.mover.tolerations.clone(),
                    node_name: p.node_name.clone(),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        status: None,
    }
}

fn claim_volume(claim: &str, read_only: bool) -> Volume {
    Volume {
        name: "data".into(),
        persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
            claim_name: claim.to_string(),
            read_only: Some(read_only),
        }),
        ..Default::default()
    }
}

/// What the mover in a Job may do: read its own resource and patch that resource's status,
/// nothing else (no Secrets: the repository Secret reaches it through `envFrom`, which the
/// kubelet resolves).
#[derive(Debug, Clone)]
pub struct RunAccess {
    pub service_account: ServiceAccount,
    pub role: Role,
    pub binding: RoleBinding,
}

/// The ServiceAccount, Role and RoleBinding of one run; `resource` is the plural of the kind
/// (`volumebackups`), `object` the resource's name.
pub fn run_access(p: &JobParams, resource: &str, object: &str) -> RunAccess {
    let name = &p.service_account;
    let service_account = ServiceAccount {
        metadata: meta(p, name),
        automount_service_account_token: Some(false),
        ..Default::default()
    };
    let role = Role {
        metadata: meta(p, name),
        rules: Some(vec![
            PolicyRule {
                api_groups: Some(vec![names::GROUP.into()]),
                resources: Some(vec![format!("{resource}/status")]),
                resource_names: Some(vec![object.to_string()]),
                verbs: vec!["get".into(), "patch".into()],
                ..Default::default()
            },
            PolicyRule {
                api_groups: Some(vec![names::GROUP.into()]),
                resources: Some(vec![resource.to_string()]),
                resource_names: Some(vec![object.to_string()]),
                verbs: vec!["get".into()],
                ..Default::default()
            },
        ]),
    };
    let binding = RoleBinding {
        metadata: meta(p, name),
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "Role".into(),
            name: name.clone(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: name.clone(),
            namespace: Some(p.namespace.clone()),
            ..Default::default()
        }]),
    };
    RunAccess {
        service_account,
        role,
        binding,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> JobParams {
        JobParams {
            name: "mover-backup-db".into(),
            namespace: "apps".into(),
            image: "mover:dev".into(),
            args: vec!["job".into(), "backup".into()],
            repo: RepoAccess {
                secret: "repo-secret".into(),
                ca: Some(CaSource::ConfigMap {
                    name: "ca".into(),
                    key: "ca.crt".into(),
                }),
                ..Default::default()
            },
            volume: VolumeAttach::Filesystem {
                claim: "db-clone".into(),
                read_only: true,
            },
            service_account: "mover-backup-db".into(),
            mover: MoverSpec::default(),
            owner: OwnerReference::default(),
            labels: BTreeMap::new(),
            node_name: None,
            backoff_limit: 2,
        }
    }

    #[test]
    fn the_default_pod_is_hardened_and_gets_the_secret_by_reference() {
        let job = job(&params());
        let pod = job.spec.unwrap().template.spec.unwrap();
        let c = &pod.containers[0];
        let sc = c.security_context.as_ref().unwrap();
        assert_eq!(sc.run_as_non_root, Some(true));
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(
            sc.capabilities.as_ref().unwrap().drop,
            Some(vec!["ALL".to_string()])
        );
        let psc = pod.security_context.unwrap();
        assert_eq!(psc.seccomp_profile.unwrap().type_, "RuntimeDefault");
        assert_eq!(psc.run_as_user, Some(NONROOT_UID));
        assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
        let from = c.env_from.as_ref().unwrap();
        assert_eq!(from[0].secret_ref.as_ref().unwrap().name, "repo-secret");
        // No credential value is copied into the spec.
        assert!(
            c.env
                .as_ref()
                .unwrap()
                .iter()
                .all(|e| !e.name.contains("PASSWORD"))
        );
        assert!(c.env.as_ref().unwrap().iter().any(
            |e| e.name == "RESTIC_CACERT" && e.value.as_deref() == Some("/etc/mover/ca/ca.crt")
        ));
        let data = c
            .volume_mounts
            .as_ref()
            .unwrap()
            .iter()
            .find(|m| m.name == "data");
        assert_eq!(data.unwrap().read_only, Some(true));
    }

    #[test]
    fn privileged_runs_as_root_with_ownership_capabilities() {
        let mut p = params();
        p.mover.privileged = true;
        p.volume = VolumeAttach::Block {
            claim: "disk".into(),
        };
        let pod = job(&p).spec.unwrap().template.spec.unwrap();
        let c = &pod.containers[0];
        let caps = c
            .security_context
            .as_ref()
            .unwrap()
            .capabilities
            .clone()
            .unwrap();
        assert!(caps.add.unwrap().contains(&"CHOWN".to_string()));
        assert_eq!(pod.security_context.unwrap().run_as_user, Some(0));
        assert_eq!(
            c.volume_devices.as_ref().unwrap()[0].device_path,
            DATA_DEVICE
        );
    }

    #[test]
    fn the_run_role_reaches_only_its_own_status() {
        let access = run_access(&params(), "volumebackups", "db");
        let rules = access.role.rules.unwrap();
        for r in &rules {
            assert_eq!(r.resource_names, Some(vec!["db".to_string()]));
            assert!(!r.verbs.contains(&"list".to_string()));
        }
        assert!(rules.iter().all(|r| {
            r.resources
                .as_ref()
                .unwrap()
                .iter()
                .all(|x| x.starts_with("volumebackups"))
        }));
    }
}
