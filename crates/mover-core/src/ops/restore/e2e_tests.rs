//! Restore end to end: back up a generated tree into an in-memory repository, restore it
//! and compare, and check that damage to the repository fails the restore.

use super::*;
use crate::error::ErrorClass;
use crate::format::Id;
use crate::ops::backup::{BackupOptions, backup};
use crate::repo::SnapshotFilter;
use crate::storage::FileType;
use object_store::ObjectStoreExt;
use object_store::memory::InMemory;
use rand::{RngCore, SeedableRng};
use std::fs::File;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, SystemTime};

type TestResult = std::result::Result<(), Box<dyn std::error::Error>>;

struct Fixture {
    _dir: tempfile::TempDir,
    src: PathBuf,
    out: PathBuf,
    store: Arc<InMemory>,
    repo: Repository,
    snap: SnapshotFile,
    big: Vec<u8>,
}

async fn fixture() -> std::result::Result<Fixture, Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let src = dir.path().join("src");
    let out = dir.path().join("out");
    std::fs::create_dir_all(src.join("sub/deep"))?;
    let mut big = vec![0u8; 3 << 20];
    rand::rngs::StdRng::seed_from_u64(7).fill_bytes(&mut big);
    std::fs::write(src.join("big"), &big)?;
    std::fs::write(src.join("dup"), &big)?;
    std::fs::hard_link(src.join("big"), src.join("hl"))?;
    std::fs::write(src.join("small"), b"hello")?;
    std::fs::write(src.join("empty"), b"")?;
    std::os::unix::fs::symlink("small", src.join("link"))?;
    std::fs::write(src.join("sub/deep/f"), b"deep file")?;
    // Special nodes are created beside the content phase: the directory's time must
    // still be the one restored last.
    std::os::unix::fs::symlink("deep/f", src.join("sub/ln"))?;
    std::fs::set_permissions(src.join("small"), std::fs::Permissions::from_mode(0o640))?;
    std::fs::set_permissions(src.join("sub"), std::fs::Permissions::from_mode(0o750))?;
    let when = SystemTime::UNIX_EPOCH + Duration::from_secs(1_600_000_000);
    File::open(src.join("sub"))?.set_modified(when)?;

    let store = Arc::new(InMemory::new());
    let (repo, snap) = back_up(Arc::clone(&store), &src).await?;
    Ok(Fixture {
        _dir: dir,
        src,
        out,
        store,
        repo,
        snap,
        big,
    })
}

/// A new repository in `store` holding one backup of `src`, and that snapshot.
async fn back_up(
    store: Arc<InMemory>,
    src: &Path,
) -> std::result::Result<(Repository, SnapshotFile), Box<dyn std::error::Error>> {
    let repo = crate::repo::in_memory_for_tests(store).await?;
    let opts = BackupOptions {
        paths: vec![src.to_path_buf()],
        ..BackupOptions::default()
    };
    let summary = backup(&repo, &opts, Arc::new(Progress::default())).await?;
    assert!(summary.errors.is_empty(), "{:?}", summary.errors);
    let (_, snap) = repo
        .find_snapshot("latest", &SnapshotFilter::default())
        .await?;
    Ok((repo, snap))
}

fn inside(out: &Path, src: &Path) -> PathBuf {
    out.join(src.strip_prefix("/").unwrap_or(src))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_ls_dump_and_cat_round_trip() -> TestResult {
    let f = fixture().await?;
    let progress = Arc::new(Progress::default());
    let opts = RestoreOptions {
        target: f.out.clone(),
        verify: true,
        restore_owner: false,
        ..RestoreOptions::default()
    };
    let summary = restore(&f.repo, &f.snap, &opts, Arc::clone(&progress)).await?;
    assert!(summary.errors.is_empty(), "{:?}", summary.errors);
    let r = inside(&f.out, &f.src);
    assert_eq!(std::fs::read(r.join("big"))?, f.big);
    assert_eq!(std::fs::read(r.join("dup"))?, f.big);
    assert_eq!(std::fs::read(r.join("small"))?, b"hello");
    assert_eq!(std::fs::read(r.join("empty"))?, b"");
    assert_eq!(std::fs::read(r.join("sub/deep/f"))?, b"deep file");
    assert_eq!(std::fs::read_link(r.join("link"))?, Path::new("small"));
    assert_eq!(std::fs::read_link(r.join("sub/ln"))?, Path::new("deep/f"));
    assert_eq!(
        std::fs::metadata(r.join("big"))?.ino(),
        std::fs::metadata(r.join("hl"))?.ino()
    );
    assert_eq!(std::fs::metadata(r.join("small"))?.mode() & 0o777, 0o640);
    let sub = std::fs::metadata(r.join("sub"))?;
    assert_eq!(sub.mode() & 0o777, 0o750);
    assert_eq!(sub.mtime(), 1_600_000_000);
    assert_eq!(summary.bytes_restored, 2 * f.big.len() as u64 + 5 + 9);
    assert_eq!(summary.files_restored, 8);
    assert!(summary.dirs_restored >= 3);
    assert_eq!(progress.snapshot().files_done, 8);

    // Include: only the deep file and its parents.
    let only = f.out.with_file_name("only");
    let deep = format!("{}/sub/deep/f", f.src.display());
    let opts = RestoreOptions {
        target: only.clone(),
        includes: vec![deep],
        restore_owner: false,
        ..RestoreOptions::default()
    };
    let summary = restore(&f.repo, &f.snap, &opts, Arc::new(Progress::default())).await?;
    assert!(summary.errors.is_empty(), "{:?}", summary.errors);
    let r = inside(&only, &f.src);
    assert_eq!(std::fs::read(r.join("sub/deep/f"))?, b"deep file");
    assert!(!r.join("big").exists());
    assert_eq!(summary.files_restored, 1);
    // The parent's metadata is restored too, as restic does.
    assert_eq!(std::fs::metadata(r.join("sub"))?.mtime(), 1_600_000_000);

    // ls and dump.
    let index = f.repo.load_index().await?;
    let src_path = f.src.display().to_string();
    let all = crate::ops::ls::ls(&f.repo, &index, f.snap.tree, None, true).await?;
    let paths: Vec<&str> = all.iter().map(|(p, _)| p.as_str()).collect();
    assert!(paths.contains(&format!("{src_path}/sub/deep/f").as_str()));
    let direct = crate::ops::ls::ls(&f.repo, &index, f.snap.tree, Some(&src_path), false).await?;
    let names: Vec<String> = direct
        .iter()
        .map(|(p, _)| p.trim_start_matches(&src_path).to_string())
        .collect();
    assert_eq!(
        names,
        ["/big", "/dup", "/empty", "/hl", "/link", "/small", "/sub"]
    );
    let mut out: Vec<u8> = Vec::new();
    let n = crate::ops::dump::dump_file(
        &f.repo,
        &index,
        f.snap.tree,
        &format!("{src_path}/dup"),
        &mut out,
    )
    .await?;
    assert_eq!(n, f.big.len() as u64);
    assert!(out == f.big);
    let mut tar: Vec<u8> = Vec::new();
    let n = crate::ops::dump::dump_file(
        &f.repo,
        &index,
        f.snap.tree,
        &format!("{src_path}/sub"),
        &mut tar,
    )
    .await?;
    assert_eq!(n as usize, tar.len());
    assert_eq!(tar.len() % 512, 0);
    let first = String::from_utf8_lossy(&tar[..100])
        .trim_end_matches('\0')
        .to_string();
    assert_eq!(
        first,
        format!("{}/sub/deep/", src_path.trim_start_matches('/'))
    );
    let err = crate::ops::dump::dump_file(&f.repo, &index, f.snap.tree, "/nope", &mut out)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err}");

    // cat.
    let config = crate::ops::cat::cat(&f.repo, "config", None).await?;
    let v: serde_json::Value = serde_json::from_slice(&config)?;
    assert_eq!(v["version"], 2);
    let snap = crate::ops::cat::cat(&f.repo, "snapshot", Some("latest")).await?;
    let v: serde_json::Value = serde_json::from_slice(&snap)?;
    assert_eq!(v["tree"], f.snap.tree.to_hex());
    let tree = crate::ops::cat::cat(&f.repo, "blob", Some(&f.snap.tree.to_hex())).await?;
    assert_eq!(Id::hash(&tree), f.snap.tree.0);
    let err = crate::ops::cat::cat(&f.repo, "bogus", None)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("masterkey"), "{err}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_pack_fails_the_restore() -> TestResult {
    let f = fixture().await?;
    // The biggest pack holds the file data.
    let packs = f.repo.storage().list(FileType::Pack).await?;
    let (pack, _) = packs
        .iter()
        .max_by_key(|(_, size)| *size)
        .ok_or("no packs")?;
    let hex = pack.to_hex();
    let path = object_store::path::Path::from(format!("data/{}/{hex}", &hex[..2]));
    let mut bytes = f.store.get(&path).await?.bytes().await?.to_vec();
    bytes[100] ^= 0xff;
    f.store.put(&path, bytes.into()).await?;
    let opts = RestoreOptions {
        target: f.out.clone(),
        restore_owner: false,
        ..RestoreOptions::default()
    };
    let err = restore(&f.repo, &f.snap, &opts, Arc::new(Progress::default()))
        .await
        .unwrap_err();
    assert_eq!(err.class(), ErrorClass::Corrupt, "{err}");
    assert!(err.to_string().contains(&hex), "{err}");
    Ok(())
}

/// Files are created with their final permission bits where they can be, and given them
/// afterwards where they cannot: without owner write (the restore opens a file again for
/// each range of it), and with setuid, setgid or sticky.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restored_files_get_their_modes_whatever_they_were_created_with() -> TestResult {
    let dir = tempfile::tempdir()?;
    let src = dir.path().join("src");
    let out = dir.path().join("out");
    std::fs::create_dir_all(&src)?;
    let mut data = vec![0u8; 5 << 20];
    rand::rngs::StdRng::seed_from_u64(11).fill_bytes(&mut data);
    let modes = [0o444, 0o4755, 0o2750, 0o1644, 0o600, 0o755, 0o640, 0o000];
    for (i, mode) in modes.iter().enumerate() {
        let path = src.join(format!("f{mode:o}"));
        std::fs::write(&path, &data[i * 1000..])?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(*mode))?;
    }
    let (repo, snap) = back_up(Arc::new(InMemory::new()), &src).await?;
    let opts = RestoreOptions {
        target: out.clone(),
        verify: true,
        ..RestoreOptions::default()
    };
    let summary = restore(&repo, &snap, &opts, Arc::new(Progress::default())).await?;
    assert!(summary.errors.is_empty(), "{:?}", summary.errors);
    let r = inside(&out, &src);
    for (i, mode) in modes.iter().enumerate() {
        let path = r.join(format!("f{mode:o}"));
        let md = std::fs::metadata(&path)?;
        assert_eq!(md.mode() & 0o7777, *mode, "{}", path.display());
        assert_eq!(md.len(), (data.len() - i * 1000) as u64);
    }
    // Owner-readable ones are compared whole (root reads the others too).
    let f444 = std::fs::read(r.join("f444"))?;
    assert!(f444 == data[..], "f444 content");
    assert_eq!(std::fs::read(r.join("f4755"))?, data[1000..]);
    Ok(())
}
