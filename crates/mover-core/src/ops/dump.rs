//! `dump`: write one file of a snapshot to a stream, or a directory as a tar archive, as
//! `restic dump` (0.14) does. Blobs are fetched a few ahead so that the stream stays busy.
//! Also owns the path lookup inside a snapshot tree that `cat tree` shares. Never writes to
//! the local file system.

use crate::error::{Error, Result};
use crate::format::tree::{Node, NodeType};
use crate::format::{BlobId, TreeId};
use crate::repo::Repository;
use crate::repo::index::MasterIndex;
use futures::StreamExt;
use std::future::Future;
use std::io::Write;
use std::pin::Pin;

/// Blobs fetched ahead of the one being written.
const DUMP_READ_AHEAD: usize = 8;
const BLOCK: usize = 512;
/// Largest value an octal field of `width` bytes (with its NUL) holds.
fn octal_max(width: usize) -> u64 {
    (1u64 << (3 * (width - 1) as u32)) - 1
}

/// What a path inside a snapshot names.
#[derive(Debug, Clone, PartialEq)]
pub enum Found {
    /// The snapshot root (`/`).
    Root(TreeId),
    /// A node, with its cleaned absolute path.
    Node(String, Box<Node>),
}

/// Finds `path` (with or without leading `/`) below the root tree `root`.
pub async fn lookup(
    repo: &Repository,
    index: &MasterIndex,
    root: TreeId,
    path: &str,
) -> Result<Found> {
    let parts: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    if parts.iter().any(|c| *c == "." || *c == "..") {
        return Err(Error::InvalidInput(format!(
            "path {path:?} must not contain . or .. components"
        )));
    }
    let mut tree_id = root;
    let mut item = String::new();
    for (i, part) in parts.iter().enumerate() {
        item.push('/');
        item.push_str(part);
        let tree = repo.load_tree(index, &tree_id).await?;
        let Some(node) = tree.nodes.into_iter().find(|n| n.name == part.as_bytes()) else {
            return Err(Error::NotFound {
                what: format!("path {item:?} in snapshot"),
            });
        };
        if i + 1 == parts.len() {
            return Ok(Found::Node(item, Box::new(node)));
        }
        match (&node.node_type, node.subtree) {
            (NodeType::Dir, Some(sub)) => tree_id = sub,
            _ => {
                return Err(Error::InvalidInput(format!(
                    "{item:?} should be a dir, but is a {:?}",
                    node.node_type.as_str()
                )));
            }
        }
    }
    Ok(Found::Root(root))
}

fn write_out(out: &mut (dyn Write + Send), data: &[u8]) -> Result<()> {
    out.write_all(data)
        .map_err(|e| Error::io("writing dump output", e))
}

/// Streams the blobs of `content` to `out` in order, fetching a few ahead.
async fn write_content(
    repo: &Repository,
    index: &MasterIndex,
    content: &[BlobId],
    out: &mut (dyn Write + Send),
) -> Result<u64> {
    let mut blobs = futures::stream::iter(content.iter().copied())
        .map(|id| async move { repo.load_blob(index, &id).await })
        .buffered(DUMP_READ_AHEAD);
    let mut written = 0u64;
    while let Some(blob) = blobs.next().await {
        let blob = blob?;
        write_out(out, &blob)?;
        written += blob.len() as u64;
    }
    Ok(written)
}

/// Content length of a file from the index (sizes in nodes are informational).
fn content_length(index: &MasterIndex, content: &[BlobId], path: &str) -> Result<u64> {
    content.iter().try_fold(0u64, |acc, id| {
        let loc = index.get(id).ok_or_else(|| {
            Error::corrupt(
                format!("data blob {id} of {path}"),
                "not in the repository index",
            )
        })?;
        let len = loc
            .uncompressed_length
            .unwrap_or_else(|| loc.length.saturating_sub(32));
        Ok(acc + u64::from(len))
    })
}

/// Writes the file at `path` of the tree `tree` to `out` and returns the bytes written. A
/// directory (or `/`) is written as a tar archive of everything below it, as restic does.
pub async fn dump_file(
    repo: &Repository,
    index: &MasterIndex,
    tree: TreeId,
    path: &str,
    out: &mut (dyn Write + Send),
) -> Result<u64> {
    match lookup(repo, index, tree, path).await? {
        Found::Root(root) => dump_tar(repo, index, root, "/", out).await,
        Found::Node(item, node) => match (&node.node_type, node.subtree) {
            (NodeType::File, _) => {
                write_content(
                    repo,
                    index,
                    node.content.as_deref().unwrap_or_default(),
                    out,
                )
                .await
            }
            (NodeType::Dir, Some(sub)) => dump_tar(repo, index, sub, &item, out).await,
            (NodeType::Dir, None) => Err(Error::corrupt(
                format!("directory {item}"),
                "dir node without subtree",
            )),
            (other, _) => Err(Error::InvalidInput(format!(
                "{item:?} should be a file, but is a {:?}",
                other.as_str()
            ))),
        },
    }
}

/// Writes the nodes below `tree` (whose path is `base`) as a tar archive.
async fn dump_tar(
    repo: &Repository,
    index: &MasterIndex,
    tree: TreeId,
    base: &str,
    out: &mut (dyn Write + Send),
) -> Result<u64> {
    let mut written = 0u64;
    tar_tree(repo, index, tree, base.to_string(), true, out, &mut written).await?;
    write_out(out, &[0u8; 2 * BLOCK])?;
    Ok(written + 2 * BLOCK as u64)
}

fn tar_tree<'a>(
    repo: &'a Repository,
    index: &'a MasterIndex,
    tree: TreeId,
    prefix: String,
    top: bool,
    out: &'a mut (dyn Write + Send),
    written: &'a mut u64,
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
            // Below the top level restic sends only files, dirs and symlinks.
            let wanted = top
                || matches!(
                    node.node_type,
                    NodeType::File | NodeType::Dir | NodeType::Symlink
                );
            if !wanted {
                continue;
            }
            let size = match node.node_type {
                NodeType::File => {
                    content_length(index, node.content.as_deref().unwrap_or_default(), &path)?
                }
                _ => 0,
            };
            let Some(header) = tar_header(path.trim_start_matches('/'), &node, size) else {
                continue;
            };
            write_out(out, &header)?;
            *written += header.len() as u64;
            match (&node.node_type, node.subtree) {
                (NodeType::File, _) => {
                    let content = node.content.as_deref().unwrap_or_default();
                    let n = write_content(repo, index, content, out).await?;
                    if n != size {
                        return Err(Error::corrupt(
                            format!("file {path}"),
                            format!("content is {n} bytes, the index says {size}"),
                        ));
                    }
                    let pad = padding(n);
                    write_out(out, &[0u8; BLOCK][..pad])?;
                    *written += n + pad as u64;
                }
                (NodeType::Dir, Some(sub)) => {
                    tar_tree(repo, index, sub, path, false, out, written).await?;
                }
                _ => {}
            }
        }
        Ok(())
    })
}

fn padding(len: u64) -> usize {
    (BLOCK - (len % BLOCK as u64) as usize) % BLOCK
}

/// Writes `value` as zero-padded octal with a trailing NUL into `field`; false if too big.
fn put_octal(field: &mut [u8], value: u64) -> bool {
    if value > octal_max(field.len()) {
        return false;
    }
    let digits = format!("{:0width$o}", value, width = field.len() - 1);
    field[..digits.len()].copy_from_slice(digits.as_bytes());
    field[digits.len()] = 0;
    true
}

fn put_str(field: &mut [u8], s: &[u8]) -> bool {
    let fits = s.len() <= field.len() && s.is_ascii() && !s.contains(&0);
    let n = s.len().min(field.len());
    field[..n].copy_from_slice(&s[..n]);
    fits
}

/// One PAX record: `"<len> <key>=<value>\n"`, where `<len>` counts the whole record.
fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let body = key.len() + value.len() + 3; // space, '=', newline
    let mut len = body + 1;
    while len != body + len.to_string().len() {
        len = body + len.to_string().len();
    }
    let mut rec = format!("{len} {key}=").into_bytes();
    rec.extend_from_slice(value);
    rec.push(b'\n');
    rec
}

/// Go's USTAR split of a long name into `prefix` (≤ 155) and `name` (≤ 100) at a `/`.
fn split_ustar(name: &[u8]) -> Option<(&[u8], &[u8])> {
    if name.len() <= 100 || !name.is_ascii() {
        return None;
    }
    let max_prefix = name.len().min(156);
    let i = name[..max_prefix].iter().rposition(|&b| b == b'/')?;
    let (prefix, rest) = (&name[..i], &name[i + 1..]);
    (i > 0 && !rest.is_empty() && rest.len() <= 100 && prefix.len() <= 155)
        .then_some((prefix, rest))
}

fn linux_major(dev: u64) -> u64 {
    ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff)
}

fn linux_minor(dev: u64) -> u64 {
    (dev & 0xff) | ((dev >> 12) & !0xff)
}

fn checksum(block: &mut [u8; BLOCK]) {
    block[148..156].copy_from_slice(b"        ");
    let sum: u64 = block.iter().map(|&b| u64::from(b)).sum();
    let digits = format!("{sum:06o}");
    block[148..154].copy_from_slice(digits.as_bytes());
    block[154] = 0;
    block[155] = b' ';
}

/// The header block(s) for `node` named `name` (no leading `/`), as Go's `archive/tar` with
/// restic's header fields: USTAR, with a PAX extended header in front when a name, link
/// target, owner name or number does not fit, or when the node has xattrs. `None` for node
/// types tar cannot hold (sockets and unknown types).
fn tar_header(name: &str, node: &Node, size: u64) -> Option<Vec<u8>> {
    let typeflag = match node.node_type {
        NodeType::File => b'0',
        NodeType::Symlink => b'2',
        NodeType::Chardev => b'3',
        NodeType::Dev => b'4',
        NodeType::Dir => b'5',
        NodeType::Fifo => b'6',
        _ => return None,
    };
    let mut full = name.as_bytes().to_vec();
    if node.node_type == NodeType::Dir {
        full.push(b'/');
    }
    let mut pax: Vec<(String, Vec<u8>)> = Vec::new();
    let mut h = [0u8; BLOCK];
    if let Some((prefix, rest)) = split_ustar(&full) {
        put_str(&mut h[0..100], rest);
        put_str(&mut h[345..500], prefix);
    } else if !put_str(&mut h[0..100], &full) {
        pax.push(("path".into(), full.clone()));
    }
    put_octal(&mut h[100..108], u64::from(node.mode & 0o777));
    if !put_octal(&mut h[108..116], u64::from(node.uid)) {
        pax.push(("uid".into(), node.uid.to_string().into_bytes()));
        put_octal(&mut h[108..116], 0);
    }
    if !put_octal(&mut h[116..124], u64::from(node.gid)) {
        pax.push(("gid".into(), node.gid.to_string().into_bytes()));
        put_octal(&mut h[116..124], 0);
    }
    if !put_octal(&mut h[124..136], size) {
        pax.push(("size".into(), size.to_string().into_bytes()));
        put_octal(&mut h[124..136], 0);
    }
    // Go rounds the mtime to whole seconds and drops atime/ctime for an unset format.
    let mut mtime = node.mtime.timestamp();
    if node.mtime.timestamp_subsec_nanos() >= 500_000_000 {
        mtime += 1;
    }
    if !put_octal(&mut h[136..148], u64::try_from(mtime).unwrap_or(0)) {
        pax.push(("mtime".into(), mtime.to_string().into_bytes()));
        put_octal(&mut h[136..148], 0);
    }
    h[156] = typeflag;
    if node.node_type == NodeType::Symlink && !put_str(&mut h[157..257], &node.linktarget) {
        pax.push(("linkpath".into(), node.linktarget.clone()));
    }
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    if !put_str(&mut h[265..297], node.user.as_bytes()) {
        pax.push(("uname".into(), node.user.clone().into_bytes()));
    }
    if !put_str(&mut h[297..329], node.group.as_bytes()) {
        pax.push(("gname".into(), node.group.clone().into_bytes()));
    }
    if matches!(node.node_type, NodeType::Dev | NodeType::Chardev) {
        put_octal(&mut h[329..337], linux_major(node.device));
        put_octal(&mut h[337..345], linux_minor(node.device));
    } else {
        put_octal(&mut h[329..337], 0);
        put_octal(&mut h[337..345], 0);
    }
    for attr in &node.extended_attributes {
        pax.push((format!("SCHILY.xattr.{}", attr.name), attr.value.clone()));
    }
    checksum(&mut h);

    let mut out = Vec::with_capacity(3 * BLOCK);
    if !pax.is_empty() {
        pax.sort_by(|a, b| a.0.cmp(&b.0));
        let data: Vec<u8> = pax.iter().flat_map(|(k, v)| pax_record(k, v)).collect();
        let mut x = [0u8; BLOCK];
        let base = full
            .rsplit(|&b| b == b'/')
            .find(|c| !c.is_empty())
            .unwrap_or(b"x");
        let mut xname = b"PaxHeaders.0/".to_vec();
        xname.extend_from_slice(base);
        xname.retain(|b| b.is_ascii() && *b != 0);
        put_str(&mut x[0..100], &xname);
        put_octal(&mut x[100..108], 0);
        put_octal(&mut x[108..116], 0);
        put_octal(&mut x[116..124], 0);
        put_octal(&mut x[124..136], data.len() as u64);
        put_octal(&mut x[136..148], 0);
        x[156] = b'x';
        x[257..263].copy_from_slice(b"ustar\0");
        x[263..265].copy_from_slice(b"00");
        put_octal(&mut x[329..337], 0);
        put_octal(&mut x[337..345], 0);
        checksum(&mut x);
        out.extend_from_slice(&x);
        out.extend_from_slice(&data);
        out.resize(out.len() + padding(data.len() as u64), 0);
    }
    out.extend_from_slice(&h);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::gotime;
    use crate::format::tree::ExtendedAttribute;

    fn node(name: &str, t: NodeType) -> Node {
        let mut n = Node::new(name.as_bytes().to_vec(), t);
        n.mode = 0o644;
        n.uid = 1000;
        n.gid = 100;
        n.user = "alice".into();
        n.group = "users".into();
        n.mtime = gotime::parse("2022-08-25T17:55:00.6Z").unwrap();
        n
    }

    fn field(h: &[u8], r: std::ops::Range<usize>) -> String {
        String::from_utf8_lossy(&h[r])
            .trim_end_matches('\0')
            .to_string()
    }

    fn checksum_ok(h: &[u8]) -> bool {
        let stored = u64::from_str_radix(field(h, 148..154).trim(), 8).unwrap();
        let sum: u64 = h
            .iter()
            .enumerate()
            .map(|(i, &b)| {
                if (148..156).contains(&i) {
                    32
                } else {
                    u64::from(b)
                }
            })
            .sum();
        stored == sum
    }

    #[test]
    fn ustar_file_header() {
        let h = tar_header("tmp/src/hello.txt", &node("hello.txt", NodeType::File), 13).unwrap();
        assert_eq!(h.len(), BLOCK);
        assert_eq!(field(&h, 0..100), "tmp/src/hello.txt");
        assert_eq!(field(&h, 100..108), "0000644");
        assert_eq!(field(&h, 108..116), "0001750");
        assert_eq!(field(&h, 124..136), "00000000015");
        // 2022-08-25T17:55:00.6Z rounds up to ...:01.
        assert_eq!(
            u64::from_str_radix(&field(&h, 136..148), 8).unwrap(),
            1_661_450_101
        );
        assert_eq!(h[156], b'0');
        assert_eq!(&h[257..265], b"ustar\x0000");
        assert_eq!(field(&h, 265..297), "alice");
        assert!(checksum_ok(&h));
    }

    #[test]
    fn dir_symlink_and_device_headers() {
        let h = tar_header("a/d", &node("d", NodeType::Dir), 0).unwrap();
        assert_eq!(field(&h, 0..100), "a/d/");
        assert_eq!(h[156], b'5');
        let mut l = node("l", NodeType::Symlink);
        l.linktarget = b"../target".to_vec();
        let h = tar_header("l", &l, 0).unwrap();
        assert_eq!(h[156], b'2');
        assert_eq!(field(&h, 157..257), "../target");
        let mut c = node("null", NodeType::Chardev);
        c.device = 259;
        let h = tar_header("dev/null", &c, 0).unwrap();
        assert_eq!(h[156], b'3');
        assert_eq!(field(&h, 329..337), "0000001");
        assert_eq!(field(&h, 337..345), "0000003");
        assert!(tar_header("s", &node("s", NodeType::Socket), 0).is_none());
    }

    #[test]
    fn long_names_split_or_use_pax() {
        let long = format!("{}/{}", "d".repeat(120), "f".repeat(50));
        let h = tar_header(&long, &node("f", NodeType::File), 0).unwrap();
        assert_eq!(h.len(), BLOCK);
        assert_eq!(field(&h, 0..100), "f".repeat(50));
        assert_eq!(field(&h, 345..500), "d".repeat(120));

        let name = format!("café/{}", "x".repeat(150));
        let mut n = node("x", NodeType::File);
        n.extended_attributes = vec![ExtendedAttribute {
            name: "user.k".into(),
            value: b"v".to_vec(),
        }];
        let h = tar_header(&name, &n, 0).unwrap();
        assert_eq!(h.len(), 3 * BLOCK);
        assert_eq!(h[156], b'x');
        assert!(checksum_ok(&h[..BLOCK]));
        let size = usize::from_str_radix(&field(&h, 124..136), 8).unwrap();
        let data = String::from_utf8(h[BLOCK..BLOCK + size].to_vec()).unwrap();
        let path_rec = format!("path={name}\n");
        assert!(data.contains(&path_rec), "{data}");
        assert!(data.contains("SCHILY.xattr.user.k=v\n"), "{data}");
        assert!(checksum_ok(&h[2 * BLOCK..]));
    }

    #[test]
    fn pax_record_length_counts_itself() {
        assert_eq!(pax_record("path", b"a"), b"9 path=a\n");
        let rec = pax_record("path", &[b'x'; 95]);
        assert_eq!(rec.len(), 105);
        assert!(rec.starts_with(b"105 path="));
        for n in 0..300 {
            let rec = pax_record("k", &vec![b'v'; n]);
            let len: usize =
                std::str::from_utf8(&rec[..rec.iter().position(|&b| b == b' ').unwrap()])
                    .unwrap()
                    .parse()
                    .unwrap();
            assert_eq!(len, rec.len());
        }
    }

    #[test]
    fn octal_fields_and_padding() {
        let mut f = [0u8; 8];
        assert!(put_octal(&mut f, 0o7777777));
        assert!(!put_octal(&mut f, 0o10000000));
        assert_eq!(padding(0), 0);
        assert_eq!(padding(1), 511);
        assert_eq!(padding(512), 0);
        assert_eq!(linux_major(259), 1);
        assert_eq!(linux_minor(259), 3);
    }
}
