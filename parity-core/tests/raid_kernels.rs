//! Every kernel against the scalar reference, and recovery of every combination of
//! lost blocks.

use parity_core::raid::{
    generate_with, gf_div, gf_inv, gf_mul, recover_data_with, recover_with, verify_with, Kernel,
    RaidError,
};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// A stripe carved out of one allocation at an odd offset, so no block is aligned.
struct Stripe {
    buf: Vec<u8>,
    len: usize,
    count: usize,
    offset: usize,
}

impl Stripe {
    fn random(rng: &mut SmallRng, count: usize, len: usize) -> Stripe {
        let offset = 1 + rng.gen_range(0..63);
        let mut buf = vec![0u8; offset + count * (len + 7)];
        rng.fill(&mut buf[..]);
        Stripe {
            buf,
            len,
            count,
            offset,
        }
    }

    fn blocks(&self) -> Vec<&[u8]> {
        (0..self.count)
            .map(|i| {
                let s = self.offset + i * (self.len + 7);
                &self.buf[s..s + self.len]
            })
            .collect()
    }

    fn blocks_mut(&mut self) -> Vec<&mut [u8]> {
        let (len, offset) = (self.len, self.offset);
        let mut rest = &mut self.buf[offset..];
        let mut out = Vec::with_capacity(self.count);
        for _ in 0..self.count {
            let (block, tail) = rest.split_at_mut(len + 7);
            out.push(&mut block[..len]);
            rest = tail;
        }
        out
    }
}

fn parity_of(kernel: Kernel, data: &[&[u8]], np: usize) -> Vec<Vec<u8>> {
    let len = data[0].len();
    let mut parity = vec![vec![0xa5u8; len]; np];
    let mut refs: Vec<&mut [u8]> = parity.iter_mut().map(|p| p.as_mut_slice()).collect();
    generate_with(kernel, data, &mut refs).expect("generate");
    parity
}

#[test]
fn every_kernel_equals_scalar_on_random_stripes() {
    let mut rng = SmallRng::seed_from_u64(0x1f5);
    let kernels = Kernel::available();
    assert!(kernels.contains(&Kernel::Scalar));
    let mut cases: Vec<(usize, usize)> = Vec::new();
    for nd in 1..=24 {
        cases.push((nd, 64 * rng.gen_range(1..=64)));
    }
    for len in [64, 128, 192, 4096, 65536 + 64, 1 << 20] {
        cases.push((rng.gen_range(1..=24), len));
    }
    cases.push((251, 64 * 33));
    cases.push((251, 256 * 1024));
    for (nd, len) in cases {
        let stripe = Stripe::random(&mut rng, nd, len);
        let data = stripe.blocks();
        for np in 1..=6 {
            let want = parity_of(Kernel::Scalar, &data, np);
            for &kernel in &kernels {
                let got = parity_of(kernel, &data, np);
                for level in 0..np {
                    assert!(
                        got[level] == want[level],
                        "{kernel}: nd={nd} len={len} np={np} level {} differs",
                        level + 1
                    );
                }
            }
        }
    }
}

#[test]
fn verify_finds_exactly_the_levels_that_differ() {
    let mut rng = SmallRng::seed_from_u64(0x7e51);
    let kernels = Kernel::available();
    let level_sets: [&[usize]; 6] = [&[0], &[1], &[0, 1], &[1, 2], &[2, 5], &[0, 1, 2, 3, 4, 5]];
    let mut cases: Vec<(usize, usize)> = vec![(1, 64), (2, 128), (16, 4096), (17, 4096)];
    for len in [64, 192, 65536 + 64, 256 * 1024] {
        cases.push((rng.gen_range(1..=24), len));
    }
    cases.push((251, 64 * 33));
    for (nd, len) in cases {
        let stripe = Stripe::random(&mut rng, nd, len);
        let data = stripe.blocks();
        let full = parity_of(Kernel::Scalar, &data, 6);
        for levels in level_sets {
            let mut stored = Stripe::random(&mut rng, levels.len(), len);
            for (block, &level) in stored.blocks_mut().into_iter().zip(levels) {
                block.copy_from_slice(&full[level]);
            }
            for &kernel in &kernels {
                let check = |stored: &Stripe| {
                    verify_with(kernel, &data, levels, &stored.blocks()).expect("verify")
                };
                let what = format!("{kernel}: nd={nd} len={len} levels={levels:?}");
                assert_eq!(check(&stored), vec![false; levels.len()], "{what}");
                // One flipped bit anywhere in one level is found, in that level only.
                for k in 0..levels.len() {
                    for at in [0, len - 1, rng.gen_range(0..len)] {
                        let bit = 1u8 << rng.gen_range(0..8);
                        stored.blocks_mut()[k][at] ^= bit;
                        let mut want = vec![false; levels.len()];
                        want[k] = true;
                        assert_eq!(check(&stored), want, "{what} k={k} at={at}");
                        stored.blocks_mut()[k][at] ^= bit;
                    }
                }
            }
        }
    }
}

#[test]
fn verify_refuses_bad_shapes() {
    let block = vec![0u8; 64];
    let data: Vec<&[u8]> = vec![&block; 3];
    let short = vec![0u8; 128];
    let k = Kernel::Scalar;
    assert!(verify_with(k, &data, &[0], &[&short]).is_err(), "length");
    assert!(verify_with(k, &data, &[6], &[&block]).is_err(), "level 7");
    assert_eq!(
        verify_with(k, &data, &[0, 1], &[&block]),
        Err(RaidError::LevelCount {
            levels: 2,
            blocks: 1
        }),
        "count"
    );
    assert!(verify_with(k, &[], &[0], &[&block]).is_err(), "no data");
}

#[test]
fn unaligned_parity_outputs_are_written_exactly() {
    let mut rng = SmallRng::seed_from_u64(7);
    let data_stripe = Stripe::random(&mut rng, 5, 640);
    let data = data_stripe.blocks();
    let want = parity_of(Kernel::Scalar, &data, 6);
    for kernel in Kernel::available() {
        let mut out = Stripe::random(&mut rng, 6, 640);
        let before = out.buf.clone();
        generate_with(kernel, &data, &mut out.blocks_mut()).expect("generate");
        for (level, block) in out.blocks().iter().enumerate() {
            assert_eq!(
                *block,
                want[level].as_slice(),
                "{kernel} level {}",
                level + 1
            );
        }
        // Bytes between and around the blocks are untouched.
        let covered: Vec<bool> = {
            let mut c = vec![false; out.buf.len()];
            for i in 0..6 {
                let s = out.offset + i * (640 + 7);
                c[s..s + 640].iter_mut().for_each(|b| *b = true);
            }
            c
        };
        for (i, (&b, &a)) in before.iter().zip(&out.buf).enumerate() {
            if !covered[i] {
                assert_eq!(a, b, "{kernel} wrote outside the blocks at byte {i}");
            }
        }
    }
}

/// Every subset of `0..n` with `1..=max` elements.
fn subsets(n: usize, max: usize) -> Vec<Vec<usize>> {
    let mut out = Vec::new();
    for mask in 1u32..(1 << n) {
        if mask.count_ones() as usize <= max {
            out.push((0..n).filter(|i| mask >> i & 1 == 1).collect());
        }
    }
    out
}

/// Loses `lost` (wipes them with noise), recovers, and checks the bytes.
fn check_recovery(
    kernel: Kernel,
    nd: usize,
    stripe: &[Vec<u8>],
    lost: &[usize],
    rng: &mut SmallRng,
) {
    let mut work: Vec<Vec<u8>> = stripe.to_vec();
    for &i in lost {
        rng.fill(&mut work[i][..]);
    }
    let mut refs: Vec<&mut [u8]> = work.iter_mut().map(|b| b.as_mut_slice()).collect();
    recover_with(kernel, nd, lost, &mut refs).expect("recover");
    for &i in lost {
        assert!(
            work[i] == stripe[i],
            "{kernel}: nd={nd} lost={lost:?}: block {i} wrong"
        );
    }
}

fn full_stripe(rng: &mut SmallRng, nd: usize, np: usize, len: usize) -> Vec<Vec<u8>> {
    let mut data: Vec<Vec<u8>> = (0..nd)
        .map(|_| {
            let mut b = vec![0u8; len];
            rng.fill(&mut b[..]);
            b
        })
        .collect();
    let refs: Vec<&[u8]> = data.iter().map(|b| b.as_slice()).collect();
    let parity = parity_of(Kernel::Scalar, &refs, np);
    data.extend(parity);
    data
}

#[test]
fn every_combination_of_lost_blocks_is_recovered_for_small_arrays() {
    let mut rng = SmallRng::seed_from_u64(42);
    let kernels = Kernel::available();
    let mut combinations = 0;
    for nd in 1..=8 {
        for np in 1..=6 {
            let stripe = full_stripe(&mut rng, nd, np, 128);
            for lost in subsets(nd + np, np) {
                for &kernel in &kernels {
                    check_recovery(kernel, nd, &stripe, &lost, &mut rng);
                }
                combinations += 1;
            }
        }
    }
    // sum over nd 1..=8, np 1..=6 of the subsets of size 1..=np: a fixed count.
    assert!(combinations > 20_000, "only {combinations} combinations");
}

#[test]
fn random_combinations_are_recovered_for_wide_arrays() {
    let mut rng = SmallRng::seed_from_u64(4242);
    let kernel = Kernel::selected().expect("kernel");
    for nd in [24usize, 251] {
        let np = 6;
        let stripe = full_stripe(&mut rng, nd, np, 64);
        for _ in 0..10_000 {
            let count = rng.gen_range(1..=np);
            let mut lost: Vec<usize> = Vec::new();
            while lost.len() < count {
                let i = rng.gen_range(0..nd + np);
                if !lost.contains(&i) {
                    lost.push(i);
                }
            }
            check_recovery(kernel, nd, &stripe, &lost, &mut rng);
        }
    }
}

#[test]
fn recovery_with_chosen_parity_levels() {
    let mut rng = SmallRng::seed_from_u64(9);
    let (nd, np) = (7, 6);
    let stripe = full_stripe(&mut rng, nd, np, 192);
    let lost = [1usize, 4];
    for levels in [[1usize, 2], [5, 0], [3, 4]] {
        for kernel in Kernel::available() {
            let mut work = stripe.clone();
            for &i in &lost {
                work[i].fill(0);
            }
            let mut refs: Vec<&mut [u8]> = work.iter_mut().map(|b| b.as_mut_slice()).collect();
            recover_data_with(kernel, nd, &lost, &levels, &mut refs).expect("recover");
            assert!(work == stripe, "{kernel} with levels {levels:?}");
        }
    }
    let mut refs: Vec<Vec<u8>> = stripe.clone();
    let mut refs: Vec<&mut [u8]> = refs.iter_mut().map(|b| b.as_mut_slice()).collect();
    assert!(matches!(
        recover_data_with(Kernel::Scalar, nd, &lost, &[2, 2], &mut refs),
        Err(RaidError::ParityChoice { .. })
    ));
}

#[test]
fn more_lost_blocks_than_parity_is_an_error_and_writes_nothing() {
    let mut rng = SmallRng::seed_from_u64(3);
    for np in 1..=6 {
        let stripe = full_stripe(&mut rng, 5, np, 64);
        let mut work = stripe.clone();
        let lost: Vec<usize> = (0..=np).collect();
        let mut refs: Vec<&mut [u8]> = work.iter_mut().map(|b| b.as_mut_slice()).collect();
        let err = recover_with(Kernel::Scalar, 5, &lost, &mut refs).unwrap_err();
        assert_eq!(
            err,
            RaidError::TooManyLost {
                lost: np + 1,
                parity: np
            }
        );
        assert!(err
            .to_string()
            .contains(&format!("only {np} parity levels")));
        assert!(work == stripe, "a refused recovery changed the stripe");
    }
}

#[test]
fn bad_shapes_are_refused() {
    let a = vec![0u8; 64];
    let b = vec![0u8; 100];
    let mut p = [0u8; 64];
    assert_eq!(
        generate_with(Kernel::Scalar, &[&a, &a], &mut [&mut p[..]; 0]).unwrap_err(),
        RaidError::ParityLevels { levels: 0 }
    );
    assert!(matches!(
        generate_with(Kernel::Scalar, &[&a, &b[..64], &b], &mut [&mut p[..]]).unwrap_err(),
        RaidError::BlockLength {
            index: 2,
            len: 100,
            expected: 64
        }
    ));
    let odd = vec![0u8; 100];
    let mut po = [0u8; 100];
    assert_eq!(
        generate_with(Kernel::Scalar, &[&odd], &mut [&mut po[..]]).unwrap_err(),
        RaidError::BlockMultiple { len: 100 }
    );
    let many: Vec<&[u8]> = vec![&a[..]; 252];
    assert_eq!(
        generate_with(Kernel::Scalar, &many, &mut [&mut p[..]]).unwrap_err(),
        RaidError::DataDisks { disks: 252 }
    );
}

#[test]
fn unknown_or_unavailable_kernel_names_are_clear_errors() {
    let err = "neon".parse::<Kernel>().unwrap_err();
    assert!(
        err.to_string().contains("unknown parity kernel `neon`"),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("scalar, ssse3, avx2, avx512, gfni"),
        "{err}"
    );
    for kernel in Kernel::ALL {
        match kernel.require() {
            Ok(k) => assert!(k.is_available()),
            Err(e) => assert!(e.to_string().contains("not supported by this CPU"), "{e}"),
        }
    }
}

/// reed-solomon-erasure implements the same field (0x11d) independently.
#[test]
fn field_arithmetic_agrees_with_reed_solomon_erasure() {
    use reed_solomon_erasure::galois_8 as rs;
    for a in 0..=255u8 {
        for b in 0..=255u8 {
            assert_eq!(gf_mul(a, b), rs::mul(a, b), "{a} * {b}");
            if b != 0 {
                assert_eq!(gf_div(a, b), rs::div(a, b), "{a} / {b}");
            }
        }
        if a != 0 {
            assert_eq!(gf_inv(a), rs::div(1, a), "1 / {a}");
        }
    }
}
