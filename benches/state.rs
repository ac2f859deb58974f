//! Content file encode and decode of a 10-million-block state (4 disks of 2,500 files
//! of 1,000 blocks, laid out as after a sync), in bytes of content file per second.
//! Also prints the encoded size and the state's heap bytes per block.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use parity_core::state::{decode, encode, Disk, Extent, FileEntry, State};
use std::hint::black_box;
use std::time::Duration;

#[path = "../parity-core/src/state/synthetic.rs"]
mod synthetic;

fn bench(c: &mut Criterion) {
    let state = synthetic::large_state(4, 2500, 1000);
    let blocks = state.block_count() as f64;
    let bytes = encode(&state);
    let (data, names) = synthetic::heap_bytes(&state);
    println!(
        "state: {} blocks, content file {} bytes ({:.2} bytes/block), in memory {:.2} \
         bytes/block + {names} bytes of names",
        state.block_count(),
        bytes.len(),
        bytes.len() as f64 / blocks,
        data as f64 / blocks,
    );

    let mut group = c.benchmark_group("state/10M-blocks");
    group.throughput(Throughput::Bytes(bytes.len() as u64));
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(10));
    group.bench_function("encode", |b| b.iter(|| encode(black_box(&state))));
    group.bench_function("decode", |b| {
        b.iter(|| match decode(black_box(&bytes)) {
            Ok(decoded) => decoded,
            Err(e) => panic!("{e}"),
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
