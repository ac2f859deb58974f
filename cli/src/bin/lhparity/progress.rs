//! Progress display: a bar with bytes, MB/s and ETA on a terminal, a plain line every
//! few seconds otherwise, nothing with `-q`.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use parity_core::sync::Progress;

pub enum Display {
    Quiet,
    Bar(ProgressBar),
    Lines {
        what: &'static str,
        total: AtomicU64,
        done: AtomicU64,
        started: Mutex<Instant>,
        last: Mutex<Instant>,
    },
}

impl Display {
    pub fn new(what: &'static str, quiet: bool) -> Display {
        if quiet {
            Display::Quiet
        } else if std::io::stderr().is_terminal() {
            let bar = ProgressBar::new(0);
            bar.set_style(
                ProgressStyle::with_template(
                    "{msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            bar.set_message(what);
            Display::Bar(bar)
        } else {
            Display::Lines {
                what,
                total: AtomicU64::new(0),
                done: AtomicU64::new(0),
                started: Mutex::new(Instant::now()),
                last: Mutex::new(Instant::now()),
            }
        }
    }
}

impl Progress for Display {
    fn start(&self, total_bytes: u64) {
        match self {
            Display::Quiet => {}
            Display::Bar(bar) => {
                bar.set_position(0);
                bar.set_length(total_bytes);
                bar.reset_eta();
            }
            Display::Lines {
                total,
                done,
                started,
                ..
            } => {
                if let Ok(mut started) = started.lock() {
                    *started = Instant::now();
                }
                done.store(0, Ordering::Relaxed);
                total.store(total_bytes, Ordering::Relaxed);
            }
        }
    }

    fn advance(&self, bytes: u64) {
        match self {
            Display::Quiet => {}
            Display::Bar(bar) => bar.inc(bytes),
            Display::Lines {
                what,
                total,
                done,
                started,
                last,
            } => {
                let done = done.fetch_add(bytes, Ordering::Relaxed) + bytes;
                let Ok(mut last) = last.lock() else { return };
                if last.elapsed() >= Duration::from_secs(5) {
                    *last = Instant::now();
                    let Ok(since) = started.lock().map(|s| *s) else {
                        return;
                    };
                    let total = total.load(Ordering::Relaxed);
                    eprintln!("{}", line(what, done, total, since.elapsed()));
                }
            }
        }
    }

    fn finish(&self) {
        if let Display::Bar(bar) = self {
            bar.finish_and_clear();
        }
    }
}

/// One progress line: `done` of `total` bytes (0: not known, as when files are
/// skipped on purpose) after `elapsed` of the current pass.
fn line(what: &str, done: u64, total: u64, elapsed: Duration) -> String {
    let rate = done as f64 / elapsed.as_secs_f64().max(1e-9) / 1e6;
    if total == 0 {
        return format!("{what}: {} MB, {rate:.0} MB/s", done / 1_000_000);
    }
    format!(
        "{what}: {:.0}% ({} of {} MB, {rate:.0} MB/s)",
        done as f64 * 100.0 / total as f64,
        done / 1_000_000,
        total / 1_000_000,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_show_the_share_done_only_when_the_total_is_known() {
        let two_s = Duration::from_secs(2);
        assert_eq!(
            line("fix", 500_000_000, 2_000_000_000, two_s),
            "fix: 25% (500 of 2000 MB, 250 MB/s)"
        );
        assert_eq!(
            line("check", 500_000_000, 0, two_s),
            "check: 500 MB, 250 MB/s"
        );
    }

    #[test]
    fn a_second_pass_counts_from_zero_again() {
        let display = Display::Lines {
            what: "fix",
            total: AtomicU64::new(0),
            done: AtomicU64::new(0),
            started: Mutex::new(Instant::now() - Duration::from_secs(60)),
            last: Mutex::new(Instant::now()),
        };
        display.start(1000);
        display.advance(700);
        display.start(2000);
        let Display::Lines {
            total,
            done,
            started,
            ..
        } = &display
        else {
            unreachable!("built as lines")
        };
        assert_eq!(done.load(Ordering::Relaxed), 0);
        assert_eq!(total.load(Ordering::Relaxed), 2000);
        let since = *started.lock().expect("lock");
        assert!(
            since.elapsed() < Duration::from_secs(30),
            "the clock restarted"
        );
    }
}
