//! The comparison rows: one file per row, each turning its variants' samples into
//! report lines. This file holds the row table (what `--only` picks from), the
//! context every row gets, and the shared samples-to-lines step.
//!
//! Adding a row: write `rows/<name>.rs` with a `pub const ROW: RowSpec` and list it
//! in `ROWS`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

use crate::env::Env;
use crate::measure::{ratio, Samples};
use crate::report::Line;

mod disk_read;
mod parity_speed;

/// Everything a row may use; rows read their own tools from `env`.
pub struct Ctx<'a> {
    pub env: &'a Env,
    /// Where our binaries (`lhparity`, `lhfs`) are.
    pub bin_dir: &'a Path,
    /// Where scratch disk images go.
    pub work_dir: &'a Path,
    pub reps: usize,
    /// Tiny sizes, for a quick check that the row works at all.
    pub smoke: bool,
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
pub const ROWS: &[RowSpec] = &[parity_speed::ROW, disk_read::ROW];

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
        let err = select(Some(&["nope".to_string()])).unwrap_err().to_string();
        assert!(err.contains("unknown row \"nope\"") && err.contains("parity-speed"));
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
