//! Policy behaviour on hand-built snapshots: the full policy x category matrix,
//! filters, error precedence, tie-breaks, the `msp` walk and the random policies.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::*;
use crate::branch::BranchMode::{NC, RO, RW};

/// A fake pool: branch infos and statvfs numbers, plus the paths present on each
/// branch.
struct Pool {
    branches: Vec<TestBranch>,
    entries: HashMap<(usize, PathBuf), i64>,
    /// The branches whose space was asked, in order.
    asked: RefCell<Vec<usize>>,
}

struct TestBranch {
    info: BranchInfo,
    fs: Option<FsStat>,
}

impl PathProbe for Pool {
    fn entry(&self, branch: usize, path: &Path) -> Option<Entry> {
        // Every branch root exists.
        if path == Path::new("/") {
            return Some(Entry { mtime: 0 });
        }
        self.entries
            .get(&(branch, path.to_path_buf()))
            .map(|&mtime| Entry { mtime })
    }

    fn space(&self, branch: usize) -> Option<FsStat> {
        self.asked.borrow_mut().push(branch);
        self.branches.get(branch).and_then(|b| b.fs)
    }
}

impl Pool {
    fn new() -> Self {
        Pool {
            branches: Vec::new(),
            entries: HashMap::new(),
            asked: RefCell::new(Vec::new()),
        }
    }

    /// Adds a branch with `avail` and `used` bytes and no minimum free space.
    fn branch(mut self, mode: BranchMode, avail: u64, used: u64) -> Self {
        self.branches.push(TestBranch {
            info: BranchInfo {
                mode,
                min_free_space: 0,
            },
            fs: Some(FsStat {
                avail,
                used,
                read_only: false,
            }),
        });
        self
    }

    /// Changes the last added branch.
    fn last(mut self, change: impl FnOnce(&mut TestBranch)) -> Self {
        if let Some(b) = self.branches.last_mut() {
            change(b);
        }
        self
    }

    /// Puts `path` on the last added branch with `mtime`.
    fn with(mut self, path: &str, mtime: i64) -> Self {
        let index = self.branches.len() - 1;
        self.entries.insert((index, PathBuf::from(path)), mtime);
        self
    }

    fn run_with(
        &self,
        policy: Policy,
        category: Category,
        path: &str,
        rng: &mut dyn RandomSource,
    ) -> Result<Vec<usize>, PolicyError> {
        let infos: Vec<BranchInfo> = self.branches.iter().map(|b| b.info).collect();
        let snapshot = Snapshot {
            branches: &infos,
            probe: self,
        };
        policy.select(category, &snapshot, Path::new(path), rng)
    }

    /// Runs with a generator that always draws the lowest value.
    fn run(
        &self,
        policy: Policy,
        category: Category,
        path: &str,
    ) -> Result<Vec<usize>, PolicyError> {
        self.run_with(policy, category, path, &mut |_| 0)
    }
}

fn read_only_fs(b: &mut TestBranch) {
    if let Some(fs) = &mut b.fs {
        fs.read_only = true;
    }
}

fn no_statvfs(b: &mut TestBranch) {
    b.fs = None;
}

fn min_free(bytes: u64) -> impl FnOnce(&mut TestBranch) {
    move |b| b.info.min_free_space = bytes
}

/// Five branches that make every policy pick differently per category. `/d` is on
/// branches 0, 2, 3 and 4 but not 1.
///
/// | # | mode | avail | used | `/d` mtime |
/// |---|------|-------|------|------------|
/// | 0 | RW   | 100   | 900  | 10         |
/// | 1 | RW   | 500   | 100  | -          |
/// | 2 | RW   | 300   | 300  | 30         |
/// | 3 | NC   | 900   | 10   | 40         |
/// | 4 | RO   | 1000  | 0    | 50         |
fn mixed() -> Pool {
    Pool::new()
        .branch(RW, 100, 900)
        .with("/d", 10)
        .branch(RW, 500, 100)
        .branch(RW, 300, 300)
        .with("/d", 30)
        .branch(NC, 900, 10)
        .with("/d", 40)
        .branch(RO, 1000, 0)
        .with("/d", 50)
}

/// The chosen branches, or `None` for EROFS.
type Expected = Option<&'static [usize]>;

/// Expected results on [`mixed`] for `/d` with the lowest random draw, as
/// (policy, create, action, search). `None` means EROFS.
const MATRIX: [(Policy, Expected, Expected, Expected); 21] = [
    // Create: RW branches 0, 1, 2 qualify; with the path only 0 and 2.
    // Action: 0, 1, 2, 3 qualify; with the path 0, 2, 3. Search: with the path 0, 2, 3, 4.
    (
        Policy::All,
        Some(&[0, 1, 2]),
        Some(&[0, 2, 3]),
        Some(&[0, 2, 3, 4]),
    ),
    (
        Policy::Epall,
        Some(&[0, 2]),
        Some(&[0, 2, 3]),
        Some(&[0, 2, 3, 4]),
    ),
    (Policy::Ff, Some(&[0]), Some(&[0]), Some(&[0])),
    (Policy::Epff, Some(&[0]), Some(&[0]), Some(&[0])),
    (Policy::Mfs, Some(&[1]), Some(&[3]), Some(&[4])),
    (Policy::Epmfs, Some(&[2]), Some(&[3]), Some(&[4])),
    (Policy::Mspmfs, Some(&[2]), Some(&[3]), Some(&[4])),
    (Policy::Lfs, Some(&[0]), Some(&[0]), Some(&[0])),
    (Policy::Eplfs, Some(&[0]), Some(&[0]), Some(&[0])),
    (Policy::Msplfs, Some(&[0]), Some(&[0]), Some(&[0])),
    (Policy::Lus, Some(&[1]), Some(&[3]), Some(&[4])),
    (Policy::Eplus, Some(&[2]), Some(&[3]), Some(&[4])),
    (Policy::Msplus, Some(&[2]), Some(&[3]), Some(&[4])),
    // Shares: 0 = 90 %, 1 = 17 %, 2 = 50 %, 3 = 1 %, 4 = 0 %.
    (Policy::Lup, Some(&[1]), Some(&[3]), Some(&[4])),
    (Policy::Pfrd, Some(&[0]), Some(&[0]), Some(&[0])),
    (Policy::Eppfrd, Some(&[0]), Some(&[0]), Some(&[0])),
    (Policy::Msppfrd, Some(&[0]), Some(&[0]), Some(&[0])),
    (Policy::Rand, Some(&[0]), Some(&[0]), Some(&[0])),
    (Policy::Eprand, Some(&[0]), Some(&[0]), Some(&[0])),
    (Policy::Newest, Some(&[2]), Some(&[3]), Some(&[4])),
    (Policy::Erofs, None, None, None),
];

fn expect(expected: Expected) -> Result<Vec<usize>, PolicyError> {
    expected.map(<[usize]>::to_vec).ok_or(PolicyError::ReadOnly)
}

#[test]
fn matrix_covers_every_policy() {
    for policy in Policy::ALL {
        assert!(
            MATRIX.iter().any(|row| row.0 == policy),
            "{policy} missing from the matrix"
        );
    }
}

#[test]
fn every_policy_in_every_category() {
    let pool = mixed();
    for (policy, create, action, search) in MATRIX {
        for (category, expected) in [
            (Category::Create, create),
            (Category::Action, action),
            (Category::Search, search),
        ] {
            assert_eq!(
                pool.run(policy, category, "/d"),
                expect(expected),
                "{policy} / {category}"
            );
        }
    }
}

#[test]
fn random_policies_follow_the_draw() {
    // With the highest draw the random policies pick the last qualifying branch.
    let pool = mixed();
    let mut highest = |bound: u64| bound - 1;
    for (policy, create, action, search) in [
        (Policy::Rand, 2, 3, 4),
        (Policy::Eprand, 2, 3, 4),
        (Policy::Pfrd, 2, 3, 4),
        (Policy::Eppfrd, 2, 3, 4),
        (Policy::Msppfrd, 2, 3, 4),
    ] {
        for (category, expected) in [
            (Category::Create, create),
            (Category::Action, action),
            (Category::Search, search),
        ] {
            assert_eq!(
                pool.run_with(policy, category, "/d", &mut highest),
                Ok(vec![expected]),
                "{policy} / {category}"
            );
        }
    }
}

#[test]
fn non_ep_creates_ignore_the_path_but_action_and_search_need_it() {
    let pool = mixed();
    // Nothing has /missing: creates that do not need the path still place it.
    for policy in [
        Policy::All,
        Policy::Ff,
        Policy::Mfs,
        Policy::Lfs,
        Policy::Lus,
    ] {
        assert!(
            pool.run(policy, Category::Create, "/missing").is_ok(),
            "{policy}"
        );
        assert_eq!(
            pool.run(policy, Category::Action, "/missing"),
            Err(PolicyError::ReadOnly),
            "{policy}: action skips the RO branch first"
        );
        assert_eq!(
            pool.run(policy, Category::Search, "/missing"),
            Err(PolicyError::NotFound),
            "{policy}"
        );
    }
    for policy in [Policy::Epff, Policy::Epmfs, Policy::Newest, Policy::Eprand] {
        // The NC and RO branches are skipped for their mode first: EROFS wins.
        assert_eq!(
            pool.run(policy, Category::Create, "/missing"),
            Err(PolicyError::ReadOnly),
            "{policy}"
        );
    }
}

#[test]
fn error_precedence_erofs_over_enospc_over_enoent() {
    let all_full = Pool::new()
        .branch(RW, 10, 0)
        .last(min_free(100))
        .branch(RW, 10, 0)
        .last(min_free(100));
    assert_eq!(
        all_full.run(Policy::Mfs, Category::Create, "/"),
        Err(PolicyError::NoSpace)
    );

    let all_nc = Pool::new().branch(NC, 10, 0).branch(NC, 10, 0);
    assert_eq!(
        all_nc.run(Policy::Mfs, Category::Create, "/"),
        Err(PolicyError::ReadOnly)
    );

    let missing = Pool::new().branch(RW, 10, 0).branch(RW, 10, 0);
    assert_eq!(
        missing.run(Policy::Epmfs, Category::Create, "/gone"),
        Err(PolicyError::NotFound)
    );

    // Mixed reasons: the priority decides, not the branch order.
    let full = |p: Pool| p.branch(RW, 10, 0).with("/d", 0).last(min_free(100));
    let nc = |p: Pool| p.branch(NC, 10, 0).with("/d", 0);
    let absent = |p: Pool| p.branch(RW, 10, 0);
    for pool in [nc(full(Pool::new())), full(nc(Pool::new()))] {
        assert_eq!(
            pool.run(Policy::Epff, Category::Create, "/d"),
            Err(PolicyError::ReadOnly)
        );
    }
    for pool in [absent(full(Pool::new())), full(absent(Pool::new()))] {
        assert_eq!(
            pool.run(Policy::Epff, Category::Create, "/d"),
            Err(PolicyError::NoSpace)
        );
    }
    let ro_fs = |p: Pool| p.branch(RW, 10, 0).with("/d", 0).last(read_only_fs);
    for pool in [ro_fs(full(Pool::new())), full(ro_fs(Pool::new()))] {
        assert_eq!(
            pool.run(Policy::Epff, Category::Create, "/d"),
            Err(PolicyError::ReadOnly)
        );
    }
}

#[test]
fn each_branch_reports_only_its_first_failed_check() {
    // NC is checked before the path: EROFS although the path is missing too.
    let nc_absent = Pool::new().branch(NC, 10, 0);
    assert_eq!(
        nc_absent.run(Policy::Epff, Category::Create, "/d"),
        Err(PolicyError::ReadOnly)
    );
    // The path is checked before the filesystem: ENOENT although it is read-only.
    let ro_absent = Pool::new().branch(RW, 10, 0).last(read_only_fs);
    assert_eq!(
        ro_absent.run(Policy::Epff, Category::Create, "/d"),
        Err(PolicyError::NotFound)
    );
    // Read-only is checked before space: EROFS although it is also full.
    let ro_full = Pool::new()
        .branch(RW, 10, 0)
        .last(read_only_fs)
        .last(min_free(100));
    assert_eq!(
        ro_full.run(Policy::Ff, Category::Create, "/"),
        Err(PolicyError::ReadOnly)
    );
}

#[test]
fn the_empty_pool_is_enoent() {
    let empty = Pool::new();
    for category in Category::ALL {
        assert_eq!(
            empty.run(Policy::Ff, category, "/"),
            Err(PolicyError::NotFound)
        );
    }
}

#[test]
fn create_filters() {
    // Branch 0 is skipped for each reason in turn; branch 1 always qualifies.
    type AddBranch = fn(Pool) -> Pool;
    let cases: [(&str, AddBranch); 5] = [
        ("RO", |p| p.branch(RO, 50, 0)),
        ("NC", |p| p.branch(NC, 50, 0)),
        ("read-only fs", |p| p.branch(RW, 50, 0).last(read_only_fs)),
        ("no statvfs", |p| p.branch(RW, 50, 0).last(no_statvfs)),
        ("below min free", |p| p.branch(RW, 50, 0).last(min_free(51))),
    ];
    for (why, first) in cases {
        let pool = first(Pool::new()).branch(RW, 10, 0);
        assert_eq!(
            pool.run(Policy::Ff, Category::Create, "/"),
            Ok(vec![1]),
            "{why}"
        );
        assert_eq!(
            pool.run(Policy::All, Category::Create, "/"),
            Ok(vec![1]),
            "{why}"
        );
    }
    // Exactly the minimum free space is enough.
    let at_minimum = Pool::new().branch(RW, 50, 0).last(min_free(50));
    assert_eq!(
        at_minimum.run(Policy::Ff, Category::Create, "/"),
        Ok(vec![0])
    );
}

#[test]
fn action_filters() {
    let pool = Pool::new()
        .branch(RO, 50, 0)
        .with("/f", 0)
        .branch(RW, 50, 0)
        .with("/f", 0)
        .last(read_only_fs)
        .branch(RW, 50, 0)
        .with("/f", 0)
        .last(no_statvfs)
        .branch(NC, 50, 0)
        .with("/f", 0)
        .branch(RW, 50, 0)
        .with("/f", 0)
        .last(min_free(1000));
    // NC may be changed, and minimum free space does not apply to actions.
    assert_eq!(
        pool.run(Policy::Epall, Category::Action, "/f"),
        Ok(vec![3, 4])
    );
    let only_ro = Pool::new().branch(RO, 50, 0).with("/f", 0);
    assert_eq!(
        only_ro.run(Policy::Epall, Category::Action, "/f"),
        Err(PolicyError::ReadOnly)
    );
}

#[test]
fn search_filters_only_on_existence() {
    let pool = Pool::new()
        .branch(RO, 50, 0)
        .with("/f", 0)
        .last(read_only_fs)
        .branch(NC, 50, 0)
        .with("/f", 0)
        .last(min_free(1000))
        .branch(RW, 50, 0)
        .with("/f", 0)
        .last(no_statvfs)
        .branch(RW, 50, 0);
    assert_eq!(
        pool.run(Policy::All, Category::Search, "/f"),
        Ok(vec![0, 1, 2])
    );
    assert_eq!(pool.run(Policy::Ff, Category::Search, "/f"), Ok(vec![0]));
    // Space-comparing searches cannot rank a branch without statvfs numbers.
    assert_eq!(pool.run(Policy::Lfs, Category::Search, "/f"), Ok(vec![1]));
}

#[test]
fn tie_breaks() {
    let equal = Pool::new()
        .branch(RW, 100, 100)
        .with("/d", 7)
        .branch(RW, 100, 100)
        .with("/d", 7)
        .branch(RW, 100, 100)
        .with("/d", 7);
    for category in Category::ALL {
        let last = Ok(vec![2]);
        let first = Ok(vec![0]);
        assert_eq!(
            equal.run(Policy::Mfs, category, "/d"),
            last,
            "mfs {category}"
        );
        assert_eq!(
            equal.run(Policy::Lfs, category, "/d"),
            last,
            "lfs {category}"
        );
        assert_eq!(
            equal.run(Policy::Newest, category, "/d"),
            last,
            "newest {category}"
        );
        assert_eq!(
            equal.run(Policy::Ff, category, "/d"),
            first,
            "ff {category}"
        );
        assert_eq!(
            equal.run(Policy::Lus, category, "/d"),
            first,
            "lus {category}"
        );
        assert_eq!(
            equal.run(Policy::Lup, category, "/d"),
            first,
            "lup {category}"
        );
    }
    // Equal shares of different sizes: 50 / 100 and 100 / 200.
    let shares = Pool::new()
        .branch(RW, 50, 50)
        .branch(RW, 100, 100)
        .branch(RW, 100, 101);
    assert_eq!(shares.run(Policy::Lup, Category::Create, "/"), Ok(vec![0]));
}

#[test]
fn lup_compares_shares_not_bytes() {
    // Branch 0 has less used space but a larger used share.
    let pool = Pool::new().branch(RW, 10, 90).branch(RW, 900, 100);
    assert_eq!(pool.run(Policy::Lus, Category::Create, "/"), Ok(vec![0]));
    assert_eq!(pool.run(Policy::Lup, Category::Create, "/"), Ok(vec![1]));
    // A filesystem reporting no space at all is not preferred.
    let empty_fs = Pool::new().branch(RW, 0, 0).branch(RW, 1, 99);
    assert_eq!(
        empty_fs.run(Policy::Lup, Category::Create, "/"),
        Ok(vec![1])
    );
}

#[test]
fn newest_compares_the_path_mtime() {
    let pool = Pool::new()
        .branch(RW, 10, 0)
        .with("/d", 300)
        .branch(RW, 10, 0)
        .with("/d", 100)
        .branch(RW, 10, 0);
    for category in Category::ALL {
        assert_eq!(pool.run(Policy::Newest, category, "/d"), Ok(vec![0]));
    }
    assert_eq!(
        pool.run(Policy::Newest, Category::Search, "/x"),
        Err(PolicyError::NotFound)
    );
}

/// `/a/b/c` is created nowhere; branch 0 has `/a`, branch 1 has `/a/b`, branch 2
/// only the root.
fn nested() -> Pool {
    Pool::new()
        .branch(RW, 500, 0)
        .with("/a", 0)
        .branch(RW, 100, 0)
        .with("/a", 0)
        .with("/a/b", 0)
        .branch(RW, 900, 0)
}

const MSP: [Policy; 4] = [
    Policy::Msplfs,
    Policy::Msplus,
    Policy::Mspmfs,
    Policy::Msppfrd,
];

#[test]
fn msp_uses_the_deepest_shared_ancestor() {
    let pool = nested();
    for policy in MSP {
        assert_eq!(
            pool.run(policy, Category::Create, "/a/b/c"),
            Ok(vec![1]),
            "{policy}"
        );
        assert_eq!(
            pool.run(policy, Category::Create, "/a/b"),
            Ok(vec![1]),
            "{policy}"
        );
    }
    // From /a, branches 0 and 1 share the path: the rule decides between them.
    assert_eq!(
        pool.run(Policy::Mspmfs, Category::Create, "/a/x"),
        Ok(vec![0])
    );
    assert_eq!(
        pool.run(Policy::Msplfs, Category::Create, "/a/x"),
        Ok(vec![1])
    );
    // From the root, every branch qualifies.
    assert_eq!(
        pool.run(Policy::Mspmfs, Category::Create, "/x/y"),
        Ok(vec![2])
    );
    // ep policies do not walk.
    assert_eq!(
        pool.run(Policy::Epmfs, Category::Create, "/a/b/c"),
        Err(PolicyError::NotFound)
    );
}

#[test]
fn space_is_asked_only_of_branches_still_in_the_running() {
    let pool = Pool::new()
        .branch(RW, 10, 0)
        .branch(RW, 20, 0)
        .with("/f", 0)
        .branch(RO, 30, 0)
        .with("/f", 0);
    let asked = |policy, category, path| {
        pool.asked.borrow_mut().clear();
        let chosen = pool.run(policy, category, path);
        (chosen, pool.asked.borrow().clone())
    };
    // An action needs the read-only flag only where the path is and may be changed.
    assert_eq!(
        asked(Policy::Epall, Category::Action, "/f"),
        (Ok(vec![1]), vec![1])
    );
    // A search that does not compare space never asks; one that does asks where
    // the path is, read-only branches included.
    assert_eq!(
        asked(Policy::Ff, Category::Search, "/f"),
        (Ok(vec![1]), vec![])
    );
    assert_eq!(
        asked(Policy::Lfs, Category::Search, "/f"),
        (Ok(vec![1]), vec![1, 2])
    );
    // A create compares every branch it may write to.
    assert_eq!(
        asked(Policy::Mfs, Category::Create, "/"),
        (Ok(vec![1]), vec![0, 1])
    );
}

#[test]
fn msp_walks_up_past_full_or_read_only_branches() {
    let blocks: [fn(&mut TestBranch); 3] = [
        |b| b.info.min_free_space = 1000,
        read_only_fs,
        |b| b.info.mode = NC,
    ];
    for block in blocks {
        let pool = Pool::new()
            .branch(RW, 500, 0)
            .with("/a", 0)
            .branch(RW, 100, 0)
            .with("/a", 0)
            .with("/a/b", 0)
            .last(block)
            .branch(RW, 900, 0);
        assert_eq!(
            pool.run(Policy::Mspmfs, Category::Create, "/a/b/c"),
            Ok(vec![0])
        );
    }
}

#[test]
fn msp_reports_the_priority_error_when_even_the_root_fails() {
    let pool = Pool::new()
        .branch(RW, 10, 0)
        .with("/a", 0)
        .last(min_free(100))
        .branch(RW, 10, 0)
        .last(min_free(100));
    for policy in MSP {
        assert_eq!(
            pool.run(policy, Category::Create, "/a/b"),
            Err(PolicyError::NoSpace),
            "{policy}"
        );
    }
}

#[test]
fn msp_acts_and_searches_like_ep() {
    let pool = nested();
    for policy in MSP {
        for category in [Category::Action, Category::Search] {
            assert_eq!(
                pool.run(policy, category, "/a/b/c"),
                Err(PolicyError::NotFound),
                "{policy} {category}"
            );
            assert_eq!(pool.run(policy, category, "/a/b"), Ok(vec![1]));
        }
    }
}

#[test]
fn pfrd_maps_draws_onto_cumulative_free_space() {
    let pool = Pool::new()
        .branch(RW, 100, 0)
        .branch(RW, 300, 0)
        .branch(RW, 600, 0);
    for (draw, expected) in [(0, 0), (99, 0), (100, 1), (399, 1), (400, 2), (999, 2)] {
        let mut rng = |bound: u64| {
            assert_eq!(bound, 1000, "the draw spans the summed free space");
            draw
        };
        assert_eq!(
            pool.run_with(Policy::Pfrd, Category::Create, "/", &mut rng),
            Ok(vec![expected]),
            "draw {draw}"
        );
    }
}

/// A small deterministic generator (xorshift64*), good enough for counting draws.
fn xorshift(seed: u64) -> impl FnMut(u64) -> u64 {
    let mut state = seed;
    move |bound| {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_f491_4f6c_dd1d) % bound
    }
}

#[test]
fn pfrd_distribution_follows_free_space() {
    let pool = Pool::new()
        .branch(RW, 100 << 30, 0)
        .branch(RW, 300 << 30, 0)
        .branch(RW, 600 << 30, 0)
        .branch(RW, 1 << 40, 0)
        .last(min_free(2 << 40));
    let mut rng = xorshift(0x9e37_79b9_7f4a_7c15);
    let mut counts = [0u32; 4];
    for _ in 0..10_000 {
        let chosen = pool.run_with(Policy::Pfrd, Category::Create, "/", &mut rng);
        let Ok(&[index]) = chosen.as_deref() else {
            panic!("pfrd returned {chosen:?}");
        };
        counts[index] += 1;
    }
    // Expected 1000 / 3000 / 6000; the bounds are about five standard deviations.
    assert!((850..=1150).contains(&counts[0]), "{counts:?}");
    assert!((2750..=3250).contains(&counts[1]), "{counts:?}");
    assert!((5750..=6250).contains(&counts[2]), "{counts:?}");
    assert_eq!(counts[3], 0, "a branch below min free space is never drawn");
}

#[test]
fn pfrd_survives_sums_beyond_64_bits() {
    let pool = Pool::new().branch(RW, u64::MAX, 0).branch(RW, u64::MAX, 0);
    let mut lowest = |_| 0;
    let mut highest = |bound: u64| bound - 1;
    assert_eq!(
        pool.run_with(Policy::Pfrd, Category::Create, "/", &mut lowest),
        Ok(vec![0])
    );
    assert_eq!(
        pool.run_with(Policy::Pfrd, Category::Create, "/", &mut highest),
        Ok(vec![1])
    );
}

#[test]
fn pfrd_without_free_space_draws_uniformly() {
    let pool = Pool::new()
        .branch(RW, 0, 10)
        .branch(RW, 0, 10)
        .branch(RW, 0, 10);
    let mut rng = |bound: u64| {
        assert_eq!(bound, 3, "uniform over the candidates");
        1
    };
    assert_eq!(
        pool.run_with(Policy::Pfrd, Category::Create, "/", &mut rng),
        Ok(vec![1])
    );
}

#[test]
fn rand_draws_over_the_qualifying_branches() {
    let pool = mixed();
    let mut bounds = Vec::new();
    let mut rng = |bound: u64| {
        bounds.push(bound);
        1
    };
    assert_eq!(
        pool.run_with(Policy::Rand, Category::Create, "/d", &mut rng),
        Ok(vec![1])
    );
    assert_eq!(
        pool.run_with(Policy::Eprand, Category::Create, "/d", &mut rng),
        Ok(vec![2])
    );
    assert_eq!(
        pool.run_with(Policy::Rand, Category::Search, "/d", &mut rng),
        Ok(vec![2])
    );
    assert_eq!(bounds, vec![3, 2, 4]);
    // A draw out of range is folded back instead of failing.
    let mut too_big = |bound: u64| bound + 1;
    assert_eq!(
        pool.run_with(Policy::Rand, Category::Create, "/d", &mut too_big),
        Ok(vec![1])
    );
}

#[test]
fn errno_values() {
    assert_eq!(PolicyError::NotFound.errno(), libc::ENOENT);
    assert_eq!(PolicyError::NoSpace.errno(), libc::ENOSPC);
    assert_eq!(PolicyError::ReadOnly.errno(), libc::EROFS);
    assert!(PolicyError::ReadOnly > PolicyError::NoSpace);
    assert!(PolicyError::NoSpace > PolicyError::NotFound);
}

#[test]
fn policy_names_round_trip() {
    for policy in Policy::ALL {
        assert_eq!(policy.name().parse(), Ok(policy));
        assert_eq!(policy.to_string(), policy.name());
    }
    let mut names: Vec<_> = Policy::ALL.iter().map(|p| p.name()).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), 21);
    let err = "MFS".parse::<Policy>().unwrap_err().to_string();
    assert!(
        err.starts_with("unknown policy `MFS`; expected one of: all, epall"),
        "{err}"
    );
    assert!("".parse::<Policy>().is_err());
}

#[test]
fn path_preserving_policies() {
    let preserving: Vec<_> = Policy::ALL
        .into_iter()
        .filter(|p| p.is_path_preserving())
        .map(Policy::name)
        .collect();
    assert_eq!(
        preserving,
        [
            "epall", "epff", "eplfs", "eplus", "epmfs", "eppfrd", "eprand", "msplfs", "msplus",
            "mspmfs", "msppfrd"
        ]
    );
}

#[test]
fn categories_and_defaults() {
    assert_eq!(Category::Create.default_policy(), Policy::Pfrd);
    assert_eq!(Category::Action.default_policy(), Policy::Epall);
    assert_eq!(Category::Search.default_policy(), Policy::Ff);
    for category in Category::ALL {
        assert_eq!(category.name().parse(), Ok(category));
    }
    assert!("Create".parse::<Category>().is_err());
}

#[test]
fn functions_belong_to_their_categories() {
    let of = |category| -> Vec<&str> {
        Function::ALL
            .into_iter()
            .filter(|f| f.category() == category)
            .map(Function::name)
            .collect()
    };
    assert_eq!(
        of(Category::Create),
        ["create", "mkdir", "mknod", "symlink"]
    );
    assert_eq!(
        of(Category::Action),
        [
            "chmod",
            "chown",
            "link",
            "removexattr",
            "rename",
            "rmdir",
            "setxattr",
            "truncate",
            "unlink",
            "utimens"
        ]
    );
    assert_eq!(
        of(Category::Search),
        [
            "access",
            "getattr",
            "getxattr",
            "listxattr",
            "open",
            "readlink"
        ]
    );
    for (i, function) in Function::ALL.into_iter().enumerate() {
        assert_eq!(function as usize, i, "table slots follow ALL");
        assert_eq!(function.name().parse(), Ok(function));
    }
    assert!("readdir".parse::<Function>().is_err());
}

#[test]
fn function_policies_apply_in_order() {
    let mut table = FunctionPolicies::default();
    assert_eq!(table.get(Function::Mkdir), Policy::Pfrd);
    assert_eq!(table.get(Function::Unlink), Policy::Epall);
    assert_eq!(table.get(Function::Getattr), Policy::Ff);

    table.set(Function::Getattr, Policy::Newest);
    assert_eq!(table.get(Function::Getattr), Policy::Newest);
    assert_eq!(table.get(Function::Open), Policy::Ff);

    table.set_category(Category::Search, Policy::Epff);
    assert_eq!(
        table.get(Function::Getattr),
        Policy::Epff,
        "a later category wins"
    );
    assert_eq!(
        table.get(Function::Mkdir),
        Policy::Pfrd,
        "other categories untouched"
    );

    table.set_category(Category::Create, Policy::Mspmfs);
    table.set(Function::Create, Policy::Mfs);
    assert_eq!(
        table.get(Function::Create),
        Policy::Mfs,
        "a later func wins"
    );
    assert_eq!(table.get(Function::Symlink), Policy::Mspmfs);
}

#[test]
fn only_space_comparing_policies_need_statvfs_for_searches() {
    let comparing: Vec<&str> = Policy::ALL
        .into_iter()
        .filter(|p| p.compares_space())
        .map(Policy::name)
        .collect();
    assert_eq!(
        comparing,
        [
            "eplfs", "eplus", "epmfs", "eppfrd", "lfs", "lup", "lus", "mfs", "msplfs", "msplus",
            "mspmfs", "msppfrd", "pfrd"
        ]
    );
}
