//! `lhfs`: pools branch directories into one mount, as mergerfs does.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use fs_union::mount::{mount_foreground, Plan};

#[derive(Parser)]
#[command(
    name = "lhfs",
    version,
    about = "Union filesystem: pool BRANCHES into one folder tree at MOUNTPOINT (mergerfs-compatible)",
    after_help = "Example: lhfs '/mnt/disk*' /mnt/pool -o category.create=mfs,minfreespace=10G -f\n\
                  Options take mergerfs's names; see README.md for the list."
)]
struct Cli {
    /// BRANCHES: PATH[=RW|RO|NC[,MINFREESPACE]] joined by `:`, wildcards allowed (may
    /// be left out when a `config=` file sets `branches=`); MOUNTPOINT: an existing
    /// directory.
    #[arg(value_names = ["BRANCHES", "MOUNTPOINT"], required = true, num_args = 1..=2)]
    paths: Vec<String>,

    /// Mount options, comma separated, mergerfs names (repeatable).
    #[arg(short = 'o', value_name = "OPTIONS")]
    options: Vec<String>,

    /// Stay in the foreground. This version always does; running as a daemon
    /// comes later.
    #[arg(short = 'f')]
    foreground: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // One path alone is the mountpoint; the branches then come from `config=`.
    let (branches, mountpoint) = match cli.paths.split_last() {
        Some((mountpoint, rest)) => (rest.first().map(String::as_str), PathBuf::from(mountpoint)),
        None => (None, PathBuf::new()),
    };
    let result = Plan::new(branches, &mountpoint, &cli.options)
        .and_then(|plan| mount_foreground(&plan.branches, &plan.mountpoint, plan.options));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("lhfs: {err}");
            ExitCode::from(1)
        }
    }
}
