//! Scratch disks for the rows that touch storage: N ext4 images, each loop-mounted
//! so that snapraid sees separate devices, filled with deterministic pseudo-random
//! files, plus page-cache control for cold and warm runs.
//!
//! `Disks` owns its images: dropping it (also on an error or after Ctrl-C, see
//! `interrupt`) unmounts them, detaches their loop devices and removes the files.
//! `Disks::close` does the same and also verifies that nothing is left behind.
//! Everything here needs root; `require_root` says so up front.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::interrupt;

/// Fails with a clear message when not running as root.
pub fn require_root(what: &str) -> Result<()> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        bail!("{what} needs root (loop devices, mount, drop_caches); run the comparison as root");
    }
    Ok(())
}

/// Loop-mounted ext4 images in a private folder under the work folder.
pub struct Disks {
    root: PathBuf,
    disks: Vec<Disk>,
    closed: bool,
}

struct Disk {
    image: PathBuf,
    mount: PathBuf,
    mounted: bool,
}

impl Disks {
    /// Creates `count` images of `size` bytes (sparse), formats and mounts them.
    pub fn create(work_dir: &Path, count: usize, size: u64) -> Result<Disks> {
        require_root("creating loop disks")?;
        static SERIAL: AtomicUsize = AtomicUsize::new(0);
        let root = work_dir.join(format!(
            "lhfs-disks-{}-{}",
            std::process::id(),
            SERIAL.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&root)
            .with_context(|| format!("creating work folder {}", root.display()))?;
        // From here on, Drop removes whatever was made if a step fails.
        let mut disks = Disks {
            root,
            disks: Vec::with_capacity(count),
            closed: false,
        };
        for i in 0..count {
            interrupt::check()?;
            let image = disks.root.join(format!("disk{i}.img"));
            let mount = disks.root.join(format!("disk{i}"));
            File::create(&image)
                .and_then(|f| f.set_len(size))
                .with_context(|| format!("creating image {}", image.display()))?;
            std::fs::create_dir(&mount)
                .with_context(|| format!("creating mount point {}", mount.display()))?;
            disks.disks.push(Disk {
                image: image.clone(),
                mount: mount.clone(),
                mounted: false,
            });
            // No reserved blocks, so the whole image is usable; inode tables and
            // journal written now, so no background ext4lazyinit I/O runs during a
            // measurement.
            run(Command::new("mkfs.ext4")
                .args(["-q", "-F", "-m", "0"])
                .args(["-E", "lazy_itable_init=0,lazy_journal_init=0"])
                .arg(&image))?;
            run(Command::new("mount")
                .args(["-o", "loop"])
                .arg(&image)
                .arg(&mount))?;
            if let Some(d) = disks.disks.last_mut() {
                d.mounted = true;
            }
            // The loop device reads and writes its image with O_DIRECT, as a disk
            // moves data by DMA: with buffered I/O every page would be cached twice
            // (the file system's and the image's), and the write-back of the file
            // system would cost a second copy on the CPU.
            let device = output(
                Command::new("findmnt")
                    .args(["-n", "-o", "SOURCE", "--mountpoint"])
                    .arg(&mount),
            )?;
            run(Command::new("losetup")
                .arg("--direct-io=on")
                .arg(device.trim()))?;
        }
        Ok(disks)
    }

    /// The mount points, one per disk.
    pub fn mounts(&self) -> Vec<&Path> {
        self.disks.iter().map(|d| d.mount.as_path()).collect()
    }

    /// Unmounts and removes everything, then checks that no mount or loop device of
    /// ours remains.
    pub fn close(mut self) -> Result<()> {
        self.teardown()
    }

    fn teardown(&mut self) -> Result<()> {
        if self.closed {
            return Ok(());
        }
        self.closed = true;
        let mut problems = Vec::new();
        for disk in self.disks.drain(..).rev() {
            if disk.mounted {
                if let Err(e) = unmount(&disk.mount) {
                    problems.push(format!("{e:#}"));
                    // Never delete below a folder that may still be a mount.
                    continue;
                }
            }
            if let Err(e) = detach(&disk.image) {
                problems.push(format!("{e:#}"));
            }
            for (path, result) in [
                (&disk.image, std::fs::remove_file(&disk.image)),
                (&disk.mount, std::fs::remove_dir(&disk.mount)),
            ] {
                match result {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        problems.push(format!("removing {}: {e}", path.display()))
                    }
                    _ => {}
                }
            }
        }
        if problems.is_empty() {
            if let Err(e) = std::fs::remove_dir(&self.root) {
                problems.push(format!("removing {}: {e}", self.root.display()));
            }
        }
        let mounts = std::fs::read_to_string("/proc/mounts").context("reading /proc/mounts")?;
        // With the separator, so that `...-1` does not match `...-10`.
        let prefix = format!("{}/", self.root.display());
        if let Some(line) = mounts.lines().find(|l| l.contains(&prefix)) {
            problems.push(format!("still mounted: {line}"));
        }
        let loops = output(Command::new("losetup").arg("-a"))?;
        if let Some(line) = loops.lines().find(|l| l.contains(&prefix)) {
            problems.push(format!("loop device still attached: {line}"));
        }
        if !problems.is_empty() {
            bail!(
                "cleaning up {} left things behind; check `mount` and `losetup -a`:\n  {}",
                self.root.display(),
                problems.join("\n  ")
            );
        }
        Ok(())
    }
}

impl Drop for Disks {
    fn drop(&mut self) {
        if let Err(e) = self.teardown() {
            eprintln!("warning: {e:#}");
        }
    }
}

/// Unmounts, retrying briefly while busy, and lazily as a last resort (the folder
/// then leaves the namespace at once, so removing it is safe).
fn unmount(mount: &Path) -> Result<()> {
    for _ in 0..3 {
        if run(Command::new("umount").arg(mount)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    run(Command::new("umount").arg("-l").arg(mount))
        .with_context(|| format!("could not unmount {}", mount.display()))
}

/// Detaches any loop device still backed by `image`. `mount -o loop` sets
/// autoclear, which detaches on unmount but asynchronously, so wait a moment first.
fn detach(image: &Path) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let devices = loop_devices(&output(Command::new("losetup").arg("-j").arg(image))?);
        if devices.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            for dev in devices {
                run(Command::new("losetup").args(["-d", &dev]))?;
            }
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Device names from `losetup -j` output (`/dev/loop3: []: (/path/img)` per line).
fn loop_devices(losetup_output: &str) -> Vec<String> {
    losetup_output
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(dev, _)| dev.trim().to_string())
        .filter(|dev| dev.starts_with("/dev/"))
        .collect()
}

/// Runs a command, failing with its stderr if it exits non-zero.
fn run(cmd: &mut Command) -> Result<()> {
    output(cmd).map(drop)
}

/// Runs a command and returns its stdout, failing with its stderr on a non-zero exit.
fn output(cmd: &mut Command) -> Result<String> {
    let shown = format!("{cmd:?}");
    let out = cmd
        .output()
        .with_context(|| format!("starting {shown} (is it installed?)"))?;
    if !out.status.success() {
        bail!(
            "{shown} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// File sizes that add up to at most `total`: about half of it in files of `large`
/// bytes, the rest in files of `small` bytes +-25% (deterministic for a seed), the
/// mix that big media files and small documents make on a real data disk.
pub fn file_sizes(total: u64, large: u64, small: u64, seed: u64) -> Vec<u64> {
    let mut sizes = vec![large; (total / 2 / large.max(1)) as usize];
    let mut left = total - sizes.iter().sum::<u64>();
    let mut rng = SplitMix64(seed);
    let spread = (small / 2).max(1);
    while left > 0 && small > 0 {
        let size = (small - small / 4 + rng.next() % spread).min(left);
        sizes.push(size);
        left -= size;
    }
    sizes
}

/// Writes one file per size into `dir` (named `f00000.bin`, ...) with pseudo-random
/// content that depends only on `seed` and the file's index; returns the paths.
pub fn fill(dir: &Path, sizes: &[u64], seed: u64) -> Result<Vec<PathBuf>> {
    let mut paths = Vec::with_capacity(sizes.len());
    for (i, &size) in sizes.iter().enumerate() {
        interrupt::check()?;
        let path = dir.join(format!("f{i:05}.bin"));
        write_file(
            &path,
            size,
            seed ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15),
        )?;
        paths.push(path);
    }
    Ok(paths)
}

/// Creates or truncates `path` and writes `size` pseudo-random bytes that depend only
/// on `seed`. Rewriting a file in place keeps its inode and changes its content and
/// mtime, which is what a user editing a file looks like to a parity tool.
pub fn write_file(path: &Path, size: u64, seed: u64) -> Result<()> {
    const CHUNK: usize = 1 << 20;
    let mut buf = vec![0u8; CHUNK.min(size as usize)];
    let mut file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut rng = SplitMix64(seed);
    let mut left = size;
    while left > 0 {
        let n = left.min(CHUNK as u64) as usize;
        for word in buf[..n].chunks_mut(8) {
            word.copy_from_slice(&rng.next().to_le_bytes()[..word.len()]);
        }
        file.write_all(&buf[..n])
            .with_context(|| format!("writing {}", path.display()))?;
        left -= n as u64;
    }
    Ok(())
}

/// Writes all dirty pages back, so that the write-back of one run's output is not
/// charged to the next timed run.
pub fn write_back() {
    // SAFETY: sync has no preconditions.
    unsafe { libc::sync() };
}

/// Writes dirty pages back and drops the page cache, for a cold measurement.
pub fn drop_caches() -> Result<()> {
    write_back();
    std::fs::write("/proc/sys/vm/drop_caches", "3\n")
        .context("writing /proc/sys/vm/drop_caches (needs root)")
}

/// Reads every file to the end and returns the bytes read. Also how a warm run
/// primes the cache: an idle page cache is reclaimed within about a minute here, so
/// warm runs re-read their data right before measuring.
pub fn read_all(paths: &[PathBuf]) -> Result<u64> {
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0;
    for path in paths {
        let mut file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        loop {
            let n = file
                .read(&mut buf)
                .with_context(|| format!("reading {}", path.display()))?;
            if n == 0 {
                break;
            }
            total += n as u64;
        }
    }
    Ok(total)
}

/// The SplitMix64 generator: fast, and enough to make file content incompressible.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn sizes_mix_large_and_small_files() {
        let sizes = file_sizes(1024 * MIB, 100 * MIB, MIB, 7);
        let total: u64 = sizes.iter().sum();
        assert_eq!(total, 1024 * MIB);
        assert_eq!(sizes.iter().filter(|&&s| s == 100 * MIB).count(), 5);
        let small = &sizes[5..];
        assert!(small.len() > 400);
        // All but the trimmed last one lie within +-25%.
        assert!(small[..small.len() - 1]
            .iter()
            .all(|&s| (3 * MIB / 4..5 * MIB / 4).contains(&s)));
        assert_eq!(sizes, file_sizes(1024 * MIB, 100 * MIB, MIB, 7));
        assert_ne!(sizes, file_sizes(1024 * MIB, 100 * MIB, MIB, 8));
        assert_eq!(file_sizes(0, MIB, MIB, 1), Vec::<u64>::new());
    }

    #[test]
    fn losetup_devices_are_parsed() {
        let text = "/dev/loop3: []: (/var/tmp/x/disk0.img)\n/dev/loop12: [2049]:5 (/a b.img)\n";
        assert_eq!(loop_devices(text), ["/dev/loop3", "/dev/loop12"]);
        assert!(loop_devices("").is_empty());
    }

    #[test]
    fn fill_is_deterministic() {
        let dir = std::env::temp_dir().join(format!("lhfs-fill-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let paths = fill(&dir, &[0, 13, 3 * MIB + 5], 42).unwrap();
        let a: Vec<Vec<u8>> = paths.iter().map(|p| std::fs::read(p).unwrap()).collect();
        assert_eq!(read_all(&paths).unwrap(), 3 * MIB + 18);
        fill(&dir, &[0, 13, 3 * MIB + 5], 42).unwrap();
        let b: Vec<Vec<u8>> = paths.iter().map(|p| std::fs::read(p).unwrap()).collect();
        assert_eq!(a, b);
        assert_ne!(a[2][..1024], a[2][1024..2048]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Needs root and loop devices: `cargo test -p lhfs-benches --bin compare -- --ignored`.
    #[test]
    #[ignore]
    fn loop_disks_mount_fill_and_vanish() {
        let disks = Disks::create(Path::new("/var/tmp"), 2, 32 * MIB).unwrap();
        let root = disks.root.clone();
        let mounts: Vec<PathBuf> = disks.mounts().iter().map(|p| p.to_path_buf()).collect();
        let proc_mounts = std::fs::read_to_string("/proc/mounts").unwrap();
        for m in &mounts {
            assert!(proc_mounts.contains(&*m.to_string_lossy()));
            let paths = fill(m, &file_sizes(8 * MIB, 4 * MIB, 256 << 10, 1), 1).unwrap();
            drop_caches().unwrap();
            assert_eq!(read_all(&paths).unwrap(), 8 * MIB);
        }
        // Separate devices, as snapraid requires.
        let dev = |p: &Path| std::os::unix::fs::MetadataExt::dev(&std::fs::metadata(p).unwrap());
        assert_ne!(dev(&mounts[0]), dev(&mounts[1]));
        disks.close().unwrap();
        assert!(!root.exists());
    }
}
