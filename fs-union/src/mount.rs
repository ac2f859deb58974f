//! Mounting a pool and serving it until it is unmounted, in the foreground or as a
//! daemon, after waiting for the branches to be mounted when asked to.
//!
//! As root the mount is made here with mount(2) on an fd of `/dev/fuse` (type
//! `fuse.lhfs`, the fsname as source, `default_permissions` and `allow_other`), and
//! the fd is handed to a fuser session served by several threads, each with its own
//! cloned fd. SIGTERM and SIGINT are blocked before any thread starts; a signal thread
//! waits for them and detaches the mount (`umount2(MNT_DETACH)`), which ends the
//! session once nothing uses the pool any more. An external `umount` ends it the same
//! way. The session is never left mounted after the process stops serving it.
//!
//! As a daemon, the mount is made first and the process forks afterwards (see
//! [`crate::daemon`]); the starting process exits 0 only once the pool answers a
//! request, and otherwise reports the daemon's error, with nothing left mounted.
//!
//! **Boot order.** With `branches-mount-timeout=SECONDS`, mounting waits until every
//! branch looks mounted, as mergerfs decides it: a directory holding the xattr
//! `user.mergerfs.branch` or the file `.mergerfs.branch` is mounted; one holding
//! `user.mergerfs.branch_mounts_here` or `.mergerfs.branch_mounts_here` is not;
//! otherwise it is mounted when its device differs from its parent's.
//!
//! With `metrics-listen`, the address is bound before mounting (a busy port stops the
//! mount) and served by [`crate::metrics::server`] once the pool is served.
//!
//! This module owns the mount's lifetime only: options and branches arrive parsed and
//! checked, and nothing here touches the branches.

use std::ffi::CString;
use std::io;
use std::net::TcpListener;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fuser::{Config, Session, SessionACL};
use thiserror::Error;

use crate::branch::{check_mountpoint, format_branches, parse_branches, Branch, BranchError};
use crate::control::CONTROL_FILE;
use crate::daemon::{self, Forked, Outcome, Ready};
use crate::fuse::UnionFs;
use crate::glob::FsGlob;
use crate::metrics::{server, Metrics};
use crate::options::{OptionError, Options};
use crate::pin::Pinner;
use crate::readahead;
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
    /// Neither the command line nor an option named the mountpoint.
    #[error("no mountpoint given; pass BRANCHES MOUNTPOINT, or set mountpoint= in a config= file")]
    NoMountpoint,
    /// The mountpoint is missing or not a directory.
    #[error("mountpoint `{}`: {source}; create the directory first", path.display())]
    Mountpoint {
        /// The mountpoint as given.
        path: PathBuf,
        /// Why it cannot be used.
        #[source]
        source: io::Error,
    },
    /// A pool mounted there died without being unmounted.
    #[error(
        "mountpoint `{}`: Transport endpoint is not connected: a pool mounted there has died; unmount it with `umount -l {}`, or pass lazy-umount-mountpoint=true",
        path.display(),
        path.display()
    )]
    DeadMount {
        /// The mountpoint as given.
        path: PathBuf,
    },
    /// `/dev/fuse` could not be opened.
    #[error("cannot open /dev/fuse: {0}; {hint}", hint = device_hint(.0))]
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
    /// A branch that does not exist when mounting.
    #[error(
        "branch `{}` is not an existing directory; create it, mount its disk (see \
         branches-mount-timeout) or fix the branch list", path.display()
    )]
    MissingBranch {
        /// The branch path.
        path: PathBuf,
    },
    /// The `metrics-listen` address could not be bound.
    #[error(
        "cannot serve metrics on `{address}` (metrics-listen): {source}; pick a free \
         address and port, or drop the option"
    )]
    MetricsListen {
        /// The address as given.
        address: String,
        /// Why binding failed.
        #[source]
        source: io::Error,
    },
    /// Going to the background failed.
    #[error("cannot start the daemon: {0}")]
    Fork(#[source] io::Error),
    /// The daemon gave up before the pool answered.
    #[error("{0}")]
    Daemon(String),
    /// `branches-mount-timeout-fail`: branches still unmounted when the wait ended.
    #[error(
        "branches not mounted after {seconds} s: {missing}; mount them, or raise \
         branches-mount-timeout, or drop branches-mount-timeout-fail to continue anyway"
    )]
    BranchesNotMounted {
        /// How long was waited.
        seconds: u64,
        /// The branches that do not look mounted.
        missing: String,
    },
}

/// A checked mount: what [`run`] needs.
#[derive(Debug)]
pub struct Plan {
    /// The branch list as given, expanded again after waiting for the branches.
    pub list: String,
    /// The branches, wildcards expanded.
    pub branches: Vec<Branch>,
    /// The mountpoint, resolved.
    pub mountpoint: PathBuf,
    /// The options.
    pub options: Options,
}

impl Plan {
    /// Checks a command line: the positional paths (BRANCHES MOUNTPOINT, or one of
    /// them when `-o` gives the other: `branches=` in a `config=` file, or
    /// `mountpoint=`) and every `-o` text in order. Nothing is mounted, except that a
    /// dead pool at the mountpoint is detached with `lazy-umount-mountpoint`; every
    /// refusal names the option, branch or path at fault.
    pub fn new(paths: &[String], option_texts: &[String]) -> Result<Plan, MountError> {
        let mut options = Options::default();
        for text in option_texts {
            options.apply(text)?;
        }
        // One path alone is the mountpoint, unless the options name another one:
        // then it is the branches.
        let same = |a: &Path, b: &Path| {
            a == b
                || a.canonicalize()
                    .is_ok_and(|a| b.canonicalize().is_ok_and(|b| a == b))
        };
        let (branches, mountpoint) = match (paths, &options.mountpoint) {
            ([branches, mountpoint], _) => (Some(branches.clone()), PathBuf::from(mountpoint)),
            ([one], Some(mountpoint)) if !same(Path::new(one), mountpoint) => {
                (Some(one.clone()), mountpoint.clone())
            }
            ([mountpoint], _) => (None, PathBuf::from(mountpoint)),
            ([], Some(mountpoint)) => (None, mountpoint.clone()),
            _ => return Err(MountError::NoMountpoint),
        };
        let list = branches
            .or_else(|| options.branches.clone())
            .ok_or(MountError::NoBranches)?;
        let mountpoint = mountpoint.as_path();
        let mountpoint_error = |source| MountError::Mountpoint {
            path: mountpoint.to_path_buf(),
            source,
        };
        let stat = |p: &Path| {
            p.canonicalize()
                .and_then(|r| std::fs::metadata(&r).map(|_| r))
        };
        let mut resolved = stat(mountpoint);
        // A pool that died without being unmounted answers ENOTCONN; with
        // lazy-umount-mountpoint it is detached here, the restart case.
        if let (Err(e), true) = (&resolved, options.lazy_umount_mountpoint) {
            if e.raw_os_error() == Some(libc::ENOTCONN) {
                if let Ok(target) = cstring(mountpoint) {
                    lazy_umount(&target, mountpoint);
                }
                resolved = stat(mountpoint);
            }
        }
        let resolved = resolved.map_err(|e| {
            if e.raw_os_error() == Some(libc::ENOTCONN) {
                MountError::DeadMount {
                    path: mountpoint.to_path_buf(),
                }
            } else {
                mountpoint_error(e)
            }
        })?;
        if !resolved.is_dir() {
            return Err(mountpoint_error(io::Error::from_raw_os_error(
                libc::ENOTDIR,
            )));
        }
        let branches = expand_branches(&list, &resolved)?;
        // What `user.mergerfs.fsname` reads back, and what the mount shows.
        if options.fsname.is_none() {
            options.fsname = Some(default_fsname(&branches));
        }
        Ok(Plan {
            list,
            branches,
            mountpoint: resolved,
            options,
        })
    }
}

/// What to do about a failed open of `/dev/fuse`.
fn device_hint(e: &io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc::EACCES | libc::EPERM) => {
            "mounting lhfs needs root (run it as root, or from /etc/fstab)"
        }
        _ => "is the fuse module loaded (modprobe fuse)?",
    }
}

/// The mount(2) flags the standard mount words ask for. FUSE mounts are `nosuid`
/// and `nodev` unless `suid` or `dev` says otherwise; the last word about a flag wins.
pub fn mount_flags(words: &[String]) -> libc::c_ulong {
    let mut flags = libc::MS_NOSUID | libc::MS_NODEV;
    for word in words {
        let key = word.split_once('=').map_or(word.as_str(), |(k, _)| k);
        let (set, clear) = match key {
            "ro" => (libc::MS_RDONLY, 0),
            "rw" => (0, libc::MS_RDONLY),
            "noexec" => (libc::MS_NOEXEC, 0),
            "exec" => (0, libc::MS_NOEXEC),
            "nosuid" => (libc::MS_NOSUID, 0),
            "suid" => (0, libc::MS_NOSUID),
            "nodev" => (libc::MS_NODEV, 0),
            "dev" => (0, libc::MS_NODEV),
            "sync" => (libc::MS_SYNCHRONOUS, 0),
            "async" => (0, libc::MS_SYNCHRONOUS),
            "dirsync" => (libc::MS_DIRSYNC, 0),
            "noatime" => (libc::MS_NOATIME, libc::MS_RELATIME | libc::MS_STRICTATIME),
            "relatime" => (libc::MS_RELATIME, libc::MS_NOATIME | libc::MS_STRICTATIME),
            "strictatime" => (libc::MS_STRICTATIME, libc::MS_NOATIME | libc::MS_RELATIME),
            "atime" => (0, libc::MS_NOATIME),
            "nodiratime" => (libc::MS_NODIRATIME, 0),
            "diratime" => (0, libc::MS_NODIRATIME),
            "lazytime" => (libc::MS_LAZYTIME, 0),
            _ => (0, 0),
        };
        flags = (flags & !clear) | set;
    }
    flags
}

/// Expands a branch list and refuses an empty one or a branch in the (resolved)
/// mountpoint.
fn expand_branches(list: &str, mountpoint: &Path) -> Result<Vec<Branch>, MountError> {
    let branches = parse_branches(list, &FsGlob)?;
    if branches.is_empty() {
        return Err(MountError::NoBranches);
    }
    // Compare resolved paths, so a symlink cannot hide a branch inside the pool.
    let resolved_branches: Vec<Branch> = branches
        .iter()
        .map(|b| Branch {
            path: b.path.canonicalize().unwrap_or_else(|_| b.path.clone()),
            ..b.clone()
        })
        .collect();
    check_mountpoint(&resolved_branches, mountpoint)?;
    Ok(branches)
}

/// Whether an extended attribute `name` exists on `path`.
fn has_xattr(path: &CString, name: &std::ffi::CStr) -> bool {
    // SAFETY: both strings are NUL-terminated; a null buffer of size 0 asks for the
    // size only.
    unsafe { libc::getxattr(path.as_ptr(), name.as_ptr(), std::ptr::null_mut(), 0) >= 0 }
}

/// Whether `branch` looks mounted, by mergerfs's rule (see the module doc).
pub fn is_mounted(branch: &Path) -> bool {
    let Ok(path) = cstring(branch) else {
        return false;
    };
    if has_xattr(&path, c"user.mergerfs.branch") || branch.join(".mergerfs.branch").exists() {
        return true;
    }
    if has_xattr(&path, c"user.mergerfs.branch_mounts_here")
        || branch.join(".mergerfs.branch_mounts_here").exists()
    {
        return false;
    }
    use std::os::unix::fs::MetadataExt;
    match (
        std::fs::metadata(branch),
        std::fs::metadata(branch.join("..")),
    ) {
        (Ok(own), Ok(parent)) => own.is_dir() && own.dev() != parent.dev(),
        _ => false,
    }
}

/// Waits up to `timeout` for every branch to look mounted, asking `mount` once for
/// each that does not (an fstab entry may name it). Returns those still unmounted.
fn wait_for_branches(branches: &[Branch], timeout: Duration) -> Vec<&Branch> {
    let unmounted =
        || -> Vec<&Branch> { branches.iter().filter(|b| !is_mounted(&b.path)).collect() };
    for branch in unmounted() {
        // Failure is expected for branches fstab does not know; the wait decides.
        let _ = Command::new("mount")
            .arg(&branch.path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
    let deadline = Instant::now() + timeout;
    loop {
        let missing = unmounted();
        if missing.is_empty() || Instant::now() >= deadline {
            return missing;
        }
        std::thread::sleep(Duration::from_millis(100));
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

/// How often the branch folders are checked for a disk mounted on them (or
/// unmounted) since the pool started.
const BRANCH_WATCH_EVERY: Duration = Duration::from_secs(1);

/// How many threads serve requests: `read-thread-count` if positive, the cores
/// divided by |n| if negative, and for 0 one per core, at least 2 and at most 8. On
/// a 2-core machine two threads answered 4 KiB reads 4x faster than one and 20-40%
/// faster than four.
pub fn thread_count(read_thread_count: i64) -> usize {
    // Asked only where needed: it reads the process's cgroup limits.
    let cores = || std::thread::available_parallelism().map_or(1, |n| n.get());
    match read_thread_count {
        0 => cores().clamp(2, 8),
        n if n > 0 => usize::try_from(n).unwrap_or(1),
        n => (cores() / usize::try_from(n.unsigned_abs()).unwrap_or(1)).max(1),
    }
}

/// Sets the nice value of the calling thread, which every thread it starts inherits
/// (`scheduling-priority`, -10 by default as in mergerfs: a request's thread then
/// runs as soon as it is woken instead of waiting behind the caller it serves).
/// Without the right to raise priority (not root) the daemon keeps its own, as
/// mergerfs does.
fn set_priority(nice: i32) {
    // SAFETY: setpriority only reads its integer arguments; for PRIO_PROCESS and
    // who = 0 Linux applies it to the calling thread.
    let _ = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) };
}

fn cstring(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// Blocks SIGTERM, SIGINT and SIGHUP in this thread and in every thread started
/// after it; the signal thread waits for them.
fn block_signals() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data initialised by sigemptyset before use; the
    // calls only change this thread's signal mask.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGHUP);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

/// Raises the soft limit of open files to the hard limit: the daemon holds one
/// descriptor per file open through the pool (and per branch), and the usual soft
/// limit of 1024 (a systemd service's default too) would cap the whole pool at about
/// a thousand open files. mergerfs does the same. Best effort.
fn raise_open_file_limit() {
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

/// Mounts the pool of `plan` and serves it until it is unmounted (externally, or
/// after SIGTERM/SIGINT). Without `foreground` the process forks once the mount is
/// made: the starting process returns when the pool answers (or with the daemon's
/// error), and the daemon serves. Needs root, and a single thread when daemonising.
pub fn run(mut plan: Plan, foreground: bool) -> Result<(), MountError> {
    let ignored = plan.options.without_effect();
    if !ignored.is_empty() {
        daemon::log(&format!(
            "warning: lhfs accepts these mergerfs options but does not act on them yet: {}",
            ignored.join(", ")
        ));
    }
    if plan.options.branches_mount_timeout > 0 {
        let seconds = plan.options.branches_mount_timeout;
        let missing = wait_for_branches(&plan.branches, Duration::from_secs(seconds));
        if !missing.is_empty() {
            let missing: Vec<Branch> = missing.into_iter().cloned().collect();
            let error = MountError::BranchesNotMounted {
                seconds,
                missing: format_branches(&missing),
            };
            if plan.options.branches_mount_timeout_fail {
                return Err(error);
            }
            daemon::log(&format!("{error}; continuing"));
        }
        // Wildcards may match more now that the disks are there.
        plan.branches = expand_branches(&plan.list, &plan.mountpoint)?;
    }
    // A path that is not even there is a typo, unlike an unmounted disk's directory.
    if let Some(branch) = plan.branches.iter().find(|b| !b.path.is_dir()) {
        return Err(MountError::MissingBranch {
            path: branch.path.clone(),
        });
    }
    let metrics = plan
        .options
        .metrics_listen
        .take()
        .map(|address| bind_metrics(&address, &mut plan.options))
        .transpose()?;
    let mounted = Mounted::new(&plan)?;
    if foreground {
        return serve(mounted, plan, metrics, None);
    }
    match daemon::fork().map_err(MountError::Fork)? {
        Forked::Parent(readiness) => {
            let target = mounted.disown();
            match readiness.wait() {
                Outcome::Ready => Ok(()),
                Outcome::Failed(message) => Err(MountError::Daemon(message)),
                Outcome::Vanished => {
                    // The daemon died holding the only connection: clear the mount.
                    detach(&target);
                    Err(MountError::Daemon(
                        "the daemon stopped before the pool was ready; see the system log"
                            .to_owned(),
                    ))
                }
            }
        }
        Forked::Child(ready) => {
            let result = daemon::detach()
                .map_err(MountError::Fork)
                .and_then(|()| serve(mounted, plan, metrics, Some(ready.clone())));
            if let Err(e) = &result {
                ready.fail(&e.to_string());
            }
            result
        }
    }
}

/// Binds the metrics endpoint's `address` before anything is mounted, so that a busy
/// port stops the mount, and records the address bound as `metrics-listen`: with
/// port 0 the control file then tells which port the system picked.
fn bind_metrics(address: &str, options: &mut Options) -> Result<TcpListener, MountError> {
    let error = |source| MountError::MetricsListen {
        address: address.to_owned(),
        source,
    };
    let listener = TcpListener::bind(address).map_err(error)?;
    let bound = listener.local_addr().map_err(error)?;
    options.metrics_listen = Some(bound.to_string());
    Ok(listener)
}

/// A mount made with an fd of `/dev/fuse`, detached again on drop unless the
/// session ended it (or the process that made it hands it to its daemon).
struct Mounted {
    device: OwnedFd,
    guard: DetachOnError,
}

impl Mounted {
    /// Opens `/dev/fuse` and mounts it at the plan's mountpoint.
    fn new(plan: &Plan) -> Result<Mounted, MountError> {
        let mountpoint = &plan.mountpoint;
        let mount_error = |source: io::Error| {
            let hint = match source.raw_os_error() {
                Some(libc::EPERM) => "; mounting needs root",
                Some(libc::ENOENT | libc::ENOTDIR) => {
                    "; the mountpoint must be an existing directory"
                }
                _ => "",
            };
            MountError::Mount {
                mountpoint: mountpoint.to_path_buf(),
                source,
                hint,
            }
        };
        let target = cstring(mountpoint).map_err(mount_error)?;
        if plan.options.lazy_umount_mountpoint {
            lazy_umount(&target, mountpoint);
        }
        // SAFETY: the path is a NUL-terminated literal.
        let fd = unsafe { libc::open(c"/dev/fuse".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(MountError::Device(io::Error::last_os_error()));
        }
        // SAFETY: a successful open returns a new fd that nothing else owns.
        let device = unsafe { OwnedFd::from_raw_fd(fd) };

        let fsname = plan
            .options
            .fsname
            .clone()
            .unwrap_or_else(|| default_fsname(&plan.branches));
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
                mount_flags(&plan.options.mount_words),
                data.as_ptr().cast(),
            )
        };
        if rc < 0 {
            return Err(mount_error(io::Error::last_os_error()));
        }
        Ok(Mounted {
            device,
            guard: DetachOnError {
                mountpoint: target,
                armed: true,
            },
        })
    }

    /// Gives the mount up to the daemon: this process's copy of the connection is
    /// closed and the mount stays. Returns the mountpoint.
    fn disown(mut self) -> CString {
        self.guard.armed = false;
        self.guard.mountpoint.clone()
    }
}

/// `lazy-umount-mountpoint`, as in mergerfs: whatever is mounted at the mountpoint
/// (typically the pool of the lhfs being replaced) is detached before the new pool is
/// mounted there. Programs that have files or folders open in the old one keep using
/// it until they let go, and its daemon then exits; everything else sees the new pool
/// at once. Nothing mounted there is not an error.
fn lazy_umount(target: &CString, mountpoint: &Path) {
    // SAFETY: a NUL-terminated path; MNT_DETACH only unhooks the mount.
    if unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) } == 0 {
        daemon::log(&format!(
            "lazy-umount-mountpoint: detached what was mounted at {}",
            mountpoint.display()
        ));
        return;
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() != Some(libc::EINVAL) {
        daemon::log(&format!(
            "lazy-umount-mountpoint: could not detach {}: {e}",
            mountpoint.display()
        ));
    }
}

/// Asks the pool for its daemon's pid through the control file: an answer proves
/// that the kernel finished its handshake and that this process serves the mount.
fn answers(mountpoint: &Path) -> Result<(), String> {
    let control = mountpoint.join(CONTROL_FILE.trim_start_matches('/'));
    let path = cstring(&control).map_err(|e| e.to_string())?;
    let mut buf = [0u8; 32];
    // SAFETY: both strings are NUL-terminated and `buf` has the length passed.
    let n = unsafe {
        libc::getxattr(
            path.as_ptr(),
            c"user.mergerfs.pid".as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    let n = usize::try_from(n).map_err(|_| {
        format!(
            "the pool at `{}` does not answer: {}",
            mountpoint.display(),
            io::Error::last_os_error()
        )
    })?;
    if buf[..n] == *std::process::id().to_string().as_bytes() {
        Ok(())
    } else {
        Err(format!(
            "another filesystem answers at `{}`; this pool is not on top",
            mountpoint.display()
        ))
    }
}

/// Serves a mount until the kernel ends the session, and the metrics on `metrics`
/// when it is set; `ready` hears when the pool answers, and so does systemd when it
/// started lhfs with `Type=notify` (`NOTIFY_SOCKET`).
fn serve(
    mounted: Mounted,
    plan: Plan,
    metrics: Option<TcpListener>,
    ready: Option<Ready>,
) -> Result<(), MountError> {
    let Mounted { device, mut guard } = mounted;
    let mountpoint = plan.mountpoint;
    let target = guard.mountpoint.clone();
    let signals = block_signals();
    // A detached daemon has no terminal to lose: SIGHUP is ignored there, as mergerfs
    // does. In the foreground it ends the pool like SIGTERM (a closed terminal or
    // session), instead of killing the process and leaving a dead mount behind.
    let foreground = ready.is_none();
    raise_open_file_limit();
    // Files are made with the caller's mode as sent, which already lost the caller's
    // umask; the daemon's own must not cut it again.
    // SAFETY: umask cannot fail.
    unsafe { libc::umask(0) };
    set_priority(plan.options.scheduling_priority);
    let session_error = |source| MountError::Session {
        mountpoint: mountpoint.clone(),
        source,
    };

    // The signal thread starts after the mask is set, like every other thread.
    std::thread::Builder::new()
        .name("lhfs-signals".into())
        .spawn(move || loop {
            let mut signal = 0;
            // SAFETY: `signals` is a valid set and `signal` receives the number.
            if unsafe { libc::sigwait(&signals, &mut signal) } == 0
                && (signal != libc::SIGHUP || foreground)
            {
                detach(&target);
            }
        })
        .map_err(session_error)?;

    let mut config = Config::default();
    config.n_threads = Some(thread_count(plan.options.read_thread_count));
    config.clone_fd = true;
    // pin-threads: a strategy with one CPU set pins this thread now, so that the FUSE
    // threads it starts inherit it; each thread also takes its own set on its first
    // request (spread strategies).
    let pinner = plan.options.pin_threads.and_then(|mode| {
        let Some(pinner) = Pinner::new(mode) else {
            daemon::log(&format!(
                "pin-threads={mode}: cannot read which CPUs lhfs may use; threads are not pinned"
            ));
            return None;
        };
        if mode.is_single() {
            if let Err(e) = pinner.pin_first() {
                daemon::log(&format!("pin-threads={mode}: setting the CPUs: {e}"));
            }
        }
        Some(Arc::new(pinner))
    });
    // readahead: set once the pool answers (below), as the kernel sets the pool's
    // own read-ahead from the FUSE handshake and would cap what is written before it.
    let readahead = (plan.options.readahead > 0).then(|| {
        let branches: Vec<PathBuf> = plan.branches.iter().map(|b| b.path.clone()).collect();
        (plan.options.readahead, branches)
    });
    let mut options = plan.options;
    options.mountpoint = Some(mountpoint.clone());
    let union = Union::new(&plan.branches, Arc::new(options));
    let mut fs = UnionFs::new(Arc::new(union));
    if let Some(pinner) = pinner {
        fs = fs.with_pinner(pinner);
    }
    if let Some(listener) = metrics {
        let counters = Arc::new(Metrics::default());
        fs = fs.with_metrics(Arc::clone(&counters));
        let pool = fs.pool();
        server::spawn(listener, move || counters.render(&pool().branch_spaces()))
            .map_err(session_error)?;
    }
    let watcher = fs.branch_watcher(BRANCH_WATCH_EVERY);
    std::thread::Builder::new()
        .name("lhfs-branches".into())
        .spawn(watcher)
        .map_err(session_error)?;
    let notifier = fs.notifier_slot();
    let session = Session::from_fd(fs, device, SessionACL::All, config).map_err(session_error)?;
    let _ = notifier.set(session.notifier());
    // What waits for the pool to answer: the parent of a daemon, systemd, and the
    // read-ahead setting; one thread asks once for all of them.
    if ready.is_some() || std::env::var_os("NOTIFY_SOCKET").is_some() || readahead.is_some() {
        let probe = mountpoint.clone();
        std::thread::Builder::new()
            .name("lhfs-ready".into())
            .spawn(move || match answers(&probe) {
                Ok(()) => {
                    if let Some((kib, branches)) = readahead {
                        let branches: Vec<&Path> = branches.iter().map(PathBuf::as_path).collect();
                        for problem in readahead::apply(&probe, &branches, kib) {
                            daemon::log(&problem);
                        }
                    }
                    if let Some(ready) = ready {
                        ready.ok();
                    }
                    let status = format!("pool at {} answers", probe.display());
                    if let Err(e) = daemon::notify_ready(&status) {
                        daemon::log(&format!("telling systemd the pool is ready: {e}"));
                    }
                }
                Err(message) => match ready {
                    Some(ready) => ready.fail(&message),
                    None => daemon::log(&message),
                },
            })
            .map_err(session_error)?;
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_words_set_the_mount_flags() {
        let w =
            |words: &[&str]| mount_flags(&words.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        let base = libc::MS_NOSUID | libc::MS_NODEV;
        assert_eq!(w(&[]), base);
        assert_eq!(w(&["defaults", "nofail", "_netdev"]), base);
        assert_eq!(
            w(&["ro", "noexec"]),
            base | libc::MS_RDONLY | libc::MS_NOEXEC
        );
        assert_eq!(w(&["ro", "rw"]), base);
        assert_eq!(w(&["suid", "dev"]), 0);
        assert_eq!(w(&["noatime", "relatime"]), base | libc::MS_RELATIME);
        assert_eq!(
            w(&["sync", "dirsync"]),
            base | libc::MS_SYNCHRONOUS | libc::MS_DIRSYNC
        );
    }

    #[test]
    fn a_refused_dev_fuse_says_why() {
        let denied = MountError::Device(io::Error::from_raw_os_error(libc::EACCES)).to_string();
        assert!(denied.contains("needs root"), "{denied}");
        let missing = MountError::Device(io::Error::from_raw_os_error(libc::ENOENT)).to_string();
        assert!(missing.contains("modprobe fuse"), "{missing}");
    }

    #[test]
    fn markers_decide_before_devices() {
        let dir = tempfile::tempdir().unwrap();
        // A plain directory shares its parent's device.
        assert!(!is_mounted(dir.path()));
        assert!(!is_mounted(&dir.path().join("missing")));
        std::fs::write(dir.path().join(".mergerfs.branch"), b"").unwrap();
        assert!(is_mounted(dir.path()));

        let other = tempfile::tempdir().unwrap();
        std::fs::write(other.path().join(".mergerfs.branch_mounts_here"), b"").unwrap();
        assert!(!is_mounted(other.path()));
        // The root filesystem's root has itself as parent.
        assert!(!is_mounted(Path::new("/")));
    }

    #[test]
    fn the_wait_returns_the_unmounted_branches_after_the_timeout() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        std::fs::write(a.path().join(".mergerfs.branch"), b"").unwrap();
        let branches = parse_branches(
            &format!("{}:{}", a.path().display(), b.path().display()),
            &FsGlob,
        )
        .unwrap();
        let started = Instant::now();
        let missing = wait_for_branches(&branches, Duration::from_millis(300));
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert_eq!(missing, vec![&branches[1]]);
        std::fs::write(b.path().join(".mergerfs.branch"), b"").unwrap();
        assert!(wait_for_branches(&branches, Duration::from_secs(5)).is_empty());
    }
}
