//! A small state that sets every field of the model, for the codec and store tests.

use super::model::{
    BadBlock, DeletedBlock, DirEntry, Disk, Extent, FileEntry, FolderEntry, LinkEntry, ParityInfo,
    State, DIRTY, UNSYNCED,
};

/// Every field set, including links, empty dirs, deleted and bad blocks, new-block
/// bits, a gap in the disk indexes, unicode paths and extreme integers.
pub fn sample() -> State {
    let mut state = State::new(256 * 1024, *b"0123456789abcdef0123456789ABCDEF", 3);
    state.generation = 41;
    state.last_sync = 1_700_000_000;
    state.last_scrub = u64::MAX;
    state.parity[0].uuid = "5f0c-parity-1".into();
    state.parity[2] = ParityInfo {
        uuid: "ünïcode-uuid".into(),
    };
    state.positions.grow(200);
    state.positions.flags[3] = 0;
    state.positions.flags[4] = DIRTY | UNSYNCED;
    for (p, v) in state.positions.verified.iter_mut().enumerate() {
        *v = match p {
            0..50 => 1_700_000_000,
            50..51 => u32::MAX,
            _ => 1_690_000_000 + p as u32 / 7,
        };
    }
    state.bad = vec![
        BadBlock { pos: 7, disk: 0 },
        BadBlock {
            pos: 199,
            disk: u32::MAX,
        },
    ];

    let mut movie = FileEntry {
        path: "films/Amélie (2001)/Amélie.mkv".into(),
        size: 70 * 256 * 1024 - 5,
        mtime_ns: -1_234_567_891,
        inode: u64::MAX,
        mode: 0o100644,
        uid: 1000,
        gid: u32::MAX,
        extents: vec![Extent { pos: 10, len: 40 }, Extent { pos: 0, len: 30 }],
        hashes: (0..70u8).map(|i| [i; 16]).collect(),
        new_blocks: Vec::new(),
    };
    movie.set_new(3, true);
    movie.set_new(69, true);
    let empty = FileEntry {
        path: "films/Amélie (2001)/.nomedia".into(),
        mtime_ns: i64::MAX,
        mode: 0o100600,
        ..FileEntry::default()
    };
    let d1 = Disk {
        name: "d1".into(),
        index: 0,
        uuid: "a1b2-c3d4".into(),
        files: vec![movie, empty],
        links: vec![
            LinkEntry {
                path: "films/latest".into(),
                target: "Amélie (2001)".into(),
            },
            LinkEntry {
                path: "films/日本語".into(),
                target: "/abs/target/🎬".into(),
            },
        ],
        hardlinks: vec![LinkEntry {
            path: "films/same film.mkv".into(),
            target: "films/Amélie (2001)/.nomedia".into(),
        }],
        dirs: vec![DirEntry {
            path: "empty/δir".into(),
            mode: 0o40755,
            mtime_ns: i64::MIN,
        }],
        folders: vec![
            FolderEntry {
                path: "empty".into(),
                mode: 0o40700,
                uid: u32::MAX,
                gid: 0,
                mtime_ns: -1,
            },
            FolderEntry {
                path: "empty/δir".into(),
                mode: 0o42770,
                uid: 1000,
                gid: 100,
                mtime_ns: i64::MIN,
            },
            FolderEntry {
                path: "films".into(),
                mode: 0o40755,
                uid: 0,
                gid: 0,
                mtime_ns: i64::MAX,
            },
        ],
        deleted: vec![
            DeletedBlock {
                pos: 150,
                hash: [0xdd; 16],
            },
            DeletedBlock {
                pos: 80,
                hash: [0xee; 16],
            },
        ],
    };
    let d3 = Disk {
        name: "disk three".into(),
        index: 2,
        uuid: String::new(),
        files: vec![FileEntry {
            path: "music/a.flac".into(),
            size: 3,
            mtime_ns: 1,
            inode: 12,
            mode: 0o100644,
            // The last position of the array.
            extents: vec![Extent { pos: 199, len: 1 }],
            hashes: vec![[0xab; 16]],
            ..FileEntry::default()
        }],
        ..Disk::default()
    };
    state.disks = vec![d1, d3];
    state
}
