//! Which parity level each parity file holds, asked of the files themselves before
//! a command relies on their order.
//!
//! The config names one file per level. When two parity disks come up at each
//! other's mountpoints, or their paths are swapped in the config, every level is
//! read as another: a sync then writes each level's new parity into the other's
//! file at the changed positions, mixing both files beyond repair, and a fix
//! rebuilds nothing. The data cannot show it, since it is only compared with the
//! parity.
//!
//! So a few positions whose parity is synced are read before such a run: with every
//! data block known (read and matching its hash, or absent), each stored parity
//! block is compared with the parity of all six levels; with one data block unknown
//! (a lost disk), that block is rebuilt from the stored block as if it were each
//! level in turn, and the level whose rebuilt block matches its hash is the one the
//! file holds. A file found holding another level stops the run before anything is
//! written. A block equal to no level (damage, which a scrub finds) or to several
//! (zeros) tells nothing, and the next position is asked.

use std::collections::HashSet;
use std::fs::File;
use std::path::PathBuf;

use crate::config::Config;
use crate::hash::block_hash;
use crate::pipeline::{self, Block, PipelineError, Reads, Source, Status};
use crate::raid::{self, Kernel, RaidError, MAX_PARITY};
use crate::state::model::{Hash, State, DIRTY, UNSYNCED};
use crate::sync::SyncError;

/// Positions read at most: one is enough when it is a full one; the others cover
/// positions that tell nothing (zeros, a block of a file changed since the sync).
const PROBES: usize = 8;

/// What the probe found of one parity file.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Held {
    /// Nothing seen yet that tells.
    Undecided,
    /// Its own level.
    Own,
    /// Only these other levels (0-based), at `pos`.
    Other { levels: Vec<usize>, pos: u32 },
}

/// A data block of the stripe that could not be used as read: its length and the
/// hash it must have.
#[derive(Copy, Clone)]
struct Unknown {
    column: usize,
    len: usize,
    hash: Hash,
}

/// Refuses when a parity file holds the parity of another level than its config line
/// says. `paths` are the files of levels 1, 2, ... as configured.
pub fn check(config: &Config, state: &State, paths: &[PathBuf]) -> Result<(), SyncError> {
    let levels = paths.len().min(state.parity.len());
    let probes = probe_positions(state, PROBES);
    if levels == 0 || probes.is_empty() {
        return Ok(());
    }
    let kernel = Kernel::selected()?;
    let files: Vec<Option<File>> = paths[..levels].iter().map(|p| File::open(p).ok()).collect();
    let mut sources = pipeline::data_sources(&state.disks, &config.data, None);
    for (path, file) in paths.iter().zip(&files) {
        sources.push(Source::Parity {
            path,
            file: file.as_ref(),
        });
    }
    let block_size = state.block_size as usize;
    let zero = vec![0u8; block_size];
    let stage = |_j: usize,
                 blocks: &[Block],
                 _out: &mut [&mut [u8]]|
     -> Result<Option<Vec<Vec<usize>>>, PipelineError> {
        let Some((data, unknown)) = stripe(state, blocks, &zero) else {
            return Ok(None);
        };
        let stored: Vec<Option<&[u8]>> = blocks[state.disks.len()..]
            .iter()
            .map(|b| matches!(b.status, Status::Present { .. }).then_some(b.bytes))
            .collect();
        Ok(Some(levels_held(
            kernel,
            &data,
            unknown,
            &stored,
            &state.hash_key,
        )?))
    };
    let mut held = vec![Held::Undecided; levels];
    for pos in probes {
        // A probe is a handful of blocks; its read errors are the business of the
        // commands that read everything. Blocks are private copies, checked against
        // their hashes: a file changed meanwhile only makes the position tell less.
        let run = pipeline::run(
            block_size,
            &[pos],
            &sources,
            None,
            &stage,
            &|_| {},
            Reads::Copy,
        )?;
        if let Some(Some(matches)) = run.results.first() {
            judge(&mut held, matches, pos);
        }
        if !held.contains(&Held::Undecided) {
            break;
        }
    }
    match refusal(config, paths, &held) {
        Some(message) => Err(SyncError::Refused(message)),
        None => Ok(()),
    }
}

/// Up to `count` positions spread over the array whose parity is synced and holds
/// no block of a deleted file.
fn probe_positions(state: &State, count: usize) -> Vec<u32> {
    let deleted: HashSet<u32> = state
        .disks
        .iter()
        .flat_map(|d| d.deleted.iter().map(|b| b.pos))
        .chain(state.bad.iter().map(|b| b.pos))
        .collect();
    let used = state.used_positions();
    let synced: Vec<u32> = (0..state.positions.len())
        .filter(|&p| {
            used.get(p).copied().unwrap_or(false)
                && state.positions.flags[p] & (UNSYNCED | DIRTY) == 0
        })
        .map(|p| p as u32)
        .filter(|p| !deleted.contains(p))
        .collect();
    let mut chosen: Vec<u32> = (0..count)
        .filter_map(|i| synced.get(i * synced.len() / count).copied())
        .collect();
    chosen.dedup();
    chosen
}

/// The data of one stripe by column (zeros where a disk has no block), and the one
/// block that is unknown, if any; `None` when the position cannot tell (more than
/// one unknown block, or one whose hash is not known).
fn stripe<'b>(
    state: &State,
    blocks: &[Block<'b>],
    zero: &'b [u8],
) -> Option<(Vec<&'b [u8]>, Option<Unknown>)> {
    let block_size = state.block_size as usize;
    let mut data: Vec<&[u8]> = vec![zero; state.columns()];
    let mut unknown: Option<Unknown> = None;
    for (slot, block) in blocks[..state.disks.len()].iter().enumerate() {
        let disk = &state.disks[slot];
        let column = disk.index as usize;
        let (file, i, read) = match block.status {
            Status::Absent => continue,
            Status::Present { file, block: i, .. } => (file, i, true),
            Status::Skipped { file, block: i } | Status::Unreadable { file, block: i } => {
                (file, i, false)
            }
        };
        let entry = disk.files.get(file)?;
        if entry.is_new(i) {
            return None;
        }
        let hash = *entry.hashes.get(i)?;
        let len = entry
            .size
            .saturating_sub(i as u64 * block_size as u64)
            .min(block_size as u64) as usize;
        if read && block_hash(&state.hash_key, &block.bytes[..len]) == hash {
            data[column] = block.bytes;
            continue;
        }
        if unknown.is_some() {
            return None;
        }
        unknown = Some(Unknown { column, len, hash });
    }
    Some((data, unknown))
}

/// For each stored parity block (`None`: not there), the levels (0-based) whose
/// parity of the stripe it is. With an `unknown` data block, a level counts when the
/// block rebuilt from the stored one as that level matches its hash.
fn levels_held(
    kernel: Kernel,
    data: &[&[u8]],
    unknown: Option<Unknown>,
    stored: &[Option<&[u8]>],
    key: &[u8; 32],
) -> Result<Vec<Vec<usize>>, RaidError> {
    let len = data.first().map_or(0, |b| b.len());
    let Some(u) = unknown else {
        let mut parity = vec![vec![0u8; len]; MAX_PARITY];
        let mut outputs: Vec<&mut [u8]> = parity.iter_mut().map(Vec::as_mut_slice).collect();
        raid::generate_with(kernel, data, &mut outputs)?;
        return Ok(stored
            .iter()
            .map(|s| {
                s.map_or_else(Vec::new, |s| {
                    (0..MAX_PARITY).filter(|&m| parity[m] == s).collect()
                })
            })
            .collect());
    };
    let zero = vec![0u8; len];
    let mut rebuilt = vec![0u8; len];
    let mut held = Vec::with_capacity(stored.len());
    for s in stored {
        let mut levels = Vec::new();
        for m in 0..MAX_PARITY {
            let Some(s) = s else { break };
            // The stripe with the unknown block lost and the stored block standing as
            // level m; lower levels are placeholders that the rebuild does not use.
            let mut blocks: Vec<Option<&[u8]>> = data.iter().map(|&b| Some(b)).collect();
            blocks[u.column] = None;
            blocks.extend(std::iter::repeat_n(Some(zero.as_slice()), m));
            blocks.push(Some(s));
            raid::rebuild_with(
                kernel,
                data.len(),
                &blocks,
                Some(&[m]),
                &mut [rebuilt.as_mut_slice()],
            )?;
            if rebuilt[u.len..].iter().all(|&b| b == 0)
                && block_hash(key, &rebuilt[..u.len]) == u.hash
            {
                levels.push(m);
            }
        }
        held.push(levels);
    }
    Ok(held)
}

/// Takes what one position told: a file whose block is its own level's alone is
/// confirmed; one whose block is only other levels' holds those. Files already
/// decided keep their verdict.
fn judge(held: &mut [Held], matches: &[Vec<usize>], pos: u32) {
    for (level, (h, m)) in held.iter_mut().zip(matches).enumerate() {
        if *h != Held::Undecided || m.is_empty() {
            continue;
        }
        if m == &[level] {
            *h = Held::Own;
        } else if !m.contains(&level) {
            *h = Held::Other {
                levels: m.clone(),
                pos,
            };
        }
    }
}

/// The refusal for files found holding other levels, or `None`.
fn refusal(config: &Config, paths: &[PathBuf], held: &[Held]) -> Option<String> {
    let wrong: Vec<String> = held
        .iter()
        .enumerate()
        .filter_map(|(level, h)| match h {
            Held::Other { levels, pos } => {
                let holds: Vec<String> = levels.iter().map(|&m| line_name(m)).collect();
                Some(format!(
                    "{} (the `{}` line) holds the parity of `{}` (seen at block position {pos})",
                    crate::name::shown_path(&paths[level]),
                    line_name(level),
                    holds.join("` or `")
                ))
            }
            _ => None,
        })
        .collect();
    if wrong.is_empty() {
        return None;
    }
    Some(format!(
        "{}: the parity files are not where the config says: {}. Their disks may be \
         mounted at each other's mountpoints, or the paths swapped in the config; put each \
         file back on its own line (or mount the disks where they were) and run this again. \
         Nothing was changed. To build all parity again from the data instead, run \
         `lhparity sync --force-full`",
        config.source.display(),
        wrong.join("; ")
    ))
}

/// The config line of a level (0-based): `parity`, `2-parity`, ...
fn line_name(level: usize) -> String {
    match level {
        0 => "parity".to_owned(),
        l => format!("{}-parity", l + 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BS: usize = 256;

    fn kernel() -> Kernel {
        Kernel::selected().expect("a kernel")
    }

    fn block(seed: u8) -> Vec<u8> {
        (0..BS)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    fn parity_of(data: &[&[u8]], levels: usize) -> Vec<Vec<u8>> {
        let mut parity = vec![vec![0u8; BS]; levels];
        let mut out: Vec<&mut [u8]> = parity.iter_mut().map(Vec::as_mut_slice).collect();
        raid::generate_with(kernel(), data, &mut out).expect("generate");
        parity
    }

    #[test]
    fn full_stripes_tell_each_file_its_level() {
        let (a, b, c) = (block(1), block(2), block(3));
        let data: Vec<&[u8]> = vec![&a, &b, &c];
        let p = parity_of(&data, 3);
        let stored = [Some(&p[0][..]), Some(&p[1][..]), Some(&p[2][..])];
        let held = levels_held(kernel(), &data, None, &stored, &[7; 32]).expect("held");
        assert_eq!(held, vec![vec![0], vec![1], vec![2]]);
        // Swapped files, a damaged one and a missing one.
        let mut damaged = p[2].clone();
        damaged[5] ^= 1;
        let stored = [Some(&p[1][..]), Some(&p[0][..]), Some(&damaged[..]), None];
        let held = levels_held(kernel(), &data, None, &stored, &[7; 32]).expect("held");
        assert_eq!(held, vec![vec![1], vec![0], vec![], vec![]]);
    }

    #[test]
    fn a_lost_block_is_rebuilt_as_each_level_and_its_hash_tells() {
        let key = [9u8; 32];
        let (a, mut b, c) = (block(1), block(2), block(3));
        // A last, partial block: zeros past its length.
        let len = BS - 10;
        b[len..].fill(0);
        let p = parity_of(&[&a, &b, &c], 2);
        let zero = vec![0u8; BS];
        let known: Vec<&[u8]> = vec![&a, &zero, &c];
        let unknown = Unknown {
            column: 1,
            len,
            hash: block_hash(&key, &b[..len]),
        };
        let lost = Some(unknown);
        let held = levels_held(
            kernel(),
            &known,
            lost,
            &[Some(&p[0][..]), Some(&p[1][..])],
            &key,
        )
        .expect("held");
        assert_eq!(held, vec![vec![0], vec![1]]);
        let held = levels_held(
            kernel(),
            &known,
            lost,
            &[Some(&p[1][..]), Some(&p[0][..])],
            &key,
        )
        .expect("held");
        assert_eq!(held, vec![vec![1], vec![0]]);
        // A wrong hash (the block was damaged since): no level fits.
        let other = Some(Unknown {
            hash: block_hash(&key, &a[..len]),
            ..unknown
        });
        let held = levels_held(kernel(), &known, other, &[Some(&p[0][..])], &key).expect("held");
        assert_eq!(held, vec![Vec::<usize>::new()]);
    }

    #[test]
    fn verdicts_come_from_the_first_position_that_tells() {
        let mut held = vec![Held::Undecided; 3];
        // Zeros: every file equals every level; nothing is decided.
        judge(&mut held, &[vec![0, 1, 2], vec![0, 1, 2], vec![0, 1, 2]], 4);
        assert_eq!(held, vec![Held::Undecided; 3]);
        judge(&mut held, &[vec![0], vec![2], vec![]], 9);
        assert_eq!(
            held,
            vec![
                Held::Own,
                Held::Other {
                    levels: vec![2],
                    pos: 9
                },
                Held::Undecided
            ]
        );
        // A later position does not overturn a verdict.
        judge(&mut held, &[vec![1], vec![1], vec![2]], 12);
        assert_eq!(held[0], Held::Own);
        assert_eq!(held[2], Held::Own);
    }

    #[test]
    fn line_names_follow_the_config() {
        assert_eq!(line_name(0), "parity");
        assert_eq!(line_name(1), "2-parity");
        assert_eq!(line_name(5), "6-parity");
    }
}
