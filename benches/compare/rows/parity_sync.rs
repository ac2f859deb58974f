//! Row `parity-sync`: `lhparity -c CONF -q sync` against `snapraid -c CONF sync` on
//! the shared array of `parity_array` (4 x 1 GiB data disks, 256 KiB blocks), with 1
//! and then 2 parity levels. Warm cache: the data is re-read right before every
//! timed run. Three figures per level, snapraid the baseline:
//!
//! - **full sync**: the tool's parity and content deleted first; seconds, and MB/s of
//!   data bytes. Alternated A B A B.
//! - **no-change sync**: the same tool again right after its full sync; seconds.
//!   snapraid 12.2 sleeps a fixed 2 s after its scan, so this is mostly that pause.
//! - **sync after 5% changed**: before each repetition 5% of the files (by count,
//!   large and small alike, spread over the disks, mostly a new set each time) are
//!   rewritten with new content of the same size; then both tools sync that same
//!   change, the order swapping per repetition. Seconds.
//!
//! Times are wall time of the whole command; a ratio below 1 means lhparity was
//! faster for seconds, and above 1 for MB/s.

use anyhow::Result;

use super::parity_array::{self, observation, Array, Setup, Tool, BASELINE, LEVELS};
use super::{lines_for, Ctx, RowSpec};
use crate::disks;
use crate::measure::{mb_per_s, run_alternated, run_rotated, Variant};
use crate::report::Line;

pub const ROW: RowSpec = RowSpec {
    name: "parity-sync",
    about: "sync of 4 x 1 GiB data disks, 1 and 2 parity: full, no change, 5% of files \
            rewritten; lhparity vs snapraid",
    run,
};

const FULL: &str = "full";
const FULL_MBPS: &str = "full MB/s";
const UNCHANGED: &str = "unchanged";
const CHANGED: &str = "changed";
/// Share of the files rewritten before each "after change" sync, in percent.
const CHANGED_PERCENT: usize = 5;
/// Base of the seeds of rewritten files, apart from the fill seeds.
const CHANGE_SEED: u64 = 0xc4a0_0000_0000_0000;

fn run(ctx: &Ctx) -> Result<Vec<Line>> {
    let bins = parity_array::binaries(ctx, &["sync"])?;
    let array = Array::create(ctx, bins)?;
    let large = array.large_file_size();
    let mut lines = Vec::new();
    for levels in LEVELS {
        let setup = array.configure(levels)?;
        let row = |what: &str| format!("parity-sync {levels}-parity {what}");
        let samples = full_and_unchanged(&setup, ctx.reps)?;
        lines.extend(lines_for(&row("full sync"), FULL, "s", &samples, BASELINE));
        lines.extend(lines_for(
            &row("full sync"),
            FULL_MBPS,
            "MB/s",
            &samples,
            BASELINE,
        ));
        lines.extend(lines_for(
            &row("no-change sync"),
            UNCHANGED,
            "s",
            &samples,
            BASELINE,
        ));
        let samples = after_change(&setup, large, ctx.reps)?;
        let what = format!("sync after {CHANGED_PERCENT}% changed");
        lines.extend(lines_for(&row(&what), CHANGED, "s", &samples, BASELINE));
    }
    array.close()?;
    Ok(lines)
}

/// Each repetition of a tool: a full sync from nothing, then a sync with no change.
fn full_and_unchanged(setup: &Setup, reps: usize) -> Result<Vec<crate::measure::Samples>> {
    let bytes = setup.array().data_bytes(None);
    let mut variants = Tool::ALL.map(|tool| {
        Variant::new(tool.name(), move || {
            setup.forget(tool)?;
            setup.array().warm_data(None)?;
            let full = setup.timed(tool, &["sync"])?;
            setup.array().warm_data(None)?;
            let unchanged = setup.timed(tool, &["sync"])?;
            Ok(observation([
                (FULL, full),
                (FULL_MBPS, mb_per_s(bytes, full)),
                (UNCHANGED, unchanged),
            ]))
        })
    });
    run_alternated(&mut variants, reps)
}

/// Each repetition: rewrite a fresh 5% of the files, then let both tools sync it.
/// Both are in sync with the array when this starts (the last runs of
/// `full_and_unchanged`).
fn after_change(setup: &Setup, large: u64, reps: usize) -> Result<Vec<crate::measure::Samples>> {
    let files = setup.array().files();
    let sizes: Vec<Vec<u64>> = files
        .iter()
        .map(|disk| disk.iter().map(|f| f.size).collect())
        .collect();
    let levels = setup.levels() as u64;
    let prepare = |rep: usize| -> Result<()> {
        for (disk, index) in pick_changed(&sizes, large, CHANGED_PERCENT, rep) {
            let file = &files[disk][index];
            // Unique per level, repetition and file, so every rewrite is new content.
            let seed = CHANGE_SEED
                ^ (levels << 48)
                ^ ((rep as u64) << 32)
                ^ ((disk as u64) << 24)
                ^ index as u64;
            disks::write_file(&file.path, file.size, seed)?;
        }
        Ok(())
    };
    let mut variants = Tool::ALL.map(|tool| {
        Variant::new(tool.name(), move || {
            setup.array().warm_data(None)?;
            Ok(observation([(CHANGED, setup.timed(tool, &["sync"])?)]))
        })
    });
    run_rotated(&mut variants, reps, prepare, true)
}

/// The files to rewrite in repetition `rep`, as (disk, index) pairs, from each
/// disk's file sizes: `percent` of the files by count, rounded up, taken separately
/// from the large files (size >= `large`) and the small ones, so that every
/// repetition rewrites about the same bytes (one 100 MiB file more or less would
/// double them). Each class is shared over the disks in proportion to their counts,
/// the odd ones going to a disk that turns with `rep`; within a disk the picks are
/// evenly spaced, shifted by `rep`, so repetitions rewrite mostly different files
/// (a rewrite gets new content either way).
fn pick_changed(sizes: &[Vec<u64>], large: u64, percent: usize, rep: usize) -> Vec<(usize, usize)> {
    let mut picks = Vec::new();
    for want_large in [true, false] {
        let members: Vec<Vec<usize>> = sizes
            .iter()
            .map(|disk| {
                (0..disk.len())
                    .filter(|&i| (disk[i] >= large) == want_large)
                    .collect()
            })
            .collect();
        let total: usize = members.iter().map(Vec::len).sum();
        let wanted = (total * percent).div_ceil(100);
        if total == 0 || wanted == 0 {
            continue;
        }
        let mut quota: Vec<usize> = members.iter().map(|m| wanted * m.len() / total).collect();
        let mut left = wanted - quota.iter().sum::<usize>();
        let mut disk = rep % members.len();
        while left > 0 {
            if quota[disk] < members[disk].len() {
                quota[disk] += 1;
                left -= 1;
            }
            disk = (disk + 1) % members.len();
        }
        for (disk, (members, quota)) in members.iter().zip(quota).enumerate() {
            if quota == 0 {
                continue;
            }
            let n = members.len();
            // j * n / quota are at least n / quota apart, so a shift below that keeps
            // the picks distinct and in range.
            let shift = rep % (n / quota);
            picks.extend((0..quota).map(|j| (disk, members[j * n / quota + shift])));
        }
    }
    picks.sort_unstable();
    picks
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    const MIB: u64 = 1 << 20;

    /// Sizes as the full-size array has them.
    fn array_sizes() -> Vec<Vec<u64>> {
        (0..4)
            .map(|i| disks::file_sizes(1024 * MIB, 100 * MIB, MIB, 0x1f5_0000 + i))
            .collect()
    }

    #[test]
    fn picks_five_percent_of_large_and_small_files() {
        let sizes = array_sizes();
        let count = |large: bool| {
            sizes
                .iter()
                .flatten()
                .filter(|&&s| (s >= 100 * MIB) == large)
                .count()
        };
        let (large_files, small_files) = (count(true), count(false));
        assert_eq!(large_files, 20);
        for rep in 0..4 {
            let picks = pick_changed(&sizes, 100 * MIB, 5, rep);
            let unique: BTreeSet<_> = picks.iter().collect();
            assert_eq!(unique.len(), picks.len(), "picks repeat in rep {rep}");
            let large_picked = picks
                .iter()
                .filter(|(d, i)| sizes[*d][*i] >= 100 * MIB)
                .count();
            assert_eq!(large_picked, 1);
            assert_eq!(picks.len() - large_picked, (small_files * 5).div_ceil(100));
            // Every disk gets its share of the small files (about a quarter each).
            for disk in 0..4 {
                let on_disk = picks.iter().filter(|(d, _)| *d == disk).count();
                assert!((24..=28).contains(&on_disk), "disk {disk}: {on_disk}");
            }
            let bytes: u64 = picks.iter().map(|(d, i)| sizes[*d][*i]).sum();
            let all: u64 = sizes.iter().flatten().sum();
            assert!((0.04..0.06).contains(&(bytes as f64 / all as f64)));
        }
    }

    #[test]
    fn picks_differ_per_repetition_and_repeat_for_the_same_one() {
        let sizes = array_sizes();
        let a = pick_changed(&sizes, 100 * MIB, 5, 0);
        assert_eq!(a, pick_changed(&sizes, 100 * MIB, 5, 0));
        let b = pick_changed(&sizes, 100 * MIB, 5, 1);
        let common = a.iter().filter(|p| b.contains(p)).count();
        assert!(common * 10 < a.len(), "rep 0 and 1 share {common} files");
        // The large file moves to another disk.
        let large_disk = |picks: &[(usize, usize)]| {
            picks
                .iter()
                .find(|(d, i)| sizes[*d][*i] >= 100 * MIB)
                .map(|p| p.0)
        };
        assert_ne!(large_disk(&a), large_disk(&b));
    }

    #[test]
    fn picks_at_smoke_sizes_and_edge_cases() {
        let sizes: Vec<Vec<u64>> = (0..4)
            .map(|i| disks::file_sizes(24 * MIB, 4 * MIB, 256 << 10, i))
            .collect();
        for rep in 0..6 {
            let picks = pick_changed(&sizes, 4 * MIB, 5, rep);
            assert!(picks.iter().all(|(d, i)| *i < sizes[*d].len()));
            assert_eq!(
                picks
                    .iter()
                    .filter(|(d, i)| sizes[*d][*i] >= 4 * MIB)
                    .count(),
                1
            );
            assert!(picks.len() >= 5);
        }
        assert!(pick_changed(&[vec![], vec![]], MIB, 5, 0).is_empty());
        assert_eq!(pick_changed(&[vec![1, 2], vec![3]], MIB, 100, 7).len(), 3);
        assert_eq!(pick_changed(&[vec![5; 10]], MIB, 0, 0), []);
    }
}
