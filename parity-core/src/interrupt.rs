//! Stopping `sync` and `scrub` cleanly on SIGINT, SIGTERM or SIGHUP, as SnapRAID
//! does: the pipeline finishes the batch in hand and stops, and the command saves
//! what was done. A second signal, of any of the three, ends the process at once
//! (the first puts all three back to their default action), which the state is safe
//! against too. A signal the caller ignores (`nohup`, a background job) stays
//! ignored.

use std::sync::atomic::{AtomicI32, Ordering};

/// The signal that asked to stop, 0 while none did.
static SIGNAL: AtomicI32 = AtomicI32::new(0);

/// The signals that ask a run to stop.
const STOPPING: [libc::c_int; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

extern "C" fn on_signal(signal: libc::c_int) {
    // The first signal is the one named; the next of any kind ends the process.
    // Only an atomic, sigaction and raise: all async-signal-safe.
    let first = SIGNAL
        .compare_exchange(0, signal, Ordering::Relaxed, Ordering::Relaxed)
        .is_ok();
    for other in STOPPING {
        // SAFETY: a zeroed sigaction with SIG_DFL is valid.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = libc::SIG_DFL;
            libc::sigaction(other, &action, std::ptr::null_mut());
        }
    }
    // Two signals at once, each taken by another thread: the one that came second
    // here ends the process with its default action, once this handler returns
    // (it is blocked until then). raise(3) is async-signal-safe.
    if !first {
        // SAFETY: raise of a signal whose action was just set to the default.
        unsafe { libc::raise(signal) };
    }
}

/// Catches SIGINT, SIGTERM and SIGHUP from now on, each unless it is ignored.
pub fn install() {
    for signal in STOPPING {
        // SAFETY: zeroed sigactions are valid; the handler only stores an atomic and
        // resets the actions.
        unsafe {
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(signal, std::ptr::null(), &mut old) == 0
                && old.sa_sigaction == libc::SIG_IGN
            {
                continue;
            }
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            action.sa_flags = libc::SA_RESTART;
            // The others wait while the handler runs, so that one arriving meanwhile
            // meets the default action it sets, not the handler again.
            libc::sigemptyset(&mut action.sa_mask);
            for other in STOPPING {
                libc::sigaddset(&mut action.sa_mask, other);
            }
            libc::sigaction(signal, &action, std::ptr::null_mut());
        }
    }
}

/// The signal that asked the run to stop, if one did.
pub fn requested() -> Option<i32> {
    match SIGNAL.load(Ordering::Relaxed) {
        0 => None,
        signal => Some(signal),
    }
}

/// A signal's name for messages.
pub fn name(signal: i32) -> String {
    match signal {
        libc::SIGINT => "SIGINT".to_string(),
        libc::SIGTERM => "SIGTERM".to_string(),
        libc::SIGHUP => "SIGHUP".to_string(),
        other => format!("signal {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_are_named() {
        assert_eq!(name(libc::SIGINT), "SIGINT");
        assert_eq!(name(libc::SIGTERM), "SIGTERM");
        assert_eq!(name(99), "signal 99");
    }
}
