//! The environment record: CPU model and the SIMD flags the parity kernels care
//! about, kernel version, and the version of every tool a row may run (the peers
//! snapraid, mergerfs and fio, and our own binaries). A missing tool is recorded as
//! such, never an error: rows that need it fail on their own with a way out.
//!
//! Nothing here installs software, except `install_peers` when the user asked for it.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use serde::Serialize;

/// CPU flags that decide which parity kernel can run.
const FLAGS_OF_INTEREST: [&str; 4] = ["ssse3", "avx2", "avx512bw", "gfni"];

/// The peers, their Debian package, and the argument that prints their version.
const PEERS: [(&str, &str); 3] = [("snapraid", "-V"), ("mergerfs", "-V"), ("fio", "--version")];

/// Our binaries, looked up in the `--bin-dir` folder.
const OURS: [&str; 2] = ["lhparity", "lhfs"];

#[derive(Debug, Clone, Serialize)]
pub struct Env {
    pub cpu_model: String,
    /// Flag name and whether /proc/cpuinfo lists it, in `FLAGS_OF_INTEREST` order.
    pub cpu_flags: Vec<(String, bool)>,
    pub cpus: usize,
    pub kernel: String,
    pub tools: Vec<Tool>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Tool {
    pub name: String,
    pub path: Option<PathBuf>,
    /// First line the tool printed for its version argument.
    pub version: Option<String>,
    /// The Debian package version, for peers (snapraid's own `-V` may say `vnone`).
    pub package: Option<String>,
    /// `ok`, `not installed`, or what went wrong asking for the version.
    pub status: String,
}

impl Env {
    /// Gathers the record; unreadable sources become `unknown`, not errors.
    pub fn record(bin_dir: &Path) -> Env {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let (cpu_model, flags) = parse_cpuinfo(&cpuinfo);
        let cpu_flags = FLAGS_OF_INTEREST
            .iter()
            .map(|f| (f.to_string(), flags.iter().any(|g| g == f)))
            .collect();
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "unknown".into());
        let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
        let mut tools: Vec<Tool> = PEERS
            .iter()
            .map(|(name, arg)| {
                let mut tool = probe(name, find_on_path(name), arg, "not installed");
                tool.package = dpkg_version(name);
                tool
            })
            .collect();
        for name in OURS {
            let path = bin_dir.join(name);
            let found = path.is_file().then_some(path);
            tools.push(probe(
                name,
                found,
                "--version",
                "not built (run `cargo build --release`)",
            ));
        }
        Env {
            cpu_model,
            cpu_flags,
            cpus,
            kernel,
            tools,
        }
    }

    /// The tool's record by name.
    pub fn tool(&self, name: &str) -> Option<&Tool> {
        self.tools.iter().find(|t| t.name == name)
    }

    /// One line per fact, for the top of the Markdown report.
    pub fn markdown(&self) -> String {
        let flags: Vec<String> = self
            .cpu_flags
            .iter()
            .map(|(f, on)| format!("{f}{}", if *on { "" } else { " (no)" }))
            .collect();
        let mut out = format!(
            "- CPU: {} ({} cpus), flags: {}\n- kernel: {}\n",
            self.cpu_model,
            self.cpus,
            flags.join(" "),
            self.kernel
        );
        for t in &self.tools {
            let mut line = format!("- {}: ", t.name);
            match (&t.version, &t.package) {
                (Some(v), Some(p)) => line += &format!("{v} (package {p})"),
                (Some(v), None) => line += v,
                (None, Some(p)) => line += &format!("package {p}"),
                (None, None) => {}
            }
            if t.status != "ok" {
                if t.version.is_some() || t.package.is_some() {
                    line += ", ";
                }
                line += &t.status;
            }
            out += &line;
            out.push('\n');
        }
        out
    }
}

/// Model name and flags of the first processor in a /proc/cpuinfo text.
fn parse_cpuinfo(text: &str) -> (String, Vec<String>) {
    let field = |key: &str| {
        text.lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.trim() == key)
            .map(|(_, v)| v.trim().to_string())
    };
    let model = field("model name").unwrap_or_else(|| "unknown".into());
    let flags = field("flags")
        .map(|f| f.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default();
    (model, flags)
}

/// The first executable named `name` in a PATH folder.
pub fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// Asks a found tool for its version; `missing` is the status when `path` is `None`.
fn probe(name: &str, path: Option<PathBuf>, arg: &str, missing: &str) -> Tool {
    let mut tool = Tool {
        name: name.into(),
        path: path.clone(),
        version: None,
        package: None,
        status: missing.into(),
    };
    let Some(path) = path else { return tool };
    match Command::new(&path).arg(arg).output() {
        Ok(out) => {
            // Some tools print their version on stderr, or exit non-zero for -V.
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            tool.version = text
                .lines()
                .map(str::trim)
                .find(|l| !l.is_empty())
                .map(str::to_string);
            tool.status = if tool.version.is_some() {
                "ok".into()
            } else {
                format!("`{} {arg}` printed nothing", path.display())
            };
        }
        Err(e) => tool.status = format!("`{} {arg}` failed: {e}", path.display()),
    }
    tool
}

/// The installed Debian package version, if dpkg knows the package.
fn dpkg_version(package: &str) -> Option<String> {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f", "${Version}", package])
        .output()
        .ok()?;
    let v = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !v.is_empty()).then_some(v)
}

/// Installs the peers with apt-get; only called for `--install-peers`.
pub fn install_peers() -> Result<()> {
    let packages: Vec<&str> = PEERS.iter().map(|(name, _)| *name).collect();
    eprintln!(
        "installing peers: apt-get install -y {}",
        packages.join(" ")
    );
    let status = Command::new("apt-get")
        .args(["install", "-y"])
        .args(&packages)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .context("running apt-get (is this a Debian-like system?)")?;
    if !status.success() {
        bail!(
            "`apt-get install -y {}` failed ({status}); it needs root and a package index \
             (`apt-get update`)",
            packages.join(" ")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpuinfo_model_and_flags() {
        let text = "processor\t: 0\nvendor_id\t: GenuineIntel\n\
                    model name\t: Intel(R) Xeon(R) Processor\n\
                    flags\t\t: fpu sse2 ssse3 avx2 avx512bw gfni\n\n\
                    processor\t: 1\nmodel name\t: other\n";
        let (model, flags) = parse_cpuinfo(text);
        assert_eq!(model, "Intel(R) Xeon(R) Processor");
        assert_eq!(flags, ["fpu", "sse2", "ssse3", "avx2", "avx512bw", "gfni"]);
        assert_eq!(parse_cpuinfo(""), ("unknown".to_string(), vec![]));
    }

    #[test]
    fn markdown_says_what_is_missing() {
        let env = Env {
            cpu_model: "cpu".into(),
            cpu_flags: vec![("avx2".into(), true), ("gfni".into(), false)],
            cpus: 2,
            kernel: "6.1".into(),
            tools: vec![
                Tool {
                    name: "snapraid".into(),
                    path: Some("/usr/bin/snapraid".into()),
                    version: Some("snapraid vnone".into()),
                    package: Some("12.2-1".into()),
                    status: "ok".into(),
                },
                Tool {
                    name: "fio".into(),
                    path: None,
                    version: None,
                    package: None,
                    status: "not installed".into(),
                },
            ],
        };
        let md = env.markdown();
        assert!(md.contains("- CPU: cpu (2 cpus), flags: avx2 gfni (no)\n"));
        assert!(md.contains("- snapraid: snapraid vnone (package 12.2-1)\n"));
        assert!(md.contains("- fio: not installed\n"));
    }
}
