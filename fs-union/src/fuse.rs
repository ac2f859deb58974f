//! The `fuser::Filesystem` adapter: every FUSE request turned into a [`Union`]
//! operation and its answer turned into a reply.
//!
//! The adapter owns the node table (node id → pool path), the open file and
//! directory handles, the passthrough backing files and the reply timeouts. Each
//! request resolves its node to a pool path, takes the caller's credentials where a
//! new entry comes into being (the union runs those calls as the [`Caller`]), calls
//! the union and replies. It never touches a branch path itself: everything below a
//! branch root goes through [`Union`], which keeps it inside the branches.
//!
//! **Inode numbers.** fuser 0.18 sends an entry's `attr.ino` as its node id too, so a
//! node's id is its `inodecalc` number whenever that is free (see
//! [`NodeTable::lookup`]), and entry replies (lookup, mkdir, readdirplus, ...) carry
//! attributes the kernel may cache for `cache.attr`. A node with another id (the
//! second name of a hard link, a collision) is answered with an attribute timeout of
//! zero; the kernel then asks `getattr`, whose reply carries the `inodecalc` number,
//! before it shows attributes to anyone. `stat`, `readdir` and `ls -i` therefore
//! agree.
//!
//! **Open files** carry the branch file descriptor, opened with the caller's flags.
//! An unlinked file keeps working through it. With passthrough the kernel does the
//! reads and writes on a backing file registered once per node; otherwise `read` and
//! `write` use the descriptor, and a write that runs out of space moves the file to
//! another branch (`moveonenospc`) and carries on.
//!
//! **Metrics.** With `metrics-listen`, each request, error answer, byte moved by
//! `read`/`write`, open and release is counted in [`Metrics`] (see
//! [`crate::metrics`]); without it the adapter holds none and counts nothing.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError, RwLock, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    AccessFlags, BackingId, CopyFileRangeFlags, FileAttr, FileHandle, FileType, Filesystem,
    FopenFlags, Generation, INodeNo, InitFlags, IoctlFlags, KernelConfig, LockOwner, Notifier,
    OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus,
    ReplyEmpty, ReplyEntry, ReplyIoctl, ReplyLseek, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr,
    Request, TimeOrNow, WriteFlags,
};

use crate::control::{self, is_control_file};
use crate::creds::{self, Caller};
use crate::daemon;
use crate::metrics::{Metrics, Op};
use crate::node::NodeTable;
use crate::options::{CacheFiles, FlushOnClose, Options, PassthroughIo, XattrMode};
use crate::pin::Pinner;
use crate::union::{Attr, DirEntry, Errno, Mode, Renamed, Union};

/// The largest write the kernel may send; it caps FUSE messages at 1 MiB anyway.
const MAX_WRITE: u32 = 1 << 20;

/// Open flags with passthrough: the kernel refuses a backing file together with
/// `FOPEN_KEEP_CACHE` (EIO), and direct I/O would bypass it, so `cache.files` does
/// not apply.
const PASSTHROUGH_OPEN: FopenFlags = FopenFlags::empty();

thread_local! {
    /// The buffer `read` fills, one per request thread.
    static READ_BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A file opened through the pool.
struct OpenFile {
    /// The node it was opened as, to find its path again for `moveonenospc`.
    node: u64,
    /// The open(2) flags it was opened with.
    flags: i32,
    /// The user who opened it.
    opener: u32,
    /// The pool as it was at the open: `state`'s branch index refers to its list,
    /// which a runtime branch edit must not shift under the file.
    union: Arc<Union>,
    /// The branch and descriptor; `moveonenospc` swaps both.
    state: RwLock<(usize, OwnedFd)>,
    /// The passthrough backing file, when the kernel does the I/O; held until
    /// release so the node keeps it while any of its opens needs it.
    backing: Option<Arc<BackingId>>,
    /// Held by an open through the page cache, which keeps passthrough off the node
    /// until it is released.
    _counted: CountedOpen,
}

/// How the opens of one node do their I/O. The kernel refuses (EIO) an open that
/// does not use passthrough while the node has a backing file, and a passthrough
/// open while the node has opens through the page cache (direct I/O opens count as
/// neither).
///
/// All live opens of a node are of the copy of the name on one branch
/// (`open_copy`) while that copy is still there: the kernel keeps one page cache
/// per node, which mmap uses even for direct I/O opens, and writes dirty pages back
/// through any writable open of the node. Opens of two branches' copies at once
/// would let each read, and write into, the other's file. (A file replaced or
/// deleted behind the pool, on any branch, is let through as mergerfs does: the
/// live opens then hold a file that is gone from the branches.)
#[derive(Default)]
struct NodeIo {
    backing: Weak<BackingId>,
    /// Device and inode of the branch file behind `backing`.
    backing_file: (u64, u64),
    /// Opens through the page cache.
    cached: usize,
    /// Opens of any kind.
    opens: usize,
    /// The copy those opens opened.
    open_copy: Option<OpenCopy>,
}

/// A copy of a name: the branch (by path, which a runtime change of the branch
/// list keeps, unlike its position) and the file (device, inode).
#[derive(Clone, PartialEq, Eq)]
struct OpenCopy {
    branch: PathBuf,
    file: (u64, u64),
}

impl OpenCopy {
    /// The copy open as `fd` on branch `branch` of `union`.
    fn of(union: &Union, branch: usize, fd: &OwnedFd) -> OpenCopy {
        OpenCopy {
            branch: union
                .branches()
                .nth(branch)
                .map(|b| b.path.clone())
                .unwrap_or_default(),
            file: crate::union::fstat(fd).map_or((0, 0), |st| (st.st_dev, st.st_ino)),
        }
    }
}

impl NodeIo {
    /// Whether nothing about the node needs keeping.
    fn unused(&self) -> bool {
        self.opens == 0 && self.cached == 0 && self.backing.strong_count() == 0
    }
}

/// What `cache.files=full`/`auto-full` remember of a node's last open: the copy
/// (device, inode) and, for `auto-full`, its mtime and size.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Stamp {
    copy: (u64, u64),
    times: (i64, i64, i64),
}

/// Counts one open (and whether it goes through the page cache) in its node's
/// [`NodeIo`] until dropped.
struct CountedOpen {
    node: u64,
    cached: bool,
    io: Arc<Mutex<HashMap<u64, NodeIo>>>,
}

impl Drop for CountedOpen {
    fn drop(&mut self) {
        let mut io = lock(&self.io);
        if let Some(entry) = io.get_mut(&self.node) {
            entry.opens = entry.opens.saturating_sub(1);
            if self.cached {
                entry.cached = entry.cached.saturating_sub(1);
            }
            if entry.unused() {
                io.remove(&self.node);
            }
        }
    }
}

/// What an entry reply carries (see `UnionFs::entry_reply`).
struct EntryReply {
    attr: FileAttr,
    attr_ttl: Duration,
    entry_ttl: Duration,
}

impl EntryReply {
    /// The reply for `attr` as node `node`: the attributes keep their timeout only
    /// when the node id is the `inodecalc` number, and a stand-in (see
    /// [`NodeTable::lookup_listed`]) keeps neither timeout.
    fn of(node: u64, attr: &Attr, ttls: (Duration, Duration), stand_in: bool) -> EntryReply {
        let mut fa = file_attr(&attr.stat);
        fa.ino = INodeNo(node);
        let exact = node == attr.stat.st_ino && !stand_in;
        EntryReply {
            attr: fa,
            attr_ttl: if exact { ttls.0 } else { Duration::ZERO },
            entry_ttl: if stand_in { Duration::ZERO } else { ttls.1 },
        }
    }

    /// The one timeout of replies that have room for only one (create,
    /// readdirplus): the shorter.
    fn ttl(&self) -> Duration {
        self.attr_ttl.min(self.entry_ttl)
    }
}

/// An open directory: its node (whose path follows renames while it is open) and
/// its merged listing, built when reading starts at offset 0.
struct OpenDir {
    node: INodeNo,
    listing: Mutex<Option<Arc<Vec<DirEntry>>>>,
}

/// The union filesystem as a FUSE filesystem.
pub struct UnionFs {
    /// The pool in force. Each request clones the pointer and works on that
    /// snapshot; a control-file change swaps in a new pool.
    union: Arc<RwLock<Arc<Union>>>,
    /// The counters, when `metrics-listen` turned them on; `None` costs each request
    /// one check and nothing else.
    metrics: Option<Arc<Metrics>>,
    /// `pin-threads`, when set: gives each thread its CPUs on its first request.
    pinner: Option<Arc<Pinner>>,
    /// Serialises control-file changes, so none is lost to a concurrent one.
    control: Arc<Mutex<()>>,
    /// When the pool was mounted, as the control file's times.
    started: i64,
    nodes: Mutex<NodeTable>,
    files: Mutex<HashMap<u64, Arc<OpenFile>>>,
    dirs: Mutex<HashMap<u64, Arc<OpenDir>>>,
    next_handle: AtomicU64,
    /// Whether opens are served by FUSE passthrough; set in `init`, cleared for good
    /// when the kernel refuses a backing file.
    passthrough: AtomicBool,
    /// Per node with opens: its backing file while any open uses it (one per node,
    /// as the kernel requires), and how many of its opens use the page cache.
    node_io: Arc<Mutex<HashMap<u64, NodeIo>>>,
    /// `cache.files=auto-full`: each node's (mtime, mtime ns, size) at its last open.
    stamps: Mutex<HashMap<u64, Stamp>>,
    /// Held exclusively by a rename over its branches, and shared by an open that
    /// tries again after meeting the one-copy rule of [`NodeIo`] (EBUSY). A rename
    /// that replaces a name with a copy on another branch is two steps (the rename
    /// there, then the old copy's unlink); an open in between finds both copies.
    /// Once the rename is done, the name has one. On a local file system the
    /// replacement is atomic.
    renaming: RwLock<()>,
    /// `link-cow`: the nodes a write open is opening (its link possibly being
    /// broken, a copy made), until its open is registered; other opens of those
    /// nodes wait, so that every open of a node holds one file.
    cow_opening: (Mutex<HashSet<u64>>, Condvar),
    /// Tells the kernel about changes it cannot see; set once the session exists.
    notifier: Arc<OnceLock<Notifier>>,
}

/// A write open's turn at a node under `link-cow` (see `UnionFs::cow_opening`),
/// given back when dropped.
struct CowTurn<'a> {
    gate: &'a (Mutex<HashSet<u64>>, Condvar),
    node: u64,
}

impl Drop for CowTurn<'_> {
    fn drop(&mut self) {
        lock(&self.gate.0).remove(&self.node);
        self.gate.1.notify_all();
    }
}

/// Locks a mutex; a panic in another request must not take the whole pool down.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// ENOENT for a node the kernel holds (an open or a getattr by node id) means its
/// name was unlinked or renamed over, behind the kernel's cached entry or in a race
/// with it: ESTALE makes the kernel look the name up again and retry once, as it
/// would have found it gone or replaced on a local file system.
fn stale(e: fuser::Errno) -> fuser::Errno {
    if e == fuser::Errno::ENOENT {
        fuser::Errno::ESTALE
    } else {
        e
    }
}

fn fuse_errno(e: Errno) -> fuser::Errno {
    fuser::Errno::from_i32(e.0)
}

/// The thread's last errno as a reply error.
fn last_errno() -> fuser::Errno {
    fuse_errno(Errno::from(io::Error::last_os_error()))
}

/// Requests whose every access to the branches is made with [`Caller::serve`] (or
/// through a descriptor, or not at all): a thread serving them may keep acting as
/// the caller of the request before (see [`crate::creds`]). Every other request
/// starts with the daemon's own ids, and acts as its caller through
/// [`Caller::run`] where it should.
fn serves_as_caller(op: Op) -> bool {
    matches!(
        op,
        Op::Lookup
            | Op::Forget
            | Op::Getattr
            | Op::Readlink
            | Op::Open
            | Op::Read
            | Op::Flush
            | Op::Release
            | Op::Opendir
            | Op::Readdir
            | Op::Readdirplus
            | Op::Releasedir
            | Op::Unlink
            | Op::Rmdir
            | Op::Create
            | Op::Mkdir
            | Op::Mknod
            | Op::Symlink
            | Op::Setattr
            | Op::Getxattr
            | Op::Listxattr
            | Op::Access
    )
}

/// Whether changing a mode of `current` to `new` only drops set-user-ID and/or
/// set-group-ID.
fn only_clears_set_id(current: u32, new: u32) -> bool {
    let set_id = libc::S_ISUID | libc::S_ISGID;
    let (current, new) = (current & 0o7777, new & 0o7777);
    new != current && new & !current == 0 && (current & !new) & !set_id == 0
}

fn caller(req: &Request) -> Caller {
    Caller::from_process(req.uid(), req.gid(), req.pid())
}

/// Whether `req`'s caller is in a group: its own, or one of its process's.
fn in_groups_of(req: &Request) -> impl Fn(libc::gid_t) -> bool + '_ {
    move |gid| gid == req.gid() || caller(req).groups.contains(&gid)
}

/// Runs `op` with the caller's filesystem ids and groups (root's requests as they
/// are), so that each branch checks the caller's permissions on every copy an
/// operation touches, as mergerfs does. The kernel's `default_permissions` checked
/// only the copy the pool shows; lhfs, acting as root, would otherwise change hidden
/// copies the caller may not touch (make another user's copy set-user-ID, empty a
/// file the caller may not write).
fn as_caller<T>(
    req: &Request,
    op: impl FnOnce() -> Result<T, fuser::Errno>,
) -> Result<T, fuser::Errno> {
    caller(req).run(op)
}

fn time(secs: i64, nsecs: i64) -> SystemTime {
    let nanos = u32::try_from(nsecs).unwrap_or(0);
    match u64::try_from(secs) {
        Ok(s) => UNIX_EPOCH + Duration::new(s, nanos),
        Err(_) => UNIX_EPOCH - Duration::new(secs.unsigned_abs(), 0) + Duration::new(0, nanos),
    }
}

fn file_type(mode: u32) -> FileType {
    match mode & libc::S_IFMT {
        libc::S_IFDIR => FileType::Directory,
        libc::S_IFLNK => FileType::Symlink,
        libc::S_IFIFO => FileType::NamedPipe,
        libc::S_IFSOCK => FileType::Socket,
        libc::S_IFCHR => FileType::CharDevice,
        libc::S_IFBLK => FileType::BlockDevice,
        _ => FileType::RegularFile,
    }
}

/// The FUSE form of a `stat`; `st_ino` is already the `inodecalc` number.
fn file_attr(st: &libc::stat) -> FileAttr {
    FileAttr {
        ino: INodeNo(st.st_ino),
        size: u64::try_from(st.st_size).unwrap_or(0),
        blocks: u64::try_from(st.st_blocks).unwrap_or(0),
        atime: time(st.st_atime, st.st_atime_nsec),
        mtime: time(st.st_mtime, st.st_mtime_nsec),
        ctime: time(st.st_ctime, st.st_ctime_nsec),
        crtime: UNIX_EPOCH,
        kind: file_type(st.st_mode),
        perm: (st.st_mode & 0o7777) as u16,
        nlink: u32::try_from(st.st_nlink).unwrap_or(u32::MAX),
        uid: st.st_uid,
        gid: st.st_gid,
        rdev: st.st_rdev as u32,
        blksize: u32::try_from(st.st_blksize).unwrap_or(4096),
        flags: 0,
    }
}

/// The capabilities lhfs asks the kernel for at mount time.
fn init_flags(options: &Options) -> Vec<InitFlags> {
    let mut flags = vec![
        InitFlags::FUSE_BIG_WRITES,
        InitFlags::FUSE_PARALLEL_DIROPS,
        // readdirplus when the listing is read from its start or names in it were
        // looked up (`ls -l`), plain readdir otherwise.
        InitFlags::FUSE_DO_READDIRPLUS,
        InitFlags::FUSE_READDIRPLUS_AUTO,
        // open(O_TRUNC) comes as one OPEN that truncates the file opened, as in
        // mergerfs; without it the kernel sends a truncate first, which the action
        // policy (epall) applies to every copy of the file on every branch.
        InitFlags::FUSE_ATOMIC_O_TRUNC,
        // lhfs clears set-ID bits itself on write, truncate and chown (see
        // `setattr`), so the kernel may remember that a file has no
        // `security.capability`: without this it asks for it (one request) before
        // every write it does itself, which is every passthrough write.
        InitFlags::FUSE_HANDLE_KILLPRIV_V2,
    ];
    for (on, flag) in [
        (options.async_read, InitFlags::FUSE_ASYNC_READ),
        // Shared mmap of files opened with direct I/O (cache.files=off).
        (
            options.direct_io_allow_mmap,
            InitFlags::FUSE_DIRECT_IO_ALLOW_MMAP,
        ),
        (options.cache_symlinks, InitFlags::FUSE_CACHE_SYMLINKS),
        // The kernel checks ACLs; the umask is lhfs's to apply (see `Union::create`),
        // as a folder's default ACL replaces it.
        (options.posix_acl, InitFlags::FUSE_POSIX_ACL),
        (options.posix_acl, InitFlags::FUSE_DONT_MASK),
    ] {
        if on {
            flags.push(flag);
        }
    }
    flags
}

/// The mode of an entry to make, from the mode and umask of the request. With
/// `posix-acl` the kernel leaves the umask to lhfs (a folder's default ACL replaces
/// it); otherwise it has applied it already. Where the pool shows no extended
/// attributes (`xattr=noattr` or `nosys`), it shows no default ACL either, and the
/// umask always applies.
fn new_mode(union: &Union, mode: u32, umask: u32) -> Mode {
    let options = union.options();
    if options.posix_acl && options.xattr == XattrMode::Passthrough {
        Mode::new(mode, umask)
    } else {
        Mode::new(mode & !(umask & 0o7777), 0)
    }
}

/// The flags of an open with direct I/O (`cache.files=off`).
fn direct_io(options: &Options) -> FopenFlags {
    if options.parallel_direct_writes {
        FopenFlags::FOPEN_DIRECT_IO | FopenFlags::FOPEN_PARALLEL_DIRECT_WRITES
    } else {
        FopenFlags::FOPEN_DIRECT_IO
    }
}

/// `FOPEN_NOFLUSH` for an open with `flags` of `fd` whose close `flush-on-close`
/// skips. With `opened-for-write`, a file on a filesystem whose close cannot report
/// anything (see [`close_reports_nothing`]) is not flushed either: the flush would
/// close a duplicate descriptor for nothing, at the cost of one more request per close.
fn no_flush(options: &Options, flags: i32, fd: &OwnedFd) -> FopenFlags {
    let for_writing = flags & libc::O_ACCMODE != libc::O_RDONLY;
    let flush = match options.flush_on_close {
        FlushOnClose::Never => false,
        FlushOnClose::Always => true,
        FlushOnClose::OpenedForWrite => for_writing && !close_reports_nothing(fd),
    };
    if flush {
        FopenFlags::empty()
    } else {
        FopenFlags::FOPEN_NOFLUSH
    }
}

/// What a write by a caller without `CAP_FSETID` does to a file's mode on any
/// filesystem, which the kernel leaves to the daemon for direct I/O
/// (`FUSE_WRITE_KILL_SUIDGID`): set-user-ID goes, and set-group-ID too when the group
/// may execute or the caller is not in the file's group (`in_group`). lhfs writes as
/// root, which would keep both. Whether the mode changed.
fn kill_suid_sgid(
    fd: &OwnedFd,
    in_group: impl FnOnce(libc::gid_t) -> bool,
) -> Result<bool, fuser::Errno> {
    let st = crate::union::fstat(fd).map_err(fuse_errno)?;
    let mode = st.st_mode;
    let mut kill = mode & libc::S_ISUID;
    if mode & libc::S_ISGID != 0 && (mode & libc::S_IXGRP != 0 || !in_group(st.st_gid)) {
        kill |= libc::S_ISGID;
    }
    if kill == 0 {
        return Ok(false);
    }
    // SAFETY: plain syscall on our open fd.
    check(unsafe { libc::fchmod(fd.as_raw_fd(), mode & 0o7777 & !kill) })?;
    Ok(true)
}

/// A listxattr answer (NUL-terminated names) without the `trusted.*` names.
fn without_trusted(names: &[u8]) -> Vec<u8> {
    names
        .split_inclusive(|&b| b == 0)
        .filter(|name| !name.starts_with(b"trusted."))
        .flatten()
        .copied()
        .collect()
}

/// The inode-flag ioctls lhfs answers (`chattr`, `lsattr`). The kernel itself asks
/// for the extended form (`FS_IOC_FSGETXATTR`) before it changes flags.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum FlagsIoctl {
    Get,
    Set,
    GetX,
    SetX,
}

/// `FS_IOC_FSGETXATTR` and `FS_IOC_FSSETXATTR`: a `struct fsxattr` of 28 bytes.
const FS_IOC_FSGETXATTR: u32 = 0x801c_581f;
const FS_IOC_FSSETXATTR: u32 = 0x401c_5820;
const FSXATTR_SIZE: usize = 28;

impl FlagsIoctl {
    /// `FS_IOC_GETFLAGS`/`SETFLAGS` (the size in the number is a `long`, the value
    /// an `int`), their 32-bit forms from 32-bit programs (`compat`) only, as the
    /// kernel takes them, and the `fsxattr` pair.
    fn of(cmd: u32, compat: bool) -> Option<FlagsIoctl> {
        let (get, set) = if compat {
            (libc::FS_IOC32_GETFLAGS, libc::FS_IOC32_SETFLAGS)
        } else {
            (libc::FS_IOC_GETFLAGS, libc::FS_IOC_SETFLAGS)
        };
        let cmd = libc::Ioctl::from(cmd);
        if cmd == get {
            Some(FlagsIoctl::Get)
        } else if cmd == set {
            Some(FlagsIoctl::Set)
        } else if cmd == FS_IOC_FSGETXATTR.into() {
            Some(FlagsIoctl::GetX)
        } else if cmd == FS_IOC_FSSETXATTR.into() {
            Some(FlagsIoctl::SetX)
        } else {
            None
        }
    }
}

/// Flags only a privileged caller may change: immutable and append-only
/// (`CAP_LINUX_IMMUTABLE`), and ext4's journalled data (`CAP_SYS_RESOURCE`).
const PRIVILEGED_FLAGS: libc::c_int = 0x10 | 0x20 | 0x4000;

fn inode_flags(fd: &OwnedFd) -> Result<libc::c_int, fuser::Errno> {
    let mut flags: libc::c_int = 0;
    // SAFETY: FS_IOC_GETFLAGS writes one int through the pointer, which is valid.
    check(unsafe { libc::ioctl(fd.as_raw_fd(), libc::FS_IOC_GETFLAGS, &mut flags) })?;
    Ok(flags)
}

/// Sets the inode flags of `fd` for a caller `uid` on a file owned by `owner`, with
/// the kernel's rules: the owner or root only, and immutable and append-only by
/// root only (lhfs itself runs as root, so the branch would allow anything).
fn set_inode_flags(
    fd: &OwnedFd,
    wanted: libc::c_int,
    uid: u32,
    owner: u32,
) -> Result<(), fuser::Errno> {
    if uid != 0 {
        if uid != owner {
            return Err(fuser::Errno::EPERM);
        }
        if (inode_flags(fd)? ^ wanted) & PRIVILEGED_FLAGS != 0 {
            return Err(fuser::Errno::EPERM);
        }
    }
    // SAFETY: FS_IOC_SETFLAGS reads one int through the pointer, which is valid.
    check(unsafe { libc::ioctl(fd.as_raw_fd(), libc::FS_IOC_SETFLAGS, &wanted) })
}

/// Filesystems whose files have no `flush` operation in Linux: closing a duplicate of
/// one of their descriptors always succeeds and does nothing (write errors show at
/// fsync, not close). Network and stacked filesystems (NFS, SMB, FUSE, overlayfs,
/// ecryptfs) and f2fs have one, and so does anything not listed.
const CLOSE_REPORTS_NOTHING: [u32; 9] = [
    0xEF53,      // ext2, ext3, ext4
    0x5846_5342, // xfs
    0x9123_683E, // btrfs
    0x0102_1994, // tmpfs
    0x3153_464A, // jfs
    0x5265_4973, // reiserfs
    0x2011_BAB0, // exfat
    0x4D44,      // vfat, msdos
    0x482B,      // hfsplus
];

/// Whether `fd` is on a filesystem of [`CLOSE_REPORTS_NOTHING`]. False when that
/// cannot be told.
fn close_reports_nothing(fd: &OwnedFd) -> bool {
    let mut st = std::mem::MaybeUninit::<libc::statfs>::uninit();
    // SAFETY: `st` has room for a statfs; fstatfs fills it when it succeeds.
    if unsafe { libc::fstatfs(fd.as_raw_fd(), st.as_mut_ptr()) } < 0 {
        return false;
    }
    // SAFETY: fstatfs succeeded and filled the struct.
    let kind = unsafe { st.assume_init() }.f_type;
    // Magic numbers are 32 bits; `f_type`'s own width differs by architecture.
    CLOSE_REPORTS_NOTHING.contains(&(kind as u32))
}

fn timespec(time: Option<TimeOrNow>) -> libc::timespec {
    let (tv_sec, tv_nsec) = match time {
        None => (0, libc::UTIME_OMIT),
        Some(TimeOrNow::Now) => (0, libc::UTIME_NOW),
        Some(TimeOrNow::SpecificTime(t)) => match t.duration_since(UNIX_EPOCH) {
            Ok(d) => (d.as_secs() as i64, i64::from(d.subsec_nanos())),
            // Before 1970, fuser 0.18 hands the kernel's (seconds, nanoseconds) over
            // as the epoch minus (-seconds, nanoseconds), so that is what is taken
            // apart here: the kernel's own pair, fraction included.
            Err(e) => {
                let d = e.duration();
                (-(d.as_secs() as i64), i64::from(d.subsec_nanos()))
            }
        },
    };
    libc::timespec { tv_sec, tv_nsec }
}

/// Turns a libc return value into a result.
fn check(rc: libc::c_int) -> Result<(), fuser::Errno> {
    if rc < 0 {
        Err(last_errno())
    } else {
        Ok(())
    }
}

/// Writes all of `data` at `offset`, or fails with what was written so far.
fn write_all(fd: &OwnedFd, data: &[u8], offset: u64) -> (usize, Result<(), Errno>) {
    let mut done = 0;
    while done < data.len() {
        let at = offset.saturating_add(done as u64) as libc::off64_t;
        // SAFETY: writes from the unwritten part of `data`, whose length is passed.
        let n = unsafe {
            libc::pwrite64(
                fd.as_raw_fd(),
                data[done..].as_ptr().cast(),
                data.len() - done,
                at,
            )
        };
        match usize::try_from(n) {
            Ok(0) => return (done, Err(Errno(libc::EIO))),
            Ok(n) => done += n,
            Err(_) => {
                let e = Errno::from(io::Error::last_os_error());
                if e.0 != libc::EINTR {
                    return (done, Err(e));
                }
            }
        }
    }
    (done, Ok(()))
}

impl UnionFs {
    /// A filesystem serving `union`.
    pub fn new(union: Arc<Union>) -> UnionFs {
        let started = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0));
        UnionFs {
            union: Arc::new(RwLock::new(union)),
            metrics: None,
            pinner: None,
            control: Arc::new(Mutex::new(())),
            started,
            nodes: Mutex::new(NodeTable::new()),
            files: Mutex::new(HashMap::new()),
            dirs: Mutex::new(HashMap::new()),
            next_handle: AtomicU64::new(1),
            passthrough: AtomicBool::new(false),
            node_io: Arc::new(Mutex::new(HashMap::new())),
            stamps: Mutex::new(HashMap::new()),
            renaming: RwLock::new(()),
            cow_opening: (Mutex::new(HashSet::new()), Condvar::new()),
            notifier: Arc::new(OnceLock::new()),
        }
    }

    /// With `link-cow`, waits while a write open of `node` is under way; a write
    /// open (`writing`) then takes its turn, which it holds until its open is
    /// registered (dropping the turn).
    fn cow_turn(&self, union: &Union, node: u64, writing: bool) -> Option<CowTurn<'_>> {
        if !union.options().link_cow {
            return None;
        }
        let gate = &self.cow_opening;
        let mut opening = lock(&gate.0);
        while opening.contains(&node) {
            opening = gate.1.wait(opening).unwrap_or_else(PoisonError::into_inner);
        }
        writing.then(|| {
            opening.insert(node);
            CowTurn { gate, node }
        })
    }

    /// This filesystem counting into `metrics`.
    pub fn with_metrics(self, metrics: Arc<Metrics>) -> UnionFs {
        UnionFs {
            metrics: Some(metrics),
            ..self
        }
    }

    /// Pins each FUSE thread as `pinner` says, on the thread's first request.
    pub fn with_pinner(self, pinner: Arc<Pinner>) -> UnionFs {
        UnionFs {
            pinner: Some(pinner),
            ..self
        }
    }

    /// The pool in force at each call, for readers outside the FUSE session (the
    /// metrics endpoint); it follows control-file changes.
    pub fn pool(&self) -> impl Fn() -> Arc<Union> + Send + Sync + 'static {
        let union = Arc::clone(&self.union);
        move || Arc::clone(&union.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// The loop that follows disks mounted on (or lazily unmounted from) branch
    /// folders while the pool runs: every `every`, a branch whose folder names
    /// another directory than its held root gets its root opened again, as
    /// mergerfs, which goes by path, sees such a disk at once. Ends when the pool
    /// does.
    pub fn branch_watcher(&self, every: Duration) -> impl FnOnce() + Send + 'static {
        let union = Arc::downgrade(&self.union);
        let control = Arc::clone(&self.control);
        move || loop {
            std::thread::sleep(every);
            let Some(union) = union.upgrade() else {
                return;
            };
            let current = || Arc::clone(&union.read().unwrap_or_else(PoisonError::into_inner));
            if current().moved_roots().is_empty() {
                continue;
            }
            // As a control-file change is made: one at a time, on the pool in force.
            let _serial = lock(&control);
            let pool = current();
            let moved: Vec<String> = pool
                .moved_roots()
                .iter()
                .map(|b| b.path.display().to_string())
                .collect();
            if moved.is_empty() {
                continue;
            }
            let branches: Vec<_> = pool.branches().cloned().collect();
            *union.write().unwrap_or_else(PoisonError::into_inner) =
                Arc::new(pool.with_branches(&branches));
            crate::daemon::log(&format!(
                "branch folder {} now holds another filesystem (mounted or unmounted); \
                 the pool uses it from now on",
                moved.join(", ")
            ));
        }
    }

    /// Where the session's notifier goes once the session is made.
    pub fn notifier_slot(&self) -> Arc<OnceLock<Notifier>> {
        Arc::clone(&self.notifier)
    }

    /// The pool in force, for one request.
    fn union(&self) -> Arc<Union> {
        Arc::clone(&self.union.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// unlink and rmdir (`folder`): remove `name` from the branches, then its node
    /// (and a folder's subtree) from the table.
    fn remove_name(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        reply: ReplyEmpty,
        folder: bool,
    ) {
        let remove = if folder { Union::rmdir } else { Union::unlink };
        let result = self.child(parent, name).and_then(|path| {
            // A folder's last attributes, for the kernel's inode of it that outlives
            // it: recorded before the branches lose it, since another request can ask
            // for them (a permission check of a parallel `rm -rf`) the moment they do.
            let recorded = if folder {
                self.record_removal(&path)
            } else {
                None
            };
            let removed = caller(req).serve(|| remove(&self.union(), &path).map_err(fuse_errno));
            if let (Err(_), Some(id)) = (&removed, recorded) {
                lock(&self.nodes).set_removed(id, None);
            }
            removed?;
            let mut nodes = lock(&self.nodes);
            let path = nodes.current(parent.0, name, &path).into_owned();
            nodes.remove(&path);
            Ok(())
        });
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(self.failed(e)),
        }
    }

    /// Records the folder at `path`, about to be removed, as removed (its attributes
    /// with no links) if the kernel holds a node of it; returns the node. As on a
    /// local file system, a removed folder still answers `fstat`, lists empty and
    /// holds no names (ENOENT) through a descriptor, instead of failing with ESTALE.
    fn record_removal(&self, path: &Path) -> Option<u64> {
        let id = lock(&self.nodes).id(path)?;
        let mut attr = self.union().getattr(path).ok()?;
        attr.stat.st_nlink = 0;
        lock(&self.nodes).set_removed(id, Some(attr.stat));
        Some(id)
    }

    /// The attributes of node `ino` if it is a folder removed through the pool
    /// (see [`NodeTable::removed`]).
    fn removed_folder(&self, ino: INodeNo) -> Option<libc::stat> {
        lock(&self.nodes).removed(ino.0)
    }

    /// Applies a setattr to the record of node `ino` if it is a removed folder, and
    /// returns the record.
    fn change_removed_folder(
        &self,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        times: Option<[libc::timespec; 2]>,
    ) -> Option<libc::stat> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let (now_sec, now_nsec) = (now.as_secs() as i64, i64::from(now.subsec_nanos()));
        lock(&self.nodes).change_removed(ino.0, |st| {
            if let Some(mode) = mode {
                st.st_mode = (st.st_mode & libc::S_IFMT) | (mode & 0o7777);
            }
            st.st_uid = uid.unwrap_or(st.st_uid);
            st.st_gid = gid.unwrap_or(st.st_gid);
            for (i, t) in times.iter().flatten().enumerate() {
                let (sec, nsec) = match t.tv_nsec {
                    libc::UTIME_OMIT => continue,
                    libc::UTIME_NOW => (now_sec, now_nsec),
                    _ => (t.tv_sec, t.tv_nsec),
                };
                if i == 0 {
                    (st.st_atime, st.st_atime_nsec) = (sec, nsec);
                } else {
                    (st.st_mtime, st.st_mtime_nsec) = (sec, nsec);
                }
            }
            (st.st_ctime, st.st_ctime_nsec) = (now_sec, now_nsec);
        })
    }

    /// mknod, mkdir and symlink: make `name` in `parent` with `make`, acting as the
    /// caller, then reply with its new node.
    fn new_name(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        reply: ReplyEntry,
        make: impl FnOnce(&Union, &Caller, &Path) -> Result<Attr, Errno>,
    ) {
        let result = self.child(parent, name).and_then(|path| {
            let caller = caller(req);
            let attr = caller
                .serve(|| make(&self.union(), &caller, &path))
                .map_err(fuse_errno)?;
            Ok((path, attr))
        });
        match result {
            Ok((path, attr)) => self.reply_entry(reply, (parent, name), &path, &attr),
            Err(e) => reply.error(self.failed(e)),
        }
    }

    /// The attributes of the control file.
    fn control_attr(&self) -> Attr {
        Attr {
            branch: 0,
            stat: control::control_stat(self.started),
            branch_ino: 0,
        }
    }

    fn attr_ttl(&self) -> Duration {
        Duration::from_secs(self.union().options().cache_attr)
    }

    /// `cache.attr` and `cache.entry`, read together.
    fn ttls(&self) -> (Duration, Duration) {
        let union = self.union();
        let options = union.options();
        (
            Duration::from_secs(options.cache_attr),
            Duration::from_secs(options.cache_entry),
        )
    }

    /// The path of a node. A node without one lost its name through the pool (an
    /// unlink, or a rename over it) while the kernel still had it cached: ESTALE
    /// makes the kernel look the name up again and retry, so a reader racing a
    /// `rename(tmp, name)` opens the new file instead of failing with ENOENT, and an
    /// `open(O_CREAT)` racing an unlink creates the file.
    fn path(&self, node: INodeNo) -> Result<PathBuf, fuser::Errno> {
        lock(&self.nodes)
            .path(node.0)
            .map(Path::to_path_buf)
            .ok_or(fuser::Errno::ESTALE)
    }

    /// The path of `name` in the folder node `parent`; in a folder removed through
    /// the pool there is no name (ENOENT, as in a removed folder on a local file
    /// system; see [`NodeTable::removed`]).
    fn child(&self, parent: INodeNo, name: &OsStr) -> Result<PathBuf, fuser::Errno> {
        let nodes = lock(&self.nodes);
        nodes.child_path(parent.0, name).ok_or_else(|| {
            if nodes.removed(parent.0).is_some() {
                fuser::Errno::ENOENT
            } else {
                fuser::Errno::ESTALE
            }
        })
    }

    fn file(&self, fh: FileHandle) -> Result<Arc<OpenFile>, fuser::Errno> {
        lock(&self.files)
            .get(&fh.0)
            .cloned()
            .ok_or(fuser::Errno::EBADF)
    }

    /// The open directory `fh` and its merged listing: built anew when reading starts
    /// at offset 0, kept otherwise (offsets index it, so it stays as built until a
    /// rewind). Built as the caller of `req`: a branch's copy of the folder the caller
    /// may not read adds nothing, as in mergerfs.
    fn listing(
        &self,
        req: &Request,
        fh: FileHandle,
        offset: u64,
    ) -> Result<(Arc<OpenDir>, Arc<Vec<DirEntry>>), fuser::Errno> {
        let dir = lock(&self.dirs)
            .get(&fh.0)
            .cloned()
            .ok_or(fuser::Errno::EBADF)?;
        let listing = {
            let mut listing = lock(&dir.listing);
            match &*listing {
                Some(built) if offset > 0 => Arc::clone(built),
                _ => {
                    let built = self.path(dir.node).and_then(|path| {
                        let union = self.union();
                        caller(req)
                            .serve(|| merged_listing(&union, &path))
                            .map_err(fuse_errno)
                    });
                    // A folder removed through the pool lists empty, as on a local
                    // file system.
                    let built = match built {
                        Err(_) if self.removed_folder(dir.node).is_some() => Vec::new(),
                        other => other?,
                    };
                    Arc::clone(listing.insert(Arc::new(built)))
                }
            }
        };
        Ok((dir, listing))
    }

    fn handle(&self) -> u64 {
        self.next_handle.fetch_add(1, Ordering::Relaxed)
    }

    /// Counts a lookup of `name` in `parent` (found at `path`) and replies with its
    /// new or known node.
    fn reply_entry(&self, reply: ReplyEntry, at: (INodeNo, &OsStr), path: &Path, attr: &Attr) {
        let e = self.entry_reply(at, path, attr, self.ttls());
        reply.entry_with_ttls(&e.attr_ttl, &e.entry_ttl, &e.attr, Generation(0));
    }

    /// Counts a lookup of `name` in `parent` (found at `path`; recorded where it is
    /// now, see [`NodeTable::current`]) and returns what to answer with: the
    /// attributes, carrying the node id as `ino`, and the timeouts `ttls`
    /// (attributes, name). When the node id is not the `inodecalc` number, the
    /// attributes go out with a zero timeout, so that the kernel asks `getattr` for
    /// the real `st_ino` (see the module doc).
    fn entry_reply(
        &self,
        (parent, name): (INodeNo, &OsStr),
        path: &Path,
        attr: &Attr,
        ttls: (Duration, Duration),
    ) -> EntryReply {
        let node = {
            let mut nodes = lock(&self.nodes);
            let path = nodes.current(parent.0, name, path);
            nodes.lookup(&path, attr.stat.st_ino)
        };
        EntryReply::of(node, attr, ttls, false)
    }

    /// [`Self::entry_reply`] for an entry of a readdirplus reply, whose node id is
    /// also the listing's `d_ino`: a second name of a file whose node is live stands
    /// in with that node and zero timeouts (see [`NodeTable::lookup_listed`]).
    fn listed_entry(
        &self,
        (parent, name): (INodeNo, &OsStr),
        path: &Path,
        attr: &Attr,
        ttls: (Duration, Duration),
    ) -> EntryReply {
        let inode = attr.stat.st_ino;
        let candidate = lock(&self.nodes).stand_in_for(path, inode);
        // The live node's name must still show this inode (checked without the lock).
        let same_file = candidate.is_some_and(|other| {
            self.union()
                .getattr(&other)
                .is_ok_and(|a| a.stat.st_ino == inode)
        });
        let (node, stand_in) = {
            let mut nodes = lock(&self.nodes);
            let path = nodes.current(parent.0, name, path);
            nodes.lookup_listed(&path, inode, same_file)
        };
        EntryReply::of(node, attr, ttls, stand_in)
    }

    /// An open file of `node`: the handle given, or any open of the node when its
    /// name is gone (fstat and fchmod of an unlinked file come without a handle).
    fn open_file_of(&self, node: INodeNo, fh: Option<FileHandle>) -> Option<Arc<OpenFile>> {
        if let Some(file) = fh.and_then(|fh| self.file(fh).ok()) {
            return Some(file);
        }
        if lock(&self.nodes).path(node.0).is_some() {
            return None;
        }
        self.any_open_file_of(node)
    }

    /// One of the live opens of `node`: all of them hold the same copy (see
    /// [`NodeIo`]).
    fn any_open_file_of(&self, node: INodeNo) -> Option<Arc<OpenFile>> {
        self.open_file_where(node, |_| true)
    }

    /// A live open of `node` that `keep` accepts.
    fn open_file_where(
        &self,
        node: INodeNo,
        keep: impl Fn(&OpenFile) -> bool,
    ) -> Option<Arc<OpenFile>> {
        lock(&self.files)
            .values()
            .find(|f| f.node == node.0 && keep(f))
            .cloned()
    }

    /// `result` of a request about `node` that came without a handle (the xattr
    /// calls), or, when it failed because the name is gone while a file of the node
    /// is still open (unlinked while open), `op` on that file's descriptor: a plain
    /// filesystem serves attributes through such a descriptor too.
    fn or_detached<T>(
        &self,
        node: INodeNo,
        result: Result<T, fuser::Errno>,
        op: impl FnOnce(&Union, &OwnedFd) -> Result<T, Errno>,
    ) -> Result<T, fuser::Errno> {
        match result {
            Err(e) if e == fuser::Errno::ESTALE || e == fuser::Errno::ENOENT => {
                let Some(file) = self.open_file_of(node, None) else {
                    return Err(e);
                };
                let state = file.state.read().unwrap_or_else(PoisonError::into_inner);
                // The options in force now (`xattr` may have changed since the open).
                op(&self.union(), &state.1).map_err(fuse_errno)
            }
            other => other,
        }
    }

    /// A descriptor for an ioctl on `node`: the open file `fh` serves, or for a
    /// folder (or a handle the kernel opened itself) the entry the open policy finds.
    fn ioctl_fd(&self, node: INodeNo, fh: FileHandle) -> Result<OwnedFd, fuser::Errno> {
        if let Ok(file) = self.file(fh) {
            let state = file.state.read().unwrap_or_else(PoisonError::into_inner);
            return state.1.try_clone().map_err(|e| fuse_errno(e.into()));
        }
        let path = self.path(node)?;
        if is_control_file(&path) {
            return Err(fuser::Errno::ENOTTY);
        }
        self.union()
            .open(&path, libc::O_RDONLY | libc::O_NONBLOCK)
            .map(|(_, fd)| fd)
            .map_err(fuse_errno)
    }

    /// The attributes of an open file, or of `node`'s path when there is none.
    fn attr_of(&self, node: INodeNo, fh: Option<FileHandle>) -> Result<Attr, fuser::Errno> {
        match self.open_file_of(node, fh) {
            Some(file) => {
                let path = self.path(node).unwrap_or_default();
                let state = file.state.read().unwrap_or_else(PoisonError::into_inner);
                file.union
                    .fstat(state.0, &path, &state.1)
                    .map_err(fuse_errno)
            }
            None => {
                let path = self.path(node)?;
                if is_control_file(&path) {
                    return Ok(self.control_attr());
                }
                self.union().getattr(&path).map_err(fuse_errno)
            }
        }
    }

    /// The `FOPEN_*` flags `cache.files` asks for on opening `node` as `fd`.
    fn cache_flags(&self, node: u64, fd: &OwnedFd) -> (FopenFlags, Option<Stamp>) {
        let union = self.union();
        match union.options().cache_files {
            CacheFiles::Off => (direct_io(union.options()), None),
            CacheFiles::Partial => (FopenFlags::empty(), None),
            mode @ (CacheFiles::Full | CacheFiles::AutoFull) => {
                let Ok(st) = crate::union::fstat(fd) else {
                    return (FopenFlags::empty(), None);
                };
                let stamp = Stamp {
                    copy: (st.st_dev, st.st_ino),
                    times: (st.st_mtime, st.st_mtime_nsec, st.st_size),
                };
                // Pages kept from another copy of the name are never shown: an open
                // of another copy than the last one drops them. The stamp is kept
                // (`keep_stamp`) only once the open succeeds.
                let keep = match (mode, lock(&self.stamps).get(&node)) {
                    (_, None) => mode == CacheFiles::Full,
                    (CacheFiles::Full, Some(old)) => old.copy == stamp.copy,
                    (_, Some(old)) => *old == stamp,
                };
                let flags = if keep {
                    FopenFlags::FOPEN_KEEP_CACHE
                } else {
                    FopenFlags::empty()
                };
                (flags, Some(stamp))
            }
        }
    }

    /// Remembers what an open that succeeded found (see [`UnionFs::cache_flags`]).
    fn keep_stamp(&self, node: u64, stamp: Option<Stamp>) {
        if let Some(stamp) = stamp {
            lock(&self.stamps).insert(node, stamp);
        }
    }

    /// Whether `passthrough.io` covers an open with `flags`.
    fn wants_passthrough(&self, flags: i32) -> bool {
        if !self.passthrough.load(Ordering::Relaxed) {
            return false;
        }
        let mode = flags & libc::O_ACCMODE;
        match self.union().options().passthrough_io {
            PassthroughIo::Off => false,
            PassthroughIo::Ro => mode == libc::O_RDONLY,
            PassthroughIo::Wo => mode == libc::O_WRONLY,
            PassthroughIo::Rw => true,
        }
    }

    /// How an open of `node` with `flags` and `cache` (its `FOPEN_*` cache flags)
    /// does its I/O: the node's backing file when it has one (every open of such a
    /// node must use it, whatever `passthrough.io` says of its mode), else a new one
    /// registered through `open_backing` when `passthrough.io` covers the open and
    /// no open of the node uses the page cache; else none, and an open through the
    /// page cache is counted. Every open is counted with the branch of the copy it
    /// opened, and an open of another branch's copy than the live ones is refused
    /// (EBUSY, see [`NodeIo`]). The kernel opens a file of its own on the backing
    /// path for every open, with that open's flags, so the descriptor of whichever
    /// open comes first serves later opens of any mode.
    fn io_for(
        &self,
        node: u64,
        (branch, fd): (usize, &OwnedFd),
        flags: i32,
        cache: FopenFlags,
        open_backing: impl FnOnce(&OwnedFd) -> io::Result<BackingId>,
    ) -> Result<(Option<Arc<BackingId>>, CountedOpen), fuser::Errno> {
        let union = self.union();
        let copy = OpenCopy::of(&union, branch, fd);
        let file = copy.file;
        let mut io = lock(&self.node_io);
        let entry = io.entry(node).or_default();
        // Whether the copy the live opens hold is still on its branch at the name
        // (looked at with the daemon's ids: a copy hidden from this caller counts).
        let still_there = |held: &OpenCopy| {
            let Ok(path) = self.path(INodeNo(node)) else {
                return true;
            };
            creds::as_daemon_for(|| Ok::<_, io::Error>(union.copy_on(&held.branch, &path)))
                .map_or(true, |found| found == Some(held.file))
        };
        // Another copy of the name than the one the node's live opens (or its
        // backing file) use: another policy's pick, or the only one this caller can
        // reach. Its bytes must not meet theirs in the node's page cache (see
        // [`NodeIo`]), so it waits until they are closed.
        let alive = entry.backing.strong_count() > 0;
        let other_copy = match &entry.open_copy {
            Some(held) if entry.opens > 0 => held.branch != copy.branch && still_there(held),
            _ => false,
        };
        if other_copy || (alive && entry.backing_file != file) {
            if entry.unused() {
                io.remove(&node);
            }
            return Err(fuser::Errno::EBUSY);
        }
        let node_io = Arc::clone(&self.node_io);
        let count = |entry: &mut NodeIo, cached: bool| {
            entry.opens += 1;
            entry.open_copy = Some(copy.clone());
            if cached {
                entry.cached += 1;
            }
            CountedOpen {
                node,
                cached,
                io: Arc::clone(&node_io),
            }
        };
        if let Some(id) = entry.backing.upgrade() {
            // Every open of the node must use the backing file already registered.
            return Ok((Some(id), count(entry, false)));
        }
        if self.wants_passthrough(flags) && entry.cached == 0 {
            // Registered with the daemon's own ids, whoever opens: the kernel does
            // the passthrough I/O of every later open with these credentials.
            match creds::as_daemon_for(|| open_backing(fd)) {
                Ok(id) => {
                    let id = Arc::new(id);
                    entry.backing = Arc::downgrade(&id);
                    entry.backing_file = file;
                    return Ok((Some(id), count(entry, false)));
                }
                Err(e) => {
                    // Serve reads and writes ourselves from now on.
                    if self.passthrough.swap(false, Ordering::Relaxed) {
                        crate::daemon::log(&format!(
                            "FUSE passthrough unavailable ({e}); serving I/O in the daemon"
                        ));
                    }
                }
            }
        }
        let cached = !cache.contains(FopenFlags::FOPEN_DIRECT_IO);
        Ok((None, count(entry, cached)))
    }

    /// What a write into `fd` (of `node`) by `req`'s caller does to its mode when the
    /// caller is not root, as Linux does on any filesystem: the set-ID bits go (see
    /// [`kill_suid_sgid`]); the kernel then forgets the mode it had.
    fn written_by(&self, req: &Request, node: INodeNo, fd: &OwnedFd) -> Result<(), fuser::Errno> {
        let in_group = in_groups_of(req);
        if kill_suid_sgid(fd, in_group)? {
            if let Some(notifier) = self.notifier.get() {
                let _ = notifier.inval_inode(node, -1, 0);
            }
        }
        Ok(())
    }

    /// An open of `node` for writing by `req`'s caller.
    fn open_for_writing_by(&self, req: &Request, node: INodeNo) -> Option<Arc<OpenFile>> {
        self.open_file_where(node, |f| {
            f.opener == req.uid() && f.flags & libc::O_ACCMODE != libc::O_RDONLY
        })
    }

    /// The set-ID bits of `node` cleared, with the daemon's ids, for `req`'s caller
    /// who does not own it but has it open for writing: what the kernel asks with a
    /// setattr that sets nothing after a write it did itself (passthrough), where
    /// that caller's chown to -1:-1 fails. `None` when the caller has no such open
    /// (a chown to -1:-1 of another's set-ID file, refused as Linux does).
    fn kill_for_writer(&self, req: &Request, node: INodeNo) -> Option<Result<(), fuser::Errno>> {
        let file = self.open_for_writing_by(req, node)?;
        let state = file.state.read().unwrap_or_else(PoisonError::into_inner);
        let in_group = in_groups_of(req);
        Some(creds::as_daemon_for(|| kill_suid_sgid(&state.1, in_group)).map(|_| ()))
    }

    /// Whether `req`'s caller may have the kernel remove `node`'s file capability:
    /// root, the owner, or a caller who may write it. A user's own removal of
    /// `security.capability` never gets here (the kernel wants CAP_SETFCAP); the
    /// kernel makes one itself, without its permission checks, when a write or a
    /// chown clears privileges, and a chown to -1:-1 by another user must not strip
    /// the capability of a file that user cannot write.
    fn may_drop_capability(&self, req: &Request, node: INodeNo) -> bool {
        req.uid() == 0
            || self.open_for_writing_by(req, node).is_some()
            || caller(req)
                .serve(|| {
                    let owner = self.attr_of(node, None)?.stat.st_uid == req.uid();
                    Ok::<_, fuser::Errno>(owner || self.caller_may_write(node, None))
                })
                .unwrap_or(false)
    }

    /// Whether the caller the thread acts as may write `node`: through the open
    /// handle `fh` if it was opened for writing, else the copy the pool shows.
    fn caller_may_write(&self, node: INodeNo, fh: Option<FileHandle>) -> bool {
        if let Some(file) = self.open_file_of(node, fh) {
            return file.flags & libc::O_ACCMODE != libc::O_RDONLY;
        }
        self.path(node)
            .is_ok_and(|path| self.union().may_write(&path).is_ok())
    }

    /// Applies a `setxattr` on the control file by swapping in the changed pool.
    fn set_control(&self, name: &OsStr, value: &[u8]) -> Result<(), fuser::Errno> {
        let _serial = lock(&self.control);
        let next = control::set(&self.union(), name, value).map_err(fuse_errno)?;
        *self.union.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(next);
        Ok(())
    }

    /// Answers getxattr/listxattr: the size when asked with size 0, ERANGE when the
    /// caller's buffer is too small, the bytes otherwise.
    fn reply_xattr(&self, reply: ReplyXattr, value: Result<Vec<u8>, fuser::Errno>, size: u32) {
        match value {
            Err(e) => reply.error(self.failed(e)),
            Ok(v) if size == 0 => reply.size(u32::try_from(v.len()).unwrap_or(u32::MAX)),
            Ok(v) if v.len() > size as usize => reply.error(self.failed(fuser::Errno::ERANGE)),
            Ok(v) => reply.data(&v),
        }
    }

    /// Starts a request on this thread: pins the thread on its first request
    /// (`pin-threads`) and counts the request when metrics are on.
    fn begin(&self, op: Op) {
        if !serves_as_caller(op) {
            creds::as_daemon();
        }
        if let Some(pinner) = &self.pinner {
            if let Err(e) = pinner.pin_current() {
                daemon::log(&format!("pin-threads: setting a thread's CPUs: {e}"));
            }
        }
        if let Some(metrics) = &self.metrics {
            metrics.operation(op);
        }
    }

    /// Counts an error answer when metrics are on; returns the error to reply with.
    fn failed(&self, e: fuser::Errno) -> fuser::Errno {
        if let Some(metrics) = &self.metrics {
            metrics.error(e.code());
        }
        e
    }

    /// Registers an open file and returns its handle.
    /// The branch and a descriptor of the file a live open of `node` holds, if any.
    fn held_copy(&self, node: u64) -> Option<(usize, OwnedFd)> {
        let files = lock(&self.files);
        let open = files.values().find(|f| f.node == node)?;
        let state = open.state.read().unwrap_or_else(PoisonError::into_inner);
        let fd = state.1.try_clone().ok()?;
        Some((state.0, fd))
    }

    fn add_file(&self, file: OpenFile) -> u64 {
        if let Some(metrics) = &self.metrics {
            metrics.opened(file.backing.is_some());
        }
        let fh = self.handle();
        lock(&self.files).insert(fh, Arc::new(file));
        fh
    }

    /// `write` through the file's descriptor, with `moveonenospc` (the new branch
    /// picked as the `caller` sees the branches; asked only then).
    fn write_file(
        &self,
        caller: impl FnOnce() -> Caller,
        file: &OpenFile,
        offset: u64,
        data: &[u8],
    ) -> Result<usize, Errno> {
        let (written, result) = {
            let state = file.state.read().unwrap_or_else(PoisonError::into_inner);
            write_all(&state.1, data, offset)
        };
        let policy = match (result, file.union.options().moveonenospc) {
            (Ok(()), _) => return Ok(written),
            (Err(Errno(libc::ENOSPC | libc::EDQUOT)), Some(policy)) => policy,
            (Err(e), _) => return Err(e),
        };
        let path = lock(&self.nodes)
            .path(file.node)
            .map(Path::to_path_buf)
            .ok_or(Errno(libc::ENOSPC))?;
        let mut state = file.state.write().unwrap_or_else(PoisonError::into_inner);
        // The pool in force, not the one the file was opened under: a branch root
        // may have been opened again since (a disk mounted or unmounted there).
        let moved = self
            .union()
            .relocate(&caller(), &path, state.0, &state.1, file.flags, policy)
            .map_err(|_| Errno(libc::ENOSPC))?;
        let from = std::mem::replace(&mut *state, moved);
        self.follow_move(file, &path, &from.1, state.0);
        // Later opens find the copy the file moved to.
        let moved_to = OpenCopy::of(&self.union(), state.0, &state.1);
        if let Some(entry) = lock(&self.node_io).get_mut(&file.node) {
            entry.open_copy = Some(moved_to);
        }
        if let Some(metrics) = &self.metrics {
            metrics.moved();
        }
        let rest = offset.saturating_add(written as u64);
        let (more, result) = write_all(&state.1, &data[written..], rest);
        result.map(|()| written + more)
    }

    /// After `moved` went to `branch`, the other descriptors of its node that were
    /// on the file it left (`old`, now deleted) are opened again on the new copy, so
    /// that their reads and writes reach the file everyone sees. One being moved by
    /// another request meanwhile is left to that request. Opened with the daemon's
    /// ids: each descriptor's open was checked when it was made, and the copy has
    /// the owner and mode of the original.
    fn follow_move(&self, moved: &OpenFile, path: &Path, old: &OwnedFd, branch: usize) {
        let Ok(left) = crate::union::fstat(old) else {
            return;
        };
        let others: Vec<Arc<OpenFile>> = lock(&self.files)
            .values()
            .filter(|f| f.node == moved.node && !std::ptr::eq(f.as_ref(), moved))
            .cloned()
            .collect();
        let union = self.union();
        for other in others {
            let Ok(mut state) = other.state.try_write() else {
                continue;
            };
            let same = crate::union::fstat(&state.1)
                .is_ok_and(|st| (st.st_dev, st.st_ino) == (left.st_dev, left.st_ino));
            if !same {
                continue;
            }
            creds::as_daemon();
            if let Ok(fd) = union.reopen(branch, path, other.flags) {
                *state = (branch, fd);
            }
        }
    }
}

impl Filesystem for UnionFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        for flag in init_flags(self.union().options()) {
            // An older kernel without one of these still mounts.
            let _ = config.add_capabilities(flag);
        }
        if let Err(max) = config.set_max_write(MAX_WRITE) {
            let _ = config.set_max_write(max);
        }
        // SAFETY: geteuid has no failure mode.
        let root = unsafe { libc::geteuid() } == 0;
        if self.union().options().passthrough_io != PassthroughIo::Off {
            let enabled = root
                && config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok()
                && config.set_max_stack_depth(1).is_ok();
            if !enabled {
                crate::daemon::log(
                    "FUSE passthrough needs root and Linux 6.9; serving I/O in the daemon",
                );
            }
            self.passthrough.store(enabled, Ordering::Relaxed);
        }
        Ok(())
    }

    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        self.begin(Op::Lookup);
        let path = match self.child(parent, name) {
            Ok(path) => path,
            Err(e) => return reply.error(self.failed(e)),
        };
        if is_control_file(&path) {
            return self.reply_entry(reply, (parent, name), &path, &self.control_attr());
        }
        let union = self.union();
        match caller(req).serve(|| union.getattr(&path)) {
            Ok(attr) => self.reply_entry(reply, (parent, name), &path, &attr),
            Err(Errno(libc::ENOENT)) if union.options().cache_negative_entry > 0 => {
                // Node id 0 is a negative entry the kernel keeps for the entry timeout.
                let ttl = Duration::from_secs(union.options().cache_negative_entry);
                // SAFETY: libc::stat is plain integers, for which all zeroes is valid.
                let mut fa = file_attr(&unsafe { std::mem::zeroed() });
                fa.ino = INodeNo(0);
                reply.entry_with_ttls(&Duration::ZERO, &ttl, &fa, Generation(0));
            }
            Err(e) => reply.error(self.failed(fuse_errno(e))),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.begin(Op::Forget);
        let mut nodes = lock(&self.nodes);
        nodes.forget(ino.0, nlookup);
        if nodes.path(ino.0).is_none() {
            lock(&self.stamps).remove(&ino.0);
        }
    }

    fn getattr(&self, req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        self.begin(Op::Getattr);
        let attr = caller(req).serve(|| self.attr_of(ino, fh));
        match attr
            .map(|a| a.stat)
            .map_err(|e| (e, self.removed_folder(ino)))
        {
            Ok(stat) | Err((_, Some(stat))) => reply.attr(&self.attr_ttl(), &file_attr(&stat)),
            // The name the kernel knows is gone (see `stale`).
            Err((e, None)) => reply.error(self.failed(stale(e))),
        }
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        self.begin(Op::Setattr);
        let times =
            (atime.is_some() || mtime.is_some()).then(|| [timespec(atime), timespec(mtime)]);
        // A setattr that sets nothing is chown(2) to -1:-1, which Linux answers by
        // clearing set-user-ID (and set-group-ID where the group may execute or the
        // caller is not in it) on anything but a folder, for its owner. With
        // FUSE_HANDLE_KILLPRIV_V2 it is also how the kernel asks for those bits to
        // go after a write it did itself (passthrough) by a caller without
        // CAP_FSETID, owner or not (see `kill_for_writer`). So it is passed on as
        // that chown, made as the caller, and each branch's kernel applies the rule.
        // Not for root: the kernel sends the same request after it removed a file
        // capability for root's write, which keeps the set-ID bits.
        let kill_set_id = req.uid() != 0
            && mode.is_none()
            && uid.is_none()
            && gid.is_none()
            && size.is_none()
            && times.is_none()
            && ctime.is_none();
        let result = caller(req).serve(|| {
            // A mode change by someone other than the owner that only drops
            // set-user-ID/set-group-ID, from a caller who may write the file, is the
            // kernel clearing them for that caller's write, truncate, fallocate or
            // copy: done with the daemon's ids, as Linux does it whoever owns the
            // file. (default_permissions refuses other chmods by non-owners.)
            let clears_set_id = match mode {
                Some(new) if req.uid() != 0 => self.attr_of(ino, fh).is_ok_and(|attr| {
                    attr.stat.st_uid != req.uid()
                        && only_clears_set_id(attr.stat.st_mode, new)
                        && self.caller_may_write(ino, fh)
                }),
                _ => false,
            };
            match &self.open_file_of(ino, fh) {
                // Through the open descriptor: works after the name is gone.
                Some(file) => (|| {
                    let state = file.state.read().unwrap_or_else(PoisonError::into_inner);
                    let fd = state.1.as_raw_fd();
                    // SAFETY (all four): plain syscalls on our open fd; `t` outlives the call.
                    if let Some(mode) = mode {
                        let fchmod = || check(unsafe { libc::fchmod(fd, mode & 0o7777) });
                        if clears_set_id {
                            creds::as_daemon_for(fchmod)?;
                        } else {
                            fchmod()?;
                        }
                    }
                    if uid.is_some() || gid.is_some() || kill_set_id {
                        let (u, g) = (uid.unwrap_or(u32::MAX), gid.unwrap_or(u32::MAX));
                        check(unsafe { libc::fchown(fd, u, g) })?;
                    }
                    if let Some(size) = size {
                        check(unsafe { libc::ftruncate(fd, size as libc::off_t) })?;
                    }
                    if let Some(t) = times {
                        check(unsafe { libc::futimens(fd, t.as_ptr()) })?;
                    }
                    Ok(())
                })(),
                None => (|| {
                    let path = self.path(ino)?;
                    let union = &self.union();
                    match mode {
                        Some(mode) if clears_set_id => union.clear_set_id(&path, mode & 0o7777),
                        Some(mode) => union.chmod(&path, mode & 0o7777),
                        None => Ok(()),
                    }
                    .map_err(fuse_errno)?;
                    if uid.is_some() || gid.is_some() || kill_set_id {
                        union.chown(&path, uid, gid).map_err(fuse_errno)?;
                    }
                    // The copy the node's opens write to, which the action policy
                    // need not have picked.
                    if kill_set_id {
                        if let Some(file) = self.any_open_file_of(ino) {
                            let state = file.state.read().unwrap_or_else(PoisonError::into_inner);
                            // SAFETY: plain syscall on our open fd.
                            check(unsafe {
                                libc::fchown(state.1.as_raw_fd(), u32::MAX, u32::MAX)
                            })?;
                        }
                    }
                    if let Some(size) = size {
                        union.truncate(&path, size).map_err(fuse_errno)?;
                    }
                    if let Some(t) = times {
                        union.utimens(&path, t).map_err(fuse_errno)?;
                    }
                    Ok(())
                })(),
            }
        });
        let result = match result {
            Err(e) if kill_set_id && e == fuser::Errno::EPERM => {
                self.kill_for_writer(req, ino).unwrap_or(Err(e))
            }
            result => result,
        };
        match result.and_then(|()| self.attr_of(ino, fh)) {
            Ok(attr) => reply.attr(&self.attr_ttl(), &file_attr(&attr.stat)),
            // A removed folder keeps its changes in its record, as a local file
            // system keeps them on the inode (`fchmod` through a descriptor).
            Err(e) => match size
                .is_none()
                .then(|| self.change_removed_folder(ino, mode, uid, gid, times))
                .flatten()
            {
                Some(stat) => reply.attr(&self.attr_ttl(), &file_attr(&stat)),
                None => reply.error(self.failed(e)),
            },
        }
    }

    fn readlink(&self, req: &Request, ino: INodeNo, reply: ReplyData) {
        self.begin(Op::Readlink);
        match self
            .path(ino)
            .and_then(|p| caller(req).serve(|| self.union().readlink(&p).map_err(fuse_errno)))
        {
            Ok(target) => reply.data(&target),
            Err(e) => reply.error(self.failed(e)),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        self.begin(Op::Mknod);
        self.new_name(req, parent, name, reply, |union, caller, path| {
            union.mknod(caller, path, new_mode(union, mode, umask), u64::from(rdev))
        });
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        self.begin(Op::Mkdir);
        self.new_name(req, parent, name, reply, |union, caller, path| {
            union.mkdir(caller, path, new_mode(union, mode & 0o7777, umask))
        });
    }

    fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.begin(Op::Unlink);
        self.remove_name(req, parent, name, reply, false);
    }

    fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.begin(Op::Rmdir);
        self.remove_name(req, parent, name, reply, true);
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        self.begin(Op::Symlink);
        self.new_name(req, parent, link_name, reply, |union, caller, path| {
            union.symlink(caller, target.as_os_str(), path)
        });
    }

    fn rename(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        self.begin(Op::Rename);
        // An exchange cannot be made atomic across branches. "No replace" can: the
        // kernel holds both folders locked for the whole request, so no other
        // request through the pool can create the target between the check and the
        // rename.
        let no_replace = flags == RenameFlags::RENAME_NOREPLACE;
        if !flags.is_empty() && !no_replace {
            return reply.error(self.failed(fuser::Errno::EINVAL));
        }
        let result = (|| {
            let old = self.child(parent, name)?;
            let new = self.child(newparent, newname)?;
            let union = self.union();
            // Looked up as the caller: a copy hidden from the caller is not revealed.
            if no_replace && caller(req).run(|| union.getattr(&new)).is_ok() {
                return Err(fuser::Errno::EEXIST);
            }
            let _renaming = self
                .renaming
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            let renamed = union.rename(&caller(req), &old, &new).map_err(fuse_errno)?;
            let mut nodes = lock(&self.nodes);
            let old = nodes.current(parent.0, name, &old).into_owned();
            let new = nodes.current(newparent.0, newname, &new).into_owned();
            match renamed {
                Renamed::InPlace => nodes.rename(&old, &new),
                // The entry's node follows it into the stash; the new name is a
                // symlink, a node of its own once looked up.
                Renamed::Stashed(stash) => {
                    nodes.rename(&old, &stash);
                    nodes.remove(&new);
                }
            }
            Ok(())
        })();
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(self.failed(e)),
        }
    }

    fn link(
        &self,
        req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        self.begin(Op::Link);
        let result = (|| {
            let old = self.path(ino)?;
            let new = self.child(newparent, newname)?;
            let linked = self
                .union()
                .link(&caller(req), &old, &new)
                .map_err(fuse_errno)?;
            Ok((new, linked))
        })();
        match result {
            Ok((new, linked)) if linked.symlinked => {
                // A symlink stands in for the link. The kernel takes only a reply of
                // the source's type, so it gets the source's attributes, uncached, as
                // from mergerfs; but under a node of the new name's own (the
                // symlink's), so that when the name later shows as the symlink it
                // is, only that node is dropped, never the source's.
                let own = self.union().getattr(&new).unwrap_or(linked.attr);
                let node = {
                    let mut nodes = lock(&self.nodes);
                    let new = nodes.current(newparent.0, newname, &new);
                    nodes.lookup(&new, own.stat.st_ino)
                };
                let mut fa = file_attr(&linked.attr.stat);
                fa.ino = INodeNo(node);
                reply.entry(&Duration::ZERO, &fa, Generation(0));
            }
            Ok((new, linked)) => {
                // The new name is another node: the source's cached link count is
                // stale, so drop its cached attributes before answering.
                if let Some(notifier) = self.notifier.get() {
                    let _ = notifier.inval_inode(ino, -1, 0);
                }
                self.reply_entry(reply, (newparent, newname), &new, &linked.attr)
            }
            Err(e) => reply.error(self.failed(e)),
        }
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        self.begin(Op::Open);
        let union = self.union();
        let writing = flags.0 & libc::O_ACCMODE != libc::O_RDONLY;
        // Held until the open is registered, at the end.
        let _turn = self.cow_turn(&union, ino.0, writing);
        // Held (see `renaming`) only to try again after an open met another copy of
        // the name than its live opens hold: a rename in progress may have made it,
        // and once it is done the name has one copy. A normal open never waits, so a
        // branch that hangs an open holds up no other open.
        let mut renaming = None;
        let (branch, fd, cache, stamp, no_flush, backing, counted) = loop {
            // As the caller, always: the kernel checked the caller's permissions on
            // the copy its lookup found, but the open policy, run again now, may pick
            // another copy (another policy, a random one, or a copy the caller cannot
            // reach).
            let opened = match self.path(ino) {
                // The control file has no bytes: it is on no branch, and saying its
                // name went stale would only make the kernel ask again. ENOENT, as
                // mergerfs answers.
                Ok(path) if is_control_file(&path) => {
                    return reply.error(self.failed(fuser::Errno::ENOENT));
                }
                Ok(path) => caller(req).serve(|| {
                    if _turn.is_some()
                        && self.held_copy(ino.0).is_none()
                        // A copy that could not be made (no room, a folder the
                        // caller may not write): the open goes on, as mergerfs's.
                        && union
                            .break_hard_link(&path, flags.0 & libc::O_TRUNC != 0)
                            .unwrap_or(false)
                    {
                        // Another inode now, with one link: what the kernel knows
                        // of the node's attributes is out of date.
                        if let Some(notifier) = self.notifier.get() {
                            let _ = notifier.inval_inode(ino, -1, 0);
                        }
                    }
                    union.open(&path, flags.0).map_err(fuse_errno)
                }),
                // The name was replaced or removed since the kernel found the node:
                // the file a live open of the node holds, or ESTALE (the kernel looks
                // the name up again and retries).
                Err(e) => match self.held_copy(ino.0) {
                    Some((branch, held)) => caller(req)
                        .serve(|| union.open_again(&held, flags.0).map_err(fuse_errno))
                        .map(|fd| (branch, fd)),
                    None => Err(stale(e)),
                },
            };
            let (branch, fd) = match opened {
                Ok(opened) => opened,
                Err(e) => return reply.error(self.failed(stale(e))),
            };
            // A truncating open is a truncate (FUSE_ATOMIC_O_TRUNC): by anyone but
            // root it clears set-user-ID and set-group-ID as Linux does. The branch's
            // kernel did that for the caller; this also makes sure, and drops the
            // kernel's view of the attributes when a bit went.
            if flags.0 & libc::O_TRUNC != 0 && req.uid() != 0 {
                creds::as_daemon();
                let in_group = in_groups_of(req);
                match kill_suid_sgid(&fd, in_group) {
                    Ok(true) => {
                        if let Some(notifier) = self.notifier.get() {
                            let _ = notifier.inval_inode(ino, -1, 0);
                        }
                    }
                    Ok(false) => {}
                    Err(e) => return reply.error(self.failed(e)),
                }
            }
            let (cache, stamp) = self.cache_flags(ino.0, &fd);
            let no_flush = no_flush(union.options(), flags.0, &fd);
            match self.io_for(ino.0, (branch, &fd), flags.0, cache, |f| {
                reply.open_backing(f)
            }) {
                Ok((backing, counted)) => {
                    break (branch, fd, cache, stamp, no_flush, backing, counted);
                }
                Err(fuser::Errno::EBUSY) if renaming.is_none() => {
                    renaming = Some(self.renaming.read().unwrap_or_else(PoisonError::into_inner));
                }
                Err(e) => return reply.error(self.failed(e)),
            }
        };
        drop(renaming);
        self.keep_stamp(ino.0, stamp);
        let file = OpenFile {
            node: ino.0,
            flags: flags.0,
            opener: req.uid(),
            union,
            state: RwLock::new((branch, fd)),
            backing: backing.clone(),
            _counted: counted,
        };
        let fh = FileHandle(self.add_file(file));
        match backing {
            Some(id) => reply.opened_passthrough(fh, PASSTHROUGH_OPEN | no_flush, &id),
            None => reply.opened(fh, cache | no_flush),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        self.begin(Op::Read);
        let file = match self.file(fh) {
            Ok(file) => file,
            Err(e) => return reply.error(self.failed(e)),
        };
        let state = file.state.read().unwrap_or_else(PoisonError::into_inner);
        READ_BUFFER.with_borrow_mut(|buf| {
            // Each request thread reads into its own buffer, grown (and zeroed) once to
            // the largest read; a fresh 1 MiB allocation per read costs page faults.
            let size = size as usize;
            if buf.len() < size {
                buf.resize(size, 0);
            }
            // SAFETY: reads at most `size` bytes into `buf`, which holds at least that.
            let n = unsafe {
                libc::pread64(
                    state.1.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    size,
                    offset as libc::off64_t,
                )
            };
            match usize::try_from(n) {
                Ok(n) => {
                    if let Some(metrics) = &self.metrics {
                        metrics.read(n as u64);
                    }
                    reply.data(&buf[..n])
                }
                Err(_) => reply.error(self.failed(last_errno())),
            }
        })
    }

    fn write(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        self.begin(Op::Write);
        // Any write by someone other than root clears the set-ID bits of the file
        // written, as Linux does; the kernel asks for it on direct writes, and its own
        // mode change for cached writes goes to the copy the pool shows, which need
        // not be the one open here (func.open other than func.getattr).
        let kill_suidgid =
            write_flags.contains(WriteFlags::FUSE_WRITE_KILL_SUIDGID) || req.uid() != 0;
        let result = self.file(fh).and_then(|file| {
            if kill_suidgid {
                let state = file.state.read().unwrap_or_else(PoisonError::into_inner);
                self.written_by(req, ino, &state.1)?;
            }
            self.write_file(|| caller(req), &file, offset, data)
                .map_err(fuse_errno)
        });
        match result {
            Ok(n) => {
                if let Some(metrics) = &self.metrics {
                    metrics.written(n as u64);
                }
                reply.written(n as u32)
            }
            Err(e) => reply.error(self.failed(e)),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        self.begin(Op::Flush);
        let result = self.file(fh).and_then(|file| {
            let state = file.state.read().unwrap_or_else(PoisonError::into_inner);
            // Closing a duplicate reports what close(2) would (NFS branches flush
            // there) while the file stays open.
            // SAFETY: dup of our fd; the duplicate is closed right away.
            let dup = unsafe { libc::dup(state.1.as_raw_fd()) };
            check(dup)?;
            // SAFETY: closes the duplicate made above, which nothing else holds.
            check(unsafe { libc::close(dup) })
        });
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(self.failed(e)),
        }
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.begin(Op::Release);
        let file = lock(&self.files).remove(&fh.0);
        if let (Some(metrics), Some(file)) = (&self.metrics, &file) {
            metrics.released(file.backing.is_some());
        }
        let node = file.as_ref().map(|f| f.node);
        if let (Some(file), true) = (&file, self.union().options().dropcacheonclose) {
            let state = file.state.read().unwrap_or_else(PoisonError::into_inner);
            // SAFETY: advice on our open fd; failure only means the cache stays.
            unsafe { libc::posix_fadvise(state.1.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        }
        drop(file);
        if let Some(node) = node {
            let mut io = lock(&self.node_io);
            if io.get(&node).is_some_and(NodeIo::unused) {
                io.remove(&node);
            }
        }
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.begin(Op::Fsync);
        let result = self.file(fh).and_then(|file| {
            let state = file.state.read().unwrap_or_else(PoisonError::into_inner);
            let fd = state.1.as_raw_fd();
            // SAFETY: plain syscalls on our open fd.
            check(unsafe {
                if datasync {
                    libc::fdatasync(fd)
                } else {
                    libc::fsync(fd)
                }
            })
        });
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(self.failed(e)),
        }
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        self.begin(Op::Opendir);
        if let Err(e) = self.path(ino) {
            // A removed folder still opens (through `/proc/self/fd`), and lists empty.
            if self.removed_folder(ino).is_none() {
                return reply.error(self.failed(e));
            }
        }
        let fh = self.handle();
        let dir = OpenDir {
            node: ino,
            listing: Mutex::new(None),
        };
        lock(&self.dirs).insert(fh, Arc::new(dir));
        // cache.readdir: the kernel keeps the listing across opens and drops it when
        // the folder changes through the pool or shows another mtime.
        let flags = if self.union().options().cache_readdir {
            FopenFlags::FOPEN_CACHE_DIR | FopenFlags::FOPEN_KEEP_CACHE
        } else {
            FopenFlags::empty()
        };
        reply.opened(FileHandle(fh), flags);
    }

    fn readdir(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        self.begin(Op::Readdir);
        let (_, listing) = match self.listing(req, fh, offset) {
            Ok(listing) => listing,
            Err(e) => return reply.error(self.failed(e)),
        };
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        for (index, entry) in listing.iter().enumerate().skip(start) {
            let kind = file_type(entry.kind);
            if reply.add(INodeNo(entry.ino), index as u64 + 1, kind, &entry.name) {
                break;
            }
        }
        reply.ok();
    }

    /// readdir with each entry's lookup answer, so that `ls -l`, `find -type` and
    /// backup tools do not send a lookup per name. Every entry sent but `.` and `..`
    /// counts as a lookup of its node, as the kernel counts it.
    fn readdirplus(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        self.begin(Op::Readdirplus);
        let (dir, listing) = match self.listing(req, fh, offset) {
            Ok(listing) => listing,
            Err(e) => return reply.error(self.failed(e)),
        };
        // Where the folder is now: renamed while open, it is listed where it went.
        let dir_path = match self.path(dir.node) {
            Ok(path) => path,
            Err(e) => return reply.error(self.failed(e)),
        };
        let union = self.union();
        let ttls = self.ttls();
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        // Each entry's attributes as a lookup by the caller would find them.
        let listed = caller(req).serve(|| -> io::Result<()> {
            for (index, entry) in listing.iter().enumerate().skip(start) {
                let next = index as u64 + 1;
                if entry.name == "." || entry.name == ".." {
                    // `.` and `..`: the kernel takes only the name and inode number.
                    // SAFETY: libc::stat is plain integers, for which all zeroes is valid.
                    let mut stat: libc::stat = unsafe { std::mem::zeroed() };
                    (stat.st_mode, stat.st_ino) = (libc::S_IFDIR, entry.ino);
                    let fa = file_attr(&stat);
                    let full = reply.add(
                        fa.ino,
                        next,
                        &entry.name,
                        &Duration::ZERO,
                        &fa,
                        Generation(0),
                    );
                    if full {
                        break;
                    }
                    continue;
                }
                let path = dir_path.join(&entry.name);
                // An entry gone since the listing was built is left out, as a lookup
                // would not find it either.
                let Ok(attr) = union.getattr(&path) else {
                    continue;
                };
                let e = self.listed_entry((dir.node, &entry.name), &path, &attr, ttls);
                if reply.add(
                    e.attr.ino,
                    next,
                    &entry.name,
                    &e.ttl(),
                    &e.attr,
                    Generation(0),
                ) {
                    // Not sent: the lookup just counted never reaches the kernel.
                    lock(&self.nodes).forget(e.attr.ino.0, 1);
                    break;
                }
            }
            Ok(())
        });
        if let Err(e) = listed {
            return reply.error(self.failed(fuser::Errno::from(e)));
        }
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.begin(Op::Releasedir);
        lock(&self.dirs).remove(&fh.0);
        reply.ok();
    }

    fn statfs(&self, _req: &Request, ino: INodeNo, reply: ReplyStatfs) {
        self.begin(Op::Statfs);
        let path = self.path(ino).unwrap_or_else(|_| PathBuf::from("/"));
        match self.union().statfs(&path) {
            Ok(s) => reply.statfs(
                s.blocks,
                s.bfree,
                s.bavail,
                s.files,
                s.ffree,
                u32::try_from(s.bsize).unwrap_or(4096),
                u32::try_from(s.namemax).unwrap_or(255),
                u32::try_from(s.frsize).unwrap_or(4096),
            ),
            Err(e) => reply.error(self.failed(fuse_errno(e))),
        }
    }

    fn setxattr(
        &self,
        req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        self.begin(Op::Setxattr);
        let result = self.path(ino).and_then(|path| {
            if is_control_file(&path) {
                // Every key of the control file exists: XATTR_CREATE is EEXIST, as
                // in mergerfs.
                if flags & libc::XATTR_CREATE != 0 && control::get(&self.union(), name).is_ok() {
                    return Err(fuser::Errno::EEXIST);
                }
                return self.set_control(name, value);
            }
            if control::is_file_key(name) {
                return Err(fuser::Errno::ENOTSUP);
            }
            as_caller(req, || {
                self.union()
                    .setxattr(&path, name, value, flags)
                    .map_err(fuse_errno)
            })
        });
        let result = self.or_detached(ino, result, |union, fd| {
            if control::is_file_key(name) {
                return Err(Errno(libc::ENOTSUP));
            }
            as_caller(req, || {
                union
                    .fd_setxattr(fd, name, value, flags)
                    .map_err(fuse_errno)
            })
            .map_err(|e| Errno(e.code()))
        });
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(self.failed(e)),
        }
    }

    fn getxattr(&self, req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        self.begin(Op::Getxattr);
        let value = self.path(ino).and_then(|path| {
            let union = self.union();
            let value = if is_control_file(&path) {
                control::get(&union, name)
            } else {
                caller(req).serve(|| {
                    control::file_xattr(&union, &path, name)
                        .unwrap_or_else(|| union.getxattr(&path, name))
                })
            };
            value.map_err(fuse_errno)
        });
        let value = self.or_detached(ino, value, |union, fd| {
            caller(req).serve(|| union.fd_getxattr(fd, name))
        });
        // A removed folder holds no attributes any more (`ls -l` asks through it).
        let value = value.map_err(|e| match self.removed_folder(ino) {
            Some(_) => fuser::Errno::ENODATA,
            None => e,
        });
        self.reply_xattr(reply, value, size);
    }

    fn listxattr(&self, req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        self.begin(Op::Listxattr);
        let names = self.path(ino).and_then(|path| {
            if is_control_file(&path) {
                return Ok(control::list());
            }
            caller(req).serve(|| self.union().listxattr(&path).map_err(fuse_errno))
        });
        let names = self
            .or_detached(ino, names, |union, fd| {
                caller(req).serve(|| union.fd_listxattr(fd))
            })
            .or_else(|e| match self.removed_folder(ino) {
                Some(_) => Ok(Vec::new()),
                None => Err(e),
            })
            // Linux shows `trusted.*` names only to holders of CAP_SYS_ADMIN, which
            // lhfs keeps while acting as the caller.
            .map(|names| {
                if req.uid() == 0 {
                    names
                } else {
                    without_trusted(&names)
                }
            });
        self.reply_xattr(reply, names, size);
    }

    fn removexattr(&self, req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.begin(Op::Removexattr);
        let result = self.path(ino).and_then(|path| {
            if is_control_file(&path) || control::is_file_key(name) {
                return Err(fuser::Errno::ENOTSUP);
            }
            if name == "security.capability" && !self.may_drop_capability(req, ino) {
                return Err(fuser::Errno::EPERM);
            }
            as_caller(req, || {
                self.union().removexattr(&path, name).map_err(fuse_errno)
            })
        });
        let result = self.or_detached(ino, result, |union, fd| {
            if control::is_file_key(name) {
                return Err(Errno(libc::ENOTSUP));
            }
            as_caller(req, || union.fd_removexattr(fd, name).map_err(fuse_errno))
                .map_err(|e| Errno(e.code()))
        });
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(self.failed(e)),
        }
    }

    fn access(&self, req: &Request, ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        self.begin(Op::Access);
        // With default_permissions the kernel checks the mode bits itself; what is
        // left is whether the entry still exists for the caller.
        match caller(req).serve(|| self.attr_of(ino, None)) {
            Ok(_) => reply.ok(),
            Err(e) => reply.error(self.failed(e)),
        }
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        self.begin(Op::Create);
        let union = self.union();
        let created = self.child(parent, name).and_then(|path| {
            let mode = new_mode(&union, mode & 0o7777, umask);
            let caller = caller(req);
            let created = caller
                .serve(|| union.create(&caller, &path, flags, mode))
                .map_err(fuse_errno)?;
            Ok((path, created))
        });
        let (path, created) = match created {
            Ok(created) => created,
            Err(e) => return reply.error(self.failed(e)),
        };
        let e = self.entry_reply((parent, name), &path, &created.attr, self.ttls());
        let node = e.attr.ino.0;
        let no_flush = no_flush(union.options(), flags, &created.file);
        let (cache, stamp) = self.cache_flags(node, &created.file);
        let branch = created.attr.branch;
        let (backing, counted) =
            match self.io_for(node, (branch, &created.file), flags, cache, |f| {
                reply.open_backing(f)
            }) {
                Ok(io) => io,
                Err(e) => return reply.error(self.failed(e)),
            };
        self.keep_stamp(node, stamp);
        let file = OpenFile {
            node,
            flags,
            opener: req.uid(),
            union,
            state: RwLock::new((created.attr.branch, created.file)),
            backing: backing.clone(),
            _counted: counted,
        };
        let fh = FileHandle(self.add_file(file));
        let (fa, ttl) = (e.attr, e.ttl());
        match backing {
            Some(id) => reply.created_passthrough(
                &ttl,
                &fa,
                Generation(0),
                fh,
                PASSTHROUGH_OPEN | no_flush,
                &id,
            ),
            None => reply.created(&ttl, &fa, Generation(0), fh, cache | no_flush),
        }
    }

    /// The inode flags of `chattr` and `lsattr` (`FS_IOC_GETFLAGS`/`SETFLAGS`), on
    /// the file the open handle serves (a folder: the one the search policy finds),
    /// as mergerfs passes them through. Any other ioctl is ENOTTY.
    fn ioctl(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        flags: IoctlFlags,
        cmd: u32,
        in_data: &[u8],
        out_size: u32,
        reply: ReplyIoctl,
    ) {
        self.begin(Op::Ioctl);
        let compat = flags.contains(IoctlFlags::FUSE_IOCTL_COMPAT);
        let Some(op) = FlagsIoctl::of(cmd, compat) else {
            return reply.error(self.failed(fuser::Errno::ENOTTY));
        };
        let result = self.ioctl_fd(ino, fh).and_then(|fd| match op {
            FlagsIoctl::Get => {
                let flags = inode_flags(&fd)?;
                let mut out = i64::from(flags).to_le_bytes().to_vec();
                out.truncate((out_size as usize).min(out.len()));
                Ok(out)
            }
            FlagsIoctl::Set => {
                let mut raw = [0u8; 4];
                let n = in_data.len().min(4);
                raw[..n].copy_from_slice(&in_data[..n]);
                let wanted = libc::c_int::from_le_bytes(raw);
                let st = crate::union::fstat(&fd).map_err(fuse_errno)?;
                set_inode_flags(&fd, wanted, req.uid(), st.st_uid)?;
                Ok(Vec::new())
            }
            FlagsIoctl::GetX => {
                let mut fsx = [0u8; FSXATTR_SIZE];
                // SAFETY: FS_IOC_FSGETXATTR fills a struct fsxattr (28 bytes),
                // which `fsx` has room for.
                check(unsafe {
                    libc::ioctl(fd.as_raw_fd(), FS_IOC_FSGETXATTR.into(), fsx.as_mut_ptr())
                })?;
                let mut out = fsx.to_vec();
                out.truncate(out_size as usize);
                Ok(out)
            }
            FlagsIoctl::SetX => {
                // Project ids and every flag at once: root only (lhfs runs as root,
                // so the branch would allow anyone).
                if req.uid() != 0 {
                    return Err(fuser::Errno::EPERM);
                }
                let mut fsx = [0u8; FSXATTR_SIZE];
                let n = in_data.len().min(FSXATTR_SIZE);
                fsx[..n].copy_from_slice(&in_data[..n]);
                // SAFETY: FS_IOC_FSSETXATTR reads a struct fsxattr (28 bytes) from
                // `fsx`.
                check(unsafe {
                    libc::ioctl(fd.as_raw_fd(), FS_IOC_FSSETXATTR.into(), fsx.as_ptr())
                })?;
                Ok(Vec::new())
            }
        });
        match result {
            Ok(data) => reply.ioctl(0, &data),
            Err(e) => reply.error(self.failed(e)),
        }
    }

    fn fallocate(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        self.begin(Op::Fallocate);
        let result = self.file(fh).and_then(|file| {
            let state = file.state.read().unwrap_or_else(PoisonError::into_inner);
            if req.uid() != 0 {
                self.written_by(req, ino, &state.1)?;
            }
            // SAFETY: plain syscall on our open fd.
            check(unsafe {
                libc::fallocate64(
                    state.1.as_raw_fd(),
                    mode,
                    offset as libc::off64_t,
                    length as libc::off64_t,
                )
            })
        });
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(self.failed(e)),
        }
    }

    fn lseek(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        self.begin(Op::Lseek);
        let file = match self.file(fh) {
            Ok(file) => file,
            Err(e) => return reply.error(self.failed(e)),
        };
        let state = file.state.read().unwrap_or_else(PoisonError::into_inner);
        // SAFETY: plain syscall on our open fd (SEEK_DATA and SEEK_HOLE come here).
        let at = unsafe { libc::lseek64(state.1.as_raw_fd(), offset, whence) };
        if at < 0 {
            reply.error(self.failed(last_errno()));
        } else {
            reply.offset(at);
        }
    }

    fn copy_file_range(
        &self,
        req: &Request,
        _ino_in: INodeNo,
        fh_in: FileHandle,
        offset_in: u64,
        ino_out: INodeNo,
        fh_out: FileHandle,
        offset_out: u64,
        len: u64,
        _flags: CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        self.begin(Op::CopyFileRange);
        let (src, dst) = match (self.file(fh_in), self.file(fh_out)) {
            (Ok(src), Ok(dst)) => (src, dst),
            (Err(e), _) | (_, Err(e)) => return reply.error(self.failed(e)),
        };
        let src = src.state.read().unwrap_or_else(PoisonError::into_inner);
        let dst = dst.state.read().unwrap_or_else(PoisonError::into_inner);
        if req.uid() != 0 {
            if let Err(e) = self.written_by(req, ino_out, &dst.1) {
                return reply.error(self.failed(e));
            }
        }
        let mut off_in = offset_in as libc::off64_t;
        let mut off_out = offset_out as libc::off64_t;
        // A reply counts at most u32::MAX bytes.
        let len = len.min(u64::from(u32::MAX)) as usize;
        // SAFETY: both fds are open; the offsets are ours and updated by the call.
        let n = unsafe {
            libc::copy_file_range(
                src.1.as_raw_fd(),
                &mut off_in,
                dst.1.as_raw_fd(),
                &mut off_out,
                len,
                0,
            )
        };
        match u32::try_from(n) {
            Ok(n) => {
                // The bytes went from one pool file to another: read and written.
                if let Some(metrics) = &self.metrics {
                    metrics.read(u64::from(n));
                    metrics.written(u64::from(n));
                }
                reply.written(n)
            }
            Err(_) => reply.error(self.failed(last_errno())),
        }
    }
}

/// The listing of an open directory: `.`, `..`, then the merged names, each with the
/// inode number `getattr` shows.
fn merged_listing(union: &Union, path: &Path) -> Result<Vec<DirEntry>, Errno> {
    let mut names = union.readdir(path)?;
    if path == Path::new("/") {
        // The control file is reached by name only, never listed.
        let hidden = &control::CONTROL_FILE[1..];
        names.retain(|entry| entry.name != hidden);
    }
    let ino = |p: &Path| union.getattr(p).map_or(0, |a| a.stat.st_ino);
    let up = path.parent().unwrap_or(Path::new("/"));
    let mut listing = Vec::with_capacity(names.len() + 2);
    for (name, dir) in [(".", path), ("..", up)] {
        listing.push(DirEntry {
            name: name.into(),
            kind: libc::S_IFDIR,
            ino: ino(dir),
        });
    }
    listing.extend(names);
    Ok(listing)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_id_clearing_is_told_from_other_mode_changes() {
        assert!(only_clears_set_id(0o104777, 0o777));
        assert!(only_clears_set_id(0o6755, 0o2755));
        assert!(only_clears_set_id(0o6755, 0o755));
        assert!(!only_clears_set_id(0o4755, 0o4755), "no change");
        assert!(!only_clears_set_id(0o4755, 0o755 | 0o022), "adds write");
        assert!(!only_clears_set_id(0o4755, 0o655), "drops more");
        assert!(!only_clears_set_id(0o755, 0o4755), "adds the bit");
        assert!(
            !only_clears_set_id(0o1755, 0o755),
            "sticky is not a set-id bit"
        );
    }

    #[test]
    fn the_flag_ioctls_are_taken_in_the_form_the_caller_uses() {
        assert_eq!(FlagsIoctl::of(0x8008_6601, false), Some(FlagsIoctl::Get));
        assert_eq!(FlagsIoctl::of(0x4008_6602, false), Some(FlagsIoctl::Set));
        assert_eq!(FlagsIoctl::of(0x8004_6601, true), Some(FlagsIoctl::Get));
        assert_eq!(FlagsIoctl::of(0x4004_6602, true), Some(FlagsIoctl::Set));
        // A 64-bit program's 32-bit numbers are no flag ioctls, as for the kernel.
        assert_eq!(FlagsIoctl::of(0x8004_6601, false), None);
        assert_eq!(FlagsIoctl::of(0x4004_6602, false), None);
        assert_eq!(
            FlagsIoctl::of(FS_IOC_FSGETXATTR, false),
            Some(FlagsIoctl::GetX)
        );
        assert_eq!(
            FlagsIoctl::of(FS_IOC_FSSETXATTR, false),
            Some(FlagsIoctl::SetX)
        );
        assert_eq!(FlagsIoctl::of(0x5401, false), None);
    }

    #[test]
    fn init_flags_follow_the_options() {
        let defaults = init_flags(&Options::default());
        assert!(defaults.contains(&InitFlags::FUSE_ASYNC_READ));
        assert!(defaults.contains(&InitFlags::FUSE_DIRECT_IO_ALLOW_MMAP));
        assert!(defaults.contains(&InitFlags::FUSE_DO_READDIRPLUS));
        assert!(defaults.contains(&InitFlags::FUSE_ATOMIC_O_TRUNC));
        // The kernel asks lhfs to clear set-ID bits after a passthrough write (a
        // setattr that sets nothing) instead of asking for security.capability
        // before every write.
        assert!(defaults.contains(&InitFlags::FUSE_HANDLE_KILLPRIV_V2));
        assert!(!defaults.contains(&InitFlags::FUSE_CACHE_SYMLINKS));
        let o = Options::parse("async-read=false,direct-io-allow-mmap=false,cache.symlinks=true")
            .unwrap();
        let flags = init_flags(&o);
        assert!(!flags.contains(&InitFlags::FUSE_ASYNC_READ));
        assert!(!flags.contains(&InitFlags::FUSE_DIRECT_IO_ALLOW_MMAP));
        assert!(flags.contains(&InitFlags::FUSE_CACHE_SYMLINKS));
        // POSIX ACLs: the kernel checks them and leaves the umask to lhfs.
        assert!(!defaults.contains(&InitFlags::FUSE_POSIX_ACL));
        assert!(!defaults.contains(&InitFlags::FUSE_DONT_MASK));
        let flags = init_flags(&Options::parse("posix_acl=true").unwrap());
        assert!(flags.contains(&InitFlags::FUSE_POSIX_ACL));
        assert!(flags.contains(&InitFlags::FUSE_DONT_MASK));
    }

    #[test]
    fn trusted_names_are_left_out_of_a_listing() {
        assert_eq!(
            without_trusted(b"user.a\0trusted.t\0security.selinux\0trusted.x\0"),
            b"user.a\0security.selinux\0"
        );
        assert_eq!(without_trusted(b""), b"");
    }

    #[test]
    fn direct_io_opens_allow_parallel_writes_unless_told_not_to() {
        assert_eq!(
            direct_io(&Options::default()),
            FopenFlags::FOPEN_DIRECT_IO | FopenFlags::FOPEN_PARALLEL_DIRECT_WRITES
        );
        let o = Options::parse("parallel-direct-writes=false").unwrap();
        assert_eq!(direct_io(&o), FopenFlags::FOPEN_DIRECT_IO);
    }

    #[test]
    fn times_before_1970_keep_their_fraction() {
        use std::time::Duration;
        // The kernel's (seconds, nanoseconds) as fuser 0.18 turns them into a time.
        let at = |secs: i64, nanos: u32| {
            let t = timespec(Some(TimeOrNow::SpecificTime(
                UNIX_EPOCH - Duration::new(secs.unsigned_abs(), nanos),
            )));
            (t.tv_sec, t.tv_nsec)
        };
        // 1969-12-31 23:59:58.5 is (-2, 500000000).
        assert_eq!(at(-2, 500_000_000), (-2, 500_000_000));
        assert_eq!(at(-1, 1), (-1, 1));
        assert_eq!(at(-86_400, 0), (-86_400, 0));
        let after = timespec(Some(TimeOrNow::SpecificTime(
            UNIX_EPOCH + Duration::new(5, 7),
        )));
        assert_eq!((after.tv_sec, after.tv_nsec), (5, 7));
    }
}
