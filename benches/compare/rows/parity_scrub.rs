//! Row `parity-scrub`: `lhparity -c CONF -q scrub -p 100 -o 0` against
//! `snapraid -c CONF scrub -p 100 -o 0`, which read every block of data and parity
//! and check it against the stored hashes, on the shared array of `parity_array`
//! right after a full sync, 1 and then 2 parity levels. Warm cache: the data and the
//! tool's parity are re-read before every timed run. Seconds, and MB/s of data
//! bytes; snapraid is the baseline.
//!
//! Until lhparity has `scrub`, the row reports itself as not available.

use anyhow::Result;

use super::parity_array::{self, observation, Array, Tool, BASELINE, LEVELS};
use super::{lines_for, Ctx, RowSpec};
use crate::measure::{mb_per_s, run_alternated, Variant};
use crate::report::Line;

pub const ROW: RowSpec = RowSpec {
    name: "parity-scrub",
    about: "scrub -p 100 -o 0 of the synced 4 x 1 GiB array, 1 and 2 parity; lhparity vs snapraid",
    run,
};

const SECS: &str = "s";
const MBPS: &str = "MB/s";
const ARGS: [&str; 5] = ["scrub", "-p", "100", "-o", "0"];

fn run(ctx: &Ctx) -> Result<Vec<Line>> {
    let bins = parity_array::binaries(ctx, &["sync", "scrub"])?;
    let array = Array::create(ctx, bins)?;
    let bytes = array.data_bytes(None);
    let mut lines = Vec::new();
    for levels in LEVELS {
        let setup = array.configure(levels)?;
        for tool in Tool::ALL {
            setup.sync_from_scratch(tool)?;
        }
        let setup = &setup;
        let mut variants = Tool::ALL.map(|tool| {
            Variant::new(tool.name(), move || {
                setup.array().warm_data(None)?;
                setup.warm_parity(tool)?;
                let secs = setup.timed(tool, &ARGS)?;
                Ok(observation([(SECS, secs), (MBPS, mb_per_s(bytes, secs))]))
            })
        });
        let samples = run_alternated(&mut variants, ctx.reps)?;
        let row = format!("parity-scrub {levels}-parity");
        for metric in [SECS, MBPS] {
            lines.extend(lines_for(&row, metric, metric, &samples, BASELINE));
        }
    }
    array.close()?;
    Ok(lines)
}
