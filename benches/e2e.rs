//! End-to-end benchmarks through the library: a full backup into a fresh local repository,
//! a restore of the latest snapshot into a fresh directory, and the unchanged re-backup of a
//! `cp -a` clone placed at the same path (the cloned-volume case, which must not re-read
//! file contents). The source tree is generated once from a fixed seed; the page cache is
//! warm, so these measure CPU and pipeline overhead, not the disk (scripts/compare-restic.sh
//! measures cold runs against restic). Run with `cargo bench --bench e2e`.
//!
//! Under `cargo test --all-targets` criterion runs every routine once in test mode; the
//! tree is then tiny so CI pays milliseconds, not minutes.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use mover::ops::backup::{BackupOptions, BackupSummary, backup};
use mover::ops::restore::{RestoreOptions, restore};
use mover::progress::Progress;
use mover::repo::{InitOptions, Repository};
use mover::storage::{Storage, StorageOptions};
use tokio::runtime::Runtime;

const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;
const PASSWORD: &str = "e2e-bench";

/// SplitMix64: tiny, fast, seeded; enough to make incompressible data and pick sizes.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let bytes = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
    }
}

/// Log-like text drawn from a small vocabulary: zstd shrinks it several times over, but it
/// is not periodic, so content-defined chunking still finds ordinary cut points.
fn text_bytes(rng: &mut SplitMix64, len: usize) -> Vec<u8> {
    const WORDS: &[&str] = &[
        "backup",
        "restore",
        "snapshot",
        "volume",
        "chunk",
        "pack",
        "index",
        "tree",
        "blob",
        "INFO",
        "WARN",
        "DEBUG",
        "mover",
        "restic",
        "kubernetes",
        "pod",
        "node",
        "bytes",
        "files",
        "done",
        "started",
        "finished",
        "latency",
        "ms",
        "ok",
        "retry",
        "s3",
        "key",
    ];
    let mut out = Vec::with_capacity(len + 64);
    while out.len() < len {
        let line_words = 4 + rng.below(10);
        out.extend_from_slice(format!("{:010} ", rng.below(10_000_000_000)).as_bytes());
        for _ in 0..line_words {
            out.extend_from_slice(WORDS[rng.below(WORDS.len() as u64) as usize].as_bytes());
            out.push(b' ');
        }
        out.push(b'\n');
    }
    out.truncate(len);
    out
}

fn random_bytes(rng: &mut SplitMix64, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    rng.fill(&mut buf);
    buf
}

/// Shape of the generated tree.
struct TreeShape {
    small_files: usize,
    small_max_bytes: usize,
    text_files: &'static [usize],
    random_files: &'static [usize],
}

/// About 300 MiB: 2000 small files of 0-16 KiB over 40 directories, three text files and
/// four random files of 16-64 MiB.
const FULL_TREE: TreeShape = TreeShape {
    small_files: 2000,
    small_max_bytes: 16 * KIB,
    text_files: &[24 * MIB, 40 * MIB, 64 * MIB],
    random_files: &[16 * MIB, 32 * MIB, 48 * MIB, 64 * MIB],
};

/// Test mode: the same shape, small enough for every CI run.
const TINY_TREE: TreeShape = TreeShape {
    small_files: 40,
    small_max_bytes: 4 * KIB,
    text_files: &[256 * KIB],
    random_files: &[128 * KIB],
};

/// Writes the tree below `root` and returns its total file bytes.
fn generate_tree(root: &Path, shape: &TreeShape) -> u64 {
    let mut rng = SplitMix64(0x006d_6f76_6572);
    let mut total = 0u64;
    for i in 0..shape.small_files {
        let dir = root.join(format!("small/d{:02}", i % 40));
        std::fs::create_dir_all(&dir).expect("create small-file directory");
        let len = rng.below(shape.small_max_bytes as u64 + 1) as usize;
        let data = if i % 2 == 0 {
            text_bytes(&mut rng, len)
        } else {
            random_bytes(&mut rng, len)
        };
        std::fs::write(dir.join(format!("f{i:04}.dat")), &data).expect("write small file");
        total += len as u64;
    }
    let big = root.join("big");
    std::fs::create_dir_all(&big).expect("create big-file directory");
    for (i, &len) in shape.text_files.iter().enumerate() {
        let data = text_bytes(&mut rng, len);
        std::fs::write(big.join(format!("text{i}.log")), &data).expect("write text file");
        total += len as u64;
    }
    for (i, &len) in shape.random_files.iter().enumerate() {
        let data = random_bytes(&mut rng, len);
        std::fs::write(big.join(format!("random{i}.bin")), &data).expect("write random file");
        total += len as u64;
    }
    total
}

/// `cp -a`, as an operator cloning a volume would: same contents and mtimes, new inodes.
fn clone_tree(from: &Path, to: &Path) {
    let status = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .expect("run cp -a");
    assert!(status.success(), "cp -a {from:?} {to:?} failed: {status}");
}

/// Everything the benches share: the runtime, the source tree and its clone, and one
/// repository that already holds a snapshot of the tree.
struct Fixture {
    rt: Runtime,
    /// Holds every path below alive until the benches finish.
    base: tempfile::TempDir,
    /// The backed-up path; the incremental bench swaps its clone into this name.
    source: PathBuf,
    /// A `cp -a` clone of `source`, swapped with it by rename.
    clone: PathBuf,
    /// Repository with a snapshot of `source`; restore and incremental use it.
    repo: Repository,
    tree_bytes: u64,
}

fn init_repo(rt: &Runtime, dir: &Path) -> Repository {
    let location = dir.to_str().expect("temporary paths are UTF-8");
    let storage = Storage::open(location, &StorageOptions::default()).expect("open local storage");
    rt.block_on(Repository::init(storage, PASSWORD, &InitOptions::default()))
        .expect("init repository")
}

fn run_backup(rt: &Runtime, repo: &Repository, source: &Path) -> BackupSummary {
    let opts = BackupOptions {
        paths: vec![source.to_path_buf()],
        ..Default::default()
    };
    let summary = rt
        .block_on(backup(repo, &opts, Arc::new(Progress::default())))
        .expect("backup");
    assert!(
        summary.errors.is_empty(),
        "backup errors: {:?}",
        summary.errors
    );
    summary
}

impl Fixture {
    fn new(shape: &TreeShape) -> Fixture {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("build tokio runtime");
        let base = tempfile::tempdir().expect("create bench directory");
        let source = base.path().join("vol");
        let clone = base.path().join("vol.clone");
        std::fs::create_dir(&source).expect("create source directory");
        let tree_bytes = generate_tree(&source, shape);
        clone_tree(&source, &clone);
        let repo = init_repo(&rt, &base.path().join("repo"));
        run_backup(&rt, &repo, &source);
        Fixture {
            rt,
            base,
            source,
            clone,
            repo,
            tree_bytes,
        }
    }

    /// Exchanges `source` and its clone by rename: the path stays, the inodes change.
    fn swap_clone(&self) {
        let parked = self.base.path().join("vol.parked");
        std::fs::rename(&self.source, &parked).expect("park source");
        std::fs::rename(&self.clone, &self.source).expect("move clone into place");
        std::fs::rename(&parked, &self.clone).expect("keep old source as the clone");
    }
}

/// `cargo bench` passes `--bench`; criterion's test mode under `cargo test` does not.
fn full_size() -> bool {
    std::env::args().any(|a| a == "--bench")
}

fn e2e(c: &mut Criterion) {
    let shape = if full_size() { &FULL_TREE } else { &TINY_TREE };
    let fx = Fixture::new(shape);

    let mut g = c.benchmark_group("e2e");
    // One backup takes seconds: flat sampling runs each sample once instead of criterion's
    // 1+2+...+10 iteration ramp.
    g.sampling_mode(SamplingMode::Flat);
    g.sample_size(10);
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(10));
    g.throughput(Throughput::Bytes(fx.tree_bytes));

    g.bench_function("backup_fresh_repo", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let dir = tempfile::tempdir_in(fx.base.path()).expect("repository directory");
                let repo = init_repo(&fx.rt, dir.path());
                let started = Instant::now();
                run_backup(&fx.rt, &repo, &fx.source);
                total += started.elapsed();
            }
            total
        })
    });

    g.bench_function("restore_latest", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let target = tempfile::tempdir_in(fx.base.path()).expect("restore directory");
                let opts = RestoreOptions {
                    target: target.path().to_path_buf(),
                    ..Default::default()
                };
                let started = Instant::now();
                let summary = fx.rt.block_on(async {
                    let (_, snap) = fx
                        .repo
                        .find_snapshot("latest", &Default::default())
                        .await
                        .expect("find latest snapshot");
                    restore(&fx.repo, &snap, &opts, Arc::new(Progress::default()))
                        .await
                        .expect("restore")
                });
                total += started.elapsed();
                assert!(
                    summary.errors.is_empty(),
                    "restore errors: {:?}",
                    summary.errors
                );
                assert_eq!(summary.bytes_restored, fx.tree_bytes);
            }
            total
        })
    });

    g.bench_function("rebackup_unchanged_clone", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                fx.swap_clone();
                let started = Instant::now();
                let summary = run_backup(&fx.rt, &fx.repo, &fx.source);
                total += started.elapsed();
                // The point of the case: a clone with new inodes is not read again.
                assert_eq!(summary.bytes_read, 0, "unchanged clone was re-read");
            }
            total
        })
    });
    g.finish();
}

criterion_group!(benches, e2e);
criterion_main!(benches);
