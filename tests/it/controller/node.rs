//! A test node in Rust that plays kubelet, scheduler, CSI provisioner and snapshot
//! controller for the real control plane:
//!
//! - PVCs of StorageClass `mover-test` get a directory (a sparse image file for `Block`)
//!   and a pre-bound PersistentVolume; a `dataSource` VolumeSnapshot or PVC is copied in
//!   with new inodes, as a CSI clone would be.
//! - VolumeSnapshots of such PVCs are copies of the volume's directory behind a
//!   VolumeSnapshotContent whose handle is the copy's path, then `readyToUse`; a
//!   pre-provisioned VolumeSnapshot binds to its content's handle. Claims with a selector are
//!   left alone, as CSI's provisioner refuses them.
//! - `/containerLogs` is served (node_logs.rs), so `pods/log` works through the API server.
//! - A pod that runs the image's `/mover-restic/entry.sh` (VolSync's restic mover Job) runs
//!   deploy/image's script with the cargo-built `mover` first on PATH.
//! - Pods are bound to `mover-test-node` and their container's command runs here (`mover`
//!   is the cargo-built binary) in a private mount namespace where each volume is bind
//!   mounted at its mountPath; env comes from values, Secrets, ConfigMaps and the downward
//!   API (a volume mounted at /tmp becomes `TMPDIR` instead, so the host's /tmp stays
//!   visible), and `KUBECONFIG` carries a TokenRequest token of the pod's ServiceAccount, so
//!   the process acts with its RBAC. The process runs with the pod's security context
//!   (node_security.rs). Pod status gets phase, exit code and the termination message (the
//!   container's `/dev/termination-log`, else the log's tail on failure); a deleted pod's
//!   process gets SIGTERM.
//!
//! It polls rather than watches: simple, and fast enough for tests (every 250 ms).

use super::node_security;
use super::plane::Plane;
use k8s_openapi::api::core::v1::{
    ConfigMap, Node, PersistentVolume, PersistentVolumeClaim, Pod, Secret, ServiceAccount,
};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use mover::k8s::api::snapshot::{VolumeSnapshot, VolumeSnapshotContent};
use serde_json::json;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::OnceCell;

pub const NODE: &str = "mover-test-node";
/// Where mover's image keeps the script VolSync's restic mover Job runs.
pub const VOLSYNC_ENTRY: &str = "/mover-restic/entry.sh";
pub const STORAGE_CLASS: &str = "mover-test";
/// The same volumes, bound only once a pod uses the claim (`WaitForFirstConsumer`): the
/// scheduler part of the node writes `volume.kubernetes.io/selected-node` on such a claim when
/// it binds the pod, and only then is the volume provisioned.
pub const WFFC_STORAGE_CLASS: &str = "mover-test-wffc";
const SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";
const PROVISIONER: &str = "test-node.mover.dev";

pub struct TestNode {
    pub root: PathBuf,
    client: Client,
    /// Pod uid → pid of its process.
    running: Arc<Mutex<HashMap<String, u32>>>,
}

static NODE_CELL: OnceCell<TestNode> = OnceCell::const_new();
/// The node's tasks run on their own runtime: each test has its own, which ends with it.
static NODE_RUNTIME: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();

impl TestNode {
    pub async fn shared(plane: &'static Plane) -> &'static TestNode {
        NODE_CELL
            .get_or_init(|| async move {
                let rt = NODE_RUNTIME.get_or_init(|| {
                    tokio::runtime::Builder::new_multi_thread()
                        .worker_threads(2)
                        .enable_all()
                        .build()
                        .unwrap()
                });
                let kubeconfig = plane.kubeconfig.clone();
                let root = plane.dir.join("node");
                rt.spawn(async move { TestNode::start(&kubeconfig, root).await })
                    .await
                    .unwrap()
            })
            .await
    }

    async fn start(kubeconfig: &Path, root: PathBuf) -> TestNode {
        for d in ["volumes", "snapshots", "logs", "pods"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        let config = kube::config::Kubeconfig::read_from(kubeconfig).unwrap();
        let config = kube::Config::from_custom_kubeconfig(config, &Default::default())
            .await
            .unwrap();
        let server = config.cluster_url.to_string();
        let ca = config
            .root_cert
            .as_ref()
            .and_then(|c| c.first())
            .map(|der| pem_of(der))
            .unwrap_or_default();
        let client = Client::try_from(config).unwrap();
        let node: Node = serde_json::from_value(json!({
            "metadata": {"name": NODE, "labels": {"kubernetes.io/hostname": NODE}},
        }))
        .unwrap();
        let nodes: Api<Node> = Api::all(client.clone());
        let _ = nodes.create(&PostParams::default(), &node).await;
        let log_port = super::node_logs::serve(root.join("logs")).await;
        let status = json!({"status": {"conditions": [{"type": "Ready", "status": "True",
            "reason": "KubeletReady", "message": "test node"}],
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": log_port}}}});
        let _ = nodes
            .patch_status(NODE, &PatchParams::default(), &Patch::Merge(status))
            .await;
        let classes: Api<k8s_openapi::api::storage::v1::StorageClass> = Api::all(client.clone());
        let class = serde_json::from_value(json!({
            "metadata": {"name": STORAGE_CLASS},
            "provisioner": PROVISIONER,
            "volumeBindingMode": "Immediate",
            "reclaimPolicy": "Delete",
        }))
        .unwrap();
        let _ = classes.create(&PostParams::default(), &class).await;
        let wffc = serde_json::from_value(json!({
            "metadata": {"name": WFFC_STORAGE_CLASS},
            "provisioner": PROVISIONER,
            "volumeBindingMode": "WaitForFirstConsumer",
            "reclaimPolicy": "Delete",
        }))
        .unwrap();
        let _ = classes.create(&PostParams::default(), &wffc).await;
        let node = TestNode {
            root: root.clone(),
            client: client.clone(),
            running: Arc::default(),
        };
        let kubelet = Kubelet {
            client: client.clone(),
            root: root.clone(),
            server,
            ca,
            running: Arc::clone(&node.running),
            started: Arc::default(),
        };
        tokio::spawn(async move {
            loop {
                if let Err(e) = kubelet.tick().await {
                    eprintln!("test-node: kubelet: {e}");
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        });
        let storage = Storage {
            client: client.clone(),
            root,
        };
        tokio::spawn(async move {
            loop {
                if let Err(e) = storage.tick().await {
                    eprintln!("test-node: storage: {e}");
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        });
        node
    }

    /// The directory (or image file) behind a claim, once it is bound.
    pub async fn volume_path(&self, ns: &str, pvc: &str) -> Option<PathBuf> {
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), ns);
        let claim = claims.get_opt(pvc).await.ok()??;
        let pv = claim.spec?.volume_name?;
        let pvs: Api<PersistentVolume> = Api::all(self.client.clone());
        let pv = pvs.get_opt(&pv).await.ok()??;
        pv_path(&pv)
    }

    /// Waits for a claim to be bound and returns its directory.
    pub async fn wait_volume(&self, ns: &str, pvc: &str) -> PathBuf {
        for _ in 0..240 {
            if let Some(p) = self.volume_path(ns, pvc).await {
                return p;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        panic!("PVC {ns}/{pvc} was not bound within 60 s");
    }

    /// Every log of pods in `ns` whose name starts with `prefix`.
    pub fn logs(&self, ns: &str, prefix: &str) -> String {
        let mut out = String::new();
        if let Ok(entries) = std::fs::read_dir(self.root.join("logs")) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().to_string();
                if name.starts_with(&format!("{ns}_{prefix}")) {
                    out.push_str(&format!("--- {name}\n"));
                    out.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
                }
            }
        }
        out
    }
}

fn pem_of(der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap());
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

/// `cp -a` with new inodes (what a CSI clone gives).
fn copy_tree(from: &Path, to: &Path) -> Result<(), String> {
    std::fs::create_dir_all(to).map_err(|e| e.to_string())?;
    let out = std::process::Command::new("cp")
        .arg("-a")
        .arg("--reflink=never")
        .arg(format!("{}/.", from.display()))
        .arg(to)
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).to_string());
    }
    Ok(())
}

fn request_bytes(pvc: &PersistentVolumeClaim) -> u64 {
    let q = pvc
        .spec
        .as_ref()
        .and_then(|s| s.resources.as_ref())
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"))
        .map(|q| q.0.clone())
        .unwrap_or_else(|| "1Gi".into());
    parse_quantity(&q)
}

fn parse_quantity(q: &str) -> u64 {
    let units = [
        ("Ki", 1u64 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("Ti", 1 << 40),
    ];
    for (suffix, mult) in units {
        if let Some(n) = q.strip_suffix(suffix) {
            return n.parse::<u64>().unwrap_or(1) * mult;
        }
    }
    q.parse().unwrap_or(1 << 30)
}

struct Storage {
    client: Client,
    root: PathBuf,
}

impl Storage {
    async fn tick(&self) -> Result<(), String> {
        let done = [
            self.provision().await,
            self.snapshot().await,
            self.reclaim().await,
        ];
        let errors: Vec<String> = done.into_iter().filter_map(Result::err).collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }

    async fn provision(&self) -> Result<(), String> {
        let claims: Api<PersistentVolumeClaim> = Api::all(self.client.clone());
        let pvs: Api<PersistentVolume> = Api::all(self.client.clone());
        for pvc in claims
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?
        {
            let one: Result<(), String> = async {
                let spec = pvc.spec.clone().unwrap_or_default();
                // A claim filled by a volume populator (dataSourceRef to a kind other than a
                // PVC or VolumeSnapshot) is left to that populator, as CSI's provisioner does.
                let populated = spec.data_source_ref.as_ref().is_some_and(|r| {
                    !matches!(r.kind.as_str(), "PersistentVolumeClaim" | "VolumeSnapshot")
                });
                // A claim with a selector binds only to a PV made for it (Velero's restores), as
                // CSI's provisioner refuses to provision one.
                let class = spec.storage_class_name.as_deref();
                let waits_for_node = class == Some(WFFC_STORAGE_CLASS)
                    && !pvc.annotations().contains_key(SELECTED_NODE);
                if !matches!(class, Some(STORAGE_CLASS | WFFC_STORAGE_CLASS))
                    || waits_for_node
                    || spec.volume_name.is_some()
                    || spec.selector.is_some()
                    || pvc.metadata.deletion_timestamp.is_some()
                    || populated
                {
                    return Ok(());
                }
                let ns = pvc.namespace().unwrap_or_default();
                let uid = pvc.uid().unwrap_or_default();
                let pv_name = format!("pv-{uid}");
                if pvs
                    .get_opt(&pv_name)
                    .await
                    .map_err(|e| e.to_string())?
                    .is_some()
                {
                    return Ok(());
                }
                let block = spec.volume_mode.as_deref() == Some("Block");
                let dir = self.root.join("volumes").join(&pv_name);
                // The source of a clone: a ready snapshot's copy, or another claim's volume.
                let source = match spec.data_source.as_ref() {
                    Some(ds) if ds.kind == "VolumeSnapshot" => {
                        let snaps: Api<VolumeSnapshot> = Api::namespaced(self.client.clone(), &ns);
                        let Some(s) = snaps.get_opt(&ds.name).await.map_err(|e| e.to_string())? else {
                            return Ok(());
                        };
                        if s.status.as_ref().and_then(|s| s.ready_to_use) != Some(true) {
                            return Ok(());
                        }
                        match self.snapshot_data(&s).await? {
                            Some(p) => Some(p),
                            None => return Ok(()),
                        }
                    }
                    Some(ds) if ds.kind == "PersistentVolumeClaim" => {
                        match self.claim_path(&ns, &ds.name).await? {
                            Some(p) => Some(p),
                            None => return Ok(()),
                        }
                    }
                    _ => None,
                };
                let host_path = if block {
                    dir.join("disk.img")
                } else {
                    dir.clone()
                };
                std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
                match (&source, block) {
                    (Some(src), false) => copy_tree(src, &dir)?,
                    (Some(src), true) => {
                        let img = if src.is_dir() {
                            src.join("disk.img")
                        } else {
                            src.clone()
                        };
                        std::process::Command::new("cp")
                            .arg("--sparse=always")
                            .arg(&img)
                            .arg(&host_path)
                            .status()
                            .map_err(|e| e.to_string())?;
                    }
                    (None, true) => {
                        let f = std::fs::File::create(&host_path).map_err(|e| e.to_string())?;
                        f.set_len(request_bytes(&pvc)).map_err(|e| e.to_string())?;
                    }
                    (None, false) => {}
                }
                let size = spec
                    .resources
                    .as_ref()
                    .and_then(|r| r.requests.as_ref())
                    .and_then(|r| r.get("storage").cloned())
                    .map(|q| q.0)
                    .unwrap_or_else(|| "1Gi".into());
                let pv: PersistentVolume = serde_json::from_value(json!({
                    "metadata": {"name": pv_name,
                        "annotations": {"pv.kubernetes.io/provisioned-by": PROVISIONER}},
                    "spec": {
                        "capacity": {"storage": size},
                        "accessModes": spec.access_modes.clone().unwrap_or_else(|| vec!["ReadWriteOnce".into()]),
                        "volumeMode": if block { "Block" } else { "Filesystem" },
                        "storageClassName": class,
                        "persistentVolumeReclaimPolicy": "Delete",
                        // A CSI volume, as a CSI driver provisions it (Velero's PVC action
                        // snapshots only those); the handle is the directory or image file.
                        "csi": {"driver": PROVISIONER, "volumeHandle": host_path},
                        "claimRef": {"namespace": ns, "name": pvc.name_any(), "uid": uid},
                    }
                }))
                .map_err(|e| e.to_string())?;
                pvs.create(&PostParams::default(), &pv)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(())
            }
            .await;
            // One object that cannot be handled is reported and the others go on, as
            // CSI's controllers work per object.
            if let Err(e) = one {
                eprintln!("test-node: provisioning: {e}");
            }
        }
        Ok(())
    }

    async fn claim_path(&self, ns: &str, name: &str) -> Result<Option<PathBuf>, String> {
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), ns);
        let Some(claim) = claims.get_opt(name).await.map_err(|e| e.to_string())? else {
            return Ok(None);
        };
        let Some(pv) = claim.spec.and_then(|s| s.volume_name) else {
            return Ok(None);
        };
        let pvs: Api<PersistentVolume> = Api::all(self.client.clone());
        Ok(pvs
            .get_opt(&pv)
            .await
            .map_err(|e| e.to_string())?
            .and_then(|pv| pv_path(&pv)))
    }

    /// Plays CSI's snapshot controller: a VolumeSnapshot of a claim becomes a copy of the
    /// volume and a VolumeSnapshotContent whose handle is that copy's path; a pre-provisioned
    /// VolumeSnapshot (one naming its content) binds to that content's handle. A content of
    /// `deletionPolicy: Delete` whose VolumeSnapshot is gone goes, with its copy.
    async fn snapshot(&self) -> Result<(), String> {
        let snaps: Api<VolumeSnapshot> = Api::all(self.client.clone());
        let contents: Api<VolumeSnapshotContent> = Api::all(self.client.clone());
        let all = snaps
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?;
        for s in &all {
            let one: Result<(), String> = async {
                if s.status.as_ref().and_then(|st| st.ready_to_use) == Some(true) {
                    return Ok(());
                }
                let ns = s.namespace().unwrap_or_default();
                let uid = s.uid().unwrap_or_default();
                let (content_name, size) = if let Some(claim) =
                    s.spec.source.persistent_volume_claim_name.clone()
                {
                    let Some(src) = self.claim_path(&ns, &claim).await? else {
                        return Ok(());
                    };
                    let dst = self.root.join("snapshots").join(&uid);
                    if src.is_dir() {
                        copy_tree(&src, &dst)?;
                    } else {
                        std::fs::create_dir_all(&dst).map_err(|e| e.to_string())?;
                        std::process::Command::new("cp")
                            .arg("--sparse=always")
                            .arg(&src)
                            .arg(dst.join("disk.img"))
                            .status()
                            .map_err(|e| e.to_string())?;
                    }
                    let claims: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), &ns);
                    let size = claims
                        .get_opt(&claim)
                        .await
                        .map_err(|e| e.to_string())?
                        .and_then(|c| c.status?.capacity?.get("storage").cloned())
                        .map(|q| q.0)
                        .unwrap_or_else(|| "1Gi".into());
                    let name = format!("snapcontent-{uid}");
                    let content: VolumeSnapshotContent = serde_json::from_value(json!({
                        "metadata": {"name": name},
                        "spec": {"deletionPolicy": "Delete", "driver": PROVISIONER,
                            "source": {"volumeHandle": src},
                            "volumeSnapshotClassName": s.spec.volume_snapshot_class_name,
                            "volumeSnapshotRef": {"namespace": ns, "name": s.name_any(), "uid": uid}},
                    }))
                    .map_err(|e| e.to_string())?;
                    if contents
                        .get_opt(&name)
                        .await
                        .map_err(|e| e.to_string())?
                        .is_none()
                    {
                        contents
                            .create(&PostParams::default(), &content)
                            .await
                            .map_err(|e| e.to_string())?;
                    }
                    let status = json!({"status": {"readyToUse": true,
                        "snapshotHandle": dst, "restoreSize": parse_quantity(&size)}});
                    contents
                        .patch_status(&name, &PatchParams::default(), &Patch::Merge(status))
                        .await
                        .map_err(|e| e.to_string())?;
                    (name, size)
                } else if let Some(name) = s.spec.source.volume_snapshot_content_name.clone() {
                    let Some(c) = contents.get_opt(&name).await.map_err(|e| e.to_string())? else {
                        return Ok(());
                    };
                    let Some(handle) = c.spec.source.snapshot_handle.clone() else {
                        return Ok(());
                    };
                    let bytes = c
                        .status
                        .as_ref()
                        .and_then(|st| st.restore_size)
                        .unwrap_or(1 << 30);
                    let status = json!({"status": {"readyToUse": true,
                        "snapshotHandle": handle, "restoreSize": bytes}});
                    contents
                        .patch_status(&name, &PatchParams::default(), &Patch::Merge(status))
                        .await
                        .map_err(|e| e.to_string())?;
                    (name, bytes.to_string())
                } else {
                    return Ok(());
                };
                let api: Api<VolumeSnapshot> = Api::namespaced(self.client.clone(), &ns);
                let status = json!({"status": {
                    "readyToUse": true,
                    "restoreSize": size,
                    "creationTime": jiff::Timestamp::now().to_string(),
                    "boundVolumeSnapshotContentName": content_name,
                }});
                api.patch_status(
                    &s.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(status),
                )
                .await
                .map_err(|e| e.to_string())?;
                Ok(())
            }
            .await;
            // One object that cannot be handled is reported and the others go on, as
            // CSI's controllers work per object.
            if let Err(e) = one {
                eprintln!("test-node: snapshot: {e}");
            }
        }
        for c in contents
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?
        {
            let r = &c.spec.volume_snapshot_ref;
            let alive = all
                .iter()
                .any(|s| s.namespace() == r.namespace && Some(s.name_any()) == r.name);
            if alive || c.spec.deletion_policy != "Delete" {
                continue;
            }
            // A content made just now may name a VolumeSnapshot created after the list above
            // (a pre-provisioned pair is created content first): as CSI's snapshot
            // controller, only a content whose VolumeSnapshot is gone on a fresh read, and
            // that is not new, goes.
            let young = c
                .metadata
                .creation_timestamp
                .as_ref()
                .is_none_or(|t| jiff::Timestamp::now().duration_since(t.0).as_secs() < 30);
            if young {
                continue;
            }
            if let (Some(ns), Some(name)) = (&r.namespace, &r.name) {
                let fresh: Api<VolumeSnapshot> = Api::namespaced(self.client.clone(), ns);
                match fresh.get_opt(name).await {
                    Ok(None) => {}
                    _ => continue,
                }
            }
            if let Some(handle) = c.status.as_ref().and_then(|st| st.snapshot_handle.clone()) {
                if Path::new(&handle).starts_with(self.root.join("snapshots")) {
                    let _ = std::fs::remove_dir_all(&handle);
                }
            }
            let _ = contents
                .delete(&c.name_any(), &DeleteParams::default())
                .await;
        }
        Ok(())
    }

    /// Where a ready VolumeSnapshot's data is: its content's handle.
    async fn snapshot_data(&self, s: &VolumeSnapshot) -> Result<Option<PathBuf>, String> {
        let Some(name) = s
            .status
            .as_ref()
            .and_then(|st| st.bound_volume_snapshot_content_name.clone())
        else {
            return Ok(None);
        };
        let contents: Api<VolumeSnapshotContent> = Api::all(self.client.clone());
        let c = contents.get_opt(&name).await.map_err(|e| e.to_string())?;
        Ok(c.and_then(|c| c.status?.snapshot_handle).map(PathBuf::from))
    }

    /// Deletes the volumes of released claims.
    async fn reclaim(&self) -> Result<(), String> {
        let pvs: Api<PersistentVolume> = Api::all(self.client.clone());
        for pv in pvs
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?
        {
            let spec = pv.spec.clone().unwrap_or_default();
            if pv.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Released")
                || spec.persistent_volume_reclaim_policy.as_deref() == Some("Retain")
            {
                continue;
            }
            let dir = self.root.join("volumes").join(pv.name_any());
            let _ = std::fs::remove_dir_all(dir);
            let _ = pvs.delete(&pv.name_any(), &DeleteParams::default()).await;
        }
        Ok(())
    }
}

struct Kubelet {
    client: Client,
    root: PathBuf,
    server: String,
    ca: String,
    running: Arc<Mutex<HashMap<String, u32>>>,
    started: Arc<Mutex<HashSet<String>>>,
}

/// The `mover` that pods run: `MOVER_BIN`, else the one cargo built for the tests.
fn mover_bin() -> PathBuf {
    match std::env::var_os("MOVER_BIN") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(option_env!("CARGO_BIN_EXE_mover").unwrap_or("mover")),
    }
}

impl Kubelet {
    async fn tick(&self) -> Result<(), String> {
        let pods: Api<Pod> = Api::all(self.client.clone());
        for pod in pods
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?
        {
            let ns = pod.namespace().unwrap_or_default();
            let name = pod.name_any();
            let uid = pod.uid().unwrap_or_default();
            let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
            let spec = pod.spec.clone().unwrap_or_default();
            if pod.metadata.deletion_timestamp.is_some() {
                let pid = self.running.lock().unwrap().get(&uid).copied();
                match pid {
                    Some(pid) => {
                        let _ = nix::sys::signal::kill(
                            nix::unistd::Pid::from_raw(pid as i32),
                            nix::sys::signal::Signal::SIGTERM,
                        );
                    }
                    None if !self.started.lock().unwrap().contains(&uid) || is_terminal(&pod) => {
                        let _ = api
                            .delete(&name, &DeleteParams::default().grace_period(0))
                            .await;
                    }
                    None => {}
                }
                continue;
            }
            if spec.node_name.is_none() {
                // The scheduler's volume binding: a claim of a WaitForFirstConsumer class
                // learns the node of its first pod.
                self.select_node_for_claims(&ns, &spec).await;
                let binding = json!({
                    "apiVersion": "v1", "kind": "Binding",
                    "metadata": {"name": name, "namespace": ns},
                    "target": {"apiVersion": "v1", "kind": "Node", "name": NODE},
                });
                let bound: Result<serde_json::Value, _> = api
                    .create_subresource("binding", &name, &PostParams::default(), &binding)
                    .await;
                if let Err(e) = bound {
                    eprintln!("test-node: binding {ns}/{name}: {e}");
                }
                continue;
            }
            if self.started.lock().unwrap().contains(&uid) || is_terminal(&pod) {
                continue;
            }
            match self.prepare(&pod).await {
                Ok(Some(run)) => {
                    self.started.lock().unwrap().insert(uid.clone());
                    self.launch(pod.clone(), run).await;
                }
                Ok(None) => {}
                Err(message) => {
                    let status = json!({"status": {"phase": "Pending", "containerStatuses": [{
                        "name": spec.containers[0].name, "image": "", "imageID": "",
                        "ready": false, "restartCount": 0,
                        "state": {"waiting": {"reason": "CreateContainerConfigError", "message": message}}}]}});
                    let _ = api
                        .patch_status(&name, &PatchParams::default(), &Patch::Merge(status))
                        .await;
                }
            }
        }
        Ok(())
    }

    async fn select_node_for_claims(&self, ns: &str, spec: &k8s_openapi::api::core::v1::PodSpec) {
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), ns);
        for v in spec.volumes.iter().flatten() {
            let Some(c) = &v.persistent_volume_claim else {
                continue;
            };
            let Ok(Some(pvc)) = claims.get_opt(&c.claim_name).await else {
                continue;
            };
            let unbound = pvc.spec.as_ref().is_some_and(|s| {
                s.volume_name.is_none()
                    && s.storage_class_name.as_deref() == Some(WFFC_STORAGE_CLASS)
            });
            if unbound && !pvc.annotations().contains_key(SELECTED_NODE) {
                let patch = json!({"metadata": {"annotations": {SELECTED_NODE: NODE}}});
                if let Err(e) = claims
                    .patch(&c.claim_name, &PatchParams::default(), &Patch::Merge(patch))
                    .await
                {
                    eprintln!(
                        "test-node: selecting the node of {ns}/{}: {e}",
                        c.claim_name
                    );
                }
            }
        }
    }

    /// Resolves env and volumes; `Ok(None)` while a claim is not bound yet.
    async fn prepare(&self, pod: &Pod) -> Result<Option<Prepared>, String> {
        let ns = pod.namespace().unwrap_or_default();
        let spec = pod.spec.clone().unwrap_or_default();
        let c = &spec.containers[0];
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &ns);
        let maps: Api<ConfigMap> = Api::namespaced(self.client.clone(), &ns);
        let mut env: BTreeMap<String, String> = BTreeMap::new();
        for from in c.env_from.iter().flatten() {
            if let Some(s) = &from.secret_ref {
                match secrets.get_opt(&s.name).await.map_err(|e| e.to_string())? {
                    Some(secret) => {
                        for (k, v) in secret.data.unwrap_or_default() {
                            let key = format!("{}{k}", from.prefix.clone().unwrap_or_default());
                            env.insert(key, String::from_utf8_lossy(&v.0).to_string());
                        }
                    }
                    None if s.optional == Some(true) => {}
                    None => return Err(format!("secret \"{}\" not found", s.name)),
                }
            }
            if let Some(m) = &from.config_map_ref {
                if let Some(map) = maps.get_opt(&m.name).await.map_err(|e| e.to_string())? {
                    for (k, v) in map.data.unwrap_or_default() {
                        env.insert(format!("{}{k}", from.prefix.clone().unwrap_or_default()), v);
                    }
                } else if m.optional != Some(true) {
                    return Err(format!("configmap \"{}\" not found", m.name));
                }
            }
        }
        for e in c.env.iter().flatten() {
            if let Some(v) = &e.value {
                env.insert(e.name.clone(), v.clone());
                continue;
            }
            let Some(from) = &e.value_from else {
                env.insert(e.name.clone(), String::new());
                continue;
            };
            if let Some(f) = &from.field_ref {
                let v = match f.field_path.as_str() {
                    "metadata.name" => pod.name_any(),
                    "metadata.namespace" => ns.clone(),
                    "metadata.uid" => pod.uid().unwrap_or_default(),
                    "spec.nodeName" => NODE.to_string(),
                    "spec.serviceAccountName" => {
                        spec.service_account_name.clone().unwrap_or_default()
                    }
                    other => {
                        return Err(format!(
                            "fieldRef {other} is not supported by the test node"
                        ));
                    }
                };
                env.insert(e.name.clone(), v);
            } else if let Some(k) = &from.secret_key_ref {
                let secret = secrets.get_opt(&k.name).await.map_err(|e| e.to_string())?;
                match secret
                    .and_then(|s| s.data)
                    .and_then(|d| d.get(&k.key).cloned())
                {
                    Some(v) => {
                        env.insert(e.name.clone(), String::from_utf8_lossy(&v.0).to_string());
                    }
                    None if k.optional == Some(true) => {}
                    None => {
                        return Err(format!(
                            "secret \"{}\" or its key {} not found",
                            k.name, k.key
                        ));
                    }
                }
            } else if let Some(k) = &from.config_map_key_ref {
                let map = maps.get_opt(&k.name).await.map_err(|e| e.to_string())?;
                if let Some(v) = map
                    .and_then(|m| m.data)
                    .and_then(|d| d.get(&k.key).cloned())
                {
                    env.insert(e.name.clone(), v);
                } else if k.optional != Some(true) {
                    return Err(format!(
                        "configmap \"{}\" or its key {} not found",
                        k.name, k.key
                    ));
                }
            }
        }
        let pod_dir = self.root.join("pods").join(pod.uid().unwrap_or_default());
        std::fs::create_dir_all(&pod_dir).map_err(|e| e.to_string())?;
        // Volumes by name → host path.
        let mut sources: HashMap<String, PathBuf> = HashMap::new();
        let mut claims_used: HashSet<String> = HashSet::new();
        for v in spec.volumes.iter().flatten() {
            if v.persistent_volume_claim.is_some() {
                claims_used.insert(v.name.clone());
            }
            let path = if let Some(c) = &v.persistent_volume_claim {
                let claims: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), &ns);
                let Some(pv) = claims
                    .get_opt(&c.claim_name)
                    .await
                    .map_err(|e| e.to_string())?
                    .and_then(|c| c.spec?.volume_name)
                else {
                    return Ok(None);
                };
                let pvs: Api<PersistentVolume> = Api::all(self.client.clone());
                let Some(host) = pvs
                    .get_opt(&pv)
                    .await
                    .map_err(|e| e.to_string())?
                    .and_then(|pv| pv_path(&pv))
                else {
                    return Ok(None);
                };
                host
            } else if v.empty_dir.is_some() {
                let d = pod_dir.join("empty").join(&v.name);
                std::fs::create_dir_all(&d).map_err(|e| e.to_string())?;
                // kubelet makes an emptyDir world-writable.
                std::fs::set_permissions(&d, std::os::unix::fs::PermissionsExt::from_mode(0o777))
                    .map_err(|e| e.to_string())?;
                d
            } else if let Some(s) = &v.secret {
                let d = pod_dir.join("secret").join(&v.name);
                std::fs::create_dir_all(&d).map_err(|e| e.to_string())?;
                let name = s.secret_name.clone().unwrap_or_default();
                let secret = secrets.get_opt(&name).await.map_err(|e| e.to_string())?;
                let Some(secret) = secret else {
                    return Err(format!("secret \"{name}\" not found"));
                };
                for (k, val) in secret.data.unwrap_or_default() {
                    std::fs::write(d.join(k), val.0).map_err(|e| e.to_string())?;
                }
                d
            } else if let Some(m) = &v.config_map {
                let d = pod_dir.join("configmap").join(&v.name);
                std::fs::create_dir_all(&d).map_err(|e| e.to_string())?;
                let map = maps.get_opt(&m.name).await.map_err(|e| e.to_string())?;
                let Some(map) = map else {
                    return Err(format!("configmap \"{}\" not found", m.name));
                };
                for (k, val) in map.data.unwrap_or_default() {
                    std::fs::write(d.join(k), val).map_err(|e| e.to_string())?;
                }
                d
            } else {
                return Err(format!(
                    "volume {} has a type the test node does not support",
                    v.name
                ));
            };
            sources.insert(v.name.clone(), path);
        }
        let identity = node_security::identity(pod);
        node_security::hand_over_repository(&env, identity.uid, identity.gid);
        let mut mounts = Vec::new();
        for m in c.volume_mounts.iter().flatten() {
            let src = sources
                .get(&m.name)
                .ok_or_else(|| format!("volumeMount {} names no volume", m.name))?;
            let read_only = m.read_only == Some(true);
            if let (Some(gid), false, true) =
                (identity.fs_group, read_only, claims_used.contains(&m.name))
            {
                node_security::apply_fs_group(src, gid, false)?;
            }
            mounts.push((src.clone(), PathBuf::from(&m.mount_path), read_only));
        }
        let mut devices = Vec::new();
        for d in c.volume_devices.iter().flatten() {
            let src = sources
                .get(&d.name)
                .ok_or_else(|| format!("volumeDevice {} names no volume", d.name))?;
            devices.push((src.clone(), PathBuf::from(&d.device_path)));
        }
        // The pod's ServiceAccount token, as the kubelet would project it.
        if let Some(sa) = spec.service_account_name.clone() {
            let sas: Api<ServiceAccount> = Api::namespaced(self.client.clone(), &ns);
            let req = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                "spec": {"expirationSeconds": 3600}});
            let token: serde_json::Value = match sas
                .create_subresource("token", &sa, &PostParams::default(), &req)
                .await
            {
                Ok(t) => t,
                Err(kube::Error::Api(s)) if s.code == 404 => return Ok(None),
                Err(e) => return Err(e.to_string()),
            };
            let token = token["status"]["token"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let ca = pod_dir.join("ca.crt");
            std::fs::write(&ca, &self.ca).map_err(|e| e.to_string())?;
            let kubeconfig = pod_dir.join("kubeconfig");
            let text = format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {}\n    certificate-authority: {}\nusers:\n- name: u\n  user:\n    token: {token}\ncontexts:\n- name: x\n  context:\n    cluster: c\n    user: u\n    namespace: {ns}\ncurrent-context: x\n",
                self.server.trim_end_matches('/'),
                ca.display()
            );
            std::fs::write(&kubeconfig, text).map_err(|e| e.to_string())?;
            env.insert("KUBECONFIG".into(), kubeconfig.display().to_string());
        }
        let mut argv: Vec<String> = c.command.clone().unwrap_or_default();
        argv.extend(c.args.clone().unwrap_or_default());
        if argv.is_empty() {
            return Err("the container has no command (the test node runs no images)".into());
        }
        if argv[0] == "mover" || argv[0].ends_with("/mover") {
            argv[0] = mover_bin().display().to_string();
        }
        // The image's VolSync entry point runs `mover` from PATH.
        if argv[0] == VOLSYNC_ENTRY {
            argv[0] = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("deploy/image")
                .join(VOLSYNC_ENTRY.trim_start_matches('/'))
                .display()
                .to_string();
            let bin = mover_bin();
            let dir = bin.parent().unwrap_or(Path::new("."));
            let path = std::env::var("PATH").unwrap_or_default();
            env.insert("PATH".into(), format!("{}:{path}", dir.display()));
        }
        let termination = pod_dir.join("termination-log");
        std::fs::write(&termination, b"").map_err(|e| e.to_string())?;
        std::fs::set_permissions(
            &termination,
            std::os::unix::fs::PermissionsExt::from_mode(0o666),
        )
        .map_err(|e| e.to_string())?;
        Ok(Some(Prepared {
            argv,
            env,
            mounts,
            devices,
            workdir: c.working_dir.clone(),
            identity,
            termination,
        }))
    }

    async fn launch(&self, pod: Pod, run: Prepared) {
        let ns = pod.namespace().unwrap_or_default();
        let name = pod.name_any();
        let uid = pod.uid().unwrap_or_default();
        let mut script = String::from("set -e\n");
        let mut loops = Vec::new();
        let mut env = run.env.clone();
        for (src, dst, ro) in &run.mounts {
            // The pod shares the host's root: a volume over /tmp would hide the host's /tmp
            // (where the test binaries, repositories and this node's files may live), so it
            // is handed over as TMPDIR instead.
            if dst == Path::new("/tmp") {
                env.insert("TMPDIR".into(), src.display().to_string());
                continue;
            }
            let _ = std::fs::create_dir_all(dst);
            script.push_str(&format!(
                "mount --bind '{}' '{}'\n",
                src.display(),
                dst.display()
            ));
            if *ro {
                script.push_str(&format!("mount -o remount,bind,ro '{}'\n", dst.display()));
            }
        }
        for (img, dev) in &run.devices {
            let out = std::process::Command::new("losetup")
                .args(["-f", "--show"])
                .arg(img)
                .output();
            let Ok(out) = out else { continue };
            let loopdev = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if loopdev.is_empty() {
                continue;
            }
            loops.push(loopdev.clone());
            if let Some(parent) = dev.parent() {
                let _ = std::fs::create_dir_all(parent);
            }
            if !dev.exists() {
                let _ = std::fs::write(dev, b"");
            }
            script.push_str(&format!("mount --bind '{loopdev}' '{}'\n", dev.display()));
        }
        // The container's termination message file, as kubelet mounts it.
        script.push_str(&format!(
            "[ -e /dev/termination-log ] || : > /dev/termination-log\nmount --bind '{}' /dev/termination-log\n",
            run.termination.display()
        ));
        if let Some(w) = &run.workdir {
            script.push_str(&format!("cd '{w}'\n"));
        }
        script.push_str("exec \"$@\"\n");
        let log_path = self.root.join("logs").join(format!("{ns}_{name}.log"));
        let log = std::fs::File::create(&log_path).unwrap();
        let mut cmd = tokio::process::Command::new("unshare");
        cmd.args(["-m", "--propagation", "private", "sh", "-c", &script, "sh"])
            .args(node_security::setpriv_args(&run.identity))
            .args(&run.argv)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(&env)
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
        let started = jiff::Timestamp::now().to_string();
        let child = cmd.spawn();
        let container = pod.spec.as_ref().unwrap().containers[0].name.clone();
        let mut child = match child {
            Ok(c) => c,
            Err(e) => {
                let _ =
                    patch_terminated(&api, &name, &container, 128, &e.to_string(), &started).await;
                return;
            }
        };
        if let Some(pid) = child.id() {
            self.running.lock().unwrap().insert(uid.clone(), pid);
        }
        let status = json!({"status": {"phase": "Running", "startTime": started,
            "conditions": [{"type": "Ready", "status": "True"}],
            "containerStatuses": [{"name": container, "image": "", "imageID": "", "ready": true,
                "restartCount": 0, "started": true, "state": {"running": {"startedAt": started}}}]}});
        let _ = api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(status))
            .await;
        let running = Arc::clone(&self.running);
        let termination = run.termination.clone();
        tokio::spawn(async move {
            let code = match child.wait().await {
                Ok(s) => s.code().unwrap_or_else(|| {
                    128 + std::os::unix::process::ExitStatusExt::signal(&s).unwrap_or(9)
                }),
                Err(_) => 128,
            };
            running.lock().unwrap().remove(&uid);
            for l in loops {
                let _ = std::process::Command::new("losetup")
                    .arg("-d")
                    .arg(l)
                    .status();
            }
            // kubelet's rule: the termination-log file (at most 4 KiB), else for a failed
            // container the log's tail (FallbackToLogsOnError).
            let mut message = std::fs::read_to_string(&termination).unwrap_or_default();
            message.truncate(4096);
            if message.trim().is_empty() && code != 0 {
                let text = std::fs::read_to_string(&log_path).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(20).collect();
                message = tail.into_iter().rev().collect::<Vec<_>>().join("\n");
            }
            // As kubelet, the status is written until the API server takes it (it may be
            // away for a while) or the pod is gone.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
            loop {
                match patch_terminated(&api, &name, &container, code, &message, &started).await {
                    Ok(()) => break,
                    Err(kube::Error::Api(s)) if s.code == 404 => break,
                    Err(_) if std::time::Instant::now() < deadline => {
                        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    }
                    Err(e) => {
                        eprintln!("test-node: pod {name} status not written: {e}");
                        break;
                    }
                }
            }
            // A pod being deleted goes once its process has ended.
            if let Ok(Some(p)) = api.get_opt(&name).await {
                if p.metadata.deletion_timestamp.is_some() {
                    let _ = api
                        .delete(&name, &DeleteParams::default().grace_period(0))
                        .await;
                }
            }
        });
    }
}

struct Prepared {
    argv: Vec<String>,
    env: BTreeMap<String, String>,
    mounts: Vec<(PathBuf, PathBuf, bool)>,
    devices: Vec<(PathBuf, PathBuf)>,
    workdir: Option<String>,
    identity: node_security::Identity,
    /// The container's `/dev/termination-log`.
    termination: PathBuf,
}

fn is_terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded") | Some("Failed")
    )
}

async fn patch_terminated(
    api: &Api<Pod>,
    name: &str,
    container: &str,
    code: i32,
    message: &str,
    started: &str,
) -> Result<(), kube::Error> {
    let finished = jiff::Timestamp::now().to_string();
    let status = json!({"status": {
        "phase": if code == 0 { "Succeeded" } else { "Failed" },
        "conditions": [{"type": "Ready", "status": "False"}],
        "containerStatuses": [{"name": container, "image": "", "imageID": "", "ready": false,
            "restartCount": 0, "started": false,
            "state": {"terminated": {"exitCode": code,
                "reason": if code == 0 { "Completed" } else { "Error" },
                "message": message, "startedAt": started, "finishedAt": finished}}}]}});
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(status))
        .await
        .map(|_| ())
}

/// The directory or image file behind a PV the test node provisioned: its CSI volume handle.
fn pv_path(pv: &PersistentVolume) -> Option<PathBuf> {
    let csi = pv.spec.as_ref()?.csi.as_ref()?;
    (csi.driver == PROVISIONER).then(|| PathBuf::from(&csi.volume_handle))
}
