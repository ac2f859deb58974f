//! The generator matrix A (SnapRAID's "Cauchy RAID" matrix) and the small dense
//! matrix algebra recovery needs.
//!
//! Row r is parity level r + 1, column i the data disk with index i:
//! level 1 is all ones (XOR), level 2 is 2^i (RAID-6 Q), levels 3..6 are the Cauchy
//! rows (1 + y) / (2^-i + y) with y = 2, 4, 8, 16, scaled so column 0 is 1. Stacked on
//! the identity, every square submatrix is invertible (MDS), which is what makes any
//! set of up to six lost blocks recoverable.

use super::gf;
use super::{MAX_DATA, MAX_PARITY};

/// The generator matrix, computed at compile time.
pub static GENERATOR: [[u8; MAX_DATA]; MAX_PARITY] = {
    let mut a = [[0u8; MAX_DATA]; MAX_PARITY];
    let mut i = 0;
    while i < MAX_DATA {
        a[0][i] = 1;
        a[1][i] = gf::pow2(i as i32);
        let mut r = 2;
        while r < MAX_PARITY {
            let y = gf::pow2(r as i32 - 1);
            let x = gf::pow2(-(i as i32));
            a[r][i] = gf::div(1 ^ y, x ^ y);
            r += 1;
        }
        i += 1;
    }
    a
};

/// The coefficient of data disk `disk` in parity level `level` (0-based both).
pub fn coefficient(level: usize, disk: usize) -> u8 {
    GENERATOR[level][disk]
}

/// Inverts the `n x n` matrix `m` (row-major) over GF(2^8) by Gauss-Jordan with row
/// pivoting. Returns `None` when it is singular, which the MDS property rules out for
/// every submatrix recovery builds; the check keeps a bug from turning into garbage.
pub fn invert(m: &[u8], n: usize) -> Option<Vec<u8>> {
    debug_assert_eq!(m.len(), n * n);
    let mut a = m.to_vec();
    let mut b = vec![0u8; n * n];
    for i in 0..n {
        b[i * n + i] = 1;
    }
    for col in 0..n {
        let pivot = (col..n).find(|&r| a[r * n + col] != 0)?;
        if pivot != col {
            for k in 0..n {
                a.swap(pivot * n + k, col * n + k);
                b.swap(pivot * n + k, col * n + k);
            }
        }
        let scale = gf::inv(a[col * n + col]);
        for k in 0..n {
            a[col * n + k] = gf::mul(a[col * n + k], scale);
            b[col * n + k] = gf::mul(b[col * n + k], scale);
        }
        for r in 0..n {
            let f = a[r * n + col];
            if r == col || f == 0 {
                continue;
            }
            for k in 0..n {
                a[r * n + k] ^= gf::mul(f, a[col * n + k]);
                b[r * n + k] ^= gf::mul(f, b[col * n + k]);
            }
        }
    }
    Some(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_columns_match_the_published_table() {
        let want: [[u8; 5]; 6] = [
            [0x01, 0x01, 0x01, 0x01, 0x01],
            [0x01, 0x02, 0x04, 0x08, 0x10],
            [0x01, 0xf5, 0xd2, 0xc4, 0x9a],
            [0x01, 0xbb, 0xa6, 0xd7, 0xc7],
            [0x01, 0x97, 0x7f, 0x9c, 0x7c],
            [0x01, 0x2b, 0x3f, 0xcf, 0x73],
        ];
        for (r, row) in want.iter().enumerate() {
            assert_eq!(&GENERATOR[r][..5], row, "level {}", r + 1);
        }
    }

    #[test]
    fn inverse_times_matrix_is_identity() {
        // The 6 x 6 submatrix of the first six disks.
        let mut m = Vec::new();
        for row in GENERATOR.iter() {
            m.extend_from_slice(&row[..6]);
        }
        let v = invert(&m, 6).expect("MDS submatrix is invertible");
        for i in 0..6 {
            for j in 0..6 {
                let mut s = 0u8;
                for k in 0..6 {
                    s ^= gf::mul(v[i * 6 + k], m[k * 6 + j]);
                }
                assert_eq!(s, u8::from(i == j));
            }
        }
    }

    #[test]
    fn singular_matrix_is_refused() {
        assert_eq!(invert(&[1, 1, 1, 1], 2), None);
        assert_eq!(invert(&[0], 1), None);
    }
}
