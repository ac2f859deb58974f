//! Branches and the branch list: the `PATH[=MODE[,MINFREESPACE]]` entries joined by
//! `:` that mergerfs takes on its command line and in `user.mergerfs.branches`, size
//! values such as `4G`, the check that keeps the mountpoint out of its own pool, and
//! the runtime edits (`=`, `+<`, `+>`, `+`, `-`, `-<`, `->`) of the list.
//!
//! Everything here is pure: wildcards are expanded through a [`GlobExpander`], and
//! edits build a new list instead of changing the old one, so a request in flight keeps
//! the snapshot it started with and a bad edit leaves the list as it was.

use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use thiserror::Error;

use crate::glob::{self, GlobExpander};

/// What a branch may be used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BranchMode {
    /// Read-write: eligible for every policy.
    #[default]
    RW,
    /// Read-only: never chosen by create or action policies.
    RO,
    /// No-create: existing entries may be changed or removed, nothing new is placed here.
    NC,
}

impl BranchMode {
    /// The mode as written in a branch list.
    pub fn as_str(self) -> &'static str {
        match self {
            BranchMode::RW => "RW",
            BranchMode::RO => "RO",
            BranchMode::NC => "NC",
        }
    }
}

impl FromStr for BranchMode {
    type Err = BranchError;

    /// Parses `RW`, `RO` or `NC`; case matters, as in mergerfs.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "RW" => Ok(BranchMode::RW),
            "RO" => Ok(BranchMode::RO),
            "NC" => Ok(BranchMode::NC),
            _ => Err(BranchError::Mode {
                mode: text.to_owned(),
            }),
        }
    }
}

impl fmt::Display for BranchMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One directory of the pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Branch {
    /// The branch root.
    pub path: PathBuf,
    /// What the branch may be used for.
    pub mode: BranchMode,
    /// Bytes that create policies keep free on this branch; `None` follows the global
    /// `minfreespace` option, including later changes of it.
    pub min_free_space: Option<u64>,
}

impl Branch {
    /// The free space create policies must leave on this branch, given the global
    /// `minfreespace` value.
    pub fn min_free_space_or(&self, global: u64) -> u64 {
        self.min_free_space.unwrap_or(global)
    }
}

impl fmt::Display for Branch {
    /// Writes the entry in branch-list syntax, e.g. `/mnt/a=RW,1073741824`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.path.display(), self.mode)?;
        if let Some(bytes) = self.min_free_space {
            write!(f, ",{bytes}")?;
        }
        Ok(())
    }
}

/// Writes a branch list in the syntax [`parse_branches`] reads back.
pub fn format_branches(branches: &[Branch]) -> String {
    branches
        .iter()
        .map(Branch::to_string)
        .collect::<Vec<_>>()
        .join(":")
}

/// Why a size such as `4G` was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SizeError {
    /// The text does not have the `N[B|K|M|G|T]` shape.
    #[error("`{text}` is not a size; expected digits with an optional B, K, M, G or T suffix, e.g. `4G`")]
    Syntax {
        /// The refused text.
        text: String,
    },
    /// The value does not fit in 64 bits.
    #[error("`{text}` is too large; sizes must stay below 16 EiB")]
    Overflow {
        /// The refused text.
        text: String,
    },
}

/// Why a branch list or branch edit was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum BranchError {
    /// A mode other than `RW`, `RO` or `NC`.
    #[error("unknown branch mode `{mode}`; expected RW, RO or NC (upper case)")]
    Mode {
        /// The refused mode text.
        mode: String,
    },
    /// A problem with one entry of a branch list.
    #[error("branch `{entry}`: {source}")]
    Entry {
        /// The whole refused entry.
        entry: String,
        /// What is wrong with it.
        #[source]
        source: Box<BranchError>,
    },
    /// An entry with options but no path, such as `=RO`.
    #[error("no path before `=`; expected PATH[=RW|RO|NC[,MINFREESPACE]]")]
    EmptyPath,
    /// A bad per-branch minimum free space.
    #[error("minimum free space {0}")]
    MinFreeSpace(#[from] SizeError),
    /// Options after the minimum free space.
    #[error(
        "unexpected `{extra}` after the minimum free space; expected PATH[=MODE[,MINFREESPACE]]"
    )]
    TrailingOptions {
        /// The unexpected text.
        extra: String,
    },
    /// A branch that is the mountpoint or lies inside it, which would make the pool
    /// contain itself.
    #[error("branch `{branch}` is the mountpoint `{mountpoint}` or inside it; use a directory outside the mount")]
    InsideMountpoint {
        /// The refused branch path.
        branch: PathBuf,
        /// The mountpoint.
        mountpoint: PathBuf,
    },
    /// A mountpoint inside a branch: the pool would list itself inside itself, and
    /// a walk of it (find, du, a backup) would have the pool wait on its own answers.
    #[error("the mountpoint `{mountpoint}` is inside branch `{branch}`, so the pool would contain itself; mount it outside every branch")]
    ContainsMountpoint {
        /// The branch that holds the mountpoint.
        branch: PathBuf,
        /// The mountpoint.
        mountpoint: PathBuf,
    },
    /// `-<` or `->` followed by more text.
    #[error("`{op}` takes no argument but got `{extra}`; write `{op}` alone")]
    EditArgument {
        /// The edit operator.
        op: &'static str,
        /// The text after it.
        extra: String,
    },
}

/// Parses a size `N[B|K|M|G|T]` (suffix in either case, 1024-based), as used for
/// `minfreespace`.
pub fn parse_size(text: &str) -> Result<u64, SizeError> {
    let syntax = || SizeError::Syntax {
        text: text.to_owned(),
    };
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, suffix) = text.split_at(split);
    if digits.is_empty() {
        return Err(syntax());
    }
    // `4G`, and as mergerfs also takes them `4GB`, `4Gb`, `4GiB`: powers of 1024.
    let unit = ["iB", "ib", "B", "b"]
        .iter()
        .find_map(|tail| suffix.strip_suffix(tail).filter(|u| !u.is_empty()))
        .unwrap_or(suffix);
    let shift = match unit {
        "" | "B" | "b" => 0,
        "K" | "k" => 10,
        "M" | "m" => 20,
        "G" | "g" => 30,
        "T" | "t" => 40,
        _ => return Err(syntax()),
    };
    let overflow = || SizeError::Overflow {
        text: text.to_owned(),
    };
    let value: u64 = digits.parse().map_err(|_| overflow())?;
    value.checked_mul(1u64 << shift).ok_or_else(overflow)
}

/// One entry of a branch list before wildcard expansion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BranchSpec {
    /// The path or wildcard pattern.
    pub pattern: PathBuf,
    /// The mode every expanded branch gets.
    pub mode: BranchMode,
    /// The per-branch minimum free space every expanded branch gets.
    pub min_free_space: Option<u64>,
}

impl FromStr for BranchSpec {
    type Err = BranchError;

    /// Parses one `PATH[=MODE[,MINFREESPACE]]` entry. Options follow the last `=`, so a
    /// path that itself holds `=` is written with an explicit mode (`/a=b=RW`).
    fn from_str(entry: &str) -> Result<Self, Self::Err> {
        let in_entry = |source: BranchError| BranchError::Entry {
            entry: entry.to_owned(),
            source: Box::new(source),
        };
        let (path, options) = match entry.rsplit_once('=') {
            Some((path, options)) => (path, Some(options)),
            None => (entry, None),
        };
        if path.is_empty() {
            return Err(in_entry(BranchError::EmptyPath));
        }
        let mut spec = BranchSpec {
            pattern: PathBuf::from(path),
            mode: BranchMode::RW,
            min_free_space: None,
        };
        if let Some(options) = options {
            let mut parts = options.splitn(3, ',');
            if let Some(mode) = parts.next() {
                spec.mode = mode.parse().map_err(in_entry)?;
            }
            if let Some(size) = parts.next() {
                let size = parse_size(size).map_err(|e| in_entry(e.into()))?;
                spec.min_free_space = Some(size);
            }
            if let Some(extra) = parts.next() {
                return Err(in_entry(BranchError::TrailingOptions {
                    extra: extra.to_owned(),
                }));
            }
        }
        Ok(spec)
    }
}

/// Parses a `:`-separated branch list into entries, without expanding wildcards.
/// Empty entries (from `::` or a trailing `:`) are skipped, so an empty text is an
/// empty list.
pub fn parse_specs(text: &str) -> Result<Vec<BranchSpec>, BranchError> {
    text.split(':')
        .filter(|entry| !entry.is_empty())
        .map(str::parse)
        .collect()
}

/// Parses a branch list and expands wildcards through `expander`. A pattern that
/// matches nothing is kept literally, so a disk that is not mounted yet still shows up
/// as a branch.
pub fn parse_branches(text: &str, expander: &dyn GlobExpander) -> Result<Vec<Branch>, BranchError> {
    Ok(parse_specs(text)?
        .into_iter()
        .flat_map(|spec| expand(spec, expander))
        .collect())
}

fn expand(spec: BranchSpec, expander: &dyn GlobExpander) -> Vec<Branch> {
    let mut paths = expander.expand(&spec.pattern);
    if paths.is_empty() {
        paths.push(spec.pattern);
    }
    paths
        .into_iter()
        .map(|path| Branch {
            path,
            mode: spec.mode,
            min_free_space: spec.min_free_space,
        })
        .collect()
}

/// Refuses any branch that is `mountpoint` or lies below it, and any branch that
/// holds the mountpoint. Both sides are compared component by component as given, so
/// callers pass resolved (canonical) paths.
pub fn check_mountpoint(branches: &[Branch], mountpoint: &Path) -> Result<(), BranchError> {
    if let Some(branch) = branches.iter().find(|b| b.path.starts_with(mountpoint)) {
        return Err(BranchError::InsideMountpoint {
            branch: branch.path.clone(),
            mountpoint: mountpoint.to_path_buf(),
        });
    }
    match branches.iter().find(|b| mountpoint.starts_with(&b.path)) {
        Some(branch) => Err(BranchError::ContainsMountpoint {
            branch: branch.path.clone(),
            mountpoint: mountpoint.to_path_buf(),
        }),
        None => Ok(()),
    }
}

/// A runtime change of the branch list, as written to `user.mergerfs.branches`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BranchEdit {
    /// `LIST` or `=LIST`: use exactly these branches (an empty list clears the pool).
    Replace(Vec<Branch>),
    /// `+<LIST`: put these branches in front.
    Prepend(Vec<Branch>),
    /// `+>LIST` or `+LIST`: add these branches at the end.
    Append(Vec<Branch>),
    /// `-PATTERNS`: drop every branch whose path matches one of the `:`-separated
    /// wildcard patterns.
    Remove(Vec<String>),
    /// `-<`: drop the first branch.
    RemoveFirst,
    /// `->`: drop the last branch.
    RemoveLast,
}

impl BranchEdit {
    /// Parses an edit instruction; the branch lists in it are expanded with `expander`.
    pub fn parse(value: &str, expander: &dyn GlobExpander) -> Result<Self, BranchError> {
        let no_argument = |op: &'static str, rest: &str| {
            if rest.is_empty() {
                Ok(())
            } else {
                Err(BranchError::EditArgument {
                    op,
                    extra: rest.to_owned(),
                })
            }
        };
        if let Some(list) = value.strip_prefix("+<") {
            Ok(BranchEdit::Prepend(parse_branches(list, expander)?))
        } else if let Some(list) = value.strip_prefix("+>") {
            Ok(BranchEdit::Append(parse_branches(list, expander)?))
        } else if let Some(list) = value.strip_prefix('+') {
            Ok(BranchEdit::Append(parse_branches(list, expander)?))
        } else if let Some(rest) = value.strip_prefix("-<") {
            no_argument("-<", rest).map(|()| BranchEdit::RemoveFirst)
        } else if let Some(rest) = value.strip_prefix("->") {
            no_argument("->", rest).map(|()| BranchEdit::RemoveLast)
        } else if let Some(patterns) = value.strip_prefix('-') {
            Ok(BranchEdit::Remove(
                patterns
                    .split(':')
                    .filter(|p| !p.is_empty())
                    .map(str::to_owned)
                    .collect(),
            ))
        } else {
            let list = value.strip_prefix('=').unwrap_or(value);
            Ok(BranchEdit::Replace(parse_branches(list, expander)?))
        }
    }

    /// The branch list after this edit; `current` is left untouched. Removing from an
    /// empty list leaves it empty.
    pub fn apply(&self, current: &[Branch]) -> Vec<Branch> {
        match self {
            BranchEdit::Replace(list) => list.clone(),
            BranchEdit::Prepend(list) => list.iter().chain(current).cloned().collect(),
            BranchEdit::Append(list) => current.iter().chain(list).cloned().collect(),
            BranchEdit::Remove(patterns) => current
                .iter()
                .filter(|b| {
                    let path = b.path.as_os_str().as_bytes();
                    !patterns.iter().any(|p| glob::matches(p.as_bytes(), path))
                })
                .cloned()
                .collect(),
            BranchEdit::RemoveFirst => current.iter().skip(1).cloned().collect(),
            BranchEdit::RemoveLast => {
                let keep = current.len().saturating_sub(1);
                current[..keep].to_vec()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Expands `/mnt/disk*` to three disks and nothing else, like a host with
    /// `/mnt/disk1..3` mounted.
    struct ThreeDisks;

    impl GlobExpander for ThreeDisks {
        fn expand(&self, pattern: &Path) -> Vec<PathBuf> {
            if pattern == Path::new("/mnt/disk*") {
                ["/mnt/disk1", "/mnt/disk2", "/mnt/disk3"]
                    .iter()
                    .map(PathBuf::from)
                    .collect()
            } else {
                Vec::new()
            }
        }
    }

    fn branch(path: &str, mode: BranchMode, min: Option<u64>) -> Branch {
        Branch {
            path: PathBuf::from(path),
            mode,
            min_free_space: min,
        }
    }

    fn list(text: &str) -> Vec<Branch> {
        parse_branches(text, &ThreeDisks).unwrap()
    }

    fn paths(branches: &[Branch]) -> Vec<&str> {
        branches.iter().map(|b| b.path.to_str().unwrap()).collect()
    }

    #[test]
    fn sizes_are_1024_based_with_either_case() {
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("512"), Ok(512));
        assert_eq!(parse_size("512B"), Ok(512));
        assert_eq!(parse_size("512b"), Ok(512));
        assert_eq!(parse_size("1K"), Ok(1024));
        assert_eq!(parse_size("3k"), Ok(3 * 1024));
        assert_eq!(parse_size("2M"), Ok(2 << 20));
        assert_eq!(parse_size("4G"), Ok(4 << 30));
        // mergerfs also takes a B after the unit, with or without an i.
        assert_eq!(parse_size("20GB"), Ok(20 << 30));
        assert_eq!(parse_size("1Gb"), Ok(1 << 30));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("1KB"), Ok(1024));
        assert_eq!(parse_size("2tib"), Ok(2 << 40));
        assert!(parse_size("1iB").is_err() && parse_size("1XB").is_err());
        assert_eq!(parse_size("4g"), Ok(4 << 30));
        assert_eq!(parse_size("5T"), Ok(5 << 40));
        assert_eq!(parse_size("16777215T"), Ok(16_777_215 << 40));
    }

    #[test]
    fn bad_sizes_are_refused_with_the_text() {
        for bad in ["", "G", "4X", "-1", "1.5G", " 4G", "4 G"] {
            let err = parse_size(bad).unwrap_err();
            assert_eq!(
                err,
                SizeError::Syntax {
                    text: bad.to_owned()
                },
                "{bad:?}"
            );
        }
        let msg = parse_size("4X").unwrap_err().to_string();
        assert!(msg.contains("`4X`") && msg.contains("e.g. `4G`"), "{msg}");
        assert!(matches!(
            parse_size("16777216T"),
            Err(SizeError::Overflow { .. })
        ));
        assert!(matches!(
            parse_size("99999999999999999999"),
            Err(SizeError::Overflow { .. })
        ));
    }

    #[test]
    fn modes_are_case_sensitive() {
        assert_eq!("RW".parse(), Ok(BranchMode::RW));
        assert_eq!("RO".parse(), Ok(BranchMode::RO));
        assert_eq!("NC".parse(), Ok(BranchMode::NC));
        assert!("ro".parse::<BranchMode>().is_err());
        assert_eq!(BranchMode::default(), BranchMode::RW);
    }

    #[test]
    fn parses_paths_modes_and_min_free_space() {
        let got = list("/mnt/a:/mnt/b=RO:/mnt/c=NC,100G:/mnt/d=RW,512");
        assert_eq!(
            got,
            vec![
                branch("/mnt/a", BranchMode::RW, None),
                branch("/mnt/b", BranchMode::RO, None),
                branch("/mnt/c", BranchMode::NC, Some(100 << 30)),
                branch("/mnt/d", BranchMode::RW, Some(512)),
            ]
        );
    }

    #[test]
    fn empty_entries_are_skipped() {
        assert_eq!(paths(&list("/a::/b:")), vec!["/a", "/b"]);
        assert!(list("").is_empty());
    }

    #[test]
    fn options_follow_the_last_equals_sign() {
        assert_eq!(
            list("/odd=name=RO"),
            vec![branch("/odd=name", BranchMode::RO, None)]
        );
    }

    #[test]
    fn wildcards_expand_and_share_the_options() {
        let got = list("/mnt/disk*=NC,1G:/mnt/parity*");
        assert_eq!(
            paths(&got),
            vec!["/mnt/disk1", "/mnt/disk2", "/mnt/disk3", "/mnt/parity*"],
            "an unmatched pattern stays literal"
        );
        assert!(got[..3]
            .iter()
            .all(|b| b.mode == BranchMode::NC && b.min_free_space == Some(1 << 30)));
        assert_eq!(got[3].mode, BranchMode::RW);
    }

    #[test]
    fn bad_entries_name_the_entry_and_the_expectation() {
        let err = parse_branches("/a:/b=rw", &ThreeDisks).unwrap_err();
        assert_eq!(
            err.to_string(),
            "branch `/b=rw`: unknown branch mode `rw`; expected RW, RO or NC (upper case)"
        );
        let err = parse_branches("/a=RW,lots", &ThreeDisks).unwrap_err();
        assert_eq!(
            err.to_string(),
            "branch `/a=RW,lots`: minimum free space `lots` is not a size; expected digits \
             with an optional B, K, M, G or T suffix, e.g. `4G`"
        );
        let err = parse_branches("=RO", &ThreeDisks).unwrap_err();
        assert!(
            err.to_string().starts_with("branch `=RO`: no path"),
            "{err}"
        );
        let err = parse_branches("/a=RO,1G,x", &ThreeDisks).unwrap_err();
        assert!(err.to_string().contains("unexpected `x`"), "{err}");
        let err = parse_branches("/a=", &ThreeDisks).unwrap_err();
        assert!(err.to_string().contains("unknown branch mode ``"), "{err}");
    }

    #[test]
    fn formatting_round_trips() {
        let branches = vec![
            branch("/mnt/a", BranchMode::RW, None),
            branch("/mnt/b", BranchMode::NC, Some(4 << 30)),
        ];
        let text = format_branches(&branches);
        assert_eq!(text, "/mnt/a=RW:/mnt/b=NC,4294967296");
        assert_eq!(list(&text), branches);
    }

    #[test]
    fn per_branch_min_free_space_overrides_the_global_one() {
        assert_eq!(branch("/a", BranchMode::RW, None).min_free_space_or(7), 7);
        assert_eq!(
            branch("/a", BranchMode::RW, Some(3)).min_free_space_or(7),
            3
        );
    }

    #[test]
    fn the_mountpoint_and_paths_below_it_are_refused() {
        let pool = Path::new("/pool");
        assert_eq!(check_mountpoint(&list("/mnt/a:/poolside"), pool), Ok(()));
        let err = check_mountpoint(&list("/mnt/a:/pool"), pool).unwrap_err();
        assert_eq!(
            err,
            BranchError::InsideMountpoint {
                branch: PathBuf::from("/pool"),
                mountpoint: pool.to_path_buf()
            }
        );
        assert!(err.to_string().contains("`/pool`"));
        let err = check_mountpoint(&list("/pool/sub/dir"), pool).unwrap_err();
        assert!(
            matches!(err, BranchError::InsideMountpoint { branch, .. } if branch == Path::new("/pool/sub/dir"))
        );
    }

    #[test]
    fn a_branch_that_holds_the_mountpoint_is_refused() {
        let pool = Path::new("/mnt/disk1/pool");
        let err = check_mountpoint(&list("/mnt/disk2:/mnt/disk1"), pool).unwrap_err();
        assert_eq!(
            err,
            BranchError::ContainsMountpoint {
                branch: PathBuf::from("/mnt/disk1"),
                mountpoint: pool.to_path_buf()
            }
        );
        assert!(
            err.to_string().contains("inside branch `/mnt/disk1`"),
            "{err}"
        );
        assert!(check_mountpoint(&list("/"), pool).is_err());
        assert_eq!(
            check_mountpoint(&list("/mnt/disk1/poo:/mnt/disk2"), pool),
            Ok(())
        );
    }

    fn edit(value: &str, current: &str) -> Vec<Branch> {
        BranchEdit::parse(value, &ThreeDisks)
            .unwrap()
            .apply(&list(current))
    }

    #[test]
    fn replace_with_or_without_equals() {
        assert_eq!(paths(&edit("/x:/y", "/a:/b")), vec!["/x", "/y"]);
        assert_eq!(paths(&edit("=/x", "/a:/b")), vec!["/x"]);
        assert!(edit("=", "/a:/b").is_empty(), "an empty list clears");
        assert!(edit("", "/a:/b").is_empty());
    }

    #[test]
    fn prepend_and_append() {
        let got = edit("+</c=RO", "/a:/b");
        assert_eq!(paths(&got), vec!["/c", "/a", "/b"]);
        assert_eq!(got[0].mode, BranchMode::RO);
        assert_eq!(
            paths(&edit("+>/c:/d", "/a:/b")),
            vec!["/a", "/b", "/c", "/d"]
        );
        assert_eq!(paths(&edit("+/c", "/a:/b")), vec!["/a", "/b", "/c"]);
        assert_eq!(
            paths(&edit("+/mnt/disk*", "/a")),
            vec!["/a", "/mnt/disk1", "/mnt/disk2", "/mnt/disk3"]
        );
    }

    #[test]
    fn remove_by_pattern() {
        let current = "/mnt/disk1:/mnt/disk2:/mnt/ssd:/mnt/disk10";
        assert_eq!(
            paths(&edit("-/mnt/disk?", current)),
            vec!["/mnt/ssd", "/mnt/disk10"]
        );
        assert_eq!(
            paths(&edit("-/mnt/ssd:/mnt/disk1", current)),
            vec!["/mnt/disk2", "/mnt/disk10"]
        );
        assert_eq!(paths(&edit("-/nowhere", current)).len(), 4);
    }

    #[test]
    fn remove_first_and_last() {
        assert_eq!(paths(&edit("-<", "/a:/b:/c")), vec!["/b", "/c"]);
        assert_eq!(paths(&edit("->", "/a:/b:/c")), vec!["/a", "/b"]);
        assert!(edit("-<", "").is_empty());
        assert!(edit("->", "").is_empty());
    }

    #[test]
    fn edits_leave_the_current_list_alone() {
        let current = list("/a:/b");
        let next = BranchEdit::parse("+/c", &ThreeDisks)
            .unwrap()
            .apply(&current);
        assert_eq!(paths(&current), vec!["/a", "/b"]);
        assert_eq!(paths(&next), vec!["/a", "/b", "/c"]);
    }

    #[test]
    fn bad_edits_are_refused() {
        let err = BranchEdit::parse("-<junk", &ThreeDisks).unwrap_err();
        assert_eq!(
            err.to_string(),
            "`-<` takes no argument but got `junk`; write `-<` alone"
        );
        assert!(BranchEdit::parse("->x", &ThreeDisks).is_err());
        assert!(matches!(
            BranchEdit::parse("+</a=XX", &ThreeDisks),
            Err(BranchError::Entry { .. })
        ));
    }
}
