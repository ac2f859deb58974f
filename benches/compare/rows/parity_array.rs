//! The array behind the rows `parity-sync`, `parity-scrub` and `parity-fix`, set up
//! once per row and shared by both tools:
//!
//! - 4 data disks (`d1`..`d4`) of 1 GiB each, half in files of 100 MiB and half in
//!   files of about 1 MiB, deterministic content (`disks::fill`, one seed per disk);
//! - per tool, one parity disk per level (levels 1 and 2), so the tools never share
//!   a parity file;
//! - every disk its own loop-mounted ext4 image, so neither tool refuses the layout
//!   (snapraid wants separate devices for data disks and for its content copies).
//!
//! The data disks are shared because both tools only read them (the fix row wipes
//! `d1` and has the tool under test restore it, run by run): both see the same bytes,
//! and the array is filled once instead of twice. Each tool keeps its content
//! copies in its own folder on every data disk (`.lhparity/`, `.snapraid/`, one copy
//! per disk, enough for 2 parity levels), and both configs exclude both folders:
//! otherwise each tool would count the other's state as data, which changes on every
//! run. The two configs differ only in their own paths; lhparity reads snapraid's
//! syntax. Each lives on its tool's first parity disk, so teardown removes it.
//!
//! `--smoke` shrinks the disks to 24 MiB (4 MiB and 256 KiB files) so a row takes
//! seconds. The block size is 256 KiB either way.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};

use super::{run_tool, Ctx, NotAvailable};
use crate::disks::{self, Disks};
use crate::measure::Observation;
use crate::scale::Scale;

/// The parity levels measured, each a sub-row.
pub const LEVELS: [usize; 2] = [1, 2];
/// The variant every ratio is taken against.
pub const BASELINE: &str = "snapraid";
/// Which data disk the fix row wipes: `d1`.
pub const FIX_DISK: usize = 0;

const DATA_DISKS: usize = 4;
const BLOCKSIZE_KIB: u32 = 256;
/// Seed of the first data disk; disk i uses `SEED + i`, so disks differ (identical
/// disks would make the level-1 parity all zeros).
const SEED: u64 = 0x1f5_0000;

/// The tool a variant runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    Lhparity,
    Snapraid,
}

impl Tool {
    /// In variant order: ours is A, the baseline B.
    pub const ALL: [Tool; 2] = [Tool::Lhparity, Tool::Snapraid];

    pub fn name(self) -> &'static str {
        match self {
            Tool::Lhparity => "lhparity",
            Tool::Snapraid => BASELINE,
        }
    }

    fn index(self) -> usize {
        match self {
            Tool::Lhparity => 0,
            Tool::Snapraid => 1,
        }
    }

    /// The folder on every data disk that holds this tool's content copy.
    fn state_dir(self) -> &'static str {
        match self {
            Tool::Lhparity => ".lhparity",
            Tool::Snapraid => ".snapraid",
        }
    }
}

/// Image and file sizes for a run.
#[derive(Debug, Clone, Copy)]
struct Sizes {
    data_image: u64,
    /// Holds one level of parity: the data of the fullest disk rounded up to whole
    /// blocks per file (about +6% with ~1 MiB files), plus ext4's own overhead.
    parity_image: u64,
    per_disk: u64,
    large: u64,
    small: u64,
}

impl Sizes {
    fn new(scale: &Scale) -> Sizes {
        Sizes {
            data_image: scale.data_image(),
            parity_image: scale.parity_image(),
            per_disk: scale.data_per_disk,
            large: scale.large_file(),
            small: scale.small_file(),
        }
    }
}

/// One data file as written by the setup.
#[derive(Debug, Clone)]
pub struct DataFile {
    pub path: PathBuf,
    pub size: u64,
}

/// The binaries of both tools, indexed like `Tool::ALL`, after checking that our
/// build has every subcommand the row needs; a missing one makes the row
/// `NotAvailable` rather than failed.
pub fn binaries(ctx: &Ctx, subcommands: &[&str]) -> Result<[PathBuf; 2]> {
    let lhparity = ctx.our_binary("lhparity")?;
    let help = run_tool(Command::new(&lhparity).arg("--help").stdin(Stdio::null()))?;
    if let Some(missing) = subcommands.iter().find(|s| !lists_subcommand(&help, s)) {
        return Err(NotAvailable(format!(
            "`lhparity {missing}` is not available in this lhparity build ({})",
            lhparity.display()
        ))
        .into());
    }
    Ok([lhparity, ctx.peer("snapraid")?])
}

/// Whether a clap-style `--help` lists `name` in its `Commands:` section: an indented
/// line whose first word is the name.
fn lists_subcommand(help: &str, name: &str) -> bool {
    let mut in_commands = false;
    for line in help.lines() {
        if !line.starts_with(char::is_whitespace) {
            let heading = line.trim().trim_end_matches(':').to_ascii_lowercase();
            in_commands = heading == "commands" || heading == "subcommands";
        } else if in_commands && line.split_whitespace().next() == Some(name) {
            return true;
        }
    }
    false
}

/// The disks, the data written on them, and the tools to run.
pub struct Array {
    data: Disks,
    /// Per tool (in `Tool::ALL` order), one disk per parity level.
    parity: Vec<Disks>,
    files: Vec<Vec<DataFile>>,
    sizes: Sizes,
    bins: [PathBuf; 2],
}

impl Array {
    /// Creates and mounts every image and fills the data disks.
    pub fn create(ctx: &Ctx, bins: [PathBuf; 2]) -> Result<Array> {
        disks::require_root("the parity rows")?;
        let sizes = Sizes::new(&ctx.scale);
        let max_levels = LEVELS.iter().copied().max().unwrap_or(1);
        let data = Disks::create(ctx.work_dir, DATA_DISKS, sizes.data_image)?;
        let parity = Tool::ALL
            .iter()
            .map(|_| Disks::create(ctx.work_dir, max_levels, sizes.parity_image))
            .collect::<Result<Vec<_>>>()?;
        let mut files = Vec::with_capacity(DATA_DISKS);
        for (i, mount) in data.mounts().into_iter().enumerate() {
            for tool in Tool::ALL {
                let dir = mount.join(tool.state_dir());
                std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
            }
            let seed = SEED + i as u64;
            let file_sizes = disks::file_sizes(sizes.per_disk, sizes.large, sizes.small, seed);
            let paths = disks::fill(mount, &file_sizes, seed)?;
            files.push(
                paths
                    .into_iter()
                    .zip(file_sizes)
                    .map(|(path, size)| DataFile { path, size })
                    .collect(),
            );
        }
        Ok(Array {
            data,
            parity,
            files,
            sizes,
            bins,
        })
    }

    /// The data files, per disk.
    pub fn files(&self) -> &[Vec<DataFile>] {
        &self.files
    }

    /// The size of the large files (see `disks::file_sizes`).
    pub fn large_file_size(&self) -> u64 {
        self.sizes.large
    }

    /// The bytes of data on one disk, or on all of them.
    pub fn data_bytes(&self, disk: Option<usize>) -> u64 {
        self.files
            .iter()
            .enumerate()
            .filter(|(i, _)| disk.is_none_or(|d| d == *i))
            .flat_map(|(_, files)| files.iter().map(|f| f.size))
            .sum()
    }

    /// Writes both tools' configs for `levels` parity levels.
    pub fn configure(&self, levels: usize) -> Result<Setup<'_>> {
        let mut confs = Vec::with_capacity(Tool::ALL.len());
        for tool in Tool::ALL {
            let data: Vec<(String, &Path)> = self
                .data
                .mounts()
                .into_iter()
                .enumerate()
                .map(|(i, m)| (disk_name(i), m))
                .collect();
            let text = config_text(
                &self.parity_files(tool, levels),
                &self.content_files(tool),
                &data,
            );
            let path = self.parity_mounts(tool)?[0].join(format!("{}.conf", tool.name()));
            std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
            confs.push(path);
        }
        Ok(Setup {
            array: self,
            levels,
            confs,
        })
    }

    /// Unmounts and removes every image, checking that nothing is left behind.
    pub fn close(self) -> Result<()> {
        let mut problems = Vec::new();
        for disks in self.parity.into_iter().chain([self.data]) {
            if let Err(e) = disks.close() {
                problems.push(format!("{e:#}"));
            }
        }
        if !problems.is_empty() {
            bail!("{}", problems.join("\n"));
        }
        Ok(())
    }

    fn parity_mounts(&self, tool: Tool) -> Result<Vec<&Path>> {
        let mounts = self.parity[tool.index()].mounts();
        if mounts.is_empty() {
            bail!("no parity disk was created for {}", tool.name());
        }
        Ok(mounts)
    }

    fn parity_files(&self, tool: Tool, levels: usize) -> Vec<PathBuf> {
        self.parity[tool.index()]
            .mounts()
            .into_iter()
            .take(levels)
            .enumerate()
            .map(|(i, m)| m.join(format!("{}.{}", tool.name(), parity_directive(i + 1))))
            .collect()
    }

    fn content_files(&self, tool: Tool) -> Vec<PathBuf> {
        self.data
            .mounts()
            .into_iter()
            .map(|m| {
                m.join(tool.state_dir())
                    .join(format!("{}.content", tool.name()))
            })
            .collect()
    }

    /// Removes everything on a data disk but the tools' state folders (and ext4's
    /// `lost+found`), as a failed disk replaced by an empty one would look.
    pub fn wipe(&self, disk: usize) -> Result<()> {
        let mount = self.data_mount(disk)?;
        let keep = [".lhparity", ".snapraid", "lost+found"];
        let entries =
            std::fs::read_dir(mount).with_context(|| format!("listing {}", mount.display()))?;
        for entry in entries {
            let entry = entry.with_context(|| format!("listing {}", mount.display()))?;
            if keep.iter().any(|k| entry.file_name() == *k) {
                continue;
            }
            let path = entry.path();
            let result = if entry.file_type().is_ok_and(|t| t.is_dir()) {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
            result.with_context(|| format!("removing {}", path.display()))?;
        }
        Ok(())
    }

    /// Checks that every file of a disk is back with its size, after a fix.
    pub fn check_restored(&self, disk: usize) -> Result<()> {
        let files = self
            .files
            .get(disk)
            .with_context(|| format!("no data disk {}", disk_name(disk)))?;
        let wrong: Vec<String> = files
            .iter()
            .filter_map(|f| match std::fs::metadata(&f.path) {
                Ok(m) if m.len() == f.size => None,
                Ok(m) => Some(format!(
                    "{} has {} bytes, not {}",
                    f.path.display(),
                    m.len(),
                    f.size
                )),
                Err(e) => Some(format!("{}: {e}", f.path.display())),
            })
            .collect();
        if let Some(first) = wrong.first() {
            bail!(
                "{} of {} files of {} were not restored, e.g. {first}",
                wrong.len(),
                files.len(),
                disk_name(disk)
            );
        }
        Ok(())
    }

    fn data_mount(&self, disk: usize) -> Result<&Path> {
        self.data
            .mounts()
            .get(disk)
            .copied()
            .with_context(|| format!("no data disk {}", disk_name(disk)))
    }

    /// Reads the data of every disk but `except` into the page cache, after writing
    /// back what earlier runs left dirty.
    pub fn warm_data(&self, except: Option<usize>) -> Result<()> {
        disks::write_back();
        let paths: Vec<PathBuf> = self
            .files
            .iter()
            .enumerate()
            .filter(|(i, _)| except != Some(*i))
            .flat_map(|(_, files)| files.iter().map(|f| f.path.clone()))
            .collect();
        disks::read_all(&paths).map(drop)
    }
}

/// `d1`, `d2`, ...: the data disk names in both configs.
pub fn disk_name(index: usize) -> String {
    format!("d{}", index + 1)
}

/// The config directive of a parity level: `parity`, `2-parity`, ...
fn parity_directive(level: usize) -> String {
    if level == 1 {
        "parity".into()
    } else {
        format!("{level}-parity")
    }
}

/// The config text, identical in form for both tools.
fn config_text(parity: &[PathBuf], content: &[PathBuf], data: &[(String, &Path)]) -> String {
    let mut text = String::from("# Array of the compare runner's parity rows.\n");
    text += &format!("blocksize {BLOCKSIZE_KIB}\n");
    for (i, p) in parity.iter().enumerate() {
        text += &format!("{} {}\n", parity_directive(i + 1), p.display());
    }
    for c in content {
        text += &format!("content {}\n", c.display());
    }
    for (name, dir) in data {
        text += &format!("data {name} {}\n", dir.display());
    }
    // Each tool's state is not data for the other (see the module docs).
    for tool in Tool::ALL {
        text += &format!("exclude /{}/\n", tool.state_dir());
    }
    text
}

/// The array configured for a number of parity levels.
pub struct Setup<'a> {
    array: &'a Array,
    levels: usize,
    /// Per tool, in `Tool::ALL` order.
    confs: Vec<PathBuf>,
}

impl Setup<'_> {
    pub fn array(&self) -> &Array {
        self.array
    }

    pub fn levels(&self) -> usize {
        self.levels
    }

    /// Deletes the tool's parity and content files, so that its next sync starts
    /// from nothing. The other tool's files stay.
    pub fn forget(&self, tool: Tool) -> Result<()> {
        let mut doomed = self.array.parity_files(tool, self.levels);
        // The whole state folder: the content copy and the `.tmp` and `.lock`
        // siblings the tools write next to it.
        for mount in self.array.data.mounts() {
            let dir = mount.join(tool.state_dir());
            let entries =
                std::fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))?;
            for entry in entries {
                doomed.push(
                    entry
                        .with_context(|| format!("listing {}", dir.display()))?
                        .path(),
                );
            }
        }
        for path in doomed {
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(e).with_context(|| format!("removing {}", path.display()))
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Reads the tool's parity files into the page cache (for runs that read them).
    pub fn warm_parity(&self, tool: Tool) -> Result<()> {
        disks::write_back();
        disks::read_all(&self.array.parity_files(tool, self.levels)).map(drop)
    }

    /// The tool's full sync from nothing, untimed: the starting point of the scrub
    /// and fix rows.
    pub fn sync_from_scratch(&self, tool: Tool) -> Result<()> {
        self.forget(tool)?;
        run_tool(&mut self.command(tool, &["sync"])).map(drop)
    }

    /// Runs `TOOL -c CONF ARGS` (lhparity also with `-q`) and returns its wall time
    /// in seconds; fails with the tool's message unless it exits 0.
    pub fn timed(&self, tool: Tool, args: &[&str]) -> Result<f64> {
        let mut cmd = self.command(tool, args);
        let start = Instant::now();
        run_tool(&mut cmd)?;
        Ok(start.elapsed().as_secs_f64())
    }

    fn command(&self, tool: Tool, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.array.bins[tool.index()]);
        cmd.arg("-c").arg(&self.confs[tool.index()]);
        if tool == Tool::Lhparity {
            // Progress output off, as snapraid's is when not on a terminal.
            cmd.arg("-q");
        }
        cmd.args(args).stdin(Stdio::null());
        cmd
    }
}

/// An observation of the given metrics.
pub fn observation<'m>(values: impl IntoIterator<Item = (&'m str, f64)>) -> Observation {
    Observation {
        values: values
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
        ..Observation::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_has_every_line_both_tools_need() {
        let parity = [
            PathBuf::from("/p0/snapraid.parity"),
            PathBuf::from("/p1/snapraid.2-parity"),
        ];
        let content = [
            PathBuf::from("/d/0/.snapraid/snapraid.content"),
            PathBuf::from("/d/1/.snapraid/snapraid.content"),
        ];
        let data = [
            ("d1".to_string(), Path::new("/d/0")),
            ("d2".to_string(), Path::new("/d/1")),
        ];
        assert_eq!(
            config_text(&parity, &content, &data),
            "# Array of the compare runner's parity rows.\n\
             blocksize 256\n\
             parity /p0/snapraid.parity\n\
             2-parity /p1/snapraid.2-parity\n\
             content /d/0/.snapraid/snapraid.content\n\
             content /d/1/.snapraid/snapraid.content\n\
             data d1 /d/0\n\
             data d2 /d/1\n\
             exclude /.lhparity/\n\
             exclude /.snapraid/\n"
        );
        let one = config_text(&parity[..1], &content, &data);
        assert!(one.contains("parity /p0/snapraid.parity\n") && !one.contains("2-parity"));
    }

    #[test]
    fn config_parses_as_lhparity_reads_it() {
        let parity = [
            PathBuf::from("/p0/l.parity"),
            PathBuf::from("/p1/l.2-parity"),
        ];
        let content: Vec<PathBuf> = (0..3)
            .map(|i| PathBuf::from(format!("/d/{i}/.lhparity/lhparity.content")))
            .collect();
        let data: Vec<(String, &Path)> = [Path::new("/d/0"), Path::new("/d/1")]
            .into_iter()
            .enumerate()
            .map(|(i, p)| (disk_name(i), p))
            .collect();
        let text = config_text(&parity, &content, &data);
        let config = parity_core::config::Config::parse(&text, Path::new("t.conf"));
        assert!(config.is_ok(), "{config:?}");
    }

    #[test]
    fn names_of_levels_and_disks() {
        assert_eq!(parity_directive(1), "parity");
        assert_eq!(parity_directive(2), "2-parity");
        assert_eq!(disk_name(0), "d1");
        assert_eq!(Tool::Snapraid.name(), BASELINE);
    }

    #[test]
    fn finds_subcommands_in_clap_help() {
        let help = "Snapshot parity for a disk array\n\n\
                    Usage: lhparity [OPTIONS] <COMMAND>\n\n\
                    Commands:\n  \
                    speedtest  Measure the parity kernels\n  \
                    sync       Update the parity\n  \
                    help       Print this message or the help of the given subcommand(s)\n\n\
                    Options:\n  \
                    -c, --conf <FILE>  The config [default: /etc/snapraid.conf]\n  \
                    -q, --quiet        No progress output\n";
        assert!(lists_subcommand(help, "sync"));
        assert!(lists_subcommand(help, "speedtest"));
        assert!(!lists_subcommand(help, "scrub"));
        assert!(!lists_subcommand(help, "fix"));
        // Words outside the Commands section do not count.
        assert!(!lists_subcommand(help, "-c,"));
        assert!(!lists_subcommand("Usage: lhparity sync\n  sync\n", "sync"));
    }
}
