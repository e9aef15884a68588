//! Turning `lstat` results into restic nodes: Go `os.FileMode` conversion (spec §9.4) and the
//! per-node fields restic stores (§9.2, §13.3). Reads metadata, link targets and xattrs only;
//! never reads file contents, never fills `content` or `subtree`.

use crate::format::tree::{ExtendedAttribute, Node, NodeType};
use chrono::{DateTime, FixedOffset, Local, TimeZone, Utc};
use std::collections::BTreeMap;
use std::fs::Metadata;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

pub use crate::fs::names::NameCache;

pub const GO_MODE_DIR: u32 = 1 << 31;
pub const GO_MODE_SYMLINK: u32 = 1 << 27;
pub const GO_MODE_DEVICE: u32 = 1 << 26;
pub const GO_MODE_NAMED_PIPE: u32 = 1 << 25;
pub const GO_MODE_SOCKET: u32 = 1 << 24;
pub const GO_MODE_SETUID: u32 = 1 << 23;
pub const GO_MODE_SETGID: u32 = 1 << 22;
pub const GO_MODE_CHAR_DEVICE: u32 = 1 << 21;
pub const GO_MODE_STICKY: u32 = 1 << 20;
pub const GO_MODE_IRREGULAR: u32 = 1 << 19;
pub const GO_MODE_PERM: u32 = 0o777;

const S_IFMT: u32 = libc::S_IFMT;
const S_ISUID: u32 = libc::S_ISUID;
const S_ISGID: u32 = libc::S_ISGID;
const S_ISVTX: u32 = libc::S_ISVTX;

/// Go's `os.Lstat` mode from a Linux `st_mode`, restricted to the bits restic stores
/// (perm, type, setuid, setgid, sticky).
pub fn go_mode_from_unix(st_mode: u32) -> u32 {
    let mut mode = st_mode & GO_MODE_PERM;
    mode |= match st_mode & S_IFMT {
        libc::S_IFBLK => GO_MODE_DEVICE,
        libc::S_IFCHR => GO_MODE_DEVICE | GO_MODE_CHAR_DEVICE,
        libc::S_IFDIR => GO_MODE_DIR,
        libc::S_IFIFO => GO_MODE_NAMED_PIPE,
        libc::S_IFLNK => GO_MODE_SYMLINK,
        libc::S_IFSOCK => GO_MODE_SOCKET,
        _ => 0,
    };
    if st_mode & S_ISUID != 0 {
        mode |= GO_MODE_SETUID;
    }
    if st_mode & S_ISGID != 0 {
        mode |= GO_MODE_SETGID;
    }
    if st_mode & S_ISVTX != 0 {
        mode |= GO_MODE_STICKY;
    }
    mode
}

/// Unix mode from a Go mode: permission and setuid/setgid/sticky bits, plus the `S_IF*` type
/// bits of `node_type` (the type comes from the node's `type`, not from `mode`, as restic
/// readers do). Mask with `0o7777` for `chmod`.
pub fn unix_mode_from_go(go_mode: u32, node_type: &NodeType) -> u32 {
    let mut mode = go_mode & GO_MODE_PERM;
    if go_mode & GO_MODE_SETUID != 0 {
        mode |= S_ISUID;
    }
    if go_mode & GO_MODE_SETGID != 0 {
        mode |= S_ISGID;
    }
    if go_mode & GO_MODE_STICKY != 0 {
        mode |= S_ISVTX;
    }
    mode | match node_type {
        NodeType::File => libc::S_IFREG,
        NodeType::Dir => libc::S_IFDIR,
        NodeType::Symlink => libc::S_IFLNK,
        NodeType::Dev => libc::S_IFBLK,
        NodeType::Chardev => libc::S_IFCHR,
        NodeType::Fifo => libc::S_IFIFO,
        NodeType::Socket => libc::S_IFSOCK,
        NodeType::Irregular | NodeType::Other(_) => 0,
    }
}

/// Knobs for building nodes.
#[derive(Debug, Clone, Default)]
pub struct NodeOptions {
    /// Store the real atime (`--with-atime`); otherwise atime = mtime, restic's default.
    pub with_atime: bool,
}

/// The node type of an lstat result.
pub fn node_type_of(md: &Metadata) -> NodeType {
    let ft = md.file_type();
    if ft.is_file() {
        NodeType::File
    } else if ft.is_dir() {
        NodeType::Dir
    } else if ft.is_symlink() {
        NodeType::Symlink
    } else if ft.is_block_device() {
        NodeType::Dev
    } else if ft.is_char_device() {
        NodeType::Chardev
    } else if ft.is_fifo() {
        NodeType::Fifo
    } else if ft.is_socket() {
        NodeType::Socket
    } else {
        NodeType::Irregular
    }
}

/// A Unix timestamp in the local time zone, as restic writes node times; UTC when the local
/// zone has no single answer (a DST gap cannot happen for an instant, but be defensive).
pub fn local_time(secs: i64, nanos: i64) -> DateTime<FixedOffset> {
    // st_*time_nsec is always in 0..1e9 on Linux; clamp rather than trust it.
    let nanos = nanos.clamp(0, 999_999_999) as u32;
    match Local.timestamp_opt(secs, nanos) {
        chrono::LocalResult::Single(t) => t.fixed_offset(),
        _ => match Utc.timestamp_opt(secs, nanos) {
            chrono::LocalResult::Single(t) => t.fixed_offset(),
            _ => DateTime::<Utc>::UNIX_EPOCH.fixed_offset(),
        },
    }
}

fn with_path(path: &Path, what: &str, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

fn is_unsupported(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(code) if code == libc::ENOTSUP || code == libc::EOPNOTSUPP)
}

/// Extended attributes in the order the kernel lists them. Filesystems without xattr support
/// and permission refusals give an empty list, as in restic; an attribute removed between
/// listing and reading is skipped.
pub fn read_xattrs(path: &Path) -> io::Result<Vec<ExtendedAttribute>> {
    let names = match xattr::list(path) {
        Ok(names) => names,
        Err(e) if is_unsupported(&e) || e.raw_os_error() == Some(libc::EPERM) => {
            return Ok(Vec::new());
        }
        Err(e) => return Err(with_path(path, "listing xattrs of", e)),
    };
    let mut attrs = Vec::new();
    for name in names {
        match xattr::get(path, &name) {
            Ok(Some(value)) => attrs.push(ExtendedAttribute {
                name: String::from_utf8_lossy(name.as_bytes()).into_owned(),
                value,
            }),
            Ok(None) => {}
            Err(e) if is_unsupported(&e) => {}
            Err(e) => {
                let what = format!("reading xattr {:?} of", name);
                return Err(with_path(path, &what, e));
            }
        }
    }
    Ok(attrs)
}

/// Builds the node restic would store for `path` from its lstat result `md`. `content` and
/// `subtree` stay `None` for the caller to fill; `size` is the lstat size of a file.
pub fn node_from_metadata(
    name: Vec<u8>,
    path: &Path,
    md: &Metadata,
    opts: &NodeOptions,
    names: &NameCache,
) -> io::Result<Node> {
    let node_type = node_type_of(md);
    let mtime = local_time(md.mtime(), md.mtime_nsec());
    let atime = if opts.with_atime {
        local_time(md.atime(), md.atime_nsec())
    } else {
        mtime
    };
    let ctime = local_time(md.ctime(), md.ctime_nsec());
    let links = match node_type {
        NodeType::File | NodeType::Symlink | NodeType::Dev | NodeType::Chardev => md.nlink(),
        _ => 0,
    };
    let linktarget = if node_type == NodeType::Symlink {
        std::fs::read_link(path)
            .map_err(|e| with_path(path, "reading link", e))?
            .into_os_string()
            .into_encoded_bytes()
    } else {
        Vec::new()
    };
    let extended_attributes = if node_type == NodeType::Symlink {
        Vec::new()
    } else {
        read_xattrs(path)?
    };
    let device = match node_type {
        NodeType::Dev | NodeType::Chardev => md.rdev(),
        _ => 0,
    };
    Ok(Node {
        name,
        mode: go_mode_from_unix(md.mode()),
        mtime,
        atime,
        ctime,
        uid: md.uid(),
        gid: md.gid(),
        user: names.user(md.uid()),
        group: names.group(md.gid()),
        inode: md.ino(),
        device_id: md.dev(),
        size: if node_type == NodeType::File {
            md.len()
        } else {
            0
        },
        links,
        linktarget,
        extended_attributes,
        generic_attributes: BTreeMap::new(),
        device,
        content: None,
        subtree: None,
        node_type,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observed_go_modes() {
        // Spec §9.4, observed with restic 0.14.
        let cases = [
            (libc::S_IFREG | 0o644, NodeType::File, 420),
            (libc::S_IFDIR | 0o755, NodeType::Dir, 2147484141),
            (libc::S_IFLNK | 0o777, NodeType::Symlink, 134218239),
            (libc::S_IFIFO | 0o644, NodeType::Fifo, 33554852),
            (libc::S_IFCHR | 0o666, NodeType::Chardev, 69206454),
            (libc::S_IFREG | 0o4755, NodeType::File, 8389101),
            (libc::S_IFDIR | 0o2750, NodeType::Dir, 2151678440),
            (libc::S_IFDIR | 0o1777, NodeType::Dir, 2148532735),
            (libc::S_IFBLK | 0o660, NodeType::Dev, GO_MODE_DEVICE | 0o660),
            (
                libc::S_IFSOCK | 0o755,
                NodeType::Socket,
                GO_MODE_SOCKET | 0o755,
            ),
        ];
        for (st_mode, node_type, go) in cases {
            assert_eq!(go_mode_from_unix(st_mode), go, "st_mode {st_mode:o}");
            assert_eq!(unix_mode_from_go(go, &node_type), st_mode, "go mode {go}");
        }
    }

    #[test]
    fn all_special_bits_round_trip() {
        for bits in 0..=0o7777u32 {
            let st = libc::S_IFREG | bits;
            assert_eq!(
                unix_mode_from_go(go_mode_from_unix(st), &NodeType::File),
                st
            );
        }
        // Type bits come from the node type, not from the Go mode.
        assert_eq!(
            unix_mode_from_go(2147484141, &NodeType::File),
            libc::S_IFREG | 0o755
        );
        assert_eq!(unix_mode_from_go(0o644, &NodeType::Irregular), 0o644);
    }

    #[test]
    fn times_keep_nanoseconds() {
        let t = local_time(1_661_450_100, 123_456_789);
        assert_eq!(t.timestamp(), 1_661_450_100);
        assert_eq!(t.timestamp_subsec_nanos(), 123_456_789);
        let offset = Local
            .timestamp_opt(1_661_450_100, 0)
            .single()
            .map(|t| t.offset().local_minus_utc());
        assert_eq!(Some(t.offset().local_minus_utc()), offset);
    }

    #[test]
    fn atime_follows_option() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("f");
        std::fs::write(&path, b"abc")?;
        let atime = nix::sys::time::TimeSpec::new(1_000_000_000, 5);
        let mtime = nix::sys::time::TimeSpec::new(1_500_000_000, 7);
        nix::sys::stat::utimensat(
            nix::fcntl::AT_FDCWD,
            &path,
            &atime,
            &mtime,
            nix::sys::stat::UtimensatFlags::NoFollowSymlink,
        )?;
        let md = std::fs::symlink_metadata(&path)?;
        let names = NameCache::new();
        let plain = node_from_metadata(b"f".to_vec(), &path, &md, &NodeOptions::default(), &names)?;
        assert_eq!(plain.atime, plain.mtime);
        assert_eq!(plain.mtime.timestamp(), 1_500_000_000);
        assert_eq!(plain.mtime.timestamp_subsec_nanos(), 7);
        let opts = NodeOptions { with_atime: true };
        let real = node_from_metadata(b"f".to_vec(), &path, &md, &opts, &names)?;
        assert_eq!(real.atime.timestamp(), 1_000_000_000);
        assert_eq!(real.atime.timestamp_subsec_nanos(), 5);
        assert_eq!(real.size, 3);
        assert_eq!(real.content, None);
        Ok(())
    }
}
