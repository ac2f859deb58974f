//! `lhparity status` and `lhparity list`: what the state says about the array, without
//! touching the disks.

use crate::state::model::{awaits_sync, State};

/// Files and bytes of one disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskStatus {
    pub name: String,
    pub files: usize,
    pub bytes: u64,
    /// Blocks of files not yet covered by parity.
    pub new_blocks: usize,
}

/// The array at a glance.
#[derive(Clone, Debug, PartialEq)]
pub struct Status {
    pub disks: Vec<DiskStatus>,
    pub parity_levels: usize,
    pub block_size: u32,
    /// Positions in the parity files.
    pub positions: usize,
    /// Positions whose parity a sync still has to compute.
    pub awaiting_sync: usize,
    /// Scrub age histogram: (upper bound in days, positions at most that old); the last
    /// bucket (`u32::MAX`) counts never-verified positions.
    pub scrub_age: Vec<(u32, usize)>,
    /// Age in days of the oldest and of the median verified position.
    pub oldest_days: Option<u32>,
    pub median_days: Option<u32>,
    /// (position, disk name or "parity") of each bad block.
    pub bad: Vec<(u32, String)>,
    pub last_sync: u64,
    pub last_scrub: u64,
}

/// Upper bounds (days) of the scrub-age histogram buckets.
pub const AGE_BUCKETS: [u32; 7] = [1, 7, 14, 30, 90, 365, u32::MAX - 1];

/// Computes the status of `state` at Unix time `now`.
pub fn status(state: &State, now: u64) -> Status {
    let disks = state
        .disks
        .iter()
        .map(|d| DiskStatus {
            name: d.name.clone(),
            files: d.files.len(),
            bytes: d.files.iter().map(|f| f.size).sum(),
            new_blocks: d
                .files
                .iter()
                .map(|f| (0..f.hashes.len()).filter(|&i| f.is_new(i)).count())
                .sum(),
        })
        .collect();
    let used = state.used_positions();
    let mut ages: Vec<u32> = Vec::new();
    let mut never = 0usize;
    let mut awaiting = 0usize;
    for (p, &flags) in state.positions.flags.iter().enumerate() {
        if awaits_sync(flags) {
            awaiting += 1;
        }
        if !used[p] {
            continue;
        }
        match state.positions.verified[p] {
            0 => never += 1,
            t => ages.push((now.saturating_sub(u64::from(t)) / 86_400) as u32),
        }
    }
    ages.sort_unstable();
    let mut scrub_age: Vec<(u32, usize)> = AGE_BUCKETS
        .iter()
        .map(|&bound| (bound, ages.partition_point(|&a| a <= bound)))
        .collect();
    // Cumulative counts → per bucket.
    for i in (1..scrub_age.len()).rev() {
        scrub_age[i].1 -= scrub_age[i - 1].1;
    }
    scrub_age.push((u32::MAX, never));
    let bad = state
        .bad
        .iter()
        .map(|b| {
            let name = state
                .disks
                .iter()
                .find(|d| d.index == b.disk)
                .map_or_else(|| "parity".to_string(), |d| d.name.clone());
            (b.pos, name)
        })
        .collect();
    Status {
        disks,
        parity_levels: state.parity.len(),
        block_size: state.block_size,
        positions: state.positions.len(),
        awaiting_sync: awaiting,
        scrub_age,
        oldest_days: ages.last().copied(),
        median_days: ages.get(ages.len() / 2).copied(),
        bad,
        last_sync: state.last_sync,
        last_scrub: state.last_scrub,
    }
}

/// What is wrong with the parity files of `config` for `state`, one message each:
/// a file missing or shorter than the synced positions need (its disk not mounted,
/// or the file lost or cut short), and a level in the config the state has not
/// built yet (added since the last sync).
pub fn parity_problems(config: &crate::config::Config, state: &State) -> Vec<ParityProblem> {
    let Ok(paths) = crate::sync::parity_paths(config) else {
        return Vec::new();
    };
    let needed = state.parity_bytes_needed();
    let mut problems = Vec::new();
    for (level, path) in paths.iter().enumerate() {
        let shown = crate::name::shown_path(path);
        if level >= state.parity.len() {
            problems.push(ParityProblem {
                new_level: true,
                message: format!(
                    "parity level {} ({shown}) is new: `lhparity sync` builds it",
                    level + 1
                ),
            });
            continue;
        }
        let message = match std::fs::metadata(path) {
            Err(e) if needed > 0 => format!(
                "parity file {shown} (level {}) cannot be read ({e}): if its disk is not \
                 mounted, mount it; if the file is lost, `lhparity fix` rebuilds it",
                level + 1
            ),
            Ok(meta) if meta.len() < needed => format!(
                "parity file {shown} (level {}) holds {} bytes where the synced positions \
                 need {needed}: `lhparity fix` rebuilds it",
                level + 1,
                meta.len()
            ),
            _ => continue,
        };
        problems.push(ParityProblem {
            new_level: false,
            message,
        });
    }
    problems
}

/// One of [`parity_problems`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParityProblem {
    /// A level the config names and no sync has built yet.
    pub new_level: bool,
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::model::{BadBlock, Disk, Extent, FileEntry, UNSYNCED};

    #[test]
    fn status_counts_files_ages_and_bad_blocks() {
        let mut state = State::new(1024, [0; 32], 2);
        let mut f = FileEntry {
            path: "a".into(),
            size: 3000,
            extents: vec![Extent { pos: 0, len: 3 }],
            hashes: vec![[0; 16]; 3],
            ..FileEntry::default()
        };
        f.set_new(2, true);
        state.disks.push(Disk {
            name: "d1".into(),
            files: vec![f],
            ..Disk::default()
        });
        state.positions.grow(4);
        state.positions.flags = vec![0, 0, UNSYNCED, UNSYNCED];
        let day = 86_400u32;
        state.positions.verified = vec![100 * day, 98 * day, 0, 0];
        state.bad.push(BadBlock { pos: 1, disk: 0 });
        let s = status(&state, 100 * u64::from(day));
        assert_eq!(s.disks[0].files, 1);
        assert_eq!(s.disks[0].bytes, 3000);
        assert_eq!(s.disks[0].new_blocks, 1);
        assert_eq!(s.awaiting_sync, 2);
        assert_eq!(s.scrub_age[0], (1, 1)); // verified today
        assert_eq!(s.scrub_age[1], (7, 1)); // two days ago
        assert_eq!(s.scrub_age.last(), Some(&(u32::MAX, 1))); // position 2, never
        assert_eq!(s.oldest_days, Some(2));
        assert_eq!(s.bad, vec![(1, "d1".to_string())]);
    }
}
