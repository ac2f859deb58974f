//! Running in the background: forking with a readiness pipe, leaving the terminal
//! and session, and logging to syslog once detached.
//!
//! The starting process forks after the mount is made and waits on a pipe. The child
//! writes one byte when the pool answers, or an error message; the parent then exits
//! with the outcome, so `mount` and fstab ordering see a pool that works or an error.
//!
//! This module knows nothing of FUSE or branches; the mount code decides when the
//! pool is ready.

use std::ffi::CString;
use std::io::{self, Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// Whether messages go to syslog (set once the process has detached).
static SYSLOG: AtomicBool = AtomicBool::new(false);

/// The pipe byte that says the pool is ready; anything else starts an error message.
const READY: u8 = 0;
const FAILED: u8 = 1;

/// Reports a condition the operator should know about: on standard error in the
/// foreground, to syslog (ident `lhfs`, facility daemon) once detached.
pub fn log(message: &str) {
    if SYSLOG.load(Ordering::Relaxed) {
        let text = CString::new(message.replace('\0', "")).unwrap_or_default();
        // SAFETY: both strings are NUL-terminated; the format takes exactly one string.
        unsafe { libc::syslog(libc::LOG_NOTICE, c"%s".as_ptr(), text.as_ptr()) };
    } else {
        eprintln!("lhfs: {message}");
    }
}

/// Tells systemd the service is ready (`Type=notify`): sends `READY=1` and a status
/// line to the socket named by `NOTIFY_SOCKET`, a path or an abstract name (`@...`).
/// Returns whether there was a socket to tell; without one this does nothing.
pub fn notify_ready(status: &str) -> io::Result<bool> {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};

    let Some(target) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(false);
    };
    let message = format!("READY=1\nSTATUS={}\n", status.replace('\n', " "));
    let socket = UnixDatagram::unbound()?;
    match target.as_bytes().strip_prefix(b"@") {
        Some(name) => {
            socket.send_to_addr(message.as_bytes(), &SocketAddr::from_abstract_name(name)?)?
        }
        None => socket.send_to(message.as_bytes(), &target)?,
    };
    Ok(true)
}

/// What the waiting parent learned from the child.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The pool answers.
    Ready,
    /// The child gave up with this message.
    Failed(String),
    /// The child ended without a word (it crashed or was killed).
    Vanished,
}

/// The parent's end of the readiness pipe.
#[derive(Debug)]
pub struct Readiness(OwnedFd);

impl Readiness {
    /// Blocks until the child reports.
    pub fn wait(self) -> Outcome {
        let mut pipe = std::fs::File::from(self.0);
        let mut bytes = Vec::new();
        // A read error leaves what arrived so far, which is judged like the rest.
        let _ = pipe.read_to_end(&mut bytes);
        match bytes.split_first() {
            Some((&READY, _)) => Outcome::Ready,
            Some((_, message)) => Outcome::Failed(String::from_utf8_lossy(message).into_owned()),
            None => Outcome::Vanished,
        }
    }
}

/// The child's end of the readiness pipe; the first report wins, later ones are
/// logged only. Clones share the pipe.
#[derive(Debug, Clone)]
pub struct Ready(Arc<Mutex<Option<OwnedFd>>>);

impl Ready {
    fn report(&self, bytes: &[u8]) -> bool {
        let taken = self.0.lock().unwrap_or_else(PoisonError::into_inner).take();
        match taken {
            Some(fd) => {
                // The parent gone is nothing to act on: it has exited already.
                let _ = std::fs::File::from(fd).write_all(bytes);
                true
            }
            None => false,
        }
    }

    /// Tells the parent the pool answers.
    pub fn ok(&self) {
        self.report(&[READY]);
    }

    /// Tells the parent the daemon failed with `message`; logged when the parent was
    /// told already.
    pub fn fail(&self, message: &str) {
        let mut bytes = vec![FAILED];
        bytes.extend_from_slice(message.as_bytes());
        if !self.report(&bytes) {
            log(message);
        }
    }
}

/// Which side of the fork this is.
#[derive(Debug)]
pub enum Forked {
    /// The starting process: wait for the child, then exit.
    Parent(Readiness),
    /// The daemon: detach, serve, and report readiness.
    Child(Ready),
}

/// Forks with a readiness pipe between the two processes. Must be called while the
/// process has a single thread: only the calling thread survives in the child.
pub fn fork() -> io::Result<Forked> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 returns.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded: both descriptors are new and owned by nobody else.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: the caller guarantees a single thread, so the child inherits no lock
    // held by another thread.
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        0 => {
            drop(read);
            Ok(Forked::Child(Ready(Arc::new(Mutex::new(Some(write))))))
        }
        _ => {
            drop(write);
            Ok(Forked::Parent(Readiness(read)))
        }
    }
}

/// Leaves the terminal: a new session, `/` as working directory (so no mount is held
/// busy), standard streams on `/dev/null`, messages to syslog from now on. SIGHUP is
/// ignored, as mergerfs does.
pub fn detach() -> io::Result<()> {
    // SAFETY: setsid and chdir are plain syscalls; the path is a NUL-terminated literal.
    if unsafe { libc::setsid() } < 0 || unsafe { libc::chdir(c"/".as_ptr()) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    for target in 0..3 {
        // SAFETY: dup2 onto the standard descriptors, which this process owns.
        if unsafe { libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&null), target) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    // SAFETY: the ident is a static NUL-terminated literal, as openlog requires (it
    // keeps the pointer); ignoring SIGHUP changes only this process's disposition.
    unsafe {
        libc::openlog(c"lhfs".as_ptr(), libc::LOG_PID, libc::LOG_DAEMON);
        libc::signal(libc::SIGHUP, libc::SIG_IGN);
    }
    SYSLOG.store(true, Ordering::Relaxed);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pipe() -> (Readiness, Ready) {
        let mut fds = [0; 2];
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        (Readiness(r), Ready(Arc::new(Mutex::new(Some(w)))))
    }

    #[test]
    fn first_report_wins() {
        let (readiness, ready) = pipe();
        ready.ok();
        ready.fail("too late");
        assert_eq!(readiness.wait(), Outcome::Ready);

        let (readiness, ready) = pipe();
        ready.clone().fail("cannot serve");
        ready.ok();
        assert_eq!(readiness.wait(), Outcome::Failed("cannot serve".into()));
    }

    #[test]
    fn silence_means_vanished() {
        let (readiness, ready) = pipe();
        drop(ready);
        assert_eq!(readiness.wait(), Outcome::Vanished);
    }
}
