//! Union operations on real temporary branch directories: policies applied to paths,
//! result rules, rename/link algorithms, path cloning, statfs, and containment with
//! branches holding symlinks that point outside.

use std::fs;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::*;
use crate::branch::{Branch, BranchMode};

const ROOT: Caller = Caller {
    uid: 0,
    gid: 0,
    groups: Vec::new(),
};

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Temporary branches `b0..bn` and an `outside` directory that must never change.
struct Pool {
    _dir: tempfile::TempDir,
    branches: Vec<PathBuf>,
    outside: PathBuf,
}

impl Pool {
    fn new(n: usize) -> Pool {
        let dir = tempfile::tempdir().unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let branches: Vec<PathBuf> = (0..n).map(|i| dir.path().join(format!("b{i}"))).collect();
        for b in &branches {
            fs::create_dir(b).unwrap();
        }
        let outside = dir.path().join("outside");
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("secret"), b"secret").unwrap();
        Pool {
            _dir: dir,
            branches,
            outside,
        }
    }

    fn path(&self, branch: usize, rel: &str) -> PathBuf {
        self.branches[branch].join(rel)
    }

    fn file(&self, branch: usize, rel: &str, data: &str) -> &Self {
        let p = self.path(branch, rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, data).unwrap();
        self
    }

    fn dir(&self, branch: usize, rel: &str) -> &Self {
        fs::create_dir_all(self.path(branch, rel)).unwrap();
        self
    }

    fn union_with(&self, modes: &[BranchMode], options: &str) -> Union {
        let mut opts = Options::parse(options).unwrap();
        opts.minfreespace = 0;
        let branches: Vec<Branch> = self
            .branches
            .iter()
            .enumerate()
            .map(|(i, path)| Branch {
                path: path.clone(),
                mode: modes.get(i).copied().unwrap_or(BranchMode::RW),
                min_free_space: None,
            })
            .collect();
        Union::new(&branches, Arc::new(opts))
    }

    fn union(&self, options: &str) -> Union {
        self.union_with(&[], options)
    }

    /// Everything below `outside`, with contents and modes, to compare before/after.
    fn outside_state(&self) -> Vec<(PathBuf, u32, u32, Vec<u8>)> {
        let mut state = Vec::new();
        let mut stack = vec![self.outside.clone()];
        while let Some(p) = stack.pop() {
            let meta = fs::symlink_metadata(&p).unwrap();
            let data = if meta.is_file() {
                fs::read(&p).unwrap()
            } else {
                Vec::new()
            };
            state.push((p.clone(), meta.mode(), meta.uid(), data));
            if meta.is_dir() {
                for e in fs::read_dir(&p).unwrap() {
                    stack.push(e.unwrap().path());
                }
            }
        }
        state.sort();
        state
    }
}

fn p(s: &str) -> &Path {
    Path::new(s)
}

fn names(entries: &[DirEntry]) -> Vec<String> {
    let mut n: Vec<String> = entries
        .iter()
        .map(|e| e.name.to_string_lossy().into_owned())
        .collect();
    n.sort();
    n
}

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().mode() & 0o7777
}

// ---- search and readdir ----

#[test]
fn getattr_uses_the_search_policy_and_inodecalc() {
    let pool = Pool::new(2);
    pool.file(0, "a", "zero")
        .file(1, "a", "one!!")
        .file(1, "b", "b");
    let u = pool.union("");
    let a = u.getattr(p("/a")).unwrap();
    assert_eq!((a.branch, a.stat.st_size), (0, 4));
    let expected = InodeCalc::HybridHash.inode(
        &pool.branches[0],
        p("/a"),
        a.stat.st_mode,
        fs::metadata(pool.path(0, "a")).unwrap().ino(),
    );
    assert_eq!(a.stat.st_ino, expected);
    assert_eq!(u.getattr(p("/b")).unwrap().branch, 1);
    assert_eq!(u.getattr(p("/c")).unwrap_err(), Errno(libc::ENOENT));
    assert_eq!(u.getattr(p("/")).unwrap().branch, 0);
    assert_eq!(u.getattr(p("/../b0")).unwrap_err(), Errno(libc::EINVAL));

    let u = pool.union("func.getattr=lfs");
    assert_eq!(
        u.getattr(p("/a")).unwrap().branch,
        1,
        "tie on free space: last"
    );
}

use crate::node::InodeCalc;

#[test]
fn readdir_merges_and_dedupes_first_branch_wins() {
    let pool = Pool::new(3);
    pool.file(0, "a", "").dir(0, "d").file(0, "d/x", "");
    pool.dir(1, "a").file(1, "b", "").file(1, "d/y", "");
    pool.file(2, "c", "");
    let u = pool.union("");
    let root = u.readdir(p("/")).unwrap();
    assert_eq!(names(&root), ["a", "b", "c", "d"]);
    let a = root.iter().find(|e| e.name == "a").unwrap();
    assert_eq!(a.kind, libc::S_IFREG, "branch 0 lists `a` first, as a file");
    let ino = fs::metadata(pool.path(0, "a")).unwrap().ino();
    assert_eq!(a.ino, u.getattr(p("/a")).unwrap().stat.st_ino);
    assert_ne!(a.ino, ino);
    assert_eq!(names(&u.readdir(p("/d")).unwrap()), ["x", "y"]);
    assert_eq!(u.readdir(p("/nope")).unwrap_err(), Errno(libc::ENOENT));
    assert_eq!(u.readdir(p("/c")).unwrap_err(), Errno(libc::ENOTDIR));
}

#[test]
fn missing_branch_roots_hold_nothing() {
    let pool = Pool::new(1);
    pool.file(0, "a", "");
    let mut branches = vec![Branch {
        path: pool.branches[0].join("not-there"),
        mode: BranchMode::RW,
        min_free_space: None,
    }];
    branches.push(Branch {
        path: pool.branches[0].clone(),
        mode: BranchMode::RW,
        min_free_space: None,
    });
    let u = Union::new(&branches, Arc::new(Options::default()));
    assert_eq!(u.getattr(p("/a")).unwrap().branch, 1);
    assert_eq!(names(&u.readdir(p("/")).unwrap()), ["a"]);
}

#[test]
fn a_branch_folder_deleted_behind_the_pool_is_passed_over_by_create() {
    let pool = Pool::new(2);
    // Branch 0 first for ff; then its folder goes, as when a disk's folder is
    // removed under a running pool.
    let u = pool.union("category.create=ff,minfreespace=0");
    std::fs::remove_dir(&pool.branches[0]).unwrap();
    let made = u
        .create(&ROOT, p("/f"), libc::O_RDWR, Mode::new(0o644, 0))
        .unwrap();
    assert_eq!(made.attr.branch, 1);
    assert!(pool.path(1, "f").exists());
    let u = pool.union("category.create=mfs,minfreespace=0");
    assert_eq!(
        u.mkdir(&ROOT, p("/d"), Mode::new(0o755, 0)).unwrap().branch,
        1
    );
}

#[test]
fn a_branch_folder_deleted_behind_the_pool_counts_for_nothing_in_statfs() {
    // Two branches on two filesystems (a tmpfs for the second), so that each
    // counts once.
    if !is_root() {
        return;
    }
    let pool = Pool::new(2);
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=8m", "tmpfs"])
        .arg(&pool.branches[1])
        .status()
        .is_ok_and(|s| s.success());
    assert!(mounted, "mounting a tmpfs");
    let both = pool.union("").statfs(p("/")).unwrap();
    let gone = pool.branches[0].join("gone");
    std::fs::create_dir(&gone).unwrap();
    let branches = [
        Branch {
            path: gone.clone(),
            mode: BranchMode::RW,
            min_free_space: None,
        },
        Branch {
            path: pool.branches[1].clone(),
            mode: BranchMode::RW,
            min_free_space: None,
        },
    ];
    let u = Union::new(&branches, Arc::new(Options::default()));
    assert_eq!(u.statfs(p("/")).unwrap().blocks, both.blocks);
    std::fs::remove_dir(&gone).unwrap();
    let left = u.statfs(p("/")).unwrap();
    // The pool holds the tmpfs open until it goes.
    drop(u);
    let _ = std::process::Command::new("umount")
        .arg(&pool.branches[1])
        .status();
    assert!(left.blocks < both.blocks, "{left:?} against {both:?}");
}

// ---- create ----

#[test]
fn create_clones_the_parent_onto_the_chosen_branch() {
    let pool = Pool::new(2);
    pool.dir(1, "d/e");
    let src = pool.path(1, "d");
    fs::set_permissions(&src, fs::Permissions::from_mode(0o750)).unwrap();
    xattr_set(&src, "user.tag", b"blue");
    if is_root() {
        std::os::unix::fs::chown(&src, Some(1234), Some(5678)).unwrap();
    }
    let times = [
        libc::timespec {
            tv_sec: 1_000_000,
            tv_nsec: 5,
        },
        libc::timespec {
            tv_sec: 2_000_000,
            tv_nsec: 7,
        },
    ];
    let u = pool.union("category.create=ff");
    u.utimens(p("/d"), times).unwrap();

    let created = u
        .create(&ROOT, p("/d/e/new"), libc::O_WRONLY, Mode::new(0o640, 0))
        .unwrap();
    assert_eq!(created.attr.branch, 0);
    assert!(pool.path(0, "d/e/new").is_file());
    let cloned = fs::metadata(pool.path(0, "d")).unwrap();
    assert_eq!(cloned.mode() & 0o7777, 0o750);
    // mtime moved on when the children were made; atime is as copied.
    assert_eq!(cloned.atime(), 1_000_000);
    assert_eq!(
        xattr_get(&pool.path(0, "d"), "user.tag"),
        Some(b"blue".to_vec())
    );
    if is_root() {
        assert_eq!((cloned.uid(), cloned.gid()), (1234, 5678));
    }
    assert_eq!(
        mode(&pool.path(0, "d/e/new")) & 0o777,
        0o640 & !current_umask()
    );

    // A parent missing everywhere is ENOENT; an existing name is EEXIST (O_EXCL).
    let err = u
        .create(&ROOT, p("/none/f"), libc::O_WRONLY, Mode::new(0o644, 0))
        .unwrap_err();
    assert_eq!(err, Errno(libc::ENOENT));
    let err = u
        .create(
            &ROOT,
            p("/d/e/new"),
            libc::O_WRONLY | libc::O_EXCL,
            Mode::new(0o644, 0),
        )
        .unwrap_err();
    assert_eq!(err, Errno(libc::EEXIST));
}

fn current_umask() -> u32 {
    // SAFETY: umask has no preconditions; the old value is put back at once.
    unsafe {
        let old = libc::umask(0o022);
        libc::umask(old);
        old
    }
}

#[test]
fn create_policies_pick_branches_and_report_policy_errors() {
    let pool = Pool::new(2);
    pool.dir(1, "d");
    // epff: only where the parent exists.
    let u = pool.union("category.create=epff");
    assert_eq!(
        u.create(&ROOT, p("/d/f"), libc::O_RDWR, Mode::new(0o644, 0))
            .unwrap()
            .attr
            .branch,
        1
    );
    assert!(!pool.path(0, "d").exists());
    // RO/NC branches are never created on; all of them barred is EROFS.
    let u = pool.union_with(&[BranchMode::NC, BranchMode::RO], "category.create=ff");
    assert_eq!(
        u.mkdir(&ROOT, p("/x"), Mode::new(0o755, 0)).unwrap_err(),
        Errno(libc::EROFS)
    );
    // minfreespace beyond any disk: ENOSPC.
    let mut opts = Options::parse("category.create=mfs").unwrap();
    opts.minfreespace = u64::MAX;
    let u = pool.union("").with_options(Arc::new(opts));
    assert_eq!(
        u.mkdir(&ROOT, p("/x"), Mode::new(0o755, 0)).unwrap_err(),
        Errno(libc::ENOSPC)
    );
    // A parent folder missing everywhere is ENOENT, before the policy's own error
    // (as mergerfs, which looks for the parent first) and when the policy found a
    // branch.
    assert_eq!(
        u.create(&ROOT, p("/nowhere/f"), libc::O_RDWR, Mode::new(0o644, 0))
            .unwrap_err(),
        Errno(libc::ENOENT)
    );
    let u = pool.union_with(&[BranchMode::NC, BranchMode::RO], "category.create=ff");
    assert_eq!(
        u.mkdir(&ROOT, p("/nowhere/x"), Mode::new(0o755, 0))
            .unwrap_err(),
        Errno(libc::ENOENT)
    );
    let u = pool.union("category.create=ff");
    assert_eq!(
        u.create(&ROOT, p("/nowhere/f"), libc::O_RDWR, Mode::new(0o644, 0))
            .unwrap_err(),
        Errno(libc::ENOENT)
    );
    assert!(!pool.path(0, "nowhere").exists() && !pool.path(1, "nowhere").exists());
}

#[test]
fn a_parent_is_cloned_from_where_the_search_found_it_before_anything_was_made() {
    let pool = Pool::new(3);
    pool.dir(0, "p").dir(1, "p");
    fs::set_permissions(pool.path(0, "p"), fs::Permissions::from_mode(0o750)).unwrap();
    fs::set_permissions(pool.path(1, "p"), fs::Permissions::from_mode(0o755)).unwrap();
    // b0's copy is the newest until entries are made: the one made last (on b1)
    // would be the newest after that.
    let ago = |secs| std::time::SystemTime::now() - std::time::Duration::from_secs(secs);
    fs::File::open(pool.path(0, "p"))
        .unwrap()
        .set_modified(ago(10))
        .unwrap();
    fs::File::open(pool.path(1, "p"))
        .unwrap()
        .set_modified(ago(1000))
        .unwrap();
    let u = pool.union("category.create=all,category.search=newest");
    u.mkdir(&ROOT, p("/p/x"), Mode::new(0o755, 0)).unwrap();
    for b in 0..3 {
        assert!(pool.path(b, "p/x").is_dir(), "b{b}");
    }
    assert_eq!(mode(&pool.path(2, "p")) & 0o7777, 0o750);
}

#[test]
fn mkdir_mknod_symlink_run_on_every_chosen_branch() {
    let pool = Pool::new(3);
    pool.dir(0, "d").dir(2, "d");
    let u = pool.union("category.create=epall");
    u.mkdir(&ROOT, p("/d/sub"), Mode::new(0o755, 0)).unwrap();
    assert!(pool.path(0, "d/sub").is_dir() && pool.path(2, "d/sub").is_dir());
    assert!(!pool.path(1, "d").exists());
    u.mknod(&ROOT, p("/d/fifo"), Mode::new(libc::S_IFIFO | 0o644, 0), 0)
        .unwrap();
    assert!(fs::symlink_metadata(pool.path(2, "d/fifo"))
        .unwrap()
        .file_type()
        .is_fifo());
    let attr = u
        .symlink(&ROOT, OsStr::new("../target"), p("/d/link"))
        .unwrap();
    assert_eq!(attr.stat.st_mode & libc::S_IFMT, libc::S_IFLNK);
    assert_eq!(u.readlink(p("/d/link")).unwrap(), b"../target");
    assert_eq!(
        fs::read_link(pool.path(2, "d/link")).unwrap(),
        p("../target")
    );
    assert_eq!(
        u.mkdir(&ROOT, p("/d/sub"), Mode::new(0o755, 0))
            .unwrap_err(),
        Errno(libc::EEXIST)
    );
    assert_eq!(
        u.mkdir(&ROOT, p("/"), Mode::new(0o755, 0)).unwrap_err(),
        Errno(libc::EEXIST)
    );
}

#[test]
fn entries_created_for_a_caller_belong_to_the_caller() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let pool = Pool::new(2);
    pool.dir(1, "shared");
    fs::set_permissions(pool.path(1, "shared"), fs::Permissions::from_mode(0o777)).unwrap();
    fs::set_permissions(&pool.branches[0], fs::Permissions::from_mode(0o755)).unwrap();
    let user = Caller {
        uid: 12345,
        gid: 23456,
        groups: vec![],
    };
    let u = pool.union("category.create=ff");
    // The parent is cloned as root onto branch 0, then the file made as the caller.
    let f = u
        .create(&user, p("/shared/f"), libc::O_WRONLY, Mode::new(0o644, 0))
        .unwrap();
    assert_eq!((f.attr.stat.st_uid, f.attr.stat.st_gid), (12345, 23456));
    let meta = fs::metadata(pool.path(0, "shared/f")).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (12345, 23456));
    let d = u.mkdir(&user, p("/shared/d"), Mode::new(0o755, 0)).unwrap();
    assert_eq!(d.stat.st_uid, 12345);
    // The caller may not write where it has no permission, even though root could.
    let err = u
        .mkdir(&user, p("/private"), Mode::new(0o755, 0))
        .unwrap_err();
    assert_eq!(err, Errno(libc::EACCES));
    assert!(!pool.path(0, "private").exists());
}

// ---- action functions ----

#[test]
fn action_functions_act_on_every_branch_holding_the_path() {
    let pool = Pool::new(3);
    pool.file(0, "f", "0123456789")
        .file(2, "f", "0123456789")
        .file(1, "g", "");
    let u = pool.union("");
    u.chmod(p("/f"), 0o600).unwrap();
    assert_eq!(
        (mode(&pool.path(0, "f")), mode(&pool.path(2, "f"))),
        (0o600, 0o600)
    );
    u.truncate(p("/f"), 3).unwrap();
    assert_eq!(fs::read(pool.path(2, "f")).unwrap(), b"012");
    let t = [
        libc::timespec {
            tv_sec: 12345,
            tv_nsec: 0,
        },
        libc::timespec {
            tv_sec: 67890,
            tv_nsec: 0,
        },
    ];
    u.utimens(p("/f"), t).unwrap();
    assert_eq!(fs::metadata(pool.path(2, "f")).unwrap().mtime(), 67890);
    if is_root() {
        u.chown(p("/f"), Some(4321), None).unwrap();
        let meta = fs::metadata(pool.path(0, "f")).unwrap();
        assert_eq!(meta.uid(), 4321);
        assert_eq!(meta.gid(), 0);
    }
    assert_eq!(u.chmod(p("/none"), 0o600).unwrap_err(), Errno(libc::ENOENT));
    assert_eq!(u.truncate(p("/"), 0).unwrap_err(), Errno(libc::EISDIR));

    // RO branches are skipped by action policies.
    let u = pool.union_with(&[BranchMode::RO], "");
    u.chmod(p("/f"), 0o640).unwrap();
    assert_eq!(
        (mode(&pool.path(0, "f")), mode(&pool.path(2, "f"))),
        (0o600, 0o640)
    );
    u.unlink(p("/f")).unwrap();
    assert!(pool.path(0, "f").exists() && !pool.path(2, "f").exists());
    let u = pool.union_with(&[BranchMode::RO], "");
    assert_eq!(u.unlink(p("/f")).unwrap_err(), Errno(libc::EROFS));
}

#[test]
fn mixed_results_answer_what_getattr_shows() {
    // The attribute exists on branch 1 only, so removing it fails on branch 0.
    let pool = Pool::new(2);
    pool.file(0, "f", "").file(1, "f", "");
    xattr_set(&pool.path(1, "f"), "user.x", b"1");
    let u = pool.union("");
    let err = u.removexattr(p("/f"), OsStr::new("user.x")).unwrap_err();
    assert_eq!(
        err,
        Errno(libc::ENODATA),
        "getattr shows branch 0, which failed"
    );
    assert_eq!(
        xattr_get(&pool.path(1, "f"), "user.x"),
        None,
        "branch 1 still changed"
    );
    xattr_set(&pool.path(1, "f"), "user.x", b"1");
    // Equal free space: lfs picks the last branch, the one that succeeds.
    let u = pool.union("func.getattr=lfs");
    u.removexattr(p("/f"), OsStr::new("user.x")).unwrap();
}

#[test]
fn unlink_succeeds_if_any_branch_did_and_rmdir_prefers_enotempty() {
    let pool = Pool::new(2);
    pool.file(0, "f", "").file(1, "f", "");
    let u = pool.union("");
    u.unlink(p("/f")).unwrap();
    assert!(!pool.path(0, "f").exists() && !pool.path(1, "f").exists());
    assert_eq!(u.unlink(p("/f")).unwrap_err(), Errno(libc::ENOENT));

    pool.dir(0, "d").file(1, "d/keep", "");
    assert_eq!(u.rmdir(p("/d")).unwrap_err(), Errno(libc::ENOTEMPTY));
    assert!(!pool.path(0, "d").exists(), "the empty copy is gone");
    u.unlink(p("/d/keep")).unwrap();
    u.rmdir(p("/d")).unwrap();
    assert_eq!(u.rmdir(p("/d")).unwrap_err(), Errno(libc::ENOENT));
}

#[test]
fn a_removal_that_leaves_a_copy_of_another_kind_says_so() {
    let pool = Pool::new(2);
    // A file shown, a folder of the same name on the other branch: the file goes,
    // the name stays, and the answer says why, as mergerfs's does.
    pool.file(0, "n", "").dir(1, "n");
    let u = pool.union("");
    assert_eq!(u.unlink(p("/n")).unwrap_err(), Errno(libc::EISDIR));
    assert!(!pool.path(0, "n").exists() && pool.path(1, "n").is_dir());
    // And the other way round for rmdir.
    pool.dir(0, "m").file(1, "m", "");
    assert_eq!(u.rmdir(p("/m")).unwrap_err(), Errno(libc::ENOTDIR));
    assert!(!pool.path(0, "m").exists() && pool.path(1, "m").is_file());
}

// ---- extended attributes ----

fn xattr_set(path: &Path, name: &str, value: &[u8]) {
    let path = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    let name = std::ffi::CString::new(name).unwrap();
    // SAFETY: NUL-terminated strings and a value with its length.
    let rc = unsafe {
        libc::lsetxattr(
            path.as_ptr(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    assert_eq!(rc, 0, "{}", io::Error::last_os_error());
}

fn xattr_get(path: &Path, name: &str) -> Option<Vec<u8>> {
    let path = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    let name = std::ffi::CString::new(name).unwrap();
    let mut buf = [0u8; 256];
    // SAFETY: NUL-terminated strings and a buffer with its length.
    let n = unsafe {
        libc::lgetxattr(
            path.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    usize::try_from(n).ok().map(|n| buf[..n].to_vec())
}

#[test]
fn xattrs_round_trip_and_obey_the_xattr_option() {
    let pool = Pool::new(2);
    pool.file(0, "f", "").file(1, "f", "");
    let u = pool.union("");
    u.setxattr(p("/f"), OsStr::new("user.tag"), b"v1", 0)
        .unwrap();
    assert_eq!(
        xattr_get(&pool.path(1, "f"), "user.tag"),
        Some(b"v1".to_vec())
    );
    assert_eq!(u.getxattr(p("/f"), OsStr::new("user.tag")).unwrap(), b"v1");
    let list = u.listxattr(p("/f")).unwrap();
    assert!(list.split(|&b| b == 0).any(|n| n == b"user.tag"));
    let err = u
        .setxattr(p("/f"), OsStr::new("user.tag"), b"v2", libc::XATTR_CREATE)
        .unwrap_err();
    assert_eq!(err, Errno(libc::EEXIST));
    u.removexattr(p("/f"), OsStr::new("user.tag")).unwrap();
    let err = u.getxattr(p("/f"), OsStr::new("user.tag")).unwrap_err();
    assert_eq!(err, Errno(libc::ENODATA));

    let u = pool.union("xattr=noattr");
    // As if no file had an attribute: an empty list, and no value.
    assert_eq!(u.listxattr(p("/f")).unwrap(), Vec::<u8>::new());
    let err = u.getxattr(p("/f"), OsStr::new("user.a")).unwrap_err();
    assert_eq!(err, Errno(libc::ENODATA));
    let u = pool.union("xattr=nosys");
    let err = u
        .setxattr(p("/f"), OsStr::new("user.a"), b"", 0)
        .unwrap_err();
    assert_eq!(err, Errno(libc::ENOSYS));
    let u = pool.union("security_capability=false");
    let err = u
        .getxattr(p("/f"), OsStr::new("security.capability"))
        .unwrap_err();
    assert_eq!(err, Errno(libc::ENODATA));
}

// ---- rename and link ----

#[test]
fn path_preserving_rename_stays_on_its_branch_or_fails_with_exdev() {
    let pool = Pool::new(2);
    pool.file(1, "d1/f", "data").dir(0, "d2").dir(1, "d3");
    pool.file(0, "d3/g", "stale");
    let u = pool.union("category.create=epmfs");
    assert_eq!(
        u.rename(&ROOT, p("/d1/f"), p("/d2/f")).unwrap_err(),
        Errno(libc::EXDEV)
    );
    assert!(pool.path(1, "d1/f").exists() && !pool.path(1, "d2").exists());
    // Inside existing directories it works, and the stale target elsewhere goes.
    u.rename(&ROOT, p("/d1/f"), p("/d3/g")).unwrap();
    assert_eq!(fs::read(pool.path(1, "d3/g")).unwrap(), b"data");
    assert!(!pool.path(0, "d3/g").exists());
    assert_eq!(u.getattr(p("/d3/g")).unwrap().branch, 1);
}

#[test]
fn non_path_preserving_rename_clones_the_target_directory() {
    let pool = Pool::new(2);
    pool.file(1, "d1/f", "data").dir(0, "d2");
    fs::set_permissions(pool.path(0, "d2"), fs::Permissions::from_mode(0o750)).unwrap();
    let u = pool.union("category.create=mfs");
    u.rename(&ROOT, p("/d1/f"), p("/d2/f")).unwrap();
    assert_eq!(fs::read(pool.path(1, "d2/f")).unwrap(), b"data");
    assert_eq!(mode(&pool.path(1, "d2")), 0o750);
    assert!(
        !pool.path(0, "d2/f").exists(),
        "no data moved between branches"
    );
    // ignorepponrename turns a path-preserving policy into this algorithm.
    pool.file(1, "d1/g", "g");
    pool.dir(0, "d4");
    let u = pool.union("category.create=epmfs,ignorepponrename=true");
    u.rename(&ROOT, p("/d1/g"), p("/d4/g")).unwrap();
    assert!(pool.path(1, "d4/g").exists());
    // A target directory that exists nowhere: ENOENT.
    let err = u.rename(&ROOT, p("/d2/f"), p("/none/f")).unwrap_err();
    assert_eq!(err, Errno(libc::ENOENT));
}

#[test]
fn rename_exdev_moves_the_source_aside_and_leaves_a_symlink() {
    let pool = Pool::new(2);
    pool.file(1, "d1/f", "data").dir(0, "d2/deep");
    let u = pool.union("category.create=epmfs,rename-exdev=rel-symlink");
    u.rename(&ROOT, p("/d1/f"), p("/d2/deep/f")).unwrap();
    let stash = pool.path(1, ".mergerfs_rename_exdev/d1/f");
    assert_eq!(fs::read(&stash).unwrap(), b"data");
    assert_eq!(mode(&pool.path(1, ".mergerfs_rename_exdev")), 0o1777);
    assert_eq!(u.getattr(p("/d1/f")).unwrap_err(), Errno(libc::ENOENT));
    let link = u.readlink(p("/d2/deep/f")).unwrap();
    assert_eq!(link, b"../../.mergerfs_rename_exdev/d1/f");
    // Relative to the new entry the link leads to the stashed file in the pool.
    assert_eq!(
        u.getattr(p("/.mergerfs_rename_exdev/d1/f")).unwrap().branch,
        1
    );

    // abs-symlink needs the mountpoint; without it, and on any failure, EXDEV and
    // nothing moved.
    pool.file(1, "d1/g", "g");
    let u = pool.union("category.create=epmfs,rename-exdev=abs-symlink");
    assert_eq!(
        u.rename(&ROOT, p("/d1/g"), p("/d2/g")).unwrap_err(),
        Errno(libc::EXDEV)
    );
    assert!(pool.path(1, "d1/g").exists());
    let u = pool.union("category.create=epmfs,rename-exdev=abs-symlink,mountpoint=/pool");
    u.rename(&ROOT, p("/d1/g"), p("/d2/g")).unwrap();
    assert_eq!(
        u.readlink(p("/d2/g")).unwrap(),
        b"/pool/.mergerfs_rename_exdev/d1/g"
    );
    pool.file(1, "d1/h", "h").file(0, "d2/h", "taken");
    let u = pool.union("category.create=epmfs,rename-exdev=rel-symlink");
    assert_eq!(
        u.rename(&ROOT, p("/d1/h"), p("/d2/h")).unwrap_err(),
        Errno(libc::EXDEV)
    );
    assert_eq!(fs::read(pool.path(1, "d1/h")).unwrap(), b"h", "moved back");
}

#[test]
fn rename_of_a_directory_moves_every_copy() {
    let pool = Pool::new(2);
    pool.file(0, "d/a", "").file(1, "d/b", "");
    let u = pool.union("");
    u.rename(&ROOT, p("/d"), p("/e")).unwrap();
    assert_eq!(names(&u.readdir(p("/e")).unwrap()), ["a", "b"]);
    assert_eq!(u.getattr(p("/d")).unwrap_err(), Errno(libc::ENOENT));
}

#[test]
fn link_follows_the_same_two_algorithms() {
    let pool = Pool::new(2);
    pool.file(1, "d1/f", "data").dir(0, "d2").dir(1, "d3");
    let u = pool.union("category.create=epmfs");
    assert_eq!(
        u.link(&ROOT, p("/d1/f"), p("/d2/f")).unwrap_err(),
        Errno(libc::EXDEV)
    );
    let linked = u.link(&ROOT, p("/d1/f"), p("/d3/f")).unwrap();
    assert!(!linked.symlinked);
    let f = u.getattr(p("/d1/f")).unwrap();
    assert_eq!(
        linked.attr.stat.st_ino, f.stat.st_ino,
        "hybrid-hash: one inode"
    );
    assert_eq!(linked.attr.stat.st_nlink, 2);

    let u = pool.union("category.create=mfs");
    u.link(&ROOT, p("/d1/f"), p("/d2/f")).unwrap();
    assert!(pool.path(1, "d2/f").exists());

    let u = pool.union("category.create=epmfs,link-exdev=rel-symlink");
    pool.dir(0, "d5/deep");
    let linked = u.link(&ROOT, p("/d1/f"), p("/d5/deep/f")).unwrap();
    assert!(linked.symlinked);
    assert_eq!(linked.attr.stat.st_ino, f.stat.st_ino);
    assert_eq!(u.readlink(p("/d5/deep/f")).unwrap(), b"../../d1/f");
    let u = pool.union("category.create=epmfs,link-exdev=abs-base-symlink");
    pool.dir(0, "d6");
    let linked = u.link(&ROOT, p("/d1/f"), p("/d6/g")).unwrap();
    assert!(linked.symlinked);
    let target = pool.path(1, "d1/f");
    assert_eq!(
        u.readlink(p("/d6/g")).unwrap(),
        target.as_os_str().as_bytes()
    );
}

// ---- statfs ----

#[test]
fn statfs_counts_each_filesystem_once_and_honours_ignore() {
    let pool = Pool::new(3);
    let one = pool.union_with(&[], "").statfs(p("/")).unwrap();
    let mut v = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    let c = std::ffi::CString::new(pool.branches[0].as_os_str().as_bytes()).unwrap();
    // SAFETY: a NUL-terminated path and room for a statvfs.
    assert_eq!(unsafe { libc::statvfs(c.as_ptr(), v.as_mut_ptr()) }, 0);
    // SAFETY: statvfs filled it.
    let v = unsafe { v.assume_init() };
    // All three branches share one filesystem: counted once.
    assert_eq!(one.blocks, v.f_blocks * v.f_frsize / one.frsize);
    assert_eq!(one.files, v.f_files);

    let modes = [BranchMode::NC];
    let ignored = pool
        .union_with(&modes, "statfs-ignore=nc")
        .statfs(p("/"))
        .unwrap();
    assert_eq!((ignored.bavail, ignored.favail), (0, 0));
    assert_eq!(ignored.blocks, one.blocks);
    let kept = pool
        .union_with(&modes, "statfs-ignore=none")
        .statfs(p("/"))
        .unwrap();
    assert!(kept.bavail > 0 || one.bavail == 0);

    pool.dir(2, "only-here");
    let full = pool.union("statfs=full").statfs(p("/only-here")).unwrap();
    assert_eq!(full.blocks, one.blocks);
    assert_eq!(
        pool.union("statfs=full").statfs(p("/none")).unwrap_err(),
        Errno(libc::ENOENT)
    );
}

// ---- containment ----

/// Branch 0 holds symlinks leading out: absolute, relative through `..`, and to a
/// file; branch 1 holds a real directory `d` that branch 0 has as a symlink.
fn escaping_pool() -> Pool {
    let pool = Pool::new(2);
    symlink(&pool.outside, pool.path(0, "abs")).unwrap();
    symlink("../outside", pool.path(0, "rel")).unwrap();
    pool.dir(0, "sub");
    symlink("../../outside", pool.path(0, "sub/up")).unwrap();
    symlink(pool.outside.join("secret"), pool.path(0, "file")).unwrap();
    symlink(&pool.outside, pool.path(0, "d")).unwrap();
    pool.dir(1, "d");
    pool
}

#[test]
fn symlinks_are_listed_and_read_as_symlinks() {
    let pool = escaping_pool();
    let u = pool.union("");
    let attr = u.getattr(p("/abs")).unwrap();
    assert_eq!(attr.stat.st_mode & libc::S_IFMT, libc::S_IFLNK);
    assert_eq!(
        u.readlink(p("/abs")).unwrap(),
        pool.outside.as_os_str().as_bytes()
    );
    assert_eq!(u.readlink(p("/sub/up")).unwrap(), b"../../outside");
    let listed = u.readdir(p("/")).unwrap();
    let rel = listed.iter().find(|e| e.name == "rel").unwrap();
    assert_eq!(rel.kind, libc::S_IFLNK);
    assert_eq!(
        u.getattr(p("/d")).unwrap().stat.st_mode & libc::S_IFMT,
        libc::S_IFLNK
    );
}

#[test]
fn nothing_is_revealed_through_symlinked_components() {
    let pool = escaping_pool();
    let u = pool.union("");
    for path in ["/abs/secret", "/rel/secret", "/sub/up/secret"] {
        assert!(u.getattr(p(path)).is_err(), "{path}");
        assert!(u.readdir(parent(p(path))).is_err(), "{path}");
        assert!(
            u.getxattr(p(path), OsStr::new("user.tag")).is_err(),
            "{path}"
        );
        assert!(u.open(p(path), libc::O_RDONLY).is_err(), "{path}");
    }
    // The final name is not followed either.
    assert_eq!(
        u.open(p("/file"), libc::O_RDONLY).unwrap_err(),
        Errno(libc::ELOOP)
    );
    // `/d` is a symlink on branch 0 but a directory on branch 1: only branch 1 counts.
    pool.file(1, "d/mine", "");
    assert_eq!(names(&u.readdir(p("/d")).unwrap()), ["mine"]);
    assert_eq!(u.getattr(p("/d/secret")).unwrap_err(), Errno(libc::ENOENT));
    let s = u.statfs(p("/abs/secret"));
    assert!(s.is_ok(), "statfs=base does not look at the path");
    assert_eq!(
        pool.union("statfs=full")
            .statfs(p("/abs/secret"))
            .unwrap_err(),
        Errno(libc::ENOENT)
    );
}

#[test]
fn pool_paths_become_paths_below_a_branch_root() {
    let rel = |s: &str| relative(p(s)).map(|r| String::from_utf8_lossy(&r).into_owned());
    assert_eq!(rel("/"), Ok(".".into()));
    assert_eq!(rel("/a"), Ok("a".into()));
    assert_eq!(rel("/a b/c.d/..e"), Ok("a b/c.d/..e".into()));
    // The form the node table builds is used as it is, without a copy.
    assert!(matches!(relative(p("/a/b")), Ok(Cow::Borrowed(b"a/b"))));
    // Other spellings are normalized; climbing out is refused.
    assert_eq!(rel("/a//b/./c/"), Ok("a/b/c".into()));
    assert_eq!(rel("//"), Ok(".".into()));
    assert_eq!(rel("/a/../b"), Err(Errno(libc::EINVAL)));
    assert_eq!(rel("/.."), Err(Errno(libc::EINVAL)));
}

#[test]
fn the_walk_without_openat2_is_contained_as_openat2() {
    let pool = escaping_pool();
    pool.file(1, "d/mine", "x");
    let root = |b: usize| {
        let dir = fs::File::open(&pool.branches[b]).unwrap();
        OwnedFd::from(dir)
    };
    let flags = libc::O_PATH | libc::O_NOFOLLOW;
    for rel in [
        &b"abs/secret"[..],
        b"rel/secret",
        b"sub/up/secret",
        b"d/secret",
    ] {
        let walk = sys::open_walk(&root(0), rel, flags).map(drop);
        let beneath = sys::open_beneath(&root(0), rel, flags).map(drop);
        assert!(walk.is_err() && beneath.is_err(), "{rel:?}");
    }
    // Climbing out or odd names are refused, as openat2 refuses `..`.
    for rel in [
        &b"../outside/secret"[..],
        b"sub/../../outside",
        b"sub//x",
        b"./sub",
    ] {
        assert!(sys::open_walk(&root(0), rel, flags).is_err(), "{rel:?}");
    }
    assert_eq!(
        sys::open_walk(&root(0), b"../outside", flags).map(drop),
        Err(Errno(libc::EXDEV))
    );
    assert_eq!(
        sys::open_beneath(&root(0), b"../outside", flags).map(drop),
        Err(Errno(libc::EXDEV))
    );
    for rel in [&b"."[..], b"d", b"d/mine"] {
        let walk = sys::fstat(&sys::open_walk(&root(1), rel, flags).unwrap()).unwrap();
        let beneath = sys::fstat(&sys::open_beneath(&root(1), rel, flags).unwrap()).unwrap();
        assert_eq!((walk.st_dev, walk.st_ino), (beneath.st_dev, beneath.st_ino));
    }
    let mine = fs::metadata(pool.path(1, "d/mine")).unwrap();
    let walked = sys::fstat(&sys::open_walk(&root(1), b"d/mine", flags).unwrap()).unwrap();
    assert_eq!(walked.st_ino, mine.ino());
}

#[test]
fn nothing_outside_changes_through_the_pool() {
    let pool = escaping_pool();
    let before = pool.outside_state();
    for options in [
        "category.create=ff",
        "category.create=mfs",
        "category.create=epall",
    ] {
        let u = pool.union(options);
        for dir in ["/abs", "/rel", "/sub/up"] {
            let new = format!("{dir}/new");
            let secret = format!("{dir}/secret");
            assert!(u
                .create(&ROOT, p(&new), libc::O_WRONLY, Mode::new(0o644, 0))
                .is_err());
            assert!(u.mkdir(&ROOT, p(&new), Mode::new(0o755, 0)).is_err());
            assert!(u
                .mknod(&ROOT, p(&new), Mode::new(libc::S_IFIFO | 0o644, 0), 0)
                .is_err());
            assert!(u.symlink(&ROOT, OsStr::new("x"), p(&new)).is_err());
            assert!(u.unlink(p(&secret)).is_err());
            assert!(u.chmod(p(&secret), 0o777).is_err());
            assert!(u.chown(p(&secret), Some(1), Some(1)).is_err());
            assert!(u.truncate(p(&secret), 0).is_err());
            assert!(u
                .utimens(
                    p(&secret),
                    [libc::timespec {
                        tv_sec: 1,
                        tv_nsec: 0
                    }; 2]
                )
                .is_err());
            assert!(u
                .setxattr(p(&secret), OsStr::new("user.x"), b"1", 0)
                .is_err());
            assert!(u.rename(&ROOT, p(&secret), p("/stolen")).is_err());
            assert!(u.link(&ROOT, p(&secret), p("/stolen")).is_err());
            assert!(u.rmdir(p(&new)).is_err());
        }
        // Into the outside through a symlinked target directory.
        pool.file(1, "mine", "mine");
        assert!(u.rename(&ROOT, p("/mine"), p("/abs/mine")).is_err());
        assert!(u.link(&ROOT, p("/mine"), p("/rel/mine")).is_err());
        // The symlink to a file: acted on as the link or refused, never the target.
        assert!(u.truncate(p("/file"), 0).is_err());
        // Where the policy picks branch 0, which holds the link, creation is refused.
        let created = u.create(
            &ROOT,
            p("/file"),
            libc::O_WRONLY | libc::O_TRUNC,
            Mode::new(0o644, 0),
        );
        if options == "category.create=ff" {
            assert_eq!(created.unwrap_err(), Errno(libc::ELOOP));
        }
        assert_eq!(
            u.chmod(p("/file"), 0o777).unwrap_err(),
            Errno(libc::EOPNOTSUPP)
        );
        assert!(u.chmod(p("/abs"), 0o777).is_err());
        // `/d` is a symlink on branch 0: cloning the parent there must not go through it.
        let _ = u.create(&ROOT, p("/d/new"), libc::O_WRONLY, Mode::new(0o644, 0));
        let _ = u.mkdir(&ROOT, p("/d/newdir"), Mode::new(0o755, 0));
        assert_eq!(pool.outside_state(), before, "{options}");
    }
    // Symlinks themselves can be renamed, timestamped and removed inside the pool.
    let u = pool.union("");
    u.utimens(
        p("/abs"),
        [libc::timespec {
            tv_sec: 5,
            tv_nsec: 0,
        }; 2],
    )
    .unwrap();
    u.rename(&ROOT, p("/abs"), p("/abs2")).unwrap();
    assert!(fs::symlink_metadata(pool.path(0, "abs2"))
        .unwrap()
        .file_type()
        .is_symlink());
    u.unlink(p("/abs2")).unwrap();
    u.unlink(p("/file")).unwrap();
    assert_eq!(pool.outside_state(), before);
    assert!(pool.outside.join("secret").exists());
}

#[test]
fn renames_and_links_of_symlinks_stay_inside() {
    let pool = escaping_pool();
    let before = pool.outside_state();
    let u = pool.union("");
    // A hard link of a symlink links the symlink itself.
    u.link(&ROOT, p("/file"), p("/file2")).unwrap();
    let meta = fs::symlink_metadata(pool.path(0, "file2")).unwrap();
    assert!(meta.file_type().is_symlink());
    assert_eq!(
        fs::symlink_metadata(pool.outside.join("secret"))
            .unwrap()
            .nlink(),
        1
    );
    // Renaming over a symlink replaces the link, not its target.
    pool.file(0, "real", "real");
    u.rename(&ROOT, p("/real"), p("/file2")).unwrap();
    assert_eq!(fs::read(pool.path(0, "file2")).unwrap(), b"real");
    assert_eq!(pool.outside_state(), before);
}

#[test]
fn a_branch_folder_replaced_behind_the_pool_is_noticed() {
    let pool = Pool::new(2);
    let u = pool.union("");
    assert!(u.moved_roots().is_empty());
    // The folder moved away and another made in its place (as a mount over it does).
    let away = pool.branches[1].with_extension("old");
    fs::rename(&pool.branches[1], &away).unwrap();
    assert!(
        u.moved_roots().is_empty(),
        "a folder that is not there counts as unchanged"
    );
    fs::create_dir(&pool.branches[1]).unwrap();
    let moved: Vec<&Path> = u.moved_roots().iter().map(|b| b.path.as_path()).collect();
    assert_eq!(moved, [pool.branches[1].as_path()]);
    // Opened again, the pool holds the new folder.
    let branches: Vec<Branch> = u.branches().cloned().collect();
    let again = u.with_branches(&branches);
    assert!(again.moved_roots().is_empty());
}

/// Gives the folder `dir` a default ACL (user::, group:: and other:: with `perms`),
/// in the kernel's xattr form: the version, then (tag, permissions, id) per entry.
/// False (and says so) where the file system takes no ACLs.
fn set_default_acl(dir: &Path, perms: [u16; 3]) -> bool {
    let mut acl = 2u32.to_le_bytes().to_vec();
    for (tag, perm) in [0x01u16, 0x04, 0x20].into_iter().zip(perms) {
        acl.extend_from_slice(&tag.to_le_bytes());
        acl.extend_from_slice(&perm.to_le_bytes());
        acl.extend_from_slice(&u32::MAX.to_le_bytes());
    }
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).unwrap();
    // SAFETY: NUL-terminated strings and a value with its length.
    let rc = unsafe {
        libc::setxattr(
            path.as_ptr(),
            c"system.posix_acl_default".as_ptr(),
            acl.as_ptr().cast(),
            acl.len(),
            0,
        )
    };
    if rc != 0 {
        let e = io::Error::last_os_error();
        eprintln!("no default ACL on {}: {e}; left untested", dir.display());
    }
    rc == 0
}

#[test]
fn the_umask_applies_unless_the_folder_has_a_default_acl() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = OwnedFd::from(fs::File::open(tmp.path()).unwrap());
    let mode = Mode::new(0o666, 0o022);
    assert_eq!(mode.in_folder(&dir), 0o644);
    assert_eq!(Mode::new(0o777, 0).in_folder(&dir), 0o777);
    if !set_default_acl(tmp.path(), [7, 5, 5]) {
        return;
    }
    // The folder's default ACL sets the permissions: the mode goes as asked.
    assert_eq!(mode.in_folder(&dir), 0o666);
}

#[test]
fn a_cloned_folder_keeps_no_acl_its_original_lacks() {
    let pool = Pool::new(2);
    pool.dir(1, "a");
    // The branch the folder is cloned onto has a default ACL at its root (given
    // after `a` was made on the other branch): a folder made there inherits it.
    if !set_default_acl(&pool.branches[0], [7, 7, 7]) {
        return;
    }
    let u = pool.union("category.create=ff");
    u.create(&ROOT, p("/a/x"), libc::O_WRONLY, Mode::new(0o600, 0o077))
        .unwrap();
    for name in ["system.posix_acl_default", "system.posix_acl_access"] {
        assert_eq!(xattr_get(&pool.path(0, "a"), name), None, "{name}");
    }
    // So the umask applied to the file made in it, as in the original folder.
    assert_eq!(mode(&pool.path(0, "a/x")) & 0o777, 0o600);
}

#[test]
fn work_done_at_once_acts_as_the_caller() {
    if !is_root() {
        eprintln!("not root: the ids of helper threads are left untested");
        return;
    }
    let user = Caller {
        uid: 12345,
        gid: 12346,
        groups: vec![12347],
    };
    // Each piece waits for the others, so every thread takes one.
    let all = std::sync::Barrier::new(3);
    let ids = user
        .run(|| -> Result<_, std::io::Error> {
            Ok(at_once(3, 3, |_| {
                all.wait();
                // SAFETY: -1 is no id: the calls change nothing and return the
                // thread's file system ids.
                let ids = unsafe { (libc::setfsuid(u32::MAX), libc::setfsgid(u32::MAX)) };
                // SAFETY: a buffer of 8 groups with its length.
                let mut groups = [0 as libc::gid_t; 8];
                let n = unsafe { libc::getgroups(8, groups.as_mut_ptr()) };
                (ids, groups[..usize::try_from(n).unwrap()].to_vec())
            }))
        })
        .unwrap();
    assert_eq!(ids, vec![((12345, 12346), vec![12347]); 3]);
    // In order, whatever the order they were done in.
    assert_eq!(at_once(5, 2, |i| i * 10), [0, 10, 20, 30, 40]);
    assert_eq!(at_once(3, 1, |i| i), [0, 1, 2]);
}
