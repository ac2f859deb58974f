//! Prometheus metrics of the array and of the last run of each command, in the text
//! exposition format that node_exporter's textfile collector reads.
//!
//! [`render`] is pure: it turns a [`Status`], the free space of the data disks and the
//! last run of each command into the text. The edges are small: [`free_bytes`] asks
//! the filesystem, [`read_runs`] reads the previous metrics file back, and [`write`]
//! replaces it atomically.
//!
//! The metrics file is rewritten after every command, but one command only knows its
//! own run. The last runs of the other commands are read back from the previous file
//! ([`parse_runs`] reads only our own `lhparity_last_run_*` lines), so the file itself
//! is the record and no second file can drift from it. A missing or damaged file only
//! loses the earlier runs, never the current one.
//!
//! The scrub age is a histogram (`lhparity_scrub_age_seconds`) of the positions in
//! use, with cumulative buckets at 1, 7, 14, 30, 90 and 365 days. Ages are whole days
//! (floored), as `lhparity status` counts them, expressed in seconds as Prometheus
//! expects. Never-verified positions have no age: they count only in the `+Inf`
//! bucket (and in `lhparity_positions_never_scrubbed`). The histogram is a snapshot,
//! not a counter, so it has no `_sum`: `rate()` means nothing on it, while
//! `histogram_quantile()` and Grafana's heatmap format work as usual.
//!
//! This module never touches the state or the data disks' contents.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io;
use std::path::Path;

use crate::state::store::{self, WriteFailure};
use crate::status::Status;

/// Seconds in a day: the unit of the ages in [`Status`].
const DAY: u64 = 86_400;

/// The commands whose last run is recorded (the `command` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Command {
    Sync,
    Scrub,
    Check,
    Fix,
    Diff,
    Status,
}

impl Command {
    /// Every recorded command.
    pub const ALL: [Command; 6] = [
        Command::Sync,
        Command::Scrub,
        Command::Check,
        Command::Fix,
        Command::Diff,
        Command::Status,
    ];

    /// The name on the command line and in the `command` label.
    pub fn name(self) -> &'static str {
        match self {
            Command::Sync => "sync",
            Command::Scrub => "scrub",
            Command::Check => "check",
            Command::Fix => "fix",
            Command::Diff => "diff",
            Command::Status => "status",
        }
    }

    fn from_name(name: &str) -> Option<Command> {
        Command::ALL.into_iter().find(|c| c.name() == name)
    }
}

/// One finished run of a command.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LastRun {
    /// Unix time (seconds) when it started.
    pub start: u64,
    /// How long it ran.
    pub seconds: f64,
    /// Its exit code (1 when it failed with an error).
    pub exit_code: u8,
    /// Data bytes it read or rebuilt.
    pub bytes: u64,
    /// Errors it found: bad blocks, unrecoverable files, unreadable files, or 1 when
    /// the command itself failed.
    pub errors: u64,
}

/// The last run of each command.
pub type Runs = BTreeMap<Command, LastRun>;

/// The per-command metrics: name, help, and how to read and set the value.
struct RunMetric {
    name: &'static str,
    help: &'static str,
    get: fn(&LastRun) -> String,
    set: fn(&mut LastRun, &str) -> Option<()>,
}

const RUN_METRICS: [RunMetric; 5] = [
    RunMetric {
        name: "lhparity_last_run_start_time_seconds",
        help: "Unix time when the last run of the command started.",
        get: |r| r.start.to_string(),
        set: |r, v| v.parse().ok().map(|v| r.start = v),
    },
    RunMetric {
        name: "lhparity_last_run_duration_seconds",
        help: "How long the last run of the command took.",
        get: |r| r.seconds.to_string(),
        set: |r, v| {
            v.parse()
                .ok()
                .filter(|s: &f64| s.is_finite())
                .map(|v| r.seconds = v)
        },
    },
    RunMetric {
        name: "lhparity_last_run_exit_code",
        help: "Exit code of the last run of the command (diff: 2 means a sync is needed).",
        get: |r| r.exit_code.to_string(),
        set: |r, v| v.parse().ok().map(|v| r.exit_code = v),
    },
    RunMetric {
        name: "lhparity_last_run_processed_bytes",
        help: "Data bytes the last run of the command read or rebuilt.",
        get: |r| r.bytes.to_string(),
        set: |r, v| v.parse().ok().map(|v| r.bytes = v),
    },
    RunMetric {
        name: "lhparity_last_run_errors",
        help: "Errors the last run of the command found (bad blocks, unrecoverable or unreadable files, or a failure).",
        get: |r| r.errors.to_string(),
        set: |r, v| v.parse().ok().map(|v| r.errors = v),
    },
];

/// Renders the metrics: the array's (when `status` is known), the free bytes of each
/// data disk (name, bytes), and the last run of each command in `runs`.
pub fn render(status: Option<&Status>, free: &[(String, u64)], runs: &Runs) -> String {
    let mut out = String::new();
    for m in &RUN_METRICS {
        let samples: Vec<Sample> = runs
            .iter()
            .map(|(c, r)| (Some(("command", c.name())), (m.get)(r)))
            .collect();
        family(&mut out, m.name, m.help, "gauge", &samples);
    }
    if let Some(s) = status {
        let per_disk = |value: fn(&crate::status::DiskStatus) -> u64| -> Vec<Sample> {
            s.disks
                .iter()
                .map(|d| (Some(("disk", d.name.as_str())), value(d).to_string()))
                .collect()
        };
        family(
            &mut out,
            "lhparity_disk_files",
            "Files on the data disk, as of the last sync.",
            "gauge",
            &per_disk(|d| d.files as u64),
        );
        family(
            &mut out,
            "lhparity_disk_file_bytes",
            "Bytes of the files on the data disk, as of the last sync.",
            "gauge",
            &per_disk(|d| d.bytes),
        );
    }
    let free: Vec<Sample> = free
        .iter()
        .map(|(name, bytes)| (Some(("disk", name.as_str())), bytes.to_string()))
        .collect();
    family(
        &mut out,
        "lhparity_disk_free_bytes",
        "Free bytes of the filesystem holding the data disk.",
        "gauge",
        &free,
    );
    if let Some(s) = status {
        array(&mut out, s, runs);
    }
    out
}

/// The array-wide gauges and the scrub-age histogram.
fn array(out: &mut String, s: &Status, runs: &Runs) {
    let never = s
        .scrub_age
        .iter()
        .find(|&&(bound, _)| bound == u32::MAX)
        .map_or(0, |&(_, n)| n);
    // A sync with nothing to do leaves the state (and its time) alone, yet it proves
    // the parity current: its end counts as a successful sync too.
    let synced_run = runs
        .get(&Command::Sync)
        .filter(|r| r.exit_code == 0)
        .map_or(0, |r| r.start + r.seconds as u64);
    let gauges: [(&str, &str, String); 10] = [
        (
            "lhparity_positions",
            "Block positions in the parity files.",
            s.positions.to_string(),
        ),
        (
            "lhparity_positions_awaiting_sync",
            "Block positions whose parity a sync still has to compute.",
            s.awaiting_sync.to_string(),
        ),
        (
            "lhparity_positions_never_scrubbed",
            "Block positions in use that no scrub has verified yet.",
            never.to_string(),
        ),
        (
            "lhparity_bad_blocks",
            "Blocks marked bad by scrub or sync (repair with `lhparity fix -e`).",
            s.bad.len().to_string(),
        ),
        (
            "lhparity_parity_levels",
            "Parity levels of the array.",
            s.parity_levels.to_string(),
        ),
        (
            "lhparity_block_size_bytes",
            "Block size of the array.",
            s.block_size.to_string(),
        ),
        (
            "lhparity_last_sync_time_seconds",
            "Unix time of the last sync that left the parity complete (0: never).",
            s.last_sync.max(synced_run).to_string(),
        ),
        (
            "lhparity_last_scrub_time_seconds",
            "Unix time of the last scrub that found no error (0: never).",
            s.last_scrub.to_string(),
        ),
        (
            "lhparity_scrub_oldest_age_seconds",
            "Time since the least recently verified position in use was verified, in whole days.",
            days(s.oldest_days),
        ),
        (
            "lhparity_scrub_median_age_seconds",
            "Median time since the positions in use were verified, in whole days.",
            days(s.median_days),
        ),
    ];
    for (name, help, value) in gauges {
        // No verified position, no age: an absent series rather than a made-up 0.
        let samples: Vec<Sample> = if value.is_empty() {
            Vec::new()
        } else {
            vec![(None, value)]
        };
        family(out, name, help, "gauge", &samples);
    }
    scrub_histogram(out, s);
}

/// Days as seconds, or an empty string when there is no value.
fn days(d: Option<u32>) -> String {
    d.map_or_else(String::new, |d| (u64::from(d) * DAY).to_string())
}

fn scrub_histogram(out: &mut String, s: &Status) {
    const NAME: &str = "lhparity_scrub_age_seconds";
    let _ = writeln!(
        out,
        "# HELP {NAME} Block positions in use by time since their last verification, in whole days (never verified: +Inf only)."
    );
    let _ = writeln!(out, "# TYPE {NAME} histogram");
    let mut cumulative = 0usize;
    for &(bound, n) in &s.scrub_age {
        // The last finite bucket of the status ("older") and "never" both fall in +Inf.
        if bound < u32::MAX - 1 {
            cumulative += n;
            let le = u64::from(bound) * DAY;
            let _ = writeln!(out, "{NAME}_bucket{{le=\"{le}\"}} {cumulative}");
        }
    }
    let total: usize = s.scrub_age.iter().map(|&(_, n)| n).sum();
    let _ = writeln!(out, "{NAME}_bucket{{le=\"+Inf\"}} {total}");
    let _ = writeln!(out, "{NAME}_count {total}");
}

/// One sample: an optional (label, value) and the sample value as text.
type Sample<'a> = (Option<(&'a str, &'a str)>, String);

/// Appends one metric family: `# HELP`, `# TYPE` and its samples; nothing when it has
/// no samples, so that an unknown value is an absent series.
fn family(out: &mut String, name: &str, help: &str, kind: &str, samples: &[Sample]) {
    if samples.is_empty() {
        return;
    }
    // Writing to a String cannot fail.
    let _ = writeln!(out, "# HELP {name} {}", escape(help, false));
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (label, value) in samples {
        match label {
            Some((key, v)) => {
                let _ = writeln!(out, "{name}{{{key}=\"{}\"}} {value}", escape(v, true));
            }
            None => {
                let _ = writeln!(out, "{name} {value}");
            }
        }
    }
}

/// Escapes a label value (backslash, double quote, newline) or help text (backslash
/// and newline only), as the exposition format requires.
fn escape(text: &str, quote: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if quote => out.push_str("\\\""),
            c => out.push(c),
        }
    }
    out
}

/// Reads the last runs back from a metrics file's text. Only complete runs on our own
/// `lhparity_last_run_*` lines count; everything else is ignored.
pub fn parse_runs(text: &str) -> Runs {
    let mut partial: BTreeMap<Command, (LastRun, [bool; RUN_METRICS.len()])> = BTreeMap::new();
    for line in text.lines() {
        for (i, m) in RUN_METRICS.iter().enumerate() {
            let Some(rest) = line
                .strip_prefix(m.name)
                .and_then(|r| r.strip_prefix("{command=\""))
            else {
                continue;
            };
            let Some((name, value)) = rest.split_once("\"} ") else {
                continue;
            };
            let Some(command) = Command::from_name(name) else {
                continue;
            };
            let entry = partial.entry(command).or_default();
            if (m.set)(&mut entry.0, value.trim()).is_some() {
                entry.1[i] = true;
            }
        }
    }
    partial
        .into_iter()
        .filter(|(_, (_, seen))| seen.iter().all(|&s| s))
        .map(|(c, (run, _))| (c, run))
        .collect()
}

/// The last runs recorded in the metrics file at `path` (none when it does not exist
/// or cannot be read: the next write starts the record afresh).
pub fn read_runs(path: &Path) -> Runs {
    std::fs::read_to_string(path).map_or_else(|_| Runs::new(), |text| parse_runs(&text))
}

/// Free bytes of the filesystem holding `dir` (`statvfs`: blocks free times fragment
/// size, including the blocks reserved for root, as the disk's owner sees them).
pub fn free_bytes(dir: &Path) -> io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: a NUL-terminated path and room for a statvfs.
    if unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: statvfs succeeded, so it filled the struct.
    let st = unsafe { st.assume_init() };
    // The field widths differ between platforms; both fit u64.
    #[allow(clippy::useless_conversion)]
    let free = u64::from(st.f_bfree).saturating_mul(u64::from(st.f_frsize));
    Ok(free)
}

/// Replaces the metrics file at `path` with `text` atomically (`PATH.tmp`, fsync,
/// rename), so that a collector never reads half a file. The `.tmp` name does not end
/// in `.prom`, so node_exporter ignores it.
pub fn write(path: &Path, text: &str) -> Result<(), WriteFailure> {
    store::write_atomic(path, "metrics file", text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::DiskStatus;

    fn known_status() -> Status {
        Status {
            disks: vec![
                DiskStatus {
                    name: "d1".into(),
                    files: 3,
                    bytes: 5000,
                    new_blocks: 0,
                },
                DiskStatus {
                    name: "d2".into(),
                    files: 1,
                    bytes: 70,
                    new_blocks: 1,
                },
            ],
            parity_levels: 2,
            block_size: 262_144,
            positions: 10,
            awaiting_sync: 1,
            scrub_age: vec![
                (1, 4),
                (7, 1),
                (14, 0),
                (30, 0),
                (90, 1),
                (365, 0),
                (u32::MAX - 1, 1),
                (u32::MAX, 2),
            ],
            oldest_days: Some(400),
            median_days: Some(1),
            bad: vec![(3, "d2".into())],
            last_sync: 1_700_000_000,
            last_scrub: 1_700_000_100,
        }
    }

    fn sync_run() -> LastRun {
        LastRun {
            start: 1_699_999_990,
            seconds: 2.5,
            exit_code: 0,
            bytes: 5070,
            errors: 0,
        }
    }

    #[test]
    fn renders_exact_lines_for_a_known_status() {
        let runs = Runs::from([(Command::Sync, sync_run())]);
        let free = [("d1".to_string(), 1000), ("d2".to_string(), 2000)];
        let text = render(Some(&known_status()), &free, &runs);
        let samples: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            samples,
            [
                "lhparity_last_run_start_time_seconds{command=\"sync\"} 1699999990",
                "lhparity_last_run_duration_seconds{command=\"sync\"} 2.5",
                "lhparity_last_run_exit_code{command=\"sync\"} 0",
                "lhparity_last_run_processed_bytes{command=\"sync\"} 5070",
                "lhparity_last_run_errors{command=\"sync\"} 0",
                "lhparity_disk_files{disk=\"d1\"} 3",
                "lhparity_disk_files{disk=\"d2\"} 1",
                "lhparity_disk_file_bytes{disk=\"d1\"} 5000",
                "lhparity_disk_file_bytes{disk=\"d2\"} 70",
                "lhparity_disk_free_bytes{disk=\"d1\"} 1000",
                "lhparity_disk_free_bytes{disk=\"d2\"} 2000",
                "lhparity_positions 10",
                "lhparity_positions_awaiting_sync 1",
                "lhparity_positions_never_scrubbed 2",
                "lhparity_bad_blocks 1",
                "lhparity_parity_levels 2",
                "lhparity_block_size_bytes 262144",
                "lhparity_last_sync_time_seconds 1700000000",
                "lhparity_last_scrub_time_seconds 1700000100",
                "lhparity_scrub_oldest_age_seconds 34560000",
                "lhparity_scrub_median_age_seconds 86400",
                "lhparity_scrub_age_seconds_bucket{le=\"86400\"} 4",
                "lhparity_scrub_age_seconds_bucket{le=\"604800\"} 5",
                "lhparity_scrub_age_seconds_bucket{le=\"1209600\"} 5",
                "lhparity_scrub_age_seconds_bucket{le=\"2592000\"} 5",
                "lhparity_scrub_age_seconds_bucket{le=\"7776000\"} 6",
                "lhparity_scrub_age_seconds_bucket{le=\"31536000\"} 6",
                "lhparity_scrub_age_seconds_bucket{le=\"+Inf\"} 9",
                "lhparity_scrub_age_seconds_count 9",
            ]
        );
        // Every family has its HELP and TYPE right before its first sample.
        assert!(text.contains(
            "# HELP lhparity_bad_blocks Blocks marked bad by scrub or sync (repair with `lhparity fix -e`).\n\
             # TYPE lhparity_bad_blocks gauge\nlhparity_bad_blocks 1\n"
        ));
        assert!(text.contains(
            "# TYPE lhparity_scrub_age_seconds histogram\nlhparity_scrub_age_seconds_bucket"
        ));
        assert_eq!(text.matches("# TYPE ").count(), 19);
    }

    #[test]
    fn labels_and_help_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd", true), "a\\\"b\\\\c\\nd");
        assert_eq!(escape("a\"b\\c\nd", false), "a\"b\\\\c\\nd");
        let text = render(None, &[("we\"ird\\\n".to_string(), 1)], &Runs::new());
        assert!(
            text.contains("lhparity_disk_free_bytes{disk=\"we\\\"ird\\\\\\n\"} 1\n"),
            "{text}"
        );
    }

    #[test]
    fn unknown_values_are_absent_series() {
        let mut s = known_status();
        s.oldest_days = None;
        s.median_days = None;
        let text = render(Some(&s), &[], &Runs::new());
        assert!(!text.contains("lhparity_scrub_oldest_age_seconds"));
        assert!(!text.contains("lhparity_last_run_"));
        assert!(!text.contains("lhparity_disk_free_bytes"));
        assert!(text.contains("lhparity_positions 10\n"));
        let text = render(None, &[], &Runs::new());
        assert_eq!(text, "");
    }

    #[test]
    fn a_sync_with_nothing_to_do_counts_as_the_last_sync() {
        let run = LastRun {
            start: 1_800_000_000,
            seconds: 4.0,
            ..sync_run()
        };
        let runs = Runs::from([(Command::Sync, run)]);
        let text = render(Some(&known_status()), &[], &runs);
        assert!(text.contains("lhparity_last_sync_time_seconds 1800000004\n"));
        let failed = Runs::from([(
            Command::Sync,
            LastRun {
                exit_code: 1,
                ..run
            },
        )]);
        let text = render(Some(&known_status()), &[], &failed);
        assert!(text.contains("lhparity_last_sync_time_seconds 1700000000\n"));
    }

    #[test]
    fn runs_read_back_from_the_rendered_text() {
        let runs = Runs::from([
            (Command::Sync, sync_run()),
            (
                Command::Scrub,
                LastRun {
                    start: 5,
                    seconds: 0.000_125,
                    exit_code: 1,
                    bytes: u64::MAX,
                    errors: 3,
                },
            ),
        ]);
        let text = render(Some(&known_status()), &[], &runs);
        assert_eq!(parse_runs(&text), runs);
    }

    #[test]
    fn foreign_garbled_and_partial_lines_are_ignored() {
        let text = "\
lhparity_last_run_start_time_seconds{command=\"fix\"} 10
lhparity_last_run_duration_seconds{command=\"fix\"} 1.5
lhparity_last_run_exit_code{command=\"fix\"} 0
lhparity_last_run_processed_bytes{command=\"fix\"} 7
lhparity_last_run_errors{command=\"fix\"} 0
lhparity_last_run_start_time_seconds{command=\"diff\"} 10
lhparity_last_run_exit_code{command=\"bogus\"} 0
lhparity_last_run_exit_code{command=\"diff\"} not-a-number
other_metric{command=\"sync\"} 1
";
        let runs = parse_runs(text);
        assert_eq!(runs.len(), 1);
        assert_eq!(
            runs.get(&Command::Fix),
            Some(&LastRun {
                start: 10,
                seconds: 1.5,
                exit_code: 0,
                bytes: 7,
                errors: 0
            })
        );
    }

    #[test]
    fn write_replaces_the_file_and_leaves_no_tmp() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("lhparity.prom");
        write(&path, "old\n").expect("first write");
        write(&path, "new\n").expect("second write");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "new\n");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, ["lhparity.prom"]);
        assert!(free_bytes(dir.path()).is_ok());
    }
}
