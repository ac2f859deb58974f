//! The kernel interface and the runtime choice of kernel.
//!
//! Every parity operation, generation and recovery alike, is one product of a small
//! coefficient matrix (at most six rows) with a stripe of input blocks:
//! `out[r] = sum_i C[r][i] * in[i]`. The scalar kernel is the definition; the SIMD
//! kernels compute the same bytes faster. Which one runs is decided once per process
//! from the CPU (or `LHPARITY_KERNEL`) and never changes.

use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

use super::{gf, RaidError};

/// One implementation of the parity arithmetic.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Kernel {
    /// Table lookups, one byte at a time: the reference every other kernel must equal.
    Scalar,
    /// 16 bytes at a time with `pshufb` nibble tables.
    Ssse3,
    /// 32 bytes at a time with `vpshufb` nibble tables.
    Avx2,
    /// 32 bytes at a time with one `gf2p8affineqb` per coefficient (GFNI + AVX2,
    /// for CPUs without AVX-512).
    GfniAvx2,
    /// 64 bytes at a time with AVX-512BW `vpshufb` nibble tables.
    Avx512,
    /// 64 bytes at a time with one `gf2p8affineqb` per coefficient (GFNI + AVX-512BW).
    Gfni,
}

impl Kernel {
    /// Every kernel, slowest first.
    pub const ALL: [Kernel; 6] = [
        Kernel::Scalar,
        Kernel::Ssse3,
        Kernel::Avx2,
        Kernel::Avx512,
        Kernel::GfniAvx2,
        Kernel::Gfni,
    ];

    /// The name used by `LHPARITY_KERNEL` and the speed test.
    pub fn name(self) -> &'static str {
        match self {
            Kernel::Scalar => "scalar",
            Kernel::Ssse3 => "ssse3",
            Kernel::Avx2 => "avx2",
            Kernel::GfniAvx2 => "gfni-avx2",
            Kernel::Avx512 => "avx512",
            Kernel::Gfni => "gfni",
        }
    }

    /// Whether this CPU can run the kernel.
    pub fn is_available(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            match self {
                Kernel::Scalar => true,
                Kernel::Ssse3 => is_x86_feature_detected!("ssse3"),
                Kernel::Avx2 => is_x86_feature_detected!("avx2"),
                Kernel::GfniAvx2 => {
                    is_x86_feature_detected!("gfni") && is_x86_feature_detected!("avx2")
                }
                Kernel::Avx512 => {
                    is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bw")
                }
                Kernel::Gfni => {
                    is_x86_feature_detected!("gfni")
                        && is_x86_feature_detected!("avx512f")
                        && is_x86_feature_detected!("avx512bw")
                }
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            self == Kernel::Scalar
        }
    }

    /// The kernels this CPU can run, slowest first.
    pub fn available() -> Vec<Kernel> {
        Kernel::ALL
            .into_iter()
            .filter(|k| k.is_available())
            .collect()
    }

    /// The fastest kernel this CPU can run.
    pub fn best() -> Kernel {
        Kernel::ALL
            .into_iter()
            .rev()
            .find(|k| k.is_available())
            .unwrap_or(Kernel::Scalar)
    }

    /// The kernel for this process: `LHPARITY_KERNEL` if set, otherwise the best one.
    /// Decided on the first call; later calls return the same answer.
    pub fn selected() -> Result<Kernel, RaidError> {
        static SELECTED: OnceLock<Result<Kernel, RaidError>> = OnceLock::new();
        SELECTED
            .get_or_init(|| match std::env::var("LHPARITY_KERNEL") {
                Ok(name) if !name.is_empty() => name.parse::<Kernel>().and_then(Kernel::require),
                _ => Ok(Kernel::best()),
            })
            .clone()
    }

    /// `Ok(self)` if the CPU can run it, otherwise an error that says which kernels it can.
    pub fn require(self) -> Result<Kernel, RaidError> {
        if self.is_available() {
            Ok(self)
        } else {
            Err(RaidError::KernelUnavailable {
                kernel: self.name(),
                available: names(&Kernel::available()),
            })
        }
    }
}

fn names(kernels: &[Kernel]) -> String {
    kernels
        .iter()
        .map(|k| k.name())
        .collect::<Vec<_>>()
        .join(", ")
}

impl fmt::Display for Kernel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Kernel {
    type Err = RaidError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Kernel::ALL
            .into_iter()
            .find(|k| k.name() == s.trim().to_ascii_lowercase())
            .ok_or_else(|| RaidError::UnknownKernel {
                name: s.to_string(),
                known: names(&Kernel::ALL),
            })
    }
}

/// A coefficient matrix prepared for one kernel: `rows` outputs from `n` inputs.
/// Coefficients are stored input-major (`[i * rows + r]`) because kernels walk the
/// inputs in the outer loop and the rows in the inner one.
pub(crate) struct Plan {
    pub rows: usize,
    pub n: usize,
    /// Row 0 is all ones: kernels XOR instead of multiplying (parity level 1).
    pub first_row_xor: bool,
    pub coef: Vec<u8>,
    /// Nibble tables (`[lo; 16] ++ [hi; 16]`) per coefficient, for the shuffle kernels.
    pub nibbles: Vec<[u8; 32]>,
    /// Affine bit matrices per coefficient, for GFNI.
    pub affine: Vec<u64>,
}

impl Plan {
    /// `coef_at(r, i)` gives C[r][i].
    pub fn new(
        kernel: Kernel,
        rows: usize,
        n: usize,
        coef_at: impl Fn(usize, usize) -> u8,
    ) -> Plan {
        let mut coef = Vec::with_capacity(rows * n);
        for i in 0..n {
            for r in 0..rows {
                coef.push(coef_at(r, i));
            }
        }
        let first_row_xor = (0..n).all(|i| coef[i * rows] == 1);
        let nibbles = match kernel {
            Kernel::Ssse3 | Kernel::Avx2 | Kernel::Avx512 => coef
                .iter()
                .map(|&c| {
                    let t = gf::nibble_tables(c);
                    let mut b = [0u8; 32];
                    b[..16].copy_from_slice(&t[0]);
                    b[16..].copy_from_slice(&t[1]);
                    b
                })
                .collect(),
            _ => Vec::new(),
        };
        let affine = match kernel {
            Kernel::Gfni | Kernel::GfniAvx2 => coef.iter().map(|&c| gf::affine_matrix(c)).collect(),
            _ => Vec::new(),
        };
        Plan {
            rows,
            n,
            first_row_xor,
            coef,
            nibbles,
            affine,
        }
    }
}

/// Calls `$f::<R, X>($args)` with the row count and the first-row-XOR flag as const
/// generics, so that every kernel keeps its accumulators in registers.
macro_rules! dispatch_rows {
    ($f:ident, $rows:expr, $xor:expr, $($arg:expr),*) => {
        match ($rows, $xor) {
            (1, false) => $f::<1, false>($($arg),*),
            (2, false) => $f::<2, false>($($arg),*),
            (3, false) => $f::<3, false>($($arg),*),
            (4, false) => $f::<4, false>($($arg),*),
            (5, false) => $f::<5, false>($($arg),*),
            (6, false) => $f::<6, false>($($arg),*),
            (1, true) => $f::<1, true>($($arg),*),
            (2, true) => $f::<2, true>($($arg),*),
            (3, true) => $f::<3, true>($($arg),*),
            (4, true) => $f::<4, true>($($arg),*),
            (5, true) => $f::<5, true>($($arg),*),
            (6, true) => $f::<6, true>($($arg),*),
            _ => unreachable!("plans have 1..=6 rows"),
        }
    };
}
pub(crate) use dispatch_rows;

/// `$simd!(module, tables)` for a SIMD kernel (its module and the plan's table kind),
/// `$other` for the scalar kernel and on other architectures.
macro_rules! by_kernel {
    ($kernel:expr, $simd:ident, $other:expr) => {
        match $kernel {
            #[cfg(target_arch = "x86_64")]
            Kernel::Ssse3 => $simd!(ssse3, nibbles),
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => $simd!(avx2, nibbles),
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => $simd!(avx512, nibbles),
            #[cfg(target_arch = "x86_64")]
            Kernel::GfniAvx2 => $simd!(gfni_avx2, affine),
            #[cfg(target_arch = "x86_64")]
            Kernel::Gfni => $simd!(gfni, affine),
            _ => $other,
        }
    };
}

/// Inputs processed together before their partial sums are written back. Beyond this
/// many streams the hardware prefetchers lose track, so wide stripes are processed
/// in groups over chunks that stay in cache.
const GROUP: usize = 16;
/// Bytes per chunk when a stripe is processed in groups of inputs.
const CHUNK: usize = 16 * 1024;

/// Computes `out[r] = sum_i C[r][i] * in[i]` over whole blocks. The caller has checked
/// that every block has the same length, a multiple of 64, and that the counts match
/// the plan.
pub(crate) fn mul_acc(kernel: Kernel, plan: &Plan, inputs: &[&[u8]], outputs: &mut [&mut [u8]]) {
    let len = outputs.first().map_or(0, |o| o.len());
    let ins: Vec<*const u8> = inputs.iter().map(|b| b.as_ptr()).collect();
    let outs: Vec<*mut u8> = outputs.iter_mut().map(|b| b.as_mut_ptr()).collect();
    if plan.n <= GROUP {
        // SAFETY: all pointers cover `len` bytes (checked by the caller) and the
        // kernel was checked to be available when it was selected.
        unsafe { run(kernel, plan, 0, &ins, &outs, 0, len, false) };
        return;
    }
    let mut start = 0;
    while start < len {
        let end = (start + CHUNK).min(len);
        for (g, group) in ins.chunks(GROUP).enumerate() {
            // SAFETY: as above; each group covers inputs [g * GROUP, ...).
            unsafe { run(kernel, plan, g * GROUP, group, &outs, start, end, g > 0) };
        }
        start = end;
    }
}

/// Which rows of `sum_i C[r][i] * in[i]` differ from `expected[r]`, as a bit mask
/// (bit `r` for row `r`), without writing anything: the SIMD kernels compare the sums
/// in registers with the expected bytes. Stripes wider than a group of inputs, and
/// the scalar kernel, compute chunks into a small buffer and compare those. The
/// caller has checked the lengths as for [`mul_acc`].
pub(crate) fn mul_cmp(kernel: Kernel, plan: &Plan, inputs: &[&[u8]], expected: &[&[u8]]) -> u8 {
    let len = expected.first().map_or(0, |o| o.len());
    if plan.n > GROUP {
        return mul_cmp_chunked(kernel, plan, inputs, expected, len);
    }
    let ins: Vec<*const u8> = inputs.iter().map(|b| b.as_ptr()).collect();
    // The kernels only read through these pointers in `mul_cmp`.
    let outs: Vec<*mut u8> = expected.iter().map(|b| b.as_ptr().cast_mut()).collect();
    let args = Args {
        ins: &ins,
        outs: &outs,
        start: 0,
        end: len,
        accumulate: false,
    };
    #[cfg(target_arch = "x86_64")]
    macro_rules! simd {
        ($module:ident, $tables:ident) => {
            // SAFETY: the caller checked the lengths, the kernel was checked to be
            // available, and mul_cmp never writes through `outs`.
            unsafe { super::$module::mul_cmp(&plan.$tables, plan.rows, plan.first_row_xor, &args) }
        };
    }
    by_kernel!(
        kernel,
        simd,
        mul_cmp_chunked(kernel, plan, inputs, expected, len)
    )
}

/// [`mul_cmp`] through [`mul_acc`], `CHUNK` bytes of every row at a time.
fn mul_cmp_chunked(
    kernel: Kernel,
    plan: &Plan,
    inputs: &[&[u8]],
    expected: &[&[u8]],
    len: usize,
) -> u8 {
    let mut sums = vec![vec![0u8; CHUNK.min(len)]; plan.rows];
    let mut mask = 0u8;
    let mut start = 0;
    while start < len {
        let end = (start + CHUNK).min(len);
        let ins: Vec<&[u8]> = inputs.iter().map(|b| &b[start..end]).collect();
        let mut outs: Vec<&mut [u8]> = sums.iter_mut().map(|s| &mut s[..end - start]).collect();
        mul_acc(kernel, plan, &ins, &mut outs);
        for (r, (sum, want)) in sums.iter().zip(expected).enumerate() {
            if sum[..end - start] != want[start..end] {
                mask |= 1 << r;
            }
        }
        start = end;
    }
    mask
}

/// The stripe a kernel call works on: raw block pointers and the byte range.
pub(crate) struct Args<'a> {
    pub ins: &'a [*const u8],
    pub outs: &'a [*mut u8],
    pub start: usize,
    pub end: usize,
    /// Add to the outputs instead of overwriting them.
    pub accumulate: bool,
}

/// One kernel call over bytes `start..end` for the inputs `first..first + ins.len()`.
/// With `accumulate`, the outputs are added to instead of overwritten; the
/// first-row XOR shortcut stays valid because it only concerns the coefficients.
///
/// # Safety
/// Every pointer must be valid for `end` bytes and the kernel must be available.
#[allow(clippy::too_many_arguments)]
unsafe fn run(
    kernel: Kernel,
    plan: &Plan,
    first: usize,
    ins: &[*const u8],
    outs: &[*mut u8],
    start: usize,
    end: usize,
    accumulate: bool,
) {
    let rows = plan.rows;
    let coef = &plan.coef[first * rows..];
    let args = Args {
        ins,
        outs,
        start,
        end,
        accumulate,
    };
    // A SIMD kernel's call with its tables (nibble or affine) for this plan.
    #[cfg(target_arch = "x86_64")]
    macro_rules! simd {
        ($module:ident, $tables:ident) => {
            // SAFETY: the caller checked the kernel is available and the pointers.
            unsafe {
                super::$module::mul_acc(
                    &plan.$tables[first * rows..],
                    rows,
                    plan.first_row_xor,
                    &args,
                )
            }
        };
    }
    // SAFETY (scalar): as above.
    by_kernel!(kernel, simd, unsafe {
        super::scalar::mul_acc(coef, rows, &args)
    })
}
