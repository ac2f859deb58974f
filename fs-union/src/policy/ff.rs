//! `ff` and `epff`: the first qualifying branch in branch order.

use super::filter::Candidate;

/// The first candidate.
pub(super) fn select(candidates: &[Candidate]) -> Option<usize> {
    candidates.first().map(|c| c.index)
}
