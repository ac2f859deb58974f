//! Recovery of lost blocks in one stripe.
//!
//! With lost data disks L (k of them), the first k surviving parity levels J and the
//! surviving data disks S, the parity equations restricted to J give
//! `A[J][L] * D_L = P_J + A[J][S] * D_S`, so `D_L = V * P_J + V * A[J][S] * D_S` with
//! `V = A[J][L]^-1`. A lost parity level r is `A[r][S] * D_S + A[r][L] * D_L`, which
//! expands into the same inputs. So every lost block, data or parity, is one linear
//! combination of the `nd` inputs `D_S ++ P_J`, and the whole recovery is a single
//! kernel pass with one output row per lost block: as fast as generating that many
//! parity levels.

use super::kernel::{mul_acc, Plan};
use super::matrix::{invert, GENERATOR};
use super::{check_lengths, gf, Kernel, RaidError, MAX_DATA, MAX_PARITY};

/// [`super::recover`] with an explicit kernel.
pub fn recover_with(
    kernel: Kernel,
    nd: usize,
    lost: &[usize],
    blocks: &mut [&mut [u8]],
) -> Result<(), RaidError> {
    recover_inner(kernel, nd, lost, None, blocks)
}

/// Rebuilds lost data blocks from parity levels the caller chooses (0-based, one per
/// lost data block), like SnapRAID's `raid_data`. `fix` uses it to try other parity
/// combinations when a rebuilt block does not match its hash; parity blocks not in
/// `levels` are ignored. `lost` may only name data blocks.
pub fn recover_data_with(
    kernel: Kernel,
    nd: usize,
    lost: &[usize],
    levels: &[usize],
    blocks: &mut [&mut [u8]],
) -> Result<(), RaidError> {
    if let Some(&index) = lost.iter().find(|&&i| i >= nd) {
        return Err(RaidError::LostIndex { index, blocks: nd });
    }
    recover_inner(kernel, nd, lost, Some(levels), blocks)
}

fn recover_inner(
    kernel: Kernel,
    nd: usize,
    lost: &[usize],
    parity_choice: Option<&[usize]>,
    blocks: &mut [&mut [u8]],
) -> Result<(), RaidError> {
    if let Some(&index) = lost.iter().find(|&&i| i >= blocks.len()) {
        return Err(RaidError::LostIndex {
            index,
            blocks: blocks.len(),
        });
    }
    let mut stripe: Vec<Option<&[u8]>> = Vec::with_capacity(blocks.len());
    let mut outputs: Vec<&mut [u8]> = Vec::with_capacity(lost.len());
    for (index, block) in blocks.iter_mut().enumerate() {
        if lost.contains(&index) {
            stripe.push(None);
            outputs.push(&mut **block);
        } else {
            stripe.push(Some(&**block));
        }
    }
    rebuild_with(kernel, nd, &stripe, parity_choice, &mut outputs)
}

/// The general form of recovery, for callers whose surviving blocks are shared
/// buffers: `stripe` holds the `nd` data blocks then the parity blocks, `None` for a
/// lost one; `outputs` receives the lost blocks in index order. `levels` chooses the
/// parity levels used for lost data (one per lost data block), `None` the lowest
/// surviving ones.
pub fn rebuild_with(
    kernel: Kernel,
    nd: usize,
    stripe: &[Option<&[u8]>],
    levels: Option<&[usize]>,
    outputs: &mut [&mut [u8]],
) -> Result<(), RaidError> {
    let kernel = kernel.require()?;
    if nd == 0 || nd > MAX_DATA || nd > stripe.len() {
        return Err(RaidError::DataDisks { disks: nd });
    }
    let np = stripe.len() - nd;
    if np > MAX_PARITY {
        return Err(RaidError::ParityLevels { levels: np });
    }
    let lost: Vec<usize> = (0..stripe.len()).filter(|&i| stripe[i].is_none()).collect();
    if lost.len() > np {
        return Err(RaidError::TooManyLost {
            lost: lost.len(),
            parity: np,
        });
    }
    if outputs.len() != lost.len() {
        return Err(RaidError::LostIndex {
            index: outputs.len(),
            blocks: lost.len(),
        });
    }
    let len = check_lengths(
        stripe
            .iter()
            .flatten()
            .map(|b| b.len())
            .chain(outputs.iter().map(|b| b.len())),
    )?;
    if lost.is_empty() || len == 0 {
        return Ok(());
    }

    let solution = Solution::new(nd, np, &lost, levels)?;
    let plan = Plan::new(kernel, solution.rows(), nd, |r, i| solution.coef[r][i]);

    // The inputs in the order of the plan's columns: D_S, then P_J.
    let mut inputs: Vec<&[u8]> = stripe[..nd].iter().flatten().copied().collect();
    for &level in &solution.used_parity {
        match stripe[nd + level] {
            Some(block) => inputs.push(block),
            None => return Err(RaidError::Singular),
        }
    }
    mul_acc(kernel, &plan, &inputs, outputs);
    Ok(())
}

/// The coefficients that express each lost block in terms of the inputs.
struct Solution {
    /// Parity levels (0-based) used as inputs, lowest first.
    used_parity: Vec<usize>,
    /// One row per lost block (in sorted `lost` order), one column per input
    /// (surviving data disks in order, then the used parity levels).
    coef: Vec<Vec<u8>>,
}

impl Solution {
    fn new(
        nd: usize,
        np: usize,
        lost: &[usize],
        parity_choice: Option<&[usize]>,
    ) -> Result<Solution, RaidError> {
        let lost_data: Vec<usize> = lost.iter().copied().filter(|&i| i < nd).collect();
        let lost_parity: Vec<usize> = lost.iter().filter(|&&i| i >= nd).map(|&i| i - nd).collect();
        let survivors: Vec<usize> = (0..nd).filter(|i| !lost_data.contains(i)).collect();
        let k = lost_data.len();
        let used_parity: Vec<usize> = match parity_choice {
            Some(levels) => levels.to_vec(),
            None => (0..np)
                .filter(|l| !lost_parity.contains(l))
                .take(k)
                .collect(),
        };
        let mut distinct = used_parity.clone();
        distinct.sort_unstable();
        distinct.dedup();
        if distinct.len() != used_parity.len()
            || (parity_choice.is_some() && used_parity.len() != k)
            || used_parity
                .iter()
                .any(|&l| l >= np || lost_parity.contains(&l))
        {
            return Err(RaidError::ParityChoice {
                levels: used_parity.iter().map(|l| l + 1).collect(),
                available: np,
            });
        }
        if used_parity.len() != k {
            return Err(RaidError::TooManyLost {
                lost: lost.len(),
                parity: np,
            });
        }

        // V = A[J][L]^-1, then the rows of the lost data: [V * A[J][S] | V].
        let mut g = Vec::with_capacity(k * k);
        for &level in &used_parity {
            g.extend(lost_data.iter().map(|&d| GENERATOR[level][d]));
        }
        let v = invert(&g, k).ok_or(RaidError::Singular)?;
        let data_rows: Vec<Vec<u8>> = (0..k)
            .map(|a| {
                let mut row: Vec<u8> = survivors
                    .iter()
                    .map(|&s| {
                        (0..k).fold(0u8, |acc, j| {
                            acc ^ gf::mul(v[a * k + j], GENERATOR[used_parity[j]][s])
                        })
                    })
                    .collect();
                row.extend_from_slice(&v[a * k..(a + 1) * k]);
                row
            })
            .collect();

        // Lost parity level r: A[r][S] on the survivors plus A[r][L] times the rows above.
        let parity_rows = lost_parity.iter().map(|&r| {
            (0..nd)
                .map(|col| {
                    let direct = survivors.get(col).map_or(0, |&s| GENERATOR[r][s]);
                    lost_data.iter().enumerate().fold(direct, |acc, (a, &d)| {
                        acc ^ gf::mul(GENERATOR[r][d], data_rows[a][col])
                    })
                })
                .collect::<Vec<u8>>()
        });
        let parity_rows: Vec<Vec<u8>> = parity_rows.collect();
        let mut coef = data_rows;
        coef.extend(parity_rows);
        Ok(Solution { used_parity, coef })
    }

    fn rows(&self) -> usize {
        self.coef.len()
    }
}
