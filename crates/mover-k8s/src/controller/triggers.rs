//! What wakes a reconcile of a run. A mover Job writes `status.progress` every few seconds;
//! none of the controller's decisions reads it, so a change to progress alone must not cost
//! a reconcile (and its reads). Everything else (spec, labels, finalizers, deletion, phase,
//! the Job's result) still does.

use kube::Api;
use kube::Resource;
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt::Debug;
use std::hash::{Hash, Hasher};

/// A hash of what the controller decides from: the object without its resourceVersion,
/// managedFields and `status.progress`. Equal hashes mean nothing the plan reads changed.
pub fn decision_hash<K: Serialize>(obj: &K) -> Option<u64> {
    let mut v = serde_json::to_value(obj).ok()?;
    if let Some(meta) = v.get_mut("metadata").and_then(|m| m.as_object_mut()) {
        meta.remove("resourceVersion");
        meta.remove("managedFields");
    }
    if let Some(status) = v.get_mut("status").and_then(|s| s.as_object_mut()) {
        status.remove("progress");
    }
    let mut h = std::collections::hash_map::DefaultHasher::new();
    v.to_string().hash(&mut h);
    Some(h.finish())
}

/// The objects of `api` as a controller's main stream, with a reflector store of them, where
/// a change to nothing but `status.progress` is dropped.
pub fn decisive_changes<K>(
    api: Api<K>,
    config: watcher::Config,
) -> (
    Store<K>,
    impl futures::Stream<Item = Result<K, watcher::Error>> + Send + 'static,
)
where
    K: Resource<DynamicType = ()> + Clone + Debug + Serialize + DeserializeOwned,
    K: Send + Sync + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = watcher(api, config)
        .default_backoff()
        .reflect(writer)
        .applied_objects()
        .predicate_filter(decision_hash::<K>, Default::default());
    (reader, stream)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::common::{RunPhase, RunProgress, RunStatus};
    use crate::api::{VolumeBackup, VolumeBackupSpec};

    fn backup() -> VolumeBackup {
        let spec: VolumeBackupSpec = serde_json::from_value(
            serde_json::json!({"source": {"pvc": "data"}, "repository": "r"}),
        )
        .unwrap();
        let mut b = VolumeBackup::new("b1", spec);
        b.status = Some(RunStatus {
            phase: RunPhase::InProgress,
            ..Default::default()
        });
        b
    }

    #[test]
    fn progress_alone_changes_nothing_the_controller_decides_from() {
        let a = backup();
        let mut b = a.clone();
        b.metadata.resource_version = Some("42".into());
        b.status.as_mut().unwrap().progress = Some(RunProgress {
            bytes_done: 1 << 20,
            ..Default::default()
        });
        assert_eq!(decision_hash(&a), decision_hash(&b));
    }

    #[test]
    fn phase_spec_and_deletion_changes_wake_the_controller() {
        let a = backup();
        let mut phase = a.clone();
        phase.status.as_mut().unwrap().phase = RunPhase::Completed;
        assert_ne!(decision_hash(&a), decision_hash(&phase));
        let mut cancel = a.clone();
        cancel.spec.cancel = true;
        assert_ne!(decision_hash(&a), decision_hash(&cancel));
        let mut deleted = a.clone();
        deleted.metadata.finalizers = Some(vec!["mover.dev/x".into()]);
        assert_ne!(decision_hash(&a), decision_hash(&deleted));
    }
}
