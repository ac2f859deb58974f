//! The content file format: [`encode`] turns a [`State`] into bytes, [`decode`] turns
//! bytes back into a `State` and rejects anything damaged or inconsistent, and
//! [`validate`] holds the consistency rules both sides share.
//!
//! ```text
//! header   "LHPSTATE", format version (u32 LE), body length (u64 LE)
//! body     generation, block size, hash kind (1 byte), hash key (32 bytes),
//!          last sync, last scrub,
//!          parity levels: count, then each level's uuid
//!          positions: count, the flags (1 byte each), count again, then the
//!                     verification times as runs (length, zigzag delta from the
//!                     previous run's time)
//!          bad blocks: count, then (position, disk)
//!          disks: count, then per disk: name, index, uuid,
//!            files: count, then per file: path*, size, mtime (zigzag), inode,
//!                   mode, uid, gid,
//!                   extents: count, then (zigzag start minus the end of the
//!                            disk's previous extent, length),
//!                   hashes: count, then 16 raw bytes each,
//!                   new-block words: count, then 8 bytes LE each
//!            links: count, then (path*, target)
//!            hard links (version 2): count, then (path*, path of the file it names)
//!            dirs: count, then (path*, mode, mtime (zigzag))
//!            folders (version 3): count, then (path*, mode, uid, gid, mtime (zigzag))
//!            deleted: count, then (zigzag position minus the previous one, hash)
//! trailer  BLAKE3 of header and body (32 bytes)
//! ```
//!
//! Integers in the body are LEB128 varints; strings are a byte length and UTF-8.
//! Paths and link targets are a byte length and the name's bytes as they are on the
//! disk, which need not be UTF-8 (see [`crate::name`]). `path*` is the length of the
//! prefix shared with the previous path of the same list, then the rest.
//!
//! This module does no I/O. Decoding never panics, and it allocates at most a small
//! multiple of the input's size: every count is checked against the bytes left.

use super::model::{
    BadBlock, DeletedBlock, DirEntry, Disk, Extent, FileEntry, FolderEntry, Hash, LinkEntry,
    ParityInfo, Positions, State, HASH_BLAKE3_16,
};
use crate::name;
use crate::raid::{BLOCK_MULTIPLE, MAX_DATA, MAX_PARITY};
use std::borrow::Cow;

/// The first 8 bytes of every content file.
pub const MAGIC: [u8; 8] = *b"LHPSTATE";
/// The format version this code writes. It reads this one, version 2, which had no
/// folder attributes, and version 1, which had no hard links either.
pub const FORMAT_VERSION: u32 = 3;
/// The oldest format version this code reads.
pub const OLDEST_VERSION: u32 = 1;

/// Magic, version and body length.
const HEADER_LEN: usize = 8 + 4 + 8;
const CHECKSUM_LEN: usize = 32;

/// Smallest encoded size of one list element, to reject a count the remaining bytes
/// cannot hold before allocating room for it.
const MIN_PARITY: usize = 1;
const MIN_BAD: usize = 2;
const MIN_DISK: usize = 7;
const MIN_FILE: usize = 11;
const MIN_EXTENT: usize = 2;
const MIN_LINK: usize = 3;
const MIN_DIR: usize = 4;
/// Smallest encoded folder: prefix, suffix length, mode, uid, gid, mtime.
const MIN_FOLDER: usize = 6;
const MIN_DELETED: usize = 1 + 16;

/// Why bytes are not a usable content file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("not an lhparity content file: it does not start with `LHPSTATE`")]
    BadMagic,
    #[error(
        "content file format version {found} is not supported: this lhparity reads version \
         {FORMAT_VERSION} (was the file written by a newer lhparity?)"
    )]
    UnsupportedVersion { found: u32 },
    #[error("the content file is cut short: {len} bytes, {expected} expected")]
    Truncated { len: u64, expected: u64 },
    #[error("the content file has {extra} unexpected bytes after its checksum")]
    TrailingBytes { extra: u64 },
    #[error("checksum mismatch: the content file is damaged")]
    ChecksumMismatch,
    #[error("{what} at body byte {offset} runs past the end of the body")]
    BodyOverrun { what: &'static str, offset: usize },
    #[error("{extra} unread bytes at the end of the body")]
    UnreadBody { extra: usize },
    #[error("malformed integer for {what} at body byte {offset}")]
    BadVarint { what: &'static str, offset: usize },
    #[error("{what} is {value}, out of range")]
    OutOfRange { what: &'static str, value: i128 },
    #[error("{count} {what} cannot fit in the {remaining} bytes left in the body")]
    CountTooLarge {
        what: &'static str,
        count: u64,
        remaining: usize,
    },
    #[error("{what} at body byte {offset} is not valid UTF-8")]
    InvalidUtf8 { what: &'static str, offset: usize },
    #[error("block size {block_size} is not a positive multiple of {BLOCK_MULTIPLE} bytes")]
    BlockSize { block_size: u32 },
    #[error("unknown block hash kind {kind}")]
    UnknownHashKind { kind: u8 },
    #[error("{levels} parity levels; lhparity supports at most {MAX_PARITY}")]
    TooManyParityLevels { levels: usize },
    #[error("{disks} data disks; lhparity supports at most {MAX_DATA}")]
    TooManyDisks { disks: usize },
    #[error(
        "disk `{name}` has index {index}: indexes must be below {MAX_DATA} and increase \
         from disk to disk"
    )]
    DiskIndex { name: String, index: u32 },
    #[error(
        "file `{path}` on disk `{disk}`: its extents cover {extent_blocks} blocks but it has \
         {hashes} block hashes"
    )]
    ExtentMismatch {
        disk: String,
        path: String,
        extent_blocks: u64,
        hashes: usize,
    },
    #[error("hard link `{path}` on disk `{disk}` names `{target}`, which is no file of that disk")]
    HardLinkTarget {
        disk: String,
        path: String,
        target: String,
    },
    #[error(
        "file `{path}` on disk `{disk}`: the extent of {len} blocks at position {pos} runs \
         past the array's {positions} positions"
    )]
    ExtentOverflow {
        disk: String,
        path: String,
        pos: u32,
        len: u32,
        positions: usize,
    },
    #[error("{what} at position {pos}, past the array's {positions} positions")]
    PositionOutOfRange {
        what: String,
        pos: u32,
        positions: usize,
    },
    #[error(
        "file `{path}` on disk `{disk}`: its new-block bitmap of {words} words reaches past \
         its {blocks} blocks"
    )]
    NewBlocksTooLong {
        disk: String,
        path: String,
        words: usize,
        blocks: usize,
    },
    #[error("{flags} position flags but {verified} verification times")]
    PositionsMismatch { flags: usize, verified: usize },
}

/// The content file for `state`. It does not check the state: call [`validate`]
/// first, or [`decode`] will reject the result.
pub fn encode(state: &State) -> Vec<u8> {
    encode_as(state, FORMAT_VERSION)
}

/// [`encode`] in format `version` (older versions leave out what they cannot hold).
fn encode_as(state: &State, version: u32) -> Vec<u8> {
    let mut w = Writer(Vec::with_capacity(size_hint(state)), version);
    w.0.extend_from_slice(&MAGIC);
    w.0.extend_from_slice(&version.to_le_bytes());
    w.0.extend_from_slice(&[0; 8]);
    w.body(state);
    seal(w.0)
}

/// The state a content file holds, if the file is intact and consistent.
pub fn decode(bytes: &[u8]) -> Result<State, CodecError> {
    let head = bytes.get(..MAGIC.len()).unwrap_or(bytes);
    if head != &MAGIC[..head.len()] {
        return Err(CodecError::BadMagic);
    }
    let len = bytes.len() as u64;
    let Some((header, _)) = bytes.split_first_chunk::<HEADER_LEN>() else {
        return Err(CodecError::Truncated {
            len,
            expected: HEADER_LEN as u64,
        });
    };
    let version = u32::from_le_bytes([header[8], header[9], header[10], header[11]]);
    if !(OLDEST_VERSION..=FORMAT_VERSION).contains(&version) {
        return Err(CodecError::UnsupportedVersion { found: version });
    }
    let mut body_len = [0; 8];
    body_len.copy_from_slice(&header[12..]);
    // The length in the header tells a cut-short or extended file apart from a damaged
    // one before the checksum is even looked at.
    let expected = u64::from_le_bytes(body_len).saturating_add((HEADER_LEN + CHECKSUM_LEN) as u64);
    if len < expected {
        return Err(CodecError::Truncated { len, expected });
    }
    if len > expected {
        return Err(CodecError::TrailingBytes {
            extra: len - expected,
        });
    }
    let (signed, checksum) = bytes
        .split_last_chunk::<CHECKSUM_LEN>()
        .ok_or(CodecError::Truncated { len, expected })?;
    if blake3::hash(signed) != *checksum {
        return Err(CodecError::ChecksumMismatch);
    }
    decode_body(signed.get(HEADER_LEN..).unwrap_or_default(), version)
}

/// Checks the rules every stored state obeys; [`decode`] applies them to what it reads.
pub fn validate(state: &State) -> Result<(), CodecError> {
    let block_size = state.block_size;
    if block_size == 0 || !(block_size as usize).is_multiple_of(BLOCK_MULTIPLE) {
        return Err(CodecError::BlockSize { block_size });
    }
    if state.hash_kind != HASH_BLAKE3_16 {
        return Err(CodecError::UnknownHashKind {
            kind: state.hash_kind,
        });
    }
    if state.parity.len() > MAX_PARITY {
        return Err(CodecError::TooManyParityLevels {
            levels: state.parity.len(),
        });
    }
    if state.disks.len() > MAX_DATA {
        return Err(CodecError::TooManyDisks {
            disks: state.disks.len(),
        });
    }
    let positions = &state.positions;
    if positions.flags.len() != positions.verified.len() {
        return Err(CodecError::PositionsMismatch {
            flags: positions.flags.len(),
            verified: positions.verified.len(),
        });
    }
    let mut previous = None;
    for disk in &state.disks {
        // The index is the disk's column of the generator matrix: unique and in range.
        if disk.index as usize >= MAX_DATA || previous.is_some_and(|p| disk.index <= p) {
            return Err(CodecError::DiskIndex {
                name: disk.name.clone(),
                index: disk.index,
            });
        }
        previous = Some(disk.index);
        for file in &disk.files {
            validate_file(disk, file, positions.len())?;
        }
        if let Some(l) = disk
            .hardlinks
            .iter()
            .find(|l| !disk.files.iter().any(|f| f.path == l.target))
        {
            return Err(CodecError::HardLinkTarget {
                disk: disk.name.clone(),
                path: l.path.clone(),
                target: l.target.clone(),
            });
        }
        if let Some(b) = disk
            .deleted
            .iter()
            .find(|b| b.pos as usize >= positions.len())
        {
            return Err(CodecError::PositionOutOfRange {
                what: format!("a deleted block of disk `{}`", disk.name),
                pos: b.pos,
                positions: positions.len(),
            });
        }
    }
    if let Some(b) = state.bad.iter().find(|b| b.pos as usize >= positions.len()) {
        return Err(CodecError::PositionOutOfRange {
            what: "a block marked bad".to_owned(),
            pos: b.pos,
            positions: positions.len(),
        });
    }
    Ok(())
}

/// A file's extents lie inside the array's `positions` and cover one block per hash.
fn validate_file(disk: &Disk, file: &FileEntry, positions: usize) -> Result<(), CodecError> {
    let mut extent_blocks = 0u64;
    for e in &file.extents {
        // Checked in u64: `FileEntry::positions` computes `pos + len` in u32, and every
        // position indexes the per-position arrays.
        if u64::from(e.pos) + u64::from(e.len) > positions as u64 {
            return Err(CodecError::ExtentOverflow {
                disk: disk.name.clone(),
                path: file.path.clone(),
                pos: e.pos,
                len: e.len,
                positions,
            });
        }
        extent_blocks += u64::from(e.len);
    }
    let blocks = file.hashes.len();
    if extent_blocks != blocks as u64 {
        return Err(CodecError::ExtentMismatch {
            disk: disk.name.clone(),
            path: file.path.clone(),
            extent_blocks,
            hashes: blocks,
        });
    }
    let words = file.new_blocks.len();
    let past_end = match file.new_blocks.last() {
        Some(&last) => {
            words > blocks.div_ceil(64) || (words * 64 > blocks && last >> (blocks % 64) != 0)
        }
        None => false,
    };
    if past_end {
        return Err(CodecError::NewBlocksTooLong {
            disk: disk.name.clone(),
            path: file.path.clone(),
            words,
            blocks,
        });
    }
    Ok(())
}

/// Fills in the body length and appends the checksum.
fn seal(mut out: Vec<u8>) -> Vec<u8> {
    let body_len = (out.len() - HEADER_LEN) as u64;
    out[HEADER_LEN - 8..HEADER_LEN].copy_from_slice(&body_len.to_le_bytes());
    let checksum = blake3::hash(&out);
    out.extend_from_slice(checksum.as_bytes());
    out
}

/// A close upper estimate of the encoded size, so the output grows only once.
fn size_hint(state: &State) -> usize {
    let mut size = 256 + state.positions.len() * 2 + state.bad.len() * 10;
    for disk in &state.disks {
        size += 64 + disk.name.len() + disk.uuid.len() + disk.deleted.len() * 22;
        for f in &disk.files {
            size += 64 + f.path.len() + f.extents.len() * 10 + f.hashes.len() * 16;
            size += f.new_blocks.len() * 8;
        }
        for l in disk.links.iter().chain(&disk.hardlinks) {
            size += 24 + l.path.len() + l.target.len();
        }
        size += disk.dirs.iter().map(|d| 32 + d.path.len()).sum::<usize>();
        size += disk
            .folders
            .iter()
            .map(|d| 48 + d.path.len())
            .sum::<usize>();
    }
    size
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// The bytes written so far, and the format version being written.
struct Writer(Vec<u8>, u32);

impl Writer {
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push(v as u8 | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }

    fn signed(&mut self, v: i64) {
        self.varint(zigzag(v));
    }

    fn count(&mut self, n: usize) {
        self.varint(n as u64);
    }

    fn bytes(&mut self, b: &[u8]) {
        self.count(b.len());
        self.0.extend_from_slice(b);
    }

    /// `path` as the bytes it does not share with `previous` (both as on the disk).
    fn path(&mut self, previous: &[u8], path: &[u8]) {
        let shared = previous
            .iter()
            .zip(path)
            .take_while(|(a, b)| a == b)
            .count();
        self.count(shared);
        self.bytes(&path[shared..]);
    }

    fn body(&mut self, s: &State) {
        self.varint(s.generation);
        self.varint(s.block_size.into());
        self.0.push(s.hash_kind);
        self.0.extend_from_slice(&s.hash_key);
        self.varint(s.last_sync);
        self.varint(s.last_scrub);
        self.count(s.parity.len());
        for p in &s.parity {
            self.bytes(p.uuid.as_bytes());
        }
        self.positions(&s.positions);
        self.count(s.bad.len());
        for b in &s.bad {
            self.varint(b.pos.into());
            self.varint(b.disk.into());
        }
        self.count(s.disks.len());
        for d in &s.disks {
            self.disk(d);
        }
    }

    fn positions(&mut self, p: &Positions) {
        self.bytes(&p.flags);
        // Verification times come in long runs of equal or close values: a sync or a
        // scrub stamps the positions it covers in order.
        self.count(p.verified.len());
        let mut previous = 0i64;
        for run in p.verified.chunk_by(|a, b| a == b) {
            let time = i64::from(run[0]);
            self.count(run.len());
            self.signed(time - previous);
            previous = time;
        }
    }

    fn disk(&mut self, d: &Disk) {
        self.bytes(d.name.as_bytes());
        self.varint(d.index.into());
        self.bytes(d.uuid.as_bytes());

        self.count(d.files.len());
        let mut previous = Cow::Borrowed(&[][..]);
        let mut end = 0i64;
        for f in &d.files {
            let path = name::to_bytes(&f.path);
            self.path(&previous, &path);
            previous = path;
            self.varint(f.size);
            self.signed(f.mtime_ns);
            self.varint(f.inode);
            self.varint(f.mode.into());
            self.varint(f.uid.into());
            self.varint(f.gid.into());
            self.count(f.extents.len());
            for e in &f.extents {
                // Files are mostly laid out one after the other: the delta is small.
                self.signed(i64::from(e.pos) - end);
                self.varint(e.len.into());
                end = i64::from(e.pos) + i64::from(e.len);
            }
            self.count(f.hashes.len());
            self.0.extend_from_slice(f.hashes.as_flattened());
            self.count(f.new_blocks.len());
            for w in &f.new_blocks {
                self.0.extend_from_slice(&w.to_le_bytes());
            }
        }

        let lists: &[&Vec<LinkEntry>] = if self.1 >= 2 {
            &[&d.links, &d.hardlinks]
        } else {
            &[&d.links]
        };
        for list in lists {
            self.count(list.len());
            let mut previous = Cow::Borrowed(&[][..]);
            for l in list.iter() {
                let path = name::to_bytes(&l.path);
                self.path(&previous, &path);
                previous = path;
                self.bytes(&name::to_bytes(&l.target));
            }
        }

        self.count(d.dirs.len());
        let mut previous = Cow::Borrowed(&[][..]);
        for dir in &d.dirs {
            let path = name::to_bytes(&dir.path);
            self.path(&previous, &path);
            previous = path;
            self.varint(dir.mode.into());
            self.signed(dir.mtime_ns);
        }

        if self.1 >= 3 {
            self.count(d.folders.len());
            let mut previous = Cow::Borrowed(&[][..]);
            for folder in &d.folders {
                let path = name::to_bytes(&folder.path);
                self.path(&previous, &path);
                previous = path;
                self.varint(folder.mode.into());
                self.varint(folder.uid.into());
                self.varint(folder.gid.into());
                self.signed(folder.mtime_ns);
            }
        }

        self.count(d.deleted.len());
        let mut previous = 0i64;
        for b in &d.deleted {
            self.signed(i64::from(b.pos) - previous);
            previous = i64::from(b.pos);
            self.0.extend_from_slice(&b.hash);
        }
    }
}

/// Decodes a body (the bytes between header and checksum) and validates the result.
/// Separate from [`decode`] so that it can be tested on damaged input the checksum
/// would otherwise stop.
fn decode_body(bytes: &[u8], version: u32) -> Result<State, CodecError> {
    let mut r = Reader {
        bytes,
        at: 0,
        version,
    };
    let state = r.state()?;
    if r.remaining() != 0 {
        return Err(CodecError::UnreadBody {
            extra: r.remaining(),
        });
    }
    validate(&state)?;
    Ok(state)
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
    /// The format version of the file being read.
    version: u32,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.bytes.len().saturating_sub(self.at)
    }

    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], CodecError> {
        let slice = self
            .at
            .checked_add(n)
            .and_then(|end| self.bytes.get(self.at..end))
            .ok_or(CodecError::BodyOverrun {
                what,
                offset: self.at,
            })?;
        self.at += n;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], CodecError> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    fn varint(&mut self, what: &'static str) -> Result<u64, CodecError> {
        let offset = self.at;
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let [byte] = self.array::<1>(what)?;
            // The tenth byte holds bit 63 only.
            if shift == 63 && byte > 1 {
                break;
            }
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(CodecError::BadVarint { what, offset })
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, CodecError> {
        let v = self.varint(what)?;
        u32::try_from(v).map_err(|_| CodecError::OutOfRange {
            what,
            value: v.into(),
        })
    }

    fn signed(&mut self, what: &'static str) -> Result<i64, CodecError> {
        Ok(unzigzag(self.varint(what)?))
    }

    /// A position stored as a delta from `base`.
    fn position(&mut self, base: i64, what: &'static str) -> Result<u32, CodecError> {
        let delta = self.signed(what)?;
        let pos = i128::from(base) + i128::from(delta);
        u32::try_from(pos).map_err(|_| CodecError::OutOfRange { what, value: pos })
    }

    /// A list length, checked against the bytes left at `min_size` bytes an element.
    fn count(&mut self, what: &'static str, min_size: usize) -> Result<usize, CodecError> {
        let count = self.varint(what)?;
        let remaining = self.remaining();
        if count > (remaining / min_size) as u64 {
            return Err(CodecError::CountTooLarge {
                what,
                count,
                remaining,
            });
        }
        Ok(count as usize)
    }

    fn bytes(&mut self, what: &'static str) -> Result<&'a [u8], CodecError> {
        let len = self.count(what, 1)?;
        self.take(len, what)
    }

    fn string(&mut self, what: &'static str) -> Result<String, CodecError> {
        let offset = self.at;
        let bytes = self.bytes(what)?;
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(s.to_owned()),
            Err(_) => Err(CodecError::InvalidUtf8 { what, offset }),
        }
    }

    /// A path stored after the prefix it shares with `previous` (both as on the disk).
    fn path(&mut self, previous: &[u8], what: &'static str) -> Result<Vec<u8>, CodecError> {
        let shared = self.varint(what)?;
        let prefix = usize::try_from(shared)
            .ok()
            .and_then(|n| previous.get(..n))
            .ok_or(CodecError::OutOfRange {
                what: "shared path prefix",
                value: shared.into(),
            })?;
        let rest = self.bytes(what)?;
        let mut path = Vec::with_capacity(prefix.len() + rest.len());
        path.extend_from_slice(prefix);
        path.extend_from_slice(rest);
        Ok(path)
    }

    fn state(&mut self) -> Result<State, CodecError> {
        let generation = self.varint("generation")?;
        let block_size = self.u32("block size")?;
        let [hash_kind] = self.array("hash kind")?;
        let hash_key = self.array("hash key")?;
        let last_sync = self.varint("last sync time")?;
        let last_scrub = self.varint("last scrub time")?;
        let levels = self.count("parity levels", MIN_PARITY)?;
        let mut parity = Vec::with_capacity(levels);
        for _ in 0..levels {
            parity.push(ParityInfo {
                uuid: self.string("parity uuid")?,
            });
        }
        let positions = self.positions()?;
        let n = self.count("bad blocks", MIN_BAD)?;
        let mut bad = Vec::with_capacity(n);
        for _ in 0..n {
            bad.push(BadBlock {
                pos: self.u32("bad block position")?,
                disk: self.u32("bad block disk")?,
            });
        }
        let n = self.count("disks", MIN_DISK)?;
        let mut disks = Vec::with_capacity(n);
        for _ in 0..n {
            disks.push(self.disk()?);
        }
        Ok(State {
            generation,
            block_size,
            hash_kind,
            hash_key,
            parity,
            disks,
            positions,
            bad,
            last_sync,
            last_scrub,
        })
    }

    fn positions(&mut self) -> Result<Positions, CodecError> {
        let flags = self.bytes("position flags")?.to_vec();
        let n = self.varint("verification times")?;
        if n != flags.len() as u64 {
            return Err(CodecError::PositionsMismatch {
                flags: flags.len(),
                verified: usize::try_from(n).unwrap_or(usize::MAX),
            });
        }
        // Bounded by the flags just read, one byte each.
        let mut verified = Vec::with_capacity(flags.len());
        let mut time = 0i64;
        while verified.len() < flags.len() {
            let run = self.varint("verification run")?;
            let left = flags.len() - verified.len();
            if run == 0 || run > left as u64 {
                return Err(CodecError::OutOfRange {
                    what: "verification run length",
                    value: run.into(),
                });
            }
            let t = self.position(time, "verification time")?;
            time = i64::from(t);
            verified.resize(verified.len() + run as usize, t);
        }
        Ok(Positions { flags, verified })
    }

    fn disk(&mut self) -> Result<Disk, CodecError> {
        let name = self.string("disk name")?;
        let index = self.u32("disk index")?;
        let uuid = self.string("disk uuid")?;

        let n = self.count("files", MIN_FILE)?;
        let mut files: Vec<FileEntry> = Vec::with_capacity(n);
        let mut end = 0i64;
        let mut previous = Vec::new();
        for _ in 0..n {
            let raw = self.path(&previous, "file path")?;
            let file = self.file(name::from_bytes(&raw).into_owned(), &mut end)?;
            previous = raw;
            files.push(file);
        }

        let links = self.links("links")?;
        let hardlinks = if self.version >= 2 {
            self.links("hard links")?
        } else {
            Vec::new()
        };

        let n = self.count("dirs", MIN_DIR)?;
        let mut dirs: Vec<DirEntry> = Vec::with_capacity(n);
        let mut previous = Vec::new();
        for _ in 0..n {
            let raw = self.path(&previous, "dir path")?;
            let path = name::from_bytes(&raw).into_owned();
            previous = raw;
            let mode = self.u32("dir mode")?;
            let mtime_ns = self.signed("dir mtime")?;
            dirs.push(DirEntry {
                path,
                mode,
                mtime_ns,
            });
        }

        let mut folders: Vec<FolderEntry> = Vec::new();
        if self.version >= 3 {
            let n = self.count("folders", MIN_FOLDER)?;
            folders.reserve(n);
            let mut previous = Vec::new();
            for _ in 0..n {
                let raw = self.path(&previous, "folder path")?;
                let path = name::from_bytes(&raw).into_owned();
                previous = raw;
                folders.push(FolderEntry {
                    path,
                    mode: self.u32("folder mode")?,
                    uid: self.u32("folder uid")?,
                    gid: self.u32("folder gid")?,
                    mtime_ns: self.signed("folder mtime")?,
                });
            }
        }

        let n = self.count("deleted blocks", MIN_DELETED)?;
        let mut deleted = Vec::with_capacity(n);
        let mut pos = 0i64;
        for _ in 0..n {
            let p = self.position(pos, "deleted block position")?;
            pos = i64::from(p);
            deleted.push(DeletedBlock {
                pos: p,
                hash: self.array("deleted block hash")?,
            });
        }

        Ok(Disk {
            name,
            index,
            uuid,
            files,
            links,
            hardlinks,
            dirs,
            folders,
            deleted,
        })
    }

    /// A list of (path, target) entries: symbolic links, or hard links.
    fn links(&mut self, what: &'static str) -> Result<Vec<LinkEntry>, CodecError> {
        let n = self.count(what, MIN_LINK)?;
        let mut links: Vec<LinkEntry> = Vec::with_capacity(n);
        let mut previous = Vec::new();
        for _ in 0..n {
            let raw = self.path(&previous, "link path")?;
            let path = name::from_bytes(&raw).into_owned();
            previous = raw;
            let target = name::from_bytes(self.bytes("link target")?).into_owned();
            links.push(LinkEntry { path, target });
        }
        Ok(links)
    }

    /// One file after its path; `end` is where the disk's previous extent ended.
    fn file(&mut self, path: String, end: &mut i64) -> Result<FileEntry, CodecError> {
        let size = self.varint("file size")?;
        let mtime_ns = self.signed("file mtime")?;
        let inode = self.varint("file inode")?;
        let mode = self.u32("file mode")?;
        let uid = self.u32("file uid")?;
        let gid = self.u32("file gid")?;

        let n = self.count("extents", MIN_EXTENT)?;
        let mut extents = Vec::with_capacity(n);
        for _ in 0..n {
            let pos = self.position(*end, "extent position")?;
            let len = self.u32("extent length")?;
            *end = i64::from(pos) + i64::from(len);
            extents.push(Extent { pos, len });
        }

        let n = self.count("block hashes", size_of::<Hash>())?;
        let (hashes, _) = self
            .take(n * size_of::<Hash>(), "block hashes")?
            .as_chunks();
        let hashes = hashes.to_vec();

        let n = self.count("new-block words", 8)?;
        let (words, _) = self.take(n * 8, "new-block words")?.as_chunks();
        let new_blocks = words.iter().map(|w| u64::from_le_bytes(*w)).collect();

        Ok(FileEntry {
            path,
            size,
            mtime_ns,
            inode,
            mode,
            uid,
            gid,
            extents,
            hashes,
            new_blocks,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::fixtures::sample;
    use crate::state::synthetic::{heap_bytes, large_state};
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};
    use std::time::Instant;

    /// The body of an encoded state.
    fn body(state: &State) -> Vec<u8> {
        let bytes = encode(state);
        bytes[HEADER_LEN..bytes.len() - CHECKSUM_LEN].to_vec()
    }

    /// A content file around `body`, with a correct length and checksum.
    fn file(body: &[u8]) -> Vec<u8> {
        let mut out = encode(&sample())[..HEADER_LEN].to_vec();
        out.extend_from_slice(body);
        seal(out)
    }

    fn reencoded(state: &State) -> Result<State, CodecError> {
        decode(&encode(state))
    }

    #[test]
    fn round_trip_keeps_every_field() {
        let state = sample();
        assert_eq!(validate(&state), Ok(()));
        assert_eq!(reencoded(&state), Ok(state));
        let empty = State::new(64, [0; 32], 0);
        assert_eq!(reencoded(&empty), Ok(empty));
    }

    #[test]
    fn round_trip_of_paths_sharing_part_of_a_character() {
        let mut state = sample();
        // "é" and "è" share their first UTF-8 byte; the shared prefix ends inside it.
        for (i, path) in ["aé", "aè", "a", "", "aèè/x"].into_iter().enumerate() {
            state.disks[1].links.push(LinkEntry {
                path: path.into(),
                target: i.to_string(),
            });
            state.disks[1].dirs.push(DirEntry {
                path: path.into(),
                ..DirEntry::default()
            });
        }
        assert_eq!(reencoded(&state), Ok(state));
    }

    #[test]
    fn a_version_2_file_reads_with_no_folder_attributes() {
        let mut state = sample();
        assert!(!state.disks[0].folders.is_empty());
        for d in &mut state.disks {
            d.folders.clear();
        }
        assert_eq!(decode(&encode_as(&sample(), 2)), Ok(state));
        assert_eq!(decode(&encode(&sample())), Ok(sample()));
    }

    #[test]
    fn a_version_1_file_reads_with_no_hard_links() {
        let mut state = sample();
        for d in &mut state.disks {
            d.hardlinks.clear();
            d.folders.clear();
        }
        assert_eq!(decode(&encode_as(&state, 1)), Ok(state.clone()));
        // Version 2 keeps them.
        assert_eq!(decode(&encode(&sample())), Ok(sample()));
        assert!(!sample().disks[0].hardlinks.is_empty());
    }

    #[test]
    fn a_hard_link_to_no_file_is_rejected() {
        let mut state = sample();
        state.disks[0].hardlinks[0].target = "nowhere".into();
        assert!(matches!(
            decode(&encode(&state)),
            Err(CodecError::HardLinkTarget { .. })
        ));
    }

    #[test]
    fn header_damage_has_its_own_error() {
        let good = encode(&sample());
        let mut bad = good.clone();
        bad[0] = b'S';
        assert_eq!(decode(&bad), Err(CodecError::BadMagic));
        assert_eq!(decode(b"SNAPCNT3\n\x03\0\0"), Err(CodecError::BadMagic));

        let mut bad = good.clone();
        let newer = FORMAT_VERSION + 1;
        bad[8..12].copy_from_slice(&newer.to_le_bytes());
        assert_eq!(
            decode(&bad),
            Err(CodecError::UnsupportedVersion { found: newer })
        );
        bad[8..12].copy_from_slice(&0u32.to_le_bytes());
        assert_eq!(
            decode(&bad),
            Err(CodecError::UnsupportedVersion { found: 0 })
        );

        let len = good.len() as u64;
        assert_eq!(
            decode(&good[..good.len() - 1]),
            Err(CodecError::Truncated {
                len: len - 1,
                expected: len
            })
        );
        assert_eq!(
            decode(&good[..10]),
            Err(CodecError::Truncated {
                len: 10,
                expected: HEADER_LEN as u64
            })
        );

        let mut bad = good.clone();
        bad.extend_from_slice(b"garbage");
        assert_eq!(decode(&bad), Err(CodecError::TrailingBytes { extra: 7 }));

        let mut bad = good.clone();
        bad[HEADER_LEN + 5] ^= 0x10;
        assert_eq!(decode(&bad), Err(CodecError::ChecksumMismatch));
        let mut bad = good;
        *bad.last_mut().unwrap() ^= 1;
        assert_eq!(decode(&bad), Err(CodecError::ChecksumMismatch));
    }

    #[test]
    fn every_truncation_is_detected() {
        let good = encode(&sample());
        for len in 0..good.len() {
            match decode(&good[..len]) {
                Err(CodecError::Truncated { .. }) => {}
                other => panic!("cut at {len}: {other:?}"),
            }
        }
    }

    #[test]
    fn every_bit_flip_is_detected() {
        let good = encode(&sample());
        for i in 0..good.len() {
            for bit in [0x01, 0x80] {
                let mut bad = good.clone();
                bad[i] ^= bit;
                let err = decode(&bad).expect_err("a flipped bit must be detected");
                let fits = match i {
                    0..8 => err == CodecError::BadMagic,
                    // Into another version this code reads, the checksum tells.
                    8..12 => matches!(
                        err,
                        CodecError::UnsupportedVersion { .. } | CodecError::ChecksumMismatch
                    ),
                    12..HEADER_LEN => matches!(
                        err,
                        CodecError::Truncated { .. } | CodecError::TrailingBytes { .. }
                    ),
                    _ => err == CodecError::ChecksumMismatch,
                };
                assert!(fits, "byte {i} bit {bit:#x}: {err:?}");
            }
        }
    }

    #[test]
    fn inconsistent_states_are_refused_with_their_own_error() {
        fn refused(change: impl FnOnce(&mut State)) -> CodecError {
            let mut state = sample();
            change(&mut state);
            let err = validate(&state).expect_err("the change breaks a rule");
            assert_eq!(
                reencoded(&state),
                Err(err.clone()),
                "decode applies validate"
            );
            err
        }
        for block_size in [0, 100, 64 * 1024 + 32] {
            assert_eq!(
                refused(|s| s.block_size = block_size),
                CodecError::BlockSize { block_size }
            );
        }
        assert_eq!(
            refused(|s| s.hash_kind = 9),
            CodecError::UnknownHashKind { kind: 9 }
        );
        assert_eq!(
            refused(|s| s.parity.resize(7, ParityInfo::default())),
            CodecError::TooManyParityLevels { levels: 7 }
        );
        assert_eq!(
            refused(|s| s.disks.resize(252, Disk::default())),
            CodecError::TooManyDisks { disks: 252 }
        );
        assert_eq!(
            refused(|s| s.disks[1].index = 0),
            CodecError::DiskIndex {
                name: "disk three".into(),
                index: 0
            }
        );
        assert!(matches!(
            refused(|s| s.disks[1].index = 251),
            CodecError::DiskIndex { index: 251, .. }
        ));
        assert_eq!(
            refused(|s| s.disks[0].files[0].extents[1].len = 29),
            CodecError::ExtentMismatch {
                disk: "d1".into(),
                path: "films/Amélie (2001)/Amélie.mkv".into(),
                extent_blocks: 69,
                hashes: 70
            }
        );
        assert!(matches!(
            refused(|s| s.disks[1].files[0].extents[0].pos = u32::MAX),
            CodecError::ExtentOverflow {
                pos: u32::MAX,
                len: 1,
                ..
            }
        ));
        // 70 blocks need 2 words; a third is too many, and so is bit 70 of the second.
        assert!(matches!(
            refused(|s| s.disks[0].files[0].new_blocks.push(0)),
            CodecError::NewBlocksTooLong {
                words: 3,
                blocks: 70,
                ..
            }
        ));
        assert!(matches!(
            refused(|s| s.disks[0].files[0].new_blocks[1] |= 1 << 6),
            CodecError::NewBlocksTooLong {
                words: 2,
                blocks: 70,
                ..
            }
        ));
        assert!(matches!(
            refused(|s| s.disks[0].files[1].new_blocks.push(0)),
            CodecError::NewBlocksTooLong {
                words: 1,
                blocks: 0,
                ..
            }
        ));
        // Every position a file, a deleted block or a bad block names exists.
        assert_eq!(
            refused(|s| s.disks[1].files[0].extents[0].pos = 200),
            CodecError::ExtentOverflow {
                disk: "disk three".into(),
                path: "music/a.flac".into(),
                pos: 200,
                len: 1,
                positions: 200
            }
        );
        assert_eq!(
            refused(|s| s.disks[1].deleted.push(DeletedBlock {
                pos: 200,
                hash: [0; 16]
            })),
            CodecError::PositionOutOfRange {
                what: "a deleted block of disk `disk three`".into(),
                pos: 200,
                positions: 200
            }
        );
        assert_eq!(
            refused(|s| s.bad.push(BadBlock { pos: 250, disk: 0 })),
            CodecError::PositionOutOfRange {
                what: "a block marked bad".into(),
                pos: 250,
                positions: 200
            }
        );
        assert_eq!(
            refused(|s| s.positions.verified.pop().map(drop).unwrap_or_default()),
            CodecError::PositionsMismatch {
                flags: 200,
                verified: 199
            }
        );
    }

    #[test]
    fn a_full_last_new_block_word_is_accepted() {
        let mut state = sample();
        let file = &mut state.disks[0].files[0];
        file.hashes.truncate(64);
        file.extents = vec![Extent { pos: 10, len: 64 }];
        file.new_blocks = vec![u64::MAX];
        assert_eq!(reencoded(&state), Ok(state));
    }

    #[test]
    fn malformed_bodies_have_their_own_error() {
        use CodecError::*;
        assert_eq!(
            decode_body(&[], FORMAT_VERSION),
            Err(BodyOverrun {
                what: "generation",
                offset: 0
            })
        );
        assert_eq!(
            decode_body(&[0xff; 11], FORMAT_VERSION),
            Err(BadVarint {
                what: "generation",
                offset: 0
            })
        );
        // u64::MAX is the largest varint: nine 0xff and a final 1.
        let mut max = vec![0xff; 9];
        max.push(0x01);
        assert_eq!(
            Reader {
                bytes: &max,
                at: 0,
                version: FORMAT_VERSION,
            }
            .varint("x"),
            Ok(u64::MAX)
        );
        max[9] = 0x02;
        assert!(matches!(
            decode_body(&max, FORMAT_VERSION),
            Err(BadVarint { .. })
        ));

        let mut w = Writer(Vec::new(), FORMAT_VERSION);
        w.varint(1);
        w.varint(1 << 32);
        assert_eq!(
            decode_body(&w.0, FORMAT_VERSION),
            Err(OutOfRange {
                what: "block size",
                value: 1 << 32
            })
        );

        // Everything up to the parity levels, which claim more than the bytes left.
        let mut w = Writer(Vec::new(), FORMAT_VERSION);
        w.varint(1);
        w.varint(65536);
        w.0.push(HASH_BLAKE3_16);
        w.0.extend_from_slice(&[0; 32]);
        w.varint(0);
        w.varint(0);
        let prefix = w.0.clone();
        w.varint(u64::MAX);
        assert_eq!(
            decode_body(&w.0, FORMAT_VERSION),
            Err(CountTooLarge {
                what: "parity levels",
                count: u64::MAX,
                remaining: 0
            })
        );

        // Verification runs that overshoot the positions.
        let mut w = Writer(prefix.clone(), FORMAT_VERSION);
        w.count(0);
        w.bytes(&[0, 0]);
        w.count(2);
        w.count(3);
        w.signed(5);
        assert!(matches!(
            decode_body(&w.0, FORMAT_VERSION),
            Err(OutOfRange {
                what: "verification run length",
                value: 3
            })
        ));

        // A verification time below zero.
        let mut w = Writer(prefix, FORMAT_VERSION);
        w.count(0);
        w.bytes(&[0]);
        w.count(1);
        w.count(1);
        w.signed(-1);
        assert!(matches!(
            decode_body(&w.0, FORMAT_VERSION),
            Err(OutOfRange {
                what: "verification time",
                value: -1
            })
        ));

        let mut long = body(&sample());
        long.push(0);
        assert_eq!(decode(&file(&long)), Err(UnreadBody { extra: 1 }));
    }

    #[test]
    fn names_are_stored_as_their_bytes_and_come_back_exactly() {
        // Bytes that are not UTF-8 in a path and a link target, and a character of
        // the range the state holds such bytes in, right after one of them.
        let mut state = sample();
        let disk = &mut state.disks[0];
        let odd = crate::name::from_bytes(b"films/caf\xe9/\xff").into_owned();
        let pua = crate::name::from_bytes("films/caf\u{10FFE9}".as_bytes()).into_owned();
        disk.files[0].path = odd.clone();
        disk.links[0].target = crate::name::from_bytes(b"/abs/\xfe").into_owned();
        disk.dirs.push(DirEntry {
            path: pua.clone(),
            mode: 0o40755,
            mtime_ns: 0,
        });
        disk.dirs.sort_by(|a, b| a.path.cmp(&b.path));
        let bytes = encode(&state);
        let stored = |raw: &[u8]| bytes.windows(raw.len()).any(|w| w == raw);
        assert!(stored(b"caf\xe9/\xff") && stored(b"/abs/\xfe"));
        assert!(!stored(odd.as_bytes()));
        assert_eq!(decode(&bytes).expect("decode"), state);
    }

    #[test]
    fn a_disk_name_that_is_not_utf8_is_refused() {
        let good = body(&sample());
        let name = b"\x02d1";
        let at = good.windows(name.len()).position(|w| w == name).unwrap();
        let mut bad = good;
        bad[at + 1] = 0xff;
        assert!(matches!(
            decode(&file(&bad)),
            Err(CodecError::InvalidUtf8 {
                what: "disk name",
                ..
            })
        ));
    }

    #[test]
    fn random_damage_to_the_body_never_panics() {
        let good = body(&sample());
        let mut rng = SmallRng::seed_from_u64(0x5eed);
        let mut accepted = 0;
        for round in 0..50_000 {
            let mut bad = good.clone();
            for _ in 0..rng.gen_range(1..4) {
                if bad.is_empty() {
                    break;
                }
                let i = rng.gen_range(0..bad.len());
                match round % 4 {
                    0 => bad[i] ^= 1 << rng.gen_range(0..8),
                    1 => bad[i] = rng.gen(),
                    2 => {
                        bad.insert(i, rng.gen());
                    }
                    _ => bad.truncate(i),
                }
            }
            // Decoding may succeed (a changed hash byte is still a valid state); what
            // matters is that it returns.
            if let Ok(state) = decode_body(&bad, FORMAT_VERSION) {
                accepted += 1;
                assert_eq!(validate(&state), Ok(()));
            }
        }
        for len in 0..2000 {
            let noise: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
            let _ = decode_body(&noise, FORMAT_VERSION);
        }
        assert!(accepted < 50_000);
    }

    #[test]
    fn ten_million_blocks_fit_the_size_budget() {
        const BLOCKS: usize = 10_000_000;
        let state = large_state(4, 2500, 1000);
        assert_eq!(state.block_count(), BLOCKS);
        assert_eq!(validate(&state), Ok(()));

        let start = Instant::now();
        let bytes = encode(&state);
        let encoded_in = start.elapsed();
        let start = Instant::now();
        let decoded = decode(&bytes).unwrap();
        let decoded_in = start.elapsed();
        assert!(decoded == state);

        let (data, names) = heap_bytes(&decoded);
        let budget = BLOCKS * (16 + 2) + names;
        println!(
            "10M blocks: encoded {} bytes ({:.2} bytes/block; budget {budget}) in {encoded_in:?}, \
             decoded in {decoded_in:?}; in memory {:.2} bytes/block + {names} bytes of names",
            bytes.len(),
            bytes.len() as f64 / BLOCKS as f64,
            data as f64 / BLOCKS as f64,
        );
        assert!(bytes.len() < budget, "{} bytes", bytes.len());
        assert!(data <= 24 * BLOCKS, "{data} bytes in memory");
    }
}
