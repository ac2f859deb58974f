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

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use rayon::prelude::*;

use crate::beneath::{self, Root};
use crate::config::Config;
use crate::hash::block_hash;
use crate::scan::{DiskChanges, DiskScan, Found};
use crate::state::model::{mtime_ns, Disk, Hash, State};
use crate::sync::Progress;

/// A file found new on one disk that is a copy of a file the state holds on another.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Copied {
    /// The disk slot of the copy and its index in that disk's scan.
    pub slot: usize,
    pub found: usize,
    /// The files it may be a copy of: disk slot and index in that state disk's
    /// files, those gone from their disk first (moved), then by disk. Several disks
    /// may hold a file of that path, size and mtime; the copy must have the bytes of
    /// one of them.
    pub from: Vec<(usize, usize)>,
}

/// The files added on each disk (`changes[slot].added`, indexes into
/// `scans[slot].files`) that have the path, size and mtime of a file of another disk
/// in `disks` whose blocks are all synced. Empty files are left out: they have
/// nothing to compare, and are new files to the sync.
pub fn find(disks: &[Disk], scans: &[DiskScan], changes: &[DiskChanges]) -> Vec<Copied> {
    if changes.iter().all(|c| c.added.is_empty()) {
        return Vec::new();
    }
    let mut by_path: HashMap<&str, Vec<(usize, usize)>> = HashMap::new();
    for (slot, disk) in disks.iter().enumerate() {
        for (i, f) in disk.files.iter().enumerate() {
            if f.size > 0 && !f.has_new_blocks() {
                by_path.entry(f.path.as_str()).or_default().push((slot, i));
            }
        }
    }
    // Originals gone from their disk come first: a move names where it came from.
    let removed: HashSet<(usize, usize)> = changes
        .iter()
        .enumerate()
        .flat_map(|(slot, c)| c.removed.iter().map(move |&i| (slot, i)))
        .collect();
    let mut copies = Vec::new();
    for (slot, (scan, change)) in scans.iter().zip(changes).enumerate() {
        for &found in &change.added {
            let new = &scan.files[found];
            let mut from: Vec<(usize, usize)> = by_path
                .get(new.path.as_str())
                .into_iter()
                .flatten()
                .copied()
                .filter(|&(s, i)| {
                    let f = &disks[s].files[i];
                    s != slot && f.size == new.size && f.mtime_ns == new.mtime_ns
                })
                .collect();
            from.sort_by_key(|original| !removed.contains(original));
            if !from.is_empty() {
                copies.push(Copied { slot, found, from });
            }
        }
    }
    copies
}

/// Why a copy could not be taken for its original's bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    /// Block `block` is not the original's (the first original's, when several).
    Differs { block: usize },
    /// Reading the block at `block` failed.
    Unreadable { block: usize, error: String },
    /// Opening it failed.
    Unopened(String),
    /// Its size or mtime changed while it was compared.
    Changed,
}

/// A copy that could not be taken for its original's bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unverified {
    /// Its index in the list given to [`verify`].
    pub copy: usize,
    pub problem: Problem,
}

/// Reads every copy and compares each block with the hashes of its possible
/// originals. Returns the copies that are not block for block one of them, or could
/// not be read whole as the scan found them. A stop signal (see [`crate::interrupt`])
/// ends it early, with what was found so far.
pub fn verify(
    config: &Config,
    state: &State,
    scans: &[DiskScan],
    copies: &[Copied],
    progress: &dyn Progress,
) -> Vec<Unverified> {
    let mut per_disk: Vec<Vec<usize>> = vec![Vec::new(); scans.len()];
    for (i, c) in copies.iter().enumerate() {
        per_disk[c.slot].push(i);
    }
    let total: u64 = copies
        .iter()
        .map(|c| scans[c.slot].files[c.found].size)
        .sum();
    progress.start(total);
    let mut unverified: Vec<Unverified> = per_disk
        .par_iter()
        .enumerate()
        .flat_map_iter(|(slot, list)| {
            let dir = &config.data[slot].dir;
            let root = Root::open(dir).ok();
            let mut buf = vec![0u8; state.block_size as usize];
            let mut found = Vec::new();
            for &i in list {
                if crate::interrupt::requested().is_some() {
                    break;
                }
                let c = &copies[i];
                let new = &scans[slot].files[c.found];
                let problem = compare(root.as_ref(), dir, new, &c.from, state, &mut buf);
                if let Some(problem) = problem {
                    found.push(Unverified { copy: i, problem });
                }
                progress.advance(new.size);
            }
            found
        })
        .collect();
    progress.finish();
    unverified.sort_by_key(|u| u.copy);
    unverified
}

/// Compares one copy with its possible originals: `None` when it has the bytes of
/// one of them and did not change meanwhile.
fn compare(
    root: Option<&Root>,
    dir: &Path,
    new: &Found,
    from: &[(usize, usize)],
    state: &State,
    buf: &mut [u8],
) -> Option<Problem> {
    let file = match beneath::open_recorded(root, dir, &new.path) {
        Ok(file) => file,
        Err(e) => return Some(Problem::Unopened(e.to_string())),
    };
    let hashes: Vec<&[Hash]> = from
        .iter()
        .map(|&(s, i)| state.disks[s].files[i].hashes.as_slice())
        .collect();
    let mut matching = Matching::new(hashes.len());
    let block_size = buf.len() as u64;
    // Originals of one size have as many blocks.
    let blocks = hashes.first().map_or(0, |h| h.len());
    for b in 0..blocks {
        if crate::interrupt::requested().is_some() {
            return None;
        }
        let offset = b as u64 * block_size;
        let len = new.size.saturating_sub(offset).min(block_size) as usize;
        let data = &mut buf[..len];
        if let Err(e) = file.read_exact_at(data, offset) {
            return Some(if still_as_found(&file, new.size, new.mtime_ns) {
                Problem::Unreadable {
                    block: b,
                    error: e.to_string(),
                }
            } else {
                Problem::Changed
            });
        }
        if !matching.block(b, &block_hash(&state.hash_key, data), &hashes) {
            break;
        }
    }
    if !still_as_found(&file, new.size, new.mtime_ns) {
        return Some(Problem::Changed);
    }
    matching.outcome()
}

/// A copy's blocks, one by one, against the block hashes of its possible originals.
struct Matching {
    /// Per original, whether every block so far had its hash.
    alike: Vec<bool>,
    /// The first block that did not have the first original's hash.
    first_differs: Option<usize>,
}

impl Matching {
    fn new(originals: usize) -> Matching {
        Matching {
            alike: vec![true; originals],
            first_differs: None,
        }
    }

    /// Takes the hash of the copy's block `b`; `false` once no original is left.
    fn block(&mut self, b: usize, hash: &Hash, originals: &[&[Hash]]) -> bool {
        for (alike, hashes) in self.alike.iter_mut().zip(originals) {
            *alike &= hashes.get(b) == Some(hash);
        }
        if self.alike.first() == Some(&false) && self.first_differs.is_none() {
            self.first_differs = Some(b);
        }
        self.alike.contains(&true)
    }

    /// `None` when the copy had every block of some original.
    fn outcome(&self) -> Option<Problem> {
        (!self.alike.contains(&true)).then(|| Problem::Differs {
            block: self.first_differs.unwrap_or(0),
        })
    }
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
                from: vec![(0, 0)]
            }]
        );
    }

    #[test]
    fn a_copy_matches_when_it_has_every_block_of_one_of_its_originals() {
        let first: &[Hash] = &[[1; 16], [2; 16], [3; 16]];
        let second: &[Hash] = &[[1; 16], [9; 16], [3; 16]];
        let run = |blocks: &[Hash]| {
            let mut m = Matching::new(2);
            for (b, h) in blocks.iter().enumerate() {
                if !m.block(b, h, &[first, second]) {
                    break;
                }
            }
            m.outcome()
        };
        assert_eq!(run(first), None);
        assert_eq!(run(second), None);
        // Neither: named at the first block that left the first original.
        assert_eq!(
            run(&[[1; 16], [9; 16], [4; 16]]),
            Some(Problem::Differs { block: 1 })
        );
        assert_eq!(
            run(&[[5; 16], [2; 16], [3; 16]]),
            Some(Problem::Differs { block: 0 })
        );
        // No original at all is no match.
        let mut none = Matching::new(0);
        assert!(!none.block(0, &[1; 16], &[]));
        assert_eq!(none.outcome(), Some(Problem::Differs { block: 0 }));
    }

    #[test]
    fn of_several_possible_originals_those_gone_from_their_disk_come_first() {
        let x = || disk(vec![entry("x", 10, 5, false)]);
        let disks = [x(), x(), x(), disk(Vec::new())];
        let gone = DiskChanges {
            removed: vec![0],
            ..DiskChanges::default()
        };
        let (scan3, ch3) = added(vec![found("x", 10, 5)]);
        let scans = [
            DiskScan::default(),
            DiskScan::default(),
            DiskScan::default(),
            scan3,
        ];
        let changes = [DiskChanges::default(), gone, DiskChanges::default(), ch3];
        let copies = find(&disks, &scans, &changes);
        assert_eq!(copies.len(), 1);
        assert_eq!(copies[0].from, [(1, 0), (0, 0), (2, 0)]);
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
                from: vec![(1, 1)]
            }]
        );
    }
}
