//! `lfs`, `eplfs` and `msplfs`: the branch with the least available space, to fill
//! branches one after another.

use super::filter::{best, Candidate};

/// Least available space; on a tie the last such branch wins, as in mergerfs.
pub(super) fn select(candidates: &[Candidate]) -> Option<usize> {
    best(candidates, |next, pick| next.avail <= pick.avail)
}
