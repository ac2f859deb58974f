//! `rand` and `eprand`: one branch drawn uniformly from what `all` / `epall` would
//! return.

use super::filter::Candidate;
use super::RandomSource;

/// A uniformly drawn candidate.
pub(super) fn select(candidates: &[Candidate], rng: &mut dyn RandomSource) -> Option<usize> {
    let count = u64::try_from(candidates.len()).ok().filter(|&n| n > 0)?;
    let drawn = rng.below(count) % count;
    usize::try_from(drawn)
        .ok()
        .and_then(|i| candidates.get(i))
        .map(|c| c.index)
}
