//! The in-memory master index: the union of all index files, answering "where is blob X".
//! Owns only the lookup structure; loading and saving index files is the repository's job.
//!
//! Memory layout, measured by `MasterIndex::heap_bytes` (see the `memory_per_blob` tests):
//! blobs are split into 2^16 buckets by the first two bytes of their id (ids are uniform
//! SHA-256 digests), so a record stores only the other 30 id bytes plus 16 bytes of packed
//! location: 46 bytes, in one `Vec` sorted by id. A table of 2^16 + 1 `u32` bucket starts
//! (256 KiB, allocated at the first merge) gives each bucket's records. Ids are uniform within
//! a bucket too, so a lookup starts where the next two id bytes place it and walks to the
//! record (3 per bucket at 200 000 blobs, 30 at 2 000 000, read in one or two cache lines).
//! New blobs first go to a small `HashMap` that is merged into the sorted vector once it
//! reaches 1/8 of it. Measured in steady state: 47.49 bytes per blob at 200 000 blobs in 400
//! packs, 46.35 at 2 000 000 blobs in 4 000 packs (the bucket table costs 1.31 and 0.13 of
//! that, the pack table the rest above 46). While blobs are pending there are at most about
//! 14 bytes more per blob (a `HashMap` slot is 49 bytes and tables run 44–88 % full); a merge
//! briefly needs a second sorted vector. Pack ids are stored once in a pack table and
//! referenced by a `u32`.

use crate::format::index::{IndexBlob, IndexFile};
use crate::format::{BlobId, BlobType, Id, PackId};
use std::cmp::Ordering;
use std::collections::HashMap;

/// Where a blob is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobLocation {
    pub pack: PackId,
    pub blob_type: BlobType,
    pub offset: u32,
    pub length: u32,
    pub uncompressed_length: Option<u32>,
}

impl BlobLocation {
    /// The blob's plaintext length: its uncompressed length, or its stored length less the
    /// IV and MAC of an uncompressed blob.
    pub fn plaintext_len(&self) -> u32 {
        self.uncompressed_length.unwrap_or_else(|| {
            self.length
                .saturating_sub(crate::crypto::aead::OVERHEAD as u32)
        })
    }
}

/// High bit of `Packed::pack`: set for tree blobs.
const TREE_BIT: u32 = 1 << 31;
/// Pending blobs are merged once there are this many, or 1/8 of the sorted ones.
const MIN_PENDING: usize = 1 << 14;
/// Id bytes implied by the bucket a record is in.
const HEAD: usize = 2;
/// Id bytes stored per record.
const TAIL: usize = 32 - HEAD;
/// Number of buckets: one per value of the first `HEAD` id bytes.
const BUCKETS: usize = 1 << (8 * HEAD);

/// The last `TAIL` bytes of an id.
type Tail = [u8; TAIL];

/// A blob's location without its pack id: pack table index (with the type in the high bit),
/// offset, length and uncompressed length (0 when not compressed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Packed {
    pack: u32,
    offset: u32,
    length: u32,
    uncompressed: u32,
}

impl Packed {
    fn blob_type(&self) -> BlobType {
        if self.pack & TREE_BIT != 0 {
            BlobType::Tree
        } else {
            BlobType::Data
        }
    }
}

/// A merged blob: its id without the bucket bytes, and its `Packed` location as four
/// little-endian `u32`s. Byte arrays only, so a record is 46 bytes with no padding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Record {
    tail: Tail,
    loc: [u8; 16],
}

impl Record {
    fn new(tail: Tail, p: Packed) -> Record {
        let mut loc = [0u8; 16];
        for (dst, v) in loc
            .chunks_exact_mut(4)
            .zip([p.pack, p.offset, p.length, p.uncompressed])
        {
            dst.copy_from_slice(&v.to_le_bytes());
        }
        Record { tail, loc }
    }

    fn packed(&self) -> Packed {
        let l = &self.loc;
        let word = |i: usize| u32::from_le_bytes([l[i], l[i + 1], l[i + 2], l[i + 3]]);
        Packed {
            pack: word(0),
            offset: word(4),
            length: word(8),
            uncompressed: word(12),
        }
    }
}

// The memory bound depends on records packing to 46 bytes.
const _: () = assert!(std::mem::size_of::<Record>() == TAIL + 16);

/// Union of all index files. Where a blob is listed in several packs, the first one added
/// wins.
#[derive(Debug, Default)]
pub struct MasterIndex {
    packs: Vec<PackId>,
    pack_numbers: HashMap<PackId, u32>,
    /// The merged blobs, sorted by full id, no duplicates, disjoint from `pending`. The
    /// bucket of position `i` is the `b` with `starts[b] <= i < starts[b + 1]`.
    records: Vec<Record>,
    /// `starts[b]` is the first position in `records` of bucket `b`; `BUCKETS + 1` entries, or
    /// none while nothing is merged.
    starts: Vec<u32>,
    pending: HashMap<BlobId, Packed>,
    /// Further locations of blobs already known (the same id listed for another pack or
    /// offset): lookups ignore them, prune and check count every copy.
    duplicates: Vec<(BlobId, Packed)>,
}

/// An id's bucket and tail.
fn split(id: &BlobId) -> (usize, Tail) {
    let bytes = &id.0.0;
    let mut tail: Tail = [0; TAIL];
    // Both lengths are constants: 32 - HEAD == TAIL.
    tail.copy_from_slice(&bytes[HEAD..]);
    (usize::from(u16::from_be_bytes([bytes[0], bytes[1]])), tail)
}

/// The full id of a tail in bucket `bucket`.
fn join(bucket: usize, tail: &Tail) -> BlobId {
    let mut id = [0u8; 32];
    // Buckets are below 2^16, so the two low bytes are the whole bucket number.
    id[..HEAD].copy_from_slice(&(bucket as u16).to_be_bytes());
    id[HEAD..].copy_from_slice(tail);
    BlobId(Id(id))
}

impl MasterIndex {
    pub fn new() -> MasterIndex {
        MasterIndex::default()
    }

    /// Add every pack of an index file.
    pub fn add_index_file(&mut self, file: &IndexFile) {
        for pack in &file.packs {
            self.add_pack(pack.id, &pack.blobs);
        }
    }

    /// Add the blobs of one pack; blobs already known keep their first location.
    pub fn add_pack(&mut self, pack: PackId, blobs: &[IndexBlob]) {
        let number = self.pack_number(pack);
        for b in blobs {
            let type_bit = match b.blob_type {
                BlobType::Data => 0,
                BlobType::Tree => TREE_BIT,
            };
            let packed = Packed {
                pack: number | type_bit,
                offset: b.offset,
                length: b.length,
                uncompressed: b.uncompressed_length.unwrap_or(0),
            };
            if let Some(known) = self.lookup(&b.id) {
                // The same entry listed by two index files is one copy, not two.
                if (known.pack & !TREE_BIT, known.offset) != (number, b.offset) {
                    self.duplicates.push((b.id, packed));
                }
                continue;
            }
            self.pending.insert(b.id, packed);
        }
        if self.pending.len() >= MIN_PENDING.max(self.records.len() / 8) {
            self.merge_pending();
        }
    }

    fn pack_number(&mut self, pack: PackId) -> u32 {
        if let Some(n) = self.pack_numbers.get(&pack) {
            return *n;
        }
        // 2^31 packs would need a 64 GiB pack table plus at least 2^31 blobs of 46 bytes:
        // beyond any memory this index runs in, so the number always fits below TREE_BIT.
        let n = (self.packs.len() as u32) & !TREE_BIT;
        self.packs.push(pack);
        self.pack_numbers.insert(pack, n);
        n
    }

    /// The records of bucket `bucket` (none while nothing is merged).
    fn bucket(&self, bucket: usize) -> &[Record] {
        match (self.starts.get(bucket), self.starts.get(bucket + 1)) {
            (Some(&lo), Some(&hi)) => self
                .records
                .get(lo as usize..hi as usize)
                .unwrap_or_default(),
            _ => &[],
        }
    }

    fn merge_pending(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let mut fresh: Vec<(BlobId, Packed)> = self.pending.drain().collect();
        fresh.sort_unstable_by_key(|r| r.0);
        let mut records: Vec<Record> = Vec::with_capacity(self.records.len() + fresh.len());
        let mut starts: Vec<u32> = Vec::with_capacity(BUCKETS + 1);
        let mut fresh = fresh.iter().peekable();
        for bucket in 0..BUCKETS {
            // Positions fit in u32: 2^32 records would take 184 GiB.
            starts.push(records.len() as u32);
            let mut old = self.bucket(bucket).iter().peekable();
            while let Some((id, p)) = fresh.next_if(|(id, _)| split(id).0 == bucket) {
                let (_, tail) = split(id);
                while let Some(r) = old.next_if(|r| r.tail < tail) {
                    records.push(*r);
                }
                records.push(Record::new(tail, *p));
            }
            records.extend(old);
        }
        starts.push(records.len() as u32);
        self.records = records;
        self.starts = starts;
        self.pending.shrink_to_fit();
    }

    fn lookup(&self, id: &BlobId) -> Option<Packed> {
        if let Some(p) = self.pending.get(id) {
            return Some(*p);
        }
        self.find_merged(id).map(|(_, p)| p)
    }

    /// A merged blob's position in `records` and its location.
    fn find_merged(&self, id: &BlobId) -> Option<(usize, Packed)> {
        let (bucket, tail) = split(id);
        let base = *self.starts.get(bucket)? as usize;
        let keys = self.bucket(bucket);
        // Tails within a bucket are uniform too: start where the next two id bytes say the
        // tail should be and walk to it. The guess is off by about half the square root of
        // the bucket size, so this reads one or two cache lines where a binary search over a
        // large bucket reads several.
        let last = keys.len().checked_sub(1)?;
        let mut i =
            ((usize::from(u16::from_be_bytes([tail[0], tail[1]])) * keys.len()) >> 16).min(last);
        let probe = |i: usize| keys.get(i).map(|r| r.tail.cmp(&tail));
        match probe(i)? {
            Ordering::Equal => {}
            Ordering::Less => loop {
                i += 1;
                match probe(i)? {
                    Ordering::Less => {}
                    Ordering::Equal => break,
                    Ordering::Greater => return None,
                }
            },
            Ordering::Greater => loop {
                i = i.checked_sub(1)?;
                match probe(i)? {
                    Ordering::Greater => {}
                    Ordering::Equal => break,
                    Ordering::Less => return None,
                }
            },
        }
        keys.get(i).map(|r| (base + i, r.packed()))
    }

    fn location(&self, p: Packed) -> Option<BlobLocation> {
        Some(BlobLocation {
            pack: *self.packs.get((p.pack & !TREE_BIT) as usize)?,
            blob_type: p.blob_type(),
            offset: p.offset,
            length: p.length,
            uncompressed_length: (p.uncompressed != 0).then_some(p.uncompressed),
        })
    }

    pub fn get(&self, id: &BlobId) -> Option<BlobLocation> {
        self.lookup(id).and_then(|p| self.location(p))
    }

    pub fn contains(&self, id: &BlobId) -> bool {
        self.lookup(id).is_some()
    }

    /// Whether the blob is known with this type.
    pub fn has(&self, id: &BlobId, blob_type: BlobType) -> bool {
        self.lookup(id).is_some_and(|p| p.blob_type() == blob_type)
    }

    /// Number of distinct blobs.
    pub fn len(&self) -> usize {
        self.records.len() + self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of distinct packs seen (including packs whose blobs all were duplicates).
    pub fn pack_count(&self) -> usize {
        self.packs.len()
    }

    /// Every pack id seen, in the order first added.
    pub fn iter_packs(&self) -> impl Iterator<Item = &PackId> + '_ {
        self.packs.iter()
    }

    /// Every blob with its location, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (BlobId, BlobLocation)> + '_ {
        let merged = (0..BUCKETS).flat_map(move |bucket| {
            self.bucket(bucket)
                .iter()
                .map(move |r| (join(bucket, &r.tail), r.packed()))
        });
        merged
            .chain(self.pending.iter().map(|(id, p)| (*id, *p)))
            .filter_map(|(id, p)| self.location(p).map(|loc| (id, loc)))
    }

    /// Blobs grouped by pack, each group sorted by offset (for restore planning).
    pub fn blobs_by_pack(&self) -> HashMap<PackId, Vec<(BlobId, BlobLocation)>> {
        let mut out: HashMap<PackId, Vec<(BlobId, BlobLocation)>> = HashMap::new();
        for (id, loc) in self.iter() {
            out.entry(loc.pack).or_default().push((id, loc));
        }
        for blobs in out.values_mut() {
            blobs.sort_unstable_by_key(|(_, loc)| loc.offset);
        }
        out
    }

    /// Merges the blobs added last, so that every blob has a fixed [`MasterIndex::position`]
    /// until the next [`MasterIndex::add_pack`].
    pub fn finish_loading(&mut self) {
        self.merge_pending();
    }

    /// A number in `0..len()` for each blob, to index per-blob marks by (prune, check).
    /// Only after [`MasterIndex::finish_loading`]; `None` for unknown blobs.
    pub fn position(&self, id: &BlobId) -> Option<usize> {
        if !self.pending.is_empty() {
            return None;
        }
        self.find_merged(id).map(|(pos, _)| pos)
    }

    /// Number of index entries that are further copies of a known blob.
    pub fn duplicate_count(&self) -> usize {
        self.duplicates.len()
    }

    /// Every index entry, further copies included, with the blob's position (the same for
    /// all copies of a blob): the blobs in position order, then the copies. Only after
    /// [`MasterIndex::finish_loading`].
    pub fn entries(&self) -> impl Iterator<Item = (usize, BlobId, BlobLocation)> + '_ {
        let merged = (0..BUCKETS).flat_map(move |bucket| {
            let base = self.starts.get(bucket).copied().unwrap_or(0) as usize;
            self.bucket(bucket)
                .iter()
                .enumerate()
                .map(move |(i, r)| (base + i, join(bucket, &r.tail), r.packed()))
        });
        let copies = self
            .duplicates
            .iter()
            .filter_map(|(id, p)| self.find_merged(id).map(|(pos, _)| (pos, *id, *p)));
        merged
            .chain(copies)
            .filter_map(|(pos, id, p)| self.location(p).map(|loc| (pos, id, loc)))
    }

    /// Approximate heap bytes held by the index (excluding allocator overhead).
    pub fn heap_bytes(&self) -> usize {
        use std::mem::size_of;
        // hashbrown: one control byte per bucket plus the slot; buckets ≈ capacity · 8/7.
        let map = |cap: usize, slot: usize| cap * 8 / 7 * (slot + 1);
        self.records.capacity() * size_of::<Record>()
            + self.starts.capacity() * size_of::<u32>()
            + self.packs.capacity() * size_of::<PackId>()
            + map(self.pack_numbers.capacity(), size_of::<(PackId, u32)>())
            + map(self.pending.capacity(), size_of::<(BlobId, Packed)>())
            + self.duplicates.capacity() * size_of::<(BlobId, Packed)>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::Id;
    use crate::format::index::IndexPack;
    use proptest::prelude::*;

    fn blob(n: u64, t: BlobType, offset: u32) -> IndexBlob {
        IndexBlob {
            id: BlobId(Id::hash(&n.to_le_bytes())),
            blob_type: t,
            offset,
            length: 40 + n as u32 % 100,
            uncompressed_length: (n % 2 == 0).then_some(n as u32 + 1),
        }
    }

    fn pack_id(n: u8) -> PackId {
        PackId(Id([n; 32]))
    }

    #[test]
    fn lookup_and_first_wins() {
        let mut idx = MasterIndex::new();
        assert!(idx.is_empty());
        let a = blob(1, BlobType::Data, 0);
        let t = blob(2, BlobType::Tree, 41);
        idx.add_index_file(&IndexFile {
            supersedes: vec![],
            packs: vec![IndexPack {
                id: pack_id(1),
                blobs: vec![a, t],
            }],
        });
        let mut dup = a;
        dup.offset = 999;
        idx.add_pack(pack_id(2), &[dup]);
        assert_eq!(idx.len(), 2);
        assert_eq!(idx.pack_count(), 2);
        let loc = idx.get(&a.id).unwrap();
        assert_eq!(
            loc,
            BlobLocation {
                pack: pack_id(1),
                blob_type: BlobType::Data,
                offset: 0,
                length: a.length,
                uncompressed_length: None,
            }
        );
        assert_eq!(idx.get(&t.id).unwrap().uncompressed_length, Some(3));
        assert!(idx.has(&t.id, BlobType::Tree) && !idx.has(&t.id, BlobType::Data));
        assert!(idx.contains(&a.id));
        assert!(!idx.contains(&BlobId(Id([0; 32]))));
        assert_eq!(idx.iter_packs().count(), 2);
        let by_pack = idx.blobs_by_pack();
        assert_eq!(by_pack.len(), 1);
        assert_eq!(by_pack[&pack_id(1)].len(), 2);
        assert_eq!(by_pack[&pack_id(1)][0].0, a.id);
    }

    #[test]
    fn many_blobs_across_merges() {
        let mut idx = MasterIndex::new();
        let n = 100_000u64;
        for chunk in 0..(n / 1000) {
            let blobs: Vec<_> = (chunk * 1000..(chunk + 1) * 1000)
                .map(|i| blob(i, BlobType::Data, i as u32))
                .collect();
            idx.add_pack(pack_id(chunk as u8), &blobs);
            // Re-adding earlier blobs must not change them.
            idx.add_pack(pack_id(255), &blobs[..10]);
        }
        assert_eq!(idx.len(), n as usize);
        assert!(idx.records.len() > idx.pending.len());
        for i in (0..n).step_by(7) {
            let b = blob(i, BlobType::Data, i as u32);
            let loc = idx.get(&b.id).unwrap();
            assert_eq!(loc.offset, i as u32);
            assert_eq!(loc.pack, pack_id((i / 1000) as u8));
            assert_eq!(loc.length, b.length);
            assert_eq!(loc.uncompressed_length, b.uncompressed_length);
        }
        assert!(!idx.contains(&blob(n, BlobType::Data, 0).id));
        assert_eq!(idx.iter().count(), n as usize);
    }

    /// Heap bytes per blob of an index of `n` blobs from `id(i)` in packs of `per_pack`, after
    /// the last merge; checks every blob is found.
    fn steady_bytes_per_blob(n: u64, per_pack: u64, id: impl Fn(u64) -> BlobId) -> f64 {
        let mut idx = MasterIndex::new();
        let mut blobs = Vec::with_capacity(per_pack as usize);
        for p in 0..n.div_ceil(per_pack) {
            blobs.clear();
            blobs.extend(
                (p * per_pack..((p + 1) * per_pack).min(n)).map(|i| IndexBlob {
                    id: id(i),
                    blob_type: BlobType::Data,
                    offset: i as u32,
                    length: 100,
                    uncompressed_length: None,
                }),
            );
            idx.add_pack(PackId(Id::hash(&p.to_le_bytes())), &blobs);
        }
        idx.merge_pending();
        assert_eq!(idx.len(), n as usize);
        for i in (0..n).step_by(97) {
            assert_eq!(idx.get(&id(i)).map(|l| l.offset), Some(i as u32));
        }
        idx.heap_bytes() as f64 / n as f64
    }

    #[test]
    fn memory_per_blob() {
        let per_blob = steady_bytes_per_blob(200_000, 500, |i| blob(i, BlobType::Data, 0).id);
        println!("index memory: {per_blob:.2} bytes per blob at 200 000 blobs in 400 packs");
        // 46-byte records + 256 KiB bucket table + pack table (400 packs).
        assert!(per_blob <= 48.0, "{per_blob} bytes per blob");
    }

    /// A uniform id without SHA-256, so two million of them are quick to make.
    fn mixed_id(i: u64) -> BlobId {
        let mut id = [0u8; 32];
        let mut x = i;
        for word in id.chunks_exact_mut(8) {
            // splitmix64
            x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            word.copy_from_slice(&(z ^ (z >> 31)).to_le_bytes());
        }
        BlobId(Id(id))
    }

    #[test]
    fn memory_per_blob_two_million() {
        let per_blob = steady_bytes_per_blob(2_000_000, 500, mixed_id);
        println!("index memory: {per_blob:.2} bytes per blob at 2 000 000 blobs in 4 000 packs");
        assert!(per_blob <= 48.0, "{per_blob} bytes per blob");
    }

    proptest! {
        #[test]
        fn record_round_trips(
            tail in proptest::array::uniform30(any::<u8>()),
            words in proptest::array::uniform4(any::<u32>()),
        ) {
            let p = Packed {
                pack: words[0],
                offset: words[1],
                length: words[2],
                uncompressed: words[3],
            };
            let r = Record::new(tail, p);
            prop_assert_eq!(r.tail, tail);
            prop_assert_eq!(r.packed(), p);
        }

        #[test]
        fn matches_a_hashmap(
            ops in proptest::collection::vec(
                (0u8..8, proptest::collection::vec((0u64..3000, any::<bool>(), any::<u32>()), 0..50)),
                0..40,
            ),
        ) {
            let mut idx = MasterIndex::new();
            let mut model: HashMap<BlobId, BlobLocation> = HashMap::new();
            for (p, blobs) in ops {
                let blobs: Vec<IndexBlob> = blobs
                    .into_iter()
                    .map(|(n, tree, off)| {
                        let t = if tree { BlobType::Tree } else { BlobType::Data };
                        blob(n, t, off)
                    })
                    .collect();
                idx.add_pack(pack_id(p), &blobs);
                for b in &blobs {
                    model.entry(b.id).or_insert(BlobLocation {
                        pack: pack_id(p),
                        blob_type: b.blob_type,
                        offset: b.offset,
                        length: b.length,
                        uncompressed_length: b.uncompressed_length,
                    });
                }
            }
            idx.merge_pending();
            prop_assert_eq!(idx.len(), model.len());
            for (id, loc) in &model {
                prop_assert_eq!(idx.get(id), Some(*loc));
            }
            for n in 3000..3020u64 {
                prop_assert!(!idx.contains(&blob(n, BlobType::Data, 0).id));
            }
        }

        /// Ids crowded into a few buckets with tails differing anywhere, merged at random
        /// points, so lookups mix pending and merged blobs and buckets hold many tails.
        #[test]
        fn crowded_buckets_match_a_hashmap(
            ops in proptest::collection::vec(
                (
                    0u8..6,
                    proptest::collection::vec(
                        (0u8..3, 0u8..3, 2usize..32, any::<u8>(), any::<bool>(), any::<u32>()),
                        0..60,
                    ),
                    any::<bool>(),
                ),
                0..30,
            ),
        ) {
            let mut idx = MasterIndex::new();
            let mut model: HashMap<BlobId, BlobLocation> = HashMap::new();
            for (p, blobs, merge) in ops {
                let blobs: Vec<IndexBlob> = blobs
                    .into_iter()
                    .map(|(h0, h1, at, v, tree, off)| {
                        let mut id = [0u8; 32];
                        id[0] = h0 * 0x7f;
                        id[1] = h1;
                        id[at] = v;
                        IndexBlob {
                            id: BlobId(Id(id)),
                            blob_type: if tree { BlobType::Tree } else { BlobType::Data },
                            offset: off,
                            length: off / 3,
                            uncompressed_length: (off % 3 == 0).then_some(off / 2 + 1),
                        }
                    })
                    .collect();
                idx.add_pack(pack_id(p), &blobs);
                for b in &blobs {
                    model.entry(b.id).or_insert(BlobLocation {
                        pack: pack_id(p),
                        blob_type: b.blob_type,
                        offset: b.offset,
                        length: b.length,
                        uncompressed_length: b.uncompressed_length,
                    });
                }
                if merge {
                    idx.merge_pending();
                }
                prop_assert_eq!(idx.len(), model.len());
                for (id, loc) in &model {
                    prop_assert_eq!(idx.get(id), Some(*loc));
                    prop_assert!(idx.has(id, loc.blob_type));
                }
            }
            let all: HashMap<BlobId, BlobLocation> = idx.iter().collect();
            prop_assert_eq!(&all, &model);
            let mut absent = [0u8; 32];
            absent[1] = 1;
            absent[31] = 1;
            absent[30] = 1;
            prop_assert_eq!(idx.contains(&BlobId(Id(absent))), model.contains_key(&BlobId(Id(absent))));
        }
    }

    #[test]
    fn copies_are_kept_apart_and_positions_are_dense() {
        let mut idx = MasterIndex::new();
        let a = blob(1, BlobType::Data, 0);
        let b = blob(2, BlobType::Tree, 100);
        idx.add_pack(pack_id(1), &[a, b]);
        // The same entry again (an index file listed twice): no copy.
        idx.add_pack(pack_id(1), &[a]);
        // Blob a again in another pack: a copy.
        idx.add_pack(pack_id(2), &[IndexBlob { offset: 7, ..a }]);
        idx.finish_loading();
        assert_eq!(idx.len(), 2);
        assert_eq!(idx.duplicate_count(), 1);
        assert_eq!(idx.get(&a.id).map(|l| l.pack), Some(pack_id(1)));
        let pa = idx.position(&a.id).unwrap();
        let pb = idx.position(&b.id).unwrap();
        assert_ne!(pa, pb);
        assert!(pa < 2 && pb < 2);
        let entries: Vec<(usize, BlobId, PackId, u32)> = idx
            .entries()
            .map(|(pos, id, loc)| (pos, id, loc.pack, loc.offset))
            .collect();
        assert_eq!(entries.len(), 3);
        assert!(entries.contains(&(pa, a.id, pack_id(2), 7)));
        assert!(entries.contains(&(pb, b.id, pack_id(1), 100)));
        assert_eq!(idx.position(&blob(9, BlobType::Data, 0).id), None);
    }
}
