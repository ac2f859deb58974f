//! The multi-disk pipeline sync runs over a list of positions: one reader thread per
//! data disk (sequential reads in position order), hashing and parity spread over the
//! cores with rayon, and one writer thread per parity file.
//!
//! Positions travel in batches. A reader fills one buffer per batch for its disk and
//! sends it; the compute stage waits for every disk's buffer of a batch, hashes each
//! block (new blocks get their hash, known blocks are verified) and computes the
//! parity; each writer writes its level's buffer at `position x block size`. Buffers
//! are recycled through per-disk and per-level pools, so memory stays bounded.
//!
//! The pipeline never touches the state: it returns, per position, what it found, and
//! the caller (sync) decides what to commit after the parity is on disk.

use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use crossbeam::channel::{bounded, Receiver, Sender};
use rayon::prelude::*;

use crate::hash::block_hash;
use crate::raid::{self, Kernel};
use crate::state::model::{FileEntry, Hash};

/// Bytes of one disk's data per batch.
const BATCH_BYTES: usize = 8 << 20;
/// Batches a reader may run ahead of the compute stage.
const READ_AHEAD: usize = 3;

/// One data disk as the pipeline sees it.
pub struct DiskInput<'a> {
    pub name: &'a str,
    pub dir: &'a Path,
    /// Column in the generator matrix.
    pub index: usize,
    pub files: &'a [FileEntry],
}

/// The block of one disk at one position: block `block` of file `file`.
#[derive(Copy, Clone, Debug)]
struct BlockRef {
    /// Index into the position list.
    slot: usize,
    file: usize,
    block: usize,
}

/// What the pipeline found at one position.
#[derive(Clone, Debug, Default)]
pub struct PositionResult {
    /// Hashes of the new blocks read here: (disk slot, file, block, hash).
    pub new_hashes: Vec<(usize, usize, usize, Hash)>,
    /// Disk slots whose known block did not match its hash.
    pub bad: Vec<usize>,
    /// Some block could not be read or belongs to a file that changed: the parity
    /// written here must not be trusted.
    pub excluded: bool,
}

/// The outcome of a pipeline run.
pub struct Outcome {
    /// One entry per input position.
    pub positions: Vec<PositionResult>,
    /// Files that changed or vanished while they were read: (disk slot, file index).
    pub changed: Vec<(usize, usize)>,
    /// Read errors and other per-file problems, as messages.
    pub errors: Vec<String>,
    /// Data bytes read.
    pub bytes: u64,
}

/// Why the pipeline stopped: a parity file could not be written.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("writing parity file {} (level {level}): {source}", path.display())]
    ParityWrite {
        level: usize,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Raid(#[from] raid::RaidError),
}

/// Parity outputs: the open files, level 1 first.
pub struct ParityOutput<'a> {
    pub files: &'a [File],
    pub paths: &'a [PathBuf],
}

/// Runs the pipeline over `positions` (sorted, unique). `progress` is called from the
/// compute stage with the data bytes of each finished batch.
pub fn run(
    kernel: Kernel,
    block_size: usize,
    key: &[u8; 32],
    disks: &[DiskInput],
    positions: &[u32],
    parity: ParityOutput,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Outcome, PipelineError> {
    let batch_len = (BATCH_BYTES / block_size).max(1);
    let batches: Vec<&[u32]> = positions.chunks(batch_len).collect();
    let columns = disks.iter().map(|d| d.index + 1).max().unwrap_or(0);
    let refs: Vec<Vec<BlockRef>> = disks
        .iter()
        .map(|d| block_refs(d.files, positions))
        .collect();

    let stop = AtomicBool::new(false);
    let write_error: Mutex<Option<PipelineError>> = Mutex::new(None);
    let mut results = vec![PositionResult::default(); positions.len()];
    let mut changed = Vec::new();
    let mut errors = Vec::new();
    let mut bytes = 0u64;

    std::thread::scope(|scope| -> Result<(), PipelineError> {
        // Readers.
        let mut from_readers: Vec<Receiver<DiskBatch>> = Vec::new();
        let mut to_readers: Vec<Sender<Vec<u8>>> = Vec::new();
        let mut reader_handles = Vec::new();
        for (slot, disk) in disks.iter().enumerate() {
            let (tx, rx) = bounded::<DiskBatch>(READ_AHEAD);
            let (pool_tx, pool_rx) = bounded::<Vec<u8>>(READ_AHEAD + 2);
            for _ in 0..READ_AHEAD + 1 {
                let _ = pool_tx.send(vec![0u8; batch_len * block_size]);
            }
            from_readers.push(rx);
            to_readers.push(pool_tx);
            let refs = &refs[slot];
            let batches = &batches;
            let stop = &stop;
            reader_handles.push(scope.spawn(move || {
                read_disk(
                    disk, refs, batches, block_size, batch_len, tx, pool_rx, stop,
                )
            }));
        }

        // Writers.
        let mut to_writers: Vec<Sender<(usize, Vec<u8>)>> = Vec::new();
        let mut writer_pools: Vec<Receiver<Vec<u8>>> = Vec::new();
        for (level, file) in parity.files.iter().enumerate() {
            let (tx, rx) = bounded::<(usize, Vec<u8>)>(2);
            let (pool_tx, pool_rx) = bounded::<Vec<u8>>(4);
            for _ in 0..3 {
                let _ = pool_tx.send(vec![0u8; batch_len * block_size]);
            }
            to_writers.push(tx);
            writer_pools.push(pool_rx);
            let path = &parity.paths[level];
            let batches = &batches;
            let stop = &stop;
            let write_error = &write_error;
            scope.spawn(move || {
                for (b, buf) in rx.iter() {
                    if let Err(source) = write_runs(file, batches[b], &buf, block_size) {
                        stop.store(true, Ordering::Relaxed);
                        if let Ok(mut slot) = write_error.lock() {
                            slot.get_or_insert(PipelineError::ParityWrite {
                                level: level + 1,
                                path: path.clone(),
                                source,
                            });
                        }
                    }
                    let _ = pool_tx.send(buf);
                }
            });
        }

        // Compute, in batch order.
        let zero = vec![0u8; block_size];
        let mut outcome: Result<(), PipelineError> = Ok(());
        for (b, batch) in batches.iter().enumerate() {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let mut inputs: Vec<DiskBatch> = Vec::with_capacity(disks.len());
            for rx in &from_readers {
                match rx.recv() {
                    Ok(db) => inputs.push(db),
                    Err(_) => break,
                }
            }
            if inputs.len() != disks.len() {
                break;
            }
            let mut outs: Vec<Vec<u8>> = Vec::with_capacity(writer_pools.len());
            for pool in &writer_pools {
                match pool.recv() {
                    Ok(buf) => outs.push(buf),
                    Err(_) => break,
                }
            }
            if outs.len() != writer_pools.len() {
                break;
            }
            let base = b * batch_len;
            let batch_results = &mut results[base..base + batch.len()];
            if let Err(e) = compute_batch(
                kernel,
                block_size,
                key,
                disks,
                columns,
                &inputs,
                &mut outs,
                &zero,
                batch_results,
            ) {
                outcome = Err(e);
                stop.store(true, Ordering::Relaxed);
                break;
            }
            let batch_bytes: u64 = inputs.iter().map(|i| i.bytes).sum();
            bytes += batch_bytes;
            for (slot, input) in inputs.into_iter().enumerate() {
                for &j in &input.unreadable {
                    batch_results[j].excluded = true;
                }
                errors.extend(input.errors);
                changed.extend(input.changed.into_iter().map(|f| (slot, f)));
                let _ = to_readers[slot].send(input.data);
            }
            for (level, buf) in outs.into_iter().enumerate() {
                if to_writers[level].send((b, buf)).is_err() {
                    stop.store(true, Ordering::Relaxed);
                }
            }
            progress(batch_bytes);
        }
        // Let the readers and writers finish: closing the channels ends their loops.
        stop.store(
            stop.load(Ordering::Relaxed) || outcome.is_err(),
            Ordering::Relaxed,
        );
        drop(to_writers);
        drop(to_readers);
        // Drain what readers still send so that none blocks.
        for rx in &from_readers {
            for _ in rx.iter() {}
        }
        for h in reader_handles {
            let _ = h.join();
        }
        outcome
    })?;

    if let Ok(mut slot) = write_error.lock() {
        if let Some(e) = slot.take() {
            return Err(e);
        }
    }
    // Positions holding a block of a file that changed are not trusted.
    for &(slot, file) in &changed {
        for pos in disks[slot].files[file].positions() {
            if let Ok(j) = positions.binary_search(&pos) {
                results[j].excluded = true;
            }
        }
    }
    changed.sort_unstable();
    changed.dedup();
    Ok(Outcome {
        positions: results,
        changed,
        errors,
        bytes,
    })
}

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

/// One disk's data for one batch.
struct DiskBatch {
    /// `batch_len x block_size` bytes; block j of the batch at `j x block_size`.
    data: Vec<u8>,
    /// Per batch slot: the block there (file, block, length of real data) or none.
    blocks: Vec<Option<(usize, usize, usize)>>,
    /// Batch slots whose block could not be read.
    unreadable: Vec<usize>,
    /// Files found changed or missing while reading.
    changed: Vec<usize>,
    errors: Vec<String>,
    bytes: u64,
}

/// The file a reader has open (`None` when it could not be opened or had changed).
struct Current {
    file: usize,
    handle: Option<File>,
}

#[allow(clippy::too_many_arguments)]
fn read_disk(
    disk: &DiskInput,
    refs: &[BlockRef],
    batches: &[&[u32]],
    block_size: usize,
    batch_len: usize,
    tx: Sender<DiskBatch>,
    pool: Receiver<Vec<u8>>,
    stop: &AtomicBool,
) {
    let mut next = 0usize;
    let mut current: Option<Current> = None;
    for (b, batch) in batches.iter().enumerate() {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let Ok(mut data) = pool.recv() else {
            return;
        };
        let base = b * batch_len;
        let mut out = DiskBatch {
            data: Vec::new(),
            blocks: vec![None; batch.len()],
            unreadable: Vec::new(),
            changed: Vec::new(),
            errors: Vec::new(),
            bytes: 0,
        };
        while let Some(r) = refs.get(next).filter(|r| r.slot < base + batch.len()) {
            next += 1;
            let j = r.slot - base;
            let entry = &disk.files[r.file];
            if current.as_ref().map(|c| c.file) != Some(r.file) {
                if let Some(prev) = current.take() {
                    let file = prev.file;
                    if finish_file(disk, prev) {
                        out.changed.push(file);
                    }
                }
                current = Some(open_file(disk, r.file, &mut out));
            }
            let offset = r.block as u64 * block_size as u64;
            let len = (entry.size.saturating_sub(offset)).min(block_size as u64) as usize;
            let buf = &mut data[j * block_size..(j + 1) * block_size];
            let handle = current.as_ref().and_then(|c| c.handle.as_ref());
            match handle.map(|h| read_block(h, offset, &mut buf[..len])) {
                Some(Ok(())) => {
                    buf[len..].fill(0);
                    out.blocks[j] = Some((r.file, r.block, len));
                    out.bytes += len as u64;
                }
                Some(Err(e)) => {
                    if e.kind() == std::io::ErrorKind::UnexpectedEof {
                        // Shorter than the scan said: it changed.
                        out.changed.push(r.file);
                    } else {
                        out.errors.push(format!(
                            "disk '{}': reading {} at byte {offset}: {e}",
                            disk.name,
                            disk.dir.join(&entry.path).display()
                        ));
                    }
                    out.unreadable.push(j);
                }
                None => out.unreadable.push(j),
            }
        }
        if b + 1 == batches.len() {
            if let Some(prev) = current.take() {
                let file = prev.file;
                if finish_file(disk, prev) {
                    out.changed.push(file);
                }
            }
        }
        out.data = data;
        if tx.send(out).is_err() {
            return;
        }
    }
}

/// Opens file `file` of the disk and checks it is still what the scan saw.
fn open_file(disk: &DiskInput, file: usize, out: &mut DiskBatch) -> Current {
    let entry = &disk.files[file];
    let path = disk.dir.join(&entry.path);
    let handle = match File::open(&path) {
        Ok(h) => h,
        Err(e) => {
            if e.kind() == std::io::ErrorKind::NotFound {
                out.changed.push(file);
            } else {
                out.errors.push(format!(
                    "disk '{}': opening {}: {e}",
                    disk.name,
                    path.display()
                ));
            }
            return Current { file, handle: None };
        }
    };
    if !unchanged(&handle, entry) {
        out.changed.push(file);
        return Current { file, handle: None };
    }
    Current {
        file,
        handle: Some(handle),
    }
}

/// After its last block was read: whether the file changed while it was read.
fn finish_file(disk: &DiskInput, current: Current) -> bool {
    match current.handle {
        Some(h) => !unchanged(&h, &disk.files[current.file]),
        None => false,
    }
}

fn unchanged(handle: &File, entry: &FileEntry) -> bool {
    handle.metadata().is_ok_and(|m| {
        m.len() == entry.size
            && m.ino() == entry.inode
            && m.mtime() * 1_000_000_000 + m.mtime_nsec() == entry.mtime_ns
    })
}

fn read_block(file: &File, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
    file.read_exact_at(buf, offset)
}

/// Hashes and parity for one batch.
#[allow(clippy::too_many_arguments)]
fn compute_batch(
    kernel: Kernel,
    block_size: usize,
    key: &[u8; 32],
    disks: &[DiskInput],
    columns: usize,
    inputs: &[DiskBatch],
    outs: &mut [Vec<u8>],
    zero: &[u8],
    results: &mut [PositionResult],
) -> Result<(), PipelineError> {
    // Split every parity buffer into per-position blocks, so positions can be
    // processed in parallel.
    let mut out_blocks: Vec<Vec<&mut [u8]>> = (0..results.len()).map(|_| Vec::new()).collect();
    for buf in outs.iter_mut() {
        for (j, chunk) in buf.chunks_mut(block_size).take(results.len()).enumerate() {
            out_blocks[j].push(chunk);
        }
    }
    results
        .par_iter_mut()
        .zip(out_blocks.par_iter_mut())
        .enumerate()
        .try_for_each(|(j, (result, parity))| -> Result<(), PipelineError> {
            let mut data: Vec<&[u8]> = vec![zero; columns];
            for (slot, input) in inputs.iter().enumerate() {
                let Some((file, block, len)) = input.blocks[j] else {
                    continue;
                };
                let bytes = &input.data[j * block_size..(j + 1) * block_size];
                data[disks[slot].index] = bytes;
                let entry = &disks[slot].files[file];
                let hash = block_hash(key, &bytes[..len]);
                if entry.is_new(block) {
                    result.new_hashes.push((slot, file, block, hash));
                } else if entry.hashes[block] != hash {
                    result.bad.push(slot);
                }
            }
            if !parity.is_empty() {
                raid::generate_with(kernel, &data, parity)?;
            }
            Ok(())
        })
}

/// Writes the parity blocks of a batch, one `pwrite` per run of consecutive positions.
fn write_runs(file: &File, batch: &[u32], buf: &[u8], block_size: usize) -> std::io::Result<()> {
    let mut j = 0;
    while j < batch.len() {
        let mut k = j + 1;
        while k < batch.len() && batch[k] == batch[k - 1] + 1 {
            k += 1;
        }
        let offset = u64::from(batch[j]) * block_size as u64;
        file.write_all_at(&buf[j * block_size..k * block_size], offset)?;
        j = k;
    }
    Ok(())
}
