//! `fix -i DIR`: files outside the array that may be copies of lost ones (a backup,
//! what was saved off a failing disk), used as SnapRAID's `--import` uses them. A
//! file is a candidate for a lost file when its size and modification time (to the
//! nanosecond) are the lost file's; its name does not matter. `fix` then checks
//! each block of a candidate against the lost file's hash and uses only the blocks
//! that match, so a wrong or damaged candidate costs time, never bytes.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::state::model::mtime_ns;

/// A file's identity for import: its size and mtime in nanoseconds.
pub(crate) type Stamp = (u64, i64);

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
        for dir in dirs {
            let top = open_folder(dir)?;
            if !wanted.is_empty() {
                imports.walk(top, dir, wanted, warnings);
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
            } else if meta.is_file() {
                let stamp = (meta.len(), mtime_ns(meta.mtime(), meta.mtime_nsec()));
                if wanted.contains(&stamp) {
                    self.by_stamp.entry(stamp).or_default().push(entry.path());
                }
            }
        }
        for sub in below {
            match fs::read_dir(&sub) {
                Ok(entries) => self.walk(entries, &sub, wanted, warnings),
                Err(e) => warnings.push(format!(
                    "import folder {}: {e}; nothing below it was used",
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
        let m = fs::metadata(path).unwrap();
        (m.len(), mtime_ns(m.mtime(), m.mtime_nsec()))
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
