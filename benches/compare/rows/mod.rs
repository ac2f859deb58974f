//! The comparison rows: one file per row, each turning its variants' samples into
//! report lines. This file holds the row table (what `--only` picks from), the
//! context every row gets, and the shared samples-to-lines step.
//!
//! Adding a row: write `rows/<name>.rs` with a `pub const ROW: RowSpec` and list it
//! in `ROWS`. A row that cannot run because our build lacks the feature it measures
//! returns a [`NotAvailable`] error: the report lists it apart, and the run still
//! succeeds.

use std::cell::RefCell;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::env::Env;
use crate::measure::{ratio, Samples};
use crate::report::Line;
use crate::scale::Scale;

mod disk_read;
mod parity_array;
mod parity_fix;
mod parity_scrub;
mod parity_speed;
mod parity_sync;
mod pool;
mod pool_fio;
mod pool_meta;

/// Everything a row may use; rows read their own tools from `env`.
pub struct Ctx<'a> {
    pub env: &'a Env,
    /// Where our binaries (`lhparity`, `lhfs`) are.
    pub bin_dir: &'a Path,
    /// Where scratch disk images go.
    pub work_dir: &'a Path,
    pub reps: usize,
    /// The sizes the rows run at.
    pub scale: Scale,
    /// Variants the running row left out, with why (`skip_variant`); the runner
    /// moves them into the row's outcome.
    pub skipped: RefCell<Vec<String>>,
}

impl Ctx<'_> {
    /// The path of one of our binaries, or how to build it.
    pub fn our_binary(&self, name: &str) -> Result<PathBuf> {
        let path = self.bin_dir.join(name);
        if !path.is_file() {
            bail!(
                "{} not found; build it with `cargo build --release` in the workspace, \
                 or point --bin-dir at the folder that holds it",
                path.display()
            );
        }
        Ok(path)
    }

    /// Records that the running row left out one of its variants (a peer that is not
    /// installed, say) while the others still run; the report lists it.
    pub fn skip_variant(&self, variant: &str, why: &str) {
        self.skipped.borrow_mut().push(format!("{variant}: {why}"));
    }

    /// The path of an installed peer, or how to install it.
    pub fn peer(&self, name: &str) -> Result<PathBuf> {
        match self.env.tool(name).and_then(|t| t.path.clone()) {
            Some(path) => Ok(path),
            None => bail!(
                "{name} is not installed; install it (`apt-get install {name}`) or rerun \
                 with --install-peers"
            ),
        }
    }
}

#[derive(Debug)]
pub struct RowSpec {
    pub name: &'static str,
    pub about: &'static str,
    pub run: fn(&Ctx) -> Result<Vec<Line>>,
}

/// Every row, in the order they run.
pub const ROWS: &[RowSpec] = &[
    parity_speed::ROW,
    parity_sync::ROW,
    parity_scrub::ROW,
    parity_fix::ROW,
    disk_read::ROW,
    pool_fio::ROW,
    pool_meta::ROW,
];

/// Why a row did not run although nothing failed: the binary under test does not
/// have the feature yet. Not counted as a failure of the run.
#[derive(Debug)]
pub struct NotAvailable(pub String);

impl fmt::Display for NotAvailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NotAvailable {}

/// Runs a tool to completion and returns its stdout. Only the exit status decides
/// success: tools may print warnings on stderr and still succeed. A failure shows
/// the stderr, or the end of stdout when stderr is empty (snapraid prints some
/// errors there).
pub fn run_tool(cmd: &mut Command) -> Result<String> {
    let shown = format!("{cmd:?}");
    let out = cmd.output().with_context(|| format!("starting {shown}"))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let said = if stderr.trim().is_empty() {
            &stdout
        } else {
            &stderr
        };
        bail!("{shown} failed ({}): {}", out.status, tail(said, 20));
    }
    String::from_utf8(out.stdout).with_context(|| format!("{shown} printed invalid UTF-8"))
}

/// The last `lines` non-blank lines of `text`, so that a long progress log does not
/// bury the error at its end.
fn tail(text: &str, lines: usize) -> String {
    let kept: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let start = kept.len().saturating_sub(lines);
    let mut out = kept[start..].join("\n");
    if start > 0 {
        out = format!("(last {lines} lines)\n{out}");
    }
    out
}

/// The rows named in `--only` (all when `None`), in table order.
pub fn select(only: Option<&[String]>) -> Result<Vec<&'static RowSpec>> {
    let Some(names) = only else {
        return Ok(ROWS.iter().collect());
    };
    if let Some(unknown) = names.iter().find(|n| !ROWS.iter().any(|r| r.name == *n)) {
        let known: Vec<&str> = ROWS.iter().map(|r| r.name).collect();
        bail!(
            "unknown row {unknown:?}; the rows are: {}",
            known.join(", ")
        );
    }
    Ok(ROWS
        .iter()
        .filter(|r| names.iter().any(|n| n == r.name))
        .collect())
}

/// One line per variant for `metric`, with the ratio of medians against the
/// variant named `baseline`. Variants that did not report the metric are left out.
pub fn lines_for(
    row: &str,
    metric: &str,
    unit: &str,
    samples: &[Samples],
    baseline: &str,
) -> Vec<Line> {
    let base = samples
        .iter()
        .find(|s| s.name == baseline)
        .and_then(|s| s.summary(metric));
    samples
        .iter()
        .filter_map(|s| {
            let summary = s.summary(metric)?;
            Some(Line {
                row: row.to_string(),
                variant: s.name.clone(),
                note: s.note(metric),
                summary,
                unit: unit.to_string(),
                ratio: base.and_then(|b| ratio(summary.median, b.median)),
                is_baseline: s.name == baseline,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn select_checks_names_and_keeps_table_order() {
        assert_eq!(select(None).unwrap().len(), ROWS.len());
        let only = ["disk-read".to_string(), "parity-speed".to_string()];
        let names: Vec<&str> = select(Some(&only))
            .unwrap()
            .iter()
            .map(|r| r.name)
            .collect();
        assert_eq!(names, ["parity-speed", "disk-read"]);
        let only = ["parity-fix".to_string(), "parity-sync".to_string()];
        let names: Vec<&str> = select(Some(&only))
            .unwrap()
            .iter()
            .map(|r| r.name)
            .collect();
        assert_eq!(names, ["parity-sync", "parity-fix"]);
        let err = select(Some(&["nope".to_string()])).unwrap_err().to_string();
        assert!(err.contains("unknown row \"nope\"") && err.contains("parity-speed"));
    }

    #[test]
    fn tool_failures_show_the_end_of_what_it_said() {
        assert_eq!(tail("a\n\nb\n", 5), "a\nb");
        assert_eq!(tail("1\n2\n3\n", 2), "(last 2 lines)\n2\n3");
        let out = run_tool(Command::new("sh").args(["-c", "echo warn >&2; echo out"])).unwrap();
        assert_eq!(out, "out\n");
        let err = run_tool(Command::new("sh").args(["-c", "echo progress; echo bad >&2; exit 3"]))
            .unwrap_err();
        let text = format!("{err:#}");
        assert!(text.contains("failed (exit status: 3): bad"), "{text}");
        let err =
            run_tool(Command::new("sh").args(["-c", "echo only-stdout; exit 1"])).unwrap_err();
        assert!(format!("{err:#}").ends_with("only-stdout"));
    }

    #[test]
    fn lines_carry_ratio_against_the_baseline() {
        let samples = |name: &str, values: &[f64]| Samples {
            name: name.into(),
            values: BTreeMap::from([("m".to_string(), values.to_vec())]),
            notes: BTreeMap::new(),
        };
        let all = [
            samples("ours", &[30.0, 10.0, 20.0]),
            samples("peer", &[10.0]),
        ];
        let lines = lines_for("r", "m", "MB/s", &all, "peer");
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].ratio, Some(2.0));
        assert!(!lines[0].is_baseline && lines[1].is_baseline);
        assert_eq!(lines[1].ratio, Some(1.0));
        assert!(lines_for("r", "other", "MB/s", &all, "peer").is_empty());
        assert_eq!(lines_for("r", "m", "MB/s", &all, "none")[0].ratio, None);
    }
}
