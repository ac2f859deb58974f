//! The array config, in SnapRAID's `snapraid.conf` syntax: which files hold parity and
//! state, which directories are data disks, which paths take part, and the tunables.
//!
//! This module owns parsing and validating the config into a [`Config`], the path
//! [`Filter`] (`filter.rs`) and the filesystem layout checks ([`Config::check_layout`],
//! `layout.rs`). [`Config::parse`] is pure, text in and value out; only
//! [`Config::load`] reads a file and only `check_layout` looks at the filesystem. It
//! never creates, changes or deletes anything.
//!
//! # Syntax
//!
//! One directive per line, then its arguments. Blank lines and lines whose first word
//! starts with `#` are ignored. As in SnapRAID there are no end-of-line comments: the
//! last argument of a directive is the rest of the line with the surrounding blanks
//! trimmed, so paths and patterns may contain spaces (and a value containing ` #` is
//! kept whole, with a warning). Every path must be absolute and free of `..`.
//!
//! # Directives
//!
//! | directive | meaning |
//! |---|---|
//! | `parity FILE[,FILE...]` | Level-1 parity, required, once. Up to 8 comma-separated split files, filled in order. Alias `1-parity`. |
//! | `2-parity` .. `6-parity FILE[,FILE...]` | Further levels; each needs every lower level. Aliases `q-parity` (2) and `r-parity` (3). |
//! | `content FILE` | A copy of the state file; repeat it. Copies inside a data disk are skipped by the scan, with their `.tmp` and `.lock` siblings. |
//! | `data NAME DIR` | A data disk. Its index is its position among the `data` lines. Old name `disk`. |
//! | `exclude PATTERN`, `include PATTERN` | Path rules, see [`Filter`]. |
//! | `nohidden` | Exclude names starting with `.`. |
//! | `blocksize KIB` | Block size in KiB, 1 to 16384, default 256. Old name `block_size`. |
//! | `autosave GIB` | Save the state every GIB GiB of processed data; 0 (default) = only at the end. lhparity also takes `64M`, `512K`, `2G`. |
//! | `delete-threshold N` | lhparity only: refuse a sync that would remove more than N files. Default: no limit. |
//! | `metrics-file FILE` | lhparity only: where to write Prometheus textfile metrics. Default: none. |
//!
//! SnapRAID directives that lhparity does not implement are accepted with a warning
//! when ignoring them loses no protection, and refused when it would:
//!
//! | directive | decision | why |
//! |---|---|---|
//! | `hashsize`, `hash_size` | warned | lhparity always keeps 16-byte BLAKE3 block hashes. |
//! | `pool`, `share` | warned | The pool is `lhfs`, not a symlink tree. |
//! | `smartctl`, `smartignore`, `extra` | warned | No SMART reporting yet; nothing is protected by it. |
//! | `temp_limit`, `temp_sleep` | warned | No thermal pause yet: disks are not spun down when hot. |
//! | `z-parity` | refused | Its level-3 parity is a different code; ignoring it would drop a level and using it as `3-parity` would misread the parity file. |
//! | `snapshot` | refused | Sync and scrub would read the live disks instead of snapshots, losing the consistency the line asks for. |

mod filter;
mod layout;

use std::collections::HashMap;
use std::fmt;
use std::path::{Component, Path, PathBuf};

pub use filter::{Action, Filter, PatternError, Rule};

use crate::raid::{MAX_DATA, MAX_PARITY};

/// Block size when the config names none: 256 KiB.
pub const DEFAULT_BLOCK_SIZE: u32 = 256 * KIB;
/// Largest `blocksize`, in KiB.
pub const MAX_BLOCK_SIZE_KIB: u32 = 16 * 1024;
/// Most files one parity level may be split into.
pub const MAX_SPLIT: usize = 8;

const KIB: u32 = 1024;
const GIB: u64 = 1 << 30;

/// The directives a config may use, for error messages.
const DIRECTIVES: &str = "parity, 2-parity, 3-parity, 4-parity, 5-parity, 6-parity, \
                          content, data, exclude, include, blocksize, autosave, nohidden, \
                          delete-threshold, metrics-file";

/// A line of a config file, printed as `file:line`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub file: PathBuf,
    pub line: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

/// Something in the config that is accepted but deserves the user's attention.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub at: Location,
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: warning: {}", self.at, self.message)
    }
}

/// Why a config was refused. Every variant names the file and, where one exists, the
/// line, and says what was expected or what to do.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the config file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{at}: unknown directive '{directive}'; expected one of: {DIRECTIVES}")]
    UnknownDirective { at: Location, directive: String },
    #[error("{at}: invalid {what} '{text}'; expected {expected}")]
    Invalid {
        at: Location,
        what: &'static str,
        text: String,
        expected: String,
    },
    #[error("{at}: '{directive}' is not supported by lhparity: {reason}")]
    Unsupported {
        at: Location,
        directive: String,
        reason: &'static str,
    },
    /// Two lines contradict each other (duplicates, missing lower parity levels, ...).
    #[error("{at}: {problem}")]
    Conflict { at: Location, problem: String },
    /// A required directive is absent.
    #[error("{}: {problem}", file.display())]
    Incomplete { file: PathBuf, problem: String },
    /// The filesystem does not look like the config says.
    #[error("{at}: {problem}")]
    Layout { at: Location, problem: String },
    /// Two parts of the array share a device, so one failure would hit both.
    #[error("{at}: {problem}; if this is intended (e.g. for testing), pass --force-device")]
    Device { at: Location, problem: String },
}

/// One parity level and the files it is split into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parity {
    /// 1 for `parity`, 2 for `2-parity`, ...
    pub level: usize,
    /// The split files in fill order; usually one.
    pub files: Vec<PathBuf>,
    pub line: usize,
}

/// A file named on a config line: a `content` copy of the state, or the metrics file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    pub path: PathBuf,
    pub line: usize,
}

/// A `data` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataDisk {
    /// The stable identity of the disk; the state file refers to it by this name.
    pub name: String,
    /// Where the disk is mounted now.
    pub dir: PathBuf,
    pub line: usize,
}

/// A parsed and validated array config.
///
/// Invariants after [`Config::parse`]: 1 to 6 parity levels, contiguous from level 1;
/// 1 to 251 data disks with unique names and non-nested directories; at least one
/// content file; no path used twice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The config file, for messages.
    pub source: PathBuf,
    /// `parity[0]` is level 1.
    pub parity: Vec<Parity>,
    pub content: Vec<FileEntry>,
    /// Data disks in config order: index 0 is the first `data` line.
    pub data: Vec<DataDisk>,
    pub filter: Filter,
    /// Bytes per block.
    pub block_size: u32,
    /// Bytes of processed data between state saves; `None` saves only at the end.
    pub autosave: Option<u64>,
    /// Most files a sync may remove; `None` for no limit.
    pub delete_threshold: Option<u64>,
    /// Where to write Prometheus textfile metrics.
    pub metrics_file: Option<FileEntry>,
    /// Accepted oddities, each naming its line.
    pub warnings: Vec<Warning>,
}

impl Config {
    /// Reads and parses the config file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let bytes = std::fs::read(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let text = String::from_utf8(bytes).map_err(|e| {
            let bytes = e.as_bytes();
            let bad = e.utf8_error().valid_up_to();
            let line = bytes[..bad].iter().filter(|&&b| b == b'\n').count() + 1;
            let start = bytes[..bad]
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(0, |i| i + 1);
            let end = bytes[bad..]
                .iter()
                .position(|&b| b == b'\n')
                .map_or(bytes.len(), |i| bad + i);
            ConfigError::Invalid {
                at: Location {
                    file: path.to_owned(),
                    line,
                },
                what: "line",
                text: String::from_utf8_lossy(&bytes[start..end])
                    .trim()
                    .to_owned(),
                expected: "UTF-8 text; in `exclude`/`include` patterns write a name's other \
                           bytes as `\\xNN`, as `lhparity list` prints them"
                    .to_owned(),
            }
        })?;
        Config::parse(&text, path)
    }

    /// Parses config text; `source` names the file in messages only.
    pub fn parse(text: &str, source: &Path) -> Result<Config, ConfigError> {
        // A byte-order mark, as Windows editors save UTF-8, is not part of line 1.
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut parser = Parser::new(source);
        for (index, line) in text.lines().enumerate() {
            parser.line(index + 1, line.trim())?;
        }
        parser.finish()
    }

    /// The number of parity levels.
    pub fn levels(&self) -> usize {
        self.parity.len()
    }

    /// Whether the scan of `disk` leaves out `rel_path` (relative to the disk root,
    /// `/`-separated): the [`Filter`], plus the content files on that disk and the
    /// `.tmp` and `.lock` files written next to them (the names the state file code
    /// must use), which change on every run and must never be protected as data.
    pub fn is_excluded(&self, disk: &DataDisk, rel_path: &str, is_dir: bool) -> bool {
        self.filter.is_excluded(rel_path, is_dir) || (!is_dir && self.is_content(disk, rel_path))
    }

    /// Whether `rel_path` of `disk` is one of lhparity's own files: a content copy,
    /// or the `.tmp` or `.lock` file next to one.
    pub fn is_content(&self, disk: &DataDisk, rel_path: &str) -> bool {
        let rel_path = rel_path.trim_start_matches('/');
        self.content.iter().any(|c| {
            let Ok(rel) = c.path.strip_prefix(&disk.dir) else {
                return false;
            };
            let Some(rel) = rel.to_str() else {
                return false;
            };
            rel_path
                .strip_prefix(rel)
                .is_some_and(|rest| matches!(rest, "" | ".tmp" | ".lock"))
        })
    }

    fn at(&self, line: usize) -> Location {
        Location {
            file: self.source.clone(),
            line,
        }
    }
}

/// The state of a parse in progress.
struct Parser {
    source: PathBuf,
    parity: [Option<Parity>; MAX_PARITY],
    content: Vec<FileEntry>,
    data: Vec<DataDisk>,
    filter: Filter,
    block_size: Option<(u32, usize)>,
    autosave: Option<(Option<u64>, usize)>,
    delete_threshold: Option<(u64, usize)>,
    metrics_file: Option<FileEntry>,
    warnings: Vec<Warning>,
}

/// Whether a path argument names a file or a directory.
#[derive(Clone, Copy, PartialEq, Eq)]
enum PathKind {
    File,
    Dir,
}

impl Parser {
    fn new(source: &Path) -> Parser {
        Parser {
            source: source.to_owned(),
            parity: Default::default(),
            content: Vec::new(),
            data: Vec::new(),
            filter: Filter::default(),
            block_size: None,
            autosave: None,
            delete_threshold: None,
            metrics_file: None,
            warnings: Vec::new(),
        }
    }

    fn at(&self, line: usize) -> Location {
        Location {
            file: self.source.clone(),
            line,
        }
    }

    fn warn(&mut self, line: usize, message: String) {
        let at = self.at(line);
        self.warnings.push(Warning { at, message });
    }

    fn line(&mut self, n: usize, text: &str) -> Result<(), ConfigError> {
        if text.is_empty() || text.starts_with('#') {
            return Ok(());
        }
        let (directive, rest) = split_word(text);
        if let Some(level) = parity_level(directive) {
            return self.parity_line(n, directive, level, rest);
        }
        match directive {
            "content" => {
                let path = self.path(n, "content file", rest, PathKind::File)?;
                if path == Path::new("/dev/null") {
                    return Err(self.invalid(n, "content file", rest, "a real file"));
                }
                self.content.push(FileEntry { path, line: n });
            }
            "data" | "disk" => self.data_line(n, directive, rest)?,
            "exclude" => self.rule_line(n, Action::Exclude, rest)?,
            "include" => self.rule_line(n, Action::Include, rest)?,
            "nohidden" => {
                if !rest.is_empty() {
                    return Err(self.invalid(n, "nohidden line", text, "nothing after 'nohidden'"));
                }
                self.filter.nohidden = true;
            }
            "blocksize" | "block_size" => {
                let expected = format!("a whole number of KiB from 1 to {MAX_BLOCK_SIZE_KIB}");
                let kib = parse_number(rest)
                    .and_then(|k| u32::try_from(k).ok())
                    .filter(|k| (1..=MAX_BLOCK_SIZE_KIB).contains(k))
                    .ok_or_else(|| self.invalid(n, "blocksize", rest, &expected))?;
                self.check_once(n, directive, self.block_size.map(|(_, l)| l))?;
                self.block_size = Some((kib * KIB, n));
            }
            "autosave" => {
                // A plain number is GiB as in SnapRAID; a K/M/G suffix is an lhparity
                // extension for finer checkpoints.
                let (digits, unit) = match rest.char_indices().last() {
                    Some((i, 'K' | 'k')) => (&rest[..i], 1u64 << 10),
                    Some((i, 'M' | 'm')) => (&rest[..i], 1 << 20),
                    Some((i, 'G' | 'g')) => (&rest[..i], GIB),
                    _ => (rest, GIB),
                };
                let bytes = parse_number(digits)
                    .and_then(|v| v.checked_mul(unit))
                    .ok_or_else(|| {
                        self.invalid(
                            n,
                            "autosave",
                            rest,
                            "a whole number of GiB, or a size with K, M or G (0 = off)",
                        )
                    })?;
                self.check_once(n, directive, self.autosave.map(|(_, l)| l))?;
                self.autosave = Some(((bytes > 0).then_some(bytes), n));
            }
            "delete-threshold" => {
                let limit = parse_number(rest).ok_or_else(|| {
                    self.invalid(n, "delete-threshold", rest, "a whole number of files")
                })?;
                self.check_once(n, directive, self.delete_threshold.map(|(_, l)| l))?;
                self.delete_threshold = Some((limit, n));
            }
            "metrics-file" => {
                let path = self.path(n, "metrics file", rest, PathKind::File)?;
                self.check_once(n, directive, self.metrics_file.as_ref().map(|m| m.line))?;
                self.metrics_file = Some(FileEntry { path, line: n });
            }
            "hashsize" | "hash_size" => {
                self.ignore(n, directive, "block hashes are always 16-byte BLAKE3")
            }
            "pool" | "share" => self.ignore(n, directive, "the pool is provided by lhfs"),
            "smartctl" | "smartignore" | "extra" => {
                self.ignore(n, directive, "SMART reporting is not implemented")
            }
            "temp_limit" | "temp_sleep" => self.ignore(
                n,
                directive,
                "there is no thermal guard; disks are not paused or spun down when hot",
            ),
            "z-parity" => {
                return Err(ConfigError::Unsupported {
                    at: self.at(n),
                    directive: directive.to_owned(),
                    reason: "its level-3 parity is computed differently from '3-parity'; \
                             switch the array to '3-parity' (a full parity rebuild) to use \
                             it with lhparity",
                })
            }
            "snapshot" => {
                return Err(ConfigError::Unsupported {
                    at: self.at(n),
                    directive: directive.to_owned(),
                    reason: "lhparity reads the live data disks, not snapshots; remove the \
                             line only if that is acceptable",
                })
            }
            _ => {
                return Err(ConfigError::UnknownDirective {
                    at: self.at(n),
                    directive: directive.to_owned(),
                })
            }
        }
        Ok(())
    }

    fn parity_line(
        &mut self,
        n: usize,
        directive: &str,
        level: usize,
        rest: &str,
    ) -> Result<(), ConfigError> {
        let slot = level - 1;
        self.check_once(n, directive, self.parity[slot].as_ref().map(|p| p.line))?;
        if rest.is_empty() {
            return Err(self.invalid(
                n,
                "parity line",
                directive,
                "one or more comma-separated parity files",
            ));
        }
        let parts: Vec<&str> = rest.split(',').map(str::trim).collect();
        if parts.len() > MAX_SPLIT {
            return Err(self.invalid(
                n,
                "parity file list",
                rest,
                &format!("at most {MAX_SPLIT} comma-separated files"),
            ));
        }
        let files = parts
            .into_iter()
            .map(|p| self.path(n, "parity file", p, PathKind::File))
            .collect::<Result<Vec<_>, _>>()?;
        self.parity[slot] = Some(Parity {
            level,
            files,
            line: n,
        });
        Ok(())
    }

    fn data_line(&mut self, n: usize, directive: &str, rest: &str) -> Result<(), ConfigError> {
        let (name, dir) = split_word(rest);
        if name.is_empty() || dir.is_empty() {
            let text = format!("{directive} {rest}");
            return Err(self.invalid(
                n,
                "data line",
                text.trim(),
                &format!("'{directive} NAME DIR'"),
            ));
        }
        if let Some(first) = self.data.iter().find(|d| d.name == name) {
            return Err(ConfigError::Conflict {
                at: self.at(n),
                problem: format!(
                    "data disk name '{name}' is already used at line {}; expected a unique name per disk",
                    first.line
                ),
            });
        }
        if self.data.len() == MAX_DATA {
            return Err(ConfigError::Conflict {
                at: self.at(n),
                problem: format!("too many data disks; expected at most {MAX_DATA}"),
            });
        }
        let dir = self.path(n, "data directory", dir, PathKind::Dir)?;
        self.data.push(DataDisk {
            name: name.to_owned(),
            dir,
            line: n,
        });
        Ok(())
    }

    fn rule_line(&mut self, n: usize, action: Action, pattern: &str) -> Result<(), ConfigError> {
        if pattern.is_empty() {
            return Err(self.invalid(
                n,
                "filter line",
                &action.to_string(),
                &format!("'{action} PATTERN'"),
            ));
        }
        self.note_hash(n, pattern);
        let rule = Rule::new(action, pattern)
            .map_err(|e| self.invalid(n, "pattern", pattern, &e.to_string()))?;
        self.filter.rules.push(rule);
        Ok(())
    }

    fn ignore(&mut self, n: usize, directive: &str, reason: &str) {
        self.warn(n, format!("'{directive}' is ignored: {reason}"));
    }

    /// Refuses a second line of a directive that may appear once.
    fn check_once(
        &self,
        n: usize,
        directive: &str,
        first: Option<usize>,
    ) -> Result<(), ConfigError> {
        match first {
            Some(first) => Err(ConfigError::Conflict {
                at: self.at(n),
                problem: format!(
                    "'{directive}' was already given at line {first}; expected it once"
                ),
            }),
            None => Ok(()),
        }
    }

    fn path(
        &mut self,
        n: usize,
        what: &'static str,
        text: &str,
        kind: PathKind,
    ) -> Result<PathBuf, ConfigError> {
        let path = Path::new(text);
        let expected = match kind {
            PathKind::File => "an absolute file path without '..' (not ending in '/')",
            PathKind::Dir => "an absolute directory path without '..'",
        };
        let bad = !path.is_absolute()
            || path.components().any(|c| c == Component::ParentDir)
            || (kind == PathKind::File && (text.ends_with('/') || path.file_name().is_none()));
        if bad {
            return Err(self.invalid(n, what, text, expected));
        }
        self.note_hash(n, text);
        Ok(path.to_owned())
    }

    /// Warns about a value that looks like it ends in a comment, which SnapRAID syntax
    /// keeps as part of the value.
    fn note_hash(&mut self, n: usize, text: &str) {
        if text.contains(" #") || text.contains("\t#") {
            self.warn(
                n,
                format!("'{text}' is used whole, '#' included; comments must be on their own line"),
            );
        }
    }

    fn invalid(&self, n: usize, what: &'static str, text: &str, expected: &str) -> ConfigError {
        ConfigError::Invalid {
            at: self.at(n),
            what,
            text: text.to_owned(),
            expected: expected.to_owned(),
        }
    }

    fn finish(self) -> Result<Config, ConfigError> {
        let incomplete = |problem: &str| ConfigError::Incomplete {
            file: self.source.clone(),
            problem: problem.to_owned(),
        };
        // Levels must be contiguous from 1: parity is positional in the generator matrix.
        let present = self.parity.iter().take_while(|p| p.is_some()).count();
        if let Some(stray) = self.parity[present..].iter().flatten().next() {
            return Err(ConfigError::Conflict {
                at: self.at(stray.line),
                problem: format!(
                    "'{}' is given without '{}'; expected parity levels contiguous from 'parity'",
                    level_name(stray.level),
                    level_name(present + 1)
                ),
            });
        }
        if present == 0 {
            return Err(incomplete(
                "no 'parity' line; expected 'parity FILE' naming the first parity file",
            ));
        }
        if self.data.is_empty() {
            return Err(incomplete(
                "no 'data' line; expected at least one 'data NAME DIR'",
            ));
        }
        if self.content.is_empty() {
            return Err(incomplete(
                "no 'content' line; expected at least one 'content FILE' (better one more than the parity levels, on different disks)",
            ));
        }
        self.check_paths()?;
        let parity = self.parity.into_iter().flatten().collect();
        Ok(Config {
            source: self.source,
            parity,
            content: self.content,
            data: self.data,
            filter: self.filter,
            block_size: self.block_size.map_or(DEFAULT_BLOCK_SIZE, |(b, _)| b),
            autosave: self.autosave.and_then(|(a, _)| a),
            delete_threshold: self.delete_threshold.map(|(d, _)| d),
            metrics_file: self.metrics_file,
            warnings: self.warnings,
        })
    }

    /// No path may serve twice, and no data directory may contain another: a disk
    /// scanned twice would be protected by parity computed over itself.
    fn check_paths(&self) -> Result<(), ConfigError> {
        let mut uses: Vec<(usize, String, &Path)> = Vec::new();
        for d in &self.data {
            uses.push((
                d.line,
                format!("the directory of data disk '{}'", d.name),
                &d.dir,
            ));
        }
        for p in self.parity.iter().flatten() {
            for f in &p.files {
                uses.push((p.line, format!("a '{}' file", level_name(p.level)), f));
            }
        }
        for c in &self.content {
            uses.push((c.line, "a content file".to_owned(), &c.path));
        }
        if let Some(m) = &self.metrics_file {
            uses.push((m.line, "the metrics file".to_owned(), &m.path));
        }
        uses.sort_by_key(|u| u.0);
        // Path equality compares components, so `/a/` and `/a` are the same.
        let mut seen: HashMap<&Path, (usize, &str)> = HashMap::new();
        for (line, what, path) in &uses {
            if let Some((first_line, first_what)) = seen.get(path) {
                return Err(ConfigError::Conflict {
                    at: self.at(*line),
                    problem: format!(
                        "'{}' is {first_what} at line {first_line} and {what} here; expected every path once",
                        path.display()
                    ),
                });
            }
            seen.insert(path, (*line, what));
        }
        for (i, outer) in self.data.iter().enumerate() {
            for inner in &self.data[i + 1..] {
                let (outer, inner) = if inner.dir.starts_with(&outer.dir) {
                    (outer, inner)
                } else if outer.dir.starts_with(&inner.dir) {
                    (inner, outer)
                } else {
                    continue;
                };
                return Err(ConfigError::Conflict {
                    at: self.at(inner.line.max(outer.line)),
                    problem: format!(
                        "data disk '{}' ({}) lies inside data disk '{}' ({}); expected separate directories",
                        inner.name,
                        inner.dir.display(),
                        outer.name,
                        outer.dir.display()
                    ),
                });
            }
        }
        Ok(())
    }
}

/// The parity level a directive configures, SnapRAID's old names included.
fn parity_level(directive: &str) -> Option<usize> {
    match directive {
        "parity" | "1-parity" => Some(1),
        "2-parity" | "q-parity" => Some(2),
        "3-parity" | "r-parity" => Some(3),
        "4-parity" => Some(4),
        "5-parity" => Some(5),
        "6-parity" => Some(6),
        _ => None,
    }
}

/// The canonical directive of parity level `level` (1 for `parity`).
pub fn level_name(level: usize) -> String {
    if level == 1 {
        "parity".to_owned()
    } else {
        format!("{level}-parity")
    }
}

/// Splits off the first blank-separated word; the rest is trimmed.
fn split_word(text: &str) -> (&str, &str) {
    match text.split_once(char::is_whitespace) {
        Some((word, rest)) => (word, rest.trim()),
        None => (text, ""),
    }
}

/// A plain decimal number: no sign, no suffix.
fn parse_number(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = "\
# Example array
parity   /mnt/par1/snapraid.parity
2-parity /mnt/par2/snapraid.2-parity,/mnt/par2b/snapraid.2-parity

content  /var/snapraid/snapraid.content
content  /mnt/disk1/snapraid.content
content  /mnt/disk2/snapraid.content
data d1 /mnt/disk1/
disk d2 /mnt/disk2
data d3   /mnt/My Disk 3/
nohidden
exclude *.unrecoverable
exclude /lost+found/
include /media/
blocksize 128
autosave 500
delete-threshold 40
metrics-file /var/lib/node_exporter/lhparity.prom
";

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("array.conf"))
    }

    fn error(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    /// A minimal valid config with `extra` appended as the given line numbers 4, 5, ...
    fn with(extra: &str) -> String {
        format!("parity /p/parity\ncontent /c/content\ndata d1 /d1\n{extra}\n")
    }

    #[test]
    fn full_example_parses_to_the_expected_config() {
        let c = parse(FULL).unwrap();
        let at = |line| Location {
            file: PathBuf::from("array.conf"),
            line,
        };
        assert_eq!(c.source, Path::new("array.conf"));
        assert_eq!(
            c.parity,
            vec![
                Parity {
                    level: 1,
                    files: vec![PathBuf::from("/mnt/par1/snapraid.parity")],
                    line: 2
                },
                Parity {
                    level: 2,
                    files: vec![
                        PathBuf::from("/mnt/par2/snapraid.2-parity"),
                        PathBuf::from("/mnt/par2b/snapraid.2-parity")
                    ],
                    line: 3
                },
            ]
        );
        assert_eq!(c.levels(), 2);
        let content: Vec<_> = c.content.iter().map(|f| (f.path.clone(), f.line)).collect();
        assert_eq!(
            content,
            vec![
                (PathBuf::from("/var/snapraid/snapraid.content"), 5),
                (PathBuf::from("/mnt/disk1/snapraid.content"), 6),
                (PathBuf::from("/mnt/disk2/snapraid.content"), 7),
            ]
        );
        let data: Vec<_> = c
            .data
            .iter()
            .map(|d| (d.name.as_str(), d.dir.to_str().unwrap(), d.line))
            .collect();
        assert_eq!(
            data,
            vec![
                ("d1", "/mnt/disk1/", 8),
                ("d2", "/mnt/disk2", 9),
                ("d3", "/mnt/My Disk 3/", 10)
            ]
        );
        assert!(c.filter.nohidden);
        let rules: Vec<_> = c
            .filter
            .rules
            .iter()
            .map(|r| (r.action, r.pattern.as_str()))
            .collect();
        assert_eq!(
            rules,
            vec![
                (Action::Exclude, "*.unrecoverable"),
                (Action::Exclude, "/lost+found/"),
                (Action::Include, "/media/"),
            ]
        );
        assert_eq!(c.block_size, 128 * 1024);
        assert_eq!(c.autosave, Some(500 << 30));
        assert_eq!(c.delete_threshold, Some(40));
        assert_eq!(
            c.metrics_file,
            Some(FileEntry {
                path: PathBuf::from("/var/lib/node_exporter/lhparity.prom"),
                line: 18
            })
        );
        assert_eq!(c.warnings, vec![]);
        assert_eq!(at(2).to_string(), "array.conf:2");
    }

    #[test]
    fn defaults_apply_when_unset() {
        let c = parse(&with("")).unwrap();
        assert_eq!(c.block_size, DEFAULT_BLOCK_SIZE);
        assert_eq!(c.block_size, 262_144);
        assert_eq!(c.autosave, None);
        assert_eq!(c.delete_threshold, None);
        assert_eq!(c.metrics_file, None);
        assert!(!c.filter.nohidden);
        assert!(c.filter.rules.is_empty());
        assert_eq!(parse(&with("autosave 0")).unwrap().autosave, None);
        assert_eq!(
            parse(&with("autosave 64M")).unwrap().autosave,
            Some(64 << 20)
        );
        assert_eq!(
            parse(&with("autosave 512k")).unwrap().autosave,
            Some(512 << 10)
        );
    }

    #[test]
    fn old_names_are_accepted() {
        let c = parse(
            "1-parity /p/1\nq-parity /p/2\nr-parity /p/3\n4-parity /p/4\n5-parity /p/5\n\
             6-parity /p/6\ncontent /c/c\ndisk d1 /d1\nblock_size 64\n",
        )
        .unwrap();
        let levels: Vec<_> = c.parity.iter().map(|p| p.level).collect();
        assert_eq!(levels, vec![1, 2, 3, 4, 5, 6]);
        assert_eq!(c.data[0].name, "d1");
        assert_eq!(c.block_size, 64 * 1024);
    }

    #[test]
    fn crlf_tabs_and_indentation_are_tolerated() {
        let c = parse("\t parity\t/p/parity \r\ncontent /c/c\r\n  # note\r\ndata\td1\t/d1\r\n")
            .unwrap();
        assert_eq!(c.parity[0].files, vec![PathBuf::from("/p/parity")]);
        assert_eq!(c.data[0].dir, PathBuf::from("/d1"));
    }

    #[test]
    fn data_disks_keep_config_order() {
        let disks: String = (0..MAX_DATA)
            .map(|i| format!("data n{i} /d/{i}\n"))
            .collect();
        let c = parse(&format!("parity /p/p\ncontent /c/c\n{disks}")).unwrap();
        assert_eq!(c.data.len(), MAX_DATA);
        for (i, d) in c.data.iter().enumerate() {
            assert_eq!(d.name, format!("n{i}"));
            assert_eq!(d.line, i + 3);
        }
        let e = error(&format!(
            "parity /p/p\ncontent /c/c\n{disks}data extra /d/x\n"
        ));
        assert!(
            e.starts_with(&format!("array.conf:{}:", MAX_DATA + 3)),
            "{e}"
        );
        assert!(e.contains("at most 251"), "{e}");
    }

    #[test]
    fn unknown_directive_lists_the_known_ones() {
        let e = error(&with("paritty /x"));
        assert_eq!(
            e,
            "array.conf:4: unknown directive 'paritty'; expected one of: parity, 2-parity, \
             3-parity, 4-parity, 5-parity, 6-parity, content, data, exclude, include, \
             blocksize, autosave, nohidden, delete-threshold, metrics-file"
        );
    }

    #[test]
    fn bad_values_name_line_text_and_expectation() {
        let cases = [
            ("blocksize 0", "'0'", "from 1 to 16384"),
            ("blocksize 16385", "'16385'", "from 1 to 16384"),
            ("blocksize 4M", "'4M'", "whole number of KiB"),
            ("blocksize", "''", "whole number of KiB"),
            ("blocksize 256 # KiB", "'256 # KiB'", "whole number of KiB"),
            ("autosave -1", "'-1'", "whole number of GiB"),
            (
                "autosave 99999999999999999999",
                "'99999999999999999999'",
                "GiB",
            ),
            ("autosave 20000000000", "'20000000000'", "GiB"),
            ("delete-threshold lots", "'lots'", "whole number of files"),
            ("delete-threshold +5", "'+5'", "whole number of files"),
            (
                "nohidden please",
                "'nohidden please'",
                "nothing after 'nohidden'",
            ),
            ("data d2", "'data d2'", "'data NAME DIR'"),
            ("data", "'data'", "'data NAME DIR'"),
            (
                "data d2 relative/dir",
                "'relative/dir'",
                "absolute directory path",
            ),
            ("data d2 /mnt/../d2", "'/mnt/../d2'", "without '..'"),
            ("content relative", "'relative'", "absolute file path"),
            ("content /c/dir/", "'/c/dir/'", "not ending in '/'"),
            ("content /dev/null", "'/dev/null'", "a real file"),
            ("content /", "'/'", "absolute file path"),
            ("2-parity", "'2-parity'", "comma-separated parity files"),
            ("2-parity /a,,/b", "''", "absolute file path"),
            (
                "2-parity /1,/2,/3,/4,/5,/6,/7,/8,/9",
                "'/1,/2,",
                "at most 8",
            ),
            ("exclude", "'exclude'", "'exclude PATTERN'"),
            ("include /", "'/'", "not the disk root"),
            ("exclude a[b", "'a[b'", "closed with ']'"),
            ("exclude ../up", "'../up'", "'..' path components"),
            (
                "metrics-file metrics.prom",
                "'metrics.prom'",
                "absolute file path",
            ),
        ];
        for (line, text, expected) in cases {
            let e = error(&with(line));
            assert!(e.starts_with("array.conf:4: invalid "), "{line}: {e}");
            assert!(e.contains(text), "{line}: {e}");
            assert!(e.contains(expected), "{line}: {e}");
        }
    }

    #[test]
    fn split_parity_is_accepted_up_to_eight_files() {
        let files: Vec<String> = (1..=8).map(|i| format!("/p{i}/parity")).collect();
        let c = parse(&format!(
            "parity {}\ncontent /c/c\ndata d1 /d1\n",
            files.join(" , ")
        ))
        .unwrap();
        assert_eq!(c.parity[0].files.len(), 8);
        assert_eq!(c.parity[0].files[7], PathBuf::from("/p8/parity"));
    }

    #[test]
    fn single_valued_directives_refuse_repeats() {
        for line in [
            "blocksize 128",
            "autosave 1",
            "delete-threshold 3",
            "metrics-file /m/a",
        ] {
            let e = error(&with(&format!("{line}\n{}", line.replace("/a", "/b"))));
            assert!(e.starts_with("array.conf:5:"), "{e}");
            assert!(e.contains("already given at line 4"), "{e}");
        }
        let e = error("parity /p/a\nparity /p/b\ncontent /c/c\ndata d1 /d1\n");
        assert!(
            e.starts_with("array.conf:2:") && e.contains("at line 1"),
            "{e}"
        );
        let e = error("parity /p/a\n2-parity /p/b\nq-parity /p/c\ncontent /c/c\ndata d1 /d1\n");
        assert!(
            e.starts_with("array.conf:3:") && e.contains("'q-parity' was already given at line 2"),
            "{e}"
        );
        // nohidden twice says the same thing twice: harmless.
        assert!(parse(&with("nohidden\nnohidden")).unwrap().filter.nohidden);
    }

    #[test]
    fn parity_levels_must_be_contiguous() {
        let e = error("parity /p/1\n3-parity /p/3\ncontent /c/c\ndata d1 /d1\n");
        assert_eq!(
            e,
            "array.conf:2: '3-parity' is given without '2-parity'; expected parity levels \
             contiguous from 'parity'"
        );
        let e = error("2-parity /p/2\ncontent /c/c\ndata d1 /d1\n");
        assert!(
            e.starts_with("array.conf:1: '2-parity' is given without 'parity'"),
            "{e}"
        );
    }

    #[test]
    fn required_directives_are_reported_missing() {
        let e = error("content /c/c\ndata d1 /d1\n");
        assert!(e.starts_with("array.conf: no 'parity' line"), "{e}");
        let e = error("parity /p/p\ncontent /c/c\n");
        assert!(e.starts_with("array.conf: no 'data' line"), "{e}");
        let e = error("parity /p/p\ndata d1 /d1\n");
        assert!(e.starts_with("array.conf: no 'content' line"), "{e}");
        assert!(error("").contains("no 'parity' line"));
    }

    #[test]
    fn names_and_paths_must_be_unique() {
        let e = error(&with("data d1 /d2"));
        assert!(
            e.starts_with("array.conf:4: data disk name 'd1' is already used at line 3"),
            "{e}"
        );
        let e = error(&with("data d2 /d1/"));
        assert!(
            e.starts_with("array.conf:4: '/d1/' is the directory of data disk 'd1' at line 3"),
            "{e}"
        );
        let e = error(&with("content /c/content"));
        assert!(
            e.starts_with(
                "array.conf:4: '/c/content' is a content file at line 2 and a content file here"
            ),
            "{e}"
        );
        let e = error(&with("2-parity /c/content"));
        assert!(
            e.contains("is a content file at line 2 and a '2-parity' file here"),
            "{e}"
        );
        let e = error(&with("2-parity /p/parity"));
        assert!(
            e.contains("a 'parity' file at line 1 and a '2-parity' file here"),
            "{e}"
        );
        let e = error(&with("metrics-file /d1"));
        assert!(e.contains("and the metrics file here"), "{e}");
    }

    #[test]
    fn nested_data_directories_are_refused() {
        let e = error(&with("data d2 /d1/inner"));
        assert!(
            e.starts_with(
                "array.conf:4: data disk 'd2' (/d1/inner) lies inside data disk 'd1' (/d1)"
            ),
            "{e}"
        );
        let e = error("parity /p/p\ncontent /c/c\ndata inner /top/x\ndata outer /top\n");
        assert!(
            e.contains("'inner' (/top/x) lies inside data disk 'outer'"),
            "{e}"
        );
        // A shared name prefix is not nesting.
        assert!(parse(&with("data d10 /d10")).is_ok());
    }

    #[test]
    fn harmless_snapraid_directives_warn_with_their_line() {
        let c = parse(&with(
            "hashsize 16\npool /pool\nshare \\\\server\\share\nsmartctl d1 -d sat %s\n\
             smartignore * 194\nextra e1 /mnt/extra\ntemp_limit 50\ntemp_sleep 5\nhash_size 8",
        ))
        .unwrap();
        let lines: Vec<usize> = c.warnings.iter().map(|w| w.at.line).collect();
        assert_eq!(lines, (4..=12).collect::<Vec<_>>());
        assert_eq!(
            c.warnings[1].to_string(),
            "array.conf:5: warning: 'pool' is ignored: the pool is provided by lhfs"
        );
        assert!(c.warnings[6].message.contains("no thermal guard"));
    }

    #[test]
    fn unsafe_to_ignore_directives_are_refused() {
        let e = error(&with("z-parity /p/z"));
        assert!(
            e.starts_with("array.conf:4: 'z-parity' is not supported by lhparity:"),
            "{e}"
        );
        assert!(e.contains("'3-parity'"), "{e}");
        let e = error(&with("snapshot"));
        assert!(
            e.starts_with("array.conf:4: 'snapshot' is not supported"),
            "{e}"
        );
    }

    #[test]
    fn values_keep_spaces_and_hash_marks_with_a_warning() {
        let c = parse(&with("exclude *.tmp # scratch files")).unwrap();
        assert_eq!(c.filter.rules[0].pattern, "*.tmp # scratch files");
        assert_eq!(c.warnings.len(), 1);
        assert!(c.warnings[0]
            .to_string()
            .starts_with("array.conf:4: warning: '*.tmp # scratch files' is used whole"));
        let c = parse(&with("data d2 /mnt/disk#2")).unwrap();
        assert!(c.warnings.is_empty());
    }

    #[test]
    fn content_files_on_a_disk_are_excluded_from_its_scan() {
        let c = parse(
            "parity /p/p\ncontent /var/state\ncontent /mnt/d1/sub/state.content\n\
             data d1 /mnt/d1/\ndata d2 /mnt/d2\n",
        )
        .unwrap();
        let (d1, d2) = (&c.data[0], &c.data[1]);
        assert!(c.is_excluded(d1, "sub/state.content", false));
        assert!(c.is_excluded(d1, "/sub/state.content", false));
        assert!(c.is_excluded(d1, "sub/state.content.tmp", false));
        assert!(c.is_excluded(d1, "sub/state.content.lock", false));
        assert!(!c.is_excluded(d1, "sub/state.content.bak", false));
        assert!(!c.is_excluded(d1, "sub/state.content", true));
        assert!(!c.is_excluded(d1, "state.content", false));
        assert!(!c.is_excluded(d2, "sub/state.content", false));
    }

    #[test]
    fn shared_devices_are_refused_or_one_warning_with_force_device() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for d in ["d1", "d2", "d3", "parity", "content"] {
            std::fs::create_dir(root.join(d)).unwrap();
        }
        let text = format!(
            "parity {0}/parity/p1\ncontent {0}/content/c\ndata d1 {0}/d1\ndata d2 {0}/d2\n\
             data d3 {0}/d3\n",
            root.display()
        );
        let c = Config::parse(&text, &root.join("array.conf")).unwrap();
        // Without --force-device the first case is the error.
        let e = c.check_layout(false).unwrap_err().to_string();
        assert!(
            e.contains("data disk 'd1'") && e.contains("pass --force-device"),
            "{e}"
        );
        // With it, one warning per kind names its first case and counts the others:
        // d1/d2, d1/d3 and d2/d3; the parity with each disk; too few content devices.
        let w: Vec<String> = c
            .check_layout(true)
            .unwrap()
            .iter()
            .map(|w| w.to_string())
            .collect();
        assert_eq!(w.len(), 3, "{w:#?}");
        assert!(
            w[0].contains("array.conf:4: warning: data disk 'd1'"),
            "{w:#?}"
        );
        assert!(
            w[0].ends_with("(and 2 more like it); allowed by --force-device"),
            "{w:#?}"
        );
        assert!(w[1].contains("'parity' file"), "{w:#?}");
        assert!(
            w[1].ends_with("(and 2 more like it); allowed by --force-device"),
            "{w:#?}"
        );
        assert!(
            w[2].contains("content files are on 1 distinct device(s)"),
            "{w:#?}"
        );
        assert!(w[2].ends_with("expected at least 2 (one more than the parity levels) so that a copy of the state survives every failure the parity can repair; allowed by --force-device"), "{w:#?}");
    }

    #[test]
    fn a_byte_order_mark_is_not_part_of_the_first_line() {
        let config =
            parse("\u{feff}parity /p/parity\ncontent /c/content\ndata d1 /d1\n").expect("parsed");
        assert_eq!(config.parity[0].files, [PathBuf::from("/p/parity")]);
    }

    #[test]
    fn load_reads_the_file_and_reports_read_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("array.conf");
        std::fs::write(&path, FULL).unwrap();
        let c = Config::load(&path).unwrap();
        assert_eq!(c.source, path);
        assert_eq!(c.data.len(), 3);
        let missing = dir.path().join("missing.conf");
        let e = Config::load(&missing).unwrap_err();
        assert!(matches!(e, ConfigError::Read { .. }));
        assert!(e.to_string().contains("missing.conf"), "{e}");
        let odd = dir.path().join("odd.conf");
        std::fs::write(&odd, b"blocksize 256\n\nexclude caf\xe9.txt\n").unwrap();
        let e = Config::load(&odd).unwrap_err().to_string();
        assert!(
            e.contains("odd.conf:3: invalid line 'exclude caf\u{fffd}.txt'"),
            "{e}"
        );
        assert!(e.contains("\\xNN"), "{e}");
    }
}
