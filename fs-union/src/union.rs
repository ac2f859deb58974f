//! Path-level operations across the branches: what a FUSE request does to the branch
//! directories, with mergerfs's policies, result rules, rename and link algorithms,
//! path cloning and statfs aggregation. No FUSE types appear here; every operation
//! takes pool paths (`/dir/file`) and answers a raw [`Errno`] on failure, so the FUSE
//! adapter calls it directly and the tests run on plain temporary directories.
//!
//! **Containment.** Nothing done through the pool may create, change or reveal
//! anything outside the branch roots, whatever symlinks the branches hold. Every path
//! is resolved below a branch root fd without following any symlink (see `sys`), and
//! the final name is acted on with calls that do not follow it either. A symlink is
//! therefore listed, stat'ed, read, renamed and removed as the link it is, but never
//! used to reach another place. Paths with `..` are refused.
//!
//! **Credentials.** The pool works with the ids of the thread that calls it. The
//! FUSE layer calls it acting as the requesting user (see [`crate::creds`]), so
//! every branch checks that user's permissions on its own copy, as in mergerfs; the
//! calls that take a [`Caller`] run the final step (making the entry, renaming,
//! linking) as that caller. Cloning parent directories onto another branch always
//! runs with the daemon's own ids and copies the source's owner and mode.

mod sys;
pub(crate) use sys::fstat;

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{DirEntryExt, FileTypeExt};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::branch::{Branch, BranchMode};
use crate::creds::{self, Caller};
use crate::options::{
    LinkExdev, Options, ReaddirPolicy, RenameExdev, StatfsIgnore, StatfsMode, XattrMode,
};
use crate::policy::{
    BranchInfo, Category, Entry, FsStat, Function, PathProbe, Policy, PolicyError, Snapshot,
};

use sys::At;

/// A raw errno value, the answer to a failed FUSE request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Errno(pub i32);

impl Errno {
    /// The calling thread's current errno.
    fn last() -> Errno {
        Errno::from(io::Error::last_os_error())
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        io::Error::from_raw_os_error(self.0).fmt(f)
    }
}

impl std::error::Error for Errno {}

impl From<io::Error> for Errno {
    fn from(e: io::Error) -> Errno {
        Errno(e.raw_os_error().unwrap_or(libc::EIO))
    }
}

impl From<PolicyError> for Errno {
    fn from(e: PolicyError) -> Errno {
        Errno(e.errno())
    }
}

/// An entry's attributes with the branch that answered; `stat.st_ino` is already
/// the `inodecalc` number.
#[derive(Clone, Copy)]
pub struct Attr {
    /// Index of the branch the attributes come from.
    pub branch: usize,
    /// The attributes (`lstat` of the entry on that branch), `st_ino` replaced by
    /// the `inodecalc` number.
    pub stat: libc::stat,
    /// The entry's inode number on its branch.
    pub branch_ino: u64,
}

impl fmt::Debug for Attr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Attr")
            .field("branch", &self.branch)
            .field("ino", &self.stat.st_ino)
            .field("mode", &format_args!("{:o}", self.stat.st_mode))
            .finish()
    }
}

/// The mode asked for a new entry and the umask that applies to it: not where the
/// folder it is made in has a default ACL, whose inheritance then sets the
/// permissions (as on a local file system).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mode {
    mode: u32,
    umask: u32,
}

impl Mode {
    /// `mode` (with the file type bits for mknod) and the caller's `umask`.
    pub fn new(mode: u32, umask: u32) -> Mode {
        Mode {
            mode,
            umask: umask & 0o7777,
        }
    }

    /// The mode to make the entry with in the folder `dir` (on its branch).
    fn in_folder(self, dir: &OwnedFd) -> u32 {
        if self.umask == 0 || sys::has_default_acl(dir) {
            self.mode
        } else {
            self.mode & !self.umask
        }
    }
}

/// A file created and opened on a branch.
#[derive(Debug)]
pub struct Created {
    /// The open file.
    pub file: OwnedFd,
    /// Its attributes.
    pub attr: Attr,
}

/// Where a rename put the entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Renamed {
    /// At the new name.
    InPlace,
    /// At this pool path below [`RENAME_EXDEV_DIR`], with a symlink to it at the new
    /// name (`rename-exdev`).
    Stashed(PathBuf),
}

/// The result of a hard link.
#[derive(Debug, Clone, Copy)]
pub struct Linked {
    /// Attributes to reply with.
    pub attr: Attr,
    /// `link-exdev` made a symlink instead of a hard link; mergerfs then replies with
    /// the source's attributes and asks the kernel not to cache them.
    pub symlinked: bool,
}

/// One name of a merged directory listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    /// The name.
    pub name: OsString,
    /// The file type bits (`S_IFDIR`, `S_IFREG`, ...), 0 when unknown.
    pub kind: u32,
    /// The `inodecalc` number of the entry on the branch that listed it first.
    pub ino: u64,
}

/// The size of one branch's filesystem, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BranchSpace {
    /// Size of the filesystem (`f_blocks`).
    pub total: u64,
    /// Free bytes, including those reserved for root (`f_bfree`).
    pub free: u64,
    /// Bytes available to unprivileged users (`f_bavail`).
    pub available: u64,
}

/// Aggregated filesystem numbers of the pool, in units of `frsize`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StatFs {
    /// Total blocks.
    pub blocks: u64,
    /// Free blocks.
    pub bfree: u64,
    /// Blocks available to unprivileged users.
    pub bavail: u64,
    /// Total inodes.
    pub files: u64,
    /// Free inodes.
    pub ffree: u64,
    /// Inodes available to unprivileged users.
    pub favail: u64,
    /// Preferred I/O size: the smallest of the branches.
    pub bsize: u64,
    /// Fragment size, the unit of the block counts: the smallest of the branches.
    pub frsize: u64,
    /// Longest name: the smallest of the branches.
    pub namemax: u64,
}

/// A branch with its open root directory.
struct Root {
    branch: Branch,
    /// `None` when the root could not be opened (a disk not mounted yet): the branch
    /// then holds nothing and has no space.
    fd: Option<OwnedFd>,
    /// The root's last statvfs numbers and when they were read, for `cache.statfs`.
    space: Mutex<Option<(Instant, Option<FsStat>)>>,
}

/// The branches of a pool with the options that steer operations on them.
///
/// Cheap to share: the FUSE adapter keeps one behind an atomically swapped pointer and
/// builds a new one when the branch list or the options change.
pub struct Union {
    roots: Arc<[Root]>,
    options: Arc<Options>,
    rng: AtomicU64,
}

impl fmt::Debug for Union {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Union")
            .field("branches", &self.branches().collect::<Vec<_>>())
            .finish()
    }
}

/// Splits a pool path into its names; `/` is none. `..` is refused, and `.` and
/// repeated slashes disappear.
fn components(path: &Path) -> Result<Vec<&OsStr>, Errno> {
    let mut parts = Vec::new();
    for component in path.components() {
        match component {
            Component::Normal(name) => parts.push(name),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir | Component::Prefix(_) => return Err(Errno(libc::EINVAL)),
        }
    }
    Ok(parts)
}

/// A pool path as the path below a branch root that [`sys::open_beneath`] takes
/// (`a/b`, `.` for the root); `..` is refused. The node table's paths are already in
/// that form after their leading `/`, which a byte scan confirms without parsing
/// components or allocating; other spellings are rebuilt from their names.
fn relative(path: &Path) -> Result<Cow<'_, [u8]>, Errno> {
    let bytes = path.as_os_str().as_bytes();
    if let Some(rest) = bytes.strip_prefix(b"/") {
        if rest.is_empty() {
            return Ok(Cow::Borrowed(b"."));
        }
        if rest
            .split(|&b| b == b'/')
            .all(|name| !matches!(name, b"" | b"." | b".."))
        {
            return Ok(Cow::Borrowed(rest));
        }
    }
    let names = components(path)?;
    if names.is_empty() {
        return Ok(Cow::Borrowed(b"."));
    }
    Ok(Cow::Owned(names.join(OsStr::new("/")).into_vec()))
}

/// Where `rename-exdev` moves renamed entries, below each branch root; mergerfs's
/// name, so pools keep working when switching between the two.
pub const RENAME_EXDEV_DIR: &str = ".mergerfs_rename_exdev";

/// The relative path from the pool directory `dir` up to the pool root (`../..`).
fn up_to_root(dir: &Path) -> Result<PathBuf, Errno> {
    Ok(components(dir)?.iter().map(|_| "..").collect())
}

/// The parent of a pool path; the root is its own parent.
fn parent(path: &Path) -> &Path {
    path.parent().unwrap_or(Path::new("/"))
}

fn kind_of(file_type: std::fs::FileType) -> u32 {
    if file_type.is_dir() {
        libc::S_IFDIR
    } else if file_type.is_file() {
        libc::S_IFREG
    } else if file_type.is_symlink() {
        libc::S_IFLNK
    } else if file_type.is_fifo() {
        libc::S_IFIFO
    } else if file_type.is_socket() {
        libc::S_IFSOCK
    } else if file_type.is_char_device() {
        libc::S_IFCHR
    } else if file_type.is_block_device() {
        libc::S_IFBLK
    } else {
        0
    }
}

/// The first error of a list of results, or `fallback` if there was none.
fn first_error<T>(results: &[(usize, Result<T, Errno>)], fallback: Errno) -> Errno {
    results
        .iter()
        .find_map(|(_, r)| r.as_ref().err().copied())
        .unwrap_or(fallback)
}

/// The policies' view of paths on the branches: an lstat per question, each answer
/// kept with the opened parent folder, so that the caller can reuse the status and
/// the folder of the branch chosen instead of resolving the path again.
struct Probe<'a> {
    union: &'a Union,
    seen: RefCell<Vec<Seen>>,
    /// statvfs numbers per branch once asked (`None` inside: statvfs failed).
    spaces: RefCell<Vec<Option<Option<FsStat>>>>,
    /// Keep each entry's folder open for the call that follows (actions); without,
    /// an entry is opened and read in one go, and a missing one costs one syscall.
    folders: bool,
}

/// What an operation did on one branch.
type BranchResult = (usize, Result<(), Errno>);

/// One probe's answer: the entry at `path` on `branch`, and its folder.
struct Seen {
    branch: usize,
    path: PathBuf,
    stat: libc::stat,
    at: Option<At>,
}

impl<'a> Probe<'a> {
    fn new(union: &'a Union) -> Self {
        Probe {
            union,
            seen: RefCell::new(Vec::new()),
            spaces: RefCell::new(Vec::new()),
            folders: true,
        }
    }

    /// A probe for callers that need only the status of what it finds.
    fn stat_only(union: &'a Union) -> Self {
        Probe {
            folders: false,
            ..Probe::new(union)
        }
    }

    /// The status of `path` on `branch` if a probe already read it.
    fn stat(&self, branch: usize, path: &Path) -> Option<libc::stat> {
        let seen = self.seen.borrow();
        seen.iter()
            .find(|s| s.branch == branch && s.path == path)
            .map(|s| s.stat)
    }

    /// `path` on `branch` resolved for a call: the probe's folder when it has one.
    fn take_at(&self, branch: usize, path: &Path) -> Result<At, Errno> {
        let found = self
            .seen
            .borrow_mut()
            .iter_mut()
            .find(|s| s.branch == branch && s.path == path)
            .and_then(|s| s.at.take());
        match found {
            Some(at) => Ok(at),
            None => self.union.at(branch, path),
        }
    }
}

impl PathProbe for Probe<'_> {
    fn entry(&self, branch: usize, path: &Path) -> Option<Entry> {
        let (stat, at) = if self.folders {
            let at = self.union.at(branch, path).ok()?;
            (sys::lstat(&at).ok()?, Some(at))
        } else {
            (self.union.lstat_whole(branch, path).ok()?, None)
        };
        self.seen.borrow_mut().push(Seen {
            branch,
            path: path.to_path_buf(),
            stat,
            at,
        });
        Some(Entry {
            mtime: stat.st_mtime,
        })
    }

    fn space(&self, branch: usize) -> Option<FsStat> {
        if let Some(Some(known)) = self.spaces.borrow().get(branch) {
            return *known;
        }
        let root = self.union.roots.get(branch)?;
        let space = root
            .fd
            .as_ref()
            .and_then(|fd| self.union.space_of(root, fd));
        let mut spaces = self.spaces.borrow_mut();
        if spaces.len() <= branch {
            spaces.resize(branch + 1, None);
        }
        spaces[branch] = Some(space);
        space
    }
}

impl Union {
    /// Opens the roots of `branches`. A root that cannot be opened is kept as an empty
    /// branch, as mergerfs keeps a branch whose disk is missing.
    pub fn new(branches: &[Branch], options: Arc<Options>) -> Union {
        let roots: Vec<Root> = branches
            .iter()
            .map(|branch| Root {
                branch: branch.clone(),
                fd: sys::open_root(&branch.path).ok(),
                space: Mutex::new(None),
            })
            .collect();
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
            ^ u64::from(std::process::id());
        Union {
            roots: roots.into(),
            options,
            rng: AtomicU64::new(seed),
        }
    }

    /// The same branches (sharing their open roots) with other options.
    pub fn with_options(&self, options: Arc<Options>) -> Union {
        Union {
            roots: Arc::clone(&self.roots),
            options,
            rng: AtomicU64::new(self.rng.load(Ordering::Relaxed)),
        }
    }

    /// The branches whose folder now names another directory than the root the
    /// pool holds open: a disk mounted on the folder after the pool started, or
    /// unmounted from it (lazily: the held root keeps it busy otherwise). A folder
    /// that cannot be looked up at the moment counts as unchanged.
    pub fn moved_roots(&self) -> Vec<&Branch> {
        self.roots
            .iter()
            .filter(|root| {
                use std::os::unix::fs::MetadataExt;
                let Ok(now) = std::fs::metadata(&root.branch.path) else {
                    return false;
                };
                let held = root.fd.as_ref().and_then(|fd| sys::fstat(fd).ok());
                now.is_dir()
                    && held.is_none_or(|st| (st.st_dev, st.st_ino) != (now.dev(), now.ino()))
            })
            .map(|root| &root.branch)
            .collect()
    }

    /// The same options over another branch list; the roots of `branches` are opened
    /// afresh, while requests still using `self` keep the old ones.
    pub fn with_branches(&self, branches: &[Branch]) -> Union {
        Union::new(branches, Arc::clone(&self.options))
    }

    /// The options in force.
    pub fn options(&self) -> &Options {
        &self.options
    }

    /// The branches in pool order.
    pub fn branches(&self) -> impl Iterator<Item = &Branch> {
        self.roots.iter().map(|r| &r.branch)
    }

    /// The size of each branch's filesystem, in pool order, asked of the branch root
    /// the pool holds open; `None` for a branch whose root is not open or whose
    /// statvfs fails.
    pub fn branch_spaces(&self) -> Vec<(&Branch, Option<BranchSpace>)> {
        self.roots
            .iter()
            .map(|root| {
                let space = root
                    .fd
                    .as_ref()
                    .and_then(|fd| sys::fstatvfs(fd).ok())
                    .map(|v| {
                        let bytes = |blocks: u64| blocks.saturating_mul(v.f_frsize);
                        BranchSpace {
                            total: bytes(v.f_blocks),
                            free: bytes(v.f_bfree),
                            available: bytes(v.f_bavail),
                        }
                    });
                (&root.branch, space)
            })
            .collect()
    }

    /// A uniformly drawn value below `bound` (splitmix64 on a shared counter).
    fn random(&self, bound: u64) -> u64 {
        let mut z = self
            .rng
            .fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed)
            .wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) % bound.max(1)
    }

    fn root(&self, branch: usize) -> Result<&OwnedFd, Errno> {
        self.roots
            .get(branch)
            .and_then(|r| r.fd.as_ref())
            .ok_or(Errno(libc::ENOENT))
    }

    /// The entry at `path` on `branch`, resolved inside the branch.
    fn at(&self, branch: usize, path: &Path) -> Result<At, Errno> {
        let rel = relative(path)?;
        let root = self.root(branch)?;
        let (dir, name): (&[u8], &[u8]) = match rel.iter().rposition(|&b| b == b'/') {
            Some(slash) => (&rel[..slash], &rel[slash + 1..]),
            None => (b".", &rel),
        };
        Ok(At {
            dir: sys::open_beneath(root, dir, libc::O_PATH | libc::O_DIRECTORY)?,
            name: sys::cstring(OsStr::from_bytes(name))?,
        })
    }

    fn lstat(&self, branch: usize, path: &Path) -> Result<libc::stat, Errno> {
        sys::lstat(&self.at(branch, path)?)
    }

    /// Device and inode of the entry at `path` on the branch whose folder is
    /// `branch`, if the pool has that branch and the entry is there.
    pub(crate) fn copy_on(&self, branch: &Path, path: &Path) -> Option<(u64, u64)> {
        let index = self.roots.iter().position(|r| r.branch.path == branch)?;
        let st = self.lstat(index, path).ok()?;
        Some((st.st_dev, st.st_ino))
    }

    /// [`Union::lstat`] by opening the entry itself inside the branch (a symlink as
    /// itself): one syscall when it is missing, instead of opening its folder first.
    fn lstat_whole(&self, branch: usize, path: &Path) -> Result<libc::stat, Errno> {
        let rel = relative(path)?;
        match sys::open_beneath(self.root(branch)?, &rel, libc::O_PATH | libc::O_NOFOLLOW) {
            Ok(fd) => sys::fstat(&fd),
            // The whole path is too long for one call, while its folder may not be.
            Err(Errno(libc::ENAMETOOLONG)) => self.lstat(branch, path),
            Err(e) => Err(e),
        }
    }

    /// Replaces the underlying inode number with the `inodecalc` one.
    fn attr(&self, branch: usize, path: &Path, mut stat: libc::stat) -> Attr {
        let branch_ino = stat.st_ino;
        stat.st_ino = self.inode(branch, path, stat.st_mode, stat.st_ino);
        Attr {
            branch,
            stat,
            branch_ino,
        }
    }

    fn inode(&self, branch: usize, path: &Path, mode: u32, ino: u64) -> u64 {
        let branch_path = self
            .roots
            .get(branch)
            .map_or(Path::new(""), |r| &r.branch.path);
        self.options.inodecalc.inode(branch_path, path, mode, ino)
    }

    /// What the policies know of each branch before they ask the probe.
    fn branch_infos(&self) -> Vec<BranchInfo> {
        self.roots
            .iter()
            .map(|root| BranchInfo {
                mode: root.branch.mode,
                min_free_space: root.branch.min_free_space_or(self.options.minfreespace),
            })
            .collect()
    }

    /// A root's statvfs numbers; with `cache.statfs`, ones at most that many seconds
    /// old.
    fn space_of(&self, root: &Root, fd: &OwnedFd) -> Option<FsStat> {
        let read = || {
            // A branch folder deleted behind the pool (its disk's folder removed or
            // replaced) has no space: nothing can be made in it any more, and policies
            // pass over it, as mergerfs's do.
            if sys::fstat(fd).is_ok_and(|st| st.st_nlink == 0) {
                return None;
            }
            sys::fstatvfs(fd).ok().map(|v| {
                let frsize = v.f_frsize;
                FsStat {
                    avail: v.f_bavail.saturating_mul(frsize),
                    used: v.f_blocks.saturating_sub(v.f_bavail).saturating_mul(frsize),
                    read_only: v.f_flag & libc::ST_RDONLY != 0,
                }
            })
        };
        let ttl = Duration::from_secs(self.options.cache_statfs);
        if ttl.is_zero() {
            return read();
        }
        let mut cached = root.space.lock().unwrap_or_else(PoisonError::into_inner);
        match *cached {
            Some((at, stat)) if at.elapsed() < ttl => stat,
            _ => {
                let stat = read();
                *cached = Some((Instant::now(), stat));
                stat
            }
        }
    }

    /// The branches `function`'s policy picks for `path`.
    fn select(&self, function: Function, path: &Path) -> Result<Vec<usize>, Errno> {
        let policy = self.options.policies.get(function);
        self.select_by(policy, function.category(), path, &[])
    }

    /// The branches `policy` picks for `path` in `category`, never `excluded`.
    fn select_by(
        &self,
        policy: Policy,
        category: Category,
        path: &Path,
        excluded: &[usize],
    ) -> Result<Vec<usize>, Errno> {
        self.select_probed(policy, category, path, excluded, &Probe::stat_only(self))
    }

    /// [`Union::select_by`] with the caller's probe, which keeps what it read.
    fn select_probed(
        &self,
        policy: Policy,
        category: Category,
        path: &Path,
        excluded: &[usize],
        probe: &Probe<'_>,
    ) -> Result<Vec<usize>, Errno> {
        // Refuse `..` before the policy's probes quietly find nothing.
        relative(path)?;
        let mut infos = self.branch_infos();
        for &b in excluded {
            if let Some(info) = infos.get_mut(b) {
                // Read-only is what create and action policies never pick.
                info.mode = BranchMode::RO;
            }
        }
        let snapshot = Snapshot {
            branches: &infos,
            probe,
        };
        let mut rng = |bound| self.random(bound);
        Ok(policy.select(category, &snapshot, path, &mut rng)?)
    }

    /// The one branch a search policy picks.
    fn select_one(&self, function: Function, path: &Path) -> Result<usize, Errno> {
        self.select(function, path)?
            .first()
            .copied()
            .ok_or(Errno(libc::ENOENT))
    }

    /// Whether rename and link keep entries on the branches that already hold the
    /// target's parent (a path-preserving create policy, unless `ignorepponrename`).
    fn preserves_paths(&self) -> bool {
        !self.options.ignorepponrename
            && self
                .options
                .policies
                .get(Function::Create)
                .is_path_preserving()
    }

    // ---- search functions ----

    /// The branch the getattr policy picks for `path`.
    pub fn getattr_branch(&self, path: &Path) -> Result<&Branch, Errno> {
        let branch = self.select_one(Function::Getattr, path)?;
        self.roots
            .get(branch)
            .map(|r| &r.branch)
            .ok_or(Errno(libc::ENOENT))
    }

    /// Every branch that holds an entry at `path`, in pool order.
    pub fn branches_holding(&self, path: &Path) -> Vec<&Branch> {
        (0..self.roots.len())
            .filter(|&b| self.lstat(b, path).is_ok())
            .map(|b| &self.roots[b].branch)
            .collect()
    }

    /// Attributes of `path` from the branch the getattr policy picks; also the answer
    /// to a FUSE lookup.
    pub fn getattr(&self, path: &Path) -> Result<Attr, Errno> {
        let function = Function::Getattr;
        let policy = self.options.policies.get(function);
        let probe = Probe::stat_only(self);
        let branch = self
            .select_probed(policy, function.category(), path, &[], &probe)?
            .first()
            .copied()
            .ok_or(Errno(libc::ENOENT))?;
        // The policy's own probe of the chosen branch already read its status.
        let stat = match probe.stat(branch, path) {
            Some(stat) => stat,
            None => self.lstat(branch, path)?,
        };
        Ok(self.attr(branch, path, stat))
    }

    /// The target of the symlink at `path`.
    pub fn readlink(&self, path: &Path) -> Result<Vec<u8>, Errno> {
        let branch = self.select_one(Function::Readlink, path)?;
        sys::readlinkat(&self.at(branch, path)?)
    }

    /// Opens the existing file at `path` on the branch the open policy picks. `flags`
    /// are open(2) flags; creation flags are dropped and the final name is never
    /// followed if it is a symlink. `O_DIRECT` is dropped too (see [`branch_flags`]).
    pub fn open(&self, path: &Path, flags: i32) -> Result<(usize, OwnedFd), Errno> {
        let branch = self.select_one(Function::Open, path)?;
        let at = self.at(branch, path)?;
        let flags = (branch_flags(flags) & !(libc::O_CREAT | libc::O_EXCL)) | libc::O_NOFOLLOW;
        Ok((branch, sys::openat(&at.dir, &at.name, flags, 0)?))
    }

    /// `link-cow`: makes the file `path` (on the branch the open policy picks) a file
    /// of its own when it has other names (hard links): a copy of it, with its
    /// bytes, extended attributes, owner, group, mode and times, renamed over the
    /// name, so that a write through it leaves the other names as they were (for an
    /// open that truncates, `truncating`, the bytes are not copied). Whether it did.
    /// Run as the caller, who must be able to make a file in the folder; where the
    /// copy cannot be made exactly so (another user's file, whose owner only root
    /// may give; an attribute the caller may not set), nothing changes and the
    /// write reaches every name, as without the option.
    pub fn break_hard_link(&self, path: &Path, truncating: bool) -> Result<bool, Errno> {
        static COPIES: AtomicU64 = AtomicU64::new(0);
        let branch = self.select_one(Function::Open, path)?;
        // Nothing new is made on a read-only branch.
        if self.roots[branch].branch.mode == BranchMode::RO {
            return Ok(false);
        }
        let at = self.at(branch, path)?;
        let src = sys::openat(&at.dir, &at.name, libc::O_RDONLY | libc::O_NOFOLLOW, 0)?;
        let st = sys::fstat(&src)?;
        if st.st_mode & libc::S_IFMT != libc::S_IFREG || st.st_nlink <= 1 {
            return Ok(false);
        }
        let n = COPIES.fetch_add(1, Ordering::Relaxed);
        let temp = At {
            dir: at.dir.try_clone().map_err(Errno::from)?,
            name: sys::cstring(OsStr::new(&format!(".lhfs-cow.{}.{n}", std::process::id())))?,
        };
        let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW;
        let dst = sys::openat(&temp.dir, &temp.name, flags, 0o600)?;
        let same_ids = |made: &libc::stat| {
            made.st_uid == st.st_uid && made.st_gid == st.st_gid && made.st_mode == st.st_mode
        };
        let made = (|| {
            // Owner, group and mode first, on the empty copy: one that cannot have
            // them is given up before a byte is copied.
            let _ = sys::fchown(&dst, st.st_uid, st.st_gid);
            let _ = sys::fchmod(&dst, st.st_mode & 0o7777);
            if !same_ids(&sys::fstat(&dst)?) {
                return Err(Errno(libc::EPERM));
            }
            if !truncating {
                sys::copy_sparse(&src, &dst)?;
            }
            // Writing cleared the set-ID bits (for a caller other than root); the
            // extended attributes go last, as a chown or a write would take a
            // file capability away.
            sys::fchmod(&dst, st.st_mode & 0o7777)?;
            copy_xattrs(&src, &dst);
            let names = |fd: &OwnedFd| {
                let list = sys::flistxattr(fd).unwrap_or_default();
                let mut names: Vec<Vec<u8>> = list
                    .split(|&b| b == 0)
                    .filter(|n| !n.is_empty())
                    .map(<[u8]>::to_vec)
                    .collect();
                names.sort();
                names
            };
            if !same_ids(&sys::fstat(&dst)?) || names(&dst) != names(&src) {
                return Err(Errno(libc::EPERM));
            }
            sys::futimens(&dst, &times_of(&st))
        })();
        if let Err(e) = made {
            let _ = sys::unlinkat(&temp, 0);
            return if e == Errno(libc::EPERM) {
                Ok(false)
            } else {
                Err(e)
            };
        }
        // Swapped with the name, which must still be the file copied: a file saved
        // over the name, or the name removed or renamed, meanwhile stays as it is.
        let is_source = |at: &At| {
            sys::lstat(at).is_ok_and(|now| now.st_dev == st.st_dev && now.st_ino == st.st_ino)
        };
        let swapped = match sys::rename(&temp, &at, libc::RENAME_EXCHANGE) {
            Ok(()) if is_source(&temp) => true,
            Ok(()) => {
                // Put back what the name held; should that fail, `temp` holds it
                // and must not be removed.
                sys::rename(&temp, &at, libc::RENAME_EXCHANGE)?;
                false
            }
            // A file system without the exchange: replaced only if still the file.
            Err(Errno(libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP)) if is_source(&at) => {
                sys::rename(&temp, &at, 0).is_ok()
            }
            Err(_) => false,
        };
        // `temp` names the original now (whose other names keep it), or the copy
        // that was not used, or nothing.
        let _ = sys::unlinkat(&temp, 0);
        Ok(swapped)
    }

    /// The file `held` (a descriptor of an open that is still live) opened again with
    /// `flags`, for an open of a name that was replaced or removed since the kernel
    /// found it: a local file system opens the old file then, even unlinked. Opened
    /// through `/proc/self/fd`, so the open is checked against the caller's ids as
    /// any other.
    pub fn open_again(&self, held: &OwnedFd, flags: i32) -> Result<OwnedFd, Errno> {
        let proc = std::ffi::CString::new(format!("/proc/self/fd/{}", held.as_raw_fd()))
            .map_err(|_| Errno(libc::EINVAL))?;
        let flags = branch_flags(flags) & !(libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW);
        sys::open(&proc, flags)
    }

    /// The merged listing of the directory `path`: every branch in pool order, each
    /// name once, the first branch listing it supplying its type and inode number.
    /// `.` and `..` are left to the caller. Fails only if no branch could list it.
    pub fn readdir(&self, path: &Path) -> Result<Vec<DirEntry>, Errno> {
        let rel = relative(path)?;
        let copies = self.roots.len();
        let open = |branch: usize| {
            self.root(branch)
                .and_then(|root| sys::open_beneath(root, &rel, libc::O_RDONLY | libc::O_DIRECTORY))
        };
        // `func.readdir`: the copies on other disks opened (and read) at once, which
        // a listing of cold folders on several disks waits for once instead of once
        // per disk. The listing is merged in branch order all the same.
        let listings: Vec<Result<Vec<fs::DirEntry>, Errno>> = match self.options.func_readdir {
            ReaddirPolicy::Seq => (0..copies).map(|b| open(b).and_then(read_folder)).collect(),
            ReaddirPolicy::Cosr(threads) => at_once(copies, threads.at_once(copies), open)
                .into_iter()
                .map(|dir| dir.and_then(read_folder))
                .collect(),
            ReaddirPolicy::Cor(threads) => at_once(copies, threads.at_once(copies), |b| {
                open(b).and_then(read_folder)
            }),
        };
        let mut seen = HashSet::new();
        let mut entries = Vec::new();
        let mut listed = false;
        let mut error = Errno(libc::ENOENT);
        for (branch, listing) in listings.into_iter().enumerate() {
            let listing = match listing {
                Ok(listing) => listing,
                Err(e) => {
                    if !listed && error == Errno(libc::ENOENT) {
                        error = e;
                    }
                    continue;
                }
            };
            listed = true;
            for entry in listing {
                let name = entry.file_name();
                if !seen.insert(name.clone()) {
                    continue;
                }
                let kind = entry.file_type().map_or(0, kind_of);
                let ino = self.inode(branch, &path.join(&name), kind, entry.ino());
                entries.push(DirEntry { name, kind, ino });
            }
        }
        if listed {
            Ok(entries)
        } else {
            Err(error)
        }
    }

    /// Attributes of the open file `file` of `path` on `branch`, with the
    /// `inodecalc` number; works after the name was removed.
    pub fn fstat(&self, branch: usize, path: &Path, file: &OwnedFd) -> Result<Attr, Errno> {
        Ok(self.attr(branch, path, sys::fstat(file)?))
    }

    /// `moveonenospc`: copies the regular file `path`, open as `file` on branch `from`,
    /// to the branch `policy` picks for its directory in the create category (never
    /// `from`), with its data, mode, owner, extended attributes and times; removes the
    /// original and returns the new branch with the copy reopened with open(2)
    /// `flags`. On failure the copy is removed and the original stays as it was.
    ///
    /// The branch is picked as `caller` sees the branches, passing over one whose
    /// copy of the folder the caller cannot enter: the file must stay where its
    /// writer can reach it. The copy itself is made with the thread's ids (the
    /// daemon's), to keep the owner and mode.
    pub fn relocate(
        &self,
        caller: &Caller,
        path: &Path,
        from: usize,
        file: &OwnedFd,
        flags: i32,
        policy: Policy,
    ) -> Result<(usize, OwnedFd), Errno> {
        let to = caller.run(|| {
            // Looking the name up in the folder needs the right to enter it (the
            // folder itself opens as a path whatever its mode).
            let reachable = |branch| {
                let looked_up = self.at(branch, path).and_then(|at| sys::lstat(&at));
                !matches!(looked_up, Err(Errno(libc::EACCES | libc::EPERM)))
            };
            let mut passed_over = vec![from];
            loop {
                let picked = self.select_by(policy, Category::Create, parent(path), &passed_over);
                match picked.map_err(|_| Errno(libc::ENOSPC))?.first() {
                    Some(&branch) if reachable(branch) => return Ok::<_, Errno>(branch),
                    Some(&branch) => passed_over.push(branch),
                    None => return Err(Errno(libc::ENOSPC)),
                }
            }
        })?;
        // The open file may be write-only: read through a fresh descriptor of the
        // same inode, which also proves the name still stands for it.
        let src_at = self.at(from, path)?;
        let src = sys::openat(
            &src_at.dir,
            &src_at.name,
            libc::O_RDONLY | libc::O_NOFOLLOW,
            0,
        )?;
        let st = sys::fstat(&src)?;
        let open = sys::fstat(file)?;
        if st.st_mode & libc::S_IFMT != libc::S_IFREG
            || (st.st_dev, st.st_ino) != (open.st_dev, open.st_ino)
        {
            return Err(Errno(libc::EINVAL));
        }
        self.clone_path(from, to, parent(path))?;
        let dst = self.at(to, path)?;
        let copy = sys::openat(
            &dst.dir,
            &dst.name,
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW,
            0o600,
        )?;
        let copied = sys::copy_data(&src, &copy).and_then(|()| {
            copy_metadata(&src, &copy, &st);
            sys::fsync(&copy)
        });
        // The name must still be the copy: its folder may belong to a user, who
        // could have put another file of theirs there to take the writer's data.
        let reopened = copied.and_then(|()| {
            let fd = self.reopen(to, path, flags)?;
            let (made, now) = (sys::fstat(&copy)?, sys::fstat(&fd)?);
            if (made.st_dev, made.st_ino) != (now.st_dev, now.st_ino) {
                return Err(Errno(libc::EIO));
            }
            Ok(fd)
        });
        match reopened {
            Ok(fd) => {
                // The copy is complete: a leftover original would only shadow it.
                let _ = sys::unlinkat(&src_at, 0);
                Ok((to, fd))
            }
            Err(e) => {
                let _ = sys::unlinkat(&dst, 0);
                Err(e)
            }
        }
    }

    /// Opens the copy of `path` on `branch` again, as a file opened with `flags` was:
    /// for the other open descriptors of a file `relocate` moved.
    pub fn reopen(&self, branch: usize, path: &Path, flags: i32) -> Result<OwnedFd, Errno> {
        let at = self.at(branch, path)?;
        let flags = (branch_flags(flags) & !(libc::O_CREAT | libc::O_EXCL | libc::O_TRUNC))
            | libc::O_NOFOLLOW;
        sys::openat(&at.dir, &at.name, flags, 0)
    }

    // ---- create functions ----

    /// Copies the directories of `dir` that are missing on branch `to` from branch
    /// `from`: mode, owner, extended attributes and times, with the daemon's own ids
    /// whoever the request is from. Existing directories are left alone; a
    /// non-directory in the way is ENOTDIR.
    fn clone_path(&self, from: usize, to: usize, dir: &Path) -> Result<(), Errno> {
        if from == to {
            return Ok(());
        }
        self.clone_dirs((from, Path::new("/")), (to, Path::new("/")), dir)
    }

    /// [`Union::clone_path`] between any two places: the directories of `dir` below
    /// `to.1` on branch `to.0` are made as those below `from.1` on branch `from.0`.
    fn clone_dirs(
        &self,
        from: (usize, &Path),
        to: (usize, &Path),
        dir: &Path,
    ) -> Result<(), Errno> {
        creds::as_daemon_for(|| self.clone_dirs_now(from, to, dir))
    }

    fn clone_dirs_now(
        &self,
        from: (usize, &Path),
        to: (usize, &Path),
        dir: &Path,
    ) -> Result<(), Errno> {
        let (mut src_path, mut dst_path) = (from.1.to_path_buf(), to.1.to_path_buf());
        for name in components(dir)? {
            src_path.push(name);
            dst_path.push(name);
            let dst = self.at(to.0, &dst_path)?;
            match sys::lstat(&dst) {
                Ok(st) if sys::is_dir(&st) => continue,
                Ok(_) => return Err(Errno(libc::ENOTDIR)),
                Err(Errno(libc::ENOENT)) => {}
                Err(e) => return Err(e),
            }
            let src = self.at(from.0, &src_path)?;
            let src = match sys::openat(&src.dir, &src.name, DIR_NOFOLLOW, 0) {
                Err(Errno(libc::ELOOP)) => return Err(Errno(libc::ENOTDIR)),
                opened => opened?,
            };
            let st = sys::fstat(&src)?;
            match self.make_dir_copy(to.0, &dst, &src, &st) {
                // Made meanwhile by another request: theirs is as good as ours.
                Ok(()) | Err(Errno(libc::EEXIST)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Makes the missing folder `dst` on `branch` as a copy of the folder `src`
    /// (whose status is `st`), with the daemon's ids. The folder `dst` goes in may
    /// be writable by a user, who could swap a new name there for another file or
    /// folder of root's while its owner, mode and attributes are set. So the copy is
    /// made and set up inside a private folder the daemon makes at the branch root
    /// (mode 0700, there for the moment of the copy), and then renamed into place
    /// complete. Where the branch root is open to others, or `dst`'s folder is on
    /// another filesystem, it is made in place, private, and set up through a
    /// descriptor checked to be the daemon's. EEXIST when `dst` exists.
    fn make_dir_copy(
        &self,
        branch: usize,
        dst: &At,
        src: &OwnedFd,
        st: &libc::stat,
    ) -> Result<(), Errno> {
        static STAGED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let root = self.root(branch)?;
        let root_st = sys::fstat(root)?;
        // SAFETY: geteuid cannot fail.
        let euid = unsafe { libc::geteuid() };
        if root_st.st_uid == euid && root_st.st_mode & 0o022 == 0 {
            let n = STAGED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let stage = At {
                dir: root.try_clone().map_err(Errno::from)?,
                name: sys::cstring(OsStr::new(&format!(
                    ".lhfs-clone.{}.{n}",
                    std::process::id()
                )))?,
            };
            sys::mkdirat(&stage, 0o700)?;
            let staged = made_dir(&stage).and_then(|dir| {
                let inner = At {
                    dir,
                    name: sys::cstring(OsStr::new("d"))?,
                };
                make_private_copy(&inner, src, st)?;
                let moved = sys::rename(&inner, dst, libc::RENAME_NOREPLACE);
                if moved.is_err() {
                    let _ = sys::unlinkat(&inner, libc::AT_REMOVEDIR);
                }
                moved
            });
            let _ = sys::unlinkat(&stage, libc::AT_REMOVEDIR);
            match staged {
                Err(Errno(libc::EXDEV)) => {}
                done => return done,
            }
        }
        make_private_copy(dst, src, st)
    }

    /// The create algorithm: the parent must exist somewhere (getattr policy), the
    /// create policy picks branches for the parent, the parent is cloned onto each,
    /// and `make` runs there as the caller. The policies look at the branches with
    /// the ids the thread has: the FUSE layer calls this acting as the caller, so a
    /// branch where the caller cannot reach the parent is not picked, as in mergerfs.
    /// `all_targets` runs on every branch picked
    /// (mkdir, mknod, symlink), otherwise only on the first (create). Success if any
    /// branch succeeded, else the first error.
    fn create_with<T>(
        &self,
        function: Function,
        caller: &Caller,
        path: &Path,
        all_targets: bool,
        make: impl Fn(&At) -> Result<T, Errno>,
    ) -> Result<(usize, T), Errno> {
        if *relative(path)? == *b"." {
            return Err(Errno(libc::EEXIST));
        }
        let dir = parent(path);
        // Where the parent folder is found (the search policy): the source of its
        // clone on a branch without it. For a single target asked only then, or when
        // the create policy finds nothing, as mergerfs asks it first: a parent
        // missing everywhere is ENOENT before any error of the create policy.
        let source = std::cell::OnceCell::new();
        let source = || *source.get_or_init(|| self.select_one(Function::Getattr, dir));
        let mut targets = match self.select(function, dir) {
            Ok(targets) => targets,
            Err(e) => {
                source()?;
                return Err(e);
            }
        };
        if !all_targets {
            targets.truncate(1);
        }
        if targets.len() > 1 {
            // Asked before anything is made: making an entry changes its parent's
            // times, which a search policy such as `newest` looks at.
            source()?;
        }
        let mut made = None;
        let mut results = Vec::new();
        for branch in targets {
            // The folder is usually there already: opening it is then the whole check,
            // and only a branch without it has the path cloned first.
            let at = match self.at(branch, path) {
                Err(Errno(libc::ENOENT)) => self
                    .clone_path(source()?, branch, dir)
                    .and_then(|()| self.at(branch, path)),
                at => at,
            };
            let result = at.and_then(|at| caller.run(|| make(&at)));
            match result {
                Ok(value) => {
                    made.get_or_insert((branch, value));
                }
                Err(e) => results.push((branch, Err::<(), _>(e))),
            }
        }
        made.ok_or_else(|| first_error(&results, Errno(libc::ENOENT)))
    }

    /// Creates and opens the regular file `path` with open(2) `flags` and `mode` on
    /// the one branch the create policy picks.
    pub fn create(
        &self,
        caller: &Caller,
        path: &Path,
        flags: i32,
        mode: Mode,
    ) -> Result<Created, Errno> {
        let flags = branch_flags(flags) | libc::O_CREAT | libc::O_NOFOLLOW;
        let (branch, file) = self.create_with(Function::Create, caller, path, false, |at| {
            sys::openat(&at.dir, &at.name, flags, mode.in_folder(&at.dir))
        })?;
        let attr = self.attr(branch, path, sys::fstat(&file)?);
        Ok(Created { file, attr })
    }

    /// Makes the directory `path` on every branch the mkdir policy picks.
    pub fn mkdir(&self, caller: &Caller, path: &Path, mode: Mode) -> Result<Attr, Errno> {
        self.create_with(Function::Mkdir, caller, path, true, |at| {
            sys::mkdirat(at, mode.in_folder(&at.dir))
        })?;
        self.getattr(path)
    }

    /// Makes the special file `path` on every branch the mknod policy picks.
    pub fn mknod(
        &self,
        caller: &Caller,
        path: &Path,
        mode: Mode,
        rdev: u64,
    ) -> Result<Attr, Errno> {
        self.create_with(Function::Mknod, caller, path, true, |at| {
            sys::mknodat(at, mode.in_folder(&at.dir), rdev)
        })?;
        self.getattr(path)
    }

    /// Makes the symlink `path` pointing to `target` (stored as given) on every branch
    /// the symlink policy picks.
    pub fn symlink(&self, caller: &Caller, target: &OsStr, path: &Path) -> Result<Attr, Errno> {
        let target = sys::cstring(target)?;
        self.create_with(Function::Symlink, caller, path, true, |at| {
            sys::symlinkat(&target, at)
        })?;
        self.getattr(path)
    }

    // ---- action functions ----

    /// Runs `op` on `path` on every branch `function`'s policy picks, through the
    /// folders its probes opened; each branch with its result.
    fn on_selected(
        &self,
        function: Function,
        path: &Path,
        op: impl Fn(&At) -> Result<(), Errno>,
    ) -> Result<Vec<BranchResult>, Errno> {
        let policy = self.options.policies.get(function);
        let probe = Probe::new(self);
        let chosen = self.select_probed(policy, function.category(), path, &[], &probe)?;
        Ok(chosen
            .into_iter()
            .map(|b| (b, probe.take_at(b, path).and_then(|at| op(&at))))
            .collect())
    }

    /// Runs `op` on every branch `function`'s policy picks, with mergerfs's result
    /// rule: all succeeded is success, none is the first error, and a mix answers
    /// what the branch the getattr policy shows did, so a following stat agrees.
    fn act(
        &self,
        function: Function,
        path: &Path,
        op: impl Fn(&At) -> Result<(), Errno>,
    ) -> Result<(), Errno> {
        let results = self.on_selected(function, path, op)?;
        let failed = results.iter().filter(|(_, r)| r.is_err()).count();
        if failed == 0 {
            return Ok(());
        }
        let error = first_error(&results, Errno(libc::EIO));
        if failed == results.len() {
            return Err(error);
        }
        let shown = self.select_one(Function::Getattr, path).ok();
        results
            .iter()
            .find(|(b, _)| Some(*b) == shown)
            .map_or(Err(error), |(_, r)| *r)
    }

    /// chmod on every action branch. Symlinks have no mode (EOPNOTSUPP).
    pub fn chmod(&self, path: &Path, mode: u32) -> Result<(), Errno> {
        self.act(Function::Chmod, path, |at| sys::chmod(at, mode))
    }

    /// Sets `mode` on the copy of `path` the caller is shown (getattr policy, with
    /// the thread's ids) using the daemon's own ids: for the kernel's clearing of
    /// set-user-ID and set-group-ID when a user who is not the owner writes or
    /// truncates the file, which Linux does whoever owns it.
    pub fn clear_set_id(&self, path: &Path, mode: u32) -> Result<(), Errno> {
        let branch = self.select_one(Function::Getattr, path)?;
        let at = self.at(branch, path)?;
        creds::as_daemon_for(|| sys::chmod(&at, mode))
    }

    /// Whether the thread's ids may write the copy of `path` the pool shows
    /// (getattr policy): `access(W_OK)` with those ids, ACLs included.
    pub fn may_write(&self, path: &Path) -> Result<(), Errno> {
        let branch = self.select_one(Function::Getattr, path)?;
        let at = self.at(branch, path)?;
        sys::may_write(&at)
    }

    /// lchown on every action branch; `None` keeps the id.
    pub fn chown(&self, path: &Path, uid: Option<u32>, gid: Option<u32>) -> Result<(), Errno> {
        let (uid, gid) = (uid.unwrap_or(u32::MAX), gid.unwrap_or(u32::MAX));
        self.act(Function::Chown, path, |at| sys::chown(at, uid, gid))
    }

    /// Sets atime and mtime (`UTIME_NOW`, `UTIME_OMIT` allowed) on every action
    /// branch, on the entry itself even if it is a symlink.
    pub fn utimens(&self, path: &Path, times: [libc::timespec; 2]) -> Result<(), Errno> {
        self.act(Function::Utimens, path, |at| sys::utimens(at, &times))
    }

    /// Truncates the regular file `path` on every action branch.
    pub fn truncate(&self, path: &Path, size: u64) -> Result<(), Errno> {
        self.act(Function::Truncate, path, |at| sys::truncate(at, size))
    }

    /// Removes the non-directory `path` from every action branch; success if any
    /// branch succeeded, unless a copy may not be removed by the caller (EACCES,
    /// EPERM): the name would still be there, so that is the answer, as in mergerfs.
    /// Removes the name `path` from every action branch: success if any branch
    /// removed it and no copy stays (see [`refused`]).
    pub fn unlink(&self, path: &Path) -> Result<(), Errno> {
        let results = self.on_selected(Function::Unlink, path, |at| sys::unlinkat(at, 0))?;
        if let Some(e) = refused(&results) {
            Err(e)
        } else if results.iter().any(|(_, r)| r.is_ok()) {
            Ok(())
        } else {
            Err(first_error(&results, Errno(libc::ENOENT)))
        }
    }

    /// Removes the directory `path` from every action branch. A copy that is not
    /// empty wins over everything (ENOTEMPTY), though empty copies elsewhere are
    /// gone by then, then a copy that stays (see [`refused`]); otherwise success
    /// if any branch succeeded.
    pub fn rmdir(&self, path: &Path) -> Result<(), Errno> {
        let results: Vec<_> = self
            .select(Function::Rmdir, path)?
            .into_iter()
            .map(|b| {
                let r = self
                    .at(b, path)
                    .and_then(|at| sys::unlinkat(&at, libc::AT_REMOVEDIR));
                (b, r)
            })
            .collect();
        let not_empty = results.iter().find_map(|(_, r)| match r {
            Err(e @ Errno(libc::ENOTEMPTY | libc::EEXIST)) => Some(*e),
            _ => None,
        });
        match not_empty.or_else(|| refused(&results)) {
            Some(e) => Err(e),
            None if results.iter().any(|(_, r)| r.is_ok()) => Ok(()),
            None => Err(first_error(&results, Errno(libc::ENOENT))),
        }
    }

    // ---- extended attributes ----

    /// The refusal the `xattr` option makes without touching branches, if any.
    fn xattr_refusal(&self) -> Result<(), Errno> {
        match self.options.xattr {
            XattrMode::Passthrough => Ok(()),
            XattrMode::Noattr => Err(Errno(libc::ENODATA)),
            XattrMode::Nosys => Err(Errno(libc::ENOSYS)),
        }
    }

    /// The value of attribute `name` of `path`, from the getxattr policy's branch.
    pub fn getxattr(&self, path: &Path, name: &OsStr) -> Result<Vec<u8>, Errno> {
        self.xattr_refusal()?;
        if !self.options.security_capability && name.as_bytes() == b"security.capability" {
            return Err(Errno(libc::ENODATA));
        }
        let branch = self.select_one(Function::Getxattr, path)?;
        sys::getxattr(&self.at(branch, path)?, &sys::cstring(name)?)
    }

    /// The NUL-separated attribute names of `path`, from the listxattr policy's branch.
    pub fn listxattr(&self, path: &Path) -> Result<Vec<u8>, Errno> {
        // `noattr`: as if no file had an attribute, so an empty list (ENODATA is
        // no answer listxattr(2) gives, and backup tools stop on it).
        if self.options.xattr == XattrMode::Noattr {
            return Ok(Vec::new());
        }
        self.xattr_refusal()?;
        let branch = self.select_one(Function::Listxattr, path)?;
        sys::listxattr(&self.at(branch, path)?)
    }

    /// Sets attribute `name` on every action branch (`flags` as setxattr(2)).
    pub fn setxattr(
        &self,
        path: &Path,
        name: &OsStr,
        value: &[u8],
        flags: i32,
    ) -> Result<(), Errno> {
        self.xattr_refusal()?;
        let name = sys::cstring(name)?;
        self.act(Function::Setxattr, path, |at| {
            sys::setxattr(at, &name, value, flags)
        })
    }

    /// Removes attribute `name` on every action branch.
    pub fn removexattr(&self, path: &Path, name: &OsStr) -> Result<(), Errno> {
        self.xattr_refusal()?;
        let name = sys::cstring(name)?;
        self.act(Function::Removexattr, path, |at| {
            sys::removexattr(at, &name)
        })
    }

    /// The attribute calls on the descriptor of an open file whose name is gone
    /// (unlinked while open, so no policy can find it): the same option rules as by
    /// path, on that one file.
    pub fn fd_getxattr(&self, fd: &OwnedFd, name: &OsStr) -> Result<Vec<u8>, Errno> {
        self.xattr_refusal()?;
        if !self.options.security_capability && name.as_bytes() == b"security.capability" {
            return Err(Errno(libc::ENODATA));
        }
        sys::fgetxattr(fd, &sys::cstring(name)?)
    }

    /// See [`Union::fd_getxattr`].
    pub fn fd_listxattr(&self, fd: &OwnedFd) -> Result<Vec<u8>, Errno> {
        if self.options.xattr == XattrMode::Noattr {
            return Ok(Vec::new());
        }
        self.xattr_refusal()?;
        sys::flistxattr(fd)
    }

    /// See [`Union::fd_getxattr`].
    pub fn fd_setxattr(
        &self,
        fd: &OwnedFd,
        name: &OsStr,
        value: &[u8],
        flags: i32,
    ) -> Result<(), Errno> {
        self.xattr_refusal()?;
        sys::fsetxattr(fd, &sys::cstring(name)?, value, flags)
    }

    /// See [`Union::fd_getxattr`].
    pub fn fd_removexattr(&self, fd: &OwnedFd, name: &OsStr) -> Result<(), Errno> {
        self.xattr_refusal()?;
        sys::fremovexattr(fd, &sys::cstring(name)?)
    }

    // ---- rename and link ----

    fn rename_on(&self, branch: usize, old: &Path, new: &Path) -> Result<(), Errno> {
        sys::rename(&self.at(branch, old)?, &self.at(branch, new)?, 0)
    }

    /// Quietly removes `path` from `branch`, whatever kind of entry it is; used for
    /// the leftovers of a rename.
    fn remove_quietly(&self, branch: usize, path: &Path) {
        if let Ok(at) = self.at(branch, path) {
            if sys::unlinkat(&at, 0) == Err(Errno(libc::EISDIR)) {
                let _ = sys::unlinkat(&at, libc::AT_REMOVEDIR);
            }
        }
    }

    /// Renames `old` to `new` on each branch that holds `old` (rename policy), never
    /// moving data between branches.
    ///
    /// With a path-preserving create policy a branch lacking `new`'s parent fails
    /// there, and if every branch fails the answer is EXDEV. Otherwise `new`'s parent
    /// is cloned onto a branch where the rename failed and it is retried there. On
    /// success the stale `new` on branches without `old`, and `old` where the rename
    /// failed, are removed so the pool shows only the renamed entry. Branches in `RO`
    /// mode are left untouched. A final EXDEV goes to the `rename-exdev` fallback,
    /// whose symlink is created as `caller`.
    ///
    /// A directory replacing a directory that is not empty in the pool's merged view
    /// is ENOTEMPTY, as on one filesystem, even where the branches would allow it.
    pub fn rename(&self, caller: &Caller, old: &Path, new: &Path) -> Result<Renamed, Errno> {
        // As the caller sees the target: entries hidden from the caller are not
        // revealed by the answer.
        // A folder the caller may not list counts as empty, as its rename on a
        // branch finds it.
        let non_empty = caller.run(|| match self.getattr(new) {
            Ok(target) if sys::is_dir(&target.stat) => {
                Ok(self.readdir(new).is_ok_and(|entries| !entries.is_empty()))
            }
            _ => Ok::<_, Errno>(false),
        })?;
        if non_empty {
            return Err(Errno(libc::ENOTEMPTY));
        }
        match self.rename_in_place(caller, old, new) {
            Ok(()) => Ok(Renamed::InPlace),
            Err(Errno(libc::EXDEV)) => self.rename_exdev(caller, old, new),
            Err(e) => Err(e),
        }
    }

    fn rename_in_place(&self, caller: &Caller, old: &Path, new: &Path) -> Result<(), Errno> {
        let sources = self.select(Function::Rename, old)?;
        let preserve = self.preserves_paths();
        let new_dir = parent(new);
        let clone_from = if preserve {
            None
        } else {
            Some(self.select_one(Function::Getattr, new_dir)?)
        };
        let mut results = Vec::new();
        let mut leftovers = Vec::new();
        for branch in 0..self.roots.len() {
            if self.roots[branch].branch.mode == BranchMode::RO {
                continue;
            }
            if !sources.contains(&branch) {
                leftovers.push((branch, new));
                continue;
            }
            // As the caller, so that each branch checks its own copy; the parent
            // cloning runs as root, to give the clones their owners.
            let rename = || caller.run(|| self.rename_on(branch, old, new));
            let mut result = rename();
            if let (Err(_), Some(from)) = (result, clone_from) {
                if self.clone_path(from, branch, new_dir).is_ok() {
                    result = rename();
                }
            }
            if result.is_err() {
                leftovers.push((branch, old));
            }
            results.push((branch, result));
        }
        if !results.iter().any(|(_, r)| r.is_ok()) {
            // A copy the caller may not move is refused as such; only a missing
            // parent is EXDEV under a path-preserving policy, which the rename-exdev
            // fallback may then take up.
            return Err(match refused(&results) {
                Some(e @ Errno(libc::EACCES | libc::EPERM)) => e,
                _ if preserve => Errno(libc::EXDEV),
                _ => first_error(&results, Errno(libc::ENOENT)),
            });
        }
        for (branch, path) in leftovers {
            let _ = caller.run(|| {
                self.remove_quietly(branch, path);
                Ok::<(), Errno>(())
            });
        }
        Ok(())
    }

    /// The `rename-exdev` fallback: on each branch holding `old`, move it to the same
    /// path below [`RENAME_EXDEV_DIR`] (cloning its directories there), then make
    /// `new` a symlink to it. Any failure moves everything back and answers EXDEV.
    fn rename_exdev(&self, caller: &Caller, old: &Path, new: &Path) -> Result<Renamed, Errno> {
        let exdev = Errno(libc::EXDEV);
        let old_rel = old.strip_prefix("/").unwrap_or(old);
        let stash_dir = Path::new("/").join(RENAME_EXDEV_DIR);
        let stash = stash_dir.join(old_rel);
        let target = match self.options.rename_exdev {
            RenameExdev::Passthrough => return Err(exdev),
            RenameExdev::RelSymlink => up_to_root(parent(new))?
                .join(RENAME_EXDEV_DIR)
                .join(old_rel),
            RenameExdev::AbsSymlink => match &self.options.mountpoint {
                Some(mountpoint) => mountpoint.join(RENAME_EXDEV_DIR).join(old_rel),
                None => return Err(exdev),
            },
        };
        let mut moved = Vec::new();
        // The copies the caller sees are moved, each as the caller: taking a file
        // out of its folder needs the same rights as a rename. The stash folders
        // are made with the daemon's ids and keep their sources' owners and modes.
        let sources = caller.run(|| self.select(Function::Rename, old))?;
        let mut stashed = || -> Result<(), Errno> {
            for &branch in &sources {
                match sys::mkdirat(&self.at(branch, &stash_dir)?, 0o1777) {
                    // Open to everyone like /tmp; mkdir's mode was cut by the umask.
                    Ok(()) => sys::chmod(&self.at(branch, &stash_dir)?, 0o1777)?,
                    Err(Errno(libc::EEXIST)) => {}
                    Err(e) => return Err(e),
                }
                self.clone_dirs((branch, Path::new("/")), (branch, &stash_dir), parent(old))?;
                caller.run(|| self.rename_on(branch, old, &stash))?;
                moved.push(branch);
            }
            self.symlink(caller, target.as_os_str(), new).map(drop)
        };
        let result = stashed();
        if result.is_err() {
            for branch in moved {
                let _ = caller.run(|| self.rename_on(branch, &stash, old));
            }
            return Err(exdev);
        }
        Ok(Renamed::Stashed(stash))
    }

    /// Hard-links `old` as `new` on each branch holding `old` (link policy). A branch
    /// lacking `new`'s parent gets it cloned (non-path-preserving create policy) or
    /// counts as EXDEV (path-preserving). If the result is EXDEV, `link-exdev` may
    /// make a symlink instead, created as `caller`.
    pub fn link(&self, caller: &Caller, old: &Path, new: &Path) -> Result<Linked, Errno> {
        let sources = self.select(Function::Link, old)?;
        let new_dir = parent(new);
        let preserve = self.preserves_paths();
        let mut results = Vec::new();
        for branch in sources {
            let link =
                || caller.run(|| sys::linkat(&self.at(branch, old)?, &self.at(branch, new)?));
            let result = match link() {
                Err(Errno(libc::ENOENT)) if preserve => Err(Errno(libc::EXDEV)),
                Err(Errno(libc::ENOENT)) => self
                    .select_one(Function::Getattr, new_dir)
                    .and_then(|from| self.clone_path(from, branch, new_dir))
                    .and_then(|()| link()),
                other => other,
            };
            results.push((branch, result));
        }
        if results.iter().any(|(_, r)| r.is_ok()) {
            let attr = self.getattr(new)?;
            return Ok(Linked {
                attr,
                symlinked: false,
            });
        }
        match first_error(&results, Errno(libc::ENOENT)) {
            Errno(libc::EXDEV) => self.link_exdev(caller, old, new),
            e => Err(e),
        }
    }

    /// The `link-exdev` fallback: a symlink at `new` to `old`.
    fn link_exdev(&self, caller: &Caller, old: &Path, new: &Path) -> Result<Linked, Errno> {
        let target: PathBuf = match self.options.link_exdev {
            LinkExdev::Passthrough => return Err(Errno(libc::EXDEV)),
            LinkExdev::RelSymlink => {
                up_to_root(parent(new))?.join(old.strip_prefix("/").unwrap_or(old))
            }
            LinkExdev::AbsBaseSymlink => {
                let branch = self.select_one(Function::Open, old)?;
                let base = &self.roots[branch].branch.path;
                base.join(old.strip_prefix("/").unwrap_or(old))
            }
            LinkExdev::AbsPoolSymlink => match &self.options.mountpoint {
                Some(mountpoint) => mountpoint.join(old.strip_prefix("/").unwrap_or(old)),
                None => return Err(Errno(libc::EXDEV)),
            },
        };
        self.symlink(caller, target.as_os_str(), new)?;
        Ok(Linked {
            attr: self.getattr(old)?,
            symlinked: true,
        })
    }

    // ---- statfs ----

    /// The pool's filesystem numbers: every branch (with `statfs=full` only those
    /// holding `path`) counted once per filesystem, scaled to the smallest fragment
    /// size. `statfs-ignore` reports no free space for the branches it names.
    pub fn statfs(&self, path: &Path) -> Result<StatFs, Errno> {
        let rel = relative(path)?;
        let mut devices = HashSet::new();
        let mut found = Vec::new();
        for root in self.roots.iter() {
            let Some(fd) = &root.fd else { continue };
            let opened;
            let fd = match self.options.statfs {
                StatfsMode::Base => fd,
                StatfsMode::Full => match sys::open_beneath(fd, &rel, libc::O_PATH) {
                    Ok(f) => {
                        opened = f;
                        &opened
                    }
                    Err(_) => continue,
                },
            };
            let (Ok(st), Ok(mut v)) = (sys::fstat(fd), sys::fstatvfs(fd)) else {
                continue;
            };
            // A branch folder deleted behind the pool holds nothing any more.
            if st.st_nlink == 0 {
                continue;
            }
            if !devices.insert(st.st_dev) {
                continue;
            }
            let mode = root.branch.mode;
            let read_only = v.f_flag & libc::ST_RDONLY != 0;
            let ignored = match self.options.statfs_ignore {
                StatfsIgnore::None => read_only && mode != BranchMode::RW,
                StatfsIgnore::Ro => mode != BranchMode::RW,
                StatfsIgnore::Nc => mode == BranchMode::NC || (read_only && mode != BranchMode::RW),
            };
            if ignored {
                v.f_bavail = 0;
                v.f_favail = 0;
            }
            found.push(v);
        }
        let frsize = found.iter().map(|v| v.f_frsize).filter(|&f| f > 0).min();
        let Some(frsize) = frsize else {
            return Err(Errno(libc::ENOENT));
        };
        let mut total = StatFs {
            bsize: u64::MAX,
            frsize,
            namemax: u64::MAX,
            ..StatFs::default()
        };
        for v in &found {
            let scale = |blocks: u64| {
                let bytes = u128::from(blocks) * u128::from(v.f_frsize);
                u64::try_from(bytes / u128::from(frsize)).unwrap_or(u64::MAX)
            };
            total.blocks = total.blocks.saturating_add(scale(v.f_blocks));
            total.bfree = total.bfree.saturating_add(scale(v.f_bfree));
            total.bavail = total.bavail.saturating_add(scale(v.f_bavail));
            total.files = total.files.saturating_add(v.f_files);
            total.ffree = total.ffree.saturating_add(v.f_ffree);
            total.favail = total.favail.saturating_add(v.f_favail);
            total.bsize = total.bsize.min(v.f_bsize);
            total.namemax = total.namemax.min(v.f_namemax);
        }
        Ok(total)
    }
}

/// Best-effort copy of a cloned directory's or moved file's extended attributes,
/// owner, mode and times; the entry itself is what matters, so failures are ignored
/// (a branch filesystem without xattrs, a mode the umask cut).
/// Opening a folder to read it, never through a symlink.
const DIR_NOFOLLOW: libc::c_int = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW;

/// The folder the daemon just made at `at` with mode 0700, opened: it must be a
/// folder of the daemon's with no access for others, or someone swapped the name
/// meanwhile (EIO: nothing is done to what is there now).
fn made_dir(at: &At) -> Result<OwnedFd, Errno> {
    let fd = sys::openat(&at.dir, &at.name, DIR_NOFOLLOW, 0).map_err(|_| Errno(libc::EIO))?;
    let st = sys::fstat(&fd)?;
    // SAFETY: geteuid cannot fail. The folder was made with the effective (file
    // system) ids of the daemon, which lhfs keeps equal while cloning.
    let euid = unsafe { libc::geteuid() };
    if !sys::is_dir(&st) || st.st_uid != euid || st.st_mode & 0o077 != 0 {
        return Err(Errno(libc::EIO));
    }
    Ok(fd)
}

/// Makes the folder `at` (mode 0700) and gives it what `src` has (see
/// [`copy_metadata`]) through its descriptor, checked to be the daemon's.
fn make_private_copy(at: &At, src: &OwnedFd, st: &libc::stat) -> Result<(), Errno> {
    sys::mkdirat(at, 0o700)?;
    copy_metadata(src, &made_dir(at)?, st);
    Ok(())
}

/// Gives `dst` the extended attributes, owner, group, mode and times of `src`
/// (described by `st`), both open descriptors, so nothing is done by name.
fn copy_metadata(src: &OwnedFd, dst: &OwnedFd, st: &libc::stat) {
    copy_xattrs(src, dst);
    let _ = sys::fchown(dst, st.st_uid, st.st_gid);
    // After chown, which clears set-id bits, and to undo the umask.
    let _ = sys::fchmod(dst, st.st_mode & 0o7777);
    let _ = sys::futimens(dst, &times_of(st));
}

/// The access and modification times of `st`, as `futimens` takes them.
fn times_of(st: &libc::stat) -> [libc::timespec; 2] {
    [
        libc::timespec {
            tv_sec: st.st_atime,
            tv_nsec: st.st_atime_nsec,
        },
        libc::timespec {
            tv_sec: st.st_mtime,
            tv_nsec: st.st_mtime_nsec,
        },
    ]
}

/// Gives `dst` the extended attributes of `src`. POSIX ACLs that `dst` inherited
/// from a default ACL of its folder (a folder that got one after `src` was made, or
/// a branch root with one) go unless `src` has them too: the copy's access must be
/// the original's.
fn copy_xattrs(src: &OwnedFd, dst: &OwnedFd) {
    let names = sys::flistxattr(src).unwrap_or_default();
    let has = |name: &[u8]| names.split(|&b| b == 0).any(|n| n == name);
    for acl in [c"system.posix_acl_access", c"system.posix_acl_default"] {
        if !has(acl.to_bytes()) {
            let _ = sys::fremovexattr(dst, acl);
        }
    }
    for name in names.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let Ok(name) = std::ffi::CString::new(name) else {
            continue;
        };
        if let Ok(value) = sys::fgetxattr(src, &name) {
            let _ = sys::fsetxattr(dst, &name, &value, 0);
        }
    }
}

/// The first error among per-branch results that leaves a copy of the name in
/// place, which a removal must not pass off as done: a copy the caller may not
/// remove (EACCES, EPERM), or one of another kind (a folder where a file was
/// removed, EISDIR; a file where a folder was, ENOTDIR). mergerfs answers these too.
fn refused(results: &[(usize, Result<(), Errno>)]) -> Option<Errno> {
    results.iter().find_map(|(_, r)| match r {
        Err(e @ Errno(libc::EACCES | libc::EPERM | libc::EISDIR | libc::ENOTDIR)) => Some(*e),
        _ => None,
    })
}

/// The entries of the folder open at `dir` (resolved inside its branch), read through
/// the daemon's own fd.
fn read_folder(dir: OwnedFd) -> Result<Vec<fs::DirEntry>, Errno> {
    let iter = fs::read_dir(format!("/proc/self/fd/{}", dir.as_raw_fd()))?;
    Ok(iter.collect::<Result<Vec<_>, _>>()?)
}

/// `work(i)` for every `i` below `count`, at most `limit` at a time (the calling
/// thread is one of them), results in order. The threads started for it act as the
/// calling thread does: a thread starts with the file system ids and groups of the
/// thread that makes it, so a listing made for a caller stays the caller's.
fn at_once<T: Send>(count: usize, limit: usize, work: impl Fn(usize) -> T + Sync) -> Vec<T> {
    let helpers = limit.min(count).saturating_sub(1);
    if helpers == 0 {
        return (0..count).map(work).collect();
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let run = || {
        let mut done = Vec::new();
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            if i >= count {
                return done;
            }
            done.push((i, work(i)));
        }
    };
    let mut results: Vec<(usize, T)> = std::thread::scope(|scope| {
        let started: Vec<_> = (0..helpers)
            .map(|_| std::thread::Builder::new().spawn_scoped(scope, run))
            .collect();
        let mut all = run();
        // A thread that could not be started took no work; one that panicked is a
        // panic here too.
        for thread in started.into_iter().flatten() {
            match thread.join() {
                Ok(done) => all.extend(done),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        all
    });
    results.sort_by_key(|&(i, _)| i);
    results.into_iter().map(|(_, r)| r).collect()
}

/// The open(2) flags lhfs opens a branch file with, for a caller's `flags`. Without
/// `O_DIRECT`: the data lhfs reads and writes itself passes through its own buffers,
/// which need not meet the alignment `O_DIRECT` asks of every transfer, so such
/// opens would fail with EINVAL. With passthrough the kernel opens the backing file
/// with the caller's flags, `O_DIRECT` included.
fn branch_flags(flags: i32) -> i32 {
    flags & !libc::O_DIRECT
}
#[cfg(test)]
mod tests;
