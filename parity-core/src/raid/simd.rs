//! The loop every SIMD kernel shares, written once as a macro and instantiated per
//! instruction set (`ssse3.rs`, `avx2.rs`, `avx512.rs`, `gfni.rs`).
//!
//! For each group of `U` vectors of the stripe, the kernel keeps one accumulator per
//! output row in registers, walks the inputs once, loads each input vector once and
//! multiplies it by that input's coefficient for every row. So all parity levels come
//! out of a single pass over the data, and each coefficient table is loaded once per
//! `U` vectors. A macro rather than generic code because the intrinsics only inline
//! into functions compiled with their target features.

/// Generates `pub(crate) unsafe fn mul_acc(tables, rows, first_row_xor, args)` and
/// `mul_cmp` with the same arguments (the sums compared instead of written).
///
/// - `feature`: the `target_feature` string.
/// - `V`, `W`: the vector type and its width in bytes; `Tab`: the prepared table type.
/// - `load`, `store`, `xor`, `or`, `zero`: unaligned load/store, XOR, OR, zero vector.
/// - `split(x)`: per-input work shared by all rows (for example the nibbles).
/// - `table(ptr)`: loads the table of one coefficient.
/// - `mul(split, table)`: the product.
/// - `pairs`: walk the inputs two at a time. Worth it with AVX-512's 32 registers
///   and three-way XOR; with 16 registers the second input's values spill.
macro_rules! simd_kernel {
    (
        feature: $feature:literal,
        vector: $V:ty,
        width: $W:expr,
        table_type: $Tab:ty,
        load: |$lp:ident| $load:expr,
        store: |$sp:ident, $sv:ident| $store:expr,
        stream: |$np:ident, $nv:ident| $stream:expr,
        xor: |$xa:ident, $xb:ident| $xor:expr,
        or: |$oa:ident, $ob:ident| $or:expr,
        zero: $zero:expr,
        split: |$x:ident| $split:expr,
        table: |$tp:ident| $table:expr,
        mul: |$s:ident, $t:ident| $mul:expr,
        pairs: $pairs:expr $(,)?
    ) => {
        use super::kernel::{dispatch_rows, Args};
        use super::simd::{prefetch_line, PREFETCH, STREAM_MIN};

        // The operations, expanded in place (closures would not be compiled with the
        // target features, and the intrinsics would not inline into them).
        macro_rules! load {
            ($p:expr) => {{
                let $lp: *const u8 = $p;
                $load
            }};
        }
        macro_rules! store {
            ($p:expr, $v:expr) => {{
                let $sp: *mut u8 = $p;
                let $sv = $v;
                $store
            }};
        }
        macro_rules! stream {
            ($p:expr, $v:expr) => {{
                let $np: *mut u8 = $p;
                let $nv = $v;
                $stream
            }};
        }
        macro_rules! xor {
            ($a:expr, $b:expr) => {{
                let $xa = $a;
                let $xb = $b;
                $xor
            }};
        }
        macro_rules! or {
            ($a:expr, $b:expr) => {{
                let $oa = $a;
                let $ob = $b;
                $or
            }};
        }

        // Asks for the `$n` vectors `PREFETCH` bytes past `$from` of input `$p`
        // (within `$end`), so that they arrive from L3 or memory while this step
        // computes: the hardware prefetcher alone falls behind with many inputs.
        macro_rules! prefetch {
            ($p:expr, $from:expr, $end:expr, $n:expr) => {{
                let (p, from, end): (*const u8, usize, usize) = ($p, $from, $end);
                if from + PREFETCH + $n * $W <= end {
                    for u in 0..$n {
                        unsafe { prefetch_line(p.add(from + PREFETCH + u * $W)) };
                    }
                }
            }};
        }

        // Runs `$call` over `$off..$end` with `U` as the number of vectors per step,
        // advancing `$off`: 8 and 4 at a time when few rows leave registers free for
        // more vectors in flight, then 2, then 1. `R` is the row count of the function
        // it expands in.
        macro_rules! walk {
            ($off:ident, $end:expr, |U| $call:expr) => {{
                macro_rules! steps {
                    ($u:literal) => {
                        while $off + $u * $W <= $end {
                            {
                                const U: usize = $u;
                                $call;
                            }
                            $off += $u * $W;
                        }
                    };
                }
                if R == 1 {
                    steps!(8);
                }
                if R <= 2 {
                    steps!(4);
                }
                steps!(2);
                steps!(1);
            }};
        }

        // The sums of `U` vectors at byte offset `off` of the stripe `a`, in registers
        // (plus what the outputs hold with `a.accumulate`), for `step` and `cmp_step`.
        // A macro rather than a function: a `target_feature` function cannot be forced
        // inline, and called out of line the sums go through memory on every step.
        // `R`, `X` and `U` are the const generics of the function it expands in.
        macro_rules! sums {
            ($tables:expr, $args:expr, $offset:expr) => {{
                let (tables, a, off): (&[$Tab], &Args, usize) = ($tables, $args, $offset);
                let mut acc: [[$V; U]; R] = [[$zero; U]; R];
                if a.accumulate {
                    for r in 0..R {
                        for u in 0..U {
                            acc[r][u] = unsafe { load!(a.outs[r].add(off + u * $W)) };
                        }
                    }
                }
                let tab = tables.as_ptr();
                // With `pairs`, inputs two at a time: each row then adds both
                // products at once, a three-way XOR that AVX-512 does in one
                // instruction (`vpternlog`).
                let pairs = if $pairs { a.ins.len() / 2 } else { 0 };
                for k in 0..pairs {
                    let (i, j) = (2 * k, 2 * k + 1);
                    let (p, q) = (a.ins[i], a.ins[j]);
                    let mut xs: [$V; U] = [$zero; U];
                    let mut ys: [$V; U] = [$zero; U];
                    for u in 0..U {
                        xs[u] = unsafe { load!(p.add(off + u * $W)) };
                        ys[u] = unsafe { load!(q.add(off + u * $W)) };
                    }
                    prefetch!(p, off + U * $W, a.end, U);
                    prefetch!(q, off + U * $W, a.end, U);
                    for r in 0..R {
                        if X && r == 0 {
                            for u in 0..U {
                                acc[0][u] = xor!(acc[0][u], xor!(xs[u], ys[u]));
                            }
                            continue;
                        }
                        let tx = {
                            let $tp = unsafe { tab.add(i * R + r) };
                            unsafe { $table }
                        };
                        let ty = {
                            let $tp = unsafe { tab.add(j * R + r) };
                            unsafe { $table }
                        };
                        for u in 0..U {
                            let px = {
                                let $s = {
                                    let $x = xs[u];
                                    $split
                                };
                                let $t = tx;
                                $mul
                            };
                            let py = {
                                let $s = {
                                    let $x = ys[u];
                                    $split
                                };
                                let $t = ty;
                                $mul
                            };
                            acc[r][u] = xor!(acc[r][u], xor!(px, py));
                        }
                    }
                }
                for (i, &p) in a.ins.iter().enumerate().skip(2 * pairs) {
                    let mut xs: [$V; U] = [$zero; U];
                    for u in 0..U {
                        xs[u] = unsafe { load!(p.add(off + u * $W)) };
                    }
                    prefetch!(p, off + U * $W, a.end, U);
                    for r in 0..R {
                        if X && r == 0 {
                            for u in 0..U {
                                acc[0][u] = xor!(acc[0][u], xs[u]);
                            }
                            continue;
                        }
                        let $tp = unsafe { tab.add(i * R + r) };
                        let $t = unsafe { $table };
                        for u in 0..U {
                            // Recomputed per row; identical pure operations, so the
                            // compiler keeps one copy per input vector.
                            let $s = {
                                let $x = xs[u];
                                $split
                            };
                            acc[r][u] = xor!(acc[r][u], $mul);
                        }
                    }
                }
                acc
            }};
        }

        /// `out[r] (+)= sum_i C[r][i] * in[i]` over `a.start..a.end`.
        ///
        /// # Safety
        /// The CPU must support the target features; every pointer in `a` must be
        /// valid for `a.end` bytes; `a.end - a.start` must be a multiple of 64;
        /// outputs must not overlap inputs; `tables` holds `rows` entries per input.
        #[target_feature(enable = $feature)]
        pub(crate) unsafe fn mul_acc(tables: &[$Tab], rows: usize, first_row_xor: bool, a: &Args) {
            debug_assert!(tables.len() >= a.ins.len() * rows);
            debug_assert_eq!((a.end - a.start) % 64, 0);
            unsafe { dispatch_rows!(run, rows, first_row_xor, tables, a) }
        }

        /// Which rows of `sum_i C[r][i] * in[i]` over `a.start..a.end` differ from the
        /// blocks `a.outs` point to, which are only read: bit `r` of the result is set
        /// when row `r` differs. Nothing is written, and the sums never leave the
        /// registers.
        ///
        /// # Safety
        /// As [`mul_acc`]; `a.accumulate` must be false.
        #[target_feature(enable = $feature)]
        pub(crate) unsafe fn mul_cmp(
            tables: &[$Tab],
            rows: usize,
            first_row_xor: bool,
            a: &Args,
        ) -> u8 {
            debug_assert!(tables.len() >= a.ins.len() * rows);
            debug_assert_eq!((a.end - a.start) % 64, 0);
            debug_assert!(!a.accumulate);
            unsafe { dispatch_rows!(cmp, rows, first_row_xor, tables, a) }
        }

        #[target_feature(enable = $feature)]
        unsafe fn cmp<const R: usize, const X: bool>(tables: &[$Tab], a: &Args) -> u8 {
            // Per row, the OR of every difference: zero exactly when the row matches.
            let mut diff: [$V; R] = [$zero; R];
            let mut off = a.start;
            walk!(off, a.end, |U| unsafe {
                cmp_step::<R, X, U>(tables, a, off, &mut diff)
            });
            let mut mask = 0u8;
            for (r, d) in diff.iter().enumerate() {
                let mut bytes = [0u8; $W];
                unsafe { store!(bytes.as_mut_ptr(), *d) };
                if bytes.iter().any(|&b| b != 0) {
                    mask |= 1 << r;
                }
            }
            mask
        }

        /// `U` vectors at byte offset `off`: the sums compared with the expected
        /// blocks, differences ORed into `diff`.
        #[target_feature(enable = $feature)]
        #[inline]
        unsafe fn cmp_step<const R: usize, const X: bool, const U: usize>(
            tables: &[$Tab],
            a: &Args,
            off: usize,
            diff: &mut [$V; R],
        ) {
            let acc = sums!(tables, a, off);
            for r in 0..R {
                for u in 0..U {
                    let want = unsafe { load!(a.outs[r].add(off + u * $W)) };
                    diff[r] = or!(diff[r], xor!(acc[r][u], want));
                }
            }
        }

        #[target_feature(enable = $feature)]
        unsafe fn run<const R: usize, const X: bool>(tables: &[$Tab], a: &Args) {
            // Parity that is written, not accumulated, goes out with non-temporal
            // stores when the outputs are aligned: no read-for-ownership of the
            // parity lines, and the data stays in cache. Small ranges keep normal
            // stores, since their parity is about to be read again.
            let streaming = !a.accumulate
                && a.end - a.start >= STREAM_MIN
                && a.outs.iter().all(|&o| (o as usize + a.start) % $W == 0);
            if streaming {
                unsafe { lanes::<R, X, true>(tables, a) };
                _mm_sfence();
            } else {
                unsafe { lanes::<R, X, false>(tables, a) };
            }
        }

        #[target_feature(enable = $feature)]
        #[inline]
        unsafe fn lanes<const R: usize, const X: bool, const NT: bool>(tables: &[$Tab], a: &Args) {
            let mut off = a.start;
            walk!(off, a.end, |U| unsafe {
                step::<R, X, U, NT>(tables, a, off)
            });
        }

        /// `U` vectors at byte offset `off` of every block.
        #[target_feature(enable = $feature)]
        #[inline]
        unsafe fn step<const R: usize, const X: bool, const U: usize, const NT: bool>(
            tables: &[$Tab],
            a: &Args,
            off: usize,
        ) {
            let acc = sums!(tables, a, off);
            for r in 0..R {
                for u in 0..U {
                    if NT {
                        unsafe { stream!(a.outs[r].add(off + u * $W), acc[r][u]) };
                    } else {
                        unsafe { store!(a.outs[r].add(off + u * $W), acc[r][u]) };
                    }
                }
            }
        }
    };
}
pub(crate) use simd_kernel;

/// How far ahead of the vectors being computed the inputs are prefetched, in bytes.
/// 512 and 768 measured best of 256 to 4096 on 8 x 256 KiB stripes (L3-resident).
pub(crate) const PREFETCH: usize = 512;

/// Prefetches the cache line at `p` into all cache levels. A hint: any address is
/// allowed, nothing is read if the line is not mapped.
#[inline(always)]
pub(crate) fn prefetch_line(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT0 is part of SSE, present on every x86_64 CPU, and a
    // prefetch never faults.
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(p.cast())
    };
}

/// Outputs at least this long are written with non-temporal stores when aligned.
pub(crate) const STREAM_MIN: usize = 64 * 1024;
