//! `lhparity speedtest` as a user runs it.

mod common;

use common::{run, stderr, stdout};

const QUICK: &[&str] = &["speedtest", "--period-ms", "1", "--block-size", "4096"];

#[test]
fn table_lists_every_op_and_the_selected_kernel() {
    let out = run("lhparity", QUICK, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    for op in ["gen1", "gen6", "rec1", "rec6"] {
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with(op))
            .unwrap_or_else(|| panic!("no {op} row in:\n{text}"));
        // name, best kernel, then one positive figure per available kernel
        let fields: Vec<&str> = line.split_whitespace().collect();
        assert!(fields.len() >= 3, "{line}");
        for f in &fields[2..] {
            let v: f64 = f
                .parse()
                .unwrap_or_else(|_| panic!("not a number: {f} in {line}"));
            assert!(v > 0.0, "{line}");
        }
    }
    assert!(text.contains("selected:"), "{text}");
}

#[test]
fn forced_kernel_is_used_and_json_is_complete() {
    let mut args = QUICK.to_vec();
    args.push("--json");
    let out = run("lhparity", &args, &[("LHPARITY_KERNEL", "scalar")]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON output");
    assert_eq!(report["selected"], "scalar");
    assert_eq!(report["disks"], 8);
    assert_eq!(report["block_size"], 4096);
    let results = report["results"].as_array().expect("results array");
    for op in [
        "gen1", "gen2", "gen3", "gen4", "gen5", "gen6", "rec1", "rec6",
    ] {
        let row = results
            .iter()
            .find(|r| r["op"] == op && r["kernel"] == "scalar")
            .unwrap_or_else(|| panic!("no scalar {op} row"));
        assert!(row["mbps"].as_f64().expect("mbps") > 0.0);
    }
}

#[test]
fn unknown_kernel_is_a_clear_error() {
    let out = run("lhparity", QUICK, &[("LHPARITY_KERNEL", "altivec")]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("unknown parity kernel `altivec`"), "{err}");
    assert!(err.contains("scalar, ssse3, avx2, avx512, gfni"), "{err}");
}

#[test]
fn bad_block_size_is_refused() {
    let out = run("lhparity", &["speedtest", "--block-size", "1000"], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("not a positive multiple of 64"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn selected_only_measures_one_kernel() {
    let mut args = QUICK.to_vec();
    args.extend(["--json", "--selected-only"]);
    let out = run("lhparity", &args, &[("LHPARITY_KERNEL", "scalar")]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON output");
    let results = report["results"].as_array().expect("results array");
    // gen1..gen6 and rec1..rec6, each once, all with the forced kernel.
    assert_eq!(results.len(), 12);
    assert!(results.iter().all(|r| r["kernel"] == "scalar"), "{report}");
}

#[test]
fn fewer_disks_than_levels_leave_out_the_rebuilds_they_cannot_hold() {
    let args = [
        "speedtest",
        "--disks",
        "2",
        "--block-size",
        "4096",
        "--period-ms",
        "5",
        "--json",
        "--selected-only",
    ];
    let out = run("lhparity", &args, &[("LHPARITY_KERNEL", "scalar")]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON output");
    let ops: Vec<&str> = report["results"]
        .as_array()
        .expect("results array")
        .iter()
        .map(|r| r["op"].as_str().expect("op"))
        .collect();
    assert_eq!(
        ops,
        ["gen1", "gen2", "gen3", "gen4", "gen5", "gen6", "rec1", "rec2"]
    );
}
