//! Files copied or moved from one data disk to another, as SnapRAID's `copy`.
//!
//! A file new on one disk with the path, size and mtime of a file the state holds on
//! another disk, every block of it synced, is taken for a copy of that file (moving
//! files between the disks of a pool makes exactly this). Its bytes should be the
//! original's, and the state has the original's block hashes: [`verify`] reads the
//! copy and compares, before a sync lets the parity forget the original. A copy that
//! went wrong (a failing cable, disk or memory, an interrupted move) is then found
//! while the parity still holds the original, and `fix` can still bring it back.
//!
//! [`find`] is pure; [`verify`] is the I/O edge, one thread per disk.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use rayon::prelude::*;

use crate::beneath::{self, Root};
use crate::config::Config;
use crate::hash::block_hash;
use crate::scan::{DiskChanges, DiskScan};
use crate::state::model::{mtime_ns, Disk, State};
use crate::sync::Progress;

/// A file found new on one disk that is a copy of a file the state holds on another.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Copied {
    /// The disk slot of the copy and its index in that disk's scan.
    pub slot: usize,
    pub found: usize,
    /// The disk slot of the original and its index in that state disk's files.
    pub from_slot: usize,
    pub from: usize,
}

/// The files added on each disk (`changes[slot].added`, indexes into
/// `scans[slot].files`) that have the path, size and mtime of a file of another disk
/// in `disks` whose blocks are all synced. Empty files are left out: they have
/// nothing to compare. With several such files, the first disk's is taken.
pub fn find(disks: &[Disk], scans: &[DiskScan], changes: &[DiskChanges]) -> Vec<Copied> {
    let mut by_path: HashMap<&str, Vec<(usize, usize)>> = HashMap::new();
    for (slot, disk) in disks.iter().enumerate() {
        for (i, f) in disk.files.iter().enumerate() {
            if f.size > 0 && !f.has_new_blocks() {
                by_path.entry(f.path.as_str()).or_default().push((slot, i));
            }
        }
    }
    let mut copies = Vec::new();
    for (slot, (scan, change)) in scans.iter().zip(changes).enumerate() {
        for &found in &change.added {
            let new = &scan.files[found];
            let original = by_path.get(new.path.as_str()).and_then(|candidates| {
                candidates.iter().find(|&&(s, i)| {
                    let f = &disks[s].files[i];
                    s != slot && f.size == new.size && f.mtime_ns == new.mtime_ns
                })
            });
            if let Some(&(from_slot, from)) = original {
                copies.push(Copied {
                    slot,
                    found,
                    from_slot,
                    from,
                });
            }
        }
    }
    copies
}

/// A copy whose bytes are not the original's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Differs {
    pub copy: Copied,
    /// The first block that differs.
    pub block: usize,
}

/// Reads every copy and compares each block with the original's hash. A copy that
/// cannot be read, or that changed since the scan, is not judged here: the sync reads
/// it as a new file and reports what it finds. Returns the copies that differ. A stop
/// signal (see [`crate::interrupt`]) ends it early, with what was found so far.
pub fn verify(
    config: &Config,
    state: &State,
    scans: &[DiskScan],
    copies: &[Copied],
    progress: &dyn Progress,
) -> Vec<Differs> {
    let block_size = state.block_size as usize;
    let mut per_disk: Vec<Vec<Copied>> = vec![Vec::new(); scans.len()];
    for c in copies {
        per_disk[c.slot].push(*c);
    }
    let total: u64 = copies
        .iter()
        .map(|c| scans[c.slot].files[c.found].size)
        .sum();
    progress.start(total);
    let differs = per_disk
        .par_iter()
        .enumerate()
        .flat_map_iter(|(slot, list)| {
            let dir = &config.data[slot].dir;
            let root = Root::open(dir).ok();
            let mut buf = vec![0u8; block_size];
            let mut found = Vec::new();
            for c in list {
                if crate::interrupt::requested().is_some() {
                    break;
                }
                let new = &scans[slot].files[c.found];
                let rel = crate::name::to_os(&new.path);
                let Ok(file) = beneath::open_recorded(root.as_ref(), dir, Path::new(&*rel)) else {
                    continue;
                };
                let hashes = &state.disks[c.from_slot].files[c.from].hashes;
                if let Some(block) = first_difference(&file, &mut buf, new.size, hashes, state) {
                    // Changed since the scan: a new file to the sync, not a copy.
                    if still_as_found(&file, new.size, new.mtime_ns) {
                        found.push(Differs { copy: *c, block });
                    }
                }
                progress.advance(new.size);
            }
            found
        })
        .collect();
    progress.finish();
    differs
}

/// The first block of `file` (`size` bytes) whose hash is not in `hashes` at its
/// index, or that cannot be read.
fn first_difference(
    file: &File,
    buf: &mut [u8],
    size: u64,
    hashes: &[crate::state::model::Hash],
    state: &State,
) -> Option<usize> {
    let block_size = buf.len() as u64;
    for (b, expected) in hashes.iter().enumerate() {
        let offset = b as u64 * block_size;
        let len = (size.saturating_sub(offset)).min(block_size) as usize;
        let data = &mut buf[..len];
        if file.read_exact_at(data, offset).is_err()
            || block_hash(&state.hash_key, data) != *expected
        {
            return Some(b);
        }
    }
    None
}

/// Whether the open file still has the size and mtime the scan found.
fn still_as_found(file: &File, size: u64, mtime: i64) -> bool {
    use std::os::unix::fs::MetadataExt;
    file.metadata()
        .is_ok_and(|m| m.len() == size && mtime_ns(m.mtime(), m.mtime_nsec()) == mtime)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scan::Found;
    use crate::state::model::FileEntry;

    fn entry(path: &str, size: u64, mtime_ns: i64, new: bool) -> FileEntry {
        FileEntry {
            path: path.into(),
            size,
            mtime_ns,
            hashes: vec![[7; 16]; size.div_ceil(4) as usize],
            new_blocks: if new { vec![1] } else { Vec::new() },
            ..FileEntry::default()
        }
    }

    fn found(path: &str, size: u64, mtime_ns: i64) -> Found {
        Found {
            path: path.into(),
            size,
            mtime_ns,
            inode: 99,
            mode: 0o100644,
            uid: 0,
            gid: 0,
        }
    }

    fn disk(files: Vec<FileEntry>) -> Disk {
        Disk {
            files,
            ..Disk::default()
        }
    }

    fn added(files: Vec<Found>) -> (DiskScan, DiskChanges) {
        let changes = DiskChanges {
            added: (0..files.len()).collect(),
            ..DiskChanges::default()
        };
        (
            DiskScan {
                files,
                ..DiskScan::default()
            },
            changes,
        )
    }

    #[test]
    fn a_new_file_with_the_path_size_and_mtime_of_another_disks_file_is_a_copy() {
        let disks = [
            disk(vec![entry("a/x", 10, 5, false), entry("y", 3, 1, false)]),
            disk(Vec::new()),
        ];
        let (scan0, ch0) = (DiskScan::default(), DiskChanges::default());
        let (scan1, ch1) = added(vec![
            found("a/x", 10, 5), // a copy of d0's a/x
            found("y", 3, 2),    // other mtime
            found("z", 10, 5),   // other path
        ]);
        let copies = find(&disks, &[scan0, scan1], &[ch0, ch1]);
        assert_eq!(
            copies,
            [Copied {
                slot: 1,
                found: 0,
                from_slot: 0,
                from: 0
            }]
        );
    }

    #[test]
    fn files_of_the_same_disk_empty_files_and_unsynced_originals_are_not_copies() {
        let disks = [
            disk(vec![
                entry("same", 4, 1, false),
                entry("empty", 0, 1, false),
            ]),
            disk(vec![
                entry("unsynced", 4, 1, true),
                entry("other", 5, 1, false),
            ]),
            disk(Vec::new()),
        ];
        // Found on disk 0 itself (a restore there, not a copy), an empty file, an
        // original whose blocks are not synced yet, and one real copy.
        let (scan0, ch0) = added(vec![found("same", 4, 1)]);
        let (scan1, ch1) = added(vec![found("empty", 0, 1)]);
        let (scan2, ch2) = added(vec![found("unsynced", 4, 1), found("other", 5, 1)]);
        let copies = find(&disks, &[scan0, scan1, scan2], &[ch0, ch1, ch2]);
        assert_eq!(
            copies,
            [Copied {
                slot: 2,
                found: 1,
                from_slot: 1,
                from: 1
            }]
        );
    }
}
