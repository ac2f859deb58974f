//! `pin-threads`: which CPUs the FUSE threads may run on, with mergerfs's strategy
//! names.
//!
//! mergerfs can run separate pools of threads that read requests (R) and that
//! process them (P). lhfs has one pool whose threads do both, so a strategy applies
//! to that pool as a whole, by what it does with the read threads:
//!
//! | strategy | lhfs's threads |
//! |---|---|
//! | `R1L`, `RP1L`, `R1LP1L` | all on one logical CPU |
//! | `R1P`, `RP1P`, `R1PP1P`, `R1PPSP` | all on one physical core (its hyper-threads) |
//! | `RPSL` | spread over the logical CPUs, one each in turn |
//! | `RPSP` | spread over the physical cores, one each in turn |
//!
//! "One" is the first CPU the daemon may run on (its affinity when started), so a
//! `taskset` around lhfs chooses it. Unset (the default), the kernel places threads.
//!
//! Why it matters: a FUSE request wakes a daemon thread and its answer wakes the
//! caller. When both run on one CPU that costs two context switches; across CPUs it
//! costs two cross-CPU wake-ups, which are slow on virtual machines that halt idle
//! CPUs. One CPU suits one busy caller with small requests (metadata); spreading
//! suits several callers at once.

use std::cell::Cell;
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A `pin-threads` strategy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PinThreads {
    R1L,
    R1P,
    RP1L,
    RP1P,
    R1LP1L,
    R1PP1P,
    RPSL,
    RPSP,
    R1PPSP,
}

/// Where a strategy puts lhfs's threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    OneLogical,
    OnePhysical,
    SpreadLogical,
    SpreadPhysical,
}

impl PinThreads {
    /// Every strategy, as written in options.
    pub const NAMES: &'static [&'static str] = &[
        "R1L", "R1P", "RP1L", "RP1P", "R1LP1L", "R1PP1P", "RPSL", "RPSP", "R1PPSP",
    ];
    const ALL: [PinThreads; 9] = [
        PinThreads::R1L,
        PinThreads::R1P,
        PinThreads::RP1L,
        PinThreads::RP1P,
        PinThreads::R1LP1L,
        PinThreads::R1PP1P,
        PinThreads::RPSL,
        PinThreads::RPSP,
        PinThreads::R1PPSP,
    ];

    pub fn name(self) -> &'static str {
        Self::NAMES[self as usize]
    }

    fn shape(self) -> Shape {
        match self {
            PinThreads::R1L | PinThreads::RP1L | PinThreads::R1LP1L => Shape::OneLogical,
            PinThreads::R1P | PinThreads::RP1P | PinThreads::R1PP1P | PinThreads::R1PPSP => {
                Shape::OnePhysical
            }
            PinThreads::RPSL => Shape::SpreadLogical,
            PinThreads::RPSP => Shape::SpreadPhysical,
        }
    }

    /// Whether every thread gets the same CPUs (so threads may inherit them).
    pub fn is_single(self) -> bool {
        matches!(self.shape(), Shape::OneLogical | Shape::OnePhysical)
    }

    /// The CPU sets for the threads: the n-th thread to serve a request gets set
    /// `n % len`. `allowed` are the CPUs the daemon may use, in order; `core` names
    /// the physical core of a CPU. Empty when `allowed` is.
    pub fn plan(self, allowed: &[usize], core: impl Fn(usize) -> u64) -> Vec<Vec<usize>> {
        let Some(&first) = allowed.first() else {
            return Vec::new();
        };
        match self.shape() {
            Shape::OneLogical => vec![vec![first]],
            Shape::OnePhysical => {
                let home = core(first);
                vec![allowed
                    .iter()
                    .copied()
                    .filter(|&c| core(c) == home)
                    .collect()]
            }
            Shape::SpreadLogical => allowed.iter().map(|&c| vec![c]).collect(),
            Shape::SpreadPhysical => {
                let mut cores: Vec<(u64, Vec<usize>)> = Vec::new();
                for &c in allowed {
                    let id = core(c);
                    match cores.iter_mut().find(|(k, _)| *k == id) {
                        Some((_, cpus)) => cpus.push(c),
                        None => cores.push((id, vec![c])),
                    }
                }
                cores.into_iter().map(|(_, cpus)| cpus).collect()
            }
        }
    }
}

impl fmt::Display for PinThreads {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for PinThreads {
    type Err = ();

    /// A strategy name, in any letter case.
    fn from_str(s: &str) -> Result<Self, ()> {
        PinThreads::ALL
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(s))
            .ok_or(())
    }
}

thread_local! {
    /// Whether this thread already took its CPUs.
    static PINNED: Cell<bool> = const { Cell::new(false) };
}

/// Hands each thread its CPU set on its first request.
#[derive(Debug)]
pub struct Pinner {
    sets: Vec<Vec<usize>>,
    next: AtomicUsize,
}

impl Pinner {
    /// The plan of `mode` for this machine, from the calling thread's affinity and
    /// the CPU topology in sysfs; `None` when there is nothing to pin to.
    pub fn new(mode: PinThreads) -> Option<Pinner> {
        let allowed = allowed_cpus();
        let sets = mode.plan(&allowed, core_id);
        (!sets.is_empty()).then(|| Pinner {
            sets,
            next: AtomicUsize::new(0),
        })
    }

    /// Pins the calling thread to the first set (for threads started after it,
    /// which inherit it).
    pub fn pin_first(&self) -> std::io::Result<()> {
        self.sets.first().map_or(Ok(()), |set| set_affinity(set))
    }

    /// Pins the calling thread to its set the first time it is called on it; later
    /// calls cost a thread-local check.
    pub fn pin_current(&self) -> std::io::Result<()> {
        if PINNED.with(Cell::get) {
            return Ok(());
        }
        PINNED.with(|p| p.set(true));
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        set_affinity(&self.sets[n % self.sets.len()])
    }
}

/// The CPUs the calling thread may run on, in order.
fn allowed_cpus() -> Vec<usize> {
    // SAFETY: an all-zero cpu_set_t is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid cpu_set_t of the size passed.
    let got = unsafe { libc::sched_getaffinity(0, std::mem::size_of_val(&set), &mut set) };
    if got != 0 {
        return Vec::new();
    }
    (0..libc::CPU_SETSIZE as usize)
        // SAFETY: `set` is initialised and the index is below CPU_SETSIZE.
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .collect()
}

/// The physical core of a CPU as (package, core) from sysfs; a CPU whose topology
/// cannot be read counts as its own core.
fn core_id(cpu: usize) -> u64 {
    let read = |name: &str| -> Option<u64> {
        let path = format!("/sys/devices/system/cpu/cpu{cpu}/topology/{name}");
        std::fs::read_to_string(path).ok()?.trim().parse().ok()
    };
    match (read("physical_package_id"), read("core_id")) {
        (Some(package), Some(core)) => (package << 32) | core,
        _ => (1 << 63) | cpu as u64,
    }
}

fn set_affinity(cpus: &[usize]) -> std::io::Result<()> {
    // SAFETY: an all-zero cpu_set_t is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &c in cpus.iter().filter(|&&c| c < libc::CPU_SETSIZE as usize) {
        // SAFETY: the index is below CPU_SETSIZE.
        unsafe { libc::CPU_SET(c, &mut set) };
    }
    // SAFETY: `set` is a valid cpu_set_t of the size passed.
    if unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Four cores with two hyper-threads each, numbered as Linux does on x86:
    /// CPUs 0-3 are the first threads of cores 0-3, CPUs 4-7 their siblings.
    fn core(cpu: usize) -> u64 {
        (cpu % 4) as u64
    }

    #[test]
    fn names_round_trip_in_any_case() {
        for name in PinThreads::NAMES {
            let p: PinThreads = name.parse().unwrap();
            assert_eq!(p.name(), *name);
            assert_eq!(name.to_lowercase().parse::<PinThreads>().unwrap(), p);
        }
        assert!("R2L".parse::<PinThreads>().is_err());
        assert!("".parse::<PinThreads>().is_err());
    }

    #[test]
    fn one_cpu_strategies_use_the_first_allowed_cpu() {
        let allowed = [2, 3, 4, 5, 6, 7];
        for p in [PinThreads::R1L, PinThreads::RP1L, PinThreads::R1LP1L] {
            assert_eq!(p.plan(&allowed, core), vec![vec![2]]);
            assert!(p.is_single());
        }
        for p in [
            PinThreads::R1P,
            PinThreads::RP1P,
            PinThreads::R1PP1P,
            PinThreads::R1PPSP,
        ] {
            assert_eq!(p.plan(&allowed, core), vec![vec![2, 6]]);
            assert!(p.is_single());
        }
    }

    #[test]
    fn spread_strategies_take_each_cpu_or_core_in_turn() {
        let allowed: Vec<usize> = (0..8).collect();
        let logical = PinThreads::RPSL.plan(&allowed, core);
        assert_eq!(logical.len(), 8);
        assert!(logical.iter().enumerate().all(|(i, s)| *s == vec![i]));
        assert_eq!(
            PinThreads::RPSP.plan(&allowed, core),
            vec![vec![0, 4], vec![1, 5], vec![2, 6], vec![3, 7]]
        );
        assert!(!PinThreads::RPSL.is_single() && !PinThreads::RPSP.is_single());
    }

    #[test]
    fn nothing_allowed_means_no_plan() {
        assert!(PinThreads::R1L.plan(&[], core).is_empty());
        assert!(PinThreads::RPSP.plan(&[], core).is_empty());
    }

    #[test]
    fn the_machine_has_an_affinity_to_plan_from() {
        let allowed = allowed_cpus();
        assert!(!allowed.is_empty());
        let pinner = Pinner::new(PinThreads::RPSL).unwrap();
        assert_eq!(pinner.sets.len(), allowed.len());
    }
}
