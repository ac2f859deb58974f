//! Row `parity-speed`: the in-cache parity kernels, `lhparity speedtest --json`
//! against `snapraid -T`, per operation gen1..gen6 (sync) and rec1..rec6 (fix).
//! Ours is the kernel our dispatch selected; snapraid's is the one its `best`
//! column names. Both are MB/s (10^6 B/s) of data bytes, one thread.
//!
//! snapraid 12.2 counts `rec` differently: its loop runs the recovery once per data
//! buffer per iteration but counts only one buffer's bytes for each, so the printed
//! figure is (block size x recoveries per second), a factor of the buffer count (8)
//! below MB/s of data. The row shows it both ways; the ratio uses the converted one.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use super::{lines_for, run_tool, Ctx, RowSpec};
use crate::measure::{run_alternated, Observation, Variant};
use crate::report::Line;

pub const ROW: RowSpec = RowSpec {
    name: "parity-speed",
    about: "parity kernels in cache: lhparity speedtest vs snapraid -T (about a minute a run)",
    run,
};

const OURS: &str = "lhparity";
const PEER: &str = "snapraid";
const UNIT: &str = "MB/s";
/// The unit of snapraid 12.2's printed `rec` figures.
const PRINTED_REC_UNIT: &str = "MB/s, 12.2 formula: block x rec/s";

/// The operations compared, in report order.
const OPS: [&str; 12] = [
    "gen1", "gen2", "gen3", "gen4", "gen5", "gen6", "rec1", "rec2", "rec3", "rec4", "rec5", "rec6",
];

fn run(ctx: &Ctx) -> Result<Vec<Line>> {
    let lhparity = ctx.our_binary("lhparity")?;
    let snapraid = ctx.peer("snapraid")?;
    let mut variants = [
        Variant::new(OURS, || measure_lhparity(&lhparity)),
        Variant::new(PEER, || measure_snapraid(&snapraid)),
    ];
    let samples = run_alternated(&mut variants, ctx.reps)?;
    let mut lines = Vec::new();
    for op in OPS {
        let row = format!("parity-speed {op}");
        lines.extend(lines_for(&row, op, UNIT, &samples, PEER));
        if op.starts_with("rec") {
            // Shown for reference against snapraid's own output; not a baseline.
            let printed = lines_for(&row, &printed_key(op), PRINTED_REC_UNIT, &samples, "");
            lines.extend(printed.into_iter().map(|line| Line {
                variant: format!("{} as printed", line.variant),
                ..line
            }));
        }
    }
    Ok(lines)
}

fn printed_key(op: &str) -> String {
    format!("{op} printed")
}

/// One parity operation's figure and the kernel that produced it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
struct Figure {
    op: String,
    kernel: String,
    mbps: f64,
}

/// The shape `lhparity speedtest --json` prints.
#[derive(Debug, Deserialize)]
struct LhparitySpeed {
    disks: usize,
    block_size: u64,
    selected: String,
    results: Vec<Figure>,
}

/// Our figure per op: the selected kernel's; for an op that kernel does not
/// implement, the fastest kernel measured for it (the note names it either way).
fn lhparity_figures(json: &str) -> Result<(LhparitySpeed, Vec<Figure>)> {
    let speed: LhparitySpeed =
        serde_json::from_str(json).context("parsing `lhparity speedtest --json` output")?;
    let mut picked: BTreeMap<&str, &Figure> = BTreeMap::new();
    for f in &speed.results {
        let better = match picked.get(f.op.as_str()) {
            None => true,
            Some(cur) => {
                let (new_sel, cur_sel) = (f.kernel == speed.selected, cur.kernel == speed.selected);
                new_sel && !cur_sel || new_sel == cur_sel && f.mbps > cur.mbps
            }
        };
        if better {
            picked.insert(&f.op, f);
        }
    }
    let figures = picked.into_values().cloned().collect();
    Ok((speed, figures))
}

fn measure_lhparity(bin: &Path) -> Result<Observation> {
    // One second per kernel and operation, as `snapraid -T` measures.
    let stdout = run_tool(Command::new(bin).args([
        "speedtest",
        "--json",
        "--selected-only",
        "--period-ms",
        "1000",
    ]))?;
    let (speed, figures) = lhparity_figures(&stdout)?;
    let mut obs = Observation::default();
    for f in figures {
        obs.values.insert(f.op.clone(), f.mbps);
        obs.notes.insert(f.op, f.kernel);
    }
    // snapraid -T always uses 8 x 256 KiB; a different shape is not comparable.
    if (speed.disks, speed.block_size) != (8, 256 << 10) {
        obs.notes
            .values_mut()
            .for_each(|n| *n += &format!(", {} x {} B", speed.disks, speed.block_size));
    }
    Ok(obs)
}

fn measure_snapraid(bin: &Path) -> Result<Observation> {
    let stdout = run_tool(Command::new(bin).arg("-T"))?;
    let speed = parse_snapraid_speed(&stdout)?;
    let mut obs = Observation::default();
    for f in speed.figures {
        if f.op.starts_with("rec") {
            let converted = f.mbps * speed.buffers as f64;
            obs.values.insert(f.op.clone(), converted);
            obs.notes.insert(
                f.op.clone(),
                format!("{}, printed x{}", f.kernel, speed.buffers),
            );
            obs.values.insert(printed_key(&f.op), f.mbps);
            obs.notes.insert(printed_key(&f.op), f.kernel);
        } else {
            obs.values.insert(f.op.clone(), f.mbps);
            obs.notes.insert(f.op, f.kernel);
        }
    }
    Ok(obs)
}

/// What `snapraid -T` reported for gen1..gen6 and rec1..rec6.
#[derive(Debug, PartialEq)]
struct SnapraidSpeed {
    /// Data buffers per operation (the `rec` conversion factor).
    buffers: usize,
    /// The `best` kernel's figure per op, as printed.
    figures: Vec<Figure>,
}

/// Parses the text of `snapraid -T`. Its tables are right-aligned columns with
/// empty cells for kernels that do not exist, so a cell belongs to the header
/// whose last character is in the same text column.
fn parse_snapraid_speed(text: &str) -> Result<SnapraidSpeed> {
    let buffers = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Speed test using "))
        .and_then(|rest| rest.split_whitespace().next())
        .map(|n| n.parse::<usize>())
        .transpose()
        .context("reading the buffer count in `snapraid -T` output")?
        // Every 12.x release uses 8 buffers; the line only confirms it.
        .unwrap_or(8);
    let mut figures = Vec::new();
    let mut header: Vec<(usize, &str)> = Vec::new();
    for line in text.lines() {
        let cells = cells(line);
        match cells.first() {
            None => header.clear(),
            Some((_, "best")) => header = cells,
            Some((_, op)) if is_compared_op(op) && !header.is_empty() => {
                let at = |end: usize| cells.iter().find(|c| c.0 == end).map(|c| c.1);
                let best = at(header[0].0)
                    .with_context(|| format!("no `best` cell in snapraid -T line {line:?}"))?;
                let column = header.iter().find(|h| h.1 == best).with_context(|| {
                    format!("`best` names {best:?}, which is not a column, in line {line:?}")
                })?;
                let value = at(column.0)
                    .with_context(|| format!("empty {best} cell in snapraid -T line {line:?}"))?;
                let mbps = value.parse().with_context(|| {
                    format!("bad number {value:?} in snapraid -T line {line:?}")
                })?;
                figures.push(Figure {
                    op: op.to_string(),
                    kernel: best.to_string(),
                    mbps,
                });
            }
            Some(_) => {}
        }
    }
    if figures.is_empty() {
        let head: Vec<&str> = text.lines().take(5).collect();
        bail!(
            "no gen/rec rows in `snapraid -T` output; it began with:\n{}",
            head.join("\n")
        );
    }
    Ok(SnapraidSpeed { buffers, figures })
}

/// The whitespace-separated words of a line, each with the column just past its end.
fn cells(line: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, ch) in line.char_indices().chain([(line.len(), ' ')]) {
        match (ch.is_whitespace(), start) {
            (false, None) => start = Some(i),
            (true, Some(s)) => {
                out.push((i, &line[s..i]));
                start = None;
            }
            _ => {}
        }
    }
    out
}

fn is_compared_op(word: &str) -> bool {
    OPS.contains(&word)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `snapraid -T` from the reference notes (Debian 12.2 on a Zen 4 guest).
    const ZEN4: &str = include_str!("testdata/snapraid-T-zen4.txt");
    /// `snapraid -T` on the development machine (Debian 12.2, Xeon), trimmed.
    const XEON: &str = include_str!("testdata/snapraid-T-xeon.txt");

    fn figure(op: &str, kernel: &str, mbps: f64) -> Figure {
        Figure {
            op: op.into(),
            kernel: kernel.into(),
            mbps,
        }
    }

    #[test]
    fn parses_best_column_of_the_reference_sample() {
        let speed = parse_snapraid_speed(ZEN4).unwrap();
        assert_eq!(speed.buffers, 8);
        let ops: Vec<&str> = speed.figures.iter().map(|f| f.op.as_str()).collect();
        assert_eq!(ops, OPS);
        assert_eq!(speed.figures[0], figure("gen1", "avx2", 76468.0));
        assert_eq!(speed.figures[1], figure("gen2", "avx2", 68723.0));
        assert_eq!(speed.figures[2], figure("gen3", "avx2e", 35508.0));
        assert_eq!(speed.figures[5], figure("gen6", "avx2e", 12589.0));
        assert_eq!(speed.figures[6], figure("rec1", "avx2", 3462.0));
        assert_eq!(speed.figures[11], figure("rec6", "avx2", 536.0));
    }

    #[test]
    fn parses_this_machines_output() {
        let speed = parse_snapraid_speed(XEON).unwrap();
        assert_eq!(speed.buffers, 8);
        assert_eq!(speed.figures.len(), 12);
        assert_eq!(speed.figures[0], figure("gen1", "avx2", 60048.0));
        assert_eq!(speed.figures[3], figure("gen4", "avx2e", 19758.0));
        assert_eq!(speed.figures[6], figure("rec1", "avx2", 2179.0));
        assert_eq!(speed.figures[11], figure("rec6", "avx2", 331.0));
    }

    #[test]
    fn rejects_output_without_tables_or_with_a_bad_best() {
        let err = parse_snapraid_speed("snapraid v12.2\nUsage: ...\n").unwrap_err();
        assert!(err.to_string().contains("no gen/rec rows"));
        let bad = "            best    int8    avx2\n    gen1    sse9    1000    2000\n";
        let err = parse_snapraid_speed(bad).unwrap_err();
        assert!(err.to_string().contains("not a column"));
        let empty = "            best    int8    avx2\n    gen1    avx2    1000\n";
        assert!(parse_snapraid_speed(empty).is_err());
    }

    #[test]
    fn cells_end_where_their_text_ends() {
        assert_eq!(cells("  ab  c"), [(4, "ab"), (7, "c")]);
        assert!(cells("   ").is_empty());
    }

    #[test]
    fn picks_the_selected_kernel_per_op() {
        let json = r#"{"disks":8,"block_size":262144,"selected":"gfni","results":[
            {"op":"gen1","kernel":"scalar","mbps":1000.0},
            {"op":"gen1","kernel":"avx2","mbps":60000.0},
            {"op":"gen2","kernel":"avx512","mbps":50000.0},
            {"op":"gen2","kernel":"gfni","mbps":45000.5},
            {"op":"gen2","kernel":"scalar","mbps":900.0},
            {"op":"rec1","kernel":"gfni","mbps":20000.0}]}"#;
        let (speed, figures) = lhparity_figures(json).unwrap();
        assert_eq!((speed.disks, speed.block_size), (8, 262144));
        assert_eq!(
            figures,
            [
                figure("gen1", "avx2", 60000.0),
                figure("gen2", "gfni", 45000.5),
                figure("rec1", "gfni", 20000.0)
            ]
        );
        let err = lhparity_figures("{\"disks\":8}").unwrap_err();
        assert!(format!("{err:#}").contains("lhparity speedtest --json"));
    }
}
