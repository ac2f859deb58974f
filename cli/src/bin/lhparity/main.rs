//! `lhparity`: snapshot parity for a set of data disks.

mod speedtest;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "lhparity",
    version,
    about = "Snapshot parity for plain data disks (SnapRAID-compatible parity)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Measure the parity kernels of this CPU (like `snapraid -T`).
    Speedtest(speedtest::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Speedtest(args) => speedtest::run(&args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("lhparity: {err:#}");
            ExitCode::from(1)
        }
    }
}
