//! The test bed behind the rows `pool-fio` and `pool-meta`, set up once per row:
//! one fresh journaled ext4 loop image holding two branch folders `b1` and `b2`, and
//! the targets every variant works in:
//!
//! - `raw ext4`: branch `b1` itself, the baseline;
//! - `lhfs passthrough.io=rw` and `lhfs passthrough.io=off`: an lhfs pool over both
//!   branches, FUSE passthrough on and off;
//! - `mergerfs cache.files=off`: a mergerfs pool over the same branches, with the
//!   page-cache mode Debian's mergerfs 2.33 uses by default.
//!
//! Both branches live on one filesystem so that raw, lhfs and mergerfs all reach the
//! same ext4; the pools create with `category.create=ff`, so their files land in `b1`
//! like the raw ones. Both pools get `cache.files=off` (lhfs's own default too) and
//! `minfreespace=0`: the 4 GiB default would make every create fail on a smoke-sized
//! image. Everything else is each program's default.
//!
//! The pools are mounted in the foreground (`-f`) as children of the runner, in their
//! own process group so that a Ctrl-C reaches the runner and not them: the runner then
//! unmounts them in order. A pool counts as mounted once its mountpoint shows another
//! device than the folder above it. Teardown (`close`, or `Drop` on an error)
//! unmounts every pool lazily, waits for its daemon to exit (killing it after 10 s),
//! checks `/proc/mounts` for leftovers and only then removes the image.
//!
//! Both rows run each test over the variants in turn, the order reversing on every
//! other repetition (A B C D, D C B A, ...), so that the baseline is not always the
//! first run after a change of test (the first write on the fresh image, say).
//!
//! A missing lhfs build or mergerfs install drops those variants from the row; the
//! report lists them as variants that did not run.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::{lines_for, Ctx};
use crate::disks::{self, Disks};
use crate::interrupt;
use crate::measure::{ratio, Samples};
use crate::report::{format_ratio, Line};

/// The variant every ratio is taken against.
pub const BASELINE: &str = "raw ext4";
/// The peer the lhfs variants are also compared with, in their note.
const PEER: &str = "mergerfs cache.files=off";
/// Options both pools share (see the module docs).
const COMMON_OPTIONS: &str = "category.create=ff,cache.files=off,minfreespace=0";
/// How long a pool may take to mount, and its daemon to exit after the unmount.
const MOUNT_TIMEOUT: Duration = Duration::from_secs(10);
/// What lhfs prints when the kernel refuses passthrough and it serves I/O itself.
const PASSTHROUGH_REFUSED: &str = "lhfs: FUSE passthrough";

/// Where a variant's files go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Raw,
    Lhfs { passthrough: bool },
    Mergerfs,
}

impl Kind {
    /// Every variant in run order: the baseline first, the peer last.
    pub const ALL: [Kind; 4] = [
        Kind::Raw,
        Kind::Lhfs { passthrough: true },
        Kind::Lhfs { passthrough: false },
        Kind::Mergerfs,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Raw => BASELINE,
            Kind::Lhfs { passthrough: true } => "lhfs passthrough.io=rw",
            Kind::Lhfs { passthrough: false } => "lhfs passthrough.io=off",
            Kind::Mergerfs => PEER,
        }
    }

    /// A file-name-safe form of the name, for mountpoints and logs.
    fn slug(self) -> &'static str {
        match self {
            Kind::Raw => "raw",
            Kind::Lhfs { passthrough: true } => "lhfs-pt",
            Kind::Lhfs { passthrough: false } => "lhfs",
            Kind::Mergerfs => "mergerfs",
        }
    }

    /// The `-o` options of a pool.
    fn options(self) -> String {
        match self {
            Kind::Lhfs { passthrough } => format!(
                "{COMMON_OPTIONS},passthrough.io={}",
                if passthrough { "rw" } else { "off" }
            ),
            Kind::Raw | Kind::Mergerfs => COMMON_OPTIONS.to_string(),
        }
    }
}

/// One place a variant works in: the raw branch or a mounted pool.
pub struct Target {
    pub kind: Kind,
    /// The folder the variant's files go in.
    pub dir: PathBuf,
    /// Index into `Bed::mounts` for a pool.
    mount: Option<usize>,
}

/// The image, its branches, and the mounted pools.
pub struct Bed {
    // Fields drop in declaration order: pools first, then their folder, then the
    // image they sit on.
    mounts: Vec<Mount>,
    scratch: Scratch,
    disk: Disks,
    targets: Vec<Target>,
    branch1: PathBuf,
}

impl Bed {
    /// Creates the image (`image_size` bytes, sparse), the branches and every pool
    /// that can run here; variants that cannot are reported through `ctx`.
    pub fn create(ctx: &Ctx, row: &str, image_size: u64) -> Result<Bed> {
        disks::require_root(&format!("row {row}"))?;
        let disk = Disks::create(ctx.work_dir, 1, image_size)?;
        let root = disk
            .mounts()
            .first()
            .map(|p| p.to_path_buf())
            .context("the scratch disk was not created")?;
        let branches = [root.join("b1"), root.join("b2")];
        for b in &branches {
            std::fs::create_dir(b).with_context(|| format!("creating branch {}", b.display()))?;
        }
        let scratch = Scratch::create(ctx.work_dir)?;
        let mut bed = Bed {
            mounts: Vec::new(),
            scratch,
            disk,
            targets: Vec::new(),
            branch1: branches[0].clone(),
        };
        let branch_list = format!("{}:{}", branches[0].display(), branches[1].display());
        for kind in Kind::ALL {
            interrupt::check()?;
            let program = match kind {
                Kind::Raw => {
                    bed.targets.push(Target {
                        kind,
                        dir: bed.branch1.clone(),
                        mount: None,
                    });
                    continue;
                }
                Kind::Lhfs { .. } => ctx.our_binary("lhfs"),
                Kind::Mergerfs => ctx.peer("mergerfs"),
            };
            let program = match program {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("{row}: skipping variant {}: {e:#}", kind.name());
                    ctx.skip_variant(kind.name(), &format!("{e:#}"));
                    continue;
                }
            };
            let dir = bed.scratch.root.join(format!("mnt-{}", kind.slug()));
            std::fs::create_dir(&dir)
                .with_context(|| format!("creating mountpoint {}", dir.display()))?;
            let mut cmd = Command::new(&program);
            match kind {
                Kind::Mergerfs => cmd
                    .arg("-f")
                    .arg("-o")
                    .arg(kind.options())
                    .arg(&branch_list)
                    .arg(&dir),
                _ => cmd
                    .arg(&branch_list)
                    .arg(&dir)
                    .arg("-o")
                    .arg(kind.options())
                    .arg("-f"),
            };
            let log = bed.scratch.root.join(format!("{}.log", kind.slug()));
            let mount = Mount::start(kind.name(), cmd, &dir, &log)?;
            bed.mounts.push(mount);
            bed.targets.push(Target {
                kind,
                dir,
                mount: Some(bed.mounts.len() - 1),
            });
        }
        Ok(bed)
    }

    /// The targets that run, in `Kind::ALL` order.
    pub fn targets(&self) -> &[Target] {
        &self.targets
    }

    /// Branch `b1`, where every variant's files end up.
    pub fn branch1(&self) -> &Path {
        &self.branch1
    }

    /// A note on a target's figures: for lhfs with passthrough, whether the kernel
    /// refused it (lhfs then serves the I/O itself and says so on stderr).
    pub fn note(&self, target: &Target) -> Option<String> {
        if target.kind != (Kind::Lhfs { passthrough: true }) {
            return None;
        }
        let mount = self.mounts.get(target.mount?)?;
        let log = std::fs::read_to_string(&mount.log).unwrap_or_default();
        log.contains(PASSTHROUGH_REFUSED)
            .then(|| "passthrough refused, served by the daemon".to_string())
    }

    /// Unmounts every pool, checks that none is left, and removes the image.
    pub fn close(self) -> Result<()> {
        let Bed {
            mut mounts,
            mut scratch,
            disk,
            ..
        } = self;
        let mut problems = Vec::new();
        for mount in &mut mounts {
            if let Err(e) = mount.unmount() {
                problems.push(format!("{e:#}"));
            }
        }
        if let Err(e) = scratch.remove() {
            problems.push(format!("{e:#}"));
        }
        if let Err(e) = disk.close() {
            problems.push(format!("{e:#}"));
        }
        if !problems.is_empty() {
            bail!("{}", problems.join("\n"));
        }
        Ok(())
    }
}

/// The report lines of one metric: every variant against the raw baseline, and the
/// lhfs variants also against mergerfs, as a note (`0.85x mergerfs`).
pub fn lines(row: &str, metric: &str, unit: &str, samples: &[Samples]) -> Vec<Line> {
    let peer = samples
        .iter()
        .find(|s| s.name == PEER)
        .and_then(|s| s.summary(metric));
    let mut lines = lines_for(row, metric, unit, samples, BASELINE);
    for line in lines.iter_mut().filter(|l| l.variant.starts_with("lhfs")) {
        let Some(r) = peer.and_then(|p| ratio(line.summary.median, p.median)) else {
            continue;
        };
        let vs = format!("{} mergerfs", format_ratio(r));
        line.note = Some(match line.note.take() {
            Some(note) => format!("{note}; {vs}"),
            None => vs,
        });
    }
    lines
}

/// The runner's private folder for mountpoints and daemon logs.
struct Scratch {
    root: PathBuf,
    removed: bool,
}

impl Scratch {
    fn create(work_dir: &Path) -> Result<Scratch> {
        static SERIAL: AtomicUsize = AtomicUsize::new(0);
        let root = work_dir.join(format!(
            "lhfs-pools-{}-{}",
            std::process::id(),
            SERIAL.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&root)
            .with_context(|| format!("creating work folder {}", root.display()))?;
        Ok(Scratch {
            root,
            removed: false,
        })
    }

    /// Removes the folder, but never while anything below it is still mounted: that
    /// would delete through the mount into the branches.
    fn remove(&mut self) -> Result<()> {
        if self.removed {
            return Ok(());
        }
        let mounts = std::fs::read_to_string("/proc/mounts").context("reading /proc/mounts")?;
        // With the separator, so that `...-1` does not match `...-10`.
        let prefix = format!("{}/", self.root.display());
        if let Some(line) = mounts.lines().find(|l| l.contains(&prefix)) {
            bail!(
                "a pool is still mounted below {}: {line}; unmount it with `umount -l`",
                self.root.display()
            );
        }
        self.removed = true;
        std::fs::remove_dir_all(&self.root)
            .with_context(|| format!("removing {}", self.root.display()))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Err(e) = self.remove() {
            eprintln!("warning: {e:#}");
        }
    }
}

/// A pool daemon running in the foreground, unmounted on drop.
struct Mount {
    name: &'static str,
    dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl Mount {
    /// Starts `cmd` (stdout discarded, stderr to `log`) and waits until `dir` is a
    /// mountpoint; on failure the daemon is stopped and its stderr is in the error.
    fn start(name: &'static str, mut cmd: Command, dir: &Path, log: &Path) -> Result<Mount> {
        let stderr = File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let parent = dir
            .parent()
            .with_context(|| format!("{} has no parent folder", dir.display()))?;
        let parent_dev = device(parent)?;
        let shown = format!("{cmd:?}");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            // Keeps the terminal's Ctrl-C away from the daemon; the runner unmounts.
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {shown}"))?;
        // From here on, Drop unmounts and stops the daemon if mounting fails.
        let mut mount = Mount {
            name,
            dir: dir.to_path_buf(),
            log: log.to_path_buf(),
            child: Some(child),
        };
        let deadline = Instant::now() + MOUNT_TIMEOUT;
        loop {
            interrupt::check()?;
            if device(dir)? != parent_dev {
                return Ok(mount);
            }
            let exited = match mount.child.as_mut() {
                Some(child) => child
                    .try_wait()
                    .with_context(|| format!("waiting for {shown}"))?,
                None => None,
            };
            if let Some(status) = exited {
                mount.child = None;
                bail!(
                    "{shown} exited ({status}) before mounting: {}",
                    mount.stderr_text()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "{shown} did not mount {} within {} s: {}",
                    dir.display(),
                    MOUNT_TIMEOUT.as_secs(),
                    mount.stderr_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stderr_text(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        if text.trim().is_empty() {
            "(nothing on stderr)".into()
        } else {
            text.trim().to_string()
        }
    }

    /// Unmounts lazily (the pool leaves the namespace at once, even if busy) and waits
    /// for the daemon to exit; kills it if it does not within the timeout.
    fn unmount(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let mut problems = Vec::new();
        // When the table cannot be read, try the unmount anyway.
        if is_mounted(&self.dir).unwrap_or(true) {
            if let Err(e) = super::run_tool(Command::new("umount").arg("-l").arg(&self.dir)) {
                problems.push(format!("{e:#}"));
            }
        }
        let deadline = Instant::now() + MOUNT_TIMEOUT;
        loop {
            match child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Ok(None) | Err(_) => {
                    problems.push(format!(
                        "{} (pid {}) did not exit within {} s of the unmount; killed",
                        self.name,
                        child.id(),
                        MOUNT_TIMEOUT.as_secs()
                    ));
                    // Already gone is fine; anything else leaves nothing more to try.
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
            }
        }
        match is_mounted(&self.dir) {
            Ok(false) => {}
            Ok(true) => problems.push(format!("{} is still mounted", self.dir.display())),
            Err(e) => problems.push(format!("{e:#}")),
        }
        if !problems.is_empty() {
            bail!("unmounting {}: {}", self.name, problems.join("; "));
        }
        Ok(())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if let Err(e) = self.unmount() {
            eprintln!("warning: {e:#}");
        }
    }
}

/// The device of a path, as `stat` reports it.
fn device(path: &Path) -> Result<u64> {
    std::fs::metadata(path)
        .map(|m| m.dev())
        .with_context(|| format!("reading the status of {}", path.display()))
}

/// Whether `/proc/mounts` lists `dir` as a mountpoint. Read from the table rather
/// than by `stat`, which a dead FUSE daemon answers with an error.
fn is_mounted(dir: &Path) -> Result<bool> {
    let mounts = std::fs::read_to_string("/proc/mounts").context("reading /proc/mounts")?;
    Ok(mounts_lists(&mounts, dir))
}

/// Whether a `/proc/mounts` text has a mount on `dir` (second field, with the
/// kernel's octal escapes for spaces and the like).
fn mounts_lists(mounts: &str, dir: &Path) -> bool {
    let wanted = dir.to_string_lossy();
    mounts
        .lines()
        .filter_map(|l| l.split(' ').nth(1))
        .any(|field| unescape_mount_field(field) == wanted)
}

/// Undoes the `\040`-style escapes of a `/proc/mounts` field.
fn unescape_mount_field(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match octal {
            Some(d) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn variant_names_and_options() {
        let names: Vec<&str> = Kind::ALL.iter().map(|k| k.name()).collect();
        assert_eq!(
            names,
            [
                "raw ext4",
                "lhfs passthrough.io=rw",
                "lhfs passthrough.io=off",
                "mergerfs cache.files=off"
            ]
        );
        assert_eq!(
            Kind::Lhfs { passthrough: true }.options(),
            "category.create=ff,cache.files=off,minfreespace=0,passthrough.io=rw"
        );
        assert!(Kind::Lhfs { passthrough: false }
            .options()
            .ends_with(",passthrough.io=off"));
        assert_eq!(Kind::Mergerfs.options(), COMMON_OPTIONS);
    }

    #[test]
    fn mounts_table_is_read_exactly() {
        let table = "/dev/loop0 /var/tmp/d/disk0 ext4 rw 0 0\n\
                     b1:b2 /var/tmp/p/mnt\\040x fuse.lhfs rw 0 0\n";
        assert!(mounts_lists(table, Path::new("/var/tmp/d/disk0")));
        assert!(mounts_lists(table, Path::new("/var/tmp/p/mnt x")));
        assert!(!mounts_lists(table, Path::new("/var/tmp/d")));
        assert!(!mounts_lists(table, Path::new("/var/tmp/p/mnt")));
        assert_eq!(unescape_mount_field("a\\134b\\011"), "a\\b\t");
        assert_eq!(unescape_mount_field("trailing\\04"), "trailing\\04");
    }

    #[test]
    fn lhfs_lines_carry_the_ratio_against_mergerfs() {
        let samples = |name: &str, v: f64| Samples {
            name: name.into(),
            values: BTreeMap::from([("m".to_string(), vec![v])]),
            notes: BTreeMap::new(),
        };
        let all = [
            samples(BASELINE, 100.0),
            samples("lhfs passthrough.io=rw", 90.0),
            samples("lhfs passthrough.io=off", 30.0),
            samples(PEER, 20.0),
        ];
        let lines = lines("r", "m", "MB/s", &all);
        assert_eq!(lines.len(), 4);
        assert!(lines[0].is_baseline && lines[0].note.is_none());
        assert_eq!(lines[1].ratio, Some(0.9));
        assert_eq!(lines[1].note.as_deref(), Some("4.50x mergerfs"));
        assert_eq!(lines[2].note.as_deref(), Some("1.50x mergerfs"));
        assert_eq!(lines[3].ratio, Some(0.2));
        assert_eq!(lines[3].note, None);
        // Without mergerfs, the lhfs lines have only the ratio against raw.
        let lines = super::lines("r", "m", "MB/s", &all[..3]);
        assert!(lines.iter().all(|l| l.note.is_none()));
    }
}
