//! Smoke test of the comparison runner (`compare`, package `lhfs-benches`): runs it
//! with `--smoke` against the `lhparity` and `lhfs` this workspace built, and checks
//! the JSON record: every selected row is there; a row that ran has well-formed lines
//! (finite positive figures, a unit, a ratio wherever its sub-row has a baseline);
//! a row that did not run says why, and the only acceptable reason for a failure is a
//! peer (snapraid, mergerfs, fio) that is not installed.
//!
//! The rows that take more than a few seconds even at smoke sizes (`SLOW`) are left
//! out unless `LHFS_COMPARE_SMOKE_ALL=1`; any row added later is covered by default.
//!
//! This is an integration test of `lhfs-benches`, so cargo builds `compare` for it;
//! `lhparity` and `lhfs` are taken from the same folder, where `cargo test
//! --workspace` builds them for the `lhfs-cli` tests. The disk rows need root (loop
//! devices): elsewhere the test prints `SKIPPED:` and passes, unless
//! `LHFS_REQUIRE_FUSE=1` (as on CI, which runs as root) makes that a failure.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use serde_json::Value;

/// Rows that take 20 s to a minute each even with `--smoke` (snapraid -T has a fixed
/// length; snapraid pauses 2 s per sync and parity-sync runs six syncs per tool).
const SLOW: [&str; 2] = ["parity-speed", "parity-sync"];

fn skip(why: &str) {
    if std::env::var("LHFS_REQUIRE_FUSE").as_deref() == Ok("1") {
        panic!("compare_smoke: root is required (LHFS_REQUIRE_FUSE=1) but {why}");
    }
    eprintln!("\n*** SKIPPED: compare_smoke: {why} ***\n");
}

/// The row names `compare --list` prints, in table order.
fn listed_rows(compare: &Path) -> Vec<String> {
    let out = Command::new(compare)
        .arg("--list")
        .output()
        .expect("running compare --list");
    assert!(out.status.success(), "compare --list failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

fn number(line: &Value, key: &str) -> f64 {
    line["summary"][key]
        .as_f64()
        .unwrap_or_else(|| panic!("summary.{key} is not a number in {line}"))
}

/// Checks one line of a row that ran.
fn check_line(line: &Value) {
    for key in ["row", "variant", "unit"] {
        let text = line[key].as_str().unwrap_or_default();
        assert!(!text.trim().is_empty(), "{key} missing in {line}");
    }
    let (median, min, max) = (
        number(line, "median"),
        number(line, "min"),
        number(line, "max"),
    );
    for v in [median, min, max] {
        assert!(
            v.is_finite() && v > 0.0,
            "figure {v} is not positive in {line}"
        );
    }
    assert!(
        min <= median && median <= max,
        "min <= median <= max fails in {line}"
    );
    assert!(
        line["summary"]["n"].as_u64().unwrap_or(0) >= 1,
        "n < 1 in {line}"
    );
    assert!(
        line["is_baseline"].is_boolean(),
        "is_baseline missing in {line}"
    );
}

/// Every sub-row (same `row` and `unit`) with a baseline gives each of its lines a
/// finite positive ratio, 1 for the baseline itself; a row that ran has at least one
/// line compared against a baseline.
fn check_ratios(name: &str, lines: &[Value]) {
    let mut groups: BTreeMap<(String, String), Vec<&Value>> = BTreeMap::new();
    for line in lines {
        let key = (line["row"].to_string(), line["unit"].to_string());
        groups.entry(key).or_default().push(line);
    }
    let mut compared = 0;
    for group in groups.values() {
        if !group.iter().any(|l| l["is_baseline"] == true) {
            continue;
        }
        for line in group {
            let ratio = line["ratio"].as_f64();
            assert!(
                ratio.is_some_and(|r| r.is_finite() && r > 0.0),
                "row {name}: no ratio against the baseline in {line}"
            );
            if line["is_baseline"] == true {
                assert_eq!(ratio, Some(1.0), "row {name}: baseline ratio in {line}");
            } else {
                compared += 1;
            }
        }
    }
    assert!(
        compared > 0,
        "row {name}: nothing is compared with a baseline"
    );
}

#[test]
fn compare_smoke_every_row_reports_well_formed_figures() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return skip("not root (the runner mounts loop devices)");
    }
    let compare = Path::new(env!("CARGO_BIN_EXE_compare"));
    let bin_dir = compare.parent().expect("compare is in a folder");
    for ours in ["lhparity", "lhfs"] {
        assert!(
            bin_dir.join(ours).is_file(),
            "{ours} is not in {}; run `cargo test --workspace` (or `cargo build`) so \
             that it is built",
            bin_dir.display()
        );
    }
    let all = std::env::var("LHFS_COMPARE_SMOKE_ALL").as_deref() == Ok("1");
    let rows: Vec<String> = listed_rows(compare)
        .into_iter()
        .filter(|r| all || !SLOW.contains(&r.as_str()))
        .collect();
    assert!(!rows.is_empty(), "compare --list printed no rows");

    let dir = tempfile::tempdir().expect("temp dir");
    let json = dir.path().join("compare.json");
    let started = Instant::now();
    let out = Command::new(compare)
        .args(["--smoke", "--only", &rows.join(",")])
        .arg("--bin-dir")
        .arg(bin_dir)
        .arg("--json")
        .arg(&json)
        .output()
        .expect("running compare");
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!(
        "compare --smoke --only {} took {:.1} s",
        rows.join(","),
        started.elapsed().as_secs_f64()
    );
    let text = std::fs::read_to_string(&json)
        .unwrap_or_else(|e| panic!("no JSON record ({e}); compare said:\n{stderr}"));
    let report: Value = serde_json::from_str(&text).expect("the record is JSON");
    assert_eq!(report["smoke"], true);

    let tools = report["env"]["tools"].as_array().expect("env.tools");
    let missing: Vec<&str> = tools
        .iter()
        .filter(|t| t["status"] == "not installed")
        .filter_map(|t| t["name"].as_str())
        .collect();
    for ours in ["lhparity", "lhfs"] {
        let tool = tools.iter().find(|t| t["name"] == ours);
        assert!(
            tool.is_some_and(|t| t["status"] == "ok"),
            "{ours} not usable: {tool:?}"
        );
    }
    if !missing.is_empty() {
        eprintln!("peers not installed here: {}", missing.join(", "));
    }

    let outcomes = report["rows"].as_array().expect("rows");
    let names: Vec<&str> = outcomes.iter().filter_map(|r| r["name"].as_str()).collect();
    assert_eq!(names, rows, "every selected row is in the record, in order");
    let mut failed = false;
    for row in outcomes {
        let name = row["name"].as_str().unwrap_or_default();
        let lines = row["lines"].as_array().expect("lines");
        if let Some(error) = row["error"].as_str() {
            // A row may fail only because a peer is missing, and must say which.
            assert!(
                missing
                    .iter()
                    .any(|peer| error.contains(&format!("{peer} is not installed"))),
                "row {name} failed: {error}"
            );
            assert!(lines.is_empty(), "row {name} failed but has lines");
            failed = true;
        } else if let Some(why) = row["not_available"].as_str() {
            assert!(!why.trim().is_empty(), "row {name}: empty reason");
        } else {
            assert!(!lines.is_empty(), "row {name} ran but reported nothing");
            lines.iter().for_each(check_line);
            check_ratios(name, lines);
        }
    }
    // The exit code says whether a row failed.
    assert_eq!(
        out.status.success(),
        !failed,
        "exit status {} does not match the rows; compare said:\n{stderr}",
        out.status
    );
}
