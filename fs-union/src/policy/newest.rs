//! `newest`: the branch where the path has the most recent mtime (for creates, the
//! parent directory's mtime).

use super::filter::{best, Candidate};

/// Newest mtime; on a tie the last such branch wins, as in mergerfs.
pub(super) fn select(candidates: &[Candidate]) -> Option<usize> {
    best(candidates, |next, pick| next.mtime >= pick.mtime)
}
