//! Micro benchmarks of the pure CPU primitives on the backup and restore paths: FastCDC
//! chunking, SHA-256 ids, sealing and opening, zstd, and pack assembly. Inputs come from a
//! fixed-seed generator so every run measures the same bytes; nothing here touches the disk
//! or the network. Run with `cargo bench --bench micro`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use mover::chunker::fastcdc::{FastCdcParams, chunk_lengths};
use mover::compress::{CompressionMode, compress, decompress};
use mover::crypto::Key;
use mover::format::{BlobType, Id};
use mover::repo::packer::{PackBuilder, seal_blob};

const MIB: usize = 1 << 20;

/// SplitMix64: tiny, fast and good enough to make incompressible test data.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let bytes = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
    }
}

fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    SplitMix64(seed).fill(&mut buf);
    buf
}

/// Alternating 4 KiB blocks of random bytes and of repetitive text, so zstd gets roughly a
/// 2:1 ratio, like a mix of media and logs.
fn half_compressible(seed: u64, len: usize) -> Vec<u8> {
    const TEXT: &[u8] = b"2024-05-01T12:00:00Z INFO mover: backed up file ok\n";
    let mut rng = SplitMix64(seed);
    let mut buf = vec![0u8; len];
    for (i, block) in buf.chunks_mut(4096).enumerate() {
        if i % 2 == 0 {
            rng.fill(block);
        } else {
            for (b, t) in block.iter_mut().zip(TEXT.iter().cycle()) {
                *b = *t;
            }
        }
    }
    buf
}

fn fixed_key() -> Key {
    Key::from_parts([0x11; 32], [0x22; 16], [0x0f; 16]).expect("constant key parts are nonzero")
}

fn bench_fastcdc(c: &mut Criterion) {
    let data = random_bytes(1, 64 * MIB);
    let params = FastCdcParams::default();
    let mut g = c.benchmark_group("fastcdc");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.bench_function("chunk_lengths/64MiB", |b| {
        b.iter(|| chunk_lengths(black_box(&data), &params))
    });
    g.finish();
}

fn bench_sha256(c: &mut Criterion) {
    let data = random_bytes(2, MIB);
    let mut g = c.benchmark_group("sha256");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.bench_function("id_hash/1MiB", |b| b.iter(|| Id::hash(black_box(&data))));
    g.finish();
}

fn bench_aead(c: &mut Criterion) {
    let key = fixed_key();
    let data = random_bytes(3, MIB);
    let sealed = key.seal(&data);
    let mut g = c.benchmark_group("aead");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.bench_function("seal/1MiB", |b| b.iter(|| key.seal(black_box(&data))));
    g.bench_function("open/1MiB", |b| {
        b.iter(|| key.open(black_box(&sealed)).expect("own seal opens"))
    });
    g.finish();
}

fn bench_zstd(c: &mut Criterion) {
    let data = half_compressible(4, 4 * MIB);
    let mut g = c.benchmark_group("zstd");
    g.throughput(Throughput::Bytes(data.len() as u64));
    for mode in [CompressionMode::Auto, CompressionMode::Max] {
        let (name, level) = (mode.as_str(), mode.zstd_level().expect("compressing mode"));
        g.bench_with_input(BenchmarkId::new("compress", name), &level, |b, &level| {
            b.iter(|| compress(black_box(&data), level))
        });
    }
    for mode in [CompressionMode::Auto, CompressionMode::Max] {
        let (name, level) = (mode.as_str(), mode.zstd_level().expect("compressing mode"));
        let frame = compress(&data, level);
        g.bench_with_input(BenchmarkId::new("decompress", name), &frame, |b, frame| {
            b.iter(|| decompress(black_box(frame), data.len()).expect("own frame decompresses"))
        });
    }
    g.finish();
}

fn bench_pack(c: &mut Criterion) {
    const CHUNKS: usize = 16;
    let key = fixed_key();
    let chunks: Vec<Vec<u8>> = (0..CHUNKS as u64)
        .map(|i| half_compressible(100 + i, MIB))
        .collect();
    let mut g = c.benchmark_group("pack");
    g.throughput(Throughput::Bytes((CHUNKS * MIB) as u64));
    for (name, level) in [("plain", None), ("zstd3", Some(3))] {
        g.bench_with_input(
            BenchmarkId::new("seal_and_finish/16x1MiB", name),
            &level,
            |b, &level| {
                b.iter(|| {
                    let mut pack = PackBuilder::new();
                    for chunk in &chunks {
                        let blob = seal_blob(&key, BlobType::Data, black_box(chunk), level)
                            .expect("1 MiB is below the blob size limit");
                        pack.add(blob).expect("16 blobs fit one pack");
                    }
                    pack.finish(&key)
                })
            },
        );
    }
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}

criterion_group! {
    name = micro;
    config = config();
    targets = bench_fastcdc, bench_sha256, bench_aead, bench_zstd, bench_pack
}
criterion_main!(micro);
