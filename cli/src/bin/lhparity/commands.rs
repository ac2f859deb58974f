//! The array commands: argument handling and output formatting around
//! `parity_core::{sync, scrub, fix, status}`.

/// Writes a line of a command's report to standard output. A reader that went away
/// (`lhparity sync | head -1`) is no failure of the command, whose work is done by
/// then: the rest of the report is dropped instead of panicking.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use parity_core::config::Config;
use parity_core::fix::{self, FixOptions};
use parity_core::lock::ArrayLock;
use parity_core::name::shown;
use parity_core::scan::{DiskChanges, EntryChanges};
use parity_core::scrub::{self, CheckOptions, Plan, VerifyReport};
use parity_core::state::model::{DirEntry, FolderEntry};
use parity_core::status::{status as array_status, Status};
use parity_core::sync::{self, SyncOptions};
use serde_json::json;

use crate::metrics;
use crate::progress::Display;

/// What an array command did: its exit code and, for the metrics, the data bytes it
/// read or rebuilt and the errors it found.
pub struct Outcome {
    pub code: u8,
    pub bytes: u64,
    pub errors: u64,
}

impl Outcome {
    /// Exit code 0 without errors, 1 with.
    fn of(bytes: u64, errors: usize) -> Outcome {
        Outcome {
            code: u8::from(errors > 0),
            bytes,
            errors: errors as u64,
        }
    }
}

/// Options shared by every command.
pub struct Context {
    pub conf: PathBuf,
    pub quiet: bool,
    pub force_device: bool,
}

impl Context {
    /// Loads the config, prints its warnings, and checks the layout on disk.
    fn config(&self) -> Result<Config> {
        let config = Config::load(&self.conf)?;
        for w in &config.warnings {
            eprintln!("lhparity: {w}");
        }
        for w in config.check_layout(self.force_device)? {
            eprintln!("lhparity: {w}");
        }
        Ok(config)
    }

    /// [`Context::config`] for a command that must run alone on the array: the
    /// config and the array's lock, held until the command returns.
    fn locked_config(&self) -> Result<(Config, ArrayLock)> {
        let config = self.config()?;
        let lock = ArrayLock::acquire(&config)?;
        Ok((config, lock))
    }
}

#[derive(clap::Args)]
pub struct SyncArgs {
    /// Sync even if a disk that had files is now empty or wholly rewritten.
    #[arg(short = 'E', long)]
    force_empty: bool,
    /// Sync even if more files are removed than delete-threshold allows.
    #[arg(short = 'D', long)]
    force_delete: bool,
    /// A full sync: compute all parity again from the data (also over parity files
    /// that no content file knows, or that are damaged everywhere).
    #[arg(short = 'F', long)]
    force_full: bool,
    /// Read and hash all new data in a pass of its own first, and sync only what
    /// reads back the same (snapraid's `sync -h`): a guard against silent errors of
    /// disks, cables or memory, for one more read of the new data.
    #[arg(long)]
    pre_hash: bool,
    /// Sync files that had data and are now empty (refused otherwise: a crash or a
    /// failing program can empty files).
    #[arg(short = 'Z', long)]
    force_zero: bool,
    /// Take files copied or moved from another data disk (same path, size and
    /// mtime as a file synced there) for new files, instead of first checking that
    /// their bytes are the originals'.
    #[arg(short = 'N', long)]
    force_nocopy: bool,
}

pub fn sync(ctx: &Context, args: &SyncArgs) -> Result<Outcome> {
    let (config, _lock) = ctx.locked_config()?;
    let display = Display::new("sync", ctx.quiet);
    parity_core::interrupt::install();
    let options = SyncOptions {
        force_empty: args.force_empty,
        force_delete: args.force_delete,
        force_full: args.force_full,
        pre_hash: args.pre_hash,
        force_zero: args.force_zero,
        force_nocopy: args.force_nocopy,
    };
    let report = sync::sync(&config, &options, &display)?;
    for n in &report.notes {
        eprintln!("lhparity: {n}");
    }
    for w in &report.warnings {
        eprintln!("lhparity: warning: {w}");
    }
    let files: usize = report.disks.iter().map(|d| d.files).sum();
    let mb = report.bytes as f64 / 1e6;
    if !ctx.quiet {
        for d in &report.disks {
            let c = &d.changes;
            if !c.is_empty() {
                out!(
                    "{}: {} added, {} removed, {} updated, {} moved, {} copied, {} restored",
                    d.name,
                    c.added.len().saturating_sub(d.copied),
                    c.removed.len(),
                    c.updated.len(),
                    c.moved.len(),
                    d.copied,
                    c.restored.len()
                );
            }
        }
        let copied: usize = report.disks.iter().map(|d| d.copied).sum();
        if copied > 0 {
            out!("{copied} file(s) copied or moved from another disk have their originals' bytes.");
        }
        if report.interrupted.is_some() {
            // Said below.
        } else if report.positions_synced == 0 && report.positions_left == 0 {
            if report.recorded {
                // Removed files, links, folders, modes or owners: no parity to compute.
                out!("No parity to compute; the changes are recorded ({files} files).");
            } else {
                out!("Nothing to do: the parity is up to date ({files} files).");
            }
        } else {
            out!(
                "Synced {} block positions, {:.1} MB of data from {files} files in {:.2} s ({:.0} MB/s).",
                report.positions_synced,
                mb,
                report.seconds,
                mb / report.seconds.max(1e-9)
            );
        }
        if report.positions_left > 0 && report.interrupted.is_none() {
            out!(
                "{} positions are left for the next sync (see the warnings above).",
                report.positions_left
            );
        }
    }
    if let Some(signal) = report.interrupted {
        // A full sync marks nothing ahead, so a plain sync would not finish it.
        let again = if args.force_full {
            "sync --force-full"
        } else {
            "sync"
        };
        if report.disks.is_empty() {
            // Stopped while copied files were compared with their originals.
            eprintln!(
                "lhparity: stopped by {} while comparing files copied between disks with \
                 their originals: nothing was recorded; run `lhparity {again}` again",
                parity_core::interrupt::name(signal)
            );
        } else {
            eprintln!(
                "lhparity: stopped by {}: {} positions synced and saved, {} left; run \
                 `lhparity {again}` again to finish",
                parity_core::interrupt::name(signal),
                report.positions_synced,
                report.positions_left
            );
        }
        return Ok(Outcome::of(report.bytes, report.warnings.len() + 1));
    }
    Ok(Outcome::of(report.bytes, report.warnings.len()))
}

#[derive(clap::Args)]
pub struct DiffArgs {
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// The state of the array for a command that only reads it, with a warning for
/// each content copy that is damaged, missing or older than the one used. With no
/// copy at all while a parity file holds data (the content disks not mounted), it
/// stops, as `check` does, rather than show an empty array.
fn load_state_noted(config: &Config) -> Result<sync::Loaded> {
    let mut loaded = sync::load_state(config).context("loading the content file")?;
    sync::require_state(config, &mut loaded)?;
    for note in &loaded.notes {
        eprintln!("lhparity: warning: {note}");
    }
    Ok(loaded)
}

/// The paths of empty folders.
fn paths(dirs: &[DirEntry]) -> Vec<&str> {
    dirs.iter().map(|d| d.path.as_str()).collect()
}

pub fn diff(ctx: &Context, args: &DiffArgs) -> Result<Outcome> {
    let config = ctx.config()?;
    let loaded = load_state_noted(&config)?;
    let state = &loaded.state;
    let scans = sync::scan_all(&config)?;
    let changes = sync::compare_all(state, &scans);
    // Files copied or moved from another disk: a sync compares them with the
    // originals' hashes first.
    let copies = parity_core::copied::find(&state.disks, &scans, &changes);
    let unsynced = state.positions_awaiting_sync();
    // Symbolic links and empty folders are in the state too: `fix -d` recreates them.
    let others: Vec<[EntryChanges; 3]> = state
        .disks
        .iter()
        .zip(&scans)
        .map(|(disk, scan)| {
            [
                EntryChanges::of(&disk.links, &scan.links, |l| l.path.as_str()),
                EntryChanges::of(&disk.hardlinks, &scan.hardlinks, |l| l.path.as_str()),
                // Added or removed only: a folder's mode or owner is among the
                // folders' attributes below, and its mtime alone is no change.
                EntryChanges::of(&paths(&disk.dirs), &paths(&scan.dirs), |p| p),
            ]
        })
        .collect();
    // Files whose data is as synced but whose mode or owner changed: sync records
    // them, since `fix` gives restored files what the state holds.
    let attributes: Vec<Vec<String>> = changes
        .iter()
        .enumerate()
        .map(|(slot, c)| {
            c.unchanged
                .iter()
                .chain(&c.moved)
                .chain(&c.restored)
                .filter(|&&(o, n)| {
                    let (was, now) = (&state.disks[slot].files[o], &scans[slot].files[n]);
                    (was.mode, was.uid, was.gid) != (now.mode, now.uid, now.gid)
                })
                .map(|&(_, n)| shown(&scans[slot].files[n].path).into_owned())
                .collect()
        })
        .collect();
    // Folders whose mode or owner changed: sync records them for `fix` too.
    let folder_attributes: Vec<Vec<String>> = state
        .disks
        .iter()
        .zip(&scans)
        .map(|(disk, scan)| {
            let now: std::collections::HashMap<&str, &FolderEntry> =
                scan.folders.iter().map(|f| (f.path.as_str(), f)).collect();
            disk.folders
                .iter()
                .filter(|was| {
                    now.get(was.path.as_str())
                        .is_some_and(|n| (was.mode, was.uid, was.gid) != (n.mode, n.uid, n.gid))
                })
                .map(|was| shown(&was.path).into_owned())
                .collect()
        })
        .collect();
    let changed = changes.iter().any(|c| !c.is_empty())
        || others.iter().flatten().any(|e| !e.is_empty())
        || attributes.iter().any(|a| !a.is_empty())
        || folder_attributes.iter().any(|a| !a.is_empty());
    // A parity level added to the config since the last sync needs a sync too.
    let new_levels: Vec<String> = parity_core::status::parity_problems(&config, state)
        .into_iter()
        .filter(|p| p.new_level)
        .map(|p| p.message)
        .collect();
    for level in &new_levels {
        eprintln!("lhparity: {level}");
    }
    let needed = changed
        || unsynced > 0
        || !new_levels.is_empty()
        || (loaded.is_new && scans.iter().any(|s| !s.files.is_empty()));

    let name_of = |slot: usize, i: usize| shown(&state.disks[slot].files[i].path).into_owned();
    let found = |slot: usize, i: usize| shown(&scans[slot].files[i].path).into_owned();
    let mut disks_json = Vec::new();
    let mut totals = [0usize; 7];
    for (slot, c) in changes.iter().enumerate() {
        let disk = &state.disks[slot].name;
        let here: Vec<&parity_core::copied::Copied> =
            copies.iter().filter(|c| c.slot == slot).collect();
        let copied_files: std::collections::HashSet<usize> = here.iter().map(|c| c.found).collect();
        let added: Vec<String> = c
            .added
            .iter()
            .filter(|n| !copied_files.contains(n))
            .map(|&n| found(slot, n))
            .collect();
        // (disk of the original, its path, the copy's path); of several possible
        // originals, the first of `from`: one moved away if any, else the first disk's.
        let copied: Vec<(&str, String, String)> = here
            .iter()
            .map(|c| {
                let (from_slot, from) = c.from[0];
                (
                    state.disks[from_slot].name.as_str(),
                    name_of(from_slot, from),
                    found(slot, c.found),
                )
            })
            .collect();
        let removed: Vec<String> = c.removed.iter().map(|&o| name_of(slot, o)).collect();
        let updated: Vec<String> = c.updated.iter().map(|&(_, n)| found(slot, n)).collect();
        let moved: Vec<(String, String)> = c
            .moved
            .iter()
            .map(|&(o, n)| (name_of(slot, o), found(slot, n)))
            .collect();
        let restored: Vec<String> = c.restored.iter().map(|&(_, n)| found(slot, n)).collect();
        count(&mut totals, c);
        totals[1] = totals[1].saturating_sub(copied.len());
        totals[6] += copied.len();
        let [links, hardlinks, dirs] = &others[slot];
        if args.json {
            let names = |paths: &[String]| {
                paths
                    .iter()
                    .map(|p| shown(p).into_owned())
                    .collect::<Vec<_>>()
            };
            let entries = |e: &EntryChanges| json!({"added": names(&e.added), "removed": names(&e.removed), "updated": names(&e.updated)});
            disks_json.push(json!({
                "disk": disk,
                "added": added,
                "removed": removed,
                "updated": updated,
                "moved": moved.iter().map(|(f, t)| json!({"from": f, "to": t})).collect::<Vec<_>>(),
                "copied": copied.iter().map(|(d, f, t)| json!({"from_disk": d, "from": f, "to": t})).collect::<Vec<_>>(),
                "restored": restored,
                "equal": c.unchanged.len(),
                "attributes": attributes[slot],
                "folder_attributes": folder_attributes[slot],
                "links": entries(links),
                "hardlinks": entries(hardlinks),
                "dirs": entries(dirs),
            }));
        } else {
            for (kind, e) in [("link", links), ("hardlink", hardlinks), ("dir", dirs)] {
                for (verb, paths) in [
                    ("add", &e.added),
                    ("remove", &e.removed),
                    ("update", &e.updated),
                ] {
                    for p in paths {
                        out!("{verb} {kind} {disk}/{}", shown(p));
                    }
                }
            }
            for p in &added {
                out!("add {disk}/{p}");
            }
            for p in &removed {
                out!("remove {disk}/{p}");
            }
            for p in &updated {
                out!("update {disk}/{p}");
            }
            for (f, t) in &moved {
                out!("move {disk}/{f} -> {disk}/{t}");
            }
            for (from_disk, f, t) in &copied {
                out!("copy {from_disk}/{f} -> {disk}/{t}");
            }
            for p in &restored {
                out!("restore {disk}/{p}");
            }
            for p in &attributes[slot] {
                out!("update mode/owner {disk}/{p}");
            }
            for p in &folder_attributes[slot] {
                out!("update mode/owner dir {disk}/{p}");
            }
        }
    }
    if args.json {
        let out = json!({
            "disks": disks_json,
            "positions_awaiting_sync": unsynced,
            "sync_needed": needed,
        });
        out!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        let [equal, added, removed, updated, moved, restored, copied] = totals;
        out!();
        out!("{equal:8} equal");
        out!("{added:8} added");
        out!("{removed:8} removed");
        out!("{updated:8} updated");
        out!("{moved:8} moved");
        out!("{copied:8} copied");
        out!("{restored:8} restored");
        if unsynced > 0 {
            out!("{unsynced:8} block positions awaiting sync");
        }
        out!(
            "{}",
            if needed {
                "There are differences: run `lhparity sync`."
            } else {
                "No differences."
            }
        );
    }
    Ok(Outcome {
        code: if needed { 2 } else { 0 },
        bytes: 0,
        errors: 0,
    })
}

fn count(totals: &mut [usize; 7], c: &DiskChanges) {
    totals[0] += c.unchanged.len();
    totals[1] += c.added.len();
    totals[2] += c.removed.len();
    totals[3] += c.updated.len();
    totals[4] += c.moved.len();
    totals[5] += c.restored.len();
}

#[derive(clap::Args)]
pub struct ScrubArgs {
    /// What to verify: a percentage of the array (oldest first), new, bad or full.
    #[arg(short = 'p', long = "plan", default_value = "8")]
    plan: Plan,
    /// Only positions not verified for this many days (with a percentage).
    #[arg(short = 'o', long = "older-than", default_value_t = 10)]
    older_than: u32,
}

pub fn scrub(ctx: &Context, args: &ScrubArgs) -> Result<Outcome> {
    let (config, _lock) = ctx.locked_config()?;
    let display = Display::new("scrub", ctx.quiet);
    parity_core::interrupt::install();
    let report = scrub::scrub(&config, args.plan, args.older_than, &display)?;
    print_verify(
        "Scrubbed",
        &report,
        ctx.quiet,
        "Run `lhparity fix -e` to repair the bad blocks.",
    );
    if let Some(signal) = report.interrupted {
        eprintln!(
            "lhparity: stopped by {}: the {} positions verified so far are recorded; the \
             next scrub goes on with the others",
            parity_core::interrupt::name(signal),
            report.verified
        );
        return Ok(Outcome::of(report.bytes, report.errors.len() + 1));
    }
    Ok(Outcome::of(report.bytes, report.errors.len()))
}

#[derive(clap::Args)]
pub struct CheckArgs {
    /// Check only the block hashes, not the parity.
    #[arg(short = 'a', long = "audit-only")]
    audit_only: bool,
    /// Only this data disk (repeatable).
    #[arg(short = 'd', long = "disk")]
    disks: Vec<String>,
    /// Only files matching this pattern (repeatable; exclude/include syntax).
    #[arg(short = 'f', long = "filter")]
    files: Vec<String>,
}

pub fn check(ctx: &Context, args: &CheckArgs) -> Result<Outcome> {
    let (config, _lock) = ctx.locked_config()?;
    let display = Display::new("check", ctx.quiet);
    let options = CheckOptions {
        hashes_only: args.audit_only,
        disks: args.disks.clone(),
        files: args.files.clone(),
    };
    let report = scrub::check(&config, &options, &display)?;
    // A check records nothing, so `fix -e` would find no marks to work on.
    print_verify(
        "Checked",
        &report,
        ctx.quiet,
        "Run `lhparity fix` to repair the bad blocks (a check does not record them, so \
         `fix -e` would not find them; a scrub does).",
    );
    Ok(Outcome::of(report.bytes, report.errors.len()))
}

/// The report of a scrub or check, ending with `hint` when blocks were bad.
fn print_verify(what: &str, report: &VerifyReport, quiet: bool, hint: &str) {
    for n in &report.notes {
        eprintln!("lhparity: {n}");
    }
    for e in &report.errors {
        eprintln!("lhparity: error: {e}");
    }
    for c in &report.changed {
        eprintln!("lhparity: {c} changed since the last sync; not verified (run a sync)");
    }
    if !quiet {
        let mb = report.bytes as f64 / 1e6;
        let without = match report.levels_set_aside.as_slice() {
            [] => String::new(),
            [level] => format!(" (not against parity level {level}, whose file cannot be opened)"),
            [first @ .., last] => format!(
                " (not against parity levels {} and {last}, whose files cannot be opened)",
                first
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        out!(
            "{what} {} block positions{without}, {mb:.1} MB of data in {:.2} s ({:.0} MB/s): {} bad blocks.",
            report.verified + report.verified_without_levels,
            report.seconds,
            mb / report.seconds.max(1e-9),
            report.bad.len()
        );
        if !report.bad.is_empty() {
            out!("{hint}");
        }
    }
}

#[derive(clap::Args)]
pub struct FixArgs {
    /// Rebuild every file of this data disk (repeatable), e.g. after replacing it.
    #[arg(short = 'd', long = "disk")]
    disks: Vec<String>,
    /// Only files matching this pattern (repeatable; exclude/include syntax).
    #[arg(short = 'f', long = "filter")]
    files: Vec<String>,
    /// Also bring back files deleted since the last sync.
    #[arg(short = 'm', long = "filter-missing")]
    missing: bool,
    /// Only the blocks marked bad by scrub or sync.
    #[arg(short = 'e', long = "filter-error")]
    bad_only: bool,
    /// Also take the blocks of lost files, and of files deleted since the last sync
    /// that the rebuild needs, from files in this folder with their size and mtime,
    /// whatever their names (repeatable), e.g. a backup.
    #[arg(
        short = 'i',
        long = "import",
        value_name = "DIR",
        conflicts_with = "bad_only"
    )]
    import: Vec<PathBuf>,
}

pub fn fix(ctx: &Context, args: &FixArgs) -> Result<Outcome> {
    let (config, _lock) = ctx.locked_config()?;
    let display = Display::new("fix", ctx.quiet);
    let options = FixOptions {
        disks: args.disks.clone(),
        files: args.files.clone(),
        missing: args.missing,
        bad_only: args.bad_only,
        force_device: ctx.force_device,
        import: args.import.clone(),
    };
    let report = fix::fix(&config, &options, &display)?;
    for w in &report.warnings {
        eprintln!("lhparity: warning: {w}");
    }
    for e in &report.errors {
        eprintln!("lhparity: error: {e}");
    }
    for u in &report.unrecoverable {
        eprintln!("lhparity: unrecoverable: {u}");
    }
    if !ctx.quiet {
        let imported: std::collections::HashMap<&str, &str> = report
            .imported
            .iter()
            .map(|(to, from)| (to.as_str(), from.as_str()))
            .collect();
        for (deleted, copy) in &report.stand_ins {
            out!("read {deleted} (gone from its disk since the last sync) from {copy}");
        }
        for f in &report.fixed {
            match imported.get(f.as_str()) {
                Some(from) => out!("fixed {f} (from {from})"),
                None => out!("fixed {f}"),
            }
        }
        let mb = report.bytes as f64 / 1e6;
        out!(
            "{} files fixed, {} unrecoverable, parity rewritten at {} positions; {mb:.1} MB rebuilt in {:.2} s ({:.0} MB/s).",
            report.fixed.len(),
            report.unrecoverable.len(),
            report.parity_fixed,
            report.seconds,
            mb / report.seconds.max(1e-9)
        );
    }
    Ok(Outcome::of(
        report.bytes,
        report.errors.len() + report.unrecoverable.len(),
    ))
}

#[derive(clap::Args)]
pub struct StatusArgs {
    /// Print JSON.
    #[arg(long)]
    json: bool,
    /// Print the metrics in Prometheus text format (as the metrics file holds them).
    #[arg(long, conflicts_with = "json")]
    prometheus: bool,
}

pub fn status(ctx: &Context, args: &StatusArgs) -> Result<Outcome> {
    let config = Config::load(&ctx.conf)?;
    let loaded = load_state_noted(&config)?;
    let s = array_status(&loaded.state, sync::now());
    for problem in parity_core::status::parity_problems(&config, &loaded.state) {
        eprintln!("lhparity: warning: {}", problem.message);
    }
    if args.prometheus {
        let runs = metrics::recorded_runs(&config);
        print!("{}", metrics::text(&config, Some(&s), &runs));
    } else if args.json {
        out!("{}", serde_json::to_string_pretty(&status_json(&s))?);
    } else {
        print_status(&s, loaded.is_new);
    }
    Ok(Outcome::of(0, 0))
}

fn status_json(s: &Status) -> serde_json::Value {
    json!({
        "disks": s.disks.iter().map(|d| json!({
            "name": d.name, "files": d.files, "bytes": d.bytes, "blocks_awaiting_sync": d.new_blocks,
        })).collect::<Vec<_>>(),
        "parity_levels": s.parity_levels,
        "block_size": s.block_size,
        "positions": s.positions,
        "positions_awaiting_sync": s.awaiting_sync,
        // The last two buckets have no upper bound: verified long ago, and never.
        "scrub_age_days": s.scrub_age.iter().map(|&(bound, n)| json!({
            "max_days": if bound >= u32::MAX - 1 { None } else { Some(bound) },
            "bucket": age_bucket(bound),
            "positions": n,
        })).collect::<Vec<_>>(),
        "oldest_scrub_days": s.oldest_days,
        "median_scrub_days": s.median_days,
        "bad_blocks": s.bad.iter().map(|(pos, disk)| json!({"position": pos, "disk": disk})).collect::<Vec<_>>(),
        "last_sync": s.last_sync,
        "last_scrub": s.last_scrub,
    })
}

/// The name of a scrub-age bucket by its bound: `u32::MAX` never verified,
/// `u32::MAX - 1` verified longer ago than the last bound.
fn age_bucket(bound: u32) -> String {
    match bound {
        u32::MAX => "never".to_string(),
        b if b == u32::MAX - 1 => "older".to_string(),
        b => format!("<= {b} days"),
    }
}

fn print_status(s: &Status, is_new: bool) {
    if is_new {
        out!("No content file yet: the array has never been synced.");
    }
    out!(
        "{:<16} {:>10} {:>16} {:>12}",
        "disk",
        "files",
        "bytes",
        "unsynced"
    );
    for d in &s.disks {
        out!(
            "{:<16} {:>10} {:>16} {:>12}",
            d.name,
            d.files,
            d.bytes,
            d.new_blocks
        );
    }
    out!();
    out!(
        "{} parity levels, block size {} KiB, {} positions, {} awaiting sync.",
        s.parity_levels,
        s.block_size / 1024,
        s.positions,
        s.awaiting_sync
    );
    out!("Scrub age of the used positions:");
    for &(bound, n) in &s.scrub_age {
        let label = age_bucket(bound);
        out!("  {label:>12}: {n}");
    }
    if s.bad.is_empty() {
        out!("No bad blocks.");
    } else {
        out!("{} bad blocks: run `lhparity fix -e`.", s.bad.len());
        // One line per disk and stretch of consecutive positions.
        let mut by_disk: std::collections::BTreeMap<&str, Vec<u32>> = Default::default();
        for (pos, disk) in &s.bad {
            by_disk.entry(disk.as_str()).or_default().push(*pos);
        }
        for (disk, mut positions) in by_disk {
            positions.sort_unstable();
            for (first, last) in parity_core::runs::runs(positions) {
                if first == last {
                    out!("  position {first} on {disk}");
                } else {
                    out!(
                        "  positions {} on {disk} ({})",
                        parity_core::runs::shown(first, last),
                        last - first + 1
                    );
                }
            }
        }
    }
}

pub fn list(ctx: &Context) -> Result<ExitCode> {
    let config = Config::load(&ctx.conf)?;
    let loaded = load_state_noted(&config)?;
    let (mut files, mut bytes, mut links, mut hardlinks) = (0usize, 0u64, 0usize, 0usize);
    for disk in &loaded.state.disks {
        for f in &disk.files {
            out!("{:>14} {}/{}", f.size, disk.name, shown(&f.path));
            files += 1;
            bytes += f.size;
        }
        // Other names of files, and symbolic links, as SnapRAID lists them: what
        // `fix` makes again.
        for l in &disk.hardlinks {
            out!(
                "{:>14} {}/{} -> {}/{}",
                "hardlink",
                disk.name,
                shown(&l.path),
                disk.name,
                shown(&l.target)
            );
            hardlinks += 1;
        }
        for l in &disk.links {
            out!(
                "{:>14} {}/{} -> {}",
                "symlink",
                disk.name,
                shown(&l.path),
                shown(&l.target)
            );
            links += 1;
        }
    }
    out!("{files} files, {bytes} bytes, {hardlinks} hard links, {links} symbolic links");
    Ok(ExitCode::SUCCESS)
}

/// `lhparity dup`: groups of files with the same content, largest first, then a
/// summary; exit 0 whether or not there are any.
pub fn dup(ctx: &Context) -> Result<ExitCode> {
    let config = Config::load(&ctx.conf)?;
    let loaded = load_state_noted(&config)?;
    let groups = parity_core::dup::find(&loaded.state);
    let mut copies = 0usize;
    let mut redundant = 0u64;
    for group in &groups {
        for file in &group.files {
            out!("{:>14} {}/{}", group.size, file.disk, shown(&file.path));
        }
        out!();
        copies += group.files.len() - 1;
        redundant += group.redundant_bytes();
    }
    out!(
        "identical files: {} groups, {copies} duplicates, {redundant} bytes in duplicates",
        groups.len()
    );
    Ok(ExitCode::SUCCESS)
}
