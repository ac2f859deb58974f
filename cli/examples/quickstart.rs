//! The quick start: the whole product on throwaway disks, in well under two minutes.
//!
//! As root it makes four small tmpfs "disks" of different sizes (plain folders
//! otherwise), pools them with `lhfs` under the `mfs` create policy, writes a few
//! hundred MiB of files through the pool and shows which disk each one landed on (the
//! `user.mergerfs.basepath` xattr), protects the disks with two parity levels
//! (`lhparity sync`), wipes one disk, rebuilds it (`lhparity fix -d`) and checks every
//! file, read back through the pool, against the checksum it was written with.
//! Everything is unmounted and removed at the end, also after an error or Ctrl-C.
//!
//! Where the pool cannot be mounted (no `/dev/fuse`, not root, no `lhfs` binary) it
//! says why and runs the parity part on plain folders, writing straight onto them.
//!
//! Finding `lhfs`: `cargo run --example` builds the example but not the package's
//! binaries (cargo builds those by itself only for integration tests and benchmarks,
//! and a manifest cannot make an example require them). So when cargo runs the
//! example (`CARGO` is set), it asks cargo to build `lhfs` in the example's own
//! profile, a no-op when it is up to date, and takes the path from cargo's build
//! report. Started by hand, it uses the `lhfs` next to its own folder
//! (`target/release/examples/quickstart` looks for `target/release/lhfs`).

use std::ffi::CString;
use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use parity_core::config::Config;
use parity_core::fix::{fix, FixOptions};
use parity_core::raid::Kernel;
use parity_core::sync::{sync, Progress, SyncOptions};

const MIB: u64 = 1 << 20;
/// The data disks' sizes in MiB: different, so that `mfs` visibly spreads files.
const DISK_MIB: [u64; 4] = [112, 144, 192, 256];
/// The files written through the pool: about 300 MiB in all.
const FILES: [(&str, u64); 12] = [
    ("backup/home.tar", 80 * MIB),
    ("movies/holiday.mkv", 64 * MIB),
    ("movies/birthday.mkv", 48 * MIB),
    ("isos/installer.iso", 40 * MIB),
    ("music/album/01.flac", 24 * MIB),
    ("music/album/02.flac", 20 * MIB),
    ("docs/slides.pdf", 9 * MIB),
    ("photos/2024/img1.jpg", 7 * MIB),
    ("photos/2024/img2.jpg", 6 * MIB),
    ("photos/2024/img3.jpg", 5 * MIB),
    ("docs/report.pdf", 700_000),
    ("notes.txt", 1234),
];
const POOL_OPTIONS: &str = "category.create=mfs,minfreespace=8M,fsname=quickstart";

fn main() -> ExitCode {
    install_interrupt_handler();
    let start = Instant::now();
    let mut scratch = match Scratch::new() {
        Ok(scratch) => scratch,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let result = run(&mut scratch);
    // Unmount and remove now, so that the last line printed is the verdict.
    if let Err(e) = scratch.clean_up() {
        if let Err(first) = result {
            eprintln!("\nerror: {first:#}");
        }
        eprintln!("error while cleaning up: {e:#}");
        return ExitCode::FAILURE;
    }
    match result {
        Ok(()) => {
            println!(
                "\nall done in {:.1} s; everything it made is unmounted and removed",
                start.elapsed().as_secs_f64()
            );
            ExitCode::SUCCESS
        }
        Err(e) if INTERRUPTED.load(Ordering::SeqCst) => {
            eprintln!("\n{e:#}; everything it made is unmounted and removed");
            ExitCode::from(130)
        }
        Err(e) => {
            eprintln!("\nerror: {e:#}\n(everything it made is unmounted and removed)");
            ExitCode::FAILURE
        }
    }
}

fn run(scratch: &mut Scratch) -> Result<()> {
    let root = scratch.root.clone();
    println!(
        "lhfs quick start in {} (parity kernel: {})\n",
        root.display(),
        Kernel::selected()?
    );
    let mut steps = Steps::default();

    let step = steps.start("making four data disks of different sizes and two parity disks");
    let tmpfs = scratch.try_tmpfs();
    let mut disks = Vec::new();
    for (i, mib) in DISK_MIB.iter().enumerate() {
        disks.push(scratch.disk(&format!("disk{}", i + 1), *mib, tmpfs)?);
    }
    let largest = DISK_MIB.iter().max().copied().unwrap_or(0);
    // A parity disk must be at least as large as the largest data disk.
    let parity = [
        scratch.disk("parity1", largest, tmpfs)?,
        scratch.disk("parity2", largest, tmpfs)?,
    ];
    let content = scratch.disk("content", 0, false)?;
    let kind = if tmpfs {
        "tmpfs mounts"
    } else {
        "plain folders (tmpfs needs root), so the sizes are only names"
    };
    step.done(&format!(
        "disk1..disk4 = {} MiB, parity1/2 = {largest} MiB, as {kind}",
        DISK_MIB.map(|m| m.to_string()).join("/")
    ));

    let step = steps.start("mounting an lhfs pool over the four data disks");
    let mnt = root.join("pool");
    fs::create_dir(&mnt).with_context(|| format!("creating {}", mnt.display()))?;
    let pool = match Pool::mount(&disks, &mnt, &root) {
        Ok(pool) => {
            // Relative to the folder named at the top, to keep the line short.
            let list: Vec<String> = (1..=disks.len()).map(|i| format!("disk{i}")).collect();
            step.done(&format!(
                "lhfs {} pool -o {POOL_OPTIONS} -f",
                list.join(":")
            ));
            Some(pool)
        }
        Err(why) => {
            step.done(&format!(
                "NO POOL: {why:#}\n    FUSE is not usable here, so the files go straight \
                 onto the disks and only the parity part is shown"
            ));
            None
        }
    };

    let step = steps.start(match pool {
        Some(_) => "writing files through the pool; where mfs put each (user.mergerfs.basepath)",
        None => "writing files straight onto the disks, in turn",
    });
    let mut written: Vec<Written> = Vec::new();
    let mut total = 0;
    for (i, &(rel, size)) in FILES.iter().enumerate() {
        let (path, disk) = match &pool {
            Some(pool) => (pool.mnt.join(rel), None),
            None => {
                let disk = disks[i % disks.len()].clone();
                (disk.join(rel), Some(disk))
            }
        };
        let checksum = write_file(&path, size, i as u64)?;
        // Through the pool, lhfs says which branch it chose.
        let disk = match disk {
            Some(disk) => disk,
            None => basepath(&path)?,
        };
        total += size;
        println!(
            "    {:<22} {:>9}  -> {}",
            rel,
            human(size),
            disk.strip_prefix(&root).unwrap_or(&disk).display()
        );
        written.push(Written {
            rel,
            checksum,
            disk,
        });
    }
    step.done(&format!("{} in {} files", human(total), written.len()));

    let step = steps.start("what each disk holds now");
    for (i, disk) in disks.iter().enumerate() {
        let mine: Vec<&Written> = written.iter().filter(|w| &w.disk == disk).collect();
        let bytes: u64 = mine
            .iter()
            .map(|w| fs::metadata(disk.join(w.rel)).map_or(0, |m| m.len()))
            .sum();
        let size = if tmpfs {
            format!(" of {} MiB", DISK_MIB[i])
        } else {
            String::new()
        };
        println!(
            "    disk{}: {:>2} files, {:>9}{size}",
            i + 1,
            mine.len(),
            human(bytes)
        );
    }
    step.done(match (&pool, tmpfs) {
        (Some(_), true) => "mfs sends each new file to the disk with the most free space",
        (Some(_), false) => "the disks share one filesystem, so mfs sees no difference",
        (None, _) => "without a pool the files were dealt out in turn",
    });

    let step = steps.start("writing the lhparity config");
    let conf = root.join("lhparity.conf");
    let mut text = format!(
        "parity   {}/lhparity.parity\n2-parity {}/lhparity.parity\n",
        parity[0].display(),
        parity[1].display()
    );
    for dir in [&parity[0], &parity[1], &content] {
        text += &format!("content  {}/lhparity.content\n", dir.display());
    }
    for (i, d) in disks.iter().enumerate() {
        text += &format!("data d{} {}\n", i + 1, d.display());
    }
    text += "blocksize 256\n";
    fs::write(&conf, &text).with_context(|| format!("writing {}", conf.display()))?;
    for line in text.lines() {
        println!("    {line}");
    }
    let config = Config::load(&conf)?;
    step.done(&format!("{}", conf.display()));

    let step = steps.start("lhparity sync: two parity levels over the four disks");
    check_interrupt()?;
    let report = sync(&config, &SyncOptions::default(), &Quiet)?;
    ensure!(
        report.warnings.is_empty(),
        "sync warned: {:?}",
        report.warnings
    );
    step.done(&format!(
        "{} block positions, {} read, {:.0} MB/s",
        report.positions_synced,
        human(report.bytes),
        report.bytes as f64 / 1e6 / report.seconds.max(1e-9)
    ));

    // The disk holding the most files shows the most when it comes back.
    let (lost, lost_disk) = disks
        .iter()
        .enumerate()
        .max_by_key(|(_, d)| written.iter().filter(|w| &w.disk == *d).count())
        .map(|(i, d)| (i, d.clone()))
        .context("there are data disks")?;
    let step = steps.start(&format!("wiping disk{} (a failed disk)", lost + 1));
    check_interrupt()?;
    wipe(&lost_disk)?;
    // Listing asks lhfs, which looks at the branches; a path lookup could still be
    // answered from the kernel's entry cache.
    let visible = match &pool {
        Some(pool) => count_files(&pool.mnt)?,
        None => disks
            .iter()
            .map(|d| count_files(d))
            .sum::<Result<usize>>()?,
    };
    step.done(&format!(
        "{} {visible} of {} files",
        if pool.is_some() {
            "the pool now lists"
        } else {
            "the disks now hold"
        },
        written.len()
    ));

    let name = format!("d{}", lost + 1);
    let step = steps.start(&format!(
        "lhparity fix -d {name}: rebuilding it from the other disks and the parity"
    ));
    check_interrupt()?;
    let options = FixOptions {
        disks: vec![name],
        ..FixOptions::default()
    };
    let report = fix(&config, &options, &Quiet)?;
    ensure!(
        report.unrecoverable.is_empty() && report.errors.is_empty(),
        "fix could not rebuild everything: {:?} {:?}",
        report.unrecoverable,
        report.errors
    );
    step.done(&format!(
        "{} files rebuilt, {}",
        report.fixed.len(),
        human(report.bytes)
    ));

    let step = steps.start(match pool {
        Some(_) => "reading every file back through the pool and checking its checksum",
        None => "reading every file back and checking its checksum",
    });
    for w in &written {
        check_interrupt()?;
        let path = w.path(pool.as_ref());
        let got = checksum_of(&path)?;
        ensure!(
            got == w.checksum,
            "{} differs after the fix: {} instead of {}",
            path.display(),
            got,
            w.checksum
        );
    }
    step.done(&format!(
        "all {} files match the checksums they were written with",
        written.len()
    ));

    if let Some(pool) = pool {
        let step = steps.start("unmounting the pool");
        pool.unmount()?;
        step.done("umount; lhfs exited");
    }
    Ok(())
}

/// One file written in the first step: where it went and its checksum.
struct Written {
    rel: &'static str,
    checksum: String,
    disk: PathBuf,
}

impl Written {
    /// Where to read it: through the pool when there is one.
    fn path(&self, pool: Option<&Pool>) -> PathBuf {
        match pool {
            Some(pool) => pool.mnt.join(self.rel),
            None => self.disk.join(self.rel),
        }
    }
}

/// Numbered steps, each printed with how long it took.
#[derive(Default)]
struct Steps {
    count: usize,
}

struct Step {
    started: Instant,
}

impl Steps {
    fn start(&mut self, what: &str) -> Step {
        self.count += 1;
        println!("{:>2}. {what}", self.count);
        Step {
            started: Instant::now(),
        }
    }
}

impl Step {
    fn done(self, summary: &str) {
        println!(
            "    {summary}  [{:.2} s]",
            self.started.elapsed().as_secs_f64()
        );
    }
}

struct Quiet;
impl Progress for Quiet {
    fn start(&self, _: u64) {}
    fn advance(&self, _: u64) {}
    fn finish(&self) {}
}

/// `1234 B`, `683.6 KiB`, `80.0 MiB`.
fn human(bytes: u64) -> String {
    if bytes < 1024 {
        format!("{bytes} B")
    } else if bytes < MIB {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    } else {
        format!("{:.1} MiB", bytes as f64 / MIB as f64)
    }
}

// ---- Ctrl-C ------------------------------------------------------------------------

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Turns SIGINT and SIGTERM into a flag, so that the run stops at the next check and
/// the guards unmount and remove everything on the way out.
fn install_interrupt_handler() {
    let handler: extern "C" fn(libc::c_int) = on_signal;
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, handler as libc::sighandler_t);
        libc::signal(libc::SIGTERM, handler as libc::sighandler_t);
    }
}

fn check_interrupt() -> Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    Ok(())
}

// ---- files -------------------------------------------------------------------------

/// Writes `size` pseudo-random bytes (xorshift from `seed`) in 1 MiB pieces and
/// returns their checksum.
fn write_file(path: &Path, size: u64, seed: u64) -> Result<String> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    let mut file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut hasher = blake3::Hasher::new();
    let mut x = (seed + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let mut buf = vec![0u8; MIB as usize];
    let mut left = size;
    while left > 0 {
        check_interrupt()?;
        let n = left.min(MIB) as usize;
        for word in buf[..n].chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            word.copy_from_slice(&x.to_le_bytes()[..word.len()]);
        }
        file.write_all(&buf[..n])
            .with_context(|| format!("writing {}", path.display()))?;
        hasher.update(&buf[..n]);
        left -= n as u64;
    }
    file.sync_all()
        .with_context(|| format!("flushing {}", path.display()))?;
    Ok(short(hasher.finalize()))
}

/// The checksum of a file's bytes.
fn checksum_of(path: &Path) -> Result<String> {
    let mut file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; MIB as usize];
    loop {
        let n = file
            .read(&mut buf)
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            return Ok(short(hasher.finalize()));
        }
        hasher.update(&buf[..n]);
    }
}

/// Enough of a BLAKE3 hash to show two files hold the same bytes.
fn short(hash: blake3::Hash) -> String {
    hash.to_hex()[..16].to_string()
}

/// Removes everything inside a disk, leaving the empty disk.
fn wipe(disk: &Path) -> Result<()> {
    for entry in fs::read_dir(disk).with_context(|| format!("listing {}", disk.display()))? {
        let path = entry?.path();
        let removed = if path.is_dir() {
            fs::remove_dir_all(&path)
        } else {
            fs::remove_file(&path)
        };
        removed.with_context(|| format!("removing {}", path.display()))?;
    }
    Ok(())
}

/// The regular files in a folder tree.
fn count_files(dir: &Path) -> Result<usize> {
    let mut count = 0;
    for entry in fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_dir() {
            count += count_files(&entry.path())?;
        } else if kind.is_file() {
            count += 1;
        }
    }
    Ok(count)
}

/// The branch lhfs says holds a pool path: its `user.mergerfs.basepath` xattr.
fn basepath(path: &Path) -> Result<PathBuf> {
    let c_path = CString::new(path.as_os_str().as_bytes())?;
    let name = c"user.mergerfs.basepath";
    let mut value = vec![0u8; 4096];
    // SAFETY: both names are NUL-terminated, and `value` is writable for its length.
    let n = unsafe {
        libc::getxattr(
            c_path.as_ptr(),
            name.as_ptr(),
            value.as_mut_ptr().cast(),
            value.len(),
        )
    };
    if n < 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("reading user.mergerfs.basepath of {}", path.display()));
    }
    value.truncate(n as usize);
    Ok(PathBuf::from(std::ffi::OsStr::from_bytes(&value)))
}

// ---- the scratch folder and its disks ------------------------------------------------

/// The temporary folder and the tmpfs disks mounted inside it; [`Scratch::clean_up`]
/// (or dropping it, after a panic) unmounts them and removes the folder.
struct Scratch {
    root: PathBuf,
    mounts: Vec<PathBuf>,
}

impl Scratch {
    fn new() -> Result<Scratch> {
        let root = std::env::temp_dir().join(format!("lhfs-quickstart-{}", std::process::id()));
        fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
        Ok(Scratch {
            root,
            mounts: Vec::new(),
        })
    }

    /// Whether this process may mount tmpfs disks: it tries one.
    fn try_tmpfs(&mut self) -> bool {
        let probe = self.root.join("probe");
        if fs::create_dir(&probe).is_err() || !mount_tmpfs(&probe, 1) {
            return false;
        }
        if !umount(&probe) {
            // Left for clean_up, which keeps the folder while anything is mounted.
            self.mounts.push(probe);
            return false;
        }
        fs::remove_dir(&probe).is_ok()
    }

    /// A disk folder; a tmpfs of `mib` MiB mounted on it when `tmpfs`.
    fn disk(&mut self, name: &str, mib: u64, tmpfs: bool) -> Result<PathBuf> {
        let path = self.root.join(name);
        fs::create_dir(&path).with_context(|| format!("creating {}", path.display()))?;
        if tmpfs {
            ensure!(
                mount_tmpfs(&path, mib),
                "mounting a {mib} MiB tmpfs on {} failed",
                path.display()
            );
            self.mounts.push(path.clone());
        }
        Ok(path)
    }

    /// Unmounts the disks and removes the folder. The folder stays if something is
    /// still mounted inside it: removing files through a mount would reach into it.
    fn clean_up(&mut self) -> Result<()> {
        for mount in self.mounts.drain(..).rev() {
            if !umount(&mount) {
                let _ = Command::new("umount").arg("-l").arg(&mount).status();
            }
        }
        if !self.root.exists() {
            return Ok(());
        }
        let busy = mounted_under(&self.root);
        if !busy.is_empty() {
            bail!(
                "{} is left in place: still mounted there: {}; unmount and remove it by hand",
                self.root.display(),
                busy.join(", ")
            );
        }
        fs::remove_dir_all(&self.root).with_context(|| format!("removing {}", self.root.display()))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Err(e) = self.clean_up() {
            eprintln!("cleaning up: {e:#}");
        }
    }
}

fn mount_tmpfs(path: &Path, mib: u64) -> bool {
    Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            &format!("size={mib}m,mode=0755"),
            "tmpfs",
        ])
        .arg(path)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn umount(path: &Path) -> bool {
    Command::new("umount")
        .arg(path)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Mountpoints at or below `dir`, from /proc/self/mountinfo.
fn mounted_under(dir: &Path) -> Vec<String> {
    let Ok(text) = fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|line| line.split(' ').nth(4))
        .filter(|mnt| Path::new(mnt).starts_with(dir))
        .map(str::to_string)
        .collect()
}

// ---- the pool ----------------------------------------------------------------------

/// A running `lhfs -f`, unmounted and stopped on drop.
struct Pool {
    mnt: PathBuf,
    child: Option<Child>,
}

impl Pool {
    /// Mounts the pool and waits until the mountpoint is another filesystem. The error
    /// says why the pool cannot be used here.
    fn mount(branches: &[PathBuf], mnt: &Path, root: &Path) -> Result<Pool> {
        if !Path::new("/dev/fuse").exists() {
            bail!("/dev/fuse is missing");
        }
        let lhfs = find_lhfs()?;
        let list: Vec<String> = branches.iter().map(|b| b.display().to_string()).collect();
        let log = root.join("lhfs.log");
        let stderr = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let before = fs::metadata(mnt)?.dev();
        let child = Command::new(&lhfs)
            .arg(list.join(":"))
            .arg(mnt)
            .args(["-o", POOL_OPTIONS, "-f"])
            .stdout(Stdio::null())
            .stderr(stderr)
            // Its own process group: Ctrl-C reaches only this program, whose guard
            // then unmounts the pool in order.
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {}", lhfs.display()))?;
        let mut pool = Pool {
            mnt: mnt.to_path_buf(),
            child: Some(child),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            check_interrupt()?;
            if fs::metadata(mnt).is_ok_and(|m| m.dev() != before) {
                return Ok(pool);
            }
            if let Some(child) = pool.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    pool.child = None;
                    let said = fs::read_to_string(&log).unwrap_or_default();
                    bail!("lhfs exited ({status}): {}", said.trim());
                }
            }
            if Instant::now() > deadline {
                bail!("lhfs did not mount within 10 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Unmounts and waits for lhfs to exit, saying so if it does not.
    fn unmount(mut self) -> Result<()> {
        self.stop(false)
    }

    /// Unmounts (lazily when `lazy`: files may still be open after an error) and
    /// waits up to 10 s for lhfs to exit before killing it.
    fn stop(&mut self, lazy: bool) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let mut cmd = Command::new("umount");
        if lazy {
            cmd.arg("-l");
        }
        let status = cmd.arg(&self.mnt).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if child.try_wait()?.is_some() {
                return match status {
                    Ok(s) if s.success() => Ok(()),
                    _ => bail!("umount {} failed", self.mnt.display()),
                };
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        bail!("lhfs did not exit within 10 s of the unmount; stopped it")
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        if let Err(e) = self.stop(true) {
            eprintln!("unmounting the pool: {e:#}");
        }
    }
}

/// The `lhfs` binary: built by cargo when cargo runs this example, else next to it.
fn find_lhfs() -> Result<PathBuf> {
    if let Some(cargo) = std::env::var_os("CARGO") {
        return build_lhfs(Path::new(&cargo));
    }
    let exe = std::env::current_exe().context("finding this program's path")?;
    // target/<profile>/examples/quickstart -> target/<profile>/lhfs
    let beside = exe
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join("lhfs"))
        .filter(|p| p.is_file());
    beside.with_context(|| {
        format!(
            "no lhfs binary next to {}; build it with `cargo build --release`",
            exe.display()
        )
    })
}

/// Has cargo build `lhfs` in this example's profile and returns the path from its
/// JSON build report.
fn build_lhfs(cargo: &Path) -> Result<PathBuf> {
    println!("    (asking cargo to build lhfs; quick when it is up to date)");
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
    let mut cmd = Command::new(cargo);
    // Naming this example too keeps the dev-dependencies in the build, so that the
    // libraries are compiled with the same features as for the example and reused.
    cmd.args(["build", "-q", "--bin", "lhfs", "--example", "quickstart"])
        .args(["--message-format=json", "--manifest-path", manifest]);
    // Debug assertions are what tells the release profile from the dev profile.
    if !cfg!(debug_assertions) {
        cmd.arg("--release");
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", cargo.display()))?;
    let stdout = child.stdout.take().context("cargo's output")?;
    let mut found = None;
    for line in BufReader::new(stdout).lines() {
        let message: serde_json::Value = serde_json::from_str(&line?).unwrap_or_default();
        if message["reason"] == "compiler-artifact" && message["target"]["name"] == "lhfs" {
            found = message["executable"].as_str().map(PathBuf::from);
        }
    }
    let status = child.wait()?;
    ensure!(
        status.success(),
        "`cargo build --bin lhfs` failed ({status})"
    );
    found.context("cargo built lhfs but did not say where it is")
}
