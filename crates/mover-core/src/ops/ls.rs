//! `ls`: list the nodes of a snapshot tree as `restic ls` (0.14) does, and the `ls -l` line
//! format. Reads trees only; never touches file contents or the local file system.

use crate::error::{Error, Result};
use crate::format::TreeId;
use crate::format::tree::{Node, NodeType};
use crate::repo::Repository;
use crate::repo::index::MasterIndex;
use chrono::Local;
use std::future::Future;
use std::pin::Pin;

/// Go `os.FileMode` type bits used by `ls -l`.
const GO_MODE_DIR: u32 = 1 << 31;
const GO_MODE_SYMLINK: u32 = 1 << 27;
const GO_MODE_DEVICE: u32 = 1 << 26;
const GO_MODE_NAMED_PIPE: u32 = 1 << 25;
const GO_MODE_SOCKET: u32 = 1 << 24;
const GO_MODE_CHAR_DEVICE: u32 = 1 << 21;

/// Go's `FileMode.String()`: type and special letters (`dalTLDpSugct?`, one per set bit from
/// bit 31 down) or `-`, then `rwxrwxrwx`.
pub fn go_mode_string(mode: u32) -> String {
    const LETTERS: &str = "dalTLDpSugct?";
    let mut out = String::with_capacity(12);
    for (i, c) in LETTERS.chars().enumerate() {
        if mode & (1 << (31 - i)) != 0 {
            out.push(c);
        }
    }
    if out.is_empty() {
        out.push('-');
    }
    for (i, c) in "rwxrwxrwx".chars().enumerate() {
        out.push(if mode & (1 << (8 - i)) != 0 { c } else { '-' });
    }
    out
}

/// One `restic ls -l` line: mode, uid, gid, size, local mtime, path (and ` -> target` for
/// symlinks), with restic's column widths.
pub fn format_long(node: &Node, path: &str) -> String {
    let (type_bits, target) = match &node.node_type {
        NodeType::Dir => (GO_MODE_DIR, String::new()),
        NodeType::Symlink => (
            GO_MODE_SYMLINK,
            format!(" -> {}", String::from_utf8_lossy(&node.linktarget)),
        ),
        NodeType::Dev => (GO_MODE_DEVICE, String::new()),
        NodeType::Chardev => (GO_MODE_DEVICE | GO_MODE_CHAR_DEVICE, String::new()),
        NodeType::Fifo => (GO_MODE_NAMED_PIPE, String::new()),
        NodeType::Socket => (GO_MODE_SOCKET, String::new()),
        _ => (0, String::new()),
    };
    format!(
        "{} {:5} {:5} {:6} {} {}{}",
        go_mode_string(node.mode | type_bits),
        node.uid,
        node.gid,
        node.size,
        node.mtime.with_timezone(&Local).format("%Y-%m-%d %H:%M:%S"),
        path,
        target
    )
}

/// restic's `fs.HasPathPrefix` for clean absolute paths: `path` is `base` or below it.
fn has_path_prefix(base: &str, path: &str) -> bool {
    if base == "/" {
        return path.starts_with('/');
    }
    path == base || (path.starts_with(base) && path.as_bytes().get(base.len()) == Some(&b'/'))
}

fn parent_of(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) => "/",
        Some(i) => &path[..i],
        None => ".",
    }
}

/// Normalises a `dir` argument: leading `/` added, trailing and duplicate slashes removed.
fn clean_dir(dir: &str) -> Result<String> {
    if dir.split('/').any(|c| c == "." || c == "..") {
        return Err(Error::InvalidInput(format!(
            "path filter {dir:?} must not contain . or .. components"
        )));
    }
    let parts: Vec<&str> = dir.split('/').filter(|c| !c.is_empty()).collect();
    Ok(format!("/{}", parts.join("/")))
}

/// What `restic ls` does with one node at `nodepath`: (print it, descend into it).
fn filter_node(nodepath: &str, dir: Option<&str>, recursive: bool) -> (bool, bool) {
    let Some(dir) = dir else {
        return (true, true);
    };
    let walk = has_path_prefix(nodepath, dir) || has_path_prefix(dir, nodepath);
    if !walk {
        return (false, false);
    }
    let matched = if recursive {
        has_path_prefix(dir, nodepath)
    } else {
        parent_of(nodepath) == dir
    };
    (matched, true)
}

type Out = Vec<(String, Node)>;

fn walk<'a>(
    repo: &'a Repository,
    index: &'a MasterIndex,
    tree: TreeId,
    prefix: String,
    dir: Option<&'a str>,
    recursive: bool,
    out: &'a mut Out,
) -> Pin<Box<dyn Future<Output = Result<()>> + Send + 'a>> {
    Box::pin(async move {
        let tree = repo.load_tree(index, &tree).await?;
        for node in tree.nodes {
            let name = String::from_utf8_lossy(&node.name);
            let path = if prefix == "/" {
                format!("/{name}")
            } else {
                format!("{prefix}/{name}")
            };
            let (print, descend) = filter_node(&path, dir, recursive);
            let subtree = match (&node.node_type, node.subtree) {
                (NodeType::Dir, Some(t)) if descend => Some(t),
                _ => None,
            };
            if print {
                out.push((path.clone(), node));
            }
            if let Some(t) = subtree {
                walk(repo, index, t, path, dir, recursive, out).await?;
            }
        }
        Ok(())
    })
}

/// The nodes of the tree `tree` in restic's order (depth first, by name), with their paths
/// from `/`. With `path_filter`, only nodes directly in that directory, or anywhere below it
/// (and it itself) when `recursive`, as `restic ls SNAPSHOT DIR [--recursive]`.
pub async fn ls(
    repo: &Repository,
    index: &MasterIndex,
    tree: TreeId,
    path_filter: Option<&str>,
    recursive: bool,
) -> Result<Vec<(String, Node)>> {
    let dir = path_filter.map(clean_dir).transpose()?;
    let mut out = Vec::new();
    walk(
        repo,
        index,
        tree,
        "/".to_string(),
        dir.as_deref(),
        recursive,
        &mut out,
    )
    .await?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::gotime;

    #[test]
    fn go_mode_strings() {
        assert_eq!(go_mode_string(0o644), "-rw-r--r--");
        assert_eq!(go_mode_string(2147484141), "drwxr-xr-x");
        assert_eq!(go_mode_string(134218239), "Lrwxrwxrwx");
        assert_eq!(go_mode_string(33554852), "prw-r--r--");
        assert_eq!(go_mode_string(69206454), "Dcrw-rw-rw-");
        assert_eq!(go_mode_string(8389101), "urwxr-xr-x");
        assert_eq!(go_mode_string(2148532735), "dtrwxrwxrwx");
    }

    #[test]
    fn long_format_matches_restic_columns() {
        let mut n = Node::new(b"hello.txt".to_vec(), NodeType::File);
        n.mode = 0o644;
        n.uid = 1000;
        n.gid = 100;
        n.size = 13;
        n.mtime = gotime::parse("2022-08-25T17:55:00.123456789Z").unwrap();
        let t = n.mtime.with_timezone(&Local).format("%Y-%m-%d %H:%M:%S");
        assert_eq!(
            format_long(&n, "/hello.txt"),
            format!("-rw-r--r--  1000   100     13 {t} /hello.txt")
        );
        let mut l = Node::new(b"link".to_vec(), NodeType::Symlink);
        l.mode = 0o777;
        l.linktarget = b"hello.txt".to_vec();
        l.mtime = n.mtime;
        assert_eq!(
            format_long(&l, "/link"),
            format!("Lrwxrwxrwx     0     0      0 {t} /link -> hello.txt")
        );
        let mut d = Node::new(b"d".to_vec(), NodeType::Dir);
        d.mode = 0o755;
        d.mtime = n.mtime;
        assert!(format_long(&d, "/d").starts_with("drwxr-xr-x "));
    }

    #[test]
    fn path_prefix_and_parent() {
        assert!(has_path_prefix("/", "/a"));
        assert!(has_path_prefix("/a", "/a"));
        assert!(has_path_prefix("/a", "/a/b"));
        assert!(!has_path_prefix("/a", "/ab"));
        assert!(!has_path_prefix("/a/b", "/a"));
        assert_eq!(parent_of("/a"), "/");
        assert_eq!(parent_of("/a/b"), "/a");
        assert_eq!(clean_dir("tmp//src/").unwrap(), "/tmp/src");
        assert_eq!(clean_dir("/").unwrap(), "/");
        assert!(clean_dir("/a/../b").is_err());
    }

    #[test]
    fn filter_matches_restic_ls() {
        // No filter: everything.
        assert_eq!(filter_node("/x/y", None, false), (true, true));
        // Non-recursive: only direct children of the dir; walk towards it.
        let d = Some("/tmp/src");
        assert_eq!(filter_node("/tmp", d, false), (false, true));
        assert_eq!(filter_node("/tmp/src", d, false), (false, true));
        assert_eq!(filter_node("/tmp/src/a", d, false), (true, true));
        assert_eq!(filter_node("/tmp/src/a/b", d, false), (false, true));
        assert_eq!(filter_node("/tmp/other", d, false), (false, false));
        // Recursive: the dir itself and everything below.
        assert_eq!(filter_node("/tmp", d, true), (false, true));
        assert_eq!(filter_node("/tmp/src", d, true), (true, true));
        assert_eq!(filter_node("/tmp/src/a/b", d, true), (true, true));
        assert_eq!(filter_node("/tmp/srcx", d, true), (false, false));
        // Root dir, non-recursive: top-level nodes only.
        assert_eq!(filter_node("/a", Some("/"), false), (true, true));
        assert_eq!(filter_node("/a/b", Some("/"), false), (false, true));
    }
}
