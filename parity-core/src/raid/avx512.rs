//! AVX-512BW kernel: 64 bytes per vector, products by `vpshufb` on nibble tables
//! broadcast to all four 128-bit lanes.

use core::arch::x86_64::*;

super::simd::simd_kernel! {
    feature: "avx512f,avx512bw",
    vector: __m512i,
    width: 64,
    table_type: [u8; 32],
    load: |p| _mm512_loadu_si512(p.cast()),
    store: |p, v| _mm512_storeu_si512(p.cast(), v),
    stream: |p, v| _mm512_stream_si512(p.cast(), v),
    xor: |a, b| _mm512_xor_si512(a, b),
    or: |a, b| _mm512_or_si512(a, b),
    zero: _mm512_setzero_si512(),
    split: |x| (
        _mm512_and_si512(x, _mm512_set1_epi8(0x0f)),
        _mm512_and_si512(_mm512_srli_epi64(x, 4), _mm512_set1_epi8(0x0f)),
    ),
    table: |t| (
        _mm512_broadcast_i32x4(_mm_loadu_si128((*t).as_ptr().cast())),
        _mm512_broadcast_i32x4(_mm_loadu_si128((*t).as_ptr().add(16).cast())),
    ),
    mul: |s, t| _mm512_xor_si512(_mm512_shuffle_epi8(t.0, s.0), _mm512_shuffle_epi8(t.1, s.1)),
    pairs: true,
}
