//! The node table and the inode numbers the pool shows.
//!
//! FUSE names every file by a node id the daemon hands out on lookup; the kernel
//! counts its references and gives them back with `forget`. [`NodeTable`] maps those
//! ids to pool paths (`/dir/file`), keeps the lookup counts, moves whole subtrees on
//! rename and detaches nodes whose path was removed or replaced.
//!
//! The `st_ino` shown to users comes from [`InodeCalc`], computed from stable inputs
//! (the pool path, or the branch path and the underlying inode number) so it
//! survives remounts, as mergerfs's `inodecalc` option does. A node takes that number
//! as its id whenever it is free: fuser sends one number as both the node id and
//! `st_ino` of an entry, and only when they agree may the kernel cache the entry's
//! attributes (one request per `stat` instead of two).
//!
//! This module does no I/O and holds no lock: the FUSE adapter owns the table and
//! serialises access to it.

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap};
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::ops::Bound;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::policy::ParseNameError;

/// The node id of the pool root, fixed by the FUSE protocol.
pub const ROOT_ID: u64 = 1;

/// Where the ids of nodes that cannot use their inode number start.
const SYNTHETIC_BASE: u64 = 1 << 63;

/// How `st_ino` and `d_ino` are computed (`inodecalc`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InodeCalc {
    /// The underlying inode number; numbers from different branches may collide.
    Passthrough,
    /// A hash of the pool path: stable whichever branch serves the path, but hard
    /// links get different numbers.
    PathHash,
    /// [`InodeCalc::PathHash`] folded to 32 bits.
    PathHash32,
    /// A hash of the underlying inode number seeded with the branch path: hard links
    /// share a number, which changes when a file moves to another branch.
    DevinoHash,
    /// [`InodeCalc::DevinoHash`] folded to 32 bits.
    DevinoHash32,
    /// Path hash for directories, devino hash for everything else.
    #[default]
    HybridHash,
    /// [`InodeCalc::HybridHash`] folded to 32 bits.
    HybridHash32,
}

impl InodeCalc {
    /// Every mode.
    pub const ALL: [InodeCalc; 7] = [
        InodeCalc::Passthrough,
        InodeCalc::PathHash,
        InodeCalc::PathHash32,
        InodeCalc::DevinoHash,
        InodeCalc::DevinoHash32,
        InodeCalc::HybridHash,
        InodeCalc::HybridHash32,
    ];

    /// The option value naming the mode.
    pub fn name(self) -> &'static str {
        match self {
            InodeCalc::Passthrough => "passthrough",
            InodeCalc::PathHash => "path-hash",
            InodeCalc::PathHash32 => "path-hash32",
            InodeCalc::DevinoHash => "devino-hash",
            InodeCalc::DevinoHash32 => "devino-hash32",
            InodeCalc::HybridHash => "hybrid-hash",
            InodeCalc::HybridHash32 => "hybrid-hash32",
        }
    }

    /// The inode number to show for an entry.
    ///
    /// `branch` is the branch root serving the entry, `path` the pool path
    /// (`/dir/file`), `mode` its `st_mode` (only the file type matters) and `ino` its
    /// inode number on the branch.
    pub fn inode(self, branch: &Path, path: &Path, mode: u32, ino: u64) -> u64 {
        let is_dir = mode & libc::S_IFMT == libc::S_IFDIR;
        let path_hash = || fnv1a(FNV_OFFSET, path.as_os_str().as_bytes());
        let devino_hash = || {
            let seed = fnv1a(FNV_OFFSET, branch.as_os_str().as_bytes());
            fnv1a(seed, &ino.to_le_bytes())
        };
        let hybrid = || if is_dir { path_hash() } else { devino_hash() };
        let value = match self {
            InodeCalc::Passthrough => return ino,
            InodeCalc::PathHash => path_hash(),
            InodeCalc::PathHash32 => fold32(path_hash()),
            InodeCalc::DevinoHash => devino_hash(),
            InodeCalc::DevinoHash32 => fold32(devino_hash()),
            InodeCalc::HybridHash => hybrid(),
            InodeCalc::HybridHash32 => fold32(hybrid()),
        };
        // Inode 0 reads as "no entry" to some readdir consumers.
        value.max(1)
    }
}

impl FromStr for InodeCalc {
    type Err = ParseNameError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        InodeCalc::ALL
            .into_iter()
            .find(|m| m.name() == text)
            .ok_or_else(|| {
                ParseNameError::new(
                    "inodecalc mode",
                    text,
                    "passthrough, path-hash, path-hash32, devino-hash, devino-hash32, \
                     hybrid-hash, hybrid-hash32",
                )
            })
    }
}

impl fmt::Display for InodeCalc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// 64-bit FNV-1a over `bytes`, continuing from `state`.
fn fnv1a(state: u64, bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(state, |h, &b| (h ^ u64::from(b)).wrapping_mul(FNV_PRIME))
}

/// Folds a 64-bit hash into 32 bits: both halves mixed, then spread by a
/// multiplicative (golden ratio) step so nearby inputs do not stay nearby.
fn fold32(hash: u64) -> u64 {
    let folded = (hash ^ (hash >> 32)) as u32;
    u64::from(folded.wrapping_mul(0x9e37_79b9))
}

#[derive(Debug)]
struct Node {
    /// The pool names of the node, the one requests use first; empty once every name
    /// was removed or replaced, so requests on the node fail instead of reaching
    /// whatever took its place. A rename can give a node a second name (the kernel
    /// still holds the old one while a subtree moves); lookups never do.
    paths: Vec<PathBuf>,
    lookups: u64,
    /// For a folder removed through the pool (or being removed): its last
    /// attributes with no links, which it answers with until the kernel forgets it,
    /// as a removed folder on a local file system does through a descriptor.
    removed: Option<libc::stat>,
}

/// FUSE node ids and the pool paths they stand for.
#[derive(Debug)]
pub struct NodeTable {
    nodes: HashMap<u64, Node>,
    /// Node id by path: the lookup of every FUSE request, one hash of the path's
    /// bytes.
    by_path: HashMap<OsString, u64>,
    /// The same paths ordered by their bytes, for subtrees: a folder's is the
    /// contiguous range of paths that start with `folder/` (unlink and rename touch
    /// it without scanning the whole table).
    ordered: BTreeSet<OsString>,
    next_id: u64,
}

impl Default for NodeTable {
    fn default() -> Self {
        Self::new()
    }
}

impl NodeTable {
    /// A table holding only the root (`/`, id [`ROOT_ID`]), which is never forgotten.
    pub fn new() -> Self {
        let root = PathBuf::from("/");
        NodeTable {
            nodes: HashMap::from([(
                ROOT_ID,
                Node {
                    paths: vec![root.clone()],
                    lookups: 1,
                    removed: None,
                },
            )]),
            by_path: HashMap::from([(root.clone().into_os_string(), ROOT_ID)]),
            ordered: BTreeSet::from([root.into_os_string()]),
            next_id: SYNTHETIC_BASE,
        }
    }

    /// The node id `path` resolves to, if the kernel was told of one.
    pub fn id(&self, path: &Path) -> Option<u64> {
        self.by_path.get(path.as_os_str()).copied()
    }

    /// Sets (or with `None` clears) the attributes node `id` answers with as a
    /// removed folder; see [`NodeTable::removed`].
    pub fn set_removed(&mut self, id: u64, stat: Option<libc::stat>) {
        if let Some(node) = self.nodes.get_mut(&id) {
            node.removed = stat;
        }
    }

    /// The attributes of node `id` if it is a folder removed through the pool: they
    /// are set just before the removal, which may yet fail, so they only answer
    /// where the folder itself no longer does. They go with the node when the
    /// kernel forgets it.
    pub fn removed(&self, id: u64) -> Option<libc::stat> {
        self.nodes.get(&id)?.removed
    }

    /// Applies `change` to the attributes of node `id` as a removed folder, if it is
    /// one, and returns them.
    pub fn change_removed(
        &mut self,
        id: u64,
        change: impl FnOnce(&mut libc::stat),
    ) -> Option<libc::stat> {
        let stat = self.nodes.get_mut(&id)?.removed.as_mut()?;
        change(stat);
        Some(*stat)
    }

    /// The pool path of node `id`, or `None` if the id is unknown or its entry is gone.
    pub fn path(&self, id: u64) -> Option<&Path> {
        self.nodes.get(&id)?.paths.first().map(PathBuf::as_path)
    }

    /// The path of `name` inside the directory node `parent`.
    pub fn child_path(&self, parent: u64, name: &std::ffi::OsStr) -> Option<PathBuf> {
        Some(self.path(parent)?.join(name))
    }

    /// Where `name` in the directory node `parent` is now: `path` (worked out from
    /// it earlier) when the parent has not moved since, else the name under the
    /// parent's new path. Requests work on a path outside the table's lock; one
    /// that records its result asks this first, so that a rename of the parent (or
    /// above) made meanwhile is followed rather than undone. `path` when the parent
    /// is gone.
    pub fn current<'p>(&self, parent: u64, name: &OsStr, path: &'p Path) -> Cow<'p, Path> {
        match self.path(parent) {
            Some(now) if path.parent() != Some(now) => Cow::Owned(now.join(name)),
            _ => Cow::Borrowed(path),
        }
    }

    /// Records one kernel lookup of `path`, shown as inode number `inode`, and
    /// returns its node id, creating the node on first sight.
    ///
    /// A new node takes `inode` (the `inodecalc` number the pool shows for it) as its
    /// id when no live node holds that id, so that the id and `st_ino` agree and the
    /// kernel may cache the attributes of the entry reply. Otherwise (the second name
    /// of a hard link, a hash collision, inode 0 or 1) it gets an id from the
    /// synthetic range, which the caller answers with an attribute timeout of zero.
    ///
    /// Every name gets a node of its own, hard links too, as mergerfs's names do: a
    /// request names only its node, so a node shared by two names would act on
    /// whichever name it had first. That name can be another file's by then (an
    /// inode number reused on the branch after a delete made there, a file renamed
    /// there), or, through a hard link, the same name on other branches. `st_ino`
    /// still shows hard links as one file (`devino-hash`, `hybrid-hash`).
    ///
    /// An id comes back only after the kernel forgot it, for the same file or another:
    /// FUSE allows that, and the generation can stay 0 because the pool is not
    /// NFS-exportable.
    pub fn lookup(&mut self, path: &Path, inode: u64) -> u64 {
        // The indexes compare bytes: paths come in the one spelling `child_path` makes.
        debug_assert!(
            path == Path::new("/") || !path.as_os_str().as_bytes().ends_with(b"/"),
            "{path:?}"
        );
        if let Some(&id) = self.by_path.get(path.as_os_str()) {
            if let Some(node) = self.nodes.get_mut(&id) {
                node.lookups += 1;
            }
            return id;
        }
        let id = if inode > ROOT_ID && !self.nodes.contains_key(&inode) {
            inode
        } else {
            self.synthetic_id()
        };
        self.nodes.insert(
            id,
            Node {
                paths: vec![path.to_path_buf()],
                lookups: 1,
                removed: None,
            },
        );
        self.index(path.as_os_str(), id);
        id
    }

    /// [`NodeTable::lookup`] for an entry of a directory listing (readdirplus),
    /// whose reply has one field for both the node id and the `d_ino` the listing
    /// shows. Where the name has (or would get) a synthetic id because its `inode`
    /// belongs to a live node of another name (the second name of a hard link), the
    /// listing names that node instead, counting a lookup of it but not adding the
    /// name: `d_ino` then equals `st_ino`. Returns the id and whether it is
    /// such a stand-in, which the caller sends with zero timeouts, so that the kernel
    /// looks the name up (and gets its own node) before it uses it.
    /// `same_file` tells whether the live node's name (see
    /// [`NodeTable::stand_in_for`]) still shows `inode`: a node left from a file
    /// deleted behind the pool, whose inode number the branch gave to another file,
    /// must not stand in for it.
    pub fn lookup_listed(&mut self, path: &Path, inode: u64, same_file: bool) -> (u64, bool) {
        if same_file && inode > ROOT_ID && self.by_path.get(path.as_os_str()) != Some(&inode) {
            if let Some(node) = self.nodes.get_mut(&inode) {
                node.lookups += 1;
                return (inode, true);
            }
        }
        (self.lookup(path, inode), false)
    }

    /// The name of the live node that could stand in for `path` in a listing (see
    /// [`NodeTable::lookup_listed`]): the node whose id is `inode`, when `path` is not
    /// its own. `None` when there is none, or it has no name left.
    pub fn stand_in_for(&self, path: &Path, inode: u64) -> Option<PathBuf> {
        if inode <= ROOT_ID || self.by_path.get(path.as_os_str()) == Some(&inode) {
            return None;
        }
        self.nodes.get(&inode)?.paths.first().cloned()
    }

    /// The next free id of the synthetic range (from 2^63 up, wrapping inside it).
    fn synthetic_id(&mut self) -> u64 {
        loop {
            let id = self.next_id;
            self.next_id = id.checked_add(1).unwrap_or(SYNTHETIC_BASE);
            if !self.nodes.contains_key(&id) {
                return id;
            }
        }
    }

    /// Drops `count` lookups of node `id` (FUSE `forget`); the node goes away when none
    /// are left. The root stays.
    pub fn forget(&mut self, id: u64, count: u64) {
        if id == ROOT_ID {
            return;
        }
        let Some(node) = self.nodes.get_mut(&id) else {
            return;
        };
        node.lookups = node.lookups.saturating_sub(count);
        if node.lookups == 0 {
            for path in self.nodes.remove(&id).map(|n| n.paths).unwrap_or_default() {
                if self.by_path.get(path.as_os_str()) == Some(&id) {
                    self.unindex(path.as_os_str());
                }
            }
        }
    }

    /// The entry at `path` was removed (unlink, rmdir): its node and those below it
    /// keep their ids until forgotten but no longer resolve to that path (a file
    /// keeps its other names).
    pub fn remove(&mut self, path: &Path) {
        for (old, id) in self.take_subtree(path) {
            if let Some(node) = self.nodes.get_mut(&id) {
                node.paths.retain(|p| *p != old);
            }
        }
    }

    /// `from` was renamed to `to`: the nodes of `from` and everything below it now
    /// stand for the same names under `to`; whatever `to` was before is detached.
    pub fn rename(&mut self, from: &Path, to: &Path) {
        if from == to {
            return;
        }
        self.remove(to);
        for (old, id) in self.take_subtree(from) {
            let Ok(rest) = old.strip_prefix(from) else {
                continue;
            };
            let new = if rest.as_os_str().is_empty() {
                to.to_path_buf()
            } else {
                to.join(rest)
            };
            if let Some(node) = self.nodes.get_mut(&id) {
                match node.paths.iter_mut().find(|p| **p == old) {
                    Some(name) => *name = new.clone(),
                    None => node.paths.push(new.clone()),
                }
            }
            self.index(new.as_os_str(), id);
        }
    }

    /// Removes `path` and every path below it from the path index, returning them.
    fn take_subtree(&mut self, path: &Path) -> Vec<(PathBuf, u64)> {
        let mut prefix = path.as_os_str().as_bytes().to_vec();
        if prefix.last() != Some(&b'/') {
            prefix.push(b'/');
        }
        let prefix = OsString::from_vec(prefix);
        let below: Vec<OsString> = self
            .ordered
            .range::<OsStr, _>((Bound::Included(prefix.as_os_str()), Bound::Unbounded))
            .take_while(|p| p.as_bytes().starts_with(prefix.as_bytes()))
            .cloned()
            .collect();
        std::iter::once(path.as_os_str().to_owned())
            .chain(below)
            .filter_map(|p| self.unindex(&p).map(|id| (PathBuf::from(p), id)))
            .collect()
    }

    /// Maps `path` to node `id` in both path indexes.
    fn index(&mut self, path: &OsStr, id: u64) {
        if self.by_path.insert(path.to_owned(), id).is_none() {
            self.ordered.insert(path.to_owned());
        }
    }

    /// Unmaps `path` from both path indexes, returning the node id it had.
    fn unindex(&mut self, path: &OsStr) -> Option<u64> {
        let id = self.by_path.remove(path)?;
        self.ordered.remove(path);
        Some(id)
    }

    /// Number of live nodes, the root included.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the table holds nothing but the root.
    pub fn is_empty(&self) -> bool {
        self.nodes.len() <= 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    const FILE: u32 = libc::S_IFREG | 0o644;
    const DIR: u32 = libc::S_IFDIR | 0o755;

    #[test]
    fn names_round_trip() {
        for mode in InodeCalc::ALL {
            assert_eq!(mode.name().parse::<InodeCalc>(), Ok(mode));
        }
        assert_eq!(InodeCalc::default(), InodeCalc::HybridHash);
        let err = "pathhash".parse::<InodeCalc>().unwrap_err().to_string();
        assert!(
            err.contains("pathhash") && err.contains("hybrid-hash32"),
            "{err}"
        );
    }

    #[test]
    fn fnv_matches_reference_values() {
        // Published FNV-1a 64 test vectors.
        assert_eq!(fnv1a(FNV_OFFSET, b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(FNV_OFFSET, b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(FNV_OFFSET, b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn passthrough_keeps_the_inode() {
        let ino = InodeCalc::Passthrough.inode(Path::new("/b"), Path::new("/f"), FILE, 42);
        assert_eq!(ino, 42);
    }

    #[test]
    fn path_hash_ignores_branch_and_inode() {
        let m = InodeCalc::PathHash;
        let a = m.inode(Path::new("/b1"), Path::new("/d/f"), FILE, 10);
        assert_eq!(a, m.inode(Path::new("/b2"), Path::new("/d/f"), FILE, 99));
        assert_ne!(a, m.inode(Path::new("/b1"), Path::new("/d/g"), FILE, 10));
    }

    #[test]
    fn devino_hash_follows_branch_and_inode_not_path() {
        let m = InodeCalc::DevinoHash;
        let a = m.inode(Path::new("/b1"), Path::new("/f"), FILE, 10);
        // A hard link: another path, same underlying inode.
        assert_eq!(a, m.inode(Path::new("/b1"), Path::new("/link"), FILE, 10));
        assert_ne!(a, m.inode(Path::new("/b2"), Path::new("/f"), FILE, 10));
        assert_ne!(a, m.inode(Path::new("/b1"), Path::new("/f"), FILE, 11));
    }

    #[test]
    fn hybrid_uses_path_for_directories_and_devino_otherwise() {
        let (b, p) = (Path::new("/b1"), Path::new("/d"));
        let h = InodeCalc::HybridHash;
        assert_eq!(
            h.inode(b, p, DIR, 5),
            InodeCalc::PathHash.inode(b, p, DIR, 5)
        );
        assert_eq!(
            h.inode(b, p, FILE, 5),
            InodeCalc::DevinoHash.inode(b, p, FILE, 5)
        );
        let h32 = InodeCalc::HybridHash32;
        assert_eq!(
            h32.inode(b, p, DIR, 5),
            InodeCalc::PathHash32.inode(b, p, DIR, 5)
        );
        assert_eq!(
            h32.inode(b, p, FILE, 5),
            InodeCalc::DevinoHash32.inode(b, p, FILE, 5)
        );
    }

    #[test]
    fn folded_variants_fit_32_bits_and_stay_deterministic() {
        for mode in [
            InodeCalc::PathHash32,
            InodeCalc::DevinoHash32,
            InodeCalc::HybridHash32,
        ] {
            for i in 0..1000u64 {
                let path = PathBuf::from(format!("/dir/{i}"));
                let ino = mode.inode(Path::new("/b"), &path, FILE, i);
                assert!(ino <= u64::from(u32::MAX) && ino > 0);
                assert_eq!(ino, mode.inode(Path::new("/b"), &path, FILE, i));
            }
        }
    }

    #[test]
    fn lookups_share_ids_and_forget_frees_them() {
        let mut t = NodeTable::new();
        assert_eq!(t.path(ROOT_ID), Some(Path::new("/")));
        let a = t.lookup(Path::new("/a"), 7);
        assert_eq!(a, 7);
        assert_eq!(t.lookup(Path::new("/a"), 7), a);
        assert_eq!(
            t.child_path(ROOT_ID, "a".as_ref()),
            Some(PathBuf::from("/a"))
        );
        t.forget(a, 1);
        assert_eq!(t.path(a), Some(Path::new("/a")));
        t.forget(a, 1);
        assert_eq!(t.path(a), None);
        assert!(t.is_empty());
        // Once forgotten, the inode number is free to be the id again.
        assert_eq!(t.lookup(Path::new("/a"), 7), a);
        t.forget(ROOT_ID, 10);
        assert_eq!(t.path(ROOT_ID), Some(Path::new("/")));
    }

    #[test]
    fn rename_moves_the_subtree_and_detaches_the_target() {
        let mut t = NodeTable::new();
        let d = t.lookup(Path::new("/d"), 10);
        let f = t.lookup(Path::new("/d/sub/f"), 11);
        let sibling = t.lookup(Path::new("/dx"), 12);
        let target = t.lookup(Path::new("/e"), 13);
        t.rename(Path::new("/d"), Path::new("/e"));
        assert_eq!(t.path(d), Some(Path::new("/e")));
        assert_eq!(t.path(f), Some(Path::new("/e/sub/f")));
        // `/dx` shares a string prefix with `/d` but is not below it.
        assert_eq!(t.path(sibling), Some(Path::new("/dx")));
        assert_eq!(t.path(target), None);
        assert_eq!(t.lookup(Path::new("/e/sub/f"), 11), f);
        // Forgetting the detached node must not unmap the path now owned by `d`.
        t.forget(target, 1);
        assert_eq!(t.lookup(Path::new("/e"), 99), d);
    }

    #[test]
    fn a_name_found_before_its_parent_moved_is_recorded_where_it_is_now() {
        let mut t = NodeTable::new();
        let d = t.lookup(Path::new("/p/d"), 10);
        // A lookup of `x` in `d` worked out `/p/d/x`; `d` then moved.
        let before = t.child_path(d, OsStr::new("x")).unwrap();
        assert_eq!(t.current(d, OsStr::new("x"), &before), Path::new("/p/d/x"));
        t.rename(Path::new("/p/d"), Path::new("/q/d"));
        let now = t.current(d, OsStr::new("x"), &before).into_owned();
        assert_eq!(now, Path::new("/q/d/x"));
        let x = t.lookup(&now, 11);
        assert_eq!(t.path(x), Some(Path::new("/q/d/x")));
        // The root's children, and a parent that is gone, keep the path given.
        let top = t.child_path(ROOT_ID, OsStr::new("y")).unwrap();
        assert_eq!(t.current(ROOT_ID, OsStr::new("y"), &top), Path::new("/y"));
        t.forget(d, 1);
        assert_eq!(t.current(d, OsStr::new("x"), &before), Path::new("/p/d/x"));
    }

    #[test]
    fn subtrees_are_exact_in_byte_order() {
        // In byte order ` ` and `-` sort before `/`, so these siblings sit between
        // `/d` and its children; `/d0` comes after them.
        let mut t = NodeTable::new();
        let names = ["/d", "/d b", "/d-c", "/d/x", "/d/x/y", "/d0", "/c/d/x"];
        let ids: Vec<u64> = (0..names.len())
            .map(|i| t.lookup(Path::new(names[i]), 20 + i as u64))
            .collect();
        t.rename(Path::new("/d"), Path::new("/m"));
        let paths: Vec<Option<&Path>> = ids.iter().map(|&id| t.path(id)).collect();
        let expect = ["/m", "/d b", "/d-c", "/m/x", "/m/x/y", "/d0", "/c/d/x"];
        assert_eq!(paths, expect.map(|p| Some(Path::new(p))).to_vec());
        t.remove(Path::new("/m"));
        let left: Vec<bool> = ids.iter().map(|&id| t.path(id).is_some()).collect();
        assert_eq!(left, [false, true, true, false, false, true, true]);
        // The siblings still resolve to their nodes.
        assert_eq!(t.lookup(Path::new("/d-c"), 99), ids[2]);
        assert_eq!(t.lookup(Path::new("/d0"), 99), ids[5]);
        // Both path indexes hold the same paths.
        let hashed: BTreeSet<&OsString> = t.by_path.keys().collect();
        assert_eq!(hashed, t.ordered.iter().collect::<BTreeSet<_>>());
        assert_eq!(hashed.len(), 5, "{hashed:?}");
    }

    #[test]
    fn remove_detaches_the_subtree() {
        let mut t = NodeTable::new();
        let d = t.lookup(Path::new("/d"), 10);
        let f = t.lookup(Path::new("/d/f"), 14);
        t.remove(Path::new("/d"));
        assert_eq!((t.path(d), t.path(f)), (None, None));
        assert_eq!(t.len(), 3);
        t.forget(f, 1);
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn taken_or_reserved_inodes_get_synthetic_ids() {
        let mut t = NodeTable::new();
        assert_eq!(t.lookup(Path::new("/a"), 42), 42);
        // Another name showing the same number (a hard link, a collision) gets a
        // node of its own.
        let b = t.lookup(Path::new("/b"), 42);
        assert!(b >= SYNTHETIC_BASE);
        // Inode 0 and the root's id are never node ids of other entries.
        let zero = t.lookup(Path::new("/z"), 0);
        let one = t.lookup(Path::new("/o"), ROOT_ID);
        let ids = BTreeSet::from([b, zero, one]);
        assert_eq!(ids.len(), 3);
        assert!(ids.iter().all(|&id| id >= SYNTHETIC_BASE));
        // An inode number equal to a live synthetic id does not take it over.
        assert_ne!(t.lookup(Path::new("/c"), b), b);
        assert_eq!(t.path(b), Some(Path::new("/b")));
    }

    #[test]
    fn a_listed_second_name_stands_in_with_the_first_names_node() {
        let mut t = NodeTable::new();
        assert_eq!(t.lookup(Path::new("/a"), 42), 42);
        assert_eq!(t.stand_in_for(Path::new("/b"), 42), Some("/a".into()));
        assert_eq!(t.lookup_listed(Path::new("/b"), 42, true), (42, true));
        // The name is not added, and the extra lookup is counted.
        assert_eq!(t.child_path(ROOT_ID, "b".as_ref()), Some("/b".into()));
        assert!(!t.by_path.contains_key(OsStr::new("/b")));
        t.forget(42, 1);
        assert_eq!(t.path(42), Some(Path::new("/a")));
        // Also once the name has a synthetic node of its own.
        let b = t.lookup(Path::new("/b"), 42);
        assert_ne!(b, 42);
        assert_eq!(t.lookup_listed(Path::new("/b"), 42, true), (42, true));
        // Not when the live node's name is another file now.
        assert_eq!(t.lookup_listed(Path::new("/b"), 42, false), (b, false));
        // The first name, or a free number, is a plain lookup.
        assert_eq!(t.stand_in_for(Path::new("/a"), 42), None);
        assert_eq!(t.lookup_listed(Path::new("/a"), 42, true), (42, false));
        assert_eq!(t.lookup_listed(Path::new("/c"), 77, true), (77, false));
        assert_eq!(t.path(77), Some(Path::new("/c")));
    }

    #[test]
    fn each_name_of_one_file_keeps_its_own_node() {
        let mut t = NodeTable::new();
        assert_eq!(t.lookup(Path::new("/a"), 42), 42);
        let b = t.lookup(Path::new("/b"), 42);
        assert_eq!(t.lookup(Path::new("/b"), 42), b);
        assert_eq!(
            (t.path(42), t.path(b)),
            (Some(Path::new("/a")), Some(Path::new("/b")))
        );
        // Removing one name leaves the other; renaming it moves that one.
        t.remove(Path::new("/a"));
        assert_eq!((t.path(42), t.path(b)), (None, Some(Path::new("/b"))));
        t.rename(Path::new("/b"), Path::new("/c"));
        assert_eq!(t.path(b), Some(Path::new("/c")));
        // A name made on the branch after the first one went, with its inode number
        // (reused by the filesystem), is a file of its own.
        let g = t.lookup(Path::new("/g"), 42);
        assert_ne!(g, 42);
        assert_eq!((t.path(42), t.path(g)), (None, Some(Path::new("/g"))));
        t.forget(42, 1);
        t.forget(b, 2);
        t.forget(g, 1);
        assert!(t.is_empty());
        assert_eq!(t.lookup(Path::new("/c"), 42), 42);
    }
}
