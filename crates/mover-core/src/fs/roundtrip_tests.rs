//! Round trip over a real directory: build every node kind, read it into nodes, check each
//! field, restore the nodes elsewhere and compare what lands on disk.

use crate::format::tree::{Node, NodeType};
use crate::fs::meta::{NameCache, NodeOptions, go_mode_from_unix, node_from_metadata};
use crate::fs::walk::read_dir_sorted;
use crate::fs::write::{
    RestoreOptions, apply_metadata, create_dir, create_dir_all_for, create_file, create_node,
    hard_link,
};
use chrono::DateTime;
use nix::sys::stat::{Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;
use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::fs::Permissions;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

type TestResult = Result<(), Box<dyn std::error::Error>>;

pub(crate) fn blank_node(node_type: NodeType) -> Node {
    let t = DateTime::<chrono::Utc>::UNIX_EPOCH.fixed_offset();
    Node {
        name: b"x".to_vec(),
        node_type,
        mode: 0,
        mtime: t,
        atime: t,
        ctime: t,
        uid: 0,
        gid: 0,
        user: String::new(),
        group: String::new(),
        inode: 0,
        device_id: 0,
        size: 0,
        links: 0,
        linktarget: Vec::new(),
        extended_attributes: Vec::new(),
        generic_attributes: BTreeMap::new(),
        device: 0,
        content: None,
        subtree: None,
    }
}

fn set_times(path: &Path, secs: i64, nanos: i64) -> io::Result<()> {
    let atime = TimeSpec::new(secs - 1000, 1);
    let mtime = TimeSpec::new(secs, nanos);
    nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
        path,
        &atime,
        &mtime,
        UtimensatFlags::NoFollowSymlink,
    )?;
    Ok(())
}

fn chmod(path: &Path, mode: u32) -> io::Result<()> {
    std::fs::set_permissions(path, Permissions::from_mode(mode))
}

const XATTR_VALUE: &[u8] = b"value\0\xff";
const BAD_NAME: &[u8] = b"bad\xff\nname";
const BAD_TARGET: &[u8] = b"tgt\xff\x01<&>";
const SPARSE_LEN: u64 = 8 << 20;

struct Source {
    root: PathBuf,
    xattrs_supported: bool,
    is_root: bool,
}

/// Builds the source tree; returns whether user xattrs and device nodes could be made.
fn build_source(root: &Path) -> io::Result<Source> {
    let is_root = nix::unistd::geteuid().is_root();
    std::fs::create_dir(root)?;
    let hello = root.join("hello.txt");
    std::fs::write(&hello, b"hello world\n")?;
    chmod(&hello, 0o644)?;
    let xattrs_supported = match xattr::set(&hello, "user.test", XATTR_VALUE) {
        Ok(()) => true,
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => {
            eprintln!(
                "user xattrs unsupported on {}: skipping xattr checks",
                root.display()
            );
            false
        }
        Err(e) => return Err(e),
    };
    std::fs::write(root.join("empty"), b"")?;
    chmod(&root.join("empty"), 0o600)?;
    let sparse = std::fs::File::create(root.join("sparse"))?;
    sparse.set_len(SPARSE_LEN)?;
    sparse.write_all_at(b"middle", SPARSE_LEN / 2)?;
    drop(sparse);
    std::fs::write(root.join("setuid"), b"#!/bin/sh\n")?;
    chmod(&root.join("setuid"), 0o4755)?;
    for (name, mode) in [("dir", 0o755), ("setgid", 0o2750), ("sticky", 0o1777)] {
        std::fs::create_dir(root.join(name))?;
        chmod(&root.join(name), mode)?;
    }
    std::fs::write(root.join("dir/inner"), b"inner")?;
    chmod(&root.join("dir/inner"), 0o640)?;
    std::os::unix::fs::symlink("hello.txt", root.join("link"))?;
    std::os::unix::fs::symlink(OsStr::from_bytes(BAD_TARGET), root.join("badlink"))?;
    nix::unistd::mkfifo(&root.join("fifo"), Mode::from_bits_truncate(0o644))?;
    chmod(&root.join("fifo"), 0o644)?;
    drop(std::os::unix::net::UnixListener::bind(root.join("sock"))?);
    std::fs::write(root.join("hl1"), b"linked")?;
    chmod(&root.join("hl1"), 0o644)?;
    std::fs::hard_link(root.join("hl1"), root.join("hl2"))?;
    std::fs::write(root.join(OsStr::from_bytes(BAD_NAME)), b"odd name")?;
    chmod(&root.join(OsStr::from_bytes(BAD_NAME)), 0o644)?;
    if is_root {
        let null = root.join("null");
        let dev = libc::makedev(1, 3);
        nix::sys::stat::mknod(&null, SFlag::S_IFCHR, Mode::from_bits_truncate(0o666), dev)?;
        chmod(&null, 0o666)?;
        std::os::unix::fs::lchown(root.join("hl1"), Some(1234), Some(5678))?;
        std::os::unix::fs::lchown(root.join("link"), Some(4321), Some(8765))?;
        // chown clears setuid; set the mode again.
        chmod(&root.join("hl1"), 0o644)?;
    } else {
        eprintln!("not root: skipping the character device and ownership checks");
    }
    // Times last, children before parents.
    let mut secs = 1_600_000_000;
    for entry in read_dir_sorted(&root.join("dir"))? {
        set_times(&entry.path, secs, 111_111_111)?;
    }
    for entry in read_dir_sorted(root)? {
        secs += 1000;
        set_times(&entry.path, secs, 123_456_789 + secs % 7)?;
    }
    Ok(Source {
        root: root.to_path_buf(),
        xattrs_supported,
        is_root,
    })
}

fn read_nodes(dir: &Path) -> io::Result<Vec<(PathBuf, Node)>> {
    let names = NameCache::new();
    let opts = NodeOptions::default();
    read_dir_sorted(dir)?
        .into_iter()
        .map(|e| {
            let node = node_from_metadata(e.name, &e.path, &e.metadata, &opts, &names)?;
            Ok((e.path, node))
        })
        .collect()
}

fn check_source_nodes(src: &Source, nodes: &[(PathBuf, Node)]) -> TestResult {
    let names = NameCache::new();
    let by_name: HashMap<&[u8], &Node> =
        nodes.iter().map(|(_, n)| (n.name.as_slice(), n)).collect();
    let mut expected: Vec<(&[u8], NodeType, u32, u64, u64)> = vec![
        // name, type, Go mode, size, links
        (b"hello.txt", NodeType::File, 420, 12, 1),
        (b"empty", NodeType::File, 0o600, 0, 1),
        (b"sparse", NodeType::File, 0o644, SPARSE_LEN, 1),
        (b"setuid", NodeType::File, 8389101, 10, 1),
        (b"dir", NodeType::Dir, 2147484141, 0, 0),
        (b"setgid", NodeType::Dir, 2151678440, 0, 0),
        (b"sticky", NodeType::Dir, 2148532735, 0, 0),
        (b"link", NodeType::Symlink, 134218239, 0, 1),
        (b"badlink", NodeType::Symlink, 134218239, 0, 1),
        (b"fifo", NodeType::Fifo, 33554852, 0, 0),
        (b"sock", NodeType::Socket, 0, 0, 0),
        (b"hl1", NodeType::File, 420, 6, 2),
        (b"hl2", NodeType::File, 420, 6, 2),
        (BAD_NAME, NodeType::File, 420, 8, 1),
    ];
    if src.is_root {
        expected.push((b"null", NodeType::Chardev, 69206454, 0, 1));
    }
    assert_eq!(nodes.len(), expected.len(), "node count");
    let sorted: Vec<&[u8]> = nodes.iter().map(|(_, n)| n.name.as_slice()).collect();
    let mut want_sorted = sorted.clone();
    want_sorted.sort();
    assert_eq!(sorted, want_sorted, "nodes sorted by raw name bytes");

    for (name, node_type, mode, size, links) in expected {
        let label = String::from_utf8_lossy(name).into_owned();
        let node = by_name.get(name).ok_or(format!("missing node {label}"))?;
        let path = src.root.join(OsStr::from_bytes(name));
        let md = std::fs::symlink_metadata(&path)?;
        assert_eq!(node.node_type, node_type, "{label} type");
        if node_type == NodeType::Socket {
            assert_eq!(node.mode, go_mode_from_unix(md.mode()), "{label} mode");
            assert_eq!(node.mode & 0x0100_0000, 0x0100_0000, "{label} socket bit");
        } else {
            assert_eq!(node.mode, mode, "{label} mode");
        }
        assert_eq!(node.size, size, "{label} size");
        assert_eq!(node.links, links, "{label} links");
        assert_eq!(node.mtime.timestamp(), md.mtime(), "{label} mtime");
        assert_eq!(
            i64::from(node.mtime.timestamp_subsec_nanos()),
            md.mtime_nsec()
        );
        assert_eq!(node.atime, node.mtime, "{label} atime = mtime");
        assert_eq!(node.ctime.timestamp(), md.ctime(), "{label} ctime");
        assert_eq!(
            i64::from(node.ctime.timestamp_subsec_nanos()),
            md.ctime_nsec()
        );
        assert_eq!((node.uid, node.gid), (md.uid(), md.gid()), "{label} owner");
        assert_eq!(node.user, names.user(md.uid()), "{label} user");
        assert_eq!(node.group, names.group(md.gid()), "{label} group");
        assert_eq!(node.inode, md.ino(), "{label} inode");
        assert_eq!(node.device_id, md.dev(), "{label} device_id");
        assert_eq!(node.content, None, "{label} content");
        assert_eq!(node.subtree, None, "{label} subtree");
        assert!(node.generic_attributes.is_empty());
        match name {
            b"link" => assert_eq!(node.linktarget, b"hello.txt"),
            b"badlink" => assert_eq!(node.linktarget, BAD_TARGET),
            _ => assert!(node.linktarget.is_empty(), "{label} linktarget"),
        }
        if node_type == NodeType::Chardev {
            assert_eq!(node.device, 259, "{label} device");
        } else {
            assert_eq!(node.device, 0, "{label} device");
        }
        let user_attrs: Vec<_> = node
            .extended_attributes
            .iter()
            .filter(|a| a.name.starts_with("user."))
            .collect();
        if name == b"hello.txt" && src.xattrs_supported {
            assert_eq!(user_attrs.len(), 1, "{label} xattrs");
            assert_eq!(user_attrs[0].name, "user.test");
            assert_eq!(user_attrs[0].value, XATTR_VALUE);
        } else {
            assert!(user_attrs.is_empty(), "{label} xattrs");
        }
    }
    let hl1 = by_name.get(b"hl1".as_slice()).ok_or("hl1")?;
    let hl2 = by_name.get(b"hl2".as_slice()).ok_or("hl2")?;
    assert_eq!((hl1.inode, hl1.device_id), (hl2.inode, hl2.device_id));
    if src.is_root {
        assert_eq!((hl1.uid, hl1.gid), (1234, 5678));
        let link = by_name.get(b"link".as_slice()).ok_or("link")?;
        assert_eq!((link.uid, link.gid), (4321, 8765));
        assert_eq!(
            by_name
                .get(b"hello.txt".as_slice())
                .map(|n| n.user.as_str()),
            Some("root")
        );
    }
    Ok(())
}

/// Restores `nodes` into `dst_dir`, copying file bytes from the source
/// while leaving holes, directories recursively, metadata of directories after their children.
fn restore(nodes: &[(PathBuf, Node)], dst_dir: &Path) -> TestResult {
    let opts = RestoreOptions::default();
    let mut first_path: HashMap<(u64, u64), PathBuf> = HashMap::new();
    for (src_path, node) in nodes {
        let dst = dst_dir.join(OsStr::from_bytes(&node.name));
        create_dir_all_for(&dst)?;
        match node.node_type {
            NodeType::Dir => {
                create_dir(&dst)?;
                restore(&read_nodes(src_path)?, &dst)?;
            }
            NodeType::File => {
                let key = (node.device_id, node.inode);
                if let Some(existing) = first_path.get(&key).filter(|_| node.links > 1) {
                    hard_link(existing, &dst)?;
                    continue;
                }
                first_path.insert(key, dst.clone());
                let file = create_file(&dst, node.size)?;
                let data = std::fs::read(src_path)?;
                for (index, block) in data.chunks(4096).enumerate() {
                    if block.iter().any(|&b| b != 0) {
                        file.write_all_at(block, index as u64 * 4096)?;
                    }
                }
            }
            _ => create_node(&dst, node)?,
        }
        apply_metadata(&dst, node, &opts)?;
    }
    Ok(())
}

fn compare_restored(src_nodes: &[(PathBuf, Node)], dst: &Path) -> TestResult {
    // lstat before reading link targets: readlink and reads update atime (relatime).
    let before: Vec<std::fs::Metadata> = read_dir_sorted(dst)?
        .into_iter()
        .map(|e| e.metadata)
        .collect();
    let dst_nodes = read_nodes(dst)?;
    assert_eq!(dst_nodes.len(), src_nodes.len());
    for (((src_path, a), (dst_path, b)), md) in src_nodes.iter().zip(&dst_nodes).zip(&before) {
        let label = String::from_utf8_lossy(&a.name).into_owned();
        assert_eq!(a.name, b.name);
        assert_eq!(a.node_type, b.node_type, "{label} type");
        assert_eq!(a.mode, b.mode, "{label} mode");
        assert_eq!((a.uid, a.gid), (b.uid, b.gid), "{label} owner");
        assert_eq!(
            (a.user.as_str(), a.group.as_str()),
            (b.user.as_str(), b.group.as_str())
        );
        assert_eq!(a.mtime, b.mtime, "{label} mtime");
        assert_eq!(
            b.mtime.timestamp_subsec_nanos(),
            a.mtime.timestamp_subsec_nanos()
        );
        assert_eq!(
            (md.atime(), md.atime_nsec()),
            (md.mtime(), md.mtime_nsec()),
            "{label} atime"
        );
        assert_eq!(a.size, b.size, "{label} size");
        assert_eq!(a.links, b.links, "{label} links");
        assert_eq!(a.linktarget, b.linktarget, "{label} linktarget");
        assert_eq!(a.device, b.device, "{label} rdev");
        assert_eq!(
            a.extended_attributes, b.extended_attributes,
            "{label} xattrs"
        );
        if a.node_type == NodeType::File {
            assert_eq!(
                std::fs::read(src_path)?,
                std::fs::read(dst_path)?,
                "{label} data"
            );
        }
        if a.node_type == NodeType::Dir {
            compare_restored(&read_nodes(src_path)?, dst_path)?;
        }
    }
    let sparse = std::fs::symlink_metadata(dst.join("sparse"));
    if let Ok(md) = sparse {
        assert!(
            md.blocks() * 512 < SPARSE_LEN / 4,
            "sparse blocks {}",
            md.blocks()
        );
    }
    if dst.join("hl1").exists() {
        let (h1, h2) = (
            std::fs::metadata(dst.join("hl1"))?,
            std::fs::metadata(dst.join("hl2"))?,
        );
        assert_eq!(h1.ino(), h2.ino(), "hard link restored");
    }
    Ok(())
}

#[test]
fn read_and_restore_every_node_kind() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let src = build_source(&tmp.path().join("src"))?;
    let nodes = read_nodes(&src.root)?;
    check_source_nodes(&src, &nodes)?;
    let dir_nodes = read_nodes(&src.root.join("dir"))?;
    assert_eq!(dir_nodes.len(), 1);
    assert_eq!(dir_nodes[0].1.mode, 0o640);

    let dst = tmp.path().join("dst");
    std::fs::create_dir(&dst)?;
    restore(&nodes, &dst)?;
    compare_restored(&nodes, &dst)?;

    // Restoring again over the first restore replaces every non-directory in place.
    restore(&nodes, &dst)?;
    compare_restored(&nodes, &dst)?;
    Ok(())
}

#[test]
fn restore_errors_name_the_path() {
    let mut node = blank_node(NodeType::Fifo);
    node.mode = 0o644;
    let err = create_node(Path::new("/nonexistent-dir-for-test/fifo"), &node)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("/nonexistent-dir-for-test/fifo"), "{err}");
    let err = apply_metadata(
        Path::new("/nonexistent-dir-for-test/x"),
        &node,
        &RestoreOptions::default(),
    )
    .err()
    .map(|e| e.to_string())
    .unwrap_or_default();
    assert!(err.contains("/nonexistent-dir-for-test/x"), "{err}");
}
