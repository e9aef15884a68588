//! The restore plan: the snapshot's trees walked into the directories, files, hard links
//! and special nodes to restore.

use super::select::Selector;
use crate::error::{Error, Result};
use crate::format::tree::{Node, NodeType, Tree};
use crate::format::{BlobId, TreeId};
use crate::fs::write as fsw;
use crate::repo::Repository;
use crate::repo::index::MasterIndex;
use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

/// Trees loaded by one request while planning: bounds the decoded trees held at once.
const TREE_BATCH: usize = 4096;

#[derive(Debug)]
pub(super) struct PlanDir {
    pub(super) target: PathBuf,
    pub(super) location: Vec<u8>,
    /// `None` for the snapshot root, which gets no metadata.
    pub(super) node: Option<Node>,
    pub(super) parent: Option<usize>,
    pub(super) depth: usize,
    pub(super) selected: bool,
    /// Selected, or something below it was: its metadata is restored.
    pub(super) restored: bool,
    /// With `--delete`: the names of every entry the snapshot has here (also those not
    /// selected); entries of the target directory not among them are removed.
    pub(super) children: Vec<Box<[u8]>>,
}

/// One file to restore. There is one per file in the snapshot and all live until the end,
/// so only what the restore needs is kept: the target path is derived from the location
/// ([`target_path`]) and the node shrinks to its [`fsw::Metadata`].
#[derive(Debug)]
pub(super) struct PlanFile {
    /// Path inside the snapshot, `/`-rooted.
    pub(super) location: Box<[u8]>,
    pub(super) meta: fsw::Metadata,
    /// Data blobs, in order.
    pub(super) content: Box<[BlobId]>,
    pub(super) dir: usize,
    /// Content length from the index (filled in before files are created).
    pub(super) size: u64,
    /// Plaintext length of each content blob (only kept when verifying).
    pub(super) blob_lengths: Vec<u32>,
}

#[derive(Debug)]
pub(super) struct PlanLink {
    pub(super) target: PathBuf,
    pub(super) location: Vec<u8>,
    pub(super) node: Node,
    /// Index into `Plan::files` of the first name of this inode.
    pub(super) file: usize,
}

#[derive(Debug)]
pub(super) struct PlanSpecial {
    pub(super) target: PathBuf,
    pub(super) location: Vec<u8>,
    pub(super) node: Node,
}

#[derive(Debug)]
pub(super) struct Plan {
    pub(super) dirs: Vec<PlanDir>,
    pub(super) files: Vec<PlanFile>,
    pub(super) links: Vec<PlanLink>,
    pub(super) specials: Vec<PlanSpecial>,
    pub(super) errors: Vec<String>,
    pub(super) inodes: HashMap<(u64, u64), usize>,
    /// Keep each directory's child names (for `--delete`).
    pub(super) record_children: bool,
}

/// Where snapshot path `location` is restored below `root`; an empty root leaves the
/// location as it is.
pub(super) fn target_path(root: &Path, location: &[u8]) -> PathBuf {
    let mut bytes = root.as_os_str().as_bytes().to_vec();
    let rest = match bytes.last() {
        Some(b'/') => location.strip_prefix(b"/").unwrap_or(location),
        _ => location,
    };
    bytes.extend_from_slice(rest);
    PathBuf::from(std::ffi::OsString::from_vec(bytes))
}

pub(super) fn loc_str(location: &[u8]) -> String {
    String::from_utf8_lossy(location).into_owned()
}

pub(super) fn valid_name(name: &[u8]) -> bool {
    !name.is_empty() && name != b"." && name != b".." && !name.contains(&b'/') && !name.contains(&0)
}

impl Plan {
    pub(super) fn new(target: &Path) -> Plan {
        Plan {
            dirs: vec![PlanDir {
                target: target.to_path_buf(),
                location: b"/".to_vec(),
                node: None,
                parent: None,
                depth: 0,
                selected: true,
                restored: true,
                children: Vec::new(),
            }],
            files: Vec::new(),
            links: Vec::new(),
            specials: Vec::new(),
            errors: Vec::new(),
            inodes: HashMap::new(),
            record_children: false,
        }
    }

    pub(super) fn mark_restored(&mut self, mut dir: usize) {
        loop {
            let d = &mut self.dirs[dir];
            if d.restored {
                return;
            }
            d.restored = true;
            match d.parent {
                Some(p) => dir = p,
                None => return,
            }
        }
    }

    /// Adds the entries of `tree`, the listing of `self.dirs[dir]`; returns the subtrees to
    /// descend into, with the index of their directory.
    pub(super) fn add_tree(
        &mut self,
        dir: usize,
        tree: Tree,
        selector: &Selector,
    ) -> Result<Vec<(TreeId, usize)>> {
        let mut descend = Vec::new();
        if self.record_children {
            self.dirs[dir].children = tree
                .nodes
                .iter()
                .map(|n| n.name.clone().into_boxed_slice())
                .collect();
        }
        for mut node in tree.nodes {
            let parent = &self.dirs[dir];
            let mut location = parent.location.clone();
            if location != b"/" {
                location.push(b'/');
            }
            location.extend_from_slice(&node.name);
            if !valid_name(&node.name) {
                self.errors.push(format!(
                    "{}: invalid child node name {:?}",
                    loc_str(&parent.location),
                    String::from_utf8_lossy(&node.name)
                ));
                continue;
            }
            let depth = parent.depth + 1;
            let is_dir = node.node_type == NodeType::Dir;
            let (selected, child) = selector.select(&location, is_dir);
            match node.node_type {
                NodeType::Dir => {
                    let Some(subtree) = node.subtree else {
                        return Err(Error::corrupt(
                            format!("directory {}", loc_str(&location)),
                            "dir node without subtree",
                        ));
                    };
                    if !selected && !child {
                        continue;
                    }
                    let idx = self.dirs.len();
                    let target = self.dirs[dir].target.join(OsStr::from_bytes(&node.name));
                    self.dirs.push(PlanDir {
                        target,
                        location,
                        node: Some(node),
                        parent: Some(dir),
                        depth,
                        selected,
                        restored: false,
                        children: Vec::new(),
                    });
                    if selected {
                        self.mark_restored(idx);
                    }
                    if child {
                        descend.push((subtree, idx));
                    }
                }
                _ if !selected => {}
                NodeType::File => {
                    self.mark_restored(dir);
                    if node.links > 1 {
                        let key = (node.device_id, node.inode);
                        if let Some(&file) = self.inodes.get(&key) {
                            let target = self.dirs[dir].target.join(OsStr::from_bytes(&node.name));
                            self.links.push(PlanLink {
                                target,
                                location,
                                node,
                                file,
                            });
                            continue;
                        }
                        self.inodes.insert(key, self.files.len());
                    }
                    self.files.push(PlanFile {
                        location: location.into_boxed_slice(),
                        meta: fsw::Metadata::take(&mut node),
                        content: node.content.take().unwrap_or_default().into_boxed_slice(),
                        dir,
                        size: 0,
                        blob_lengths: Vec::new(),
                    });
                }
                _ => {
                    self.mark_restored(dir);
                    let target = self.dirs[dir].target.join(OsStr::from_bytes(&node.name));
                    self.specials.push(PlanSpecial {
                        target,
                        location,
                        node,
                    });
                }
            }
        }
        Ok(descend)
    }
}

/// Walks the snapshot from `root` one level at a time, loading each level's trees in
/// batches of [`TREE_BATCH`] (see [`Repository::load_trees`]).
pub(super) async fn build_plan(
    repo: &Repository,
    index: &MasterIndex,
    root: TreeId,
    target: &Path,
    selector: &Selector,
    record_children: bool,
) -> Result<Plan> {
    let mut plan = Plan::new(target);
    plan.record_children = record_children;
    let mut frontier = vec![(root, 0usize)];
    while !frontier.is_empty() {
        let level = std::mem::take(&mut frontier);
        for batch in level.chunks(TREE_BATCH) {
            let ids: Vec<TreeId> = batch.iter().map(|&(id, _)| id).collect();
            let trees = repo.load_trees(index, &ids).await?;
            for (tree, &(_, dir)) in trees.into_iter().zip(batch) {
                frontier.extend(plan.add_tree(dir, tree, selector)?);
            }
        }
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::Id;
    use crate::ops::restore::select::selector as sel;

    fn dir(name: &str, subtree: u8) -> Node {
        let mut n = Node::new(name.as_bytes().to_vec(), NodeType::Dir);
        n.subtree = Some(TreeId(Id([subtree; 32])));
        n
    }

    fn file(name: &str, blobs: &[u8]) -> Node {
        let mut n = Node::new(name.as_bytes().to_vec(), NodeType::File);
        n.content = Some(blobs.iter().map(|&b| BlobId(Id([b; 32]))).collect());
        n
    }

    #[test]
    fn plan_from_in_memory_trees() {
        let s = sel(&[], &[]);
        let mut plan = Plan::new(Path::new("/restore"));
        let mut link_a = file("a", &[1, 2]);
        link_a.links = 2;
        link_a.inode = 7;
        link_a.device_id = 3;
        let mut link_b = link_a.clone();
        link_b.name = b"b".to_vec();
        let mut sym = Node::new(b"s".to_vec(), NodeType::Symlink);
        sym.linktarget = b"a".to_vec();
        let sock = Node::new(b"sock".to_vec(), NodeType::Socket);
        let bad = file("..", &[]);
        let root = Tree {
            nodes: vec![bad, link_a, link_b, dir("d", 9), sym, sock],
        };
        let descend = plan.add_tree(0, root, &s).unwrap();
        assert_eq!(descend, vec![(TreeId(Id([9; 32])), 1)]);
        let sub = Tree {
            nodes: vec![file("e", &[])],
        };
        assert!(plan.add_tree(1, sub, &s).unwrap().is_empty());

        assert_eq!(plan.errors.len(), 1, "{:?}", plan.errors);
        assert_eq!(plan.dirs.len(), 2);
        assert_eq!(plan.dirs[1].target, Path::new("/restore/d"));
        assert_eq!(plan.dirs[1].location, b"/d");
        assert_eq!(plan.dirs[1].depth, 1);
        let files: Vec<_> = plan.files.iter().map(|f| loc_str(&f.location)).collect();
        assert_eq!(files, ["/a", "/d/e"]);
        assert_eq!(plan.links.len(), 1);
        assert_eq!(plan.links[0].target, Path::new("/restore/b"));
        assert_eq!(
            target_path(&plan.dirs[0].target, &plan.files[1].location),
            Path::new("/restore/d/e")
        );
        assert_eq!(target_path(Path::new("/"), b"/d/e"), Path::new("/d/e"));
        assert_eq!(target_path(Path::new("r/"), b"/e"), Path::new("r/e"));
        assert_eq!(
            target_path(Path::new(""), b"/dev/vdb"),
            Path::new("/dev/vdb")
        );
        assert_eq!(plan.links[0].file, 0);
        // Sockets are recreated (restic skips them).
        assert_eq!(plan.specials.len(), 2);
        assert_eq!(plan.specials[0].location, b"/s");
        assert_eq!(plan.specials[1].location, b"/sock");
    }

    #[test]
    fn plan_with_include_marks_parents_restored() {
        let s = sel(&["/x/y/f"], &[]);
        let mut plan = Plan::new(Path::new("/t"));
        let d = plan
            .add_tree(
                0,
                Tree {
                    nodes: vec![dir("w", 1), dir("x", 2)],
                },
                &s,
            )
            .unwrap();
        assert_eq!(d, vec![(TreeId(Id([2; 32])), 1)]);
        let d = plan
            .add_tree(
                1,
                Tree {
                    nodes: vec![dir("y", 3), dir("z", 4)],
                },
                &s,
            )
            .unwrap();
        assert_eq!(d, vec![(TreeId(Id([3; 32])), 2)]);
        assert!(!plan.dirs[1].restored);
        plan.add_tree(
            2,
            Tree {
                nodes: vec![file("f", &[5]), file("g", &[6])],
            },
            &s,
        )
        .unwrap();
        assert_eq!(plan.files.len(), 1);
        assert!(plan.dirs.iter().all(|d| d.restored));
        assert!(plan.dirs.iter().skip(1).all(|d| !d.selected));
    }
}
