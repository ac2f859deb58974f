//! The runtime control interface of a mounted pool: the `/.mergerfs` file and its
//! `user.mergerfs.*` xattrs (read with getfattr and libc, set with setfattr), branch
//! edits while files are being created, and the per-file `basepath`, `relpath`,
//! `fullpath` and `allpaths` attributes.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::fuse::{cpath, getx, setx, Pool};

/// listxattr(2) as names.
fn listx(path: &Path) -> Vec<String> {
    let p = cpath(path);
    let mut buf = vec![0u8; 64 * 1024];
    let len = unsafe { libc::listxattr(p.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    assert!(len >= 0, "listxattr {}", path.display());
    buf[..len as usize]
        .split(|&b| b == 0)
        .filter(|n| !n.is_empty())
        .map(|n| String::from_utf8_lossy(n).into_owned())
        .collect()
}

/// Runs getfattr or setfattr from the attr package.
fn attr_tool(tool: &str, args: &[&str], path: &Path) -> Output {
    Command::new(tool)
        .args(args)
        .arg(path)
        .output()
        .unwrap_or_else(|e| panic!("running {tool} (Debian package attr): {e}"))
}

fn getfattr(path: &Path, key: &str) -> String {
    let out = attr_tool(
        "getfattr",
        &["--only-values", "-n", &format!("user.mergerfs.{key}")],
        path,
    );
    assert!(out.status.success(), "getfattr {key}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn real(path: &Path) -> PathBuf {
    path.canonicalize().unwrap()
}

#[test]
fn fuse_control_options_read_set_and_refuse() {
    let test = "fuse_control_options_read_set_and_refuse";
    let (a, b, mnt) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let list = format!("{}:{}", a.path().display(), b.path().display());
    let Some(pool) = Pool::mount(test, &list, mnt.path(), "category.create=epmfs") else {
        return;
    };
    let control = pool.path(".mergerfs");

    // A regular file by name, absent from the listing.
    let meta = fs::metadata(&control).unwrap();
    assert!(meta.is_file() && meta.len() == 0, "{meta:?}");
    let names: Vec<_> = fs::read_dir(&pool.mnt)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(!names.iter().any(|n| n == ".mergerfs"), "{names:?}");

    let keys = listx(&control);
    for key in [
        "branches",
        "category.create",
        "minfreespace",
        "version",
        "pid",
        "func.getattr",
    ] {
        assert!(
            keys.contains(&format!("user.mergerfs.{key}")),
            "{key} not listed"
        );
    }
    assert!(!keys.iter().any(|k| k.ends_with("basepath")));

    assert_eq!(getfattr(&control, "category.create"), "epmfs");
    assert_eq!(
        getfattr(&control, "branches"),
        format!(
            "{}=RW:{}=RW",
            real(a.path()).display(),
            real(b.path()).display()
        )
    );
    assert_eq!(getfattr(&control, "version"), env!("CARGO_PKG_VERSION"));

    // setfattr then getfattr, in both key spellings.
    for (key, value) in [
        ("category.create", "mfs"),
        ("minfreespace", "1048576"),
        ("cache.negative_entry", "2"),
    ] {
        let out = attr_tool(
            "setfattr",
            &["-n", &format!("user.mergerfs.{key}"), "-v", value],
            &control,
        );
        assert!(out.status.success(), "setfattr {key}: {out:?}");
        assert_eq!(getfattr(&control, key), value);
    }
    assert_eq!(getfattr(&control, "cache.negative-entry"), "2");

    // mergerfs's errors: unknown key, fixed at mount time, bad value.
    let out = attr_tool(
        "setfattr",
        &["-n", "user.mergerfs.nonsense", "-v", "1"],
        &control,
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("No such attribute"),
        "{out:?}"
    );
    assert_eq!(
        setx(&control, "user.mergerfs.nonsense", "1"),
        Err(libc::ENODATA)
    );
    assert_eq!(getx(&control, "user.mergerfs.nonsense"), Err(libc::ENODATA));
    assert_eq!(
        setx(&control, "user.mergerfs.version", "9"),
        Err(libc::EROFS)
    );
    assert_eq!(setx(&control, "user.mergerfs.pid", "9"), Err(libc::EROFS));
    assert_eq!(
        setx(&control, "user.mergerfs.fsname", "x"),
        Err(libc::EROFS)
    );
    assert_eq!(
        setx(&control, "user.mergerfs.minfreespace", "lots"),
        Err(libc::EINVAL)
    );
    // An option lhfs accepts without acting on it keeps its default.
    assert_eq!(
        setx(&control, "user.mergerfs.follow-symlinks", "directory"),
        Err(libc::ENOTSUP)
    );
    assert_eq!(getfattr(&control, "follow-symlinks"), "never");
    assert_eq!(
        setx(&control, "user.mergerfs.follow-symlinks", "never"),
        Ok(())
    );
    // It has no bytes to open: ENOENT, as in mergerfs (not a stale name).
    for write in [false, true] {
        let opened = fs::OpenOptions::new()
            .read(!write)
            .write(write)
            .open(&control);
        assert_eq!(common::fuse::errno(opened), libc::ENOENT, "write {write}");
    }
    // Every key exists: creating one is EEXIST, as in mergerfs.
    let (c, n) = (
        cpath(&control),
        std::ffi::CString::new("user.mergerfs.category.create").unwrap(),
    );
    // SAFETY: setxattr with NUL-terminated strings and a valid value buffer.
    let rc = unsafe {
        libc::setxattr(
            c.as_ptr(),
            n.as_ptr(),
            b"mfs".as_ptr().cast(),
            3,
            libc::XATTR_CREATE,
        )
    };
    assert_eq!(
        (rc, std::io::Error::last_os_error().raw_os_error()),
        (-1, Some(libc::EEXIST))
    );
    assert_eq!(
        setx(&control, "user.mergerfs.category.create", "nope"),
        Err(libc::EINVAL)
    );
    assert_eq!(
        setx(&control, "user.mergerfs.branches", "->x"),
        Err(libc::EINVAL)
    );
    let inside = pool.path("inside");
    assert_eq!(
        setx(
            &control,
            "user.mergerfs.branches",
            &format!("+{}", inside.display())
        ),
        Err(libc::EINVAL),
        "a branch inside the pool"
    );
    let holder = mnt.path().parent().unwrap().canonicalize().unwrap();
    assert_eq!(
        setx(
            &control,
            "user.mergerfs.branches",
            &format!("+>{}", holder.display())
        ),
        Err(libc::EINVAL),
        "a branch that holds the pool"
    );
    for no_branch in [
        "",
        "=",
        &format!("-{}/*", real(a.path()).parent().unwrap().display()),
    ] {
        assert_eq!(
            setx(&control, "user.mergerfs.branches", no_branch),
            Err(libc::EINVAL),
            "{no_branch:?} leaves no branch"
        );
    }
    // A new branch must be a folder, as at mount time.
    let file = a.path().join("a-file");
    fs::write(&file, b"x").unwrap();
    for (path, errno) in [
        (file.clone(), libc::ENOTDIR),
        (a.path().join("missing"), libc::ENOENT),
    ] {
        assert_eq!(
            setx(
                &control,
                "user.mergerfs.branches",
                &format!("+{}", path.display())
            ),
            Err(errno),
            "{}",
            path.display()
        );
    }
    // Refusals change nothing.
    assert_eq!(getfattr(&control, "minfreespace"), "1048576");
    assert_eq!(getfattr(&control, "category.create"), "mfs");
    let pid = getfattr(&control, "pid");
    assert!(pid.parse::<u32>().is_ok(), "{pid}");
}

/// One branch-list change: the list before, the list after, and the window in
/// which the swap happened.
struct Change {
    started: Instant,
    done: Instant,
    after: Vec<PathBuf>,
}

#[test]
fn fuse_control_branch_edits_while_files_are_created() {
    let test = "fuse_control_branch_edits_while_files_are_created";
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let [a, b, c]: [PathBuf; 3] = std::array::from_fn(|i| real(dirs[i].path()));
    let mnt = tempfile::tempdir().unwrap();
    // rand spreads new files over every branch in the list.
    let Some(pool) = Pool::mount(
        test,
        &a.display().to_string(),
        mnt.path(),
        "category.create=rand",
    ) else {
        return;
    };
    let control = pool.path(".mergerfs");

    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, mnt) = (Arc::clone(&stop), pool.mnt.clone());
        std::thread::spawn(move || {
            let mut made = Vec::new();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let name = format!("f{i:05}");
                let started = Instant::now();
                // A file whose branch is removed right after its creation is
                // gone from the pool before the write finishes: ENOENT, checked below.
                let vanished = match fs::write(mnt.join(&name), b"x") {
                    Ok(()) => false,
                    Err(e) if e.raw_os_error() == Some(libc::ENOENT) => true,
                    Err(e) => panic!("create {name}: {e}"),
                };
                made.push((name, started, Instant::now(), vanished));
                i += 1;
            }
            made
        })
    };

    let edits = [
        format!("+>{}", b.display()),
        format!("+>{}", c.display()),
        format!("-{}", a.display()),
        format!("+<{}", a.display()),
        "->".to_owned(),
        "-<".to_owned(),
        format!("={}:{}", a.display(), c.display()),
        format!("+{}", b.display()),
    ];
    let mut changes = vec![Change {
        started: Instant::now() - Duration::from_secs(3600),
        done: Instant::now() - Duration::from_secs(3600),
        after: vec![a.clone()],
    }];
    for edit in &edits {
        std::thread::sleep(Duration::from_millis(60));
        let started = Instant::now();
        setx(&control, "user.mergerfs.branches", edit)
            .unwrap_or_else(|e| panic!("{edit}: errno {e}"));
        let done = Instant::now();
        let listed = String::from_utf8(getx(&control, "user.mergerfs.branches").unwrap()).unwrap();
        let after: Vec<PathBuf> = listed
            .split(':')
            .map(|e| PathBuf::from(e.trim_end_matches("=RW")))
            .collect();
        changes.push(Change {
            started,
            done,
            after,
        });
    }
    std::thread::sleep(Duration::from_millis(60));
    stop.store(true, Ordering::Relaxed);
    let made = writer.join().unwrap();
    assert!(made.len() > edits.len(), "only {} files made", made.len());

    let expected: Vec<Vec<&PathBuf>> = vec![
        vec![&a],
        vec![&a, &b],
        vec![&a, &b, &c],
        vec![&b, &c],
        vec![&a, &b, &c],
        vec![&a, &b],
        vec![&b],
        vec![&a, &c],
        vec![&a, &c, &b],
    ];
    for (change, want) in changes.iter().zip(&expected) {
        assert_eq!(change.after.iter().collect::<Vec<_>>(), *want);
    }

    let mut used = std::collections::HashSet::new();
    for (name, started, done, vanished) in &made {
        let holders: Vec<&PathBuf> = [&a, &b, &c]
            .into_iter()
            .filter(|d| d.join(name).exists())
            .collect();
        assert_eq!(holders.len(), 1, "{name} is on {holders:?}");
        // The lists in force at some moment between the create's start and end: list
        // k holds from the start of its change until the end of the next one.
        let allowed: Vec<&Vec<PathBuf>> = changes
            .iter()
            .enumerate()
            .filter(|(k, change)| {
                let until = changes.get(k + 1).map(|next| next.done);
                change.started <= *done && until.is_none_or(|u| *started <= u)
            })
            .map(|(_, change)| &change.after)
            .collect();
        assert!(
            allowed.iter().any(|list| list.contains(holders[0])),
            "{name} landed on {} outside the lists {allowed:?}",
            holders[0].display()
        );
        if *vanished {
            assert!(
                allowed.iter().any(|list| !list.contains(holders[0])),
                "{name} vanished although its branch {} stayed in the pool",
                holders[0].display()
            );
        }
        used.insert(holders[0].clone());
    }
    assert_eq!(used.len(), 3, "every branch took some files: {used:?}");
}

#[test]
fn fuse_control_per_file_attributes() {
    let test = "fuse_control_per_file_attributes";
    let (a, b, mnt) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let (ra, rb) = (real(a.path()), real(b.path()));
    fs::create_dir(a.path().join("dir")).unwrap();
    fs::create_dir(b.path().join("dir")).unwrap();
    fs::write(b.path().join("dir/both"), b"b").unwrap();
    fs::write(a.path().join("dir/both"), b"a").unwrap();
    fs::write(b.path().join("dir/only-b"), b"b").unwrap();
    let list = format!("{}:{}", ra.display(), rb.display());
    let Some(pool) = Pool::mount(test, &list, mnt.path(), "") else {
        return;
    };
    let text = |path: &Path, key: &str| {
        String::from_utf8(getx(path, &format!("user.mergerfs.{key}")).unwrap()).unwrap()
    };
    let both = pool.path("dir/both");
    assert_eq!(text(&both, "relpath"), "/dir/both");
    assert_eq!(text(&both, "basepath"), ra.display().to_string());
    assert_eq!(
        text(&both, "fullpath"),
        ra.join("dir/both").display().to_string()
    );
    assert_eq!(
        text(&both, "allpaths"),
        format!("{}/dir/both\0{}/dir/both", ra.display(), rb.display())
    );
    let only = pool.path("dir/only-b");
    assert_eq!(text(&only, "basepath"), rb.display().to_string());
    assert_eq!(
        text(&only, "allpaths"),
        rb.join("dir/only-b").display().to_string()
    );
    assert_eq!(
        getfattr(&only, "fullpath"),
        rb.join("dir/only-b").display().to_string()
    );
    assert_eq!(text(&pool.path("dir"), "relpath"), "/dir");

    for path in [&both, &only, &pool.path("dir")] {
        let names = listx(path);
        assert!(
            !names.iter().any(|n| n.starts_with("user.mergerfs.")),
            "{names:?}"
        );
    }
    assert_eq!(
        setx(&both, "user.mergerfs.basepath", "/elsewhere"),
        Err(libc::ENOTSUP)
    );
    assert_eq!(text(&both, "basepath"), ra.display().to_string());
}
