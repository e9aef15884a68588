//! Test support: builds a deterministic directory tree that holds every node kind restic
//! stores (files of all shapes, dirs, symlinks, hard links, fifo, socket, devices, odd names,
//! special mode bits, foreign owners, xattrs, extreme mtimes).
//! It only writes below the root it is given and never reads the tree back; checking a
//! restored copy is `compare.rs`'s job.

#![allow(dead_code)]

use std::ffi::{OsStr, OsString};
use std::fs::{self, File};
use std::io::{self, Seek, SeekFrom, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{PermissionsExt, lchown, symlink};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

use nix::sys::stat::{Mode, SFlag, UtimensatFlags, makedev, mknod, utimensat};
use nix::sys::time::TimeSpec;

/// What to generate. Same options and seed give the same names, contents, modes and times.
#[derive(Clone, Debug)]
pub struct GenOptions {
    /// Seed of the splitmix64 stream behind every content byte, size and time.
    pub seed: u64,
    /// Number of small files (0..=8 KiB each), spread over a few nested directories.
    pub small_files: usize,
    /// Make a char and a block device node (only when running as root and allowed to).
    pub with_devices: bool,
    /// Make names with invalid UTF-8, control characters, quotes, `<>&`, unicode and spaces.
    pub with_special_names: bool,
    /// Size of `large.bin` (pseudo-random, so it is cut into many chunks). 0 leaves it empty.
    pub large_file_bytes: u64,
}

impl Default for GenOptions {
    fn default() -> Self {
        GenOptions {
            seed: 1,
            small_files: 24,
            with_devices: true,
            with_special_names: true,
            large_file_bytes: 3 * 1024 * 1024 + 12_345,
        }
    }
}

/// What `generate_tree_with_summary` actually made, where that depends on the machine.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GenSummary {
    /// `user.mover` xattrs were set (false when the filesystem answers ENOTSUP).
    pub xattrs: bool,
    /// Char and block device nodes were made.
    pub devices: bool,
    /// Some nodes were chowned to 1234:5678 (only as root).
    pub foreign_owner: bool,
    /// A unix socket was made.
    pub socket: bool,
    /// Number of regular-file names written (hard links count once per name).
    pub files: usize,
    /// Sum of regular-file sizes over distinct inodes.
    pub file_bytes: u64,
}

/// Uid and gid given to the nodes under `owner/` when running as root.
pub const FOREIGN_UID: u32 = 1234;
/// See [`FOREIGN_UID`].
pub const FOREIGN_GID: u32 = 5678;

/// 1960-01-01T00:00:00Z, a time before the Unix epoch (ext4 holds nothing before 1901-12-13).
pub const PRE_EPOCH_SECS: i64 = -315_619_200;
/// 2200-01-01T00:00:00Z, a time far in the future.
pub const FAR_FUTURE_SECS: i64 = 7_258_118_400;

/// Builds the tree under `root` (created if missing; it should be empty).
pub fn generate_tree(root: &Path, opts: &GenOptions) -> io::Result<()> {
    generate_tree_with_summary(root, opts).map(|_| ())
}

/// As [`generate_tree`], and says which machine-dependent parts were made.
pub fn generate_tree_with_summary(root: &Path, opts: &GenOptions) -> io::Result<GenSummary> {
    let mut g = Gen {
        rng: SplitMix64(opts.seed),
        root: root.to_path_buf(),
        summary: GenSummary::default(),
        is_root: nix::unistd::geteuid().is_root(),
    };
    fs::create_dir_all(root)?;
    g.files()?;
    g.small_files(opts.small_files)?;
    g.large_file(opts.large_file_bytes)?;
    g.modes()?;
    g.symlinks()?;
    g.hardlinks()?;
    g.special(opts.with_devices)?;
    if opts.with_special_names {
        g.names()?;
    }
    g.owners()?;
    g.xattrs()?;
    g.time_nodes()?;
    g.times()?;
    Ok(g.summary)
}

/// splitmix64 (Steele, Lea, Flood 2014): small, seedable, good enough for test data.
#[derive(Clone, Debug)]
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform-enough value in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = vec![0u8; n];
        self.fill(&mut v);
        v
    }
}

struct Gen {
    rng: SplitMix64,
    root: PathBuf,
    summary: GenSummary,
    is_root: bool,
}

fn os(bytes: &[u8]) -> OsString {
    OsString::from_vec(bytes.to_vec())
}

impl Gen {
    fn p(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.root.join(rel)
    }

    fn dir(&self, rel: impl AsRef<Path>) -> io::Result<PathBuf> {
        let p = self.p(rel);
        fs::create_dir_all(&p)?;
        Ok(p)
    }

    fn write(&mut self, rel: impl AsRef<Path>, data: &[u8]) -> io::Result<PathBuf> {
        let p = self.p(rel);
        fs::write(&p, data)?;
        self.summary.files += 1;
        self.summary.file_bytes += data.len() as u64;
        Ok(p)
    }

    fn random_file(&mut self, rel: impl AsRef<Path>, len: usize) -> io::Result<PathBuf> {
        let data = self.rng.bytes(len);
        self.write(rel, &data)
    }

    fn files(&mut self) -> io::Result<()> {
        self.dir("files")?;
        self.write("files/empty", b"")?;
        self.write("files/hello.txt", b"hello restic\n")?;
        self.random_file("files/one-byte", 1)?;
        let text: Vec<u8> = (0..6000)
            .flat_map(|i| format!("line {i:06} of a very compressible file\n").into_bytes())
            .collect();
        self.write("files/compressible.txt", &text)?;

        // Data, a hole in the middle, data again.
        let path = self.p("files/sparse.img");
        let head = self.rng.bytes(64 * 1024);
        let tail = self.rng.bytes(64 * 1024);
        let total: u64 = 8 * 1024 * 1024;
        let mut f = File::create(&path)?;
        f.write_all(&head)?;
        f.set_len(total)?;
        f.seek(SeekFrom::Start(total - tail.len() as u64))?;
        f.write_all(&tail)?;
        f.sync_all()?;
        self.summary.files += 1;
        self.summary.file_bytes += total;
        Ok(())
    }

    fn small_files(&mut self, n: usize) -> io::Result<()> {
        let dirs = ["small", "small/a", "small/a/b", "small/a/b/c", "small/d"];
        for d in dirs {
            self.dir(d)?;
        }
        for i in 0..n {
            let d = dirs[(self.rng.below(dirs.len() as u64)) as usize];
            let len = self.rng.below(8 * 1024 + 1) as usize;
            self.random_file(format!("{d}/small-{i:04}.bin"), len)?;
        }
        self.dir("empty-dir")?;
        Ok(())
    }

    fn large_file(&mut self, len: u64) -> io::Result<()> {
        let mut f = File::create(self.p("large.bin"))?;
        let mut buf = vec![0u8; 1024 * 1024];
        let mut left = len;
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            self.rng.fill(&mut buf[..n]);
            f.write_all(&buf[..n])?;
            left -= n as u64;
        }
        self.summary.files += 1;
        self.summary.file_bytes += len;
        Ok(())
    }

    fn modes(&mut self) -> io::Result<()> {
        self.dir("modes")?;
        for (name, mode) in [
            ("file-0600", 0o600),
            ("file-0755", 0o755),
            ("file-0444", 0o444),
            ("file-0000", 0o000),
            ("setuid-4755", 0o4755),
            ("setgid-2755", 0o2755),
        ] {
            // Without root nobody could read it back.
            if mode == 0 && !self.is_root {
                continue;
            }
            let p = self.random_file(format!("modes/{name}"), 100)?;
            fs::set_permissions(&p, fs::Permissions::from_mode(mode))?;
        }
        for (name, mode) in [
            ("setgid-dir-2775", 0o2775),
            ("sticky-dir-1777", 0o1777),
            ("dir-0700", 0o700),
            ("dir-0555", 0o555),
        ] {
            let d = self.dir(format!("modes/{name}"))?;
            if mode & 0o200 != 0 {
                self.random_file(format!("modes/{name}/inside"), 10)?;
            }
            fs::set_permissions(&d, fs::Permissions::from_mode(mode))?;
        }
        Ok(())
    }

    fn symlinks(&mut self) -> io::Result<()> {
        let d = self.dir("links")?;
        symlink("../files/hello.txt", d.join("relative"))?;
        symlink("/nonexistent/mover/absolute-target", d.join("absolute"))?;
        symlink("missing/target", d.join("dangling"))?;
        symlink("../small", d.join("to-dir"))?;
        symlink(os(b"bad\xff\xfetarget"), d.join("non-utf8-target"))?;
        symlink("relative", d.join("chain"))?;
        Ok(())
    }

    fn hardlinks(&mut self) -> io::Result<()> {
        let d = self.dir("hardlinks")?;
        self.dir("hardlinks/sub")?;
        self.random_file("hardlinks/pair-a", 3000)?;
        fs::hard_link(d.join("pair-a"), d.join("pair-b"))?;
        self.random_file("hardlinks/triple-1", 5000)?;
        fs::hard_link(d.join("triple-1"), d.join("triple-2"))?;
        fs::hard_link(d.join("triple-1"), d.join("sub/triple-3"))?;
        self.summary.files += 3;
        Ok(())
    }

    fn special(&mut self, with_devices: bool) -> io::Result<()> {
        let d = self.dir("special")?;
        nix::unistd::mkfifo(&d.join("fifo"), Mode::from_bits_truncate(0o640))?;
        self.summary.socket = make_socket(&d.join("socket"))?;
        if with_devices && self.is_root {
            let made = mknod(
                &d.join("chardev"),
                SFlag::S_IFCHR,
                Mode::from_bits_truncate(0o666),
                makedev(1, 3),
            )
            .and_then(|()| {
                mknod(
                    &d.join("blockdev"),
                    SFlag::S_IFBLK,
                    Mode::from_bits_truncate(0o660),
                    makedev(7, 200),
                )
            });
            match made {
                Ok(()) => self.summary.devices = true,
                // A container without CAP_MKNOD: leave the devices out.
                Err(nix::errno::Errno::EPERM) => {
                    let _ = fs::remove_file(d.join("chardev"));
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    fn names(&mut self) -> io::Result<()> {
        let d = self.dir("names")?;
        let names: &[&[u8]] = &[
            b"bad\xff\xfename",
            b"\xc3",
            b"new\nline",
            b"tab\tx",
            b"cr\rx",
            b"\x01ctl",
            b"bell\x07",
            b"del\x7f",
            b"back\\slash",
            b"a\"quote",
            b"sq'x",
            b"lt<gt>amp&",
            b"with spaces in it",
            b" leading space",
            b"trailing space ",
            b"-dash",
            b"caf\xc3\xa9",
            b"e\xcc\x81 combining",
            b"nbsp\xc2\xa0x",
            b"ls\xe2\x80\xa8x",
            b"bom\xef\xbb\xbfx",
            b"zw\xe2\x80\x8bsp",
            b"ctl80\xc2\x85",
            b"\xe2\x9c\x93 check \xf0\x9f\x98\x80",
            b"\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e",
            b"\xef\xbc\xa1 fullwidth",
        ];
        for (i, name) in names.iter().enumerate() {
            let len = 10 + i;
            let data = self.rng.bytes(len);
            fs::write(d.join(OsStr::from_bytes(name)), &data)?;
            self.summary.files += 1;
            self.summary.file_bytes += len as u64;
        }
        let sub = d.join(OsStr::from_bytes(b"dir \xff with <odd> name\n"));
        fs::create_dir(&sub)?;
        fs::write(sub.join("inside.txt"), b"inside an odd directory\n")?;
        symlink(
            OsStr::from_bytes(b"caf\xc3\xa9"),
            d.join("link to caf\u{e9}"),
        )?;
        self.summary.files += 1;
        self.summary.file_bytes += 24;
        Ok(())
    }

    fn owners(&mut self) -> io::Result<()> {
        let d = self.dir("owner")?;
        let f = self.random_file("owner/file", 200)?;
        symlink("file", d.join("link"))?;
        let sub = self.dir("owner/dir")?;
        if self.is_root {
            for p in [&f, &d.join("link"), &sub] {
                lchown(p, Some(FOREIGN_UID), Some(FOREIGN_GID))?;
            }
            // Only the group: uid stays 0.
            let g = self.random_file("owner/group-only", 20)?;
            lchown(&g, None, Some(FOREIGN_GID))?;
            self.summary.foreign_owner = true;
        }
        Ok(())
    }

    fn xattrs(&mut self) -> io::Result<()> {
        self.dir("xattrs")?;
        let f = self.random_file("xattrs/file", 300)?;
        let d = self.dir("xattrs/dir")?;
        match xattr::set(&f, "user.mover", b"\x00\x01bin\xff\xfe") {
            Ok(()) => {}
            Err(e) if is_enotsup(&e) => return Ok(()),
            Err(e) => return Err(e),
        }
        xattr::set(&f, "user.mover.empty", b"")?;
        xattr::set(&d, "user.mover", b"directory attribute")?;
        self.summary.xattrs = true;
        Ok(())
    }

    /// Sets an mtime (and the same atime) with nanoseconds on every node, directories last and
    /// deepest first so writing the children does not move a parent's time again.
    fn times(&mut self) -> io::Result<()> {
        let mut nodes = Vec::new();
        let mut dirs = Vec::new();
        collect(&self.root, 0, &mut nodes, &mut dirs)?;
        nodes.sort();
        let base: i64 = 1_600_000_000;
        for p in &nodes {
            let secs = base + self.rng.below(200_000_000) as i64;
            let nanos = self.rng.below(1_000_000_000) as i64;
            set_time(p, secs, nanos)?;
        }
        set_time(
            &self.p("times/pre-1970"),
            PRE_EPOCH_SECS + 12_345,
            987_654_321,
        )?;
        set_time(&self.p("times/year-2200"), FAR_FUTURE_SECS + 1, 1)?;
        set_time(&self.p("times/epoch"), 0, 0)?;
        set_time(&self.p("times/old-link"), PRE_EPOCH_SECS, 5)?;
        dirs.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        let old_dir = self.p("times/old-dir");
        for (_, d) in &dirs {
            if *d == old_dir {
                set_time(d, PRE_EPOCH_SECS + 1, 999_999_999)?;
                continue;
            }
            let secs = base + self.rng.below(200_000_000) as i64;
            let nanos = self.rng.below(1_000_000_000) as i64;
            set_time(d, secs, nanos)?;
        }
        Ok(())
    }

    fn time_nodes(&mut self) -> io::Result<()> {
        self.dir("times/old-dir")?;
        self.random_file("times/pre-1970", 70)?;
        self.random_file("times/year-2200", 22)?;
        self.random_file("times/epoch", 1)?;
        symlink("pre-1970", self.p("times/old-link"))?;
        Ok(())
    }
}

fn is_enotsup(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOTSUP))
}

/// Makes a unix socket node at `path`. sun_path holds at most 107 bytes, so a long path is
/// bound under the temp dir first and renamed into place.
fn make_socket(path: &Path) -> io::Result<bool> {
    if path.as_os_str().len() < 100 {
        drop(UnixListener::bind(path)?);
        return Ok(true);
    }
    let short = std::env::temp_dir().join(format!(
        "mover-sock-{}-{}",
        std::process::id(),
        SOCKET_COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    drop(UnixListener::bind(&short)?);
    match fs::rename(&short, path) {
        Ok(()) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
            let _ = fs::remove_file(&short);
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

static SOCKET_COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Collects non-directories into `nodes` and directories with their depth into `dirs`.
fn collect(
    dir: &Path,
    depth: usize,
    nodes: &mut Vec<PathBuf>,
    dirs: &mut Vec<(usize, PathBuf)>,
) -> io::Result<()> {
    dirs.push((depth, dir.to_path_buf()));
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            collect(&path, depth + 1, nodes, dirs)?;
        } else {
            nodes.push(path);
        }
    }
    Ok(())
}

/// Sets atime and mtime of `path` itself (a symlink is not followed).
pub fn set_time(path: &Path, secs: i64, nanos: i64) -> io::Result<()> {
    let t = TimeSpec::new(secs, nanos);
    utimensat(
        nix::fcntl::AT_FDCWD,
        path,
        &t,
        &t,
        UtimensatFlags::NoFollowSymlink,
    )
    .map_err(|e| {
        io::Error::new(
            io::Error::from(e).kind(),
            format!("{}: {e}", path.display()),
        )
    })
}
