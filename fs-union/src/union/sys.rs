//! The system calls behind the union operations, each relative to a directory fd
//! that was resolved inside a branch.
//!
//! [`open_beneath`] is the only way a path below a branch root is turned into an fd:
//! `openat2` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS` refuses `..` escapes and
//! every symlink on the way, so no component can lead outside the branch. Kernels
//! without `openat2` get the same guarantee from a walk of `O_NOFOLLOW` opens. The
//! final component is then always handled with a call that does not follow it
//! (`fstatat(AT_SYMLINK_NOFOLLOW)`, `O_NOFOLLOW`, `unlinkat`, ...), so a symlink
//! is listed, read and removed as itself and never acted through.

use std::ffi::{CStr, CString, OsStr};
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;

use super::Errno;

/// How often an `openat2` interrupted by a concurrent rename (EAGAIN) is retried.
const OPENAT2_RETRIES: usize = 8;

/// Turns a negative libc return into the thread's errno.
fn check(rc: libc::c_int) -> Result<libc::c_int, Errno> {
    if rc < 0 {
        Err(Errno::last())
    } else {
        Ok(rc)
    }
}

fn check_size(rc: libc::ssize_t) -> Result<usize, Errno> {
    usize::try_from(rc).map_err(|_| Errno::last())
}

/// A name for a C call; names with NUL bytes cannot exist on disk.
pub(super) fn cstring(name: &OsStr) -> Result<CString, Errno> {
    CString::new(name.as_bytes()).map_err(|_| Errno(libc::EINVAL))
}

/// An entry addressed as (resolved parent directory, final name). The pool root is
/// (branch root, `.`).
pub(super) struct At {
    pub dir: OwnedFd,
    pub name: CString,
}

impl At {
    /// A path naming the entry through the daemon's own fd table, for the calls that
    /// have no `*at` form (the `l*xattr` family). The directory part is our fd, already
    /// resolved inside the branch; the `l` calls do not follow the final name.
    fn proc_path(&self) -> CString {
        let mut bytes = format!("/proc/self/fd/{}/", self.dir.as_raw_fd()).into_bytes();
        bytes.extend_from_slice(self.name.as_bytes());
        // Neither part holds a NUL byte: one is formatted digits, the other a CString.
        CString::new(bytes).unwrap_or_default()
    }
}

/// Opens `rel` (names joined by `/`, none empty, `.` or `..`; `.` alone for `root`
/// itself) below `root` with `flags`, following no symlink in any component and
/// never leaving `root`.
pub(super) fn open_beneath(
    root: &OwnedFd,
    rel: &[u8],
    flags: libc::c_int,
) -> Result<OwnedFd, Errno> {
    let path = CString::new(rel).map_err(|_| Errno(libc::EINVAL))?;
    // SAFETY: open_how is plain integers, for which all zeroes is valid.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (flags | libc::O_CLOEXEC) as u64;
    how.resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS;
    for _ in 0..OPENAT2_RETRIES {
        // SAFETY: `path` is NUL-terminated and `how` is a valid open_how whose size
        // is passed; the fd returned is ours alone.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                root.as_raw_fd(),
                path.as_ptr(),
                &how as *const libc::open_how,
                std::mem::size_of::<libc::open_how>(),
            )
        };
        if rc >= 0 {
            // SAFETY: a successful openat2 returns a new fd that nothing else owns.
            return Ok(unsafe { OwnedFd::from_raw_fd(rc as RawFd) });
        }
        match Errno::last() {
            Errno(libc::EAGAIN) => continue,
            Errno(libc::ENOSYS) => return open_walk(root, rel, flags),
            e => return Err(e),
        }
    }
    Err(Errno(libc::EAGAIN))
}

/// [`open_beneath`] for kernels without `openat2`: one `O_NOFOLLOW` open per
/// component, each relative to the previous directory.
pub(super) fn open_walk(root: &OwnedFd, rel: &[u8], flags: libc::c_int) -> Result<OwnedFd, Errno> {
    let dir_flags = libc::O_PATH | libc::O_DIRECTORY;
    let parts: Vec<&[u8]> = match rel {
        b"." => Vec::new(),
        _ => rel.split(|&b| b == b'/').collect(),
    };
    // openat2 refuses these with RESOLVE_BENEATH; the walk must not depend on its
    // callers for that.
    if parts.iter().any(|p| matches!(*p, b"" | b"." | b"..")) {
        return Err(Errno(libc::EXDEV));
    }
    let Some((last, walk)) = parts.split_last() else {
        return openat(root, c".", flags | libc::O_NOFOLLOW, 0);
    };
    let mut dir = openat(root, c".", dir_flags, 0)?;
    for part in walk {
        dir = openat(
            &dir,
            &cstring(OsStr::from_bytes(part))?,
            dir_flags | libc::O_NOFOLLOW,
            0,
        )?;
    }
    openat(
        &dir,
        &cstring(OsStr::from_bytes(last))?,
        flags | libc::O_NOFOLLOW,
        0,
    )
}

/// `open(2)` of an absolute path.
pub(super) fn open(path: &CStr, flags: libc::c_int) -> Result<OwnedFd, Errno> {
    // SAFETY: `path` is NUL-terminated; no mode argument is read without O_CREAT.
    let fd = check(unsafe { libc::open(path.as_ptr(), flags | libc::O_CLOEXEC) })?;
    // SAFETY: a successful open returns a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `openat(2)`; callers add `O_NOFOLLOW` where the name may be a symlink.
pub(super) fn openat(
    dir: &OwnedFd,
    name: &CStr,
    flags: libc::c_int,
    mode: libc::mode_t,
) -> Result<OwnedFd, Errno> {
    // SAFETY: `name` is NUL-terminated; the mode argument is read only with O_CREAT.
    let fd = check(unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            flags | libc::O_CLOEXEC,
            libc::c_uint::from(mode),
        )
    })?;
    // SAFETY: a successful openat returns a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Whether the thread's filesystem ids may write the entry (`faccessat` with
/// `AT_EACCESS`, which checks those ids rather than the real ones).
pub(super) fn may_write(at: &At) -> Result<(), Errno> {
    // SAFETY: the name is NUL-terminated; the fd is ours.
    check(unsafe {
        libc::faccessat(
            at.dir.as_raw_fd(),
            at.name.as_ptr(),
            libc::W_OK,
            libc::AT_EACCESS | libc::AT_SYMLINK_NOFOLLOW,
        )
    })
    .map(drop)
}

/// `lstat` of the entry.
pub(super) fn lstat(at: &At) -> Result<libc::stat, Errno> {
    let mut st = MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `st` has room for a stat; the name is NUL-terminated.
    check(unsafe {
        libc::fstatat(
            at.dir.as_raw_fd(),
            at.name.as_ptr(),
            st.as_mut_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })?;
    // SAFETY: fstatat filled the struct.
    Ok(unsafe { st.assume_init() })
}

/// `fstat` of an open fd.
pub(crate) fn fstat(fd: &OwnedFd) -> Result<libc::stat, Errno> {
    let mut st = MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `st` has room for a stat.
    check(unsafe { libc::fstat(fd.as_raw_fd(), st.as_mut_ptr()) })?;
    // SAFETY: fstat filled the struct.
    Ok(unsafe { st.assume_init() })
}

/// `fstatvfs` of an open fd (an `O_PATH` fd will do).
pub(super) fn fstatvfs(fd: &OwnedFd) -> Result<libc::statvfs, Errno> {
    let mut st = MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `st` has room for a statvfs.
    check(unsafe { libc::fstatvfs(fd.as_raw_fd(), st.as_mut_ptr()) })?;
    // SAFETY: fstatvfs filled the struct.
    Ok(unsafe { st.assume_init() })
}

pub(super) fn is_dir(st: &libc::stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFDIR
}

pub(super) fn mkdirat(at: &At, mode: libc::mode_t) -> Result<(), Errno> {
    // SAFETY: the name is NUL-terminated.
    check(unsafe { libc::mkdirat(at.dir.as_raw_fd(), at.name.as_ptr(), mode) }).map(drop)
}

pub(super) fn mknodat(at: &At, mode: libc::mode_t, rdev: libc::dev_t) -> Result<(), Errno> {
    // SAFETY: the name is NUL-terminated.
    check(unsafe { libc::mknodat(at.dir.as_raw_fd(), at.name.as_ptr(), mode, rdev) }).map(drop)
}

pub(super) fn symlinkat(target: &CStr, at: &At) -> Result<(), Errno> {
    // SAFETY: both strings are NUL-terminated.
    check(unsafe { libc::symlinkat(target.as_ptr(), at.dir.as_raw_fd(), at.name.as_ptr()) })
        .map(drop)
}

pub(super) fn readlinkat(at: &At) -> Result<Vec<u8>, Errno> {
    let mut buf = vec![0u8; libc::PATH_MAX as usize];
    loop {
        // SAFETY: the buffer length is passed; readlinkat writes at most that much.
        let n = check_size(unsafe {
            libc::readlinkat(
                at.dir.as_raw_fd(),
                at.name.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        })?;
        if n < buf.len() {
            buf.truncate(n);
            return Ok(buf);
        }
        // Possibly cut short: try again with more room.
        buf.resize(buf.len() * 2, 0);
    }
}

/// `unlinkat`; `flags` is 0 or `AT_REMOVEDIR`.
pub(super) fn unlinkat(at: &At, flags: libc::c_int) -> Result<(), Errno> {
    // SAFETY: the name is NUL-terminated.
    check(unsafe { libc::unlinkat(at.dir.as_raw_fd(), at.name.as_ptr(), flags) }).map(drop)
}

/// `renameat2` with `flags` (0 is plain `renameat`; `RENAME_NOREPLACE` answers
/// EEXIST when `to` exists).
pub(super) fn rename(from: &At, to: &At, flags: libc::c_uint) -> Result<(), Errno> {
    // SAFETY: both names are NUL-terminated; the flags are a plain integer.
    check(unsafe {
        libc::renameat2(
            from.dir.as_raw_fd(),
            from.name.as_ptr(),
            to.dir.as_raw_fd(),
            to.name.as_ptr(),
            flags,
        )
    })
    .map(drop)
}

/// `linkat` without `AT_SYMLINK_FOLLOW`: a symlink source is linked as itself.
pub(super) fn linkat(from: &At, to: &At) -> Result<(), Errno> {
    // SAFETY: both names are NUL-terminated.
    check(unsafe {
        libc::linkat(
            from.dir.as_raw_fd(),
            from.name.as_ptr(),
            to.dir.as_raw_fd(),
            to.name.as_ptr(),
            0,
        )
    })
    .map(drop)
}

/// chmod of the entry itself. There is no portable `lchmod`, so the entry is opened
/// with `O_PATH | O_NOFOLLOW` and changed through the daemon's fd entry in
/// `/proc/self/fd`; symlinks have no mode of their own and are refused.
pub(super) fn chmod(at: &At, mode: libc::mode_t) -> Result<(), Errno> {
    let fd = openat(&at.dir, &at.name, libc::O_PATH | libc::O_NOFOLLOW, 0)?;
    if fstat(&fd)?.st_mode & libc::S_IFMT == libc::S_IFLNK {
        return Err(Errno(libc::EOPNOTSUPP));
    }
    let path = CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .map_err(|_| Errno(libc::EINVAL))?;
    // SAFETY: the path is NUL-terminated and names our own fd, which is no symlink.
    check(unsafe { libc::chmod(path.as_ptr(), mode) }).map(drop)
}

/// lchown; `u32::MAX` leaves the id as it is.
pub(super) fn chown(at: &At, uid: libc::uid_t, gid: libc::gid_t) -> Result<(), Errno> {
    // SAFETY: the name is NUL-terminated.
    check(unsafe {
        libc::fchownat(
            at.dir.as_raw_fd(),
            at.name.as_ptr(),
            uid,
            gid,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
    .map(drop)
}

/// Sets atime and mtime of the entry itself (`UTIME_NOW` and `UTIME_OMIT` work).
pub(super) fn utimens(at: &At, times: &[libc::timespec; 2]) -> Result<(), Errno> {
    // SAFETY: the name is NUL-terminated and `times` holds two timespecs.
    check(unsafe {
        libc::utimensat(
            at.dir.as_raw_fd(),
            at.name.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
    .map(drop)
}

/// truncate of a regular file, never through a symlink and without blocking on a
/// FIFO that has no reader.
pub(super) fn truncate(at: &At, size: u64) -> Result<(), Errno> {
    let size = libc::off_t::try_from(size).map_err(|_| Errno(libc::EFBIG))?;
    let fd = openat(
        &at.dir,
        &at.name,
        libc::O_WRONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK,
        0,
    )?;
    if fstat(&fd)?.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Err(Errno(libc::EINVAL));
    }
    // SAFETY: plain syscall on our fd.
    check(unsafe { libc::ftruncate(fd.as_raw_fd(), size) }).map(drop)
}

/// Copies every byte of `src` (from its start) to `dst` at the same offsets, holes
/// included as zeroes; `dst` ends with `src`'s size.
pub(super) fn copy_data(src: &OwnedFd, dst: &OwnedFd) -> Result<(), Errno> {
    copy_range(src, dst, 0, fstat(src)?.st_size)
}

/// Copies `src` into the empty file `dst` with its holes kept: the whole file shared
/// where the file system can (`FICLONE`: btrfs, xfs), else only the ranges that hold
/// data (`SEEK_DATA`, `SEEK_HOLE`), `dst` then given `src`'s size. A sparse file of
/// 20 GiB holding little is copied as the little it holds.
pub(super) fn copy_sparse(src: &OwnedFd, dst: &OwnedFd) -> Result<(), Errno> {
    const FICLONE: libc::c_ulong = 0x4004_9409;
    // SAFETY: an ioctl between two descriptors of ours; it reads no memory.
    if unsafe { libc::ioctl(dst.as_raw_fd(), FICLONE, src.as_raw_fd()) } == 0 {
        return Ok(());
    }
    let size = fstat(src)?.st_size;
    let seek = |at: libc::off64_t, whence: libc::c_int| {
        // SAFETY: a plain syscall on our descriptor.
        let pos = unsafe { libc::lseek64(src.as_raw_fd(), at, whence) };
        if pos < 0 {
            Err(Errno::last())
        } else {
            Ok(pos)
        }
    };
    let mut at = 0;
    while at < size {
        let start = match seek(at, libc::SEEK_DATA) {
            Ok(start) => start,
            // No data past `at`: the rest is a hole.
            Err(Errno(libc::ENXIO)) => break,
            // No holes known here: everything is data.
            Err(Errno(libc::EINVAL)) => return copy_data(src, dst),
            Err(e) => return Err(e),
        };
        let end = seek(start, libc::SEEK_HOLE)?.min(size);
        copy_range(src, dst, start, end)?;
        at = end;
    }
    // SAFETY: plain syscall on our fd.
    check(unsafe { libc::ftruncate(dst.as_raw_fd(), size) }).map(drop)
}

/// Copies bytes `from..to` of `src` to the same offsets of `dst`.
fn copy_range(
    src: &OwnedFd,
    dst: &OwnedFd,
    from: libc::off64_t,
    size: libc::off64_t,
) -> Result<(), Errno> {
    let mut done = from;
    while done < size {
        let (mut off_in, mut off_out) = (done, done);
        let len = usize::try_from(size - done).unwrap_or(usize::MAX);
        // SAFETY: both fds are open; the offsets are ours and updated by the call.
        let n = unsafe {
            libc::copy_file_range(
                src.as_raw_fd(),
                &mut off_in,
                dst.as_raw_fd(),
                &mut off_out,
                len,
                0,
            )
        };
        match n {
            0 => break,
            n if n > 0 => done += n as libc::off64_t,
            _ => match Errno::last() {
                Errno(libc::EXDEV | libc::EINVAL | libc::EOPNOTSUPP | libc::ENOSYS) => {
                    return copy_by_reads(src, dst, done, size);
                }
                e => return Err(e),
            },
        }
    }
    Ok(())
}

/// [`copy_data`] with pread/pwrite, for file pairs `copy_file_range` cannot serve.
fn copy_by_reads(
    src: &OwnedFd,
    dst: &OwnedFd,
    mut done: libc::off64_t,
    size: libc::off64_t,
) -> Result<(), Errno> {
    let mut buf = vec![0u8; 1 << 20];
    while done < size {
        // SAFETY: the buffer and its length come as a pair.
        let n = unsafe { libc::pread64(src.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), done) };
        let n = check_size(n)?;
        if n == 0 {
            break;
        }
        let mut written = 0;
        while written < n {
            // SAFETY: writes the filled part of the buffer.
            let w = unsafe {
                libc::pwrite64(
                    dst.as_raw_fd(),
                    buf[written..n].as_ptr().cast(),
                    n - written,
                    done + written as libc::off64_t,
                )
            };
            written += check_size(w)?;
        }
        done += n as libc::off64_t;
    }
    Ok(())
}

/// `fsync` of an open fd.
pub(super) fn fsync(fd: &OwnedFd) -> Result<(), Errno> {
    // SAFETY: plain syscall on our fd.
    check(unsafe { libc::fsync(fd.as_raw_fd()) }).map(drop)
}

/// Reads a value of unknown size: asks for the size, then reads, again if it grew.
fn read_sized(
    mut call: impl FnMut(*mut libc::c_void, usize) -> libc::ssize_t,
) -> Result<Vec<u8>, Errno> {
    loop {
        let size = check_size(call(std::ptr::null_mut(), 0))?;
        let mut buf = vec![0u8; size];
        match check_size(call(buf.as_mut_ptr().cast(), buf.len())) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(buf);
            }
            Err(Errno(libc::ERANGE)) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Whether the folder open at `dir` has a default ACL (`system.posix_acl_default`),
/// which then sets the permissions of what is made in it instead of the umask.
pub(super) fn has_default_acl(dir: &OwnedFd) -> bool {
    // The folder itself, through the daemon's fd entry (`O_PATH` fds have no
    // `fgetxattr`): `.` below it, so that the entry's link is followed.
    let Ok(path) = CString::new(format!("/proc/self/fd/{}/.", dir.as_raw_fd())) else {
        return false;
    };
    // SAFETY: NUL-terminated strings; a null buffer of length 0 asks for the size.
    let size = unsafe {
        libc::lgetxattr(
            path.as_ptr(),
            c"system.posix_acl_default".as_ptr(),
            std::ptr::null_mut(),
            0,
        )
    };
    size > 0
}

pub(super) fn getxattr(at: &At, name: &CStr) -> Result<Vec<u8>, Errno> {
    let path = at.proc_path();
    // SAFETY: the strings are NUL-terminated; the buffer and its length come as a pair.
    read_sized(|buf, len| unsafe { libc::lgetxattr(path.as_ptr(), name.as_ptr(), buf, len) })
}

/// The NUL-separated attribute names of the entry.
pub(super) fn listxattr(at: &At) -> Result<Vec<u8>, Errno> {
    let path = at.proc_path();
    // SAFETY: as in `getxattr`.
    read_sized(|buf, len| unsafe { libc::llistxattr(path.as_ptr(), buf.cast(), len) })
}

pub(super) fn setxattr(
    at: &At,
    name: &CStr,
    value: &[u8],
    flags: libc::c_int,
) -> Result<(), Errno> {
    let path = at.proc_path();
    // SAFETY: the strings are NUL-terminated; the value and its length come as a pair.
    check(unsafe {
        libc::lsetxattr(
            path.as_ptr(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            flags,
        )
    })
    .map(drop)
}

pub(super) fn removexattr(at: &At, name: &CStr) -> Result<(), Errno> {
    let path = at.proc_path();
    // SAFETY: the strings are NUL-terminated.
    check(unsafe { libc::lremovexattr(path.as_ptr(), name.as_ptr()) }).map(drop)
}

/// The attribute calls on an open descriptor, for a file whose name is gone
/// (unlinked while open): `fgetxattr`, `flistxattr`, `fsetxattr`, `fremovexattr`.
pub(super) fn fgetxattr(fd: &OwnedFd, name: &CStr) -> Result<Vec<u8>, Errno> {
    // SAFETY: the name is NUL-terminated; the buffer and its length come as a pair.
    read_sized(|buf, len| unsafe { libc::fgetxattr(fd.as_raw_fd(), name.as_ptr(), buf, len) })
}

pub(super) fn flistxattr(fd: &OwnedFd) -> Result<Vec<u8>, Errno> {
    // SAFETY: the buffer and its length come as a pair.
    read_sized(|buf, len| unsafe { libc::flistxattr(fd.as_raw_fd(), buf.cast(), len) })
}

pub(super) fn fsetxattr(
    fd: &OwnedFd,
    name: &CStr,
    value: &[u8],
    flags: libc::c_int,
) -> Result<(), Errno> {
    // SAFETY: the name is NUL-terminated; the value and its length come as a pair.
    check(unsafe {
        libc::fsetxattr(
            fd.as_raw_fd(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            flags,
        )
    })
    .map(drop)
}

pub(super) fn fremovexattr(fd: &OwnedFd, name: &CStr) -> Result<(), Errno> {
    // SAFETY: the name is NUL-terminated.
    check(unsafe { libc::fremovexattr(fd.as_raw_fd(), name.as_ptr()) }).map(drop)
}

pub(super) fn fchown(fd: &OwnedFd, uid: libc::uid_t, gid: libc::gid_t) -> Result<(), Errno> {
    // SAFETY: a plain syscall on our open descriptor.
    check(unsafe { libc::fchown(fd.as_raw_fd(), uid, gid) }).map(drop)
}

pub(super) fn fchmod(fd: &OwnedFd, mode: libc::mode_t) -> Result<(), Errno> {
    // SAFETY: a plain syscall on our open descriptor.
    check(unsafe { libc::fchmod(fd.as_raw_fd(), mode) }).map(drop)
}

pub(super) fn futimens(fd: &OwnedFd, times: &[libc::timespec; 2]) -> Result<(), Errno> {
    // SAFETY: `times` holds two timespecs; the descriptor is ours.
    check(unsafe { libc::futimens(fd.as_raw_fd(), times.as_ptr()) }).map(drop)
}

/// Opens a branch root. The configured branch path itself may go through symlinks:
/// it is the administrator's choice of where the branch is.
pub(super) fn open_root(path: &std::path::Path) -> io::Result<OwnedFd> {
    let path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: the path is NUL-terminated.
    let fd = unsafe {
        libc::open(
            path.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a successful open returns a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}
