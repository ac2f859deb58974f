//! The pool's metrics: the counters the FUSE adapter bumps, and their Prometheus text
//! exposition (format 0.0.4) for the endpoint of [`server`].
//!
//! Metrics are opt-in (`metrics-listen`). Without it the adapter holds no [`Metrics`]
//! at all: each request only finds an `Option` empty, and nothing is counted. With it
//! every counter is an `AtomicU64` bumped with relaxed ordering: no lock is taken on
//! the request path, and a scrape reads each counter on its own (a scrape may see one
//! request's operation counted and its bytes not yet; the next scrape catches up).
//!
//! What is counted:
//! - every request the adapter implements, by its FUSE name (`lookup`, `write`, ...);
//!   requests the FUSE library answers itself with ENOSYS never reach the pool and
//!   are not counted;
//! - every error answer, by errno name (the number for rare ones);
//! - the bytes `read`, `write` and `copy_file_range` move (a copy counts as read and
//!   as written). Files opened with FUSE passthrough are read and written by the
//!   kernel directly on the branch: those bytes (and those reads and writes) never
//!   reach the daemon and are not in the totals;
//! - the files open through the pool, and how many of them use passthrough;
//! - the files `moveonenospc` moved to another branch.
//!
//! The per-branch sizes are asked of each branch's filesystem when the text is
//! rendered, so a scrape always sees the current branch list and free space.
//!
//! This module never touches a branch except for that statvfs.

pub mod server;

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::branch::Branch;
use crate::union::BranchSpace;

/// Declares [`Op`] with its FUSE names, in one list.
macro_rules! ops {
    ($($op:ident => $name:literal),* $(,)?) => {
        /// A FUSE request kind the adapter serves (the `op` label).
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Op {
            $(#[doc = concat!("`", $name, "`")] $op),*
        }

        impl Op {
            /// Every kind, in the order the metrics list them.
            pub const ALL: &'static [Op] = &[$(Op::$op),*];

            /// The request's FUSE name.
            pub fn name(self) -> &'static str {
                match self {
                    $(Op::$op => $name),*
                }
            }
        }
    };
}

ops! {
    Lookup => "lookup",
    Forget => "forget",
    Getattr => "getattr",
    Setattr => "setattr",
    Readlink => "readlink",
    Mknod => "mknod",
    Mkdir => "mkdir",
    Unlink => "unlink",
    Rmdir => "rmdir",
    Symlink => "symlink",
    Rename => "rename",
    Link => "link",
    Open => "open",
    Read => "read",
    Write => "write",
    Flush => "flush",
    Release => "release",
    Fsync => "fsync",
    Opendir => "opendir",
    Readdir => "readdir",
    Readdirplus => "readdirplus",
    Releasedir => "releasedir",
    Statfs => "statfs",
    Setxattr => "setxattr",
    Getxattr => "getxattr",
    Listxattr => "listxattr",
    Removexattr => "removexattr",
    Access => "access",
    Create => "create",
    Fallocate => "fallocate",
    Lseek => "lseek",
    CopyFileRange => "copy_file_range",
    Ioctl => "ioctl",
}

/// Error counters, indexed by errno. Linux errnos end at 133 (EHWPOISON); slot 0
/// takes anything outside, which a FUSE reply never carries in practice.
const ERRNO_SLOTS: usize = 134;

/// The errnos a filesystem answers with, by name; others are labelled by number.
const ERRNO_NAMES: &[(i32, &str)] = &[
    (libc::EPERM, "EPERM"),
    (libc::ENOENT, "ENOENT"),
    (libc::EINTR, "EINTR"),
    (libc::EIO, "EIO"),
    (libc::ENXIO, "ENXIO"),
    (libc::E2BIG, "E2BIG"),
    (libc::EBADF, "EBADF"),
    (libc::EAGAIN, "EAGAIN"),
    (libc::ENOMEM, "ENOMEM"),
    (libc::EACCES, "EACCES"),
    (libc::EFAULT, "EFAULT"),
    (libc::EBUSY, "EBUSY"),
    (libc::EEXIST, "EEXIST"),
    (libc::EXDEV, "EXDEV"),
    (libc::ENODEV, "ENODEV"),
    (libc::ENOTDIR, "ENOTDIR"),
    (libc::EISDIR, "EISDIR"),
    (libc::EINVAL, "EINVAL"),
    (libc::ENFILE, "ENFILE"),
    (libc::EMFILE, "EMFILE"),
    (libc::ENOTTY, "ENOTTY"),
    (libc::ETXTBSY, "ETXTBSY"),
    (libc::EFBIG, "EFBIG"),
    (libc::ENOSPC, "ENOSPC"),
    (libc::ESPIPE, "ESPIPE"),
    (libc::EROFS, "EROFS"),
    (libc::EMLINK, "EMLINK"),
    (libc::EPIPE, "EPIPE"),
    (libc::ERANGE, "ERANGE"),
    (libc::EDEADLK, "EDEADLK"),
    (libc::ENAMETOOLONG, "ENAMETOOLONG"),
    (libc::ENOLCK, "ENOLCK"),
    (libc::ENOSYS, "ENOSYS"),
    (libc::ENOTEMPTY, "ENOTEMPTY"),
    (libc::ELOOP, "ELOOP"),
    (libc::ENODATA, "ENODATA"),
    (libc::EOVERFLOW, "EOVERFLOW"),
    (libc::EOPNOTSUPP, "EOPNOTSUPP"),
    (libc::ENOTCONN, "ENOTCONN"),
    (libc::ETIMEDOUT, "ETIMEDOUT"),
    (libc::ESTALE, "ESTALE"),
    (libc::EDQUOT, "EDQUOT"),
    (libc::ECANCELED, "ECANCELED"),
];

/// The `errno` label of counter slot `slot`.
fn errno_label(slot: usize) -> String {
    if slot == 0 {
        return "other".to_owned();
    }
    ERRNO_NAMES
        .iter()
        .find(|(n, _)| usize::try_from(*n) == Ok(slot))
        .map_or_else(|| slot.to_string(), |(_, name)| (*name).to_owned())
}

/// The pool's counters; see the module doc for what each one sees.
#[derive(Debug)]
pub struct Metrics {
    operations: [AtomicU64; Op::ALL.len()],
    errors: [AtomicU64; ERRNO_SLOTS],
    read_bytes: AtomicU64,
    written_bytes: AtomicU64,
    open_files: AtomicU64,
    passthrough_handles: AtomicU64,
    moveonenospc: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics {
            operations: [const { AtomicU64::new(0) }; Op::ALL.len()],
            errors: [const { AtomicU64::new(0) }; ERRNO_SLOTS],
            read_bytes: AtomicU64::new(0),
            written_bytes: AtomicU64::new(0),
            open_files: AtomicU64::new(0),
            passthrough_handles: AtomicU64::new(0),
            moveonenospc: AtomicU64::new(0),
        }
    }
}

/// Adds `n` to a counter; relaxed, as nothing is ordered against it.
fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

fn get(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

impl Metrics {
    /// Counts one request of kind `op`.
    pub fn operation(&self, op: Op) {
        add(&self.operations[op as usize], 1);
    }

    /// Counts one error answer with `errno`.
    pub fn error(&self, errno: i32) {
        let slot = usize::try_from(errno)
            .ok()
            .filter(|&n| n < ERRNO_SLOTS)
            .unwrap_or(0);
        add(&self.errors[slot], 1);
    }

    /// Counts bytes read through the pool.
    pub fn read(&self, bytes: u64) {
        add(&self.read_bytes, bytes);
    }

    /// Counts bytes written through the pool.
    pub fn written(&self, bytes: u64) {
        add(&self.written_bytes, bytes);
    }

    /// Counts a file opened through the pool (served by `passthrough` or not).
    pub fn opened(&self, passthrough: bool) {
        add(&self.open_files, 1);
        if passthrough {
            add(&self.passthrough_handles, 1);
        }
    }

    /// Counts a release of a file [`Metrics::opened`] counted.
    pub fn released(&self, passthrough: bool) {
        self.open_files.fetch_sub(1, Ordering::Relaxed);
        if passthrough {
            self.passthrough_handles.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Counts a file `moveonenospc` moved to another branch.
    pub fn moved(&self) {
        add(&self.moveonenospc, 1);
    }

    /// The metrics as Prometheus text, with the sizes of `branches` (a branch
    /// without a size is left out rather than shown as empty).
    pub fn render(&self, branches: &[(&Branch, Option<BranchSpace>)]) -> String {
        let mut out = String::new();
        let sized: Vec<(&Branch, BranchSpace)> = branches
            .iter()
            .filter_map(|&(b, space)| space.map(|s| (b, s)))
            .collect();
        let branch_family = |out: &mut String, name, help, value: fn(&BranchSpace) -> u64| {
            let samples: Vec<Sample> = sized
                .iter()
                .map(|(b, s)| Sample {
                    labels: vec![
                        ("branch", b.path.display().to_string()),
                        ("mode", b.mode.as_str().to_owned()),
                    ],
                    value: value(s),
                })
                .collect();
            family(out, name, help, "gauge", &samples);
        };
        branch_family(
            &mut out,
            "lhfs_branch_total_bytes",
            "Size of the branch's filesystem.",
            |s| s.total,
        );
        branch_family(
            &mut out,
            "lhfs_branch_free_bytes",
            "Free bytes of the branch's filesystem, including those reserved for root.",
            |s| s.free,
        );
        branch_family(
            &mut out,
            "lhfs_branch_available_bytes",
            "Bytes of the branch's filesystem available to unprivileged users.",
            |s| s.available,
        );
        let single = |out: &mut String, name, help, kind, counter: &AtomicU64| {
            family(out, name, help, kind, &[Sample::plain(get(counter))]);
        };
        single(
            &mut out,
            "lhfs_read_bytes_total",
            "Bytes read through the pool (passthrough reads are not seen).",
            "counter",
            &self.read_bytes,
        );
        single(
            &mut out,
            "lhfs_written_bytes_total",
            "Bytes written through the pool (passthrough writes are not seen).",
            "counter",
            &self.written_bytes,
        );
        let operations: Vec<Sample> = Op::ALL
            .iter()
            .map(|&op| Sample {
                labels: vec![("op", op.name().to_owned())],
                value: get(&self.operations[op as usize]),
            })
            .collect();
        family(
            &mut out,
            "lhfs_operations_total",
            "FUSE requests handled, by operation.",
            "counter",
            &operations,
        );
        // Only the errnos seen: a series for each of the 133 would be noise.
        let errors: Vec<Sample> = self
            .errors
            .iter()
            .enumerate()
            .filter(|(_, c)| get(c) > 0)
            .map(|(slot, c)| Sample {
                labels: vec![("errno", errno_label(slot))],
                value: get(c),
            })
            .collect();
        family(
            &mut out,
            "lhfs_errors_total",
            "FUSE requests answered with an error, by errno.",
            "counter",
            &errors,
        );
        single(
            &mut out,
            "lhfs_open_files",
            "Files open through the pool.",
            "gauge",
            &self.open_files,
        );
        single(
            &mut out,
            "lhfs_passthrough_handles",
            "Open files the kernel serves by FUSE passthrough.",
            "gauge",
            &self.passthrough_handles,
        );
        single(
            &mut out,
            "lhfs_moveonenospc_total",
            "Files moved to another branch when theirs ran out of space.",
            "counter",
            &self.moveonenospc,
        );
        out
    }
}

/// One sample of a family: its labels and value.
struct Sample {
    labels: Vec<(&'static str, String)>,
    value: u64,
}

impl Sample {
    fn plain(value: u64) -> Sample {
        Sample {
            labels: Vec::new(),
            value,
        }
    }
}

/// Appends a family (`# HELP`, `# TYPE`, samples); nothing when it has no sample.
fn family(out: &mut String, name: &str, help: &str, kind: &str, samples: &[Sample]) {
    if samples.is_empty() {
        return;
    }
    // Writing to a String cannot fail.
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for sample in samples {
        out.push_str(name);
        if !sample.labels.is_empty() {
            let labels: Vec<String> = sample
                .labels
                .iter()
                .map(|(key, value)| format!("{key}=\"{}\"", label_value(value)))
                .collect();
            let _ = write!(out, "{{{}}}", labels.join(","));
        }
        let _ = writeln!(out, " {}", sample.value);
    }
}

/// A label value with backslash, double quote and newline escaped, as the text
/// format requires (branch paths may hold any of them).
fn label_value(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::branch::BranchMode;
    use std::path::PathBuf;

    fn branch(path: &str, mode: BranchMode) -> Branch {
        Branch {
            path: PathBuf::from(path),
            mode,
            min_free_space: None,
        }
    }

    #[test]
    fn renders_every_family_with_its_samples() {
        let m = Metrics::default();
        m.operation(Op::Write);
        m.operation(Op::Write);
        m.operation(Op::CopyFileRange);
        m.error(libc::ENOENT);
        m.error(libc::ENOENT);
        m.error(libc::EHWPOISON);
        m.error(-3);
        m.error(4096);
        m.written(10);
        m.read(7);
        m.opened(true);
        m.opened(false);
        m.opened(false);
        m.released(false);
        m.moved();
        let a = branch("/mnt/a", BranchMode::RW);
        let b = branch("/mnt/b", BranchMode::NC);
        let space = BranchSpace {
            total: 100,
            free: 60,
            available: 50,
        };
        let text = m.render(&[(&a, Some(space)), (&b, None)]);
        let samples: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        let ops_zero = Op::ALL.len() - 2;
        assert_eq!(samples.len(), 3 + 2 + Op::ALL.len() + 3 + 3, "{text}");
        for line in [
            "lhfs_branch_total_bytes{branch=\"/mnt/a\",mode=\"RW\"} 100",
            "lhfs_branch_free_bytes{branch=\"/mnt/a\",mode=\"RW\"} 60",
            "lhfs_branch_available_bytes{branch=\"/mnt/a\",mode=\"RW\"} 50",
            "lhfs_read_bytes_total 7",
            "lhfs_written_bytes_total 10",
            "lhfs_operations_total{op=\"write\"} 2",
            "lhfs_operations_total{op=\"copy_file_range\"} 1",
            "lhfs_operations_total{op=\"lookup\"} 0",
            "lhfs_errors_total{errno=\"other\"} 2",
            "lhfs_errors_total{errno=\"ENOENT\"} 2",
            "lhfs_errors_total{errno=\"133\"} 1",
            "lhfs_open_files 2",
            "lhfs_passthrough_handles 1",
            "lhfs_moveonenospc_total 1",
        ] {
            assert!(samples.contains(&line), "no `{line}` in:\n{text}");
        }
        assert_eq!(
            samples.iter().filter(|l| l.ends_with("} 0")).count(),
            ops_zero
        );
        assert!(!text.contains("/mnt/b"));
        assert_eq!(text.matches("# TYPE ").count(), 10);
        assert!(text.contains(
            "# HELP lhfs_open_files Files open through the pool.\n\
             # TYPE lhfs_open_files gauge\nlhfs_open_files 2\n"
        ));
    }

    #[test]
    fn no_errors_no_error_family_and_branch_paths_are_escaped() {
        let m = Metrics::default();
        let odd = branch("/mnt/we\"ird\\\n", BranchMode::RO);
        let space = BranchSpace {
            total: 1,
            free: 1,
            available: 1,
        };
        let text = m.render(&[(&odd, Some(space))]);
        assert!(!text.contains("lhfs_errors_total"));
        assert!(
            text.contains("{branch=\"/mnt/we\\\"ird\\\\\\n\",mode=\"RO\"} 1\n"),
            "{text}"
        );
    }

    #[test]
    fn op_names_are_unique_and_indexes_match() {
        for (i, op) in Op::ALL.iter().enumerate() {
            assert_eq!(*op as usize, i);
            assert_eq!(Op::ALL.iter().filter(|o| o.name() == op.name()).count(), 1);
        }
        for (n, name) in ERRNO_NAMES {
            assert_eq!(errno_label(usize::try_from(*n).unwrap()), *name);
        }
    }
}
