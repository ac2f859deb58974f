//! Scanning the data disks and comparing them with the state.
//!
//! `scan_disk` walks one disk (the only I/O here); `compare` classifies every file as
//! SnapRAID does (added, removed, updated, moved, restored) as a pure function; and
//! `apply` turns that comparison into the next state: freed blocks become deleted
//! blocks, new files get the first free positions of their disk, and every position
//! whose parity must change is flagged unsynced.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::config::{Config, DataDisk};
use crate::state::model::{
    DeletedBlock, DirEntry, Disk, Extent, FileEntry, FolderEntry, LinkEntry, State, UNSYNCED,
};

/// A regular file as found on a disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    pub path: String,
    pub size: u64,
    pub mtime_ns: i64,
    pub inode: u64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// Everything a scan found on one disk.
#[derive(Clone, Debug, Default)]
pub struct DiskScan {
    pub files: Vec<Found>,
    pub links: Vec<LinkEntry>,
    /// Other names of files in `files` (see [`group_hard_links`]).
    pub hardlinks: Vec<LinkEntry>,
    pub dirs: Vec<DirEntry>,
    /// Every folder below the root, with its attributes.
    pub folders: Vec<FolderEntry>,
    /// Entries skipped because they are neither files, links nor folders (sockets,
    /// fifos, devices), for a warning.
    pub skipped: Vec<String>,
}

/// Why a disk could not be scanned.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error(
        "disk '{disk}': cannot read {}: {source}; check that the disk is mounted and readable",
        crate::name::shown_path(&path)
    )]
    Io {
        disk: String,
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Walks `disk` and returns its files, links and empty folders, leaving out what the
/// config excludes. Paths are relative to the disk root, `/`-separated, sorted.
pub fn scan_disk(config: &Config, disk: &DataDisk) -> Result<DiskScan, ScanError> {
    let mut scan = DiskScan::default();
    let io = |path: &Path, source| ScanError::Io {
        disk: disk.name.clone(),
        path: path.to_owned(),
        source,
    };
    let root = fs::metadata(&disk.dir).map_err(|e| io(&disk.dir, e))?;
    // The disk's root folder too (path ""): a replaced disk's new root is root's
    // with mode 755, and `fix -d` gives it back the owner and mode it had.
    scan.folders.push(FolderEntry {
        path: String::new(),
        mode: root.mode(),
        uid: root.uid(),
        gid: root.gid(),
        mtime_ns: crate::state::model::mtime_ns(root.mtime(), root.mtime_nsec()),
    });
    let mut stack = vec![(disk.dir.clone(), String::new())];
    // Files with more than one name: (device, inode, index in `scan.files`).
    let mut linked: Vec<(u64, u64, usize)> = Vec::new();
    while let Some((dir, rel)) = stack.pop() {
        let mut entries = 0usize;
        for entry in fs::read_dir(&dir).map_err(|e| io(&dir, e))? {
            let entry = entry.map_err(|e| io(&dir, e))?;
            let path = entry.path();
            let raw = entry.file_name();
            let name = crate::name::from_os(&raw);
            let child = if rel.is_empty() {
                name.to_string()
            } else {
                format!("{rel}/{name}")
            };
            let meta = fs::symlink_metadata(&path).map_err(|e| io(&path, e))?;
            let kind = meta.file_type();
            // The temporary file of an interrupted fix is never data, nor what a fix
            // kept of a file it could not rebuild.
            let fix_output = kind.is_file()
                && (name.ends_with(crate::fix::FIX_SUFFIX)
                    || name.ends_with(crate::fix::UNRECOVERABLE_SUFFIX));
            if fix_output || config.is_excluded(disk, &child, kind.is_dir()) {
                // A folder holding a content copy is not an empty folder: it changes
                // on every save, and `diff` would never be done with it.
                if !kind.is_dir() && config.is_content(disk, &child) {
                    entries += 1;
                }
                continue;
            }
            entries += 1;
            if kind.is_dir() {
                scan.folders.push(FolderEntry {
                    path: child.clone(),
                    mode: meta.mode(),
                    uid: meta.uid(),
                    gid: meta.gid(),
                    mtime_ns: crate::state::model::mtime_ns(meta.mtime(), meta.mtime_nsec()),
                });
                stack.push((path, child));
            } else if kind.is_file() {
                if meta.nlink() > 1 {
                    linked.push((meta.dev(), meta.ino(), scan.files.len()));
                }
                scan.files.push(Found {
                    path: child,
                    size: meta.len(),
                    mtime_ns: crate::state::model::mtime_ns(meta.mtime(), meta.mtime_nsec()),
                    inode: meta.ino(),
                    mode: meta.mode(),
                    uid: meta.uid(),
                    gid: meta.gid(),
                });
            } else if kind.is_symlink() {
                let target = fs::read_link(&path).map_err(|e| io(&path, e))?;
                scan.links.push(LinkEntry {
                    path: child,
                    target: crate::name::from_os(target.as_os_str()).into_owned(),
                });
            } else {
                scan.skipped.push(child);
            }
        }
        // A folder that is to hold a content copy is not an empty folder either, even
        // before the copy is written there.
        let holds_content = config
            .content
            .iter()
            .any(|c| c.path.parent() == Some(dir.as_path()));
        if entries == 0 && !rel.is_empty() && !holds_content {
            let meta = fs::symlink_metadata(&dir).map_err(|e| io(&dir, e))?;
            scan.dirs.push(DirEntry {
                path: rel,
                mode: meta.mode(),
                mtime_ns: crate::state::model::mtime_ns(meta.mtime(), meta.mtime_nsec()),
            });
        }
    }
    group_hard_links(&mut scan, linked);
    scan.files.sort_by(|a, b| a.path.cmp(&b.path));
    scan.links.sort_by(|a, b| a.path.cmp(&b.path));
    scan.hardlinks.sort_by(|a, b| a.path.cmp(&b.path));
    scan.dirs.sort_by(|a, b| a.path.cmp(&b.path));
    scan.folders.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(scan)
}

/// Names of one file (the same device and inode, found in this scan) are one file:
/// the first name in path order keeps its place in `files`, the others become hard
/// links to it. Their data is then read, hashed and protected once, and `fix` makes
/// them again as hard links rather than as copies.
fn group_hard_links(scan: &mut DiskScan, mut linked: Vec<(u64, u64, usize)>) {
    linked.sort_by(|a, b| {
        (a.0, a.1)
            .cmp(&(b.0, b.1))
            .then_with(|| scan.files[a.2].path.cmp(&scan.files[b.2].path))
    });
    let mut others: Vec<usize> = Vec::new();
    for group in linked.chunk_by(|a, b| (a.0, a.1) == (b.0, b.1)) {
        let Some((first, rest)) = group.split_first() else {
            continue;
        };
        for &(_, _, i) in rest {
            scan.hardlinks.push(LinkEntry {
                path: scan.files[i].path.clone(),
                target: scan.files[first.2].path.clone(),
            });
            others.push(i);
        }
    }
    others.sort_unstable();
    for i in others.into_iter().rev() {
        scan.files.swap_remove(i);
    }
}

/// How the files of one disk changed since the state was saved. Indexes point into
/// the state disk's `files` (old) and the scan's `files` (new).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DiskChanges {
    /// New files.
    pub added: Vec<usize>,
    /// Files that are gone.
    pub removed: Vec<usize>,
    /// Same path, other size or mtime: rewritten.
    pub updated: Vec<(usize, usize)>,
    /// Same inode, size and mtime at another path: renamed, blocks kept.
    pub moved: Vec<(usize, usize)>,
    /// Same path, size and mtime, other inode: copied back, blocks kept.
    pub restored: Vec<(usize, usize)>,
    /// Identical files.
    pub unchanged: Vec<(usize, usize)>,
}

impl DiskChanges {
    /// Whether nothing that parity covers changed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.removed.is_empty()
            && self.updated.is_empty()
            && self.moved.is_empty()
            && self.restored.is_empty()
    }

    /// Files the state had that are still there in some form.
    pub fn kept(&self) -> usize {
        self.unchanged.len() + self.moved.len() + self.restored.len()
    }
}

/// Classifies every file of `old` (the state) against `new` (a scan).
///
/// A file with its path, inode, size and mtime is unchanged. Otherwise both the inode
/// (a rename keeps it) and the path (a copy put back gets a new inode) are evidence,
/// each only with the same size and mtime:
/// - the inode alone matches a file the state has at another path: moved;
/// - the path alone matches: restored;
/// - both match, but different files of the state: ambiguous. Two files swapped by
///   renames look like that, and so do files put back from a backup whose new inodes
///   happen to equal the old inodes of others. Trusting either match could give a
///   file another file's hashes, so the file counts as updated and is read again.
///
/// A path whose size or mtime changed is updated; anything left is added or removed.
pub fn compare(old: &[FileEntry], new: &[Found]) -> DiskChanges {
    let mut changes = DiskChanges::default();
    let by_path: HashMap<&str, usize> = old
        .iter()
        .enumerate()
        .map(|(i, f)| (f.path.as_str(), i))
        .collect();
    let same = |o: usize, f: &Found| old[o].size == f.size && old[o].mtime_ns == f.mtime_ns;
    let mut matched = vec![false; old.len()];
    let mut rest = Vec::new();
    for (n, f) in new.iter().enumerate() {
        match by_path.get(f.path.as_str()) {
            Some(&o) if old[o].inode == f.inode && same(o, f) => {
                matched[o] = true;
                changes.unchanged.push((o, n));
            }
            _ => rest.push(n),
        }
    }
    // Hard links share an inode: every state file with it is a candidate.
    let mut by_inode: HashMap<u64, Vec<usize>> = HashMap::new();
    for (i, f) in old.iter().enumerate().filter(|(i, _)| !matched[*i]) {
        by_inode.entry(f.inode).or_default().push(i);
    }
    // Both kinds of evidence are gathered before anything is matched, so that the
    // order of the scan does not decide an ambiguous case.
    let candidates: Vec<(usize, Option<usize>, Option<usize>)> = rest
        .into_iter()
        .map(|n| {
            let f = &new[n];
            let at_path = by_path
                .get(f.path.as_str())
                .copied()
                .filter(|&o| !matched[o]);
            let by_ino = by_inode.get(&f.inode).and_then(|os| {
                os.iter()
                    .copied()
                    .find(|&o| same(o, f) && Some(o) != at_path)
            });
            (n, at_path, by_ino)
        })
        .collect();
    let mut updated_or_added = Vec::new();
    for (n, at_path, by_ino) in candidates {
        let f = &new[n];
        let restored = at_path.filter(|&o| same(o, f));
        match (restored, by_ino) {
            (None, Some(o)) if !matched[o] => {
                matched[o] = true;
                changes.moved.push((o, n));
            }
            (Some(o), None) if !matched[o] => {
                matched[o] = true;
                changes.restored.push((o, n));
            }
            _ => updated_or_added.push((n, at_path)),
        }
    }
    for (n, at_path) in updated_or_added {
        match at_path {
            Some(o) if !matched[o] => {
                matched[o] = true;
                changes.updated.push((o, n));
            }
            _ => changes.added.push(n),
        }
    }
    changes.updated.sort_unstable();
    changes.added.sort_unstable();
    changes.removed = (0..old.len()).filter(|&i| !matched[i]).collect();
    changes
}

/// Paths added, removed and changed between two lists of entries named by path
/// (symbolic links, empty folders), which `diff` reports beside the files.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EntryChanges {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub updated: Vec<String>,
}

impl EntryChanges {
    /// Compares `old` (the state) with `new` (a scan), by `path`.
    pub fn of<T: PartialEq>(old: &[T], new: &[T], path: impl Fn(&T) -> &str) -> EntryChanges {
        let before: HashMap<&str, &T> = old.iter().map(|e| (path(e), e)).collect();
        let after: HashMap<&str, &T> = new.iter().map(|e| (path(e), e)).collect();
        let mut c = EntryChanges::default();
        for (p, e) in &after {
            match before.get(p) {
                None => c.added.push((*p).to_owned()),
                Some(old) if old != e => c.updated.push((*p).to_owned()),
                Some(_) => {}
            }
        }
        c.removed = before
            .keys()
            .filter(|p| !after.contains_key(*p))
            .map(|p| (*p).to_owned())
            .collect();
        c.added.sort();
        c.removed.sort();
        c.updated.sort();
        c
    }

    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.updated.is_empty()
    }
}

/// Applies the changes of one disk to the state: returns the disk's new content and
/// updates the position table (new positions, unsynced flags).
pub fn apply(state: &mut State, disk_slot: usize, scan: &DiskScan, changes: &DiskChanges) -> Disk {
    let block_size = state.block_size;
    let old = &state.disks[disk_slot];
    let mut files: Vec<FileEntry> = Vec::with_capacity(scan.files.len());
    let mut deleted = old.deleted.clone();
    let mut unsynced: Vec<u32> = Vec::new();

    // Blocks of removed and rewritten files: if their data is in the parity, the
    // parity still depends on it until the position is synced again.
    let freed = changes
        .removed
        .iter()
        .copied()
        .chain(changes.updated.iter().map(|&(o, _)| o));
    for o in freed {
        let f = &old.files[o];
        for (i, pos) in f.positions().enumerate() {
            if !f.is_new(i) {
                deleted.push(DeletedBlock {
                    pos,
                    hash: f.hashes[i],
                });
            }
            unsynced.push(pos);
        }
    }
    let keep = |o: usize, n: usize| {
        let found = &scan.files[n];
        let mut f = old.files[o].clone();
        f.path = found.path.clone();
        f.inode = found.inode;
        f.mode = found.mode;
        f.uid = found.uid;
        f.gid = found.gid;
        f
    };
    for &(o, n) in changes
        .unchanged
        .iter()
        .chain(&changes.moved)
        .chain(&changes.restored)
    {
        files.push(keep(o, n));
    }

    // New blocks take the first positions no file of this disk uses. A position that
    // only holds a deleted block is free: that stripe is recomputed anyway.
    let mut used: Vec<bool> = vec![false; state.positions.len()];
    for f in &files {
        for pos in f.positions() {
            mark(&mut used, pos);
        }
    }
    let mut next_free = 0usize;
    let added = changes
        .added
        .iter()
        .copied()
        .chain(changes.updated.iter().map(|&(_, n)| n));
    for n in added {
        let found = &scan.files[n];
        let count = FileEntry::block_count(found.size, block_size);
        let mut entry = FileEntry {
            path: found.path.clone(),
            size: found.size,
            mtime_ns: found.mtime_ns,
            inode: found.inode,
            mode: found.mode,
            uid: found.uid,
            gid: found.gid,
            extents: Vec::new(),
            hashes: vec![[0u8; 16]; count],
            new_blocks: Vec::new(),
        };
        for i in 0..count {
            while used.get(next_free).copied().unwrap_or(false) {
                next_free += 1;
            }
            let pos = next_free as u32;
            mark(&mut used, pos);
            push_position(&mut entry.extents, pos);
            entry.set_new(i, true);
            unsynced.push(pos);
        }
        files.push(entry);
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));

    let end = unsynced.iter().map(|&p| p as usize + 1).max().unwrap_or(0);
    state.positions.grow(end);
    for pos in unsynced {
        state.positions.flags[pos as usize] |= UNSYNCED;
    }
    let old = &state.disks[disk_slot];
    Disk {
        name: old.name.clone(),
        index: old.index,
        uuid: old.uuid.clone(),
        files,
        links: scan.links.clone(),
        hardlinks: scan.hardlinks.clone(),
        dirs: scan.dirs.clone(),
        folders: scan.folders.clone(),
        deleted,
    }
}

fn mark(used: &mut Vec<bool>, pos: u32) {
    let pos = pos as usize;
    if used.len() <= pos {
        used.resize(pos + 1, false);
    }
    used[pos] = true;
}

/// Appends `pos` to the extent list, extending the last run when consecutive.
fn push_position(extents: &mut Vec<Extent>, pos: u32) {
    match extents.last_mut() {
        Some(e) if e.pos + e.len == pos => e.len += 1,
        _ => extents.push(Extent { pos, len: 1 }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str, size: u64, mtime: i64, inode: u64) -> FileEntry {
        FileEntry {
            path: path.into(),
            size,
            mtime_ns: mtime,
            inode,
            ..FileEntry::default()
        }
    }

    fn found(path: &str, size: u64, mtime: i64, inode: u64) -> Found {
        Found {
            path: path.into(),
            size,
            mtime_ns: mtime,
            inode,
            mode: 0o100644,
            uid: 0,
            gid: 0,
        }
    }

    #[test]
    fn compare_classifies_like_snapraid() {
        let old = vec![
            entry("a", 10, 1, 100),    // unchanged
            entry("b", 10, 1, 101),    // updated (size)
            entry("c", 10, 1, 102),    // moved to d/c
            entry("e", 10, 1, 103),    // restored (new inode)
            entry("gone", 10, 1, 104), // removed
        ];
        let new = vec![
            found("a", 10, 1, 100),
            found("b", 11, 1, 101),
            found("d/c", 10, 1, 102),
            found("e", 10, 1, 200),
            found("new", 5, 1, 300),
        ];
        let c = compare(&old, &new);
        assert_eq!(c.unchanged, vec![(0, 0)]);
        assert_eq!(c.updated, vec![(1, 1)]);
        assert_eq!(c.moved, vec![(2, 2)]);
        assert_eq!(c.restored, vec![(3, 3)]);
        assert_eq!(c.added, vec![4]);
        assert_eq!(c.removed, vec![4]);
    }

    #[test]
    fn a_moved_file_with_other_mtime_is_removed_and_added() {
        let c = compare(&[entry("x", 10, 1, 7)], &[found("y", 10, 2, 7)]);
        assert_eq!((c.added, c.removed), (vec![0], vec![0]));
        assert!(c.moved.is_empty());
    }

    #[test]
    fn files_swapped_by_renames_are_read_again_not_given_each_others_hashes() {
        // a and b, same size and mtime, swap names.
        let old = vec![entry("a", 10, 1, 100), entry("b", 10, 1, 101)];
        let new = vec![found("a", 10, 1, 101), found("b", 10, 1, 100)];
        let c = compare(&old, &new);
        assert_eq!(c.updated, vec![(0, 0), (1, 1)]);
        assert!(c.moved.is_empty() && c.restored.is_empty(), "{c:?}");
    }

    #[test]
    fn a_file_renamed_over_another_is_moved_and_the_other_removed() {
        // mv b a: a's old file is gone, b's lives on at a.
        let old = vec![entry("a", 20, 2, 100), entry("b", 10, 1, 101)];
        let c = compare(&old, &[found("a", 10, 1, 101)]);
        assert_eq!(c.moved, vec![(1, 0)]);
        assert_eq!(c.removed, vec![0]);
        assert!(c.updated.is_empty() && c.added.is_empty(), "{c:?}");
    }

    #[test]
    fn a_disk_put_back_from_a_backup_is_restored_unless_an_inode_says_otherwise() {
        let old = vec![
            entry("a", 10, 1, 100),
            entry("b", 10, 1, 101),
            entry("c", 30, 3, 102),
        ];
        // New inodes; c's new inode is a's old one, but c's size differs from a's.
        let new = vec![
            found("a", 10, 1, 500),
            found("b", 10, 1, 100),
            found("c", 30, 3, 101),
        ];
        let c = compare(&old, &new);
        // b's new inode is a's old one with a's size and mtime: ambiguous, read again.
        assert_eq!(c.restored, vec![(0, 0), (2, 2)]);
        assert_eq!(c.updated, vec![(1, 1)]);
        assert!(c.moved.is_empty() && c.removed.is_empty(), "{c:?}");
    }

    #[test]
    fn hard_links_stay_unchanged_and_a_moved_link_is_moved() {
        let old = vec![entry("a", 10, 1, 100), entry("b", 10, 1, 100)];
        let c = compare(&old, &[found("a", 10, 1, 100), found("b", 10, 1, 100)]);
        assert_eq!(c.unchanged, vec![(0, 0), (1, 1)]);
        let c = compare(&old, &[found("a", 10, 1, 100), found("z", 10, 1, 100)]);
        assert_eq!(c.unchanged, vec![(0, 0)]);
        assert_eq!(c.moved, vec![(1, 1)]);
    }

    #[test]
    fn links_and_folders_are_compared_by_path() {
        let link = |p: &str, t: &str| LinkEntry {
            path: p.into(),
            target: t.into(),
        };
        let old = [link("a", "/x"), link("b", "/y"), link("gone", "/z")];
        let new = [link("a", "/x"), link("b", "/moved"), link("new", "/n")];
        let c = EntryChanges::of(&old, &new, |l| l.path.as_str());
        assert_eq!(c.added, ["new"]);
        assert_eq!(c.removed, ["gone"]);
        assert_eq!(c.updated, ["b"]);
        assert!(EntryChanges::of(&old, &old, |l| l.path.as_str()).is_empty());
    }

    fn state_with(files: Vec<FileEntry>, positions: usize) -> State {
        let mut s = State::new(1024, [0; 32], 1);
        s.disks.push(Disk {
            name: "d1".into(),
            files,
            ..Disk::default()
        });
        s.positions.grow(positions);
        s.positions.flags.iter_mut().for_each(|f| *f = 0);
        s
    }

    #[test]
    fn apply_allocates_first_free_positions_and_keeps_deleted_hashes() {
        // "a" holds positions 0..2 (synced), "b" position 2.
        let mut a = entry("a", 2048, 1, 1);
        a.extents = vec![Extent { pos: 0, len: 2 }];
        a.hashes = vec![[1; 16], [2; 16]];
        let mut b = entry("b", 100, 1, 2);
        b.extents = vec![Extent { pos: 2, len: 1 }];
        b.hashes = vec![[3; 16]];
        let mut state = state_with(vec![a, b], 3);
        // "a" is removed, "c" (3 blocks) is added.
        let scan = DiskScan {
            files: vec![found("b", 100, 1, 2), found("c", 3000, 5, 9)],
            ..DiskScan::default()
        };
        let changes = compare(&state.disks[0].files, &scan.files);
        let disk = apply(&mut state, 0, &scan, &changes);
        let c = disk.files.iter().find(|f| f.path == "c").expect("c");
        assert_eq!(c.positions().collect::<Vec<_>>(), vec![0, 1, 3]);
        assert!((0..3).all(|i| c.is_new(i)));
        assert_eq!(
            disk.deleted,
            vec![
                DeletedBlock {
                    pos: 0,
                    hash: [1; 16]
                },
                DeletedBlock {
                    pos: 1,
                    hash: [2; 16]
                }
            ]
        );
        assert_eq!(state.positions.len(), 4);
        assert_eq!(state.positions.flags, vec![UNSYNCED, UNSYNCED, 0, UNSYNCED]);
    }

    #[test]
    fn moved_files_keep_their_blocks_and_need_no_sync() {
        let mut a = entry("a", 1024, 1, 1);
        a.extents = vec![Extent { pos: 0, len: 1 }];
        a.hashes = vec![[9; 16]];
        let mut state = state_with(vec![a], 1);
        let scan = DiskScan {
            files: vec![found("sub/a", 1024, 1, 1)],
            ..DiskScan::default()
        };
        let changes = compare(&state.disks[0].files, &scan.files);
        let disk = apply(&mut state, 0, &scan, &changes);
        assert_eq!(disk.files[0].path, "sub/a");
        assert_eq!(disk.files[0].hashes, vec![[9; 16]]);
        assert_eq!(state.positions.flags, vec![0]);
        assert!(disk.deleted.is_empty());
    }
}
