//! One real control plane per test process (scripts/control-plane.sh: etcd, kube-apiserver,
//! kube-controller-manager on 127.0.0.1), mover's CRDs installed, and the test node beside it.

use super::node::TestNode;
use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

pub struct Plane {
    pub dir: PathBuf,
    pub kubeconfig: PathBuf,
    pub kubectl: PathBuf,
}

static PLANE: OnceLock<Plane> = OnceLock::new();
static STOP_DIR: OnceLock<PathBuf> = OnceLock::new();

extern "C" fn stop_plane() {
    if let Some(dir) = STOP_DIR.get() {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/control-plane.sh");
        let _ = Command::new(script).arg("stop").arg(dir).status();
    }
}

/// The shared control plane, started on first use.
pub fn plane() -> &'static Plane {
    PLANE.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        // Beside the test binaries, where pods see it as it is (see node.rs on /tmp).
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("mover-plane-{}", std::process::id()));
        let out = Command::new(root.join("scripts/control-plane.sh"))
            .arg("start")
            .arg(&dir)
            .output()
            .expect("running scripts/control-plane.sh");
        assert!(
            out.status.success(),
            "the control plane did not start (CONTROL_PLANE_BIN or scripts/build-control-plane.sh \
             builds it): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let _ = STOP_DIR.set(dir.clone());
        #[allow(unsafe_code)]
        // SAFETY: registering a plain extern "C" function with atexit has no preconditions.
        unsafe {
            libc::atexit(stop_plane);
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        let kubectl = stdout
            .split("kubectl: ")
            .nth(1)
            .and_then(|s| s.split(')').next())
            .map(PathBuf::from)
            .expect("control-plane.sh names its kubectl");
        let plane = Plane {
            kubeconfig: dir.join("kubeconfig"),
            dir,
            kubectl,
        };
        // Velero's CRDs too: the controller runs as Velero's data mover in every scenario.
        plane.apply_crds(&super::volsync::peers_dir().join("crds/velero"));
        plane.apply_crds(&root.join("deploy/crds.yaml"));
        plane
    })
}

impl Plane {
    /// `kubectl apply -f path` (a file or a directory of CRDs), then waits until every CRD
    /// is Established.
    pub fn apply_crds(&self, path: &Path) {
        let out = self
            .kubectl()
            .arg("apply")
            .arg("-f")
            .arg(path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = self
            .kubectl()
            .args([
                "wait",
                "--for=condition=Established",
                "crd",
                "--all",
                "--timeout=60s",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn kubectl(&self) -> Command {
        let mut c = Command::new(&self.kubectl);
        c.arg("--kubeconfig").arg(&self.kubeconfig);
        c
    }

    /// Stops kube-apiserver (SIGTERM, as a control-plane node that restarts), keeps it down
    /// for `down`, starts it again with the same command line and returns once `/readyz`
    /// answers. etcd keeps every object meanwhile; callers hold the controller alone.
    pub async fn apiserver_outage(&self, down: std::time::Duration) {
        let pids_file = self.dir.join("pids");
        let pids = std::fs::read_to_string(&pids_file).expect("the control plane's pids");
        let mut pids: Vec<String> = pids.lines().map(str::to_string).collect();
        let (slot, pid) = pids
            .iter()
            .enumerate()
            .find(|(_, p)| {
                std::fs::read_to_string(format!("/proc/{p}/comm"))
                    .is_ok_and(|c| c.trim() == "kube-apiserver")
            })
            .map(|(i, p)| (i, p.clone()))
            .expect("a running kube-apiserver");
        let argv: Vec<std::ffi::OsString> = std::fs::read(format!("/proc/{pid}/cmdline"))
            .expect("kube-apiserver's command line")
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| std::ffi::OsStr::from_bytes(a).to_os_string())
            .collect();
        let pid: i32 = pid.parse().unwrap();
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        );
        let gone = std::time::Instant::now() + std::time::Duration::from_secs(30);
        // Gone, or a zombie nobody reaps yet: either way its port is free.
        let alive = || {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
                s.rsplit(')')
                    .next()
                    .is_some_and(|r| !r.trim_start().starts_with('Z'))
            })
        };
        while alive() && std::time::Instant::now() < gone {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        tokio::time::sleep(down).await;
        let log = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(self.dir.join("kube-apiserver.log"))
            .unwrap();
        let mut child = Command::new(&argv[0])
            .args(&argv[1..])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("restarting kube-apiserver");
        pids[slot] = child.id().to_string();
        // Reaped when it ends (the plane's stop kills it by the pid written here).
        std::thread::spawn(move || child.wait());
        std::fs::write(&pids_file, pids.join("\n") + "\n").unwrap();
        let ready = std::time::Instant::now() + std::time::Duration::from_secs(120);
        loop {
            let out = self.kubectl().args(["get", "--raw", "/readyz"]).output();
            if out.is_ok_and(|o| o.status.success()) {
                break;
            }
            assert!(
                std::time::Instant::now() < ready,
                "kube-apiserver did not come back within 120 s"
            );
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
    }

    pub async fn client(&self) -> Client {
        mover::k8s::install_crypto_provider();
        let config = Kubeconfig::read_from(&self.kubeconfig).expect("reading the kubeconfig");
        let config = kube::Config::from_custom_kubeconfig(config, &KubeConfigOptions::default())
            .await
            .expect("loading the kubeconfig");
        Client::try_from(config).expect("a client")
    }
}

/// The control plane, its test node and a fresh namespace for one test.
pub async fn setup(prefix: &str) -> (Client, &'static TestNode, String) {
    let plane = plane();
    let client = plane.client().await;
    let node = TestNode::shared(plane).await;
    let ns = format!("{prefix}-{}", &uuid_like()[..8]);
    let api: kube::Api<k8s_openapi::api::core::v1::Namespace> = kube::Api::all(client.clone());
    let obj: k8s_openapi::api::core::v1::Namespace =
        serde_json::from_value(serde_json::json!({"metadata": {"name": ns}})).unwrap();
    api.create(&Default::default(), &obj).await.unwrap();
    (client, node, ns)
}

fn uuid_like() -> String {
    use std::time::{SystemTime, UNIX_EPOCH};
    let n = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{:016x}", n ^ (u128::from(std::process::id()) << 40))
        .chars()
        .rev()
        .collect()
}

/// A scratch directory for a test's repositories, beside the control plane's.
pub fn scratch() -> tempfile::TempDir {
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("a scratch directory")
}
