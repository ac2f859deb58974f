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
//! block is compared with the parity of all six levels. Unknown data blocks (lost
//! disks, up to three) are first rebuilt reading the stored blocks as their own
//! levels, then every other way, until the rebuilt blocks match their hashes; the
//! way that does gives the data, and the comparison goes on as before. A file found
//! holding another level, and never its own, stops the run before anything is
//! written. A block of zeros, or one equal to several levels, tells nothing, and
//! the next position is asked; a file equal to no level wherever the data was known
//! (damaged, or another array's) stops a sync of what changed, which would only add
//! to it, and is a warning for the other commands.

use std::collections::HashSet;
use std::fs::File;
use std::path::PathBuf;

use crate::config::{level_name, Config};
use crate::hash::block_hash;
use crate::pipeline::{self, Block, PipelineError, Reads, Source, Status};
use crate::raid::{self, Kernel, RaidError, MAX_PARITY};
use crate::scrub::Plan;
use crate::state::model::{Hash, State};
use crate::sync::SyncError;

/// Positions read at most: one is enough when it is a full one; the others cover
/// positions that tell nothing (zeros, a block of a file changed since the sync).
const PROBES: usize = 8;

/// What the positions read told of one parity file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Verdict {
    /// Positions where its block is its own level's parity alone.
    own: u32,
    /// Positions where its block is only other levels' parity, and the first of
    /// them: those levels (0-based) and the position.
    other: u32,
    first_other: Option<(Vec<usize>, u32)>,
    /// Positions whose data was all known where its block equals no level's parity.
    unmatched: u32,
    /// Whether its block equalled some level's parity anywhere.
    matched: bool,
}

impl Verdict {
    /// Whether more positions would tell no more: it was seen as its own level, or
    /// as another twice.
    fn decided(&self) -> bool {
        self.own > 0 || self.other >= 2
    }

    /// The other levels it holds: seen as such and never as its own.
    fn holds_other(&self) -> Option<&(Vec<usize>, u32)> {
        (self.own == 0)
            .then_some(self.first_other.as_ref())
            .flatten()
    }
}

/// At most this many unknown data blocks in a position read: every way of reading
/// that many stored blocks as levels may be tried (120 for three).
const MAX_UNKNOWN: usize = 3;

/// What one position told of each parity file: `None` where its block is not there,
/// else the levels (0-based) whose parity of the data its block equals.
type Matches = Vec<Option<Vec<usize>>>;

/// A data block of the stripe that could not be used as read: its length and the
/// hash it must have.
#[derive(Copy, Clone)]
struct Unknown {
    column: usize,
    len: usize,
    hash: Hash,
}

/// What runs after the probe.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Before {
    /// A sync of what changed: it writes only some positions.
    Sync,
    /// A full sync (`--force-full`): it writes every position, so a file that is
    /// wrong everywhere is no reason to stop it, but one of another level is (a
    /// stopped full sync would leave both levels mixed).
    FullSync,
    /// A command that reads the parity (fix, check, scrub).
    Reading,
}

/// Refuses when a parity file holds the parity of another level than its config line
/// says. `paths` are the files of levels 1, 2, ... as configured. A file that equals
/// no level's parity wherever the data was known (damaged, or of another array) is
/// refused by a sync of what changed, which would only add to it, and returned as a
/// warning otherwise; a sync also says what to do when levels were moved on purpose.
pub fn check(
    config: &Config,
    state: &State,
    paths: &[PathBuf],
    before: Before,
) -> Result<Vec<String>, SyncError> {
    let levels = paths.len().min(state.parity.len());
    let probes = probe_positions(state, PROBES);
    if levels == 0 || probes.is_empty() {
        return Ok(Vec::new());
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
    // The levels a file may hold: those configured, and those of the last sync.
    let known = paths.len().max(state.parity.len());
    let stage = |_j: usize,
                 blocks: &[Block],
                 _out: &mut [&mut [u8]]|
     -> Result<Option<Matches>, PipelineError> {
        let Some((data, unknown)) = stripe(state, blocks, &zero) else {
            return Ok(None);
        };
        let stored: Vec<Option<&[u8]>> = blocks[state.disks.len()..]
            .iter()
            .map(|b| matches!(b.status, Status::Present { .. }).then_some(b.bytes))
            .collect();
        Ok(levels_held(
            kernel,
            &data,
            &unknown,
            &stored,
            &state.hash_key,
            known,
        )?)
    };
    let mut verdicts = vec![Verdict::default(); levels];
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
            judge(&mut verdicts, matches, pos);
        }
        if verdicts.iter().all(Verdict::decided) {
            break;
        }
    }
    if let Some(message) = refusal(config, paths, &verdicts, before != Before::Reading) {
        return Err(SyncError::Refused(message));
    }
    let unmatched: Vec<String> = verdicts
        .iter()
        .enumerate()
        .filter(|(_, v)| !v.matched && v.unmatched >= 2)
        .map(|(level, v)| {
            format!(
                "parity file {} ({}) equals no level's parity of the data at any of the {} \
                 positions read: it may be damaged, or belong to another array",
                crate::name::shown_path(&paths[level]),
                line_of(config, level),
                v.unmatched
            )
        })
        .collect();
    if before == Before::Sync && !unmatched.is_empty() {
        return Err(SyncError::Refused(format!(
            "{}. A sync would only add to it; nothing was changed. If its disk is not the \
             right one, mount the right one; else `lhparity check` lists the positions \
             where it is wrong and `lhparity fix` rebuilds it from the data",
            unmatched.join("; ")
        )));
    }
    Ok(unmatched
        .into_iter()
        .map(|w| w + "; `lhparity check` lists the positions where it is wrong")
        .collect())
}

/// Up to `count` positions spread over the array whose parity is synced (what a
/// full scrub verifies) and holds no block of a deleted file and no bad block.
fn probe_positions(state: &State, count: usize) -> Vec<u32> {
    let unsure: HashSet<u32> = state
        .disks
        .iter()
        .flat_map(|d| d.deleted.iter().map(|b| b.pos))
        .chain(state.bad.iter().map(|b| b.pos))
        .collect();
    let synced: Vec<u32> = crate::scrub::select(state, Plan::Full, 0, 0)
        .into_iter()
        .filter(|p| !unsure.contains(p))
        .collect();
    let mut chosen: Vec<u32> = (0..count)
        .filter_map(|i| synced.get(i * synced.len() / count).copied())
        .collect();
    chosen.dedup();
    chosen
}

/// The data of one stripe by column (zeros where a disk has no block), and the
/// blocks that are unknown, in column order; `None` when the position cannot tell
/// (more unknown blocks than `MAX_UNKNOWN`, or one whose hash is not known).
fn stripe<'b>(
    state: &State,
    blocks: &[Block<'b>],
    zero: &'b [u8],
) -> Option<(Vec<&'b [u8]>, Vec<Unknown>)> {
    let block_size = state.block_size as usize;
    let mut data: Vec<&[u8]> = vec![zero; state.columns()];
    let mut unknown: Vec<Unknown> = Vec::new();
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
        if unknown.len() == MAX_UNKNOWN {
            return None;
        }
        unknown.push(Unknown { column, len, hash });
    }
    unknown.sort_by_key(|u| u.column);
    Some((data, unknown))
}

/// For each stored parity block (`None`: not there, or all zeros, which tells
/// nothing), the levels (0-based) whose parity of the stripe it is; `None` when the
/// position tells nothing.
///
/// Unknown data blocks are rebuilt first, from as many stored blocks taken as some
/// levels, until the rebuilt blocks match their hashes: each group of that many
/// files as their own levels, then each group read as other levels among the first
/// `known` (within `SEARCH_BUDGET`). Nothing is told when no reading matches, or
/// there are fewer stored blocks than unknown ones.
fn levels_held(
    kernel: Kernel,
    data: &[&[u8]],
    unknown: &[Unknown],
    stored: &[Option<&[u8]>],
    key: &[u8; 32],
    known: usize,
) -> Result<Option<Matches>, RaidError> {
    let len = data.first().map_or(0, |b| b.len());
    let mut complete: Vec<&[u8]> = data.to_vec();
    let mut rebuilt = vec![vec![0u8; len]; unknown.len()];
    if !unknown.is_empty() {
        let present: Vec<usize> = (0..stored.len()).filter(|&f| stored[f].is_some()).collect();
        let groups = crate::fix::combinations(&present, unknown.len());
        let zero = vec![0u8; len];
        let rebuild_cost = (data.len() * len).max(1);
        let mut spent = 0usize;
        let mut found = false;
        let own = groups.iter().map(|g| (g, g.clone()));
        let others = groups.iter().flat_map(|g| {
            orders(known.max(g.len()), g.len())
                .into_iter()
                .filter(move |levels| levels != g)
                .map(move |levels| (g, levels))
        });
        for (files, levels) in own.chain(others) {
            if spent > SEARCH_BUDGET {
                break;
            }
            spent += rebuild_cost;
            let mut blocks: Vec<Option<&[u8]>> = data.iter().map(|&b| Some(b)).collect();
            for u in unknown {
                blocks[u.column] = None;
            }
            // Every level's slot, the chosen ones holding the stored blocks; the others
            // are placeholders the rebuild does not use.
            let mut slots: Vec<Option<&[u8]>> = vec![Some(zero.as_slice()); MAX_PARITY];
            for (&f, &m) in files.iter().zip(&levels) {
                slots[m] = stored[f];
            }
            blocks.extend(slots);
            let mut used = levels.clone();
            used.sort_unstable();
            let mut outputs: Vec<&mut [u8]> = rebuilt.iter_mut().map(Vec::as_mut_slice).collect();
            raid::rebuild_with(kernel, data.len(), &blocks, Some(&used), &mut outputs)?;
            let right = unknown.iter().zip(&rebuilt).all(|(u, b)| {
                b[u.len..].iter().all(|&x| x == 0) && block_hash(key, &b[..u.len]) == u.hash
            });
            if right {
                found = true;
                break;
            }
        }
        if !found {
            return Ok(None);
        }
        for (u, b) in unknown.iter().zip(&rebuilt) {
            complete[u.column] = b;
        }
    }
    let mut parity = vec![vec![0u8; len]; MAX_PARITY];
    let mut outputs: Vec<&mut [u8]> = parity.iter_mut().map(Vec::as_mut_slice).collect();
    raid::generate_with(kernel, &complete, &mut outputs)?;
    Ok(Some(
        stored
            .iter()
            .map(|s| {
                s.filter(|s| s.iter().any(|&b| b != 0))
                    .map(|s| (0..MAX_PARITY).filter(|&m| parity[m] == s).collect())
            })
            .collect(),
    ))
}

/// Bytes of parity math one position may spend on readings of the stored blocks
/// (each costs the stripe's width times the block size): bounds the search when
/// none matches, with several disks lost and a damaged parity file.
const SEARCH_BUDGET: usize = 512 << 20;

/// Every list of `k` distinct levels below `levels`.
fn orders(levels: usize, k: usize) -> Vec<Vec<usize>> {
    fn walk(levels: usize, k: usize, cur: &mut Vec<usize>, out: &mut Vec<Vec<usize>>) {
        if cur.len() == k {
            out.push(cur.clone());
            return;
        }
        for m in 0..levels {
            if !cur.contains(&m) {
                cur.push(m);
                walk(levels, k, cur, out);
                cur.pop();
            }
        }
    }
    let mut out = Vec::new();
    walk(levels.min(MAX_PARITY), k, &mut Vec::new(), &mut out);
    out
}

/// Takes what one position told: a file whose block is its own level's alone is
/// seen as its own; one whose block is only other levels' is seen as those.
fn judge(verdicts: &mut [Verdict], matches: &Matches, pos: u32) {
    for (level, (v, m)) in verdicts.iter_mut().zip(matches).enumerate() {
        let Some(m) = m else { continue };
        if m.is_empty() {
            v.unmatched += 1;
            continue;
        }
        v.matched = true;
        if m == &[level] {
            v.own += 1;
        } else if !m.contains(&level) {
            v.other += 1;
            v.first_other.get_or_insert_with(|| (m.clone(), pos));
        }
    }
}

/// The refusal for files found holding other levels, or `None`.
fn refusal(config: &Config, paths: &[PathBuf], verdicts: &[Verdict], sync: bool) -> Option<String> {
    let wrong: Vec<String> = verdicts
        .iter()
        .enumerate()
        .filter_map(|(level, v)| match v.holds_other() {
            Some((levels, pos)) => {
                let holds: Vec<String> = levels.iter().map(|&m| level_name(m + 1)).collect();
                Some(format!(
                    "{} ({}) holds the parity of `{}` (seen at block position {pos})",
                    crate::name::shown_path(&paths[level]),
                    line_of(config, level),
                    holds.join("` or `")
                ))
            }
            _ => None,
        })
        .collect();
    if wrong.is_empty() {
        return None;
    }
    let on_purpose = if sync {
        " If parity levels were removed or moved on purpose: a parity file serves only \
         as the level it was built as, so delete the file of each line that changed and \
         run `lhparity sync --force-full`, which builds it again (only while every data \
         disk is whole: `lhparity check -a` passes; a lost disk needs `lhparity fix` with \
         the old config first)."
    } else {
        ""
    };
    Some(format!(
        "{}: the parity files are not where the config says: {}. Their disks may be \
         mounted at each other's mountpoints, or the paths swapped in the config: put each \
         file back on its own line (or mount the disks where they were) and run this again. \
         Nothing was changed.{on_purpose}",
        config.source.display(),
        wrong.join("; ")
    ))
}

/// Where the config names a level (0-based): `line 2, `2-parity``.
fn line_of(config: &Config, level: usize) -> String {
    match config.parity.iter().find(|p| p.level == level + 1) {
        Some(p) => format!("line {}, `{}`", p.line, level_name(level + 1)),
        None => format!("`{}`", level_name(level + 1)),
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

    fn held(levels: &[&[usize]]) -> Option<Matches> {
        Some(levels.iter().map(|l| Some(l.to_vec())).collect())
    }

    #[test]
    fn full_stripes_tell_each_file_its_level() {
        let (a, b, c) = (block(1), block(2), block(3));
        let data: Vec<&[u8]> = vec![&a, &b, &c];
        let p = parity_of(&data, 3);
        let stored = [Some(&p[0][..]), Some(&p[1][..]), Some(&p[2][..])];
        let found = levels_held(kernel(), &data, &[], &stored, &[7; 32], 3).expect("held");
        assert_eq!(found, held(&[&[0], &[1], &[2]]));
        // Swapped files, a damaged one and a missing one.
        let mut damaged = p[2].clone();
        damaged[5] ^= 1;
        let stored = [Some(&p[1][..]), Some(&p[0][..]), Some(&damaged[..]), None];
        let found = levels_held(kernel(), &data, &[], &stored, &[7; 32], 3).expect("held");
        assert_eq!(
            found,
            Some(vec![Some(vec![1]), Some(vec![0]), Some(vec![]), None])
        );
    }

    #[test]
    fn a_block_of_zeros_tells_nothing_even_where_a_level_is_zero() {
        // Two disks holding the same bytes: level 1 (their XOR) is all zeros, and a
        // zeroed level-2 block (a hole, a bad sector read as zeros) equals it.
        let a = block(1);
        let data: Vec<&[u8]> = vec![&a, &a];
        let p = parity_of(&data, 2);
        assert!(p[0].iter().all(|&b| b == 0));
        let zero = vec![0u8; BS];
        let stored = [Some(&p[0][..]), Some(&zero[..])];
        let found = levels_held(kernel(), &data, &[], &stored, &[7; 32], 2).expect("held");
        assert_eq!(found, Some(vec![None, None]));
    }

    #[test]
    fn lost_blocks_are_rebuilt_reading_the_files_each_way_until_their_hashes_match() {
        let key = [9u8; 32];
        let (a, mut b, c, d) = (block(1), block(2), block(3), block(4));
        // A last, partial block: zeros past its length.
        let len = BS - 10;
        b[len..].fill(0);
        let p = parity_of(&[&a, &b, &c, &d], 4);
        let zero = vec![0u8; BS];
        let lost = |column: usize, bytes: &[u8], len: usize| Unknown {
            column,
            len,
            hash: block_hash(&key, &bytes[..len]),
        };
        let held_by = |known: &[&[u8]], unknown: &[Unknown], stored: &[Option<&[u8]>]| {
            levels_held(kernel(), known, unknown, stored, &key, 4).expect("held")
        };
        // One lost block, files in order and swapped.
        let known: Vec<&[u8]> = vec![&a, &zero, &c, &d];
        let one = [lost(1, &b, len)];
        let found = held_by(&known, &one, &[Some(&p[0][..]), Some(&p[1][..])]);
        assert_eq!(found, held(&[&[0], &[1]]));
        let found = held_by(&known, &one, &[Some(&p[1][..]), Some(&p[0][..])]);
        assert_eq!(found, held(&[&[1], &[0]]));
        // The first file damaged and the next two swapped: other groups are read.
        let mut bad = p[0].clone();
        bad[0] ^= 1;
        let stored = [Some(&bad[..]), Some(&p[2][..]), Some(&p[1][..])];
        let found = held_by(&known, &one, &stored);
        assert_eq!(
            found,
            Some(vec![Some(vec![]), Some(vec![2]), Some(vec![1])])
        );
        // Two lost blocks with two files swapped, and three with three rotated.
        let known: Vec<&[u8]> = vec![&a, &zero, &zero, &d];
        let two = [lost(1, &b, len), lost(2, &c, BS)];
        let found = held_by(&known, &two, &[Some(&p[1][..]), Some(&p[0][..])]);
        assert_eq!(found, held(&[&[1], &[0]]));
        let known: Vec<&[u8]> = vec![&zero, &zero, &zero, &d];
        let three = [lost(0, &a, BS), lost(1, &b, len), lost(2, &c, BS)];
        let stored = [Some(&p[2][..]), Some(&p[0][..]), Some(&p[1][..])];
        let found = held_by(&known, &three, &stored);
        assert_eq!(found, held(&[&[2], &[0], &[1]]));
        // More lost blocks than files there, or a hash no reading matches: nothing.
        assert_eq!(held_by(&known, &three, &stored[..2]), None);
        let wrong = [Unknown {
            hash: block_hash(&key, &a[..len]),
            ..one[0]
        }];
        let known: Vec<&[u8]> = vec![&a, &zero, &c, &d];
        assert_eq!(held_by(&known, &wrong, &[Some(&p[0][..])]), None);
    }

    #[test]
    fn orders_are_complete() {
        let o = orders(3, 2);
        assert_eq!(o.len(), 6);
        assert!(o.contains(&vec![1, 0]) && o.contains(&vec![2, 1]));
        assert_eq!(orders(6, 3).len(), 120);
        assert_eq!(orders(9, 1).len(), MAX_PARITY);
    }

    #[test]
    fn a_file_holds_another_level_only_when_never_seen_as_its_own() {
        let mut v = vec![Verdict::default(); 4];
        // Zeros left aside, every file equal to every level: nothing is decided.
        let all = [0, 1, 2, 3, 4, 5];
        judge(&mut v, &held(&[&all, &all, &all, &all]).expect("m"), 4);
        assert!(v.iter().all(|v| !v.decided() && v.matched));
        judge(
            &mut v,
            &vec![Some(vec![0]), Some(vec![2]), Some(vec![]), None],
            9,
        );
        assert!(v[0].decided() && v[0].holds_other().is_none());
        assert!(!v[1].decided());
        assert_eq!(v[1].holds_other(), Some(&(vec![2], 9)));
        assert_eq!((v[2].unmatched, v[3].unmatched), (1, 0));
        // Seen as another level twice: decided, and the first sighting is named.
        judge(&mut v, &held(&[&[0], &[3], &[2], &[3]]).expect("m"), 12);
        assert!(v[1].decided());
        assert_eq!(v[1].holds_other(), Some(&(vec![2], 9)));
        assert!(v[2].decided() && v[3].decided());
        // Seen as its own once: never refused.
        let mut w = vec![Verdict::default()];
        judge(&mut w, &held(&[&[1]]).expect("m"), 0);
        judge(&mut w, &held(&[&[0]]).expect("m"), 5);
        assert_eq!(w[0].holds_other(), None);
    }
}
