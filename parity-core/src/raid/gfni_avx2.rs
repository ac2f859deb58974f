//! GFNI kernel for CPUs without AVX-512 (Intel Atom-class cores such as the N100,
//! Alder Lake and later client CPUs): 32 bytes per vector, one VEX-encoded
//! `gf2p8affineqb` per coefficient, with the same affine matrices as the 512-bit
//! kernel (`gf::affine_matrix`).

use core::arch::x86_64::*;

super::simd::simd_kernel! {
    feature: "gfni,avx2",
    vector: __m256i,
    width: 32,
    table_type: u64,
    load: |p| _mm256_loadu_si256(p.cast()),
    store: |p, v| _mm256_storeu_si256(p.cast(), v),
    stream: |p, v| _mm256_stream_si256(p.cast(), v),
    xor: |a, b| _mm256_xor_si256(a, b),
    or: |a, b| _mm256_or_si256(a, b),
    zero: _mm256_setzero_si256(),
    split: |x| x,
    table: |t| _mm256_set1_epi64x(*t as i64),
    mul: |s, t| _mm256_gf2p8affine_epi64_epi8::<0>(s, t),
    pairs: false,
}
