//! `lhparity sync`: bring the parity up to date with the data disks.
//!
//! 1. Load the newest valid state, reconcile it with the config, scan every disk in
//!    parallel and compare (`scan.rs`); refuse when a disk looks unmounted or wholly
//!    rewritten, or when more files would be removed than `delete-threshold` allows.
//! 2. Every position whose parity must change (unsynced or dirty) is recomputed from
//!    the whole stripe by the pipeline (`pipeline.rs`), in segments of `autosave` bytes.
//! 3. Crash safety: before a segment's parity is written, its positions are saved as
//!    `DIRTY`; after it, the parity files are fsynced and only then is the state saved
//!    with the positions committed. A `kill -9` at any moment leaves a state that
//!    never claims parity it does not have; the next sync redoes the dirty positions.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt as _;
use std::path::PathBuf;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::config::Config;
use crate::copied;
use crate::hash::block_hash;
use crate::hash::random_key;
use crate::parity_order::{self, Before};
use crate::pipeline::{self, Block, ParityOutput, PipelineError, Reads, Status};
use crate::raid::{self, Kernel};
use crate::scan::{self, DiskChanges, DiskScan};
use crate::state::model::{
    awaits_sync, Disk, FileEntry, FolderEntry, Hash, State, DIRTY, SCRUB_NEW, UNSYNCED,
};
use crate::state::store;

/// Overrides of the safety checks, each named after its flag.
#[derive(Clone, Debug, Default)]
pub struct SyncOptions {
    /// `--force-empty`: accept a disk that had files and is now empty or rewritten.
    pub force_empty: bool,
    /// `--force-delete`: accept more removed files than `delete-threshold`.
    pub force_delete: bool,
    /// `--force-full`: compute the parity of every position again, and accept
    /// overwriting parity files the state does not know.
    pub force_full: bool,
    /// `--pre-hash`: read and hash every new block in a pass of its own first, and
    /// sync a position only if the second read gives the same hashes.
    pub pre_hash: bool,
    /// `--force-zero`: accept files that had data and are now empty.
    pub force_zero: bool,
    /// `--force-nocopy`: take files copied or moved from another disk for new files,
    /// without comparing them with the originals' hashes first.
    pub force_nocopy: bool,
}

/// Why a sync did not run or stopped. Every message names the disk, file or path and
/// the way out.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error(transparent)]
    Scan(#[from] scan::ScanError),
    #[error(transparent)]
    Pipeline(#[from] pipeline::PipelineError),
    #[error(transparent)]
    Raid(#[from] crate::raid::RaidError),
    #[error("{0}")]
    Refused(String),
    #[error("{what} {}: {source}", crate::name::shown_path(&path))]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Per-disk change counts of a sync or diff.
#[derive(Clone, Debug, Default)]
pub struct DiskSummary {
    pub name: String,
    pub changes: DiskChanges,
    pub files: usize,
    /// Of `changes.added`, the files copied or moved from another disk whose bytes
    /// were found to be the originals' before the sync (see [`crate::copied`]).
    pub copied: usize,
}

/// What a sync did.
#[derive(Clone, Debug, Default)]
pub struct SyncReport {
    pub disks: Vec<DiskSummary>,
    /// Positions whose parity was recomputed and committed.
    pub positions_synced: usize,
    /// Positions left for the next sync (changed files, read errors, bad blocks).
    pub positions_left: usize,
    /// Data bytes read.
    pub bytes: u64,
    pub seconds: f64,
    /// Problems that make the exit code 1.
    pub warnings: Vec<String>,
    /// Things worth saying that need no action (a damaged content copy this sync
    /// rewrote, for example).
    pub notes: Vec<String>,
    /// The signal that stopped the sync before the end; what was synced is saved.
    pub interrupted: Option<i32>,
    /// Whether the state changed (files, links, folders, modes), parity or not.
    pub recorded: bool,
}

/// Progress callbacks for the command line.
pub trait Progress: Sync {
    /// The work is known: this many data bytes at most will be read. Called again
    /// for a second pass (fix: its check, then the rebuild), it starts the count over.
    fn start(&self, total_bytes: u64);
    /// Bytes read so far grew by this much.
    fn advance(&self, bytes: u64);
    /// The work is done.
    fn finish(&self);
}

/// The state of the array, loaded, with its disks matched to the config.
pub struct Loaded {
    pub state: State,
    /// Content copies that were damaged, missing or older: rewritten at the next save.
    pub notes: Vec<String>,
    /// Whether no content file existed (a new array).
    pub is_new: bool,
    /// Whether some content copy is damaged, missing or older than the one loaded:
    /// the commands that save the state then save it even when nothing changed, so
    /// that every configured copy holds it again.
    pub copies_to_rewrite: bool,
}

/// Loads the state for `config`: the newest valid content copy, or a new state when
/// none exists. Its disks are ordered as the config's `data` lines.
pub fn load_state(config: &Config) -> Result<Loaded, SyncError> {
    let paths: Vec<PathBuf> = config.content.iter().map(|c| c.path.clone()).collect();
    if let Some(dir) = paths.iter().find(|p| p.is_dir()) {
        return Err(SyncError::Refused(format!(
            "content path {} is a folder; a `content` line names the content file itself \
             (for example {})",
            dir.display(),
            dir.join("lhparity.content").display()
        )));
    }
    let loaded = store::load(&paths)?;
    let mut notes = Vec::new();
    for (path, reason) in &loaded.damaged {
        notes.push(format!(
            "content file {} is damaged ({reason}); using another copy, it will be rewritten at the next save",
            crate::name::shown_path(&path)
        ));
    }
    for path in &loaded.stale {
        notes.push(format!(
            "content file {} is older than another copy; it will be rewritten at the next save",
            crate::name::shown_path(&path)
        ));
    }
    // With another copy loaded, a missing one is news: its disk may not be mounted,
    // and the next save would write into the empty mountpoint.
    if loaded.state.is_some() {
        for path in &loaded.missing {
            notes.push(format!(
                "content file {} is missing; it will be written again at the next save: if its disk is not mounted, mount it first",
                crate::name::shown_path(&path)
            ));
        }
    }
    let is_new = loaded.state.is_none();
    // Copies to write again even if nothing else changes: damaged or older ones, and
    // missing ones whose folder holds other things (a disk that is mounted; the empty
    // mountpoint of one that is not is left alone until it is).
    let copies_to_rewrite = !is_new
        && (!loaded.damaged.is_empty()
            || !loaded.stale.is_empty()
            || loaded.missing.iter().any(|path| {
                path.parent()
                    .and_then(|dir| std::fs::read_dir(dir).ok())
                    .is_some_and(|mut entries| entries.next().is_some())
            }));
    let mut state = match loaded.state {
        Some(state) => state,
        None => State::new(
            config.block_size,
            random_key().map_err(|source| SyncError::Io {
                what: "reading random bytes from",
                path: PathBuf::from("/dev/urandom"),
                source,
            })?,
            config.levels(),
        ),
    };
    if state.block_size != config.block_size {
        return Err(SyncError::Refused(format!(
            "{}: blocksize is {} KiB but the array was synced with {} KiB; \
             restore the old blocksize (changing it needs a new array)",
            config.source.display(),
            config.block_size / 1024,
            state.block_size / 1024
        )));
    }
    // Each disk keeps its column (`index`) for life; the `data` lines list the disks
    // in column order, and a column whose disk left is a hole of zeros.
    let mut disks: Vec<Disk> = Vec::with_capacity(config.data.len());
    let mut renamed = false;
    for (k, data) in config.data.iter().enumerate() {
        // The column right after the previous line's disk, and that of the next line
        // whose disk the state knows by name.
        let next = disks.last().map_or(0, |d| d.index as usize + 1);
        let before = config.data[k + 1..]
            .iter()
            .find_map(|c| state.disks.iter().find(|d| d.name == c.name))
            .map_or(usize::MAX, |d| d.index as usize);
        // A name the state does not know, where the state has a disk (between the
        // columns of the lines around it) whose name the config no longer has: that
        // disk, renamed (SnapRAID allows renaming in the config). Of several (a disk
        // retired in the same edit), the one that holds something.
        let old_name = state
            .disks
            .iter()
            .enumerate()
            .filter(|(_, d)| {
                (next..before).contains(&(d.index as usize))
                    && !config.data.iter().any(|c| c.name == d.name)
            })
            .min_by_key(|(_, d)| (holds_nothing(d), d.index))
            .map(|(i, _)| i);
        let disk = match state.disks.iter().position(|d| d.name == data.name) {
            Some(i) => state.disks.swap_remove(i),
            None => match old_name {
                Some(i) => {
                    let mut disk = state.disks.swap_remove(i);
                    notes.push(format!(
                        "{}:{}: disk '{}' is now named '{}' (same `data` line); the next \
                         sync, scrub or fix records the new name",
                        config.source.display(),
                        data.line,
                        disk.name,
                        data.name
                    ));
                    disk.name = data.name.clone();
                    renamed = true;
                    disk
                }
                None => Disk {
                    name: data.name.clone(),
                    index: next as u32,
                    ..Disk::default()
                },
            },
        };
        let taken = disks
            .iter()
            .chain(&state.disks)
            .any(|d| d.index == disk.index);
        if (disk.index as usize) < next || taken {
            // What else would explain it: a name moved to another line, lines
            // swapped, or a new disk put before others.
            return Err(SyncError::Refused(format!(
                "{}:{}: disk '{}' is out of order: the `data` lines must stay in the order \
                 the array was synced with; new disks go at the end or on the line of a \
                 retired disk, and a disk may be renamed on its own line, but not to the \
                 name another line had",
                config.source.display(),
                data.line,
                data.name
            )));
        }
        disks.push(disk);
    }
    // Disks the config no longer has. One that held nothing at the last sync
    // (emptied and synced with -E, as SnapRAID asks) leaves the array: its parity
    // column holds only zeros, and no other disk's column moves. Anything else is
    // refused.
    let (leaving, kept): (Vec<Disk>, Vec<Disk>) = state.disks.drain(..).partition(holds_nothing);
    if let Some(gone) = kept.first() {
        return Err(SyncError::Refused(format!(
            "disk '{}' is in the content file but not in {}, and the last sync recorded {} \
             on it; put its `data` line back (to retire a disk, point its `data` line at \
             an empty folder, run `lhparity sync -E`, then remove the line)",
            gone.name,
            config.source.display(),
            what_it_holds(gone)
        )));
    }
    for gone in &leaving {
        notes.push(format!(
            "disk '{}' is no longer in {} and held no files at the last sync: it leaves the \
             array (the next sync, scrub or fix records that)",
            gone.name,
            config.source.display()
        ));
        state.bad.retain(|b| b.disk != gone.index);
    }
    state.disks = disks;
    Ok(Loaded {
        state,
        copies_to_rewrite: copies_to_rewrite || renamed || !leaving.is_empty(),
        notes,
        is_new,
    })
}

/// Whether a disk holds nothing the parity or the state protects: no files, no
/// blocks of deleted files still in the parity, no links, no empty folders. Such a
/// disk's parity column is all zeros, so it may leave the array.
fn holds_nothing(d: &Disk) -> bool {
    d.files.is_empty()
        && d.deleted.is_empty()
        && d.links.is_empty()
        && d.hardlinks.is_empty()
        && d.dirs.is_empty()
}

/// What a disk that does not [`holds_nothing`] holds, for a message: "3 file(s) and
/// 1 empty folder(s)".
fn what_it_holds(d: &Disk) -> String {
    let parts: Vec<String> = [
        (d.files.len(), "file(s)"),
        (
            d.deleted.len(),
            "block(s) of deleted files that a sync has yet to take out of the parity",
        ),
        (d.links.len(), "symbolic link(s)"),
        (d.hardlinks.len(), "hard link(s)"),
        (d.dirs.len(), "empty folder(s)"),
    ]
    .iter()
    .filter(|(n, _)| *n > 0)
    .map(|(n, what)| format!("{n} {what}"))
    .collect();
    parts.join(" and ")
}

/// For the commands that verify or repair an array: with no content file at all, an
/// array whose parity holds data is refused (the disks holding the content files
/// are most likely not mounted, and a check would report nothing wrong), and one
/// never synced gets a note saying that nothing is protected yet.
pub fn require_state(config: &Config, loaded: &mut Loaded) -> Result<(), SyncError> {
    if !loaded.is_new {
        return Ok(());
    }
    let looked: Vec<String> = config
        .content
        .iter()
        .map(|c| c.path.display().to_string())
        .collect();
    let looked = looked.join(", ");
    let parity = parity_paths(config)?;
    if let Some(path) = parity
        .iter()
        .find(|p| std::fs::metadata(p).is_ok_and(|m| m.len() > 0))
    {
        return Err(SyncError::Refused(format!(
            "no content file was found ({looked}), but parity file {} holds data: mount the \
             disks that hold the content files and retry",
            crate::name::shown_path(&path)
        )));
    }
    loaded.notes.push(format!(
        "no content file was found ({looked}): the array has never been synced, so \
         nothing is protected yet; run `lhparity sync`"
    ));
    Ok(())
}

/// Refuses `-d` names that are not data disks of the array.
pub fn check_disk_names(config: &Config, state: &State, names: &[String]) -> Result<(), SyncError> {
    match names.iter().find(|n| state.disk(n).is_none()) {
        Some(name) => Err(SyncError::Refused(format!(
            "-d {name}: no data disk of that name in {}",
            config.source.display()
        ))),
        None => Ok(()),
    }
}

/// Scans every data disk in parallel.
pub fn scan_all(config: &Config) -> Result<Vec<DiskScan>, SyncError> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = config
            .data
            .iter()
            .map(|disk| scope.spawn(move || scan::scan_disk(config, disk)))
            .collect();
        handles
            .into_iter()
            .map(|h| match h.join() {
                Ok(r) => r.map_err(SyncError::from),
                Err(_) => Err(SyncError::Refused("a disk scan thread panicked".into())),
            })
            .collect()
    })
}

/// Compares every disk with the state.
pub fn compare_all(state: &State, scans: &[DiskScan]) -> Vec<DiskChanges> {
    state
        .disks
        .iter()
        .zip(scans)
        .map(|(disk, scan)| scan::compare(&disk.files, &scan.files))
        .collect()
}

/// The current Unix time in seconds.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Runs a sync.
pub fn sync(
    config: &Config,
    options: &SyncOptions,
    progress: &dyn Progress,
) -> Result<SyncReport, SyncError> {
    let started = Instant::now();
    let kernel = Kernel::selected()?;
    let Loaded {
        mut state,
        notes,
        is_new,
        copies_to_rewrite,
    } = load_state(config)?;
    let mut report = SyncReport {
        notes,
        ..SyncReport::default()
    };
    let content: Vec<PathBuf> = config.content.iter().map(|c| c.path.clone()).collect();
    let parity_paths = parity_paths(config)?;
    for path in &parity_paths {
        if path.is_dir() {
            return Err(SyncError::Refused(format!(
                "parity path {} is a folder; a `parity` line names the parity file itself \
                 (for example {}), on a disk of its own",
                crate::name::shown_path(&path),
                path.join("lhparity.parity").display()
            )));
        }
    }
    if is_new && !options.force_full {
        for path in &parity_paths {
            if std::fs::metadata(path).is_ok_and(|m| m.len() > 0) {
                return Err(SyncError::Refused(format!(
                    "parity file {} already holds data but no content file knows it; \
                     if it belongs to an array whose content files are lost, restore them; \
                     to overwrite it with a full sync, pass --force-full",
                    crate::name::shown_path(&path)
                )));
            }
        }
    }
    if !is_new {
        check_parity_files(&mut state, &parity_paths, options, &mut report)?;
    }
    // More parity levels than last time: the new levels need every position.
    if state.parity.len() < config.levels() {
        state.parity.resize(config.levels(), Default::default());
        state
            .positions
            .flags
            .iter_mut()
            .for_each(|f| *f |= UNSYNCED);
    }
    state.parity.truncate(config.levels());

    let scans = scan_all(config)?;
    let changes = compare_all(&state, &scans);
    for (disk, data) in state.disks.iter_mut().zip(&config.data) {
        disk.uuid = fs_uuid(&data.dir);
    }
    for (parity, path) in state.parity.iter_mut().zip(&parity_paths) {
        parity.uuid = path.parent().map(fs_uuid).unwrap_or_default();
    }
    check_safety(config, options, &state, &scans, &changes)?;
    // Files copied or moved here from another disk are compared with the originals'
    // hashes before anything changes: one that differs stops the sync while the
    // parity still holds the original.
    let mut copied = vec![0; scans.len()];
    if !options.force_nocopy {
        let copies = copied::find(&state.disks, &scans, &changes);
        if !copies.is_empty() {
            let unverified = copied::verify(config, &state, &scans, &copies, progress);
            // Stopped before every copy was read: nothing is recorded, since the
            // state saved would no longer list the originals.
            if let Some(signal) = crate::interrupt::requested() {
                report.interrupted = Some(signal);
                report.positions_left = state.positions_awaiting_sync();
                return Ok(report);
            }
            if !unverified.is_empty() {
                return Err(SyncError::Refused(copies_unverified(
                    config,
                    &state,
                    &scans,
                    &copies,
                    &unverified,
                )));
            }
            for c in &copies {
                copied[c.slot] += 1;
            }
        }
    }
    let mut touched = false;
    for (slot, (scan, change)) in scans.iter().zip(&changes).enumerate() {
        let disk = &state.disks[slot];
        // Links, hard links and the rest are compared below, in the disk entry.
        touched |= !change.is_empty();
        report.disks.push(DiskSummary {
            name: disk.name.clone(),
            changes: change.clone(),
            files: scan.files.len(),
            copied: copied[slot],
        });
        // As SnapRAID does, sockets, fifos and device nodes are passed over with a
        // warning that does not fail the sync: they hold no data to protect.
        for skipped in &scan.skipped {
            report.notes.push(format!(
                "warning: disk '{}': ignoring {}: a socket, fifo or device, not a regular file, link or folder",
                disk.name,
                crate::name::shown_path(&crate::name::join(&config.data[slot].dir, skipped))
            ));
        }
        let mut next = scan::apply(&mut state, slot, scan, change);
        // A mode or owner changed alone changes no parity, but is worth saving:
        // `fix` gives restored files and folders what the state records. Folders
        // and empty folders are compared apart, without their mtimes (see
        // `same_folders`); an empty folder's mode is among the folders'.
        let folders = std::mem::take(&mut next.folders);
        let before = std::mem::take(&mut state.disks[slot].folders);
        let dirs = std::mem::take(&mut next.dirs);
        let dirs_before = std::mem::take(&mut state.disks[slot].dirs);
        touched |= next != state.disks[slot]
            || !same_folders(&before, &folders)
            || !dirs
                .iter()
                .map(|d| &d.path)
                .eq(dirs_before.iter().map(|d| &d.path));
        next.folders = folders;
        next.dirs = dirs;
        state.disks[slot] = next;
    }

    trim_positions(&mut state);
    // A full sync, as SnapRAID's `sync -F`, computes the parity of every position
    // again from the data (a block that fails its hash still keeps the parity
    // there). Its positions are marked a segment at a time, as in any sync: one
    // that is stopped leaves the parity it did not reach as it was, for `fix`.
    let work: Vec<u32> = (0..state.positions.len() as u32)
        .filter(|&p| options.force_full || awaits_sync(state.positions.flags[p as usize]))
        .collect();
    report.recorded = touched;
    if work.is_empty() {
        if touched || is_new || copies_to_rewrite {
            state.last_sync = now();
            store::save(&mut state, &content)?;
        }
        report.seconds = started.elapsed().as_secs_f64();
        return Ok(report);
    }

    // Positions whose parity stays as it is show which level each file holds.
    let before = if options.force_full {
        Before::FullSync
    } else {
        Before::Sync
    };
    for warning in parity_order::check(config, &state, &parity_paths, before)? {
        report.notes.push(format!("warning: {warning}"));
    }
    let block_size = state.block_size as usize;
    let parity_files = open_parity(&parity_paths, block_size)?;
    let disk_count = config.data.len().max(1) as u64;
    let mut segment_len = match config.autosave {
        Some(bytes) => (bytes / (block_size as u64 * disk_count)).max(1) as usize,
        None => work.len(),
    };
    // --pre-hash reads the new blocks once more, first, a segment at a time, and
    // keeps their hashes until the segment is synced: segments are bounded so that
    // this stays small whatever the array.
    let (new_positions, new_blocks) = if options.pre_hash {
        segment_len = segment_len.min(PRE_HASH_SEGMENT);
        positions_with_new_blocks(&state)
    } else {
        (PositionSet::default(), 0)
    };
    // The pre-hash pass reads only files with new blocks.
    let pre_skip: Vec<Vec<bool>> = if options.pre_hash {
        state
            .disks
            .iter()
            .map(|d| d.files.iter().map(|f| !f.has_new_blocks()).collect())
            .collect()
    } else {
        Vec::new()
    };
    let total_bytes = (work.len() as u64 * disk_count + new_blocks) * block_size as u64;
    progress.start(total_bytes);
    let mut failure = None;
    // The parity as it is, for positions whose new parity cannot be computed.
    let old_parity: Vec<Option<File>> = parity_paths.iter().map(|p| File::open(p).ok()).collect();
    for segment in work.chunks(segment_len) {
        if let Some(signal) = crate::interrupt::requested() {
            report.interrupted = Some(signal);
            break;
        }
        let prior: Vec<u8> = segment
            .iter()
            .map(|&p| state.positions.flags[p as usize])
            .collect();
        // Intent: these positions are about to be rewritten.
        for &p in segment {
            state.positions.flags[p as usize] |= DIRTY;
        }
        store::save(&mut state, &content)?;
        let sources = pipeline::data_sources(&state.disks, &config.data, None);
        let expected = if options.pre_hash {
            let pre: Vec<u32> = segment
                .iter()
                .copied()
                .filter(|&p| new_positions.contains(p))
                .collect();
            let pre_sources = pipeline::data_sources(&state.disks, &config.data, Some(&pre_skip));
            match pre_hash(&state, &pre_sources, block_size, &pre, progress) {
                Ok((hashes, errors)) => {
                    report.warnings.extend(errors);
                    Some(hashes)
                }
                Err(e) => {
                    failure = Some(SyncError::from(e));
                    break;
                }
            }
        } else {
            None
        };
        let stage = SyncStage {
            kernel,
            key: &state.hash_key,
            disks: &state.disks,
            zero: vec![0u8; block_size],
            expected: expected.as_ref(),
            block_size,
            old_parity: &old_parity,
        };
        let run = pipeline::run(
            block_size,
            segment,
            &sources,
            Some(ParityOutput {
                files: &parity_files,
                paths: &parity_paths,
            }),
            &|j, blocks, parity| stage.position(segment[j], blocks, parity),
            &|bytes| progress.advance(bytes),
            Reads::Copy,
        );
        let (segment, outcome) = match run {
            Ok(mut run) => {
                // Stopped by a signal: the positions the stage did not see keep
                // their flags, and the parity there was not touched.
                let full = segment;
                let segment = &full[..run.done.min(full.len())];
                if segment.len() < full.len() {
                    for (j, &p) in full.iter().enumerate().skip(segment.len()) {
                        state.positions.flags[p as usize] = prior[j];
                    }
                    run.results.truncate(segment.len());
                    report.interrupted = crate::interrupt::requested();
                }
                exclude_changed(&mut run, &state.disks, segment);
                (segment, run)
            }
            Err(e) => {
                failure = Some(SyncError::from(e));
                break;
            }
        };
        for (file, path) in parity_files.iter().zip(&parity_paths) {
            file.sync_data().map_err(|source| SyncError::Io {
                what: "flushing parity file",
                path: path.clone(),
                source,
            })?;
        }
        report.bytes += outcome.bytes;
        // A file that could not be opened has its own message among the errors.
        let changed = outcome
            .changed
            .iter()
            .filter(|f| outcome.unopened.binary_search(f).is_err());
        for (slot, file) in changed {
            let path = crate::name::join(
                &config.data[*slot].dir,
                &state.disks[*slot].files[*file].path,
            );
            report.warnings.push(format!(
                "disk '{}': {} changed while it was synced: what was read is protected, the change is left for the next sync",
                state.disks[*slot].name,
                crate::name::shown_path(&path)
            ));
        }
        report.warnings.extend(outcome.errors.iter().cloned());
        commit(&mut state, segment, &prior, &outcome, &mut report);
        if report.interrupted.is_some() {
            break;
        }
    }
    progress.finish();
    if report.interrupted.is_some() {
        report.positions_left = if options.force_full {
            work.len().saturating_sub(report.positions_synced)
        } else {
            state.positions_awaiting_sync()
        };
    }
    if failure.is_none() {
        // Positions past the last used one were trimmed: give the space back.
        let len = state.positions.len() as u64 * block_size as u64;
        for (file, path) in parity_files.iter().zip(&parity_paths) {
            if file.metadata().is_ok_and(|m| m.len() > len) {
                file.set_len(len).map_err(|source| SyncError::Io {
                    what: "truncating parity file",
                    path: path.clone(),
                    source,
                })?;
            }
        }
        if report.positions_left == 0 {
            state.last_sync = now();
        }
    }
    store::save(&mut state, &content)?;
    if let Some(e) = failure {
        return Err(e);
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// The refusal of a sync that found copies it could not take for their originals'
/// bytes, naming the first few, and the ways out.
fn copies_unverified(
    config: &Config,
    state: &State,
    scans: &[DiskScan],
    copies: &[copied::Copied],
    unverified: &[copied::Unverified],
) -> String {
    use copied::Problem;
    const SHOWN: usize = 10;
    let block_size = u64::from(state.block_size);
    let mut message = format!(
        "{} file(s) copied or moved from another data disk do not match, or could not be \
         checked against, the originals the last sync protected (same path, size and \
         mtime):",
        unverified.len()
    );
    for u in unverified.iter().take(SHOWN) {
        let c = &copies[u.copy];
        let found = &scans[c.slot].files[c.found];
        let copy =
            crate::name::shown_path(&crate::name::join(&config.data[c.slot].dir, &found.path));
        let (from_slot, from) = c.from[0];
        let original = crate::name::shown_path(&crate::name::join(
            &config.data[from_slot].dir,
            &state.disks[from_slot].files[from].path,
        ));
        let others = match c.from.len() {
            1 => String::new(),
            n => format!(" (or {} other file(s) of that name)", n - 1),
        };
        let what = match &u.problem {
            Problem::Differs { block } => format!(
                "differs from {original}{others} in the block at byte {}",
                *block as u64 * block_size
            ),
            Problem::Unreadable { block, error } => format!(
                "cannot be read at byte {} ({error}) to compare it with {original}",
                *block as u64 * block_size
            ),
            Problem::Unopened(error) => {
                format!("cannot be opened ({error}) to compare it with {original}")
            }
            Problem::Changed => format!("changed while it was compared with {original}"),
        };
        message.push_str(&format!(
            "\n  disk '{}': {copy} {what}; if the original is gone: `lhparity fix -m -f /{}`",
            state.disks[c.slot].name,
            crate::name::shown(&found.path)
        ));
    }
    if unverified.len() > SHOWN {
        message.push_str(&format!("\n  and {} more", unverified.len() - SHOWN));
    }
    message.push_str(
        "\nNothing was synced, so the parity still holds the originals. Copy each file \
         again from its original (or let a copy still being written finish) and run the \
         sync again; an original that is gone comes back with the `lhparity fix -m -f` \
         named with it. Files meant to differ are synced with `lhparity sync \
         --force-nocopy`.",
    );
    message
}

/// Drops the positions past the last one a file uses: their parity protects nothing
/// (deleted blocks there belong to no stripe a live file shares).
fn trim_positions(state: &mut State) {
    let end = state
        .disks
        .iter()
        .flat_map(|d| &d.files)
        .filter_map(|f| f.extents.iter().map(|e| e.pos + e.len).max())
        .max()
        .unwrap_or(0);
    state.positions.truncate(end as usize);
    for disk in &mut state.disks {
        disk.deleted.retain(|b| b.pos < end);
    }
    state.bad.retain(|b| b.pos < end);
}

/// What sync's stage found at one position.
#[derive(Clone, Debug, Default)]
pub struct PositionResult {
    /// Hashes of the new blocks read here: (disk slot, file, block, hash).
    pub new_hashes: Vec<(usize, usize, usize, Hash)>,
    /// Disk slots whose known block did not match its hash.
    pub bad: Vec<usize>,
    /// New blocks (disk slot, file, block) that read back other bytes than in the
    /// `--pre-hash` pass.
    pub reread: Vec<(usize, usize, usize)>,
    /// Some block could not be read or belongs to a file that changed: the parity
    /// written here must not be trusted.
    pub excluded: bool,
    /// The parity found here before was written back unchanged (a block failed its
    /// hash or could not be read, so no new parity is computed from it): it still
    /// serves to rebuild the old blocks.
    pub kept: bool,
}

/// Sync's work on one stripe: hash every block (new blocks get their hash, known ones
/// are verified) and compute the parity.
struct SyncStage<'a> {
    kernel: Kernel,
    key: &'a [u8; 32],
    disks: &'a [Disk],
    zero: Vec<u8>,
    /// With `--pre-hash`: the hash each new block had on the first read.
    expected: Option<&'a PreHashes>,
    block_size: usize,
    /// Read-only handles of the parity files, to keep what a position holds.
    old_parity: &'a [Option<File>],
}

/// New blocks' hashes from the `--pre-hash` pass, by (disk slot, file, block).
type PreHashes = HashMap<(usize, usize, usize), Hash>;

/// Most positions per segment with `--pre-hash`: 16 GiB per disk at the default
/// block size, so that the first pass's hashes take tens of MB at most.
const PRE_HASH_SEGMENT: usize = 1 << 16;

/// A set of positions, one bit each.
#[derive(Default)]
struct PositionSet(Vec<u64>);

impl PositionSet {
    fn insert(&mut self, pos: u32) {
        let (word, bit) = (pos as usize / 64, pos % 64);
        if self.0.len() <= word {
            self.0.resize(word + 1, 0);
        }
        self.0[word] |= 1 << bit;
    }

    fn contains(&self, pos: u32) -> bool {
        self.0
            .get(pos as usize / 64)
            .is_some_and(|w| w >> (pos % 64) & 1 == 1)
    }
}

/// The positions holding a block whose hash is not known yet, and how many such
/// blocks there are.
fn positions_with_new_blocks(state: &State) -> (PositionSet, u64) {
    let mut out = PositionSet::default();
    let mut count = 0;
    for f in state.disks.iter().flat_map(|d| &d.files) {
        if !f.has_new_blocks() {
            continue;
        }
        for (i, pos) in f.positions().enumerate() {
            if f.is_new(i) {
                out.insert(pos);
                count += 1;
            }
        }
    }
    (out, count)
}

/// The `--pre-hash` pass over `positions` of `sources`: every new block read and
/// hashed. Returns the hashes, and a message per read error.
fn pre_hash(
    state: &State,
    sources: &[pipeline::Source],
    block_size: usize,
    positions: &[u32],
    progress: &dyn Progress,
) -> Result<(PreHashes, Vec<String>), PipelineError> {
    let key = &state.hash_key;
    let hash_new = |_j: usize, blocks: &[Block], _: &mut [&mut [u8]]| {
        let mut found = Vec::new();
        for (slot, block) in blocks.iter().enumerate() {
            if let Status::Present {
                file,
                block: i,
                len,
            } = block.status
            {
                if state.disks[slot].files[file].is_new(i) {
                    found.push((slot, file, i, block_hash(key, &block.bytes[..len])));
                }
            }
        }
        Ok(found)
    };
    let run = pipeline::run(
        block_size,
        positions,
        sources,
        None,
        &hash_new,
        &|bytes| progress.advance(bytes),
        Reads::Copy,
    )?;
    let changed: HashSet<(usize, usize)> = run.changed.iter().copied().collect();
    let hashes = run
        .results
        .into_iter()
        .flatten()
        .filter(|&(slot, file, _, _)| !changed.contains(&(slot, file)))
        .map(|(slot, file, block, hash)| ((slot, file, block), hash))
        .collect();
    Ok((hashes, run.errors))
}

impl SyncStage<'_> {
    fn position(
        &self,
        pos: u32,
        blocks: &[Block],
        parity: &mut [&mut [u8]],
    ) -> Result<PositionResult, PipelineError> {
        let mut result = PositionResult::default();
        let columns = crate::state::model::columns(self.disks);
        let mut data: Vec<&[u8]> = vec![&self.zero; columns];
        for (slot, block) in blocks.iter().enumerate() {
            match block.status {
                Status::Absent => {}
                Status::Skipped { .. } | Status::Unreadable { .. } => result.excluded = true,
                Status::Present {
                    file,
                    block: i,
                    len,
                } => {
                    data[self.disks[slot].index as usize] = block.bytes;
                    let entry = &self.disks[slot].files[file];
                    let hash = block_hash(self.key, &block.bytes[..len]);
                    if entry.is_new(i) {
                        if let Some(expected) = self.expected {
                            // Two reads of the same block must agree, and a block the
                            // first pass could not read is not trusted on one read.
                            if expected.get(&(slot, file, i)) != Some(&hash) {
                                result.reread.push((slot, file, i));
                                result.excluded = true;
                            }
                        }
                        result.new_hashes.push((slot, file, i, hash));
                    } else if entry.hashes[i] != hash {
                        result.bad.push(slot);
                    }
                }
            }
        }
        if result.excluded || !result.bad.is_empty() {
            // A block that failed its hash or could not be read must not go into
            // the parity: the parity as it was may be all that can bring it back.
            result.kept = self.keep_parity(pos, parity);
            return Ok(result);
        }
        if !parity.is_empty() {
            raid::generate_with(self.kernel, &data, parity)?;
        }
        Ok(result)
    }

    /// Reads the parity position `pos` holds now into `parity`, to be written back
    /// as it was (past a file's end: zeros, the parity of nothing). Whether every
    /// level was read.
    fn keep_parity(&self, pos: u32, parity: &mut [&mut [u8]]) -> bool {
        let offset = u64::from(pos) * self.block_size as u64;
        let mut kept = true;
        for (level, out) in parity.iter_mut().enumerate() {
            let Some(Some(file)) = self.old_parity.get(level) else {
                kept = false;
                continue;
            };
            let mut done = 0;
            while done < out.len() {
                match file.read_at(&mut out[done..], offset + done as u64) {
                    Ok(0) => break,
                    Ok(n) => done += n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => {
                        kept = false;
                        break;
                    }
                }
            }
            out[done..].fill(0);
        }
        kept
    }
}

/// Positions holding a block of a file that changed while it was read.
///
/// Blocks are copied before they are hashed, so a position whose new parity was
/// computed holds the parity of exactly the bytes whose hashes it records: it is
/// committed like any other, and the file's later bytes are left to the next sync
/// (its size or mtime tell `diff` it changed). A block of such a file that no longer
/// matched its known hash was changed by the writer, not damaged: it is no bad block.
/// The parity there was kept as it was, so the position stays unsynced.
fn exclude_changed(run: &mut pipeline::Run<PositionResult>, disks: &[Disk], segment: &[u32]) {
    // The (disk slot, position) of every block of a changed file.
    let changed: HashSet<(usize, u32)> = run
        .changed
        .iter()
        .flat_map(|&(slot, file)| disks[slot].files[file].positions().map(move |p| (slot, p)))
        .collect();
    for j in run.touched_by_changes(disks, segment) {
        let pos = segment[j];
        let result = &mut run.results[j];
        let before = result.bad.len();
        result.bad.retain(|&slot| !changed.contains(&(slot, pos)));
        if result.bad.len() < before {
            result.excluded = true;
        }
    }
}

/// Records the pipeline's results for a segment whose parity is on disk.
fn commit(
    state: &mut State,
    segment: &[u32],
    prior: &[u8],
    outcome: &pipeline::Run<PositionResult>,
    report: &mut SyncReport,
) {
    let now = now() as u32;
    let mut committed = vec![false; segment.len()];
    let mut reread: BTreeMap<(usize, usize), usize> = BTreeMap::new();
    for (j, result) in outcome.results.iter().enumerate() {
        let pos = segment[j];
        for &(slot, file, _) in &result.reread {
            *reread.entry((slot, file)).or_insert(0usize) += 1;
        }
        for &slot in &result.bad {
            let disk = state.disks[slot].index;
            if !state.bad.iter().any(|b| b.pos == pos && b.disk == disk) {
                state.bad.push(crate::state::model::BadBlock { pos, disk });
            }
            report.warnings.push(format!(
                "disk '{}': the block at position {pos} does not match its hash (silent \
                 corruption); run `lhparity fix` to repair it",
                state.disks[slot].name
            ));
        }
        if result.excluded || !result.bad.is_empty() {
            report.positions_left += 1;
            // Parity written back as it was still holds the old blocks, unless a
            // crashed sync had left it unknown already.
            let before = prior.get(j).copied().unwrap_or(DIRTY);
            if result.kept && before & DIRTY == 0 {
                state.positions.flags[pos as usize] = before | UNSYNCED;
            }
            continue;
        }
        for &(slot, file, block, hash) in &result.new_hashes {
            let f = &mut state.disks[slot].files[file];
            f.hashes[block] = hash;
            f.set_new(block, false);
        }
        state.positions.flags[pos as usize] = SCRUB_NEW;
        state.positions.verified[pos as usize] = now;
        committed[j] = true;
        report.positions_synced += 1;
    }
    for ((slot, file), blocks) in reread {
        // A file that changed while synced is reported as such already.
        if outcome.changed.contains(&(slot, file)) {
            continue;
        }
        let disk = &state.disks[slot];
        report.warnings.push(format!(
            "disk '{}': {blocks} new block(s) of {} did not read back the same as in the \
             pre-hash pass (or could not be read then); their positions are left for the \
             next sync: check the disk, its cable and the memory, then sync again",
            disk.name,
            crate::name::shown(&disk.files[file].path)
        ));
    }
    let committed_pos = |pos: &u32| segment.binary_search(pos).is_ok_and(|j| committed[j]);
    // Deleted blocks at committed positions are no longer in the parity.
    for disk in &mut state.disks {
        disk.deleted.retain(|d| !committed_pos(&d.pos));
    }
    // Nor is a bad block a scrub marked there: every block of a committed position
    // matched its hash or was hashed anew, and its parity was computed from them.
    state.bad.retain(|b| !committed_pos(&b.pos));
}

/// Whether two lists of folders have the same paths, modes and owners. Their
/// mtimes alone are no change to save: a folder's follows the changes of its
/// entries, which are saved on their own, and a folder holding a content copy
/// changes at every save.
fn same_folders(a: &[FolderEntry], b: &[FolderEntry]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| (&x.path, x.mode, x.uid, x.gid) == (&y.path, y.mode, y.uid, y.gid))
}

/// Refuses what looks like an accident rather than a change.
fn check_safety(
    config: &Config,
    options: &SyncOptions,
    state: &State,
    scans: &[DiskScan],
    changes: &[DiskChanges],
) -> Result<(), SyncError> {
    for (slot, (disk, scan)) in state.disks.iter().zip(scans).enumerate() {
        let dir = config
            .data
            .iter()
            .find(|d| d.name == disk.name)
            .map(|d| d.dir.display().to_string())
            .unwrap_or_default();
        // Only files whose data the parity covers count: a disk whose files were
        // never synced has nothing to lose.
        let protected: Vec<&FileEntry> = disk
            .files
            .iter()
            .filter(|f| f.hashes.is_empty() || (0..f.hashes.len()).any(|i| !f.is_new(i)))
            .collect();
        if options.force_empty || protected.is_empty() {
            continue;
        }
        if scan.files.is_empty() {
            return Err(SyncError::Refused(format!(
                "disk '{}' at {dir} had {} files and is now empty: is it unmounted? \
                 Mount it and retry; if it is a new disk in place of a failed one, `lhparity \
                 fix -d {}` brings its files back; if the files were really deleted, pass \
                 --force-empty",
                disk.name,
                protected.len(),
                disk.name
            )));
        }
        // A different filesystem mounted in the disk's place keeps none of its files:
        // no path with its inode (files rewritten in place keep both), no inode with
        // its size and mtime (files renamed, even swapped, keep those), and no path
        // with its size and mtime (a disk put back from a backup keeps those). Inode
        // numbers alone prove nothing: a new filesystem hands out the same ones.
        let by_path: HashMap<&str, u64> = scan
            .files
            .iter()
            .map(|f| (f.path.as_str(), f.inode))
            .collect();
        let by_inode: HashMap<u64, (u64, i64)> = scan
            .files
            .iter()
            .map(|f| (f.inode, (f.size, f.mtime_ns)))
            .collect();
        let same_file = protected.iter().any(|f| {
            by_path.get(f.path.as_str()) == Some(&f.inode)
                || by_inode.get(&f.inode) == Some(&(f.size, f.mtime_ns))
        });
        if !same_file && changes.get(slot).is_some_and(|c| c.kept() == 0) {
            return Err(SyncError::Refused(format!(
                "all {} files of disk '{}' at {dir} are missing or rewritten: is another \
                 disk mounted there? Fix the mount and retry; if this is intended, pass \
                 --force-empty",
                protected.len(),
                disk.name
            )));
        }
    }
    // Positions are 32-bit, as in SnapRAID: a disk needing more blocks than that at
    // this block size cannot be protected.
    for (scan, data) in scans.iter().zip(&config.data) {
        let blocks: u64 = scan
            .files
            .iter()
            .map(|f| FileEntry::block_count(f.size, state.block_size) as u64)
            .sum();
        if blocks > u64::from(u32::MAX) {
            return Err(SyncError::Refused(format!(
                "disk '{}' needs {blocks} blocks of {} KiB, more than the {} positions an \
                 array can have; use a larger `blocksize` in the config (a new array)",
                data.name,
                state.block_size / 1024,
                u32::MAX
            )));
        }
    }
    // A file that had data and is now empty is more often a crash or a failing tool
    // than an edit (SnapRAID's `--force-zero`).
    if !options.force_zero {
        let emptied: Vec<String> = state
            .disks
            .iter()
            .zip(scans)
            .zip(changes)
            .flat_map(|((disk, scan), c)| {
                c.updated
                    .iter()
                    .filter(|&&(o, n)| disk.files[o].size > 0 && scan.files[n].size == 0)
                    .map(|&(o, _)| {
                        format!("{}/{}", disk.name, crate::name::shown(&disk.files[o].path))
                    })
            })
            .collect();
        if !emptied.is_empty() {
            let shown: Vec<&str> = emptied.iter().take(5).map(String::as_str).collect();
            return Err(SyncError::Refused(format!(
                "{} file(s) that had data are now empty ({}{}): a crash or a failing program \
                 can do that; check them, restore them with `lhparity fix -f PATH`, or pass \
                 --force-zero to sync them as empty",
                emptied.len(),
                shown.join(", "),
                if emptied.len() > shown.len() {
                    ", ..."
                } else {
                    ""
                }
            )));
        }
    }
    let removed: usize = changes.iter().map(|c| c.removed.len()).sum();
    if let Some(limit) = config.delete_threshold {
        if removed as u64 > limit && !options.force_delete {
            return Err(SyncError::Refused(format!(
                "{removed} files would be removed, more than delete-threshold {limit} in {}; \
                 check with `lhparity diff`, then pass --force-delete to sync anyway",
                config.source.display()
            )));
        }
    }
    Ok(())
}

/// Refuses a sync when a parity file the state relies on is missing or shorter than
/// its synced positions need (an unmounted disk, a lost file): a sync that made a
/// new one would claim protection that is not there. `--force-full` syncs every
/// position again instead.
fn check_parity_files(
    state: &mut State,
    paths: &[PathBuf],
    options: &SyncOptions,
    report: &mut SyncReport,
) -> Result<(), SyncError> {
    let synced_end = state
        .positions
        .flags
        .iter()
        .rposition(|&f| !awaits_sync(f))
        .map_or(0, |p| (p as u64 + 1) * u64::from(state.block_size));
    for path in paths.iter().take(state.parity.len()) {
        let problem = match std::fs::metadata(path).map(|m| m.len()) {
            Ok(len) if len >= synced_end => continue,
            Ok(len) => format!("holds {len} bytes where the synced positions need {synced_end}"),
            Err(e) => e.to_string(),
        };
        if !options.force_full {
            return Err(SyncError::Refused(format!(
                "parity file {}: {problem}; if its disk is not mounted, mount it; if the file \
                 is lost or damaged, `lhparity fix` rebuilds it; to build all parity again \
                 with a full sync, pass --force-full",
                crate::name::shown_path(&path)
            )));
        }
        state
            .positions
            .flags
            .iter_mut()
            .for_each(|f| *f |= UNSYNCED);
        report.notes.push(format!(
            "parity file {}: {problem}; --force-full: every position is synced again",
            crate::name::shown_path(&path)
        ));
        break;
    }
    Ok(())
}

/// The UUID of the filesystem holding `path` ("" when it has none, e.g. tmpfs): from
/// the links udev keeps in /dev/disk/by-uuid, or else by asking `blkid` about the
/// block device that /sys names for the filesystem's device number.
pub fn fs_uuid(path: &std::path::Path) -> String {
    use std::os::unix::fs::MetadataExt;
    let Ok(dev) = std::fs::metadata(path).map(|m| m.dev()) else {
        return String::new();
    };
    if let Ok(entries) = std::fs::read_dir("/dev/disk/by-uuid") {
        if let Some(e) = entries
            .flatten()
            .find(|e| std::fs::metadata(e.path()).is_ok_and(|m| m.rdev() == dev))
        {
            return e.file_name().to_string_lossy().into_owned();
        }
    }
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    let uevent = std::fs::read_to_string(format!("/sys/dev/block/{major}:{minor}/uevent"));
    let Some(name) = uevent.ok().and_then(|u| {
        u.lines()
            .find_map(|l| l.strip_prefix("DEVNAME=").map(str::to_string))
    }) else {
        return String::new();
    };
    std::process::Command::new("blkid")
        .args(["-o", "value", "-s", "UUID", &format!("/dev/{name}")])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// The parity file of every level; split parity is refused for now.
pub fn parity_paths(config: &Config) -> Result<Vec<PathBuf>, SyncError> {
    config
        .parity
        .iter()
        .map(|p| match p.files.as_slice() {
            [one] => Ok(one.clone()),
            _ => Err(SyncError::Refused(format!(
                "{}:{}: parity level {} is split over {} files; split parity is not \
                 supported yet, use one file per level",
                config.source.display(),
                p.line,
                p.level,
                p.files.len()
            ))),
        })
        .collect()
}

/// Opens the parity files for writing. With a block size that is a multiple of 4 KiB
/// they are opened for direct I/O: the parity goes from the pipeline's buffers to the
/// disk without a copy into the page cache, which sync would only flush right after
/// (a filesystem that refuses direct I/O gets buffered I/O).
fn open_parity(paths: &[PathBuf], block_size: usize) -> Result<Vec<File>, SyncError> {
    use std::os::unix::fs::OpenOptionsExt;
    paths
        .iter()
        .map(|path| {
            let open = |flags: i32| {
                OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .custom_flags(flags)
                    .open(path)
            };
            let direct = block_size.is_multiple_of(4096);
            let existed = path.exists();
            let file = match direct.then(|| open(libc::O_DIRECT)) {
                Some(Ok(f)) => Ok(f),
                _ => open(0),
            };
            let file = file.map_err(|source| SyncError::Io {
                what: "opening parity file",
                path: path.clone(),
                source,
            })?;
            // A new parity file's name must survive a power cut as its data does.
            if !existed {
                store::sync_folder_of(path).map_err(|source| SyncError::Io {
                    what: "flushing the folder of parity file",
                    path: path.clone(),
                    source,
                })?;
            }
            Ok(file)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One disk holding one file of one new block of `bytes`.
    fn disk(bytes: &[u8]) -> Disk {
        let mut file = FileEntry {
            path: "f".into(),
            size: bytes.len() as u64,
            hashes: vec![[0; 16]],
            ..FileEntry::default()
        };
        file.set_new(0, true);
        Disk {
            name: "d1".into(),
            files: vec![file],
            ..Disk::default()
        }
    }

    fn run_stage(expected: Option<&PreHashes>, bytes: &[u8]) -> PositionResult {
        let disks = [disk(bytes)];
        let stage = SyncStage {
            kernel: Kernel::Scalar,
            key: &[7; 32],
            disks: &disks,
            zero: vec![0; 64],
            expected,
            block_size: 64,
            old_parity: &[],
        };
        let block = Block {
            bytes,
            status: Status::Present {
                file: 0,
                block: 0,
                len: bytes.len(),
            },
            in_place: false,
        };
        stage.position(0, &[block], &mut []).unwrap()
    }

    #[test]
    fn a_new_block_that_reads_back_different_is_not_synced() {
        let bytes = [5u8; 64];
        let same: PreHashes = [((0, 0, 0), block_hash(&[7; 32], &bytes))].into();
        let other: PreHashes = [((0, 0, 0), block_hash(&[7; 32], &[6u8; 64]))].into();

        let plain = run_stage(None, &bytes);
        assert!(!plain.excluded && plain.reread.is_empty());
        assert_eq!(plain.new_hashes.len(), 1);
        let agreed = run_stage(Some(&same), &bytes);
        assert!(!agreed.excluded && agreed.reread.is_empty());
        let differs = run_stage(Some(&other), &bytes);
        assert!(differs.excluded);
        assert_eq!(differs.reread, [(0, 0, 0)]);
        // A block the first pass could not read is not trusted on one read either.
        let unread = run_stage(Some(&PreHashes::new()), &bytes);
        assert!(unread.excluded);
        assert_eq!(unread.reread, [(0, 0, 0)]);
    }

    #[test]
    fn holds_any_position() {
        let mut set = PositionSet::default();
        for p in [0, 63, 64, 1_000_000, 9_999_999] {
            assert!(!set.contains(p));
            set.insert(p);
            assert!(set.contains(p));
        }
        assert!(!set.contains(1) && !set.contains(999_999));
    }
}
