//! The `exclude`/`include` rules and `nohidden`: which paths of a data disk take part
//! in the array.
//!
//! Pure: it sees only relative paths with `/` separators, never the filesystem. The
//! semantics are SnapRAID's, so that an existing `snapraid.conf` protects the same files:
//!
//! - A pattern without `/` names a **file** at any depth (`*.tmp`). It never matches a
//!   directory.
//! - A trailing `/` makes a **directory** rule (`tmp/`): it matches directories of that
//!   name and everything below them.
//! - A leading `/` **anchors** the pattern at the disk root (`/lost+found/`). Without
//!   it, a pattern with a `/` inside (`cache/*.db`) matches at any depth, starting at a
//!   path component.
//! - Globs: `?` is one character and `*` any run of characters, neither crossing `/`;
//!   `[abc]`, `[a-z]` and `[!abc]` (also `[^abc]`) are character classes, which never
//!   match `/`; `**` is `*` (SnapRAID has no pattern that crosses `/`, so
//!   `/sub/**.iso` is an ISO file right in `sub`, as there); `\` makes the next
//!   character literal.
//! - Names are matched as `lhparity list` prints them (see [`crate::name`]): in a
//!   pattern, `\xNN` is the byte NN of a name that is not UTF-8 (or a control
//!   character below `\x80`), and `\n`, `\t`, `\r` are those control characters.
//! - Rules are tried in config order and the **first match wins**. When none matches,
//!   a file is excluded if the last rule is an `include` and included otherwise, while
//!   a directory is always walked (its files may still be included).
//! - A path is also excluded when any of its parent directories is, as a disk walk
//!   never reaches it; and with `nohidden`, any component starting with `.` excludes it.

use std::fmt;

/// Whether a rule keeps or drops the paths it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Exclude,
    Include,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::Exclude => "exclude",
            Action::Include => "include",
        })
    }
}

/// Why a pattern was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    #[error("a pattern naming files or directories inside the disk, not the disk root itself")]
    WholeDisk,
    #[error("a pattern whose '[' character classes are all closed with ']'")]
    UnclosedClass,
    #[error(
        "a pattern without empty, '.' or '..' path components (patterns are relative to \
         the disk root; start with '/' to anchor them there)"
    )]
    BadComponent,
}

/// One `exclude` or `include` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// What a match does.
    pub action: Action,
    /// The pattern as written in the config.
    pub pattern: String,
    anchored: bool,
    dir_only: bool,
    glob: Vec<Token>,
}

impl Rule {
    /// Parses a pattern with the syntax described in the module docs.
    pub fn new(action: Action, pattern: &str) -> Result<Rule, PatternError> {
        let anchored = pattern.starts_with('/');
        let body = pattern.strip_prefix('/').unwrap_or(pattern);
        let dir_only = body.ends_with('/');
        let body = body.strip_suffix('/').unwrap_or(body);
        if body.is_empty() || (anchored && dir_only && body == "**") {
            return Err(PatternError::WholeDisk);
        }
        if body
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
        {
            return Err(PatternError::BadComponent);
        }
        Ok(Rule {
            action,
            pattern: pattern.to_owned(),
            anchored,
            dir_only,
            glob: compile(body)?,
        })
    }

    /// Whether this rule speaks about `path` (a file, or a directory if `is_dir`).
    fn matches(&self, path: &str, is_dir: bool) -> bool {
        if is_dir && !self.dir_only {
            return false;
        }
        // A directory rule covers the files below the directory: the pattern may stop
        // at any `/` of a file's path.
        let stop_at_slash = self.dir_only && !is_dir;
        glob_match(&self.glob, path, !self.anchored, stop_at_slash)
    }
}

/// The complete path filter of an array: the rules in config order plus `nohidden`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// The rules, first match wins.
    pub rules: Vec<Rule>,
    /// Exclude every file and directory whose name starts with `.`.
    pub nohidden: bool,
}

impl Filter {
    /// Whether `rel_path` (relative to the disk root, `/`-separated) is left out of the
    /// array. For a directory (`is_dir`), `true` means it is not walked at all.
    pub fn is_excluded(&self, rel_path: &str, is_dir: bool) -> bool {
        let path = rel_path.trim_matches('/');
        if path.is_empty() {
            return false;
        }
        if self.nohidden && path.split('/').any(|c| c.starts_with('.')) {
            return true;
        }
        let parent_excluded = path
            .match_indices('/')
            .any(|(i, _)| self.decide(&path[..i], true));
        parent_excluded || self.decide(path, is_dir)
    }

    /// Whether a rule includes the directory `rel_path` itself by a folder pattern
    /// (one ending in `/`), whatever its parents' verdict.
    pub fn includes_dir(&self, rel_path: &str) -> bool {
        let path = rel_path.trim_matches('/');
        self.rules
            .iter()
            .find(|r| r.matches(path, true))
            .is_some_and(|r| r.action == Action::Include)
    }

    /// The rules' verdict on one path, ignoring its parents.
    fn decide(&self, path: &str, is_dir: bool) -> bool {
        if let Some(rule) = self.rules.iter().find(|r| r.matches(path, is_dir)) {
            return rule.action == Action::Exclude;
        }
        // Directories stay walkable so that rules can still pick files inside them.
        !is_dir
            && self
                .rules
                .last()
                .is_some_and(|r| r.action == Action::Include)
    }
}

/// One element of a compiled glob.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Literal(char),
    /// `?`: one character other than `/`.
    One,
    /// `*` (or `**`): any run of characters other than `/`.
    Star,
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

fn compile(body: &str) -> Result<Vec<Token>, PatternError> {
    let chars: Vec<char> = body.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '\\' if i + 1 < chars.len() => {
                let (c, used) = escaped(&chars[i + 1..]);
                tokens.push(Token::Literal(c));
                i += 1 + used;
            }
            '?' => {
                tokens.push(Token::One);
                i += 1;
            }
            '*' => {
                // `**` as SnapRAID reads it: two stars, which match what one does.
                tokens.push(Token::Star);
                i += chars[i..].iter().take_while(|&&c| c == '*').count();
            }
            '[' => {
                let (token, len) = compile_class(&chars[i + 1..])?;
                tokens.push(token);
                i += 1 + len;
            }
            c => {
                // A character of the range names hold single bytes in stands for
                // itself, which a name holds as its UTF-8 bytes.
                if crate::name::holds_byte(c) {
                    let mut utf8 = [0u8; 4];
                    for &b in c.encode_utf8(&mut utf8).as_bytes() {
                        tokens.push(Token::Literal(crate::name::byte_char(b)));
                    }
                } else {
                    tokens.push(Token::Literal(c));
                }
                i += 1;
            }
        }
    }
    Ok(tokens)
}

/// The character an escape after a `\` stands for, and how many characters it took:
/// `xNN` (two hex digits) a byte of a name, `n`, `t` and `r` those control
/// characters, and anything else itself.
fn escaped(rest: &[char]) -> (char, usize) {
    match rest {
        ['x', hi, lo, ..] if hi.is_ascii_hexdigit() && lo.is_ascii_hexdigit() => {
            let byte = (hi.to_digit(16).unwrap_or(0) * 16 + lo.to_digit(16).unwrap_or(0)) as u8;
            let c = if byte < 0x80 {
                char::from(byte)
            } else {
                crate::name::byte_char(byte)
            };
            (c, 3)
        }
        ['n', ..] => ('\n', 1),
        ['t', ..] => ('\t', 1),
        ['r', ..] => ('\r', 1),
        [c, ..] => (*c, 1),
        [] => ('\\', 0),
    }
}

/// Compiles the class after a `[`; returns the token and how many characters it used,
/// the closing `]` included.
fn compile_class(chars: &[char]) -> Result<(Token, usize), PatternError> {
    let negated = matches!(chars.first(), Some('!' | '^'));
    let mut i = usize::from(negated);
    let mut ranges = Vec::new();
    // A `]` right after the opening is a member, not the end.
    let first = i;
    loop {
        let c = *chars.get(i).ok_or(PatternError::UnclosedClass)?;
        if c == ']' && i > first {
            return Ok((Token::Class { negated, ranges }, i + 1));
        }
        match (chars.get(i + 1), chars.get(i + 2)) {
            (Some('-'), Some(&hi)) if hi != ']' => {
                ranges.push((c, hi));
                i += 3;
            }
            _ => {
                ranges.push((c, c));
                i += 1;
            }
        }
    }
}

/// Runs the glob as a set of live positions over `text`, so that no pattern can make
/// it backtrack. With `any_component` a match may start after any `/`; with
/// `stop_at_slash` a match must end just before a `/` instead of at the end of `text`.
fn glob_match(glob: &[Token], text: &str, any_component: bool, stop_at_slash: bool) -> bool {
    let end = glob.len();
    let mut live = vec![false; end + 1];
    let mut next = vec![false; end + 1];
    enter(glob, &mut live, 0);
    for c in text.chars() {
        if c == '/' && stop_at_slash && live[end] {
            return true;
        }
        next.fill(false);
        for (pos, token) in glob.iter().enumerate() {
            if !live[pos] {
                continue;
            }
            match token {
                Token::Literal(l) if *l == c => enter(glob, &mut next, pos + 1),
                Token::One if c != '/' => enter(glob, &mut next, pos + 1),
                Token::Class { negated, ranges } if c != '/' => {
                    let hit = ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi);
                    if hit != *negated {
                        enter(glob, &mut next, pos + 1);
                    }
                }
                Token::Star if c != '/' => stay(glob, &mut next, pos),
                _ => {}
            }
        }
        std::mem::swap(&mut live, &mut next);
        if c == '/' && any_component {
            enter(glob, &mut live, 0);
        }
    }
    live[end] && !stop_at_slash
}

/// Marks `pos` live as reached from the token before it, with every position
/// reachable from there without reading a character.
fn enter(glob: &[Token], live: &mut [bool], pos: usize) {
    let seen = std::mem::replace(&mut live[pos], true);
    if !seen && matches!(glob.get(pos), Some(Token::Star)) {
        enter(glob, live, pos + 1);
    }
}

/// Marks a `*` at `pos` live after it read a character.
fn stay(glob: &[Token], live: &mut [bool], pos: usize) {
    if !std::mem::replace(&mut live[pos], true) {
        enter(glob, live, pos + 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(lines: &[&str]) -> Filter {
        let rules = lines
            .iter()
            .map(|l| {
                let (action, pattern) = l.split_once(' ').unwrap();
                let action = match action {
                    "exclude" => Action::Exclude,
                    "include" => Action::Include,
                    _ => panic!("bad test line {l}"),
                };
                Rule::new(action, pattern).unwrap()
            })
            .collect();
        Filter {
            rules,
            nohidden: false,
        }
    }

    fn glob(pattern: &str, text: &str) -> bool {
        glob_match(&compile(pattern).unwrap(), text, false, false)
    }

    #[test]
    fn names_that_are_not_utf8_are_matched_as_list_prints_them() {
        use crate::name::from_bytes;
        let raw = from_bytes(b"caf\xe9.txt");
        let genuine = from_bytes("caf\u{10FFE9}.txt".as_bytes());
        assert!(glob("caf\\xe9.txt", &raw) && !glob("caf\\xe9.txt", &genuine));
        assert!(glob("caf?.txt", &raw) && glob("caf*.txt", &genuine));
        // A character of the byte range in a pattern is that character, not a byte.
        assert!(glob("caf\u{10FFE9}.txt", &genuine) && !glob("caf\u{10FFE9}.txt", &raw));
        assert!(glob("new\\nline\\t", "new\nline\t"));
        assert!(glob("a\\x41", "aA") && glob("a\\\\x41", "a\\x41"));
        assert!(!glob("caf\\xe9.txt", "café.txt"));
    }

    #[test]
    fn glob_basics() {
        assert!(glob("abc", "abc"));
        assert!(!glob("abc", "abcd"));
        assert!(!glob("abc", "ab"));
        assert!(glob("a?c", "abc"));
        assert!(!glob("a?c", "a/c"));
        assert!(glob("*.txt", ".txt"));
        assert!(glob("*.txt", "notes.txt"));
        assert!(!glob("*.txt", "dir/notes.txt"));
        assert!(glob("*a*b*c", "xaybzc"));
        assert!(!glob("*a*b*c", "xaybz"));
        assert!(glob("é?", "éü"));
    }

    #[test]
    fn glob_classes() {
        assert!(glob("[abc]x", "bx"));
        assert!(!glob("[abc]x", "dx"));
        assert!(glob("[a-c0-9]", "7"));
        assert!(!glob("[a-c0-9]", "d"));
        assert!(glob("[!a-c]", "d"));
        assert!(!glob("[!a-c]", "b"));
        assert!(glob("[^a-c]", "d"));
        assert!(glob("[]]", "]"));
        assert!(glob("[!]]", "a"));
        assert!(!glob("[!]]", "]"));
        assert!(glob("[a-]", "-"));
        assert!(!glob("[!a]", "/"));
        assert!(glob("[\\]", "\\"));
        assert_eq!(compile("a[bc"), Err(PatternError::UnclosedClass));
        assert_eq!(compile("a[!]"), Err(PatternError::UnclosedClass));
    }

    #[test]
    fn glob_escapes_and_double_stars() {
        assert!(glob("\\*", "*"));
        assert!(!glob("\\*", "a"));
        assert!(glob("\\[x]", "[x]"));
        assert!(glob("a\\", "a\\"));
        // `**` is `*`, as in SnapRAID 12.2 (checked against it): it never crosses `/`.
        assert!(glob("a/**/b", "a/x/b"));
        assert!(!glob("a/**/b", "a/b"));
        assert!(!glob("a/**/b", "a/x/y/b"));
        assert!(!glob("a/**/b", "a/xb"));
        assert!(glob("**/b", "x/b"));
        assert!(!glob("**/b", "x/y/b"));
        assert!(glob("a/**", "a/b"));
        assert!(!glob("a/**", "a/b/c"));
        assert!(glob("sub/**.iso", "sub/x.iso"));
        assert!(!glob("sub/**.iso", "sub/deep/x.iso"));
        assert!(!glob("a**", "a/b/c"));
        assert!(glob("a**", "abc"));
        assert!(!glob("a*", "a/b"));
    }

    #[test]
    fn glob_has_no_exponential_backtracking() {
        let text = "a".repeat(200);
        let pattern = format!("{}b", "*a".repeat(30));
        assert!(!glob(&pattern, &text));
    }

    #[test]
    fn invalid_patterns_are_refused() {
        for p in [
            "/", "//", "/**/", "a//b", "./a", "a/./b", "../a", "a/..", "/..",
        ] {
            assert!(Rule::new(Action::Exclude, p).is_err(), "{p}");
        }
        for p in ["/**/x", "...", ".hidden", "a/", "/a/b/"] {
            assert!(Rule::new(Action::Exclude, p).is_ok(), "{p}");
        }
    }

    #[test]
    fn file_pattern_matches_files_at_any_depth_but_not_dirs() {
        let f = filter(&["exclude *.tmp"]);
        assert!(f.is_excluded("x.tmp", false));
        assert!(f.is_excluded("a/b/x.tmp", false));
        assert!(!f.is_excluded("x.tmpl", false));
        assert!(!f.is_excluded("d.tmp", true));
        assert!(!f.is_excluded("d.tmp/file", false));
    }

    #[test]
    fn dir_pattern_matches_dirs_and_their_contents() {
        let f = filter(&["exclude tmp/"]);
        assert!(f.is_excluded("tmp", true));
        assert!(f.is_excluded("a/tmp", true));
        assert!(f.is_excluded("a/tmp/x", false));
        assert!(f.is_excluded("a/tmp/deep/x", false));
        assert!(f.is_excluded("a/tmp/deep", true));
        assert!(!f.is_excluded("tmp", false));
        assert!(!f.is_excluded("a/tmpx/y", false));
        assert!(!f.is_excluded("a/xtmp/y", false));
    }

    #[test]
    fn anchored_patterns_start_at_the_disk_root() {
        let f = filter(&["exclude /lost+found/", "exclude /top.txt"]);
        assert!(f.is_excluded("lost+found", true));
        assert!(f.is_excluded("lost+found/123", false));
        assert!(!f.is_excluded("a/lost+found/123", false));
        assert!(f.is_excluded("top.txt", false));
        assert!(!f.is_excluded("a/top.txt", false));
    }

    #[test]
    fn inner_slash_matches_from_any_component() {
        let f = filter(&["exclude cache/*.db"]);
        assert!(f.is_excluded("cache/x.db", false));
        assert!(f.is_excluded("app/cache/x.db", false));
        assert!(!f.is_excluded("appcache/x.db", false));
        assert!(!f.is_excluded("cache/sub/x.db", false));
        let f = filter(&["exclude /media/**/*.part"]);
        assert!(f.is_excluded("media/a/x.part", false));
        assert!(!f.is_excluded("media/x.part", false));
        assert!(!f.is_excluded("media/a/b/x.part", false));
        assert!(!f.is_excluded("other/media/a/x.part", false));
    }

    #[test]
    fn first_matching_rule_wins() {
        let f = filter(&["include keep.tmp", "exclude *.tmp"]);
        assert!(!f.is_excluded("keep.tmp", false));
        assert!(f.is_excluded("drop.tmp", false));
        let f = filter(&["exclude *.tmp", "include keep.tmp"]);
        assert!(f.is_excluded("keep.tmp", false));
    }

    #[test]
    fn unmatched_paths_follow_the_last_rule() {
        let f = filter(&["exclude *.tmp", "include /media/"]);
        assert!(!f.is_excluded("media/film.mkv", false));
        assert!(f.is_excluded("media/film.tmp", false));
        assert!(f.is_excluded("docs/letter.txt", false));
        assert!(f.is_excluded("top.txt", false));
        // Directories are still walked so that included files inside can be found.
        assert!(!f.is_excluded("docs", true));
        let f = filter(&["include /media/", "exclude *.tmp"]);
        assert!(!f.is_excluded("docs/letter.txt", false));
        assert!(!f.is_excluded("anything", false));
        assert!(!Filter::default().is_excluded("a/b", false));
    }

    #[test]
    fn an_excluded_parent_excludes_everything_below() {
        // The file rule alone would include it; the excluded directory never gets walked.
        let f = filter(&["include *.txt", "exclude /private/"]);
        assert!(f.is_excluded("private/a.txt", false));
        assert!(!f.is_excluded("public/a.txt", false));
    }

    #[test]
    fn nohidden_excludes_dot_files_and_dot_dirs() {
        let mut f = filter(&["include /data/"]);
        f.nohidden = true;
        assert!(f.is_excluded("data/.hidden", false));
        assert!(f.is_excluded("data/.git", true));
        assert!(f.is_excluded("data/.git/config", false));
        assert!(!f.is_excluded("data/visible", false));
        f.nohidden = false;
        assert!(!f.is_excluded("data/.hidden", false));
    }

    #[test]
    fn disk_root_is_never_excluded() {
        let f = filter(&["include /only/"]);
        assert!(!f.is_excluded("", true));
        assert!(!f.is_excluded("/", true));
    }
}
