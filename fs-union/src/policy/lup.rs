//! `lup`: the branch with the least used percentage, `used / (used + avail)`, so
//! branches of different sizes fill at the same rate.

use super::filter::{best, Candidate};

/// Least used share; on a tie the first such branch wins. Shares are compared by
/// cross-multiplication in 128 bits, exact where a float would round.
pub(super) fn select(candidates: &[Candidate]) -> Option<usize> {
    best(candidates, |next, pick| {
        let (next_used, next_total) = share(next);
        let (pick_used, pick_total) = share(pick);
        next_used * pick_total < pick_used * next_total
    })
}

/// The used share as a fraction. A filesystem reporting no space at all counts as
/// full, so it is never preferred over one that has room.
fn share(c: &Candidate) -> (u128, u128) {
    let total = u128::from(c.used) + u128::from(c.avail);
    if total == 0 {
        (1, 1)
    } else {
        (u128::from(c.used), total)
    }
}
