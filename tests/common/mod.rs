//! Helpers shared by the end-to-end tests: running the built binaries, checking
//! metrics text with promtool.
//!
//! The files in `tests/` are integration tests of the `lhfs-cli` package (see its
//! Cargo.toml), so cargo builds `lhfs` and `lhparity` before running them.
#![allow(dead_code)] // each test file uses its own subset

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Every child process a test starts is forked (cloned) from this multi-threaded
/// process with a copy of its whole descriptor table, open files of other tests
/// included; until the child's exec closes those copies (O_CLOEXEC), each close is
/// one more FUSE `flush` to the pool of that file. Starting a child holds this
/// shared; a test counting flushes holds it exclusively while its files are open.
static FORKS: RwLock<()> = RwLock::new(());

/// Held while starting a child process (and until it has started).
pub fn forking() -> RwLockReadGuard<'static, ()> {
    FORKS.read().unwrap_or_else(PoisonError::into_inner)
}

/// Held while a test's counted opens are open: no child inherits them.
pub fn no_forks() -> RwLockWriteGuard<'static, ()> {
    FORKS.write().unwrap_or_else(PoisonError::into_inner)
}

/// The path of a workspace binary built for this test run.
pub fn bin(name: &str) -> PathBuf {
    PathBuf::from(match name {
        "lhparity" => env!("CARGO_BIN_EXE_lhparity"),
        "lhfs" => env!("CARGO_BIN_EXE_lhfs"),
        other => panic!("unknown binary {other}"),
    })
}

/// Runs a binary with arguments and extra environment variables.
pub fn run(name: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(bin(name));
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let _forking = forking();
    cmd.output()
        .unwrap_or_else(|e| panic!("running {name}: {e}"))
}

/// Standard output as text.
pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Standard error as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

use std::fs;
use std::path::Path;

/// A test array in a temporary folder: data disks `d1..dN`, a folder for parity, two
/// content copies, and the config file that ties them together.
pub struct Array {
    pub root: tempfile::TempDir,
    pub disks: Vec<PathBuf>,
    pub parity: Vec<PathBuf>,
    pub content: Vec<PathBuf>,
    pub conf: PathBuf,
}

impl Array {
    /// `disks` data disks, `levels` parity levels, blocksize in KiB, extra config lines.
    pub fn new(disks: usize, levels: usize, blocksize_kib: u32, extra: &str) -> Array {
        let root = tempfile::tempdir().expect("temp dir");
        let base = root.path().to_path_buf();
        let disks: Vec<PathBuf> = (1..=disks).map(|i| base.join(format!("d{i}"))).collect();
        for d in &disks {
            fs::create_dir_all(d).expect("disk dir");
        }
        fs::create_dir_all(base.join("parity")).expect("parity dir");
        fs::create_dir_all(base.join("content")).expect("content dir");
        let parity: Vec<PathBuf> = (1..=levels)
            .map(|l| base.join(format!("parity/parity{l}")))
            .collect();
        let content = vec![
            base.join("content/lhparity.content"),
            base.join("content/lhparity.content.2"),
        ];
        let mut text = String::from("# test array\n");
        for (l, p) in parity.iter().enumerate() {
            let name = if l == 0 {
                "parity".to_string()
            } else {
                format!("{}-parity", l + 1)
            };
            text += &format!("{name} {}\n", p.display());
        }
        for c in &content {
            text += &format!("content {}\n", c.display());
        }
        for (i, d) in disks.iter().enumerate() {
            text += &format!("data d{} {}\n", i + 1, d.display());
        }
        text += &format!("blocksize {blocksize_kib}\n{extra}");
        let conf = base.join("array.conf");
        fs::write(&conf, text).expect("config");
        Array {
            root,
            disks,
            parity,
            content,
            conf,
        }
    }

    /// Runs `lhparity -c CONF --force-device ARGS...` (the temporary folders share one
    /// device).
    pub fn lhparity(&self, args: &[&str]) -> Output {
        let conf = self.conf.to_string_lossy().into_owned();
        let mut all = vec!["-c", conf.as_str(), "--force-device"];
        all.extend_from_slice(args);
        run("lhparity", &all, &[])
    }

    /// Writes a file of `size` pseudo-random bytes (seeded) on disk `disk` (0-based).
    pub fn write(&self, disk: usize, rel: &str, size: usize, seed: u64) -> Vec<u8> {
        let bytes = pseudo_random(size, seed);
        let path = self.disks[disk].join(rel);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).expect("parent dir");
        }
        fs::write(&path, &bytes).expect("write data file");
        bytes
    }
}

/// Deterministic bytes from a seed (xorshift).
pub fn pseudo_random(size: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut out = Vec::with_capacity(size + 8);
    while out.len() < size {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(size);
    out
}

/// Exit code of a finished command, with its output shown when it is not `want`.
pub fn expect_code(out: &Output, want: i32) {
    assert_eq!(
        out.status.code(),
        Some(want),
        "exit code\nstdout:\n{}\nstderr:\n{}",
        stdout(out),
        stderr(out)
    );
}

/// The data of every disk laid out by position as the content file places it:
/// one buffer per generator column, `positions x block size` bytes, zero where no
/// block is.
pub struct Layout {
    pub state: parity_core::state::model::State,
    pub columns: Vec<Vec<u8>>,
}

/// Reads the content file and every data file into a [`Layout`].
pub fn layout(array: &Array) -> Layout {
    use parity_core::state::store;
    let loaded = store::load(&array.content).expect("content file loads");
    let state = loaded.state.expect("a content file exists");
    let bs = state.block_size as usize;
    let positions = state.positions.len();
    let columns = state.columns();
    let mut stripes = vec![vec![0u8; positions * bs]; columns];
    for (slot, disk) in state.disks.iter().enumerate() {
        // The folder named as the disk (one added by the test is not in
        // `array.disks`), or else the one of its line (a disk renamed in the config).
        let named = array.root.path().join(&disk.name);
        let dir = if named.is_dir() {
            named
        } else {
            array.disks[slot].clone()
        };
        for f in &disk.files {
            let bytes = fs::read(dir.join(&f.path)).expect("data file");
            for (i, pos) in f.positions().enumerate() {
                let start = i * bs;
                let end = (start + bs).min(bytes.len());
                if start < end {
                    let at = pos as usize * bs;
                    stripes[disk.index as usize][at..at + end - start]
                        .copy_from_slice(&bytes[start..end]);
                }
            }
        }
    }
    Layout {
        state,
        columns: stripes,
    }
}

/// Recomputes every parity file from the data files as the content file places them
/// (with the scalar kernel) and compares. Returns the number of positions checked.
pub fn verify_parity(array: &Array) -> usize {
    use parity_core::raid::{generate_with, Kernel};
    let Layout { state, columns } = layout(array);
    let bs = state.block_size as usize;
    let positions = state.positions.len();
    for (level, path) in array.parity.iter().enumerate() {
        let on_disk = fs::read(path).expect("parity file");
        assert!(
            on_disk.len() >= positions * bs,
            "parity{} is {} bytes, shorter than {positions} positions",
            level + 1,
            on_disk.len()
        );
        for p in 0..positions {
            let r = p * bs..(p + 1) * bs;
            let data: Vec<&[u8]> = columns.iter().map(|s| &s[r.clone()]).collect();
            let mut want = vec![vec![0u8; bs]; array.parity.len()];
            let mut refs: Vec<&mut [u8]> = want.iter_mut().map(|w| w.as_mut_slice()).collect();
            generate_with(Kernel::Scalar, &data, &mut refs).expect("generate");
            assert!(
                on_disk[r.clone()] == want[level][..],
                "parity level {} differs at position {p}",
                level + 1
            );
        }
    }
    positions
}

/// Rebuilds every file of the data disks `lost` (0-based slots) from the other disks
/// and the parity files with the raid module alone, and compares each with the file
/// on disk. Returns the number of files checked.
pub fn verify_recoverable(array: &Array, lost: &[usize]) -> usize {
    use parity_core::raid::recover;
    let Layout { state, mut columns } = layout(array);
    let bs = state.block_size as usize;
    let nd = columns.len();
    let lost_cols: Vec<usize> = lost
        .iter()
        .map(|&s| state.disks[s].index as usize)
        .collect();
    for &c in &lost_cols {
        columns[c].fill(0);
    }
    let mut parity: Vec<Vec<u8>> = array
        .parity
        .iter()
        .map(|p| fs::read(p).expect("parity file"))
        .collect();
    for p in 0..state.positions.len() {
        let r = p * bs..(p + 1) * bs;
        let mut blocks: Vec<&mut [u8]> = columns
            .iter_mut()
            .chain(parity.iter_mut())
            .map(|b| &mut b[r.clone()])
            .collect();
        recover(nd, &lost_cols, &mut blocks).expect("recover");
    }
    let mut checked = 0;
    for &slot in lost {
        let disk = &state.disks[slot];
        for f in &disk.files {
            let mut rebuilt = Vec::with_capacity(f.size as usize);
            for pos in f.positions() {
                let at = pos as usize * bs;
                rebuilt.extend_from_slice(&columns[disk.index as usize][at..at + bs]);
            }
            rebuilt.truncate(f.size as usize);
            let original = fs::read(array.disks[slot].join(&f.path)).expect("data file");
            assert!(
                rebuilt == original,
                "{}/{} is not recovered bit-exact",
                disk.name,
                f.path
            );
            checked += 1;
        }
    }
    checked
}

/// Whether a path exists (without following a final symlink).
pub fn exists(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok()
}

pub mod fuse;

/// `promtool`, or `None` after a loud notice when it is missing (unless
/// `LHFS_REQUIRE_PROMTOOL=1`, which makes that a failure).
pub fn promtool() -> Option<&'static str> {
    let _forking = forking();
    let found = Command::new("promtool")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if found {
        return Some("promtool");
    }
    assert!(
        std::env::var("LHFS_REQUIRE_PROMTOOL").as_deref() != Ok("1"),
        "promtool is not installed and LHFS_REQUIRE_PROMTOOL=1 (apt-get install prometheus)"
    );
    eprintln!("SKIPPED: promtool not installed (apt-get install prometheus)");
    None
}

pub fn promtool_check_metrics(text: &str) {
    let Some(promtool) = promtool() else { return };
    let forking = forking();
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    drop(forking);
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("feed promtool");
    let out = child.wait_with_output().expect("promtool");
    assert!(
        out.status.success(),
        "promtool check metrics:\n{}{}\n{text}",
        stdout(&out),
        stderr(&out)
    );
}

/// The value of the sample `series` (`name` or `name{label="value"}`) in `text`.
pub fn value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(series)?.strip_prefix(' ')?;
        rest.parse().ok()
    })
}

/// The value of the sample `series` in `text`; fails the test when there is none.
pub fn must(text: &str, series: &str) -> f64 {
    value(text, series).unwrap_or_else(|| panic!("no sample {series} in:\n{text}"))
}

/// The lhfs metrics contract: the table in contrib/README.md, as metric name to its
/// type and label names.
pub fn lhfs_contract_table() -> BTreeMap<String, (String, Vec<String>)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../contrib/README.md");
    let text = fs::read_to_string(path).expect("contrib/README.md");
    let ticked = |cell: &str| cell.trim().trim_matches('`').to_owned();
    let table: BTreeMap<String, (String, Vec<String>)> = text
        .lines()
        .filter(|l| l.starts_with("| `lhfs_"))
        .map(|l| {
            let cells: Vec<&str> = l.split('|').collect();
            let labels = cells[3]
                .split(',')
                .map(ticked)
                .filter(|label| !label.is_empty())
                .collect();
            (ticked(cells[1]), (ticked(cells[2]), labels))
        })
        .collect();
    assert_eq!(table.len(), 10, "the contract lists ten lhfs metrics");
    table
}

/// Gives the command SIGINT's default action, as a command started at a terminal
/// has: these tests may run as a background job of a script, whose commands start
/// with SIGINT ignored (and lhparity keeps a signal it was started ignoring ignored).
pub fn interactive(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: only signal(2), async-signal-safe, runs in the child.
    unsafe {
        cmd.pre_exec(|| {
            libc::signal(libc::SIGINT, libc::SIG_DFL);
            Ok(())
        });
    }
}

/// Whether process `pid` has read at least `bytes` (`rchar` of `/proc/PID/io`);
/// `None` once it is gone.
pub fn has_read(pid: u32, bytes: u64) -> Option<bool> {
    let text = fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
    let n: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("rchar: "))?
        .trim()
        .parse()
        .ok()?;
    Some(n >= bytes)
}
