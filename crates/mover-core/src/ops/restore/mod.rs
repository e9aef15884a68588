//! `restore`: write a snapshot's tree below a target directory, as `restic restore` does.
//!
//! Walks the trees into a plan first, creates directories and (sparse, pre-sized) files, then
//! fetches content pack by pack with merged range reads and positional writes, and puts
//! metadata back last (directories deepest first so their times stick). Files in directories
//! this restore made are created by their first write instead, and each file's metadata goes
//! back as soon as its last blob is written, so both overlap the content phase, and special
//! nodes (symbolic links, FIFOs, devices) are created beside it. It never resolves
//! snapshots or takes locks: the caller does.

mod buffers;
mod content;
#[cfg(test)]
mod e2e_tests;
mod entries;
mod existing;
mod plan;
mod select;

pub use existing::Overwrite;

use crate::error::{Error, Result};
use crate::format::PackId;
use crate::format::snapshot::SnapshotFile;
use crate::fs::write as fsw;
use crate::progress::Progress;
use crate::repo::Repository;
use crate::repo::lock::{self, LockMode, LockOptions};
use content::{ContentState, group_by_pack, restore_packs, verify_file};
use entries::{
    CreatedEntries, MetadataEntries, create_entries, create_specials, fs_pool, restore_metadata,
};
use existing::FileAction;
use futures::{StreamExt, TryStreamExt};
use plan::{Plan, build_plan, target_path};
use select::Selector;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

pub(crate) use content::{BlobNeed, plain_length, restore_blobs_into};

/// Cap on the errors listed in one verification failure message.
const MAX_LISTED_ERRORS: usize = 10;

/// Knobs for [`restore`].
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// Directory the snapshot's root tree lands in.
    pub target: PathBuf,
    /// restic `--include` patterns, matched against the path inside the snapshot.
    pub includes: Vec<String>,
    /// restic `--exclude` patterns, matched against the path inside the snapshot.
    pub excludes: Vec<String>,
    /// Restore uid and gid (only root may).
    pub restore_owner: bool,
    /// Pack ranges written at once (and half as many more read ahead).
    pub pack_concurrency: usize,
    /// Re-read every restored file and check its chunk hashes.
    pub verify: bool,
    /// Write file content with O_DIRECT, bypassing the page cache.
    pub direct_io: bool,
    /// What to do with files that exist in the target.
    pub overwrite: Overwrite,
    /// Remove what the target has and the snapshot does not (restic's `--delete`).
    pub delete: bool,
    /// restic's `--include-xattr` / `--exclude-xattr` patterns (not both).
    pub include_xattrs: Vec<String>,
    pub exclude_xattrs: Vec<String>,
    /// The shared lock the restore holds, as a backup holds its own.
    pub lock: LockOptions,
}

impl Default for RestoreOptions {
    fn default() -> Self {
        RestoreOptions {
            target: PathBuf::new(),
            includes: Vec::new(),
            excludes: Vec::new(),
            restore_owner: nix::unistd::geteuid().is_root(),
            pack_concurrency: 16,
            verify: false,
            direct_io: true,
            overwrite: Overwrite::Always,
            delete: false,
            include_xattrs: Vec::new(),
            exclude_xattrs: Vec::new(),
            lock: LockOptions::default(),
        }
    }
}

/// What a restore did. `errors` lists entries that could not be created or given their
/// metadata; the restore went on past them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestoreSummary {
    pub files_restored: u64,
    pub dirs_restored: u64,
    pub bytes_restored: u64,
    /// Existing files left as they were (content already right, or `--overwrite` said so).
    pub files_skipped: u64,
    /// Entries removed by `--delete`.
    pub files_deleted: u64,
    pub errors: Vec<String>,
}

async fn blocking<T: Send + 'static>(
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::task(format!("the {what} task"), e))
}

/// Restores `snapshot` below `opts.target`. See the module docs for the order of work.
pub async fn restore(
    repo: &Repository,
    snapshot: &SnapshotFile,
    opts: &RestoreOptions,
    progress: Arc<Progress>,
) -> Result<RestoreSummary> {
    let work = restore_locked(repo, snapshot, opts, progress);
    lock::while_locked_loading_index(repo, LockMode::Shared, &opts.lock, work).await
}

/// [`restore`] under the lock it holds.
async fn restore_locked(
    repo: &Repository,
    snapshot: &SnapshotFile,
    opts: &RestoreOptions,
    progress: Arc<Progress>,
) -> Result<RestoreSummary> {
    if opts.target.as_os_str().is_empty() {
        return Err(Error::InvalidInput(
            "restore target must not be empty".into(),
        ));
    }
    let target = if opts.target.is_absolute() {
        opts.target.clone()
    } else {
        std::env::current_dir()
            .map_err(|e| Error::io("resolving the current directory", e))?
            .join(&opts.target)
    };
    let selector = Selector::new(&opts.includes, &opts.excludes)?;
    let xattrs = fsw::XattrFilter::new(&opts.include_xattrs, &opts.exclude_xattrs)
        .map_err(Error::InvalidInput)?;
    // Only a target that already holds something can have files to compare or delete.
    let existing = target_has_entries(&target).then_some(opts.overwrite);
    let started = std::time::Instant::now();
    let index = repo.load_index().await?;
    let mut plan = build_plan(repo, &index, snapshot.tree, &target, &selector, opts.delete).await?;
    let by_pack = group_by_pack(&mut plan.files, &index, opts.verify || existing.is_some())?;
    drop(index);
    tracing::info!(
        files = plan.files.len(),
        dirs = plan.dirs.len(),
        packs = by_pack.len(),
        elapsed = ?started.elapsed(),
        "restore planned"
    );

    // Directories and files.
    let pool = Arc::new(fs_pool()?);
    let pool_c = Arc::clone(&pool);
    let delete = opts.delete;
    let (plan, created) = blocking("creating files", move || {
        let created = create_entries(&plan, &pool_c, existing, delete);
        (plan, created)
    })
    .await?;
    let CreatedEntries {
        errors: create_errors,
        failed,
        deferred,
        actions,
        fresh_dirs,
    } = created;
    let Plan {
        mut dirs,
        files,
        links,
        specials,
        errors: mut all_errors,
        ..
    } = plan;
    all_errors.extend(create_errors);
    let files = Arc::new(files);
    let remaining: Vec<AtomicUsize> = files
        .iter()
        .zip(&actions)
        .map(|(f, action)| {
            AtomicUsize::new(match action {
                FileAction::Create => f.content.len(),
                FileAction::Update(matched) => f.content.len() - matched.len(),
                FileAction::Skip | FileAction::Keep => 0,
            })
        })
        .collect();
    let mut files_skipped = 0u64;
    for (i, rem) in remaining.iter().enumerate() {
        if matches!(actions[i], FileAction::Skip | FileAction::Keep) {
            files_skipped += 1;
        } else if !failed[i] && rem.load(Ordering::Relaxed) == 0 {
            progress.files_done.fetch_add(1, Ordering::Relaxed);
        }
    }
    let meta_opts = fsw::RestoreOptions {
        restore_owner: opts.restore_owner,
        xattrs: Arc::new(xattrs),
        // Entries that were there before may carry attributes the snapshot does not have.
        clean_xattrs: existing.is_some(),
        ..fsw::RestoreOptions::default()
    };
    // --verify re-reads every file after the content phase, before any metadata (a mode
    // without read permission) is put back.
    let early_metadata = (!opts.verify).then(|| meta_opts.clone());
    let state = Arc::new(
        ContentState::new(
            target.clone(),
            Arc::clone(&files),
            failed.into_iter().map(AtomicBool::new).collect(),
            remaining,
            Arc::clone(&progress),
            false,
            opts.direct_io,
        )
        .finish_files_early(deferred, early_metadata),
    );
    // Files left alone get no metadata either.
    for (i, action) in actions.iter().enumerate() {
        if *action == FileAction::Skip {
            state.mark_metadata_done(i);
        }
    }

    tracing::info!(elapsed = ?started.elapsed(), "restore: directories and files created");

    // Content, range by range. Packs only needed by files that failed to be created are skipped.
    let mut packs: Vec<(PackId, Vec<BlobNeed>)> = by_pack
        .into_iter()
        .filter_map(|(pack, mut blobs)| {
            for b in &mut blobs {
                b.targets.retain(|&(fi, offset)| {
                    !state.is_failed(fi as usize) && actions[fi as usize].needs(offset)
                });
            }
            blobs.retain(|b| !b.targets.is_empty());
            (!blobs.is_empty()).then_some((pack, blobs))
        })
        .collect();
    packs.sort_by_key(|(pack, _)| *pack);
    let specials_created = {
        let (pool, progress, meta_opts) =
            (Arc::clone(&pool), Arc::clone(&progress), meta_opts.clone());
        tokio::task::spawn_blocking(move || {
            create_specials(&specials, &meta_opts, &progress, &pool)
        })
    };
    restore_packs(repo, packs, &state, opts.pack_concurrency).await?;
    let (special_errors, specials_restored) = specials_created
        .await
        .map_err(|e| Error::task("the task creating special nodes", e))?;
    all_errors.extend(special_errors);
    if let Ok(mut errors) = state.errors.lock() {
        all_errors.append(&mut errors);
    }

    tracing::info!(elapsed = ?started.elapsed(), "restore: content written");

    if opts.verify {
        let problems: Vec<String> = futures::stream::iter(0..files.len())
            .filter(|&i| std::future::ready(!state.is_failed(i)))
            .map(|i| {
                let files = Arc::clone(&files);
                let path = target_path(&target, &files[i].location);
                blocking("verifying", move || verify_file(&path, &files[i]))
            })
            .buffer_unordered(opts.pack_concurrency.max(1))
            .try_filter_map(|r| std::future::ready(Ok(r.err())))
            .try_collect()
            .await?;
        if !problems.is_empty() {
            let shown: Vec<&str> = problems
                .iter()
                .take(MAX_LISTED_ERRORS)
                .map(String::as_str)
                .collect();
            return Err(Error::corrupt(
                format!("{} restored file(s)", problems.len()),
                shown.join("; "),
            ));
        }
    }

    // --delete: what the snapshot does not have goes before directory times are set.
    let mut files_deleted = 0;
    if opts.delete {
        let (removed, errors, dirs_back) = blocking("removing unexpected files", move || {
            let (removed, errors) = existing::remove_unexpected(&dirs, &fresh_dirs, &selector);
            (removed, errors, dirs)
        })
        .await?;
        files_deleted = removed;
        all_errors.extend(errors);
        dirs = dirs_back;
    }

    // Metadata: files not done yet and links, then directories deepest first.
    let entries = MetadataEntries { dirs, links };
    let state_m = Arc::clone(&state);
    let (meta_errors, files_restored, dirs_restored) = blocking("restoring metadata", move || {
        restore_metadata(&state_m, &entries, &meta_opts, &pool)
    })
    .await?;
    all_errors.extend(meta_errors);
    tracing::info!(elapsed = ?started.elapsed(), "restore: metadata restored");

    Ok(RestoreSummary {
        // Files left alone were counted with the rest in the metadata phase.
        files_restored: (files_restored + specials_restored).saturating_sub(files_skipped),
        dirs_restored,
        bytes_restored: state.bytes.load(Ordering::Relaxed),
        files_skipped,
        files_deleted,
        errors: all_errors,
    })
}

/// Whether `dir` exists and holds at least one entry.
fn target_has_entries(dir: &std::path::Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_some())
}
