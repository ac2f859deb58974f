//! The quick start: shows lhparity's parity engine on temporary folders.
//!
//! It makes four "data disks" (folders) holding files of different sizes, computes
//! two parity files from them block by block, wipes two disks, rebuilds every lost
//! file from the survivors and the parity, and checks each byte against the original.

use std::fs;
use std::path::Path;
use std::time::Instant;

use anyhow::{ensure, Context, Result};
use parity_core::raid::{self, Kernel};

const BLOCK: usize = 256 * 1024;
const DISKS: usize = 4;
const PARITY: usize = 2;

fn main() -> Result<()> {
    let start = Instant::now();
    let root = std::env::temp_dir().join(format!("lhfs-quickstart-{}", std::process::id()));
    let result = run(&root);
    // Clean up whatever happened.
    let _ = fs::remove_dir_all(&root);
    result?;
    println!("done in {:.2} s", start.elapsed().as_secs_f64());
    Ok(())
}

fn step(what: &str) -> Instant {
    println!("==> {what}");
    Instant::now()
}

fn done(t: Instant) {
    println!("    ({:.0} ms)", t.elapsed().as_secs_f64() * 1e3);
}

fn run(root: &Path) -> Result<()> {
    println!(
        "lhparity quick start in {} (parity kernel: {})",
        root.display(),
        Kernel::selected()?
    );

    let t = step("writing 4 data disks with files of 24, 40, 9 and 31 MiB");
    let sizes = [24usize << 20, 40 << 20, 9 << 20, (31 << 20) + 12345];
    let mut originals = Vec::new();
    for (d, &size) in sizes.iter().enumerate() {
        let dir = root.join(format!("disk{}", d + 1));
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let bytes: Vec<u8> = (0..size)
            .map(|i| ((i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15 + d as u64) >> 56) as u8)
            .collect();
        fs::write(dir.join("file.bin"), &bytes)?;
        originals.push(bytes);
    }
    done(t);

    let t = step("computing 2 parity levels, one 256 KiB block position at a time");
    let positions = sizes.iter().map(|s| s.div_ceil(BLOCK)).max().unwrap_or(0);
    let disks: Vec<Vec<u8>> = (0..DISKS)
        .map(|d| {
            Ok(padded(
                fs::read(root.join(format!("disk{}/file.bin", d + 1)))?,
                positions,
            ))
        })
        .collect::<Result<_>>()?;
    let mut parity = vec![vec![0u8; positions * BLOCK]; PARITY];
    for pos in 0..positions {
        let r = pos * BLOCK..(pos + 1) * BLOCK;
        let data: Vec<&[u8]> = disks.iter().map(|d| &d[r.clone()]).collect();
        let mut out: Vec<&mut [u8]> = parity.iter_mut().map(|p| &mut p[r.clone()]).collect();
        raid::generate(&data, &mut out)?;
    }
    for (l, p) in parity.iter().enumerate() {
        fs::write(root.join(format!("parity{}", l + 1)), p)?;
    }
    done(t);

    let t = step("wiping disk2 and disk4");
    for d in [2, 4] {
        fs::remove_dir_all(root.join(format!("disk{d}")))?;
    }
    done(t);

    let t = step("rebuilding the two lost disks from the other two and both parity levels");
    let mut stripe: Vec<Vec<u8>> = (0..DISKS)
        .map(
            |d| match fs::read(root.join(format!("disk{}/file.bin", d + 1))) {
                Ok(bytes) => padded(bytes, positions),
                Err(_) => vec![0u8; positions * BLOCK],
            },
        )
        .collect();
    for l in 0..PARITY {
        stripe.push(fs::read(root.join(format!("parity{}", l + 1)))?);
    }
    for pos in 0..positions {
        let r = pos * BLOCK..(pos + 1) * BLOCK;
        let mut blocks: Vec<&mut [u8]> = stripe.iter_mut().map(|b| &mut b[r.clone()]).collect();
        raid::recover(DISKS, &[1, 3], &mut blocks)?;
    }
    done(t);

    let t = step("checking every byte of the rebuilt files");
    for d in [1usize, 3] {
        let rebuilt = &stripe[d][..sizes[d]];
        ensure!(rebuilt == originals[d].as_slice(), "disk{} differs", d + 1);
        println!("    disk{}: {} bytes identical", d + 1, sizes[d]);
    }
    done(t);
    Ok(())
}

fn padded(mut bytes: Vec<u8>, positions: usize) -> Vec<u8> {
    bytes.resize(positions * BLOCK, 0);
    bytes
}
