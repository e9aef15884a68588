//! Restore side: creating directories, files (sparse-friendly), special nodes and hard links,
//! then putting node metadata back (owner, mode, xattrs, times). Writes what it is given;
//! never decides what to restore and never touches repository data.

use crate::format::tree::{Node, NodeType};
use crate::fs::meta::unix_mode_from_go;
use nix::sys::stat::{Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;
use std::ffi::OsStr;
use std::fs::{File, OpenOptions, Permissions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Knobs for putting metadata back.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// Restore uid and gid (only root may); defaults to "running as root".
    pub restore_owner: bool,
    /// Restore extended attributes.
    pub restore_xattrs: bool,
    /// Which extended attributes are restored (restic's `--include-xattr` and
    /// `--exclude-xattr`).
    pub xattrs: std::sync::Arc<XattrFilter>,
    /// The entry existed before the restore: extended attributes it has that the filter
    /// selects but the snapshot does not list are removed (restic 0.17+).
    pub clean_xattrs: bool,
}

impl Default for RestoreOptions {
    fn default() -> Self {
        RestoreOptions {
            restore_owner: nix::unistd::geteuid().is_root(),
            restore_xattrs: true,
            xattrs: std::sync::Arc::default(),
            clean_xattrs: false,
        }
    }
}

/// Which extended attributes a restore puts back, by restic's patterns (`user.*`).
#[derive(Debug, Clone, Default)]
pub enum XattrFilter {
    #[default]
    All,
    /// Only names matching one of the patterns.
    Include(crate::fs::ExcludeMatcher),
    /// All names but those matching one of the patterns.
    Exclude(crate::fs::ExcludeMatcher),
}

impl XattrFilter {
    /// From `--include-xattr` and `--exclude-xattr`, which restic does not allow together.
    pub fn new(include: &[String], exclude: &[String]) -> Result<XattrFilter, String> {
        match (include.is_empty(), exclude.is_empty()) {
            (true, true) => Ok(XattrFilter::All),
            (false, true) => crate::fs::ExcludeMatcher::new(include)
                .map(XattrFilter::Include)
                .map_err(|e| format!("--include-xattr: {}", e.replace("exclude ", ""))),
            (true, false) => crate::fs::ExcludeMatcher::new(exclude)
                .map(XattrFilter::Exclude)
                .map_err(|e| format!("--exclude-xattr: {}", e.replace("exclude ", ""))),
            (false, false) => {
                Err("exclude and include xattr patterns are mutually exclusive".into())
            }
        }
    }

    pub fn selects(&self, name: &str) -> bool {
        match self {
            XattrFilter::All => true,
            XattrFilter::Include(m) => m.matches(Path::new(name)),
            XattrFilter::Exclude(m) => !m.matches(Path::new(name)),
        }
    }
}

fn with_path(path: &Path, what: &str, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

fn is_unsupported(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(code) if code == libc::ENOTSUP || code == libc::EOPNOTSUPP)
}

/// Removes whatever non-directory sits at `path`, so a fresh node can take its place and
/// writes never go through an old symlink or into another hard link's inode.
fn remove_existing(path: &Path) -> io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(md) if !md.is_dir() => std::fs::remove_file(path),
        // A directory is left alone: the following create reports the conflict.
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
    .map_err(|e| with_path(path, "removing existing", e))
}

/// Creates the missing parent directories of `path`, so that a node can be created at it.
pub fn create_dir_all_for(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => {
            std::fs::create_dir_all(parent).map_err(|e| with_path(parent, "creating directory", e))
        }
        _ => Ok(()),
    }
}

/// Creates the directory `path` (and missing parents); an existing directory is kept, an
/// existing non-directory is replaced. Returns true when the directory is new, so that
/// nothing was in it before.
pub fn create_dir(path: &Path) -> io::Result<bool> {
    match std::fs::create_dir(path) {
        Ok(()) => return Ok(true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            if std::fs::symlink_metadata(path).is_ok_and(|md| md.is_dir()) {
                return Ok(false);
            }
            remove_existing(path)?;
        }
        // A missing parent: made below, together with the directory.
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(with_path(path, "creating directory", e)),
    }
    std::fs::create_dir_all(path).map_err(|e| with_path(path, "creating directory", e))?;
    Ok(true)
}

/// Opens the existing regular file `path` for writing in place and gives it length `size`
/// (a restore over existing data rewrites only the parts that differ).
pub fn open_for_update(path: &Path, size: u64) -> io::Result<File> {
    let file = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| with_path(path, "opening existing file", e))?;
    file.set_len(size)
        .map_err(|e| with_path(path, "setting length of", e))?;
    Ok(file)
}

/// Removes `path` whatever it is (a directory with everything below it; a symbolic link
/// itself, never what it points to).
pub fn remove_all(path: &Path) -> io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(md) if md.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
    .map_err(|e| with_path(path, "removing", e))
}

/// Creates (or replaces) a regular file of length `size`, all holes, ready for writes at
/// offsets; regions never written stay sparse.
pub fn create_file(path: &Path, size: u64) -> io::Result<File> {
    remove_existing(path)?;
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| with_path(path, "creating file", e))?;
    file.set_len(size)
        .map_err(|e| with_path(path, "setting length of", e))?;
    Ok(file)
}

/// Creates a node that is neither a file nor a directory: symlink (raw target), fifo, block
/// or character device (needs root), or socket (a bound and closed Unix socket).
pub fn create_node(path: &Path, node: &Node) -> io::Result<()> {
    remove_existing(path)?;
    let perm = Mode::from_bits_truncate(unix_mode_from_go(node.mode, &node.node_type) & 0o777);
    let result = match &node.node_type {
        NodeType::Symlink => std::os::unix::fs::symlink(OsStr::from_bytes(&node.linktarget), path),
        NodeType::Fifo => nix::unistd::mkfifo(path, perm).map_err(io::Error::from),
        NodeType::Chardev | NodeType::Dev => {
            let kind = if node.node_type == NodeType::Chardev {
                SFlag::S_IFCHR
            } else {
                SFlag::S_IFBLK
            };
            nix::sys::stat::mknod(path, kind, perm, node.device as libc::dev_t)
                .map_err(io::Error::from)
        }
        NodeType::Socket => std::os::unix::net::UnixListener::bind(path).map(drop),
        NodeType::File | NodeType::Dir => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "files and directories are created with create_file and create_dir",
        )),
        NodeType::Irregular | NodeType::Other(_) => Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!("cannot create a node of type {:?}", node.node_type),
        )),
    };
    result.map_err(|e| with_path(path, "creating", e))
}

/// Makes `new` another name of `existing`, replacing a different non-directory at `new`.
pub fn hard_link(existing: &Path, new: &Path) -> io::Result<()> {
    if let (Ok(a), Ok(b)) = (
        std::fs::symlink_metadata(existing),
        std::fs::symlink_metadata(new),
    ) {
        if a.ino() == b.ino() && a.dev() == b.dev() {
            return Ok(());
        }
    }
    remove_existing(new)?;
    std::fs::hard_link(existing, new).map_err(|e| {
        let what = format!("linking {} to", existing.display());
        with_path(new, &what, e)
    })
}

fn keep_first(first: &mut Option<io::Error>, path: &Path, what: &str, result: io::Result<()>) {
    if let Err(e) = result {
        if first.is_none() {
            *first = Some(with_path(path, what, e));
        }
    }
}

fn timespec(t: &chrono::DateTime<chrono::FixedOffset>) -> TimeSpec {
    TimeSpec::new(t.timestamp(), i64::from(t.timestamp_subsec_nanos()))
}

/// The metadata [`apply_metadata`] puts back, without the rest of a [`Node`]: a restore
/// keeps one per file until the end, so it is kept small.
#[derive(Debug, Clone)]
pub struct Metadata {
    /// Permission bits of st_mode (`None` for symlinks, whose mode is not set).
    mode: Option<u32>,
    uid: u32,
    gid: u32,
    atime: TimeSpec,
    mtime: TimeSpec,
    xattrs: Box<[crate::format::tree::ExtendedAttribute]>,
}

impl Metadata {
    /// The permission bits to create a regular file with, so that [`Metadata::apply`] need
    /// not change them in the usual case: the final ones without setuid, setgid and sticky
    /// (those go on only after the owner), and writable by the owner so that the restore can
    /// open it again while writing it.
    pub fn creation_mode(&self) -> u32 {
        self.mode.map_or(0o600, |m| (m & 0o777) | 0o200)
    }

    /// The modification time as seconds and nanoseconds since the epoch.
    pub fn mtime(&self) -> (i64, i64) {
        (self.mtime.tv_sec(), self.mtime.tv_nsec())
    }

    /// The metadata of `node`; takes its extended attributes.
    pub fn take(node: &mut Node) -> Metadata {
        let mut m = Metadata::of_node_without_xattrs(node);
        m.xattrs = std::mem::take(&mut node.extended_attributes).into_boxed_slice();
        m
    }

    fn of_node_without_xattrs(node: &Node) -> Metadata {
        Metadata {
            mode: (node.node_type != NodeType::Symlink)
                .then(|| unix_mode_from_go(node.mode, &node.node_type) & 0o7777),
            uid: node.uid,
            gid: node.gid,
            atime: timespec(&node.atime),
            mtime: timespec(&node.mtime),
            xattrs: Box::default(),
        }
    }

    /// Puts this metadata on `path`: owner (lchown, when `restore_owner`), mode (not for
    /// symlinks; after chown, which clears setuid/setgid), xattrs, then atime/mtime last so
    /// that nothing above changes them. Owner and mode are only changed where they differ.
    /// Every step is tried; the first failure is returned.
    pub fn apply(&self, path: &Path, opts: &RestoreOptions) -> io::Result<()> {
        apply(Target::Path(path), self, &self.xattrs, opts)
    }

    /// [`Metadata::apply`] through an open handle of the regular file at `path` (named in
    /// errors only): no path lookups.
    pub fn apply_to_file(&self, file: &File, path: &Path, opts: &RestoreOptions) -> io::Result<()> {
        apply(Target::File(file, path), self, &self.xattrs, opts)
    }
}

/// Where metadata goes: a path (not followed if a symlink) or an open regular file.
#[derive(Clone, Copy)]
enum Target<'a> {
    Path(&'a Path),
    File(&'a File, &'a Path),
}

fn apply(
    target: Target,
    meta: &Metadata,
    xattrs: &[crate::format::tree::ExtendedAttribute],
    opts: &RestoreOptions,
) -> io::Result<()> {
    let path = match target {
        Target::Path(p) | Target::File(_, p) => p,
    };
    let mut first = None;
    // Owner and mode calls that would change nothing are skipped: each one is a journalled
    // inode update, and the files a restore creates mostly have both right already.
    let current = match target {
        Target::Path(p) => std::fs::symlink_metadata(p),
        Target::File(f, _) => f.metadata(),
    }
    .ok();
    let mut chowned = false;
    if opts.restore_owner
        && !current
            .as_ref()
            .is_some_and(|m| m.uid() == meta.uid && m.gid() == meta.gid)
    {
        let result = match target {
            Target::Path(p) => std::os::unix::fs::lchown(p, Some(meta.uid), Some(meta.gid)),
            Target::File(f, _) => std::os::unix::fs::fchown(f, Some(meta.uid), Some(meta.gid)),
        };
        chowned = result.is_ok();
        keep_first(&mut first, path, "changing owner of", result);
    }
    if let Some(mode) = meta.mode {
        // A successful chown may have cleared setuid and setgid, so the mode goes on again.
        let unchanged = !chowned && current.as_ref().is_some_and(|m| m.mode() & 0o7777 == mode);
        if !unchanged {
            let result = match target {
                Target::Path(p) => std::fs::set_permissions(p, Permissions::from_mode(mode)),
                Target::File(f, _) => f.set_permissions(Permissions::from_mode(mode)),
            };
            keep_first(&mut first, path, "changing mode of", result);
        }
    }
    if opts.restore_xattrs {
        if opts.clean_xattrs {
            let listed = match target {
                Target::Path(p) => xattr::list(p),
                Target::File(f, _) => xattr::FileExt::list_xattr(f),
            };
            for name in listed.into_iter().flatten() {
                let name = name.to_string_lossy().into_owned();
                if !opts.xattrs.selects(&name) || xattrs.iter().any(|a| a.name == name) {
                    continue;
                }
                let result = match target {
                    Target::Path(p) => xattr::remove(p, &name),
                    Target::File(f, _) => xattr::FileExt::remove_xattr(f, &name),
                };
                keep_first(
                    &mut first,
                    path,
                    &format!("removing xattr {name:?} from"),
                    result,
                );
            }
        }
        for attr in xattrs.iter().filter(|a| opts.xattrs.selects(&a.name)) {
            let result = match target {
                Target::Path(p) => xattr::set(p, &attr.name, &attr.value),
                Target::File(f, _) => xattr::FileExt::set_xattr(f, &attr.name, &attr.value),
            };
            let result = match result {
                Err(e) if is_unsupported(&e) => Ok(()),
                other => other,
            };
            let what = format!("setting xattr {:?} on", attr.name);
            keep_first(&mut first, path, &what, result);
        }
    }
    let result = match target {
        Target::Path(p) => nix::sys::stat::utimensat(
            nix::fcntl::AT_FDCWD,
            p,
            &meta.atime,
            &meta.mtime,
            UtimensatFlags::NoFollowSymlink,
        ),
        Target::File(f, _) => nix::sys::stat::futimens(f, &meta.atime, &meta.mtime),
    }
    .map_err(io::Error::from);
    keep_first(&mut first, path, "setting times of", result);
    match first {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Puts `node`'s metadata on `path`, as [`Metadata::apply`].
pub fn apply_metadata(path: &Path, node: &Node, opts: &RestoreOptions) -> io::Result<()> {
    let meta = Metadata::of_node_without_xattrs(node);
    apply(Target::Path(path), &meta, &node.extended_attributes, opts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::FileExt;

    #[test]
    fn create_file_replaces_symlink_and_keeps_holes() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let target = dir.path().join("target");
        std::fs::write(&target, b"keep me")?;
        let path = dir.path().join("f");
        std::os::unix::fs::symlink(&target, &path)?;
        let file = create_file(&path, 4 << 20)?;
        file.write_all_at(b"tail", (4 << 20) - 4)?;
        drop(file);
        assert_eq!(std::fs::read(&target)?, b"keep me");
        let md = std::fs::symlink_metadata(&path)?;
        assert!(md.is_file());
        assert_eq!(md.len(), 4 << 20);
        assert!(md.blocks() * 512 < 1 << 20, "blocks {}", md.blocks());
        Ok(())
    }

    #[test]
    fn metadata_through_a_handle_matches_metadata_by_path() -> io::Result<()> {
        use chrono::TimeZone;
        let dir = tempfile::tempdir()?;
        let mut node = Node::new(b"f".to_vec(), NodeType::File);
        node.mode = 0o640;
        node.mtime = chrono::FixedOffset::east_opt(3600)
            .and_then(|tz| tz.with_ymd_and_hms(2021, 3, 4, 5, 6, 7).single())
            .expect("valid time")
            + chrono::Duration::nanoseconds(123_456_789);
        node.atime = node.mtime;
        node.uid = nix::unistd::geteuid().as_raw();
        node.gid = nix::unistd::getegid().as_raw();
        node.extended_attributes = vec![crate::format::tree::ExtendedAttribute {
            name: "user.mover.test".into(),
            value: b"v".to_vec(),
        }];
        let meta = Metadata::take(&mut node);
        let opts = RestoreOptions::default();
        let (by_path, by_handle) = (dir.path().join("a"), dir.path().join("b"));
        for p in [&by_path, &by_handle] {
            std::fs::write(p, b"content")?;
        }
        meta.apply(&by_path, &opts)?;
        let handle = OpenOptions::new().write(true).open(&by_handle)?;
        meta.apply_to_file(&handle, &by_handle, &opts)?;
        drop(handle);
        let (a, b) = (std::fs::metadata(&by_path)?, std::fs::metadata(&by_handle)?);
        assert_eq!(b.mode() & 0o7777, 0o640);
        assert_eq!(a.mode(), b.mode());
        assert_eq!((b.mtime(), b.mtime_nsec()), (a.mtime(), a.mtime_nsec()));
        assert_eq!(b.mtime_nsec(), 123_456_789);
        assert_eq!(
            xattr::get(&by_path, "user.mover.test")?,
            xattr::get(&by_handle, "user.mover.test")?
        );
        Ok(())
    }

    #[test]
    fn create_dir_all_for_makes_parents_only() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("a/b/c");
        create_dir_all_for(&path)?;
        assert!(dir.path().join("a/b").is_dir());
        assert!(!path.exists());
        assert!(create_dir(&path)?, "new directory");
        assert!(!create_dir(&path)?, "kept directory");
        assert!(path.is_dir());
        std::fs::write(dir.path().join("f"), b"x")?;
        assert!(create_dir(&dir.path().join("f"))?, "replaced file");
        assert!(dir.path().join("f").is_dir());
        assert!(create_dir(&dir.path().join("x/y/z"))?, "with parents");
        Ok(())
    }

    #[test]
    fn hard_link_replaces_other_file() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        File::create(&a)?.write_all(b"a")?;
        File::create(&b)?.write_all(b"b")?;
        hard_link(&a, &b)?;
        hard_link(&a, &b)?;
        assert_eq!(std::fs::read(&b)?, b"a");
        assert_eq!(std::fs::metadata(&a)?.nlink(), 2);
        Ok(())
    }

    #[test]
    fn file_and_dir_nodes_are_refused() {
        let node = crate::fs::roundtrip_tests::blank_node(NodeType::Dir);
        let err = create_node(Path::new("/tmp/never-created"), &node);
        assert_eq!(
            err.err().map(|e| e.kind()),
            Some(io::ErrorKind::InvalidInput)
        );
    }

    #[test]
    fn xattr_filters_select_and_clean() -> io::Result<()> {
        let user = XattrFilter::new(&["user.*".into()], &[]).unwrap();
        assert!(user.selects("user.a") && !user.selects("security.selinux"));
        let no_trusted = XattrFilter::new(&[], &["trusted.*".into()]).unwrap();
        assert!(no_trusted.selects("user.a") && !no_trusted.selects("trusted.x"));
        assert!(XattrFilter::new(&["a".into()], &["b".into()]).is_err());
        assert!(XattrFilter::new(&["[".into()], &[]).is_err());

        let dir = tempfile::tempdir()?;
        let path = dir.path().join("f");
        std::fs::write(&path, b"x")?;
        if xattr::set(&path, "user.stale", b"old").is_err() {
            // The filesystem has no user xattrs; nothing to check here.
            return Ok(());
        }
        let mut node = Node::new(b"f".to_vec(), NodeType::File);
        node.mode = 0o644;
        node.extended_attributes = vec![
            crate::format::tree::ExtendedAttribute {
                name: "user.keep".into(),
                value: b"1".to_vec(),
            },
            crate::format::tree::ExtendedAttribute {
                name: "user.skip".into(),
                value: b"2".to_vec(),
            },
        ];
        let opts = RestoreOptions {
            xattrs: std::sync::Arc::new(XattrFilter::new(&[], &["user.skip".into()]).unwrap()),
            clean_xattrs: true,
            ..RestoreOptions::default()
        };
        apply_metadata(&path, &node, &opts)?;
        assert_eq!(xattr::get(&path, "user.keep")?, Some(b"1".to_vec()));
        assert_eq!(xattr::get(&path, "user.skip")?, None);
        assert_eq!(
            xattr::get(&path, "user.stale")?,
            None,
            "unexpected xattr removed"
        );
        Ok(())
    }
}
