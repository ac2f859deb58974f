//! SnapRAID-compatible parity arithmetic: generation and recovery of up to six parity
//! levels over up to 251 data blocks.
//!
//! This module knows nothing of files, disks or the state: it works on one stripe of
//! equally sized blocks in memory. Block lengths are any multiple of 64 bytes; buffers
//! need no particular alignment.
//!
//! Both operations reduce to one product of a coefficient matrix with the stripe
//! (`kernel.rs`), computed by the kernel chosen at runtime (`Kernel::selected`).

mod avx2;
mod avx512;
mod gf;
mod gfni;
mod gfni_avx2;
mod kernel;
mod matrix;
mod recover;
mod scalar;
mod simd;
mod ssse3;

pub use gf::{div as gf_div, inv as gf_inv, mul as gf_mul};
pub use kernel::Kernel;
pub use matrix::{coefficient, GENERATOR};
pub use recover::{rebuild_with, recover_data_with, recover_with};

use kernel::{mul_acc, Plan};

/// Most parity levels (P, Q, R, S, T, U).
pub const MAX_PARITY: usize = 6;
/// Most data disks: the generator matrix has 251 columns.
pub const MAX_DATA: usize = 251;
/// Block lengths must be a multiple of this.
pub const BLOCK_MULTIPLE: usize = 64;

/// Why a parity operation could not run. Every variant is a caller or configuration
/// problem; none is produced by data content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RaidError {
    #[error("{levels} parity levels requested; lhparity supports 1 to {MAX_PARITY}")]
    ParityLevels { levels: usize },
    #[error("{disks} data disks in one stripe; lhparity supports 1 to {MAX_DATA}")]
    DataDisks { disks: usize },
    #[error("block {index} is {len} bytes, but the stripe's blocks are {expected} bytes")]
    BlockLength {
        index: usize,
        len: usize,
        expected: usize,
    },
    #[error("block length {len} is not a multiple of {BLOCK_MULTIPLE} bytes")]
    BlockMultiple { len: usize },
    #[error(
        "{lost} blocks of the stripe are lost but only {parity} parity levels exist: \
         at most {parity} lost blocks can be rebuilt"
    )]
    TooManyLost { lost: usize, parity: usize },
    #[error("lost block index {index} is out of range for a stripe of {blocks} blocks")]
    LostIndex { index: usize, blocks: usize },
    #[error("parity levels {levels:?} cannot be used for recovery: they must be distinct, surviving levels of the {available} present, one per lost data block")]
    ParityChoice {
        levels: Vec<usize>,
        available: usize,
    },
    #[error("internal error: the recovery matrix is singular")]
    Singular,
    #[error("unknown parity kernel `{name}`; known kernels: {known}")]
    UnknownKernel { name: String, known: String },
    #[error(
        "the parity kernel `{kernel}` is not supported by this CPU; it supports: {available} \
         (unset LHPARITY_KERNEL to pick the best automatically)"
    )]
    KernelUnavailable {
        kernel: &'static str,
        available: String,
    },
}

/// Computes `parity.len()` parity levels of the data blocks `data` (disk index = position
/// in the slice) with the runtime-selected kernel.
pub fn generate(data: &[&[u8]], parity: &mut [&mut [u8]]) -> Result<(), RaidError> {
    generate_with(Kernel::selected()?, data, parity)
}

/// [`generate`] with an explicit kernel (tests, benchmarks, the speed test).
pub fn generate_with(
    kernel: Kernel,
    data: &[&[u8]],
    parity: &mut [&mut [u8]],
) -> Result<(), RaidError> {
    let kernel = kernel.require()?;
    let np = parity.len();
    if np == 0 || np > MAX_PARITY {
        return Err(RaidError::ParityLevels { levels: np });
    }
    if data.is_empty() || data.len() > MAX_DATA {
        return Err(RaidError::DataDisks { disks: data.len() });
    }
    let len = check_lengths(
        data.iter()
            .map(|b| b.len())
            .chain(parity.iter().map(|b| b.len())),
    )?;
    if len == 0 {
        return Ok(());
    }
    let plan = Plan::new(kernel, np, data.len(), |r, i| GENERATOR[r][i]);
    mul_acc(kernel, &plan, data, parity);
    Ok(())
}

/// Checks stored parity against `data` in one pass that writes nothing: `parity[k]`
/// holds the stored block of level `levels[k]` (0-based: 0 is P, 1 is Q, ...), and
/// entry `k` of the answer is true when it differs from that level's parity of
/// `data`. The same as generating those levels and comparing, without the generated
/// blocks ever reaching memory.
pub fn verify_with(
    kernel: Kernel,
    data: &[&[u8]],
    levels: &[usize],
    parity: &[&[u8]],
) -> Result<Vec<bool>, RaidError> {
    let kernel = kernel.require()?;
    let np = parity.len();
    if np == 0 || np > MAX_PARITY || levels.len() != np {
        return Err(RaidError::ParityLevels { levels: np });
    }
    if let Some(&level) = levels.iter().find(|&&l| l >= MAX_PARITY) {
        return Err(RaidError::ParityLevels { levels: level + 1 });
    }
    if data.is_empty() || data.len() > MAX_DATA {
        return Err(RaidError::DataDisks { disks: data.len() });
    }
    let len = check_lengths(data.iter().chain(parity).map(|b| b.len()))?;
    if len == 0 {
        return Ok(vec![false; np]);
    }
    let plan = Plan::new(kernel, np, data.len(), |r, i| GENERATOR[levels[r]][i]);
    let mask = kernel::mul_cmp(kernel, &plan, data, parity);
    Ok((0..np).map(|k| mask & (1 << k) != 0).collect())
}

/// Checks that all blocks have one length, a multiple of 64, and returns it.
fn check_lengths(lens: impl Iterator<Item = usize>) -> Result<usize, RaidError> {
    let mut expected = None;
    for (index, len) in lens.enumerate() {
        match expected {
            None => expected = Some(len),
            Some(expected) if expected != len => {
                return Err(RaidError::BlockLength {
                    index,
                    len,
                    expected,
                })
            }
            Some(_) => {}
        }
    }
    let len = expected.unwrap_or(0);
    if len % BLOCK_MULTIPLE != 0 {
        return Err(RaidError::BlockMultiple { len });
    }
    Ok(len)
}

/// Rebuilds the lost blocks of a stripe in place with the runtime-selected kernel.
///
/// `blocks` holds the `nd` data blocks followed by `np` parity blocks (levels 1..=np);
/// `lost` lists the indexes into `blocks` whose content is gone. Their buffers are
/// overwritten with the rebuilt bytes; all others are read only. Lost data is rebuilt
/// from the lowest surviving parity levels, lost parity is recomputed.
pub fn recover(nd: usize, lost: &[usize], blocks: &mut [&mut [u8]]) -> Result<(), RaidError> {
    recover_with(Kernel::selected()?, nd, lost, blocks)
}
