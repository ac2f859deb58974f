//! Block hashes (keyed BLAKE3, `parity_core::hash::block_hash`), in bytes hashed per
//! second on one thread: one 256 KiB block over and over (in cache) and 1 GiB of
//! blocks in turn (from memory, as `scrub` and `check` hash a warm array). Every data
//! byte a scrub verifies goes through this, so it bounds scrub per core.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use parity_core::hash::block_hash;
use std::hint::black_box;
use std::time::Duration;

const BLOCK: usize = 256 << 10;
const MEMORY: usize = 1 << 30;

fn bench(c: &mut Criterion) {
    let key = [7u8; 32];
    let mut bytes = vec![0u8; MEMORY];
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    for chunk in bytes.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    let mut group = c.benchmark_group("block-hash");
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(5));
    group.throughput(Throughput::Bytes(BLOCK as u64));
    group.bench_function("256KiB-in-cache", |b| {
        b.iter(|| block_hash(&key, black_box(&bytes[..BLOCK])))
    });
    group.sample_size(10);
    group.throughput(Throughput::Bytes(MEMORY as u64));
    group.bench_function("1GiB-from-memory", |b| {
        b.iter(|| {
            let mut last = [0u8; 16];
            for block in bytes.chunks(BLOCK) {
                last = block_hash(&key, black_box(block));
            }
            last
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
