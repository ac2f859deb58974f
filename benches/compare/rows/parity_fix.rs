//! Row `parity-fix`: rebuilding a lost data disk, `lhparity -c CONF -q fix -d d1`
//! against `snapraid -c CONF fix -d d1`, on the shared array of `parity_array`
//! right after a full sync, 1 and then 2 parity levels.
//!
//! Before every run, all files of `d1` are deleted (the tools' state folders stay,
//! as on a disk replaced by an empty one), and the other disks' data and the tool's
//! parity are re-read into the page cache. After it, every file must be back with
//! its size, or the row fails: a fast fix that restores nothing is no result. The
//! next run starts from a wiped disk again, so neither tool depends on the other's
//! restore. Seconds, and MB/s of the rebuilt disk's bytes; snapraid is the baseline.
//!
//! Until lhparity has `fix`, the row reports itself as not available.

use anyhow::Result;

use super::parity_array::{self, disk_name, observation, Array, Tool, BASELINE, FIX_DISK, LEVELS};
use super::{lines_for, Ctx, RowSpec};
use crate::measure::{mb_per_s, run_alternated, Variant};
use crate::report::Line;

pub const ROW: RowSpec = RowSpec {
    name: "parity-fix",
    about: "fix -d d1 after deleting all of data disk d1 (1 GiB), 1 and 2 parity; lhparity vs \
            snapraid",
    run,
};

const SECS: &str = "s";
const MBPS: &str = "MB/s";

fn run(ctx: &Ctx) -> Result<Vec<Line>> {
    let bins = parity_array::binaries(ctx, &["sync", "fix"])?;
    let array = Array::create(ctx, bins)?;
    let bytes = array.data_bytes(Some(FIX_DISK));
    let disk = disk_name(FIX_DISK);
    let mut lines = Vec::new();
    for levels in LEVELS {
        let setup = array.configure(levels)?;
        for tool in Tool::ALL {
            setup.sync_from_scratch(tool)?;
        }
        let (setup, disk) = (&setup, disk.as_str());
        let mut variants = Tool::ALL.map(|tool| {
            Variant::new(tool.name(), move || {
                setup.array().wipe(FIX_DISK)?;
                setup.array().warm_data(Some(FIX_DISK))?;
                setup.warm_parity(tool)?;
                let secs = setup.timed(tool, &["fix", "-d", disk])?;
                setup.array().check_restored(FIX_DISK)?;
                Ok(observation([(SECS, secs), (MBPS, mb_per_s(bytes, secs))]))
            })
        });
        let samples = run_alternated(&mut variants, ctx.reps)?;
        let row = format!("parity-fix {levels}-parity -d {disk}");
        for metric in [SECS, MBPS] {
            lines.extend(lines_for(&row, metric, metric, &samples, BASELINE));
        }
    }
    array.close()?;
    Ok(lines)
}
