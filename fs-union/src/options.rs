//! Mount options under their mergerfs names: parsing the `-o a,b=c` string and
//! `config=FILE` files, and reading and changing them by key at runtime as the
//! `.mergerfs` control file does.
//!
//! Keys are accepted with `_` or `-` (`cache.negative_entry` is
//! `cache.negative-entry`) and reported in the hyphenated form. Besides the options
//! lhfs acts on, the standard mount words from fstab (`defaults`, `nofail`,
//! `x-systemd.*`, ...) are recorded in [`Options::mount_words`], the options mergerfs
//! itself treats as no-ops are ignored, and the remaining mergerfs options lhfs does
//! not implement yet are checked and kept as text (see [`Options::get`]) so an fstab
//! line written for mergerfs mounts unchanged. Anything else is refused with an error
//! naming the option.
//!
//! This module owns the option values only; it never touches branches, the mount or
//! the filesystem, except to read `config=` files.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::branch::parse_size;
use crate::node::InodeCalc;
use crate::pin::PinThreads;
use crate::policy::{Category, Function, FunctionPolicies, Policy};

/// How deep `config=` files may include further `config=` files.
pub const MAX_CONFIG_DEPTH: usize = 4;
/// The largest `config=` file read, in bytes.
const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// Defines an option value that is one of a fixed set of names.
macro_rules! choice {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            /// Every accepted value, as written in options.
            pub const NAMES: &'static [&'static str] = &[$($text),+];

            /// The value as written in options.
            pub fn name(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }

            fn from_name(text: &str) -> Option<Self> {
                match text {
                    $($text => Some($name::$variant),)+
                    _ => None,
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.name())
            }
        }
    };
}

choice! {
    /// `cache.files`: how the kernel page cache is used for open files.
    CacheFiles {
        /// Direct I/O, no page cache.
        #[default]
        Off => "off",
        /// Cache while open, dropped on each open.
        Partial => "partial",
        /// Keep the cache across opens.
        Full => "full",
        /// Keep the cache unless size or mtime changed.
        AutoFull => "auto-full",
    }
}

choice! {
    /// `statfs`: which branches the pool's statfs sums.
    StatfsMode {
        /// Every branch root.
        #[default]
        Base => "base",
        /// Only branches where the asked path exists.
        Full => "full",
    }
}

choice! {
    /// `statfs-ignore`: branches whose free space statfs reports as zero.
    StatfsIgnore {
        /// None.
        #[default]
        None => "none",
        /// `RO` and `NC` branches.
        Ro => "ro",
        /// `NC` branches.
        Nc => "nc",
    }
}

choice! {
    /// `link-exdev`: what a hard link that ends in EXDEV becomes.
    LinkExdev {
        /// Report EXDEV.
        #[default]
        Passthrough => "passthrough",
        /// A symlink relative to the new entry's directory.
        RelSymlink => "rel-symlink",
        /// A symlink to the source's absolute path on its branch.
        AbsBaseSymlink => "abs-base-symlink",
        /// A symlink to the source's absolute path through the pool.
        AbsPoolSymlink => "abs-pool-symlink",
    }
}

choice! {
    /// `rename-exdev`: what a rename that ends in EXDEV becomes.
    RenameExdev {
        /// Report EXDEV.
        #[default]
        Passthrough => "passthrough",
        /// Move the source aside and leave a relative symlink.
        RelSymlink => "rel-symlink",
        /// Move the source aside and leave an absolute symlink.
        AbsSymlink => "abs-symlink",
    }
}

choice! {
    /// `xattr`: how extended attribute requests are answered.
    XattrMode {
        /// Forward to the branches.
        #[default]
        Passthrough => "passthrough",
        /// Answer "no such attribute" without touching branches.
        Noattr => "noattr",
        /// Answer ENOSYS so the kernel stops asking.
        Nosys => "nosys",
    }
}

choice! {
    /// `flush-on-close`: which closes the kernel sends a FUSE flush for (the daemon
    /// then closes a duplicate of the branch descriptor, which reports errors of
    /// network filesystems at close).
    FlushOnClose {
        /// None.
        Never => "never",
        /// Every close.
        Always => "always",
        /// Closes of files opened for writing.
        #[default]
        OpenedForWrite => "opened-for-write",
    }
}

choice! {
    /// `passthrough.io`: which opens the kernel serves directly from the branch file.
    PassthroughIo {
        /// None.
        #[default]
        Off => "off",
        /// Read-only opens.
        Ro => "ro",
        /// Write-only opens.
        Wo => "wo",
        /// Every open.
        Rw => "rw",
    }
}

/// Why a mount option or config file was refused.
#[derive(Debug, Error)]
pub enum OptionError {
    /// A key that is neither an lhfs/mergerfs option nor a standard mount word.
    #[error("unknown option `{key}`; check the spelling against the mergerfs option names")]
    Unknown {
        /// The key as given.
        key: String,
    },
    /// `umask`, `uid` and `gid`: they would change who may access what.
    #[error(
        "option `{key}` is not supported: it would change who may access what; lhfs shows \
         every file with the owner and mode it has on its branch (use chown/chmod there)"
    )]
    Refused {
        /// The key as given.
        key: String,
    },
    /// A known key with a value it cannot take.
    #[error("option `{key}`: `{value}` is not valid; expected {expected}")]
    BadValue {
        /// The key as given.
        key: String,
        /// The refused value (empty when none was given).
        value: String,
        /// What the option takes.
        expected: String,
    },
    /// A problem on one line of a `config=` file.
    #[error("{}:{line}: {source}", file.display())]
    InConfig {
        /// The config file.
        file: PathBuf,
        /// The line number, from 1.
        line: usize,
        /// What is wrong on that line.
        #[source]
        source: Box<OptionError>,
    },
    /// A `config=` file that cannot be read.
    #[error("cannot read config file `{}`: {source}", file.display())]
    ReadConfig {
        /// The config file.
        file: PathBuf,
        /// The read error.
        #[source]
        source: io::Error,
    },
    /// `config=` files including each other too deeply (or in a loop).
    #[error("config file `{}` is nested more than {MAX_CONFIG_DEPTH} levels deep; remove the `config=` loop", file.display())]
    ConfigDepth {
        /// The file that would have been one level too deep.
        file: PathBuf,
    },
}

/// Why a runtime get or set through the control file failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ControlError {
    /// No such key (ENOATTR).
    #[error("unknown key `{0}`")]
    UnknownKey(String),
    /// The key cannot change while mounted (EROFS).
    #[error("`{0}` can only be set at mount time")]
    ReadOnly(String),
    /// A mergerfs option lhfs accepts but does not act on yet, set to anything but
    /// its default while mounted (ENOTSUP): read back, it would claim an effect.
    #[error("`{key}`: lhfs does not act on this option yet, so it stays `{default}`")]
    NoEffect {
        /// The key.
        key: String,
        /// The value it keeps.
        default: &'static str,
    },
    /// The value is not valid for the key (EINVAL).
    #[error("`{key}`: `{value}` is not valid; expected {expected}")]
    BadValue {
        /// The key.
        key: String,
        /// The refused value.
        value: String,
        /// What the key takes.
        expected: String,
    },
}

impl ControlError {
    /// The errno to answer the xattr request with.
    pub fn errno(&self) -> i32 {
        match self {
            // Linux spells ENOATTR as ENODATA.
            ControlError::UnknownKey(_) => libc::ENODATA,
            ControlError::ReadOnly(_) => libc::EROFS,
            ControlError::NoEffect { .. } => libc::ENOTSUP,
            ControlError::BadValue { .. } => libc::EINVAL,
        }
    }
}

/// Why a value was refused, before the key is attached.
enum Refusal {
    Unknown,
    Bad(String),
}

/// What a mergerfs option lhfs accepts but does not act on yet takes.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Bool,
    Int,
    OneOf(&'static [&'static str]),
    /// Text that `check` accepts; `expected` describes it for the refusal.
    Checked {
        check: fn(&str) -> bool,
        expected: &'static str,
    },
}

/// `fuse-msg-size`: pages (mergerfs 2.33) or a size with a suffix (later versions).
fn is_msg_size(v: &str) -> bool {
    v.parse::<u64>().is_ok_and(|n| n > 0) || parse_size(v).is_ok_and(|n| n > 0)
}

/// `func.readdir`: how a folder's copies on the branches are listed. The merged
/// listing is the same whichever: branch order decides which copy of a name shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReaddirPolicy {
    /// One branch after the other.
    #[default]
    Seq,
    /// The copies opened at once (`cosr`), then read one after the other.
    Cosr(ReaddirThreads),
    /// The copies opened and read at once (`cor`).
    Cor(ReaddirThreads),
}

/// The `:THREADS[:QUEUE]` of `cosr` and `cor`, as given (`QUEUE` has no use here).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReaddirThreads {
    pub threads: Option<i64>,
    pub queue: Option<i64>,
}

impl ReaddirThreads {
    /// How many copies are listed at once: every copy when `THREADS` is 0 or not
    /// given, else as `read-thread-count` counts threads (itself when positive, the
    /// cores divided by its size when negative).
    pub fn at_once(self, copies: usize) -> usize {
        match self.threads {
            None | Some(0) => copies,
            Some(n) => crate::mount::thread_count(n),
        }
    }
}

impl ReaddirPolicy {
    fn parse(v: &str) -> Option<ReaddirPolicy> {
        let mut parts = v.split(':');
        let head = parts.next().unwrap_or_default();
        let numbers: Vec<i64> = parts.map(|n| n.parse().ok()).collect::<Option<_>>()?;
        let threads = ReaddirThreads {
            threads: numbers.first().copied(),
            queue: numbers.get(1).copied(),
        };
        match head {
            "seq" if numbers.is_empty() => Some(ReaddirPolicy::Seq),
            "cosr" if numbers.len() <= 2 => Some(ReaddirPolicy::Cosr(threads)),
            "cor" if numbers.len() <= 2 => Some(ReaddirPolicy::Cor(threads)),
            _ => None,
        }
    }
}

impl fmt::Display for ReaddirPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (name, threads) = match self {
            ReaddirPolicy::Seq => return f.write_str("seq"),
            ReaddirPolicy::Cosr(t) => ("cosr", t),
            ReaddirPolicy::Cor(t) => ("cor", t),
        };
        f.write_str(name)?;
        for n in [threads.threads, threads.queue]
            .into_iter()
            .map_while(|n| n)
        {
            write!(f, ":{n}")?;
        }
        Ok(())
    }
}

/// A mergerfs option kept as text: name, value kind, changeable at runtime, default.
struct Accepted {
    name: &'static str,
    kind: Kind,
    runtime: bool,
    default: &'static str,
}

const fn accepted(
    name: &'static str,
    kind: Kind,
    runtime: bool,
    default: &'static str,
) -> Accepted {
    Accepted {
        name,
        kind,
        runtime,
        default,
    }
}

/// mergerfs options that are checked and reported but have no effect in lhfs yet.
const ACCEPTED: &[Accepted] = &[
    accepted("cache.writeback", Kind::Bool, false, "false"),
    accepted("export-support", Kind::Bool, false, "true"),
    accepted(
        "follow-symlinks",
        Kind::OneOf(&["never", "directory", "regular", "all"]),
        true,
        "never",
    ),
    accepted(
        "fuse-msg-size",
        Kind::Checked {
            check: is_msg_size,
            expected: "a number of pages or a size such as 1M",
        },
        false,
        "1M",
    ),
    accepted("kernel-permissions-check", Kind::Bool, false, "true"),
    accepted("never-forget-nodes", Kind::Bool, false, "false"),
    accepted(
        "nfsopenhack",
        Kind::OneOf(&["off", "git", "all"]),
        true,
        "off",
    ),
    accepted("nullrw", Kind::Bool, false, "false"),
    accepted("process-thread-count", Kind::Int, false, "-1"),
    accepted("process-thread-queue-depth", Kind::Int, false, "2"),
    accepted("proxy-ioprio", Kind::Bool, true, "false"),
    accepted("symlinkify", Kind::Bool, true, "false"),
    accepted("symlinkify-timeout", Kind::Int, true, "3600"),
];

/// Keys with their own fields, in listing order, and whether they change at runtime.
const KEYS: &[(&str, bool)] = &[
    ("async-read", false),
    ("branches-mount-timeout", false),
    ("branches-mount-timeout-fail", false),
    ("cache.attr", true),
    ("cache.entry", true),
    ("cache.files", true),
    ("cache.negative-entry", true),
    ("cache.readdir", true),
    ("cache.statfs", true),
    ("cache.symlinks", false),
    ("config", false),
    ("direct-io-allow-mmap", false),
    ("dropcacheonclose", true),
    ("flush-on-close", true),
    ("fsname", false),
    ("func.readdir", true),
    ("ignorepponrename", true),
    ("inodecalc", true),
    ("lazy-umount-mountpoint", true),
    ("link-cow", true),
    ("link-exdev", true),
    ("metrics-listen", false),
    ("minfreespace", true),
    ("mountpoint", false),
    ("moveonenospc", true),
    ("parallel-direct-writes", true),
    ("passthrough.io", true),
    ("pin-threads", false),
    ("posix-acl", false),
    ("read-thread-count", false),
    ("readahead", false),
    ("rename-exdev", true),
    ("scheduling-priority", false),
    ("security-capability", true),
    ("statfs", true),
    ("statfs-ignore", true),
    ("xattr", true),
];

/// Standard mount words kept in [`Options::mount_words`] for the mount code.
const MOUNT_WORDS: &[&str] = &[
    "allow-other",
    "allow-root",
    "async",
    "atime",
    "auto",
    "default-permissions",
    "defaults",
    "dev",
    "diratime",
    "dirsync",
    "exec",
    "group",
    "lazytime",
    "noatime",
    "noauto",
    "nodev",
    "nodiratime",
    "noexec",
    "nofail",
    "nosuid",
    "nouser",
    "owner",
    "relatime",
    "ro",
    "rw",
    "strictatime",
    "suid",
    "sync",
    "user",
    "users",
    "-netdev",
];

/// Options mergerfs accepts and ignores (deprecated or replaced), and options of
/// mergerfs or libfuse that have no meaning in lhfs (logging, process tuning, FUSE
/// session knobs lhfs sets itself); lhfs accepts them too, so fstab lines carry over.
const IGNORED: &[&str] = &[
    "allow-idmap",
    "atomic-o-trunc",
    "auto-unmount",
    "big-writes",
    "cache.open",
    "congestion-threshold",
    "debug",
    "handle-killpriv",
    "handle-killpriv-v2",
    "hard-remove",
    "log.file",
    "log.metrics",
    "max-background",
    "max-read",
    "max-readahead",
    "no-remote-flock",
    "no-remote-lock",
    "no-remote-posix-lock",
    "no-splice-move",
    "no-splice-read",
    "no-splice-write",
    "nonempty",
    "oom-score-adj",
    "passthrough.max-stack-depth",
    "readdirplus",
    "remember",
    "splice-move",
    "splice-read",
    "splice-write",
    "subtype",
    "sync-read",
    "use-ino",
];

/// Every mount option lhfs knows, with mergerfs's defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// The policy of every function (`func.*`, `category.*`).
    pub policies: FunctionPolicies,
    /// `minfreespace` in bytes.
    pub minfreespace: u64,
    /// `moveonenospc`: the create policy that picks a new branch when a write runs out
    /// of space, or `None` when disabled.
    pub moveonenospc: Option<Policy>,
    /// `cache.files`.
    pub cache_files: CacheFiles,
    /// `cache.files` as given: a mode, `libfuse` (`Some(None)`), or not given.
    cache_files_given: Option<Option<CacheFiles>>,
    /// libfuse's `direct_io`, `kernel_cache` and `auto_cache` words, which decide
    /// when `cache.files` is `libfuse` (mergerfs 2.33's default) or not given.
    libfuse_words: [bool; 3],
    /// `cache.attr` in seconds.
    pub cache_attr: u64,
    /// `cache.entry` in seconds.
    pub cache_entry: u64,
    /// `cache.negative-entry` in seconds.
    pub cache_negative_entry: u64,
    /// `dropcacheonclose`.
    pub dropcacheonclose: bool,
    /// `cache.readdir`: the kernel keeps directory listings and reuses them until
    /// the directory changes through the pool or its mtime changes.
    pub cache_readdir: bool,
    /// `cache.statfs` in seconds: how long the policies may reuse a branch's free
    /// space figures; 0 asks the branch every time.
    pub cache_statfs: u64,
    /// `cache.symlinks`: the kernel keeps what symlinks point to.
    pub cache_symlinks: bool,
    /// `async-read`: the kernel may send several reads of one file at once.
    pub async_read: bool,
    /// `posix-acl`: the kernel checks access against POSIX ACLs (asked from the
    /// branches as `system.posix_acl_*`) and leaves the umask to lhfs, which
    /// applies it unless the new entry's folder has a default ACL.
    pub posix_acl: bool,
    /// `direct-io-allow-mmap`: shared mmap of files opened with direct I/O.
    pub direct_io_allow_mmap: bool,
    /// `parallel-direct-writes`: direct-I/O writes to one file that neither append
    /// nor grow it may reach the daemon at the same time.
    pub parallel_direct_writes: bool,
    /// `readahead` in KiB: set as the read-ahead of the pool and of the branches'
    /// devices at mount time; 0 leaves them as they are.
    pub readahead: u64,
    /// `inodecalc`.
    pub inodecalc: InodeCalc,
    /// `statfs`.
    pub statfs: StatfsMode,
    /// `statfs-ignore`.
    pub statfs_ignore: StatfsIgnore,
    /// `link-cow`: an open for writing of a file with other names (hard links)
    /// first makes it a file of its own (a copy renamed over the name), so the
    /// write does not reach the other names.
    pub link_cow: bool,
    /// `func.readdir`.
    pub func_readdir: ReaddirPolicy,
    /// `link-exdev`.
    pub link_exdev: LinkExdev,
    /// `rename-exdev`.
    pub rename_exdev: RenameExdev,
    /// `ignorepponrename`.
    pub ignorepponrename: bool,
    /// `fsname`; `None` derives it from the branches.
    pub fsname: Option<String>,
    /// `xattr`.
    pub xattr: XattrMode,
    /// `security-capability`.
    pub security_capability: bool,
    /// `read-thread-count` (alias `threads`): 0 = one per core, negative = cores / |n|.
    pub read_thread_count: i64,
    /// `scheduling-priority`: the nice value the daemon's threads run at (-20..=19).
    pub scheduling_priority: i32,
    /// `pin-threads`: the CPU affinity strategy of the FUSE threads; `None` (the
    /// default) lets the kernel place them.
    pub pin_threads: Option<PinThreads>,
    /// `passthrough.io`.
    pub passthrough_io: PassthroughIo,
    /// `flush-on-close`.
    pub flush_on_close: FlushOnClose,
    /// `branches-mount-timeout` in seconds.
    pub branches_mount_timeout: u64,
    /// `branches-mount-timeout-fail`.
    pub branches_mount_timeout_fail: bool,
    /// `lazy-umount-mountpoint`: detach whatever is mounted at the mountpoint first.
    pub lazy_umount_mountpoint: bool,
    /// `metrics-listen`: the `HOST:PORT` to serve metrics on, if any.
    pub metrics_listen: Option<String>,
    /// `branches=` from a config file, unparsed (wildcards expand at mount time).
    pub branches: Option<String>,
    /// `mountpoint=` from a config file.
    pub mountpoint: Option<PathBuf>,
    /// The last `config=` file read.
    pub config: Option<PathBuf>,
    /// Standard mount words as given (`allow_other`, `ro`, `x-systemd.requires=...`).
    pub mount_words: Vec<String>,
    /// Values of the [`ACCEPTED`] options, by key.
    accepted: BTreeMap<&'static str, String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            policies: FunctionPolicies::default(),
            minfreespace: 4 << 30,
            moveonenospc: Some(Policy::Pfrd),
            cache_files: CacheFiles::default(),
            cache_files_given: None,
            libfuse_words: [false; 3],
            cache_attr: 1,
            cache_entry: 1,
            cache_negative_entry: 0,
            dropcacheonclose: false,
            cache_readdir: false,
            cache_statfs: 0,
            cache_symlinks: false,
            async_read: true,
            posix_acl: false,
            direct_io_allow_mmap: true,
            parallel_direct_writes: true,
            readahead: 0,
            inodecalc: InodeCalc::default(),
            statfs: StatfsMode::default(),
            statfs_ignore: StatfsIgnore::default(),
            link_cow: false,
            func_readdir: ReaddirPolicy::Seq,
            link_exdev: LinkExdev::default(),
            rename_exdev: RenameExdev::default(),
            ignorepponrename: false,
            fsname: None,
            xattr: XattrMode::default(),
            security_capability: true,
            read_thread_count: 0,
            scheduling_priority: -10,
            pin_threads: None,
            passthrough_io: PassthroughIo::default(),
            flush_on_close: FlushOnClose::default(),
            branches_mount_timeout: 0,
            branches_mount_timeout_fail: false,
            lazy_umount_mountpoint: false,
            metrics_listen: None,
            branches: None,
            mountpoint: None,
            config: None,
            mount_words: Vec::new(),
            accepted: ACCEPTED
                .iter()
                .map(|a| (a.name, a.default.to_owned()))
                .collect(),
        }
    }
}

/// The canonical spelling of a key: `_` becomes `-`, aliases become their target.
pub(crate) fn canonical(key: &str) -> String {
    let key = key.replace('_', "-");
    match key.as_str() {
        "threads" => "read-thread-count".to_owned(),
        "noforget" | "remember-nodes" => "never-forget-nodes".to_owned(),
        _ => key,
    }
}

fn bad(expected: impl Into<String>) -> Refusal {
    Refusal::Bad(expected.into())
}

/// A boolean value; a bare key means `true`.
fn boolean(value: Option<&str>) -> Result<bool, Refusal> {
    match value {
        None | Some("true" | "1") => Ok(true),
        Some("false" | "0") => Ok(false),
        Some(_) => Err(bad("true or false")),
    }
}

fn number<T: std::str::FromStr>(value: Option<&str>, expected: &str) -> Result<T, Refusal> {
    value
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| bad(expected))
}

fn seconds(value: Option<&str>) -> Result<u64, Refusal> {
    number(value, "a whole number of seconds")
}

fn one_of(names: &[&str]) -> String {
    format!("one of {}", names.join(", "))
}

fn policy(value: Option<&str>) -> Result<Policy, Refusal> {
    let names: Vec<&str> = Policy::ALL.iter().map(|p| p.name()).collect();
    value
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| bad(format!("a policy, {}", one_of(&names))))
}

macro_rules! parse_choice {
    ($ty:ident, $value:expr) => {
        $value
            .and_then($ty::from_name)
            .ok_or_else(|| bad(one_of($ty::NAMES)))
    };
}

fn text(value: Option<&str>, expected: &str) -> Result<String, Refusal> {
    match value {
        Some(v) if !v.is_empty() => Ok(v.to_owned()),
        _ => Err(bad(expected)),
    }
}

/// `HOST:PORT`, where HOST may be a bracketed IPv6 address.
fn listen_address(value: Option<&str>) -> Result<String, Refusal> {
    let expected = "an address HOST:PORT such as 127.0.0.1:9100";
    let v = value.ok_or_else(|| bad(expected))?;
    match v.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(v.to_owned()),
        _ => Err(bad(expected)),
    }
}

fn flag(b: bool) -> String {
    if b { "true" } else { "false" }.to_owned()
}

impl Options {
    /// Parses a `-o` option string (`a,b=c,...`) on top of the defaults.
    pub fn parse(text: &str) -> Result<Options, OptionError> {
        let mut options = Options::default();
        options.apply(text)?;
        Ok(options)
    }

    /// Applies a `-o` option string in order, so later options override earlier ones.
    pub fn apply(&mut self, text: &str) -> Result<(), OptionError> {
        text.split(',')
            .filter(|word| !word.is_empty())
            .try_for_each(|word| self.apply_word(word, 0))
    }

    /// Applies one `key` or `key=value` word; `depth` counts enclosing config files.
    fn apply_word(&mut self, word: &str, depth: usize) -> Result<(), OptionError> {
        let (raw_key, value) = match word.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (word, None),
        };
        let key = canonical(raw_key);
        if MOUNT_WORDS.contains(&key.as_str())
            || key.starts_with("x-")
            || key == "comment"
            || key.starts_with("comment.")
        {
            self.mount_words.push(word.to_owned());
            return Ok(());
        }
        // libfuse's numeric session knobs are checked as libfuse checks them.
        let numeric = [
            "max-readahead",
            "max-background",
            "congestion-threshold",
            "max-read",
        ];
        if numeric.contains(&key.as_str()) && value.is_none_or(|v| v.parse::<u64>().is_err()) {
            return Err(OptionError::BadValue {
                key: raw_key.to_owned(),
                value: value.unwrap_or_default().to_owned(),
                expected: "a whole number".to_owned(),
            });
        }
        if IGNORED.contains(&key.as_str()) || key.starts_with("gid-cache.") {
            return Ok(());
        }
        if key == "config" {
            let file = PathBuf::from(value.unwrap_or_default());
            return self.read_config(&file, depth + 1);
        }
        if ["umask", "uid", "gid"].contains(&key.as_str()) {
            return Err(OptionError::Refused {
                key: raw_key.to_owned(),
            });
        }
        self.set_value(&key, value)
            .map_err(|refusal| match refusal {
                Refusal::Unknown => OptionError::Unknown {
                    key: raw_key.to_owned(),
                },
                Refusal::Bad(expected) => OptionError::BadValue {
                    key: raw_key.to_owned(),
                    value: value.unwrap_or_default().to_owned(),
                    expected,
                },
            })
    }

    /// Reads a config file: one `key=value` or `key` per line, `#` starts a comment
    /// line, blank lines are skipped, spaces around key and value are trimmed.
    fn read_config(&mut self, file: &Path, depth: usize) -> Result<(), OptionError> {
        if depth > MAX_CONFIG_DEPTH {
            return Err(OptionError::ConfigDepth {
                file: file.to_path_buf(),
            });
        }
        let unreadable = |source| OptionError::ReadConfig {
            file: file.to_path_buf(),
            source,
        };
        // A few lines of `key=value`: a device or a huge file given by mistake is
        // refused rather than read into memory.
        let mut bytes = Vec::new();
        std::fs::File::open(file)
            .and_then(|f| f.take(MAX_CONFIG_BYTES + 1).read_to_end(&mut bytes))
            .map_err(unreadable)?;
        if bytes.len() as u64 > MAX_CONFIG_BYTES {
            return Err(unreadable(io::Error::other(format!(
                "it is larger than {} KiB, which no config file needs; is it the right file?",
                MAX_CONFIG_BYTES >> 10
            ))));
        }
        let text = String::from_utf8(bytes).map_err(|e| {
            let good = &e.as_bytes()[..e.utf8_error().valid_up_to()];
            let line = good.iter().filter(|&&b| b == b'\n').count() + 1;
            unreadable(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("line {line} is not UTF-8 text"),
            ))
        })?;
        self.config = Some(file.to_path_buf());
        for (index, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let word = match line.split_once('=') {
                Some((k, v)) => format!("{}={}", k.trim(), v.trim()),
                None => line.to_owned(),
            };
            // A nested file's error already names its own file and line.
            self.apply_word(&word, depth)
                .map_err(|source| match source {
                    nested @ OptionError::InConfig { .. } => nested,
                    source => OptionError::InConfig {
                        file: file.to_path_buf(),
                        line: index + 1,
                        source: Box::new(source),
                    },
                })?;
        }
        Ok(())
    }

    /// `cache_files` from what was given, as mergerfs 2.33 decides it: a mode given
    /// is that mode; `libfuse`, or nothing with one of libfuse's words, follows the
    /// words (`direct_io` first, then `kernel_cache`, then `auto_cache`), and
    /// `libfuse` without any is `partial`.
    fn resolve_cache_files(&mut self) {
        let [direct_io, kernel_cache, auto_cache] = self.libfuse_words;
        let words = if direct_io {
            Some(CacheFiles::Off)
        } else if kernel_cache {
            Some(CacheFiles::Full)
        } else if auto_cache {
            Some(CacheFiles::AutoFull)
        } else {
            None
        };
        self.cache_files = match self.cache_files_given {
            Some(Some(mode)) => mode,
            Some(None) => words.unwrap_or(CacheFiles::Partial),
            None => words.unwrap_or_default(),
        };
    }

    /// Sets a canonical key; shared by mount-time parsing and runtime changes.
    fn set_value(&mut self, key: &str, value: Option<&str>) -> Result<(), Refusal> {
        if let Some(name) = key.strip_prefix("func.") {
            if let Ok(function) = name.parse::<Function>() {
                self.policies.set(function, policy(value)?);
                return Ok(());
            }
        }
        if let Some(name) = key.strip_prefix("category.") {
            let category = name.parse::<Category>().map_err(|_| Refusal::Unknown)?;
            self.policies.set_category(category, policy(value)?);
            return Ok(());
        }
        match key {
            "minfreespace" => {
                self.minfreespace = value.and_then(|v| parse_size(v).ok()).ok_or_else(|| {
                    bad("a size: digits with an optional B, K, M, G or T suffix, e.g. 4G")
                })?
            }
            "moveonenospc" => {
                self.moveonenospc = match value {
                    None | Some("true" | "1") => Some(Policy::Pfrd),
                    Some("false" | "0") => None,
                    Some(_) => Some(policy(value).map_err(|_| {
                        bad("true, false or a create policy name such as pfrd or mfs")
                    })?),
                }
            }
            "cache.files" => {
                self.cache_files_given = Some(if value == Some("libfuse") {
                    None
                } else {
                    Some(parse_choice!(CacheFiles, value)?)
                });
                self.resolve_cache_files();
            }
            // libfuse's words, deprecated in mergerfs for the `cache.files` modes
            // they stand for.
            "direct-io" | "kernel-cache" | "auto-cache" => {
                let word = ["direct-io", "kernel-cache", "auto-cache"]
                    .iter()
                    .position(|w| *w == key)
                    .unwrap_or(0);
                self.libfuse_words[word] = boolean(value)?;
                self.resolve_cache_files();
            }
            // libfuse's names of the kernel's cache times.
            "attr-timeout" => self.cache_attr = seconds(value)?,
            "entry-timeout" => self.cache_entry = seconds(value)?,
            "negative-timeout" => self.cache_negative_entry = seconds(value)?,
            "cache.attr" => self.cache_attr = seconds(value)?,
            "cache.entry" => self.cache_entry = seconds(value)?,
            "cache.negative-entry" => self.cache_negative_entry = seconds(value)?,
            "dropcacheonclose" => self.dropcacheonclose = boolean(value)?,
            "cache.readdir" => self.cache_readdir = boolean(value)?,
            "cache.statfs" => self.cache_statfs = seconds(value)?,
            "cache.symlinks" => self.cache_symlinks = boolean(value)?,
            "async-read" => self.async_read = boolean(value)?,
            "posix-acl" => self.posix_acl = boolean(value)?,
            "direct-io-allow-mmap" => self.direct_io_allow_mmap = boolean(value)?,
            "parallel-direct-writes" => self.parallel_direct_writes = boolean(value)?,
            "readahead" => self.readahead = number(value, "a size in KiB")?,
            "inodecalc" => {
                self.inodecalc = value
                    .and_then(|v| v.parse().ok())
                    .ok_or_else(|| bad(one_of(&InodeCalc::ALL.map(InodeCalc::name))))?
            }
            "statfs" => self.statfs = parse_choice!(StatfsMode, value)?,
            "statfs-ignore" => self.statfs_ignore = parse_choice!(StatfsIgnore, value)?,
            "link-cow" => self.link_cow = boolean(value)?,
            "func.readdir" => {
                self.func_readdir = value
                    .and_then(ReaddirPolicy::parse)
                    .ok_or_else(|| bad("seq, cosr or cor (the last two with :THREADS[:QUEUE])"))?
            }
            "link-exdev" => self.link_exdev = parse_choice!(LinkExdev, value)?,
            "rename-exdev" => self.rename_exdev = parse_choice!(RenameExdev, value)?,
            "ignorepponrename" => self.ignorepponrename = boolean(value)?,
            "fsname" => self.fsname = Some(text(value, "a name for df and mount to show")?),
            "xattr" => self.xattr = parse_choice!(XattrMode, value)?,
            "security-capability" => self.security_capability = boolean(value)?,
            "read-thread-count" => {
                self.read_thread_count = number(value, "a whole number (0 = one per core)")?
            }
            "scheduling-priority" => {
                let expected = "a nice value from -20 to 19";
                self.scheduling_priority = number(value, expected)?;
                if !(-20..=19).contains(&self.scheduling_priority) {
                    return Err(bad(expected));
                }
            }
            "passthrough.io" => self.passthrough_io = parse_choice!(PassthroughIo, value)?,
            "flush-on-close" => self.flush_on_close = parse_choice!(FlushOnClose, value)?,
            "pin-threads" => {
                self.pin_threads = match value {
                    None | Some("") => None,
                    Some(v) => Some(v.parse().map_err(|()| bad(one_of(PinThreads::NAMES)))?),
                }
            }
            "branches-mount-timeout" => self.branches_mount_timeout = seconds(value)?,
            "branches-mount-timeout-fail" => self.branches_mount_timeout_fail = boolean(value)?,
            "lazy-umount-mountpoint" => self.lazy_umount_mountpoint = boolean(value)?,
            "metrics-listen" => self.metrics_listen = Some(listen_address(value)?),
            "branches" => {
                let list = text(value, "a branch list such as /mnt/a:/mnt/b")?;
                // Its syntax is checked here, so that a config file's line is named.
                crate::branch::parse_specs(&list)
                    .map_err(|e| bad(format!("a branch list such as /mnt/a:/mnt/b=RO ({e})")))?;
                self.branches = Some(list);
            }
            "mountpoint" => self.mountpoint = Some(PathBuf::from(text(value, "a directory path")?)),
            _ => return self.set_accepted(key, value),
        }
        Ok(())
    }

    fn set_accepted(&mut self, key: &str, value: Option<&str>) -> Result<(), Refusal> {
        let spec = ACCEPTED
            .iter()
            .find(|a| a.name == key)
            .ok_or(Refusal::Unknown)?;
        let value = match spec.kind {
            Kind::Bool => flag(boolean(value)?),
            Kind::Int => number::<i64>(value, "a whole number")?.to_string(),
            Kind::OneOf(names) => match value {
                Some(v) if names.contains(&v) => v.to_owned(),
                _ => return Err(bad(one_of(names))),
            },
            Kind::Checked { check, expected } => match value {
                Some(v) if check(v) => v.to_owned(),
                _ => return Err(bad(expected)),
            },
        };
        self.accepted.insert(spec.name, value);
        Ok(())
    }

    /// Every key [`Options::get`] answers, in the hyphenated spelling: the
    /// `user.mergerfs.*` listing without the prefix. The control file adds the keys it
    /// owns itself (`branches`, `version`, `pid`).
    pub fn keys() -> Vec<String> {
        let mut keys: Vec<String> = KEYS.iter().map(|(k, _)| (*k).to_owned()).collect();
        keys.extend(ACCEPTED.iter().map(|a| a.name.to_owned()));
        keys.extend(Category::ALL.iter().map(|c| format!("category.{c}")));
        keys.extend(Function::ALL.iter().map(|f| format!("func.{f}")));
        keys.sort();
        keys
    }

    /// Whether `key` is known and may change while mounted.
    fn runtime_settable(key: &str) -> Option<bool> {
        if key.starts_with("func.") || key.starts_with("category.") {
            return Self::keys().iter().any(|k| k == key).then_some(true);
        }
        KEYS.iter()
            .find(|(k, _)| *k == key)
            .map(|&(_, rt)| rt)
            .or_else(|| ACCEPTED.iter().find(|a| a.name == key).map(|a| a.runtime))
    }

    /// The current value of `key` (either spelling), formatted as options take it.
    pub fn get(&self, key: &str) -> Result<String, ControlError> {
        let key = canonical(key);
        let unknown = || ControlError::UnknownKey(key.clone());
        if let Some(Ok(function)) = key.strip_prefix("func.").map(str::parse::<Function>) {
            return Ok(self.policies.get(function).name().to_owned());
        }
        if let Some(name) = key.strip_prefix("category.") {
            let category: Category = name.parse().map_err(|_| unknown())?;
            let mut names: Vec<&str> = Vec::new();
            for function in Function::ALL.iter().filter(|f| f.category() == category) {
                let name = self.policies.get(*function).name();
                if !names.contains(&name) {
                    names.push(name);
                }
            }
            return Ok(names.join(","));
        }
        let path = |p: &Option<PathBuf>| {
            p.as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        };
        Ok(match key.as_str() {
            "minfreespace" => self.minfreespace.to_string(),
            "moveonenospc" => self
                .moveonenospc
                .map_or_else(|| flag(false), |p| p.name().to_owned()),
            "cache.files" if self.cache_files_given == Some(None) => "libfuse".to_owned(),
            "cache.files" => self.cache_files.to_string(),
            "cache.attr" => self.cache_attr.to_string(),
            "cache.entry" => self.cache_entry.to_string(),
            "cache.negative-entry" => self.cache_negative_entry.to_string(),
            "dropcacheonclose" => flag(self.dropcacheonclose),
            "cache.readdir" => flag(self.cache_readdir),
            "cache.statfs" => self.cache_statfs.to_string(),
            "cache.symlinks" => flag(self.cache_symlinks),
            "async-read" => flag(self.async_read),
            "posix-acl" => flag(self.posix_acl),
            "direct-io-allow-mmap" => flag(self.direct_io_allow_mmap),
            "parallel-direct-writes" => flag(self.parallel_direct_writes),
            "readahead" => self.readahead.to_string(),
            "inodecalc" => self.inodecalc.to_string(),
            "statfs" => self.statfs.to_string(),
            "statfs-ignore" => self.statfs_ignore.to_string(),
            "link-cow" => flag(self.link_cow),
            "func.readdir" => self.func_readdir.to_string(),
            "link-exdev" => self.link_exdev.to_string(),
            "rename-exdev" => self.rename_exdev.to_string(),
            "ignorepponrename" => flag(self.ignorepponrename),
            "fsname" => self.fsname.clone().unwrap_or_default(),
            "xattr" => self.xattr.to_string(),
            "security-capability" => flag(self.security_capability),
            "read-thread-count" => self.read_thread_count.to_string(),
            "scheduling-priority" => self.scheduling_priority.to_string(),
            "passthrough.io" => self.passthrough_io.to_string(),
            "flush-on-close" => self.flush_on_close.to_string(),
            "pin-threads" => self.pin_threads.map(|p| p.to_string()).unwrap_or_default(),
            "branches-mount-timeout" => self.branches_mount_timeout.to_string(),
            "branches-mount-timeout-fail" => flag(self.branches_mount_timeout_fail),
            "lazy-umount-mountpoint" => flag(self.lazy_umount_mountpoint),
            "metrics-listen" => self.metrics_listen.clone().unwrap_or_default(),
            "mountpoint" => path(&self.mountpoint),
            "config" => path(&self.config),
            _ => self
                .accepted
                .get(key.as_str())
                .cloned()
                .ok_or_else(unknown)?,
        })
    }

    /// Changes `key` (either spelling) while mounted. Keys mergerfs fixes at mount time
    /// are refused with [`ControlError::ReadOnly`]; on any error nothing changes.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), ControlError> {
        let key = canonical(key);
        match Self::runtime_settable(&key) {
            None => return Err(ControlError::UnknownKey(key)),
            Some(false) => return Err(ControlError::ReadOnly(key)),
            Some(true) => {}
        }
        // The kernel stops sending every attribute request once one answers ENOSYS,
        // the control file's included: the pool could never be set back.
        if key == "xattr" && value.trim() == "nosys" {
            return Err(ControlError::BadValue {
                key,
                value: value.to_owned(),
                expected: "passthrough or noattr while mounted (nosys only at mount time: \
                           once the kernel sees ENOSYS it sends no attribute request again, \
                           to the control file neither)"
                    .to_owned(),
            });
        }
        let mut changed = self.clone();
        changed
            .set_value(&key, Some(value))
            .map_err(|refusal| match refusal {
                Refusal::Unknown => ControlError::UnknownKey(key.clone()),
                Refusal::Bad(expected) => ControlError::BadValue {
                    key: key.clone(),
                    value: value.to_owned(),
                    expected,
                },
            })?;
        if let Some(spec) = ACCEPTED.iter().find(|a| a.name == key) {
            let value = changed.accepted.get(spec.name);
            // Set to what it is (given at mount, say): nothing changes.
            if value == self.accepted.get(spec.name) {
                return Ok(());
            }
            if value.map(String::as_str) != Some(spec.default) {
                return Err(ControlError::NoEffect {
                    key,
                    default: spec.default,
                });
            }
        }
        *self = changed;
        Ok(())
    }

    /// The mergerfs options given a value other than their default that lhfs accepts
    /// but does not act on yet, as `key=value`: worth a warning at mount time.
    pub fn without_effect(&self) -> Vec<String> {
        ACCEPTED
            .iter()
            .filter_map(|spec| {
                let value = self.accepted.get(spec.name)?;
                (value != spec.default).then(|| format!("{}={value}", spec.name))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn err(text: &str) -> String {
        Options::parse(text).unwrap_err().to_string()
    }

    #[test]
    fn a_bad_branch_list_in_a_config_file_names_the_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pool.ini");
        std::fs::write(&file, "category.create=mfs\nbranches=/mnt/a=rw\n").unwrap();
        let e = err(&format!("config={}", file.display()));
        assert!(e.starts_with(&format!("{}:2: ", file.display())), "{e}");
        assert!(e.contains("/mnt/a=rw"), "{e}");
        std::fs::write(&file, "branches=/mnt/a=RO:/mnt/b\n").unwrap();
        let o = Options::parse(&format!("config={}", file.display())).unwrap();
        assert_eq!(o.branches.as_deref(), Some("/mnt/a=RO:/mnt/b"));
    }

    #[test]
    fn mergerfs_and_libfuse_options_of_fstab_lines_are_accepted() {
        for bad in ["max_readahead=abc", "max_readahead", "max_background=-1"] {
            assert!(err(bad).contains("expected a whole number"), "{bad}");
        }
        for word in [
            "debug",
            "max_readahead=131072",
            "no_remote_lock",
            "no_remote_flock",
            "no_remote_posix_lock",
            "sync_read",
            "log.metrics=true",
            "readdirplus=true",
            "remember=10",
            "auto_unmount",
            "max_background=10",
            "log.file=/tmp/x",
            "passthrough.max-stack-depth=1",
            "allow-idmap=false",
            "handle-killpriv=true",
            "oom_score_adj=-100",
            "func.readdir=cosr:4:2",
            "func.readdir=seq",
            "fuse_msg_size=256",
            "fuse-msg-size=1M",
        ] {
            assert!(
                Options::parse(word).is_ok(),
                "{word}: {:?}",
                Options::parse(word)
            );
        }
        assert_eq!(
            Options::parse("moveonenospc=1").unwrap().moveonenospc,
            Some(Policy::Pfrd)
        );
        assert_eq!(Options::parse("moveonenospc=0").unwrap().moveonenospc, None);
        // Options that would change who may access what are refused, not ignored.
        for word in ["umask=077", "uid=1000", "gid=1000"] {
            assert!(
                err(word).contains("is not supported: it would change who may access what"),
                "{word}"
            );
        }
        assert!(err("func.readdir=bogus").contains("seq, cosr or cor"));
        assert!(err("fuse-msg-size=banana").contains("a number of pages or a size"));
    }

    #[test]
    fn defaults_follow_mergerfs() {
        let o = Options::default();
        assert_eq!(o.get("category.create").unwrap(), "pfrd");
        assert_eq!(o.get("category.action").unwrap(), "epall");
        assert_eq!(o.get("category.search").unwrap(), "ff");
        assert_eq!(o.get("minfreespace").unwrap(), (4u64 << 30).to_string());
        assert_eq!(o.get("moveonenospc").unwrap(), "pfrd");
        assert_eq!(o.get("inodecalc").unwrap(), "hybrid-hash");
        assert_eq!(o.get("cache.files").unwrap(), "off");
        assert_eq!(o.get("cache.negative-entry").unwrap(), "0");
        assert_eq!(o.get("statfs").unwrap(), "base");
        assert_eq!(o.get("xattr").unwrap(), "passthrough");
        assert_eq!(o.get("follow-symlinks").unwrap(), "never");
    }

    #[test]
    fn libfuse_cache_words_and_timeouts_mean_what_they_meant_in_mergerfs() {
        let files = |text: &str| Options::parse(text).unwrap().cache_files;
        assert_eq!(files("cache.files=libfuse"), CacheFiles::Partial);
        assert_eq!(files("kernel_cache"), CacheFiles::Full);
        assert_eq!(files("auto_cache"), CacheFiles::AutoFull);
        assert_eq!(files("kernel_cache,cache.files=libfuse"), CacheFiles::Full);
        assert_eq!(files("cache.files=libfuse,direct_io=true"), CacheFiles::Off);
        assert_eq!(files("kernel_cache=false"), CacheFiles::Off);
        // The words matter only for libfuse (or no cache.files), direct_io first.
        assert_eq!(files("cache.files=partial,direct_io"), CacheFiles::Partial);
        assert_eq!(files("cache.files=off,kernel_cache"), CacheFiles::Off);
        assert_eq!(files("direct_io,kernel_cache"), CacheFiles::Off);
        assert_eq!(
            files("cache.files=libfuse,kernel_cache,kernel_cache=false"),
            CacheFiles::Partial
        );
        let o = Options::parse("cache.files=libfuse,auto_cache").unwrap();
        assert_eq!(o.get("cache.files").unwrap(), "libfuse");
        assert_eq!(o.cache_files, CacheFiles::AutoFull);
        let o =
            Options::parse("attr_timeout=5,entry_timeout=6,negative_timeout=7,subtype=x").unwrap();
        assert_eq!(
            (o.cache_attr, o.cache_entry, o.cache_negative_entry),
            (5, 6, 7)
        );
        assert_eq!(
            Options::parse("minfreespace=20GB").unwrap().minfreespace,
            20 << 30
        );
    }

    #[test]
    fn parses_a_typical_fstab_line() {
        let o = Options::parse(
            "defaults,allow_other,use_ino,cache.files=partial,category.create=mfs,\
             func.getattr=newest,dropcacheonclose=true,minfreespace=16G,moveonenospc=true,\
             fsname=pool,x-systemd.requires=/mnt/a,comment=x,_netdev,nofail",
        )
        .unwrap();
        assert_eq!(o.cache_files, CacheFiles::Partial);
        assert_eq!(o.policies.get(Function::Mkdir), Policy::Mfs);
        assert_eq!(o.policies.get(Function::Getattr), Policy::Newest);
        assert_eq!(o.policies.get(Function::Open), Policy::Ff);
        assert!(o.dropcacheonclose);
        assert_eq!(o.minfreespace, 16 << 30);
        assert_eq!(o.moveonenospc, Some(Policy::Pfrd));
        assert_eq!(o.fsname.as_deref(), Some("pool"));
        assert_eq!(
            o.mount_words,
            [
                "defaults",
                "allow_other",
                "x-systemd.requires=/mnt/a",
                "comment=x",
                "_netdev",
                "nofail"
            ]
        );
    }

    #[test]
    fn underscore_and_hyphen_spellings_are_equal() {
        let a = Options::parse("cache.negative_entry=5,statfs_ignore=nc,link_exdev=rel-symlink")
            .unwrap();
        let b = Options::parse("cache.negative-entry=5,statfs-ignore=nc,link-exdev=rel-symlink")
            .unwrap();
        assert_eq!(a, b);
        assert_eq!(a.cache_negative_entry, 5);
        assert_eq!(a.get("statfs_ignore").unwrap(), "nc");
    }

    #[test]
    fn later_options_override_earlier_ones() {
        let o = Options::parse("func.mkdir=ff,category.create=lfs").unwrap();
        assert_eq!(o.policies.get(Function::Mkdir), Policy::Lfs);
        let o = Options::parse("category.create=lfs,func.mkdir=ff").unwrap();
        assert_eq!(o.policies.get(Function::Mkdir), Policy::Ff);
        assert_eq!(o.get("category.create").unwrap(), "lfs,ff");
    }

    #[test]
    fn every_enumerated_option_takes_its_values() {
        for (key, names) in [
            ("cache.files", CacheFiles::NAMES),
            ("statfs", StatfsMode::NAMES),
            ("statfs-ignore", StatfsIgnore::NAMES),
            ("link-exdev", LinkExdev::NAMES),
            ("rename-exdev", RenameExdev::NAMES),
            ("xattr", XattrMode::NAMES),
            ("passthrough.io", PassthroughIo::NAMES),
            ("flush-on-close", FlushOnClose::NAMES),
        ] {
            for name in names {
                let o = Options::parse(&format!("{key}={name}")).unwrap();
                assert_eq!(o.get(key).unwrap(), *name);
            }
        }
        for mode in InodeCalc::ALL {
            let o = Options::parse(&format!("inodecalc={mode}")).unwrap();
            assert_eq!(o.inodecalc, mode);
        }
    }

    #[test]
    fn moveonenospc_takes_a_bool_or_a_policy() {
        assert_eq!(
            Options::parse("moveonenospc=false").unwrap().moveonenospc,
            None
        );
        assert_eq!(
            Options::parse("moveonenospc").unwrap().moveonenospc,
            Some(Policy::Pfrd)
        );
        let o = Options::parse("moveonenospc=mfs").unwrap();
        assert_eq!(o.get("moveonenospc").unwrap(), "mfs");
        assert!(err("moveonenospc=most").contains("create policy"));
    }

    #[test]
    fn threads_is_read_thread_count_and_other_values_parse() {
        let o = Options::parse(
            "threads=-2,security_capability=false,ignorepponrename,branches-mount-timeout=30,\
             branches-mount-timeout-fail=true,metrics-listen=[::1]:9100,cache.attr=7,cache.entry=3",
        )
        .unwrap();
        assert_eq!(o.read_thread_count, -2);
        assert_eq!(o.get("threads").unwrap(), "-2");
        assert!(!o.security_capability && o.ignorepponrename);
        assert_eq!(
            (o.branches_mount_timeout, o.branches_mount_timeout_fail),
            (30, true)
        );
        assert_eq!(o.metrics_listen.as_deref(), Some("[::1]:9100"));
        assert_eq!((o.cache_attr, o.cache_entry), (7, 3));
        assert_eq!(
            Options::parse("read_thread_count=4")
                .unwrap()
                .read_thread_count,
            4
        );
        assert_eq!(Options::default().scheduling_priority, -10);
        let o = Options::parse("scheduling_priority=5").unwrap();
        assert_eq!(o.get("scheduling-priority").unwrap(), "5");
        for bad in [
            "scheduling-priority=20",
            "scheduling-priority=-21",
            "scheduling-priority=x",
        ] {
            let refusal = Options::parse(bad).unwrap_err().to_string();
            assert!(refusal.contains("a nice value from -20 to 19"), "{refusal}");
        }
    }

    #[test]
    fn pin_threads_takes_mergerfs_strategies() {
        assert_eq!(Options::default().pin_threads, None);
        assert_eq!(Options::default().get("pin-threads").unwrap(), "");
        let o = Options::parse("pin_threads=r1l").unwrap();
        assert_eq!(o.pin_threads, Some(PinThreads::R1L));
        assert_eq!(o.get("pin-threads").unwrap(), "R1L");
        assert_eq!(Options::parse("pin-threads=").unwrap().pin_threads, None);
        let refusal = Options::parse("pin-threads=R2L").unwrap_err().to_string();
        assert!(
            refusal.contains("pin-threads") && refusal.contains("RPSP"),
            "{refusal}"
        );
    }

    #[test]
    fn ignored_and_accepted_mergerfs_options() {
        let o = Options::parse(
            "hard_remove,big_writes,cache.open=1,gid-cache.expire-timeout=5,\
             follow-symlinks=directory,cache.statfs=10,noforget",
        )
        .unwrap();
        assert_eq!(o.get("follow-symlinks").unwrap(), "directory");
        assert_eq!(o.get("cache.statfs").unwrap(), "10");
        assert_eq!(o.get("never-forget-nodes").unwrap(), "true");
        assert!(o.mount_words.is_empty());
        assert!(err("follow-symlinks=sometimes").contains("never, directory, regular, all"));
        // Given values other than their defaults, they are named for a warning.
        assert_eq!(
            o.without_effect(),
            ["follow-symlinks=directory", "never-forget-nodes=true"]
        );
        assert!(Options::parse("follow-symlinks=never,symlinkify=false")
            .unwrap()
            .without_effect()
            .is_empty());
    }

    #[test]
    fn xattr_nosys_is_for_mount_time_only() {
        let mut o = Options::default();
        let e = o.set("xattr", "nosys").unwrap_err();
        assert_eq!(e.errno(), libc::EINVAL);
        assert!(e.to_string().contains("only at mount time"), "{e}");
        assert_eq!(o.get("xattr").unwrap(), "passthrough");
        o.set("xattr", "noattr").unwrap();
        assert_eq!(o.get("xattr").unwrap(), "noattr");
        assert_eq!(
            Options::parse("xattr=nosys").unwrap().get("xattr").unwrap(),
            "nosys"
        );
    }

    #[test]
    fn func_readdir_takes_mergerfs_forms_and_reads_back_as_given() {
        for (text, policy) in [
            ("seq", ReaddirPolicy::Seq),
            ("cor", ReaddirPolicy::Cor(ReaddirThreads::default())),
            (
                "cosr:4:2",
                ReaddirPolicy::Cosr(ReaddirThreads {
                    threads: Some(4),
                    queue: Some(2),
                }),
            ),
            (
                "cor:-2",
                ReaddirPolicy::Cor(ReaddirThreads {
                    threads: Some(-2),
                    queue: None,
                }),
            ),
        ] {
            let o = Options::parse(&format!("func.readdir={text}")).unwrap();
            assert_eq!(o.func_readdir, policy, "{text}");
            assert_eq!(o.get("func.readdir").unwrap(), text);
        }
        for bad in ["seq:1", "cor:x", "cor:1:2:3", "par", ""] {
            assert!(ReaddirPolicy::parse(bad).is_none(), "{bad}");
        }
        let mut o = Options::default();
        assert_eq!(o.func_readdir, ReaddirPolicy::Seq);
        o.set("func.readdir", "cor:3").unwrap();
        assert_eq!(o.get("func.readdir").unwrap(), "cor:3");
        assert_eq!(
            o.set("func.readdir", "bogus").unwrap_err().errno(),
            libc::EINVAL
        );
        // How many copies are listed at once.
        let t = |threads| ReaddirThreads {
            threads,
            queue: None,
        };
        assert_eq!(t(None).at_once(5), 5);
        assert_eq!(t(Some(0)).at_once(5), 5);
        assert_eq!(t(Some(2)).at_once(5), 2);
        assert!(t(Some(-1000)).at_once(5) >= 1);
    }

    #[test]
    fn link_cow_and_posix_acl_are_options_of_their_own() {
        let mut o = Options::parse("link_cow=1,posix_acl=true").unwrap();
        assert!(o.link_cow && o.posix_acl);
        assert_eq!(o.get("link-cow").unwrap(), "true");
        assert_eq!(o.get("posix-acl").unwrap(), "true");
        // link-cow changes at runtime; posix-acl is negotiated at mount.
        o.set("link-cow", "false").unwrap();
        assert!(!o.link_cow);
        assert_eq!(
            o.set("posix-acl", "false").unwrap_err().errno(),
            libc::EROFS
        );
        assert_eq!(
            o.set("link-cow", "bogus").unwrap_err().errno(),
            libc::EINVAL
        );
        let d = Options::default();
        assert!(!d.link_cow && !d.posix_acl);
    }

    #[test]
    fn options_without_effect_keep_their_default_while_mounted() {
        let mut o = Options::default();
        for (key, value, default) in [
            ("follow-symlinks", "directory", "never"),
            ("symlinkify", "true", "false"),
            ("nfsopenhack", "git", "off"),
        ] {
            let e = o.set(key, value).unwrap_err();
            assert_eq!(e.errno(), libc::ENOTSUP, "{key}: {e}");
            assert!(
                e.to_string().contains("does not act on this option yet"),
                "{e}"
            );
            assert_eq!(o.get(key).unwrap(), default, "{key}");
            // The default itself is fine, and a bad value is still a bad value.
            o.set(key, default).unwrap();
            assert_eq!(o.set(key, "bogus").unwrap_err().errno(), libc::EINVAL);
        }
        assert_eq!(o, Options::default());
        // Given at mount, it may be set to what it is (nothing changes), not further.
        let mut o = Options::parse("follow-symlinks=directory").unwrap();
        o.set("follow-symlinks", "directory").unwrap();
        assert_eq!(
            o.set("follow-symlinks", "all").unwrap_err().errno(),
            libc::ENOTSUP
        );
        o.set("follow-symlinks", "never").unwrap();
        assert_eq!(o.get("follow-symlinks").unwrap(), "never");
    }

    #[test]
    fn errors_name_the_option_and_what_it_takes() {
        let e = err("minfreespace=lots");
        assert!(
            e.contains("minfreespace") && e.contains("lots") && e.contains("4G"),
            "{e}"
        );
        let e = err("bogus=1");
        assert!(e.contains("unknown option `bogus`"), "{e}");
        let e = err("func.getattr=fastest");
        assert!(e.contains("func.getattr") && e.contains("newest"), "{e}");
        assert!(err("func.frobnicate=ff").contains("unknown option `func.frobnicate`"));
        assert!(err("category.delete=ff").contains("unknown option"));
        assert!(err("cache.files=sometimes").contains("off, partial, full, auto-full"));
        assert!(err("cache.attr=-1").contains("seconds"));
        assert!(err("dropcacheonclose=maybe").contains("true or false"));
        assert!(err("inodecalc=fast").contains("hybrid-hash"));
        assert!(err("metrics-listen=9100").contains("HOST:PORT"));
        assert!(err("fsname=").contains("fsname"));
        assert!(matches!(
            Options::parse("statfs").unwrap_err(),
            OptionError::BadValue { .. }
        ));
    }

    fn write_config(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        let mut file = std::fs::File::create(&path).unwrap();
        file.write_all(text.as_bytes()).unwrap();
        path
    }

    #[test]
    fn config_files_apply_in_place_and_report_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_config(
            dir.path(),
            "pool.ini",
            "# pool settings\n\nbranches = /mnt/disk*\ncategory.create=mfs\n  dropcacheonclose\n",
        );
        let o = Options::parse(&format!(
            "func.mkdir=ff,config={},cache.attr=9",
            path.display()
        ))
        .unwrap();
        assert_eq!(o.branches.as_deref(), Some("/mnt/disk*"));
        assert_eq!(o.policies.get(Function::Mkdir), Policy::Mfs);
        assert!(o.dropcacheonclose);
        assert_eq!(o.cache_attr, 9);
        assert_eq!(o.get("config").unwrap(), path.display().to_string());

        let bad = write_config(dir.path(), "bad.ini", "# ok\ncache.attr=1\nstatfs=half\n");
        let e = err(&format!("config={}", bad.display()));
        assert!(e.starts_with(&format!("{}:3: ", bad.display())), "{e}");
        assert!(e.contains("base, full"), "{e}");

        let missing = dir.path().join("missing.ini");
        assert!(err(&format!("config={}", missing.display())).contains("cannot read"));

        let looped = dir.path().join("loop.ini");
        write_config(
            dir.path(),
            "loop.ini",
            &format!("config={}\n", looped.display()),
        );
        let e = err(&format!("config={}", looped.display()));
        assert!(e.contains("nested"), "{e}");
        // Named once, at the line that goes one level too deep.
        assert_eq!(
            e.matches(&format!("{}:1:", looped.display())).count(),
            1,
            "{e}"
        );

        // A device or a huge file is refused, not read into memory.
        let e = err("config=/dev/zero");
        assert!(
            e.contains("/dev/zero") && e.contains("larger than 1024 KiB"),
            "{e}"
        );
        let odd = dir.path().join("odd.ini");
        std::fs::write(&odd, b"cache.attr=1\nfsname=caf\xe9\n").unwrap();
        let e = err(&format!("config={}", odd.display()));
        assert!(e.contains("odd.ini`: line 2 is not UTF-8 text"), "{e}");
    }

    #[test]
    fn get_and_set_round_trip_every_runtime_key() {
        let mut o = Options::default();
        for key in Options::keys() {
            let value = o.get(&key).unwrap();
            match o.set(&key, &value) {
                Ok(()) => assert_eq!(o.get(&key).unwrap(), value, "{key}"),
                Err(ControlError::ReadOnly(_)) => {}
                // Unset optional values read back as empty, which they cannot be set to.
                Err(ControlError::BadValue { .. }) if value.is_empty() => {}
                Err(e) => panic!("{key}: {e}"),
            }
        }
        o.set("func.getattr", "newest").unwrap();
        assert_eq!(o.get("func.getattr").unwrap(), "newest");
        o.set("category.search", "epff").unwrap();
        assert_eq!(o.get("category.search").unwrap(), "epff");
        o.set("minfreespace", "1K").unwrap();
        assert_eq!(o.get("minfreespace").unwrap(), "1024");
        o.set("cache.negative_entry", "3").unwrap();
        assert_eq!(o.cache_negative_entry, 3);
        o.set("moveonenospc", "false").unwrap();
        assert_eq!(o.get("moveonenospc").unwrap(), "false");
    }

    #[test]
    fn set_errors_have_the_control_file_errnos() {
        let mut o = Options::default();
        let before = o.clone();
        let unknown = o.set("nonsense", "1").unwrap_err();
        assert_eq!(unknown.errno(), libc::ENODATA);
        assert_eq!(o.get("nonsense").unwrap_err().errno(), libc::ENODATA);
        assert_eq!(o.get("func.nonsense").unwrap_err().errno(), libc::ENODATA);
        assert_eq!(
            o.set("func.nonsense", "ff").unwrap_err().errno(),
            libc::ENODATA
        );
        for key in [
            "fsname",
            "threads",
            "read-thread-count",
            "branches-mount-timeout",
            "config",
        ] {
            assert_eq!(o.set(key, "1").unwrap_err().errno(), libc::EROFS, "{key}");
        }
        let bad = o.set("statfs", "half").unwrap_err();
        assert_eq!(bad.errno(), libc::EINVAL);
        assert!(bad.to_string().contains("base, full"));
        assert_eq!(
            o.set("func.mkdir", "best").unwrap_err().errno(),
            libc::EINVAL
        );
        assert_eq!(o, before);
    }

    #[test]
    fn keys_are_unique_and_all_readable() {
        let keys = Options::keys();
        let mut dedup = keys.clone();
        dedup.dedup();
        assert_eq!(keys, dedup);
        assert!(keys.contains(&"func.getattr".to_owned()));
        assert!(keys.contains(&"cache.negative-entry".to_owned()));
        let o = Options::default();
        for key in &keys {
            o.get(key).unwrap();
        }
    }
}
