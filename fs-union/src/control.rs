//! The control file `/.mergerfs` and the `user.mergerfs.*` extended attributes, as
//! mergerfs serves them.
//!
//! On the control file, `listxattr` names every option, `getxattr` reads one and
//! `setxattr` changes one (including branch-list edits through
//! `user.mergerfs.branches`). A change never alters the [`Union`] in use: it yields a
//! new one for the FUSE adapter to swap in, so requests in flight keep the snapshot
//! they started with. On any other path, `user.mergerfs.basepath`, `relpath`,
//! `fullpath` and `allpaths` tell where the entry lives; they are computed, never
//! listed and never stored.
//!
//! This module decides answers only: it holds no state, and the adapter owns the swap.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;

use crate::branch::{check_mountpoint, format_branches, Branch, BranchEdit};
use crate::glob::FsGlob;
use crate::options::Options;
use crate::union::{Errno, Union};

/// The pool path of the control file.
pub const CONTROL_FILE: &str = "/.mergerfs";

/// The inode number the control file shows; it fits 32 bits for old programs.
pub const CONTROL_INO: u64 = 0xffff_fffe;

/// The prefix of every control attribute name.
const PREFIX: &str = "user.mergerfs.";

/// Control keys served here rather than by [`Options`], with whether `setxattr` may
/// change them.
const OWN_KEYS: &[(&str, bool)] = &[
    ("branches", true),
    ("pid", false),
    // The old name of `branches`: read as plain paths, edited like `branches`.
    ("srcmounts", true),
    ("version", false),
];

/// The per-path attributes, answered on every path except the control file.
const FILE_KEYS: &[&str] = &["allpaths", "basepath", "fullpath", "relpath"];

/// Whether `path` is the control file.
pub fn is_control_file(path: &Path) -> bool {
    // Pool paths come from the node table in one spelling: bytes decide.
    path.as_os_str() == CONTROL_FILE
}

/// The attributes of the control file: an empty regular file owned by root that
/// everyone may read, so only root can change options (the kernel checks the mode),
/// dated `started` (seconds since the epoch).
pub fn control_stat(started: i64) -> libc::stat {
    // SAFETY: libc::stat is plain integers, for which all zeroes is valid.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    st.st_mode = libc::S_IFREG | 0o644;
    st.st_nlink = 1;
    st.st_ino = CONTROL_INO;
    st.st_blksize = 512;
    st.st_atime = started;
    st.st_mtime = started;
    st.st_ctime = started;
    st
}

/// The key of a control attribute name, or `None` for names outside
/// `user.mergerfs.*`.
fn key(name: &OsStr) -> Option<&str> {
    std::str::from_utf8(name.as_bytes())
        .ok()?
        .strip_prefix(PREFIX)
}

/// The `listxattr` answer of the control file: every key, each NUL-terminated.
pub fn list() -> Vec<u8> {
    let mut keys = Options::keys();
    keys.extend(OWN_KEYS.iter().map(|(k, _)| (*k).to_owned()));
    keys.sort();
    let mut out = Vec::new();
    for key in keys {
        out.extend_from_slice(PREFIX.as_bytes());
        out.extend_from_slice(key.as_bytes());
        out.push(0);
    }
    out
}

/// The `getxattr` answer of the control file for `name`; ENODATA for any name that
/// is not a key.
pub fn get(union: &Union, name: &OsStr) -> Result<Vec<u8>, Errno> {
    let key = key(name).ok_or(Errno(libc::ENODATA))?;
    let branches: Vec<Branch> = union.branches().cloned().collect();
    let value = match key {
        "branches" => format_branches(&branches),
        "srcmounts" => branches
            .iter()
            .map(|b| b.path.display().to_string())
            .collect::<Vec<_>>()
            .join(":"),
        "pid" => std::process::id().to_string(),
        "version" => env!("CARGO_PKG_VERSION").to_owned(),
        // The threads serving the pool, as mergerfs reads back the count it runs
        // (0, the default, means one per core).
        _ if crate::options::canonical(key) == "read-thread-count" => {
            crate::mount::thread_count(union.options().read_thread_count).to_string()
        }
        _ => union.options().get(key).map_err(|e| Errno(e.errno()))?,
    };
    Ok(value.into_bytes())
}

/// The pool after `setxattr(name, value)` on the control file. ENODATA for an
/// unknown key, EROFS for one fixed at mount time, EINVAL for a bad value; on any
/// error `union` stays as it is.
pub fn set(union: &Union, name: &OsStr, value: &[u8]) -> Result<Union, Errno> {
    let key = key(name).ok_or(Errno(libc::ENODATA))?;
    let value = std::str::from_utf8(value).map_err(|_| Errno(libc::EINVAL))?;
    // As mergerfs takes them: a value written with `echo` or as a C string ends in
    // a newline or a NUL that is not part of it.
    let value = value.trim_end_matches(['\n', '\0']);
    match OWN_KEYS.iter().find(|(k, _)| *k == key) {
        Some((_, false)) => Err(Errno(libc::EROFS)),
        Some((_, true)) => edit_branches(union, value),
        None => {
            let mut options = union.options().clone();
            options.set(key, value).map_err(|e| Errno(e.errno()))?;
            Ok(union.with_options(Arc::new(options)))
        }
    }
}

/// Applies a branch-list edit (`=LIST`, `+<LIST`, `-PATTERN`, ...). A branch that is
/// the mountpoint, inside it or holding it is refused: the pool would serve itself.
/// So is an edit that leaves no branch, which a mount refuses too.
fn edit_branches(union: &Union, value: &str) -> Result<Union, Errno> {
    let edit = BranchEdit::parse(value, &FsGlob).map_err(|_| Errno(libc::EINVAL))?;
    let current: Vec<Branch> = union.branches().cloned().collect();
    let next = edit.apply(&current);
    if next.is_empty() {
        return Err(Errno(libc::EINVAL));
    }
    if let Some(mountpoint) = &union.options().mountpoint {
        let resolved: Vec<Branch> = next
            .iter()
            .map(|b| Branch {
                path: b.path.canonicalize().unwrap_or_else(|_| b.path.clone()),
                ..b.clone()
            })
            .collect();
        check_mountpoint(&resolved, mountpoint).map_err(|_| Errno(libc::EINVAL))?;
    }
    // A new branch must be a folder, as at mount time: ENOENT or ENOTDIR otherwise.
    for branch in next
        .iter()
        .filter(|b| !current.iter().any(|c| c.path == b.path))
    {
        match std::fs::metadata(&branch.path) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => return Err(Errno(libc::ENOTDIR)),
            Err(e) => return Err(Errno(e.raw_os_error().unwrap_or(libc::ENOENT))),
        }
    }
    Ok(union.with_branches(&next))
}

/// Whether `name` is one of the computed per-path attributes, which cannot be set
/// or removed.
pub fn is_file_key(name: &OsStr) -> bool {
    key(name).is_some_and(|k| FILE_KEYS.contains(&k))
}

/// The computed per-path attribute `name` of `path`, or `None` when `name` is not
/// one of them (the request then goes to the branches).
pub fn file_xattr(union: &Union, path: &Path, name: &OsStr) -> Option<Result<Vec<u8>, Errno>> {
    let key = key(name).filter(|k| FILE_KEYS.contains(k))?;
    let rel = path.as_os_str().as_bytes();
    // mergerfs joins root and pool path as text, so the root's full path ends in `/`.
    let full = |branch: &Branch| {
        let mut bytes = branch.path.as_os_str().as_bytes().to_vec();
        bytes.extend_from_slice(rel);
        bytes
    };
    let value = match key {
        "relpath" => Ok(rel.to_vec()),
        "basepath" => union
            .getattr_branch(path)
            .map(|b| b.path.as_os_str().as_bytes().to_vec()),
        "fullpath" => union.getattr_branch(path).map(full),
        _ => {
            let holders = union.branches_holding(path);
            if holders.is_empty() {
                Err(Errno(libc::ENOENT))
            } else {
                Ok(holders.into_iter().map(full).collect::<Vec<_>>().join(&0u8))
            }
        }
    };
    Some(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;
    use std::path::PathBuf;

    fn branch_paths(union: &Union) -> Vec<PathBuf> {
        union.branches().map(|b| b.path.clone()).collect()
    }

    fn pool(dirs: &[&Path]) -> Union {
        let list: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
        let branches = crate::branch::parse_branches(&list.join(":"), &FsGlob).unwrap();
        Union::new(&branches, Arc::new(Options::default()))
    }

    fn name(key: &str) -> OsString {
        OsString::from(format!("{PREFIX}{key}"))
    }

    #[test]
    fn lists_every_option_and_own_key() {
        let listing = list();
        let names: Vec<&[u8]> = listing
            .split(|&b| b == 0)
            .filter(|n| !n.is_empty())
            .collect();
        for key in [
            "branches",
            "pid",
            "version",
            "srcmounts",
            "category.create",
            "minfreespace",
        ] {
            assert!(
                names.contains(&format!("{PREFIX}{key}").as_bytes()),
                "{key} missing"
            );
        }
        assert!(!names.iter().any(|n| n.ends_with(b"basepath")));
    }

    #[test]
    fn get_and_set_options_and_branches() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let union = pool(&[a.path()]);
        let a_real = a.path().canonicalize().unwrap();
        let b_real = b.path().canonicalize().unwrap();
        assert_eq!(
            get(&union, &name("branches")).unwrap(),
            format!("{}=RW", a_real.display()).into_bytes()
        );
        let union = set(
            &union,
            &name("branches"),
            format!("+>{}=NC", b_real.display()).as_bytes(),
        )
        .unwrap();
        assert_eq!(branch_paths(&union), vec![a_real.clone(), b_real.clone()]);
        assert_eq!(
            get(&union, &name("srcmounts")).unwrap(),
            format!("{}:{}", a_real.display(), b_real.display()).into_bytes()
        );
        let union = set(&union, &name("branches"), b"-<").unwrap();
        assert_eq!(branch_paths(&union), vec![b_real]);

        let union = set(&union, &name("category.create"), b"mfs").unwrap();
        assert_eq!(get(&union, &name("category.create")).unwrap(), b"mfs");
        // A trailing newline or NUL is not part of the value.
        let union = set(&union, &name("category.create"), b"lfs\n").unwrap();
        assert_eq!(get(&union, &name("category.create")).unwrap(), b"lfs");
        let union = set(&union, &name("category.create"), b"ff\0").unwrap();
        assert_eq!(get(&union, &name("category.create")).unwrap(), b"ff");
        assert_eq!(
            get(&union, &name("pid")).unwrap(),
            std::process::id().to_string().into_bytes()
        );
        // The thread count is the one running: one per core (2 to 8) by default.
        let cores = std::thread::available_parallelism().unwrap().get();
        let threads = cores.clamp(2, 8).to_string().into_bytes();
        assert_eq!(get(&union, &name("threads")).unwrap(), threads);
        assert_eq!(get(&union, &name("read-thread-count")).unwrap(), threads);
    }

    #[test]
    fn refusals_carry_mergerfs_errnos() {
        let a = tempfile::tempdir().unwrap();
        let union = pool(&[a.path()]);
        let errno = |r: Result<Union, Errno>| r.map(|_| ()).unwrap_err().0;
        assert_eq!(get(&union, &name("nope")).unwrap_err().0, libc::ENODATA);
        assert_eq!(
            get(&union, OsStr::new("user.other")).unwrap_err().0,
            libc::ENODATA
        );
        assert_eq!(errno(set(&union, &name("nope"), b"1")), libc::ENODATA);
        assert_eq!(errno(set(&union, &name("version"), b"1")), libc::EROFS);
        assert_eq!(errno(set(&union, &name("pid"), b"1")), libc::EROFS);
        assert_eq!(errno(set(&union, &name("fsname"), b"x")), libc::EROFS);
        assert_eq!(
            errno(set(&union, &name("minfreespace"), b"lots")),
            libc::EINVAL
        );
        assert_eq!(
            errno(set(&union, &name("branches"), b"->junk")),
            libc::EINVAL
        );
    }

    #[test]
    fn branches_inside_the_mountpoint_are_refused() {
        let a = tempfile::tempdir().unwrap();
        let mnt = tempfile::tempdir().unwrap();
        let inner = mnt.path().join("inner");
        std::fs::create_dir(&inner).unwrap();
        let mut options = Options::default();
        options.mountpoint = Some(mnt.path().canonicalize().unwrap());
        let branches =
            crate::branch::parse_branches(&a.path().display().to_string(), &FsGlob).unwrap();
        let union = Union::new(&branches, Arc::new(options));
        let value = format!("+{}", inner.display());
        let refused = set(&union, &name("branches"), value.as_bytes());
        assert_eq!(refused.map(|_| ()).unwrap_err().0, libc::EINVAL);
    }

    #[test]
    fn per_path_attributes() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        std::fs::write(a.path().join("f"), b"1").unwrap();
        std::fs::write(b.path().join("f"), b"2").unwrap();
        let union = pool(&[a.path(), b.path()]);
        let (a, b) = (
            a.path().canonicalize().unwrap(),
            b.path().canonicalize().unwrap(),
        );
        let path = Path::new("/f");
        let value = |key: &str| file_xattr(&union, path, &name(key)).unwrap().unwrap();
        assert_eq!(value("relpath"), b"/f");
        assert_eq!(value("basepath"), a.as_os_str().as_bytes());
        assert_eq!(value("fullpath"), a.join("f").as_os_str().as_bytes());
        let all = format!("{}/f\0{}/f", a.display(), b.display());
        assert_eq!(value("allpaths"), all.as_bytes());
        assert!(file_xattr(&union, path, &name("branches")).is_none());
        assert!(file_xattr(&union, path, OsStr::new("user.x")).is_none());
        let missing = file_xattr(&union, Path::new("/none"), &name("allpaths")).unwrap();
        assert_eq!(missing.unwrap_err().0, libc::ENOENT);
        assert!(is_file_key(&name("fullpath")) && !is_file_key(&name("branches")));
    }
}
