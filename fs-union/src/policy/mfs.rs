//! `mfs`, `epmfs` and `mspmfs`: the branch with the most available space.

use super::filter::{best, Candidate};

/// Most available space; on a tie the last such branch wins, as in mergerfs.
pub(super) fn select(candidates: &[Candidate]) -> Option<usize> {
    best(candidates, |next, pick| next.avail >= pick.avail)
}
