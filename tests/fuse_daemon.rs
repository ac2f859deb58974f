//! lhfs as a daemon: mounting from an fstab file with util-linux `mount` through the
//! `mount.lhfs` helpers, returning only once the pool answers, refusing bad mounts
//! without leaving one behind, SIGTERM with a file open, waiting for branches at
//! boot, and the example systemd units.
//!
//! The daemon is not a child of the test, so its exit status is collected by making
//! the test process a child subreaper: orphans reparent to it and `waitpid` works.
//!
//! util-linux looks for helpers only in /sbin, /sbin/fs.d and /sbin/fs (PATH does
//! not count), so the fstab test installs `mount.lhfs` and `mount.fuse.lhfs` into
//! /sbin with `lhfs install-helpers` and restores whatever was there afterwards.

mod common;

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::fuse::skip;
use common::{bin, stderr};

/// Whether FUSE mounting can be tested here; otherwise skip (or fail when required).
fn fuse_ready(test: &str) -> bool {
    if !Path::new("/dev/fuse").exists() {
        return skip::<()>(test, "/dev/fuse is missing").is_some();
    }
    // SAFETY: geteuid has no failure mode.
    if unsafe { libc::geteuid() } != 0 {
        return skip::<()>(test, "mounting needs root").is_some();
    }
    true
}

/// Makes this process the reaper of orphaned descendants (the daemons).
fn become_subreaper() {
    // SAFETY: prctl with an integer argument.
    assert_eq!(unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1) }, 0);
}

/// Whether `mnt` is listed in /proc/mounts, with its type.
fn mount_type(mnt: &Path) -> Option<String> {
    let mounts = fs::read_to_string("/proc/mounts").unwrap();
    let want = mnt.display().to_string();
    mounts.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(' ').collect();
        (fields.get(1) == Some(&want.as_str())).then(|| fields[2].to_owned())
    })
}

/// The daemon's pid, asked from the pool.
fn daemon_pid(mnt: &Path) -> i32 {
    getfattr(mnt, "pid").parse().unwrap()
}

fn getfattr(mnt: &Path, key: &str) -> String {
    let out = Command::new("getfattr")
        .args(["--only-values", "-n", &format!("user.mergerfs.{key}")])
        .arg(mnt.join(".mergerfs"))
        .output()
        .expect("getfattr (Debian package attr)");
    assert!(out.status.success(), "getfattr {key}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Unmounts a daemon's pool with umount(8) and checks that the daemon then exits 0.
fn umount_and_reap(mnt: &Path, pid: i32) {
    let out = Command::new("umount").arg(mnt).output().unwrap();
    assert!(out.status.success(), "umount: {}", stderr(&out));
    assert_eq!(wait_exit(pid), 0);
}

/// Waits for the daemon `pid` (reparented to this process) and returns its exit
/// code.
fn wait_exit(pid: i32) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut status = 0;
        // SAFETY: waits for one specific process; `status` receives its status.
        let rc = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if rc == pid {
            assert!(
                libc::WIFEXITED(status),
                "daemon {pid} ended by a signal: {status:#x}"
            );
            return libc::WEXITSTATUS(status);
        }
        assert!(
            rc == 0,
            "waitpid {pid}: {}",
            std::io::Error::last_os_error()
        );
        assert!(
            Instant::now() < deadline,
            "daemon {pid} still running after 10 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Unmounts lazily on drop, so a failing test leaves no mount behind.
struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        while mount_type(&self.0).is_some() {
            if !Command::new("umount")
                .arg("-l")
                .arg(&self.0)
                .status()
                .is_ok_and(|s| s.success())
            {
                break;
            }
        }
    }
}

/// Runs `lhfs` (without `-f`) to completion.
fn lhfs(args: &[&str]) -> Output {
    Command::new(bin("lhfs"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run lhfs")
}

/// `mount.lhfs` and `mount.fuse.lhfs` in /sbin for the test's duration; whatever
/// was there before comes back on drop.
struct Helpers {
    saved: Vec<(PathBuf, Option<PathBuf>)>,
}

impl Helpers {
    fn install() -> Helpers {
        let mut saved = Vec::new();
        for name in ["mount.lhfs", "mount.fuse.lhfs"] {
            let link = Path::new("/sbin").join(name);
            let old = match fs::symlink_metadata(&link) {
                Ok(meta) => {
                    assert!(
                        meta.file_type().is_symlink(),
                        "{} exists and is not a link; not touching it",
                        link.display()
                    );
                    Some(fs::read_link(&link).unwrap())
                }
                Err(_) => None,
            };
            saved.push((link, old));
        }
        let out = lhfs(&["install-helpers", "--prefix", "/sbin"]);
        assert!(out.status.success(), "install-helpers: {}", stderr(&out));
        Helpers { saved }
    }
}

impl Drop for Helpers {
    fn drop(&mut self) {
        for (link, old) in &self.saved {
            let _ = fs::remove_file(link);
            if let Some(target) = old {
                let _ = std::os::unix::fs::symlink(target, link);
            }
        }
    }
}

#[test]
fn fuse_daemon_fstab_mount_and_umount() {
    let test = "fuse_daemon_fstab_mount_and_umount";
    if !fuse_ready(test) {
        return;
    }
    become_subreaper();
    let root = tempfile::tempdir().unwrap();
    let root_path = root.path().canonicalize().unwrap();
    for disk in ["disk1", "disk2"] {
        fs::create_dir(root_path.join(disk)).unwrap();
    }
    fs::write(root_path.join("disk2/hello"), b"from disk2").unwrap();
    let (pool, pool2) = (root_path.join("pool"), root_path.join("pool2"));
    fs::create_dir(&pool).unwrap();
    fs::create_dir(&pool2).unwrap();
    let fstab = root_path.join("fstab");
    let mut text = fs::File::create(&fstab).unwrap();
    writeln!(
        text,
        "{}/disk*  {}  fuse.lhfs  allow_other,category.create=mfs,minfreespace=10M,noauto,nofail,_netdev,x-systemd.requires=/,defaults  0 0",
        root_path.display(),
        pool.display()
    )
    .unwrap();
    writeln!(
        text,
        "{0}/disk1:{0}/disk2  {1}  lhfs  rw,category.create=lfs  0 0",
        root_path.display(),
        pool2.display()
    )
    .unwrap();
    drop(text);
    let _helpers = Helpers::install();

    // `mount -T FILE MOUNTPOINT` as at boot, through /sbin/mount.fuse.lhfs.
    let out = Command::new("mount")
        .arg("-T")
        .arg(&fstab)
        .arg(&pool)
        .output()
        .unwrap();
    let _unmount = Unmount(pool.clone());
    assert!(out.status.success(), "mount: {}", stderr(&out));
    assert_eq!(mount_type(&pool).as_deref(), Some("fuse.lhfs"));
    // The pool answers as soon as mount returns.
    assert_eq!(fs::read(pool.join("hello")).unwrap(), b"from disk2");
    assert_eq!(getfattr(&pool, "category.create"), "mfs");
    assert_eq!(getfattr(&pool, "minfreespace"), (10u64 << 20).to_string());
    assert_eq!(
        getfattr(&pool, "srcmounts"),
        format!("{0}/disk1:{0}/disk2", root_path.display())
    );

    // Type `lhfs` goes through /sbin/mount.lhfs; `mount -a` mounts the entries
    // without `noauto`.
    let out = Command::new("mount")
        .arg("-a")
        .arg("-T")
        .arg(&fstab)
        .output()
        .unwrap();
    let _unmount2 = Unmount(pool2.clone());
    assert!(out.status.success(), "mount -a: {}", stderr(&out));
    assert_eq!(mount_type(&pool2).as_deref(), Some("fuse.lhfs"));
    assert_eq!(getfattr(&pool2, "category.create"), "lfs");

    // An external umount ends each daemon cleanly.
    for mnt in [&pool, &pool2] {
        let pid = daemon_pid(mnt);
        umount_and_reap(mnt, pid);
        assert_eq!(mount_type(mnt), None);
    }
}

#[test]
fn fuse_daemon_returns_once_the_pool_answers() {
    let test = "fuse_daemon_returns_once_the_pool_answers";
    if !fuse_ready(test) {
        return;
    }
    become_subreaper();
    let (a, mnt) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    fs::write(a.path().join("there"), b"yes").unwrap();
    let before = fs::metadata(mnt.path()).unwrap().dev();
    let (branch, target) = (a.path().to_str().unwrap(), mnt.path().to_str().unwrap());
    let out = lhfs(&[
        branch,
        target,
        "-o",
        "allow_other",
        "-o",
        "cache.files=partial",
    ]);
    let _unmount = Unmount(mnt.path().to_path_buf());
    assert!(out.status.success(), "lhfs: {}", stderr(&out));
    // No waiting: the mount is there and answers when lhfs returns.
    assert_ne!(fs::metadata(mnt.path()).unwrap().dev(), before);
    assert_eq!(fs::read(mnt.path().join("there")).unwrap(), b"yes");
    assert_eq!(getfattr(mnt.path(), "cache.files"), "partial");
    let pid = daemon_pid(mnt.path());
    // Every thread runs at mergerfs's default scheduling-priority.
    let tasks: Vec<(String, i64)> = fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .map(|task| {
            let stat = fs::read_to_string(task.unwrap().path().join("stat")).unwrap();
            // Fields after the parenthesised name; the nice value is field 19.
            let rest = &stat[stat.rfind(')').unwrap() + 2..];
            (
                stat.clone(),
                rest.split(' ').nth(16).unwrap().parse().unwrap(),
            )
        })
        .collect();
    assert!(tasks.len() >= 2, "{tasks:?}");
    assert!(tasks.iter().all(|(_, nice)| *nice == -10), "{tasks:?}");
    assert_eq!(getfattr(mnt.path(), "scheduling-priority"), "-10");
    umount_and_reap(mnt.path(), pid);
}

#[test]
fn fuse_daemon_lazy_umount_mountpoint_replaces_a_live_pool() {
    let test = "fuse_daemon_lazy_umount_mountpoint_replaces_a_live_pool";
    if !fuse_ready(test) {
        return;
    }
    become_subreaper();
    let (a, b, mnt) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    fs::write(a.path().join("f"), b"old pool").unwrap();
    fs::write(b.path().join("f"), b"new pool").unwrap();
    let target = mnt.path().to_str().unwrap();
    let _unmount = Unmount(mnt.path().to_path_buf());
    let out = lhfs(&[a.path().to_str().unwrap(), target, "-o", "allow_other"]);
    assert!(out.status.success(), "lhfs: {}", stderr(&out));
    let old = daemon_pid(mnt.path());
    let mut held = File::open(mnt.path().join("f")).unwrap();

    let options = "allow_other,lazy_umount_mountpoint=true";
    let out = lhfs(&[b.path().to_str().unwrap(), target, "-o", options]);
    assert!(out.status.success(), "lhfs: {}", stderr(&out));
    let new = daemon_pid(mnt.path());
    assert_ne!(new, old);
    assert_eq!(fs::read(mnt.path().join("f")).unwrap(), b"new pool");
    assert_eq!(getfattr(mnt.path(), "lazy-umount-mountpoint"), "true");
    // One mount at the mountpoint, not the new pool stacked on the old one.
    let mounts = fs::read_to_string("/proc/mounts").unwrap();
    let at_target = mounts
        .lines()
        .filter(|l| l.split(' ').nth(1) == Some(target))
        .count();
    assert_eq!(at_target, 1, "{mounts}");
    // The open file is still served by the old pool, whose daemon exits once it
    // is closed.
    let mut text = String::new();
    held.read_to_string(&mut text).unwrap();
    assert_eq!(text, "old pool");
    drop(held);
    assert_eq!(wait_exit(old), 0);
    umount_and_reap(mnt.path(), new);
}

/// The CPUs a task may run on, as its status lists them ("0-1", "3", ...), expanded.
fn cpus_allowed(status: &str) -> Vec<usize> {
    let list = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .unwrap()
        .trim();
    let mut cpus = Vec::new();
    for part in list.split(',') {
        match part.split_once('-') {
            Some((a, b)) => cpus.extend(a.parse::<usize>().unwrap()..=b.parse().unwrap()),
            None => cpus.push(part.parse().unwrap()),
        }
    }
    cpus
}

/// The CPU lists of the daemon's FUSE threads.
fn fuse_thread_cpus(pid: i32) -> Vec<Vec<usize>> {
    fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|task| {
            let dir = task.unwrap().path();
            let comm = fs::read_to_string(dir.join("comm")).unwrap();
            comm.starts_with("fuser-")
                .then(|| cpus_allowed(&fs::read_to_string(dir.join("status")).unwrap()))
        })
        .collect()
}

#[test]
fn fuse_daemon_pins_its_threads_as_pin_threads_says() {
    let test = "fuse_daemon_pins_its_threads_as_pin_threads_says";
    if !fuse_ready(test) {
        return;
    }
    become_subreaper();
    let ours = cpus_allowed(&fs::read_to_string("/proc/self/status").unwrap());
    // Spreading needs two CPUs to show.
    let modes: &[(&str, &str)] = if ours.len() >= 2 {
        &[("r1l", "R1L"), ("RPSL", "RPSL")]
    } else {
        &[("r1l", "R1L")]
    };
    for &(mode, shown) in modes {
        let (a, mnt) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        for i in 0..20 {
            fs::write(a.path().join(format!("f{i}")), b"x").unwrap();
        }
        let (branch, target) = (a.path().to_str().unwrap(), mnt.path().to_str().unwrap());
        let options = format!("allow_other,threads=2,pin-threads={mode}");
        let out = lhfs(&[branch, target, "-o", &options]);
        let _unmount = Unmount(mnt.path().to_path_buf());
        assert!(out.status.success(), "lhfs: {}", stderr(&out));
        assert_eq!(getfattr(mnt.path(), "pin-threads"), shown);
        // Requests for both threads: each takes its CPUs on its first one.
        for _ in 0..3 {
            for i in 0..20 {
                fs::metadata(mnt.path().join(format!("f{i}"))).unwrap();
            }
            std::thread::sleep(Duration::from_millis(1100));
        }
        let pid = daemon_pid(mnt.path());
        let threads = fuse_thread_cpus(pid);
        assert_eq!(threads.len(), 2, "{threads:?}");
        if mode == "r1l" {
            // Every thread on the first CPU the daemon was started with.
            assert!(
                threads.iter().all(|t| *t == [ours[0]]),
                "{threads:?} of {ours:?}"
            );
        } else {
            // One CPU each, in turn; a thread that served nothing yet keeps them all.
            let pinned: Vec<&Vec<usize>> = threads.iter().filter(|t| **t != ours).collect();
            assert!(!pinned.is_empty(), "{threads:?}");
            assert!(pinned.iter().all(|t| t.len() == 1), "{threads:?}");
            if pinned.len() == 2 {
                assert_ne!(pinned[0], pinned[1], "{threads:?}");
            }
        }
        umount_and_reap(mnt.path(), pid);
    }
    // A value that is no strategy stops the mount, naming the option.
    let (a, mnt) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (branch, target) = (a.path().to_str().unwrap(), mnt.path().to_str().unwrap());
    let out = lhfs(&[branch, target, "-o", "pin-threads=R9"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("pin-threads") && err.contains("R1L"), "{err}");
    assert_eq!(mount_type(mnt.path()), None);
}

#[test]
fn fuse_daemon_refusals_leave_no_mount() {
    let test = "fuse_daemon_refusals_leave_no_mount";
    if !fuse_ready(test) {
        return;
    }
    let (a, mnt) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (branch, target) = (a.path().to_str().unwrap(), mnt.path().to_str().unwrap());
    let missing = a.path().join("no-such-disk");
    let missing_list = format!("{branch}:{}", missing.display());
    for (args, needle) in [
        (
            vec![branch, target, "-o", "category.create=nope"],
            "category.create",
        ),
        (vec![branch, target, "-o", "bogus-option"], "bogus-option"),
        (vec![missing_list.as_str(), target], "no-such-disk"),
    ] {
        let out = lhfs(&args);
        let _unmount = Unmount(mnt.path().to_path_buf());
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(stderr(&out).contains(needle), "{args:?}: {}", stderr(&out));
        assert_eq!(mount_type(mnt.path()), None, "{args:?} left a mount");
    }
}

/// The options field of `mnt`'s /proc/mounts line.
fn mount_options(mnt: &Path) -> String {
    let mounts = fs::read_to_string("/proc/mounts").unwrap();
    let want = mnt.display().to_string();
    mounts
        .lines()
        .find_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            (fields.get(1) == Some(&want.as_str())).then(|| fields[3].to_owned())
        })
        .unwrap_or_default()
}

#[test]
fn fuse_daemon_mount_words_ro_and_noexec_apply() {
    let test = "fuse_daemon_mount_words_ro_and_noexec_apply";
    if !fuse_ready(test) {
        return;
    }
    become_subreaper();
    let (a, mnt) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    fs::write(a.path().join("s.sh"), "#!/bin/sh\necho ran\n").unwrap();
    fs::set_permissions(
        a.path().join("s.sh"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let (branch, target) = (a.path().to_str().unwrap(), mnt.path().to_str().unwrap());
    for (words, flag) in [("ro", "ro"), ("noexec", "noexec")] {
        let out = lhfs(&[branch, target, "-o", words]);
        let _unmount = Unmount(mnt.path().to_path_buf());
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let pid = daemon_pid(mnt.path());
        let options = mount_options(mnt.path());
        assert!(options.split(',').any(|o| o == flag), "{words}: {options}");
        if words == "ro" {
            let err = fs::write(mnt.path().join("new"), b"x").unwrap_err();
            assert_eq!(err.raw_os_error(), Some(libc::EROFS));
            assert!(!a.path().join("new").exists());
        } else {
            let err = Command::new(mnt.path().join("s.sh")).output().unwrap_err();
            assert_eq!(err.raw_os_error(), Some(libc::EACCES));
            // Without it, the same script runs.
            assert_eq!(fs::read(mnt.path().join("s.sh")).unwrap().len(), 19);
        }
        umount_and_reap(mnt.path(), pid);
    }
}

#[test]
fn fuse_daemon_fsname_and_mountpoint_options() {
    let test = "fuse_daemon_fsname_and_mountpoint_options";
    if !fuse_ready(test) {
        return;
    }
    become_subreaper();
    let (a, mnt) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let branch = a.path().to_str().unwrap();
    // The mountpoint from -o mountpoint=, the branches alone on the command line.
    let option = format!("mountpoint={}", mnt.path().display());
    let out = lhfs(&[branch, "-o", &option]);
    let _unmount = Unmount(mnt.path().to_path_buf());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let pid = daemon_pid(mnt.path());
    // fsname reads back what the mount shows as its source.
    let mounts = fs::read_to_string("/proc/mounts").unwrap();
    let source = mounts
        .lines()
        .find(|l| l.split(' ').nth(1) == Some(mnt.path().to_str().unwrap()))
        .and_then(|l| l.split(' ').next())
        .unwrap()
        .to_owned();
    assert!(!source.is_empty());
    assert_eq!(getfattr(mnt.path(), "fsname"), source);
    umount_and_reap(mnt.path(), pid);

    // A config file naming both: the mountpoint may still be given, or left out.
    let ini = a.path().join("pool.ini");
    fs::write(
        &ini,
        format!("branches={branch}\nmountpoint={}\n", mnt.path().display()),
    )
    .unwrap();
    let config = format!("config={}", ini.display());
    for args in [
        vec!["-o", config.as_str(), mnt.path().to_str().unwrap()],
        vec!["-o", config.as_str()],
    ] {
        let out = lhfs(&args);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
        let pid = daemon_pid(mnt.path());
        umount_and_reap(mnt.path(), pid);
    }
    // A config naming only the branches, another mountpoint named by -o: the one path
    // given is the branches, and the pool goes where -o says.
    let other = tempfile::tempdir().unwrap();
    fs::write(other.path().join("from-other"), b"x").unwrap();
    fs::write(&ini, format!("branches={branch}\n")).unwrap();
    let options = format!(
        "config={},mountpoint={}",
        ini.display(),
        mnt.path().display()
    );
    let out = lhfs(&[other.path().to_str().unwrap(), "-o", &options]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(mnt.path().join("from-other").exists());
    assert_eq!(mount_type(other.path()), None, "mounted over the branch");
    let pid = daemon_pid(mnt.path());
    umount_and_reap(mnt.path(), pid);
}

#[test]
fn fuse_daemon_a_dead_pool_is_named_and_lazy_umount_replaces_it() {
    let test = "fuse_daemon_a_dead_pool_is_named_and_lazy_umount_replaces_it";
    if !fuse_ready(test) {
        return;
    }
    become_subreaper();
    let (a, mnt) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    fs::write(a.path().join("f"), b"here").unwrap();
    let (branch, target) = (a.path().to_str().unwrap(), mnt.path().to_str().unwrap());
    let out = lhfs(&[branch, target]);
    let _unmount = Unmount(mnt.path().to_path_buf());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let pid = daemon_pid(mnt.path());
    // SAFETY: kill(2) on the daemon this test started.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let mut status = 0;
    // SAFETY: reaps the killed daemon, reparented to this process.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    let out = lhfs(&[branch, target]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("Transport endpoint is not connected: a pool mounted there has died")
            && stderr(&out).contains("lazy-umount-mountpoint=true"),
        "{}",
        stderr(&out)
    );
    let out = lhfs(&[branch, target, "-o", "lazy-umount-mountpoint=true"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(fs::read(mnt.path().join("f")).unwrap(), b"here");
    let pid = daemon_pid(mnt.path());
    umount_and_reap(mnt.path(), pid);
}

#[test]
fn fuse_daemon_sigterm_with_a_file_open_for_writing() {
    let test = "fuse_daemon_sigterm_with_a_file_open_for_writing";
    if !fuse_ready(test) {
        return;
    }
    become_subreaper();
    let (a, mnt) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (branch, target) = (a.path().to_str().unwrap(), mnt.path().to_str().unwrap());
    let out = lhfs(&[branch, target]);
    let _unmount = Unmount(mnt.path().to_path_buf());
    assert!(out.status.success(), "lhfs: {}", stderr(&out));
    let pid = daemon_pid(mnt.path());

    let mut file = fs::File::create(mnt.path().join("open")).unwrap();
    file.write_all(b"before the signal").unwrap();
    // SAFETY: a signal to the daemon this test started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    // The mount leaves the namespace at once; the open file keeps working.
    let deadline = Instant::now() + Duration::from_secs(5);
    while mount_type(mnt.path()).is_some() {
        assert!(Instant::now() < deadline, "still mounted after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        fs::read(a.path().join("open")).unwrap(),
        b"before the signal"
    );
    file.write_all(b", and after").unwrap();
    drop(file);
    assert_eq!(wait_exit(pid), 0);
    assert_eq!(
        fs::read(a.path().join("open")).unwrap(),
        b"before the signal, and after"
    );
    // Nothing stale: the mountpoint is a plain directory again.
    assert!(fs::read_dir(mnt.path()).is_ok());
}

#[test]
fn fuse_daemon_waits_for_branches_to_be_mounted() {
    let test = "fuse_daemon_waits_for_branches_to_be_mounted";
    if !fuse_ready(test) {
        return;
    }
    become_subreaper();
    let (root, mnt) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let disk = root.path().join("disk");
    fs::create_dir(&disk).unwrap();
    let (branch, target) = (disk.to_str().unwrap(), mnt.path().to_str().unwrap());

    // The disk's directory alone is not mounted: give up with an error.
    let started = Instant::now();
    let out = lhfs(&[
        branch,
        target,
        "-o",
        "branches-mount-timeout=1,branches-mount-timeout-fail",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("not mounted after 1 s"),
        "{}",
        stderr(&out)
    );
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert_eq!(mount_type(mnt.path()), None);

    // A disk mounted during the wait: lhfs mounts the pool once it is there.
    let child = Command::new(bin("lhfs"))
        .args([
            branch,
            target,
            "-o",
            "branches-mount-timeout=20,branches-mount-timeout-fail",
        ])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _unmount = Unmount(mnt.path().to_path_buf());
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(mount_type(mnt.path()), None, "mounted before its branch");
    let _disk_unmount = mount_disk(test, &disk);
    fs::write(disk.join("on-the-disk"), b"1").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "lhfs: {}", stderr(&out));
    assert!(mnt.path().join("on-the-disk").exists());
    let pid = daemon_pid(mnt.path());
    umount_and_reap(mnt.path(), pid);
}

/// Mounts a 4 MiB tmpfs on `disk` (a disk showing up), unmounted when dropped.
fn mount_disk(test: &str, disk: &Path) -> Unmount {
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
        .arg(disk)
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "{test}: cannot mount a tmpfs as root");
    Unmount(disk.to_path_buf())
}

/// Polls `done` every 50 ms for up to `limit`; whether it came true.
fn within(limit: Duration, done: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    done()
}

#[test]
fn fuse_daemon_follows_a_disk_mounted_on_a_branch_folder_later() {
    let test = "fuse_daemon_follows_a_disk_mounted_on_a_branch_folder_later";
    if !fuse_ready(test) {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let (disk, other, mnt) = (
        root.path().join("disk"),
        root.path().join("other"),
        root.path().join("mnt"),
    );
    for dir in [&disk, &other, &mnt] {
        fs::create_dir(dir).unwrap();
    }
    // What the folder holds before its disk is mounted on it.
    fs::write(disk.join("below-the-disk"), b"0").unwrap();
    let branches = format!("{}:{}", disk.display(), other.display());
    let options = "minfreespace=0,category.create=ff";
    let Some(pool) = common::fuse::Pool::mount(test, &branches, &mnt, options) else {
        return;
    };
    assert!(pool.path("below-the-disk").exists());
    let _disk_unmount = mount_disk(test, &disk);
    fs::write(disk.join("on-the-disk"), b"1").unwrap();
    // The pool follows within a few seconds, as mergerfs (which goes by path) does.
    let shows = |name: &str| pool.path(name).exists();
    assert!(
        within(Duration::from_secs(5), || shows("on-the-disk")
            && !shows("below-the-disk")),
        "the pool still shows the folder below the disk"
    );
    // What is created through the pool now lands on the disk.
    fs::write(pool.path("made"), b"2").unwrap();
    assert_eq!(fs::read(disk.join("made")).unwrap(), b"2");
    // The disk unmounted lazily: the pool lets it go and shows the folder again.
    assert!(Command::new("umount")
        .arg("-l")
        .arg(&disk)
        .status()
        .is_ok_and(|s| s.success()));
    assert!(
        within(Duration::from_secs(5), || shows("below-the-disk")
            && !shows("on-the-disk")),
        "the pool still shows the unmounted disk"
    );
    drop(pool);
}

#[test]
fn systemd_units_verify() {
    let Ok(out) = Command::new("systemd-analyze").arg("--version").output() else {
        eprintln!("\n*** SKIPPED: systemd_units_verify: systemd-analyze is not installed ***\n");
        return;
    };
    assert!(out.status.success());
    // verify wants each ExecStart program to exist: point them at the built ones.
    let units = Path::new(env!("CARGO_MANIFEST_DIR")).join("../contrib/systemd");
    let dir = tempfile::tempdir().unwrap();
    let mut names = Vec::new();
    for entry in fs::read_dir(&units).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let text = fs::read_to_string(&path)
            .unwrap()
            .replace("/usr/local/bin/lhfs", bin("lhfs").to_str().unwrap())
            .replace("/usr/local/bin/lhparity", bin("lhparity").to_str().unwrap());
        fs::write(dir.path().join(&name), text).unwrap();
        names.push(name);
    }
    names.sort();
    for unit in [
        "lhfs-pool.service",
        "lhparity-scrub.service",
        "lhparity-scrub.timer",
        "lhparity-sync.service",
        "lhparity-sync.timer",
    ] {
        assert!(
            names.iter().any(|n| n == unit),
            "{unit} missing from contrib/systemd"
        );
    }
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .args(&names)
        .current_dir(dir.path())
        .output()
        .unwrap();
    let messages = stderr(&out);
    // Warnings about units of the host system are not ours to fix.
    let ours: Vec<&str> = messages
        .lines()
        .filter(|line| names.iter().any(|n| line.contains(n.as_str())))
        .collect();
    assert!(
        out.status.success() && ours.is_empty(),
        "systemd-analyze verify:\n{messages}"
    );
}

#[test]
fn fuse_daemon_tells_systemd_when_the_pool_answers() {
    let test = "fuse_daemon_tells_systemd_when_the_pool_answers";
    if !fuse_ready(test) {
        return;
    }
    let (a, mnt, sock) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    fs::write(a.path().join("there"), b"yes").unwrap();
    // The socket systemd listens on for a Type=notify service.
    let notify = sock.path().join("notify");
    let listener = std::os::unix::net::UnixDatagram::bind(&notify).unwrap();
    listener
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut child = Command::new(bin("lhfs"))
        .args([
            "-f",
            a.path().to_str().unwrap(),
            mnt.path().to_str().unwrap(),
        ])
        .env("NOTIFY_SOCKET", &notify)
        .stdin(Stdio::null())
        .spawn()
        .expect("start lhfs -f");
    let _unmount = Unmount(mnt.path().to_path_buf());
    let mut buf = [0u8; 512];
    let received = listener.recv(&mut buf);
    let message = received
        .map(|n| String::from_utf8_lossy(&buf[..n]).into_owned())
        .unwrap_or_else(|e| {
            let _ = child.kill();
            panic!("no readiness message: {e}");
        });
    let status = format!("STATUS=pool at {} answers\n", mnt.path().display());
    assert_eq!(message, format!("READY=1\n{status}"));
    // Ready means ready: the pool serves the branch right away.
    assert_eq!(fs::read(mnt.path().join("there")).unwrap(), b"yes");
    assert!(Command::new("umount")
        .arg(mnt.path())
        .status()
        .unwrap()
        .success());
    assert!(child.wait().unwrap().success());
}

#[test]
fn fuse_daemon_sets_the_pool_readahead() {
    let test = "fuse_daemon_sets_the_pool_readahead";
    if !fuse_ready(test) {
        return;
    }
    become_subreaper();
    // A tmpfs branch has no block device: only the pool's read-ahead is set.
    let Some(branch) = common::fuse::Tmpfs::new(test, "8m") else {
        return;
    };
    let mnt = tempfile::tempdir().unwrap();
    let (b, target) = (branch.path.to_str().unwrap(), mnt.path().to_str().unwrap());
    let out = lhfs(&[b, target, "-o", "allow_other,readahead=1024"]);
    let _unmount = Unmount(mnt.path().to_path_buf());
    assert!(out.status.success(), "lhfs: {}", stderr(&out));
    assert_eq!(getfattr(mnt.path(), "readahead"), "1024");
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let dev = mountinfo
        .lines()
        .rev()
        .map(|l| l.split(' ').collect::<Vec<_>>())
        .find(|f| f.len() > 4 && Path::new(f[4]) == mnt.path())
        .map(|f| f[2].to_owned())
        .expect("the pool in mountinfo");
    let setting = format!("/sys/class/bdi/{dev}/read_ahead_kb");
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut value = String::new();
    while Instant::now() < deadline {
        value = fs::read_to_string(&setting).unwrap().trim().to_owned();
        if value == "1024" {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(value, "1024", "{setting}");
    umount_and_reap(mnt.path(), daemon_pid(mnt.path()));
}

#[test]
fn fuse_daemon_every_descriptor_of_a_moved_file_follows_it() {
    let test = "fuse_daemon_every_descriptor_of_a_moved_file_follows_it";
    if !fuse_ready(test) {
        return;
    }
    let (Some(small), Some(large)) = (
        common::fuse::Tmpfs::new(test, "2m"),
        common::fuse::Tmpfs::new(test, "8m"),
    ) else {
        return;
    };
    let mnt = tempfile::tempdir().unwrap();
    let branches = format!("{}:{}", small.path.display(), large.path.display());
    let options = "minfreespace=0,category.create=ff,moveonenospc=true,passthrough.io=off";
    let Some(pool) = common::fuse::Pool::mount(test, &branches, mnt.path(), options) else {
        return;
    };
    let data: Vec<u8> = (0..3u32 << 20).map(|i| (i % 251) as u8).collect();
    let mut writer = File::create(pool.path("big")).unwrap();
    let other = OpenOptions::new()
        .read(true)
        .write(true)
        .open(pool.path("big"))
        .unwrap();
    let reader = File::open(pool.path("big")).unwrap();
    // Past the 2 MiB branch: the file moves to the large one.
    writer.write_all(&data).unwrap();
    assert!(large.path.join("big").exists() && !small.path.join("big").exists());
    // The other descriptors see and change the file that moved.
    let mut tail = vec![0u8; 4];
    reader.read_exact_at(&mut tail, (3 << 20) - 4).unwrap();
    assert_eq!(tail, data[(3 << 20) - 4..]);
    other.write_all_at(b"ZZZZ", 0).unwrap();
    other.set_len(4 << 20).unwrap();
    drop((writer, other, reader));
    let mut want = data.clone();
    want[..4].copy_from_slice(b"ZZZZ");
    want.resize(4 << 20, 0);
    assert!(fs::read(pool.path("big")).unwrap() == want);
}

#[test]
fn fuse_daemon_a_file_moved_after_a_disk_went_lands_where_the_pool_now_is() {
    let test = "fuse_daemon_a_file_moved_after_a_disk_went_lands_where_the_pool_now_is";
    if !fuse_ready(test) {
        return;
    }
    let Some(small) = common::fuse::Tmpfs::new(test, "2m") else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let (disk, mnt) = (root.path().join("disk"), root.path().join("mnt"));
    fs::create_dir(&disk).unwrap();
    fs::create_dir(&mnt).unwrap();
    fs::write(disk.join("bare-folder"), b"0").unwrap();
    let mounted = mount_disk(test, &disk);
    let branches = format!("{}:{}", small.path.display(), disk.display());
    let options = "minfreespace=0,category.create=ff,moveonenospc=true";
    let Some(pool) = common::fuse::Pool::mount(test, &branches, &mnt, options) else {
        return;
    };
    let data: Vec<u8> = (0..3u32 << 20).map(|i| (i % 251) as u8).collect();
    let mut file = File::create(pool.path("big")).unwrap();
    file.write_all(&data[..1 << 20]).unwrap();
    // The second branch's disk goes (lazily) while the file is open on the first.
    assert!(Command::new("umount")
        .arg("-l")
        .arg(&disk)
        .status()
        .is_ok_and(|s| s.success()));
    drop(mounted);
    assert!(
        within(Duration::from_secs(5), || pool.path("bare-folder").exists()),
        "the pool did not follow the unmount"
    );
    // Past the 2 MiB branch: the file moves on, to the folder the pool now uses.
    file.write_all(&data[1 << 20..]).unwrap();
    drop(file);
    assert_eq!(fs::read(pool.path("big")).unwrap(), data);
    assert_eq!(fs::read(disk.join("big")).unwrap(), data);
}

#[test]
fn fuse_daemon_sighup_is_ignored_detached_and_ends_a_foreground_pool() {
    let test = "fuse_daemon_sighup_is_ignored_detached_and_ends_a_foreground_pool";
    if !fuse_ready(test) {
        return;
    }
    become_subreaper();
    let (a, mnt) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    fs::write(a.path().join("f"), b"here").unwrap();
    let (branch, target) = (a.path().to_str().unwrap(), mnt.path().to_str().unwrap());

    // Detached: SIGHUP changes nothing, and a low soft limit of open files is raised.
    let mut cmd = Command::new(bin("lhfs"));
    cmd.args([branch, target]).stdin(Stdio::null());
    // SAFETY: only getrlimit and setrlimit, async-signal-safe, run in the child.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            let mut limit = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
            limit.rlim_cur = limit.rlim_max.min(256);
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
            Ok(())
        });
    }
    let out = cmd.output().unwrap();
    let _unmount = Unmount(mnt.path().to_path_buf());
    assert!(out.status.success(), "lhfs: {}", stderr(&out));
    let pid = daemon_pid(mnt.path());
    let limits = fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let open_files: Vec<&str> = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(
        open_files[3], open_files[4],
        "soft limit not raised: {limits}"
    );
    assert_ne!(open_files[3], "256", "{limits}");
    // SAFETY: a signal to the daemon this test started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(fs::read(mnt.path().join("f")).unwrap(), b"here");
    umount_and_reap(mnt.path(), pid);

    // In the foreground: SIGHUP ends the pool cleanly, as SIGTERM does.
    let mut child = Command::new(bin("lhfs"))
        .args([branch, target, "-f"])
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while mount_type(mnt.path()).is_none() {
        assert!(Instant::now() < deadline, "not mounted");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(fs::read(mnt.path().join("f")).unwrap(), b"here");
    // SAFETY: a signal to the child this test started.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGHUP) }, 0);
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{status:?}");
    assert!(mount_type(mnt.path()).is_none(), "left mounted");
    assert!(fs::read_dir(mnt.path()).is_ok(), "a dead mount is left");
}
