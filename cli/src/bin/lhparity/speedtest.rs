//! `lhparity speedtest`: prints the speed of every available parity kernel, as a table
//! like `snapraid -T` or as JSON.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Result};
use parity_core::raid::{Kernel, BLOCK_MULTIPLE, MAX_DATA};
use parity_core::speedtest::{measure, Op, Shape};
use serde::Serialize;

#[derive(clap::Args)]
pub struct Args {
    /// Print JSON instead of the table.
    #[arg(long)]
    json: bool,
    /// How long to run each measurement, in milliseconds.
    #[arg(long, default_value_t = 60)]
    period_ms: u64,
    /// Data blocks in the test stripe.
    #[arg(long, default_value_t = 8)]
    disks: usize,
    /// Bytes per block (a multiple of 64).
    #[arg(long, default_value_t = 256 * 1024)]
    block_size: usize,
    /// Measure only the selected kernel (the one sync and fix use).
    #[arg(long)]
    selected_only: bool,
}

#[derive(Serialize)]
struct Report {
    disks: usize,
    block_size: usize,
    selected: String,
    results: Vec<Row>,
}

#[derive(Serialize)]
struct Row {
    op: String,
    kernel: String,
    mbps: f64,
}

pub fn run(args: &Args) -> Result<ExitCode> {
    if args.disks == 0 || args.disks > MAX_DATA {
        bail!(
            "--disks {} is out of range: use 1 to {MAX_DATA}",
            args.disks
        );
    }
    if args.block_size == 0 || !args.block_size.is_multiple_of(BLOCK_MULTIPLE) {
        bail!(
            "--block-size {} is not a positive multiple of {BLOCK_MULTIPLE} bytes",
            args.block_size
        );
    }
    let selected = Kernel::selected()?;
    let kernels = if args.selected_only {
        vec![selected]
    } else {
        Kernel::available()
    };
    let shape = Shape {
        disks: args.disks,
        block_size: args.block_size,
    };
    let period = Duration::from_millis(args.period_ms);
    if !args.json {
        print_header(shape, selected, &kernels);
    }
    let mut results = Vec::new();
    // Rebuilding n data blocks needs n data disks: with fewer, recN is left out.
    let ops = Op::all()
        .into_iter()
        .filter(|op| !matches!(op, Op::Rec(n) if *n > shape.disks));
    for op in ops {
        if !args.json {
            if op == Op::Rec(1) {
                println!("\nRecovering lost data blocks (fix):");
                print_columns(&kernels);
            }
            print!("{:>6}{:>COL$}", op.name(), selected.name());
        }
        for &kernel in &kernels {
            let mbps = measure(kernel, op, shape, period)?;
            if !args.json {
                print!("{:>COL$.0}", mbps);
                use std::io::Write;
                std::io::stdout().flush()?;
            }
            results.push(Row {
                op: op.name(),
                kernel: kernel.name().to_string(),
                mbps,
            });
        }
        if !args.json {
            println!();
        }
    }
    if args.json {
        let report = Report {
            disks: shape.disks,
            block_size: shape.block_size,
            selected: selected.name().to_string(),
            results,
        };
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "\nThe selected kernel is `{selected}`; set LHPARITY_KERNEL to one of the columns to force another."
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Width of a kernel column of the table: the longest kernel name and a space.
const COL: usize = 10;

fn print_header(shape: Shape, selected: Kernel, kernels: &[Kernel]) {
    println!("lhparity {} parity speed test", env!("CARGO_PKG_VERSION"));
    println!("CPU: {}", cpu_model());
    println!(
        "Kernels this CPU can run: {} (selected: {selected})",
        kernels
            .iter()
            .map(|k| k.name())
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "{} data blocks of {} bytes, one thread. Figures are MB/s (10^6 bytes/s) of data,",
        shape.disks, shape.block_size
    );
    println!("parity bytes not counted; recN rebuilds N lost data blocks.");
    println!("\nGenerating parity (sync):");
    print_columns(kernels);
}

fn print_columns(kernels: &[Kernel]) {
    print!("{:>6}{:>COL$}", "", "best");
    for k in kernels {
        print!("{:>COL$}", k.name());
    }
    println!();
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}
