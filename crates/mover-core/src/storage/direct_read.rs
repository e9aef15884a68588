//! Range reads of local pack files with O_DIRECT: a restore reads every needed pack byte
//! once, so the page cache would only add a copy and fill memory with data nobody reads
//! again. Any failure here makes the caller fall back to the object store's own read.

use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::sync::Mutex;

/// Offsets, lengths and buffer addresses of direct reads are multiples of this.
pub(super) const ALIGN: u64 = 4096;
/// Read buffers kept for reuse once their data is dropped.
const POOLED_BUFFERS: usize = 8;
/// Reads smaller than this (tree blobs, headers) use an exact buffer of their own.
const MIN_POOLED_READ: usize = 256 << 10;
/// New pooled buffers are at least this large (a restore's merged range read of 2 MiB plus
/// alignment), so that one buffer serves any later ordinary read. Pages a read never
/// touches are never made resident.
const MIN_BUFFER_BYTES: usize = (2 << 20) + (16 << 10);
/// Buffers larger than this (a range read of one huge blob) are freed, not kept.
const MAX_POOLED_BYTES: usize = 16 << 20;

/// Freed read buffers, also lent to direct pack writes (`direct_write`). A restore reads
/// thousands of ranges of a few MiB each; allocating a fresh buffer for each one costs fresh
/// pages and, with glibc, lets the heap grow far past the few buffers that are ever in flight.
static POOL: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

fn take_buffer(len: usize) -> Vec<u8> {
    if len < MIN_POOLED_READ {
        return vec![0u8; len];
    }
    let reused = POOL.lock().ok().and_then(|mut pool| {
        let i = (0..pool.len())
            .filter(|&i| pool[i].len() >= len)
            .min_by_key(|&i| pool[i].len())?;
        Some(pool.swap_remove(i))
    });
    reused.unwrap_or_else(|| vec![0u8; len.max(MIN_BUFFER_BYTES)])
}

/// A pooled buffer with room for `len` bytes at an [`ALIGN`]ed address, and the offset of
/// that address in it; `None` (the buffer already given back) if no aligned room was found.
pub(super) fn take_aligned(len: usize) -> Option<(Vec<u8>, usize)> {
    let align = ALIGN as usize;
    let raw = take_buffer(len + align);
    let offset = raw.as_ptr().align_offset(align);
    if offset >= align || offset + len > raw.len() {
        give_back(raw);
        return None;
    }
    Some((raw, offset))
}

pub(super) fn give_back(buf: Vec<u8>) {
    if buf.len() < MIN_POOLED_READ || buf.len() > MAX_POOLED_BYTES {
        return;
    }
    if let Ok(mut pool) = POOL.lock() {
        if pool.len() < POOLED_BUFFERS {
            pool.push(buf);
        }
    }
}

/// The bytes of one read, inside a pooled buffer that goes back to the pool on drop. The
/// bytes are the holder's to change: a restore opens blobs where they were read.
pub struct PooledRange {
    buf: Vec<u8>,
    range: Range<usize>,
}

impl AsRef<[u8]> for PooledRange {
    fn as_ref(&self) -> &[u8] {
        &self.buf[self.range.clone()]
    }
}

impl std::ops::Deref for PooledRange {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.buf[self.range.clone()]
    }
}

impl std::ops::DerefMut for PooledRange {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.buf[self.range.clone()]
    }
}

impl Drop for PooledRange {
    fn drop(&mut self) {
        give_back(std::mem::take(&mut self.buf));
    }
}

/// Reads `range` of `path`, bypassing the page cache. `Ok(None)` when the filesystem does
/// not take direct reads or the file ends early (the caller then reads the ordinary way
/// and reports a short read itself).
pub fn read_range(path: &Path, range: Range<u64>) -> io::Result<Option<PooledRange>> {
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => return Ok(None),
        Err(e) => return Err(e),
    };
    let start = range.start / ALIGN * ALIGN;
    let end = range.end.div_ceil(ALIGN) * ALIGN;
    let len = usize::try_from(end - start).map_err(io::Error::other)?;
    let Some((mut raw, offset)) = take_aligned(len) else {
        return Ok(None);
    };
    let got = match fill(&file, &mut raw[offset..offset + len], start) {
        Ok(n) => n,
        Err(e) => {
            give_back(raw);
            return match e.raw_os_error() {
                Some(libc::EINVAL) => Ok(None),
                _ => Err(e),
            };
        }
    };
    let from = offset + (range.start - start) as usize;
    let to = offset + (range.end - start) as usize;
    if offset + got < to {
        give_back(raw);
        return Ok(None);
    }
    Ok(Some(PooledRange {
        buf: raw,
        range: from..to,
    }))
}

/// Reads until `buf` is full or the file ends; returns the bytes read.
fn fill(file: &File, buf: &mut [u8], at: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], at + done as u64) {
            Ok(0) => break,
            Ok(n) => {
                done += n;
                if n as u64 % ALIGN != 0 {
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_any_range_exactly() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("p");
        let data: Vec<u8> = (0..20_000u32).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(&path, &data)?;
        for (a, b) in [
            (0, 1),
            (1, 4097),
            (4095, 4097),
            (8192, 20_000),
            (123, 19_999),
        ] {
            let got = read_range(&path, a..b)?.expect("direct read");
            assert_eq!(&got[..], &data[a as usize..b as usize], "range {a}..{b}");
            // Held and dropped reads alike leave later reads of reused buffers exact, also
            // when a holder wrote over its bytes.
            let mut held = read_range(&path, b / 2..b)?.expect("direct read");
            held.fill(0xee);
            drop(held);
            let held = read_range(&path, b / 2..b)?.expect("direct read");
            drop(got);
            assert_eq!(&held[..], &data[(b / 2) as usize..b as usize]);
        }
        assert!(read_range(&path, 10..20_001)?.is_none(), "past the end");
        Ok(())
    }
}
