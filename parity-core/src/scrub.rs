//! `lhparity scrub` and `lhparity check`: read data and parity, check every block
//! hash, recompute the parity and compare.
//!
//! Scrub verifies the least recently verified synced positions first, records the
//! time, and marks bad blocks in the state. Check verifies everything (or the chosen
//! disks and files) and changes nothing. Neither ever marks a position that is not
//! fully synced as bad, and a file that changed since the last sync is reported as
//! changed, not as damage.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::config::{Config, Filter};
use crate::hash::block_hash;
use crate::parity_order::{self, Before};
use crate::pipeline::{self, Block, PipelineError, Reads, Source, Status};
use crate::raid::{self, Kernel};
use crate::runs;
use crate::state::model::{awaits_sync, BadBlock, State, SCRUB_NEW};
use crate::state::store;
use crate::sync::{check_disk_names, load_state, now, parity_paths, Progress, SyncError};

/// Which positions a scrub verifies (`-p`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Plan {
    /// This percentage of the synced positions, least recently verified first.
    Percent(f64),
    /// Positions synced but never scrubbed since.
    New,
    /// Positions with a bad block.
    Bad,
    /// Every synced position.
    Full,
}

impl std::str::FromStr for Plan {
    type Err = String;
    fn from_str(s: &str) -> Result<Plan, String> {
        match s {
            "new" => Ok(Plan::New),
            "bad" => Ok(Plan::Bad),
            "full" => Ok(Plan::Full),
            _ => s
                .trim_end_matches('%')
                .parse::<f64>()
                .ok()
                .filter(|p| (0.0..=100.0).contains(p))
                .map(Plan::Percent)
                .ok_or_else(|| {
                    format!("'{s}' is not a scrub plan: use a percentage 0-100, new, bad or full")
                }),
        }
    }
}

/// What a verification found.
#[derive(Clone, Debug, Default)]
pub struct VerifyReport {
    /// Positions verified completely.
    pub verified: usize,
    /// Positions verified except against the parity levels in `levels_set_aside`.
    pub verified_without_levels: usize,
    /// Parity levels (1-based) nothing was verified against: their files could not
    /// be opened.
    pub levels_set_aside: Vec<usize>,
    /// Data bytes read.
    pub bytes: u64,
    pub seconds: f64,
    /// Bad blocks found, as messages naming disk, file and position.
    pub errors: Vec<String>,
    /// Files that changed since the last sync (not verified; run a sync).
    pub changed: Vec<String>,
    /// Positions whose blocks were all fine.
    pub good_positions: usize,
    /// Bad blocks found (position, disk index or `u32::MAX` for parity).
    pub bad: Vec<BadBlock>,
    /// About the content copies (one damaged, missing or older, and what is done).
    pub notes: Vec<String>,
    /// The signal that stopped a scrub before the end; what was verified is saved.
    pub interrupted: Option<i32>,
}

/// What verification found at one position.
#[derive(Clone, Debug, Default)]
struct Found {
    /// Data blocks whose hash did not match: (disk slot, file, block).
    bad_data: Vec<(usize, usize, usize)>,
    /// Parity levels (0-based) that differ from the recomputed parity.
    bad_parity: Vec<usize>,
    /// Unreadable data blocks: (disk slot, file, block).
    unreadable: Vec<(usize, usize, usize)>,
    /// Some block could not be verified (its file changed since the last sync).
    incomplete: bool,
    /// A file with a block here changed since the sync or while it was read: the
    /// position is not verified, though other files' blocks found bad still count.
    changed: bool,
    /// A parity level could not be verified here (its file could not be opened):
    /// the rest was, but the position does not count as verified.
    parity_set_aside: bool,
}

/// A parity file `verify` could not open: its level (0-based), path and the error.
type Unopened = (usize, PathBuf, std::io::Error);

/// Verifies `positions`. With `parity`, the parity is read and compared too; the
/// parity files that could not be opened are returned beside the run.
fn verify(
    config: &Config,
    state: &State,
    positions: &[u32],
    parity: bool,
    skip: Option<&[Vec<bool>]>,
    progress: &dyn Progress,
) -> Result<(pipeline::Run<Found>, Vec<Unopened>), SyncError> {
    let kernel = Kernel::selected()?;
    let block_size = state.block_size as usize;
    let paths = parity_paths(config)?;
    // A missing parity file reads as absent blocks: every position then shows bad
    // parity, which is what it is (`fix` rebuilds it from that); scrub and check
    // set such a level aside (`set_aside_unopened_parity`).
    let mut unopened = Vec::new();
    let files: Vec<Option<File>> = if parity {
        paths
            .iter()
            .enumerate()
            .map(|(level, p)| {
                File::open(p)
                    .map_err(|e| unopened.push((level, p.clone(), e)))
                    .ok()
            })
            .collect()
    } else {
        Vec::new()
    };
    let mut sources = pipeline::data_sources(&state.disks, &config.data, skip);
    for (path, file) in paths.iter().zip(&files) {
        sources.push(Source::Parity {
            path,
            file: file.as_ref(),
        });
    }
    let disks = state.disks.len();
    let columns = state.columns();
    let zero = vec![0u8; block_size];
    let levels = if parity { paths.len() } else { 0 };
    let stage = |_j: usize,
                 blocks: &[Block],
                 _out: &mut [&mut [u8]]|
     -> Result<Found, PipelineError> {
        let mut found = Found::default();
        let mut data: Vec<&[u8]> = vec![&zero; columns];
        // The damaged blocks: (column, stored hash, length).
        let mut damaged: Vec<(usize, crate::state::model::Hash, usize)> = Vec::new();
        for (slot, block) in blocks[..disks].iter().enumerate() {
            match block.status {
                Status::Absent => {}
                Status::Skipped { .. } => found.incomplete = true,
                Status::Unreadable { file, block } => found.unreadable.push((slot, file, block)),
                Status::Present {
                    file,
                    block: i,
                    len,
                } => {
                    let entry = &state.disks[slot].files[file];
                    let column = state.disks[slot].index as usize;
                    data[column] = block.bytes;
                    if !entry.is_new(i)
                        && entry.hashes[i] != block_hash(&state.hash_key, &block.bytes[..len])
                    {
                        found.bad_data.push((slot, file, i));
                        damaged.push((column, entry.hashes[i], len));
                    }
                }
            }
        }
        // Wrong data makes the parity look wrong too: with a damaged block, the
        // parity is judged only once the block is rebuilt (`judge_around`).
        if levels > 0 && !found.incomplete && found.unreadable.is_empty() && !damaged.is_empty() {
            let stored = blocks.get(disks..).unwrap_or_default();
            if let Some(wrong) = judge_around(kernel, &state.hash_key, &data, stored, &damaged)? {
                found.bad_parity = wrong;
            }
        } else if levels > 0
            && !found.incomplete
            && found.unreadable.is_empty()
            && found.bad_data.is_empty()
        {
            // The stored levels are checked against the data in one pass that keeps
            // the computed parity in registers; a level that could not be read is
            // wrong as it stands.
            let stored = blocks.get(disks..).unwrap_or_default();
            let present: Vec<usize> = (0..stored.len())
                .filter(|&l| matches!(stored[l].status, Status::Present { .. }))
                .collect();
            let mut differs = vec![true; stored.len()];
            if !present.is_empty() {
                let bytes: Vec<&[u8]> = present.iter().map(|&l| stored[l].bytes).collect();
                let verdicts = raid::verify_with(kernel, &data, &present, &bytes)?;
                for (&l, wrong) in present.iter().zip(verdicts) {
                    differs[l] = wrong;
                }
            }
            found.bad_parity = (0..stored.len()).filter(|&l| differs[l]).collect();
        }
        Ok(found)
    };
    let mut run = pipeline::run(
        block_size,
        positions,
        &sources,
        None,
        &stage,
        &|b| progress.advance(b),
        Reads::Map,
    )?;
    // A block of a file that changed while it was read proves nothing, good or
    // bad, and neither does the parity there: the position is not verified. Blocks
    // of the other files there that fail their hash are still damage.
    let changed: HashSet<(usize, usize)> = run.changed.iter().copied().collect();
    for j in run.touched_by_changes(&state.disks, positions) {
        let found = &mut run.results[j];
        found.changed = true;
        found.bad_parity.clear();
        found
            .bad_data
            .retain(|&(slot, file, _)| !changed.contains(&(slot, file)));
        found
            .unreadable
            .retain(|&(slot, file, _)| !changed.contains(&(slot, file)));
    }
    Ok((run, unopened))
}

/// The parity levels that are wrong at a position whose `damaged` data blocks
/// (column, stored hash, length) failed their hashes, judged as `fix` would: the
/// damaged blocks are rebuilt in memory with each choice of as many levels as there
/// are damaged blocks, and the first rebuild that gives back every stored hash
/// makes the stripe whole again, against which every level is compared. `None` when
/// no choice does (too few levels, or too much damage): the parity there cannot be
/// judged. `stored` holds the parity levels as read; one not read is wrong.
fn judge_around(
    kernel: Kernel,
    key: &[u8; 32],
    data: &[&[u8]],
    stored: &[Block],
    damaged: &[(usize, crate::state::model::Hash, usize)],
) -> Result<Option<Vec<usize>>, PipelineError> {
    let present: Vec<usize> = (0..stored.len())
        .filter(|&l| matches!(stored[l].status, Status::Present { .. }))
        .collect();
    if damaged.len() > present.len() {
        return Ok(None);
    }
    // Outputs come in index order: the damaged columns first, by column.
    let mut damaged = damaged.to_vec();
    damaged.sort_unstable_by_key(|&(column, _, _)| column);
    let block_size = data.first().map_or(0, |b| b.len());
    let columns = data.len();
    let mut stripe: Vec<Option<&[u8]>> = data.iter().map(|&b| Some(b)).collect();
    stripe.extend(stored.iter().map(|b| match b.status {
        Status::Present { .. } => Some(b.bytes),
        _ => None,
    }));
    for &(column, _, _) in &damaged {
        stripe[column] = None;
    }
    let lost = stripe.iter().filter(|b| b.is_none()).count();
    let mut out: Vec<Vec<u8>> = (0..lost).map(|_| vec![0u8; block_size]).collect();
    for choice in crate::fix::combinations(&present, damaged.len()) {
        let mut refs: Vec<&mut [u8]> = out.iter_mut().map(Vec::as_mut_slice).collect();
        raid::rebuild_with(kernel, columns, &stripe, Some(&choice), &mut refs)?;
        let rebuilt = damaged
            .iter()
            .zip(&out)
            .all(|(&(_, hash, len), bytes)| block_hash(key, &bytes[..len]) == hash);
        if !rebuilt {
            continue;
        }
        // A file's last block is padded with zeros in the parity; a level wrong only
        // there still gives back the hash. With the padding put right, such a level
        // shows as wrong below.
        for (&(_, _, len), bytes) in damaged.iter().zip(out.iter_mut()) {
            bytes[len..].fill(0);
        }
        let mut whole: Vec<&[u8]> = data.to_vec();
        for (&(column, _, _), bytes) in damaged.iter().zip(&out) {
            whole[column] = bytes;
        }
        let bytes: Vec<&[u8]> = present.iter().map(|&l| stored[l].bytes).collect();
        let verdicts = raid::verify_with(kernel, &whole, &present, &bytes)?;
        let mut wrong: Vec<usize> = (0..stored.len()).filter(|l| !present.contains(l)).collect();
        wrong.extend(
            present
                .iter()
                .zip(verdicts)
                .filter(|(_, w)| *w)
                .map(|(&l, _)| l),
        );
        wrong.sort_unstable();
        return Ok(Some(wrong));
    }
    Ok(None)
}

/// The files a check or fix covers, per disk slot and file: on one of `disks`
/// (empty: any) and matching `filter` (none: any).
pub(crate) fn select_files(
    state: &State,
    disks: &[String],
    filter: Option<&Filter>,
) -> Vec<Vec<bool>> {
    state
        .disks
        .iter()
        .map(|d| {
            let disk_ok = disks.is_empty() || disks.contains(&d.name);
            let chosen = Chosen::new(filter, d);
            d.files
                .iter()
                .map(|f| disk_ok && chosen.file(&f.path))
                .collect()
        })
        .collect()
}

/// What `-f` selects on one disk: a file by its own name or by another name of it
/// (a hard link). Built once per disk, so that selecting every file costs one pass
/// over the files and one over the links.
pub(crate) struct Chosen<'a> {
    filter: Option<&'a Filter>,
    /// Files (by first name) that another name of theirs selects.
    by_link: HashSet<&'a str>,
}

impl<'a> Chosen<'a> {
    /// `None`: no `-f`, everything is chosen.
    pub(crate) fn new(filter: Option<&'a Filter>, disk: &'a crate::state::model::Disk) -> Self {
        let by_link = filter.map_or_else(HashSet::new, |f| {
            disk.hardlinks
                .iter()
                .filter(|l| matches(f, &l.path))
                .map(|l| l.target.as_str())
                .collect()
        });
        Chosen { filter, by_link }
    }

    /// Whether the file whose first name is `path` is chosen.
    pub(crate) fn file(&self, path: &str) -> bool {
        self.filter
            .is_none_or(|f| matches(f, path) || self.by_link.contains(path))
    }

    /// Whether a symbolic link at `path` is chosen (by its own path).
    pub(crate) fn path(&self, path: &str) -> bool {
        self.filter.is_none_or(|f| matches(f, path))
    }

    /// Whether an (empty) folder at `path` is chosen: by a pattern that would choose
    /// a file of that path, or by a folder pattern (`media/empty/`) naming it.
    pub(crate) fn folder(&self, path: &str) -> bool {
        self.filter
            .is_none_or(|f| matches(f, path) || f.includes_dir(path))
    }
}

/// The positions holding blocks of the selected files, sorted, each once.
fn positions_of(state: &State, selected: &[Vec<bool>]) -> Vec<u32> {
    let mut positions: Vec<u32> = Vec::new();
    for (disk, chosen) in state.disks.iter().zip(selected) {
        for (f, _) in disk.files.iter().zip(chosen).filter(|(_, &c)| c) {
            positions.extend(f.positions());
        }
    }
    positions.sort_unstable();
    positions.dedup();
    positions
}

/// The files a pass skips: those not selected.
fn unselected(selected: &[Vec<bool>]) -> Vec<Vec<bool>> {
    selected
        .iter()
        .map(|s| s.iter().map(|&x| !x).collect())
        .collect()
}

/// What a check for `fix` found: the blocks that failed, the files it could not vouch
/// for, and the positions whose parity does not match data that does.
#[derive(Debug, Default)]
pub(crate) struct Damage {
    /// Per (disk slot, file): the blocks that do not match their hash or could not be
    /// read, in order.
    pub blocks: HashMap<(usize, usize), Vec<usize>>,
    /// Files missing, or changed since the sync or while read: not checked here.
    pub unverified: HashSet<(usize, usize)>,
    /// Fully synced positions whose parity is suspect, with the levels (0-based):
    /// where every data block matched its hash, the levels that differ from the
    /// recomputed parity (with the data known good, exactly the wrong ones); where
    /// a data block failed its hash or could not be read, every level, as the
    /// parity there could not be judged.
    pub parity: Vec<(u32, Vec<usize>)>,
    /// Read errors, naming the disk and file.
    pub errors: Vec<String>,
}

/// Reads the blocks of the `selected` files (per disk slot, per file) through the
/// pipeline, and with `parity` the parity of every position, for `fix`: what a
/// `check` finds, without the report.
pub(crate) fn find_damage(
    config: &Config,
    state: &State,
    selected: &[Vec<bool>],
    parity: bool,
    progress: &dyn Progress,
) -> Result<Damage, SyncError> {
    let positions = positions_of(state, selected);
    let skip = unselected(selected);
    let everything = selected.iter().flatten().all(|&x| x);
    let levels = parity_paths(config)?.len();
    // As `check -a`: with files skipped, how much will be read is not known.
    let total = if everything {
        positions.len() as u64 * u64::from(state.block_size) * state.disks.len() as u64
    } else {
        0
    };
    progress.start(total);
    let (run, _) = verify(
        config,
        state,
        &positions,
        parity,
        (!everything).then_some(skip.as_slice()),
        progress,
    )?;
    let mut damage = Damage {
        unverified: run.changed.iter().copied().collect(),
        errors: run.errors.clone(),
        ..Damage::default()
    };
    for (found, &pos) in run.results.iter().zip(&positions) {
        for &(slot, file, block) in found.bad_data.iter().chain(&found.unreadable) {
            damage.blocks.entry((slot, file)).or_default().push(block);
        }
        let synced = state
            .positions
            .flags
            .get(pos as usize)
            .is_some_and(|&f| !awaits_sync(f));
        // Wrong data hides whether the parity there is right: every level is
        // suspected, and judged once the data is rebuilt (also when only some files
        // were read, and the parity was not).
        let data_failed = !found.bad_data.is_empty() || !found.unreadable.is_empty();
        if synced && !found.bad_parity.is_empty() {
            damage.parity.push((pos, found.bad_parity.clone()));
        } else if synced && data_failed && !found.changed {
            damage.parity.push((pos, (0..levels).collect()));
        }
    }
    for blocks in damage.blocks.values_mut() {
        blocks.sort_unstable();
        blocks.dedup();
    }
    Ok(damage)
}

/// Turns per-position findings into the report and messages.
fn summarize(
    config: &Config,
    state: &State,
    positions: &[u32],
    run: &pipeline::Run<Found>,
    report: &mut VerifyReport,
    selected: Option<&[Vec<bool>]>,
) {
    report.errors.extend(run.errors.iter().cloned());
    report_changed(config, state, run, selected, report);
    report.bytes = run.bytes;
    // Damage is gathered first and named per stretch: a disk or parity file damaged
    // or cut short over thousands of positions gets a line per stretch, not per block.
    let mut data: BTreeMap<(usize, usize, bool), Vec<(u32, u32)>> = BTreeMap::new();
    let mut parity: BTreeMap<usize, Vec<u32>> = BTreeMap::new();
    for (j, f) in run.results.iter().enumerate() {
        let pos = positions[j];
        let verified = !f.incomplete && !f.changed && !f.parity_set_aside;
        if verified {
            report.verified += 1;
        } else if !f.incomplete && !f.changed {
            report.verified_without_levels += 1;
        }
        for &(slot, file, block) in f.bad_data.iter().chain(&f.unreadable) {
            let unreadable = !f.bad_data.contains(&(slot, file, block));
            let block = u32::try_from(block).unwrap_or(u32::MAX);
            data.entry((slot, file, unreadable))
                .or_default()
                .push((block, pos));
            report.bad.push(BadBlock {
                pos,
                disk: state.disks[slot].index,
            });
        }
        for &level in &f.bad_parity {
            parity.entry(level).or_default().push(pos);
        }
        if !f.bad_parity.is_empty() {
            report.bad.push(BadBlock {
                pos,
                disk: u32::MAX,
            });
        }
        if verified && f.bad_data.is_empty() && f.unreadable.is_empty() && f.bad_parity.is_empty() {
            report.good_positions += 1;
        }
    }
    for ((slot, file, unreadable), mut blocks) in data {
        let disk = &state.disks[slot];
        let path = crate::name::join(&config.data[slot].dir, &disk.files[file].path);
        blocks.sort_unstable();
        for (block, pos, n) in runs::paired_runs(blocks) {
            let (what, many) = if unreadable {
                ("cannot be read", "cannot be read")
            } else {
                ("does not match its hash", "do not match their hashes")
            };
            report.errors.push(if n == 1 {
                format!(
                    "disk '{}': {} block {block} (position {pos}) {what}",
                    disk.name,
                    crate::name::shown_path(&path)
                )
            } else {
                format!(
                    "disk '{}': {} blocks {} (positions {}) {many}",
                    disk.name,
                    crate::name::shown_path(&path),
                    runs::shown(block, block + (n - 1)),
                    runs::shown(pos, pos + (n - 1))
                )
            });
        }
    }
    let paths = parity_paths(config).unwrap_or_default();
    for (level, found) in parity {
        let stretches = runs::runs(found.iter().copied());
        let mut message = match stretches.as_slice() {
            [(a, b)] if a == b => format!(
                "parity level {} at position {a} differs from the parity of the data",
                level + 1
            ),
            _ => format!(
                "parity level {} differs from the parity of the data at {} positions: {}",
                level + 1,
                found.len(),
                runs::listed(&stretches, 10)
            ),
        };
        if let (Some(path), Some(&last)) = (paths.get(level), found.last()) {
            message += &short_parity_note(path, last, state.block_size);
        }
        report.errors.push(message);
    }
}

/// When the parity file at `path` ends before position `last`, what that means:
/// the file was cut short (a copy stopped, a full disk, a file system repair), and
/// every position past its end reads as zeros.
fn short_parity_note(path: &Path, last: u32, block_size: u32) -> String {
    let needed = (u64::from(last) + 1) * u64::from(block_size);
    match std::fs::metadata(path) {
        Ok(meta) if meta.len() < needed => format!(
            "; {} is {} bytes long, shorter than the {needed} the synced positions need, so it \
             was cut short and holds no parity from position {} on: `lhparity fix` rebuilds it \
             from the data",
            crate::name::shown_path(&path),
            meta.len(),
            meta.len() / u64::from(block_size.max(1))
        ),
        _ => String::new(),
    }
}

/// Sorts the files that were not verified because they changed since the last sync
/// from those that are gone, which are errors, as in SnapRAID: a protected file that
/// is missing is lost until `fix` brings it back, and a sync would drop its
/// protection. A disk whose files are all gone is named once (not mounted?). Files
/// that could not be opened for another reason were reported as errors already.
fn report_changed(
    config: &Config,
    state: &State,
    run: &pipeline::Run<Found>,
    selected: Option<&[Vec<bool>]>,
    report: &mut VerifyReport,
) {
    let unopened: HashSet<&(usize, usize)> = run.unopened.iter().collect();
    let mut missing: Vec<Vec<usize>> = vec![Vec::new(); state.disks.len()];
    // With -d or -f, files outside the selection read at the same positions (for
    // the parity) are not what was asked about.
    let chosen = |slot: usize, file: usize| {
        selected.is_none_or(|s| s.get(slot).and_then(|d| d.get(file)) == Some(&true))
    };
    for key @ &(slot, file) in &run.changed {
        if unopened.contains(key) || !chosen(slot, file) {
            continue;
        }
        let path = crate::name::join(&config.data[slot].dir, &state.disks[slot].files[file].path);
        match std::fs::symlink_metadata(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => missing[slot].push(file),
            _ => report.changed.push(crate::name::shown_path(&path)),
        }
    }
    for (slot, files) in missing.iter().enumerate().filter(|(_, f)| !f.is_empty()) {
        let disk = &state.disks[slot];
        let dir = &config.data[slot].dir;
        let all_gone = files.len() > 1
            && disk
                .files
                .iter()
                .enumerate()
                .filter(|&(f, _)| chosen(slot, f))
                .all(|(_, f)| std::fs::symlink_metadata(crate::name::join(dir, &f.path)).is_err());
        if all_gone {
            report.errors.push(format!(
                "disk '{}': all {} files are missing from {}; if the disk is not mounted there, mount it; if it was lost, `lhparity fix -d {}` rebuilds it (do not sync before that: a sync would drop their protection)",
                disk.name,
                disk.files.len(),
                dir.display(),
                disk.name
            ));
            continue;
        }
        for &file in files {
            report.errors.push(format!(
                "disk '{}': {} is missing (deleted or moved since the last sync); `lhparity fix -m` brings a deleted file back",
                disk.name,
                crate::name::shown_path(&crate::name::join(dir, &disk.files[file].path))
            ));
        }
    }
}

/// A parity file that cannot be opened (its disk not mounted, or the file deleted)
/// is one error naming it, not a wrong parity block at every position: nothing is
/// verified against that level, so the positions stay unverified and a scrub marks
/// none of them bad. The levels set aside go into the report.
fn set_aside_unopened_parity(
    run: &mut pipeline::Run<Found>,
    unopened: &[Unopened],
    report: &mut VerifyReport,
) {
    for (level, path, e) in unopened {
        run.errors.push(format!(
            "parity file {} (level {}) cannot be opened: {e}; nothing was verified against it: mount its disk if it is not mounted, or run `lhparity fix` to rebuild it",
            crate::name::shown_path(&path),
            level + 1
        ));
    }
    if !unopened.is_empty() {
        for f in &mut run.results {
            f.bad_parity.retain(|l| !unopened.iter().any(|u| u.0 == *l));
            f.parity_set_aside = true;
        }
    }
    report.levels_set_aside = unopened.iter().map(|u| u.0 + 1).collect();
}

/// Chooses the positions a scrub verifies.
pub fn select(state: &State, plan: Plan, older_than_days: u32, now: u64) -> Vec<u32> {
    let used = state.used_positions();
    let synced = |p: usize| used[p] && !awaits_sync(state.positions.flags[p]);
    let mut chosen: Vec<u32> = match plan {
        Plan::Full => (0..used.len())
            .filter(|&p| synced(p))
            .map(|p| p as u32)
            .collect(),
        Plan::New => (0..used.len())
            .filter(|&p| synced(p) && state.positions.flags[p] & SCRUB_NEW != 0)
            .map(|p| p as u32)
            .collect(),
        Plan::Bad => {
            let mut v: Vec<u32> = state
                .bad
                .iter()
                .map(|b| b.pos)
                .filter(|&p| synced(p as usize))
                .collect();
            v.sort_unstable();
            v.dedup();
            v
        }
        Plan::Percent(pct) => {
            let total = (0..used.len()).filter(|&p| synced(p)).count();
            let want = ((total as f64) * pct / 100.0).ceil() as usize;
            let cutoff = now.saturating_sub(u64::from(older_than_days) * 86_400);
            let mut candidates: Vec<u32> = (0..used.len())
                .filter(|&p| synced(p) && u64::from(state.positions.verified[p]) <= cutoff)
                .map(|p| p as u32)
                .collect();
            // Oldest first; the sort is stable, so equal ages keep position order.
            candidates.sort_by_key(|&p| state.positions.verified[p as usize]);
            candidates.truncate(want);
            candidates.sort_unstable();
            candidates
        }
    };
    chosen.dedup();
    chosen
}

/// Runs a scrub: verifies the chosen positions and records the result in the state.
pub fn scrub(
    config: &Config,
    plan: Plan,
    older_than_days: u32,
    progress: &dyn Progress,
) -> Result<VerifyReport, SyncError> {
    let started = Instant::now();
    let mut loaded = load_state(config)?;
    crate::sync::require_state(config, &mut loaded)?;
    let mut state = loaded.state;
    let mut positions = select(&state, plan, older_than_days, now());
    if !positions.is_empty() {
        // What is wrong in the parity files is what this reports anyway.
        parity_order::check(config, &state, &parity_paths(config)?, Before::Reading)?;
    }
    progress.start(positions.len() as u64 * u64::from(state.block_size) * state.disks.len() as u64);
    let (mut run, unopened) = verify(config, &state, &positions, true, None, progress)?;
    progress.finish();
    // Stopped by a signal: what was verified counts, the rest waits for the next scrub.
    let interrupted = (run.done < positions.len())
        .then(crate::interrupt::requested)
        .flatten();
    positions.truncate(run.done);
    run.results.truncate(run.done);
    let mut report = VerifyReport {
        notes: loaded.notes,
        interrupted,
        ..VerifyReport::default()
    };
    set_aside_unopened_parity(&mut run, &unopened, &mut report);
    summarize(config, &state, &positions, &run, &mut report, None);

    let stamp = now() as u32;
    for (j, f) in run.results.iter().enumerate() {
        let p = positions[j] as usize;
        if f.incomplete || f.changed || f.parity_set_aside {
            continue;
        }
        let clean = f.bad_data.is_empty() && f.unreadable.is_empty() && f.bad_parity.is_empty();
        if clean {
            state.positions.verified[p] = stamp;
            state.positions.flags[p] &= !SCRUB_NEW;
            // A position that verifies is no longer bad.
            state.bad.retain(|b| b.pos != positions[j]);
        }
    }
    for b in &report.bad {
        if !state.bad.contains(b) {
            state.bad.push(*b);
        }
    }
    state.bad.sort_unstable_by_key(|b| (b.pos, b.disk));
    if report.errors.is_empty() && interrupted.is_none() {
        state.last_scrub = now();
    }
    // A scrub with no position to verify has nothing to record: the copies are
    // written only if some need it (not into the empty mountpoint of a content disk
    // that is not mounted; see `copies_to_rewrite`).
    if !positions.is_empty() || loaded.copies_to_rewrite {
        let content: Vec<PathBuf> = config.content.iter().map(|c| c.path.clone()).collect();
        store::save(&mut state, &content)?;
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// What `check` covers: `-d` disks and `-f` file patterns (empty: everything), and
/// whether the parity is compared (`-a` turns it off).
#[derive(Clone, Debug, Default)]
pub struct CheckOptions {
    pub hashes_only: bool,
    pub disks: Vec<String>,
    pub files: Vec<String>,
}

/// Verifies everything (or the chosen disks/files) without changing data or state.
pub fn check(
    config: &Config,
    options: &CheckOptions,
    progress: &dyn Progress,
) -> Result<VerifyReport, SyncError> {
    let started = Instant::now();
    let mut loaded = load_state(config)?;
    crate::sync::require_state(config, &mut loaded)?;
    let state = loaded.state;
    check_disk_names(config, &state, &options.disks)?;
    let filter = file_filter(&options.files)?;
    let selected = select_files(&state, &options.disks, filter.as_ref());
    let positions = positions_of(&state, &selected);
    let (mut run, unopened) = if options.hashes_only {
        progress.start(0);
        verify(
            config,
            &state,
            &positions,
            false,
            Some(&unselected(&selected)),
            progress,
        )?
    } else {
        // What is wrong in the parity files is what this reports anyway.
        parity_order::check(config, &state, &parity_paths(config)?, Before::Reading)?;
        progress
            .start(positions.len() as u64 * u64::from(state.block_size) * state.disks.len() as u64);
        verify(config, &state, &positions, true, None, progress)?
    };
    progress.finish();
    for (j, f) in run.results.iter_mut().enumerate() {
        // The parity of a position that is not fully synced cannot be compared.
        if awaits_sync(state.positions.flags[positions[j] as usize]) {
            f.bad_parity.clear();
        }
        if options.hashes_only {
            // Blocks of files outside the selection were skipped on purpose.
            f.incomplete = false;
        }
    }
    let mut report = VerifyReport {
        notes: loaded.notes,
        ..VerifyReport::default()
    };
    set_aside_unopened_parity(&mut run, &unopened, &mut report);
    summarize(
        config,
        &state,
        &positions,
        &run,
        &mut report,
        Some(&selected),
    );
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// `-f` patterns as a filter (matching the way `include` rules match).
pub fn file_filter(patterns: &[String]) -> Result<Option<Filter>, SyncError> {
    if patterns.is_empty() {
        return Ok(None);
    }
    let mut rules = Vec::new();
    for p in patterns {
        rules.push(
            crate::config::Rule::new(crate::config::Action::Include, p)
                .map_err(|e| SyncError::Refused(format!("-f {p}: {e}")))?,
        );
    }
    Ok(Some(Filter {
        rules,
        nohidden: false,
    }))
}

/// Whether a file path is selected by a `-f` filter built from include rules: an
/// include-only filter excludes what no rule matches.
pub fn matches(filter: &Filter, path: &str) -> bool {
    !filter.is_excluded(path, false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::model::{Disk, FileEntry, LinkEntry};

    fn link(path: &str, target: &str) -> LinkEntry {
        LinkEntry {
            path: path.into(),
            target: target.into(),
        }
    }

    #[test]
    fn f_chooses_a_file_by_any_of_its_names() {
        let disk = Disk {
            files: ["media/film.mkv", "docs/notes.txt", "other"]
                .iter()
                .map(|p| FileEntry {
                    path: (*p).into(),
                    ..FileEntry::default()
                })
                .collect(),
            hardlinks: vec![
                link("seeding/film.mkv", "media/film.mkv"),
                link("docs/notes-link.txt", "docs/notes.txt"),
            ],
            links: vec![link("seeding/latest", "film.mkv")],
            ..Disk::default()
        };
        let filter = file_filter(&["seeding/".to_string()])
            .expect("pattern")
            .expect("a filter");
        let chosen = Chosen::new(Some(&filter), &disk);
        assert!(chosen.file("media/film.mkv"), "by its second name");
        assert!(!chosen.file("docs/notes.txt"));
        assert!(!chosen.file("other"));
        assert!(chosen.path("seeding/latest"));
        assert!(chosen.folder("seeding/empty"));
        assert!(chosen.folder("seeding"), "the folder the pattern names");
        assert!(!chosen.folder("docs/empty"));

        let filter = file_filter(&["docs/notes.txt".to_string()])
            .expect("pattern")
            .expect("a filter");
        let chosen = Chosen::new(Some(&filter), &disk);
        assert!(chosen.file("docs/notes.txt"), "by its own name");
        assert!(!chosen.file("media/film.mkv"));

        let filter = file_filter(&["docs/empty/".to_string(), "one".to_string()])
            .expect("pattern")
            .expect("a filter");
        let chosen = Chosen::new(Some(&filter), &disk);
        assert!(chosen.folder("docs/empty") && chosen.folder("one"));
        assert!(!chosen.folder("docs") && !chosen.folder("docs/other"));

        let everything = Chosen::new(None, &disk);
        assert!(everything.file("other") && everything.path("anything"));
    }
}
