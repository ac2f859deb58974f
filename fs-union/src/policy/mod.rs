//! The mergerfs policies: which branch (or branches) an operation on a pool path
//! lands on.
//!
//! A policy is a pure function of a [`Snapshot`] of the branches (mode, minimum free
//! space, statvfs numbers), a [`PathProbe`] that answers "does this path exist on
//! branch *i*, and with which mtime", and for the random policies a [`RandomSource`].
//! Nothing here touches the filesystem, so every policy is unit-tested on hand-built
//! snapshots.
//!
//! The same policy name behaves differently per [`Category`]:
//!
//! - **create** filters out branches that are `RO` or `NC`, on a read-only
//!   filesystem, without statvfs numbers, or below their minimum free space. `ep*` and
//!   `newest` also need the path (the *parent* of the new entry; callers pass it) to
//!   exist; `msp*` walk up from the path towards `/` until some branch qualifies.
//! - **action** filters out `RO` branches and read-only filesystems, and every policy
//!   acts like its `ep` form: the path must exist.
//! - **search** filters nothing but the path's existence.
//!
//! When no branch qualifies the error is the highest-priority reason any branch was
//! skipped for, EROFS over ENOSPC over ENOENT (see [`PolicyError`]).
//!
//! Each policy family has its own file, as in mergerfs: `all.rs` (`all`, `epall`),
//! `ff.rs` (`ff`, `epff`), `mfs.rs`, `lfs.rs`, `lus.rs` and `pfrd.rs` (each with its
//! `ep` and `msp` forms), `lup.rs`, `rand.rs` (`rand`, `eprand`), `newest.rs` and
//! `erofs.rs`. `filter.rs` holds the category filters they all start from.

mod all;
mod erofs;
mod error;
mod ff;
mod filter;
mod func;
mod lfs;
mod lup;
mod lus;
mod mfs;
mod newest;
mod pfrd;
mod rand;

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use crate::branch::BranchMode;

pub use error::{ParseNameError, PolicyError};
pub use func::{Function, FunctionPolicies};

use filter::{Candidate, Failure};

/// The three kinds of operation a policy can be asked about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Category {
    /// Making new entries: create, mkdir, mknod, symlink.
    Create,
    /// Changing or removing existing entries: chmod, rename, unlink, ...
    Action,
    /// Finding an existing entry to read: getattr, open, readlink, ...
    Search,
}

impl Category {
    /// Every category.
    pub const ALL: [Category; 3] = [Category::Create, Category::Action, Category::Search];

    /// The name used in `category.NAME` options.
    pub fn name(self) -> &'static str {
        match self {
            Category::Create => "create",
            Category::Action => "action",
            Category::Search => "search",
        }
    }

    /// The policy the functions of this category use unless configured otherwise
    /// (mergerfs 2.41 and later).
    pub fn default_policy(self) -> Policy {
        match self {
            Category::Create => Policy::Pfrd,
            Category::Action => Policy::Epall,
            Category::Search => Policy::Ff,
        }
    }
}

impl FromStr for Category {
    type Err = ParseNameError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Category::ALL
            .into_iter()
            .find(|c| c.name() == text)
            .ok_or_else(|| ParseNameError::new("category", text, "create, action, search"))
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A mergerfs policy, by its mergerfs name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Policy {
    /// Every qualifying branch.
    All,
    /// Every qualifying branch where the path exists.
    Epall,
    /// The first qualifying branch where the path exists.
    Epff,
    /// Least free space among branches where the path exists.
    Eplfs,
    /// Least used space among branches where the path exists.
    Eplus,
    /// Most free space among branches where the path exists.
    Epmfs,
    /// Random, weighted by free space, among branches where the path exists.
    Eppfrd,
    /// Uniformly random among branches where the path exists.
    Eprand,
    /// Always fails with EROFS.
    Erofs,
    /// The first qualifying branch.
    Ff,
    /// Least free space.
    Lfs,
    /// Least used space.
    Lus,
    /// Least used percentage of space.
    Lup,
    /// Most free space.
    Mfs,
    /// `eplfs` on the deepest ancestor of the path some branch qualifies for.
    Msplfs,
    /// `eplus` on the deepest ancestor of the path some branch qualifies for.
    Msplus,
    /// `epmfs` on the deepest ancestor of the path some branch qualifies for.
    Mspmfs,
    /// `eppfrd` on the deepest ancestor of the path some branch qualifies for.
    Msppfrd,
    /// The branch where the path has the newest mtime.
    Newest,
    /// Random, weighted by free space ("percentage free random distribution").
    Pfrd,
    /// Uniformly random.
    Rand,
}

/// How a policy picks among the branches that passed the filters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rule {
    All,
    First,
    MostFree,
    LeastFree,
    LeastUsed,
    LeastUsedShare,
    WeightedFree,
    Random,
    Newest,
}

impl Rule {
    /// Whether the rule compares statvfs numbers, so a search must skip branches
    /// that have none.
    fn needs_space(self) -> bool {
        matches!(
            self,
            Rule::MostFree
                | Rule::LeastFree
                | Rule::LeastUsed
                | Rule::LeastUsedShare
                | Rule::WeightedFree
        )
    }

    /// The chosen branch indices; empty only if `candidates` is.
    fn choose(self, candidates: &[Candidate], rng: &mut dyn RandomSource) -> Vec<usize> {
        let one = match self {
            Rule::All => return all::select(candidates),
            Rule::First => ff::select(candidates),
            Rule::MostFree => mfs::select(candidates),
            Rule::LeastFree => lfs::select(candidates),
            Rule::LeastUsed => lus::select(candidates),
            Rule::LeastUsedShare => lup::select(candidates),
            Rule::WeightedFree => pfrd::select(candidates, rng),
            Rule::Random => rand::select(candidates, rng),
            Rule::Newest => newest::select(candidates),
        };
        one.into_iter().collect()
    }
}

/// Which path a create policy requires to exist on a branch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    /// No existence requirement.
    Anywhere,
    /// The path itself must exist.
    ExistingPath,
    /// The deepest ancestor (the path included) for which some branch qualifies.
    MostSharedPath,
}

impl Policy {
    /// Every policy, in alphabetical order.
    pub const ALL: [Policy; 21] = [
        Policy::All,
        Policy::Epall,
        Policy::Epff,
        Policy::Eplfs,
        Policy::Eplus,
        Policy::Epmfs,
        Policy::Eppfrd,
        Policy::Eprand,
        Policy::Erofs,
        Policy::Ff,
        Policy::Lfs,
        Policy::Lup,
        Policy::Lus,
        Policy::Mfs,
        Policy::Msplfs,
        Policy::Msplus,
        Policy::Mspmfs,
        Policy::Msppfrd,
        Policy::Newest,
        Policy::Pfrd,
        Policy::Rand,
    ];

    /// The mergerfs name.
    pub fn name(self) -> &'static str {
        match self {
            Policy::All => "all",
            Policy::Epall => "epall",
            Policy::Epff => "epff",
            Policy::Eplfs => "eplfs",
            Policy::Eplus => "eplus",
            Policy::Epmfs => "epmfs",
            Policy::Eppfrd => "eppfrd",
            Policy::Eprand => "eprand",
            Policy::Erofs => "erofs",
            Policy::Ff => "ff",
            Policy::Lfs => "lfs",
            Policy::Lus => "lus",
            Policy::Lup => "lup",
            Policy::Mfs => "mfs",
            Policy::Msplfs => "msplfs",
            Policy::Msplus => "msplus",
            Policy::Mspmfs => "mspmfs",
            Policy::Msppfrd => "msppfrd",
            Policy::Newest => "newest",
            Policy::Pfrd => "pfrd",
            Policy::Rand => "rand",
        }
    }

    /// Whether the policy keeps new entries on branches that already hold the parent
    /// path; rename and link then avoid creating the target path elsewhere.
    pub fn is_path_preserving(self) -> bool {
        matches!(
            self.plan(),
            Some((_, Scope::ExistingPath | Scope::MostSharedPath))
        ) && self != Policy::Newest
    }

    /// Whether the policy compares free or used space, so a search with it needs the
    /// branches' statvfs numbers (create and action filters always do).
    pub fn compares_space(self) -> bool {
        self.plan().is_some_and(|(rule, _)| rule.needs_space())
    }

    /// The rule and, for creates, the existence requirement; `None` for `erofs`.
    fn plan(self) -> Option<(Rule, Scope)> {
        use Scope::{Anywhere, ExistingPath, MostSharedPath};
        Some(match self {
            Policy::All => (Rule::All, Anywhere),
            Policy::Epall => (Rule::All, ExistingPath),
            Policy::Ff => (Rule::First, Anywhere),
            Policy::Epff => (Rule::First, ExistingPath),
            Policy::Mfs => (Rule::MostFree, Anywhere),
            Policy::Epmfs => (Rule::MostFree, ExistingPath),
            Policy::Mspmfs => (Rule::MostFree, MostSharedPath),
            Policy::Lfs => (Rule::LeastFree, Anywhere),
            Policy::Eplfs => (Rule::LeastFree, ExistingPath),
            Policy::Msplfs => (Rule::LeastFree, MostSharedPath),
            Policy::Lus => (Rule::LeastUsed, Anywhere),
            Policy::Eplus => (Rule::LeastUsed, ExistingPath),
            Policy::Msplus => (Rule::LeastUsed, MostSharedPath),
            Policy::Lup => (Rule::LeastUsedShare, Anywhere),
            Policy::Pfrd => (Rule::WeightedFree, Anywhere),
            Policy::Eppfrd => (Rule::WeightedFree, ExistingPath),
            Policy::Msppfrd => (Rule::WeightedFree, MostSharedPath),
            Policy::Rand => (Rule::Random, Anywhere),
            Policy::Eprand => (Rule::Random, ExistingPath),
            // newest needs an mtime to compare, so the path must exist even for creates.
            Policy::Newest => (Rule::Newest, ExistingPath),
            Policy::Erofs => return None,
        })
    }

    /// Runs the policy for `category` on `path`, a pool path such as `/dir/file`
    /// (for creates, the parent directory of the new entry). Returns the chosen
    /// branch indices into `snapshot.branches`, in branch order; only `all` and
    /// `epall` return more than one.
    pub fn select(
        self,
        category: Category,
        snapshot: &Snapshot<'_>,
        path: &Path,
        rng: &mut dyn RandomSource,
    ) -> Result<Vec<usize>, PolicyError> {
        let Some((rule, scope)) = self.plan() else {
            return erofs::select();
        };
        let scope = match category {
            Category::Create => scope,
            Category::Action | Category::Search => Scope::ExistingPath,
        };
        let mut failure = Failure::default();
        let mut try_path = |path: &Path, must_exist: bool| {
            let candidates = filter::candidates(
                snapshot,
                category,
                path,
                must_exist,
                rule.needs_space(),
                rule == Rule::First,
                &mut failure,
            );
            rule.choose(&candidates, rng)
        };
        let chosen = match scope {
            Scope::Anywhere => try_path(path, false),
            Scope::ExistingPath => try_path(path, true),
            // Any filter failure, not just a missing directory, moves one level up.
            Scope::MostSharedPath => path
                .ancestors()
                .map(|ancestor| try_path(ancestor, true))
                .find(|chosen| !chosen.is_empty())
                .unwrap_or_default(),
        };
        if chosen.is_empty() {
            Err(failure.into_error())
        } else {
            Ok(chosen)
        }
    }
}

impl FromStr for Policy {
    type Err = ParseNameError;

    /// Parses a mergerfs policy name (lower case, exactly as mergerfs spells it).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Policy::ALL
            .into_iter()
            .find(|p| p.name() == text)
            .ok_or_else(|| {
                ParseNameError::new(
                    "policy",
                    text,
                    "all, epall, epff, eplfs, eplus, epmfs, eppfrd, eprand, erofs, ff, lfs, \
                     lup, lus, mfs, msplfs, msplus, mspmfs, msppfrd, newest, pfrd, rand",
                )
            })
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// statvfs numbers of a branch root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FsStat {
    /// Bytes available to unprivileged users (`f_bavail * f_frsize`).
    pub avail: u64,
    /// Bytes in use (`(f_blocks - f_bavail) * f_frsize`).
    pub used: u64,
    /// The filesystem is mounted read-only (`ST_RDONLY`).
    pub read_only: bool,
}

/// What the policies know about one branch, independent of the path asked about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BranchInfo {
    /// The branch mode.
    pub mode: BranchMode,
    /// The minimum free space that applies to the branch (its own or the global one).
    pub min_free_space: u64,
}

/// What the policies learn about a path on one branch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// Modification time in whole seconds; `newest` compares seconds, as mergerfs does.
    pub mtime: i64,
}

/// Answers the policies' questions about the branches when they ask: paths on a
/// branch (lstat semantics: symlinks are not followed) and its free space.
pub trait PathProbe {
    /// The entry at `path` on branch number `branch`, or `None` if there is none.
    fn entry(&self, branch: usize, path: &Path) -> Option<Entry>;

    /// The statvfs numbers of branch `branch`'s filesystem, or `None` if statvfs
    /// failed on its root. Asked only about branches still in the running, after
    /// their mode and the path's existence, so a branch ruled out by those never
    /// costs a statvfs.
    fn space(&self, branch: usize) -> Option<FsStat>;
}

/// Source of randomness for the random policies, injectable so tests are
/// deterministic. Any `FnMut(u64) -> u64` is one.
pub trait RandomSource {
    /// A value uniformly drawn from `0..bound`; `bound` is never zero. Values at or
    /// above `bound` are reduced modulo `bound`.
    fn below(&mut self, bound: u64) -> u64;
}

impl<F: FnMut(u64) -> u64> RandomSource for F {
    fn below(&mut self, bound: u64) -> u64 {
        self(bound)
    }
}

/// The branches a policy chooses from, with the probe for paths on them.
#[derive(Clone, Copy)]
pub struct Snapshot<'a> {
    /// The branches in pool order; results are indices into this slice.
    pub branches: &'a [BranchInfo],
    /// Where path existence and mtimes come from.
    pub probe: &'a dyn PathProbe,
}

#[cfg(test)]
mod tests;
