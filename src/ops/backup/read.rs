//! Reading one file: windows of the file are cut into chunks, and the chunks are hashed,
//! deduplicated, compressed and sealed on rayon.

use super::{Ctx, FileOutcome};
use crate::chunker::parallel::{CutFinder, parallel_chunk_lengths};
use crate::error::{Error, Result};
use crate::format::{BlobId, BlobType};
use rayon::prelude::*;
use std::io::Read;
use std::ops::Range;
use std::path::Path;

/// How much of a file is read ahead of the chunker at once.
pub const READ_BUFFER_BYTES: usize = 8 * 1024 * 1024;

fn open_for_backup(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    // O_NOATIME keeps the backup from touching access times; it is refused for files we do
    // not own unless we are root, so fall back to a plain open.
    match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOATIME)
        .open(path)
    {
        Ok(f) => Ok(f),
        Err(_) => std::fs::File::open(path),
    }
}

/// Cut every chunk of `buf` whose end is already determined, in parallel; the cut points
/// are exactly those of a sequential pass.
fn cut_ranges(ctx: &Ctx, buf: &[u8], eof: bool) -> Vec<Range<usize>> {
    // One segment per CPU thread: each segment costs some extra chunking past its end to
    // meet the next segment's cuts, so fewer, larger segments waste less.
    let segment = buf.len().div_ceil(ctx.pool.current_num_threads().max(1));
    let (lengths, _) = parallel_chunk_lengths(&ctx.chunker, buf, eof, segment);
    let mut pos = 0usize;
    lengths
        .into_iter()
        .map(|len| {
            let r = pos..pos + len;
            pos += len;
            r
        })
        .collect()
}

/// Read, chunk and save one file. `buf` is the reader thread's own buffer, reused across
/// files: filling it through `Take::read_to_end` never zero-fills the whole window.
pub fn read_file(ctx: &Ctx, path: &Path, buf: &mut Vec<u8>) -> Result<FileOutcome> {
    let mut reader = open_for_backup(path).map_err(|e| Error::io(path.display().to_string(), e))?;
    // The window grows with the CPU pool so that one large file keeps every core busy.
    let window = READ_BUFFER_BYTES.max(ctx.pool.current_num_threads() * ctx.chunker.max_size())
        + ctx.chunker.max_size();
    buf.clear();
    let mut content = Vec::new();
    let mut size = 0u64;
    let mut eof = false;
    while !eof {
        let want = window.saturating_sub(buf.len());
        let n = (&mut reader)
            .take(want as u64)
            .read_to_end(buf)
            .map_err(|e| Error::io(path.display().to_string(), e))?;
        if n < want {
            eof = true;
        }
        size += n as u64;
        ctx.progress.add_bytes(n as u64);
        ctx.bytes_read
            .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        let window: &[u8] = buf;
        let (ranges, ids) = ctx.pool.install(|| {
            let ranges = cut_ranges(ctx, window, eof);
            let ids: Vec<Result<(BlobId, bool)>> = ranges
                .par_iter()
                .map(|r| ctx.saver.save(BlobType::Data, &window[r.clone()]))
                .collect();
            (ranges, ids)
        });
        let consumed = ranges.last().map_or(0, |r| r.end);
        for (range, r) in ranges.iter().zip(ids) {
            let (id, new) = r?;
            if new {
                ctx.progress.add_added(range.len() as u64);
            }
            content.push(id);
        }
        buf.drain(..consumed);
    }
    Ok(FileOutcome { content, size })
}
