//! How much work each row does: the default sizes (a full run in about 10 minutes
//! on 2 cores), the `--smoke` sizes (seconds), and the flags that change either.

use anyhow::{bail, Context, Result};
use serde::Serialize;

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;

/// The sizes the rows run at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Scale {
    /// Data per disk of the parity arrays (4 data disks), and of the `disk-read` disk.
    pub data_per_disk: u64,
    /// The file `pool-fio` writes and reads sequentially.
    pub fio_file: u64,
    /// How long `pool-fio` reads at random, per run.
    pub random_secs: u32,
    /// How many files `pool-meta` creates, stats, lists and removes.
    pub meta_files: usize,
}

/// The size flags as given; `None` keeps the default of the run's kind.
#[derive(Debug, Clone, Copy, Default)]
pub struct Overrides {
    pub data_per_disk: Option<u64>,
    pub fio_file: Option<u64>,
    pub random_secs: Option<u32>,
    pub meta_files: Option<usize>,
}

impl Scale {
    /// The default sizes.
    pub const FULL: Scale = Scale {
        data_per_disk: 1024 * MIB,
        fio_file: 1024 * MIB,
        random_secs: 5,
        meta_files: 10_000,
    };

    /// The `--smoke` sizes.
    pub const SMOKE: Scale = Scale {
        data_per_disk: 24 * MIB,
        fio_file: 64 * MIB,
        random_secs: 2,
        meta_files: 1_000,
    };

    /// The sizes of a run: smoke or full, then each flag given.
    pub fn new(smoke: bool, flags: Overrides) -> Result<Scale> {
        let base = if smoke { Scale::SMOKE } else { Scale::FULL };
        let scale = Scale {
            data_per_disk: flags.data_per_disk.unwrap_or(base.data_per_disk),
            fio_file: flags.fio_file.unwrap_or(base.fio_file),
            random_secs: flags.random_secs.unwrap_or(base.random_secs),
            meta_files: flags.meta_files.unwrap_or(base.meta_files),
        };
        if scale.data_per_disk < 16 * MIB {
            bail!("--data-per-disk must be at least 16M");
        }
        if scale.fio_file < 16 * MIB {
            bail!("--fio-size must be at least 16M");
        }
        if scale.random_secs == 0 {
            bail!("--random-secs must be at least 1");
        }
        if scale.meta_files < 100 {
            bail!("--meta-files must be at least 100");
        }
        Ok(scale)
    }

    /// The largest data file: a tenth of a disk, between 4 MiB and 100 MiB.
    pub fn large_file(&self) -> u64 {
        (self.data_per_disk / 10).clamp(4 * MIB, 100 * MIB)
    }

    /// The smallest data file: 1 MiB, or 256 KiB on disks under 64 MiB.
    pub fn small_file(&self) -> u64 {
        if self.data_per_disk < 64 * MIB {
            256 * KIB
        } else {
            MIB
        }
    }

    /// A data disk image: the data, ext4's overhead and room to spare (+30%, at
    /// least 40 MiB more).
    pub fn data_image(&self) -> u64 {
        whole_mib(self.data_per_disk + (self.data_per_disk * 3 / 10).max(40 * MIB))
    }

    /// A parity disk image: one level holds the fullest disk's data rounded up to
    /// whole blocks per file (about +6% with 1 MiB files), plus ext4's overhead.
    pub fn parity_image(&self) -> u64 {
        whole_mib(self.data_per_disk + (self.data_per_disk / 4).max(40 * MIB))
    }

    /// The `pool-fio` image: the read file and one write file at a time, with room
    /// to spare.
    pub fn fio_image(&self) -> u64 {
        whole_mib(self.fio_file * 4).max(512 * MIB)
    }

    /// How many folders `pool-meta` spreads its files over: 200 files each.
    pub fn meta_folders(&self) -> usize {
        (self.meta_files / 200).max(1)
    }

    /// The `pool-meta` image: ext4's default of one inode per 16 KiB leaves plenty
    /// (2 GiB holds 131,072), never under 512 MiB.
    pub fn meta_image(&self) -> u64 {
        (self.meta_files as u64 * 64 * KIB).max(512 * MIB)
    }
}

impl Scale {
    /// One line for the report: `data 1 GiB per disk, fio file 1 GiB, ...`.
    pub fn describe(&self) -> String {
        format!(
            "data {} per disk (--data-per-disk), pool-fio file {} (--fio-size) and {} s of \
             random reads (--random-secs), pool-meta {} files (--meta-files)",
            size_text(self.data_per_disk),
            size_text(self.fio_file),
            self.random_secs,
            self.meta_files
        )
    }
}

/// `2 GiB`, `64 MiB`, `1536 MiB`: whole GiB when exact, else MiB.
pub fn size_text(bytes: u64) -> String {
    if bytes >= 1 << 30 && bytes.is_multiple_of(1 << 30) {
        format!("{} GiB", bytes >> 30)
    } else {
        format!("{} MiB", bytes / MIB)
    }
}

fn whole_mib(bytes: u64) -> u64 {
    bytes.div_ceil(MIB) * MIB
}

/// A size such as `512M`, `2G`, `1.5G` or `4096K` (binary units; a plain number is
/// bytes).
pub fn parse_size(text: &str) -> Result<u64> {
    let text = text.trim();
    let (number, unit) = match text.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        Some((i, _)) => text.split_at(i),
        None => (text, ""),
    };
    let multiplier = match unit.to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KB" | "KIB" => KIB,
        "M" | "MB" | "MIB" => MIB,
        "G" | "GB" | "GIB" => 1 << 30,
        _ => bail!("{text:?}: unknown unit {unit:?}; use K, M or G (as in 512M or 2G)"),
    };
    let value: f64 = number
        .trim()
        .parse()
        .with_context(|| format!("{text:?} is not a size such as 512M or 2G"))?;
    if !value.is_finite() || value < 0.0 {
        bail!("{text:?} is not a size such as 512M or 2G");
    }
    Ok((value * multiplier as f64) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_units() {
        assert_eq!(parse_size("512M").unwrap(), 512 * MIB);
        assert_eq!(parse_size("2G").unwrap(), 2048 * MIB);
        assert_eq!(parse_size("1.5g").unwrap(), 1536 * MIB);
        assert_eq!(parse_size("4096KiB").unwrap(), 4 * MIB);
        assert_eq!(parse_size("1000").unwrap(), 1000);
        for bad in ["", "G", "-1G", "12T", "1..5M"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
        let message = parse_size("12T").unwrap_err().to_string();
        assert!(message.contains("use K, M or G"), "{message}");
    }

    #[test]
    fn flags_override_the_kind_of_run_and_are_checked() {
        assert_eq!(
            Scale::new(false, Overrides::default()).unwrap(),
            Scale::FULL
        );
        assert_eq!(
            Scale::new(true, Overrides::default()).unwrap(),
            Scale::SMOKE
        );
        let flags = Overrides {
            fio_file: Some(2048 * MIB),
            random_secs: Some(20),
            ..Overrides::default()
        };
        let scale = Scale::new(true, flags).unwrap();
        assert_eq!(
            (scale.fio_file, scale.random_secs, scale.data_per_disk),
            (2048 * MIB, 20, Scale::SMOKE.data_per_disk)
        );
        let too_small = Overrides {
            data_per_disk: Some(MIB),
            ..Overrides::default()
        };
        let message = Scale::new(false, too_small).unwrap_err().to_string();
        assert!(message.contains("--data-per-disk"), "{message}");
        let no_files = Overrides {
            meta_files: Some(10),
            ..Overrides::default()
        };
        assert!(Scale::new(false, no_files).is_err());
    }

    #[test]
    fn the_report_names_sizes_and_flags() {
        assert_eq!(
            Scale::FULL.describe(),
            "data 1 GiB per disk (--data-per-disk), pool-fio file 1 GiB (--fio-size) and 5 s \
             of random reads (--random-secs), pool-meta 10000 files (--meta-files)"
        );
        assert_eq!(size_text(1536 * MIB), "1536 MiB");
        assert_eq!(size_text(2048 * MIB), "2 GiB");
    }

    #[test]
    fn images_hold_what_goes_on_them() {
        for scale in [Scale::FULL, Scale::SMOKE] {
            assert!(scale.data_image() >= scale.data_per_disk + 40 * MIB);
            assert!(scale.parity_image() >= scale.data_per_disk * 106 / 100 + 16 * MIB);
            assert!(scale.fio_image() >= 2 * scale.fio_file + 64 * MIB);
            assert!(scale.meta_image() >= 512 * MIB);
            assert!(scale.large_file() <= scale.data_per_disk / 4);
            assert!(scale.small_file() < scale.large_file());
        }
        // The former fixed sizes stay what the defaults give.
        assert_eq!(Scale::FULL.data_image(), 1331 * MIB + MIB);
        assert_eq!(Scale::FULL.parity_image(), 1280 * MIB);
        assert_eq!(Scale::FULL.meta_folders(), 50);
        assert_eq!(Scale::FULL.meta_image(), 625 * MIB);
    }
}
