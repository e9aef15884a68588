//! What every scenario uses: the shared `mover controller` process (restartable), object
//! creation, waiting with the logs on failure, a Repository and its Secret, test data.

use super::node::{STORAGE_CLASS, TestNode};
use super::plane::{Plane, plane};
use crate::support::compare::CompareOptions;
use crate::support::{PASSWORD, ok, restic};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Secret};
use kube::Client;
use kube::api::{Api, PostParams};
use mover::k8s::api::Repository;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;
use tokio::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

/// The volume's root is the restore target, whose own metadata restic does not store.
pub fn contents() -> CompareOptions {
    CompareOptions {
        root_metadata: false,
        ..CompareOptions::default()
    }
}

/// What a restore by the hardened default (uid 65532, no capability) gives back: all but
/// the owners, which a process that is not root cannot set; the files are the pod user's.
/// `spec.mover.privileged` restores owners too (faults.rs checks them).
pub fn contents_unprivileged() -> CompareOptions {
    CompareOptions {
        owner: false,
        ..contents()
    }
}

/// Asserts `path` is owned by the hardened mover's user.
pub fn assert_owned_by_mover(path: &Path) {
    use std::os::unix::fs::MetadataExt;
    let md = std::fs::symlink_metadata(path).unwrap();
    assert_eq!(
        md.uid(),
        65532,
        "{} is not the mover user's",
        path.display()
    );
}

static CONTROLLER: OnceLock<Mutex<Child>> = OnceLock::new();
/// False between [`kill_controller`] and [`start_controller`].
static WANTED: AtomicBool = AtomicBool::new(true);
/// Scenarios hold it shared while they run; the restart scenario holds it alone, so that
/// no other scenario's timing sees the controller away.
static RUNNING: RwLock<()> = RwLock::const_new(());

extern "C" fn stop_controller() {
    WANTED.store(false, Ordering::SeqCst);
    if let Some(c) = CONTROLLER.get() {
        if let Ok(mut c) = c.lock() {
            let _ = c.kill();
        }
    }
}

/// Who the controller runs as, when not as the control plane's admin.
#[derive(Clone, Debug)]
pub struct Identity {
    /// A kubeconfig with that identity's credentials.
    pub kubeconfig: PathBuf,
    /// The namespace its leader Lease may live in.
    pub lease_namespace: String,
}

/// `None`: the admin, watching Secret metadata (`--watch-secrets`).
static IDENTITY: Mutex<Option<Identity>> = Mutex::new(None);

fn spawn_controller(plane: &Plane) -> Child {
    let identity = IDENTITY.lock().unwrap().clone();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(plane.dir.join("controller.log"))
        .unwrap();
    let mut c = Command::new(env!("CARGO_BIN_EXE_mover"));
    c.args(["controller", "--image", "mover:test"])
        .arg(format!("--metrics-addr=127.0.0.1:{port}"))
        // As a log collector reads it; the level is the controller's default (info).
        .arg("--log-format=json")
        .env_remove("MOVER_LOG")
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    match identity {
        None => c
            .args([
                "--lease-namespace",
                "default",
                "--watch-secrets",
                "--velero-namespace",
                super::velero::VELERO_NS,
                // The retention test waits for a periodic sweep.
                "--velero-gc-interval",
                "10s",
            ])
            .env("KUBECONFIG", &plane.kubeconfig),
        Some(id) => c
            .args(["--lease-namespace", &id.lease_namespace])
            .env("KUBECONFIG", &id.kubeconfig),
    };
    c.spawn().expect("starting mover controller")
}

/// Restarts the controller as `identity` (`None`: the admin again).
pub fn restart_controller_as(
    plane: &Plane,
    alone: &RwLockWriteGuard<'static, ()>,
    identity: Option<Identity>,
) {
    kill_controller(plane, alone);
    *IDENTITY.lock().unwrap() = identity;
    start_controller(plane, alone);
}

fn start_once(plane: &Plane) -> &'static Mutex<Child> {
    CONTROLLER.get_or_init(|| {
        let child = spawn_controller(plane);
        #[allow(unsafe_code)]
        // SAFETY: registering a plain extern "C" function with atexit has no preconditions.
        unsafe {
            libc::atexit(stop_controller);
        }
        // As a Deployment restarts its pod: a controller that exits on its own (it stops
        // when it cannot renew its Lease, e.g. while the API server is away) is started
        // again, unless a scenario took it down on purpose.
        std::thread::spawn(|| {
            loop {
                std::thread::sleep(Duration::from_secs(1));
                let Some(slot) = CONTROLLER.get() else {
                    continue;
                };
                let mut child = slot.lock().unwrap();
                if WANTED.load(Ordering::SeqCst) && matches!(child.try_wait(), Ok(Some(_))) {
                    *child = spawn_controller(super::plane::plane());
                }
            }
        });
        Mutex::new(child)
    })
}

/// `mover controller` as a process, talking to the control plane as its admin; the guard
/// keeps it from being restarted under the caller.
pub async fn controller(plane: &Plane) -> RwLockReadGuard<'static, ()> {
    let guard = RUNNING.read().await;
    start_once(plane);
    guard
}

/// The controller to the caller alone: no other scenario runs while the guard is held.
pub async fn controller_alone(plane: &Plane) -> RwLockWriteGuard<'static, ()> {
    let guard = RUNNING.write().await;
    start_once(plane);
    guard
}

/// Kills the controller (SIGKILL, as a crashed pod) and starts a new process; the new one
/// waits out the old one's Lease before it acts.
pub fn restart_controller(plane: &Plane, alone: &RwLockWriteGuard<'static, ()>) {
    kill_controller(plane, alone);
    start_controller(plane, alone);
}

/// Kills the controller (SIGKILL) and leaves it down until [`start_controller`].
pub fn kill_controller(plane: &Plane, _alone: &RwLockWriteGuard<'static, ()>) {
    let slot = start_once(plane);
    let mut child = slot.lock().unwrap();
    WANTED.store(false, Ordering::SeqCst);
    let _ = child.kill();
    let _ = child.wait();
}

/// Stops the controller as a rolling update does (SIGTERM) and leaves it down until
/// [`start_controller`]; returns whether it exited cleanly within 30 s.
pub fn terminate_controller(plane: &Plane, _alone: &RwLockWriteGuard<'static, ()>) -> bool {
    let slot = start_once(plane);
    let mut child = slot.lock().unwrap();
    WANTED.store(false, Ordering::SeqCst);
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return status.success();
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Starts a controller process after [`kill_controller`].
pub fn start_controller(plane: &Plane, _alone: &RwLockWriteGuard<'static, ()>) {
    let slot = start_once(plane);
    let mut child = slot.lock().unwrap();
    *child = spawn_controller(plane);
    WANTED.store(true, Ordering::SeqCst);
}

pub fn controller_log() -> String {
    std::fs::read_to_string(plane().dir.join("controller.log")).unwrap_or_default()
}

pub async fn create<K>(client: &Client, ns: &str, value: serde_json::Value) -> K
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::Serialize
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    let obj: K = serde_json::from_value(value).expect("a valid object");
    api.create(&PostParams::default(), &obj)
        .await
        .unwrap_or_else(|e| panic!("creating {}: {e}", K::kind(&())))
}

/// Waits until `f` gives `Some`, or fails naming what was awaited and what the logs say.
pub async fn wait_for<T, F, Fut>(what: &str, seconds: u64, ns: &str, node: &TestNode, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    for _ in 0..seconds * 4 {
        if let Some(v) = f().await {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!(
        "{what} did not happen within {seconds} s\npod logs:\n{}\ncontroller log (tail):\n{}",
        node.logs(ns, "mover-"),
        controller_log()
            .lines()
            .rev()
            .take(30)
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// Repository `repo` with Secret `restic` holding the location and password.
pub async fn repository(client: &Client, ns: &str, repo: &Path, password: &str) {
    repository_with(client, ns, repo, password, json!({}), json!({})).await;
}

/// [`repository`] with `extra` Secret keys and `spec` fields merged into the Repository's.
pub async fn repository_with(
    client: &Client,
    ns: &str,
    repo: &Path,
    password: &str,
    extra: serde_json::Value,
    spec: serde_json::Value,
) {
    let mut data = json!({"RESTIC_REPOSITORY": repo, "RESTIC_PASSWORD": password});
    data.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    create::<Secret>(
        client,
        ns,
        json!({"metadata": {"name": "restic"}, "stringData": data}),
    )
    .await;
    let mut repo_spec = json!({"secretRef": {"name": "restic"}});
    repo_spec
        .as_object_mut()
        .unwrap()
        .extend(spec.as_object().unwrap().clone());
    create::<Repository>(
        client,
        ns,
        json!({"metadata": {"name": "repo"}, "spec": repo_spec}),
    )
    .await;
}

/// `len` bytes that do not compress (a xorshift stream from `seed`).
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

pub fn write_tree(dir: &Path) {
    std::fs::create_dir_all(dir.join("app/logs")).unwrap();
    std::fs::create_dir_all(dir.join("lost+found")).unwrap();
    let big: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(dir.join("app/db.bin"), &big).unwrap();
    for i in 0..50 {
        std::fs::write(
            dir.join(format!("app/logs/{i}.log")),
            format!("line {i}\n").repeat(i + 1),
        )
        .unwrap();
    }
    std::os::unix::fs::symlink("db.bin", dir.join("app/current")).unwrap();
}

/// A claim of the test node's StorageClass, once bound: its directory (or image file).
pub async fn claim(
    client: &Client,
    node: &TestNode,
    ns: &str,
    name: &str,
    mode: &str,
    size: &str,
) -> PathBuf {
    create::<PersistentVolumeClaim>(
        client,
        ns,
        json!({"metadata": {"name": name}, "spec": {
            "storageClassName": STORAGE_CLASS, "accessModes": ["ReadWriteOnce"],
            "volumeMode": mode, "resources": {"requests": {"storage": size}}}}),
    )
    .await;
    node.wait_volume(ns, name).await
}

/// `restic snapshots --json` of `repo`.
pub fn snapshots(repo: &Path) -> Vec<serde_json::Value> {
    let out = ok(restic()
        .arg("-r")
        .arg(repo)
        .env("RESTIC_PASSWORD", PASSWORD)
        .args(["snapshots", "--json"]));
    serde_json::from_str::<serde_json::Value>(&out)
        .unwrap()
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// `restic restore ID --target TARGET`.
pub fn restic_restore(repo: &Path, id: &str, target: &Path) {
    ok(restic()
        .arg("-r")
        .arg(repo)
        .env("RESTIC_PASSWORD", PASSWORD)
        .args(["restore", id, "--target"])
        .arg(target));
}
