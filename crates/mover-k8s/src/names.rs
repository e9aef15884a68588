//! Names, labels and annotations of the objects the controller creates. Pure.

use sha2::{Digest, Sha256};

/// The API group of mover's resources.
pub const GROUP: &str = "mover.dev";
/// Every object mover creates carries this label (value `mover`).
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// The kind of the resource a Job (or PVC, snapshot) works for.
pub const OWNER_KIND: &str = "mover.dev/owner-kind";
/// The name of that resource.
pub const OWNER_NAME: &str = "mover.dev/owner-name";
/// The Repository a mover Job uses: `maxJobs` counts Jobs by this label.
pub const REPOSITORY: &str = "mover.dev/repository";
/// What a Job does: `backup`, `restore`, `probe`, `forget`, `prune`.
pub const JOB_ROLE: &str = "mover.dev/job-role";
/// The finalizer that forgets a VolumeBackup's snapshot (deletionPolicy Delete) and
/// removes a run's temporary objects.
pub const FINALIZER: &str = "mover.dev/cleanup";
/// The BackupSchedule a VolumeBackup was made by.
pub const SCHEDULE: &str = "mover.dev/schedule";

/// Kubernetes' limit for label values and many names.
const MAX_NAME: usize = 63;

/// The field manager of every write the controller makes: `managedFields` tells its fields
/// from the Job's.
pub const CONTROLLER_MANAGER: &str = "mover-controller";
/// The field manager of the status a mover Job writes (`progress`, `result`, `resolved`).
pub const JOB_MANAGER: &str = "mover-job";

/// `prefix-name`, shortened with a hash suffix when longer than `max` so that distinct
/// inputs keep distinct names.
pub fn child_name(prefix: &str, name: &str, max: usize) -> String {
    let full = format!("{prefix}-{name}");
    let max = max.min(MAX_NAME);
    if full.len() <= max {
        return full;
    }
    let digest = Sha256::digest(full.as_bytes());
    let suffix = hex::encode(&digest[..4]);
    let keep = max - suffix.len() - 1;
    let mut head: String = full.chars().take(keep).collect();
    while head.ends_with('-') || head.ends_with('.') {
        head.pop();
    }
    format!("{head}-{suffix}")
}

/// Job names are kept short enough that the pods the Job controller names after them
/// (`<job>-<5 chars>`) stay valid hostnames.
pub fn job_name(role: &str, owner: &str) -> String {
    child_name(&format!("mover-{role}"), owner, 52)
}

pub fn object_name(role: &str, owner: &str) -> String {
    child_name(&format!("mover-{role}"), owner, MAX_NAME)
}

/// A label value: at most 63 characters.
/// The labels of what a run, probe or maintenance Job creates: mover manages it, who owns it
/// (kind and name), the repository it works on when there is one, and the Job's role.
pub fn owned_labels(
    kind: &str,
    owner: &str,
    repository: Option<&str>,
    role: &str,
) -> std::collections::BTreeMap<String, String> {
    let mut labels = std::collections::BTreeMap::from([
        (MANAGED_BY.to_string(), "mover".to_string()),
        (OWNER_KIND.to_string(), kind.to_string()),
        (OWNER_NAME.to_string(), label_value(owner)),
        (JOB_ROLE.to_string(), role.to_string()),
    ]);
    if let Some(r) = repository {
        labels.insert(REPOSITORY.to_string(), label_value(r));
    }
    labels
}

pub fn label_value(v: &str) -> String {
    if v.len() <= MAX_NAME {
        v.to_string()
    } else {
        child_name("v", v, MAX_NAME)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_are_kept_and_long_ones_hashed_apart() {
        assert_eq!(job_name("backup", "db"), "mover-backup-db");
        let a = job_name("backup", &"a".repeat(80));
        let b = job_name("backup", &format!("{}b", "a".repeat(79)));
        assert!(a.len() <= 52 && b.len() <= 52, "{a} {b}");
        assert_ne!(a, b);
        assert!(!a.contains("--"));
        assert_eq!(label_value("x"), "x");
        assert_eq!(label_value(&"x".repeat(70)).len(), 63);
    }
}
