//! One command at a time per array.
//!
//! Commands that write the state or the parity (sync, scrub, fix) and `check`,
//! which reads parity that a sync would be rewriting, take an exclusive lock on
//! `CONTENT.lock` next to the first content file, as SnapRAID does. A second such
//! command on the same array fails at once instead of saving a state over the
//! other's. The lock is `flock(2)`: the kernel drops it when the process ends, so a
//! killed command never leaves the array locked.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use crate::config::Config;

/// Held for as long as the command runs.
#[derive(Debug)]
pub struct ArrayLock {
    _file: File,
    pub path: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "another lhparity command is running on this array (it holds {}); wait for it to finish and run this one again",
        path.display()
    )]
    Busy { path: PathBuf },
    #[error("cannot make the lock file {}: {source}; check that the disk of the first content file is mounted and writable", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the config has no content file, which the lock lives next to")]
    NoContent,
}

impl ArrayLock {
    /// Takes the array's lock, or says who holds it.
    pub fn acquire(config: &Config) -> Result<ArrayLock, LockError> {
        let first = config.content.first().ok_or(LockError::NoContent)?;
        Self::at(&lock_path(&first.path))
    }

    /// Takes the lock at `path` (made if missing).
    pub fn at(path: &Path) -> Result<ArrayLock, LockError> {
        let io = |source| LockError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(io)?;
        // SAFETY: flock on a descriptor we own; no memory is passed.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
                return Err(LockError::Busy {
                    path: path.to_path_buf(),
                });
            }
            return Err(io(e));
        }
        Ok(ArrayLock {
            _file: file,
            path: path.to_path_buf(),
        })
    }
}

/// `CONTENT.lock`.
pub fn lock_path(content: &Path) -> PathBuf {
    let mut s = content.as_os_str().to_owned();
    s.push(".lock");
    PathBuf::from(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = lock_path(&dir.path().join("content"));
        let first = ArrayLock::at(&path).unwrap();
        let err = ArrayLock::at(&path).unwrap_err().to_string();
        assert!(
            err.contains("another lhparity command is running") && err.contains("content.lock"),
            "{err}"
        );
        drop(first);
        assert!(ArrayLock::at(&path).is_ok());
    }

    #[test]
    fn a_lock_in_a_missing_folder_names_it() {
        let err = ArrayLock::at(Path::new("/nonexistent-lhparity/content.lock"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent-lhparity/content.lock"), "{err}");
    }
}
