//! The per-category branch filters every policy starts with, and the priority-based
//! error they leave behind when nothing passes.

use std::path::Path;

use super::{Category, PolicyError, Snapshot};
use crate::branch::BranchMode;

/// A branch that passed the filters, with the numbers the rules compare.
#[derive(Debug, Clone, Copy)]
pub(super) struct Candidate {
    /// Index into the snapshot's branches.
    pub index: usize,
    /// Available bytes; zero when the rule does not need space numbers.
    pub avail: u64,
    /// Used bytes; zero when the rule does not need space numbers.
    pub used: u64,
    /// mtime of the path, when its existence was checked.
    pub mtime: Option<i64>,
}

/// The reason to report if no branch qualifies: the highest-priority one seen.
#[derive(Debug, Default)]
pub(super) struct Failure(Option<PolicyError>);

impl Failure {
    fn note(&mut self, reason: PolicyError) {
        self.0 = Some(self.0.map_or(reason, |seen| seen.max(reason)));
    }

    /// ENOENT when nothing was skipped (an empty pool).
    pub(super) fn into_error(self) -> PolicyError {
        self.0.unwrap_or(PolicyError::NotFound)
    }
}

/// The branches of `snapshot` that qualify for `category` on `path`, in branch order.
///
/// Checks run in mergerfs's order and each skipped branch contributes only the first
/// reason it fails: mode, then path existence (if `must_exist`), then statvfs, then a
/// read-only filesystem, then minimum free space. So an `NC` branch lacking the path
/// counts as EROFS, and a branch lacking the path on a read-only filesystem as ENOENT.
/// With `first_only` the scan stops at the first branch that passes.
pub(super) fn candidates(
    snapshot: &Snapshot<'_>,
    category: Category,
    path: &Path,
    must_exist: bool,
    needs_space: bool,
    first_only: bool,
    failure: &mut Failure,
) -> Vec<Candidate> {
    let mut passed = Vec::new();
    for (index, branch) in snapshot.branches.iter().enumerate() {
        let barred = match category {
            Category::Create => branch.mode != BranchMode::RW,
            Category::Action => branch.mode == BranchMode::RO,
            Category::Search => false,
        };
        if barred {
            failure.note(PolicyError::ReadOnly);
            continue;
        }
        let mut mtime = None;
        if must_exist {
            match snapshot.probe.entry(index, path) {
                Some(entry) => mtime = Some(entry.mtime),
                None => {
                    failure.note(PolicyError::NotFound);
                    continue;
                }
            }
        }
        // Searches only look at statvfs when the rule compares space.
        let (avail, used) = if category == Category::Search && !needs_space {
            (0, 0)
        } else {
            let Some(fs) = snapshot.probe.space(index) else {
                failure.note(PolicyError::NotFound);
                continue;
            };
            if category != Category::Search && fs.read_only {
                failure.note(PolicyError::ReadOnly);
                continue;
            }
            if category == Category::Create && fs.avail < branch.min_free_space {
                failure.note(PolicyError::NoSpace);
                continue;
            }
            (fs.avail, fs.used)
        };
        passed.push(Candidate {
            index,
            avail,
            used,
            mtime,
        });
        if first_only {
            // The rule takes the first that passes: the later branches need no probe.
            break;
        }
    }
    passed
}

/// The candidate a comparison prefers: scanning in branch order, a later candidate
/// replaces the current pick when `replaces(later, current)` holds. A `>=`-style test
/// makes the last of equal candidates win, a strict one the first.
pub(super) fn best(
    candidates: &[Candidate],
    replaces: impl Fn(&Candidate, &Candidate) -> bool,
) -> Option<usize> {
    let mut iter = candidates.iter();
    let first = iter.next()?;
    Some(
        iter.fold(
            first,
            |pick, next| {
                if replaces(next, pick) {
                    next
                } else {
                    pick
                }
            },
        )
        .index,
    )
}
