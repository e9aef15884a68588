//! Chunker throughput: restic's Rabin chunker and FastCDC, sequential and on all cores with
//! `parallel_chunk_lengths`, over 64 MiB of seeded random data. Pure CPU; nothing touches
//! the disk. Run with `cargo bench --bench chunkers`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mover::chunker::fastcdc::{FastCdcParams, chunk_lengths};
use mover::chunker::parallel::parallel_chunk_lengths;
use mover::chunker::polynomial::Polynomial;
use mover::chunker::rabin::RabinChunker;

const MIB: usize = 1 << 20;
const SEGMENT_BYTES: usize = 8 * MIB;

/// SplitMix64 bytes: incompressible and the same on every run.
fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(len);
    out
}

fn chunkers(c: &mut Criterion) {
    let data = random_bytes(42, 64 * MIB);
    let rabin = RabinChunker::new(Polynomial(0x003D_A335_8B4D_C173)).expect("irreducible");
    let fastcdc = FastCdcParams::default();

    let mut group = c.benchmark_group("chunk_64MiB");
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(5));
    group.throughput(Throughput::Bytes(data.len() as u64));
    group.bench_function("rabin_sequential", |b| {
        b.iter(|| black_box(rabin.chunk_lengths(black_box(&data))))
    });
    group.bench_function("fastcdc_sequential", |b| {
        b.iter(|| black_box(chunk_lengths(black_box(&data), &fastcdc)))
    });
    group.bench_function("rabin_parallel", |b| {
        b.iter(|| {
            black_box(parallel_chunk_lengths(
                &rabin,
                black_box(&data),
                true,
                SEGMENT_BYTES,
            ))
        })
    });
    group.bench_function("fastcdc_parallel", |b| {
        b.iter(|| {
            black_box(parallel_chunk_lengths(
                &fastcdc,
                black_box(&data),
                true,
                SEGMENT_BYTES,
            ))
        })
    });
    group.finish();
}

criterion_group!(benches, chunkers);
criterion_main!(benches);
