//! The Kubernetes demo (`scripts/k8s-demo.sh`): a real control plane on 127.0.0.1, mover's
//! CRDs from deploy/, the test node playing kubelet and CSI (tests/it/controller/node.rs),
//! `mover controller`, and a VolumeBackup of an example PVC, then a VolumeRestore of it.
//! While it runs, `kubectl get volumebackups -n demo -w` shows the phase and progress.
//!
//! `--exit` stops once the restored volume is checked; otherwise it waits for Ctrl-C.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod plane {
    /// What the test node needs of a control plane.
    pub struct Plane {
        pub dir: std::path::PathBuf,
        pub kubeconfig: std::path::PathBuf,
    }
}

#[allow(dead_code)]
#[path = "../tests/it/controller/node.rs"]
mod node;
#[path = "../tests/it/controller/node_logs.rs"]
mod node_logs;
#[path = "../tests/it/controller/node_security.rs"]
mod node_security;

type Result<T> = std::result::Result<T, String>;

fn kubectl(bin: &Path, kubeconfig: &Path) -> Command {
    let mut c = Command::new(bin);
    c.arg("--kubeconfig").arg(kubeconfig);
    c
}

fn run(mut c: Command, what: &str) -> Result<String> {
    let out = c.output().map_err(|e| format!("{what}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{what} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).to_string())
}

fn apply(bin: &Path, kubeconfig: &Path, yaml: &str) -> Result<()> {
    let mut c = kubectl(bin, kubeconfig);
    c.args(["apply", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    let mut child = c.spawn().map_err(|e| format!("kubectl apply: {e}"))?;
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(yaml.as_bytes())
        .map_err(|e| format!("kubectl apply: {e}"))?;
    let out = child
        .wait_with_output()
        .map_err(|e| format!("kubectl apply: {e}"))?;
    if !out.status.success() {
        return Err(format!("kubectl apply failed for:\n{yaml}"));
    }
    print!("{}", String::from_utf8_lossy(&out.stdout));
    Ok(())
}

fn jsonpath(bin: &Path, kubeconfig: &Path, what: &str, path: &str) -> String {
    let mut c = kubectl(bin, kubeconfig);
    c.args(["get", "-n", "demo", what, "-o"])
        .arg(format!("jsonpath={path}"));
    run(c, "kubectl get").unwrap_or_default()
}

fn wait_phase(bin: &Path, kubeconfig: &Path, what: &str) -> Result<String> {
    let start = Instant::now();
    let mut last = String::new();
    while start.elapsed() < Duration::from_secs(300) {
        let line = jsonpath(
            bin,
            kubeconfig,
            what,
            "{.status.phase} {.status.progress.percent} {.status.message}",
        );
        if line != last {
            println!("  {what}: {line}");
            last = line.clone();
        }
        let phase = line.split(' ').next().unwrap_or("");
        if matches!(phase, "Completed" | "Failed" | "Canceled") {
            return Ok(phase.to_string());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    Err(format!("{what} did not finish within 5 minutes"))
}

fn write_demo_data(dir: &Path, root: &Path) -> Result<()> {
    // The project's own sources, and 48 MiB that do not compress, so progress shows.
    let status = Command::new("cp")
        .arg("-a")
        .arg(root.join("src"))
        .arg(root.join("docs"))
        .arg(dir)
        .status()
        .map_err(|e| format!("cp: {e}"))?;
    if !status.success() {
        return Err("copying the demo data failed".into());
    }
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut big = Vec::with_capacity(48 << 20);
    while big.len() < 48 << 20 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        big.extend_from_slice(&x.to_le_bytes());
    }
    std::fs::write(dir.join("database.bin"), big).map_err(|e| format!("writing data: {e}"))
}

fn same_tree(a: &Path, b: &Path) -> Result<()> {
    let out = Command::new("diff")
        .arg("-r")
        .arg(a)
        .arg(b)
        .output()
        .map_err(|e| format!("diff: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "the restored volume differs:\n{}",
            String::from_utf8_lossy(&out.stdout)
        ))
    }
}

/// The `mover` cargo built beside this example (target/release/examples/k8s_demo).
fn mover_binary() -> Result<PathBuf> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    exe.parent()
        .and_then(|p| p.parent())
        .map(|p| p.join("mover"))
        .filter(|p| p.exists())
        .ok_or_else(|| "build the mover binary first: cargo build --release --bins".into())
}

async fn demo(mover: PathBuf, exit: bool) -> Result<()> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dir = root.join("target/k8s-demo");
    // A previous demo's control plane goes first, then its files.
    let _ = Command::new(root.join("scripts/control-plane.sh"))
        .arg("stop")
        .arg(&dir)
        .status();
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    println!(
        "starting etcd, kube-apiserver and kube-controller-manager in {}",
        dir.display()
    );
    let mut c = Command::new(root.join("scripts/control-plane.sh"));
    c.arg("start").arg(&dir);
    let started = run(c, "scripts/control-plane.sh start")?;
    let kubectl_bin = PathBuf::from(
        started
            .split("kubectl: ")
            .nth(1)
            .and_then(|s| s.split(')').next())
            .ok_or("control-plane.sh did not name its kubectl")?,
    );
    let kubeconfig = dir.join("kubeconfig");
    let _stop = StopPlane(root.join("scripts/control-plane.sh"), dir.clone());
    async {
        let mut c = kubectl(&kubectl_bin, &kubeconfig);
        c.args(["apply", "-f"]).arg(root.join("deploy/crds.yaml"));
        run(c, "installing deploy/crds.yaml")?;
        let mut c = kubectl(&kubectl_bin, &kubeconfig);
        c.args(["wait", "--for=condition=Established", "crd", "--all", "--timeout=60s"]);
        run(c, "waiting for the CRDs")?;

        let plane: &'static plane::Plane = Box::leak(Box::new(plane::Plane {
            dir: dir.clone(),
            kubeconfig: kubeconfig.clone(),
        }));
        let node = node::TestNode::shared(plane).await;
        let log = std::fs::File::create(dir.join("controller.log")).map_err(|e| e.to_string())?;
        let mut controller = Command::new(&mover)
            .args(["controller", "--image", "mover:demo", "--lease-namespace", "default"])
            .env("KUBECONFIG", &kubeconfig)
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("starting mover controller: {e}"))?;
        let steps = async {
            let repo = dir.join("repository");
            apply(
                &kubectl_bin,
                &kubeconfig,
                &format!(
                    "apiVersion: v1\nkind: Namespace\nmetadata: {{name: demo}}\n---\n\
                     apiVersion: v1\nkind: Secret\nmetadata: {{name: restic, namespace: demo}}\n\
                     stringData:\n  RESTIC_REPOSITORY: {}\n  RESTIC_PASSWORD: demo-password\n\
                     \x20 MOVER_LIMIT_UPLOAD: \"6144\"\n---\n\
                     apiVersion: mover.dev/v1alpha1\nkind: Repository\n\
                     metadata: {{name: local, namespace: demo}}\nspec: {{secretRef: {{name: restic}}}}\n---\n\
                     apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {{name: data, namespace: demo}}\n\
                     spec: {{storageClassName: {}, accessModes: [ReadWriteOnce], \
                     resources: {{requests: {{storage: 1Gi}}}}}}\n",
                    repo.display(),
                    node::STORAGE_CLASS
                ),
            )?;
            let source = node.wait_volume("demo", "data").await;
            write_demo_data(&source, &root)?;
            println!(
                "\nwatch it from another shell:\n  {} --kubeconfig {} get volumebackups,volumerestores -n demo -w\n",
                kubectl_bin.display(),
                kubeconfig.display()
            );
            apply(
                &kubectl_bin,
                &kubeconfig,
                "apiVersion: mover.dev/v1alpha1\nkind: VolumeBackup\n\
                 metadata: {name: data-1, namespace: demo}\n\
                 spec: {source: {pvc: data}, repository: local, tags: [demo]}\n",
            )?;
            let phase = wait_phase(&kubectl_bin, &kubeconfig, "volumebackup/data-1")?;
            if phase != "Completed" {
                return Err(format!("the backup ended {phase}; see {}", dir.display()));
            }
            let id = jsonpath(&kubectl_bin, &kubeconfig, "volumebackup/data-1", "{.status.snapshotID}");
            println!("snapshot {id} is in {}", repo.display());
            apply(
                &kubectl_bin,
                &kubeconfig,
                &format!(
                    "apiVersion: mover.dev/v1alpha1\nkind: VolumeRestore\n\
                     metadata: {{name: data-restore, namespace: demo}}\n\
                     spec: {{repository: local, source: {{snapshotID: {id}}}, \
                     target: {{newPVC: {{name: data-restored, storageClassName: {}}}}}}}\n",
                    node::STORAGE_CLASS
                ),
            )?;
            let phase = wait_phase(&kubectl_bin, &kubeconfig, "volumerestore/data-restore")?;
            if phase != "Completed" {
                return Err(format!("the restore ended {phase}; see {}", dir.display()));
            }
            let restored = node.wait_volume("demo", "data-restored").await;
            same_tree(&source, &restored)?;
            println!("PVC data-restored holds the same files as PVC data");
            Ok::<(), String>(())
        };
        let outcome = steps.await;
        if outcome.is_ok() && !exit {
            println!("\nthe cluster stays up; Ctrl-C stops it");
            let _ = tokio::signal::ctrl_c().await;
        }
        let _ = controller.kill();
        let _ = controller.wait();
        outcome
    }
    .await
}

/// Stops the control plane however the demo ends (an error or a panic included).
struct StopPlane(PathBuf, PathBuf);

impl Drop for StopPlane {
    fn drop(&mut self) {
        let _ = Command::new(&self.0).arg("stop").arg(&self.1).status();
    }
}

fn main() {
    let exit = std::env::args().any(|a| a == "--exit");
    let mover = match mover_binary() {
        Ok(m) => m,
        Err(e) => {
            eprintln!("k8s demo: {e}");
            std::process::exit(1);
        }
    };
    // The test node runs pods' `mover` as this binary.
    #[allow(unsafe_code)]
    // SAFETY: set before the runtime starts, while this is the only thread.
    unsafe {
        std::env::set_var("MOVER_BIN", &mover);
    }
    mover::k8s::install_crypto_provider();
    let rt = tokio::runtime::Runtime::new().expect("a tokio runtime");
    if let Err(e) = rt.block_on(demo(mover, exit)) {
        eprintln!("k8s demo: {e}");
        std::process::exit(1);
    }
}
