//! The checks of a config against the filesystem, before any command touches an array:
//! the disks are mounted where the config says, no parity or state file hides inside
//! the data it protects, and no device failure takes out more than one part of the
//! array.
//!
//! This is the I/O edge of the config module: it reads metadata and resolves symlinks,
//! and never creates, changes or deletes anything.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::{level_name, Config, ConfigError, DataDisk, Location, Warning};

/// A path of the array as found on the filesystem.
struct Found<'a> {
    /// What it is, for messages: "data disk 'd1'", "'2-parity' file", ...
    what: String,
    /// The path as configured.
    path: &'a Path,
    line: usize,
    /// With symlinks resolved.
    real: PathBuf,
    dev: u64,
}

impl Config {
    /// Checks the array's paths on the filesystem and returns the warnings of things
    /// that are allowed but worth a look.
    ///
    /// Refused: a data directory that is missing or not a directory; a parity or
    /// content file whose directory is missing; a parity or content file inside a data
    /// disk that the scan would read as data. Refused unless `force_device` (then
    /// reported as warnings): two data disks on one device, a parity file on the device
    /// of a data disk or of another parity level, and fewer devices holding content
    /// files than parity levels plus one. With `force_device` these come back as one
    /// warning per kind: its first case and how many more there are.
    pub fn check_layout(&self, force_device: bool) -> Result<Vec<Warning>, ConfigError> {
        let disks = self
            .data
            .iter()
            .map(|d| self.find_disk(d))
            .collect::<Result<Vec<_>, _>>()?;
        let mut parity = Vec::new();
        for level in &self.parity {
            let what = format!("'{}' file", level_name(level.level));
            for file in &level.files {
                parity.push((level.level, self.find_file(&what, file, level.line)?));
            }
        }
        let content = self
            .content
            .iter()
            .map(|c| self.find_file("content file", &c.path, c.line))
            .collect::<Result<Vec<_>, _>>()?;

        let mut warnings = Vec::new();
        for file in parity.iter().map(|(_, f)| f).chain(&content) {
            if let Some(problem) = self.inside_data(&disks, file) {
                return Err(ConfigError::Layout {
                    at: self.at(file.line),
                    problem,
                });
            }
        }
        if let Some(metrics) = &self.metrics_file {
            // The metrics file's disk may be offline; only a resolvable location can be
            // checked, and a misplaced one costs sync time, not safety.
            if let Ok(found) = self.find_file("metrics file", &metrics.path, metrics.line) {
                if let Some(message) = self.inside_data(&disks, &found) {
                    warnings.push(Warning {
                        at: self.at(metrics.line),
                        message,
                    });
                }
            }
        }

        // Device sharing is collected first: with `force_device` every case becomes a
        // warning, without it the first one is the error.
        // (kind, where, what): the kinds are data disks sharing, parity with data,
        // parity levels sharing, and too few content devices.
        let mut shared: Vec<(u8, Location, String)> = Vec::new();
        for (i, a) in disks.iter().enumerate() {
            for b in disks[i + 1..].iter().filter(|b| b.dev == a.dev) {
                shared.push((
                    0,
                    self.at(b.line),
                    format!(
                        "{} ({}) and {} ({}) are on the same device, so one failure would take out both",
                        a.what,
                        a.path.display(),
                        b.what,
                        b.path.display()
                    ),
                ));
            }
        }
        for (i, (level, p)) in parity.iter().enumerate() {
            for d in disks.iter().filter(|d| d.dev == p.dev) {
                shared.push((
                    1,
                    self.at(p.line),
                    format!(
                        "{} '{}' is on the same device as {} ({}), so one failure would lose data and its parity",
                        p.what,
                        p.path.display(),
                        d.what,
                        d.path.display()
                    ),
                ));
            }
            for (_, q) in parity[i + 1..]
                .iter()
                .filter(|(other, q)| other != level && q.dev == p.dev)
            {
                shared.push((
                    2,
                    self.at(q.line),
                    format!(
                        "{} '{}' and {} '{}' are on the same device, so one failure would lose two parity levels",
                        p.what,
                        p.path.display(),
                        q.what,
                        q.path.display()
                    ),
                ));
            }
        }
        let mut content_devs: Vec<u64> = Vec::new();
        for (i, c) in content.iter().enumerate() {
            match content[..i].iter().find(|o| o.dev == c.dev) {
                Some(first) => warnings.push(Warning {
                    at: self.at(c.line),
                    message: format!(
                        "content files '{}' and '{}' are on the same device; they count as one copy",
                        first.path.display(),
                        c.path.display()
                    ),
                }),
                None => content_devs.push(c.dev),
            }
        }
        let needed = self.levels() + 1;
        if content_devs.len() < needed {
            let line = self.content.last().map_or(0, |c| c.line);
            shared.push((
                3,
                self.at(line),
                format!(
                    "the content files are on {} distinct device(s); expected at least {needed} \
                     (one more than the parity levels) so that a copy of the state survives \
                     every failure the parity can repair",
                    content_devs.len()
                ),
            ));
        }
        if !force_device {
            if let Some((_, at, problem)) = shared.into_iter().next() {
                return Err(ConfigError::Device { at, problem });
            }
            return Ok(warnings);
        }
        // One warning per kind, not one per pair: an array kept in one folder (a test,
        // a trial) would otherwise repeat a dozen of them on every command.
        let mut kinds: Vec<u8> = shared.iter().map(|(kind, _, _)| *kind).collect();
        kinds.sort_unstable();
        kinds.dedup();
        for kind in kinds {
            let mut same = shared.iter().filter(|(k, _, _)| *k == kind);
            let Some((_, at, problem)) = same.next() else {
                continue;
            };
            let rest = match same.count() {
                0 => String::new(),
                1 => " (and 1 more like it)".to_owned(),
                n => format!(" (and {n} more like it)"),
            };
            warnings.push(Warning {
                at: at.clone(),
                message: format!("{problem}{rest}; allowed by --force-device"),
            });
        }
        Ok(warnings)
    }

    fn find_disk<'a>(&self, disk: &'a DataDisk) -> Result<Found<'a>, ConfigError> {
        let problem = |what: String| ConfigError::Layout {
            at: self.at(disk.line),
            problem: format!(
                "data disk '{}': directory '{}' {what}; mount the disk there or fix the path",
                disk.name,
                disk.dir.display()
            ),
        };
        let meta = std::fs::metadata(&disk.dir)
            .map_err(|e| problem(format!("is not accessible ({e})")))?;
        if !meta.is_dir() {
            return Err(problem("is not a directory".to_owned()));
        }
        let real = disk
            .dir
            .canonicalize()
            .map_err(|e| problem(format!("cannot be resolved ({e})")))?;
        Ok(Found {
            what: format!("data disk '{}'", disk.name),
            path: &disk.dir,
            line: disk.line,
            real,
            dev: meta.dev(),
        })
    }

    /// Locates a file through its directory: the file itself may not exist yet.
    fn find_file<'a>(
        &self,
        what: &str,
        path: &'a Path,
        line: usize,
    ) -> Result<Found<'a>, ConfigError> {
        let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
            return Err(ConfigError::Layout {
                at: self.at(line),
                problem: format!("{what} '{}' has no directory part", path.display()),
            });
        };
        let problem = |e: std::io::Error| {
            ConfigError::Layout {
            at: self.at(line),
            problem: format!(
                "the directory of {what} '{}' is not accessible ({e}); mount its disk or fix the path",
                path.display()
            ),
        }
        };
        let meta = std::fs::metadata(dir).map_err(problem)?;
        let real = dir.canonicalize().map_err(problem)?.join(name);
        Ok(Found {
            what: what.to_owned(),
            path,
            line,
            real,
            dev: meta.dev(),
        })
    }

    /// Says why `file` may not stay where it is, if it lies inside a data disk and the
    /// scan of that disk would read it as data.
    fn inside_data(&self, disks: &[Found<'_>], file: &Found<'_>) -> Option<String> {
        disks.iter().zip(&self.data).find_map(|(found, disk)| {
            let rel = file.real.strip_prefix(&found.real).ok()?;
            let rel = rel.to_string_lossy();
            if self.is_excluded(disk, &rel, false) {
                return None;
            }
            Some(format!(
                "{} '{}' lies inside {} ({}) at '/{rel}', where it would be read as data; \
                 move it to its own disk or add 'exclude /{rel}'",
                file.what,
                file.path.display(),
                found.what,
                found.path.display()
            ))
        })
    }
}
