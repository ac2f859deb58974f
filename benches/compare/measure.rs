//! Repetition and statistics: runs the variants of one row alternated
//! (A B A B ...), so that drift from other work on a shared host hits every
//! variant alike, and reduces the samples to median, min and max.
//!
//! The statistics are pure functions; the runner only orders the calls. It never
//! interprets what a value means (time or throughput): that is the row's business.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context, Result};
use serde::Serialize;

use crate::interrupt;

/// What one run of one variant measured: values by metric name (a row with one
/// figure uses one metric; `snapraid -T` yields one per parity operation), and
/// optional text notes by metric, such as the kernel that produced the figure.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Observation {
    pub values: BTreeMap<String, f64>,
    pub notes: BTreeMap<String, String>,
}

/// A named way of doing the row's work; `run` performs one repetition.
pub struct Variant<'a> {
    pub name: String,
    pub run: Box<dyn FnMut() -> Result<Observation> + 'a>,
}

impl<'a> Variant<'a> {
    pub fn new(name: impl Into<String>, run: impl FnMut() -> Result<Observation> + 'a) -> Self {
        Variant {
            name: name.into(),
            run: Box::new(run),
        }
    }
}

/// All samples of one variant, in run order, with every distinct note seen.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Samples {
    pub name: String,
    pub values: BTreeMap<String, Vec<f64>>,
    pub notes: BTreeMap<String, BTreeSet<String>>,
}

impl Samples {
    /// The summary of one metric, or `None` if the variant never reported it.
    pub fn summary(&self, metric: &str) -> Option<Summary> {
        self.values.get(metric).and_then(|v| summarize(v))
    }

    /// The notes of one metric joined with `/` (several only if runs disagreed).
    pub fn note(&self, metric: &str) -> Option<String> {
        self.notes
            .get(metric)
            .map(|n| n.iter().cloned().collect::<Vec<_>>().join("/"))
    }
}

/// Runs every variant `reps` times, alternating A B A B ..., and stops early with an
/// error on Ctrl-C or on the first failing run (its error names the variant).
pub fn run_alternated(variants: &mut [Variant<'_>], reps: usize) -> Result<Vec<Samples>> {
    run_rotated(variants, reps, |_| Ok(()), false)
}

/// Like `run_alternated`, for variants that share a state prepared once per
/// repetition: `prepare(rep)` runs before each repetition, and with `swap` the order
/// reverses on every other one (A B, B A, A B ...), so that no variant always runs
/// first after the preparation (when, for instance, the page cache differs).
pub fn run_rotated(
    variants: &mut [Variant<'_>],
    reps: usize,
    mut prepare: impl FnMut(usize) -> Result<()>,
    swap: bool,
) -> Result<Vec<Samples>> {
    let mut all: Vec<Samples> = variants
        .iter()
        .map(|v| Samples {
            name: v.name.clone(),
            ..Samples::default()
        })
        .collect();
    for rep in 0..reps {
        interrupt::check()?;
        prepare(rep).with_context(|| format!("preparing repetition {}", rep + 1))?;
        let mut order: Vec<usize> = (0..variants.len()).collect();
        if swap && rep % 2 == 1 {
            order.reverse();
        }
        for i in order {
            interrupt::check()?;
            let (variant, samples) = (&mut variants[i], &mut all[i]);
            let obs = (variant.run)().with_context(|| {
                format!("variant {} failed in repetition {}", variant.name, rep + 1)
            })?;
            for (metric, value) in obs.values {
                samples.values.entry(metric).or_default().push(value);
            }
            for (metric, note) in obs.notes {
                samples.notes.entry(metric).or_default().insert(note);
            }
        }
    }
    Ok(all)
}

/// Throughput in MB/s (10^6 bytes per second); not finite when `secs` is not
/// positive, so that `summarize` drops it instead of reporting a nonsense figure.
pub fn mb_per_s(bytes: u64, secs: f64) -> f64 {
    if secs > 0.0 {
        bytes as f64 / secs / 1e6
    } else {
        f64::NAN
    }
}

/// Median, minimum and maximum of a set of samples.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Summary {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub n: usize,
}

/// Summarises the finite samples; `None` when there are none.
pub fn summarize(samples: &[f64]) -> Option<Summary> {
    let mut sorted: Vec<f64> = samples.iter().copied().filter(|v| v.is_finite()).collect();
    if sorted.is_empty() {
        return None;
    }
    sorted.sort_by(f64::total_cmp);
    Some(Summary {
        median: median_of_sorted(&sorted),
        min: sorted[0],
        max: sorted[sorted.len() - 1],
        n: sorted.len(),
    })
}

/// The median of sorted, non-empty samples; the mean of the middle two for even counts.
fn median_of_sorted(sorted: &[f64]) -> f64 {
    let mid = sorted.len() / 2;
    if sorted.len() % 2 == 1 {
        sorted[mid]
    } else {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    }
}

/// `value / baseline`, or `None` when the ratio would be meaningless (zero or
/// non-finite baseline).
pub fn ratio(value: f64, baseline: f64) -> Option<f64> {
    let r = value / baseline;
    (baseline != 0.0 && r.is_finite()).then_some(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_of_odd_and_even_counts() {
        let s = summarize(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.median, s.min, s.max, s.n), (2.0, 1.0, 3.0, 3));
        let s = summarize(&[4.0, 1.0, 3.0, 2.0]).unwrap();
        assert_eq!((s.median, s.min, s.max, s.n), (2.5, 1.0, 4.0, 4));
        let s = summarize(&[7.0]).unwrap();
        assert_eq!((s.median, s.min, s.max), (7.0, 7.0, 7.0));
    }

    #[test]
    fn summary_ignores_non_finite_and_empty() {
        assert_eq!(summarize(&[]), None);
        assert_eq!(summarize(&[f64::NAN]), None);
        let s = summarize(&[f64::INFINITY, 5.0, f64::NAN, 1.0]).unwrap();
        assert_eq!((s.median, s.n), (3.0, 2));
    }

    #[test]
    fn ratio_guards_against_zero() {
        assert_eq!(ratio(3.0, 2.0), Some(1.5));
        assert_eq!(ratio(3.0, 0.0), None);
        assert_eq!(ratio(0.0, 0.0), None);
        assert_eq!(ratio(f64::NAN, 1.0), None);
    }

    #[test]
    fn runs_alternate_and_collect_notes() {
        let order = std::cell::RefCell::new(Vec::new());
        let obs = |v: f64, note: &str| Observation {
            values: BTreeMap::from([("x".to_string(), v)]),
            notes: BTreeMap::from([("x".to_string(), note.to_string())]),
        };
        let mut a_count = 0.0;
        let mut variants = vec![
            Variant::new("A", || {
                order.borrow_mut().push("A");
                a_count += 1.0;
                Ok(obs(a_count, "k1"))
            }),
            Variant::new("B", || {
                order.borrow_mut().push("B");
                Ok(obs(
                    10.0,
                    if order.borrow().len() > 2 { "k3" } else { "k2" },
                ))
            }),
        ];
        let samples = run_alternated(&mut variants, 3).unwrap();
        drop(variants);
        assert_eq!(*order.borrow(), ["A", "B", "A", "B", "A", "B"]);
        assert_eq!(samples[0].values["x"], [1.0, 2.0, 3.0]);
        assert_eq!(samples[0].summary("x").unwrap().median, 2.0);
        assert_eq!(samples[0].note("x").as_deref(), Some("k1"));
        assert_eq!(samples[1].note("x").as_deref(), Some("k2/k3"));
        assert_eq!(samples[1].summary("y"), None);
    }

    #[test]
    fn rotated_runs_prepare_each_repetition_and_swap_the_order() {
        let log = std::cell::RefCell::new(Vec::new());
        let value = |v: f64| Observation {
            values: BTreeMap::from([("x".to_string(), v)]),
            notes: BTreeMap::new(),
        };
        let mut variants = vec![
            Variant::new("A", || {
                log.borrow_mut().push("A".to_string());
                Ok(value(1.0))
            }),
            Variant::new("B", || {
                log.borrow_mut().push("B".to_string());
                Ok(value(2.0))
            }),
        ];
        let prepare = |rep: usize| {
            log.borrow_mut().push(format!("prep{rep}"));
            Ok(())
        };
        let samples = run_rotated(&mut variants, 3, prepare, true).unwrap();
        drop(variants);
        assert_eq!(
            *log.borrow(),
            ["prep0", "A", "B", "prep1", "B", "A", "prep2", "A", "B"]
        );
        // Samples stay with their variant whatever the order.
        assert_eq!(samples[0].name, "A");
        assert_eq!(samples[0].values["x"], [1.0, 1.0, 1.0]);
        assert_eq!(samples[1].values["x"], [2.0, 2.0, 2.0]);

        let mut failing = vec![Variant::new("A", || Ok(value(1.0)))];
        let err = run_rotated(&mut failing, 2, |_| anyhow::bail!("no space"), true).unwrap_err();
        assert!(format!("{err:#}").contains("preparing repetition 1: no space"));
    }

    #[test]
    fn throughput_is_mb_per_second() {
        assert_eq!(mb_per_s(3_000_000, 2.0), 1.5);
        assert_eq!(mb_per_s(1 << 30, 1.0), 1073.741824);
        assert!(mb_per_s(5, 0.0).is_nan());
        assert!(mb_per_s(5, -1.0).is_nan());
        assert_eq!(summarize(&[mb_per_s(5, 0.0)]), None);
    }

    #[test]
    fn a_failing_run_names_the_variant() {
        let mut variants = vec![Variant::new("broken", || anyhow::bail!("boom"))];
        let err = run_alternated(&mut variants, 2).unwrap_err();
        assert!(format!("{err:#}").contains("variant broken failed in repetition 1"));
    }
}
