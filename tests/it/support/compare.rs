//! Test support: compares two directory trees node by node (names as raw bytes, type, mode
//! bits, owner, content, symlink targets, device numbers, xattrs, mtimes, hard-link structure,
//! sparseness) and reports the differences with their paths.
//! It only reads (lstat, never following symlinks); it never changes either tree.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::fmt::Write as _;
use std::fs::{self, File, Metadata};
use std::io::{self, BufReader, Read};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// What to compare. `Default` compares everything except sparseness.
#[derive(Clone, Debug)]
pub struct CompareOptions {
    /// Compare uid and gid.
    pub owner: bool,
    /// Compare `user.*` xattrs (names and values) of everything but symlinks.
    pub xattrs: bool,
    /// Compare mtimes to the nanosecond.
    pub mtime: bool,
    /// With `mtime`: also compare symlinks' own mtimes.
    pub symlink_mtime: bool,
    /// With `mtime`: also compare directories' mtimes.
    pub dir_mtime: bool,
    /// Check that names sharing an inode in `expected` share one in `actual`, and only those.
    pub hardlinks: bool,
    /// Check each regular file in `actual` allocates at most 1 MiB more than in `expected`.
    pub sparse: bool,
    /// Ignore sockets on both sides (restic 0.14 does not restore them).
    pub skip_sockets: bool,
    /// Accept an actual symlink target equal to the expected one with invalid UTF-8 replaced
    /// by U+FFFD (restic before 0.16 stores `linktarget` as a JSON string, which loses them).
    pub lossy_symlink_targets: bool,
    /// Compare the two roots' own metadata (mode, owner, xattrs, mtime), not only their
    /// contents.
    pub root_metadata: bool,
    /// How many differences to list before stopping.
    pub max_differences: usize,
}

impl Default for CompareOptions {
    fn default() -> Self {
        CompareOptions {
            owner: true,
            xattrs: true,
            mtime: true,
            symlink_mtime: true,
            dir_mtime: true,
            hardlinks: true,
            sparse: false,
            skip_sockets: false,
            lossy_symlink_targets: false,
            root_metadata: true,
            max_differences: 20,
        }
    }
}

/// Compares the trees under `expected` and `actual`. `Err` lists the first differences
/// (`opts.max_differences`), one per line, each with the path relative to the roots.
pub fn compare_trees(expected: &Path, actual: &Path, opts: &CompareOptions) -> Result<(), String> {
    let mut c = Comparer {
        opts,
        diffs: Vec::new(),
        total: 0,
        exp_inodes: BTreeMap::new(),
        act_inodes: BTreeMap::new(),
    };
    c.node(expected, actual, Path::new(""), true);
    if opts.hardlinks {
        c.hardlinks();
    }
    if c.total == 0 {
        return Ok(());
    }
    let mut msg = format!(
        "trees differ: expected {} vs actual {}: {} difference(s)\n",
        expected.display(),
        actual.display(),
        c.total
    );
    for d in &c.diffs {
        let _ = writeln!(msg, "  {d}");
    }
    if c.total > c.diffs.len() {
        let _ = writeln!(msg, "  ... and {} more", c.total - c.diffs.len());
    }
    Err(msg)
}

/// Node kind as lstat sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Fifo,
    Socket,
    CharDevice,
    BlockDevice,
}

pub fn kind(md: &Metadata) -> Kind {
    let t = md.file_type();
    if t.is_symlink() {
        Kind::Symlink
    } else if t.is_dir() {
        Kind::Dir
    } else if t.is_fifo() {
        Kind::Fifo
    } else if t.is_socket() {
        Kind::Socket
    } else if t.is_char_device() {
        Kind::CharDevice
    } else if t.is_block_device() {
        Kind::BlockDevice
    } else {
        Kind::File
    }
}

/// (st_dev, st_ino) of a node, for hard-link grouping.
type InodeKey = (u64, u64);

struct Comparer<'a> {
    opts: &'a CompareOptions,
    diffs: Vec<String>,
    total: usize,
    exp_inodes: BTreeMap<InodeKey, Vec<PathBuf>>,
    act_inodes: BTreeMap<InodeKey, Vec<PathBuf>>,
}

/// Shows a relative path with non-UTF-8 bytes escaped; the root shows as `.`.
fn show(rel: &Path) -> String {
    if rel.as_os_str().is_empty() {
        ".".to_string()
    } else {
        format!("{:?}", rel.as_os_str())
    }
}

impl Comparer<'_> {
    fn diff(&mut self, rel: &Path, what: String) {
        self.total += 1;
        if self.diffs.len() < self.opts.max_differences {
            self.diffs.push(format!("{}: {what}", show(rel)));
        }
    }

    fn node(&mut self, exp: &Path, act: &Path, rel: &Path, is_root: bool) {
        let em = match fs::symlink_metadata(exp) {
            Ok(m) => m,
            Err(e) => return self.diff(rel, format!("cannot lstat expected: {e}")),
        };
        let am = match fs::symlink_metadata(act) {
            Ok(m) => m,
            Err(e) => return self.diff(rel, format!("cannot lstat actual: {e}")),
        };
        let (ek, ak) = (kind(&em), kind(&am));
        if ek != ak {
            return self.diff(rel, format!("type: expected {ek:?}, actual {ak:?}"));
        }
        if ek != Kind::Dir && em.nlink() > 1 {
            let key = (em.dev(), em.ino());
            self.exp_inodes
                .entry(key)
                .or_default()
                .push(rel.to_path_buf());
        }
        if ak != Kind::Dir && am.nlink() > 1 {
            let key = (am.dev(), am.ino());
            self.act_inodes
                .entry(key)
                .or_default()
                .push(rel.to_path_buf());
        }
        if !is_root || self.opts.root_metadata {
            self.metadata(exp, act, rel, ek, &em, &am);
        }
        match ek {
            Kind::File => self.file(exp, act, rel, &em, &am),
            Kind::Symlink => match (fs::read_link(exp), fs::read_link(act)) {
                (Ok(e), Ok(a)) if e == a => {}
                (Ok(e), Ok(a))
                    if self.opts.lossy_symlink_targets
                        && e.to_string_lossy().as_bytes() == a.as_os_str().as_encoded_bytes() => {}
                (Ok(e), Ok(a)) => self.diff(
                    rel,
                    format!(
                        "symlink target: expected {:?}, actual {:?}",
                        e.as_os_str(),
                        a.as_os_str()
                    ),
                ),
                (e, a) => self.diff(rel, format!("readlink: expected {e:?}, actual {a:?}")),
            },
            Kind::CharDevice | Kind::BlockDevice if em.rdev() != am.rdev() => self.diff(
                rel,
                format!("rdev: expected {:#x}, actual {:#x}", em.rdev(), am.rdev()),
            ),
            Kind::Dir => self.dir(exp, act, rel),
            _ => {}
        }
    }

    fn metadata(
        &mut self,
        exp: &Path,
        act: &Path,
        rel: &Path,
        k: Kind,
        em: &Metadata,
        am: &Metadata,
    ) {
        // Linux symlinks always have mode 0777; nothing to compare.
        if k != Kind::Symlink && em.mode() & 0o7777 != am.mode() & 0o7777 {
            self.diff(
                rel,
                format!(
                    "mode: expected {:04o}, actual {:04o}",
                    em.mode() & 0o7777,
                    am.mode() & 0o7777
                ),
            );
        }
        if self.opts.owner && (em.uid(), em.gid()) != (am.uid(), am.gid()) {
            self.diff(
                rel,
                format!(
                    "owner: expected {}:{}, actual {}:{}",
                    em.uid(),
                    em.gid(),
                    am.uid(),
                    am.gid()
                ),
            );
        }
        let check_mtime = self.opts.mtime
            && (k != Kind::Symlink || self.opts.symlink_mtime)
            && (k != Kind::Dir || self.opts.dir_mtime);
        if check_mtime && (em.mtime(), em.mtime_nsec()) != (am.mtime(), am.mtime_nsec()) {
            self.diff(
                rel,
                format!(
                    "mtime: expected {}.{:09}, actual {}.{:09}",
                    em.mtime(),
                    em.mtime_nsec(),
                    am.mtime(),
                    am.mtime_nsec()
                ),
            );
        }
        if self.opts.xattrs && k != Kind::Symlink {
            match (user_xattrs(exp), user_xattrs(act)) {
                (Ok(e), Ok(a)) if e == a => {}
                (Ok(e), Ok(a)) => self.diff(
                    rel,
                    format!(
                        "xattrs: expected {}, actual {}",
                        show_xattrs(&e),
                        show_xattrs(&a)
                    ),
                ),
                (e, a) => self.diff(rel, format!("xattrs: expected {e:?}, actual {a:?}")),
            }
        }
    }

    fn file(&mut self, exp: &Path, act: &Path, rel: &Path, em: &Metadata, am: &Metadata) {
        if em.len() != am.len() {
            return self.diff(
                rel,
                format!("size: expected {}, actual {}", em.len(), am.len()),
            );
        }
        match same_content(exp, act) {
            Ok(None) => {}
            Ok(Some(offset)) => self.diff(rel, format!("content differs at byte offset {offset}")),
            Err(e) => self.diff(rel, format!("cannot read: {e}")),
        }
        if self.opts.sparse {
            let (eb, ab) = (em.blocks() * 512, am.blocks() * 512);
            if ab > eb + 1024 * 1024 {
                self.diff(
                    rel,
                    format!("allocated bytes: expected at most {eb} + 1 MiB, actual {ab}"),
                );
            }
        }
    }

    fn dir(&mut self, exp: &Path, act: &Path, rel: &Path) {
        let skip = self.opts.skip_sockets;
        let (e, a) = match (list_dir(exp, skip), list_dir(act, skip)) {
            (Ok(e), Ok(a)) => (e, a),
            (e, a) => {
                return self.diff(
                    rel,
                    format!("cannot list: expected {:?}, actual {:?}", e.err(), a.err()),
                );
            }
        };
        for name in e.difference(&a) {
            self.diff(&rel.join(name), "missing in actual".to_string());
        }
        for name in a.difference(&e) {
            self.diff(&rel.join(name), "unexpected in actual".to_string());
        }
        for name in e.intersection(&a) {
            self.node(&exp.join(name), &act.join(name), &rel.join(name), false);
        }
    }

    fn hardlinks(&mut self) {
        let groups = |m: &BTreeMap<InodeKey, Vec<PathBuf>>| -> BTreeSet<Vec<PathBuf>> {
            m.values()
                .filter(|v| v.len() > 1)
                .map(|v| {
                    let mut v = v.clone();
                    v.sort();
                    v
                })
                .collect()
        };
        let (e, a) = (groups(&self.exp_inodes), groups(&self.act_inodes));
        for g in e.difference(&a) {
            let names: Vec<String> = g.iter().map(|p| show(p)).collect();
            self.diff(
                &g[0],
                format!("hard links: expected one inode for [{}]", names.join(", ")),
            );
        }
        for g in a.difference(&e) {
            let names: Vec<String> = g.iter().map(|p| show(p)).collect();
            self.diff(
                &g[0],
                format!(
                    "hard links: actual shares one inode for [{}], expected does not",
                    names.join(", ")
                ),
            );
        }
    }
}

/// Entry names of a directory as raw bytes, sockets left out when asked.
fn list_dir(dir: &Path, skip_sockets: bool) -> io::Result<BTreeSet<OsString>> {
    let mut names = BTreeSet::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if skip_sockets && entry.file_type()?.is_socket() {
            continue;
        }
        names.insert(entry.file_name());
    }
    Ok(names)
}

/// `user.*` xattrs of a node, sorted by name. ENOTSUP counts as none.
pub fn user_xattrs(path: &Path) -> io::Result<BTreeMap<OsString, Vec<u8>>> {
    let mut out = BTreeMap::new();
    let names = match xattr::list(path) {
        Ok(n) => n,
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => return Ok(out),
        Err(e) => return Err(e),
    };
    for name in names {
        if !name.as_encoded_bytes().starts_with(b"user.") {
            continue;
        }
        let value = xattr::get(path, &name)?.unwrap_or_default();
        out.insert(name, value);
    }
    Ok(out)
}

fn show_xattrs(x: &BTreeMap<OsString, Vec<u8>>) -> String {
    let items: Vec<String> = x
        .iter()
        .map(|(k, v)| format!("{k:?}=\"{}\"", v.escape_ascii()))
        .collect();
    format!("{{{}}}", items.join(", "))
}

/// `None` if both files have the same bytes, else the first differing offset.
fn same_content(a: &Path, b: &Path) -> io::Result<Option<u64>> {
    let mut ra = BufReader::with_capacity(1 << 20, File::open(a)?);
    let mut rb = BufReader::with_capacity(1 << 20, File::open(b)?);
    let (mut ba, mut bb) = (vec![0u8; 1 << 16], vec![0u8; 1 << 16]);
    let mut offset = 0u64;
    loop {
        let na = read_full(&mut ra, &mut ba)?;
        let nb = read_full(&mut rb, &mut bb)?;
        let n = na.min(nb);
        if let Some(i) = (0..n).find(|&i| ba[i] != bb[i]) {
            return Ok(Some(offset + i as u64));
        }
        if na != nb {
            return Ok(Some(offset + n as u64));
        }
        if na == 0 {
            return Ok(None);
        }
        offset += n as u64;
    }
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}
