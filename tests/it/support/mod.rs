//! Helpers shared by the integration tests: running the two binaries, temp repositories,
//! generated trees, tree comparison, the S3 server and a fault-injecting object store.

#![allow(dead_code)]

pub mod compare;
pub mod faulty_store;
pub mod history;
pub mod s3;
pub mod tree_gen;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const PASSWORD: &str = "geheim";

/// The `mover` binary built for this test run.
pub fn mover() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mover"));
    c.env_remove("RESTIC_REPOSITORY")
        .env_remove("RESTIC_PASSWORD_FILE")
        .env_remove("RESTIC_PASSWORD_COMMAND")
        .env_remove("RESTIC_HOST")
        .env("RESTIC_PASSWORD", PASSWORD);
    c
}

/// The real restic binary (Debian's 0.14). Fails loudly when it is missing: the interop
/// tests must run.
pub fn restic() -> Command {
    restic_named(
        "restic",
        "install it with `apt-get update && apt-get install -y restic` (bash .ci/run does)",
    )
}

/// restic 0.18 (what VolSync ships), built from its Go module by `.ci/run` and linked as
/// `restic-0.18`. Fails loudly when it is missing.
pub fn restic_018() -> Command {
    restic_named(
        "restic-0.18",
        "build it with `GOBIN=/usr/local/bin go install github.com/restic/restic/cmd/restic@v0.18.1` \
         and link it as /usr/local/bin/restic-0.18 (bash .ci/run does)",
    )
}

fn restic_named(binary: &str, how: &str) -> Command {
    let found = Command::new(binary).arg("version").output();
    match found {
        Ok(o) if o.status.success() => {}
        _ => panic!("the `{binary}` binary is required for interoperability tests: {how}"),
    }
    let mut c = Command::new(binary);
    c.env_remove("RESTIC_REPOSITORY")
        .env_remove("RESTIC_HOST")
        .env("RESTIC_PASSWORD", PASSWORD)
        .env(
            "RESTIC_CACHE_DIR",
            std::env::temp_dir().join("mover-it-restic-cache"),
        )
        .arg("--no-cache");
    c
}

/// Run and return the output, whatever the exit status.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Run and require success; returns stdout.
pub fn ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "command failed ({}): {cmd:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Run and require failure with `code`; returns stderr.
pub fn fails_with(cmd: &mut Command, code: i32) -> String {
    let out = run(cmd);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(code),
        "expected exit code {code} from {cmd:?}\nstdout:\n{}\nstderr:\n{stderr}",
        String::from_utf8_lossy(&out.stdout)
    );
    stderr
}

pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("mover-it-")
        .tempdir()
        .expect("create temp dir")
}

/// Where restic/mover put an absolute source path below a restore target.
pub fn restored_path(target: &Path, source: &Path) -> PathBuf {
    target.join(source.strip_prefix("/").expect("absolute source path"))
}

/// Unpack a fixture repository from testdata/ into `dir`; returns the repository path.
pub fn unpack_fixture(name: &str, dir: &Path) -> PathBuf {
    let archive = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(format!("{name}.tar.gz"));
    ok(Command::new("tar")
        .arg("-xzf")
        .arg(&archive)
        .arg("-C")
        .arg(dir));
    let repo = dir.join("repo");
    assert!(
        repo.join("config").exists(),
        "fixture {name} has no repo/config"
    );
    repo
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Writes an exclusive lock file into the local repository `repo` as another process would:
/// made on `host` by `pid`, `age_minutes` ago, with restic's fields only. Returns its id.
pub fn write_foreign_lock(
    repo: &Path,
    pid: u32,
    host: &str,
    age_minutes: i64,
) -> mover::format::Id {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let storage = mover::storage::Storage::open(
            repo.to_str().expect("UTF-8 repository path"),
            &mover::storage::StorageOptions::default(),
        )
        .expect("open storage");
        let r = mover::repo::Repository::open(storage, PASSWORD)
            .await
            .expect("open repository");
        let lock = mover::format::lock::LockFile {
            time: mover::format::gotime::now_local() - chrono::Duration::minutes(age_minutes),
            exclusive: true,
            hostname: host.into(),
            username: "someone".into(),
            pid,
            uid: 0,
            gid: 0,
            stale_after_seconds: None,
        };
        r.save_unpacked(mover::storage::FileType::Lock, &lock.encode())
            .await
            .expect("write lock")
    })
}
