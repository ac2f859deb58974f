//! Row `pool-meta`: metadata operations through the raw branch, lhfs (passthrough on
//! and off) and mergerfs, on the test bed of `pool`, done here with `std::fs` in one
//! thread. Every run works in a fresh folder of its variant and goes through four
//! timed phases, one right after the other (so the later ones find what the kernel
//! cached during the earlier ones, for every variant alike):
//!
//! - **create**: the folders, then the empty files, 200 per folder (created and
//!   closed); 10,000 files in 50 folders by default (`--meta-files`);
//! - **stat**: `stat` on every file;
//! - **readdir+lstat**: list every folder and `lstat` every entry, as `ls -l` or a
//!   backup tool does;
//! - **unlink**: delete every file, then the folders.
//!
//! Between phases the run pauses for longer than the 1 s both pools let the kernel
//! cache names and attributes (`cache.entry`, `cache.attr`): otherwise a phase would
//! find part of its files still cached by the previous one, depending on how fast
//! that one was, and its figure would jump between the kernel's and the daemon's
//! speed from run to run. With the pause every phase of a pool asks its daemon.
//!
//! Each figure is files per second (the folders' mkdir and rmdir count in the time,
//! not in the operations). Runs rotate over the variants; dirty data of the
//! previous run is written back before each. Raw ext4 is the baseline, and the lhfs
//! variants are also compared with mergerfs. `--smoke`: 1,000 files in 10 folders.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::pool::{self, Bed, Target};
use super::{Ctx, RowSpec};
use crate::disks;
use crate::measure::{run_rotated, Observation, Variant};
use crate::report::Line;
use crate::scale::Scale;

pub const ROW: RowSpec = RowSpec {
    name: "pool-meta",
    about: "create/stat/readdir+lstat/unlink of empty files, 200 per folder (10,000, \
            --meta-files), one thread; raw ext4 vs lhfs (passthrough on/off) vs mergerfs",
    run,
};

/// The phases in run order; also the metric names.
const PHASES: [&str; 4] = ["create", "stat", "readdir+lstat", "unlink"];
/// The folder each run works in, inside its variant's folder.
const RUN_DIR: &str = "meta";
/// The pause between phases, longer than the pools' 1 s entry and attribute cache.
const PHASE_PAUSE: Duration = Duration::from_millis(1500);

/// How many files in how many folders, and the image that holds them.
#[derive(Debug, Clone, Copy)]
struct Shape {
    files: usize,
    folders: usize,
    image: u64,
}

impl Shape {
    fn new(scale: &Scale) -> Shape {
        Shape {
            files: scale.meta_files,
            folders: scale.meta_folders(),
            image: scale.meta_image(),
        }
    }
}

fn run(ctx: &Ctx) -> Result<Vec<Line>> {
    let shape = Shape::new(&ctx.scale);
    let bed = Bed::create(ctx, ROW.name, shape.image)?;
    let bed_ref = &bed;
    let mut variants: Vec<Variant> = bed
        .targets()
        .iter()
        .map(|target| Variant::new(target.kind.name(), move || measure(bed_ref, target, shape)))
        .collect();
    let samples = run_rotated(&mut variants, ctx.reps, |_| Ok(()), true)?;
    drop(variants);
    let mut lines = Vec::new();
    for phase in PHASES {
        let row = format!(
            "pool-meta {phase} ({} files, {} folders)",
            shape.files, shape.folders
        );
        lines.extend(pool::lines(&row, phase, "ops/s", &samples));
    }
    bed.close()?;
    Ok(lines)
}

/// One run of all four phases in `target`.
fn measure(bed: &Bed, target: &Target, shape: Shape) -> Result<Observation> {
    disks::write_back();
    let secs = workload(&target.dir.join(RUN_DIR), shape, PHASE_PAUSE)?;
    let mut obs = Observation::default();
    let note = bed.note(target);
    for (phase, secs) in PHASES.iter().zip(secs) {
        obs.values
            .insert(phase.to_string(), ops_per_s(shape.files, secs));
        if let Some(note) = &note {
            obs.notes.insert(phase.to_string(), note.clone());
        }
    }
    Ok(obs)
}

/// Runs the phases below `root` (created first, removed at the end) and returns
/// each phase's seconds, in `PHASES` order.
fn workload(root: &Path, shape: Shape, pause: Duration) -> Result<[f64; 4]> {
    std::fs::create_dir(root).with_context(|| format!("creating {}", root.display()))?;
    let (folders, files) = layout(root, shape.files, shape.folders);

    let start = Instant::now();
    for dir in &folders {
        std::fs::create_dir(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    for file in &files {
        File::create(file).with_context(|| format!("creating {}", file.display()))?;
    }
    let create = start.elapsed().as_secs_f64();

    std::thread::sleep(pause);
    let start = Instant::now();
    for file in &files {
        let meta = std::fs::metadata(file)
            .with_context(|| format!("reading the status of {}", file.display()))?;
        if !meta.is_file() {
            bail!("{} is not a regular file", file.display());
        }
    }
    let stat = start.elapsed().as_secs_f64();

    std::thread::sleep(pause);
    let start = Instant::now();
    let mut seen = 0;
    for dir in &folders {
        let entries =
            std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))?;
        for entry in entries {
            let path = entry
                .with_context(|| format!("listing {}", dir.display()))?
                .path();
            std::fs::symlink_metadata(&path)
                .with_context(|| format!("reading the status of {}", path.display()))?;
            seen += 1;
        }
    }
    let readdir = start.elapsed().as_secs_f64();
    if seen != files.len() {
        bail!(
            "listing {} found {seen} entries, not the {} files created",
            root.display(),
            files.len()
        );
    }

    std::thread::sleep(pause);
    let start = Instant::now();
    for file in &files {
        std::fs::remove_file(file).with_context(|| format!("removing {}", file.display()))?;
    }
    for dir in &folders {
        std::fs::remove_dir(dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    let unlink = start.elapsed().as_secs_f64();

    std::fs::remove_dir(root).with_context(|| format!("removing {}", root.display()))?;
    Ok([create, stat, readdir, unlink])
}

/// The folders below `root` and the files in them, folder by folder: `files` spread
/// as evenly as possible over `folders` (the first ones get one more when it does not
/// divide).
fn layout(root: &Path, files: usize, folders: usize) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let dirs: Vec<PathBuf> = (0..folders.max(1))
        .map(|d| root.join(format!("d{d:03}")))
        .collect();
    let per = files / dirs.len();
    let extra = files % dirs.len();
    let mut paths = Vec::with_capacity(files);
    for (d, dir) in dirs.iter().enumerate() {
        let count = per + usize::from(d < extra);
        let first = paths.len();
        paths.extend((first..first + count).map(|i| dir.join(format!("f{i:05}"))));
    }
    (dirs, paths)
}

/// Operations per second; not finite when `secs` is not positive, so that
/// `summarize` drops it.
fn ops_per_s(ops: usize, secs: f64) -> f64 {
    if secs > 0.0 {
        ops as f64 / secs
    } else {
        f64::NAN
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_per_second() {
        assert_eq!(ops_per_s(20_000, 4.0), 5_000.0);
        assert_eq!(ops_per_s(1_000, 0.5), 2_000.0);
        assert!(ops_per_s(5, 0.0).is_nan());
        assert!(ops_per_s(5, -1.0).is_nan());
    }

    #[test]
    fn files_spread_evenly_over_folders() {
        let (dirs, files) = layout(Path::new("/m"), 20_000, 100);
        assert_eq!(dirs.len(), 100);
        assert_eq!(files.len(), 20_000);
        assert_eq!(dirs[0], Path::new("/m/d000"));
        assert_eq!(files[0], Path::new("/m/d000/f00000"));
        assert_eq!(files[199], Path::new("/m/d000/f00199"));
        assert_eq!(files[200], Path::new("/m/d001/f00200"));
        assert_eq!(files[19_999], Path::new("/m/d099/f19999"));
        let (dirs, files) = layout(Path::new("/m"), 7, 3);
        let per_dir: Vec<usize> = dirs
            .iter()
            .map(|d| files.iter().filter(|f| f.parent() == Some(d)).count())
            .collect();
        assert_eq!(per_dir, [3, 2, 2]);
        assert_eq!(layout(Path::new("/m"), 0, 0).0.len(), 1);
    }

    #[test]
    fn workload_runs_in_a_plain_folder() {
        let dir = std::env::temp_dir().join(format!("lhfs-meta-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let root = dir.join(RUN_DIR);
        let shape = Shape {
            files: 50,
            folders: 4,
            image: 0,
        };
        let secs = workload(&root, shape, Duration::ZERO).unwrap();
        assert!(secs.iter().all(|s| *s >= 0.0));
        assert!(!root.exists());
        // A leftover folder is not silently reused.
        std::fs::create_dir(&root).unwrap();
        assert!(workload(&root, shape, Duration::ZERO).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
