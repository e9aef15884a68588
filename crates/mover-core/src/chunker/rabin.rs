//! restic's Rabin-fingerprint chunker (spec §12), with cut points byte-identical to restic
//! 0.14: the OUT/MOD tables for a polynomial, the rolling update and the stateless boundary
//! rule. Pure: takes `&[u8]`, returns chunk lengths. Must not read files, hash chunks or
//! buffer data; the caller owns buffering and feeds [`RabinChunker::first_chunk_len`].

use std::sync::Arc;

use super::ChunkerError;
use super::polynomial::Polynomial;

/// Width of the rolling window in bytes.
pub const WINDOW_SIZE: usize = 64;
/// restic's minimum chunk size (512 KiB).
pub const MIN_SIZE: usize = 512 * 1024;
/// restic's maximum chunk size (8 MiB).
pub const MAX_SIZE: usize = 8 * 1024 * 1024;
/// restic's split mask bits: a cut where the low 20 bits of the fingerprint are zero.
pub const AVERAGE_BITS: u32 = 20;

/// Highest polynomial degree restic accepts (the digest must leave 8 bits of headroom in a
/// u64 for the byte shifted in).
const MAX_DEGREE: i32 = 53;
/// Lowest degree for which the top-byte table index `h >> (deg − 8)` is defined.
const MIN_DEGREE: i32 = 8;

/// Lanes scanned side by side. One rolling hash is a chain of dependent table lookups;
/// independent lanes over neighbouring blocks let the CPU overlap those latencies.
const LANES: usize = 4;
/// Candidate positions per lane and group. Small enough that the work wasted past a cut is a
/// few percent of a 1 MiB average chunk, large enough that the 64-byte warm-up is noise.
const BLOCK: usize = 8 * 1024;
const GROUP: usize = LANES * BLOCK;

/// Lookup tables for one polynomial (spec §12.3). Build once per repository and share.
#[derive(Clone)]
pub struct RabinTables {
    pol: Polynomial,
    shift: u32,
    out: [u64; 256],
    modt: [u64; 256],
}

impl std::fmt::Debug for RabinTables {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The polynomial is secret-ish (it leaks through chunk lengths); keep it out of logs.
        f.debug_struct("RabinTables").finish_non_exhaustive()
    }
}

impl RabinTables {
    /// Tables for `pol`, which must be irreducible with degree 8..=53 (restic's limit).
    pub fn new(pol: Polynomial) -> Result<RabinTables, ChunkerError> {
        let deg = pol.deg();
        if !(MIN_DEGREE..=MAX_DEGREE).contains(&deg) {
            return Err(ChunkerError::PolynomialDegree { degree: deg });
        }
        if !pol.is_irreducible() {
            return Err(ChunkerError::ReduciblePolynomial);
        }
        let mut out = [0u64; 256];
        let mut modt = [0u64; 256];
        for b in 0..256u64 {
            let mut h = Polynomial(b).modulo(pol);
            for _ in 0..WINDOW_SIZE - 1 {
                h = Polynomial(h.0 << 8).modulo(pol);
            }
            out[b as usize] = h.0;
            let shifted = b << deg;
            modt[b as usize] = Polynomial(shifted).modulo(pol).0 ^ shifted;
        }
        Ok(RabinTables {
            pol,
            // deg is in 8..=53, checked above.
            shift: (deg - 8) as u32,
            out,
            modt,
        })
    }

    pub fn polynomial(&self) -> Polynomial {
        self.pol
    }

    /// `(h · x^8 + b) mod P` for a reduced digest `h`.
    #[inline(always)]
    fn append(&self, h: u64, b: u8) -> u64 {
        // h < 2^deg, so h >> (deg − 8) < 256 and the `as u8` never truncates.
        ((h << 8) | u64::from(b)) ^ self.modt[usize::from((h >> self.shift) as u8)]
    }

    /// Removes `out` (the byte leaving the 64-byte window), then appends `b`.
    #[inline(always)]
    fn slide(&self, h: u64, out: u8, b: u8) -> u64 {
        self.append(h ^ self.out[usize::from(out)], b)
    }

    /// Rabin fingerprint (mod P) of `bytes`, appended from a zero digest. For a 64-byte
    /// window this is the value restic compares against the split mask.
    pub fn fingerprint(&self, bytes: &[u8]) -> u64 {
        bytes.iter().fold(0, |h, &b| self.append(h, b))
    }
}

/// restic's content-defined chunker. Cheap to clone: the tables are shared.
#[derive(Debug, Clone)]
pub struct RabinChunker {
    tables: Arc<RabinTables>,
    min_size: usize,
    max_size: usize,
    mask: u64,
}

impl RabinChunker {
    /// restic's chunker for `pol`: 512 KiB minimum, 8 MiB maximum, 20 mask bits.
    pub fn new(pol: Polynomial) -> Result<RabinChunker, ChunkerError> {
        Ok(RabinChunker::from_tables(Arc::new(RabinTables::new(pol)?)))
    }

    /// restic's sizes over already built tables.
    pub fn from_tables(tables: Arc<RabinTables>) -> RabinChunker {
        RabinChunker {
            tables,
            min_size: MIN_SIZE,
            max_size: MAX_SIZE,
            mask: (1 << AVERAGE_BITS) - 1,
        }
    }

    /// Other sizes (restic/chunker's `NewWithBoundaries` and `SetAverageBits`); chunks then
    /// no longer match what restic writes. Needs 64 <= min_size <= max_size, 1..=53 bits.
    pub fn with_sizes(
        tables: Arc<RabinTables>,
        min_size: usize,
        max_size: usize,
        average_bits: u32,
    ) -> Result<RabinChunker, ChunkerError> {
        if min_size < WINDOW_SIZE || max_size < min_size || !(1..=53).contains(&average_bits) {
            return Err(ChunkerError::InvalidSizes {
                min_size,
                max_size,
                average_bits,
            });
        }
        Ok(RabinChunker {
            tables,
            min_size,
            max_size,
            mask: (1 << average_bits) - 1,
        })
    }

    pub fn tables(&self) -> &Arc<RabinTables> {
        &self.tables
    }

    pub fn min_size(&self) -> usize {
        self.min_size
    }

    pub fn max_size(&self) -> usize {
        self.max_size
    }

    /// Lengths of the consecutive chunks covering `data`; empty input has no chunks.
    pub fn chunk_lengths(&self, data: &[u8]) -> Vec<usize> {
        let mut lengths = Vec::with_capacity(data.len() / (self.min_size * 2) + 1);
        let mut start = 0;
        while let Some(end) = self.next_cut(data, start, true) {
            lengths.push(end - start);
            start = end;
        }
        lengths
    }

    /// Length of the first chunk of `data` if no further input can change it: when `eof` is
    /// set, when `data` holds at least `max_size` bytes, or when a cut was found inside
    /// `data`. Otherwise `None`: append more data and ask again. Cutting a stream this way
    /// gives exactly [`RabinChunker::chunk_lengths`] of the whole stream.
    pub fn first_chunk_len(&self, data: &[u8], eof: bool) -> Option<usize> {
        self.next_cut(data, 0, eof)
    }

    /// End offset (exclusive) of the chunk that starts at `data[start]`, under the same
    /// contract as [`RabinChunker::first_chunk_len`]; `None` when `start >= data.len()`.
    pub fn next_cut(&self, data: &[u8], start: usize, eof: bool) -> Option<usize> {
        let avail = data.len().checked_sub(start).filter(|&n| n > 0)?;
        if avail < self.min_size {
            return eof.then_some(data.len());
        }
        // Stateless rule (§12.5): the first candidate length is min_size, whose window
        // data[start + min_size − 64 ..] lies inside the chunk because min_size >= 64.
        let last = avail.min(self.max_size);
        if let Some(len) = self.scan(&data[start..], self.min_size, last + 1) {
            return Some(start + len);
        }
        if avail >= self.max_size {
            Some(start + self.max_size)
        } else {
            eof.then_some(data.len())
        }
    }

    /// The smallest chunk length `e` in `lo..hi` whose 64-byte window `d[e − 64 .. e]` has
    /// a fingerprint meeting the mask. Needs `64 <= lo` and `hi <= d.len() + 1`.
    fn scan(&self, d: &[u8], mut lo: usize, hi: usize) -> Option<usize> {
        if lo >= hi {
            return None;
        }
        if lo == WINDOW_SIZE {
            // The lane code warms up on the 64 bytes before the first candidate's own last
            // byte, which do not exist for e = 64; check that one candidate directly.
            if self.tables.fingerprint(&d[..WINDOW_SIZE]) & self.mask == 0 {
                return Some(WINDOW_SIZE);
            }
            lo += 1;
        }
        while hi - lo >= GROUP {
            if let Some(e) = self.scan_group(d, lo) {
                return Some(e);
            }
            lo += GROUP;
        }
        self.scan_one(d, lo, hi)
    }

    /// One rolling hash over candidates `lo..hi` (`lo > 64`).
    fn scan_one(&self, d: &[u8], lo: usize, hi: usize) -> Option<usize> {
        if lo >= hi {
            return None;
        }
        let t = &*self.tables;
        let mut h = t.fingerprint(&d[lo - 65..lo - 1]);
        let outs = &d[lo - 65..hi - 65];
        let ins = &d[lo - 1..hi - 1];
        for (k, (&o, &b)) in outs.iter().zip(ins).enumerate() {
            h = t.slide(h, o, b);
            if h & self.mask == 0 {
                return Some(lo + k);
            }
        }
        None
    }

    /// Candidates `e0 .. e0 + GROUP` in `LANES` interleaved rolling hashes, lane `j` over
    /// `e0 + j·BLOCK ..`; each lane starts from the fingerprint of its first window.
    fn scan_group(&self, d: &[u8], e0: usize) -> Option<usize> {
        // g[i] is d[e0 − 65 + i]: for candidate e = e0 + j·BLOCK + k the outgoing byte is
        // d[e − 65] = g[j·BLOCK + k] and the incoming byte d[e − 1] = g[j·BLOCK + k + 64].
        let Some(g) = d
            .get(e0 - 65..e0 - 1 + GROUP)
            .and_then(|s| <&[u8; GROUP + WINDOW_SIZE]>::try_from(s).ok())
        else {
            // Unreachable: scan() only calls with e0 + GROUP <= hi <= d.len() + 1.
            return self.scan_one(d, e0, (e0 + GROUP).min(d.len() + 1));
        };
        let t = &*self.tables;
        let mask = self.mask;
        let mut h = [0u64; LANES];
        for (j, hj) in h.iter_mut().enumerate() {
            *hj = t.fingerprint(&g[j * BLOCK..j * BLOCK + WINDOW_SIZE]);
        }
        let mut first = [usize::MAX; LANES];
        for k in 0..BLOCK {
            let mut hit = false;
            for j in 0..LANES {
                h[j] = t.slide(h[j], g[j * BLOCK + k], g[j * BLOCK + k + WINDOW_SIZE]);
                hit |= h[j] & mask == 0;
            }
            if hit {
                for j in 0..LANES {
                    if h[j] & mask == 0 && first[j] == usize::MAX {
                        first[j] = k;
                    }
                }
                if first[0] != usize::MAX {
                    break;
                }
            }
        }
        (0..LANES)
            .find(|&j| first[j] != usize::MAX)
            .map(|j| e0 + j * BLOCK + first[j])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use sha2::{Digest, Sha256};

    const P: Polynomial = Polynomial(0x3DA3358B4DC173);
    const P_DESIGN: Polynomial = Polynomial(0x25b468838dcb75);

    fn chunker(pol: Polynomial) -> RabinChunker {
        RabinChunker::new(pol).expect("valid polynomial")
    }

    /// SplitMix64 outputs as little-endian bytes (spec §15.4 (a)).
    fn splitmix(len: usize, seed: u64) -> Vec<u8> {
        let mut state = seed;
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            state = state.wrapping_add(0x9E3779B97F4A7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
            z ^= z >> 31;
            out.extend_from_slice(&z.to_le_bytes());
        }
        out.truncate(len);
        out
    }

    fn sha256_hex(data: &[u8]) -> String {
        hex::encode(Sha256::digest(data))
    }

    /// restic's chunker state machine, literally (spec §12.5): lengths and "cut" digests.
    fn reference(c: &RabinChunker, data: &[u8]) -> Vec<(usize, u64)> {
        let t = &*c.tables;
        let mut chunks = Vec::new();
        let mut window = [0u8; WINDOW_SIZE];
        let (mut wpos, mut h, mut count) = (0usize, 0u64, 0usize);
        let reset = |window: &mut [u8; WINDOW_SIZE], wpos: &mut usize, h: &mut u64| {
            *window = [0; WINDOW_SIZE];
            *h = t.slide(0, window[0], 1);
            window[0] = 1;
            *wpos = 1;
        };
        reset(&mut window, &mut wpos, &mut h);
        for &b in data {
            count += 1;
            if count <= c.min_size - WINDOW_SIZE {
                continue;
            }
            let out = window[wpos];
            window[wpos] = b;
            wpos = (wpos + 1) % WINDOW_SIZE;
            h = t.slide(h, out, b);
            if (h & c.mask == 0 || count >= c.max_size) && count >= c.min_size {
                chunks.push((count, h));
                count = 0;
                reset(&mut window, &mut wpos, &mut h);
            }
        }
        if count > 0 {
            chunks.push((count, h));
        }
        chunks
    }

    /// Feeds `data` in pieces of the given sizes, cutting whenever a chunk is determined.
    fn streamed(c: &RabinChunker, data: &[u8], pieces: &[usize]) -> Vec<usize> {
        let mut out = Vec::new();
        let (mut start, mut end) = (0, 0);
        let mut pieces = pieces.iter().cycle();
        while end < data.len() {
            end = (end + pieces.next().copied().unwrap_or(1).max(1)).min(data.len());
            while let Some(n) = c.first_chunk_len(&data[start..end], false) {
                out.push(n);
                start += n;
            }
        }
        while let Some(n) = c.first_chunk_len(&data[start..end], true) {
            out.push(n);
            start += n;
        }
        assert_eq!(start, data.len());
        out
    }

    fn check_vectors(c: &RabinChunker, data: &[u8], expected: &[(usize, u64, &str)]) {
        let lengths = c.chunk_lengths(data);
        let want: Vec<usize> = expected.iter().map(|e| e.0).collect();
        assert_eq!(lengths, want);
        let cuts: Vec<u64> = reference(c, data).iter().map(|r| r.1).collect();
        let want_cuts: Vec<u64> = expected.iter().map(|e| e.1).collect();
        assert_eq!(cuts, want_cuts);
        let mut pos = 0;
        for (i, &(len, _, id)) in expected.iter().enumerate() {
            assert_eq!(sha256_hex(&data[pos..pos + len]), id, "chunk {i}");
            pos += len;
        }
        assert_eq!(pos, data.len());
    }

    #[test]
    fn table_debug_values() {
        let t = RabinTables::new(P).unwrap();
        assert_eq!(t.shift, 45);
        assert_eq!(t.out[1], 0x17eb4232e19216);
        assert_eq!(t.out[2], 0x1275b1ee8ee55f);
        assert_eq!(t.out[0x80], 0x05b54453ea6b5c);
        assert_eq!(t.out[0xff], 0x0b80b98cecc39a);
        assert_eq!(t.modt[1], 0x3da3358b4dc173);
        assert_eq!(t.modt[2], 0x46e55e9dd64395);
        assert_eq!(t.modt[0x80], 0x1012ab55b228ad4d);
        assert_eq!(t.modt[0xff], 0x1ff7ac8a5af476a7);
        assert_eq!(t.polynomial(), P);
        assert_eq!(format!("{t:?}"), "RabinTables { .. }");
    }

    #[test]
    fn fingerprint_vectors() {
        let t = RabinTables::new(P).unwrap();
        assert_eq!(t.fingerprint(b"restic"), 0x726573746963);
        let seq: Vec<u8> = (0u8..0x40).collect();
        assert_eq!(t.fingerprint(&seq), 0x44b76cac5cee3);
        // Sliding the window gives the fingerprint of the last 64 bytes alone.
        let data = splitmix(300, 9);
        let mut h = t.fingerprint(&data[..64]);
        for i in 64..data.len() {
            h = t.slide(h, data[i - 64], data[i]);
            assert_eq!(h, t.fingerprint(&data[i - 63..=i]));
        }
    }

    #[test]
    fn rejects_bad_polynomials() {
        assert_eq!(
            RabinTables::new(Polynomial((1 << 54) | 0b11)).unwrap_err(),
            ChunkerError::PolynomialDegree { degree: 54 }
        );
        assert_eq!(
            RabinTables::new(Polynomial(0)).unwrap_err(),
            ChunkerError::PolynomialDegree { degree: -1 }
        );
        // x^7 + x + 1 is irreducible but too small for the table index.
        assert_eq!(
            RabinTables::new(Polynomial(0b1000_0011)).unwrap_err(),
            ChunkerError::PolynomialDegree { degree: 7 }
        );
        assert_eq!(
            RabinTables::new(Polynomial(0x38f1e565e288df)).unwrap_err(),
            ChunkerError::ReduciblePolynomial
        );
        for p in [0x2482734cacca49u64, 0x3a7013f3d578ed, 0x249971770ab0ff] {
            assert!(RabinChunker::new(Polynomial(p)).is_ok());
        }
        let t = Arc::new(RabinTables::new(P).unwrap());
        for (min, max, bits) in [(63, 100, 5), (100, 99, 5), (64, 64, 0), (64, 64, 54)] {
            assert_eq!(
                RabinChunker::with_sizes(t.clone(), min, max, bits).unwrap_err(),
                ChunkerError::InvalidSizes {
                    min_size: min,
                    max_size: max,
                    average_bits: bits
                }
            );
        }
    }

    #[test]
    fn splitmix_vectors_a() {
        let data = splitmix(20 << 20, 0);
        assert_eq!(hex::encode(&data[..16]), "afcd1d7b39a820e2f465b9a16a9e786e");
        assert_eq!(
            sha256_hex(&data),
            "4f502ed8929c282ca58ecfdd5c56e5b188ba6d5b9af5be0bb45832e44969d773"
        );
        check_vectors(
            &chunker(P),
            &data,
            &[
                (
                    1285841,
                    0x001b22f289c00000,
                    "0c9722f1466328d522e24f6602dff1054317d580ebd2bad4cbac3410f5f8384e",
                ),
                (
                    609147,
                    0x0013255408800000,
                    "cfd4d851001017cf4ce45fcef3935b17258c6d38a7cff31b88781fb713e21443",
                ),
                (
                    536277,
                    0x00067c55bfe00000,
                    "bdac4a60a7253046742e9e3fee0487afb86269b9dc367883da01d16347526c1c",
                ),
                (
                    939814,
                    0x0019f08788600000,
                    "ff55a781405bb08c7038e371bce470a199ef2706b9980f73f17eac616124bb37",
                ),
                (
                    759094,
                    0x0012f7d072400000,
                    "a713feee7ab742228fab2e5aafed09f06c0c063c004de1c43ea11ce9ac28584a",
                ),
                (
                    1146182,
                    0x00078b3e06200000,
                    "42d1f80774010719cdbd4052e5611e10dd0fb90203611ce3e3bcfe75a69f4463",
                ),
                (
                    2257240,
                    0x001362cb78100000,
                    "fdc243c093fa9fb18f1c6ec648304722e3f2d2485c8e742c6488f7deef95ceee",
                ),
                (
                    1210894,
                    0x0011f69779400000,
                    "d9d1df4238181fb2af5953766dc67d13a2f7cef432c01e0a0a494fb6490035dc",
                ),
                (
                    631848,
                    0x001cdf4fb4300000,
                    "639a98bea14b0b7e70e2e09f6020fb991fe82035b02c612d40b1824bc1659452",
                ),
                (
                    864506,
                    0x00049d2871000000,
                    "fda7c6682b268a1630d0b96e8712afd593a4bdc735061062fa078363416f63c1",
                ),
                (
                    3818237,
                    0x00113e9328000000,
                    "8bc1ef424081f76294f7a3e0271220e1ca96082011eea6edda32b1ac154f1731",
                ),
                (
                    2152464,
                    0x00050889daf00000,
                    "e73c97e2ac0f67741010c7f137fd45962fb6378d2686dc266d9782d85a7936e0",
                ),
                (
                    1101042,
                    0x00157e9a3e500000,
                    "d2b4208035d295e95d5c827294198d8bb84d077a64e608d8b963a42da9bdf5e5",
                ),
                (
                    1239951,
                    0x0009ce524aa00000,
                    "c59d8e12ea25efc556abb57c56b42deea7803db66c65cb2c08c7382a2d7a6b69",
                ),
                (
                    1416160,
                    0x000e7f266a200000,
                    "e6826124648052db9dd736b0301a77b68bced15f51a56d265233ba164ec83262",
                ),
                (
                    1002823,
                    0x000eb4bca794adb3,
                    "16071400402137d2ffdefb27522b30a3f813a7a1ec2c40ffbde4408af6fd89af",
                ),
            ],
        );
    }

    #[test]
    fn splitmix_vectors_b() {
        let data = splitmix(20 << 20, 0);
        check_vectors(
            &chunker(P_DESIGN),
            &data,
            &[
                (
                    2539563,
                    0x0003bf8383600000,
                    "e49df7691a599e888a82b2cb81168e15226d9c0acf0e58ef20fd85559071b6f7",
                ),
                (
                    995656,
                    0x001894c122000000,
                    "f4c911d1759484ca133d279b77b8b1daf14d12ffdb766e336d4c043b071a0fce",
                ),
                (
                    1229420,
                    0x000b93465f200000,
                    "6095c1fe14fa9a2f283b4c223bff235f1719ff7bbb20927e421efde271dbc205",
                ),
                (
                    4291192,
                    0x001a4de450200000,
                    "1644483c7bdfb094b3a73f51798c7a17f1fe2d0ead29180532e7e05a5fe37200",
                ),
                (
                    2171995,
                    0x000199c915000000,
                    "bd6d4002a9e7b8e10083481ae714769bc2a6941ffca27539468d1eaeffb23661",
                ),
                (
                    717503,
                    0x001d7f65a4700000,
                    "d31572477696579a4142f4a6a9d6fa359c16eced7f0040e6590ac27077570586",
                ),
                (
                    1041269,
                    0x0010503525800000,
                    "b9aed2e85369968c322981509aba450ad031b3e592c686b457059cefeef7ce8a",
                ),
                (
                    693379,
                    0x0005f83adbf00000,
                    "2d664ac45bbe9afca049bfe4c7738c15911ecdf50ad887098c1b89e6b61b644c",
                ),
                (
                    725768,
                    0x001e4b078c100000,
                    "1dcb59d011b97e10addb0cff11cc0afc6615d6be83de29f907a09cea66dad1f2",
                ),
                (
                    1328651,
                    0x001f8f21e5700000,
                    "0e87a726b050a3daaf177a75fa80cc21b6097bdb0b9408ab76beb04f027c7b86",
                ),
                (
                    1532196,
                    0x00025996abc00000,
                    "6e0f7581e376c6e775550b20a1db18603b51a05fa8d920a31f22495c754eaf7d",
                ),
                (
                    562241,
                    0x000a5867b3d00000,
                    "7981ae8d554c0ba80d068bba2c954d0cb5654188040a8f60773721de5be29666",
                ),
                (
                    1819540,
                    0x000de3bc27000000,
                    "b7d7b48efb4a06cfcb94ca84ed69a4fd5fd09cd9465e16a357f77e1d2388552c",
                ),
                (
                    1319169,
                    0x001f4c32afa00000,
                    "27a54d14fbeb4875798b50ec1ccf06ad97752645dff4cf4468687d3fe1c073a1",
                ),
                (
                    3978,
                    0x0000000000000001,
                    "0b26e5c99a130c03fcad7a23606310cacd48b01dba95764e896ebdc293fa34cd",
                ),
            ],
        );
    }

    #[test]
    fn simple_data_vectors_c() {
        let c = chunker(P);
        const ZERO_CHUNK: &str = "07854d2fef297a06ba81685e660c332de36d5d18d546927d30daad6d7fda1541";
        check_vectors(
            &c,
            &vec![0u8; 1_048_593],
            &[
                (524288, 0, ZERO_CHUNK),
                (524288, 0, ZERO_CHUNK),
                (
                    17,
                    1,
                    "0a88111852095cae045340ea1f0b279944b2a756a213d9b50107d7489771e159",
                ),
            ],
        );
        check_vectors(&c, &vec![0u8; 4 * 524_288], &[(524288, 0, ZERO_CHUNK); 4]);
        check_vectors(
            &c,
            &vec![1u8; 9 << 20],
            &[
                (
                    8388608,
                    0x182bcd15979498,
                    "bb929bbdce85fdbc903a463e96630a25f8b6ef5b76090e24cd92ea8fb47b2f65",
                ),
                (
                    1048576,
                    0x182bcd15979498,
                    "ee78cd29d3a534713b36e6ff6fa3668c8a8f851a542d5eb2401c25ca4e057d02",
                ),
            ],
        );
        assert_eq!(c.chunk_lengths(&vec![0u8; 524_287]), vec![524_287]);
        assert_eq!(c.chunk_lengths(&vec![0u8; 524_288]), vec![524_288]);
        assert_eq!(c.chunk_lengths(&vec![0u8; 524_289]), vec![524_288, 1]);
        assert!(c.chunk_lengths(&[]).is_empty());
    }

    #[test]
    fn first_chunk_len_contract() {
        let c = chunker(P);
        assert_eq!(c.first_chunk_len(&[], true), None);
        assert_eq!(c.first_chunk_len(&[], false), None);
        assert_eq!(c.first_chunk_len(&[7; 10], false), None);
        assert_eq!(c.first_chunk_len(&[7; 10], true), Some(10));
        let ones = vec![1u8; MAX_SIZE + 5];
        assert_eq!(c.first_chunk_len(&ones[..MAX_SIZE - 1], false), None);
        assert_eq!(
            c.first_chunk_len(&ones[..MAX_SIZE - 1], true),
            Some(MAX_SIZE - 1)
        );
        assert_eq!(c.first_chunk_len(&ones[..MAX_SIZE], false), Some(MAX_SIZE));
        assert_eq!(c.first_chunk_len(&ones, false), Some(MAX_SIZE));
        // A cut inside the data is final without eof.
        let zeros = vec![0u8; MIN_SIZE + 1];
        assert_eq!(c.first_chunk_len(&zeros, false), Some(MIN_SIZE));
        assert_eq!(c.next_cut(&zeros, 1, false), Some(MIN_SIZE + 1));
        assert_eq!(c.next_cut(&zeros, 2, false), None);
        assert_eq!(c.next_cut(&zeros, 2, true), Some(MIN_SIZE + 1));
        assert_eq!(c.next_cut(&zeros, MIN_SIZE + 1, true), None);
        assert_eq!(c.next_cut(&zeros, MIN_SIZE + 9, true), None);
    }

    #[test]
    fn streaming_matches_one_shot_on_restic_sizes() {
        let c = chunker(P);
        let data = splitmix(20 << 20, 0);
        let lengths = c.chunk_lengths(&data);
        assert_eq!(streamed(&c, &data, &[1 << 20, 333_333, 3 << 20]), lengths);
        assert_eq!(streamed(&c, &data, &[MIN_SIZE - 1]), lengths);
    }

    /// Small sizes so cuts are frequent and the lane scanner, its group boundaries and
    /// the single-lane tail all get exercised.
    fn small_chunker(min: usize, extra: usize, bits: u32, pol: usize) -> RabinChunker {
        let pols = [
            P,
            P_DESIGN,
            Polynomial(0x2482734cacca49),
            Polynomial(0x3a7013f3d578ed),
        ];
        let t = Arc::new(RabinTables::new(pols[pol % pols.len()]).unwrap());
        RabinChunker::with_sizes(t, min, min + extra, bits).unwrap()
    }

    fn check_invariants(c: &RabinChunker, data: &[u8], pieces: &[usize]) {
        let lengths = c.chunk_lengths(data);
        let want: Vec<usize> = reference(c, data).iter().map(|r| r.0).collect();
        assert_eq!(lengths, want);
        assert_eq!(lengths.iter().sum::<usize>(), data.len());
        if let Some((_, body)) = lengths.split_last() {
            for &l in body {
                assert!(l >= c.min_size() && l <= c.max_size(), "{l} out of bounds");
            }
        }
        assert!(lengths.iter().all(|&l| l > 0 && l <= c.max_size()));
        assert_eq!(streamed(c, data, pieces), lengths);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn matches_restic_state_machine(
            len in 0usize..400_000,
            seed in any::<u64>(),
            min in 64usize..3000,
            extra in 0usize..200_000,
            bits in 4u32..16,
            pol in 0usize..4,
            pieces in proptest::collection::vec(1usize..100_000, 1..6),
        ) {
            let c = small_chunker(min, extra, bits, pol);
            check_invariants(&c, &splitmix(len, seed), &pieces);
        }

        #[test]
        fn low_entropy_data(
            len in 0usize..300_000,
            alphabet in 1u8..4,
            period in 1usize..100,
            seed in any::<u64>(),
            min in 64usize..2000,
            extra in 0usize..100_000,
            bits in 2u32..12,
            pieces in proptest::collection::vec(1usize..50_000, 1..4),
        ) {
            let noise = splitmix(period, seed);
            let data: Vec<u8> = (0..len).map(|i| noise[i % period] % alphabet).collect();
            let c = small_chunker(min, extra, bits, 0);
            check_invariants(&c, &data, &pieces);
        }
    }

    /// Runs restic with a throwaway password and no cache; fails loudly when it is missing.
    fn restic(repo: &std::path::Path, args: &[&str], cwd: &std::path::Path) -> String {
        let out = std::process::Command::new("restic")
            .arg("--repo")
            .arg(repo)
            .args(["--no-cache", "--quiet"])
            .args(args)
            .current_dir(cwd)
            .env("RESTIC_PASSWORD", "mover-rabin-interop")
            .env_remove("RESTIC_REPOSITORY")
            .env_remove("RESTIC_PASSWORD_FILE")
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run `restic` ({e}); the interop test needs restic 0.14: \
                     apt-get install -y restic"
                )
            });
        assert!(
            out.status.success(),
            "restic {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("restic prints UTF-8")
    }

    /// The chunks restic 0.14 stores for a file are exactly the ones this chunker cuts with
    /// the repository's polynomial.
    #[test]
    fn restic_interop_same_blobs() {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("repo");
        // Random data, a repeat of an earlier stretch (deduplicated) and a zero run.
        let mut data = splitmix(14 << 20, 0x5eed);
        data.extend_from_within(3 << 20..6 << 20);
        data.extend(std::iter::repeat_n(0u8, (2 << 20) + 12345));
        data.extend(splitmix(1 << 20, 77));
        std::fs::write(dir.path().join("data.bin"), &data).unwrap();

        restic(&repo, &["init"], dir.path());
        let config: serde_json::Value =
            serde_json::from_str(&restic(&repo, &["cat", "config"], dir.path())).unwrap();
        let pol = config["chunker_polynomial"]
            .as_str()
            .expect("polynomial in config");
        let pol = Polynomial(u64::from_str_radix(pol, 16).unwrap());
        restic(&repo, &["backup", "data.bin"], dir.path());
        let listed = restic(&repo, &["list", "blobs"], dir.path());
        let restic_ids: std::collections::BTreeSet<String> = listed
            .lines()
            .filter_map(|l| l.strip_prefix("data "))
            .map(str::to_owned)
            .collect();

        let c = chunker(pol);
        let mut ours = std::collections::BTreeSet::new();
        let mut pos = 0;
        for len in c.chunk_lengths(&data) {
            ours.insert(sha256_hex(&data[pos..pos + len]));
            pos += len;
        }
        // restic's polynomial is random: chunk sizes vary with it, but ~20 MiB of data in
        // chunks of at most 8 MiB cannot be fewer than three.
        assert!(ours.len() >= 3, "{ours:?}");
        assert_eq!(ours, restic_ids, "polynomial {pol}");
    }
}
