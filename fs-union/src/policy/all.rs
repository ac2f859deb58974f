//! `all` and `epall`: every qualifying branch. Creates of files use the first one;
//! mkdir, mknod and symlink, and every action, use them all.

use super::filter::Candidate;

/// Every candidate, in branch order.
pub(super) fn select(candidates: &[Candidate]) -> Vec<usize> {
    candidates.iter().map(|c| c.index).collect()
}
