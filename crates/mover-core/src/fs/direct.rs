//! Direct I/O (`O_DIRECT`): file data moves between the disk and mover's own reused buffers
//! without passing through the page cache.
//!
//! A backup reads each byte of a volume once and a restore writes each byte once; sending
//! that through the page cache costs a kernel copy plus a freshly allocated cache page per
//! 4 KiB, fills the node's memory (charged to the mover pod's cgroup) with data nobody reads
//! again, and evicts the caches of the workloads beside it. Direct transfers need their
//! buffer address, file offset and length aligned to [`align`]; where a filesystem refuses
//! `O_DIRECT` (`EINVAL`, as tmpfs before Linux 6.6 and some FUSE filesystems do) the same
//! handle falls back to ordinary buffered I/O, so callers never see the difference.

use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::fd::AsFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

use nix::fcntl::{FcntlArg, OFlag, fcntl};

/// Alignment of direct transfers: the page size, at least 4096. Partial pages are always
/// written through the page cache and whole pages directly, so a cached page never overlaps
/// a direct write (the kernel does not keep the two coherent within one page).
pub fn align() -> usize {
    static ALIGN: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *ALIGN.get_or_init(|| {
        let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
            .ok()
            .flatten()
            .and_then(|p| usize::try_from(p).ok())
            .unwrap_or(4096);
        page.max(4096).next_power_of_two()
    })
}

pub fn align_up(n: usize) -> usize {
    n.div_ceil(align()) * align()
}

pub fn align_down(n: usize) -> usize {
    n / align() * align()
}

fn align_up_u64(n: u64) -> u64 {
    let a = align() as u64;
    n.div_ceil(a) * a
}

fn align_down_u64(n: u64) -> u64 {
    let a = align() as u64;
    n / a * a
}

/// A zeroed byte buffer whose usable part starts at an [`align`]ed address and whose length
/// is a multiple of it. The aligned start is found inside an ordinary `Vec` with
/// `align_offset`, so no custom allocation is needed.
pub struct AlignedBuf {
    raw: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedBuf {
    /// At least `len` bytes (rounded up to the alignment).
    pub fn new(len: usize) -> AlignedBuf {
        let len = align_up(len.max(1));
        let raw = vec![0u8; len + align()];
        let offset = raw.as_ptr().align_offset(align());
        // `align_offset` may in principle give up (usize::MAX); the buffer then still works
        // but is never used for a direct transfer.
        let start = if offset < align() { offset } else { 0 };
        AlignedBuf { raw, start, len }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// True if direct transfers may use this buffer.
    pub fn is_aligned(&self) -> bool {
        self.as_slice().as_ptr().align_offset(align()) == 0
    }

    pub fn as_slice(&self) -> &[u8] {
        &self.raw[self.start..self.start + self.len]
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.raw[self.start..self.start + self.len]
    }
}

fn is_einval(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::EINVAL)
}

/// Clears `O_DIRECT` on an open file, turning it into an ordinary buffered handle.
fn clear_direct(file: &File) -> io::Result<()> {
    let flags = fcntl(file.as_fd(), FcntlArg::F_GETFL).map_err(io::Error::from)?;
    let flags = OFlag::from_bits_truncate(flags) & !OFlag::O_DIRECT;
    fcntl(file.as_fd(), FcntlArg::F_SETFL(flags)).map_err(io::Error::from)?;
    Ok(())
}

/// Opens with `flags` added to `opts`, dropping `O_DIRECT` if the filesystem refuses it and
/// `O_NOATIME` if we may not use it (a file we do not own, without CAP_FOWNER).
fn open_with(
    path: &Path,
    opts: &std::fs::OpenOptions,
    direct: bool,
    noatime: bool,
) -> io::Result<(File, bool)> {
    let mut direct = direct;
    let mut noatime = noatime;
    loop {
        let mut flags = 0;
        if direct {
            flags |= libc::O_DIRECT;
        }
        if noatime {
            flags |= libc::O_NOATIME;
        }
        let mut o = opts.clone();
        o.custom_flags(flags);
        match o.open(path) {
            Ok(f) => return Ok((f, direct)),
            Err(e) if direct && is_einval(&e) => direct = false,
            Err(e) if noatime && e.raw_os_error() == Some(libc::EPERM) => noatime = false,
            Err(e) => return Err(e),
        }
    }
}

/// A file read from front to back for a backup, bypassing the page cache where it can.
pub struct SourceFile {
    file: File,
    direct: bool,
    offset: u64,
    /// The size at open time: direct requests are cut to it (plus one block to see the end),
    /// since the kernel pins the whole user buffer of a direct request.
    expected: u64,
}

impl SourceFile {
    /// Opens `path` for reading without touching its access time.
    pub fn open(path: &Path, direct: bool) -> io::Result<SourceFile> {
        let mut opts = std::fs::OpenOptions::new();
        opts.read(true);
        let (file, direct) = open_with(path, &opts, direct, true)?;
        let expected = file.metadata()?.len();
        Ok(SourceFile {
            file,
            direct,
            offset: 0,
            expected,
        })
    }

    /// Whether reads bypass the page cache.
    pub fn is_direct(&self) -> bool {
        self.direct
    }

    /// The file's size when it was opened.
    pub fn expected_len(&self) -> u64 {
        self.expected
    }

    /// Bytes read so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Fills `dst` from the current offset; returns the bytes read and whether the end of
    /// the file was reached. For a direct handle `dst` must start at an aligned address and
    /// have an aligned length (a [`ReadWindow`] sees to it); otherwise the handle falls back
    /// to buffered reads.
    pub fn fill(&mut self, dst: &mut [u8]) -> io::Result<(usize, bool)> {
        if self.direct && (dst.as_ptr().align_offset(align()) != 0 || dst.len() % align() != 0) {
            self.switch_to_buffered()?;
        }
        let mut done = 0;
        while done < dst.len() {
            let mut want = dst.len() - done;
            if self.direct {
                let remaining = self.expected.saturating_sub(self.offset);
                let hint = align_up_u64(remaining.saturating_add(1));
                want = want.min(usize::try_from(hint).unwrap_or(usize::MAX));
            }
            match self.file.read_at(&mut dst[done..done + want], self.offset) {
                Ok(0) => return Ok((done, true)),
                Ok(n) => {
                    done += n;
                    self.offset += n as u64;
                    // A direct read comes back short only at the end of the file; reading on
                    // from an unaligned offset would be refused.
                    if self.direct && n % align() != 0 {
                        return Ok((done, true));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if self.direct && is_einval(&e) => self.switch_to_buffered()?,
                Err(e) => return Err(e),
            }
        }
        Ok((done, false))
    }

    fn switch_to_buffered(&mut self) -> io::Result<()> {
        clear_direct(&self.file)?;
        self.direct = false;
        Ok(())
    }
}

/// A window over a file being read: the unconsumed tail of the previous fill stays in front
/// of the next one, placed so that new data always lands at an aligned address.
pub struct ReadWindow {
    buf: AlignedBuf,
    start: usize,
    end: usize,
}

impl ReadWindow {
    /// A window holding at least `capacity` bytes.
    pub fn new(capacity: usize) -> ReadWindow {
        ReadWindow {
            buf: AlignedBuf::new(capacity + align()),
            start: 0,
            end: 0,
        }
    }

    pub fn capacity(&self) -> usize {
        self.buf.len()
    }

    /// Unconsumed bytes.
    pub fn data(&self) -> &[u8] {
        &self.buf.as_slice()[self.start..self.end]
    }

    /// Drops the first `n` unconsumed bytes.
    pub fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.end);
    }

    /// Forgets everything (a new file).
    pub fn clear(&mut self) {
        self.start = 0;
        self.end = 0;
    }

    /// Moves the unconsumed bytes to end at an aligned offset and reads up to `want` more
    /// bytes (rounded down to the alignment, at least one block) after them. Returns the
    /// bytes read and whether the file ended.
    pub fn fill(&mut self, file: &mut SourceFile, want: usize) -> io::Result<(usize, bool)> {
        let kept = self.end - self.start;
        let new_start = align_up(kept) - kept;
        self.buf
            .as_mut_slice()
            .copy_within(self.start..self.end, new_start);
        self.start = new_start;
        self.end = new_start + kept;
        self.read_more(file, want)
    }

    /// Reads up to `want` bytes (rounded down to the alignment, at least one block) after
    /// the unconsumed data, whose end must be aligned.
    fn read_more(&mut self, file: &mut SourceFile, want: usize) -> io::Result<(usize, bool)> {
        let room = self.buf.len() - self.end;
        let want = align_down(want.min(room)).max(align()).min(room);
        let (n, eof) = file.fill(&mut self.buf.as_mut_slice()[self.end..self.end + want])?;
        self.end += n;
        Ok((n, eof))
    }
}

impl ReadWindow {
    /// Forgets the window's contents and reads up to `want` bytes after `reserve` free bytes
    /// (rounded up to the alignment), which [`ReadWindow::prepend`] can fill later.
    pub fn fill_after(
        &mut self,
        file: &mut SourceFile,
        reserve: usize,
        want: usize,
    ) -> io::Result<(usize, bool)> {
        let at = align_up(reserve).min(self.buf.len());
        self.start = at;
        self.end = at;
        self.read_more(file, want)
    }

    /// Puts `bytes` in front of the unconsumed data.
    pub fn prepend(&mut self, bytes: &[u8]) -> io::Result<()> {
        if bytes.len() > self.start {
            return Err(io::Error::other(format!(
                "{} carried-over bytes do not fit the {} reserved",
                bytes.len(),
                self.start
            )));
        }
        let at = self.start - bytes.len();
        self.buf.as_mut_slice()[at..self.start].copy_from_slice(bytes);
        self.start = at;
        Ok(())
    }
}

/// A file being restored: whole aligned pages go straight to the disk, the partial pages at
/// the edges of each write through the page cache. One handle serves both: its `O_DIRECT`
/// flag is switched with `fcntl` as needed, which costs far less than opening the file a
/// second time by path.
pub struct TargetFile {
    file: File,
    mode: Mode,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Buffered now; whole pages may go direct.
    Buffered,
    /// `O_DIRECT` is set.
    Direct,
    /// Buffered for good: direct writes were not asked for or the filesystem refused them.
    Off,
}

impl TargetFile {
    /// Opens an existing file for writing.
    pub fn open(path: &Path, direct: bool) -> io::Result<TargetFile> {
        let file = std::fs::OpenOptions::new().write(true).open(path)?;
        Ok(TargetFile::with_file(file, direct))
    }

    /// Creates the file (empty, permission bits `mode` less the umask) unless it exists, and
    /// opens it for writing. Only for files that nothing but this restore can have made: an
    /// existing file is opened as it is, not emptied. The writes give it its length, as
    /// every byte of a restored file is written, so no separate truncate call is spent on it.
    pub fn create_or_open(path: &Path, direct: bool, mode: u32) -> io::Result<TargetFile> {
        let created = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(path);
        let file = match created {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                std::fs::OpenOptions::new().write(true).open(path)?
            }
            Err(e) => return Err(e),
        };
        Ok(TargetFile::with_file(file, direct))
    }

    fn with_file(file: File, direct: bool) -> TargetFile {
        let mode = if direct { Mode::Buffered } else { Mode::Off };
        TargetFile { file, mode }
    }

    /// Whether whole pages go (or may go) straight to the disk.
    pub fn is_direct(&self) -> bool {
        self.mode != Mode::Off
    }

    /// The handle, for calls that do not write data (owner, mode, times).
    pub fn file(&self) -> &File {
        &self.file
    }

    /// The handle in buffered mode, for writes at any offset and length.
    pub fn buffered(&mut self) -> io::Result<&File> {
        if self.mode == Mode::Direct {
            set_direct(&self.file, false)?;
            self.mode = Mode::Buffered;
        }
        Ok(&self.file)
    }

    /// Switches the handle to `O_DIRECT`; false (and buffered for good) if the filesystem
    /// refuses.
    fn direct(&mut self) -> bool {
        if self.mode == Mode::Buffered {
            self.mode = match set_direct(&self.file, true) {
                Ok(()) => Mode::Direct,
                Err(_) => Mode::Off,
            };
        }
        self.mode == Mode::Direct
    }

    /// Writes `data` at `offset`; whole pages are copied through `staging` (aligned) and
    /// written directly, after the partial pages at the edges.
    pub fn write_at(
        &mut self,
        data: &[u8],
        offset: u64,
        staging: &mut AlignedBuf,
    ) -> io::Result<()> {
        let end = offset + data.len() as u64;
        let first = align_up_u64(offset);
        let last = align_down_u64(end);
        if self.mode == Mode::Off || last <= first || !staging.is_aligned() || staging.is_empty() {
            return self.buffered()?.write_all_at(data, offset);
        }
        let rel = |pos: u64| (pos - offset) as usize;
        if first > offset {
            self.buffered()?.write_all_at(&data[..rel(first)], offset)?;
        }
        if end > last {
            self.buffered()?.write_all_at(&data[rel(last)..], last)?;
        }
        let mut pos = first;
        while pos < last {
            let n = ((last - pos) as usize).min(staging.len());
            let chunk = &mut staging.as_mut_slice()[..n];
            chunk.copy_from_slice(&data[rel(pos)..rel(pos) + n]);
            self.write_pages(chunk, pos)?;
            pos += n as u64;
        }
        Ok(())
    }

    /// Writes `window[range]` at `window_offset + range.start`, where `window` is aligned
    /// and `window_offset` is a multiple of the alignment: the whole pages go straight from
    /// `window` to the disk in one write, without a copy, and the partial pages at the edges
    /// through the page cache.
    pub fn write_window(
        &mut self,
        window: &AlignedBuf,
        window_offset: u64,
        range: Range<usize>,
    ) -> io::Result<()> {
        let bytes = window.as_slice().get(range.clone()).ok_or_else(|| {
            io::Error::other(format!(
                "range {range:?} is outside the {}-byte window",
                window.len()
            ))
        })?;
        let offset = window_offset + range.start as u64;
        let end = offset + bytes.len() as u64;
        let first = align_up_u64(offset).min(end);
        let last = align_down_u64(end).max(first);
        let aligned = window.is_aligned() && window_offset % align() as u64 == 0;
        if self.mode == Mode::Off || last == first || !aligned {
            return self.buffered()?.write_all_at(bytes, offset);
        }
        let at = |pos: u64| (pos - window_offset) as usize;
        let slice = window.as_slice();
        if first > offset {
            self.buffered()?
                .write_all_at(&slice[range.start..at(first)], offset)?;
        }
        if end > last {
            self.buffered()?
                .write_all_at(&slice[at(last)..range.end], last)?;
        }
        self.write_pages(&slice[at(first)..at(last)], first)
    }

    /// Writes whole aligned pages at the aligned `pos`: directly unless the filesystem
    /// refuses, in which case this file goes on buffered.
    fn write_pages(&mut self, pages: &[u8], pos: u64) -> io::Result<()> {
        if !self.direct() {
            return self.file.write_all_at(pages, pos);
        }
        match self.file.write_all_at(pages, pos) {
            Ok(()) => Ok(()),
            Err(e) if is_einval(&e) => {
                // The filesystem took the flag but not the transfer: go on buffered.
                self.buffered()?;
                self.mode = Mode::Off;
                self.file.write_all_at(pages, pos)
            }
            Err(e) => Err(e),
        }
    }
}

/// Sets or clears `O_DIRECT` on an open file.
fn set_direct(file: &File, on: bool) -> io::Result<()> {
    if !on {
        return clear_direct(file);
    }
    let flags = fcntl(file.as_fd(), FcntlArg::F_GETFL).map_err(io::Error::from)?;
    let flags = OFlag::from_bits_truncate(flags) | OFlag::O_DIRECT;
    fcntl(file.as_fd(), FcntlArg::F_SETFL(flags)).map_err(io::Error::from)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::io::Write;

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    #[test]
    fn aligned_buf_is_aligned_and_rounded() {
        let b = AlignedBuf::new(10);
        assert!(b.is_aligned());
        assert_eq!(b.len(), align());
        assert!(b.as_slice().iter().all(|&x| x == 0));
    }

    /// A temporary file of the length `cuts` add up to, open as a target, and the pattern
    /// that is to end up in it.
    fn sized_target(
        cuts: &[usize],
        seed: u8,
    ) -> (tempfile::TempDir, std::path::PathBuf, Vec<u8>, TargetFile) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let data = pattern(cuts.iter().sum(), seed);
        std::fs::File::create(&path)
            .unwrap()
            .set_len(data.len() as u64)
            .unwrap();
        let t = TargetFile::open(&path, true).unwrap();
        (dir, path, data, t)
    }

    fn read_all(path: &Path, capacity: usize, consume: usize) -> io::Result<Vec<u8>> {
        let mut f = SourceFile::open(path, true)?;
        let mut w = ReadWindow::new(capacity);
        let mut out = Vec::new();
        loop {
            let (_, eof) = w.fill(&mut f, capacity)?;
            let take = if eof {
                w.data().len()
            } else {
                consume.min(w.data().len())
            };
            out.extend_from_slice(&w.data()[..take]);
            w.consume(take);
            if eof {
                break;
            }
        }
        Ok(out)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        /// Whatever the file size and however much of each window is consumed, the window
        /// hands out the file's bytes in order, exactly once.
        #[test]
        fn window_reads_every_byte_once(len in 0usize..70_000, consume in 1usize..20_000) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("f");
            let data = pattern(len, 7);
            std::fs::File::create(&path).unwrap().write_all(&data).unwrap();
            let got = read_all(&path, 3 * 4096, consume).unwrap();
            prop_assert_eq!(got, data);
        }

        /// Writes at any offsets and lengths, in any order, produce the same file as plain
        /// writes: edges through the page cache, whole pages directly.
        #[test]
        fn target_writes_land_where_asked(cuts in proptest::collection::vec(1usize..20_000, 1..8), seed: u8) {
            let (_dir, path, data, mut t) = sized_target(&cuts, seed);
            let mut staging = AlignedBuf::new(8192);
            let mut pieces = Vec::new();
            let mut pos = 0;
            for c in cuts {
                pieces.push((pos, c));
                pos += c;
            }
            pieces.reverse();
            for (pos, c) in pieces {
                t.write_at(&data[pos..pos + c], pos as u64, &mut staging).unwrap();
            }
            drop(t);
            prop_assert_eq!(std::fs::read(&path).unwrap(), data);
        }

        /// Writes from windows that mirror the file's alignment, cut anywhere, produce the
        /// same file as plain writes.
        #[test]
        fn window_writes_land_where_asked(cuts in proptest::collection::vec(1usize..20_000, 1..8), seed: u8) {
            let (_dir, path, data, mut t) = sized_target(&cuts, seed);
            let mut pos = 0;
            for c in cuts {
                let base = align_down(pos);
                let mut window = AlignedBuf::new(pos + c - base);
                window.as_mut_slice()[pos - base..pos - base + c].copy_from_slice(&data[pos..pos + c]);
                t.write_window(&window, base as u64, pos - base..pos - base + c).unwrap();
                pos += c;
            }
            drop(t);
            prop_assert_eq!(std::fs::read(&path).unwrap(), data);
        }
    }

    #[test]
    fn window_outside_its_buffer_is_an_error_not_a_panic() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("f");
        std::fs::File::create(&path)?;
        let mut t = TargetFile::open(&path, true)?;
        let window = AlignedBuf::new(4096);
        assert!(t.write_window(&window, 0, 4000..9000).is_err());
        Ok(())
    }

    #[test]
    fn create_or_open_creates_once_and_never_empties() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("f");
        let data = pattern(3 * 4096 + 5, 9);
        let mut staging = AlignedBuf::new(8192);
        let mut first = TargetFile::create_or_open(&path, true, 0o640)?;
        assert_eq!(std::fs::metadata(&path)?.len(), 0);
        first.write_at(&data[4100..], 4100, &mut staging)?;
        assert_eq!(std::fs::metadata(&path)?.len(), data.len() as u64);
        // A later range of the same file opens it as it is, mode included.
        let mut second = TargetFile::create_or_open(&path, true, 0o777)?;
        second.write_at(&data[..4100], 0, &mut staging)?;
        drop((first, second));
        assert_eq!(std::fs::read(&path)?, data);
        use std::os::unix::fs::PermissionsExt;
        // Created with the mode asked for, less whatever the umask takes from group and
        // others.
        let mode = std::fs::metadata(&path)?.permissions().mode() & 0o777;
        assert_eq!(mode & !0o640, 0, "mode {mode:o}");
        assert_eq!(mode & 0o600, 0o600, "mode {mode:o}");
        Ok(())
    }

    #[test]
    fn buffered_fallback_reads_and_writes_the_same() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("f");
        let data = pattern(50_000, 3);
        std::fs::write(&path, &data)?;
        let mut f = SourceFile::open(&path, false)?;
        assert!(!f.is_direct());
        let mut buf = vec![0u8; 60_000];
        let (n, eof) = f.fill(&mut buf)?;
        assert_eq!((n, eof), (50_000, true));
        assert_eq!(&buf[..n], &data[..]);
        let mut t = TargetFile::open(&path, false)?;
        assert!(!t.is_direct());
        t.write_at(b"xyz", 10, &mut AlignedBuf::new(4096))?;
        assert_eq!(&std::fs::read(&path)?[10..13], b"xyz");
        Ok(())
    }

    #[test]
    fn unaligned_destination_falls_back_switch_to_buffered() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("f");
        let data = pattern(9000, 1);
        std::fs::write(&path, &data)?;
        let mut f = SourceFile::open(&path, true)?;
        let mut buf = AlignedBuf::new(16384);
        let (n, _) = f.fill(&mut buf.as_mut_slice()[1..9001])?;
        assert_eq!(n, 9000);
        assert_eq!(&buf.as_slice()[1..9001], &data[..]);
        assert!(!f.is_direct());
        Ok(())
    }
}
