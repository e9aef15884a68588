//! The walker: lists directories in sorted order, compares each entry with its node in the
//! parent snapshot, and emits events for the tree builder and jobs for the file readers.
//!
//! A file whose type, size, mtime, mode and owner match its parent node (and, with
//! `strict_change_detection`, inode and ctime too) is not read: its content list is reused.
//! Inode and ctime are ignored by default because every CSI clone gets new ones.

use super::skeleton::Skeleton;
use super::{Ctx, Event, FileJob, LinkKey};
use crate::format::tree::{Node, NodeType, Tree};
use crate::format::{BlobType, TreeId};
use crate::fs::exclude::device_of;
use crate::fs::meta::node_from_metadata;
use crate::fs::walk::read_dir_sorted;
use crossbeam_channel::{Sender, bounded};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Output queues of the walker.
pub struct Outputs<'a> {
    pub events: &'a Sender<Event>,
    pub jobs: &'a Sender<FileJob>,
    /// Files with more than one link already sent to a reader, by device and inode: their
    /// other names are not read again (see [`Event::LinkedFile`]).
    linked: std::cell::RefCell<std::collections::HashSet<LinkKey>>,
}

impl<'a> Outputs<'a> {
    pub fn new(events: &'a Sender<Event>, jobs: &'a Sender<FileJob>) -> Outputs<'a> {
        Outputs {
            events,
            jobs,
            linked: Default::default(),
        }
    }

    fn event(&self, ev: Event) -> bool {
        self.events.send(ev).is_ok()
    }

    /// True if `node` is another name of a file already being read in this backup; the
    /// first name of a multiply linked file is remembered.
    fn seen_link(&self, node: &Node) -> bool {
        if node.links < 2 {
            return false;
        }
        !self.linked.borrow_mut().insert(LinkKey::of(node))
    }
}

/// True if `node` (fresh from lstat) may be taken as unchanged since `old`.
pub fn unchanged(ctx: &Ctx, old: &Node, node: &Node) -> bool {
    let base = old.node_type == node.node_type
        && old.mtime == node.mtime
        && old.mode == node.mode
        && old.uid == node.uid
        && old.gid == node.gid
        && old.linktarget == node.linktarget
        && old.device == node.device;
    let strict =
        !ctx.strict_change_detection || (old.inode == node.inode && old.ctime == node.ctime);
    let file_ok = node.node_type != NodeType::File
        || (old.size == node.size
            && old
                .content
                .as_ref()
                .is_some_and(|c| c.iter().all(|b| ctx.index.has(b, BlobType::Data))));
    base && strict && file_ok
}

/// Load a directory's tree from the parent snapshot (None if it cannot be loaded).
fn load_parent_tree(ctx: &Ctx, id: TreeId) -> Option<Tree> {
    let repo = ctx.repo.clone();
    let index = std::sync::Arc::clone(&ctx.index);
    match ctx
        .runtime
        .block_on(async move { repo.load_tree(&index, &id).await })
    {
        Ok(t) => Some(t),
        Err(e) => {
            tracing::warn!(tree = %id, error = %e, "cannot load tree of the parent snapshot; reading its files again");
            None
        }
    }
}

fn parent_subtree(ctx: &Ctx, old: Option<&Node>) -> Option<(TreeId, Tree)> {
    let old = old?;
    if old.node_type != NodeType::Dir {
        return None;
    }
    let id = old.subtree?;
    load_parent_tree(ctx, id).map(|t| (id, t))
}

/// Walk the skeleton: intermediate directories, then each target. `parent` is the parent
/// snapshot's tree at this level.
pub fn walk_skeleton(
    ctx: &Ctx,
    sk: &Skeleton,
    path: &Path,
    parent: Option<&Tree>,
    out: &Outputs,
) -> bool {
    for (name, child) in &sk.children {
        let old = parent.and_then(|t| t.find(name));
        if let Some(target) = &child.target {
            let md = match std::fs::symlink_metadata(target) {
                Ok(md) => md,
                Err(e) => {
                    ctx.warn(format!("{}: {e}", target.display()));
                    continue;
                }
            };
            if !walk_entry(ctx, name.clone(), target, &md, device_of(&md), old, out) {
                return false;
            }
            continue;
        }
        let child_path = path.join(std::ffi::OsStr::from_bytes(name));
        let md = match std::fs::symlink_metadata(&child_path) {
            Ok(md) => md,
            Err(e) => {
                ctx.warn(format!("{}: {e}", child_path.display()));
                continue;
            }
        };
        let node =
            match node_from_metadata(name.clone(), &child_path, &md, &ctx.node_opts, &ctx.names) {
                Ok(n) => n,
                Err(e) => {
                    ctx.warn(format!("{}: {e}", child_path.display()));
                    continue;
                }
            };
        let sub = parent_subtree(ctx, old);
        if !enter_dir(ctx, node, old, sub.as_ref(), out) {
            return false;
        }
        if !walk_skeleton(ctx, child, &child_path, sub.as_ref().map(|(_, t)| t), out) {
            return false;
        }
        if !out.event(Event::LeaveDir) {
            return false;
        }
    }
    // A target of "/" itself: its entries become the root tree's entries.
    if let Some(target) = &sk.target {
        if path == Path::new("/") {
            if let Ok(md) = std::fs::symlink_metadata(target) {
                return walk_dir_entries(ctx, target, device_of(&md), parent, out);
            }
        }
    }
    true
}

fn enter_dir(
    ctx: &Ctx,
    node: Node,
    old: Option<&Node>,
    sub: Option<&(TreeId, Tree)>,
    out: &Outputs,
) -> bool {
    let dir_meta_unchanged = old.is_some_and(|o| unchanged(ctx, o, &node));
    out.event(Event::EnterDir {
        node,
        existed: old.is_some_and(|o| o.node_type == NodeType::Dir),
        meta_unchanged: dir_meta_unchanged,
        parent_tree: sub.map(|(id, t)| (*id, t.nodes.len())),
    })
}

/// Walk one entry; returns false when the pipeline has stopped.
fn walk_entry(
    ctx: &Ctx,
    name: Vec<u8>,
    path: &Path,
    md: &std::fs::Metadata,
    root_dev: u64,
    old: Option<&Node>,
    out: &Outputs,
) -> bool {
    if ctx.saver.abort.is_aborted() {
        return false;
    }
    if ctx.excludes.matches(path) {
        return true;
    }
    let mut node = match node_from_metadata(name, path, md, &ctx.node_opts, &ctx.names) {
        Ok(n) => n,
        Err(e) => {
            ctx.warn(format!("{}: {e}", path.display()));
            return true;
        }
    };
    match node.node_type {
        NodeType::Dir => {
            let sub = parent_subtree(ctx, old);
            if !enter_dir(ctx, node, old, sub.as_ref(), out) {
                return false;
            }
            // With --one-file-system the mount point itself is kept, empty.
            if (!ctx.one_file_system || device_of(md) == root_dev)
                && !walk_dir_entries(ctx, path, root_dev, sub.as_ref().map(|(_, t)| t), out)
            {
                return false;
            }
            out.event(Event::LeaveDir)
        }
        NodeType::File => {
            if let Some(old) = old.filter(|o| unchanged(ctx, o, &node)) {
                node.content = old.content.clone();
                return out.event(Event::Unmodified(node));
            }
            let existed = old.is_some_and(|o| o.node_type == NodeType::File);
            if out.seen_link(&node) {
                return out.event(Event::LinkedFile {
                    node,
                    path: path.to_path_buf(),
                    existed,
                });
            }
            let (tx, rx) = bounded(1);
            let job = FileJob {
                path: path.to_path_buf(),
                result: tx,
            };
            if out.jobs.send(job).is_err() {
                return false;
            }
            out.event(Event::File {
                node,
                result: rx,
                existed,
            })
        }
        _ => {
            let same = old.is_some_and(|o| unchanged(ctx, o, &node));
            out.event(Event::Leaf {
                node,
                unchanged: same,
            })
        }
    }
}

fn walk_dir_entries(
    ctx: &Ctx,
    dir: &Path,
    root_dev: u64,
    parent: Option<&Tree>,
    out: &Outputs,
) -> bool {
    let entries = match read_dir_sorted(dir) {
        Ok(e) => e,
        Err(e) => {
            ctx.warn(format!("{}: {e}", dir.display()));
            return true;
        }
    };
    for entry in entries {
        let old = parent.and_then(|t| t.find(&entry.name));
        if !walk_entry(
            ctx,
            entry.name,
            &entry.path,
            &entry.metadata,
            root_dev,
            old,
            out,
        ) {
            return false;
        }
    }
    true
}
