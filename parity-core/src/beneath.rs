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

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

/// A data disk's root folder, held open so that paths below it are resolved from it.
pub struct Root {
    fd: OwnedFd,
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
        let rel = relative(rel)?;
        if !NO_OPENAT2.load(Ordering::Relaxed) {
            match self.openat2(&rel) {
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOSYS | libc::EPERM)) => {
                    NO_OPENAT2.store(true, Ordering::Relaxed);
                }
                other => return other,
            }
        }
        self.walk(&rel)
    }

    fn openat2(&self, rel: &Path) -> io::Result<File> {
        let c = c_string(rel.as_os_str().as_bytes())?;
        // SAFETY: `open_how` is plain data; all-zero is its documented default.
        let mut how: libc::open_how = unsafe { std::mem::zeroed() };
        how.flags = (libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NOFOLLOW) as u64;
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
        owned(i32::try_from(fd).unwrap_or(-1)).map(File::from)
    }

    /// The same as `openat2` does, one component at a time: each folder opened with
    /// `O_NOFOLLOW` from the one before.
    fn walk(&self, rel: &Path) -> io::Result<File> {
        let parts: Vec<&std::ffi::OsStr> = rel.iter().collect();
        let Some((last, folders)) = parts.split_last() else {
            return Err(io::ErrorKind::InvalidInput.into());
        };
        let mut at: Option<OwnedFd> = None;
        for part in folders {
            let dirfd = at.as_ref().unwrap_or(&self.fd).as_raw_fd();
            let flags = libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
            let next = open_at(dirfd, part.as_bytes(), flags)
                .map_err(|e| link_as_loop(dirfd, part.as_bytes(), e))?;
            at = Some(next);
        }
        let dirfd = at.as_ref().unwrap_or(&self.fd).as_raw_fd();
        let flags = libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
        open_at(dirfd, last.as_bytes(), flags).map(File::from)
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
                read(r.walk(&relative(Path::new(rel)).expect(rel))).expect(rel),
                "inside"
            );
        }
        // A folder replaced by a link, a file replaced by a link: ELOOP either way.
        std::fs::rename(root.join("a/b"), root.join("a/b-old")).expect("mv");
        symlink(outside.join("a/b"), root.join("a/b")).expect("symlink");
        let rel = Path::new("a/b/file");
        for got in [r.open_file(rel), r.walk(rel)] {
            let e = got.expect_err("followed a link");
            assert!(is_link(&e), "{e}");
        }
        assert_eq!(first_link(&root, rel), Some(root.join("a/b")));
        std::fs::remove_file(root.join("a/b")).expect("rm");
        std::fs::rename(root.join("a/b-old"), root.join("a/b")).expect("mv");
        assert_eq!(first_link(&root, rel), None);
        std::fs::rename(root.join("a/b/file"), root.join("a/b/file-old")).expect("mv");
        symlink("file-old", root.join("a/b/file")).expect("symlink");
        for got in [r.open_file(rel), r.walk(rel)] {
            assert!(is_link(&got.expect_err("followed a link")));
        }
        assert_eq!(first_link(&root, rel), Some(root.join("a/b/file")));
        // Missing names and escapes are errors of their own.
        let e = r.open_file(Path::new("a/none")).expect_err("missing");
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        let e = r.walk(Path::new("a/none/x")).expect_err("missing");
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        let e = r
            .open_file(Path::new("../outside/a/b/file"))
            .expect_err("escaped");
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }
}
