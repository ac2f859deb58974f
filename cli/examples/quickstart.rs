//! The quick start: a whole lhparity round trip on temporary folders.
//!
//! It makes four "data disks" of different sizes, writes files onto them, protects
//! them with two parity levels (`sync`), wipes two disks, rebuilds them (`fix -d`),
//! and checks every file against the checksum it had before.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{ensure, Context, Result};
use parity_core::config::Config;
use parity_core::fix::{fix, FixOptions};
use parity_core::raid::Kernel;
use parity_core::sync::{sync, Progress, SyncOptions};

struct Quiet;
impl Progress for Quiet {
    fn start(&self, _: u64) {}
    fn advance(&self, _: u64) {}
    fn finish(&self) {}
}

fn main() -> Result<()> {
    let start = Instant::now();
    let root = std::env::temp_dir().join(format!("lhfs-quickstart-{}", std::process::id()));
    let result = run(&root);
    let _ = fs::remove_dir_all(&root);
    result?;
    println!(
        "done in {:.2} s; everything it made is removed",
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

fn step(what: &str) -> Instant {
    println!("==> {what}");
    Instant::now()
}

fn done(t: Instant) {
    println!("    ({:.0} ms)", t.elapsed().as_secs_f64() * 1e3);
}

/// A checksum that is enough to show two files are the same bytes.
fn checksum(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex()[..16].to_string()
}

fn run(root: &Path) -> Result<()> {
    println!(
        "lhparity quick start in {} (parity kernel: {})",
        root.display(),
        Kernel::selected()?
    );
    let disks: Vec<PathBuf> = (1..=4).map(|i| root.join(format!("disk{i}"))).collect();
    for dir in disks
        .iter()
        .chain([&root.join("parity"), &root.join("content")])
    {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }

    let t = step("writing files of different sizes onto 4 data disks");
    let mut originals = BTreeMap::new();
    let plan: [&[(&str, usize)]; 4] = [
        &[("movies/a.mkv", 48 << 20), ("notes.txt", 1234)],
        &[
            ("photos/2024/img1.jpg", 3 << 20),
            ("photos/2024/img2.jpg", 5 << 20),
            ("music/song.flac", 30 << 20),
        ],
        &[("backup.tar", 20 << 20)],
        &[("docs/report.pdf", 700_000), ("docs/slides.pdf", 9 << 20)],
    ];
    for (d, files) in plan.iter().enumerate() {
        for (i, &(name, size)) in files.iter().enumerate() {
            let path = disks[d].join(name);
            fs::create_dir_all(path.parent().context("file has a parent")?)?;
            let bytes: Vec<u8> = (0..size)
                .map(|k| {
                    ((k as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15 ^ (d * 31 + i) as u64) >> 56)
                        as u8
                })
                .collect();
            fs::write(&path, &bytes)?;
            println!(
                "    disk{}/{name}: {} bytes, checksum {}",
                d + 1,
                size,
                checksum(&bytes)
            );
            originals.insert(path, checksum(&bytes));
        }
    }
    done(t);

    let conf = root.join("lhparity.conf");
    let mut text = format!(
        "parity {0}/parity/p1\n2-parity {0}/parity/p2\ncontent {0}/content/state\ncontent {0}/disk1/.state\nblocksize 256\n",
        root.display()
    );
    for (i, d) in disks.iter().enumerate() {
        text += &format!("data d{} {}\n", i + 1, d.display());
    }
    fs::write(&conf, &text)?;
    println!(
        "==> config {}:\n{}",
        conf.display(),
        text.lines()
            .map(|l| format!("    {l}\n"))
            .collect::<String>()
    );
    let config = Config::load(&conf)?;

    let t = step("lhparity sync: two parity levels over all four disks");
    let report = sync(&config, &SyncOptions::default(), &Quiet)?;
    println!(
        "    {} block positions, {:.1} MB read, {:.0} MB/s",
        report.positions_synced,
        report.bytes as f64 / 1e6,
        report.bytes as f64 / 1e6 / report.seconds.max(1e-9)
    );
    done(t);

    let t = step("wiping disk2 and disk4 (two failed disks)");
    for d in [1, 3] {
        fs::remove_dir_all(&disks[d])?;
        fs::create_dir_all(&disks[d])?;
    }
    done(t);

    let t = step("lhparity fix -d d2 -d d4: rebuilding both from the others and the parity");
    let options = FixOptions {
        disks: vec!["d2".into(), "d4".into()],
        ..FixOptions::default()
    };
    let report = fix(&config, &options, &Quiet)?;
    ensure!(
        report.unrecoverable.is_empty(),
        "unrecoverable: {:?}",
        report.unrecoverable
    );
    println!(
        "    {} files rebuilt, {:.1} MB",
        report.fixed.len(),
        report.bytes as f64 / 1e6
    );
    done(t);

    let t = step("checking every file against its original checksum");
    for (path, want) in &originals {
        let got = checksum(&fs::read(path).with_context(|| format!("reading {}", path.display()))?);
        ensure!(&got == want, "{} differs after the fix", path.display());
        println!(
            "    {} ok",
            path.strip_prefix(root).unwrap_or(path).display()
        );
    }
    done(t);
    Ok(())
}
