//! Runs of consecutive numbers, so that damage spread over many positions or blocks
//! is reported as one line per stretch instead of one line per position.

/// Whether `next` continues a run that ended at `last`.
fn continues(last: u32, next: u32) -> bool {
    last.checked_add(1) == Some(next)
}

/// The stretches of consecutive values in `values` (taken in order; a value that
/// does not continue the current stretch starts a new one), as `(first, last)`.
pub fn runs(values: impl IntoIterator<Item = u32>) -> Vec<(u32, u32)> {
    let mut out: Vec<(u32, u32)> = Vec::new();
    for v in values {
        match out.last_mut() {
            Some((_, last)) if continues(*last, v) => *last = v,
            _ => out.push((v, v)),
        }
    }
    out
}

/// Pairs `(block, position)` grouped into stretches where both go up by one:
/// `(first block, first position, count)`.
pub fn paired_runs(pairs: impl IntoIterator<Item = (u32, u32)>) -> Vec<(u32, u32, u32)> {
    let mut out: Vec<(u32, u32, u32)> = Vec::new();
    for (a, b) in pairs {
        match out.last_mut() {
            Some((a0, b0, n)) if continues(*a0 + (*n - 1), a) && continues(*b0 + (*n - 1), b) => {
                *n += 1
            }
            _ => out.push((a, b, 1)),
        }
    }
    out
}

/// `first` or `first-last`.
pub fn shown(first: u32, last: u32) -> String {
    if first == last {
        first.to_string()
    } else {
        format!("{first}-{last}")
    }
}

/// Stretches joined by commas, at most `max` of them and then how many more.
pub fn listed(runs: &[(u32, u32)], max: usize) -> String {
    let mut text: Vec<String> = runs.iter().take(max).map(|&(a, b)| shown(a, b)).collect();
    if runs.len() > max {
        text.push(format!("and {} more stretches", runs.len() - max));
    }
    text.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consecutive_values_make_one_run() {
        assert_eq!(runs([]), vec![]);
        assert_eq!(runs([7]), vec![(7, 7)]);
        assert_eq!(runs([1, 2, 3, 5, 6, 9]), vec![(1, 3), (5, 6), (9, 9)]);
        // Out of order or repeated values start a new run; no overflow at the end.
        assert_eq!(runs([4, 3, 3]), vec![(4, 4), (3, 3), (3, 3)]);
        assert_eq!(runs([u32::MAX, 0]), vec![(u32::MAX, u32::MAX), (0, 0)]);
    }

    #[test]
    fn pairs_run_only_where_both_go_up_by_one() {
        assert_eq!(
            paired_runs([(2, 40), (3, 41), (4, 42), (5, 50), (6, 51), (8, 52)]),
            vec![(2, 40, 3), (5, 50, 2), (8, 52, 1)]
        );
        assert_eq!(
            paired_runs([(u32::MAX, 1), (0, 2)]),
            vec![(u32::MAX, 1, 1), (0, 2, 1)]
        );
    }

    #[test]
    fn runs_are_listed_with_a_limit() {
        assert_eq!(shown(5, 5), "5");
        assert_eq!(shown(5, 9), "5-9");
        assert_eq!(listed(&[(1, 3), (5, 5)], 10), "1-3, 5");
        assert_eq!(
            listed(&[(1, 1), (3, 3), (5, 5)], 2),
            "1, 3, and 1 more stretches"
        );
    }
}
