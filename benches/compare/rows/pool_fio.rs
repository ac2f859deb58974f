//! Row `pool-fio`: file I/O with fio through the raw branch, lhfs (passthrough on and
//! off) and mergerfs, on the test bed of `pool` (one ext4 image, two branches, the
//! pools creating on the first). Four figures, each rotated over the variants on
//! its own, raw ext4 the baseline and the lhfs variants also against mergerfs:
//!
//! - **seq write**: the file (`--fio-size`, 1 GiB by default) in 1 MiB blocks with `--end_fsync=1`, so the figure includes
//!   getting the data to the disk (fio counts the final fsync in its runtime). The
//!   file is deleted before and after every run, so each run allocates afresh.
//!   `--fallocate=none`: fio would otherwise preallocate, and how a pool forwards
//!   fallocate is not what this row measures.
//! - **seq read cold**: one file of that size, written once straight to the branch before
//!   the row and read by every variant (the same blocks on disk), 1 MiB blocks, page
//!   cache dropped before every run.
//! - **seq read warm**: the same file read once right before the run (an idle page
//!   cache does not stay warm here), and fio told not to drop it (`--invalidate=0`).
//! - **random read**: 4 KiB random reads on the warm file for `--random-secs` (5 s by
//!   default; `--time_based`), one job, queue depth 1; IOPS.
//!
//! Throughput is fio's `bw_bytes` in MB/s (10^6 bytes per second). The image holds
//! four times the file; `--smoke` uses a 512 MiB image, 64 MiB files and 2 s of
//! random reads.

use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use super::pool::{self, Bed, Target};
use super::{run_tool, Ctx, RowSpec};
use crate::disks;
use crate::measure::{run_rotated, Observation, Variant};
use crate::report::Line;
use crate::scale::{size_text, Scale};

pub const ROW: RowSpec = RowSpec {
    name: "pool-fio",
    about: "fio on raw ext4 vs lhfs (passthrough on/off) vs mergerfs: seq write, seq read \
            cold/warm (1 GiB, --fio-size), 4 KiB random read (5 s, --random-secs)",
    run,
};

const METRIC: &str = "fio";
/// The file every read test reads, written once in branch `b1`.
const READ_FILE: &str = "fio-read.dat";
/// The file the write test creates and deletes again, in the variant's folder.
const WRITE_FILE: &str = "fio-write.dat";
const SEED: u64 = 0xf10_0000;

/// Image, file size and random-read duration for a run.
#[derive(Debug, Clone, Copy)]
struct Sizes {
    image: u64,
    file: u64,
    random_secs: u32,
}

impl Sizes {
    fn new(scale: &Scale) -> Sizes {
        Sizes {
            image: scale.fio_image(),
            file: scale.fio_file,
            random_secs: scale.random_secs,
        }
    }
}

/// One fio measurement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Test {
    SeqWrite,
    SeqReadCold,
    SeqReadWarm,
    RandRead,
}

impl Test {
    const ALL: [Test; 4] = [
        Test::SeqWrite,
        Test::SeqReadCold,
        Test::SeqReadWarm,
        Test::RandRead,
    ];

    /// The report row.
    fn row(self, sizes: &Sizes) -> String {
        let size = size_text(sizes.file);
        match self {
            Test::SeqWrite => format!("pool-fio seq write {size} 1 MiB blocks"),
            Test::SeqReadCold => format!("pool-fio seq read {size} cold"),
            Test::SeqReadWarm => format!("pool-fio seq read {size} warm"),
            Test::RandRead => format!("pool-fio random read 4 KiB warm {} s", sizes.random_secs),
        }
    }

    fn unit(self) -> &'static str {
        match self {
            Test::RandRead => "IOPS",
            _ => "MB/s",
        }
    }

    fn file(self) -> &'static str {
        match self {
            Test::SeqWrite => WRITE_FILE,
            _ => READ_FILE,
        }
    }

    /// fio's arguments for this test on `file`.
    fn fio_args(self, file: &Path, sizes: &Sizes) -> Result<Vec<String>> {
        let file = file.to_str().context("the test file's path is not UTF-8")?;
        // fio splits --filename at colons.
        if file.contains(':') {
            bail!("fio cannot take a file name with a colon: {file}");
        }
        let mut args: Vec<String> = [
            "--name=pool".to_string(),
            format!("--filename={file}"),
            format!("--size={}", sizes.file),
            "--ioengine=psync".into(),
            "--numjobs=1".into(),
            "--fallocate=none".into(),
            "--output-format=json".into(),
        ]
        .into();
        let specific: &[&str] = match self {
            Test::SeqWrite => &["--rw=write", "--bs=1M", "--end_fsync=1"],
            Test::SeqReadCold => &["--rw=read", "--bs=1M"],
            Test::SeqReadWarm => &["--rw=read", "--bs=1M", "--invalidate=0"],
            Test::RandRead => &["--rw=randread", "--bs=4k", "--invalidate=0", "--time_based"],
        };
        args.extend(specific.iter().map(|s| s.to_string()));
        if self == Test::RandRead {
            args.push(format!("--runtime={}", sizes.random_secs));
        }
        Ok(args)
    }

    /// The bytes fio moved in this test's direction.
    fn bytes(self, result: &FioResult) -> u64 {
        match self {
            Test::SeqWrite => result.write.io_bytes,
            _ => result.read.io_bytes,
        }
    }

    /// The figure this test reports from fio's result.
    fn value(self, result: &FioResult) -> f64 {
        match self {
            Test::SeqWrite => result.write.bw_bytes / 1e6,
            Test::SeqReadCold | Test::SeqReadWarm => result.read.bw_bytes / 1e6,
            Test::RandRead => result.read.iops,
        }
    }
}

fn run(ctx: &Ctx) -> Result<Vec<Line>> {
    // Before the image is made: without fio there is nothing to run.
    let fio = ctx.peer("fio")?;
    let sizes = Sizes::new(&ctx.scale);
    let bed = Bed::create(ctx, ROW.name, sizes.image)?;
    let read_file = bed.branch1().join(READ_FILE);
    disks::write_file(&read_file, sizes.file, SEED)?;
    disks::write_back();
    let mut lines = Vec::new();
    for test in Test::ALL {
        eprintln!("  {}", test.row(&sizes));
        let (bed, fio, sizes) = (&bed, fio.as_path(), &sizes);
        let mut variants: Vec<Variant> = bed
            .targets()
            .iter()
            .map(|target| {
                Variant::new(target.kind.name(), move || {
                    measure(fio, bed, target, test, sizes)
                })
            })
            .collect();
        let samples = run_rotated(&mut variants, ctx.reps, |_| Ok(()), true)?;
        lines.extend(pool::lines(&test.row(sizes), METRIC, test.unit(), &samples));
    }
    bed.close()?;
    Ok(lines)
}

/// One run of `test` in `target`: prepare the cache, run fio, read its figure.
fn measure(
    fio: &Path,
    bed: &Bed,
    target: &Target,
    test: Test,
    sizes: &Sizes,
) -> Result<Observation> {
    let file = target.dir.join(test.file());
    match test {
        Test::SeqWrite => {
            remove_if_there(&file)?;
            disks::write_back();
        }
        Test::SeqReadCold => disks::drop_caches()?,
        Test::SeqReadWarm | Test::RandRead => {
            disks::write_back();
            disks::read_all(std::slice::from_ref(&file))?;
        }
    }
    let mut cmd = Command::new(fio);
    cmd.args(test.fio_args(&file, sizes)?).stdin(Stdio::null());
    let out = run_tool(&mut cmd)?;
    let result = parse_fio(&out).with_context(|| format!("reading the output of {cmd:?}"))?;
    if test == Test::SeqWrite {
        // Frees the space for the next variant's write.
        remove_if_there(&file)?;
    }
    let moved = test.bytes(&result);
    if test != Test::RandRead && moved < sizes.file {
        bail!(
            "fio moved only {moved} of {} bytes of {}",
            sizes.file,
            file.display()
        );
    }
    let mut obs = Observation::default();
    obs.values.insert(METRIC.into(), test.value(&result));
    if let Some(note) = bed.note(target) {
        obs.notes.insert(METRIC.into(), note);
    }
    Ok(obs)
}

fn remove_if_there(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("removing {}", path.display()))
        }
        _ => Ok(()),
    }
}

/// One direction of fio's result, summed over its jobs.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct FioDirection {
    /// Bytes per second.
    bw_bytes: f64,
    iops: f64,
    io_bytes: u64,
}

#[derive(Debug, Clone, PartialEq)]
struct FioResult {
    read: FioDirection,
    write: FioDirection,
}

/// Reads fio's `--output-format=json` text. Anything before the JSON (fio prints
/// some warnings to stdout) is skipped; a job that reports an error fails the parse.
fn parse_fio(text: &str) -> Result<FioResult> {
    let start = text.find('{').context("fio printed no JSON")?;
    let json: Value = serde_json::from_str(&text[start..]).context("fio's JSON does not parse")?;
    let jobs = json["jobs"]
        .as_array()
        .filter(|j| !j.is_empty())
        .context("fio's JSON has no jobs")?;
    let mut result = FioResult {
        read: FioDirection::default(),
        write: FioDirection::default(),
    };
    for job in jobs {
        let name = job["jobname"].as_str().unwrap_or("?");
        match job["error"].as_i64() {
            Some(0) => {}
            Some(code) => bail!("fio job {name} failed with error {code}"),
            None => bail!("fio job {name} has no error field"),
        }
        for (key, sum) in [("read", &mut result.read), ("write", &mut result.write)] {
            let dir = &job[key];
            let number = |field: &str| {
                dir[field]
                    .as_f64()
                    .with_context(|| format!("fio job {name} has no {key}.{field}"))
            };
            sum.bw_bytes += number("bw_bytes")?;
            sum.iops += number("iops")?;
            sum.io_bytes += dir["io_bytes"]
                .as_u64()
                .with_context(|| format!("fio job {name} has no {key}.io_bytes"))?;
        }
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    const RANDREAD: &str = include_str!("testdata/fio-randread.json");
    const WRITE: &str = include_str!("testdata/fio-write.json");

    #[test]
    fn parses_a_random_read_run() {
        let r = parse_fio(RANDREAD).unwrap();
        assert_eq!(r.read.bw_bytes, 1295380398.0);
        assert_eq!(r.read.iops, 316254.98008);
        assert_eq!(r.read.io_bytes, 1300561920);
        assert_eq!(r.write, FioDirection::default());
        assert_eq!(Test::RandRead.value(&r), 316254.98008);
        assert_eq!(Test::SeqReadWarm.value(&r), 1295.380398);
    }

    #[test]
    fn parses_a_write_run_after_a_warning() {
        let text = format!("fio: some warning\n{WRITE}");
        let r = parse_fio(&text).unwrap();
        assert_eq!(r.write.bw_bytes, 197851819.0);
        assert_eq!(r.write.io_bytes, 1 << 30);
        assert_eq!(r.read.io_bytes, 0);
        assert_eq!(Test::SeqWrite.value(&r), 197.851819);
    }

    #[test]
    fn bad_output_is_refused() {
        assert!(parse_fio("").is_err());
        assert!(parse_fio("{\"jobs\": []}").is_err());
        let failed = RANDREAD.replacen("\"error\" : 0", "\"error\" : 5", 1);
        let err = format!("{:#}", parse_fio(&failed).unwrap_err());
        assert!(err.contains("fio job pool failed with error 5"), "{err}");
        let truncated = &WRITE[..WRITE.len() / 2];
        assert!(parse_fio(truncated).is_err());
    }

    #[test]
    fn fio_arguments_per_test() {
        let sizes = Sizes::new(&Scale {
            fio_file: 2 << 30,
            random_secs: 20,
            ..Scale::FULL
        });
        let args = |t: Test| t.fio_args(Path::new("/p/f.dat"), &sizes).unwrap().join(" ");
        let common = "--name=pool --filename=/p/f.dat --size=2147483648 --ioengine=psync \
                      --numjobs=1 --fallocate=none --output-format=json";
        assert_eq!(
            args(Test::SeqWrite),
            format!("{common} --rw=write --bs=1M --end_fsync=1")
        );
        assert_eq!(
            args(Test::SeqReadCold),
            format!("{common} --rw=read --bs=1M")
        );
        assert!(args(Test::SeqReadWarm).ends_with("--invalidate=0"));
        assert!(args(Test::RandRead)
            .ends_with("--rw=randread --bs=4k --invalidate=0 --time_based --runtime=20"));
        assert!(Test::SeqWrite.fio_args(Path::new("/a:b"), &sizes).is_err());
    }

    #[test]
    fn row_names_show_the_sizes() {
        let full = Sizes::new(&Scale::FULL);
        assert_eq!(
            Test::SeqWrite.row(&full),
            "pool-fio seq write 1 GiB 1 MiB blocks"
        );
        assert_eq!(
            Test::RandRead.row(&full),
            "pool-fio random read 4 KiB warm 5 s"
        );
        assert_eq!(
            Test::SeqReadCold.row(&Sizes::new(&Scale::SMOKE)),
            "pool-fio seq read 64 MiB cold"
        );
    }
}
