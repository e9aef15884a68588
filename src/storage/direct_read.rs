//! Range reads of local pack files with O_DIRECT: a restore reads every needed pack byte
//! once, so the page cache would only add a copy and fill memory with data nobody reads
//! again. Any failure here makes the caller fall back to the object store's own read.

use bytes::Bytes;
use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

/// Offsets, lengths and buffer addresses of direct reads are multiples of this.
const ALIGN: u64 = 4096;

/// Reads `range` of `path`, bypassing the page cache. `Ok(None)` when the filesystem does
/// not take direct reads or the file ends early (the caller then reads the ordinary way
/// and reports a short read itself).
pub fn read_range(path: &Path, range: Range<u64>) -> io::Result<Option<Bytes>> {
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
    let align = ALIGN as usize;
    let mut raw = vec![0u8; len + align];
    let offset = raw.as_ptr().align_offset(align);
    if offset >= align {
        return Ok(None);
    }
    let got = match fill(&file, &mut raw[offset..offset + len], start) {
        Ok(n) => n,
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => return Ok(None),
        Err(e) => return Err(e),
    };
    let from = offset + (range.start - start) as usize;
    let to = offset + (range.end - start) as usize;
    if offset + got < to {
        return Ok(None);
    }
    Ok(Some(Bytes::from(raw).slice(from..to)))
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
        }
        assert!(read_range(&path, 10..20_001)?.is_none(), "past the end");
        Ok(())
    }
}
