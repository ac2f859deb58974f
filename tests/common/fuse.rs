//! Mounting real lhfs pools for the end-to-end tests.
//!
//! [`Pool::mount`] starts `lhfs -f` in the background and waits until the mountpoint
//! shows another device; dropping the pool unmounts it lazily and waits for the
//! daemon. Where FUSE cannot be used (no `/dev/fuse`, not root) the helpers print a
//! loud `SKIPPED:` line and return `None`, unless `LHFS_REQUIRE_FUSE=1` makes that a
//! failure.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{bin, forking};

/// Skips the calling test (returns `None`) or fails it when FUSE is required.
pub fn skip<T>(test: &str, why: &str) -> Option<T> {
    if std::env::var("LHFS_REQUIRE_FUSE").as_deref() == Ok("1") {
        panic!("{test}: FUSE is required (LHFS_REQUIRE_FUSE=1) but {why}");
    }
    eprintln!("\n*** SKIPPED: {test}: {why} ***\n");
    None
}

/// A mounted pool, unmounted on drop.
pub struct Pool {
    /// The mountpoint.
    pub mnt: PathBuf,
    child: Child,
}

impl Pool {
    /// Mounts `branches` at `mnt` with `-o options`; `None` when the test must skip.
    pub fn mount(test: &str, branches: &str, mnt: &Path, options: &str) -> Option<Pool> {
        if !Path::new("/dev/fuse").exists() {
            return skip(test, "/dev/fuse is missing");
        }
        let before = std::fs::metadata(mnt).expect("mountpoint").dev();
        let mut cmd = Command::new(bin("lhfs"));
        cmd.arg(branches).arg(mnt).arg("-f");
        if !options.is_empty() {
            cmd.arg("-o").arg(options);
        }
        let forking = forking();
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start lhfs");
        drop(forking);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if std::fs::metadata(mnt).map(|m| m.dev()).unwrap_or(before) != before {
                return Some(Pool {
                    mnt: mnt.to_path_buf(),
                    child,
                });
            }
            if let Some(status) = child.try_wait().expect("wait lhfs") {
                let out = child.wait_with_output().expect("lhfs output");
                let err = String::from_utf8_lossy(&out.stderr).into_owned();
                if err.contains("needs root") || err.contains("Operation not permitted") {
                    return skip(test, &format!("mounting is not permitted here: {err}"));
                }
                panic!("{test}: lhfs exited with {status} before mounting: {err}");
            }
            assert!(
                Instant::now() < deadline,
                "{test}: lhfs did not mount within 10 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A path inside the pool.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.mnt.join(rel)
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        let forking = forking();
        let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
        drop(forking);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !std::thread::panicking() {
            panic!("lhfs did not exit within 10 s of the unmount");
        }
    }
}

/// A tmpfs of a given size mounted on a fresh directory, unmounted on drop.
pub struct Tmpfs {
    /// Where it is mounted.
    pub path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (`mount -o size=...` syntax); `None` to skip.
    pub fn new(test: &str, size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().expect("tempdir");
        let forking = forking();
        let ok = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(dir.path())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        drop(forking);
        if !ok {
            return skip(test, "cannot mount a tmpfs (not root?)");
        }
        Some(Tmpfs {
            path: dir.path().to_path_buf(),
            _dir: dir,
        })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _forking = forking();
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// "ok" or the errno of a result, for comparing outcomes.
pub fn outcome<T>(result: std::io::Result<T>) -> String {
    match result {
        Ok(_) => "ok".to_owned(),
        Err(e) => format!("errno {}", e.raw_os_error().unwrap_or(-1)),
    }
}

/// The errno of a failed result; panics on success.
pub fn errno<T: std::fmt::Debug>(result: std::io::Result<T>) -> i32 {
    result
        .expect_err("expected an error")
        .raw_os_error()
        .unwrap_or(-1)
}

/// A path as a C string.
pub fn cpath(path: &Path) -> CString {
    CString::new(path.as_os_str().as_bytes()).unwrap()
}

/// getxattr(2): the value or the errno.
pub fn getx(path: &Path, name: &str) -> Result<Vec<u8>, i32> {
    let (p, n) = (cpath(path), CString::new(name).unwrap());
    let mut buf = vec![0u8; 64 * 1024];
    let len = unsafe { libc::getxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if len < 0 {
        return Err(std::io::Error::last_os_error().raw_os_error().unwrap());
    }
    buf.truncate(len as usize);
    Ok(buf)
}

/// setxattr(2): `Ok` or the errno.
pub fn setx(path: &Path, name: &str, value: &(impl AsRef<[u8]> + ?Sized)) -> Result<(), i32> {
    let (p, n, value) = (cpath(path), CString::new(name).unwrap(), value.as_ref());
    let rc = unsafe {
        libc::setxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error().raw_os_error().unwrap());
    }
    Ok(())
}
