//! Who may do what through the pool, and that nothing outside the branches can be
//! reached through it.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::fuse::{errno, Pool, Tmpfs};

/// Runs a shell script as uid/gid 12345 in `root` and returns its output, with each
/// error message cut down to the reason.
fn as_user(root: &Path, script: &str) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "umask 022; cd '{}' || exit 9; {script}",
            root.display()
        ))
        .uid(12345)
        .gid(12345)
        .output()
        .expect("run sh as 12345");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    text.lines()
        .map(|l| l.rsplit(": ").next().unwrap_or(l).to_owned())
        .collect::<Vec<_>>()
        .join("\n")
}

fn setup(root: &Path) {
    fs::set_permissions(root, fs::Permissions::from_mode(0o755)).unwrap();
    fs::create_dir(root.join("shared")).unwrap();
    fs::set_permissions(root.join("shared"), fs::Permissions::from_mode(0o777)).unwrap();
    fs::write(root.join("rootfile"), b"root's").unwrap();
    fs::create_dir(root.join("private")).unwrap();
    fs::set_permissions(root.join("private"), fs::Permissions::from_mode(0o700)).unwrap();
    fs::write(root.join("private/secret"), b"s").unwrap();
    // Set-user-ID and set-group-ID files anyone may write: a write by another user
    // clears the bits.
    for (name, mode) in [
        ("suid", 0o4777),
        ("sgid", 0o2777),
        ("sgid-noexec", 0o2766),
        ("trunc-suid", 0o4777),
        ("trunc-sgid", 0o2777),
        ("resize-suid", 0o4777),
        ("chown-suid", 0o4777),
    ] {
        fs::write(root.join("shared").join(name), b"s").unwrap();
        fs::set_permissions(
            root.join("shared").join(name),
            fs::Permissions::from_mode(mode),
        )
        .unwrap();
    }
}

const SCRIPT: &str = "\
touch shared/mine && stat -c '%u:%g %a' shared/mine
mkdir shared/d && stat -c '%u:%g %a' shared/d
echo x > rootfile
cat private/secret
ls private
chmod 777 rootfile
chown 12345 rootfile
rm rootfile
echo mine > shared/mine && cat shared/mine
chmod 600 shared/mine && stat -c '%a' shared/mine
mv shared/mine shared/moved && cat shared/moved
echo x >> shared/suid; echo x >> shared/sgid; echo x >> shared/sgid-noexec
stat -c '%a' shared/suid shared/sgid shared/sgid-noexec
: > shared/trunc-suid; : > shared/trunc-sgid
stat -c '%a %s' shared/trunc-suid shared/trunc-sgid
truncate -s 1 shared/resize-suid && stat -c '%a %s' shared/resize-suid
chown_none() { python3 -c 'import os, sys
try: os.chown(sys.argv[1], -1, -1)
except OSError as e: print(e.strerror)' \"$1\"; }
touch shared/own && chmod 6755 shared/own && chown_none shared/own && stat -c '%a' shared/own
chown_none shared/chown-suid; stat -c '%a' shared/chown-suid";

#[test]
fn fuse_security_non_root_caller() {
    non_root_caller("fuse_security_non_root_caller", "minfreespace=0", None);
}

/// The same through the page cache: the kernel then clears the set-ID bits of a file
/// written by someone other than its owner with a mode change of its own (which
/// leaves set-group-ID without group-execute alone), and lhfs on the file written.
#[test]
fn fuse_security_non_root_caller_through_the_page_cache() {
    non_root_caller(
        "fuse_security_non_root_caller_through_the_page_cache",
        "minfreespace=0,cache.files=partial",
        None,
    );
}

/// The same with FUSE passthrough: the kernel writes the branch file itself and
/// asks lhfs to clear the set-ID bits (a setattr that sets nothing).
#[test]
fn fuse_security_non_root_caller_with_passthrough() {
    non_root_caller(
        "fuse_security_non_root_caller_with_passthrough",
        "minfreespace=0,passthrough.io=rw",
        None,
    );
}

/// Runs [`SCRIPT`] as a user in a plain folder and in a pool mounted with
/// `options`; `known`: a (plain, pool) difference of the output to allow.
fn non_root_caller(test: &str, options: &str, known: Option<(&str, &str)>) {
    let tmp = tempfile::tempdir().unwrap();
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let (plain, a, mnt) = (
        tmp.path().join("plain"),
        tmp.path().join("a"),
        tmp.path().join("mnt"),
    );
    for d in [&plain, &a, &mnt] {
        fs::create_dir(d).unwrap();
        setup(d);
    }
    fs::remove_dir_all(mnt.join("shared")).unwrap();
    fs::remove_dir_all(mnt.join("private")).unwrap();
    fs::remove_file(mnt.join("rootfile")).unwrap();
    let Some(pool) = Pool::mount(test, &a.display().to_string(), &mnt, options) else {
        return;
    };
    let mut expected = as_user(&plain, SCRIPT);
    if let Some((plain_says, pool_says)) = known {
        assert!(expected.contains(plain_says), "{expected}");
        expected = expected.replace(plain_says, pool_says);
    }
    let got = as_user(&pool.mnt, SCRIPT);
    assert_eq!(
        got, expected,
        "the pool answers a user as a plain filesystem does"
    );
    for needle in [
        "12345:12345 644",
        "12345:12345 755",
        "777\n777\n",
        "777 0\n777 0",
        "777 1",
        // chown to -1:-1: the owner's clears both bits, another's is refused.
        "\n755\nOperation not permitted\n4777",
        "Permission denied",
        "Operation not permitted",
    ] {
        assert!(got.contains(needle), "missing `{needle}` in\n{got}");
    }
    let mine = fs::metadata(a.join("shared/moved")).unwrap();
    assert_eq!(
        (mine.uid(), mine.gid()),
        (12345, 12345),
        "owned by the caller on the branch"
    );
    assert_eq!(
        fs::read(a.join("rootfile")).unwrap(),
        b"root's",
        "root's file unchanged"
    );
    drop(pool);
}

/// Every file below `dir` with its bytes (symlinks as their targets).
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for entry in fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let path = entry.path();
        let name = path.display().to_string();
        let ty = entry.file_type().unwrap();
        if ty.is_dir() {
            out.insert(name, b"<dir>".to_vec());
            out.extend(snapshot(&path));
        } else if ty.is_symlink() {
            out.insert(
                name,
                fs::read_link(&path)
                    .unwrap()
                    .as_os_str()
                    .as_encoded_bytes()
                    .to_vec(),
            );
        } else {
            out.insert(name, fs::read(&path).unwrap());
        }
    }
    out
}

#[test]
fn fuse_security_symlinks_in_branches_never_lead_outside() {
    let test = "fuse_security_symlinks_in_branches_never_lead_outside";
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("x/y");
    let (b0, b1, mnt, outside) = (
        base.join("b0"),
        base.join("b1"),
        base.join("mnt"),
        tmp.path().join("outside"),
    );
    for d in [&b0, &b1, &mnt, &outside] {
        fs::create_dir_all(d).unwrap();
    }
    fs::write(outside.join("secret"), b"do not touch").unwrap();
    fs::write(outside.join("f"), b"outside f").unwrap();
    // Branch 0 has a real folder `d`; branch 1 has `d` pointing outside, absolute,
    // and `up` pointing outside through `..`.
    fs::create_dir(b0.join("d")).unwrap();
    fs::write(b0.join("d/f"), b"inside f").unwrap();
    std::os::unix::fs::symlink(&outside, b1.join("d")).unwrap();
    std::os::unix::fs::symlink("../../../outside", b1.join("up")).unwrap();
    fs::create_dir(b1.join("e")).unwrap();
    std::os::unix::fs::symlink("../../../../outside/secret", b1.join("e/s")).unwrap();
    assert_eq!(
        fs::read(b1.join("up/secret")).unwrap(),
        b"do not touch",
        "the links do lead outside"
    );
    let before = snapshot(&outside);

    let branches = format!("{}:{}", b0.display(), b1.display());
    let Some(pool) = Pool::mount(
        test,
        &branches,
        &mnt,
        "category.create=epall,func.mkdir=epall,minfreespace=0",
    ) else {
        return;
    };
    let names: Vec<String> = fs::read_dir(pool.path("d"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec!["f".to_owned()], "the listing of d stays inside");
    assert_eq!(errno(fs::read(pool.path("d/secret"))), libc::ENOENT);
    assert_eq!(fs::read(pool.path("d/f")).unwrap(), b"inside f");
    fs::write(pool.path("d/new"), b"n").unwrap();
    fs::create_dir(pool.path("d/newdir")).unwrap();
    // SAFETY: test code; NUL-terminated path and name.
    let rc = unsafe {
        let p =
            std::ffi::CString::new(pool.path("d/f").into_os_string().into_encoded_bytes()).unwrap();
        libc::setxattr(p.as_ptr(), c"user.x".as_ptr(), b"1".as_ptr().cast(), 1, 0)
    };
    assert_eq!(rc, 0);
    fs::set_permissions(pool.path("d/f"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::remove_file(pool.path("d/f")).unwrap();
    fs::rename(pool.path("d"), pool.path("d2")).unwrap();
    // Symlinks stay symlinks.
    assert!(fs::symlink_metadata(pool.path("up"))
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(
        fs::read_link(pool.path("up")).unwrap(),
        Path::new("../../../outside")
    );
    assert_eq!(
        fs::read_link(pool.path("e/s")).unwrap(),
        Path::new("../../../../outside/secret")
    );
    fs::remove_file(pool.path("e/s")).unwrap();
    // `..` in a name never reaches the daemon as a path, but the kernel's own
    // resolution from inside the pool stops at the mount's root.
    assert_eq!(
        errno(fs::metadata(pool.path("e/../../secret"))),
        libc::ENOENT
    );
    drop(pool);
    assert_eq!(
        snapshot(&outside),
        before,
        "nothing outside the branches changed"
    );
    assert!(b0.join("d2/new").exists() && b0.join("d2/newdir").is_dir());
    assert!(!b0.join("d2/f").exists());
}

/// Two branch folders and a mountpoint that anyone may write, in a temporary
/// folder anyone may enter.
fn open_branches() -> (tempfile::TempDir, PathBuf, PathBuf, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let (b1, b2, mnt) = (
        tmp.path().join("b1"),
        tmp.path().join("b2"),
        tmp.path().join("mnt"),
    );
    for d in [&b1, &b2, &mnt] {
        fs::create_dir(d).unwrap();
        fs::set_permissions(d, fs::Permissions::from_mode(0o777)).unwrap();
    }
    (tmp, b1, b2, mnt)
}

#[test]
fn fuse_security_a_user_changes_only_the_copies_they_may_change() {
    let test = "fuse_security_a_user_changes_only_the_copies_they_may_change";
    let (_tmp, b1, b2, mnt) = open_branches();
    // The copy the pool shows (b1) is the user's; a hidden copy on b2 is root's.
    fs::write(b1.join("cx"), b"user's").unwrap();
    std::os::unix::fs::chown(b1.join("cx"), Some(12345), Some(12345)).unwrap();
    fs::write(b2.join("cx"), b"root's").unwrap();
    fs::set_permissions(b2.join("cx"), fs::Permissions::from_mode(0o755)).unwrap();
    // Both root's, the one shown writable by everyone, the hidden one not.
    fs::write(b1.join("tt"), b"shown").unwrap();
    fs::set_permissions(b1.join("tt"), fs::Permissions::from_mode(0o666)).unwrap();
    fs::write(b2.join("tt"), b"hidden").unwrap();
    fs::set_permissions(b2.join("tt"), fs::Permissions::from_mode(0o644)).unwrap();
    // A folder open to all on b1, root's own on b2 with root's file in it: a user's
    // rename over that name must not remove root's copy.
    fs::create_dir(b1.join("d")).unwrap();
    fs::set_permissions(b1.join("d"), fs::Permissions::from_mode(0o777)).unwrap();
    fs::write(b1.join("d/mine"), b"mine").unwrap();
    std::os::unix::fs::chown(b1.join("d/mine"), Some(12345), Some(12345)).unwrap();
    fs::create_dir(b2.join("d")).unwrap();
    fs::write(b2.join("d/target"), b"root's").unwrap();
    let branches = format!("{}:{}", b1.display(), b2.display());
    let Some(pool) = Pool::mount(test, &branches, &mnt, "minfreespace=0") else {
        return;
    };
    as_user(
        &pool.mnt,
        "chmod 4777 cx; truncate -s 0 tt; touch -d 2001-01-01 tt; mv d/mine d/target",
    );
    assert_eq!(fs::read(b1.join("d/target")).unwrap(), b"mine");
    assert_eq!(fs::read(b2.join("d/target")).unwrap(), b"root's");
    // Removing the name cannot remove root's copy: refused, not passed off as done.
    let out = as_user(&pool.mnt, "rm -f d/target || echo refused");
    assert!(out.contains("refused"), "{out}");
    assert_eq!(fs::read(b2.join("d/target")).unwrap(), b"root's");
    // The user's own copy and the writable one changed, root's hidden copies not.
    assert_eq!(
        fs::metadata(b1.join("cx")).unwrap().permissions().mode() & 0o7777,
        0o4777
    );
    assert_eq!(
        fs::metadata(b2.join("cx")).unwrap().permissions().mode() & 0o7777,
        0o755
    );
    assert_eq!(fs::read(b1.join("tt")).unwrap(), b"");
    assert_eq!(fs::read(b2.join("tt")).unwrap(), b"hidden");
    assert!(
        fs::metadata(b2.join("tt")).unwrap().mtime() > 978_307_200,
        "the hidden copy's time was set"
    );
}

#[test]
fn fuse_security_an_open_policy_other_than_getattrs_opens_as_the_caller() {
    let test = "fuse_security_an_open_policy_other_than_getattrs_opens_as_the_caller";
    let (_tmp, b1, b2, mnt) = open_branches();
    // The copy shown (getattr: ff) is writable by all; the newer one, which
    // func.open=newest opens, is root's and not.
    fs::write(b1.join("tt"), b"shown").unwrap();
    fs::set_permissions(b1.join("tt"), fs::Permissions::from_mode(0o666)).unwrap();
    make_older(&b1.join("tt"));
    fs::write(b2.join("tt"), b"hidden").unwrap();
    fs::set_permissions(b2.join("tt"), fs::Permissions::from_mode(0o644)).unwrap();
    let branches = format!("{}:{}", b1.display(), b2.display());
    let Some(pool) = Pool::mount(test, &branches, &mnt, "func.open=newest") else {
        return;
    };
    let out = as_user(
        &pool.mnt,
        "true > tt || echo refused; echo hi >> tt || echo refused",
    );
    assert_eq!(out.matches("refused").count(), 2, "{out}");
    assert_eq!(fs::read(b2.join("tt")).unwrap(), b"hidden");
}

#[test]
fn fuse_security_copies_in_folders_the_user_cannot_read_stay_hidden() {
    // Listed one branch after the other, or at once (`func.readdir`): the threads
    // that list the copies at once act as the caller too.
    for options in [
        "minfreespace=0",
        "minfreespace=0,func.readdir=cor",
        "minfreespace=0,func.readdir=cosr:2",
    ] {
        copies_the_user_cannot_read_stay_hidden(options);
    }
}

fn copies_the_user_cannot_read_stay_hidden(options: &str) {
    let test = "fuse_security_copies_in_folders_the_user_cannot_read_stay_hidden";
    let (_tmp, b1, b2, mnt) = open_branches();
    // The folder the pool shows is open to all (b1); its copy on b2 is root's own,
    // and holds names, a file and a symlink the user may not see there.
    fs::create_dir(b1.join("shared")).unwrap();
    fs::set_permissions(b1.join("shared"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(b1.join("shared/a"), b"a").unwrap();
    fs::create_dir(b2.join("shared")).unwrap();
    fs::set_permissions(b2.join("shared"), fs::Permissions::from_mode(0o700)).unwrap();
    fs::write(b2.join("shared/secret"), b"root's secret").unwrap();
    fs::set_permissions(b2.join("shared/secret"), fs::Permissions::from_mode(0o644)).unwrap();
    std::os::unix::fs::symlink("secret", b2.join("shared/link")).unwrap();
    let branches = format!("{}:{}", b1.display(), b2.display());
    let Some(pool) = Pool::mount(test, &branches, &mnt, options) else {
        return;
    };
    // As a plain folder would: the user lists and finds only what b1 holds.
    let out = as_user(
        &pool.mnt,
        "ls -a shared | tr '\\n' ' '; echo; ls -l shared | grep -c secret; \
         cat shared/secret; readlink -v shared/link; stat -c %s shared/secret; \
         getfattr -n user.x shared/secret",
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], ". .. a ", "{options}: {out}");
    assert_eq!(lines[1], "0", "{out}");
    assert_eq!(
        lines[2..],
        ["No such file or directory"; 4],
        "every name of the hidden copy is unknown to the user: {out}"
    );
    // Root sees the whole union, and requests of root and of the user, taken in
    // turn by the same daemon threads, each get their own rights: a thread that
    // served the user serves root as root, and the other way round.
    fs::create_dir(b1.join("open")).unwrap();
    fs::set_permissions(b1.join("open"), fs::Permissions::from_mode(0o777)).unwrap();
    fs::create_dir(b1.join("rootonly")).unwrap();
    fs::set_permissions(b1.join("rootonly"), fs::Permissions::from_mode(0o700)).unwrap();
    for i in 0..12 {
        let out = as_user(
            &pool.mnt,
            &format!(
                "ls shared | tr '\n' ' '; echo; cat shared/a; echo; cat shared/secret;                  touch open/u{i} rootonly/u{i}"
            ),
        );
        assert_eq!(
            out, "a \na\nNo such file or directory\nPermission denied",
            "round {i}"
        );
        let mut names: Vec<String> = fs::read_dir(pool.mnt.join("shared"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["a", "link", "secret"], "round {i}");
        assert_eq!(
            fs::read(pool.mnt.join("shared/secret")).unwrap(),
            b"root's secret"
        );
        fs::write(pool.mnt.join(format!("rootonly/r{i}")), b"r").unwrap();
        fs::write(pool.mnt.join(format!("open/r{i}")), b"r").unwrap();
        let owner = |name: String| fs::metadata(pool.mnt.join(name)).unwrap().uid();
        assert_eq!(owner(format!("open/u{i}")), 12345);
        assert_eq!(owner(format!("open/r{i}")), 0);
        assert_eq!(owner(format!("rootonly/r{i}")), 0);
    }
}

#[test]
fn fuse_security_roots_work_on_a_thread_that_just_served_a_user() {
    let test = "fuse_security_roots_work_on_a_thread_that_just_served_a_user";
    let (_tmp, b1, b2, mnt) = open_branches();
    // Root's rename of src/f into dst, a folder only b2 has: the pool clones dst onto
    // b1 first, as root, so that the clone keeps root's owner and mode.
    fs::create_dir(b1.join("src")).unwrap();
    fs::set_permissions(b1.join("src"), fs::Permissions::from_mode(0o700)).unwrap();
    fs::write(b1.join("src/f"), b"root's").unwrap();
    fs::create_dir(b2.join("dst")).unwrap();
    fs::set_permissions(b2.join("dst"), fs::Permissions::from_mode(0o700)).unwrap();
    // Renamed over an existing name: the kernel looks a new name up again first.
    fs::write(b2.join("dst/f"), b"old").unwrap();
    fs::write(b1.join("a"), b"a").unwrap();
    let branches = format!("{}:{}", b1.display(), b2.display());
    // One thread, so that root's requests reach the very thread that served the user
    // last.
    let options = "minfreespace=0,threads=1,cache.entry=30,cache.attr=30";
    let Some(pool) = Pool::mount(test, &branches, &mnt, options) else {
        return;
    };
    assert!(fs::metadata(pool.mnt.join("src/f")).is_ok());
    assert!(fs::metadata(pool.mnt.join("dst/f")).is_ok());
    assert_eq!(as_user(&pool.mnt, "stat -c %s a"), "1");
    fs::rename(pool.mnt.join("src/f"), pool.mnt.join("dst/f")).unwrap();
    assert_eq!(fs::read(b1.join("dst/f")).unwrap(), b"root's");
    assert!(!b2.join("dst/f").exists());
    let clone = fs::metadata(b1.join("dst")).unwrap();
    assert_eq!((clone.uid(), clone.mode() & 0o7777), (0, 0o700));
}

#[test]
fn fuse_security_folders_cloned_for_a_user_keep_their_owner() {
    let test = "fuse_security_folders_cloned_for_a_user_keep_their_owner";
    let (_tmp, b1, b2, mnt) = open_branches();
    // A folder for everyone, root's, only on b2; ff creates on b1, so the folder is
    // cloned there first.
    for dir in ["drop", "drop/in"] {
        fs::create_dir(b2.join(dir)).unwrap();
        fs::set_permissions(b2.join(dir), fs::Permissions::from_mode(0o1777)).unwrap();
    }
    let branches = format!("{}:{}", b1.display(), b2.display());
    let options = "minfreespace=0,category.create=ff";
    let Some(pool) = Pool::mount(test, &branches, &mnt, options) else {
        return;
    };
    let out = as_user(
        &pool.mnt,
        "echo u > drop/in/file && mkdir drop/in/dir && ln -s file drop/in/link && echo ok",
    );
    assert_eq!(out, "ok");
    for dir in ["drop", "drop/in"] {
        let clone = fs::metadata(b1.join(dir)).unwrap();
        assert_eq!(
            (clone.uid(), clone.gid(), clone.mode() & 0o7777),
            (0, 0, 0o1777),
            "{dir}"
        );
    }
    for made in ["file", "dir", "link"] {
        let meta = fs::symlink_metadata(b1.join("drop/in").join(made)).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (12345, 12345), "{made}");
    }
}

/// Two copies of `d/f` for func.open=newest: an older one holding `users` in a
/// folder open to all on `b1` (the copy the pool shows, and the only one a user can
/// reach), and a newer one holding `roots` in root's own folder on `b2` (the one
/// root opens).
fn two_copies(b1: &Path, b2: &Path, users: &[u8], roots: &[u8]) {
    fs::create_dir(b1.join("d")).unwrap();
    fs::set_permissions(b1.join("d"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(b1.join("d/f"), users).unwrap();
    make_older(&b1.join("d/f"));
    fs::create_dir(b2.join("d")).unwrap();
    fs::set_permissions(b2.join("d"), fs::Permissions::from_mode(0o700)).unwrap();
    fs::write(b2.join("d/f"), roots).unwrap();
    fs::set_permissions(b2.join("d/f"), fs::Permissions::from_mode(0o644)).unwrap();
}

/// Sets a file's mtime an hour back, so that `newest` passes over it.
fn make_older(path: &Path) {
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(old)
        .unwrap();
}

#[test]
fn fuse_security_passthrough_serves_each_open_its_own_rights() {
    let test = "fuse_security_passthrough_serves_each_open_its_own_rights";
    let (_tmp, b1, b2, mnt) = open_branches();
    // Root's set-user-ID program, open for reading by a user while root appends.
    fs::write(b1.join("prog"), b"x").unwrap();
    fs::set_permissions(b1.join("prog"), fs::Permissions::from_mode(0o4755)).unwrap();
    two_copies(&b1, &b2, b"shown", b"ROOT ONLY");
    let branches = format!("{}:{}", b1.display(), b2.display());
    let options = "minfreespace=0,passthrough.io=rw,func.open=newest";
    let Some(pool) = Pool::mount(test, &branches, &mnt, options) else {
        return;
    };
    let user = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "exec 3<'{}'; sleep 2",
            pool.mnt.join("prog").display()
        ))
        .uid(12345)
        .gid(12345)
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let mut prog = fs::File::options()
        .append(true)
        .open(pool.mnt.join("prog"))
        .unwrap();
    std::io::Write::write_all(&mut prog, b"more").unwrap();
    drop(prog);
    // Root's write through the backing file the user's open registered kept the bit.
    assert_eq!(
        fs::metadata(b1.join("prog")).unwrap().mode() & 0o7777,
        0o4755
    );
    // While root holds its copy open, the user's open of the other copy is refused,
    // never served with root's bytes.
    let held = fs::File::open(pool.mnt.join("d/f")).unwrap();
    let out = as_user(&pool.mnt, "cat d/f");
    assert_eq!(out, "Device or resource busy");
    drop(held);
    assert_eq!(as_user(&pool.mnt, "cat d/f"), "shown");
    let mut user = user;
    user.wait().unwrap();
    // The other way round: while the user holds their copy open, root's copy waits
    // too, and is there once the user closes it.
    let user = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "exec 3<'{}'; sleep 2",
            pool.mnt.join("d/f").display()
        ))
        .uid(12345)
        .gid(12345)
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let busy = fs::read(pool.mnt.join("d/f")).unwrap_err();
    assert_eq!(busy.raw_os_error(), Some(libc::EBUSY));
    let mut user = user;
    user.wait().unwrap();
    assert_eq!(fs::read(pool.mnt.join("d/f")).unwrap(), b"ROOT ONLY");
}

#[test]
fn fuse_security_a_file_moved_on_enospc_stays_where_its_writer_can_reach_it() {
    let test = "fuse_security_a_file_moved_on_enospc_stays_where_its_writer_can_reach_it";
    let (Some(small), Some(private), Some(open)) = (
        Tmpfs::new(test, "2m"),
        Tmpfs::new(test, "64m"),
        Tmpfs::new(test, "32m"),
    ) else {
        return;
    };
    let b = [&small.path, &private.path, &open.path];
    // The folder is open to all on the small branch, root's own on the branch with
    // the most room, and missing on the third.
    fs::create_dir(b[0].join("shared")).unwrap();
    fs::set_permissions(b[0].join("shared"), fs::Permissions::from_mode(0o777)).unwrap();
    fs::create_dir(b[1].join("shared")).unwrap();
    fs::set_permissions(b[1].join("shared"), fs::Permissions::from_mode(0o700)).unwrap();
    let mnt = tempfile::tempdir().unwrap();
    fs::set_permissions(mnt.path(), fs::Permissions::from_mode(0o777)).unwrap();
    let branches = b.map(|p| p.display().to_string()).join(":");
    let options = "category.create=ff,minfreespace=0,moveonenospc=mfs";
    let Some(pool) = Pool::mount(test, &branches, mnt.path(), options) else {
        return;
    };
    // 8 MiB do not fit on the 2 MiB branch: the file moves on, to the branch with
    // the most room that the user can enter.
    let out = as_user(
        &pool.mnt,
        "head -c 8388608 /dev/zero > shared/big && wc -c < shared/big",
    );
    assert_eq!(out, "8388608");
    assert!(
        !b[1].join("shared/big").exists(),
        "moved into root's folder"
    );
    let moved = fs::metadata(b[2].join("shared/big")).unwrap();
    assert_eq!((moved.len(), moved.uid()), (8 << 20, 12345));
    // The folder was cloned there from the one the user writes in.
    let clone = fs::metadata(b[2].join("shared")).unwrap();
    assert_eq!(clone.mode() & 0o7777, 0o777);
}

#[test]
fn fuse_security_set_id_bits_go_where_a_write_or_chmod_puts_them() {
    let test = "fuse_security_set_id_bits_go_where_a_write_or_chmod_puts_them";
    let (_tmp, b1, b2, mnt) = open_branches();
    let mode = |p: PathBuf| fs::metadata(p).unwrap().mode() & 0o7777;
    let user_file = |p: PathBuf, m: u32| {
        fs::write(&p, b"o").unwrap();
        std::os::unix::fs::chown(&p, Some(12345), Some(12345)).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(m)).unwrap();
    };
    for b in [&b1, &b2] {
        fs::create_dir(b.join("t")).unwrap();
        fs::set_permissions(b.join("t"), fs::Permissions::from_mode(0o1777)).unwrap();
        // Root's set-user-ID file anyone may write, on both branches; func.open
        // picks the newer copy (b2) for writing, getattr shows b1's.
        fs::write(b.join("t/w"), b"o").unwrap();
        fs::set_permissions(b.join("t/w"), fs::Permissions::from_mode(0o4777)).unwrap();
        // The user's own set-user-ID program, on both branches.
        user_file(b.join("t/mine"), 0o4755);
    }
    make_older(&b1.join("t/w"));
    // The copy shown is the user's, a hidden one root's set-user-ID program.
    user_file(b1.join("t/shown"), 0o755);
    fs::write(b2.join("t/shown"), b"r").unwrap();
    fs::set_permissions(b2.join("t/shown"), fs::Permissions::from_mode(0o4755)).unwrap();
    let branches = format!("{}:{}", b1.display(), b2.display());
    let options = "minfreespace=0,func.open=newest,cache.files=partial";
    let Some(pool) = Pool::mount(test, &branches, &mnt, options) else {
        return;
    };
    let out = as_user(
        &pool.mnt,
        "echo x >> t/w; chmod u-s t/mine; stat t/shown >/dev/null; rm -f t/shown; \
         chmod 755 t/shown || echo refused",
    );
    // The copy written loses its bit (the kernel's own mode change also reaches the
    // copy shown, which the user may write as well).
    assert_eq!(mode(b2.join("t/w")), 0o777);
    // The owner's chmod reaches every copy.
    assert_eq!(
        (mode(b1.join("t/mine")), mode(b2.join("t/mine"))),
        (0o755, 0o755)
    );
    // Root's copy left behind by the removal keeps its bit: the user may not chmod it.
    assert!(out.contains("refused"), "{out}");
    assert_eq!(mode(b2.join("t/shown")), 0o4755);
}

#[test]
fn fuse_security_renames_reveal_and_move_only_what_the_user_may() {
    let test = "fuse_security_renames_reveal_and_move_only_what_the_user_may";
    let (_tmp, b1, b2, mnt) = open_branches();
    // pub/d is empty as the user sees it; root's copy on b2 holds a hidden entry.
    for dir in ["pub", "pub/d", "share"] {
        fs::create_dir(b1.join(dir)).unwrap();
        fs::set_permissions(b1.join(dir), fs::Permissions::from_mode(0o777)).unwrap();
    }
    fs::create_dir(b1.join("pub/a")).unwrap();
    std::os::unix::fs::chown(b1.join("pub/a"), Some(12345), Some(12345)).unwrap();
    fs::create_dir_all(b2.join("pub/d")).unwrap();
    fs::write(b2.join("pub/d/secret"), b"s").unwrap();
    fs::set_permissions(b2.join("pub"), fs::Permissions::from_mode(0o700)).unwrap();
    // Root's file in root's folder on b2, below a folder open to all on b1.
    fs::create_dir(b2.join("share")).unwrap();
    fs::write(b2.join("share/victim"), b"root's").unwrap();
    fs::set_permissions(b2.join("share/victim"), fs::Permissions::from_mode(0o666)).unwrap();
    let branches = format!("{}:{}", b1.display(), b2.display());
    let options = "minfreespace=0,category.create=epmfs,rename-exdev=rel-symlink";
    let Some(pool) = Pool::mount(test, &branches, &mnt, options) else {
        return;
    };
    // rename(2) itself (mv would fall back to copying): "done" or the errno's name.
    let rename = |from: &str, to: &str| {
        let script = format!(
            "python3 -c \"import os, errno\ntry:\n    os.rename('{from}', '{to}'); \
             print('done')\nexcept OSError as e:\n    print(errno.errorcode[e.errno])\""
        );
        as_user(&pool.mnt, &script)
    };
    // Over a folder that looks empty to the user: done, as on a plain folder.
    assert_eq!(rename("pub/a", "pub/d"), "done");
    assert!(b1.join("pub/d").is_dir() && !b1.join("pub/a").exists());
    // Over another user's empty folder the user may not list: done too, as on a
    // plain folder (the rename needs the right to write `pub`, not to read `e`).
    fs::create_dir(b1.join("pub/own")).unwrap();
    std::os::unix::fs::chown(b1.join("pub/own"), Some(12345), Some(12345)).unwrap();
    fs::create_dir(b1.join("pub/e")).unwrap();
    std::os::unix::fs::chown(b1.join("pub/e"), Some(23456), Some(23456)).unwrap();
    fs::set_permissions(b1.join("pub/e"), fs::Permissions::from_mode(0o700)).unwrap();
    assert_eq!(rename("pub/own", "pub/e"), "done");
    // Root's file in a folder the user may not write: refused, and not moved into
    // the rename-exdev stash either.
    assert_eq!(rename("share/victim", "pub/x"), "EACCES");
    assert_eq!(fs::read(b2.join("share/victim")).unwrap(), b"root's");
    assert!(!b2.join(".mergerfs_rename_exdev/share/victim").exists());
}

#[test]
fn fuse_security_the_page_cache_never_shows_a_user_another_copy() {
    let test = "fuse_security_the_page_cache_never_shows_a_user_another_copy";
    for cache in ["partial", "full", "auto-full"] {
        let (_tmp, b1, b2, mnt) = open_branches();
        two_copies(&b1, &b2, b"USERS COPY", b"ROOT ONLY!");
        let branches = format!("{}:{}", b1.display(), b2.display());
        let options = format!("minfreespace=0,func.open=newest,cache.files={cache}");
        let Some(pool) = Pool::mount(test, &branches, &mnt, &options) else {
            return;
        };
        // Root reads its copy into the page cache and keeps it open: the user's copy
        // waits (a mapping of it would share root's pages).
        let mut held = fs::File::open(pool.path("d/f")).unwrap();
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut held, &mut bytes).unwrap();
        assert_eq!(bytes, b"ROOT ONLY!");
        assert_eq!(
            as_user(&pool.mnt, "cat d/f"),
            "Device or resource busy",
            "{cache}, open"
        );
        drop(held);
        // Once root has closed it, the user reads their own copy, also where pages
        // are kept across opens (full, auto-full), and mapped.
        assert_eq!(
            as_user(&pool.mnt, "cat d/f"),
            "USERS COPY",
            "{cache}, closed"
        );
        let mapped = as_user(
            &pool.mnt,
            "python3 -c \"import mmap; f = open('d/f', 'rb'); \
             print(mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)[:].decode())\"",
        );
        assert_eq!(mapped, "USERS COPY", "{cache}, mapped");
        assert_eq!(
            fs::read(pool.path("d/f")).unwrap(),
            b"ROOT ONLY!",
            "{cache}"
        );
    }
}

#[test]
fn fuse_security_every_kind_of_write_by_another_user_clears_set_id_bits() {
    let test = "fuse_security_every_kind_of_write_by_another_user_clears_set_id_bits";
    for options in [
        "passthrough.io=rw",
        "passthrough.io=off",
        "passthrough.io=off,cache.files=partial",
    ] {
        let (_tmp, b1, b2, mnt) = open_branches();
        for name in ["append", "fallocate", "copied"] {
            fs::write(b1.join(name), b"abc").unwrap();
            fs::set_permissions(b1.join(name), fs::Permissions::from_mode(0o6777)).unwrap();
        }
        fs::write(b1.join("mine"), b"data").unwrap();
        let branches = format!("{}:{}", b1.display(), b2.display());
        let Some(pool) = Pool::mount(test, &branches, &mnt, &format!("minfreespace=0,{options}"))
        else {
            return;
        };
        let out = as_user(
            &pool.mnt,
            "echo more >> append && fallocate -l 65536 fallocate && python3 -c \
             \"import os; os.copy_file_range(os.open('mine', 0), os.open('copied', 1), 4)\" \
             && echo done",
        );
        assert_eq!(out, "done", "{options}");
        for name in ["append", "fallocate", "copied"] {
            let mode = fs::metadata(b1.join(name)).unwrap().mode() & 0o7777;
            assert_eq!(mode, 0o777, "{options}: {name}");
        }
        // The bits set on the branch after the kernel cached the file's mode (so it
        // asks for no mode change): cleared all the same.
        for name in ["fallocate", "copied"] {
            fs::set_permissions(b1.join(name), fs::Permissions::from_mode(0o666)).unwrap();
            fs::metadata(pool.path(name)).unwrap();
            fs::set_permissions(b1.join(name), fs::Permissions::from_mode(0o6777)).unwrap();
        }
        let out = as_user(
            &pool.mnt,
            "fallocate -l 131072 fallocate && python3 -c \
             \"import os; os.copy_file_range(os.open('mine', 0), os.open('copied', 1), 4)\" \
             && echo done",
        );
        assert_eq!(out, "done", "{options}");
        for name in ["fallocate", "copied"] {
            let mode = fs::metadata(b1.join(name)).unwrap().mode() & 0o7777;
            assert_eq!(mode, 0o777, "{options}: {name}, set behind the pool");
        }
    }
}

/// A user who may write in a folder on a branch swaps a folder the pool is copying
/// there (to create a file below it) for a hard link to a file of root's, again and
/// again: the copy's owner, mode and attributes, set with the daemon's ids, must
/// never land on root's file.
#[test]
fn fuse_security_a_folder_swapped_while_copied_never_passes_its_owner_on() {
    let test = "fuse_security_a_folder_swapped_while_copied_never_passes_its_owner_on";
    const ROUNDS: usize = 60;
    let (tmp, b1, b2, mnt) = open_branches();
    let victim = tmp.path().join("victim");
    fs::write(&victim, b"root's").unwrap();
    fs::set_permissions(&victim, fs::Permissions::from_mode(0o666)).unwrap();
    for b in [&b1, &b2] {
        fs::create_dir(b.join("home")).unwrap();
        std::os::unix::fs::chown(b.join("home"), Some(12345), Some(12345)).unwrap();
    }
    for i in 0..ROUNDS {
        let d = b2.join(format!("home/d{i}"));
        fs::create_dir(&d).unwrap();
        fs::set_permissions(&d, fs::Permissions::from_mode(0o750)).unwrap();
        std::os::unix::fs::chown(&d, Some(12345), Some(12345)).unwrap();
    }
    // `ff` creates on b1, which has no copy of home/dN yet: the pool copies it.
    let branches = format!("{}:{}", b1.display(), b2.display());
    let Some(pool) = Pool::mount(test, &branches, &mnt, "minfreespace=0,category.create=ff") else {
        return;
    };
    let script = format!(
        "python3 -c \"
import ctypes, os, threading
libc = ctypes.CDLL(None, use_errno=True)
made = 0
for i in range({ROUNDS}):
    d, l = b'{b1}/home/d%d' % i, b'{b1}/home/l%d' % i
    os.link('{victim}', l)
    stop = []
    def swap():
        while not stop:
            libc.renameat2(-100, d, -100, l, 2)
    t = threading.Thread(target=swap)
    t.start()
    try:
        os.close(os.open('{mnt}/home/d%d/new' % i, os.O_CREAT | os.O_WRONLY, 0o644))
        made += 1
    except OSError:
        pass
    stop.append(1)
    t.join()
print(made)
\"",
        b1 = b1.display(),
        victim = victim.display(),
        mnt = pool.mnt.display(),
    );
    run_race(tmp.path(), &script);
    let meta = fs::metadata(&victim).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid(), meta.mode() & 0o7777),
        (0, 0, 0o666),
        "root's file took the copied folder's owner or mode"
    );
    assert!(
        xattr_names(&victim).is_empty(),
        "root's file got attributes: {:?}",
        xattr_names(&victim)
    );
    assert_eq!(fs::read(&victim).unwrap(), b"root's");
}

/// Runs a race `script` as the user in `root`; it prints how many of its creates
/// through the pool succeeded, and at least one must have, or the race proved nothing.
fn run_race(root: &Path, script: &str) {
    let made: usize = as_user(root, script)
        .trim()
        .parse()
        .expect("the script's count");
    assert!(made > 0, "no create succeeded at all");
}

/// The extended attribute names of `path`.
fn xattr_names(path: &Path) -> Vec<String> {
    let c = common::fuse::cpath(path);
    let mut buf = [0u8; 4096];
    // SAFETY: a NUL-terminated path and a buffer passed with its length.
    let n = unsafe { libc::llistxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    buf[..n.max(0) as usize]
        .split(|&b| b == 0)
        .filter(|n| !n.is_empty())
        .map(|n| String::from_utf8_lossy(n).into_owned())
        .collect()
}

/// The same race against a folder of root's instead of a file: a user who may write
/// in `pub` on the branch (mode 0777, not sticky) keeps exchanging the folder the
/// pool is copying there with root's private folder `secret` next to it. Root's
/// folder must never get the user as its owner or lose its mode.
#[test]
fn fuse_security_a_folder_of_roots_swapped_in_while_copied_stays_roots() {
    let test = "fuse_security_a_folder_of_roots_swapped_in_while_copied_stays_roots";
    const ROUNDS: usize = 100;
    let (tmp, b1, b2, mnt) = open_branches();
    // Branch roots as on a real disk: root's, not writable by others.
    for b in [&b1, &b2] {
        fs::set_permissions(b, fs::Permissions::from_mode(0o755)).unwrap();
        fs::create_dir(b.join("pub")).unwrap();
        fs::set_permissions(b.join("pub"), fs::Permissions::from_mode(0o777)).unwrap();
    }
    fs::create_dir(b1.join("pub/sub")).unwrap();
    std::os::unix::fs::chown(b1.join("pub/sub"), Some(12345), Some(12345)).unwrap();
    let secret = b2.join("pub/secret");
    fs::create_dir(&secret).unwrap();
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o700)).unwrap();
    fs::write(secret.join("s.txt"), b"root's").unwrap();
    let secret_ino = fs::metadata(&secret).unwrap().ino();
    // `ff` creates on b2 first, which has no pub/sub: the pool copies it there.
    let branches = format!("{}:{}", b2.display(), b1.display());
    let Some(pool) = Pool::mount(test, &branches, &mnt, "minfreespace=0,category.create=ff") else {
        return;
    };
    // The user watches `pub` and exchanges `sub` with root's folder the moment it
    // appears, then puts root's folder back and removes the copy, round after round.
    let script = format!(
        "python3 -c \"
import ctypes, os, threading, struct
libc = ctypes.CDLL(None, use_errno=True)
sub, sec = b'{b2}/pub/sub', b'{b2}/pub/secret'
root_ino = os.lstat(sec).st_ino
ino = libc.inotify_init1(0)
libc.inotify_add_watch(ino, b'{b2}/pub', 0x100)
def swap():
    while True:
        events = os.read(ino, 4096)
        at = 0
        while at + 16 <= len(events):
            length = struct.unpack_from('iIII', events, at)[3]
            name = events[at + 16:at + 16 + length].rstrip(bytes(1))
            at += 16 + length
            if name == b'sub':
                libc.renameat2(-100, sub, -100, sec, 2)
threading.Thread(target=swap, daemon=True).start()
made = 0
for i in range({ROUNDS}):
    try:
        if os.lstat(sub).st_ino == root_ino:
            libc.renameat2(-100, sub, -100, sec, 2)
    except OSError:
        pass
    try:
        for n in os.listdir(sub):
            os.unlink(sub + b'/' + n)
        os.rmdir(sub)
    except OSError:
        pass
    try:
        os.close(os.open('{mnt}/pub/sub/x%d' % i, os.O_CREAT | os.O_WRONLY, 0o644))
        made += 1
    except OSError:
        pass
print(made)
\"",
        b2 = b2.display(),
        mnt = pool.mnt.display(),
    );
    run_race(tmp.path(), &script);
    // Root's folder, wherever the user left it, is still root's and private.
    let mut found = Vec::new();
    for e in fs::read_dir(b2.join("pub")).unwrap() {
        let e = e.unwrap();
        let meta = fs::symlink_metadata(e.path()).unwrap();
        if meta.ino() == secret_ino {
            found.push((e.file_name(), meta.uid(), meta.mode() & 0o7777));
        }
    }
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!((found[0].1, found[0].2), (0, 0o700), "{found:?}");
    assert!(xattr_names(&b2.join("pub").join(&found[0].0)).is_empty());
    // No staging folder is left at the branch root.
    let left: Vec<_> = fs::read_dir(&b2)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().starts_with(".lhfs-clone"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// Set-ID bits and file capabilities where a write or a chown to -1:-1 meets users
/// of several kinds, in a plain folder and in the pool (passthrough on and off, and
/// through the page cache): root's write keeps a file's set-ID bits while it loses
/// its capability; another user's chown to -1:-1 of a set-ID file is refused and
/// changes nothing, whoever holds the file open; a writer whose file became set-ID
/// after it was opened still writes, and the bits go.
const EDGES: &str = r#"
import os, struct, subprocess, sys
d = sys.argv[1]
os.chdir(d)
CAP = struct.pack('<IIIII', 0x02000000, 1 << 13, 0, 0, 0)
# The users' interpreter: one root's home may hide is no use to them.
PY = '/usr/bin/python3' if os.path.exists('/usr/bin/python3') else sys.executable

def make(name, mode, owner=0, cap=False):
    with open(name, 'wb') as f:
        f.write(b'abc')
    os.chown(name, owner, owner)
    os.chmod(name, mode)
    if cap:
        os.setxattr(name, 'security.capability', CAP)

def show(name):
    st = os.stat(name)
    try:
        os.getxattr(name, 'security.capability')
        cap = 'cap'
    except OSError:
        cap = 'nocap'
    return '%o %s' % (st.st_mode & 0o7777, cap)

def as_user(uid, code):
    out = subprocess.run([PY, '-c', code], user=uid, group=uid,
                         extra_groups=[], capture_output=True, text=True, cwd=d)
    return (out.stdout + out.stderr).strip()

CHOWN = '''
import os, sys
try:
    os.chown(sys.argv[1] if len(sys.argv) > 1 else NAME, -1, -1); print('ok')
except OSError as e:
    print(e.strerror)
'''

make('r1', 0o4755, cap=True)
with open('r1', 'ab') as f:
    f.write(b'x')
print('root write, set-ID and cap:', show('r1'))

make('r2', 0o4755, owner=1001, cap=True)
print('other chown, set-ID and cap:', as_user(1002, CHOWN.replace('NAME', "'r2'")), show('r2'))

make('r3', 0o4777, owner=1001)
held = open('r3', 'rb')
print('other chown, open elsewhere:', as_user(1002, CHOWN.replace('NAME', "'r3'")), show('r3'))
held.close()

make('r4', 0o6755, owner=1001)
print('owner chown:', as_user(1001, CHOWN.replace('NAME', "'r4'")), show('r4'))

make('r5', 0o666, owner=1001)
writer = subprocess.Popen([PY, '-c', '''
import os, sys
fd = os.open('r5', os.O_WRONLY)
print('open', flush=True)
sys.stdin.readline()
try:
    os.write(fd, b'w'); print('wrote')
except OSError as e:
    print(e.strerror)
'''], user=1002, group=1002, extra_groups=[], cwd=d, text=True,
    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
assert writer.stdout.readline().strip() == 'open'
as_user(1001, "import os; os.chmod('r5', 0o4755)")
out, _ = writer.communicate('go\n')
print('write after the file became set-ID:', out.strip(), show('r5'))
"#;

#[test]
fn fuse_security_set_id_edges_match_a_plain_folder() {
    let test = "fuse_security_set_id_edges_match_a_plain_folder";
    let run = |dir: &Path| {
        let script = dir.join(".edges.py");
        fs::write(&script, EDGES).unwrap();
        let out = Command::new("python3")
            .arg(&script)
            .arg(dir)
            .output()
            .expect("python3");
        fs::remove_file(&script).unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    };
    let plain = tempfile::tempdir().unwrap();
    fs::set_permissions(plain.path(), fs::Permissions::from_mode(0o777)).unwrap();
    let expected = run(plain.path());
    for line in [
        "root write, set-ID and cap: 4755 nocap",
        "other chown, set-ID and cap: Operation not permitted 4755 cap",
        "other chown, open elsewhere: Operation not permitted 4777 nocap",
        "owner chown: ok 755 nocap",
        "write after the file became set-ID: wrote 755 nocap",
    ] {
        assert!(expected.contains(line), "plain folder: {line}\n{expected}");
    }
    for options in [
        "passthrough.io=rw",
        "passthrough.io=off",
        "passthrough.io=off,cache.files=partial",
    ] {
        let (_tmp, b1, b2, mnt) = open_branches();
        let branches = format!("{}:{}", b1.display(), b2.display());
        let Some(pool) = Pool::mount(test, &branches, &mnt, &format!("minfreespace=0,{options}"))
        else {
            return;
        };
        assert_eq!(run(&pool.mnt), expected, "{options}");
    }
}

/// POSIX ACLs (`setfacl`, `getfacl`): access granted and refused by them, chmod's
/// effect on the mask, default ACLs inherited by files, folders and fifos in place
/// of the umask, the umask where no default ACL is, set-group-ID cleared by a
/// `setfacl` of an owner outside the group, and `setfacl -b`. Run as root in the
/// folder given; users 1001 and 1002 try what they are granted.
const ACLS: &str = r#"
# POSIX ACLs, run as root in the folder given.
cd "$1" || exit 9
U1="setpriv --reuid=1001 --regid=1001 --clear-groups"
U2="setpriv --reuid=1002 --regid=1002 --clear-groups"
umask 022
mkdir acl; chmod 700 acl; setfacl -m u:1001:rx acl
echo secret > acl/f; chmod 600 acl/f; setfacl -m u:1001:rw acl/f
echo "read granted: $($U1 cat acl/f 2>&1 | sed 's/.*: //')"
echo "write granted: $($U1 sh -c 'echo more >> acl/f && echo ok' 2>&1 | sed 's/.*: //')"
echo "read not granted: $($U2 cat acl/f 2>&1 | sed 's/.*: //')"
echo "listing granted: $($U1 ls acl 2>&1 | sed 's/.*: //')"
chmod 640 acl/f
echo "after chmod 640: $(getfacl -cn acl/f 2>/dev/null | tr '\n' ' ')"
echo "setfacl by another user: $($U1 setfacl -m u:1002:r acl/f 2>&1 | sed 's/.*: //')"
mkdir inh; chmod 777 inh; setfacl -d -m u:1001:rwx inh; setfacl -d -m g::rwx inh; setfacl -d -m o::rx inh
$U1 sh -c 'umask 022; echo x > inh/new; mkdir inh/sub; mkfifo inh/fifo'
echo "inherited file: $(stat -c %a inh/new) $(getfacl -cn inh/new 2>/dev/null | tr '\n' ' ')"
echo "inherited folder: $(stat -c %a inh/sub) $(getfacl -cn inh/sub 2>/dev/null | tr '\n' ' ')"
echo "inherited fifo: $(stat -c %a inh/fifo)"
mkdir plain; chmod 777 plain
$U1 sh -c 'umask 027; echo x > plain/new; mkdir plain/sub'
echo "umask without a default ACL: $(stat -c %a plain/new plain/sub | tr '\n' ' ')"
echo y > sg; chown 1001:0 sg; chmod 2770 sg
$U1 setfacl -m u:1002:r sg
echo "setfacl by the owner outside the group: $(stat -c %a sg)"
setfacl -b acl/f
echo "after setfacl -b: $(stat -c %a acl/f) $(getfacl -cn acl/f 2>/dev/null | tr '\n' ' ')"
"#;

#[test]
fn fuse_security_posix_acls_match_a_plain_folder() {
    let test = "fuse_security_posix_acls_match_a_plain_folder";
    if Command::new("setfacl").arg("--version").output().is_err() {
        common::fuse::skip::<()>(test, "setfacl is missing (apt-get install acl)");
        return;
    }
    let run = |dir: &Path| {
        let out = Command::new("bash")
            .arg("-c")
            .arg(ACLS)
            .arg("acls")
            .arg(dir)
            .output()
            .expect("bash");
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    };
    let plain = tempfile::tempdir().unwrap();
    fs::set_permissions(plain.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let expected = run(plain.path());
    for line in [
        "read granted: secret",
        "write granted: ok",
        "read not granted: Permission denied",
        "setfacl by another user: Operation not permitted",
        "inherited file: 664 ",
        "inherited folder: 775 ",
        "inherited fifo: 664",
        "umask without a default ACL: 640 750",
        "setfacl by the owner outside the group: 770",
    ] {
        assert!(
            expected.lines().any(|l| l.starts_with(line)),
            "plain folder: {line}\n{expected}"
        );
    }
    for options in [
        "posix-acl=true",
        "posix-acl=true,passthrough.io=off,cache.files=partial",
        "posix-acl=false",
    ] {
        let (_tmp, b1, b2, mnt) = open_branches();
        let branches = format!("{}:{}", b1.display(), b2.display());
        let Some(pool) = Pool::mount(test, &branches, &mnt, &format!("minfreespace=0,{options}"))
        else {
            return;
        };
        let got = run(&pool.mnt);
        if options.starts_with("posix-acl=true") {
            assert_eq!(got, expected, "{options}");
        } else {
            // As in mergerfs by default: the kernel checks the mode bits alone, and
            // applies the umask before a default ACL can replace it.
            for line in ["read granted: Permission denied", "inherited file: 644 "] {
                assert!(
                    got.lines().any(|l| l.starts_with(line)),
                    "{options}: {line}\n{got}"
                );
            }
        }
    }
    // Where the pool shows no extended attributes, it shows no default ACL either:
    // the umask applies, whatever a branch's folder holds.
    let (_tmp, b1, b2, mnt) = open_branches();
    fs::create_dir(b1.join("inh")).unwrap();
    let acl = Command::new("setfacl")
        .args(["-d", "-m", "u:1001:rwx,g::rwx,o::rwx"])
        .arg(b1.join("inh"))
        .status()
        .unwrap();
    assert!(acl.success());
    let branches = format!("{}:{}", b1.display(), b2.display());
    let options = "minfreespace=0,posix-acl=true,xattr=noattr";
    let Some(pool) = Pool::mount(test, &branches, &mnt, options) else {
        return;
    };
    let out = Command::new("sh")
        .arg("-c")
        .arg("umask 077; echo x > inh/f; mkdir inh/d; stat -c %a inh/f inh/d")
        .current_dir(&pool.mnt)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "600\n700\n",
        "{out:?}"
    );
}
