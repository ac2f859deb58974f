//! GFNI kernel: 64 bytes per vector, one `gf2p8affineqb` per coefficient. The
//! instruction applies an 8x8 bit matrix to every byte; the matrix of "multiply by c
//! in the 0x11d field" is prepared per coefficient (`gf::affine_matrix`).

use core::arch::x86_64::*;

super::simd::simd_kernel! {
    feature: "gfni,avx512f,avx512bw",
    vector: __m512i,
    width: 64,
    table_type: u64,
    load: |p| _mm512_loadu_si512(p.cast()),
    store: |p, v| _mm512_storeu_si512(p.cast(), v),
    stream: |p, v| _mm512_stream_si512(p.cast(), v),
    xor: |a, b| _mm512_xor_si512(a, b),
    or: |a, b| _mm512_or_si512(a, b),
    zero: _mm512_setzero_si512(),
    split: |x| x,
    table: |t| _mm512_set1_epi64(*t as i64),
    mul: |s, t| _mm512_gf2p8affine_epi64_epi8::<0>(s, t),
    pairs: true,
}
