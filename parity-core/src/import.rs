//! `fix -i DIR`: files outside the array that may be copies of lost ones (a backup,
//! what was saved off a failing disk), used as SnapRAID's `--import` uses them. A
//! file is a candidate for a lost file when its size and modification time (to the
//! nanosecond) are the lost file's; its name does not matter. `fix` then checks
//! each block of a candidate against the lost file's hash and uses only the blocks
//! that match, so a wrong or damaged candidate costs time, never bytes.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::hash::block_hash;
use crate::state::model::{mtime_ns, Hash};

/// A file's identity for import: its size and mtime in nanoseconds.
pub(crate) type Stamp = (u64, i64);

/// The stamp of a file with this metadata.
fn stamp(meta: &fs::Metadata) -> Stamp {
    (meta.len(), mtime_ns(meta.mtime(), meta.mtime_nsec()))
}

/// The files found in the import folders, by stamp, each list in path order.
#[derive(Debug, Default)]
pub(crate) struct Imports {
    by_stamp: HashMap<Stamp, Vec<PathBuf>>,
}

impl Imports {
    /// Walks `dirs` and keeps the regular files whose stamp is `wanted`. Symbolic
    /// links are neither followed nor taken, and other file systems mounted below
    /// are walked like the rest. A folder that cannot be read is named in
    /// `warnings` and skipped; a folder given that cannot be read at all is an
    /// error naming it.
    pub(crate) fn find(
        dirs: &[PathBuf],
        wanted: &HashSet<Stamp>,
        warnings: &mut Vec<String>,
    ) -> Result<Imports, String> {
        let mut imports = Imports::default();
        // A folder given twice (or as `dir` and `./dir/`) is walked once.
        let mut walked: HashSet<PathBuf> = HashSet::new();
        for dir in dirs {
            let top = open_folder(dir)?;
            let dir = fs::canonicalize(dir).unwrap_or_else(|_| dir.clone());
            if !wanted.is_empty() && walked.insert(dir.clone()) {
                imports.walk(top, &dir, wanted, warnings);
            }
        }
        for paths in imports.by_stamp.values_mut() {
            paths.sort();
            paths.dedup();
        }
        Ok(imports)
    }

    fn walk(
        &mut self,
        entries: fs::ReadDir,
        dir: &Path,
        wanted: &HashSet<Stamp>,
        warnings: &mut Vec<String>,
    ) {
        let mut below = Vec::new();
        for entry in entries {
            let entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    warnings.push(format!(
                        "import folder {}: {e}; what could not be listed there was not used",
                        crate::name::shown_path(dir)
                    ));
                    break;
                }
            };
            // `DirEntry::metadata` does not follow a symbolic link.
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                below.push(entry.path());
            } else if meta.is_file() && wanted.contains(&stamp(&meta)) {
                self.by_stamp
                    .entry(stamp(&meta))
                    .or_default()
                    .push(entry.path());
            }
        }
        for sub in below {
            match fs::read_dir(&sub) {
                Ok(entries) => self.walk(entries, &sub, wanted, warnings),
                Err(e) => warnings.push(format!(
                    "import folder {}: {e}; nothing below it was used: make it readable and run the fix again if copies are there",
                    crate::name::shown_path(&sub)
                )),
            }
        }
    }

    /// The files with this stamp, in path order.
    pub(crate) fn candidates(&self, stamp: Stamp) -> &[PathBuf] {
        self.by_stamp.get(&stamp).map_or(&[], Vec::as_slice)
    }
}

/// Opens a candidate to read it: a symbolic link put in its place since the walk is
/// not followed, and a FIFO does not block (the callers then find it no regular
/// file).
pub(crate) fn open(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
}

/// The hash of each block of the file at `path` (`block_size` bytes each), `None`
/// for a block that cannot be read; `None` for the whole file when it cannot be
/// opened or is no longer a regular file of that stamp.
pub(crate) fn block_hashes(
    path: &Path,
    stamp: Stamp,
    key: &[u8; 32],
    block_size: usize,
) -> Option<Vec<Option<Hash>>> {
    let file = open(path).ok()?;
    let meta = file.metadata().ok()?;
    if !meta.is_file() || self::stamp(&meta) != stamp {
        return None;
    }
    let size = stamp.0;
    let mut buf = vec![0u8; block_size];
    let blocks = size.div_ceil(block_size as u64);
    Some(
        (0..blocks)
            .map(|b| {
                let offset = b * block_size as u64;
                let len = (size - offset).min(block_size as u64) as usize;
                file.read_exact_at(&mut buf[..len], offset)
                    .ok()
                    .map(|()| block_hash(key, &buf[..len]))
            })
            .collect(),
    )
}

/// The blocks of `wanted` that a candidate with these block hashes lacks: those
/// whose hash is not `expected`'s (or that it could not read).
pub(crate) fn lacking(
    have: Option<&[Option<Hash>]>,
    expected: &[Hash],
    wanted: &[usize],
) -> Vec<usize> {
    wanted
        .iter()
        .copied()
        .filter(|&b| have.and_then(|h| h.get(b)).copied().flatten() != expected.get(b).copied())
        .collect()
}

/// Fails, naming the folder, unless every folder of `dirs` can be listed: checked
/// before a fix starts its work.
pub(crate) fn check_folders(dirs: &[PathBuf]) -> Result<(), String> {
    dirs.iter().try_for_each(|dir| open_folder(dir).map(drop))
}

fn open_folder(dir: &Path) -> Result<fs::ReadDir, String> {
    fs::read_dir(dir).map_err(|e| {
        format!(
            "import folder {}: {e}; give a folder that can be read (`fix -i DIR`)",
            crate::name::shown_path(dir)
        )
    })
}

/// Of the candidates' damaged block counts (in candidate order), the index of the
/// one to use: the fewest damaged blocks, the first of equals; `None` when every
/// candidate has all its blocks damaged (it would bring nothing).
pub(crate) fn best(damaged: &[usize], blocks: usize) -> Option<usize> {
    damaged
        .iter()
        .enumerate()
        .filter(|&(_, &d)| d < blocks)
        .min_by_key(|&(i, &d)| (d, i))
        .map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp_of(path: &Path) -> Stamp {
        stamp(&fs::metadata(path).unwrap())
    }

    #[test]
    fn a_candidate_lacks_the_blocks_whose_hash_differs_or_that_it_could_not_read() {
        let (a, b, c) = ([1u8; 16], [2u8; 16], [3u8; 16]);
        let expected = [a, b, c];
        let all = [0, 1, 2];
        assert_eq!(
            lacking(Some(&[Some(a), Some(b), Some(c)]), &expected, &all),
            Vec::<usize>::new()
        );
        assert_eq!(
            lacking(Some(&[Some(a), None, Some(b)]), &expected, &all),
            vec![1, 2]
        );
        assert_eq!(
            lacking(Some(&[Some(a), None, Some(b)]), &expected, &[0, 2]),
            vec![2]
        );
        // Shorter than expected, or not readable at all.
        assert_eq!(lacking(Some(&[Some(a)]), &expected, &all), vec![1, 2]);
        assert_eq!(lacking(None, &expected, &all), vec![0, 1, 2]);
    }

    #[test]
    fn block_hashes_are_read_per_block_and_only_of_a_file_with_the_stamp() {
        let root = tempfile::tempdir().unwrap();
        let path = root.path().join("f");
        let bytes: Vec<u8> = (0..300u32).map(|i| (i * 7) as u8).collect();
        fs::write(&path, &bytes).unwrap();
        let key = [9u8; 32];
        let stamp = stamp_of(&path);
        let hashes = block_hashes(&path, stamp, &key, 128).unwrap();
        let want: Vec<Option<Hash>> = bytes
            .chunks(128)
            .map(|c| Some(block_hash(&key, c)))
            .collect();
        assert_eq!(hashes, want);
        assert_eq!(block_hashes(&path, (stamp.0, stamp.1 + 1), &key, 128), None);
        assert_eq!(
            block_hashes(&root.path().join("gone"), stamp, &key, 128),
            None
        );
    }

    #[test]
    fn a_folder_given_twice_is_walked_once() {
        let root = tempfile::tempdir().unwrap();
        let a = root.path().join("a");
        fs::create_dir(&a).unwrap();
        fs::write(a.join("one"), b"1").unwrap();
        let one = stamp_of(&a.join("one"));
        let mut warnings = Vec::new();
        let twice = [a.clone(), root.path().join("./a/")];
        let found = Imports::find(&twice, &[one].into(), &mut warnings).unwrap();
        assert_eq!(found.candidates(one).len(), 1);
    }

    #[test]
    fn the_fewest_damaged_blocks_win_and_a_useless_candidate_is_none() {
        assert_eq!(best(&[], 4), None);
        assert_eq!(best(&[4, 4], 4), None);
        assert_eq!(best(&[2, 0, 0], 4), Some(1));
        assert_eq!(best(&[3, 1, 4], 4), Some(1));
        assert_eq!(best(&[3], 4), Some(0));
    }

    #[test]
    fn files_are_found_by_size_and_mtime_below_every_folder_and_links_are_not() {
        let root = tempfile::tempdir().unwrap();
        let a = root.path().join("a");
        let deep = a.join("x/y");
        fs::create_dir_all(&deep).unwrap();
        fs::write(deep.join("one"), b"12345").unwrap();
        fs::write(a.join("other"), b"123456").unwrap();
        let one = stamp_of(&deep.join("one"));
        std::os::unix::fs::symlink(deep.join("one"), a.join("link")).unwrap();
        std::os::unix::fs::symlink(&deep, a.join("dirlink")).unwrap();
        let b = root.path().join("b");
        fs::create_dir(&b).unwrap();
        fs::write(b.join("same"), b"abcde").unwrap();
        let same = b.join("same");
        let f = fs::File::options().write(true).open(&same).unwrap();
        f.set_modified(fs::metadata(deep.join("one")).unwrap().modified().unwrap())
            .unwrap();
        drop(f);
        assert_eq!(stamp_of(&same), one);

        let wanted: HashSet<Stamp> = [one].into();
        let mut warnings = Vec::new();
        let found = Imports::find(&[a.clone(), b.clone()], &wanted, &mut warnings).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(found.candidates(one), &[deep.join("one"), same]);
        assert!(found.candidates(stamp_of(&a.join("other"))).is_empty());

        let missing = root.path().join("nope");
        let err =
            Imports::find(std::slice::from_ref(&missing), &wanted, &mut warnings).unwrap_err();
        assert!(err.contains(&missing.display().to_string()), "{err}");
        assert!(err.contains("No such file"), "{err}");
    }
}
