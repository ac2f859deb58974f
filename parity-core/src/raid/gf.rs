//! Arithmetic in GF(2^8) with the polynomial x^8 + x^4 + x^3 + x^2 + 1 (0x11d) and
//! generator 2, the field of Linux RAID-6 and SnapRAID.
//!
//! Everything here is `const`, computed at compile time: the log/exp tables, the full
//! 256 x 256 multiplication table used by the scalar kernel, and the helpers the SIMD
//! kernels use to build their per-coefficient tables.

/// The reduction polynomial without its x^8 term.
const POLY: u8 = 0x1d;

/// `EXP[i] = 2^i`, doubled in length so that `EXP[log a + log b]` needs no modulo.
pub const EXP: [u8; 512] = {
    let mut t = [0u8; 512];
    let mut v: u8 = 1;
    let mut i = 0;
    while i < 512 {
        t[i] = v;
        v = mul2(v);
        i += 1;
    }
    t
};

/// `LOG[a]` for a != 0; `LOG[0]` is unused (0).
pub const LOG: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 255 {
        t[EXP[i] as usize] = i as u8;
        i += 1;
    }
    t
};

/// The full multiplication table: `MUL[a][b] = a * b`. 64 KiB, the scalar kernel's
/// only tool.
pub static MUL: [[u8; 256]; 256] = {
    let mut t = [[0u8; 256]; 256];
    let mut a = 0;
    while a < 256 {
        let mut b = 0;
        while b < 256 {
            t[a][b] = mul(a as u8, b as u8);
            b += 1;
        }
        a += 1;
    }
    t
};

/// Multiplies by 2 (the generator): shift left and reduce.
pub const fn mul2(v: u8) -> u8 {
    let carry = v & 0x80 != 0;
    let v = v << 1;
    if carry {
        v ^ POLY
    } else {
        v
    }
}

/// `a * b` in the field.
pub const fn mul(a: u8, b: u8) -> u8 {
    if a == 0 || b == 0 {
        return 0;
    }
    EXP[LOG[a as usize] as usize + LOG[b as usize] as usize]
}

/// The multiplicative inverse of `a`. `inv(0)` is 0 (0 has no inverse; callers never
/// ask for it because the matrices they invert are MDS).
pub const fn inv(a: u8) -> u8 {
    if a == 0 {
        return 0;
    }
    EXP[255 - LOG[a as usize] as usize]
}

/// `a / b`; `b` must be non-zero.
pub const fn div(a: u8, b: u8) -> u8 {
    mul(a, inv(b))
}

/// `2^e` for any exponent, negative ones included.
pub const fn pow2(e: i32) -> u8 {
    EXP[e.rem_euclid(255) as usize]
}

/// The two 16-entry tables of the nibble method: `lo[x] = c * x`, `hi[x] = c * (x << 4)`,
/// so that `c * b = lo[b & 15] ^ hi[b >> 4]`.
pub const fn nibble_tables(c: u8) -> [[u8; 16]; 2] {
    let mut t = [[0u8; 16]; 2];
    let mut x = 0;
    while x < 16 {
        t[0][x] = mul(c, x as u8);
        t[1][x] = mul(c, (x as u8) << 4);
        x += 1;
    }
    t
}

/// The 8x8 bit matrix of "multiply by `c`" in the layout of `gf2p8affineqb`: output bit
/// `i` is the parity of `x & byte[7 - i]`, so byte `7 - i` collects, for every input bit
/// `j`, bit `i` of `c * 2^j`. (GFNI's own multiply uses the AES field 0x11b and would
/// give different parity.)
pub const fn affine_matrix(c: u8) -> u64 {
    let mut m = 0u64;
    let mut i = 0;
    while i < 8 {
        let mut row = 0u8;
        let mut j = 0;
        while j < 8 {
            if (mul(c, 1 << j) >> i) & 1 == 1 {
                row |= 1 << j;
            }
            j += 1;
        }
        m |= (row as u64) << (8 * (7 - i));
        i += 1;
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generator_has_order_255() {
        let mut v = 1u8;
        for i in 1..=255 {
            v = mul2(v);
            assert_eq!(v == 1, i == 255, "2^{i} = {v:#x}");
        }
    }

    #[test]
    fn every_nonzero_element_has_an_inverse() {
        for a in 1..=255u8 {
            assert_eq!(mul(a, inv(a)), 1, "a = {a:#x}");
        }
        assert_eq!(inv(2), 0x8e);
    }

    #[test]
    fn multiplication_is_distributive_and_matches_shift_and_add() {
        for a in 0..=255u8 {
            for b in 0..=255u8 {
                // Schoolbook: add a * 2^j for every set bit j of b.
                let mut p = 0u8;
                let mut s = a;
                for j in 0..8 {
                    if b >> j & 1 == 1 {
                        p ^= s;
                    }
                    s = mul2(s);
                }
                assert_eq!(mul(a, b), p);
                assert_eq!(MUL[a as usize][b as usize], p);
            }
        }
    }

    #[test]
    fn nibble_tables_and_affine_matrices_multiply() {
        for c in 0..=255u8 {
            let t = nibble_tables(c);
            let m = affine_matrix(c);
            for x in 0..=255u8 {
                let want = mul(c, x);
                assert_eq!(t[0][(x & 15) as usize] ^ t[1][(x >> 4) as usize], want);
                // Software model of gf2p8affineqb with imm8 = 0.
                let mut got = 0u8;
                for i in 0..8 {
                    let row = (m >> (8 * (7 - i))) as u8;
                    got |= (((row & x).count_ones() & 1) as u8) << i;
                }
                assert_eq!(got, want, "c = {c:#x}, x = {x:#x}");
            }
        }
    }
}
