//! Acting as the calling user on the current thread, so that what the daemon (root)
//! creates for a caller belongs to the caller and is checked against the caller's
//! permissions.
//!
//! Linux keeps credentials per thread at the syscall level: `setfsuid`, `setfsgid`
//! and the raw `setgroups` syscall change only the calling thread. The C library's
//! `setgroups` wrapper is deliberately not used, because it changes every thread of
//! the process. [`CredsGuard`] switches the thread and switches it back when
//! dropped; it cannot be sent to another thread.
//!
//! This module never changes the real or effective ids, so the daemon keeps its
//! privileges for everything done outside a guard.

use std::io;
use std::marker::PhantomData;

/// Who is asking: the ids a FUSE request carries plus the supplementary groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The caller's user id.
    pub uid: libc::uid_t,
    /// The caller's primary group id.
    pub gid: libc::gid_t,
    /// The caller's supplementary groups.
    pub groups: Vec<libc::gid_t>,
}

impl Caller {
    /// The caller as seen by the process `pid`: supplementary groups from
    /// `/proc/PID/status`. A caller whose status cannot be read (it already exited)
    /// gets no supplementary groups, so it can only lose access, never gain it. Root
    /// needs no switch (see `is_root`), so its groups are not read at all.
    pub fn from_process(uid: libc::uid_t, gid: libc::gid_t, pid: u32) -> Caller {
        let groups = if uid == 0 {
            Vec::new()
        } else {
            read_status(pid)
                .map(|status| groups_from_status(&status))
                .unwrap_or_default()
        };
        Caller { uid, gid, groups }
    }

    /// Whether this is root, for whom no switch is needed.
    pub fn is_root(&self) -> bool {
        self.uid == 0
    }

    /// Runs `op` on the current thread acting as this caller (directly for root).
    pub fn run<T, E: From<io::Error>>(&self, op: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
        if self.is_root() {
            return op();
        }
        let _guard = CredsGuard::enter(self)?;
        op()
    }
}

/// `/proc/PID/status` in one read: proc files report a size of 0, so reading them as
/// a plain file starts small and takes a syscall per doubling.
fn read_status(pid: u32) -> io::Result<String> {
    use std::io::Read;
    let mut text = String::with_capacity(4096);
    std::fs::File::open(format!("/proc/{pid}/status"))?.read_to_string(&mut text)?;
    Ok(text)
}

/// The supplementary groups of a `/proc/PID/status` text (its `Groups:` line).
pub fn groups_from_status(status: &str) -> Vec<libc::gid_t> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("Groups:"))
        .map(|list| {
            list.split_whitespace()
                .filter_map(|g| g.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The current thread acting as a [`Caller`]; dropping it restores the thread's
/// previous filesystem ids and groups.
#[derive(Debug)]
pub struct CredsGuard {
    uid: libc::uid_t,
    gid: libc::gid_t,
    groups: Vec<libc::gid_t>,
    /// The switch belongs to this thread: keep the guard from moving elsewhere.
    _thread: PhantomData<*const ()>,
}

fn thread_groups() -> io::Result<Vec<libc::gid_t>> {
    // SAFETY: size 0 with a null list only asks for the count.
    let count =
        unsafe { libc::syscall(libc::SYS_getgroups, 0, std::ptr::null_mut::<libc::gid_t>()) };
    if count < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut groups = vec![0; count as usize];
    // SAFETY: the buffer holds `count` entries, the size passed.
    let got = unsafe { libc::syscall(libc::SYS_getgroups, count, groups.as_mut_ptr()) };
    if got < 0 {
        return Err(io::Error::last_os_error());
    }
    groups.truncate(got as usize);
    Ok(groups)
}

fn set_thread_groups(groups: &[libc::gid_t]) -> io::Result<()> {
    // SAFETY: the pointer and length describe `groups`; the raw syscall changes the
    // calling thread only.
    let rc = unsafe { libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `setfsuid` reports no error, only the previous id: ask again with an invalid id
/// (which changes nothing) to learn whether the switch happened.
fn set_fsuid(uid: libc::uid_t) -> io::Result<()> {
    // SAFETY: plain syscalls on the calling thread's credentials.
    let now = unsafe {
        libc::setfsuid(uid);
        libc::setfsuid(libc::uid_t::MAX)
    };
    if now as libc::uid_t == uid {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(libc::EPERM))
    }
}

fn set_fsgid(gid: libc::gid_t) -> io::Result<()> {
    // SAFETY: as in `set_fsuid`.
    let now = unsafe {
        libc::setfsgid(gid);
        libc::setfsgid(libc::gid_t::MAX)
    };
    if now as libc::gid_t == gid {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(libc::EPERM))
    }
}

fn current_fsuid() -> libc::uid_t {
    // SAFETY: an invalid id changes nothing and returns the current one.
    unsafe { libc::setfsuid(libc::uid_t::MAX) as libc::uid_t }
}

fn current_fsgid() -> libc::gid_t {
    // SAFETY: as in `current_fsuid`.
    unsafe { libc::setfsgid(libc::gid_t::MAX) as libc::gid_t }
}

impl CredsGuard {
    /// Makes the current thread act as `caller` for filesystem access until the guard
    /// is dropped. Groups and gid change first, while the thread still has the
    /// privilege to change them; on failure the thread is left as it was.
    pub fn enter(caller: &Caller) -> io::Result<CredsGuard> {
        let guard = CredsGuard {
            uid: current_fsuid(),
            gid: current_fsgid(),
            groups: thread_groups()?,
            _thread: PhantomData,
        };
        set_thread_groups(&caller.groups)?;
        // From here on dropping the guard undoes whatever part succeeded.
        set_fsgid(caller.gid)?;
        set_fsuid(caller.uid)?;
        Ok(guard)
    }
}

impl Drop for CredsGuard {
    fn drop(&mut self) {
        // The uid first: it brings back the capabilities the other two need. A
        // failure cannot be reported from drop, and restoring the daemon's own ids
        // only fails if the process lost its privileges altogether.
        let _ = set_fsuid(self.uid);
        let _ = set_fsgid(self.gid);
        let _ = set_thread_groups(&self.groups);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    const UID: u32 = 12345;
    const GID: u32 = 23456;

    fn is_root() -> bool {
        // SAFETY: geteuid has no preconditions.
        unsafe { libc::geteuid() == 0 }
    }

    fn caller() -> Caller {
        Caller {
            uid: UID,
            gid: GID,
            groups: vec![34567],
        }
    }

    #[test]
    fn parses_the_groups_line() {
        let status =
            "Name:\tbash\nUid:\t1000\t1000\t1000\t1000\nGroups:\t4 24 27 1000 \nNgid:\t0\n";
        assert_eq!(groups_from_status(status), vec![4, 24, 27, 1000]);
        assert_eq!(groups_from_status("Groups:\t\n"), Vec::<u32>::new());
        assert_eq!(groups_from_status("Name:\tx\n"), Vec::<u32>::new());
    }

    #[test]
    fn reads_our_own_groups() {
        // SAFETY: getuid/getgid have no preconditions.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        // As a user other than root, whose groups are read: ours, from our status.
        let me = Caller::from_process(uid.max(1), gid, std::process::id());
        assert_eq!(me.groups, thread_groups().unwrap());
        assert!(Caller::from_process(1, 1, u32::MAX).groups.is_empty());
        // Root's groups are never needed, so never read.
        assert!(Caller::from_process(0, 0, std::process::id())
            .groups
            .is_empty());
    }

    #[test]
    fn files_created_under_the_guard_belong_to_the_caller() {
        if !is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o777)).unwrap();
        let file = dir.path().join("made-by-caller");
        {
            let _guard = CredsGuard::enter(&caller()).unwrap();
            assert_eq!(thread_groups().unwrap(), vec![34567]);
            fs::write(&file, b"x").unwrap();
        }
        let meta = fs::metadata(&file).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (UID, GID));
        assert_eq!((current_fsuid(), current_fsgid()), (0, 0));
    }

    #[test]
    fn the_guard_denies_what_root_may_do_until_dropped() {
        if !is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let private = dir.path().join("private");
        fs::create_dir(&private).unwrap();
        fs::set_permissions(&private, fs::Permissions::from_mode(0o700)).unwrap();
        let groups_before = thread_groups().unwrap();
        {
            let _guard = CredsGuard::enter(&caller()).unwrap();
            let err = fs::read_dir(&private).unwrap_err();
            assert_eq!(err.raw_os_error(), Some(libc::EACCES));
            let err = fs::write(private.join("f"), b"x").unwrap_err();
            assert_eq!(err.raw_os_error(), Some(libc::EACCES));
        }
        fs::read_dir(&private).unwrap();
        fs::write(private.join("f"), b"x").unwrap();
        assert_eq!(thread_groups().unwrap(), groups_before);
    }

    #[test]
    fn supplementary_groups_grant_access() {
        if !is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let shared = dir.path().join("shared");
        fs::create_dir(&shared).unwrap();
        std::os::unix::fs::chown(&shared, Some(0), Some(34567)).unwrap();
        fs::set_permissions(&shared, fs::Permissions::from_mode(0o770)).unwrap();
        let _guard = CredsGuard::enter(&caller()).unwrap();
        fs::read_dir(&shared).unwrap();
    }

    #[test]
    fn the_switch_stays_on_its_thread() {
        if !is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        // A thread started before the switch; threads started during it would
        // inherit the caller's ids.
        let (ask, asked) = std::sync::mpsc::channel::<()>();
        let other = std::thread::spawn(move || {
            asked.recv().unwrap();
            (current_fsuid(), thread_groups().unwrap())
        });
        let _guard = CredsGuard::enter(&caller()).unwrap();
        ask.send(()).unwrap();
        let other = other.join().unwrap();
        assert_eq!(other.0, 0);
        assert_ne!(other.1, vec![34567]);
        assert_eq!(current_fsuid(), UID);
    }
}
