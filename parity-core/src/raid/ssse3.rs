//! SSSE3 kernel: 16 bytes per vector, products by `pshufb` on nibble tables.

use core::arch::x86_64::*;

super::simd::simd_kernel! {
    feature: "ssse3",
    vector: __m128i,
    width: 16,
    table_type: [u8; 32],
    load: |p| _mm_loadu_si128(p.cast()),
    store: |p, v| _mm_storeu_si128(p.cast(), v),
    stream: |p, v| _mm_stream_si128(p.cast(), v),
    xor: |a, b| _mm_xor_si128(a, b),
    or: |a, b| _mm_or_si128(a, b),
    zero: _mm_setzero_si128(),
    split: |x| (
        _mm_and_si128(x, _mm_set1_epi8(0x0f)),
        _mm_and_si128(_mm_srli_epi64(x, 4), _mm_set1_epi8(0x0f)),
    ),
    table: |t| (
        _mm_loadu_si128((*t).as_ptr().cast()),
        _mm_loadu_si128((*t).as_ptr().add(16).cast()),
    ),
    mul: |s, t| _mm_xor_si128(_mm_shuffle_epi8(t.0, s.0), _mm_shuffle_epi8(t.1, s.1)),
    pairs: false,
}
