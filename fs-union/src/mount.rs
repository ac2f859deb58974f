//! Mounting a pool and serving it in the foreground until it is unmounted.
//!
//! As root the mount is made here with mount(2) on an fd of `/dev/fuse` (type
//! `fuse.lhfs`, the fsname as source, `default_permissions` and `allow_other`), and
//! the fd is handed to a fuser session served by several threads, each with its own
//! cloned fd. SIGTERM and SIGINT are blocked before any thread starts; a signal thread
//! waits for them and detaches the mount (`umount2(MNT_DETACH)`), which ends the
//! session once nothing uses the pool any more. An external `umount` ends it the same
//! way. The session is never left mounted after the process stops serving it.
//!
//! This module owns the mount's lifetime only: options and branches arrive parsed and
//! checked, and nothing here touches the branches.

use std::ffi::CString;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use fuser::{Config, Session, SessionACL};
use thiserror::Error;

use crate::branch::{check_mountpoint, parse_branches, Branch, BranchError};
use crate::fuse::UnionFs;
use crate::glob::FsGlob;
use crate::options::{OptionError, Options};
use crate::union::Union;

/// Why a pool could not be mounted or served.
#[derive(Debug, Error)]
pub enum MountError {
    /// A refused mount option.
    #[error(transparent)]
    Options(#[from] OptionError),
    /// A refused branch list.
    #[error(transparent)]
    Branches(#[from] BranchError),
    /// Neither the command line nor a config file named the branches.
    #[error("no branches given; pass BRANCHES (e.g. /mnt/disk*) before the mountpoint")]
    NoBranches,
    /// The mountpoint is missing or not a directory.
    #[error("mountpoint `{}`: {source}; create the directory first", path.display())]
    Mountpoint {
        /// The mountpoint as given.
        path: PathBuf,
        /// Why it cannot be used.
        #[source]
        source: io::Error,
    },
    /// `/dev/fuse` could not be opened.
    #[error("cannot open /dev/fuse: {0}; is the fuse module loaded (modprobe fuse)?")]
    Device(#[source] io::Error),
    /// mount(2) refused.
    #[error("cannot mount on `{mountpoint}`: {source}{hint}")]
    Mount {
        /// The mountpoint.
        mountpoint: PathBuf,
        /// The refusal.
        #[source]
        source: io::Error,
        /// What to do about it.
        hint: &'static str,
    },
    /// The FUSE session failed.
    #[error("serving `{mountpoint}` failed: {source}")]
    Session {
        /// The mountpoint.
        mountpoint: PathBuf,
        /// The failure.
        #[source]
        source: io::Error,
    },
}

/// A checked mount: what [`mount_foreground`] needs.
#[derive(Debug)]
pub struct Plan {
    /// The branches, wildcards expanded.
    pub branches: Vec<Branch>,
    /// The mountpoint, resolved.
    pub mountpoint: PathBuf,
    /// The options.
    pub options: Options,
}

impl Plan {
    /// Checks a command line: the branch list (`None` when a `config=` file names it
    /// with `branches=`), the mountpoint and every `-o` text in order. Nothing is
    /// mounted; every refusal names the option, branch or path at fault.
    pub fn new(
        branches: Option<&str>,
        mountpoint: &Path,
        option_texts: &[String],
    ) -> Result<Plan, MountError> {
        let mut options = Options::default();
        for text in option_texts {
            options.apply(text)?;
        }
        let list = branches
            .map(str::to_owned)
            .or_else(|| options.branches.clone())
            .ok_or(MountError::NoBranches)?;
        let branches = parse_branches(&list, &FsGlob)?;
        if branches.is_empty() {
            return Err(MountError::NoBranches);
        }
        let mountpoint_error = |source| MountError::Mountpoint {
            path: mountpoint.to_path_buf(),
            source,
        };
        let resolved = mountpoint.canonicalize().map_err(mountpoint_error)?;
        if !resolved.is_dir() {
            return Err(mountpoint_error(io::Error::from_raw_os_error(
                libc::ENOTDIR,
            )));
        }
        // Compare resolved paths, so a symlink cannot hide a branch inside the pool.
        let resolved_branches: Vec<Branch> = branches
            .iter()
            .map(|b| Branch {
                path: b.path.canonicalize().unwrap_or_else(|_| b.path.clone()),
                ..b.clone()
            })
            .collect();
        check_mountpoint(&resolved_branches, &resolved)?;
        Ok(Plan {
            branches,
            mountpoint: resolved,
            options,
        })
    }
}

/// The name `df` and `mount` show: the branch paths without their common leading
/// directories, joined by `:`, as mergerfs does.
pub fn default_fsname(branches: &[Branch]) -> String {
    let paths: Vec<&Path> = branches.iter().map(|b| b.path.as_path()).collect();
    let Some(first) = paths.first() else {
        return "lhfs".to_owned();
    };
    let mut common: Vec<_> = first.components().collect();
    for path in &paths[1..] {
        let shared = common
            .iter()
            .zip(path.components())
            .take_while(|(a, b)| **a == *b)
            .count();
        common.truncate(shared);
    }
    // With one branch, keep its last name rather than nothing.
    if paths.len() == 1 {
        common.pop();
    }
    let prefix: PathBuf = common.iter().collect();
    let names: Vec<String> = paths
        .iter()
        .map(|p| p.strip_prefix(&prefix).unwrap_or(p).display().to_string())
        .collect();
    // The mount source is a comma-separated option in places; keep it one word.
    names.join(":").replace([',', ' '], "_")
}

/// How many threads serve requests: `read-thread-count` if positive, the cores
/// divided by |n| if negative, and for 0 one per core, at least 4 and at most 8.
pub fn thread_count(read_thread_count: i64) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    match read_thread_count {
        0 => cores.clamp(4, 8),
        n if n > 0 => usize::try_from(n).unwrap_or(1),
        n => (cores / usize::try_from(n.unsigned_abs()).unwrap_or(1)).max(1),
    }
}

fn cstring(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// Blocks SIGTERM and SIGINT in this thread and in every thread started after it.
fn block_signals() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data initialised by sigemptyset before use; the
    // calls only change this thread's signal mask.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

/// Detaches the mount at `mountpoint`; it goes away when nothing uses it any more.
fn detach(mountpoint: &CString) {
    // SAFETY: the path is NUL-terminated; failure (not mounted) changes nothing.
    unsafe { libc::umount2(mountpoint.as_ptr(), libc::MNT_DETACH) };
}

/// Detaches the mount when serving ends in an error, so no dead mount stays behind.
struct DetachOnError {
    mountpoint: CString,
    armed: bool,
}

impl Drop for DetachOnError {
    fn drop(&mut self) {
        if self.armed {
            detach(&self.mountpoint);
        }
    }
}

/// Mounts the pool of `branches` at `mountpoint` and serves it until it is
/// unmounted (externally, or after SIGTERM/SIGINT). Needs root.
pub fn mount_foreground(
    branches: &[Branch],
    mountpoint: &Path,
    options: Options,
) -> Result<(), MountError> {
    let mount_error = |source: io::Error| {
        let hint = match source.raw_os_error() {
            Some(libc::EPERM) => "; mounting needs root",
            Some(libc::ENOENT | libc::ENOTDIR) => "; the mountpoint must be an existing directory",
            _ => "",
        };
        MountError::Mount {
            mountpoint: mountpoint.to_path_buf(),
            source,
            hint,
        }
    };
    let target = cstring(mountpoint).map_err(mount_error)?;
    let signals = block_signals();
    // Files are made with the caller's mode as sent, which already lost the caller's
    // umask; the daemon's own must not cut it again.
    // SAFETY: umask cannot fail.
    unsafe { libc::umask(0) };

    // SAFETY: the path is a NUL-terminated literal.
    let fd = unsafe { libc::open(c"/dev/fuse".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(MountError::Device(io::Error::last_os_error()));
    }
    // SAFETY: a successful open returns a new fd that nothing else owns.
    let device = unsafe { OwnedFd::from_raw_fd(fd) };

    let fsname = options
        .fsname
        .clone()
        .unwrap_or_else(|| default_fsname(branches));
    let source = CString::new(fsname.replace('\0', "")).unwrap_or_default();
    // SAFETY: getuid and getgid have no failure mode.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let data = format!(
        "fd={fd},rootmode=40000,user_id={uid},group_id={gid},default_permissions,allow_other"
    );
    let data = CString::new(data).unwrap_or_default();
    // SAFETY: every pointer is a NUL-terminated string alive during the call.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            c"fuse.lhfs".as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV,
            data.as_ptr().cast(),
        )
    };
    if rc < 0 {
        return Err(mount_error(io::Error::last_os_error()));
    }
    let mut guard = DetachOnError {
        mountpoint: target.clone(),
        armed: true,
    };

    // The signal thread starts after the mask is set, like every other thread.
    let signal_target = target.clone();
    std::thread::Builder::new()
        .name("lhfs-signals".into())
        .spawn(move || loop {
            let mut signal = 0;
            // SAFETY: `signals` is a valid set and `signal` receives the number.
            if unsafe { libc::sigwait(&signals, &mut signal) } == 0 {
                detach(&signal_target);
            }
        })
        .map_err(|source| MountError::Session {
            mountpoint: mountpoint.to_path_buf(),
            source,
        })?;

    let mut config = Config::default();
    config.n_threads = Some(thread_count(options.read_thread_count));
    config.clone_fd = true;
    let mut options = options;
    options.mountpoint = Some(mountpoint.to_path_buf());
    let union = Union::new(branches, Arc::new(options));
    let fs = UnionFs::new(Arc::new(union));
    let session_error = |source| MountError::Session {
        mountpoint: mountpoint.to_path_buf(),
        source,
    };
    let notifier = fs.notifier_slot();
    let session = Session::from_fd(fs, device, SessionACL::All, config).map_err(session_error)?;
    let _ = notifier.set(session.notifier());
    match session.run() {
        // A detached mount that was still in use ends with an aborted connection
        // once its last user leaves: that is a clean end too.
        Err(e) if e.raw_os_error() == Some(libc::ECONNABORTED) => {}
        other => other.map_err(session_error)?,
    }
    // The kernel ended the session: the mount is gone already.
    guard.armed = false;
    Ok(())
}
