//! A test-only `ObjectStore` wrapper that injects faults: failing puts, corrupt or
//! truncated reads, and read streams cut off with an error. It forwards everything else to
//! the wrapped store unchanged and never touches the wrapped store's data itself.
#![allow(dead_code)]

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload, ObjectMeta,
    ObjectStore, PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, Result,
};
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// What to do to the bytes of a `get` whose path starts with a prefix.
#[derive(Debug, Clone)]
enum ReadFault {
    /// Flip one bit in the middle of the returned bytes.
    Corrupt,
    /// Return at most this many bytes, silently.
    Truncate(usize),
    /// Return this many bytes, then fail the stream (a dropped connection).
    Cut(usize),
}

#[derive(Debug, Default)]
struct Knobs {
    puts: AtomicUsize,
    gets: AtomicUsize,
    /// 1-based number of the one put that fails; 0 = none.
    fail_put_number: AtomicUsize,
    /// 1-based number of the first put of a run of failing puts; 0 = none.
    fail_puts_from: AtomicUsize,
    read_faults: Mutex<Vec<(String, ReadFault)>>,
}

/// Wraps a store and injects faults chosen with its knobs. Clones share the knobs.
#[derive(Debug, Clone)]
pub struct FaultyStore {
    inner: Arc<dyn ObjectStore>,
    knobs: Arc<Knobs>,
}

impl FaultyStore {
    pub fn new(inner: Arc<dyn ObjectStore>) -> FaultyStore {
        FaultyStore {
            inner,
            knobs: Arc::default(),
        }
    }

    /// Makes the `n`th put (1-based, counted from the store's creation) fail once.
    pub fn fail_put_number(&self, n: usize) {
        self.knobs.fail_put_number.store(n, Ordering::SeqCst);
    }

    /// Makes the `n`th put and every later one fail, like a backend that went away.
    pub fn fail_puts_from(&self, n: usize) {
        self.knobs.fail_puts_from.store(n, Ordering::SeqCst);
    }

    /// Makes puts succeed again.
    pub fn clear_put_faults(&self) {
        self.knobs.fail_put_number.store(0, Ordering::SeqCst);
        self.knobs.fail_puts_from.store(0, Ordering::SeqCst);
    }

    /// Gets of paths starting with `prefix` (e.g. `"data/"`, relative to the store root)
    /// return bytes with one bit flipped.
    pub fn corrupt_reads(&self, prefix: &str) {
        self.add_read_fault(prefix, ReadFault::Corrupt);
    }

    /// Gets of paths starting with `prefix` return at most `keep` bytes, without error.
    pub fn truncate_reads(&self, prefix: &str, keep: usize) {
        self.add_read_fault(prefix, ReadFault::Truncate(keep));
    }

    /// Gets of paths starting with `prefix` yield `keep` bytes and then a stream error.
    pub fn cut_reads(&self, prefix: &str, keep: usize) {
        self.add_read_fault(prefix, ReadFault::Cut(keep));
    }

    pub fn clear_read_faults(&self) {
        self.lock_faults().clear();
    }

    /// Puts attempted so far (failed ones included).
    pub fn put_count(&self) -> usize {
        self.knobs.puts.load(Ordering::SeqCst)
    }

    /// Gets (including ranged reads and heads) attempted so far.
    pub fn get_count(&self) -> usize {
        self.knobs.gets.load(Ordering::SeqCst)
    }

    fn add_read_fault(&self, prefix: &str, fault: ReadFault) {
        self.lock_faults().push((prefix.to_string(), fault));
    }

    fn lock_faults(&self) -> std::sync::MutexGuard<'_, Vec<(String, ReadFault)>> {
        // A panic in another test thread must not hide this store's faults.
        self.knobs
            .read_faults
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn read_fault(&self, location: &Path) -> Option<ReadFault> {
        let path = location.as_ref();
        self.lock_faults()
            .iter()
            .find(|(prefix, _)| path.starts_with(prefix.as_str()))
            .map(|(_, fault)| fault.clone())
    }

    fn injected(what: String) -> object_store::Error {
        object_store::Error::Generic {
            store: "FaultyStore",
            source: what.into(),
        }
    }
}

impl fmt::Display for FaultyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FaultyStore({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for FaultyStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        let n = self.knobs.puts.fetch_add(1, Ordering::SeqCst) + 1;
        let once = self.knobs.fail_put_number.load(Ordering::SeqCst);
        let from = self.knobs.fail_puts_from.load(Ordering::SeqCst);
        if n == once || (from != 0 && n >= from) {
            return Err(Self::injected(format!(
                "injected failure of put #{n} ({location})"
            )));
        }
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.knobs.gets.fetch_add(1, Ordering::SeqCst);
        let head = options.head;
        let result = self.inner.get_opts(location, options).await?;
        let fault = match self.read_fault(location) {
            Some(fault) if !head => fault,
            _ => return Ok(result),
        };
        let meta = result.meta.clone();
        let range = result.range.clone();
        let attributes = result.attributes.clone();
        let mut data = result.bytes().await?.to_vec();
        let stream: BoxStream<'static, Result<Bytes>> = match fault {
            ReadFault::Corrupt => {
                if !data.is_empty() {
                    let mid = data.len() / 2;
                    data[mid] ^= 0x01;
                }
                futures::stream::once(async move { Ok(Bytes::from(data)) }).boxed()
            }
            ReadFault::Truncate(keep) => {
                data.truncate(keep);
                futures::stream::once(async move { Ok(Bytes::from(data)) }).boxed()
            }
            ReadFault::Cut(keep) => {
                data.truncate(keep);
                let error = Self::injected(format!("injected cut of read of {location}"));
                futures::stream::iter([Ok(Bytes::from(data)), Err(error)]).boxed()
            }
        };
        Ok(GetResult {
            payload: GetResultPayload::Stream(stream),
            meta,
            range,
            attributes,
            extensions: Default::default(),
        })
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        self.inner.rename_opts(from, to, options).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::ObjectStoreExt;
    use object_store::memory::InMemory;

    fn store() -> FaultyStore {
        FaultyStore::new(Arc::new(InMemory::new()))
    }

    #[tokio::test]
    async fn fails_only_the_chosen_puts() {
        let s = store();
        s.fail_put_number(2);
        let p = Path::from("data/00/a");
        s.put(&p, "1".into()).await.unwrap();
        assert!(s.put(&p, "2".into()).await.is_err());
        s.put(&p, "3".into()).await.unwrap();
        s.fail_puts_from(4);
        assert!(s.put(&p, "4".into()).await.is_err());
        assert!(s.put(&p, "5".into()).await.is_err());
        s.clear_put_faults();
        s.put(&p, "6".into()).await.unwrap();
        assert_eq!(s.put_count(), 6);
        let got = s.get(&p).await.unwrap().bytes().await.unwrap();
        assert_eq!(&got[..], b"6");
    }

    #[tokio::test]
    async fn read_faults_apply_by_prefix() {
        let s = store();
        let pack = Path::from("data/00/a");
        let key = Path::from("keys/a");
        s.put(&pack, "0123456789".into()).await.unwrap();
        s.put(&key, "0123456789".into()).await.unwrap();

        s.corrupt_reads("data/");
        let got = s.get(&pack).await.unwrap().bytes().await.unwrap();
        assert_eq!(&got[..], b"0123446789");
        let got = s.get(&key).await.unwrap().bytes().await.unwrap();
        assert_eq!(&got[..], b"0123456789");
        let got = s.get_range(&pack, 2..6).await.unwrap();
        assert_eq!(&got[..], b"2355");
        assert_eq!(s.head(&pack).await.unwrap().size, 10);

        s.clear_read_faults();
        s.truncate_reads("data/", 3);
        let got = s.get(&pack).await.unwrap().bytes().await.unwrap();
        assert_eq!(&got[..], b"012");

        s.clear_read_faults();
        s.cut_reads("data/", 3);
        assert!(s.get(&pack).await.unwrap().bytes().await.is_err());
        assert!(s.get_count() >= 6);
    }
}
