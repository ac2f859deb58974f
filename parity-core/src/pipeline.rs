//! The multi-disk pipeline that sync, scrub, check and fix run over a list of
//! positions: one reader thread per source (a data disk or a parity file) reading in
//! position order, a stage spread over the cores with rayon that sees one whole
//! stripe at a time, and one writer thread per parity file when parity is written.
//!
//! Positions travel in batches. A reader fills one buffer per batch and sends it; the
//! stage runs once per position of the batch, in parallel, with every source's block
//! and the parity buffers to fill; writers write each level's buffer at
//! `position x block size`. Buffers are recycled through per-source and per-level
//! pools, so memory stays bounded whatever the array size.
//!
//! The pipeline never touches the state: it returns what the stage returned per
//! position, and the command decides what to commit.
//!
//! Passes that only read (`Reads::Map`: scrub, check, fix) take ranges that are
//! already in the page cache through shared mappings instead of copies (see
//! `mapped`); a file read that way is checked for changes after the stage has
//! seen its last block, since the stage reads its bytes in place.

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crossbeam::channel::{bounded, Receiver, Sender};
use rayon::prelude::*;

use crate::beneath::{self, Root};
use crate::config::DataDisk;
use crate::mapped::Window;
use crate::state::model::{Disk, FileEntry};

/// Bytes of one source's data per batch. Small on purpose: a reader's buffer is
/// still in the CPU caches when the stage reads it. With warm page cache, 1 MiB
/// batches made sync, scrub and fix 13-24% faster (and cheaper in CPU) than 8 MiB
/// ones on 4 disks, because every byte was otherwise copied into and read back
/// from main memory.
const BATCH_BYTES: usize = 1 << 20;
/// The same with `Reads::Map`, where most blocks are not copied: larger batches
/// mean fewer hand-overs between threads (a third of the context switches), which
/// made a warm scrub 4% and a warm `fix -d` 6% faster than 1 MiB ones.
const MAPPED_BATCH_BYTES: usize = 4 << 20;
/// What the batch buffers of all sources may hold together with `Reads::Map`
/// before batches shrink back towards `BATCH_BYTES`: blocks that are not cached are
/// still copied into them, and an array of many disks should not take 4 MiB x
/// the read-ahead per disk for that.
const MAPPED_BATCH_BUDGET: usize = 128 << 20;
/// The most bytes of one source's batch when the thread count asks for more
/// positions than `BATCH_BYTES` holds (large blocks, many cores).
const MAX_BATCH_BYTES: usize = 32 << 20;
/// Batches a reader may run ahead of the stage: with 1 MiB batches, 4 MiB per disk
/// of slack for disks that stall now and then.
const READ_AHEAD: usize = 4;
/// Bytes of one file per mapping (`Reads::Map`): large enough that unmapping, which
/// interrupts every core the process runs on, is rare; small enough that a cold
/// stretch of a file is found before much of it was asked for.
const WINDOW_BYTES: usize = 16 << 20;
/// How far past the end of a range read with `pread` the kernel's read-ahead may
/// have filled the cache: at most about twice the device's read-ahead window
/// (`read_ahead_kb`, 128 KiB by default, a few MiB on some arrays); this covers
/// windows up to 32 MiB. Past it, what a pass finds cached was cached before.
const READ_AHEAD_REACH: u64 = 64 << 20;
/// Windows one reader keeps alive at most (in its batches in flight); past that it
/// copies. Bounds the mappings and open files of many disks of small files.
const MAX_LIVE_WINDOWS: usize = 32;

/// How readers get bytes.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Reads {
    /// `pread` into the pipeline's buffers: the stage sees a private copy, which
    /// sync needs, as it hashes and computes parity from the same bytes.
    Copy,
    /// Whole blocks whose pages are all cached are mapped and read in place; the
    /// rest is copied. For passes that only read and verify.
    Map,
}

/// One data source per data disk of the state, in slot order; with `skip`, the
/// files marked `true` in a disk's list are not read.
pub fn data_sources<'a>(
    disks: &'a [Disk],
    data: &'a [DataDisk],
    skip: Option<&'a [Vec<bool>]>,
) -> Vec<Source<'a>> {
    disks
        .iter()
        .zip(data)
        .enumerate()
        .map(|(slot, (d, c))| Source::Data {
            name: &d.name,
            dir: &c.dir,
            files: &d.files,
            skip: skip.and_then(|s| s.get(slot)).map(Vec::as_slice),
            read_changed: false,
            elsewhere: &[],
            imported: None,
        })
        .collect()
}

/// Where blocks come from.
pub enum Source<'a> {
    /// A data disk: the blocks of `files` at the positions, read from `dir`.
    Data {
        name: &'a str,
        dir: &'a Path,
        files: &'a [FileEntry],
        /// Files not to read (their blocks show as `Skipped`); `None` reads all.
        skip: Option<&'a [bool]>,
        /// Read a file whose size, inode or mtime changed since the state was saved
        /// too (it is still reported as changed), for a caller that checks what it
        /// uses against the hashes: `fix`, where a file whose mtime alone changed
        /// still serves to rebuild the others. Otherwise its blocks are `Skipped`.
        read_changed: bool,
        /// With `read_changed`: other data disks' roots, where a file missing here is
        /// looked for at its path with its size and mtime (moved to another disk
        /// since the sync), and read from there as a changed file.
        elsewhere: &'a [&'a Path],
        /// With `read_changed`: files (by index in `files`) that, missing here, are
        /// read as changed files from another place first (`fix -i`).
        imported: Option<&'a HashMap<usize, PathBuf>>,
    },
    /// A parity file: its block at each position (`None`: the file is missing, every
    /// block is absent).
    Parity {
        path: &'a Path,
        file: Option<&'a File>,
    },
}

/// What a source holds at a position.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Status {
    /// No block there (a free position of a disk, or past the end of a parity file).
    Absent,
    /// Block `block` of file `file`, `len` bytes of real data; the rest is zeros.
    /// For parity sources `file` and `block` are 0 and `len` is the block size.
    Present {
        file: usize,
        block: usize,
        len: usize,
    },
    /// The block exists but was not read: its file is skipped, could not be opened,
    /// or changed since the state was saved.
    Skipped { file: usize, block: usize },
    /// Reading failed.
    Unreadable { file: usize, block: usize },
}

/// One source's block at the stage's position.
#[derive(Copy, Clone)]
pub struct Block<'b> {
    /// `block size` bytes, zero-padded past the block's length, when `status` is
    /// `Present`; otherwise they mean nothing (a batch's buffers are used again and
    /// again), and a stage takes zeros or a rebuilt block in their place.
    pub bytes: &'b [u8],
    pub status: Status,
    /// The bytes are the page cache itself (`Reads::Map`), shared with whoever
    /// writes the file; otherwise they are the pipeline's private copy.
    pub in_place: bool,
}

/// What a run produced.
pub struct Run<R> {
    /// The stage's result for each input position.
    pub results: Vec<R>,
    /// Files that changed, vanished or could not be opened while read:
    /// (source index, file index).
    pub changed: Vec<(usize, usize)>,
    /// Of those, the files that could not be opened (for a reason other than being
    /// gone), each with a message among `errors`.
    pub unopened: Vec<(usize, usize)>,
    /// Read errors, as messages naming the disk and file.
    pub errors: Vec<String>,
    /// Bytes read from data sources.
    pub bytes: u64,
    /// Blocks read in place (`Reads::Map`), data and parity.
    pub mapped: u64,
    /// How many of the positions, from the first, the stage saw: all of them,
    /// unless a signal asked the run to stop (see [`crate::interrupt`]). The
    /// results past these are defaults and mean nothing.
    pub done: usize,
}

/// Why the pipeline stopped.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("writing parity file {} (level {level}): {source}{}", crate::name::shown_path(&path), full_hint(source))]
    ParityWrite {
        level: usize,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Raid(#[from] crate::raid::RaidError),
}

/// What to do about a full parity disk.
fn full_hint(e: &std::io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc::ENOSPC | libc::EDQUOT) => {
            "; the parity disk is full: a parity file grows as large as the fullest data \
             disk's files (rounded up to whole blocks per file), so give it a disk at least \
             that large, or free space on it; what was synced before is still protected \
             (run `lhparity sync` again then)"
        }
        _ => "",
    }
}

/// Parity files the stage's outputs are written to, level 1 first.
pub struct ParityOutput<'a> {
    pub files: &'a [File],
    pub paths: &'a [PathBuf],
}

/// The stage: called once per position with the position's index in the input list,
/// every source's block (in source order) and one output buffer per parity file to
/// write (empty when there are none).
pub type Stage<'s, R> =
    dyn Fn(usize, &[Block], &mut [&mut [u8]]) -> Result<R, PipelineError> + Sync + 's;

impl<R> Run<R> {
    /// The indexes (into the position list) of the positions that hold a block of a
    /// file that changed while it was read: nothing found there can be trusted.
    pub fn touched_by_changes(&self, disks: &[Disk], positions: &[u32]) -> Vec<usize> {
        let mut touched: Vec<usize> = self
            .changed
            .iter()
            .flat_map(|&(slot, file)| disks[slot].files[file].positions())
            .filter_map(|pos| positions.binary_search(&pos).ok())
            .collect();
        touched.sort_unstable();
        touched.dedup();
        touched
    }
}

/// Runs the pipeline over `positions` (sorted, unique). `progress` is called after
/// each batch with the data bytes it read.
pub fn run<R: Send + Default + Clone>(
    block_size: usize,
    positions: &[u32],
    sources: &[Source],
    output: Option<ParityOutput>,
    stage: &Stage<R>,
    progress: &(dyn Fn(u64) + Sync),
    reads: Reads,
) -> Result<Run<R>, PipelineError> {
    let batch_len = batch_len(
        block_size,
        rayon::current_num_threads(),
        reads,
        sources.len(),
    );
    let batches: Vec<&[u32]> = positions.chunks(batch_len).collect();
    let output_files: &[File] = output.as_ref().map_or(&[], |o| o.files);

    let stop = AtomicBool::new(false);
    let write_error: Mutex<Option<PipelineError>> = Mutex::new(None);
    let mut results = vec![R::default(); positions.len()];
    let mut changed = Vec::new();
    let mut unopened = Vec::new();
    let mut errors = Vec::new();
    let mut bytes = 0u64;
    let mut mapped = 0u64;
    let mut done = 0usize;

    std::thread::scope(|scope| -> Result<(), PipelineError> {
        let mut from_readers: Vec<Receiver<Batch>> = Vec::new();
        let mut to_readers: Vec<Sender<Batch>> = Vec::new();
        for source in sources {
            let (tx, rx) = bounded::<Batch>(READ_AHEAD);
            let (pool_tx, pool_rx) = bounded::<Batch>(READ_AHEAD + 2);
            for _ in 0..=READ_AHEAD {
                let _ = pool_tx.send(Batch::new(batch_len * block_size));
            }
            from_readers.push(rx);
            to_readers.push(pool_tx);
            let (batches, stop) = (&batches, &stop);
            scope.spawn(move || {
                let reader = Reader {
                    source,
                    block_size,
                    batch_len,
                    stop,
                    reads,
                    live: Arc::new(AtomicUsize::new(0)),
                    root: std::cell::OnceCell::new(),
                    elsewhere_roots: std::cell::OnceCell::new(),
                    links: std::cell::RefCell::new(Vec::new()),
                };
                reader.run(positions, batches, tx, pool_rx)
            });
        }

        let mut to_writers: Vec<Sender<(usize, AlignedBuf)>> = Vec::new();
        let mut writer_pools: Vec<Receiver<AlignedBuf>> = Vec::new();
        for (level, file) in output_files.iter().enumerate() {
            let (tx, rx) = bounded::<(usize, AlignedBuf)>(2);
            let (pool_tx, pool_rx) = bounded::<AlignedBuf>(4);
            for _ in 0..3 {
                let _ = pool_tx.send(AlignedBuf::new(batch_len * block_size));
            }
            to_writers.push(tx);
            writer_pools.push(pool_rx);
            let path = output.as_ref().map(|o| &o.paths[level]);
            let (batches, stop, write_error) = (&batches, &stop, &write_error);
            scope.spawn(move || {
                for (b, buf) in rx.iter() {
                    if let Err(source) = write_runs(file, batches[b], buf.bytes(), block_size) {
                        stop.store(true, Ordering::Relaxed);
                        if let Ok(mut slot) = write_error.lock() {
                            slot.get_or_insert(PipelineError::ParityWrite {
                                level: level + 1,
                                path: path.cloned().unwrap_or_default(),
                                source,
                            });
                        }
                    }
                    let _ = pool_tx.send(buf);
                }
            });
        }

        let mut outcome = Ok(());
        for (b, batch) in batches.iter().enumerate() {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            if crate::interrupt::requested().is_some() {
                stop.store(true, Ordering::Relaxed);
                break;
            }
            let inputs: Vec<Batch> = from_readers.iter().map_while(|rx| rx.recv().ok()).collect();
            let mut outs: Vec<AlignedBuf> =
                writer_pools.iter().map_while(|p| p.recv().ok()).collect();
            if inputs.len() != sources.len() || outs.len() != writer_pools.len() {
                break;
            }
            let base = b * batch_len;
            let batch_results = &mut results[base..base + batch.len()];
            if let Err(e) = run_stage(stage, block_size, base, &inputs, &mut outs, batch_results) {
                outcome = Err(e);
                stop.store(true, Ordering::Relaxed);
                break;
            }
            done = base + batch.len();
            let batch_bytes: u64 = inputs.iter().map(|i| i.bytes).sum();
            bytes += batch_bytes;
            mapped += inputs
                .iter()
                .map(|i| i.mapped.iter().filter(|m| m.is_some()).count() as u64)
                .sum::<u64>();
            for (s, mut input) in inputs.into_iter().enumerate() {
                input.check_mapped(&sources[s], batch, &mut errors);
                errors.append(&mut input.errors);
                changed.extend(input.changed.drain(..).map(|f| (s, f)));
                unopened.extend(input.unopened.drain(..).map(|f| (s, f)));
                let _ = to_readers[s].send(input);
            }
            for (level, buf) in outs.into_iter().enumerate() {
                if to_writers[level].send((b, buf)).is_err() {
                    stop.store(true, Ordering::Relaxed);
                }
            }
            progress(batch_bytes);
        }
        if outcome.is_err() {
            stop.store(true, Ordering::Relaxed);
        }
        // Closing the channels ends the writers; draining lets blocked readers finish.
        drop(to_writers);
        drop(to_readers);
        for rx in &from_readers {
            for _ in rx.iter() {}
        }
        outcome
    })?;

    if let Some(e) = write_error.lock().ok().and_then(|mut slot| slot.take()) {
        return Err(e);
    }
    changed.sort_unstable();
    changed.dedup();
    unopened.sort_unstable();
    unopened.dedup();
    Ok(Run {
        results,
        changed,
        unopened,
        errors,
        bytes,
        mapped,
        done,
    })
}

/// Positions per batch: `BATCH_BYTES` worth of blocks, but at least one per stage
/// thread, so that large blocks or many cores still keep every thread busy, as
/// long as that stays within `MAX_BATCH_BYTES` (memory is batch x sources x the
/// read-ahead).
fn batch_len(block_size: usize, threads: usize, reads: Reads, sources: usize) -> usize {
    let block_size = block_size.max(1);
    let most = (MAX_BATCH_BYTES / block_size).max(1);
    let bytes = match reads {
        Reads::Copy => BATCH_BYTES,
        Reads::Map => (MAPPED_BATCH_BUDGET / (sources.max(1) * (READ_AHEAD + 1)))
            .clamp(BATCH_BYTES, MAPPED_BATCH_BYTES),
    };
    (bytes / block_size).max(threads).min(most).max(1)
}

/// Runs the stage on every position of a batch, in parallel.
fn run_stage<R: Send>(
    stage: &Stage<R>,
    block_size: usize,
    base: usize,
    inputs: &[Batch],
    outs: &mut [AlignedBuf],
    results: &mut [R],
) -> Result<(), PipelineError> {
    let n = results.len();
    let mut out_blocks: Vec<Vec<&mut [u8]>> = (0..n).map(|_| Vec::new()).collect();
    for buf in outs.iter_mut() {
        for (j, chunk) in buf.bytes_mut().chunks_mut(block_size).take(n).enumerate() {
            out_blocks[j].push(chunk);
        }
    }
    results
        .par_iter_mut()
        .zip(out_blocks.par_iter_mut())
        .enumerate()
        .try_for_each(|(j, (result, parity))| {
            let blocks: Vec<Block> = inputs
                .iter()
                .map(|input| Block {
                    bytes: input.block(j, block_size),
                    status: input.status[j],
                    in_place: input.mapped[j].is_some(),
                })
                .collect();
            *result = stage(base + j, &blocks, parity)?;
            Ok(())
        })
}

/// One source's data for one batch.
struct Batch {
    /// `batch_len x block_size` bytes; block j of the batch at `j x block_size`,
    /// unless it is mapped.
    data: Vec<u8>,
    /// Per slot of `data`, how many leading bytes may be other than zero: a short
    /// block (a file's tail) then zeroes only what an earlier, longer block left,
    /// not the whole rest of its slot. Slots start zeroed (`UNTOUCHED`); the batch
    /// lives on across the run, its slots mostly unused while blocks are read in
    /// place.
    written: Vec<usize>,
    /// Per block of the batch, the window holding it in place of `data`, and the
    /// block's file offset.
    mapped: Vec<Option<(Arc<Window>, u64)>>,
    status: Vec<Status>,
    /// Files found changed or missing while reading.
    changed: Vec<usize>,
    /// Of those, files that could not be opened.
    unopened: Vec<usize>,
    /// Files read (partly) in place whose last block is in this batch: checked for
    /// changes once the stage has run.
    check_after: Vec<(usize, Arc<File>)>,
    errors: Vec<String>,
    bytes: u64,
}

impl Batch {
    fn new(len: usize) -> Batch {
        Batch {
            data: vec![0u8; len],
            written: Vec::new(),
            mapped: Vec::new(),
            status: Vec::new(),
            changed: Vec::new(),
            unopened: Vec::new(),
            check_after: Vec::new(),
            errors: Vec::new(),
            bytes: 0,
        }
    }

    /// Empties a returned batch for `len` positions; its windows are let go here,
    /// in the reader's thread.
    fn reset(&mut self, len: usize) {
        if self.written.len() < len {
            self.written.resize(len, UNTOUCHED);
        }
        self.mapped.clear();
        self.mapped.resize(len, None);
        self.status.clear();
        self.status.resize(len, Status::Absent);
        self.changed.clear();
        self.unopened.clear();
        self.check_after.clear();
        self.errors.clear();
        self.bytes = 0;
    }

    /// Block `j`'s bytes: in its window, or in `data`.
    fn block(&self, j: usize, block_size: usize) -> &[u8] {
        let copied = &self.data[j * block_size..(j + 1) * block_size];
        match &self.mapped[j] {
            // A window is only ever recorded for a block inside it.
            Some((window, at)) => window.bytes(*at, block_size).unwrap_or(copied),
            None => copied,
        }
    }

    /// After the stage: files read in place that changed meanwhile, and blocks whose
    /// pages failed while mapped (the stage saw zeros there), become changed files
    /// (or errors, for parity).
    fn check_mapped(&mut self, source: &Source, batch: &[u32], errors: &mut Vec<String>) {
        for (j, mapped) in self.mapped.iter().enumerate() {
            let Some((window, _)) = mapped else { continue };
            if !window.faulted() {
                continue;
            }
            match (source, self.status[j]) {
                (
                    Source::Data {
                        name, dir, files, ..
                    },
                    Status::Present { file, block, .. },
                ) => {
                    if unchanged(window.file(), &files[file]) {
                        // The file is what it was: a page could not be read back.
                        // The stage saw zeros there, which its hash check catches.
                        errors.push(format!(
                            "disk '{name}': reading {} block {block}: a cached page could not be read back; the disk may be failing (check it), and `lhparity fix -e` rebuilds the block",
                            crate::name::shown_path(&crate::name::join(dir, &files[file].path))
                        ));
                    } else {
                        self.changed.push(file);
                    }
                }
                (Source::Parity { path, .. }, _) => errors.push(format!(
                    "reading parity file {} at position {}: it shrank or could not be read while it was read; nothing else may write it during a scrub or fix, and if no one did, check the parity disk",
                    crate::name::shown_path(&path),
                    batch.get(j).copied().unwrap_or_default()
                )),
                _ => {}
            }
        }
        if let Source::Data { files, .. } = source {
            for (file, handle) in self.check_after.drain(..) {
                if !unchanged(&handle, &files[file]) {
                    self.changed.push(file);
                }
            }
        }
    }
}

/// The block of a data disk at one position.
#[derive(Copy, Clone, Debug)]
struct BlockRef {
    /// Index into the position list.
    slot: usize,
    file: usize,
    block: usize,
}

/// A reader thread's fixed inputs.
struct Reader<'a, 'r> {
    source: &'r Source<'a>,
    block_size: usize,
    batch_len: usize,
    stop: &'r AtomicBool,
    reads: Reads,
    /// This reader's windows alive (`Reads::Map`).
    live: Arc<AtomicUsize>,
    /// A data disk's root, from which its files are opened (`None`: it could not
    /// be opened; files are then opened by their paths, which fail as it did).
    root: std::cell::OnceCell<Option<Root>>,
    /// The roots of the disks of `elsewhere` (see [`Source::Data`]), opened once.
    elsewhere_roots: std::cell::OnceCell<Vec<Option<Root>>>,
    /// Symbolic links found in the way of files, each reported once.
    links: std::cell::RefCell<Vec<PathBuf>>,
}

/// The file a data reader has open (`None`: could not be opened, changed or skipped).
struct Current {
    file: usize,
    handle: Option<Arc<File>>,
    /// How it is read in place (`Reads::Map`).
    maps: Maps,
}

impl Current {
    fn closed(file: usize) -> Current {
        Current {
            file,
            handle: None,
            maps: Maps::default(),
        }
    }
}

/// A reader's mapping of the file it reads: the window of its last block, the
/// range found not all cached (read with `pread`), and how far the file was read
/// with `pread`. Read-ahead fills the cache ahead of a `pread`, so what the pass
/// reads up to `READ_AHEAD_REACH` past that point counts as brought in by the pass
/// and is let go after use; what lies further was cached before the pass came, and
/// stays (windows over such bytes start no read-ahead, so they do not push it
/// further).
#[derive(Default)]
struct Maps {
    window: Option<Arc<Window>>,
    cold: std::ops::Range<u64>,
    /// The end of the furthest range of the file found not cached (`None`: none yet).
    read_to: Option<u64>,
    used: bool,
}

/// A parity reader's mappings: its own handle of the file, and the file's length
/// (blocks past it are absent, never mapped).
struct ParityMaps {
    handle: Arc<File>,
    len: u64,
    maps: Maps,
}

impl Maps {
    /// The window holding the `block_size` bytes at `offset` of `file`. When the
    /// last one does not, maps a new one over the blocks wanted next (`wanted`:
    /// how many consecutive blocks from `offset`), at most `WINDOW_BYTES` and not
    /// past `end`. `None` when that range is not all cached, or the reader has
    /// `MAX_LIVE_WINDOWS` alive already.
    fn window_for(
        &mut self,
        file: &Arc<File>,
        offset: u64,
        block_size: usize,
        end: u64,
        wanted: impl FnOnce(usize) -> usize,
        live: &Arc<AtomicUsize>,
    ) -> Option<Arc<Window>> {
        let bs = block_size as u64;
        if let Some(w) = self
            .window
            .as_ref()
            .filter(|w| w.bytes(offset, block_size).is_some())
        {
            return Some(Arc::clone(w));
        }
        if self.cold.contains(&offset) {
            return None;
        }
        self.window = None;
        if live.load(Ordering::Relaxed) >= MAX_LIVE_WINDOWS {
            return None;
        }
        let most = (WINDOW_BYTES / block_size).max(1);
        let len = end
            .saturating_sub(offset)
            .min(wanted(most).clamp(1, most) as u64 * bs);
        if len < bs {
            return None;
        }
        match usize::try_from(len)
            .ok()
            .and_then(|l| Window::map_cached(file, offset, l, live, self.brought_in(offset)))
        {
            Some(w) => {
                let w = Arc::new(w);
                self.window = Some(Arc::clone(&w));
                self.used = true;
                Some(w)
            }
            None => {
                self.cold = offset..offset + len;
                self.read_from_disk(self.cold.end);
                None
            }
        }
    }

    /// Notes that the pass read the file up to `end` with `pread`, from the disk:
    /// read-ahead may fill the cache past it.
    fn read_from_disk(&mut self, end: u64) {
        self.read_to = Some(self.read_to.unwrap_or(0).max(end));
    }

    /// Whether the `len` bytes at `offset` of `file`, about to be read with
    /// `pread`, stay cached after: only if they were cached before the pass (and
    /// not by its own read-ahead). Otherwise the read counts as one from the disk.
    fn keeps_cached(&mut self, file: &File, offset: u64, len: usize) -> bool {
        let keep = !self.brought_in(offset) && crate::mapped::known_cached(file, offset, len);
        if !keep {
            self.read_from_disk(offset + len as u64);
        }
        keep
    }

    /// Whether the bytes at `offset` may have been brought into the cache by this
    /// pass's own reads: read-ahead of a range found not cached reaches that far.
    fn brought_in(&self, offset: u64) -> bool {
        self.read_to
            .is_some_and(|end| offset < end.saturating_add(READ_AHEAD_REACH))
    }
}

impl Reader<'_, '_> {
    fn run(&self, positions: &[u32], batches: &[&[u32]], tx: Sender<Batch>, pool: Receiver<Batch>) {
        let refs = match self.source {
            Source::Data { files, .. } => block_refs(files, positions),
            Source::Parity { .. } => Vec::new(),
        };
        let mut next = 0usize;
        let mut current: Option<Current> = None;
        let mut parity = self.parity_reading();
        // What a parity file read with `pread` only (`Reads::Copy`) read from the disk.
        let mut parity_copied = Maps::default();
        for (b, batch) in batches.iter().enumerate() {
            if self.stop.load(Ordering::Relaxed) {
                return;
            }
            let Ok(mut out) = pool.recv() else { return };
            out.reset(batch.len());
            let base = b * self.batch_len;
            match self.source {
                Source::Parity { path, file } => {
                    let ahead = &positions[base..];
                    let copied = &mut parity_copied;
                    self.read_parity(
                        path,
                        *file,
                        (&mut parity, copied),
                        ahead,
                        batch.len(),
                        &mut out,
                    )
                }
                Source::Data { .. } => {
                    while let Some(r) = refs.get(next).filter(|r| r.slot < base + batch.len()) {
                        let ahead = &refs[next..];
                        next += 1;
                        self.read_data(*r, r.slot - base, ahead, &mut current, &mut out);
                    }
                    if b + 1 == batches.len() {
                        self.finish(current.take(), &mut out);
                    }
                }
            }
            if tx.send(out).is_err() {
                return;
            }
        }
    }

    /// For a parity source read in place: a handle for its windows, its length and
    /// its mappings.
    fn parity_reading(&self) -> Option<ParityMaps> {
        let Source::Parity {
            file: Some(file), ..
        } = self.source
        else {
            return None;
        };
        if self.reads != Reads::Map {
            return None;
        }
        Some(ParityMaps {
            len: file.metadata().ok()?.len(),
            handle: Arc::new(file.try_clone().ok()?),
            maps: Maps::default(),
        })
    }

    /// Reads the parity blocks of a batch: the first `len` positions of `ahead`,
    /// which goes on with the positions after the batch.
    fn read_parity(
        &self,
        path: &Path,
        file: Option<&File>,
        (mapping, copied): (&mut Option<ParityMaps>, &mut Maps),
        ahead: &[u32],
        len: usize,
        out: &mut Batch,
    ) {
        let bs = self.block_size;
        for (j, &pos) in ahead.iter().take(len).enumerate() {
            let Some(file) = file else {
                slot(&mut out.data, &mut out.written, j, bs, 0);
                continue;
            };
            let offset = u64::from(pos) * bs as u64;
            if let Some(ParityMaps {
                handle,
                len: end,
                maps,
            }) = mapping.as_mut()
            {
                let wanted =
                    |most: usize| consecutive(ahead[j..].iter().copied(), most, |p| u64::from(*p));
                if let Some(w) = maps.window_for(handle, offset, bs, *end, wanted, &self.live) {
                    out.mapped[j] = Some((w, offset));
                    out.status[j] = Status::Present {
                        file: 0,
                        block: 0,
                        len: bs,
                    };
                    continue;
                }
            }
            let frontier = mapping.as_mut().map_or(&mut *copied, |m| &mut m.maps);
            let keep = frontier.keeps_cached(file, offset, bs);
            let buf = slot(&mut out.data, &mut out.written, j, bs, bs);
            match file.read_exact_at(buf, offset) {
                Ok(()) => {
                    if !keep {
                        drop_cached(file, offset, bs);
                    }
                    out.status[j] = Status::Present {
                        file: 0,
                        block: 0,
                        len: bs,
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                    slot(&mut out.data, &mut out.written, j, bs, 0);
                }
                Err(e) => {
                    slot(&mut out.data, &mut out.written, j, bs, 0);
                    out.status[j] = Status::Unreadable { file: 0, block: 0 };
                    out.errors.push(format!(
                        "reading parity file {} at position {pos}: {e}",
                        crate::name::shown_path(&path)
                    ));
                }
            }
        }
    }

    /// Reads block `r` into slot `j` of the batch; `ahead` starts with `r` and goes
    /// on with the blocks this reader reads next.
    fn read_data(
        &self,
        r: BlockRef,
        j: usize,
        ahead: &[BlockRef],
        current: &mut Option<Current>,
        out: &mut Batch,
    ) {
        let Source::Data {
            name,
            dir,
            files,
            skip,
            ..
        } = self.source
        else {
            return;
        };
        let bs = self.block_size;
        if skip.is_some_and(|s| s.get(r.file).copied().unwrap_or(false)) {
            // Not even zeroed: a skipped file's blocks are lost to the caller.
            out.status[j] = Status::Skipped {
                file: r.file,
                block: r.block,
            };
            return;
        }
        if current.as_ref().map(|c| c.file) != Some(r.file) {
            self.finish(current.take(), out);
            *current = Some(self.open(r.file, out));
        }
        let entry = &files[r.file];
        let offset = r.block as u64 * bs as u64;
        let len = entry.size.saturating_sub(offset).min(bs as u64) as usize;
        let Some(Current {
            handle: Some(handle),
            maps,
            ..
        }) = current.as_mut()
        else {
            slot(&mut out.data, &mut out.written, j, bs, 0);
            out.status[j] = Status::Skipped {
                file: r.file,
                block: r.block,
            };
            return;
        };
        if self.reads == Reads::Map && len == bs {
            let whole_blocks = entry.size - entry.size % bs as u64;
            let wanted = |most: usize| {
                let same_file = ahead.iter().take_while(|a| a.file == r.file);
                consecutive(same_file, most, |a| a.block as u64)
            };
            if let Some(w) = maps.window_for(handle, offset, bs, whole_blocks, wanted, &self.live) {
                out.mapped[j] = Some((w, offset));
                out.status[j] = Status::Present {
                    file: r.file,
                    block: r.block,
                    len,
                };
                out.bytes += len as u64;
                return;
            }
        }
        // What was cached when the pass came stays cached (a block read here after
        // no window could be mapped for it, or by a pass that copies); what the
        // pass read from the disk, and what its read-ahead may have brought in
        // after it, is let go.
        let keep = maps.keeps_cached(handle, offset, len);
        let buf = slot(&mut out.data, &mut out.written, j, bs, len);
        match handle.read_exact_at(&mut buf[..len], offset) {
            Ok(()) => {
                if !keep {
                    drop_cached(handle, offset, len);
                }
                out.status[j] = Status::Present {
                    file: r.file,
                    block: r.block,
                    len,
                };
                out.bytes += len as u64;
            }
            Err(e) => {
                slot(&mut out.data, &mut out.written, j, bs, 0);
                if e.kind() == std::io::ErrorKind::UnexpectedEof {
                    // Shorter than the state says: it changed.
                    out.changed.push(r.file);
                    out.status[j] = Status::Skipped {
                        file: r.file,
                        block: r.block,
                    };
                } else {
                    out.errors.push(format!(
                        "disk '{name}': reading {} at byte {offset}: {e}",
                        crate::name::shown_path(&crate::name::join(dir, &entry.path))
                    ));
                    out.status[j] = Status::Unreadable {
                        file: r.file,
                        block: r.block,
                    };
                }
            }
        }
    }

    /// Opens a file and checks it is still what the state says.
    fn open(&self, file: usize, out: &mut Batch) -> Current {
        let Source::Data {
            name,
            dir,
            files,
            read_changed,
            elsewhere,
            imported,
            ..
        } = self.source
        else {
            return Current::closed(file);
        };
        let entry = &files[file];
        let path = crate::name::join(dir, &entry.path);
        let opened = beneath::open_recorded(
            self.root.get_or_init(|| Root::open(dir).ok()).as_ref(),
            dir,
            &entry.path,
        );
        match opened {
            Ok(h) if unchanged(&h, entry) => Current {
                file,
                handle: Some(Arc::new(h)),
                maps: Maps::default(),
            },
            Ok(h) if *read_changed => {
                out.changed.push(file);
                Current {
                    file,
                    handle: Some(Arc::new(h)),
                    maps: Maps::default(),
                }
            }
            Ok(_) => {
                out.changed.push(file);
                Current::closed(file)
            }
            Err(e) if beneath::is_link(&e) => {
                // Named once per link, whatever number of files is below it.
                let link = beneath::first_link(dir, Path::new(&*crate::name::to_os(&entry.path)))
                    .unwrap_or_else(|| path.clone());
                let mut links = self.links.borrow_mut();
                if !links.contains(&link) {
                    out.errors.push(if link == path {
                        format!(
                            "disk '{name}': {} is a symbolic link where the last sync saw a file; it is not followed: put the file back (`lhparity fix -m` once the link is gone), or run `lhparity sync` if the link is meant",
                            crate::name::shown_path(&path)
                        )
                    } else {
                        format!(
                            "disk '{name}': {} is a symbolic link where the last sync saw a folder; it is not followed, and the files below it were not read: put the folder back, or run `lhparity sync` if the link is meant",
                            crate::name::shown_path(&link)
                        )
                    });
                    links.push(link);
                }
                out.unopened.push(file);
                out.changed.push(file);
                Current::closed(file)
            }
            Err(e) => {
                if e.kind() != std::io::ErrorKind::NotFound {
                    out.errors.push(format!(
                        "disk '{name}': opening {}: {e}",
                        crate::name::shown_path(&path)
                    ));
                    out.unopened.push(file);
                }
                out.changed.push(file);
                let moved = (*read_changed && e.kind() == std::io::ErrorKind::NotFound)
                    .then(|| {
                        imported
                            .and_then(|i| i.get(&file))
                            .and_then(|path| crate::import::open(path).ok())
                            .filter(|h| {
                                h.metadata()
                                    .is_ok_and(|m| m.is_file() && same_stamp(&m, entry))
                            })
                            .or_else(|| {
                                let roots = self.elsewhere_roots.get_or_init(|| {
                                    elsewhere.iter().map(|d| Root::open(d).ok()).collect()
                                });
                                moved_copy(elsewhere, roots, dir, entry)
                            })
                    })
                    .flatten();
                match moved {
                    Some(h) => Current {
                        file,
                        handle: Some(Arc::new(h)),
                        maps: Maps::default(),
                    },
                    None => Current::closed(file),
                }
            }
        }
    }

    /// After a file's last block: reports it if it changed while it was read; for a
    /// file read in place, once the stage has seen this batch.
    fn finish(&self, current: Option<Current>, out: &mut Batch) {
        let Source::Data { files, .. } = self.source else {
            return;
        };
        if let Some(Current {
            file,
            handle: Some(h),
            maps,
        }) = current
        {
            if maps.used {
                out.check_after.push((file, h));
            } else if !unchanged(&h, &files[file]) {
                out.changed.push(file);
            }
        }
    }
}

/// The file `entry` of the disk at `dir`, missing there, found at its path on one of
/// the disks in `elsewhere` (whose `roots` are those opened) with its size and mtime:
/// moved there since the sync.
pub(crate) fn moved_copy(
    elsewhere: &[&Path],
    roots: &[Option<Root>],
    dir: &Path,
    entry: &FileEntry,
) -> Option<File> {
    elsewhere
        .iter()
        .zip(roots)
        .filter(|(other, _)| **other != dir)
        .filter_map(|(other, root)| beneath::open_recorded(root.as_ref(), other, &entry.path).ok())
        .find(|h| {
            h.metadata()
                .is_ok_and(|m| m.is_file() && same_stamp(&m, entry))
        })
}

/// Raises the process's soft limit of open files to its hard limit. A pass keeps
/// files open per disk while their blocks are in flight (up to `MAX_LIVE_WINDOWS`
/// per reader when read in place), and the usual soft limit of 1024 is low for a
/// few dozen disks. Best effort: the limit stays as it was if this fails.
pub fn raise_open_file_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read and write only `limit`.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// Lets the page cache drop a range just read, as SnapRAID does: a pass over whole
/// disks would otherwise push everything else out of the cache, and the pages freed
/// here are the ones the run's own writes (a rebuilt disk) take next, instead of
/// memory the system has not touched for a while. Advisory; errors are ignored.
///
/// The kernel drops only the folios that lie wholly inside the range, and files are
/// cached in folios of up to 2 MiB, most of which straddle a block's edges: the range
/// is therefore widened back by `FOLIO_SLACK`, so that the folio cut by the previous
/// block's end goes with this one. Without that, a pass in 256 KiB blocks left about
/// 80% of what it read in the cache on Linux 6.18.
pub(crate) fn drop_cached(file: &File, offset: u64, len: usize) {
    let start = offset.saturating_sub(FOLIO_SLACK);
    let len = len as u64 + (offset - start);
    let (Ok(offset), Ok(len)) = (libc::off_t::try_from(start), libc::off_t::try_from(len)) else {
        return;
    };
    // SAFETY: an advisory call on an open descriptor; it reads no memory of ours.
    unsafe { libc::posix_fadvise(file.as_raw_fd(), offset, len, libc::POSIX_FADV_DONTNEED) };
}

/// The largest folio the page cache uses for file data with 4 KiB pages (a PMD).
const FOLIO_SLACK: u64 = 2 << 20;

/// For one disk, the blocks at the listed positions, in position order.
fn block_refs(files: &[FileEntry], positions: &[u32]) -> Vec<BlockRef> {
    let mut refs = Vec::new();
    for (file, f) in files.iter().enumerate() {
        for (block, pos) in f.positions().enumerate() {
            if let Ok(slot) = positions.binary_search(&pos) {
                refs.push(BlockRef { slot, file, block });
            }
        }
    }
    refs.sort_unstable_by_key(|r| r.slot);
    refs
}

/// How many of the first `most` items run on consecutively (`key` one more each
/// time), counting the first.
fn consecutive<T>(
    items: impl IntoIterator<Item = T>,
    most: usize,
    key: impl Fn(&T) -> u64,
) -> usize {
    let mut items = items.into_iter();
    let Some(first) = items.next() else { return 0 };
    let start = key(&first);
    1 + items
        .take(most.saturating_sub(1))
        .enumerate()
        .take_while(|(k, item)| key(item) == start + *k as u64 + 1)
        .count()
}

/// Whether an open file still has the size, inode and mtime the state recorded.
pub fn unchanged(handle: &File, entry: &FileEntry) -> bool {
    handle
        .metadata()
        .is_ok_and(|m| m.ino() == entry.inode && same_stamp(&m, entry))
}

/// Whether `meta` has the size and mtime the state recorded for `entry`.
pub fn same_stamp(meta: &std::fs::Metadata, entry: &FileEntry) -> bool {
    meta.len() == entry.size
        && crate::state::model::mtime_ns(meta.mtime(), meta.mtime_nsec()) == entry.mtime_ns
}

/// Slot `j` of a batch's `data`, made ready for a block of `len` bytes: every byte
/// from `len` on is zero on return (only those an earlier block of the slot left
/// are cleared), and the slot counts as holding `len` bytes from now on. `len` 0
/// zeroes the slot.
fn slot<'d>(
    data: &'d mut [u8],
    written: &mut [usize],
    j: usize,
    bs: usize,
    len: usize,
) -> &'d mut [u8] {
    let buf = &mut data[j * bs..(j + 1) * bs];
    let before = std::mem::replace(&mut written[j], len);
    if before == UNTOUCHED {
        // The stage reads the slot past a short block; without this the first
        // longer block read into it later would replace shared zero pages, one
        // interruption of every core per page.
        crate::mapped::populate_write(buf);
    } else if before > len {
        buf[len..before].fill(0);
    }
    buf
}

/// `Batch::written` of a slot never used: all zero, and without pages of its own.
const UNTOUCHED: usize = usize::MAX;

/// A buffer whose bytes start on a 4 KiB boundary, as direct I/O needs.
struct AlignedBuf {
    raw: Vec<u8>,
    start: usize,
    len: usize,
}

/// Alignment of parity buffers: the largest logical block size of common disks.
const DIRECT_ALIGN: usize = 4096;

impl AlignedBuf {
    fn new(len: usize) -> AlignedBuf {
        let raw = vec![0u8; len + DIRECT_ALIGN];
        let start = raw.as_ptr().align_offset(DIRECT_ALIGN).min(DIRECT_ALIGN);
        AlignedBuf { raw, start, len }
    }

    fn bytes(&self) -> &[u8] {
        &self.raw[self.start..self.start + self.len]
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.raw[self.start..self.start + self.len]
    }
}

/// Writes the parity blocks of a batch, one `pwrite` per run of consecutive positions.
/// A file opened for direct I/O on a filesystem that refuses it for this write
/// (`EINVAL`) is switched to buffered I/O and the write retried.
fn write_runs(file: &File, batch: &[u32], buf: &[u8], block_size: usize) -> std::io::Result<()> {
    let mut j = 0;
    while j < batch.len() {
        let mut k = j + 1;
        while k < batch.len() && batch[k] == batch[k - 1] + 1 {
            k += 1;
        }
        let offset = u64::from(batch[j]) * block_size as u64;
        let bytes = &buf[j * block_size..k * block_size];
        match file.write_all_at(bytes, offset) {
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) && clear_direct(file) => {
                file.write_all_at(bytes, offset)?
            }
            other => other?,
        }
        j = k;
    }
    Ok(())
}

/// Turns off `O_DIRECT` on an open file; whether it was on.
fn clear_direct(file: &File) -> bool {
    use std::os::fd::AsRawFd;
    let fd = file.as_raw_fd();
    // SAFETY: fcntl on a descriptor owned by `file`, which outlives the calls.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 || flags & libc::O_DIRECT == 0 {
        return false;
    }
    // SAFETY: as above.
    unsafe { libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_DIRECT) == 0 }
}

#[cfg(test)]
mod tests {
    use super::{batch_len, Reads};

    #[test]
    fn the_open_file_limit_is_raised_to_the_hard_limit() {
        super::raise_open_file_limit();
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes only `limit`.
        assert_eq!(
            unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) },
            0
        );
        assert_eq!(limit.rlim_cur, limit.rlim_max);
    }

    #[test]
    fn batches_hold_a_mebibyte_of_copied_blocks_or_four_of_mapped_ones() {
        assert_eq!(batch_len(256 << 10, 2, Reads::Copy, 6), 4);
        assert_eq!(batch_len(64 << 10, 2, Reads::Copy, 6), 16);
        assert_eq!(batch_len(256 << 10, 2, Reads::Map, 6), 16);
    }

    #[test]
    fn mapped_batches_shrink_for_many_disks() {
        assert_eq!(batch_len(256 << 10, 2, Reads::Map, 12), 8);
        assert_eq!(batch_len(256 << 10, 2, Reads::Map, 30), 4);
        assert_eq!(batch_len(256 << 10, 2, Reads::Map, 0), 16);
    }

    #[test]
    fn batches_keep_every_thread_busy() {
        assert_eq!(batch_len(256 << 10, 8, Reads::Copy, 6), 8);
        assert_eq!(batch_len(16 << 20, 2, Reads::Copy, 6), 2);
        assert_eq!(batch_len(16 << 20, 0, Reads::Map, 6), 1);
    }

    #[test]
    fn batches_stay_bounded_with_large_blocks_and_many_cores() {
        assert_eq!(batch_len(16 << 20, 64, Reads::Copy, 6), 2);
        assert_eq!(batch_len(64 << 20, 64, Reads::Map, 6), 1);
        assert_eq!(batch_len(256 << 10, 256, Reads::Copy, 6), 128);
    }
}

#[cfg(test)]
mod reads {
    //! The two ways of reading give the stage the same bytes, cached or not, and a
    //! file cut short while the stage reads it in place is reported as changed.

    use super::*;
    use crate::state::model::Extent;
    use std::os::unix::fs::MetadataExt;
    use std::sync::atomic::AtomicUsize;

    const BS: usize = 64 << 10;

    fn entry(dir: &Path, name: &str, bytes: &[u8], first: u32) -> FileEntry {
        let path = dir.join(name);
        std::fs::write(&path, bytes).expect("write");
        let meta = std::fs::metadata(&path).expect("stat");
        let blocks = bytes.len().div_ceil(BS) as u32;
        FileEntry {
            path: name.to_string(),
            size: meta.len(),
            mtime_ns: crate::state::model::mtime_ns(meta.mtime(), meta.mtime_nsec()),
            inode: meta.ino(),
            extents: vec![Extent {
                pos: first,
                len: blocks,
            }],
            hashes: vec![Default::default(); blocks as usize],
            ..Default::default()
        }
    }

    fn bytes(len: usize, seed: u32) -> Vec<u8> {
        (0..len as u32)
            .map(|i| (i.wrapping_mul(seed) >> 7) as u8)
            .collect()
    }

    /// Evicts a file from the page cache (its data is written back first).
    fn evict(path: &Path) {
        let f = File::open(path).expect("open");
        f.sync_all().expect("sync");
        drop_cached(&f, 0, f.metadata().expect("stat").len() as usize);
    }

    /// Reads a file into the page cache, written back (clean pages are the ones a
    /// pass lets go of).
    fn warm(path: &Path) {
        File::open(path).and_then(|f| f.sync_all()).expect("sync");
        std::fs::read(path).expect("read");
    }

    /// Whether every page of a file's range is cached (asked with a window, which
    /// leaves the cache as it was).
    fn cached(path: &Path, offset: u64, len: usize) -> bool {
        let f = Arc::new(File::open(path).expect("open"));
        let live = Arc::new(AtomicUsize::new(0));
        crate::mapped::Window::map_cached(&f, offset, len, &live, false).is_some()
    }

    /// How many pages of a file are in the page cache (`mincore` over a mapping,
    /// which faults nothing in).
    fn cached_pages(path: &Path) -> usize {
        let len = std::fs::metadata(path).expect("stat").len() as usize;
        if len == 0 {
            return 0;
        }
        cached_pages_in(path, 0, len)
    }

    /// Runs `f` in a pool of two threads, so that mapped batches hold 64 positions
    /// of 64 KiB whatever the machine.
    fn two_threads<T: Send>(f: impl FnOnce() -> T + Send) -> T {
        rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .expect("pool")
            .install(f)
    }

    /// Runs the pipeline over one disk and one parity file and returns what the
    /// stage saw per position: each source's status and bytes.
    fn seen(
        dir: &Path,
        files: &[FileEntry],
        parity: &File,
        positions: &[u32],
        reads: Reads,
    ) -> Run<Vec<(Status, Vec<u8>)>> {
        let parity_path = dir.join("parity");
        let sources = [
            Source::Data {
                name: "d1",
                dir,
                files,
                skip: None,
                read_changed: false,
                elsewhere: &[],
                imported: None,
            },
            Source::Parity {
                path: &parity_path,
                file: Some(parity),
            },
        ];
        let stage = |_j: usize, blocks: &[Block], _: &mut [&mut [u8]]| {
            Ok(blocks
                .iter()
                .map(|b| (b.status, b.bytes.to_vec()))
                .collect())
        };
        run(BS, positions, &sources, None, &stage, &|_| {}, reads).expect("run")
    }

    #[test]
    fn mapped_and_copied_reads_show_the_same_blocks_cached_or_not() {
        let dir = crate::mapped::tests::scratch_dir();
        // A file of whole blocks, one with a short last block, and a one-block file.
        let files = vec![
            entry(dir.path(), "a", &bytes(40 * BS, 3), 0),
            entry(dir.path(), "b", &bytes(7 * BS + 1234, 5), 40),
            entry(dir.path(), "c", &bytes(100, 7), 50),
        ];
        std::fs::write(dir.path().join("parity"), bytes(45 * BS, 11)).expect("parity");
        let parity = File::open(dir.path().join("parity")).expect("open parity");
        let positions: Vec<u32> = (0..52).collect();

        let copied = seen(dir.path(), &files, &parity, &positions, Reads::Copy);
        assert!(copied.changed.is_empty() && copied.errors.is_empty());
        assert_eq!(copied.bytes, (47 * BS + 1234 + 100) as u64);
        assert!(matches!(
            copied.results[47][0].0,
            Status::Present {
                file: 1,
                block: 7,
                len: 1234
            }
        ));
        assert_eq!(copied.results[48][0].0, Status::Absent);
        assert_eq!(
            copied.results[46][1].0,
            Status::Absent,
            "past the parity file"
        );

        for cold in [false, true] {
            for name in ["a", "b", "c", "parity"] {
                if cold {
                    evict(&dir.path().join(name));
                } else {
                    warm(&dir.path().join(name));
                }
            }
            let mapped = seen(dir.path(), &files, &parity, &positions, Reads::Map);
            if cold {
                assert_eq!(mapped.mapped, 0, "nothing cached, nothing mapped");
            } else {
                // Every whole block: a's 40, b's 7 and the parity file's 45.
                assert_eq!(mapped.mapped, 92);
            }
            assert!(
                mapped.changed.is_empty() && mapped.errors.is_empty(),
                "cold: {cold}"
            );
            assert_eq!(mapped.bytes, copied.bytes);
            assert!(mapped.results == copied.results, "cold: {cold}");
            // What was cached before the pass stays cached; what the pass read
            // from the disk is let go, all of it.
            for name in ["a", "b", "c", "parity"] {
                let path = dir.path().join(name);
                let len = std::fs::metadata(&path).expect("stat").len() as usize;
                assert_eq!(cached(&path, 0, len), !cold, "{name}, cold: {cold}");
                if cold {
                    assert_eq!(cached_pages(&path), 0, "{name} left in the cache");
                }
            }
        }
        // A copying pass (sync's) lets go of everything it read too.
        for name in ["a", "b", "c", "parity"] {
            evict(&dir.path().join(name));
        }
        seen(dir.path(), &files, &parity, &positions, Reads::Copy);
        for name in ["a", "b", "c", "parity"] {
            assert_eq!(
                cached_pages(&dir.path().join(name)),
                0,
                "{name} left in the cache"
            );
        }
    }

    #[test]
    fn a_pass_lets_go_of_everything_it_read_whatever_the_folio_size() {
        // Read-ahead over a 16 MiB file makes folios larger than a block, which a
        // drop of just the block's range leaves in the cache.
        let dir = crate::mapped::tests::scratch_dir();
        let files = vec![entry(dir.path(), "big", &bytes(256 * BS + 100, 3), 0)];
        std::fs::write(dir.path().join("parity"), bytes(257 * BS, 11)).expect("parity");
        let parity = File::open(dir.path().join("parity")).expect("open parity");
        let positions: Vec<u32> = (0..257).collect();
        for reads in [Reads::Copy, Reads::Map] {
            for name in ["big", "parity"] {
                evict(&dir.path().join(name));
            }
            let run = seen(dir.path(), &files, &parity, &positions, reads);
            assert!(run.changed.is_empty() && run.errors.is_empty());
            for name in ["big", "parity"] {
                assert_eq!(
                    cached_pages(&dir.path().join(name)),
                    0,
                    "{name} left in the cache by {reads:?}"
                );
            }
        }
    }

    /// How many pages of `len` bytes of a file from `offset` are in the page cache.
    fn cached_pages_in(path: &Path, offset: usize, len: usize) -> usize {
        let f = File::open(path).expect("open");
        let page = 4096;
        let mut vec = vec![0u8; len.div_ceil(page)];
        // SAFETY: a read-only shared mapping of the range, unmapped below; mincore
        // writes one byte per page into `vec`, which has room for them.
        unsafe {
            let p = libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                f.as_raw_fd(),
                offset as libc::off_t,
            );
            assert_ne!(p, libc::MAP_FAILED);
            assert_eq!(libc::mincore(p, len, vec.as_mut_ptr()), 0);
            libc::munmap(p, len);
        }
        vec.iter().filter(|&&b| b & 1 != 0).count()
    }

    #[test]
    fn what_was_cached_past_the_read_ahead_of_a_cold_range_stays_cached() {
        // A file whose first 8 MiB are not cached and whose rest is: a partly
        // watched film, or pages the kernel reclaimed from a cached file.
        let dir = crate::mapped::tests::scratch_dir();
        let mib = 1 << 20;
        let size = 96 * mib;
        let path = dir.path().join("big");
        let files = vec![entry(dir.path(), "big", &bytes(size, 3), 0)];
        std::fs::write(dir.path().join("parity"), bytes(BS, 11)).expect("parity");
        let parity = File::open(dir.path().join("parity")).expect("open parity");
        let positions: Vec<u32> = (0..(size / BS) as u32).collect();
        evict(&path);
        let f = File::open(&path).expect("open");
        let mut rest = vec![0u8; size - 8 * mib];
        f.read_exact_at(&mut rest, 8 * mib as u64).expect("read");
        assert_eq!(cached_pages_in(&path, 0, 8 * mib), 0);
        assert!(cached(&path, 8 * mib as u64, size - 8 * mib));

        let run = two_threads(|| seen(dir.path(), &files, &parity, &positions, Reads::Map));
        assert!(run.changed.is_empty() && run.errors.is_empty());
        assert_eq!(run.bytes, size as u64);
        // The first window (16 MiB) was read with `pread`; what read-ahead may have
        // brought in after it (up to READ_AHEAD_REACH) is let go, and the rest,
        // cached before the pass, stays.
        let kept = 16 * mib + READ_AHEAD_REACH as usize;
        assert!(
            cached(&path, kept as u64, size - kept),
            "{} of {} pages past {} MiB still cached",
            cached_pages_in(&path, kept, size - kept),
            (size - kept) / 4096,
            kept / mib
        );
        assert_eq!(
            cached_pages_in(&path, 0, 16 * mib),
            0,
            "what the pass read stays"
        );

        // Not cached at all: read-ahead never runs far enough ahead of the pass
        // for a window to look cached before it, and nothing stays.
        evict(&path);
        let run = two_threads(|| seen(dir.path(), &files, &parity, &positions, Reads::Map));
        assert!(run.changed.is_empty() && run.errors.is_empty());
        assert_eq!(run.bytes, size as u64);
        assert_eq!(cached_pages(&path), 0, "the pass left what it read cached");

        // A pass that copies (sync's, and the parity order probe before every
        // pass) leaves what was cached cached too, data and parity.
        let parity_path = dir.path().join("parity");
        for (reads, name) in [(Reads::Copy, "copied"), (Reads::Map, "mapped")] {
            warm(&path);
            warm(&parity_path);
            let run = two_threads(|| seen(dir.path(), &files, &parity, &positions, reads));
            assert!(run.changed.is_empty() && run.errors.is_empty());
            assert!(cached(&path, 0, size), "{name}: the data file");
            assert!(cached(&parity_path, 0, BS), "{name}: the parity file");
        }
        // One block read alone, as the probe reads it, keeps its pages.
        warm(&path);
        seen(dir.path(), &files, &parity, &[0], Reads::Copy);
        assert!(cached(&path, 0, size));
    }

    #[test]
    fn a_file_cut_short_while_read_in_place_is_reported_changed() {
        let dir = crate::mapped::tests::scratch_dir();
        let files = vec![
            entry(dir.path(), "a", &bytes(192 * BS, 3), 0),
            entry(dir.path(), "b", &bytes(8 * BS, 5), 192),
        ];
        std::fs::write(dir.path().join("parity"), bytes(200 * BS, 11)).expect("parity");
        let parity = File::open(dir.path().join("parity")).expect("open parity");
        let positions: Vec<u32> = (0..200).collect();
        let cut = AtomicUsize::new(0);
        let a = dir.path().join("a");
        let sources = [Source::Data {
            name: "d1",
            dir: dir.path(),
            files: &files,
            skip: None,
            read_changed: false,
            elsewhere: &[],
            imported: None,
        }];
        // The first position the stage sees cuts file a to one block: its later
        // blocks are still mapped, and reading them faults.
        let stage = |_j: usize, blocks: &[Block], _: &mut [&mut [u8]]| {
            if cut.fetch_add(1, Ordering::SeqCst) == 0 {
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .open(&a)
                    .expect("open");
                f.set_len(BS as u64).expect("truncate");
            }
            let sum = blocks[0].bytes.iter().map(|&b| u64::from(b)).sum::<u64>();
            Ok((Some(blocks[0].status), sum))
        };
        let run = two_threads(|| run(BS, &positions, &sources, None, &stage, &|_| {}, Reads::Map))
            .expect("run");
        assert_eq!(run.changed, vec![(0, 0)], "a changed, b did not");
        assert!(run.errors.is_empty(), "{:?}", run.errors);
        // Batches after the first were mapped before the cut and read after it: the
        // pages past the new end read as zeros instead of killing the process.
        for (pos, (status, sum)) in run.results[64..192].iter().enumerate() {
            assert!(
                matches!(status, Some(Status::Present { file: 0, .. })),
                "position {}",
                pos + 64
            );
            assert_eq!(*sum, 0, "position {}", pos + 64);
        }
        let expected_b: u64 = bytes(8 * BS, 5).iter().map(|&b| u64::from(b)).sum();
        let seen_b: u64 = run.results[192..].iter().map(|r| r.1).sum();
        assert_eq!(seen_b, expected_b, "b read in full");
        drop(parity);
    }

    #[test]
    fn sparse_positions_map_only_the_blocks_they_want() {
        let dir = crate::mapped::tests::scratch_dir();
        let files = vec![entry(dir.path(), "a", &bytes(40 * BS, 3), 0)];
        std::fs::write(dir.path().join("parity"), bytes(40 * BS, 11)).expect("parity");
        let parity = File::open(dir.path().join("parity")).expect("open parity");
        let a = dir.path().join("a");
        let positions = [0u32, 1, 10, 20];
        let copied = seen(dir.path(), &files, &parity, &positions, Reads::Copy);
        warm(&a);
        warm(&dir.path().join("parity"));
        let mapped = seen(dir.path(), &files, &parity, &positions, Reads::Map);
        assert!(mapped.results == copied.results);
        assert_eq!(mapped.mapped, 8, "four blocks of a, four of the parity");
        // The blocks read in place stay cached, as do the others.
        for block in [0u64, 1, 2, 5, 9, 10, 11, 19, 20, 21, 39] {
            assert!(
                cached(&a, block * BS as u64, BS),
                "block {block} was evicted"
            );
        }
    }

    #[test]
    fn a_slot_is_zero_past_its_block_whatever_it_held_before() {
        const SLOT: usize = 256;
        let mut data = vec![0u8; 2 * SLOT];
        let mut written = vec![UNTOUCHED; 2];
        // A whole block, then a short one in the same slot: the old bytes past the
        // short block are gone, the other slot is untouched.
        slot(&mut data, &mut written, 1, SLOT, SLOT).fill(0xff);
        slot(&mut data, &mut written, 1, SLOT, 10)[..10].fill(0xaa);
        assert_eq!(written, vec![UNTOUCHED, 10]);
        assert!(data[SLOT..SLOT + 10].iter().all(|&b| b == 0xaa));
        assert!(data[SLOT + 10..].iter().all(|&b| b == 0));
        assert!(data[..SLOT].iter().all(|&b| b == 0));
        // A longer block after a short one: nothing to clear, all of it is written.
        let buf = slot(&mut data, &mut written, 1, SLOT, 100);
        assert_eq!(buf.len(), SLOT);
        buf[..100].fill(0x55);
        assert!(data[SLOT + 100..].iter().all(|&b| b == 0));
        // Length 0: the whole slot is zero.
        slot(&mut data, &mut written, 1, SLOT, 0);
        assert_eq!(written[1], 0);
        assert!(data.iter().all(|&b| b == 0));
    }

    #[test]
    fn runs_of_consecutive_keys_are_counted_up_to_a_limit() {
        let key = |x: &u64| *x;
        assert_eq!(consecutive([5u64, 6, 7, 9], 10, key), 3);
        assert_eq!(consecutive([5u64, 6, 7, 8], 2, key), 2);
        assert_eq!(consecutive([5u64], 10, key), 1);
        assert_eq!(consecutive(Vec::<u64>::new(), 10, key), 0);
        assert_eq!(consecutive([5u64, 5], 10, key), 1);
    }

    #[test]
    fn a_page_lost_under_an_unchanged_file_is_a_read_error_not_a_change() {
        let dir = crate::mapped::tests::scratch_dir();
        let files = vec![entry(dir.path(), "a", &bytes(4 * BS, 3), 0)];
        let a = dir.path().join("a");
        warm(&a);
        let handle = Arc::new(File::open(&a).expect("open"));
        let live = Arc::new(AtomicUsize::new(0));
        let window = Window::map_cached(&handle, 0, 4 * BS, &live, false).expect("cached");
        let window = Arc::new(window);
        // Cut and put back with its mtime: the mapped pages are gone, and the
        // file looks as the state says. Reading there faults.
        let mtime = std::fs::metadata(&a)
            .and_then(|m| m.modified())
            .expect("mtime");
        let writer = std::fs::OpenOptions::new()
            .write(true)
            .open(&a)
            .expect("open");
        writer.set_len(BS as u64).expect("cut");
        let seen = window.bytes(2 * BS as u64, BS).expect("inside");
        assert_eq!(
            std::hint::black_box(seen)
                .iter()
                .map(|&b| u64::from(b))
                .sum::<u64>(),
            0
        );
        writer.set_len(4 * BS as u64).expect("put back");
        writer.set_modified(mtime).expect("mtime back");
        assert!(window.faulted());

        let source = Source::Data {
            name: "d1",
            dir: dir.path(),
            files: &files,
            skip: None,
            read_changed: false,
            elsewhere: &[],
            imported: None,
        };
        let batch_with = |window: &Arc<Window>| {
            let mut batch = Batch::new(BS);
            batch.reset(1);
            batch.mapped[0] = Some((Arc::clone(window), 2 * BS as u64));
            batch.status[0] = Status::Present {
                file: 0,
                block: 2,
                len: BS,
            };
            batch
        };
        let mut batch = batch_with(&window);
        let mut errors = Vec::new();
        batch.check_mapped(&source, &[2], &mut errors);
        assert!(batch.changed.is_empty());
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].contains("a block 2: a cached page could not be read back"),
            "{errors:?}"
        );

        // Cut for good: a change, not an error.
        writer.set_len(BS as u64).expect("cut");
        let mut batch = batch_with(&window);
        let mut errors = Vec::new();
        batch.check_mapped(&source, &[2], &mut errors);
        assert_eq!(batch.changed, vec![0]);
        assert!(errors.is_empty(), "{errors:?}");
    }

    #[test]
    fn positions_of_changed_files_are_found_in_the_list() {
        let mut disk = Disk::default();
        for (name, extents) in [
            (
                "a",
                vec![Extent { pos: 0, len: 3 }, Extent { pos: 10, len: 2 }],
            ),
            ("b", vec![Extent { pos: 3, len: 4 }]),
        ] {
            let blocks = extents.iter().map(|e| e.len as usize).sum();
            disk.files.push(FileEntry {
                path: name.into(),
                extents,
                hashes: vec![Default::default(); blocks],
                ..Default::default()
            });
        }
        let run = Run::<()> {
            results: Vec::new(),
            changed: vec![(0, 0)],
            unopened: Vec::new(),
            errors: Vec::new(),
            bytes: 0,
            mapped: 0,
            done: 0,
        };
        let positions = [1u32, 2, 4, 10, 12];
        assert_eq!(run.touched_by_changes(&[disk], &positions), vec![0, 1, 3]);
    }
}

#[cfg(test)]
mod messages {
    use super::*;

    #[test]
    fn a_full_parity_disk_says_what_to_do() {
        let error = |errno| PipelineError::ParityWrite {
            level: 1,
            path: PathBuf::from("/mnt/parity/p"),
            source: std::io::Error::from_raw_os_error(errno),
        };
        let full = error(libc::ENOSPC).to_string();
        assert!(
            full.starts_with(
                "writing parity file /mnt/parity/p (level 1): No space left on device"
            ),
            "{full}"
        );
        assert!(
            full.contains("the parity disk is full")
                && full.contains("as large as the fullest data disk"),
            "{full}"
        );
        assert!(!error(libc::EIO).to_string().contains("full"));
    }
}
