//! `lhparity fix`: rebuild what was lost from the parity.
//!
//! 1. Decide which blocks failed: every block of the disks named with `-d`; with `-e`
//!    only the blocks marked bad. Otherwise the selected files are checked first
//!    through the pipeline, as `check` does: blocks that no longer match their hashes
//!    or cannot be read failed, and without `-f` so did every parity level that
//!    differs from data matching its hashes (SnapRAID's `fix` checks the parity
//!    too). Files missing or changed since the sync are read one by one instead:
//!    truncated or replaced files, and with `-m` files that were deleted. Parity
//!    blocks that are missing or marked bad failed too.
//! 2. The stripes holding failed blocks run through the pipeline: every other block
//!    is read and checked against its hash, the lost ones are rebuilt with the
//!    lowest parity levels, and each rebuilt block must match its stored hash before
//!    it is written (other parity combinations are tried when levels are spare).
//! 3. A repaired file is written to `NAME.lhparity-fix` (one writer thread, written
//!    back and released from the page cache as it goes), given its mode, owner and
//!    mtime, and renamed over `NAME`; a `kill -9` leaves either the old file or the
//!    repaired one, never a mix. It is not fsynced: after a power cut `check` or `fix`
//!    finds any block that did not reach the disk by its hash. A file that cannot be
//!    rebuilt completely is written as `NAME.unrecoverable` with what could be
//!    recovered; the original, if any, is left as it was.
//! 4. The state records the new inodes of files that were missing before any data
//!    is written (a file that does not come back keeps its old one), and is saved
//!    again at the end only if there is more to remember: bad flags of blocks back
//!    on disk, or the new inode of a file repaired in place.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use crossbeam::channel::{Receiver, Sender};

use crate::beneath::{self, Folder, Root};
use crate::config::Config;
use crate::hash::block_hash;
use crate::import::{self, Imports};
use crate::parity_order::{self, Before};
use crate::pipeline::{self, Block, PipelineError, Reads, Source, Status};
use crate::raid::{self, Kernel};
use crate::scrub::{file_filter, find_damage, select_files, Chosen, Damage};
use crate::state::model::{BadBlock, FileEntry, FolderEntry, Hash, State, DIRTY};
use crate::state::store;
use crate::sync::{check_disk_names, load_state, now, parity_paths, Progress, SyncError};

/// Suffix of the temporary file a repaired file is written to.
pub const FIX_SUFFIX: &str = ".lhparity-fix";
/// Suffix of a file that could only be partly rebuilt.
pub const UNRECOVERABLE_SUFFIX: &str = ".unrecoverable";

/// What to fix (the command-line flags).
#[derive(Clone, Debug, Default)]
pub struct FixOptions {
    /// `-d NAME`: rebuild every file of these disks.
    pub disks: Vec<String>,
    /// `-f PATTERN`: only files matching these patterns.
    pub files: Vec<String>,
    /// `-m`: also bring back files deleted since the last sync.
    pub missing: bool,
    /// `-e`: only blocks marked bad.
    pub bad_only: bool,
    /// `--force-device`: restore into a disk's folder even when it looks like an
    /// empty mount point whose disk is not mounted (see [`refuse_unmounted`]).
    pub force_device: bool,
    /// `-i DIR`: folders searched for copies of lost files (see [`crate::import`]).
    pub import: Vec<PathBuf>,
}

/// What a fix did.
#[derive(Clone, Debug, Default)]
pub struct FixReport {
    /// Files rewritten bit-exact.
    pub fixed: Vec<String>,
    /// Of `fixed`, the files that came back with blocks of a file found by `-i`:
    /// the restored file, and the file its blocks came from.
    pub imported: Vec<(String, String)>,
    /// Files deleted since the last sync, whose blocks the parity still holds, read
    /// from a copy found by `-i` to rebuild other files at their positions: the
    /// deleted file, and the copy.
    pub stand_ins: Vec<(String, String)>,
    /// Files written as `NAME.unrecoverable`, with the reason.
    pub unrecoverable: Vec<String>,
    /// Positions whose parity was rewritten.
    pub parity_fixed: usize,
    /// Bytes of rebuilt file data.
    pub bytes: u64,
    pub seconds: f64,
    /// Other problems (read errors, folders or links that could not be made).
    pub errors: Vec<String>,
    /// Read errors of the check before the repair: what they hit was rebuilt, or
    /// is reported among the errors or the unrecoverable files if it was not.
    pub warnings: Vec<String>,
}

/// One file to repair.
struct Target {
    slot: usize,
    file: usize,
    /// Failed blocks of the file (block indexes), sorted.
    failed: Vec<usize>,
    /// Where the blocks that did not fail come from.
    original: Original,
    /// Blocks the file needs that no parity holds (never synced): without the
    /// original, the file cannot come back whole.
    unsynced: usize,
}

/// Where a target's good blocks are.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Original {
    /// Nowhere: every block the file has comes from the parity.
    None,
    /// In the file at its recorded path.
    InPlace,
    /// In a file of an import folder (`-i`) with the lost file's size and mtime.
    Imported(PathBuf),
}

/// Runs a fix.
pub fn fix(
    config: &Config,
    options: &FixOptions,
    progress: &dyn Progress,
) -> Result<FixReport, SyncError> {
    let started = Instant::now();
    let kernel = Kernel::selected()?;
    let mut loaded = load_state(config)?;
    crate::sync::require_state(config, &mut loaded)?;
    let mut state = loaded.state;
    check_disk_names(config, &state, &options.disks)?;
    refuse_swapped_disks(config, &state, &options.disks)?;
    let order_warnings =
        parity_order::check(config, &state, &parity_paths(config)?, Before::Reading)?;
    let filter = file_filter(&options.files)?;
    import::check_folders(&options.import).map_err(SyncError::Refused)?;
    let mut report = FixReport {
        warnings: loaded.notes.into_iter().chain(order_warnings).collect(),
        ..FixReport::default()
    };
    // A damaged, missing or older content copy is written again.
    let mut must_save = loaded.copies_to_rewrite;
    // Without -e, everything selected is checked first, as `check` does: the files'
    // blocks against their hashes and, for the whole array (no -d or -f), the parity
    // of every position against its data. With -d, the files of those disks that are
    // still there are checked the same way, so only what is damaged or missing is
    // rebuilt; a file of theirs that is lost comes back in full, so nothing of it is
    // read first (a disk wiped whole costs one failed open per file).
    let lost = lost_files(config, &state, &options.disks, filter.as_ref());
    let (damage, checked_files) = if !options.bad_only {
        let mut selected = select_files(&state, &options.disks, filter.as_ref());
        for (selected, lost) in selected.iter_mut().zip(&lost) {
            for (s, &l) in selected.iter_mut().zip(lost) {
                *s &= !l;
            }
        }
        let whole_array = options.disks.is_empty() && filter.is_none();
        let damage = find_damage(config, &state, &selected, whole_array, progress)?;
        // Problems of files read one by one below are reported there, as are links
        // put where folders above them were.
        let mut again: Vec<String> = Vec::new();
        for &(slot, file) in &damage.unverified {
            let path = file_path(config, &state, slot, file);
            let root = &config.data[slot].dir;
            again.extend(
                path.ancestors()
                    .take_while(|a| a.starts_with(root) && *a != root.as_path())
                    .map(crate::name::shown_path),
            );
        }
        again.sort_unstable();
        again.dedup();
        report.warnings.extend(
            damage
                .errors
                .iter()
                .filter(|e| !again.iter().any(|p| names_path(e, p)))
                .cloned(),
        );
        (Some(damage), selected)
    } else {
        (None, Vec::new())
    };
    let Found {
        mut targets,
        adopted,
        never_synced,
    } = find_targets(
        config,
        &state,
        options,
        filter.as_ref(),
        damage.as_ref(),
        &lost,
        &mut report,
    )?;
    let deleted = if options.import.is_empty() {
        Vec::new()
    } else {
        deleted_in_the_way(config, &state, &targets, &lost)
    };
    let stand_ins = use_imports(
        config,
        &state,
        &options.import,
        &mut targets,
        (&never_synced, &deleted),
        &mut report,
    )?;
    for &(slot, file, inode) in &adopted {
        state.disks[slot].files[file].inode = inode;
        must_save = true;
    }
    // Folders that are gone now and that this fix may make again, as the parents of
    // files and links it restores, and with -d those that differ from the record:
    // they get their recorded attributes at the end.
    let gone_folders = if options.bad_only {
        Vec::new()
    } else {
        missing_folders(config, &state, options, filter.is_none())
    };
    let block_size = state.block_size as usize;

    // Failed parity: levels shorter than the array, and positions marked bad.
    let paths = parity_paths(config)?;
    // A parity file that can be read but not written (a disk remounted read-only
    // after errors, an immutable file) still serves to rebuild data; nothing is
    // written to it, and the report says why.
    let mut read_only = vec![false; paths.len()];
    let parity_files: Vec<Option<File>> = paths
        .iter()
        .zip(&mut read_only)
        .map(|(p, read_only)| match OpenOptions::new().read(true).write(true).open(p) {
            Ok(f) => Some(f),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                let f = File::open(p).ok()?;
                *read_only = true;
                report.warnings.push(format!(
                    "parity file {} cannot be written ({e}): it is read to rebuild data, but no parity is rewritten in it; make it writable (remount its disk read-write) and run `lhparity fix` again",
                    crate::name::shown_path(&p)
                ));
                Some(f)
            }
        })
        .collect();
    let positions_len = state.positions.len() as u64;
    let parity_len: Vec<u64> = parity_files
        .iter()
        .map(|f| {
            f.as_ref()
                .and_then(|f| f.metadata().ok())
                .map_or(0, |m| m.len())
        })
        .collect();
    let mut parity_failed: HashMap<u32, Vec<usize>> = HashMap::new();
    if !options.bad_only {
        // Past a parity file's end only positions whose parity holds a block are
        // lost: the others (appended by a sync that stopped, or holes) are the
        // parity of nothing, which the next sync writes.
        let held = state.parity_held();
        for (level, &len) in parity_len.iter().enumerate() {
            let have = len / block_size as u64;
            for p in have.min(positions_len)..positions_len {
                if held[p as usize] {
                    parity_failed.entry(p as u32).or_default().push(level);
                }
            }
        }
    }
    // Parity a scrub found wrong: it does not record which level, so every level
    // there is suspected. The same goes for a position a scrub marked for its data:
    // wrong data hides whether the parity there is right, so the scrub did not
    // judge it. The check above tells which levels (see `Damage`). Suspected levels
    // still serve the rebuild, whose hash check picks a good one, and are then
    // recomputed from the verified stripe.
    for b in &state.bad {
        parity_failed.insert(b.pos, (0..paths.len()).collect());
    }
    for (pos, levels) in damage.iter().flat_map(|d| &d.parity) {
        let failed = parity_failed.entry(*pos).or_default();
        failed.extend(levels);
        failed.sort_unstable();
        failed.dedup();
    }
    // Parity files that are missing are created to be rebuilt; `fix -e` only
    // repairs marked blocks, so it leaves them missing and says what rebuilds them.
    let parity_files: Vec<Option<File>> = parity_files
        .into_iter()
        .zip(&paths)
        .map(|(f, p)| {
            if f.is_none() && options.bad_only {
                report.errors.push(format!(
                    "parity file {} is missing; `fix -e` repairs only the blocks a scrub marked: run `lhparity fix` to rebuild it",
                    crate::name::shown_path(p)
                ));
                return None;
            }
            f.or_else(|| {
                OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(p)
                    .ok()
            })
        })
        .collect();

    // The positions to process, and per (slot, position) the target block there.
    let mut failed_at: HashMap<(usize, u32), (usize, usize)> = HashMap::new();
    let mut positions: Vec<u32> = parity_failed.keys().copied().collect();
    for (t, target) in targets.iter().enumerate() {
        let entry = &state.disks[target.slot].files[target.file];
        let pos_of: Vec<u32> = entry.positions().collect();
        for &b in &target.failed {
            if let Some(&pos) = pos_of.get(b) {
                failed_at.insert((target.slot, pos), (t, b));
                positions.push(pos);
            }
        }
    }
    positions.sort_unstable();
    positions.dedup();

    if !options.force_device {
        refuse_unmounted(config, &state, &targets)?;
    }
    // Temporary files for the targets.
    let mut temps: Vec<Option<TempFile>> = Vec::with_capacity(targets.len());
    // A link in the way of many files is named once.
    let mut links_named: HashSet<String> = HashSet::new();
    for target in &targets {
        let path = file_path(config, &state, target.slot, target.file);
        let root = &config.data[target.slot].dir;
        temps.push(
            match create_temp(
                root,
                &path,
                state.disks[target.slot].files[target.file].size,
            ) {
                Ok(f) => Some(f),
                Err(e) if is_in_the_way(&e) => {
                    if links_named.insert(e.to_string()) {
                        report.errors.push(format!(
                            "{e}; the files below it were not restored (the first: {})",
                            crate::name::shown_path(&path)
                        ));
                    }
                    None
                }
                Err(e) => {
                    report.errors.push(format!(
                        "creating {}{FIX_SUFFIX}: {e}",
                        crate::name::shown_path(&path)
                    ));
                    None
                }
            },
        );
    }

    // A missing file comes back as its temporary file's inode (the rename keeps it):
    // record that now, while little is waiting to be written, so that the next diff
    // sees the files the state describes. Saving at the end instead would wait for
    // the whole rebuilt disk to reach the platter, because a content file on that
    // disk is committed together with the new files' data. Only files that are not
    // there are recorded early: a file that is there keeps its inode in the state
    // until the repaired one is renamed over it, so a fix that stops halfway never
    // makes a good file look changed.
    let content: Vec<PathBuf> = config.content.iter().map(|c| c.path.clone()).collect();
    let early = record_missing_inodes(config, &mut state, &targets, &temps);
    if !early.is_empty() {
        must_save = store::save(&mut state, &content).is_err();
    }

    let deleted: HashMap<(usize, u32), Hash> = state
        .disks
        .iter()
        .enumerate()
        .flat_map(|(slot, d)| d.deleted.iter().map(move |b| ((slot, b.pos), b.hash)))
        .collect();
    let skip: Vec<Vec<bool>> = state
        .disks
        .iter()
        .enumerate()
        .map(|(slot, d)| {
            // A target whose file is still there is read: its good blocks serve
            // the rebuild of others at their positions, and its failed blocks are
            // taken as lost (see `position_with`).
            let mut s = vec![false; d.files.len()];
            for t in targets
                .iter()
                .filter(|t| t.slot == slot && t.original == Original::None)
            {
                s[t.file] = true;
            }
            s
        })
        .collect();
    let mut sources = pipeline::data_sources(&state.disks, &config.data, Some(&skip));
    // A file changed since the sync still serves the others: its blocks are used
    // only as far as they match their hashes (a rebuild that fails its check has the
    // survivors checked), so one whose mtime alone changed costs nothing. So does a
    // file moved to another disk since the sync, read there (a pool's balance moves
    // files between disks; the parity still has them in their old places).
    // A lost file for which `-i` found a copy is read there, as such a moved file.
    let dirs: Vec<&Path> = config.data.iter().map(|d| d.dir.as_path()).collect();
    let mut imported: Vec<HashMap<usize, PathBuf>> = vec![HashMap::new(); state.disks.len()];
    for t in &targets {
        if let Original::Imported(from) = &t.original {
            imported[t.slot].insert(t.file, from.clone());
        }
    }
    let stand_in_files: Vec<FileAt> = stand_ins.iter().map(|&(at, _)| at).collect();
    for ((slot, file), copy) in stand_ins {
        imported[slot].insert(file, copy);
    }
    for (source, imported) in sources.iter_mut().zip(&imported) {
        if let Source::Data {
            read_changed,
            elsewhere,
            imported: from,
            ..
        } = source
        {
            *read_changed = true;
            *elsewhere = &dirs;
            *from = (!imported.is_empty()).then_some(imported);
        }
    }
    // Rebuilding n disks needs n parity levels: the others are read only where a
    // rebuild fails its hash check (or their parity needs rewriting).
    let eager = if options.disks.is_empty() {
        paths.len()
    } else {
        options.disks.len().min(paths.len())
    };
    for (path, file) in paths.iter().zip(&parity_files).take(eager) {
        sources.push(Source::Parity {
            path,
            file: file.as_ref(),
        });
    }
    let write_errors = Mutex::new(Vec::new());
    let parity_write_failures = Mutex::new(vec![None; paths.len()]);
    // Kept: the blocks in flight to the writer, and per stage thread a stripe's
    // worth of checked copies and rebuilt blocks.
    let stripe = state.disks.len() + paths.len();
    let keep = WRITE_QUEUE + 16 + rayon::current_num_threads() * stripe;
    let buffers = BufferPool::new(block_size, keep);
    progress.start(positions.len() as u64 * block_size as u64 * state.disks.len() as u64);
    let (run, unwritten) = std::thread::scope(|scope| {
        let (writes, queue) = crossbeam::channel::bounded(WRITE_QUEUE);
        let names: Vec<(String, PathBuf)> = targets
            .iter()
            .map(|t| {
                let disk = state.disks[t.slot].name.clone();
                (disk, file_path(config, &state, t.slot, t.file))
            })
            .collect();
        let (temps, buffers, write_errors) = (&temps, &buffers, &write_errors);
        let writer = scope
            .spawn(move || write_blocks(queue, temps, &names, block_size, buffers, write_errors));
        let stage = FixStage {
            kernel,
            state: &state,
            block_size,
            deleted: &deleted,
            failed_at: &failed_at,
            parity_failed: &parity_failed,
            writes,
            buffers,
            parity_files: &parity_files,
            read_only: &read_only,
            write_errors,
            parity_write_failures: &parity_write_failures,
            zero: vec![0u8; block_size],
            eager,
        };
        let run = pipeline::run(
            block_size,
            &positions,
            &sources,
            None,
            &|j, blocks, _| stage.position(positions[j], blocks),
            &|b| progress.advance(b),
            Reads::Map,
        );
        // The writer ends once the stage, holding the last sender, is gone.
        drop(stage);
        let unwritten = writer.join().unwrap_or_default();
        (run, unwritten)
    });
    let mut run = run?;
    progress.finish();
    // A block rebuilt but not written is not recovered, and its position not fixed.
    let not_written: HashSet<(usize, usize)> = unwritten.iter().map(|u| (u.0, u.1)).collect();
    for result in &mut run.results {
        let rebuilt = result.recovered.len();
        result.recovered.retain(|tb| !not_written.contains(tb));
        if result.recovered.len() < rebuilt {
            result.complete = false;
        }
    }
    let unwritten_bytes: u64 = unwritten.iter().map(|u| u.2).sum();
    report.errors.extend(run.errors.iter().cloned());
    if let Ok(mut e) = write_errors.lock() {
        report.errors.append(&mut e);
    }
    let failures = parity_write_failures.into_inner().unwrap_or_default();
    for (level, failure) in failures.into_iter().enumerate() {
        if let Some((count, first, error)) = failure {
            report.errors.push(format!(
                "parity level {} ({}) could not be written at {count} position(s), the first \
                 at position {first}: {error}; the rest of the fix is done: make room or \
                 mend that disk, then run `lhparity fix` again",
                level + 1,
                paths
                    .get(level)
                    .map_or_else(String::new, |p| crate::name::shown_path(&p))
            ));
        }
    }

    // Which target blocks came back, which parity positions were rewritten.
    let mut recovered: Vec<Vec<bool>> = targets
        .iter()
        .map(|t| vec![false; t.failed.len()])
        .collect();
    for result in &run.results {
        for &(t, b) in &result.recovered {
            if let Ok(k) = targets[t].failed.binary_search(&b) {
                recovered[t][k] = true;
            }
        }
        if result.parity_rewritten {
            report.parity_fixed += 1;
        }
        report.bytes += result.bytes;
    }
    report.bytes = report.bytes.saturating_sub(unwritten_bytes);
    for file in parity_files.iter().flatten() {
        if let Err(e) = file.sync_data() {
            report.errors.push(format!("flushing parity: {e}"));
        }
    }

    let mut new_inodes = Vec::new();
    let mut placed = vec![false; targets.len()];
    // A file the writer could not write (a full disk, say) is not unrecoverable: its
    // blocks were rebuilt. Its temporary file goes, and the writer's error (naming the
    // disk and what to do) stands; a fix after that rebuilds it.
    let write_failed: HashSet<usize> = unwritten.iter().map(|u| u.0).collect();
    for ((t, target), temp) in targets.iter().enumerate().zip(temps) {
        let Some(temp) = temp else { continue };
        let path = file_path(config, &state, target.slot, target.file);
        if write_failed.contains(&t) {
            temp.remove();
            continue;
        }
        let entry = &state.disks[target.slot].files[target.file];
        let mut lost = recovered[t].iter().filter(|&&r| !r).count();
        if target.original != Original::InPlace {
            lost += target.unsynced;
        }
        // The inode the repair replaces (the original it read), whose other names
        // follow the repaired file.
        let replaced = (target.original == Original::InPlace)
            .then(|| fs::symlink_metadata(&path).ok().map(|m| m.ino()))
            .flatten();
        let finished = temp.open().and_then(|file| {
            finish_file(
                &temp,
                entry,
                target,
                &file,
                (block_size, &state.hash_key),
                lost == 0,
            )
        });
        match (finished, lost) {
            (Ok(_), 0) => {
                placed[t] = true;
                // The repaired file is a new inode: record it, so that the next diff
                // sees the file the state describes.
                if let Ok(meta) = fs::symlink_metadata(&path) {
                    if meta.ino() != entry.inode {
                        new_inodes.push((target.slot, target.file, meta.ino()));
                    }
                    note_owner(&path, &meta, (entry.uid, entry.gid), &mut report);
                }
                // Its other names still on the damaged inode, or on the recorded one
                // (the first name was replaced or lost), name the repaired file from
                // now on; a missing one comes back only with -m.
                let root = &config.data[target.slot].dir;
                let names = state.disks[target.slot]
                    .hardlinks
                    .iter()
                    .filter(|l| l.target == entry.path);
                // The inode the state recorded (a missing file's entry already
                // holds its temporary file's, see `record_missing_inodes`).
                let recorded = early
                    .iter()
                    .find(|&&(e, _)| e == t)
                    .map_or(entry.inode, |&(_, inode)| inode);
                for name in names {
                    // On the recorded inode, the size and mtime must be the
                    // recorded ones too: a new file can get a freed inode number.
                    let same_file = |m: &fs::Metadata| {
                        m.is_file()
                            && (Some(m.ino()) == replaced
                                || (m.ino() == recorded && pipeline::same_stamp(m, entry)))
                    };
                    if let Err(e) =
                        relink(root, &path, &crate::name::join(root, &name.path), same_file)
                    {
                        report.errors.push(format!(
                            "making {} a hard link to the repaired {} again: {e}",
                            crate::name::shown_path(&crate::name::join(root, &name.path)),
                            crate::name::shown_path(&path)
                        ));
                    }
                }
                if let Original::Imported(from) = &target.original {
                    report.imported.push((
                        crate::name::shown_path(&path),
                        crate::name::shown_path(from),
                    ));
                }
                report.fixed.push(crate::name::shown_path(&path));
            }
            (Ok(kept), n) => report.unrecoverable.push(match &target.original {
                // Blocks not in the parity have no hash: a copy's are taken as
                // they are, and said to be unchecked.
                Original::Imported(from) if target.unsynced > 0 => format!(
                    "{}: {n} of {} blocks could not be rebuilt or checked: {} of them are not in the parity yet and were copied unchecked from {} (make sure that file is the one before using the result); what could be is in {}",
                    crate::name::shown_path(&path),
                    FileEntry::block_count(entry.size, state.block_size),
                    target.unsynced,
                    crate::name::shown_path(from),
                    crate::name::shown_path(&kept)
                ),
                _ => format!(
                    "{}: {n} of {} blocks could not be rebuilt or written; what could be is in {}",
                    crate::name::shown_path(&path),
                    FileEntry::block_count(entry.size, state.block_size),
                    crate::name::shown_path(&kept)
                ),
            }),
            (Err(e), _) => report
                .errors
                .push(format!("writing {}: {e}", crate::name::shown_path(&path))),
        }
    }
    for (slot, file, inode) in new_inodes {
        state.disks[slot].files[file].inode = inode;
        must_save = true;
    }
    // Blocks that did not come back because a file deleted since the sync held
    // blocks at their positions: the user may have that file somewhere.
    let unrecovered = failed_positions(&state, &targets, |t, k| !recovered[t][k]);
    if !unrecovered.is_empty() {
        let skip: HashSet<FileAt> = targets
            .iter()
            .map(|t| (t.slot, t.file))
            .chain(stand_in_files.iter().copied())
            .collect();
        let gone = gone_at(config, &state, &unrecovered, &skip, &lost);
        if let Some(&(slot, file)) = gone.first() {
            report.warnings.push(format!(
                "{} file(s) gone from their disks since the last sync hold blocks the parity needs to rebuild what could not be, the first {}: if you have them (a backup, a copy), give the folder holding them with `-i DIR`, or put them back, and run `lhparity fix` again",
                gone.len(),
                crate::name::shown_path(&file_path(config, &state, slot, file))
            ));
        }
    }
    // A file recorded early that did not come back in full keeps its old inode.
    for (t, inode) in early {
        if !placed[t] {
            let target = &targets[t];
            state.disks[target.slot].files[target.file].inode = inode;
            must_save = true;
        }
    }
    if clear_bad_blocks(
        &mut state,
        &targets,
        &placed,
        &recovered,
        &positions,
        &run.results,
    ) {
        must_save = true;
    }
    if let Some(damage) = &damage {
        if clear_found_good(&mut state, &checked_files, damage) {
            must_save = true;
        }
    }
    for name in &options.disks {
        if let Some(slot) = state.disks.iter().position(|d| &d.name == name) {
            restore_dirs_and_links(config, &state, slot, filter.as_ref(), false, &mut report);
        }
    }
    if options.missing && !options.bad_only {
        restore_deleted_names(config, &state, options, filter.as_ref(), &mut report);
        // Deleted symbolic links and empty folders come back too (the disks of -d
        // had theirs above); folders that are there are left as they are.
        if options.disks.is_empty() {
            for slot in 0..state.disks.len() {
                restore_dirs_and_links(config, &state, slot, filter.as_ref(), true, &mut report);
            }
        }
    }
    restore_folder_attributes(config, &state, &gone_folders, &mut report);
    // Like SnapRAID, a fix that changed nothing the state must remember leaves the
    // content files alone.
    if must_save {
        store::save(&mut state, &content)?;
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Refuses `-d` of a disk whose folder holds another data disk's files rather than
/// its own (two mounts swapped): rebuilding there would write over them. A file
/// that matches both disks (the same path, size and mtime on each, as after a
/// `cp -a`) counts for neither. It takes at least half of the other disk's files,
/// and more of them than of the disk's own: an empty disk, one with some of its own
/// files left, or one holding a stray file is what `-d` is for.
fn refuse_swapped_disks(config: &Config, state: &State, names: &[String]) -> Result<(), SyncError> {
    let stamps = |files: &[FileEntry]| -> HashMap<String, (u64, i64)> {
        files
            .iter()
            .map(|f| (f.path.clone(), (f.size, f.mtime_ns)))
            .collect()
    };
    for name in names {
        let Some(slot) = state.disks.iter().position(|d| &d.name == name) else {
            continue;
        };
        // A disk that cannot be scanned is met by the fix's own errors.
        let Ok(scan) = crate::scan::scan_disk(config, &config.data[slot]) else {
            continue;
        };
        let own = stamps(&state.disks[slot].files);
        let same = |f: &crate::scan::Found, map: &HashMap<String, (u64, i64)>| {
            map.get(&f.path) == Some(&(f.size, f.mtime_ns))
        };
        for (other, disk) in state.disks.iter().enumerate() {
            if other == slot || disk.files.is_empty() {
                continue;
            }
            let theirs = stamps(&disk.files);
            let (mut own_only, mut theirs_only) = (0usize, Vec::new());
            for f in &scan.files {
                match (same(f, &own), same(f, &theirs)) {
                    (true, false) => own_only += 1,
                    (false, true) => theirs_only.push(f),
                    _ => {}
                }
            }
            if theirs_only.len() * 2 >= disk.files.len() && theirs_only.len() > own_only {
                return Err(SyncError::Refused(format!(
                    "-d {name}: {} holds {} of the {} files of disk '{}' (e.g. {}) and {own_only} \
                     of its own: the disks look swapped, and a rebuild there would write over \
                     them; mount each disk at the folder of its `data` line in {} and retry",
                    crate::name::shown_path(&config.data[slot].dir),
                    theirs_only.len(),
                    disk.files.len(),
                    disk.name,
                    crate::name::shown(&theirs_only[0].path),
                    config.source.display(),
                )));
            }
        }
    }
    Ok(())
}

/// Whether a read error's message is about `path` itself: the path followed by
/// the `:` or ` ` that ends it in the messages, not a longer path that starts
/// with it (`movie.mkv` is not `movie.mkv.bak`).
fn names_path(message: &str, path: &str) -> bool {
    message.match_indices(path).any(|(at, _)| {
        matches!(
            message[at + path.len()..].chars().next(),
            None | Some(':' | ' ')
        )
    })
}

fn file_path(config: &Config, state: &State, slot: usize, file: usize) -> PathBuf {
    crate::name::join(&config.data[slot].dir, &state.disks[slot].files[file].path)
}

/// Per data disk, which of its recorded files are lost, for the disks in `disks`
/// (all `false` on the others): gone, or behind a link or a file where a folder
/// was. A file that is there but cannot be opened (permissions) is not lost: it is
/// reported where it is read.
fn lost_files(
    config: &Config,
    state: &State,
    disks: &[String],
    filter: Option<&crate::config::Filter>,
) -> Vec<Vec<bool>> {
    let gone = |e: std::io::Error| {
        e.kind() == std::io::ErrorKind::NotFound
            || e.raw_os_error() == Some(libc::ENOTDIR)
            || beneath::is_link(&e)
    };
    state
        .disks
        .iter()
        .zip(&config.data)
        .map(|(disk, data)| {
            if !disks.contains(&disk.name) {
                return vec![false; disk.files.len()];
            }
            let chosen = Chosen::new(filter, disk);
            let root = Root::open(&data.dir).ok();
            disk.files
                .iter()
                .map(|f| {
                    chosen.file(&f.path)
                        && beneath::open_recorded(root.as_ref(), &data.dir, &f.path)
                            .is_err_and(gone)
                })
                .collect()
        })
        .collect()
}

/// A file whose bytes all match their hashes under another inode than the recorded
/// one: disk slot, file, inode.
type Adopted = (usize, usize, u64);

/// A recorded file: disk slot, file.
type FileAt = (usize, usize);

/// What [`find_targets`] found.
struct Found {
    targets: Vec<Target>,
    adopted: Vec<Adopted>,
    /// Lost files none of whose blocks is in the parity.
    never_synced: Vec<FileAt>,
}

/// Finds the files to repair and their failed blocks, and the files to adopt.
fn find_targets(
    config: &Config,
    state: &State,
    options: &FixOptions,
    filter: Option<&crate::config::Filter>,
    damage: Option<&Damage>,
    lost: &[Vec<bool>],
    report: &mut FixReport,
) -> Result<Found, SyncError> {
    let mut targets = Vec::new();
    let mut adopted = Vec::new();
    // Lost files none of whose blocks is in the parity (see `use_imports`).
    let mut never_synced = Vec::new();
    // Files deleted since the sync and left alone (no `-m`): named in a warning.
    let mut left_deleted: Vec<PathBuf> = Vec::new();
    // Links found where folders were, each reported once.
    let mut linked_folders: Vec<PathBuf> = Vec::new();
    for (slot, disk) in state.disks.iter().enumerate() {
        let chosen = Chosen::new(filter, disk);
        let wanted = |path: &str| chosen.file(path);
        let whole_disk = options.disks.contains(&disk.name);
        if !options.disks.is_empty() && !whole_disk {
            continue;
        }
        let bad_positions: Vec<u32> = state
            .bad
            .iter()
            .filter(|b| b.disk == disk.index)
            .map(|b| b.pos)
            .collect();
        // Files with other names (hard links), which a lost first name may be
        // linked back to.
        let linked: HashSet<&str> = disk.hardlinks.iter().map(|l| l.target.as_str()).collect();
        let restoring = whole_disk || (options.missing && !options.bad_only);
        let dir = &config.data[slot].dir;
        // Recorded files are opened from the disk's root through folders only.
        let root = Root::open(dir).ok();
        let open = |f: &FileEntry| beneath::open_recorded(root.as_ref(), dir, &f.path);
        for (i, f) in disk.files.iter().enumerate() {
            if !wanted(&f.path) {
                continue;
            }
            let blocks = f.hashes.len();
            // Blocks never synced cannot come back from parity.
            let synced = |b: &usize| !f.is_new(*b);
            let path = crate::name::join(&config.data[slot].dir, &f.path);
            let every_synced = || (0..blocks).filter(synced).collect::<Vec<usize>>();
            // A lost first name of a file whose other name survives is linked to it.
            if restoring
                && linked.contains(f.path.as_str())
                && matches!(fs::symlink_metadata(&path), Err(e) if e.kind() == std::io::ErrorKind::NotFound)
                && link_from_survivor(
                    &config.data[slot].dir,
                    disk,
                    f,
                    (&state.hash_key, state.block_size as usize),
                )
            {
                report.fixed.push(crate::name::shown_path(&path));
                continue;
            }
            // A whole disk's file lost with the disk comes back in full; one still
            // there is checked like any other.
            let lost = lost[slot][i];
            let failed: Vec<usize> = if lost {
                every_synced()
            } else if options.bad_only {
                let bad: Vec<usize> = f
                    .positions()
                    .enumerate()
                    .filter(|(b, p)| bad_positions.contains(p) && synced(b))
                    .map(|(b, _)| b)
                    .collect();
                if bad.is_empty() {
                    continue;
                }
                // Bad blocks are put back into the file the sync saw: one changed
                // since is left to `sync` (or a plain `fix`), and without the file
                // there is nothing to copy good blocks from, so all come back.
                match open(f) {
                    Ok(handle) if !pipeline::unchanged(&handle, f) => {
                        // Every byte as synced under another inode, as a fix stopped
                        // after renaming its repair into place leaves it: the state
                        // takes the inode (as a plain fix does), and the marked
                        // blocks are rebuilt all the same, so the parity there is
                        // judged too.
                        if let Some(ino) =
                            moved_intact(&handle, f, &state.hash_key, state.block_size)
                        {
                            adopted.push((slot, i, ino));
                            bad
                        } else {
                            report.warnings.push(format!(
                                "{} changed since the last sync: its bad blocks were not rebuilt; run `lhparity sync` to keep the change, or `lhparity fix -f` on it to restore the synced file",
                                crate::name::shown_path(&path)
                            ));
                            continue;
                        }
                    }
                    Ok(_) => bad,
                    Err(_) => every_synced(),
                }
            } else if let Some(blocks) = damage
                .filter(|d| !d.unverified.contains(&(slot, i)))
                .map(|d| d.blocks.get(&(slot, i)))
            {
                // Checked in full by the pass above.
                blocks
                    .into_iter()
                    .flatten()
                    .copied()
                    .filter(synced)
                    .collect()
            } else {
                // Missing, or changed since the sync: its bytes decide, one by one.
                match open(f) {
                    // Through a link put where a folder was, the file is not on
                    // the disk: restoring it names the link (nothing is written).
                    Err(e) if beneath::is_link(&e) && !options.missing => {
                        let link =
                            beneath::first_link(dir, Path::new(&*crate::name::to_os(&f.path)));
                        match link.filter(|l| *l != path) {
                            // The file itself is a link: reported below.
                            None => every_synced(),
                            Some(link) => {
                                if !linked_folders.contains(&link) {
                                    report.errors.push(format!(
                                        "{} is a symbolic link where the last sync saw a folder; it is not followed, and the files below it were neither checked nor restored: remove the link (or put the folder back) and run `lhparity fix` again, or run `lhparity sync` if the link is meant",
                                        crate::name::shown_path(&link)
                                    ));
                                    linked_folders.push(link);
                                }
                                Vec::new()
                            }
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound || beneath::is_link(&e) => {
                        if options.missing {
                            every_synced()
                        } else {
                            left_deleted.push(path.clone());
                            Vec::new()
                        }
                    }
                    Err(e) => {
                        report
                            .errors
                            .push(format!("opening {}: {e}", crate::name::shown_path(&path)));
                        Vec::new()
                    }
                    Ok(handle) => {
                        let damaged =
                            damaged_blocks(&handle, f, &state.hash_key, state.block_size as usize);
                        // Every byte is what the state records, under another inode:
                        // a repaired copy renamed over it by a fix stopped before it
                        // saved, or a restore that kept the mtime. The state takes the
                        // inode, so check and scrub verify the file again.
                        let moved = handle.metadata().ok().filter(|m| {
                            m.is_file() && m.ino() != f.inode && pipeline::same_stamp(m, f)
                        });
                        if let Some(m) = moved {
                            if damaged.is_empty() && (0..blocks).all(|b| synced(&b)) {
                                adopted.push((slot, i, m.ino()));
                            }
                        }
                        damaged.into_iter().filter(synced).collect()
                    }
                }
            };
            // An empty file has no block to rebuild, but a lost one still comes back.
            let there = || exists_beneath(dir, &path);
            let gone = lost || (options.missing && !there());
            let empty_lost = blocks == 0 && gone;
            // A lost file none of whose blocks is in the parity yet cannot come back
            // at all: said, rather than left out without a word.
            if failed.is_empty() && blocks > 0 && gone && !(0..blocks).any(|b| synced(&b)) {
                never_synced.push((slot, i));
                continue;
            }
            if failed.is_empty() && !empty_lost {
                continue;
            }
            // A symbolic link made where the file was is the user's: left alone, and
            // the file is not back (an error, as `check` says).
            if fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink()) {
                report.errors.push(format!(
                    "{} is a symbolic link now, so the file synced there was not restored; remove the link and run `lhparity fix -m` to restore it, or `lhparity sync` if the link is meant",
                    crate::name::shown_path(&path)
                ));
                continue;
            }
            targets.push(Target {
                slot,
                file: i,
                failed,
                original: if !lost && there() {
                    Original::InPlace
                } else {
                    Original::None
                },
                unsynced: (0..blocks).filter(|b| !synced(b)).count(),
            });
        }
    }
    if let Some(first) = left_deleted.first() {
        report.warnings.push(format!(
            "{} file(s) deleted since the last sync were left deleted, the first {}: `lhparity \
             fix -m` brings them back (with `-f` for some of them), `lhparity sync` drops them \
             from the parity",
            left_deleted.len(),
            crate::name::shown_path(first)
        ));
    }
    Ok(Found {
        targets,
        adopted,
        never_synced,
    })
}

/// With `-i`: a target with no original takes a file of the import folders with its
/// size and mtime as one, the file whose blocks match the most of its hashes (when
/// any do). Its blocks that match are copied; only the others are rebuilt from the
/// parity, and the copied ones serve the rebuild of other files at their positions,
/// so files come back where more disks were lost than there are parity levels.
///
/// The lost files of `never_synced` (none of whose blocks is in the parity, so no
/// hash says what they held) are listed as unrecoverable, with the file of the
/// import folders that looks like one, which nothing can check.
fn use_imports(
    config: &Config,
    state: &State,
    dirs: &[PathBuf],
    targets: &mut [Target],
    (never_synced, deleted): (&[FileAt], &[FileAt]),
    report: &mut FixReport,
) -> Result<Vec<(FileAt, PathBuf)>, SyncError> {
    let entry = |t: &Target| &state.disks[t.slot].files[t.file];
    let file = |&(slot, i): &FileAt| &state.disks[slot].files[i];
    let wanted: HashSet<import::Stamp> = targets
        .iter()
        .filter(|t| t.original == Original::None && !t.failed.is_empty())
        .map(|t| (entry(t).size, entry(t).mtime_ns))
        .chain(
            never_synced
                .iter()
                .chain(deleted)
                .map(|n| (file(n).size, file(n).mtime_ns)),
        )
        .collect();
    let imports = if dirs.is_empty() {
        Imports::default()
    } else {
        Imports::find(dirs, &wanted, &mut report.warnings).map_err(SyncError::Refused)?
    };
    for n in never_synced {
        let f = file(n);
        let path = crate::name::shown_path(&file_path(config, state, n.0, n.1));
        let blocks = f.hashes.len();
        report.unrecoverable.push(match imports.candidates((f.size, f.mtime_ns)).first() {
            Some(like) => format!(
                "{path}: none of its {blocks} blocks is in the parity yet (it was added or changed after the last complete sync), so nothing of it can be rebuilt or checked; {} has its size and mtime, but with no hash to check it against it was not used: copy it back yourself if it is the file",
                crate::name::shown_path(like)
            ),
            None => format!(
                "{path}: none of its {blocks} blocks is in the parity yet (it was added or changed after the last complete sync), so nothing of it can be rebuilt; restore it from a copy, or run `lhparity sync` to drop it from the state"
            ),
        });
    }
    let block_size = state.block_size as usize;
    // Each candidate is read once, however many lost files share its stamp (files
    // unpacked from an archive share one mtime).
    let mut hashed: HashMap<&Path, Option<Vec<Option<Hash>>>> = HashMap::new();
    // The candidate for `f` that has the most of its blocks `wanted`, and the
    // blocks of `wanted` it lacks; none when no candidate has any.
    let mut best_copy = |f: &FileEntry, wanted: &[usize]| -> Option<(PathBuf, Vec<usize>)> {
        let stamp = (f.size, f.mtime_ns);
        // Per candidate, the blocks it lacks, up to the first that lacks none.
        let mut lacking: Vec<Vec<usize>> = Vec::new();
        for path in imports.candidates(stamp) {
            let hashes = hashed
                .entry(path.as_path())
                .or_insert_with(|| import::block_hashes(path, stamp, &state.hash_key, block_size));
            lacking.push(import::lacking(hashes.as_deref(), &f.hashes, wanted));
            if lacking.last().is_some_and(Vec::is_empty) {
                break;
            }
        }
        let counts: Vec<usize> = lacking.iter().map(Vec::len).collect();
        let i = import::best(&counts, wanted.len())?;
        Some((
            imports.candidates(stamp)[i].clone(),
            std::mem::take(&mut lacking[i]),
        ))
    };
    for target in targets.iter_mut() {
        if target.original != Original::None || target.failed.is_empty() {
            continue;
        }
        let f = &state.disks[target.slot].files[target.file];
        if let Some((copy, lacking)) = best_copy(f, &target.failed) {
            target.failed = lacking;
            target.original = Original::Imported(copy);
        }
    }
    // A deleted file's copy serves as far as its blocks match; the pipeline checks
    // each block it takes.
    let mut stand_ins = Vec::new();
    for &at in deleted {
        let f = file(&at);
        let synced: Vec<usize> = (0..f.hashes.len()).filter(|&b| !f.is_new(b)).collect();
        if let Some((copy, lacking)) = best_copy(f, &synced) {
            let gone = crate::name::shown_path(&file_path(config, state, at.0, at.1));
            // Its other blocks are still missing where the parity needs them.
            if !lacking.is_empty() {
                report.warnings.push(format!(
                    "{} differs from {gone} (gone from its disk since the last sync) in {} of its {} synced blocks: it stands in for the others only, and what needs those blocks may not be rebuilt",
                    crate::name::shown_path(&copy),
                    lacking.len(),
                    synced.len()
                ));
            }
            report
                .stand_ins
                .push((gone, crate::name::shown_path(&copy)));
            stand_ins.push((at, copy));
        }
    }
    Ok(stand_ins)
}

/// The files deleted since the last sync (gone from their disk, and no target of
/// this fix) that hold blocks the parity needs to rebuild a target's failed blocks:
/// SnapRAID's `-i` case, where a copy of such a file stands in for it.
fn deleted_in_the_way(
    config: &Config,
    state: &State,
    targets: &[Target],
    lost: &[Vec<bool>],
) -> Vec<FileAt> {
    let needed = failed_positions(state, targets, |_, _| true);
    let rebuilt: HashSet<FileAt> = targets.iter().map(|t| (t.slot, t.file)).collect();
    gone_at(config, state, &needed, &rebuilt, lost)
}

/// The positions of the failed blocks of `targets` that `pick` (target, index in
/// its `failed`) keeps.
fn failed_positions(
    state: &State,
    targets: &[Target],
    pick: impl Fn(usize, usize) -> bool,
) -> HashSet<u32> {
    let mut found = HashSet::new();
    for (t, target) in targets.iter().enumerate() {
        let positions: Vec<u32> = state.disks[target.slot].files[target.file]
            .positions()
            .collect();
        for (k, &b) in target.failed.iter().enumerate() {
            if let Some(&pos) = positions.get(b).filter(|_| pick(t, k)) {
                found.insert(pos);
            }
        }
    }
    found
}

/// The recorded files with a synced block at one of `positions` that are gone from
/// their disks, other than those of `skip` and the lost ones. A file moved to
/// another data disk since the sync (at its path there, with its size and mtime)
/// is not gone: the rebuild reads it there.
fn gone_at(
    config: &Config,
    state: &State,
    positions: &HashSet<u32>,
    skip: &HashSet<FileAt>,
    lost: &[Vec<bool>],
) -> Vec<FileAt> {
    let dirs: Vec<&Path> = config.data.iter().map(|d| d.dir.as_path()).collect();
    let roots = std::cell::OnceCell::new();
    let moved = |slot: usize, f: &FileEntry| {
        let roots =
            roots.get_or_init(|| dirs.iter().map(|d| Root::open(d).ok()).collect::<Vec<_>>());
        pipeline::moved_copy(&dirs, roots, dirs[slot], f).is_some()
    };
    let mut gone = Vec::new();
    for (slot, disk) in state.disks.iter().enumerate() {
        for (i, f) in disk.files.iter().enumerate() {
            let in_the_way = f
                .positions()
                .enumerate()
                .any(|(b, pos)| !f.is_new(b) && positions.contains(&pos));
            if in_the_way
                && !skip.contains(&(slot, i))
                && !lost[slot][i]
                && !exists_beneath(dirs[slot], &file_path(config, state, slot, i))
                && !moved(slot, f)
            {
                gone.push((slot, i));
            }
        }
    }
    gone
}

/// The inode of `handle` when it is the file `f` records in every byte, mtime and
/// size, every block synced, under another inode.
fn moved_intact(handle: &File, f: &FileEntry, key: &[u8; 32], block_size: u32) -> Option<u64> {
    let m = handle.metadata().ok()?;
    let moved = m.is_file() && m.ino() != f.inode && pipeline::same_stamp(&m, f);
    let synced = (0..f.hashes.len()).all(|b| !f.is_new(b));
    (moved && synced && damaged_blocks(handle, f, key, block_size as usize).is_empty())
        .then_some(m.ino())
}

/// Reads a file and returns the blocks whose bytes do not match their hashes
/// (including blocks cut off by truncation).
fn damaged_blocks(handle: &File, f: &FileEntry, key: &[u8; 32], block_size: usize) -> Vec<usize> {
    let mut buf = vec![0u8; block_size];
    let mut damaged = Vec::new();
    for b in 0..f.hashes.len() {
        let offset = b as u64 * block_size as u64;
        let len = f.size.saturating_sub(offset).min(block_size as u64) as usize;
        let ok = handle.read_exact_at(&mut buf[..len], offset).is_ok()
            && block_hash(key, &buf[..len]) == f.hashes[b];
        if !ok {
            damaged.push(b);
        }
    }
    // A file grown past its recorded size is damaged too (its last block decides).
    if handle.metadata().is_ok_and(|m| m.len() != f.size) && !f.hashes.is_empty() {
        let last = f.hashes.len() - 1;
        if !damaged.contains(&last) {
            damaged.push(last);
        }
    }
    damaged
}

/// A target's temporary file. It is made for every target before the rebuild, but
/// held open only while blocks are written to it (see [`OpenTemps`]): a disk of
/// more files than the process may open must still come back in one run.
struct TempFile {
    /// The data disk's root, and the file's path below it.
    root: PathBuf,
    rel: PathBuf,
    /// Its inode, to tell it from anything put at its name meanwhile.
    ino: u64,
}

impl TempFile {
    /// The temporary file, opened again to read and write it (from the disk's root,
    /// through folders only).
    fn open(&self) -> std::io::Result<File> {
        let file =
            Root::open(&self.root)?.open_rw(&self.rel).map_err(|e| {
                match beneath::first_link(&self.root, &self.rel) {
                    Some(link) if beneath::is_link(&e) => in_the_way(&link, e),
                    _ => e,
                }
            })?;
        if file.metadata()?.ino() != self.ino {
            return Err(std::io::Error::other(format!(
                "{} was replaced by another file while the fix ran",
                crate::name::shown_path(&self.path())
            )));
        }
        Ok(file)
    }

    /// Where it is.
    fn path(&self) -> PathBuf {
        self.root.join(&self.rel)
    }

    /// Removes it, when it is still there; best effort.
    fn remove(&self) {
        if let Ok((folder, name)) = folder_of(&self.root, &self.path()) {
            let _ = folder.remove_file(name);
        }
    }
}

fn create_temp(root: &Path, path: &Path, size: u64) -> std::io::Result<TempFile> {
    let temp = with_suffix(path, FIX_SUFFIX);
    let (Some(parent), Some(name), Ok(rel)) =
        (temp.parent(), temp.file_name(), temp.strip_prefix(root))
    else {
        return Err(outside(root, path));
    };
    let folder = make_folders_beneath(root, parent)?;
    // What a killed run left there, or anything else of that name, goes first: a
    // new file is made (never opened through a symlink or a hard link of another
    // file, which it would overwrite).
    match folder.remove_file(name) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let file = folder.create_new(name)?;
    file.set_len(size)?;
    let ino = file.metadata()?.ino();
    Ok(TempFile {
        root: root.to_path_buf(),
        rel: rel.to_path_buf(),
        ino,
    })
}

/// The error of a path that is not below its disk's root.
fn outside(root: &Path, path: &Path) -> std::io::Error {
    std::io::Error::other(format!(
        "{} is not inside the data disk {}",
        crate::name::shown_path(path),
        crate::name::shown_path(root)
    ))
}

/// Refuses to restore files into a data disk whose folder is empty and not a mount
/// point while every other data disk is a mount point, or while the folder is on the
/// root file system and the last sync found the disk on another one (its recorded
/// UUID): its new disk is most likely not mounted there, and the whole disk would be
/// restored into the file system the folder sits on (often the system's).
fn refuse_unmounted(config: &Config, state: &State, targets: &[Target]) -> Result<(), SyncError> {
    let mounted: Vec<Option<bool>> = config.data.iter().map(|d| is_mount_point(&d.dir)).collect();
    for (slot, data) in config.data.iter().enumerate() {
        let receives = targets
            .iter()
            .any(|t| t.slot == slot && t.original != Original::InPlace);
        let others_mounted = mounted
            .iter()
            .enumerate()
            .all(|(j, m)| j == slot || *m == Some(true));
        if receives
            && config.data.len() > 1
            && mounted[slot] == Some(false)
            && others_mounted
            && is_empty(&data.dir)
        {
            return Err(SyncError::Refused(format!(
                "disk '{}': {} is an empty folder, not a mount point, while every other data disk is a mount point: its disk is most likely not mounted, and its {} files would be restored into the file system below; mount it and run the fix again (pass --force-device if the folder is meant)",
                state.disks[slot].name,
                data.dir.display(),
                state.disks[slot].files.len()
            )));
        }
        let disk = &state.disks[slot];
        let device = |p: &Path| fs::metadata(p).ok().map(|m| m.dev());
        if receives
            && mounted[slot] == Some(false)
            && !disk.uuid.is_empty()
            && device(&data.dir) == device(Path::new("/"))
            && is_empty(&data.dir)
            && disk.uuid != crate::sync::fs_uuid(Path::new("/"))
        {
            return Err(SyncError::Refused(format!(
                "disk '{}': {} is an empty folder of the root file system, but the last sync found this disk on a file system of its own (UUID {}): its disk is most likely not mounted, and its {} files would be restored onto the root file system; mount it (or its replacement) and run the fix again (pass --force-device if the folder is meant)",
                disk.name,
                data.dir.display(),
                disk.uuid,
                disk.files.len()
            )));
        }
    }
    Ok(())
}

/// Whether the folder `dir` is where a file system is mounted: on another device
/// than its parent, or the top of the tree. `None` when either cannot be looked at.
fn is_mount_point(dir: &Path) -> Option<bool> {
    let here = fs::metadata(dir).ok()?;
    let parent = fs::metadata(dir.join("..")).ok()?;
    Some(here.dev() != parent.dev() || here.ino() == parent.ino())
}

/// Whether the folder `dir` holds nothing (`false` when it cannot be listed).
fn is_empty(dir: &Path) -> bool {
    fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_none())
}

/// The longest file name Linux file systems take, in bytes.
const NAME_MAX: usize = 255;

/// `path` with `suffix` added to its file name. A name too long for that is cut
/// and given a hash of the whole name, so that it stays distinct and is found again
/// by the next run.
fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    let name = path.file_name().map_or(&[][..], |n| n.as_bytes());
    let mut new = if name.len() + suffix.len() <= NAME_MAX {
        name.to_vec()
    } else {
        let hex = blake3::hash(name).to_hex();
        let tag = &hex[..16];
        let keep = NAME_MAX - suffix.len() - tag.len() - 1;
        let mut cut = name[..keep.min(name.len())].to_vec();
        cut.push(b'~');
        cut.extend_from_slice(tag.as_bytes());
        cut
    };
    new.extend_from_slice(suffix.as_bytes());
    path.with_file_name(std::ffi::OsString::from_vec(new))
}

/// What the fix stage did at one position.
#[derive(Clone, Debug, Default)]
struct PositionFix {
    /// Target blocks rebuilt and verified: (target, block).
    recovered: Vec<(usize, usize)>,
    /// Every level lost or suspected here is right now: written, or confirmed.
    parity_written: bool,
    /// Some level was written, and every one that was to be was.
    parity_rewritten: bool,
    /// Everything lost at this position came back.
    complete: bool,
    /// A level proved wrong while none was to be written: nothing was done, and
    /// the position is to be done again with every level suspected.
    judge_again: bool,
    bytes: u64,
}

struct FixStage<'a> {
    kernel: Kernel,
    state: &'a State,
    block_size: usize,
    deleted: &'a HashMap<(usize, u32), Hash>,
    failed_at: &'a HashMap<(usize, u32), (usize, usize)>,
    parity_failed: &'a HashMap<u32, Vec<usize>>,
    /// Where rebuilt target blocks go: the writer thread of [`write_blocks`].
    writes: Sender<BlockWrite>,
    /// Block buffers for rebuilt blocks, back from the writer after each write.
    buffers: &'a BufferPool,
    parity_files: &'a [Option<File>],
    /// Per level, whether its file was opened for reading only.
    read_only: &'a [bool],
    write_errors: &'a Mutex<Vec<String>>,
    /// Per parity level, how many positions could not be written and the first
    /// failure (position, error): reported once per level after the run.
    parity_write_failures: &'a Mutex<Vec<Option<ParityWriteFailure>>>,
    zero: Vec<u8>,
    /// Parity levels the pipeline reads; the rest are read here when needed.
    eager: usize,
}

/// Positions of one parity level that could not be written: how many, and the
/// first position with its error.
type ParityWriteFailure = (u64, u32, String);

/// A rebuilt, verified block on its way to its target's temporary file.
struct BlockWrite {
    target: usize,
    block: usize,
    bytes: Vec<u8>,
    len: usize,
}

/// Block-sized buffers used again and again: fresh allocations of this size come
/// from the system each time (page faults and zeroing, and on virtual machines that
/// hand free memory back to the host, a host fault per page).
struct BufferPool {
    size: usize,
    keep: usize,
    free: Mutex<Vec<Vec<u8>>>,
}

impl BufferPool {
    /// A pool of `size`-byte buffers that keeps at most `keep` free ones.
    fn new(size: usize, keep: usize) -> BufferPool {
        BufferPool {
            size,
            keep,
            free: Mutex::new(Vec::new()),
        }
    }

    /// A buffer of the block size; its bytes are whatever it last held.
    fn take(&self) -> Vec<u8> {
        let reused = self.free.lock().ok().and_then(|mut free| free.pop());
        reused.unwrap_or_else(|| vec![0u8; self.size])
    }

    fn give_all(&self, buffers: impl IntoIterator<Item = Vec<u8>>) {
        if let Ok(mut free) = self.free.lock() {
            for buffer in buffers {
                if free.len() < self.keep && buffer.len() == self.size {
                    free.push(buffer);
                }
            }
        }
    }
}

/// Buffers of a pool lent to one position, given back when it is done.
struct Lent<'p> {
    pool: &'p BufferPool,
    buffers: Vec<Option<Vec<u8>>>,
}

impl Drop for Lent<'_> {
    fn drop(&mut self) {
        self.pool.give_all(self.buffers.drain(..).flatten());
    }
}

/// How many rebuilt blocks may wait for the writer (16 MiB at the default block
/// size).
const WRITE_QUEUE: usize = 64;

/// Writes rebuilt blocks to the targets' temporary files as they arrive, until every
/// sender is gone. One thread does all the writing: the stage's threads, writing
/// into one file at once, would mostly wait on each other for the file's lock.
/// Returns the blocks that could not be written (target, block, bytes); each
/// target's first write error is reported in `errors`, naming the disk and file.
fn write_blocks(
    blocks: Receiver<BlockWrite>,
    temps: &[Option<TempFile>],
    names: &[(String, PathBuf)],
    block_size: usize,
    buffers: &BufferPool,
    errors: &Mutex<Vec<String>>,
) -> Vec<(usize, usize, u64)> {
    let mut failed: Vec<(usize, usize, u64)> = Vec::new();
    let mut release = Release::default();
    let mut open = OpenTemps::new();
    for w in blocks {
        let Some(temp) = temps.get(w.target).and_then(Option::as_ref) else {
            failed.push((w.target, w.block, w.len as u64));
            continue;
        };
        let offset = w.block as u64 * block_size as u64;
        // A block of zeros stays a hole of the temporary file (made at its full size):
        // a sparse file comes back sparse, and nothing is written for it.
        if all_zero(&w.bytes[..w.len]) {
            buffers.give_all([w.bytes]);
            continue;
        }
        let written = open
            .get(w.target, temp, &mut release)
            .and_then(|file| file.write_all_at(&w.bytes[..w.len], offset));
        buffers.give_all([w.bytes]);
        if let Err(e) = written {
            let first = !failed.iter().any(|&(t, _, _)| t == w.target);
            if let (true, Some((disk, path)), Ok(mut errors)) =
                (first, names.get(w.target), errors.lock())
            {
                let hint = if e.raw_os_error() == Some(libc::ENOSPC) {
                    "; free space on the disk (or give it a larger one) and run fix again"
                } else {
                    ""
                };
                errors.push(format!(
                    "disk '{disk}': writing {}{FIX_SUFFIX}: {e}{hint}",
                    crate::name::shown_path(&path)
                ));
            }
            failed.push((w.target, w.block, w.len as u64));
            continue;
        }
        release.written(&open, w.target, offset, w.len as u64);
    }
    failed
}

/// Whether `bytes` are all zero: 64 bytes at a time, which the compiler vectorizes.
fn all_zero(bytes: &[u8]) -> bool {
    let mut chunks = bytes.chunks_exact(64);
    chunks.all(|c| c.iter().fold(0u8, |a, &b| a | b) == 0)
        && chunks.remainder().iter().all(|&b| b == 0)
}

/// At most this many temporary files are open at once while rebuilt blocks are
/// written; blocks come in position order, so a file is mostly written in one go.
/// Fewer under a low open-file limit (see [`OpenTemps::new`]).
const MAX_OPEN_TEMPS: usize = 64;

/// The temporary files the writer has open, the most recently used last.
struct OpenTemps {
    open: Vec<(usize, File)>,
    /// How many may be open at once.
    cap: usize,
}

impl OpenTemps {
    /// With room for [`MAX_OPEN_TEMPS`] files, or a quarter of the descriptors the
    /// open-file limit leaves free now (readers open files too), at least one.
    fn new() -> OpenTemps {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes only `limit`.
        let got = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0;
        let used = fs::read_dir("/proc/self/fd").map_or(0, |d| d.count());
        let free = usize::try_from(limit.rlim_cur)
            .unwrap_or(usize::MAX)
            .saturating_sub(used);
        let cap = if got {
            (free / 4).clamp(1, MAX_OPEN_TEMPS)
        } else {
            MAX_OPEN_TEMPS
        };
        OpenTemps {
            open: Vec::new(),
            cap,
        }
    }

    /// Target `target`'s temporary file `temp`, opened if it is not; the least
    /// recently used one is closed past [`MAX_OPEN_TEMPS`], after `release` let its
    /// written blocks go.
    fn get(
        &mut self,
        target: usize,
        temp: &TempFile,
        release: &mut Release,
    ) -> std::io::Result<&File> {
        if let Some(i) = self.open.iter().position(|(t, _)| *t == target) {
            let entry = self.open.remove(i);
            self.open.push(entry);
        } else {
            if self.open.len() >= self.cap {
                let (old, file) = self.open.remove(0);
                release.let_go(old, &file);
            }
            self.open.push((target, temp.open()?));
        }
        // Just pushed or moved there.
        self.open
            .last()
            .map(|(_, file)| file)
            .ok_or_else(|| std::io::Error::other("no open temporary file"))
    }

    fn file(&self, target: usize) -> Option<&File> {
        self.open.iter().find(|(t, _)| *t == target).map(|(_, f)| f)
    }
}

/// How many written bytes stay in the page cache behind the newest write.
const RELEASE_BEHIND: u64 = 8 << 20;

/// Starts writing back rebuilt blocks as they are written, and drops them from the
/// page cache once `RELEASE_BEHIND` bytes newer than them were written (by then they
/// are on the disk): a rebuilt disk is not read again soon, and a restore of
/// terabytes must neither evict the cache of the whole system nor pile up dirty
/// pages, which the kernel would throttle and a later fsync on that disk would wait
/// for. The window spans all files, so many small files are let go too. Purely
/// advisory: errors are ignored, the data is in the files either way.
#[derive(Default)]
struct Release {
    /// Written ranges still in the cache, oldest first: (target, offset, length).
    pending: std::collections::VecDeque<(usize, u64, u64)>,
    bytes: u64,
}

impl Release {
    fn written(&mut self, open: &OpenTemps, target: usize, offset: u64, len: u64) {
        let Some(file) = open.file(target) else {
            return;
        };
        range_op(file, offset, len, libc::SYNC_FILE_RANGE_WRITE, false);
        self.pending.push_back((target, offset, len));
        self.bytes += len;
        while self.bytes > RELEASE_BEHIND {
            let Some((target, offset, len)) = self.pending.pop_front() else {
                break;
            };
            self.bytes -= len;
            if let Some(file) = open.file(target) {
                range_op(file, offset, len, WAIT_WRITTEN, true);
            }
        }
    }

    /// Lets go of the pending ranges of `target` (`file`), which is being closed.
    fn let_go(&mut self, target: usize, file: &File) {
        let bytes = &mut self.bytes;
        self.pending.retain(|&(t, offset, len)| {
            if t != target {
                return true;
            }
            range_op(file, offset, len, WAIT_WRITTEN, true);
            *bytes -= len;
            false
        });
    }
}

/// `sync_file_range` flags that start writing a range and wait until it is written.
const WAIT_WRITTEN: libc::c_uint = libc::SYNC_FILE_RANGE_WAIT_BEFORE
    | libc::SYNC_FILE_RANGE_WRITE
    | libc::SYNC_FILE_RANGE_WAIT_AFTER;

/// `sync_file_range` with `flags` over a range, then with `drop` the advice that
/// its pages are not needed.
fn range_op(file: &File, offset: u64, len: u64, flags: libc::c_uint, drop: bool) {
    use std::os::fd::AsRawFd;
    let (Ok(start), Ok(length)) = (libc::off_t::try_from(offset), libc::off_t::try_from(len))
    else {
        return;
    };
    // SAFETY: a plain syscall on an open descriptor; it reads no memory of ours.
    unsafe { libc::sync_file_range(file.as_raw_fd(), start, length, flags) };
    if drop {
        pipeline::drop_cached(file, offset, len as usize);
    }
}

/// Rebuilt blocks of one stripe.
struct Rebuilt {
    data: Vec<Vec<u8>>,
    parity: Vec<Vec<u8>>,
    /// The first rebuild failed its hash check and another choice of levels (or
    /// of surviving blocks) gave it back: some level or block there is wrong.
    fell_back: bool,
}

/// A lost block of the stripe and how to tell it came back right.
#[derive(Clone, Copy)]
struct Lost {
    column: usize,
    /// The expected hash and real length, when known.
    check: Option<(Hash, usize)>,
    /// The target block to write it to.
    target: Option<(usize, usize)>,
}

impl FixStage<'_> {
    fn position(&self, pos: u32, blocks: &[Block]) -> Result<PositionFix, PipelineError> {
        let levels = self.parity_files.len();
        let lazy_needed = self
            .parity_failed
            .get(&pos)
            .is_some_and(|l| l.iter().any(|&l| l >= self.eager));
        if !lazy_needed {
            let last = self.eager == levels;
            let fix = self.position_with(pos, blocks, &[], last, false)?;
            if fix.judge_again && last {
                return self.position_with(pos, blocks, &[], last, true);
            }
            // A level that proved wrong here puts the others in doubt too: they are
            // read below, and all judged.
            if (fix.complete && !fix.judge_again) || last {
                return Ok(fix);
            }
        }
        // Read the remaining levels and try again with all of them.
        let bs = self.block_size;
        let lazy: Vec<Option<Vec<u8>>> = self.parity_files[self.eager..]
            .iter()
            .map(|f| {
                let f = f.as_ref()?;
                let mut buf = vec![0u8; bs];
                f.read_exact_at(&mut buf, u64::from(pos) * bs as u64).ok()?;
                Some(buf)
            })
            .collect();
        self.judged(pos, blocks, &lazy, true)
    }

    /// [`position_with`](Self::position_with), done again with every level there
    /// suspected when a level proved wrong on the way (the first rebuild failed its
    /// hash check, its padding came back wrong, or a level it did not use differs)
    /// while none was to be written: the surviving blocks are then copied and
    /// checked, and each level is recomputed from the verified stripe and
    /// rewritten if it differs, as where a scrub marked the position.
    fn judged(
        &self,
        pos: u32,
        blocks: &[Block],
        lazy: &[Option<Vec<u8>>],
        last: bool,
    ) -> Result<PositionFix, PipelineError> {
        let fix = self.position_with(pos, blocks, lazy, last, false)?;
        if fix.judge_again {
            return self.position_with(pos, blocks, lazy, last, true);
        }
        Ok(fix)
    }

    /// One position with the pipeline's parity levels plus `lazy` ones read here
    /// (`None`: missing or unreadable). `last`: no other attempt follows, so a
    /// failure to rebuild parity is reported. `suspect_all`: every level there is
    /// suspected.
    fn position_with(
        &self,
        pos: u32,
        blocks: &[Block],
        lazy: &[Option<Vec<u8>>],
        last: bool,
        suspect_all: bool,
    ) -> Result<PositionFix, PipelineError> {
        let state = self.state;
        let bs = self.block_size;
        let disks = state.disks.len();
        let columns = state.columns();
        let levels = self.eager + lazy.len();
        // Copies of the surviving blocks read in place, where parity is written
        // (below).
        let mut checked = Lent {
            pool: self.buffers,
            buffers: Vec::new(),
        };
        // The stripe as the parity saw it: surviving blocks are the pipeline's
        // buffers themselves (no copy), `None` marks a lost block.
        let mut stripe: Vec<Option<&[u8]>> = vec![Some(self.zero.as_slice()); columns + levels];
        let mut lost: Vec<Lost> = Vec::new();
        // Surviving blocks with a known hash, checked only if a rebuild fails.
        let mut suspects: Vec<Lost> = Vec::new();
        let mut fix = PositionFix::default();

        // Parity blocks that are not there are lost. Those a scrub found wrong are
        // only suspected (it cannot tell which level is): they still serve to
        // rebuild data, whose hash check tells, and are recomputed afterwards from
        // the verified data.
        let mut lost_parity: Vec<usize> = Vec::new();
        // Suspected levels found right once the stripe is verified.
        let mut confirmed = false;
        for (level, block) in blocks[disks..].iter().enumerate() {
            match block.status {
                Status::Present { .. } => stripe[columns + level] = Some(block.bytes),
                _ => lost_parity.push(level),
            }
        }
        for (i, buf) in lazy.iter().enumerate() {
            match buf {
                Some(b) => stripe[columns + self.eager + i] = Some(b.as_slice()),
                None => lost_parity.push(self.eager + i),
            }
        }
        lost_parity.sort_unstable();
        lost_parity.dedup();
        let marked = self.parity_failed.get(&pos).into_iter().flatten().copied();
        let all = (0..levels).filter(|_| suspect_all);
        let mut suspected: Vec<usize> = marked
            .chain(all)
            .filter(|&l| l < levels && lost_parity.binary_search(&l).is_err())
            .collect();
        suspected.sort_unstable();
        suspected.dedup();
        // Parity that can be written at all: a level whose file could not be opened
        // or created is only missing.
        let writable = |l: &usize| {
            self.parity_files.get(*l).is_some_and(Option::is_some)
                && !self.read_only.get(*l).copied().unwrap_or(false)
        };
        let parity_wanted = lost_parity.iter().chain(&suspected).any(writable);
        // Parity to write is computed from surviving blocks checked against their
        // hashes first. Bytes read in place are the page cache itself, which can
        // change under us: those are copied, checked, and used as copied.
        if parity_wanted {
            checked.buffers = blocks[..disks]
                .iter()
                .map(|block| {
                    block.in_place.then(|| {
                        let mut copy = self.buffers.take();
                        copy.copy_from_slice(block.bytes);
                        copy
                    })
                })
                .collect();
        }

        // For a position an interrupted sync left DIRTY, whose parity may already be
        // that of the new blocks: the new blocks here (their bytes, or `None` when
        // unreadable) and the columns of deleted blocks, which that parity no longer
        // holds.
        let mut newer: Vec<(usize, Option<&[u8]>)> = Vec::new();
        let mut gone_columns: Vec<usize> = Vec::new();
        for (slot, block) in blocks[..disks].iter().enumerate() {
            let column = state.disks[slot].index as usize;
            let deleted = self.deleted.contains_key(&(slot, pos));
            if deleted {
                gone_columns.push(column);
            }
            // A block the parity holds but whose data is gone: a deleted file's
            // block. It only needs rebuilding as a means to the others, so it has
            // nothing to be checked against.
            let gone = Lost {
                column,
                check: None,
                target: None,
            };
            match block.status {
                Status::Present {
                    file,
                    block: b,
                    len,
                } => {
                    let entry = &state.disks[slot].files[file];
                    let failed = self
                        .failed_at
                        .get(&(slot, pos))
                        .copied()
                        .filter(|&(_, tb)| tb == b);
                    if let (Some(target), false) = (failed, entry.is_new(b)) {
                        // A failed block of a target still there: rebuilt, whatever
                        // it reads now.
                        lost.push(Lost {
                            column,
                            check: Some((entry.hashes[b], len)),
                            target: Some(target),
                        });
                    } else if !entry.is_new(b) {
                        let survivor = Lost {
                            column,
                            check: Some((entry.hashes[b], len)),
                            target: None,
                        };
                        let copy = checked.buffers.get(slot).and_then(Option::as_deref);
                        let bytes = copy.unwrap_or(block.bytes);
                        if !parity_wanted {
                            stripe[column] = Some(bytes);
                            suspects.push(survivor);
                        } else if block_hash(&state.hash_key, &bytes[..len]) == entry.hashes[b] {
                            stripe[column] = Some(bytes);
                        } else {
                            // Damaged or changed: rebuilt (and checked) like a lost one.
                            lost.push(survivor);
                        }
                    } else {
                        newer.push((column, Some(block.bytes)));
                        if deleted {
                            // Not in the parity: the parity holds the deleted block.
                            lost.push(gone);
                        }
                    }
                }
                Status::Skipped { file, block: b } | Status::Unreadable { file, block: b } => {
                    let entry = &state.disks[slot].files[file];
                    if !entry.is_new(b) {
                        let len = entry
                            .size
                            .saturating_sub(b as u64 * bs as u64)
                            .min(bs as u64) as usize;
                        let target = self.failed_at.get(&(slot, pos)).copied();
                        lost.push(Lost {
                            column,
                            check: Some((entry.hashes[b], len)),
                            target: target.filter(|&(_, tb)| tb == b),
                        });
                    } else {
                        newer.push((column, None));
                        if deleted {
                            lost.push(gone);
                        }
                    }
                }
                Status::Absent => {
                    if deleted {
                        lost.push(gone);
                    }
                }
            }
        }

        let trusted = state
            .positions
            .flags
            .get(pos as usize)
            .is_some_and(|f| f & DIRTY == 0);
        let not_rebuilt = |why: &str| {
            if parity_wanted && last {
                self.note(format!("parity at position {pos} was not rebuilt: {why}"));
            }
        };
        // A sync that stopped (killed, a disk failing) leaves the positions it was
        // writing DIRTY: each parity level there is the parity of the blocks before
        // that sync, or of the blocks it was syncing. Both are tried, and only a
        // rebuild that gives back every lost block's hash is taken; nothing is
        // written to the parity of such a position, which the next sync recomputes.
        let guessing = !trusted && !lost.is_empty();
        let rebuilt = if guessing {
            let before = (stripe.clone(), lost.clone(), suspects.clone());
            match self.rebuild(&mut stripe, columns, &mut lost, suspects, &lost_parity)? {
                Some(r) => Some(r),
                None => {
                    let (old_stripe, old_lost, old_suspects) = before;
                    stripe = old_stripe;
                    lost = old_lost
                        .into_iter()
                        .filter(|l| l.check.is_some() || !gone_columns.contains(&l.column))
                        .collect();
                    for &column in &gone_columns {
                        stripe[column] = Some(self.zero.as_slice());
                    }
                    for &(column, bytes) in &newer {
                        match bytes {
                            Some(b) => stripe[column] = Some(b),
                            None => lost.push(Lost {
                                column,
                                check: None,
                                target: None,
                            }),
                        }
                    }
                    lost.sort_by_key(|l| l.column);
                    self.rebuild(&mut stripe, columns, &mut lost, old_suspects, &lost_parity)?
                }
            }
        } else {
            self.rebuild(&mut stripe, columns, &mut lost, suspects, &lost_parity)?
        };
        let Some(rebuilt) = rebuilt else {
            if guessing {
                not_rebuilt("a sync stopped while it was writing this position, and the parity from before it and from it both fail to rebuild the lost blocks; run `lhparity sync`");
            } else {
                not_rebuilt(
                    "data there is damaged or changed and cannot be rebuilt with the parity left; `lhparity check` names the file: restore it from a backup, then run `lhparity sync`",
                );
            }
            return Ok(fix);
        };
        if guessing {
            suspected.clear();
        }
        let Rebuilt {
            mut data,
            mut parity,
            fell_back,
        } = rebuilt;
        // A file's last block is padded with zeros in the parity. A level wrong only
        // there still gives back the block's hash: the bytes are right, the padding
        // rebuilt with them is not. It is put right, and where parity is written
        // (from checked copies), the parity lost here is computed again from it and
        // every level there is judged against it.
        let mut padding_wrong = false;
        for (l, bytes) in lost.iter().zip(data.iter_mut()) {
            if let Some((_, len)) = l.check {
                if !all_zero(&bytes[len..]) {
                    bytes[len..].fill(0);
                    padding_wrong = true;
                }
            }
        }
        // Where no parity was to be written, a level shown wrong (the first rebuild
        // failed its hash check, the padding came back wrong, or a level the rebuild
        // did not use differs from the stripe made whole) sends the position round
        // again with every level suspected. Nothing is sent or written yet.
        if !parity_wanted && !guessing && !suspect_all {
            let again =
                fell_back || padding_wrong || self.spare_differs(&stripe, columns, &lost, &data)?;
            if again {
                self.buffers.give_all(data.into_iter().chain(parity));
                fix.judge_again = true;
                return Ok(fix);
            }
        }
        if padding_wrong && parity_wanted && !guessing {
            if !lost_parity.is_empty() {
                let out = self.parity_of(&stripe, columns, &lost, &data, &[], &lost_parity)?;
                self.buffers.give_all(std::mem::replace(&mut parity, out));
            }
            suspected.extend(
                (0..levels).filter(|&l| stripe[columns + l].is_some() && !lost_parity.contains(&l)),
            );
            suspected.sort_unstable();
            suspected.dedup();
        }
        // The suspected levels, from the complete, verified stripe.
        if !suspected.is_empty() {
            let known: Vec<(usize, &[u8])> = lost_parity
                .iter()
                .zip(&parity)
                .map(|(&level, bytes)| (level, bytes.as_slice()))
                .collect();
            let out = self.parity_of(&stripe, columns, &lost, &data, &known, &suspected)?;
            // A suspected level that was right after all is confirmed, not rewritten.
            for (&level, bytes) in suspected.iter().zip(out) {
                if stripe.get(columns + level).copied().flatten() == Some(bytes.as_slice()) {
                    confirmed = true;
                    self.buffers.give_all([bytes]);
                } else {
                    lost_parity.push(level);
                    parity.push(bytes);
                }
            }
        }
        for (l, bytes) in lost.iter().zip(data) {
            if let Some((target, block)) = l.target {
                let len = l.check.map_or(bs, |(_, len)| len);
                let write = BlockWrite {
                    target,
                    block,
                    bytes,
                    len,
                };
                // Counted as recovered now; a block the writer fails on is taken
                // back out after the pipeline.
                if self.writes.send(write).is_ok() {
                    fix.recovered.push((target, block));
                    fix.bytes += len as u64;
                }
            }
        }
        // The position's parity counts as rewritten (and its bad mark goes) only
        // when every level that was to be written was.
        let mut all_written = true;
        let mut any_written = false;
        for (&level, bytes) in lost_parity.iter().zip(&parity) {
            if guessing {
                all_written = false;
                continue;
            }
            if self.read_only[level] {
                all_written = false;
                continue;
            }
            if let Some(file) = &self.parity_files[level] {
                match file.write_all_at(bytes, u64::from(pos) * bs as u64) {
                    Ok(()) => any_written = true,
                    Err(e) => {
                        all_written = false;
                        if let Ok(mut failures) = self.parity_write_failures.lock() {
                            if let Some(slot) = failures.get_mut(level) {
                                let (count, _, _) =
                                    slot.get_or_insert_with(|| (0, pos, e.to_string()));
                                *count += 1;
                            }
                        }
                    }
                }
            }
        }
        fix.parity_rewritten = any_written && all_written;
        fix.parity_written = (any_written || confirmed) && all_written;
        self.buffers.give_all(parity);
        fix.complete = true;
        Ok(fix)
    }

    /// Rebuilds the lost blocks and checks every one with a known hash. When that
    /// fails, the surviving blocks are checked too (a damaged one joins the lost),
    /// and with spare parity levels other combinations are tried until one gives
    /// blocks that all match. Returns the rebuilt data blocks (in `lost` order) and
    /// parity blocks (in `lost_parity` order), or `None` when nothing works.
    fn rebuild<'s>(
        &self,
        stripe: &mut [Option<&'s [u8]>],
        columns: usize,
        lost: &mut Vec<Lost>,
        suspects: Vec<Lost>,
        lost_parity: &[usize],
    ) -> Result<Option<Rebuilt>, PipelineError> {
        let levels = stripe.len() - columns;
        let key = &self.state.hash_key;
        let matches = |l: &Lost, bytes: &[u8]| {
            l.check
                .is_none_or(|(hash, len)| block_hash(key, &bytes[..len]) == hash)
        };
        let attempt = |stripe: &[Option<&[u8]>], lost: &[Lost], choice: Option<&[usize]>| {
            let mut out: Vec<Vec<u8>> = (0..lost.len() + lost_parity.len())
                .map(|_| self.buffers.take())
                .collect();
            let mut refs: Vec<&mut [u8]> = out.iter_mut().map(|b| b.as_mut_slice()).collect();
            raid::rebuild_with(self.kernel, columns, stripe, choice, &mut refs)?;
            let parity = out.split_off(lost.len());
            let ok = lost.iter().zip(&out).all(|(l, b)| matches(l, b));
            if !ok {
                self.buffers.give_all(out.into_iter().chain(parity));
                return Ok::<_, PipelineError>(None);
            }
            Ok(Some(Rebuilt {
                data: out,
                parity,
                fell_back: false,
            }))
        };
        let mark = |stripe: &mut [Option<&'s [u8]>], lost: &[Lost]| {
            for l in lost {
                stripe[l.column] = None;
            }
            for &level in lost_parity {
                stripe[columns + level] = None;
            }
        };
        mark(stripe, lost);
        if lost.len() + lost_parity.len() > levels {
            return Ok(None);
        }
        if let Some(r) = attempt(stripe, lost, None)? {
            return Ok(Some(r));
        }
        // Some surviving block must be wrong: find the damaged ones.
        for s in suspects {
            if let Some(bytes) = stripe[s.column] {
                if !matches(&s, bytes) {
                    lost.push(s);
                }
            }
        }
        lost.sort_by_key(|l| l.column);
        mark(stripe, lost);
        if lost.len() + lost_parity.len() > levels {
            return Ok(None);
        }
        let available: Vec<usize> = (0..levels).filter(|l| !lost_parity.contains(l)).collect();
        for combo in combinations(&available, lost.len()) {
            if let Some(mut r) = attempt(stripe, lost, Some(&combo))? {
                r.fell_back = true;
                if !lost_parity.is_empty() {
                    // Lost parity is recomputed from the now verified data.
                    let out = self.parity_of(stripe, columns, lost, &r.data, &[], lost_parity)?;
                    self.buffers.give_all(std::mem::replace(&mut r.parity, out));
                }
                return Ok(Some(r));
            }
        }
        Ok(None)
    }

    /// Whether a parity level present in `stripe` that the rebuild of `lost` did
    /// not use (it uses the lowest ones) differs from the stripe made whole with
    /// the rebuilt `data`. Only compared: nothing is computed into memory.
    fn spare_differs(
        &self,
        stripe: &[Option<&[u8]>],
        columns: usize,
        lost: &[Lost],
        data: &[Vec<u8>],
    ) -> Result<bool, PipelineError> {
        let present: Vec<usize> = (0..stripe.len() - columns)
            .filter(|&l| stripe[columns + l].is_some())
            .collect();
        let Some(spare) = present.get(lost.len()..).filter(|s| !s.is_empty()) else {
            return Ok(false);
        };
        let mut whole: Vec<&[u8]> = stripe[..columns]
            .iter()
            .map(|b| b.unwrap_or(self.zero.as_slice()))
            .collect();
        for (l, bytes) in lost.iter().zip(data) {
            whole[l.column] = bytes;
        }
        let bytes: Vec<&[u8]> = spare.iter().filter_map(|&l| stripe[columns + l]).collect();
        let verdicts = raid::verify_with(self.kernel, &whole, spare, &bytes)?;
        Ok(verdicts.into_iter().any(|wrong| wrong))
    }

    /// Parity `levels` (sorted) of a stripe made whole: `stripe` with the rebuilt
    /// `data` of `lost` put in, and the `known` parity blocks (level, bytes).
    fn parity_of(
        &self,
        stripe: &[Option<&[u8]>],
        columns: usize,
        lost: &[Lost],
        data: &[Vec<u8>],
        known: &[(usize, &[u8])],
        levels: &[usize],
    ) -> Result<Vec<Vec<u8>>, PipelineError> {
        let mut full: Vec<Option<&[u8]>> = stripe.to_vec();
        for (l, bytes) in lost.iter().zip(data) {
            full[l.column] = Some(bytes);
        }
        for &(level, bytes) in known {
            full[columns + level] = Some(bytes);
        }
        for &level in levels {
            full[columns + level] = None;
        }
        let mut out: Vec<Vec<u8>> = levels.iter().map(|_| self.buffers.take()).collect();
        let mut refs: Vec<&mut [u8]> = out.iter_mut().map(|b| b.as_mut_slice()).collect();
        raid::rebuild_with(self.kernel, columns, &full, None, &mut refs)?;
        Ok(out)
    }

    fn note(&self, message: String) {
        if let Ok(mut e) = self.write_errors.lock() {
            e.push(message);
        }
    }
}

/// Every `k`-element subset of `items`, in lexicographic order.
pub(crate) fn combinations(items: &[usize], k: usize) -> Vec<Vec<usize>> {
    let mut out = Vec::new();
    let mut pick = Vec::with_capacity(k);
    fn walk(
        items: &[usize],
        k: usize,
        start: usize,
        pick: &mut Vec<usize>,
        out: &mut Vec<Vec<usize>>,
    ) {
        if pick.len() == k {
            out.push(pick.clone());
            return;
        }
        for i in start..items.len() {
            pick.push(items[i]);
            walk(items, k, i + 1, pick, out);
            pick.pop();
        }
    }
    walk(items, k, 0, &mut pick, &mut out);
    out
}

/// Records the inodes of the temporary files as the inodes of the targets whose
/// file is not there at all; returns (target, previous inode) of each one changed.
fn record_missing_inodes(
    config: &Config,
    state: &mut State,
    targets: &[Target],
    temps: &[Option<TempFile>],
) -> Vec<(usize, u64)> {
    let mut changed = Vec::new();
    for (t, (target, temp)) in targets.iter().zip(temps).enumerate() {
        let Some(ino) = temp.as_ref().map(|temp| temp.ino) else {
            continue;
        };
        let path = file_path(config, state, target.slot, target.file);
        let missing = matches!(
            fs::symlink_metadata(&path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound
        );
        let entry = &mut state.disks[target.slot].files[target.file];
        if missing && entry.inode != ino {
            changed.push((t, entry.inode));
            entry.inode = ino;
        }
    }
    changed
}

/// Clears the bad flags of blocks that are back on disk: the rebuilt blocks of
/// files put in place (`placed`), and parity rewritten at positions fixed in full.
/// A position left with no bad block counts as verified now. Returns whether any
/// flag was cleared.
fn clear_bad_blocks(
    state: &mut State,
    targets: &[Target],
    placed: &[bool],
    recovered: &[Vec<bool>],
    positions: &[u32],
    results: &[PositionFix],
) -> bool {
    let mut back: HashSet<(u32, u32)> = HashSet::new();
    for (t, target) in targets.iter().enumerate().filter(|(t, _)| placed[*t]) {
        let pos_of: Vec<u32> = state.disks[target.slot].files[target.file]
            .positions()
            .collect();
        for (k, &b) in target.failed.iter().enumerate() {
            if let (true, Some(&pos)) = (recovered[t][k], pos_of.get(b)) {
                back.insert((state.disks[target.slot].index, pos));
            }
        }
    }
    for (result, &pos) in results.iter().zip(positions) {
        if result.complete && result.parity_written {
            back.insert((u32::MAX, pos));
        }
    }
    drop_marks(state, &back)
}

/// Drops the bad marks `gone` (disk index, position); a position left with none is
/// verified now. Returns whether any went.
fn drop_marks(state: &mut State, gone: &HashSet<(u32, u32)>) -> bool {
    let (cleared, kept): (Vec<BadBlock>, Vec<BadBlock>) = std::mem::take(&mut state.bad)
        .into_iter()
        .partition(|b| gone.contains(&(b.disk, b.pos)));
    state.bad = kept;
    let now = now() as u32;
    for b in &cleared {
        if !state.bad.iter().any(|left| left.pos == b.pos) {
            if let Some(v) = state.positions.verified.get_mut(b.pos as usize) {
                *v = now;
            }
        }
    }
    !cleared.is_empty()
}

/// Drops the bad marks of data blocks the check pass read just now and found
/// matching their hashes (a read error that went away, a block put back by
/// hand), as a scrub of them would. Returns whether any went.
fn clear_found_good(state: &mut State, checked: &[Vec<bool>], damage: &Damage) -> bool {
    let marked: HashSet<(u32, u32)> = state
        .bad
        .iter()
        .filter(|b| b.disk != u32::MAX)
        .map(|b| (b.disk, b.pos))
        .collect();
    if marked.is_empty() {
        return false;
    }
    let mut good: HashSet<(u32, u32)> = HashSet::new();
    for (slot, disk) in state.disks.iter().enumerate() {
        for (i, f) in disk.files.iter().enumerate() {
            let read = checked
                .get(slot)
                .and_then(|c| c.get(i))
                .copied()
                .unwrap_or(false);
            if !read || damage.unverified.contains(&(slot, i)) {
                continue;
            }
            let failed = damage.blocks.get(&(slot, i));
            for (b, pos) in f.positions().enumerate() {
                let key = (disk.index, pos);
                if marked.contains(&key)
                    && !f.is_new(b)
                    && failed.is_none_or(|blocks| blocks.binary_search(&b).is_err())
                {
                    good.insert(key);
                }
            }
        }
    }
    drop_marks(state, &good)
}

/// Completes a target: copies its good blocks from the original, then either
/// renames the repaired file over the original (complete) or keeps it as
/// `NAME.unrecoverable` (see [`keep_unrecoverable`]). Returns where the file is now.
///
/// A complete file that fails on the way leaves no temporary file behind: it can be
/// rebuilt again. A partial one that cannot be renamed stays as `NAME.lhparity-fix`,
/// which the error names, since it may hold blocks nothing else can give back.
fn finish_file(
    temp: &TempFile,
    entry: &FileEntry,
    target: &Target,
    file: &File,
    block: (usize, &[u8; 32]),
    complete: bool,
) -> std::io::Result<PathBuf> {
    let path = crate::name::join(&temp.root, &entry.path);
    let finished = copy_good_blocks(temp, entry, target, file, block, complete).and_then(|()| {
        // Owner, mode and time go on the open file, and the rename is made in the
        // folder reached from the disk's root: neither can be sent elsewhere by a
        // link put on the way meanwhile.
        let temp_path = temp.path();
        let (folder, temp_name) = folder_of(&temp.root, &temp_path)?;
        let name = path.file_name().ok_or_else(|| outside(&temp.root, &path))?;
        if complete {
            beneath::set_attributes(file, (entry.uid, entry.gid), entry.mode, entry.mtime_ns)?;
            folder.rename(temp_name, name, false)?;
            Ok(path.clone())
        } else {
            keep_unrecoverable(&folder, temp_name, &path)
        }
    });
    match finished {
        Err(e) if complete => {
            temp.remove();
            Err(e)
        }
        Err(e) => Err(std::io::Error::new(
            e.kind(),
            format!(
                "{e}; what could be rebuilt is in {}",
                crate::name::shown_path(&temp.path())
            ),
        )),
        ok => ok,
    }
}

/// Copies the blocks of a target that did not fail from its original into `temp`.
fn copy_good_blocks(
    temp_file: &TempFile,
    entry: &FileEntry,
    target: &Target,
    temp: &File,
    (block_size, key): (usize, &[u8; 32]),
    complete: bool,
) -> std::io::Result<()> {
    if target.original != Original::None {
        // The good blocks come from the original: without it the file is not
        // complete, whatever was rebuilt. Each is checked again as copied, so that
        // a file changed since it was checked is never mixed with the rebuilt
        // blocks and passed off as repaired.
        // An imported copy that went away or shrank since it was checked is named.
        let named = |e: std::io::Error| {
            match &target.original {
            Original::Imported(from) => std::io::Error::new(
                e.kind(),
                format!(
                    "reading the imported {}: {e}; it changed or went away since it was checked: run `lhparity fix` again",
                    crate::name::shown_path(from)
                ),
            ),
            _ => e,
        }
        };
        let original = match &target.original {
            Original::Imported(from) => import::open(from).map_err(named)?,
            _ => Root::open(&temp_file.root)?
                .open_file(Path::new(&*crate::name::to_os(&entry.path)))?,
        };
        let mut buf = vec![0u8; block_size];
        for b in 0..entry.hashes.len() {
            if target.failed.binary_search(&b).is_ok() {
                continue;
            }
            let offset = b as u64 * block_size as u64;
            let len = entry.size.saturating_sub(offset).min(block_size as u64) as usize;
            original
                .read_exact_at(&mut buf[..len], offset)
                .map_err(named)?;
            if complete && block_hash(key, &buf[..len]) != entry.hashes[b] {
                return Err(std::io::Error::other(match &target.original {
                    Original::Imported(from) => format!(
                        "the imported {} changed while it was being copied (block {b} no longer matches its hash), so the file was not restored; run `lhparity fix` again",
                        crate::name::shown_path(from)
                    ),
                    _ => format!(
                        "it changed while it was being repaired (block {b} no longer matches its hash), so it was left as it is; run `lhparity fix` again, or `lhparity sync` to keep the change"
                    ),
                }));
            }
            if !all_zero(&buf[..len]) {
                temp.write_all_at(&buf[..len], offset)?;
            }
        }
    }
    // No fsync: the rename makes the repaired file visible at once (a kill leaves the
    // old or the new one), and the kernel writes it back as for any file. Nothing
    // else depends on it being durable: parity and the other disks are untouched, so
    // after a power cut `check` or `fix` finds any block that did not reach the disk
    // by its hash and rebuilds it again.
    Ok(())
}

/// Renames a partial result to `NAME.unrecoverable`, or to `NAME.2.unrecoverable`,
/// `NAME.3.unrecoverable`, ... when that name is taken: a file already there (an
/// earlier fix's partial result, or anything else) is never replaced. One of them
/// holding these very bytes (the same fix run again) is kept and named instead, so
/// fixes run again and again leave one copy. Every name keeps the suffix that the
/// default `exclude *.unrecoverable` leaves out of syncs.
fn keep_unrecoverable(folder: &Folder, temp: &OsStr, path: &Path) -> std::io::Result<PathBuf> {
    for n in 1..=1000u32 {
        let suffix = match n {
            1 => UNRECOVERABLE_SUFFIX.to_owned(),
            n => format!(".{n}{UNRECOVERABLE_SUFFIX}"),
        };
        let to = with_suffix(path, &suffix);
        let Some(name) = to.file_name() else { break };
        match rename_noreplace(folder, temp, name) {
            Ok(()) => return Ok(to),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                if same_bytes(folder, temp, name) {
                    folder.remove_file(temp)?;
                    return Ok(to);
                }
            }
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AlreadyExists,
        format!(
            "{}{UNRECOVERABLE_SUFFIX} and 999 numbered names beside it are taken; move them away",
            crate::name::shown_path(&path)
        ),
    ))
}

/// Whether the regular files `a` and `b` of `folder` hold the same bytes (anything
/// that cannot be read, or is not a regular file, is not the same).
fn same_bytes(folder: &Folder, a: &OsStr, b: &OsStr) -> bool {
    let open = |name| {
        let file = folder.open_to_read(name).ok()?;
        let meta = file.metadata().ok()?;
        meta.is_file().then_some((file, meta.len()))
    };
    let (Some((a, len)), Some((b, other))) = (open(a), open(b)) else {
        return false;
    };
    if len != other {
        return false;
    }
    let (mut x, mut y) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    let mut at = 0u64;
    while at < len {
        let n = (len - at).min(x.len() as u64) as usize;
        if a.read_exact_at(&mut x[..n], at).is_err()
            || b.read_exact_at(&mut y[..n], at).is_err()
            || x[..n] != y[..n]
        {
            return false;
        }
        at += n as u64;
    }
    true
}

/// `fix -m`: deleted names of hard-linked files come back as links to their file, on
/// the disks `-d` names (all without it), those `-f` selects by any name of the
/// file, and only to a file that is the one the state records.
fn restore_deleted_names(
    config: &Config,
    state: &State,
    options: &FixOptions,
    filter: Option<&crate::config::Filter>,
    report: &mut FixReport,
) {
    for (slot, disk) in state.disks.iter().enumerate() {
        if !options.disks.is_empty() && !options.disks.contains(&disk.name) {
            continue;
        }
        let root = &config.data[slot].dir;
        let by_path: HashMap<&str, &FileEntry> =
            disk.files.iter().map(|f| (f.path.as_str(), f)).collect();
        let chosen = Chosen::new(filter, disk);
        for l in &disk.hardlinks {
            let name = crate::name::join(root, &l.path);
            let selected = chosen.file(&l.target);
            let Some(&file) = by_path.get(l.target.as_str()) else {
                continue;
            };
            if !selected || exists_beneath(root, &name) {
                continue;
            }
            let target = crate::name::join(root, &file.path);
            if !fs::symlink_metadata(&target).is_ok_and(|m| is_recorded(&m, file)) {
                continue;
            }
            let made = hard_link_beneath(root, &target, &name);
            match made {
                Ok(()) => report.fixed.push(crate::name::shown_path(&name)),
                Err(e) => report.errors.push(format!(
                    "making hard link {} to {}: {e}",
                    crate::name::shown_path(&name),
                    crate::name::shown_path(&target)
                )),
            }
        }
    }
}

/// Whether `meta` is the regular file `entry` describes: its inode, size and mtime.
fn is_recorded(meta: &fs::Metadata, entry: &FileEntry) -> bool {
    meta.is_file() && meta.ino() == entry.inode && pipeline::same_stamp(meta, entry)
}

/// For a file whose first name is gone: makes that name again as a link to another
/// of its names that survives as the state describes it (inode, size and mtime), so
/// nothing needs rebuilding and the names stay one file. Whether it did.
fn link_from_survivor(
    root: &Path,
    disk: &crate::state::model::Disk,
    f: &FileEntry,
    (key, block_size): (&[u8; 32], usize),
) -> bool {
    let path = crate::name::join(root, &f.path);
    // Its bytes too: a survivor with a damaged block is repaired through a rebuild.
    let intact = |name: &PathBuf| {
        fs::symlink_metadata(name).is_ok_and(|m| is_recorded(&m, f))
            && File::open(name).is_ok_and(|h| damaged_blocks(&h, f, key, block_size).is_empty())
    };
    disk.hardlinks
        .iter()
        .filter(|l| l.target == f.path)
        .map(|l| crate::name::join(root, &l.path))
        .find(intact)
        .is_some_and(|survivor| hard_link_beneath(root, &survivor, &path).is_ok())
}

/// Makes `name` a hard link to `file` when what it names now is still the file that
/// was repaired (`same_file`; a missing name, or one holding something else, is left
/// alone). The new link replaces the old name in one rename, so the name never goes
/// missing.
fn relink(
    root: &Path,
    file: &Path,
    name: &Path,
    same_file: impl Fn(&fs::Metadata) -> bool,
) -> std::io::Result<()> {
    match fs::symlink_metadata(name) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
        Ok(meta) if same_file(&meta) && meta.ino() != fs::metadata(file)?.ino() => {
            let (folder, leaf) = folder_of(root, name)?;
            let temp = with_suffix(name, FIX_SUFFIX);
            let temp_leaf = temp.file_name().ok_or_else(|| outside(root, name))?;
            let _ = folder.remove_file(temp_leaf);
            let (from, from_leaf) = folder_of(root, file)?;
            folder.hard_link(temp_leaf, (&from, from_leaf))?;
            folder.rename(temp_leaf, leaf, false).inspect_err(|_| {
                let _ = folder.remove_file(temp_leaf);
            })
        }
        Ok(_) => Ok(()),
    }
}

/// `rename` within `folder` that fails with `AlreadyExists` instead of replacing
/// `to`. Filesystems without `RENAME_NOREPLACE` get a check before the rename
/// (racy, but nothing else renames into a data disk during a fix).
fn rename_noreplace(folder: &Folder, from: &OsStr, to: &OsStr) -> std::io::Result<()> {
    match folder.rename(from, to, true) {
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            if folder.kind(to).is_ok() {
                return Err(std::io::ErrorKind::AlreadyExists.into());
            }
            folder.rename(from, to, false)
        }
        other => other,
    }
}

/// Makes the folder `path` and those above it up to the data disk's `root`, as
/// `create_dir_all` does, but follows no symbolic link below `root`: one put where a
/// synced folder was would have the restored files written wherever it points,
/// outside the disk. Such a link, or a file where a folder belongs, is an error
/// naming it.
fn make_folders_beneath(root: &Path, path: &Path) -> std::io::Result<Folder> {
    let Ok(rel) = path.strip_prefix(root) else {
        return Err(outside(root, path));
    };
    // The disk's own folder may be reached through links (a mount point's path).
    fs::create_dir_all(root)?;
    let mut folder = Root::open(root)?.folder(Path::new(""))?;
    let mut at = root.to_path_buf();
    for part in rel.components() {
        let std::path::Component::Normal(name) = part else {
            continue;
        };
        at.push(name);
        folder = match folder.child(name) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                match folder.make_folder(name) {
                    // Made meanwhile: opened below, as any folder that is there.
                    Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(e),
                    _ => {}
                }
                folder.child(name)
            }
            other => other,
        }
        .map_err(|e| in_the_way(&at, e))?;
    }
    Ok(folder)
}

/// An error met opening the folder `at`, told as what is in its place: a symbolic
/// link or a file.
fn in_the_way(at: &Path, e: std::io::Error) -> std::io::Error {
    if beneath::is_link(&e) {
        std::io::Error::other(InTheWay(format!(
            "{} is a symbolic link where the last sync saw a folder; it is not followed: remove the link (or put the folder back) and run `lhparity fix` again",
            crate::name::shown_path(at)
        )))
    } else if e.raw_os_error() == Some(libc::ENOTDIR) {
        std::io::Error::other(InTheWay(format!(
            "{} is a file where the last sync saw a folder; move it away and run `lhparity fix` again",
            crate::name::shown_path(at)
        )))
    } else {
        e
    }
}

/// What [`in_the_way`] tells: the same for every file below that name.
#[derive(Debug)]
struct InTheWay(String);

impl std::fmt::Display for InTheWay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InTheWay {}

fn is_in_the_way(e: &std::io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<InTheWay>())
}

/// The folder holding `path` below the disk `root`, reached through folders only,
/// and the name of `path` in it. A link on the way is an error naming it.
fn folder_of<'p>(root: &Path, path: &'p Path) -> std::io::Result<(Folder, &'p OsStr)> {
    let Ok(rel) = path.strip_prefix(root) else {
        return Err(outside(root, path));
    };
    // The root itself has no name in a folder of the disk.
    let Some(name) = rel.file_name() else {
        return Err(outside(root, path));
    };
    let parent = rel.parent().unwrap_or(Path::new(""));
    let folder =
        Root::open(root)?
            .folder(parent)
            .map_err(|e| match beneath::first_link(root, parent) {
                Some(link) => in_the_way(&link, std::io::Error::from_raw_os_error(libc::ELOOP)),
                None => e,
            })?;
    Ok((folder, name))
}

/// Makes `name` a hard link to `target`, both below the disk `root`, with the
/// folders above `name`; both reached through folders only.
fn hard_link_beneath(root: &Path, target: &Path, name: &Path) -> std::io::Result<()> {
    let (Some(parent), Some(leaf)) = (name.parent(), name.file_name()) else {
        return Err(outside(root, name));
    };
    let folder = make_folders_beneath(root, parent)?;
    let (from, from_leaf) = folder_of(root, target)?;
    folder.hard_link(leaf, (&from, from_leaf))
}

/// Whether something is at `path` below `root` with no symbolic link on the way: a
/// name seen through a link put where a folder was is not on the disk (restoring it
/// reports the link, see [`make_folders_beneath`]).
fn exists_beneath(root: &Path, path: &Path) -> bool {
    folder_of(root, path).is_ok_and(|(folder, name)| folder.kind(name).is_ok())
}

/// The recorded folders (disk slot, index in `folders`) to give their recorded
/// owner, mode and mtime at the end: those that are not there, on the disks of `-d`
/// and, with `-m`, on every disk. On a disk of `-d` without `-f` (`whole`), also
/// those whose owner or mode is not the recorded one, its root folder included: a
/// replaced disk's new root, and folders a fix killed earlier made before it could
/// set them. Folders that have them already are left as they are.
fn missing_folders(
    config: &Config,
    state: &State,
    options: &FixOptions,
    whole: bool,
) -> Vec<GoneFolder> {
    let mut gone = Vec::new();
    for (slot, disk) in state.disks.iter().enumerate() {
        let rebuilt = options.disks.contains(&disk.name);
        if !options.missing && !rebuilt {
            continue;
        }
        for (i, folder) in disk.folders.iter().enumerate() {
            let path = crate::name::join(&config.data[slot].dir, &folder.path);
            let recorded = (folder.uid, folder.gid, folder.mode & 0o7777);
            match fs::symlink_metadata(&path) {
                Err(_) => gone.push((slot, i, None)),
                Ok(m) => {
                    let now = (m.uid(), m.gid(), m.mode() & 0o7777);
                    if rebuilt && whole && m.is_dir() && now != recorded {
                        gone.push((slot, i, Some(now)));
                    }
                }
            }
        }
    }
    gone
}

/// A recorded folder to give its attributes (disk slot, index in `folders`), with
/// the owner and mode it had when it was there with others.
type GoneFolder = (usize, usize, Option<(u32, u32, u32)>);

/// Gives the folders in `gone` that are there again (made by this fix) their recorded
/// owner, mode and mtime: the owner before the mode, whose set-group-ID bit a change
/// of owner could clear, and all after their contents are in place, which changed
/// their mtimes. Deepest first, so that a folder closed to its owner is closed last.
fn restore_folder_attributes(
    config: &Config,
    state: &State,
    gone: &[GoneFolder],
    report: &mut FixReport,
) {
    let mut folders: Vec<(&Path, PathBuf, &FolderEntry, _)> = gone
        .iter()
        .map(|&(slot, i, before)| {
            let folder = &state.disks[slot].folders[i];
            let root = config.data[slot].dir.as_path();
            (root, crate::name::join(root, &folder.path), folder, before)
        })
        .collect();
    folders.sort_by_key(|(_, path, ..)| std::cmp::Reverse(path.components().count()));
    for (root, path, folder, before) in folders {
        // Only folders reached through folders, set on the open folder: never one
        // a symbolic link leads to.
        let set = Root::open(root).and_then(|r| {
            r.set_folder(
                Path::new(&*crate::name::to_os(&folder.path)),
                Some((folder.uid, folder.gid)),
                Some(folder.mode),
                Some(folder.mtime_ns),
            )
        });
        match set {
            Ok(()) => {
                if let Some((uid, gid, mode)) = before {
                    report.warnings.push(format!(
                        "folder {}: owner and mode set back to the recorded {}:{} {:o} (they were {uid}:{gid} {mode:o}); run `lhparity sync` before `fix -d` to keep such a change",
                        crate::name::shown_path(&path),
                        folder.uid,
                        folder.gid,
                        folder.mode & 0o7777
                    ));
                }
                if let Ok(meta) = fs::symlink_metadata(&path) {
                    note_owner(&path, &meta, (folder.uid, folder.gid), report);
                }
            }
            Err(e) if beneath::is_link(&e) || e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => report.warnings.push(format!(
                "folder {}: its recorded owner, mode or time could not be set: {e}",
                crate::name::shown_path(&path)
            )),
        }
    }
}

/// A warning when `path`, restored or given its recorded attributes, does not have
/// the recorded owner: a fix run by a user who is not root may not give files to
/// others.
fn note_owner(path: &Path, meta: &fs::Metadata, (uid, gid): (u32, u32), report: &mut FixReport) {
    if (meta.uid(), meta.gid()) != (uid, gid) {
        report.warnings.push(format!(
            "{} is owned by {}:{}, not by {uid}:{gid} as recorded: only root may give it that owner (run `chown {uid}:{gid}` on it as root)",
            crate::name::shown_path(path),
            meta.uid(),
            meta.gid()
        ));
    }
}

/// Recreates the empty folders, the symbolic links and the hard links of a rebuilt
/// disk; folders that are there get their recorded mode. With `missing_only`
/// (`fix -m` on a disk that was not lost) it makes only the folders and symbolic
/// links that are gone: [`restore_deleted_names`] does the hard links.
fn restore_dirs_and_links(
    config: &Config,
    state: &State,
    slot: usize,
    filter: Option<&crate::config::Filter>,
    missing_only: bool,
    report: &mut FixReport,
) {
    let root = &config.data[slot].dir;
    let disk = &state.disks[slot];
    // With -f, only what it selects: a folder or symbolic link by its path, as a
    // file would be, and a hard link when its file is selected (by any name).
    let chosen = Chosen::new(filter, disk);
    for d in disk.dirs.iter().filter(|d| chosen.folder(&d.path)) {
        let path = crate::name::join(root, &d.path);
        let created = !exists_beneath(root, &path);
        if missing_only && !created {
            continue;
        }
        let made = make_folders_beneath(root, &path).and_then(|_| {
            let rel = path.strip_prefix(root).map_err(|_| outside(root, &path))?;
            // A folder made here gets its recorded time too; one that was there
            // keeps its own.
            let mtime = created.then_some(d.mtime_ns);
            Root::open(root)?.set_folder(rel, None, Some(d.mode), mtime)
        });
        if let Err(e) = made {
            report.errors.push(format!(
                "creating folder {}: {e}",
                crate::name::shown_path(&path)
            ));
        }
    }
    // Hard links last: the files they name are in place by now.
    let symlinks = disk.links.iter().map(|l| (l, "link"));
    let hardlinks = disk
        .hardlinks
        .iter()
        .filter(|_| !missing_only)
        .map(|l| (l, "hard link"));
    for (l, kind) in symlinks.chain(hardlinks) {
        let selected = if kind == "link" {
            chosen.path(&l.path)
        } else {
            chosen.file(&l.target)
        };
        if !selected {
            continue;
        }
        let path = crate::name::join(root, &l.path);
        if exists_beneath(root, &path) {
            continue;
        }
        let made = if kind == "link" {
            match (path.parent(), path.file_name()) {
                (Some(parent), Some(name)) => make_folders_beneath(root, parent)
                    .and_then(|folder| folder.symlink(name, &crate::name::to_os(&l.target))),
                _ => Err(outside(root, &path)),
            }
        } else {
            let target = crate::name::join(root, &l.target);
            match fs::symlink_metadata(&target) {
                Ok(m) if m.is_file() => hard_link_beneath(root, &target, &path),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(std::io::Error::other(
                    "the file it names is not there (it could not be restored, see above), so neither is this name; the fix that brings the file back makes it too",
                )),
                _ => Err(std::io::Error::other(
                    "the file it names is not a regular file now",
                )),
            }
        };
        if let Err(e) = made {
            report.errors.push(format!(
                "creating {kind} {} to {}: {e}",
                crate::name::shown_path(&path),
                crate::name::shown(&l.target)
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffixed_names_stay_within_the_longest_name() {
        use std::os::unix::ffi::OsStrExt;
        let short = with_suffix(Path::new("/d/film.mkv"), FIX_SUFFIX);
        assert_eq!(short, Path::new("/d/film.mkv.lhparity-fix"));
        let long = |last: u8| {
            let mut name = vec![b'a'; NAME_MAX - 1];
            name.push(last);
            Path::new("/d").join(std::ffi::OsStr::from_bytes(&name))
        };
        let (a, b) = (
            with_suffix(&long(b'x'), FIX_SUFFIX),
            with_suffix(&long(b'y'), FIX_SUFFIX),
        );
        for p in [&a, &b] {
            let name = p.file_name().unwrap().as_bytes();
            assert!(
                name.len() <= NAME_MAX && name.ends_with(FIX_SUFFIX.as_bytes()),
                "{p:?}"
            );
            assert_eq!(p.parent(), Some(Path::new("/d")));
        }
        assert_ne!(a, b);
        assert_eq!(a, with_suffix(&long(b'x'), FIX_SUFFIX));
    }

    #[test]
    fn a_message_names_a_path_only_where_the_path_ends() {
        let p = "/d1/movie.mkv";
        assert!(names_path(
            "disk 'd1': opening /d1/movie.mkv: No such file",
            p
        ));
        assert!(names_path(
            "disk 'd1': reading /d1/movie.mkv at byte 0: EIO",
            p
        ));
        assert!(names_path("ends with /d1/movie.mkv", p));
        assert!(!names_path(
            "disk 'd1': reading /d1/movie.mkv.bak at byte 0: EIO",
            p
        ));
        assert!(names_path("/d1/movie.mkv.bak: x and /d1/movie.mkv: y", p));
        assert!(!names_path("/d1/other: x", p));
    }

    #[test]
    fn combinations_are_complete_and_ordered() {
        assert_eq!(
            combinations(&[0, 2, 3], 2),
            vec![vec![0, 2], vec![0, 3], vec![2, 3]]
        );
        assert_eq!(combinations(&[1, 2], 0), vec![Vec::<usize>::new()]);
        assert_eq!(combinations(&[0, 1, 2, 3, 4, 5], 3).len(), 20);
    }
}
