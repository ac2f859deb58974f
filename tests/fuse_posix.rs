//! The pool behaves like a plain filesystem: the same syscall sequences give the
//! same results and errno on a pool of two branches as on a plain directory.

mod common;

use std::ffi::CStr;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirEntryExt, FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use common::fuse::{cpath, errno, getx, outcome, setx, Pool};

/// Runs the scenario below `root` and records every outcome.
fn scenario(root: &Path) -> Vec<String> {
    let mut log = Vec::new();
    let p = |name: &str| root.join(name);
    let excl = || OpenOptions::new().write(true).create_new(true).open(p("f"));
    log.push(format!("create excl: {}", outcome(excl())));
    log.push(format!("create excl again: {}", outcome(excl())));
    fs::write(p("f"), b"hello world").unwrap();
    OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(p("f"))
        .unwrap();
    log.push(format!(
        "after O_TRUNC: {}",
        fs::metadata(p("f")).unwrap().len()
    ));
    fs::write(p("ap"), b"ab").unwrap();
    let mut ap = OpenOptions::new().append(true).open(p("ap")).unwrap();
    ap.write_all(b"cd").unwrap();
    drop(ap);
    log.push(format!(
        "append: {:?}",
        fs::read_to_string(p("ap")).unwrap()
    ));

    // Renames over files and folders.
    fs::write(p("r1"), b"one").unwrap();
    fs::write(p("r2"), b"two").unwrap();
    log.push(format!(
        "rename file over file: {}",
        outcome(fs::rename(p("r1"), p("r2")))
    ));
    log.push(format!(
        "r2 now: {:?}",
        fs::read_to_string(p("r2")).unwrap()
    ));
    log.push(format!("r1 gone: {}", outcome(fs::metadata(p("r1")))));
    fs::create_dir(p("d1")).unwrap();
    fs::write(p("d1/inner"), b"x").unwrap();
    fs::create_dir(p("d2")).unwrap();
    fs::create_dir(p("d3")).unwrap();
    fs::write(p("d3/keep"), b"x").unwrap();
    log.push(format!(
        "rename dir over empty dir: {}",
        outcome(fs::rename(p("d1"), p("d2")))
    ));
    log.push(format!(
        "d2/inner: {}",
        outcome(fs::metadata(p("d2/inner")))
    ));
    log.push(format!(
        "rename dir over full dir: {}",
        outcome(fs::rename(p("d2"), p("d3")))
    ));
    log.push(format!(
        "rename dir over file: {}",
        outcome(fs::rename(p("d2"), p("r2")))
    ));
    log.push(format!(
        "rename file over dir: {}",
        outcome(fs::rename(p("r2"), p("d2")))
    ));
    log.push(format!(
        "rename dir into itself: {}",
        outcome(fs::rename(p("d2"), p("d2/sub")))
    ));
    log.push(format!(
        "rmdir non-empty: {}",
        outcome(fs::remove_dir(p("d3")))
    ));
    log.push(format!("unlink dir: {}", outcome(fs::remove_file(p("d3")))));
    log.push(format!("rmdir file: {}", outcome(fs::remove_dir(p("r2")))));

    // I/O through the descriptor of an unlinked file.
    let mut un = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(p("un"))
        .unwrap();
    fs::remove_file(p("un")).unwrap();
    un.write_all(b"still here").unwrap();
    let mut back = String::new();
    un.seek(SeekFrom::Start(0)).unwrap();
    un.read_to_string(&mut back).unwrap();
    log.push(format!(
        "unlinked: {back:?} size {} path {}",
        un.metadata().unwrap().len(),
        outcome(fs::metadata(p("un")))
    ));
    un.set_len(3).unwrap();
    log.push(format!(
        "unlinked ftruncate: {}",
        un.metadata().unwrap().len()
    ));
    log.push(format!("unlinked xattrs: {}", fd_xattrs(&un)));
    drop(un);

    // Hard links.
    fs::write(p("h1"), b"linked").unwrap();
    fs::hard_link(p("h1"), p("h2")).unwrap();
    let (m1, m2) = (
        fs::metadata(p("h1")).unwrap(),
        fs::metadata(p("h2")).unwrap(),
    );
    log.push(format!(
        "hard link: same ino {} nlink {} {}",
        m1.ino() == m2.ino(),
        m1.nlink(),
        m2.nlink()
    ));
    fs::write(p("h2"), b"changed").unwrap();
    log.push(format!(
        "through other name: {:?}",
        fs::read_to_string(p("h1")).unwrap()
    ));
    log.push(format!(
        "link onto existing: {}",
        outcome(fs::hard_link(p("h1"), p("f")))
    ));

    // Symlinks.
    std::os::unix::fs::symlink("h1", p("s1")).unwrap();
    std::os::unix::fs::symlink("nowhere", p("s2")).unwrap();
    log.push(format!("readlink: {:?}", fs::read_link(p("s1")).unwrap()));
    log.push(format!(
        "lstat is link: {}",
        fs::symlink_metadata(p("s1"))
            .unwrap()
            .file_type()
            .is_symlink()
    ));
    log.push(format!(
        "through link: {:?}",
        fs::read_to_string(p("s1")).unwrap()
    ));
    log.push(format!("dangling: {}", outcome(fs::metadata(p("s2")))));

    // Extended attributes.
    let path = cpath(&p("h1"));
    // SAFETY: test code; the strings are NUL-terminated.
    let rc = unsafe {
        libc::setxattr(
            path.as_ptr(),
            c"user.test".as_ptr(),
            b"v1".as_ptr().cast(),
            2,
            0,
        )
    };
    log.push(format!("setxattr: {rc}"));
    log.push(format!(
        "getxattr: {:?}",
        getx(&p("h1"), "user.test")
            .map(|v| String::from_utf8_lossy(&v).into_owned())
            .ok()
    ));
    // SAFETY: as above.
    let rc = unsafe {
        libc::setxattr(
            path.as_ptr(),
            c"user.test".as_ptr(),
            b"v2".as_ptr().cast(),
            2,
            libc::XATTR_CREATE,
        )
    };
    log.push(format!(
        "setxattr create existing: {rc} {}",
        std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
    ));
    // SAFETY: as above.
    unsafe { libc::removexattr(path.as_ptr(), c"user.test".as_ptr()) };
    log.push(format!(
        "after remove: {}",
        outcome(getx(&p("h1"), "user.test").map_err(std::io::Error::from_raw_os_error))
    ));

    // A sparse file beyond 4 GiB.
    let big = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(p("sparse"))
        .unwrap();
    let at = 5u64 << 30;
    big.write_all_at(b"tail", at).unwrap();
    let mut tail = [0u8; 4];
    big.read_exact_at(&mut tail, at).unwrap();
    let mut zero = [1u8; 4];
    big.read_exact_at(&mut zero, 1 << 30).unwrap();
    log.push(format!(
        "sparse: size {} tail {:?} hole {:?}",
        big.metadata().unwrap().len(),
        tail,
        zero
    ));

    // renameat2 with RENAME_NOREPLACE (mv -n): refused over an existing name, done
    // to a free one.
    fs::write(p("nr-src"), b"source").unwrap();
    fs::write(p("nr-dst"), b"taken").unwrap();
    let noreplace = |from: &str, to: &str| {
        let (from, to) = (cpath(&p(from)), cpath(&p(to)));
        // SAFETY: both paths are NUL-terminated.
        let rc = unsafe {
            libc::renameat2(
                libc::AT_FDCWD,
                from.as_ptr(),
                libc::AT_FDCWD,
                to.as_ptr(),
                libc::RENAME_NOREPLACE,
            )
        };
        if rc == 0 {
            "ok".to_owned()
        } else {
            format!(
                "errno {}",
                std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
            )
        }
    };
    log.push(format!(
        "noreplace over a file: {}",
        noreplace("nr-src", "nr-dst")
    ));
    log.push(format!(
        "after: {:?} {:?}",
        fs::read(p("nr-src")).map(String::from_utf8),
        fs::read(p("nr-dst")).map(String::from_utf8)
    ));
    log.push(format!(
        "noreplace to a free name: {}",
        noreplace("nr-src", "nr-new")
    ));
    log.push(format!(
        "after: {} {:?}",
        p("nr-src").exists(),
        fs::read(p("nr-new")).map(String::from_utf8)
    ));

    let mut names: Vec<String> = fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    log.push(format!("listing: {names:?}"));
    log
}

#[test]
fn fuse_posix_same_results_as_plain_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b, mnt, plain) = (
        tmp.path().join("a"),
        tmp.path().join("b"),
        tmp.path().join("mnt"),
        tmp.path().join("plain"),
    );
    for d in [&a, &b, &mnt, &plain] {
        fs::create_dir(d).unwrap();
    }
    let branches = format!("{}:{}", a.display(), b.display());
    let Some(pool) = Pool::mount(
        "fuse_posix_same_results_as_plain_directory",
        &branches,
        &mnt,
        "minfreespace=0",
    ) else {
        return;
    };
    let expected = scenario(&plain);
    let got = scenario(&pool.mnt);
    for (e, g) in expected.iter().zip(&got) {
        assert_eq!(e, g, "pool differs from a plain directory");
    }
    assert_eq!(expected.len(), got.len());
    // The scenario reaches the errors it is about.
    let all = expected.join("\n");
    for needle in [
        format!("create excl again: errno {}", libc::EEXIST),
        format!("rename dir over full dir: errno {}", libc::ENOTEMPTY),
        format!("rename dir into itself: errno {}", libc::EINVAL),
        format!("rmdir non-empty: errno {}", libc::ENOTEMPTY),
        "hard link: same ino true nlink 2 2".to_owned(),
        "unlinked: \"still here\" size 10".to_owned(),
        format!(
            "unlinked xattrs: set 0 get \"v1\" listed true removed 0 then errno {}",
            libc::ENODATA
        ),
        format!("sparse: size {}", (5u64 << 30) + 4),
        format!("noreplace over a file: errno {}", libc::EEXIST),
        "noreplace to a free name: ok".to_owned(),
    ] {
        assert!(all.contains(&needle), "missing `{needle}` in\n{all}");
    }
}

/// Two empty branch folders `a` and `b` and a mountpoint, in a temporary folder.
fn two_branches() -> (tempfile::TempDir, PathBuf, PathBuf, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b, mnt) = (
        tmp.path().join("a"),
        tmp.path().join("b"),
        tmp.path().join("mnt"),
    );
    for d in [&a, &b, &mnt] {
        fs::create_dir(d).unwrap();
    }
    (tmp, a, b, mnt)
}

/// The inode flags of an open file (`FS_IOC_GETFLAGS`), or the errno.
fn inode_flags(file: &File) -> Result<libc::c_int, i32> {
    use std::os::fd::AsRawFd;
    let mut flags: libc::c_int = 0;
    // SAFETY: FS_IOC_GETFLAGS writes one int through a valid pointer.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), 0x8008_6601, &mut flags) };
    if rc < 0 {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    } else {
        Ok(flags)
    }
}

fn set_inode_flags(file: &File, flags: libc::c_int) -> Result<(), i32> {
    use std::os::fd::AsRawFd;
    // SAFETY: FS_IOC_SETFLAGS reads one int through a valid pointer.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), 0x4008_6602, &flags) };
    if rc < 0 {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    } else {
        Ok(())
    }
}

#[test]
fn fuse_posix_chattr_flags_are_those_of_the_branch_file() {
    let test = "fuse_posix_chattr_flags_are_those_of_the_branch_file";
    let (_tmp, a, b, mnt) = two_branches();
    let branches = format!("{}:{}", a.display(), b.display());
    let Some(pool) = Pool::mount(test, &branches, &mnt, "category.create=ff") else {
        return;
    };
    const IMMUTABLE: libc::c_int = 0x10;
    fs::write(pool.path("f"), b"x").unwrap();
    let on_branch = File::open(a.join("f")).unwrap();
    let Ok(before) = inode_flags(&on_branch) else {
        common::fuse::skip::<()>(test, "the branch filesystem has no inode flags");
        return;
    };
    let file = File::open(pool.path("f")).unwrap();
    assert_eq!(inode_flags(&file), Ok(before), "lsattr through the pool");
    // chattr +i: the file on the branch becomes immutable, and the pool refuses to
    // delete or change it, as the branch does.
    set_inode_flags(&file, before | IMMUTABLE).unwrap();
    assert_eq!(inode_flags(&on_branch), Ok(before | IMMUTABLE));
    assert_eq!(errno(fs::remove_file(pool.path("f"))), libc::EPERM);
    assert_eq!(
        errno(OpenOptions::new().append(true).open(pool.path("f"))),
        libc::EPERM
    );
    set_inode_flags(&file, before).unwrap();
    fs::remove_file(pool.path("f")).unwrap();
    // A folder's flags, through the handle the kernel opens itself.
    fs::create_dir(pool.path("d")).unwrap();
    let dir = File::open(pool.path("d")).unwrap();
    let flags = inode_flags(&dir).unwrap();
    assert_eq!(inode_flags(&File::open(a.join("d")).unwrap()), Ok(flags));
}

#[test]
fn fuse_posix_readdir_of_10000_entries() {
    let test = "fuse_posix_readdir_of_10000_entries";
    let (_tmp, a, b, mnt) = two_branches();
    // Spread over both branches, with 500 names on both (listed once).
    for i in 0..10_000 {
        let branch = if i % 2 == 0 { &a } else { &b };
        File::create(branch.join(format!("n{i:05}"))).unwrap();
        if i % 20 == 0 {
            File::create(b.join(format!("n{i:05}"))).unwrap();
        }
    }
    let branches = format!("{}:{}", a.display(), b.display());
    let Some(pool) = Pool::mount(test, &branches, &mnt, "") else {
        return;
    };
    let dir = cpath(&pool.mnt);
    // SAFETY (this block): test code driving opendir/readdir/telldir/seekdir on one
    // DIR stream that stays open until closedir.
    unsafe {
        let stream = libc::opendir(dir.as_ptr());
        assert!(!stream.is_null());
        let mut names = Vec::new();
        let mut inos = Vec::new();
        let mut mark = None;
        loop {
            if names.len() == 5000 && mark.is_none() {
                mark = Some((libc::telldir(stream), names.len()));
            }
            let entry = libc::readdir(stream);
            if entry.is_null() {
                break;
            }
            let name = CStr::from_ptr((*entry).d_name.as_ptr())
                .to_string_lossy()
                .into_owned();
            inos.push((name.clone(), (*entry).d_ino));
            names.push(name);
        }
        let (pos, index) = mark.unwrap();
        libc::seekdir(stream, pos);
        let entry = libc::readdir(stream);
        assert!(!entry.is_null());
        let again = CStr::from_ptr((*entry).d_name.as_ptr())
            .to_string_lossy()
            .into_owned();
        assert_eq!(again, names[index], "seekdir to a telldir position");
        libc::rewinddir(stream);
        let mut second = 0;
        while !libc::readdir(stream).is_null() {
            second += 1;
        }
        assert_eq!(second, names.len(), "a second pass lists the same count");
        libc::closedir(stream);

        let mut sorted = names.clone();
        sorted.sort();
        let mut expected: Vec<String> = (0..10_000).map(|i| format!("n{i:05}")).collect();
        expected.push(".".into());
        expected.push("..".into());
        expected.sort();
        assert_eq!(sorted, expected, "every name exactly once");
        for (name, ino) in inos.iter().filter(|(n, _)| n.ends_with("7")).take(50) {
            let st = fs::symlink_metadata(pool.mnt.join(name)).unwrap();
            assert_eq!(st.ino(), *ino, "d_ino of {name} equals st_ino");
        }
    }
}

#[test]
fn fuse_posix_a_folder_renamed_while_listed_is_listed_where_it_went() {
    let test = "fuse_posix_a_folder_renamed_while_listed_is_listed_where_it_went";
    let (_tmp, a, b, mnt) = two_branches();
    let branches = format!("{}:{}", a.display(), b.display());
    let Some(pool) = Pool::mount(test, &branches, &mnt, "") else {
        return;
    };
    fs::create_dir(pool.path("logs")).unwrap();
    for i in 0..500 {
        File::create(pool.path(&format!("logs/f{i:03}"))).unwrap();
    }
    let mut expected: Vec<String> = (0..500).map(|i| format!("f{i:03}")).collect();
    expected.extend([".".to_string(), "..".to_string()]);
    expected.sort();
    let dir = cpath(&pool.path("logs"));
    // SAFETY (this block): test code driving opendir/readdir/rewinddir on one DIR
    // stream that stays open until closedir.
    unsafe {
        let stream = libc::opendir(dir.as_ptr());
        assert!(!stream.is_null());
        let read_all = |names: &mut Vec<String>| loop {
            *libc::__errno_location() = 0;
            let entry = libc::readdir(stream);
            if entry.is_null() {
                return *libc::__errno_location();
            }
            let name = CStr::from_ptr((*entry).d_name.as_ptr());
            names.push(name.to_string_lossy().into_owned());
        };
        let mut names = Vec::new();
        for _ in 0..10 {
            let entry = libc::readdir(stream);
            assert!(!entry.is_null());
            let name = CStr::from_ptr((*entry).d_name.as_ptr());
            names.push(name.to_string_lossy().into_owned());
        }
        // Renamed mid-listing, as a plain filesystem allows: the rest of the
        // listing, a rewind, and a new folder under the old name change nothing.
        fs::rename(pool.path("logs"), pool.path("logs.1")).unwrap();
        assert_eq!(
            read_all(&mut names),
            0,
            "errno after the rest of the listing"
        );
        names.sort();
        assert_eq!(names, expected, "the listing goes on where the folder went");
        fs::create_dir(pool.path("logs")).unwrap();
        File::create(pool.path("logs/other")).unwrap();
        libc::rewinddir(stream);
        let mut again = Vec::new();
        assert_eq!(read_all(&mut again), 0, "errno after a rewind");
        again.sort();
        assert_eq!(again, expected, "a rewind lists the renamed folder");
        libc::closedir(stream);
    }
    let st = fs::symlink_metadata(pool.path("logs.1/f007")).unwrap();
    assert!(st.is_file());
    assert!(pool.path("logs/other").exists() && !pool.path("logs/f007").exists());
}

#[test]
fn fuse_posix_files_changed_on_a_branch_behind_the_pool_are_what_they_are() {
    let test = "fuse_posix_files_changed_on_a_branch_behind_the_pool_are_what_they_are";
    let (_tmp, a, b, mnt) = two_branches();
    fs::create_dir(a.join("d")).unwrap();
    fs::write(a.join("d/f"), b"x").unwrap();
    let branches = format!("{}:{}", a.display(), b.display());
    let Some(pool) = Pool::mount(test, &branches, &mnt, "") else {
        return;
    };
    // The pool knows d/f; then, on the branch, f goes, g gets its inode number (the
    // filesystem reuses it) and a new f is made.
    assert_eq!(fs::read(pool.path("d/f")).unwrap(), b"x");
    let old = fs::metadata(a.join("d/f")).unwrap().ino();
    fs::remove_file(a.join("d/f")).unwrap();
    fs::write(a.join("d/g"), b"I am g").unwrap();
    fs::write(a.join("d/f"), b"I am new f").unwrap();
    if fs::metadata(a.join("d/g")).unwrap().ino() != old {
        eprintln!("note: the branch did not reuse the inode number; the test still runs");
    }
    assert_eq!(fs::read(pool.path("d/g")).unwrap(), b"I am g");
    fs::write(pool.path("d/g"), b"written via g").unwrap();
    assert_eq!(fs::read(a.join("d/g")).unwrap(), b"written via g");
    assert_eq!(fs::read(a.join("d/f")).unwrap(), b"I am new f");
    // A rename made on the branch: the new name reads its file.
    fs::rename(a.join("d/g"), a.join("d/h")).unwrap();
    assert_eq!(fs::read(pool.path("d/h")).unwrap(), b"written via g");
    // Replaced on the branch (a new file renamed over it) while the pool has it
    // open: the old open keeps reading the old file, a new open reads the new one.
    let mut held = File::open(pool.path("d/h")).unwrap();
    fs::write(a.join("d/h.tmp"), b"replaced").unwrap();
    fs::rename(a.join("d/h.tmp"), a.join("d/h")).unwrap();
    assert_eq!(fs::read(pool.path("d/h")).unwrap(), b"replaced");
    let mut old_bytes = Vec::new();
    held.read_to_end(&mut old_bytes).unwrap();
    assert_eq!(old_bytes, b"written via g");
    // Deleted on one branch and made again on the other while open: the same.
    fs::create_dir(b.join("d")).unwrap();
    fs::remove_file(a.join("d/h")).unwrap();
    fs::write(b.join("d/h"), b"on the other branch").unwrap();
    assert_eq!(fs::read(pool.path("d/h")).unwrap(), b"on the other branch");
    drop(held);
    // The branch list changed at runtime while a file is open: it still opens.
    fs::write(a.join("d/kept"), b"kept").unwrap();
    let held = File::open(pool.path("d/kept")).unwrap();
    let other = tmp_branch(&a);
    let list = format!("{}:{}:{}", other.display(), a.display(), b.display());
    common::fuse::setx(&pool.path(".mergerfs"), "user.mergerfs.branches", &list).unwrap();
    assert_eq!(fs::read(pool.path("d/kept")).unwrap(), b"kept");
    drop(held);
}

/// An empty folder next to `branch`, to add as a branch.
fn tmp_branch(branch: &Path) -> PathBuf {
    let dir = branch.with_file_name("extra");
    fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn fuse_posix_changes_through_a_hard_link_stay_on_its_file() {
    let test = "fuse_posix_changes_through_a_hard_link_stay_on_its_file";
    let (_tmp, a, b, mnt) = two_branches();
    // a/x and a/y are one file; b/x is another file of the same name.
    fs::write(a.join("x"), b"linked").unwrap();
    fs::hard_link(a.join("x"), a.join("y")).unwrap();
    fs::write(b.join("x"), b"other file").unwrap();
    let branches = format!("{}:{}", a.display(), b.display());
    let Some(pool) = Pool::mount(test, &branches, &mnt, "") else {
        return;
    };
    let (x, y) = (pool.path("x"), pool.path("y"));
    assert_eq!(
        fs::metadata(&x).unwrap().ino(),
        fs::metadata(&y).unwrap().ino()
    );
    let other_mode = fs::metadata(b.join("x")).unwrap().mode();
    // By path, without an open file: chmod and truncate.
    fs::set_permissions(&y, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    // SAFETY: truncate(2) on a NUL-terminated path.
    assert_eq!(unsafe { libc::truncate(cpath(&y).as_ptr(), 2) }, 0);
    assert_eq!(fs::read(a.join("x")).unwrap(), b"li");
    assert_eq!(fs::metadata(a.join("x")).unwrap().mode() & 0o777, 0o600);
    assert_eq!(fs::read(b.join("x")).unwrap(), b"other file");
    assert_eq!(fs::metadata(b.join("x")).unwrap().mode(), other_mode);
    // A listing shows both names with the inode stat shows; y still acts on its file.
    let listed: Vec<(String, u64)> = fs::read_dir(pool.path(""))
        .unwrap()
        .map(|e| e.unwrap())
        .map(|e| (e.file_name().into_string().unwrap(), e.ino()))
        .collect();
    let ino = fs::metadata(&y).unwrap().ino();
    assert!(listed.contains(&("y".into(), ino)), "{listed:?} {ino}");
    assert!(listed.contains(&("x".into(), ino)), "{listed:?} {ino}");
    // SAFETY: truncate(2) on a NUL-terminated path.
    assert_eq!(unsafe { libc::truncate(cpath(&y).as_ptr(), 1) }, 0);
    assert_eq!(fs::read(a.join("x")).unwrap(), b"l");
    assert_eq!(fs::read(b.join("x")).unwrap(), b"other file");
}

#[test]
fn fuse_posix_passthrough_io_keeps_bytes() {
    let test = "fuse_posix_passthrough_io_keeps_bytes";
    let tmp = tempfile::tempdir().unwrap();
    let (a, mnt) = (tmp.path().join("a"), tmp.path().join("mnt"));
    fs::create_dir(&a).unwrap();
    fs::create_dir(&mnt).unwrap();
    let Some(pool) = Pool::mount(
        test,
        &a.display().to_string(),
        &mnt,
        "passthrough.io=rw,cache.files=auto-full,minfreespace=0",
    ) else {
        return;
    };
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    fs::write(pool.path("pt"), &data).unwrap();
    assert_eq!(fs::read(pool.path("pt")).unwrap(), data);
    assert_eq!(fs::read(a.join("pt")).unwrap(), data, "bytes on the branch");
    // A reader and a writer of one file at once share one backing file.
    let reader = File::open(pool.path("pt")).unwrap();
    let writer = OpenOptions::new()
        .write(true)
        .open(pool.path("pt"))
        .unwrap();
    writer.write_all_at(b"XYZ", 10).unwrap();
    let mut buf = [0u8; 3];
    reader.read_exact_at(&mut buf, 10).unwrap();
    assert_eq!(&buf, b"XYZ");
    // The backing file registered by a write-only create serves a reader opened
    // while the writer still holds it.
    let mut created = File::create(pool.path("wo")).unwrap();
    created.write_all(&data[..100_000]).unwrap();
    let mut back = Vec::new();
    File::open(pool.path("wo"))
        .unwrap()
        .read_to_end(&mut back)
        .unwrap();
    assert_eq!(back, &data[..100_000]);
    drop(created);
    assert_eq!(errno(File::open(pool.path("missing"))), libc::ENOENT);
}

/// Runs `writer` on another thread while this one calls `reader` `rounds` times;
/// returns the errno of every failed call.
fn race(
    rounds: usize,
    writer: impl Fn() + Send + 'static,
    reader: impl Fn() -> std::io::Result<()>,
) -> Vec<i32> {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let stop = Arc::new(AtomicBool::new(false));
    let other = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                writer();
            }
        })
    };
    let failed = (0..rounds)
        .filter_map(|_| reader().err())
        .map(|e| e.raw_os_error().unwrap_or(0))
        .collect();
    stop.store(true, Ordering::Relaxed);
    other.join().unwrap();
    failed
}

#[test]
fn fuse_posix_names_replaced_or_removed_meanwhile_do_not_fail_with_enoent() {
    let test = "fuse_posix_names_replaced_or_removed_meanwhile_do_not_fail_with_enoent";
    let (_tmp, a, b, mnt) = two_branches();
    let list = format!("{}:{}", a.display(), b.display());
    let Some(pool) = Pool::mount(test, &list, &mnt, "category.create=ff") else {
        return;
    };
    // A file replaced by `rename(tmp, name)` again and again, as editors and
    // downloaders save: a plain directory never answers ENOENT for the name. The
    // kernel retries once on ESTALE, which a fast enough writer can still beat.
    let name = pool.path("saved");
    fs::write(&name, b"first").unwrap();
    let (dir, target) = (pool.mnt.clone(), name.clone());
    let writer = move || {
        let tmp = dir.join("saved.tmp");
        fs::write(&tmp, b"again").unwrap();
        fs::rename(&tmp, &target).unwrap();
    };
    let failed = race(20_000, writer, || {
        File::open(&name)?;
        fs::metadata(&name).map(drop)
    });
    let count = |errno: i32| failed.iter().filter(|&&e| e == errno).count();
    assert_eq!(count(libc::ENOENT), 0, "ENOENT");
    assert_eq!(count(libc::ESTALE), failed.len(), "only ESTALE: {failed:?}");
    assert!(failed.len() < 200, "{} of 20000 failed", failed.len());

    // open(O_CREAT | O_TRUNC) while another unlinks the name: it creates.
    let name = pool.path("created");
    let target = name.clone();
    let writer = move || {
        let _ = fs::remove_file(&target);
    };
    let failed = race(20_000, writer, || {
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&name)
            .map(drop)
    });
    assert!(
        failed.is_empty(),
        "{} of 20000 failed, first {:?}",
        failed.len(),
        failed.first()
    );
}

#[test]
fn fuse_posix_a_name_replaced_from_another_branch_opens_while_the_old_copy_is_open() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let test = "fuse_posix_a_name_replaced_from_another_branch_opens_while_the_old_copy_is_open";
    let (_tmp, a, b, mnt) = two_branches();
    let list = format!("{}:{}", a.display(), b.display());
    let Some(pool) = Pool::mount(test, &list, &mnt, "category.create=ff") else {
        return;
    };
    // Saved by `rename(tmp, name)` with the new copy on the other branch each time
    // (as a random create policy does), while another reader keeps opening the
    // name: the old copy is open when the new one arrives. A plain directory opens
    // the old or the new file, never EBUSY.
    let name = pool.path("saved");
    fs::write(&name, b"first").unwrap();
    let round = std::sync::atomic::AtomicUsize::new(0);
    let (branches, dir, target) = ([a.clone(), b.clone()], pool.mnt.clone(), name.clone());
    let writer = move || {
        let i = round.fetch_add(1, Ordering::Relaxed);
        fs::write(branches[i % 2].join("saved.tmp"), b"again").unwrap();
        fs::rename(dir.join("saved.tmp"), &target).unwrap();
    };
    let stop = Arc::new(AtomicBool::new(false));
    let holder = {
        let (stop, name) = (stop.clone(), name.clone());
        std::thread::spawn(move || {
            let mut failed = Vec::new();
            let mut reads = 0;
            while !stop.load(Ordering::Relaxed) {
                reads += 1;
                if let Err(e) = fs::read(&name) {
                    failed.push(e.raw_os_error().unwrap_or(0));
                }
            }
            (reads, failed)
        })
    };
    let mut failed = race(20_000, writer, || fs::read(&name).map(drop));
    stop.store(true, Ordering::Relaxed);
    let (reads, held) = holder.join().unwrap();
    failed.extend(held);
    let reads = reads + 20_000;
    let count = |errno: i32| failed.iter().filter(|&&e| e == errno).count();
    // An open that meets both copies tries again once the rename is done: with
    // saves through a random create policy none is refused (EBUSY); with this
    // writer, far faster than any real save, one in tens of thousands still is
    // (about 850 of 40,000 opens were without the retry).
    assert!(
        count(libc::EBUSY) * 2_000 < reads,
        "EBUSY: {} of {reads}",
        count(libc::EBUSY)
    );
    // A name found just before it was replaced opens the old file while an open
    // holds it; the kernel's one retry on ESTALE covers most other cases, but a
    // writer this fast still beats it now and then.
    assert_eq!(
        count(libc::ESTALE) + count(libc::EBUSY),
        failed.len(),
        "only ESTALE: {failed:?}"
    );
    assert!(
        failed.len() * 20 < reads,
        "{} of {reads} reads failed",
        failed.len()
    );
}

#[test]
fn fuse_posix_o_direct_opens_read_and_write() {
    use std::os::unix::fs::OpenOptionsExt;
    let test = "fuse_posix_o_direct_opens_read_and_write";
    // An aligned buffer, as O_DIRECT asks of every transfer on a plain file system.
    let layout = std::alloc::Layout::from_size_align(1 << 20, 4096).unwrap();
    // SAFETY: the layout has a non-zero size; the buffer is freed below.
    let ptr = unsafe { std::alloc::alloc(layout) };
    assert!(!ptr.is_null());
    // SAFETY: `ptr` points to `layout.size()` bytes we own.
    let buf = unsafe { std::slice::from_raw_parts_mut(ptr, layout.size()) };
    for (i, b) in buf.iter_mut().enumerate() {
        *b = (i * 7 % 251) as u8;
    }
    let want = buf.to_vec();
    for passthrough in ["off", "rw"] {
        let (_tmp, a, b, mnt) = two_branches();
        let list = format!("{}:{}", a.display(), b.display());
        let options = format!("category.create=ff,passthrough.io={passthrough}");
        let Some(pool) = Pool::mount(test, &list, &mnt, &options) else {
            break;
        };
        let direct = |write: bool| {
            OpenOptions::new()
                .read(!write)
                .write(write)
                .create(write)
                .truncate(write)
                .custom_flags(libc::O_DIRECT)
                .open(pool.path("direct"))
        };
        direct(true).unwrap().write_all_at(buf, 0).unwrap();
        buf.fill(0);
        direct(false).unwrap().read_exact_at(buf, 0).unwrap();
        assert!(*buf == want[..], "passthrough.io={passthrough}");
        assert_eq!(fs::read(a.join("direct")).unwrap(), want);
    }
    // SAFETY: allocated above with the same layout.
    unsafe { std::alloc::dealloc(ptr, layout) };
}

#[test]
fn fuse_posix_times_before_1970_keep_their_fraction() {
    let test = "fuse_posix_times_before_1970_keep_their_fraction";
    let (_tmp, a, b, mnt) = two_branches();
    let list = format!("{}:{}", a.display(), b.display());
    let Some(pool) = Pool::mount(test, &list, &mnt, "category.create=ff") else {
        return;
    };
    fs::write(pool.path("old"), b"x").unwrap();
    // 1969-12-31 23:59:58.5 and 1969-12-31 23:59:59.000000001 as the kernel has them.
    for (sec, nsec) in [(-2i64, 500_000_000i64), (-1, 1), (5, 7)] {
        let times = [libc::timespec {
            tv_sec: sec,
            tv_nsec: nsec,
        }; 2];
        let path = cpath(&pool.path("old"));
        // SAFETY: a NUL-terminated path and two valid timespecs.
        let rc = unsafe { libc::utimensat(libc::AT_FDCWD, path.as_ptr(), times.as_ptr(), 0) };
        assert_eq!(rc, 0);
        let meta = fs::metadata(a.join("old")).unwrap();
        assert_eq!((meta.mtime(), meta.mtime_nsec()), (sec, nsec));
        let meta = fs::metadata(pool.path("old")).unwrap();
        assert_eq!((meta.atime(), meta.atime_nsec()), (sec, nsec));
    }
}

#[test]
fn lhfs_refuses_bad_input_without_mounting() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, mnt) = (tmp.path().join("a"), tmp.path().join("mnt"));
    fs::create_dir(&a).unwrap();
    fs::create_dir(&mnt).unwrap();
    let dev = fs::metadata(&mnt).unwrap().dev();
    let (a, m) = (a.to_str().unwrap(), mnt.to_str().unwrap());
    let inside = format!("{m}/sub");
    let holder = tmp.path().to_str().unwrap();
    for (args, needle) in [
        (vec![holder, m, "-f"], "is inside branch"),
        (vec![a, m, "-f", "-o", "cache.files=maybe"], "cache.files"),
        (
            vec![a, m, "-f", "-o", "minfreespace=1G", "-o", "no_such_option"],
            "no_such_option",
        ),
        (vec![m, m, "-f"], "mountpoint"),
        (vec![inside.as_str(), m, "-f"], "mountpoint"),
    ] {
        let out = common::run("lhfs", &args, &[]);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(
            common::stderr(&out).contains(needle),
            "{args:?}: {}",
            common::stderr(&out)
        );
        assert_eq!(fs::metadata(&mnt).unwrap().dev(), dev, "nothing mounted");
    }
    let out = common::run("lhfs", &["--version"], &[]);
    assert!(common::stdout(&out).starts_with("lhfs "));
}

/// Sets, reads, lists and removes a `user.` attribute through `file`'s descriptor
/// (f*xattr), as one log line.
fn fd_xattrs(file: &fs::File) -> String {
    use std::os::fd::AsRawFd;
    let (fd, name) = (file.as_raw_fd(), c"user.un");
    let last = || std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
    // SAFETY: plain syscalls on an open descriptor with NUL-terminated names and
    // buffers passed with their lengths.
    unsafe {
        let set = libc::fsetxattr(fd, name.as_ptr(), b"v1".as_ptr().cast(), 2, 0);
        let mut buf = [0u8; 64];
        let got = libc::fgetxattr(fd, name.as_ptr(), buf.as_mut_ptr().cast(), buf.len());
        let value = String::from_utf8_lossy(&buf[..got.max(0) as usize]).into_owned();
        let mut names = [0u8; 256];
        let n = libc::flistxattr(fd, names.as_mut_ptr().cast(), names.len());
        let listed = names[..n.max(0) as usize]
            .split(|&b| b == 0)
            .any(|n| n == b"user.un");
        let removed = libc::fremovexattr(fd, name.as_ptr());
        let again = libc::fgetxattr(fd, name.as_ptr(), buf.as_mut_ptr().cast(), buf.len());
        format!(
            "set {set} get {value:?} listed {listed} removed {removed} then {}",
            if again < 0 {
                format!("errno {}", last())
            } else {
                "found".to_owned()
            }
        )
    }
}

/// What calls through a descriptor of a folder removed meanwhile answer, in `base`.
fn in_a_removed_folder(base: &Path) -> Vec<String> {
    use std::os::fd::AsRawFd;
    let dir = base.join("gone");
    fs::create_dir(&dir).unwrap();
    let handle = File::open(&dir).unwrap();
    fs::remove_dir(&dir).unwrap();
    let fd = handle.as_raw_fd();
    let name = |n: &str| cpath(Path::new(n));
    let errno = |r: libc::c_int| {
        if r < 0 {
            std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
        } else {
            0
        }
    };
    // SAFETY: plain syscalls on a descriptor this function owns and C strings it made.
    let mut out = unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        vec![
            format!(
                "unlinkat {}",
                errno(libc::unlinkat(fd, name("x").as_ptr(), 0))
            ),
            format!(
                "mkdirat {}",
                errno(libc::mkdirat(fd, name("y").as_ptr(), 0o755))
            ),
            format!(
                "openat creat {}",
                errno(libc::openat(
                    fd,
                    name("z").as_ptr(),
                    libc::O_CREAT | libc::O_WRONLY,
                    0o644
                ))
            ),
            format!(
                "fstatat {}",
                errno(libc::fstatat(fd, name("x").as_ptr(), &mut st, 0))
            ),
            format!(
                "fstat {} nlink {}",
                errno(libc::fstat(fd, &mut st)),
                st.st_nlink
            ),
            format!(
                "fgetxattr {}",
                errno(libc::fgetxattr(fd, name("user.x").as_ptr(), std::ptr::null_mut(), 0) as i32)
            ),
            format!(
                "flistxattr {}",
                libc::flistxattr(fd, std::ptr::null_mut(), 0)
            ),
            format!("fchmod {}", errno(libc::fchmod(fd, 0o700))),
            format!(
                "futimens {}",
                errno(libc::futimens(
                    fd,
                    [
                        libc::timespec {
                            tv_sec: 0,
                            tv_nsec: libc::UTIME_OMIT
                        },
                        libc::timespec {
                            tv_sec: 1_000_000_000,
                            tv_nsec: 500
                        },
                    ]
                    .as_ptr()
                ))
            ),
            {
                libc::fstat(fd, &mut st);
                format!(
                    "mode {:o} mtime {}.{}",
                    st.st_mode, st.st_mtime, st.st_mtime_nsec
                )
            },
        ]
    };
    let listed: Vec<_> = fs::read_dir(format!("/proc/self/fd/{fd}"))
        .map(|r| r.filter_map(Result::ok).map(|e| e.file_name()).collect())
        .unwrap_or_else(|e| vec![format!("error {e}").into()]);
    out.push(format!("listed {listed:?}"));
    out
}

#[test]
fn fuse_posix_a_removed_folder_answers_as_on_a_plain_directory_and_parallel_rm_finishes() {
    let test =
        "fuse_posix_a_removed_folder_answers_as_on_a_plain_directory_and_parallel_rm_finishes";
    let (tmp, a, b, mnt) = two_branches();
    let list = format!("{}:{}", a.display(), b.display());
    let Some(pool) = Pool::mount(test, &list, &mnt, "category.create=rand") else {
        return;
    };
    let plain = tmp.path().join("plain");
    fs::create_dir(&plain).unwrap();
    let want = in_a_removed_folder(&plain);
    assert_eq!(in_a_removed_folder(&pool.mnt), want);
    assert!(want[0] == format!("unlinkat {}", libc::ENOENT), "{want:?}");

    // Three `rm -rf` of one tree: each name goes once, and nothing fails or stays.
    for round in 0..3 {
        let tree = pool.path("tree");
        for d in 0..60 {
            let sub = tree.join(format!("a{}/b{d}/c", d % 6));
            fs::create_dir_all(&sub).unwrap();
            for f in 0..30 {
                fs::write(sub.join(format!("f{f}")), b"x").unwrap();
            }
            for f in 0..5 {
                fs::write(tree.join(format!("a{}/b{d}/g{f}", d % 6)), b"y").unwrap();
            }
        }
        let rm = || {
            std::process::Command::new("rm")
                .arg("-rf")
                .arg(&tree)
                .output()
                .unwrap()
        };
        let outs: Vec<_> = std::thread::scope(|s| {
            let others: Vec<_> = (0..2).map(|_| s.spawn(rm)).collect();
            let mut outs = vec![rm()];
            outs.extend(others.into_iter().map(|o| o.join().unwrap()));
            outs
        });
        for out in &outs {
            assert!(
                out.status.success() && out.stderr.is_empty(),
                "round {round}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        for root in [&a, &b, &pool.mnt] {
            assert_eq!(
                fs::read_dir(root).unwrap().count(),
                0,
                "round {round}: {root:?}"
            );
        }
    }
    drop(pool);

    // The attributes of a folder asked for while it is being removed (no attribute
    // cache, as a permission check of another `rm` finds it): never ESTALE.
    let Some(pool) = Pool::mount(test, &list, &mnt, "cache.attr=0") else {
        return;
    };
    let mut failed = 0;
    for _ in 0..300 {
        let dir = pool.path("d");
        fs::create_dir(&dir).unwrap();
        let handle = File::open(&dir).unwrap();
        let stop = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| {
            let asker = s.spawn(|| {
                let mut failed = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    failed += usize::from(handle.metadata().is_err());
                }
                failed
            });
            fs::remove_dir(&dir).unwrap();
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            failed += asker.join().unwrap();
        });
    }
    assert_eq!(failed, 0, "fstat of a folder being removed failed");
}

/// Appends `text` to `path` as the user `uid` (group the same), through `sh`.
fn append_as(uid: u32, path: &Path, text: &str) -> std::process::Output {
    std::process::Command::new("setpriv")
        .args([
            &format!("--reuid={uid}"),
            &format!("--regid={uid}"),
            "--clear-groups",
            "sh",
            "-c",
            &format!("printf '{text}' >> '{}'", path.display()),
        ])
        .output()
        .expect("setpriv")
}

#[test]
fn fuse_posix_link_cow_gives_a_written_hard_link_its_own_file() {
    use std::os::unix::fs::PermissionsExt;
    let test = "fuse_posix_link_cow_gives_a_written_hard_link_its_own_file";
    for options in [
        "link-cow=true,passthrough.io=rw",
        "link-cow=true,passthrough.io=off",
        "link-cow=false",
    ] {
        let cow = options.starts_with("link-cow=true");
        let (tmp, a, b, mnt) = two_branches();
        fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755)).unwrap();
        fs::set_permissions(&a, fs::Permissions::from_mode(0o777)).unwrap();
        fs::write(a.join("f"), b"original\n").unwrap();
        fs::hard_link(a.join("f"), a.join("g")).unwrap();
        fs::set_permissions(a.join("f"), fs::Permissions::from_mode(0o640)).unwrap();
        setx(&a.join("f"), "user.x", "1").unwrap();
        fs::write(a.join("h"), b"old bytes\n").unwrap();
        fs::hard_link(a.join("h"), a.join("i")).unwrap();
        for name in ["o", "p"] {
            fs::write(a.join(name), b"users'\n").unwrap();
            fs::set_permissions(a.join(name), fs::Permissions::from_mode(0o666)).unwrap();
            std::os::unix::fs::chown(a.join(name), Some(1001), Some(1001)).unwrap();
            fs::hard_link(a.join(name), a.join(format!("{name}2"))).unwrap();
        }
        let branches = format!("{}:{}", a.display(), b.display());
        let Some(pool) = Pool::mount(test, &branches, &mnt, options) else {
            return;
        };
        let links = |name: &str| fs::metadata(a.join(name)).unwrap().nlink();

        // Reading leaves the names one file.
        assert_eq!(fs::read(pool.path("f")).unwrap(), b"original\n");
        assert_eq!(links("f"), 2, "{options}");
        // Writing through one name: with link-cow the other keeps its bytes.
        let mut f = OpenOptions::new()
            .append(true)
            .open(pool.path("f"))
            .unwrap();
        f.write_all(b"appended\n").unwrap();
        drop(f);
        assert_eq!(fs::read(a.join("f")).unwrap(), b"original\nappended\n");
        let g = fs::read(a.join("g")).unwrap();
        if cow {
            assert_eq!(g, b"original\n", "{options}");
            assert_eq!((links("f"), links("g")), (1, 1), "{options}");
            // The copy is the file it was: mode and extended attributes.
            let meta = fs::metadata(a.join("f")).unwrap();
            assert_eq!(meta.mode() & 0o7777, 0o640, "{options}");
            assert_eq!(
                common::fuse::getx(&a.join("f"), "user.x"),
                Ok(b"1".to_vec())
            );
            // The pool shows two files now.
            let (pf, pg) = (
                fs::metadata(pool.path("f")).unwrap(),
                fs::metadata(pool.path("g")).unwrap(),
            );
            assert_eq!(pf.nlink(), 1, "{options}");
            assert_ne!(pf.ino(), pg.ino(), "{options}");
        } else {
            assert_eq!(g, b"original\nappended\n", "{options}");
            assert_eq!(links("f"), 2, "{options}");
        }
        // A truncating open: the other name keeps its bytes too.
        fs::write(pool.path("h"), b"new\n").unwrap();
        let i = fs::read(a.join("i")).unwrap();
        assert_eq!(
            i,
            if cow {
                &b"old bytes\n"[..]
            } else {
                &b"new\n"[..]
            },
            "{options}"
        );
        assert_eq!(fs::read(a.join("h")).unwrap(), b"new\n");

        // Another user's file: only root could give the copy its owner, so the
        // write reaches both names, as without the option.
        let out = append_as(1002, &pool.path("o"), "by 1002\\n");
        assert!(out.status.success(), "{options}: {out:?}");
        assert_eq!(
            fs::read(a.join("o2")).unwrap(),
            b"users'\nby 1002\n",
            "{options}"
        );
        assert_eq!(links("o"), 2, "{options}");
        // The owner's write makes the copy, owned as before.
        let out = append_as(1001, &pool.path("p"), "by 1001\\n");
        assert!(out.status.success(), "{options}: {out:?}");
        assert_eq!(fs::read(a.join("p")).unwrap(), b"users'\nby 1001\n");
        let p2 = fs::read(a.join("p2")).unwrap();
        assert_eq!(
            p2,
            if cow {
                &b"users'\n"[..]
            } else {
                &b"users'\nby 1001\n"[..]
            }
        );
        let meta = fs::metadata(a.join("p")).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (1001, 1001), "{options}");

        // A sparse file is copied as the little it holds, at once.
        let sparse = File::create(a.join("sparse")).unwrap();
        sparse.set_len(8 << 30).unwrap();
        sparse.write_all_at(b"data", 4 << 30).unwrap();
        drop(sparse);
        fs::hard_link(a.join("sparse"), a.join("sparse2")).unwrap();
        let mut f = OpenOptions::new()
            .write(true)
            .open(pool.path("sparse"))
            .unwrap();
        f.write_all(b"head").unwrap();
        drop(f);
        let meta = fs::metadata(a.join("sparse")).unwrap();
        assert_eq!(meta.len(), 8 << 30);
        assert!(meta.blocks() < 1024, "{options}: {} blocks", meta.blocks());
        let mut tail = [0u8; 4];
        File::open(a.join("sparse"))
            .unwrap()
            .read_exact_at(&mut tail, 4 << 30)
            .unwrap();
        assert_eq!(&tail, b"data");
        // A file capability stays on the other name (a write takes it off the
        // file written, as on any file system).
        const CAP: [u8; 20] = [0, 0, 0, 2, 0, 32, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        fs::write(a.join("cap"), b"c").unwrap();
        assert_eq!(setx(&a.join("cap"), "security.capability", &CAP), Ok(()));
        fs::hard_link(a.join("cap"), a.join("cap2")).unwrap();
        OpenOptions::new()
            .append(true)
            .open(pool.path("cap"))
            .unwrap()
            .write_all(b"more")
            .unwrap();
        assert_eq!(
            getx(&a.join("cap2"), "security.capability").is_ok(),
            cow,
            "{options}"
        );
        assert_eq!(
            fs::read(a.join("cap2")).unwrap(),
            if cow { &b"c"[..] } else { &b"cmore"[..] }
        );

        // Writers opening one linked file at once all write to the one file the
        // name then holds.
        let big = vec![7u8; 96 << 20];
        fs::write(a.join("big"), &big).unwrap();
        fs::hard_link(a.join("big"), a.join("big2")).unwrap();
        std::thread::scope(|scope| {
            for w in 0..4u64 {
                let path = pool.path("big");
                scope.spawn(move || {
                    let f = OpenOptions::new().write(true).open(path).unwrap();
                    f.write_all_at(&[w as u8 + 1; 8], w * 4096).unwrap();
                });
            }
        });
        let mut got = [0u8; 8];
        let f = File::open(a.join("big")).unwrap();
        for w in 0..4u64 {
            f.read_exact_at(&mut got, w * 4096).unwrap();
            assert_eq!(got, [w as u8 + 1; 8], "{options}: writer {w}");
        }
        assert_eq!(links("big"), if cow { 1 } else { 2 }, "{options}");
        let first = fs::read(a.join("big2")).unwrap()[0];
        assert_eq!(first, if cow { 7 } else { 1 }, "{options}");

        // An open of the name while a writer's copy is being made waits for it, and
        // then opens the file the writer writes, rather than failing either.
        fs::write(a.join("cold"), vec![3u8; 256 << 20]).unwrap();
        fs::hard_link(a.join("cold"), a.join("cold2")).unwrap();
        let cold = File::open(a.join("cold")).unwrap();
        cold.sync_all().unwrap();
        // SAFETY: advice on an open descriptor.
        unsafe {
            libc::posix_fadvise(
                std::os::fd::AsRawFd::as_raw_fd(&cold),
                0,
                0,
                libc::POSIX_FADV_DONTNEED,
            )
        };
        drop(cold);
        std::thread::scope(|scope| {
            let writer = scope.spawn(|| {
                let f = OpenOptions::new().write(true).open(pool.path("cold"))?;
                f.write_all_at(b"w", 0)
            });
            std::thread::sleep(std::time::Duration::from_millis(20));
            // Held open until the writer is done.
            let reader = File::open(pool.path("cold"));
            let first = reader.as_ref().ok().and_then(|f| {
                let mut b = [0u8; 1];
                f.read_exact_at(&mut b, 1).ok().map(|()| b[0])
            });
            assert_eq!(first, Some(3), "{options}: {reader:?}");
            writer.join().unwrap().unwrap();
            drop(reader);
        });
        assert_eq!(fs::read(a.join("cold")).unwrap()[0], b'w');

        // No copy is left behind.
        let names: Vec<String> = fs::read_dir(&a)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".lhfs"))
            .collect();
        assert!(names.is_empty(), "{options}: {names:?}");
        drop(pool);
    }
}
