//! Opening files below a data disk's root without following symbolic links.
//!
//! The state names every file by its path below its disk's root, and a sync records
//! a symbolic link as a link: a recorded file is never reached through one. A link
//! put later where a recorded folder was would have the passes read, and `fix`
//! compare, whatever it points to, possibly outside the array. So recorded files are
//! opened relative to the root with `openat2` and `RESOLVE_NO_SYMLINKS |
//! RESOLVE_BENEATH`, which the kernel checks in the same step as the open, free of
//! races; where `openat2` is missing (Linux before 5.6, or a sandbox that refuses
//! it), one folder at a time with `O_NOFOLLOW`. The root's own path may go through
//! links (a mount point's often does). A link met on the way is `ELOOP`.
//!
//! `fix` writes the same way: it holds the folder a name is made in as a
//! [`Folder`], reached from the root through folders only, and makes, renames and
//! links names relative to it, and sets owners, modes and times on open
//! descriptors. A folder swapped for a link while it runs cannot redirect any of
//! that outside the disk.

use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

/// A data disk's root folder, held open so that paths below it are resolved from it.
#[derive(Debug)]
pub struct Root {
    fd: OwnedFd,
}

/// Opens the file the state records at `path` (relative, as the state writes it)
/// on the disk at `dir` for reading: from its root through folders only, or by path
/// when the root itself could not be opened.
pub fn open_recorded(root: Option<&Root>, dir: &Path, path: &str) -> io::Result<File> {
    let rel = crate::name::to_os(path);
    let rel = Path::new(&*rel);
    match root {
        Some(root) => root.open_file(rel),
        None => File::open(dir.join(rel)),
    }
}

/// Set once `openat2` was found missing: every later open walks.
static NO_OPENAT2: AtomicBool = AtomicBool::new(false);

impl Root {
    /// Opens the folder `dir` (following links in its own path).
    pub fn open(dir: &Path) -> io::Result<Root> {
        let c = c_string(dir.as_os_str().as_bytes())?;
        let flags = libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC;
        // SAFETY: a NUL-terminated path; the descriptor returned is owned below.
        let fd = unsafe { libc::open(c.as_ptr(), flags) };
        owned(fd).map(|fd| Root { fd })
    }

    /// Opens the file `rel` below the root for reading. A symbolic link anywhere on
    /// the way, the file itself included, fails with `ELOOP` (see [`is_link`]).
    pub fn open_file(&self, rel: &Path) -> io::Result<File> {
        let flags = libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
        self.open_beneath(rel, flags).map(File::from)
    }

    /// Opens the file `rel` below the root to read and write, as [`Root::open_file`].
    pub fn open_rw(&self, rel: &Path) -> io::Result<File> {
        let flags = libc::O_RDWR | libc::O_NOFOLLOW | libc::O_CLOEXEC;
        self.open_beneath(rel, flags).map(File::from)
    }

    fn open_beneath(&self, rel: &Path, flags: libc::c_int) -> io::Result<OwnedFd> {
        if rel.components().all(|c| !matches!(c, Component::Normal(_))) {
            return open_at(self.fd.as_raw_fd(), b".", flags);
        }
        let rel = relative(rel)?;
        if !NO_OPENAT2.load(Ordering::Relaxed) {
            match self.openat2(&rel, flags) {
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOSYS | libc::EPERM)) => {
                    NO_OPENAT2.store(true, Ordering::Relaxed);
                }
                other => return other,
            }
        }
        self.walk(&rel, flags)
    }

    fn openat2(&self, rel: &Path, flags: libc::c_int) -> io::Result<OwnedFd> {
        let c = c_string(rel.as_os_str().as_bytes())?;
        // SAFETY: `open_how` is plain data; all-zero is its documented default.
        let mut how: libc::open_how = unsafe { std::mem::zeroed() };
        // Without O_NOFOLLOW a link in the last place is refused too, as ELOOP
        // (with it, O_DIRECTORY would say ENOTDIR).
        how.flags = (flags & !libc::O_NOFOLLOW) as u64;
        how.resolve = libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_BENEATH;
        // SAFETY: a NUL-terminated path, a valid `open_how` and its size; the
        // descriptor returned is owned below.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                self.fd.as_raw_fd(),
                c.as_ptr(),
                &how as *const libc::open_how,
                std::mem::size_of::<libc::open_how>(),
            )
        };
        owned(i32::try_from(fd).unwrap_or(-1))
    }

    /// The same as `openat2` does, one component at a time: each folder opened with
    /// `O_NOFOLLOW` from the one before.
    fn walk(&self, rel: &Path, flags: libc::c_int) -> io::Result<OwnedFd> {
        let parts: Vec<&OsStr> = rel.iter().collect();
        let Some((last, folders)) = parts.split_last() else {
            return Err(io::ErrorKind::InvalidInput.into());
        };
        let mut at = self.folder(Path::new(""))?;
        for part in folders {
            at = at.child(part)?;
        }
        let dirfd = at.fd.as_raw_fd();
        open_at(dirfd, last.as_bytes(), flags).map_err(|e| link_as_loop(dirfd, last.as_bytes(), e))
    }

    /// The folder `rel` below the root (the root itself when `rel` is empty),
    /// reached through folders only.
    pub fn folder(&self, rel: &Path) -> io::Result<Folder> {
        let flags = libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
        self.open_beneath(rel, flags).map(|fd| Folder { fd })
    }

    /// Sets what is given of the owner (`uid`, `gid`), mode and mtime of the folder
    /// `rel` (the root itself when empty), on the folder itself: opened without
    /// following a link, in its place or on the way (`ELOOP`). The owner first, as
    /// in [`set_attributes`]. A folder the caller may not read (mode 000 of a user
    /// who owns it) is held by an `O_PATH` descriptor and changed through
    /// `/proc/self/fd`, which names exactly that folder.
    pub fn set_folder(
        &self,
        rel: &Path,
        owner: Option<(u32, u32)>,
        mode: Option<u32>,
        mtime_ns: Option<i64>,
    ) -> io::Result<()> {
        let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
        match self.open_beneath(rel, flags) {
            Ok(fd) => set_open(&File::from(fd), owner, mode, mtime_ns),
            Err(e) if e.raw_os_error() == Some(libc::EACCES) => {
                // Without /proc (a chroot), the folder cannot be changed this way
                // either: the reason stays that it could not be opened.
                if !Path::new("/proc/self/fd").is_dir() {
                    return Err(e);
                }
                let held = self.folder(rel)?;
                let c = c_string(format!("/proc/self/fd/{}", held.fd.as_raw_fd()).as_bytes())?;
                if let Some((uid, gid)) = owner {
                    // SAFETY: a NUL-terminated path of a descriptor held above.
                    owner_set(unsafe { libc::chown(c.as_ptr(), uid, gid) })?;
                }
                if let Some(mode) = mode {
                    // SAFETY: as above.
                    check(unsafe { libc::chmod(c.as_ptr(), (mode & 0o7777) as libc::mode_t) })?;
                }
                let Some(t) = mtime_ns else { return Ok(()) };
                let times = mtime_only(t);
                // SAFETY: as above; `times` is two valid timespecs.
                check(unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), 0) })
            }
            Err(e) => Err(e),
        }
    }
}

/// A folder held open: names in it are made, renamed and linked relative to it.
#[derive(Debug)]
pub struct Folder {
    fd: OwnedFd,
}

impl Folder {
    /// The folder `name` in this one, not a link (`ELOOP` if it is one).
    pub fn child(&self, name: &OsStr) -> io::Result<Folder> {
        let flags = libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
        let dirfd = self.fd.as_raw_fd();
        open_at(dirfd, name.as_bytes(), flags)
            .map_err(|e| link_as_loop(dirfd, name.as_bytes(), e))
            .map(|fd| Folder { fd })
    }

    /// Makes the folder `name` (mode 755 until its recorded one is set).
    pub fn make_folder(&self, name: &OsStr) -> io::Result<()> {
        let c = c_string(name.as_bytes())?;
        // SAFETY: a NUL-terminated name relative to an open folder.
        check(unsafe { libc::mkdirat(self.fd.as_raw_fd(), c.as_ptr(), 0o755) })
    }

    /// What `name` is, not following a link (the `S_IFMT` bits of its mode).
    pub fn kind(&self, name: &OsStr) -> io::Result<libc::mode_t> {
        let c = c_string(name.as_bytes())?;
        // SAFETY: `st` is written by the call; the name is NUL-terminated.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        check(unsafe {
            libc::fstatat(
                self.fd.as_raw_fd(),
                c.as_ptr(),
                &mut st,
                libc::AT_SYMLINK_NOFOLLOW,
            )
        })?;
        Ok(st.st_mode & libc::S_IFMT)
    }

    /// Makes the new file `name` to read and write (mode 666 less the umask, as
    /// any new file): never opened through a link, never one that was there.
    pub fn create_new(&self, name: &OsStr) -> io::Result<File> {
        let flags =
            libc::O_RDWR | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC;
        let c = c_string(name.as_bytes())?;
        // SAFETY: a NUL-terminated name relative to an open folder; the descriptor
        // returned is owned below.
        owned(unsafe { libc::openat(self.fd.as_raw_fd(), c.as_ptr(), flags, 0o666) })
            .map(File::from)
    }

    /// Opens the file `name` to read, never through a link (`ELOOP` if it is one)
    /// and without blocking on a fifo.
    pub fn open_to_read(&self, name: &OsStr) -> io::Result<File> {
        let flags = libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC;
        open_at(self.fd.as_raw_fd(), name.as_bytes(), flags).map(File::from)
    }

    /// Removes the name `name` (not a folder).
    pub fn remove_file(&self, name: &OsStr) -> io::Result<()> {
        let c = c_string(name.as_bytes())?;
        // SAFETY: a NUL-terminated name relative to an open folder.
        check(unsafe { libc::unlinkat(self.fd.as_raw_fd(), c.as_ptr(), 0) })
    }

    /// Renames `from` to `to`, both in this folder; with `no_replace`, fails with
    /// `EEXIST` when `to` is there.
    pub fn rename(&self, from: &OsStr, to: &OsStr, no_replace: bool) -> io::Result<()> {
        let (f, t) = (c_string(from.as_bytes())?, c_string(to.as_bytes())?);
        let fd = self.fd.as_raw_fd();
        let flags = if no_replace {
            libc::RENAME_NOREPLACE
        } else {
            0
        };
        // SAFETY: NUL-terminated names relative to an open folder.
        check(unsafe { libc::renameat2(fd, f.as_ptr(), fd, t.as_ptr(), flags) })
    }

    /// Makes `name` a hard link to the name `from.1` in the folder `from.0`, never
    /// through a link (`linkat` without `AT_SYMLINK_FOLLOW`).
    pub fn hard_link(&self, name: &OsStr, from: (&Folder, &OsStr)) -> io::Result<()> {
        let (n, f) = (c_string(name.as_bytes())?, c_string(from.1.as_bytes())?);
        // SAFETY: NUL-terminated names relative to open folders.
        check(unsafe {
            libc::linkat(
                from.0.fd.as_raw_fd(),
                f.as_ptr(),
                self.fd.as_raw_fd(),
                n.as_ptr(),
                0,
            )
        })
    }

    /// Makes `name` a symbolic link holding `target`.
    pub fn symlink(&self, name: &OsStr, target: &OsStr) -> io::Result<()> {
        let (n, t) = (c_string(name.as_bytes())?, c_string(target.as_bytes())?);
        // SAFETY: NUL-terminated strings; the name is relative to an open folder.
        check(unsafe { libc::symlinkat(t.as_ptr(), self.fd.as_raw_fd(), n.as_ptr()) })
    }
}

/// Sets the owner (`uid`, `gid`), `mode` and `mtime_ns` of an open file or folder.
/// The owner first: changing it clears the set-user-ID and set-group-ID bits, which
/// the mode then sets. The access time is left as it is. An owner the caller may
/// not give is left as it is (see [`owner_set`]).
pub fn set_attributes(file: &File, owner: (u32, u32), mode: u32, mtime_ns: i64) -> io::Result<()> {
    set_open(file, Some(owner), Some(mode), Some(mtime_ns))
}

/// What is given of [`set_attributes`], on an open file or folder.
fn set_open(
    file: &File,
    owner: Option<(u32, u32)>,
    mode: Option<u32>,
    mtime_ns: Option<i64>,
) -> io::Result<()> {
    let fd = file.as_raw_fd();
    if let Some((uid, gid)) = owner {
        // SAFETY: a plain call on an open descriptor.
        owner_set(unsafe { libc::fchown(fd, uid, gid) })?;
    }
    if let Some(mode) = mode {
        // SAFETY: as above.
        check(unsafe { libc::fchmod(fd, (mode & 0o7777) as libc::mode_t) })?;
    }
    let Some(t) = mtime_ns else { return Ok(()) };
    let times = mtime_only(t);
    // SAFETY: an open descriptor and two valid timespecs.
    check(unsafe { libc::futimens(fd, times.as_ptr()) })
}

/// The times that set the modification time and leave the access time.
fn mtime_only(mtime_ns: i64) -> [libc::timespec; 2] {
    [
        libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        libc::timespec {
            tv_sec: mtime_ns.div_euclid(1_000_000_000),
            tv_nsec: mtime_ns.rem_euclid(1_000_000_000),
        },
    ]
}

/// The result of a change of owner. Not permitted (`EPERM`: a user who is not root
/// giving a file to another user or group) is no error: the mode and time are still
/// set, and callers that care compare the owner afterwards.
fn owner_set(r: libc::c_int) -> io::Result<()> {
    match check(r) {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => Ok(()),
        other => other,
    }
}

fn check(r: libc::c_int) -> io::Result<()> {
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Whether an open failed on a symbolic link in the way.
pub fn is_link(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::ELOOP)
}

/// The first symbolic link on the way from `root` to `root/rel`, `rel` itself
/// included, to name in a message. Looked at with `lstat`, so only as reliable as
/// the moment it runs.
pub fn first_link(root: &Path, rel: &Path) -> Option<PathBuf> {
    let mut at = root.to_path_buf();
    for part in relative(rel).ok()?.iter() {
        at.push(part);
        let meta = std::fs::symlink_metadata(&at).ok()?;
        if meta.file_type().is_symlink() {
            return Some(at);
        }
    }
    None
}

/// `rel` without a leading `/` or `.`; `..` is refused: a recorded path never has it.
fn relative(rel: &Path) -> io::Result<PathBuf> {
    let mut out = PathBuf::new();
    for part in rel.components() {
        match part {
            Component::Normal(p) => out.push(p),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir | Component::Prefix(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{} leaves the disk's folder", rel.display()),
                ))
            }
        }
    }
    if out.as_os_str().is_empty() {
        return Err(io::ErrorKind::InvalidInput.into());
    }
    Ok(out)
}

fn c_string(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| io::ErrorKind::InvalidInput.into())
}

fn open_at(dirfd: i32, name: &[u8], flags: i32) -> io::Result<OwnedFd> {
    let c = c_string(name)?;
    // SAFETY: a NUL-terminated name relative to an open folder; the descriptor
    // returned is owned by the caller.
    owned(unsafe { libc::openat(dirfd, c.as_ptr(), flags) })
}

/// `O_DIRECTORY | O_NOFOLLOW` on a symbolic link fails with `ENOTDIR`: made `ELOOP`
/// as `openat2` says it, when the name is a link.
fn link_as_loop(dirfd: i32, name: &[u8], e: io::Error) -> io::Error {
    if e.raw_os_error() != Some(libc::ENOTDIR) {
        return e;
    }
    let Ok(c) = c_string(name) else { return e };
    // SAFETY: `st` is written by the call; the name is NUL-terminated.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    let got = unsafe { libc::fstatat(dirfd, c.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) };
    if got == 0 && st.st_mode & libc::S_IFMT == libc::S_IFLNK {
        io::Error::from_raw_os_error(libc::ELOOP)
    } else {
        e
    }
}

fn owned(fd: libc::c_int) -> io::Result<OwnedFd> {
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a descriptor just returned by the kernel, owned by no one else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::fs::symlink;

    fn read(f: io::Result<File>) -> io::Result<String> {
        let mut s = String::new();
        f?.read_to_string(&mut s)?;
        Ok(s)
    }

    /// A disk with `a/b/file`, and beside it a folder outside the disk with the same
    /// names, reached through links.
    fn disk() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let top = tempfile::tempdir().expect("tempdir");
        let root = top.path().join("disk");
        let outside = top.path().join("outside");
        for dir in [&root, &outside] {
            std::fs::create_dir_all(dir.join("a/b")).expect("mkdir");
        }
        std::fs::write(root.join("a/b/file"), "inside").expect("write");
        std::fs::write(outside.join("a/b/file"), "outside").expect("write");
        (top, root, outside)
    }

    #[test]
    fn files_below_the_root_open_through_folders_only_both_ways() {
        let (top, root, outside) = disk();
        // The root itself may be reached through a link.
        let linked_root = top.path().join("mnt");
        symlink(&root, &linked_root).expect("symlink");
        let r = Root::open(&linked_root).expect("root");
        for rel in ["a/b/file", "/a/b/file", "./a/b/file"] {
            assert_eq!(read(r.open_file(Path::new(rel))).expect(rel), "inside");
            assert_eq!(
                read(
                    r.walk(&relative(Path::new(rel)).expect(rel), libc::O_RDONLY)
                        .map(File::from)
                )
                .expect(rel),
                "inside"
            );
        }
        // A folder replaced by a link, a file replaced by a link: ELOOP either way.
        std::fs::rename(root.join("a/b"), root.join("a/b-old")).expect("mv");
        symlink(outside.join("a/b"), root.join("a/b")).expect("symlink");
        let rel = Path::new("a/b/file");
        for got in [
            r.open_file(rel),
            r.walk(rel, libc::O_RDONLY | libc::O_NOFOLLOW)
                .map(File::from),
        ] {
            let e = got.expect_err("followed a link");
            assert!(is_link(&e), "{e}");
        }
        assert_eq!(first_link(&root, rel), Some(root.join("a/b")));
        std::fs::remove_file(root.join("a/b")).expect("rm");
        std::fs::rename(root.join("a/b-old"), root.join("a/b")).expect("mv");
        assert_eq!(first_link(&root, rel), None);
        std::fs::rename(root.join("a/b/file"), root.join("a/b/file-old")).expect("mv");
        symlink("file-old", root.join("a/b/file")).expect("symlink");
        for got in [
            r.open_file(rel),
            r.walk(rel, libc::O_RDONLY | libc::O_NOFOLLOW)
                .map(File::from),
        ] {
            assert!(is_link(&got.expect_err("followed a link")));
        }
        assert_eq!(first_link(&root, rel), Some(root.join("a/b/file")));
        // Missing names and escapes are errors of their own.
        let e = r.open_file(Path::new("a/none")).expect_err("missing");
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        let e = r
            .walk(Path::new("a/none/x"), libc::O_RDONLY)
            .expect_err("missing");
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        let e = r
            .open_file(Path::new("../outside/a/b/file"))
            .expect_err("escaped");
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn a_held_folder_keeps_every_change_inside_it_when_its_path_is_swapped_for_a_link() {
        use std::os::unix::fs::MetadataExt;
        let (top, root, outside) = disk();
        let r = Root::open(&root).expect("root");
        let folder = r.folder(Path::new("a/b")).expect("folder");
        // Swapped while held: a/b moved away and a link to the outside put there.
        let moved = root.join("a/moved");
        std::fs::rename(root.join("a/b"), &moved).expect("mv");
        symlink(outside.join("a/b"), root.join("a/b")).expect("symlink");
        let os = OsStr::new;
        let mut new = folder.create_new(os("new")).expect("create");
        std::io::Write::write_all(&mut new, b"rebuilt").expect("write");
        set_attributes(&new, (1234, 5678), 0o4751, 1_000_000_007).expect("attributes");
        folder.rename(os("new"), os("file"), false).expect("rename");
        assert_eq!(
            folder
                .rename(os("file"), os("file"), true)
                .expect_err("kept")
                .kind(),
            io::ErrorKind::AlreadyExists
        );
        folder
            .hard_link(os("link"), (&folder, os("file")))
            .expect("hard link");
        folder.symlink(os("sl"), os("file")).expect("symlink");
        folder.make_folder(os("sub")).expect("mkdir");
        assert_eq!(folder.kind(os("sl")).expect("kind"), libc::S_IFLNK);
        assert_eq!(folder.kind(os("sub")).expect("kind"), libc::S_IFDIR);
        // All of it in the folder that was held, none outside.
        assert_eq!(std::fs::read(moved.join("file")).expect("read"), b"rebuilt");
        let meta = std::fs::metadata(moved.join("link")).expect("link");
        assert_eq!(
            (meta.uid(), meta.gid(), meta.mode() & 0o7777),
            (1234, 5678, 0o4751)
        );
        assert_eq!((meta.mtime(), meta.mtime_nsec()), (1, 7));
        assert_eq!(
            std::fs::read(outside.join("a/b/file")).expect("read"),
            b"outside"
        );
        let names: Vec<_> = std::fs::read_dir(outside.join("a/b"))
            .expect("list")
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
        folder.remove_file(os("link")).expect("rm");
        assert!(!moved.join("link").exists());
        // Reaching it again through the path now meets the link.
        let e = r.folder(Path::new("a/b")).expect_err("followed a link");
        assert!(is_link(&e), "{e}");
        let e = r
            .folder(Path::new("a"))
            .expect("a")
            .child(os("b"))
            .expect_err("followed");
        assert!(is_link(&e), "{e}");
        let e = r
            .set_folder(Path::new("a/b"), None, Some(0o777), None)
            .expect_err("followed a link");
        assert!(is_link(&e), "{e}");
        let flags = libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW;
        let e = r
            .walk(Path::new("a/b"), flags)
            .expect_err("followed a link");
        assert!(is_link(&e), "{e}");
        drop(top);
    }
}
