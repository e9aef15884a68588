//! check's pack-level work: the layout the index implies for each pack, header reads that
//! compare it with what the pack says, and full reads that verify every byte.

use super::CheckProblem;
use super::ReadData;
use crate::cancel::Cancel;
use crate::error::{ErrorClass, Result};
use crate::format::index::IndexBlob;
use crate::format::pack::{HEADER_FIXED_SIZE, HEADER_READ_AHEAD, entry_size};
use crate::format::{Id, PackId};
use crate::repo::Repository;
use crate::repo::index::MasterIndex;
use crate::repo::packer::{PackHeaderRead, open_blob, parse_pack_header};
use crate::storage::FileType;
use futures::StreamExt;
use rand::seq::SliceRandom;
use std::collections::{HashMap, HashSet};

/// Header reads in flight.
const HEADER_CONCURRENCY: usize = 16;
/// Whole packs read at once (each is held in memory while it is verified).
const READ_CONCURRENCY: usize = 3;

/// What the index says one pack holds.
pub(super) struct PackLayout {
    /// Blobs by offset.
    pub(super) blobs: Vec<IndexBlob>,
    /// The file size that follows: blobs, header entries and the fixed header bytes.
    pub(super) file_size: u64,
}

/// Every indexed pack's layout (every copy of every blob counts).
pub(super) fn expected_layout(index: &MasterIndex) -> HashMap<PackId, PackLayout> {
    let mut out: HashMap<PackId, PackLayout> = HashMap::with_capacity(index.pack_count());
    for (_, id, loc) in index.entries() {
        let layout = out.entry(loc.pack).or_insert_with(|| PackLayout {
            blobs: Vec::new(),
            file_size: HEADER_FIXED_SIZE as u64,
        });
        layout.file_size +=
            u64::from(loc.length) + entry_size(loc.uncompressed_length.is_some()) as u64;
        layout.blobs.push(IndexBlob {
            id,
            blob_type: loc.blob_type,
            offset: loc.offset,
            length: loc.length,
            uncompressed_length: loc.uncompressed_length,
        });
    }
    for layout in out.values_mut() {
        layout.blobs.sort_by_key(|b| (b.offset, b.id));
    }
    out
}

/// The packs `--read-data`/`--read-data-subset` reads, out of `present`.
pub(super) fn select(
    present: &[PackId],
    stored: &HashMap<PackId, u64>,
    read: ReadData,
) -> HashSet<PackId> {
    let mut all: Vec<PackId> = present.to_vec();
    all.sort();
    let random_share = |all: Vec<PackId>, share: f64| -> HashSet<PackId> {
        let mut all = all;
        let count =
            ((all.len() as f64 * share) as usize).clamp(usize::from(!all.is_empty()), all.len());
        all.shuffle(&mut rand::thread_rng());
        all.into_iter().take(count).collect()
    };
    match read {
        ReadData::None => HashSet::new(),
        ReadData::All => all.into_iter().collect(),
        ReadData::Bucket { n, of } => all
            .into_iter()
            .filter(|p| u32::from(p.0.0[0]) % of == n - 1)
            .collect(),
        ReadData::Percent(p) => random_share(all, p / 100.0),
        ReadData::Bytes(b) => {
            let total: u64 = all.iter().filter_map(|p| stored.get(p)).sum();
            let share = if total == 0 {
                1.0
            } else {
                b as f64 / total as f64
            };
            random_share(all, share.min(1.0))
        }
    }
}

fn problem(pack: &PackId, message: String) -> CheckProblem {
    CheckProblem {
        kind: "pack".into(),
        id: pack.to_hex(),
        message: format!("pack {pack}: {message}"),
    }
}

/// Differences between the blobs a pack's header lists and the index's, as messages.
fn compare(pack: &PackId, header: &[IndexBlob], expected: &[IndexBlob]) -> Vec<CheckProblem> {
    let mut header = header.to_vec();
    header.sort_by_key(|b| (b.offset, b.id));
    if header == expected {
        return Vec::new();
    }
    let listed: HashSet<(Id, u32)> = header.iter().map(|b| (b.id.0, b.offset)).collect();
    let indexed: HashSet<(Id, u32)> = expected.iter().map(|b| (b.id.0, b.offset)).collect();
    let mut out = Vec::new();
    for b in expected {
        if !listed.contains(&(b.id.0, b.offset)) {
            out.push(problem(
                pack,
                format!(
                    "blob {} at offset {} is in the index but not in the pack header",
                    b.id, b.offset
                ),
            ));
        }
    }
    for b in &header {
        if !indexed.contains(&(b.id.0, b.offset)) {
            out.push(problem(
                pack,
                format!(
                    "blob {} at offset {} is in the pack header but not in the index",
                    b.id, b.offset
                ),
            ));
        }
    }
    if out.is_empty() {
        out.push(problem(
            pack,
            "the pack header and the index differ in blob types or lengths".into(),
        ));
    }
    out
}

/// Reads each pack's header (its last bytes) and compares it with the index.
pub(super) async fn check_headers(
    repo: &Repository,
    packs: &[PackId],
    expected: &HashMap<PackId, PackLayout>,
    cancel: &Cancel,
) -> Result<Vec<CheckProblem>> {
    let results: Vec<Result<Vec<CheckProblem>>> = futures::stream::iter(packs)
        .map(|pack| async move {
            cancel.check()?;
            let Some(layout) = expected.get(pack) else {
                return Ok(Vec::new());
            };
            match read_header(repo, pack, layout.file_size).await {
                Ok(Ok(header)) => Ok(compare(pack, &header, &layout.blobs)),
                Ok(Err(message)) => Ok(vec![problem(pack, message)]),
                Err(e) => Err(e),
            }
        })
        .buffer_unordered(HEADER_CONCURRENCY)
        .collect()
        .await;
    let mut out = Vec::new();
    for r in results {
        out.extend(r?);
    }
    Ok(out)
}

/// A pack's header blobs; `Ok(Err(message))` when the stored bytes are bad, `Err` when
/// storage could not be asked (a dead endpoint stops the check rather than blaming packs).
async fn read_header(
    repo: &Repository,
    pack: &PackId,
    file_size: u64,
) -> Result<std::result::Result<Vec<IndexBlob>, String>> {
    let mut want = (HEADER_READ_AHEAD as u64).min(file_size);
    loop {
        let tail = match repo
            .read_pack_range(pack, file_size - want..file_size)
            .await
        {
            Ok(t) => t,
            Err(e) if e.class() == ErrorClass::Retryable => return Err(e),
            Err(e) => return Ok(Err(e.chain_string())),
        };
        match parse_pack_header(repo.key(), &tail, file_size) {
            Ok(PackHeaderRead::Complete(blobs)) => return Ok(Ok(blobs)),
            Ok(PackHeaderRead::NeedMore { header_len }) => {
                let need = u64::from(header_len) + 4;
                if need <= want || need > file_size {
                    return Ok(Err(format!(
                        "header length {header_len} does not fit the file"
                    )));
                }
                want = need;
            }
            Err(e) => return Ok(Err(e.to_string())),
        }
    }
}

/// Reads `packs` in full and verifies them: the file hashes to its name, its header matches
/// the index, and every blob opens and hashes to its id. Returns packs and bytes read.
pub(super) async fn read_packs(
    repo: &Repository,
    packs: &HashSet<PackId>,
    expected: &HashMap<PackId, PackLayout>,
    cancel: &Cancel,
) -> Result<(u64, u64, Vec<CheckProblem>)> {
    let mut sorted: Vec<&PackId> = packs.iter().collect();
    sorted.sort();
    let results: Vec<Result<(u64, Vec<CheckProblem>)>> = futures::stream::iter(sorted)
        .map(|pack| async move {
            cancel.check()?;
            let Some(layout) = expected.get(pack) else {
                return Ok((0, Vec::new()));
            };
            let bytes = match repo.storage().read(FileType::Pack, pack.id()).await {
                Ok(b) => b,
                Err(e) => {
                    let e = crate::Error::from(e);
                    if e.class() == ErrorClass::Retryable {
                        return Err(e);
                    }
                    return Ok((0, vec![problem(pack, e.chain_string())]));
                }
            };
            let n = bytes.len() as u64;
            let key = repo.key_arc();
            let pack = *pack;
            let blobs = layout.blobs.clone();
            let problems =
                tokio::task::spawn_blocking(move || verify_pack(&key, &pack, &bytes, &blobs))
                    .await
                    .map_err(|e| crate::Error::task("a pack verification task", e))?;
            Ok((n, problems))
        })
        .buffer_unordered(READ_CONCURRENCY)
        .collect()
        .await;
    let (mut read, mut bytes, mut out) = (0, 0, Vec::new());
    for r in results {
        let (n, problems) = r?;
        read += u64::from(n > 0);
        bytes += n;
        out.extend(problems);
    }
    Ok((read, bytes, out))
}

fn verify_pack(
    key: &crate::crypto::Key,
    pack: &PackId,
    bytes: &[u8],
    expected: &[IndexBlob],
) -> Vec<CheckProblem> {
    let mut out = Vec::new();
    if Id::hash(bytes) != pack.0 {
        out.push(problem(
            pack,
            "content does not match its name (SHA-256 mismatch)".into(),
        ));
    }
    let header = match parse_pack_header(key, bytes, bytes.len() as u64) {
        Ok(PackHeaderRead::Complete(h)) => h,
        Ok(PackHeaderRead::NeedMore { header_len }) => {
            out.push(problem(
                pack,
                format!("header length {header_len} does not fit the file"),
            ));
            return out;
        }
        Err(e) => {
            out.push(problem(pack, e.to_string()));
            return out;
        }
    };
    out.extend(compare(pack, &header, expected));
    for blob in &header {
        let start = blob.offset as usize;
        let Some(sealed) = bytes.get(start..start + blob.length as usize) else {
            out.push(problem(
                pack,
                format!("blob {} lies past the end of the file", blob.id),
            ));
            continue;
        };
        if let Err(e) = open_blob(key, sealed, blob) {
            out.push(CheckProblem {
                kind: "blob".into(),
                id: blob.id.to_hex(),
                message: format!("pack {pack}: {e}"),
            });
        }
    }
    out
}
