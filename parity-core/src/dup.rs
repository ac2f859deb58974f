//! `lhparity dup`: files with the same content anywhere in the array, found from the
//! block hashes the state already holds, without reading a disk (like `snapraid
//! dup`).
//!
//! Two files are duplicates when they have the same size and the same hash for every
//! block. Every block hash of an array uses the array's one key, so equal bytes give
//! equal hashes on any disk. Empty files, and files with blocks whose hash is not
//! known yet (added since the last sync), are left out, and so are the other names
//! of a hard-linked file, which take no space of their own.

use std::collections::HashMap;

use crate::state::model::{Hash, State};

/// One file of a group: its disk and its path on that disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Copy {
    pub disk: String,
    pub path: String,
}

/// Files with the same content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Group {
    pub size: u64,
    /// At least two, in disk order then path order.
    pub files: Vec<Copy>,
}

impl Group {
    /// Bytes that all copies but one take.
    pub fn redundant_bytes(&self) -> u64 {
        self.size * (self.files.len() as u64 - 1)
    }
}

/// Every group of duplicates, largest files first.
pub fn find(state: &State) -> Vec<Group> {
    let mut by_content: HashMap<(u64, &[Hash]), Vec<Copy>> = HashMap::new();
    for disk in &state.disks {
        // Names of one file (hard links) are one copy: the first name stands for it.
        let mut seen = std::collections::HashSet::new();
        for f in &disk.files {
            if f.size == 0 || f.has_new_blocks() || f.hashes.is_empty() || !seen.insert(f.inode) {
                continue;
            }
            by_content
                .entry((f.size, f.hashes.as_slice()))
                .or_default()
                .push(Copy {
                    disk: disk.name.clone(),
                    path: f.path.clone(),
                });
        }
    }
    let mut groups: Vec<Group> = by_content
        .into_iter()
        .filter(|(_, files)| files.len() > 1)
        .map(|((size, _), files)| Group { size, files })
        .collect();
    groups.sort_by(|a, b| {
        b.size.cmp(&a.size).then_with(|| {
            (&a.files[0].disk, &a.files[0].path).cmp(&(&b.files[0].disk, &b.files[0].path))
        })
    });
    groups
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::model::{Disk, FileEntry};

    fn file(path: &str, size: u64, hashes: &[u8]) -> FileEntry {
        FileEntry {
            path: path.into(),
            size,
            hashes: hashes.iter().map(|&b| [b; 16]).collect(),
            // A distinct inode per name.
            inode: path.bytes().fold(7, |h, b| h * 31 + u64::from(b)),
            ..FileEntry::default()
        }
    }

    #[test]
    fn the_names_of_a_hard_link_are_one_copy() {
        let mut link = file("link", 300, &[1, 2]);
        link.inode = file("a", 0, &[]).inode;
        let s = state(vec![("d1", vec![file("a", 300, &[1, 2]), link])]);
        assert!(find(&s).is_empty());
        // A real copy elsewhere still makes a group of two.
        let mut link = file("link", 300, &[1, 2]);
        link.inode = file("a", 0, &[]).inode;
        let s = state(vec![
            ("d1", vec![file("a", 300, &[1, 2]), link]),
            ("d2", vec![file("a", 300, &[1, 2])]),
        ]);
        let groups = find(&s);
        assert_eq!(groups.len(), 1);
        assert_eq!(groups[0].files.len(), 2);
    }

    fn state(disks: Vec<(&str, Vec<FileEntry>)>) -> State {
        let mut state = State::new(256 << 10, [9; 32], 1);
        state.disks = disks
            .into_iter()
            .map(|(name, files)| Disk {
                name: name.into(),
                files,
                ..Disk::default()
            })
            .collect();
        state
    }

    #[test]
    fn same_size_and_hashes_on_any_disk_are_duplicates() {
        let s = state(vec![
            ("d1", vec![file("a", 300, &[1, 2]), file("b", 10, &[7])]),
            (
                "d2",
                vec![file("copy/a", 300, &[1, 2]), file("c", 10, &[7])],
            ),
            ("d3", vec![file("x/a", 300, &[1, 2])]),
        ]);
        let groups = find(&s);
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[0].size, 300);
        let names: Vec<String> = groups[0]
            .files
            .iter()
            .map(|c| format!("{}:{}", c.disk, c.path))
            .collect();
        assert_eq!(names, ["d1:a", "d2:copy/a", "d3:x/a"]);
        assert_eq!(groups[0].redundant_bytes(), 600);
        assert_eq!(groups[1].files.len(), 2);
    }

    #[test]
    fn other_content_empty_files_and_unsynced_files_are_not() {
        let mut unsynced = file("new", 100, &[0]);
        unsynced.new_blocks = vec![1];
        let s = state(vec![
            (
                "d1",
                vec![file("a", 100, &[1]), file("e", 0, &[]), unsynced.clone()],
            ),
            (
                "d2",
                vec![file("b", 100, &[2]), file("f", 0, &[]), unsynced],
            ),
            ("d3", vec![file("c", 101, &[1])]),
        ]);
        assert!(find(&s).is_empty());
    }
}
