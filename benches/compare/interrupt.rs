//! Ctrl-C handling: the first SIGINT or SIGTERM only raises a flag, so the runner
//! can stop between runs and unwind normally, letting `Drop` unmount and remove the
//! loop disks. Peers running as children get the same SIGINT from the terminal and
//! exit on their own; their failure unwinds the same way.
//!
//! The handler must stay async-signal-safe: it touches nothing but an atomic.

use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{bail, Result};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_signal: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Installs the handler for SIGINT and SIGTERM.
pub fn install() {
    let handler: extern "C" fn(libc::c_int) = on_signal;
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, handler as libc::sighandler_t);
        libc::signal(libc::SIGTERM, handler as libc::sighandler_t);
    }
}

/// Fails once an interrupt has arrived, so callers stop and clean up.
pub fn check() -> Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted; cleaning up");
    }
    Ok(())
}
