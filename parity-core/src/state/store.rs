//! Content files on disk: [`save`] writes the state to every configured content path,
//! [`load`] reads them all and keeps the newest valid copy.
//!
//! A copy is only ever replaced by renaming a fully written and fsynced `PATH.tmp`
//! over it, so a crash or a full disk leaves either the old or the new file, never a
//! mix. Loading never writes, and never trusts a copy that fails to decode: damaged
//! and older copies are reported for the caller to warn about, and the next save
//! rewrites them.

use super::codec::{self, CodecError};
use super::model::State;
use std::fmt;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// What [`load`] found.
#[derive(Debug)]
pub struct Loaded {
    /// The valid copy with the highest generation; `None` when no copy exists (a new
    /// array).
    pub state: Option<State>,
    /// Copies that exist but cannot be used, with the reason.
    pub damaged: Vec<(PathBuf, String)>,
    /// Paths where no copy exists.
    pub missing: Vec<PathBuf>,
    /// Valid copies older than the one loaded (a save was interrupted between copies).
    pub stale: Vec<PathBuf>,
}

/// The step of an atomic write that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOp {
    /// Creating `PATH.tmp`.
    Create,
    /// Writing the bytes to `PATH.tmp`.
    Write,
    /// Flushing `PATH.tmp` to disk.
    Sync,
    /// Renaming `PATH.tmp` over `PATH`.
    Rename,
    /// Flushing the folder entry of the renamed file to disk.
    SyncFolder,
}

/// One file that could not be written atomically.
#[derive(Debug)]
pub struct WriteFailure {
    /// The path as configured (the failed step may have been on `PATH.tmp`).
    pub path: PathBuf,
    /// What the file is, for the message: "content file", "metrics file".
    pub what: &'static str,
    /// The step that failed.
    pub op: WriteOp,
    /// The error the step returned.
    pub source: io::Error,
}

impl fmt::Display for WriteFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (path, tmp, e) = (self.path.display(), tmp_path(&self.path), &self.source);
        let (tmp, what) = (tmp.display(), self.what);
        match self.op {
            WriteOp::Create => write!(f, "creating {what} {tmp}: {e}"),
            WriteOp::Write => write!(f, "writing {what} {tmp}: {e}"),
            WriteOp::Sync => write!(f, "syncing {what} {tmp} to disk: {e}"),
            WriteOp::Rename => write!(f, "renaming {what} {tmp} to {path}: {e}"),
            WriteOp::SyncFolder => write!(
                f,
                "syncing the folder of {what} {path} to disk after renaming it: {e}"
            ),
        }
    }
}

/// Why the state could not be saved or loaded.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("no content file is configured: add a `content` line to the config")]
    NoPaths,
    #[error(
        "internal error: refusing to save an inconsistent state ({0}); no content file was written"
    )]
    Invalid(CodecError),
    #[error("{}", write_failures(.failures, .written))]
    Write {
        /// The paths that were not saved, each with the step that failed.
        failures: Vec<WriteFailure>,
        /// The paths that now hold the new state.
        written: Vec<PathBuf>,
    },
    #[error(
        "content file {} was written by a newer lhparity (format version {found}; this one \
         reads up to {}): it may hold the newest state, so it is neither used nor replaced; \
         run the newer lhparity. If no newer lhparity ever ran on this array, the copy is \
         damaged: move it away, and the other copies are used and it is written again",
        path.display(),
        codec::FORMAT_VERSION
    )]
    Newer { path: PathBuf, found: u32 },
    #[error("{}", other_arrays(.copies))]
    OtherArrays {
        /// Every valid copy, grouped by array (copies sharing a hash key together).
        copies: Vec<Vec<CopySummary>>,
    },
    #[error("{}", all_damaged(.details))]
    AllDamaged {
        /// Every existing copy with the reason it cannot be used.
        details: Vec<(PathBuf, String)>,
    },
}

fn write_failures(failures: &[WriteFailure], written: &[PathBuf]) -> String {
    let total = failures.len() + written.len();
    let mut msg = format!(
        "the content file could not be saved to {} of {total} locations",
        failures.len()
    );
    for failure in failures {
        msg += &format!("\n  {failure}");
        if failure.source.raw_os_error() == Some(libc::ENOSPC) {
            msg += "\n  (that disk is full: free space on it, or move this `content` line to a disk with room)";
        }
    }
    if written.is_empty() {
        msg += "\nno copy was saved: the previous content files are unchanged";
    } else {
        msg += "\nsaved to:";
        for path in written {
            msg += &format!(" {}", path.display());
        }
    }
    msg += "\nthe command stopped there; run it again once every content location can be written";
    msg
}

/// What a valid copy holds, to tell the copies of different arrays apart.
#[derive(Debug, Clone)]
pub struct CopySummary {
    pub path: PathBuf,
    pub generation: u64,
    /// The data disks' names, in index order.
    pub disks: Vec<String>,
    pub files: usize,
    /// Unix time of the last sync, 0 = never.
    pub last_sync: u64,
}

impl CopySummary {
    fn of(path: &Path, state: &State) -> CopySummary {
        CopySummary {
            path: path.to_owned(),
            generation: state.generation,
            disks: state.disks.iter().map(|d| d.name.clone()).collect(),
            files: state.disks.iter().map(|d| d.files.len()).sum(),
            last_sync: state.last_sync,
        }
    }
}

fn other_arrays(groups: &[Vec<CopySummary>]) -> String {
    let mut msg = String::from(
        "the content files hold the states of different arrays (each array has a key of its \
         own, made at its first sync), so none of them is used or written:",
    );
    for (n, group) in groups.iter().enumerate() {
        msg += &format!("\n  array {}:", n + 1);
        for copy in group {
            msg += &format!(
                "\n    {}: save {}, disks {}, {} files, last sync {}",
                copy.path.display(),
                copy.generation,
                copy.disks.join(" "),
                copy.files,
                ago(copy.last_sync)
            );
        }
    }
    msg += "\nA copy of another array's content file is at one of this config's `content` paths \
            (a stray backup, or two configs sharing a path). Move away the copies that do not \
            belong to this array (its files and disks tell which) and run the command again.";
    msg
}

/// How long ago the Unix time `t` was, coarsely: "never" for 0.
fn ago(t: u64) -> String {
    if t == 0 {
        return "never".to_string();
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let secs = now.saturating_sub(t);
    match secs {
        0..60 => "just now".to_string(),
        60..3600 => format!("{} minutes ago", secs / 60),
        3600..172_800 => format!("{} hours ago", secs / 3600),
        _ => format!("{} days ago", secs / 86_400),
    }
}

fn all_damaged(details: &[(PathBuf, String)]) -> String {
    let mut msg = String::from("no usable content file:");
    for (path, reason) in details {
        msg += &format!("\n  {}: {reason}", path.display());
    }
    msg += "\nnothing was written. Restore a copy of the content file from a backup to one \
            of these paths and run the command again.";
    msg
}

/// Saves `state` to every path in `paths`: increments the generation, encodes once
/// and replaces each copy atomically. On error, the paths listed as failed keep
/// their previous content (except after a failed folder sync, when the new file is
/// in place but may not survive a crash), and no `.tmp` file is left behind.
pub fn save(state: &mut State, paths: &[PathBuf]) -> Result<(), StoreError> {
    if paths.is_empty() {
        return Err(StoreError::NoPaths);
    }
    // A state that fails this check would be written and then refused by every load.
    codec::validate(state).map_err(StoreError::Invalid)?;
    state.generation = state.generation.saturating_add(1);
    let bytes = codec::encode(state);
    let mut failures = Vec::new();
    let mut written = Vec::new();
    for path in paths {
        match write_atomic(path, "content file", &bytes) {
            Ok(()) => written.push(path.clone()),
            Err(failure) => failures.push(failure),
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(StoreError::Write { failures, written })
    }
}

/// Reads every copy in `paths` and returns the valid one with the highest generation
/// (the first of them in `paths` on a tie), with the copies that are damaged, missing
/// or older. Fails only when copies exist and none is valid.
pub fn load(paths: &[PathBuf]) -> Result<Loaded, StoreError> {
    if paths.is_empty() {
        return Err(StoreError::NoPaths);
    }
    let mut best: Option<State> = None;
    let mut generations = Vec::new();
    // Valid copies by array key, in the order first seen.
    let mut arrays: Vec<([u8; 32], Vec<CopySummary>)> = Vec::new();
    let mut damaged = Vec::new();
    let mut missing = Vec::new();
    for path in paths {
        let bytes = match fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                missing.push(path.clone());
                continue;
            }
            Err(e) => {
                damaged.push((path.clone(), format!("cannot be read: {e}")));
                continue;
            }
        };
        match codec::decode(&bytes) {
            Ok(state) => {
                generations.push((path.clone(), state.generation));
                let summary = CopySummary::of(path, &state);
                match arrays.iter_mut().find(|(key, _)| *key == state.hash_key) {
                    Some((_, copies)) => copies.push(summary),
                    None => arrays.push((state.hash_key, vec![summary])),
                }
                if best
                    .as_ref()
                    .is_none_or(|b| state.generation > b.generation)
                {
                    best = Some(state);
                }
            }
            // A newer program's copy is not damage: an older one must not take the
            // state from another copy and then write over it.
            Err(CodecError::UnsupportedVersion { found }) if found > codec::FORMAT_VERSION => {
                return Err(StoreError::Newer {
                    path: path.clone(),
                    found,
                });
            }
            Err(e) => damaged.push((path.clone(), e.to_string())),
        }
    }
    // The newest copy of another array would replace this one's state at the next
    // save: the user decides which copies belong here.
    if arrays.len() > 1 {
        return Err(StoreError::OtherArrays {
            copies: arrays.into_iter().map(|(_, copies)| copies).collect(),
        });
    }
    let Some(state) = best else {
        if damaged.is_empty() {
            return Ok(Loaded {
                state: None,
                damaged,
                missing,
                stale: Vec::new(),
            });
        }
        return Err(StoreError::AllDamaged { details: damaged });
    };
    let stale = generations
        .into_iter()
        .filter(|&(_, g)| g < state.generation)
        .map(|(path, _)| path)
        .collect();
    Ok(Loaded {
        state: Some(state),
        damaged,
        missing,
        stale,
    })
}

/// `PATH.tmp`, in the same folder so that the rename is atomic.
fn tmp_path(path: &Path) -> PathBuf {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    PathBuf::from(tmp)
}

/// Replaces the file at `path` (a `what`, for messages) with `bytes`: written to
/// `PATH.tmp`, fsynced, renamed over `PATH`, and the folder fsynced, so that a reader
/// or a crash sees the old file or the new one, never a mix.
pub fn write_atomic(path: &Path, what: &'static str, bytes: &[u8]) -> Result<(), WriteFailure> {
    let fail = |op| {
        move |source| WriteFailure {
            path: path.to_owned(),
            what,
            op,
            source,
        }
    };
    let tmp = tmp_path(path);
    let mut file = File::create(&tmp).map_err(fail(WriteOp::Create))?;
    let replaced = file
        .write_all(bytes)
        .map_err(fail(WriteOp::Write))
        .and_then(|()| file.sync_all().map_err(fail(WriteOp::Sync)))
        .and_then(|()| fs::rename(&tmp, path).map_err(fail(WriteOp::Rename)));
    drop(file);
    if let Err(failure) = replaced {
        // Best effort: the failure to report is the one above.
        let _ = fs::remove_file(&tmp);
        return Err(failure);
    }
    // The rename is durable only once the folder's entry is on disk.
    sync_folder_of(path).map_err(fail(WriteOp::SyncFolder))
}

/// Flushes the folder holding `path`, so that a name made or renamed there
/// survives a power cut.
pub fn sync_folder_of(path: &Path) -> io::Result<()> {
    let folder = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(folder).and_then(|dir| dir.sync_all())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::fixtures::sample;
    use tempfile::TempDir;

    #[test]
    fn a_full_disk_is_named_with_the_way_out() {
        let failures = [WriteFailure {
            path: PathBuf::from("/d2/lhparity.content"),
            what: "content file",
            op: WriteOp::Write,
            source: io::Error::from_raw_os_error(libc::ENOSPC),
        }];
        let written = [PathBuf::from("/d1/lhparity.content")];
        let msg = write_failures(&failures, &written);
        assert!(
            msg.starts_with("the content file could not be saved to 1 of 2 locations"),
            "{msg}"
        );
        assert!(
            msg.contains("writing content file /d2/lhparity.content.tmp"),
            "{msg}"
        );
        assert!(
            msg.contains("that disk is full: free space on it, or move this `content` line"),
            "{msg}"
        );
        assert!(msg.contains("saved to: /d1/lhparity.content"), "{msg}");
        assert!(
            msg.ends_with("run it again once every content location can be written"),
            "{msg}"
        );
    }

    fn three_copies() -> (TempDir, Vec<PathBuf>) {
        let dir = tempfile::tempdir().unwrap();
        let paths = ["d1", "d2", "d3"]
            .iter()
            .map(|d| {
                fs::create_dir(dir.path().join(d)).unwrap();
                dir.path().join(d).join("lhparity.content")
            })
            .collect();
        (dir, paths)
    }

    /// Every file under `dir`, to check that no `.tmp` is left.
    fn files(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                out.extend(files(&path));
            } else {
                out.push(path);
            }
        }
        out.sort();
        out
    }

    #[test]
    fn a_new_array_has_no_state() {
        let (_dir, paths) = three_copies();
        let loaded = load(&paths).unwrap();
        assert!(loaded.state.is_none());
        assert_eq!(loaded.missing, paths);
        assert!(loaded.damaged.is_empty() && loaded.stale.is_empty());
    }

    #[test]
    fn save_writes_every_copy_and_load_reads_it_back() {
        let (dir, paths) = three_copies();
        let mut state = sample();
        save(&mut state, &paths).unwrap();
        assert_eq!(state.generation, sample().generation + 1);
        assert_eq!(files(dir.path()), paths);
        let loaded = load(&paths).unwrap();
        assert_eq!(loaded.state, Some(state));
        assert!(loaded.damaged.is_empty() && loaded.missing.is_empty() && loaded.stale.is_empty());
    }

    #[test]
    fn a_copy_of_a_newer_format_stops_the_load_and_is_left_alone() {
        let (_dir, paths) = three_copies();
        let mut state = sample();
        save(&mut state, &paths).unwrap();
        let mut newer = fs::read(&paths[1]).unwrap();
        newer[8..12].copy_from_slice(&(codec::FORMAT_VERSION + 1).to_le_bytes());
        fs::write(&paths[1], &newer).unwrap();
        let err = load(&paths).unwrap_err();
        assert!(
            matches!(&err, StoreError::Newer { path, found } if *path == paths[1] && *found == codec::FORMAT_VERSION + 1),
            "{err}"
        );
        assert!(
            err.to_string().contains("written by a newer lhparity")
                && err
                    .to_string()
                    .contains("the copy is damaged: move it away"),
            "{err}"
        );
        assert_eq!(fs::read(&paths[1]).unwrap(), newer);
    }

    #[test]
    fn a_damaged_copy_is_reported_and_a_valid_one_loaded() {
        let (_dir, paths) = three_copies();
        let mut state = sample();
        save(&mut state, &paths).unwrap();
        let mut bytes = fs::read(&paths[0]).unwrap();
        bytes[100] ^= 4;
        fs::write(&paths[0], bytes).unwrap();
        fs::remove_file(&paths[2]).unwrap();

        let loaded = load(&paths).unwrap();
        assert_eq!(loaded.state, Some(state));
        assert_eq!(loaded.damaged.len(), 1);
        assert_eq!(loaded.damaged[0].0, paths[0]);
        assert!(loaded.damaged[0].1.contains("checksum mismatch"));
        assert_eq!(loaded.missing, [paths[2].clone()]);
    }

    #[test]
    fn the_newest_copy_wins_and_older_ones_are_stale() {
        let (_dir, paths) = three_copies();
        let mut state = sample();
        save(&mut state, &paths).unwrap();
        let old = fs::read(&paths[1]).unwrap();
        state.last_sync += 1;
        save(&mut state, &paths).unwrap();
        // As if a crash had stopped the second save before it reached this copy.
        fs::write(&paths[1], old).unwrap();

        let loaded = load(&paths).unwrap();
        assert_eq!(loaded.state, Some(state.clone()));
        assert_eq!(loaded.stale, [paths[1].clone()]);
        assert!(loaded.damaged.is_empty());

        // The next save brings every copy to the same generation.
        save(&mut state, &paths).unwrap();
        assert!(load(&paths).unwrap().stale.is_empty());
    }

    #[test]
    fn all_copies_damaged_is_an_error_that_changes_nothing() {
        let (_dir, paths) = three_copies();
        save(&mut sample(), &paths).unwrap();
        fs::write(&paths[0], b"").unwrap();
        fs::write(&paths[1], b"LHPSTATE garbage").unwrap();
        let mut bytes = fs::read(&paths[2]).unwrap();
        bytes.push(0);
        fs::write(&paths[2], &bytes).unwrap();
        let before: Vec<Vec<u8>> = paths.iter().map(|p| fs::read(p).unwrap()).collect();

        let Err(StoreError::AllDamaged { details }) = load(&paths) else {
            panic!("every copy is damaged");
        };
        let named: Vec<&PathBuf> = details.iter().map(|(p, _)| p).collect();
        assert_eq!(named, paths.iter().collect::<Vec<_>>());
        assert!(details[2]
            .1
            .contains("1 unexpected bytes after its checksum"));
        let msg = StoreError::AllDamaged { details }.to_string();
        assert!(msg.contains(&paths[1].display().to_string()));
        assert!(msg.contains("backup"));

        let after: Vec<Vec<u8>> = paths.iter().map(|p| fs::read(p).unwrap()).collect();
        assert_eq!(before, after);
    }

    #[test]
    fn copies_of_different_arrays_are_refused_and_left_alone() {
        let (_dir, paths) = three_copies();
        let mut ours = sample();
        save(&mut ours, &paths[..2]).unwrap();
        // Another array's copy, saved more often than ours.
        let mut theirs = sample();
        theirs.hash_key[0] ^= 1;
        theirs.generation = 40;
        save(&mut theirs, &paths[2..]).unwrap();
        let before: Vec<Vec<u8>> = paths.iter().map(|p| fs::read(p).unwrap()).collect();

        let err = load(&paths).unwrap_err();
        let StoreError::OtherArrays { copies } = &err else {
            panic!("{err}");
        };
        let groups: Vec<Vec<&PathBuf>> = copies
            .iter()
            .map(|g| g.iter().map(|c| &c.path).collect())
            .collect();
        assert_eq!(groups, vec![vec![&paths[0], &paths[1]], vec![&paths[2]]]);
        assert_eq!(copies[1][0].generation, 41);
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("{}: save 41, disks ", paths[2].display()))
                && msg.contains("Move away the copies that do not belong"),
            "{msg}"
        );
        let after: Vec<Vec<u8>> = paths.iter().map(|p| fs::read(p).unwrap()).collect();
        assert_eq!(before, after);
    }

    #[test]
    fn an_unreadable_copy_is_damaged() {
        let (_dir, paths) = three_copies();
        save(&mut sample(), &paths[1..]).unwrap();
        fs::create_dir(&paths[0]).unwrap();
        let loaded = load(&paths).unwrap();
        assert!(loaded.state.is_some());
        assert_eq!(loaded.damaged[0].0, paths[0]);
        assert!(loaded.damaged[0].1.starts_with("cannot be read"));
    }

    #[test]
    fn a_failed_copy_is_named_and_the_others_are_written() {
        let (dir, mut paths) = three_copies();
        paths[1] = dir.path().join("not-mounted").join("lhparity.content");
        let mut state = sample();
        let Err(err) = save(&mut state, &paths) else {
            panic!("the folder does not exist");
        };
        let msg = err.to_string();
        let StoreError::Write { failures, written } = err else {
            panic!("{err:?}");
        };
        assert_eq!(failures.len(), 1);
        assert_eq!(failures[0].path, paths[1]);
        assert_eq!(failures[0].op, WriteOp::Create);
        assert_eq!(written, [paths[0].clone(), paths[2].clone()]);
        let tmp = format!("{}.tmp", paths[1].display());
        assert!(
            msg.contains(&format!("creating content file {tmp}: ")),
            "{msg}"
        );
        assert!(msg.contains("1 of 3 locations"), "{msg}");
        assert_eq!(files(dir.path()), [paths[0].clone(), paths[2].clone()]);
        assert_eq!(load(&paths).unwrap().state, Some(state));
    }

    #[test]
    fn a_failed_rename_keeps_the_old_file_and_removes_the_tmp() {
        let (dir, paths) = three_copies();
        save(&mut sample(), &paths).unwrap();
        let old = fs::read(&paths[0]).unwrap();
        // A non-empty folder where the second copy goes: the rename over it fails.
        fs::remove_file(&paths[1]).unwrap();
        fs::create_dir(&paths[1]).unwrap();
        fs::write(paths[1].join("keep"), b"x").unwrap();

        let mut state = sample();
        state.generation = 100;
        let Err(StoreError::Write { failures, written }) = save(&mut state, &paths) else {
            panic!("the rename must fail");
        };
        assert_eq!(failures[0].op, WriteOp::Rename);
        assert_eq!(written.len(), 2);
        assert!(failures[0].to_string().starts_with(&format!(
            "renaming content file {}.tmp to {}: ",
            paths[1].display(),
            paths[1].display()
        )));
        assert!(!tmp_path(&paths[1]).exists());
        assert_ne!(fs::read(&paths[0]).unwrap(), old);
        let mut expected = vec![paths[0].clone(), paths[1].join("keep"), paths[2].clone()];
        expected.sort();
        assert_eq!(files(dir.path()), expected);
    }

    #[test]
    fn an_inconsistent_state_is_not_written() {
        let (dir, paths) = three_copies();
        let mut state = sample();
        state.block_size = 0;
        assert!(matches!(
            save(&mut state, &paths),
            Err(StoreError::Invalid(CodecError::BlockSize { block_size: 0 }))
        ));
        assert_eq!(state.generation, sample().generation);
        assert!(files(dir.path()).is_empty());
    }

    #[test]
    fn no_content_path_is_an_error() {
        assert!(matches!(save(&mut sample(), &[]), Err(StoreError::NoPaths)));
        assert!(matches!(load(&[]), Err(StoreError::NoPaths)));
    }

    #[test]
    fn the_tmp_file_sits_beside_the_content_file() {
        assert_eq!(tmp_path(Path::new("content")), Path::new("content.tmp"));
        assert_eq!(
            tmp_path(Path::new("/mnt/d 1/lhparity.content")),
            Path::new("/mnt/d 1/lhparity.content.tmp")
        );
    }
}
