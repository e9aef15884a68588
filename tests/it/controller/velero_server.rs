//! Velero's own server and CLI (built from its Go module, with its AWS object store plugin,
//! by scripts/build-peers.sh) against the test control plane: `velero backup create
//! --snapshot-move-data --data-mover mover` backs a namespace up. Velero's CSI plugin
//! snapshots the claim and hands a DataUpload to mover, Velero waits for it as for its own
//! mover, the backup ends Completed with its metadata in the BSL, and restic restores the
//! claim's bytes from the snapshot the DataUpload names.

use super::harness::{claim, controller_alone, controller_log, random_bytes};
use super::plane::{Plane, plane, scratch, setup};
use super::velero::{VELERO_NS, restic_at, velero_namespace};
use super::velero_gc::bsl_root;
use super::velero_tls::find_file;
use super::volsync::peers_dir;
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};
use mover::k8s::api::velero::{Backup, DataUpload};
use object_store::ObjectStoreExt;
use object_store::path::Path as ObjectPath;
use serde_json::json;
use std::process::{Child, Command};
use std::time::Duration;

/// The controllers of Velero's server this test needs: backups, their async operations and
/// their finalizing. The others are off, so that the server does not sync, expire or
/// delete what other scenarios keep in the same Velero namespace.
const DISABLED_CONTROLLERS: &str = "backup-sync,gc,schedule,backup-repo,backup-deletion,\
     restore,restore-operations,restore-finalizer,server-status-request,download-request";

/// `velero server` as a process; killed when dropped.
struct VeleroServer {
    child: Child,
    log: std::path::PathBuf,
}

impl VeleroServer {
    fn start(plane: &Plane) -> VeleroServer {
        let peers = peers_dir();
        let port = || {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        };
        let log = plane.dir.join("velero-server.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(peers.join("velero"))
            .args(["server", "--namespace", VELERO_NS, "--kubeconfig"])
            .arg(&plane.kubeconfig)
            .arg("--plugin-dir")
            .arg(peers.join("plugins"))
            .arg(format!("--metrics-address=127.0.0.1:{}", port()))
            .arg(format!("--profiler-address=127.0.0.1:{}", port()))
            .arg(format!("--disable-controllers={DISABLED_CONTROLLERS}"))
            .args([
                // Velero runs its CSI actions (VolumeSnapshot, DataUpload) only with this feature.
                "--features=EnableCSI",
                "--default-backup-storage-location=default",
                "--item-operation-sync-frequency=2s",
                "--store-validation-frequency=1h",
                "--log-level=info",
            ])
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("starting velero server");
        VeleroServer { child, log }
    }

    fn log_tail(&self, lines: usize) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(lines).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    }
}

impl Drop for VeleroServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The VolumeSnapshotClass Velero's CSI plugin picks for the test node's driver (by the
/// label `velero.io/csi-volumesnapshot-class`).
async fn snapshot_class(plane: &Plane) {
    let class = json!({"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshotClass",
        "metadata": {"name": "test-node", "labels": {"velero.io/csi-volumesnapshot-class": "true"}},
        "driver": "test-node.mover.dev", "deletionPolicy": "Delete"});
    let out = plane
        .kubectl()
        .args(["apply", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin
                .take()
                .unwrap()
                .write_all(class.to_string().as_bytes())?;
            c.wait_with_output()
        })
        .unwrap();
    assert!(
        out.status.success(),
        "kubectl apply VolumeSnapshotClass: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Waits until the Backup's phase is final and returns it.
async fn final_phase(
    client: &Client,
    name: &str,
    server: &VeleroServer,
    node: &super::node::TestNode,
    app: &str,
) -> String {
    let backups: Api<Backup> = Api::namespaced(client.clone(), VELERO_NS);
    let mut seen: Vec<String> = Vec::new();
    for _ in 0..960 {
        if let Ok(b) = backups.get(name).await {
            let phase = b
                .status
                .and_then(|s| s.phase)
                .unwrap_or_else(|| "New".into());
            if seen.last() != Some(&phase) {
                seen.push(phase.clone());
            }
            if matches!(
                phase.as_str(),
                "Completed" | "PartiallyFailed" | "Failed" | "FailedValidation"
            ) {
                return phase;
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!(
        "backup {name} did not end within 240 s (phases {seen:?})\nvelero server (tail):\n{}\npod logs:\n{}\ncontroller log (tail):\n{}",
        server.log_tail(60),
        node.logs(VELERO_NS, "mover-") + &node.logs(app, "mover-"),
        controller_log()
            .lines()
            .rev()
            .take(30)
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn velero_backup_create_with_the_mover_data_mover_completes() {
    let plane = plane();
    let (client, node, app) = setup("velero-server").await;
    // Velero's server validates every BSL of its namespace: no other scenario runs meanwhile.
    let _alone = controller_alone(plane).await;
    let bsl = velero_namespace(&client).await;
    snapshot_class(plane).await;
    let source = claim(&client, node, &app, "data", "Filesystem", "1Gi").await;
    std::fs::remove_dir(source.join("lost+found")).ok();
    let bytes = random_bytes(5_000_000, 77);
    std::fs::write(source.join("orders.db"), &bytes).unwrap();
    std::fs::create_dir_all(source.join("conf")).unwrap();
    std::fs::write(source.join("conf/app.yaml"), b"replicas: 3\n").unwrap();

    let server = VeleroServer::start(plane);
    let backup = format!("{app}-nightly");
    let out = Command::new(peers_dir().join("velero"))
        .args(["backup", "create", &backup, "--namespace", VELERO_NS])
        .arg("--kubeconfig")
        .arg(&plane.kubeconfig)
        .args([
            "--include-namespaces",
            &app,
            "--snapshot-move-data",
            "--data-mover",
            "mover",
            "--storage-location",
            "default",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "velero backup create: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let phase = final_phase(&client, &backup, &server, node, &app).await;
    assert_eq!(
        phase,
        "Completed",
        "velero server (tail):\n{}",
        server.log_tail(60)
    );

    // The DataUpload Velero's CSI plugin made for the claim, done by mover.
    let uploads: Api<DataUpload> = Api::namespaced(client.clone(), VELERO_NS);
    let mine = uploads
        .list(&ListParams::default().labels(&format!("velero.io/backup-name={backup}")))
        .await
        .unwrap()
        .items;
    assert_eq!(
        mine.len(),
        1,
        "{mine:?}\nvelero server (tail):\n{}",
        server.log_tail(80)
    );
    let du = &mine[0];
    assert_eq!(du.spec.datamover.as_deref(), Some("mover"));
    assert_eq!(du.spec.source_pvc, "data");
    let st = du.status.clone().unwrap();
    assert_eq!(
        st.phase.as_deref(),
        Some("Completed"),
        "{:?}",
        du.name_any()
    );
    let id = st.snapshot_id.clone().unwrap();
    let total = st.progress.unwrap().total_bytes.unwrap_or(0);
    assert!(total >= bytes.len() as i64, "totalBytes {total}");

    // Velero wrote the backup's metadata into the BSL, beside mover's repository.
    let store = bsl_root(&bsl.bucket);
    let metadata = ObjectPath::from(format!("cluster-a/backups/{backup}/velero-backup.json"));
    let head = store.object_store().head(&metadata).await;
    assert!(head.is_ok(), "{metadata}: {head:?}");

    // restic restores the claim's bytes from the snapshot the DataUpload names.
    let tmp = scratch();
    let target = tmp.path().join("restored");
    let restore = restic_at(&bsl.bucket, &app)
        .args(["restore", &id, "--target"])
        .arg(&target)
        .output()
        .unwrap();
    assert!(
        restore.status.success(),
        "{}",
        String::from_utf8_lossy(&restore.stderr)
    );
    let found = find_file(&target, "orders.db");
    assert_eq!(std::fs::read(&found).unwrap(), bytes);
    assert_eq!(
        std::fs::read(found.parent().unwrap().join("conf/app.yaml")).unwrap(),
        b"replicas: 3\n"
    );
}
