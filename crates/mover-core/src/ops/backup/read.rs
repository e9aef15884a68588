//! Reading one file: windows of the file are cut into chunks, and the chunks are hashed,
//! deduplicated, compressed and sealed.
//!
//! Every reader thread owns a small window and reads files that fit it whole, then cuts
//! and saves them itself, so many small files are read at once (a cold disk answers many
//! requests in parallel) while other readers work on the ones already read, without a
//! thread switch per file. A file larger than that borrows a pair of large windows from a
//! shared pool: one is cut and saved in parallel on the CPU pool while the next part of the
//! file is read into the other, so one big file keeps both the disk and every core busy.
//! Memory is bounded by `readers * SMALL_WINDOW + pairs * 2 * large window`, whatever the
//! data.

use super::{Ctx, FileOutcome};
use crate::chunker::parallel::{parallel_chunk_lengths, sequential_chunk_lengths};
use crate::error::{Error, Result};
use crate::format::{BlobId, BlobType};
use crate::fs::direct::{ReadWindow, SourceFile};
use crossbeam_channel::{Receiver, Sender};
use rayon::prelude::*;
use std::ops::Range;
use std::path::Path;
use std::sync::atomic::Ordering;

/// Each reader's own window: files up to this size are read in one request.
pub const SMALL_WINDOW_BYTES: usize = 2 * 1024 * 1024;
/// Least amount of a large file read ahead of the chunker at once.
pub const LARGE_WINDOW_BYTES: usize = 8 * 1024 * 1024;
/// A large window's read grows by this much per CPU thread.
const PER_THREAD_READ_BYTES: usize = 2 * 1024 * 1024;

/// The large windows readers share, in pairs.
pub struct LargeWindows {
    tx: Sender<(ReadWindow, ReadWindow)>,
    rx: Receiver<(ReadWindow, ReadWindow)>,
    /// Bytes read into a window at once.
    read_size: usize,
    /// Room in front of each read for the undetermined chunk carried over (< one chunk).
    reserve: usize,
}

impl LargeWindows {
    /// `pairs` pairs of windows; each read gives every CPU thread a few chunks to cut and
    /// holds at least one largest chunk. Windows are allocated on first use.
    pub fn new(pairs: usize, cpu_threads: usize, max_chunk: usize) -> LargeWindows {
        let (tx, rx) = crossbeam_channel::bounded(pairs.max(1));
        for _ in 0..pairs.max(1) {
            let _ = tx.send((ReadWindow::new(0), ReadWindow::new(0)));
        }
        LargeWindows {
            tx,
            rx,
            read_size: LARGE_WINDOW_BYTES
                .max(max_chunk)
                .max(cpu_threads.max(1) * PER_THREAD_READ_BYTES),
            reserve: crate::fs::direct::align_up(max_chunk),
        }
    }

    fn take(&self) -> Option<(ReadWindow, ReadWindow)> {
        let (mut a, mut b) = self.rx.recv().ok()?;
        let want = self.reserve + self.read_size;
        if a.capacity() < want {
            a = ReadWindow::new(want);
        }
        if b.capacity() < want {
            b = ReadWindow::new(want);
        }
        Some((a, b))
    }

    fn give_back(&self, pair: (ReadWindow, ReadWindow)) {
        let _ = self.tx.send(pair);
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

/// Chunks saved from one window: their ids, lengths and whether each was new.
type Saved = Vec<Result<(BlobId, bool, usize)>>;

/// Cut and save the determined chunks of a small window on this thread; returns the bytes
/// used. Handing a small file to the CPU pool costs two thread switches (the pool wakes up,
/// then wakes the reader), which for files of a few KiB is more than hashing and sealing
/// them; the pool keeps the large files, whose windows it cuts and saves in parallel.
fn save_small_window(ctx: &Ctx, data: &[u8], eof: bool) -> (usize, Saved) {
    let (lengths, consumed) = sequential_chunk_lengths(&ctx.chunker, data, eof);
    let mut pos = 0usize;
    let saved = lengths
        .into_iter()
        .map(|len| {
            let chunk = &data[pos..pos + len];
            pos += len;
            ctx.saver
                .save(BlobType::Data, chunk)
                .map(|(id, new)| (id, new, len))
        })
        .collect();
    (consumed, saved)
}

/// Cut and save the determined chunks of `data` on the CPU pool; returns the bytes used.
fn save_window(ctx: &Ctx, data: &[u8], eof: bool) -> (usize, Saved) {
    ctx.pool.install(|| {
        let ranges = cut_ranges(ctx, data, eof);
        let consumed = ranges.last().map_or(0, |r| r.end);
        let saved = ranges
            .par_iter()
            .map(|r| {
                ctx.saver
                    .save(BlobType::Data, &data[r.clone()])
                    .map(|(id, new)| (id, new, r.len()))
            })
            .collect();
        (consumed, saved)
    })
}

fn record(ctx: &Ctx, saved: Saved, content: &mut Vec<BlobId>) -> Result<()> {
    for r in saved {
        let (id, new, len) = r?;
        if new {
            ctx.progress.add_added(len as u64);
        }
        content.push(id);
    }
    Ok(())
}

fn count_read(ctx: &Ctx, n: usize) {
    ctx.progress.add_bytes(n as u64);
    ctx.bytes_read.fetch_add(n as u64, Ordering::Relaxed);
}

/// Read, chunk and save one file with the reader's own `small` window, or a borrowed large
/// pair when the file does not fit it.
pub fn read_file(
    ctx: &Ctx,
    large: &LargeWindows,
    path: &Path,
    small: &mut ReadWindow,
) -> Result<FileOutcome> {
    let name = path.display().to_string();
    let mut file = SourceFile::open(path, ctx.direct_io).map_err(|e| Error::io(&name, e))?;
    let mut content = Vec::new();
    // A file that grew past the small window since it was listed goes on in large windows.
    let fits = file_fits(&file, small);
    if !fits || !read_single(ctx, &name, &mut file, small, &mut content)? {
        let carried = if fits { small.data() } else { &[] };
        let Some(mut pair) = large.take() else {
            return Err(Error::Internal(
                "the file reader stopped before the walk ended".into(),
            ));
        };
        let r = read_double(
            ctx,
            &name,
            large,
            &mut file,
            &mut pair,
            carried,
            &mut content,
        );
        large.give_back(pair);
        r?;
    }
    Ok(FileOutcome {
        content,
        size: file.offset(),
    })
}

fn file_fits(file: &SourceFile, small: &ReadWindow) -> bool {
    // One block more than the file must fit to see its end in the same request.
    let need = file
        .expected_len()
        .saturating_add(2 * crate::fs::direct::align() as u64);
    need <= small.capacity() as u64
}

/// One window, refilled after each round of chunking. Returns false, leaving the data in
/// the window, if the window filled up without a chunk to cut.
fn read_single(
    ctx: &Ctx,
    name: &str,
    file: &mut SourceFile,
    w: &mut ReadWindow,
    content: &mut Vec<BlobId>,
) -> Result<bool> {
    w.clear();
    loop {
        let (n, eof) = w.fill(file, w.capacity()).map_err(|e| Error::io(name, e))?;
        count_read(ctx, n);
        let (consumed, saved) = save_small_window(ctx, w.data(), eof);
        record(ctx, saved, content)?;
        w.consume(consumed);
        if eof {
            return Ok(true);
        }
        if consumed == 0 {
            return Ok(false);
        }
    }
}

/// Two windows: while one is chunked and saved, the next part of the file is read into the
/// other; the undetermined tail of the first is then put in front of the second.
fn read_double(
    ctx: &Ctx,
    name: &str,
    large: &LargeWindows,
    file: &mut SourceFile,
    pair: &mut (ReadWindow, ReadWindow),
    carried: &[u8],
    content: &mut Vec<BlobId>,
) -> Result<()> {
    let (cur, next) = (&mut pair.0, &mut pair.1);
    let (reserve, read_size) = (large.reserve, large.read_size);
    let (n, mut eof) = cur
        .fill_after(file, reserve, read_size)
        .map_err(|e| Error::io(name, e))?;
    count_read(ctx, n);
    cur.prepend(carried)
        .map_err(|e| Error::Internal(format!("read window: {e}")))?;
    loop {
        if eof {
            let (_, saved) = save_window(ctx, cur.data(), true);
            return record(ctx, saved, content);
        }
        let mut done: Option<(usize, Saved)> = None;
        let mut read: std::io::Result<(usize, bool)> = Ok((0, true));
        {
            let data = cur.data();
            let slot = &mut done;
            ctx.pool.in_place_scope(|s| {
                s.spawn(move |_| *slot = Some(save_window(ctx, data, false)));
                read = next.fill_after(file, reserve, read_size);
            });
        }
        let (consumed, saved) = done.unwrap_or_default();
        record(ctx, saved, content)?;
        let (n, next_eof) = read.map_err(|e| Error::io(name, e))?;
        count_read(ctx, n);
        cur.consume(consumed);
        next.prepend(cur.data())
            .map_err(|e| Error::Internal(format!("read window: {e}")))?;
        std::mem::swap(cur, next);
        eof = next_eof;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_windows_hold_a_chunk_besides_the_read() {
        let w = LargeWindows::new(1, 2, 8 << 20);
        let (a, b) = w.take().expect("a pair");
        assert!(a.capacity() >= w.read_size + w.reserve);
        assert!(b.capacity() >= w.read_size + w.reserve);
        assert!(w.reserve >= 8 << 20);
        assert!(w.read_size >= 8 << 20);
        w.give_back((a, b));
        assert!(w.take().is_some());
    }
}
