//! `pfrd`, `eppfrd` and `msppfrd`: "percentage free random distribution", one branch
//! drawn at random with probability proportional to its available space, so data
//! spreads over all branches while bigger and emptier ones receive more.

use super::filter::Candidate;
use super::RandomSource;

/// A candidate drawn with weight `avail`. If no candidate has any space the draw is
/// uniform, since proportional weights are then undefined.
pub(super) fn select(candidates: &[Candidate], rng: &mut dyn RandomSource) -> Option<usize> {
    let total: u128 = candidates.iter().map(|c| u128::from(c.avail)).sum();
    // Many huge branches can sum past 64 bits; dropping the same low bits from every
    // weight keeps the proportions and lets the draw fit a u64.
    let shift = 128 - total.leading_zeros();
    let shift = shift.saturating_sub(64);
    let weight = |c: &Candidate| c.avail >> shift;
    let scaled: u64 = candidates.iter().map(weight).sum();
    if scaled == 0 {
        return super::rand::select(candidates, rng);
    }
    let mut drawn = rng.below(scaled) % scaled;
    for c in candidates {
        if drawn < weight(c) {
            return Some(c.index);
        }
        drawn -= weight(c);
    }
    candidates.last().map(|c| c.index)
}
