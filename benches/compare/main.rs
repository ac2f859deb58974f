//! `compare`: runs our binaries and their peers (snapraid, mergerfs, fio, the raw
//! disk) side by side on this machine and reports medians and ratios.
//!
//! ```text
//! cargo build --release                       # lhparity, lhfs
//! cargo run --release -p lhfs-benches --bin compare -- [--only parity-speed] [--reps 5]
//! ```
//!
//! Each row alternates its variants (A B A B ...) so that other load on a shared
//! host hits them alike; only ratios within one run are meaningful. The Markdown
//! table goes to stdout, progress to stderr, and the full record to `--json`.
//!
//! The rows (`--list`): `parity-speed` (parity kernels in cache), `parity-sync`,
//! `parity-scrub` and `parity-fix` (lhparity against snapraid on an array of 4 data
//! loop disks, 1 GiB each by default, 1 and 2 parity levels), `disk-read` (the raw
//! ext4 reference), `pool-fio` and `pool-meta` (fio file I/O and metadata operations
//! on a raw ext4 folder against lhfs, with FUSE passthrough on and off, and mergerfs
//! pooling it). The default sizes (`scale.rs`) make a full run take about 10 minutes
//! on 2 cores; `--data-per-disk`, `--fio-size`, `--random-secs` and `--meta-files`
//! change them. The disk and pool rows need root, the pool
//! rows also `/dev/fuse`. A row whose lhparity subcommand is not in this build
//! (`lhparity --help`) is listed as not available; that does not fail the run. A pool
//! variant whose program is missing (lhfs not built, mergerfs not installed) is left
//! out and listed under "Variants that did not run"; the other variants still run.
//! `--smoke` shrinks every row to seconds, to check that it works.
//!
//! ```text
//! cargo build --release -p lhfs-cli
//! cargo run --release -p lhfs-benches --bin compare -- --only pool-fio,pool-meta --reps 3
//! ```
//!
//! Modules: `env` (machine and tool versions), `measure` (alternation and
//! statistics), `report` (Markdown and JSON), `disks` (loop-mounted scratch disks,
//! cache control), `interrupt` (Ctrl-C), `rows` (one file per comparison; the parity
//! rows share their array setup in `rows/parity_array.rs`, the pool rows their
//! image and mounts in `rows/pool.rs`).

mod disks;
mod env;
mod interrupt;
mod measure;
mod report;
mod rows;
mod scale;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Result};
use clap::Parser;

use crate::report::{Report, RowOutcome};

#[derive(Debug, Parser)]
#[command(about = "Side-by-side comparison of lhparity/lhfs with snapraid/mergerfs/raw disk")]
struct Args {
    /// Tiny sizes and one repetition: checks that every row works, in seconds
    /// (parity-speed still takes about a minute: snapraid -T has a fixed length;
    /// each parity-sync/scrub/fix run still includes snapraid's 2 s pause per sync).
    #[arg(long)]
    smoke: bool,
    /// Run only these rows (comma-separated); see --list.
    #[arg(long, value_delimiter = ',', value_name = "ROW[,ROW]")]
    only: Option<Vec<String>>,
    /// Repetitions per variant [default: 3, or 1 with --smoke].
    #[arg(long, value_name = "N")]
    reps: Option<usize>,
    /// Where to write the JSON record [default: <workspace>/target/compare.json].
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Folder holding lhparity and lhfs [default: <workspace>/target/release].
    #[arg(long, value_name = "DIR")]
    bin_dir: Option<PathBuf>,
    /// Install snapraid, mergerfs and fio with apt-get first.
    #[arg(long)]
    install_peers: bool,
    /// Parent folder for scratch disk images.
    #[arg(long, value_name = "DIR", default_value = "/var/tmp")]
    work_dir: PathBuf,
    /// List the rows and exit.
    #[arg(long)]
    list: bool,
    /// Data per disk of the parity arrays (4 data disks) and of disk-read
    /// [default: 1G, or 24M with --smoke].
    #[arg(long, value_name = "SIZE", value_parser = scale::parse_size)]
    data_per_disk: Option<u64>,
    /// File size of pool-fio's sequential write and read [default: 1G, or 64M with
    /// --smoke].
    #[arg(long, value_name = "SIZE", value_parser = scale::parse_size)]
    fio_size: Option<u64>,
    /// Seconds of pool-fio's random reads per run [default: 5, or 2 with --smoke].
    #[arg(long, value_name = "N")]
    random_secs: Option<u32>,
    /// Files of pool-meta, 200 per folder [default: 10000, or 1000 with --smoke].
    #[arg(long, value_name = "N")]
    meta_files: Option<usize>,
}

fn workspace_root() -> &'static Path {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest)
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<ExitCode> {
    if args.list {
        for row in rows::ROWS {
            println!("{:<14} {}", row.name, row.about);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let selected = rows::select(args.only.as_deref())?;
    let scale = scale::Scale::new(
        args.smoke,
        scale::Overrides {
            data_per_disk: args.data_per_disk,
            fio_file: args.fio_size,
            random_secs: args.random_secs,
            meta_files: args.meta_files,
        },
    )?;
    let reps = args.reps.unwrap_or(if args.smoke { 1 } else { 3 });
    if reps == 0 {
        bail!("--reps must be at least 1");
    }
    interrupt::install();
    if args.install_peers {
        env::install_peers()?;
    }
    let bin_dir = args
        .bin_dir
        .unwrap_or_else(|| workspace_root().join("target/release"));
    let json = args
        .json
        .unwrap_or_else(|| workspace_root().join("target/compare.json"));
    let env = env::Env::record(&bin_dir);
    let ctx = rows::Ctx {
        env: &env,
        bin_dir: &bin_dir,
        work_dir: &args.work_dir,
        reps,
        scale,
        skipped: Default::default(),
    };

    let mut outcomes = Vec::new();
    for row in selected {
        if interrupt::check().is_err() {
            break;
        }
        eprintln!("running {} ({reps} repetition(s) per variant)...", row.name);
        let mut outcome = RowOutcome {
            name: row.name.into(),
            lines: Vec::new(),
            error: None,
            not_available: None,
            skipped: Vec::new(),
            seconds: 0.0,
        };
        let start = std::time::Instant::now();
        let result = (row.run)(&ctx);
        outcome.seconds = start.elapsed().as_secs_f64();
        eprintln!("{} took {:.0} s", row.name, outcome.seconds);
        outcome.skipped = ctx.skipped.take();
        match result {
            Ok(lines) => outcome.lines = lines,
            Err(e) => match e.downcast_ref::<rows::NotAvailable>() {
                Some(why) => {
                    eprintln!("row {} skipped: {why}", row.name);
                    outcome.not_available = Some(why.to_string());
                }
                None => {
                    eprintln!("row {} failed: {e:#}", row.name);
                    outcome.error = Some(format!("{e:#}"));
                }
            },
        }
        outcomes.push(outcome);
    }

    let interrupted = interrupt::check().is_err();
    let failed = outcomes.iter().any(|o| o.error.is_some());
    let report = Report {
        env,
        reps,
        smoke: args.smoke,
        scale,
        rows: outcomes,
    };
    print!("{}", report.markdown());
    report.write_json(&json)?;
    eprintln!("wrote {}", json.display());
    Ok(if interrupted {
        eprintln!("interrupted: the report holds only the rows that finished");
        ExitCode::from(130)
    } else if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
