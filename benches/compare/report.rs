//! The results, two ways: a Markdown table for people (row, variant, median,
//! min-max, unit, ratio of medians against the row's baseline) and the same data as
//! JSON, with the environment record, for tools and later comparison.
//!
//! Rows build `Line`s from their samples; this module only formats and writes.

use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::env::Env;
use crate::measure::Summary;
use crate::scale::Scale;

/// One variant's figure for one measured quantity.
#[derive(Debug, Clone, Serialize)]
pub struct Line {
    /// What was measured, e.g. `parity-speed gen2`.
    pub row: String,
    pub variant: String,
    /// Extra facts about the figure, such as the kernel that produced it.
    pub note: Option<String>,
    pub summary: Summary,
    pub unit: String,
    /// Median over the baseline's median; `None` when there is no comparable baseline.
    pub ratio: Option<f64>,
    pub is_baseline: bool,
}

/// One row as run: its lines, or why it could not run: `error` when it failed,
/// `not_available` when our build lacks what it measures (not a failure).
#[derive(Debug, Clone, Serialize)]
pub struct RowOutcome {
    pub name: String,
    pub lines: Vec<Line>,
    pub error: Option<String>,
    pub not_available: Option<String>,
    /// Variants the row left out while the others ran, each with why.
    pub skipped: Vec<String>,
    /// How long the row took, setup included, in seconds.
    pub seconds: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub env: Env,
    pub reps: usize,
    pub smoke: bool,
    pub scale: Scale,
    pub rows: Vec<RowOutcome>,
}

impl Report {
    /// The whole report as Markdown: environment, table, rows that failed.
    pub fn markdown(&self) -> String {
        let mut out = String::from("## Environment\n\n");
        out += &self.env.markdown();
        out += &format!(
            "\n## Results ({} repetition{}{}, alternated)\n\n",
            self.reps,
            if self.reps == 1 { "" } else { "s" },
            if self.smoke { ", smoke sizes" } else { "" }
        );
        out += &format!("Sizes: {}.\n\n", self.scale.describe());
        out += "| row | variant | median | min-max | unit | ratio vs baseline |\n";
        out += "|---|---|---:|---:|---|---:|\n";
        for line in self.rows.iter().flat_map(|r| &r.lines) {
            out += &table_line(line);
        }
        let total: f64 = self.rows.iter().map(|r| r.seconds).sum();
        out += &format!("\nTime per row (setup included), {:.0} s in all:", total);
        for row in &self.rows {
            out += &format!(" {} {:.0} s;", row.name, row.seconds);
        }
        out.pop();
        out += "\n";
        let failed: Vec<&RowOutcome> = self.rows.iter().filter(|r| r.error.is_some()).collect();
        if !failed.is_empty() {
            out += "\n## Rows that did not run\n\n";
            for row in failed {
                out += &format!("- {}: {}\n", row.name, row.error.as_deref().unwrap_or(""));
            }
        }
        let skipped: Vec<(&str, &String)> = self
            .rows
            .iter()
            .flat_map(|r| r.skipped.iter().map(|s| (r.name.as_str(), s)))
            .collect();
        if !skipped.is_empty() {
            out += "\n## Variants that did not run\n\n";
            for (row, what) in skipped {
                out += &format!("- {row}: {what}\n");
            }
        }
        let unavailable: Vec<&RowOutcome> = self
            .rows
            .iter()
            .filter(|r| r.not_available.is_some())
            .collect();
        if !unavailable.is_empty() {
            out += "\n## Rows not available in this build\n\n";
            for row in unavailable {
                let why = row.not_available.as_deref().unwrap_or("");
                out += &format!("- {}: {why}\n", row.name);
            }
        }
        out
    }

    /// Writes the report as pretty JSON, creating the parent folder if needed.
    pub fn write_json(&self, path: &Path) -> Result<()> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating folder {}", dir.display()))?;
        }
        let text = serde_json::to_string_pretty(self).context("encoding the report as JSON")?;
        std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))
    }
}

fn table_line(line: &Line) -> String {
    let variant = match &line.note {
        Some(note) => format!("{} [{note}]", line.variant),
        None => line.variant.clone(),
    };
    let ratio = if line.is_baseline {
        "baseline".to_string()
    } else {
        line.ratio.map_or_else(|| "-".to_string(), format_ratio)
    };
    let s = &line.summary;
    format!(
        "| {} | {} | {} | {}-{} | {} | {} |\n",
        line.row,
        variant,
        format_value(s.median),
        format_value(s.min),
        format_value(s.max),
        line.unit,
        ratio
    )
}

/// At least three significant digits, no more decimals than that needs:
/// 60048, 123, 12.3, 1.23, 0.0123.
pub fn format_value(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return format!("{v}");
    }
    let magnitude = v.abs().log10().floor() as i32;
    let decimals = (2 - magnitude).clamp(0, 6) as usize;
    format!("{v:.decimals$}")
}

/// Two decimals, like `1.02x`; small ratios keep three significant digits.
pub fn format_ratio(r: f64) -> String {
    if r >= 0.1 {
        format!("{r:.2}x")
    } else {
        format!("{}x", format_value(r))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(median: f64, min: f64, max: f64) -> Summary {
        Summary {
            median,
            min,
            max,
            n: 3,
        }
    }

    #[test]
    fn values_keep_three_significant_digits() {
        assert_eq!(format_value(60048.4), "60048");
        assert_eq!(format_value(123.45), "123");
        assert_eq!(format_value(12.345), "12.3");
        assert_eq!(format_value(1.2345), "1.23");
        assert_eq!(format_value(0.012345), "0.0123");
        assert_eq!(format_value(-2.5), "-2.50");
        assert_eq!(format_value(0.0), "0");
        assert_eq!(format_ratio(1.0234), "1.02x");
        assert_eq!(format_ratio(0.0456), "0.0456x");
    }

    #[test]
    fn table_shows_baseline_notes_and_failures() {
        let line = |variant: &str, note: Option<&str>, ratio, is_baseline| Line {
            row: "parity-speed gen2".into(),
            variant: variant.into(),
            note: note.map(str::to_string),
            summary: summary(41041.0, 40000.2, 42000.7),
            unit: "MB/s".into(),
            ratio,
            is_baseline,
        };
        let report = Report {
            env: Env {
                cpu_model: "cpu".into(),
                cpu_flags: vec![],
                cpus: 2,
                kernel: "6.1".into(),
                tools: vec![],
            },
            reps: 3,
            smoke: false,
            scale: Scale::FULL,
            rows: vec![
                RowOutcome {
                    name: "parity-speed".into(),
                    lines: vec![
                        line("lhparity", Some("gfni"), Some(1.5), false),
                        line("snapraid", Some("avx2"), Some(1.0), true),
                        line("other", None, None, false),
                    ],
                    error: None,
                    not_available: None,
                    skipped: vec![],
                    seconds: 12.0,
                },
                RowOutcome {
                    name: "pool-fio".into(),
                    lines: vec![],
                    error: Some("fio: not installed".into()),
                    not_available: None,
                    skipped: vec![],
                    seconds: 30.0,
                },
                RowOutcome {
                    name: "pool-meta".into(),
                    lines: vec![],
                    error: None,
                    not_available: None,
                    skipped: vec!["mergerfs cache.files=off: not installed".into()],
                    seconds: 45.0,
                },
                RowOutcome {
                    name: "parity-fix".into(),
                    lines: vec![],
                    error: None,
                    not_available: Some("no fix".into()),
                    skipped: vec![],
                    seconds: 3.0,
                },
            ],
        };
        let md = report.markdown();
        assert!(md.contains("## Results (3 repetitions, alternated)\n\nSizes: data 1 GiB per disk"));
        assert!(md.contains(
            "| parity-speed gen2 | lhparity [gfni] | 41041 | 40000-42001 | MB/s | 1.50x |\n"
        ));
        assert!(md.contains("| snapraid [avx2] | 41041 | 40000-42001 | MB/s | baseline |\n"));
        assert!(md.contains("| other | 41041 | 40000-42001 | MB/s | - |\n"));
        assert!(md.contains(
            "Time per row (setup included), 90 s in all: parity-speed 12 s; pool-fio 30 s; \
             pool-meta 45 s; parity-fix 3 s\n"
        ));
        assert!(md.contains("## Rows that did not run\n\n- pool-fio: fio: not installed\n\n"));
        assert!(md.contains(
            "## Variants that did not run\n\n- pool-meta: mergerfs cache.files=off: not installed\n"
        ));
        assert!(md.ends_with("## Rows not available in this build\n\n- parity-fix: no fix\n"));

        let json: serde_json::Value = serde_json::to_value(&report).unwrap();
        assert_eq!(json["rows"][0]["lines"][0]["summary"]["median"], 41041.0);
        assert_eq!(json["rows"][1]["error"], "fio: not installed");
        assert_eq!(
            json["rows"][2]["skipped"][0],
            "mergerfs cache.files=off: not installed"
        );
        assert_eq!(json["rows"][3]["not_available"], "no fix");
        assert_eq!(json["env"]["kernel"], "6.1");
        assert_eq!(json["rows"][1]["seconds"], 30.0);
        assert_eq!(json["scale"]["meta_files"], 10000);
    }
}
