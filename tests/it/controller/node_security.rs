//! The test node's kubelet honours a pod's security context as a real node does, so a
//! hardened mover Job meets the same permissions it meets in a cluster:
//!
//! - the process runs as `runAsUser`/`runAsGroup` (container over pod; root when neither
//!   sets one, as an image without a `USER` would), with `fsGroup` and
//!   `supplementalGroups` as supplementary groups;
//! - capabilities are the container runtime's default set for root, less `drop`, plus `add`;
//!   a process that is not root keeps none (Kubernetes sets no ambient capabilities), and
//!   `allowPrivilegeEscalation: false` sets no_new_privs (all through `setpriv`);
//! - `fsGroup` is applied to the writable claims of the pod as kubelet applies it to a
//!   CSI volume (group ownership, group read-write, setgid directories); a read-only claim
//!   is left as it is, as kubelet leaves it;
//! - block devices keep the host's ownership (root, mode 0660), as containerd creates them
//!   by default.
//!
//! A repository given as a local path stands for network storage the pod reaches (an NFS
//! export squashing every user to the pod's): the node hands it to the pod's user before
//! the process starts.

use k8s_openapi::api::core::v1::Pod;
use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

/// containerd's default capabilities of a root container.
const RUNTIME_DEFAULT_CAPS: [&str; 14] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "FSETID",
    "FOWNER",
    "MKNOD",
    "NET_RAW",
    "SETGID",
    "SETUID",
    "SETFCAP",
    "SETPCAP",
    "NET_BIND_SERVICE",
    "SYS_CHROOT",
    "KILL",
    "AUDIT_WRITE",
];

/// Who a container's process runs as.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    /// Capabilities the process holds (names without `CAP_`).
    pub caps: Vec<String>,
    pub no_new_privs: bool,
    /// The pod's `fsGroup`.
    pub fs_group: Option<u32>,
}

pub fn identity(pod: &Pod) -> Identity {
    let spec = pod.spec.clone().unwrap_or_default();
    let psc = spec.security_context.clone().unwrap_or_default();
    let csc = spec.containers[0]
        .security_context
        .clone()
        .unwrap_or_default();
    let uid = csc.run_as_user.or(psc.run_as_user).unwrap_or(0) as u32;
    let gid = csc.run_as_group.or(psc.run_as_group).unwrap_or(0) as u32;
    let mut groups: Vec<u32> = psc.fs_group.into_iter().map(|g| g as u32).collect();
    for g in psc.supplemental_groups.iter().flatten() {
        groups.push(*g as u32);
    }
    groups.sort_unstable();
    groups.dedup();
    let caps = if uid != 0 {
        Vec::new()
    } else {
        let sc = csc.capabilities.clone().unwrap_or_default();
        let drop: Vec<String> = sc.drop.unwrap_or_default();
        let mut caps: Vec<String> = if drop.iter().any(|d| d == "ALL") {
            Vec::new()
        } else {
            RUNTIME_DEFAULT_CAPS
                .iter()
                .map(|c| c.to_string())
                .filter(|c| !drop.contains(c))
                .collect()
        };
        for a in sc.add.unwrap_or_default() {
            let a = a.trim_start_matches("CAP_").to_string();
            if !caps.contains(&a) {
                caps.push(a);
            }
        }
        caps
    };
    Identity {
        uid,
        gid,
        groups,
        caps,
        no_new_privs: csc.allow_privilege_escalation == Some(false),
        fs_group: psc.fs_group.map(|g| g as u32),
    }
}

/// `setpriv` and its arguments, to put before the container's command.
pub fn setpriv_args(id: &Identity) -> Vec<String> {
    let mut args = vec![
        "setpriv".to_string(),
        format!("--reuid={}", id.uid),
        format!("--regid={}", id.gid),
    ];
    if id.groups.is_empty() {
        args.push("--clear-groups".into());
    } else {
        let list: Vec<String> = id.groups.iter().map(u32::to_string).collect();
        args.push(format!("--groups={}", list.join(",")));
    }
    let mut bounding = String::from("-all");
    for c in &id.caps {
        bounding.push_str(&format!(",+{}", c.to_ascii_lowercase()));
    }
    args.push(format!("--bounding-set={bounding}"));
    args.push("--inh-caps=-all".into());
    if id.no_new_privs {
        args.push("--no-new-privs".into());
    }
    args.push("--".into());
    args
}

/// kubelet's `SetVolumeOwnership`: every entry's group becomes `gid`, and gets read-write
/// for owner and group (read-only when `read_only`); directories also get setgid and search.
pub fn apply_fs_group(root: &Path, gid: u32, read_only: bool) -> Result<(), String> {
    let mut stack = vec![root.to_path_buf()];
    while let Some(path) = stack.pop() {
        let meta = std::fs::symlink_metadata(&path).map_err(|e| format!("{path:?}: {e}"))?;
        std::os::unix::fs::lchown(&path, None, Some(gid)).map_err(|e| format!("{path:?}: {e}"))?;
        if meta.file_type().is_symlink() {
            continue;
        }
        let mut mask = if read_only { 0o440 } else { 0o660 };
        if meta.is_dir() {
            mask |= 0o2110;
            for entry in std::fs::read_dir(&path).map_err(|e| format!("{path:?}: {e}"))? {
                stack.push(entry.map_err(|e| e.to_string())?.path());
            }
        }
        let mode = meta.permissions().mode() | mask;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
            .map_err(|e| format!("{path:?}: {e}"))?;
    }
    Ok(())
}

/// Hands a repository given as a local path in `env` (`RESTIC_REPOSITORY`) to `uid`/`gid`:
/// the repository's tree, or its parent when it does not exist yet (so it can be created).
pub fn hand_over_repository(env: &BTreeMap<String, String>, uid: u32, gid: u32) {
    let Some(repo) = env.get("RESTIC_REPOSITORY") else {
        return;
    };
    let local = repo.strip_prefix("local:").unwrap_or(repo);
    if !local.starts_with('/') {
        return;
    }
    let path = Path::new(local);
    let top = if path.exists() {
        path
    } else {
        match path.parent() {
            Some(p) if p.exists() => p,
            _ => return,
        }
    };
    let mut stack = vec![top.to_path_buf()];
    while let Some(p) = stack.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if meta.uid() != uid || meta.gid() != gid {
            let _ = std::os::unix::fs::lchown(&p, Some(uid), Some(gid));
        }
        if meta.is_dir() {
            if let Ok(entries) = std::fs::read_dir(&p) {
                stack.extend(entries.flatten().map(|e| e.path()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        Capabilities, Container, PodSecurityContext, PodSpec, SecurityContext,
    };

    fn pod(psc: PodSecurityContext, csc: Option<SecurityContext>) -> Pod {
        Pod {
            spec: Some(PodSpec {
                security_context: Some(psc),
                containers: vec![Container {
                    security_context: csc,
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_non_root_pod_keeps_no_capability_and_root_keeps_what_it_adds() {
        let hardened = pod(
            PodSecurityContext {
                run_as_user: Some(65532),
                run_as_group: Some(65532),
                fs_group: Some(65532),
                ..Default::default()
            },
            Some(SecurityContext {
                allow_privilege_escalation: Some(false),
                capabilities: Some(Capabilities {
                    drop: Some(vec!["ALL".into()]),
                    add: Some(vec!["DAC_OVERRIDE".into()]),
                }),
                ..Default::default()
            }),
        );
        let id = identity(&hardened);
        assert_eq!(
            (id.uid, id.gid, id.groups.clone()),
            (65532, 65532, vec![65532])
        );
        assert!(id.caps.is_empty());
        assert!(setpriv_args(&id).contains(&"--no-new-privs".to_string()));
        let root = pod(
            PodSecurityContext::default(),
            Some(SecurityContext {
                capabilities: Some(Capabilities {
                    drop: Some(vec!["ALL".into()]),
                    add: Some(vec!["CHOWN".into(), "DAC_OVERRIDE".into()]),
                }),
                ..Default::default()
            }),
        );
        let id = identity(&root);
        assert_eq!(id.uid, 0);
        assert_eq!(id.caps, vec!["CHOWN", "DAC_OVERRIDE"]);
        let plain = identity(&pod(PodSecurityContext::default(), None));
        assert_eq!(plain.caps.len(), RUNTIME_DEFAULT_CAPS.len());
    }
}
