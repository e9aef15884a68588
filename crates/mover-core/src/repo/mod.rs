//! Repository = format + crypto + storage: keys, config, index, packer, locks.
//!
//! Owns the rules that tie the pure formats to storage: unpacked files are sealed with the
//! master key (and zstd-compressed in v2), storage ids are verified on load, and a key file
//! is tried per password. It never touches the local file tree being backed up.

pub mod index;
pub mod keys;
pub mod lock;
pub mod packer;
pub mod ranges;
mod trees;

use crate::compress;
use crate::crypto::{KdfParams, Key};
use crate::error::{Error, Result};
use crate::format::config_file::ConfigFile;
use crate::format::index::{IndexBlob, IndexFile};
use crate::format::snapshot::SnapshotFile;
use crate::format::tree::Tree;
use crate::format::{BlobId, BlobType, Id, PackId, SnapshotId, TreeId};
use crate::storage::{FileType, RangeBuf, Storage, StorageError};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use index::MasterIndex;
use packer::FinishedPack;
use std::sync::Arc;

/// Largest unpacked file (index, snapshot, lock) we agree to decompress.
const MAX_UNPACKED_BYTES: usize = 1 << 30;
/// How many small repository files are fetched at once.
const LOAD_CONCURRENCY: usize = 16;
/// How many index files are fetched and decoded at once: each is up to 150 000 entries,
/// about 20 MB of JSON and 7 MB decoded, and all of them are merged into one index.
const INDEX_LOAD_CONCURRENCY: usize = 4;

/// Knobs for `init`.
#[derive(Debug, Clone)]
pub struct InitOptions {
    /// Repository format version (1 or 2).
    pub version: u32,
    pub kdf: KdfParams,
    /// Chunker recorded in the config for mover (restic ignores the field).
    pub chunker: Option<String>,
}

impl Default for InitOptions {
    fn default() -> Self {
        InitOptions {
            version: 2,
            kdf: KdfParams::default(),
            chunker: Some("fastcdc".to_string()),
        }
    }
}

/// An opened repository: storage plus the master key and config.
#[derive(Clone)]
pub struct Repository {
    storage: Storage,
    key: Arc<Key>,
    /// The key file the password opened (or `init` wrote).
    key_id: Id,
    config: Arc<ConfigFile>,
    /// An index load started ahead of [`Repository::load_index`] (shared by clones).
    index_prefetch: Arc<std::sync::Mutex<Option<IndexLoad>>>,
}

type IndexLoad = tokio::task::JoinHandle<Result<MasterIndex>>;

impl std::fmt::Debug for Repository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Repository")
            .field("location", &self.storage.display())
            .field("version", &self.config.version)
            .finish()
    }
}

/// What [`Repository::open_or_init`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opened {
    Existing,
    /// There was none: it was created.
    Created,
}

impl Repository {
    /// Create a new repository: master key, key file for `password`, config.
    pub async fn init(storage: Storage, password: &str, opts: &InitOptions) -> Result<Repository> {
        if !(1..=2).contains(&opts.version) {
            return Err(Error::InvalidInput(format!(
                "unsupported repository version {} (use 1 or 2)",
                opts.version
            )));
        }
        if storage.config_exists().await? {
            return Err(Error::InvalidInput(format!(
                "create key in repository at {} failed: repository master key and config already initialized",
                storage.display()
            )));
        }
        let key = Key::random();
        let mut config = ConfigFile::new(opts.version);
        config.mover_chunker = opts.chunker.clone();
        storage.create_layout().await?;
        let key_id = keys::save_new_key(&storage, &key, password, &opts.kdf).await?;
        let sealed = key.seal(&config.encode());
        storage.write_config(Bytes::from(sealed)).await?;
        Ok(Repository {
            storage,
            key: Arc::new(key),
            key_id,
            config: Arc::new(config),
            index_prefetch: Arc::default(),
        })
    }

    /// The one rule every front end follows for a repository that may not exist yet (a mover
    /// Job's first run finds an empty bucket): open it, or, when it is absent and `init` is
    /// set, create it with the default options. Any other failure (a wrong password, an
    /// unreachable backend) is returned as it is: a repository is never created over one.
    pub async fn open_or_init(
        storage: Storage,
        password: &str,
        init: bool,
    ) -> Result<(Repository, Opened)> {
        match Repository::open(storage.clone(), password).await {
            Ok(r) => Ok((r, Opened::Existing)),
            Err(Error::RepositoryNotFound { .. }) if init => {
                let repo = Repository::init(storage, password, &InitOptions::default()).await?;
                Ok((repo, Opened::Created))
            }
            Err(e) => Err(e),
        }
    }

    /// Open an existing repository with `password`.
    pub async fn open(storage: Storage, password: &str) -> Result<Repository> {
        let raw_config = match storage.read_config().await {
            Ok(b) => b,
            Err(StorageError::NotFound { .. }) => {
                return Err(Error::RepositoryNotFound {
                    location: storage.display().to_string(),
                    detail: storage.missing_config_detail(),
                });
            }
            Err(e) => return Err(e.into()),
        };
        let (key_id, key) = keys::open_with_password(&storage, password).await?;
        let plain = key
            .open(&raw_config)
            .map_err(|e| Error::crypto("config file", e))?;
        let config = ConfigFile::decode(&plain).map_err(|e| Error::format("config file", e))?;
        Ok(Repository {
            storage,
            key: Arc::new(key),
            key_id,
            config: Arc::new(config),
            index_prefetch: Arc::default(),
        })
    }

    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    pub fn key(&self) -> &Key {
        &self.key
    }

    /// The id of the key file this repository was opened with.
    pub fn key_id(&self) -> Id {
        self.key_id
    }

    pub fn key_arc(&self) -> Arc<Key> {
        Arc::clone(&self.key)
    }

    pub fn config(&self) -> &ConfigFile {
        &self.config
    }

    pub fn version(&self) -> u32 {
        self.config.version
    }

    /// zstd level for data blobs under `mode` (always None in v1 repositories).
    pub fn data_zstd_level(&self, mode: compress::CompressionMode) -> Option<i32> {
        if self.version() >= 2 {
            mode.zstd_level()
        } else {
            None
        }
    }

    /// zstd level for tree blobs: trees are always compressed in v2.
    pub fn tree_zstd_level(&self, mode: compress::CompressionMode) -> Option<i32> {
        if self.version() >= 2 {
            Some(mode.zstd_level().unwrap_or(3))
        } else {
            None
        }
    }

    /// Load, verify, decrypt and (in v2) decompress an index, snapshot or lock file.
    pub async fn load_unpacked(&self, ft: FileType, id: &Id) -> Result<Vec<u8>> {
        let what = || format!("{} file {}", ft.dir(), id);
        let raw = self.storage.read(ft, id).await?;
        if Id::hash(&raw) != *id {
            return Err(Error::corrupt(
                what(),
                "content does not match its name (SHA-256 mismatch)",
            ));
        }
        let key = Arc::clone(&self.key);
        let version = self.version();
        let plain = key.open(&raw).map_err(|e| Error::crypto(what(), e))?;
        if version >= 2 {
            compress::decode_unpacked(plain, MAX_UNPACKED_BYTES)
                .map_err(|e| Error::compress(what(), e))
        } else {
            Ok(plain)
        }
    }

    /// Seal (and in v2 compress) an index, snapshot or lock file and store it.
    pub async fn save_unpacked(&self, ft: FileType, json: &[u8]) -> Result<Id> {
        let plain = if self.version() >= 2 {
            compress::encode_unpacked_v2(json)
        } else {
            json.to_vec()
        };
        let sealed = self.key.seal(&plain);
        let id = Id::hash(&sealed);
        self.storage
            .write_named_by_hash(ft, &id, Bytes::from(sealed))
            .await?;
        Ok(id)
    }

    pub async fn load_snapshot(&self, id: &SnapshotId) -> Result<SnapshotFile> {
        let bytes = self.load_unpacked(FileType::Snapshot, id.id()).await?;
        SnapshotFile::decode(&bytes).map_err(|e| Error::format(format!("snapshot {id}"), e))
    }

    pub async fn save_snapshot(&self, snap: &SnapshotFile) -> Result<SnapshotId> {
        Ok(SnapshotId(
            self.save_unpacked(FileType::Snapshot, &snap.encode())
                .await?,
        ))
    }

    /// All snapshots, oldest first.
    pub async fn list_snapshots(&self) -> Result<Vec<(SnapshotId, SnapshotFile)>> {
        let ids = self.storage.list(FileType::Snapshot).await?;
        let mut snaps: Vec<(SnapshotId, SnapshotFile)> = futures::stream::iter(ids)
            .map(|(id, _)| async move {
                let sid = SnapshotId(id);
                self.load_snapshot(&sid).await.map(|s| (sid, s))
            })
            .buffer_unordered(LOAD_CONCURRENCY)
            .try_collect()
            .await?;
        snaps.sort_by(|a, b| a.1.time.cmp(&b.1.time).then(a.0.cmp(&b.0)));
        Ok(snaps)
    }

    /// The newest snapshot matching `filter` taken at or before `as_of` (any time when
    /// `None`), or the one `previous` places before it: what VolSync's `restoreAsOf` and
    /// `previous` select.
    pub async fn find_latest_as_of(
        &self,
        filter: &SnapshotFilter,
        as_of: Option<chrono::DateTime<chrono::FixedOffset>>,
        previous: usize,
    ) -> Result<(SnapshotId, SnapshotFile)> {
        let snaps = self.list_snapshots().await?;
        let selection = crate::ops::select::Selection { as_of, previous };
        crate::ops::select::select_snapshot(&snaps, |s| filter.matches(s), &selection)
            .cloned()
            .ok_or_else(|| Error::SnapshotNotFound {
                restic: "no snapshot found".into(),
                detail: match as_of {
                    Some(t) => format!(
                        " (no snapshot {previous} before the latest at or before {} matches the filters)",
                        crate::format::gotime::format(&t)
                    ),
                    None => format!(
                        " (no snapshot {previous} before the latest matches the filters)"
                    ),
                },
            })
    }

    /// Resolve `latest` or an id prefix to one snapshot, applying the filter.
    pub async fn find_snapshot(
        &self,
        spec: &str,
        filter: &SnapshotFilter,
    ) -> Result<(SnapshotId, SnapshotFile)> {
        let snaps = self.list_snapshots().await?;
        if spec == "latest" {
            let latest = crate::ops::select::Selection::default();
            return crate::ops::select::select_snapshot(&snaps, |s| filter.matches(s), &latest)
                .cloned()
                .ok_or_else(|| Error::SnapshotNotFound {
                    restic: "no snapshot found".into(),
                    detail: if filter.hosts.is_empty()
                        && filter.paths.is_empty()
                        && filter.tags.is_empty()
                    {
                        String::new()
                    } else {
                        " (none matches the given host, tag and path filters)".into()
                    },
                });
        }
        let prefix = spec.to_ascii_lowercase();
        if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::InvalidInput(format!(
                "invalid snapshot id {spec:?}: expected \"latest\" or a hex id prefix"
            )));
        }
        let mut found: Vec<(SnapshotId, SnapshotFile)> = snaps
            .into_iter()
            .filter(|(id, _)| id.to_hex().starts_with(&prefix))
            .collect();
        match found.len() {
            0 => Err(Error::SnapshotNotFound {
                restic: format!("no matching ID found for prefix \"{spec}\""),
                detail: String::new(),
            }),
            1 => Ok(found.remove(0)),
            n => Err(Error::InvalidInput(format!(
                "failed to find snapshot: multiple IDs with prefix \"{spec}\" found ({n} snapshots)"
            ))),
        }
    }

    /// Load every index file into one in-memory index.
    pub async fn load_index(&self) -> Result<MasterIndex> {
        let started = self.index_prefetch.lock().ok().and_then(|mut p| p.take());
        if let Some(load) = started {
            // A load that was cancelled or panicked is simply done again.
            if let Ok(result) = load.await {
                return result;
            }
        }
        self.read_index().await
    }

    /// Starts loading the index in the background for the next [`Repository::load_index`]
    /// (see `lock::while_locked_loading_index`); a load already started is kept.
    pub fn prefetch_index(&self) {
        let Ok(mut slot) = self.index_prefetch.lock() else {
            return;
        };
        if slot.is_none() {
            let repo = self.clone();
            *slot = Some(tokio::spawn(async move { repo.read_index().await }));
        }
    }

    /// Stops and forgets a load started by [`Repository::prefetch_index`].
    pub fn cancel_index_prefetch(&self) {
        if let Some(load) = self.index_prefetch.lock().ok().and_then(|mut p| p.take()) {
            load.abort();
        }
    }

    async fn read_index(&self) -> Result<MasterIndex> {
        Ok(self.load_index_files().await?.0)
    }

    /// Loads every index file into one index, finished loading (see
    /// [`MasterIndex::finish_loading`]), and says which packs each file lists: what prune
    /// needs to rewrite only the files that change.
    pub async fn load_index_files(&self) -> Result<(MasterIndex, Vec<IndexFileSummary>)> {
        let ids = self.storage.list(FileType::Index).await?;
        let mut stream = futures::stream::iter(ids)
            .map(|(id, _)| async move {
                let bytes = self.load_unpacked(FileType::Index, &id).await?;
                IndexFile::decode(&bytes)
                    .map(|file| (id, file))
                    .map_err(|e| Error::format(format!("index {id}"), e))
            })
            .buffer_unordered(INDEX_LOAD_CONCURRENCY);
        let mut index = MasterIndex::new();
        let mut files = Vec::new();
        while let Some(loaded) = stream.next().await {
            let (id, file) = loaded?;
            index.add_index_file(&file);
            files.push(IndexFileSummary {
                id,
                packs: file.packs.iter().map(|p| p.id).collect(),
                blobs: file.packs.iter().map(|p| p.blobs.len()).sum(),
            });
        }
        index.finish_loading();
        files.sort_by_key(|f| f.id);
        Ok((index, files))
    }

    pub async fn save_index(&self, file: &IndexFile) -> Result<Id> {
        self.save_unpacked(FileType::Index, &file.encode()).await
    }

    /// Upload a finished pack.
    pub async fn save_pack(&self, pack: FinishedPack) -> Result<(PackId, Vec<IndexBlob>)> {
        let FinishedPack { id, bytes, blobs } = pack;
        self.storage
            .write_named_by_hash(FileType::Pack, id.id(), Bytes::from(bytes))
            .await?;
        Ok((id, blobs))
    }

    /// Read a byte range of a pack. A pack the index names but storage lacks, or one too
    /// short for the range, is damage to the repository and reported as such.
    pub async fn read_pack_range(
        &self,
        pack: &PackId,
        range: std::ops::Range<u64>,
    ) -> Result<Bytes> {
        self.storage
            .read_range(FileType::Pack, pack.id(), range)
            .await
            .map_err(|e| pack_read_error(pack, e))
    }

    /// [`Repository::read_pack_range`] into a buffer the caller may write over (blobs are
    /// then opened in place).
    pub async fn read_pack_range_mut(
        &self,
        pack: &PackId,
        range: std::ops::Range<u64>,
    ) -> Result<RangeBuf> {
        self.storage
            .read_range_mut(FileType::Pack, pack.id(), range)
            .await
            .map_err(|e| pack_read_error(pack, e))
    }

    /// Fetch one blob's sealed bytes from its pack, verify and decrypt it.
    pub async fn load_blob(&self, index: &MasterIndex, id: &BlobId) -> Result<Vec<u8>> {
        let loc = index
            .get(id)
            .ok_or_else(|| Error::corrupt(format!("blob {id}"), "not in any index file"))?;
        let start = u64::from(loc.offset);
        let raw = self
            .read_pack_range(&loc.pack, start..start + u64::from(loc.length))
            .await?;
        let blob = IndexBlob {
            id: *id,
            blob_type: loc.blob_type,
            offset: loc.offset,
            length: loc.length,
            uncompressed_length: loc.uncompressed_length,
        };
        let key = Arc::clone(&self.key);
        let pack = loc.pack;
        tokio::task::spawn_blocking(move || packer::open_blob(&key, &raw, &blob))
            .await
            .map_err(|e| Error::task("a blob decode task", e))?
            .map_err(|e| Error::corrupt(format!("pack {pack}"), e.to_string()))
    }

    pub async fn load_tree(&self, index: &MasterIndex, id: &TreeId) -> Result<Tree> {
        let bid = BlobId::from(*id);
        if !index.has(&bid, BlobType::Tree) {
            return Err(Error::corrupt(
                format!("tree {id}"),
                "not in any index file",
            ));
        }
        let bytes = self.load_blob(index, &bid).await?;
        Tree::decode(&bytes).map_err(|e| Error::format(format!("tree {id}"), e))
    }
}

/// One index file: its id, the packs it lists and how many blob entries.
#[derive(Debug, Clone)]
pub struct IndexFileSummary {
    pub id: Id,
    pub packs: Vec<PackId>,
    pub blobs: usize,
}

/// Snapshot selection filters shared by restore, ls, dump and snapshots.
#[derive(Debug, Clone, Default)]
pub struct SnapshotFilter {
    pub hosts: Vec<String>,
    pub paths: Vec<String>,
    pub tags: Vec<String>,
}

impl SnapshotFilter {
    /// No host, path or tag given: every snapshot matches.
    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty() && self.paths.is_empty() && self.tags.is_empty()
    }

    pub fn matches(&self, s: &SnapshotFile) -> bool {
        s.matches(&self.hosts, &self.paths, &self.tags)
    }
}

/// A repository in `store` (in memory) with a cheap key derivation and the password "pw",
/// for tests.
#[cfg(test)]
pub(crate) async fn in_memory_for_tests(
    store: Arc<object_store::memory::InMemory>,
) -> Result<Repository> {
    let storage = Storage::from_store(store, "", "mem:".into());
    let init = InitOptions {
        kdf: KdfParams {
            n: 1024,
            r: 8,
            p: 1,
        },
        ..InitOptions::default()
    };
    Repository::init(storage, "pw", &init).await
}

/// A failed pack read: a short or missing pack is corruption of the repository, anything
/// else is the storage's own error.
fn pack_read_error(pack: &PackId, e: StorageError) -> Error {
    match e {
        e @ (StorageError::ShortRead { .. } | StorageError::NotFound { .. }) => {
            Error::corrupt(format!("pack {pack}"), e.to_string())
        }
        StorageError::Backend {
            source: object_store::Error::NotFound { .. },
            ..
        } => Error::corrupt(format!("pack {pack}"), "missing from storage"),
        e => e.into(),
    }
}
