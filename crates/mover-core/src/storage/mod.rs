//! One struct, [`Storage`], over `Arc<dyn object_store::ObjectStore>` that knows restic's
//! repository layout (`config`, `keys/`, `data/XX/`, ...) and turns object_store errors into
//! [`StorageError`]s that name the object. It moves bytes only: no encryption, no format
//! decoding, and never a secret in a message or a log line.

mod backends;
mod bucket;
mod direct_read;
mod direct_write;
mod known_digests;
mod shared_credentials;
mod throttle;
mod tls;
pub mod url;

pub use url::Location;

use crate::error::ErrorClass;
use crate::format::id::Id;
use bytes::{Bytes, BytesMut};
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use std::fmt;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

/// The kinds of file in a restic repository (spec §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileType {
    Config,
    Key,
    Snapshot,
    Index,
    Pack,
    Lock,
}

impl FileType {
    /// The directory holding this kind of file; `""` for the config file, which sits at the
    /// repository root.
    pub fn dir(&self) -> &'static str {
        match self {
            FileType::Config => "",
            FileType::Key => "keys",
            FileType::Snapshot => "snapshots",
            FileType::Index => "index",
            FileType::Pack => "data",
            FileType::Lock => "locks",
        }
    }
}

/// User knobs for reaching a repository. Credentials are not here: they come from the
/// environment (restic's names, spec §16.3).
#[derive(Debug, Clone)]
pub struct StorageOptions {
    /// Extra PEM files with CA certificates to trust (`--cacert`).
    pub cacert: Vec<PathBuf>,
    /// Accept any TLS certificate from the endpoint (`--insecure-tls`): for test endpoints
    /// with self-signed certificates, never for data that matters.
    pub insecure_tls: bool,
    /// Most concurrent requests to a remote store (restic's `s3.connections`, default 5);
    /// 0 means no limit. Ignored for local repositories.
    pub connections: usize,
    /// Local repositories: write packs and read pack ranges with O_DIRECT, bypassing the
    /// page cache (filesystems that refuse it are used the ordinary way). Default true.
    pub direct_io: bool,
    /// Most KiB/s written to the repository, over all requests together; 0 for no limit.
    pub limit_upload_kib: u64,
    /// Most KiB/s read from the repository; 0 for no limit.
    pub limit_download_kib: u64,
}

impl Default for StorageOptions {
    fn default() -> Self {
        StorageOptions {
            cacert: Vec::new(),
            insecure_tls: false,
            connections: 5,
            direct_io: true,
            limit_upload_kib: 0,
            limit_download_kib: 0,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("{path} not found")]
    NotFound { path: String },
    /// The location string cannot be parsed or names an unsupported backend.
    #[error("{0}")]
    InvalidLocation(String),
    /// Credentials, certificates or other settings are missing or inconsistent.
    #[error("{0}")]
    Config(String),
    #[error("cannot {op} {path}: {source}")]
    Backend {
        op: &'static str,
        path: String,
        #[source]
        source: object_store::Error,
    },
    /// A ranged read returned fewer bytes than asked for: the object is shorter than the
    /// caller (an index) says it is.
    #[error("short read of {path} bytes {}..{}: got {got} bytes", range.start, range.end)]
    ShortRead {
        path: String,
        range: Range<u64>,
        got: u64,
    },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// `init` found no bucket and could not create it.
    #[error("cannot create bucket {bucket}: {detail}")]
    CreateBucket {
        bucket: String,
        detail: String,
        class: ErrorClass,
    },
}

impl StorageError {
    pub fn class(&self) -> ErrorClass {
        match self {
            StorageError::NotFound { .. } => ErrorClass::NotFound,
            StorageError::InvalidLocation(_) | StorageError::Config(_) => ErrorClass::InvalidInput,
            StorageError::Backend { source, .. } => backend_class(source),
            StorageError::ShortRead { .. } => ErrorClass::Corrupt,
            StorageError::Io { .. } => ErrorClass::Io,
            StorageError::CreateBucket { class, .. } => *class,
        }
    }
}

/// Classes an object_store error. Remote failures that reach us have already been retried
/// by object_store's retry layer; they stay `Retryable` because a later run may succeed.
fn backend_class(e: &object_store::Error) -> ErrorClass {
    use object_store::Error as E;
    match e {
        E::NotFound { .. } => ErrorClass::NotFound,
        E::PermissionDenied { .. }
        | E::Unauthenticated { .. }
        | E::InvalidPath { .. }
        | E::NotSupported { .. }
        | E::NotImplemented { .. }
        | E::UnknownConfigurationKey { .. } => ErrorClass::InvalidInput,
        E::Generic { store, .. } if *store == "LocalFileSystem" => ErrorClass::Io,
        E::Generic { .. } => ErrorClass::Retryable,
        _ => ErrorClass::Io,
    }
}

/// A restic repository's storage: an object store plus the key prefix of the repository.
#[derive(Clone)]
pub struct Storage {
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    display: String,
    /// Root directory when the repository is on the local file system.
    local_root: Option<PathBuf>,
    /// Whether local pack files are read and written with O_DIRECT.
    direct_io: bool,
    /// S3 over plain HTTP: digests of uploads in flight, for the request signer.
    known_digests: Option<Arc<known_digests::KnownDigests>>,
    /// `--limit-upload` and `--limit-download`.
    upload: Option<Arc<throttle::Pacer>>,
    download: Option<Arc<throttle::Pacer>>,
    /// S3: the bucket `init` creates when it is missing.
    bucket: Option<bucket::S3Bucket>,
    /// Most concurrent requests (`StorageOptions::connections`).
    connections: usize,
}

impl fmt::Debug for Storage {
    // The store's own Debug may print credential providers; show only the location.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Storage")
            .field("location", &self.display)
            .finish_non_exhaustive()
    }
}

impl Storage {
    /// Opens the repository at a restic location string, with credentials from the process
    /// environment. Nothing is contacted yet: errors about reachability come from the first
    /// request.
    pub fn open(location: &str, options: &StorageOptions) -> Result<Storage, StorageError> {
        Storage::open_with_env(location, options, |name| std::env::var(name).ok())
    }

    /// [`Storage::open`] with the environment given as a lookup function, so callers and
    /// tests can supply credentials without touching the process environment.
    pub fn open_with_env(
        location: &str,
        options: &StorageOptions,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Storage, StorageError> {
        let parsed = Location::parse(location)?;
        let display = location.trim().to_string();
        let env = |name: &str| env(name).filter(|v| !v.is_empty());
        match &parsed {
            Location::Local(dir) => {
                let root = backends::absolute_dir(dir).map_err(|source| StorageError::Io {
                    context: format!("cannot resolve repository directory {}", dir.display()),
                    source,
                })?;
                let (store, prefix) = backends::local(&root, &display)?;
                Ok(Storage {
                    store,
                    prefix,
                    display,
                    local_root: Some(root),
                    direct_io: options.direct_io,
                    known_digests: None,
                    upload: None,
                    download: None,
                    bucket: None,
                    connections: options.connections,
                }
                .limited(options))
            }
            remote => {
                let known_digests = matches!(
                    remote,
                    Location::S3 {
                        allow_http: true,
                        ..
                    }
                )
                .then(Arc::default);
                let (store, prefix) =
                    backends::remote(remote, options, &env, known_digests.as_ref())?;
                let bucket = backends::s3_bucket(remote, options, &env)?;
                let store: Arc<dyn ObjectStore> = if options.connections > 0 {
                    Arc::new(object_store::limit::LimitStore::new(
                        store,
                        options.connections,
                    ))
                } else {
                    store
                };
                Ok(Storage {
                    store,
                    prefix,
                    display,
                    local_root: None,
                    direct_io: false,
                    known_digests,
                    upload: None,
                    download: None,
                    bucket,
                    connections: options.connections,
                }
                .limited(options))
            }
        }
    }

    /// Wraps an existing store (tests, fault injection). `prefix` is the repository's key
    /// prefix inside the store (`""` for the root).
    pub fn from_store(store: Arc<dyn ObjectStore>, prefix: &str, display: String) -> Storage {
        Storage {
            store,
            prefix: Path::from(prefix),
            display,
            local_root: None,
            direct_io: false,
            known_digests: None,
            upload: None,
            download: None,
            bucket: None,
            connections: StorageOptions::default().connections,
        }
    }

    /// This storage with the bandwidth limits of `options`.
    pub fn limited(mut self, options: &StorageOptions) -> Storage {
        self.upload = throttle::Pacer::from_kib(options.limit_upload_kib).map(Arc::new);
        self.download = throttle::Pacer::from_kib(options.limit_download_kib).map(Arc::new);
        self
    }

    async fn pace_upload(&self, bytes: usize) {
        if let Some(p) = &self.upload {
            p.pace(bytes).await;
        }
    }

    async fn pace_download(&self, bytes: usize) {
        if let Some(p) = &self.download {
            p.pace(bytes).await;
        }
    }

    /// The location as given by the user, for messages. Holds no secrets.
    pub fn display(&self) -> &str {
        &self.display
    }

    /// What restic says of a config file that is not there: the `stat` error for a local
    /// directory, the object store's "no such key" otherwise.
    pub fn missing_config_detail(&self) -> String {
        match &self.local_root {
            Some(root) => format!(
                "stat {}: no such file or directory",
                root.join("config").display()
            ),
            None => "Stat: The specified key does not exist.".to_string(),
        }
    }

    /// Pack uploads to keep in flight for a backup: the connections a remote store allows
    /// (restic's `-o s3.connections`, default 5); at most two for a local disk, which gains
    /// nothing from more while each in flight holds a pack in memory. Every front end
    /// (the CLI, the Kubernetes Job, VolSync's entry point) takes it from here.
    pub fn upload_concurrency(&self) -> usize {
        if self.is_local() {
            self.connections.clamp(1, 2)
        } else {
            self.connections.max(1)
        }
    }

    /// True when the repository is a local directory.
    pub fn is_local(&self) -> bool {
        self.local_root.is_some()
    }

    /// The underlying object store.
    pub fn object_store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    fn config_path(&self) -> Path {
        self.prefix.clone().join("config")
    }

    /// `keys/<id>`, `data/<id[0:2]>/<id>`, ...; the config file for [`FileType::Config`].
    fn path(&self, ft: FileType, id: &Id) -> Path {
        if ft == FileType::Config {
            return self.config_path();
        }
        file_segments(ft, id)
            .iter()
            .fold(self.prefix.clone(), |path, segment| {
                path.join(segment.as_str())
            })
    }

    /// The file [`Storage::path`] names, in a local repository's directory; `None` for object
    /// stores and the config file.
    fn local_file(&self, ft: FileType, id: &Id) -> Option<PathBuf> {
        let root = self
            .local_root
            .as_ref()
            .filter(|_| ft != FileType::Config)?;
        Some(
            file_segments(ft, id)
                .iter()
                .fold(root.clone(), |path, segment| path.join(segment)),
        )
    }

    /// The local file of a pack when packs are moved with O_DIRECT.
    fn direct_pack_file(&self, ft: FileType, id: &Id) -> Option<PathBuf> {
        if ft != FileType::Pack || !self.direct_io {
            return None;
        }
        self.local_file(ft, id)
    }

    /// Full name of an object for messages: the location plus the relative path.
    fn describe(&self, path: &Path) -> String {
        let rel: Vec<_> = path
            .prefix_match(&self.prefix)
            .map(|parts| parts.map(|p| p.as_ref().to_string()).collect())
            .unwrap_or_default();
        format!("{}/{}", self.display.trim_end_matches('/'), rel.join("/"))
    }

    fn error(&self, op: &'static str, path: &Path, source: object_store::Error) -> StorageError {
        let path = self.describe(path);
        if let Some(refused) = tls::refusal(&source) {
            return StorageError::Config(format!("cannot {op} {path}: {refused}"));
        }
        match source {
            object_store::Error::NotFound { .. } => StorageError::NotFound { path },
            source => StorageError::Backend { op, path, source },
        }
    }

    async fn get(&self, path: &Path) -> Result<Bytes, StorageError> {
        let result = self
            .store
            .get(path)
            .await
            .map_err(|e| self.error("read", path, e))?;
        let data = result
            .bytes()
            .await
            .map_err(|e| self.error("read", path, e))?;
        self.pace_download(data.len()).await;
        Ok(data)
    }

    async fn put(&self, path: &Path, data: Bytes) -> Result<(), StorageError> {
        self.store
            .put(path, PutPayload::from(data))
            .await
            .map(|_| ())
            .map_err(|e| self.error("write", path, e))
    }

    /// Reads a whole file. For [`FileType::Config`] the id is ignored.
    pub async fn read(&self, ft: FileType, id: &Id) -> Result<Bytes, StorageError> {
        self.get(&self.path(ft, id)).await
    }

    /// Reads `range` of a file (pack blobs, pack headers). Fails with
    /// [`StorageError::ShortRead`] when the file ends before `range.end`.
    pub async fn read_range(
        &self,
        ft: FileType,
        id: &Id,
        range: Range<u64>,
    ) -> Result<Bytes, StorageError> {
        Ok(match self.read_range_data(ft, id, range).await? {
            RangeData::Direct(r) => Bytes::from_owner(r),
            RangeData::Fetched(b) => b,
        })
    }

    /// [`Storage::read_range`] into a buffer the caller may write over, so that blobs can
    /// be decrypted where they were read. No copy is made for local packs or for a fetched
    /// body nothing else holds.
    pub async fn read_range_mut(
        &self,
        ft: FileType,
        id: &Id,
        range: Range<u64>,
    ) -> Result<RangeBuf, StorageError> {
        Ok(RangeBuf(
            match self.read_range_data(ft, id, range).await? {
                RangeData::Direct(r) => RangeBufInner::Direct(r),
                RangeData::Fetched(b) => RangeBufInner::Heap(
                    b.try_into_mut()
                        .unwrap_or_else(|shared| BytesMut::from(&shared[..])),
                ),
            },
        ))
    }

    async fn read_range_data(
        &self,
        ft: FileType,
        id: &Id,
        range: Range<u64>,
    ) -> Result<RangeData, StorageError> {
        if range.start >= range.end {
            return Ok(RangeData::Fetched(Bytes::new()));
        }
        let path = self.path(ft, id);
        self.pace_download((range.end - range.start) as usize).await;
        if let Some(file) = self.direct_pack_file(ft, id) {
            let r = range.clone();
            if let Ok(Ok(Some(data))) =
                tokio::task::spawn_blocking(move || direct_read::read_range(&file, r)).await
            {
                return Ok(RangeData::Direct(data));
            }
        }
        let data = self
            .store
            .get_range(&path, range.clone())
            .await
            .map_err(|e| self.error("read", &path, e))?;
        let want = range.end - range.start;
        if data.len() as u64 != want {
            return Err(StorageError::ShortRead {
                path: self.describe(&path),
                range,
                got: data.len() as u64,
            });
        }
        Ok(RangeData::Fetched(data))
    }

    /// [`Storage::write`] for a file named by the SHA-256 of `data`, as restic names every
    /// file but the config: where the upload's signature needs that hash (S3 over plain
    /// HTTP), the name is used instead of hashing `data` again.
    pub async fn write_named_by_hash(
        &self,
        ft: FileType,
        id: &Id,
        data: Bytes,
    ) -> Result<(), StorageError> {
        debug_assert_eq!(Id::hash(&data), *id, "{ft:?} not named by its hash");
        let _known = self.known_digests.as_ref().map(|k| k.know(&data, id.0));
        self.write(ft, id, data).await
    }

    /// Writes a whole file. Local writes go to a temporary file renamed into place and are
    /// fsynced; object stores write atomically by nature.
    pub async fn write(&self, ft: FileType, id: &Id, data: Bytes) -> Result<(), StorageError> {
        let path = self.path(ft, id);
        self.pace_upload(data.len()).await;
        if let Some(file) = self.direct_pack_file(ft, id) {
            let bytes = data.clone();
            let written =
                tokio::task::spawn_blocking(move || direct_write::write_file(&file, &bytes))
                    .await
                    .map_err(std::io::Error::other)
                    .and_then(|r| r);
            match written {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(source) => {
                    return Err(StorageError::Io {
                        context: format!("cannot write {}", self.describe(&path)),
                        source,
                    });
                }
            }
        }
        self.put(&path, data).await
    }

    /// Lists files of one type with their sizes. Names that are not exactly 64 lowercase
    /// hex characters (temporary files, stray objects) are skipped. Packs are listed in
    /// `data/XX/`.
    pub async fn list(&self, ft: FileType) -> Result<Vec<(Id, u64)>, StorageError> {
        if ft == FileType::Config {
            return Err(StorageError::Config(
                "the config file is a single file and cannot be listed".into(),
            ));
        }
        let dir = self.prefix.clone().join(ft.dir());
        // Depth below the prefix: `keys/<id>` is 2, `data/XX/<id>` is 3.
        let depth = self.prefix.parts_count() + if ft == FileType::Pack { 3 } else { 2 };
        let mut out = Vec::new();
        let mut stream = self.store.list(Some(&dir));
        while let Some(meta) = stream
            .try_next()
            .await
            .map_err(|e| self.error("list", &dir, e))?
        {
            if meta.location.parts_count() != depth {
                continue;
            }
            let Some(name) = meta.location.filename() else {
                continue;
            };
            if let Some(id) = parse_name(name) {
                out.push((id, meta.size));
            }
        }
        out.sort_unstable();
        Ok(out)
    }

    /// Deletes a file. Deleting a file that is already gone succeeds, so that an interrupted
    /// prune or unlock can simply be run again.
    pub async fn remove(&self, ft: FileType, id: &Id) -> Result<(), StorageError> {
        let path = self.path(ft, id);
        match self.store.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.error("delete", &path, e)),
        }
    }

    /// Size of a file in bytes.
    pub async fn size(&self, ft: FileType, id: &Id) -> Result<u64, StorageError> {
        let path = self.path(ft, id);
        self.store
            .head(&path)
            .await
            .map(|meta| meta.size)
            .map_err(|e| self.error("stat", &path, e))
    }

    /// Reads the config file; [`StorageError::NotFound`] when the repository has none.
    pub async fn read_config(&self) -> Result<Bytes, StorageError> {
        self.get(&self.config_path()).await
    }

    pub async fn write_config(&self, data: Bytes) -> Result<(), StorageError> {
        self.put(&self.config_path(), data).await
    }

    /// Whether the config file exists, i.e. whether the location holds a repository.
    pub async fn config_exists(&self) -> Result<bool, StorageError> {
        let path = self.config_path();
        match self.store.head(&path).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(self.error("stat", &path, e)),
        }
    }

    /// Whether the object `key` (a `/`-separated path under this storage's prefix, outside
    /// the repository's own layout) exists. Only "not found" is `false`; any other failure
    /// (denied, unreachable) is an error, so callers never mistake it for absence.
    pub async fn exists(&self, key: &str) -> Result<bool, StorageError> {
        let mut path = self.prefix.clone();
        for part in key.split('/').filter(|p| !p.is_empty()) {
            path = path.join(part);
        }
        match self.store.head(&path).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(self.error("stat", &path, e)),
        }
    }

    /// Creates the directory tree `restic init` makes for a local repository: the root,
    /// `keys/`, `locks/`, `snapshots/`, `index/`, `data/` and `data/00`..`data/ff`, mode 0700.
    /// Object stores have no directories; on S3 this creates the bucket when it is missing,
    /// as `restic init` does.
    pub async fn create_layout(&self) -> Result<(), StorageError> {
        if let Some(bucket) = &self.bucket {
            return bucket.ensure_exists().await;
        }
        let Some(root) = self.local_root.clone() else {
            return Ok(());
        };
        tokio::task::spawn_blocking(move || backends::create_local_layout(&root))
            .await
            .map_err(|e| StorageError::Io {
                context: "creating the repository layout".into(),
                source: std::io::Error::other(e),
            })?
    }
}

/// The path segments of a repository file below the repository root: `keys/<id>`,
/// `data/<id[0:2]>/<id>`, ... (not for [`FileType::Config`]).
fn file_segments(ft: FileType, id: &Id) -> Vec<String> {
    let name = id.to_hex();
    if ft == FileType::Pack {
        vec![ft.dir().to_string(), name[..2].to_string(), name]
    } else {
        vec![ft.dir().to_string(), name]
    }
}

/// A repository file name: exactly 64 lowercase hex characters.
fn parse_name(name: &str) -> Option<Id> {
    if name.len() != 64 || !name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    Id::from_hex(name).ok()
}

/// A range read's bytes before they are handed out.
enum RangeData {
    Direct(direct_read::PooledRange),
    Fetched(Bytes),
}

/// The bytes of a range read, owned and writable ([`Storage::read_range_mut`]).
pub struct RangeBuf(RangeBufInner);

enum RangeBufInner {
    Direct(direct_read::PooledRange),
    Heap(BytesMut),
}

impl std::ops::Deref for RangeBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match &self.0 {
            RangeBufInner::Direct(r) => r,
            RangeBufInner::Heap(b) => b,
        }
    }
}

impl std::ops::DerefMut for RangeBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        match &mut self.0 {
            RangeBufInner::Direct(r) => r,
            RangeBufInner::Heap(b) => b,
        }
    }
}

#[cfg(test)]
mod tests;
