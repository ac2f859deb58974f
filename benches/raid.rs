//! Parity kernel throughput, one thread, in bytes of data per second: generation of
//! 1..=6 levels and recovery of 1..=6 lost data blocks over 8 data blocks, both
//! cache-resident (256 KiB blocks, as `snapraid -T`) and memory-bound (4 MiB blocks).
//! memcpy of the same bytes is the ceiling; reed-solomon-erasure (SIMD build) encoding
//! the same shape is the baseline. `verify` checks stored parity in one pass (what
//! scrub and check do per position) against generating and comparing (`gen-cmp`).
//! `LHPARITY_KERNEL` picks the kernel under test.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use parity_core::raid::{generate_with, recover_data_with, verify_with, Kernel};
use reed_solomon_erasure::galois_8::ReedSolomon;
use std::hint::black_box;
use std::time::Duration;

const DISKS: usize = 8;
const SHAPES: [(&str, usize); 2] = [("8x256KiB", 256 * 1024), ("8x4MiB", 4 * 1024 * 1024)];

fn stripe(block: usize) -> Vec<Vec<u8>> {
    (0..DISKS + 6)
        .map(|d| {
            (0..block)
                .map(|i| (i * 31 + d * 7 + (i >> 9)) as u8)
                .collect()
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let kernel = match Kernel::selected() {
        Ok(k) => k,
        Err(e) => panic!("{e}"),
    };
    for (shape, block) in SHAPES {
        let mut blocks = stripe(block);
        let mut group = c.benchmark_group(format!("raid/{shape}"));
        group.throughput(Throughput::Bytes((DISKS * block) as u64));
        group.warm_up_time(Duration::from_millis(500));
        group.measurement_time(Duration::from_secs(2));
        group.sample_size(20);

        group.bench_function("memcpy", |b| {
            let src: Vec<u8> = blocks[..DISKS].concat();
            let mut dst = vec![0u8; src.len()];
            b.iter(|| dst.copy_from_slice(black_box(&src)))
        });
        for np in 1..=6 {
            group.bench_function(BenchmarkId::new(format!("gen-{kernel}"), np), |b| {
                let (data, parity) = blocks.split_at_mut(DISKS);
                let data: Vec<&[u8]> = data.iter().map(|d| d.as_slice()).collect();
                let mut parity: Vec<&mut [u8]> =
                    parity[..np].iter_mut().map(|p| p.as_mut_slice()).collect();
                b.iter(|| generate_with(kernel, black_box(&data), &mut parity))
            });
            group.bench_function(BenchmarkId::new(format!("rec-{kernel}"), np), |b| {
                let lost: Vec<usize> = (0..np).collect();
                let levels: Vec<usize> = (0..np).collect();
                let mut refs: Vec<&mut [u8]> =
                    blocks.iter_mut().map(|p| p.as_mut_slice()).collect();
                b.iter(|| recover_data_with(kernel, DISKS, &lost, &levels, &mut refs))
            });
            // What scrub does per position: check stored parity, fused or as
            // generate-then-compare.
            group.bench_function(BenchmarkId::new(format!("verify-{kernel}"), np), |b| {
                let (data, parity) = blocks.split_at_mut(DISKS);
                let data: Vec<&[u8]> = data.iter().map(|d| d.as_slice()).collect();
                let mut stored: Vec<&mut [u8]> =
                    parity[..np].iter_mut().map(|p| p.as_mut_slice()).collect();
                if let Err(e) = generate_with(kernel, &data, &mut stored) {
                    panic!("{e}");
                }
                let stored: Vec<&[u8]> = stored.into_iter().map(|p| &*p).collect();
                let levels: Vec<usize> = (0..np).collect();
                b.iter(|| verify_with(kernel, black_box(&data), &levels, &stored))
            });
            group.bench_function(BenchmarkId::new(format!("gen-cmp-{kernel}"), np), |b| {
                let (data, parity) = blocks.split_at_mut(DISKS);
                let data: Vec<&[u8]> = data.iter().map(|d| d.as_slice()).collect();
                let mut want = vec![vec![0u8; block]; np];
                let stored: Vec<Vec<u8>> = parity[..np].to_vec();
                b.iter(|| {
                    let mut refs: Vec<&mut [u8]> =
                        want.iter_mut().map(|w| w.as_mut_slice()).collect();
                    let _ = generate_with(kernel, black_box(&data), &mut refs);
                    want.iter().zip(&stored).filter(|(w, s)| w != s).count()
                })
            });
            group.bench_function(BenchmarkId::new("reed-solomon-erasure", np), |b| {
                let rs = match ReedSolomon::new(DISKS, np) {
                    Ok(rs) => rs,
                    Err(e) => panic!("{e:?}"),
                };
                let (data, parity) = blocks.split_at_mut(DISKS);
                let data: Vec<&[u8]> = data.iter().map(|d| d.as_slice()).collect();
                let mut parity: Vec<&mut [u8]> =
                    parity[..np].iter_mut().map(|p| p.as_mut_slice()).collect();
                b.iter(|| rs.encode_sep(black_box(&data), &mut parity))
            });
        }
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
