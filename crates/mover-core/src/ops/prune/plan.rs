//! Which packs prune deletes, repacks or keeps: restic's rules (`decidePackAction`), pure.
//! Per-pack counts and the storage listing in; the plan and restic's statistics out.

use crate::format::PackId;
use std::collections::{HashMap, HashSet};

/// Fewer small packs than this are not worth repacking (restic's rule; it also stops a
/// single small pack from being repacked on every run).
const MIN_SMALL_PACKS: usize = 10;

/// What blobs a pack holds: data, trees, or (v1 repositories only) both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PackKind {
    #[default]
    Empty,
    Data,
    Tree,
    Mixed,
}

/// One indexed pack's blobs, as prune counts them. `used_size` starts at the header size.
#[derive(Debug, Clone, Default)]
pub struct PackUse {
    pub used_blobs: u64,
    pub unused_blobs: u64,
    pub duplicate_blobs: u64,
    pub used_size: u64,
    pub unused_size: u64,
    pub kind: PackKind,
    /// Some blob in it is stored without compression.
    pub uncompressed: bool,
}

impl PackUse {
    pub fn total(&self) -> u64 {
        self.used_size + self.unused_size
    }
}

/// How much unused space may remain.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MaxUnused {
    /// Percent of the total size after pruning (restic's default: 5 %).
    Percent(f64),
    Bytes(u64),
    Unlimited,
}

impl MaxUnused {
    /// restic's `--max-unused`: `unlimited`, a percentage below 100, or a size.
    pub fn parse(s: &str) -> Result<MaxUnused, String> {
        let t = s.trim();
        if t.is_empty() {
            return Err(format!("invalid value for --max-unused: {s:?}"));
        }
        if t == "unlimited" {
            return Ok(MaxUnused::Unlimited);
        }
        if let Some(p) = t.strip_suffix('%') {
            let p: f64 = p
                .parse()
                .map_err(|e| format!("invalid percentage {s:?} passed for --max-unused: {e}"))?;
            if p < 0.0 {
                return Err("percentage for --max-unused must be positive".into());
            }
            if p >= 100.0 {
                return Err("percentage for --max-unused must be below 100%".into());
            }
            return Ok(MaxUnused::Percent(p));
        }
        parse_size(t)
            .map(MaxUnused::Bytes)
            .map_err(|e| format!("invalid number of bytes {s:?} for --max-unused: {e}"))
    }

    /// Unused bytes tolerated after pruning, given the used bytes.
    fn limit(&self, used: u64) -> u64 {
        match *self {
            MaxUnused::Percent(p) => (p / (100.0 - p) * used as f64) as u64,
            MaxUnused::Bytes(b) => b,
            MaxUnused::Unlimited => u64::MAX,
        }
    }
}

/// restic's `ui.ParseBytes`: a number with an optional b, k, m, g or t suffix (powers of
/// 1024).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, unit) = match s.chars().last() {
        Some('b' | 'B') => (&s[..s.len() - 1], 1u64),
        Some('k' | 'K') => (&s[..s.len() - 1], 1 << 10),
        Some('m' | 'M') => (&s[..s.len() - 1], 1 << 20),
        Some('g' | 'G') => (&s[..s.len() - 1], 1 << 30),
        Some('t' | 'T') => (&s[..s.len() - 1], 1 << 40),
        Some(_) => (s, 1),
        None => return Err("expected size, got empty string".into()),
    };
    let n: u64 = num
        .parse()
        .map_err(|e| format!("{num:?} is not a number: {e}"))?;
    n.checked_mul(unit)
        .filter(|v| *v <= i64::MAX as u64)
        .ok_or_else(|| format!("{s:?} is too large"))
}

/// The choices restic's prune offers.
#[derive(Debug, Clone)]
pub struct PlanOptions {
    pub max_unused: MaxUnused,
    /// Repack at most this many bytes.
    pub max_repack_bytes: u64,
    /// Only repack packs holding trees.
    pub repack_cacheable_only: bool,
    pub repack_small: bool,
    pub repack_uncompressed: bool,
    /// Packs below this size count as small (0: restic's default of 1/25 of the pack size).
    pub small_pack_bytes: u64,
    /// The repository's target pack size.
    pub pack_size_bytes: u64,
    pub repository_version: u32,
}

/// restic's prune statistics.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PruneStats {
    pub blobs_used: u64,
    pub blobs_duplicate: u64,
    pub blobs_unused: u64,
    pub blobs_remove: u64,
    pub blobs_repack: u64,
    pub blobs_repack_remove: u64,
    pub size_used: u64,
    pub size_duplicate: u64,
    pub size_unused: u64,
    pub size_remove: u64,
    pub size_repack: u64,
    pub size_repack_remove: u64,
    pub size_unreferenced: u64,
    pub size_uncompressed: u64,
    pub packs_used: u64,
    pub packs_unused: u64,
    pub packs_partly_used: u64,
    pub packs_unreferenced: u64,
    pub packs_keep: u64,
    pub packs_repack: u64,
    pub packs_remove: u64,
}

/// What to do with each pack.
#[derive(Debug, Clone, Default)]
pub struct PrunePlan {
    /// Packs no index lists (left by killed backups): deleted first.
    pub remove_unreferenced: Vec<PackId>,
    /// Indexed packs without a used blob.
    pub remove: Vec<PackId>,
    /// Packs whose used blobs are copied into new packs, then deleted.
    pub repack: Vec<PackId>,
    /// Of those, the ones whose blobs are compressed on the way (v2: uncompressed trees,
    /// or data with `--repack-uncompressed`).
    pub compress: HashSet<PackId>,
    /// Indexed packs missing from storage that hold nothing used: dropped from the index.
    pub forget_missing: Vec<PackId>,
    pub stats: PruneStats,
}

impl PrunePlan {
    /// Packs the rewritten index no longer lists.
    pub fn dropped_from_index(&self) -> HashSet<PackId> {
        self.remove
            .iter()
            .chain(&self.repack)
            .chain(&self.forget_missing)
            .copied()
            .collect()
    }
}

/// Why prune cannot go on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("pack {pack}: the index says {indexed} bytes but storage holds {stored}")]
    SizeMismatch {
        pack: PackId,
        indexed: u64,
        stored: u64,
    },
    #[error("{} pack(s) holding used data are missing from storage: {}", .0.len(), list(.0))]
    MissingPacks(Vec<PackId>),
    #[error("--repack-smaller-than must not exceed the pack size")]
    SmallPackTooLarge,
    #[error("--repack-uncompressed needs repository format version 2")]
    CompressionNeedsV2,
}

fn list(packs: &[PackId]) -> String {
    packs
        .iter()
        .take(10)
        .map(|p| p.to_hex())
        .collect::<Vec<_>>()
        .join(", ")
}

struct Candidate {
    id: PackId,
    pack: PackUse,
    must_compress: bool,
}

/// Decides, for the packs in `stored` (id and size, as listed) and the indexed packs in
/// `indexed`, what prune does; `stats` holds the blob counts gathered so far.
pub fn decide(
    stored: &[(PackId, u64)],
    mut indexed: HashMap<PackId, PackUse>,
    mut stats: PruneStats,
    opts: &PlanOptions,
) -> Result<PrunePlan, PlanError> {
    if opts.repository_version < 2 && opts.repack_uncompressed {
        return Err(PlanError::CompressionNeedsV2);
    }
    if opts.small_pack_bytes > opts.pack_size_bytes {
        return Err(PlanError::SmallPackTooLarge);
    }
    let target = if opts.small_pack_bytes > 0 {
        opts.small_pack_bytes
    } else if opts.repack_small {
        opts.pack_size_bytes / 5 * 4
    } else {
        opts.pack_size_bytes / 25
    };
    let mut plan = PrunePlan::default();
    let mut candidates = Vec::new();
    let mut small = Vec::new();
    for &(id, size) in stored {
        let Some(p) = indexed.remove(&id) else {
            plan.remove_unreferenced.push(id);
            stats.size_unreferenced += size;
            continue;
        };
        if p.total() != size && p.used_blobs != 0 {
            return Err(PlanError::SizeMismatch {
                pack: id,
                indexed: p.total(),
                stored: size,
            });
        }
        match (p.used_blobs, p.unused_blobs) {
            (0, _) => stats.packs_unused += 1,
            (_, 0) => stats.packs_used += 1,
            _ => stats.packs_partly_used += 1,
        }
        if p.uncompressed {
            stats.size_uncompressed += p.total();
        }
        let must_compress = opts.repository_version >= 2
            && p.uncompressed
            && (p.kind == PackKind::Tree || opts.repack_uncompressed);
        if p.used_blobs == 0 {
            plan.remove.push(id);
            stats.blobs_remove += p.unused_blobs;
            stats.size_remove += p.unused_size;
        } else if opts.repack_cacheable_only && p.kind == PackKind::Data {
            stats.packs_keep += 1;
        } else if p.unused_blobs == 0 && p.kind != PackKind::Mixed && !must_compress {
            if size >= target {
                stats.packs_keep += 1;
            } else {
                small.push(Candidate {
                    id,
                    pack: p,
                    must_compress,
                });
            }
        } else {
            candidates.push(Candidate {
                id,
                pack: p,
                must_compress,
            });
        }
    }
    // What is left is indexed but missing from storage.
    let mut missing_used = Vec::new();
    for (id, p) in indexed {
        if p.used_blobs == 0 {
            plan.forget_missing.push(id);
            stats.blobs_remove += p.unused_blobs;
            stats.size_remove += p.unused_size;
        } else {
            missing_used.push(id);
        }
    }
    if !missing_used.is_empty() {
        missing_used.sort();
        return Err(PlanError::MissingPacks(missing_used));
    }
    plan.forget_missing.sort();
    if small.len() < MIN_SMALL_PACKS {
        stats.packs_keep += small.len() as u64;
    } else {
        candidates.extend(small);
    }
    // Trees first, then packs below the target size, then by the share of unused space.
    candidates.sort_by(|a, b| {
        let (pa, pb) = (&a.pack, &b.pack);
        let a_tree = pa.kind != PackKind::Data;
        let b_tree = pb.kind != PackKind::Data;
        let a_small = pa.total() < target;
        let b_small = pb.total() < target;
        b_tree
            .cmp(&a_tree)
            .then(b_small.cmp(&a_small))
            .then_with(|| {
                let l = u128::from(pa.unused_size) * u128::from(pb.used_size);
                let r = u128::from(pb.unused_size) * u128::from(pa.used_size);
                r.cmp(&l)
            })
            .then(a.id.cmp(&b.id))
    });
    let max_unused_after = opts.max_unused.limit(stats.size_used);
    for c in candidates {
        let p = &c.pack;
        let remaining_unused = (stats.size_duplicate + stats.size_unused)
            .saturating_sub(stats.size_remove + stats.size_repack_remove);
        let reached_unused = remaining_unused < max_unused_after;
        let reached_repack = stats.size_repack + p.total() >= opts.max_repack_bytes;
        let large_enough = p.total() >= target;
        let repack = if reached_repack {
            false
        } else if p.kind != PackKind::Data || c.must_compress {
            true
        } else {
            !(reached_unused && large_enough)
        };
        if !repack {
            stats.packs_keep += 1;
            continue;
        }
        stats.blobs_repack += p.unused_blobs + p.used_blobs;
        stats.size_repack += p.total();
        stats.blobs_repack_remove += p.unused_blobs;
        stats.size_repack_remove += p.unused_size;
        if p.uncompressed {
            stats.size_uncompressed = stats.size_uncompressed.saturating_sub(p.total());
        }
        if c.must_compress {
            plan.compress.insert(c.id);
        }
        plan.repack.push(c.id);
    }
    stats.packs_unreferenced = plan.remove_unreferenced.len() as u64;
    stats.packs_repack = plan.repack.len() as u64;
    stats.packs_remove = plan.remove.len() as u64;
    if opts.repository_version < 2 {
        stats.size_uncompressed = 0;
    }
    plan.stats = stats;
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::Id;

    fn pid(n: u8) -> PackId {
        PackId(Id([n; 32]))
    }

    fn opts() -> PlanOptions {
        PlanOptions {
            max_unused: MaxUnused::Percent(5.0),
            max_repack_bytes: u64::MAX,
            repack_cacheable_only: false,
            repack_small: false,
            repack_uncompressed: false,
            small_pack_bytes: 0,
            pack_size_bytes: 16 << 20,
            repository_version: 2,
        }
    }

    fn pack(used: u64, unused: u64, kind: PackKind) -> PackUse {
        PackUse {
            used_blobs: u64::from(used > 0),
            unused_blobs: u64::from(unused > 0),
            duplicate_blobs: 0,
            used_size: used,
            unused_size: unused,
            kind,
            uncompressed: false,
        }
    }

    #[test]
    fn sizes_and_limits_parse_as_restic() {
        assert_eq!(parse_size("5G").unwrap(), 5 << 30);
        assert_eq!(parse_size("100").unwrap(), 100);
        assert_eq!(parse_size("1k").unwrap(), 1024);
        assert!(parse_size("").is_err() && parse_size("x").is_err() && parse_size("-1").is_err());
        assert_eq!(MaxUnused::parse("5%").unwrap(), MaxUnused::Percent(5.0));
        assert_eq!(MaxUnused::parse("unlimited").unwrap(), MaxUnused::Unlimited);
        assert_eq!(MaxUnused::parse("1M").unwrap(), MaxUnused::Bytes(1 << 20));
        for bad in ["100%", "-1%", "", "x%"] {
            assert!(MaxUnused::parse(bad).is_err(), "{bad}");
        }
        // 5 % of the total after pruning is 5/95 of what is used.
        assert_eq!(MaxUnused::Percent(5.0).limit(95_000), 5_000);
    }

    #[test]
    fn unreferenced_unused_partly_used_and_missing() {
        let mut indexed = HashMap::new();
        indexed.insert(pid(1), pack(20 << 20, 0, PackKind::Data)); // full: keep
        indexed.insert(pid(2), pack(0, 10 << 20, PackKind::Data)); // unused: remove
        indexed.insert(pid(3), pack(8 << 20, 8 << 20, PackKind::Data)); // half used: repack
        indexed.insert(pid(4), pack(0, 100, PackKind::Tree)); // missing, unused: forget
        let stored = vec![
            (pid(1), 20 << 20),
            (pid(2), 10 << 20),
            (pid(3), 16 << 20),
            (pid(9), 5 << 20), // no index lists it
        ];
        let stats = PruneStats {
            size_used: 28 << 20,
            size_unused: (18 << 20) + 100,
            ..PruneStats::default()
        };
        let plan = decide(&stored, indexed.clone(), stats.clone(), &opts()).unwrap();
        assert_eq!(plan.remove_unreferenced, vec![pid(9)]);
        assert_eq!(plan.remove, vec![pid(2)]);
        assert_eq!(plan.repack, vec![pid(3)]);
        assert_eq!(plan.forget_missing, vec![pid(4)]);
        assert_eq!(plan.stats.packs_keep, 1);
        assert_eq!(plan.stats.size_unreferenced, 5 << 20);
        assert_eq!(plan.dropped_from_index().len(), 3);

        // --max-unused unlimited: the half-used data pack stays.
        let lax = PlanOptions {
            max_unused: MaxUnused::Unlimited,
            ..opts()
        };
        let plan = decide(&stored, indexed.clone(), stats.clone(), &lax).unwrap();
        assert!(plan.repack.is_empty());
        // --max-repack-size below the pack: kept too.
        let capped = PlanOptions {
            max_repack_bytes: 1 << 20,
            ..opts()
        };
        assert!(
            decide(&stored, indexed.clone(), stats.clone(), &capped)
                .unwrap()
                .repack
                .is_empty()
        );

        // A used pack missing from storage stops prune.
        indexed.insert(pid(5), pack(100, 0, PackKind::Data));
        let err = decide(&stored, indexed.clone(), stats.clone(), &opts()).unwrap_err();
        assert_eq!(err, PlanError::MissingPacks(vec![pid(5)]));
        indexed.remove(&pid(5));
        // So does a used pack whose size differs from the index.
        let wrong = vec![(pid(1), 1), (pid(3), 16 << 20)];
        assert!(matches!(
            decide(&wrong, indexed, stats, &opts()),
            Err(PlanError::SizeMismatch { .. })
        ));
    }

    #[test]
    fn small_packs_are_repacked_only_in_numbers() {
        let mut indexed = HashMap::new();
        let mut stored = Vec::new();
        for n in 0..9u8 {
            indexed.insert(pid(n), pack(1000, 0, PackKind::Data));
            stored.push((pid(n), 1000));
        }
        let stats = PruneStats::default();
        let plan = decide(&stored, indexed.clone(), stats.clone(), &opts()).unwrap();
        assert!(plan.repack.is_empty());
        assert_eq!(plan.stats.packs_keep, 9);
        indexed.insert(pid(9), pack(1000, 0, PackKind::Data));
        stored.push((pid(9), 1000));
        let plan = decide(&stored, indexed, stats, &opts()).unwrap();
        assert_eq!(plan.repack.len(), 10);
    }

    #[test]
    fn uncompressed_trees_are_repacked_compressed_in_v2() {
        let mut indexed = HashMap::new();
        let mut p = pack(20 << 20, 0, PackKind::Tree);
        p.uncompressed = true;
        indexed.insert(pid(1), p);
        let stored = vec![(pid(1), 20 << 20)];
        let plan = decide(&stored, indexed.clone(), PruneStats::default(), &opts()).unwrap();
        assert_eq!(plan.repack, vec![pid(1)]);
        assert!(plan.compress.contains(&pid(1)));
        let v1 = PlanOptions {
            repository_version: 1,
            ..opts()
        };
        assert!(
            decide(&stored, indexed, PruneStats::default(), &v1)
                .unwrap()
                .repack
                .is_empty()
        );
    }
}
