//! The scalar kernel: one table lookup per byte and coefficient. It is the
//! specification of the parity arithmetic; every SIMD kernel is tested against it.

use super::gf::MUL;
use super::kernel::Args;

/// `out[r] (+)= sum_i coef[i * rows + r] * in[i]` over `a.start..a.end`.
///
/// # Safety
/// Every pointer in `a` must be valid for `a.end` bytes, and outputs must not overlap
/// inputs or each other.
pub(crate) unsafe fn mul_acc(coef: &[u8], rows: usize, a: &Args) {
    let len = a.end - a.start;
    for (r, &o) in a.outs.iter().enumerate() {
        // SAFETY: guaranteed by the caller.
        let out = unsafe { std::slice::from_raw_parts_mut(o.add(a.start), len) };
        if !a.accumulate {
            out.fill(0);
        }
        for (i, &p) in a.ins.iter().enumerate() {
            let c = coef[i * rows + r];
            if c == 0 {
                continue;
            }
            // SAFETY: guaranteed by the caller.
            let input = unsafe { std::slice::from_raw_parts(p.add(a.start), len) };
            let table = &MUL[c as usize];
            for (o, &x) in out.iter_mut().zip(input) {
                *o ^= table[x as usize];
            }
        }
    }
}
