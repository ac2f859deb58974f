//! Acting as the calling user on the current thread, so that what the daemon (root)
//! creates for a caller belongs to the caller and is checked against the caller's
//! permissions.
//!
//! Linux keeps credentials per thread at the syscall level: `setfsuid`, `setfsgid`
//! and the raw `setgroups` syscall change only the calling thread. The C library's
//! `setgroups` wrapper is deliberately not used, because it changes every thread of
//! the process.
//!
//! Each switch costs the kernel a new set of credentials per id changed, so the
//! thread remembers whom it acts as and switches only when that changes:
//! - [`Caller::run`] acts as the caller for one operation and then returns the
//!   thread to whom it acted as before (the daemon's code between such operations,
//!   such as cloning parent folders, runs with the daemon's own ids);
//! - [`Caller::serve`] leaves the thread acting as the caller, for requests that do
//!   nothing else on the branches: a user's next lookup, `stat` or open on that
//!   thread then needs no switch at all, as in mergerfs;
//! - [`as_daemon`] returns the thread to the daemon's own ids; every other request
//!   starts with it.
//!
//! This module never changes the real or effective ids, so the daemon keeps its
//! privileges (`setfsuid` drops only the file-system capabilities, and only while
//! it lasts).

use std::cell::RefCell;
use std::io;
use std::marker::PhantomData;
use std::time::{Duration, Instant};

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
    /// `/proc/PID/status`. A caller whose status cannot be read (it already exited),
    /// or whose status shows another filesystem uid (its pid was taken by another
    /// process), gets no supplementary groups, so it can only lose access, never gain
    /// it. Requests the kernel makes itself carry pid 0 (the NFS server exporting the
    /// pool): their groups come from the user database, as mergerfs takes every
    /// caller's. Root needs no switch (see `is_root`), so its groups are not read at
    /// all.
    ///
    /// Every request of a non-root user needs the groups, so the answer is kept on
    /// the thread for [`GROUPS_TTL`] per process and ids (see [`GroupsCache`]).
    pub fn from_process(uid: libc::uid_t, gid: libc::gid_t, pid: u32) -> Caller {
        let groups = if uid == 0 {
            Vec::new()
        } else {
            GROUPS.with(|cache| {
                cache
                    .borrow_mut()
                    .get_or_read(Instant::now(), (pid, uid, gid), || {
                        if pid == 0 {
                            return groups_from_user_db(uid, gid);
                        }
                        read_status(pid)
                            .ok()
                            .filter(|status| fsuid_from_status(status) == Some(uid))
                            .map(|status| groups_from_status(&status))
                            .unwrap_or_default()
                    })
            })
        };
        Caller { uid, gid, groups }
    }

    /// Whether this is root, for whom no switch is needed.
    pub fn is_root(&self) -> bool {
        self.uid == 0
    }

    /// Runs `op` on the current thread acting as this caller (as the daemon for
    /// root), then returns the thread to whom it acted as before.
    pub fn run<T, E: From<io::Error>>(&self, op: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
        let _guard = CredsGuard::enter(self)?;
        op()
    }

    /// Runs `op` acting as this caller and leaves the thread so (see the module
    /// doc): for requests whose every access to the branches is the caller's.
    pub fn serve<T, E: From<io::Error>>(&self, op: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
        switch_to(self.target())?;
        op()
    }

    /// Whom the thread should act as for this caller: root's requests are served
    /// with the daemon's own ids.
    fn target(&self) -> Option<&Caller> {
        (!self.is_root()).then_some(self)
    }
}

thread_local! {
    /// Whom the thread acts as; `None`: the daemon's own ids.
    static ACTING: RefCell<Option<Caller>> = const { RefCell::new(None) };
    /// The daemon's own filesystem ids and groups on this thread, read the first
    /// time it acts as someone else.
    static OWN: RefCell<Option<Caller>> = const { RefCell::new(None) };
}

/// Whom the current thread acts as (`None`: the daemon itself).
fn acting() -> Option<Caller> {
    ACTING.with(|a| a.borrow().clone())
}

/// Runs `op` with the daemon's own ids, then returns the thread to whom it acted
/// as before: for what the daemon does for itself in the middle of a caller's
/// request (cloning parent folders with their owners).
pub fn as_daemon_for<T, E: From<io::Error>>(op: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
    let daemon = Caller {
        uid: 0,
        gid: 0,
        groups: Vec::new(),
    };
    daemon.run(op)
}

/// Returns the current thread to the daemon's own ids, if it acts as a caller.
pub fn as_daemon() {
    // Going back to the daemon's ids cannot fail while the process has the
    // privileges it had when it switched away from them.
    let _ = switch_to(None);
}

/// Makes the current thread act as `target` (`None`: the daemon's own ids),
/// changing only the ids that differ. On failure the thread is back to the
/// daemon's own ids and the error is returned.
fn switch_to(target: Option<&Caller>) -> io::Result<()> {
    // The usual case, compared in place: the thread already acts as the target.
    if ACTING.with(|a| a.borrow().as_ref() == target) {
        return Ok(());
    }
    let now = acting();
    let own = OWN.with(|own| -> io::Result<Caller> {
        let mut own = own.borrow_mut();
        if let Some(ids) = &*own {
            return Ok(ids.clone());
        }
        // Only read while the thread still acts as the daemon.
        debug_assert!(now.is_none());
        let ids = Caller {
            uid: current_fsuid(),
            gid: current_fsgid(),
            groups: thread_groups()?,
        };
        *own = Some(ids.clone());
        Ok(ids)
    })?;
    let from = now.as_ref().unwrap_or(&own);
    let to = target.unwrap_or(&own);
    let back = target.is_none();
    let switched = (|| {
        // Back to the daemon: the uid first, which brings back the file-system
        // capabilities; away from it, the uid last.
        if back && to.uid != from.uid {
            set_fsuid(to.uid)?;
        }
        if to.groups != from.groups {
            set_thread_groups(&to.groups)?;
        }
        if to.gid != from.gid {
            set_fsgid(to.gid)?;
        }
        if !back && to.uid != from.uid {
            set_fsuid(to.uid)?;
        }
        Ok(())
    })();
    if let Err(e) = switched {
        // Part of the switch may have happened: set every id back.
        let _ = set_fsuid(own.uid);
        let _ = set_thread_groups(&own.groups);
        let _ = set_fsgid(own.gid);
        ACTING.with(|a| *a.borrow_mut() = None);
        return Err(e);
    }
    ACTING.with(|a| *a.borrow_mut() = target.cloned());
    Ok(())
}

/// How long a process's groups are trusted once read. A process's groups change
/// only through `setgroups`, which needs a privilege that in practice comes with a
/// change of uid or gid (part of the key), so a second is short enough; it matches
/// how long the kernel keeps the pool's attributes by default.
pub const GROUPS_TTL: Duration = Duration::from_secs(1);

/// Entries a thread keeps; a full cache starts again from empty.
const GROUPS_CACHE_SIZE: usize = 64;

thread_local! {
    static GROUPS: RefCell<GroupsCache> = const { RefCell::new(GroupsCache::new()) };
}

/// (pid, uid, gid) of a request.
type GroupsKey = (u32, libc::uid_t, libc::gid_t);

/// The supplementary groups of recent callers, per thread (no lock on the request
/// path): reading `/proc/PID/status` costs more than the request it serves.
#[derive(Debug, Default)]
pub struct GroupsCache {
    entries: Vec<(GroupsKey, Instant, Vec<libc::gid_t>)>,
}

impl GroupsCache {
    pub const fn new() -> GroupsCache {
        GroupsCache {
            entries: Vec::new(),
        }
    }

    /// The groups of `key` read at most [`GROUPS_TTL`] before `now`, or `read`'s
    /// answer, kept from `now` on.
    pub fn get_or_read(
        &mut self,
        now: Instant,
        key: GroupsKey,
        read: impl FnOnce() -> Vec<libc::gid_t>,
    ) -> Vec<libc::gid_t> {
        let fresh = |at: &Instant| now.saturating_duration_since(*at) < GROUPS_TTL;
        if let Some((_, at, groups)) = self.entries.iter().find(|(k, _, _)| *k == key) {
            if fresh(at) {
                return groups.clone();
            }
        }
        self.entries.retain(|(k, at, _)| *k != key && fresh(at));
        if self.entries.len() >= GROUPS_CACHE_SIZE {
            self.entries.clear();
        }
        let groups = read();
        self.entries.push((key, now, groups.clone()));
        groups
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

/// The filesystem uid of a `/proc/PID/status` text (the last of its `Uid:` line).
pub fn fsuid_from_status(status: &str) -> Option<libc::uid_t> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(3))
        .and_then(|id| id.parse().ok())
}

/// The groups the user database gives `uid` (with primary group `gid`), as
/// `getgrouplist(3)` lists them; none for a uid it does not know.
pub fn groups_from_user_db(uid: libc::uid_t, gid: libc::gid_t) -> Vec<libc::gid_t> {
    // SAFETY (both blocks): getpwuid_r fills `pwd` with pointers into `buf`, which
    // outlives every use of them; getgrouplist writes at most `count` entries into
    // `groups` and sets `count` to how many it has.
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    let rc = unsafe { libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr(), buf.len(), &mut found) };
    if rc != 0 || found.is_null() {
        return Vec::new();
    }
    let mut groups: Vec<libc::gid_t> = vec![0; 64];
    for _ in 0..4 {
        let mut count = groups.len() as libc::c_int;
        let rc = unsafe { libc::getgrouplist(pwd.pw_name, gid, groups.as_mut_ptr(), &mut count) };
        let count = usize::try_from(count).unwrap_or(0);
        if rc >= 0 {
            groups.truncate(count);
            return groups;
        }
        groups.resize(count.max(groups.len() * 2), 0);
    }
    Vec::new()
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

/// The current thread acting as a [`Caller`] (the daemon itself for root); dropping
/// it returns the thread to whom it acted as before.
#[derive(Debug)]
pub struct CredsGuard {
    before: Option<Caller>,
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
    /// Makes the current thread act as `caller` until the guard is dropped. On
    /// failure the thread acts as the daemon.
    pub fn enter(caller: &Caller) -> io::Result<CredsGuard> {
        let before = acting();
        switch_to(caller.target())?;
        Ok(CredsGuard {
            before,
            _thread: PhantomData,
        })
    }
}

impl Drop for CredsGuard {
    fn drop(&mut self) {
        // A failure cannot be reported from drop; switching back to the daemon's
        // ids, or to a caller's it acted as a moment ago, only fails if the process
        // lost its privileges altogether, and then the thread acts as the daemon.
        let _ = switch_to(self.before.as_ref());
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
    fn groups_are_read_once_per_caller_until_they_expire() {
        let mut cache = GroupsCache::new();
        let t0 = Instant::now();
        let reads = std::cell::Cell::new(0);
        let read = |groups: Vec<u32>| {
            let reads = &reads;
            move || {
                reads.set(reads.get() + 1);
                groups
            }
        };
        assert_eq!(
            cache.get_or_read(t0, (7, 1000, 100), read(vec![4])),
            vec![4]
        );
        // Same process and ids within the TTL: the kept answer.
        let soon = t0 + GROUPS_TTL / 2;
        assert_eq!(
            cache.get_or_read(soon, (7, 1000, 100), read(vec![5])),
            vec![4]
        );
        assert_eq!(reads.get(), 1);
        // Another uid, gid or pid is another caller.
        assert_eq!(
            cache.get_or_read(soon, (7, 1001, 100), read(vec![6])),
            vec![6]
        );
        assert_eq!(
            cache.get_or_read(soon, (7, 1000, 101), read(vec![7])),
            vec![7]
        );
        assert_eq!(
            cache.get_or_read(soon, (8, 1000, 100), read(vec![8])),
            vec![8]
        );
        assert_eq!(reads.get(), 4);
        // Expired: read again, and the new answer is kept.
        let later = t0 + GROUPS_TTL;
        assert_eq!(
            cache.get_or_read(later, (7, 1000, 100), read(vec![9])),
            vec![9]
        );
        assert_eq!(
            cache.get_or_read(later, (7, 1000, 100), read(vec![1])),
            vec![9]
        );
        assert_eq!(reads.get(), 5);
        // Expired entries are dropped, and the cache never grows past its size.
        assert!(cache.entries.iter().all(|(_, at, _)| *at != t0));
        for pid in 0..(GROUPS_CACHE_SIZE as u32 * 2) {
            cache.get_or_read(later, (1000 + pid, 1, 1), Vec::new);
        }
        assert!(cache.entries.len() <= GROUPS_CACHE_SIZE);
    }

    #[test]
    fn the_user_database_gives_the_groups_id_lists() {
        // Every user the database lists, with `id -G` as the reference.
        let passwd = fs::read_to_string("/etc/passwd").unwrap();
        let mut checked = 0;
        for line in passwd.lines() {
            let fields: Vec<&str> = line.split(':').collect();
            let (Some(name), Some(uid), Some(gid)) = (fields.first(), fields.get(2), fields.get(3))
            else {
                continue;
            };
            let out = std::process::Command::new("id")
                .arg("-G")
                .arg(name)
                .output()
                .unwrap();
            if !out.status.success() {
                continue;
            }
            let mut want: Vec<u32> = String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .map(|g| g.parse().unwrap())
                .collect();
            let mut got = groups_from_user_db(uid.parse().unwrap(), gid.parse().unwrap());
            want.sort();
            want.dedup();
            got.sort();
            got.dedup();
            assert_eq!(got, want, "{name}");
            checked += 1;
        }
        assert!(checked > 0);
        // A uid the database does not know has no groups.
        assert_eq!(groups_from_user_db(3_999_999_999, 1), Vec::<u32>::new());
    }

    #[test]
    fn a_status_of_another_user_gives_no_groups() {
        let status = "Uid:\t1000\t1000\t1000\t1001\nGroups:\t4 24\n";
        assert_eq!(fsuid_from_status(status), Some(1001));
        assert_eq!(fsuid_from_status("Name:\tx\n"), None);
        // Our own status read as another uid's: a pid taken by someone else.
        // SAFETY: getuid has no preconditions.
        let me = unsafe { libc::getuid() };
        let other = Caller::from_process(me + 4242, 1, std::process::id());
        assert!(other.groups.is_empty());
    }

    #[test]
    fn reads_the_groups_of_the_calling_process() {
        if !is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        // A process of another user with two supplementary groups.
        let mut child = std::process::Command::new("setpriv")
            .args(["--reuid=12345", "--regid=12345", "--groups=34567,45678"])
            .args(["sleep", "10"])
            .spawn()
            .unwrap();
        let pid = child.id();
        // setpriv switches its ids, then runs sleep: wait until it has.
        let deadline = Instant::now() + Duration::from_secs(5);
        while read_status(pid).ok().and_then(|s| fsuid_from_status(&s)) != Some(12345)
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        let caller = Caller::from_process(12345, 12345, pid);
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(caller.groups, vec![34567, 45678]);
        // A process that is gone: no groups.
        assert!(Caller::from_process(1, 1, u32::MAX).groups.is_empty());
        // The kernel's own requests (pid 0): the user database's groups.
        assert_eq!(
            Caller::from_process(1, 1, 0).groups,
            groups_from_user_db(1, 1)
        );
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

    /// A folder only root may enter, in a temporary folder anyone may enter.
    fn private_folder() -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let private = dir.path().join("private");
        fs::create_dir(&private).unwrap();
        fs::set_permissions(&private, fs::Permissions::from_mode(0o700)).unwrap();
        (dir, private)
    }

    #[test]
    fn the_guard_denies_what_root_may_do_until_dropped() {
        if !is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let (_dir, private) = private_folder();
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
    fn a_served_caller_stays_until_another_or_the_daemon_is_needed() {
        if !is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let (_dir, private) = private_folder();
        let denied = || {
            fs::read_dir(&private)
                .map(|_| ())
                .map_err(|e| e.raw_os_error())
        };
        let root = Caller {
            uid: 0,
            gid: 0,
            groups: Vec::new(),
        };
        let other = Caller {
            uid: UID + 1,
            gid: GID + 1,
            groups: Vec::new(),
        };
        // serve: the thread keeps acting as the caller afterwards.
        assert_eq!(
            caller().serve(|| Ok::<_, io::Error>(denied())).unwrap(),
            Err(Some(libc::EACCES))
        );
        assert_eq!((current_fsuid(), current_fsgid()), (UID, GID));
        assert_eq!(thread_groups().unwrap(), vec![34567]);
        // run as root from there: the daemon's rights for the operation, then the
        // caller again.
        assert_eq!(root.run(|| Ok::<_, io::Error>(denied())).unwrap(), Ok(()));
        assert_eq!((current_fsuid(), current_fsgid()), (UID, GID));
        // Another caller replaces the first, groups included.
        other.serve(|| Ok::<_, io::Error>(())).unwrap();
        assert_eq!((current_fsuid(), current_fsgid()), (UID + 1, GID + 1));
        assert_eq!(thread_groups().unwrap(), Vec::<u32>::new());
        // as_daemon: back to the daemon's own ids and groups.
        as_daemon();
        assert_eq!((current_fsuid(), current_fsgid()), (0, 0));
        assert_eq!(denied(), Ok(()));
        root.serve(|| Ok::<_, io::Error>(())).unwrap();
        assert_eq!(current_fsuid(), 0);
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
