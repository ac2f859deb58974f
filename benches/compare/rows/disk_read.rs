//! Row `disk-read`: reading a filled scratch disk straight from ext4, cold (page
//! cache dropped) against warm (just re-read). It is the raw-disk reference that
//! the pool rows compare against, and it exercises the scratch-disk machinery end to
//! end, including the check that teardown leaves nothing mounted.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;

use super::{lines_for, Ctx, RowSpec};
use crate::disks::{self, Disks};
use crate::measure::{mb_per_s, run_alternated, Observation, Variant};
use crate::report::Line;

pub const ROW: RowSpec = RowSpec {
    name: "disk-read",
    about: "sequential read of 1 GiB of 100 MiB and ~1 MiB files on a loop ext4, cold vs warm",
    run,
};

const METRIC: &str = "read";

fn run(ctx: &Ctx) -> Result<Vec<Line>> {
    disks::require_root("row disk-read")?;
    // (image size, data size, large file size, small file size)
    let scale = &ctx.scale;
    let (image, data, large, small) = (
        scale.data_image(),
        scale.data_per_disk,
        scale.large_file(),
        scale.small_file(),
    );
    let scratch = Disks::create(ctx.work_dir, 1, image)?;
    let paths = disks::fill(
        scratch.mounts()[0],
        &disks::file_sizes(data, large, small, 1),
        1,
    )?;
    let mut variants = [
        Variant::new("cold", || {
            disks::drop_caches()?;
            timed_read(&paths)
        }),
        Variant::new("warm", || {
            disks::read_all(&paths)?;
            timed_read(&paths)
        }),
    ];
    let samples = run_alternated(&mut variants, ctx.reps)?;
    scratch.close()?;
    Ok(lines_for(
        "disk-read ext4",
        METRIC,
        "MB/s",
        &samples,
        "cold",
    ))
}

fn timed_read(paths: &[PathBuf]) -> Result<Observation> {
    let start = Instant::now();
    let bytes = disks::read_all(paths)?;
    let mut obs = Observation::default();
    obs.values.insert(
        METRIC.into(),
        mb_per_s(bytes, start.elapsed().as_secs_f64()),
    );
    Ok(obs)
}
