//! Shell-style wildcards for branch paths: matching `*`, `?` and `[...]` against a
//! name, and expanding a branch pattern such as `/mnt/disk*` into the directories it
//! names.
//!
//! Matching is pure. Expansion is behind the [`GlobExpander`] trait so that branch-list
//! parsing stays pure and testable; [`FsGlob`] is the implementation that reads the
//! real directory tree.

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Component, Path, PathBuf};

/// Turns one branch pattern into the branch paths it stands for.
pub trait GlobExpander {
    /// The paths `pattern` expands to, in order. An empty result means "no match";
    /// callers then keep the pattern literally, as mergerfs does.
    fn expand(&self, pattern: &Path) -> Vec<PathBuf>;
}

/// Expands patterns against the live filesystem.
///
/// Each path component holding a wildcard is matched against the entries of the
/// directories found so far; only directories survive the last step, and each match is
/// resolved to its real path (symlinked branches point at their target). Names starting
/// with `.` match only a pattern that starts with `.`, as in glob(7).
#[derive(Debug, Clone, Copy, Default)]
pub struct FsGlob;

impl GlobExpander for FsGlob {
    fn expand(&self, pattern: &Path) -> Vec<PathBuf> {
        if !has_wildcard(pattern.as_os_str().as_bytes()) {
            return if pattern.is_dir() {
                vec![realpath(pattern)]
            } else {
                Vec::new()
            };
        }
        let mut found = vec![PathBuf::new()];
        for component in pattern.components() {
            let Component::Normal(name) = component else {
                for path in &mut found {
                    path.push(component);
                }
                continue;
            };
            let name = name.as_bytes();
            if !has_wildcard(name) {
                for path in &mut found {
                    path.push(OsString::from_vec(name.to_vec()));
                }
                continue;
            }
            found = found
                .iter()
                .flat_map(|dir| matching_entries(dir, name))
                .collect();
        }
        found.retain(|path| path.is_dir());
        found.iter().map(|path| realpath(path)).collect()
    }
}

/// Entries of `dir` whose names match `pattern`, sorted like glob(3) output.
fn matching_entries(dir: &Path, pattern: &[u8]) -> Vec<PathBuf> {
    let listing = if dir.as_os_str().is_empty() {
        std::fs::read_dir(".")
    } else {
        std::fs::read_dir(dir)
    };
    let Ok(listing) = listing else {
        return Vec::new();
    };
    let mut names: Vec<OsString> = listing
        .filter_map(Result::ok)
        .map(|entry| entry.file_name())
        .filter(|name| {
            let name = name.as_bytes();
            let hidden = name.first() == Some(&b'.') && pattern.first() != Some(&b'.');
            !hidden && matches(pattern, name)
        })
        .collect();
    names.sort();
    names.into_iter().map(|name| dir.join(name)).collect()
}

/// The canonical path, or the path itself when it cannot be resolved (it then fails
/// later with a clear error at the place that uses it).
fn realpath(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

/// Whether `text` holds a wildcard character and so needs expanding.
pub fn has_wildcard(text: &[u8]) -> bool {
    text.iter().any(|b| matches!(b, b'*' | b'?' | b'['))
}

/// Matches `text` against the wildcard `pattern` as fnmatch(3) without flags: `*` is
/// any run of bytes (including `/`), `?` any one byte, `[...]` a set with ranges and
/// `!`/`^` negation, and `\` makes the next byte literal. A `[` with no closing `]` is
/// an ordinary character.
pub fn matches(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    // Where to resume after the last `*`: the pattern position after it and the text
    // position it has consumed up to. One backtrack point suffices for `*`-only globs.
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        let step = match pattern.get(p) {
            Some(b'*') => {
                star = Some((p + 1, t));
                p += 1;
                continue;
            }
            Some(b'?') => Some(p + 1),
            Some(b'[') => match bracket(&pattern[p..], text[t]) {
                Some((true, len)) => Some(p + len),
                Some((false, _)) => None,
                None => (text[t] == b'[').then_some(p + 1),
            },
            Some(b'\\') if p + 1 < pattern.len() => (pattern[p + 1] == text[t]).then_some(p + 2),
            Some(&c) => (c == text[t]).then_some(p + 1),
            None => None,
        };
        match (step, star) {
            (Some(next), _) => {
                p = next;
                t += 1;
            }
            (None, Some((after_star, consumed))) => {
                p = after_star;
                t = consumed + 1;
                star = Some((after_star, consumed + 1));
            }
            (None, None) => return false,
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// Evaluates the bracket expression at the start of `pattern` for byte `c`: whether it
/// matches and how many pattern bytes the expression spans, or `None` if the bracket is
/// never closed.
fn bracket(pattern: &[u8], c: u8) -> Option<(bool, usize)> {
    let mut i = 1;
    let negated = matches!(pattern.get(i), Some(b'!' | b'^'));
    if negated {
        i += 1;
    }
    let mut hit = false;
    let mut first = true;
    loop {
        let lo = *pattern.get(i)?;
        // A `]` right after the opening (or after the negation) is a member, not the end.
        if lo == b']' && !first {
            return Some((hit != negated, i + 1));
        }
        first = false;
        match (pattern.get(i + 1), pattern.get(i + 2)) {
            (Some(b'-'), Some(&hi)) if hi != b']' => {
                hit |= (lo..=hi).contains(&c);
                i += 3;
            }
            _ => {
                hit |= lo == c;
                i += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pattern: &str, text: &str) -> bool {
        matches(pattern.as_bytes(), text.as_bytes())
    }

    #[test]
    fn star_and_question_mark() {
        assert!(m("disk*", "disk1"));
        assert!(m("disk*", "disk"));
        assert!(m("*1", "disk1"));
        assert!(m("d*k*", "disk10"));
        assert!(!m("disk*", "dis"));
        assert!(m("disk?", "disk7"));
        assert!(!m("disk?", "disk10"));
        assert!(
            m("/mnt/*", "/mnt/a/b"),
            "without a path flag `*` crosses `/`"
        );
        assert!(m("a*b*c", "axxbyyc"));
        assert!(!m("a*b*c", "axxbyy"));
    }

    #[test]
    fn bracket_expressions() {
        assert!(m("disk[0-9]", "disk4"));
        assert!(!m("disk[0-9]", "diskx"));
        assert!(m("disk[!0-9]", "diskx"));
        assert!(m("disk[^0-9]", "diskx"));
        assert!(!m("disk[!0-9]", "disk3"));
        assert!(m("[ab]c", "bc"));
        assert!(m("[]]", "]"));
        assert!(m("[a-]", "-"));
        assert!(m("x[", "x["), "an unclosed bracket is literal");
        assert!(!m("x[", "xa"));
    }

    #[test]
    fn escapes_make_wildcards_literal() {
        assert!(m(r"a\*", "a*"));
        assert!(!m(r"a\*", "ab"));
    }

    #[test]
    fn wildcard_detection() {
        assert!(has_wildcard(b"/mnt/disk*"));
        assert!(has_wildcard(b"/mnt/d[12]"));
        assert!(!has_wildcard(b"/mnt/disk1"));
    }

    #[test]
    fn expands_against_real_directories() {
        let root = std::env::temp_dir().join(format!("lhfs-glob-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for dir in ["disk1", "disk2", "disk10", "other", ".disk9"] {
            std::fs::create_dir_all(root.join(dir)).unwrap();
        }
        std::fs::write(root.join("disk3"), b"not a directory").unwrap();
        let root = std::fs::canonicalize(&root).unwrap();

        let found = FsGlob.expand(&root.join("disk?"));
        assert_eq!(found, vec![root.join("disk1"), root.join("disk2")]);
        let found = FsGlob.expand(&root.join("disk*"));
        assert_eq!(
            found,
            vec![root.join("disk1"), root.join("disk10"), root.join("disk2")]
        );
        assert!(FsGlob.expand(&root.join("nothing*")).is_empty());
        assert_eq!(FsGlob.expand(&root.join("other")), vec![root.join("other")]);
        assert!(FsGlob.expand(&root.join("disk3")).is_empty());

        std::fs::remove_dir_all(&root).unwrap();
    }
}
