//! A synthetic state of any size, laid out as a sync would leave it, and the heap
//! bytes a state holds. Used by the size test and by `benches/state.rs` (which
//! includes this file by path); not part of the library.

use super::{Disk, Extent, FileEntry, State};

/// `disks` disks of `files` files of `blocks` blocks each: every disk fills positions
/// from 0 with its files in order, blocks have distinct pseudo-random hashes, the last
/// 1% of the positions is unsynced with its blocks new, and the verification times
/// advance as a sync covering 20,000 positions a second would stamp them.
pub fn large_state(disks: u32, files: u32, blocks: u32) -> State {
    const SYNC_START: u32 = 1_700_000_000;
    let mut state = State::new(256 * 1024, [7; 32], 2);
    let positions = files as usize * blocks as usize;
    let unsynced_from = positions - positions / 100;
    state.positions.grow(positions);
    for (p, (flag, time)) in state
        .positions
        .flags
        .iter_mut()
        .zip(&mut state.positions.verified)
        .enumerate()
    {
        if p < unsynced_from {
            *flag = 0;
            *time = SYNC_START + (p / 20_000) as u32;
        }
    }
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for d in 0..disks {
        let mut disk = Disk {
            name: format!("d{}", d + 1),
            index: d,
            uuid: format!("0c1e5a7b-{d:04}-4f00-9d2e-5b7a3c0d1e2f"),
            ..Disk::default()
        };
        for i in 0..files {
            let pos = i * blocks;
            let mut file = FileEntry {
                path: format!(
                    "media/series-{:03}/season {:02}/episode {:04} - a title.mkv",
                    i / 250,
                    i / 25 % 10,
                    i
                ),
                size: u64::from(blocks) * u64::from(state.block_size) - 4321,
                mtime_ns: 1_600_000_000_000_000_000 + i64::from(i) * 1_000_003,
                inode: u64::from(d) << 32 | u64::from(i),
                mode: 0o100644,
                uid: 1000,
                gid: 1000,
                extents: vec![Extent { pos, len: blocks }],
                hashes: (0..blocks).map(|_| hash(&mut seed)).collect(),
                new_blocks: Vec::new(),
            };
            for b in 0..blocks {
                if (pos + b) as usize >= unsynced_from {
                    file.set_new(b as usize, true);
                    file.hashes[b as usize] = [0; 16];
                }
            }
            disk.files.push(file);
        }
        state.disks.push(disk);
    }
    state
}

/// Bytes on the heap from allocation sizes: (everything but names, names), where
/// names are the paths, link targets, disk names and uuids.
pub fn heap_bytes(state: &State) -> (usize, usize) {
    fn alloc<T>(v: &Vec<T>) -> usize {
        v.capacity() * size_of::<T>()
    }
    let mut data = alloc(&state.parity)
        + alloc(&state.disks)
        + alloc(&state.positions.flags)
        + alloc(&state.positions.verified)
        + alloc(&state.bad);
    let mut names: usize = state.parity.iter().map(|p| p.uuid.capacity()).sum();
    for d in &state.disks {
        names += d.name.capacity() + d.uuid.capacity();
        data += alloc(&d.files) + alloc(&d.links) + alloc(&d.dirs) + alloc(&d.deleted);
        for f in &d.files {
            names += f.path.capacity();
            data += alloc(&f.extents) + alloc(&f.hashes) + alloc(&f.new_blocks);
        }
        for l in &d.links {
            names += l.path.capacity() + l.target.capacity();
        }
        names += d.dirs.iter().map(|dir| dir.path.capacity()).sum::<usize>();
    }
    (data, names)
}

/// splitmix64, twice: a cheap stand-in for a block hash.
fn hash(seed: &mut u64) -> [u8; 16] {
    let mut out = [0; 16];
    for half in out.chunks_exact_mut(8) {
        *seed = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = *seed;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        half.copy_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out
}
