//! Raw volumes on the local system: what kind of volume a path is, its size, where a sparse
//! image file holds data (SEEK_DATA/SEEK_HOLE), and zero detection in buffers. Knows
//! nothing about repositories or chunking; never writes.

use nix::unistd::{Whence, lseek};
use std::fs::File;
use std::io::{self, Seek, SeekFrom};
use std::ops::Range;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;

/// What a path given to a block backup is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VolumeKind {
    BlockDevice,
    RegularFile,
    Other,
}

/// The kind of volume at `path` (following symlinks, as `/dev/disk/by-id/...` are links).
pub fn volume_kind(path: &Path) -> io::Result<VolumeKind> {
    let ft = std::fs::metadata(path)?.file_type();
    Ok(if ft.is_block_device() {
        VolumeKind::BlockDevice
    } else if ft.is_file() {
        VolumeKind::RegularFile
    } else {
        VolumeKind::Other
    })
}

/// Size in bytes of an open file or block device: seeking to the end works for both, without
/// the BLKGETSIZE64 ioctl.
pub fn volume_size(file: &mut File) -> io::Result<u64> {
    let size = file.seek(SeekFrom::End(0))?;
    file.seek(SeekFrom::Start(0))?;
    Ok(size)
}

/// The byte ranges of `file` (of length `size`) that may hold data, in order; everything
/// else is a hole and reads as zeros. Where SEEK_DATA is not supported (block devices, some
/// file systems) the whole range is data.
pub fn data_ranges(file: &File, size: u64) -> Vec<Range<u64>> {
    if size == 0 {
        return Vec::new();
    }
    match sparse_map(file, size) {
        Ok(ranges) => ranges,
        Err(_) => std::iter::once(0..size).collect(),
    }
}

fn sparse_map(file: &File, size: u64) -> nix::Result<Vec<Range<u64>>> {
    let mut out = Vec::new();
    let mut pos = 0u64;
    while pos < size {
        let start = match lseek(file, to_off(pos)?, Whence::SeekData) {
            Ok(s) => s as u64,
            // ENXIO: no data at or after `pos`; the rest is a hole.
            Err(nix::errno::Errno::ENXIO) => break,
            Err(e) => return Err(e),
        };
        if start >= size {
            break;
        }
        let end = match lseek(file, to_off(start)?, Whence::SeekHole) {
            Ok(e) => (e as u64).min(size),
            Err(nix::errno::Errno::ENXIO) => size,
            Err(e) => return Err(e),
        };
        if end <= start {
            // A file system that answers inconsistently: treat the rest as data.
            out.push(start..size);
            break;
        }
        out.push(start..end);
        pos = end;
    }
    Ok(out)
}

fn to_off(pos: u64) -> nix::Result<i64> {
    i64::try_from(pos).map_err(|_| nix::errno::Errno::EOVERFLOW)
}

/// True if every byte of `buf` is zero. Works in blocks so the compiler can vectorise it.
pub fn is_zero(buf: &[u8]) -> bool {
    buf.chunks(4096)
        .all(|block| block.iter().fold(0u8, |acc, &b| acc | b) == 0)
}

/// Zero runs of at least `min_run` bytes in `buf`, found on `block`-aligned boundaries (the
/// rest of `buf` holds data or short zero runs).
pub fn zero_runs(buf: &[u8], block: usize, min_run: usize) -> Vec<Range<usize>> {
    let block = block.max(1);
    let mut out = Vec::new();
    let mut run_start: Option<usize> = None;
    let mut pos = 0;
    for piece in buf.chunks(block) {
        let zero = is_zero(piece);
        match (zero, run_start) {
            (true, None) => run_start = Some(pos),
            (false, Some(s)) => {
                if pos - s >= min_run {
                    out.push(s..pos);
                }
                run_start = None;
            }
            _ => {}
        }
        pos += piece.len();
    }
    if let Some(s) = run_start {
        if pos - s >= min_run {
            out.push(s..pos);
        }
    }
    out
}

/// Writes `data` at `offset` of a file that reads zeros where nothing was written (a sparse
/// file, a zeroed device), leaving out zero runs of at least `min_run` bytes so that they
/// stay holes.
pub fn write_skipping_zeros(
    file: &File,
    data: &[u8],
    offset: u64,
    min_run: usize,
) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let mut pos = 0;
    for run in zero_runs(data, 4096, min_run) {
        file.write_all_at(&data[pos..run.start], offset + pos as u64)?;
        pos = run.end;
    }
    if pos < data.len() {
        file.write_all_at(&data[pos..], offset + pos as u64)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    #[test]
    fn sparse_file_has_data_ranges_around_holes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("img");
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        let mib = 1u64 << 20;
        f.set_len(64 * mib).unwrap();
        f.write_all_at(&[7u8; 4096], 8 * mib).unwrap();
        f.write_all_at(&[9u8; 4096], 40 * mib).unwrap();
        let mut f = f;
        assert_eq!(volume_size(&mut f).unwrap(), 64 * mib);
        let ranges = data_ranges(&f, 64 * mib);
        // Every written byte is inside a data range, and the ranges skip most of the file.
        for off in [8 * mib, 40 * mib] {
            assert!(ranges.iter().any(|r| r.start <= off && off + 4096 <= r.end));
        }
        let covered: u64 = ranges.iter().map(|r| r.end - r.start).sum();
        assert!(covered < 16 * mib, "holes were not found: {ranges:?}");
        assert_eq!(volume_kind(&path).unwrap(), VolumeKind::RegularFile);
        assert!(data_ranges(&f, 0).is_empty());
    }

    #[test]
    fn zero_detection() {
        assert!(is_zero(&[]));
        assert!(is_zero(&[0u8; 10000]));
        let mut b = vec![0u8; 10000];
        b[9999] = 1;
        assert!(!is_zero(&b));
        let mut buf = vec![1u8; 64];
        buf.extend_from_slice(&[0u8; 256]);
        buf.extend_from_slice(&[2u8; 64]);
        buf.extend_from_slice(&[0u8; 32]);
        assert_eq!(zero_runs(&buf, 32, 64), vec![64..320]);
        assert_eq!(zero_runs(&[0u8; 100], 32, 64), vec![0..100]);
        assert!(zero_runs(&[0u8; 100], 32, 128).is_empty());
    }

    #[test]
    fn skipped_zeros_stay_holes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let f = std::fs::File::create(&path).unwrap();
        f.set_len(8 << 20).unwrap();
        let mut data = vec![0u8; 4 << 20];
        data[..4096].fill(1);
        data[(4 << 20) - 10..].fill(2);
        write_skipping_zeros(&f, &data, 1 << 20, 65536).unwrap();
        let back = std::fs::read(&path).unwrap();
        assert_eq!(&back[1 << 20..5 << 20], &data[..]);
        use std::os::unix::fs::MetadataExt;
        assert!(std::fs::metadata(&path).unwrap().blocks() * 512 < 1 << 20);
    }
}
