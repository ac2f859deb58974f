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
        started: Instant,
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
                started: Instant::now(),
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
            Display::Lines { total, done, .. } => {
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
                    let secs = started.elapsed().as_secs_f64().max(1e-9);
                    let total = total.load(Ordering::Relaxed).max(1);
                    eprintln!(
                        "{what}: {:.0}% ({} of {} MB, {:.0} MB/s)",
                        done as f64 * 100.0 / total as f64,
                        done / 1_000_000,
                        total / 1_000_000,
                        done as f64 / secs / 1e6
                    );
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
