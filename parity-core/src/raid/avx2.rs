//! AVX2 kernel: 32 bytes per vector, products by `vpshufb` on nibble tables
//! broadcast to both 128-bit lanes.

use core::arch::x86_64::*;

super::simd::simd_kernel! {
    feature: "avx2",
    vector: __m256i,
    width: 32,
    table_type: [u8; 32],
    load: |p| _mm256_loadu_si256(p.cast()),
    store: |p, v| _mm256_storeu_si256(p.cast(), v),
    stream: |p, v| _mm256_stream_si256(p.cast(), v),
    xor: |a, b| _mm256_xor_si256(a, b),
    or: |a, b| _mm256_or_si256(a, b),
    zero: _mm256_setzero_si256(),
    split: |x| (
        _mm256_and_si256(x, _mm256_set1_epi8(0x0f)),
        _mm256_and_si256(_mm256_srli_epi64(x, 4), _mm256_set1_epi8(0x0f)),
    ),
    table: |t| (
        _mm256_broadcastsi128_si256(_mm_loadu_si128((*t).as_ptr().cast())),
        _mm256_broadcastsi128_si256(_mm_loadu_si128((*t).as_ptr().add(16).cast())),
    ),
    mul: |s, t| _mm256_xor_si256(_mm256_shuffle_epi8(t.0, s.0), _mm256_shuffle_epi8(t.1, s.1)),
    pairs: false,
}
