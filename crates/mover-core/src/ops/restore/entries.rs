//! Directories, files, links and special nodes on disk: created before the content phase
//! and given their metadata after it.

use super::content::ContentState;
use super::existing::{self, FileAction, Overwrite};
use super::plan::{Plan, PlanDir, PlanLink, PlanSpecial, loc_str, target_path};
use crate::error::{Error, Result};
use crate::format::tree::Node;
use crate::fs::write as fsw;
use crate::progress::Progress;
use rayon::prelude::*;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

/// Threads that create files and put metadata back: each call waits on the disk far more
/// than it computes.
const FS_THREADS: usize = 8;

pub(super) fn fs_pool() -> Result<rayon::ThreadPool> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(FS_THREADS)
        .thread_name(|i| format!("mover-fs-{i}"))
        .build()
        .map_err(|e| Error::Internal(format!("cannot start the file-creation threads: {e}")))
}

/// Indexes of the directories to visit, grouped by depth, shallowest first.
pub(super) fn dirs_by_depth(
    dirs: &[PlanDir],
    wanted: impl Fn(&PlanDir) -> bool,
) -> Vec<Vec<usize>> {
    let mut levels: Vec<Vec<usize>> = Vec::new();
    for (i, d) in dirs.iter().enumerate() {
        if !wanted(d) {
            continue;
        }
        if levels.len() <= d.depth {
            levels.resize_with(d.depth + 1, Vec::new);
        }
        levels[d.depth].push(i);
    }
    levels
}

/// Creates the selected directories and the files (pre-sized, sparse) on `pool`: one
/// directory level after the other, then the files. Files with content whose directory is
/// new are left to their first write in the content phase, which then overlaps creating
/// them with reading and decrypting packs: nothing else can be in a new directory.
/// Creating a file waits on the disk for the directory and inode tables, so many are
/// created at once.
/// With `existing` (the target held something before), files whose target exists are
/// examined first (see [`existing::examine`]); `replace_dirs` lets a file replace a
/// directory in its way (`--delete`).
pub(super) fn create_entries(
    plan: &Plan,
    pool: &rayon::ThreadPool,
    existing: Option<Overwrite>,
    replace_dirs: bool,
) -> CreatedEntries {
    let mut errors = Vec::new();
    let ensured: Vec<AtomicBool> = plan.dirs.iter().map(|_| AtomicBool::new(false)).collect();
    let fresh: Vec<AtomicBool> = plan.dirs.iter().map(|_| AtomicBool::new(false)).collect();
    for level in dirs_by_depth(&plan.dirs, |d| d.selected) {
        let results: Vec<Option<String>> = pool.install(|| {
            level
                .par_iter()
                .map(|&i| {
                    let d = &plan.dirs[i];
                    match fsw::create_dir(&d.target) {
                        Ok(new) => {
                            ensured[i].store(true, Ordering::Relaxed);
                            fresh[i].store(new, Ordering::Relaxed);
                            None
                        }
                        Err(e) => Some(format!("{}: {e}", loc_str(&d.location))),
                    }
                })
                .collect()
        });
        errors.extend(results.into_iter().flatten());
    }
    let root = &plan.dirs[0].target;
    // A file with content in a directory made by this restore is created by its first write.
    let deferred: Vec<bool> = plan
        .files
        .iter()
        .map(|f| !f.content.is_empty() && fresh[f.dir].load(Ordering::Relaxed))
        .collect();
    let results: Vec<(FileAction, Option<String>)> = pool.install(|| {
        plan.files
            .par_iter()
            .zip(deferred.par_iter())
            .map(|(f, &deferred)| {
                if deferred {
                    return (FileAction::Create, None);
                }
                let target = target_path(root, &f.location);
                let action = match existing {
                    Some(mode) => existing::examine(&target, f, mode),
                    None => FileAction::Create,
                };
                let mut result = Ok(());
                // Only for parents that are not selected themselves (or failed): create_dir_all
                // tolerates the other threads doing the same.
                if !ensured[f.dir].load(Ordering::Relaxed) {
                    result = fsw::create_dir_all_for(&target);
                    if result.is_ok() {
                        ensured[f.dir].store(true, Ordering::Relaxed);
                    }
                }
                let error = result
                    .and_then(|()| existing::prepare(&target, f, &action, replace_dirs))
                    .err()
                    .map(|e| format!("{}: {e}", loc_str(&f.location)));
                (action, error)
            })
            .collect()
    });
    let failed = results.iter().map(|(_, e)| e.is_some()).collect();
    let mut actions = Vec::with_capacity(results.len());
    for (action, error) in results {
        actions.push(action);
        errors.extend(error);
    }
    CreatedEntries {
        errors,
        failed,
        deferred,
        actions,
        fresh_dirs: fresh.into_iter().map(AtomicBool::into_inner).collect(),
    }
}

/// What [`create_entries`] did: errors in plan order, per file whether creating it failed,
/// whether it was left to the content phase and what was done with an existing one, and
/// per directory whether this restore made it.
pub(super) struct CreatedEntries {
    pub(super) errors: Vec<String>,
    pub(super) failed: Vec<bool>,
    pub(super) deferred: Vec<bool>,
    pub(super) actions: Vec<FileAction>,
    pub(super) fresh_dirs: Vec<bool>,
}

/// What the metadata phase needs of the plan besides the files and special nodes.
pub(super) struct MetadataEntries {
    pub(super) dirs: Vec<PlanDir>,
    pub(super) links: Vec<PlanLink>,
}

/// Creates the special nodes (symbolic links, FIFOs, devices) with their metadata, on
/// `pool`. They need nothing but their directory, so this runs beside the content phase
/// instead of after it: /usr's 5.5k symbolic links took a third of a second. Returns the
/// errors and the nodes created.
pub(super) fn create_specials(
    specials: &[PlanSpecial],
    meta_opts: &fsw::RestoreOptions,
    progress: &Progress,
    pool: &rayon::ThreadPool,
) -> (Vec<String>, u64) {
    let results: Vec<(bool, Vec<String>)> = pool.install(|| {
        specials
            .par_iter()
            .map(|s| {
                let create = || fsw::create_node(&s.target, &s.node);
                create_with_metadata(&s.target, &s.location, &s.node, create, meta_opts, progress)
            })
            .collect()
    });
    tally(results)
}

/// The errors of all entries, in order, and how many were created.
fn tally(results: Vec<(bool, Vec<String>)>) -> (Vec<String>, u64) {
    let created = results.iter().filter(|(c, _)| *c).count() as u64;
    let errors = results.into_iter().flat_map(|(_, e)| e).collect();
    (errors, created)
}

/// Puts metadata back: files (on `pool`), then hard links (created here, after their
/// targets are complete), then directories deepest level first (in parallel within a
/// level), so that nothing created later changes a directory's times. Returns the errors,
/// the files and links restored, and the directories restored.
pub(super) fn restore_metadata(
    state: &ContentState,
    entries: &MetadataEntries,
    meta_opts: &fsw::RestoreOptions,
    pool: &rayon::ThreadPool,
) -> (Vec<String>, u64, u64) {
    let progress = &state.progress;
    let files = &state.files;
    let results: Vec<Option<String>> = pool.install(|| {
        (0..files.len())
            .into_par_iter()
            .filter(|&i| !state.is_failed(i) && !state.metadata_done(i))
            .map(|i| {
                let f = &files[i];
                f.meta
                    .apply(&state.target(i), meta_opts)
                    .err()
                    .map(|e| format!("{}: {e}", loc_str(&f.location)))
            })
            .collect()
    });
    let early = (0..files.len())
        .filter(|&i| !state.is_failed(i) && state.metadata_done(i))
        .count();
    let mut count = (results.len() + early) as u64;
    let mut errors: Vec<String> = results.into_iter().flatten().collect();
    let linked: Vec<(bool, Vec<String>)> = pool.install(|| {
        entries
            .links
            .par_iter()
            .map(|l| {
                if state.is_failed(l.file) {
                    let msg = format!(
                        "{}: not linked, because {} could not be restored",
                        loc_str(&l.location),
                        loc_str(&files[l.file].location)
                    );
                    return (false, vec![msg]);
                }
                let create = || fsw::hard_link(&state.target(l.file), &l.target);
                create_with_metadata(&l.target, &l.location, &l.node, create, meta_opts, progress)
            })
            .collect()
    });
    let (link_errors, links) = tally(linked);
    errors.extend(link_errors);
    count += links;
    let dirs = &entries.dirs;
    let mut dir_count = 0u64;
    let levels = dirs_by_depth(dirs, |d| d.restored && d.node.is_some());
    for level in levels.iter().rev() {
        let results: Vec<Option<Option<String>>> = pool.install(|| {
            level
                .par_iter()
                .map(|&i| {
                    let d = &dirs[i];
                    let node = d.node.as_ref()?;
                    if !d.target.is_dir() {
                        // Only reached when creating it failed; that error is already listed.
                        return None;
                    }
                    progress.add_dir();
                    Some(
                        fsw::apply_metadata(&d.target, node, meta_opts)
                            .err()
                            .map(|e| format!("{}: {e}", loc_str(&d.location))),
                    )
                })
                .collect()
        });
        dir_count += results.iter().filter(|r| r.is_some()).count() as u64;
        errors.extend(results.into_iter().flatten().flatten());
    }
    (errors, count, dir_count)
}

/// Creates a special node or an extra hard-link name with `create` (and its missing
/// parents), then puts `node`'s metadata on it. Returns whether the entry now exists and
/// the failures.
fn create_with_metadata(
    target: &Path,
    location: &[u8],
    node: &Node,
    create: impl FnOnce() -> std::io::Result<()>,
    meta_opts: &fsw::RestoreOptions,
    progress: &Progress,
) -> (bool, Vec<String>) {
    if let Err(e) = fsw::create_dir_all_for(target).and_then(|()| create()) {
        progress.add_error();
        return (false, vec![format!("{}: {e}", loc_str(location))]);
    }
    progress.files_done.fetch_add(1, Ordering::Relaxed);
    match fsw::apply_metadata(target, node, meta_opts) {
        Ok(()) => (true, Vec::new()),
        Err(e) => (true, vec![format!("{}: {e}", loc_str(location))]),
    }
}
