//! The tree builder: consumes walk events in order and saves one tree blob per directory,
//! bottom-up. A directory whose entries are all unchanged since the parent snapshot reuses
//! the parent's tree blob without encoding it again.

use super::read::{LargeWindows, SMALL_WINDOW_BYTES, read_file};
use super::{Ctx, Event, FileOutcome, LinkKey};
use crate::error::{Error, Result};
use crate::format::BlobType;
use crate::format::TreeId;
use crate::format::tree::{Node, Tree};
use crate::fs::direct::ReadWindow;
use crossbeam_channel::Receiver;
use std::collections::HashMap;
use std::path::Path;

/// restic's summary counters, plus the root tree.
#[derive(Default, Debug, Clone, Copy)]
pub struct Counts {
    pub files_new: u64,
    pub files_changed: u64,
    pub files_unmodified: u64,
    pub dirs_new: u64,
    pub dirs_changed: u64,
    pub dirs_unmodified: u64,
    pub bytes: u64,
}

impl Counts {
    pub fn files(&self) -> u64 {
        self.files_new + self.files_changed + self.files_unmodified
    }
}

/// One open directory.
struct Frame {
    node: Option<Node>,
    nodes: Vec<Node>,
    /// The parent snapshot's tree for this directory and its entry count.
    parent_tree: Option<(TreeId, usize)>,
    existed: bool,
    meta_unchanged: bool,
    /// Every entry so far is unchanged since the parent snapshot.
    all_unchanged: bool,
}

impl Frame {
    fn push(&mut self, node: Node, unchanged: bool) {
        self.nodes.push(node);
        self.all_unchanged &= unchanged;
    }
}

fn top(stack: &mut [Frame]) -> Result<&mut Frame> {
    stack
        .last_mut()
        .ok_or_else(|| Error::Internal("walk events out of order".into()))
}

/// A file read (or taken from another name of it) goes into its directory.
fn add_file(
    ctx: &Ctx,
    stack: &mut [Frame],
    counts: &mut Counts,
    mut node: Node,
    outcome: Result<FileOutcome>,
    existed: bool,
) -> Result<()> {
    match outcome {
        Ok(out) => {
            node.size = out.size;
            node.content = Some(out.content);
            if existed {
                counts.files_changed += 1;
            } else {
                counts.files_new += 1;
            }
            counts.bytes += out.size;
            ctx.progress.add_file(0);
            top(stack)?.push(node, false);
        }
        Err(e) if ctx.saver.abort.is_aborted() => return Err(e),
        Err(e) => {
            ctx.warn(format!("skipping file: {}", e.chain_string()));
            // A file that vanished or could not be read changes its directory.
            top(stack)?.all_unchanged = false;
        }
    }
    Ok(())
}

/// Contents of multiply linked files read in this backup, until their last name is seen.
#[derive(Default)]
struct Links {
    files: HashMap<LinkKey, LinkedContent>,
}

struct LinkedContent {
    /// The first name's size and mtime from the walk, and what its read gave.
    size: u64,
    mtime: chrono::DateTime<chrono::FixedOffset>,
    outcome: FileOutcome,
    /// Names not yet seen.
    names_left: u64,
}

impl Links {
    fn remember(&mut self, node: &Node, out: &FileOutcome) {
        if node.links < 2 || out.size != node.size {
            return;
        }
        self.files.insert(
            LinkKey::of(node),
            LinkedContent {
                size: node.size,
                mtime: node.mtime,
                outcome: FileOutcome {
                    content: out.content.clone(),
                    size: out.size,
                },
                names_left: node.links - 1,
            },
        );
    }

    /// The content of another name of a remembered file, if the file looks the same as when
    /// its first name was read.
    fn content_of(&mut self, node: &Node) -> Option<FileOutcome> {
        let key = LinkKey::of(node);
        let known = self.files.get_mut(&key)?;
        let same = known.size == node.size && known.mtime == node.mtime;
        known.names_left = known.names_left.saturating_sub(1);
        let out = same.then(|| FileOutcome {
            content: known.outcome.content.clone(),
            size: known.outcome.size,
        });
        if known.names_left == 0 {
            self.files.remove(&key);
        }
        out
    }
}

/// Reads a file on the tree builder's own thread: only for another name of a linked file
/// whose first read failed or that changed since.
#[derive(Default)]
struct OwnReader {
    window: Option<ReadWindow>,
}

impl OwnReader {
    fn read(&mut self, ctx: &Ctx, large: &LargeWindows, path: &Path) -> Result<FileOutcome> {
        let window = self
            .window
            .get_or_insert_with(|| ReadWindow::new(SMALL_WINDOW_BYTES));
        read_file(ctx, large, path, window)
    }
}

/// Build all trees; `root_parent` is the parent snapshot's root tree and its entry count.
pub fn build_trees(
    ctx: &Ctx,
    large: &LargeWindows,
    events: Receiver<Event>,
    root_parent: Option<(TreeId, usize)>,
) -> Result<(TreeId, Counts)> {
    let mut counts = Counts::default();
    let mut links = Links::default();
    let mut reader = OwnReader::default();
    let mut stack = vec![Frame {
        node: None,
        nodes: Vec::new(),
        parent_tree: root_parent,
        existed: root_parent.is_some(),
        meta_unchanged: true,
        all_unchanged: true,
    }];
    for ev in events {
        match ev {
            Event::EnterDir {
                node,
                existed,
                meta_unchanged,
                parent_tree,
            } => stack.push(Frame {
                node: Some(node),
                nodes: Vec::new(),
                parent_tree,
                existed,
                meta_unchanged,
                all_unchanged: true,
            }),
            Event::Leaf { node, unchanged } => top(&mut stack)?.push(node, unchanged),
            Event::Unmodified(node) => {
                counts.files_unmodified += 1;
                counts.bytes += node.size;
                ctx.progress.add_file(0);
                top(&mut stack)?.push(node, true);
            }
            Event::File {
                node,
                result,
                existed,
            } => {
                let outcome = result.recv().map_err(|_| {
                    Error::Internal("the file reader stopped before the walk ended".into())
                })?;
                if let Ok(out) = &outcome {
                    links.remember(&node, out);
                }
                add_file(ctx, &mut stack, &mut counts, node, outcome, existed)?;
            }
            Event::LinkedFile {
                node,
                path,
                existed,
            } => {
                let outcome = match links.content_of(&node) {
                    Some(out) => Ok(out),
                    None => reader.read(ctx, large, &path),
                };
                add_file(ctx, &mut stack, &mut counts, node, outcome, existed)?;
            }
            Event::LeaveDir => {
                let frame = stack
                    .pop()
                    .ok_or_else(|| Error::Internal("walk events out of order".into()))?;
                let meta_unchanged = frame.meta_unchanged;
                let (node, subtree, tree_unchanged) = finish_frame(ctx, frame, &mut counts)?;
                let mut node =
                    node.ok_or_else(|| Error::Internal("walk events out of order".into()))?;
                node.subtree = Some(subtree);
                ctx.progress.add_dir();
                top(&mut stack)?.push(node, meta_unchanged && tree_unchanged);
            }
        }
    }
    // The stage that failed first recorded its error; the saver reports it.
    if ctx.saver.abort.is_aborted() {
        return Err(Error::Internal(
            "the backup stopped without an error".into(),
        ));
    }
    let root = match (stack.pop(), stack.is_empty()) {
        (Some(root), true) => root,
        _ => return Err(Error::Internal("the walk ended inside a directory".into())),
    };
    let mut root_counts = Counts::default();
    let (_, id, _) = finish_frame(ctx, root, &mut root_counts)?;
    Ok((id, counts))
}

/// Close a directory: reuse the parent's tree or encode and save a new one. Returns the
/// directory node, its tree id and whether that tree is the parent's.
fn finish_frame(
    ctx: &Ctx,
    frame: Frame,
    counts: &mut Counts,
) -> Result<(Option<Node>, TreeId, bool)> {
    if let Some((parent_id, parent_len)) = frame.parent_tree {
        if frame.all_unchanged && frame.nodes.len() == parent_len {
            counts.dirs_unmodified += 1;
            return Ok((frame.node, parent_id, true));
        }
    }
    let id = save_tree(ctx, frame.nodes)?;
    let same = frame.parent_tree.is_some_and(|(p, _)| p == id);
    if same {
        counts.dirs_unmodified += 1;
    } else if frame.existed {
        counts.dirs_changed += 1;
    } else {
        counts.dirs_new += 1;
    }
    Ok((frame.node, id, same))
}

fn save_tree(ctx: &Ctx, nodes: Vec<Node>) -> Result<TreeId> {
    let mut tree = Tree { nodes };
    tree.sort();
    // Two targets with the same base name would collide; restic appends -1, -2, ...
    dedup_names(&mut tree.nodes);
    let bytes = tree.encode();
    let (id, _) = ctx.saver.save(BlobType::Tree, &bytes)?;
    Ok(TreeId(id.0))
}

fn dedup_names(nodes: &mut [Node]) {
    let mut i = 1;
    while i < nodes.len() {
        if nodes[i].name == nodes[i - 1].name {
            let mut n = 1;
            loop {
                let mut cand = nodes[i].name.clone();
                cand.extend_from_slice(format!("-{n}").as_bytes());
                if !nodes.iter().any(|x| x.name == cand) {
                    nodes[i].name = cand;
                    break;
                }
                n += 1;
            }
            nodes.sort_by(|a, b| a.name.cmp(&b.name));
            i = 1;
            continue;
        }
        i += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::BlobId;
    use crate::format::id::Id;
    use crate::format::tree::NodeType;

    fn linked(inode: u64, links: u64, size: u64) -> Node {
        let mut n = Node::new(b"f".to_vec(), NodeType::File);
        n.inode = inode;
        n.device_id = 7;
        n.links = links;
        n.size = size;
        n
    }

    fn outcome(size: u64) -> FileOutcome {
        FileOutcome {
            content: vec![BlobId(Id::hash(&size.to_le_bytes()))],
            size,
        }
    }

    #[test]
    fn other_names_of_a_linked_file_get_its_content_until_the_last_one() {
        let mut links = Links::default();
        let first = linked(1, 3, 10);
        links.remember(&first, &outcome(10));
        for _ in 0..2 {
            let got = links.content_of(&linked(1, 3, 10)).expect("same file");
            assert_eq!(got.content, outcome(10).content);
            assert_eq!(got.size, 10);
        }
        assert!(links.files.is_empty(), "forgotten after its last name");
        assert!(links.content_of(&linked(1, 3, 10)).is_none());
    }

    #[test]
    fn a_changed_or_unread_linked_file_is_read_again() {
        let mut links = Links::default();
        // Single-link files and reads whose size differs from the walk are not remembered.
        links.remember(&linked(1, 1, 10), &outcome(10));
        links.remember(&linked(2, 2, 10), &outcome(12));
        assert!(links.files.is_empty());

        links.remember(&linked(3, 3, 10), &outcome(10));
        let mut changed = linked(3, 3, 10);
        changed.mtime += chrono::Duration::seconds(1);
        assert!(links.content_of(&changed).is_none(), "mtime changed");
        assert!(
            links.content_of(&linked(3, 3, 11)).is_none(),
            "size changed"
        );
        assert!(links.content_of(&linked(4, 2, 10)).is_none(), "never read");
    }
}
