//! Helpers shared by the end-to-end tests: running the built binaries.
//!
//! The files in `tests/` are integration tests of the `lhfs-cli` package (see its
//! Cargo.toml), so cargo builds `lhfs` and `lhparity` before running them.
#![allow(dead_code)] // each test file uses its own subset

use std::path::PathBuf;
use std::process::{Command, Output};

/// The path of a workspace binary built for this test run.
pub fn bin(name: &str) -> PathBuf {
    PathBuf::from(match name {
        "lhparity" => env!("CARGO_BIN_EXE_lhparity"),
        "lhfs" => env!("CARGO_BIN_EXE_lhfs"),
        other => panic!("unknown binary {other}"),
    })
}

/// Runs a binary with arguments and extra environment variables.
pub fn run(name: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(bin(name));
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output()
        .unwrap_or_else(|e| panic!("running {name}: {e}"))
}

/// Standard output as text.
pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Standard error as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}
pub mod fuse;
