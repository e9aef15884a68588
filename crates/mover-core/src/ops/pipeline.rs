//! The write half of backup: deduplicate, compress and seal blobs, fill packs, upload them.
//!
//! Callers on rayon threads hand plaintext blobs to [`BlobSaver::save`], which hashes,
//! checks the index, seals (CPU, on the calling thread) and queues the sealed blob. One packer
//! thread fills packs; the pack uploads run as tokio tasks, several at once. This is the single
//! bridge from CPU work to network I/O, and every queue in it is bounded, so memory is bounded
//! by `channel_capacity * max blob size + upload_concurrency * pack size`.

use crate::compress::CompressionMode;
use crate::crypto::Key;
use crate::error::{Error, Result};
use crate::format::index::{IndexBlob, IndexFile, IndexPack};
use crate::format::{BlobId, BlobType, Id, PackId};
use crate::progress::Progress;
use crate::repo::Repository;
use crate::repo::index::MasterIndex;
use crate::repo::packer::{FinishedPack, PackBuilder, SealedBlob, seal_blob_with_id};
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// restic's default target pack size.
pub const DEFAULT_PACK_SIZE_BYTES: u64 = 16 * 1024 * 1024;

/// Knobs of the saving pipeline.
#[derive(Debug, Clone)]
pub struct PipelineOptions {
    pub pack_size_bytes: u64,
    pub compression: CompressionMode,
    /// Pack uploads in flight at once.
    pub upload_concurrency: usize,
    /// Sealed blobs queued for the packer.
    pub channel_capacity: usize,
}

impl Default for PipelineOptions {
    fn default() -> Self {
        PipelineOptions {
            pack_size_bytes: DEFAULT_PACK_SIZE_BYTES,
            compression: CompressionMode::Auto,
            upload_concurrency: 4,
            channel_capacity: 16,
        }
    }
}

/// Counters of what the pipeline added to the repository.
#[derive(Debug, Default)]
pub struct SaverStats {
    pub data_blobs: AtomicU64,
    pub tree_blobs: AtomicU64,
    /// Plaintext bytes of new blobs.
    pub data_added: AtomicU64,
    /// Stored (compressed, sealed) bytes of new blobs.
    pub data_added_packed: AtomicU64,
}

/// The first error any stage hit; once set, every stage stops.
#[derive(Default)]
pub struct AbortSignal {
    aborted: AtomicBool,
    error: Mutex<Option<Error>>,
}

impl AbortSignal {
    pub fn abort(&self, e: Error) {
        if let Ok(mut slot) = self.error.lock() {
            if slot.is_none() {
                *slot = Some(e);
            }
        }
        self.aborted.store(true, Ordering::SeqCst);
    }

    pub fn is_aborted(&self) -> bool {
        self.aborted.load(Ordering::SeqCst)
    }

    pub fn take_error(&self) -> Option<Error> {
        self.error.lock().ok().and_then(|mut s| s.take())
    }
}

/// Hands out blob ids and makes sure each new blob is stored exactly once.
pub struct BlobSaver {
    key: Arc<Key>,
    index: Arc<MasterIndex>,
    queued: Mutex<HashSet<BlobId>>,
    tx: crossbeam_channel::Sender<SealedBlob>,
    data_level: Option<i32>,
    tree_level: Option<i32>,
    pub stats: SaverStats,
    pub abort: Arc<AbortSignal>,
}

/// Handles to wait for the packer and uploads once all blobs are saved.
pub struct SaverHandle {
    packer: std::thread::JoinHandle<()>,
    uploader: tokio::task::JoinHandle<Vec<(PackId, Vec<IndexBlob>)>>,
    abort: Arc<AbortSignal>,
}

impl BlobSaver {
    /// Start the packer thread and the upload task. Must be called inside the tokio runtime.
    pub fn start(
        repo: &Repository,
        index: Arc<MasterIndex>,
        opts: &PipelineOptions,
    ) -> (Arc<BlobSaver>, SaverHandle) {
        BlobSaver::start_reporting(repo, index, opts, None)
    }

    /// [`BlobSaver::start`], counting the plaintext bytes of data blobs into
    /// `progress.bytes_uploaded` as their packs are stored.
    pub fn start_reporting(
        repo: &Repository,
        index: Arc<MasterIndex>,
        opts: &PipelineOptions,
        progress: Option<Arc<Progress>>,
    ) -> (Arc<BlobSaver>, SaverHandle) {
        let abort = Arc::new(AbortSignal::default());
        let (tx, rx) = crossbeam_channel::bounded::<SealedBlob>(opts.channel_capacity.max(1));
        let (pack_tx, pack_rx) =
            tokio::sync::mpsc::channel::<FinishedPack>(opts.upload_concurrency.max(1));
        let key = repo.key_arc();
        let target = opts.pack_size_bytes;
        let packer_abort = Arc::clone(&abort);
        let packer_key = Arc::clone(&key);
        let packer = std::thread::Builder::new()
            .name("mover-packer".into())
            .spawn(move || run_packer(&packer_key, rx, pack_tx, target, &packer_abort))
            .unwrap_or_else(|e| {
                // Without a packer thread nothing can be saved; report it through the abort
                // signal and hand back a thread that exits at once.
                abort.abort(Error::io("starting the packer thread", e));
                std::thread::spawn(|| {})
            });
        let uploader = tokio::spawn(run_uploader(
            repo.clone(),
            pack_rx,
            opts.upload_concurrency.max(1),
            Arc::clone(&abort),
            progress,
        ));
        let saver = Arc::new(BlobSaver {
            key,
            index,
            queued: Mutex::new(HashSet::new()),
            tx,
            data_level: repo.data_zstd_level(opts.compression),
            tree_level: repo.tree_zstd_level(opts.compression),
            stats: SaverStats::default(),
            abort: Arc::clone(&abort),
        });
        (
            saver,
            SaverHandle {
                packer,
                uploader,
                abort,
            },
        )
    }

    /// True if the blob is already stored or queued (and marks it queued if not).
    fn claim(&self, id: &BlobId) -> bool {
        if self.index.contains(id) {
            return true;
        }
        match self.queued.lock() {
            Ok(mut q) => !q.insert(*id),
            // A poisoned set only means another thread panicked; treat as new.
            Err(p) => !p.into_inner().insert(*id),
        }
    }

    /// Store `data` as a blob of `blob_type` unless it exists; returns its id and whether it
    /// was new. Runs hashing, compression and sealing on the calling thread.
    pub fn save(&self, blob_type: BlobType, data: &[u8]) -> Result<(BlobId, bool)> {
        let id = BlobId(Id::hash(data));
        self.save_with_id(blob_type, id, data)
    }

    /// [`BlobSaver::save`] with the blob already hashed: `id` must be the SHA-256 of `data`.
    pub fn save_with_id(
        &self,
        blob_type: BlobType,
        id: BlobId,
        data: &[u8],
    ) -> Result<(BlobId, bool)> {
        if self.abort.is_aborted() {
            return Err(Error::Internal(
                "a blob was offered after the save stage stopped".into(),
            ));
        }
        if self.claim(&id) {
            return Ok((id, false));
        }
        let level = match blob_type {
            BlobType::Data => self.data_level,
            BlobType::Tree => self.tree_level,
        };
        let sealed =
            seal_blob_with_id(&self.key, blob_type, id, data, level).map_err(|source| {
                Error::Pack {
                    what: format!("storing blob {id}"),
                    source,
                }
            })?;
        match blob_type {
            BlobType::Data => self.stats.data_blobs.fetch_add(1, Ordering::Relaxed),
            BlobType::Tree => self.stats.tree_blobs.fetch_add(1, Ordering::Relaxed),
        };
        self.stats
            .data_added
            .fetch_add(data.len() as u64, Ordering::Relaxed);
        self.stats
            .data_added_packed
            .fetch_add(sealed.sealed.len() as u64, Ordering::Relaxed);
        self.tx.send(sealed).map_err(|_| {
            Error::Internal("the pack writer stopped before the blobs ended".into())
        })?;
        Ok((id, true))
    }
}

impl BlobSaver {
    /// Queues a blob that is already sealed (prune copies blobs between packs without
    /// opening them again). No deduplication: the caller hands each blob over once.
    pub fn save_sealed(&self, blob: SealedBlob) -> Result<()> {
        if self.abort.is_aborted() {
            return Err(Error::Internal(
                "a blob was offered after the save stage stopped".into(),
            ));
        }
        match blob.blob_type {
            BlobType::Data => self.stats.data_blobs.fetch_add(1, Ordering::Relaxed),
            BlobType::Tree => self.stats.tree_blobs.fetch_add(1, Ordering::Relaxed),
        };
        self.stats
            .data_added_packed
            .fetch_add(blob.sealed.len() as u64, Ordering::Relaxed);
        self.tx
            .send(blob)
            .map_err(|_| Error::Internal("the pack writer stopped before the blobs ended".into()))
    }
}

impl SaverHandle {
    /// [`SaverHandle::finish`] after a stage that fed the saver ended with `stage`. The run's
    /// error is the first one any stage hit: a stage that stopped because another failed only
    /// knows that it was aborted, so the cause (a dead S3 endpoint, with its class) is what
    /// the pipeline recorded first, not what the last stage to end says.
    pub async fn finish_after<T>(
        self,
        saver: Arc<BlobSaver>,
        stage: Result<T>,
    ) -> Result<(T, Vec<(PackId, Vec<IndexBlob>)>)> {
        let value = match stage {
            Ok(v) => Some(v),
            Err(e) => {
                saver.abort.abort(e);
                None
            }
        };
        let packs = self.finish(saver).await?;
        match value {
            Some(v) => Ok((v, packs)),
            None => Err(Error::Internal(
                "a backup stage stopped without saying why".into(),
            )),
        }
    }

    /// Wait until every queued blob is packed and uploaded. `saver` must be the last
    /// reference to the saver so that the packer sees the end of input.
    pub async fn finish(self, saver: Arc<BlobSaver>) -> Result<Vec<(PackId, Vec<IndexBlob>)>> {
        drop(saver);
        let packer = self.packer;
        tokio::task::spawn_blocking(move || packer.join())
            .await
            .map_err(|e| Error::task("the packer task", e))?
            .map_err(|_| Error::Internal("the packer thread panicked".into()))?;
        let packs = self
            .uploader
            .await
            .map_err(|e| Error::task("the upload task", e))?;
        if let Some(e) = self.abort.take_error() {
            return Err(e);
        }
        Ok(packs)
    }
}

fn run_packer(
    key: &Key,
    rx: crossbeam_channel::Receiver<SealedBlob>,
    out: tokio::sync::mpsc::Sender<FinishedPack>,
    target_bytes: u64,
    abort: &AbortSignal,
) {
    // One open pack per blob type: v2 forbids mixing data and tree blobs in a pack.
    let mut data = PackBuilder::new();
    let mut tree = PackBuilder::new();
    for blob in rx {
        if abort.is_aborted() {
            return;
        }
        let builder = match blob.blob_type {
            BlobType::Data => &mut data,
            BlobType::Tree => &mut tree,
        };
        // A pack whose header cannot take one more entry is finished first.
        if !builder.fits(&blob) && !builder.is_empty() {
            let full = std::mem::replace(builder, PackBuilder::new());
            if out.blocking_send(full.finish(key)).is_err() {
                return;
            }
        }
        if let Err(e) = builder.add(blob) {
            abort.abort(Error::Pack {
                what: "adding a blob to a pack".into(),
                source: e,
            });
            return;
        }
        if builder.should_finish(target_bytes) {
            let full = std::mem::replace(builder, PackBuilder::new());
            if out.blocking_send(full.finish(key)).is_err() {
                return;
            }
        }
    }
    for builder in [data, tree] {
        if !builder.is_empty() && out.blocking_send(builder.finish(key)).is_err() {
            return;
        }
    }
}

async fn run_uploader(
    repo: Repository,
    mut rx: tokio::sync::mpsc::Receiver<FinishedPack>,
    concurrency: usize,
    abort: Arc<AbortSignal>,
    progress: Option<Arc<Progress>>,
) -> Vec<(PackId, Vec<IndexBlob>)> {
    let mut tasks = tokio::task::JoinSet::new();
    let mut done = Vec::new();
    let collect =
        |r: std::result::Result<Result<(PackId, Vec<IndexBlob>)>, tokio::task::JoinError>,
         done: &mut Vec<(PackId, Vec<IndexBlob>)>| match r {
            Ok(Ok(p)) => {
                if let Some(progress) = &progress {
                    progress.add_uploaded(data_plaintext(&p.1));
                }
                done.push(p)
            }
            Ok(Err(e)) => abort.abort(e),
            Err(e) => abort.abort(Error::task("a pack upload task", e)),
        };
    while let Some(pack) = rx.recv().await {
        if abort.is_aborted() {
            break;
        }
        while tasks.len() >= concurrency {
            if let Some(r) = tasks.join_next().await {
                collect(r, &mut done);
            }
        }
        let repo = repo.clone();
        tasks.spawn(async move { repo.save_pack(pack).await });
    }
    // Closing our end makes a still-running packer stop instead of blocking forever.
    rx.close();
    while let Some(r) = tasks.join_next().await {
        collect(r, &mut done);
    }
    done
}

/// Plaintext bytes of the data blobs of one pack (a sealed blob carries 32 bytes of IV and
/// MAC; a compressed one names its plaintext length).
fn data_plaintext(blobs: &[IndexBlob]) -> u64 {
    blobs
        .iter()
        .filter(|b| b.blob_type == BlobType::Data)
        .map(|b| u64::from(b.uncompressed_length.unwrap_or(b.length.saturating_sub(32))))
        .sum()
}

/// Write index files for the uploaded packs, at most `max_blobs` blobs per file.
pub async fn save_indexes(
    repo: &Repository,
    packs: Vec<(PackId, Vec<IndexBlob>)>,
) -> Result<Vec<Id>> {
    // restic 0.14 splits at 50 000 blobs in v1 and 150 000 in v2.
    let max_blobs = if repo.version() >= 2 { 150_000 } else { 50_000 };
    let mut ids = Vec::new();
    let mut file = IndexFile::default();
    let mut count = 0usize;
    for (id, blobs) in packs {
        count += blobs.len();
        file.packs.push(IndexPack { id, blobs });
        if count >= max_blobs {
            ids.push(repo.save_index(&file).await?);
            file = IndexFile::default();
            count = 0;
        }
    }
    if !file.packs.is_empty() {
        ids.push(repo.save_index(&file).await?);
    }
    Ok(ids)
}
