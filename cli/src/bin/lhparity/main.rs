//! `lhparity`: snapshot parity for a set of data disks.

mod commands;
mod metrics;
mod progress;
mod speedtest;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::{Parser, Subcommand};
use parity_core::metrics::{Command as Recorded, LastRun};

#[derive(Parser)]
#[command(
    name = "lhparity",
    version,
    about = "Snapshot parity for plain data disks (SnapRAID-compatible parity)"
)]
struct Cli {
    /// The array config (snapraid.conf syntax).
    #[arg(
        short = 'c',
        long = "conf",
        global = true,
        default_value = "/etc/lhparity.conf"
    )]
    conf: PathBuf,
    /// No progress display and no closing summary (errors and warnings still print).
    #[arg(short, long, global = true)]
    quiet: bool,
    /// Accept data disks sharing a device and parity on a data disk's device.
    #[arg(long, global = true)]
    force_device: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Update the parity with the changes on the data disks.
    Sync(commands::SyncArgs),
    /// Show what changed since the last sync (exit 2 when a sync is needed).
    Diff(commands::DiffArgs),
    /// Verify the least recently verified part of the array and record bad blocks.
    Scrub(commands::ScrubArgs),
    /// Verify everything (or chosen disks and files) without changing anything.
    Check(commands::CheckArgs),
    /// Check the array, then rebuild damaged, deleted or lost files and wrong or
    /// missing parity.
    Fix(commands::FixArgs),
    /// Files, bytes, sync and scrub state per disk, bad blocks.
    Status(commands::StatusArgs),
    /// The files the state knows, with disk and size.
    List,
    /// Files with the same content anywhere in the array, from the stored block
    /// hashes (no disk is read).
    Dup,
    /// Measure the parity kernels of this CPU (like `snapraid -T`).
    Speedtest(speedtest::Args),
}

/// Commands that only read and print go quietly when whoever reads their output stops
/// (`lhparity list | head`), as command-line tools do, instead of failing on a
/// write to a closed pipe. Those that change the array keep running: their output
/// is not worth a half-done sync.
fn end_quietly_when_the_reader_leaves() {
    // SAFETY: restores the default disposition of SIGPIPE (ended by the signal),
    // before any thread is started.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if matches!(
        cli.command,
        Command::Diff(_)
            | Command::Status(_)
            | Command::Check(_)
            | Command::List
            | Command::Dup
            | Command::Speedtest(_)
    ) {
        end_quietly_when_the_reader_leaves();
    }
    parity_core::pipeline::raise_open_file_limit();
    let ctx = commands::Context {
        conf: cli.conf,
        quiet: cli.quiet,
        force_device: cli.force_device,
    };
    let start = parity_core::sync::now();
    let clock = Instant::now();
    let (command, result) = match cli.command {
        Command::Sync(args) => (Recorded::Sync, commands::sync(&ctx, &args)),
        Command::Diff(args) => (Recorded::Diff, commands::diff(&ctx, &args)),
        Command::Scrub(args) => (Recorded::Scrub, commands::scrub(&ctx, &args)),
        Command::Check(args) => (Recorded::Check, commands::check(&ctx, &args)),
        Command::Fix(args) => (Recorded::Fix, commands::fix(&ctx, &args)),
        Command::Status(args) => (Recorded::Status, commands::status(&ctx, &args)),
        Command::List => return exit(commands::list(&ctx)),
        Command::Dup => return exit(commands::dup(&ctx)),
        Command::Speedtest(args) => return exit(speedtest::run(&args)),
    };
    let outcome = result.unwrap_or_else(|err| {
        eprintln!("lhparity: {}", message(&err));
        commands::Outcome {
            code: 1,
            bytes: 0,
            errors: 1,
        }
    });
    let run = LastRun {
        start,
        seconds: clock.elapsed().as_secs_f64(),
        exit_code: outcome.code,
        bytes: outcome.bytes,
        errors: outcome.errors,
    };
    // The metrics are a report on the command, not part of it: failing to write them
    // never changes its exit code.
    if let Err(e) = metrics::record(&ctx.conf, command, run) {
        eprintln!("lhparity: warning: {e}; the metrics file keeps its previous content");
    }
    ExitCode::from(outcome.code)
}

/// The exit code of a command that is not recorded in the metrics, with its error
/// printed.
fn exit(result: anyhow::Result<ExitCode>) -> ExitCode {
    result.unwrap_or_else(|err| {
        eprintln!("lhparity: {}", message(&err));
        ExitCode::from(1)
    })
}

/// The error and its causes, leaving out a cause whose text the message already
/// includes (library errors name their cause themselves).
fn message(err: &anyhow::Error) -> String {
    let mut text = err.to_string();
    for cause in err.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text = format!("{text}: {cause}");
        }
    }
    text
}
