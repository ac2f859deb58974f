//! lhparity's metrics file and `status --prometheus`, checked against the state,
//! against promtool, and against the contrib dashboard and alert rules.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

/// An array with a `metrics-file` line; returns it with the metrics file's path.
fn array_with_metrics(disks: usize) -> (Array, PathBuf) {
    let array = Array::new(disks, 1, 64, "");
    let dir = array.root.path().join("textfile");
    fs::create_dir_all(&dir).expect("metrics dir");
    let path = dir.join("lhparity.prom");
    let mut conf = fs::OpenOptions::new()
        .append(true)
        .open(&array.conf)
        .expect("open config");
    writeln!(conf, "\nmetrics-file {}", path.display()).expect("append to config");
    (array, path)
}

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64()
}

/// Flips one byte of a file and puts its mtime back, like silent corruption.
fn corrupt(path: &Path, offset: usize) {
    let mtime = fs::metadata(path).expect("meta").modified().expect("mtime");
    let mut bytes = fs::read(path).expect("read");
    bytes[offset] ^= 0x01;
    fs::write(path, &bytes).expect("write");
    let f = fs::File::options().write(true).open(path).expect("open");
    f.set_modified(mtime).expect("set mtime");
}

/// The lines of `text` without the ones that change from one moment to the next.
fn stable_lines(text: &str) -> Vec<&str> {
    text.lines()
        .filter(|l| !l.starts_with("lhparity_disk_free_bytes"))
        .collect()
}

#[test]
fn metrics_follow_sync_scrub_and_failures() {
    let (array, prom) = array_with_metrics(2);
    array.write(0, "a.bin", 200_000, 1);
    array.write(0, "dir/b.txt", 1000, 2);
    array.write(1, "c.bin", 150_000, 3);
    let before = now();
    expect_code(&array.lhparity(&["sync"]), 0);
    let text = fs::read_to_string(&prom).expect("the sync wrote the metrics file");

    let state = layout(&array).state;
    for disk in &state.disks {
        let files = disk.files.len() as f64;
        let bytes: u64 = disk.files.iter().map(|f| f.size).sum();
        let label = format!("{{disk=\"{}\"}}", disk.name);
        assert_eq!(must(&text, &format!("lhparity_disk_files{label}")), files);
        assert_eq!(
            must(&text, &format!("lhparity_disk_file_bytes{label}")),
            bytes as f64
        );
        assert!(must(&text, &format!("lhparity_disk_free_bytes{label}")) > 0.0);
    }
    assert_eq!(
        must(&text, "lhparity_positions"),
        state.positions.len() as f64
    );
    assert_eq!(must(&text, "lhparity_positions_awaiting_sync"), 0.0);
    assert_eq!(must(&text, "lhparity_bad_blocks"), 0.0);
    assert_eq!(must(&text, "lhparity_parity_levels"), 1.0);
    assert_eq!(must(&text, "lhparity_block_size_bytes"), 65_536.0);
    let synced = must(&text, "lhparity_last_sync_time_seconds");
    assert_eq!(synced, state.last_sync as f64);
    assert!(synced >= before.floor() && synced <= now(), "{synced}");
    let sync = "{command=\"sync\"}";
    assert_eq!(
        must(&text, &format!("lhparity_last_run_exit_code{sync}")),
        0.0
    );
    assert_eq!(must(&text, &format!("lhparity_last_run_errors{sync}")), 0.0);
    let sync_start = must(
        &text,
        &format!("lhparity_last_run_start_time_seconds{sync}"),
    );
    assert!(sync_start >= before.floor() && sync_start <= now());
    assert!(must(&text, &format!("lhparity_last_run_processed_bytes{sync}")) >= 351_000.0);
    // The sync stamps the blocks it hashed: every position in use is a day old at most.
    let in_use = must(&text, "lhparity_scrub_age_seconds_count");
    assert!(in_use > 0.0);
    assert_eq!(
        must(&text, "lhparity_scrub_age_seconds_bucket{le=\"86400\"}"),
        in_use
    );
    assert_eq!(must(&text, "lhparity_positions_never_scrubbed"), 0.0);
    assert_eq!(must(&text, "lhparity_scrub_oldest_age_seconds"), 0.0);
    promtool_check_metrics(&text);

    corrupt(&array.disks[1].join("c.bin"), 70_000);
    expect_code(&array.lhparity(&["scrub", "-p", "full"]), 1);
    let text = fs::read_to_string(&prom).expect("metrics file");
    assert_eq!(must(&text, "lhparity_bad_blocks"), 1.0);
    let scrub = "{command=\"scrub\"}";
    assert_eq!(
        must(&text, &format!("lhparity_last_run_exit_code{scrub}")),
        1.0
    );
    assert_eq!(
        must(&text, &format!("lhparity_last_run_errors{scrub}")),
        1.0
    );
    assert!(must(&text, &format!("lhparity_last_run_processed_bytes{scrub}")) > 0.0);
    // A scrub that found an error is not a clean scrub.
    assert_eq!(must(&text, "lhparity_last_scrub_time_seconds"), 0.0);
    // The sync's run is still there, unchanged.
    assert_eq!(
        must(
            &text,
            &format!("lhparity_last_run_start_time_seconds{sync}")
        ),
        sync_start
    );
    assert_eq!(
        must(&text, &format!("lhparity_last_run_exit_code{sync}")),
        0.0
    );
    promtool_check_metrics(&text);

    // `status --prometheus` prints what the file holds (before recording itself).
    let out = array.lhparity(&["status", "--prometheus"]);
    expect_code(&out, 0);
    let printed = stdout(&out);
    assert_eq!(stable_lines(&printed), stable_lines(&text));
    promtool_check_metrics(&printed);
    let text = fs::read_to_string(&prom).expect("metrics file");
    let status = "{command=\"status\"}";
    assert_eq!(
        must(&text, &format!("lhparity_last_run_exit_code{status}")),
        0.0
    );

    // A command that fails with an error is recorded with exit code 1.
    let out = array.lhparity(&["check", "-d", "no-such-disk"]);
    expect_code(&out, 1);
    let text = fs::read_to_string(&prom).expect("metrics file");
    let check = "{command=\"check\"}";
    assert_eq!(
        must(&text, &format!("lhparity_last_run_exit_code{check}")),
        1.0
    );
    assert_eq!(
        must(&text, &format!("lhparity_last_run_errors{check}")),
        1.0
    );
    assert_eq!(must(&text, "lhparity_bad_blocks"), 1.0);
}

#[test]
fn a_metrics_file_that_cannot_be_written_is_only_a_warning() {
    let (array, prom) = array_with_metrics(1);
    array.write(0, "a.bin", 10_000, 1);
    // A non-empty folder where the file goes: the rename over it fails.
    fs::create_dir_all(prom.join("in-the-way")).expect("folder in the way");
    let out = array.lhparity(&["sync"]);
    expect_code(&out, 0);
    let err = stderr(&out);
    assert!(
        err.contains("warning") && err.contains("metrics file"),
        "{err}"
    );
    assert!(!exists(&prom.with_extension("prom.tmp")));
}

/// The workspace's `contrib/` folder.
fn contrib() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../contrib")
}

/// Every `lhparity_*` and `lhfs_*` name in a query.
fn metric_names(query: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = query.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b':';
        if word(bytes[i]) && (i == 0 || !word(bytes[i - 1])) {
            let end = (i..bytes.len())
                .find(|&j| !word(bytes[j]))
                .unwrap_or(bytes.len());
            let name = &query[i..end];
            if name.starts_with("lhparity_") || name.starts_with("lhfs_") {
                names.insert(name.to_string());
            }
            i = end;
        } else {
            i += 1;
        }
    }
    names
}

/// Every string under an `expr` key of a JSON value.
fn exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("expr", serde_json::Value::String(s)) => out.push(s.clone()),
                    _ => exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| exprs(v, out)),
        _ => {}
    }
}

/// The lhfs metric names of the contract table in contrib/README.md.
fn lhfs_contract() -> BTreeSet<String> {
    lhfs_contract_table().into_keys().collect()
}

/// The sample names lhparity writes for a synced and scrubbed array (with every
/// command run once, so that every family is present).
fn lhparity_names() -> BTreeSet<String> {
    let (array, prom) = array_with_metrics(1);
    array.write(0, "a.bin", 100_000, 1);
    expect_code(&array.lhparity(&["sync"]), 0);
    expect_code(&array.lhparity(&["scrub", "-p", "full"]), 0);
    let text = fs::read_to_string(prom).expect("metrics file");
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_string)
        .collect()
}

fn check_names(what: &str, queries: &[String], lhparity: &BTreeSet<String>) {
    let lhfs = lhfs_contract();
    let mut used = 0;
    for q in queries {
        for name in metric_names(q) {
            used += 1;
            let known = if name.starts_with("lhfs_") {
                lhfs.contains(&name)
            } else {
                lhparity.contains(&name)
            };
            assert!(
                known,
                "{what}: `{name}` (in `{q}`) is not a metric we serve"
            );
        }
    }
    assert!(used > 0, "{what} uses no metric");
}

#[test]
fn the_dashboard_uses_only_metrics_we_serve() {
    let text =
        fs::read_to_string(contrib().join("grafana/lhfs-dashboard.json")).expect("the dashboard");
    let dash: serde_json::Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    assert_eq!(dash["__inputs"][0]["name"], "DS_PROMETHEUS");
    let mut queries = Vec::new();
    exprs(&dash, &mut queries);
    check_names("dashboard", &queries, &lhparity_names());
    for lhfs in lhfs_contract() {
        assert!(
            queries.iter().any(|q| metric_names(q).contains(&lhfs)),
            "the dashboard shows no panel of {lhfs}"
        );
    }
}

#[test]
fn the_alert_rules_load_and_use_only_metrics_we_serve() {
    let path = contrib().join("prometheus/lhfs-alerts.yml");
    if let Some(promtool) = promtool() {
        let out = Command::new(promtool)
            .args(["check", "rules"])
            .arg(&path)
            .output()
            .expect("run promtool");
        assert!(
            out.status.success(),
            "promtool check rules:\n{}{}",
            stdout(&out),
            stderr(&out)
        );
    }
    // The expressions are the `expr:` blocks: the lines from `expr:` to the next key.
    let text = fs::read_to_string(&path).expect("the alert rules");
    let mut queries = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        let t = line.trim();
        if let Some(rest) = t.strip_prefix("expr:") {
            queries.extend(current.take());
            current = Some(rest.to_string());
        } else if let Some(q) = current.as_mut() {
            if t.contains(": ") || t.ends_with(':') {
                queries.extend(current.take());
            } else {
                q.push(' ');
                q.push_str(t);
            }
        }
    }
    queries.extend(current);
    assert_eq!(queries.len(), 5, "{queries:?}");
    check_names("alert rules", &queries, &lhparity_names());
}
