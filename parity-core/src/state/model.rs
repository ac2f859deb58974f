//! The in-memory state of an array: what was synced, where every block lives, and
//! what each block's hash is. Pure data; the codec (`codec.rs`) turns it into bytes
//! and `store.rs` puts those bytes on disk.
//!
//! The invariant sync, scrub and fix rely on: for every position that is neither
//! `UNSYNCED` nor `DIRTY`, the parity files hold exactly the parity of the blocks
//! the state lists at that position (file blocks not flagged new, plus deleted
//! blocks). An `UNSYNCED` position still holds the parity of its old blocks (new
//! blocks are not in it yet, deleted ones still are); a `DIRTY` position may hold
//! anything, because a sync was writing it when the state was last saved.

/// The stored part of a block hash: BLAKE3, keyed per array, first 16 bytes.
pub type Hash = [u8; 16];

/// The hash kind recorded in the content file, so a later version can change it.
pub const HASH_BLAKE3_16: u8 = 1;

/// Position flag: the parity at this position does not include the new blocks there
/// and still includes the deleted ones; the next sync recomputes it.
pub const UNSYNCED: u8 = 1;
/// Position flag: a sync was writing the parity here; its content is unknown until a
/// sync finishes the position.
pub const DIRTY: u8 = 2;
/// Position flag: synced but not scrubbed since (what `scrub -p new` verifies).
pub const SCRUB_NEW: u8 = 4;

/// Whether a position with these flags awaits a sync (new, changed, or left halfway
/// by a stopped sync): its parity is not known to match its data.
pub fn awaits_sync(flags: u8) -> bool {
    flags & (UNSYNCED | DIRTY) != 0
}

/// The whole state of one array.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct State {
    /// Incremented at every save; when copies disagree, the highest valid one wins.
    pub generation: u64,
    /// Bytes per block.
    pub block_size: u32,
    /// Which hash the blocks use (`HASH_BLAKE3_16`).
    pub hash_kind: u8,
    /// The array's random BLAKE3 key.
    pub hash_key: [u8; 32],
    /// Parity files, level 1 first.
    pub parity: Vec<ParityInfo>,
    /// Data disks, in index order (an index may be missing: a removed disk keeps its
    /// column in the generator matrix as a gap).
    pub disks: Vec<Disk>,
    /// Per position: flags and the time of the last verification.
    pub positions: Positions,
    /// Blocks found bad by a scrub or sync and not fixed yet.
    pub bad: Vec<BadBlock>,
    /// Unix time (seconds) of the last successful sync and scrub, 0 = never.
    pub last_sync: u64,
    pub last_scrub: u64,
}

/// One parity level's file.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ParityInfo {
    /// UUID of the filesystem that held the parity file at the last sync ("" unknown).
    pub uuid: String,
}

/// One data disk.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Disk {
    /// The name of its `data` line.
    pub name: String,
    /// Its column in the generator matrix (0-based, the order of the `data` lines).
    pub index: u32,
    /// UUID of its filesystem at the last sync ("" unknown).
    pub uuid: String,
    pub files: Vec<FileEntry>,
    pub links: Vec<LinkEntry>,
    /// Other names of files of this disk (hard links): the name, and the path of
    /// the file in `files` it names. Their data is the file's, so they hold no
    /// blocks; `fix` makes them again as hard links.
    pub hardlinks: Vec<LinkEntry>,
    /// Empty directories, so that fix can recreate them.
    pub dirs: Vec<DirEntry>,
    /// Every folder below the disk root, empty or not, with its owner, mode and
    /// mtime, which `fix` gives the folders it has to make again. Sorted by path.
    pub folders: Vec<FolderEntry>,
    /// Blocks of removed or rewritten files whose old content parity still includes.
    pub deleted: Vec<DeletedBlock>,
}

/// A regular file and the positions of its blocks.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct FileEntry {
    /// Relative to the disk root, `/`-separated, no leading `/`.
    pub path: String,
    pub size: u64,
    /// Modification time in nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
    pub inode: u64,
    /// Permission bits and file type as `st_mode`.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Where its blocks are: runs of consecutive positions, in block order. Their
    /// lengths add up to `hashes.len()`.
    pub extents: Vec<Extent>,
    /// One hash per block; zeros for a block that has never been read (new).
    pub hashes: Vec<Hash>,
    /// Bit i set: block i is new, its data is not in the parity yet and its hash is
    /// not known. Packed 64 blocks per word; empty when no block is new.
    pub new_blocks: Vec<u64>,
}

/// A run of `len` consecutive positions starting at `pos`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Default)]
pub struct Extent {
    pub pos: u32,
    pub len: u32,
}

/// A symbolic link (not parity-protected: its target is stored here).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct LinkEntry {
    pub path: String,
    pub target: String,
}

/// An empty directory.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct DirEntry {
    pub path: String,
    pub mode: u32,
    pub mtime_ns: i64,
}

/// A folder's attributes.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct FolderEntry {
    pub path: String,
    /// Permission bits and file type as `st_mode`.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime_ns: i64,
}

/// A block whose file is gone but whose data the parity at `pos` still includes.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Default)]
pub struct DeletedBlock {
    pub pos: u32,
    pub hash: Hash,
}

/// A bad block: its data or the parity at `pos` failed verification.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Default)]
pub struct BadBlock {
    pub pos: u32,
    /// The disk index whose block is bad, or `u32::MAX` when the parity itself is.
    pub disk: u32,
}

/// Per-position information, stored column-wise to keep it at 5 bytes a position.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Positions {
    /// `UNSYNCED` / `DIRTY` / `SCRUB_NEW` bits.
    pub flags: Vec<u8>,
    /// Unix time (seconds) the position was last verified by a sync or scrub, 0 = never.
    pub verified: Vec<u32>,
}

impl Positions {
    /// Number of positions (the parity files hold this many blocks).
    pub fn len(&self) -> usize {
        self.flags.len()
    }

    pub fn is_empty(&self) -> bool {
        self.flags.is_empty()
    }

    /// Shrinks the table to at most `len` positions.
    pub fn truncate(&mut self, len: usize) {
        self.flags.truncate(len);
        self.verified.truncate(len);
    }

    /// Grows the table to at least `len` positions; new positions are unsynced.
    pub fn grow(&mut self, len: usize) {
        if len > self.flags.len() {
            self.flags.resize(len, UNSYNCED);
            self.verified.resize(len, 0);
        }
    }
}

impl FileEntry {
    /// Number of blocks of a file of this size.
    pub fn block_count(size: u64, block_size: u32) -> usize {
        size.div_ceil(u64::from(block_size)) as usize
    }

    /// The position of every block, in block order.
    pub fn positions(&self) -> impl Iterator<Item = u32> + '_ {
        self.extents.iter().flat_map(|e| e.pos..e.pos + e.len)
    }

    /// Whether any block is new (not in the parity yet, its hash not known).
    pub fn has_new_blocks(&self) -> bool {
        self.new_blocks.iter().any(|&w| w != 0)
    }

    /// Whether block `i` is new (not in the parity yet).
    pub fn is_new(&self, i: usize) -> bool {
        self.new_blocks
            .get(i / 64)
            .is_some_and(|w| w >> (i % 64) & 1 == 1)
    }

    /// Marks block `i` new or synced.
    pub fn set_new(&mut self, i: usize, new: bool) {
        if new && self.new_blocks.len() <= i / 64 {
            self.new_blocks.resize(i / 64 + 1, 0);
        }
        if let Some(w) = self.new_blocks.get_mut(i / 64) {
            if new {
                *w |= 1 << (i % 64);
            } else {
                *w &= !(1 << (i % 64));
            }
        }
        if !new && self.new_blocks.iter().all(|&w| w == 0) {
            self.new_blocks.clear();
        }
    }
}

/// [`State::columns`] for a list of disks.
pub fn columns(disks: &[Disk]) -> usize {
    disks
        .iter()
        .map(|d| d.index as usize + 1)
        .max()
        .unwrap_or(0)
}

impl State {
    /// A new, empty state for an array.
    pub fn new(block_size: u32, hash_key: [u8; 32], parity_levels: usize) -> State {
        State {
            generation: 0,
            block_size,
            hash_kind: HASH_BLAKE3_16,
            hash_key,
            parity: vec![ParityInfo::default(); parity_levels],
            disks: Vec::new(),
            positions: Positions::default(),
            bad: Vec::new(),
            last_sync: 0,
            last_scrub: 0,
        }
    }

    /// The disk with this name.
    pub fn disk(&self, name: &str) -> Option<&Disk> {
        self.disks.iter().find(|d| d.name == name)
    }

    /// Columns of the generator matrix the array uses: the highest disk index + 1
    /// (a removed disk's index stays a column of zeros).
    pub fn columns(&self) -> usize {
        columns(&self.disks)
    }

    /// Positions whose parity a sync has yet to compute (new, changed, or left
    /// halfway by a stopped sync).
    pub fn positions_awaiting_sync(&self) -> usize {
        self.positions
            .flags
            .iter()
            .filter(|&&f| awaits_sync(f))
            .count()
    }

    /// Whether some file has a block at each position.
    pub fn used_positions(&self) -> Vec<bool> {
        let mut used = vec![false; self.positions.len()];
        for pos in self
            .disks
            .iter()
            .flat_map(|d| &d.files)
            .flat_map(|f| f.positions())
        {
            if let Some(u) = used.get_mut(pos as usize) {
                *u = true;
            }
        }
        used
    }

    /// Per position, whether the parity there holds a block: a file block that is
    /// not new, or a deleted block not yet synced out. Elsewhere the parity is that
    /// of nothing (zeros), which a parity file that ends before the position stands
    /// for: positions a stopped sync appended, and holes.
    pub fn parity_held(&self) -> Vec<bool> {
        let mut held = vec![false; self.positions.len()];
        let mut mark = |pos: u32| {
            if let Some(h) = held.get_mut(pos as usize) {
                *h = true;
            }
        };
        for disk in &self.disks {
            for file in &disk.files {
                for (b, pos) in file.positions().enumerate() {
                    if !file.is_new(b) {
                        mark(pos);
                    }
                }
            }
            for deleted in &disk.deleted {
                mark(deleted.pos);
            }
        }
        held
    }

    /// The bytes a parity file must hold: up to the last position whose parity
    /// holds a block (see [`State::parity_held`]).
    pub fn parity_bytes_needed(&self) -> u64 {
        let held = self.parity_held();
        held.iter().rposition(|&h| h).map_or(0, |p| p as u64 + 1) * u64::from(self.block_size)
    }

    /// Total blocks held by files (the measure of the state's size).
    pub fn block_count(&self) -> usize {
        self.disks
            .iter()
            .flat_map(|d| &d.files)
            .map(|f| f.hashes.len())
            .sum()
    }
}

/// An mtime as the state keeps it: nanoseconds since the epoch, saturated at the
/// limits of `i64` (the years 1677 and 2262), so that a file dated past them keeps
/// one stable value instead of wrapping around to another date.
pub fn mtime_ns(secs: i64, nsecs: i64) -> i64 {
    secs.saturating_mul(1_000_000_000).saturating_add(nsecs)
}

#[cfg(test)]
mod tests {

    #[test]
    fn mtimes_past_the_range_of_nanoseconds_saturate() {
        assert_eq!(mtime_ns(1, 5), 1_000_000_005);
        assert_eq!(mtime_ns(-1, 5), -999_999_995);
        // Year 3000 and year 1000: the limits, never a wrapped date.
        assert_eq!(mtime_ns(32_503_680_000, 0), i64::MAX);
        assert_eq!(mtime_ns(-30_610_224_000, 0), i64::MIN);
    }
    use super::*;

    #[test]
    fn new_block_bits_set_and_clear() {
        let mut f = FileEntry::default();
        assert!(!f.is_new(0));
        f.set_new(70, true);
        assert!(f.is_new(70) && !f.is_new(69) && !f.is_new(6));
        assert_eq!(f.new_blocks.len(), 2);
        f.set_new(3, true);
        f.set_new(70, false);
        assert!(f.is_new(3) && !f.is_new(70));
        f.set_new(3, false);
        assert!(f.new_blocks.is_empty(), "no new block left: no bitmap");
    }

    #[test]
    fn positions_follow_extents_in_block_order() {
        let f = FileEntry {
            extents: vec![Extent { pos: 10, len: 2 }, Extent { pos: 3, len: 1 }],
            ..FileEntry::default()
        };
        assert_eq!(f.positions().collect::<Vec<_>>(), vec![10, 11, 3]);
        assert_eq!(FileEntry::block_count(0, 1024), 0);
        assert_eq!(FileEntry::block_count(1025, 1024), 2);
    }

    #[test]
    fn parity_is_held_where_synced_or_deleted_blocks_are() {
        let mut state = State::new(1024, [0; 32], 1);
        state.positions.grow(8);
        // Positions 0-2 synced, 3 new (a stopped sync recorded it), 5 a deleted
        // block, 6 and 7 appended by the stopped sync.
        let mut synced = FileEntry {
            extents: vec![Extent { pos: 0, len: 4 }],
            ..FileEntry::default()
        };
        synced.set_new(3, true);
        let mut appended = FileEntry {
            extents: vec![Extent { pos: 6, len: 2 }],
            ..FileEntry::default()
        };
        appended.set_new(0, true);
        appended.set_new(1, true);
        state.disks.push(Disk {
            files: vec![synced, appended],
            deleted: vec![DeletedBlock {
                pos: 5,
                hash: [0; 16],
            }],
            ..Disk::default()
        });
        assert_eq!(
            state.parity_held(),
            [true, true, true, false, false, true, false, false]
        );
        assert_eq!(state.parity_bytes_needed(), 6 * 1024);
        state.disks[0].deleted.clear();
        assert_eq!(state.parity_bytes_needed(), 3 * 1024);
        state.disks.clear();
        assert_eq!(state.parity_bytes_needed(), 0);
    }
}
