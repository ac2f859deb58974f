//! `lus`, `eplus` and `msplus`: the branch with the least used space.

use super::filter::{best, Candidate};

/// Least used space; on a tie the first such branch wins, as in mergerfs.
pub(super) fn select(candidates: &[Candidate]) -> Option<usize> {
    best(candidates, |next, pick| next.used < pick.used)
}
